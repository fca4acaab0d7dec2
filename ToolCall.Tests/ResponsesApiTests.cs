using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>The four steps on the Responses API (--api responses), end to end against the replay server.</summary>
public class ResponsesFlowTests
{
    const string London = "It's currently +18°C and partly cloudy in London.";

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OfflineDemo_PrintsTheLondonAnswerOnce_AndStepsOneToFourOnStderr(bool stream)
    {
        CliResult run = await App.RunAsync(stream ? ["--api", "responses", "--stream"] : ["--api", "responses"]);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(London + Environment.NewLine, run.Stdout);
        Assert.Contains(stream ? "responses-weather-stream.json" : "responses-weather.json", run.Stderr);
        Assert.Contains("/v1/responses: 1 input item (\"What's the weather in London right now?\"), tools: get_weather, get_forecast", run.Stderr);
        Assert.Contains("3 input items (user, function_call, function_call_output)", run.Stderr);
        ApiAssert.StepsInOrder(run.Stderr);
        Assert.Contains("Tokens: 354 in total (321 in, 33 out) over 2 requests.", run.Stderr); // input_tokens, output_tokens
    }

    [Fact]
    public async Task Step3_AppendsTheOutputItemsAsReceived_ThenOneOutputPerCall_PairedByCallId()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--api", "responses", "--replay", Repo.Cassette("responses-two-cities.json"), "--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("Right now it's +18°C and partly cloudy in both London and Paris." + Environment.NewLine, run.Stdout);
        IReadOnlyList<Interaction> recorded = Cassette.Load(dir.File("run.json")).Interactions;
        JsonArray output = recorded[0].ResponseBody!["output"]!.AsArray();
        JsonArray input = recorded[1].RequestBody!["input"]!.AsArray();
        Assert.Equal(["user", "function_call", "function_call", "function_call_output", "function_call_output"],
            input.Select(item => (string?)item!["type"] ?? (string)item["role"]!));
        Assert.True(JsonNode.DeepEquals(output[0], input[1]) && JsonNode.DeepEquals(output[1], input[2]), input.ToJsonString()); // as received
        Assert.Equal((string)output[0]!["call_id"]!, (string)input[3]!["call_id"]!); // the call_id, not the item's id (fc_…)
        Assert.Equal((string)output[1]!["call_id"]!, (string)input[4]!["call_id"]!);
        Assert.Equal(Wire.Weather("Paris"), (string)input[4]!["output"]!);
    }

    [Fact]
    public async Task StreamedRun_SendsTheSameConversationAsTheJsonRun()
    {
        using var dir = new TempDir();
        CliResult json = await App.RunAsync("--api", "responses", "--record", dir.File("json.json"));
        CliResult streamed = await App.RunAsync("--api", "responses", "--stream", "--record", dir.File("stream.json"));

        Assert.True(json.ExitCode == 0, json.ToString());
        Assert.True(streamed.ExitCode == 0, streamed.ToString());
        Assert.Equal(json.Stdout, streamed.Stdout);
        JsonObject second = Cassette.Load(dir.File("stream.json")).Interactions[1].RequestBody!.AsObject();
        Assert.True((bool)second["stream"]!);
        Assert.Null(second["stream_options"]); // the usage always comes, in response.completed
        Assert.True(JsonNode.DeepEquals(Cassette.Load(dir.File("json.json")).Interactions[1].RequestBody!["input"], second["input"]), second.ToJsonString());
    }

    [Fact]
    public void ToolDefinitions_AreFlat_AndAlwaysSayWhetherStrict()
    {
        JsonArray definitions = ResponsesApi.ToolDefinitions(ProgramTools.Create());

        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""
            {"type":"function","name":"get_weather","description":"Returns the current weather in the given city",
             "parameters":{"type":"object","properties":{"city":{"type":"string","description":"City name, e.g. \"London\""}},"required":["city"]},
             "strict":false}
            """), definitions[0]), definitions[0]!.ToJsonString());
        JsonNode strict = ResponsesApi.ToolDefinitions(ProgramTools.Create(strict: true))[1]!;
        Assert.True((bool)strict["strict"]!);
        Assert.False((bool)strict["parameters"]!["additionalProperties"]!);
        Assert.Equal(["city", "days", "unit", "include"], strict["parameters"]!["required"]!.AsArray().Select(n => (string)n!));
    }

    [Fact]
    public async Task ForcedFunction_IsAFlatToolChoice_AndTheNextRequestGoesBackToAuto()
    {
        JsonObject first = ResponsesWire.Request(ResponsesWire.User("Weather?"));
        first["tool_choice"] = new JsonObject { ["type"] = "function", ["name"] = "get_weather" };
        first["parallel_tool_calls"] = false;
        JsonObject second = ResponsesWire.Request(ResponsesWire.User("Weather?"), ResponsesWire.Call("call_1", "Oslo"), ResponsesWire.Output("call_1", Wire.Weather("Oslo")));
        second["tool_choice"] = "auto";
        second["parallel_tool_calls"] = false;
        using var dir = new TempDir();
        string cassette = Wire.Cassette(
            ResponsesWire.Exchange(first, ResponsesWire.Response(ResponsesWire.Call("call_1", "Oslo"))),
            ResponsesWire.Exchange(second, ResponsesWire.Response(ResponsesWire.Message("Mild in Oslo.")))).Save(dir);

        CliResult run = await App.RunAsync("Weather?", "--api", "responses", "--replay", cassette, "--tool-choice", "get_weather", "--no-parallel");

        Assert.True(run.ExitCode == 0, run.ToString()); // the replay server answers any other request with a 400
        Assert.Equal("Mild in Oslo." + Environment.NewLine, run.Stdout);
        Assert.Contains("tool_choice now \"auto\"", run.Stderr);
    }

    [Fact]
    public async Task BadCalls_EachGetAnOutputSayingWhatWentWrong_AndTheFlowGoesOn()
    {
        JsonObject[] calls =
        [
            ResponsesWire.Call("call_a", "", name: "get_time", arguments: "{}"),
            ResponsesWire.Call("call_b", "", arguments: """{"city": "Par"""),
            ResponsesWire.Call("call_c", "", name: "get_forecast", arguments: """{"city":"Oslo","days":9}"""),
        ];
        JsonObject second = ResponsesWire.Request([
            ResponsesWire.User("Weather?"), .. calls,
            ResponsesWire.Output("call_a", "Error: unknown function 'get_time'. Available functions: get_weather, get_forecast."),
            ResponsesWire.Output("call_b", ToolRuns.Content("get_weather", """{"city": "Par""", ProgramTools.Create())),
            ResponsesWire.Output("call_c", "Error: get_forecast failed: days must be from 1 to 7, not 9")]);
        using var dir = new TempDir();
        string cassette = Wire.Cassette(
            ResponsesWire.Exchange(ResponsesWire.Request(ResponsesWire.User("Weather?")), ResponsesWire.Response(calls)),
            ResponsesWire.Exchange(second, ResponsesWire.Response(ResponsesWire.Message("Sorry.")))).Save(dir);

        CliResult run = await App.RunAsync("Weather?", "--api", "responses", "--replay", cassette);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("Sorry." + Environment.NewLine, run.Stdout);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ModelThatKeepsCallingTools_IsAskedForAnAnswerAfterMaxRounds_ThenStopsWithOneErrorLine(bool answers)
    {
        JsonObject call = ResponsesWire.Call("call_1", "Oslo");
        JsonObject last = ResponsesWire.Request(ResponsesWire.User("Weather?"), call, ResponsesWire.Output("call_1", Wire.Weather("Oslo")));
        last["tool_choice"] = "none"; // the request after the last round allowed asks for an answer
        using var dir = new TempDir();
        string cassette = Wire.Cassette(
            ResponsesWire.Exchange(ResponsesWire.Request(ResponsesWire.User("Weather?")), ResponsesWire.Response(call)),
            ResponsesWire.Exchange(last, ResponsesWire.Response(answers ? ResponsesWire.Message("Mild in Oslo.") : ResponsesWire.Call("call_2", "Oslo")))).Save(dir);

        CliResult run = await App.RunAsync("Weather?", "--api", "responses", "--replay", cassette, "--max-rounds", "1");

        Assert.Contains("tool_choice now \"none\": the last request (--max-rounds 1) asks for an answer", run.Stderr);
        if (answers)
        {
            Assert.True(run.ExitCode == 0, run.ToString());
            Assert.Equal("Mild in Oslo.", run.Stdout.Trim());
            return;
        }
        Assert.Equal(1, run.ExitCode);
        Assert.StartsWith("error: the model still asks for tools after 1 round of tool calls (--max-rounds 1)", run.Stderr.TrimEnd().Split('\n')[^1]);
    }

    [Fact]
    public async Task Refusal_IsPrintedAsTheAnswer()
    {
        JsonObject refusal = ResponsesWire.Message("");
        refusal["content"] = new JsonArray(new JsonObject { ["type"] = "refusal", ["refusal"] = "I can't help with that." });
        using var dir = new TempDir();
        string cassette = Wire.Cassette(ResponsesWire.Exchange(ResponsesWire.Request(ResponsesWire.User("Hm?")), ResponsesWire.Response(refusal))).Save(dir);

        CliResult run = await App.RunAsync("Hm?", "--api", "responses", "--replay", cassette);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("I can't help with that." + Environment.NewLine, run.Stdout);
        Assert.Contains("The model refused", run.Stderr);
    }

    [Fact]
    public async Task LiveRun_SendsTheOpenAIKeyAsABearerToken_ToTheResponsesEndpoint()
    {
        using var server = new HeaderCapturingServer(ResponsesWire.Response(ResponsesWire.Message("Hi.")));
        var environment = new Dictionary<string, string> { ["OPENAI_API_KEY"] = "sk-test-responses", ["ANTHROPIC_API_KEY"] = "sk-ant-not-this-one" };

        CliResult run = await App.RunAsync(environment, "Hello?", "--api", "responses", "--base-url", server.BaseUrl);

        Assert.True(run.ExitCode == 0, run.ToString());
        string head = await server.RequestHead;
        Assert.StartsWith("POST /v1/responses HTTP/1.1", head);
        Assert.Contains("Authorization: Bearer sk-test-responses", head);
        Assert.DoesNotContain("sk-ant-not-this-one", head);
    }
}

