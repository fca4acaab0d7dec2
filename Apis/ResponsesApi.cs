// ResponsesApi.cs: the same four steps on the OpenAI Responses API (--api responses).
//
// POST {base}/responses. The conversation is a list of `input` items, and the reply's `output` is a list of items
// too. What differs from Chat Completions, step by step:
//   Step 1  `tools` are flat: {"type":"function","name","description","parameters","strict"}, no "function" wrapper.
//           Send `strict` always: left out, the Responses API makes a schema strict when it can (Chat Completions never
//           does), and the model then sends null for every optional argument.
//   Step 2  A call is an output item {"type":"function_call","call_id","name","arguments"}; `arguments` is still a
//           JSON string. Decide on these items, not on `status` (a reply that calls tools is "completed" too).
//   Step 3  Append the output items as received, then one {"type":"function_call_output","call_id","output"} per call.
//           The call_id pairs them, not the item's own id ("fc_…"); leave a call unanswered and the next request fails.
//   Step 4  The text is in the `message` item, in its `output_text` parts. (The `output_text` field some SDKs offer
//           is theirs: the API does not send it.)
// Streamed, the reply is typed events (response.output_item.added, response.function_call_arguments.delta, …) that end
// with response.completed, not chunks that end with [DONE]; StreamedResponse turns them into the same response.

using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

sealed class ResponsesApi : Api
{
    public override string Name => "responses";

    public override string Path => "/responses";

