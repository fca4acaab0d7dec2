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

return await Cli.MainAsync(args);

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
            return ($"Error: the arguments for {name} must be a JSON object, not {Schema.KindName(parsed)}.", true);
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

// =====================================================================================================================
// The HTTP call: one POST of a JSON body to {base}/chat/completions (or /responses, /messages), the JSON response back.
// =====================================================================================================================

/// <summary>
/// The three APIs this file speaks (--api). The four steps are the same on each; the shapes on the wire differ. Chat
/// Completions comes first and in full; the other two follow in sections of their own, after streaming.
/// </summary>
enum Api { Chat, Responses, Anthropic }

/// <summary>
/// One HTTP path for every API: the same retries, timeouts, recording and tracing. What differs is small and named
/// here: the endpoint (Path), how the key is sent (NewRequest), how a stream is asked for and read, and the usage fields.
/// </summary>
sealed class ChatClient(HttpClient http, string baseUrl, string? apiKey, StepLog log, Recorder? recorder = null, Api api = Api.Chat)
{
    /// <summary>The Messages API version this file is written against; Anthropic requires it on every request.</summary>
    public const string AnthropicVersion = "2023-06-01";

    /// <summary>The endpoint, relative to the base URL.</summary>
    public string Path { get; } = PathOf(api);

    public Uri Url { get; } = new(baseUrl.TrimEnd('/') + PathOf(api));

    public static string PathOf(Api api) => api switch
    {
        Api.Responses => "/responses",
        Api.Anthropic => "/messages",
        _ => "/chat/completions",
    };

    /// <summary>When to send a failed request again, and how long one attempt may take (--retries, --timeout).</summary>
    public RetryPolicy Retries { get; init; } = new();

    // Every request body is written into one buffer and every response body read into another (see Json.Utf8 and
    // ReadBodyAsync), instead of new arrays for each: a ChatClient sends one request at a time, as a conversation
    // does, so the bytes of one exchange (and of its retries) are done with before the next one's are written.
    readonly ArrayBufferWriter<byte> requestBuffer = new();
    readonly ArrayBufferWriter<byte> responseBuffer = new();

    /// <summary>Token usage of the last response, as text for the step log ("" when the server reports none).</summary>
    public string LastUsage => lastUsage is (long input, long output) ? $"; tokens: {input} in, {output} out" : "";

    (long Input, long Output)? lastUsage; // kept as numbers: the text is only made for a log that writes

    public int Requests { get; private set; }
    public long PromptTokens { get; private set; }
    public long CompletionTokens { get; private set; }

    /// <summary>--stream: when set, every request asks for the reply as server-sent events, and their text is written
    /// here as it arrives (see "Streaming" below).</summary>
    public TextWriter? StreamTextTo { get; init; }

    /// <summary>Whether the last reply came as a stream, so its text has been printed already.</summary>
    public bool LastReplyStreamed { get; private set; }

    public async Task<JsonObject> PostAsync(JsonObject body, CancellationToken cancellationToken)
    {
        if (StreamTextTo is not null)
        {
            // The same request, asking for the reply in pieces. Chat Completions sends the usage in one last chunk only
            // when asked for; the Responses and Messages APIs always send it (in response.completed, message_delta).
            body["stream"] = true;
            if (api == Api.Chat)
                body["stream_options"] = new JsonObject { ["include_usage"] = true };
        }
        // Serialize once, straight to UTF-8: the same bytes go on the wire (on every retry), into the trace and into
        // a recording.
        ReadOnlyMemory<byte> bytes = Json.Utf8(body, requestBuffer);
        log.Trace($"POST {Url}{HeadersShown()}", body);

        using IDisposable? waiting = log.ShowWaiting();
        JsonObject completion = await SendAsync(bytes, waiting, cancellationToken);
        CountUsage(completion["usage"]);
        return completion;
    }

    /// <summary>
    /// Sends the request until it gets a completion or a failure that retrying cannot fix (see RetryPolicy). Each
    /// attempt has --timeout seconds to deliver the whole response, body included; a retry sends the very same bytes.
    /// </summary>
    async Task<JsonObject> SendAsync(ReadOnlyMemory<byte> requestBody, IDisposable? waiting, CancellationToken cancellationToken)
    {
        for (int retry = 0; ; retry++)
        {
            using var timeout = new CancellationTokenSource(Retries.Timeout, Retries.Time);
            using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
            FailedAttempt failure;
            try
            {
                using HttpResponseMessage response = await http.SendAsync(NewRequest(requestBody), HttpCompletionOption.ResponseHeadersRead, attempt.Token);
                LastReplyStreamed = response.IsSuccessStatusCode && response.Content.Headers.ContentType?.MediaType == "text/event-stream";
                if (LastReplyStreamed)
                    return await ReadEventStreamAsync(response, requestBody, waiting, attempt.Token, cancellationToken);
                ReadOnlyMemory<byte> content = await ReadBodyAsync(response, attempt.Token);
                Requests++;
                int status = (int)response.StatusCode;
                recorder?.Add(Path, requestBody, status, content.Span, response.Headers);
                if (response.IsSuccessStatusCode)
                {
                    JsonObject completion = ReadCompletion(status, response.Content.Headers.ContentType?.MediaType, content.Span, api);
                    log.Trace($"HTTP {status}", completion);
                    return completion;
                }
                failure = ApiFailure(response, content.Span);
            }
            catch (Exception e) when ((e is HttpRequestException or IOException) && !cancellationToken.IsCancellationRequested)
            {
                string reason = RetryPolicy.Reason(e);
                failure = new FailedAttempt(
                    $"a connection error ({reason})", $"could not reach {Url} ({reason}). Check the base URL and that the server is running.", Retriable: true);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                string seconds = RetryPolicy.Seconds(Retries.Timeout);
                failure = new FailedAttempt(
                    $"no response within {seconds} s", $"no complete response from {Url} within {seconds} s (--timeout). Raise --timeout if the model needs longer.", Retriable: true);
            }

            if (!failure.Retriable || retry >= Retries.MaxRetries)
                throw new FlowException(failure.Error + RetryPolicy.GaveUpAfter(retry));
            (TimeSpan wait, string why) = Retries.NextWait(retry, failure.ServerWait);
            log.Info($"retry {retry + 1}/{Retries.MaxRetries} after {failure.What}: waiting {RetryPolicy.Seconds(wait)} s ({why})");
            await Retries.WaitAsync(wait, cancellationToken);
        }
    }

    /// <summary>
    /// A streamed reply becomes the same completion object a JSON reply is, so steps 2 to 4 read it unchanged. A
    /// stream that breaks before its first event is retried like any connection error; after it, the text is on the
    /// screen, so a cut or a timeout is an error line, not a retry that would print it twice. The events are recorded
    /// and traced even when the stream fails half way: that reply is the one worth keeping.
    /// </summary>
    async Task<JsonObject> ReadEventStreamAsync(
        HttpResponseMessage response, ReadOnlyMemory<byte> requestBytes, IDisposable? waiting, CancellationToken attempt,
        CancellationToken cancellationToken)
    {
        int status = (int)response.StatusCode;
        var events = new JsonArray();
        JsonObject completion;
        try
        {
            await using Stream stream = await response.Content.ReadAsStreamAsync(attempt);
            TextWriter output = StreamTextTo ?? TextWriter.Null;
            completion = api switch
            {
                Api.Responses => await StreamedResponse.ReadAsync(stream, output, events, waiting, attempt),
                Api.Anthropic => await StreamedMessage.ReadAsync(stream, output, events, waiting, attempt),
                _ => await StreamedReply.ReadAsync(stream, output, events, waiting, attempt),
            };
        }
        catch (OperationCanceledException) when (events.Count > 0 && !cancellationToken.IsCancellationRequested)
        {
            throw new FlowException(
                $"the stream did not end within {RetryPolicy.Seconds(Retries.Timeout)} s (--timeout), after {ToolCalling.Plural(events.Count, "event")}. " +
                "The reply is incomplete, so none of it is used; raise --timeout if the model needs longer.");
        }
        finally
        {
            if (events.Count > 0)
            {
                Requests++;
                recorder?.Add(Path, requestBytes, status, events);
                log.Trace($"HTTP {status}: {ToolCalling.Plural(events.Count, "server-sent event")}",
                    events.Select(e => ServerSentEvents.Format(e, named: api != Api.Chat).TrimEnd('\n')));
            }
        }
        log.Trace("The completion assembled from the events", completion);
        return completion;
    }

    /// <summary>The whole response body, read into responseBuffer: valid until the next response is read.</summary>
    async Task<ReadOnlyMemory<byte>> ReadBodyAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        responseBuffer.ResetWrittenCount();
        await using Stream body = await response.Content.ReadAsStreamAsync(cancellationToken);
        int read;
        while ((read = await body.ReadAsync(responseBuffer.GetMemory(4096), cancellationToken)) > 0)
            responseBuffer.Advance(read);
        return responseBuffer.WrittenMemory;
    }

    HttpRequestMessage NewRequest(ReadOnlyMemory<byte> body)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, Url) { Content = new ReadOnlyMemoryContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        if (api == Api.Anthropic)
        {
            // Anthropic: the key in a header of its own, and the API version, which every request must name.
            if (apiKey is not null)
                request.Headers.Add("x-api-key", apiKey);
            request.Headers.Add("anthropic-version", AnthropicVersion);
        }
        else if (apiKey is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        }
        return request;
    }

    /// <summary>For the trace: the headers NewRequest adds, the key always as [redacted].</summary>
    string HeadersShown() => api == Api.Anthropic
        ? (apiKey is null ? "" : "\nx-api-key: [redacted]") + $"\nanthropic-version: {AnthropicVersion}"
        : apiKey is null ? "" : "\nAuthorization: Bearer [redacted]";

    /// <summary>An error status: the line to show (with the API's own message) and whether a retry may help.</summary>
    FailedAttempt ApiFailure(HttpResponseMessage response, ReadOnlySpan<byte> content)
    {
        int status = (int)response.StatusCode;
        // Read error bodies as text, so that a proxy's HTML page can be shown too.
        string text = Encoding.UTF8.GetString(content);
        JsonNode? error = Json.TryParse(text);
        log.Trace($"HTTP {status}", error ?? JsonValue.Create(text));
        return new FailedAttempt(
            $"HTTP {status} {response.ReasonPhrase}".TrimEnd(),
            ApiError.Describe(status, response.ReasonPhrase, error, text),
            RetryPolicy.IsRetriable(status),
            Retries.ServerWait(response.Headers));
    }

    /// <summary>
    /// A 2xx body must be a JSON object (a chat.completion, a response, a message). A broken one is an error, not a
    /// retry: the server did answer (and the model's work is paid for), and the same request tends to get the same
    /// broken answer.
    /// </summary>
    static JsonObject ReadCompletion(int status, string? contentType, ReadOnlySpan<byte> body, Api api)
    {
        string what = $"HTTP {status}, but the response body";
        if (body.Trim(" \t\r\n"u8).IsEmpty)
            throw new FlowException($"{what} is empty: there is no completion to read.");
        JsonNode? json;
        try
        {
            json = Json.Parse(body);
        }
        catch (JsonException e)
        {
            if (Json.IsCutOff(body))
                throw new FlowException($"{what} is cut off: its {body.Length} bytes end in the middle of the JSON. Try again.");
            string type = contentType is null or "application/json" ? "" : $" ({contentType})";
            string start = Encoding.UTF8.GetString(body[..Math.Min(body.Length, 40)]).ReplaceLineEndings(" ") + (body.Length > 40 ? "…" : "");
            throw new FlowException(
                $"{what}{type} is not JSON ({ToolCalling.FirstSentence(e.Message)}); it starts with \"{start}\". " +
                $"Check that the base URL points at {(api == Api.Anthropic ? "the Anthropic Messages API" : "an OpenAI-compatible API")}.");
        }
        if (json is not JsonObject completion)
            throw new FlowException($"{what} is {Schema.KindName(json)}, not a JSON object.");
        // "\ud800" alone parses, but could not be written back into the trace or the history. Only a \u escape can
        // spell one, so only a body with such an escape needs the trial write (most have none: it costs a copy).
        try
        {
            if (body.IndexOf("\\u"u8) >= 0)
                Json.Utf8(completion);
        }
        catch (InvalidOperationException)
        {
            throw new FlowException($"{what} holds a string that is not valid Unicode (an unpaired \\uD800-\\uDFFF escape).");
        }
        return completion;
    }

    void CountUsage(JsonNode? usage)
    {
        // Chat Completions counts prompt_tokens and completion_tokens; the Responses and Messages APIs, input_tokens
        // and output_tokens.
        (string inputField, string outputField) = api == Api.Chat ? ("prompt_tokens", "completion_tokens") : ("input_tokens", "output_tokens");
        if (Json.At(usage, inputField) is not JsonValue prompt || !prompt.TryGetValue(out long input) ||
            Json.At(usage, outputField) is not JsonValue completion || !completion.TryGetValue(out long output))
        {
            lastUsage = null;
            return;
        }
        PromptTokens += input;
        CompletionTokens += output;
        lastUsage = (input, output);
    }
}

// =====================================================================================================================
// Surviving the real API: retries, timeouts
// =====================================================================================================================

/// <summary>
/// When and how soon to send a failed request again, as the official OpenAI SDKs do (openai-python's _base_client.py;
/// openai-node uses the same numbers):
/// - retry 408 Request Timeout, 409 Conflict, 429 Too Many Requests, any 5xx, a timeout and a connection error;
///   never another 4xx (400, 401, 403, 404, 422...): the same request would fail the same way;
/// - at most 2 retries by default (--retries N);
/// - wait 0.5 s, then 1 s, 2 s... up to 8 s, each shortened by up to a quarter at random ("jitter"), so that clients
///   that failed together do not all come back at the same moment;
/// - but when the server says how long to wait (retry-after-ms, or Retry-After in seconds or as an HTTP date), wait
///   that long, if it is more than 0 and at most 60 s; a longer wait is not honoured (the SDKs fall back to backoff).
/// </summary>
sealed class RetryPolicy
{
    static readonly TimeSpan FirstBackoff = TimeSpan.FromSeconds(0.5);
    static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(8);
    public static readonly TimeSpan MaxServerWait = TimeSpan.FromSeconds(60);

    public int MaxRetries { get; init; } = 2;

    /// <summary>How long one attempt may take, from sending the request to the last byte of the response.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>The clock of the timeouts and of Retry-After dates. Tests pass one they move by hand.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>How to wait before a retry: Task.Delay on Time unless set. Tests pass one that only notes the wait.</summary>
    public Func<TimeSpan, CancellationToken, Task>? Delay { get; init; }

    /// <summary>The source of the jitter. Tests pass a seeded one.</summary>
    public Random Random { get; init; } = Random.Shared;

    public static bool IsRetriable(int status) => status is 408 or 409 or 429 or >= 500;

    /// <summary>How long the server asks the client to wait, and the header that said so; null when it does not say.</summary>
    public (TimeSpan Wait, string Header)? ServerWait(HttpResponseHeaders headers)
    {
        // retry-after-ms (OpenAI's own) is more precise than Retry-After's whole seconds, so it wins.
        if (Header(headers, "retry-after-ms") is string ms && Number(ms) is double milliseconds)
            return (TimeSpan.FromMilliseconds(milliseconds), "retry-after-ms");
        if (Header(headers, "Retry-After") is not string retryAfter)
            return null;
        if (Number(retryAfter) is double seconds)
            return (TimeSpan.FromSeconds(seconds), "Retry-After");
        if (DateTimeOffset.TryParseExact(retryAfter, "r", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out DateTimeOffset date))
            return (date - Time.GetUtcNow(), "Retry-After"); // an HTTP date: "Wed, 21 Oct 2015 07:28:00 GMT"
        return null;
    }

    /// <summary>The wait before retry number retry + 1 (retry counts from 0), and why it is that long.</summary>
    public (TimeSpan Wait, string Why) NextWait(int retry, (TimeSpan Wait, string Header)? server)
    {
        if (server is ({ } asked, string header) && asked > TimeSpan.Zero && asked <= MaxServerWait)
            return (asked, header);
        double doubled = FirstBackoff.TotalSeconds * Math.Pow(2, Math.Min(retry, 30));
        TimeSpan backoff = TimeSpan.FromSeconds(Math.Min(doubled, MaxBackoff.TotalSeconds) * (1 - 0.25 * Random.NextDouble()));
        return server is ({ } tooLong, string name) && tooLong > MaxServerWait
            ? (backoff, $"backoff; the server's {name} of {Seconds(tooLong)} s is over the {Seconds(MaxServerWait)} s cap")
            : (backoff, "backoff");
    }

    public Task WaitAsync(TimeSpan wait, CancellationToken cancellationToken) =>
        Delay?.Invoke(wait, cancellationToken) ?? Task.Delay(wait, Time, cancellationToken);

    public static string GaveUpAfter(int retries) => retries switch
    {
        0 => "",
        1 => " (gave up after 1 retry)",
        _ => $" (gave up after {retries} retries)",
    };

    public static string Seconds(TimeSpan time) => time.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture);

    /// <summary>What went wrong with a connection, in a few words: the innermost message says it best.</summary>
    public static string Reason(Exception e)
    {
        while (e.InnerException is not null && e.InnerException is not OperationCanceledException)
            e = e.InnerException;
        return e.Message.TrimEnd('.');
    }

    static string? Header(HttpResponseHeaders headers, string name) =>
        headers.TryGetValues(name, out IEnumerable<string>? values) ? values.FirstOrDefault()?.Trim() : null;

    /// <summary>A finite number of seconds or milliseconds that a TimeSpan can hold ("1", "1.5"), else null.</summary>
    static double? Number(string text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && Math.Abs(value) < 1e9 ? value : null;
}

/// <summary>An attempt without a usable answer: `What` for the retry line, `Error` for the error line if it is the last.</summary>
sealed record FailedAttempt(string What, string Error, bool Retriable, (TimeSpan Wait, string Header)? ServerWait = null);

/// <summary>The API's own error shape: {"error": {"message", "type", "param", "code"}}.</summary>
static class ApiError
{
    public static JsonObject Create(string message, string type = "invalid_request_error", string? param = null, string? code = null) =>
        new() { ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = param, ["code"] = code } };

    /// <summary>One line for a failed request: the HTTP status and, when the body has one, the API's own message.</summary>
    public static string Describe(int status, string? reason, JsonNode? body, string text)
    {
        string head = $"HTTP {status} {reason}".TrimEnd();
        // {"error": {"message"}} as the API sends it; some servers send {"error": "..."} (Ollama) or {"message": "..."}.
        string? message = Json.String(Json.At(body, "error", "message")) ?? Json.String(Json.At(body, "error")) ?? Json.String(Json.At(body, "message"));
        if (message is not null)
            return $"{head}: {message}";
        string snippet = text.Length > 200 ? text[..200] + "…" : text;
        return snippet.Length == 0 ? $"{head} with an empty body." : $"{head}: {snippet.ReplaceLineEndings(" ")}";
    }
}

// =====================================================================================================================
// Streaming: server-sent events and tool-call fragments (--stream)
//
// With "stream": true the reply comes as server-sent events, each `data:` holding one chat.completion.chunk. Text
// arrives in pieces (delta.content); each tool call arrives in fragments (delta.tool_calls[]): its id, type and name
// in the first, then pieces of its `arguments` text, told apart from other calls' pieces by `index`. With
// stream_options.include_usage the last chunk carries only the usage, and `data: [DONE]` ends the stream.
// StreamedReply puts the pieces back together into the completion a JSON reply would have been, so the four steps
// read it unchanged.
// =====================================================================================================================

