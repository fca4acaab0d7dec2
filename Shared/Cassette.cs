// Cassette.cs: the cassette format: recorded requests and responses, as the recorder writes them and the replay server plays them.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>One recorded request and its response. `Path` is relative to the base URL ("/chat/completions").</summary>
sealed record Interaction(string Method, string Path, JsonNode? RequestBody, int Status, JsonNode? ResponseBody)
{
    /// <summary>Response headers besides the server's own, e.g. Retry-After; a Content-Type here replaces application/json.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();

    /// <summary>A body that is not JSON (a proxy's HTML page), sent as it is instead of ResponseBody.</summary>
    public string? ResponseText { get; init; }

    /// <summary>How the server misbehaves while answering (fault injection); Fault.None answers at once and whole.</summary>
    public Fault Fault { get; init; } = Fault.None;

    /// <summary>A streamed response, instead of a body: each event's data, a JSON object as itself and anything else
    /// (such as "[DONE]") as a string.</summary>
    public JsonArray? ResponseEvents { get; init; }

    /// <summary>How long the server waits before each of the ResponseEvents.</summary>
    public TimeSpan EventDelay { get; init; }
}

/// <summary>
/// Fault injection: how the replay server misbehaves while sending one response, so that a client's handling of slow
/// and broken servers can be tested. Cassette fields: delay_ms, drip_bytes, drip_interval_ms, close_after_bytes,
/// truncate_after_bytes (see README.md).
/// </summary>
sealed record Fault(int DelayMs = 0, int DripBytes = 0, int DripIntervalMs = 0, int? CloseAfterBytes = null, int? TruncateAfterBytes = null)
{
    public static readonly Fault None = new();

    static readonly string[] Fields = ["delay_ms", "drip_bytes", "drip_interval_ms", "close_after_bytes", "truncate_after_bytes"];

    /// <summary>The cassette's "fault" object; the error names what is wrong with it, or null when it is fine.</summary>
    public static (Fault? Fault, string? Error) FromJson(JsonObject json)
    {
        if (json.Select(p => p.Key).FirstOrDefault(key => !Fields.Contains(key)) is string unknown)
            return (null, $"unknown fault field \"{unknown}\" (known: {string.Join(", ", Fields)})");
        int? Field(string name) => json[name] is JsonValue value && value.TryGetValue(out int n) && n >= 0 ? n : null;
        if (Fields.FirstOrDefault(name => json[name] is not null && Field(name) is null) is string bad)
            return (null, $"fault field \"{bad}\" must be a whole number from 0");
        return (new Fault(Field("delay_ms") ?? 0, Field("drip_bytes") ?? 0, Field("drip_interval_ms") ?? 0, Field("close_after_bytes"), Field("truncate_after_bytes")), null);
    }

    public JsonObject ToJson()
    {
        var json = new JsonObject();
        if (DelayMs > 0) json["delay_ms"] = DelayMs;
        if (DripBytes > 0) json["drip_bytes"] = DripBytes;
        if (DripIntervalMs > 0) json["drip_interval_ms"] = DripIntervalMs;
        if (CloseAfterBytes is int close) json["close_after_bytes"] = close;
        if (TruncateAfterBytes is int truncate) json["truncate_after_bytes"] = truncate;
        return json;
    }
}

/// <summary>
/// A cassette file: readable JSON, bodies as JSON objects (not escaped strings).
/// { "source": "where it came from", "match": "order" or "content",
///   "interactions": [ { "request": {"method", "path", "body"},
///                       "response": {"status", "body" or "text", "headers"?, "fault"?} } ] }
/// A streamed response has, instead of "body", "events": [ {chunk}, …, "[DONE]" ], and may have "event_delay_ms".
/// </summary>
sealed record Cassette(string Source, IReadOnlyList<Interaction> Interactions)
{
    /// <summary>The most of a cassette file that Load reads: 64 MB, far past any recorded flow, and small enough that
    /// every string in it can be written back out (System.Text.Json writes none over 166,666,666 characters).</summary>
    public const int MaxBytes = 64 * 1024 * 1024;

    /// <summary>
    /// "match": "content": each request gets the first interaction whose request it is, whatever came before, so
    /// that many clients can replay at once. Default ("order"): each request must be the next interaction's.
    /// </summary>
    public bool MatchByContent { get; init; }

