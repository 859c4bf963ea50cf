//! Hand-built frames: each behaviour of the connection on its own.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use sensor_common::Direction::{Egress, Ingress};

use super::*;
use crate::protocol::http1::MAX_HEADER_COUNT;

/// Frame and HPACK builders shared by the HTTP/2 tests.
pub(super) mod build {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const PRIORITY: u8 = 2;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIO: u8 = 0x20;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// RFC 7541 §5.1 integer with `prefix` bits, `high` holding the
    /// representation's leading bits.
    pub fn int(prefix: u8, high: u8, value: usize) -> Vec<u8> {
        let max = (1usize << prefix) - 1;
        if value < max {
            return vec![high | value as u8];
        }
        let mut out = vec![high | max as u8];
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
        out
    }

    pub fn string(s: &[u8]) -> Vec<u8> {
        let mut out = int(7, 0, s.len());
        out.extend_from_slice(s);
        out
    }

    /// Literal without indexing, new name.
    pub fn lit(name: &str, value: &str) -> Vec<u8> {
        let mut out = vec![0x00];
        out.extend(string(name.as_bytes()));
        out.extend(string(value.as_bytes()));
        out
    }

    /// Literal with incremental indexing, new name.
    pub fn lit_indexed(name: &str, value: &str) -> Vec<u8> {
        let mut out = vec![0x40];
        out.extend(string(name.as_bytes()));
        out.extend(string(value.as_bytes()));
        out
    }

    pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        fields.iter().flat_map(|(n, v)| lit(n, v)).collect()
    }

    pub fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let mut p = Vec::new();
        for (id, v) in entries {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        frame(SETTINGS, 0, 0, &p)
    }

    pub fn get(stream: u32, path: &str) -> Vec<u8> {
        let b = block(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "api.example.com"),
            (":path", path),
        ]);
        frame(HEADERS, END_HEADERS | END_STREAM, stream, &b)
    }

    pub fn status(stream: u32, code: &str, end: bool) -> Vec<u8> {
        let b = block(&[(":status", code), ("content-type", "application/json")]);
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &b)
    }
}

use build::*;

pub(super) fn with_preface(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    for f in frames {
        v.extend_from_slice(f);
    }
    v
}

pub(super) fn exchanges(items: &[Http2Item]) -> Vec<(&Request, Option<&Response>)> {
    items
        .iter()
        .filter_map(|i| match i {
            Http2Item::Exchange(r, s) => Some((r, s.as_ref())),
            Http2Item::Error(_) => None,
        })
        .collect()
}

pub(super) fn errors(items: &[Http2Item]) -> Vec<&Http2Error> {
    items
        .iter()
        .filter_map(|i| match i {
            Http2Item::Error(e) => Some(e),
            Http2Item::Exchange(..) => None,
        })
        .collect()
}

fn names(h: &crate::protocol::http1::Headers) -> Vec<&str> {
    h.iter().map(|h| h.name.as_str()).collect()
}

