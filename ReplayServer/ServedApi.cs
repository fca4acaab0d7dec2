// ServedApi.cs: one API as the replay server serves it, and the registry of the three: the one place that chooses by API.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>
/// One API as the replay server serves it: where it is served, how it words an error, how it streams, where a request
/// keeps its history, and the rules it enforces. The server and JsonMatch ask this object instead of looking at the
/// path, so that each API's knowledge sits in its own file (ChatCompletionsRules.cs, ResponsesRules.cs,
/// AnthropicRules.cs) and a fourth API is one more file and one more line in All.
/// </summary>
abstract class ServedApi
{
    /// <summary>Every API the server serves.</summary>
    public static readonly IReadOnlyList<ServedApi> All = [new ServedChatCompletionsApi(), new ServedResponsesApi(), new ServedMessagesApi()];

    /// <summary>
    /// The API served at `path` (relative to the base URL, "/responses"), or null for a path that none is served at:
    /// a cassette may still hold interactions there, which are replayed with no API's rules. This is the one place in
    /// the replay server that chooses by API.
    /// </summary>
    public static ServedApi? At(string path) => All.FirstOrDefault(api => api.Path == path);

    /// <summary>Where it is served, relative to the base URL: "/chat/completions".</summary>
    public abstract string Path { get; }

    /// <summary>The request field that holds the conversation so far: "messages", or the Responses API's "input".</summary>
    public abstract string HistoryField { get; }

    /// <summary>Whether each event of a streamed reply comes after an `event:` line naming it (see ServerSentEvents.Format).</summary>
    public abstract bool NamesEvents { get; }

    /// <summary>A 400's body in this API's error shape. `code` is the OpenAI shape's machine-readable code, where the
    /// shape has one.</summary>
    public abstract JsonObject Error(string message, string? code = null);

    /// <summary>The first rule of this API that the request breaks, as the API answers it (a body in its error shape),
    /// or null when it breaks none.</summary>
    public abstract JsonObject? FirstViolation(JsonObject request, IReadOnlyDictionary<string, string> headers);

    /// <summary>
    /// The first rule on reasoning state that the request breaks, as the API answers it (its status and body), or null.
    /// A reasoning model's state goes back with its tool calls (DeepSeek's reasoning_content, Gemini's thought
    /// signatures, the Responses API's reasoning items, the Messages API's thinking blocks), and the API knows what it
    /// handed out: so may the server, from `played`, the interactions it has answered so far, in the order first played.
    /// </summary>
    public virtual Refusal? ReasoningViolation(JsonObject request, IReadOnlyList<Interaction> played) => null;

    /// <summary>The interactions of `played` that this API answered (a cassette may hold another API's too).</summary>
    protected IReadOnlyList<Interaction> Own(IReadOnlyList<Interaction> played) => [.. played.Where(interaction => At(interaction.Path) == this)];

    // What JsonMatch asks, to read a request as this API reads it: a field at its default equals its absence, a text
    // content equals the one text part it stands for, and a tool result JSON-quoted is named as such.

    /// <summary>The documented defaults of the request's top-level fields: sending one is the same request as leaving
    /// it out. tool_choice's default depends on `tools`, so it is not here (see ToolChoiceIsTheDefault).</summary>
    public abstract IReadOnlyDictionary<string, JsonNode> TopLevelDefaults { get; }

    /// <summary>Whether a top-level tool_choice of `value` is what the API does when none is sent, with or without
    /// tools.</summary>
    public abstract bool ToolChoiceIsTheDefault(JsonNode value, bool withTools);

    /// <summary>Whether `owner[key]`, the non-null `value` at `path` below the top level ("$.messages[1]"), means
    /// nothing more than its absence. None does, unless the API says so.</summary>
    public virtual bool ReadsAsAbsent(string path, string key, JsonNode value, JsonObject owner) => false;

    /// <summary>When `owner[key]` at `path` is a text content, the type of the one text part that a string stands
    /// for there ("text"); else null.</summary>
    public abstract string? TextPartType(string path, string key, JsonObject owner);

    /// <summary>Whether `owner[key]` is the result of a tool call, in this API's place for it.</summary>
    public abstract bool IsToolResult(string key, JsonObject owner);

    /// <summary>Whether `path` is "{array}[N]{then}", an item of that array (or a field of it).</summary>
    protected static bool IsItem(string path, string array, string then = "") =>
        path.StartsWith(array + "[", StringComparison.Ordinal) && path.EndsWith("]" + then, StringComparison.Ordinal) &&
        path.Length > array.Length + 2 + then.Length && path[(array.Length + 1)..^(then.Length + 1)].All(char.IsAsciiDigit);
}

/// <summary>A request a rule refuses: the status and the body, in the API's error shape, it is answered with.</summary>
sealed record Refusal(int Status, JsonNode Body);
