// A conformance client: the official OpenAI .NET SDK (package OpenAI) runs the tool-calling flow against the replay
// server, with its own request writing and response parsing: on Chat Completions here, on the Responses API (with
// --api responses) in ResponsesFlow.cs. The contract (conformance/README.md): OPENAI_BASE_URL and OPENAI_API_KEY from
// the environment, options before the question, the question as the last argument; the final answer alone on
// stdout (streamed, each reply's text as it arrives), exit 0.

using System.ClientModel;
using System.Text;
using System.Text.Json;
using OpenAI;
using OpenAI.Chat;

if (args.Length == 0)
{
    Console.Error.WriteLine(
        "usage: OpenAIConformance [--api chat|responses] [--no-parallel] [--stream] [--tool-choice required] [--max-rounds N] [--timeout SECONDS] QUESTION");
    return 2;
}
string question = args[^1];
string baseUrl = Environment.GetEnvironmentVariable("OPENAI_BASE_URL") ?? "https://api.openai.com/v1";
string key = Environment.GetEnvironmentVariable("OPENAI_API_KEY") ?? "";
string api = Option("--api") ?? "chat";
bool noParallel = args.Contains("--no-parallel");
bool stream = args.Contains("--stream"); // the SDK then sends "stream": true (and for chat "stream_options": {"include_usage": true})
string? toolChoice = Option("--tool-choice");
int maxRounds = int.Parse(Option("--max-rounds") ?? "8");
var clientOptions = new OpenAIClientOptions { Endpoint = new Uri(baseUrl) };
if (Option("--timeout") is string seconds)
    clientOptions.NetworkTimeout = TimeSpan.FromSeconds(int.Parse(seconds)); // the SDK's own timeout
if (toolChoice is not (null or "required"))
{
    Console.Error.WriteLine($"error: --tool-choice {toolChoice}: this client takes --tool-choice required.");
    return 2;
}
if (api == "responses")
    return await ResponsesFlow.RunAsync(question, key, clientOptions, noParallel, stream, toolChoice is not null, maxRounds);
if (api != "chat")
{
    Console.Error.WriteLine($"error: --api {api}: this client speaks chat and responses (the OpenAI SDK has no Messages API).");
    return 2;
}

// The SDK's own retry policy stays on: it retries a 429 or a 5xx, waiting as Retry-After says, and never a 400 such as
// the replay server's mismatch.
var client = new ChatClient("gpt-4o-mini", new ApiKeyCredential(key), clientOptions);

// The two demo functions, declared exactly as PROTOCOL.md's step 1 shows them.
var options = new ChatCompletionOptions
{
    Tools =
    {
        ChatTool.CreateFunctionTool(DemoTools.WeatherName, DemoTools.WeatherDescription, DemoTools.WeatherParameters),
        ChatTool.CreateFunctionTool(DemoTools.ForecastName, DemoTools.ForecastDescription, DemoTools.ForecastParameters),
    },
};
if (noParallel)
    options.AllowParallelToolCalls = false;
if (toolChoice == "required")
    options.ToolChoice = ChatToolChoice.CreateRequiredChoice();

List<ChatMessage> messages = [new UserChatMessage(question)];
try
{
    for (int round = 1; round <= maxRounds + 1; round++)
    {
        // The request after the last round allowed asks for an answer (PROTOCOL.md).
        if (round > maxRounds)
            options.ToolChoice = ChatToolChoice.CreateNoneChoice();
        (string text, IReadOnlyList<ChatToolCall> calls, AssistantChatMessage reply) = stream
            ? await StreamedReplyAsync(client, messages, options)
            : Reply((await client.CompleteChatAsync(messages, options)).Value);
        if (calls.Count == 0)
        {
            if (!stream)
                Console.WriteLine(text); // streamed, it has been shown as it arrived
            return 0;
        }
        messages.Add(reply); // the assistant message first, then one tool message per call
        foreach (ChatToolCall call in calls)
            messages.Add(new ToolChatMessage(call.Id, DemoTools.Run(call.FunctionName, call.FunctionArguments)));
        // "required" forces a call on every request that carries it; once made, the model chooses (PROTOCOL.md).
        if (toolChoice is not null)
            options.ToolChoice = ChatToolChoice.CreateAutoChoice();
    }
    Console.Error.WriteLine($"error: the model still asks for tools after {maxRounds} rounds, even when asked to answer");
}
catch (ClientResultException e)
{
    Console.Error.WriteLine($"error: {e.Message.ReplaceLineEndings(" ")}");
}
return 1;