#[test]
fn get_and_response() {
    let mut c = Http2Connection::new(1024);
    let req = get(1, "/v1/models?key=secret");
    let egress = with_preface(&[settings(&[]), req.clone()]);
    assert!(c.feed(Egress, 10, &egress).is_empty());
    let resp_h = status(1, "200", false);
    let body = frame(DATA, END_STREAM, 1, b"{\"data\":[]}");
    let mut ingress = settings(&[]);
    ingress.extend_from_slice(&resp_h);
    assert!(c.feed(Ingress, 20, &ingress).is_empty());
    let items = c.feed(Ingress, 30, &body);
    let ex = exchanges(&items);
    assert_eq!(ex.len(), 1);
    let (r, s) = ex[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.target, "/v1/models?key=secret");
    assert_eq!(r.version, 2);
    assert_eq!(names(&r.headers), ["host"]);
    assert_eq!(r.headers.get_str("host"), Some("api.example.com"));
    assert!(r.body.is_empty());
    assert!(!r.body_truncated);
    assert_eq!(r.wire_size, req.len() as u64);
    assert_eq!((r.first_ts, r.last_ts), (10, 10));
    let s = s.unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.version, 2);
    assert!(s.reason.is_empty());
    assert_eq!(names(&s.headers), ["content-type"]);
    assert_eq!(s.body, b"{\"data\":[]}");
    assert_eq!(s.body_size, 11);
    assert!(!s.body_truncated && !s.chunked && !s.is_event_stream);
    assert!(s.body_tail.is_empty());
    assert_eq!(s.wire_size, (resp_h.len() + body.len()) as u64);
    assert_eq!((s.first_ts, s.last_ts), (20, 30));
    assert_eq!(c.open_streams(), 0);
    let st = c.stats();
    assert_eq!(
        (st.frames, st.streams, st.exchanges, st.errors),
        (5, 1, 1, 0)
    );
    // Debug shows no query string, no header value, no body.
    let dbg = format!("{items:?}");
    assert!(!dbg.contains("secret") && !dbg.contains("api.example.com") && !dbg.contains("data"));
}

#[test]
fn padded_and_priority_frames() {
    let mut c = Http2Connection::new(1024);
    let b = block(&[
        (":method", "POST"),
        (":path", "/chat"),
        (":authority", "a.example"),
        ("host", "explicit.example"),
        ("content-type", "application/json"),
    ]);
    // HEADERS with 3 bytes of padding and a priority block.
    let mut p = vec![3];
    p.extend_from_slice(&[0x80, 0, 0, 0, 16]);
    p.extend_from_slice(&b);
    p.extend_from_slice(&[0, 0, 0]);
    let h = frame(HEADERS, END_HEADERS | PADDED | PRIO, 1, &p);
    // DATA with 4 bytes of padding, then unpadded DATA, then empty padded DATA.
    let mut d1 = vec![4];
    d1.extend_from_slice(b"{\"a\":");
    d1.extend_from_slice(&[0; 4]);
    let d1 = frame(DATA, PADDED, 1, &d1);
    let d2 = frame(DATA, 0, 1, b"1}");
    let d3 = frame(DATA, PADDED | END_STREAM, 1, &[0]);
    let egress = with_preface(&[
        h.clone(),
        frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 1]),
        d1.clone(),
        d2.clone(),
        d3.clone(),
    ]);
    assert!(c.feed(Egress, 1, &egress).is_empty());
    let items = c.feed(Ingress, 2, &status(1, "201", true));
    let (r, s) = exchanges(&items)[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/chat");
    // An explicit host field wins over :authority.
    assert_eq!(names(&r.headers), ["host", "content-type"]);
    assert_eq!(r.headers.get_str("host"), Some("explicit.example"));
    assert_eq!(r.body, b"{\"a\":1}");
    assert_eq!(r.body_size, 7);
    assert!(!r.body_truncated);
    assert_eq!(
        r.wire_size,
        (h.len() + d1.len() + d2.len() + d3.len()) as u64
    );
    let s = s.unwrap();
    assert_eq!(s.status, 201);
    assert!(s.body.is_empty() && !s.body_truncated);
}

#[test]
fn continuation_frames() {
    let mut c = Http2Connection::new(1024);
    let b = block(&[
        (":method", "GET"),
        (":path", "/big"),
        (":authority", "x"),
        ("x-long", &"v".repeat(300)),
        ("x-after", "1"),
    ]);
    let (a, rest) = b.split_at(10);
    let (m, z) = rest.split_at(200);
    let frames = [
        frame(HEADERS, END_STREAM, 1, a),
        frame(CONTINUATION, 0, 1, m),
        frame(CONTINUATION, END_HEADERS, 1, z),
    ];
    c.feed(Egress, 1, &with_preface(&frames));
    let items = c.feed(Ingress, 2, &status(1, "204", true));
    let (r, s) = exchanges(&items)[0];
    assert_eq!(names(&r.headers), ["host", "x-long", "x-after"]);
    assert_eq!(r.headers.get("x-long").unwrap().len(), 300);
    assert_eq!(
        r.wire_size,
        frames.iter().map(Vec::len).sum::<usize>() as u64
    );
    assert_eq!(s.unwrap().status, 204);
}

