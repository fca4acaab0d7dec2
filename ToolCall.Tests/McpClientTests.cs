using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// The MCP client (Client/McpClient.cs) against servers not written with it: McpTestServer, on the official MCP C#
/// SDK, and tiny /bin/sh scripts for the servers that misbehave. Each test starts its own server process; nothing here
/// sleeps: a test waits for a line the server writes on stderr, or for the client's own timeout.
/// </summary>
public class McpClientTests
{
    static readonly string[] TestServerTools = ["get_weather", "fail", "picture", "structured", "slow", "ask_client", "notify", "exit"];

    [Fact]
    public async Task Handshake_ListsEveryPageOfTools_OfTheCSharpSdkServer()
    {
        await using McpClient mcp = await StartTestServerAsync();

        Assert.Equal("2025-11-25", mcp.ProtocolVersion);
        Assert.Equal("McpTestServer", (string?)mcp.ServerInfo["name"]);
        Assert.Equal(TestServerTools, mcp.Tools.Select(t => t.Name));  // three pages of tools/list, three to a page
        McpTool weather = mcp.Tools[0];
        Assert.Equal("Returns the current weather in the given city", weather.Description);
        Assert.True(JsonNode.DeepEquals(
            JsonNode.Parse("""{"type":"object","properties":{"city":{"type":"string","description":"City name, e.g. \"London\""}},"required":["city"]}"""),
            weather.InputSchema));
    }

    [Fact]
    public async Task ServerThatRefusesInitialize_IsSpokenToInTheStatelessRevision()
    {
        // The SDK server pinned to 2026-07-28 answers initialize with an error, and then requires _meta on every request.
        await using McpClient mcp = await StartTestServerAsync("--modern-only");

        Assert.Equal("2026-07-28", mcp.ProtocolVersion);
        Assert.Equal("McpTestServer", (string?)mcp.ServerInfo["name"]);
        Assert.Equal(TestServerTools, mcp.Tools.Select(t => t.Name));
        Assert.Equal(("It's 18°C and partly cloudy in Paris.", false), await CallAsync(mcp, "get_weather", """{"city":"Paris"}"""));
    }

    [Fact]
    public async Task Call_ReturnsTheTextContent()
    {
        await using McpClient mcp = await StartTestServerAsync();

        Assert.Equal(("It's 18°C and partly cloudy in Paris.", false), await CallAsync(mcp, "get_weather", """{"city":"Paris"}"""));
    }

    [Fact]
    public async Task IsErrorTrue_MakesIsErrorTrue()
    {
        await using McpClient mcp = await StartTestServerAsync();

        Assert.Equal(("The weather service is down.", true), await CallAsync(mcp, "fail"));
    }

    [Fact]
    public async Task ContentThatIsNotText_IsDescribedInWords()
    {
        await using McpClient mcp = await StartTestServerAsync();

        (string text, bool isError) = await CallAsync(mcp, "picture");

        Assert.False(isError);
        Assert.Equal(
            """
            [image: image/png, 16 bytes of base64]
            [audio: audio/wav, 16 bytes of base64]
            [resource link: forecast.csv, file:///forecast.csv, text/csv: The week's forecast]
            [resource: file:///note.txt, text/plain]
            Bring an umbrella.
            [resource: file:///data.bin, application/octet-stream, 4 bytes of base64]
            """.ReplaceLineEndings("\n"), text);
    }

    [Fact]
    public async Task StructuredContentWithoutText_IsGivenAsItsJson()
    {
        await using McpClient mcp = await StartTestServerAsync();

        Assert.Equal(("""{"temperature":18,"unit":"celsius"}""", false), await CallAsync(mcp, "structured"));
    }

    [Theory]
    [InlineData("roots/list")]
    [InlineData("sampling/createMessage")]
    [InlineData("elicitation/create")]
    public async Task ServerRequestForACapability_IsAnsweredWithMethodNotFound(string method)
    {
        await using McpClient mcp = await StartTestServerAsync();

        // The server sends the request in the middle of the call, and answers with what it got back.
        Assert.Equal(($"{method}: error -32601", false), await CallAsync(mcp, "ask_client", $$"""{"method":"{{method}}"}"""));
    }

    [Fact]
    public async Task ServerPing_IsAnsweredWithAnEmptyResult()
    {
        await using McpClient mcp = await StartTestServerAsync();

        Assert.Equal(("ping: result {}", false), await CallAsync(mcp, "ask_client", """{"method":"ping"}"""));
    }

