// ReplayServer.cs: an HTTP/1.1 server on loopback that answers from a cassette, so the demo and the tests run offline.
//
// A test and demo helper, not part of the four steps. It answers POST /v1/chat/completions (and /v1/responses,
// /v1/messages) from a cassette, deterministically. Like the real API it keeps connections alive and enforces the
// rules on tools, tool_choice and the history (with the API's own 400 wording, each API's in its own file behind
// ServedApi), so every gotcha of tool calling is an executable test.

using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>What the replay server answers: a status and the body's bytes, and for a played interaction its headers and
/// faults, and for a streamed one each event's bytes.</summary>
sealed record Reply(int Status, ReadOnlyMemory<byte> Content, Interaction? Played = null)
{
    /// <summary>A streamed response's events, each as it goes on the wire (see ServerSentEvents.Format).</summary>
    public IReadOnlyList<byte[]>? Events { get; init; }

    /// <summary>A reply whose body is this JSON, or empty for null.</summary>
    public static Reply Of(int status, JsonNode? body) => new(status, body is null ? ReadOnlyMemory<byte>.Empty : Json.Utf8(body));
}

/// <summary>The replay server. Start it, point a client at BaseUrl, dispose it to stop.</summary>
sealed class ReplayServer : IAsyncDisposable
{
    public const string BasePath = "/v1";
    const int MaxHeaderBytes = 32 * 1024;
    public const int MaxBodyBytes = 8 * 1024 * 1024;

    /// <summary>How much of a request's method or path the log shows; past it, the start and the full length.</summary>
    const int MaxShownLength = 200;

    /// <summary>
    /// Connections served at once; with the size limits above, this bounds memory. More wait to be accepted: one,
    /// accepted but not read, for a slot, the rest in the listen backlog, first come first served. While every slot
    /// is taken, the slot of the connection that has waited longest for a request's headers, past HeaderDeadline, is
    /// given to the one that waits (see ConnectionSlots), so that slow clients cannot hold every slot.
    /// </summary>
    public const int MaxConnections = 64;

