// McpClient.cs: an MCP client over stdio: starts a Model Context Protocol server as a child process, lists its tools, calls them.

using System;
using System.Collections.Generic;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>One tool of an MCP server, as its tools/list describes it; InputSchema is a JSON Schema object.</summary>
sealed record McpTool(string Name, string Description, JsonObject InputSchema);

/// <summary>
/// A connection to one MCP server over the stdio transport: the server is a child process that reads newline-delimited
/// JSON-RPC 2.0 messages on its stdin and writes them on its stdout; its stderr is passed through. The client declares
/// no capabilities (no roots, sampling or elicitation): it lists the server's tools once, at the start, and calls them.
/// Every failure is a FlowException with one line naming the server's command and what went wrong.
/// </summary>
sealed class McpClient : IAsyncDisposable
{
    // Two revisions are in use: 2025-11-25 (and older) opens with the initialize handshake; 2026-07-28 has none, each
    // request carries the version and capabilities in params._meta, and server/discover tells what a server speaks.
    // The 2026 spec has a client that speaks both probe with server/discover first (transports/stdio, "Backward
    // Compatibility"); this one sends initialize first and falls back to server/discover, for what servers speak
    // today: the official reference server (server-everything 2026.8.31, TypeScript SDK 1.32) speaks 2025-11-25 only
    // and answers server/discover with -32601, as does any server on an SDK without the 2026 revision; the C# SDK's
    // speak both. A probe would cost all of them a round trip, and a legacy server silent on unknown requests (the spec
    // allows it) a whole timeout, while a 2026-only server must answer initialize with a JSON-RPC error (versioning,
    // "Compatibility Matrix"): the fallback follows an answer, never a timeout.
    public const string HandshakeVersion = "2025-11-25";
    public const string StatelessVersion = "2026-07-28";
    static readonly string[] HandshakeVersions = [HandshakeVersion, "2025-06-18", "2025-03-26", "2024-11-05"];

    public static readonly TimeSpan DefaultHandshakeTimeout = TimeSpan.FromSeconds(30);

