//! Real HTTP/2 traffic: the `h2` crate's client and server talk over an
//! in-memory pipe; the client's side is recorded byte for byte (writes are
//! egress, reads are ingress) and replayed into the parser, cut at many
//! random points.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::Reason;
use sensor_common::Direction::{self, Egress, Ingress};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use super::tests::{errors, exchanges};
use super::*;

type Log = Arc<Mutex<Vec<(Direction, Vec<u8>)>>>;

/// Records what goes through the client's end of the pipe.
struct Recorder {
    inner: DuplexStream,
    log: Log,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.log.lock().unwrap().push((Ingress, new.to_vec()));
            }
        }
        r
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.log.lock().unwrap().push((Egress, buf[..*n].to_vec()));
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn text(rng: &mut Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len())] as char)
        .collect()
}

/// Every byte a header value may hold (RFC 9110 field-vchar, SP, HTAB,
/// obs-text): exercises most of the Huffman table, as `h2` Huffman-codes
/// every string.
fn all_value_bytes() -> Vec<u8> {
    let mut v = b"start".to_vec();
    v.push(b'\t');
    v.extend(0x20..=0x7eu8);
    v.extend(0x80..=0xffu8);
    v.extend_from_slice(b"end");
    v
}

type Fields = Vec<(String, Vec<u8>)>;

fn fields_of(map: &http::HeaderMap) -> Fields {
    map.iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// What one request of the scenario should look like once parsed.
#[derive(Default, Clone)]
struct Expect {
    method: &'static str,
    path: String,
    req_headers: Fields,
    req_body: Vec<u8>,
    /// None: no response headers (reset by the server).
    status: Option<u16>,
    resp_headers: Fields,
    resp_body: Vec<u8>,
    /// The response is cut (the client reset the stream).
    cut: bool,
    interim: bool,
    event_stream: bool,
    stream_id: u32,
}

pub(super) struct Scenario {
    pub(super) log: Vec<(Direction, Vec<u8>)>,
    expect: Vec<Expect>,
    /// Requests made.
    pub(super) expect_len: usize,
}

const AUTHORITY: &str = "api.example.com";
const SSE_EVENTS: usize = 6;
/// Above one 16 KiB frame once Huffman-coded (6 bits a byte).
const RESP_BIG: usize = 30_000;

async fn serve(io: DuplexStream) {
    let mut conn = h2::server::Builder::new()
        // Small table for the client's encoder: size updates and evictions
        // on egress.
        .header_table_size(512)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    while let Some(next) = conn.accept().await {
        let Ok((req, respond)) = next else { break };
        tokio::spawn(handle(req, respond));
    }
}

async fn read_all(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        got.extend_from_slice(&chunk);
    }
    got
}

