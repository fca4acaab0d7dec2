// AnthropicApi.cs: the same four steps on the Anthropic Messages API (--api anthropic).
//
// POST {base}/messages, with the key in `x-api-key` (not Authorization) and the API version in `anthropic-version`.
// The conversation is `messages` again, but a message's content is a list of blocks. What differs, step by step:
//   Step 1  `tools` are {name, description, input_schema}: no "type", no wrapper, and the schema is `input_schema`.
//           `max_tokens` is required.
//   Step 2  A call is a content block {"type":"tool_use","id","name","input"}, and `input` is a JSON *object*, not a
//           string. stop_reason is "tool_use" then; decide on the blocks, since they are what step 3 answers.
//   Step 3  Append the assistant's `content` as received (its text blocks too), then ONE user message holding a
//           {"type":"tool_result","tool_use_id","content"} block per call, results first, in the very next message;
//           a failed call says so with "is_error": true. There is no "tool" role.
//   Step 4  The answer is the text blocks of `content`.
// Streamed, the reply is events (message_start, content_block_start, content_block_delta with text_delta or
// input_json_delta, and with extended thinking thinking_delta and signature_delta, content_block_stop, message_delta,
// message_stop; ping and error) that StreamedMessage turns into the same message.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Net.Http;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

sealed class AnthropicApi : Api
{
    /// <summary>The Messages API version this file is written against; Anthropic requires it on every request.</summary>
    public const string Version = "2023-06-01";

    /// <summary>The most tokens one reply may have unless --max-tokens says otherwise: required by the Messages API (the
    /// OpenAI APIs have a default).</summary>
    public const int MaxTokens = 1024;

