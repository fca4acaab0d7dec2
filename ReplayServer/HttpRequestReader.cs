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

/// <summary>Reads HTTP/1.1 requests from a connection (RFC 9112): request line, headers, then a body sized by
/// Content-Length or sent in chunks.</summary>
sealed class HttpRequestReader(Stream stream, int maxHeaderBytes, int maxBodyBytes)
{
    public sealed record Request(string Method, string Path, bool KeepAlive, byte[] Body)
    {
        /// <summary>The request's headers, by name in any case.</summary>
        public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();
    }

    public sealed class BadRequestException(int status, string message) : Exception(message)
    {
        public int Status { get; } = status;
    }

    readonly byte[] buffer = new byte[maxHeaderBytes];
    int start, end; // the bytes read but not yet used are buffer[start..end]

    /// <summary>True once part of the next request has arrived, until all of it has.</summary>
    public bool InRequest { get; private set; }

    /// <summary>The next request, or null when the client closed the connection cleanly between requests.</summary>
    public async Task<Request?> ReadAsync(CancellationToken cancellationToken)
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

        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (string line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            if (colon > 0)
                headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        bool keepAlive = requestLine[2] == "HTTP/1.1"
            ? !string.Equals(headers.GetValueOrDefault("Connection"), "close", StringComparison.OrdinalIgnoreCase)
            : string.Equals(headers.GetValueOrDefault("Connection"), "keep-alive", StringComparison.OrdinalIgnoreCase);

        if (string.Equals(headers.GetValueOrDefault("Expect"), "100-continue", StringComparison.OrdinalIgnoreCase))
            await stream.WriteAsync("HTTP/1.1 100 Continue\r\n\r\n"u8.ToArray(), cancellationToken);

        byte[] body;
        if (headers.GetValueOrDefault("Transfer-Encoding")?.Contains("chunked", StringComparison.OrdinalIgnoreCase) == true)
        {
            body = await ReadChunkedAsync(cancellationToken);
        }
        else
        {
            long length = 0;
            if (headers.TryGetValue("Content-Length", out string? text) &&
                !long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out length))
                throw new BadRequestException(400, $"Invalid Content-Length: '{text}'.");
            if (length > maxBodyBytes)
                throw new BadRequestException(413, $"The request body is {length} bytes; the limit is {maxBodyBytes}.");
            body = new byte[length];
            await ReadExactlyAsync(body, cancellationToken);
        }
        InRequest = false;
        return new Request(requestLine[0], requestLine[1], keepAlive, body) { Headers = headers };
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