fn response(status: u16, extra: &[(&str, &str)]) -> http::Response<()> {
    let mut b = http::Response::builder().status(status);
    for (n, v) in extra {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

async fn handle(req: http::Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let path = req.uri().path().to_owned();
    let mut body = req.into_body();
    match path.as_str() {
        "/reset-by-server" => {
            respond.send_reset(Reason::INTERNAL_ERROR);
        }
        "/expect" => {
            respond.send_informational(response(100, &[])).unwrap();
            let got = read_all(&mut body).await;
            let mut s = respond
                .send_response(response(200, &[("x-len", &got.len().to_string())]), false)
                .unwrap();
            s.send_data(Bytes::from(got), true).unwrap();
        }
        "/v1/models" => {
            read_all(&mut body).await;
            let pushed = http::Request::get(format!("https://{AUTHORITY}/pushed.css"))
                .body(())
                .unwrap();
            if let Ok(mut p) = respond.push_request(pushed) {
                let mut ps = p
                    .send_response(response(200, &[("content-type", "text/css")]), false)
                    .unwrap();
                ps.send_data(Bytes::from_static(b"body{}"), true).unwrap();
            }
            let mut s = respond
                .send_response(
                    response(200, &[("content-type", "application/json")]),
                    false,
                )
                .unwrap();
            s.send_data(Bytes::from_static(b"{\"data\":[{\"id\":\"m\"}]}"), true)
                .unwrap();
        }
        "/stream" => {
            read_all(&mut body).await;
            let mut s = respond
                .send_response(
                    response(
                        200,
                        &[
                            ("content-type", "text/event-stream"),
                            ("cache-control", "no-cache"),
                        ],
                    ),
                    false,
                )
                .unwrap();
            for i in 0..SSE_EVENTS {
                s.send_data(Bytes::from(format!("data: {{\"i\":{i}}}\n\n")), false)
                    .unwrap();
                tokio::task::yield_now().await;
            }
            s.send_data(Bytes::from_static(b"data: [DONE]\n\n"), true)
                .unwrap();
        }
        "/grpc.Service/Call" => {
            let got = read_all(&mut body).await;
            let mut s = respond
                .send_response(
                    response(200, &[("content-type", "application/grpc")]),
                    false,
                )
                .unwrap();
            s.send_data(Bytes::from(got), false).unwrap();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "all good".parse().unwrap());
            s.send_trailers(trailers).unwrap();
        }
        "/reset-by-client" => {
            read_all(&mut body).await;
            let mut s = respond.send_response(response(200, &[]), false).unwrap();
            s.send_data(Bytes::from_static(b"partial"), false).unwrap();
            // Never ends: the client resets the stream.
            let _ = std::future::poll_fn(|cx| s.poll_reset(cx)).await;
        }
        "/big" => {
            read_all(&mut body).await;
            let big = "r".repeat(RESP_BIG);
            let mut s = respond
                .send_response(response(200, &[("x-resp-big", &big)]), false)
                .unwrap();
            s.send_data(Bytes::from_static(b"big"), true).unwrap();
        }
        _ => {
            let got = read_all(&mut body).await;
            let mut s = respond
                .send_response(
                    response(
                        200,
                        &[
                            ("content-type", "application/json"),
                            ("x-echo-len", &got.len().to_string()),
                        ],
                    ),
                    false,
                )
                .unwrap();
            s.send_data(Bytes::from(format!("{{\"echo\":{}}}", got.len())), true)
                .unwrap();
        }
    }
}

struct Call {
    req: http::Request<()>,
    body: Vec<Vec<u8>>,
    expect: Expect,
}

fn calls(rng: &mut Rng) -> Vec<Call> {
    let mut out = Vec::new();
    let mut add = |method: &'static str,
                   path: &str,
                   headers: Vec<(&str, Vec<u8>)>,
                   body: Vec<Vec<u8>>,
                   expect: Expect| {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("https://{AUTHORITY}{path}"));
        for (n, v) in headers {
            let mut value = http::HeaderValue::from_bytes(&v).unwrap();
            if n == "authorization" {
                value.set_sensitive(true);
            }
            b = b.header(n, value);
        }
        let req = b.body(()).unwrap();
        let expect = Expect {
            method,
            path: path.to_owned(),
            req_headers: fields_of(req.headers()),
            req_body: body.concat(),
            ..expect
        };
        out.push(Call { req, body, expect });
    };
    let json = br#"{"model":"gpt-x","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    let ok = |status: u16, resp_headers: &[(&str, &str)], body: &[u8]| Expect {
        status: Some(status),
        resp_headers: resp_headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect(),
        resp_body: body.to_vec(),
        ..Expect::default()
    };
    let json_len = json.len().to_string();
    add(
        "POST",
        "/v1/chat/completions",
        vec![
            ("authorization", b"Bearer sk-secret-token".to_vec()),
            ("content-type", b"application/json".to_vec()),
            ("user-agent", b"test-client/1.0".to_vec()),
            ("cookie", b"a=1".to_vec()),
            ("cookie", b"b=2".to_vec()),
        ],
        vec![json[..10].to_vec(), json[10..].to_vec()],
        ok(
            200,
            &[
                ("content-type", "application/json"),
                ("x-echo-len", &json_len),
            ],
            format!("{{\"echo\":{}}}", json.len()).as_bytes(),
        ),
    );
    add(
        "GET",
        "/v1/models",
        vec![("authorization", b"Bearer sk-secret-token".to_vec())],
        vec![],
        ok(
            200,
            &[("content-type", "application/json")],
            b"{\"data\":[{\"id\":\"m\"}]}",
        ),
    );
    let mut sse = Vec::new();
    for i in 0..SSE_EVENTS {
        sse.extend_from_slice(format!("data: {{\"i\":{i}}}\n\n").as_bytes());
    }
    sse.extend_from_slice(b"data: [DONE]\n\n");
    add(
        "POST",
        "/stream",
        vec![("accept", b"text/event-stream".to_vec())],
        vec![b"{\"stream\":true}".to_vec()],
        Expect {
            event_stream: true,
            ..ok(
                200,
                &[
                    ("content-type", "text/event-stream"),
                    ("cache-control", "no-cache"),
                ],
                &sse,
            )
        },
    );
    let grpc_msg = b"\0\0\0\0\x05hello".to_vec();
    add(
        "POST",
        "/grpc.Service/Call",
        vec![
            ("content-type", b"application/grpc".to_vec()),
            ("te", b"trailers".to_vec()),
        ],
        vec![grpc_msg.clone()],
        ok(
            200,
            &[
                ("content-type", "application/grpc"),
                ("grpc-status", "0"),
                ("grpc-message", "all good"),
            ],
            &grpc_msg,
        ),
    );
    add("GET", "/reset-by-server", vec![], vec![], Expect::default());
    add(
        "GET",
        "/reset-by-client",
        vec![],
        vec![],
        Expect {
            cut: true,
            ..ok(200, &[], b"partial")
        },
    );
    add(
        "POST",
        "/expect",
        vec![("expect", b"100-continue".to_vec())],
        vec![b"x".repeat(3000)],
        Expect {
            interim: true,
            ..ok(200, &[("x-len", "3000")], &b"x".repeat(3000))
        },
    );
    // A header list larger than one frame: HEADERS + CONTINUATION both
    // ways; plus every byte a value may hold.
    let big = text(rng, 40_000);
    let mut many: Vec<(&str, Vec<u8>)> = vec![
        ("x-big", big.into_bytes()),
        ("x-all-bytes", all_value_bytes()),
    ];
    let names: Vec<String> = (0..60).map(|i| format!("x-h-{i}")).collect();
    for n in &names {
        many.push((n.as_str(), text(rng, 40).into_bytes()));
    }
    add(
        "GET",
        "/big",
        many,
        vec![],
        ok(200, &[("x-resp-big", &"r".repeat(RESP_BIG))], b"big"),
    );
    // Same headers again and again: the dynamic table is used and evicted.
    for i in 0..6 {
        let v = text(rng, 30 + i * 7);
        add(
            "PUT",
            &format!("/item/{i}?q={v}"),
            vec![
                ("authorization", b"Bearer sk-secret-token".to_vec()),
                ("x-request-id", v.clone().into_bytes()),
                ("content-type", b"application/json".to_vec()),
            ],
            vec![v.clone().into_bytes()],
            ok(
                200,
                &[
                    ("content-type", "application/json"),
                    ("x-echo-len", &v.len().to_string()),
                ],
                format!("{{\"echo\":{}}}", v.len()).as_bytes(),
            ),
        );
    }
    out
}

