// Every llamaserve feature through the official OpenAI JavaScript library, unchanged.
//
//   llamaserve run smollm2 &
//   (cd examples && npm ci && node node_openai.mjs)
//
// OPENAI_BASE_URL (default http://localhost:8000/v1) picks the server, LLAMASERVE_MODEL
// (default smollm2) the model, LLAMASERVE_IMAGE_MODEL (optional) the model for the image
// call. Exits non-zero when a call fails.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL ?? "http://localhost:8000/v1",
  apiKey: process.env.OPENAI_API_KEY ?? "IGNORED",
});
const model = process.env.LLAMASERVE_MODEL ?? "smollm2";

function check(condition, what) {
  if (!condition) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const models = await client.models.list();
check(models.data.some((m) => m.id === model), `models.list() lists ${model}`);

const chat = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Say this is a test" }],
  max_tokens: 32,
});
check(Boolean(chat.choices[0].message.content), `chat: ${chat.choices[0].message.content}`);

let streamed = "";
const stream = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Count to five." }],
  max_tokens: 32,
  stream: true,
});
for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
check(streamed.length > 0, `streamed chat: ${streamed.replace(/\n/g, " ")}`);

const completion = await client.completions.create({
  model,
  prompt: "Once upon a time",
  max_tokens: 16,
});
check(Boolean(completion.choices[0].text), `completion: ${completion.choices[0].text}`);

// The JavaScript library asks for base64 embeddings by default and decodes them itself.
const embedding = await client.embeddings.create({ model, input: ["Embedding text...", "Two"] });
const vector = embedding.data[0].embedding;
const norm = Math.sqrt(vector.reduce((sum, x) => sum + x * x, 0));
check(embedding.data.length === 2 && Math.abs(norm - 1) < 1e-3,
  `embeddings: 2 vectors of ${vector.length} dimensions, unit norm`);

const toolReply = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "What's the weather in Paris?" }],
  tools: [{
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  }],
  tool_choice: "required",
  max_tokens: 64,
});
const call = toolReply.choices[0].message.tool_calls[0];
check(call.function.name === "get_weather" && "city" in JSON.parse(call.function.arguments),
  `tool call: ${call.function.name}(${call.function.arguments})`);

const structured = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Describe a person." }],
  max_tokens: 200,
  temperature: 0,
  response_format: {
    type: "json_schema",
    json_schema: {
      name: "person",
      schema: {
        type: "object",
        properties: { name: { type: "string" }, age: { type: "integer" } },
        required: ["name", "age"],
      },
    },
  },
});
const person = JSON.parse(structured.choices[0].message.content);
check(typeof person.name === "string" && Number.isInteger(person.age),
  `JSON schema: ${JSON.stringify(person)}`);

const imageModel = process.env.LLAMASERVE_IMAGE_MODEL;
if (imageModel) {
  // an 8x8 red PNG
  const png = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8ISfHgA0wYRUdtBIA0MoBFD5jqJkAAAAASUVORK5CYII=";
  const seen = await client.chat.completions.create({
    model: imageModel,
    max_tokens: 16,
    messages: [{
      role: "user",
      content: [
        { type: "text", text: "What is in this image?" },
        { type: "image_url", image_url: { url: `data:image/png;base64,${png}` } },
      ],
    }],
  });
  check(seen.choices[0].message.content !== null, "image message answered");
} else {
  console.log("skipped: image message (set LLAMASERVE_IMAGE_MODEL)");
}