/// <summary>
/// The event-stream format (https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream),
/// as far as the three APIs use it: the data of each event. The BCL has a parser for it,
/// System.Net.ServerSentEvents.SseParser (the tests hold this one to it). The rules are written out here because they
/// are what a port to another language has to get right, and they fit in a screen.
/// The Responses and Messages APIs also name each event in an `event:` line, but each repeats that name in its data,
/// as "type", and that is what their readers below switch on. So the data is all any of the three needs: one reader
/// serves them all, and a proxy that drops `event:` lines breaks nothing.
/// </summary>
static class ServerSentEvents
{
    public static async IAsyncEnumerable<string> ReadDataAsync(Stream stream, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        // Always UTF-8, a leading BOM skipped. The reader's decoder keeps a character whose bytes arrive in two reads.
        using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: false);
        var data = new StringBuilder();
        // A line ends at CRLF, LF or CR; ReadLineAsync knows all three, even when CR and LF arrive in separate reads.
        while (await reader.ReadLineAsync(cancellationToken) is string line)
        {
            if (line.Length == 0)
            {
                // A blank line ends the event: its data lines, joined by "\n". An event without data is no event.
                if (data.Length > 0)
                    yield return data.ToString(0, data.Length - 1);
                data.Clear();
                continue;
            }
            if (line[0] == ':')
                continue; // a comment, such as the keep-alive ": ping"
            int colon = line.IndexOf(':');
            if ((colon < 0 ? line : line[..colon]) != "data")
                continue; // event (repeated in the data's "type"), id and retry: not needed
            string value = colon < 0 ? "" : line[(colon + 1)..];
            data.Append(value.StartsWith(' ') ? value[1..] : value).Append('\n'); // "data:x" and "data: x" both say "x"
        }
        // The stream has ended: an event still without its blank line is incomplete, and dropped.
    }

    /// <summary>
    /// One event as the APIs write it (the replay server sends this, --trace shows it): with `named`, as the Responses
    /// and Messages APIs do, an `event:` line with the data's "type"; then the data, a JSON object on one line and a
    /// string (such as "[DONE]") as it is, one `data:` line per line of it; and a blank line.
    /// </summary>
    public static string Format(JsonNode? item, bool named)
    {
        string data = item is JsonObject json ? Json.Compact(json) : Json.String(item) ?? "";
        string name = named && Json.String(Json.At(item, "type")) is string type && type.AsSpan().IndexOfAny('\r', '\n') < 0
            ? $"event: {type}\n"
            : "";
        return name + string.Concat(data.Split('\n').Select(line => $"data: {line}\n")) + "\n";
    }
}

/// <summary>
/// What the three APIs' stream readers share: reading the events up to the one that ends a reply, showing the text as
/// it arrives, and keeping every event (for --record and --trace). A stream that ends, is cut or carries an error
/// before that event throws: a reply cut short may lack a tool call or half of its arguments, so none of it goes into
/// the history. What the events mean differs by API, and is each reader's Add.
/// </summary>
abstract class EventStreamReader(TextWriter output)
{
    bool printed;

    /// <summary>The event that ends a reply, as the error line of a stream without it names it.</summary>
    protected abstract string EndMarker { get; }

    /// <summary>One event: its data as text and, when it is one, as a JSON object. Returns the whole reply once the
    /// event that ends it has come, else null.</summary>
    protected abstract JsonObject? Add(string data, JsonObject? json, int position);

    protected async Task<JsonObject> ReadEventsAsync(Stream stream, JsonArray events, IDisposable? waiting, CancellationToken cancellationToken)
    {
        try
        {
            await foreach (string data in ServerSentEvents.ReadDataAsync(stream, cancellationToken))
            {
                if (events.Count == 0)
                    waiting?.Dispose(); // the reply has begun: clear the "waiting" line, once, before any text shows
                JsonObject? json = UsableObject(data);
                events.Add(json ?? (JsonNode)JsonValue.Create(data)); // as sent: an object as JSON, anything else ([DONE]) as text
                if (Add(data, json, events.Count) is JsonObject reply)
                    return reply;
            }
        }
        catch (IOException e) when (events.Count > 0) // before the first event it is a connection error, and retried
        {
            throw Incomplete(events.Count, "was cut off", $" ({e.Message})");
        }
        finally
        {
            EndText();
        }
        throw Incomplete(events.Count, "ended");
    }

    /// <summary>The event's data as a JSON object, else null. An object holding an unpaired surrogate escape ("\ud800")
    /// counts as none: it parses, but could not be written back into a trace, a recording or the history.</summary>
    static JsonObject? UsableObject(string data)
    {
        if (Json.TryParse(data) is not JsonObject json)
            return null;
        try
        {
            Json.Utf8(json);
            return json;
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    FlowException Incomplete(int events, string how, string cause = "") => new(
        $"the stream {how} after {ToolCalling.Plural(events, "event")}, before {EndMarker}{cause}. " +
        "The reply may be incomplete, so none of it is used; try again.");

    protected static FlowException NotAnObject(int position, string data) =>
        new($"event {position} of the stream is not a valid JSON object: {(data.Length > 120 ? data[..120] + "…" : data)}");

    /// <summary>An error event: the server's message, whatever shape it came in.</summary>
    protected static FlowException ErrorEvent(string instead, JsonNode? message) =>
        new($"the stream carried an error instead of {instead}: {Json.String(message) ?? Json.Compact(message)}");

    /// <summary>A piece of text: kept, and shown at once (flushed), so a reader sees the words appear.</summary>
    protected void Print(StringBuilder text, JsonNode? piece)
    {
        if (Json.String(piece) is not { Length: > 0 } words)
            return;
        text.Append(words);
        output.Write(words);
        output.Flush();
        printed = true;
    }

    /// <summary>Ends the printed text with a line break, also when the stream failed, so an error gets a line of its own.</summary>
    void EndText()
    {
        if (printed)
            output.WriteLine();
        output.Flush();
    }

    protected static int? Index(JsonObject item, string name = "index") =>
        item[name] is JsonValue value && value.TryGetValue(out int index) ? index : null;
}

/// <summary>A streamed reply, put back together into the completion (with choices[0].message) a JSON reply would be.</summary>
sealed class StreamedReply(TextWriter output) : EventStreamReader(output)
{
    readonly StringBuilder content = new(), refusal = new();
    readonly List<PartialCall> calls = [];
    readonly Dictionary<int, PartialCall> callsByIndex = [];
    PartialCall? lastCall;
    JsonObject? firstChunk;
    JsonObject? usage;
    string role = "assistant";
    string? finishReason;
    bool hasChoice;

    /// <summary>
    /// Reads the events up to `data: [DONE]`, writing the text to `output` as it arrives and keeping every event in
    /// `events` (for --record and --trace). An error event, or a stream that ends before [DONE], throws (see
    /// EventStreamReader).
    /// </summary>
    public static Task<JsonObject> ReadAsync(
        Stream stream, TextWriter output, JsonArray events, IDisposable? waiting, CancellationToken cancellationToken) =>
        new StreamedReply(output).ReadEventsAsync(stream, events, waiting, cancellationToken);

    protected override string EndMarker => "data: [DONE]";

    protected override JsonObject? Add(string data, JsonObject? chunk, int position)
    {
        if (data == "[DONE]")
            return ToCompletion();
        if (chunk is null)
            throw NotAnObject(position, data);
        if (chunk["error"] is JsonNode error)
            throw ErrorEvent("the next chunk", Json.At(error, "message") ?? error);
        AddChunk(chunk);
        return null;
    }

    /// <summary>One chat.completion.chunk.</summary>
    void AddChunk(JsonObject chunk)
    {
        firstChunk ??= chunk;
        if (chunk["usage"] is JsonObject chunkUsage)
            usage = chunkUsage; // with include_usage: null in every chunk but the last, which has empty choices
        foreach (JsonNode? node in chunk["choices"] as JsonArray ?? [])
        {
            // This client asks for one choice (n defaults to 1); should a server send more, only the first is read.
            if (node is not JsonObject choice || (Index(choice) ?? 0) != 0)
                continue;
            hasChoice = true;
            finishReason = Json.String(choice["finish_reason"]) ?? finishReason;
            if (choice["delta"] is not JsonObject delta)
                continue;
            role = Json.String(delta["role"]) ?? role;
            Print(content, delta["content"]);
            Print(refusal, delta["refusal"]); // a refusal is printed as the answer too
            foreach (JsonNode? fragment in delta["tool_calls"] as JsonArray ?? [])
            {
                if (fragment is JsonObject callFragment)
                    AddFragment(callFragment);
            }
        }
    }

    /// <summary>
    /// One fragment of a tool call. The call it belongs to: the one with its `index`. Without an index (Gemini sends
    /// none): the one with its `id`, or a new call for an id not seen before. With neither: the call the previous
    /// fragment belonged to. id, type and name come whole, in the first fragment that has them; a missing id is
    /// generated in step 3 (CompleteForHistory), as for a JSON reply.
    /// </summary>
    void AddFragment(JsonObject fragment)
    {
        string? id = NonEmpty(fragment["id"]);
        int? index = Index(fragment);
        PartialCall? call = index is int i ? callsByIndex.GetValueOrDefault(i)
            : id is not null ? calls.Find(c => c.Id == id)
            : lastCall;
        if (call is null)
        {
            call = new PartialCall();
            calls.Add(call);
            if (index is int newIndex)
                callsByIndex[newIndex] = call;
        }
        lastCall = call;

        JsonObject? function = fragment["function"] as JsonObject;
        call.Id ??= id;
        call.Type ??= NonEmpty(fragment["type"]);
        call.Name ??= NonEmpty(function?["name"]);
        if (Json.String(function?["arguments"]) is string piece)
            call.AddArguments(piece);
        foreach ((string key, JsonNode? value) in fragment)
        {
            // Whatever else a provider puts on a call goes back with it, e.g. Gemini's extra_content (its thought
            // signature, which it wants to see again in the next request).
            if (key is not ("index" or "id" or "type" or "function"))
                call.Extra[key] = value?.DeepClone();
        }
    }

    JsonObject ToCompletion()
    {
        var choices = new JsonArray();
        if (hasChoice)
        {
            // The shape of a JSON reply's message, so that step 3 appends the same thing either way.
            var message = new JsonObject { ["role"] = role, ["content"] = content.Length > 0 ? content.ToString() : null };
            if (calls.Count > 0)
                message["tool_calls"] = new JsonArray([.. calls.Select(call => (JsonNode)call.ToJson())]);
            message["refusal"] = refusal.Length > 0 ? refusal.ToString() : null;
            JsonNode choice = new JsonObject { ["index"] = 0, ["message"] = message, ["logprobs"] = null, ["finish_reason"] = finishReason };
            choices.Add(choice);
        }
        return new JsonObject
        {
            ["id"] = firstChunk?["id"]?.DeepClone(),
            ["object"] = "chat.completion",
            ["created"] = firstChunk?["created"]?.DeepClone(),
            ["model"] = firstChunk?["model"]?.DeepClone(),
            ["choices"] = choices,
            ["usage"] = usage?.DeepClone(),
        };
    }

    static string? NonEmpty(JsonNode? node) => Json.String(node) is { Length: > 0 } text ? text : null;

    /// <summary>What has arrived so far of one tool call.</summary>
    sealed class PartialCall
    {
        readonly StringBuilder arguments = new();

        public string? Id { get; set; }
        public string? Type { get; set; }
        public string? Name { get; set; }
        public JsonObject Extra { get; } = [];

        /// <summary>
        /// The pieces split the arguments' text anywhere (inside a key, a \u escape, a number), so they are joined as
        /// text and parsed only in step 3. Once the arguments are a complete JSON value, appending could only break
        /// them: a piece that is a complete JSON value itself is the whole arguments sent again (some servers repeat
        /// them in a last fragment), and replaces them.
        /// </summary>
        public void AddArguments(string piece)
        {
            if (piece.TrimStart().StartsWith('{') && Json.TryParse(arguments.ToString()) is not null && Json.TryParse(piece) is not null)
                arguments.Clear();
            arguments.Append(piece);
        }

        public JsonObject ToJson()
        {
            // null id and type stay as placeholders, in their usual place; step 3 fills them in.
            var call = new JsonObject
            {
                ["id"] = Id,
                ["type"] = Type,
                ["function"] = new JsonObject { ["name"] = Name, ["arguments"] = arguments.ToString() },
            };
            foreach ((string key, JsonNode? value) in Extra)
                call[key] = value?.DeepClone();
            return call;
        }
    }
}

// =====================================================================================================================
// The same four steps on the OpenAI Responses API (--api responses)
//
// POST {base}/responses. The conversation is a list of `input` items, and the reply's `output` is a list of items
// too. What differs from Chat Completions, step by step:
//   Step 1  `tools` are flat: {"type":"function","name","description","parameters","strict"}, no "function" wrapper.
//           Send `strict` always: left out, the Responses API makes a schema strict when it can (Chat Completions never
//           does), and the model then sends null for every optional argument.
//   Step 2  A call is an output item {"type":"function_call","call_id","name","arguments"}; `arguments` is still a
//           JSON string. Decide on these items, not on `status` (a reply that calls tools is "completed" too).
//   Step 3  Append the output items as received, then one {"type":"function_call_output","call_id","output"} per call.
//           The call_id pairs them, not the item's own id ("fc_…"); leave a call unanswered and the next request fails.
//   Step 4  The text is in the `message` item, in its `output_text` parts. (The `output_text` field some SDKs offer
//           is theirs: the API does not send it.)
// Streamed, the reply is typed events (response.output_item.added, response.function_call_arguments.delta, …) that end
// with response.completed, not chunks that end with [DONE]; StreamedResponse turns them into the same response.
// =====================================================================================================================

static class ResponsesToolCalling
{
    /// <summary>Runs the whole flow for one question and returns the model's final text.</summary>
    public static async Task<string> RunAsync(
        ChatClient client, string model, string question, IReadOnlyList<Tool> tools, ToolOptions options, int maxRounds,
        StepLog log, CancellationToken cancellationToken)
    {
        // Step 1: send the question and the tools. As with Chat Completions, the request object is the conversation:
        // step 3 appends to its `input` and step 4 sends the same object again.
        var input = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question });
        var request = new JsonObject
        {
            ["model"] = model,
            ["input"] = input,
            ["tools"] = ToolDefinitions(tools, options.Strict),
        };
        if (ToolChoiceValue(options.ToolChoice) is JsonNode toolChoice)
            request["tool_choice"] = toolChoice;
        if (!options.ParallelToolCalls)
            request["parallel_tool_calls"] = false;
        log.Step(1, $"POST {client.Url}: 1 input item ({ToolCalling.Quoted(question)}), tools: {string.Join(", ", tools.Select(t => t.Name))}{ToolCalling.ToolFieldsShown(request, options)}");
        JsonObject response = await client.PostAsync(request, cancellationToken);

        for (int round = 1; ; round++)
        {
            // Step 2: read `output`. Its function_call items are the calls; without any, the reply is the answer.
            JsonArray output = TakeOutput(response);
            JsonObject[] calls = [.. output.OfType<JsonObject>().Where(item => Json.String(item["type"]) == "function_call")];
            string status = Json.String(response["status"]) ?? "missing";
            int step = round == 1 ? 2 : 4; // the reply to step 1 is read in step 2; every later reply is step 4's
            if (calls.Length == 0)
            {
                log.Step(step, $"the model answers with text (status \"{status}\"{client.LastUsage})");
                return OutputText(output, response, log);
            }
            log.Step(step, $"the model asks for {ToolCalling.Plural(calls.Length, "tool call")} (status \"{status}\"{client.LastUsage})");
            if (round > maxRounds)
                throw ToolCalling.RoundLimitReached(maxRounds);
            if (calls.FirstOrDefault(call => Json.String(call["call_id"]) is not { Length: > 0 }) is not null)
                throw new FlowException("a function_call item in the reply has no call_id, so no output could be paired with it; the reply is malformed.");

            // Step 3: the output items go into `input` first, as received: the function calls, and whatever came with
            // them (a reasoning model's reasoning items, which it needs to see again beside its calls). Then one
            // function_call_output per call, in the calls' order, each with its call's call_id.
            JsonNode?[] received = [.. output];
            output.Clear(); // a JSON node has one parent: the items move from the response into the conversation
            foreach (JsonNode? item in received)
                input.Add(item);
            foreach (JsonObject call in calls)
            {
                string name = Json.String(call["name"]) ?? "";
                string result = ToolCalling.RunToolCall(name, call["arguments"], tools);
                log.Step(3, $"{name}({Json.String(call["arguments"])}) -> {result}");
                JsonNode callOutput = new JsonObject { ["type"] = "function_call_output", ["call_id"] = call["call_id"]!.DeepClone(), ["output"] = result };
                input.Add(callOutput);
            }

            // Step 4: send the whole conversation again. The reply goes back to step 2: text ends the flow, more
            // function calls start another round.
            string released = "";
            if (options.ForcesACall && round == 1)
            {
                // As in Chat Completions: a forced call is forced on every request that carries the choice.
                request["tool_choice"] = "auto";
                released = "; tool_choice now \"auto\"";
            }
            log.Step(4, $"POST {client.Url}: {ToolCalling.Plural(input.Count, "input item")} ({InputShape(input)}){released}");
            response = await client.PostAsync(request, cancellationToken);
        }
    }

    /// <summary>
    /// The `tools` of step 1, flat: {"type":"function","name","description","parameters","strict"}. `strict` is sent
    /// false too: left out, the API would make the schema strict where it can (see the section's header).
    /// </summary>
    public static JsonArray ToolDefinitions(IReadOnlyList<Tool> tools, bool strict = false)
    {
        var definitions = new JsonArray();
        foreach (Tool tool in tools)
        {
            JsonNode definition = new JsonObject
            {
                ["type"] = "function",
                ["name"] = tool.Name,
                ["description"] = tool.Description,
                ["parameters"] = ToolCalling.Parameters(tool, strict),
                ["strict"] = strict,
            };
            definitions.Add(definition);
        }
        return definitions;
    }

    /// <summary>`tool_choice`: a mode as a string, as in Chat Completions; a function flat too, {"type":"function","name"}.</summary>
    static JsonNode? ToolChoiceValue(string? choice) => choice switch
    {
        null => null,
        "auto" or "none" or "required" => JsonValue.Create(choice),
        string name => new JsonObject { ["type"] = "function", ["name"] = name },
    };

    /// <summary>Step 2's read: `output`, detached from the response so that step 3 can move its items into `input`.</summary>
    static JsonArray TakeOutput(JsonObject response)
    {
        if (response["output"] is not JsonArray output)
            throw new FlowException("the response has no output array, so there is nothing to read. Try the request again.");
        response.Remove("output");
        return output;
    }

    /// <summary>The answer: the text of the `message` items' output_text parts, or their refusal if the model refused.</summary>
    static string OutputText(JsonArray output, JsonObject response, StepLog log)
    {
        JsonNode?[] parts = [.. output.Where(item => Json.String(Json.At(item, "type")) == "message").SelectMany(item => Json.At(item, "content") as JsonArray ?? [])];
        string Joined(string type, string field) =>
            string.Concat(parts.Where(part => Json.String(Json.At(part, "type")) == type).Select(part => Json.String(Json.At(part, field))));
        if (Joined("output_text", "text") is { Length: > 0 } text)
            return text;
        if (Joined("refusal", "refusal") is { Length: > 0 } refusal)
        {
            log.Info("The model refused; its refusal is printed as the answer.");
            return refusal;
        }
        string why = Json.String(Json.At(response, "incomplete_details", "reason")) is string reason ? $" (incomplete: {reason})" : "";
        throw new FlowException($"the response's output has neither text nor function_call items{why}, so there is no answer to print.");
    }

    internal static string InputShape(JsonArray input) =>
        string.Join(", ", input.Select(item => Json.String(Json.At(item, "type")) is string type and not "message"
            ? type
            : Json.String(Json.At(item, "role")) ?? "?"));
}

/// <summary>
/// A streamed Responses API reply, put back together into the response a JSON reply is. Each event's data says what it
/// is in "type". Output items are told apart by `output_index`: response.output_item.added starts one (a function_call
/// with empty arguments, a message with no parts yet), response.function_call_arguments.delta and
/// response.output_text.delta bring pieces of its arguments or text (joined as text, parsed only in step 3), their
/// .done events and response.output_item.done bring it whole. response.completed ends the reply with the rest of the
/// response (status, usage); its `output` is taken from the items, since not every server repeats them there.
/// </summary>
sealed class StreamedResponse(TextWriter output) : EventStreamReader(output)
{
    readonly SortedDictionary<int, PartialItem> items = [];

    public static Task<JsonObject> ReadAsync(
        Stream stream, TextWriter output, JsonArray events, IDisposable? waiting, CancellationToken cancellationToken) =>
        new StreamedResponse(output).ReadEventsAsync(stream, events, waiting, cancellationToken);

    protected override string EndMarker => "response.completed";