    [Fact]
    public async Task NotificationsAndResponsesToNoRequest_AreIgnored_AndTheLogGoesToStderr()
    {
        var stderr = new StderrLines();
        await using McpClient mcp = await StartTestServerAsync(stderr);

        // Before its answer the server sends a log message, tools/list_changed and a response with an id never sent.
        Assert.Equal(("answered after the notifications", false), await CallAsync(mcp, "notify"));
        Assert.Equal(("It's 18°C and partly cloudy in Oslo.", false), await CallAsync(mcp, "get_weather", """{"city":"Oslo"}"""));
        Assert.Contains("info notify: a log line from the server", stderr.Lines);
        Assert.Equal(TestServerTools, mcp.Tools.Select(t => t.Name));
    }

    [Fact]
    public async Task ErrorAnswer_IsOneClearError()
    {
        await using McpClient mcp = await StartTestServerAsync();

        var error = await Assert.ThrowsAsync<FlowException>(() => CallAsync(mcp, "no_such_tool"));

        Assert.Equal($"the MCP server \"{mcp.Command}\" answered tools/call with error -32602: Unknown tool: 'no_such_tool'.", error.Message);
    }

    [Fact]
    public async Task InputRequiredResult_IsOneClearError()
    {
        // On 2026-07-28 the SDK turns the server's roots/list request into an input_required result (multi round-trip).
        await using McpClient mcp = await StartTestServerAsync("--modern-only");

        var error = await Assert.ThrowsAsync<FlowException>(() => CallAsync(mcp, "ask_client", """{"method":"roots/list"}"""));

        Assert.Contains("answered tools/call with resultType \"input_required\" (roots/list)", error.Message);
    }

