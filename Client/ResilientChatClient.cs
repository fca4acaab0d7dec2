// ResilientChatClient.cs: the HTTP call the command line makes: the same POST, with retries, timeouts, recording and --trace around it.

using System;
using System.Buffers;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net;
using System.Linq;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>
/// The ChatClient the program uses, on every API: ToolCall.cs's POST with what a real API needs around it. Failed
/// attempts are retried (RetryPolicy), each attempt has --timeout seconds, body included; a streamed reply (--stream)
/// is put back together into the same reply object (Streaming.cs); a reply is checked before the steps read it; and
/// every exchange can be recorded (--record, --diagram) and traced (--trace, the key redacted). What differs by API
/// comes from its Api: the endpoint, the headers that carry the key, the stream and the usage fields.
/// </summary>
sealed class ResilientChatClient : ChatClient
{
    readonly HttpClient http;
    readonly Api api;
    readonly string? apiKey;
    readonly StepLog log;
    readonly Recorder? recorder;

    /// <summary>Requests go to `baseUrl` + the API's path; `apiKey` goes in the API's own header (Api.AddHeaders).
    /// Give it an HttpClient from NewHttpClient, which does not follow redirects.</summary>
    public ResilientChatClient(HttpClient http, string baseUrl, Api api, string? apiKey, StepLog log, Recorder? recorder = null)
        : base(http, baseUrl, apiKey: null, api.Path)
    {
        this.http = http;
        this.api = api;
        this.apiKey = apiKey;
        this.log = log;
        this.recorder = recorder;
        // A key of a few characters would be found by chance in any text; a real one is far longer.
        secret = apiKey is { Length: >= 8 } ? apiKey : null;
        secretBytes = secret is null ? null : Encoding.UTF8.GetBytes(secret);
    }

