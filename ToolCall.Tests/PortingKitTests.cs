using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit;

namespace ToolCall.Tests;

/// <summary>PROTOCOL.md stays true: each JSON block it quotes from a cassette equals that part of the cassette, and
/// each 400 the server sends is written in it word for word.</summary>
public partial class ProtocolDocTests
{
    static readonly string ProtocolMd = File.ReadAllText(Path.Combine(Repo.Root, "PROTOCOL.md"));

    // <!-- cassette: FILE PATH --> then, after blank lines, a ```json block.
    [GeneratedRegex(@"^<!-- cassette: (?<file>\S+) (?<path>\S+) -->\s*```json\n(?<json>.*?)\n```", RegexOptions.Singleline | RegexOptions.Multiline)]
    private static partial Regex QuotedBlock();

    public static TheoryData<string, string> QuotedBlocks()
    {
        var blocks = new TheoryData<string, string>();
        foreach (Match block in QuotedBlock().Matches(ProtocolMd))
            blocks.Add(block.Groups["file"].Value, block.Groups["path"].Value);
        return blocks;
    }

    [Theory]
    [MemberData(nameof(QuotedBlocks))]
    public void QuotedJsonBlock_EqualsThePartOfTheCassetteItQuotes(string file, string path)
    {
        Match block = QuotedBlock().Matches(ProtocolMd).First(m => m.Groups["file"].Value == file && m.Groups["path"].Value == path);
        JsonNode? quoted = JsonNode.Parse(block.Groups["json"].Value);
        JsonNode? cassette = At(JsonNode.Parse(File.ReadAllText(Repo.Cassette(file))), path);

        Assert.True(JsonNode.DeepEquals(cassette, quoted), $"PROTOCOL.md's block for {file} {path} differs from the cassette:\n{cassette?.ToJsonString()}");
    }

    [Fact]
    public void EveryCassetteMarker_IsFollowedByTheJsonBlockItDescribes()
    {
        int markers = Regex.Matches(ProtocolMd, "^<!-- cassette:", RegexOptions.Multiline).Count;

        Assert.Equal(markers, QuotedBlock().Matches(ProtocolMd).Count);
    }

    [Theory]
    [InlineData("two-cities.json interactions[0].request.body")]                        // step 1
    [InlineData("two-cities.json interactions[0].response.body")]                       // step 2
    [InlineData("two-cities.json interactions[1].request.body.messages")]               // step 3
    [InlineData("two-cities.json interactions[1].response.body")]                       // step 4
    [InlineData("responses-two-cities.json interactions[0].request.body")]
    [InlineData("responses-two-cities.json interactions[0].response.body")]
    [InlineData("responses-two-cities.json interactions[1].request.body.input")]
    [InlineData("responses-two-cities.json interactions[1].response.body.output")]
    [InlineData("anthropic-two-cities.json interactions[0].request.body")]
    [InlineData("anthropic-two-cities.json interactions[0].response.body")]
    [InlineData("anthropic-two-cities.json interactions[1].request.body.messages")]
    [InlineData("anthropic-two-cities.json interactions[1].response.body.content")]
    [InlineData("weather-stream.json interactions[0].response.events")]                 // each API's stream
    [InlineData("responses-weather-stream.json interactions[0].response.events[2]")]
    [InlineData("anthropic-weather-stream.json interactions[0].response.events")]
    public void TheFourSteps_AreQuotedFromTheTwoCityCassette_OfEachApi(string quote) =>
        Assert.Contains($"<!-- cassette: {quote} -->", ProtocolMd);

    [Fact]
    public void AChangedCassette_WouldFailTheCheck()
    {
        // The comparison the theory makes, on a block that is off by one character.
        JsonNode? cassette = At(JsonNode.Parse(File.ReadAllText(Repo.Cassette("two-cities.json"))), "interactions[1].response.body.choices[0].message.content");

        Assert.False(JsonNode.DeepEquals(cassette, JsonValue.Create("Right now it's +18°C and partly cloudy in both London and Paris!")));
    }