    protected override JsonObject? Add(string data, JsonObject? json, int position)
    {
        if (json is null)
            throw NotAnObject(position, data);
        // The events' objects stay as received (they are recorded): what is kept of them is copied.
        switch (Json.String(json["type"]))
        {
            case "response.output_item.added" when json["item"] is JsonObject item:
                ItemAt(json).Item = (JsonObject)item.DeepClone();
                break;
            case "response.function_call_arguments.delta":
                ItemAt(json).Arguments.Append(Json.String(json["delta"]));
                break;
            case "response.function_call_arguments.done" when Json.String(json["arguments"]) is string arguments:
                ItemAt(json).Arguments.Clear().Append(arguments); // whole: it replaces the pieces
                break;
            case "response.content_part.added" when json["part"] is JsonObject part:
                ItemAt(json).Parts[Index(json, "content_index") ?? 0] = (JsonObject)part.DeepClone();
                break;
            case "response.output_text.delta":
                Print(ItemAt(json).Text(Index(json, "content_index") ?? 0, "output_text"), json["delta"]);
                break;
            case "response.refusal.delta":
                Print(ItemAt(json).Text(Index(json, "content_index") ?? 0, "refusal"), json["delta"]);
                break;
            case "response.output_item.done" when json["item"] is JsonObject item:
                ItemAt(json).Done = (JsonObject)item.DeepClone(); // the item whole, as the server finished it
                break;
            case "response.completed" or "response.incomplete":
                return ToResponse(json["response"] as JsonObject ?? throw new FlowException($"event {position} ({Json.String(json["type"])}) has no response object."));
            case "response.failed":
                throw ErrorEvent("the response", Json.At(json, "response", "error", "message") ?? json);
            case "error":
                throw ErrorEvent("the response", json["message"] ?? json);
        }
        return null; // response.created, .in_progress, the other .done events: nothing the reply needs
    }

    /// <summary>The item an event is about: by output_index; without one, by item_id; else the last one.</summary>
    PartialItem ItemAt(JsonObject json)
    {
        int index = Index(json, "output_index")
            ?? items.Where(pair => Json.String(pair.Value.Item["id"]) is string id && id == Json.String(json["item_id"])).Select(pair => (int?)pair.Key).FirstOrDefault()
            ?? (items.Count > 0 ? items.Keys.Last() : 0);
        if (!items.TryGetValue(index, out PartialItem? item))
            items[index] = item = new PartialItem();
        return item;
    }

    JsonObject ToResponse(JsonObject completed)
    {
        var response = (JsonObject)completed.DeepClone();
        if (items.Count > 0)
            response["output"] = new JsonArray([.. items.Values.Select(item => (JsonNode)item.ToJson())]);
        return response;
    }

    /// <summary>What has arrived so far of one output item.</summary>
    sealed class PartialItem
    {
        public JsonObject Item { get; set; } = [];
        public JsonObject? Done { get; set; }
        public StringBuilder Arguments { get; } = new();
        public SortedDictionary<int, JsonObject> Parts { get; } = [];
        readonly SortedDictionary<int, (string Field, StringBuilder Text)> texts = [];

        /// <summary>The text of content part `index`, whose type is "output_text" (its field "text") or "refusal".</summary>
        public StringBuilder Text(int index, string type)
        {
            if (!texts.TryGetValue(index, out (string Field, StringBuilder Text) text))
                texts[index] = text = (type == "refusal" ? "refusal" : "text", new StringBuilder());
            return text.Text;
        }

        public JsonObject ToJson()
        {
            if (Done is not null)
                return Done;
            if (Json.String(Item["type"]) == "function_call")
                Item["arguments"] = Arguments.ToString();
            foreach ((int index, (string field, StringBuilder text)) in texts)
            {
                if (!Parts.ContainsKey(index))
                    Parts[index] = field == "text"
                        ? new JsonObject { ["type"] = "output_text", ["annotations"] = new JsonArray(), ["logprobs"] = new JsonArray() }
                        : new JsonObject { ["type"] = "refusal" };
                Parts[index][field] = text.ToString();
            }
            if (Parts.Count > 0)
                Item["content"] = new JsonArray([.. Parts.Values.Select(part => (JsonNode)part)]);
            return Item;
        }
    }
}

// =====================================================================================================================
// The same four steps on the Anthropic Messages API (--api anthropic)
//
// POST {base}/messages, with the key in `x-api-key` (not Authorization) and the API version in `anthropic-version`.
// The conversation is `messages` again, but a message's content is a list of blocks. What differs, step by step:
//   Step 1  `tools` are {name, description, input_schema}: no "type", no wrapper, and the schema is `input_schema`.
//           `max_tokens` is required.
//   Step 2  A call is a content block {"type":"tool_use","id","name","input"}, and `input` is a JSON *object*, not a
//           string. stop_reason is "tool_use" then; decide on the blocks, since they are what step 3 answers.
//   Step 3  Append the assistant's `content` as received (its text blocks too), then ONE user message holding a
//           {"type":"tool_result","tool_use_id","content"} block per call, results first, in the very next message;
//           a failed call says so with "is_error": true. There is no "tool" role.
//   Step 4  The answer is the text blocks of `content`.
// Streamed, the reply is events (message_start, content_block_start, content_block_delta with text_delta or
// input_json_delta, content_block_stop, message_delta, message_stop; ping and error) that StreamedMessage turns into the
// same message.
// =====================================================================================================================

static class AnthropicToolCalling
{
    /// <summary>The most tokens one reply may have: required by the Messages API (the OpenAI APIs have a default).</summary>
    public const int MaxTokens = 1024;

    /// <summary>Runs the whole flow for one question and returns the model's final text.</summary>
    public static async Task<string> RunAsync(
        ChatClient client, string model, string question, IReadOnlyList<Tool> tools, ToolOptions options, int maxRounds,
        StepLog log, CancellationToken cancellationToken)
    {
        // Step 1: send the question and the tools. As with Chat Completions, the request object is the conversation:
        // step 3 appends to its `messages` and step 4 sends the same object again.
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question });
        var request = new JsonObject
        {
            ["model"] = model,
            ["max_tokens"] = MaxTokens,
            ["messages"] = messages,
            ["tools"] = ToolDefinitions(tools),
        };
        if (ToolChoiceValue(options) is JsonObject toolChoice)
            request["tool_choice"] = toolChoice;
        log.Step(1, $"POST {client.Url}: 1 message ({ToolCalling.Quoted(question)}), tools: {string.Join(", ", tools.Select(t => t.Name))}{ToolCalling.ToolFieldsShown(request, options)}");
        JsonObject response = await client.PostAsync(request, cancellationToken);

        for (int round = 1; ; round++)
        {
            // Step 2: read `content`, a list of blocks. Its tool_use blocks are the calls; without any, it is the answer.
            JsonArray content = TakeContent(response);
            JsonObject[] calls = [.. content.OfType<JsonObject>().Where(block => Json.String(block["type"]) == "tool_use")];
            string stopReason = Json.String(response["stop_reason"]) ?? "missing";
            int step = round == 1 ? 2 : 4; // the reply to step 1 is read in step 2; every later reply is step 4's
            if (calls.Length == 0)
            {
                log.Step(step, $"the model answers with text (stop_reason \"{stopReason}\"{client.LastUsage})");
                return TextOf(content, stopReason);
            }
            log.Step(step, $"the model asks for {ToolCalling.Plural(calls.Length, "tool call")} (stop_reason \"{stopReason}\"{client.LastUsage})");
            if (round > maxRounds)
                throw ToolCalling.RoundLimitReached(maxRounds);
            if (calls.FirstOrDefault(call => Json.String(call["id"]) is not { Length: > 0 }) is not null)
                throw new FlowException("a tool_use block in the reply has no id, so no tool_result could be paired with it; the reply is malformed.");

            // Step 3: the assistant's content goes into the history first, as received (text and thinking blocks too).
            // Then ONE user message: a tool_result block per call, in the calls' order, each with its call's id, and
            // nothing before them. A failed call gets "is_error": true, so the model knows it did not work.
            JsonNode assistant = new JsonObject { ["role"] = "assistant", ["content"] = content };
            messages.Add(assistant);
            var results = new JsonArray();
            foreach (JsonObject call in calls)
            {
                string name = Json.String(call["name"]) ?? "";
                (string result, bool failed) = ToolCalling.RunToolCallReportingFailure(name, call["input"], tools);
                log.Step(3, $"{name}({Json.Compact(call["input"])}) -> {result}");
                var toolResult = new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = call["id"]!.DeepClone(), ["content"] = result };
                if (failed)
                    toolResult["is_error"] = true;
                results.Add((JsonNode)toolResult);
            }
            JsonNode answers = new JsonObject { ["role"] = "user", ["content"] = results };
            messages.Add(answers);

            // Step 4: send the whole history again. The reply goes back to step 2: text ends the flow, more tool_use
            // blocks start another round.
            string released = "";
            if (options.ForcesACall && round == 1)
            {
                // As in Chat Completions: a forced call ("any" or a tool) is forced on every request that carries it.
                request["tool_choice"] = ToolChoiceValue(options with { ToolChoice = "auto" });
                released = $"; tool_choice now {Json.Compact(request["tool_choice"])}";
            }
            log.Step(4, $"POST {client.Url}: {ToolCalling.Plural(messages.Count, "message")} ({HistoryShape(messages)}){released}");
            response = await client.PostAsync(request, cancellationToken);
        }
    }

    /// <summary>The `tools` of step 1: {name, description, input_schema}.</summary>
    public static JsonArray ToolDefinitions(IReadOnlyList<Tool> tools)
    {
        var definitions = new JsonArray();
        foreach (Tool tool in tools)
        {
            JsonNode definition = new JsonObject
            {
                ["name"] = tool.Name,
                ["description"] = tool.Description,
                ["input_schema"] = ToolCalling.Parameters(tool, strict: false),
            };
            definitions.Add(definition);
        }
        return definitions;
    }

    /// <summary>
    /// `tool_choice` is an object: {"type":"auto"}, {"type":"none"}, {"type":"any"} (what the OpenAI APIs call
    /// "required") or {"type":"tool","name"}. --no-parallel is a field of it, "disable_parallel_tool_use": true.
    /// </summary>
    static JsonObject? ToolChoiceValue(ToolOptions options)
    {
        if (options.ToolChoice is null && options.ParallelToolCalls)
            return null;
        string type = options.ToolChoice switch { null or "auto" => "auto", "none" => "none", "required" => "any", _ => "tool" };
        var choice = new JsonObject { ["type"] = type };
        if (type == "tool")
            choice["name"] = options.ToolChoice;
        if (!options.ParallelToolCalls)
            choice["disable_parallel_tool_use"] = true;
        return choice;
    }

    /// <summary>Step 2's read: `content`, detached from the response so that step 3 can append it as it is.</summary>
    static JsonArray TakeContent(JsonObject response)
    {
        if (response["content"] is not JsonArray content)
            throw new FlowException("the message has no content array, so there is nothing to read. Try the request again.");
        response.Remove("content");
        return content;
    }

    /// <summary>The answer: the text blocks, joined.</summary>
    static string TextOf(JsonArray content, string stopReason)
    {
        string text = string.Concat(content.Where(block => Json.String(Json.At(block, "type")) == "text").Select(block => Json.String(Json.At(block, "text"))));
        return text.Length > 0
            ? text
            : throw new FlowException($"the message has neither text nor tool_use blocks (stop_reason \"{stopReason}\"), so there is no answer to print.");
    }

    internal static string HistoryShape(JsonArray messages) =>
        string.Join(", ", messages.Select(message =>
        {
            string role = Json.String(Json.At(message, "role")) ?? "?";
            string[] types = [.. (Json.At(message, "content") as JsonArray ?? []).Select(block => Json.String(Json.At(block, "type")))
                .Where(type => type is "tool_use" or "tool_result").Select(type => type!)];
            return types.Length == 0 ? role : $"{role} with {ToolCalling.Plural(types.Length, types[0])}";
        }));
}

/// <summary>
/// A streamed Messages API reply, put back together into the message a JSON reply is. message_start brings the message
/// with empty `content`; each block then comes as content_block_start (a tool_use block with its id, name and an empty
/// input), content_block_delta events for its `index`, and content_block_stop. A delta appends to one field of its
/// block: text_delta to "text" (shown as it arrives), input_json_delta's partial_json to the input's JSON text (parsed
/// once the message is whole: the pieces split it anywhere), and with extended thinking, thinking_delta and
/// signature_delta to "thinking" and "signature". message_delta brings stop_reason and the usage so far; message_stop
/// ends the reply. ping keeps the connection alive; an error event ends the stream.
/// </summary>
sealed class StreamedMessage(TextWriter output) : EventStreamReader(output)
{
    readonly SortedDictionary<int, PartialBlock> blocks = [];
    JsonObject message = [];

    public static Task<JsonObject> ReadAsync(
        Stream stream, TextWriter output, JsonArray events, IDisposable? waiting, CancellationToken cancellationToken) =>
        new StreamedMessage(output).ReadEventsAsync(stream, events, waiting, cancellationToken);

    protected override string EndMarker => "message_stop";

    protected override JsonObject? Add(string data, JsonObject? json, int position)
    {
        if (json is null)
            throw NotAnObject(position, data);
        // The events' objects stay as received (they are recorded): what is kept of them is copied.
        switch (Json.String(json["type"]))
        {
            case "message_start" when json["message"] is JsonObject start:
                message = (JsonObject)start.DeepClone();
                break;
            case "content_block_start" when json["content_block"] is JsonObject block:
                blocks[Index(json) ?? blocks.Count] = new PartialBlock((JsonObject)block.DeepClone());
                break;
            case "content_block_delta" when json["delta"] is JsonObject delta:
                AddDelta(BlockAt(json), delta);
                break;
            case "message_delta":
                foreach ((string field, JsonNode? value) in json["delta"] as JsonObject ?? [])
                    message[field] = value?.DeepClone(); // stop_reason, stop_sequence
                if (json["usage"] is JsonObject usage)
                {
                    if (message["usage"] is not JsonObject total)
                        message["usage"] = total = [];
                    foreach ((string field, JsonNode? value) in usage)
                        total[field] = value?.DeepClone(); // the counts so far, not the last few: they replace
                }
                break;
            case "message_stop":
                return ToMessage();
            case "error":
                throw ErrorEvent("the message", Json.At(json, "error", "message") ?? json);
        }
        return null; // ping, content_block_stop: nothing to keep
    }

    PartialBlock BlockAt(JsonObject json)
    {
        int index = Index(json) ?? (blocks.Count > 0 ? blocks.Keys.Last() : 0);
        if (!blocks.TryGetValue(index, out PartialBlock? block))
            blocks[index] = block = new PartialBlock(new JsonObject { ["type"] = "text", ["text"] = "" });
        return block;
    }

    void AddDelta(PartialBlock block, JsonObject delta)
    {
        (string? field, string piece) = Json.String(delta["type"]) switch
        {
            "text_delta" => ("text", "text"),
            "input_json_delta" => ("input", "partial_json"),
            "thinking_delta" => ("thinking", "thinking"),
            "signature_delta" => ("signature", "signature"),
            _ => ((string?)null, ""),
        };
        if (field == "text")
            Print(block.Field(field), delta[piece]);
        else if (field is not null)
            block.Field(field).Append(Json.String(delta[piece]));
    }

    JsonObject ToMessage()
    {
        message["content"] = new JsonArray([.. blocks.Select(pair => (JsonNode)pair.Value.ToJson(pair.Key))]);
        return message;
    }

    /// <summary>What has arrived so far of one content block.</summary>
    sealed class PartialBlock(JsonObject block)
    {
        readonly Dictionary<string, StringBuilder> fields = [];

        /// <summary>The text of a field that deltas append to; "text", "thinking" and "signature" start from the block's
        /// own value, the input's JSON text from nothing (the block's input is {} until then).</summary>
        public StringBuilder Field(string name)
        {
            if (!fields.TryGetValue(name, out StringBuilder? text))
                fields[name] = text = new StringBuilder(name == "input" ? "" : Json.String(block[name]) ?? "");
            return text;
        }

        public JsonObject ToJson(int index)
        {
            foreach ((string name, StringBuilder text) in fields)
            {
                if (name != "input")
                    block[name] = text.ToString();
                else if (!string.IsNullOrWhiteSpace(text.ToString()))
                    block[name] = Input(text.ToString(), index); // no pieces (a tool without parameters): {} stays
            }
            return block;
        }

        JsonObject Input(string text, int index)
        {
            try
            {
                if (Json.Parse(text) is JsonObject input)
                    return input;
            }
            catch (JsonException)
            {
            }
            throw new FlowException(
                $"the input of content block {index} ({Json.String(block["name"])}) is not a JSON object once its streamed pieces are joined: " +
                $"{(text.Length > 120 ? text[..120] + "…" : text)}");
        }
    }
}

// =====================================================================================================================
// Helpers the steps use: checking arguments against the schema, JSON in and out, the step log.
// =====================================================================================================================

/// <summary>
/// The part of JSON Schema that function parameters use in practice: type, enum, required, properties, items.
/// The model may leave out a required argument or send the wrong type, so check before your code runs.
/// </summary>
static class Schema
{
    /// <summary>The first way `value` breaks `schema`, as a sentence for the model, or null when it fits.</summary>
    public static string? FirstProblem(JsonNode? value, JsonObject schema, string path)
    {
        string Where() => path.Length == 0 ? "the arguments" : $"argument '{path}'";
        if (schema["type"] is JsonNode type && !TypeMatches(value, type))
            return $"{Where()} must be {Describe(type)}, not {KindName(value)}";
        if (schema["enum"] is JsonArray allowed && !allowed.Any(a => JsonNode.DeepEquals(a, value)))
            return $"{Where()} must be one of {Json.Compact(allowed)}, not {Json.Compact(value)}";
        if (value is JsonObject obj)
        {
            JsonObject properties = schema["properties"] as JsonObject ?? [];
            foreach (JsonNode? required in schema["required"] as JsonArray ?? [])
            {
                string name = Json.String(required) ?? "";
                if (!obj.ContainsKey(name))
                {
                    string hint = Json.At(properties, name, "type") is JsonNode t ? $" ({Describe(t)})" : "";
                    return $"missing required argument '{Join(path, name)}'{hint}";
                }
            }
            foreach ((string name, JsonNode? propertyValue) in obj)
            {
                if (properties[name] is JsonObject propertySchema &&
                    FirstProblem(propertyValue, propertySchema, Join(path, name)) is string problem)
                    return problem;
            }
        }
        if (value is JsonArray array && schema["items"] is JsonObject itemSchema)
        {
            for (int i = 0; i < array.Count; i++)
            {
                if (FirstProblem(array[i], itemSchema, $"{path}[{i}]") is string problem)
                    return problem;
            }
        }
        return null;
    }

    /// <summary>Removes, in `value` and the objects within it, each argument that is null and not required.</summary>
    public static void RemoveNullOptionals(JsonNode? value, JsonObject schema)
    {
        if (value is JsonObject obj)
        {
            if (obj.Any(p => p.Value is null)) // most calls have none: then there is nothing to look up
            {
                HashSet<string?> required = [.. (schema["required"] as JsonArray ?? []).Select(Json.String)];
                foreach (string name in obj.Where(p => p.Value is null && !required.Contains(p.Key)).Select(p => p.Key).ToList())
                    obj.Remove(name);
            }
            foreach ((string name, JsonNode? property) in obj)
            {
                if (property is JsonObject or JsonArray && Json.At(schema, "properties", name) is JsonObject propertySchema)
                    RemoveNullOptionals(property, propertySchema);
            }
        }
        if (value is JsonArray array && schema["items"] is JsonObject itemSchema)
        {
            foreach (JsonNode? item in array)
                RemoveNullOptionals(item, itemSchema);
        }
    }

    static bool TypeMatches(JsonNode? value, JsonNode type) => type switch
    {
        JsonArray anyOf => anyOf.Any(t => t is not null && TypeMatches(value, t)),
        _ => Json.String(type) switch
        {
            "object" => value is JsonObject,
            "array" => value is JsonArray,
            "string" => value?.GetValueKind() == JsonValueKind.String,
            "boolean" => value?.GetValueKind() is JsonValueKind.True or JsonValueKind.False,
            "number" => value?.GetValueKind() == JsonValueKind.Number,
            "integer" => value?.GetValueKind() == JsonValueKind.Number && value.GetValue<double>() % 1 == 0,
            "null" => value is null,
            _ => true, // a type this check does not know: let the function decide
        },
    };

    static string Describe(JsonNode type) => type is JsonArray anyOf
        ? string.Join(" or ", anyOf.Select(t => Describe(t!)))
        : Json.String(type) switch { "object" => "an object", "array" => "an array", "integer" => "an integer", string t => $"a {t}", null => "?" };

    public static string KindName(JsonNode? value) => value?.GetValueKind() switch
    {
        null or JsonValueKind.Null => "null",
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        _ => "a boolean",
    };

    static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";
}

