using System.Net;
using System.Net.Http.Headers;
using System.Net.ServerSentEvents;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>The event-stream format, read as the spec says, whatever the network does to the bytes.</summary>
public class ServerSentEventTests
{
    // Every rule at once: a BOM, CRLF, LF and CR line ends, a comment, "data:" without a space, multi-line data,
    // fields that are not data, a line with no colon, and characters of two, three and four bytes in UTF-8.
    const string Everything =
        "\uFEFFdata: {\"a\":\"°C\"}\r\n\r\n" +
        ": ping\r\n" +
        "data:{\"b\":\"中\"}\n\n" +
        "event: message\rid: 7\rretry: 1000\rdata: {\"c\":\rdata: \"ü😀\"}\r\r" +
        "data\n\n" +
        "data: [DONE]\n\n";

    static readonly string[] EverythingData = ["{\"a\":\"°C\"}", "{\"b\":\"中\"}", "{\"c\":\n\"ü😀\"}", "", "[DONE]"];

    [Fact]
    public async Task BytesSplitAtEveryPosition_GiveTheSameEvents()
    {
        byte[] bytes = Encoding.UTF8.GetBytes(Everything);

        for (int split = 0; split <= bytes.Length; split++)
            Assert.Equal(EverythingData, await ReadAsync(new ChoppedStream(bytes, split, bytes.Length)));
    }

    [Fact]
    public async Task BytesArrivingOneToNAtATime_GiveTheSameEvents()
    {
        byte[] bytes = Encoding.UTF8.GetBytes(Everything);

        for (int size = 1; size <= bytes.Length; size++)
            Assert.Equal(EverythingData, await ReadAsync(new ChoppedStream(bytes, size)));
        Assert.Equal(EverythingData, await ReadAsync(new ChoppedStream(bytes, 1, 2, 3, 5, 8, 13)));
    }

    [Theory]
    [InlineData("data: x\r\n\r\ndata: y\n\ndata: z\r\r", "x|y|z")]                 // CRLF, LF and CR each end a line
    [InlineData(": ping\n\ndata: x\n: ping\n\n:\n\n", "x")]                        // comments, even inside an event
    [InlineData("data:x\n\ndata: y\n\ndata:  z\n\n", "x|y| z")]                  // one space after the colon is dropped, no more
    [InlineData("data: {\"a\":\ndata: 1}\n\n", "{\"a\":\n1}")]                    // data lines join with "\n"
    [InlineData("event: delta\nid: 1\nretry: 5\nfoo: bar\ndata: x\n\n", "x")]    // other fields do not change the data
    [InlineData("event: ping\n\ndata: x\n\n", "x")]                               // an event without data is no event
    [InlineData("data\n\ndata:\n\n", "|")]                                        // a data line with no value is empty data
    [InlineData("\uFEFFdata: x\n\n", "x")]                                        // a leading byte order mark is skipped
    [InlineData("data: x\n\ndata: cut", "x")]                                     // an event without its blank line is dropped
    public async Task EachRuleOfTheSpec(string stream, string expected) =>
        Assert.Equal(expected.Split('|'), await ReadAsync(new MemoryStream(Encoding.UTF8.GetBytes(stream))));

    [Theory]
    [InlineData(Everything)]
    [InlineData("data: a\r\n\r\n\r\n\r\ndata: b\r\n\r\n")]
    [InlineData("id: 1\ndata: a\ndata:\ndata: b\n\nevent: e\ndata: c\n\n: comment\n\ndata")]
    [InlineData("data: x\r\rdata: y\r\n\ndata: z\n\r")]
    public async Task ReadsWhatTheBclParserReads(string stream)
    {
        // System.Net.ServerSentEvents.SseParser, from the .NET shared framework, as a second opinion.
        var expected = new List<string>();
        await foreach (SseItem<string> item in SseParser.Create(new MemoryStream(Encoding.UTF8.GetBytes(stream))).EnumerateAsync())
            expected.Add(item.Data);

        Assert.Equal(expected, await ReadAsync(new MemoryStream(Encoding.UTF8.GetBytes(stream))));
    }

    static async Task<List<string>> ReadAsync(Stream stream)
    {
        var data = new List<string>();
        await foreach (string item in ServerSentEvents.ReadDataAsync(stream, CancellationToken.None))
            data.Add(item);
        return data;
    }
}

/// <summary>A streamed reply put back together: the same message a JSON reply carries, however it was cut up.</summary>
public class StreamAssemblyTests
{
    [Fact]
    public async Task ArgumentsSplitAtEveryCharacterPosition_AreJoinedIntoTheSameArguments()
    {
        // The arguments' text holds a \u00fc escape (six characters: the split falls inside it too), a key, a
        // number and characters outside ASCII.
        const string arguments = """{"city":"M\u00fcnchen","days":12,"note":"Grüße, °C"}""";

        for (int first = 0; first <= arguments.Length; first++)
        {
            for (int second = first; second <= arguments.Length; second++)
            {
                JsonObject message = await StreamWire.MessageAsync(
                    StreamWire.Calls(StreamWire.Fragment(0, "call_m", "get_forecast", arguments[..first])),
                    StreamWire.Calls(StreamWire.Fragment(0, arguments: arguments[first..second])),
                    StreamWire.Calls(StreamWire.Fragment(0, arguments: arguments[second..])));

                Assert.Equal(arguments, (string)message["tool_calls"]![0]!["function"]!["arguments"]!);
            }
        }
        Assert.Equal("München", (string)JsonNode.Parse(arguments)!["city"]!);
    }

