// StrictSchema.cs: strict mode's schema form: how a schema is rewritten into it, and its rules.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>
/// Strict mode (`"strict": true` on a function): the API constrains the model's arguments to the schema, and accepts
/// only schemas in strict form. Every object says `"additionalProperties": false` and lists every property in
/// `required`; an optional property is made nullable instead ("type": ["string", "null"]), and the model sends null
/// for it. Rewrite produces that form; FirstViolation checks it in the API's words, for the client before it sends
/// and for the replay server, which answers with the API's 400.
/// </summary>
static class StrictSchema
{
    /// <summary>A copy of `schema` in strict form. An `additionalProperties` you set is kept: if it is not false,
    /// FirstViolation reports it, because replacing it would change what your function accepts.</summary>
    public static JsonObject Rewrite(JsonObject schema)
    {
        var strict = (JsonObject)schema.DeepClone();
        RewriteInPlace(strict);
        return strict;
    }

    static void RewriteInPlace(JsonObject schema)
    {
        if (schema["properties"] is JsonObject properties)
        {
            HashSet<string?> required = [.. (schema["required"] as JsonArray ?? []).Select(Json.String)];
            foreach ((string name, JsonNode? property) in properties)
            {
                if (property is not JsonObject propertySchema)
                    continue;
                RewriteInPlace(propertySchema);
                if (!required.Contains(name))
                    MakeNullable(propertySchema);
            }
            schema["required"] = new JsonArray([.. properties.Select(p => (JsonNode?)p.Key)]);
        }
        if (IsObject(schema))
            schema["additionalProperties"] ??= false;
        if (schema["items"] is JsonObject items)
            RewriteInPlace(items);
        foreach (JsonObject alternative in (schema["anyOf"] as JsonArray ?? []).OfType<JsonObject>())
            RewriteInPlace(alternative);
    }

    /// <summary>Lets the value be null, the strict way to say "optional". An enum must list null too: otherwise the
    /// type would allow null and the enum forbid it.</summary>
    static void MakeNullable(JsonObject schema)
    {
        if (schema["type"] is JsonArray types && !types.Any(IsNull))
            types.Add((JsonNode)"null");
        else if (Json.String(schema["type"]) is string type && type != "null")
            schema["type"] = new JsonArray(type, "null");
        else if (schema["type"] is null && schema["anyOf"] is JsonArray alternatives && !alternatives.Any(a => IsNull(Json.At(a, "type"))))
            alternatives.Add((JsonNode)new JsonObject { ["type"] = "null" });
        if (schema["enum"] is JsonArray values && !values.Contains(null))
            values.Add((JsonNode?)null);
    }

    /// <summary>The first way `schema` breaks the strict rules, as the API words it ("In context=(), ..."), or null.</summary>
    public static string? FirstViolation(JsonObject schema) => FirstViolation(schema, []);

    // `context` is the path from the root, printed as the API prints it: a Python tuple such as ('properties', 'days').
    static string? FirstViolation(JsonObject schema, string[] context)
    {
        string at = $"In context=({string.Join(", ", context)}{(context.Length == 1 ? "," : "")}), ";
        if (IsObject(schema))
        {
            if (schema["additionalProperties"]?.GetValueKind() != JsonValueKind.False)
                return at + "'additionalProperties' is required to be supplied and to be false.";
            JsonObject properties = schema["properties"] as JsonObject ?? [];
            string?[] required = schema["required"] is JsonArray list ? [.. list.Select(Json.String)] : [];
            const string RequiredRule = "'required' is required to be supplied and to be an array including every key in properties.";
            if (properties.Select(p => p.Key).FirstOrDefault(key => !required.Contains(key)) is string missing)
                return at + $"{RequiredRule} Missing '{missing}'.";
            if (required.FirstOrDefault(key => key is null || !properties.ContainsKey(key)) is string extra)
                return at + $"{RequiredRule} Extra required key '{extra}' supplied.";
        }
        foreach ((string name, JsonNode? property) in schema["properties"] as JsonObject ?? [])
        {
            if (property is JsonObject propertySchema && FirstViolation(propertySchema, [.. context, "'properties'", $"'{name}'"]) is string problem)
                return problem;
        }
        if (schema["items"] is JsonObject items && FirstViolation(items, [.. context, "'items'"]) is string itemProblem)
            return itemProblem;
        JsonArray alternatives = schema["anyOf"] as JsonArray ?? [];
        for (int i = 0; i < alternatives.Count; i++)
        {
            if (alternatives[i] is JsonObject alternative && FirstViolation(alternative, [.. context, "'anyOf'", $"{i}"]) is string problem)
                return problem;
        }
        return null;
    }

    static bool IsObject(JsonObject schema) =>
        schema.ContainsKey("properties") || Json.String(schema["type"]) == "object" ||
        schema["type"] is JsonArray types && types.Any(t => Json.String(t) == "object");

    static bool IsNull(JsonNode? type) => Json.String(type) == "null";
}