/// <summary>
/// Strict mode (`"strict": true` on a function): the API constrains the model's arguments to the schema, and accepts
/// only schemas in strict form. Every object says `"additionalProperties": false` and lists every property in
/// `required`; an optional property is made nullable instead ("type": ["string", "null"]), and the model sends null
/// for it. Rewrite produces that form; FirstViolation checks it in the API's words, for the client before it sends
/// and for the replay server, which answers with the API's 400.
/// </summary>
static class StrictSchema
{
    /// <summary>A copy of `schema` in strict form. An `additionalProperties` you set is kept: if it is not false,
    /// FirstViolation reports it, because replacing it would change what your function accepts.</summary>
    public static JsonObject Rewrite(JsonObject schema)
    {
        var strict = (JsonObject)schema.DeepClone();
        RewriteInPlace(strict);
        return strict;
    }

    static void RewriteInPlace(JsonObject schema)
    {
        if (schema["properties"] is JsonObject properties)
        {
            HashSet<string?> required = [.. (schema["required"] as JsonArray ?? []).Select(Json.String)];
            foreach ((string name, JsonNode? property) in properties)
            {
                if (property is not JsonObject propertySchema)
                    continue;
                RewriteInPlace(propertySchema);
                if (!required.Contains(name))
                    MakeNullable(propertySchema);
            }
            schema["required"] = new JsonArray([.. properties.Select(p => (JsonNode?)p.Key)]);
        }
        if (IsObject(schema))
            schema["additionalProperties"] ??= false;
        if (schema["items"] is JsonObject items)
            RewriteInPlace(items);
        foreach (JsonObject alternative in (schema["anyOf"] as JsonArray ?? []).OfType<JsonObject>())
            RewriteInPlace(alternative);
    }

    /// <summary>Lets the value be null, the strict way to say "optional". An enum must list null too: otherwise the
    /// type would allow null and the enum forbid it.</summary>
    static void MakeNullable(JsonObject schema)
    {
        if (schema["type"] is JsonArray types && !types.Any(IsNull))
            types.Add((JsonNode)"null");
        else if (Json.String(schema["type"]) is string type && type != "null")
            schema["type"] = new JsonArray(type, "null");
        else if (schema["type"] is null && schema["anyOf"] is JsonArray alternatives && !alternatives.Any(a => IsNull(Json.At(a, "type"))))
            alternatives.Add((JsonNode)new JsonObject { ["type"] = "null" });
        if (schema["enum"] is JsonArray values && !values.Contains(null))
            values.Add((JsonNode?)null);
    }

    /// <summary>The first way `schema` breaks the strict rules, as the API words it ("In context=(), ..."), or null.</summary>
    public static string? FirstViolation(JsonObject schema) => FirstViolation(schema, []);

    // `context` is the path from the root, printed as the API prints it: a Python tuple such as ('properties', 'days').
    static string? FirstViolation(JsonObject schema, string[] context)
    {
        string at = $"In context=({string.Join(", ", context)}{(context.Length == 1 ? "," : "")}), ";
        if (IsObject(schema))
        {
            if (schema["additionalProperties"]?.GetValueKind() != JsonValueKind.False)
                return at + "'additionalProperties' is required to be supplied and to be false.";
            JsonObject properties = schema["properties"] as JsonObject ?? [];
            string?[] required = schema["required"] is JsonArray list ? [.. list.Select(Json.String)] : [];
            const string RequiredRule = "'required' is required to be supplied and to be an array including every key in properties.";
            if (properties.Select(p => p.Key).FirstOrDefault(key => !required.Contains(key)) is string missing)
                return at + $"{RequiredRule} Missing '{missing}'.";
            if (required.FirstOrDefault(key => key is null || !properties.ContainsKey(key)) is string extra)
                return at + $"{RequiredRule} Extra required key '{extra}' supplied.";
        }
        foreach ((string name, JsonNode? property) in schema["properties"] as JsonObject ?? [])
        {
            if (property is JsonObject propertySchema && FirstViolation(propertySchema, [.. context, "'properties'", $"'{name}'"]) is string problem)
                return problem;
        }
        if (schema["items"] is JsonObject items && FirstViolation(items, [.. context, "'items'"]) is string itemProblem)
            return itemProblem;
        JsonArray alternatives = schema["anyOf"] as JsonArray ?? [];
        for (int i = 0; i < alternatives.Count; i++)
        {
            if (alternatives[i] is JsonObject alternative && FirstViolation(alternative, [.. context, "'anyOf'", $"{i}"]) is string problem)
                return problem;
        }
        return null;
    }

    static bool IsObject(JsonObject schema) =>
        schema.ContainsKey("properties") || Json.String(schema["type"]) == "object" ||
        schema["type"] is JsonArray types && types.Any(t => Json.String(t) == "object");

    static bool IsNull(JsonNode? type) => Json.String(type) == "null";
}

/// <summary>
/// JSON in and out. One .NET detail for the whole file: messages.Add(new JsonObject { … }) would pick JsonArray's
/// generic Add&lt;T&gt;, which may serialize by reflection and so breaks Native AOT; typed as JsonNode, the value
/// goes through the plain Add(JsonNode). That is why some values are declared `JsonNode x = new JsonObject …` first.
/// </summary>
static class Json
{
    // Relaxed escaping writes "°", "'" and "+" as themselves instead of \u00B0, \u0027 and \u002B: still valid JSON
    // (the strict default only matters for JSON embedded in HTML), and readable on the wire and in cassettes.
    static readonly JsonWriterOptions CompactOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    static readonly JsonWriterOptions IndentedOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, Indented = true };

    public static ReadOnlyMemory<byte> Utf8(JsonNode node, bool indented = false) =>
        Write(node, new ArrayBufferWriter<byte>(1024), indented ? IndentedOptions : CompactOptions);

    /// <summary>
    /// Compact UTF-8 JSON written into `buffer`, which is reused: what it held is overwritten, so the result is valid
    /// until the next call with the same buffer. Once the buffer has grown to the size of the requests, writing
    /// one allocates nothing (a new buffer would be allocated, and grown by copying, for every request).
    /// </summary>
    public static ReadOnlyMemory<byte> Utf8(JsonNode node, ArrayBufferWriter<byte> buffer)
    {
        buffer.ResetWrittenCount();
        return Write(node, buffer, CompactOptions);
    }

    static ReadOnlyMemory<byte> Write(JsonNode node, ArrayBufferWriter<byte> buffer, JsonWriterOptions options)
    {
        using (var writer = new Utf8JsonWriter(buffer, options))
            node.WriteTo(writer);
        return buffer.WrittenMemory;
    }

    public static string Compact(JsonNode? node) => node is null ? "null" : Encoding.UTF8.GetString(Utf8(node).Span);

    public static string Indented(JsonNode? node) => node is null ? "null" : Encoding.UTF8.GetString(Utf8(node, indented: true).Span);

    /// <summary>The node at a path of property names, or null where a step is missing or not an object. (The
    /// indexer node["name"] throws on an array or a value, and a server's JSON can be anything.)</summary>
    public static JsonNode? At(JsonNode? node, params ReadOnlySpan<string> path)
    {
        foreach (string name in path)
            node = node is JsonObject obj ? obj[name] : null;
        return node;
    }

    /// <summary>The string in a JSON string value, else null (for a number, an object, null or nothing).</summary>
    public static string? String(JsonNode? node) =>
        node is JsonValue value && value.GetValueKind() == JsonValueKind.String ? value.GetValue<string>() : null;

    // A JSON object with a key twice parses, then throws on first use; refuse it while parsing, as invalid JSON.
    static readonly JsonDocumentOptions ParseOptions = new() { AllowDuplicateProperties = false };

    /// <summary>Parses JSON from elsewhere (the server, the model, a file). Throws JsonException when it is not valid.</summary>
    public static JsonNode? Parse(ReadOnlySpan<byte> utf8) =>
        System.Text.Unicode.Utf8.IsValid(utf8) // checked first: the parser leaves names unchecked until first use, and then throws something else
            ? JsonNode.Parse(utf8, documentOptions: ParseOptions)
            : throw new JsonException("The text is not valid UTF-8.");

    public static JsonNode? Parse(string text) => JsonNode.Parse(text, documentOptions: ParseOptions);

    public static JsonNode? TryParse(string text)
    {
        try
        {
            return Parse(text);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>True when the bytes that failed to parse are the start of valid JSON that ends too soon: cut off in transit.</summary>
    public static bool IsCutOff(ReadOnlySpan<byte> utf8)
    {
        var reader = new Utf8JsonReader(utf8, isFinalBlock: false, state: default);
        try
        {
            while (reader.Read())
            {
            }
        }
        catch (JsonException)
        {
            return false; // wrong before its end: not JSON, however much more came
        }
        return reader.CurrentDepth > 0 || reader.TokenType is JsonTokenType.None or JsonTokenType.PropertyName;
    }
}

/// <summary>The step log on stderr: what each step sent and received. stdout carries only the answer.</summary>
sealed class StepLog(TextWriter stderr, bool trace = false, bool interactive = false)
{
    public static readonly StepLog Silent = new(TextWriter.Null);

    /// <summary>False for Silent, the log of a program that uses the flow as a library: then nothing is written,
    /// and no text is even built for it (see Text).</summary>
    public bool Writes { get; } = stderr != TextWriter.Null;

    WaitingLine? waiting; // the "waiting for the model" line, if one is on the screen: log lines go above it

    public void Step(int step, string text) => WriteLine($"Step {step}: {text}");

    public void Step(int step, [InterpolatedStringHandlerArgument("")] Text text)
    {
        if (Writes)
            Step(step, text.ToStringAndClear());
    }

    public void Info(string text) => WriteLine(text);

    void WriteLine(string line)
    {
        if (waiting is not null)
            waiting.WriteAbove(line);
        else
            stderr.WriteLine(line);
    }

    /// <summary>With --trace: the full JSON of each request and response.</summary>
    public void Trace(string title, JsonNode? json)
    {
        if (trace)
            WriteLine($"--- {title}\n{Json.Indented(json)}");
    }

    /// <summary>With --trace: lines as they were on the wire, such as the events of a stream.</summary>
    public void Trace(string title, IEnumerable<string> lines)
    {
        if (trace)
            WriteLine($"--- {title}\n{string.Join('\n', lines)}");
    }

    public void Trace([InterpolatedStringHandlerArgument("")] Text title, JsonNode? json)
    {
        if (Writes)
            Trace(title.ToStringAndClear(), json);
    }

    /// <summary>
    /// The $"..." text of a log line, built only when the log writes: for StepLog.Silent, C# evaluates none of its
    /// {holes}, so a silent flow spends nothing on sentences nobody reads. (An interpolated string handler: the
    /// compiler turns $"a {b}" into AppendLiteral("a"); AppendFormatted(b), run only if `enabled` is true.)
    /// </summary>
    [InterpolatedStringHandler]
    public ref struct Text
    {
        DefaultInterpolatedStringHandler builder;

        public Text(int literalLength, int formattedCount, StepLog log, out bool enabled)
        {
            enabled = log.Writes;
            builder = enabled ? new DefaultInterpolatedStringHandler(literalLength, formattedCount) : default;
        }

        public void AppendLiteral(string text) => builder.AppendLiteral(text);

        public void AppendFormatted<T>(T value) => builder.AppendFormatted(value);

        public string ToStringAndClear() => builder.ToStringAndClear();
    }

    /// <summary>On a terminal only (never in a pipe or CI): how long the model has been thinking.</summary>
    public IDisposable? ShowWaiting() => interactive ? waiting = new WaitingLine(stderr) : null;

    sealed class WaitingLine : IDisposable
    {
        readonly TextWriter stderr;
        readonly Stopwatch elapsed = Stopwatch.StartNew();
        readonly Timer timer;
        readonly Lock gate = new();
        bool shown, done;

        public WaitingLine(TextWriter stderr)
        {
            this.stderr = stderr;
            timer = new Timer(_ => Tick(), null, TimeSpan.FromMilliseconds(500), TimeSpan.FromMilliseconds(100));
        }

        void Tick()
        {
            lock (gate)
            {
                if (done)
                    return; // a tick that was already running when the reply came
                stderr.Write($"\r  waiting for the model... {elapsed.Elapsed.TotalSeconds:0.0}s ");
                stderr.Flush();
                shown = true;
            }
        }

        /// <summary>A log line (a retry, a step) while waiting: erase the waiting line, write the log line, and let the
        /// next tick draw the waiting line again below it.</summary>
        public void WriteAbove(string line)
        {
            lock (gate)
            {
                Erase();
                stderr.WriteLine(line);
            }
        }

        public void Dispose()
        {
            timer.Dispose();
            lock (gate)
            {
                Erase();
                done = true;
            }
        }

        void Erase()
        {
            if (shown)
                stderr.Write("\r" + new string(' ', 40) + "\r");
            shown = false;
        }
    }
}

/// <summary>An expected failure of the flow or the API: one line on stderr, exit code 1.</summary>
sealed class FlowException(string message) : Exception(OneLine(message))
{
    // The message may quote a server or a model, whose text can hold line breaks and other control characters.
    static string OneLine(string text) => string.Concat(text.Select(c => char.IsControl(c) ? ' ' : c));
}

/// <summary>A mistake in how the program was called or configured, found before anything is sent (an unknown option,
/// a tool schema that --strict cannot send): one line on stderr, exit code 2. Trying again cannot help.</summary>
sealed class UsageException(string message) : Exception(message);

// =====================================================================================================================
// The run as a picture (--diagram): a Mermaid sequence diagram of what was sent and received, printed after the answer.
// =====================================================================================================================

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

    public static string Mermaid(IReadOnlyList<Interaction> requests, string answer)
    {
        JsonArray history = History(requests[^1].RequestBody);
        var diagram = new StringBuilder("```mermaid\nsequenceDiagram\n");
        void Line(string line) => diagram.Append("    ").Append(line).Append('\n');

        foreach (string participant in new[] { "user", "client", "model", "tools" })
            Line($"participant {participant}");
        JsonNode? question = Json.String(Json.At(requests[^1].RequestBody, "input")) is string input
            ? JsonValue.Create(input)
            : Json.At(history.FirstOrDefault(entry => Json.String(Json.At(entry, "role")) == "user"), "content");
        Line($"user->>client: {Text(TextOf(question))}");
        bool answered = false, retry = false; // answered: a reply has come (so this is step 4); retry: the last one failed
        for (int i = 0; i < requests.Count; i++)
        {
            Line(retry ? "Note over client,model: the same request again (a retry)"
                : answered ? "Note over client,model: Step 4: the whole history again" : "Note over client,model: Step 1: the question and the tools");
            Line($"client->>model: {Request(requests[i], first: !answered)}");
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
            (string Id, string Call)[] calls = [.. added.SelectMany(Calls)];
            Line($"Note over client,model: Step 2: the reply asks for {ToolCalling.Plural(calls.Length, "tool call")}");
            Line($"model-->>client: calls {string.Join(", ", calls.Select(c => Text(c.Call)))}");
            Line("Note over client,tools: Step 3: run each call, then one result per call, in order");
            Dictionary<string, string> results = added.SelectMany(Results).GroupBy(r => r.Id).ToDictionary(g => g.Key, g => g.First().Text);
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

    static JsonArray History(JsonNode? body) => Json.At(body, "messages") as JsonArray ?? Json.At(body, "input") as JsonArray ?? [];

    /// <summary>"POST /chat/completions: messages [...]" (or /responses: input, /messages: messages) and, on the first
    /// request, the tools; then any field that steers tool use.</summary>
    static string Request(Interaction request, bool first)
    {
        JsonNode? body = request.RequestBody;
        JsonArray history = History(body);
        string shape = request.Path switch
        {
            "/responses" => $"input [{(history.Count == 0 ? "user" : ResponsesToolCalling.InputShape(history))}]",
            "/messages" => $"messages [{AnthropicToolCalling.HistoryShape(history)}]",
            _ => $"messages [{ToolCalling.HistoryShape(history)}]",
        };
        var text = new StringBuilder($"{request.Method} {request.Path}: {shape}");
        if (first && Json.At(body, "tools") is JsonArray tools)
            text.Append($", tools [{string.Join(", ", tools.Select(t => Json.String(Json.At(t, "function", "name")) ?? Json.String(Json.At(t, "name"))))}]");
        foreach (string field in new[] { "tool_choice", "parallel_tool_calls" })
        {
            if (Json.At(body, field) is JsonNode value)
                text.Append($", {field} {Json.Compact(value)}");
        }
        return Text(text.ToString(), cut: false);
    }

    /// <summary>The tool calls in one history entry, as "name(arguments)": a Chat Completions assistant message's
    /// tool_calls, a Responses function_call item, or a Messages assistant message's tool_use blocks.</summary>
    static IEnumerable<(string Id, string Call)> Calls(JsonNode? entry)
    {
        foreach (JsonNode? call in Json.At(entry, "tool_calls") as JsonArray ?? [])
            yield return (Json.String(Json.At(call, "id")) ?? "", $"{Json.String(Json.At(call, "function", "name"))}({Json.String(Json.At(call, "function", "arguments"))})");
        if (Json.String(Json.At(entry, "type")) == "function_call")
            yield return (Json.String(Json.At(entry, "call_id")) ?? "", $"{Json.String(Json.At(entry, "name"))}({Json.String(Json.At(entry, "arguments"))})");
        foreach (JsonNode? block in (Json.At(entry, "content") as JsonArray ?? []).Where(b => Json.String(Json.At(b, "type")) == "tool_use"))
            yield return (Json.String(Json.At(block, "id")) ?? "", $"{Json.String(Json.At(block, "name"))}({Json.Compact(Json.At(block, "input"))})");
    }

    /// <summary>The tool results in one history entry: a role "tool" message, a function_call_output item, or the
    /// tool_result blocks of a Messages user message.</summary>
    static IEnumerable<(string Id, string Text)> Results(JsonNode? entry)
    {
        if (Json.String(Json.At(entry, "role")) == "tool")
            yield return (Json.String(Json.At(entry, "tool_call_id")) ?? "", TextOf(Json.At(entry, "content")));
        if (Json.String(Json.At(entry, "type")) == "function_call_output")
            yield return (Json.String(Json.At(entry, "call_id")) ?? "", TextOf(Json.At(entry, "output")));
        foreach (JsonNode? block in (Json.At(entry, "content") as JsonArray ?? []).Where(b => Json.String(Json.At(b, "type")) == "tool_result"))
            yield return (Json.String(Json.At(block, "tool_use_id")) ?? "", TextOf(Json.At(block, "content")));
    }

    /// <summary>A content as text: a string, or the text of its parts or blocks.</summary>
    static string TextOf(JsonNode? content) =>
        Json.String(content) ?? string.Concat((content as JsonArray ?? []).Select(part => Json.String(Json.At(part, "text"))));

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

// =====================================================================================================================
// The command line
// =====================================================================================================================

static class Cli
{
    public const string DefaultQuestion = "What's the weather in London right now?";
    public const string DefaultModel = "gpt-4o-mini";
    public const string OpenAIBaseUrl = "https://api.openai.com/v1";
    public const string DefaultAnthropicModel = "claude-haiku-4-5";
    public const string AnthropicBaseUrl = "https://api.anthropic.com/v1";

    public const string Help = """
        ToolCall: LLM function calling in four explicit steps, over an OpenAI-compatible Chat Completions API
        (or, with --api, the OpenAI Responses API or the Anthropic Messages API).

        Usage:
          ToolCall [QUESTION] [options]        ask QUESTION (default: "What's the weather in London right now?")
          ToolCall serve CASSETTE [--port N] [--host ADDRESS]
                                               serve a cassette as a local API; prints its base URL

        Where it goes:
          With neither OPENAI_API_KEY nor a base URL, it replays cassettes/weather.json (or the cassette named
          after the options below) offline on a local port. Otherwise it is live: against --base-url or OPENAI_BASE_URL (default https://api.openai.com/v1).
          The key is read only from OPENAI_API_KEY; a key is optional when a base URL is given.
          With --api anthropic: ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL (default https://api.anthropic.com/v1) and
          ANTHROPIC_MODEL (default claude-haiku-4-5) instead.

        Options:
          --api API          chat (default: POST /chat/completions), responses (POST /responses) or anthropic
                             (POST /messages); offline: cassettes/responses-weather.json, anthropic-weather.json
          --base-url URL     the API's base URL, e.g. http://localhost:11434/v1 (or OPENAI_BASE_URL)
          --model NAME       the model (or OPENAI_MODEL; default gpt-4o-mini)
          --replay FILE      answer from a cassette on a local port instead of a live API
          --record FILE      write every request and response of this run to a cassette
          --trace            print the full JSON of each request and response on stderr (key redacted)
          --max-rounds N     answer at most N replies that ask for tools (default 8)
          --tool-choice C    tool_choice: auto, none, required, or a function's name to force that function
                             (offline: cassettes/tool-choice-C.json, bundled for auto, none, required, get_weather)
          --no-parallel      parallel_tool_calls: false, at most one tool call per reply (offline: no-parallel.json)
          --strict           strict: true on every function, its schema in strict form (offline: strict.json;
                             with --no-parallel: no-parallel+strict.json); not with --api anthropic
          --stream           ask for the replies as server-sent events and print the text as it arrives
                             (offline: weather-stream.json, responses-weather-stream.json, anthropic-weather-stream.json)
          --retries N        send a request again up to N times after 408, 409, 429, 5xx, a timeout or a
                             connection error, waiting as the server asks or backing off (default 2)
          --timeout SECONDS  the most one request may take, response body included (default 60)
          --diagram          after the answer, a Mermaid sequence diagram of the run on stdout (a ```mermaid block)
          --port N           with serve: the port to listen on (default 0: any free port)
          --host ADDRESS     with serve: the address to listen on (default 127.0.0.1: this machine only)
          -h, --help         this text

        Output: the answer on stdout (with --diagram, the diagram after it); the step log and errors on stderr.
        Exit codes: 0 ok, 1 API or flow failure, 2 usage or configuration error, 130 cancelled (Ctrl+C).
        """;

    public static async Task<int> MainAsync(string[] args)
    {
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, signal => { signal.Cancel = true; cancel.Cancel(); });
        bool interactive = !Console.IsErrorRedirected &&
                           string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI")) &&
                           Environment.GetEnvironmentVariable("TERM") != "dumb";
        return await RunAsync(args, Environment.GetEnvironmentVariable, Console.Out, Console.Error, cancel.Token, interactive);
    }

    /// <summary>The whole program, with its environment passed in, so the tests can run it in-process.</summary>
    public static async Task<int> RunAsync(
        string[] args, Func<string, string?> environment, TextWriter stdout, TextWriter stderr,
        CancellationToken cancellationToken, bool interactive = false)
    {
        try
        {
            Options options = Options.Parse(args);
            if (options.Help)
            {
                stdout.WriteLine(Help);
                return 0;
            }
            if (options.ServeCassette is not null)
                return await ServeAsync(options, stdout, stderr, cancellationToken);
            return await AskAsync(options, environment, stdout, stderr, cancellationToken, interactive);
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (FlowException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            stderr.WriteLine("cancelled.");
            return 130;
        }
    }

    static async Task<int> AskAsync(
        Options options, Func<string, string?> environment, TextWriter stdout, TextWriter stderr,
        CancellationToken cancellationToken, bool interactive)
    {
        ApiSettings settings = ApiSettings.For(options.Api);
        string? apiKey = NonEmpty(environment(settings.KeyVariable));
        string? baseUrl = options.BaseUrl ?? NonEmpty(environment(settings.BaseUrlVariable));
        string model = options.Model ?? NonEmpty(environment(settings.ModelVariable)) ?? settings.DefaultModel;
        var log = new StepLog(stderr, options.Trace, interactive);

        Tool[] tools = DemoTools.Create();
        CheckToolChoice(options.ToolChoice, tools);
        CheckOptionsFitTheApi(options);
        var toolOptions = new ToolOptions(options.ToolChoice, ParallelToolCalls: !options.NoParallel, options.Strict);
        if (options.Strict && !options.NoParallel)
            log.Info("Note: OpenAI documents strict schemas as not compatible with parallel function calls (a parallel call " +
                     "may not match the schema); add --no-parallel to rule them out.");

        string? replayPath = options.Replay;
        if (replayPath is not null && options.BaseUrl is not null)
            throw new UsageException("--replay and --base-url cannot be combined: --replay serves the cassette on its own local URL.");
        bool offlineDefault = replayPath is null && apiKey is null && baseUrl is null;
        if (offlineDefault)
        {
            string name = DefaultCassetteName(options);
            replayPath = FindDefaultCassette(name) ?? throw new UsageException(
                $"no cassettes/{name} here to replay. Pass --replay FILE, or set {settings.KeyVariable} or --base-url for a live run.");
        }
        if (options.Record is not null && Directory.Exists(options.Record))
            throw new UsageException($"--record {options.Record}: that is a folder. Name the cassette file to write, e.g. {Path.Combine(options.Record, "run.json")}.");
        if (options.Record is not null && Path.GetDirectoryName(Path.GetFullPath(options.Record)) is string folder && !Directory.Exists(folder))
            throw new UsageException($"--record {options.Record}: the folder {folder} does not exist. Create it or choose another path.");

        string? question = options.Question;
        ReplayServer? replay = null;
        if (replayPath is not null)
        {
            Cassette cassette = Cassette.Load(replayPath);
            CheckCassetteFits(cassette, replayPath, options);
            string? recordedQuestion = cassette.FirstQuestion();
            if (offlineDefault && question is not null && question != recordedQuestion)
                throw new UsageException(
                    $"offline, the demo replays {Shorter(replayPath)}, which answers only \"{recordedQuestion}\". " +
                    $"To ask your own question, set {settings.KeyVariable} (or --base-url for a local server such as Ollama).");
            question ??= recordedQuestion; // replaying without a question asks the recorded one
            replay = ReplayServer.Start(cassette);
            baseUrl = replay.BaseUrl;
            apiKey = null; // a replay needs no key, so the key never leaves the process
            string why = offlineDefault ? $"offline: no {settings.KeyVariable} or --base-url was given" : "offline";
            log.Info($"Replaying {Shorter(replayPath)} on {baseUrl} ({why}).");
        }
        baseUrl ??= settings.DefaultBaseUrl;
        if (!Uri.TryCreate(baseUrl, UriKind.Absolute, out Uri? parsed) || parsed.Scheme is not ("http" or "https"))
            throw new UsageException($"the base URL '{baseUrl}' is not an http(s) URL. Use e.g. --base-url http://localhost:11434/v1.");

        await using (replay)
        {
            // No HttpClient timeout: --timeout bounds each attempt, body included (see RetryPolicy).
            using var http = new HttpClient(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.All })
            {
                Timeout = Timeout.InfiniteTimeSpan,
            };
            // --diagram draws the run from its recorded requests, so it records too (in memory; only --record saves).
            Recorder? recorder = options.Record is null && !options.Diagram ? null : new Recorder(baseUrl);
            var chat = new ChatClient(http, baseUrl, apiKey, log, recorder, options.Api)
            {
                Retries = new RetryPolicy { MaxRetries = options.Retries, Timeout = TimeSpan.FromSeconds(options.TimeoutSeconds) },
                StreamTextTo = options.Stream ? stdout : null,
            };
            bool recorded = true;
            try
            {
                question ??= DefaultQuestion;
                string answer = await (options.Api switch
                {
                    Api.Responses => ResponsesToolCalling.RunAsync(chat, model, question, tools, toolOptions, options.MaxRounds, log, cancellationToken),
                    Api.Anthropic => AnthropicToolCalling.RunAsync(chat, model, question, tools, toolOptions, options.MaxRounds, log, cancellationToken),
                    _ => ToolCalling.RunAsync(chat, model, question, tools, toolOptions, options.MaxRounds, log, cancellationToken),
                });
                if (!chat.LastReplyStreamed)
                    stdout.WriteLine(answer); // a streamed answer has been printed as it arrived
                if (options.Diagram)
                    stdout.Write("\n" + RunDiagram.Mermaid(recorder!.Interactions, answer));
                if (chat.PromptTokens + chat.CompletionTokens > 0)
                    log.Info($"Tokens: {chat.PromptTokens + chat.CompletionTokens} in total ({chat.PromptTokens} in, {chat.CompletionTokens} out) over {ToolCalling.Plural(chat.Requests, "request")}.");
            }
            finally
            {
                // Saved even when the flow fails: the failing response is often the one worth keeping.
                if (recorder is not null && options.Record is not null)
                    recorded = SaveRecording(recorder, options.Record, log);
            }
            return recorded ? 0 : 1;
        }
    }

    /// <summary>Writes the recording; a file that cannot be written is one error line (and exit 1), not a crash
    /// that would hide the answer or the flow's own error.</summary>
    static bool SaveRecording(Recorder recorder, string path, StepLog log)
    {
        try
        {
            recorder.Save(path);
            log.Info($"Recorded {ToolCalling.Plural(recorder.Count, "interaction")} to {path}.");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log.Info($"error: could not write the recording to {path} ({e.Message}); nothing was written there.");
            return false;
        }
    }

    static async Task<int> ServeAsync(Options options, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        Cassette cassette = Cassette.Load(options.ServeCassette!);
        ReplayServer server;
        try
        {
            server = ReplayServer.Start(cassette, options.Port, stderr, options.Host);
        }
        catch (SocketException e)
        {
            throw new UsageException($"cannot listen on {options.Host} port {options.Port} ({e.Message}). Choose another --port (0: any free port) or --host.");
        }
        if (!IPAddress.IsLoopback(options.Host))
            stderr.WriteLine($"Warning: listening on {options.Host}, not only on this machine: anyone who can reach it can use this server.");
        await using (server)
        {
            stdout.WriteLine(server.BaseUrl); // the one line other programs read
            stdout.Flush();
            stderr.WriteLine($"Serving {options.ServeCassette} ({ToolCalling.Plural(cassette.Interactions.Count, "interaction")}) on {server.BaseUrl}; Ctrl+C or SIGTERM stops.");
            if (cassette.FirstQuestion() is string question)
                stderr.WriteLine($"Its question: \"{question}\" (a client must ask exactly this to match).");
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            catch (OperationCanceledException)
            {
            }
        }
        stderr.WriteLine("Stopped.");
        return 0;
    }

    /// <summary>The cassette the offline demo replays for these options: each option that changes the request on
    /// the wire has a cassette of its own, named after it (tool-choice-required.json, no-parallel.json, strict.json;
    /// options together: no-parallel+strict.json). Without any it is weather.json; --stream alone, weather-stream.json.
    /// For --api responses and anthropic, the same names with the API's in front: responses-weather.json.</summary>
    static string DefaultCassetteName(Options options) =>
        options.Api == Api.Chat ? ChatCassetteName(options) : $"{Options.NameOf(options.Api)}-{ChatCassetteName(options)}";

    static string ChatCassetteName(Options options)
    {
        var parts = new List<string>();
        if (options.ToolChoice is string choice)
            parts.Add($"tool-choice-{choice}");
        if (options.NoParallel)
            parts.Add("no-parallel");
        if (options.Strict)
            parts.Add("strict");
        if (options.Stream)
            parts.Add("stream");
        string name = string.Join('+', parts);
        return name switch { "" => "weather.json", "stream" => "weather-stream.json", _ => name + ".json" };
    }

    /// <summary>--tool-choice takes a mode or the name of one of the tools; anything else is caught before it is sent.</summary>
    static void CheckToolChoice(string? choice, IReadOnlyList<Tool> tools)
    {
        if (choice is null or "auto" or "none" or "required" || tools.Any(t => t.Name == choice))
            return;
        throw new UsageException(
            $"--tool-choice {choice}: no tool has that name. Use auto, none, required, or the name of a tool to force it: " +
            $"{string.Join(", ", tools.Select(t => t.Name))}.");
    }

    /// <summary>
    /// The tool-use options map onto every API (see each API's ToolChoiceValue), with two exceptions, refused here
    /// before anything is sent.
    /// </summary>
    static void CheckOptionsFitTheApi(Options options)
    {
        if (options.Api != Api.Anthropic)
            return;
        if (options.Strict)
            throw new UsageException(
                "--strict is for --api chat and responses: the Anthropic Messages API has strict tool use only as a beta, " +
                "behind an anthropic-beta header this reference does not send. Run without --strict.");
        if (options.ToolChoice == "none" && options.NoParallel)
            throw new UsageException(
                "--no-parallel does not go with --tool-choice none on --api anthropic: disable_parallel_tool_use is a field " +
                "of tool_choice, and {\"type\":\"none\"} has no such field (nor any tool call). Drop --no-parallel.");
    }

    /// <summary>A cassette holds one API's requests, streamed or not: replaying it with another --api, or with or
    /// without --stream when it was recorded the other way, could only end in a mismatch. Say so before it starts.</summary>
    static void CheckCassetteFits(Cassette cassette, string path, Options options)
    {
        Api api = options.Api;
        bool recordedStreamed = cassette.Interactions.Any(i => Json.At(i.RequestBody, "stream")?.GetValueKind() == JsonValueKind.True);
        if (recordedStreamed != options.Stream)
            throw new UsageException(recordedStreamed
                ? $"cassette {path} was recorded with --stream: add --stream, or replay a cassette recorded without it."
                : $"cassette {path} was recorded without --stream: drop --stream, or replay a cassette recorded with it.");
        string expected = ChatClient.PathOf(api);
        if (cassette.Interactions.FirstOrDefault(i => i.Path is "/chat/completions" or "/responses" or "/messages") is { } first && first.Path != expected)
        {
            string recorded = Options.NameOf(Options.Apis.First(a => ChatClient.PathOf(a) == first.Path));
            throw new UsageException(
                $"cassette {path} holds requests to {first.Path} (--api {recorded}), not to {expected} (--api {Options.NameOf(api)}). " +
                $"Pass --api {recorded}, or a cassette for this API.");
        }
    }

    /// <summary>Where each API's settings come from: chat and responses share OpenAI's variables, anthropic has its own.</summary>
    sealed record ApiSettings(string KeyVariable, string BaseUrlVariable, string ModelVariable, string DefaultBaseUrl, string DefaultModel)
    {
        public static ApiSettings For(Api api) => api == Api.Anthropic
            ? new("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL", AnthropicBaseUrl, DefaultAnthropicModel)
            : new("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", OpenAIBaseUrl, Cli.DefaultModel);
    }

    /// <summary>cassettes/NAME where you run it, else NAME beside you, else cassettes/NAME above the program.</summary>
    static string? FindDefaultCassette(string name)
    {
        string here = Environment.CurrentDirectory;
        foreach (string candidate in new[] { Path.Combine(here, "cassettes", name), Path.Combine(here, name) })
        {
            if (File.Exists(candidate))
                return candidate;
        }
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "cassettes", name);
            if (File.Exists(candidate))
                return candidate;
        }
        return null;
    }

    static string? NonEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;

    /// <summary>The path relative to where you are when that is below it, else as it is.</summary>
    static string Shorter(string path)
    {
        string relative = Path.GetRelativePath(Environment.CurrentDirectory, path);
        return relative.StartsWith("..", StringComparison.Ordinal) ? path : relative;
    }
}

