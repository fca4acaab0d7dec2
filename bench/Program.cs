// ToolCall.Bench: the complete four-step flow, measured side by side for this project's client, the official OpenAI
// SDK, Microsoft.Extensions.AI and a raw-HttpClient floor, all against one replay server in a child process, so that
// what this process spends is client work only. Then the cold start of the demo: Native AOT, JIT, and the SDK's.
// Run it with ./run.sh bench [--quick]; docs/performance.md says what the numbers mean.

using ToolCall;
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Runtime;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;

return await Bench.MainAsync(args);

static class Bench
{
    const string Usage = """
        Usage: ./run.sh bench [--quick] [--rounds N] [--flows N] [--warmup N] [--cold-runs N] [--no-cold-start]
                              [--trace | --allocations | --no-network]

          --quick          a short run (under a minute on 2 cores); the default run is longer and steadier
          --rounds N       measured rounds; each round runs every client once, in an order that rotates
          --flows N        complete flows per client per round
          --warmup N       at least N flows per client before measuring; the warm-up goes on until the JIT settles
          --cold-runs N    process starts per program for the cold-start comparison
          --no-cold-start  skip the cold-start comparison
          --trace          run one flow per client, printing every request it sends, and stop
          --allocations    which types each client allocates per flow (sampled), instead of the measurement
          --no-network     measure client work alone: every HttpClient answers from memory, no server, no sockets
        """;

