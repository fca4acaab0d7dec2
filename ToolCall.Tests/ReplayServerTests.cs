using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>The replay server enforces the real API's history rules, whatever the cassette says, with the API's
/// own error shape and wording. Each gotcha of tool calling is one of these.</summary>
public class HistoryRuleTests
{
    static readonly JsonObject Asked = Wire.AskForTools(Wire.WeatherCall("call_1", "London"), Wire.WeatherCall("call_2", "Paris"));

    [Fact]
    public async Task ToolResultWithoutAssistantMessage_IsRejectedWith400()
    {
        JsonObject error = await RejectedAsync(Wire.User("Weather?"), Wire.ToolMessage("call_1", Wire.Weather("London")));

        Assert.Equal("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.", (string)error["message"]!);
        Assert.Equal("invalid_request_error", (string)error["type"]!);
        Assert.Equal("messages.[1].role", (string)error["param"]!);
        Assert.Null(error["code"]);
        Assert.True(error.ContainsKey("code"), "the API's error object always carries code, null here");
    }

    [Fact]
    public async Task ToolResultsBeforeTheAssistantMessage_AreRejectedWith400()
    {
        JsonObject error = await RejectedAsync(
            Wire.User("Weather?"), Wire.ToolMessage("call_1", "x"), Wire.ToolMessage("call_2", "y"), Asked);

        Assert.StartsWith("Invalid parameter: messages with role 'tool' must be a response", (string)error["message"]!);
        Assert.Equal("messages.[1].role", (string)error["param"]!);
    }

    [Fact]
    public async Task AssistantToolCallsWithOneCallUnanswered_IsRejectedWith400NamingTheCall()
    {
        JsonObject error = await RejectedAsync(Wire.User("Weather?"), Asked, Wire.ToolMessage("call_1", Wire.Weather("London")));

        Assert.Equal(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. " +
            "The following tool_call_ids did not have response messages: call_2",
            (string)error["message"]!);
        Assert.Equal("invalid_request_error", (string)error["type"]!);
    }

    [Fact]
    public async Task UnansweredCall_FollowedByAnotherMessage_IsRejectedWith400()
    {
        JsonObject error = await RejectedAsync(
            Wire.User("Weather?"), Asked, Wire.ToolMessage("call_2", "y"), Wire.User("And now?"));

        Assert.EndsWith("did not have response messages: call_1", (string)error["message"]!);
    }

    [Fact]
    public async Task ToolMessageAnsweringACallThatWasNotMade_IsRejectedWith400()
    {
        JsonObject error = await RejectedAsync(
            Wire.User("Weather?"), Asked, Wire.ToolMessage("call_1", "x"), Wire.ToolMessage("call_9", "y"));

        Assert.Equal("Invalid parameter: 'tool_call_id' of 'call_9' not found in 'tool_calls' of previous message.", (string)error["message"]!);
    }

    [Fact]
    public async Task ArgumentsSentBackAsAnObject_AreRejectedWith400()
    {
        JsonObject asked = Wire.AskForTools(Wire.Call("call_1", "get_weather", new JsonObject { ["city"] = "London" }));

        JsonObject error = await RejectedAsync(Wire.User("Weather?"), asked, Wire.ToolMessage("call_1", "x"));

        Assert.Equal("Invalid type for 'messages[1].tool_calls[0].function.arguments': expected a string, but got an object instead.", (string)error["message"]!);
        Assert.Equal("invalid_type", (string)error["code"]!);
    }

    [Fact]
    public async Task HistoryWithEveryCallAnsweredInOrder_IsServedFromTheCassette()
    {
        JsonObject request = Wire.Request(
            Wire.User("Weather?"), Asked, Wire.ToolMessage("call_1", Wire.Weather("London")), Wire.ToolMessage("call_2", Wire.Weather("Paris")));
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(request, Wire.Completion(Wire.Text("Both mild.")))));

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", request);

        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("Both mild.", (string)body!["choices"]![0]!["message"]!["content"]!);
    }

    [Fact]
    public async Task RulesApply_EvenWhenTheCassetteRecordedTheBrokenRequest()
    {
        JsonObject broken = Wire.Request(Wire.User("Weather?"), Wire.ToolMessage("call_1", "x"));
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(broken, Wire.Completion(Wire.Text("unreachable")))));

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", broken);

        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("preceeding message with 'tool_calls'", (string)body!["error"]!["message"]!);
    }

    /// <summary>Posts a history that breaks a rule and returns the error object of the 400.</summary>
    static async Task<JsonObject> RejectedAsync(params JsonObject[] messages)
    {
        JsonObject request = Wire.Request(messages);
        // The cassette holds exactly this request, so only the history rules can reject it.
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(request, Wire.Completion(Wire.Text("unreachable")))));
        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", request);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        return body!["error"]!.AsObject();
    }
}