    /// <summary>A rule the server enforces, and a request that breaks it, as PROTOCOL.md's tables show them.</summary>
    static readonly Dictionary<string, Func<JsonObject>> Violations = new()
    {
        ["tool_choice without tools"] = () => Without("tools", With("tool_choice", "auto")),
        ["parallel_tool_calls without tools"] = () => Without("tools", With("parallel_tool_calls", false)),
        ["129 tools"] = () => With("tools", new JsonArray([.. Enumerable.Range(0, 129).Select(i => (JsonNode)new JsonObject
        {
            ["type"] = "function",
            ["function"] = new JsonObject { ["name"] = $"tool_{i}", ["parameters"] = new JsonObject { ["type"] = "object" } },
        })])),
        ["a function without a name"] = () => Tool(0, function => function.Remove("name")),
        ["a name too long"] = () => Tool(0, function => function["name"] = new string('a', 65)),
        ["a name off the pattern"] = () => Tool(0, function => function["name"] = "get.weather"),
        ["two functions with one name"] = () => Tool(1, function => function["name"] = "get_weather"),
        ["tool_choice a bare name"] = () => With("tool_choice", "get_weather"),
        ["tool_choice a function not in tools"] = () => With("tool_choice", JsonNode.Parse("""{"type":"function","function":{"name":"get_time"}}""")),
        ["stream_options without stream"] = () => With("stream_options", new JsonObject { ["include_usage"] = true }),
        ["strict without additionalProperties"] = () => Tool(1, function => function["strict"] = true),
        ["strict with an optional property"] = () => Tool(1, function =>
        {
            function["strict"] = true;
            function["parameters"]!["additionalProperties"] = false;
        }),
        ["strict with an extra required key"] = () => Tool(1, function =>
        {
            function["strict"] = true;
            function["parameters"] = StrictSchema.Rewrite(function["parameters"]!.AsObject());
            function["parameters"]!["required"]!.AsArray().Add("when");
        }),
        ["no messages"] = () => Without("messages", Wire.Request(Wire.User("x"))),
        ["a tool message first"] = () => Wire.Request(Wire.User("Weather?"), Wire.ToolMessage("call_1", "x")),
        ["a tool message without its id"] = () =>
        {
            JsonObject request = Wire.Request(Wire.User("Weather?"), Wire.AskForTools(Wire.WeatherCall("call_1", "London")), Wire.ToolMessage("call_1", "x"));
            request["messages"]![2]!.AsObject().Remove("tool_call_id");
            return request;
        },
        ["a tool message for a call not made"] = () => Wire.Request(
            Wire.User("Weather?"), Asked(), Wire.ToolMessage("call_1", "x"), Wire.ToolMessage("call_9", "y")),
        ["a call unanswered"] = () => Wire.Request(Wire.User("Weather?"), Asked(), Wire.ToolMessage("call_1", "x")),
        ["empty tool_calls"] = () => Wire.Request(Wire.User("Weather?"), Wire.AskForTools()),
        ["arguments as an object"] = () => Wire.Request(
            Wire.User("Weather?"), Wire.AskForTools(Wire.Call("call_1", "get_weather", new JsonObject { ["city"] = "London" })), Wire.ToolMessage("call_1", "x")),
    };

    public static TheoryData<string> RuleNames() => [.. Violations.Keys];

    [Theory]
    [MemberData(nameof(RuleNames))]
    public void EveryRuleMessageOfTheServer_IsInProtocolMd_WithItsParamAndCode(string rule)
    {
        JsonObject request = Violations[rule]();
        JsonObject error = (RequestRules.FirstViolation(request) ?? HistoryRules.FirstViolation(request))?["error"]?.AsObject()
            ?? throw new InvalidOperationException($"the request for '{rule}' breaks no rule");

        AssertRowWithParamAndCode("Errors, the rules, and their 400s", error);
    }

