using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// The client against servers and models that misbehave: the key stays with the base URL and out of everything a
/// server sends back, no response can be read without bound, and what the model writes never reaches a terminal raw.
/// </summary>
public class ClientHardeningTests
{
    const string TestKey = "fake-test-key-0123456789abcdef"; // no provider's prefix: plainly not a real key

    [Theory]
    [InlineData("anthropic", false)]
    [InlineData("anthropic", true)]
    [InlineData("chat", true)]
    public async Task RedirectToAnotherPort_IsNotFollowed_SoTheKeyNeverReachesIt(string api, bool stream)
    {
        using var elsewhere = new HeaderCapturingServer(Wire.Completion(Wire.Text("Hi.")));
        string location = elsewhere.BaseUrl + (api == "anthropic" ? "/messages" : "/chat/completions");
        using var redirecting = new HeaderCapturingServer(Encoding.ASCII.GetBytes(
            $"HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
        var environment = new Dictionary<string, string> { ["ANTHROPIC_API_KEY"] = TestKey, ["OPENAI_API_KEY"] = TestKey };
        string[] args = ["Hi?", "--api", api, "--base-url", redirecting.BaseUrl, "--retries", "0", .. stream ? new[] { "--stream" } : []];

        CliResult run = await App.RunAsync(environment, args);

        Assert.Equal(1, run.ExitCode);
        Assert.Contains($"error: HTTP 307 Temporary Redirect: the server redirects to {location}. Redirects are not followed", run.Stderr);
        Assert.False(elsewhere.RequestHead.IsCompleted, "the client followed the redirect");
        Assert.Contains(api == "anthropic" ? "x-api-key: " + TestKey : "Authorization: Bearer " + TestKey, await redirecting.RequestHead);
    }

    [Fact]
    public async Task ResponseAnnouncedOverTheLimit_IsRefusedBeforeItsBodyIsRead()
    {
        // Content-Length says 2 MB, and the body never comes: only the announcement is read.
        using var server = new HeaderCapturingServer(Encoding.ASCII.GetBytes(
            $"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {2 * 1024 * 1024}\r\n\r\n{{\"id\":"));

        CliResult run = await App.RunAsync("Hi?", "--base-url", server.BaseUrl, "--max-response-mb", "1", "--retries", "0");

        Assert.Equal(1, run.ExitCode);
        Assert.Contains("is over 1 MB (--max-response-mb 1), so it was not read further. Raise --max-response-mb", run.Stderr);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ResponseWithoutEnd_IsReadUpToTheLimitOnly(bool stream)
    {
        // A chunked body, or one stream event, that never ends: the client stops at the limit, and the server could
        // write only what fits in the limit and the sockets' buffers before the client hung up.
        await using var server = new EndlessServer(stream ? "text/event-stream" : "application/json", stream ? "data: {\"x\":\"" : "{\"x\":\"");
        string[] args = ["Hi?", "--base-url", server.BaseUrl, "--max-response-mb", "1", "--retries", "0", .. stream ? new[] { "--stream" } : []];

        CliResult run = await App.RunAsync(args).WaitAsync(TimeSpan.FromSeconds(30)); // a bound, not a synchronisation

        Assert.Equal(1, run.ExitCode);
        Assert.Contains("is over 1 MB (--max-response-mb 1)", run.Stderr);
        Assert.InRange(await server.BytesWrittenAsync(), 1024 * 1024, 64 * 1024 * 1024);
    }

    [Fact]
    public async Task StreamEventWithoutEnd_StopsAtTheEventLimit()
    {
        var data = new List<string>();
        var endless = new EndlessStream(Encoding.UTF8.GetBytes("data: "), (byte)'a');

        InvalidDataException error = await Assert.ThrowsAsync<InvalidDataException>(async () =>
        {
            await foreach (string item in ServerSentEvents.ReadDataAsync(endless, CancellationToken.None, maxEventChars: 100_000))
                data.Add(item);
        });

        Assert.Equal("an event of the stream is over 100000 characters", error.Message);
        Assert.InRange(endless.BytesRead, 100_000, 200_000);
    }

    [Fact]
    public async Task Timeout_HoldsWhileAStreamNeverPauses()
    {
        // The data never stops coming, so no read ever waits: the timeout must still end the stream. The clock moves
        // past the timeout at the stream's tenth read; the reader must stop at its next one.
        var clock = new ManualClock();
        var endless = new EndlessStream(Encoding.UTF8.GetBytes("data: "), (byte)'a') { OnRead = reads => { if (reads == 10) clock.Advance(TimeSpan.FromSeconds(60)); } };
        using var http = new HttpClient(new StreamingHandler(endless, "text/event-stream"));
        var chat = new ResilientChatClient(http, "http://endless.invalid/v1", Apis.Chat, null, StepLog.Silent)
        {
            Retries = new RetryPolicy { MaxRetries = 0, Time = clock },
            StreamTextTo = TextWriter.Null,
        };

        FlowException error = await Assert.ThrowsAsync<FlowException>(() => chat.PostAsync(Wire.Request(Wire.User("Hi?"))));

        Assert.StartsWith("no complete response from http://endless.invalid/v1/chat/completions within 60.0 s (--timeout)", error.Message);
        Assert.InRange(endless.Reads, 10, 15); // a text reader fills its buffer from a few reads at a time
    }

    [Fact]
    public async Task Timeout_HoldsWhileABodyNeverPauses()
    {
        var clock = new ManualClock();
        var endless = new EndlessStream("{\"x\":\""u8.ToArray(), (byte)'a') { OnRead = reads => { if (reads == 10) clock.Advance(TimeSpan.FromSeconds(60)); } };
        using var http = new HttpClient(new StreamingHandler(endless, "application/json"));
        var chat = new ResilientChatClient(http, "http://endless.invalid/v1", Apis.Chat, null, StepLog.Silent)
        {
            Retries = new RetryPolicy { MaxRetries = 0, Time = clock },
            MaxResponseBytes = long.MaxValue,
        };

        FlowException error = await Assert.ThrowsAsync<FlowException>(() => chat.PostAsync(Wire.Request(Wire.User("Hi?"))));

        Assert.StartsWith("no complete response from http://endless.invalid/v1/chat/completions within 60.0 s (--timeout)", error.Message);
        Assert.InRange(endless.Reads, 10, 11);
    }

    [Theory]
    [InlineData("fake-key-from-a-windows-file\r\n", "ends with a line break (CR or LF)")]
    [InlineData("sk-test-key\n", "ends with a line break (CR or LF)")]
    [InlineData("sk-tést-key", "holds a character an HTTP header cannot carry (U+00E9, character 5 of 11)")]
    [InlineData("sk-test key", "holds a character an HTTP header cannot carry (U+0020, character 8 of 11)")]
    public async Task KeyAHeaderCannotCarry_IsAUsageError_ThatNeverShowsTheKey(string key, string problem)
    {
        CliResult run = await App.RunAsync(new Dictionary<string, string> { ["OPENAI_API_KEY"] = key }, "Hi?");

        Assert.Equal(2, run.ExitCode);
        Assert.StartsWith($"error: OPENAI_API_KEY {problem}", run.Stderr);
        Assert.DoesNotContain(key.Trim(), run.Stderr);
    }

    [Fact]
    public async Task KeyEchoedInAnErrorBody_IsRedactedFromTheErrorLineTheTraceAndTheRecording()
    {
        using var dir = new TempDir();
        byte[] body = Encoding.UTF8.GetBytes(new JsonObject
        {
            ["error"] = new JsonObject { ["message"] = $"Incorrect API key provided: {TestKey}. Check it.", ["type"] = "invalid_request_error" },
        }.ToJsonString());
        using var server = new HeaderCapturingServer(Encoding.ASCII.GetBytes(
            $"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n").Concat(body).ToArray());

        CliResult run = await App.RunAsync(new Dictionary<string, string> { ["OPENAI_API_KEY"] = TestKey },
            "Hi?", "--base-url", server.BaseUrl, "--trace", "--record", dir.File("run.json"));

        Assert.Equal(1, run.ExitCode);
        Assert.Contains("error: HTTP 401 Unauthorized: Incorrect API key provided: [redacted]. Check it.", run.Stderr);
        Assert.DoesNotContain(TestKey, run.Stderr);
        Assert.DoesNotContain(TestKey, File.ReadAllText(dir.File("run.json")));
        Assert.Contains("[redacted]", File.ReadAllText(dir.File("run.json")));
    }

    [Fact]
    public async Task KeyEchoedInAStream_IsRedactedBeforeAnythingReadsIt()
    {
        var events = $"data: {{\"error\":{{\"message\":\"bad key {TestKey}\"}}}}\n\n";
        var endless = new EndlessStream(Encoding.UTF8.GetBytes(events), null);
        using var http = new HttpClient(new StreamingHandler(endless, "text/event-stream"));
        var recorder = new Recorder("http://echo.invalid/v1");
        var chat = new ResilientChatClient(http, "http://echo.invalid/v1", Apis.Chat, TestKey, StepLog.Silent, recorder) { StreamTextTo = TextWriter.Null };

        FlowException error = await Assert.ThrowsAsync<FlowException>(() => chat.PostAsync(Wire.Request(Wire.User("Hi?"))));

        Assert.Equal("the stream carried an error instead of the next chunk: bad key [redacted]", error.Message);
        Assert.DoesNotContain(TestKey, Cassette(recorder));
    }

    [Fact]
    public async Task WhatTheModelWrites_ReachesTheStepLogEscaped_AndCut()
    {
        // A tool name that would set the terminal's title, arguments that would clear the screen, and a long one.
        string name = "get_weather\u001b]0;pwned\u0007";
        string longCity = new('L', 100_000);
        JsonObject asked = Wire.AskForTools(
            Wire.Call("call_1", name, "{\"city\":\"Oslo\u001b[2J\"}"),
            Wire.WeatherCall("call_2", longCity));
        using var dir = new TempDir();
        string cassette = Wire.OneRound("Hi?", Wire.Completion(asked), asked,
            [Wire.ToolMessage("call_1", $"Error: unknown function '{name}'. Available functions: get_weather, get_forecast."),
             Wire.ToolMessage("call_2", Wire.Weather(longCity))],
            "Done.").Save(dir);

        CliResult run = await App.RunAsync("--replay", cassette, "--max-result-chars", "1000000"); // the whole result goes back

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.DoesNotContain('\u001b', run.Stderr);
        Assert.DoesNotContain('\u0007', run.Stderr);
        Assert.Contains(@"Step 3: get_weather\u001B]0;pwned\u0007({""city"":""Oslo\u001B[2J""}) -> Error: unknown function", run.Stderr);
        Assert.Contains($"Step 3: get_weather({{\"city\":\"{new string('L', 291)}… (100011 characters)) -> It's currently", run.Stderr);
        Assert.All(run.Stderr.Split('\n'), line => Assert.True(line.Length < 1000, $"a line of {line.Length} characters"));
    }

    [Fact]
    public async Task AnswerOnATerminal_LosesItsEscapeSequences_KeepsLinesAndTabs_AndInAPipeIsAsReceived()
    {
        string answer = "\u001b]0;pwned\u0007\u001b[2JLine one\tcolumn\nLine two\u001b[31m red\u001b[0m\u009b";
        JsonObject asked = Wire.AskForTools(Wire.WeatherCall("call_1", "Oslo"));
        using var dir = new TempDir();
        string cassette = Wire.OneRound("Hi?", Wire.Completion(asked), asked, [Wire.ToolMessage("call_1", Wire.Weather("Oslo"))], answer).Save(dir);
        var terminal = new StringWriter();

        int exit = await Cli.RunAsync(["--replay", cassette], _ => null, new TerminalWriter(terminal), new StringWriter(), CancellationToken.None);
        CliResult piped = await App.RunAsync("--replay", cassette);

        Assert.Equal(0, exit);
        Assert.Equal("Line one\tcolumn\nLine two red\n", terminal.ToString().ReplaceLineEndings("\n"));
        Assert.Equal(answer + Environment.NewLine, piped.Stdout);
    }

    [Theory]
    [InlineData("\u001b[2J", 2)]        // the whole sequence in one write
    [InlineData("\u001b]0;title\u001b\\", 3)]  // an operating-system command ended by ESC \
    public void EscapeSequence_SplitAcrossWrites_IsDroppedWhole(string sequence, int pieces)
    {
        var terminal = new StringWriter();
        var writer = new TerminalWriter(terminal);
        int size = (sequence.Length + pieces - 1) / pieces;

        writer.Write("a");
        foreach (string piece in sequence.Chunk(size).Select(chars => new string(chars)))
            writer.Write(piece);
        writer.Write("b");

        Assert.Equal("ab", terminal.ToString());
    }

    static string Cassette(Recorder recorder)
    {
        using var dir = new TempDir();
        recorder.Save(dir.File("r.json"));
        return File.ReadAllText(dir.File("r.json"));
    }

    /// <summary>Answers every request with a 200 whose body is this stream.</summary>
    sealed class StreamingHandler(Stream body, string contentType) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var response = new HttpResponseMessage(HttpStatusCode.OK) { Content = new StreamContent(body), RequestMessage = request };
            response.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue(contentType);
            return Task.FromResult(response);
        }
    }

    /// <summary>
    /// A stream that starts with `start` and then repeats `fill` without end (or ends after `start` when fill is null),
    /// every read answered at once and whole, as a socket with data waiting does, and without looking at the token.
    /// A reader that does not stop on its own is stopped after 20,000 reads, so that a failing test ends.
    /// </summary>
    sealed class EndlessStream(byte[] start, byte? fill) : Stream
    {
        public int Reads { get; private set; }
        public long BytesRead { get; private set; }
        public Action<int>? OnRead { get; init; }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            Reads++;
            if (Reads > 20_000)
                throw new InvalidOperationException("the reader read on without end");
            OnRead?.Invoke(Reads);
            int n;
            if (BytesRead < start.Length)
            {
                n = Math.Min(buffer.Length, start.Length - (int)BytesRead);
                start.AsSpan((int)BytesRead, n).CopyTo(buffer);
            }
            else if (fill is byte b)
            {
                n = Math.Min(buffer.Length, 4096);
                buffer[..n].Fill(b);
            }
            else
            {
                n = 0;
            }
            BytesRead += n;
            return n;
        }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(Read(buffer.Span));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            Task.FromResult(Read(buffer.AsSpan(offset, count)));

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => BytesRead; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    /// <summary>A server that answers one request with a chunked body that starts with `start` and then never ends:
    /// it writes until the client hangs up, and counts what it wrote.</summary>
    sealed class EndlessServer : IAsyncDisposable
    {
        readonly TcpListener listener = new(IPAddress.Loopback, 0);
        readonly Task<long> written;

        public EndlessServer(string contentType, string start)
        {
            listener.Start();
            written = ServeAsync(contentType, start);
        }

        public string BaseUrl => $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}/v1";

        public Task<long> BytesWrittenAsync() => written.WaitAsync(TimeSpan.FromSeconds(30)); // a bound, not a synchronisation

        async Task<long> ServeAsync(string contentType, string start)
        {
            using Socket socket = await listener.AcceptSocketAsync();
            await using var stream = new NetworkStream(socket);
            var received = new StringBuilder();
            var buffer = new byte[8192];
            while (!received.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
                received.Append(Encoding.ASCII.GetString(buffer, 0, await stream.ReadAsync(buffer)));
            long total = 0;
            try
            {
                await stream.WriteAsync(Encoding.ASCII.GetBytes(
                    $"HTTP/1.1 200 OK\r\nContent-Type: {contentType}\r\nTransfer-Encoding: chunked\r\n\r\n"));
                byte[] first = Encoding.UTF8.GetBytes(start);
                await stream.WriteAsync(Encoding.ASCII.GetBytes($"{first.Length:x}\r\n").Concat(first).Concat("\r\n"u8.ToArray()).ToArray());
                byte[] chunk = [.. Encoding.ASCII.GetBytes($"{65536:x}\r\n"), .. Enumerable.Repeat((byte)'a', 65536), .. "\r\n"u8];
                while (true)
                {
                    await stream.WriteAsync(chunk);
                    total += chunk.Length;
                }
            }
            catch (Exception e) when (e is IOException or SocketException)
            {
                return total; // the client hung up
            }
        }

        public ValueTask DisposeAsync()
        {
            listener.Stop();
            return ValueTask.CompletedTask;
        }
    }
}
