// 2. The official OpenAI .NET SDK 2.15.0: the flow of OpenAISdkFlow, with the SDK's ChatClient created once.

using ToolCall;
using System;
using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net.Http;
using OpenAI;
using OpenAI.Chat;
using SdkChatClient = OpenAI.Chat.ChatClient;

static class OpenAISdkClient
{
    public static BenchClient Create(FlowSetup setup)
    {
        SdkChatClient client = CreateChatClient(setup);
        ChatTool[] tools = OpenAISdkFlow.Tools(setup.Tools);
        return new BenchClient("OpenAI SDK 2.15.0", "openai_sdk",
            cancellationToken => OpenAISdkFlow.RunAsync(client, setup.Question, tools, cancellationToken));
    }

    /// <summary>The SDK's ChatClient as its README builds one (its own shared HttpClient), pointed at the replay server.</summary>
    public static SdkChatClient CreateChatClient(FlowSetup setup)
    {
        var options = new OpenAIClientOptions { Endpoint = new Uri(setup.BaseUrl) };
        if (setup.Trace || setup.Transport is not null)
            options.Transport = new HttpClientPipelineTransport(new HttpClient(setup.Handler(new SocketsHttpHandler())));
        return new SdkChatClient(FlowSetup.Model, new ApiKeyCredential(FlowSetup.ApiKey), options);
    }
}
