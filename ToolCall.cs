// ToolCall.cs: function calling (tool use) over an OpenAI-compatible Chat Completions API, in four steps.
//
//   Step 1  Send the messages plus `tools`: each function's name, description and JSON-schema parameters.
//   Step 2  The model may answer not with text but with message.tool_calls:
//           [{"id", "type": "function", "function": {"name", "arguments"}}], where `arguments` is a JSON *string*.
//   Step 3  Run each function yourself. Append the model's assistant message (the one carrying tool_calls)
//           to the history FIRST, then one role:"tool" message per call with its tool_call_id and the result.
//   Step 4  Send the history again. The model answers with text, or asks for more tools (back to step 2, with a limit).
//
// This file is the whole idea and stands alone: copy it into any .NET project and call ToolCalling.RunAsync (README.md,
// "Use it in your app"). Read it top to bottom: your functions, the four steps, the one HTTP call they make. Only the
// .NET base class library: HttpClient and System.Text.Json.Nodes. The program (./run.sh) runs this very RunAsync and
// plugs the rest in where this file leaves a seam: FlowOptions.Log and .RunCalls, Tool.CheckArguments, and a ChatClient
// whose PostAsync also retries, streams and records (Client/). The other APIs are in Apis/, the replay server in
// ReplayServer/.

#nullable enable

using System;
using System.Collections.Generic;
using System.Linq;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

// ===== Your functions. The model never runs them: it only asks you to, by name, with JSON arguments. =================

/// <summary>A function the model may call: what the model is told (name, description, JSON schema) and your code.</summary>
/// <param name="Parameters">The JSON schema of the arguments, as the model is shown it.</param>
/// <param name="Run">Your code: it gets the model's arguments, parsed, and a token that says when to give up (Ctrl+C,
/// a timeout), and returns the text the model reads. A call of a service, a query or a file read awaits in it.</param>
public sealed record Tool(string Name, string Description, JsonObject Parameters, Func<JsonObject, CancellationToken, Task<string>> Run)
{
    /// <summary>A tool whose code does not wait for anything: a plain function of the arguments.</summary>
    public Tool(string Name, string Description, JsonObject Parameters, Func<JsonObject, string> Run)
        : this(Name, Description, Parameters, (arguments, _) => Task.FromResult(Run(arguments))) { }

    /// <summary>Sends "strict": true with the function: the API then makes the model's arguments match Parameters,
    /// which must be in strict form (every property required, the optional ones nullable, no other properties).</summary>
    public bool Strict { get; init; }

    /// <summary>Checks the model's arguments before Run sees them: what is wrong with them, in words the model can act
    /// on, or null when they are fine. The model may leave out an argument or send the wrong type; the program checks
    /// every call against Parameters this way (Client/ArgumentChecks.cs). Without a check, Run gets what came.</summary>
    public Func<JsonObject, string?>? CheckArguments { get; init; }
}

/// <summary>The demo's two functions.</summary>
public static class DemoTools
{
    // In real life these would call a weather service; fixed sentences keep the flow easy to follow.
    public static string GetWeather(string city) => $"It's currently +18°C and partly cloudy in {city}";

    public static string GetForecast(string city, int days, string unit, IReadOnlyList<string> include)
    {
        string[] skies = ["partly cloudy", "light rain", "sunny", "overcast", "showers", "clear", "windy"];
        var forecast = new StringBuilder($"{days}-day forecast for {city}:");
        for (int day = 1; day <= days; day++)
        {
            int celsius = 17 + day % 3;
            string temperature = unit == "fahrenheit" ? $"{celsius * 9 / 5 + 32}°F" : $"+{celsius}°C";
            forecast.Append($" day {day} {temperature} {skies[(day - 1) % skies.Length]}");
            foreach (string detail in include)
                forecast.Append(detail switch { "wind" => ", wind 12 km/h", "humidity" => ", humidity 70%", _ => ", rain 20%" });
            forecast.Append(day < days ? ";" : ".");
        }
        return forecast.ToString();
    }

    static JsonObject CityParameter() => new() { ["type"] = "string", ["description"] = "City name, e.g. \"London\"" };