    [Fact]
    public async Task EventStreamSplitAtEveryByte_AssemblesTheSameMessage()
    {
        // Two interleaved calls and text with characters of two and three bytes, in CRLF lines with keep-alives.
        JsonNode[] events =
        [
            StreamWire.Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "Je regarde °C " }),
            StreamWire.Text("et 中…"),
            StreamWire.Calls(StreamWire.Fragment(0, "call_a", "get_weather", "{\"city\":\"Mün")),
            StreamWire.Calls(StreamWire.Fragment(1, "call_b", "get_weather", "{\"city\":")),
            StreamWire.Calls(StreamWire.Fragment(0, arguments: "chen\"}")),
            StreamWire.Calls(StreamWire.Fragment(1, arguments: "\"Zürich\"}")),
            StreamWire.Finish("tool_calls"),
            StreamWire.Usage(12, 34),
            "[DONE]",
        ];
        byte[] bytes = Encoding.UTF8.GetBytes(StreamWire.Sse(events).Replace("\n", "\r\n").Replace("\r\n\r\n", "\r\n: ping\r\n\r\n"));
        JsonObject expected = await new StreamedReply(TextWriter.Null).ReadAsync(new MemoryStream(bytes), [], null, CancellationToken.None);

        for (int split = 0; split <= bytes.Length; split++)
        {
            JsonObject completion = await new StreamedReply(TextWriter.Null).ReadAsync(new ChoppedStream(bytes, split, bytes.Length), [], null, CancellationToken.None);
            Assert.True(JsonNode.DeepEquals(expected, completion), $"split at byte {split}: {completion.ToJsonString()}");
        }
        JsonNode message = expected["choices"]![0]!["message"]!;
        Assert.Equal("Je regarde °C et 中…", (string)message["content"]!);
        Assert.Equal(["{\"city\":\"München\"}", "{\"city\":\"Zürich\"}"], message["tool_calls"]!.AsArray().Select(c => (string)c!["function"]!["arguments"]!));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public async Task InterleavedCalls_AreToldApartByIndex_AndKeepTheirFirstFragmentsIdTypeAndName(int count)
    {
        string[] cities = ["Oslo", "Lima", "Bern"];
        var events = new List<JsonNode>();
        for (int i = 0; i < count; i++)
            events.Add(StreamWire.Calls(StreamWire.Fragment(i, $"call_{i}", "get_weather", "")));
        foreach (Func<string, string> piece in new Func<string, string>[] { _ => "{\"ci", _ => "ty\":\"", city => city, _ => "\"}" })
        {
            for (int i = count - 1; i >= 0; i--) // later calls' pieces first: only the index tells them apart
                events.Add(StreamWire.Calls(StreamWire.Fragment(i, arguments: piece(cities[i]))));
        }

        JsonObject message = await StreamWire.MessageAsync([.. events]);

        JsonObject[] expected = [.. Enumerable.Range(0, count).Select(i => Wire.WeatherCall($"call_{i}", cities[i]))];
        Assert.True(JsonNode.DeepEquals(new JsonArray([.. expected]), message["tool_calls"]), message.ToJsonString());
    }

    [Fact]
    public async Task AssembledMessage_HasTheShapeOfAJsonRepliesMessage()
    {
        JsonObject message = await StreamWire.MessageAsync(
            StreamWire.Chunk(new JsonObject { ["role"] = "assistant", ["content"] = null, ["tool_calls"] = new JsonArray(StreamWire.Fragment(0, "call_1", "get_weather", "")) }),
            StreamWire.Calls(StreamWire.Fragment(0, arguments: "{\"city\":\"Oslo\"}")));

        Assert.True(JsonNode.DeepEquals(Wire.AskForTools(Wire.WeatherCall("call_1", "Oslo")), message), message.ToJsonString());
    }

    [Fact]
    public async Task FragmentsWithoutIndex_ANewIdStartsACall_AndNoIdContinuesTheLastCall()
    {
        // Gemini: no index. Two whole calls in one chunk, each with its own id, then a call whose arguments come in
        // pieces after its first fragment, without id or index.
        JsonObject message = await StreamWire.MessageAsync(
            StreamWire.Calls(StreamWire.Fragment(null, "g1", "get_weather", "{\"city\":\"Rome\"}"), StreamWire.Fragment(null, "g2", "get_weather", "{\"city\":\"Oslo\"}")),
            StreamWire.Calls(StreamWire.Fragment(null, "g3", "get_weather", "{\"city\":")),
            StreamWire.Calls(StreamWire.Fragment(null, arguments: "\"Bern\"}")));

        Assert.True(JsonNode.DeepEquals(
            new JsonArray(Wire.WeatherCall("g1", "Rome"), Wire.WeatherCall("g2", "Oslo"), Wire.WeatherCall("g3", "Bern")), message["tool_calls"]), message.ToJsonString());
    }

    [Fact]
    public async Task FragmentsWithoutIdOrType_LeaveThemEmpty_ForStep3ToComplete()
    {
        // Ollama-like: no id; and no type. Step 3's CompleteForHistory fills both, as for a JSON reply.
        JsonObject fragment = StreamWire.Fragment(0, null, "get_weather", "{\"city\":\"Kyiv\"}");
        fragment.Remove("type");

        JsonObject message = await StreamWire.MessageAsync(StreamWire.Calls(fragment));

        JsonNode call = message["tool_calls"]![0]!;
        Assert.Null(call["id"]);
        Assert.Null(call["type"]);
        Assert.Equal("get_weather", (string)call["function"]!["name"]!);
    }

    [Fact]
    public async Task WholeArgumentsSentAgainInALastFragment_AreNotDoubled()
    {
        JsonObject message = await StreamWire.MessageAsync(
            StreamWire.Calls(StreamWire.Fragment(0, "call_r", "get_weather", "{\"city\":")),
            StreamWire.Calls(StreamWire.Fragment(0, arguments: "\"Riga\"}")),
            StreamWire.Calls(StreamWire.Fragment(0, arguments: "{\"city\": \"Riga\"}")));

        Assert.Equal("{\"city\": \"Riga\"}", (string)message["tool_calls"]![0]!["function"]!["arguments"]!);
    }

    [Fact]
    public async Task WholeArgumentsInOneFragment_AreTakenAsTheyAre()
    {
        JsonObject message = await StreamWire.MessageAsync(StreamWire.Calls(StreamWire.Fragment(0, "call_w", "get_weather", "{\"city\":\"Rome\"}")));

        Assert.True(JsonNode.DeepEquals(Wire.WeatherCall("call_w", "Rome"), message["tool_calls"]![0]));
    }

    [Fact]
    public async Task FieldsAProviderAddsToACall_GoBackWithIt()
    {
        // Gemini 3 wants its thought signature back on the call in the next request.
        JsonObject fragment = StreamWire.Fragment(null, "g1", "get_weather", "{\"city\":\"Rome\"}");
        fragment["extra_content"] = JsonNode.Parse("""{"google":{"thought_signature":"c2lnbmF0dXJl"}}""");

        JsonObject message = await StreamWire.MessageAsync(StreamWire.Calls(fragment));

        Assert.Equal("c2lnbmF0dXJl", (string)message["tool_calls"]![0]!["extra_content"]!["google"]!["thought_signature"]!);
        Assert.Null(message["tool_calls"]![0]!["index"]); // the fragment's own bookkeeping does not
    }

    [Fact]
    public async Task TextPieces_ArePrintedAsTheyArrive_AndJoinedIntoContent()
    {
        var output = new StringWriter();

        JsonObject completion = await StreamWire.AssembleAsync(output,
            StreamWire.Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "" }), StreamWire.Text("Mild"), StreamWire.Text(" in"), StreamWire.Text(" Oslo."),
            StreamWire.Finish("stop"));

        Assert.Equal("Mild in Oslo." + Environment.NewLine, output.ToString());
        JsonNode choice = completion["choices"]![0]!;
        Assert.True(JsonNode.DeepEquals(Wire.Text("Mild in Oslo."), choice["message"]), choice.ToJsonString());
        Assert.Equal("stop", (string)choice["finish_reason"]!);
    }

    [Fact]
    public async Task UsageOnlyLastChunk_GivesTheUsage_AndNoChoiceOfItsOwn()
    {
        JsonObject completion = await StreamWire.AssembleAsync(TextWriter.Null, StreamWire.Text("Hi."), StreamWire.Finish("stop"), StreamWire.Usage(7, 3));

        Assert.Single(completion["choices"]!.AsArray());
        Assert.Equal(10, (int)completion["usage"]!["total_tokens"]!);
        Assert.Equal("chat.completion", (string)completion["object"]!);
        Assert.Equal("chatcmpl-stream", (string)completion["id"]!);
    }

    [Fact]
    public async Task ErrorEvent_Throws_WithTheServersMessage()
    {
        JsonObject error = ApiError.Create("The server had an error processing your request. Sorry about that!", type: "server_error");

        FlowException e = await Assert.ThrowsAsync<FlowException>(() => StreamWire.AssembleAsync(TextWriter.Null, StreamWire.Text("Mild"), error));

        Assert.Equal("the stream carried an error instead of the next chunk: The server had an error processing your request. Sorry about that!", e.Message);
    }

    [Fact]
    public async Task StreamEndingCleanlyAfterAFinishReason_IsAWholeReply_WithoutDone()
    {
        // Reversed (issue 12): a body that ends cleanly after finish_reason is a finished reply, as every official SDK
        // reads it; only a stream cut before any finish_reason, or a body that breaks off, is incomplete.
        string sse = StreamWire.Sse([StreamWire.Calls(StreamWire.Fragment(0, "call_c", "get_weather", "{\"city\":\"Oslo\"}")), StreamWire.Finish("tool_calls")]);

        JsonObject completion = await new StreamedReply(TextWriter.Null).ReadAsync(new MemoryStream(Encoding.UTF8.GetBytes(sse)), [], null, CancellationToken.None);

        Assert.Equal("tool_calls", (string)completion["choices"]![0]!["finish_reason"]!);
        Assert.Equal("{\"city\":\"Oslo\"}", (string)completion["choices"]![0]!["message"]!["tool_calls"]![0]!["function"]!["arguments"]!);
    }

    [Fact]
    public async Task StreamEndingCleanlyBeforeAnyFinishReason_StillThrows()
    {
        string sse = StreamWire.Sse([StreamWire.Calls(StreamWire.Fragment(0, "call_c", "get_weather", "{\"city\":\"Os"))]);

        FlowException e = await Assert.ThrowsAsync<FlowException>(() =>
            new StreamedReply(TextWriter.Null).ReadAsync(new MemoryStream(Encoding.UTF8.GetBytes(sse)), [], null, CancellationToken.None));

        Assert.StartsWith("the stream ended after 1 event, before data: [DONE].", e.Message);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task CumulativeArgumentFragments_ReplaceWhatCameBefore_LikeIncrementalOnes_SplitAtEveryByte(bool cumulative)
    {
        // Some servers send the whole argument text so far in every fragment ("{\"ci", "{\"city\":\"Os", …); others the
        // next piece only. Both must give the same call, however the bytes arrive.
        string[] pieces = ["{\"ci", "ty\":\"Os", "lo\"}"];
        string[] sent = cumulative ? [pieces[0], pieces[0] + pieces[1], pieces[0] + pieces[1] + pieces[2]] : pieces;
        JsonNode[] events =
        [
            StreamWire.Calls(StreamWire.Fragment(0, "call_o", "get_weather", sent[0])),
            StreamWire.Calls(StreamWire.Fragment(0, arguments: sent[1])),
            StreamWire.Calls(StreamWire.Fragment(0, arguments: sent[2])),
            StreamWire.Finish("tool_calls"),
            "[DONE]",
        ];
        byte[] bytes = Encoding.UTF8.GetBytes(StreamWire.Sse(events));

        for (int split = 0; split <= bytes.Length; split++)
        {
            JsonObject completion = await new StreamedReply(TextWriter.Null).ReadAsync(new ChoppedStream(bytes, split, bytes.Length), [], null, CancellationToken.None);
            Assert.Equal("{\"city\":\"Oslo\"}", (string)completion["choices"]![0]!["message"]!["tool_calls"]![0]!["function"]!["arguments"]!);
        }
    }

    [Theory]
    [InlineData("<html>")]                                                                       // not JSON
    [InlineData("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\ud800b\"}}]}")]  // an unpaired surrogate escape
    public async Task EventThatIsNotAValidJsonObject_Throws_NamingIt_AndIsKeptAsItsText(string data)
    {
        var events = new JsonArray();

        FlowException e = await Assert.ThrowsAsync<FlowException>(() =>
            new StreamedReply(TextWriter.Null).ReadAsync(new MemoryStream(Encoding.UTF8.GetBytes($"data: {data}\n\n")), events, null, CancellationToken.None));

        Assert.Equal($"event 1 of the stream is not a valid JSON object: {data}", e.Message);
        Assert.Equal(data, (string)Assert.Single(events)!); // the trace and the recording can still write it
    }
}