    /// <summary>A table row of that section of PROTOCOL.md with the error's message, `param` and `code`.</summary>
    static void AssertRowWithParamAndCode(string section, JsonObject error)
    {
        string message = (string)error["message"]!;
        string? row = Row(section, message);

        Assert.True(row is not null, $"PROTOCOL.md's section \"{section}\" has no table row with the message: {message}");
        Assert.Contains($"| `{(string)error["param"]!}` |", row);
        Assert.EndsWith(error["code"] is JsonNode code ? $"| `{(string)code!}` |" : "| null |", row);
    }

    /// <summary>The table row of a section ("## {section}", up to the next "## ") that holds the message as a cell.</summary>
    static string? Row(string section, string message)
    {
        int start = ProtocolMd.IndexOf($"\n## {section}\n", StringComparison.Ordinal);
        Assert.True(start >= 0, $"PROTOCOL.md has no section \"{section}\"");
        int end = ProtocolMd.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        return ProtocolMd[start..(end < 0 ? ProtocolMd.Length : end)].Split('\n')
            .FirstOrDefault(line => line.StartsWith('|') && line.Contains($" {message} |", StringComparison.Ordinal));
    }

    /// <summary>A Responses API request that breaks a rule, as PROTOCOL.md's table shows it: the last request of
    /// responses-weather.json (user, function_call, function_call_output), changed.</summary>
    static readonly Dictionary<string, Func<JsonObject>> ResponsesViolations = new()
    {
        ["a function without a name"] = () => Responses(request => request["tools"]![0]!.AsObject().Remove("name")),
        ["a name too long"] = () => Responses(request => request["tools"]![0]!["name"] = new string('a', 65)),
        ["a name off the pattern"] = () => Responses(request => request["tools"]![0]!["name"] = "get.weather"),
        ["two functions with one name"] = () => Responses(request => request["tools"]![1]!["name"] = "get_weather"),
        ["a forced function in the Chat Completions form"] = () => Responses(request =>
            request["tool_choice"] = JsonNode.Parse("""{"type":"function","function":{"name":"get_weather"}}""")),
        ["a forced function not in tools"] = () => Responses(request => request["tool_choice"] = JsonNode.Parse("""{"type":"function","name":"get_time"}""")),
        ["strict without additionalProperties"] = () => Responses(request => request["tools"]![1]!["strict"] = true),
        ["a call without its call_id"] = () => Responses(request => request["input"]![1]!.AsObject().Remove("call_id")),
        ["arguments as an object"] = () => Responses(request => request["input"]![1]!["arguments"] = new JsonObject { ["city"] = "London" }),
        ["an output for a call not made"] = () => Responses(request => request["input"]![2]!["call_id"] = "call_9"),
        ["a call unanswered"] = () => Responses(request =>
        {
            JsonNode second = request["input"]![1]!.DeepClone();
            second["call_id"] = "call_2";
            request["input"]!.AsArray().Insert(2, second);
        }),
    };

    public static TheoryData<string> ResponsesRuleNames() => [.. ResponsesViolations.Keys];

    [Theory]
    [MemberData(nameof(ResponsesRuleNames))]
    public void EveryResponsesRuleOfTheServer_IsInProtocolMd_WithItsParamAndCode(string rule)
    {
        JsonObject error = ResponsesRules.FirstViolation(ResponsesViolations[rule]())?["error"]?.AsObject()
            ?? throw new InvalidOperationException($"the request for '{rule}' breaks no rule");

        AssertRowWithParamAndCode("The Responses API", error);
    }