sealed class Options
{
    public string? Question { get; private set; }
    public string? BaseUrl { get; private set; }
    public string? Model { get; private set; }
    public string? Replay { get; private set; }
    public string? Record { get; private set; }
    public bool Trace { get; private set; }
    public int MaxRounds { get; private set; } = 8;
    public string? ToolChoice { get; private set; }
    public bool NoParallel { get; private set; }
    public bool Strict { get; private set; }
    public bool Stream { get; private set; }
    public int Retries { get; private set; } = 2;
    public int TimeoutSeconds { get; private set; } = 60;
    public bool Diagram { get; private set; }
    public bool Help { get; private set; }
    public string? ServeCassette { get; private set; }
    public Api Api { get; private set; } = Api.Chat;
    public int Port { get; private set; }
    public IPAddress Host { get; private set; } = IPAddress.Loopback;

    public static Options Parse(string[] args)
    {
        var options = new Options();
        var words = new List<string>();
        bool serve = args.Length > 0 && args[0] == "serve";
        for (int i = serve ? 1 : 0; i < args.Length; i++)
        {
            string arg = args[i];
            string? inlineValue = null;
            if (arg.StartsWith("--", StringComparison.Ordinal) && arg.IndexOf('=') is int equals and > 2)
                (arg, inlineValue) = (arg[..equals], arg[(equals + 1)..]);
            string Value() => inlineValue ?? (i + 1 < args.Length ? args[++i] : throw new UsageException($"{arg} needs a value."));

            switch (arg)
            {
                case "-h" or "--help": options.Help = true; break;
                case "--base-url" when !serve: options.BaseUrl = Value(); break;
                case "--model" when !serve: options.Model = Value(); break;
                case "--replay" when !serve: options.Replay = Value(); break;
                case "--record" when !serve: options.Record = Value(); break;
                case "--trace" when !serve: options.Trace = true; break;
                case "--max-rounds" when !serve: options.MaxRounds = WholeNumber(arg, Value(), min: 1, max: 1000); break;
                case "--tool-choice" when !serve: options.ToolChoice = Value(); break;
                case "--no-parallel" when !serve: options.NoParallel = true; break;
                case "--strict" when !serve: options.Strict = true; break;
                case "--stream" when !serve: options.Stream = true; break;
                case "--api" when !serve: options.Api = ApiNamed(Value()); break;
                case "--retries" when !serve: options.Retries = WholeNumber(arg, Value(), min: 0, max: 10); break;
                case "--timeout" when !serve: options.TimeoutSeconds = WholeNumber(arg, Value(), min: 1, max: 3600); break;
                case "--diagram" when !serve: options.Diagram = true; break;
                case "--port" when serve: options.Port = WholeNumber(arg, Value(), min: 0, max: 65535); break;
                case "--host" when serve: options.Host = Address(arg, Value()); break;
                case "--port" or "--host":
                    throw new UsageException($"{arg} is for serve: ./run.sh serve CASSETTE {arg} ….");
                case "--api-key" or "--key":
                    throw new UsageException(
                        "the API key is read only from the OPENAI_API_KEY environment variable (ANTHROPIC_API_KEY for --api anthropic), " +
                        "never from the command line, where other users can see it (ps). Set the variable instead.");
                case "--":
                    words.AddRange(args[(i + 1)..]);
                    i = args.Length;
                    break;
                default:
                    if (arg.Length > 1 && arg[0] == '-')
                        throw new UsageException($"unknown option '{arg}'{(serve ? " for serve" : "")}. Run with --help to see the options.");
                    words.Add(arg);
                    break;
            }
        }

        if (serve)
        {
            if (options.Help)
                return options;
            if (words.Count != 1)
                throw new UsageException("serve needs exactly one cassette: serve CASSETTE [--port N] [--host ADDRESS].");
            options.ServeCassette = words[0];
        }
        else if (words.Count > 0)
        {
            options.Question = string.Join(' ', words); // ./run.sh What is the weather in Paris
        }
        return options;
    }

    public static readonly Api[] Apis = [Api.Chat, Api.Responses, Api.Anthropic];

    /// <summary>The API's name for --api: chat, responses, anthropic.</summary>
    public static string NameOf(Api api) => api.ToString().ToLowerInvariant();

    static Api ApiNamed(string text)
    {
        foreach (Api api in Apis)
        {
            if (NameOf(api) == text)
                return api;
        }
        throw new UsageException($"--api needs chat, responses or anthropic, not '{text}'.");
    }

    static int WholeNumber(string option, string text, int min, int max) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= min && n <= max
            ? n
            : throw new UsageException($"{option} needs a whole number from {min} to {max}, not '{text}'.");

    static IPAddress Address(string option, string text) =>
        text == "localhost" ? IPAddress.Loopback
        : IPAddress.TryParse(text, out IPAddress? address) ? address
        : throw new UsageException($"{option} needs an IP address such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface), not '{text}'.");
}

/// <summary>--record: every request and response of a run, written as a cassette at the end.</summary>
sealed class Recorder(string baseUrl)
{
    readonly List<Interaction> interactions = [];

    public int Count => interactions.Count;

    public IReadOnlyList<Interaction> Interactions => interactions;

    // Of the response headers, only those that change what a client does next: how long to wait before a retry.
    static readonly string[] KeptHeaders = ["Retry-After", "retry-after-ms"];

    public void Add(string path, ReadOnlyMemory<byte> requestBody, int status, ReadOnlySpan<byte> responseBody, HttpResponseHeaders headers)
    {
        // Bodies only: request headers (and with them the API key) are never recorded.
        string text = Encoding.UTF8.GetString(responseBody);
        JsonNode? json = Json.TryParse(text);
        var kept = new Dictionary<string, string>();
        foreach (string name in KeptHeaders)
        {
            if (headers.TryGetValues(name, out IEnumerable<string>? values))
                kept[name] = string.Join(", ", values);
        }
        var interaction = new Interaction("POST", path, Json.Parse(requestBody.Span), status, json)
        {
            ResponseText = json is null && text.Length > 0 ? text : null, // e.g. a proxy's HTML page, kept as it came
            Headers = kept,
        };
        lock (interactions)
            interactions.Add(interaction);
    }