/// <summary>The replay server holds a /responses request to the Responses API's rules, answering each break with its 400.</summary>
public class ResponsesRulesTests
{
    static readonly JsonObject Question = ResponsesWire.User("Weather?");

    [Fact]
    public async Task FunctionCallOutputWithoutItsCall_IsRejectedWith400InTheApisWords()
    {
        JsonObject error = await RejectedAsync(ResponsesWire.Request(Question, ResponsesWire.Output("call_x", "sunny")));

        Assert.Equal("No tool call found for function call output with call_id call_x.", (string)error["message"]!);
        Assert.Equal("input", (string)error["param"]!);
        Assert.Equal("invalid_request_error", (string)error["type"]!);
    }

    [Fact]
    public async Task FunctionCallWithoutItsOutput_IsRejectedWith400InTheApisWords()
    {
        JsonObject error = await RejectedAsync(ResponsesWire.Request(
            Question, ResponsesWire.Call("call_a", "Oslo"), ResponsesWire.Call("call_b", "Rome"), ResponsesWire.Output("call_a", "sunny")));

        Assert.Equal("No tool output found for function call call_b.", (string)error["message"]!);
    }

    [Fact]
    public async Task OutputBeforeItsCall_IsRejected_AsAnOutputWithoutACall()
    {
        JsonObject error = await RejectedAsync(ResponsesWire.Request(Question, ResponsesWire.Output("call_a", "sunny"), ResponsesWire.Call("call_a", "Oslo")));

        Assert.Equal("No tool call found for function call output with call_id call_a.", (string)error["message"]!);
    }

