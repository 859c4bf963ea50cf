#!/usr/bin/env python3
"""A small tool-using agent: a model call, then what an agent does next (see README.md).

usage: agent.py [--stream] [--include-usage] [--tool-url URL] [--fetch-url URL]
                [--mcp-url URL] [--mcp-sse-url URL] [--mcp-stdio]
                [--mcp-mode legacy|auto|VERSION]
                [--mcp-error] [common options]

Steps, each printed as one JSON line on stdout:
  (a) chat.completions.create (openai SDK) declaring the tools get_weather(city) (when
      --tool-url is given) and lookup_order(order_id) (when --mcp-url or --mcp-stdio);
      streamed with --stream.  Line: step "model_call", call 0.
  (b) for each tool call the model answered with, in order:
      get_weather  -> GET TOOL_URL?city=CITY (urllib, HTTPS with the test CA) with a fresh
                      W3C traceparent header.  Line: step "tool_http".
      lookup_order -> MCP tools/call over streamable HTTP at --mcp-url (MCP Python SDK),
                      over the legacy HTTP+SSE transport at --mcp-sse-url (always the
                      initialize handshake), and over stdio with --mcp-stdio
                      (tests/fixtures/mcp_server.py --transport stdio started as a child
                      with this Python).  One line per call: step "mcp_call".
  (c) with --fetch-url: `curl -sS --cacert CA -w '\\n%{http_code}' URL` as a child process.
      Line: step "fetch" (its "pid" is curl's).
  (d) a second chat completion with the tool results as "tool" messages.  Line: step
      "model_call", call 1.  It must not ask for tools again.
Any failure (HTTP status >= 400, curl exit != 0, no tool calls, an MCP protocol error)
prints a message on stderr and exits 1.  An MCP error *result* (isError, e.g. with
--mcp-error, which declares order_id with enum ["bad"] so the fake model asks for order
"bad") is not a failure: it is reported as "is_error": true and passed on to the model.

--mcp-mode: the SDK's connect mode; "legacy" (default) = the initialize handshake and an
Mcp-Session-Id (protocol 2025-11-25), "auto" = probe server/discover first (2026-07-28
with the SDK's own server: no handshake, no session id).
CA: --ca / SENSOR_TEST_CA, else SSL_CERT_FILE (used for the tool API and curl; the openai
SDK reads SSL_CERT_FILE itself).  Common options / env: see _common.py.
"""
import asyncio
import json
import os
import secrets
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import _common as c

HERE = os.path.dirname(os.path.abspath(__file__))
MCP_SERVER = os.path.join(os.path.dirname(HERE), "fixtures", "mcp_server.py")

ap = c.parser("tool-using agent (model API, HTTP tool API, MCP, curl)", "gpt-4o-mini")
ap.add_argument("--stream", action="store_true")
ap.add_argument("--include-usage", action="store_true",
                help="send stream_options.include_usage with --stream")
ap.add_argument("--tool-url", help="HTTPS tool API for get_weather, e.g. "
                "https://127.0.0.1:PORT/tool/weather (the fake model API serves it)")
ap.add_argument("--fetch-url", help="URL fetched by a curl child process")
ap.add_argument("--mcp-url", help="streamable-HTTP MCP endpoint, e.g. http://127.0.0.1:P/mcp")
ap.add_argument("--mcp-sse-url", help="legacy HTTP+SSE MCP endpoint, e.g. http://127.0.0.1:P/sse")
ap.add_argument("--mcp-stdio", action="store_true",
                help="also call lookup_order over stdio (mcp_server.py as a child)")
ap.add_argument("--mcp-mode", default="legacy", help="MCP SDK connect mode (legacy|auto|VERSION)")
ap.add_argument("--mcp-error", action="store_true",
                help="declare lookup_order.order_id with enum [\"bad\"]: an MCP error result")
args = ap.parse_args()
c.check(args)
if not (args.tool_url or args.mcp_url or args.mcp_sse_url or args.mcp_stdio):
    c.fail("nothing to do: give --tool-url, --mcp-url, --mcp-sse-url and/or --mcp-stdio")
CA = args.ca or os.environ.get("SSL_CERT_FILE")


def out(step, **fields):
    line = {"step": step, "pid": os.getpid(), "ok": True}
    line.update(fields)
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def traceparent():
    return "00-%s-%s-01" % (secrets.token_hex(16), secrets.token_hex(8))


def function_tool(name, description, prop, schema):
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": {prop: schema}, "required": [prop]}}}


