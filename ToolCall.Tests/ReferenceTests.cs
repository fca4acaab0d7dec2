using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using Xunit;

namespace ToolCall.Tests;

/// <summary>Running one tool call: what goes into its tool message.</summary>
public class ToolCallTests
{
    static readonly Tool[] Tools = ProgramTools.Create();

    [Fact]
    public void ValidCall_ReturnsTheFunctionsResult() =>
        Assert.Equal(Wire.Weather("Paris"), ToolRuns.Content("get_weather", """{"city":"Paris"}""", Tools));

    [Fact]
    public void UnknownFunction_NamesItAndTheFunctionsThatExist() =>
        Assert.Equal("Error: unknown function 'get_time'. Available functions: get_weather, get_forecast.", ToolRuns.Content("get_time", "{}", Tools));

    [Fact]
    public void MissingRequiredArgument_NamesItAndItsType() =>
        Assert.Equal("Error: get_weather: missing required argument 'city' (a string).", ToolRuns.Content("get_weather", "{}", Tools));

    [Fact]
    public void WrongTypedArgument_NamesTheExpectedAndTheActualType() =>
        Assert.Equal("Error: get_weather: argument 'city' must be a string, not a number.", ToolRuns.Content("get_weather", """{"city":42}""", Tools));

    [Fact]
    public void ArgumentsThatAreNotJson_SayWhatToSend()
    {
        string result = ToolRuns.Content("get_weather", """{"city": "Par""", Tools);

        Assert.StartsWith("Error: the arguments for get_weather are not valid JSON (", result);
        Assert.EndsWith("Send a JSON object that matches the function's parameters.", result);
    }

    [Fact]
    public void ArgumentsThatAreJsonButNotAnObject_AreRefused() =>
        Assert.Equal("Error: the arguments for get_weather must be a JSON object, not an array.", ToolRuns.Content("get_weather", """["Paris"]""", Tools));

    [Fact]
    public void EmptyArgumentsString_MeansNoArguments() =>
        Assert.Equal("Error: get_weather: missing required argument 'city' (a string).", ToolRuns.Content("get_weather", "", Tools));

    [Fact]
    public void Forecast_TakesItsOptionalUnitAndArrayOfDetails() =>
        Assert.Equal("2-day forecast for Oslo: day 1 64°F partly cloudy, wind 12 km/h; day 2 66°F light rain, wind 12 km/h.",
            ToolRuns.Content("get_forecast", """{"city":"Oslo","days":2,"unit":"fahrenheit","include":["wind"]}""", Tools));

    [Fact]
    public void Forecast_AcceptsAWholeNumberWrittenWithAFraction() =>
        Assert.Equal("1-day forecast for Oslo: day 1 +18°C partly cloudy.", ToolRuns.Content("get_forecast", """{"city":"Oslo","days":1.0}""", Tools));

    [Fact]
    public void Forecast_WithoutTheOptionalUnit_UsesCelsius() =>
        Assert.Equal("1-day forecast for Oslo: day 1 +18°C partly cloudy.", ToolRuns.Content("get_forecast", """{"city":"Oslo","days":1}""", Tools));

    [Theory]
    [InlineData("""{"city":"Oslo","days":2,"unit":"kelvin"}""", "Error: get_forecast: argument 'unit' must be one of [\"celsius\",\"fahrenheit\"], not \"kelvin\".")]
    [InlineData("""{"city":"Oslo","days":2.5}""", "Error: get_forecast: argument 'days' must be an integer, not a number.")]
    [InlineData("""{"city":"Oslo","days":2,"include":["snow"]}""", "Error: get_forecast: argument 'include[0]' must be one of [\"wind\",\"humidity\",\"precipitation\"], not \"snow\".")]
    [InlineData("""{"city":"Oslo","days":9}""", "Error: get_forecast failed: days must be from 1 to 7, not 9")]
    public void Forecast_RejectsWhatItsSchemaOrItsCodeRejects(string arguments, string expected) =>
        Assert.Equal(expected, ToolRuns.Content("get_forecast", arguments, Tools));

