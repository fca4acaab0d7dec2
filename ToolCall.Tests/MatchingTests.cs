using System.Net;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// The replay server matches a request as the API reads it, so clients nobody here wrote (the official SDKs,
/// Microsoft.Extensions.AI) replay the bundled cassettes: what they write differently but mean the same matches,
/// and what the model would read differently does not.
/// </summary>
public class MatchingTests
{
    static readonly JsonObject Asked = Wire.AskForTools(Wire.WeatherCall("call_1", "London"));

    /// <summary>The second request of a one-call flow, as this project's client sends it.</summary>
    static JsonObject Recorded() => Wire.Request(Wire.User("Weather?"), Asked, Wire.ToolMessage("call_1", Wire.Weather("London")));

    [Fact]
    public void AssistantMessageEchoedWithoutNullFieldsOrAnnotations_Matches()
    {
        JsonObject recorded = Recorded();
        recorded["messages"]![1]!["annotations"] = new JsonArray();
        // What the OpenAI .NET SDK sends back: role and tool_calls only.
        JsonObject sent = Recorded();
        sent["messages"]![1] = new JsonObject { ["role"] = "assistant", ["tool_calls"] = new JsonArray(Wire.WeatherCall("call_1", "London")) };

        Assert.Null(JsonMatch.FirstDifference(recorded, sent));
    }

    [Fact]
    public void ArgumentsReindented_Match()
    {
        JsonObject sent = Recorded();
        sent["messages"]![1]!["tool_calls"]![0]!["function"]!["arguments"] = "{\n  \"city\": \"London\"\n}";

        Assert.Null(JsonMatch.FirstDifference(Recorded(), sent));
    }

    [Theory]
    [InlineData("tool_choice", "\"auto\"")] // the default when tools are present
    [InlineData("parallel_tool_calls", "true")]
    [InlineData("stream", "false")]
    [InlineData("n", "1")]
    [InlineData("temperature", "1.0")]
    [InlineData("top_p", "1")]
    [InlineData("frequency_penalty", "0")]
    [InlineData("presence_penalty", "0")]
    [InlineData("logprobs", "false")]
    [InlineData("store", "false")]
    [InlineData("service_tier", "\"auto\"")]
    public void FieldAtTheApisDefault_MatchesItsAbsence_BothWays(string field, string value)
    {
        JsonObject withDefault = Recorded();
        withDefault[field] = JsonNode.Parse(value);

        Assert.Null(JsonMatch.FirstDifference(Recorded(), withDefault));
        Assert.Null(JsonMatch.FirstDifference(withDefault, Recorded()));
    }

    [Fact]
    public void StrictFalseOnAFunction_MatchesItsAbsence()
    {
        JsonObject sent = Recorded();
        foreach (JsonNode? tool in sent["tools"]!.AsArray())
            tool!["function"]!["strict"] = false;

        Assert.Null(JsonMatch.FirstDifference(Recorded(), sent));
    }

    [Theory]
    [InlineData("tool_choice", "\"required\"")]
    [InlineData("parallel_tool_calls", "false")]
    [InlineData("stream", "true")]
    [InlineData("n", "2")]
    [InlineData("temperature", "0")]
    public void FieldOffItsDefault_IsADifference(string field, string value)
    {
        JsonObject sent = Recorded();
        sent[field] = JsonNode.Parse(value);

        Assert.Equal($"$.{field}: expected nothing, got {value}", JsonMatch.FirstDifference(Recorded(), sent));
    }

    [Fact]
    public void StrictTrueOnAFunction_IsADifference()
    {
        JsonObject sent = Recorded();
        sent["tools"]![0]!["function"]!["strict"] = true;

        Assert.Equal("$.tools[0].function.strict: expected nothing, got true", JsonMatch.FirstDifference(Recorded(), sent));
    }

    [Fact]
    public void AdditionalPropertiesFalseAddedToASchema_IsADifference_TheModelReadsTheSchema()
    {
        JsonObject sent = Recorded();
        sent["tools"]![0]!["function"]!["parameters"]!["additionalProperties"] = false;

        Assert.Equal("$.tools[0].function.parameters.additionalProperties: expected nothing, got false", JsonMatch.FirstDifference(Recorded(), sent));
    }

