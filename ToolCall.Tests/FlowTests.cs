using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>The four steps, end to end against the replay server. The server checks every request against the
/// cassette and the API's history rules, so a flow that deviates fails with a 400.</summary>
public class FlowTests
{
    const string London = "It's currently +18°C and partly cloudy in London.";

    [Fact]
    public async Task Demo_WithNoKeyAndNoBaseUrl_ReplaysTheLondonCassetteOffline()
    {
        CliResult run = await App.RunAsync();

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(London + Environment.NewLine, run.Stdout);
        Assert.Contains("Replaying", run.Stderr);
        Assert.Contains("weather.json", run.Stderr);
    }

    [Fact]
    public async Task Demo_LogsStepsOneToFourInOrderOnStderr()
    {
        CliResult run = await App.RunAsync();

        ApiAssert.StepsInOrder(run.Stderr);
        Assert.Contains("get_weather({\"city\":\"London\"}) -> It's currently +18°C and partly cloudy in London", run.Stderr);
        Assert.DoesNotContain("Step", run.Stdout);
    }

    [Fact]
    public async Task TwoCallsInOneReply_AreBothAnsweredInTheCallsOrder()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--replay", Repo.Cassette("two-cities.json"), "--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        JsonArray history = SecondRequestMessages(dir.File("run.json"));
        Assert.Equal(["user", "assistant", "tool", "tool"], history.Select(m => (string)m!["role"]!));
        JsonArray calls = history[1]!["tool_calls"]!.AsArray();
        Assert.Equal((string)calls[0]!["id"]!, (string)history[2]!["tool_call_id"]!);
        Assert.Equal((string)calls[1]!["id"]!, (string)history[3]!["tool_call_id"]!);
        Assert.Equal(Wire.Weather("London"), (string)history[2]!["content"]!);
        Assert.Equal(Wire.Weather("Paris"), (string)history[3]!["content"]!);
    }

    [Fact]
    public async Task AssistantMessage_IsAppendedAsReceived_BeforeTheToolMessages()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--replay", Repo.Cassette("weather.json"), "--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        JsonNode received = Cassette.Load(Repo.Cassette("weather.json")).Interactions[0].ResponseBody!["choices"]![0]!["message"]!;
        JsonArray history = SecondRequestMessages(dir.File("run.json"));
        Assert.True(JsonNode.DeepEquals(received, history[1]), $"sent back: {history[1]}");
        Assert.Equal("tool", (string)history[2]!["role"]!);
    }

    [Fact]
    public async Task ArgumentsString_IsParsedBeforeTheFunctionRuns()
    {
        // Spaces, a key order of its own and an escaped character: only a JSON parser reads this right.
        const string arguments = """ { "city" : "T\u014dky\u014d" } """;
        JsonObject asked = Wire.AskForTools(Wire.Call("call_a", "get_weather", arguments));

        await AnswersAsync("Mild in Tōkyō.", Wire.OneRound(
            "Tokyo?", Wire.Completion(asked), asked, [Wire.ToolMessage("call_a", Wire.Weather("Tōkyō"))], "Mild in Tōkyō."));
    }

    [Fact]
    public async Task UnknownFunction_IsAnsweredWithAnErrorToolMessage_AndTheFlowGoesOn()
    {
        JsonObject asked = Wire.AskForTools(Wire.Call("call_t", "get_time", """{"city":"Paris"}"""));
        JsonObject error = Wire.ToolMessage("call_t", "Error: unknown function 'get_time'. Available functions: get_weather, get_forecast.");

        await AnswersAsync("I can only tell the weather.", Wire.OneRound(
            "Time in Paris?", Wire.Completion(asked), asked, [error], "I can only tell the weather."));
    }

    [Theory]
    [InlineData("""{"city": "Par""", "not valid JSON")]                  // cut off
    [InlineData("""{}""", "missing required argument 'city'")]            // required argument left out
    [InlineData("""{"city": 75}""", "argument 'city' must be a string")]  // wrong type
    public async Task BadArguments_AreAnsweredWithAnErrorToolMessageNamingTheFunction_AndTheFlowGoesOn(string arguments, string expected)
    {
        JsonObject asked = Wire.AskForTools(Wire.Call("call_b", "get_weather", arguments));
        string error = ToolRuns.Content("get_weather", arguments, ProgramTools.Create());
        Assert.StartsWith("Error: ", error);
        Assert.Contains("get_weather", error);
        Assert.Contains(expected, error);

        CliResult run = await AnswersAsync("Let me try again later.", Wire.OneRound(
            "Paris?", Wire.Completion(asked), asked, [Wire.ToolMessage("call_b", error)], "Let me try again later."));

        Assert.Contains($"-> {error}", run.Stderr);
    }

    [Fact]
    public async Task FunctionThatThrows_IsAnsweredWithAnErrorNamingIt_AndTheFlowGoesOn()
    {
        Tool[] tools = [new Tool("explode", "Always fails", new JsonObject { ["type"] = "object" }, _ => throw new InvalidOperationException("the sensor is offline"))];
        JsonObject asked = Wire.AskForTools(Wire.Call("call_x", "explode", "{}"));
        JsonObject Request(params JsonObject[] messages)
        {
            JsonObject request = Wire.Request(messages);
            request["tools"] = ToolCalling.ToolDefinitions(tools);
            return request;
        }
        Cassette cassette = Wire.Cassette(
            Wire.Exchange(Request(Wire.User("Boom?")), Wire.Completion(asked)),
            Wire.Exchange(
                Request(Wire.User("Boom?"), asked, Wire.ToolMessage("call_x", "Error: explode failed: the sensor is offline")),
                Wire.Completion(Wire.Text("The sensor is offline."))));
        await using ReplayServer server = ReplayServer.Start(cassette);
        using var http = new HttpClient();

        string answer = await ToolCalling.RunAsync(
            new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, StepLog.Silent), Wire.Model, "Boom?", tools, new FlowOptions(), CancellationToken.None);

        Assert.Equal("The sensor is offline.", answer);
    }

    [Fact]
    public async Task ModelAskingForToolsTwice_IsAnsweredInTwoRounds()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--replay", TwoRoundCassette(dir));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("London is mild, Paris too.", run.Stdout.Trim());
        Assert.Equal(2, run.Stderr.Split("Step 3:").Length - 1);
    }

    [Fact]
    public async Task RequestAfterTheLastRound_KeepsTheTools_AndAsksForAnAnswerWithToolChoiceNone()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--replay", RoundLimitCassette(dir, Wire.Text("London is mild; Paris I could not check.")), "--max-rounds", "1");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("London is mild; Paris I could not check.", run.Stdout.Trim());
        Assert.Contains("Step 4: POST ", run.Stderr);
        Assert.Contains("3 messages (user, assistant with 1 tool call, tool); tool_choice now \"none\": the last request (--max-rounds 1) asks for an answer", run.Stderr);
        Assert.Equal(1, run.Stderr.Split("Step 3:").Length - 1);
    }

    [Fact]
    public async Task ModelThatStillAsksForToolsAfterTheLastRound_StopsWithAnErrorThatNamesTheLimit()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--replay", RoundLimitCassette(dir, Wire.AskForTools(Wire.WeatherCall("call_p", "Paris"))), "--max-rounds", "1");

        Assert.Equal(1, run.ExitCode);
        Assert.Equal("", run.Stdout);
        string error = run.Stderr.TrimEnd().Split('\n').Last();
        Assert.Equal("error: the model still asks for tools after 1 round of tool calls (--max-rounds 1), even when asked to answer; " +
                     "stopping. Raise --max-rounds if the task needs more rounds.", error);
    }

    [Fact]
    public async Task TextReply_IsPrintedAsTheAnswer_WithoutRunningAnyTool()
    {
        CliResult run = await AnswersAsync("Hello! Ask me about the weather.", Wire.Cassette(
            Wire.Exchange(Wire.Request(Wire.User("Hello?")), Wire.Completion(Wire.Text("Hello! Ask me about the weather.")))));

        Assert.DoesNotContain("Step 3", run.Stderr);
    }

    [Fact]
    public async Task MessageWithNeitherTextNorToolCalls_FailsWithOneClearLine()
    {
        using var dir = new TempDir();
        JsonObject empty = new() { ["role"] = "assistant", ["content"] = null };
        string cassette = Wire.Cassette(Wire.Exchange(Wire.Request(Wire.User("Hello?")), Wire.Completion(empty))).Save(dir);

        CliResult run = await App.RunAsync("--replay", cassette);

        Assert.Equal(1, run.ExitCode);
        Assert.EndsWith("error: the model's message has neither text content nor tool_calls, so there is no answer to print.", run.Stderr.TrimEnd());
    }

    [Fact]
    public async Task ResponseWithoutChoices_FailsWithOneClearLine()
    {
        using var dir = new TempDir();
        JsonObject response = Wire.Completion(Wire.Text("unused"));
        response["choices"] = new JsonArray();
        string cassette = Wire.Cassette(Wire.Exchange(Wire.Request(Wire.User("Hello?")), response)).Save(dir);

        CliResult run = await App.RunAsync("--replay", cassette);

        Assert.Equal(1, run.ExitCode);
        Assert.Contains("error: the response has no choices", run.Stderr);
    }

    /// <summary>Replays the cassette through the command line and checks that the flow ends with `answer`.</summary>
    static async Task<CliResult> AnswersAsync(string answer, Cassette cassette)
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--replay", cassette.Save(dir));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(answer, run.Stdout.Trim());
        return run;
    }

    /// <summary>London first, then Paris in a second round, then the answer.</summary>
    static string TwoRoundCassette(TempDir dir)
    {
        JsonObject user = Wire.User("London, then Paris?");
        JsonObject first = Wire.AskForTools(Wire.WeatherCall("call_l", "London"));
        JsonObject second = Wire.AskForTools(Wire.WeatherCall("call_p", "Paris"));
        JsonObject londonResult = Wire.ToolMessage("call_l", Wire.Weather("London"));
        return Wire.Cassette(
            Wire.Exchange(Wire.Request(user), Wire.Completion(first)),
            Wire.Exchange(Wire.Request(user, first, londonResult), Wire.Completion(second)),
            Wire.Exchange(
                Wire.Request(user, first, londonResult, second, Wire.ToolMessage("call_p", Wire.Weather("Paris"))),
                Wire.Completion(Wire.Text("London is mild, Paris too.")))).Save(dir);
    }

    /// <summary>London in round 1 of 1 (--max-rounds 1); the second request, which asks for an answer (tool_choice
    /// "none"), gets `reply`.</summary>
    static string RoundLimitCassette(TempDir dir, JsonObject reply)
    {
        JsonObject user = Wire.User("London, then Paris?");
        JsonObject first = Wire.AskForTools(Wire.WeatherCall("call_l", "London"));
        JsonObject last = Wire.Request(user, first, Wire.ToolMessage("call_l", Wire.Weather("London")));
        last["tool_choice"] = "none";
        return Wire.Cassette(Wire.Exchange(Wire.Request(user), Wire.Completion(first)), Wire.Exchange(last, Wire.Completion(reply))).Save(dir);
    }

    /// <summary>The messages of the second request in a recorded run: the history that steps 3 and 4 built.</summary>
    static JsonArray SecondRequestMessages(string recording) =>
        Cassette.Load(recording).Interactions[1].RequestBody!["messages"]!.AsArray();
}

