// ChatCompletionsRules.cs: the Chat Completions API as the replay server serves it, and the rules it enforces on a request.

using System.Collections.Generic;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>POST /chat/completions: OpenAI's error shape, unnamed stream events, the history in `messages`, the
/// request rules then the history rules, and how JsonMatch reads its requests.</summary>
sealed class ServedChatCompletionsApi : ServedApi
{
    public override string Path => "/chat/completions";

    public override string HistoryField => "messages";

    public override bool NamesEvents => false;

    public override JsonObject Error(string message, string? code = null) => ApiError.Create(message, code: code);

    public override JsonObject? FirstViolation(JsonObject request, IReadOnlyDictionary<string, string> headers) =>
        RequestRules.FirstViolation(request) ?? HistoryRules.FirstViolation(request);

    /// <summary>Two OpenAI-compatible providers' rules on reasoning state (see ChatReasoningRules).</summary>
    public override Refusal? ReasoningViolation(JsonObject request, IReadOnlyList<Interaction> played) =>
        ChatReasoningRules.FirstViolation(request, Own(played));

    // The documented defaults of the request's top-level fields: CreateChatCompletionRequest in the OpenAPI spec.
    static readonly Dictionary<string, JsonNode> Defaults = new()
    {
        ["temperature"] = 1,
        ["top_p"] = 1,
        ["n"] = 1,
        ["frequency_penalty"] = 0,
        ["presence_penalty"] = 0,
        ["stream"] = false,
        ["logprobs"] = false,
        ["store"] = false,
        ["parallel_tool_calls"] = true,
        ["service_tier"] = "auto",
    };

    public override IReadOnlyDictionary<string, JsonNode> TopLevelDefaults => Defaults;

    /// <summary>With tools, the model decides: "auto"; without, "none".</summary>
    public override bool ToolChoiceIsTheDefault(JsonNode value, bool withTools) => Json.String(value) == (withTools ? "auto" : "none");

    /// <summary>A function's "strict": false, and an empty `annotations` on a message: the OpenAI .NET SDK echoes an
    /// assistant message without its `annotations`, openai-node with them.</summary>
    public override bool ReadsAsAbsent(string path, string key, JsonNode value, JsonObject owner)
    {
        if (key == "strict" && IsItem(path, "$.tools", then: ".function"))
            return value.GetValueKind() == JsonValueKind.False; // Chat Completions' FunctionObject.strict defaults to false
        // `annotations` (citations) belong to the response's message; a request message has no such field
        // (ChatCompletionRequestAssistantMessage), so an echoed empty one is the same as none. Real citations differ.
        return key == "annotations" && IsItem(path, "$.messages") && value is JsonArray { Count: 0 };
    }

    /// <summary>A message's `content`: a string, or parts, of which a "text" one stands for the string.</summary>
    public override string? TextPartType(string path, string key, JsonObject owner) =>
        key == "content" && IsItem(path, "$.messages") ? "text" : null;

    /// <summary>A tool message's `content`.</summary>
    public override bool IsToolResult(string key, JsonObject owner) => key == "content" && Json.String(owner["role"]) == "tool";
}

/// <summary>
/// The rules the real API enforces on `tools`, `tool_choice`, `parallel_tool_calls` and `stream_options`, checked on every request
/// before the history rules and the cassette. The wording, `param` and `code` are the API's, from error responses
/// quoted in public issues, except where a comment says the wording is our own.
/// </summary>
static class RequestRules
{
    const int MaxNameLength = 64; // the OpenAPI spec's limit for a function name, and the one the quoted errors name

    public static JsonObject? FirstViolation(JsonObject request)
    {
        if (StreamOptionsViolation(request) is JsonObject streamViolation)
            return streamViolation;
        // An empty `tools` array counts as none: public reports show the API accepting `tools: []` and then rejecting
        // the parallel_tool_calls sent beside it.
        if (request["tools"] is not JsonArray { Count: > 0 } tools)
        {
            foreach (string field in new[] { "tool_choice", "parallel_tool_calls" })
            {
                if (request[field] is not null)
                    return ApiError.Create($"Invalid value for '{field}': '{field}' is only allowed when 'tools' are specified.", param: field);
            }
            return null;
        }
        return TooManyTools(tools) ?? FirstNameViolation(tools) ?? ToolChoiceViolation(request["tool_choice"], tools) ?? FirstStrictViolation(tools);
    }

    /// <summary>At most 128 tools: the API's wording, `param` and `code`, quoted in public issues (e.g.
    /// zed-industries/zed#32946, langchain4j and Tools4AI reports).</summary>
    static JsonObject? TooManyTools(JsonArray tools) => tools.Count <= MaxTools ? null : ApiError.Create(
        $"Invalid 'tools': array too long. Expected an array with maximum length {MaxTools}, but got an array with length {tools.Count} instead.",
        param: "tools", code: "array_above_max_length");

