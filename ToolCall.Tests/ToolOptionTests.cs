using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>--tool-choice, --no-parallel and --strict: what each puts on the wire, run offline on its own cassette.
/// The replay server matches every request to the cassette, so a field sent wrongly fails the run with a 400.</summary>
public class ToolOptionTests
{
    [Fact]
    public async Task ToolChoiceRequired_IsSentOnTheFirstRequest_AndAutoAfterTheFirstRound()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--tool-choice", "required", "--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        JsonObject[] requests = RecordedRequests(dir.File("run.json"));
        Assert.Equal(2, requests.Length);
        Assert.Equal("required", (string)requests[0]["tool_choice"]!);
        Assert.Equal("auto", (string)requests[1]["tool_choice"]!); // "required" again would force another tool call
        Assert.Contains("Step 1: POST", run.Stderr);
        Assert.Contains("; tool_choice: \"required\"", run.Stderr);
        Assert.Contains("; tool_choice now \"auto\"", run.Stderr);
    }

    [Fact]
    public async Task ToolChoiceName_IsSentAsAFunctionObject_AndAutoAfterTheFirstRound()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--tool-choice", "get_weather", "--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        JsonObject[] requests = RecordedRequests(dir.File("run.json"));
        AssertJson("""{"type":"function","function":{"name":"get_weather"}}""", requests[0]["tool_choice"]);
        Assert.Equal("auto", (string)requests[1]["tool_choice"]!);
        Assert.Equal("No umbrella needed: it's +18°C and partly cloudy in Paris.", run.Stdout.Trim());
    }

    [Theory]
    [InlineData("none")]
    [InlineData("auto")]
    public async Task ToolChoiceThatForcesNoCall_IsSentUnchangedOnEveryRequest(string choice)
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--tool-choice", choice, "--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.All(RecordedRequests(dir.File("run.json")), request => Assert.Equal(choice, (string)request["tool_choice"]!));
        Assert.DoesNotContain("now \"auto\"", run.Stderr);
    }

    [Fact]
    public async Task ToolChoiceNone_LetsTheModelAnswerInText_ThoughToolsAreOffered()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--tool-choice", "none", "--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.NotEmpty(Assert.Single(RecordedRequests(dir.File("run.json")))["tools"]!.AsArray());
        Assert.DoesNotContain("Step 3", run.Stderr);
    }

    [Fact]
    public async Task NoParallel_SendsParallelToolCallsFalse_OnEveryRequest()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--no-parallel", "--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        JsonObject[] requests = RecordedRequests(dir.File("run.json"));
        Assert.Equal(3, requests.Length); // two cities, one call per reply: two rounds, then the answer
        Assert.All(requests, request => Assert.Equal(JsonValueKind.False, request["parallel_tool_calls"]!.GetValueKind()));
        Assert.Contains("; parallel_tool_calls: false", run.Stderr);
    }

    [Fact]
    public async Task Strict_SendsStrictTrue_AndAStrictSchema_ForEveryTool()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--strict", "--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        JsonArray tools = RecordedRequests(dir.File("run.json"))[0]["tools"]!.AsArray();
        Assert.Equal(2, tools.Count);
        Assert.All(tools, tool =>
        {
            Assert.Equal(JsonValueKind.True, tool!["function"]!["strict"]!.GetValueKind());
            Assert.Null(StrictSchema.FirstViolation(tool["function"]!["parameters"]!.AsObject()));
        });
        Assert.Contains("(each strict: true)", run.Stderr);
        Assert.Contains("add --no-parallel", run.Stderr); // OpenAI: strict schemas are not guaranteed for parallel calls
    }

    [Fact]
    public async Task WithoutTheOptions_NoneOfTheirFieldsIsSent()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.All(RecordedRequests(dir.File("run.json")), request =>
        {
            Assert.False(request.ContainsKey("tool_choice"));
            Assert.False(request.ContainsKey("parallel_tool_calls"));
            Assert.All(request["tools"]!.AsArray(), tool => Assert.False(tool!["function"]!.AsObject().ContainsKey("strict")));
        });
    }

    [Theory]
    [InlineData("tool-choice-required.json", "--tool-choice", "required")]
    [InlineData("tool-choice-get_weather.json", "--tool-choice", "get_weather")]
    [InlineData("tool-choice-none.json", "--tool-choice", "none")]
    [InlineData("tool-choice-auto.json", "--tool-choice", "auto")]
    [InlineData("no-parallel.json", "--no-parallel")]
    [InlineData("strict.json", "--strict")]
    [InlineData("no-parallel+strict.json", "--strict", "--no-parallel")]
    public async Task EachOption_RunsOfflineOnItsOwnCassette_WithNoKey(string cassette, params string[] args)
    {
        CliResult run = await App.RunAsync(args);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains($"{Path.DirectorySeparatorChar}{cassette} on ", run.Stderr);
        Assert.NotEqual("", run.Stdout.Trim());
    }

    [Fact]
    public async Task OptionsWithoutABundledCassette_NameTheMissingFile()
    {
        CliResult run = await App.RunAsync("--tool-choice", "required", "--no-parallel");

        Assert.Equal(2, run.ExitCode);
        Assert.StartsWith("error: no cassettes/tool-choice-required+no-parallel.json here to replay.", run.Stderr);
    }

    [Fact]
    public async Task UnknownToolChoiceName_IsAUsageError_BeforeAnythingIsSent()
    {
        await using ReplayServer server = ReplayServer.Start(Cassette.Load(Repo.Cassette("weather.json")));

        CliResult run = await App.RunAsync("--base-url", server.BaseUrl, "--tool-choice", "get_time");

        Assert.Equal(2, run.ExitCode);
        Assert.Equal(
            "error: --tool-choice get_time: no tool has that name. Use auto, none, required, or the name of a tool to force it: get_weather, get_forecast.",
            run.Stderr.Trim());
        Assert.Equal(0, server.ConnectionsAccepted);
    }

    [Fact]
    public async Task ForcedToolChoice_IsReleasedAfterTheFirstRound_SoTheLoopEnds()
    {
        // The model would answer "required" with another tool call forever; the cassette answers "auto" with text.
        JsonObject user = Wire.User("Weather in Rome?");
        JsonObject asked = Wire.AskForTools(Wire.WeatherCall("call_r", "Rome"));
        JsonObject first = WithToolChoice(Wire.Request(user), "required");
        JsonObject second = WithToolChoice(Wire.Request(user, asked, Wire.ToolMessage("call_r", Wire.Weather("Rome"))), "auto");
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(
            Wire.Exchange(first, Wire.Completion(asked)), Wire.Exchange(second, Wire.Completion(Wire.Text("Mild in Rome.")))));
        using var http = new HttpClient();

        string answer = await ToolCalling.RunAsync(
            new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, StepLog.Silent), Wire.Model, "Weather in Rome?", ProgramTools.Create(),
            new FlowOptions { ToolChoice = "required" }, CancellationToken.None);

        Assert.Equal("Mild in Rome.", answer);
    }

    [Fact]
    public void ToolWhoseSchemaBreaksTheStrictRules_IsReportedBeforeAnythingIsSent()
    {
        // A free-form object (additionalProperties: true) cannot be sent in strict mode, and rewriting it would change
        // what the function accepts: the client says so instead of sending a request the API rejects.
        var schema = JsonNode.Parse("""
            {"type":"object","properties":{"tags":{"type":"object","additionalProperties":true}},"required":["tags"]}
            """)!.AsObject();
        var tool = new Tool("tag_city", "Tags a city", schema, _ => "ok");

        // The program makes its tools strict (ArgumentChecks.Strict) before the flow starts, so nothing is sent.
        UsageException error = Assert.Throws<UsageException>(() => ArgumentChecks.Strict(tool));

        Assert.Equal(
            "the schema of tool 'tag_city' breaks the strict-mode rules, so the API would reject it: In context=('properties', 'tags'), " +
            "'additionalProperties' is required to be supplied and to be false. Fix the schema, or run without --strict.",
            error.Message);
    }

    [Fact]
    public void NullForAnOptionalArgument_IsReadAsLeftOut()
    {
        Tool[] tools = ProgramTools.Create();

        Assert.Equal(
            ToolRuns.Content("get_forecast", """{"city":"Oslo","days":2}""", tools),
            ToolRuns.Content("get_forecast", """{"city":"Oslo","days":2,"unit":null,"include":null}""", tools));
    }

    [Fact]
    public void NullForARequiredArgument_IsStillRejected() =>
        Assert.Equal("Error: get_forecast: argument 'city' must be a string, not null.",
            ToolRuns.Content("get_forecast", """{"city":null,"days":2,"unit":null,"include":null}""", ProgramTools.Create()));

    [Theory]
    [MemberData(nameof(WireFidelityTests.ChatCassettes), MemberType = typeof(WireFidelityTests))]
    public void BundledCassette_OptionFields_AreWhatTheSpecAllows(string name)
    {
        // CreateChatCompletionRequest: tool_choice is "none" | "auto" | "required" | {"type":"function","function":{"name"}};
        // parallel_tool_calls and FunctionObject.strict are booleans.
        foreach (Interaction interaction in Cassette.Load(Repo.Cassette(name)).Interactions)
        {
            JsonObject request = interaction.RequestBody!.AsObject();
            string[] functions = [.. request["tools"]!.AsArray().Select(tool => (string)tool!["function"]!["name"]!)];
            switch (request["tool_choice"])
            {
                case null:
                    break;
                case JsonObject named:
                    Assert.Equal("function", (string)named["type"]!);
                    Assert.Contains((string)named["function"]!["name"]!, functions);
                    break;
                case JsonNode mode:
                    Assert.Contains((string)mode!, new[] { "none", "auto", "required" });
                    break;
            }
            if (request["parallel_tool_calls"] is JsonNode parallel)
                Assert.Contains(parallel.GetValueKind(), new[] { JsonValueKind.True, JsonValueKind.False });
            foreach (JsonNode? tool in request["tools"]!.AsArray())
            {
                if (tool!["function"]!["strict"] is JsonNode strict)
                    Assert.Contains(strict.GetValueKind(), new[] { JsonValueKind.True, JsonValueKind.False });
            }
        }
    }

    static JsonObject WithToolChoice(JsonObject request, string choice)
    {
        request["tool_choice"] = choice;
        return request;
    }

    static JsonObject[] RecordedRequests(string recording) =>
        [.. Cassette.Load(recording).Interactions.Select(interaction => interaction.RequestBody!.AsObject())];

    static void AssertJson(string expected, JsonNode? actual) =>
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(expected), actual), actual?.ToJsonString() ?? "null");
}