async fn run_call(mut send: h2::client::SendRequest<Bytes>, call: Call) -> Expect {
    let Call {
        req,
        body,
        mut expect,
    } = call;
    let path = expect.path.clone();
    send = send.ready().await.unwrap();
    let (resp_fut, mut stream) = send.send_request(req, body.is_empty()).unwrap();
    expect.stream_id = stream.stream_id().as_u32();
    let n = body.len();
    for (i, chunk) in body.into_iter().enumerate() {
        stream.send_data(Bytes::from(chunk), i + 1 == n).unwrap();
    }
    match path.as_str() {
        "/reset-by-server" => {
            assert!(resp_fut.await.is_err());
        }
        "/reset-by-client" => {
            let mut resp = resp_fut.await.unwrap().into_body();
            let first = resp.data().await.unwrap().unwrap();
            assert_eq!(&first[..], b"partial");
            stream.send_reset(Reason::CANCEL);
        }
        _ => {
            let resp = resp_fut.await.unwrap();
            let mut b = resp.into_body();
            let got = read_all(&mut b).await;
            assert_eq!(got, expect.resp_body, "{path}");
            let _ = b.trailers().await;
        }
    }
    expect
}

fn record(seed: u64) -> Scenario {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let log: Log = Arc::default();
        let rec = Recorder {
            inner: client_io,
            log: Arc::clone(&log),
        };
        let server = tokio::spawn(serve(server_io));
        let (send, conn) = h2::client::Builder::new()
            .header_table_size(1024)
            .enable_push(true)
            .handshake::<_, Bytes>(rec)
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut rng = Rng(seed);
        let tasks: Vec<_> = calls(&mut rng)
            .into_iter()
            .map(|call| tokio::spawn(run_call(send.clone(), call)))
            .collect();
        let mut expect = Vec::new();
        for t in tasks {
            expect.push(t.await.unwrap());
        }
        drop(send);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
        server.abort();
        let log = std::mem::take(&mut *log.lock().unwrap());
        let expect_len = expect.len();
        Scenario {
            log,
            expect,
            expect_len,
        }
    })
}