    public static Tool[] Create() =>
    [
        new Tool(
            Name: "get_weather",
            Description: "Returns the current weather in the given city",
            Parameters: new JsonObject
            {
                ["type"] = "object",
                ["properties"] = new JsonObject { ["city"] = CityParameter() },
                ["required"] = new JsonArray("city"),
            },
            Run: arguments => GetWeather(arguments["city"]!.GetValue<string>())),

        // A richer schema, to show what models handle: an integer, an enum, an optional parameter and an array.
        new Tool(
            Name: "get_forecast",
            Description: "Returns the daily weather forecast for the given city for the next days",
            Parameters: new JsonObject
            {
                ["type"] = "object",
                ["properties"] = new JsonObject
                {
                    ["city"] = CityParameter(),
                    ["days"] = new JsonObject { ["type"] = "integer", ["description"] = "How many days, from 1 to 7" },
                    ["unit"] = new JsonObject
                    {
                        ["type"] = "string",
                        ["enum"] = new JsonArray("celsius", "fahrenheit"),
                        ["description"] = "Temperature unit; celsius when left out",
                    },
                    ["include"] = new JsonObject
                    {
                        ["type"] = "array",
                        ["items"] = new JsonObject { ["type"] = "string", ["enum"] = new JsonArray("wind", "humidity", "precipitation") },
                        ["description"] = "Extra details for each day",
                    },
                },
                ["required"] = new JsonArray("city", "days"),
            },
            Run: arguments =>
            {
                // 3.0 is an integer to JSON Schema, but GetValue<int>() would throw on it.
                int days = (int)arguments["days"]!.GetValue<double>();
                if (days is < 1 or > 7)
                    throw new ArgumentException($"days must be from 1 to 7, not {days}");
                string[] include = [.. (arguments["include"] as JsonArray ?? []).Select(item => item!.GetValue<string>())];
                return GetForecast(arguments["city"]!.GetValue<string>(), days, (string?)arguments["unit"] ?? "celsius", include);
            }),
    ];
}

// ===== The four steps ================================================================================================

