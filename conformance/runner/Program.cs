// The conformance runner: drives any client command through the cases in conformance/cases.json.
//
// For each case it starts `ToolCall serve CASSETTE` on a free loopback port (the first line the server prints is its
// base URL), runs the client with OPENAI_BASE_URL and ANTHROPIC_BASE_URL set to that URL, OPENAI_API_KEY and
// ANTHROPIC_API_KEY set to a dummy, `--api NAME` for a case of the Responses or Messages API, the case's options and
// the question as the last argument, and checks three things:
//   1. the client exits 0;
//   2. its stdout, less trailing whitespace, is the case's final answer;
//   3. the server played every interaction of the cassette, in order, and answered nothing else. The server matches
//      each request to the recorded one as the API reads it, so this proves the client sent the recorded requests,
//      its history included. The case's "history" is checked against the cassette's last request first, so it
//      states exactly what the client had to send.
//
// Usage: ConformanceRunner --toolcall PATH/ToolCall.dll [--case NAME]... [--skip-api API]... [--skip-tag TAG]...
//          [--skip-case NAME=REASON]... [--timeout SECONDS] -- COMMAND [ARGS...]
// conformance/run builds ToolCall and this runner once and passes --toolcall; see conformance/README.md. A client
// declares what it does not handle: an API it does not speak (--skip-api), a kind of case by its tag (--skip-tag, e.g.
// quirk), or one case with the reason (--skip-case). Those cases are reported as SKIP with the reason, never left out
// silently.

using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

try
{
    RunnerOptions options = RunnerOptions.Parse(args);
    string casesPath = Path.Combine(options.Root, "conformance", "cases.json");
    IReadOnlyList<ConformanceCase> cases = options.Select(ConformanceCase.LoadAll(casesPath), casesPath);
    Console.WriteLine($"Conformance of `{string.Join(' ', options.Client)}`: {cases.Count} case{(cases.Count == 1 ? "" : "s")} from {Path.GetRelativePath(Environment.CurrentDirectory, casesPath)}");
    int passed = 0, failed = 0, skipped = 0;
    foreach (ConformanceCase @case in cases)
    {
        if (options.SkipReason(@case) is string reason)
        {
            skipped++;
            Console.WriteLine($"  SKIP {@case.Name} ({reason})");
            continue;
        }
        List<string> problems = await CaseRun.RunAsync(@case, options);
        if (problems.Count == 0)
        {
            passed++;
            Console.WriteLine($"  PASS {@case.Name}");
            continue;
        }
        failed++;
        Console.WriteLine($"  FAIL {@case.Name}");
        foreach (string problem in problems)
            Console.WriteLine("       " + problem.ReplaceLineEndings("\n       "));
    }
    Console.WriteLine($"{passed} passed, {failed} failed{(skipped > 0 ? $", {skipped} skipped" : "")}");
    return failed == 0 ? 0 : 1;
}
catch (UsageException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 2;
}

/// <summary>A mistake in how the runner was called or in cases.json: one line, exit code 2.</summary>
sealed class UsageException(string message) : Exception(message);

