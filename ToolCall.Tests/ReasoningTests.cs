// ReasoningTests.cs: a reasoning model's state goes back with its tool calls, on all three APIs, plain and streamed.

using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>The four steps with a reasoning model, end to end against the replay server: what each provider needs to
/// see again (DeepSeek's reasoning_content, Gemini's thought signatures, the Responses API's reasoning items, the
/// Messages API's thinking blocks) is in the next request, and none of it is printed as the answer.</summary>
public class ReasoningFlowTests
{
    const string London = "It's currently +18°C and partly cloudy in London.";

    /// <summary>Runs the program, recording the run, and returns the result and the recorded interactions.</summary>
    static async Task<(CliResult Run, IReadOnlyList<Interaction> Recorded)> RunAsync(params string[] args)
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync([.. args, "--record", dir.File("run.json")]);
        Assert.True(run.ExitCode == 0, run.ToString());
        return (run, Cassette.Load(dir.File("run.json")).Interactions);
    }

    [Theory]
    [InlineData("reasoning/deepseek-thinking.json")]
    [InlineData("reasoning/deepseek-thinking-stream.json", "--stream")]
    public async Task DeepSeek_TheAssistantMessageGoesBackWithItsReasoningContent_AndOnlyTheAnswerIsPrinted(string cassette, params string[] stream)
    {
        (CliResult run, IReadOnlyList<Interaction> recorded) = await RunAsync(["--replay", Repo.Cassette(cassette), .. stream]);

        JsonNode sentBack = recorded[1].RequestBody!["messages"]![1]!;
        Assert.Equal("The user wants the current weather in London. The get_weather tool takes a city, so I'll call it with London.",
            (string?)sentBack["reasoning_content"]);
        Assert.Equal("call_00_Tq8Lm3Vx9Rk2Wp5Nc7Hd4Jf1", (string?)sentBack["tool_calls"]![0]!["id"]);
        Assert.Equal(London + Environment.NewLine, run.Stdout); // the reasoning of either reply is not the answer
    }

    [Theory]
    [InlineData("reasoning/gemini-thought-signatures.json")]
    [InlineData("reasoning/gemini-thought-signatures-stream.json", "--stream")]
    public async Task Gemini_EachCallGoesBackWithTheThoughtSignatureItCameWith(string cassette, params string[] stream)
    {
        (CliResult run, IReadOnlyList<Interaction> recorded) = await RunAsync(["--replay", Repo.Cassette(cassette), .. stream]);

        JsonArray calls = recorded[1].RequestBody!["messages"]![1]!["tool_calls"]!.AsArray();
        Assert.StartsWith("CqMDAdHtim8", (string?)calls[0]!["extra_content"]?["google"]?["thought_signature"]);
        Assert.Null(calls[1]!["extra_content"]); // of parallel calls only the first has one, and none is made up
        Assert.Equal("Right now it's +18°C and partly cloudy in both London and Paris." + Environment.NewLine, run.Stdout);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task NoStore_AsksForEncryptedReasoning_AndSendsTheReasoningItemBackBeforeItsCall(bool stream)
    {
        (CliResult run, IReadOnlyList<Interaction> recorded) = await RunAsync(stream ? ["--api", "responses", "--no-store", "--stream"] : ["--api", "responses", "--no-store"]);

        Assert.Contains(stream ? "responses-no-store+stream.json" : "responses-no-store.json", run.Stderr);
        Assert.All(recorded, i => Assert.Equal(JsonValueKind.False, i.RequestBody!["store"]!.GetValueKind()));
        Assert.All(recorded, i => Assert.Equal("""["reasoning.encrypted_content"]""", i.RequestBody!["include"]!.ToJsonString()));
        JsonArray input = recorded[1].RequestBody!["input"]!.AsArray();
        Assert.Equal(["message", "reasoning", "function_call", "function_call_output"], input.Select(item => (string?)item!["type"] ?? "message"));
        Assert.StartsWith("gAAAAA", (string?)input[1]!["encrypted_content"]); // as the item was done, not as it was added
        Assert.Equal(London + Environment.NewLine, run.Stdout);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Thinking_SendsTheBudget_AndTheThinkingBlocksGoBackFirst_WithTheirSignatures(bool stream)
    {
        (CliResult run, IReadOnlyList<Interaction> recorded) = await RunAsync(
            stream ? ["--api", "anthropic", "--thinking", "1024", "--stream"] : ["--api", "anthropic", "--thinking", "1024"]);

        Assert.Contains(stream ? "anthropic-thinking+stream.json" : "anthropic-thinking.json", run.Stderr);
        Assert.All(recorded, i => Assert.Equal("""{"type":"enabled","budget_tokens":1024}""", i.RequestBody!["thinking"]!.ToJsonString()));
        Assert.All(recorded, i => Assert.Equal(2048, (int)i.RequestBody!["max_tokens"]!)); // the budget plus a reply's 1024
        JsonArray content = recorded[1].RequestBody!["messages"]![1]!["content"]!.AsArray();
        Assert.Equal(stream ? ["thinking", "redacted_thinking", "tool_use"] : ["thinking", "tool_use"], content.Select(block => (string)block!["type"]!));
        Assert.Equal("The user wants the current weather in London. I have get_weather, which takes a city: I'll call it with \"London\".",
            (string?)content[0]!["thinking"]);
        Assert.StartsWith("EqQBCgIYAhIM", (string?)content[0]!["signature"]);
        if (stream)
            Assert.StartsWith("EmwKAhgBEgy", (string?)content[1]!["data"]); // arrived whole in its content_block_start
        Assert.Equal(London + Environment.NewLine, run.Stdout);
    }
}

/// <summary>--no-store and --thinking: each for the API that has it, and the thinking budget held to the API's rules
/// before anything is sent.</summary>
public class ReasoningOptionTests
{
    [Theory]
    [InlineData("--no-store", "chat", "--no-store is for --api responses")]
    [InlineData("--no-store", "anthropic", "--no-store is for --api responses")]
    [InlineData("--thinking=2048", "chat", "--thinking is for --api anthropic")]
    [InlineData("--thinking=2048", "responses", "--thinking is for --api anthropic")]
    public async Task AnOptionForAnotherApi_IsExit2(string option, string api, string expected)
    {
        CliResult run = await App.RunAsync(option, "--api", api);

        Assert.Equal(2, run.ExitCode);
        Assert.Contains(expected, run.Stderr);
        Assert.Empty(run.Stdout);
    }

    [Theory]
    [InlineData(new[] { "--thinking", "1023" }, "takes a thinking budget of at least 1024 tokens")]
    [InlineData(new[] { "--thinking", "1024", "--max-tokens", "1024" }, "--thinking 1024 needs a --max-tokens above it (now 1024)")]
    [InlineData(new[] { "--thinking", "1024", "--tool-choice", "required" }, "Thinking may not be enabled when tool_choice forces tool use.")]
    [InlineData(new[] { "--thinking", "1024", "--tool-choice", "get_weather" }, "--thinking does not go with --tool-choice get_weather")]
    public async Task AThinkingBudgetTheApiWouldRefuse_IsExit2_BeforeAnythingIsSent(string[] options, string expected)
    {
        CliResult run = await App.RunAsync(["--api", "anthropic", .. options]);

        Assert.Equal(2, run.ExitCode);
        Assert.Contains(expected, run.Stderr);
        Assert.DoesNotContain("Step 1", run.Stderr);
    }

    [Fact]
    public void Thinking_KeepsAMaxTokensAboveTheBudget_AndWithoutOne_SendsTheBudgetPlusAReplysDefault()
    {
        FlowOptions given = Apis.Anthropic.WithReasoning(new FlowOptions { MaxTokens = 4096 }, noStore: false, thinkingBudget: 2048);
        FlowOptions defaulted = Apis.Anthropic.WithReasoning(new FlowOptions(), noStore: false, thinkingBudget: 2048);

        Assert.Equal(4096, given.MaxTokens);
        Assert.Equal(2048 + AnthropicApi.MaxTokens, defaulted.MaxTokens);
        Assert.Equal("""{"thinking":{"type":"enabled","budget_tokens":2048}}""", defaulted.RequestFields!.ToJsonString());
    }

    [Fact]
    public void NoStore_AddsItsFieldsToTheCallersOwn()
    {
        var options = new FlowOptions { RequestFields = new JsonObject { ["temperature"] = 0.2 } };

        FlowOptions noStore = Apis.Responses.WithReasoning(options, noStore: true, thinkingBudget: null);

        Assert.Equal("""{"temperature":0.2,"store":false,"include":["reasoning.encrypted_content"]}""", noStore.RequestFields!.ToJsonString());
        Assert.Equal("""{"temperature":0.2}""", options.RequestFields!.ToJsonString()); // the caller's object is not changed
    }

    [Fact]
    public async Task RequestFields_AreSentAsTheyAre_OnEveryRequest()
    {
        // ToolCall.cs's own loop, with a caller's field: the cassette expects it in both requests, so a request without it
        // would be a mismatch.
        Cassette recorded = Cassette.Load(Repo.Cassette("weather.json"));
        Interaction[] withField = [.. recorded.Interactions.Select(i => i with { RequestBody = With(i.RequestBody!, "temperature", 0.2) })];
        await using ReplayServer server = ReplayServer.Start(new Cassette("Written by a test.", withField));
        using var http = new HttpClient();

        string answer = await ToolCalling.RunAsync(new ChatClient(http, server.BaseUrl, null), Wire.Model, Cli.DefaultQuestion, ProgramTools.Create(),
            new FlowOptions { RequestFields = new JsonObject { ["temperature"] = 0.2 } });

        Assert.Equal("It's currently +18°C and partly cloudy in London.", answer);
        Assert.Equal(0, server.Mismatches);
    }

    static JsonNode With(JsonNode body, string field, JsonNode value)
    {
        JsonNode copy = body.DeepClone();
        copy[field] = value;
        return copy;
    }

    [Fact]
    public async Task Help_NamesBothOptions_AndTheirCassettes()
    {
        CliResult run = await App.RunAsync("--help");

        Assert.Contains("--no-store ", run.Stdout);
        Assert.Contains("responses-no-store.json", run.Stdout);
        Assert.Contains("--thinking TOKENS", run.Stdout);
        Assert.Contains("anthropic-thinking.json", run.Stdout);
    }

    [Fact]
    public void OptionsMd_HasARowForEachOption_AndTheCassettesEachReplaysOffline()
    {
        string options = File.ReadAllText(Path.Combine(Repo.Root, "docs", "options.md"));

        Assert.Contains("| `--no-store` |", options);
        Assert.Contains("| `--thinking TOKENS` |", options);
        foreach (string cassette in new[] { "responses-no-store.json", "responses-no-store+stream.json", "anthropic-thinking.json", "anthropic-thinking+stream.json" })
        {
            Assert.Contains($"(../cassettes/{cassette})", options);
            Assert.True(File.Exists(Repo.Cassette(cassette)), cassette);
        }
    }
}

/// <summary>A streamed Chat Completions reply's reasoning: joined into the message's field, kept even when empty,
/// never printed.</summary>
public class ReasoningStreamTests
{
    [Fact]
    public async Task ReasoningContentPieces_JoinIntoTheMessage_AndAreNotPrinted()
    {
        var printed = new StringWriter();
        JsonObject completion = await StreamWire.AssembleAsync(printed,
            StreamWire.Chunk(new JsonObject { ["role"] = "assistant", ["content"] = null, ["reasoning_content"] = "" }),
            StreamWire.Chunk(new JsonObject { ["content"] = null, ["reasoning_content"] = "First I look" }),
            StreamWire.Chunk(new JsonObject { ["content"] = null, ["reasoning_content"] = " it up." }),
            StreamWire.Chunk(new JsonObject { ["content"] = "Sunny.", ["reasoning_content"] = null }),
            StreamWire.Finish("stop"));

        JsonNode message = completion["choices"]![0]!["message"]!;
        Assert.Equal("First I look it up.", (string?)message["reasoning_content"]);
        Assert.Equal("Sunny.", (string?)message["content"]);
        Assert.Equal("Sunny." + Environment.NewLine, printed.ToString());
    }

    [Fact]
    public async Task AnEmptyReasoningContent_IsKept_ForDeepSeekWantsTheFieldBack()
    {
        JsonObject message = await StreamWire.MessageAsync(
            StreamWire.Chunk(new JsonObject { ["role"] = "assistant", ["reasoning_content"] = "" }),
            StreamWire.Calls(StreamWire.Fragment(0, "call_1", "get_weather", """{"city":"Oslo"}""")),
            StreamWire.Finish("tool_calls"));

        Assert.Equal("", (string?)message["reasoning_content"]);
    }

    [Fact]
    public async Task AReplyWithoutReasoning_HasNoReasoningField()
    {
        JsonObject message = await StreamWire.MessageAsync(StreamWire.Text("Sunny."), StreamWire.Finish("stop"));

        Assert.False(message.ContainsKey("reasoning_content"));
        Assert.False(message.ContainsKey("reasoning"));
    }

    [Fact]
    public async Task AServerThatNamesItReasoning_GetsItBackUnderThatName()
    {
        JsonObject message = await StreamWire.MessageAsync(
            StreamWire.Chunk(new JsonObject { ["role"] = "assistant", ["reasoning"] = "Look it" }),
            StreamWire.Chunk(new JsonObject { ["reasoning"] = " up." }),
            StreamWire.Text("Sunny."),
            StreamWire.Finish("stop"));

        Assert.Equal("Look it up.", (string?)message["reasoning"]);
        Assert.False(message.ContainsKey("reasoning_content"));
    }
}