public static class ToolCalling
{
    /// <summary>Runs the whole flow for one question and returns the model's final text.</summary>
    public static async Task<string> RunAsync(
        ChatClient chat, string model, string question, IReadOnlyList<Tool> tools, FlowOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        options ??= new FlowOptions();
        Action<string>? log = options.Log; // log?.Invoke($"…"): without a log, the text is never even built
        int failingRounds = 0;

        // Step 1: send the question and the tools. The request object *is* the conversation: step 3 appends to its
        // `messages` and step 4 sends the same object again, so the history can never drift from what was sent.
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question });
        var request = new JsonObject { ["model"] = model, ["messages"] = messages, ["tools"] = ToolDefinitions(tools) };
        if (options.ToolChoice is string choice)
            request["tool_choice"] = choice is "auto" or "none" or "required"
                ? choice
                : new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = choice } };
        if (!options.ParallelToolCalls)
            request["parallel_tool_calls"] = false;
        if (options.MaxTokens is int maxTokens)
            request["max_tokens"] = maxTokens;
        foreach ((string field, JsonNode? value) in options.RequestFields ?? [])
            request[field] = value?.DeepClone(); // the caller's own fields, as they are
        log?.Invoke($"Step 1: POST {chat.Url}: 1 message ({Quoted(question)}), tools: {ToolNames(tools)}{ToolFieldsShown(request)}");
        JsonObject response = await chat.PostAsync(request, cancellationToken);

        for (int round = 1; ; round++)
        {
            // Step 2: read choices[0].message. Decide on the presence of tool_calls, not on finish_reason: some
            // OpenAI-compatible servers answer "stop" (or nothing) while the message carries tool calls.
            (JsonObject message, string finishReason) = TakeFirstMessage(response);
            int step = round == 1 ? 2 : 4; // the reply to step 1 is read in step 2; every later reply is step 4's
            if (message["tool_calls"] is not JsonArray { Count: > 0 } calls)
            {
                log?.Invoke($"Step {step}: the model answers with text (finish_reason \"{finishReason}\"{TokensShown(response)})");
                return FinalText(message, log);
            }
            log?.Invoke($"Step {step}: the model asks for {Plural(calls.Count, "tool call")} (finish_reason \"{finishReason}\"{TokensShown(response)})");
            if (finishReason == "length") // the output limit cut the reply off: the last call may lack half its arguments
                throw CutOff("finish_reason \"length\"", options.MaxTokens);
            if (round > options.MaxRounds)
                throw RoundLimitReached(options.MaxRounds);

            // Step 3: the assistant message goes into the history first: the API rejects tool results that do not
            // follow the message that asked for them. Then one role:"tool" message per call, in the calls' order
            // (whatever order they finish in); leave one call unanswered and the next request fails.
            CompleteForHistory(calls, round);
            messages.Add((JsonNode)message); // (JsonNode): JsonArray's generic Add<T> would serialize by reflection
            FunctionCall[] asked = [.. calls.Select(call => new FunctionCall(Text(call!["function"]!["name"]) ?? "", call["function"]!["arguments"]))];
            (string Content, bool Failed)[] results = await (options.RunCalls ?? RunCallsAsync)(asked, tools, cancellationToken);
            for (int i = 0; i < asked.Length; i++)
            {
                log?.Invoke($"Step 3: {Shown(asked[i].Name)}({Shown(Text(asked[i].Arguments))}) -> {Shown(results[i].Content)}");
                JsonNode toolMessage = new JsonObject { ["role"] = "tool", ["tool_call_id"] = calls[i]!["id"]!.DeepClone(), ["content"] = results[i].Content };
                messages.Add(toolMessage);
            }
            failingRounds = results.All(result => result.Failed) ? failingRounds + 1 : 0;
            if (failingRounds == MaxFailingRounds) // a model that only gets errors back rarely recovers: stop paying
                throw OnlyFailures(results);

            // Step 4: send the whole history again. The reply goes back to step 2: text ends the flow, more tool calls
            // start another round.
            string released = "";
            if (round == options.MaxRounds)
            {
                // The last round allowed: rather than give up on the next call, ask for an answer with what the model
                // has. "none" keeps the tools in the request (the history refers to them) but lets the model call none.
                request["tool_choice"] = "none";
                released = $"; tool_choice now \"none\": the last request (--max-rounds {options.MaxRounds}) asks for an answer";
            }
            else if (options.ForcesACall && round == 1)
            {
                // "required" or a function's name forces a tool call on *every* request that carries it: sent again,
                // the model could never answer in text. The forced call has been made and answered; now it chooses.
                request["tool_choice"] = "auto";
                released = "; tool_choice now \"auto\"";
            }
            log?.Invoke($"Step 4: POST {chat.Url}: {Plural(messages.Count, "message")} ({HistoryShape(messages)}){released}");
            response = await chat.PostAsync(request, cancellationToken);
        }
    }

    /// <summary>
    /// The `tools` array of step 1: {"type":"function","function":{name, description, parameters}} for each tool, and
    /// "strict": true for a strict one. Each request gets its own copy of the schema: a JSON node has one parent.
    /// </summary>
    public static JsonArray ToolDefinitions(IReadOnlyList<Tool> tools)
    {
        var definitions = new JsonArray();
        foreach (Tool tool in tools)
        {
            var function = new JsonObject
            {
                ["name"] = tool.Name,
                ["description"] = tool.Description,
                ["parameters"] = tool.Parameters.DeepClone(),
            };
            if (tool.Strict)
                function["strict"] = true;
            JsonNode definition = new JsonObject { ["type"] = "function", ["function"] = function };
            definitions.Add(definition);
        }
        return definitions;
    }

    /// <summary>Step 2's read: choices[0].message, detached from the response so that step 3 can append it as is.</summary>
    static (JsonObject Message, string FinishReason) TakeFirstMessage(JsonObject response)
    {
        if (response["choices"] is not JsonArray { Count: > 0 } choices || choices[0] is not JsonObject choice)
            throw new FlowException("the response has no choices, so there is no message to read. Try the request again.");
        if (choice["message"] is not JsonObject message)
            throw new FlowException("the response's choices[0] has no message object.");
        choice.Remove("message"); // detach: it is about to become part of the history
        return (message, Text(choice["finish_reason"]) ?? "missing");
    }

    /// <summary>
    /// Completes, in place, what a history message must carry and some servers leave out. Everything else stays as
    /// received. The real API requires of each call an id (to pair it with its tool message), a type and `arguments`
    /// as a string. A missing, empty or repeated id gets a generated one; it is deterministic (round and position),
    /// so a replayed run sends the same bytes every time.
    /// </summary>
    static void CompleteForHistory(JsonArray calls, int round)
    {
        var ids = new HashSet<string>();
        for (int i = 0; i < calls.Count; i++)
        {
            if (calls[i] is not JsonObject call || call["function"] is not JsonObject function)
                throw new FlowException($"tool_calls[{i}] in the model's reply has no function object; the reply is malformed.");
            string? id = Text(call["id"]);
            if (string.IsNullOrEmpty(id) || !ids.Add(id))
            {
                id = $"call_{round}_{i}";
                call["id"] = id;
                ids.Add(id);
            }
            call["type"] ??= "function";
            if (function["arguments"] is not JsonNode arguments)
                function["arguments"] = "{}";                                 // omitted for a function without parameters
            else if (arguments.GetValueKind() != JsonValueKind.String)
                function["arguments"] = arguments.ToJsonString(JsonOptions); // an object instead of its JSON string
        }
    }

    /// <summary>The calls of one reply, one after another: their results, in the calls' order.</summary>
    public static async Task<(string Content, bool Failed)[]> RunCallsAsync(
        IReadOnlyList<FunctionCall> calls, IReadOnlyList<Tool> tools, CancellationToken cancellationToken)
    {
        var results = new (string Content, bool Failed)[calls.Count];
        for (int i = 0; i < calls.Count; i++)
            results[i] = await RunToolCallAsync(calls[i].Name, calls[i].Arguments, tools, cancellationToken);
        return results;
    }

    /// <summary>
    /// Runs one call and returns the content of its tool message, and whether the call failed. A bad call never breaks
    /// the history: the model reads what went wrong and can try again. Every API answers a call with this text; only
    /// its envelope differs (the Anthropic API also marks a failed one with "is_error").
    /// </summary>
    public static async Task<(string Content, bool Failed)> RunToolCallAsync(
        string name, JsonNode? arguments, IReadOnlyList<Tool> tools, CancellationToken cancellationToken)
    {
        Tool? tool = tools.FirstOrDefault(t => t.Name == name);
        if (tool is null)
            return ($"Error: unknown function '{name}'. Available functions: {string.Join(", ", tools.Select(t => t.Name))}.", true);

        // `arguments` is a JSON string: parse it. The model writes it, so it may not be valid JSON, and it may not
        // match the schema: check both before your code sees it. (The Anthropic API sends an object, already parsed:
        // it is copied, since a check may edit it and the history keeps the original.)
        JsonNode? parsed;
        try
        {
            string text = Text(arguments) ?? "";
            parsed = arguments is JsonObject given ? given.DeepClone()
                : string.IsNullOrWhiteSpace(text) ? new JsonObject()
                : JsonNode.Parse(text, documentOptions: StrictParsing);
        }
        catch (JsonException e)
        {
            return ($"Error: the arguments for {name} are not valid JSON ({FirstSentence(e.Message)}). " +
                    "Send a JSON object that matches the function's parameters.", true);
        }
        if (parsed is not JsonObject args)
            return ($"Error: the arguments for {name} must be a JSON object, not {KindName(parsed)}.", true);
        if (tool.CheckArguments?.Invoke(args) is string problem)
            return ($"Error: {name}: {problem}.", true);

        try
        {
            return (await tool.Run(args, cancellationToken), false);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested) // a cancelled run stops the flow
        {
            return ($"Error: {name} failed: {e.Message}", true);
        }
    }

    /// <summary>The answer of a message without tool calls: its content, or its refusal if the model refused.</summary>
    static string FinalText(JsonObject message, Action<string>? log)
    {
        if (Text(message["content"]) is { Length: > 0 } content)
            return content;
        if (Text(message["refusal"]) is { Length: > 0 } refusal)
        {
            log?.Invoke("The model refused; its refusal is printed as the answer.");
            return refusal;
        }
        throw new FlowException("the model's message has neither text content nor tool_calls, so there is no answer to print.");
    }

    // The step log's pieces. The other APIs' loops (Apis/) share them, so that every API's log reads alike.

    /// <summary>The tools by name, as step 1 offers them.</summary>
    internal static string ToolNames(IReadOnlyList<Tool> tools) =>
        string.Join(", ", tools.Select(t => t.Name)) + (tools.Count > 0 && tools.All(t => t.Strict) ? " (each strict: true)" : "");

    /// <summary>The fields beyond the messages and the tools that steer tool use, as step 1 puts them on the wire.</summary>
    internal static string ToolFieldsShown(JsonObject request) => string.Concat(
        new[] { "tool_choice", "parallel_tool_calls" }.Where(request.ContainsKey).Select(field => $"; {field}: {request[field]!.ToJsonString(JsonOptions)}"));

    /// <summary>"; tokens: 20 in, 10 out" when the response reports its usage, else "".</summary>
    static string TokensShown(JsonObject response) =>
        response["usage"] is JsonObject usage && usage["prompt_tokens"] is JsonValue input && input.TryGetValue(out long inputTokens) &&
        usage["completion_tokens"] is JsonValue output && output.TryGetValue(out long outputTokens)
            ? $"; tokens: {inputTokens} in, {outputTokens} out"
            : "";

    internal static string HistoryShape(JsonArray messages) =>
        string.Join(", ", messages.Select(m => Text((m as JsonObject)?["role"]) switch
        {
            "assistant" when m!["tool_calls"] is JsonArray calls => $"assistant with {Plural(calls.Count, "tool call")}",
            string role => role,
            null => "?",
        }));

    /// <summary>The end of a flow whose model keeps asking for tools: a loop without a bound could run (and cost) forever.</summary>
    internal static FlowException RoundLimitReached(int maxRounds) => new(
        $"the model still asks for tools after {Plural(maxRounds, "round")} of tool calls (--max-rounds {maxRounds}), even " +
        "when asked to answer; stopping. Raise --max-rounds if the task needs more rounds.");

    /// <summary>Rounds in a row in which every call failed (an unknown function, bad arguments, an exception, a timeout)
    /// before the flow stops, as Microsoft.Extensions.AI's MaximumConsecutiveErrorsPerRequest does.</summary>
    internal const int MaxFailingRounds = 3;

    internal static FlowException OnlyFailures((string Content, bool Failed)[] results) => new(
        $"every tool call failed in {MaxFailingRounds} rounds in a row, the last with \"{Shown(results[^1].Content)}\"; stopping " +
        "rather than spend more rounds. Check the tools, and what the model sends them.");

    /// <summary>A reply that asks for tools but was cut off by the output limit (`why`): none of its calls is run.</summary>
    internal static FlowException CutOff(string why, int? maxTokens) => new(
        $"the reply was cut off by the output limit ({why}) in the middle of its tool calls, so none of them is run: " +
        $"their arguments may be incomplete. {(maxTokens is int max ? $"Raise --max-tokens (now {max})" : "Add --max-tokens N with a higher limit")}.");

    internal static string Plural(int count, string noun) => count == 1 ? $"1 {noun}" : $"{count} {noun}s";

    /// <summary>A text from the model for the step log, cut after 300 characters: a 10 MB argument is no log line.</summary>
    internal static string Shown(string? text) => text is { Length: > 300 } ? $"{text[..300]}… ({text.Length} characters)" : text ?? "";

    /// <summary>A text in quotes for the step log, cut after 80 characters.</summary>
    internal static string Quoted(string text) => text.Length <= 80 ? $"\"{text}\"" : $"\"{text[..80]}…\"";

    internal static string FirstSentence(string text) => text.Split(". ")[0].TrimEnd('.');

    /// <summary>The string in a JSON string value, else null (for a number, an object, null or nothing).</summary>
    internal static string? Text(JsonNode? node) =>
        node is JsonValue value && value.GetValueKind() == JsonValueKind.String ? value.GetValue<string>() : null;

    static string KindName(JsonNode? value) => value?.GetValueKind() switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };

    /// <summary>
    /// How this file writes JSON: "°", "'" and "+" as themselves rather than \u00B0, \u0027 and \u002B. Still valid JSON
    /// (the strict default only matters for JSON embedded in HTML), and readable on the wire and in a trace.
    /// </summary>
    internal static readonly JsonSerializerOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>How this file reads JSON from elsewhere: an object with a key twice is invalid, not read as either.</summary>
    internal static readonly JsonDocumentOptions StrictParsing = new() { AllowDuplicateProperties = false };
}

