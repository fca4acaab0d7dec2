// ReasoningRuleTests.cs: the replay server answers a history that drops a reasoning model's state as each API does.

using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>The replay server's rules on reasoning state, each with the API's status and wording. What the API handed
/// out, the server knows from the replies it has played: the requests here play a cassette's first interaction, then
/// send its second one changed.</summary>
public class ReasoningRuleTests
{
    const string DeepSeek = "The `reasoning_content` in the thinking mode must be passed back to the API.";

    /// <summary>Plays the cassette's first interaction, then sends its second request changed; the status and body.</summary>
    internal static async Task<(int Status, JsonNode? Body)> SecondRequestAsync(string cassette, Action<JsonObject> change)
    {
        Cassette recorded = Cassette.Load(Repo.Cassette(cassette));
        await using ReplayServer server = ReplayServer.Start(recorded);
        (int first, _) = await PostAsync(server, recorded.Interactions[0].Path, recorded.Interactions[0].RequestBody!);
        Assert.Equal(200, first);
        JsonObject second = recorded.Interactions[1].RequestBody!.DeepClone().AsObject();
        change(second);
        return await PostAsync(server, recorded.Interactions[1].Path, second);
    }

    /// <summary>A POST as each API's client sends it (the Messages API's with its version header); the body parsed,
    /// or for a stream, null.</summary>
    internal static async Task<(int Status, JsonNode? Body)> PostAsync(ReplayServer server, string path, JsonNode body)
    {
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, server.BaseUrl + path)
        {
            Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"),
        };
        if (path == "/messages")
            request.Headers.Add("anthropic-version", AnthropicApi.Version);
        using HttpResponseMessage response = await http.SendAsync(request);
        string text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, response.Content.Headers.ContentType?.MediaType == "application/json" ? JsonNode.Parse(text) : null);
    }

    /// <summary>The message of an error body: {"error": {"message"}}, {"type": "error", "error": {…}} or Gemini's [{…}].</summary>
    internal static string? Message(JsonNode? body) =>
        (string?)(body is JsonArray list ? list[0] : body)?["error"]?["message"];

    [Theory]
    [InlineData("reasoning/deepseek-thinking.json")]
    [InlineData("reasoning/deepseek-thinking-stream.json")]
    public async Task DeepSeek_AToolCallMessageWithoutTheReasoningContentItCameWith_Is400(string cassette)
    {
        (int status, JsonNode? body) = await SecondRequestAsync(cassette, request =>
        {
            request["messages"]![1]!.AsObject().Remove("reasoning_content");
            request["model"] = Wire.Model; // as ToolCall replays it: the server knows the call from its own reply
        });

        Assert.Equal(400, status);
        Assert.Equal(DeepSeek, Message(body));
        Assert.Equal("invalid_request_error", (string?)body!["error"]!["code"]);
    }

    [Fact]
    public async Task DeepSeek_TheRuleRestsOnWhatTheServerHandedOut_OrOnThinkingMode()
    {
        Cassette recorded = Cassette.Load(Repo.Cassette("reasoning/deepseek-thinking.json"));
        JsonObject dropped = recorded.Interactions[1].RequestBody!.DeepClone().AsObject();
        dropped["messages"]![1]!.AsObject().Remove("reasoning_content");
        dropped["model"] = Wire.Model;
        await using ReplayServer server = ReplayServer.Start(recorded);

        // Nothing played yet, and the request does not say it thinks: not DeepSeek's rule, only a mismatch.
        (int status, JsonNode? body) = await PostAsync(server, "/chat/completions", dropped);
        Assert.Equal(400, status);
        Assert.Equal("replay_mismatch", (string?)body!["error"]!["code"]);

        // The model deepseek-reasoner thinks, and "thinking": {"type": "enabled"} says so, played or not.
        dropped["model"] = "deepseek-reasoner";
        (status, body) = await PostAsync(server, "/chat/completions", dropped);
        Assert.Equal(DeepSeek, Message(body));
        dropped["model"] = Wire.Model;
        dropped["thinking"] = new JsonObject { ["type"] = "enabled" };
        (status, body) = await PostAsync(server, "/chat/completions", dropped);
        Assert.Equal(DeepSeek, Message(body));

        // "disabled" says it does not, even for calls the server made thinking.
        await PostAsync(server, "/chat/completions", recorded.Interactions[0].RequestBody!);
        dropped["thinking"] = new JsonObject { ["type"] = "disabled" };
        (status, body) = await PostAsync(server, "/chat/completions", dropped);
        Assert.Equal("replay_mismatch", (string?)body!["error"]!["code"]);
    }

    [Fact]
    public async Task DeepSeek_AMessageWithoutToolCalls_NeedNotCarryItsReasoning()
    {
        JsonObject request = Wire.Request(Wire.User("Hi"), Wire.Text("Hello!"), Wire.User("Weather?"));
        request["thinking"] = new JsonObject { ["type"] = "enabled" };
        await using ReplayServer server = ReplayServer.Start(Cassette.Load(Repo.Cassette("weather.json")));

        (int status, JsonNode? body) = await PostAsync(server, "/chat/completions", request);

        Assert.Equal(400, status);
        Assert.Equal("replay_mismatch", (string?)body!["error"]!["code"]); // no rule broken: only not the recorded request
    }

    [Theory]
    [InlineData("reasoning/gemini-thought-signatures.json")]
    [InlineData("reasoning/gemini-thought-signatures-stream.json")]
    public async Task Gemini_ACallWithoutTheThoughtSignatureItCameWith_Is400_InAList(string cassette)
    {
        (int status, JsonNode? body) = await SecondRequestAsync(cassette, request =>
            request["messages"]![1]!["tool_calls"]![0]!.AsObject().Remove("extra_content"));

        Assert.Equal(400, status);
        JsonNode error = Assert.Single(Assert.IsType<JsonArray>(body))!["error"]!;
        Assert.Equal(400, (int)error["code"]!);
        Assert.Equal("INVALID_ARGUMENT", (string?)error["status"]);
        Assert.Equal(
            "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing " +
            "thought_signature may lead to degraded model performance. Additional data, function call `default_api:get_weather` , position 1. " +
            "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
            (string?)error["message"]);
    }

    [Fact]
    public void GeminisErrorInAList_IsReadForItsMessage_ByTheClient()
    {
        const string text = """[{"error":{"code":400,"message":"Function call is missing a thought_signature.","status":"INVALID_ARGUMENT"}}]""";

        Assert.Equal("HTTP 400 Bad Request: Function call is missing a thought_signature.", ApiError.Describe(400, "Bad Request", JsonNode.Parse(text), text));
    }

    [Fact]
    public async Task Gemini3_NeedsASignatureOnTheFirstCallOfEachReply_InTheCurrentTurnOnly()
    {
        JsonObject unsigned = Wire.AskForTools(Wire.WeatherCall("call_1", "London"));
        JsonObject current = Wire.Request(Wire.User("Weather?"), unsigned, Wire.ToolMessage("call_1", "x"));
        current["model"] = "gemini-3-flash-preview";
        JsonObject earlier = Wire.Request(Wire.User("Weather?"), unsigned, Wire.ToolMessage("call_1", "x"), Wire.Text("Sunny."), Wire.User("And Paris?"));
        earlier["model"] = "gemini-3-flash-preview";
        await using ReplayServer server = ReplayServer.Start(Cassette.Load(Repo.Cassette("weather.json")));

        (_, JsonNode? rejected) = await PostAsync(server, "/chat/completions", current);
        (_, JsonNode? mismatch) = await PostAsync(server, "/chat/completions", earlier);

        Assert.Contains("Function call is missing a thought_signature", Message(rejected));
        Assert.Equal("replay_mismatch", (string?)mismatch!["error"]!["code"]); // a turn before the last user message is not checked
    }

    [Theory]
    [InlineData("responses-no-store.json")]
    [InlineData("responses-no-store+stream.json")]
    public async Task Responses_AFunctionCallWithoutTheReasoningItemBeforeIt_Is400(string cassette)
    {
        (int status, JsonNode? body) = await SecondRequestAsync(cassette, request => request["input"]!.AsArray().RemoveAt(1));

        Assert.Equal(400, status);
        Assert.Equal(
            "Item 'fc_68d1b2d2e4f5a6b7c8d9e0f1a2b3c4e6' of type 'function_call' was provided without its required 'reasoning' item: " +
            "'rs_68d1b2d1a4e58190b2c3d4e5f6a7b8c9'.", Message(body));
        Assert.Equal("input", (string?)body!["error"]!["param"]);
    }

    [Theory]
    [InlineData("responses-no-store.json")]
    [InlineData("responses-no-store+stream.json")]
    public async Task Responses_AReasoningItemThatStoreFalseNeverKept_SentByIdAlone_Is404(string cassette)
    {
        (int status, JsonNode? body) = await SecondRequestAsync(cassette, request => request["input"]![1]!.AsObject().Remove("encrypted_content"));

        Assert.Equal(404, status);
        Assert.Equal(
            "Item with id 'rs_68d1b2d1a4e58190b2c3d4e5f6a7b8c9' not found. Items are not persisted when `store` is set to false. " +
            "Try again with `store` set to true, or remove this item from your input.", Message(body));
    }

    public static TheoryData<string, string> ThinkingViolations() => new()
    {
        { "the thinking block dropped", "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking" },
        { "its signature dropped", "messages.1.content.0.thinking.signature: Field required" },
        { "a budget under 1024", "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024" },
        { "max_tokens not above the budget", "`max_tokens` must be greater than `thinking.budget_tokens`." },
        { "a forced tool_choice", "Thinking may not be enabled when tool_choice forces tool use." },
    };

    internal static void Break(JsonObject request, string how)
    {
        JsonArray content = request["messages"]![1]!["content"]!.AsArray();
        switch (how)
        {
            case "the thinking block dropped": content.RemoveAt(0); break;
            case "its signature dropped": content[0]!.AsObject().Remove("signature"); break;
            case "a budget under 1024": request["thinking"]!["budget_tokens"] = 512; break;
            case "max_tokens not above the budget": request["max_tokens"] = 1024; break;
            default: request["tool_choice"] = new JsonObject { ["type"] = "any" }; break;
        }
    }

    [Theory]
    [MemberData(nameof(ThinkingViolations))]
    public async Task Anthropic_AThinkingTurnSentBackBroken_Is400_InTheMessagesApisWords(string how, string message)
    {
        (int status, JsonNode? body) = await SecondRequestAsync("anthropic-thinking.json", request => Break(request, how));

        Assert.Equal(400, status);
        Assert.Equal("error", (string?)body!["type"]);
        Assert.Equal(message, Message(body));
    }

    [Fact]
    public async Task Anthropic_WithoutThinking_AToolUseFirstIsFine()
    {
        (int status, JsonNode? body) = await SecondRequestAsync("anthropic-thinking.json", request =>
        {
            request.Remove("thinking");
            request["messages"]![1]!["content"]!.AsArray().RemoveAt(0);
        });

        Assert.Equal(400, status);
        Assert.StartsWith("Replay mismatch", Message(body)); // no rule broken: only not the recorded request
    }
}

