using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>Paths in the repository, found from the test binaries upwards.</summary>
static class Repo
{
    public static string Root { get; } = FindRoot();

    public static string Cassette(string name) => Path.Combine(Root, "cassettes", name);

    /// <summary>The ToolCall.dll built beside the tests (the project reference copies it here).</summary>
    public static string ToolCallDll => Path.Combine(AppContext.BaseDirectory, "ToolCall.dll");

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "ToolCall.csproj")))
                return dir.FullName;
        }
        throw new InvalidOperationException("ToolCall.csproj not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>What one run of the program printed, and how it ended.</summary>
sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}--- stderr\n{Stderr}";
}

static class App
{
    /// <summary>Runs the command line in-process with an empty environment unless one is given.</summary>
    public static async Task<CliResult> RunAsync(params string[] args) => await RunAsync(new Dictionary<string, string>(), args);

    public static async Task<CliResult> RunAsync(IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exitCode = await Cli.RunAsync(args, name => environment.GetValueOrDefault(name), stdout, stderr, CancellationToken.None);
        return new CliResult(exitCode, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Starts `dotnet ToolCall.dll ARGS` as a separate process in the repository root, with no OPENAI_* settings.</summary>
    public static Process Start(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = Repo.Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        start.ArgumentList.Add(Repo.ToolCallDll);
        foreach (string arg in args)
            start.ArgumentList.Add(arg);
        foreach (string name in new[] { "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL" })
            start.Environment.Remove(name);
        return Process.Start(start)!;
    }
}

/// <summary>A folder of its own for each test, deleted afterwards.</summary>
sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "toolcall-tests", Guid.NewGuid().ToString("N"));

    public TempDir() => Directory.CreateDirectory(Path);

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Builders for the JSON on the wire, so a test states its history in a few lines.</summary>
static class Wire
{
    public const string Model = "gpt-4o-mini";

    public static JsonObject User(string text) => new() { ["role"] = "user", ["content"] = text };

    public static JsonObject ToolMessage(string callId, string content) =>
        new() { ["role"] = "tool", ["tool_call_id"] = callId, ["content"] = content };

    public static JsonObject Call(string? id, string name, JsonNode? arguments)
    {
        var call = new JsonObject();
        if (id is not null)
            call["id"] = id;
        call["type"] = "function";
        call["function"] = new JsonObject { ["name"] = name, ["arguments"] = arguments };
        return call;
    }

    public static JsonObject WeatherCall(string id, string city) => Call(id, "get_weather", $$"""{"city":"{{city}}"}""");

    /// <summary>An assistant message carrying tool calls, as the API returns it.</summary>
    public static JsonObject AskForTools(params JsonObject[] calls) => new()
    {
        ["role"] = "assistant",
        ["content"] = null,
        ["tool_calls"] = new JsonArray([.. calls]),
        ["refusal"] = null,
    };

    public static JsonObject Text(string content) => new() { ["role"] = "assistant", ["content"] = content, ["refusal"] = null };

    /// <summary>A request as this project's client sends it: the messages and the demo tools.</summary>
    public static JsonObject Request(params JsonObject[] messages) => new()
    {
        ["model"] = Model,
        ["messages"] = new JsonArray([.. messages.Select(m => m.DeepClone())]),
        ["tools"] = ToolCalling.ToolDefinitions(ProgramTools.Create()),
    };

    /// <summary>A chat.completion response with one choice.</summary>
    public static JsonObject Completion(JsonObject message, string? finishReason = null) => new()
    {
        ["id"] = "chatcmpl-test",
        ["object"] = "chat.completion",
        ["created"] = 1764086400,
        ["model"] = "gpt-4o-mini-2024-07-18",
        ["choices"] = new JsonArray(new JsonObject
        {
            ["index"] = 0,
            ["message"] = message.DeepClone(),
            ["logprobs"] = null,
            ["finish_reason"] = finishReason ?? (message["tool_calls"] is null ? "stop" : "tool_calls"),
        }),
        ["usage"] = new JsonObject { ["prompt_tokens"] = 10, ["completion_tokens"] = 5, ["total_tokens"] = 15 },
    };

    public static Interaction Exchange(JsonObject request, JsonNode response, int status = 200) =>
        new("POST", "/chat/completions", request.DeepClone(), status, response.DeepClone());

    public static Cassette Cassette(params Interaction[] interactions) => new("Written by a test.", interactions);

    /// <summary>
    /// One round of tool calls: the question is answered with `reply` (asking for tools); the client must then send
    /// the question, `sentBack` (the assistant message as history needs it) and `toolMessages`, which gets `answer`.
    /// </summary>
    public static Cassette OneRound(string question, JsonObject reply, JsonObject sentBack, JsonObject[] toolMessages, string answer) =>
        Cassette(
            Exchange(Request(User(question)), reply),
            Exchange(Request([User(question), sentBack, .. toolMessages]), Completion(Text(answer))));

    /// <summary>Writes the cassette to a file in `dir` and returns its path.</summary>
    public static string Save(this Cassette cassette, TempDir dir, string name = "cassette.json")
    {
        string path = dir.File(name);
        cassette.Save(path);
        return path;
    }

