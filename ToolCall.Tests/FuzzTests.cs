using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// Hostile responses: recorded answers, damaged at random (seeded, so every run is the same), fed to the real client
/// code. Each case ends in an answer or in one clear FlowException line, never in another exception or a hang.
/// </summary>
public class FuzzTests
{
    const int Cases = 1000;
    const int Seed = 20251125;

    [Fact]
    public async Task SeededFuzzOfRecordedResponses_EndsInAnAnswerOrOneClearError()
    {
        Cassette[] cassettes = [Cassette.Load(Repo.Cassette("weather.json")), Cassette.Load(Repo.Cassette("two-cities.json"))];
        var random = new Random(Seed);
        int answered = 0, refused = 0;

        for (int i = 0; i < Cases; i++)
        {
            Cassette cassette = cassettes[random.Next(cassettes.Length)];
            var server = new DamagedServer(cassette, damagedTurn: random.Next(2), random);
            using var http = new HttpClient(server);
            var chat = new ResilientChatClient(http, "http://fuzz.invalid/v1", Apis.Chat, null, StepLog.Silent)
            {
                Retries = new RetryPolicy { Delay = new NotedWaits().Delay, Random = random },
            };
            string question = cassette.FirstQuestion("messages")!;
            Task<string> run = ToolCalling.RunAsync(chat, Wire.Model, question, ProgramTools.Create(), new FlowOptions(), CancellationToken.None);
            if (await Fuzz.AnsweredAsync(run, i, () => server.Damage, () => server.Sent))
                answered++;
            else
                refused++;
        }

        // Both outcomes occur: the damage is neither always harmless nor always fatal.
        Assert.True(answered > Cases / 20 && refused > Cases / 20, $"{answered} answered, {refused} refused");
    }

    /// <summary>
    /// Stands in for the API without a socket: answers each request with the cassette's response for that turn
    /// (first request or later), damaging the first response of one turn. The client's own parsing reads it all.
    /// </summary>
    sealed class DamagedServer(Cassette cassette, int damagedTurn, Random random) : HttpMessageHandler
    {
        bool damaged;

        public string Damage { get; private set; } = "none yet";
        public string Sent { get; private set; } = "";

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            JsonNode sent = JsonNode.Parse(await request.Content!.ReadAsStringAsync(cancellationToken))!;
            int turn = sent["messages"]!.AsArray().Count == 1 ? 0 : 1;
            Interaction recorded = cassette.Interactions[Math.Min(turn, cassette.Interactions.Count - 1)];
            byte[] body = Json.Utf8(recorded.ResponseBody!).ToArray();
            var response = new HttpResponseMessage(HttpStatusCode.OK);
            string contentType = "application/json";
            if (turn == damagedTurn && !damaged)
            {
                damaged = true;
                (body, Damage) = random.Next(3) == 0 ? Mutations.OfBytesNamed(body, random) : Mutations.OfJsonNamed(recorded.ResponseBody!, random);
                if (random.Next(8) == 0)
                    response.StatusCode = (HttpStatusCode)new[] { 400, 404, 408, 429, 500, 503 }[random.Next(6)];
                if (random.Next(8) == 0)
                    response.Headers.TryAddWithoutValidation("Retry-After", new[] { "1", "0", "-3", "soon", "1e99", "Tue, 25 Nov 2025 12:00:07 GMT" }[random.Next(6)]);
                if (random.Next(8) == 0)
                    contentType = new[] { "text/html", "text/plain", "application/octet-stream" }[random.Next(3)];
                Sent = Encoding.UTF8.GetString(body);
            }
            response.Content = new ByteArrayContent(body);
            response.Content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
            return response;
        }
    }
}

/// <summary>Seeded random damage to bytes and to JSON, for the fuzz tests.</summary>
static class Mutations
{
    // Bytes that matter to a JSON or HTTP parser, and some that no parser expects.
    static readonly byte[] Interesting = "{}[]\",:\\0-.eE \r\n\t"u8.ToArray().Concat(new byte[] { 0, 0x7F, 0xC3, 0xFF }).ToArray();

    // Written into the text after serializing: a JSON writer refuses to write an unpaired surrogate itself.
    const string LoneSurrogate = "@lone-surrogate@";

    static readonly string[] Values =
    [
        "null", "true", "false", "0", "-1", "1.5", "1e400", "-1e400", "12345678901234567890", "\"\"", "\"x\"", $"\"{LoneSurrogate}\"",
        "[]", "[null]", "{}", "{\"a\":1}", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];