#[test]
fn frame_inside_header_block_is_fatal() {
    let mut c = Http2Connection::new(1024);
    let b = block(&[(":method", "GET"), (":path", "/")]);
    let frames = [
        frame(HEADERS, END_STREAM, 1, &b),
        frame(PING, 0, 0, &[0; 8]),
    ];
    let items = c.feed(Egress, 1, &with_preface(&frames));
    assert_eq!(
        errors(&items),
        [&Http2Error::ContinuationExpected {
            direction: Egress,
            stream: 1,
            kind: PING,
            got: 0
        }]
    );
    assert!(c.is_broken());
    // CONTINUATION of another stream, and CONTINUATION with nothing open.
    let mut c = Http2Connection::new(1024);
    let frames = [
        frame(HEADERS, 0, 1, &b),
        frame(CONTINUATION, END_HEADERS, 3, &[]),
    ];
    let items = c.feed(Egress, 1, &with_preface(&frames));
    assert!(matches!(
        errors(&items)[..],
        [Http2Error::ContinuationExpected { got: 3, .. }]
    ));
    let mut c = Http2Connection::new(1024);
    let items = c.feed(Ingress, 1, &frame(CONTINUATION, END_HEADERS, 1, &[]));
    assert_eq!(
        errors(&items),
        [&Http2Error::UnexpectedContinuation {
            direction: Ingress,
            stream: 1
        }]
    );
    assert!(!c.is_broken());
    assert_eq!(c.stats().errors, 1);
}

#[test]
fn interim_response_and_trailers() {
    let mut c = Http2Connection::new(1024);
    let b = block(&[
        (":method", "POST"),
        (":path", "/pkg.Service/Call"),
        (":authority", "grpc.example"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    c.feed(
        Egress,
        1,
        &with_preface(&[
            frame(HEADERS, END_HEADERS, 1, &b),
            frame(DATA, END_STREAM, 1, b"\0\0\0\0\x02hi"),
        ]),
    );
    let interim = frame(HEADERS, END_HEADERS, 1, &block(&[(":status", "100")]));
    let head = frame(
        HEADERS,
        END_HEADERS,
        1,
        &block(&[(":status", "200"), ("content-type", "application/grpc")]),
    );
    let data = frame(DATA, 0, 1, b"\0\0\0\0\x02ok");
    let trailers = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&[("grpc-status", "0"), ("grpc-message", "fine")]),
    );
    assert!(c.feed(Ingress, 2, &interim).is_empty());
    assert!(c.feed(Ingress, 3, &head).is_empty());
    assert!(c.feed(Ingress, 4, &data).is_empty());
    let items = c.feed(Ingress, 5, &trailers);
    let (r, s) = exchanges(&items)[0];
    assert_eq!(r.body, b"\0\0\0\0\x02hi");
    let s = s.unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(
        names(&s.headers),
        ["content-type", "grpc-status", "grpc-message"]
    );
    assert_eq!(s.headers.get_str("grpc-status"), Some("0"));
    assert_eq!(s.body, b"\0\0\0\0\x02ok");
    // The interim block counts on the wire; first_ts is the final HEADERS.
    assert_eq!(
        s.wire_size,
        (interim.len() + head.len() + data.len() + trailers.len()) as u64
    );
    assert_eq!((s.first_ts, s.last_ts), (3, 5));
}

#[test]
fn resets() {
    let mut c = Http2Connection::new(1024);
    c.feed(
        Egress,
        1,
        &with_preface(&[get(1, "/a"), get(3, "/b"), get(5, "/c")]),
    );
    // Server refuses stream 3 before any response.
    let items = c.feed(Ingress, 2, &frame(RST_STREAM, 0, 3, &7u32.to_be_bytes()));
    let ex = exchanges(&items);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].0.target, "/b");
    assert!(ex[0].1.is_none());
    // Stream 1 got headers, then the client cancels: partial response.
    c.feed(Ingress, 3, &status(1, "200", false));
    c.feed(Ingress, 4, &frame(DATA, 0, 1, b"part"));
    let items = c.feed(Egress, 5, &frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    let (r, s) = exchanges(&items)[0];
    assert_eq!(r.target, "/a");
    assert!(!r.body_truncated);
    let s = s.unwrap();
    assert_eq!(s.body, b"part");
    assert!(s.body_truncated);
    // Late frames of a reported stream are ignored.
    assert!(
        c.feed(Ingress, 6, &frame(DATA, END_STREAM, 1, b"more"))
            .is_empty()
    );
    assert_eq!(c.stats().resets, 2);
    assert_eq!(c.open_streams(), 1);
}