/// An independent, minimal frame scanner of one direction's bytes.
#[derive(Debug, Clone, Copy)]
struct Frame {
    start: usize,
    end: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

fn scan(bytes: &[u8], skip: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut at = skip;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let stream =
            u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]])
                & 0x7fff_ffff;
        let end = at + 9 + len;
        assert!(end <= bytes.len(), "recording ends inside a frame");
        out.push(Frame {
            start: at,
            end,
            kind: bytes[at + 3],
            flags: bytes[at + 4],
            stream,
        });
        at = end;
    }
    assert_eq!(at, bytes.len());
    out
}

/// Per stream and direction: message frame bytes, start of each header
/// block, and where the message ended (end offset of the frame that
/// completed it).
#[derive(Default, Debug)]
struct Track {
    wire: u64,
    blocks: Vec<usize>,
    end: Option<usize>,
    reset_end: Option<usize>,
}

fn track(frames: &[Frame]) -> HashMap<u32, Track> {
    let mut map: HashMap<u32, Track> = HashMap::new();
    let mut pending_end: Option<u32> = None;
    for f in frames {
        let t = map.entry(f.stream).or_default();
        match f.kind {
            0 | 1 | 9 => {
                t.wire += (f.end - f.start) as u64;
                if f.kind == 1 {
                    t.blocks.push(f.start);
                    if f.flags & 1 != 0 {
                        pending_end = Some(f.stream);
                    }
                }
                let block_done = f.kind != 0 && f.flags & 4 != 0;
                if (f.kind == 0 && f.flags & 1 != 0)
                    || (block_done && pending_end == Some(f.stream))
                {
                    t.end.get_or_insert(f.end);
                }
                if block_done {
                    pending_end = None;
                }
            }
            3 => {
                t.reset_end.get_or_insert(f.end);
            }
            _ => {}
        }
    }
    map
}

/// One way of cutting the recording into calls: `(direction, bytes, ts)`,
/// with each piece's offset in its direction's stream.
struct Piece {
    dir: Direction,
    start: usize,
    end: usize,
}

fn cut(log: &[(Direction, Vec<u8>)], rng: &mut Rng) -> Vec<Piece> {
    let max = [1, 3, 9, 64, 700, 20_000][rng.below(6)];
    let mut pieces = Vec::new();
    let mut offsets = [0usize; 2];
    for (dir, bytes) in log {
        let mut left = bytes.len();
        while left > 0 {
            let n = (1 + rng.below(max)).min(left);
            let off = &mut offsets[*dir as usize];
            pieces.push(Piece {
                dir: *dir,
                start: *off,
                end: *off + n,
            });
            *off += n;
            left -= n;
        }
    }
    pieces
}