/// <summary>How the runner was called. The skips are what the client declared it does not handle: APIs, tags, and
/// single cases, each case with the client's reason.</summary>
sealed record RunnerOptions(
    string Root, string ToolCallDll, IReadOnlyList<string> Client, IReadOnlySet<string> Only, IReadOnlySet<string> SkippedApis,
    IReadOnlySet<string> SkippedTags, IReadOnlyDictionary<string, string> SkippedCases, TimeSpan Timeout)
{
    public const string Usage = "usage: ConformanceRunner --toolcall PATH/ToolCall.dll [--case NAME]... [--skip-api API]... " +
        "[--skip-tag TAG]... [--skip-case NAME=REASON]... [--timeout SECONDS] -- COMMAND [ARGS...]";

    /// <summary>The APIs a case may be for: the values of --api that ToolCall takes.</summary>
    public static readonly string[] Apis = ["chat", "responses", "anthropic"];

    public static RunnerOptions Parse(string[] args)
    {
        string? dll = null;
        var only = new HashSet<string>();
        var skippedApis = new HashSet<string>();
        var skippedTags = new HashSet<string>();
        var skippedCases = new Dictionary<string, string>();
        double timeout = 60;
        int i = 0;
        for (; i < args.Length && args[i] != "--"; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new UsageException($"{args[i]} needs a value. {Usage}");
            switch (args[i])
            {
                case "--toolcall": dll = Value(); break;
                case "--case": only.Add(Value()); break;
                case "--skip-api":
                    string api = Value();
                    if (!Apis.Contains(api))
                        throw new UsageException($"--skip-api {api}: not an API of the cases. Use one of {string.Join(", ", Apis)}.");
                    skippedApis.Add(api);
                    break;
                case "--skip-tag": skippedTags.Add(Value()); break;
                case "--skip-case":
                    string[] nameAndReason = Value().Split('=', 2, StringSplitOptions.TrimEntries);
                    if (nameAndReason.Length < 2 || nameAndReason[0].Length == 0 || nameAndReason[1].Length == 0)
                        throw new UsageException($"--skip-case {nameAndReason[0]}: give the case and why the client skips it, as NAME=REASON " +
                                                 "(e.g. --skip-case \"missing-call-ids=the SDK keeps a missing id as null\").");
                    skippedCases[nameAndReason[0]] = nameAndReason[1];
                    break;
                case "--timeout":
                    string text = Value();
                    if (!double.TryParse(text, out timeout) || timeout <= 0)
                        throw new UsageException($"--timeout needs a number of seconds, not '{text}'.");
                    break;
                default: throw new UsageException($"unknown option '{args[i]}'. {Usage}");
            }
        }
        string[] client = i < args.Length ? args[(i + 1)..] : [];
        if (client.Length == 0)
            throw new UsageException($"no client command after --. {Usage}");
        if (dll is null || !File.Exists(dll))
            throw new UsageException($"--toolcall {dll ?? "(missing)"}: no ToolCall.dll there. Build it (./run.sh --help builds it) or use conformance/run.");
        return new RunnerOptions(FindRoot(), Path.GetFullPath(dll), client, only, skippedApis, skippedTags, skippedCases, TimeSpan.FromSeconds(timeout));
    }

    /// <summary>The cases to run or report (all, or those of --case); a case or tag named in an option must exist, so
    /// that a typo never turns into a skip or a run that does nothing.</summary>
    public IReadOnlyList<ConformanceCase> Select(IReadOnlyList<ConformanceCase> all, string path)
    {
        string[] names = [.. all.Select(c => c.Name)];
        string[] unknown = [.. Only.Concat(SkippedCases.Keys).Where(name => !names.Contains(name)).Distinct()];
        if (unknown.Length > 0)
            throw new UsageException($"no case named {string.Join(", ", unknown)} in {path}. The cases: {string.Join(", ", names)}.");
        string[] tags = [.. all.SelectMany(c => c.Tags).Distinct().Order()];
        string[] unknownTags = [.. SkippedTags.Where(tag => !tags.Contains(tag))];
        if (unknownTags.Length > 0)
            throw new UsageException($"--skip-tag {string.Join(", ", unknownTags)}: no case in {path} has that tag. The tags: {string.Join(", ", tags)}.");
        return [.. all.Where(c => Only.Count == 0 || Only.Contains(c.Name))];
    }

    /// <summary>Why the client does not run this case, as it declared; null when it runs it.</summary>
    public string? SkipReason(ConformanceCase @case) =>
        SkippedApis.Contains(@case.Api) ? $"--api {@case.Api}: this client declared --skip-api {@case.Api}"
        : SkippedCases.TryGetValue(@case.Name, out string? reason) ? $"this client declared --skip-case: {reason}"
        : @case.Tags.FirstOrDefault(SkippedTags.Contains) is string tag ? $"tagged {tag}: this client declared --skip-tag {tag}"
        : null;

    /// <summary>The repository: the first folder above the runner's binaries that holds conformance/cases.json.</summary>
    static string FindRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "conformance", "cases.json")))
                return dir.FullName;
        }
        throw new UsageException($"conformance/cases.json not found above {AppContext.BaseDirectory}.");
    }
}

