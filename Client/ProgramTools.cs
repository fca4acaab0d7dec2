// ProgramTools.cs: the tools the program offers the model: the demo's and an MCP server's, checked, bounded, strict on request.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>What bounds each call of a tool the program runs: how long it may take (--tool-timeout) and how long its
/// result may be (--max-result-chars). `Time` is the clock of the timeout; tests pass one they move by hand.</summary>
sealed record ToolLimits(TimeSpan Timeout, int MaxResultChars)
{
    public static readonly ToolLimits Default = new(TimeSpan.FromSeconds(30), 20_000);

    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>The tools as the program (./run.sh, and the bench, which measures the program's path) offers them.</summary>
static class ProgramTools
{
    /// <summary>DemoTools, prepared as every tool of the program is (see Prepared).</summary>
    public static Tool[] Create(bool strict = false, ToolLimits? limits = null, Action<string>? log = null) =>
        [.. DemoTools.Create().Select(tool => Prepared(tool, strict, limits ?? ToolLimits.Default, log))];

    /// <summary>
    /// A tool as the program runs it: its arguments checked against its schema (ArgumentChecks), in strict form with
    /// `strict`, each call bounded by `limits`, and its schema written once.
    /// </summary>
    public static Tool Prepared(Tool tool, bool strict, ToolLimits limits, Action<string>? log)
    {
        Tool checkedTool = ArgumentChecks.Checked(tool);
        return WrittenOnce(Bounded(strict ? ArgumentChecks.Strict(checkedTool) : checkedTool, limits, log));
    }

    /// <summary>
    /// The tool with each call bounded. A call that runs past the timeout is told to stop (its token is cancelled) and
    /// is not waited for: it fails with "timed out after N s", and the flow goes on, so the model can recover. A result
    /// longer than MaxResultChars is cut, and says so, with its full length: one huge output must not fill the model's
    /// context. Ctrl+C (the flow's token) still stops everything.
    /// </summary>
    static Tool Bounded(Tool tool, ToolLimits limits, Action<string>? log) => tool with
    {
        Run = async (arguments, cancellationToken) =>
        {
            // The call's own token: cancelled by Ctrl+C (the flow's token) or, below, when the call has run too long.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            string result;
            try
            {
                result = await tool.Run(arguments, stop.Token).WaitAsync(limits.Timeout, limits.Time, cancellationToken);
            }
            catch (TimeoutException)
            {
                stop.Cancel(); // tell the call to stop: whether it does or not, it is not waited for
                throw new TimeoutException($"timed out after {limits.Timeout.TotalSeconds:0.#} s (--tool-timeout), so it was stopped");
            }
            if (result.Length <= limits.MaxResultChars)
                return result;
            log?.Invoke($"Step 3: the result of {ToolCalling.Shown(tool.Name)} is cut to {limits.MaxResultChars} of its {result.Length} characters (--max-result-chars)");
            return $"{result[..limits.MaxResultChars]}\n[The result was cut here: it has {result.Length} characters, and only the first " +
                   $"{limits.MaxResultChars} are shown (--max-result-chars).]";
        },
    };

    /// <summary>
    /// The tool with its schema held as the JSON it was written to, read-only: a JsonObject over a JsonElement. Every
    /// request carries its own copy of each schema (a JSON node has one parent), and copying such an object copies no
    /// node (64 bytes here, against 1.5 KB for the demo's forecast schema as built). Nothing changes on the wire; the
    /// check keeps a copy of its own, since reading an object turns it into nodes.
    /// </summary>
    static Tool WrittenOnce(Tool tool) =>
        tool with { Parameters = JsonObject.Create(JsonElement.Parse(Json.Utf8(tool.Parameters).Span))! };

    /// <summary>
    /// Starts each MCP server (--mcp COMMAND) and returns its tools as the program's, after `tools`: a call runs as the
    /// server's tools/call, and a result marked isError fails as an exception would. A tool whose name the API does not
    /// take (MCP allows dots, or more than 64 characters) is left out, with one warning line naming it; a name that
    /// another tool already has is a usage error. The servers are in `servers`, for the caller to shut down at exit,
    /// also when this fails half way.
    /// </summary>
    public static async Task<Tool[]> WithMcpToolsAsync(
        Tool[] tools, IReadOnlyList<string> commands, Api api, bool strict, ToolLimits limits, StepLog log, TextWriter stderr,
        List<McpClient> servers, CancellationToken cancellationToken)
    {
        var all = new List<Tool>(tools);
        foreach (string command in commands)
        {
            McpClient server = await McpClient.StartAsync(command, stderr, cancellationToken);
            servers.Add(server);
            foreach (McpTool mcpTool in server.Tools)
            {
                if (api.NameProblem(mcpTool.Name) is string problem)
                {
                    log.Info($"Warning: MCP server \"{command}\": its tool {ToolCalling.Shown(mcpTool.Name)} is left out: {problem}.");
                    continue;
                }
                if (all.Any(tool => tool.Name == mcpTool.Name))
                    throw new UsageException(
                        $"MCP server \"{command}\" has a tool named '{mcpTool.Name}', as another tool is, and the API needs each " +
                        "function name once. Leave out one of the servers, or the other tool.");
                var tool = new Tool(mcpTool.Name, mcpTool.Description, mcpTool.InputSchema, async (arguments, token) =>
                {
                    (string text, bool isError) = await server.CallToolAsync(mcpTool.Name, arguments, token);
                    return isError ? throw new McpToolException(text) : text;
                });
                all.Add(Prepared(tool, strict, limits, log.Info));
            }
        }
        return [.. all];
    }
}

/// <summary>An MCP tool's result marked isError: a failed call, whose message is the server's text.</summary>
sealed class McpToolException(string message) : Exception(message);
