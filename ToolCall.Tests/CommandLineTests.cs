using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>The command line: live runs (against a local server standing in for the API), recording, the key, and
/// one clear line for every mistake.</summary>
public class CommandLineTests
{
    const string London = "It's currently +18°C and partly cloudy in London.";

    [Fact]
    public async Task RecordThenReplay_GivesTheSameAnswer()
    {
        using var dir = new TempDir();
        await using ReplayServer live = ReplayServer.Start(Cassette.Load(Repo.Cassette("weather.json")));

        CliResult recorded = await App.RunAsync("--base-url", live.BaseUrl, "--record", dir.File("new.json"));
        CliResult replayed = await App.RunAsync("--replay", dir.File("new.json"));

        Assert.True(recorded.ExitCode == 0, recorded.ToString());
        Assert.True(replayed.ExitCode == 0, replayed.ToString());
        Assert.Equal(London, recorded.Stdout.Trim());
        Assert.Equal(recorded.Stdout, replayed.Stdout);
        Cassette cassette = Cassette.Load(dir.File("new.json"));
        Assert.Equal(2, cassette.Interactions.Count);
        Assert.StartsWith($"Recorded by ToolCall --record from {live.BaseUrl}", cassette.Source);
    }

    [Fact]
    public async Task Recording_ReplacesTheFileAtomically_LeavingNoTemporaryFile()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("new.json"), "old content");
        await using ReplayServer live = ReplayServer.Start(Cassette.Load(Repo.Cassette("weather.json")));

        CliResult run = await App.RunAsync("--base-url", live.BaseUrl, "--record", dir.File("new.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(["new.json"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
        Assert.NotNull(JsonNode.Parse(File.ReadAllText(dir.File("new.json")))!["interactions"]);
    }

    [Fact]
    public async Task FailedRun_IsStillRecorded_WithTheFailingResponse()
    {
        using var dir = new TempDir();
        await using ReplayServer live = ReplayServer.Start(Cassette.Load(Repo.Cassette("weather.json")));

        CliResult run = await App.RunAsync("Something else?", "--base-url", live.BaseUrl, "--record", dir.File("new.json"));

        Assert.Equal(1, run.ExitCode);
        Interaction only = Assert.Single(Cassette.Load(dir.File("new.json")).Interactions);
        Assert.Equal(400, only.Status);
        Assert.Contains("Replay mismatch", only.ResponseBody!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task LiveRun_SendsTheKeyAsABearerToken_WithAJsonBody()
    {
        using var server = new HeaderCapturingServer(Wire.Completion(Wire.Text("Hi.")));
        var environment = new Dictionary<string, string> { ["OPENAI_API_KEY"] = "sk-test-header-check" };

        CliResult run = await App.RunAsync(environment, "Hello?", "--base-url", server.BaseUrl);

        Assert.True(run.ExitCode == 0, run.ToString());
        string head = await server.RequestHead;
        Assert.StartsWith("POST /v1/chat/completions HTTP/1.1", head);
        Assert.Contains("Authorization: Bearer sk-test-header-check", head);
        Assert.Contains("Content-Type: application/json", head);
    }

    [Fact]
    public async Task ApiKey_NeverAppearsInOutputTraceOrRecording()
    {
        using var dir = new TempDir();
        string key = "sk-test-" + Guid.NewGuid().ToString("N");
        await using ReplayServer live = ReplayServer.Start(Cassette.Load(Repo.Cassette("weather.json")));

        CliResult run = await App.RunAsync(
            new Dictionary<string, string> { ["OPENAI_API_KEY"] = key }, "--base-url", live.BaseUrl, "--trace", "--record", dir.File("new.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("Authorization: Bearer [redacted]", run.Stderr); // the trace shows that a key was sent...
        Assert.DoesNotContain(key, run.Stderr);                          // ...but never the key
        Assert.DoesNotContain(key, run.Stdout);
        Assert.DoesNotContain(key, File.ReadAllText(dir.File("new.json")));
    }

    [Fact]
    public async Task ApiKeyOnTheCommandLine_IsRefused_BecausePsShowsIt()
    {
        CliResult run = await App.RunAsync("--api-key", "sk-test-visible");

        Assert.Equal(2, run.ExitCode);
        Assert.Contains("OPENAI_API_KEY", run.Stderr);
        Assert.DoesNotContain("sk-test-visible", run.Stderr);
    }

    [Fact]
    public async Task Trace_PrintsTheFullJsonOfEachRequestAndResponse()
    {
        CliResult run = await App.RunAsync("--trace");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(2, run.Stderr.Split("--- POST ").Length - 1);
        Assert.Equal(2, run.Stderr.Split("--- HTTP 200").Length - 1);
        Assert.Contains("\"tools\": [", run.Stderr);
        Assert.Contains("\"tool_call_id\": \"call_9pQmXc2LrT7vKd4wYs1BzE8a\"", run.Stderr);
        Assert.Equal(London, run.Stdout.Trim()); // stdout stays the answer alone
    }

    [Fact]
    public async Task TokenUsage_IsReportedPerRequestAndInTotal()
    {
        CliResult run = await App.RunAsync();

        Assert.Contains("tokens: 143 in, 18 out", run.Stderr);
        Assert.Contains("Tokens: 389 in total (351 in, 38 out) over 2 requests.", run.Stderr);
    }

    [Fact]
    public async Task ApiErrorResponse_ExitsWith1_ShowingTheStatusAndTheApiMessage()
    {
        using var dir = new TempDir();
        JsonObject error = ApiError.Create("Incorrect API key provided: sk-test***. You can find your API key at https://platform.openai.com/account/api-keys.", code: "invalid_api_key");
        string cassette = Wire.Cassette(Wire.Exchange(Wire.Request(Wire.User("Hello?")), error, status: 401)).Save(dir);

        CliResult run = await App.RunAsync("--replay", cassette);

        Assert.Equal(1, run.ExitCode);
        Assert.EndsWith("error: HTTP 401 Unauthorized: Incorrect API key provided: sk-test***. You can find your API key at https://platform.openai.com/account/api-keys.", run.Stderr.TrimEnd());
    }

    [Theory]
    [InlineData("\"overloaded\"", "error: HTTP 503 Service Unavailable: \"overloaded\"")]           // JSON, but not an object
    [InlineData("[1, 2]", "error: HTTP 503 Service Unavailable: [1,2]")]
    [InlineData("{\"error\": \"overloaded\"}", "error: HTTP 503 Service Unavailable: overloaded")] // error as a string, as Ollama sends it
    public async Task ErrorBodyOfAnyJsonShape_EndsInOneLine(string body, string expected)
    {
        using var dir = new TempDir();
        string cassette = Wire.Cassette(Wire.Exchange(Wire.Request(Wire.User("Hello?")), JsonNode.Parse(body)!, status: 503)).Save(dir);

        CliResult run = await App.RunAsync("--replay", cassette, "--retries", "0"); // 503 is retried; here only its body matters

        Assert.Equal(1, run.ExitCode);
        Assert.EndsWith(expected, run.Stderr.TrimEnd());
    }

    [Fact]
    public async Task UsageOfAnUnexpectedShape_IsIgnored_NotFatal()
    {
        using var dir = new TempDir();
        JsonObject response = Wire.Completion(Wire.Text("Hi."));
        response["usage"] = new JsonObject { ["prompt_tokens"] = "ten", ["completion_tokens"] = 1.5 };
        string cassette = Wire.Cassette(Wire.Exchange(Wire.Request(Wire.User("Hello?")), response)).Save(dir);

        CliResult run = await App.RunAsync("--replay", cassette);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.DoesNotContain("tokens:", run.Stderr);
    }

    [Fact]
    public async Task UnreachableServer_ExitsWith1AndOneLine()
    {
        string url = $"http://127.0.0.1:{Http.ClosedPort()}/v1";

        CliResult run = await App.RunAsync("--base-url", url, "--retries", "0");

        Assert.Equal(1, run.ExitCode);
        string[] lines = run.Stderr.TrimEnd().Split('\n');
        Assert.StartsWith($"error: could not reach {url}/chat/completions", lines.Last());
        Assert.DoesNotContain("   at ", run.Stderr); // no stack trace
    }

    [Theory]
    [InlineData(new[] { "--frobnicate" }, "unknown option '--frobnicate'")]
    [InlineData(new[] { "--max-rounds", "many" }, "--max-rounds needs a whole number from 1 to 1000, not 'many'")]
    [InlineData(new[] { "--max-rounds", "0" }, "--max-rounds needs a whole number")]
    [InlineData(new[] { "--model" }, "--model needs a value")]
    [InlineData(new[] { "--replay", "x.json", "--base-url", "http://localhost:1/v1" }, "--replay and --base-url cannot be combined")]
    [InlineData(new[] { "--base-url", "localhost:11434" }, "is not an http(s) URL")]
    [InlineData(new[] { "serve" }, "serve needs exactly one cassette")]
    [InlineData(new[] { "--port", "8080" }, "--port is for serve")]
    [InlineData(new[] { "serve", "a.json", "--port", "70000" }, "--port needs a whole number from 0 to 65535")]
    [InlineData(new[] { "serve", "a.json", "--trace" }, "unknown option '--trace' for serve")]
    [InlineData(new[] { "--retries", "11" }, "--retries needs a whole number from 0 to 10, not '11'")]
    [InlineData(new[] { "--timeout", "0" }, "--timeout needs a whole number from 1 to 3600, not '0'")]
    [InlineData(new[] { "--timeout", "1.5" }, "--timeout needs a whole number")]
    [InlineData(new[] { "serve", "a.json", "--host", "example.com" }, "--host needs an IP address such as 127.0.0.1")]
    [InlineData(new[] { "serve", "a.json", "--retries", "1" }, "unknown option '--retries' for serve")]
    public async Task UsageMistakes_ExitWith2AndOneLineSayingWhatIsWrong(string[] args, string expected)
    {
        CliResult run = await App.RunAsync(args);

        Assert.Equal(2, run.ExitCode);
        string line = Assert.Single(run.Stderr.TrimEnd().Split('\n'));
        Assert.StartsWith("error: ", line);
        Assert.Contains(expected, line);
        Assert.Equal("", run.Stdout);
    }

    [Fact]
    public async Task MissingCassette_ExitsWith2NamingTheFile()
    {
        CliResult run = await App.RunAsync("--replay", "no-such-cassette.json");

        Assert.Equal(2, run.ExitCode);
        Assert.Equal("error: cassette not found: no-such-cassette.json. Check the path, or record one with --record.", run.Stderr.TrimEnd());
    }

    [Fact]
    public async Task FolderGivenAsACassette_ExitsWith2SayingItIsAFolder()
    {
        using var dir = new TempDir();

        CliResult replay = await App.RunAsync("--replay", dir.Path);
        CliResult serve = await App.RunAsync("serve", dir.Path);

        foreach (CliResult run in new[] { replay, serve })
        {
            Assert.Equal(2, run.ExitCode);
            Assert.Equal($"error: {dir.Path} is a folder, not a cassette. Pass a cassette file, e.g. cassettes/weather.json.", run.Stderr.TrimEnd());
        }
    }

    [Fact]
    public async Task RecordingIntoAFolder_ExitsWith2BeforeSendingAnything()
    {
        using var dir = new TempDir();

        CliResult run = await App.RunAsync("--record", dir.Path);

        Assert.Equal(2, run.ExitCode);
        Assert.StartsWith($"error: --record {dir.Path}: that is a folder.", run.Stderr.TrimEnd());
        Assert.DoesNotContain("Step 1", run.Stderr);
    }

    [Fact]
    public async Task RecordingThatCannotBeWrittenAtTheEnd_IsOneErrorLineAndExit1_AfterTheAnswer()
    {
        using var dir = new TempDir();
        string folder = dir.File("vanishing");
        Directory.CreateDirectory(folder);
        await using ReplayServer live = ReplayServer.Start(Cassette.Load(Repo.Cassette("weather-stream.json")));
        // The folder is there when the run starts (so the check up front passes) and gone when the recording is saved.
        live.BeforeStreamEvent = position =>
        {
            if (Directory.Exists(folder))
                Directory.Delete(folder);
            return Task.CompletedTask;
        };

        CliResult run = await App.RunAsync("--stream", "--base-url", live.BaseUrl, "--record", Path.Combine(folder, "run.json"));

        Assert.Equal(1, run.ExitCode);
        Assert.Equal(London, run.Stdout.Trim()); // the answer is not lost
        Assert.EndsWith("nothing was written there.", run.Stderr.TrimEnd());
        Assert.StartsWith("error: could not write the recording to ", run.Stderr.TrimEnd().Split('\n').Last());
        Assert.DoesNotContain("   at ", run.Stderr);
    }

    [Fact]
    public async Task OwnQuestionOffline_ExitsWith2_SayingTheDemoAnswersOnlyItsRecordedQuestion()
    {
        CliResult run = await App.RunAsync("Weather in Rome?");

        Assert.Equal(2, run.ExitCode);
        string line = Assert.Single(run.Stderr.TrimEnd().Split('\n'));
        Assert.Contains("which answers only \"What's the weather in London right now?\"", line);
        Assert.Contains("set OPENAI_API_KEY", line);
    }

    [Theory]
    [InlineData(new[] { "--replay", "cassettes/weather-stream.json" }, "was recorded with --stream: add --stream")]
    [InlineData(new[] { "--stream", "--replay", "cassettes/weather.json" }, "was recorded without --stream: drop --stream")]
    public async Task CassetteRecordedWithOrWithoutStream_IsRefusedUpFront_WhenReplayedTheOtherWay(string[] args, string expected)
    {
        CliResult run = await App.RunAsync([.. args.Select(a => a.StartsWith("cassettes/", StringComparison.Ordinal) ? Path.Combine(Repo.Root, a) : a)]);

        Assert.Equal(2, run.ExitCode);
        Assert.Contains(expected, run.Stderr);
        Assert.DoesNotContain("Step 1", run.Stderr);
    }

    [Fact]
    public async Task CassetteThatIsNotJson_ExitsWith2NamingTheLine()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("broken.json"), "{\n  \"interactions\": [\n    {\"request\": }\n");

        CliResult run = await App.RunAsync("--replay", dir.File("broken.json"));

        Assert.Equal(2, run.ExitCode);
        Assert.Contains("is not valid JSON (line 3)", run.Stderr);
    }

    [Fact]
    public async Task RecordingIntoAFolderThatDoesNotExist_ExitsWith2BeforeSendingAnything()
    {
        CliResult run = await App.RunAsync("--record", "/no/such/folder/x.json");

        Assert.Equal(2, run.ExitCode);
        Assert.Contains("does not exist", run.Stderr);
        Assert.DoesNotContain("Step 1", run.Stderr);
    }

    [Fact]
    public async Task OnATerminal_ALogLineWhileWaiting_GoesAboveTheWaitingLine_NotAfterIt()
    {
        var terminal = new Terminal();
        var log = new StepLog(terminal, interactive: true);

        using (log.ShowWaiting())
        {
            await terminal.WaitingShown.WaitAsync(TimeSpan.FromSeconds(30));
            log.Info("retry 1/2 after HTTP 429 Too Many Requests: waiting 1.0 s (Retry-After)");
        }

        string screen = terminal.ToString();
        string erase = "\r" + new string(' ', 40) + "\r";
        Assert.Contains(erase + "retry 1/2 after HTTP 429", screen); // the waiting line is erased, then the log line written
    }

    [Fact]
    public async Task Help_PrintsTheUsageOnStdoutAndExits0()
    {
        CliResult run = await App.RunAsync("--help");

        Assert.Equal(0, run.ExitCode);
        Assert.Contains("--max-rounds N", run.Stdout);
        Assert.EndsWith(Environment.NewLine, run.Stdout); // the shell's prompt starts on a line of its own
        Assert.Contains("OPENAI_API_KEY", run.Stdout);
    }

    [Fact]
    public async Task ReplayWithoutAQuestion_AsksTheCassettesOwnQuestion()
    {
        CliResult run = await App.RunAsync("--replay", Repo.Cassette("two-cities.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("Right now it's +18°C and partly cloudy in both London and Paris.", run.Stdout.Trim());
    }

    [Fact]
    public async Task QuestionWords_AreJoinedIntoOneQuestion()
    {
        CliResult run = await App.RunAsync("What's", "the", "weather", "in", "London", "right", "now?");

        Assert.True(run.ExitCode == 0, run.ToString()); // the cassette only matches the exact question
    }
}

/// <summary>The built program as a separate process: what `./run.sh` and `dotnet run` do.</summary>
public class ProcessTests
{
    [Fact]
    public async Task Program_WithNoKeyOrBaseUrl_PrintsTheLondonAnswerAndStepsOneToFour()
    {
        using Process process = App.Start();
        string stdout = await process.StandardOutput.ReadToEndAsync();
        string stderr = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();

        Assert.True(process.ExitCode == 0, stderr);
        Assert.Equal("It's currently +18°C and partly cloudy in London.", stdout.Trim());
        foreach (int step in new[] { 1, 2, 3, 4 })
            Assert.Contains($"Step {step}:", stderr);
    }

    [Fact]
    public async Task Serve_PrintsItsBaseUrl_AndAnswersAnOrphanToolMessageWithTheApis400()
    {
        using Process process = App.Start("serve", "cassettes/weather.json");
        try
        {
            string baseUrl = (await process.StandardOutput.ReadLineAsync())!;
            Assert.Matches(@"^http://127\.0\.0\.1:\d+/v1$", baseUrl);

            (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(
                baseUrl + "/chat/completions", Wire.Request(Wire.User("Weather?"), Wire.ToolMessage("call_1", "18°C")));

            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Equal(
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                (string)body!["error"]!["message"]!);
        }
        finally
        {
            process.Kill();
            await process.WaitForExitAsync();
        }
        Assert.Contains("Its question: \"What's the weather in London right now?\"", await process.StandardError.ReadToEndAsync());
    }
}