    /// <summary>A Messages API request that breaks a rule, as PROTOCOL.md's table shows it: the last request of
    /// anthropic-weather.json (user, assistant with a tool_use, user with its tool_result), changed.</summary>
    static readonly Dictionary<string, Func<JsonObject>> AnthropicViolations = new()
    {
        ["no anthropic-version header"] = () => Messages(_ => { }),
        ["no max_tokens"] = () => Messages(request => request.Remove("max_tokens")),
        ["no messages"] = () => Messages(request => request.Remove("messages")),
        ["a tool in the OpenAI form"] = () => Messages(request => request["tools"]![0] = ToolCalling.ToolDefinitions(ProgramTools.Create())[0]!.DeepClone()),
        ["a tool without a name"] = () => Messages(request => request["tools"]![0]!.AsObject().Remove("name")),
        ["a name off the pattern"] = () => Messages(request => request["tools"]![0]!["name"] = "get.weather"),
        ["a tool without input_schema"] = () => Messages(request =>
        {
            JsonObject tool = request["tools"]![0]!.AsObject();
            tool["parameters"] = tool["input_schema"]!.DeepClone();
            tool.Remove("input_schema");
        }),
        ["two tools with one name"] = () => Messages(request => request["tools"]![1]!["name"] = "get_weather"),
        ["tool_choice as a string"] = () => Messages(request => request["tool_choice"] = "auto"),
        ["a forced tool not in tools"] = () => Messages(request => request["tool_choice"] = JsonNode.Parse("""{"type":"tool","name":"get_time"}""")),
        ["input as a string"] = () => Messages(request => request["messages"]![1]!["content"]![0]!["input"] = """{"city":"London"}"""),
        ["a result for a call not made"] = () => Messages(request =>
            request["messages"]![2]!["content"]!.AsArray().Add(JsonNode.Parse("""{"type":"tool_result","tool_use_id":"toolu_9","content":"x"}"""))),
        ["a call unanswered"] = () => Messages(request =>
            request["messages"]![1]!["content"]!.AsArray().Add(JsonNode.Parse("""{"type":"tool_use","id":"toolu_2","name":"get_weather","input":{"city":"Paris"}}"""))),
        ["text before the results"] = () => Messages(request =>
        {
            request["messages"]![1]!["content"]!.AsArray().Add(JsonNode.Parse("""{"type":"tool_use","id":"toolu_2","name":"get_weather","input":{"city":"Paris"}}"""));
            JsonArray results = request["messages"]![2]!["content"]!.AsArray();
            results.Insert(0, JsonNode.Parse("""{"type":"text","text":"Here you are."}"""));
            results.Add(JsonNode.Parse("""{"type":"tool_result","tool_use_id":"toolu_2","content":"y"}"""));
        }),
    };

    public static TheoryData<string> AnthropicRuleNames() => [.. AnthropicViolations.Keys];

    [Theory]
    [MemberData(nameof(AnthropicRuleNames))]
    public void EveryAnthropicRuleOfTheServer_IsInProtocolMd(string rule)
    {
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        if (rule != "no anthropic-version header")
            headers["anthropic-version"] = "2023-06-01";
        JsonObject error = AnthropicRules.FirstViolation(AnthropicViolations[rule](), headers)?["error"]?.AsObject()
            ?? throw new InvalidOperationException($"the request for '{rule}' breaks no rule");
        Assert.Equal("invalid_request_error", (string?)error["type"]);
        string message = (string)error["message"]!;

        string? row = Row("The Anthropic Messages API", message);

        Assert.True(row is not null, $"PROTOCOL.md's Messages API section has no table row with the message: {message}");
        Assert.EndsWith($" {message} |", row);
    }

    /// <summary>What the server answers each request of a rules table's dictionary, by table.</summary>
    static IEnumerable<string> MessagesOf(string table) => table switch
    {
        "The request rules" => Violations.Values.Select(v => RequestRules.FirstViolation(v())).OfType<JsonObject>().Select(Message),
        "The history rules" => Violations.Values.Where(v => RequestRules.FirstViolation(v()) is null).Select(v => Message(HistoryRules.FirstViolation(v()))),
        "The Responses API's rules and their 400s" => ResponsesViolations.Values.Select(v => Message(ResponsesRules.FirstViolation(v()))),
        _ => AnthropicViolations.Select(v => Message(AnthropicRules.FirstViolation(v.Value(), v.Key == "no anthropic-version header"
            ? new Dictionary<string, string>()
            : new Dictionary<string, string> { ["anthropic-version"] = "2023-06-01" }))),
    };

    static string Message(JsonObject? error) => (string?)error?["error"]?["message"] ?? "(no rule broken)";

