#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Robustness tests: gaps, oversized headers, noise and resync, fuzzing.

use super::tests::{CHAT_BODY, chunked_response, curl_request, split};
use super::*;

/// Deterministic xorshift64 so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn gap_inside_content_length_body() {
    let mut p = RequestParser::default();
    assert!(
        p.feed(1, b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
            .is_empty()
    );
    assert!(p.gap(2, 4).is_empty());
    let (msgs, errs) = split(p.feed(3, b"hijGET /next HTTP/1.1\r\n\r\n"));
    assert!(errs.is_empty());
    assert_eq!(msgs.len(), 2);
    let r = &msgs[0];
    assert_eq!(
        (r.body.as_slice(), r.body_size, r.body_truncated),
        (&b"abchij"[..], 10, true)
    );
    assert_eq!(r.last_ts, 3);
    assert_eq!(msgs[1].target, "/next");
    assert_eq!(p.stats().gap_bytes, 4);
}

#[test]
fn gap_ending_a_body_exactly_completes_it() {
    let mut p = RequestParser::default();
    p.feed(1, b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    let (msgs, errs) = split(p.gap(2, 7));
    assert!(errs.is_empty());
    assert_eq!((msgs[0].body_size, msgs[0].body_truncated), (10, true));
    let (msgs, _) = split(p.feed(3, b"GET / HTTP/1.1\r\n\r\n"));
    assert_eq!(msgs.len(), 1);
}

#[test]
fn gap_past_body_end_desyncs() {
    let mut p = RequestParser::default();
    p.feed(1, b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
    let (msgs, errs) = split(p.gap(2, 50));
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        errs,
        vec![ParseError::Desync {
            lost: 47,
            context: "after the body"
        }]
    );
    // Mid-message leftovers are skipped until the next request line.
    let (msgs, errs) = split(p.feed(
        3,
        b"tail of something\r\nPOST /y HTTP/1.1\r\nContent-Length: 1\r\n\r\nz",
    ));
    assert!(errs.is_empty());
    assert_eq!(msgs[0].target, "/y");
}

#[test]
fn gap_inside_chunk_data_and_framing() {
    let raw = chunked_response();
    let split_at = raw.windows(7).position(|w| w == b"chatcmp").unwrap();
    let mut p = ResponseParser::default();
    p.feed(1, &raw[..split_at]);
    assert!(p.gap(2, 3).is_empty());
    let (msgs, errs) = split(p.feed(3, &raw[split_at + 3..]));
    assert!(errs.is_empty());
    assert!(msgs[0].body_truncated);
    assert_eq!(msgs[0].body_size, 42);
    assert_eq!(msgs[0].body.len(), 39);

    // Losing a chunk-size line makes the body end unknowable.
    let at = raw.windows(4).position(|w| w == b"0F\r\n").unwrap();
    let mut p = ResponseParser::default();
    p.feed(1, &raw[..at]);
    let (msgs, errs) = split(p.gap(2, 4));
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].body_truncated);
    assert!(matches!(
        errs[..],
        [ParseError::Desync {
            context: "chunk framing",
            ..
        }]
    ));
}

#[test]
fn gap_inside_headers_then_resync() {
    let mut p = RequestParser::default();
    p.feed(1, b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.op");
    let (msgs, errs) = split(p.gap(2, 100));
    assert!(msgs.is_empty());
    assert!(matches!(
        errs[..],
        [ParseError::Desync {
            lost: 100,
            context: "header block"
        }]
    ));
    // Rest of the lost request's body, then a fresh request in the next write.
    let mut rest = b"\"max_tokens\":5}".to_vec();
    rest.extend_from_slice(&curl_request(CHAT_BODY));
    let (msgs, errs) = split(p.feed(3, &rest));
    assert!(errs.is_empty());
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body, CHAT_BODY.as_bytes());
    // A gap while already resynchronising reports nothing new.
    let mut q = RequestParser::default();
    q.gap(1, 5);
    assert!(q.gap(2, 5).is_empty());
    assert_eq!(q.stats().errors, 1);
}