/// <summary>How the replay server matches requests to the cassette and speaks HTTP.</summary>
public class ReplayServerTests
{
    static readonly JsonObject Hello = Wire.Request(Wire.User("Hello?"));

    static Cassette HelloCassette(string answer = "Hi.") => Wire.Cassette(Wire.Exchange(Hello, Wire.Completion(Wire.Text(answer))));

    [Fact]
    public async Task Mismatch_Answers400NamingTheInteractionAndTheFirstDifferingPath()
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette());

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", Wire.Request(Wire.User("Goodbye?")));

        Assert.Equal(HttpStatusCode.BadRequest, status); // 400: not a status that clients retry
        string message = (string)body!["error"]!["message"]!;
        Assert.Contains("interaction 1 of 1", message);
        Assert.Contains("$.messages[0].content: expected \"Hello?\", got \"Goodbye?\"", message);
        Assert.Equal("replay_mismatch", (string)body["error"]!["code"]!);
    }

    [Fact]
    public async Task Mismatch_ReportsAMissingMessageByTheLengthOfTheArray()
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette());

        (_, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", Wire.Request(Wire.User("Hello?"), Wire.User("Still there?")));

        Assert.Contains("$.messages: expected 1 item, got 2", (string)body!["error"]!["message"]!);
    }

    [Fact]
    public async Task Matching_IgnoresTheModel_SoAnyModelCanReplay()
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette());
        JsonObject request = Hello.DeepClone().AsObject();
        request["model"] = "llama3.2";

        (HttpStatusCode status, _) = await Http.PostAsync(server.BaseUrl + "/chat/completions", request);

        Assert.Equal(HttpStatusCode.OK, status);
    }

    [Fact]
    public async Task Matching_ReadsJsonAsTheApiDoes_KeyOrderWhitespaceAndNullVersusAbsent()
    {
        JsonObject recorded = Wire.Request(Wire.User("Weather?"), Wire.AskForTools(Wire.Call("call_1", "get_weather", """{"city":"London","units":"c"}""")), Wire.ToolMessage("call_1", "x"));
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(recorded, Wire.Completion(Wire.Text("ok")))));
        // Same request, written differently: arguments re-indented with keys swapped, the assistant's null fields
        // left out, the top-level keys in another order.
        JsonObject assistant = new()
        {
            ["tool_calls"] = new JsonArray(Wire.Call("call_1", "get_weather", "{ \"units\": \"c\",\n  \"city\": \"London\" }")),
            ["role"] = "assistant",
        };
        JsonObject same = new()
        {
            ["tools"] = ToolCalling.ToolDefinitions(ProgramTools.Create()),
            ["messages"] = new JsonArray(Wire.User("Weather?"), assistant, Wire.ToolMessage("call_1", "x")),
            ["model"] = Wire.Model,
        };

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", same);

        Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
    }

    [Fact]
    public async Task Matching_StillSeesADifferentArgumentValue()
    {
        JsonObject recorded = Wire.Request(Wire.User("Weather?"), Wire.AskForTools(Wire.WeatherCall("call_1", "London")), Wire.ToolMessage("call_1", "x"));
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(recorded, Wire.Completion(Wire.Text("ok")))));
        JsonObject other = Wire.Request(Wire.User("Weather?"), Wire.AskForTools(Wire.WeatherCall("call_1", "Paris")), Wire.ToolMessage("call_1", "x"));

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", other);

        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("$.messages[1].tool_calls[0].function.arguments", (string)body!["error"]!["message"]!);
    }

    [Fact]
    public void Matching_ReadsToolChoiceAutoWithTools_AsTheDefaultItIs_ButSeesAnyOtherChoice()
    {
        JsonObject recorded = Wire.Request(Wire.User("Weather?"));
        JsonObject auto = Wire.Request(Wire.User("Weather?"));
        auto["tool_choice"] = "auto";
        JsonObject required = Wire.Request(Wire.User("Weather?"));
        required["tool_choice"] = "required";

        Assert.Null(JsonMatch.FirstDifference(recorded, auto));
        Assert.Null(JsonMatch.FirstDifference(auto, recorded));
        Assert.Equal("$.tool_choice: expected nothing, got \"required\"", JsonMatch.FirstDifference(recorded, required));
    }

    [Fact]
    public void Matching_SeesToolChoiceAuto_WhenNoToolsAreSent() // then the API's default is "none", not "auto"
    {
        var recorded = new JsonObject { ["model"] = Wire.Model, ["messages"] = new JsonArray(Wire.User("Hi")) };
        JsonObject auto = recorded.DeepClone().AsObject();
        auto["tool_choice"] = "auto";

        Assert.Equal("$.tool_choice: expected nothing, got \"auto\"", JsonMatch.FirstDifference(recorded, auto));
    }

    [Fact]
    public void Matching_ReadsAnAssistantsEmptyAnnotationsAsAbsent_ButSeesRealOnes()
    {
        JsonObject asked = Wire.AskForTools(Wire.WeatherCall("call_1", "London"));
        JsonObject echoed = asked.DeepClone().AsObject();
        echoed["annotations"] = new JsonArray(); // as the API returns it, and this project sends it back
        JsonObject cited = asked.DeepClone().AsObject();
        cited["annotations"] = new JsonArray(new JsonObject { ["type"] = "url_citation" });
        JsonObject Request(JsonObject assistant) => Wire.Request(Wire.User("Weather?"), assistant, Wire.ToolMessage("call_1", "x"));

        Assert.Null(JsonMatch.FirstDifference(Request(echoed), Request(asked)));
        Assert.Null(JsonMatch.FirstDifference(Request(asked), Request(echoed)));
        Assert.StartsWith("$.messages[1].annotations: expected nothing", JsonMatch.FirstDifference(Request(asked), Request(cited)));
    }

    [Fact]
    public async Task AfterTheLastInteraction_TheCassetteStartsOver()
    {
        await using ReplayServer server = ReplayServer.Start(Cassette.Load(Repo.Cassette("weather.json")));
        using var http = new HttpClient();

        for (int run = 0; run < 3; run++)
        {
            string answer = await ToolCalling.RunAsync(
                new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, StepLog.Silent), Wire.Model, Cli.DefaultQuestion, ProgramTools.Create(), new FlowOptions(), CancellationToken.None);
            Assert.Equal("It's currently +18°C and partly cloudy in London.", answer);
        }
    }

    [Fact]
    public async Task InOrderMode_TheFirstInteractionsRequest_StartsTheReplayOver_SoAnAbandonedFlowBlocksNoOne()
    {
        Cassette weather = Cassette.Load(Repo.Cassette("weather.json"));
        var log = new StringWriter();
        await using ReplayServer server = ReplayServer.Start(weather, log: log);
        string url = server.BaseUrl + "/chat/completions";

        // A client stopped by Ctrl+C after its first request, or one that timed out on it and sends it again: either
        // way the server has played interaction 1 and expects interaction 2, which never comes.
        (HttpStatusCode first, _) = await Http.PostAsync(url, weather.Interactions[0].RequestBody!);
        string[] answers = [await RunWeatherFlowAsync(server), await RunWeatherFlowAsync(server)];

        Assert.Equal(HttpStatusCode.OK, first);
        Assert.All(answers, answer => Assert.Equal("It's currently +18°C and partly cloudy in London.", answer));
        Assert.Equal(0, server.Mismatches);
        Assert.Equal(
            [
                "POST /v1/chat/completions -> 200 (interaction 1 of 2)",
                "POST /v1/chat/completions -> 200 (interaction 1 of 2; the replay starts over: the request did not match interaction 2 but is the first one's)",
                "POST /v1/chat/completions -> 200 (interaction 2 of 2)",
                "POST /v1/chat/completions -> 200 (interaction 1 of 2)",
                "POST /v1/chat/completions -> 200 (interaction 2 of 2)",
            ],
            log.ToString().TrimEnd().Split(Environment.NewLine));
    }

    [Fact]
    public async Task InOrderMode_ARetryOfTheSameRequest_GetsTheInteractionAtTheCursor_NotAFreshStart()
    {
        Cassette retries = Cassette.Load(Repo.Cassette("faults/retry-then-answer.json")); // the first request: 429, 503, then answered
        var log = new StringWriter();
        await using ReplayServer server = ReplayServer.Start(retries, log: log);
        string url = server.BaseUrl + "/chat/completions";
        JsonNode question = retries.Interactions[0].RequestBody!;

        HttpStatusCode[] statuses = [(await Http.PostAsync(url, question)).Status, (await Http.PostAsync(url, question)).Status, (await Http.PostAsync(url, question)).Status];

        Assert.Equal([HttpStatusCode.TooManyRequests, HttpStatusCode.ServiceUnavailable, HttpStatusCode.OK], statuses);
        Assert.DoesNotContain("starts over", log.ToString());
    }

    [Fact]
    public async Task InOrderMode_AStrayRequest_NeverMovesTheCursor_NorBlocksTheNextClient()
    {
        Cassette weather = Cassette.Load(Repo.Cassette("weather.json"));
        await using ReplayServer server = ReplayServer.Start(weather);
        string url = server.BaseUrl + "/chat/completions";

        (HttpStatusCode strayAtTheStart, _) = await Http.PostAsync(url, Hello);
        (HttpStatusCode first, _) = await Http.PostAsync(url, weather.Interactions[0].RequestBody!);
        (HttpStatusCode strayInTheMiddle, _) = await Http.PostAsync(url, Hello);
        (HttpStatusCode second, _) = await Http.PostAsync(url, weather.Interactions[1].RequestBody!);
        string next = await RunWeatherFlowAsync(server);

        Assert.Equal([HttpStatusCode.BadRequest, HttpStatusCode.OK, HttpStatusCode.BadRequest, HttpStatusCode.OK], [strayAtTheStart, first, strayInTheMiddle, second]);
        Assert.Equal("It's currently +18°C and partly cloudy in London.", next);
        Assert.Equal(2, server.Mismatches);
    }

    static async Task<string> RunWeatherFlowAsync(ReplayServer server)
    {
        using var http = new HttpClient();
        var chat = new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, StepLog.Silent) { Retries = new RetryPolicy { MaxRetries = 0 } };
        return await ToolCalling.RunAsync(chat, Wire.Model, Cli.DefaultQuestion, ProgramTools.Create(), new FlowOptions(), CancellationToken.None);
    }

    [Fact]
    public async Task Connections_AreKeptAlive_SoOneClientUsesOneConnection()
    {
        await using ReplayServer server = ReplayServer.Start(Cassette.Load(Repo.Cassette("two-cities.json")));
        using var http = new HttpClient();

        for (int run = 0; run < 3; run++)
        {
            await ToolCalling.RunAsync(
                new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, StepLog.Silent), Wire.Model, "What's the weather in London and Paris right now?",
                ProgramTools.Create(), new FlowOptions(), CancellationToken.None);
        }

        Assert.Equal(1, server.ConnectionsAccepted); // six requests, one TCP connection
    }

    [Fact]
    public async Task UnknownPath_Answers404InTheApiErrorShape()
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette());

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl.Replace("/v1", "") + "/chat/completions", Hello);

        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.StartsWith("Unknown request URL: POST /chat/completions.", (string)body!["error"]!["message"]!);
        Assert.Equal("invalid_request_error", (string)body["error"]!["type"]!);
    }

    [Fact]
    public async Task BodyThatIsNotJson_Answers400()
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette());

        (HttpStatusCode status, JsonNode? body) = await Http.PostTextAsync(server.BaseUrl + "/chat/completions", "{\"messages\": [");

        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.StartsWith("We could not parse the JSON body of your request.", (string)body!["error"]!["message"]!);
    }

    [Fact]
    public async Task ChunkedRequestBody_IsReadLikeASizedOne()
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette("Chunks are fine."));
        using var http = new HttpClient();
        // A stream of unknown length makes HttpClient send Transfer-Encoding: chunked.
        using var content = new StreamContent(new UnknownLengthStream(Encoding.UTF8.GetBytes(Hello.ToJsonString())));
        content.Headers.ContentType = new("application/json");

        using HttpResponseMessage response = await http.PostAsync(server.BaseUrl + "/chat/completions", content);

        Assert.True(response.RequestMessage!.Headers.TransferEncodingChunked ?? false);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("Chunks are fine.", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task BodyOverTheLimit_Answers413WithoutReadingIt()
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette());
        var url = new Uri(server.BaseUrl);
        using var client = new TcpClient();
        await client.ConnectAsync(url.Host, url.Port);
        NetworkStream stream = client.GetStream();

        // Announce a body far over the limit and send none of it: the answer must come anyway.
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            $"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {ReplayServer.MaxBodyBytes + 1L}\r\n\r\n"));
        string response = await new StreamReader(stream).ReadToEndAsync(); // the server closes after a 413

        Assert.StartsWith("HTTP/1.1 413 ", response);
    }

    /// <summary>A read-only stream that does not tell its length.</summary>
    sealed class UnknownLengthStream(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;
    }
}
