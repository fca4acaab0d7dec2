using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// The limits an API sets, met before they cost a wrong answer: a reply cut off by the output limit runs none of its
/// calls, and tool definitions the API would refuse never leave the machine.
/// </summary>
public class LimitTests
{
    [Theory]
    [InlineData("chat", "finish_reason \"length\"")]
    [InlineData("responses", "status \"incomplete\", reason \"max_output_tokens\"")]
    [InlineData("anthropic", "stop_reason \"max_tokens\"")]
    public async Task ReplyCutOffInTheMiddleOfAToolCall_RunsNoneOfItsCalls_AndSaysToRaiseMaxTokens(string api, string why)
    {
        // cassettes/max-tokens.json and its siblings: --max-tokens 12 cuts the call off at {"city":"Lon.
        CliResult run = await App.RunAsync("--api", api, "--max-tokens", "12");

        Assert.Equal(1, run.ExitCode);
        Assert.DoesNotContain("Step 3", run.Stderr);
        Assert.Equal("", run.Stdout);
        Assert.Equal(
            $"error: the reply was cut off by the output limit ({why}) in the middle of its tool calls, so none of them is " +
            "run: their arguments may be incomplete. Raise --max-tokens (now 12).",
            run.Stderr.TrimEnd().Split('\n')[^1]);
    }

    [Theory]
    [InlineData("chat", "max_tokens")]
    [InlineData("responses", "max_output_tokens")]
    [InlineData("anthropic", "max_tokens")]
    public async Task MaxTokens_IsSentInTheApisOwnField(string api, string field)
    {
        using var dir = new TempDir();

        CliResult run = await App.RunAsync("--api", api, "--max-tokens", "12", "--record", dir.File("run.json"));

        JsonNode request = Cassette.Load(dir.File("run.json")).Interactions[0].RequestBody!;
        Assert.Equal(12, (int)request[field]!);
        Assert.Equal(1, run.ExitCode);
    }

    [Fact]
    public void TwoTools_WithOneName_AreRefusedOnEveryApi()
    {
        Tool[] tools = [.. ProgramTools.Create(), Named("get_weather")];

        Assert.All(Api.All, api => Assert.Equal(
            "2 tools are named 'get_weather', and each function name must be unique", api.ToolsProblem(tools)));
    }

    [Theory]
    [InlineData("chat", "get.weather", false)]
    [InlineData("chat", "a-64-character-name-is-the-longest-chat-completions-takes-______", true)]
    [InlineData("chat", "a-65-character-name-is-one-more-than-chat-completions-takes-_____", false)]
    [InlineData("responses", "a-65-character-name-is-one-more-than-chat-completions-takes-_____", false)]
    [InlineData("anthropic", "a-65-character-name-is-one-more-than-chat-completions-takes-_____", true)]
    [InlineData("anthropic", "server.tool", false)]
    [InlineData("chat", "", false)]
    public void FunctionName_IsCheckedAgainstTheApisPattern(string apiName, string name, bool takes)
    {
        Api api = Api.Named(apiName);

        string? problem = api.ToolsProblem([Named(name)]);

        if (takes)
        {
            Assert.Null(problem);
            return;
        }
        Assert.Equal(
            $"a function name on --api {apiName} must match ^[a-zA-Z0-9_-]{{1,{api.MaxNameLength}}}$ (letters, digits, _ and -, " +
            $"at most {api.MaxNameLength}), and '{name}' does not", problem);
    }

    [Fact]
    public void MoreThan128Tools_AreRefusedOnChatCompletions_WhichTakesNoMore()
    {
        Tool[] tools = [.. Enumerable.Range(1, 129).Select(i => Named($"tool_{i}"))];

        Assert.Equal("129 tools are offered, and --api chat takes at most 128 in one request", Api.Named("chat").ToolsProblem(tools));
        Assert.Null(Api.Named("chat").ToolsProblem(tools[..128]));
    }

    static Tool Named(string name) => new(name, "A tool", new JsonObject { ["type"] = "object" }, _ => "ok");
}