/// <summary>One case of cases.json: the API it speaks ("chat" when left out), its tags (the kind of case, which a client
/// can skip as a whole), a cassette, what the client is asked, and what it must answer and send.</summary>
sealed record ConformanceCase(
    string Name, string Api, IReadOnlyList<string> Tags, string Cassette, IReadOnlyList<string> Args, string Question, string Answer, IReadOnlyList<string> History)
{
    public static IReadOnlyList<ConformanceCase> LoadAll(string path)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path));
        }
        catch (Exception e) when (e is IOException or JsonException)
        {
            throw new UsageException($"cannot read {path}: {e.Message}");
        }
        var cases = new List<ConformanceCase>();
        JsonArray items = root?["cases"] as JsonArray ?? throw new UsageException($"{path} needs a \"cases\" array.");
        for (int i = 0; i < items.Count; i++)
        {
            JsonObject? item = items[i] as JsonObject; // the indexer of any other kind of node would throw
            string Text(JsonNode? node, string field) => node is JsonValue value && value.GetValueKind() == JsonValueKind.String
                ? value.GetValue<string>()
                : throw new UsageException($"{path}: case {i + 1}: \"{field}\" must be a string.");
            string Field(string field) => Text(item?[field], field);
            string[] Strings(string field) => [.. (item?[field] as JsonArray ?? []).Select(node => Text(node, field))];
            string api = item?["api"] is null ? "chat" : Field("api");
            if (!RunnerOptions.Apis.Contains(api))
                throw new UsageException($"{path}: case {i + 1}: \"api\" must be one of {string.Join(", ", RunnerOptions.Apis)}, not '{api}'.");
            cases.Add(new ConformanceCase(Field("name"), api, Strings("tags"), Field("cassette"), Strings("args"), Field("question"), Field("answer"), Strings("history")));
        }
        return cases;
    }
}

/// <summary>
/// A history as one line per turn, the form cases.json states it in, the same for the three APIs:
///   user: TEXT
///   assistant: TEXT | ID NAME(ARGUMENTS), ...   (one model reply: its text, its calls; ARGUMENTS as compact JSON)
///   tool ID: TEXT                               (one call's result; "tool ID (is_error): TEXT" for a failed one)
/// Chat Completions: a line per message. Responses API: a line per input item, except that the function_call items of
/// one reply make one assistant line. Messages API: a line per message, except that each tool_result block of a user
/// message makes a tool line.
/// </summary>
static class HistoryLines
{
    /// <summary>The lines of a request body: its `messages` (Chat Completions, Messages API) or `input` (Responses API).</summary>
    public static string[]? Of(JsonNode? body) => body?["input"] is JsonArray input ? OfInput(input)
        : body?["messages"] is JsonArray messages ? [.. messages.SelectMany(m => OfMessage(m as JsonObject ?? []))]
        : null;

    static IEnumerable<string> OfMessage(JsonObject message)
    {
        string role = Text(message["role"]);
        JsonObject[] blocks = [.. (message["content"] as JsonArray ?? []).OfType<JsonObject>()];
        // Chat Completions: tool_calls, {function: {name, arguments}}. Messages API: tool_use blocks, {name, input}.
        string[] calls = message["tool_calls"] is JsonArray toolCalls
            ? [.. toolCalls.Select(call => Call(call?["id"], call?["function"]?["name"], call?["function"]?["arguments"]))]
            : [.. blocks.Where(b => Text(b["type"]) == "tool_use").Select(b => Call(b["id"], b["name"], b["input"]))];
        foreach (JsonObject result in blocks.Where(b => Text(b["type"]) == "tool_result"))
            yield return Result(result["tool_use_id"], result["content"], result["is_error"]?.GetValueKind() == JsonValueKind.True);
        if (role == "tool")
            yield return Result(message["tool_call_id"], message["content"], isError: false);
        else if (calls.Length > 0)
            yield return Turn("assistant", ContentText(message["content"]), calls);
        else if (blocks.Length == 0 || blocks.Any(b => Text(b["type"]) is not "tool_result"))
            yield return $"{role}: {ContentText(message["content"])}";
    }

    static string[] OfInput(JsonArray items)
    {
        var lines = new List<string>();
        var calls = new List<string>(); // the function_call items of the reply being read
        void EndReply()
        {
            if (calls.Count > 0)
                lines.Add(Turn("assistant", "", [.. calls]));
            calls.Clear();
        }
        foreach (JsonObject item in items.Select(i => i as JsonObject ?? []))
        {
            string type = Text(item["type"]);
            if (type == "function_call")
            {
                calls.Add(Call(item["call_id"], item["name"], item["arguments"]));
                continue;
            }
            EndReply();
            lines.Add(type switch
            {
                "function_call_output" => Result(item["call_id"], item["output"], isError: false),
                "" or "message" => $"{Text(item["role"])}: {ContentText(item["content"])}",
                _ => $"item {type}",
            });
        }
        EndReply();
        return [.. lines];
    }

    static string Call(JsonNode? id, JsonNode? name, JsonNode? arguments) =>
        $"{Text(id)} {Text(name)}({Compact(arguments)})";

