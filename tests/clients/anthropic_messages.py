#!/usr/bin/env python3
"""Anthropic messages via the official `anthropic` Python SDK.

usage: anthropic_messages.py [--stream] [--n N] [common options]

  --stream   messages.create(..., stream=True), every event consumed
  --n N      N sequential calls on ONE client (keep-alive), one output line per call
Common options / env (see _common.py): --base-url|SENSOR_TEST_BASE_URL (WITHOUT /v1, e.g.
https://127.0.0.1:PORT; the SDK appends /v1/messages), --api-key|SENSOR_TEST_API_KEY (sent
as x-api-key), --model|SENSOR_TEST_MODEL (default claude-haiku-4-5), --header K:V,
--ca|SENSOR_TEST_CA, SSL_CERT_FILE, --max-retries (0).
Output per call:
  {"pid": PID, "ok": true, "call": i, "id": ..., "model": ..., "stream": bool,
   "usage": {"input": N, "output": M}, "stop_reason": ..., "text": "..."}
"""
import _common as c

ap = c.parser("anthropic messages client", "claude-haiku-4-5")
ap.add_argument("--stream", action="store_true")
ap.add_argument("--n", type=int, default=1)
args = ap.parse_args()
c.check(args)

try:
    import anthropic

    client = anthropic.Anthropic(base_url=args.base_url, api_key=args.api_key,
                                 max_retries=args.max_retries, timeout=args.timeout,
                                 default_headers=c.headers(args),
                                 http_client=c.http_client(anthropic, args))
    messages = [{"role": "user", "content": "Say hello (sensor test)."}]
    for i in range(args.n):
        if not args.stream:
            r = client.messages.create(model=args.model, max_tokens=64, messages=messages)
            c.emit(call=i, id=r.id, model=r.model, stream=False,
                   usage={"input": r.usage.input_tokens, "output": r.usage.output_tokens},
                   stop_reason=r.stop_reason,
                   text="".join(b.text for b in r.content if b.type == "text"))
            continue
        rid = model = stop = None
        usage = {"input": None, "output": None}
        text = []
        for ev in client.messages.create(model=args.model, max_tokens=64, messages=messages,
                                         stream=True):
            if ev.type == "message_start":
                rid, model = ev.message.id, ev.message.model
                usage = {"input": ev.message.usage.input_tokens,
                         "output": ev.message.usage.output_tokens}
            elif ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                text.append(ev.delta.text)
            elif ev.type == "message_delta":
                stop = ev.delta.stop_reason
                usage["output"] = ev.usage.output_tokens
        c.emit(call=i, id=rid, model=model, stream=True, usage=usage, stop_reason=stop,
               text="".join(text))
    client.close()
except SystemExit:
    raise
except Exception as e:  # noqa: BLE001
    c.fail(c.describe(e))