#[test]
fn event_stream_with_tail() {
    let mut c = Http2Connection::new(16);
    c.feed(Egress, 1, &with_preface(&[get(1, "/sse")]));
    let h = frame(
        HEADERS,
        END_HEADERS,
        1,
        &block(&[
            (":status", "200"),
            ("content-type", "Text/Event-Stream; charset=utf-8"),
        ]),
    );
    c.feed(Ingress, 2, &h);
    let mut all = Vec::new();
    for i in 0..10 {
        let ev = format!("data: {i}\n\n");
        all.extend_from_slice(ev.as_bytes());
        c.feed(Ingress, 3 + i, &frame(DATA, 0, 1, ev.as_bytes()));
    }
    let items = c.feed(
        Ingress,
        20,
        &frame(DATA, END_STREAM, 1, b"data: [DONE]\n\n"),
    );
    all.extend_from_slice(b"data: [DONE]\n\n");
    let s = exchanges(&items)[0].1.unwrap();
    assert!(s.is_event_stream);
    assert_eq!(s.body, &all[..16]);
    assert_eq!(s.body_tail, &all[16..]);
    assert_eq!(s.body_size, all.len() as u64);
    assert!(s.body_truncated);
    assert_eq!(s.last_ts, 20);
}

#[test]
fn request_body_cap_keeps_no_tail() {
    let mut c = Http2Connection::new(4);
    let b = block(&[(":method", "PUT"), (":path", "/x")]);
    c.feed(
        Egress,
        1,
        &with_preface(&[
            frame(HEADERS, END_HEADERS, 1, &b),
            frame(DATA, END_STREAM, 1, b"0123456789"),
        ]),
    );
    let items = c.feed(Ingress, 2, &status(1, "200", true));
    let (r, _) = exchanges(&items)[0];
    assert_eq!(r.body, b"0123");
    assert_eq!(r.body_size, 10);
    assert!(r.body_truncated);
    // No :authority and no host: no host field is made up.
    assert!(r.headers.is_empty());
}

#[test]
fn close_reports_open_streams() {
    let mut c = Http2Connection::new(1024);
    let b = block(&[(":method", "POST"), (":path", "/up")]);
    c.feed(
        Egress,
        1,
        &with_preface(&[
            get(1, "/a"),
            frame(HEADERS, END_HEADERS, 3, &b),
            frame(DATA, 0, 3, b"abc"),
        ]),
    );
    c.feed(Ingress, 2, &status(1, "200", false));
    c.feed(Ingress, 3, &frame(DATA, 0, 1, b"xy"));
    let items = c.close(9);
    let ex = exchanges(&items);
    assert_eq!(ex.len(), 2);
    let (r1, s1) = ex[0];
    assert_eq!(r1.target, "/a");
    let s1 = s1.unwrap();
    assert_eq!(s1.body, b"xy");
    assert!(s1.body_truncated);
    let (r3, s3) = ex[1];
    assert_eq!(r3.body, b"abc");
    assert!(r3.body_truncated);
    assert!(s3.is_none());
    // The parser starts over: a new preface is expected.
    assert_eq!(c.open_streams(), 0);
    assert!(
        c.feed(Egress, 10, &with_preface(&[get(1, "/again")]))
            .is_empty()
    );
    assert_eq!(c.open_streams(), 1);
    assert_eq!(c.stats().exchanges, 2);
}

