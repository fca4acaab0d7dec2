// The four clients of the bench. Each runs the complete four-step flow of ToolCall.cs once per call of RunFlowAsync,
// against the same replay server, and returns the model's final text.

using ToolCall;
using System;
using System.Collections.Generic;
using System.IO;
using System.Net;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using System.Threading;
using System.Threading.Tasks;

/// <summary>One client under test: a name for the table and one complete flow.</summary>
sealed record BenchClient(string Name, string Key, Func<CancellationToken, Task<string>> RunFlowAsync)
{
    /// <summary>For the floor only: the answer in its last response, read once after a flow, outside the timing.</summary>
    public Func<string>? Check { get; init; }
}

/// <summary>What every client is given: the server, the question, the tools and the expected answer.</summary>
sealed record FlowSetup(string BaseUrl, string Question, string ExpectedAnswer, IReadOnlyList<Tool> Tools, bool Trace)
{
    public const string Model = "gpt-4o-mini";

    /// <summary>Every client sends a key, as it would against a real API (the replay server ignores it).</summary>
    public const string ApiKey = "dummy-key-for-the-bench";

    /// <summary>--no-network: the handler every client gets instead of its own (answers from memory).</summary>
    public Func<HttpMessageHandler>? Transport { get; init; }

    /// <summary>The client's own handler; with --trace wrapped in one that prints every request body.</summary>
    public HttpMessageHandler Handler(HttpMessageHandler handler) =>
        Transport?.Invoke() ?? (Trace ? new TracingHandler(handler) : handler);
}

/// <summary>--no-network: answers every request with the next recorded response, in turn, without a socket.</summary>
sealed class CannedResponses(IReadOnlyList<byte[]> responses) : HttpMessageHandler
{
    int next;

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        byte[] body = responses[next];
        next = (next + 1) % responses.Count;
        var response = new HttpResponseMessage(HttpStatusCode.OK) { Content = new ByteArrayContent(body), RequestMessage = request };
        response.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return Task.FromResult(response);
    }
}

/// <summary>--trace: prints each request body on stderr, to see what a client really sends.</summary>
sealed class TracingHandler(HttpMessageHandler inner) : DelegatingHandler(inner)
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        string body = request.Content is null ? "" : await request.Content.ReadAsStringAsync(cancellationToken);
        Console.Error.WriteLine($"--- {request.Method} {request.RequestUri}\n{request.Headers}{request.Content?.Headers}{body}");
        HttpResponseMessage response = await base.SendAsync(request, cancellationToken);
        Console.Error.WriteLine($"--- HTTP {(int)response.StatusCode}");
        return response;
    }
}

/// <summary>1. This project: the program's path (what ./run.sh runs): ToolCall.cs's ToolCalling.RunAsync with the
/// program's ChatClient (ResilientChatClient) and tools (ProgramTools), and no step log.</summary>
static class ReferenceClient
{
    public static BenchClient Create(FlowSetup setup)
    {
        // The HttpClient the command line builds (Cli.AskAsync), created once and reused, as it should be.
        var http = new HttpClient(setup.Handler(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.All }))
        {
            Timeout = Timeout.InfiniteTimeSpan, // ResilientChatClient times each attempt itself (--timeout)
        };
        var chat = new ResilientChatClient(http, setup.BaseUrl, Api.Named("chat"), FlowSetup.ApiKey, StepLog.Silent);
        // The tools and the way their calls run, as the command line sets them up with its defaults (Cli.AskAsync):
        // checked, each call bounded (--tool-timeout 30, --max-result-chars 20000), run one after another.
        Tool[] tools = ProgramTools.Create();
        var options = new FlowOptions { RunCalls = new ToolRunner().RunCallsAsync };
        return new BenchClient("ToolCall (this project)", "toolcall", cancellationToken =>
            ToolCalling.RunAsync(chat, FlowSetup.Model, setup.Question, tools, options, cancellationToken));
    }
}

/// <summary>
/// 4. The floor: what any client must at least do. Two POSTs of request bytes serialized in advance (the cassette's
/// own requests), each response read to its end into a reused buffer. No JSON work at all.
/// </summary>
static class FloorClient
{
    public static BenchClient Create(FlowSetup setup, IReadOnlyList<byte[]> requestBodies)
    {
        var http = new HttpClient(setup.Handler(new SocketsHttpHandler()));
        var url = new Uri(setup.BaseUrl.TrimEnd('/') + "/chat/completions");
        var contentType = new MediaTypeHeaderValue("application/json");
        var authorization = new AuthenticationHeaderValue("Bearer", FlowSetup.ApiKey);
        byte[] buffer = new byte[64 * 1024]; // holds the last response, for the one check outside the timed runs
        int length = 0;

        async Task<string> RunFlowAsync(CancellationToken cancellationToken)
        {
            foreach (byte[] body in requestBodies)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = new ByteArrayContent(body) };
                request.Content.Headers.ContentType = contentType;
                request.Headers.Authorization = authorization;
                using HttpResponseMessage response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
                if (response.StatusCode != HttpStatusCode.OK)
                    throw new InvalidOperationException($"HTTP {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}");
                await using Stream stream = await response.Content.ReadAsStreamAsync(cancellationToken);
                length = 0;
                int read;
                while ((read = await stream.ReadAsync(buffer.AsMemory(length), cancellationToken)) > 0)
                    length += read;
            }
            // No JSON work in the timed runs: the answer is the expected one because the bytes sent were the
            // cassette's; LastAnswer reads it from the last response once, to check that.
            return setup.ExpectedAnswer;
        }

        string LastAnswer() =>
            JsonNode.Parse(buffer.AsSpan(0, length))?["choices"]?[0]?["message"]?["content"]?.GetValue<string>() ?? "(none)";

        return new BenchClient("floor (raw HttpClient)", "floor", RunFlowAsync) { Check = LastAnswer };
    }
}
