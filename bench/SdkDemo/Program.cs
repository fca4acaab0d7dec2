// SdkDemo: ToolCall's offline demo (`./run.sh`) with the official OpenAI SDK as the client. It replays
// cassettes/weather.json on ToolCall's replay server, in process as the demo does, asks the cassette's question with
// the same two tools, and prints the answer. The bench times its cold start beside ToolCall's.

using ToolCall;
using System;
using System.ClientModel;
using System.IO;
using System.Threading;
using OpenAI;
using SdkChatClient = OpenAI.Chat.ChatClient;

string cassettePath = Path.Combine(Environment.CurrentDirectory, "cassettes", "weather.json");
if (!File.Exists(cassettePath))
{
    Console.Error.WriteLine($"error: no {cassettePath}; run SdkDemo from the repository root.");
    return 2;
}
Cassette cassette = Cassette.Load(cassettePath);
await using ReplayServer server = ReplayServer.Start(cassette);
Console.Error.WriteLine($"Replaying cassettes/weather.json on {server.BaseUrl} (offline).");

// A replay needs no key, but the SDK requires one; this one never leaves the machine.
var client = new SdkChatClient("gpt-4o-mini", new ApiKeyCredential("replay"), new OpenAIClientOptions { Endpoint = new Uri(server.BaseUrl) });
string answer = await OpenAISdkFlow.RunAsync(client, cassette.FirstQuestion("messages")!, OpenAISdkFlow.Tools(DemoTools.Create()), CancellationToken.None);
Console.WriteLine(answer);
return 0;
