// JsonMatch.cs: how the replay server decides that a request is the recorded one.

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

/// <summary>
/// How the replay server decides that a request is the recorded one: as the API reads JSON. Key order and
/// whitespace do not matter, null equals absent, numbers compare by value, `arguments` strings compare as the JSON
/// they contain, a field at the API's default equals its absence (see ReadsAsAbsent), a message's text content
/// equals the one text part it stands for (see AsText), and the top-level `model` is ignored (choose any model when
/// you replay). What the model would read differently still differs: a tool result sent JSON-quoted is named as such.
/// </summary>
static class JsonMatch
{
    static readonly HashSet<string> IgnoredTopLevelFields = ["model"];

    /// <summary>Null when they match, else "$.path: expected X, got Y" for the first difference. `endpoint` (the
    /// path of the request, "/chat/completions", "/responses" or "/messages") says whose defaults apply.</summary>
    public static string? FirstDifference(JsonNode? expected, JsonNode? actual, string endpoint = "/chat/completions") =>
        Difference(expected, actual, "$", endpoint);

    static string? Difference(JsonNode? expected, JsonNode? actual, string path, string endpoint)
    {
        if (IsNull(expected) && IsNull(actual))
            return null;
        if (expected is JsonObject expectedObject && actual is JsonObject actualObject)
        {
            foreach (string key in expectedObject.Select(p => p.Key).Union(actualObject.Select(p => p.Key)))
            {
                if (path == "$" && IgnoredTopLevelFields.Contains(key) ||
                    ReadsAsAbsent(path, key, expectedObject, endpoint) && ReadsAsAbsent(path, key, actualObject, endpoint))
                    continue;
                string at = $"{path}.{key}";
                JsonNode? expectedValue = AsText(path, key, expectedObject), actualValue = AsText(path, key, actualObject);
                string? difference = key switch
                {
                    "arguments" => ArgumentsDifference(expectedValue, actualValue, at, endpoint),
                    _ when IsToolResult(key, actualObject) => ToolResultDifference(expectedValue, actualValue, at, endpoint),
                    _ => Difference(expectedValue, actualValue, at, endpoint),
                };
                if (difference is not null)
                    return difference;
            }
            return null;
        }
        if (expected is JsonArray expectedArray && actual is JsonArray actualArray)
        {
            for (int i = 0; i < Math.Min(expectedArray.Count, actualArray.Count); i++)
            {
                if (Difference(expectedArray[i], actualArray[i], $"{path}[{i}]", endpoint) is string difference)
                    return difference;
            }
            return expectedArray.Count == actualArray.Count
                ? null
                : $"{path}: expected {expectedArray.Count} item{(expectedArray.Count == 1 ? "" : "s")}, got {actualArray.Count}";
        }
        return ValuesEqual(expected, actual) ? null : $"{path}: expected {Show(expected)}, got {Show(actual)}";
    }

    static string? ArgumentsDifference(JsonNode? expected, JsonNode? actual, string path, string endpoint)
    {
        JsonNode? Parsed(JsonNode? node) => Json.String(node) is string text ? Json.TryParse(text) ?? node : node;
        return Difference(Parsed(expected), Parsed(actual), path, endpoint) is null ? null : $"{path}: expected {Show(expected)}, got {Show(actual)}";
    }

    // Each API's documented defaults for the request's top-level fields: sending one is the same request as leaving it
    // out. Chat Completions: CreateChatCompletionRequest in the OpenAPI spec. Responses: CreateResponse in the same
    // spec (where `store` defaults to true). Messages: Anthropic's API reference ("temperature … Defaults to 1.0"; a
    // reply is streamed only when asked). tool_choice's default depends on `tools`; see ReadsAsAbsent.
    static readonly Dictionary<string, Dictionary<string, JsonNode>> TopLevelDefaults = new()
    {
        ["/chat/completions"] = new()
        {
            ["temperature"] = 1,
            ["top_p"] = 1,
            ["n"] = 1,
            ["frequency_penalty"] = 0,
            ["presence_penalty"] = 0,
            ["stream"] = false,
            ["logprobs"] = false,
            ["store"] = false,
            ["parallel_tool_calls"] = true,
            ["service_tier"] = "auto",
        },
        ["/responses"] = new()
        {
            ["temperature"] = 1,
            ["top_p"] = 1,
            ["stream"] = false,
            ["store"] = true,
            ["background"] = false,
            ["truncation"] = "disabled",
            ["parallel_tool_calls"] = true,
            ["service_tier"] = "auto",
        },
        ["/messages"] = new()
        {
            ["temperature"] = 1,
            ["stream"] = false,
        },
    };