#[test]
fn ingress_gap() {
    let mut c = Http2Connection::new(1024);
    let post = block(&[(":method", "POST"), (":path", "/slow")]);
    c.feed(
        Egress,
        1,
        &with_preface(&[
            get(1, "/a"),
            get(3, "/b"),
            frame(HEADERS, END_HEADERS, 5, &post),
        ]),
    );
    c.feed(Ingress, 2, &status(1, "200", false));
    let items = c.gap(Ingress, 3, 100);
    assert_eq!(
        errors(&items),
        [&Http2Error::Desync {
            lost: 100,
            direction: Ingress
        }]
    );
    let ex = exchanges(&items);
    // Streams whose requests are complete are reported; /slow waits for
    // the end of its request.
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].0.target, "/a");
    assert!(ex[0].1.unwrap().body_truncated);
    assert_eq!(ex[1].0.target, "/b");
    assert!(ex[1].1.is_none());
    // Ingress bytes are now skipped.
    assert!(c.feed(Ingress, 4, &status(5, "200", true)).is_empty());
    assert_eq!(c.stats().bytes_skipped, status(5, "200", true).len() as u64);
    let items = c.feed(Egress, 5, &frame(DATA, END_STREAM, 5, b"body"));
    let (r, s) = exchanges(&items)[0];
    assert_eq!(
        (r.target.as_str(), &r.body[..], s.is_none()),
        ("/slow", &b"body"[..], true)
    );
    // New requests come out as soon as they are complete.
    let items = c.feed(Egress, 6, &get(7, "/c"));
    assert_eq!(exchanges(&items)[0].0.target, "/c");
    assert!(!c.is_broken());
    // A second gap on the same direction is only counted.
    assert!(c.gap(Ingress, 7, 5).is_empty());
    assert_eq!(c.stats().gap_bytes, 105);
    assert_eq!(c.stats().errors, 1);
}

#[test]
fn egress_gap() {
    let mut c = Http2Connection::new(1024);
    let post = block(&[(":method", "POST"), (":path", "/up")]);
    c.feed(
        Egress,
        1,
        &with_preface(&[
            get(1, "/a"),
            frame(HEADERS, END_HEADERS, 3, &post),
            frame(DATA, 0, 3, b"ab"),
        ]),
    );
    let items = c.gap(Egress, 2, 10);
    assert_eq!(
        errors(&items),
        [&Http2Error::Desync {
            lost: 10,
            direction: Egress
        }]
    );
    assert!(exchanges(&items).is_empty());
    assert!(!c.is_broken());
    // Responses of requests already seen still complete them.
    c.feed(Ingress, 3, &status(1, "200", true));
    let items = c.feed(Ingress, 4, &status(3, "413", true));
    let (r, s) = exchanges(&items)[0];
    assert_eq!(r.body, b"ab");
    assert!(r.body_truncated);
    assert_eq!(s.unwrap().status, 413);
    // Nothing can come any more.
    assert!(c.is_broken());
    // A response for a stream never seen is not paired with anything.
    assert!(c.feed(Ingress, 5, &status(5, "200", true)).is_empty());
}

