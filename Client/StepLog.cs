// StepLog.cs: the step log on stderr: what each step sent and received.

using System;
using System.Buffers;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>The step log on stderr: what each step sent and received. stdout carries only the answer.</summary>
sealed class StepLog(TextWriter stderr, bool trace = false, bool interactive = false)
{
    public static readonly StepLog Silent = new(TextWriter.Null);

    /// <summary>False for Silent, the log of a program that uses the flow as a library: then nothing is written,
    /// and no text is even built for it (see Text).</summary>
    public bool Writes { get; } = stderr != TextWriter.Null;

    WaitingLine? waiting; // the "waiting for the model" line, if one is on the screen: log lines go above it

    public void Step(int step, string text) => WriteLine($"Step {step}: {text}");

    public void Step(int step, [InterpolatedStringHandlerArgument("")] Text text)
    {
        if (Writes)
            Step(step, text.ToStringAndClear());
    }

    public void Info(string text) => WriteLine(text);

    void WriteLine(string line)
    {
        if (waiting is not null)
            waiting.WriteAbove(line);
        else
            stderr.WriteLine(line);
    }

    /// <summary>With --trace: the full JSON of each request and response.</summary>
    public void Trace(string title, JsonNode? json)
    {
        if (trace)
            WriteLine($"--- {title}\n{Json.Indented(json)}");
    }

    /// <summary>With --trace: lines as they were on the wire, such as the events of a stream.</summary>
    public void Trace(string title, IEnumerable<string> lines)
    {
        if (trace)
            WriteLine($"--- {title}\n{string.Join('\n', lines)}");
    }

    public void Trace([InterpolatedStringHandlerArgument("")] Text title, JsonNode? json)
    {
        if (Writes)
            Trace(title.ToStringAndClear(), json);
    }

    /// <summary>
    /// The $"..." text of a log line, built only when the log writes: for StepLog.Silent, C# evaluates none of its
    /// {holes}, so a silent flow spends nothing on sentences nobody reads. (An interpolated string handler: the
    /// compiler turns $"a {b}" into AppendLiteral("a"); AppendFormatted(b), run only if `enabled` is true.)
    /// </summary>
    [InterpolatedStringHandler]
    public ref struct Text
    {
        DefaultInterpolatedStringHandler builder;

        public Text(int literalLength, int formattedCount, StepLog log, out bool enabled)
        {
            enabled = log.Writes;
            builder = enabled ? new DefaultInterpolatedStringHandler(literalLength, formattedCount) : default;
        }

        public void AppendLiteral(string text) => builder.AppendLiteral(text);

        public void AppendFormatted<T>(T value) => builder.AppendFormatted(value);

        public string ToStringAndClear() => builder.ToStringAndClear();
    }

    /// <summary>On a terminal only (never in a pipe or CI): how long the model has been thinking.</summary>
    public IDisposable? ShowWaiting() => interactive ? waiting = new WaitingLine(stderr) : null;

    sealed class WaitingLine : IDisposable
    {
        readonly TextWriter stderr;
        readonly Stopwatch elapsed = Stopwatch.StartNew();
        readonly Timer timer;
        readonly Lock gate = new();
        bool shown, done;

        public WaitingLine(TextWriter stderr)
        {
            this.stderr = stderr;
            timer = new Timer(_ => Tick(), null, TimeSpan.FromMilliseconds(500), TimeSpan.FromMilliseconds(100));
        }

        void Tick()
        {
            lock (gate)
            {
                if (done)
                    return; // a tick that was already running when the reply came
                stderr.Write($"\r  waiting for the model... {elapsed.Elapsed.TotalSeconds:0.0}s ");
                stderr.Flush();
                shown = true;
            }
        }

        /// <summary>A log line (a retry, a step) while waiting: erase the waiting line, write the log line, and let the
        /// next tick draw the waiting line again below it.</summary>
        public void WriteAbove(string line)
        {
            lock (gate)
            {
                Erase();
                stderr.WriteLine(line);
            }
        }

        public void Dispose()
        {
            timer.Dispose();
            lock (gate)
            {
                Erase();
                done = true;
            }
        }

        void Erase()
        {
            if (shown)
                stderr.Write("\r" + new string(' ', 40) + "\r");
            shown = false;
        }
    }
}