    /// <summary>Runs the whole flow for one question and returns the model's final text.</summary>
    public override async Task<string> RunAsync(
        ChatClient client, string model, string question, IReadOnlyList<Tool> tools, FlowOptions options, CancellationToken cancellationToken)
    {
        Action<string>? log = options.Log;
        int failingRounds = 0; // rounds in a row in which every call failed

        // Step 1: send the question and the tools. As with Chat Completions, the request object is the conversation:
        // step 3 appends to its `messages` and step 4 sends the same object again.
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question });
        var request = new JsonObject
        {
            ["model"] = model,
            ["max_tokens"] = options.MaxTokens ?? MaxTokens,
            ["messages"] = messages,
            ["tools"] = ToolDefinitions(tools),
        };
        if (ToolChoiceValue(options) is JsonObject toolChoice)
            request["tool_choice"] = toolChoice;
        foreach ((string field, JsonNode? value) in options.RequestFields ?? [])
            request[field] = value?.DeepClone(); // e.g. --thinking's thinking (WithReasoning)
        log?.Invoke($"Step 1: POST {client.Url}: 1 message ({ToolCalling.Quoted(question)}), tools: {ToolCalling.ToolNames(tools)}{ToolCalling.ToolFieldsShown(request)}");
        JsonObject response = await client.PostAsync(request, cancellationToken);

        for (int round = 1; ; round++)
        {
            // Step 2: read `content`, a list of blocks. Its tool_use blocks are the calls; without any, it is the answer.
            JsonArray content = TakeContent(response);
            JsonObject[] calls = [.. content.OfType<JsonObject>().Where(block => Json.String(block["type"]) == "tool_use")];
            string stopReason = Json.String(response["stop_reason"]) ?? "missing";
            int step = round == 1 ? 2 : 4; // the reply to step 1 is read in step 2; every later reply is step 4's
            if (calls.Length == 0)
            {
                log?.Invoke($"Step {step}: the model answers with text (stop_reason \"{stopReason}\"{TokensShown(response)})");
                return AnswerText(content, stopReason);
            }
            log?.Invoke($"Step {step}: the model asks for {ToolCalling.Plural(calls.Length, "tool call")} (stop_reason \"{stopReason}\"{TokensShown(response)})");
            if (stopReason == "max_tokens")
                throw ToolCalling.CutOff("stop_reason \"max_tokens\"", options.MaxTokens ?? MaxTokens);
            if (round > options.MaxRounds)
                throw ToolCalling.RoundLimitReached(options.MaxRounds);
            if (calls.FirstOrDefault(call => Json.String(call["id"]) is not { Length: > 0 }) is not null)
                throw new FlowException("a tool_use block in the reply has no id, so no tool_result could be paired with it; the reply is malformed.");

            // Step 3: the assistant's content goes into the history first, as received (text and thinking blocks too).
            // Then ONE user message: a tool_result block per call, in the calls' order, each with its call's id, and
            // nothing before them. A failed call gets "is_error": true, so the model knows it did not work.
            JsonNode assistant = new JsonObject { ["role"] = "assistant", ["content"] = content };
            messages.Add(assistant);
            FunctionCall[] asked = [.. calls.Select(call => new FunctionCall(Json.String(call["name"]) ?? "", call["input"]))];
            (string Content, bool Failed)[] results = await (options.RunCalls ?? ToolCalling.RunCallsAsync)(asked, tools, cancellationToken);
            var blocks = new JsonArray();
            for (int i = 0; i < calls.Length; i++)
            {
                log?.Invoke($"Step 3: {ToolCalling.Shown(asked[i].Name)}({ToolCalling.Shown(Json.Compact(asked[i].Arguments))}) -> {ToolCalling.Shown(results[i].Content)}");
                var toolResult = new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = calls[i]["id"]!.DeepClone(), ["content"] = results[i].Content };
                if (results[i].Failed)
                    toolResult["is_error"] = true;
                blocks.Add((JsonNode)toolResult);
            }
            JsonNode answers = new JsonObject { ["role"] = "user", ["content"] = blocks };
            messages.Add(answers);
            failingRounds = results.All(result => result.Failed) ? failingRounds + 1 : 0;
            if (failingRounds == ToolCalling.MaxFailingRounds)
                throw ToolCalling.OnlyFailures(results);

            // Step 4: send the whole history again. The reply goes back to step 2: text ends the flow, more tool_use
            // blocks start another round.
            string released = "";
            if (round == options.MaxRounds)
            {
                // As in Chat Completions: the request after the last round allowed asks for an answer. {"type":"none"}
                // has no disable_parallel_tool_use: with no call allowed, there is nothing to run in parallel.
                request["tool_choice"] = new JsonObject { ["type"] = "none" };
                released = $"; tool_choice now {{\"type\":\"none\"}}: the last request (--max-rounds {options.MaxRounds}) asks for an answer";
            }
            else if (options.ForcesACall && round == 1)
            {
                // As in Chat Completions: a forced call ("any" or a tool) is forced on every request that carries it.
                request["tool_choice"] = ToolChoiceValue(options with { ToolChoice = "auto" });
                released = $"; tool_choice now {Json.Compact(request["tool_choice"])}";
            }
            log?.Invoke($"Step 4: POST {client.Url}: {ToolCalling.Plural(messages.Count, "message")} ({MessagesShape(messages)}){released}");
            response = await client.PostAsync(request, cancellationToken);
        }
    }

    /// <summary>The `tools` of step 1: {name, description, input_schema}.</summary>
    public static JsonArray ToolDefinitions(IReadOnlyList<Tool> tools)
    {
        var definitions = new JsonArray();
        foreach (Tool tool in tools)
        {
            JsonNode definition = new JsonObject
            {
                ["name"] = tool.Name,
                ["description"] = tool.Description,
                ["input_schema"] = tool.Parameters.DeepClone(),
            };
            definitions.Add(definition);
        }
        return definitions;
    }

    /// <summary>
    /// `tool_choice` is an object: {"type":"auto"}, {"type":"none"}, {"type":"any"} (what the OpenAI APIs call
    /// "required") or {"type":"tool","name"}. --no-parallel is a field of it, "disable_parallel_tool_use": true.
    /// </summary>
    static JsonObject? ToolChoiceValue(FlowOptions options)
    {
        if (options.ToolChoice is null && options.ParallelToolCalls)
            return null;
        string type = options.ToolChoice switch { null or "auto" => "auto", "none" => "none", "required" => "any", _ => "tool" };
        var choice = new JsonObject { ["type"] = type };
        if (type == "tool")
            choice["name"] = options.ToolChoice;
        if (!options.ParallelToolCalls)
            choice["disable_parallel_tool_use"] = true;
        return choice;
    }

    /// <summary>Step 2's read: `content`, detached from the response so that step 3 can append it as it is.</summary>
    static JsonArray TakeContent(JsonObject response)
    {
        if (response["content"] is not JsonArray content)
            throw new FlowException("the message has no content array, so there is nothing to read. Try the request again.");
        response.Remove("content");
        return content;
    }

    /// <summary>The answer: the text blocks, joined.</summary>
    static string AnswerText(JsonArray content, string stopReason)
    {
        string text = string.Concat(content.Where(block => Json.String(Json.At(block, "type")) == "text").Select(block => Json.String(Json.At(block, "text"))));
        return text.Length > 0
            ? text
            : throw new FlowException($"the message has neither text nor tool_use blocks (stop_reason \"{stopReason}\"), so there is no answer to print.");
    }

    /// <summary>"; tokens: 20 in, 10 out" when the message reports its usage, else "".</summary>
    static string TokensShown(JsonObject response) =>
        Json.At(response, "usage", "input_tokens") is JsonValue input && input.TryGetValue(out long inputTokens) &&
        Json.At(response, "usage", "output_tokens") is JsonValue output && output.TryGetValue(out long outputTokens)
            ? $"; tokens: {inputTokens} in, {outputTokens} out"
            : "";

    // Around the loop: the key and version headers, the stream, the options it cannot carry, and the history as the
    // diagram reads it.

    public override string Name => "anthropic";

    public override string Path => "/messages";

    public override string Describes => "the Anthropic Messages API";

    public override string KeyVariable => "ANTHROPIC_API_KEY";
    public override string BaseUrlVariable => "ANTHROPIC_BASE_URL";
    public override string ModelVariable => "ANTHROPIC_MODEL";
    public override string DefaultBaseUrl => "https://api.anthropic.com/v1";
    public override string DefaultModel => "claude-haiku-4-5";

    /// <summary>The key in a header of its own (not Authorization), and the API version, which every request must name.</summary>
    public override void AddHeaders(HttpRequestMessage request, string? apiKey)
    {
        if (apiKey is not null)
            request.Headers.Add("x-api-key", apiKey);
        request.Headers.Add("anthropic-version", Version);
    }

    public override EventStreamReader NewStreamReader(TextWriter output) => new StreamedMessage(output);

    /// <summary>
    /// --thinking TOKENS: "thinking": {"type": "enabled", "budget_tokens": TOKENS}. The API takes a budget of at least
    /// 1024 tokens, below max_tokens, which counts the thinking too: without --max-tokens, max_tokens is the budget
    /// plus the 1024 of a reply without thinking; a --max-tokens not above the budget is refused.
    /// </summary>
    public override FlowOptions WithReasoning(FlowOptions options, bool noStore, int? thinkingBudget)
    {
        options = base.WithReasoning(options, noStore, thinkingBudget: null);
        if (thinkingBudget is not int budget)
            return options;
        if (budget < MinThinkingBudget)
            throw new UsageException($"--thinking {budget}: the Messages API takes a thinking budget of at least {MinThinkingBudget} tokens.");
        if (options.MaxTokens is int max && max <= budget)
            throw new UsageException(
                $"--thinking {budget} needs a --max-tokens above it (now {max}): max_tokens counts the thinking too, so the " +
                $"API refuses a budget that is not below it. Raise --max-tokens, e.g. to {budget + MaxTokens}, or leave it out.");
        var thinking = new JsonObject { ["type"] = "enabled", ["budget_tokens"] = budget };
        return WithFields(options with { MaxTokens = options.MaxTokens ?? budget + MaxTokens }, new JsonObject { ["thinking"] = thinking });
    }

    /// <summary>The smallest thinking budget the Messages API takes ("thinking.enabled.budget_tokens: Input should be
    /// greater than or equal to 1024").</summary>
    public const int MinThinkingBudget = 1024;

    /// <summary>The tool-use options map onto tool_choice (see ToolChoiceValue), with three exceptions.</summary>
    public override void CheckOptions(FlowOptions options, IReadOnlyList<Tool> tools)
    {
        if (options.RequestFields?["thinking"] is not null && options.ForcesACall)
            throw new UsageException(
                $"--thinking does not go with --tool-choice {options.ToolChoice} on --api anthropic: the API answers \"Thinking may " +
                "not be enabled when tool_choice forces tool use.\" Use --tool-choice auto or none, or drop --thinking.");
        if (tools.Any(tool => tool.Strict))
            throw new UsageException(
                "--strict is for --api chat and responses: the Anthropic Messages API has strict tool use only as a beta, " +
                "behind an anthropic-beta header this reference does not send. Run without --strict.");
        if (options.ToolChoice == "none" && !options.ParallelToolCalls)
            throw new UsageException(
                "--no-parallel does not go with --tool-choice none on --api anthropic: disable_parallel_tool_use is a field " +
                "of tool_choice, and {\"type\":\"none\"} has no such field (nor any tool call). Drop --no-parallel.");
    }

    /// <summary>The Messages API's tool names: ^[a-zA-Z0-9_-]{1,128}$ (its API reference). It documents no limit on the
    /// number of tools.</summary>
    public override int MaxNameLength => 128;

    public override string HistoryShape(JsonArray history) => MessagesShape(history);

    /// <summary>An assistant message's tool_use blocks.</summary>
    public override IEnumerable<(string Id, string Call)> Calls(JsonNode? entry) =>
        (Json.At(entry, "content") as JsonArray ?? []).Where(b => Json.String(Json.At(b, "type")) == "tool_use")
            .Select(block => (Json.String(Json.At(block, "id")) ?? "", $"{Json.String(Json.At(block, "name"))}({Json.Compact(Json.At(block, "input"))})"));

    /// <summary>A user message's tool_result blocks.</summary>
    public override IEnumerable<(string Id, string Text)> Results(JsonNode? entry) =>
        (Json.At(entry, "content") as JsonArray ?? []).Where(b => Json.String(Json.At(b, "type")) == "tool_result")
            .Select(block => (Json.String(Json.At(block, "tool_use_id")) ?? "", TextOf(Json.At(block, "content"))));

    internal static string MessagesShape(JsonArray messages) =>
        string.Join(", ", messages.Select(message =>
        {
            string role = Json.String(Json.At(message, "role")) ?? "?";
            string[] types = [.. (Json.At(message, "content") as JsonArray ?? []).Select(block => Json.String(Json.At(block, "type")))
                .Where(type => type is "tool_use" or "tool_result").Select(type => type!)];
            return types.Length == 0 ? role : $"{role} with {ToolCalling.Plural(types.Length, types[0])}";
        }));
}

