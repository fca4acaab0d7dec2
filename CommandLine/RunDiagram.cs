// RunDiagram.cs: the run as a picture (--diagram): a Mermaid sequence diagram of what was sent and received.

using System.Collections.Generic;
using System.Linq;
using System.Text;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>
/// --diagram: the run that just happened as a Mermaid sequence diagram in a ```mermaid block (GitHub renders it): the
/// user, the client, the model and the tools, with each request and reply and their key fields. It is drawn from the
/// requests as recorded: each request's own fields (and the status of a failed attempt), and in the last one's
/// history, what each reply asked for and what each tool answered. The history is `messages` (Chat Completions,
/// Messages) or `input` (Responses); the calls and results in it are read in whichever of the three shapes they come.
/// </summary>
static class RunDiagram
{
    const int MaxText = 100; // longer texts are cut: the picture shows the flow, --trace shows the bytes

    public static string Mermaid(Api api, IReadOnlyList<Interaction> requests, string answer)
    {
        JsonArray History(JsonNode? body) => Json.At(body, api.HistoryField) as JsonArray ?? [];
        JsonArray history = History(requests[^1].RequestBody);
        var diagram = new StringBuilder("```mermaid\nsequenceDiagram\n");
        void Line(string line) => diagram.Append("    ").Append(line).Append('\n');

        foreach (string participant in new[] { "user", "client", "model", "tools" })
            Line($"participant {participant}");
        JsonNode? question = Json.String(Json.At(requests[^1].RequestBody, "input")) is string input
            ? JsonValue.Create(input)
            : Json.At(history.FirstOrDefault(entry => Json.String(Json.At(entry, "role")) == "user"), "content");
        Line($"user->>client: {Text(Api.TextOf(question))}");
        bool answered = false, retry = false; // answered: a reply has come (so this is step 4); retry: the last one failed
        for (int i = 0; i < requests.Count; i++)
        {
            Line(retry ? "Note over client,model: the same request again (a retry)"
                : answered ? "Note over client,model: Step 4: the whole history again" : "Note over client,model: Step 1: the question and the tools");
            Line($"client->>model: {Request(api, requests[i], first: !answered)}");
            // A failed attempt (--retries sends it again): its status and the API's message, on a crossed arrow.
            retry = !Succeeded(requests[i]);
            if (retry)
            {
                string? error = Json.String(Json.At(requests[i].ResponseBody, "error", "message"));
                Line($"model--xclient: HTTP {requests[i].Status}{(error is null ? "" : ": " + Text(error))}");
                continue;
            }
            answered = true;
            // The reply to this request, and its tool results, are what the next request that went through added.
            if (requests.Skip(i + 1).FirstOrDefault(Succeeded) is not Interaction next)
            {
                Line($"model-->>client: text: {Text(answer)}");
                continue;
            }
            JsonNode?[] added = [.. history.Take(History(next.RequestBody).Count).Skip(History(requests[i].RequestBody).Count)];
            (string Id, string Call)[] calls = [.. added.SelectMany(api.Calls)];
            Line($"Note over client,model: Step 2: the reply asks for {ToolCalling.Plural(calls.Length, "tool call")}");
            Line($"model-->>client: calls {string.Join(", ", calls.Select(c => Text(c.Call)))}");
            Line("Note over client,tools: Step 3: run each call, then one result per call, in order");
            Dictionary<string, string> results = added.SelectMany(api.Results).GroupBy(r => r.Id).ToDictionary(g => g.Key, g => g.First().Text);
            foreach ((string id, string call) in calls)
            {
                Line($"client->>tools: {Text(call)}");
                Line($"tools-->>client: {Text(results.GetValueOrDefault(id, ""))}");
            }
        }
        Line($"client->>user: {Text(answer)}");
        return diagram.Append("```\n").ToString();
    }

    static bool Succeeded(Interaction request) => request.Status is >= 200 and < 300;

    /// <summary>"POST /chat/completions: messages [...]" (or /responses: input, /messages: messages) and, on the first
    /// request, the tools; then any field that steers tool use.</summary>
    static string Request(Api api, Interaction request, bool first)
    {
        JsonNode? body = request.RequestBody;
        JsonArray history = Json.At(body, api.HistoryField) as JsonArray ?? [];
        var text = new StringBuilder($"{request.Method} {request.Path}: {api.HistoryField} [{api.HistoryShape(history)}]");
        if (first && Json.At(body, "tools") is JsonArray tools)
            text.Append($", tools [{string.Join(", ", tools.Select(api.ToolName))}]");
        foreach (string field in new[] { "tool_choice", "parallel_tool_calls" })
        {
            if (Json.At(body, field) is JsonNode value)
                text.Append($", {field} {Json.Compact(value)}");
        }
        return Text(text.ToString(), cut: false);
    }

    /// <summary>One line of diagram text: Mermaid reads ";" and "#" itself and "<" and ">" as HTML, so those are
    /// written as its entity codes (#59; and so on).</summary>
    static string Text(string text, bool cut = true)
    {
        text = text.ReplaceLineEndings(" ");
        if (cut && text.Length > MaxText)
            text = text[..MaxText] + "…";
        var escaped = new StringBuilder(text.Length);
        foreach (char c in text)
            escaped.Append(c is '#' or ';' or '<' or '>' ? $"#{(int)c};" : c);
        return escaped.ToString();
    }
}
