#!/usr/bin/env python3
"""OpenAI chat completions via the official `openai` Python SDK.

usage: openai_chat.py [--stream] [--n N] [--include-usage] [common options]

  --stream         stream=True, consume the whole stream
  --n N            N sequential calls on ONE client (keep-alive), one output line per call
  --include-usage  also send stream_options={"include_usage": true} (server sends usage anyway)
Common options / env (see _common.py): --base-url|SENSOR_TEST_BASE_URL (e.g.
https://127.0.0.1:PORT/v1), --api-key|SENSOR_TEST_API_KEY, --model|SENSOR_TEST_MODEL
(default gpt-4o-mini), --header K:V, --ca|SENSOR_TEST_CA, SSL_CERT_FILE, --max-retries (0).
Output per call:
  {"pid": PID, "ok": true, "call": i, "id": ..., "model": ..., "stream": bool,
   "usage": {"input": N, "output": M} | null, "text": "..."}
"""
import _common as c

ap = c.parser("openai chat.completions client", "gpt-4o-mini")
ap.add_argument("--stream", action="store_true")
ap.add_argument("--n", type=int, default=1)
ap.add_argument("--include-usage", action="store_true")
args = ap.parse_args()
c.check(args)

try:
    import openai

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key,
                           max_retries=args.max_retries, timeout=args.timeout,
                           default_headers=c.headers(args), http_client=c.http_client(openai, args))
    messages = [{"role": "user", "content": "Say hello (sensor test)."}]
    for i in range(args.n):
        if not args.stream:
            r = client.chat.completions.create(model=args.model, messages=messages)
            u = r.usage
            c.emit(call=i, id=r.id, model=r.model, stream=False,
                   usage=None if u is None else {"input": u.prompt_tokens,
                                                 "output": u.completion_tokens},
                   text=r.choices[0].message.content)
            continue
        extra = {"stream_options": {"include_usage": True}} if args.include_usage else {}
        rid = model = usage = None
        text = []
        for chunk in client.chat.completions.create(model=args.model, messages=messages,
                                                    stream=True, **extra):
            rid, model = chunk.id or rid, chunk.model or model
            if chunk.usage is not None:
                usage = {"input": chunk.usage.prompt_tokens,
                         "output": chunk.usage.completion_tokens}
            for ch in chunk.choices:
                if ch.delta and ch.delta.content:
                    text.append(ch.delta.content)
        c.emit(call=i, id=rid, model=model, stream=True, usage=usage, text="".join(text))
    client.close()
except SystemExit:
    raise
except Exception as e:  # noqa: BLE001
    c.fail(c.describe(e))