/// <summary>--stream end to end: the command line, the replay server and the history it checks.</summary>
public class StreamingFlowTests
{
    const string London = "It's currently +18°C and partly cloudy in London.";

    [Fact]
    public async Task StreamDemo_PrintsTheLondonAnswerOnce_AndStepsOneToFourOnStderr()
    {
        CliResult run = await App.RunAsync("--stream");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(London + Environment.NewLine, run.Stdout);
        Assert.Contains("weather-stream.json", run.Stderr);
        ApiAssert.StepsInOrder(run.Stderr);
        Assert.Contains("Tokens: 389 in total (351 in, 38 out) over 2 requests.", run.Stderr); // from the usage-only chunks
    }

    [Fact]
    public async Task StreamedRun_SendsTheSameHistoryAsTheJsonRun()
    {
        using var dir = new TempDir();
        CliResult json = await App.RunAsync("--replay", Repo.Cassette("weather.json"), "--record", dir.File("json.json"));
        CliResult streamed = await App.RunAsync("--stream", "--replay", Repo.Cassette("weather-stream.json"), "--record", dir.File("stream.json"));

        Assert.True(json.ExitCode == 0, json.ToString());
        Assert.True(streamed.ExitCode == 0, streamed.ToString());
        Assert.Equal(json.Stdout, streamed.Stdout);
        JsonArray jsonHistory = SecondRequestMessages(dir.File("json.json"));
        JsonArray streamedHistory = SecondRequestMessages(dir.File("stream.json"));
        Assert.True(JsonNode.DeepEquals(jsonHistory[1]!["tool_calls"], streamedHistory[1]!["tool_calls"]), streamedHistory[1]!.ToJsonString());
        Assert.True(JsonNode.DeepEquals(jsonHistory[2], streamedHistory[2]));
        JsonNode request = Cassette.Load(dir.File("stream.json")).Interactions[0].RequestBody!;
        Assert.True((bool)request["stream"]!);
        Assert.True((bool)request["stream_options"]!["include_usage"]!);
    }

