// A conformance client: the official `openai` npm package runs the tool-calling flow against the replay server, on
// Chat Completions or (with --api responses) on the Responses API.
// The contract (conformance/README.md): OPENAI_BASE_URL and OPENAI_API_KEY from the environment, the question as the
// last argument, options before it; the final answer alone on stdout (streamed, each reply's text as it arrives),
// exit 0.
import OpenAI from "openai";

const args = process.argv.slice(2);
const question = args.at(-1);
const noParallel = args.includes("--no-parallel");
const stream = args.includes("--stream");
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const api = option("--api", "chat");
const toolChoice = option("--tool-choice", null);
const maxRounds = Number(option("--max-rounds", 8));
const timeoutSeconds = Number(option("--timeout", 60));
if (!["chat", "responses"].includes(api)) {
  console.error(`error: --api ${api}: this client speaks chat and responses (the openai package has no Messages API).`);
  process.exit(2);
}
if (toolChoice !== null && toolChoice !== "required") {
  console.error(`error: --tool-choice ${toolChoice}: this client takes --tool-choice required.`);
  process.exit(2);
}

// tool_choice for request number `request`: "required" on the first only ("required" forces a call on every request
// that carries it; once made, the model chooses), and "none" on the request after the last round allowed, which asks
// for an answer (PROTOCOL.md).
function toolChoiceFor(request) {
  if (request > maxRounds) return "none";
  if (toolChoice) return request === 1 ? toolChoice : "auto";
  return undefined;
}

// Streamed, the text is shown as it arrives, and each reply that showed some ends its line.
let shown = false;
function show(text) {
  process.stdout.write(text);
  shown = true;
}
function endLine() {
  if (shown) process.stdout.write("\n");
  shown = false;
}

// The two demo functions, declared exactly as PROTOCOL.md's step 1 shows them.
const city = { type: "string", description: 'City name, e.g. "London"' };
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Returns the current weather in the given city",
      parameters: { type: "object", properties: { city }, required: ["city"] },
    },
  },
  {
    type: "function",
    function: {
      name: "get_forecast",
      description: "Returns the daily weather forecast for the given city for the next days",
      parameters: {
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
  },
];

// The Responses API's tools are flat, and `strict` is sent (false): left out, the API would make the schemas strict.
const responseTools = tools.map(({ function: f }) => ({ type: "function", ...f, strict: false }));

function run(name, argumentsJson) {
  const parsed = JSON.parse(argumentsJson);
  if (name === "get_weather") return `It's currently +18°C and partly cloudy in ${parsed.city}`;
  return `Error: unknown function '${name}'.`;
}

// The SDK reads OPENAI_BASE_URL and OPENAI_API_KEY itself. Its own retry policy stays on: it retries a 429 or a 5xx,
// waiting as Retry-After says, and never a 400 such as the replay server's mismatch; --timeout is its timeout.
const client = new OpenAI({ timeout: timeoutSeconds * 1000 });

// Chat Completions: the answer, or null when the model still asks for tools after the last round.
async function chatFlow() {
  const messages = [{ role: "user", content: question }];
  for (let round = 1; round <= maxRounds + 1; round++) {
    const request = { model: "gpt-4o-mini", messages, tools };
    if (noParallel) request.parallel_tool_calls = false;
    if (toolChoiceFor(round)) request.tool_choice = toolChoiceFor(round);
    // Streamed, the SDK's own helper reads the events and assembles the fragments into one completion.
    const completion = stream
      ? await client.chat.completions
          .stream({ ...request, stream_options: { include_usage: true } })
          .on("content", show)
          .on("refusal.delta", ({ delta }) => show(delta))
          .finalChatCompletion()
          .finally(endLine)
      : await client.chat.completions.create(request);
    const message = completion.choices[0].message;
    if (!message.tool_calls?.length) return message.content || message.refusal || ""; // a refusal is the answer
    messages.push(message); // the assistant message as received, then one tool message per call
    for (const call of message.tool_calls)
      messages.push({ role: "tool", tool_call_id: call.id, content: run(call.function.name, call.function.arguments) });
  }
  return null;
}

// The Responses API: the answer, or null when the model still asks for tools after the last round.
async function responsesFlow() {
  const input = [{ role: "user", content: question }];
  for (let round = 1; round <= maxRounds + 1; round++) {
    const request = { model: "gpt-4o-mini", input, tools: responseTools };
    if (noParallel) request.parallel_tool_calls = false;
    if (toolChoiceFor(round)) request.tool_choice = toolChoiceFor(round);
    // Streamed, the SDK's own helper reads the typed events into the response that response.completed ends with.
    const response = stream
      ? await client.responses
          .stream(request)
          .on("response.output_text.delta", ({ delta }) => show(delta))
          .on("response.refusal.delta", ({ delta }) => show(delta))
          .finalResponse()
          .finally(endLine)
      : await client.responses.create(request);
    const calls = response.output.filter((item) => item.type === "function_call");
    if (calls.length === 0) {
      // The SDK joins the message's output_text parts; a refusal part instead is the answer.
      const refusal = response.output.flatMap((item) => (item.type === "message" ? item.content : []))
        .filter((part) => part.type === "refusal").map((part) => part.refusal).join("");
      return response.output_text || refusal;
    }
    input.push(...response.output); // the output items as received, then one function_call_output per call
    for (const call of calls)
      input.push({ type: "function_call_output", call_id: call.call_id, output: run(call.name, call.arguments) });
  }
  return null;
}

// Exit 0 with the answer on stdout, else 1 with one error line on stderr.
process.exitCode = 1;
try {
  const answer = api === "responses" ? await responsesFlow() : await chatFlow();
  if (answer === null) {
    console.error(`error: the model still asks for tools after ${maxRounds} rounds, even when asked to answer`);
  } else {
    if (!stream) console.log(answer); // streamed, it has been shown as it arrived
    process.exitCode = 0;
  }
} catch (error) {
  console.error(`error: ${error.message}`); // one line: an API error, or a response the SDK could not parse
}
