using System.Net;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>The retry policy on its own: which failures it retries and how long it waits, as the official SDKs do.</summary>
public class RetryPolicyTests
{
    /// <summary>The statuses the official SDKs retry: timeouts, conflicts, rate limits and server errors.</summary>
    public static TheoryData<int> RetriableStatuses => [408, 409, 429, 500, 502, 503, 504];

    [Theory]
    [MemberData(nameof(RetriableStatuses))]
    public void TimeoutsConflictsRateLimitsAndServerErrors_AreRetried(int status) => Assert.True(RetryPolicy.IsRetriable(status));

    [Theory]
    [InlineData(400)]
    [InlineData(401)]
    [InlineData(403)]
    [InlineData(404)]
    [InlineData(422)]
    public void OtherClientErrors_AreNeverRetried(int status) => Assert.False(RetryPolicy.IsRetriable(status));

    [Theory]
    [InlineData(0, 0.5)]
    [InlineData(1, 1.0)]
    [InlineData(2, 2.0)]
    [InlineData(3, 4.0)]
    [InlineData(4, 8.0)]
    [InlineData(9, 8.0)]
    public void Backoff_DoublesFromHalfASecond_UpTo8Seconds_LessUpToAQuarterOfJitter(int retry, double seconds)
    {
        (TimeSpan longest, string why) = new RetryPolicy { Random = new FixedRandom(0) }.NextWait(retry, null);
        (TimeSpan shortest, _) = new RetryPolicy { Random = new FixedRandom(0.9999999) }.NextWait(retry, null);

        Assert.Equal("backoff", why);
        Assert.Equal(seconds, longest.TotalSeconds, precision: 6);
        Assert.Equal(seconds * 0.75, shortest.TotalSeconds, precision: 4);
    }

    [Fact]
    public void Jitter_SpreadsTheWaitsOfClientsThatFailedTogether()
    {
        var policy = new RetryPolicy { Random = new Random(7) };

        TimeSpan[] waits = [.. Enumerable.Range(0, 20).Select(_ => policy.NextWait(0, null).Wait)];

        Assert.True(waits.Distinct().Count() > 10, string.Join(", ", waits));
        Assert.All(waits, wait => Assert.InRange(wait.TotalSeconds, 0.375, 0.5));
    }

    [Theory]
    [InlineData("Retry-After", "3", 3.0)]
    [InlineData("Retry-After", "1.5", 1.5)]                           // not in the RFC, but servers send it
    [InlineData("Retry-After", "Tue, 25 Nov 2025 12:00:07 GMT", 7.0)] // an HTTP date: 7 s after the manual clock's now
    [InlineData("retry-after-ms", "250", 0.25)]
    public void ServerWait_IsReadFromRetryAfterInSecondsOrAsADate_OrFromRetryAfterMs(string header, string value, double seconds)
    {
        var policy = new RetryPolicy { Time = new ManualClock() };

        (TimeSpan wait, string why) = policy.NextWait(0, policy.ServerWait(Headers((header, value))));

        Assert.Equal(seconds, wait.TotalSeconds, precision: 6);
        Assert.Equal(header, why);
    }

    [Fact]
    public void RetryAfterMs_WinsOverRetryAfter_BeingMorePrecise()
    {
        var policy = new RetryPolicy();

        (TimeSpan wait, string why) = policy.NextWait(0, policy.ServerWait(Headers(("Retry-After", "2"), ("retry-after-ms", "1500"))));

        Assert.Equal(TimeSpan.FromMilliseconds(1500), wait);
        Assert.Equal("retry-after-ms", why);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-5")]
    [InlineData("soon")]
    [InlineData("NaN")]
    [InlineData("1e300")]
    [InlineData("Tue, 25 Nov 2025 11:59:00 GMT")] // a date in the past
    public void RetryAfterThatIsNotAUsefulWait_FallsBackToBackoff(string value)
    {
        var policy = new RetryPolicy { Time = new ManualClock(), Random = new FixedRandom(0) };

        (TimeSpan wait, string why) = policy.NextWait(0, policy.ServerWait(Headers(("Retry-After", value))));

        Assert.Equal(TimeSpan.FromSeconds(0.5), wait);
        Assert.StartsWith("backoff", why);
    }

    [Fact]
    public void RetryAfterOverTheCap_FallsBackToBackoff_AndSaysSo()
    {
        var policy = new RetryPolicy { Random = new FixedRandom(0) };

        (TimeSpan wait, string why) = policy.NextWait(1, policy.ServerWait(Headers(("Retry-After", "3600"))));

        Assert.Equal(TimeSpan.FromSeconds(1), wait);
        Assert.Equal("backoff; the server's Retry-After of 3600.0 s is over the 60.0 s cap", why);
    }

    static System.Net.Http.Headers.HttpResponseHeaders Headers(params (string Name, string Value)[] headers)
    {
        var response = new HttpResponseMessage();
        foreach ((string name, string value) in headers)
            response.Headers.TryAddWithoutValidation(name, value);
        return response.Headers;
    }

    /// <summary>A "random" source that always gives the same number, to pin the jitter at its ends.</summary>
    sealed class FixedRandom(double value) : Random
    {
        public override double NextDouble() => value;
    }
}

/// <summary>
/// The client against the replay server answering with errors, delays and broken bodies. Waits are noted, not
/// waited; timeouts run on a manual clock. Each retry is one line on stderr.
/// </summary>
public class ClientRetryTests
{
    static readonly JsonObject Hello = Wire.Request(Wire.User("Hello?"));
    static readonly Interaction Answer = Wire.Exchange(Hello, Wire.Completion(Wire.Text("Hi.")));