    [Fact]
    public async Task TwoInterleavedStreamedCalls_AreBothAnsweredInTheCallsOrder()
    {
        using var dir = new TempDir();
        CliResult run = await App.RunAsync("--stream", "--replay", Repo.Cassette("two-cities-stream.json"), "--record", dir.File("run.json"));

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("Right now it's +18°C and partly cloudy in both London and Paris." + Environment.NewLine, run.Stdout);
        JsonArray history = SecondRequestMessages(dir.File("run.json"));
        Assert.Equal(["user", "assistant", "tool", "tool"], history.Select(m => (string)m!["role"]!));
        Assert.Equal(Wire.Weather("London"), (string)history[2]!["content"]!);
        Assert.Equal(Wire.Weather("Paris"), (string)history[3]!["content"]!);
    }

    [Fact]
    public async Task TextDeltas_ArePrintedBeforeTheStreamEnds()
    {
        JsonObject request = StreamWire.Request(Wire.User("Hello?"));
        Cassette cassette = Wire.Cassette(StreamWire.Exchange(request,
            StreamWire.Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "" }), StreamWire.Text("Hello"), StreamWire.Text(" there."),
            StreamWire.Finish("stop"), StreamWire.Usage(5, 2), "[DONE]"));
        await using ReplayServer server = ReplayServer.Start(cassette);
        int sent = 0;
        var stdout = new FirstTextSignal(() => Volatile.Read(ref sent));
        // The server sends the first two events (the role, then "Hello") and holds back the rest until "Hello" is on
        // stdout. A client that printed only at the end of the stream would wait here forever (and time out).
        server.BeforeStreamEvent = async position =>
        {
            if (position >= 2)
                await stdout.FirstText;
            Interlocked.Increment(ref sent);
        };
        using var http = new HttpClient();
        var chat = new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, StepLog.Silent) { StreamTextTo = stdout };

        string answer = await ToolCalling.RunAsync(chat, Wire.Model, "Hello?", ProgramTools.Create(), new FlowOptions(), CancellationToken.None)
            .WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal("Hello", await stdout.FirstText);
        Assert.Equal(2, stdout.EventsSentAtFirstText); // the role and "Hello": the rest was still held back
        Assert.Equal("Hello there.", answer);
        Assert.Equal("Hello there." + Environment.NewLine, stdout.ToString());
    }

    [Fact]
    public async Task OnATerminal_TheWaitingLineIsClearedOnce_AndNeverErasesTheStreamedText()
    {
        JsonObject request = StreamWire.Request(Wire.User("Hello?"));
        Cassette cassette = Wire.Cassette(StreamWire.Exchange(request,
            StreamWire.Text("Hello"), StreamWire.Text(" there"), StreamWire.Text("."), StreamWire.Finish("stop"), "[DONE]"));
        await using ReplayServer server = ReplayServer.Start(cassette);
        var terminal = new Terminal(); // stdout and stderr on one screen
        // The stream starts only once the "waiting for the model" line is on the screen.
        server.BeforeStreamEvent = position => position == 0 ? terminal.WaitingShown : Task.CompletedTask;
        using var http = new HttpClient();
        var chat = new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, new StepLog(terminal, interactive: true)) { StreamTextTo = terminal };

        await ToolCalling.RunAsync(chat, Wire.Model, "Hello?", ProgramTools.Create(), new FlowOptions(), CancellationToken.None)
            .WaitAsync(TimeSpan.FromSeconds(30));

        string screen = terminal.ToString();
        int text = screen.IndexOf("Hello", StringComparison.Ordinal);
        Assert.True(text > 0, screen);
        Assert.Contains("\r" + new string(' ', 40) + "\r", screen[..text]);                           // cleared before the text
        Assert.DoesNotContain('\r', screen[text..screen.IndexOf('\n', text)]);                           // and never inside it
        Assert.Equal("Hello there.", screen[text..screen.IndexOf('\n', text)]);
    }

    [Theory]
    [InlineData("no index (Gemini)")]
    [InlineData("no id (Ollama)")]
    [InlineData("no type")]
    [InlineData("whole arguments again")]
    [InlineData("finish_reason stop")]
    public async Task ProviderVariation_RunsTheTools_AndSendsAConsistentHistory(string variation)
    {
        JsonObject first = StreamWire.Fragment(0, "call_v", "get_weather", "{\"city\":");
        JsonObject rest = StreamWire.Fragment(0, arguments: "\"Oslo\"}");
        string finishReason = "tool_calls";
        string id = "call_v";
        switch (variation)
        {
            case "no index (Gemini)":
                first.Remove("index");
                rest.Remove("index");
                finishReason = "stop"; // Gemini says "stop" with tool calls when streaming, too
                break;
            case "no id (Ollama)":
                first.Remove("id");
                id = "call_1_0"; // generated, and used in both the assistant and the tool message
                break;
            case "no type":
                first.Remove("type");
                break;
            case "finish_reason stop":
                finishReason = "stop";
                break;
        }
        var events = new List<JsonNode> { StreamWire.Calls(first), StreamWire.Calls(rest) };
        if (variation == "whole arguments again")
            events.Add(StreamWire.Calls(StreamWire.Fragment(0, arguments: "{\"city\":\"Oslo\"}"))); // as some servers do at the end
        events.AddRange([StreamWire.Finish(finishReason), StreamWire.Usage(9, 9), "[DONE]"]);
        JsonObject user = Wire.User("Oslo?");
        using var dir = new TempDir();
        string cassette = Wire.Cassette(
            StreamWire.Exchange(StreamWire.Request(user), [.. events]),
            // The replay server checks this history: the assembled call, completed, and its answer under the same id.
            StreamWire.Exchange(
                StreamWire.Request(user, Wire.AskForTools(Wire.WeatherCall(id, "Oslo")), Wire.ToolMessage(id, Wire.Weather("Oslo"))),
                StreamWire.Text("Cloudy in Oslo."), StreamWire.Finish("stop"), "[DONE]")).Save(dir);

        CliResult run = await App.RunAsync("--stream", "--replay", cassette);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("Cloudy in Oslo." + Environment.NewLine, run.Stdout);
        Assert.Contains("get_weather({\"city\":\"Oslo\"})", run.Stderr);
    }

    [Fact]
    public async Task ErrorEvent_EndsWithOneErrorLineAndExit1_AndNothingIsSentOn()
    {
        using var dir = new TempDir();
        JsonObject user = Wire.User("Oslo?");
        string cassette = Wire.Cassette(
            StreamWire.Exchange(StreamWire.Request(user),
                StreamWire.Calls(StreamWire.Fragment(0, "call_e", "get_weather", "{\"city\":")),
                ApiError.Create("The server had an error processing your request. Sorry about that!", type: "server_error"),
                "[DONE]"),
            StreamWire.Exchange(
                StreamWire.Request(user, Wire.AskForTools(Wire.Call("call_e", "get_weather", "{\"city\":")), Wire.ToolMessage("call_e", "x")),
                StreamWire.Text("unreachable"), "[DONE]")).Save(dir);

        CliResult run = await App.RunAsync("--stream", "--replay", cassette, "--record", dir.File("run.json"));

        Assert.Equal(1, run.ExitCode);
        Assert.Equal("", run.Stdout);
        Assert.EndsWith(
            "error: the stream carried an error instead of the next chunk: The server had an error processing your request. Sorry about that!",
            run.Stderr.TrimEnd());
        Assert.DoesNotContain("Step 3", run.Stderr);
        Assert.Single(Cassette.Load(dir.File("run.json")).Interactions); // the failing stream is recorded; nothing followed
    }

    [Fact]
    public async Task GatewayStreamWhoseDoneHasNoBlankLine_IsWhole_AndItsCallRuns()
    {
        // Reversed (issue 12), from a real stream of a gateway in front of Claude: text first, then a tool call at index
        // 1, finish_reason "tool_calls", then `data: [DONE]` with no blank line after it. By the SSE spec that last event
        // is never dispatched, but the reply was complete: every official SDK would have run the call.
        JsonObject user = Wire.User("Oslo?");
        JsonObject asked = Wire.AskForTools(Wire.WeatherCall("call_c", "Oslo"));
        asked["content"] = "Let me check.";
        string sse = StreamWire.Sse([
            StreamWire.Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "Let me check." }),
            StreamWire.Calls(StreamWire.Fragment(1, "call_c", "get_weather", "{\"city\":\"Oslo\"}")),
            StreamWire.Finish("tool_calls")]) + "data: [DONE]";
        using var first = new HeaderCapturingServer(Encoding.UTF8.GetBytes(
            $"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {Encoding.UTF8.GetByteCount(sse)}\r\nConnection: close\r\n\r\n{sse}"));
        var events = new JsonArray();
        using var http = new HttpClient();
        var chat = new ResilientChatClient(http, first.BaseUrl, Apis.Chat, null, StepLog.Silent) { StreamTextTo = new StringWriter() };

        JsonObject completion = await chat.PostAsync(StreamWire.Request(user));

        JsonNode message = completion["choices"]![0]!["message"]!;
        Assert.Equal("Let me check.", (string)message["content"]!);
        Assert.Equal("{\"city\":\"Oslo\"}", (string)message["tool_calls"]![0]!["function"]!["arguments"]!);
        Assert.Equal("tool_calls", (string)completion["choices"]![0]!["finish_reason"]!);
    }

    [Fact]
    public async Task BodyBrokenOffAfterAFinishReason_IsStillAnError_NotAWholeReply()
    {
        // A chunked body whose last chunk never comes: the connection broke, which is not a clean end.
        string sse = StreamWire.Sse([StreamWire.Calls(StreamWire.Fragment(0, "call_c", "get_weather", "{\"city\":\"Oslo\"}")), StreamWire.Finish("tool_calls")]);
        using var server = new HeaderCapturingServer(Encoding.UTF8.GetBytes(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
            $"{Encoding.UTF8.GetByteCount(sse):x}\r\n{sse}\r\n"));

        CliResult run = await App.RunAsync("--stream", "Oslo?", "--base-url", server.BaseUrl);

        Assert.Equal(1, run.ExitCode);
        Assert.StartsWith("error: the stream was cut off after 2 events, before data: [DONE]", run.Stderr.TrimEnd().Split('\n').Last());
        Assert.DoesNotContain("Step 3", run.Stderr);
    }

    [Fact]
    public async Task ConnectionCutMidStream_EndsWithOneErrorLineAndExit1()
    {
        // Headers and the first event, in a chunked body that never gets its last chunk: the server went away.
        string sse = StreamWire.Sse([StreamWire.Text("Mild")]);
        using var server = new HeaderCapturingServer(Encoding.UTF8.GetBytes(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
            $"{Encoding.UTF8.GetByteCount(sse):x}\r\n{sse}\r\n"));

        CliResult run = await App.RunAsync("--stream", "Hello?", "--base-url", server.BaseUrl);

        Assert.Equal(1, run.ExitCode);
        string line = run.Stderr.TrimEnd().Split('\n').Last();
        Assert.StartsWith("error: the stream was cut off after 1 event, before data: [DONE]", line);
        Assert.DoesNotContain("   at ", run.Stderr);
        Assert.Equal("Mild" + Environment.NewLine, run.Stdout); // what had arrived was shown, then the line was ended
    }

    [Fact]
    public async Task EventStreamWithCrLfCommentsAndMultiLineData_IsReadOverHttp()
    {
        string body =
            ": ping\r\n\r\n" +
            "data:{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\r\n" +
            "data: \"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Sunny in Nice.\"},\"finish_reason\":\"stop\"}]}\r\n\r\n" +
            ": ping\r\n\r\n" +
            "data: [DONE]\r\n\r\n";
        using var server = new HeaderCapturingServer(Encoding.UTF8.GetBytes(
            $"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\nConnection: close\r\n\r\n{body}"));

        CliResult run = await App.RunAsync("--stream", "Nice?", "--base-url", server.BaseUrl);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("Sunny in Nice." + Environment.NewLine, run.Stdout);
    }

    [Fact]
    public async Task ServerAnsweringJsonToAStreamRequest_StillPrintsTheAnswerOnce()
    {
        using var server = new HeaderCapturingServer(Wire.Completion(Wire.Text("Hi.")));

        CliResult run = await App.RunAsync("--stream", "Hello?", "--base-url", server.BaseUrl);

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("Hi." + Environment.NewLine, run.Stdout);
    }

    [Fact]
    public async Task Trace_ShowsEachEventAsItWasOnTheWire_AndTheAssembledCompletion()
    {
        CliResult run = await App.RunAsync("--stream", "--trace");

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("--- HTTP 200: 9 server-sent events\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"", run.Stderr);
        Assert.Contains("\ndata: [DONE]\n--- The completion assembled from the events\n{", run.Stderr);
        Assert.Equal(London + Environment.NewLine, run.Stdout);
    }

    [Fact]
    public async Task RecordedStream_KeepsEveryEvent_AndReplaysToTheSameAnswer()
    {
        using var dir = new TempDir();
        Cassette original = Cassette.Load(Repo.Cassette("weather-stream.json"));
        await using ReplayServer live = ReplayServer.Start(original);

        CliResult recorded = await App.RunAsync("--stream", "--base-url", live.BaseUrl, "--record", dir.File("new.json"));
        CliResult replayed = await App.RunAsync("--stream", "--replay", dir.File("new.json"));

        Assert.True(recorded.ExitCode == 0, recorded.ToString());
        Assert.True(replayed.ExitCode == 0, replayed.ToString());
        Assert.Equal(recorded.Stdout, replayed.Stdout);
        Cassette cassette = Cassette.Load(dir.File("new.json"));
        for (int i = 0; i < 2; i++)
        {
            Assert.Null(cassette.Interactions[i].ResponseBody);
            Assert.True(JsonNode.DeepEquals(original.Interactions[i].ResponseEvents, cassette.Interactions[i].ResponseEvents));
        }
    }

    /// <summary>The messages of the second request in a recorded run: the history that steps 3 and 4 built.</summary>
    static JsonArray SecondRequestMessages(string recording) =>
        Cassette.Load(recording).Interactions[1].RequestBody!["messages"]!.AsArray();

    /// <summary>One screen for stdout and stderr, written from the flow and from the waiting line's timer.</summary>
    /// <summary>stdout for the gate test: completes FirstText with what had been printed when text first came, and
    /// notes how many events the server had sent by then.</summary>
    sealed class FirstTextSignal(Func<int> eventsSent) : StringWriter
    {
        readonly TaskCompletionSource<string> first = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<string> FirstText => first.Task;

        public int EventsSentAtFirstText { get; private set; } = -1;

        public override void Write(string? value)
        {
            base.Write(value);
            if (!string.IsNullOrEmpty(value) && !first.Task.IsCompleted)
            {
                EventsSentAtFirstText = eventsSent();
                first.TrySetResult(ToString());
            }
        }
    }
}

