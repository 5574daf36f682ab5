// Structured outputs through the Vercel AI SDK: generateObject and streamObject with zod
// schemas, and a forced tool call, via @ai-sdk/openai-compatible.
//
//   llamaserve run smollm2 &
//   (cd examples && npm ci && node node_ai_sdk.mjs)
//
// OPENAI_BASE_URL (default http://localhost:8000/v1) picks the server, LLAMASERVE_MODEL
// (default smollm2) the model. Exits non-zero when a call fails.
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateObject, generateText, streamObject, tool } from "ai";
import { z } from "zod";

const llamaserve = createOpenAICompatible({
  name: "llamaserve",
  baseURL: process.env.OPENAI_BASE_URL ?? "http://localhost:8000/v1",
  apiKey: process.env.OPENAI_API_KEY ?? "IGNORED",
  // llamaserve enforces response_format json_schema: the SDK sends the zod schema as one
  supportsStructuredOutputs: true,
});
const model = llamaserve.chatModel(process.env.LLAMASERVE_MODEL ?? "smollm2");

function check(condition, what) {
  if (!condition) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const Person = z.object({
  name: z.string().max(30),
  age: z.number().int().min(0).max(150),
  email: z.email().max(40),
  born: z.iso.date(),
  hobbies: z.array(z.string().max(20)).max(3),
  nickname: z.string().max(12).nullable(),
});

// A high temperature on purpose: the schema, not luck, keeps the JSON valid.
for (const seed of [1, 2, 3]) {
  const { object } = await generateObject({
    model,
    schema: Person,
    prompt: "Invent a person.",
    temperature: 1.2,
    seed,
    maxOutputTokens: 200,
  });
  check(Person.safeParse(object).success, `generateObject: ${JSON.stringify(object)}`);
}

const Recipe = z.object({
  title: z.string().max(40),
  ingredients: z.array(z.object({ name: z.string().max(20), grams: z.number().int().min(1).max(1000) })).min(1).max(4),
  vegetarian: z.boolean(),
});
const stream = streamObject({
  model,
  schema: Recipe,
  prompt: "A simple pancake recipe.",
  temperature: 0,
  maxOutputTokens: 200,
});
let partials = 0;
for await (const _ of stream.partialObjectStream) partials++;
const recipe = await stream.object;
check(Recipe.safeParse(recipe).success && partials > 1,
  `streamObject (${partials} partial objects): ${JSON.stringify(recipe)}`);

const answer = await generateText({
  model,
  prompt: "What's the weather in Paris?",
  tools: {
    getWeather: tool({
      description: "Current weather in a city",
      inputSchema: z.object({ city: z.string().max(30), unit: z.enum(["celsius", "fahrenheit"]) }),
    }),
  },
  toolChoice: "required",
  maxOutputTokens: 100,
});
const [call] = answer.toolCalls;
check(call?.toolName === "getWeather" && typeof call.input.city === "string",
  `forced tool call: ${call?.toolName}(${JSON.stringify(call?.input)})`);
