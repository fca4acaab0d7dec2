// HttpRequestReader.cs: HTTP/1.1 requests read from a connection (RFC 9112), for the replay server.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>Reads HTTP/1.1 requests from a connection (RFC 9112): request line and headers (ReadHeadAsync), then a body
/// sized by Content-Length or sent in chunks (ReadBodyAsync).</summary>
sealed class HttpRequestReader(Stream stream, int maxHeaderBytes, int maxBodyBytes)
{
    public sealed record Request(string Method, string Path, bool KeepAlive, byte[] Body)
    {
        /// <summary>The request's headers, by name in any case.</summary>
        public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();
    }

    /// <summary>A request's line and headers, read; its body not yet. BodyLength is null for a chunked body.</summary>
    public sealed record Head(string Method, string Path, bool KeepAlive, IReadOnlyDictionary<string, string> Headers, long? BodyLength);

    public sealed class BadRequestException(int status, string message) : Exception(message)
    {
        public int Status { get; } = status;
    }

    readonly byte[] buffer = new byte[maxHeaderBytes];
    int start, end; // the bytes read but not yet used are buffer[start..end]

    /// <summary>True once part of the next request has arrived, until all of it has.</summary>
    public bool InRequest { get; private set; }

    /// <summary>The next request's line and headers, or null when the client closed the connection cleanly between
    /// requests. ReadBodyAsync reads the rest.</summary>
    public async Task<Head?> ReadHeadAsync(CancellationToken cancellationToken)
    {
        InRequest = end > start;
        int headerEnd;
        while ((headerEnd = buffer.AsSpan(start, end - start).IndexOf("\r\n\r\n"u8)) < 0)
        {
            if (end - start == buffer.Length)
                throw new BadRequestException(431, $"The request headers are larger than {maxHeaderBytes} bytes.");
            if (!await FillAsync(cancellationToken))
                return end == start ? null : throw new IOException("connection closed in the middle of the request headers");
        }

        string head = Encoding.Latin1.GetString(buffer, start, headerEnd);
        start += headerEnd + 4;
        string[] lines = head.Split("\r\n");
        string[] requestLine = lines[0].Split(' ');
        if (requestLine.Length != 3 || !requestLine[2].StartsWith("HTTP/1.", StringComparison.Ordinal))
            throw new BadRequestException(400, $"Malformed request line: '{lines[0]}'.");

        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase); // a name given twice: the last line
        var contentLengths = new List<string>();
        var transferEncodings = new List<string>();
        foreach (string line in lines.Skip(1))
        {
            (string name, string value) = FieldLine(line);
            headers[name] = value;
            if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
                contentLengths.Add(value);
            else if (name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase))
                transferEncodings.Add(value);
        }
        bool keepAlive = requestLine[2] == "HTTP/1.1"
            ? !string.Equals(headers.GetValueOrDefault("Connection"), "close", StringComparison.OrdinalIgnoreCase)
            : string.Equals(headers.GetValueOrDefault("Connection"), "keep-alive", StringComparison.OrdinalIgnoreCase);
        return new Head(requestLine[0], requestLine[1], keepAlive, headers, BodyLength(contentLengths, transferEncodings));
    }

    /// <summary>The body of the request whose head ReadHeadAsync returned, after a "100 Continue" if it asks for one.</summary>
    public async Task<Request> ReadBodyAsync(Head head, CancellationToken cancellationToken)
    {
        if (string.Equals(head.Headers.GetValueOrDefault("Expect"), "100-continue", StringComparison.OrdinalIgnoreCase))
            await stream.WriteAsync("HTTP/1.1 100 Continue\r\n\r\n"u8.ToArray(), cancellationToken);

        byte[] body;
        if (head.BodyLength is not long sized)
        {
            body = await ReadChunkedAsync(cancellationToken);
        }
        else
        {
            if (sized > maxBodyBytes)
                throw new BadRequestException(413, $"The request body is {sized} bytes; the limit is {maxBodyBytes}.");
            body = new byte[sized];
            await ReadExactlyAsync(body, cancellationToken);
        }
        InRequest = false;
        return new Request(head.Method, head.Path, head.KeepAlive, body) { Headers = head.Headers };
    }

    /// <summary>
    /// A header line's name and value: `name ":" OWS value OWS` (RFC 9112 §5), the name a token (RFC 9110 §5.1). Any
    /// other line is answered 400 at once, never skipped or trimmed into shape: a line that one server skips and
    /// another reads is how a request is smuggled past a proxy. RFC 9112 §5.1 requires the 400 for whitespace between
    /// the name and the colon, and §5.2 allows it for a line folded onto the one before (one that starts with
    /// whitespace).
    /// </summary>
    static (string Name, string Value) FieldLine(string line)
    {
        int colon = line.IndexOf(':');
        string name = colon < 0 ? line : line[..colon];
        if (colon > 0 && name.All(IsTokenCharacter))
            return (name, line[(colon + 1)..].Trim());
        string why =
            colon < 0 ? "a header line is a name, a colon, then the value"
            : line[0] is ' ' or '\t' ? "a line that starts with whitespace continues the one before, which HTTP/1.1 no longer allows"
            : name.TrimEnd(' ', '\t').Length > 0 && name.TrimEnd(' ', '\t').All(IsTokenCharacter) ? "no whitespace is allowed between a header's name and its colon"
            : "a header's name is letters, digits and !#$%&'*+-.^_`|~";
        throw new BadRequestException(400, $"Malformed header line: '{line}': {why}.");
    }

    /// <summary>tchar (RFC 9110 §5.6.2): the characters of a token, such as a header's name.</summary>
    static bool IsTokenCharacter(char c) => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c);

    /// <summary>
    /// How long the body is, from every Content-Length and Transfer-Encoding line (RFC 9112 §6.3); null when it comes
    /// chunked. Where the two could disagree on where the request ends (the root of request smuggling, RFC 9112
    /// §11.2), the request is answered 400 at once, and the connection closed after it:
    /// - Transfer-Encoding with Content-Length: §6.1 lets a server refuse it, and §6.3 says it "ought to be handled as
    ///   an error"; refused.
    /// - Transfer-Encoding whose last coding is not chunked: the length cannot be known (§6.3, item 4).
    /// - Content-Length given more than once with values that differ, in separate lines or a list ("42, 99"): an
    ///   invalid Content-Length (§6.3, item 5). The same value more than once ("42, 42", or two lines of 42) is read
    ///   as that value, as RFC 9110 §8.6 allows: the length is not in doubt, and a proxy may have repeated it.
    /// </summary>
    static long? BodyLength(List<string> contentLengths, List<string> transferEncodings)
    {
        if (transferEncodings.Count > 0)
        {
            if (contentLengths.Count > 0)
                throw new BadRequestException(400, "A request cannot have both Transfer-Encoding and Content-Length.");
            string codings = string.Join(", ", transferEncodings);
            if (!codings.Split(',')[^1].Trim().Equals("chunked", StringComparison.OrdinalIgnoreCase))
                throw new BadRequestException(400, $"Transfer-Encoding must end with chunked, not '{codings}'.");
            return null;
        }
        if (contentLengths.Count == 0)
            return 0;
        var lengths = new HashSet<long>();
        foreach (string text in contentLengths.SelectMany(value => value.Split(',')))
        {
            if (!long.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long length))
                throw new BadRequestException(400, $"Invalid Content-Length: '{string.Join(", ", contentLengths)}'.");
            lengths.Add(length);
        }
        if (lengths.Count > 1)
            throw new BadRequestException(400, $"Content-Length is given more than once, with different values: '{string.Join(", ", contentLengths)}'.");
        return lengths.Single();
    }

    async Task<byte[]> ReadChunkedAsync(CancellationToken cancellationToken)
    {
        using var body = new MemoryStream();
        while (true)
        {
            string sizeLine = await ReadLineAsync(cancellationToken);
            string hex = sizeLine.Split(';')[0].Trim(); // chunk extensions are allowed and ignored
            if (!int.TryParse(hex, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int size) || size < 0)
                throw new BadRequestException(400, $"Invalid chunk size: '{sizeLine}'.");
            if (size == 0)
                break;
            if (body.Length + size > maxBodyBytes)
                throw new BadRequestException(413, $"The request body is over the limit of {maxBodyBytes} bytes.");
            byte[] chunk = new byte[size];
            await ReadExactlyAsync(chunk, cancellationToken);
            body.Write(chunk);
            if (await ReadLineAsync(cancellationToken) != "")
                throw new BadRequestException(400, "A chunk is not followed by CRLF.");
        }
        while (await ReadLineAsync(cancellationToken) != "")
        {
            // trailer fields: allowed, ignored
        }
        return body.ToArray();
    }

    async Task<string> ReadLineAsync(CancellationToken cancellationToken)
    {
        int newline;
        while ((newline = buffer.AsSpan(start, end - start).IndexOf("\r\n"u8)) < 0)
        {
            if (end - start == buffer.Length)
                throw new BadRequestException(400, "A chunk-size line is too long.");
            if (!await FillAsync(cancellationToken))
                throw new IOException("connection closed in the middle of a chunked body");
        }
        string line = Encoding.Latin1.GetString(buffer, start, newline);
        start += newline + 2;
        return line;
    }

    async Task ReadExactlyAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        int buffered = Math.Min(end - start, destination.Length);
        buffer.AsMemory(start, buffered).CopyTo(destination);
        start += buffered;
        if (buffered < destination.Length)
            await stream.ReadExactlyAsync(destination[buffered..], cancellationToken);
    }

    async Task<bool> FillAsync(CancellationToken cancellationToken)
    {
        if (start > 0)
        {
            buffer.AsSpan(start, end - start).CopyTo(buffer);
            (start, end) = (0, end - start);
        }
        int read = await stream.ReadAsync(buffer.AsMemory(end), cancellationToken);
        end += read;
        InRequest |= read > 0;
        return read > 0;
    }
}
