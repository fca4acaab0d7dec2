using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// The replay server's fault injection, declared per interaction in the cassette: what goes over the wire, and the
/// one clear line the client makes of it. Time-based faults run on a manual clock: nothing here sleeps.
/// </summary>
public class FaultInjectionTests
{
    static readonly JsonObject Hello = Wire.Request(Wire.User("Hello?"));
    static readonly Interaction Answer = Wire.Exchange(Hello, Wire.Completion(Wire.Text("Hi.")));
    static readonly int AnswerLength = Json.Utf8(Answer.ResponseBody!).Length;

    [Fact]
    public async Task StatusWithHeaders_IsSentAsDeclared()
    {
        Interaction limited = Wire.Exchange(Hello, ApiError.Create("Slow down.", "requests"), 429) with
        {
            Headers = new Dictionary<string, string> { ["Retry-After"] = "1", ["retry-after-ms"] = "1000" },
        };
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(limited));

        using HttpResponseMessage response = await PostAsync(server);

        Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(1), response.Headers.RetryAfter?.Delta);
        Assert.Equal("1000", response.Headers.GetValues("retry-after-ms").Single());
    }

    [Fact]
    public async Task Delay_HoldsTheResponseBackUntilItsTimeHasPassed()
    {
        var clock = new ManualClock();
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Answer with { Fault = new Fault(DelayMs: 5000) }), time: clock);

        Task<HttpResponseMessage> post = PostAsync(server);
        await clock.TimerPendingAsync(TimeSpan.FromSeconds(5));
        Assert.False(post.IsCompleted, "answered before the delay was over");
        clock.Advance(TimeSpan.FromSeconds(5));
        using HttpResponseMessage response = await post;

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task Drip_SendsTheBodyAFewBytesAtATime_WithAPauseBetween()
    {
        var clock = new ManualClock();
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Answer with { Fault = new Fault(DripBytes: 50, DripIntervalMs: 1000) }), time: clock);
        using var http = new HttpClient();

        // Headers first; then each pause of the drip is one timer of a second, which the test lets pass.
        using var request = new HttpRequestMessage(HttpMethod.Post, server.BaseUrl + "/chat/completions") { Content = Content(Hello) };
        using HttpResponseMessage response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Task<string> body = response.Content.ReadAsStringAsync();
        int pauses = 0;
        while (true)
        {
            Task pause = clock.TimerPendingAsync(TimeSpan.FromSeconds(1));
            if (await Task.WhenAny(body, pause) == body)
                break;
            await pause; // throws when neither the body nor another pause came
            clock.Advance(TimeSpan.FromSeconds(1));
            pauses++;
        }

        Assert.Equal((AnswerLength + 49) / 50 - 1, pauses);
        Assert.Contains("Hi.", await body);
    }

    [Fact]
    public async Task CloseAfterBytes_EndsTheConnectionShortOfTheContentLength()
    {
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Answer with { Fault = new Fault(CloseAfterBytes: 30) }));

        (string head, byte[] body) = await RawExchangeAsync(server);

        Assert.StartsWith("HTTP/1.1 200 OK", head);
        Assert.Contains($"Content-Length: {AnswerLength}", head);
        Assert.Equal(30, body.Length); // and then the connection closed
    }

    [Fact]
    public async Task TruncateAfterBytes_SendsAWholeResponseWhoseBodyIsCut()
    {
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Answer with { Fault = new Fault(TruncateAfterBytes: 30) }));

        (string head, byte[] body) = await RawExchangeAsync(server);

        Assert.Contains("Content-Length: 30", head);
        Assert.Equal(Json.Utf8(Answer.ResponseBody!)[..30].ToArray(), body);
    }

    [Fact]
    public async Task ContentTypeHeader_ReplacesTheJsonOne()
    {
        Interaction html = Answer with { Headers = new Dictionary<string, string> { ["Content-Type"] = "text/html; charset=utf-8" } };
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(html));

        (string head, _) = await RawExchangeAsync(server);

        Assert.Contains("Content-Type: text/html; charset=utf-8", head);
        Assert.DoesNotContain("application/json", head);
    }

    [Fact]
    public async Task JsonBodyWithTheWrongContentType_IsStillRead()
    {
        Interaction plain = Answer with { Headers = new Dictionary<string, string> { ["Content-Type"] = "text/plain" } };

        JsonObject completion = await PostWithClientAsync(plain);

        Assert.Equal("Hi.", (string)completion["choices"]![0]!["message"]!["content"]!);
    }

    [Fact]
    public async Task HtmlInsteadOfJson_FailsWithOneLineNamingTheContentType()
    {
        Interaction html = Wire.Exchange(Hello, Wire.Completion(Wire.Text("unused"))) with
        {
            ResponseText = "<html><body><h1>Welcome to nginx!</h1></body></html>",
            Headers = new Dictionary<string, string> { ["Content-Type"] = "text/html" },
        };

        var e = await Assert.ThrowsAsync<FlowException>(() => PostWithClientAsync(html));

        Assert.Equal(
            "HTTP 200, but the response body (text/html) is not JSON ('<' is an invalid start of a value); it starts with \"<html><body><h1>Welcome to nginx!</h1></…\". " +
            "Check that the base URL points at an OpenAI-compatible API.", e.Message);
    }

    [Fact]
    public async Task TruncatedBody_FailsSayingItIsCutOff_WithoutARetry()
    {
        var waits = new NotedWaits();

        var e = await Assert.ThrowsAsync<FlowException>(() => PostWithClientAsync(Answer with { Fault = new Fault(TruncateAfterBytes: 30) }, waits));

        Assert.Equal("HTTP 200, but the response body is cut off: its 30 bytes end in the middle of the JSON. Try again.", e.Message);
        Assert.Empty(waits.Waits); // a broken 200 is not retried
    }

    [Fact]
    public async Task EmptyBody_FailsSayingSo()
    {
        var e = await Assert.ThrowsAsync<FlowException>(() => PostWithClientAsync(Answer with { ResponseText = "" }));

        Assert.Equal("HTTP 200, but the response body is empty: there is no completion to read.", e.Message);
    }

    [Fact]
    public async Task BodyThatIsJsonButNotAnObject_FailsSayingWhatItIs()
    {
        var e = await Assert.ThrowsAsync<FlowException>(() => PostWithClientAsync(Answer with { ResponseText = "[\"Hi.\"]" }));

        Assert.Equal("HTTP 200, but the response body is an array, not a JSON object.", e.Message);
    }

    [Fact]
    public async Task ProxyErrorPage_IsRetried_ThenShownAsTheStatusAndTheStartOfThePage()
    {
        Interaction badGateway = Wire.Exchange(Hello, Wire.Completion(Wire.Text("unused")), 502) with
        {
            ResponseText = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n</html>",
            Headers = new Dictionary<string, string> { ["Content-Type"] = "text/html" },
        };

        var e = await Assert.ThrowsAsync<FlowException>(() => PostWithClientAsync(badGateway));

        Assert.Equal("HTTP 502 Bad Gateway: <html> <head><title>502 Bad Gateway</title></head> </html> (gave up after 2 retries)", e.Message);
    }

    [Fact]
    public async Task ErrorMessageWithLineBreaks_IsShownOnOneLine()
    {
        Interaction error = Wire.Exchange(Hello, ApiError.Create("Something broke.\nTraceback (most recent call last):\n\tFile \"server.py\""), 400);

        var e = await Assert.ThrowsAsync<FlowException>(() => PostWithClientAsync(error));

        Assert.Equal("HTTP 400 Bad Request: Something broke. Traceback (most recent call last):  File \"server.py\"", e.Message);
    }

    [Fact]
    public void Cassette_WithHeadersTextFaultsAndContentMatching_RoundTripsThroughSaveAndLoad()
    {
        using var dir = new TempDir();
        var cassette = new Cassette("Written by a test.",
        [
            Wire.Exchange(Hello, ApiError.Create("Slow down."), 429) with { Headers = new Dictionary<string, string> { ["Retry-After"] = "2" } },
            Answer with { ResponseText = "<html>oops</html>", Fault = new Fault(1, 2, 3, 4, 5) },
            Answer,
        ])
        { MatchByContent = true };

        Cassette loaded = Cassette.Load(cassette.Save(dir));

        Assert.True(JsonNode.DeepEquals(cassette.ToJson(), loaded.ToJson()), loaded.ToJson().ToJsonString());
        Assert.True(loaded.MatchByContent);
        Assert.Equal(new Fault(1, 2, 3, 4, 5), loaded.Interactions[1].Fault);
        Assert.Equal("2", loaded.Interactions[0].Headers["retry-after"]);
        Assert.Equal(Fault.None, loaded.Interactions[2].Fault);
    }

    [Theory]
    [InlineData("""{"delay": 5}""", "unknown fault field \"delay\"")]
    [InlineData("""{"delay_ms": -1}""", "fault field \"delay_ms\" must be a whole number from 0")]
    [InlineData("""{"drip_bytes": "8"}""", "fault field \"drip_bytes\" must be a whole number from 0")]
    [InlineData("""5""", "\"fault\": it must be an object")]
    public async Task CassetteWithABadFault_ExitsWith2NamingTheField(string fault, string expected)
    {
        using var dir = new TempDir();
        JsonObject json = Wire.Cassette(Answer).ToJson();
        json["interactions"]![0]!["response"]!["fault"] = JsonNode.Parse(fault);
        File.WriteAllText(dir.File("c.json"), json.ToJsonString());

        CliResult run = await App.RunAsync("--replay", dir.File("c.json"));

        Assert.Equal(2, run.ExitCode);
        Assert.Contains(expected, run.Stderr);
    }

    [Fact]
    public async Task CassetteHeaderWithALineBreak_IsRefused_SoACassetteCannotWriteItsOwnResponse()
    {
        using var dir = new TempDir();
        JsonObject json = Wire.Cassette(Answer).ToJson();
        json["interactions"]![0]!["response"]!["headers"] = new JsonObject { ["X-Note"] = "a\r\nContent-Length: 0" };
        File.WriteAllText(dir.File("c.json"), json.ToJsonString());

        CliResult run = await App.RunAsync("--replay", dir.File("c.json"));

        Assert.Equal(2, run.ExitCode);
        Assert.Contains("\"headers\" must be an object of strings without line breaks", run.Stderr);
    }

    static StringContent Content(JsonNode body) => new(body.ToJsonString(), Encoding.UTF8, "application/json");

    static async Task<HttpResponseMessage> PostAsync(ReplayServer server)
    {
        using var http = new HttpClient();
        return await http.PostAsync(server.BaseUrl + "/chat/completions", Content(Hello));
    }

    /// <summary>Plays `interaction` to this project's client, with retries noted rather than waited.</summary>
    static async Task<JsonObject> PostWithClientAsync(Interaction interaction, NotedWaits? waits = null)
    {
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(interaction));
        using var http = new HttpClient();
        var chat = new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, StepLog.Silent) { Retries = new RetryPolicy { Delay = (waits ?? new NotedWaits()).Delay } };
        return await chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None);
    }

    /// <summary>One request on a raw connection, "Connection: close", read to the end: the head and the body bytes as sent.</summary>
    static async Task<(string Head, byte[] Body)> RawExchangeAsync(ReplayServer server)
    {
        var url = new Uri(server.BaseUrl);
        using var client = new TcpClient();
        await client.ConnectAsync(url.Host, url.Port);
        NetworkStream stream = client.GetStream();
        byte[] body = Encoding.UTF8.GetBytes(Hello.ToJsonString());
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            $"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n"));
        await stream.WriteAsync(body);
        var received = new MemoryStream();
        await stream.CopyToAsync(received).WaitAsync(TimeSpan.FromSeconds(10));
        byte[] all = received.ToArray();
        int headEnd = all.AsSpan().IndexOf("\r\n\r\n"u8);
        return (Encoding.ASCII.GetString(all, 0, headEnd), all[(headEnd + 4)..]);
    }
}
