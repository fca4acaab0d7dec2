// JsonMatch.cs: how the replay server decides that a request is the recorded one.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>
/// How the replay server decides that a request is the recorded one: as the API reads JSON. Key order and
/// whitespace do not matter, null equals absent, numbers compare by value, `arguments` strings compare as the JSON
/// they contain, a field at the API's default equals its absence (see ReadsAsAbsent), a message's text content
/// equals the one text part it stands for (see AsText), and the top-level `model` is ignored (choose any model when
/// you replay). What the model would read differently still differs: a tool result sent JSON-quoted is named as such.
/// This class knows JSON; which fields are defaults, text contents or tool results it asks the ServedApi.
/// </summary>
static class JsonMatch
{
    static readonly HashSet<string> IgnoredTopLevelFields = ["model"];

    /// <summary>Null when they match, else "$.path: expected X, got Y" for the first difference. `api` (the API
    /// served at the request's path) says whose defaults apply; with none (a path no API is served at), the bodies
    /// are read as plain JSON.</summary>
    public static string? FirstDifference(JsonNode? expected, JsonNode? actual, ServedApi? api) =>
        Difference(expected, actual, "$", api);

    /// <summary>The same, for the API served at `endpoint` ("/chat/completions", "/responses" or "/messages").</summary>
    public static string? FirstDifference(JsonNode? expected, JsonNode? actual, string endpoint = "/chat/completions") =>
        FirstDifference(expected, actual, ServedApi.At(endpoint));

    static string? Difference(JsonNode? expected, JsonNode? actual, string path, ServedApi? api)
    {
        if (IsNull(expected) && IsNull(actual))
            return null;
        if (expected is JsonObject expectedObject && actual is JsonObject actualObject)
        {
            foreach (string key in expectedObject.Select(p => p.Key).Union(actualObject.Select(p => p.Key)))
            {
                if (path == "$" && IgnoredTopLevelFields.Contains(key) ||
                    ReadsAsAbsent(path, key, expectedObject, api) && ReadsAsAbsent(path, key, actualObject, api))
                    continue;
                string at = $"{path}.{key}";
                JsonNode? expectedValue = AsText(path, key, expectedObject, api), actualValue = AsText(path, key, actualObject, api);
                string? difference = key switch
                {
                    "arguments" => ArgumentsDifference(expectedValue, actualValue, at, api),
                    _ when api?.IsToolResult(key, actualObject) == true => ToolResultDifference(expectedValue, actualValue, at, api),
                    _ => Difference(expectedValue, actualValue, at, api),
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
                if (Difference(expectedArray[i], actualArray[i], $"{path}[{i}]", api) is string difference)
                    return difference;
            }
            return expectedArray.Count == actualArray.Count
                ? null
                : $"{path}: expected {expectedArray.Count} item{(expectedArray.Count == 1 ? "" : "s")}, got {actualArray.Count}";
        }
        return ValuesEqual(expected, actual) ? null : $"{path}: expected {Show(expected)}, got {Show(actual)}";
    }

    static string? ArgumentsDifference(JsonNode? expected, JsonNode? actual, string path, ServedApi? api)
    {
        JsonNode? Parsed(JsonNode? node) => Json.String(node) is string text ? Json.TryParse(text) ?? node : node;
        return Difference(Parsed(expected), Parsed(actual), path, api) is null ? null : $"{path}: expected {Show(expected)}, got {Show(actual)}";
    }

    /// <summary>
    /// Whether `owner[key]` reads as if it were not there: null, a top-level field at the API's documented default
    /// (tool_choice's depends on `tools`), or what the API says reads as absent below the top level. SDKs differ
    /// exactly there: Microsoft.Extensions.AI sends tool_choice "auto", the OpenAI .NET SDK echoes an assistant message
    /// without its `annotations` (openai-node with them) and types every input message.
    /// </summary>
    static bool ReadsAsAbsent(string path, string key, JsonObject owner, ServedApi? api)
    {
        if (owner[key] is not JsonNode value || value.GetValueKind() == JsonValueKind.Null)
            return true;
        if (api is null)
            return false;
        if (path == "$")
            return key == "tool_choice"
                ? api.ToolChoiceIsTheDefault(value, owner["tools"] is JsonArray { Count: > 0 })
                : api.TopLevelDefaults.TryGetValue(key, out JsonNode? standard) && ValuesEqual(standard, value);
        return api.ReadsAsAbsent(path, key, value, owner);
    }

    /// <summary>
    /// `owner[key]` as the text it stands for, when the API says it is a text content (see ServedApi.TextPartType): a
    /// string is shorthand for one text part, so [{"type":"text","text":"Hi"}] reads as "Hi". The OpenAI .NET SDK
    /// sends the question as such a part; other values stay.
    /// </summary>
    static JsonNode? AsText(string path, string key, JsonObject owner, ServedApi? api)
    {
        JsonNode? value = owner[key];
        if (api?.TextPartType(path, key, owner) is not string partType || value is not JsonArray { Count: 1 } parts || parts[0] is not JsonObject part)
            return value;
        bool onlyText = part.All(field => field.Key is "type" or "text" || IsNull(field.Value));
        return onlyText && Json.String(part["type"]) == partType && part["text"] is JsonValue text && Json.String(text) is not null ? text : value;
    }

    /// <summary>A tool result the model would read differently is a difference, and the commonest one is named: a
    /// string serialized once more as JSON ("\"It's ...\""), the default of some libraries for a string result.</summary>
    static string? ToolResultDifference(JsonNode? expected, JsonNode? actual, string path, ServedApi? api)
    {
        if (Difference(expected, actual, path, api) is not string difference)
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
