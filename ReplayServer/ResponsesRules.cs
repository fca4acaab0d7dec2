// ResponsesRules.cs: the Responses API as the replay server serves it, and the rules it enforces on a request.

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

namespace ToolCall;

/// <summary>POST /responses: OpenAI's error shape, named stream events, the history in `input`, and ResponsesRules.</summary>
sealed class ServedResponsesApi : ServedApi
{
    public override string Path => "/responses";

    public override string HistoryField => "input";

    public override bool NamesEvents => true; // each event after an `event:` line with its "type"

    public override JsonObject Error(string message, string? code = null) => ApiError.Create(message, code: code);

    public override JsonObject? FirstViolation(JsonObject request, IReadOnlyDictionary<string, string> headers) =>
        ResponsesRules.FirstViolation(request);
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
                        $"Invalid type for 'input[{i}].arguments': expected a string, but got {Json.KindName(arguments)} instead.",
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