/// <summary>PROTOCOL.md's reasoning section holds every answer of the reasoning rules, word for word, with its status.</summary>
public class ReasoningProtocolDocTests
{
    static readonly string ProtocolMd = File.ReadAllText(Path.Combine(Repo.Root, "PROTOCOL.md"));

    public static TheoryData<string, string> Breaks() => new()
    {
        { "reasoning/deepseek-thinking.json", "reasoning_content" },
        { "reasoning/gemini-thought-signatures.json", "signature" },
        { "responses-no-store.json", "reasoning item" },
        { "responses-no-store.json", "encrypted_content" },
        { "anthropic-thinking.json", "the thinking block dropped" },
        { "anthropic-thinking.json", "its signature dropped" },
        { "anthropic-thinking.json", "a budget under 1024" },
        { "anthropic-thinking.json", "max_tokens not above the budget" },
        { "anthropic-thinking.json", "a forced tool_choice" },
    };

    [Theory]
    [MemberData(nameof(Breaks))]
    public async Task EveryReasoningRuleOfTheServer_IsARowOfProtocolMd_WithItsStatus(string cassette, string how)
    {
        (int status, JsonNode? body) = await ReasoningRuleTests.SecondRequestAsync(cassette, request =>
        {
            switch (how)
            {
                case "reasoning_content": request["messages"]![1]!.AsObject().Remove("reasoning_content"); break;
                case "signature": request["messages"]![1]!["tool_calls"]![0]!.AsObject().Remove("extra_content"); break;
                case "reasoning item": request["input"]!.AsArray().RemoveAt(1); break;
                case "encrypted_content": request["input"]![1]!.AsObject().Remove("encrypted_content"); break;
                default: ReasoningRuleTests.Break(request, how); break;
            }
        });
        string message = ReasoningRuleTests.Message(body)!;

        string[] rows = [.. Section().Split('\n').Where(line => line.StartsWith('|') && line.Contains($" {message} |", StringComparison.Ordinal))];
        Assert.True(rows.Length == 1, $"PROTOCOL.md's \"Reasoning state\" section has {rows.Length} rows with: {message}");
        Assert.Contains($"| {status} |", rows[0]);
    }

