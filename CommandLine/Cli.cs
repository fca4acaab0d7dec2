// Cli.cs: the command line: the program's entry point, the demo, and serve.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

static class Cli
{
    /// <summary>The program's entry point (./run.sh, dotnet run).</summary>
    public static Task<int> Main(string[] args) => MainAsync(args);

    public const string DefaultQuestion = "What's the weather in London right now?";

    public const string Help = """
        ToolCall: LLM function calling in four explicit steps, over an OpenAI-compatible Chat Completions API
        (or, with --api, the OpenAI Responses API or the Anthropic Messages API).

        Usage:
          ToolCall [QUESTION] [options]        ask QUESTION (default: "What's the weather in London right now?")
          ToolCall serve CASSETTE [--port N] [--host ADDRESS]
                                               serve a cassette as a local API; prints its base URL

        Where it goes:
          With neither OPENAI_API_KEY nor a base URL, it replays cassettes/weather.json (or the cassette named
          after the options below) offline on a local port. Otherwise it is live: against --base-url or OPENAI_BASE_URL (default https://api.openai.com/v1).
          The key is read only from OPENAI_API_KEY; a key is optional when a base URL is given.
          With --api anthropic: ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL (default https://api.anthropic.com/v1) and
          ANTHROPIC_MODEL (default claude-haiku-4-5) instead.

        Options:
          --api API          chat (default: POST /chat/completions), responses (POST /responses) or anthropic
                             (POST /messages); offline: cassettes/responses-weather.json, anthropic-weather.json
          --base-url URL     the API's base URL, e.g. http://localhost:11434/v1 (or OPENAI_BASE_URL)
          --model NAME       the model (or OPENAI_MODEL; default gpt-4o-mini)
          --replay FILE      answer from a cassette on a local port instead of a live API
          --record FILE      write every request and response of this run to a cassette
          --trace            print the full JSON of each request and response on stderr (key redacted)
          --max-rounds N     answer at most N replies that ask for tools, then ask for an answer with
                             tool_choice "none" (default 8)
          --max-tokens N     the most tokens one reply may have: max_tokens (--api responses: max_output_tokens);
                             a reply cut off by it in the middle of a tool call runs none of its calls (default:
                             the API's; 1024 on --api anthropic, which requires one; offline: max-tokens.json)
          --tool-choice C    tool_choice: auto, none, required, or a function's name to force that function
                             (offline: cassettes/tool-choice-C.json, bundled for auto, none, required, get_weather)
          --no-parallel      parallel_tool_calls: false, at most one tool call per reply (offline: no-parallel.json)
          --strict           strict: true on every function, its schema in strict form (offline: strict.json;
                             with --no-parallel: no-parallel+strict.json); not with --api anthropic
          --no-store         --api responses: store: false, and include: ["reasoning.encrypted_content"], so that
                             a reasoning model's reasoning goes back encrypted (offline: responses-no-store.json)
          --thinking TOKENS  --api anthropic: extended thinking, thinking: {"type":"enabled","budget_tokens":TOKENS};
                             at least 1024, below --max-tokens (default: TOKENS + 1024); not with a forced
                             --tool-choice (offline, with 1024: anthropic-thinking.json)
          --stream           ask for the replies as server-sent events and print the text as it arrives
                             (offline: weather-stream.json, responses-weather-stream.json, anthropic-weather-stream.json)
          --retries N        send a request again up to N times after 408, 409, 429, 5xx, a timeout or a
                             connection error, waiting as the server asks or backing off (default 2)
          --timeout SECONDS  the most one attempt may take, response body (or whole stream) included; each
                             retry gets its own (default 60)
          --max-response-mb N
                             the most one response may be, in MB, a whole stream included; past it, it is
                             not read further (default 64)
          --tool-timeout SECONDS
                             the most one tool call may take; past it the call is stopped and the model is told
                             it timed out (default 30)
          --max-result-chars N
                             a tool result longer than N characters is cut, and says so (default 20000)
          --parallel-tools   run the calls of one reply together rather than one after another (their results
                             still go into the history in the calls' order)
          --confirm          before each call, show it and ask on the terminal whether to run it; a call you
                             decline is answered "declined" (needs a terminal on stdin)
          --mcp "COMMAND"    start an MCP server (stdio) and offer its tools too; repeatable; the command is
                             split on spaces, double quotes group words, no shell
          --diagram          after the answer, a Mermaid sequence diagram of the run on stdout (a ```mermaid block)
          --port N           with serve: the port to listen on (default 0: any free port)
          --host ADDRESS     with serve: the address to listen on (default 127.0.0.1: this machine only)
          -h, --help         this text

        Output: the answer on stdout (with --diagram, the diagram after it); the step log and errors on stderr.
        Exit codes: 0 ok, 1 API or flow failure, 2 usage or configuration error, 130 cancelled (Ctrl+C).
        """;

