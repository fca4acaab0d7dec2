using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// The replay server under load and abuse: concurrent clients, malformed and slow requests, and stopping on a
/// signal. It answers every request it can parse, refuses the rest with a status, and keeps serving.
/// </summary>
public class ServerHardeningTests
{
    static readonly JsonObject Hello = Wire.Request(Wire.User("Hello?"));
    static readonly Cassette HelloCassette = Wire.Cassette(Wire.Exchange(Hello, Wire.Completion(Wire.Text("Hi."))));
    static readonly string HelloBody = Hello.ToJsonString();

    public static TheoryData<string, string, int> MalformedRequests() => new()
    {
        { "body that is not JSON", Post("{\"messages\": ["), 400 },
        { "body with a key twice", Post(HelloBody.Replace("{\"model\":", "{\"model\":\"x\",\"model\":", StringComparison.Ordinal)), 400 },
        { "body that is an array", Post("[1,2]"), 400 },
        { "tool call that is not an object", Post(Wire.Request(Wire.User("Hi?"), new JsonObject { ["role"] = "assistant", ["tool_calls"] = new JsonArray("x") }).ToJsonString()), 400 },
        { "wrong method", $"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400 },
        { "unknown path", $"POST /v2/chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}", 404 },
        { "request line that is not HTTP", "HELLO THERE\r\n\r\n", 400 },
        { "Content-Length that is not a number", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n", 400 },
        { "body over the limit, announced", $"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {ReplayServer.MaxBodyBytes + 1L}\r\n\r\n", 413 },
        { "body over the limit, chunked", $"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{ReplayServer.MaxBodyBytes + 1:x}\r\n", 413 },
        { "chunk size that is not hex", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400 },
        { "headers over the limit", $"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Padding: {new string('a', 40_000)}\r\n\r\n", 431 },
    };

    [Theory]
    [MemberData(nameof(MalformedRequests))]
    public async Task MalformedRequest_IsRefusedWithAStatus_AndTheServerKeepsServing(string what, string request, int status)
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette);

        string response = await RawAsync(server, request);

        Assert.True(response.StartsWith($"HTTP/1.1 {status} ", StringComparison.Ordinal), $"{what}: {response}");
        await AssertStillServesAsync(server);
    }

    public static TheoryData<string, string> RequestsThatRfc9112Refuses() => new()
    {
        { "two Content-Length lines that differ", Head("Content-Length: {0}", "Content-Length: 1{0}") + HelloBody },
        { "a Content-Length list that differs", Head("Content-Length: {0}, 1{0}") + HelloBody },
        { "Transfer-Encoding and Content-Length", Head("Transfer-Encoding: chunked", "Content-Length: {0}") + Chunked(HelloBody) },
        { "Transfer-Encoding that does not end in chunked", Head("Transfer-Encoding: chunked, gzip") + Chunked(HelloBody) },
        { "a header line without a colon", Head("Content-Length: {0}", "X-No-Colon") + HelloBody },
        { "whitespace between a header name and its colon", Head("Content-Length : {0}") + HelloBody },
        { "a header line folded onto the one before", Head("Content-Length: {0}", " X-Folded: more") + HelloBody },
        { "a header name that is not a token", Head("Content-Length: {0}", "X(Note): y") + HelloBody },
    };

