// The same flow on the Responses API, with the SDK's ResponsesClient (--api responses): the SDK writes the requests,
// parses the responses and the typed event stream, and serializes the output items it hands back for the history.
//
// The SDK marks its whole Responses API surface as experimental (diagnostic OPENAI001, an error under warnings as
// errors), so this file, and only this file, turns that diagnostic off.
#pragma warning disable OPENAI001

using System.ClientModel;
using OpenAI.Responses;

static class ResponsesFlow
{
    public static async Task<int> RunAsync(string question, string baseUrl, string key, bool noParallel, bool stream)
    {
        // The SDK's own retry policy stays on, as for Chat Completions.
        var client = new ResponsesClient(new ApiKeyCredential(key), new ResponsesClientOptions { Endpoint = new Uri(baseUrl) });
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
            for (int round = 1; round <= 8; round++)
            {
                ResponseResult response = stream ? await StreamedResponseAsync(client, options) : (await client.CreateResponseAsync(options)).Value;
                FunctionCallResponseItem[] calls = [.. response.OutputItems.OfType<FunctionCallResponseItem>()];
                if (calls.Length == 0)
                {
                    Console.WriteLine(response.GetOutputText());
                    return 0;
                }
                foreach (ResponseItem item in response.OutputItems) // the output items as received, then one output per call
                    options.InputItems.Add(item);
                foreach (FunctionCallResponseItem call in calls)
                    options.InputItems.Add(ResponseItem.CreateFunctionCallOutputItem(call.CallId, DemoTools.Run(call.FunctionName, call.FunctionArguments)));
            }
            Console.Error.WriteLine("error: the model still asks for tools after 8 rounds");
        }
        catch (ClientResultException e)
        {
            Console.Error.WriteLine($"error: {e.Message.ReplaceLineEndings(" ")}");
        }
        return 1;
    }

    // Streamed, the SDK reads the typed events into updates; response.completed carries the whole response.
    static async Task<ResponseResult> StreamedResponseAsync(ResponsesClient client, CreateResponseOptions options)
    {
        ResponseResult? completed = null;
        await foreach (StreamingResponseUpdate update in await client.CreateResponseStreamingAsync(options))
        {
            if (update is StreamingResponseCompletedUpdate done)
                completed = done.Response;
        }
        return completed ?? throw new InvalidOperationException("the stream ended without response.completed");
    }
}
