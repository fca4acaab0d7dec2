// ProgramTools.cs: the tools the program offers the model: the demo's, checked, in strict form with --strict.

using System.Linq;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace ToolCall;

/// <summary>The demo's tools as the program (./run.sh, and the bench, which measures the program's path) offers them.</summary>
static class ProgramTools
{
    /// <summary>DemoTools, each with its arguments checked against its schema (ArgumentChecks), in strict form with
    /// `strict`, and with its schema written once.</summary>
    public static Tool[] Create(bool strict = false) =>
        [.. DemoTools.Create().Select(ArgumentChecks.Checked).Select(tool => strict ? ArgumentChecks.Strict(tool) : tool).Select(WrittenOnce)];

    /// <summary>
    /// The tool with its schema held as the JSON it was written to, read-only: a JsonObject over a JsonElement. Every
    /// request carries its own copy of each schema (a JSON node has one parent), and copying such an object copies no
    /// node (64 bytes here, against 1.5 KB for the demo's forecast schema as built). Nothing changes on the wire; the
    /// check keeps a copy of its own, since reading an object turns it into nodes.
    /// </summary>
    static Tool WrittenOnce(Tool tool) =>
        tool with { Parameters = JsonObject.Create(JsonElement.Parse(Json.Utf8(tool.Parameters).Span))! };
}