    [Fact]
    public async Task ArgumentsThatAreNotAString_AreRejected()
    {
        JsonObject call = ResponsesWire.Call("call_a", "Oslo");
        call["arguments"] = new JsonObject { ["city"] = "Oslo" };

        JsonObject error = await RejectedAsync(ResponsesWire.Request(Question, call, ResponsesWire.Output("call_a", "sunny")));

        Assert.Equal("Invalid type for 'input[1].arguments': expected a string, but got an object instead.", (string)error["message"]!);
    }

    [Fact]
    public async Task ToolInTheChatCompletionsForm_IsRejectedForHavingNoName()
    {
        JsonObject request = ResponsesWire.Request(Question);
        request["tools"] = ToolCalling.ToolDefinitions(ProgramTools.Create()); // {"type":"function","function":{…}}

        JsonObject error = await RejectedAsync(request);

        Assert.Equal("Missing required parameter: 'tools[0].name'.", (string)error["message"]!);
    }

    [Theory]
    [InlineData("""{"type":"function","function":{"name":"get_weather"}}""", "Missing required parameter: 'tool_choice.name'.")]
    [InlineData("""{"type":"function","name":"get_time"}""", "Tool choice 'function' not found in 'tools' parameter.")]
    [InlineData("\"get_weather\"", "Invalid value: 'get_weather'. Supported values are: 'none', 'auto', and 'required'.")]
    public async Task ToolChoiceThatIsNotAModeOrAFlatFunctionInTools_IsRejected(string choice, string expected)
    {
        JsonObject request = ResponsesWire.Request(Question);
        request["tool_choice"] = JsonNode.Parse(choice);

        Assert.Equal(expected, (string)(await RejectedAsync(request))["message"]!);
    }

    [Fact]
    public async Task StrictFunctionWithASchemaNotInStrictForm_IsRejected()
    {
        JsonObject request = ResponsesWire.Request(Question);
        request["tools"]![1]!["strict"] = true;

        JsonObject error = await RejectedAsync(request);

        Assert.Equal("Invalid schema for function 'get_forecast': In context=(), 'additionalProperties' is required to be supplied and to be false.", (string)error["message"]!);
        Assert.Equal("tools[1].parameters", (string)error["param"]!);
    }

