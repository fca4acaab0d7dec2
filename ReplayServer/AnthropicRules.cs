// AnthropicRules.cs: the Anthropic Messages API as the replay server serves it, and the rules it enforces on a request.

using System;
using System.Buffers;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>POST /messages, Anthropic's Messages API: its own error shape, named stream events, the history in
/// `messages`, AnthropicRules (which read the headers too), and how JsonMatch reads its requests.</summary>
sealed class ServedMessagesApi : ServedApi
{
    public override string Path => "/messages";

    public override string HistoryField => "messages";

    public override bool NamesEvents => true; // each event after an `event:` line with its "type"

    /// <summary>The Messages API's shape has no `code`.</summary>
    public override JsonObject Error(string message, string? code = null) => AnthropicError.Create(message);

    public override JsonObject? FirstViolation(JsonObject request, IReadOnlyDictionary<string, string> headers) =>
        AnthropicRules.FirstViolation(request, headers);

    /// <summary>Extended thinking's rules (see ThinkingRules); they rest on the request alone.</summary>
    public override Refusal? ReasoningViolation(JsonObject request, IReadOnlyList<Interaction> played) =>
        ThinkingRules.FirstViolation(request) is JsonObject error ? new Refusal(400, error) : null;

    // The documented defaults of the request's top-level fields: Anthropic's API reference ("temperature … Defaults to
    // 1.0"; a reply is streamed only when asked).
    static readonly Dictionary<string, JsonNode> Defaults = new()
    {
        ["temperature"] = 1,
        ["stream"] = false,
    };

    public override IReadOnlyDictionary<string, JsonNode> TopLevelDefaults => Defaults;

    /// <summary>With tools, the model decides: {"type":"auto"}. Without tools there is no default to match.</summary>
    public override bool ToolChoiceIsTheDefault(JsonNode value, bool withTools) =>
        withTools && value is JsonObject { Count: 1 } choice && Json.String(choice["type"]) == "auto";

    /// <summary>A message's `content` and a tool_result block's: a string, or blocks, of which a "text" one stands
    /// for the string.</summary>
    public override string? TextPartType(string path, string key, JsonObject owner) =>
        key == "content" && (IsItem(path, "$.messages") || Json.String(owner["type"]) == "tool_result") ? "text" : null;

    /// <summary>A tool_result block's `content`.</summary>
    public override bool IsToolResult(string key, JsonObject owner) =>
        key == "content" && Json.String(owner["type"]) == "tool_result";
}

/// <summary>The Messages API's error shape: {"type":"error","error":{"type":"invalid_request_error","message"}}.</summary>
static class AnthropicError
{
    public static JsonObject Create(string message, string type = "invalid_request_error") =>
        new() { ["type"] = "error", ["error"] = new JsonObject { ["type"] = type, ["message"] = message } };
}

/// <summary>
/// The rules the Messages API enforces, checked on every POST /messages and answered in its own error shape: the
/// anthropic-version header and max_tokens, the tools, then the history. Each tool_use must be answered by a
/// tool_result in the very next message, the results before anything else in it, and a tool_result must answer a
/// tool_use of the message just before. The wording is the API's, quoted in public issues, except where a comment says
/// it is ours; the `messages.N` of an unanswered tool_use names the assistant message, as we read the quotes.
/// </summary>
static class AnthropicRules
{
    public static JsonObject? FirstViolation(JsonObject request, IReadOnlyDictionary<string, string> headers)
    {
        if (!headers.ContainsKey("anthropic-version"))
            return AnthropicError.Create("anthropic-version: header is required");
        if (request["max_tokens"] is null)
            return AnthropicError.Create("max_tokens: Field required");
        if (request["messages"] is not JsonArray messages)
            return AnthropicError.Create("messages: Field required"); // the same form; no quote for this field was found
        return ToolsViolation(request["tools"] as JsonArray ?? [], request["tool_choice"]) ?? HistoryViolation(messages);
    }

