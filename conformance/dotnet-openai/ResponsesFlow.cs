// The same flow on the Responses API, with the SDK's ResponsesClient (--api responses): the SDK writes the requests,
// parses the responses and the typed event stream, and serializes the output items it hands back for the history.
//
// The SDK marks its whole Responses API surface as experimental (diagnostic OPENAI001, an error under warnings as
// errors), so this file, and only this file, turns that diagnostic off.
#pragma warning disable OPENAI001

using System.ClientModel;
using OpenAI;
using OpenAI.Responses;

static class ResponsesFlow
{
    public static async Task<int> RunAsync(
        string question, string key, OpenAIClientOptions clientOptions, bool noParallel, bool stream, bool toolChoiceRequired, int maxRounds)
    {
        // The SDK's own retry policy stays on, as for Chat Completions, and so does its timeout (--timeout).
        var responsesOptions = new ResponsesClientOptions { Endpoint = clientOptions.Endpoint };
        if (clientOptions.NetworkTimeout is TimeSpan timeout)
            responsesOptions.NetworkTimeout = timeout;
        var client = new ResponsesClient(new ApiKeyCredential(key), responsesOptions);
        var options = new CreateResponseOptions
        {
            Model = "gpt-4o-mini",
            InputItems = { ResponseItem.CreateUserMessageItem(question) },
            // Flat function tools, with `strict` sent (false): left out, the API would make the schemas strict.
            Tools =
            {
                ResponseTool.CreateFunctionTool(DemoTools.WeatherName, DemoTools.WeatherParameters, strictModeEnabled: false, DemoTools.WeatherDescription),
                ResponseTool.CreateFunctionTool(DemoTools.ForecastName, DemoTools.ForecastParameters, strictModeEnabled: false, DemoTools.ForecastDescription),
            },
            StreamingEnabled = stream ? true : null,
        };
        if (noParallel)
            options.ParallelToolCallsEnabled = false;
        try
        {
            for (int round = 1; round <= maxRounds + 1; round++)
            {
                // "required" on the first request only, since it forces a call on every request that carries it; the
                // request after the last round allowed asks for an answer (PROTOCOL.md).
                if (round > maxRounds)
                    options.ToolChoice = ResponseToolChoice.CreateNoneChoice();
                else if (toolChoiceRequired)
                    options.ToolChoice = round == 1 ? ResponseToolChoice.CreateRequiredChoice() : ResponseToolChoice.CreateAutoChoice();
                ResponseResult response = stream ? await StreamedResponseAsync(client, options) : (await client.CreateResponseAsync(options)).Value;
                FunctionCallResponseItem[] calls = [.. response.OutputItems.OfType<FunctionCallResponseItem>()];
                if (calls.Length == 0)
                {
                    if (!stream) // streamed, it has been shown as it arrived
                        Console.WriteLine(AnswerOf(response));
                    return 0;
                }
                foreach (ResponseItem item in response.OutputItems) // the output items as received, then one output per call
                    options.InputItems.Add(item);
                foreach (FunctionCallResponseItem call in calls)
                    options.InputItems.Add(ResponseItem.CreateFunctionCallOutputItem(call.CallId, DemoTools.Run(call.FunctionName, call.FunctionArguments)));
            }
            Console.Error.WriteLine($"error: the model still asks for tools after {maxRounds} rounds, even when asked to answer");
        }
        catch (ClientResultException e)
        {
            Console.Error.WriteLine($"error: {e.Message.ReplaceLineEndings(" ")}");
        }
        return 1;
    }

    // The text of the message's output_text parts (the SDK joins them), or its refusal parts when the model refused.
    static string AnswerOf(ResponseResult response) => response.GetOutputText() is { Length: > 0 } text
        ? text
        : string.Concat(response.OutputItems.OfType<MessageResponseItem>().SelectMany(message => message.Content)
            .Where(part => part.Kind == ResponseContentPartKind.Refusal).Select(part => part.Refusal));

    // Streamed, the SDK reads the typed events into updates; response.completed carries the whole response. The text (or
    // a refusal) is shown as it arrives, and a reply that showed some ends its line.
    static async Task<ResponseResult> StreamedResponseAsync(ResponsesClient client, CreateResponseOptions options)
    {
        ResponseResult? completed = null;
        bool shown = false;
        await foreach (StreamingResponseUpdate update in await client.CreateResponseStreamingAsync(options))
        {
            string? piece = update switch
            {
                StreamingResponseOutputTextDeltaUpdate text => text.Delta,
                StreamingResponseRefusalDeltaUpdate refusal => refusal.Delta,
                _ => null,
            };
            Console.Write(piece);
            shown |= piece is { Length: > 0 };
            if (update is StreamingResponseCompletedUpdate done)
                completed = done.Response;
        }
        if (shown)
            Console.WriteLine();
        return completed ?? throw new InvalidOperationException("the stream ended without response.completed");
    }
}