#[test]
fn bad_preface() {
    let mut c = Http2Connection::new(1024);
    let items = c.feed(Egress, 1, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(errors(&items), [&Http2Error::BadPreface]);
    assert!(c.is_broken());
    // A preface split over calls is fine.
    let mut c = Http2Connection::new(1024);
    for b in with_preface(&[get(1, "/")]) {
        assert!(c.feed(Egress, 1, &[b]).is_empty());
    }
    assert_eq!(c.open_streams(), 1);
}

#[test]
fn response_before_request() {
    let mut c = Http2Connection::new(1024);
    c.feed(Egress, 1, PREFACE);
    // The response's records were reported before the request's.
    assert!(c.feed(Ingress, 2, &status(1, "200", false)).is_empty());
    assert!(
        c.feed(Ingress, 3, &frame(DATA, END_STREAM, 1, b"ok"))
            .is_empty()
    );
    let b = block(&[(":method", "POST"), (":path", "/p"), (":authority", "h")]);
    assert!(
        c.feed(Egress, 4, &frame(HEADERS, END_HEADERS, 1, &b))
            .is_empty()
    );
    let items = c.feed(Egress, 5, &frame(DATA, END_STREAM, 1, b"req"));
    let (r, s) = exchanges(&items)[0];
    assert_eq!((r.body.as_slice(), r.body_truncated), (&b"req"[..], false));
    assert_eq!(s.unwrap().body, b"ok");
    // A response whose request never comes is dropped at close.
    c.feed(Ingress, 6, &status(3, "200", true));
    assert!(exchanges(&c.close(7)).is_empty());
    assert_eq!(c.stats().responses_without_request, 1);
}

#[test]
fn goaway_refuses_later_streams() {
    let mut c = Http2Connection::new(1024);
    c.feed(
        Egress,
        1,
        &with_preface(&[get(1, "/a"), get(3, "/b"), get(5, "/c")]),
    );
    let mut p = 1u32.to_be_bytes().to_vec();
    p.extend_from_slice(&0u32.to_be_bytes());
    let items = c.feed(Ingress, 2, &frame(GOAWAY, 0, 0, &p));
    let ex = exchanges(&items);
    assert_eq!(
        ex.iter().map(|e| e.0.target.as_str()).collect::<Vec<_>>(),
        ["/b", "/c"]
    );
    assert!(ex.iter().all(|e| e.1.is_none()));
    assert_eq!(
        exchanges(&c.feed(Ingress, 3, &status(1, "200", true))).len(),
        1
    );
}

#[test]
fn cookies_connect_and_pseudo_headers() {
    let mut c = Http2Connection::new(1024);
    let b = block(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/"),
        (":authority", "h.example"),
        ("cookie", "a=1"),
        ("accept", "*/*"),
        ("cookie", "b=2"),
        ("cookie", "c=3"),
    ]);
    let connect = block(&[(":method", "CONNECT"), (":authority", "proxy.example:443")]);
    c.feed(
        Egress,
        1,
        &with_preface(&[
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &b),
            frame(HEADERS, END_HEADERS, 3, &connect),
        ]),
    );
    let items = c.feed(
        Ingress,
        2,
        &[status(1, "200", true), status(3, "200", true)].concat(),
    );
    let ex = exchanges(&items);
    let r = ex[0].0;
    assert_eq!(names(&r.headers), ["host", "cookie", "accept"]);
    assert_eq!(r.headers.get_str("cookie"), Some("a=1; b=2; c=3"));
    let r = ex[1].0;
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("CONNECT", "proxy.example:443")
    );
}

