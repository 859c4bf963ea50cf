#!/usr/bin/env node
// OpenAI chat completions via the official `openai` npm SDK (ESM, Node's built-in fetch).
//
// usage: node openai_chat.mjs [--stream] [--n N] [--include-usage] [--header K:V]...
//                             [--base-url URL] [--api-key KEY] [--model NAME]
//   --stream         stream: true, the whole stream is consumed
//   --n N            N sequential calls on ONE client (keep-alive), one output line per call
//   --include-usage  also send stream_options: {include_usage: true} (server sends usage anyway)
//   --header K:V     extra request header, repeatable (x-fake-status:429, x-fake-chunked:1)
// env: SENSOR_TEST_BASE_URL (e.g. https://127.0.0.1:PORT/v1; required unless --base-url),
//      SENSOR_TEST_API_KEY (default sk-test-fake-0000000000), SENSOR_TEST_MODEL (default
//      gpt-4o-mini), SENSOR_TEST_MAX_RETRIES (default 0), NODE_EXTRA_CA_CERTS=DIR/ca.pem
//      (read by Node at startup; trusted by fetch/undici).
// Needs `npm ci` in this directory (or NODE_PATH pointing at a node_modules with openai).
// Output per call (stdout, one line):
//   {"pid": PID, "ok": true, "call": i, "id": ..., "model": ..., "stream": bool,
//    "usage": {"input": N, "output": M} | null, "text": "..."}
// Failure: message on stderr, exit 1.
import OpenAI from "openai";

function fail(msg) {
  process.stderr.write(`openai_chat.mjs: ${msg}\n`);
  process.exit(1);
}

const opts = {
  baseURL: process.env.SENSOR_TEST_BASE_URL,
  apiKey: process.env.SENSOR_TEST_API_KEY || "sk-test-fake-0000000000",
  model: process.env.SENSOR_TEST_MODEL || "gpt-4o-mini",
  maxRetries: Number(process.env.SENSOR_TEST_MAX_RETRIES || 0),
  stream: false, n: 1, includeUsage: false, headers: {},
};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => { if (i + 1 >= argv.length) fail(`${a} needs a value`); return argv[++i]; };
  if (a === "--stream") opts.stream = true;
  else if (a === "--include-usage") opts.includeUsage = true;
  else if (a === "--n") opts.n = parseInt(val(), 10);
  else if (a === "--base-url") opts.baseURL = val();
  else if (a === "--api-key") opts.apiKey = val();
  else if (a === "--model") opts.model = val();
  else if (a === "--header") {
    const h = val(); const k = h.indexOf(":");
    if (k < 0) fail(`bad --header ${h} (want K:V)`);
    opts.headers[h.slice(0, k).trim()] = h.slice(k + 1).trim();
  } else fail(`unknown argument ${a}`);
}
if (!opts.baseURL) fail("no base URL: pass --base-url or set SENSOR_TEST_BASE_URL");

function describe(e) {
  let s = e && e.status ? `HTTP ${e.status} ` : "";
  s += `${e && e.name}: ${e && e.message}`;
  for (let c = e && e.cause; c; c = c.cause) s += ` <- ${c.name || "cause"}: ${c.message || c.code || c}`;
  return s;
}

const emit = (fields) =>
  process.stdout.write(JSON.stringify({ pid: process.pid, ok: true, ...fields }) + "\n");

try {
  const client = new OpenAI({
    baseURL: opts.baseURL, apiKey: opts.apiKey, maxRetries: opts.maxRetries,
    timeout: 30000, defaultHeaders: opts.headers,
  });
  const messages = [{ role: "user", content: "Say hello (sensor test)." }];
  for (let call = 0; call < opts.n; call++) {
    // undici returns a socket to its pool one tick after the body ends; without this yield
    // back-to-back calls alternate between two connections instead of reusing one.
    if (call > 0) await new Promise((r) => setImmediate(r));
    if (!opts.stream) {
      const r = await client.chat.completions.create({ model: opts.model, messages });
      emit({
        call, id: r.id, model: r.model, stream: false,
        usage: r.usage ? { input: r.usage.prompt_tokens, output: r.usage.completion_tokens } : null,
        text: r.choices[0].message.content,
      });
      continue;
    }
    const extra = opts.includeUsage ? { stream_options: { include_usage: true } } : {};
    const stream = await client.chat.completions.create({ model: opts.model, messages, stream: true, ...extra });
    let id = null, model = null, usage = null, text = "";
    for await (const chunk of stream) {
      id = chunk.id || id; model = chunk.model || model;
      if (chunk.usage) usage = { input: chunk.usage.prompt_tokens, output: chunk.usage.completion_tokens };
      for (const ch of chunk.choices || []) if (ch.delta && ch.delta.content) text += ch.delta.content;
    }
    emit({ call, id, model, stream: true, usage, text });
  }
} catch (e) {
  fail(describe(e));
}
