//! One stream's request and response under construction, and their
//! conversion to the HTTP/1 parser's `Request` and `Response`.

use crate::protocol::hpack::Field;
use crate::protocol::http1::{BODY_TAIL_CAP, Header, Headers, MAX_HEADER_COUNT, Request, Response};

/// `Request.version` / `Response.version` for HTTP/2 (HTTP/1 uses the minor
/// version there).
pub const HTTP2_VERSION: u8 = 2;

/// Per-field allowance added to name and value lengths in memory accounting.
const FIELD_OVERHEAD: usize = 64;

/// One direction of a stream: the request (egress) or the response (ingress).
#[derive(Default)]
pub(super) struct Half {
    /// The (final, for responses) header block came.
    pub started: bool,
    /// END_STREAM came.
    pub ended: bool,
    pub method: String,
    pub target: String,
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
    pub tail: Vec<u8>,
    pub body_size: u64,
    /// Body bytes did not fit in `body`.
    pub overflowed: bool,
    pub wire_size: u64,
    pub first_ts: u64,
    pub last_ts: u64,
}

impl Half {
    /// Appends DATA payload bytes; returns the bytes now retained in addition.
    pub fn append(&mut self, bytes: &[u8], cap: usize, keep_tail: bool) -> usize {
        self.body_size = self.body_size.saturating_add(bytes.len() as u64);
        let room = cap.saturating_sub(self.body.len());
        let (keep, over) = bytes.split_at(room.min(bytes.len()));
        self.body.extend_from_slice(keep);
        if over.is_empty() {
            return keep.len();
        }
        self.overflowed = true;
        if !keep_tail {
            return keep.len();
        }
        if over.len() >= BODY_TAIL_CAP {
            self.tail.clear();
            let from = over.len().saturating_sub(BODY_TAIL_CAP);
            self.tail
                .extend_from_slice(over.get(from..).unwrap_or_default());
        } else {
            self.tail.extend_from_slice(over);
            // Trim in batches so the cost per byte stays constant.
            if self.tail.len() > BODY_TAIL_CAP.saturating_mul(2) {
                let cut = self.tail.len().saturating_sub(BODY_TAIL_CAP);
                self.tail.drain(..cut);
            }
        }
        keep.len().saturating_add(over.len().min(BODY_TAIL_CAP))
    }

    /// Appends fields (trailers, or the first block); returns the bytes now
    /// retained in addition, and whether some were dropped for the count cap.
    pub fn add_fields(&mut self, fields: Vec<Header>) -> (usize, bool) {
        let room = MAX_HEADER_COUNT.saturating_sub(self.headers.len());
        let dropped = fields.len() > room;
        let mut grown = 0usize;
        for h in fields.into_iter().take(room) {
            grown = grown.saturating_add(field_mem(&h));
            self.headers.push(h);
        }
        (grown, dropped)
    }

    pub fn mem(&self) -> usize {
        self.headers
            .iter()
            .map(field_mem)
            .fold(0usize, usize::saturating_add)
            .saturating_add(self.body.len())
            .saturating_add(self.tail.len())
            .saturating_add(self.method.len())
            .saturating_add(self.target.len())
    }

    pub fn into_request(self) -> Request {
        Request {
            method: self.method,
            target: self.target,
            version: HTTP2_VERSION,
            headers: Headers(self.headers),
            body: self.body,
            body_size: self.body_size,
            body_truncated: self.overflowed || !self.ended,
            wire_size: self.wire_size,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
        }
    }