// The answer is the text, or the refusal when the model refused (the content is then empty).
static (string Text, IReadOnlyList<ChatToolCall> Calls, AssistantChatMessage Reply) Reply(ChatCompletion completion) =>
    (AnswerOf(string.Concat(completion.Content.Select(part => part.Text)), completion.Refusal), completion.ToolCalls, new AssistantChatMessage(completion));

static string AnswerOf(string text, string? refusal) => text.Length == 0 && !string.IsNullOrEmpty(refusal) ? refusal : text;

// Streamed, the SDK reads the server-sent events into updates; a call arrives in fragments, told apart by its index.
// The text is shown as it arrives, and a reply that showed some ends its line.
static async Task<(string Text, IReadOnlyList<ChatToolCall> Calls, AssistantChatMessage Reply)> StreamedReplyAsync(
    ChatClient client, List<ChatMessage> messages, ChatCompletionOptions options)
{
    var text = new StringBuilder();
    var refusal = new StringBuilder();
    var fragments = new SortedDictionary<int, (string? Id, string? Name, StringBuilder Arguments)>();
    await foreach (StreamingChatCompletionUpdate update in client.CompleteChatStreamingAsync(messages, options))
    {
        foreach (ChatMessageContentPart part in update.ContentUpdate)
        {
            text.Append(part.Text);
            Console.Write(part.Text);
        }
        refusal.Append(update.RefusalUpdate);
        Console.Write(update.RefusalUpdate);
        foreach (StreamingChatToolCallUpdate fragment in update.ToolCallUpdates)
        {
            (string? id, string? name, StringBuilder arguments) = fragments.GetValueOrDefault(fragment.Index, (null, null, new StringBuilder()));
            fragments[fragment.Index] = (fragment.ToolCallId ?? id, fragment.FunctionName ?? name, arguments.Append(fragment.FunctionArgumentsUpdate));
        }
    }
    if (text.Length + refusal.Length > 0)
        Console.WriteLine();
    List<ChatToolCall> calls = [.. fragments.Values.Select(f => ChatToolCall.CreateFunctionToolCall(f.Id, f.Name, BinaryData.FromString(f.Arguments.ToString())))];
    return (AnswerOf(text.ToString(), refusal.ToString()), calls, calls.Count > 0 ? new AssistantChatMessage(calls) : new AssistantChatMessage(text.ToString()));
}

// --NAME VALUE among the options before the question, or null.
string? Option(string name)
{
    int at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length - 1 ? args[at + 1] : null;
}

/// <summary>The two demo functions, declared exactly as PROTOCOL.md's step 1 shows them, and what they return.</summary>
static class DemoTools
{
    public const string WeatherName = "get_weather";
    public const string WeatherDescription = "Returns the current weather in the given city";
    public static BinaryData WeatherParameters => BinaryData.FromString("""
        {"type":"object","properties":{"city":{"type":"string","description":"City name, e.g. \"London\""}},"required":["city"]}
        """);

    public const string ForecastName = "get_forecast";
    public const string ForecastDescription = "Returns the daily weather forecast for the given city for the next days";
    public static BinaryData ForecastParameters => BinaryData.FromString("""
        {"type":"object","properties":{
          "city":{"type":"string","description":"City name, e.g. \"London\""},
          "days":{"type":"integer","description":"How many days, from 1 to 7"},
          "unit":{"type":"string","enum":["celsius","fahrenheit"],"description":"Temperature unit; celsius when left out"},
          "include":{"type":"array","items":{"type":"string","enum":["wind","humidity","precipitation"]},"description":"Extra details for each day"}},
         "required":["city","days"]}
        """);

    public static string Run(string name, BinaryData arguments)
    {
        using JsonDocument parsed = JsonDocument.Parse(arguments);
        return name == WeatherName
            ? $"It's currently +18°C and partly cloudy in {parsed.RootElement.GetProperty("city").GetString()}"
            : $"Error: unknown function '{name}'.";
    }
}