/// <summary>Strict mode's schema form: how the client rewrites a schema into it, and the rules that the client and
/// the replay server both check with StrictSchema.FirstViolation.</summary>
public class StrictSchemaTests
{
    [Theory]
    [InlineData("get_weather")]
    [InlineData("get_forecast")]
    public void StrictSchemasOfTheDemoTools_PassTheStrictRules_TheOriginalsDoNot(string name)
    {
        JsonObject Parameters(bool strict) => ToolCalling.ToolDefinitions(ProgramTools.Create(strict))
            .Single(tool => (string)tool!["function"]!["name"]! == name)!["function"]!["parameters"]!.AsObject();

        Assert.Null(StrictSchema.FirstViolation(Parameters(strict: true)));
        Assert.Equal("In context=(), 'additionalProperties' is required to be supplied and to be false.", StrictSchema.FirstViolation(Parameters(strict: false)));
    }

    [Fact]
    public void Rewrite_ListsEveryPropertyAsRequired_MakesTheOptionalOnesNullable_AndClosesTheObject()
    {
        JsonObject forecast = ProgramTools.Create().Single(tool => tool.Name == "get_forecast").Parameters;

        JsonObject strict = StrictSchema.Rewrite(forecast);

        AssertJson("""
            {"type":"object","properties":{
              "city":{"type":"string","description":"City name, e.g. \"London\""},
              "days":{"type":"integer","description":"How many days, from 1 to 7"},
              "unit":{"type":["string","null"],"enum":["celsius","fahrenheit",null],"description":"Temperature unit; celsius when left out"},
              "include":{"type":["array","null"],"items":{"type":"string","enum":["wind","humidity","precipitation"]},"description":"Extra details for each day"}},
             "required":["city","days","unit","include"],"additionalProperties":false}
            """, strict);
        Assert.False(forecast.ContainsKey("additionalProperties"), "the tool's own schema is left as it is");
    }