    /// <summary>A streamed response: the events it carried, instead of a body.</summary>
    public void Add(string path, ReadOnlyMemory<byte> requestBody, int status, JsonArray events)
    {
        var interaction = new Interaction("POST", path, Json.Parse(requestBody.Span), status, null)
        {
            ResponseEvents = events.DeepClone().AsArray(),
        };
        lock (interactions)
            interactions.Add(interaction);
    }

    public void Save(string path)
    {
        var cassette = new Cassette(
            $"Recorded by ToolCall --record from {baseUrl} on {DateTime.UtcNow:yyyy-MM-dd}. Request headers, and so the API key, are not recorded.",
            [.. interactions]);
        cassette.Save(path);
    }
}

// =====================================================================================================================
// ---------------------------------------------------------------------------------------------------------------------
//   THE REPLAY SERVER: a test and demo helper, not part of the four steps.
//
//   A real HTTP/1.1 server on loopback that answers POST /v1/chat/completions (and /v1/responses, /v1/messages) from
//   a cassette, so that the demo and the tests run offline and deterministically. Like the real API it keeps
//   connections alive and enforces the rules on tools, tool_choice and the history (with the API's own 400 wording),
//   so every gotcha of tool calling is an executable test.
// ---------------------------------------------------------------------------------------------------------------------
// =====================================================================================================================

/// <summary>One recorded request and its response. `Path` is relative to the base URL ("/chat/completions").</summary>
sealed record Interaction(string Method, string Path, JsonNode? RequestBody, int Status, JsonNode? ResponseBody)
{
    /// <summary>Response headers besides the server's own, e.g. Retry-After; a Content-Type here replaces application/json.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();

    /// <summary>A body that is not JSON (a proxy's HTML page), sent as it is instead of ResponseBody.</summary>
    public string? ResponseText { get; init; }

    /// <summary>How the server misbehaves while answering (fault injection); Fault.None answers at once and whole.</summary>
    public Fault Fault { get; init; } = Fault.None;

    /// <summary>A streamed response, instead of a body: each event's data, a JSON object as itself and anything else
    /// (such as "[DONE]") as a string.</summary>
    public JsonArray? ResponseEvents { get; init; }

    /// <summary>How long the server waits before each of the ResponseEvents.</summary>
    public TimeSpan EventDelay { get; init; }
}

/// <summary>
/// Fault injection: how the replay server misbehaves while sending one response, so that a client's handling of slow
/// and broken servers can be tested. Cassette fields: delay_ms, drip_bytes, drip_interval_ms, close_after_bytes,
/// truncate_after_bytes (see README.md).
/// </summary>
sealed record Fault(int DelayMs = 0, int DripBytes = 0, int DripIntervalMs = 0, int? CloseAfterBytes = null, int? TruncateAfterBytes = null)
{
    public static readonly Fault None = new();

    static readonly string[] Fields = ["delay_ms", "drip_bytes", "drip_interval_ms", "close_after_bytes", "truncate_after_bytes"];

    /// <summary>The cassette's "fault" object; the error names what is wrong with it, or null when it is fine.</summary>
    public static (Fault? Fault, string? Error) FromJson(JsonObject json)
    {
        if (json.Select(p => p.Key).FirstOrDefault(key => !Fields.Contains(key)) is string unknown)
            return (null, $"unknown fault field \"{unknown}\" (known: {string.Join(", ", Fields)})");
        int? Field(string name) => json[name] is JsonValue value && value.TryGetValue(out int n) && n >= 0 ? n : null;
        if (Fields.FirstOrDefault(name => json[name] is not null && Field(name) is null) is string bad)
            return (null, $"fault field \"{bad}\" must be a whole number from 0");
        return (new Fault(Field("delay_ms") ?? 0, Field("drip_bytes") ?? 0, Field("drip_interval_ms") ?? 0, Field("close_after_bytes"), Field("truncate_after_bytes")), null);
    }

    public JsonObject ToJson()
    {
        var json = new JsonObject();
        if (DelayMs > 0) json["delay_ms"] = DelayMs;
        if (DripBytes > 0) json["drip_bytes"] = DripBytes;
        if (DripIntervalMs > 0) json["drip_interval_ms"] = DripIntervalMs;
        if (CloseAfterBytes is int close) json["close_after_bytes"] = close;
        if (TruncateAfterBytes is int truncate) json["truncate_after_bytes"] = truncate;
        return json;
    }
}

/// <summary>
/// A cassette file: readable JSON, bodies as JSON objects (not escaped strings).
/// { "source": "where it came from", "match": "order" or "content",
///   "interactions": [ { "request": {"method", "path", "body"},
///                       "response": {"status", "body" or "text", "headers"?, "fault"?} } ] }
/// A streamed response has, instead of "body", "events": [ {chunk}, …, "[DONE]" ], and may have "event_delay_ms".
/// </summary>
sealed record Cassette(string Source, IReadOnlyList<Interaction> Interactions)
{
    /// <summary>
    /// "match": "content": each request gets the first interaction whose request it is, whatever came before, so
    /// that many clients can replay at once. Default ("order"): each request must be the next interaction's.
    /// </summary>
    public bool MatchByContent { get; init; }

    public static Cassette Load(string path)
    {
        if (Directory.Exists(path))
            throw new UsageException($"{path} is a folder, not a cassette. Pass a cassette file, e.g. cassettes/weather.json.");
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllBytes(path), documentOptions: new JsonDocumentOptions
            {
                CommentHandling = JsonCommentHandling.Skip,
                AllowDuplicateProperties = false,
            });
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new UsageException($"cassette not found: {path}. Check the path, or record one with --record.");
        }
        catch (JsonException e)
        {
            throw new UsageException($"cassette {path} is not valid JSON (line {e.LineNumber + 1}): fix it or record it again with --record.");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"cannot read cassette {path}: {e.Message}");
        }

        string Bad(string what) => $"cassette {path}: {what}. See the cassette format in README.md.";
        if (root is not JsonObject cassette || cassette["interactions"] is not JsonArray { Count: > 0 } items)
            throw new UsageException(Bad("it needs a non-empty \"interactions\" array"));
        string match = cassette["match"] is null ? "order" : Json.String(cassette["match"]) ?? "";
        if (match is not ("order" or "content"))
            throw new UsageException(Bad($"\"match\" must be \"order\" or \"content\", not {Json.Compact(cassette["match"])}"));
        var interactions = new List<Interaction>();
        for (int i = 0; i < items.Count; i++)
        {
            string at = $"interaction {i + 1}";
            if (items[i] is not JsonObject item || item["request"] is not JsonObject request || item["response"] is not JsonObject response)
                throw new UsageException(Bad($"{at} needs a \"request\" and a \"response\" object"));
            if (response["status"] is not JsonValue status || !status.TryGetValue(out int code) || code is < 100 or > 999)
                throw new UsageException(Bad($"{at}'s response needs a \"status\" from 100 to 999"));
            if (ReadHeaders(response["headers"]) is not { } headers)
                throw new UsageException(Bad($"{at}'s response \"headers\" must be an object of strings without line breaks"));
            if (response["text"] is JsonNode text && Json.String(text) is null)
                throw new UsageException(Bad($"{at}'s response \"text\" must be a string (use \"body\" for JSON)"));
            (Fault? fault, string? faultError) = response["fault"] switch
            {
                null => (Fault.None, null),
                JsonObject faultJson => Fault.FromJson(faultJson),
                _ => (null, "it must be an object"),
            };
            if (fault is null)
                throw new UsageException(Bad($"{at}'s response \"fault\": {faultError}"));
            if (StreamProblem(response, fault) is string streamProblem)
                throw new UsageException(Bad($"{at}'s response {streamProblem}"));
            interactions.Add(new Interaction(
                Json.String(request["method"]) ?? "POST",
                Json.String(request["path"]) ?? "/chat/completions",
                request["body"]?.DeepClone(),
                code,
                response["body"]?.DeepClone())
            {
                Headers = headers,
                ResponseText = Json.String(response["text"]),
                Fault = fault,
                ResponseEvents = response["events"]?.DeepClone().AsArray(),
                EventDelay = TimeSpan.FromMilliseconds(response["event_delay_ms"] is JsonValue delay && delay.TryGetValue(out int ms) ? ms : 0),
            });
        }
        return new Cassette(Json.String(cassette["source"]) ?? "", interactions) { MatchByContent = match == "content" };
    }

    /// <summary>What is wrong with a streamed response's "events" and "event_delay_ms", or null when they are fine.</summary>
    static string? StreamProblem(JsonObject response, Fault fault)
    {
        if (response["event_delay_ms"] is JsonNode delay && !(delay is JsonValue value && value.TryGetValue(out int ms) && ms >= 0))
            return "\"event_delay_ms\" must be a whole number from 0";
        if (response["events"] is null)
            return response["event_delay_ms"] is null ? null : "has \"event_delay_ms\" but no \"events\"";
        if (response["events"] is not JsonArray events || events.Any(e => e is not JsonObject && Json.String(e) is null))
            return "\"events\" must be an array, each event a JSON object or a string such as \"[DONE]\"";
        if (response["body"] is not null || response["text"] is not null)
            return "has \"events\" and a \"body\" or \"text\": a response is one or the other";
        if (fault.DripBytes > 0 || fault.TruncateAfterBytes is not null)
            return "fault: drip_bytes and truncate_after_bytes apply to a body; for \"events\", use delay_ms, close_after_bytes or event_delay_ms";
        return null;
    }

    /// <summary>A response's "headers": name to value, each a string on one line; null when that is not what it holds.</summary>
    static Dictionary<string, string>? ReadHeaders(JsonNode? node)
    {
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        if (node is null)
            return headers;
        if (node is not JsonObject json)
            return null;
        foreach ((string name, JsonNode? value) in json)
        {
            // A line break would let a cassette write its own headers or body: HTTP response splitting.
            if (Json.String(value) is not string text || name.Length == 0 || $"{name}{text}".AsSpan().IndexOfAny('\r', '\n') >= 0)
                return null;
            headers[name] = text;
        }
        return headers;
    }

    /// <summary>The first user message of the first recorded request (in `messages`, or the Responses API's `input`):
    /// the question the cassette answers.</summary>
    public string? FirstQuestion() =>
        (Json.At(Interactions[0].RequestBody, "messages") as JsonArray ?? Json.At(Interactions[0].RequestBody, "input") as JsonArray)?
            .Select(m => Json.String(Json.At(m, "role")) == "user" ? Json.String(Json.At(m, "content")) : null)
            .FirstOrDefault(text => text is not null);

    public JsonObject ToJson()
    {
        var items = new JsonArray();
        foreach (Interaction interaction in Interactions)
        {
            JsonNode item = new JsonObject
            {
                ["request"] = new JsonObject
                {
                    ["method"] = interaction.Method,
                    ["path"] = interaction.Path,
                    ["body"] = interaction.RequestBody?.DeepClone(),
                },
                ["response"] = ResponseJson(interaction),
            };
            items.Add(item);
        }
        var json = new JsonObject { ["source"] = Source };
        if (MatchByContent)
            json["match"] = "content";
        json["interactions"] = items;
        return json;
    }

    /// <summary>The "response" of an interaction; headers, text, events and fault only when it has them.</summary>
    static JsonObject ResponseJson(Interaction interaction)
    {
        var response = new JsonObject { ["status"] = interaction.Status };
        if (interaction.Headers.Count > 0)
            response["headers"] = new JsonObject(interaction.Headers.Select(h => KeyValuePair.Create(h.Key, (JsonNode?)h.Value)));
        if (interaction.ResponseEvents is JsonArray events)
        {
            if (interaction.EventDelay > TimeSpan.Zero)
                response["event_delay_ms"] = (int)interaction.EventDelay.TotalMilliseconds;
            response["events"] = events.DeepClone();
        }
        else if (interaction.ResponseText is string text)
            response["text"] = text;
        else
            response["body"] = interaction.ResponseBody?.DeepClone();
        if (interaction.Fault != Fault.None)
            response["fault"] = interaction.Fault.ToJson();
        return response;
    }

    /// <summary>Writes atomically: a temporary file in the same folder, then a rename, so a crash leaves no half file.</summary>
    public void Save(string path)
    {
        string full = Path.GetFullPath(path);
        string temporary = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
        try
        {
            using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write))
            {
                file.Write(Json.Utf8(ToJson(), indented: true).Span);
                file.WriteByte((byte)'\n');
                file.Flush(flushToDisk: true);
            }
            File.Move(temporary, full, overwrite: true);
        }
        finally
        {
            File.Delete(temporary); // nothing to delete after a successful move
        }
    }
}

/// <summary>
/// The rules the real API enforces on `tools`, `tool_choice`, `parallel_tool_calls` and `stream_options`, checked on every request
/// before the history rules and the cassette. The wording, `param` and `code` are the API's, from error responses
/// quoted in public issues, except where a comment says the wording is our own.
/// </summary>
static class RequestRules
{
    const int MaxNameLength = 64; // the OpenAPI spec's limit for a function name, and the one the quoted errors name

    public static JsonObject? FirstViolation(JsonObject request)
    {
        if (StreamOptionsViolation(request) is JsonObject streamViolation)
            return streamViolation;
        // An empty `tools` array counts as none: public reports show the API accepting `tools: []` and then rejecting
        // the parallel_tool_calls sent beside it.
        if (request["tools"] is not JsonArray { Count: > 0 } tools)
        {
            foreach (string field in new[] { "tool_choice", "parallel_tool_calls" })
            {
                if (request[field] is not null)
                    return ApiError.Create($"Invalid value for '{field}': '{field}' is only allowed when 'tools' are specified.", param: field);
            }
            return null;
        }
        return FirstNameViolation(tools) ?? ToolChoiceViolation(request["tool_choice"], tools) ?? FirstStrictViolation(tools);
    }

    /// <summary>`stream_options` only beside "stream": true.</summary>
    static JsonObject? StreamOptionsViolation(JsonObject request) =>
        request["stream_options"] is not null && request["stream"]?.GetValueKind() != JsonValueKind.True
            ? ApiError.Create("The 'stream_options' parameter is only allowed when 'stream' is enabled.", param: "stream_options")
            : null;

