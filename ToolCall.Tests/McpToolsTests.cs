using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// --mcp: tools from an MCP server, offered beside the built-in ones, run through the whole flow. The server is
/// McpTestServer, on the official MCP C# SDK; the model's side is a cassette built from what that server lists.
/// </summary>
public class McpToolsTests
{
    [Fact]
    public async Task McpServersTool_IsOfferedBesideTheBuiltInOnes_AndItsResultGoesBackInTheHistory()
    {
        string server = McpTestServer.Command("--weather-as", "city_weather");
        using var dir = new TempDir();
        string cassette = await OneCallCassetteAsync(dir, server, Wire.Call("call_m", "city_weather", "{\"city\":\"Oslo\"}"),
            "It's 18°C and partly cloudy in Oslo.");

        CliResult run = await App.RunAsync("--mcp", server, "--replay", cassette);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("Done.", run.Stdout.Trim());
        Assert.Contains("tools: get_weather, get_forecast, city_weather, fail, picture", run.Stderr);
        Assert.Contains("Step 3: city_weather({\"city\":\"Oslo\"}) -> It's 18°C and partly cloudy in Oslo.", run.Stderr);
    }

    [Fact]
    public async Task McpResultMarkedIsError_IsAFailedCall_ThatTheModelReads()
    {
        string server = McpTestServer.Command("--weather-as", "city_weather");
        using var dir = new TempDir();
        string cassette = await OneCallCassetteAsync(dir, server, Wire.Call("call_f", "fail", "{}"), "Error: fail failed: The weather service is down.");

        CliResult run = await App.RunAsync("--mcp", server, "--replay", cassette);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("Step 3: fail({}) -> Error: fail failed: The weather service is down.", run.Stderr);
    }

    [Fact]
    public async Task McpToolWithANameTheApiRefuses_IsLeftOut_WithOneWarningNamingIt()
    {
        string server = McpTestServer.Command("--weather-as", "city_weather", "--also", "weather.today");
        using var dir = new TempDir();
        string cassette = await OneCallCassetteAsync(dir, server, Wire.Call("call_m", "city_weather", "{\"city\":\"Oslo\"}"),
            "It's 18°C and partly cloudy in Oslo.", leftOut: "weather.today");

        CliResult run = await App.RunAsync("--mcp", server, "--replay", cassette);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains($"Warning: MCP server \"{server}\": its tool weather.today is left out: a function name on --api chat must match " +
                        "^[a-zA-Z0-9_-]{1,64}$", run.Stderr);
        Assert.DoesNotContain("weather.today,", run.Stderr.Split('\n').Single(line => line.StartsWith("Step 1:", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task McpToolNamedAsAnotherTool_IsAUsageError()
    {
        string server = McpTestServer.Command(); // it has a get_weather, as the demo does

        CliResult run = await App.RunAsync("--mcp", server);

        Assert.Equal(2, run.ExitCode);
        Assert.StartsWith($"error: MCP server \"{server}\" has a tool named 'get_weather', as another tool is", run.Stderr.Split('\n').Last(line => line.Length > 0));
    }

    [Fact]
    public async Task McpServerThatWillNotStart_IsOneLine_Exit1()
    {
        CliResult run = await App.RunAsync("--mcp", "/nonexistent/mcp-server --stdio");

        Assert.Equal(1, run.ExitCode);
        Assert.StartsWith("error: the MCP server \"/nonexistent/mcp-server --stdio\" could not be started: ", run.Stderr);
        Assert.DoesNotContain("   at ", run.Stderr);
    }

    [Fact]
    public async Task CtrlC_CancelsARunningMcpCall_AndTheRunExits130()
    {
        string server = McpTestServer.Command("--weather-as", "city_weather");
        using var dir = new TempDir();
        string cassette = await OneCallCassetteAsync(dir, server, Wire.Call("call_s", "slow", "{}"), "never");
        var stderr = new WatchedWriter();
        using var cancel = new CancellationTokenSource();

        Task<int> run = Cli.RunAsync(["--mcp", server, "--replay", cassette], _ => null, new StringWriter(), stderr, cancel.Token);
        await stderr.SeenAsync("slow: started"); // the server's own stderr, passed through
        cancel.Cancel();

        // The call never ends on its own: only the cancellation can end the run (McpClientTests shows the server told).
        Assert.Equal(130, await run.WaitAsync(TimeSpan.FromSeconds(30))); // a bound, not a synchronisation
        Assert.Contains("cancelled.", stderr.ToString().Split('\n').Select(line => line.TrimEnd('\r')));
    }

    /// <summary>
    /// A cassette in which the model asks for `call` among the demo's tools and the MCP server's (less `leftOut`),
    /// and answers "Done." to the history that carries `result`.
    /// </summary>
    static async Task<string> OneCallCassetteAsync(TempDir dir, string server, JsonObject call, string result, string? leftOut = null)
    {
        await using McpClient mcp = await McpClient.StartAsync(server, TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        Tool[] tools = [.. DemoTools.Create(), .. mcp.Tools.Where(t => t.Name != leftOut).Select(t => new Tool(t.Name, t.Description, t.InputSchema, _ => ""))];
        JsonObject user = Wire.User("Weather?");
        JsonObject asked = Wire.AskForTools(call);
        JsonObject Request(params JsonObject[] messages)
        {
            JsonObject request = Wire.Request(messages);
            request["tools"] = ToolCalling.ToolDefinitions(tools);
            return request;
        }
        return Wire.Cassette(
            Wire.Exchange(Request(user), Wire.Completion(asked)),
            Wire.Exchange(Request(user, asked, Wire.ToolMessage((string)call["id"]!, result)), Wire.Completion(Wire.Text("Done.")))).Save(dir);
    }
}

/// <summary>McpTestServer (ToolCall.Tests/McpTestServer/), built with the tests, as an --mcp command.</summary>
static class McpTestServer
{
    public static string Dll
    {
        get
        {
            string configuration = Path.GetFileName(Path.GetDirectoryName(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)))!;
            return Path.Combine(Repo.Root, "ToolCall.Tests", "McpTestServer", "bin", configuration, "net10.0", "McpTestServer.dll");
        }
    }

    public static string Command(params string[] options) => string.Join(' ', [$"dotnet \"{Dll}\"", .. options]);
}
