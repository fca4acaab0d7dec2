// ToolRunner.cs: how the program runs the calls of one reply: one after another or together, after asking first.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>
/// The program's FlowOptions.RunCalls. Without options it runs the calls of a reply one after another, as ToolCall.cs
/// does. With `parallel` (--parallel-tools) it runs them together. With a `terminal` (--confirm) it first shows each
/// call, function and arguments, and asks whether to run it: one at a time, in the calls' order, all before any runs;
/// a call the user declines is answered with a tool message that says so, and is not a failure. Either way the results
/// come back in the calls' order, whatever order the calls finish in: the history must answer them in that order.
/// Each call's time limit and result size are the tool's own (ProgramTools).
/// </summary>
sealed class ToolRunner(bool parallel = false, TextReader? terminal = null, TextWriter? prompt = null)
{
    public async Task<(string Content, bool Failed)[]> RunCallsAsync(
        IReadOnlyList<FunctionCall> calls, IReadOnlyList<Tool> tools, CancellationToken cancellationToken)
    {
        bool[] approved = [.. calls.Select(call => terminal is null || Approves(call))];
        Task<(string Content, bool Failed)> Run(int i) => approved[i]
            ? ToolCalling.RunToolCallAsync(calls[i].Name, calls[i].Arguments, tools, cancellationToken)
            : Task.FromResult(($"The user declined to run {calls[i].Name}, so it was not run.", false));

        if (parallel)
            return await Task.WhenAll(Enumerable.Range(0, calls.Count).Select(Run));
        var results = new (string Content, bool Failed)[calls.Count];
        for (int i = 0; i < calls.Count; i++)
            results[i] = await Run(i);
        return results;
    }

    /// <summary>Shows the call on the step log's stream and reads the answer from the terminal: y or yes runs it; no,
    /// an empty line or the end of input does not (never a silent yes).</summary>
    bool Approves(FunctionCall call)
    {
        string arguments = Json.String(call.Arguments) ?? Json.Compact(call.Arguments);
        prompt?.Write(StepLog.Escaped($"Step 3: run {ToolCalling.Shown(call.Name)}({ToolCalling.Shown(arguments)})? [y/N] "));
        prompt?.Flush();
        string? answer = terminal!.ReadLine()?.Trim();
        return answer is not null && (answer.Equals("y", StringComparison.OrdinalIgnoreCase) || answer.Equals("yes", StringComparison.OrdinalIgnoreCase));
    }
}
