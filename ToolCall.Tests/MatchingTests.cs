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