/// <summary>
/// OpenAI-compatible servers differ from the API. Each quirk the client accepts is a bundled, hand-written cassette
/// in cassettes/quirks/ (its source says where the quirk was seen), replayed here through the whole program.
/// </summary>
public class ProviderQuirkTests
{
    const string London = "It's currently +18°C and partly cloudy in London.";

    [Fact]
    public async Task ArgumentsSentAsAnObject_AreAccepted_AndSentBackAsAJsonString()
    {
        using var dir = new TempDir();
        CliResult run = await ReplayAsync("arguments-as-object.json", dir);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(London, run.Stdout.Trim());
        // The replay server's history rules reject an object here, as the API does; the recording shows the string.
        JsonNode arguments = SentBack(dir)[1]!["tool_calls"]![0]!["function"]!["arguments"]!;
        Assert.Equal("""{"city":"London"}""", (string)arguments!);
    }

    [Fact]
    public async Task MissingEmptyOrRepeatedCallIds_GetGeneratedIds_UsedInBothTheAssistantAndTheToolMessage()
    {
        using var dir = new TempDir();
        CliResult run = await ReplayAsync("missing-call-ids.json", dir);

        Assert.True(run.ExitCode == 0, run.ToString());
        JsonArray history = SentBack(dir);
        string[] ids = [.. history[1]!["tool_calls"]!.AsArray().Select(call => (string)call!["id"]!)];
        Assert.Equal(["call_1_0", "call_1_1", "call_dup", "call_1_3"], ids);
        Assert.Equal(ids, history.Skip(2).Select(message => (string)message!["tool_call_id"]!));
    }