/// <summary>
/// How a flow runs. ToolChoice is `tool_choice`: "auto" (the model decides), "none" (text only), "required" (at least
/// one call) or a function's name (that one); ParallelToolCalls false sends `parallel_tool_calls: false` (one call per
/// reply at most); left at their defaults, neither is sent. MaxTokens: `max_tokens`, the most tokens a reply may
/// have (unset: the API's default). MaxRounds: replies asking for tools answered; the request after the last asks for
/// an answer (tool_choice "none"). RequestFields: more fields sent as they are on every request (e.g. temperature).
/// Log: the step log, a line per step (null: none).
/// </summary>
public sealed record FlowOptions
{
    public string? ToolChoice { get; init; }
    public bool ParallelToolCalls { get; init; } = true;
    public int? MaxTokens { get; init; }
    public int MaxRounds { get; init; } = 8;
    public JsonObject? RequestFields { get; init; }
    public Action<string>? Log { get; init; }

    /// <summary>Runs the calls of one reply, their results in the calls' order: by default one after another
    /// (ToolCalling.RunCallsAsync); the program runs them its own way (Client/ToolRunner.cs).</summary>
    public Func<IReadOnlyList<FunctionCall>, IReadOnlyList<Tool>, CancellationToken, Task<(string Content, bool Failed)[]>>? RunCalls { get; init; }