    [Fact]
    public void Rewrite_ReachesObjectsInsideArraysAndObjects()
    {
        var schema = JsonNode.Parse("""
            {"type":"object","properties":{"trip":{"type":"object","properties":{
              "stops":{"type":"array","items":{"type":"object","properties":{"city":{"type":"string"},"nights":{"type":"integer"}},"required":["city"]}}}}}}
            """)!.AsObject();

        JsonObject strict = StrictSchema.Rewrite(schema);

        AssertJson("""
            {"type":"object","properties":{"trip":{"type":["object","null"],"properties":{
              "stops":{"type":["array","null"],"items":{"type":"object","properties":{"city":{"type":"string"},"nights":{"type":["integer","null"]}},
                "required":["city","nights"],"additionalProperties":false}}},
              "required":["stops"],"additionalProperties":false}},
             "required":["trip"],"additionalProperties":false}
            """, strict);
        Assert.Null(StrictSchema.FirstViolation(strict));
    }

    [Theory]
    [InlineData("""{"enum":["a","b"]}""", """{"enum":["a","b",null]}""")]
    [InlineData("""{"anyOf":[{"type":"string"},{"type":"integer"}]}""", """{"anyOf":[{"type":"string"},{"type":"integer"},{"type":"null"}]}""")]
    [InlineData("""{"type":["string","null"]}""", """{"type":["string","null"]}""")]
    [InlineData("""{"type":["string","integer"]}""", """{"type":["string","integer","null"]}""")]
    public void Rewrite_MakesAnOptionalPropertyNullable_WhateverItsForm(string property, string expected)
    {
        var schema = new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["x"] = JsonNode.Parse(property) } };

        AssertJson(expected, StrictSchema.Rewrite(schema)["properties"]!["x"]);
    }

    [Theory]
    [InlineData("""{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}""",
        "In context=(), 'additionalProperties' is required to be supplied and to be false.")]
    [InlineData("""{"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":true}""",
        "In context=(), 'additionalProperties' is required to be supplied and to be false.")]
    [InlineData("""{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"required":["a"],"additionalProperties":false}""",
        "In context=(), 'required' is required to be supplied and to be an array including every key in properties. Missing 'b'.")]
    [InlineData("""{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}""",
        "In context=(), 'required' is required to be supplied and to be an array including every key in properties. Missing 'a'.")]
    [InlineData("""{"type":"object","properties":{"a":{"type":"string"}},"required":["a","z"],"additionalProperties":false}""",
        "In context=(), 'required' is required to be supplied and to be an array including every key in properties. Extra required key 'z' supplied.")]
    [InlineData("""{"type":"object","properties":{"stops":{"type":"array","items":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},"required":["stops"],"additionalProperties":false}""",
        "In context=('properties', 'stops', 'items'), 'additionalProperties' is required to be supplied and to be false.")]
    [InlineData("""{"type":"array","items":{"type":"object","properties":{}}}""",
        "In context=('items',), 'additionalProperties' is required to be supplied and to be false.")]
    public void FirstViolation_NamesTheRuleAndWhere_InTheApisWords(string schema, string expected) =>
        Assert.Equal(expected, StrictSchema.FirstViolation(JsonNode.Parse(schema)!.AsObject()));

    static void AssertJson(string expected, JsonNode? actual) =>
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(expected), actual), actual?.ToJsonString() ?? "null");
}

