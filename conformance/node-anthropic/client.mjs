// A conformance client: the official `@anthropic-ai/sdk` npm package runs the tool-calling flow on the Messages API
// against the replay server, with its own request writing, response parsing and stream assembly.
// The contract (conformance/README.md): ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY from the environment, the question as
// the last argument, options before it (--api anthropic, --stream); the final answer alone on stdout, exit 0.
import Anthropic from "@anthropic-ai/sdk";

const args = process.argv.slice(2);
const question = args.at(-1);
const stream = args.includes("--stream");
const api = args.includes("--api") ? args[args.indexOf("--api") + 1] : "chat";
if (api !== "anthropic") {
  console.error(`error: --api ${api}: this client speaks only the Messages API (--api anthropic).`);
  process.exit(2);
}

// The two demo functions, declared exactly as PROTOCOL.md's step 1 shows them, in the Messages API's form.
const city = { type: "string", description: 'City name, e.g. "London"' };
const tools = [
  {
    name: "get_weather",
    description: "Returns the current weather in the given city",
    input_schema: { type: "object", properties: { city }, required: ["city"] },
  },
  {
    name: "get_forecast",
    description: "Returns the daily weather forecast for the given city for the next days",
    input_schema: {
      type: "object",
      properties: {
        city,
        days: { type: "integer", description: "How many days, from 1 to 7" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"], description: "Temperature unit; celsius when left out" },
        include: {
          type: "array",
          items: { type: "string", enum: ["wind", "humidity", "precipitation"] },
          description: "Extra details for each day",
        },
      },
      required: ["city", "days"],
    },
  },
];

function run(name, input) {
  if (name === "get_weather") return `It's currently +18°C and partly cloudy in ${input.city}`;
  return `Error: unknown function '${name}'.`;
}

// ToolCall's ANTHROPIC_BASE_URL ends in /v1 (PROTOCOL.md); the Anthropic SDKs add /v1 themselves, so it comes off here.
// The SDK's own retry policy stays on: it retries a 429, a 529 or a 5xx, and never a 400 such as a replay mismatch.
const client = new Anthropic({ baseURL: process.env.ANTHROPIC_BASE_URL?.replace(/\/v1\/?$/, "") });
const messages = [{ role: "user", content: question }];
// Exit 0 with the answer on stdout, else 1 with one error line on stderr.
process.exitCode = 1;
try {
  let answered = false;
  for (let round = 1; round <= 8; round++) {
    const request = { model: "claude-haiku-4-5", max_tokens: 1024, messages, tools };
    // Streamed, the SDK's own helper reads the events and joins the input_json_delta pieces into each input.
    const message = stream ? await client.messages.stream(request).finalMessage() : await client.messages.create(request);
    const calls = message.content.filter((block) => block.type === "tool_use");
    if (calls.length === 0) {
      console.log(message.content.filter((block) => block.type === "text").map((block) => block.text).join(""));
      answered = true;
      process.exitCode = 0;
      break;
    }
    // The assistant's content as received, then ONE user message with a tool_result block per call.
    messages.push({ role: "assistant", content: message.content });
    messages.push({
      role: "user",
      content: calls.map((call) => ({ type: "tool_result", tool_use_id: call.id, content: run(call.name, call.input) })),
    });
  }
  if (!answered) console.error("error: the model still asks for tools after 8 rounds");
} catch (error) {
  console.error(`error: ${error.message}`); // one line: an API error, or a response the SDK could not parse
}
