// StepLog.cs: the step log on stderr: what each step sent and received.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Text;
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

    /// <summary>One line of the log, its control characters escaped (see Escaped).</summary>
    public void Info(string line) => Write(Escaped(line));

    /// <summary>With --trace: the full JSON of each request and response (JSON escapes every control character).</summary>
    public void Trace(string title, JsonNode? json)
    {
        if (trace)
            Write($"--- {EscapedLines(title)}\n{Json.Indented(json)}");
    }

    /// <summary>With --trace: lines as they were on the wire, such as the events of a stream, each escaped.</summary>
    public void Trace(string title, IEnumerable<string> lines)
    {
        if (trace)
            Write($"--- {EscapedLines(title)}\n{string.Join('\n', lines.Select(EscapedLines))}");
    }

    /// <summary>
    /// The text with each control character written as \u001B, \u0007…: what a model or a server sends (a tool name,
    /// arguments, an error message) never reaches the terminal raw, where an escape sequence could change its title or
    /// clear the screen, and a line break could forge a log line.
    /// </summary>
    public static string Escaped(string text)
    {
        if (!text.Any(char.IsControl))
            return text;
        var escaped = new StringBuilder(text.Length + 16);
        foreach (char c in text)
        {
            if (char.IsControl(c))
                escaped.Append($"\\u{(int)c:X4}");
            else
                escaped.Append(c);
        }
        return escaped.ToString();
    }

    /// <summary>Each line escaped, the line breaks between them kept (a title with the request's headers, an event of
    /// several data lines).</summary>
    static string EscapedLines(string text) => string.Join('\n', text.Split('\n').Select(Escaped));

    void Write(string text)
    {
        if (waiting is not null)
            waiting.WriteAbove(text);
        else
            stderr.WriteLine(text);
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