    [Fact]
    public void NestedSchemas_AreCheckedThroughObjectsArraysAndEnums()
    {
        var schema = JsonNode.Parse("""
            {"type":"object","required":["days"],"properties":{
              "days":{"type":"array","items":{"type":"object","required":["unit"],"properties":{"unit":{"type":"string","enum":["c","f"]}}}},
              "note":{"type":["string","null"]}}}
            """)!.AsObject();
        Tool[] tools = [ArgumentChecks.Checked(new Tool("forecast", "", schema, _ => "ok"))];

        Assert.Equal("ok", ToolRuns.Content("forecast", """{"days":[{"unit":"c"}],"note":null}""", tools));
        Assert.Equal("Error: forecast: argument 'days[1].unit' must be one of [\"c\",\"f\"], not \"k\".",
            ToolRuns.Content("forecast", """{"days":[{"unit":"c"},{"unit":"k"}]}""", tools));
        Assert.Equal("Error: forecast: missing required argument 'days[0].unit' (a string).",
            ToolRuns.Content("forecast", """{"days":[{}]}""", tools));
        Assert.Equal("Error: forecast: argument 'note' must be a string or null, not a number.",
            ToolRuns.Content("forecast", """{"days":[],"note":3}""", tools));
    }
}

/// <summary>The bundled cassettes and this project's requests, held to the official OpenAPI spec
/// (openai/openai-openapi: CreateChatCompletionRequest, CreateChatCompletionResponse, and for streams
/// CreateChatCompletionStreamResponse): the required fields and their types, written out here because the spec itself
/// is not vendored.</summary>
public class WireFidelityTests
{
    /// <summary>Every cassette in cassettes/ and its folders, as a path relative to cassettes/.</summary>
    public static TheoryData<string> BundledCassettes() => [.. CassetteNames()];

    /// <summary>The Chat Completions cassettes that hold what the API sends: all but cassettes/quirks/, whose point is to
    /// break the spec, and the other APIs' (see ResponsesWireFidelityTests and AnthropicWireFidelityTests).</summary>
    public static TheoryData<string> ConformingCassettes() => [.. ChatCassetteNames().Where(name => !name.StartsWith("quirks", StringComparison.Ordinal))];

    /// <summary>Every Chat Completions cassette, quirks included.</summary>
    public static TheoryData<string> ChatCassettes() => [.. ChatCassetteNames()];

    /// <summary>OpenAI's Chat Completions cassettes: those of other providers (cassettes/reasoning/deepseek-*,
    /// gemini-*) hold what those providers send, which OpenAI's spec does not describe (DeepSeek sends no `refusal`,
    /// Gemini no `logprobs`, nor an `index` on a streamed call); ProviderWireTests holds them to their providers' docs.</summary>
    static IEnumerable<string> ChatCassetteNames() =>
        CassetteNames().Where(name => Cassette.Load(Repo.Cassette(name)).Interactions.All(i => i.Path == "/chat/completions"))
            .Where(name => !Path.GetFileName(name).StartsWith("deepseek-", StringComparison.Ordinal) && !Path.GetFileName(name).StartsWith("gemini-", StringComparison.Ordinal));

    static IEnumerable<string> CassetteNames() =>
        Directory.GetFiles(Path.Combine(Repo.Root, "cassettes"), "*.json", SearchOption.AllDirectories)
            .Select(path => Path.GetRelativePath(Path.Combine(Repo.Root, "cassettes"), path)).Order();

    [Theory]
    [MemberData(nameof(BundledCassettes))]
    public void BundledCassette_SaysWhereItCameFrom_AndNeverCallsHandWrittenDataRecorded(string name)
    {
        string source = Cassette.Load(Repo.Cassette(name)).Source;

        Assert.False(string.IsNullOrWhiteSpace(source), $"{name} has no source");
        Assert.Contains("not recorded from a live API", source);
        Assert.DoesNotContain("Recorded by", source);
    }