    [Fact]
    public async Task ServerThatWillNotStart_IsOneClearError()
    {
        var error = await Assert.ThrowsAsync<FlowException>(() => StartAsync("/nonexistent/mcp-server --stdio"));

        Assert.StartsWith("the MCP server \"/nonexistent/mcp-server --stdio\" could not be started: ", error.Message);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    public async Task EmptyCommand_IsOneClearError(string command)
    {
        var error = await Assert.ThrowsAsync<FlowException>(() => StartAsync(command));

        Assert.StartsWith("the MCP server command is empty", error.Message);
    }

    [Theory]
    [InlineData("echo Listening on port 3000", "wrote something that is not JSON on stdout during initialize, where only JSON-RPC messages belong: Listening on port 3000.")]
    [InlineData("echo '{\"status\": \"ok\"}'", "wrote JSON that is not a JSON-RPC 2.0 message on stdout during initialize, where only JSON-RPC messages belong: {\"status\": \"ok\"}.")]
    public async Task ServerThatPrintsSomethingElseThanJsonRpc_IsOneClearError(string print, string expected)
    {
        using var dir = new TempDir();
        string command = Script(dir, $"read request\n{print}\ncat > /dev/null");  // the answer to initialize

        var error = await Assert.ThrowsAsync<FlowException>(() => StartAsync(command));

        Assert.Equal($"the MCP server \"{command}\" {expected}", error.Message);
    }

    [Fact]
    public async Task ServerThatExitsDuringTheHandshake_IsOneClearError_WithItsLastWordsOnStderr()
    {
        using var dir = new TempDir();
        string command = Script(dir, "read request\necho 'cannot open the database' >&2\nexit 4");

        var error = await Assert.ThrowsAsync<FlowException>(() => StartAsync(command));

        Assert.Equal($"the MCP server \"{command}\" exited with code 4 during initialize (its last line on stderr: \"cannot open the database\").", error.Message);
    }

    [Fact]
    public async Task ServerThatExitsMidCall_IsOneClearError_AndSoIsEveryLaterCall()
    {
        await using McpClient mcp = await StartTestServerAsync();

        var error = await Assert.ThrowsAsync<FlowException>(() => CallAsync(mcp, "exit", """{"code":3}"""));
        var later = await Assert.ThrowsAsync<FlowException>(() => CallAsync(mcp, "get_weather", """{"city":"Paris"}"""));

        string exited = $"the MCP server \"{mcp.Command}\" exited with code 3";
        string lastWords = "(its last line on stderr: \"exit: leaving in the middle of the call\")";
        Assert.Equal($"{exited} during tools/call {lastWords}.", error.Message);
        Assert.Equal($"{exited} {lastWords}.", later.Message);
    }

    [Fact]
    public async Task ServerThatNeverAnswers_IsBoundedByTheHandshakeTimeout()
    {
        using var dir = new TempDir();
        string command = Script(dir, "cat > /dev/null");
        var clock = Stopwatch.StartNew();

        var error = await Assert.ThrowsAsync<FlowException>(() => StartAsync(command, TimeSpan.FromMilliseconds(500)));

        Assert.Equal($"the MCP server \"{command}\" did not answer initialize within 0.5 s.", error.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed}");
    }

    [Fact]
    public async Task ServerThatAnswersWithAnotherVersion_IsOneClearError()
    {
        using var dir = new TempDir();
        string command = Script(dir, Answer(1, """{"protocolVersion":"2099-01-01","capabilities":{},"serverInfo":{"name":"future","version":"9"}}"""));

        var error = await Assert.ThrowsAsync<FlowException>(() => StartAsync(command));

        Assert.StartsWith($"the MCP server \"{command}\" answered initialize with protocol version \"2099-01-01\", which this client does not speak", error.Message);
    }

    [Fact]
    public async Task ServerThatRefusesBothHandshakes_IsOneClearError_NamingBothAnswers()
    {
        using var dir = new TempDir();
        string command = Script(dir,
            Answer(1, null, """{"code":-32600,"message":"Not today"}""") + "\n" +
            Answer(2, null, """{"code":-32601,"message":"Method not found"}"""));

        var error = await Assert.ThrowsAsync<FlowException>(() => StartAsync(command));

        Assert.Equal($"the MCP server \"{command}\" refused initialize (error -32600: Not today) and server/discover (error -32601: Method not found).", error.Message);
    }

    [Fact]
    public async Task ToolsListWhosePagesNeverEnd_IsOneClearError()
    {
        using var dir = new TempDir();
        string page = """{"tools":[{"name":"again","inputSchema":{"type":"object"}}],"nextCursor":"next"}""";
        string command = Script(dir,
            Answer(1, """{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"loop","version":"1"}}""") +
            "\nread initialized\n" + Answer(2, page) + "\n" + Answer(3, page));

        var error = await Assert.ThrowsAsync<FlowException>(() => StartAsync(command));

        Assert.Equal($"the MCP server \"{command}\" answered tools/list with the nextCursor \"next\" twice: its pages never end.", error.Message);
    }

    [Fact]
    public async Task CancellingACall_EndsIt_AndTellsTheServerWithNotificationsCancelled()
    {
        var stderr = new StderrLines();
        await using McpClient mcp = await StartTestServerAsync(stderr);
        using var cancel = new CancellationTokenSource();

        Task<(string, bool)> call = mcp.CallToolAsync("slow", [], cancel.Token);
        await stderr.WaitForAsync("slow: started");
        cancel.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WaitAsync(Bound));
        await stderr.WaitForAsync("slow: cancelled");  // the SDK cancels the tool's token on notifications/cancelled
        Assert.Equal(("It's 18°C and partly cloudy in Rome.", false), await CallAsync(mcp, "get_weather", """{"city":"Rome"}"""));
    }

    [Fact]
    public async Task Dispose_ClosesStdin_AndTheServerExitsByItself()
    {
        var stderr = new StderrLines();
        McpClient mcp = await StartTestServerAsync(stderr);
        mcp.ExitGrace = TimeSpan.FromSeconds(30);  // however slow the machine, no kill: the exit is the server's own
        int id = mcp.ProcessId;

        await mcp.DisposeAsync().AsTask().WaitAsync(Bound);

        Assert.True(IsGone(id), $"process {id} is still running");
        Assert.Contains("stdin is closed: exiting", stderr.Lines);  // it was not killed
    }

    [Fact]
    public async Task Dispose_KillsAServerThatStaysUpAfterItsStdinCloses()
    {
        McpClient mcp = await StartTestServerAsync("--linger");
        mcp.ExitGrace = TimeSpan.FromMilliseconds(200);
        int id = mcp.ProcessId;

        await mcp.DisposeAsync().AsTask().WaitAsync(Bound);

        Assert.True(IsGone(id), $"process {id} is still running");
    }