    /// <summary>"required" and a function's name make the model call a tool, on every request that carries them.</summary>
    public bool ForcesACall => ToolChoice is not (null or "auto" or "none");
}

/// <summary>One call of a reply: the function's name, and the arguments the model wrote (a JSON string; the Anthropic
/// API sends an object).</summary>
public sealed record FunctionCall(string Name, JsonNode? Arguments);

// ===== The HTTP call: one POST of a JSON body to {base}/chat/completions, the JSON response back. ====================

/// <summary>
/// A Chat Completions endpoint: where to send, with which key. PostAsync is the one HTTP call of the four steps. The
/// program uses a ChatClient whose PostAsync sends the same request with retries, timeouts, streaming and recording
/// (Client/ResilientChatClient.cs), and points one at /responses or /messages for the other APIs (Apis/).
/// </summary>
public class ChatClient(HttpClient http, string baseUrl, string? apiKey, string path = "/chat/completions")
{
    /// <summary>Where the requests go: the base URL (https://api.openai.com/v1, http://localhost:11434/v1) and the path.</summary>
    public Uri Url { get; } = new(baseUrl.TrimEnd('/') + path);

    /// <summary>POSTs the request as JSON and returns the JSON object the API answers; an error status or a reply that
    /// is not a JSON object is a FlowException that says what the server said.</summary>
    public virtual async Task<JsonObject> PostAsync(JsonObject request, CancellationToken cancellationToken = default)
    {
        using var message = new HttpRequestMessage(HttpMethod.Post, Url)
        {
            Content = new StringContent(request.ToJsonString(ToolCalling.JsonOptions), Encoding.UTF8, new MediaTypeHeaderValue("application/json")),
        };
        if (apiKey is not null)
            message.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        using HttpResponseMessage response = await http.SendAsync(message, cancellationToken);
        string body = await response.Content.ReadAsStringAsync(cancellationToken);
        if (!response.IsSuccessStatusCode) // the body says why: {"error": {"message", "type", "param", "code"}}
            throw new FlowException($"HTTP {(int)response.StatusCode} {response.ReasonPhrase}: {body}");
        try
        {
            return JsonNode.Parse(body, documentOptions: ToolCalling.StrictParsing) as JsonObject
                ?? throw new FlowException($"the response is not a JSON object: {body}");
        }
        catch (JsonException e)
        {
            throw new FlowException($"the response is not valid JSON ({e.Message}): {body}");
        }
    }
}

/// <summary>An expected failure of the flow or the API: a message of one line, for the user to read.</summary>
public sealed class FlowException(string message) : Exception(OneLine(message))
{
    // The message may quote a server or a model, whose text can hold line breaks and other control characters.
    static string OneLine(string text) => string.Concat(text.Select(c => char.IsControl(c) ? ' ' : c));
}