    pub fn into_response(mut self) -> Response {
        let headers = Headers(self.headers);
        let is_event_stream = headers
            .get("content-type")
            .and_then(|v| v.split(|&b| b == b';').next())
            .is_some_and(|m| m.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"));
        if self.tail.len() > BODY_TAIL_CAP {
            let cut = self.tail.len().saturating_sub(BODY_TAIL_CAP);
            self.tail.drain(..cut);
        }
        Response {
            status: self.status,
            reason: String::new(),
            version: HTTP2_VERSION,
            headers,
            body: self.body,
            body_size: self.body_size,
            body_truncated: self.overflowed || !self.ended,
            wire_size: self.wire_size,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            is_event_stream,
            chunked: false,
            body_tail: self.tail,
        }
    }
}

fn field_mem(h: &Header) -> usize {
    h.name
        .len()
        .saturating_add(h.value.len())
        .saturating_add(FIELD_OVERHEAD)
}

#[derive(Default)]
pub(super) struct Stream {
    pub req: Half,
    pub resp: Half,
    /// RST_STREAM either way, or refused by GOAWAY.
    pub reset: bool,
    /// The response ended before the request's headers were captured (the
    /// two directions' records may be reported out of order): wait for the
    /// request to end rather than report it cut.
    pub resp_before_req: bool,
}

impl Stream {
    pub fn mem(&self) -> usize {
        self.req.mem().saturating_add(self.resp.mem())
    }

    /// The exchange as it stands (the request must have started).
    pub fn into_exchange(self) -> (Request, Option<Response>) {
        let response = self.resp.started.then(|| self.resp.into_response());
        (self.req.into_request(), response)
    }
}

/// A decoded header block split into pseudo-header fields and regular ones.
#[derive(Default)]
pub(super) struct Message {
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<Vec<u8>>,
    pub status: Option<u16>,
    pub headers: Vec<Header>,
}

impl Message {
    /// `join_cookies`: RFC 9113 §8.2.3 lets a client split `cookie` into
    /// several fields; an HTTP/1.1 view must see them joined with "; ".
    pub fn from_fields(fields: Vec<Field>, join_cookies: bool) -> Self {
        let mut m = Self::default();
        let mut cookie_at: Option<usize> = None;
        for f in fields {
            if f.name.first() == Some(&b':') {
                let text = || String::from_utf8_lossy(&f.value).into_owned();
                match f.name.as_slice() {
                    b":method" => m.method = Some(text()),
                    b":path" => m.path = Some(text()),
                    b":authority" => m.authority = Some(f.value.clone()),
                    b":status" => m.status = parse_status(&f.value),
                    // :scheme, :protocol and unknown ones are not kept.
                    _ => {}
                }
                continue;
            }
            if join_cookies && f.name == b"cookie" {
                if let Some(h) = cookie_at.and_then(|i| m.headers.get_mut(i)) {
                    h.value.extend_from_slice(b"; ");
                    h.value.extend_from_slice(&f.value);
                    continue;
                }
                cookie_at = Some(m.headers.len());
            }
            m.headers.push(Header {
                name: String::from_utf8_lossy(&f.name).into_owned(),
                value: f.value,
            });
        }
        m
    }

    /// Starts a request half from this block: pseudo-headers become method
    /// and target, and `host` is synthesized from `:authority` when absent.
    pub fn into_request(self, half: &mut Half) -> (usize, bool) {
        let Self {
            method,
            path,
            authority,
            mut headers,
            ..
        } = self;
        let method = method.unwrap_or_default();
        half.target = if method == "CONNECT" {
            authority
                .as_deref()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default()
        } else {
            path.unwrap_or_default()
        };
        half.method = method;
        if let Some(authority) = authority
            && !headers.iter().any(|h| h.name.eq_ignore_ascii_case("host"))
        {
            headers.insert(
                0,
                Header {
                    name: "host".to_owned(),
                    value: authority,
                },
            );
        }
        half.started = true;
        half.add_fields(headers)
    }

    pub fn into_response(self, half: &mut Half) -> (usize, bool) {
        half.status = self.status.unwrap_or(0);
        half.started = true;
        half.add_fields(self.headers)
    }
}

/// A `:status` value: exactly three digits (RFC 9110 §15).
fn parse_status(v: &[u8]) -> Option<u16> {
    match v {
        [a, b, c] if v.iter().all(u8::is_ascii_digit) => Some(
            u16::from(a.saturating_sub(b'0'))
                .saturating_mul(100)
                .saturating_add(u16::from(b.saturating_sub(b'0')).saturating_mul(10))
                .saturating_add(u16::from(c.saturating_sub(b'0'))),
        ),
        _ => None,
    }
}