    /// <summary>Runs the whole flow for one question and returns the model's final text.</summary>
    public override async Task<string> RunAsync(
        ChatClient client, string model, string question, IReadOnlyList<Tool> tools, FlowOptions options, CancellationToken cancellationToken)
    {
        System.Action<string>? log = options.Log;
        int failingRounds = 0; // rounds in a row in which every call failed

        // Step 1: send the question and the tools. As with Chat Completions, the request object is the conversation:
        // step 3 appends to its `input` and step 4 sends the same object again.
        var input = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question });
        var request = new JsonObject
        {
            ["model"] = model,
            ["input"] = input,
            ["tools"] = ToolDefinitions(tools),
        };
        if (ToolChoiceValue(options.ToolChoice) is JsonNode toolChoice)
            request["tool_choice"] = toolChoice;
        if (!options.ParallelToolCalls)
            request["parallel_tool_calls"] = false;
        if (options.MaxTokens is int maxTokens)
            request["max_output_tokens"] = maxTokens;
        foreach ((string field, JsonNode? value) in options.RequestFields ?? [])
            request[field] = value?.DeepClone(); // e.g. --no-store's store and include (WithReasoning)
        log?.Invoke($"Step 1: POST {client.Url}: 1 input item ({ToolCalling.Quoted(question)}), tools: {ToolCalling.ToolNames(tools)}{ToolCalling.ToolFieldsShown(request)}");
        JsonObject response = await client.PostAsync(request, cancellationToken);

        for (int round = 1; ; round++)
        {
            // Step 2: read `output`. Its function_call items are the calls; without any, the reply is the answer.
            JsonArray output = TakeOutput(response);
            JsonObject[] calls = [.. output.OfType<JsonObject>().Where(item => Json.String(item["type"]) == "function_call")];
            string status = Json.String(response["status"]) ?? "missing";
            int step = round == 1 ? 2 : 4; // the reply to step 1 is read in step 2; every later reply is step 4's
            if (calls.Length == 0)
            {
                log?.Invoke($"Step {step}: the model answers with text (status \"{status}\"{TokensShown(response)})");
                return OutputText(output, response, log);
            }
            log?.Invoke($"Step {step}: the model asks for {ToolCalling.Plural(calls.Length, "tool call")} (status \"{status}\"{TokensShown(response)})");
            if (status == "incomplete" && Json.String(Json.At(response, "incomplete_details", "reason")) == "max_output_tokens")
                throw ToolCalling.CutOff("status \"incomplete\", reason \"max_output_tokens\"", options.MaxTokens);
            if (round > options.MaxRounds)
                throw ToolCalling.RoundLimitReached(options.MaxRounds);
            if (calls.FirstOrDefault(call => Json.String(call["call_id"]) is not { Length: > 0 }) is not null)
                throw new FlowException("a function_call item in the reply has no call_id, so no output could be paired with it; the reply is malformed.");

            // Step 3: the output items go into `input` first, as received: the function calls, and whatever came with
            // them (a reasoning model's reasoning items, which it needs to see again beside its calls). Then one
            // function_call_output per call, in the calls' order, each with its call's call_id.
            JsonNode?[] received = [.. output];
            output.Clear(); // a JSON node has one parent: the items move from the response into the conversation
            foreach (JsonNode? item in received)
                input.Add(item);
            FunctionCall[] asked = [.. calls.Select(call => new FunctionCall(Json.String(call["name"]) ?? "", call["arguments"]))];
            (string Content, bool Failed)[] results = await (options.RunCalls ?? ToolCalling.RunCallsAsync)(asked, tools, cancellationToken);
            for (int i = 0; i < calls.Length; i++)
            {
                log?.Invoke($"Step 3: {ToolCalling.Shown(asked[i].Name)}({ToolCalling.Shown(Json.String(asked[i].Arguments))}) -> {ToolCalling.Shown(results[i].Content)}");
                JsonNode callOutput = new JsonObject { ["type"] = "function_call_output", ["call_id"] = calls[i]["call_id"]!.DeepClone(), ["output"] = results[i].Content };
                input.Add(callOutput);
            }
            failingRounds = results.All(result => result.Failed) ? failingRounds + 1 : 0;
            if (failingRounds == ToolCalling.MaxFailingRounds)
                throw ToolCalling.OnlyFailures(results);

            // Step 4: send the whole conversation again. The reply goes back to step 2: text ends the flow, more
            // function calls start another round.
            string released = "";
            if (round == options.MaxRounds)
            {
                // As in Chat Completions: the request after the last round allowed asks for an answer.
                request["tool_choice"] = "none";
                released = $"; tool_choice now \"none\": the last request (--max-rounds {options.MaxRounds}) asks for an answer";
            }
            else if (options.ForcesACall && round == 1)
            {
                // As in Chat Completions: a forced call is forced on every request that carries the choice.
                request["tool_choice"] = "auto";
                released = "; tool_choice now \"auto\"";
            }
            log?.Invoke($"Step 4: POST {client.Url}: {ToolCalling.Plural(input.Count, "input item")} ({InputShape(input)}){released}");
            response = await client.PostAsync(request, cancellationToken);
        }
    }

    /// <summary>
    /// The `tools` of step 1, flat: {"type":"function","name","description","parameters","strict"}. `strict` is sent
    /// false too: left out, the API would make the schema strict where it can (see the section's header).
    /// </summary>
    public static JsonArray ToolDefinitions(IReadOnlyList<Tool> tools)
    {
        var definitions = new JsonArray();
        foreach (Tool tool in tools)
        {
            JsonNode definition = new JsonObject
            {
                ["type"] = "function",
                ["name"] = tool.Name,
                ["description"] = tool.Description,
                ["parameters"] = tool.Parameters.DeepClone(),
                ["strict"] = tool.Strict,
            };
            definitions.Add(definition);
        }
        return definitions;
    }

    /// <summary>`tool_choice`: a mode as a string, as in Chat Completions; a function flat too, {"type":"function","name"}.</summary>
    static JsonNode? ToolChoiceValue(string? choice) => choice switch
    {
        null => null,
        "auto" or "none" or "required" => JsonValue.Create(choice),
        string name => new JsonObject { ["type"] = "function", ["name"] = name },
    };

    /// <summary>Step 2's read: `output`, detached from the response so that step 3 can move its items into `input`.</summary>
    static JsonArray TakeOutput(JsonObject response)
    {
        if (response["output"] is not JsonArray output)
            throw new FlowException("the response has no output array, so there is nothing to read. Try the request again.");
        response.Remove("output");
        return output;
    }

    /// <summary>The answer: the text of the `message` items' output_text parts, or their refusal if the model refused.</summary>
    static string OutputText(JsonArray output, JsonObject response, System.Action<string>? log)
    {
        JsonNode?[] parts = [.. output.Where(item => Json.String(Json.At(item, "type")) == "message").SelectMany(item => Json.At(item, "content") as JsonArray ?? [])];
        string Joined(string type, string field) =>
            string.Concat(parts.Where(part => Json.String(Json.At(part, "type")) == type).Select(part => Json.String(Json.At(part, field))));
        if (Joined("output_text", "text") is { Length: > 0 } text)
            return text;
        if (Joined("refusal", "refusal") is { Length: > 0 } refusal)
        {
            log?.Invoke("The model refused; its refusal is printed as the answer.");
            return refusal;
        }
        string why = Json.String(Json.At(response, "incomplete_details", "reason")) is string reason ? $" (incomplete: {reason})" : "";
        throw new FlowException($"the response's output has neither text nor function_call items{why}, so there is no answer to print.");
    }

    /// <summary>"; tokens: 20 in, 10 out" when the response reports its usage, else "".</summary>
    static string TokensShown(JsonObject response) =>
        Json.At(response, "usage", "input_tokens") is JsonValue input && input.TryGetValue(out long inputTokens) &&
        Json.At(response, "usage", "output_tokens") is JsonValue output && output.TryGetValue(out long outputTokens)
            ? $"; tokens: {inputTokens} in, {outputTokens} out"
            : "";

    // Around the loop: the stream, and the history as the diagram reads it.

    public override EventStreamReader NewStreamReader(TextWriter output) => new StreamedResponse(output);

    /// <summary>
    /// --no-store: "store": false, so the API keeps no item of the run, and "include": ["reasoning.encrypted_content"],
    /// so that a reasoning model's reasoning items come with their content encrypted: they go back in `input` as
    /// received, and the API decrypts them instead of looking up items it never kept.
    /// </summary>
    public override FlowOptions WithReasoning(FlowOptions options, bool noStore, int? thinkingBudget)
    {
        options = base.WithReasoning(options, noStore: false, thinkingBudget);
        return noStore
            ? WithFields(options, new JsonObject { ["store"] = false, ["include"] = new JsonArray("reasoning.encrypted_content") })
            : options;
    }

    // Its function names follow Chat Completions' pattern (Api's defaults); no limit on the number of tools was found
    // for it, in its API reference or in public reports, so none is checked.

    public override string HistoryField => "input";

    /// <summary>The input items by type ("user, function_call, function_call_output"); a string input is the user's.</summary>
    public override string HistoryShape(JsonArray history) => history.Count == 0 ? "user" : InputShape(history);

    /// <summary>A function_call item.</summary>
    public override IEnumerable<(string Id, string Call)> Calls(JsonNode? entry)
    {
        if (Json.String(Json.At(entry, "type")) == "function_call")
            yield return (Json.String(Json.At(entry, "call_id")) ?? "", $"{Json.String(Json.At(entry, "name"))}({Json.String(Json.At(entry, "arguments"))})");
    }

    /// <summary>A function_call_output item.</summary>
    public override IEnumerable<(string Id, string Text)> Results(JsonNode? entry)
    {
        if (Json.String(Json.At(entry, "type")) == "function_call_output")
            yield return (Json.String(Json.At(entry, "call_id")) ?? "", TextOf(Json.At(entry, "output")));
    }

    internal static string InputShape(JsonArray input) =>
        string.Join(", ", input.Select(item => Json.String(Json.At(item, "type")) is string type and not "message"
            ? type
            : Json.String(Json.At(item, "role")) ?? "?"));
}

