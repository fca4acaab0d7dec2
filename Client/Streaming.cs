// Streaming.cs: how a streamed reply (--stream) becomes the same reply object a JSON reply is.
//
// With "stream": true the reply comes as server-sent events, each `data:` holding one chat.completion.chunk. Text
// arrives in pieces (delta.content); each tool call arrives in fragments (delta.tool_calls[]): its id, type and name
// in the first, then pieces of its `arguments` text, told apart from other calls' pieces by `index`. With
// stream_options.include_usage the last chunk carries only the usage, and `data: [DONE]` ends the stream. A thinking
// model's reasoning comes in pieces too (delta.reasoning_content), kept for the history and not shown.
// StreamedReply puts the pieces back together into the completion a JSON reply would have been, so the four steps
// read it unchanged.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>
/// What the three APIs' stream readers share: reading the events up to the one that ends a reply, showing the text as
/// it arrives, and keeping every event (for --record and --trace). A stream that ends, is cut or carries an error
/// before that event throws: a reply cut short may lack a tool call or half of its arguments, so none of it goes into
/// the history. What the events mean differs by API, and is each reader's Add.
/// </summary>
abstract class EventStreamReader(TextWriter output)
{
    bool printed;

    /// <summary>The event that ends a reply, as the error line of a stream without it names it.</summary>
    protected abstract string EndMarker { get; }

    /// <summary>One event: its data as text and, when it is one, as a JSON object. Returns the whole reply once the
    /// event that ends it has come, else null.</summary>
    protected abstract JsonObject? Add(string data, JsonObject? json, int position);

    /// <summary>The reply, when the stream ended cleanly without the event that ends it but after one that says the
    /// reply is whole (each API's own signal, PROTOCOL.md "Streaming"); null when nothing says so.</summary>
    protected abstract JsonObject? CompleteAtEnd();

    /// <summary>
    /// Reads the events up to the one that ends the reply, writing its text to the output as it arrives and keeping
    /// every event in `events` (for --record and --trace), and returns the reply. `waiting` (the "waiting for the
    /// model" line) is cleared when the first event comes. `secret` (the API key), wherever an event holds it, is
    /// replaced by "[redacted]" before anything reads the event: a server that echoes the key leaks nothing.
    /// </summary>
    public async Task<JsonObject> ReadAsync(
        Stream stream, JsonArray events, IDisposable? waiting, CancellationToken cancellationToken, string? secret = null)
    {
        try
        {
            await foreach (string received in ServerSentEvents.ReadDataAsync(stream, cancellationToken))
            {
                string data = secret is null ? received : received.Replace(secret, "[redacted]", StringComparison.Ordinal);
                if (events.Count == 0)
                    waiting?.Dispose(); // the reply has begun: clear the "waiting" line, once, before any text shows
                JsonObject? json = UsableObject(data);
                events.Add(json ?? (JsonNode)JsonValue.Create(data)); // as sent: an object as JSON, anything else ([DONE]) as text
                if (Add(data, json, events.Count) is JsonObject reply)
                    return reply;
            }
        }
        catch (IOException e) when (events.Count > 0) // before the first event it is a connection error, and retried
        {
            throw Incomplete(events.Count, "was cut off", $" ({e.Message})");
        }
        catch (InvalidDataException e)
        {
            throw new FlowException(
                $"{e.Message} (after {ToolCalling.Plural(events.Count, "event")}), so the stream was not read further; " +
                "none of the reply is used.");
        }
        finally
        {
            EndText();
        }
        // The body ended cleanly (not cut: that is an IOException above) before the event that ends a reply. The
        // SDKs read such a stream as finished; a reply that says it is whole is used, and any other is an error.
        return CompleteAtEnd() ?? throw Incomplete(events.Count, "ended");
    }