    [Fact]
    public async Task CompleteHistory_PassesTheRules_AndIsAnsweredFromTheCassette()
    {
        JsonObject request = ResponsesWire.Request(Question, ResponsesWire.Call("call_a", "Oslo"), ResponsesWire.Output("call_a", "sunny"));
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(ResponsesWire.Exchange(request, ResponsesWire.Response(ResponsesWire.Message("Sunny.")))));

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/responses", request);

        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("Sunny.", (string)body!["output"]![0]!["content"]![0]!["text"]!);
    }

    static async Task<JsonObject> RejectedAsync(JsonObject request)
    {
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(ResponsesWire.Exchange(request, ResponsesWire.Response(ResponsesWire.Message("never")))));
        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/responses", request);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        return body!["error"]!.AsObject();
    }
}

/// <summary>A streamed Responses API reply: typed events put back together into the response a JSON reply is.</summary>
public class ResponsesStreamTests
{
    [Fact]
    public async Task EventStreamSplitAtEveryByte_AssemblesTheSameResponse_WithInterleavedCallsToldApartByOutputIndex()
    {
        // Two calls whose argument pieces interleave, a message whose text has characters of two and three bytes, and
        // no .done events: only the pieces make the items. CRLF lines, as some servers send.
        JsonNode[] events =
        [
            ResponsesWire.Event("response.created", new JsonObject { ["response"] = ResponsesWire.Response() }),
            ResponsesWire.Event("response.output_item.added", new JsonObject { ["output_index"] = 0, ["item"] = ResponsesWire.Call("call_a", "", arguments: "") }),
            ResponsesWire.Event("response.output_item.added", new JsonObject { ["output_index"] = 1, ["item"] = ResponsesWire.Call("call_b", "", arguments: "") }),
            ResponsesWire.ArgumentsDelta(1, "{\"city\":\"Zü"),
            ResponsesWire.ArgumentsDelta(0, "{\"city\":"),
            ResponsesWire.ArgumentsDelta(1, "rich\"}"),
            ResponsesWire.ArgumentsDelta(0, "\"München\"}"),
            ResponsesWire.Event("response.output_item.added", new JsonObject { ["output_index"] = 2, ["item"] = new JsonObject { ["id"] = "msg_1", ["type"] = "message", ["status"] = "in_progress", ["role"] = "assistant", ["content"] = new JsonArray() } }),
            ResponsesWire.TextDelta(2, "Je regarde °C "),
            ResponsesWire.TextDelta(2, "et 中…"),
            ResponsesWire.Completed(ResponsesWire.Response()),
        ];
        byte[] bytes = Encoding.UTF8.GetBytes(ResponsesWire.Sse(events).Replace("\n", "\r\n"));
        JsonObject expected = await new StreamedResponse(TextWriter.Null).ReadAsync(new MemoryStream(bytes), [], null, CancellationToken.None);

        for (int split = 0; split <= bytes.Length; split++)
        {
            JsonObject response = await new StreamedResponse(TextWriter.Null).ReadAsync(new ChoppedStream(bytes, split, bytes.Length), [], null, CancellationToken.None);
            Assert.True(JsonNode.DeepEquals(expected, response), $"split at byte {split}: {response.ToJsonString()}");
        }
        JsonArray output = expected["output"]!.AsArray();
        Assert.Equal(["{\"city\":\"München\"}", "{\"city\":\"Zürich\"}"], output.Take(2).Select(item => (string)item!["arguments"]!));
        Assert.Equal(["call_a", "call_b"], output.Take(2).Select(item => (string)item!["call_id"]!));
        Assert.Equal("Je regarde °C et 中…", (string)output[2]!["content"]![0]!["text"]!);
        Assert.Equal("output_text", (string)output[2]!["content"]![0]!["type"]!);
    }

    [Fact]
    public async Task ArgumentsSplitAtEveryCharacterPosition_AreJoinedIntoTheSameArguments()
    {
        const string arguments = """{"city":"M\u00fcnchen","days":12}""";

        for (int split = 0; split <= arguments.Length; split++)
        {
            JsonObject response = await ResponsesWire.AssembleAsync(
                ResponsesWire.Event("response.output_item.added", new JsonObject { ["output_index"] = 0, ["item"] = ResponsesWire.Call("call_m", "", arguments: "") }),
                ResponsesWire.ArgumentsDelta(0, arguments[..split]),
                ResponsesWire.ArgumentsDelta(0, arguments[split..]),
                ResponsesWire.Completed(ResponsesWire.Response()));

            Assert.Equal(arguments, (string)response["output"]![0]!["arguments"]!);
        }
    }