fn ts_of(pieces: &[Piece], dir: Direction, offset: usize) -> u64 {
    pieces
        .iter()
        .position(|p| p.dir == dir && p.start <= offset && offset < p.end)
        .unwrap() as u64
}

pub(super) fn join(log: &[(Direction, Vec<u8>)], dir: Direction) -> Vec<u8> {
    log.iter()
        .filter(|(d, _)| *d == dir)
        .flat_map(|(_, b)| b.clone())
        .collect()
}

fn expected_headers(fields: &Fields, authority: bool, join_cookies: bool) -> Fields {
    let mut out: Fields = Vec::new();
    if authority {
        out.push(("host".to_owned(), AUTHORITY.as_bytes().to_vec()));
    }
    for (n, v) in fields {
        if join_cookies
            && n == "cookie"
            && let Some(c) = out.iter_mut().find(|(m, _)| m == "cookie")
        {
            c.1.extend_from_slice(b"; ");
            c.1.extend_from_slice(v);
            continue;
        }
        out.push((n.clone(), v.clone()));
    }
    out
}

fn got_headers(h: &crate::protocol::http1::Headers) -> Fields {
    h.iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

fn replay(s: &Scenario, pieces: &[Piece], body_cap: usize) -> (Vec<Http2Item>, Http2Connection) {
    let streams = [join(&s.log, Egress), join(&s.log, Ingress)];
    let mut c = Http2Connection::new(body_cap);
    let mut items = Vec::new();
    for (ts, p) in pieces.iter().enumerate() {
        items.extend(c.feed(p.dir, ts as u64, &streams[p.dir as usize][p.start..p.end]));
    }
    (items, c)
}

fn check(s: &Scenario, pieces: &[Piece], seed: u64) {
    let egress = join(&s.log, Egress);
    let ingress = join(&s.log, Ingress);
    assert!(egress.starts_with(PREFACE));
    let eg = track(&scan(&egress, PREFACE.len()));
    let ing = track(&scan(&ingress, 0));
    let (items, c) = replay(s, pieces, DEFAULT_BODY_CAP_FOR_TEST);
    assert!(
        errors(&items).is_empty(),
        "seed {seed}: {:?}",
        errors(&items)
    );
    let ex = exchanges(&items);
    assert_eq!(ex.len(), s.expect.len(), "seed {seed}");
    assert_eq!(c.open_streams(), 0);
    // Completion order: where each stream's last frame sits in the replay.
    let done_at = |e: &Expect| -> (u64, usize) {
        let id = e.stream_id;
        let (dir, end) = match e.path.as_str() {
            "/reset-by-server" => (Ingress, ing[&id].reset_end.unwrap()),
            "/reset-by-client" => (Egress, eg[&id].reset_end.unwrap()),
            _ => (Ingress, ing[&id].end.unwrap()),
        };
        (ts_of(pieces, dir, end - 1), end)
    };
    let mut order: Vec<&Expect> = s.expect.iter().collect();
    order.sort_by_key(|e| done_at(e));
    let got_order: Vec<&str> = ex.iter().map(|(r, _)| r.target.as_str()).collect();
    let want_order: Vec<&str> = order.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(got_order, want_order, "seed {seed}");

    for ((r, resp), e) in ex.iter().zip(order) {
        let id = e.stream_id;
        let ctx = format!("seed {seed} {}", e.path);
        assert_eq!(r.method, e.method, "{ctx}");
        assert_eq!(r.version, 2);
        assert_eq!(
            got_headers(&r.headers),
            expected_headers(&e.req_headers, true, true),
            "{ctx}"
        );
        assert_eq!(r.body, e.req_body, "{ctx}");
        assert_eq!(r.body_size, e.req_body.len() as u64, "{ctx}");
        assert!(!r.body_truncated, "{ctx}");
        let t = &eg[&id];
        assert_eq!(r.first_ts, ts_of(pieces, Egress, t.blocks[0]), "{ctx}");
        if e.path == "/reset-by-client" {
            assert!(r.wire_size <= t.wire);
        } else {
            assert_eq!(r.wire_size, t.wire, "{ctx}");
            assert_eq!(
                r.last_ts,
                ts_of(pieces, Egress, t.end.unwrap() - 1),
                "{ctx}"
            );
        }
        let Some(status) = e.status else {
            assert!(resp.is_none(), "{ctx}");
            continue;
        };
        let resp = resp.unwrap_or_else(|| panic!("{ctx}: no response"));
        assert_eq!(resp.status, status, "{ctx}");
        assert_eq!(
            (resp.version, resp.reason.as_str(), resp.chunked),
            (2, "", false)
        );
        assert_eq!(
            got_headers(&resp.headers),
            expected_headers(&e.resp_headers, false, false),
            "{ctx}"
        );
        assert_eq!(resp.body, e.resp_body, "{ctx}");
        assert_eq!(resp.body_size, e.resp_body.len() as u64, "{ctx}");
        assert!(resp.body_tail.is_empty());
        assert_eq!(resp.is_event_stream, e.event_stream, "{ctx}");
        assert_eq!(resp.body_truncated, e.cut, "{ctx}");
        let t = &ing[&id];
        let final_block = if e.interim { t.blocks[1] } else { t.blocks[0] };
        assert_eq!(resp.first_ts, ts_of(pieces, Ingress, final_block), "{ctx}");
        if !e.cut {
            assert_eq!(resp.wire_size, t.wire, "{ctx}");
            assert_eq!(
                resp.last_ts,
                ts_of(pieces, Ingress, t.end.unwrap() - 1),
                "{ctx}"
            );
        }
    }
    let st = c.stats();
    assert_eq!(st.exchanges, s.expect.len() as u64);
    assert_eq!(st.streams, s.expect.len() as u64);
    assert_eq!(st.errors, 0);
    assert_eq!(st.bytes_skipped, 0);
    assert!(st.resets >= 2);
}

const DEFAULT_BODY_CAP_FOR_TEST: usize = 1 << 20;

pub(super) fn scenario() -> &'static Scenario {
    static S: std::sync::OnceLock<Scenario> = std::sync::OnceLock::new();
    S.get_or_init(|| record(0x5eed))
}