    /// <summary>The event's data as a JSON object, else null. An object holding an unpaired surrogate escape ("\ud800")
    /// counts as none: it parses, but could not be written back into a trace, a recording or the history.</summary>
    static JsonObject? UsableObject(string data)
    {
        if (Json.TryParse(data) is not JsonObject json)
            return null;
        try
        {
            Json.Utf8(json);
            return json;
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    FlowException Incomplete(int events, string how, string cause = "") => new(
        $"the stream {how} after {ToolCalling.Plural(events, "event")}, before {EndMarker}{cause}. " +
        "The reply may be incomplete, so none of it is used; try again.");

    protected static FlowException NotAnObject(int position, string data) =>
        new($"event {position} of the stream is not a valid JSON object: {(data.Length > 120 ? data[..120] + "…" : data)}");

    /// <summary>An error event: the server's message, whatever shape it came in.</summary>
    protected static FlowException ErrorEvent(string instead, JsonNode? message) =>
        new($"the stream carried an error instead of {instead}: {ToolCalling.Shown(Json.String(message) ?? Json.Compact(message))}");

    /// <summary>A piece of text: kept, and shown at once (flushed), so a reader sees the words appear.</summary>
    protected void Print(StringBuilder text, JsonNode? piece)
    {
        if (Json.String(piece) is not { Length: > 0 } words)
            return;
        text.Append(words);
        output.Write(words);
        output.Flush();
        printed = true;
    }

    /// <summary>Ends the printed text with a line break, also when the stream failed, so an error gets a line of its own.</summary>
    void EndText()
    {
        if (printed)
            output.WriteLine();
        output.Flush();
    }

    protected static int? Index(JsonObject item, string name = "index") =>
        item[name] is JsonValue value && value.TryGetValue(out int index) ? index : null;
}

/// <summary>A streamed reply, put back together into the completion (with choices[0].message) a JSON reply would be.</summary>
sealed class StreamedReply(TextWriter output) : EventStreamReader(output)
{
    readonly StringBuilder content = new(), refusal = new();
    readonly Dictionary<string, StringBuilder> reasoning = []; // by field: reasoning_content (DeepSeek), reasoning
    readonly List<PartialCall> calls = [];
    readonly Dictionary<int, PartialCall> callsByIndex = [];
    PartialCall? lastCall;
    JsonObject? firstChunk;
    JsonObject? usage;
    string role = "assistant";
    string? finishReason;
    bool hasChoice;

    protected override string EndMarker => "data: [DONE]";

    /// <summary>A finish_reason says the model has finished this choice: whatever the stream sends after it (the usage
    /// chunk, `data: [DONE]`) adds nothing the steps need. openai-python, openai-node and openai-dotnet all end a stream
    /// at a clean end of the body without an error.</summary>
    protected override JsonObject? CompleteAtEnd() => finishReason is null ? null : ToCompletion();

    protected override JsonObject? Add(string data, JsonObject? chunk, int position)
    {
        if (data == "[DONE]")
            return ToCompletion();
        if (chunk is null)
            throw NotAnObject(position, data);
        if (chunk["error"] is JsonNode error)
            throw ErrorEvent("the next chunk", Json.At(error, "message") ?? error);
        AddChunk(chunk);
        return null;
    }

    /// <summary>One chat.completion.chunk.</summary>
    void AddChunk(JsonObject chunk)
    {
        firstChunk ??= chunk;
        if (chunk["usage"] is JsonObject chunkUsage)
            usage = chunkUsage; // with include_usage: null in every chunk but the last, which has empty choices
        foreach (JsonNode? node in chunk["choices"] as JsonArray ?? [])
        {
            // This client asks for one choice (n defaults to 1); should a server send more, only the first is read.
            if (node is not JsonObject choice || (Index(choice) ?? 0) != 0)
                continue;
            hasChoice = true;
            finishReason = Json.String(choice["finish_reason"]) ?? finishReason;
            if (choice["delta"] is not JsonObject delta)
                continue;
            role = Json.String(delta["role"]) ?? role;
            Print(content, delta["content"]);
            Print(refusal, delta["refusal"]); // a refusal is printed as the answer too
            foreach (string field in ReasoningFields)
            {
                // A thinking model's reasoning, in pieces beside the answer's: joined into the message's field of the
                // same name, not printed. It goes back with the tool calls (DeepSeek's thinking mode answers 400 when
                // reasoning_content is missing), so a field that came at all is kept, even empty.
                if (Json.String(delta[field]) is string piece)
                    (reasoning.TryGetValue(field, out StringBuilder? text) ? text : reasoning[field] = new StringBuilder()).Append(piece);
            }
            foreach (JsonNode? fragment in delta["tool_calls"] as JsonArray ?? [])
            {
                if (fragment is JsonObject callFragment)
                    AddFragment(callFragment);
            }
        }
    }

    /// <summary>
    /// One fragment of a tool call. The call it belongs to: the one with its `index`. Without an index (Gemini sends
    /// none): the one with its `id`, or a new call for an id not seen before. With neither: the call the previous
    /// fragment belonged to. id, type and name come whole, in the first fragment that has them; a missing id is
    /// generated in step 3 (CompleteForHistory), as for a JSON reply.
    /// </summary>
    void AddFragment(JsonObject fragment)
    {
        string? id = NonEmpty(fragment["id"]);
        int? index = Index(fragment);
        PartialCall? call = index is int i ? callsByIndex.GetValueOrDefault(i)
            : id is not null ? calls.Find(c => c.Id == id)
            : lastCall;
        if (call is null)
        {
            call = new PartialCall();
            calls.Add(call);
            if (index is int newIndex)
                callsByIndex[newIndex] = call;
        }
        lastCall = call;

        JsonObject? function = fragment["function"] as JsonObject;
        call.Id ??= id;
        call.Type ??= NonEmpty(fragment["type"]);
        call.Name ??= NonEmpty(function?["name"]);
        if (Json.String(function?["arguments"]) is string piece)
            call.AddArguments(piece);
        foreach ((string key, JsonNode? value) in fragment)
        {
            // Whatever else a provider puts on a call goes back with it, e.g. Gemini's extra_content (its thought
            // signature, which it wants to see again in the next request).
            if (key is not ("index" or "id" or "type" or "function"))
                call.Extra[key] = value?.DeepClone();
        }
    }

    JsonObject ToCompletion()
    {
        var choices = new JsonArray();
        if (hasChoice)
        {
            // The shape of a JSON reply's message, so that step 3 appends the same thing either way.
            var message = new JsonObject { ["role"] = role, ["content"] = content.Length > 0 ? content.ToString() : null };
            foreach (string field in ReasoningFields.Where(reasoning.ContainsKey))
                message[field] = reasoning[field].ToString();
            if (calls.Count > 0)
                message["tool_calls"] = new JsonArray([.. calls.Select(call => (JsonNode)call.ToJson())]);
            message["refusal"] = refusal.Length > 0 ? refusal.ToString() : null;
            JsonNode choice = new JsonObject { ["index"] = 0, ["message"] = message, ["logprobs"] = null, ["finish_reason"] = finishReason };
            choices.Add(choice);
        }
        return new JsonObject
        {
            ["id"] = firstChunk?["id"]?.DeepClone(),
            ["object"] = "chat.completion",
            ["created"] = firstChunk?["created"]?.DeepClone(),
            ["model"] = firstChunk?["model"]?.DeepClone(),
            ["choices"] = choices,
            ["usage"] = usage?.DeepClone(),
        };
    }

    /// <summary>The delta fields that bring a reasoning model's reasoning as text: DeepSeek's reasoning_content (also
    /// vLLM's and Qwen's), and the reasoning of servers that name it so (OpenRouter, Ollama).</summary>
    static readonly string[] ReasoningFields = ["reasoning_content", "reasoning"];

    static string? NonEmpty(JsonNode? node) => Json.String(node) is { Length: > 0 } text ? text : null;

    /// <summary>What has arrived so far of one tool call.</summary>
    sealed class PartialCall
    {
        readonly StringBuilder arguments = new();

        public string? Id { get; set; }
        public string? Type { get; set; }
        public string? Name { get; set; }
        public JsonObject Extra { get; } = [];

        /// <summary>
        /// The pieces split the arguments' text anywhere (inside a key, a \u escape, a number), so they are joined as
        /// text and parsed only in step 3. Some servers (DeepSeek, some gateways and proxies) send instead the whole
        /// text so far in every fragment: a piece that begins with everything assembled so far replaces it. And once
        /// the arguments are a complete JSON value, appending could only break them: a piece that is a complete JSON
        /// value itself is the whole arguments sent again, however it is spaced, and replaces them too.
        /// </summary>
        public void AddArguments(string piece)
        {
            bool cumulative = arguments.Length > 0 && piece.Length >= arguments.Length && StartsWithSoFar(piece);
            bool wholeAgain = piece.TrimStart().StartsWith('{') && Json.TryParse(arguments.ToString()) is not null && Json.TryParse(piece) is not null;
            if (cumulative || wholeAgain)
                arguments.Clear();
            arguments.Append(piece);
        }

        bool StartsWithSoFar(string piece)
        {
            for (int i = 0; i < arguments.Length; i++)
            {
                if (piece[i] != arguments[i])
                    return false;
            }
            return true;
        }

        public JsonObject ToJson()
        {
            // null id and type stay as placeholders, in their usual place; step 3 fills them in.
            var call = new JsonObject
            {
                ["id"] = Id,
                ["type"] = Type,
                ["function"] = new JsonObject { ["name"] = Name, ["arguments"] = arguments.ToString() },
            };
            foreach ((string key, JsonNode? value) in Extra)
                call[key] = value?.DeepClone();
            return call;
        }
    }
}