/// <summary>
/// A streamed Responses API reply, put back together into the response a JSON reply is. Each event's data says what it
/// is in "type". Output items are told apart by `output_index`: response.output_item.added starts one (a function_call
/// with empty arguments, a message with no parts yet), response.function_call_arguments.delta and
/// response.output_text.delta bring pieces of its arguments or text (joined as text, parsed only in step 3), their
/// .done events and response.output_item.done bring it whole. response.completed ends the reply with the rest of the
/// response (status, usage); its `output` is taken from the items, since not every server repeats them there.
/// </summary>
sealed class StreamedResponse(TextWriter output) : EventStreamReader(output)
{
    readonly SortedDictionary<int, PartialItem> items = [];
    JsonObject? lastResponse; // the response as response.created or .in_progress last described it

    protected override string EndMarker => "response.completed";

    /// <summary>
    /// Every output item done (response.output_item.done) says the reply's content is whole even when
    /// response.completed never came; its status and usage are then the last ones the stream gave. openai-node's
    /// ResponseStream resolves any clean end with the response so far; this asks for whole items, since a half call must
    /// not run.
    /// </summary>
    protected override JsonObject? CompleteAtEnd() =>
        items.Count > 0 && items.Values.All(item => item.Done is not null) ? ToResponse(lastResponse ?? []) : null;

