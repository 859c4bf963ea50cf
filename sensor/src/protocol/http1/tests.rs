#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Functional tests: framing, keep-alive, splitting, interim responses.

use super::*;

pub(super) fn split<T>(out: Vec<Parsed<T>>) -> (Vec<T>, Vec<ParseError>) {
    let mut msgs = Vec::new();
    let mut errs = Vec::new();
    for p in out {
        match p {
            Parsed::Message(m) => msgs.push(m),
            Parsed::Error(e) => errs.push(e),
        }
    }
    (msgs, errs)
}

pub(super) const CHAT_BODY: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16}"#;

/// Request bytes as curl 8 sends them for `curl -d @body.json`.
pub(super) fn curl_request(body: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nUser-Agent: curl/8.5.0\r\n\
         Accept: */*\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-test\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Headers as openai-python (httpx) sends them.
fn httpx_request(body: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n\
         Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nUser-Agent: OpenAI/Python 1.54.4\r\n\
         X-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.54.4\r\nX-Stainless-OS: Linux\r\n\
         X-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\nX-Stainless-Runtime-Version: 3.12.3\r\n\
         Authorization: Bearer sk-proj-abc\r\nX-Stainless-Async: false\r\nx-stainless-retry-count: 0\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub(super) fn chunked_response() -> Vec<u8> {
    let mut v = b"HTTP/1.1 200 OK\r\nDate: Tue, 05 Nov 2024 10:00:00 GMT\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\
        openai-processing-ms: 312\r\nx-request-id: req_123\r\n\r\n"
        .to_vec();
    v.extend_from_slice(b"1b;ext=1\r\n{\"id\":\"chatcmpl-1\",\"model\":\r\n");
    v.extend_from_slice(b"0F\r\n\"gpt-4o-mini\"}\n\r\n");
    v.extend_from_slice(b"0\r\nx-trailer: yes\r\n\r\n");
    v
}
const CHUNKED_BODY: &[u8] = b"{\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o-mini\"}\n";

#[test]
fn curl_request_in_one_chunk() {
    let raw = curl_request(CHAT_BODY);
    let mut p = RequestParser::default();
    let (msgs, errs) = split(p.feed(7, &raw));
    assert!(errs.is_empty());
    let r = &msgs[0];
    assert_eq!(
        (r.method.as_str(), r.target.as_str(), r.version),
        ("POST", "/v1/chat/completions", 1)
    );
    assert_eq!(r.headers.get_str("host"), Some("api.openai.com"));
    assert_eq!(
        r.headers.get("CONTENT-TYPE"),
        Some(&b"application/json"[..])
    );
    assert_eq!(r.body, CHAT_BODY.as_bytes());
    assert_eq!(r.body_size, CHAT_BODY.len() as u64);
    assert!(!r.body_truncated);
    assert_eq!(r.wire_size, raw.len() as u64);
    assert_eq!((r.first_ts, r.last_ts), (7, 7));
    assert_eq!(r.headers.iter().count(), 6);
    assert_eq!(p.stats().messages, 1);
}

#[test]
fn keep_alive_requests_in_one_chunk() {
    let mut raw = httpx_request(CHAT_BODY);
    raw.extend_from_slice(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
    raw.extend_from_slice(b"\r\n"); // stray CRLF between messages is ignored
    raw.extend_from_slice(
        b"POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    raw.extend_from_slice(&curl_request("{}"));
    let mut p = RequestParser::default();
    let (msgs, errs) = split(p.feed(1, &raw));
    assert!(errs.is_empty(), "{errs:?}");
    let got: Vec<_> = msgs
        .iter()
        .map(|m| (m.method.as_str(), m.body.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("POST", CHAT_BODY.as_bytes()),
            ("GET", &b""[..]),
            ("POST", &b"abc"[..]),
            ("POST", &b"{}"[..]),
        ]
    );
    assert_eq!(msgs[0].headers.get_str("x-stainless-lang"), Some("python"));
    assert!(msgs[0].headers.has_token("connection", "Keep-Alive"));
}

#[test]
fn request_split_into_single_bytes() {
    let raw = curl_request(CHAT_BODY);
    let mut p = RequestParser::default();
    let mut msgs = Vec::new();
    for (i, b) in raw.iter().enumerate() {
        let (m, e) = split(p.feed(100 + i as u64, std::slice::from_ref(b)));
        assert!(e.is_empty());
        msgs.extend(m);
    }
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body, CHAT_BODY.as_bytes());
    assert_eq!(msgs[0].first_ts, 100);
    assert_eq!(msgs[0].last_ts, 100 + raw.len() as u64 - 1);
    assert_eq!(msgs[0].wire_size, raw.len() as u64);
}

#[test]
fn chunked_response_split_at_every_position() {
    let raw = chunked_response();
    for i in 0..=raw.len() {
        for j in i..=raw.len().min(i + 3) {
            let mut p = ResponseParser::default();
            let mut out = p.feed(1, &raw[..i]);
            out.extend(p.feed(2, &raw[i..j]));
            out.extend(p.feed(3, &raw[j..]));
            let (msgs, errs) = split(out);
            assert!(errs.is_empty(), "split {i}/{j}: {errs:?}");
            assert_eq!(msgs.len(), 1, "split {i}/{j}");
            let r = &msgs[0];
            assert_eq!(r.body, CHUNKED_BODY, "split {i}/{j}");
            assert!(r.chunked && !r.body_truncated && !r.is_event_stream);
            assert_eq!(r.wire_size, raw.len() as u64);
        }
    }
}

#[test]
fn content_length_response_and_event_stream_flag() {
    let mut p = ResponseParser::default();
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let (msgs, errs) = split(p.feed(1, raw));
    assert!(errs.is_empty());
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0].status, msgs[0].reason.as_str()), (200, "OK"));
    assert!(msgs[0].is_event_stream && !msgs[0].chunked);
    assert_eq!(msgs[0].body, b"hello");
    assert_eq!(
        (msgs[1].status, msgs[1].reason.as_str()),
        (404, "Not Found")
    );
}

#[test]
fn interim_100_continue_is_skipped() {
    let mut p = ResponseParser::default();
    p.push_request_method("POST");
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (msgs, errs) = split(p.feed(1, raw));
    assert!(errs.is_empty());
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].status, msgs[0].body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(msgs[0].wire_size, 38 + 2);
}

#[test]
fn head_204_304_have_no_body() {
    let mut p = ResponseParser::default();
    for m in ["HEAD", "GET", "GET", "GET"] {
        p.push_request_method(m);
    }
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n\
        HTTP/1.1 204 No Content\r\n\r\n\
        HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    let (msgs, errs) = split(p.feed(1, raw));
    assert!(errs.is_empty());
    let got: Vec<_> = msgs.iter().map(|m| (m.status, m.body.len())).collect();
    assert_eq!(got, vec![(200, 0), (204, 0), (304, 0), (200, 3)]);
}

#[test]
fn read_until_close() {
    let mut p = ResponseParser::default();
    let (msgs, _) = split(p.feed(1, b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\npart1 "));
    assert!(msgs.is_empty());
    assert!(p.feed(2, b"part2").is_empty());
    let (msgs, errs) = split(p.close(3));
    assert!(errs.is_empty());
    assert_eq!(msgs[0].body, b"part1 part2");
    assert_eq!(
        (msgs[0].version, msgs[0].body_truncated, msgs[0].last_ts),
        (0, false, 2)
    );
    assert!(msgs[0].headers.has_token("connection", "close"));
}

#[test]
fn non_chunked_transfer_coding_response_reads_until_close() {
    let mut p = ResponseParser::default();
    p.feed(
        1,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nabcdef",
    );
    let (msgs, _) = split(p.close(2));
    assert_eq!(msgs[0].body, b"abcdef");
}

#[test]
fn close_mid_body_returns_truncated_message() {
    let mut p = RequestParser::default();
    assert!(
        p.feed(1, b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
            .is_empty()
    );
    let (msgs, errs) = split(p.close(2));
    assert!(errs.is_empty());
    assert!(msgs[0].body_truncated);
    assert_eq!(msgs[0].body, b"abc");
    // Incomplete headers at close are an error, and the parser is reusable.
    p.feed(3, b"GET / HTTP/1.1\r\nHost");
    let (msgs, errs) = split(p.close(4));
    assert!(msgs.is_empty());
    assert!(matches!(errs[..], [ParseError::IncompleteHead { .. }]));
    let (msgs, _) = split(p.feed(5, b"GET / HTTP/1.1\r\n\r\n"));
    assert_eq!(msgs.len(), 1);
}

#[test]
fn connect_and_upgrade_switch_to_tunnel() {
    let mut p = ResponseParser::default();
    p.push_request_method("CONNECT");
    let (msgs, _) = split(p.feed(
        1,
        b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01 HTTP/1.1 200 OK\r\n\r\n",
    ));
    assert_eq!(msgs.len(), 1);
    assert!(
        p.feed(2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_empty()
    );
    assert!(p.stats().tunnel_bytes > 0);

    let mut p = ResponseParser::default();
    let (msgs, _) = split(p.feed(
        1,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
    ));
    assert_eq!(msgs[0].status, 101);
    assert_eq!(p.stats().errors, 0);

    let mut q = RequestParser::default();
    let (msgs, _) = split(q.feed(
        1,
        b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n\x16\x03\x01",
    ));
    assert_eq!(msgs[0].method, "CONNECT");
    assert_eq!(q.stats().errors, 0);
}

#[test]
fn conflicting_content_length_is_an_error_then_resync() {
    let mut p = RequestParser::default();
    let raw = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcdGET /b HTTP/1.1\r\n\r\n";
    let (msgs, errs) = split(p.feed(1, raw));
    assert!(matches!(errs[..], [ParseError::BadContentLength { .. }]));
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].target, "/b");
    assert_eq!(p.stats().bytes_skipped, 4);
}

#[test]
fn bad_transfer_encoding_in_request() {
    let mut p = RequestParser::default();
    let (_, errs) = split(p.feed(1, b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"));
    assert!(matches!(errs[..], [ParseError::BadTransferEncoding { .. }]));
}

#[test]
fn chunked_wins_over_content_length() {
    let mut p = RequestParser::default();
    let raw = b"POST /a HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    let (msgs, errs) = split(p.feed(1, raw));
    assert!(errs.is_empty());
    assert_eq!(msgs[0].body, b"hi");
}

#[test]
fn obs_fold_is_joined_and_bare_lf_accepted() {
    let mut p = RequestParser::default();
    let raw = b"GET / HTTP/1.1\nX-Long: a\n  b\n\tc\nHost:x\n\n";
    let (msgs, errs) = split(p.feed(1, raw));
    assert!(errs.is_empty());
    assert_eq!(msgs[0].headers.get("x-long"), Some(&b"a b c"[..]));
    assert_eq!(msgs[0].headers.get("host"), Some(&b"x"[..]));
}

#[test]
fn bad_header_lines() {
    for raw in [
        &b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded-first\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
    ] {
        let mut p = RequestParser::default();
        let (msgs, errs) = split(p.feed(1, raw));
        assert!(msgs.is_empty());
        assert!(
            matches!(errs[..], [ParseError::BadHeader { .. }]),
            "{errs:?}"
        );
    }
}

#[test]
fn body_cap_and_response_tail() {
    let body: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    raw.extend_from_slice(&body);
    let mut p = ResponseParser::new(1000);
    let mut msgs = Vec::new();
    for c in raw.chunks(777) {
        msgs.extend(split(p.feed(1, c)).0);
        assert!(p.buffered_bytes() <= 1000 + 2 * BODY_TAIL_CAP + MAX_HEADER_BYTES);
    }
    let r = &msgs[0];
    assert_eq!(r.body, &body[..1000]);
    assert_eq!(r.body_size, 100_000);
    assert!(r.body_truncated);
    assert_eq!(r.body_tail, &body[body.len() - BODY_TAIL_CAP..]);

    // Requests keep no tail; contiguous tail when the overflow is small.
    let mut q = RequestParser::new(4);
    let (m, _) = split(q.feed(1, b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nabcdef"));
    assert_eq!(
        (m[0].body.as_slice(), m[0].body_size, m[0].body_truncated),
        (&b"abcd"[..], 6, true)
    );
    let mut p = ResponseParser::new(4);
    let (m, _) = split(p.feed(1, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef"));
    assert_eq!(m[0].body_tail, b"ef");
}

#[test]
fn version_and_status_variants() {
    let mut p = ResponseParser::default();
    let (m, e) = split(p.feed(
        1,
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\nHTTP/1.1 500 \r\nContent-Length: 0\r\n\r\n",
    ));
    assert!(e.is_empty());
    assert_eq!(
        (m[0].status, m[0].reason.as_str(), m[1].status),
        (200, "", 500)
    );
    let mut q = RequestParser::default();
    let (m, e) = split(q.feed(1, b"GET http://example.com/v1/x?y=1 HTTP/1.0\r\n\r\n"));
    assert!(e.is_empty());
    assert_eq!(
        (m[0].target.as_str(), m[0].version),
        ("http://example.com/v1/x?y=1", 0)
    );
}

#[test]
fn too_many_headers() {
    let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADER_COUNT {
        raw.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    let mut p = RequestParser::default();
    let (_, errs) = split(p.feed(1, &raw));
    assert!(matches!(errs[..], [ParseError::TooManyHeaders { .. }]));
}
