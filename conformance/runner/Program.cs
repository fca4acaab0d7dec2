// The conformance runner: drives any client command through the cases in conformance/cases.json.
//
// For each case it starts `ToolCall serve CASSETTE` on a free loopback port (the first line the server prints is its
// base URL), runs the client with OPENAI_BASE_URL set to that URL, OPENAI_API_KEY set to a dummy, the case's options
// and the question as the last argument, and checks three things:
//   1. the client exits 0;
//   2. its stdout, less trailing whitespace, is the case's final answer;
//   3. the server played every interaction of the cassette, in order, and answered nothing else. The server matches
//      each request to the recorded one as the API reads it, so this proves the client sent the recorded requests,
//      its history included. The case's "history" is checked against the cassette's last request first, so it
//      states exactly what the client had to send.
//
// Usage: ConformanceRunner --toolcall PATH/ToolCall.dll [--case NAME]... [--timeout SECONDS] -- COMMAND [ARGS...]
// conformance/run builds ToolCall and this runner once and passes --toolcall; see conformance/README.md.

using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

try
{
    RunnerOptions options = RunnerOptions.Parse(args);
    string casesPath = Path.Combine(options.Root, "conformance", "cases.json");
    IReadOnlyList<ConformanceCase> cases = ConformanceCase.LoadAll(casesPath, options.Only);
    Console.WriteLine($"Conformance of `{string.Join(' ', options.Client)}`: {cases.Count} case{(cases.Count == 1 ? "" : "s")} from {Path.GetRelativePath(Environment.CurrentDirectory, casesPath)}");
    int passed = 0, failed = 0;
    foreach (ConformanceCase @case in cases)
    {
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
    Console.WriteLine($"{passed} passed, {failed} failed");
    return failed == 0 ? 0 : 1;
}
catch (UsageException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 2;
}

/// <summary>A mistake in how the runner was called or in cases.json: one line, exit code 2.</summary>
sealed class UsageException(string message) : Exception(message);

sealed record RunnerOptions(string Root, string ToolCallDll, IReadOnlyList<string> Client, IReadOnlySet<string> Only, TimeSpan Timeout)
{
    public const string Usage = "usage: ConformanceRunner --toolcall PATH/ToolCall.dll [--case NAME]... [--timeout SECONDS] -- COMMAND [ARGS...]";

    public static RunnerOptions Parse(string[] args)
    {
        string? dll = null;
        var only = new HashSet<string>();
        double timeout = 60;
        int i = 0;
        for (; i < args.Length && args[i] != "--"; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new UsageException($"{args[i]} needs a value. {Usage}");
            switch (args[i])
            {
                case "--toolcall": dll = Value(); break;
                case "--case": only.Add(Value()); break;
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
        return new RunnerOptions(FindRoot(), Path.GetFullPath(dll), client, only, TimeSpan.FromSeconds(timeout));
    }

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

/// <summary>One case of cases.json: a cassette, what the client is asked, and what it must answer and send.</summary>
sealed record ConformanceCase(string Name, string Cassette, IReadOnlyList<string> Args, string Question, string Answer, IReadOnlyList<string> History)
{
    public static IReadOnlyList<ConformanceCase> LoadAll(string path, IReadOnlySet<string> only)
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
            cases.Add(new ConformanceCase(Field("name"), Field("cassette"), Strings("args"), Field("question"), Field("answer"), Strings("history")));
        }
        string[] unknown = [.. only.Where(name => cases.All(c => c.Name != name))];
        if (unknown.Length > 0)
            throw new UsageException($"no case named {string.Join(", ", unknown)} in {path}. The cases: {string.Join(", ", cases.Select(c => c.Name))}.");
        return [.. cases.Where(c => only.Count == 0 || only.Contains(c.Name))];
    }
}

/// <summary>
/// A history as one line per message, the form cases.json states it in:
///   user: TEXT                          assistant: TEXT
///   assistant: ID NAME(ARGUMENTS), ...  (one per tool call, ARGUMENTS as compact JSON)
///   tool ID: TEXT
/// </summary>
static class HistoryLines
{
    public static string[] Of(JsonArray messages) => [.. messages.Select(m => Line(m as JsonObject ?? []))];

    static string Line(JsonObject message)
    {
        string role = Text(message["role"]);
        if (message["tool_calls"] is JsonArray { Count: > 0 } calls)
            return "assistant: " + string.Join(", ", calls.Select(call =>
                $"{Text(call?["id"])} {Text(call?["function"]?["name"])}({Compact(Text(call?["function"]?["arguments"]))})"));
        return role == "tool" ? $"tool {Text(message["tool_call_id"])}: {Text(message["content"])}" : $"{role}: {Text(message["content"])}";
    }

    static string Text(JsonNode? node) =>
        node is JsonValue value && value.GetValueKind() == JsonValueKind.String ? value.GetValue<string>() : node?.ToJsonString() ?? "";

    /// <summary>Arguments as compact JSON, so that whitespace in the cassette does not matter.</summary>
    static string Compact(string json)
    {
        try
        {
            return JsonNode.Parse(json)?.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) ?? "null";
        }
        catch (JsonException)
        {
            return json;
        }
    }
}

static partial class CaseRun
{
    const string DummyKey = "sk-conformance-dummy-key";

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
        if (interactions[^1]?["request"]?["body"]?["messages"] is not JsonArray messages)
        {
            problems.Add($"the last request of {@case.Cassette} has no messages.");
            return;
        }
        string[] expected = HistoryLines.Of(messages);
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
        foreach (string arg in options.Client.Skip(1).Concat(@case.Args).Append(@case.Question))
            start.ArgumentList.Add(arg);
        start.Environment["OPENAI_BASE_URL"] = baseUrl;
        start.Environment["OPENAI_API_KEY"] = DummyKey;
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