/// <summary>How the replay server sends a streamed interaction, and how cassettes hold one.</summary>
public class StreamReplayServerTests
{
    static readonly JsonObject Request = StreamWire.Request(Wire.User("Hello?"));

    static Cassette HelloStream(int delayMs = 0) => Wire.Cassette(StreamWire.Exchange(Request, StreamWire.Text("Hi"), StreamWire.Text("."), "[DONE]") with
    {
        EventDelay = TimeSpan.FromMilliseconds(delayMs),
    });

    [Fact]
    public async Task StreamedInteraction_IsSentAsTextEventStream_OneDataLinePerEvent()
    {
        await using ReplayServer server = ReplayServer.Start(HelloStream());
        using var http = new HttpClient();
        using var content = new StringContent(Request.ToJsonString(), Encoding.UTF8, "application/json");

        using HttpResponseMessage response = await http.PostAsync(server.BaseUrl + "/chat/completions", content);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        Assert.True(response.Headers.TransferEncodingChunked);
        // The body ends (its last chunk), so reading it to the end finishes; should it not, fail rather than hang.
        string body = await response.Content.ReadAsStringAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(StreamWire.Sse([StreamWire.Text("Hi"), StreamWire.Text("."), "[DONE]"]), body);
    }

    [Fact]
    public async Task StreamedInteraction_MatchesOnlyARequestAskingForAStream()
    {
        await using ReplayServer server = ReplayServer.Start(HelloStream());

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", Wire.Request(Wire.User("Hello?")));

        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("$.stream: expected true, got nothing", (string)body!["error"]!["message"]!);
    }