    static JsonObject? ToolsViolation(JsonArray tools, JsonNode? choice)
    {
        var names = new HashSet<string>();
        for (int i = 0; i < tools.Count; i++)
        {
            // Anthropic's own tools ({"type":"web_search_20250305", …}) have a type; yours have none (or "custom").
            string? type = Json.String(Json.At(tools[i], "type"));
            if (type == "function")
                // Our own wording: the API's answer to a tool in the OpenAI form was not found.
                return AnthropicError.Create(
                    $"tools.{i}: a tool in the OpenAI form ({{\"type\":\"function\",\"function\":{{…}}}}) is not a Messages API tool; " +
                    "send {\"name\",\"description\",\"input_schema\"}.");
            if (type is not (null or "custom"))
                continue;
            string? name = Json.String(Json.At(tools[i], "name"));
            if (name is null || name.Length is 0 or > 128 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
                return AnthropicError.Create(name is null
                    ? $"tools.{i}.custom.name: Field required"
                    : $"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'");
            if (Json.At(tools[i], "input_schema") is null)
                // A tool in the OpenAI form (`parameters`) lands here. The form of the quoted errors; this one was not found.
                return AnthropicError.Create($"tools.{i}.custom.input_schema: Field required");
            if (!names.Add(name))
                return AnthropicError.Create("tools: Tool names must be unique.");
        }
        if (choice is not null and not JsonObject)
            // Pydantic's wording, which the API's other errors use; no quote for this field was found. It catches an
            // OpenAI-style "tool_choice": "auto".
            return AnthropicError.Create("tool_choice: Input should be a valid dictionary or object to extract fields from");
        if (Json.String(Json.At(choice, "type")) == "tool" && !names.Contains(Json.String(Json.At(choice, "name")) ?? ""))
            // Our own wording: no public quote of the API's answer was found.
            return AnthropicError.Create($"tool_choice.name: '{Json.String(Json.At(choice, "name"))}' is not the name of a tool in 'tools'.");
        return null;
    }

    static JsonObject? HistoryViolation(JsonArray messages)
    {
        for (int i = 0; i < messages.Count; i++)
        {
            JsonArray blocks = Blocks(messages[i]);
            string[] askedBefore = i > 0 && Role(messages[i - 1]) == "assistant" ? ToolUseIds(Blocks(messages[i - 1])) : [];
            for (int b = 0; b < blocks.Count; b++)
            {
                string? type = Json.String(Json.At(blocks[b], "type"));
                if (type == "tool_use" && Json.At(blocks[b], "input") is not JsonObject)
                    return AnthropicError.Create($"messages.{i}.content.{b}.tool_use.input: Input should be a valid dictionary");
                string? answers = Json.String(Json.At(blocks[b], "tool_use_id"));
                if (type == "tool_result" && (Role(messages[i]) != "user" || !askedBefore.Contains(answers)))
                    return AnthropicError.Create(
                        $"messages.{i}.content.{b}: unexpected `tool_use_id` found in `tool_result` blocks: {answers}. " +
                        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.");
            }
            if (Role(messages[i]) != "assistant" || ToolUseIds(blocks) is not { Length: > 0 } asked)
                continue;
            JsonArray next = i + 1 < messages.Count && Role(messages[i + 1]) == "user" ? Blocks(messages[i + 1]) : [];
            string?[] results = [.. next.Where(block => Json.String(Json.At(block, "type")) == "tool_result").Select(block => Json.String(Json.At(block, "tool_use_id")))];
            if (asked.Where(id => !results.Contains(id)).ToArray() is { Length: > 0 } unanswered)
                return AnthropicError.Create(
                    $"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {string.Join(", ", unanswered)}. " +
                    "Each `tool_use` block must have a corresponding `tool_result` block in the next message.");
            if (next.TakeWhile(block => Json.String(Json.At(block, "type")) == "tool_result").Count() < asked.Length)
                // Quoted from errors of early 2025; the API may word this case as the one above by now.
                return AnthropicError.Create(
                    $"messages.{i + 1}: Did not find {asked.Length} `tool_result` block(s) at the beginning of this message. " +
                    "Messages following `tool_use` blocks must begin with a matching number of `tool_result` blocks.");
        }
        return null;
    }

    static string? Role(JsonNode? message) => Json.String(Json.At(message, "role"));

    /// <summary>A message's content blocks; content given as a plain string has none.</summary>
    static JsonArray Blocks(JsonNode? message) => Json.At(message, "content") as JsonArray ?? [];

    static string[] ToolUseIds(JsonArray blocks) =>
        [.. blocks.Where(block => Json.String(Json.At(block, "type")) == "tool_use").Select(block => Json.String(Json.At(block, "id")) ?? "")];
}

/// <summary>
/// The Messages API's rules on extended thinking ("thinking": {"type": "enabled", "budget_tokens"}), answered in its
/// error shape. A thinking block goes back with its signature, thinking enabled or not (langchain-ai/langchain#29971
/// quotes "messages.1.content.0.thinking.signature: Field required"). With thinking enabled: a budget of at least 1024
/// (themaximalist/llm.js#30), below max_tokens (the docs' rule; the wording is ours: no public quote was found), no
/// tool_choice that forces a call (mastra-ai/mastra#7507), and the assistant message whose tool_use blocks the last
/// message answers starts with a thinking or redacted_thinking block (Kilo-Org/kilocode#5219 and
/// deepset-ai/haystack-core-integrations#2146 quote the message, "preceeding" included, for messages.1).
/// </summary>
static class ThinkingRules
{
    const string Docs = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking";

    public static JsonObject? FirstViolation(JsonObject request)
    {
        JsonArray messages = request["messages"] as JsonArray ?? [];
        for (int i = 0; i < messages.Count; i++)
        {
            JsonArray blocks = Json.At(messages[i], "content") as JsonArray ?? [];
            for (int b = 0; b < blocks.Count; b++)
            {
                if (Json.String(Json.At(blocks[b], "type")) == "thinking" && Json.String(Json.At(blocks[b], "signature")) is null)
                    return AnthropicError.Create($"messages.{i}.content.{b}.thinking.signature: Field required");
            }
        }
        if (Json.String(Json.At(request, "thinking", "type")) != "enabled")
            return null;

        if (Json.At(request, "thinking", "budget_tokens") is JsonValue budgetValue && budgetValue.TryGetValue(out long budget))
        {
            if (budget < 1024)
                return AnthropicError.Create("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024");
            if (Json.At(request, "max_tokens") is JsonValue maxValue && maxValue.TryGetValue(out long max) && max <= budget)
                // Our wording: the rule is the docs', no quote of the API's answer was found.
                return AnthropicError.Create("`max_tokens` must be greater than `thinking.budget_tokens`.");
        }
        if (Json.String(Json.At(request, "tool_choice", "type")) is "any" or "tool")
            return AnthropicError.Create("Thinking may not be enabled when tool_choice forces tool use.");

        // The last message answers tool_use blocks: the assistant message that asked is the final one, and it must begin
        // with its thinking (the lastmost set of tool_use and tool_result blocks).
        int last = messages.Count - 1;
        if (last < 1 || Json.String(Json.At(messages[last], "role")) != "user" || Json.String(Json.At(messages[last - 1], "role")) != "assistant" ||
            Json.At(messages[last - 1], "content") is not JsonArray asked || !asked.Any(block => Json.String(Json.At(block, "type")) == "tool_use"))
            return null;
        string first = Json.String(Json.At(asked[0], "type")) ?? "";
        return first is "thinking" or "redacted_thinking" ? null : AnthropicError.Create(
            $"messages.{last - 1}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. When `thinking` is enabled, " +
            "a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). " +
            "We recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. " +
            $"Please consult our documentation at {Docs}");
    }
}