    [Theory]
    [InlineData("finish-reason-stop.json", "stop")]
    [InlineData("finish-reason-null.json", "missing")]
    [InlineData("finish-reason-missing.json", "missing")]
    public async Task ToolCallsAreDecidedByTheirPresence_NotByFinishReason(string cassette, string logged)
    {
        CliResult run = await ReplayAsync(cassette);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains($"Step 2: the model asks for 1 tool call (finish_reason \"{logged}\"", run.Stderr);
        Assert.Contains("Step 3: get_weather(", run.Stderr);
        Assert.Equal(London, run.Stdout.Trim());
    }

    [Fact]
    public async Task EmptyToolCallsArray_IsATextAnswer()
    {
        CliResult run = await ReplayAsync("empty-tool-calls.json");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("I can tell you the current weather or a forecast for any city.", run.Stdout.Trim());
        Assert.DoesNotContain("Step 3", run.Stderr);
    }

    [Fact]
    public async Task EmptyContentBesideToolCalls_IsSentBackAsReceived()
    {
        using var dir = new TempDir();
        CliResult run = await ReplayAsync("empty-content.json", dir);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("", (string)SentBack(dir)[1]!["content"]!);
    }

    [Fact]
    public async Task UnknownExtraFields_AreIgnored_AndTheAssistantMessageGoesBackAsReceived()
    {
        CliResult run = await ReplayAsync("extra-fields.json");

        Assert.True(run.ExitCode == 0, run.ToString()); // the second request matched, the tool call's "index" included
        Assert.Equal(London, run.Stdout.Trim());
    }