    /// <summary>
    /// A request must arrive whole this soon after the server starts waiting for it. A client that sends it a byte at
    /// a time, or not at all ("slowloris"), loses the connection instead of holding it forever.
    /// </summary>
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);

    /// <summary>How long a connection may wait for a request's headers (for its first request, from when it is
    /// accepted; kept alive, from the end of the last answer) before, when every slot is taken, its slot can go to a
    /// connection that waits to be accepted. Without that need, RequestTimeout alone applies.</summary>
    public static readonly TimeSpan HeaderDeadline = TimeSpan.FromSeconds(2);

    readonly Cassette cassette;
    readonly TextWriter log;
    readonly TimeProvider time;
    readonly TcpListener listener;
    readonly CancellationTokenSource stopping = new();
    readonly ConnectionSlots slots;
    readonly ConcurrentDictionary<Socket, Task> connections = new();
    readonly Lock gate = new();
    readonly Task acceptLoop;
    int next; // the next interaction to play; after the last one it starts over
    readonly List<Interaction> played = []; // each interaction answered so far, once, in the order first played
    readonly HashSet<int> playedIndices = [];
    int accepted, open, mismatches;

    ReplayServer(Cassette cassette, IPAddress address, int port, TextWriter? log, TimeProvider? time)
    {
        this.cassette = cassette;
        this.log = log ?? TextWriter.Null;
        this.time = time ?? TimeProvider.System;
        slots = new ConnectionSlots(MaxConnections, HeaderDeadline, this.time);
        listener = new TcpListener(address, port);
        listener.Start();
        var endpoint = (IPEndPoint)listener.LocalEndpoint;
        string host = endpoint.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{endpoint.Address}]" : $"{endpoint.Address}";
        BaseUrl = $"http://{host}:{endpoint.Port}{BasePath}";
        acceptLoop = AcceptLoopAsync();
    }

    /// <summary>
    /// Port 0 takes any free port. Loopback unless another address is given: nothing outside this machine can reach
    /// it. `time` is the clock of the faults' delays and of RequestTimeout; tests pass one they move by hand.
    /// </summary>
    public static ReplayServer Start(Cassette cassette, int port = 0, TextWriter? log = null, IPAddress? address = null, TimeProvider? time = null) =>
        new(cassette, address ?? IPAddress.Loopback, port, log, time);

    public string BaseUrl { get; }

    /// <summary>How many TCP connections it has accepted (keep-alive means far fewer than requests).</summary>
    public int ConnectionsAccepted => Volatile.Read(ref accepted);

    /// <summary>How many connections are open right now.</summary>
    public int OpenConnections => Volatile.Read(ref open);

    /// <summary>How many requests matched no interaction (answered 400 replay_mismatch).</summary>
    public int Mismatches => Volatile.Read(ref mismatches);

    /// <summary>Completes when every connection open now has closed.</summary>
    public Task ConnectionsClosedAsync() => Task.WhenAll(connections.Values);

    /// <summary>For tests: awaited before each event of a streamed response is sent, with the event's position. A test
    /// can hold back the rest of a stream until the client has shown what it got, with no sleeps.</summary>
    public Func<int, Task>? BeforeStreamEvent { get; set; }

    async Task AcceptLoopAsync()
    {
        while (!stopping.IsCancellationRequested)
        {
            Socket socket;
            ConnectionSlots.Slot slot;
            try
            {
                socket = await listener.AcceptSocketAsync(stopping.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            try
            {
                slot = await slots.TakeAsync(stopping.Token); // with every slot taken, the connection waits here, unread
            }
            catch (OperationCanceledException)
            {
                socket.Dispose();
                return;
            }
            Interlocked.Increment(ref accepted);
            Interlocked.Increment(ref open);
            socket.NoDelay = true;
            Task connection = ServeConnectionAsync(socket, slot);
            connections[socket] = connection;
            _ = connection.ContinueWith(_ => connections.TryRemove(socket, out Task? _), TaskScheduler.Default);
        }
    }

    /// <summary>One connection: requests one after another until the client closes it (HTTP/1.1 keep-alive), or its
    /// slot is reclaimed while it waits for a request's headers.</summary>
    async Task ServeConnectionAsync(Socket socket, ConnectionSlots.Slot slot)
    {
        await Task.Yield();
        try
        {
            await using var stream = new NetworkStream(socket, ownsSocket: true);
            var reader = new HttpRequestReader(stream, MaxHeaderBytes, MaxBodyBytes);
            for (bool keepAlive = true; keepAlive && !stopping.IsCancellationRequested;)
            {
                HttpRequestReader.Request? request;
                using (var timeout = new CancellationTokenSource(RequestTimeout, time))
                using (var reading = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token, timeout.Token, slot.Reclaimed))
                {
                    try
                    {
                        request = await ReadRequestAsync(reader, slot, reading.Token);
                    }
                    catch (HttpRequestReader.BadRequestException e)
                    {
                        await WriteResponseAsync(stream, Reply.Of(e.Status, ApiError.Create(e.Message)), keepAlive: false, stopping.Token);
                        return;
                    }
                    catch (OperationCanceledException) when (timeout.IsCancellationRequested && reader.InRequest)
                    {
                        // Wording ours: the API's own for this case is not public.
                        string message = $"The request did not arrive whole within {RequestTimeout.TotalSeconds:0} seconds.";
                        await WriteResponseAsync(stream, Reply.Of(408, ApiError.Create(message)), keepAlive: false, stopping.Token);
                        return;
                    }
                    catch (OperationCanceledException) when (slot.WasReclaimed && (reader.InRequest || socket.Available > 0))
                    {
                        // Part of a request has arrived (or waits, unread, in the socket): say why it is cut off, with
                        // a 408 and Connection: close (RFC 9110 §15.5.9). Wording ours. The write gets as long as the
                        // headers got: the slot is wanted, and a client that reads nothing must not keep it.
                        string message = $"The request headers did not arrive whole within {HeaderDeadline.TotalSeconds:0} seconds, and another client needed the connection.";
                        using var writing = new CancellationTokenSource(HeaderDeadline, time);
                        using var stoppingOrLate = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token, writing.Token);
                        await WriteResponseAsync(stream, Reply.Of(408, ApiError.Create(message)), keepAlive: false, stoppingOrLate.Token);
                        return;
                    }
                }
                if (request is null)
                    return; // the client closed the connection between requests
                keepAlive = await WriteResponseAsync(stream, HandleSafely(request), request.KeepAlive, stopping.Token);
                if (keepAlive)
                    slot.WaitForRequest();
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // The client went away, stayed silent past RequestTimeout, its slot was reclaimed while it sent nothing,
            // or the server is stopping: nothing to answer.
        }
        finally
        {
            Interlocked.Decrement(ref open);
            slot.Dispose();
        }
    }

    /// <summary>The next request, or null when the client closed the connection between requests. Once its headers
    /// are in, its slot is no longer reclaimed; if it was reclaimed first, the read is cancelled.</summary>
    static async Task<HttpRequestReader.Request?> ReadRequestAsync(HttpRequestReader reader, ConnectionSlots.Slot slot, CancellationToken cancellationToken)
    {
        if (await reader.ReadHeadAsync(cancellationToken) is not HttpRequestReader.Head head)
            return null;
        if (!slot.HeadersArrived())
            throw new OperationCanceledException(slot.Reclaimed);
        return await reader.ReadBodyAsync(head, cancellationToken);
    }

    /// <summary>A request that trips up the server answers 500 (and is logged); it never takes the server down.</summary>
    Reply HandleSafely(HttpRequestReader.Request request)
    {
        try
        {
            return Handle(request);
        }
        catch (Exception e)
        {
            return Log(request, 500, ApiError.Create($"The replay server failed on this request: {e.Message}", type: "server_error"), $"server error: {e}");
        }
    }

    /// <summary>Routing, the request rules, the history rules, the reasoning rules (each API's own), then the cassette.</summary>
    Reply Handle(HttpRequestReader.Request request)
    {
        string path = request.Path.Split('?')[0];
        if (!path.StartsWith(BasePath + "/", StringComparison.Ordinal))
            return Log(request, 404, ApiError.Create(
                $"Unknown request URL: {request.Method} {path}. Please check the URL for typos, or see the docs at https://platform.openai.com/docs/api-reference/.",
                code: "unknown_url"), $"not under {BasePath}");
        string relativePath = path[BasePath.Length..];
        ServedApi? api = ServedApi.At(relativePath);

        JsonNode? body;
        try
        {
            body = request.Body.Length == 0 ? null : Json.Parse(request.Body);
        }
        catch (JsonException)
        {
            return Log(request, 400, ErrorBody(api,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. " +
                "The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"), "body is not JSON");
        }
        if (request.Method == "POST" && api is not null)
        {
            if (body is not JsonObject apiRequest)
                return Log(request, 400, ErrorBody(api, "The request body must be a JSON object."), "body is not an object");
            if (api.FirstViolation(apiRequest, request.Headers) is JsonObject violation)
                return Log(request, 400, violation, "rule: " + Json.String(Json.At(violation, "error", "message")));
        }

        lock (gate)
        {
            // The reasoning rules know what the server has answered: the API knows the state it handed out.
            if (request.Method == "POST" && body is JsonObject asked && api?.ReasoningViolation(asked, played) is Refusal broken)
                return Log(request, broken.Status, broken.Body, "rule: " + Json.String(Json.At(broken.Body is JsonArray { Count: > 0 } list ? list[0] : broken.Body, "error", "message")));
            return cassette.MatchByContent ? PlayMatching(request, relativePath, api, body) : PlayNext(request, relativePath, api, body);
        }
    }

    /// <summary>
    /// "match": "order" (the default): the request must be the next interaction's, or the first one's. A flow that
    /// stops part-way (a Ctrl+C, a client that timed out on its first request and sends it again) leaves the cursor
    /// in the middle of the cassette; the next flow's first request then starts the replay over instead of being
    /// refused until a restart. The interaction at the cursor is tried first, so that a request recorded several
    /// times in a row (429, then 503, then answered) still gets the next recording when it is retried. A request that
    /// matches neither leaves the cursor where it is.
    /// </summary>
    Reply PlayNext(HttpRequestReader.Request request, string relativePath, ServedApi? api, JsonNode? body)
    {
        int index = next;
        string which = $"interaction {index + 1} of {cassette.Interactions.Count}";
        Reply reply;
        if (Difference(cassette.Interactions[index], request.Method, relativePath, api, body) is string difference)
        {
            if (index == 0 || Difference(cassette.Interactions[0], request.Method, relativePath, api, body) is not null)
                return Mismatch(request, api, $"Replay mismatch at {which}: {difference}", $"mismatch at {which}: {difference}");
            (index, reply) = (0, Play(request, 0, $"the replay starts over: the request did not match interaction {index + 1} but is the first one's"));
        }
        else
        {
            reply = Play(request, index);
        }
        if (reply.Played is not null) // a body that could not be sent leaves the cursor on its interaction
            next = (index + 1) % cassette.Interactions.Count;
        return reply;
    }

    /// <summary>"match": "content": the first interaction whose request this is, whatever came before.</summary>
    Reply PlayMatching(HttpRequestReader.Request request, string relativePath, ServedApi? api, JsonNode? body)
    {
        IReadOnlyList<Interaction> all = cassette.Interactions;
        for (int i = 0; i < all.Count; i++)
        {
            if (Difference(all[i], request.Method, relativePath, api, body) is null)
                return Play(request, i);
        }
        // Show how it differs from the interaction with a history as long (as many messages, or input items), the
        // likeliest one meant.
        int? count = HistoryLength(body, api);
        int closest = Math.Max(0, all.ToList().FindIndex(i => HistoryLength(i.RequestBody, ServedApi.At(i.Path)) == count));
        string difference = $"no interaction matches; interaction {closest + 1} of {all.Count} differs at {Difference(all[closest], request.Method, relativePath, api, body)}";
        return Mismatch(request, api, $"Replay mismatch: {difference}", $"mismatch: {difference}");
    }

    /// <summary>How many items the request's history holds, in the field where its API keeps it; null when it has none
    /// (or no API is served at its path).</summary>
    static int? HistoryLength(JsonNode? body, ServedApi? api) =>
        api is null ? null : (Json.At(body, api.HistoryField) as JsonArray)?.Count;

    static string? Difference(Interaction expected, string method, string relativePath, ServedApi? api, JsonNode? body) =>
        method != expected.Method || relativePath != expected.Path
            ? $"expected {expected.Method} {expected.Path}, got {Shown(method)} {Shown(relativePath)}"
            : JsonMatch.FirstDifference(expected.RequestBody, body, api);

    /// <summary>
    /// Answers with interaction `index`; `why`, when given, is logged after its number. The body's bytes (or each
    /// event's) are made here, under the lock (a parsed JsonNode is not safe to read from two threads at once) and
    /// before the log line, so that a recorded body that cannot be written (System.Text.Json writes no string over
    /// 166,666,666 characters; a cassette built in code has no size limit) is answered 500 saying why, and logged so,
    /// instead of logged as played and then cut off. Such a reply has no Played interaction.
    /// </summary>
    Reply Play(HttpRequestReader.Request request, int index, string? why = null)
    {
        Interaction interaction = cassette.Interactions[index];
        if (playedIndices.Add(index))
            played.Add(interaction);
        string which = $"interaction {index + 1} of {cassette.Interactions.Count}";
        ReadOnlyMemory<byte> content;
        List<byte[]>? events;
        try
        {
            bool named = ServedApi.At(interaction.Path)?.NamesEvents == true;
            events = interaction.ResponseEvents?.Select(e => Encoding.UTF8.GetBytes(ServerSentEvents.Format(e, named))).ToList();
            content = interaction.ResponseEvents is not null ? ReadOnlyMemory<byte>.Empty
                : interaction.ResponseText is string text ? Encoding.UTF8.GetBytes(text)
                : interaction.ResponseBody is JsonNode body ? Json.Utf8(body)
                : ReadOnlyMemory<byte>.Empty;
        }
        catch (Exception e) // whatever stops the body being written: too long a string, too deep, over 2 GB
        {
            string message = $"The replay server cannot send the recorded body of {which}: {e.Message}";
            return Log(request, Reply.Of(500, ApiError.Create(message, type: "server_error")), $"{which}, not sent: {e.Message}");
        }
        return Log(request, new Reply(interaction.Status, content, interaction) { Events = events }, why is null ? which : $"{which}; {why}");
    }

    /// <summary>400, not a status that clients retry: a mismatch will not go away by sending the request again.</summary>
    Reply Mismatch(HttpRequestReader.Request request, ServedApi? api, string message, string note)
    {
        Interlocked.Increment(ref mismatches);
        return Log(request, 400, ErrorBody(api,
            $"{message}. The request differs from the one recorded in the cassette.", code: "replay_mismatch"), note);
    }

    /// <summary>An error in the shape of the API served at the request's path; on a path that none is served at,
    /// OpenAI's, the shape of the server's own errors (such as its 404).</summary>
    static JsonObject ErrorBody(ServedApi? api, string message, string? code = null) =>
        api?.Error(message, code) ?? ApiError.Create(message, code: code);

    /// <summary>One line per request: "{method} {path} -> {status} ({note})", each part Shown or Escaped, since each
    /// can hold text of the request's.</summary>
    Reply Log(HttpRequestReader.Request request, int status, JsonNode? body, string note) => Log(request, Reply.Of(status, body), note);

    Reply Log(HttpRequestReader.Request request, Reply reply, string note)
    {
        lock (log)
            log.WriteLine($"{Shown(request.Method)} {Shown(request.Path)} -> {reply.Status} ({Escaped(note)})");
        return reply;
    }

    /// <summary>A method or path of the request as the log and a mismatch show it: Escaped, and cut after
    /// MaxShownLength characters, with its full length.</summary>
    static string Shown(string text) =>
        Escaped(text.Length <= MaxShownLength ? text : $"{text[..MaxShownLength]}... ({text.Length} characters)");

    /// <summary>
    /// The text with each control character escaped as \u001b: C0 (a line break included), DEL and C1 (the request
    /// line is read as Latin-1, so a byte 0x9B is U+009B, CSI). A request cannot write an escape sequence to the
    /// terminal that shows the log, nor start a line of its own in it. A backslash is left as it is.
    /// </summary>
    static string Escaped(string text)
    {
        if (!text.Any(char.IsControl))
            return text;
        var escaped = new StringBuilder(text.Length + 16);
        foreach (char c in text)
        {
            if (char.IsControl(c))
                escaped.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
            else
                escaped.Append(c);
        }
        return escaped.ToString();
    }

    /// <summary>
    /// Writes the reply, misbehaving as its interaction's fault says. Returns whether the connection can serve
    /// another request.
    /// </summary>
    async Task<bool> WriteResponseAsync(Stream stream, Reply reply, bool keepAlive, CancellationToken cancellationToken)
    {
        if (reply is { Played: Interaction streamed, Events: IReadOnlyList<byte[]> events })
            return await WriteEventStreamAsync(stream, reply.Status, streamed, events, keepAlive, cancellationToken);
        Interaction? played = reply.Played;
        Fault fault = played?.Fault ?? Fault.None;
        ReadOnlyMemory<byte> content = reply.Content;
        // truncate_after_bytes: a whole HTTP response, but its body ends early, and Content-Length says so.
        if (fault.TruncateAfterBytes is int truncated && truncated < content.Length)
            content = content[..truncated];
        // close_after_bytes: Content-Length promises the whole body; the connection closes before it is all sent.
        int sent = fault.CloseAfterBytes is int cut ? Math.Min(cut, content.Length) : content.Length;

        if (fault.DelayMs > 0)
            await Task.Delay(TimeSpan.FromMilliseconds(fault.DelayMs), time, cancellationToken);
        IReadOnlyDictionary<string, string> headers = played?.Headers ?? new Dictionary<string, string>();
        var head = new StringBuilder($"HTTP/1.1 {reply.Status} {ReasonPhrase(reply.Status)}\r\n");
        if (!headers.Keys.Any(name => name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase)))
            head.Append("Content-Type: application/json\r\n");
        foreach ((string name, string value) in headers)
            head.Append($"{name}: {value}\r\n");
        head.Append($"Content-Length: {content.Length}\r\n");
        head.Append(keepAlive ? "\r\n" : "Connection: close\r\n\r\n");
        await stream.WriteAsync(Encoding.UTF8.GetBytes(head.ToString()), cancellationToken);

        // drip_bytes, drip_interval_ms: the body a few bytes at a time, with a pause between writes.
        int piece = fault.DripBytes > 0 ? fault.DripBytes : Math.Max(sent, 1);
        for (int offset = 0; offset < sent; offset += piece)
        {
            if (offset > 0 && fault.DripIntervalMs > 0)
                await Task.Delay(TimeSpan.FromMilliseconds(fault.DripIntervalMs), time, cancellationToken);
            await stream.WriteAsync(content.Slice(offset, Math.Min(piece, sent - offset)), cancellationToken);
            await stream.FlushAsync(cancellationToken);
        }
        await stream.FlushAsync(cancellationToken);
        return keepAlive && fault.CloseAfterBytes is null;
    }

    /// <summary>
    /// A streamed response, sent as the API sends one: text/event-stream, each event flushed on its own as one chunk
    /// of a chunked body (its length is not known in advance). A JSON object goes out as `data: {…}` on one line, a
    /// string (such as "[DONE]") as it is, one `data:` line per line of it, and a blank line ends each event; for an
    /// API that names its events (the Responses and Messages APIs), after an `event:` line naming it (see
    /// ServerSentEvents.Format; `events` are these, made when the interaction was played). Of the faults, delay_ms
    /// waits before the head and close_after_bytes cuts the events off after that many bytes.
    /// </summary>
    async Task<bool> WriteEventStreamAsync(Stream stream, int status, Interaction played, IReadOnlyList<byte[]> events, bool keepAlive, CancellationToken cancellationToken)
    {
        Fault fault = played.Fault;
        if (fault.DelayMs > 0)
            await Task.Delay(TimeSpan.FromMilliseconds(fault.DelayMs), time, cancellationToken);
        var head = new StringBuilder($"HTTP/1.1 {status} {ReasonPhrase(status)}\r\n");
        if (!played.Headers.Keys.Any(name => name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase)))
            head.Append("Content-Type: text/event-stream; charset=utf-8\r\n");
        foreach ((string name, string value) in played.Headers)
            head.Append($"{name}: {value}\r\n");
        head.Append("Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n");
        head.Append(keepAlive ? "\r\n" : "Connection: close\r\n\r\n");
        await stream.WriteAsync(Encoding.UTF8.GetBytes(head.ToString()), cancellationToken);
        await stream.FlushAsync(cancellationToken);

        int left = fault.CloseAfterBytes ?? int.MaxValue;
        for (int i = 0; i < events.Count; i++)
        {
            if (played.EventDelay > TimeSpan.Zero)
                await Task.Delay(played.EventDelay, time, cancellationToken);
            if (BeforeStreamEvent is Func<int, Task> hold)
                await hold(i).WaitAsync(cancellationToken);
            byte[] sse = events[i];
            int sent = Math.Min(sse.Length, left);
            if (sent > 0) // an empty chunk would say that the body is complete
            {
                await stream.WriteAsync(Encoding.ASCII.GetBytes($"{sent:x}\r\n"), cancellationToken);
                await stream.WriteAsync(sse.AsMemory(0, sent), cancellationToken);
                await stream.WriteAsync("\r\n"u8.ToArray(), cancellationToken);
                await stream.FlushAsync(cancellationToken);
            }
            left -= sent;
            if (left == 0)
                return false; // close_after_bytes: the connection closes with the body unfinished
        }
        await stream.WriteAsync("0\r\n\r\n"u8.ToArray(), cancellationToken); // the last chunk: the body is complete
        await stream.FlushAsync(cancellationToken);
        return keepAlive;
    }

    static string ReasonPhrase(int status) => status switch
    {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    };

    public async ValueTask DisposeAsync()
    {
        stopping.Cancel();
        listener.Stop();
        await acceptLoop;
        foreach (Socket socket in connections.Keys)
            socket.Close(); // cut connections that are idle between requests
        await Task.WhenAll(connections.Values);
        stopping.Dispose();
    }
}
