// ApiError.cs: the error shape of the OpenAI APIs, as the replay server writes it and the client reads it.

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

/// <summary>The API's own error shape: {"error": {"message", "type", "param", "code"}}.</summary>
static class ApiError
{
    public static JsonObject Create(string message, string type = "invalid_request_error", string? param = null, string? code = null) =>
        new() { ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = param, ["code"] = code } };

    /// <summary>One line for a failed request: the HTTP status and, when the body has one, the API's own message.</summary>
    public static string Describe(int status, string? reason, JsonNode? body, string text)
    {
        string head = $"HTTP {status} {reason}".TrimEnd();
        // {"error": {"message"}} as the API sends it; some servers send {"error": "..."} (Ollama) or {"message": "..."}.
        string? message = Json.String(Json.At(body, "error", "message")) ?? Json.String(Json.At(body, "error")) ?? Json.String(Json.At(body, "message"));
        if (message is not null)
            return $"{head}: {message}";
        string snippet = text.Length > 200 ? text[..200] + "…" : text;
        return snippet.Length == 0 ? $"{head} with an empty body." : $"{head}: {snippet.ReplaceLineEndings(" ")}";
    }
}