#[test]
fn settings_bound_the_other_direction() {
    // The server announces a 128 KiB table: the client's encoder (egress)
    // may grow to it. Without the setting, 64 KiB is the limit.
    let update = int(5, 0x20, 128 * 1024);
    let mut b = update.clone();
    b.extend(block(&[(":method", "GET"), (":path", "/")]));
    let h = frame(HEADERS, END_HEADERS | END_STREAM, 1, &b);

    let mut c = Http2Connection::new(1024);
    let items = c.feed(Egress, 1, &with_preface(std::slice::from_ref(&h)));
    assert!(matches!(
        errors(&items)[..],
        [Http2Error::Hpack {
            direction: Egress,
            source: HpackError::TableSizeTooLarge { .. }
        }]
    ));

    let mut c = Http2Connection::new(1024);
    // The client's own setting bounds ingress, not egress.
    c.feed(Egress, 1, &with_preface(&[settings(&[(1, 200_000)])]));
    let items = c.feed(Egress, 1, &h);
    assert_eq!(errors(&items).len(), 1);

    let mut c = Http2Connection::new(1024);
    c.feed(Ingress, 1, &settings(&[(1, 200_000), (5, 4 << 20)]));
    assert!(c.feed(Egress, 2, &with_preface(&[h])).is_empty());
    assert_eq!(c.open_streams(), 1);
    // The server's SETTINGS_MAX_FRAME_SIZE of 4 MiB allows a 2 MiB DATA
    // frame from the client; a 2 MiB frame towards the client is too large.
    let big = frame(DATA, 0, 0, &vec![0; 2 << 20]);
    assert!(c.feed(Egress, 3, &big).is_empty());
    let items = c.feed(Ingress, 4, &big);
    assert_eq!(
        errors(&items),
        [&Http2Error::FrameTooLarge {
            direction: Ingress,
            length: 2 << 20,
            limit: DEFAULT_FRAME_LIMIT
        }]
    );
}

#[test]
fn push_promise_keeps_hpack_in_step() {
    let mut c = Http2Connection::new(1024);
    c.feed(Egress, 1, &with_preface(&[get(1, "/page")]));
    // The promise's header block adds an entry to the server's table...
    let mut p = vec![2];
    p.extend_from_slice(&2u32.to_be_bytes());
    p.extend(lit_indexed("x-pushed", "yes"));
    p.extend_from_slice(&[0, 0]);
    let promise = frame(PUSH_PROMISE, END_HEADERS | PADDED, 1, &p);
    // ...that the response then references (index 62).
    let mut rb = block(&[(":status", "200")]);
    rb.push(0x80 | 62);
    let resp = frame(HEADERS, END_HEADERS | END_STREAM, 1, &rb);
    // The pushed stream's response is not reported.
    let pushed = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        2,
        &block(&[(":status", "200")]),
    );
    let items = c.feed(Ingress, 2, &[promise, pushed, resp].concat());
    let ex = exchanges(&items);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].1.unwrap().headers.get_str("x-pushed"), Some("yes"));
}

#[test]
fn untracked_header_blocks_are_decoded() {
    // A block on stream 0 and a stale one on a reported stream both add to
    // the table; later references must resolve.
    let mut c = Http2Connection::new(1024);
    let stale = frame(HEADERS, END_HEADERS, 0, &lit_indexed("x-zero", "0"));
    let mut b = block(&[(":method", "GET"), (":path", "/")]);
    b.push(0x80 | 62);
    let items = c.feed(
        Egress,
        1,
        &with_preface(&[stale, frame(HEADERS, END_HEADERS | END_STREAM, 1, &b)]),
    );
    assert!(items.is_empty());
    let items = c.feed(Ingress, 2, &status(1, "200", true));
    assert_eq!(exchanges(&items)[0].0.headers.get_str("x-zero"), Some("0"));
}

#[test]
fn stream_cap_reports_the_oldest() {
    let mut c = Http2Connection::new(1024);
    let mut reported = Vec::new();
    c.feed(Egress, 0, PREFACE);
    for i in 0..(MAX_OPEN_STREAMS as u32 + 10) {
        let items = c.feed(Egress, 1, &get(2 * i + 1, &format!("/{i}")));
        reported.extend(exchanges(&items).iter().map(|e| e.0.target.clone()));
    }
    assert_eq!(
        reported,
        (0..10).map(|i| format!("/{i}")).collect::<Vec<_>>()
    );
    assert_eq!(c.open_streams(), MAX_OPEN_STREAMS);
    assert_eq!(c.stats().streams_evicted, 10);
}

