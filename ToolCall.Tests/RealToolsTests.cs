using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// Tools as real apps have them: asynchronous and cancellable, bounded in time and in what they return, run together
/// or after asking, a flow that only fails stopped, and tools that come from an MCP server.
/// </summary>
public class RealToolsTests
{
    static readonly JsonObject ObjectSchema = new() { ["type"] = "object" };

    [Fact]
    public async Task AsyncTool_IsAwaited_AndWhatItReturnsIsTheResult()
    {
        var ready = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        Tool[] tools = [new Tool("lookup", "Looks up", ObjectSchema, async (_, token) => await ready.Task.WaitAsync(token))];

        Task<(string Content, bool Failed)> run = ToolCalling.RunToolCallAsync("lookup", "{}", tools, CancellationToken.None);
        Assert.False(run.IsCompleted); // it waits for its service
        ready.SetResult("found it");

        Assert.Equal(("found it", false), await run);
    }

    [Fact]
    public async Task CallPastTheToolTimeout_IsToldToStop_AndTheModelIsToldItTimedOut()
    {
        var clock = new ManualClock();
        CancellationToken given = default;
        var slow = new Tool("slow", "Never ends on its own", ObjectSchema, async (_, token) =>
        {
            given = token;
            await Task.Delay(Timeout.Infinite, token);
            return "never";
        });
        Tool tool = ProgramTools.Prepared(slow, strict: false, new ToolLimits(TimeSpan.FromSeconds(30), 20_000) { Time = clock }, log: null);

        Task<(string Content, bool Failed)> run = ToolCalling.RunToolCallAsync("slow", "{}", [tool], CancellationToken.None);
        await clock.TimerPendingAsync(TimeSpan.FromSeconds(30));
        clock.Advance(TimeSpan.FromSeconds(30));

        Assert.Equal(("Error: slow failed: timed out after 30 s (--tool-timeout), so it was stopped", true), await run);
        Assert.True(given.IsCancellationRequested, "the call was not told to stop");
    }

    [Fact]
    public async Task ResultOverMaxResultChars_IsCut_SaysSoWithItsLength_AndTheStepLogSaysItWasCut()
    {
        var log = new List<string>();
        Tool tool = ProgramTools.Prepared(new Tool("big", "Says a lot", ObjectSchema, _ => new string('x', 1000)), strict: false,
            new ToolLimits(TimeSpan.FromSeconds(30), MaxResultChars: 100), log.Add);

        (string content, bool failed) = await ToolCalling.RunToolCallAsync("big", "{}", [tool], CancellationToken.None);

        Assert.False(failed);
        Assert.Equal(new string('x', 100) + "\n[The result was cut here: it has 1000 characters, and only the first 100 are shown (--max-result-chars).]", content);
        Assert.Equal("Step 3: the result of big is cut to 100 of its 1000 characters (--max-result-chars)", Assert.Single(log));
    }

    [Fact]
    public async Task ParallelTools_RunTogether_AndTheirResultsKeepTheCallsOrder_WhenTheyFinishInReverse()
    {
        // The first call can only finish after the second has: run one after another, they would wait forever.
        var secondDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var finished = new List<string>();
        Tool[] tools =
        [
            new Tool("first", "Waits for the second", ObjectSchema, async (_, token) =>
            {
                await secondDone.Task.WaitAsync(token);
                lock (finished)
                    finished.Add("first");
                return "first result";
            }),
            new Tool("second", "Ends at once", ObjectSchema, _ =>
            {
                lock (finished)
                    finished.Add("second");
                secondDone.SetResult();
                return "second result";
            }),
        ];

        (string Content, bool Failed)[] results = await new ToolRunner(parallel: true)
            .RunCallsAsync([new FunctionCall("first", "{}"), new FunctionCall("second", "{}")], tools, CancellationToken.None)
            .WaitAsync(TimeSpan.FromSeconds(10)); // a bound, not a synchronisation

        Assert.Equal(["second", "first"], finished);
        Assert.Equal(["first result", "second result"], results.Select(r => r.Content));
    }

    [Fact]
    public async Task WithoutParallelTools_TheCallsRunOneAfterAnother()
    {
        var events = new List<string>();
        Tool Recording(string name) => new(name, "Records", ObjectSchema, async (_, _) =>
        {
            events.Add($"start {name}");
            await Task.Yield();
            events.Add($"end {name}");
            return name;
        });

        await new ToolRunner().RunCallsAsync([new FunctionCall("a", "{}"), new FunctionCall("b", "{}")], [Recording("a"), Recording("b")], CancellationToken.None);

        Assert.Equal(["start a", "end a", "start b", "end b"], events);
    }

    [Fact]
    public async Task ParallelTools_OnTheCommandLine_SendTheSameHistory()
    {
        // two-cities.json holds the history of the two calls run one after another: run together, it must not change.
        CliResult run = await App.RunAsync("--replay", Repo.Cassette("two-cities.json"), "--parallel-tools");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("Right now it's +18°C and partly cloudy in both London and Paris.", run.Stdout.Trim());
    }