/// <summary>The replay server enforces the API's rules on tools, tool_choice and parallel_tool_calls, whatever the
/// cassette says: each mistake is a 400 in the API's shape and wording.</summary>
public class RequestRuleTests
{
    [Theory]
    [InlineData("tool_choice", "\"auto\"")]
    [InlineData("tool_choice", "\"none\"")]
    [InlineData("parallel_tool_calls", "false")]
    public async Task OptionWithoutTools_IsRejectedWith400(string field, string value)
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        request.Remove("tools");
        request[field] = JsonNode.Parse(value);

        JsonObject error = await RejectedAsync(request);

        Assert.Equal($"Invalid value for '{field}': '{field}' is only allowed when 'tools' are specified.", (string)error["message"]!);
        Assert.Equal("invalid_request_error", (string)error["type"]!);
        Assert.Equal(field, (string)error["param"]!);
        Assert.True(error.ContainsKey("code") && error["code"] is null);
    }

    [Fact]
    public async Task OptionWithAnEmptyToolsArray_IsRejectedAsWithoutTools()
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        request["tools"] = new JsonArray();
        request["parallel_tool_calls"] = false;

        JsonObject error = await RejectedAsync(request);

        Assert.Equal("Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' are specified.", (string)error["message"]!);
    }

    [Fact]
    public async Task ToolChoiceNamingAFunctionNotInTools_IsRejectedWith400()
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        request["tool_choice"] = JsonNode.Parse("""{"type":"function","function":{"name":"get_time"}}""");

        JsonObject error = await RejectedAsync(request);

        Assert.Equal("Tool choice 'function' not found in 'tools' parameter.", (string)error["message"]!);
        Assert.Equal("tool_choice", (string)error["param"]!);
    }

    [Fact]
    public async Task ToolChoiceGivenAsABareFunctionName_IsRejectedWith400()
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        request["tool_choice"] = "get_weather"; // the name alone is not a tool_choice; it needs the function object

        JsonObject error = await RejectedAsync(request);

        Assert.Equal("Invalid value: 'get_weather'. Supported values are: 'none', 'auto', and 'required'.", (string)error["message"]!);
        Assert.Equal("tool_choice", (string)error["param"]!);
        Assert.Equal("invalid_value", (string)error["code"]!);
    }

    [Fact]
    public async Task StrictFunctionWithoutAdditionalPropertiesFalse_IsRejectedWith400()
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        request["tools"]![0]!["function"]!["strict"] = true; // strict: true on a schema left as it was

        JsonObject error = await RejectedAsync(request);

        Assert.Equal(
            "Invalid schema for function 'get_weather': In context=(), 'additionalProperties' is required to be supplied and to be false.",
            (string)error["message"]!);
        Assert.Equal("tools[0].function.parameters", (string)error["param"]!);
        Assert.Equal("invalid_function_parameters", (string)error["code"]!);
    }

    [Fact]
    public async Task StrictFunctionWithAnOptionalProperty_IsRejectedWith400NamingIt()
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        JsonNode forecast = request["tools"]![1]!["function"]!;
        forecast["strict"] = true;
        forecast["parameters"]!["additionalProperties"] = false; // but "unit" and "include" are still left out of required

        JsonObject error = await RejectedAsync(request);

        Assert.Equal(
            "Invalid schema for function 'get_forecast': In context=(), 'required' is required to be supplied and to be an array " +
            "including every key in properties. Missing 'unit'.",
            (string)error["message"]!);
        Assert.Equal("tools[1].function.parameters", (string)error["param"]!);
    }

    [Fact]
    public async Task DuplicateFunctionNames_AreRejectedWith400()
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        request["tools"]!.AsArray().Add(request["tools"]![0]!.DeepClone());

        JsonObject error = await RejectedAsync(request);

        Assert.Equal(
            "Invalid 'tools': the function name 'get_weather' is used by tools[0] and tools[2]. Function names must be unique.",
            (string)error["message"]!);
        Assert.Equal("tools[2].function.name", (string)error["param"]!);
    }

    [Theory]
    [InlineData("get.weather")]
    [InlineData("get weather")]
    [InlineData("météo")]
    [InlineData("")]
    public async Task FunctionNameOutsideThePattern_IsRejectedWith400(string name)
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        request["tools"]![1]!["function"]!["name"] = name;

        JsonObject error = await RejectedAsync(request);

        Assert.Equal(
            "Invalid 'tools[1].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
            (string)error["message"]!);
        Assert.Equal("tools[1].function.name", (string)error["param"]!);
        Assert.Equal("invalid_value", (string)error["code"]!);
    }

    [Fact]
    public async Task FunctionNameLongerThan64_IsRejectedWith400()
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        request["tools"]![0]!["function"]!["name"] = new string('a', 65);

        JsonObject error = await RejectedAsync(request);

        Assert.Equal(
            "Invalid 'tools[0].function.name': string too long. Expected a string with maximum length 64, but got a string with length 65 instead.",
            (string)error["message"]!);
        Assert.Equal("string_above_max_length", (string)error["code"]!);
    }

    [Theory]
    [InlineData("""{"tools":["get_weather"]}""", "Missing required parameter: 'tools[0].function.name'.")]
    [InlineData("""{"tool_choice":{"type":"function","function":"get_weather"}}""", "Tool choice 'function' not found in 'tools' parameter.")]
    public async Task MalformedToolFields_AreA400_NotACrash(string fields, string expected)
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        foreach ((string name, JsonNode? value) in JsonNode.Parse(fields)!.AsObject())
            request[name] = value?.DeepClone();

        JsonObject error = await RejectedAsync(request);

        Assert.Equal(expected, (string)error["message"]!);
    }

    [Fact]
    public async Task RequestWithEveryOptionSetRight_IsServedFromTheCassette()
    {
        JsonObject request = Wire.Request(Wire.User("Hello?"));
        request["tools"] = ToolCalling.ToolDefinitions(ProgramTools.Create(strict: true));
        request["tool_choice"] = JsonNode.Parse("""{"type":"function","function":{"name":"get_forecast"}}""");
        request["parallel_tool_calls"] = false;
        request["tools"]![1]!["function"]!["name"] = new string('f', 64); // the longest name allowed...
        request["tool_choice"]!["function"]!["name"] = new string('f', 64); // ...and forced by that name
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(request, Wire.Completion(Wire.Text("Hi.")))));

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", request);

        Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
    }

    /// <summary>Posts a request that breaks a rule and returns the error object of the 400.</summary>
    static async Task<JsonObject> RejectedAsync(JsonObject request)
    {
        // The cassette holds exactly this request, so only the rules can reject it.
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(request, Wire.Completion(Wire.Text("unreachable")))));
        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", request);
        Assert.True(status == HttpStatusCode.BadRequest, body?.ToJsonString());
        return body!["error"]!.AsObject();
    }
}