    [Fact]
    public async Task RetryThenAnswerCassette_PrintsTheAnswerAfterTwoRetryLines()
    {
        var waits = new NotedWaits();
        var stderr = new StringWriter();
        await using ReplayServer server = ReplayServer.Start(Cassette.Load(Repo.Cassette("faults/retry-then-answer.json")));
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, server.BaseUrl, waits, stderr);

        string answer = await ToolCalling.RunAsync(chat, Wire.Model, Cli.DefaultQuestion, ProgramTools.Create(), new FlowOptions { MaxRounds = 8, Log = new StepLog(stderr).Info }, CancellationToken.None);

        Assert.Equal("It's currently +18°C and partly cloudy in London.", answer);
        string[] retries = RetryLines(stderr);
        Assert.Equal(2, retries.Length);
        Assert.Equal("retry 1/2 after HTTP 429 Too Many Requests: waiting 1.0 s (Retry-After)", retries[0]);
        Assert.Matches(@"^retry 2/2 after HTTP 503 Service Unavailable: waiting (0\.[89]|1\.0) s \(backoff\)$", retries[1]);
        Assert.Equal(TimeSpan.FromSeconds(1), waits.Waits[0]);
        Assert.InRange(waits.Waits[1].TotalSeconds, 0.75, 1.0); // the second retry backs off 1 s, less the jitter
        Assert.True(stderr.ToString().IndexOf("retry 2/2", StringComparison.Ordinal) < stderr.ToString().IndexOf("Step 2:", StringComparison.Ordinal));
    }

