// The four steps with the official OpenAI .NET SDK (package OpenAI), by hand as its README shows: function tools from
// ChatTool.CreateFunctionTool, the assistant message as an AssistantChatMessage, each result as a ToolChatMessage.
// Shared by the bench (OpenAISdkClient) and by SdkDemo, the SDK's version of the demo for the cold-start comparison.

using ToolCall;
using System;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;
using OpenAI.Chat;
using SdkChatClient = OpenAI.Chat.ChatClient;
using SdkChatMessage = OpenAI.Chat.ChatMessage;

static class OpenAISdkFlow
{
    /// <summary>The demo's tools for the SDK: the same names, descriptions and schemas, byte for byte, as ToolCall
    /// sends (the SDK takes a function's parameters as JSON bytes).</summary>
    public static ChatTool[] Tools(IReadOnlyList<Tool> tools) =>
        [.. tools.Select(tool => ChatTool.CreateFunctionTool(tool.Name, tool.Description, BinaryData.FromBytes(Json.Utf8(tool.Parameters))))];

    public static async Task<string> RunAsync(SdkChatClient client, string question, IReadOnlyList<ChatTool> tools, CancellationToken cancellationToken)
    {
        var options = new ChatCompletionOptions();
        foreach (ChatTool tool in tools)
            options.Tools.Add(tool);
        List<SdkChatMessage> messages = [new UserChatMessage(question)];
        for (int round = 1; ; round++)
        {
            ChatCompletion completion = await client.CompleteChatAsync(messages, options, cancellationToken);
            if (completion.ToolCalls.Count == 0)
                return completion.Content[0].Text;
            if (round > 8)
                throw new InvalidOperationException("the model still asks for tools after 8 rounds");
            messages.Add(new AssistantChatMessage(completion));
            foreach (ChatToolCall call in completion.ToolCalls)
                messages.Add(new ToolChatMessage(call.Id, RunTool(call.FunctionName, call.FunctionArguments)));
        }
    }

    /// <summary>Parses the arguments and calls the same DemoTools code as ToolCall's tools do.</summary>
    static string RunTool(string name, BinaryData arguments)
    {
        using JsonDocument document = JsonDocument.Parse(arguments);
        JsonElement args = document.RootElement;
        return name switch
        {
            "get_weather" => DemoTools.GetWeather(args.GetProperty("city").GetString()!),
            "get_forecast" => Forecast(args),
            _ => $"Error: unknown function '{name}'.",
        };
    }

    static string Forecast(JsonElement args)
    {
        int days = args.GetProperty("days").GetInt32();
        if (days is < 1 or > 7)
            return $"Error: get_forecast failed: days must be from 1 to 7, not {days}";
        string unit = args.TryGetProperty("unit", out JsonElement u) ? u.GetString()! : "celsius";
        string[] include = args.TryGetProperty("include", out JsonElement i) ? [.. i.EnumerateArray().Select(e => e.GetString()!)] : [];
        return DemoTools.GetForecast(args.GetProperty("city").GetString()!, days, unit, include);
    }
}
