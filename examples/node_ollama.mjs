// Ollama's own JavaScript library against llamaserve, unchanged: llamaserve speaks Ollama's
// API (/api/*) beside OpenAI's.
//
//   llamaserve run smollm2 --port 11434 &
//   (cd examples && npm ci && node node_ollama.mjs)
//
// OLLAMA_HOST (default http://127.0.0.1:11434) picks the server, LLAMASERVE_MODEL (default
// smollm2) the model. Exits non-zero when a call fails.
import { Ollama } from "ollama";

const ollama = new Ollama({ host: process.env.OLLAMA_HOST ?? "http://127.0.0.1:11434" });
const model = process.env.LLAMASERVE_MODEL ?? "smollm2";

function check(condition, what) {
  if (!condition) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const { version } = await ollama.version();
check(Boolean(version), `version: ${version}`);

const { models } = await ollama.list();
check(models.some((m) => m.name === `${model}:latest`),
  `list: ${models.map((m) => `${m.name} (${m.details.parameter_size}, ` +
    `${m.details.quantization_level})`).join(", ")}`);

let streamed = "";
let last;
const stream = await ollama.chat({
  model,
  messages: [{ role: "user", content: "Count to five." }],
  options: { num_predict: 32, temperature: 0 },
  stream: true,
});
for await (const part of stream) {
  streamed += part.message.content;
  last = part;
}
check(streamed.length > 0 && last.done, `streamed chat: ${streamed.replace(/\n/g, " ")}`);
check(last.eval_count > 0 && last.eval_duration > 0,
  `${last.prompt_eval_count} prompt tokens, ${last.eval_count} generated in ` +
  `${(last.eval_duration / 1e6).toFixed(0)} ms (done_reason ${last.done_reason})`);

const reply = await ollama.chat({
  model,
  messages: [{ role: "user", content: "Say this is a test" }],
  options: { num_predict: 16 },
});
check(Boolean(reply.message.content), `chat: ${reply.message.content}`);

const { embeddings } = await ollama.embed({ model, input: ["Embedding text...", "Two"] });
check(embeddings.length === 2, `embed: 2 vectors of ${embeddings[0].length} dimensions`);