#[test]
fn recording_has_what_the_test_is_about() {
    let s = scenario();
    let egress = join(&s.log, Egress);
    let ingress = join(&s.log, Ingress);
    let eg = scan(&egress, PREFACE.len());
    let ing = scan(&ingress, 0);
    let kinds = |f: &[Frame], k: u8| f.iter().filter(|f| f.kind == k).count();
    assert!(kinds(&eg, 9) > 0, "no CONTINUATION on egress");
    assert!(kinds(&ing, 9) > 0, "no CONTINUATION on ingress");
    assert!(kinds(&ing, 5) > 0, "no PUSH_PROMISE");
    assert!(
        kinds(&eg, 3) > 0 && kinds(&ing, 3) > 0,
        "RST_STREAM both ways"
    );
    // The client's encoder announced the server's small table.
    let first_block = eg.iter().find(|f| f.kind == 1).unwrap();
    assert_eq!(egress[first_block.start + 9] & 0xe0, 0x20, "no size update");
    // Several DATA frames for the event stream.
    let sse_id = s
        .expect
        .iter()
        .find(|e| e.path == "/stream")
        .unwrap()
        .stream_id;
    assert!(
        ing.iter()
            .filter(|f| f.kind == 0 && f.stream == sse_id)
            .count()
            > SSE_EVENTS
    );
}

#[test]
fn whole_recording() {
    let s = scenario();
    let pieces: Vec<Piece> = {
        let mut off = [0usize; 2];
        s.log
            .iter()
            .map(|(d, b)| {
                let o = &mut off[*d as usize];
                let p = Piece {
                    dir: *d,
                    start: *o,
                    end: *o + b.len(),
                };
                *o += b.len();
                p
            })
            .collect()
    };
    check(s, &pieces, 0);
}