    /// <summary>
    /// The HttpClient the program sends with: compressed replies accepted, no HttpClient timeout (each attempt has
    /// --timeout, body included, see RetryPolicy), and redirects not followed. .NET drops Authorization when it follows
    /// a redirect to another host, but not a custom header such as Anthropic's x-api-key, which would go along to
    /// wherever the redirect points; so a 3xx is an error line that says where it points, and the key never leaves the
    /// base URL's scheme, host and port.
    /// </summary>
    public static HttpClient NewHttpClient() =>
        new(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.All, AllowAutoRedirect = false })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };

    /// <summary>The API key as servers must never show it back: null for none, or one too short to look for.</summary>
    readonly string? secret;
    readonly byte[]? secretBytes;

    /// <summary>The most bytes one response may have, a whole stream included (--max-response-mb): past it the response
    /// is not read further, so a server that sends without end cannot fill the memory.</summary>
    public long MaxResponseBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>When to send a failed request again, and how long one attempt may take (--retries, --timeout).</summary>
    public RetryPolicy Retries { get; init; } = new();

    // Every request body is written into one buffer and every response body read into another (see Json.Utf8 and
    // ReadBodyAsync), instead of new arrays for each: a client sends one request at a time, as a conversation does, so
    // the bytes of one exchange (and of its retries) are done with before the next one's are written. (ToolCall.cs's
    // plain PostAsync allocates them anew; here, on the program's path, the bench counts every byte.)
    readonly ArrayBufferWriter<byte> requestBuffer = new();
    readonly ArrayBufferWriter<byte> responseBuffer = new();

    public int Requests { get; private set; }
    public long PromptTokens { get; private set; }
    public long CompletionTokens { get; private set; }

    /// <summary>--stream: when set, every request asks for the reply as server-sent events, and their text is written
    /// here as it arrives (see Streaming.cs).</summary>
    public TextWriter? StreamTextTo { get; init; }

    /// <summary>Whether the last reply came as a stream, so its text has been printed already.</summary>
    public bool LastReplyStreamed { get; private set; }

    public override async Task<JsonObject> PostAsync(JsonObject body, CancellationToken cancellationToken = default)
    {
        if (StreamTextTo is not null)
            api.AskForStream(body); // the same request, asking for the reply in pieces
        // Serialize once, straight to UTF-8: the same bytes go on the wire (on every retry), into the trace and into
        // a recording.
        ReadOnlyMemory<byte> bytes = Json.Utf8(body, requestBuffer);
        if (log.Traces)
            log.Trace($"POST {Url}{HeadersShown()}", body);

        using IDisposable? waiting = log.ShowWaiting();
        JsonObject completion = await SendAsync(bytes, waiting, cancellationToken);
        CountUsage(completion["usage"]);
        return completion;
    }

    /// <summary>
    /// Sends the request until it gets a completion or a failure that retrying cannot fix (see RetryPolicy). Each
    /// attempt has --timeout seconds to deliver the whole response, body included; a retry sends the very same bytes.
    /// </summary>
    async Task<JsonObject> SendAsync(ReadOnlyMemory<byte> requestBody, IDisposable? waiting, CancellationToken cancellationToken)
    {
        for (int retry = 0; ; retry++)
        {
            // One token for the attempt: cancelled when its time is up, or by Ctrl+C (the caller's token). The filters
            // below tell the two apart by asking the caller's token.
            using var attempt = new CancellationTokenSource(Retries.Timeout, Retries.Time);
            using CancellationTokenRegistration ctrlC =
                cancellationToken.UnsafeRegister(static source => ((CancellationTokenSource)source!).Cancel(), attempt);
            FailedAttempt failure;
            try
            {
                using HttpResponseMessage response = await http.SendAsync(NewRequest(requestBody), HttpCompletionOption.ResponseHeadersRead, attempt.Token);
                LastReplyStreamed = response.IsSuccessStatusCode && response.Content.Headers.ContentType?.MediaType == "text/event-stream";
                if (LastReplyStreamed)
                    return await ReadEventStreamAsync(response, requestBody, waiting, attempt.Token, cancellationToken);
                ReadOnlyMemory<byte> content = await ReadBodyAsync(response, attempt.Token);
                Requests++;
                int status = (int)response.StatusCode;
                recorder?.Add(api.Path, requestBody, status, content.Span, response.Headers);
                if (response.IsSuccessStatusCode)
                {
                    JsonObject completion = ReadCompletion(status, response.Content.Headers.ContentType?.MediaType, content.Span, api);
                    if (log.Traces)
                        log.Trace($"HTTP {status}", completion);
                    return completion;
                }
                failure = ApiFailure(response, content.Span);
            }
            catch (Exception e) when ((e is HttpRequestException or IOException) && !cancellationToken.IsCancellationRequested)
            {
                string reason = RetryPolicy.Reason(e);
                failure = new FailedAttempt(
                    $"a connection error ({reason})", $"could not reach {Url} ({reason}). Check the base URL and that the server is running.", Retriable: true);
            }
            catch (OperationCanceledException) when (attempt.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                string seconds = RetryPolicy.Seconds(Retries.Timeout);
                failure = new FailedAttempt(
                    $"no response within {seconds} s", $"no complete response from {Url} within {seconds} s (--timeout). Raise --timeout if the model needs longer.", Retriable: true);
            }

            if (!failure.Retriable || retry >= Retries.MaxRetries)
                throw new FlowException(failure.Error + RetryPolicy.GaveUpAfter(retry));
            (TimeSpan wait, string why) = Retries.NextWait(retry, failure.ServerWait);
            log.Info($"retry {retry + 1}/{Retries.MaxRetries} after {failure.What}: waiting {RetryPolicy.Seconds(wait)} s ({why})");
            await Retries.WaitAsync(wait, cancellationToken);
        }
    }

    /// <summary>
    /// A streamed reply becomes the same completion object a JSON reply is, so steps 2 to 4 read it unchanged. A
    /// stream that breaks before its first event is retried like any connection error; after it, the text is on the
    /// screen, so a cut or a timeout is an error line, not a retry that would print it twice. The events are recorded
    /// and traced even when the stream fails half way: that reply is the one worth keeping.
    /// </summary>
    async Task<JsonObject> ReadEventStreamAsync(
        HttpResponseMessage response, ReadOnlyMemory<byte> requestBytes, IDisposable? waiting, CancellationToken attempt,
        CancellationToken cancellationToken)
    {
        int status = (int)response.StatusCode;
        var events = new JsonArray();
        JsonObject completion;
        try
        {
            await using Stream stream = new CappedStream(await response.Content.ReadAsStreamAsync(attempt), MaxResponseBytes, TooLarge);
            TextWriter output = StreamTextTo ?? TextWriter.Null;
            completion = await api.NewStreamReader(output).ReadAsync(stream, events, waiting, attempt, secret);
        }
        catch (OperationCanceledException) when (events.Count > 0 && !cancellationToken.IsCancellationRequested)
        {
            throw new FlowException(
                $"the stream did not end within {RetryPolicy.Seconds(Retries.Timeout)} s (--timeout), after {ToolCalling.Plural(events.Count, "event")}. " +
                "The reply is incomplete, so none of it is used; raise --timeout if the model needs longer.");
        }
        finally
        {
            if (events.Count > 0)
            {
                Requests++;
                recorder?.Add(api.Path, requestBytes, status, events);
                log.Trace($"HTTP {status}: {ToolCalling.Plural(events.Count, "server-sent event")}",
                    events.Select(e => ServerSentEvents.Format(e, api.NamesEvents).TrimEnd('\n')));
            }
        }
        log.Trace("The completion assembled from the events", completion);
        return completion;
    }

    /// <summary>
    /// The whole response body, read into responseBuffer (valid until the next response is read), the key replaced by
    /// "[redacted]" wherever the server echoed it, before anything prints, traces or records the body. A body over
    /// MaxResponseBytes is not read further.
    /// </summary>
    async Task<ReadOnlyMemory<byte>> ReadBodyAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        if (response.Content.Headers.ContentLength > MaxResponseBytes)
            throw TooLarge();
        responseBuffer.ResetWrittenCount();
        await using Stream body = await response.Content.ReadAsStreamAsync(cancellationToken);
        int read;
        while ((read = await body.ReadAsync(responseBuffer.GetMemory(4096), cancellationToken)) > 0)
        {
            responseBuffer.Advance(read);
            if (responseBuffer.WrittenCount > MaxResponseBytes)
                throw TooLarge();
            cancellationToken.ThrowIfCancellationRequested(); // a body that never pauses never waits on the token
        }
        return Scrubbed(responseBuffer.WrittenMemory);
    }

    FlowException TooLarge()
    {
        long megabytes = MaxResponseBytes / (1024 * 1024);
        return new FlowException(
            $"the response from {Url} is over {megabytes} MB (--max-response-mb {megabytes}), so it was not read further. " +
            "Raise --max-response-mb if the API sends replies this large.");
    }

    /// <summary>The body with every copy of the key replaced by "[redacted]" (most bodies have none: then it is the same).</summary>
    ReadOnlyMemory<byte> Scrubbed(ReadOnlyMemory<byte> body)
    {
        if (secretBytes is null || body.Span.IndexOf(secretBytes) < 0)
            return body;
        var scrubbed = new ArrayBufferWriter<byte>(body.Length);
        ReadOnlySpan<byte> rest = body.Span;
        for (int at; (at = rest.IndexOf(secretBytes)) >= 0; rest = rest[(at + secretBytes.Length)..])
        {
            scrubbed.Write(rest[..at]);
            scrubbed.Write("[redacted]"u8);
        }
        scrubbed.Write(rest);
        return scrubbed.WrittenMemory;
    }

    HttpRequestMessage NewRequest(ReadOnlyMemory<byte> body)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, Url) { Content = new ReadOnlyMemoryContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        api.AddHeaders(request, apiKey);
        return request;
    }

    /// <summary>For the trace: the headers the API adds to every request, each on a line of its own, the key always as
    /// [redacted].</summary>
    string HeadersShown()
    {
        using var request = new HttpRequestMessage();
        api.AddHeaders(request, apiKey);
        return string.Concat(request.Headers.Select(header =>
        {
            string value = string.Join(", ", header.Value);
            return $"\n{header.Key}: {(apiKey is not null && value.EndsWith(apiKey, StringComparison.Ordinal) ? value[..^apiKey.Length] + "[redacted]" : value)}";
        }));
    }

    /// <summary>An error status: the line to show (with the API's own message) and whether a retry may help.</summary>
    FailedAttempt ApiFailure(HttpResponseMessage response, ReadOnlySpan<byte> content)
    {
        int status = (int)response.StatusCode;
        // Read error bodies as text, so that a proxy's HTML page can be shown too.
        string text = Encoding.UTF8.GetString(content);
        JsonNode? error = Json.TryParse(text);
        log.Trace($"HTTP {status}", error ?? JsonValue.Create(text));
        string what = $"HTTP {status} {response.ReasonPhrase}".TrimEnd();
        if (status is >= 300 and < 400)
            return new FailedAttempt(what,
                $"{what}: the server redirects to {response.Headers.Location?.ToString() ?? "an address it does not give"}. " +
                "Redirects are not followed, so that the key only ever goes to the base URL: if the API has moved, set the base URL to its new address.",
                Retriable: false);
        return new FailedAttempt(what, ApiError.Describe(status, response.ReasonPhrase, error, text), RetryPolicy.IsRetriable(status),
            Retries.ServerWait(response.Headers));
    }

    /// <summary>
    /// A 2xx body must be a JSON object (a chat.completion, a response, a message). A broken one is an error, not a
    /// retry: the server did answer (and the model's work is paid for), and the same request tends to get the same
    /// broken answer.
    /// </summary>
    static JsonObject ReadCompletion(int status, string? contentType, ReadOnlySpan<byte> body, Api api)
    {
        string What() => $"HTTP {status}, but the response body"; // built only for an error: most bodies are fine
        if (body.Trim(" \t\r\n"u8).IsEmpty)
            throw new FlowException($"{What()} is empty: there is no completion to read.");
        JsonNode? json;
        try
        {
            json = Json.Parse(body);
        }
        catch (JsonException e)
        {
            if (Json.IsCutOff(body))
                throw new FlowException($"{What()} is cut off: its {body.Length} bytes end in the middle of the JSON. Try again.");
            string type = contentType is null or "application/json" ? "" : $" ({contentType})";
            string start = Encoding.UTF8.GetString(body[..Math.Min(body.Length, 40)]).ReplaceLineEndings(" ") + (body.Length > 40 ? "…" : "");
            throw new FlowException(
                $"{What()}{type} is not JSON ({ToolCalling.FirstSentence(e.Message)}); it starts with \"{start}\". " +
                $"Check that the base URL points at {api.Describes}.");
        }
        if (json is not JsonObject completion)
            throw new FlowException($"{What()} is {Json.KindName(json)}, not a JSON object.");
        // "\ud800" alone parses, but could not be written back into the trace or the history. Only a \u escape can
        // spell one, so only a body with such an escape needs the trial write (most have none: it costs a copy).
        try
        {
            if (body.IndexOf("\\u"u8) >= 0)
                Json.Utf8(completion);
        }
        catch (InvalidOperationException)
        {
            throw new FlowException($"{What()} holds a string that is not valid Unicode (an unpaired \\uD800-\\uDFFF escape).");
        }
        return completion;
    }

    void CountUsage(JsonNode? usage)
    {
        // Chat Completions counts prompt_tokens and completion_tokens; the Responses and Messages APIs, input_tokens
        // and output_tokens.
        (string inputField, string outputField) = api.UsageFields;
        if (Json.At(usage, inputField) is not JsonValue prompt || !prompt.TryGetValue(out long input) ||
            Json.At(usage, outputField) is not JsonValue completion || !completion.TryGetValue(out long output))
            return;
        PromptTokens += input;
        CompletionTokens += output;
    }
}