TOOLS = []
if args.tool_url:
    TOOLS.append(function_tool("get_weather", "Current weather in a city.", "city",
                               {"type": "string"}))
if args.mcp_url or args.mcp_sse_url or args.mcp_stdio:
    schema = {"type": "string"}
    if args.mcp_error:
        schema["enum"] = ["bad"]
    TOOLS.append(function_tool("lookup_order", "Look up an order by id (MCP).", "order_id",
                               schema))


# ------------------------------------------------------------------------- model

def model_call(client, k, messages, tools):
    kw = {"model": args.model, "messages": messages}
    if tools:
        kw["tools"] = tools
    if not args.stream:
        r = client.chat.completions.create(**kw)
        ch = r.choices[0]
        calls = [{"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
                 for t in (ch.message.tool_calls or [])]
        u = r.usage
        usage = None if u is None else {"input": u.prompt_tokens, "output": u.completion_tokens}
        rid, model, finish, text = r.id, r.model, ch.finish_reason, ch.message.content
    else:
        if args.include_usage:
            kw["stream_options"] = {"include_usage": True}
        rid = model = usage = finish = None
        text, parts, chunks = [], {}, 0
        for chunk in client.chat.completions.create(stream=True, **kw):
            chunks += 1
            rid, model = chunk.id or rid, chunk.model or model
            if chunk.usage is not None:
                usage = {"input": chunk.usage.prompt_tokens,
                         "output": chunk.usage.completion_tokens}
            for ch in chunk.choices:
                finish = ch.finish_reason or finish
                d = ch.delta
                if d is None:
                    continue
                if d.content:
                    text.append(d.content)
                for t in d.tool_calls or []:
                    p = parts.setdefault(t.index, {"id": None, "name": None, "arguments": ""})
                    p["id"] = t.id or p["id"]
                    if t.function is not None:
                        p["name"] = t.function.name or p["name"]
                        p["arguments"] += t.function.arguments or ""
        calls = [parts[i] for i in sorted(parts)]
        text = "".join(text) if text else None
    line = {"call": k, "id": rid, "model": model, "stream": args.stream,
            "finish_reason": finish, "tool_calls": calls, "usage": usage, "text": text}
    if args.stream:
        line["chunks"] = chunks
    return line


# ------------------------------------------------------------------------- tools

def tls_context():
    return ssl.create_default_context(cafile=CA) if CA else ssl.create_default_context()


def tool_http(call, city):
    tp = traceparent()
    sep = "&" if "?" in args.tool_url else "?"
    url = args.tool_url + sep + urllib.parse.urlencode({"city": city})
    req = urllib.request.Request(url, headers={"traceparent": tp, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, context=tls_context(), timeout=args.timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        c.fail("tool API %s: HTTP %s %s" % (url, e.code, e.read()[:200]))
    result = json.loads(body)
    out("tool_http", tool_call_id=call["id"], name=call["name"], url=url, method="GET",
        status=status, traceparent=tp, trace_id=tp.split("-")[1], response=result)
    return json.dumps(result)


def child_pids(name):
    """Pids of this process's children whose command line contains name."""
    pids = []
    task_dir = "/proc/%d/task" % os.getpid()
    for tid in os.listdir(task_dir):
        try:
            with open("%s/%s/children" % (task_dir, tid)) as f:
                kids = f.read().split()
        except OSError:
            continue
        for k in kids:
            try:
                with open("/proc/%s/cmdline" % k, "rb") as f:
                    if name.encode() in f.read():
                        pids.append(int(k))
            except OSError:
                pass
    return pids


async def mcp_call(transport, name, arguments):
    """One MCP session: connect, tools/call, disconnect.  -> (line fields, result text)."""
    import httpx2
    from mcp import Client, StdioServerParameters
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamable_http_client

    fields = {"transport": transport}
    session_ids = []
    if transport == "streamable-http":
        tp = traceparent()

        async def on_response(resp):
            sid = resp.headers.get("mcp-session-id")
            if sid and sid not in session_ids:
                session_ids.append(sid)

        http = httpx2.AsyncClient(headers={"traceparent": tp},
                                  timeout=httpx2.Timeout(args.timeout, read=300),
                                  event_hooks={"response": [on_response]})
        target = streamable_http_client(args.mcp_url, http_client=http)
        fields.update(url=args.mcp_url, traceparent=tp)
    elif transport == "sse":
        http = None
        target = sse_client(args.mcp_sse_url, timeout=args.timeout)
        fields.update(url=args.mcp_sse_url)
    else:
        http = None
        target = StdioServerParameters(command=sys.executable,
                                       args=[MCP_SERVER, "--transport", "stdio"])
        fields.update(command=[sys.executable, MCP_SERVER, "--transport", "stdio"])
    try:
        mode = "legacy" if transport == "sse" else args.mcp_mode
        async with Client(target, mode=mode, read_timeout_seconds=args.timeout) as cl:
            server_pids = child_pids("mcp_server.py") if transport == "stdio" else []
            r = await cl.call_tool(name, arguments)
            version = cl.protocol_version
    finally:
        if http is not None:
            await http.aclose()
    text = "".join(getattr(b, "text", "") for b in r.content)
    try:
        result = json.loads(text)
    except ValueError:
        result = text
    server_pid = server_pids[0] if server_pids else (
        result.get("server_pid") if isinstance(result, dict) else None)
    fields.update(tool=name, arguments=arguments, is_error=bool(r.is_error), result=result,
                  session_id=session_ids[0] if session_ids else None,
                  protocol_version=version, server_pid=server_pid)
    return fields, text


def leaf_errors(e):
    """The innermost exceptions of (nested) exception groups, cancellations last."""
    subs = getattr(e, "exceptions", None)
    if not subs:
        return [e]
    leaves = [x for s in subs for x in leaf_errors(s)]
    return sorted(leaves, key=lambda x: isinstance(x, asyncio.CancelledError)
                  or type(x).__name__ == "CancelledError")


def run_mcp(call, arguments):
    text = None
    transports = ((["streamable-http"] if args.mcp_url else [])
                  + (["sse"] if args.mcp_sse_url else [])
                  + (["stdio"] if args.mcp_stdio else []))
    for t in transports:
        try:
            fields, t_text = asyncio.run(mcp_call(t, call["name"], arguments))
        except Exception as e:  # noqa: BLE001
            c.fail("MCP tools/call %s over %s: %s"
                   % (call["name"], t, c.describe(leaf_errors(e)[0])))
        out("mcp_call", tool_call_id=call["id"], **fields)
        text = t_text if text is None else text
    return text


def fetch():
    cmd = ["curl", "-sS"] + (["--cacert", CA] if CA else []) + \
          ["-w", "\n%{http_code}", args.fetch_url]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = p.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        c.fail("curl %s timed out" % args.fetch_url)
    body, _, code = stdout.rpartition(b"\n")
    status = int(code) if code.strip().isdigit() else None
    if p.returncode != 0 or status is None or status >= 400:
        c.fail("curl %s: exit %s, status %s: %s" % (args.fetch_url, p.returncode, status,
                                                    stderr.decode(errors="replace").strip()))
    out("fetch", pid=p.pid, agent_pid=os.getpid(), url=args.fetch_url, command=cmd,
        status=status, exit_code=p.returncode, bytes=len(body))


# -------------------------------------------------------------------------- main

try:
    import openai

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key,
                           max_retries=args.max_retries, timeout=args.timeout,
                           default_headers=c.headers(args), http_client=c.http_client(openai, args))
    messages = [{"role": "user", "content": "What is the weather in Paris, and where is my "
                                            "order? (sensor test)"}]
    first = model_call(client, 0, messages, TOOLS)
    out("model_call", **first)
    if not first["tool_calls"]:
        c.fail("the model answered without tool calls (finish_reason %r)"
               % first["finish_reason"])

    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": t["id"], "type": "function",
         "function": {"name": t["name"], "arguments": t["arguments"]}}
        for t in first["tool_calls"]]})
    for call in first["tool_calls"]:
        try:
            arguments = json.loads(call["arguments"] or "{}")
        except ValueError:
            c.fail("tool call %s: arguments are not JSON: %r" % (call["id"], call["arguments"]))
        if not isinstance(arguments, dict):
            c.fail("tool call %s: arguments are not an object" % call["id"])
        if call["name"] == "get_weather" and args.tool_url:
            result = tool_http(call, arguments.get("city", ""))
        elif call["name"] == "lookup_order" and (args.mcp_url or args.mcp_sse_url or args.mcp_stdio):
            result = run_mcp(call, arguments)
        else:
            c.fail("the model called an unknown tool %r" % call["name"])
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})

    if args.fetch_url:
        fetch()

    second = model_call(client, 1, messages, TOOLS)
    second["tool_results"] = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    out("model_call", **second)
    if second["tool_calls"]:
        c.fail("the model asked for tools again after the tool results")
    client.close()
except SystemExit:
    raise
except Exception as e:  # noqa: BLE001
    c.fail(c.describe(e))