    [Theory]
    [InlineData("The request rules")]
    [InlineData("The history rules")]
    [InlineData("The Responses API's rules and their 400s")]
    [InlineData("The Messages API's rules and their 400s")]
    public void EveryRowOfARulesTable_IsWhatTheServerAnswersOneOfItsRequests(string table)
    {
        string[] messages = [.. MessagesOf(table)];
        int start = ProtocolMd.IndexOf($"\n### {table}\n", StringComparison.Ordinal);
        string[] rows = [.. ProtocolMd[start..].Split('\n').SkipWhile(line => !line.StartsWith('|')).TakeWhile(line => line.StartsWith('|')).Skip(2)];

        Assert.True(start >= 0, $"PROTOCOL.md has no table \"{table}\"");
        Assert.Equal(rows.Length, messages.Distinct().Count());
        Assert.All(rows, row => Assert.Contains(messages, message => row.Contains($" {message} |", StringComparison.Ordinal)));
    }

    static JsonObject Responses(Action<JsonObject> change) => Changed("responses-weather.json", change);

    static JsonObject Messages(Action<JsonObject> change) => Changed("anthropic-weather.json", change);

    static JsonObject Changed(string cassette, Action<JsonObject> change)
    {
        JsonObject request = Cassette.Load(Repo.Cassette(cassette)).Interactions[^1].RequestBody!.DeepClone().AsObject();
        change(request);
        return request;
    }

    [Fact]
    public async Task TheServersOtherAnswers_AreInProtocolMd()
    {
        await using ReplayServer server = ReplayServer.Start(Cassette.Load(Repo.Cassette("weather.json")));
        JsonObject request = Wire.Request(Wire.User("Weather?"));

        (_, JsonNode? unknownUrl) = await Http.PostAsync(server.BaseUrl.Replace("/v1", "") + "/chat/completions", request);
        (_, JsonNode? notJson) = await Http.PostTextAsync(server.BaseUrl + "/chat/completions", "{");
        (_, JsonNode? notAnObject) = await Http.PostTextAsync(server.BaseUrl + "/chat/completions", "[]");

        foreach (JsonNode? body in new[] { unknownUrl, notJson, notAnObject })
            Assert.Contains($" {(string)body!["error"]!["message"]!} |", ProtocolMd);
    }

    static JsonObject Asked() => Wire.AskForTools(Wire.WeatherCall("call_1", "London"), Wire.WeatherCall("call_2", "Paris"));

    static JsonObject With(string field, JsonNode? value)
    {
        JsonObject request = Wire.Request(Wire.User("Weather?"));
        request[field] = value;
        return request;
    }

    static JsonObject Without(string field, JsonObject request)
    {
        request.Remove(field);
        return request;
    }

    static JsonObject Tool(int index, Action<JsonObject> change)
    {
        JsonObject request = Wire.Request(Wire.User("Weather?"));
        change(request["tools"]![index]!["function"]!.AsObject());
        return request;
    }

    /// <summary>The node at a path such as interactions[1].request.body.messages.</summary>
    static JsonNode? At(JsonNode? node, string path)
    {
        foreach (Match step in Regex.Matches(path, @"(?<name>[^.\[\]]+)|\[(?<index>\d+)\]"))
            node = step.Groups["name"].Success ? node?[step.Groups["name"].Value] : node?[int.Parse(step.Groups["index"].Value)];
        return node;
    }
}

/// <summary>--diagram: the run as a Mermaid sequence diagram after the answer; the README shows the two-city one.</summary>
public class DiagramTests
{
    const string TwoCitiesAnswer = "Right now it's +18°C and partly cloudy in both London and Paris.";

    [Fact]
    public async Task WithoutDiagram_TheAnswerIsAloneOnStdout()
    {
        CliResult run = await App.RunAsync("--replay", Repo.Cassette("two-cities.json"));

        Assert.Equal(TwoCitiesAnswer + Environment.NewLine, run.Stdout);
    }