    [Theory]
    [MemberData(nameof(ConformingCassettes))]
    public void BundledCassette_Requests_HaveWhatCreateChatCompletionRequestRequires(string name)
    {
        foreach (Interaction interaction in Cassette.Load(Repo.Cassette(name)).Interactions)
        {
            JsonObject request = interaction.RequestBody!.AsObject();
            Assert.Equal(JsonValueKind.String, request["model"]!.GetValueKind());
            JsonArray messages = request["messages"]!.AsArray();
            Assert.NotEmpty(messages); // minItems: 1
            foreach (JsonNode? message in messages)
                AssertRequestMessage(message!.AsObject());
            foreach (JsonNode? tool in request["tools"]!.AsArray())
            {
                Assert.Equal("function", (string)tool!["type"]!);
                Assert.Matches("^[a-zA-Z0-9_-]{1,64}$", (string)tool["function"]!["name"]!);
                Assert.Equal("object", (string)tool["function"]!["parameters"]!["type"]!);
            }
            // A streamed response answers a request with "stream": true, and only such a request has stream_options.
            bool streamed = interaction.ResponseEvents is not null;
            Assert.Equal(streamed, request["stream"]?.GetValueKind() == JsonValueKind.True);
            if (request["stream_options"] is JsonNode streamOptions)
            {
                Assert.True(streamed, "stream_options without stream: true");
                Assert.Equal(JsonValueKind.True, streamOptions["include_usage"]!.GetValueKind());
            }
        }
    }

    [Theory]
    [MemberData(nameof(ConformingCassettes))]
    public void BundledCassette_Responses_HaveWhatCreateChatCompletionResponseRequires(string name)
    {
        foreach (Interaction interaction in Cassette.Load(Repo.Cassette(name)).Interactions.Where(i => i.Status == 200 && i.ResponseEvents is null))
        {
            JsonObject response = interaction.ResponseBody!.AsObject();
            Assert.Equal(JsonValueKind.String, response["id"]!.GetValueKind());
            Assert.Equal("chat.completion", (string)response["object"]!);
            Assert.Equal(JsonValueKind.Number, response["created"]!.GetValueKind());
            Assert.Equal(JsonValueKind.String, response["model"]!.GetValueKind());
            foreach (JsonNode? choice in response["choices"]!.AsArray())
            {
                Assert.Equal(JsonValueKind.Number, choice!["index"]!.GetValueKind());
                Assert.True(choice.AsObject().ContainsKey("logprobs"), "logprobs is required (nullable)");
                Assert.Contains((string)choice["finish_reason"]!, new[] { "stop", "length", "tool_calls", "content_filter", "function_call" });
                JsonObject message = choice["message"]!.AsObject();
                Assert.Equal("assistant", (string)message["role"]!);
                Assert.True(message.ContainsKey("content") && message.ContainsKey("refusal"), "content and refusal are required (nullable)");
                // A reply cut off by the output limit (max-tokens.json) may end in the middle of its arguments.
                foreach (JsonNode? call in message["tool_calls"]?.AsArray() ?? [])
                    AssertToolCall(call!.AsObject(), complete: (string)choice["finish_reason"]! != "length");
            }
            if (response["usage"] is JsonObject usage)
                AssertUsage(usage);
        }
    }