#[test]
fn giant_header_then_resync() {
    let mut raw = b"GET /big HTTP/1.1\r\nX-Big: ".to_vec();
    raw.extend(std::iter::repeat_n(b'x', MAX_HEADER_BYTES + 10));
    raw.extend_from_slice(b"\r\n\r\n");
    let mut p = RequestParser::default();
    let mut errs = Vec::new();
    for c in raw.chunks(4096) {
        errs.extend(split(p.feed(1, c)).1);
        assert!(p.buffered_bytes() <= MAX_HEADER_BYTES);
    }
    assert_eq!(
        errs,
        vec![ParseError::HeaderTooLarge {
            limit: MAX_HEADER_BYTES
        }]
    );
    let (msgs, errs) = split(p.feed(2, &curl_request(CHAT_BODY)));
    assert!(errs.is_empty());
    assert_eq!(msgs.len(), 1);

    // Same in one chunk, with the next request glued on.
    let mut p = RequestParser::default();
    raw.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
    let (msgs, errs) = split(p.feed(1, &raw));
    assert_eq!(errs.len(), 1);
    assert_eq!(msgs[0].target, "/after");

    // An endless start line is bounded too.
    let mut p = ResponseParser::default();
    let mut line = b"HTTP/1.1 200 ".to_vec();
    line.extend(std::iter::repeat_n(b'r', 200_000));
    let (_, errs) = split(p.feed(1, &line));
    assert_eq!(errs.len(), 1);
    assert!(p.buffered_bytes() < MAX_HEADER_BYTES);
}

#[test]
fn noise_glued_to_start_line_yields_one_error() {
    let mut p = RequestParser::default();
    let mut raw = b"\x00\x17\xffgarbage GET GETX POST".to_vec();
    raw.extend_from_slice(&curl_request(CHAT_BODY));
    let (msgs, errs) = split(p.feed(1, &raw));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(matches!(errs[0], ParseError::BadStartLine { .. }));
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body, CHAT_BODY.as_bytes());
    assert_eq!(p.stats().bytes_skipped, 24);

    let mut p = ResponseParser::default();
    let (msgs, errs) = split(p.feed(
        1,
        b"\x16\x03\x03junkHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA",
    ));
    assert_eq!((errs.len(), msgs.len()), (1, 1));
}

#[test]
fn resync_pattern_straddling_chunks() {
    let mut noise = b"\x01\x02\x03 noise noise PO".to_vec();
    let k = noise.len() - 2;
    noise.extend_from_slice(b"ST /v1/messages HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
    for cut in 0..8 {
        let mut p = RequestParser::default();
        let at = k - 4 + cut;
        let mut out = p.feed(1, &noise[..at]);
        for b in &noise[at..at + 4] {
            out.extend(p.feed(2, std::slice::from_ref(b)));
        }
        out.extend(p.feed(3, &noise[at + 4..]));
        let (msgs, errs) = split(out);
        assert_eq!(errs.len(), 1, "cut {cut}");
        assert_eq!(msgs.len(), 1, "cut {cut}");
        assert_eq!(msgs[0].target, "/v1/messages");
    }
}

#[test]
fn bad_chunk_framing_keeps_message_and_resyncs() {
    let mut p = ResponseParser::default();
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\nHTTP/1.1 204 No Content\r\n\r\n";
    let (msgs, errs) = split(p.feed(1, raw));
    assert!(matches!(
        errs[..],
        [ParseError::BadChunkTerminator { found: b'X' }]
    ));
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].body_truncated);
    assert_eq!(msgs[1].status, 204);
    let mut p = ResponseParser::default();
    let (_, errs) = split(p.feed(
        1,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ));
    assert!(matches!(errs[..], [ParseError::BadChunkSize { .. }]));
}