    protected override JsonObject? Add(string data, JsonObject? json, int position)
    {
        if (json is null)
            throw NotAnObject(position, data);
        // The events' objects stay as received (they are recorded): what is kept of them is copied.
        switch (Json.String(json["type"]))
        {
            case "response.output_item.added" when json["item"] is JsonObject item:
                ItemAt(json).Item = (JsonObject)item.DeepClone();
                break;
            case "response.function_call_arguments.delta":
                ItemAt(json).Arguments.Append(Json.String(json["delta"]));
                break;
            case "response.function_call_arguments.done" when Json.String(json["arguments"]) is string arguments:
                ItemAt(json).Arguments.Clear().Append(arguments); // whole: it replaces the pieces
                break;
            case "response.content_part.added" when json["part"] is JsonObject part:
                ItemAt(json).Parts[Index(json, "content_index") ?? 0] = (JsonObject)part.DeepClone();
                break;
            case "response.output_text.delta":
                Print(ItemAt(json).Text(Index(json, "content_index") ?? 0, "output_text"), json["delta"]);
                break;
            case "response.refusal.delta":
                Print(ItemAt(json).Text(Index(json, "content_index") ?? 0, "refusal"), json["delta"]);
                break;
            case "response.output_item.done" when json["item"] is JsonObject item:
                ItemAt(json).Done = (JsonObject)item.DeepClone(); // the item whole, as the server finished it
                break;
            case "response.created" or "response.in_progress" when json["response"] is JsonObject response:
                lastResponse = response;
                break;
            case "response.completed" or "response.incomplete":
                return ToResponse(json["response"] as JsonObject ?? throw new FlowException($"event {position} ({Json.String(json["type"])}) has no response object."));
            case "response.failed":
                throw ErrorEvent("the response", Json.At(json, "response", "error", "message") ?? json);
            case "error":
                throw ErrorEvent("the response", json["message"] ?? json);
        }
        return null; // response.created, .in_progress, the other .done events: nothing the reply needs
    }

    /// <summary>The item an event is about: by output_index; without one, by item_id; else the last one.</summary>
    PartialItem ItemAt(JsonObject json)
    {
        int index = Index(json, "output_index")
            ?? items.Where(pair => Json.String(pair.Value.Item["id"]) is string id && id == Json.String(json["item_id"])).Select(pair => (int?)pair.Key).FirstOrDefault()
            ?? (items.Count > 0 ? items.Keys.Last() : 0);
        if (!items.TryGetValue(index, out PartialItem? item))
            items[index] = item = new PartialItem();
        return item;
    }

    JsonObject ToResponse(JsonObject completed)
    {
        var response = (JsonObject)completed.DeepClone();
        if (items.Count > 0)
            response["output"] = new JsonArray([.. items.Values.Select(item => (JsonNode)item.ToJson())]);
        return response;
    }

    /// <summary>What has arrived so far of one output item.</summary>
    sealed class PartialItem
    {
        public JsonObject Item { get; set; } = [];
        public JsonObject? Done { get; set; }
        public StringBuilder Arguments { get; } = new();
        public SortedDictionary<int, JsonObject> Parts { get; } = [];
        readonly SortedDictionary<int, (string Field, StringBuilder Text)> texts = [];

        /// <summary>The text of content part `index`, whose type is "output_text" (its field "text") or "refusal".</summary>
        public StringBuilder Text(int index, string type)
        {
            if (!texts.TryGetValue(index, out (string Field, StringBuilder Text) text))
                texts[index] = text = (type == "refusal" ? "refusal" : "text", new StringBuilder());
            return text.Text;
        }

        public JsonObject ToJson()
        {
            if (Done is not null)
                return Done;
            if (Json.String(Item["type"]) == "function_call")
                Item["arguments"] = Arguments.ToString();
            foreach ((int index, (string field, StringBuilder text)) in texts)
            {
                if (!Parts.ContainsKey(index))
                    Parts[index] = field == "text"
                        ? new JsonObject { ["type"] = "output_text", ["annotations"] = new JsonArray(), ["logprobs"] = new JsonArray() }
                        : new JsonObject { ["type"] = "refusal" };
                Parts[index][field] = text.ToString();
            }
            if (Parts.Count > 0)
                Item["content"] = new JsonArray([.. Parts.Values.Select(part => (JsonNode)part)]);
            return Item;
        }
    }
}