/// <summary>
/// A streamed Messages API reply, put back together into the message a JSON reply is. message_start brings the message
/// with empty `content`; each block then comes as content_block_start (a tool_use block with its id, name and an empty
/// input), content_block_delta events for its `index`, and content_block_stop. A delta appends to one field of its
/// block: text_delta to "text" (shown as it arrives), input_json_delta's partial_json to the input's JSON text (parsed
/// once the message is whole: the pieces split it anywhere), and with extended thinking, thinking_delta and
/// signature_delta to "thinking" and "signature" (not shown: the thinking is not the answer); a redacted_thinking block
/// has no deltas, it comes whole in its content_block_start. message_delta brings stop_reason and the usage so far;
/// message_stop ends the reply. ping keeps the connection alive; an error event ends the stream.
/// </summary>
sealed class StreamedMessage(TextWriter output) : EventStreamReader(output)
{
    readonly SortedDictionary<int, PartialBlock> blocks = [];
    JsonObject message = [];

    protected override string EndMarker => "message_stop";

    /// <summary>A message_delta with a stop_reason says the message is whole: message_stop adds nothing after it. The
    /// Anthropic SDKs' MessageStream ends at any clean end after message_start; this asks for the stop_reason.</summary>
    protected override JsonObject? CompleteAtEnd() => Json.String(message["stop_reason"]) is null ? null : ToMessage();