    static string Result(JsonNode? id, JsonNode? content, bool isError) =>
        $"tool {Text(id)}{(isError ? " (is_error)" : "")}: {ContentText(content)}";

    static string Turn(string role, string text, string[] calls) =>
        $"{role}: {(text.Length > 0 ? text + " | " : "")}{string.Join(", ", calls)}";

    /// <summary>A content string as it is; a list of parts or blocks as the text of its text parts, joined.</summary>
    static string ContentText(JsonNode? content) => content is JsonArray parts
        ? string.Concat(parts.Where(p => Text(p?["type"]) is "text" or "input_text" or "output_text").Select(p => Text(p?["text"])))
        : Text(content);

    static string Text(JsonNode? node) =>
        node is JsonValue value && value.GetValueKind() == JsonValueKind.String ? value.GetValue<string>() : node?.ToJsonString() ?? "";

    /// <summary>Arguments as compact JSON, whether a string of JSON (the OpenAI APIs) or an object (the Messages API's
    /// input), so that whitespace in the cassette does not matter.</summary>
    static string Compact(JsonNode? arguments)
    {
        var options = new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        if (arguments is not JsonValue value || value.GetValueKind() != JsonValueKind.String)
            return arguments?.ToJsonString(options) ?? "null";
        string json = value.GetValue<string>();
        try
        {
            return JsonNode.Parse(json)?.ToJsonString(options) ?? "null";
        }
        catch (JsonException)
        {
            return json;
        }
    }
}

static partial class CaseRun
{
    const string DummyKey = "dummy-key-for-conformance";

    /// <summary>Runs one case; an empty list means it passed.</summary>
    public static async Task<List<string>> RunAsync(ConformanceCase @case, RunnerOptions options)
    {
        var problems = new List<string>();
        string cassettePath = Path.Combine(options.Root, @case.Cassette);
        JsonArray? recorded = LoadInteractions(cassettePath, problems);
        if (recorded is null)
            return problems;
        CheckHistoryAgainstCassette(@case, recorded, problems);

        using var server = new ServerProcess(options.ToolCallDll, cassettePath);
        string? baseUrl = await server.StartAsync(TimeSpan.FromSeconds(30));
        if (baseUrl is null)
        {
            problems.Add($"the replay server did not start: {string.Join(" | ", server.Log)}");
            return problems;
        }

        ClientResult client = await RunClientAsync(@case, options, baseUrl);
        string[] serverLines = server.Stop();

        CheckServerLog(serverLines, recorded.Count, problems);
        if (client.TimedOut)
            problems.Add($"the client did not exit within {options.Timeout.TotalSeconds:0} s (stopped).");
        else if (client.ExitCode != 0)
            problems.Add($"the client exited with {client.ExitCode}, not 0.");
        string answer = client.Stdout.ReplaceLineEndings("\n").TrimEnd();
        if (!client.TimedOut && answer != @case.Answer)
            problems.Add($"stdout is not the expected answer.\nexpected: {@case.Answer}\ngot:      {answer}");
        if (problems.Count > 0 && client.Stderr.Trim().Length > 0)
            problems.Add("client stderr (last lines):\n" + string.Join('\n', client.Stderr.TrimEnd().Split('\n').TakeLast(12)));
        return problems;
    }

    static JsonArray? LoadInteractions(string path, List<string> problems)
    {
        try
        {
            if (JsonNode.Parse(File.ReadAllText(path))?["interactions"] is JsonArray { Count: > 0 } interactions)
                return interactions;
            problems.Add($"{path} has no interactions.");
        }
        catch (Exception e) when (e is IOException or JsonException)
        {
            problems.Add($"cannot read the cassette {path}: {e.Message}");
        }
        return null;
    }

    /// <summary>The case states the history the client must send last; it must be the cassette's, line for line.</summary>
    static void CheckHistoryAgainstCassette(ConformanceCase @case, JsonArray interactions, List<string> problems)
    {
        if (HistoryLines.Of(interactions[^1]?["request"]?["body"]) is not string[] expected)
        {
            problems.Add($"the last request of {@case.Cassette} has neither messages nor input.");
            return;
        }
        if (expected.SequenceEqual(@case.History))
            return;
        int at = Enumerable.Range(0, Math.Max(expected.Length, @case.History.Count))
            .First(i => i >= expected.Length || i >= @case.History.Count || expected[i] != @case.History[i]);
        problems.Add($"cases.json: the history of case {@case.Name} is not the last request of {@case.Cassette} at line {at + 1}.\n" +
                     $"cassette: {(at < expected.Length ? expected[at] : "(no more messages)")}\n" +
                     $"case:     {(at < @case.History.Count ? @case.History[at] : "(no more lines)")}");
    }