    [Fact]
    public async Task Confirm_AsksBeforeEachCall_AndADeclinedCallIsAnsweredSo_AndTheFlowGoesOn()
    {
        using var dir = new TempDir();
        string cassette = TwoCallCassette(dir, Wire.ToolMessage("call_l", Wire.Weather("London")),
            Wire.ToolMessage("call_p", "The user declined to run get_weather, so it was not run."));
        var stderr = new StringWriter();

        int exit = await Cli.RunAsync(["--replay", cassette, "--confirm"], _ => null, new StringWriter(), stderr,
            CancellationToken.None, terminal: new StringReader("y\nno\n"));

        Assert.True(exit == 0, stderr.ToString());
        Assert.Contains("Step 3: run get_weather({\"city\":\"London\"})? [y/N] ", stderr.ToString());
        Assert.Contains("Step 3: run get_weather({\"city\":\"Paris\"})? [y/N] ", stderr.ToString());
    }

    [Fact]
    public async Task Confirm_WithoutATerminalOnStdin_IsAUsageError_NeverASilentYes()
    {
        CliResult run = await App.RunAsync("--confirm");

        Assert.Equal(2, run.ExitCode);
        Assert.StartsWith("error: --confirm asks on the terminal before each call, and stdin is not a terminal", run.Stderr);
    }

    [Fact]
    public async Task ConfirmWithParallelTools_AsksAboutEveryCallFirst_ThenRunsTheApprovedOnesTogether()
    {
        var events = new List<string>();
        var prompt = new EventWriter(events);
        Tool Recording(string name) => new(name, "Records", ObjectSchema, _ =>
        {
            lock (events)
                events.Add($"run {name}");
            return name;
        });

        (string Content, bool Failed)[] results = await new ToolRunner(parallel: true, new StringReader("yes\n\ny\n"), prompt)
            .RunCallsAsync([new FunctionCall("a", "{}"), new FunctionCall("b", "{}"), new FunctionCall("c", "{}")],
                [Recording("a"), Recording("b"), Recording("c")], CancellationToken.None);

        Assert.Equal(["ask a", "ask b", "ask c"], events.Take(3));
        Assert.Equal(["run a", "run c"], events.Skip(3).Order());
        Assert.Equal([("a", false), ("The user declined to run b, so it was not run.", false), ("c", false)], results);
    }

    [Fact]
    public async Task FlowWhoseCallsAllFailThreeRoundsInARow_Stops_WithOneLine()
    {
        JsonObject user = Wire.User("What time is it?");
        JsonObject Ask(int round) => Wire.AskForTools(Wire.Call($"call_{round}", "get_time", "{}"));
        JsonObject Failed(int round) => Wire.ToolMessage($"call_{round}", "Error: unknown function 'get_time'. Available functions: get_weather, get_forecast.");
        using var dir = new TempDir();
        string cassette = Wire.Cassette(
            Wire.Exchange(Wire.Request(user), Wire.Completion(Ask(1))),
            Wire.Exchange(Wire.Request(user, Ask(1), Failed(1)), Wire.Completion(Ask(2))),
            Wire.Exchange(Wire.Request(user, Ask(1), Failed(1), Ask(2), Failed(2)), Wire.Completion(Ask(3)))).Save(dir);

        CliResult run = await App.RunAsync("--replay", cassette);

        Assert.Equal(1, run.ExitCode);
        Assert.Equal(
            "error: every tool call failed in 3 rounds in a row, the last with \"Error: unknown function 'get_time'. Available " +
            "functions: get_weather, get_forecast.\"; stopping rather than spend more rounds. Check the tools, and what the model sends them.",
            run.Stderr.TrimEnd().Split('\n')[^1]);
        Assert.Equal(3, run.Stderr.Split("Step 3:").Length - 1);
    }

    /// <summary>London and Paris asked for in one reply; the second request carries these two tool messages.</summary>
    static string TwoCallCassette(TempDir dir, JsonObject londonResult, JsonObject parisResult)
    {
        JsonObject user = Wire.User("London and Paris?");
        JsonObject asked = Wire.AskForTools(Wire.WeatherCall("call_l", "London"), Wire.WeatherCall("call_p", "Paris"));
        return Wire.OneRound("London and Paris?", Wire.Completion(asked), asked, [londonResult, parisResult], "Done.").Save(dir);
    }

    /// <summary>A prompt writer that notes each question as "ask NAME".</summary>
    sealed class EventWriter(List<string> events) : StringWriter
    {
        public override void Write(string? value)
        {
            if (value?.StartsWith("Step 3: run ", StringComparison.Ordinal) == true)
            {
                lock (events)
                    events.Add("ask " + value["Step 3: run ".Length..value.IndexOf('(')]);
            }
        }
    }
}
