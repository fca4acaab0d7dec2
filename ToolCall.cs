// ToolCall.cs: function calling (tool use) over an OpenAI-compatible Chat Completions API, in four steps.
//
//   Step 1  Send the messages plus `tools`: each function's name, description and JSON-schema parameters.
//   Step 2  The model may answer not with text but with message.tool_calls:
//           [{"id", "type": "function", "function": {"name", "arguments"}}], where `arguments` is a JSON *string*.
//   Step 3  Run each function yourself. Append the model's assistant message (the one carrying tool_calls)
//           to the history FIRST, then one role:"tool" message per call with its tool_call_id and the result.
//   Step 4  Send the history again. The model answers with text, or asks for more tools (back to step 2, with a limit).
//
// Read it top to bottom: your functions, the four steps, the HTTP call (and, for --stream, how server-sent events
// become the same reply), the same four steps on the OpenAI Responses API and on the Anthropic Messages API (--api),
// the helpers the steps use, the run as a diagram (--diagram), the command line, and last, clearly marked, a replay
// server that answers from recorded responses ("cassettes") so the demo and the tests run offline. Only the .NET
// base class library: HttpClient and System.Text.Json.Nodes.
//
//   dotnet run ToolCall.cs -- --replay weather.json                      offline, from a cassette beside this file
//   OPENAI_API_KEY=... dotnet run ToolCall.cs -- "Weather in Paris?"      live, against the OpenAI API
//   dotnet run ToolCall.cs -- --base-url http://localhost:11434/v1 --model llama3.2   any OpenAI-compatible server
//   dotnet run ToolCall.cs -- --replay weather-stream.json --stream      the same four steps, the reply streamed
//   dotnet run ToolCall.cs -- --api anthropic --replay anthropic-weather.json   on the Anthropic Messages API

using System;
using System.Buffers;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

// =====================================================================================================================
// Your functions. The model never runs them: it only asks you to, by name, with JSON arguments.
// =====================================================================================================================

/// <summary>A function the model may call: what the model is told (name, description, JSON schema) and your code.</summary>
sealed class Tool(string name, string description, JsonObject parameters, Func<JsonObject, string> run)
{
    public string Name { get; } = name;
    public string Description { get; } = description;
    public JsonObject Parameters { get; } = parameters;
    public Func<JsonObject, string> Run { get; } = run;

    /// <summary>
    /// This tool's entry in a request's `tools`, written once, when the tool is made (from a copy of the schema: a
    /// JSON node has one parent). A JsonElement is read-only and has no parent, so every request can carry this same
    /// one; a deep copy of the schema for every request would cost more than the rest of the request.
    /// </summary>
    public JsonElement Definition { get; } =
        JsonElement.Parse(Json.Utf8(ToolCalling.Definition(name, description, (JsonObject)parameters.DeepClone())).Span);
}

static class DemoTools
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
            name: "get_weather",
            description: "Returns the current weather in the given city",
            parameters: new JsonObject
            {
                ["type"] = "object",
                ["properties"] = new JsonObject
                {
                    ["city"] = CityParameter(),
                },
                ["required"] = new JsonArray("city"),
            },
            // The arguments were checked against the schema above before this runs (see ToolCalling.RunToolCall).
            run: arguments => GetWeather(arguments["city"]!.GetValue<string>())),

        // A richer schema, to show what models handle: an integer, an enum, an optional parameter and an array.
        new Tool(
            name: "get_forecast",
            description: "Returns the daily weather forecast for the given city for the next days",
            parameters: new JsonObject
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
            run: arguments =>
            {
                // 3.0 is an integer to JSON Schema (the check above let it through), but GetValue<int>() would throw on it.
                int days = (int)arguments["days"]!.GetValue<double>();
                if (days is < 1 or > 7)
                    throw new ArgumentException($"days must be from 1 to 7, not {days}");
                return GetForecast(
                    arguments["city"]!.GetValue<string>(),
                    days,
                    Json.String(arguments["unit"]) ?? "celsius",
                    [.. (arguments["include"] as JsonArray ?? []).Select(item => item!.GetValue<string>())]);
            }),
    ];
}

// =====================================================================================================================
// The four steps
// =====================================================================================================================