// =====================================================================================================================
// Surviving the real API: retries, timeouts
// =====================================================================================================================

/// <summary>
/// When and how soon to send a failed request again, as the official OpenAI SDKs do (openai-python's _base_client.py;
/// openai-node uses the same numbers):
/// - retry 408 Request Timeout, 409 Conflict, 429 Too Many Requests, any 5xx, a timeout and a connection error;
///   never another 4xx (400, 401, 403, 404, 422...): the same request would fail the same way;
/// - at most 2 retries by default (--retries N);
/// - wait 0.5 s, then 1 s, 2 s... up to 8 s, each shortened by up to a quarter at random ("jitter"), so that clients
///   that failed together do not all come back at the same moment;
/// - but when the server says how long to wait (retry-after-ms, or Retry-After in seconds or as an HTTP date), wait
///   that long, if it is more than 0 and at most 60 s; a longer wait is not honoured (the SDKs fall back to backoff).
/// </summary>
sealed class RetryPolicy
{
    static readonly TimeSpan FirstBackoff = TimeSpan.FromSeconds(0.5);
    static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(8);
    public static readonly TimeSpan MaxServerWait = TimeSpan.FromSeconds(60);

    public int MaxRetries { get; init; } = 2;

    /// <summary>How long one attempt may take, from sending the request to the last byte of the response.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>The clock of the timeouts and of Retry-After dates. Tests pass one they move by hand.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>How to wait before a retry: Task.Delay on Time unless set. Tests pass one that only notes the wait.</summary>
    public Func<TimeSpan, CancellationToken, Task>? Delay { get; init; }

