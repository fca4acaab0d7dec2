// ApiError.cs: the error shape of the OpenAI APIs, as the replay server writes it and the client reads it.

using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>The API's own error shape: {"error": {"message", "type", "param", "code"}}.</summary>
static class ApiError
{
    public static JsonObject Create(string message, string type = "invalid_request_error", string? param = null, string? code = null) =>
        new() { ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = param, ["code"] = code } };

    /// <summary>One line for a failed request: the HTTP status and, when the body has one, the API's own message.</summary>
    public static string Describe(int status, string? reason, JsonNode? body, string text)
    {
        string head = $"HTTP {status} {reason}".TrimEnd();
        // {"error": {"message"}} as the API sends it; some servers send {"error": "..."} (Ollama) or {"message": "..."},
        // and Gemini's OpenAI-compatible endpoint wraps its error in a list, [{"error": {…}}].
        if (body is JsonArray { Count: > 0 } list)
            body = list[0];
        string? message = Json.String(Json.At(body, "error", "message")) ?? Json.String(Json.At(body, "error")) ?? Json.String(Json.At(body, "message"));
        if (message is not null)
            return $"{head}: {(message.Length > 1000 ? $"{message[..1000]}… ({message.Length} characters)" : message)}";
        string snippet = text.Length > 200 ? text[..200] + "…" : text;
        return snippet.Length == 0 ? $"{head} with an empty body." : $"{head}: {snippet.ReplaceLineEndings(" ")}";
    }
}