    [Fact]
    public void AnnotationsOutsideAMessage_AreNotIgnored()
    {
        JsonObject sent = Recorded();
        sent["annotations"] = new JsonArray();

        Assert.Equal("$.annotations: expected nothing, got []", JsonMatch.FirstDifference(Recorded(), sent));
    }

    [Fact]
    public void ToolResultSentJsonQuoted_IsAMismatchThatSaysSo()
    {
        JsonObject sent = Recorded();
        sent["messages"]![2]!["content"] = Json.Compact(JsonValue.Create(Wire.Weather("London"))); // "\"It's ...\""

        Assert.Equal(
            "$.messages[2].content: the tool result is JSON-quoted: expected \"It's currently +18°C and partly cloudy in London\", " +
            "got \"\\\"It's currently +18°C and partly cloudy in London\\\"\". Send the function's text as it is; the model would read the quotes",
            JsonMatch.FirstDifference(Recorded(), sent));
    }

    [Fact]
    public void OtherToolResult_IsAPlainDifference()
    {
        JsonObject sent = Recorded();
        sent["messages"]![2]!["content"] = Wire.Weather("Paris");

        Assert.Equal(
            "$.messages[2].content: expected \"It's currently +18°C and partly cloudy in London\", got \"It's currently +18°C and partly cloudy in Paris\"",
            JsonMatch.FirstDifference(Recorded(), sent));
    }

    [Fact]
    public async Task ReplayServer_AnswersAJsonQuotedToolResultWithA400SayingSo()
    {
        await using ReplayServer server = ReplayServer.Start(Wire.Cassette(Wire.Exchange(Recorded(), Wire.Completion(Wire.Text("ok")))));
        JsonObject sent = Recorded();
        sent["messages"]![2]!["content"] = Json.Compact(JsonValue.Create(Wire.Weather("London")));

        (HttpStatusCode status, JsonNode? body) = await Http.PostAsync(server.BaseUrl + "/chat/completions", sent);

        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.StartsWith("Replay mismatch at interaction 1 of 1: $.messages[2].content: the tool result is JSON-quoted: ", (string)body!["error"]!["message"]!);
    }
}

/// <summary>
/// The same reading on the Responses and Messages APIs: each API's own defaults, a text content written either way,
/// and a JSON-quoted tool result named in each API's place for it.
/// </summary>
public class ApiMatchingTests
{
    /// <summary>The last request of a bundled cassette: the whole history of a one-call flow.</summary>
    static JsonObject LastRequest(string cassette) =>
        Cassette.Load(Repo.Cassette(cassette)).Interactions[^1].RequestBody!.DeepClone().AsObject();

    static JsonObject Responses() => LastRequest("responses-weather.json");

    static JsonObject Messages() => LastRequest("anthropic-weather.json");

    [Fact]
    public void ResponsesInputMessage_TypedAndAsOneInputTextPart_MatchesTheString_BothWays()
    {
        // What the OpenAI .NET SDK's ResponseItem.CreateUserMessageItem(text) sends.
        JsonObject sent = Responses();
        sent["input"]![0] = JsonNode.Parse("""{"type":"message","role":"user","content":[{"type":"input_text","text":"What's the weather in London right now?"}]}""");

        Assert.Null(JsonMatch.FirstDifference(Responses(), sent, "/responses"));
        Assert.Null(JsonMatch.FirstDifference(sent, Responses(), "/responses"));
    }

    [Theory]
    [InlineData("""[{"type":"output_text","text":"What's the weather in London right now?"}]""")] // a user message's part is input_text
    [InlineData("""[{"type":"input_text","text":"What's the weather"},{"type":"input_text","text":" in London right now?"}]""")]
    [InlineData("""[{"type":"input_text","text":"What's the weather in Paris right now?"}]""")]
    public void ResponsesInputMessage_OtherParts_AreADifference(string content)
    {
        JsonObject sent = Responses();
        sent["input"]![0]!["content"] = JsonNode.Parse(content);

        Assert.StartsWith("$.input[0].content: expected \"What's the weather in London right now?\", got ", JsonMatch.FirstDifference(Responses(), sent, "/responses"));
    }

