#!/usr/bin/env python3
"""OpenAI chat-completion calls through Debian's TLS command-line clients.

    OPENAI_API_KEY=sk-... tls_cli_request.py --tool gnutls|nss --url https://127.0.0.1:PORT \
        --ca DIR/ca.pem [--model gpt-4o-mini] [-n N] [--stream] [--header K:V ...]

Python 3 standard library only.  The TLS connection is made by a real client program,
run as a subprocess, so the sensor sees that program (not python) do the TLS I/O:
  gnutls  gnutls-cli (gnutls-bin) --x509cafile CA --alpn http/1.1 -p PORT HOST: GnuTLS.
  nss     tstclnt (libnss3-tools) -h HOST -p PORT -d sql:DB: NSS.  DB is a temporary NSS
          database holding only the CA, trusted for TLS servers (certutil -t "C,,"); without
          -o, tstclnt rejects a server certificate that does not chain to it or does not
          match HOST.  A host name (not an IP literal) is connected over IPv4 (-4):
          tstclnt does not fall back from ::1 to 127.0.0.1 for localhost, and its -6 fails
          to look names up (NSS 3.87); for IPv6 use the literal, https://[::1]:PORT.
Only the CA file is trusted (gnutls-cli loads the system bundle only without
--x509cafile; the NSS database has no other root).  This script writes the raw HTTP/1.1
requests (Host, Content-Type, Content-Length, Authorization: Bearer $OPENAI_API_KEY; the
last one with Connection: close) to the tool's stdin one at a time, all on one TLS
connection, and reads the tool's stdout until each response is complete (Content-Length
or chunked).  stdin stays open until then, because both tools stop at EOF on stdin
(tstclnt instead spins on it), possibly before the answer has come.  Then stdin is
closed and the tool is given 2 s (gnutls-cli) or 0.2 s (tstclnt, which busy-loops at
EOF instead of exiting) to exit before it is terminated (SIGTERM).

One JSON line per call on stdout:
  {"pid": <this script>, "client_pid": <gnutls-cli / tstclnt>, "tool": "gnutls-cli",
   "call": 0, "status": 200, "proto": "HTTP/1.1", "model": "...", "id": "...",
   "ok": true}
On any error (including an HTTP status other than 200) a message on stderr, exit 1.
"""
import argparse
import ipaddress
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse


def fail(msg):
    sys.stderr.write("tls_cli_request: %s\n" % msg)
    sys.exit(1)


