// ChatCompletionsApi.cs: Chat Completions behind the Api seam; its four steps are ToolCall.cs's own.

using System.Collections.Generic;
using System.IO;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>
/// POST {base}/chat/completions (--api chat, the default): the API of ToolCall.cs. Its loop, its tool definitions and
/// its history are ToolCall.cs's; what is added here is what the program needs around them: the stream (Streaming.cs
/// assembles it), the usage fields, and how the diagram reads a history.
/// </summary>
sealed class ChatCompletionsApi : Api
{
    public override string Name => "chat";

    public override string Path => "/chat/completions";

    public override Task<string> RunAsync(
        ChatClient client, string model, string question, IReadOnlyList<Tool> tools, FlowOptions options, CancellationToken cancellationToken) =>
        ToolCalling.RunAsync(client, model, question, tools, options, cancellationToken);

    /// <summary>Chat Completions sends the usage of a streamed reply, in one last chunk, only when asked for it.</summary>
    public override void AskForStream(JsonObject request)
    {
        base.AskForStream(request);
        request["stream_options"] = new JsonObject { ["include_usage"] = true };
    }

    public override EventStreamReader NewStreamReader(TextWriter output) => new StreamedReply(output);

    /// <summary>Its events are `data:` lines only: a chunk has no "type" to name it by.</summary>
    public override bool NamesEvents => false;

    public override (string Input, string Output) UsageFields => ("prompt_tokens", "completion_tokens");

    /// <summary>The API's answer to a 129th tool: "Invalid 'tools': array too long. Expected an array with maximum length
    /// 128, …" (quoted in public issues).</summary>
    public override int? MaxTools => 128;

    /// <summary>The bundled Chat Completions cassettes have the plain names: weather.json, strict.json.</summary>
    public override string CassetteName(string chatName) => chatName;

    public override string HistoryShape(JsonArray history) => ToolCalling.HistoryShape(history);

    /// <summary>{"type":"function","function":{"name",…}}: the name is the function's.</summary>
    public override string? ToolName(JsonNode? definition) => Json.String(Json.At(definition, "function", "name"));

    /// <summary>An assistant message's tool_calls.</summary>
    public override IEnumerable<(string Id, string Call)> Calls(JsonNode? entry)
    {
        foreach (JsonNode? call in Json.At(entry, "tool_calls") as JsonArray ?? [])
            yield return (Json.String(Json.At(call, "id")) ?? "", $"{Json.String(Json.At(call, "function", "name"))}({Json.String(Json.At(call, "function", "arguments"))})");
    }

    /// <summary>A role "tool" message.</summary>
    public override IEnumerable<(string Id, string Text)> Results(JsonNode? entry)
    {
        if (Json.String(Json.At(entry, "role")) == "tool")
            yield return (Json.String(Json.At(entry, "tool_call_id")) ?? "", TextOf(Json.At(entry, "content")));
    }
}