    [Fact]
    public async Task Refusal_IsPrintedAsTheAnswer_AndSaidSoOnStderr()
    {
        CliResult run = await ReplayAsync("refusal.json");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("I'm sorry, but I can't help with that.", run.Stdout.Trim());
        Assert.Contains("The model refused; its refusal is printed as the answer.", run.Stderr);
    }

    [Fact]
    public async Task StreamEndingAfterItsFinishReasonWithoutDone_IsAWholeReply_AndItsCallRuns()
    {
        using var dir = new TempDir();
        CliResult run = await ReplayAsync("stream-without-done.json", dir, "--stream");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(London, run.Stdout.Trim());
        Assert.DoesNotContain(Cassette.Load(dir.File("run.json")).Interactions[0].ResponseEvents!, e => e?.GetValueKind() == JsonValueKind.String);
        Assert.Equal("""{"city":"London"}""", (string)SentBack(dir)[1]!["tool_calls"]![0]!["function"]!["arguments"]!);
    }

    [Fact]
    public async Task CumulativeArgumentFragments_EachReplaceWhatCameBefore()
    {
        using var dir = new TempDir();
        CliResult run = await ReplayAsync("cumulative-arguments.json", dir, "--stream");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(London, run.Stdout.Trim());
        Assert.Equal("""{"city":"London"}""", (string)SentBack(dir)[1]!["tool_calls"]![0]!["function"]!["arguments"]!);
    }

    [Fact]
    public async Task ArgumentsThatBreakTheSchema_AreAnsweredInTheToolMessage_AndTheFlowGoesOn()
    {
        using var dir = new TempDir();
        CliResult run = await ReplayAsync("bad-arguments.json", dir);

        Assert.True(run.ExitCode == 0, run.ToString());
        JsonArray history = Cassette.Load(dir.File("run.json")).Interactions[2].RequestBody!["messages"]!.AsArray();
        Assert.Equal("Error: get_forecast: argument 'days' must be an integer, not a number.", (string)history[2]!["content"]!);
        Assert.Equal("""Error: get_forecast: argument 'unit' must be one of ["celsius","fahrenheit"], not "kelvin".""", (string)history[4]!["content"]!);
        Assert.StartsWith("I can give the forecast for Oslo in Celsius or Fahrenheit", run.Stdout);
    }

    [Fact]
    public async Task StreamedResponsesRefusal_IsShownAsItArrives_AsTheAnswer()
    {
        CliResult run = await ReplayAsync("responses-refusal-stream.json", null, "--api", "responses", "--stream");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("I'm sorry, but I can't help with that." + Environment.NewLine, run.Stdout);
        Assert.Contains("The model refused; its refusal is printed as the answer.", run.Stderr);
    }

    public static TheoryData<string> QuirkCassettes() =>
        [.. Directory.GetFiles(Path.Combine(Repo.Root, "cassettes", "quirks"), "*.json").Select(path => Path.GetFileName(path)).Order()];

    [Theory]
    [MemberData(nameof(QuirkCassettes))]
    public void EveryQuirkCassette_HasATestHere(string cassette) =>
        Assert.Contains($"\"{cassette}\"", File.ReadAllText(Path.Combine(Repo.Root, "ToolCall.Tests", "FlowTests.cs")));

    /// <summary>Replays cassettes/quirks/NAME with these options, recording into `dir` when one is given.</summary>
    static Task<CliResult> ReplayAsync(string name, TempDir? dir = null, params string[] options) =>
        dir is null
            ? App.RunAsync(["--replay", Repo.Cassette(Path.Combine("quirks", name)), .. options])
            : App.RunAsync(["--replay", Repo.Cassette(Path.Combine("quirks", name)), "--record", dir.File("run.json"), .. options]);

    /// <summary>The messages of the second request of the recorded run: the history that steps 3 and 4 built.</summary>
    static JsonArray SentBack(TempDir dir) => Cassette.Load(dir.File("run.json")).Interactions[1].RequestBody!["messages"]!.AsArray();
}
