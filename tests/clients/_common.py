"""Shared argv/env handling for the Python test clients (see README.md).

Every client accepts:
  --base-url URL   (env SENSOR_TEST_BASE_URL; required)
  --api-key KEY    (env SENSOR_TEST_API_KEY; default sk-test-fake-0000000000)
  --model NAME     (env SENSOR_TEST_MODEL; per-client default)
  --header K:V     extra request header, repeatable (e.g. x-fake-status:429, x-fake-chunked:1)
  --ca FILE        (env SENSOR_TEST_CA; optional) explicit CA bundle. Without it the SDK's
                   default context is used, which honours SSL_CERT_FILE / SSL_CERT_DIR.
  --max-retries N  (env SENSOR_TEST_MAX_RETRIES; default 0 so one call = one HTTP request)
  --timeout SECS   (default 30)
Success: one JSON line per call on stdout, exit 0.  Failure: message on stderr, exit 1.
"""
import argparse
import json
import os
import ssl
import sys

FAKE_KEY = "sk-test-fake-0000000000"


def parser(description, default_model):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--base-url", default=os.environ.get("SENSOR_TEST_BASE_URL"))
    ap.add_argument("--api-key", default=os.environ.get("SENSOR_TEST_API_KEY") or FAKE_KEY)
    ap.add_argument("--model", default=os.environ.get("SENSOR_TEST_MODEL") or default_model)
    ap.add_argument("--header", action="append", default=[], metavar="K:V")
    ap.add_argument("--ca", default=os.environ.get("SENSOR_TEST_CA"))
    ap.add_argument("--max-retries", type=int,
                    default=int(os.environ.get("SENSOR_TEST_MAX_RETRIES") or 0))
    ap.add_argument("--timeout", type=float, default=30.0)
    return ap


def check(args):
    if not args.base_url:
        fail("no base URL: pass --base-url or set SENSOR_TEST_BASE_URL")


def headers(args):
    out = {}
    for h in args.header:
        k, sep, v = h.partition(":")
        if not sep:
            fail("bad --header %r (want K:V)" % h)
        out[k.strip()] = v.strip()
    return out


def http_client(sdk, args):
    """None (SDK default client, honours SSL_CERT_FILE) unless --ca/SENSOR_TEST_CA is set."""
    if not args.ca:
        return None
    return sdk.DefaultHttpxClient(verify=ssl.create_default_context(cafile=args.ca))


def emit(**fields):
    line = {"pid": os.getpid(), "ok": True}
    line.update(fields)
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def fail(msg, code=1):
    sys.stderr.write("%s: %s\n" % (os.path.basename(sys.argv[0]), msg))
    sys.stderr.flush()
    sys.exit(code)


def describe(exc):
    status = getattr(exc, "status_code", None)
    s = "%s: %s" % (type(exc).__name__, exc)
    if status is not None:
        s = "HTTP %s %s" % (status, s)
    cause = None if status is not None else (exc.__cause__ or exc.__context__)
    while cause is not None:
        s += " <- %s: %s" % (type(cause).__name__, cause)
        cause = cause.__cause__ or cause.__context__
    return " ".join(s.split())