    [Fact]
    public async Task Diagram_FollowsTheAnswerOnStdout_AsAMermaidBlock()
    {
        CliResult run = await App.RunAsync("--replay", Repo.Cassette("two-cities.json"), "--diagram");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.StartsWith(TwoCitiesAnswer + Environment.NewLine + "\n```mermaid\nsequenceDiagram\n", run.Stdout);
        Assert.EndsWith("```\n", run.Stdout);
        Assert.DoesNotContain("mermaid", run.Stderr);
    }

    [Fact]
    public async Task ReadmeDiagram_IsWhatDiagramPrintsForTheTwoCityCassette()
    {
        CliResult run = await App.RunAsync("--replay", Repo.Cassette("two-cities.json"), "--diagram");
        string readme = File.ReadAllText(Path.Combine(Repo.Root, "README.md")).ReplaceLineEndings("\n");

        Assert.Contains(MermaidBlock(run.Stdout), readme);
    }

    [Fact]
    public async Task Diagram_ShowsEachRequestReplyCallAndResult_OfEveryRound()
    {
        CliResult run = await App.RunAsync("--no-parallel", "--diagram");

        string diagram = MermaidBlock(run.Stdout);
        Assert.Equal(3, Regex.Matches(diagram, "client->>model: POST /chat/completions").Count);
        Assert.Contains("    model-->>client: calls get_weather({\"city\":\"London\"})\n", diagram);
        Assert.Contains("    model-->>client: calls get_weather({\"city\":\"Paris\"})\n", diagram);
        Assert.Contains("    tools-->>client: It's currently +18°C and partly cloudy in Paris\n", diagram);
        Assert.Contains("messages [user, assistant with 1 tool call, tool, assistant with 1 tool call, tool], parallel_tool_calls false\n", diagram);
        Assert.EndsWith($"    client->>user: {TwoCitiesAnswer}\n```\n", diagram);
    }

    [Theory]
    [InlineData("responses", "POST /responses: input [user, function_call, function_call_output]")]
    [InlineData("anthropic", "POST /messages: messages [user, assistant with 1 tool_use, user with 1 tool_result]")]
    public async Task Diagram_ReadsTheHistoryOfEachApi(string api, string secondRequest)
    {
        CliResult run = await App.RunAsync("--api", api, "--diagram");

        string diagram = MermaidBlock(run.Stdout);
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("    user->>client: What's the weather in London right now?\n", diagram);
        Assert.Contains("    model-->>client: calls get_weather({\"city\":\"London\"})\n", diagram);
        Assert.Contains("    tools-->>client: It's currently +18°C and partly cloudy in London\n", diagram);
        Assert.Contains($"    client->>model: {secondRequest}\n", diagram);
    }

    [Fact]
    public async Task Diagram_ShowsEachRequestsOwnToolChoice()
    {
        CliResult run = await App.RunAsync("--tool-choice", "required", "--diagram");

        string diagram = MermaidBlock(run.Stdout);
        Assert.Contains("tools [get_weather, get_forecast], tool_choice \"required\"\n", diagram);
        Assert.Contains("messages [user, assistant with 1 tool call, tool], tool_choice \"auto\"\n", diagram);
    }

    [Fact]
    public async Task Diagram_ShowsAFailedAttempt_AndItsRetry()
    {
        CliResult run = await App.RunAsync("--replay", Repo.Cassette("faults/retry-then-answer.json"), "--diagram");

        string diagram = MermaidBlock(run.Stdout);
        Assert.Contains("    model--xclient: HTTP 429: Rate limit reached", diagram);
        Assert.Contains("    model--xclient: HTTP 503: ", diagram);
        Assert.Equal(2, Regex.Matches(diagram, "Note over client,model: the same request again \\(a retry\\)").Count);
        Assert.Single(Regex.Matches(diagram, "Step 1:"));
        Assert.Single(Regex.Matches(diagram, "Step 2:"));
    }