    protected override JsonObject? Add(string data, JsonObject? json, int position)
    {
        if (json is null)
            throw NotAnObject(position, data);
        // The events' objects stay as received (they are recorded): what is kept of them is copied.
        switch (Json.String(json["type"]))
        {
            case "message_start" when json["message"] is JsonObject start:
                message = (JsonObject)start.DeepClone();
                break;
            case "content_block_start" when json["content_block"] is JsonObject block:
                blocks[Index(json) ?? blocks.Count] = new PartialBlock((JsonObject)block.DeepClone());
                break;
            case "content_block_delta" when json["delta"] is JsonObject delta:
                AddDelta(BlockAt(json), delta);
                break;
            case "message_delta":
                foreach ((string field, JsonNode? value) in json["delta"] as JsonObject ?? [])
                    message[field] = value?.DeepClone(); // stop_reason, stop_sequence
                if (json["usage"] is JsonObject usage)
                {
                    if (message["usage"] is not JsonObject total)
                        message["usage"] = total = [];
                    foreach ((string field, JsonNode? value) in usage)
                        total[field] = value?.DeepClone(); // the counts so far, not the last few: they replace
                }
                break;
            case "message_stop":
                return ToMessage();
            case "error":
                throw ErrorEvent("the message", Json.At(json, "error", "message") ?? json);
        }
        return null; // ping, content_block_stop: nothing to keep
    }