#[test]
fn random_split_points() {
    let s = scenario();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for seed in 0..60 {
        let pieces = cut(&s.log, &mut rng);
        check(s, &pieces, seed);
    }
}

#[test]
fn other_recordings() {
    // Different header values (and so different Huffman and table state),
    // and a different interleaving of the concurrent streams.
    for seed in [1u64, 77, 4242] {
        let s = record(seed);
        let mut rng = Rng(seed ^ 0xdead_beef);
        for round in 0..5 {
            let pieces = cut(&s.log, &mut rng);
            check(&s, &pieces, seed * 100 + round);
        }
    }
}

#[test]
fn small_body_cap_keeps_the_tail() {
    let s = scenario();
    let mut rng = Rng(99);
    let pieces = cut(&s.log, &mut rng);
    let (items, _) = replay(s, &pieces, 8);
    let ex = exchanges(&items);
    let sse = s.expect.iter().find(|e| e.path == "/stream").unwrap();
    let (r, resp) = ex.iter().find(|(r, _)| r.target == "/stream").unwrap();
    assert_eq!(r.body, &sse.req_body[..8]);
    assert!(r.body_truncated);
    assert_eq!(r.body_size, sse.req_body.len() as u64);
    let resp = resp.unwrap();
    assert_eq!(resp.body, &sse.resp_body[..8]);
    assert_eq!(resp.body_tail, &sse.resp_body[8..]);
    assert_eq!(resp.body_size, sse.resp_body.len() as u64);
    assert!(resp.body_truncated);
}

#[test]
fn gaps_in_real_traffic() {
    let s = scenario();
    let streams = [join(&s.log, Egress), join(&s.log, Ingress)];
    let all: Vec<&str> = s.expect.iter().map(|e| e.path.as_str()).collect();
    let mut rng = Rng(7);
    for round in 0..200 {
        let pieces = cut(&s.log, &mut rng);
        let lost_at = rng.below(pieces.len());
        let mut c = Http2Connection::new(1 << 20);
        let mut items = Vec::new();
        for (ts, p) in pieces.iter().enumerate() {
            let bytes = &streams[p.dir as usize][p.start..p.end];
            if ts == lost_at {
                items.extend(c.gap(p.dir, ts as u64, bytes.len() as u64));
            } else {
                items.extend(c.feed(p.dir, ts as u64, bytes));
            }
        }
        items.extend(c.close(u64::MAX));
        let dir = pieces[lost_at].dir;
        let errs = errors(&items);
        assert!(errs.len() <= 1, "round {round}: {errs:?}");
        if let Some(e) = errs.first() {
            assert_eq!(
                **e,
                Http2Error::Desync {
                    lost: (pieces[lost_at].end - pieces[lost_at].start) as u64,
                    direction: dir
                }
            );
        }
        let mut seen: Vec<&str> = exchanges(&items)
            .iter()
            .map(|(r, _)| r.target.as_str())
            .collect();
        seen.sort_unstable();
        let before = seen.len();
        seen.dedup();
        assert_eq!(
            before,
            seen.len(),
            "round {round}: a request reported twice"
        );
        assert!(seen.iter().all(|p| all.contains(p)));
        if dir == Ingress {
            // Requests are all intact: each is reported exactly once.
            assert_eq!(seen.len(), all.len(), "round {round}");
        }
        for (r, resp) in exchanges(&items) {
            let e = s.expect.iter().find(|e| e.path == r.target).unwrap();
            assert_eq!(r.method, e.method);
            // Whatever was kept is a prefix of the truth.
            assert!(e.req_body.starts_with(&r.body), "round {round} {}", e.path);
            if let Some(resp) = resp {
                assert!(
                    e.resp_body.starts_with(&resp.body),
                    "round {round} {}",
                    e.path
                );
                assert_eq!(Some(resp.status), e.status);
            }
        }
    }
}