    [Fact]
    public void TheReasoningSection_QuotesEachApisStateGoingBack()
    {
        foreach (string quote in new[]
        {
            "reasoning/deepseek-thinking.json interactions[1].request.body.messages[1]",
            "reasoning/gemini-thought-signatures.json interactions[1].request.body.messages[1].tool_calls",
            "responses-no-store.json interactions[1].request.body.input",
            "anthropic-thinking.json interactions[1].request.body.messages[1]",
        })
            Assert.Contains($"<!-- cassette: {quote} -->", Section());
    }

    static string Section()
    {
        int start = ProtocolMd.IndexOf("\n## Reasoning state\n", StringComparison.Ordinal);
        Assert.True(start >= 0, "PROTOCOL.md has no section \"Reasoning state\"");
        int end = ProtocolMd.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        return ProtocolMd[start..(end < 0 ? ProtocolMd.Length : end)];
    }
}

/// <summary>The cassettes of the other providers (cassettes/reasoning/deepseek-*, gemini-*) hold what each provider's
/// docs show, not OpenAI's spec (WireFidelityTests leaves them out): DeepSeek sends no `refusal`, Gemini no `logprobs`
/// and no `index` on a streamed call.</summary>
public class ProviderWireTests
{
    public static TheoryData<string> DeepSeekCassettes() => ["reasoning/deepseek-thinking.json", "reasoning/deepseek-thinking-stream.json"];