    [Theory]
    [MemberData(nameof(ChatCassettes))]
    public void BundledCassette_StreamedResponses_HaveWhatCreateChatCompletionStreamResponseRequires(string name)
    {
        foreach (Interaction interaction in Cassette.Load(Repo.Cassette(name)).Interactions.Where(i => i.ResponseEvents is not null))
        {
            JsonArray events = interaction.ResponseEvents!;
            // The stream's end marker, once, last; the quirk of quirks/stream-without-done.json is that it never comes.
            bool done = name != Path.Combine("quirks", "stream-without-done.json");
            if (done)
                Assert.Equal("[DONE]", (string)events[^1]!);
            JsonObject[] chunks = [.. events.SkipLast(done ? 1 : 0).Select(e => Assert.IsType<JsonObject>(e))];
            Assert.NotEmpty(chunks);
            foreach (JsonObject chunk in chunks)
            {
                Assert.Equal(JsonValueKind.String, chunk["id"]!.GetValueKind());
                Assert.Equal("chat.completion.chunk", (string)chunk["object"]!);
                Assert.Equal(JsonValueKind.Number, chunk["created"]!.GetValueKind());
                Assert.Equal(JsonValueKind.String, chunk["model"]!.GetValueKind());
                Assert.Equal((string)chunks[0]["id"]!, (string)chunk["id"]!);                  // "Each chunk has the same ID."
                Assert.Equal((long)chunks[0]["created"]!, (long)chunk["created"]!);            // "Each chunk has the same timestamp."
                foreach (JsonNode? choice in chunk["choices"]!.AsArray())
                {
                    Assert.Equal(JsonValueKind.Number, choice!["index"]!.GetValueKind());
                    Assert.True(choice.AsObject().ContainsKey("finish_reason"), "finish_reason is required (nullable)");
                    if (choice["finish_reason"] is JsonNode finishReason)
                        Assert.Contains((string)finishReason!, new[] { "stop", "length", "tool_calls", "content_filter", "function_call" });
                    AssertDelta(choice["delta"]!.AsObject());
                }
                if (chunk["usage"] is JsonObject usage)
                    AssertUsage(usage);
            }
            // With stream_options.include_usage, the usage comes in one last chunk whose choices are empty.
            Assert.Empty(chunks[^1]["choices"]!.AsArray());
            Assert.IsType<JsonObject>(chunks[^1]["usage"]);
            Assert.All(chunks.SkipLast(1), chunk => Assert.NotEmpty(chunk["choices"]!.AsArray()));
        }
    }

    [Fact]
    public void BenchCassette_ForMicrosoftExtensionsAI_IsTwoCitiesWithAdditionalPropertiesFalse_AndSaysItIsHandWritten()
    {
        // bench/ replays this variant for Microsoft.Extensions.AI, whose adapter always adds the field: it must stay
        // two-cities.json otherwise, or the bench would compare the clients on different conversations.
        Cassette variant = Cassette.Load(Path.Combine(Repo.Root, "bench", "cassettes", "two-cities-meai.json"));
        Cassette original = Cassette.Load(Repo.Cassette("two-cities.json"));

        Assert.Contains("not recorded from a live API", variant.Source);
        Assert.Equal(original.Interactions.Count, variant.Interactions.Count);
        foreach ((Interaction changed, Interaction recorded) in variant.Interactions.Zip(original.Interactions))
        {
            JsonNode request = changed.RequestBody!.DeepClone();
            foreach (JsonNode? tool in request["tools"]!.AsArray())
                Assert.Equal(JsonValueKind.False, tool!["function"]!["parameters"]!.AsObject()["additionalProperties"]!.GetValueKind());
            foreach (JsonNode? tool in request["tools"]!.AsArray())
                tool!["function"]!["parameters"]!.AsObject().Remove("additionalProperties");
            Assert.True(JsonNode.DeepEquals(recorded.RequestBody, request), request.ToJsonString());
            Assert.True(JsonNode.DeepEquals(recorded.ResponseBody, changed.ResponseBody));
        }
    }