    [Theory]
    [InlineData("node server.js stdio", new[] { "node", "server.js", "stdio" })]
    [InlineData("  npx   -y\t@modelcontextprotocol/server-everything  ", new[] { "npx", "-y", "@modelcontextprotocol/server-everything" })]
    [InlineData("\"/opt/my tools/server\" --root \"C:\\My Documents\"", new[] { "/opt/my tools/server", "--root", "C:\\My Documents" })]
    [InlineData("server --name=\"two words\" \"\" last", new[] { "server", "--name=two words", "", "last" })]
    public void Command_IsSplitOnSpaces_WithDoubleQuotesGroupingWords(string command, string[] words)
    {
        Assert.Equal(words, McpClient.SplitCommand(command));
    }

    [Fact]
    public void CommandWithAnUnclosedQuote_IsOneClearError()
    {
        var error = Assert.Throws<FlowException>(() => McpClient.SplitCommand("node \"my server.js"));

        Assert.Equal("the MCP server command node \"my server.js has a double quote that is not closed.", error.Message);
    }

    // --- helpers

    /// <summary>McpTestServer.dll, built by the test project's reference to it, in the same configuration as the tests.</summary>
    static string TestServerDll
    {
        get
        {
            string configuration = Path.GetFileName(Path.GetDirectoryName(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)))!;
            return Path.Combine(Repo.Root, "ToolCall.Tests", "McpTestServer", "bin", configuration, "net10.0", "McpTestServer.dll");
        }
    }

    static Task<McpClient> StartTestServerAsync(params string[] options) => StartTestServerAsync(new StderrLines(), options);

    // The path is quoted, as a path with spaces would have to be.
    static Task<McpClient> StartTestServerAsync(StderrLines stderr, params string[] options) =>
        McpClient.StartAsync(string.Join(' ', [$"dotnet \"{TestServerDll}\"", .. options]), stderr, CancellationToken.None).WaitAsync(Bound);

    static Task<McpClient> StartAsync(string command, TimeSpan? timeout = null) =>
        McpClient.StartAsync(command, new StderrLines(), CancellationToken.None, timeout).WaitAsync(Bound);

    static async Task<(string Text, bool IsError)> CallAsync(McpClient mcp, string tool, string arguments = "{}") =>
        await mcp.CallToolAsync(tool, JsonNode.Parse(arguments)!.AsObject(), CancellationToken.None).WaitAsync(Bound);

    /// <summary>How long a test waits for anything, so that a client that hangs fails its test instead (TimeoutException).</summary>
    static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    /// <summary>A server as a /bin/sh script in the test's folder; the command that starts it.</summary>
    static string Script(TempDir dir, string body)
    {
        string path = dir.File("server.sh");
        File.WriteAllText(path, body + "\n");
        return $"/bin/sh {path}";
    }

    /// <summary>Script lines that read one request and answer it with id, with a result or an error.</summary>
    static string Answer(int id, string? result, string? error = null) =>
        $"read request\necho '{{\"jsonrpc\":\"2.0\",\"id\":{id},{(error is null ? $"\"result\":{result}" : $"\"error\":{error}")}}}'";

    static bool IsGone(int id)
    {
        try
        {
            using var process = Process.GetProcessById(id);
            return process.HasExited;
        }
        catch (ArgumentException)
        {
            return true;
        }
    }

    /// <summary>The server's stderr as the client passes it on, line by line; a test can wait for a line.</summary>
    sealed class StderrLines : TextWriter
    {
        readonly List<string> lines = [];
        readonly List<(string Text, TaskCompletionSource Seen)> waiting = [];

        public override Encoding Encoding => Encoding.UTF8;

        public IReadOnlyList<string> Lines
        {
            get
            {
                lock (lines)
                    return [.. lines];
            }
        }

        public override void WriteLine(string? value)
        {
            lock (lines)
            {
                lines.Add(value ?? "");
                foreach (var wait in waiting.Where(w => (value ?? "").Contains(w.Text)).ToList())
                {
                    wait.Seen.TrySetResult();
                    waiting.Remove(wait);
                }
            }
        }

        /// <summary>Until a line containing TEXT has come (within Bound).</summary>
        public Task WaitForAsync(string text)
        {
            lock (lines)
            {
                if (lines.Any(line => line.Contains(text)))
                    return Task.CompletedTask;
                var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                waiting.Add((text, seen));
                return seen.Task.WaitAsync(Bound);
            }
        }
    }
}
