// McpTestServer: an MCP server on the official C# SDK with tools that exercise ToolCall's MCP client (McpClientTests).
//
//   dotnet McpTestServer.dll                 speaks whatever the client asks for (the SDK is dual-era: initialize or
//                                            server/discover)
//   dotnet McpTestServer.dll --modern-only   speaks 2026-07-28 only, so it refuses initialize
//   dotnet McpTestServer.dll --linger        does not exit when its stdin closes (the client must kill it)
//   dotnet McpTestServer.dll --weather-as N  calls its weather tool N instead of get_weather (the demo's own name)
//   dotnet McpTestServer.dll --also N        adds a tool named N that answers "also" (any name, dots included)
//
// It lists its tools three to a page (tools/list pagination), writes a line to stderr at the points a test waits for,
// and otherwise writes nothing but MCP on stdout.

using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using ModelContextProtocol;
using ModelContextProtocol.Protocol;
using ModelContextProtocol.Server;

bool modernOnly = args.Contains("--modern-only");
bool linger = args.Contains("--linger");
string weatherName = ValueOf("--weather-as") ?? "get_weather";
string? alsoName = ValueOf("--also");
string? ValueOf(string option) => Array.IndexOf(args, option) is int i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;

Tool[] tools =
[
    NewTool(weatherName, "Returns the current weather in the given city",
        """{"type":"object","properties":{"city":{"type":"string","description":"City name, e.g. \"London\""}},"required":["city"]}"""),
    NewTool("fail", "Always fails: answers with isError true"),
    NewTool("picture", "Answers with no text: an image, audio, a resource link and two embedded resources"),
    NewTool("structured", "Answers with structuredContent and no content"),
    NewTool("slow", "Waits until it is cancelled; writes \"slow: started\" and \"slow: cancelled\" to stderr"),
    NewTool("ask_client", "Sends the client a request (method) and answers with what the client replied",
        """{"type":"object","properties":{"method":{"type":"string"}},"required":["method"]}"""),
    NewTool("notify", "Sends a log message, tools/list_changed and a response with an unknown id before answering"),
    NewTool("exit", "Exits the process with the given code in the middle of the call",
        """{"type":"object","properties":{"code":{"type":"integer"}},"required":["code"]}"""),
    .. alsoName is null ? Array.Empty<Tool>() : [NewTool(alsoName, "Answers \"also\"")],
];
const int PageSize = 3;

var options = new McpServerOptions
{
    ServerInfo = new Implementation { Name = "McpTestServer", Version = "1.0.0" },
    ProtocolVersion = modernOnly ? "2026-07-28" : null,
    Capabilities = new ServerCapabilities { Tools = new ToolsCapability() },
    Handlers = new McpServerHandlers
    {
        ListToolsHandler = (context, _) =>
        {
            int start = int.TryParse(context.Params?.Cursor, out int cursor) ? cursor : 0;
            int end = Math.Min(start + PageSize, tools.Length);
            return ValueTask.FromResult(new ListToolsResult
            {
                Tools = tools[start..end],
                NextCursor = end < tools.Length ? end.ToString() : null,
            });
        },
        CallToolHandler = (context, cancellationToken) => context.Params?.Name == weatherName ? ValueTask.FromResult(WeatherOf(context))
            : context.Params?.Name == alsoName ? ValueTask.FromResult(Text("also"))
            : CallAsync(context, cancellationToken),
    },
};

await using (McpServer server = McpServer.Create(new StdioServerTransport(options), options))
{
    await server.RunAsync();
}
if (linger)
{
    Console.Error.WriteLine("linger: stdin is closed, staying up");
    await Task.Delay(Timeout.Infinite);
}
Console.Error.WriteLine("stdin is closed: exiting");
return 0;

static Tool NewTool(string name, string description, string schema = """{"type":"object"}""") =>
    new() { Name = name, Description = description, InputSchema = JsonElement.Parse(schema) };

static string Argument(RequestContext<CallToolRequestParams> context, string name) =>
    context.Params?.Arguments is { } arguments && arguments.TryGetValue(name, out JsonElement value) ? value.ToString() : "";

static CallToolResult Text(string text, bool isError = false) => new() { Content = [new TextContentBlock { Text = text }], IsError = isError };

static CallToolResult WeatherOf(RequestContext<CallToolRequestParams> context) =>
    Text($"It's 18°C and partly cloudy in {Argument(context, "city")}.");

static async ValueTask<CallToolResult> CallAsync(RequestContext<CallToolRequestParams> context, CancellationToken cancellationToken)
{
    McpServer server = context.Server;
    switch (context.Params?.Name)
    {
        case "fail":
            return Text("The weather service is down.", isError: true);
        case "picture":
            return new CallToolResult
            {
                Content =
                [
                    ImageContentBlock.FromBytes(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0 }, "image/png"),
                    AudioContentBlock.FromBytes(Encoding.ASCII.GetBytes("RIFF\0\0\0\0WAVE"), "audio/wav"),
                    new ResourceLinkBlock { Uri = "file:///forecast.csv", Name = "forecast.csv", MimeType = "text/csv", Description = "The week's forecast" },
                    new EmbeddedResourceBlock { Resource = new TextResourceContents { Uri = "file:///note.txt", MimeType = "text/plain", Text = "Bring an umbrella." } },
                    new EmbeddedResourceBlock { Resource = BlobResourceContents.FromBytes(new byte[] { 1, 2, 3 }, "file:///data.bin", "application/octet-stream") },
                ],
            };
        case "structured":
            return new CallToolResult { Content = [], StructuredContent = JsonElement.Parse("""{"temperature":18,"unit":"celsius"}""") };
        case "slow":
            Console.Error.WriteLine("slow: started");
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine("slow: cancelled");
                throw;
            }
            return Text("never");
        case "ask_client":
            string method = Argument(context, "method");
            try
            {
                JsonRpcResponse response = await server.SendRequestAsync(new JsonRpcRequest { Method = method, Params = new JsonObject() }, cancellationToken);
                return Text($"{method}: result {response.Result?.ToJsonString()}");
            }
            catch (McpProtocolException e)
            {
                return Text($"{method}: error {(int)e.ErrorCode}");
            }
        case "notify":
            await server.SendNotificationAsync("notifications/message",
                new JsonObject { ["level"] = "info", ["logger"] = "notify", ["data"] = "a log line from the server" }, cancellationToken: cancellationToken);
            await server.SendNotificationAsync("notifications/tools/list_changed", cancellationToken);
            await server.SendMessageAsync(new JsonRpcResponse { Id = new RequestId(424242), Result = new JsonObject { ["stray"] = true } }, cancellationToken);
            return Text("answered after the notifications");
        case "exit":
            Console.Error.WriteLine("exit: leaving in the middle of the call");
            Environment.Exit(int.Parse(Argument(context, "code")));
            return Text("never");
        default:
            throw new McpProtocolException($"Unknown tool: '{context.Params?.Name}'", McpErrorCode.InvalidParams);
    }
}