    [Fact]
    public async Task DoneEvents_BringTheWholeItem_WhichReplacesThePieces()
    {
        JsonObject response = await ResponsesWire.AssembleAsync(
            ResponsesWire.Event("response.output_item.added", new JsonObject { ["output_index"] = 0, ["item"] = ResponsesWire.Call("call_a", "", arguments: "") }),
            ResponsesWire.ArgumentsDelta(0, "{\"ci"),
            ResponsesWire.Event("response.function_call_arguments.done", new JsonObject { ["item_id"] = "fc_call_a", ["output_index"] = 0, ["arguments"] = "{\"city\":\"Oslo\"}" }),
            ResponsesWire.Event("response.output_item.added", new JsonObject { ["output_index"] = 1, ["item"] = ResponsesWire.Call("call_b", "", arguments: "") }),
            ResponsesWire.ArgumentsDelta(1, "{\"city\":\"Ro"),
            ResponsesWire.Event("response.output_item.done", new JsonObject { ["output_index"] = 1, ["item"] = ResponsesWire.Call("call_b", "Rome") }),
            ResponsesWire.Completed(ResponsesWire.Response()));

        Assert.True(JsonNode.DeepEquals(new JsonArray(ResponsesWire.Call("call_a", "Oslo"), ResponsesWire.Call("call_b", "Rome")), response["output"]), response.ToJsonString());
    }

    [Fact]
    public async Task CompletedEventWithEmptyOutput_KeepsTheStreamedItems_AndItsStatusAndUsage()
    {
        JsonObject completed = ResponsesWire.Response();
        completed["usage"] = new JsonObject { ["input_tokens"] = 7, ["output_tokens"] = 3, ["total_tokens"] = 10 };

        JsonObject response = await ResponsesWire.AssembleAsync(
            ResponsesWire.Event("response.output_item.done", new JsonObject { ["output_index"] = 0, ["item"] = ResponsesWire.Message("Hi.") }),
            ResponsesWire.Completed(completed));

        Assert.Equal("Hi.", (string)response["output"]![0]!["content"]![0]!["text"]!);
        Assert.Equal("completed", (string)response["status"]!);
        Assert.Equal(7, (int)response["usage"]!["input_tokens"]!);
    }

    [Fact]
    public async Task TextDeltas_ArePrintedAsTheyArrive_AndARefusalToo()
    {
        var output = new StringWriter();

        await ResponsesWire.AssembleAsync(output,
            ResponsesWire.TextDelta(0, "Hel"), ResponsesWire.TextDelta(0, "lo"),
            ResponsesWire.Event("response.refusal.delta", new JsonObject { ["item_id"] = "msg_2", ["output_index"] = 1, ["content_index"] = 0, ["delta"] = " No." }),
            ResponsesWire.Completed(ResponsesWire.Response()));

        Assert.Equal("Hello No." + Environment.NewLine, output.ToString());
    }

    [Theory]
    [InlineData("""{"type":"error","code":"server_error","message":"The server had an error.","param":null,"sequence_number":3}""", "The server had an error.")]
    [InlineData("""{"type":"response.failed","sequence_number":3,"response":{"status":"failed","error":{"code":"server_error","message":"Something went wrong."}}}""", "Something went wrong.")]
    public async Task ErrorEvent_EndsWithOneErrorLineAndExit1_AndNothingIsSentOn(string errorEvent, string message)
    {
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(ResponsesWire.StreamExchange(
            ResponsesWire.Request(ResponsesWire.User("Hi?")),
            ResponsesWire.TextDelta(0, "Hel"), JsonNode.Parse(errorEvent)!)));

        CliResult run = await App.RunAsync("Hi?", "--api", "responses", "--stream", "--base-url", server.BaseUrl);

