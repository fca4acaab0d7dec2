// ArgumentChecks.cs: the model's arguments checked against the tool's JSON schema before the tool runs, and a tool
// put in strict form (--strict).

using System.Collections.Generic;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>What the program does to a tool before the model sees it: Tool.CheckArguments, and --strict.</summary>
static class ArgumentChecks
{
    /// <summary>
    /// The tool, with a CheckArguments that holds the model's arguments to its schema (see Schema), so that a call
    /// with a missing or wrongly typed argument is answered with what is wrong instead of reaching the code.
    /// </summary>
    public static Tool Checked(Tool tool)
    {
        JsonObject schema = (JsonObject)tool.Parameters.DeepClone(); // its own copy: reading a node changes how it is held
        return tool with
        {
            CheckArguments = arguments =>
            {
                // In strict mode every argument is required, so the model sends null for an optional one it leaves out:
                // read that null as "left out", and the function sees the same arguments with or without strict mode.
                Schema.RemoveNullOptionals(arguments, schema);
                return Schema.FirstProblem(arguments, schema, "");
            },
        };
    }

    /// <summary>
    /// The tool in strict form (--strict): "strict": true, and its schema rewritten to the strict form. Its check
    /// stays the one of the schema as written. A schema that still breaks the strict rules stops here, before anything
    /// is sent, since the API would only answer it with a 400.
    /// </summary>
    public static Tool Strict(Tool tool)
    {
        JsonObject parameters = StrictSchema.Rewrite(tool.Parameters);
        if (StrictSchema.FirstViolation(parameters) is string violation)
            throw new UsageException(
                $"the schema of tool '{tool.Name}' breaks the strict-mode rules, so the API would reject it: {violation} " +
                "Fix the schema, or run without --strict.");
        return tool with { Parameters = parameters, Strict = true };
    }
}

/// <summary>
/// The part of JSON Schema that function parameters use in practice: type, enum, required, properties, items.
/// The model may leave out a required argument or send the wrong type, so check before your code runs.
/// </summary>
static class Schema
{
    // Both walks below index into objects and arrays (GetAt, [i]) rather than foreach over them: they run on every
    // call, and a JsonObject's or JsonArray's enumerator is a boxed interface, an allocation each time.

    /// <summary>The first way `value` breaks `schema`, as a sentence for the model, or null when it fits.</summary>
    public static string? FirstProblem(JsonNode? value, JsonObject schema, string path)
    {
        if (schema["type"] is JsonNode type && !TypeMatches(value, type))
            return $"{Where(path)} must be {Describe(type)}, not {Json.KindName(value)}";
        if (schema["enum"] is JsonArray allowed && !Contains(allowed, value))
            return $"{Where(path)} must be one of {Json.Compact(allowed)}, not {Json.Compact(value)}";
        if (value is JsonObject obj)
        {
            JsonObject? properties = schema["properties"] as JsonObject;
            if (schema["required"] is JsonArray required)
            {
                for (int i = 0; i < required.Count; i++)
                {
                    string name = Json.String(required[i]) ?? "";
                    if (!obj.ContainsKey(name))
                    {
                        string hint = Json.At(properties, name, "type") is JsonNode t ? $" ({Describe(t)})" : "";
                        return $"missing required argument '{Join(path, name)}'{hint}";
                    }
                }
            }
            for (int i = 0; i < obj.Count; i++)
            {
                (string name, JsonNode? propertyValue) = obj.GetAt(i);
                if (properties?[name] is JsonObject propertySchema &&
                    FirstProblem(propertyValue, propertySchema, Join(path, name)) is string problem)
                    return problem;
            }
        }
        if (value is JsonArray array && schema["items"] is JsonObject itemSchema)
        {
            for (int i = 0; i < array.Count; i++)
            {
                if (FirstProblem(array[i], itemSchema, $"{path}[{i}]") is string problem)
                    return problem;
            }
        }
        return null;
    }

    /// <summary>Removes, in `value` and the objects within it, each argument that is null and not required.</summary>
    public static void RemoveNullOptionals(JsonNode? value, JsonObject schema)
    {
        if (value is JsonObject obj)
        {
            for (int i = obj.Count - 1; i >= 0; i--) // backwards, so that a removal moves nothing still to be read
            {
                (string name, JsonNode? property) = obj.GetAt(i);
                if (property is null && !IsRequired(schema, name))
                    obj.RemoveAt(i);
                else if (property is JsonObject or JsonArray && Json.At(schema, "properties", name) is JsonObject propertySchema)
                    RemoveNullOptionals(property, propertySchema);
            }
        }
        if (value is JsonArray array && schema["items"] is JsonObject itemSchema)
        {
            for (int i = 0; i < array.Count; i++)
                RemoveNullOptionals(array[i], itemSchema);
        }
    }

    static bool IsRequired(JsonObject schema, string name)
    {
        JsonArray? required = schema["required"] as JsonArray;
        for (int i = 0; i < required?.Count; i++)
        {
            if (Json.String(required[i]) == name)
                return true;
        }
        return false;
    }

    static string Where(string path) => path.Length == 0 ? "the arguments" : $"argument '{path}'";

    /// <summary>Whether `values` holds a value equal to `value`, as JSON (1 equals 1.0, key order does not count).</summary>
    static bool Contains(JsonArray values, JsonNode? value)
    {
        for (int i = 0; i < values.Count; i++)
        {
            if (JsonNode.DeepEquals(values[i], value))
                return true;
        }
        return false;
    }

    static bool TypeMatches(JsonNode? value, JsonNode type)
    {
        if (type is JsonArray anyOf) // ["string", "null"]: any one of them
        {
            for (int i = 0; i < anyOf.Count; i++)
            {
                if (anyOf[i] is JsonNode one && TypeMatches(value, one))
                    return true;
            }
            return false;
        }
        return Json.String(type) switch
        {
            "object" => value is JsonObject,
            "array" => value is JsonArray,
            "string" => value?.GetValueKind() == JsonValueKind.String,
            "boolean" => value?.GetValueKind() is JsonValueKind.True or JsonValueKind.False,
            "number" => value?.GetValueKind() == JsonValueKind.Number,
            "integer" => value?.GetValueKind() == JsonValueKind.Number && value.GetValue<double>() % 1 == 0,
            "null" => value is null,
            _ => true, // a type this check does not know: let the function decide
        };
    }

    static string Describe(JsonNode type) => type is JsonArray anyOf
        ? string.Join(" or ", anyOf.Select(t => Describe(t!)))
        : Json.String(type) switch { "object" => "an object", "array" => "an array", "integer" => "an integer", "null" => "null", string t => $"a {t}", null => "?" };

    static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";
}
