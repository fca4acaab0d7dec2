// ResponsesRules.cs: the Responses API as the replay server serves it, and the rules it enforces on a request.

using System.Collections.Generic;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>POST /responses: OpenAI's error shape, named stream events, the history in `input`, ResponsesRules, and
/// how JsonMatch reads its requests.</summary>
sealed class ServedResponsesApi : ServedApi
{
    public override string Path => "/responses";

    public override string HistoryField => "input";

    public override bool NamesEvents => true; // each event after an `event:` line with its "type"

    public override JsonObject Error(string message, string? code = null) => ApiError.Create(message, code: code);

    public override JsonObject? FirstViolation(JsonObject request, IReadOnlyDictionary<string, string> headers) =>
        ResponsesRules.FirstViolation(request);

    /// <summary>Reasoning items go back with their calls, and an item store: false never kept cannot be looked up
    /// (see ResponsesReasoningRules).</summary>
    public override Refusal? ReasoningViolation(JsonObject request, IReadOnlyList<Interaction> played) =>
        ResponsesReasoningRules.FirstViolation(request, Own(played));

    // The documented defaults of the request's top-level fields: CreateResponse in the OpenAPI spec (where `store`
    // defaults to true, unlike Chat Completions).
    static readonly Dictionary<string, JsonNode> Defaults = new()
    {
        ["temperature"] = 1,
        ["top_p"] = 1,
        ["stream"] = false,
        ["store"] = true,
        ["background"] = false,
        ["truncation"] = "disabled",
        ["parallel_tool_calls"] = true,
        ["service_tier"] = "auto",
    };

    public override IReadOnlyDictionary<string, JsonNode> TopLevelDefaults => Defaults;

    /// <summary>With tools, the model decides: "auto"; without, "none".</summary>
    public override bool ToolChoiceIsTheDefault(JsonNode value, bool withTools) => Json.String(value) == (withTools ? "auto" : "none");

    /// <summary>An input message's "type": "message", which the OpenAI .NET SDK sends on every input message. Not a
    /// function's "strict": left out, it is not false here.</summary>
    public override bool ReadsAsAbsent(string path, string key, JsonNode value, JsonObject owner) =>
        // An input message's type can only be "message" (EasyInputMessage: "Always `message`"), so saying it changes
        // nothing.
        key == "type" && IsItem(path, "$.input") && owner["role"] is not null && Json.String(value) == "message";

    /// <summary>An input message's `content`, whose text part is "input_text" ("output_text" in an assistant one).</summary>
    public override string? TextPartType(string path, string key, JsonObject owner) =>
        key == "content" && IsItem(path, "$.input") ? (Json.String(owner["role"]) == "assistant" ? "output_text" : "input_text") : null;

    /// <summary>A function_call_output's `output`.</summary>
    public override bool IsToolResult(string key, JsonObject owner) =>
        key == "output" && Json.String(owner["type"]) == "function_call_output";
}

/// <summary>
/// The rules the Responses API enforces, checked on every POST /responses: on `tools` and `tool_choice` as for Chat
/// Completions but in the flat form (see RequestRules), then on the conversation in `input`: every
/// function_call_output answers a function_call before it, with its call_id, and every function_call is answered.
/// Both history messages are the API's words, quoted in public issues; "No tool call found …" came with param "input",
/// and the other is assumed to carry the same.
/// </summary>
static class ResponsesRules
{
    public static JsonObject? FirstViolation(JsonObject request)
    {
        if (request["tools"] is JsonArray { Count: > 0 } tools &&
            (RequestRules.FirstNameViolation(tools, flat: true) ?? RequestRules.ToolChoiceViolation(request["tool_choice"], tools, flat: true) ??
             RequestRules.FirstStrictViolation(tools, flat: true)) is JsonObject toolViolation)
            return toolViolation;
        return HistoryViolation(request["input"]);
    }