    public static async Task<int> MainAsync(string[] args)
    {
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, signal => { signal.Cancel = true; cancel.Cancel(); });
        bool interactive = !Console.IsErrorRedirected &&
                           string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI")) &&
                           Environment.GetEnvironmentVariable("TERM") != "dumb";
        // On a terminal the answer loses the escape sequences the model may have put in it; in a pipe it is as received.
        TextWriter stdout = Console.IsOutputRedirected ? Console.Out : new TerminalWriter(Console.Out);
        TextReader? terminal = Console.IsInputRedirected ? null : Console.In;
        return await RunAsync(args, Environment.GetEnvironmentVariable, stdout, Console.Error, cancel.Token, interactive, terminal);
    }

    /// <summary>The whole program, with its environment passed in, so the tests can run it in-process. `terminal` is
    /// stdin when it is a terminal (--confirm asks there), else null.</summary>
    public static async Task<int> RunAsync(
        string[] args, Func<string, string?> environment, TextWriter stdout, TextWriter stderr,
        CancellationToken cancellationToken, bool interactive = false, TextReader? terminal = null)
    {
        try
        {
            Options options = Options.Parse(args);
            if (options.Help)
            {
                stdout.WriteLine(Help);
                return 0;
            }
            if (options.ServeCassette is not null)
                return await ServeAsync(options, stdout, stderr, cancellationToken);
            var servers = new List<McpClient>(); // --mcp: started for the run, shut down at its end however it ends
            try
            {
                return await AskAsync(options, environment, stdout, stderr, cancellationToken, interactive, terminal, servers);
            }
            finally
            {
                foreach (McpClient server in servers)
                    await server.DisposeAsync();
            }
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"error: {StepLog.Escaped(e.Message)}");
            return 2;
        }
        catch (FlowException e)
        {
            stderr.WriteLine($"error: {StepLog.Escaped(e.Message)}");
            return 1;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            stderr.WriteLine("cancelled.");
            return 130;
        }
    }

    static async Task<int> AskAsync(
        Options options, Func<string, string?> environment, TextWriter stdout, TextWriter stderr,
        CancellationToken cancellationToken, bool interactive, TextReader? terminal, List<McpClient> servers)
    {
        Api api = options.Api;
        string? apiKey = CheckedKey(NonEmpty(environment(api.KeyVariable)), api.KeyVariable);
        string? baseUrl = options.BaseUrl ?? NonEmpty(environment(api.BaseUrlVariable));
        string model = options.Model ?? NonEmpty(environment(api.ModelVariable)) ?? api.DefaultModel;
        var log = new StepLog(stderr, options.Trace, interactive);

        if (options.Confirm && terminal is null)
            throw new UsageException(
                "--confirm asks on the terminal before each call, and stdin is not a terminal (a pipe or a file), so nobody could " +
                "answer. Run it in a terminal, or without --confirm.");
        var limits = new ToolLimits(TimeSpan.FromSeconds(options.ToolTimeoutSeconds), options.MaxResultChars);
        Tool[] tools = ProgramTools.Create(options.Strict, limits, log.Info);
        tools = await ProgramTools.WithMcpToolsAsync(tools, options.Mcp, api, options.Strict, limits, log, stderr, servers, cancellationToken);
        CheckToolChoice(options.ToolChoice, tools);
        var flowOptions = new FlowOptions
        {
            ToolChoice = options.ToolChoice,
            ParallelToolCalls = !options.NoParallel,
            MaxTokens = options.MaxTokens,
            MaxRounds = options.MaxRounds,
            Log = log.Info,
            RunCalls = new ToolRunner(options.ParallelTools, options.Confirm ? terminal : null, stderr).RunCallsAsync,
        };
        flowOptions = api.WithReasoning(flowOptions, options.NoStore, options.Thinking);
        api.CheckOptions(flowOptions, tools);
        if (api.ToolsProblem(tools) is string toolsProblem)
            throw new UsageException($"{toolsProblem}; the API would reject the request. Rename or leave out a tool.");
        if (options.Strict && !options.NoParallel)
            log.Info("Note: OpenAI documents strict schemas as not compatible with parallel function calls (a parallel call " +
                     "may not match the schema); add --no-parallel to rule them out.");

        string? replayPath = options.Replay;
        if (replayPath is not null && options.BaseUrl is not null)
            throw new UsageException("--replay and --base-url cannot be combined: --replay serves the cassette on its own local URL.");
        bool offlineDefault = replayPath is null && apiKey is null && baseUrl is null;
        if (offlineDefault)
        {
            string name = api.CassetteName(ChatCassetteName(options));
            replayPath = FindDefaultCassette(name) ?? throw new UsageException(
                $"no cassettes/{name} here to replay. Pass --replay FILE, or set {api.KeyVariable} or --base-url for a live run.");
        }
        if (options.Record is not null && Directory.Exists(options.Record))
            throw new UsageException($"--record {options.Record}: that is a folder. Name the cassette file to write, e.g. {Path.Combine(options.Record, "run.json")}.");
        if (options.Record is not null && Path.GetDirectoryName(Path.GetFullPath(options.Record)) is string folder && !Directory.Exists(folder))
            throw new UsageException($"--record {options.Record}: the folder {folder} does not exist. Create it or choose another path.");

        string? question = options.Question;
        ReplayServer? replay = null;
        if (replayPath is not null)
        {
            Cassette cassette = Cassette.Load(replayPath);
            CheckCassetteFits(cassette, replayPath, options);
            string? recordedQuestion = cassette.FirstQuestion(api.HistoryField);
            if (offlineDefault && question is not null && question != recordedQuestion)
                throw new UsageException(
                    $"offline, the demo replays {Shorter(replayPath)}, which answers only \"{recordedQuestion}\". " +
                    $"To ask your own question, set {api.KeyVariable} (or --base-url for a local server such as Ollama).");
            question ??= recordedQuestion; // replaying without a question asks the recorded one
            replay = ReplayServer.Start(cassette);
            baseUrl = replay.BaseUrl;
            apiKey = null; // a replay needs no key, so the key never leaves the process
            string why = offlineDefault ? $"offline: no {api.KeyVariable} or --base-url was given" : "offline";
            log.Info($"Replaying {Shorter(replayPath)} on {baseUrl} ({why}).");
        }
        baseUrl ??= api.DefaultBaseUrl;
        if (!Uri.TryCreate(baseUrl, UriKind.Absolute, out Uri? parsed) || parsed.Scheme is not ("http" or "https"))
            throw new UsageException($"the base URL '{baseUrl}' is not an http(s) URL. Use e.g. --base-url http://localhost:11434/v1.");

        await using (replay)
        {
            using HttpClient http = ResilientChatClient.NewHttpClient();
            // --diagram draws the run from its recorded requests, so it records too (in memory; only --record saves).
            Recorder? recorder = options.Record is null && !options.Diagram ? null : new Recorder(baseUrl);
            var chat = new ResilientChatClient(http, baseUrl, api, apiKey, log, recorder)
            {
                Retries = new RetryPolicy { MaxRetries = options.Retries, Timeout = TimeSpan.FromSeconds(options.TimeoutSeconds) },
                MaxResponseBytes = options.MaxResponseMegabytes * 1024L * 1024,
                StreamTextTo = options.Stream ? stdout : null,
            };
            bool recorded = true;
            try
            {
                question ??= DefaultQuestion;
                string answer = await api.RunAsync(chat, model, question, tools, flowOptions, cancellationToken);
                if (!chat.LastReplyStreamed)
                    stdout.WriteLine(answer); // a streamed answer has been printed as it arrived
                if (options.Diagram)
                    stdout.Write("\n" + RunDiagram.Mermaid(api, recorder!.Interactions, answer));
                if (chat.PromptTokens + chat.CompletionTokens > 0)
                    log.Info($"Tokens: {chat.PromptTokens + chat.CompletionTokens} in total ({chat.PromptTokens} in, {chat.CompletionTokens} out) over {ToolCalling.Plural(chat.Requests, "request")}.");
            }
            finally
            {
                // Saved even when the flow fails: the failing response is often the one worth keeping.
                if (recorder is not null && options.Record is not null)
                    recorded = SaveRecording(recorder, options.Record, log);
            }
            return recorded ? 0 : 1;
        }
    }

    /// <summary>Writes the recording; a file that cannot be written is one error line (and exit 1), not a crash
    /// that would hide the answer or the flow's own error.</summary>
    static bool SaveRecording(Recorder recorder, string path, StepLog log)
    {
        try
        {
            recorder.Save(path);
            log.Info($"Recorded {ToolCalling.Plural(recorder.Count, "interaction")} to {path}.");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log.Info($"error: could not write the recording to {path} ({e.Message}); nothing was written there.");
            return false;
        }
    }

    static async Task<int> ServeAsync(Options options, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        Cassette cassette = Cassette.Load(options.ServeCassette!);
        ReplayServer server;
        try
        {
            server = ReplayServer.Start(cassette, options.Port, stderr, options.Host);
        }
        catch (SocketException e)
        {
            throw new UsageException($"cannot listen on {options.Host} port {options.Port} ({e.Message}). Choose another --port (0: any free port) or --host.");
        }
        if (!IPAddress.IsLoopback(options.Host))
            stderr.WriteLine($"Warning: listening on {options.Host}, not only on this machine: anyone who can reach it can use this server.");
        await using (server)
        {
            stdout.WriteLine(server.BaseUrl); // the one line other programs read
            stdout.Flush();
            stderr.WriteLine($"Serving {options.ServeCassette} ({ToolCalling.Plural(cassette.Interactions.Count, "interaction")}) on {server.BaseUrl}; Ctrl+C or SIGTERM stops.");
            if (Api.ForPath(cassette.Interactions[0].Path) is Api api && cassette.FirstQuestion(api.HistoryField) is string question)
                stderr.WriteLine($"Its question: \"{question}\" (a client must ask exactly this to match).");
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            catch (OperationCanceledException)
            {
            }
        }
        stderr.WriteLine("Stopped.");
        return 0;
    }

    /// <summary>The name of the cassette the offline demo replays for these options, on Chat Completions (each API
    /// names its own from it: Api.CassetteName): each option that changes the request on the wire has a cassette of its
    /// own, named after it (tool-choice-required.json, no-parallel.json, strict.json; options together:
    /// no-parallel+strict.json, no-store+stream.json). Without any it is weather.json; --stream alone, weather-stream.json.</summary>
    static string ChatCassetteName(Options options)
    {
        var parts = new List<string>();
        if (options.ToolChoice is string choice)
            parts.Add($"tool-choice-{choice}");
        if (options.NoParallel)
            parts.Add("no-parallel");
        if (options.Strict)
            parts.Add("strict");
        if (options.MaxTokens is not null)
            parts.Add("max-tokens");
        if (options.NoStore)
            parts.Add("no-store");
        if (options.Thinking is not null)
            parts.Add("thinking");
        if (options.Stream)
            parts.Add("stream");
        string name = string.Join('+', parts);
        return name switch { "" => "weather.json", "stream" => "weather-stream.json", _ => name + ".json" };
    }

    /// <summary>--tool-choice takes a mode or the name of one of the tools; anything else is caught before it is sent.</summary>
    static void CheckToolChoice(string? choice, IReadOnlyList<Tool> tools)
    {
        if (choice is null or "auto" or "none" or "required" || tools.Any(t => t.Name == choice))
            return;
        throw new UsageException(
            $"--tool-choice {choice}: no tool has that name. Use auto, none, required, or the name of a tool to force it: " +
            $"{string.Join(", ", tools.Select(t => t.Name))}.");
    }

    /// <summary>A cassette holds one API's requests, streamed or not: replaying it with another --api, or with or
    /// without --stream when it was recorded the other way, could only end in a mismatch. Say so before it starts.</summary>
    static void CheckCassetteFits(Cassette cassette, string path, Options options)
    {
        Api api = options.Api;
        bool recordedStreamed = cassette.Interactions.Any(i => Json.At(i.RequestBody, "stream")?.GetValueKind() == JsonValueKind.True);
        if (recordedStreamed != options.Stream)
            throw new UsageException(recordedStreamed
                ? $"cassette {path} was recorded with --stream: add --stream, or replay a cassette recorded without it."
                : $"cassette {path} was recorded without --stream: drop --stream, or replay a cassette recorded with it.");
        if (cassette.Interactions.Select(i => Api.ForPath(i.Path)).FirstOrDefault(recorded => recorded is not null) is Api recorded && recorded != api)
            throw new UsageException(
                $"cassette {path} holds requests to {recorded.Path} (--api {recorded.Name}), not to {api.Path} (--api {api.Name}). " +
                $"Pass --api {recorded.Name}, or a cassette for this API.");
    }

    /// <summary>cassettes/NAME where you run it, else NAME beside you, else cassettes/NAME above the program.</summary>
    static string? FindDefaultCassette(string name)
    {
        string here = Environment.CurrentDirectory;
        foreach (string candidate in new[] { Path.Combine(here, "cassettes", name), Path.Combine(here, name) })
        {
            if (File.Exists(candidate))
                return candidate;
        }
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "cassettes", name);
            if (File.Exists(candidate))
                return candidate;
        }
        return null;
    }

    static string? NonEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;

    /// <summary>
    /// The key as read, if an HTTP header can carry it: visible ASCII only. A key read from a file with Windows line
    /// endings keeps its CR, which no header may hold: refused here, in words that never show the key, rather than
    /// failing later as something else.
    /// </summary>
    static string? CheckedKey(string? key, string variable)
    {
        if (key is null)
            return null;
        if (key.TrimEnd('\r', '\n').Length < key.Length)
            throw new UsageException(
                $"{variable} ends with a line break (CR or LF), which an HTTP header cannot carry. Remove it " +
                "(a key read from a file saved with Windows line endings keeps its CR).");
        int at = key.AsSpan().IndexOfAnyExceptInRange('!', '~');
        if (at >= 0)
            throw new UsageException(
                $"{variable} holds a character an HTTP header cannot carry (U+{(int)key[at]:X4}, character {at + 1} of {key.Length}); " +
                "an API key is letters, digits and punctuation only. Check the variable.");
        return key;
    }

    /// <summary>The path relative to where you are when that is below it, else as it is.</summary>
    static string Shorter(string path)
    {
        string relative = Path.GetRelativePath(Environment.CurrentDirectory, path);
        return relative.StartsWith("..", StringComparison.Ordinal) ? path : relative;
    }
}