        Assert.Equal(1, run.ExitCode);
        Assert.Equal($"error: the stream carried an error instead of the response: {message}", run.Stderr.TrimEnd().Split('\n')[^1]);
        Assert.Equal("Hel" + Environment.NewLine, run.Stdout); // the error gets a line of its own
    }

    [Fact]
    public async Task StreamEndingCleanlyWithEveryItemDone_IsAWholeResponse_WithoutResponseCompleted()
    {
        // Decided from openai-node's ResponseStream (a clean end resolves with the response so far), asking for more: each
        // item added must be done, so that no half call runs.
        JsonObject call = ResponsesWire.Call("call_1", "Oslo");
        JsonObject response = await ResponsesWire.AssembleAsync(
            ResponsesWire.Event("response.created", new JsonObject { ["response"] = ResponsesWire.Response() }),
            ResponsesWire.Event("response.output_item.added", new JsonObject { ["output_index"] = 0, ["item"] = call.DeepClone() }),
            ResponsesWire.Event("response.output_item.done", new JsonObject { ["output_index"] = 0, ["item"] = call.DeepClone() }));

        Assert.True(JsonNode.DeepEquals(call, response["output"]![0]), response.ToJsonString());
    }

    [Fact]
    public async Task StreamEndingCleanlyWithAnItemNotDone_IsStillAnError()
    {
        JsonObject call = ResponsesWire.Call("call_1", "Oslo", arguments: "");

        FlowException e = await Assert.ThrowsAsync<FlowException>(() => ResponsesWire.AssembleAsync(
            ResponsesWire.Event("response.output_item.added", new JsonObject { ["output_index"] = 0, ["item"] = call }),
            ResponsesWire.ArgumentsDelta(0, "{\"city\":\"Os")));

        Assert.StartsWith("the stream ended after 2 events, before response.completed.", e.Message);
    }

    [Fact]
    public async Task StreamEndingBeforeResponseCompleted_IsAnErrorLine_NotAnAnswer()
    {
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(ResponsesWire.StreamExchange(
            ResponsesWire.Request(ResponsesWire.User("Hi?")), ResponsesWire.TextDelta(0, "Hello"))));

        CliResult run = await App.RunAsync("Hi?", "--api", "responses", "--stream", "--base-url", server.BaseUrl);

        Assert.Equal(1, run.ExitCode);
        Assert.StartsWith("error: the stream ended after 1 event, before response.completed.", run.Stderr.TrimEnd().Split('\n')[^1]);
    }

    [Fact]
    public async Task TimeoutInTheMiddleOfAStream_IsAnErrorLine_NotARetry()
    {
        var clock = new ManualClock();
        var stdout = new PrintedSignal();
        JsonObject request = ResponsesWire.Request(ResponsesWire.User("Hi?"));
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(ResponsesWire.StreamExchange(
            request, ResponsesWire.TextDelta(0, "Hi"), ResponsesWire.Completed(ResponsesWire.Response()))));
        server.BeforeStreamEvent = position => position == 0 ? Task.CompletedTask : new TaskCompletionSource().Task; // stalls after "Hi"
        using var http = new HttpClient();
        var noted = new NotedWaits();
        var client = new ResilientChatClient(http, server.BaseUrl, Apis.Responses, null, StepLog.Silent)
        {
            Retries = new RetryPolicy { Delay = noted.Delay, Time = clock },
            StreamTextTo = stdout,
        };

        Task<JsonObject> post = client.PostAsync((JsonObject)request.DeepClone(), CancellationToken.None);
        await stdout.Printed.WaitAsync(TimeSpan.FromSeconds(10)); // a bound, not a synchronisation
        clock.Advance(TimeSpan.FromSeconds(60));
        FlowException e = await Assert.ThrowsAsync<FlowException>(() => post.WaitAsync(TimeSpan.FromSeconds(10)));

        Assert.StartsWith("the stream did not end within 60.0 s (--timeout), after 1 event.", e.Message);
        Assert.Empty(noted.Waits); // no retry: "Hi" is on the screen already
    }

    [Fact]
    public async Task ReplayServer_SendsEachEventWithAnEventLineNamedAfterItsType()
    {
        JsonObject request = ResponsesWire.Request(ResponsesWire.User("Hi?"));
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(ResponsesWire.StreamExchange(request, ResponsesWire.TextDelta(0, "Hi"))));
        using var http = new HttpClient();

        request["stream"] = true;
        using HttpResponseMessage response = await http.PostAsync(server.BaseUrl + "/responses", new StringContent(request.ToJsonString(), Encoding.UTF8, "application/json"));
        string text = await response.Content.ReadAsStringAsync();

        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        Assert.StartsWith("event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",", text);
    }
}

/// <summary>The Responses API cassettes hold what the OpenAPI spec requires (openai/openai-openapi: CreateResponse,
/// Response, FunctionTool, FunctionToolCall, FunctionCallOutputItemParam, OutputMessage, OutputTextContent,
/// ResponseUsage, and the ResponseStreamEvent schemas), written out here because the spec itself is not vendored.</summary>
public class ResponsesWireFidelityTests
{
    public static TheoryData<string> ResponsesCassettes() =>
        [.. Directory.GetFiles(Path.Combine(Repo.Root, "cassettes"), "responses-*.json").Select(path => Path.GetFileName(path)).Order()];

    [Theory]
    [MemberData(nameof(ResponsesCassettes))]
    public void Requests_HaveWhatCreateResponseRequires(string name)
    {
        foreach (Interaction interaction in Cassette.Load(Repo.Cassette(name)).Interactions)
        {
            Assert.Equal("/responses", interaction.Path);
            JsonObject request = interaction.RequestBody!.AsObject();
            Assert.Equal(JsonValueKind.String, request["model"]!.GetValueKind());
            foreach (JsonNode? tool in request["tools"]!.AsArray())
                ApiAssert.HasFields(tool!, "type", "name", "strict", "parameters"); // FunctionTool: strict is required
            foreach (JsonNode? item in request["input"]!.AsArray())
            {
                switch ((string?)item!["type"])
                {
                    case "function_call":
                        AssertFunctionCall(item);
                        break;
                    case "function_call_output":
                        ApiAssert.HasFields(item, "call_id", "output");
                        break;
                    case "reasoning":
                        AssertReasoning(item, request);
                        break;
                    default:
                        ApiAssert.HasFields(item, "role", "content"); // EasyInputMessage
                        break;
                }
            }
            Assert.Equal(interaction.ResponseEvents is not null, request["stream"]?.GetValueKind() == JsonValueKind.True);
        }
    }