    public static TheoryData<string> GeminiCassettes() => ["reasoning/gemini-thought-signatures.json", "reasoning/gemini-thought-signatures-stream.json"];

    [Theory]
    [MemberData(nameof(DeepSeekCassettes))]
    public void DeepSeek_EveryReplyCarriesItsReasoning_AndEveryToolCallMessageSentBackToo(string name)
    {
        foreach (Interaction interaction in Cassette.Load(Repo.Cassette(name)).Interactions)
        {
            JsonNode?[] replies = interaction.ResponseEvents is JsonArray events
                ? [.. events.OfType<JsonObject>().SelectMany(chunk => chunk["choices"]!.AsArray()).Select(choice => choice!["delta"])]
                : [interaction.ResponseBody!["choices"]![0]!["message"]];
            Assert.Contains(replies, reply => reply?["reasoning_content"]?.GetValueKind() == JsonValueKind.String);
            foreach (JsonNode? message in interaction.RequestBody!["messages"]!.AsArray().Where(m => m!["tool_calls"] is not null))
                Assert.Equal(JsonValueKind.String, message!["reasoning_content"]!.GetValueKind());
            if (interaction.ResponseEvents is JsonArray stream)
            {
                // DeepSeek's chunks are OpenAI's otherwise: an index on every call fragment, the usage in a last chunk.
                Assert.All(replies.SelectMany(delta => delta?["tool_calls"]?.AsArray() ?? []), fragment => Assert.NotNull(fragment!["index"]));
                Assert.Empty(stream[^2]!["choices"]!.AsArray());
                Assert.Equal("[DONE]", (string?)stream[^1]);
            }
        }
    }

    [Theory]
    [MemberData(nameof(GeminiCassettes))]
    public void Gemini_TheFirstCallOfEachReplyCarriesItsThoughtSignature_AndAStreamedCallComesWhole(string name)
    {
        foreach (Interaction interaction in Cassette.Load(Repo.Cassette(name)).Interactions)
        {
            JsonNode? reply = interaction.ResponseEvents is JsonArray events
                ? events.OfType<JsonObject>().Select(chunk => chunk["choices"]![0]!["delta"]).FirstOrDefault(delta => delta?["tool_calls"] is not null)
                : interaction.ResponseBody!["choices"]![0]!["message"];
            if (reply?["tool_calls"] is not JsonArray calls)
                continue;
            Assert.NotNull(calls[0]!["extra_content"]!["google"]!["thought_signature"]);
            Assert.All(calls.Skip(1), call => Assert.Null(call!["extra_content"]));
            foreach (JsonNode? call in calls)
            {
                Assert.Null(call!["index"]);
                Assert.IsType<JsonObject>(JsonNode.Parse((string)call["function"]!["arguments"]!)); // whole, in one piece
            }
        }
    }
}
