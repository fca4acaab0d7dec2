// The cold start of the whole demo: a new process that replays cassettes/weather.json in process (its own replay
// server on a free port), runs the flow and prints the answer. Wall time from process start to exit.

using ToolCall;
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Threading.Tasks;

static class ColdStart
{
    const string Answer = "It's currently +18°C and partly cloudy in London.";

    /// <summary>A program to start; `Shown` is its command line as typed in the repository root.</summary>
    public sealed record Program(string Name, string Command, string[] Arguments, string Shown);

    public sealed record Result(Program Program, double MedianMilliseconds);

    public static async Task<Result[]?> RunAsync(Repo repo, int runs)
    {
        if (!File.Exists(repo.AotBinary))
        {
            Console.WriteLine($"cold start: skipped, {repo.AotBinary} is missing (./run.sh publish builds it; ./run.sh bench does too).");
            Console.WriteLine();
            return null;
        }
        Program[] programs =
        [
            new("ToolCall, Native AOT", repo.AotBinary, [], repo.Relative(repo.AotBinary)),
            new("ToolCall, JIT", "dotnet", [repo.ToolCallDll], "dotnet " + repo.Relative(repo.ToolCallDll)),
            new("OpenAI SDK demo, JIT", "dotnet", [repo.SdkDemoDll], "dotnet " + repo.Relative(repo.SdkDemoDll)),
        ];
        var times = programs.ToDictionary(p => p, _ => new List<double>());
        Progress.Show("cold starts...");
        for (int run = 0; run < runs; run++)
        {
            foreach (Program program in programs) // interleaved, like the flows: no program gets a quieter minute
                times[program].Add(await TimeOneStartAsync(repo, program));
        }
        Progress.Show("");
        return [.. programs.Select(p => new Result(p, global::Result.Percentile(times[p], 0.5)))];
    }

    public static void Print(Result[] results, int runs)
    {
        double jit = results[1].MedianMilliseconds;
        Console.WriteLine($"cold start of the demo (`./run.sh` offline: replay cassettes/weather.json in process, print the answer),");
        Console.WriteLine($"median wall time of {runs} process runs each, from the repository root:");
        foreach (Result r in results)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {r.Program.Name,-22}{r.MedianMilliseconds,8:F0} ms  {r.MedianMilliseconds / jit,5:F2}× JIT   {r.Program.Shown}"));
        }
        Console.WriteLine();
    }

    static async Task<double> TimeOneStartAsync(Repo repo, Program program)
    {
        var start = new ProcessStartInfo(program.Command)
        {
            WorkingDirectory = repo.Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in program.Arguments)
            start.ArgumentList.Add(argument);
        // Offline for sure: without these the demo replays; with them it would go live.
        foreach (string name in new[] { "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL" })
            start.Environment.Remove(name);

        var clock = Stopwatch.StartNew();
        using Process process = Process.Start(start) ?? throw new BenchException($"could not start {program.Command}");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        double milliseconds = clock.Elapsed.TotalMilliseconds;
        if (process.ExitCode != 0 || !(await stdout).Contains(Answer, StringComparison.Ordinal))
            throw new BenchException($"{program.Name} exited {process.ExitCode} without the answer: {await stdout}{await stderr}");
        return milliseconds;
    }
}