    [Fact]
    public void MessagesContent_AsOneTextBlock_MatchesTheString_InAMessageAndInAToolResult()
    {
        JsonObject sent = Messages();
        sent["messages"]![0]!["content"] = JsonNode.Parse("""[{"type":"text","text":"What's the weather in London right now?"}]""");
        sent["messages"]![2]!["content"]![0]!["content"] = JsonNode.Parse($$"""[{"type":"text","text":"{{Wire.Weather("London")}}"}]""");

        Assert.Null(JsonMatch.FirstDifference(Messages(), sent, "/messages"));
    }

    [Theory]
    [InlineData("/responses", "store", "true")] // the Responses API stores by default; Chat Completions does not
    [InlineData("/responses", "truncation", "\"disabled\"")]
    [InlineData("/responses", "parallel_tool_calls", "true")]
    [InlineData("/responses", "tool_choice", "\"auto\"")]
    [InlineData("/messages", "tool_choice", """{"type":"auto"}""")]
    [InlineData("/messages", "temperature", "1.0")]
    [InlineData("/messages", "stream", "false")]
    public void FieldAtThatApisDefault_MatchesItsAbsence(string endpoint, string field, string value)
    {
        JsonObject recorded = endpoint == "/responses" ? Responses() : Messages();
        JsonObject sent = recorded.DeepClone().AsObject();
        sent[field] = JsonNode.Parse(value);

        Assert.Null(JsonMatch.FirstDifference(recorded, sent, endpoint));
        Assert.Null(JsonMatch.FirstDifference(sent, recorded, endpoint));
    }

    [Theory]
    [InlineData("/responses", "store", "false")] // Chat Completions' default, not the Responses API's
    [InlineData("/messages", "tool_choice", """{"type":"any"}""")]
    [InlineData("/messages", "tool_choice", "\"auto\"")] // the OpenAI form is not the Messages API's default
    [InlineData("/messages", "n", "1")] // a Chat Completions default means nothing here
    public void FieldOffThatApisDefault_IsADifference(string endpoint, string field, string value)
    {
        JsonObject recorded = endpoint == "/responses" ? Responses() : Messages();
        JsonObject sent = recorded.DeepClone().AsObject();
        sent[field] = JsonNode.Parse(value);

        Assert.StartsWith($"$.{field}: expected nothing, got ", JsonMatch.FirstDifference(recorded, sent, endpoint));
    }

    [Fact]
    public void ResponsesStrictLeftOut_IsADifference_ItIsNotOffThere()
    {
        JsonObject sent = Responses();
        sent["tools"]![0]!.AsObject().Remove("strict");

        Assert.Equal("$.tools[0].strict: expected false, got nothing", JsonMatch.FirstDifference(Responses(), sent, "/responses"));
    }

    [Theory]
    [InlineData("responses-weather.json", "/responses", "input[2].output")]
    [InlineData("anthropic-weather.json", "/messages", "messages[2].content[0].content")]
    public void ToolResultSentJsonQuoted_IsAMismatchThatSaysSo_OnEachApi(string cassette, string endpoint, string at)
    {
        JsonObject recorded = LastRequest(cassette);
        JsonObject sent = LastRequest(cassette);
        JsonNode owner = at.StartsWith("input", StringComparison.Ordinal) ? sent["input"]![2]! : sent["messages"]![2]!["content"]![0]!;
        owner[at.EndsWith("output", StringComparison.Ordinal) ? "output" : "content"] = Json.Compact(JsonValue.Create(Wire.Weather("London")));

        Assert.StartsWith($"$.{at}: the tool result is JSON-quoted: ", JsonMatch.FirstDifference(recorded, sent, endpoint));
    }
}