#[test]
fn memory_budget_reports_the_oldest() {
    let cap = 1 << 20;
    let mut c = Http2Connection::new(cap);
    c.feed(Egress, 0, PREFACE);
    let b = block(&[(":method", "POST"), (":path", "/big")]);
    let chunk = vec![b'x'; 1 << 20];
    let mut reported = 0;
    for i in 0..40u32 {
        let id = 2 * i + 1;
        let mut items = c.feed(Egress, 1, &frame(HEADERS, END_HEADERS, id, &b));
        items.extend(c.feed(Egress, 1, &frame(DATA, 0, id, &chunk)));
        reported += exchanges(&items).len();
        assert!(
            c.buffered_bytes() <= c.retained_budget + (2 << 20),
            "{}",
            c.buffered_bytes()
        );
    }
    assert!(reported > 0);
    assert_eq!(c.stats().streams_evicted, reported as u64);
}

#[test]
fn ignored_frames() {
    let mut c = Http2Connection::new(1024);
    let frames = [
        settings(&[(3, 100), (4, 65535)]),
        frame(SETTINGS, 1, 0, &[]),
        frame(PING, 0, 0, &[1; 8]),
        frame(WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes()),
        frame(0xfa, 0xff, 7, b"extension frame"),
        get(1, "/"),
        frame(WINDOW_UPDATE, 0, 1, &1000u32.to_be_bytes()),
        frame(DATA, END_STREAM, 9, b"unknown stream"),
    ];
    assert!(c.feed(Egress, 1, &with_preface(&frames)).is_empty());
    let items = c.feed(Ingress, 2, &status(1, "200", true));
    assert_eq!(exchanges(&items).len(), 1);
    assert_eq!(c.stats().frames, frames.len() as u64 + 1);
    assert_eq!(c.stats().errors, 0);
}

#[test]
fn bad_data_padding_is_not_fatal() {
    let mut c = Http2Connection::new(1024);
    let b = block(&[(":method", "POST"), (":path", "/")]);
    let bad = frame(DATA, PADDED, 1, &[9, b'a', b'b']);
    let items = c.feed(
        Egress,
        1,
        &with_preface(&[
            frame(HEADERS, END_HEADERS, 1, &b),
            bad,
            frame(DATA, END_STREAM, 1, b"ok"),
        ]),
    );
    assert_eq!(
        errors(&items),
        [&Http2Error::BadPadding {
            direction: Egress,
            stream: 1
        }]
    );
    assert!(!errors(&items)[0].is_fatal());
    let items = c.feed(Ingress, 2, &status(1, "200", true));
    assert_eq!(exchanges(&items)[0].0.body, b"ok");
}

#[test]
fn too_many_fields_are_dropped_not_fatal() {
    let mut c = Http2Connection::new(1024);
    let mut b = block(&[(":method", "GET"), (":path", "/")]);
    for i in 0..(MAX_HEADER_COUNT + 5) {
        b.extend(lit(&format!("x-{i}"), "v"));
    }
    let items = c.feed(
        Egress,
        1,
        &with_preface(&[frame(HEADERS, END_HEADERS | END_STREAM, 1, &b)]),
    );
    assert!(matches!(
        errors(&items)[..],
        [Http2Error::TooManyHeaders { stream: 1, .. }]
    ));
    let items = c.feed(Ingress, 2, &status(1, "200", true));
    let (r, _) = exchanges(&items)[0];
    // Two pseudo-header fields were among the kept ones.
    assert_eq!(r.headers.len(), MAX_HEADER_COUNT - 2);
}

#[test]
fn header_block_cap_is_fatal() {
    let mut c = Http2Connection::new(1024);
    let big = block(&[("x", &"v".repeat(MAX_HEADER_BYTES))]);
    let (a, b) = big.split_at(40_000);
    let items = c.feed(
        Egress,
        1,
        &with_preface(&[
            frame(HEADERS, 0, 1, a),
            frame(CONTINUATION, END_HEADERS, 1, b),
        ]),
    );
    assert!(matches!(
        errors(&items)[..],
        [Http2Error::HeaderBlockTooLarge { stream: 1, .. }]
    ));
    assert!(c.is_broken());
}

#[test]
fn connection_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<Http2Connection>();
    send::<Http2Item>();
}