    /// <summary>RFC 9112 §5.1, §5.2 and §6.3: a header line the server cannot read for certain, or two framings of the
    /// body that disagree, is answered 400 at once, never guessed at; the server's clock never moves here, so an
    /// answer that waited for the body a framing promises (a 408) fails the test.</summary>
    [Theory]
    [MemberData(nameof(RequestsThatRfc9112Refuses))]
    public async Task RequestThatRfc9112Refuses_IsAnswered400AtOnce_AndTheServerKeepsServing(string what, string request)
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette, time: new ManualClock());

        string response = await RawAsync(server, request);

        Assert.True(response.StartsWith("HTTP/1.1 400 ", StringComparison.Ordinal), $"{what}: {response}");
        Assert.Contains("Connection: close", response);
        await AssertStillServesAsync(server);
    }

    [Theory]
    [InlineData("two Content-Length lines with one value", "Content-Length: {0}", "Content-Length: {0}")]
    [InlineData("a Content-Length list of one value", "Content-Length: {0}, {0}")]
    public async Task ContentLengthGivenTwiceWithOneValue_IsRead_AsRfc9110Allows(string what, params string[] headers)
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette);

        string response = await RawAsync(server, Head(headers) + HelloBody);

        Assert.True(response.StartsWith("HTTP/1.1 200 ", StringComparison.Ordinal), $"{what}: {response}");
    }

    [Fact]
    public async Task SlowlorisHeaders_AreCutAfterTheRequestTimeout_AndOthersAreStillServed()
    {
        var clock = new ManualClock();
        await using ReplayServer server = ReplayServer.Start(HelloCassette, time: clock);
        using TcpClient slow = await ConnectAsync(server);
        await slow.GetStream().WriteAsync("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"u8.ToArray()); // and never the rest

        await clock.TimerPendingAsync(ReplayServer.RequestTimeout);
        clock.Advance(ReplayServer.RequestTimeout);
        string response = await ReadToEndAsync(slow.GetStream());

        Assert.True(response == "" || response.StartsWith("HTTP/1.1 408 ", StringComparison.Ordinal), response); // cut, with or without a word
        await AssertStillServesAsync(server);
    }

    [Fact]
    public async Task SlowlorisBody_IsAnswered408AfterTheRequestTimeout()
    {
        var clock = new ManualClock();
        await using ReplayServer server = ReplayServer.Start(HelloCassette, time: clock);
        using TcpClient slow = await ConnectAsync(server);
        NetworkStream stream = slow.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n{\"mess"));
        // "100 Continue" proves the server has the headers and now waits for the other 94 bytes of the body.
        Assert.StartsWith("HTTP/1.1 100 Continue", await ReadSomeAsync(stream));

        await clock.TimerPendingAsync(ReplayServer.RequestTimeout);
        clock.Advance(ReplayServer.RequestTimeout);
        string response = await ReadToEndAsync(slow.GetStream());

        Assert.StartsWith("HTTP/1.1 408 Request Timeout", response);
        Assert.Contains("The request did not arrive whole within 10 seconds.", response);
        await AssertStillServesAsync(server);
    }

    [Fact]
    public async Task Log_EscapesControlCharactersOfTheRequest_SoNoRequestWritesToTheTerminalOrStartsALine()
    {
        var log = new StringWriter();
        await using ReplayServer server = ReplayServer.Start(HelloCassette, log: log);
        // ESC [2J clears a terminal, U+009B is CSI in one character, and a line feed would start a log line of its own.
        string path = "/v1/\u001b[2J\u009b\n";

        string response = await RawAsync(server, Encoding.Latin1.GetBytes(Post(HelloBody, path: path)));

        Assert.StartsWith("HTTP/1.1 400 ", response);
        Assert.Equal(
            @"POST /v1/\u001b[2J\u009b\u000a -> 400 (mismatch at interaction 1 of 1: expected POST /chat/completions, got POST /\u001b[2J\u009b\u000a)",
            log.ToString().TrimEnd());
    }

    [Fact]
    public async Task Log_CutsAPathOver200Characters_GivingItsFullLength()
    {
        var log = new StringWriter();
        await using ReplayServer server = ReplayServer.Start(HelloCassette, log: log);
        string path = "/v1/" + new string('a', 4996);

        string response = await RawAsync(server, Encoding.Latin1.GetBytes(Post(HelloBody, path: path)));

        Assert.StartsWith("HTTP/1.1 400 ", response);
        Assert.Equal(
            $"POST /v1/{new string('a', 196)}... (5000 characters) -> 400 (mismatch at interaction 1 of 1: expected POST /chat/completions, got POST /{new string('a', 199)}... (4997 characters))",
            log.ToString().TrimEnd());
    }

    [Theory]
    [InlineData("body")]
    [InlineData("events")]
    public async Task RecordedBodyThatCannotBeSent_IsAnswered500SayingWhy_AndLoggedSo_NotCutOff(string kind)
    {
        // System.Text.Json writes no string over 166,666,666 characters (its 1 GB token limit over 6, the longest
        // escape of one character): a body that holds one was logged as 200, then the connection closed unanswered.
        var log = new StringWriter();
        var huge = new JsonObject { ["text"] = new string('a', 170_000_000) };
        Interaction recorded = kind == "body"
            ? Wire.Exchange(Hello, huge)
            : Wire.Exchange(Hello, Wire.Completion(Wire.Text("unused"))) with { ResponseEvents = new JsonArray(huge, "[DONE]") };
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(recorded), log: log);

        (HttpStatusCode status, JsonNode? error) = await Http.PostAsync(server.BaseUrl + "/chat/completions", Hello);

        Assert.Equal(HttpStatusCode.InternalServerError, status);
        Assert.StartsWith("The replay server cannot send the recorded body of interaction 1 of 1: ", (string)error!["error"]!["message"]!);
        Assert.StartsWith("POST /v1/chat/completions -> 500 (interaction 1 of 1, not sent: ", log.ToString());
    }

    /// <summary>
    /// Slowloris by reconnecting: clients that each send a byte every few seconds, and reconnect when dropped, keep
    /// every slot taken however short each one's RequestTimeout. Here every slot holds a request whose headers never
    /// end; a client with a whole request is served once the oldest of them has waited HeaderDeadline, not before.
    /// </summary>
    [Fact]
    public async Task WhenSlowHeadersHoldEverySlot_AWholeRequestIsServed_OnceTheOldestHasWaitedPastTheHeaderDeadline_NotBefore()
    {
        var clock = new ManualClock();
        var log = new StringWriter();
        await using ReplayServer server = ReplayServer.Start(HelloCassette, log: log, time: clock);
        List<TcpClient> drips = await ConnectAllAsync(server, ReplayServer.MaxConnections, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n");
        try
        {
            using TcpClient client = await ConnectAsync(server);
            await client.GetStream().WriteAsync(Encoding.UTF8.GetBytes(Post(HelloBody)));
            Task<string> answer = ReadToEndAsync(client.GetStream());

            await clock.TimerPendingAsync(ReplayServer.HeaderDeadline); // the server waits for the oldest drip's deadline
            Assert.False(answer.IsCompleted);
            Assert.Equal(ReplayServer.MaxConnections, server.ConnectionsAccepted); // the whole request waits to be accepted
            Assert.Equal("", log.ToString());

            clock.Advance(ReplayServer.HeaderDeadline);

            Assert.StartsWith("HTTP/1.1 200 OK", await answer);
            string reclaimed = await ReadToEndAsync(drips[0].GetStream()); // the oldest
            Assert.StartsWith("HTTP/1.1 408 Request Timeout", reclaimed);
            Assert.Contains("The request headers did not arrive whole within 2 seconds, and another client needed the connection.", reclaimed);
            Assert.Equal(ReplayServer.MaxConnections + 1, server.ConnectionsAccepted);
        }
        finally
        {
            drips.ForEach(drip => drip.Dispose());
        }
    }

    [Fact]
    public async Task WhenIdleKeptAliveConnectionsHoldEverySlot_AWholeRequestIsServed_OnceTheOldestHasWaitedPastTheHeaderDeadline()
    {
        var clock = new ManualClock();
        await using ReplayServer server = ReplayServer.Start(HelloCassette, time: clock);
        List<TcpClient> idle = await ConnectAllAsync(server, ReplayServer.MaxConnections, Post(HelloBody, keepAlive: true));
        try
        {
            foreach (TcpClient connection in idle)
                Assert.StartsWith("HTTP/1.1 200 OK", await ReadOneResponseAsync(connection.GetStream())); // and then nothing more
            using TcpClient client = await ConnectAsync(server);
            await client.GetStream().WriteAsync(Encoding.UTF8.GetBytes(Post(HelloBody)));
            Task<string> answer = ReadToEndAsync(client.GetStream());

            await clock.TimerPendingAsync(ReplayServer.HeaderDeadline);
            Assert.False(answer.IsCompleted);
            clock.Advance(ReplayServer.HeaderDeadline);

            Assert.StartsWith("HTTP/1.1 200 OK", await answer);
            Assert.Equal(ReplayServer.MaxConnections + 1, server.ConnectionsAccepted);
        }
        finally
        {
            idle.ForEach(connection => connection.Dispose());
        }
    }

    [Fact]
    public async Task AConnectionWhoseHeadersHaveArrived_IsNeverReclaimed_EvenWhenItIsTheOldest()
    {
        var clock = new ManualClock();
        await using ReplayServer server = ReplayServer.Start(HelloCassette, time: clock);
        using TcpClient oldest = await ConnectAsync(server);
        NetworkStream stream = oldest.GetStream();
        string head = Post(HelloBody)[..^HelloBody.Length].Replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n", StringComparison.Ordinal);
        await stream.WriteAsync(Encoding.UTF8.GetBytes(head));
        Assert.StartsWith("HTTP/1.1 100 Continue", await ReadSomeAsync(stream)); // the server has its headers, and waits for its body
        List<TcpClient> drips = await ConnectAllAsync(server, ReplayServer.MaxConnections - 1, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n");
        try
        {
            using TcpClient client = await ConnectAsync(server);
            await client.GetStream().WriteAsync(Encoding.UTF8.GetBytes(Post(HelloBody)));
            Task<string> answer = ReadToEndAsync(client.GetStream());

            await clock.TimerPendingAsync(ReplayServer.HeaderDeadline);
            clock.Advance(ReplayServer.HeaderDeadline);

            Assert.StartsWith("HTTP/1.1 200 OK", await answer);
            Assert.StartsWith("HTTP/1.1 408 ", await ReadToEndAsync(drips[0].GetStream())); // the oldest that waits for headers
            await stream.WriteAsync(Encoding.UTF8.GetBytes(HelloBody));
            Assert.StartsWith("HTTP/1.1 200 OK", await ReadToEndAsync(stream)); // still served
        }
        finally
        {
            drips.ForEach(drip => drip.Dispose());
        }
    }

    [Fact]
    public async Task SeededFuzzOfRawRequests_NeverBreaksTheServer()
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette);
        byte[] valid = Encoding.UTF8.GetBytes(Post(HelloBody, keepAlive: true));
        var random = new Random(4242);

        for (int i = 0; i < 200; i++)
        {
            byte[] mutated = Mutations.OfBytes(valid, random);
            using TcpClient client = await ConnectAsync(server);
            NetworkStream stream = client.GetStream();
            try
            {
                await stream.WriteAsync(mutated);
                client.Client.Shutdown(SocketShutdown.Send); // no more is coming: the server must not wait for it
            }
            catch (Exception e) when (e is IOException or SocketException)
            {
                // refused and closed before all of it was sent: its answer, if any, is still there to read
            }
            string response = await ReadToEndAsync(stream);

            Assert.False(response.StartsWith("HTTP/1.1 500 ", StringComparison.Ordinal), $"case {i}: {Encoding.UTF8.GetString(mutated)}\n{response}");
        }
        await AssertStillServesAsync(server);
    }

    [Fact]
    public async Task ContentMatching_AnswersEachRequestWhateverItsOrder()
    {
        Cassette weather = Cassette.Load(Repo.Cassette("weather.json")) with { MatchByContent = true };
        await using ReplayServer server = ReplayServer.Start(weather);

        (HttpStatusCode second, JsonNode? answer) = await Http.PostAsync(server.BaseUrl + "/chat/completions", weather.Interactions[1].RequestBody!);
        (HttpStatusCode first, JsonNode? toolCall) = await Http.PostAsync(server.BaseUrl + "/chat/completions", weather.Interactions[0].RequestBody!);
        (HttpStatusCode other, JsonNode? error) = await Http.PostAsync(server.BaseUrl + "/chat/completions", Hello);

        Assert.Equal((HttpStatusCode.OK, HttpStatusCode.OK), (second, first));
        Assert.Equal("It's currently +18°C and partly cloudy in London.", (string)answer!["choices"]![0]!["message"]!["content"]!);
        Assert.NotNull(toolCall!["choices"]![0]!["message"]!["tool_calls"]);
        Assert.Equal(HttpStatusCode.BadRequest, other);
        Assert.StartsWith("Replay mismatch: no interaction matches; interaction 1 of 2 differs at $.messages[0].content:", (string)error!["error"]!["message"]!);
        Assert.Equal(1, server.Mismatches);
    }

    [Fact]
    public async Task ThirtyTwoConcurrentFlowsOfFiftyRuns_AllMatch_OverOneConnectionEach_AndLeaveNoSocketOpen()
    {
        const int Flows = 32, Runs = 50;
        Cassette weather = Cassette.Load(Repo.Cassette("weather.json")) with { MatchByContent = true };
        await using ReplayServer server = ReplayServer.Start(weather);

        string[][] answers = await Task.WhenAll(Enumerable.Range(0, Flows).Select(async _ =>
        {
            using var http = new HttpClient();
            var chat = new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, StepLog.Silent) { Retries = new RetryPolicy { MaxRetries = 0 } };
            var mine = new List<string>();
            for (int run = 0; run < Runs; run++)
                mine.Add(await ToolCalling.RunAsync(chat, Wire.Model, Cli.DefaultQuestion, ProgramTools.Create(), new FlowOptions(), CancellationToken.None));
            return mine.ToArray();
        }));
        await server.ConnectionsClosedAsync().WaitAsync(TimeSpan.FromSeconds(10)); // every client has closed its connection

        Assert.All(answers.SelectMany(a => a), answer => Assert.Equal("It's currently +18°C and partly cloudy in London.", answer));
        Assert.Equal(Flows * Runs, answers.Sum(a => a.Length));
        Assert.Equal(0, server.Mismatches);
        Assert.Equal(Flows, server.ConnectionsAccepted); // keep-alive: one connection per client, none leaked or reopened
        Assert.Equal(0, server.OpenConnections);
    }

    [Theory]
    [InlineData("TERM")]
    [InlineData("INT")] // what Ctrl+C sends
    public async Task Serve_StopsAtOnceOnASignal_CuttingAnAnswerInFlight_AndReleasingItsPort(string signal)
    {
        if (OperatingSystem.IsWindows())
            return; // no POSIX signals to send
        using var dir = new TempDir();
        string cassette = Wire.Cassette(Wire.Exchange(Hello, Wire.Completion(Wire.Text("Too late."))) with { Fault = new Fault(DelayMs: 600_000) }).Save(dir);
        using Process process = App.Start("serve", cassette);
        try
        {
            string baseUrl = (await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)))!;
            int port = new Uri(baseUrl).Port;
            Task<(HttpStatusCode, JsonNode?)> inFlight = Http.PostAsync(baseUrl + "/chat/completions", Hello);
            // The server logs the request before it starts holding the answer back for ten minutes.
            while (await process.StandardError.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)) is string line && !line.Contains("-> 200", StringComparison.Ordinal))
            {
            }

            using (Process kill = Process.Start("kill", $"-{signal} {process.Id}"))
                await kill.WaitForExitAsync();
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));

            Assert.Equal(0, process.ExitCode);
            Assert.Contains("Stopped.", await process.StandardError.ReadToEndAsync());
            await Assert.ThrowsAsync<HttpRequestException>(() => inFlight); // cut, not answered ten minutes later
            var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start(); // the port is free again
            listener.Stop();
        }
        finally
        {
            if (!process.HasExited)
                process.Kill();
        }
    }

    [Fact]
    public async Task Serve_ListensOnLoopbackByDefault()
    {
        await using ReplayServer server = ReplayServer.Start(HelloCassette);

        Assert.StartsWith("http://127.0.0.1:", server.BaseUrl);
    }

    [Fact]
    public async Task Serve_OnAnotherAddress_WarnsThatOtherMachinesCanReachIt()
    {
        using var dir = new TempDir();
        string cassette = HelloCassette.Save(dir);
        var stdout = new WatchedWriter();
        var stderr = new StringWriter();
        using var cancel = new CancellationTokenSource();

        Task<int> serve = Cli.RunAsync(["serve", cassette, "--host", "0.0.0.0"], _ => null, stdout, stderr, cancel.Token);
        await stdout.SeenAsync("/v1");
        cancel.Cancel();

        Assert.Equal(0, await serve.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.StartsWith("http://0.0.0.0:", stdout.ToString());
        Assert.Contains("Warning: listening on 0.0.0.0, not only on this machine", stderr.ToString());
    }

    static string Post(string body, bool keepAlive = false, string path = "/v1/chat/completions") =>
        $"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\n" +
        (keepAlive ? "" : "Connection: close\r\n") + $"\r\n{body}";

    /// <summary>The head of a POST of HelloBody with these header lines, "{0}" in them standing for its length.</summary>
    static string Head(params string[] headers) =>
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
        string.Concat(headers.Select(h => h.Replace("{0}", $"{Encoding.UTF8.GetByteCount(HelloBody)}", StringComparison.Ordinal) + "\r\n")) + "\r\n";

    /// <summary>The body in one chunk, then the last chunk (RFC 9112 §7.1).</summary>
    static string Chunked(string body) => $"{Encoding.UTF8.GetByteCount(body):x}\r\n{body}\r\n0\r\n\r\n";

    static async Task AssertStillServesAsync(ReplayServer server)
    {
        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", Hello);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("Hi.", (string)body!["choices"]![0]!["message"]!["content"]!);
    }

    static async Task<TcpClient> ConnectAsync(ReplayServer server)
    {
        var url = new Uri(server.BaseUrl);
        var client = new TcpClient();
        await client.ConnectAsync(url.Host, url.Port);
        return client;
    }

    /// <summary>Sends `request` on a connection of its own and reads until the server closes it.</summary>
    static Task<string> RawAsync(ReplayServer server, string request) => RawAsync(server, Encoding.UTF8.GetBytes(request));

    static async Task<string> RawAsync(ReplayServer server, byte[] request)
    {
        using TcpClient client = await ConnectAsync(server);
        NetworkStream stream = client.GetStream();
        try
        {
            await stream.WriteAsync(request);
        }
        catch (IOException)
        {
            // The server may refuse and close before all of a huge request is written; its answer is still there.
        }
        return await ReadToEndAsync(stream);
    }

    static async Task<string> ReadToEndAsync(NetworkStream stream)
    {
        var received = new MemoryStream();
        try
        {
            await stream.CopyToAsync(received).WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (IOException)
        {
            // reset by the server after its answer: what arrived before counts
        }
        return Encoding.UTF8.GetString(received.ToArray());
    }

    /// <summary>`count` connections, one after another (so the server accepts them in this order), each sending `text`.</summary>
    static async Task<List<TcpClient>> ConnectAllAsync(ReplayServer server, int count, string text)
    {
        var connections = new List<TcpClient>();
        for (int i = 0; i < count; i++)
        {
            TcpClient connection = await ConnectAsync(server);
            connections.Add(connection);
            await connection.GetStream().WriteAsync(Encoding.UTF8.GetBytes(text));
        }
        return connections;
    }

    /// <summary>One response sized by Content-Length, leaving the connection open.</summary>
    static async Task<string> ReadOneResponseAsync(NetworkStream stream)
    {
        var received = new MemoryStream();
        byte[] buffer = new byte[4096];
        while (true)
        {
            string text = Encoding.Latin1.GetString(received.ToArray());
            int headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            string? length = text.Split("\r\n").FirstOrDefault(line => line.StartsWith("Content-Length: ", StringComparison.Ordinal))?["Content-Length: ".Length..];
            if (headEnd >= 0 && length is not null && received.Length >= headEnd + 4 + int.Parse(length))
                return text;
            int read = await stream.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            if (read == 0)
                return text;
            received.Write(buffer, 0, read);
        }
    }

    static async Task<string> ReadSomeAsync(NetworkStream stream)
    {
        byte[] buffer = new byte[1024];
        int read = await stream.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        return Encoding.ASCII.GetString(buffer, 0, read);
    }
}