    [Theory]
    [MemberData(nameof(ResponsesCassettes))]
    public void Responses_HaveWhatResponseRequires(string name)
    {
        foreach (Interaction interaction in Cassette.Load(Repo.Cassette(name)).Interactions)
        {
            if (interaction.ResponseEvents is JsonArray events)
            {
                AssertEvents(events);
                AssertResponse(events[^1]!["response"]!.AsObject());
            }
            else
            {
                AssertResponse(interaction.ResponseBody!.AsObject());
            }
        }
    }

    static void AssertResponse(JsonObject response)
    {
        ApiAssert.HasFields(response, "id", "object", "created_at", "error", "incomplete_details", "instructions", "model", "tools",
            "output", "parallel_tool_calls", "metadata", "tool_choice", "temperature", "top_p");
        Assert.Equal("response", (string)response["object"]!);
        Assert.Null(response["output_text"]); // an SDK convenience, not the API's
        foreach (JsonNode? item in response["output"]!.AsArray())
        {
            if ((string)item!["type"]! == "function_call")
            {
                AssertFunctionCall(item);
                continue;
            }
            if ((string)item["type"]! == "reasoning")
            {
                ApiAssert.HasFields(item, "id", "type", "summary"); // ReasoningItem
                continue;
            }
            ApiAssert.HasFields(item, "id", "type", "role", "content", "status"); // OutputMessage
            foreach (JsonNode? part in item["content"]!.AsArray())
                ApiAssert.HasFields(part!, "type", "text", "annotations", "logprobs"); // OutputTextContent
        }
        ApiAssert.HasFields(response["usage"]!, "input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens");
    }

    /// <summary>A ReasoningItem sent back: its id and summary; with store: false, its encrypted_content, which the request
    /// asked for with include ["reasoning.encrypted_content"] (the API kept no item to look up).</summary>
    static void AssertReasoning(JsonNode item, JsonObject request)
    {
        ApiAssert.HasFields(item, "id", "type", "summary");
        if (request["store"]?.GetValueKind() == JsonValueKind.False)
        {
            Assert.Equal(JsonValueKind.String, item["encrypted_content"]!.GetValueKind());
            Assert.Contains("reasoning.encrypted_content", request["include"]!.AsArray().Select(i => (string?)i));
        }
    }

    static void AssertFunctionCall(JsonNode item)
    {
        ApiAssert.HasFields(item, "type", "call_id", "name", "arguments");
        Assert.Equal(JsonValueKind.String, item["arguments"]!.GetValueKind()); // a JSON *string*
        // An item cut off by max_output_tokens (responses-max-tokens.json) may end in the middle of its arguments.
        if ((string?)item["status"] != "incomplete")
            Assert.IsType<JsonObject>(JsonNode.Parse((string)item["arguments"]!));
    }

    /// <summary>The events' required fields, in order: a stream ends with response.completed, its sequence_numbers count up.</summary>
    static void AssertEvents(JsonArray events)
    {
        Assert.Equal("response.completed", (string)events[^1]!["type"]!);
        for (int i = 0; i < events.Count; i++)
        {
            JsonNode e = events[i]!;
            Assert.Equal(i, (int)e["sequence_number"]!);
            string[] required = (string)e["type"]! switch
            {
                "response.created" or "response.in_progress" or "response.completed" => ["response"],
                "response.output_item.added" or "response.output_item.done" => ["output_index", "item"],
                "response.content_part.added" or "response.content_part.done" => ["item_id", "output_index", "content_index", "part"],
                "response.output_text.delta" => ["item_id", "output_index", "content_index", "delta", "logprobs"],
                "response.output_text.done" => ["item_id", "output_index", "content_index", "text", "logprobs"],
                "response.function_call_arguments.delta" => ["item_id", "output_index", "delta"],
                "response.function_call_arguments.done" => ["item_id", "name", "output_index", "arguments"],
                string other => throw new Xunit.Sdk.XunitException($"event type {other} is not one these cassettes should hold"),
            };
            ApiAssert.HasFields(e, required);
        }
    }
}

/// <summary>Builders for the Responses API's JSON, so a test states its conversation in a few lines.</summary>
static class ResponsesWire
{
    public static JsonObject User(string text) => new() { ["role"] = "user", ["content"] = text };