    [Theory]
    [MemberData(nameof(RetryPolicyTests.RetriableStatuses), MemberType = typeof(RetryPolicyTests))]
    public async Task RetriableStatus_IsRetried_ThenTheAnswerIsUsed(int status)
    {
        var waits = new NotedWaits();
        var stderr = new StringWriter();
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(Hello, ApiError.Create("try again", "server_error"), status), Answer));
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, server.BaseUrl, waits, stderr);

        JsonObject completion = await chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None);

        Assert.Equal("Hi.", (string)completion["choices"]![0]!["message"]!["content"]!);
        Assert.StartsWith($"retry 1/2 after HTTP {status} ", Assert.Single(RetryLines(stderr)));
        Assert.Single(waits.Waits);
        Assert.Equal(2, chat.Requests);
    }

    [Theory]
    [InlineData(400)]
    [InlineData(401)]
    [InlineData(403)]
    [InlineData(404)]
    [InlineData(422)]
    public async Task NonRetriableStatus_FailsAtOnce_NamingTheStatusAndTheApiMessage(int status)
    {
        var waits = new NotedWaits();
        var stderr = new StringWriter();
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(Hello, ApiError.Create("You did it wrong."), status), Answer));
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, server.BaseUrl, waits, stderr);

        var e = await Assert.ThrowsAsync<FlowException>(() => chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None));

        Assert.Matches($"^HTTP {status} [A-Za-z ]+: You did it wrong\\.$", e.Message);
        Assert.Empty(waits.Waits);
        Assert.Empty(RetryLines(stderr));
        Assert.Equal(1, chat.Requests);
    }

    [Fact]
    public async Task RetriesUsedUp_FailWithTheLastErrorAndHowManyRetriesWereMade()
    {
        var waits = new NotedWaits();
        Interaction overloaded = Wire.Exchange(Hello, ApiError.Create("That model is currently overloaded with other requests.", "server_error"), 503);
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(overloaded));
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, server.BaseUrl, waits, new StringWriter());

        var e = await Assert.ThrowsAsync<FlowException>(() => chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None));

        Assert.Equal("HTTP 503 Service Unavailable: That model is currently overloaded with other requests. (gave up after 2 retries)", e.Message);
        Assert.Equal(3, chat.Requests);
        Assert.Equal(2, waits.Waits.Count);
    }

    [Fact]
    public async Task RetriesZeroOnTheCommandLine_FailsAtTheFirstError()
    {
        CliResult run = await App.RunAsync("--replay", Repo.Cassette("faults/retry-then-answer.json"), "--retries", "0");

        Assert.Equal(1, run.ExitCode);
        Assert.DoesNotContain("retry ", run.Stderr);
        Assert.StartsWith("error: HTTP 429 Too Many Requests: Rate limit reached for gpt-4o-mini", run.Stderr.TrimEnd().Split('\n').Last());
    }

    [Fact]
    public async Task ConnectionRefused_IsRetried_ThenFailsWithOneLine()
    {
        var waits = new NotedWaits();
        var stderr = new StringWriter();
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, $"http://127.0.0.1:{Http.ClosedPort()}/v1", waits, stderr);

        var e = await Assert.ThrowsAsync<FlowException>(() => chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None));

        Assert.Equal($"could not reach {chat.Url} (Connection refused). Check the base URL and that the server is running. (gave up after 2 retries)", e.Message);
        Assert.All(RetryLines(stderr), line => Assert.Matches(@"^retry [12]/2 after a connection error \(Connection refused\): waiting [01]\.\d s \(backoff\)$", line));
        Assert.Equal(2, RetryLines(stderr).Length);
    }

    [Fact]
    public async Task ConnectionClosedInTheMiddleOfTheBody_IsRetriedAsAConnectionError()
    {
        var stderr = new StringWriter();
        Interaction cut = Answer with { Fault = new Fault(CloseAfterBytes: 40) };
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(cut, Answer));
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, server.BaseUrl, new NotedWaits(), stderr);

        JsonObject completion = await chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None);

        Assert.Equal("Hi.", (string)completion["choices"]![0]!["message"]!["content"]!);
        Assert.StartsWith("retry 1/2 after a connection error (", Assert.Single(RetryLines(stderr)));
    }

    [Fact]
    public async Task NoResponseWithinTheTimeout_IsRetried_ThenFailsNamingTheTimeout()
    {
        var clock = new ManualClock();
        var stderr = new StringWriter();
        // The server holds every answer back for ten minutes of real time; the client's minute passes on the manual clock.
        Interaction late = Answer with { Fault = new Fault(DelayMs: 600_000) };
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(late));
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, server.BaseUrl, new NotedWaits(), stderr, retries: 1, clock: clock);

        Task<JsonObject> post = chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None);
        for (int attempt = 0; attempt < 2; attempt++)
        {
            await clock.TimerPendingAsync(TimeSpan.FromSeconds(60));
            clock.Advance(TimeSpan.FromSeconds(60));
        }
        var e = await Assert.ThrowsAsync<FlowException>(() => post.WaitAsync(TimeSpan.FromSeconds(10)));

        Assert.Equal($"no complete response from {chat.Url} within 60.0 s (--timeout). Raise --timeout if the model needs longer. (gave up after 1 retry)", e.Message);
        Assert.StartsWith("retry 1/1 after no response within 60.0 s: waiting ", Assert.Single(RetryLines(stderr)));
    }

    [Fact]
    public async Task CtrlCWhileWaitingForAResponse_CancelsTheRun_NotARetryNorATimeout()
    {
        var clock = new ManualClock();
        var stderr = new StringWriter();
        Interaction late = Answer with { Fault = new Fault(DelayMs: 600_000) };
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(late));
        using var http = new HttpClient();
        using var ctrlC = new CancellationTokenSource();
        ResilientChatClient chat = Client(http, server.BaseUrl, new NotedWaits(), stderr, retries: 2, clock: clock);

        Task<JsonObject> post = chat.PostAsync(Hello.DeepClone().AsObject(), ctrlC.Token);
        await clock.TimerPendingAsync(TimeSpan.FromSeconds(60)); // the attempt is under way
        ctrlC.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => post.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Empty(RetryLines(stderr));
    }

    [Fact]
    public async Task BodyDrippingPastTheTimeout_IsCutByTheTimeout()
    {
        var clock = new ManualClock();
        var headersIn = new TaskCompletionSource();
        Interaction dripping = Answer with { Fault = new Fault(DripBytes: 10, DripIntervalMs: 600_000) };
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(dripping));
        using var http = new HttpClient(new HeadersSignal(headersIn));
        ResilientChatClient chat = Client(http, server.BaseUrl, new NotedWaits(), new StringWriter(), retries: 0, clock: clock);

        Task<JsonObject> post = chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None);
        await headersIn.Task.WaitAsync(TimeSpan.FromSeconds(10)); // the status line is in, the body has barely begun
        clock.Advance(TimeSpan.FromSeconds(60));
        var e = await Assert.ThrowsAsync<FlowException>(() => post.WaitAsync(TimeSpan.FromSeconds(10)));

        Assert.StartsWith($"no complete response from {chat.Url} within 60.0 s (--timeout).", e.Message);
    }

    [Fact]
    public async Task SlowButSteadyBody_StillCompletes()
    {
        Interaction dripping = Answer with { Fault = new Fault(DripBytes: 64, DripIntervalMs: 1) };
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(dripping));
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, server.BaseUrl, new NotedWaits(), new StringWriter());

        JsonObject completion = await chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None);

        Assert.Equal("Hi.", (string)completion["choices"]![0]!["message"]!["content"]!);
    }

    [Fact]
    public async Task CtrlCDuringARetryWait_ExitsWith130_WithoutAStackTrace()
    {
        using var dir = new TempDir();
        Interaction limited = Wire.Exchange(Hello, ApiError.Create("Slow down.", "requests"), 429) with
        {
            Headers = new Dictionary<string, string> { ["Retry-After"] = "30" },
        };
        string cassette = Wire.Cassette(limited, Answer).Save(dir);
        var stderr = new WatchedWriter();
        using var cancel = new CancellationTokenSource();

        Task<int> run = Cli.RunAsync(["--replay", cassette], _ => null, new StringWriter(), stderr, cancel.Token);
        await stderr.SeenAsync("retry 1/2 after HTTP 429 Too Many Requests: waiting 30.0 s (Retry-After)");
        cancel.Cancel();

        Assert.Equal(130, await run.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.EndsWith("cancelled.", stderr.ToString().TrimEnd());
        Assert.DoesNotContain("   at ", stderr.ToString());
    }

    [Fact]
    public async Task CtrlCWhileTheAnswerIsArriving_ExitsWith130_WithoutAStackTrace()
    {
        var serverLog = new WatchedWriter();
        Interaction dripping = Answer with { Fault = new Fault(DripBytes: 10, DripIntervalMs: 600_000) };
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(dripping), log: serverLog);
        var stderr = new StringWriter();
        using var cancel = new CancellationTokenSource();

        Task<int> run = Cli.RunAsync(["Hello?", "--base-url", server.BaseUrl], _ => null, new StringWriter(), stderr, cancel.Token);
        await serverLog.SeenAsync("-> 200"); // the server is sending the answer, ten bytes every ten minutes
        cancel.Cancel();

        Assert.Equal(130, await run.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.EndsWith("cancelled.", stderr.ToString().TrimEnd());
        Assert.DoesNotContain("   at ", stderr.ToString());
    }

    static ResilientChatClient Client(HttpClient http, string baseUrl, NotedWaits waits, TextWriter stderr, int retries = 2, ManualClock? clock = null) =>
        new(http, baseUrl, Apis.Chat, null, new StepLog(stderr))
        {
            Retries = new RetryPolicy { MaxRetries = retries, Delay = waits.Delay, Time = clock ?? (TimeProvider)TimeProvider.System },
        };

    static string[] RetryLines(StringWriter stderr) =>
        [.. stderr.ToString().Split('\n').Select(line => line.TrimEnd('\r')).Where(line => line.StartsWith("retry ", StringComparison.Ordinal))];

    /// <summary>Signals when a response's status line and headers have arrived (the body may still be on its way).</summary>
    sealed class HeadersSignal(TaskCompletionSource arrived) : DelegatingHandler(new SocketsHttpHandler())
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            HttpResponseMessage response = await base.SendAsync(request, cancellationToken);
            arrived.TrySetResult();
            return response;
        }
    }
}