    [Fact]
    public void DiagramText_EscapesWhatMermaidWouldRead_AndCutsLongText()
    {
        JsonObject request = Wire.Request(Wire.User("a;b #1 <br> c"));
        string diagram = RunDiagram.Mermaid(Apis.Chat, [Wire.Exchange(request, Wire.Completion(Wire.Text("x")))], new string('z', 150));

        Assert.Contains("    user->>client: a#59;b #35;1 #60;br#62; c\n", diagram);
        Assert.Contains($"    client->>user: {new string('z', 100)}…\n", diagram);
    }

    /// <summary>The ```mermaid block in a text, fences included.</summary>
    static string MermaidBlock(string text)
    {
        int start = text.IndexOf("```mermaid\n", StringComparison.Ordinal);
        Assert.True(start >= 0, "no ```mermaid block in:\n" + text);
        int end = text.IndexOf("\n```\n", start, StringComparison.Ordinal);
        return text[start..(end + 5)];
    }
}

/// <summary>conformance/cases.json states what each cassette holds: its API, its question and what a client prints.</summary>
public class ConformanceCaseTests
{
    public static TheoryData<string> CaseNames() =>
        [.. Cases().Select(c => (string)c["name"]!)];

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void ConformanceCase_AsksTheCassettesQuestion_AndExpectsWhatItsRepliesPrint(string name)
    {
        JsonObject @case = Cases().Single(c => (string)c["name"]! == name);
        Cassette cassette = Cassette.Load(Path.Combine(Repo.Root, (string)@case["cassette"]!));

        Api api = Api.Named((string?)@case["api"] ?? "chat"); // left out, a case is for Chat Completions

        Assert.Equal(cassette.FirstQuestion(api.HistoryField), (string)@case["question"]!);
        Assert.Equal(Printed(cassette), (string)@case["answer"]!);
        Assert.Equal(JsonValueKind.Array, @case["history"]!.GetValueKind());
        bool streamed = @case["args"]!.AsArray().Any(a => (string)a! == "--stream");
        Assert.All(cassette.Interactions.Where(i => i.Status == 200), i => Assert.Equal(streamed, i.ResponseEvents is not null));
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void ConformanceCase_NamesTheApiItsCassetteSpeaks(string name)
    {
        JsonObject @case = Cases().Single(c => (string)c["name"]! == name);
        Cassette cassette = Cassette.Load(Path.Combine(Repo.Root, (string)@case["cassette"]!));
        string api = (string?)@case["api"] ?? "chat"; // left out, a case is for Chat Completions

        Assert.All(cassette.Interactions, interaction => Assert.Equal(Api.Named(api).Path, interaction.Path));
    }

    [Fact]
    public void ConformanceCases_CoverEveryApi_JsonAndStreamed()
    {
        string[] kinds = [.. Cases().Select(c => $"{(string?)c["api"] ?? "chat"}{(c["args"]!.AsArray().Any(a => (string)a! == "--stream") ? " streamed" : "")}")];

        Assert.Equal(["anthropic", "anthropic streamed", "chat", "chat streamed", "responses", "responses streamed"], kinds.Distinct().Order());
    }

    [Fact]
    public void ConformanceCases_CoverRetriesAndTheLoopsOptions_OnEveryApi()
    {
        // Each API's cases include a retried 429 and 5xx (a cassette in faults/) and each option that changes the loop.
        foreach (string api in new[] { "chat", "responses", "anthropic" })
        {
            JsonObject[] cases = [.. Cases().Where(c => ((string?)c["api"] ?? "chat") == api)];
            string retries = $"cassettes/faults/{(api == "chat" ? "" : api + "-")}retry-then-answer.json";
            Assert.Contains(cases, c => (string)c["cassette"]! == retries);
            foreach (string option in new[] { "--no-parallel", "--tool-choice", "--max-rounds" })
                Assert.Contains(cases, c => c["args"]!.AsArray().Any(a => (string)a! == option));
        }
    }

    [Fact]
    public void ConformanceCases_UseOnlyTheOptionsTheClientContractDescribes()
    {
        string readme = File.ReadAllText(Path.Combine(Repo.Root, "conformance", "README.md"));
        string contract = readme[readme.IndexOf("## The client contract", StringComparison.Ordinal)..readme.IndexOf("## The tags", StringComparison.Ordinal)];

        Assert.All(Cases().SelectMany(c => c["args"]!.AsArray()).Select(a => (string)a!).Where(a => a.StartsWith("--", StringComparison.Ordinal)).Distinct(),
            option => Assert.Contains($"- `{option}", contract));
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void ConformanceCase_IsTaggedQuirk_ExactlyWhenItsCassetteIsAQuirk(string name)
    {
        JsonObject @case = Cases().Single(c => (string)c["name"]! == name);

        Assert.Equal(((string)@case["cassette"]!).StartsWith("cassettes/quirks/", StringComparison.Ordinal), Tags(@case).Contains("quirk"));
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void ConformanceCase_IsTaggedOption_ExactlyWhenItPassesAnOptionBeyondStream(string name)
    {
        JsonObject @case = Cases().Single(c => (string)c["name"]! == name);

        Assert.Equal(@case["args"]!.AsArray().Any(a => (string)a! != "--stream"), Tags(@case).Contains("option"));
    }

    [Fact]
    public void ConformanceCases_UseOnlyTheTagsConformanceReadmeDocuments()
    {
        Assert.All(Cases().SelectMany(Tags), tag => Assert.Contains(tag, new[] { "quirk", "option" }));
    }

    static string[] Tags(JsonObject @case) => [.. (@case["tags"]?.AsArray() ?? []).Select(t => (string)t!)];

    /// <summary>What a client prints on stdout, less trailing whitespace (PROTOCOL.md, "Streaming"): the final answer;
    /// streamed, the text of every reply as it arrived, each reply that had some on a line of its own (a reply that says
    /// something before it asks for tools too).</summary>
    static string Printed(Cassette cassette) => cassette.Interactions[^1].ResponseEvents is null
        ? FinalText(cassette.Interactions[^1])
        : string.Join("\n", cassette.Interactions.Select(i => StreamedText(i.ResponseEvents!)).Where(text => text.Length > 0));

    /// <summary>The text pieces a stream shows, joined: a chat chunk's content or refusal, a Responses output_text or
    /// refusal delta, a Messages text_delta.</summary>
    static string StreamedText(JsonArray events) =>
        string.Concat(events.OfType<JsonObject>().Select(e => e["choices"]?.AsArray().FirstOrDefault()?["delta"] is JsonNode delta
            ? (string?)delta["content"] + (string?)delta["refusal"]
            : (string?)e["type"] is "response.output_text.delta" or "response.refusal.delta" ? (string?)e["delta"]
            : e["delta"] is JsonObject block && (string?)block["type"] == "text_delta" ? (string?)block["text"] : null));

    /// <summary>The text of the last reply, as each API carries it: a chat message's content, the output_text parts of a
    /// Responses message item, the text blocks of a Messages reply.</summary>
    static string FinalText(Interaction last) => last.Path switch
    {
        "/responses" => string.Concat(last.ResponseBody!["output"]!.AsArray().Where(item => (string?)item!["type"] == "message")
            .SelectMany(item => item!["content"]!.AsArray()).Where(part => (string?)part!["type"] == "output_text").Select(part => (string?)part!["text"])),
        "/messages" => string.Concat(last.ResponseBody!["content"]!.AsArray().Where(block => (string?)block!["type"] == "text").Select(block => (string?)block!["text"])),
        _ => ChatAnswer(last.ResponseBody!["choices"]![0]!["message"]!),
    };

    /// <summary>A chat message's content, or its refusal when it has none: a refusal is printed as the answer.</summary>
    static string ChatAnswer(JsonNode message) =>
        (string?)message["content"] is { Length: > 0 } content ? content : (string)message["refusal"]!;

    static IEnumerable<JsonObject> Cases() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(Repo.Root, "conformance", "cases.json")))!["cases"]!.AsArray().Select(c => c!.AsObject());
}