    PartialBlock BlockAt(JsonObject json)
    {
        int index = Index(json) ?? (blocks.Count > 0 ? blocks.Keys.Last() : 0);
        if (!blocks.TryGetValue(index, out PartialBlock? block))
            blocks[index] = block = new PartialBlock(new JsonObject { ["type"] = "text", ["text"] = "" });
        return block;
    }

    void AddDelta(PartialBlock block, JsonObject delta)
    {
        (string? field, string piece) = Json.String(delta["type"]) switch
        {
            "text_delta" => ("text", "text"),
            "input_json_delta" => ("input", "partial_json"),
            "thinking_delta" => ("thinking", "thinking"),
            "signature_delta" => ("signature", "signature"),
            _ => ((string?)null, ""),
        };
        if (field == "text")
            Print(block.Field(field), delta[piece]);
        else if (field is not null)
            block.Field(field).Append(Json.String(delta[piece]));
    }

    JsonObject ToMessage()
    {
        message["content"] = new JsonArray([.. blocks.Select(pair => (JsonNode)pair.Value.ToJson(pair.Key))]);
        return message;
    }

    /// <summary>What has arrived so far of one content block.</summary>
    sealed class PartialBlock(JsonObject block)
    {
        readonly Dictionary<string, StringBuilder> fields = [];

        /// <summary>The text of a field that deltas append to; "text", "thinking" and "signature" start from the block's
        /// own value, the input's JSON text from nothing (the block's input is {} until then).</summary>
        public StringBuilder Field(string name)
        {
            if (!fields.TryGetValue(name, out StringBuilder? text))
                fields[name] = text = new StringBuilder(name == "input" ? "" : Json.String(block[name]) ?? "");
            return text;
        }

        public JsonObject ToJson(int index)
        {
            foreach ((string name, StringBuilder text) in fields)
            {
                if (name != "input")
                    block[name] = text.ToString();
                else if (!string.IsNullOrWhiteSpace(text.ToString()))
                    block[name] = Input(text.ToString(), index); // no pieces (a tool without parameters): {} stays
            }
            return block;
        }

        JsonObject Input(string text, int index)
        {
            try
            {
                if (Json.Parse(text) is JsonObject input)
                    return input;
            }
            catch (JsonException)
            {
            }
            throw new FlowException(
                $"the input of content block {index} ({Json.String(block["name"])}) is not a JSON object once its streamed pieces are joined: " +
                $"{(text.Length > 120 ? text[..120] + "…" : text)}");
        }
    }
}
