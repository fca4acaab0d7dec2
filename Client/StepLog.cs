// StepLog.cs: the step log on stderr: what each step sent and received.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text.Json.Nodes;
using System.Threading;

namespace ToolCall;

/// <summary>
/// The step log on stderr: what each step sent and received (FlowOptions.Log is Info), retries, and with --trace
/// the full JSON. stdout carries only the answer.
/// </summary>
sealed class StepLog(TextWriter stderr, bool trace = false, bool interactive = false)
{
    public static readonly StepLog Silent = new(TextWriter.Null);

    WaitingLine? waiting; // the "waiting for the model" line, if one is on the screen: log lines go above it

    /// <summary>With --trace: whether Trace writes (so a caller can skip building what it would show).</summary>
    public bool Traces => trace;

    /// <summary>One line of the log.</summary>
    public void Info(string line)
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
            Info($"--- {title}\n{Json.Indented(json)}");
    }

    /// <summary>With --trace: lines as they were on the wire, such as the events of a stream.</summary>
    public void Trace(string title, IEnumerable<string> lines)
    {
        if (trace)
            Info($"--- {title}\n{string.Join('\n', lines)}");
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