    [Fact]
    public async Task StreamOptionsWithoutStream_IsRejectedWith400InTheApisWords()
    {
        JsonObject request = StreamWire.Request(Wire.User("Hello?"));
        request.Remove("stream");
        // The cassette holds exactly this request, so only the rule can reject it.
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(request, Wire.Completion(Wire.Text("unreachable")))));

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", request);

        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("The 'stream_options' parameter is only allowed when 'stream' is enabled.", (string)body!["error"]!["message"]!);
        Assert.Equal("stream_options", (string)body["error"]!["param"]!);
        Assert.Equal("invalid_request_error", (string)body["error"]!["type"]!);
    }

    [Fact]
    public async Task StreamedReplies_KeepTheConnectionAlive()
    {
        await using ReplayServer server = ReplayServer.Start(Cassette.Load(Repo.Cassette("two-cities-stream.json")));
        using var http = new HttpClient();

        for (int run = 0; run < 2; run++)
        {
            var chat = new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, StepLog.Silent) { StreamTextTo = TextWriter.Null };
            await ToolCalling.RunAsync(chat, Wire.Model, "What's the weather in London and Paris right now?", ProgramTools.Create(), new FlowOptions(), CancellationToken.None);
        }

        Assert.Equal(1, server.ConnectionsAccepted); // four streamed replies, each body ended by its last chunk
    }

    [Fact]
    public async Task EventDelay_IsWaitedBeforeEachEvent()
    {
        await using ReplayServer server = ReplayServer.Start(HelloStream(delayMs: 60));
        using var http = new HttpClient();
        var chat = new ResilientChatClient(http, server.BaseUrl, Apis.Chat, null, StepLog.Silent) { StreamTextTo = TextWriter.Null };
        var clock = System.Diagnostics.Stopwatch.StartNew();

        await ToolCalling.RunAsync(chat, Wire.Model, "Hello?", ProgramTools.Create(), new FlowOptions(), CancellationToken.None);

        Assert.True(clock.ElapsedMilliseconds >= 150, $"three events at 60 ms each took {clock.ElapsedMilliseconds} ms"); // a lower bound only
    }

    [Fact]
    public void StreamedCassette_SavesAndLoadsItsEventsAndDelayUnchanged()
    {
        using var dir = new TempDir();

        Interaction loaded = Assert.Single(Cassette.Load(HelloStream(delayMs: 25).Save(dir)).Interactions);

        Assert.True(JsonNode.DeepEquals(new JsonArray(StreamWire.Text("Hi"), StreamWire.Text("."), "[DONE]"), loaded.ResponseEvents));
        Assert.Equal(TimeSpan.FromMilliseconds(25), loaded.EventDelay);
        Assert.Null(loaded.ResponseBody);
        JsonNode response = JsonNode.Parse(File.ReadAllText(dir.File("cassette.json")))!["interactions"]![0]!["response"]!;
        Assert.Equal(["status", "event_delay_ms", "events"], response.AsObject().Select(p => p.Key));
    }

    [Theory]
    [InlineData("\"events\":[\"[DONE]\"],\"body\":{}", "has \"events\" and a \"body\" or \"text\": a response is one or the other")]
    [InlineData("\"events\":[\"[DONE]\"],\"fault\":{\"drip_bytes\":5}", "fault: drip_bytes and truncate_after_bytes apply to a body")]
    [InlineData("\"events\":[\"[DONE]\"],\"event_delay_ms\":-1", "\"event_delay_ms\" must be a whole number from 0")]
    [InlineData("\"body\":{},\"event_delay_ms\":5", "has \"event_delay_ms\" but no \"events\"")]
    public async Task StreamedResponseFieldsThatDoNotFit_AreRefusedNamingTheProblem(string response, string expected)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("bad.json"), $$$"""{"interactions":[{"request":{"body":{}},"response":{"status":200,{{{response}}}}}]}""");

        CliResult run = await App.RunAsync("--replay", dir.File("bad.json"));

        Assert.Equal(2, run.ExitCode);
        Assert.Contains($"interaction 1's response {expected}", run.Stderr);
    }

    [Fact]
    public async Task CassetteEventThatIsNeitherAnObjectNorAString_IsRefusedNamingTheInteraction()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("bad.json"), """
            {"interactions":[{"request":{"body":{}},"response":{"status":200,"events":[42]}}]}
            """);

        CliResult run = await App.RunAsync("--replay", dir.File("bad.json"));

        Assert.Equal(2, run.ExitCode);
        Assert.Contains("interaction 1's response \"events\" must be an array, each event a JSON object or a string such as \"[DONE]\"", run.Stderr);
    }
}