    public static string Weather(string city) => DemoTools.GetWeather(city);
}

/// <summary>HTTP calls to a server under test, with the JSON body back.</summary>
static class Http
{
    static readonly HttpClient Client = new();

    public static async Task<(HttpStatusCode Status, JsonNode? Body)> PostAsync(string url, JsonNode body)
    {
        using var content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
        using HttpResponseMessage response = await Client.PostAsync(url, content);
        string text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    public static async Task<(HttpStatusCode Status, JsonNode? Body)> PostTextAsync(string url, string body)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using HttpResponseMessage response = await Client.PostAsync(url, content);
        string text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    /// <summary>A port that nothing listens on right now (taken from the OS, then released).</summary>
    public static int ClosedPort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}

/// <summary>
/// A one-shot HTTP server for tests that need to see the request's headers, or to send a response byte by byte as
/// they choose: it answers one request with a fixed chat.completion (or fixed raw bytes), keeps the head of the
/// request it got, and closes the connection.
/// </summary>
sealed class HeaderCapturingServer : IDisposable
{
    readonly TcpListener listener = new(IPAddress.Loopback, 0);
    readonly Task<string> head;

    public HeaderCapturingServer(JsonObject response) : this(JsonResponse(response))
    {
    }

    /// <summary>Answers with exactly these bytes (status line, headers and body), then closes the connection.</summary>
    public HeaderCapturingServer(byte[] rawResponse)
    {
        listener.Start();
        head = ServeOneAsync(rawResponse);
    }

    static byte[] JsonResponse(JsonObject response)
    {
        byte[] body = Encoding.UTF8.GetBytes(response.ToJsonString());
        byte[] head = Encoding.ASCII.GetBytes(
            $"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n");
        return [.. head, .. body];
    }

    public string BaseUrl => $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}/v1";

    /// <summary>The request line and headers of the request it answered.</summary>
    public Task<string> RequestHead => head;

    async Task<string> ServeOneAsync(byte[] rawResponse)
    {
        using Socket socket = await listener.AcceptSocketAsync();
        await using var stream = new NetworkStream(socket);
        var received = new MemoryStream();
        var buffer = new byte[4096];
        string text;
        while (!(text = Encoding.UTF8.GetString(received.ToArray())).Contains("\r\n\r\n"))
        {
            int read = await stream.ReadAsync(buffer);
            if (read == 0)
                break;
            received.Write(buffer, 0, read);
        }
        int headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        string requestHead = text[..headEnd];
        int length = int.Parse(requestHead.Split("\r\n")
            .First(line => line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))["Content-Length:".Length..]);
        int bodyBytesLeft = length - ((int)received.Length - Encoding.UTF8.GetByteCount(text[..(headEnd + 4)]));
        while (bodyBytesLeft > 0)
        {
            int read = await stream.ReadAsync(buffer);
            if (read == 0)
                break;
            bodyBytesLeft -= read;
        }
        await stream.WriteAsync(rawResponse);
        return requestHead;
    }

    public void Dispose() => listener.Stop();
}

/// <summary>
/// A clock that moves only when a test moves it: its timers (timeouts, Task.Delay) fire in Advance, never on their
/// own, so a test of waiting never waits. One-shot timers only, which is what timeouts and delays use.
/// </summary>
sealed class ManualClock : TimeProvider
{
    readonly Lock gate = new();
    readonly List<Timer> timers = [];
    readonly List<(TimeSpan Due, TaskCompletionSource Seen)> watches = [];
    DateTimeOffset now = new(2025, 11, 25, 12, 0, 0, TimeSpan.Zero);

    public override DateTimeOffset GetUtcNow()
    {
        lock (gate)
            return now;
    }

    public override long GetTimestamp() => GetUtcNow().UtcTicks;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new Timer(this, callback, state);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>Completes once a timer set to fire `due` after its start is pending: the code under test is waiting.</summary>
    public Task TimerPendingAsync(TimeSpan due)
    {
        lock (gate)
        {
            if (timers.Any(t => t.Due == due))
                return Task.CompletedTask;
            var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            watches.Add((due, seen));
            return seen.Task.WaitAsync(TimeSpan.FromSeconds(10)); // a bound, not a synchronisation: fails a broken test
        }
    }

    /// <summary>Moves the clock on and fires the timers that are due.</summary>
    public void Advance(TimeSpan by)
    {
        List<Timer> due;
        lock (gate)
        {
            now += by;
            due = [.. timers.Where(t => t.DueAt <= now)];
            timers.RemoveAll(due.Contains);
        }
        foreach (Timer timer in due)
            timer.Fire();
    }

    void Schedule(Timer timer)
    {
        List<TaskCompletionSource> seen;
        lock (gate)
        {
            timers.Remove(timer);
            if (timer.Due == Timeout.InfiniteTimeSpan)
                return;
            timer.DueAt = now + timer.Due;
            timers.Add(timer);
            seen = [.. watches.Where(w => w.Due == timer.Due).Select(w => w.Seen)];
            watches.RemoveAll(w => w.Due == timer.Due);
        }
        foreach (TaskCompletionSource s in seen)
            s.TrySetResult();
    }

