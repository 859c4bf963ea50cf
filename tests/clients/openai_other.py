#!/usr/bin/env python3
"""Other OpenAI endpoints via the official `openai` Python SDK.

usage: openai_other.py {embeddings,completions,completions-stream,responses,responses-stream}
                       [common options]

  embeddings          embeddings.create(input=["hello", "world"])  (SDK default encoding:
                      base64, decoded by the SDK)
  completions         completions.create(prompt=...)
  completions-stream  completions.create(prompt=..., stream=True), fully consumed
  responses           responses.create(input=...)
  responses-stream    responses.create(input=..., stream=True), fully consumed
Common options / env (see _common.py): --base-url|SENSOR_TEST_BASE_URL (e.g.
https://127.0.0.1:PORT/v1), --api-key|SENSOR_TEST_API_KEY, --model|SENSOR_TEST_MODEL
(default per mode: text-embedding-3-small, gpt-3.5-turbo-instruct, gpt-4o-mini),
--header K:V, --ca|SENSOR_TEST_CA, SSL_CERT_FILE, --max-retries (0).
Output:
  {"pid": PID, "ok": true, "mode": ..., "id": ... | null (embeddings), "model": ...,
   "stream": bool, "usage": {"input": N, "output": M} | null, ...mode extras}
  embeddings extra: "count" (number of vectors), "dims"; others: "text".
"""
import sys

import _common as c

MODES = ["embeddings", "completions", "completions-stream", "responses", "responses-stream"]
DEFAULT_MODEL = {"embeddings": "text-embedding-3-small", "completions": "gpt-3.5-turbo-instruct",
                 "completions-stream": "gpt-3.5-turbo-instruct"}

mode = next((a for a in sys.argv[1:] if a in MODES), None)
ap = c.parser("openai embeddings/completions/responses client",
              DEFAULT_MODEL.get(mode, "gpt-4o-mini"))
ap.add_argument("mode", choices=MODES)
args = ap.parse_args()
c.check(args)

try:
    import openai

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key,
                           max_retries=args.max_retries, timeout=args.timeout,
                           default_headers=c.headers(args), http_client=c.http_client(openai, args))
    m = args.mode
    if m == "embeddings":
        r = client.embeddings.create(model=args.model, input=["hello", "world"])
        c.emit(mode=m, id=None, model=r.model, stream=False,
               usage={"input": r.usage.prompt_tokens, "output": 0},
               count=len(r.data), dims=len(r.data[0].embedding) if r.data else 0)
    elif m == "completions":
        r = client.completions.create(model=args.model, prompt="Once", max_tokens=16)
        c.emit(mode=m, id=r.id, model=r.model, stream=False,
               usage={"input": r.usage.prompt_tokens, "output": r.usage.completion_tokens},
               text=r.choices[0].text)
    elif m == "completions-stream":
        rid = model = usage = None
        text = []
        for ch in client.completions.create(model=args.model, prompt="Once", max_tokens=16,
                                            stream=True):
            rid, model = ch.id or rid, ch.model or model
            if ch.usage is not None:
                usage = {"input": ch.usage.prompt_tokens, "output": ch.usage.completion_tokens}
            text += [x.text for x in ch.choices if x.text]
        c.emit(mode=m, id=rid, model=model, stream=True, usage=usage, text="".join(text))
    elif m == "responses":
        r = client.responses.create(model=args.model, input="Say hello (sensor test).")
        c.emit(mode=m, id=r.id, model=r.model, stream=False,
               usage={"input": r.usage.input_tokens, "output": r.usage.output_tokens},
               text=r.output_text)
    else:
        rid = model = usage = None
        text = []
        for ev in client.responses.create(model=args.model, input="Say hello (sensor test).",
                                          stream=True):
            if ev.type == "response.output_text.delta":
                text.append(ev.delta)
            elif ev.type in ("response.created", "response.completed"):
                rid, model = ev.response.id, ev.response.model
                if ev.response.usage is not None:
                    usage = {"input": ev.response.usage.input_tokens,
                             "output": ev.response.usage.output_tokens}
        c.emit(mode=m, id=rid, model=model, stream=True, usage=usage, text="".join(text))
    client.close()
except SystemExit:
    raise
except Exception as e:  # noqa: BLE001
    c.fail(c.describe(e))