    /// <summary>The source of the jitter. Tests pass a seeded one.</summary>
    public Random Random { get; init; } = Random.Shared;

    public static bool IsRetriable(int status) => status is 408 or 409 or 429 or >= 500;

    /// <summary>How long the server asks the client to wait, and the header that said so; null when it does not say.</summary>
    public (TimeSpan Wait, string Header)? ServerWait(HttpResponseHeaders headers)
    {
        // retry-after-ms (OpenAI's own) is more precise than Retry-After's whole seconds, so it wins.
        if (Header(headers, "retry-after-ms") is string ms && Number(ms) is double milliseconds)
            return (TimeSpan.FromMilliseconds(milliseconds), "retry-after-ms");
        if (Header(headers, "Retry-After") is not string retryAfter)
            return null;
        if (Number(retryAfter) is double seconds)
            return (TimeSpan.FromSeconds(seconds), "Retry-After");
        if (DateTimeOffset.TryParseExact(retryAfter, "r", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out DateTimeOffset date))
            return (date - Time.GetUtcNow(), "Retry-After"); // an HTTP date: "Wed, 21 Oct 2015 07:28:00 GMT"
        return null;
    }

    /// <summary>The wait before retry number retry + 1 (retry counts from 0), and why it is that long.</summary>
    public (TimeSpan Wait, string Why) NextWait(int retry, (TimeSpan Wait, string Header)? server)
    {
        if (server is ({ } asked, string header) && asked > TimeSpan.Zero && asked <= MaxServerWait)
            return (asked, header);
        double doubled = FirstBackoff.TotalSeconds * Math.Pow(2, Math.Min(retry, 30));
        TimeSpan backoff = TimeSpan.FromSeconds(Math.Min(doubled, MaxBackoff.TotalSeconds) * (1 - 0.25 * Random.NextDouble()));
        return server is ({ } tooLong, string name) && tooLong > MaxServerWait
            ? (backoff, $"backoff; the server's {name} of {Seconds(tooLong)} s is over the {Seconds(MaxServerWait)} s cap")
            : (backoff, "backoff");
    }

