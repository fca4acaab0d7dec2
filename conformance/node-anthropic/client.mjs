// A conformance client: the official `@anthropic-ai/sdk` npm package runs the tool-calling flow on the Messages API
// against the replay server, with its own request writing, response parsing and stream assembly.
// The contract (conformance/README.md): ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY from the environment, the question as
// the last argument, options before it (--api anthropic and the case's); the final answer alone on stdout (streamed,
// each reply's text as it arrives), exit 0.
import Anthropic from "@anthropic-ai/sdk";

const args = process.argv.slice(2);
const question = args.at(-1);
const stream = args.includes("--stream");
const noParallel = args.includes("--no-parallel");
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const api = option("--api", "chat");
const toolChoice = option("--tool-choice", null);
const maxRounds = Number(option("--max-rounds", 8));
const timeoutSeconds = Number(option("--timeout", 60));
if (api !== "anthropic") {
  console.error(`error: --api ${api}: this client speaks only the Messages API (--api anthropic).`);
  process.exit(2);
}
if (toolChoice !== null && toolChoice !== "required") {
  console.error(`error: --tool-choice ${toolChoice}: this client takes --tool-choice required.`);
  process.exit(2);
}

// tool_choice for request number `request` (PROTOCOL.md): --tool-choice required is {"type": "any"} on the first only,
// since it forces a call on every request that carries it; the request after the last round allowed asks for an answer
// with {"type": "none"}; --no-parallel is disable_parallel_tool_use in any other.
function toolChoiceFor(request) {
  if (request > maxRounds) return { type: "none" };
  const choice = { type: toolChoice && request === 1 ? "any" : "auto" };
  if (noParallel) choice.disable_parallel_tool_use = true;
  return toolChoice || noParallel ? choice : undefined;
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
// The SDK's own retry policy stays on: it retries a 429, a 529 or a 5xx, and never a 400 such as a replay mismatch;
// --timeout is its timeout.
const client = new Anthropic({
  baseURL: process.env.ANTHROPIC_BASE_URL?.replace(/\/v1\/?$/, ""),
  timeout: timeoutSeconds * 1000,
});
const messages = [{ role: "user", content: question }];

// Streamed, the text is shown as it arrives, and each reply that showed some ends its line.
async function streamed(request) {
  let shown = false;
  try {
    return await client.messages
      .stream(request)
      .on("text", (text) => {
        process.stdout.write(text);
        shown = true;
      })
      .finalMessage();
  } finally {
    if (shown) process.stdout.write("\n");
  }
}

// Exit 0 with the answer on stdout, else 1 with one error line on stderr.
process.exitCode = 1;
try {
  let answered = false;
  for (let round = 1; round <= maxRounds + 1; round++) {
    const request = { model: "claude-haiku-4-5", max_tokens: 1024, messages, tools };
    if (toolChoiceFor(round)) request.tool_choice = toolChoiceFor(round);
    // Streamed, the SDK's own helper reads the events and joins the input_json_delta pieces into each input.
    const message = stream ? await streamed(request) : await client.messages.create(request);
    const calls = message.content.filter((block) => block.type === "tool_use");
    if (calls.length === 0) {
      // Streamed, the answer has been shown as it arrived.
      if (!stream) console.log(message.content.filter((block) => block.type === "text").map((block) => block.text).join(""));
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
  if (!answered) console.error(`error: the model still asks for tools after ${maxRounds} rounds, even when asked to answer`);
} catch (error) {
  console.error(`error: ${error.message}`); // one line: an API error, or a response the SDK could not parse
}