    static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false);
    // The wire stays readable (no \u00B0 for °); JSON's own escapes still keep every message on one line.
    static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    sealed record Pending(string Method, TaskCompletionSource<JsonObject> Response);

    readonly Process process;
    readonly TextWriter stderr;
    readonly SemaphoreSlim writeLock = new(1, 1);
    readonly Dictionary<long, Pending> pending = [];
    readonly Task readLoop, errorLoop;
    long lastId;
    string? gone;            // why the connection ended, once it has: every pending and later request fails with it
    string goneDetail = "";  // and the server's last line on stderr, since that is usually where it says why
    string? lastStderrLine;
    readonly object stderrLock = new();
    string waitingFor = "initialize";
    bool stateless;          // 2026-07-28: every request carries _meta
    int disposed;

    /// <summary>The command the server was started with, as given; every error message names it.</summary>
    public string Command { get; }

    /// <summary>The protocol revision spoken: the one the server answered initialize with, or 2026-07-28.</summary>
    public string ProtocolVersion { get; private set; } = "";

    /// <summary>The server's name and version (Implementation: name, version, maybe title), as it gave them.</summary>
    public JsonObject ServerInfo { get; private set; } = [];

    /// <summary>The server's tools, all pages of tools/list, in the order it listed them.</summary>
    public IReadOnlyList<McpTool> Tools { get; private set; } = [];

    internal int ProcessId => process.Id;

    /// <summary>How long DisposeAsync waits for the server to exit once its stdin is closed, before killing it.</summary>
    internal TimeSpan ExitGrace { get; set; } = TimeSpan.FromSeconds(2);

    McpClient(Process process, string command, TextWriter stderr)
    {
        this.process = process;
        this.stderr = stderr;
        Command = command;
        errorLoop = Task.Run(PassStderrAsync);  // first: the read loop waits for it when the server exits
        readLoop = Task.Run(ReadLoopAsync);
    }

    /// <summary>
    /// Starts the server (COMMAND split on spaces, double quotes grouping words, no shell), does the handshake and
    /// lists its tools, all within handshakeTimeout (30 s unless given).
    /// </summary>
    public static async Task<McpClient> StartAsync(
        string command, TextWriter stderr, CancellationToken cancellationToken, TimeSpan? handshakeTimeout = null)
    {
        List<string> words = SplitCommand(command);
        var start = new ProcessStartInfo(words[0], words.Skip(1)) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        start.StandardInputEncoding = start.StandardOutputEncoding = start.StandardErrorEncoding = Utf8;
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException("no process was started");
        }
        catch (Exception e) when (e is Win32Exception or InvalidOperationException or PlatformNotSupportedException)
        {
            throw new FlowException($"the MCP server \"{command.Trim()}\" could not be started: {e.Message}");
        }

        var client = new McpClient(process, command.Trim(), stderr);
        TimeSpan timeout = handshakeTimeout ?? DefaultHandshakeTimeout;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            await client.HandshakeAsync(deadline.Token);
            return client;
        }
        catch (Exception e)
        {
            await client.DisposeAsync();
            if (e is OperationCanceledException && deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
                throw client.Error($"did not answer {client.waitingFor} within {timeout.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture)} s");
            throw;
        }
    }

    /// <summary>
    /// tools/call: the text of the result's content (each item that is not text described in words, e.g. "[image:
    /// image/png, 16 bytes of base64]"; structuredContent as JSON when there is no text), and its isError.
    /// Cancelling sends notifications/cancelled for the call and throws OperationCanceledException.
    /// </summary>
    public async Task<(string Text, bool IsError)> CallToolAsync(string name, JsonObject arguments, CancellationToken cancellationToken)
    {
        JsonObject result = ResultOf("tools/call", await RequestAsync(
            "tools/call", new JsonObject { ["name"] = name, ["arguments"] = arguments.DeepClone() }, cancellationToken));
        return (TextOf(result), result["isError"] is JsonValue isError && isError.TryGetValue(out bool error) && error);
    }

    /// <summary>Shuts the server down as the stdio transport says: close its stdin, wait a bounded time, then kill it.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref disposed, 1) == 1)
            return;
        End("was shut down by this client");
        // A write stuck on a server that stopped reading holds the lock: then there is nothing to close politely.
        if (await writeLock.WaitAsync(TimeSpan.FromSeconds(1)))
        {
            Quietly(process.StandardInput.Close);
            writeLock.Release();
        }
        if (!await ExitedWithinAsync(ExitGrace))
        {
            Quietly(() => process.Kill(entireProcessTree: true));
            await ExitedWithinAsync(TimeSpan.FromSeconds(5));
        }
        await Task.WhenAny(Task.WhenAll(readLoop, errorLoop), Task.Delay(TimeSpan.FromSeconds(2)));
        process.Dispose();
    }

    async Task HandshakeAsync(CancellationToken cancellationToken)
    {
        JsonObject initialize = await RequestAsync("initialize", new JsonObject
        {
            ["protocolVersion"] = HandshakeVersion,
            ["capabilities"] = new JsonObject(),
            ["clientInfo"] = ClientInfo(),
        }, cancellationToken);
        if (initialize["result"] is JsonObject result)
        {
            string? version = StringOf(result["protocolVersion"]);
            if (version is null || !HandshakeVersions.Contains(version))
                throw Error($"answered initialize with protocol version {Quote(version)}, which this client does not speak ({string.Join(", ", HandshakeVersions)}, {StatelessVersion})");
            ProtocolVersion = version;
            ServerInfo = result["serverInfo"]?.DeepClone() as JsonObject ?? [];
            await NotifyAsync("notifications/initialized").WaitAsync(cancellationToken);
        }
        else
        {
            // Refused: a server of the 2026-07-28 revision, or one that speaks neither.
            stateless = true;
            JsonObject discover = await RequestAsync("server/discover", [], cancellationToken);
            if (discover["result"] is not JsonObject found)
                throw Error($"refused initialize ({ErrorOf(initialize)}) and server/discover ({ErrorOf(discover)})");
            var versions = (found["supportedVersions"] as JsonArray ?? []).Select(StringOf).ToList();
            if (!versions.Contains(StatelessVersion))
                throw Error($"refused initialize ({ErrorOf(initialize)}) and supports the protocol versions {Quote(string.Join(", ", versions))} by server/discover, none of which this client speaks");
            ProtocolVersion = StatelessVersion;
            ServerInfo = At(At(found, "_meta"), "io.modelcontextprotocol/serverInfo")?.DeepClone() as JsonObject ?? [];
        }
        Tools = await ListToolsAsync(cancellationToken);
    }

    async Task<List<McpTool>> ListToolsAsync(CancellationToken cancellationToken)
    {
        var tools = new List<McpTool>();
        var cursors = new HashSet<string>();
        string? cursor = null;
        do
        {
            JsonObject page = cursor is null ? [] : new JsonObject { ["cursor"] = cursor };
            JsonObject result = ResultOf("tools/list", await RequestAsync("tools/list", page, cancellationToken));
            if (result["tools"] is not JsonArray list)
                throw Error("answered tools/list without a tools array");
            foreach (JsonNode? item in list)
            {
                if (item is not JsonObject tool || StringOf(tool["name"]) is not string name)
                    throw Error($"listed a tool without a name: {Snippet(item?.ToJsonString() ?? "null")}");
                var schema = tool["inputSchema"]?.DeepClone() as JsonObject ?? new JsonObject { ["type"] = "object" };
                tools.Add(new McpTool(name, StringOf(tool["description"]) ?? "", schema));
            }
            cursor = StringOf(result["nextCursor"]);
            if (!string.IsNullOrEmpty(cursor) && !cursors.Add(cursor))
                throw Error($"answered tools/list with the nextCursor {Quote(cursor)} twice: its pages never end");
        } while (!string.IsNullOrEmpty(cursor));
        return tools;
    }

    /// <summary>Sends a request and waits for the response with its id: the whole message, result or error.</summary>
    async Task<JsonObject> RequestAsync(string method, JsonObject parameters, CancellationToken cancellationToken)
    {
        if (stateless)
            parameters["_meta"] = StatelessMeta();
        long id = Interlocked.Increment(ref lastId);
        var call = new Pending(method, new TaskCompletionSource<JsonObject>(TaskCreationOptions.RunContinuationsAsynchronously));
        lock (pending)
        {
            if (gone is not null)
                throw Error(gone + goneDetail);
            pending[id] = call;
        }
        waitingFor = method;
        try
        {
            await WriteAsync(new JsonObject { ["jsonrpc"] = "2.0", ["id"] = id, ["method"] = method, ["params"] = parameters }).WaitAsync(cancellationToken);
            return await call.Response.Task.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            bool inFlight;
            lock (pending)
                inFlight = pending.Remove(id);
            // MCP: the receiver should stop working on it; initialize is the one request that must not be cancelled.
            if (inFlight && method != "initialize")
            {
                var cancelled = new JsonObject { ["requestId"] = id, ["reason"] = "cancelled by the user" };
                await Task.WhenAny(Quietly(NotifyAsync("notifications/cancelled", cancelled)), Task.Delay(TimeSpan.FromSeconds(1)));
            }
            throw;
        }
        finally
        {
            lock (pending)
                pending.Remove(id);
        }
    }

    Task NotifyAsync(string method, JsonObject? parameters = null) => WriteAsync(parameters is null
        ? new JsonObject { ["jsonrpc"] = "2.0", ["method"] = method }
        : new JsonObject { ["jsonrpc"] = "2.0", ["method"] = method, ["params"] = parameters });

    async Task WriteAsync(JsonObject message)
    {
        string line = message.ToJsonString(Compact) + "\n";
        await writeLock.WaitAsync();
        try
        {
            await process.StandardInput.WriteAsync(line);
            await process.StandardInput.FlushAsync();
            return;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            // Its stdin is closed: it has exited, or is exiting. The read loop tells which, from its stdout's end.
        }
        finally
        {
            writeLock.Release();
        }
        await Task.WhenAny(readLoop, Task.Delay(TimeSpan.FromSeconds(2)));
        throw Error(gone is null ? "stopped reading its stdin" : gone + goneDetail);
    }

    async Task ReadLoopAsync()
    {
        string end = "closed its stdout", detail = "";
        try
        {
            while (await process.StandardOutput.ReadLineAsync() is string line)
            {
                if (!string.IsNullOrWhiteSpace(line) && Receive(line) is string what)
                {
                    End($"wrote {what} on stdout", $", where only JSON-RPC messages belong: {Snippet(line)}");
                    return;
                }
            }
            if (await ExitedWithinAsync(TimeSpan.FromSeconds(2)))
                end = $"exited with code {process.ExitCode}";
            // Its last words on stderr are read to the end before they are quoted.
            await Task.WhenAny(errorLoop, Task.Delay(TimeSpan.FromSeconds(2)));
            if (lastStderrLine is not null)
                detail = $" (its last line on stderr: {Quote(lastStderrLine)})";
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            // A broken pipe: as closed as a closed one.
        }
        End(end, detail);
    }

    /// <summary>One message from the server; what it is instead when it is not JSON-RPC.</summary>
    string? Receive(string line)
    {
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(line);
        }
        catch (JsonException)
        {
            return "something that is not JSON";
        }
        if (node is not JsonObject message || StringOf(message["jsonrpc"]) != "2.0")
            return "JSON that is not a JSON-RPC 2.0 message";
        bool hasId = message.TryGetPropertyValue("id", out JsonNode? id);
        if (message.ContainsKey("method"))
        {
            if (StringOf(message["method"]) is not string method)
                return "a JSON-RPC message whose method is not a string";
            if (hasId)
                Answer(id, method);
            else if (method == "notifications/message")
                Log(message["params"]);
            // Other notifications (tools/list_changed, progress, ...) need nothing of a client that lists tools once.
            return null;
        }
        if (!hasId || !(message.ContainsKey("result") || message.ContainsKey("error")))
            return "a JSON-RPC message that is neither a request, a notification nor a response";
        Pending? call = null;
        if (id is JsonValue value && value.TryGetValue(out long number))
        {
            lock (pending)
                pending.Remove(number, out call);
        }
        call?.Response.TrySetResult(message);  // an id not ours, or one already cancelled, is ignored
        return null;
    }

    /// <summary>A request from the server: "Method not found" (-32601), as this client declares no capabilities, but ping.</summary>
    void Answer(JsonNode? id, string method)
    {
        var answer = new JsonObject { ["jsonrpc"] = "2.0", ["id"] = id?.DeepClone() };
        if (method == "ping")
            answer["result"] = new JsonObject();
        else
            answer["error"] = new JsonObject { ["code"] = -32601, ["message"] = $"Method not found: {method} (this client declares no capabilities)" };
        _ = Quietly(WriteAsync(answer));
    }

    /// <summary>A notifications/message from the server goes to stderr, with the server's own.</summary>
    void Log(JsonNode? parameters)
    {
        JsonNode? data = At(parameters, "data");
        string text = StringOf(data) ?? data?.ToJsonString(Compact) ?? "";
        string logger = StringOf(At(parameters, "logger")) is string name ? $" {name}" : "";
        lock (stderrLock)
            stderr.WriteLine($"{StringOf(At(parameters, "level")) ?? "log"}{logger}: {text}");
    }

    async Task PassStderrAsync()
    {
        try
        {
            while (await process.StandardError.ReadLineAsync() is string line)
            {
                if (!string.IsNullOrWhiteSpace(line))
                    lastStderrLine = line.Trim();
                lock (stderrLock)
                    stderr.WriteLine(line);
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            // The pipe went with the process.
        }
    }

    /// <summary>The connection has ended: every request waiting fails with why, and so will every later one.</summary>
    void End(string why, string detail = "")
    {
        List<Pending> waiting;
        lock (pending)
        {
            if (gone is not null)
                return;
            (gone, goneDetail) = (why, detail);
            waiting = [.. pending.Values];
            pending.Clear();
        }
        foreach (Pending call in waiting)
            call.Response.TrySetException(Error($"{why} during {call.Method}{detail}"));
    }

    async Task<bool> ExitedWithinAsync(TimeSpan time)
    {
        await Task.WhenAny(process.WaitForExitAsync(), Task.Delay(time));
        return process.HasExited;
    }

    /// <summary>A write whose failure changes nothing (an answer to the server, a cancellation): not awaited for it.</summary>
    static Task Quietly(Task task) => task.ContinueWith(static t => _ = t.Exception, TaskScheduler.Default);

    /// <summary>Closing the stdin of, or killing, a process that has exited already: nothing is left to do.</summary>
    static void Quietly(Action action)
    {
        try
        {
            action();
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or Win32Exception)
        {
            // It is gone.
        }
    }

    /// <summary>The result of a response, or the one-line error: a JSON-RPC error, no result object, or a request for input.</summary>
    JsonObject ResultOf(string method, JsonObject response)
    {
        if (response["result"] is not JsonObject result)
            throw Error(response.ContainsKey("error") ? $"answered {method} with {ErrorOf(response)}" : $"answered {method} with a result that is not an object");
        // 2026-07-28: a result is "complete" (the default) or "input_required", which asks the client for something
        // (elicitation, sampling, roots) that a client without those capabilities has not offered.
        if (StringOf(result["resultType"]) is string type && type != "complete")
        {
            string asked = string.Join(", ", (result["inputRequests"] as JsonObject ?? []).Select(r => StringOf(At(r.Value, "method")) ?? r.Key));
            throw Error($"answered {method} with resultType {Quote(type)}{(asked.Length > 0 ? $" ({asked})" : "")}: it wants input this client, which declares no capabilities, cannot give");
        }
        return result;
    }

    static string ErrorOf(JsonObject response)
    {
        JsonNode? error = response["error"];
        string code = At(error, "code")?.ToJsonString() ?? "without a code";
        string message = StringOf(At(error, "message")) ?? "";
        string data = At(error, "data") is JsonNode d ? $" {Snippet(d.ToJsonString(Compact))}" : "";
        return $"error {code}{(message.Length > 0 ? ": " + message : "")}{data}";
    }

    /// <summary>A tool result as text: its text content, each other item described in words, never dropped.</summary>
    static string TextOf(JsonObject result)
    {
        var parts = new List<string>();
        bool hasText = false;
        foreach (JsonNode? item in result["content"] as JsonArray ?? [])
        {
            string? type = StringOf(At(item, "type"));
            string? mime = StringOf(At(item, "mimeType"));
            switch (type)
            {
                case "text":
                    parts.Add(StringOf(At(item, "text")) ?? "");
                    hasText = true;
                    break;
                case "image" or "audio":
                    parts.Add($"[{type}: {mime ?? "no mimeType"}, {StringOf(At(item, "data"))?.Length ?? 0} bytes of base64]");
                    break;
                case "resource_link":
                    string about = StringOf(At(item, "description")) is string description ? $": {description}" : "";
                    parts.Add($"[resource link: {StringOf(At(item, "name"))}, {StringOf(At(item, "uri"))}{(mime is null ? "" : ", " + mime)}{about}]");
                    break;
                case "resource":
                    JsonNode? resource = At(item, "resource");
                    string head = $"[resource: {StringOf(At(resource, "uri"))}{(StringOf(At(resource, "mimeType")) is string m ? ", " + m : "")}";
                    parts.Add(StringOf(At(resource, "text")) is string text
                        ? $"{head}]\n{text}"
                        : $"{head}, {StringOf(At(resource, "blob"))?.Length ?? 0} bytes of base64]");
                    break;
                default:
                    parts.Add($"[{type ?? "untyped"} content: {Snippet(item?.ToJsonString(Compact) ?? "null")}]");
                    break;
            }
        }
        if (!hasText && result["structuredContent"] is JsonNode structured)
            parts.Add(structured.ToJsonString(Compact));
        return string.Join("\n", parts);
    }

    static JsonObject ClientInfo() => new()
    {
        ["name"] = "ToolCall",
        ["version"] = typeof(McpClient).Assembly.GetName().Version?.ToString(3) ?? "1.0.0",
    };

    /// <summary>What every 2026-07-28 request carries: the revision, the (empty) capabilities, who is asking.</summary>
    static JsonObject StatelessMeta() => new()
    {
        ["io.modelcontextprotocol/protocolVersion"] = StatelessVersion,
        ["io.modelcontextprotocol/clientCapabilities"] = new JsonObject(),
        ["io.modelcontextprotocol/clientInfo"] = ClientInfo(),
    };

    /// <summary>
    /// The command as a program and its arguments: words split on spaces, double quotes grouping words into one
    /// (and "" an empty argument). No shell: no variables, globs, pipes or escapes.
    /// </summary>
    internal static List<string> SplitCommand(string command)
    {
        var words = new List<string>();
        StringBuilder? word = null;  // none between words
        bool quoted = false;
        foreach (char c in command)
        {
            if (char.IsWhiteSpace(c) && !quoted)
            {
                if (word is not null)
                    words.Add(word.ToString());
                word = null;
            }
            else if (c == '"')
                (word, quoted) = (word ?? new StringBuilder(), !quoted);
            else
                (word ??= new StringBuilder()).Append(c);
        }
        if (quoted)
            throw new FlowException($"the MCP server command {command.Trim()} has a double quote that is not closed.");
        if (word is not null)
            words.Add(word.ToString());
        if (words.Count == 0)
            throw new FlowException("the MCP server command is empty: give the program to start and its arguments, e.g. \"npx -y @modelcontextprotocol/server-everything\".");
        return words;
    }

    FlowException Error(string what) => new($"the MCP server \"{Command}\" {what}.");

    static JsonNode? At(JsonNode? node, string name) => node is JsonObject o ? o[name] : null;

    static string? StringOf(JsonNode? node) => node is JsonValue value && value.TryGetValue(out string? text) ? text : null;

    static string Quote(string? text) => text is null ? "(none)" : JsonValue.Create(text).ToJsonString(Compact);

    static string Snippet(string text) => text.Length > 200 ? text[..200] + "…" : text;
}