    public Task WaitAsync(TimeSpan wait, CancellationToken cancellationToken) =>
        Delay?.Invoke(wait, cancellationToken) ?? Task.Delay(wait, Time, cancellationToken);

    public static string GaveUpAfter(int retries) => retries switch
    {
        0 => "",
        1 => " (gave up after 1 retry)",
        _ => $" (gave up after {retries} retries)",
    };

    public static string Seconds(TimeSpan time) => time.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture);

    /// <summary>What went wrong with a connection, in a few words: the innermost message says it best.</summary>
    public static string Reason(Exception e)
    {
        while (e.InnerException is not null && e.InnerException is not OperationCanceledException)
            e = e.InnerException;
        return e.Message.TrimEnd('.');
    }

    static string? Header(HttpResponseHeaders headers, string name) =>
        headers.TryGetValues(name, out IEnumerable<string>? values) ? values.FirstOrDefault()?.Trim() : null;

    /// <summary>A finite number of seconds or milliseconds that a TimeSpan can hold ("1", "1.5"), else null.</summary>
    static double? Number(string text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && Math.Abs(value) < 1e9 ? value : null;
}

/// <summary>An attempt without a usable answer: `What` for the retry line, `Error` for the error line if it is the last.</summary>
sealed record FailedAttempt(string What, string Error, bool Retriable, (TimeSpan Wait, string Header)? ServerWait = null);