    // What a model may write in `arguments`: tricky but each is (or is nearly) JSON.
    static readonly string[] Arguments =
    [
        "", " ", "{", "null", "[]", "\"London\"", "{\"city\":null}", "{\"city\":1e400}", "{\"city\":\"a\",\"city\":\"b\"}",
        "{\"city\":\"London\",\"days\":1e400}", "{\"city\":\"London\",\"days\":99999999999}", "{\"city\":{\"city\":\"London\"}}",
        "{\"city\":\"\\u0000\"}", "{\"city\":\"London\"} trailing",
    ];

    public static byte[] OfBytes(byte[] bytes, Random random) => OfBytesNamed(bytes, random).Bytes;

    public static (byte[] Bytes, string Damage) OfBytesNamed(byte[] bytes, Random random)
    {
        int at = random.Next(bytes.Length + 1);
        switch (random.Next(5))
        {
            case 0:
                return (bytes[..at], $"cut after {at} bytes");
            case 1:
                byte[] flipped = [.. bytes];
                int flips = 1 + random.Next(4);
                for (int i = 0; i < flips && flipped.Length > 0; i++)
                    flipped[random.Next(flipped.Length)] = random.Next(2) == 0 ? Interesting[random.Next(Interesting.Length)] : (byte)random.Next(256);
                return (flipped, $"{flips} bytes changed");
            case 2:
                byte[] inserted = [.. Enumerable.Range(0, 1 + random.Next(8)).Select(_ => Interesting[random.Next(Interesting.Length)])];
                return ([.. bytes[..at], .. inserted, .. bytes[at..]], $"{inserted.Length} bytes inserted at {at}");
            case 3:
                int end = Math.Min(bytes.Length, at + random.Next(64));
                return ([.. bytes[..at], .. bytes[end..]], $"bytes {at} to {end} deleted");
            default:
                int length = Math.Min(bytes.Length - at, random.Next(64));
                return ([.. bytes[..(at + length)], .. bytes[at..]], $"bytes {at} to {at + length} repeated");
        }
    }

    /// <summary>The JSON with one node replaced, removed or doubled, or one key repeated, written out as bytes.</summary>
    public static (byte[] Bytes, string Damage) OfJsonNamed(JsonNode original, Random random)
    {
        JsonNode json = original.DeepClone();
        List<JsonNode> nodes = [.. Descendants(json)];
        JsonNode target = nodes[random.Next(nodes.Count)];
        string path = target.GetPath();
        string damage;
        switch (random.Next(5))
        {
            case 0 when target.Parent is not null:
                damage = $"{path} replaced";
                Replace(target, JsonNode.Parse(Values[random.Next(Values.Length)]));
                break;
            case 1 when target.Parent is not null:
                damage = $"{path} removed";
                if (target.Parent is JsonObject parentObject)
                    parentObject.Remove(target.GetPropertyName());
                else
                    target.Parent!.AsArray().Remove(target);
                break;
            case 2 when target.Parent is JsonArray array:
                damage = $"{path} doubled";
                array.Insert(target.GetElementIndex(), target.DeepClone());
                break;
            case 3:
                // A model's `arguments` are untrusted text: damage a tool call's, if there is one.
                JsonNode? arguments = nodes.FirstOrDefault(n => n.Parent is JsonObject && n.GetPropertyName() == "arguments");
                if (arguments is null)
                    goto default;
                damage = $"{arguments.GetPath()} rewritten";
                Replace(arguments, JsonValue.Create(Arguments[random.Next(Arguments.Length)]));
                break;
            default:
                // A key twice in one object: valid to a reader, trouble to a dictionary.
                string text = json.ToJsonString();
                int brace = text.IndexOf("{\"", random.Next(text.Length), StringComparison.Ordinal);
                if (brace < 0)
                    brace = 0;
                int keyEnd = text.IndexOf('"', brace + 2);
                string key = text[(brace + 1)..(keyEnd + 1)];
                return (Encoding.UTF8.GetBytes(text.Insert(brace + 1, $"{key}:null,")), $"key {key} repeated");
        }
        return (Encoding.UTF8.GetBytes(json.ToJsonString().Replace(LoneSurrogate, "\\ud800", StringComparison.Ordinal)), damage);
    }

    static void Replace(JsonNode target, JsonNode? value)
    {
        if (target.Parent is JsonObject parent)
            parent[target.GetPropertyName()] = value;
        else
            target.Parent!.AsArray()[target.GetElementIndex()] = value;
    }

    static IEnumerable<JsonNode> Descendants(JsonNode node)
    {
        yield return node;
        IEnumerable<JsonNode?> children = node switch
        {
            JsonObject obj => obj.Select(p => p.Value),
            JsonArray array => array,
            _ => [],
        };
        foreach (JsonNode? child in children.ToList())
        {
            if (child is not null)
            {
                foreach (JsonNode descendant in Descendants(child))
                    yield return descendant;
            }
        }
    }
}