#[test]
fn long_streams_stay_bounded() {
    let mut p = ResponseParser::new(4096);
    p.feed(
        1,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let event = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    let chunk = [format!("{:x}\r\n", event.len()).as_bytes(), event, b"\r\n"].concat();
    for _ in 0..50_000 {
        assert!(p.feed(2, &chunk).is_empty());
    }
    assert!(p.buffered_bytes() <= 4096 + 2 * BODY_TAIL_CAP);
    let (msgs, _) = split(p.feed(3, b"0\r\n\r\n"));
    assert_eq!(msgs[0].body_size, 50_000 * event.len() as u64);
    assert_eq!(msgs[0].body_tail.len(), BODY_TAIL_CAP);
    assert!(msgs[0].body_tail.ends_with(event));
}

/// Worst case held by a parser: a header block, a body, a tail, a chunk line.
fn bound(cap: usize) -> usize {
    MAX_HEADER_BYTES + cap + 2 * BODY_TAIL_CAP + 4096 + 8
}

#[test]
fn random_noise_never_panics_and_stays_bounded() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for iter in 0..10_000 {
        let mut req = RequestParser::new(1024);
        let mut resp = ResponseParser::new(1024);
        let len = rng.below(4096);
        let data = rng.bytes(len);
        let mut pos = 0;
        let mut errors = 0;
        let mut messages = 0;
        while pos < data.len() {
            let n = 1 + rng.below(600);
            let chunk = &data[pos..data.len().min(pos + n)];
            pos += n;
            let (m, e) = split(req.feed(1, chunk));
            messages += m.len();
            errors += e.len();
            let (m, e) = split(resp.feed(1, chunk));
            messages += m.len();
            errors += e.len();
            if rng.below(8) == 0 {
                errors += req.gap(2, rng.below(100) as u64).len();
                errors += resp.gap(2, rng.below(100) as u64).len();
            }
            assert!(req.buffered_bytes() <= bound(1024));
            assert!(resp.buffered_bytes() <= bound(1024));
        }
        req.close(3);
        resp.close(3);
        // Pure noise: one error per parser at most (one resync each).
        assert_eq!(messages, 0, "iteration {iter}");
        assert!(errors <= 2, "iteration {iter}: {errors} errors");
    }
}

#[test]
fn mutated_http_never_panics_and_stays_bounded() {
    let mut rng = Rng(42);
    let mut corpus = curl_request(CHAT_BODY);
    corpus.extend_from_slice(b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut responses = chunked_response();
    responses.extend_from_slice(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    );
    for _ in 0..10_000 {
        for (is_req, base) in [(true, &corpus), (false, &responses)] {
            let mut data = base.clone();
            for _ in 0..rng.below(6) {
                if data.is_empty() {
                    break;
                }
                let i = rng.below(data.len());
                match rng.below(3) {
                    0 => data[i] = rng.next() as u8,
                    1 => drop(data.drain(i..data.len().min(i + rng.below(20)))),
                    _ => {
                        let n = rng.below(20);
                        data.splice(i..i, rng.bytes(n)).for_each(drop)
                    }
                }
            }
            let cap = 16 + rng.below(64);
            let mut req = RequestParser::new(cap);
            let mut resp = ResponseParser::new(cap);
            let mut pos = 0;
            while pos < data.len() {
                let n = 1 + rng.below(64);
                let chunk = &data[pos..data.len().min(pos + n)];
                pos += n;
                if is_req {
                    req.feed(pos as u64, chunk);
                    assert!(req.buffered_bytes() <= bound(cap));
                } else {
                    resp.push_request_method(["GET", "HEAD", "POST"][rng.below(3)]);
                    resp.feed(pos as u64, chunk);
                    assert!(resp.buffered_bytes() <= bound(cap));
                }
                if rng.below(16) == 0 {
                    req.gap(0, rng.below(40) as u64);
                    resp.gap(0, rng.below(40) as u64);
                }
            }
            req.close(0);
            resp.close(0);
        }
    }
}
