// Drives an OpenAI-compatible server with the official openai SDK and prints one JSON object with
// what it saw; the Go test asserts on it. Usage: node check.mjs BASE_URL API_KEY
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const out = {};

const models = await client.models.list();
out.models = models.data.map((m) => m.id);

const cmpl = await client.completions.create({ model: "spa", prompt: "Turn 1:", max_tokens: 8, n: 2, seed: 3, logprobs: 2 });
out.completion = { choices: cmpl.choices.length, model: cmpl.model, finish: cmpl.choices[0].finish_reason,
  logprobs: cmpl.choices[0].logprobs.token_logprobs.length, usage: cmpl.usage.total_tokens };

// vLLM's extensions pass through the SDK as extra body fields.
const ids = await client.completions.create({ model: "spa", prompt: [5, 6, 7], max_tokens: 4, temperature: 0, return_token_ids: true });
out.tokenIds = { prompt: ids.choices[0].prompt_token_ids, generated: ids.choices[0].token_ids.length };

const chat = await client.chat.completions.create({ model: "spa", messages: [{ role: "user", content: "Turn 1:" }], max_tokens: 6, logprobs: true, top_logprobs: 1 });
out.chat = { role: chat.choices[0].message.role, logprobs: chat.choices[0].logprobs.content.length };

let streamed = "";
let chunks = 0;
const stream = await client.chat.completions.create({ model: "spa", messages: [{ role: "user", content: "hi" }], max_tokens: 6, seed: 1, stream: true });
for await (const chunk of stream) {
  chunks++;
  streamed += chunk.choices[0]?.delta?.content ?? "";
}
const same = await client.chat.completions.create({ model: "spa", messages: [{ role: "user", content: "hi" }], max_tokens: 6, seed: 1 });
out.stream = { chunks, equal: streamed === same.choices[0].message.content };

try {
  await client.completions.create({ model: "nope", prompt: "x" });
  out.unknownModel = "no error";
} catch (e) {
  out.unknownModel = { status: e.status, message: e.message };
}
try {
  await client.completions.create({ model: "spa", prompt: "x", temperature: -2 });
  out.badTemperature = "no error";
} catch (e) {
  out.badTemperature = { status: e.status, param: e.param };
}
console.log(JSON.stringify(out));