    /// <summary>A function_call item as the API returns it; its id is "fc_" and the call_id.</summary>
    public static JsonObject Call(string callId, string city, string name = "get_weather", string? arguments = null) => new()
    {
        ["id"] = "fc_" + callId,
        ["type"] = "function_call",
        ["status"] = "completed",
        ["arguments"] = arguments ?? $$"""{"city":"{{city}}"}""",
        ["call_id"] = callId,
        ["name"] = name,
    };

    public static JsonObject Output(string callId, string output) =>
        new() { ["type"] = "function_call_output", ["call_id"] = callId, ["output"] = output };

    public static JsonObject Message(string text) => new()
    {
        ["id"] = "msg_test",
        ["type"] = "message",
        ["status"] = "completed",
        ["role"] = "assistant",
        ["content"] = new JsonArray(new JsonObject { ["type"] = "output_text", ["annotations"] = new JsonArray(), ["logprobs"] = new JsonArray(), ["text"] = text }),
    };

    /// <summary>A request as this project's client sends it: the input items and the demo tools.</summary>
    public static JsonObject Request(params JsonObject[] input) => new()
    {
        ["model"] = Wire.Model,
        ["input"] = new JsonArray([.. input.Select(item => item.DeepClone())]),
        ["tools"] = ResponsesApi.ToolDefinitions(ProgramTools.Create()),
    };

    public static JsonObject Response(params JsonObject[] output) => new()
    {
        ["id"] = "resp_test",
        ["object"] = "response",
        ["created_at"] = 1764086400,
        ["status"] = "completed",
        ["model"] = "gpt-4o-mini-2024-07-18",
        ["output"] = new JsonArray([.. output.Select(item => item.DeepClone())]),
        ["usage"] = new JsonObject { ["input_tokens"] = 10, ["output_tokens"] = 5, ["total_tokens"] = 15 },
    };

    public static Interaction Exchange(JsonObject request, JsonNode response, int status = 200) =>
        new("POST", "/responses", request.DeepClone(), status, response.DeepClone());

    /// <summary>A streamed exchange: the request with "stream": true, answered with these events.</summary>
    public static Interaction StreamExchange(JsonObject request, params JsonNode[] events)
    {
        JsonObject streamed = (JsonObject)request.DeepClone();
        streamed["stream"] = true;
        return new("POST", "/responses", streamed, 200, null) { ResponseEvents = new JsonArray([.. events.Select(e => e.DeepClone())]) };
    }

    public static JsonObject Event(string type, JsonObject fields)
    {
        var e = new JsonObject { ["type"] = type };
        foreach ((string name, JsonNode? value) in fields.ToList())
        {
            fields.Remove(name);
            e[name] = value;
        }
        return e;
    }

    public static JsonObject ArgumentsDelta(int outputIndex, string delta) =>
        Event("response.function_call_arguments.delta", new JsonObject { ["item_id"] = $"fc_{outputIndex}", ["output_index"] = outputIndex, ["delta"] = delta });

    public static JsonObject TextDelta(int outputIndex, string delta) => Event("response.output_text.delta",
        new JsonObject { ["item_id"] = "msg_test", ["output_index"] = outputIndex, ["content_index"] = 0, ["delta"] = delta, ["logprobs"] = new JsonArray() });

    public static JsonObject Completed(JsonObject response)
    {
        response.Remove("output"); // some servers send it empty: the items come from the events
        response["output"] = new JsonArray();
        return Event("response.completed", new JsonObject { ["response"] = response });
    }

    /// <summary>The events as the replay server writes them: an event line, a data line and a blank line each.</summary>
    public static string Sse(IEnumerable<JsonNode> events) => string.Concat(events.Select(e => ServerSentEvents.Format(e, named: true)));

    public static Task<JsonObject> AssembleAsync(params JsonNode[] events) => AssembleAsync(TextWriter.Null, events);

    public static Task<JsonObject> AssembleAsync(TextWriter output, params JsonNode[] events) =>
        new StreamedResponse(output).ReadAsync(new MemoryStream(Encoding.UTF8.GetBytes(Sse(events))), [], null, CancellationToken.None);
}

/// <summary>Assertions the tests of all three APIs use.</summary>
static class ApiAssert
{
    /// <summary>"Step 1:" to "Step 4:" each on stderr, in order.</summary>
    public static void StepsInOrder(string stderr)
    {
        int[] positions = [.. Enumerable.Range(1, 4).Select(n => stderr.IndexOf($"Step {n}:", StringComparison.Ordinal))];
        Assert.All(positions, p => Assert.True(p >= 0, stderr));
        Assert.Equal(positions.Order(), positions);
    }

    public static void HasFields(JsonNode node, params string[] fields)
    {
        JsonObject obj = Assert.IsType<JsonObject>(node);
        foreach (string field in fields)
            Assert.True(obj.ContainsKey(field), $"missing \"{field}\" in {obj.ToJsonString()}");
    }
}
