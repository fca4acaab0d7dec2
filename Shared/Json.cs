// Json.cs: JSON in and out, for every file but ToolCall.cs (which stands alone).

using System;
using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>
/// JSON in and out. One .NET detail for the whole file: messages.Add(new JsonObject { … }) would pick JsonArray's
/// generic Add&lt;T&gt;, which may serialize by reflection and so breaks Native AOT; typed as JsonNode, the value
/// goes through the plain Add(JsonNode). That is why some values are declared `JsonNode x = new JsonObject …` first.
/// </summary>
static class Json
{
    // Relaxed escaping writes "°", "'" and "+" as themselves instead of \u00B0, \u0027 and \u002B: still valid JSON
    // (the strict default only matters for JSON embedded in HTML), and readable on the wire and in cassettes.
    static readonly JsonWriterOptions CompactOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    static readonly JsonWriterOptions IndentedOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, Indented = true };

    public static ReadOnlyMemory<byte> Utf8(JsonNode node, bool indented = false) =>
        Write(node, new ArrayBufferWriter<byte>(1024), indented ? IndentedOptions : CompactOptions);

    /// <summary>
    /// Compact UTF-8 JSON written into `buffer`, which is reused: what it held is overwritten, so the result is valid
    /// until the next call with the same buffer. Once the buffer has grown to the size of the requests, writing
    /// one allocates nothing (a new buffer would be allocated, and grown by copying, for every request).
    /// </summary>
    public static ReadOnlyMemory<byte> Utf8(JsonNode node, ArrayBufferWriter<byte> buffer)
    {
        buffer.ResetWrittenCount();
        return Write(node, buffer, CompactOptions);
    }

    static ReadOnlyMemory<byte> Write(JsonNode node, ArrayBufferWriter<byte> buffer, JsonWriterOptions options)
    {
        using (var writer = new Utf8JsonWriter(buffer, options))
            node.WriteTo(writer);
        return buffer.WrittenMemory;
    }

    public static string Compact(JsonNode? node) => node is null ? "null" : Encoding.UTF8.GetString(Utf8(node).Span);

    public static string Indented(JsonNode? node) => node is null ? "null" : Encoding.UTF8.GetString(Utf8(node, indented: true).Span);

    /// <summary>The node at a path of property names, or null where a step is missing or not an object. (The
    /// indexer node["name"] throws on an array or a value, and a server's JSON can be anything.)</summary>
    public static JsonNode? At(JsonNode? node, params ReadOnlySpan<string> path)
    {
        foreach (string name in path)
            node = node is JsonObject obj ? obj[name] : null;
        return node;
    }

    /// <summary>The string in a JSON string value, else null (for a number, an object, null or nothing).</summary>
    public static string? String(JsonNode? node) =>
        node is JsonValue value && value.GetValueKind() == JsonValueKind.String ? value.GetValue<string>() : null;

    /// <summary>What a value is, in words for an error message: "an object", "a string", "null"…</summary>
    public static string KindName(JsonNode? value) => value?.GetValueKind() switch
    {
        null or JsonValueKind.Null => "null",
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        _ => "a boolean",
    };

    // A JSON object with a key twice parses, then throws on first use; refuse it while parsing, as invalid JSON.
    static readonly JsonDocumentOptions ParseOptions = new() { AllowDuplicateProperties = false };

    /// <summary>Parses JSON from elsewhere (the server, the model, a file). Throws JsonException when it is not valid.</summary>
    public static JsonNode? Parse(ReadOnlySpan<byte> utf8) =>
        System.Text.Unicode.Utf8.IsValid(utf8) // checked first: the parser leaves names unchecked until first use, and then throws something else
            ? JsonNode.Parse(utf8, documentOptions: ParseOptions)
            : throw new JsonException("The text is not valid UTF-8.");

    public static JsonNode? Parse(string text) => JsonNode.Parse(text, documentOptions: ParseOptions);

    public static JsonNode? TryParse(string text)
    {
        try
        {
            return Parse(text);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>True when the bytes that failed to parse are the start of valid JSON that ends too soon: cut off in transit.</summary>
    public static bool IsCutOff(ReadOnlySpan<byte> utf8)
    {
        var reader = new Utf8JsonReader(utf8, isFinalBlock: false, state: default);
        try
        {
            while (reader.Read())
            {
            }
        }
        catch (JsonException)
        {
            return false; // wrong before its end: not JSON, however much more came
        }
        return reader.CurrentDepth > 0 || reader.TokenType is JsonTokenType.None or JsonTokenType.PropertyName;
    }
}