/// <summary>--record: every request and response of a run, written as a cassette at the end.</summary>
sealed class Recorder(string baseUrl)
{
    readonly List<Interaction> interactions = [];

    public int Count => interactions.Count;

    public IReadOnlyList<Interaction> Interactions => interactions;

    // Of the response headers, only those that change what a client does next: how long to wait before a retry.
    static readonly string[] KeptHeaders = ["Retry-After", "retry-after-ms"];

    public void Add(string path, ReadOnlyMemory<byte> requestBody, int status, ReadOnlySpan<byte> responseBody, HttpResponseHeaders headers)
    {
        // Bodies only: request headers (and with them the API key) are never recorded.
        string text = Encoding.UTF8.GetString(responseBody);
        JsonNode? json = Json.TryParse(text);
        var kept = new Dictionary<string, string>();
        foreach (string name in KeptHeaders)
        {
            if (headers.TryGetValues(name, out IEnumerable<string>? values))
                kept[name] = string.Join(", ", values);
        }
        var interaction = new Interaction("POST", path, Json.Parse(requestBody.Span), status, json)
        {
            ResponseText = json is null && text.Length > 0 ? text : null, // e.g. a proxy's HTML page, kept as it came
            Headers = kept,
        };
        lock (interactions)
            interactions.Add(interaction);
    }

    /// <summary>A streamed response: the events it carried, instead of a body.</summary>
    public void Add(string path, ReadOnlyMemory<byte> requestBody, int status, JsonArray events)
    {
        var interaction = new Interaction("POST", path, Json.Parse(requestBody.Span), status, null)
        {
            ResponseEvents = events.DeepClone().AsArray(),
        };
        lock (interactions)
            interactions.Add(interaction);
    }

    public void Save(string path)
    {
        var cassette = new Cassette(
            $"Recorded by ToolCall --record from {baseUrl} on {DateTime.UtcNow:yyyy-MM-dd}. Request headers, and so the API key, are not recorded.",
            [.. interactions]);
        cassette.Save(path);
    }
}

/// <summary>
/// A response stream read up to a limit: past `limit` bytes, `tooLarge` is thrown instead of reading on. A stream
/// that sends without end (one endless line, or events without end) then costs at most the limit.
/// </summary>
sealed class CappedStream(Stream inner, long limit, Func<Exception> tooLarge) : Stream
{
    long read;

    public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        Count(await inner.ReadAsync(buffer, cancellationToken));

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    int Count(int bytes)
    {
        read += bytes;
        return read > limit ? throw tooLarge() : bytes;
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => read; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            inner.Dispose();
        base.Dispose(disposing);
    }
}