/// <summary>Retries and streams: retried while nothing has arrived, never once text is on the screen.</summary>
public class StreamRetryTests
{
    static readonly JsonObject Hello = StreamWire.Request(Wire.User("Hello?"));

    static readonly Interaction Answer = StreamWire.Exchange(Hello, StreamWire.Text("Hi"), StreamWire.Text("."), StreamWire.Finish("stop"), "[DONE]");

    [Fact]
    public async Task StreamCutBeforeItsFirstEvent_IsRetried_LikeAConnectionError()
    {
        var stderr = new StringWriter();
        var stdout = new StringWriter();
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Answer with { Fault = new Fault(CloseAfterBytes: 0) }, Answer));
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, server.BaseUrl, stdout, stderr);

        JsonObject completion = await chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None);

        Assert.Equal("Hi.", (string)completion["choices"]![0]!["message"]!["content"]!);
        Assert.StartsWith("retry 1/2 after a connection error (", Assert.Single(RetryLines(stderr)));
        Assert.Equal("Hi." + Environment.NewLine, stdout.ToString());
    }

    [Fact]
    public async Task StreamCutAfterTextWasPrinted_IsAnErrorLine_NotARetryThatWouldPrintItTwice()
    {
        var stderr = new StringWriter();
        var stdout = new StringWriter();
        int firstEvent = Encoding.UTF8.GetByteCount(StreamWire.Sse([StreamWire.Text("Hi")]));
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Answer with { Fault = new Fault(CloseAfterBytes: firstEvent + 10) }, Answer));
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, server.BaseUrl, stdout, stderr);

        var e = await Assert.ThrowsAsync<FlowException>(() => chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None));

        Assert.StartsWith("the stream was cut off after 1 event, before data: [DONE] (", e.Message);
        Assert.Empty(RetryLines(stderr));
        Assert.Equal("Hi" + Environment.NewLine, stdout.ToString());
        Assert.Equal(1, chat.Requests);
    }

    [Fact]
    public async Task StreamCutAfterItsFirstEvent_IsRecordedWithTheEventsThatCame()
    {
        int firstEvent = Encoding.UTF8.GetByteCount(StreamWire.Sse([StreamWire.Text("Hi")]));
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Answer with { Fault = new Fault(CloseAfterBytes: firstEvent + 10) }, Answer));
        using var http = new HttpClient();
        var recorder = new Recorder(server.BaseUrl);
        ResilientChatClient chat = Client(http, server.BaseUrl, new StringWriter(), new StringWriter(), recorder: recorder);

        await Assert.ThrowsAsync<FlowException>(() => chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None));

        Interaction kept = Assert.Single(recorder.Interactions);
        Assert.Equal("Hi", (string?)Assert.Single(kept.ResponseEvents!)!["choices"]![0]!["delta"]!["content"]);
    }

    [Fact]
    public async Task StreamCutBeforeItsFirstEvent_IsNotRecorded_OnlyTheRetryThatAnswered()
    {
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Answer with { Fault = new Fault(CloseAfterBytes: 0) }, Answer));
        using var http = new HttpClient();
        var recorder = new Recorder(server.BaseUrl);
        ResilientChatClient chat = Client(http, server.BaseUrl, new StringWriter(), new StringWriter(), recorder: recorder);

        await chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None);

        Interaction kept = Assert.Single(recorder.Interactions);
        Assert.Equal(Answer.ResponseEvents!.Count, kept.ResponseEvents!.Count);
    }

    [Fact]
    public async Task TimeoutInTheMiddleOfAStream_IsAnErrorLine_NotARetry()
    {
        var clock = new ManualClock();
        var stderr = new StringWriter();
        var stdout = new PrintedSignal();
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Answer));
        server.BeforeStreamEvent = position => position == 0 ? Task.CompletedTask : new TaskCompletionSource().Task; // stalls after "Hi"
        using var http = new HttpClient();
        ResilientChatClient chat = Client(http, server.BaseUrl, stdout, stderr, clock);

        Task<JsonObject> post = chat.PostAsync(Hello.DeepClone().AsObject(), CancellationToken.None);
        await stdout.Printed.WaitAsync(TimeSpan.FromSeconds(10)); // a bound, not a synchronisation
        clock.Advance(TimeSpan.FromSeconds(60));
        var e = await Assert.ThrowsAsync<FlowException>(() => post.WaitAsync(TimeSpan.FromSeconds(10)));

        Assert.Equal(
            "the stream did not end within 60.0 s (--timeout), after 1 event. The reply is incomplete, so none of it is used; raise --timeout if the model needs longer.",
            e.Message);
        Assert.Empty(RetryLines(stderr));
    }

    static ResilientChatClient Client(
        HttpClient http, string baseUrl, TextWriter stdout, TextWriter stderr, ManualClock? clock = null, Recorder? recorder = null) =>
        new(http, baseUrl, Apis.Chat, null, new StepLog(stderr), recorder)
        {
            Retries = new RetryPolicy { MaxRetries = 2, Delay = new NotedWaits().Delay, Time = clock ?? (TimeProvider)TimeProvider.System },
            StreamTextTo = stdout,
        };

    static string[] RetryLines(StringWriter stderr) =>
        [.. stderr.ToString().Split('\n').Where(line => line.StartsWith("retry ", StringComparison.Ordinal))];
}

/// <summary>
/// Hostile streams: the bundled streamed replies, damaged at random (seeded, so every run is the same) in their bytes
/// or in one event's JSON, and read in reads of random sizes, through the whole flow. Each case ends in an answer or in
/// one clear FlowException line, never in another exception or a hang.
/// </summary>
public class StreamFuzzTests
{
    const int Cases = 1000;
    const int Seed = 20251126;

    [Theory]
    [InlineData("chat", "weather-stream.json", "two-cities-stream.json")]
    [InlineData("responses", "responses-weather-stream.json")]
    [InlineData("anthropic", "anthropic-weather-stream.json")]
    public async Task SeededFuzzOfStreamedReplies_EndsInAnAnswerOrOneClearError(string apiName, params string[] names)
    {
        Api api = Api.Named(apiName);
        Cassette[] cassettes = [.. names.Select(name => Cassette.Load(Repo.Cassette(name)))];
        var random = new Random(Seed);
        int answered = 0, refused = 0;

        for (int i = 0; i < Cases; i++)
        {
            Cassette cassette = cassettes[random.Next(cassettes.Length)];
            var server = new DamagedStreamServer(cassette, damagedTurn: random.Next(2), random, named: api != Apis.Chat);
            using var http = new HttpClient(server);
            var chat = new ResilientChatClient(http, "http://fuzz.invalid/v1", api, null, StepLog.Silent)
            {
                Retries = new RetryPolicy { Delay = new NotedWaits().Delay, Random = random },
                StreamTextTo = TextWriter.Null,
            };
            string question = cassette.FirstQuestion(api.HistoryField)!;
            Task<string> run = api.RunAsync(chat, Wire.Model, question, ProgramTools.Create(), new FlowOptions(), CancellationToken.None);
            if (await Fuzz.AnsweredAsync(run, i, () => server.Damage, () => server.Sent))
                answered++;
            else
                refused++;
        }

        Assert.True(answered > Cases / 20 && refused > Cases / 20, $"{answered} answered, {refused} refused");
    }

