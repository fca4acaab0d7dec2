// The replay server as a child process (`ToolCall.dll serve CASSETTE`), so that the bench process does client work
// only: the CPU time and allocations measured in this process are the clients'.

using ToolCall;
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Threading.Tasks;

sealed class ServerProcess : IAsyncDisposable
{
    // The servers still running, so that a bench stopped by Ctrl+C or SIGTERM stops them too (see StopAll).
    static readonly List<Process> Running = [];

    readonly Process process;
    readonly string logFile;

    ServerProcess(Process process, string baseUrl, string logFile)
    {
        this.process = process;
        this.logFile = logFile;
        BaseUrl = baseUrl;
    }

    public string BaseUrl { get; }

    /// <summary>
    /// Starts `dotnet ToolCall.dll serve CASSETTE` (already built: no build runs beside the bench) and reads the base
    /// URL from its first line on stdout. Its log (a line per request, on stderr) goes to a file through the shell:
    /// read here, it would cost this process, the one being measured, a little for every request.
    /// </summary>
    public static async Task<ServerProcess> StartAsync(string toolCallDll, string cassette, IReadOnlyDictionary<string, string> environment)
    {
        string logFile = Path.Combine(Path.GetTempPath(), $"toolcall-bench-{Environment.ProcessId}-{Path.GetFileNameWithoutExtension(cassette)}.log");
        var start = new ProcessStartInfo("/bin/sh")
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (string argument in new[] { "-c", "exec dotnet \"$0\" serve \"$1\" 2>\"$2\"", toolCallDll, cassette, logFile })
            start.ArgumentList.Add(argument);
        foreach ((string name, string value) in environment)
            start.Environment[name] = value;
        Process process = Process.Start(start) ?? throw new BenchException("could not start the replay server");
        lock (Running)
            Running.Add(process);
        string? firstLine = await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
        var server = new ServerProcess(process, firstLine ?? "", logFile);
        if (firstLine is null || !firstLine.StartsWith("http://", StringComparison.Ordinal))
        {
            await server.DisposeAsync();
            throw new BenchException($"the replay server did not print its URL (got '{firstLine}'): {server.LastLines()}");
        }
        return server;
    }

    /// <summary>The server's last log lines (one per request), for an error message.</summary>
    public string LastLines()
    {
        try
        {
            using var stream = new FileStream(logFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(stream);
            return string.Join("\n", reader.ReadToEnd().Split('\n').TakeLast(10));
        }
        catch (IOException e)
        {
            return $"(no log: {e.Message})";
        }
    }

    /// <summary>Kills every server this process started and has not stopped yet.</summary>
    public static void StopAll()
    {
        lock (Running)
        {
            foreach (Process process in Running)
            {
                try
                {
                    process.Kill();
                }
                catch (InvalidOperationException)
                {
                    // it has exited already
                }
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        lock (Running)
            Running.Remove(process);
        if (!process.HasExited)
            process.Kill();
        await process.WaitForExitAsync();
        process.Dispose();
        File.Delete(logFile);
    }
}