/// <summary>
/// The request fields that steer tool use; at their defaults they stay off the request (the API's defaults apply).
///   ToolChoice         `tool_choice`: "auto" (the model decides), "none" (answer in text), "required" (call at least
///                      one tool), or a function's name (call exactly that one).
///   ParallelToolCalls  false sends `parallel_tool_calls: false`: at most one tool call per reply.
///   Strict             every function gets `strict: true` and its schema in strict form (see StrictSchema).
/// </summary>
sealed record ToolOptions(string? ToolChoice = null, bool ParallelToolCalls = true, bool Strict = false)
{
    public static readonly ToolOptions Default = new();

    /// <summary>"required" and a function's name make the model call a tool, on every request that carries them.</summary>
    public bool ForcesACall => ToolChoice is not (null or "auto" or "none");

    /// <summary>The `tool_choice` value: a mode as a string, a function as {"type":"function","function":{"name"}}.</summary>
    public JsonNode? ToolChoiceValue() => ToolChoice switch
    {
        null => null,
        "auto" or "none" or "required" => JsonValue.Create(ToolChoice),
        string name => new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = name } },
    };
}

static class ToolCalling
{
    /// <summary>Runs the whole flow for one question and returns the model's final text.</summary>
    public static async Task<string> RunAsync(
        ChatClient chat, string model, string question, IReadOnlyList<Tool> tools, ToolOptions options, int maxRounds,
        StepLog log, CancellationToken cancellationToken)
    {
        // Step 1: send the question and the tools. The request object *is* the conversation: step 3 appends to its
        // `messages` and step 4 sends the same object again, so the history can never drift from what was sent.
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question });
        var request = new JsonObject
        {
            ["model"] = model,
            ["messages"] = messages,
            ["tools"] = ToolDefinitions(tools, options.Strict),
        };
        if (options.ToolChoiceValue() is JsonNode toolChoice)
            request["tool_choice"] = toolChoice;
        if (!options.ParallelToolCalls)
            request["parallel_tool_calls"] = false;
        log.Step(1, $"POST {chat.Url}: 1 message ({Quoted(question)}), tools: {string.Join(", ", tools.Select(t => t.Name))}{ToolFieldsShown(request, options)}");
        JsonObject response = await chat.PostAsync(request, cancellationToken);

        for (int round = 1; ; round++)
        {
            // Step 2: read choices[0].message. Decide on the presence of tool_calls, not on finish_reason: some
            // OpenAI-compatible servers answer "stop" (or nothing) while the message carries tool calls.
            (JsonObject message, string finishReason) = TakeFirstMessage(response);
            int step = round == 1 ? 2 : 4; // the reply to step 1 is read in step 2; every later reply is step 4's
            if (message["tool_calls"] is not JsonArray { Count: > 0 } calls)
            {
                log.Step(step, $"the model answers with text (finish_reason \"{finishReason}\"{chat.LastUsage})");
                return FinalText(message, log);
            }
            log.Step(step, $"the model asks for {Plural(calls.Count, "tool call")} (finish_reason \"{finishReason}\"{chat.LastUsage})");
            if (round > maxRounds)
                throw RoundLimitReached(maxRounds);

            // Step 3: the assistant message goes into the history first: the API rejects tool results that do not
            // follow the message that asked for them. Then one role:"tool" message per call, in the calls' order;
            // leave one call unanswered and the next request fails.
            CompleteForHistory(calls, round);
            messages.Add((JsonNode)message); // (JsonNode): the non-generic Add, see Json
            foreach (JsonObject call in calls.Cast<JsonObject>())
            {
                string id = call["id"]!.GetValue<string>();
                JsonObject function = (JsonObject)call["function"]!;
                string name = Json.String(function["name"]) ?? "";
                string result = RunToolCall(name, function["arguments"], tools);
                log.Step(3, $"{name}({Json.String(function["arguments"])}) -> {result}");
                JsonNode toolMessage = new JsonObject { ["role"] = "tool", ["tool_call_id"] = id, ["content"] = result };
                messages.Add(toolMessage);
            }

            // Step 4: send the whole history again. The reply goes back to step 2: text ends the flow, more tool calls
            // start another round.
            string released = "";
            if (options.ForcesACall && round == 1)
            {
                // "required" or a function's name forces a tool call on *every* request that carries it: sent again,
                // the model could never answer in text and the loop would only end at --max-rounds. The forced call
                // has been made and answered; from here on the model chooses.
                request["tool_choice"] = "auto";
                released = "; tool_choice now \"auto\"";
            }
            log.Step(4, $"POST {chat.Url}: {Plural(messages.Count, "message")} ({HistoryShape(messages)}){released}");
            response = await chat.PostAsync(request, cancellationToken);
        }
    }

    /// <summary>
    /// The `tools` array of step 1: each tool's Definition, {"type":"function","function":{name, description,
    /// parameters}}, sent as it is. With `strict`, each function also gets "strict": true and its schema rewritten to
    /// the strict form; a schema that still breaks the strict rules stops here, before anything is sent, since the API
    /// would only answer it with a 400.
    /// </summary>
    public static JsonArray ToolDefinitions(IReadOnlyList<Tool> tools, bool strict = false)
    {
        var definitions = new JsonArray();
        foreach (Tool tool in tools)
        {
            // The tool's Definition is read-only and shared; JsonObject.Create wraps it for this request without copying.
            JsonNode? definition = strict ? StrictDefinition(tool) : JsonObject.Create(tool.Definition);
            definitions.Add(definition);
        }
        return definitions;
    }

    /// <summary>One function in `tools`: {"type":"function","function":{name, description, parameters}}.</summary>
    public static JsonObject Definition(string name, string description, JsonObject parameters) => new()
    {
        ["type"] = "function",
        ["function"] = new JsonObject { ["name"] = name, ["description"] = description, ["parameters"] = parameters },
    };

    static JsonObject StrictDefinition(Tool tool)
    {
        JsonObject definition = Definition(tool.Name, tool.Description, Parameters(tool, strict: true));
        ((JsonObject)definition["function"]!)["strict"] = true;
        return definition;
    }

    /// <summary>A tool's JSON schema for one request (a JSON node has one parent: each request gets its own copy),
    /// in strict form with `strict`. The Responses and Messages APIs' tools take it from here too.</summary>
    internal static JsonObject Parameters(Tool tool, bool strict)
    {
        if (!strict)
            return (JsonObject)tool.Parameters.DeepClone();
        JsonObject parameters = StrictSchema.Rewrite(tool.Parameters);
        if (StrictSchema.FirstViolation(parameters) is string violation)
            throw new UsageException(
                $"the schema of tool '{tool.Name}' breaks the strict-mode rules, so the API would reject it: {violation} " +
                "Fix the schema, or run without --strict.");
        return parameters;
    }

    /// <summary>For the step log: the fields beyond messages and tools that step 1 puts on the wire.</summary>
    internal static string ToolFieldsShown(JsonObject request, ToolOptions options) =>
        (options.Strict ? " (each strict: true)" : "") +
        string.Concat(new[] { "tool_choice", "parallel_tool_calls" }
            .Where(request.ContainsKey)
            .Select(field => $"; {field}: {Json.Compact(request[field])}"));

    /// <summary>Step 2's read: choices[0].message, detached from the response so that step 3 can append it as is.</summary>
    static (JsonObject Message, string FinishReason) TakeFirstMessage(JsonObject response)
    {
        if (response["choices"] is not JsonArray { Count: > 0 } choices || choices[0] is not JsonObject choice)
            throw new FlowException("the response has no choices, so there is no message to read. Try the request again.");
        if (choice["message"] is not JsonObject message)
            throw new FlowException("the response's choices[0] has no message object.");
        choice.Remove("message"); // detach: it is about to become part of the history
        return (message, Json.String(choice["finish_reason"]) ?? "missing");
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
            string? id = Json.String(call["id"]);
            if (string.IsNullOrEmpty(id) || !ids.Add(id))
            {
                id = $"call_{round}_{i}";
                call["id"] = id;
                ids.Add(id);
            }
            call["type"] ??= "function";
            if (function["arguments"] is not JsonNode arguments)
                function["arguments"] = "{}";                     // omitted for a function without parameters
            else if (arguments.GetValueKind() != JsonValueKind.String)
                function["arguments"] = Json.Compact(arguments);  // an object instead of its JSON string
        }
    }

    /// <summary>
    /// Runs one call and returns the content of its tool message. A bad call never breaks the history: the model
    /// reads what went wrong and can try again. Every API answers a call with this text; only its envelope differs.
    /// </summary>
    public static string RunToolCall(string name, JsonNode? arguments, IReadOnlyList<Tool> tools) =>
        RunToolCallReportingFailure(name, arguments, tools).Content;

    /// <summary>RunToolCall, also saying whether the call failed (Anthropic marks a failed call's result with is_error).</summary>
    public static (string Content, bool Failed) RunToolCallReportingFailure(string name, JsonNode? arguments, IReadOnlyList<Tool> tools)
    {
        Tool? tool = tools.FirstOrDefault(t => t.Name == name);
        if (tool is null)
            return ($"Error: unknown function '{name}'. Available functions: {string.Join(", ", tools.Select(t => t.Name))}.", true);

        // `arguments` is a JSON string: parse it. The model writes it, so it may not be valid JSON, and it may not
        // match the schema; check both before your code sees it. (Anthropic sends an object, `input`: already parsed,
        // it is copied, since the check below may edit it and the history keeps the original.)
        JsonNode? parsed;
        try
        {
            string text = Json.String(arguments) ?? "";
            parsed = arguments is JsonObject given ? given.DeepClone()
                : string.IsNullOrWhiteSpace(text) ? new JsonObject()
                : Json.Parse(text);
        }
        catch (JsonException e)
        {
            return ($"Error: the arguments for {name} are not valid JSON ({FirstSentence(e.Message)}). " +
                    "Send a JSON object that matches the function's parameters.", true);
        }
        if (parsed is not JsonObject args)
            return ($"Error: the arguments for {name} must be a JSON object, not {Json.KindName(parsed)}.", true);
        // In strict mode every argument is required, so the model sends null for an optional one it leaves out:
        // read that null as "left out", and your function sees the same arguments with or without strict mode.
        Schema.RemoveNullOptionals(args, tool.Parameters);
        if (Schema.FirstProblem(args, tool.Parameters, "") is string problem)
            return ($"Error: {name}: {problem}.", true);

        try
        {
            return (tool.Run(args), false);
        }
        catch (Exception e)
        {
            return ($"Error: {name} failed: {e.Message}", true);
        }
    }

    /// <summary>The answer of a message without tool calls: its content, or its refusal if the model refused.</summary>
    static string FinalText(JsonObject message, StepLog log)
    {
        if (Json.String(message["content"]) is { Length: > 0 } content)
            return content;
        if (Json.String(message["refusal"]) is { Length: > 0 } refusal)
        {
            log.Info("The model refused; its refusal is printed as the answer.");
            return refusal;
        }
        throw new FlowException("the model's message has neither text content nor tool_calls, so there is no answer to print.");
    }

    internal static string HistoryShape(JsonArray messages) =>
        string.Join(", ", messages.Select(m => Json.String(Json.At(m, "role")) switch
        {
            "assistant" when m!["tool_calls"] is JsonArray calls => $"assistant with {Plural(calls.Count, "tool call")}",
            string role => role,
            null => "?",
        }));

    /// <summary>The end of a flow whose model keeps asking for tools: a loop without a bound could run (and cost) forever.</summary>
    internal static FlowException RoundLimitReached(int maxRounds) => new(
        $"the model still asks for tools after {Plural(maxRounds, "round")} of tool calls (--max-rounds {maxRounds}); " +
        "stopping. Raise --max-rounds if the task needs more rounds.");

    internal static string Plural(int count, string noun) => count == 1 ? $"1 {noun}" : $"{count} {noun}s";

    /// <summary>A text in quotes for the step log, cut after 80 characters.</summary>
    internal static string Quoted(string text) => text.Length <= 80 ? $"\"{text}\"" : $"\"{text[..80]}…\"";

    internal static string FirstSentence(string text) => text.Split(". ")[0].TrimEnd('.');
}

/// <summary>An expected failure of the flow or the API: one line on stderr, exit code 1.</summary>
sealed class FlowException(string message) : Exception(OneLine(message))
{
    // The message may quote a server or a model, whose text can hold line breaks and other control characters.
    static string OneLine(string text) => string.Concat(text.Select(c => char.IsControl(c) ? ' ' : c));
}