    [Fact]
    public void ToolDefinitions_AreWhatTheSpecCallsAFunctionTool()
    {
        JsonNode definition = ToolCalling.ToolDefinitions(ProgramTools.Create())[0]!;

        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""
            {"type":"function","function":{"name":"get_weather","description":"Returns the current weather in the given city",
             "parameters":{"type":"object","properties":{"city":{"type":"string","description":"City name, e.g. \"London\""}},"required":["city"]}}}
            """), definition), definition.ToJsonString());
    }

    static void AssertRequestMessage(JsonObject message)
    {
        string role = (string)message["role"]!;
        Assert.Contains(role, new[] { "developer", "system", "user", "assistant", "tool" });
        if (role == "tool")
        {
            Assert.Equal(JsonValueKind.String, message["tool_call_id"]!.GetValueKind());
            Assert.Equal(JsonValueKind.String, message["content"]!.GetValueKind());
        }
        if (role == "assistant" && message["tool_calls"] is JsonArray calls)
        {
            foreach (JsonNode? call in calls)
                AssertToolCall(call!.AsObject());
        }
    }

    static void AssertUsage(JsonObject usage)
    {
        foreach (string field in new[] { "prompt_tokens", "completion_tokens", "total_tokens" })
            Assert.Equal(JsonValueKind.Number, usage[field]!.GetValueKind());
    }

    /// <summary>ChatCompletionStreamResponseDelta, and each tool-call fragment a ChatCompletionMessageToolCallChunk.</summary>
    static void AssertDelta(JsonObject delta)
    {
        if (delta["role"] is JsonNode role)
            Assert.Contains((string)role!, new[] { "developer", "system", "user", "assistant", "tool" });
        foreach (string text in new[] { "content", "refusal" })
            Assert.True(delta[text] is null || delta[text]!.GetValueKind() == JsonValueKind.String, $"{text} is a string or null");
        foreach (JsonNode? fragment in delta["tool_calls"]?.AsArray() ?? [])
        {
            Assert.Equal(JsonValueKind.Number, fragment!["index"]!.GetValueKind()); // the one required field
            if (fragment["id"] is JsonNode id)
                Assert.Equal(JsonValueKind.String, id.GetValueKind());
            if (fragment["type"] is JsonNode type)
                Assert.Equal("function", (string)type!);
            if (fragment["function"] is JsonNode function)
            {
                foreach (string field in new[] { "name", "arguments" })
                    Assert.True(function[field] is null || function[field]!.GetValueKind() == JsonValueKind.String, $"function.{field} is a string");
            }
        }
    }

    static void AssertToolCall(JsonObject call, bool complete = true)
    {
        Assert.Equal(JsonValueKind.String, call["id"]!.GetValueKind());
        Assert.Equal("function", (string)call["type"]!);
        Assert.Equal(JsonValueKind.String, call["function"]!["name"]!.GetValueKind());
        Assert.Equal(JsonValueKind.String, call["function"]!["arguments"]!.GetValueKind()); // a JSON *string*
        if (complete)
            Assert.IsType<JsonObject>(JsonNode.Parse((string)call["function"]!["arguments"]!));
    }
}

/// <summary>The reference reads as promised: the steps in order, one file, no packages.</summary>
public class SourceTests
{
    static readonly string Source = File.ReadAllText(Path.Combine(Repo.Root, "ToolCall.cs"));

    [Fact]
    public void ToolCallCs_MarksStepsOneToFourInOrder_AndHoldsNoReplayServer()
    {
        int[] steps = [.. Enumerable.Range(1, 4).Select(n => Source.IndexOf($"// Step {n}:", StringComparison.Ordinal))];

        Assert.All(steps, position => Assert.True(position > 0));
        Assert.Equal(steps.Order(), steps);
        Assert.DoesNotContain("class ReplayServer", Source);
    }

    [Theory]
    [InlineData("Apis/ResponsesApi.cs")]
    [InlineData("Apis/AnthropicApi.cs")]
    public void EachOtherApisFile_MarksStepsOneToFourInOrder_LikeChatCompletions(string file)
    {
        string section = File.ReadAllText(Path.Combine(Repo.Root, file));
        int[] steps = [.. Enumerable.Range(1, 4).Select(n => section.IndexOf($"        // Step {n}:", StringComparison.Ordinal))];

        Assert.All(steps, position => Assert.True(position > 0));
        Assert.Equal(steps.Order(), steps);
    }

    [Fact]
    public void ToolCallCs_UsesOnlyTheBaseClassLibrary()
    {
        string[] namespaces = [.. Regex.Matches(Source, @"^using ([\w.]+);", RegexOptions.Multiline).Select(m => m.Groups[1].Value)];

        Assert.NotEmpty(namespaces);
        Assert.All(namespaces, n => Assert.True(n == "System" || n.StartsWith("System.", StringComparison.Ordinal), n));
    }

    [Fact]
    public void ToolCallCsproj_HasNoPackageReference_AndDoesNotCompileTheTests()
    {
        XDocument project = XDocument.Load(Path.Combine(Repo.Root, "ToolCall.csproj"));

        Assert.Empty(project.Descendants("PackageReference"));
        Assert.Contains(project.Descendants("Compile"), c => ((string?)c.Attribute("Remove"))?.Contains("ToolCall.Tests/**") == true);
        Assert.Equal("true", (string?)project.Descendants("Nullable").Single() == "enable" ? "true" : "false");
        Assert.Equal("true", (string?)project.Descendants("TreatWarningsAsErrors").Single());
    }
}