    /// <summary>
    /// Whether `owner[key]` reads as if it were not there: null, a request field at its default, a message's empty
    /// `annotations`, or a Responses input message's "type": "message". SDKs differ exactly there:
    /// Microsoft.Extensions.AI sends tool_choice "auto", the OpenAI .NET SDK echoes an assistant message without its
    /// `annotations` (openai-node with them) and types every input message.
    /// </summary>
    static bool ReadsAsAbsent(string path, string key, JsonObject owner, string endpoint)
    {
        if (owner[key] is not JsonNode value || value.GetValueKind() == JsonValueKind.Null)
            return true;
        if (path == "$")
            return key == "tool_choice"
                ? ToolChoiceIsTheDefault(value, owner["tools"] is JsonArray { Count: > 0 }, endpoint)
                : TopLevelDefaults.GetValueOrDefault(endpoint)?.TryGetValue(key, out JsonNode? standard) == true && ValuesEqual(standard, value);
        if (key == "strict" && IsItem(path, "$.tools", then: ".function"))
            return value.GetValueKind() == JsonValueKind.False; // Chat Completions' FunctionObject.strict defaults to false
        // An input message's type can only be "message" (EasyInputMessage: "Always `message`"), so saying it changes
        // nothing.
        if (key == "type" && IsItem(path, "$.input") && owner["role"] is not null)
            return Json.String(value) == "message";
        // `annotations` (citations) belong to the response's message; a request message has no such field
        // (ChatCompletionRequestAssistantMessage), so an echoed empty one is the same as none. Real citations differ.
        return key == "annotations" && IsItem(path, "$.messages") && value is JsonArray { Count: 0 };
    }

    /// <summary>With tools, the model decides: "auto" (the Messages API: {"type":"auto"}); without, "none".</summary>
    static bool ToolChoiceIsTheDefault(JsonNode value, bool withTools, string endpoint) => endpoint == "/messages"
        ? withTools && value is JsonObject { Count: 1 } choice && Json.String(choice["type"]) == "auto"
        : Json.String(value) == (withTools ? "auto" : "none");

    /// <summary>Whether `path` is "{array}[N]{then}", an item of that array (or a field of it).</summary>
    static bool IsItem(string path, string array, string then = "") =>
        path.StartsWith(array + "[", StringComparison.Ordinal) && path.EndsWith("]" + then, StringComparison.Ordinal) &&
        path.Length > array.Length + 2 + then.Length && path[(array.Length + 1)..^(then.Length + 1)].All(char.IsAsciiDigit);

    /// <summary>
    /// A message's `content` (and a tool_result block's) as the text it stands for: a string is shorthand for one text
    /// part, so [{"type":"text","text":"Hi"}] reads as "Hi" (the part is "input_text" in a Responses input message,
    /// "output_text" in an assistant one). The OpenAI .NET SDK sends the question as such a part; other values stay.
    /// </summary>
    static JsonNode? AsText(string path, string key, JsonObject owner)
    {
        JsonNode? value = owner[key];
        string? partType = key != "content" ? null
            : IsItem(path, "$.input") ? (Json.String(owner["role"]) == "assistant" ? "output_text" : "input_text")
            : IsItem(path, "$.messages") || Json.String(owner["type"]) == "tool_result" ? "text"
            : null;
        if (partType is null || value is not JsonArray { Count: 1 } parts || parts[0] is not JsonObject part)
            return value;
        bool onlyText = part.All(field => field.Key is "type" or "text" || IsNull(field.Value));
        return onlyText && Json.String(part["type"]) == partType && part["text"] is JsonValue text && Json.String(text) is not null ? text : value;
    }

    /// <summary>The result of a tool call, in each API's place for it: a tool message's `content`, a
    /// function_call_output's `output`, a tool_result block's `content`.</summary>
    static bool IsToolResult(string key, JsonObject owner) => key switch
    {
        "content" => Json.String(owner["role"]) == "tool" || Json.String(owner["type"]) == "tool_result",
        "output" => Json.String(owner["type"]) == "function_call_output",
        _ => false,
    };

    /// <summary>A tool result the model would read differently is a difference, and the commonest one is named: a
    /// string serialized once more as JSON ("\"It's ...\""), the default of some libraries for a string result.</summary>
    static string? ToolResultDifference(JsonNode? expected, JsonNode? actual, string path, string endpoint)
    {
        if (Difference(expected, actual, path, endpoint) is not string difference)
            return null;
        bool quoted = Json.String(actual) is string text && Json.String(Json.TryParse(text)) is string unquoted &&
                      unquoted == Json.String(expected);
        return quoted
            ? $"{path}: the tool result is JSON-quoted: expected {Show(expected)}, got {Show(actual)}. Send the function's text as it is; the model would read the quotes"
            : difference;
    }

    static bool IsNull(JsonNode? node) => node is null || node.GetValueKind() == JsonValueKind.Null;

    static bool ValuesEqual(JsonNode? expected, JsonNode? actual)
    {
        if (expected is not JsonValue e || actual is not JsonValue a || e.GetValueKind() != a.GetValueKind())
            return false;
        return e.GetValueKind() == JsonValueKind.Number
            ? decimal.Parse(Json.Compact(e), NumberStyles.Float, CultureInfo.InvariantCulture) ==
              decimal.Parse(Json.Compact(a), NumberStyles.Float, CultureInfo.InvariantCulture)
            : JsonNode.DeepEquals(e, a);
    }

    static string Show(JsonNode? node)
    {
        if (node is null)
            return "nothing";
        string text = Json.Compact(node);
        return text.Length > 120 ? text[..120] + "…" : text;
    }
}
