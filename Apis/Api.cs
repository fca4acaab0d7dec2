// Api.cs: the seam between the program and the APIs it speaks (--api): what each API's file provides.

using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>
/// One API the program speaks (--api NAME). The four steps are the same on each, and each API's file has its own loop
/// of them (ChatCompletionsApi runs the one in ToolCall.cs); what differs on the wire around the loop is named here.
/// The command line, the send (ResilientChatClient), streaming and the diagram know an API only through this class,
/// so a fourth API is one new file with a subclass, and one line in All.
/// </summary>
abstract class Api
{
    /// <summary>Every API the program speaks, in the order the help lists them.</summary>
    public static readonly Api[] All = [new ChatCompletionsApi(), new ResponsesApi(), new AnthropicApi()];

    /// <summary>The API named NAME (--api NAME).</summary>
    public static Api Named(string name) =>
        All.FirstOrDefault(api => api.Name == name) ?? throw new UsageException(
            $"--api needs {string.Join(", ", All[..^1].Select(api => api.Name))} or {All[^1].Name}, not '{name}'.");

    /// <summary>The API whose endpoint is `path` ("/chat/completions"), or null for a path no API has.</summary>
    public static Api? ForPath(string path) => All.FirstOrDefault(api => api.Path == path);

    /// <summary>Its name for --api.</summary>
    public abstract string Name { get; }

    /// <summary>The endpoint, relative to the base URL.</summary>
    public abstract string Path { get; }

    /// <summary>What the base URL must point at, for the error line of a reply that is not JSON.</summary>
    public virtual string Describes => "an OpenAI-compatible API";

    // Where a live run's settings come from: the OpenAI APIs share OpenAI's variables.
    public virtual string KeyVariable => "OPENAI_API_KEY";
    public virtual string BaseUrlVariable => "OPENAI_BASE_URL";
    public virtual string ModelVariable => "OPENAI_MODEL";
    public virtual string DefaultBaseUrl => "https://api.openai.com/v1";
    public virtual string DefaultModel => "gpt-4o-mini";

    /// <summary>The four steps on this API, for one question; returns the model's final text.</summary>
    public abstract Task<string> RunAsync(
        ChatClient client, string model, string question, IReadOnlyList<Tool> tools, FlowOptions options, CancellationToken cancellationToken);

    /// <summary>The headers every request carries: the key (Authorization: Bearer, unless the API says otherwise), and
    /// whatever else the API requires.</summary>
    public virtual void AddHeaders(HttpRequestMessage request, string? apiKey)
    {
        if (apiKey is not null)
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
    }

    /// <summary>Makes the request ask for its reply as server-sent events (--stream).</summary>
    public virtual void AskForStream(JsonObject request) => request["stream"] = true;

    /// <summary>A reader that puts this API's stream back together into the reply a JSON response would be.</summary>
    public abstract EventStreamReader NewStreamReader(TextWriter output);

    /// <summary>Whether its stream names each event in an `event:` line (for --trace, which shows the events).</summary>
    public virtual bool NamesEvents => true;

    /// <summary>The usage fields of a reply: the tokens read and the tokens written.</summary>
    public virtual (string Input, string Output) UsageFields => ("input_tokens", "output_tokens");

    // What the API takes of the tools' definitions, checked before anything is sent.

    /// <summary>The longest function name the API takes (letters, digits, _ and - only).</summary>
    public virtual int MaxNameLength => 64;

    /// <summary>The most tools one request may carry, where the API has a limit.</summary>
    public virtual int? MaxTools => null;

    /// <summary>Why the API would reject this function name, or null when it takes it.</summary>
    public string? NameProblem(string name) =>
        name.Length is > 0 && name.Length <= MaxNameLength && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-')
            ? null
            : $"a function name on --api {Name} must match ^[a-zA-Z0-9_-]{{1,{MaxNameLength}}}$ (letters, digits, _ and -, " +
              $"at most {MaxNameLength}), and '{ToolCalling.Shown(name)}' does not";