def parse_response(buf, eof):
    """(status, headers, body, consumed) once buf holds one complete response, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError("bad status line %r" % lines[0])
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    pos = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(buf[pos:nl].split(b";", 1)[0].strip() or b"0", 16)
            pos = nl + 2
            if size == 0:
                while True:  # trailers, up to the empty line
                    nl = buf.find(b"\r\n", pos)
                    if nl < 0:
                        return None
                    line, pos = buf[pos:nl], nl + 2
                    if not line:
                        return status, headers, bytes(body), pos
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos:pos + size]
            pos += size + 2
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(buf) < pos + n:
            return None
        return status, headers, bytes(buf[pos:pos + n]), pos + n
    if eof:  # no framing: the body runs to the end of the connection
        return status, headers, bytes(buf[pos:]), len(buf)
    return None


def answer_fields(body, stream):
    """(model, id) from a chat.completion body or from the chunks of an SSE stream."""
    if not stream:
        doc = json.loads(body)
        return doc.get("model"), doc.get("id")
    model = rid = None
    done = False
    for line in body.decode("utf-8").splitlines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        model, rid = chunk.get("model", model), chunk.get("id", rid)
    if not done:
        raise ValueError("stream ended without data: [DONE]")
    return model, rid


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tool", choices=["gnutls", "nss"], required=True)
    ap.add_argument("--url", required=True,
                    help="https://HOST:PORT (a trailing /v1 is accepted)")
    ap.add_argument("--ca", required=True, help="PEM file with the only CA to trust")
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("-n", type=int, default=1, help="calls on the one connection")
    ap.add_argument("--stream", action="store_true", help='send "stream": true')
    ap.add_argument("--header", action="append", default=[], metavar="K:V",
                    help="extra request header, e.g. x-fake-chunked:1")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per response")
    args = ap.parse_args()

    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        fail("OPENAI_API_KEY is not set")
    u = urllib.parse.urlsplit(args.url)
    if u.scheme != "https" or not u.hostname:
        fail("--url must be https://HOST[:PORT]")
    host, port = u.hostname, u.port or 443
    prefix = u.path.rstrip("/")
    if prefix.endswith("/v1"):
        prefix = prefix[:-3]
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False

    extra = b""
    for h in args.header:
        k, sep, v = h.partition(":")
        if not sep:
            fail("bad --header %r (want K:V)" % h)
        extra += ("%s: %s\r\n" % (k.strip(), v.strip())).encode()
    req = {"model": args.model, "messages": [{"role": "user", "content": "Say hello."}]}
    if args.stream:
        req["stream"] = True
    body = json.dumps(req).encode()

    tmp = tempfile.mkdtemp(prefix="tls-cli-")
    try:
        if args.tool == "gnutls":
            cmd = ["gnutls-cli", "--x509cafile", args.ca, "--alpn", "http/1.1",
                   "--logfile", os.path.join(tmp, "gnutls-cli.log"), "-p", str(port), host]
        else:
            db = "sql:" + tmp
            for c in (["certutil", "-N", "--empty-password", "-d", db],
                      ["certutil", "-A", "-d", db, "-n", "fake-model-api-ca", "-t", "C,,",
                       "-i", args.ca]):
                r = subprocess.run(c, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
                if r.returncode != 0:
                    fail("%s failed: %s" % (" ".join(c), r.stdout.strip()))
            cmd = ["tstclnt", "-h", host, "-p", str(port), "-d", db]
            if not is_ip:
                cmd.append("-4")
        run(cmd, args, key, prefix, u.netloc, extra, body, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(cmd, args, key, prefix, netloc, extra, body, tmp):
    tool = os.path.basename(cmd[0])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    errs = []
    drain = threading.Thread(target=lambda: errs.append(proc.stderr.read()), daemon=True)
    drain.start()

    def tool_messages():
        drain.join(2)
        text = b"".join(errs).decode("utf-8", "replace")
        log = os.path.join(tmp, "gnutls-cli.log")
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                text += f.read()
        lines = [x for x in text.splitlines() if x.strip()]
        return " | ".join(lines[-6:])

    # gnutls-cli exits at EOF on stdin; tstclnt busy-loops on it (and on the server's EOF).
    grace = 2.0 if tool == "gnutls-cli" else 0.2

    def stop():
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    buf, eof = bytearray(), False
    fd = proc.stdout.fileno()
    try:
        for call in range(args.n):
            last = call == args.n - 1
            request = (b"POST %s/v1/chat/completions HTTP/1.1\r\nHost: %s\r\n"
                       b"Content-Type: application/json\r\nAuthorization: Bearer %s\r\n"
                       b"Content-Length: %d\r\nConnection: %s\r\n%s\r\n"
                       % (prefix.encode(), netloc.encode(), key.encode(), len(body),
                          b"close" if last else b"keep-alive", extra)) + body
            try:
                proc.stdin.write(request)
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                stop()
                fail("%s exited before the request was sent (status %s): %s"
                     % (tool, proc.returncode, tool_messages()))
            deadline = time.monotonic() + args.timeout
            while True:
                got = parse_response(buf, eof)
                if got is not None:
                    break
                if eof:
                    stop()
                    fail("%s ended before a complete response (exit status %s; got %d "
                         "bytes): %s" % (tool, proc.returncode, len(buf), tool_messages()))
                left = deadline - time.monotonic()
                if left <= 0:
                    stop()
                    fail("no complete response from %s within %gs" % (tool, args.timeout))
                if select.select([fd], [], [], left)[0]:
                    data = os.read(fd, 65536)
                    if data:
                        buf += data
                    else:
                        eof = True
            status, headers, answer, used = got
            del buf[:used]
            stream = args.stream and "text/event-stream" in headers.get("content-type", "")
            try:
                model, rid = answer_fields(answer, stream)
            except ValueError as e:
                stop()
                fail("call %d: status %d, bad body (%s): %r" % (call, status, e, answer[:300]))
            print(json.dumps({"pid": os.getpid(), "client_pid": proc.pid, "tool": tool,
                              "call": call, "status": status, "proto": "HTTP/1.1",
                              "model": model, "id": rid, "stream": stream,
                              "ok": status == 200}), flush=True)
            if status != 200:
                stop()
                fail("call %d: HTTP status %d: %s" % (call, status, answer[:300]))
    finally:
        if proc.poll() is None:
            stop()


if __name__ == "__main__":
    main()
