// ServerSentEvents.cs: the event-stream format (SSE) that streamed replies come in: read by the client, written by the replay server.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading;

namespace ToolCall;

/// <summary>
/// The event-stream format (https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream),
/// as far as the three APIs use it: the data of each event. The BCL has a parser for it,
/// System.Net.ServerSentEvents.SseParser (the tests hold this one to it). The rules are written out here because they
/// are what a port to another language has to get right, and they fit in a screen.
/// The Responses and Messages APIs also name each event in an `event:` line, but each repeats that name in its data,
/// as "type", and that is what their readers below switch on. So the data is all any of the three needs: one reader
/// serves them all, and a proxy that drops `event:` lines breaks nothing.
/// </summary>
static class ServerSentEvents
{
    /// <summary>The most characters one event may hold, its lines together: a server that sends a line without end is
    /// stopped here (InvalidDataException) rather than filling the memory.</summary>
    public const int MaxEventChars = 16 * 1024 * 1024;

    /// <summary>The data of each event of the stream, as it arrives.</summary>
    public static async IAsyncEnumerable<string> ReadDataAsync(
        Stream stream, [EnumeratorCancellation] CancellationToken cancellationToken, int maxEventChars = MaxEventChars)
    {
        // Always UTF-8, a leading BOM skipped. The reader's decoder keeps a character whose bytes arrive in two reads.
        using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: false);
        var line = new StringBuilder();
        var data = new StringBuilder();
        char[] buffer = new char[4096];
        bool afterCR = false;
        int read;
        while ((read = await reader.ReadAsync(buffer, cancellationToken)) > 0)
        {
            // A read that always finds more waiting never waits, so it never looks at the token: look each time.
            cancellationToken.ThrowIfCancellationRequested();
            for (int i = 0; i < read; i++)
            {
                // A line ends at CRLF, LF or CR; a CRLF whose CR and LF arrive in separate reads is one line end.
                char c = buffer[i];
                if (c == '\n' && afterCR)
                {
                    afterCR = false;
                    continue;
                }
                afterCR = c == '\r';
                if (c is not ('\r' or '\n'))
                {
                    if (line.Length + data.Length >= maxEventChars)
                        throw new InvalidDataException($"an event of the stream is over {maxEventChars} characters");
                    line.Append(c);
                    continue;
                }
                if (EndOfLine(line.ToString(), data) is string eventData)
                    yield return eventData;
                line.Clear();
            }
        }
        // The stream has ended: an event still without its blank line is incomplete, and dropped.
    }

    /// <summary>One whole line, added to the event it belongs to; returns the event's data when the line ends it.</summary>
    static string? EndOfLine(string line, StringBuilder data)
    {
        if (line.Length == 0)
        {
            // A blank line ends the event: its data lines, joined by "\n". An event without data is no event.
            string? eventData = data.Length > 0 ? data.ToString(0, data.Length - 1) : null;
            data.Clear();
            return eventData;
        }
        if (line[0] == ':')
            return null; // a comment, such as the keep-alive ": ping"
        int colon = line.IndexOf(':');
        if ((colon < 0 ? line : line[..colon]) != "data")
            return null; // event (repeated in the data's "type"), id and retry: not needed
        string value = colon < 0 ? "" : line[(colon + 1)..];
        data.Append(value.StartsWith(' ') ? value[1..] : value).Append('\n'); // "data:x" and "data: x" both say "x"
        return null;
    }

    /// <summary>
    /// One event as the APIs write it (the replay server sends this, --trace shows it): with `named`, as the Responses
    /// and Messages APIs do, an `event:` line with the data's "type"; then the data, a JSON object on one line and a
    /// string (such as "[DONE]") as it is, one `data:` line per line of it; and a blank line.
    /// </summary>
    public static string Format(JsonNode? item, bool named)
    {
        string data = item is JsonObject json ? Json.Compact(json) : Json.String(item) ?? "";
        string name = named && Json.String(Json.At(item, "type")) is string type && type.AsSpan().IndexOfAny('\r', '\n') < 0
            ? $"event: {type}\n"
            : "";
        return name + string.Concat(data.Split('\n').Select(line => $"data: {line}\n")) + "\n";
    }
}