    /// <summary>The first reason the API would reject these tools' definitions with a 400, or null: too many tools, a
    /// name it does not take, or two tools with one name.</summary>
    public string? ToolsProblem(IReadOnlyList<Tool> tools)
    {
        if (MaxTools is int max && tools.Count > max)
            return $"{tools.Count} tools are offered, and --api {Name} takes at most {max} in one request";
        if (tools.Select(tool => NameProblem(tool.Name)).FirstOrDefault(problem => problem is not null) is string nameProblem)
            return nameProblem;
        return tools.GroupBy(tool => tool.Name).FirstOrDefault(same => same.Count() > 1) is { } twice
            ? $"{twice.Count()} tools are named '{ToolCalling.Shown(twice.Key)}', and each function name must be unique"
            : null;
    }

    /// <summary>Refuses, before anything is sent, what this API cannot carry of the flow's options and tools (a
    /// UsageException, worded for the command line's options).</summary>
    public virtual void CheckOptions(FlowOptions options, IReadOnlyList<Tool> tools)
    {
    }

    /// <summary>
    /// The flow's options with the request fields that keep reasoning state as the command line asks: --no-store
    /// (the Responses API's store: false, its reasoning then sent back encrypted) and --thinking TOKENS (the Messages
    /// API's extended thinking). An option this API cannot carry is refused (a UsageException). On Chat Completions
    /// the model decides whether it reasons (DeepSeek's thinking mode, Gemini's thinking), so neither applies there.
    /// </summary>
    public virtual FlowOptions WithReasoning(FlowOptions options, bool noStore, int? thinkingBudget)
    {
        if (noStore)
            throw new UsageException(
                $"--no-store is for --api responses, whose store defaults to true; --api {Name} keeps nothing of a reply " +
                "that the next request needs. Drop --no-store.");
        if (thinkingBudget is not null)
            throw new UsageException(
                $"--thinking is for --api anthropic (extended thinking); on --api {Name} the model decides whether it reasons, " +
                "and its reasoning comes back in the reply. Drop --thinking.");
        return options;
    }

    /// <summary>Adds fields to those FlowOptions.RequestFields already holds.</summary>
    protected static FlowOptions WithFields(FlowOptions options, JsonObject fields)
    {
        JsonObject all = (JsonObject?)options.RequestFields?.DeepClone() ?? [];
        foreach ((string field, JsonNode? value) in fields)
            all[field] = value?.DeepClone();
        return options with { RequestFields = all };
    }

    /// <summary>The bundled cassette for the offline demo, from the Chat Completions one's name ("weather.json",
    /// "strict.json"): the same name with the API's in front ("responses-weather.json").</summary>
    public virtual string CassetteName(string chatName) => $"{Name}-{chatName}";

    // What the diagram (--diagram) and the offline demo read of a request's history.

    /// <summary>The request field that holds the history.</summary>
    public virtual string HistoryField => "messages";

    /// <summary>The history in a few words: "user, assistant with 2 tool calls, tool, tool".</summary>
    public abstract string HistoryShape(JsonArray history);

    /// <summary>The name of a function in the request's `tools`.</summary>
    public virtual string? ToolName(JsonNode? definition) => Json.String(Json.At(definition, "name"));

    /// <summary>The tool calls in one history entry, as "name(arguments)" with the id that pairs each to its result.</summary>
    public abstract IEnumerable<(string Id, string Call)> Calls(JsonNode? entry);

    /// <summary>The tool results in one history entry, with the id of the call each answers.</summary>
    public abstract IEnumerable<(string Id, string Text)> Results(JsonNode? entry);

    /// <summary>A message's content as text: a string, or the text of its parts or blocks.</summary>
    public static string TextOf(JsonNode? content) =>
        Json.String(content) ?? string.Concat((content as JsonArray ?? []).Select(part => Json.String(Json.At(part, "text"))));
}