    /// <summary>Answers each request with the cassette's events for that turn, damaging those of one turn once.</summary>
    sealed class DamagedStreamServer(Cassette cassette, int damagedTurn, Random random, bool named) : HttpMessageHandler
    {
        bool damaged;

        public string Damage { get; private set; } = "none yet";
        public string Sent { get; private set; } = "";

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            JsonNode sent = JsonNode.Parse(await request.Content!.ReadAsStringAsync(cancellationToken))!;
            int turn = ((sent["messages"] ?? sent["input"]) as JsonArray)!.Count == 1 ? 0 : 1;
            JsonArray events = cassette.Interactions[turn].ResponseEvents!;
            byte[] body = Encoding.UTF8.GetBytes(Sse(events));
            if (turn == damagedTurn && !damaged)
            {
                damaged = true;
                if (random.Next(2) == 0)
                {
                    (body, Damage) = Mutations.OfBytesNamed(body, random);
                }
                else
                {
                    // One event's JSON damaged, the others as they were.
                    int at = random.Next(events.Count - 1);
                    (byte[] damagedEvent, string what) = Mutations.OfJsonNamed(events[at]!, random);
                    string sse = Sse(events.Take(at)) + $"data: {Encoding.UTF8.GetString(damagedEvent)}\n\n" + Sse(events.Skip(at + 1));
                    (body, Damage) = (Encoding.UTF8.GetBytes(sse), $"event {at + 1}: {what}");
                }
            }
            Sent = Encoding.UTF8.GetString(body);
            int[] reads = [.. Enumerable.Range(0, 4).Select(_ => 1 + random.Next(64))];
            var content = new StreamContent(new ChoppedStream(body, reads));
            content.Headers.ContentType = new MediaTypeHeaderValue("text/event-stream");
            return new HttpResponseMessage(HttpStatusCode.OK) { Content = content };
        }

        string Sse(IEnumerable<JsonNode?> events) => string.Concat(events.Select(e => ServerSentEvents.Format(e, named)));
    }
}

/// <summary>The built program as a separate process, with --stream.</summary>
public class StreamProcessTests
{
    [Fact]
    public async Task Program_WithStream_PrintsTheLondonAnswerAndStepsOneToFour()
    {
        using System.Diagnostics.Process process = App.Start("--stream");
        string stdout = await process.StandardOutput.ReadToEndAsync();
        string stderr = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();

        Assert.True(process.ExitCode == 0, stderr);
        Assert.Equal("It's currently +18°C and partly cloudy in London.\n", stdout);
        foreach (int step in new[] { 1, 2, 3, 4 })
            Assert.Contains($"Step {step}:", stderr);
    }
}

/// <summary>Builders for streamed replies: chunks, tool-call fragments, and the event stream they make.</summary>
static class StreamWire
{
    public static JsonObject Chunk(JsonObject delta, string? finishReason = null) => new()
    {
        ["id"] = "chatcmpl-stream",
        ["object"] = "chat.completion.chunk",
        ["created"] = 1764086400,
        ["model"] = "gpt-4o-mini-2024-07-18",
        ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["delta"] = delta, ["logprobs"] = null, ["finish_reason"] = finishReason }),
    };

    public static JsonObject Text(string text) => Chunk(new JsonObject { ["content"] = text });

    public static JsonObject Calls(params JsonObject[] fragments) => Chunk(new JsonObject { ["tool_calls"] = new JsonArray([.. fragments]) });

    public static JsonObject Finish(string reason) => Chunk([], reason);

    public static JsonObject Usage(int prompt, int completion)
    {
        JsonObject chunk = Chunk([]);
        chunk["choices"] = new JsonArray();
        chunk["usage"] = new JsonObject { ["prompt_tokens"] = prompt, ["completion_tokens"] = completion, ["total_tokens"] = prompt + completion };
        return chunk;
    }

    /// <summary>A tool-call fragment; id, type and name as OpenAI sends them, in a call's first fragment only.</summary>
    public static JsonObject Fragment(int? index, string? id = null, string? name = null, string? arguments = null)
    {
        var fragment = new JsonObject();
        if (index is int i)
            fragment["index"] = i;
        if (id is not null)
            fragment["id"] = id;
        if (name is not null)
            fragment["type"] = "function";
        var function = new JsonObject();
        if (name is not null)
            function["name"] = name;
        if (arguments is not null)
            function["arguments"] = arguments;
        fragment["function"] = function;
        return fragment;
    }

    /// <summary>A request as the client sends it with --stream.</summary>
    public static JsonObject Request(params JsonObject[] messages)
    {
        JsonObject request = Wire.Request(messages);
        request["stream"] = true;
        request["stream_options"] = new JsonObject { ["include_usage"] = true };
        return request;
    }

    public static Interaction Exchange(JsonObject request, params JsonNode[] events) =>
        new("POST", "/chat/completions", request.DeepClone(), 200, null) { ResponseEvents = new JsonArray([.. events.Select(e => e.DeepClone())]) };

    /// <summary>The events as the replay server writes them: `data: …` and a blank line each.</summary>
    public static string Sse(IEnumerable<JsonNode?> events) =>
        string.Concat(events.Select(e => $"data: {(e is JsonObject chunk ? Json.Compact(chunk) : (string)e!)}\n\n"));

    /// <summary>The completion assembled from these events, with [DONE] added.</summary>
    public static Task<JsonObject> AssembleAsync(TextWriter output, params JsonNode[] events) =>
        new StreamedReply(output).ReadAsync(new MemoryStream(Encoding.UTF8.GetBytes(Sse([.. events, "[DONE]"]))), [], null, CancellationToken.None);

    public static async Task<JsonObject> MessageAsync(params JsonNode[] events) =>
        (await AssembleAsync(TextWriter.Null, events))["choices"]![0]!["message"]!.AsObject();
}

/// <summary>A stream that hands out its bytes in reads of the given sizes, in turn, as a network might.</summary>
sealed class ChoppedStream(byte[] bytes, params int[] sizes) : Stream
{
    int position, turn;

    public override int Read(Span<byte> buffer)
    {
        int size = Math.Min(Math.Min(sizes[turn++ % sizes.Length], buffer.Length), bytes.Length - position);
        if (size == 0 && position < bytes.Length && buffer.Length > 0)
            return Read(buffer); // a read of 0 would mean the end: skip a size of 0
        bytes.AsSpan(position, size).CopyTo(buffer);
        position += size;
        return size;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Read(buffer.Span));

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => position; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