    const int MaxTools = 128;

    /// <summary>`stream_options` only beside "stream": true.</summary>
    static JsonObject? StreamOptionsViolation(JsonObject request) =>
        request["stream_options"] is not null && request["stream"]?.GetValueKind() != JsonValueKind.True
            ? ApiError.Create("The 'stream_options' parameter is only allowed when 'stream' is enabled.", param: "stream_options")
            : null;

    /// <summary>Each function name matches ^[a-zA-Z0-9_-]{1,64}$ and no two are the same. `flat`: the Responses API's
    /// tools, whose name sits beside "type" (a tool in the Chat Completions form then has no name), and which may be
    /// other tools than functions.</summary>
    internal static JsonObject? FirstNameViolation(JsonArray tools, bool flat = false)
    {
        var firstIndex = new Dictionary<string, int>();
        for (int i = 0; i < tools.Count; i++)
        {
            if (flat && Json.String(Json.At(tools[i], "type")) != "function")
                continue;
            string param = flat ? $"tools[{i}].name" : $"tools[{i}].function.name";
            if (Json.String(Function(tools[i], flat)?["name"]) is not string name)
                // The API's form for a missing field (as for messages above); no quote for this field was found.
                return ApiError.Create($"Missing required parameter: '{param}'.", param: param, code: "missing_required_parameter");
            if (name.Length > MaxNameLength)
                return ApiError.Create(
                    $"Invalid '{param}': string too long. Expected a string with maximum length {MaxNameLength}, but got a string with length {name.Length} instead.",
                    param: param, code: "string_above_max_length");
            if (name.Length == 0 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
                return ApiError.Create(
                    $"Invalid '{param}': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    param: param, code: "invalid_value");
            if (!firstIndex.TryAdd(name, i))
                // Our own wording: no public quote of the API's answer to a repeated function name was found.
                return ApiError.Create(
                    $"Invalid 'tools': the function name '{name}' is used by tools[{firstIndex[name]}] and tools[{i}]. Function names must be unique.",
                    param: param);
        }
        return null;
    }

    /// <summary>`tool_choice` is a mode ("none", "auto", "required") or names a function that is in `tools`: as
    /// {"type":"function","function":{"name"}}, or `flat` (the Responses API), {"type":"function","name"}.</summary>
    internal static JsonObject? ToolChoiceViolation(JsonNode? choice, JsonArray tools, bool flat = false)
    {
        if (Json.String(choice) is string mode)
            return mode is "none" or "auto" or "required"
                ? null
                : ApiError.Create($"Invalid value: '{mode}'. Supported values are: 'none', 'auto', and 'required'.", param: "tool_choice", code: "invalid_value");
        if (choice is not JsonObject || Json.String(choice["type"]) != "function")
            return null;
        string? name = Json.String(Function(choice, flat)?["name"]);
        if (flat && name is null)
            // The API's form for a missing field; no quote for this field was found. It catches the Chat Completions form.
            return ApiError.Create("Missing required parameter: 'tool_choice.name'.", param: "tool_choice.name", code: "missing_required_parameter");
        if (tools.Any(tool => Json.String(Function(tool, flat)?["name"]) == name))
            return null;
        // The wording OpenAI answers with in its Responses API, quoted in public issues; no quote for Chat Completions
        // was found, so this assumes the same sentence.
        return ApiError.Create("Tool choice 'function' not found in 'tools' parameter.", param: "tool_choice");
    }

    /// <summary>A function with "strict": true needs its parameters in strict form (see StrictSchema).</summary>
    internal static JsonObject? FirstStrictViolation(JsonArray tools, bool flat = false)
    {
        for (int i = 0; i < tools.Count; i++)
        {
            if (Function(tools[i], flat) is not JsonObject function || function["strict"]?.GetValueKind() != JsonValueKind.True)
                continue;
            if (StrictSchema.FirstViolation(function["parameters"] as JsonObject ?? []) is string violation)
                return ApiError.Create(
                    $"Invalid schema for function '{Json.String(function["name"])}': {violation}",
                    param: flat ? $"tools[{i}].parameters" : $"tools[{i}].function.parameters", code: "invalid_function_parameters");
        }
        return null;
    }

    /// <summary>The object that holds a function's name and parameters: `tool.function`, or with `flat` the tool itself.</summary>
    static JsonObject? Function(JsonNode? tool, bool flat) => (flat ? tool : Json.At(tool, "function")) as JsonObject;
}

/// <summary>
/// The rules the real API enforces on a history, checked on every request before the cassette is consulted. The
/// messages are the API's own wording (including its "preceeding"), taken from error responses quoted in public
/// issues; where the `param` of an error could not be confirmed from such a quote, the comment says so.
/// </summary>
static class HistoryRules
{
    public static JsonObject? FirstViolation(JsonObject request)
    {
        if (request["messages"] is not JsonArray { Count: > 0 } messages)
            return ApiError.Create("Missing required parameter: 'messages'.", param: "messages", code: "missing_required_parameter");

        // The tool calls that the tool messages right here may answer, and those not yet answered.
        JsonObject? pendingAssistant = null;
        int pendingIndex = -1;
        var unanswered = new List<string>();
        var callIds = new HashSet<string>();

        for (int i = 0; i < messages.Count; i++)
        {
            JsonObject? message = messages[i] as JsonObject;
            string? role = Json.String(message?["role"]);
            if (role == "tool")
            {
                if (pendingAssistant is null)
                    return ApiError.Create(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                        param: $"messages.[{i}].role");
                string? id = Json.String(message!["tool_call_id"]);
                if (id is null)
                    return ApiError.Create($"Missing required parameter: 'messages.[{i}].tool_call_id'.",
                        param: $"messages.[{i}].tool_call_id", code: "missing_required_parameter");
                if (!callIds.Contains(id))
                    // param not confirmed from a public quote: the message names the id, we point at its field.
                    return ApiError.Create(
                        $"Invalid parameter: 'tool_call_id' of '{id}' not found in 'tool_calls' of previous message.",
                        param: $"messages.[{i}].tool_call_id");
                unanswered.Remove(id);
                continue;
            }

            // Any other message closes the run of tool messages: every call before it must have been answered.
            if (pendingAssistant is not null && unanswered.Count > 0)
                return Unanswered(pendingIndex, unanswered);
            pendingAssistant = null;

            if (role == "assistant" && message!["tool_calls"] is JsonArray calls)
            {
                if (calls.Count == 0)
                    return ApiError.Create(
                        $"Invalid 'messages[{i}].tool_calls': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                        param: $"messages[{i}].tool_calls", code: "empty_array");
                callIds.Clear();
                unanswered.Clear();
                for (int c = 0; c < calls.Count; c++)
                {
                    JsonNode? arguments = Json.At(calls[c], "function", "arguments");
                    if (arguments is not null && arguments.GetValueKind() != JsonValueKind.String)
                        return ApiError.Create(
                            $"Invalid type for 'messages[{i}].tool_calls[{c}].function.arguments': expected a string, but got {Json.KindName(arguments)} instead.",
                            param: $"messages[{i}].tool_calls[{c}].function.arguments", code: "invalid_type");
                    string? id = Json.String(Json.At(calls[c], "id"));
                    if (id is not null && callIds.Add(id))
                        unanswered.Add(id);
                }
                pendingAssistant = message;
                pendingIndex = i;
            }
        }
        return pendingAssistant is not null && unanswered.Count > 0 ? Unanswered(pendingIndex, unanswered) : null;
    }

    // param: the index of the assistant message is our choice; public quotes show the form "messages.[N].role".
    static JsonObject Unanswered(int assistantIndex, List<string> ids) => ApiError.Create(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. " +
        $"The following tool_call_ids did not have response messages: {string.Join(", ", ids)}",
        param: $"messages.[{assistantIndex}].role");
}

/// <summary>
/// What two OpenAI-compatible providers require of a thinking model's state on Chat Completions, each answered with
/// its own 400. OpenAI's own API has no such field: these rules apply where the request or the server's own replies say
/// the model thinks.
///
/// DeepSeek's thinking mode (api-docs.deepseek.com/guides/thinking_mode): an assistant message with tool_calls goes
/// back with its reasoning_content, in every later request ("For turns that do perform tool calls, the
/// reasoning_content must be fully passed back to the API in all subsequent requests"); a message without tool calls
/// need not. Thinking mode is "thinking": {"type": "enabled"} (the docs' switch; "disabled" turns it off) or the model
/// deepseek-reasoner; on DeepSeek's newest models it is on by default, which the server cannot tell from a model name
/// it does not know, so it also takes a call it played in a reply with reasoning_content as made in thinking mode.
/// The wording, type and code are those of public reports (endolith/open-interpreter#215 quotes the whole body, param null;
/// deepseek-ai/deepseek-harness#739); that a message with an empty reasoning_content passes is our reading of #739.
///
/// Gemini's thought signatures (ai.google.dev/gemini-api/docs/thought-signatures): on Gemini 3 models a call's
/// extra_content.google.thought_signature goes back on that call; only the current turn (after the last user
/// message) is checked, and of parallel calls only the first carries one. Required: a call the server played with a
/// signature, and the first call of each reply in the current turn when the model's name starts with gemini-3 (not
/// gemini-3-pro-image, which the docs exempt). The wording and the list around the error are those quoted from the
/// OpenAI-compatible endpoint (discuss.ai.google.dev "OpenAI API compatibility broken due to thought_signature",
/// BigPizzaV3/CodexPlusPlus#332); "position" is not documented: we take it as the index of the assistant message in
/// `messages`, which fits the quotes but is not confirmed.
/// </summary>
static class ChatReasoningRules
{
    public static Refusal? FirstViolation(JsonObject request, IReadOnlyList<Interaction> played)
    {
        if (request["messages"] is not JsonArray messages)
            return null;
        var reasoned = new HashSet<string>(); // call ids the server played in a reply with reasoning_content
        var signed = new HashSet<string>();   // call ids the server played with a thought signature
        foreach (Interaction interaction in played)
            Learn(interaction, reasoned, signed);

        string model = (Json.String(request["model"]) ?? "").Replace("models/", "");
        bool? thinkingSwitch = Json.String(Json.At(request, "thinking", "type")) switch { "enabled" => true, "disabled" => false, _ => null };
        bool gemini3 = model.StartsWith("gemini-3", System.StringComparison.Ordinal) && !model.Contains("image", System.StringComparison.Ordinal);
        int lastUser = messages.Select((message, i) => (message, i)).LastOrDefault(m => Json.String(Json.At(m.message, "role")) == "user", (null, -1)).i;

        for (int i = 0; i < messages.Count; i++)
        {
            if (Json.String(Json.At(messages[i], "role")) != "assistant" || Json.At(messages[i], "tool_calls") is not JsonArray { Count: > 0 } calls)
                continue;
            string[] ids = [.. calls.Select(call => Json.String(Json.At(call, "id")) ?? "")];
            bool thinking = thinkingSwitch ?? (model == "deepseek-reasoner" || ids.Any(reasoned.Contains));
            if (thinking && Json.String(Json.At(messages[i], "reasoning_content")) is null)
                return new Refusal(400, ApiError.Create(
                    "The `reasoning_content` in the thinking mode must be passed back to the API.", code: "invalid_request_error"));
            for (int c = 0; c < calls.Count && i > lastUser; c++)
            {
                bool required = signed.Contains(ids[c]) || (c == 0 && gemini3);
                if (required && Signature(calls[c]) is null)
                    return new Refusal(400, new JsonArray(new JsonObject
                    {
                        ["error"] = new JsonObject
                        {
                            ["code"] = 400,
                            ["message"] = "Function call is missing a thought_signature in functionCall parts. This is required for tools to work " +
                                "correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call " +
                                $"`default_api:{Json.String(Json.At(calls[c], "function", "name"))}` , position {i}. Please refer to " +
                                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                            ["status"] = "INVALID_ARGUMENT",
                        },
                    }));
            }
        }
        return null;
    }

    static string? Signature(JsonNode? call) => Json.String(Json.At(call, "extra_content", "google", "thought_signature"));

    /// <summary>The calls of one played reply: whether it came with reasoning_content (a JSON reply's message, or any
    /// delta of a streamed one), and which calls carried a thought signature.</summary>
    static void Learn(Interaction interaction, HashSet<string> reasoned, HashSet<string> signed)
    {
        bool reasoning = false;
        var ids = new List<string>();
        var byIndex = new Dictionary<int, string>();
        JsonNode?[] messages = interaction.ResponseEvents is JsonArray events
            ? [.. events.SelectMany(chunk => Json.At(chunk, "choices") as JsonArray ?? []).Select(choice => Json.At(choice, "delta"))]
            : [.. (Json.At(interaction.ResponseBody, "choices") as JsonArray ?? []).Select(choice => Json.At(choice, "message"))];
        foreach (JsonNode? message in messages)
        {
            reasoning |= Json.String(Json.At(message, "reasoning_content")) is not null;
            foreach (JsonNode? call in Json.At(message, "tool_calls") as JsonArray ?? [])
            {
                // A streamed call's id comes in its first fragment; the later ones name it by index (Gemini's by id).
                int? index = Json.At(call, "index") is JsonValue value && value.TryGetValue(out int n) ? n : null;
                string? id = Json.String(Json.At(call, "id")) is { Length: > 0 } given ? given : index is int known ? byIndex.GetValueOrDefault(known) : null;
                if (id is null)
                    continue;
                if (index is int at)
                    byIndex[at] = id;
                ids.Add(id);
                if (Signature(call) is not null)
                    signed.Add(id);
            }
        }
        if (reasoning)
            reasoned.UnionWith(ids);
    }
}