    /// <summary>Each function name matches ^[a-zA-Z0-9_-]{1,64}$ and no two are the same. `flat`: the Responses API's
    /// tools, whose name sits beside "type" (a tool in the Chat Completions form then has no name), and which may be
    /// other tools than functions.</summary>
    internal static JsonObject? FirstNameViolation(JsonArray tools, bool flat = false)
    {
        var firstIndex = new Dictionary<string, int>();
        for (int i = 0; i < tools.Count; i++)
        {
            if (flat && Json.String(Json.At(tools[i], "type")) != "function")
                continue;
            string param = flat ? $"tools[{i}].name" : $"tools[{i}].function.name";
            if (Json.String(Function(tools[i], flat)?["name"]) is not string name)
                // The API's form for a missing field (as for messages above); no quote for this field was found.
                return ApiError.Create($"Missing required parameter: '{param}'.", param: param, code: "missing_required_parameter");
            if (name.Length > MaxNameLength)
                return ApiError.Create(
                    $"Invalid '{param}': string too long. Expected a string with maximum length {MaxNameLength}, but got a string with length {name.Length} instead.",
                    param: param, code: "string_above_max_length");
            if (name.Length == 0 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
                return ApiError.Create(
                    $"Invalid '{param}': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    param: param, code: "invalid_value");
            if (!firstIndex.TryAdd(name, i))
                // Our own wording: no public quote of the API's answer to a repeated function name was found.
                return ApiError.Create(
                    $"Invalid 'tools': the function name '{name}' is used by tools[{firstIndex[name]}] and tools[{i}]. Function names must be unique.",
                    param: param);
        }
        return null;
    }

    /// <summary>`tool_choice` is a mode ("none", "auto", "required") or names a function that is in `tools`: as
    /// {"type":"function","function":{"name"}}, or `flat` (the Responses API), {"type":"function","name"}.</summary>
    internal static JsonObject? ToolChoiceViolation(JsonNode? choice, JsonArray tools, bool flat = false)
    {
        if (Json.String(choice) is string mode)
            return mode is "none" or "auto" or "required"
                ? null
                : ApiError.Create($"Invalid value: '{mode}'. Supported values are: 'none', 'auto', and 'required'.", param: "tool_choice", code: "invalid_value");
        if (choice is not JsonObject || Json.String(choice["type"]) != "function")
            return null;
        string? name = Json.String(Function(choice, flat)?["name"]);
        if (flat && name is null)
            // The API's form for a missing field; no quote for this field was found. It catches the Chat Completions form.
            return ApiError.Create("Missing required parameter: 'tool_choice.name'.", param: "tool_choice.name", code: "missing_required_parameter");
        if (tools.Any(tool => Json.String(Function(tool, flat)?["name"]) == name))
            return null;
        // The wording OpenAI answers with in its Responses API, quoted in public issues; no quote for Chat Completions
        // was found, so this assumes the same sentence.
        return ApiError.Create("Tool choice 'function' not found in 'tools' parameter.", param: "tool_choice");
    }

    /// <summary>A function with "strict": true needs its parameters in strict form (see StrictSchema).</summary>
    internal static JsonObject? FirstStrictViolation(JsonArray tools, bool flat = false)
    {
        for (int i = 0; i < tools.Count; i++)
        {
            if (Function(tools[i], flat) is not JsonObject function || function["strict"]?.GetValueKind() != JsonValueKind.True)
                continue;
            if (StrictSchema.FirstViolation(function["parameters"] as JsonObject ?? []) is string violation)
                return ApiError.Create(
                    $"Invalid schema for function '{Json.String(function["name"])}': {violation}",
                    param: flat ? $"tools[{i}].parameters" : $"tools[{i}].function.parameters", code: "invalid_function_parameters");
        }
        return null;
    }

    /// <summary>The object that holds a function's name and parameters: `tool.function`, or with `flat` the tool itself.</summary>
    static JsonObject? Function(JsonNode? tool, bool flat) => (flat ? tool : Json.At(tool, "function")) as JsonObject;
}

/// <summary>
/// The rules the real API enforces on a history, checked on every request before the cassette is consulted. The
/// messages are the API's own wording (including its "preceeding"), taken from error responses quoted in public
/// issues; where the `param` of an error could not be confirmed from such a quote, the comment says so.
/// </summary>
static class HistoryRules
{
    public static JsonObject? FirstViolation(JsonObject request)
    {
        if (request["messages"] is not JsonArray { Count: > 0 } messages)
            return ApiError.Create("Missing required parameter: 'messages'.", param: "messages", code: "missing_required_parameter");

        // The tool calls that the tool messages right here may answer, and those not yet answered.
        JsonObject? pendingAssistant = null;
        int pendingIndex = -1;
        var unanswered = new List<string>();
        var callIds = new HashSet<string>();

        for (int i = 0; i < messages.Count; i++)
        {
            JsonObject? message = messages[i] as JsonObject;
            string? role = Json.String(message?["role"]);
            if (role == "tool")
            {
                if (pendingAssistant is null)
                    return ApiError.Create(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                        param: $"messages.[{i}].role");
                string? id = Json.String(message!["tool_call_id"]);
                if (id is null)
                    return ApiError.Create($"Missing required parameter: 'messages.[{i}].tool_call_id'.",
                        param: $"messages.[{i}].tool_call_id", code: "missing_required_parameter");
                if (!callIds.Contains(id))
                    // param not confirmed from a public quote: the message names the id, we point at its field.
                    return ApiError.Create(
                        $"Invalid parameter: 'tool_call_id' of '{id}' not found in 'tool_calls' of previous message.",
                        param: $"messages.[{i}].tool_call_id");
                unanswered.Remove(id);
                continue;
            }

            // Any other message closes the run of tool messages: every call before it must have been answered.
            if (pendingAssistant is not null && unanswered.Count > 0)
                return Unanswered(pendingIndex, unanswered);
            pendingAssistant = null;

            if (role == "assistant" && message!["tool_calls"] is JsonArray calls)
            {
                if (calls.Count == 0)
                    return ApiError.Create(
                        $"Invalid 'messages[{i}].tool_calls': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                        param: $"messages[{i}].tool_calls", code: "empty_array");
                callIds.Clear();
                unanswered.Clear();
                for (int c = 0; c < calls.Count; c++)
                {
                    JsonNode? arguments = Json.At(calls[c], "function", "arguments");
                    if (arguments is not null && arguments.GetValueKind() != JsonValueKind.String)
                        return ApiError.Create(
                            $"Invalid type for 'messages[{i}].tool_calls[{c}].function.arguments': expected a string, but got {Schema.KindName(arguments)} instead.",
                            param: $"messages[{i}].tool_calls[{c}].function.arguments", code: "invalid_type");
                    string? id = Json.String(Json.At(calls[c], "id"));
                    if (id is not null && callIds.Add(id))
                        unanswered.Add(id);
                }
                pendingAssistant = message;
                pendingIndex = i;
            }
        }
        return pendingAssistant is not null && unanswered.Count > 0 ? Unanswered(pendingIndex, unanswered) : null;
    }

    // param: the index of the assistant message is our choice; public quotes show the form "messages.[N].role".
    static JsonObject Unanswered(int assistantIndex, List<string> ids) => ApiError.Create(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. " +
        $"The following tool_call_ids did not have response messages: {string.Join(", ", ids)}",
        param: $"messages.[{assistantIndex}].role");
}

/// <summary>
/// The rules the Responses API enforces, checked on every POST /responses: on `tools` and `tool_choice` as for Chat
/// Completions but in the flat form (see RequestRules), then on the conversation in `input`: every
/// function_call_output answers a function_call before it, with its call_id, and every function_call is answered.
/// Both history messages are the API's words, quoted in public issues; "No tool call found …" came with param "input",
/// and the other is assumed to carry the same.
/// </summary>
static class ResponsesRules
{
    public static JsonObject? FirstViolation(JsonObject request)
    {
        if (request["tools"] is JsonArray { Count: > 0 } tools &&
            (RequestRules.FirstNameViolation(tools, flat: true) ?? RequestRules.ToolChoiceViolation(request["tool_choice"], tools, flat: true) ??
             RequestRules.FirstStrictViolation(tools, flat: true)) is JsonObject toolViolation)
            return toolViolation;
        return HistoryViolation(request["input"]);
    }

    static JsonObject? HistoryViolation(JsonNode? input)
    {
        if (input is not JsonArray items)
            return null; // a string, or no input at all (previous_response_id): no history to check
        var calls = new List<string>(); // the call_ids of the function_call items so far, in order
        var answered = new HashSet<string>();
        for (int i = 0; i < items.Count; i++)
        {
            string? type = Json.String(Json.At(items[i], "type"));
            if (type is not ("function_call" or "function_call_output"))
                continue;
            if (Json.String(Json.At(items[i], "call_id")) is not string callId)
                // The API's form for a missing field, as in Chat Completions; no quote for this field was found.
                return ApiError.Create($"Missing required parameter: 'input[{i}].call_id'.", param: $"input[{i}].call_id", code: "missing_required_parameter");
            if (type == "function_call")
            {
                JsonNode? arguments = Json.At(items[i], "arguments");
                if (arguments is not null && arguments.GetValueKind() != JsonValueKind.String)
                    // Chat Completions' wording for the same mistake; no quote for the Responses API was found.
                    return ApiError.Create(
                        $"Invalid type for 'input[{i}].arguments': expected a string, but got {Schema.KindName(arguments)} instead.",
                        param: $"input[{i}].arguments", code: "invalid_type");
                calls.Add(callId);
            }
            else if (calls.Contains(callId))
            {
                answered.Add(callId);
            }
            else
            {
                return ApiError.Create($"No tool call found for function call output with call_id {callId}.", param: "input");
            }
        }
        return calls.FirstOrDefault(id => !answered.Contains(id)) is string unanswered
            ? ApiError.Create($"No tool output found for function call {unanswered}.", param: "input")
            : null;
    }
}

/// <summary>The Messages API's error shape: {"type":"error","error":{"type":"invalid_request_error","message"}}.</summary>
static class AnthropicError
{
    public static JsonObject Create(string message, string type = "invalid_request_error") =>
        new() { ["type"] = "error", ["error"] = new JsonObject { ["type"] = type, ["message"] = message } };
}

/// <summary>
/// The rules the Messages API enforces, checked on every POST /messages and answered in its own error shape: the
/// anthropic-version header and max_tokens, the tools, then the history. Each tool_use must be answered by a
/// tool_result in the very next message, the results before anything else in it, and a tool_result must answer a
/// tool_use of the message just before. The wording is the API's, quoted in public issues, except where a comment says
/// it is ours; the `messages.N` of an unanswered tool_use names the assistant message, as we read the quotes.
/// </summary>
static class AnthropicRules
{
    public static JsonObject? FirstViolation(JsonObject request, IReadOnlyDictionary<string, string> headers)
    {
        if (!headers.ContainsKey("anthropic-version"))
            return AnthropicError.Create("anthropic-version: header is required");
        if (request["max_tokens"] is null)
            return AnthropicError.Create("max_tokens: Field required");
        if (request["messages"] is not JsonArray messages)
            return AnthropicError.Create("messages: Field required"); // the same form; no quote for this field was found
        return ToolsViolation(request["tools"] as JsonArray ?? [], request["tool_choice"]) ?? HistoryViolation(messages);
    }

    static JsonObject? ToolsViolation(JsonArray tools, JsonNode? choice)
    {
        var names = new HashSet<string>();
        for (int i = 0; i < tools.Count; i++)
        {
            // Anthropic's own tools ({"type":"web_search_20250305", …}) have a type; yours have none (or "custom").
            string? type = Json.String(Json.At(tools[i], "type"));
            if (type == "function")
                // Our own wording: the API's answer to a tool in the OpenAI form was not found.
                return AnthropicError.Create(
                    $"tools.{i}: a tool in the OpenAI form ({{\"type\":\"function\",\"function\":{{…}}}}) is not a Messages API tool; " +
                    "send {\"name\",\"description\",\"input_schema\"}.");
            if (type is not (null or "custom"))
                continue;
            string? name = Json.String(Json.At(tools[i], "name"));
            if (name is null || name.Length is 0 or > 128 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-'))
                return AnthropicError.Create(name is null
                    ? $"tools.{i}.custom.name: Field required"
                    : $"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'");
            if (Json.At(tools[i], "input_schema") is null)
                // A tool in the OpenAI form (`parameters`) lands here. The form of the quoted errors; this one was not found.
                return AnthropicError.Create($"tools.{i}.custom.input_schema: Field required");
            if (!names.Add(name))
                return AnthropicError.Create("tools: Tool names must be unique.");
        }
        if (choice is not null and not JsonObject)
            // Pydantic's wording, which the API's other errors use; no quote for this field was found. It catches an
            // OpenAI-style "tool_choice": "auto".
            return AnthropicError.Create("tool_choice: Input should be a valid dictionary or object to extract fields from");
        if (Json.String(Json.At(choice, "type")) == "tool" && !names.Contains(Json.String(Json.At(choice, "name")) ?? ""))
            // Our own wording: no public quote of the API's answer was found.
            return AnthropicError.Create($"tool_choice.name: '{Json.String(Json.At(choice, "name"))}' is not the name of a tool in 'tools'.");
        return null;
    }

    static JsonObject? HistoryViolation(JsonArray messages)
    {
        for (int i = 0; i < messages.Count; i++)
        {
            JsonArray blocks = Blocks(messages[i]);
            string[] askedBefore = i > 0 && Role(messages[i - 1]) == "assistant" ? ToolUseIds(Blocks(messages[i - 1])) : [];
            for (int b = 0; b < blocks.Count; b++)
            {
                string? type = Json.String(Json.At(blocks[b], "type"));
                if (type == "tool_use" && Json.At(blocks[b], "input") is not JsonObject)
                    return AnthropicError.Create($"messages.{i}.content.{b}.tool_use.input: Input should be a valid dictionary");
                string? answers = Json.String(Json.At(blocks[b], "tool_use_id"));
                if (type == "tool_result" && (Role(messages[i]) != "user" || !askedBefore.Contains(answers)))
                    return AnthropicError.Create(
                        $"messages.{i}.content.{b}: unexpected `tool_use_id` found in `tool_result` blocks: {answers}. " +
                        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.");
            }
            if (Role(messages[i]) != "assistant" || ToolUseIds(blocks) is not { Length: > 0 } asked)
                continue;
            JsonArray next = i + 1 < messages.Count && Role(messages[i + 1]) == "user" ? Blocks(messages[i + 1]) : [];
            string?[] results = [.. next.Where(block => Json.String(Json.At(block, "type")) == "tool_result").Select(block => Json.String(Json.At(block, "tool_use_id")))];
            if (asked.Where(id => !results.Contains(id)).ToArray() is { Length: > 0 } unanswered)
                return AnthropicError.Create(
                    $"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {string.Join(", ", unanswered)}. " +
                    "Each `tool_use` block must have a corresponding `tool_result` block in the next message.");
            if (next.TakeWhile(block => Json.String(Json.At(block, "type")) == "tool_result").Count() < asked.Length)
                // Quoted from errors of early 2025; the API may word this case as the one above by now.
                return AnthropicError.Create(
                    $"messages.{i + 1}: Did not find {asked.Length} `tool_result` block(s) at the beginning of this message. " +
                    "Messages following `tool_use` blocks must begin with a matching number of `tool_result` blocks.");
        }
        return null;
    }

    static string? Role(JsonNode? message) => Json.String(Json.At(message, "role"));

    /// <summary>A message's content blocks; content given as a plain string has none.</summary>
    static JsonArray Blocks(JsonNode? message) => Json.At(message, "content") as JsonArray ?? [];

    static string[] ToolUseIds(JsonArray blocks) =>
        [.. blocks.Where(block => Json.String(Json.At(block, "type")) == "tool_use").Select(block => Json.String(Json.At(block, "id")) ?? "")];
}

/// <summary>
/// How the replay server decides that a request is the recorded one: as the API reads JSON. Key order and
/// whitespace do not matter, null equals absent, numbers compare by value, `arguments` strings compare as the JSON
/// they contain, a field at the API's default equals its absence (see ReadsAsAbsent), a message's text content
/// equals the one text part it stands for (see AsText), and the top-level `model` is ignored (choose any model when
/// you replay). What the model would read differently still differs: a tool result sent JSON-quoted is named as such.
/// </summary>
static class JsonMatch
{
    static readonly HashSet<string> IgnoredTopLevelFields = ["model"];

    /// <summary>Null when they match, else "$.path: expected X, got Y" for the first difference. `endpoint` (the
    /// path of the request, "/chat/completions", "/responses" or "/messages") says whose defaults apply.</summary>
    public static string? FirstDifference(JsonNode? expected, JsonNode? actual, string endpoint = "/chat/completions") =>
        Difference(expected, actual, "$", endpoint);

    static string? Difference(JsonNode? expected, JsonNode? actual, string path, string endpoint)
    {
        if (IsNull(expected) && IsNull(actual))
            return null;
        if (expected is JsonObject expectedObject && actual is JsonObject actualObject)
        {
            foreach (string key in expectedObject.Select(p => p.Key).Union(actualObject.Select(p => p.Key)))
            {
                if (path == "$" && IgnoredTopLevelFields.Contains(key) ||
                    ReadsAsAbsent(path, key, expectedObject, endpoint) && ReadsAsAbsent(path, key, actualObject, endpoint))
                    continue;
                string at = $"{path}.{key}";
                JsonNode? expectedValue = AsText(path, key, expectedObject), actualValue = AsText(path, key, actualObject);
                string? difference = key switch
                {
                    "arguments" => ArgumentsDifference(expectedValue, actualValue, at, endpoint),
                    _ when IsToolResult(key, actualObject) => ToolResultDifference(expectedValue, actualValue, at, endpoint),
                    _ => Difference(expectedValue, actualValue, at, endpoint),
                };
                if (difference is not null)
                    return difference;
            }
            return null;
        }
        if (expected is JsonArray expectedArray && actual is JsonArray actualArray)
        {
            for (int i = 0; i < Math.Min(expectedArray.Count, actualArray.Count); i++)
            {
                if (Difference(expectedArray[i], actualArray[i], $"{path}[{i}]", endpoint) is string difference)
                    return difference;
            }
            return expectedArray.Count == actualArray.Count
                ? null
                : $"{path}: expected {ToolCalling.Plural(expectedArray.Count, "item")}, got {actualArray.Count}";
        }
        return ValuesEqual(expected, actual) ? null : $"{path}: expected {Show(expected)}, got {Show(actual)}";
    }

    static string? ArgumentsDifference(JsonNode? expected, JsonNode? actual, string path, string endpoint)
    {
        JsonNode? Parsed(JsonNode? node) => Json.String(node) is string text ? Json.TryParse(text) ?? node : node;
        return Difference(Parsed(expected), Parsed(actual), path, endpoint) is null ? null : $"{path}: expected {Show(expected)}, got {Show(actual)}";
    }

    // Each API's documented defaults for the request's top-level fields: sending one is the same request as leaving it
    // out. Chat Completions: CreateChatCompletionRequest in the OpenAPI spec. Responses: CreateResponse in the same
    // spec (where `store` defaults to true). Messages: Anthropic's API reference ("temperature … Defaults to 1.0"; a
    // reply is streamed only when asked). tool_choice's default depends on `tools`; see ReadsAsAbsent.
    static readonly Dictionary<string, Dictionary<string, JsonNode>> TopLevelDefaults = new()
    {
        ["/chat/completions"] = new()
        {
            ["temperature"] = 1,
            ["top_p"] = 1,
            ["n"] = 1,
            ["frequency_penalty"] = 0,
            ["presence_penalty"] = 0,
            ["stream"] = false,
            ["logprobs"] = false,
            ["store"] = false,
            ["parallel_tool_calls"] = true,
            ["service_tier"] = "auto",
        },
        ["/responses"] = new()
        {
            ["temperature"] = 1,
            ["top_p"] = 1,
            ["stream"] = false,
            ["store"] = true,
            ["background"] = false,
            ["truncation"] = "disabled",
            ["parallel_tool_calls"] = true,
            ["service_tier"] = "auto",
        },
        ["/messages"] = new()
        {
            ["temperature"] = 1,
            ["stream"] = false,
        },
    };

    /// <summary>
    /// Whether `owner[key]` reads as if it were not there: null, a request field at its default, a message's empty
    /// `annotations`, or a Responses input message's "type": "message". SDKs differ exactly there:
    /// Microsoft.Extensions.AI sends tool_choice "auto", the OpenAI .NET SDK echoes an assistant message without its
    /// `annotations` (openai-node with them) and types every input message.
    /// </summary>
    static bool ReadsAsAbsent(string path, string key, JsonObject owner, string endpoint)
    {
        if (owner[key] is not JsonNode value || value.GetValueKind() == JsonValueKind.Null)
            return true;
        if (path == "$")
            return key == "tool_choice"
                ? ToolChoiceIsTheDefault(value, owner["tools"] is JsonArray { Count: > 0 }, endpoint)
                : TopLevelDefaults.GetValueOrDefault(endpoint)?.TryGetValue(key, out JsonNode? standard) == true && ValuesEqual(standard, value);
        if (key == "strict" && IsItem(path, "$.tools", then: ".function"))
            return value.GetValueKind() == JsonValueKind.False; // Chat Completions' FunctionObject.strict defaults to false
        // An input message's type can only be "message" (EasyInputMessage: "Always `message`"), so saying it changes
        // nothing.
        if (key == "type" && IsItem(path, "$.input") && owner["role"] is not null)
            return Json.String(value) == "message";
        // `annotations` (citations) belong to the response's message; a request message has no such field
        // (ChatCompletionRequestAssistantMessage), so an echoed empty one is the same as none. Real citations differ.
        return key == "annotations" && IsItem(path, "$.messages") && value is JsonArray { Count: 0 };
    }

    /// <summary>With tools, the model decides: "auto" (the Messages API: {"type":"auto"}); without, "none".</summary>
    static bool ToolChoiceIsTheDefault(JsonNode value, bool withTools, string endpoint) => endpoint == "/messages"
        ? withTools && value is JsonObject { Count: 1 } choice && Json.String(choice["type"]) == "auto"
        : Json.String(value) == (withTools ? "auto" : "none");

    /// <summary>Whether `path` is "{array}[N]{then}", an item of that array (or a field of it).</summary>
    static bool IsItem(string path, string array, string then = "") =>
        path.StartsWith(array + "[", StringComparison.Ordinal) && path.EndsWith("]" + then, StringComparison.Ordinal) &&
        path.Length > array.Length + 2 + then.Length && path[(array.Length + 1)..^(then.Length + 1)].All(char.IsAsciiDigit);

    /// <summary>
    /// A message's `content` (and a tool_result block's) as the text it stands for: a string is shorthand for one text
    /// part, so [{"type":"text","text":"Hi"}] reads as "Hi" (the part is "input_text" in a Responses input message,
    /// "output_text" in an assistant one). The OpenAI .NET SDK sends the question as such a part; other values stay.
    /// </summary>
    static JsonNode? AsText(string path, string key, JsonObject owner)
    {
        JsonNode? value = owner[key];
        string? partType = key != "content" ? null
            : IsItem(path, "$.input") ? (Json.String(owner["role"]) == "assistant" ? "output_text" : "input_text")
            : IsItem(path, "$.messages") || Json.String(owner["type"]) == "tool_result" ? "text"
            : null;
        if (partType is null || value is not JsonArray { Count: 1 } parts || parts[0] is not JsonObject part)
            return value;
        bool onlyText = part.All(field => field.Key is "type" or "text" || IsNull(field.Value));
        return onlyText && Json.String(part["type"]) == partType && part["text"] is JsonValue text && Json.String(text) is not null ? text : value;
    }

    /// <summary>The result of a tool call, in each API's place for it: a tool message's `content`, a
    /// function_call_output's `output`, a tool_result block's `content`.</summary>
    static bool IsToolResult(string key, JsonObject owner) => key switch
    {
        "content" => Json.String(owner["role"]) == "tool" || Json.String(owner["type"]) == "tool_result",
        "output" => Json.String(owner["type"]) == "function_call_output",
        _ => false,
    };

    /// <summary>A tool result the model would read differently is a difference, and the commonest one is named: a
    /// string serialized once more as JSON ("\"It's ...\""), the default of some libraries for a string result.</summary>
    static string? ToolResultDifference(JsonNode? expected, JsonNode? actual, string path, string endpoint)
    {
        if (Difference(expected, actual, path, endpoint) is not string difference)
            return null;
        bool quoted = Json.String(actual) is string text && Json.String(Json.TryParse(text)) is string unquoted &&
                      unquoted == Json.String(expected);
        return quoted
            ? $"{path}: the tool result is JSON-quoted: expected {Show(expected)}, got {Show(actual)}. Send the function's text as it is; the model would read the quotes"
            : difference;
    }

    static bool IsNull(JsonNode? node) => node is null || node.GetValueKind() == JsonValueKind.Null;

    static bool ValuesEqual(JsonNode? expected, JsonNode? actual)
    {
        if (expected is not JsonValue e || actual is not JsonValue a || e.GetValueKind() != a.GetValueKind())
            return false;
        return e.GetValueKind() == JsonValueKind.Number
            ? decimal.Parse(Json.Compact(e), NumberStyles.Float, CultureInfo.InvariantCulture) ==
              decimal.Parse(Json.Compact(a), NumberStyles.Float, CultureInfo.InvariantCulture)
            : JsonNode.DeepEquals(e, a);
    }

    static string Show(JsonNode? node)
    {
        if (node is null)
            return "nothing";
        string text = Json.Compact(node);
        return text.Length > 120 ? text[..120] + "…" : text;
    }
}

/// <summary>What the replay server answers: a status and a body, and for a played interaction its headers and faults.</summary>
sealed record Reply(int Status, JsonNode? Body, Interaction? Played = null);

/// <summary>The replay server. Start it, point a client at BaseUrl, dispose it to stop.</summary>
sealed class ReplayServer : IAsyncDisposable
{
    public const string BasePath = "/v1";
    const int MaxHeaderBytes = 32 * 1024;
    public const int MaxBodyBytes = 8 * 1024 * 1024;

    /// <summary>Connections served at once; more wait to be accepted. With the size limits above, this bounds memory.</summary>
    public const int MaxConnections = 64;

    /// <summary>
    /// A request must arrive whole this soon after the server starts waiting for it. A client that sends it a byte at
    /// a time, or not at all ("slowloris"), loses the connection instead of holding it forever.
    /// </summary>
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);

    readonly Cassette cassette;
    readonly TextWriter log;
    readonly TimeProvider time;
    readonly TcpListener listener;
    readonly CancellationTokenSource stopping = new();
    readonly SemaphoreSlim slots = new(MaxConnections);
    readonly ConcurrentDictionary<Socket, Task> connections = new();
    readonly Lock gate = new();
    readonly Task acceptLoop;
    int next; // the next interaction to play; after the last one it starts over
    int accepted, open, mismatches;

    ReplayServer(Cassette cassette, IPAddress address, int port, TextWriter? log, TimeProvider? time)
    {
        this.cassette = cassette;
        this.log = log ?? TextWriter.Null;
        this.time = time ?? TimeProvider.System;
        listener = new TcpListener(address, port);
        listener.Start();
        var endpoint = (IPEndPoint)listener.LocalEndpoint;
        string host = endpoint.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{endpoint.Address}]" : $"{endpoint.Address}";
        BaseUrl = $"http://{host}:{endpoint.Port}{BasePath}";
        acceptLoop = AcceptLoopAsync();
    }

    /// <summary>
    /// Port 0 takes any free port. Loopback unless another address is given: nothing outside this machine can reach
    /// it. `time` is the clock of the faults' delays and of RequestTimeout; tests pass one they move by hand.
    /// </summary>
    public static ReplayServer Start(Cassette cassette, int port = 0, TextWriter? log = null, IPAddress? address = null, TimeProvider? time = null) =>
        new(cassette, address ?? IPAddress.Loopback, port, log, time);

    public string BaseUrl { get; }

    /// <summary>How many TCP connections it has accepted (keep-alive means far fewer than requests).</summary>
    public int ConnectionsAccepted => Volatile.Read(ref accepted);

    /// <summary>How many connections are open right now.</summary>
    public int OpenConnections => Volatile.Read(ref open);

    /// <summary>How many requests matched no interaction (answered 400 replay_mismatch).</summary>
    public int Mismatches => Volatile.Read(ref mismatches);

    /// <summary>Completes when every connection open now has closed.</summary>
    public Task ConnectionsClosedAsync() => Task.WhenAll(connections.Values);

    /// <summary>For tests: awaited before each event of a streamed response is sent, with the event's position. A test
    /// can hold back the rest of a stream until the client has shown what it got, with no sleeps.</summary>
    public Func<int, Task>? BeforeStreamEvent { get; set; }

    async Task AcceptLoopAsync()
    {
        while (!stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                await slots.WaitAsync(stopping.Token);
                socket = await listener.AcceptSocketAsync(stopping.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            Interlocked.Increment(ref accepted);
            Interlocked.Increment(ref open);
            socket.NoDelay = true;
            Task connection = ServeConnectionAsync(socket);
            connections[socket] = connection;
            _ = connection.ContinueWith(_ => connections.TryRemove(socket, out Task? _), TaskScheduler.Default);
        }
    }

    /// <summary>One connection: requests one after another until the client closes it (HTTP/1.1 keep-alive).</summary>
    async Task ServeConnectionAsync(Socket socket)
    {
        await Task.Yield();
        try
        {
            await using var stream = new NetworkStream(socket, ownsSocket: true);
            var reader = new HttpRequestReader(stream, MaxHeaderBytes, MaxBodyBytes);
            for (bool keepAlive = true; keepAlive && !stopping.IsCancellationRequested;)
            {
                HttpRequestReader.Request? request;
                using (var timeout = new CancellationTokenSource(RequestTimeout, time))
                using (var reading = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token, timeout.Token))
                {
                    try
                    {
                        request = await reader.ReadAsync(reading.Token);
                    }
                    catch (HttpRequestReader.BadRequestException e)
                    {
                        await WriteResponseAsync(stream, new Reply(e.Status, ApiError.Create(e.Message)), keepAlive: false, stopping.Token);
                        return;
                    }
                    catch (OperationCanceledException) when (timeout.IsCancellationRequested && reader.InRequest)
                    {
                        // Wording ours: the API's own for this case is not public.
                        string message = $"The request did not arrive whole within {RequestTimeout.TotalSeconds:0} seconds.";
                        await WriteResponseAsync(stream, new Reply(408, ApiError.Create(message)), keepAlive: false, stopping.Token);
                        return;
                    }
                }
                if (request is null)
                    return; // the client closed the connection between requests
                keepAlive = await WriteResponseAsync(stream, HandleSafely(request), request.KeepAlive, stopping.Token);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // The client went away, stayed silent past RequestTimeout, or the server is stopping: nothing to answer.
        }
        finally
        {
            Interlocked.Decrement(ref open);
            slots.Release();
        }
    }

    /// <summary>A request that trips up the server answers 500 (and is logged); it never takes the server down.</summary>
    Reply HandleSafely(HttpRequestReader.Request request)
    {
        try
        {
            return Handle(request);
        }
        catch (Exception e)
        {
            return Log(request, 500, ApiError.Create($"The replay server failed on this request: {e.Message}", type: "server_error"), $"server error: {e}");
        }
    }

    /// <summary>Routing, the request rules, the history rules (each API's own), then the cassette.</summary>
    Reply Handle(HttpRequestReader.Request request)
    {
        string path = request.Path.Split('?')[0];
        if (!path.StartsWith(BasePath + "/", StringComparison.Ordinal))
            return Log(request, 404, ApiError.Create(
                $"Unknown request URL: {request.Method} {path}. Please check the URL for typos, or see the docs at https://platform.openai.com/docs/api-reference/.",
                code: "unknown_url"), $"not under {BasePath}");
        string relativePath = path[BasePath.Length..];

        JsonNode? body;
        try
        {
            body = request.Body.Length == 0 ? null : Json.Parse(request.Body);
        }
        catch (JsonException)
        {
            return Log(request, 400, ErrorBody(relativePath,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. " +
                "The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"), "body is not JSON");
        }
        if (request.Method == "POST" && relativePath is "/chat/completions" or "/responses" or "/messages")
        {
            if (body is not JsonObject apiRequest)
                return Log(request, 400, ErrorBody(relativePath, "The request body must be a JSON object."), "body is not an object");
            JsonObject? violation = relativePath switch
            {
                "/responses" => ResponsesRules.FirstViolation(apiRequest),
                "/messages" => AnthropicRules.FirstViolation(apiRequest, request.Headers),
                _ => RequestRules.FirstViolation(apiRequest) ?? HistoryRules.FirstViolation(apiRequest),
            };
            if (violation is not null)
                return Log(request, 400, violation, "rule: " + Json.String(Json.At(violation, "error", "message")));
        }

        lock (gate)
            return cassette.MatchByContent ? PlayMatching(request, relativePath, body) : PlayNext(request, relativePath, body);
    }

    /// <summary>"match": "order" (the default): the request must be the next interaction's.</summary>
    Reply PlayNext(HttpRequestReader.Request request, string relativePath, JsonNode? body)
    {
        int index = next;
        string which = $"interaction {index + 1} of {cassette.Interactions.Count}";
        if (Difference(cassette.Interactions[index], request.Method, relativePath, body) is string difference)
            return Mismatch(request, $"Replay mismatch at {which}: {difference}", $"mismatch at {which}: {difference}");
        next = (index + 1) % cassette.Interactions.Count;
        return Play(request, index);
    }

    /// <summary>"match": "content": the first interaction whose request this is, whatever came before.</summary>
    Reply PlayMatching(HttpRequestReader.Request request, string relativePath, JsonNode? body)
    {
        IReadOnlyList<Interaction> all = cassette.Interactions;
        for (int i = 0; i < all.Count; i++)
        {
            if (Difference(all[i], request.Method, relativePath, body) is null)
                return Play(request, i);
        }
        // Show how it differs from the interaction with as many messages (input items, for the Responses API), the
        // likeliest one meant.
        static int? Length(JsonNode? body) => ((Json.At(body, "messages") ?? Json.At(body, "input")) as JsonArray)?.Count;
        int? count = Length(body);
        int closest = Math.Max(0, all.ToList().FindIndex(i => Length(i.RequestBody) == count));
        string difference = $"no interaction matches; interaction {closest + 1} of {all.Count} differs at {Difference(all[closest], request.Method, relativePath, body)}";
        return Mismatch(request, $"Replay mismatch: {difference}", $"mismatch: {difference}");
    }

    static string? Difference(Interaction expected, string method, string relativePath, JsonNode? body) =>
        method != expected.Method || relativePath != expected.Path
            ? $"expected {expected.Method} {expected.Path}, got {method} {relativePath}"
            : JsonMatch.FirstDifference(expected.RequestBody, body, relativePath);

    Reply Play(HttpRequestReader.Request request, int index)
    {
        Interaction interaction = cassette.Interactions[index];
        Reply reply = Log(request, interaction.Status, interaction.ResponseBody?.DeepClone(), $"interaction {index + 1} of {cassette.Interactions.Count}");
        return reply with { Played = interaction };
    }

    /// <summary>400, not a status that clients retry: a mismatch will not go away by sending the request again.</summary>
    Reply Mismatch(HttpRequestReader.Request request, string message, string note)
    {
        Interlocked.Increment(ref mismatches);
        return Log(request, 400, ErrorBody(request.Path.Split('?')[0],
            $"{message}. The request differs from the one recorded in the cassette.", code: "replay_mismatch"), note);
    }

    /// <summary>An error in the shape of the API the path belongs to: Anthropic's for /messages, OpenAI's otherwise.</summary>
    static JsonObject ErrorBody(string path, string message, string? code = null) =>
        path.EndsWith("/messages", StringComparison.Ordinal) ? AnthropicError.Create(message) : ApiError.Create(message, code: code);

    Reply Log(HttpRequestReader.Request request, int status, JsonNode? body, string note)
    {
        lock (log)
            log.WriteLine($"{request.Method} {request.Path} -> {status} ({note})");
        return new Reply(status, body);
    }

    /// <summary>
    /// Writes the reply, misbehaving as its interaction's fault says. Returns whether the connection can serve
    /// another request.
    /// </summary>
    async Task<bool> WriteResponseAsync(Stream stream, Reply reply, bool keepAlive, CancellationToken cancellationToken)
    {
        if (reply.Played is { ResponseEvents: JsonArray })
            return await WriteEventStreamAsync(stream, reply.Status, reply.Played, keepAlive, cancellationToken);
        Interaction? played = reply.Played;
        Fault fault = played?.Fault ?? Fault.None;
        ReadOnlyMemory<byte> content = played?.ResponseText is string text ? Encoding.UTF8.GetBytes(text)
            : reply.Body is null ? ReadOnlyMemory<byte>.Empty
            : Json.Utf8(reply.Body);
        // truncate_after_bytes: a whole HTTP response, but its body ends early, and Content-Length says so.
        if (fault.TruncateAfterBytes is int truncated && truncated < content.Length)
            content = content[..truncated];
        // close_after_bytes: Content-Length promises the whole body; the connection closes before it is all sent.
        int sent = fault.CloseAfterBytes is int cut ? Math.Min(cut, content.Length) : content.Length;

        if (fault.DelayMs > 0)
            await Task.Delay(TimeSpan.FromMilliseconds(fault.DelayMs), time, cancellationToken);
        IReadOnlyDictionary<string, string> headers = played?.Headers ?? new Dictionary<string, string>();
        var head = new StringBuilder($"HTTP/1.1 {reply.Status} {ReasonPhrase(reply.Status)}\r\n");
        if (!headers.Keys.Any(name => name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase)))
            head.Append("Content-Type: application/json\r\n");
        foreach ((string name, string value) in headers)
            head.Append($"{name}: {value}\r\n");
        head.Append($"Content-Length: {content.Length}\r\n");
        head.Append(keepAlive ? "\r\n" : "Connection: close\r\n\r\n");
        await stream.WriteAsync(Encoding.UTF8.GetBytes(head.ToString()), cancellationToken);

        // drip_bytes, drip_interval_ms: the body a few bytes at a time, with a pause between writes.
        int piece = fault.DripBytes > 0 ? fault.DripBytes : Math.Max(sent, 1);
        for (int offset = 0; offset < sent; offset += piece)
        {
            if (offset > 0 && fault.DripIntervalMs > 0)
                await Task.Delay(TimeSpan.FromMilliseconds(fault.DripIntervalMs), time, cancellationToken);
            await stream.WriteAsync(content.Slice(offset, Math.Min(piece, sent - offset)), cancellationToken);
            await stream.FlushAsync(cancellationToken);
        }
        await stream.FlushAsync(cancellationToken);
        return keepAlive && fault.CloseAfterBytes is null;
    }

    /// <summary>
    /// A streamed response, sent as the API sends one: text/event-stream, each event flushed on its own as one chunk
    /// of a chunked body (its length is not known in advance). A JSON object goes out as `data: {…}` on one line, a
    /// string (such as "[DONE]") as it is, one `data:` line per line of it, and a blank line ends each event; for the
    /// Responses and Messages APIs, after an `event:` line naming it (see ServerSentEvents.Format). Of the faults,
    /// delay_ms waits before the head and close_after_bytes cuts the events off after that many bytes.
    /// </summary>
    async Task<bool> WriteEventStreamAsync(Stream stream, int status, Interaction played, bool keepAlive, CancellationToken cancellationToken)
    {
        Fault fault = played.Fault;
        if (fault.DelayMs > 0)
            await Task.Delay(TimeSpan.FromMilliseconds(fault.DelayMs), time, cancellationToken);
        var head = new StringBuilder($"HTTP/1.1 {status} {ReasonPhrase(status)}\r\n");
        if (!played.Headers.Keys.Any(name => name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase)))
            head.Append("Content-Type: text/event-stream; charset=utf-8\r\n");
        foreach ((string name, string value) in played.Headers)
            head.Append($"{name}: {value}\r\n");
        head.Append("Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n");
        head.Append(keepAlive ? "\r\n" : "Connection: close\r\n\r\n");
        await stream.WriteAsync(Encoding.UTF8.GetBytes(head.ToString()), cancellationToken);
        await stream.FlushAsync(cancellationToken);

        JsonArray events = played.ResponseEvents!;
        bool named = played.Path is "/responses" or "/messages"; // these two APIs name each event in an `event:` line
        int left = fault.CloseAfterBytes ?? int.MaxValue;
        for (int i = 0; i < events.Count; i++)
        {
            if (played.EventDelay > TimeSpan.Zero)
                await Task.Delay(played.EventDelay, time, cancellationToken);
            if (BeforeStreamEvent is Func<int, Task> hold)
                await hold(i).WaitAsync(cancellationToken);
            byte[] sse = Encoding.UTF8.GetBytes(ServerSentEvents.Format(events[i], named));
            int sent = Math.Min(sse.Length, left);
            if (sent > 0) // an empty chunk would say that the body is complete
            {
                await stream.WriteAsync(Encoding.ASCII.GetBytes($"{sent:x}\r\n"), cancellationToken);
                await stream.WriteAsync(sse.AsMemory(0, sent), cancellationToken);
                await stream.WriteAsync("\r\n"u8.ToArray(), cancellationToken);
                await stream.FlushAsync(cancellationToken);
            }
            left -= sent;
            if (left == 0)
                return false; // close_after_bytes: the connection closes with the body unfinished
        }
        await stream.WriteAsync("0\r\n\r\n"u8.ToArray(), cancellationToken); // the last chunk: the body is complete
        await stream.FlushAsync(cancellationToken);
        return keepAlive;
    }

    static string ReasonPhrase(int status) => status switch
    {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    };

    public async ValueTask DisposeAsync()
    {
        stopping.Cancel();
        listener.Stop();
        await acceptLoop;
        foreach (Socket socket in connections.Keys)
            socket.Close(); // cut connections that are idle between requests
        await Task.WhenAll(connections.Values);
        stopping.Dispose();
    }
}

/// <summary>Reads HTTP/1.1 requests from a connection (RFC 9112): request line, headers, then a body sized by
/// Content-Length or sent in chunks.</summary>
sealed class HttpRequestReader(Stream stream, int maxHeaderBytes, int maxBodyBytes)
{
    public sealed record Request(string Method, string Path, bool KeepAlive, byte[] Body)
    {
        /// <summary>The request's headers, by name in any case.</summary>
        public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();
    }

    public sealed class BadRequestException(int status, string message) : Exception(message)
    {
        public int Status { get; } = status;
    }

    readonly byte[] buffer = new byte[maxHeaderBytes];
    int start, end; // the bytes read but not yet used are buffer[start..end]

    /// <summary>True once part of the next request has arrived, until all of it has.</summary>
    public bool InRequest { get; private set; }

    /// <summary>The next request, or null when the client closed the connection cleanly between requests.</summary>
    public async Task<Request?> ReadAsync(CancellationToken cancellationToken)
    {
        InRequest = end > start;
        int headerEnd;
        while ((headerEnd = buffer.AsSpan(start, end - start).IndexOf("\r\n\r\n"u8)) < 0)
        {
            if (end - start == buffer.Length)
                throw new BadRequestException(431, $"The request headers are larger than {maxHeaderBytes} bytes.");
            if (!await FillAsync(cancellationToken))
                return end == start ? null : throw new IOException("connection closed in the middle of the request headers");
        }

        string head = Encoding.Latin1.GetString(buffer, start, headerEnd);
        start += headerEnd + 4;
        string[] lines = head.Split("\r\n");
        string[] requestLine = lines[0].Split(' ');
        if (requestLine.Length != 3 || !requestLine[2].StartsWith("HTTP/1.", StringComparison.Ordinal))
            throw new BadRequestException(400, $"Malformed request line: '{lines[0]}'.");

        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (string line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            if (colon > 0)
                headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        bool keepAlive = requestLine[2] == "HTTP/1.1"
            ? !string.Equals(headers.GetValueOrDefault("Connection"), "close", StringComparison.OrdinalIgnoreCase)
            : string.Equals(headers.GetValueOrDefault("Connection"), "keep-alive", StringComparison.OrdinalIgnoreCase);

        if (string.Equals(headers.GetValueOrDefault("Expect"), "100-continue", StringComparison.OrdinalIgnoreCase))
            await stream.WriteAsync("HTTP/1.1 100 Continue\r\n\r\n"u8.ToArray(), cancellationToken);

        byte[] body;
        if (headers.GetValueOrDefault("Transfer-Encoding")?.Contains("chunked", StringComparison.OrdinalIgnoreCase) == true)
        {
            body = await ReadChunkedAsync(cancellationToken);
        }
        else
        {
            long length = 0;
            if (headers.TryGetValue("Content-Length", out string? text) &&
                !long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out length))
                throw new BadRequestException(400, $"Invalid Content-Length: '{text}'.");
            if (length > maxBodyBytes)
                throw new BadRequestException(413, $"The request body is {length} bytes; the limit is {maxBodyBytes}.");
            body = new byte[length];
            await ReadExactlyAsync(body, cancellationToken);
        }
        InRequest = false;
        return new Request(requestLine[0], requestLine[1], keepAlive, body) { Headers = headers };
    }

    async Task<byte[]> ReadChunkedAsync(CancellationToken cancellationToken)
    {
        using var body = new MemoryStream();
        while (true)
        {
            string sizeLine = await ReadLineAsync(cancellationToken);
            string hex = sizeLine.Split(';')[0].Trim(); // chunk extensions are allowed and ignored
            if (!int.TryParse(hex, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int size) || size < 0)
                throw new BadRequestException(400, $"Invalid chunk size: '{sizeLine}'.");
            if (size == 0)
                break;
            if (body.Length + size > maxBodyBytes)
                throw new BadRequestException(413, $"The request body is over the limit of {maxBodyBytes} bytes.");
            byte[] chunk = new byte[size];
            await ReadExactlyAsync(chunk, cancellationToken);
            body.Write(chunk);
            if (await ReadLineAsync(cancellationToken) != "")
                throw new BadRequestException(400, "A chunk is not followed by CRLF.");
        }
        while (await ReadLineAsync(cancellationToken) != "")
        {
            // trailer fields: allowed, ignored
        }
        return body.ToArray();
    }

    async Task<string> ReadLineAsync(CancellationToken cancellationToken)
    {
        int newline;
        while ((newline = buffer.AsSpan(start, end - start).IndexOf("\r\n"u8)) < 0)
        {
            if (end - start == buffer.Length)
                throw new BadRequestException(400, "A chunk-size line is too long.");
            if (!await FillAsync(cancellationToken))
                throw new IOException("connection closed in the middle of a chunked body");
        }
        string line = Encoding.Latin1.GetString(buffer, start, newline);
        start += newline + 2;
        return line;
    }

    async Task ReadExactlyAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        int buffered = Math.Min(end - start, destination.Length);
        buffer.AsMemory(start, buffered).CopyTo(destination);
        start += buffered;
        if (buffered < destination.Length)
            await stream.ReadExactlyAsync(destination[buffered..], cancellationToken);
    }

    async Task<bool> FillAsync(CancellationToken cancellationToken)
    {
        if (start > 0)
        {
            buffer.AsSpan(start, end - start).CopyTo(buffer);
            (start, end) = (0, end - start);
        }
        int read = await stream.ReadAsync(buffer.AsMemory(end), cancellationToken);
        end += read;
        InRequest |= read > 0;
        return read > 0;
    }
}