    // The replay server's log line for each request: "POST /v1/chat/completions -> 200 (interaction 1 of 2)".
    [GeneratedRegex(@"^\S+ \S+ -> \d+ \((?<note>.*)\)$")]
    private static partial Regex RequestLine();

    /// <summary>Every interaction played once, in order, and no request answered otherwise (a mismatch, a rule).</summary>
    static void CheckServerLog(string[] lines, int interactions, List<string> problems)
    {
        string[] requests = [.. lines.Where(line => RequestLine().IsMatch(line))];
        string[] expected = [.. Enumerable.Range(1, interactions).Select(n => $"interaction {n} of {interactions}")];
        string[] notes = [.. requests.Select(line => RequestLine().Match(line).Groups["note"].Value)];
        if (notes.SequenceEqual(expected))
            return;
        int played = notes.TakeWhile((note, i) => i < expected.Length && note == expected[i]).Count();
        string what = played == notes.Length
            ? $"the client stopped after {played} of {interactions} recorded requests"
            : $"request {played + 1} was not the recorded interaction {played + 1} of {interactions}";
        problems.Add($"{what}; the replay server answered:\n" + (requests.Length == 0 ? "  (no request)" : string.Join('\n', requests.Select(r => "  " + r))));
    }

    sealed record ClientResult(int ExitCode, bool TimedOut, string Stdout, string Stderr);

    static async Task<ClientResult> RunClientAsync(ConformanceCase @case, RunnerOptions options, string baseUrl)
    {
        var start = new ProcessStartInfo(options.Client[0])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        string[] api = @case.Api == "chat" ? [] : ["--api", @case.Api]; // a chat-only port never sees --api
        foreach (string arg in options.Client.Skip(1).Concat(api).Concat(@case.Args).Append(@case.Question))
            start.ArgumentList.Add(arg);
        // Both APIs' variables, whatever the case: a client reads its API's pair, and none can fall back to a real key
        // or a real base URL from the runner's own environment.
        start.Environment["OPENAI_BASE_URL"] = baseUrl;
        start.Environment["OPENAI_API_KEY"] = DummyKey;
        start.Environment["ANTHROPIC_BASE_URL"] = baseUrl;
        start.Environment["ANTHROPIC_API_KEY"] = DummyKey;
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return new ClientResult(-1, false, "", $"cannot start {options.Client[0]}: {e.Message}");
        }
        using (process)
        {
            process.StandardInput.Close(); // a client never waits for input
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(options.Timeout);
            bool timedOut = false;
            try
            {
                await process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                timedOut = true;
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync();
            }
            return new ClientResult(process.ExitCode, timedOut, await stdout, await stderr);
        }
    }
}

/// <summary>`dotnet ToolCall.dll serve CASSETTE` on port 0; its stderr is the log of the requests it answered.</summary>
sealed class ServerProcess(string toolCallDll, string cassette) : IDisposable
{
    readonly Process process = new()
    {
        StartInfo =
        {
            FileName = "dotnet",
            ArgumentList = { toolCallDll, "serve", cassette },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        },
    };
    readonly List<string> log = [];

    public IReadOnlyList<string> Log
    {
        get
        {
            lock (log)
                return [.. log];
        }
    }

    /// <summary>The base URL from the server's first stdout line, or null if it printed none in time.</summary>
    public async Task<string?> StartAsync(TimeSpan timeout)
    {
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
                lock (log)
                    log.Add(e.Data);
        };
        process.Start();
        process.BeginErrorReadLine();
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            string? line = await process.StandardOutput.ReadLineAsync(cancel.Token);
            return line is not null && line.StartsWith("http://", StringComparison.Ordinal) ? line.Trim() : null;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    /// <summary>Stops the server and returns everything it logged (the lines are complete once it has exited).</summary>
    public string[] Stop()
    {
        if (!process.HasExited)
            process.Kill(entireProcessTree: true);
        process.WaitForExit(); // also waits for the end of the redirected stderr
        return [.. Log];
    }

    public void Dispose()
    {
        try
        {
            Stop();
        }
        catch (InvalidOperationException)
        {
            // never started
        }
        process.Dispose();
    }
}
