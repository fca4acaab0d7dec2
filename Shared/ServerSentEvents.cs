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
    public static async IAsyncEnumerable<string> ReadDataAsync(Stream stream, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        // Always UTF-8, a leading BOM skipped. The reader's decoder keeps a character whose bytes arrive in two reads.
        using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: false);
        var data = new StringBuilder();
        // A line ends at CRLF, LF or CR; ReadLineAsync knows all three, even when CR and LF arrive in separate reads.
        while (await reader.ReadLineAsync(cancellationToken) is string line)
        {
            if (line.Length == 0)
            {
                // A blank line ends the event: its data lines, joined by "\n". An event without data is no event.
                if (data.Length > 0)
                    yield return data.ToString(0, data.Length - 1);
                data.Clear();
                continue;
            }
            if (line[0] == ':')
                continue; // a comment, such as the keep-alive ": ping"
            int colon = line.IndexOf(':');
            if ((colon < 0 ? line : line[..colon]) != "data")
                continue; // event (repeated in the data's "type"), id and retry: not needed
            string value = colon < 0 ? "" : line[(colon + 1)..];
            data.Append(value.StartsWith(' ') ? value[1..] : value).Append('\n'); // "data:x" and "data: x" both say "x"
        }
        // The stream has ended: an event still without its blank line is incomplete, and dropped.
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