    void Cancel(Timer timer)
    {
        lock (gate)
            timers.Remove(timer);
    }

    sealed class Timer(ManualClock clock, TimerCallback callback, object? state) : ITimer
    {
        public TimeSpan Due { get; private set; }
        public DateTimeOffset DueAt { get; set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            Due = dueTime;
            clock.Schedule(this);
            return true;
        }

        public void Fire() => callback(state);

        public void Dispose() => clock.Cancel(this);

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}

/// <summary>A retry delay that does not wait: it notes how long it was asked to wait.</summary>
sealed class NotedWaits
{
    readonly List<TimeSpan> waits = [];

    public IReadOnlyList<TimeSpan> Waits
    {
        get
        {
            lock (waits)
                return [.. waits];
        }
    }

    public Task Delay(TimeSpan wait, CancellationToken cancellationToken)
    {
        lock (waits)
            waits.Add(wait);
        return Task.CompletedTask;
    }
}

/// <summary>A text writer a test can wait on: SeenAsync completes once a line containing the text was written.</summary>
sealed class WatchedWriter : TextWriter
{
    readonly StringBuilder text = new();
    readonly List<(string Fragment, TaskCompletionSource Seen)> watches = [];

    public override Encoding Encoding => Encoding.UTF8;

    public override void Write(char value)
    {
        List<TaskCompletionSource> seen = [];
        lock (text)
        {
            text.Append(value);
            if (value != '\n')
                return;
            string written = text.ToString();
            foreach ((string fragment, TaskCompletionSource s) in watches.Where(w => written.Contains(w.Fragment, StringComparison.Ordinal)).ToList())
            {
                seen.Add(s);
                watches.Remove((fragment, s));
            }
        }
        foreach (TaskCompletionSource s in seen)
            s.TrySetResult();
    }

    public Task SeenAsync(string fragment)
    {
        lock (text)
        {
            if (text.ToString().Contains(fragment, StringComparison.Ordinal))
                return Task.CompletedTask;
            var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            watches.Add((fragment, seen));
            return seen.Task.WaitAsync(TimeSpan.FromSeconds(10)); // a bound, not a synchronisation: fails a broken test
        }
    }

    public override string ToString()
    {
        lock (text)
            return text.ToString();
    }
}

/// <summary>A terminal for tests: stdout and stderr on one screen, and a signal when the "waiting for the model" line
/// is first drawn (it is drawn only on a terminal).</summary>
sealed class Terminal : StringWriter
{
    readonly TaskCompletionSource shown = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task WaitingShown => shown.Task;

    public override void Write(string? value)
    {
        lock (this)
            base.Write(value);
        if (value?.Contains("waiting for the model", StringComparison.Ordinal) == true)
            shown.TrySetResult();
    }

    public override void Write(char value)
    {
        lock (this)
            base.Write(value);
    }

    public override void Write(char[] buffer, int index, int count)
    {
        lock (this)
            base.Write(buffer, index, count);
    }

    public override string ToString()
    {
        lock (this)
            return base.ToString();
    }
}

/// <summary>stdout that says when the first text has been printed.</summary>
sealed class PrintedSignal : StringWriter
{
    readonly TaskCompletionSource printed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task Printed => printed.Task;

    public override void Write(string? value)
    {
        base.Write(value);
        if (!string.IsNullOrEmpty(value))
            printed.TrySetResult();
    }
}

/// <summary>
/// The rule both fuzz tests hold each damaged case to: it ends in an answer or in one clear FlowException line, never
/// in another exception or a hang.
/// </summary>
static class Fuzz
{
    /// <summary>True when the run answered, false when it failed with one clear line; any other end fails the test.
    /// `damage` and `sent` describe the case, read only if it fails.</summary>
    public static async Task<bool> AnsweredAsync(Task<string> run, int i, Func<string> damage, Func<string> sent)
    {
        try
        {
            await run.WaitAsync(TimeSpan.FromSeconds(10)); // a hang fails the test instead of stalling it
            return true;
        }
        catch (FlowException e)
        {
            Assert.False(string.IsNullOrWhiteSpace(e.Message), $"case {i}: an empty error");
            Assert.False(e.Message.Contains('\n'), $"case {i}: more than one line: {e.Message}");
            return false;
        }
        catch (Exception e)
        {
            Assert.Fail($"case {i} ({damage()}) ended in {e.GetType().Name}, not an answer or a FlowException:\n{sent()}\n{e}");
            return false;
        }
    }
}

/// <summary>The three APIs, by name, for tests that pick one.</summary>
static class Apis
{
    public static readonly Api Chat = Api.Named("chat");
    public static readonly Api Responses = Api.Named("responses");
    public static readonly Api Anthropic = Api.Named("anthropic");
}

/// <summary>One tool call run as step 3 runs it, for tests that check the text of its tool message.</summary>
static class ToolRuns
{
    public static string Content(string name, JsonNode? arguments, IReadOnlyList<Tool> tools) =>
        ToolCalling.RunToolCallAsync(name, arguments, tools, CancellationToken.None).GetAwaiter().GetResult().Content;
}