    public static Cassette Load(string path)
    {
        if (Directory.Exists(path))
            throw new UsageException($"{path} is a folder, not a cassette. Pass a cassette file, e.g. cassettes/weather.json.");
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(ReadAtMost(path, MaxBytes).Span, documentOptions: new JsonDocumentOptions
            {
                CommentHandling = JsonCommentHandling.Skip,
                AllowDuplicateProperties = false,
            });
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new UsageException($"cassette not found: {path}. Check the path, or record one with --record.");
        }
        catch (JsonException e)
        {
            throw new UsageException($"cassette {path} is not valid JSON (line {e.LineNumber + 1}): fix it or record it again with --record.");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"cannot read cassette {path}: {e.Message}");
        }

        string Bad(string what) => $"cassette {path}: {what}. See the cassette format in README.md.";
        if (root is not JsonObject cassette || cassette["interactions"] is not JsonArray { Count: > 0 } items)
            throw new UsageException(Bad("it needs a non-empty \"interactions\" array"));
        string match = cassette["match"] is null ? "order" : Json.String(cassette["match"]) ?? "";
        if (match is not ("order" or "content"))
            throw new UsageException(Bad($"\"match\" must be \"order\" or \"content\", not {Json.Compact(cassette["match"])}"));
        var interactions = new List<Interaction>();
        for (int i = 0; i < items.Count; i++)
        {
            string at = $"interaction {i + 1}";
            if (items[i] is not JsonObject item || item["request"] is not JsonObject request || item["response"] is not JsonObject response)
                throw new UsageException(Bad($"{at} needs a \"request\" and a \"response\" object"));
            // method and path have defaults (below); a body does not: left out, it would match a request sent without one.
            if (!request.ContainsKey("body"))
                throw new UsageException(Bad($"{at}'s request needs a \"body\" (null for a request sent without one)"));
            if (response["status"] is not JsonValue status || !status.TryGetValue(out int code) || code is < 100 or > 999)
                throw new UsageException(Bad($"{at}'s response needs a \"status\" from 100 to 999"));
            if (!response.ContainsKey("body") && !response.ContainsKey("text") && !response.ContainsKey("events"))
                throw new UsageException(Bad($"{at}'s response needs a \"body\", \"text\" or \"events\""));
            if (ReadHeaders(response["headers"]) is not { } headers)
                throw new UsageException(Bad($"{at}'s response \"headers\" must be an object of strings without line breaks"));
            if (response["text"] is JsonNode text && Json.String(text) is null)
                throw new UsageException(Bad($"{at}'s response \"text\" must be a string (use \"body\" for JSON)"));
            (Fault? fault, string? faultError) = response["fault"] switch
            {
                null => (Fault.None, null),
                JsonObject faultJson => Fault.FromJson(faultJson),
                _ => (null, "it must be an object"),
            };
            if (fault is null)
                throw new UsageException(Bad($"{at}'s response \"fault\": {faultError}"));
            if (StreamProblem(response, fault) is string streamProblem)
                throw new UsageException(Bad($"{at}'s response {streamProblem}"));
            interactions.Add(new Interaction(
                Json.String(request["method"]) ?? "POST",
                Json.String(request["path"]) ?? "/chat/completions",
                request["body"]?.DeepClone(),
                code,
                response["body"]?.DeepClone())
            {
                Headers = headers,
                ResponseText = Json.String(response["text"]),
                Fault = fault,
                ResponseEvents = response["events"]?.DeepClone().AsArray(),
                EventDelay = TimeSpan.FromMilliseconds(response["event_delay_ms"] is JsonValue delay && delay.TryGetValue(out int ms) ? ms : 0),
            });
        }
        return new Cassette(Json.String(cassette["source"]) ?? "", interactions) { MatchByContent = match == "content" };
    }

    /// <summary>
    /// The file's bytes, refused past `limit`. Counted as they are read, not taken from the length the file system
    /// reports: /dev/zero reports 0 and never ends, and reading it whole ran the process out of memory.
    /// </summary>
    static ReadOnlyMemory<byte> ReadAtMost(string path, int limit)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
        var bytes = new MemoryStream();
        byte[] buffer = new byte[81920];
        for (int read; (read = file.Read(buffer)) > 0;)
        {
            if (bytes.Length + read > limit)
                throw new UsageException($"cassette {path} is over {limit / (1024 * 1024)} MB, the most a cassette may be: check that it is the right file.");
            bytes.Write(buffer, 0, read);
        }
        return bytes.GetBuffer().AsMemory(0, (int)bytes.Length);
    }

    /// <summary>What is wrong with a streamed response's "events" and "event_delay_ms", or null when they are fine.</summary>
    static string? StreamProblem(JsonObject response, Fault fault)
    {
        if (response["event_delay_ms"] is JsonNode delay && !(delay is JsonValue value && value.TryGetValue(out int ms) && ms >= 0))
            return "\"event_delay_ms\" must be a whole number from 0";
        if (response["events"] is null)
            return response["event_delay_ms"] is null ? null : "has \"event_delay_ms\" but no \"events\"";
        if (response["events"] is not JsonArray events || events.Any(e => e is not JsonObject && Json.String(e) is null))
            return "\"events\" must be an array, each event a JSON object or a string such as \"[DONE]\"";
        if (response["body"] is not null || response["text"] is not null)
            return "has \"events\" and a \"body\" or \"text\": a response is one or the other";
        if (fault.DripBytes > 0 || fault.TruncateAfterBytes is not null)
            return "fault: drip_bytes and truncate_after_bytes apply to a body; for \"events\", use delay_ms, close_after_bytes or event_delay_ms";
        return null;
    }

    /// <summary>A response's "headers": name to value, each a string on one line; null when that is not what it holds.</summary>
    static Dictionary<string, string>? ReadHeaders(JsonNode? node)
    {
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        if (node is null)
            return headers;
        if (node is not JsonObject json)
            return null;
        foreach ((string name, JsonNode? value) in json)
        {
            // A line break would let a cassette write its own headers or body: HTTP response splitting.
            if (Json.String(value) is not string text || name.Length == 0 || $"{name}{text}".AsSpan().IndexOfAny('\r', '\n') >= 0)
                return null;
            headers[name] = text;
        }
        return headers;
    }

    /// <summary>The first user message of the first recorded request, in its `historyField` (the API's: "messages",
    /// or the Responses API's "input"): the question the cassette answers.</summary>
    public string? FirstQuestion(string historyField) =>
        (Json.At(Interactions[0].RequestBody, historyField) as JsonArray)?
            .Select(m => Json.String(Json.At(m, "role")) == "user" ? Json.String(Json.At(m, "content")) : null)
            .FirstOrDefault(text => text is not null);

    public JsonObject ToJson()
    {
        var items = new JsonArray();
        foreach (Interaction interaction in Interactions)
        {
            JsonNode item = new JsonObject
            {
                ["request"] = new JsonObject
                {
                    ["method"] = interaction.Method,
                    ["path"] = interaction.Path,
                    ["body"] = interaction.RequestBody?.DeepClone(),
                },
                ["response"] = ResponseJson(interaction),
            };
            items.Add(item);
        }
        var json = new JsonObject { ["source"] = Source };
        if (MatchByContent)
            json["match"] = "content";
        json["interactions"] = items;
        return json;
    }

    /// <summary>The "response" of an interaction; headers, text, events and fault only when it has them.</summary>
    static JsonObject ResponseJson(Interaction interaction)
    {
        var response = new JsonObject { ["status"] = interaction.Status };
        if (interaction.Headers.Count > 0)
            response["headers"] = new JsonObject(interaction.Headers.Select(h => KeyValuePair.Create(h.Key, (JsonNode?)h.Value)));
        if (interaction.ResponseEvents is JsonArray events)
        {
            if (interaction.EventDelay > TimeSpan.Zero)
                response["event_delay_ms"] = (int)interaction.EventDelay.TotalMilliseconds;
            response["events"] = events.DeepClone();
        }
        else if (interaction.ResponseText is string text)
            response["text"] = text;
        else
            response["body"] = interaction.ResponseBody?.DeepClone();
        if (interaction.Fault != Fault.None)
            response["fault"] = interaction.Fault.ToJson();
        return response;
    }

    /// <summary>Writes atomically: a temporary file in the same folder, then a rename, so a crash leaves no half file.</summary>
    public void Save(string path)
    {
        string full = Path.GetFullPath(path);
        string temporary = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
        try
        {
            using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write))
            {
                file.Write(Json.Utf8(ToJson(), indented: true).Span);
                file.WriteByte((byte)'\n');
                file.Flush(flushToDisk: true);
            }
            File.Move(temporary, full, overwrite: true);
        }
        finally
        {
            File.Delete(temporary); // nothing to delete after a successful move
        }
    }
}