    public static async Task<int> MainAsync(string[] args)
    {
        Settings settings;
        try
        {
            settings = Settings.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message} ./run.sh bench --help lists the options.");
            return 2;
        }
        if (settings.Help)
        {
            Console.Write(Usage);
            return 0;
        }
        // Stopped from outside, the bench takes its replay servers with it (a normal end disposes them).
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, _ => ServerProcess.StopAll());
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, _ => ServerProcess.StopAll());
        try
        {
            return await RunAsync(settings);
        }
        catch (BenchException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    static async Task<int> RunAsync(Settings settings)
    {
        var repo = new Repo(FindRoot());
        repo.RequireBuilt();
        Cassette cassette = Cassette.Load(repo.TwoCities);
        string question = cassette.FirstQuestion("messages")!;
        string expected = Json.String(cassette.Interactions[^1].ResponseBody?["choices"]?[0]?["message"]?["content"])!;
        List<byte[]> cassetteRequests = [.. cassette.Interactions.Select(i => Json.Utf8(i.RequestBody!).ToArray())];
        if (settings.NoNetwork)
            return await RunWithoutNetworkAsync(settings, cassette, question, expected, cassetteRequests);

        // Idle spinning off in the server too: on 2 cores it would take CPU from whichever client is running.
        var serverEnvironment = new Dictionary<string, string> { ["DOTNET_ThreadPool_UnfairSemaphoreSpinLimit"] = "0" };
        await using ServerProcess server = await ServerProcess.StartAsync(repo.ToolCallDll, repo.TwoCities, serverEnvironment);
        await using ServerProcess meaiServer = await ServerProcess.StartAsync(repo.ToolCallDll, repo.TwoCitiesMeai, serverEnvironment);
        FlowSetup Setup(ServerProcess s) => new(s.BaseUrl, question, expected, DemoTools.Create(), settings.Trace);
        (BenchClient Client, ServerProcess? Server)[] clients =
        [
            (ReferenceClient.Create(Setup(server)), server),
            (OpenAISdkClient.Create(Setup(server)), server),
            (MeaiClient.Create(Setup(meaiServer)), meaiServer),
            (FloorClient.Create(Setup(server), cassetteRequests), server),
        ];

        // Every client must give the expected answer through a history the replay server accepts, or no figures.
        foreach ((BenchClient client, ServerProcess? s) in clients)
        {
            if (settings.Trace)
                Console.Error.WriteLine($"===== {client.Name}");
            await CheckAsync(client, s, expected);
        }
        if (settings.Trace)
            return 0;
        if (settings.Allocations)
        {
            foreach ((BenchClient client, _) in clients)
                await AllocationProfile.RunAsync(client, flows: 4000, top: 25);
            return 0;
        }
        Result[] results = await MeasureAsync(clients, settings, expected, settings.Flows,
            "replayed from cassettes/two-cities.json by `ToolCall.dll serve` in a child process; this process runs the clients only.");
        PrintTable(results);
        Console.WriteLine("Microsoft.Extensions.AI replays bench/cassettes/two-cities-meai.json: its OpenAI adapter always adds");
        Console.WriteLine("\"additionalProperties\": false to a tool's schema, a difference the model sees; otherwise the same requests.");
        Console.WriteLine();
        ColdStart.Result[]? coldStart = settings.ColdStart ? await ColdStart.RunAsync(repo, settings.ColdRuns) : null;
        if (coldStart is not null)
            ColdStart.Print(coldStart, settings.ColdRuns);
        PrintRatios(results);
        return 0;
    }

    /// <summary>
    /// --no-network: the same clients and flows, each HttpClient answering from memory (the cassette's responses in
    /// turn) instead of a socket. What is left is client work alone, JSON and the HttpClient pipeline, without the
    /// kernel's share, which on a busy machine is most of the CPU and most of its noise. The requests are not checked
    /// here (the network run checks them); the answers are.
    /// </summary>
    static async Task<int> RunWithoutNetworkAsync(Settings settings, Cassette cassette, string question, string expected, List<byte[]> cassetteRequests)
    {
        List<byte[]> responses = [.. cassette.Interactions.Select(i => Json.Utf8(i.ResponseBody!).ToArray())];
        var setup = new FlowSetup("http://replay.invalid/v1", question, expected, DemoTools.Create(), Trace: false)
        {
            Transport = () => new CannedResponses(responses),
        };
        (BenchClient Client, ServerProcess? Server)[] clients =
        [
            (ReferenceClient.Create(setup), null),
            (OpenAISdkClient.Create(setup), null),
            (MeaiClient.Create(setup), null),
            (FloorClient.Create(setup, cassetteRequests), null),
        ];
        foreach ((BenchClient client, ServerProcess? server) in clients)
            await CheckAsync(client, server, expected);
        // Ten times the flows per batch: without the network a flow takes some 40 µs, and a batch should take longer
        // than the scheduler's time slices for its CPU time to be steady.
        Result[] results = await MeasureAsync(clients, settings, expected, flowsPerBatch: settings.Flows * 10,
            "with no network: each client's HttpClient answers from memory, so this is client work alone.");
        PrintTable(results);
        return 0;
    }

    /// <summary>Warm-up, then rounds of batches, clients interleaved; prints how it went and returns the figures.</summary>
    static async Task<Result[]> MeasureAsync(
        (BenchClient Client, ServerProcess? Server)[] clients, Settings settings, string expected, int flowsPerBatch, string what)
    {
        Progress.Show("warming up...");
        (int warmupFlows, long warmupMethods) = await WarmUpAsync(clients, settings.Warmup, expected);
        var results = clients.Select(c => new Result(c.Client)).ToArray();
        long[] times = new long[flowsPerBatch];
        long methodsBefore = JitInfo.GetCompiledMethodCount();
        for (int round = 0; round < settings.Rounds; round++)
        {
            Progress.Show($"round {round + 1} of {settings.Rounds}...");
            for (int k = 0; k < clients.Length; k++)
            {
                int index = (round + k) % clients.Length; // rotate who goes first: no client always follows the same one
                await MeasureBatchAsync(clients[index].Client, clients[index].Server, expected, results[index], times);
            }
        }
        Progress.Show("");
        PrintHeader(settings, what, warmupFlows, flowsPerBatch, warmupMethods, JitInfo.GetCompiledMethodCount() - methodsBefore);
        return results;
    }

    /// <summary>
    /// Warm-up: rounds of flows with every client until the JIT has settled, a round in which it compiled (next to)
    /// nothing, twice in a row: then every client runs its tier-1 code, optimized with the profile gathered so far,
    /// as a long-running program does. On a busy machine that takes over a thousand flows; a fixed count would
    /// measure some clients half-compiled.
    /// </summary>
    static async Task<(int Flows, long Methods)> WarmUpAsync((BenchClient Client, ServerProcess? Server)[] clients, int minimumFlows, string expected)
    {
        const int FlowsPerRound = 100, MaxRounds = 60;
        long methodsBefore = JitInfo.GetCompiledMethodCount();
        int flows = 0, quietRounds = 0;
        for (int round = 0; round < MaxRounds && (quietRounds < 2 || flows < minimumFlows); round++)
        {
            long before = JitInfo.GetCompiledMethodCount();
            foreach ((BenchClient client, ServerProcess? server) in clients)
            {
                for (int i = 0; i < FlowsPerRound; i++)
                    await RunCheckedAsync(client, server, expected);
            }
            flows += FlowsPerRound;
            await Task.Delay(200); // tier-1 compiles run in the background, once new code stops appearing
            quietRounds = JitInfo.GetCompiledMethodCount() - before <= 2 ? quietRounds + 1 : 0;
        }
        return (flows, JitInfo.GetCompiledMethodCount() - methodsBefore);
    }

    /// <summary>One flow, outside the timed runs, checking the answer (and, for the floor, the last response).</summary>
    static async Task CheckAsync(BenchClient client, ServerProcess? server, string expected)
    {
        await RunCheckedAsync(client, server, expected);
        if (client.Check?.Invoke() is string answer && answer != expected)
            throw new BenchException($"{client.Name}: the last response carries \"{answer}\", not \"{expected}\".");
    }

    static async Task RunCheckedAsync(BenchClient client, ServerProcess? server, string expected)
    {
        string answer;
        try
        {
            answer = await client.RunFlowAsync(CancellationToken.None);
        }
        catch (Exception e)
        {
            throw Failed(client, server, e);
        }
        if (answer != expected)
            throw WrongAnswer(client, answer, expected);
    }

    static BenchException Failed(BenchClient client, ServerProcess? server, Exception e) =>
        new($"{client.Name} failed: {e.Message}" + (server is null ? "" : $"\nThe replay server's last lines:\n{server.LastLines()}"));

    static BenchException WrongAnswer(BenchClient client, string answer, string expected) =>
        new($"{client.Name} answered \"{answer}\", not \"{expected}\".");

    /// <summary>
    /// One batch of flows. CPU is the whole process's user+system time (getrusage through Environment.CpuUsage: the
    /// same sum as Process.TotalProcessorTime, which on Linux reads /proc in 10 ms ticks); allocations are exact.
    /// Both include the client's thread-pool and socket work, which is the point.
    /// </summary>
    static async Task MeasureBatchAsync(BenchClient client, ServerProcess? server, string expected, Result result, long[] times)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        TimeSpan cpuBefore = Environment.CpuUsage.TotalTime;
        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        for (int i = 0; i < times.Length; i++)
        {
            // The flow is awaited right here, not in a helper: an async helper would allocate for every flow, and
            // that would count as the client's.
            long start = Stopwatch.GetTimestamp();
            string answer;
            try
            {
                answer = await client.RunFlowAsync(CancellationToken.None);
            }
            catch (Exception e)
            {
                throw Failed(client, server, e);
            }
            times[i] = Stopwatch.GetTimestamp() - start;
            if (answer != expected)
                throw WrongAnswer(client, answer, expected);
        }
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        TimeSpan cpu = Environment.CpuUsage.TotalTime - cpuBefore;
        result.Add(times, cpu.TotalMicroseconds / times.Length, (double)allocated / times.Length);
    }

    static void PrintHeader(Settings settings, string what, int warmupFlows, int flowsPerBatch, long warmupMethods, long methodsDuring)
    {
        Console.WriteLine("ToolCall bench: the complete four-step flow (2 requests, 2 tool calls),");
        Console.WriteLine(what);
        Console.WriteLine($"machine: {Environment.ProcessorCount} cores, {CpuModel()}, {RuntimeInformation.OSDescription}, .NET {Environment.Version}");
        Console.WriteLine($"warm-up: {warmupFlows} flows per client, until the JIT settled ({warmupMethods:N0} methods compiled; " +
                          $"{methodsDuring} more while measuring)");
        Console.WriteLine($"measured: {settings.Rounds} rounds of {flowsPerBatch} flows per client, clients interleaved (the order rotates each round)");
        object? spin = AppContext.GetData("System.Threading.ThreadPool.UnfairSemaphoreSpinLimit");
        string? spinEnvironment = Environment.GetEnvironmentVariable("DOTNET_ThreadPool_UnfairSemaphoreSpinLimit");
        Console.WriteLine($"thread-pool idle spinning: UnfairSemaphoreSpinLimit={spin ?? "default"} for all clients (runtimeconfig)" +
                          (spinEnvironment is null ? "" : $", DOTNET_ThreadPool_UnfairSemaphoreSpinLimit={spinEnvironment} in the environment") +
                          (settings.NoNetwork ? "" : ", 0 for the server"));
        Console.WriteLine();
    }

    static void PrintTable(Result[] results)
    {
        Result reference = results[0];
        Console.WriteLine("per flow                          wall median   wall p99   CPU (±IQR/2)       allocated   ToolCall ÷ this client");
        Console.WriteLine("                                           µs         µs             µs           bytes     CPU  alloc   wall");
        foreach (Result r in results)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Client.Name,-32}{r.WallMedianMicroseconds,12:F0}{r.WallP99Microseconds,11:F0}{r.CpuMicroseconds,10:F0} (±{r.CpuSpreadPercent,3:F0}%){r.AllocatedBytes,16:N0}" +
                $"{reference.CpuMicroseconds / r.CpuMicroseconds,8:F2}{reference.AllocatedBytes / r.AllocatedBytes,7:F2}{reference.WallMedianMicroseconds / r.WallMedianMicroseconds,7:F2}"));
        }
        Console.WriteLine();
    }

    static void PrintRatios(Result[] results)
    {
        Result reference = results[0], sdk = Find(results, "openai_sdk"), meai = Find(results, "meai"), floor = Find(results, "floor");
        string Ratio(double value) => value.ToString("F2", CultureInfo.InvariantCulture);
        Console.WriteLine($"ratio_cpu_vs_openai_sdk={Ratio(reference.CpuMicroseconds / sdk.CpuMicroseconds)}");
        Console.WriteLine($"ratio_alloc_vs_openai_sdk={Ratio(reference.AllocatedBytes / sdk.AllocatedBytes)}");
        Console.WriteLine($"ratio_cpu_vs_meai={Ratio(reference.CpuMicroseconds / meai.CpuMicroseconds)}");
        Console.WriteLine($"ratio_alloc_vs_meai={Ratio(reference.AllocatedBytes / meai.AllocatedBytes)}");
        Console.WriteLine($"ratio_cpu_vs_floor={Ratio(reference.CpuMicroseconds / floor.CpuMicroseconds)}");
        Console.WriteLine($"ratio_time_vs_openai_sdk={Ratio(reference.WallMedianMicroseconds / sdk.WallMedianMicroseconds)}");
    }

    static Result Find(Result[] results, string key) => results.Single(r => r.Client.Key == key);

    static string CpuModel()
    {
        try
        {
            string? line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            return line is null ? RuntimeInformation.ProcessArchitecture.ToString() : line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException)
        {
            return RuntimeInformation.ProcessArchitecture.ToString();
        }
    }

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "ToolCall.csproj")))
                return dir.FullName;
        }
        throw new BenchException("ToolCall.csproj not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>The figures of one client: every flow's wall time, and CPU and allocations per flow of each batch.</summary>
sealed class Result(BenchClient client)
{
    readonly List<long> flowTimes = [];
    readonly List<double> cpuPerFlow = [];
    readonly List<double> allocatedPerFlow = [];

    public BenchClient Client { get; } = client;

    public void Add(long[] times, double cpuMicroseconds, double allocatedBytes)
    {
        flowTimes.AddRange(times);
        cpuPerFlow.Add(cpuMicroseconds);
        allocatedPerFlow.Add(allocatedBytes);
    }

    public double WallMedianMicroseconds => Microseconds(Percentile(flowTimes, 0.50));
    public double WallP99Microseconds => Microseconds(Percentile(flowTimes, 0.99));
    public double CpuMicroseconds => Percentile(cpuPerFlow, 0.50);
    public double CpuSpreadPercent => (Percentile(cpuPerFlow, 0.75) - Percentile(cpuPerFlow, 0.25)) / 2 / CpuMicroseconds * 100;
    public double AllocatedBytes => Percentile(allocatedPerFlow, 0.50);

    static double Microseconds(double ticks) => ticks * 1_000_000 / Stopwatch.Frequency;

    /// <summary>The value at fraction p of the sorted values (nearest rank).</summary>
    public static double Percentile<T>(IReadOnlyCollection<T> values, double p) where T : IConvertible
    {
        double[] sorted = [.. values.Select(v => v.ToDouble(CultureInfo.InvariantCulture)).Order()];
        return sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
    }
}

/// <summary>What the bench was asked to do.</summary>
sealed class Settings
{
    public bool Help { get; private set; }
    public bool Trace { get; private set; }
    public bool Allocations { get; private set; }
    public bool NoNetwork { get; private set; }
    public bool ColdStart { get; private set; } = true;
    public int Rounds { get; private set; } = 30;
    public int Flows { get; private set; } = 300;
    public int Warmup { get; private set; } = 300;
    public int ColdRuns { get; private set; } = 20;

    public static Settings Parse(string[] args)
    {
        var settings = new Settings();
        if (args.Contains("--quick"))
            (settings.Rounds, settings.Flows, settings.ColdRuns) = (6, 150, 5);
        for (int i = 0; i < args.Length; i++)
        {
            string option = args[i];
            int Number() => i + 1 < args.Length && int.TryParse(args[++i], NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0
                ? n
                : throw new ArgumentException($"{option} needs a whole number above 0.");
            switch (option)
            {
                case "--quick": break;
                case "-h" or "--help": settings.Help = true; break;
                case "--trace": settings.Trace = true; break;
                case "--allocations": settings.Allocations = true; break;
                case "--no-network": (settings.NoNetwork, settings.ColdStart) = (true, false); break;
                case "--no-cold-start": settings.ColdStart = false; break;
                case "--rounds": settings.Rounds = Number(); break;
                case "--flows": settings.Flows = Number(); break;
                case "--warmup": settings.Warmup = Number(); break;
                case "--cold-runs": settings.ColdRuns = Number(); break;
                default: throw new ArgumentException($"unknown option '{option}'.");
            }
        }
        return settings;
    }
}

/// <summary>The paths the bench uses, from the repository root.</summary>
sealed class Repo(string root)
{
    public string Root { get; } = root;
    public string TwoCities => Path.Combine(Root, "cassettes", "two-cities.json");
    public string TwoCitiesMeai => Path.Combine(Root, "bench", "cassettes", "two-cities-meai.json");
    public string ToolCallDll => Path.Combine(Root, "bin", "Release", "net10.0", "ToolCall.dll");
    public string SdkDemoDll => Path.Combine(Root, "bench", "SdkDemo", "bin", "Release", "net10.0", "ToolCall.SdkDemo.dll");
    public string AotBinary => Path.Combine(Root, "artifacts", "publish", "ToolCall");

    public string Relative(string path) => Path.GetRelativePath(Root, path);

    public void RequireBuilt()
    {
        if (!File.Exists(ToolCallDll))
            throw new BenchException($"{ToolCallDll} is missing: run the bench with ./run.sh bench, which builds it first.");
    }
}

/// <summary>What the bench is doing, on one line of a terminal; nothing in a pipe or a log.</summary>
static class Progress
{
    public static void Show(string text)
    {
        if (!Console.IsErrorRedirected)
            Console.Error.Write($"\r{text,-40}\r");
    }
}

/// <summary>A failure of the bench: one line, exit code 1.</summary>
sealed class BenchException(string message) : Exception(message);