    static JsonObject? HistoryViolation(JsonNode? input)
    {
        if (input is not JsonArray items)
            return null; // a string, or no input at all (previous_response_id): no history to check
        var calls = new List<string>(); // the call_ids of the function_call items so far, in order
        var answered = new HashSet<string>();
        for (int i = 0; i < items.Count; i++)
        {
            string? type = Json.String(Json.At(items[i], "type"));
            if (type is not ("function_call" or "function_call_output"))
                continue;
            if (Json.String(Json.At(items[i], "call_id")) is not string callId)
                // The API's form for a missing field, as in Chat Completions; no quote for this field was found.
                return ApiError.Create($"Missing required parameter: 'input[{i}].call_id'.", param: $"input[{i}].call_id", code: "missing_required_parameter");
            if (type == "function_call")
            {
                JsonNode? arguments = Json.At(items[i], "arguments");
                if (arguments is not null && arguments.GetValueKind() != JsonValueKind.String)
                    // Chat Completions' wording for the same mistake; no quote for the Responses API was found.
                    return ApiError.Create(
                        $"Invalid type for 'input[{i}].arguments': expected a string, but got {Json.KindName(arguments)} instead.",
                        param: $"input[{i}].arguments", code: "invalid_type");
                calls.Add(callId);
            }
            else if (calls.Contains(callId))
            {
                answered.Add(callId);
            }
            else
            {
                return ApiError.Create($"No tool call found for function call output with call_id {callId}.", param: "input");
            }
        }
        return calls.FirstOrDefault(id => !answered.Contains(id)) is string unanswered
            ? ApiError.Create($"No tool output found for function call {unanswered}.", param: "input")
            : null;
    }
}

/// <summary>
/// The Responses API's rules on a reasoning model's state, which rest on what the API handed out: the server knows it
/// from the replies it has played. A function_call item the API made after a reasoning item goes back with that
/// reasoning item before it, or 400 (its wording, param "input" and code null are quoted in continuedev/continue#10018
/// and cline/cline#12242; whether the API still checks the pairing of items it never stored, with store: false, is not
/// confirmed: the server checks it either way). An item made in reply to a request with store: false was never kept, so
/// one sent back by id alone (a reasoning item without its encrypted_content, or an item_reference) is not found: 404
/// (the wording is quoted in vercel/ai#7543, the status in can1357/oh-my-pi#41 and
/// jrkropp/open-webui-developer-toolkit#714; type, param "input" and code null are assumed as for the 400 above).
/// </summary>
static class ResponsesReasoningRules
{
    public static Refusal? FirstViolation(JsonObject request, IReadOnlyList<Interaction> played)
    {
        if (request["input"] is not JsonArray input)
            return null;
        var reasoningOf = new Dictionary<string, string>(); // function_call item id -> the reasoning item id before it
        var notKept = new HashSet<string>();                // ids of items made in reply to store: false
        foreach (Interaction interaction in played)
        {
            JsonNode?[] output = OutputItems(interaction);
            string? reasoning = null;
            foreach (JsonNode? item in output)
            {
                string? id = Json.String(Json.At(item, "id"));
                switch (Json.String(Json.At(item, "type")))
                {
                    case "reasoning":
                        reasoning = id;
                        break;
                    case "function_call" when id is not null && reasoning is not null:
                        reasoningOf[id] = reasoning;
                        break;
                }
                if (id is not null && Json.At(interaction.RequestBody, "store")?.GetValueKind() == System.Text.Json.JsonValueKind.False)
                    notKept.Add(id);
            }
        }

        var sent = new HashSet<string>();
        foreach (JsonNode? item in input)
        {
            string? id = Json.String(Json.At(item, "id"));
            string? type = Json.String(Json.At(item, "type"));
            bool byIdAlone = type == "item_reference" || (type == "reasoning" && Json.String(Json.At(item, "encrypted_content")) is null);
            if (id is not null && byIdAlone && notKept.Contains(id))
                return new Refusal(404, ApiError.Create(
                    $"Item with id '{id}' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, " +
                    "or remove this item from your input.", param: "input"));
            if (type == "function_call" && id is not null && reasoningOf.TryGetValue(id, out string? required) && !sent.Contains(required))
                return new Refusal(400, ApiError.Create(
                    $"Item '{id}' of type 'function_call' was provided without its required 'reasoning' item: '{required}'.", param: "input"));
            if (id is not null)
                sent.Add(id);
        }
        return null;
    }

    /// <summary>The output items of a played reply, in order: a JSON reply's `output`; a streamed one's items as each
    /// response.output_item.done brought it, by output_index, or else the output of its response.completed.</summary>
    static JsonNode?[] OutputItems(Interaction interaction)
    {
        if (interaction.ResponseEvents is not JsonArray events)
            return [.. Json.At(interaction.ResponseBody, "output") as JsonArray ?? []];
        var done = new SortedDictionary<int, JsonNode?>();
        foreach (JsonNode? e in events)
        {
            if (Json.String(Json.At(e, "type")) == "response.output_item.done" && Json.At(e, "output_index") is JsonValue index && index.TryGetValue(out int at))
                done[at] = Json.At(e, "item");
        }
        return done.Count > 0
            ? [.. done.Values]
            : [.. events.Select(e => Json.At(e, "response", "output")).OfType<JsonArray>().LastOrDefault() ?? []];
    }
}
