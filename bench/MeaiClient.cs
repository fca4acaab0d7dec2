// 3. Microsoft.Extensions.AI: the OpenAI SDK's ChatClient as an IChatClient, with FunctionInvokingChatClient running
// the tool loop (steps 2 to 4) and the functions made by AIFunctionFactory.

using ToolCall;
using System;
using System.Linq;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Extensions.AI;
using MeaiChatMessage = Microsoft.Extensions.AI.ChatMessage;

static class MeaiClient
{
    public static BenchClient Create(FlowSetup setup)
    {
        IChatClient client = OpenAISdkClient.CreateChatClient(setup).AsIChatClient()
            .AsBuilder()
            .UseFunctionInvocation()
            .Build();

        var options = new ChatOptions
        {
            Tools =
            [
                Function("get_weather", setup, (string city) => DemoTools.GetWeather(city)),
                Function("get_forecast", setup, (string city, int days, string unit = "celsius", string[]? include = null) =>
                    days is < 1 or > 7
                        ? $"Error: get_forecast failed: days must be from 1 to 7, not {days}"
                        : DemoTools.GetForecast(city, days, unit, include ?? [])),
            ],
        };

        async Task<string> RunFlowAsync(CancellationToken cancellationToken)
        {
            ChatResponse response = await client.GetResponseAsync(new MeaiChatMessage(ChatRole.User, setup.Question), options, cancellationToken);
            return response.Text;
        }

        return new BenchClient("Microsoft.Extensions.AI 10.11.0", "meai", RunFlowAsync);
    }

    /// <summary>
    /// A function from AIFunctionFactory (it binds the JSON arguments to the delegate's parameters and calls it),
    /// shown to the model with the same description and JSON schema as the other clients send, and returning its
    /// string as it is, so the tool message carries the same text (by default the result is JSON-serialized: quoted).
    /// </summary>
    static AIFunction Function(string name, FlowSetup setup, Delegate code)
    {
        Tool tool = setup.Tools.Single(t => t.Name == name);
        AIFunction function = AIFunctionFactory.Create(code, new AIFunctionFactoryOptions
        {
            Name = tool.Name,
            Description = tool.Description,
            MarshalResult = (result, _, _) => new ValueTask<object?>(result),
        });
        return new SameSchema(function, JsonElement.Parse(Json.Utf8(tool.Parameters).Span));
    }

    sealed class SameSchema(AIFunction function, JsonElement schema) : DelegatingAIFunction(function)
    {
        public override JsonElement JsonSchema => schema;
    }
}
