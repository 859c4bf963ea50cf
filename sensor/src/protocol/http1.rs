//! Incremental HTTP/1.x parser for one direction of a captured connection.
//!
//! Input is the plaintext of individual `SSL_write`/`SSL_read` calls, which may
//! split messages anywhere, hold several keep-alive messages, or be cut short by
//! the kernel capture (reported through `gap`). The parser therefore never trusts
//! its input: every buffer is capped, malformed data yields one error and a
//! resynchronisation scan, and nothing here can panic.
//!
//! Leniencies (all deliberate, because we observe traffic rather than serve it):
//! * bare `LF` line endings are accepted alongside `CRLF`;
//! * obs-fold continuation lines are joined to the previous header with a single
//!   space, as RFC 9112 §5.2 allows a recipient to do;
//! * empty lines before a start line are skipped (RFC 9112 §2.2);
//! * when both `Transfer-Encoding: chunked` and `Content-Length` are present,
//!   chunked wins (RFC 9112 §6.3) instead of rejecting the message.

mod machine;
mod syntax;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_robust;

use machine::{Event, Machine, Partial, Side};
use syntax::StartLine;

/// Bytes of decoded body kept for JSON parsing.
pub const DEFAULT_BODY_CAP: usize = 256 * 1024;
/// A header block (start line included) larger than this is an error.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// More header fields than this is an error (bounds per-message allocations).
pub const MAX_HEADER_COUNT: usize = 512;
/// Bytes kept from the end of a response body that overflowed `body_cap`, so
/// the final SSE events (which carry token usage) survive long streams.
pub const BODY_TAIL_CAP: usize = 32 * 1024;

#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name as sent (case preserved).
    pub name: String,
    /// Field value with surrounding whitespace removed.
    pub value: Vec<u8>,
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

/// Header values carry credentials and cookies: a `Debug` print shows the
/// name and the value's length only, so no stray log line can leak them.
impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: <{} bytes>", self.name, self.value.len())
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl Headers {
    /// First value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// First value of `name` if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Whether any comma-separated element of any `name` field equals `token`
    /// (case-insensitive), e.g. `has_token("connection", "close")`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `Debug` leaves out bodies (prompts and completions are not logged) and
/// the query string (which may carry keys).
#[derive(Clone)]
pub struct Request {
    pub method: String,
    /// Raw request-target (origin-form, absolute-form, ...).
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Headers,
    /// Decoded (de-chunked) body, at most `body_cap` bytes.
    pub body: Vec<u8>,
    /// Full decoded body length seen, bytes lost in gaps included.
    pub body_size: u64,
    /// `body_size > body.len()`, or bytes were missing in the capture, or the
    /// connection closed before the body was complete.
    pub body_truncated: bool,
    /// Header plus body bytes on the wire (chunk framing and gaps included).
    pub wire_size: u64,
    pub first_ts: u64,
    pub last_ts: u64,
}

/// `Debug` leaves out bodies.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub version: u8,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub body_size: u64,
    pub body_truncated: bool,
    pub wire_size: u64,
    pub first_ts: u64,
    pub last_ts: u64,
    /// `Content-Type: text/event-stream`.
    pub is_event_stream: bool,
    pub chunked: bool,
    /// Last (at most `BODY_TAIL_CAP`) decoded body bytes that did not fit in
    /// `body`. Empty unless the body overflowed `body_cap`. It is contiguous
    /// with `body` exactly when `body.len() + body_tail.len() == body_size`
    /// and no gap occurred.
    pub body_tail: Vec<u8>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("bad start line: {line:?}")]
    BadStartLine { line: String },
    #[error("header block larger than {limit} bytes")]
    HeaderTooLarge { limit: usize },
    #[error("more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("bad header line: {line:?}")]
    BadHeader { line: String },
    #[error("bad chunk size line: {line:?}")]
    BadChunkSize { line: String },
    #[error("expected CRLF after chunk data, found byte {found:#04x}")]
    BadChunkTerminator { found: u8 },
    #[error("bad or conflicting Content-Length: {value:?}")]
    BadContentLength { value: String },
    #[error("unsupported Transfer-Encoding in request: {value:?}")]
    BadTransferEncoding { value: String },
    #[error("capture lost {lost} bytes outside a length-delimited body ({context})")]
    Desync { lost: u64, context: &'static str },
    #[error("connection closed with {buffered} bytes of an incomplete header block")]
    IncompleteHead { buffered: usize },
}

#[derive(Debug, Clone)]
pub enum Parsed<T> {
    Message(T),
    Error(ParseError),
}

/// Counters for observability of one parser.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserStats {
    pub messages: u64,
    pub errors: u64,
    /// Bytes discarded while looking for the next start line.
    pub bytes_skipped: u64,
    /// Bytes reported lost through `gap`.
    pub gap_bytes: u64,
    /// Bytes ignored after a protocol switch (CONNECT, 101).
    pub tunnel_bytes: u64,
}

/// Parser for the client-to-server direction.
pub struct RequestParser {
    m: Machine,
}

impl RequestParser {
    pub fn new(body_cap: usize) -> Self {
        Self {
            m: Machine::new(Side::Request, body_cap),
        }
    }

    /// Feed one captured chunk; returns every message completed by it.
    pub fn feed(&mut self, ts: u64, data: &[u8]) -> Vec<Parsed<Request>> {
        convert(self.m.feed(ts, data), into_request)
    }

    /// The capture lost `n` bytes at this point of the stream.
    pub fn gap(&mut self, ts: u64, n: u64) -> Vec<Parsed<Request>> {
        convert(self.m.gap(ts, n), into_request)
    }

    /// The connection closed; returns what was pending. The parser is reset.
    pub fn close(&mut self, ts: u64) -> Vec<Parsed<Request>> {
        convert(self.m.close(ts), into_request)
    }

    /// Stop parsing: the connection switched protocols (e.g. the peer answered
    /// `101 Switching Protocols`). Later bytes are only counted.
    pub fn enter_tunnel(&mut self) {
        self.m.enter_tunnel();
    }

    pub fn stats(&self) -> ParserStats {
        self.m.stats()
    }

    /// Bytes currently held by the parser (for memory accounting).
    pub fn buffered_bytes(&self) -> usize {
        self.m.buffered_bytes()
    }
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new(DEFAULT_BODY_CAP)
    }
}

/// Parser for the server-to-client direction.
pub struct ResponseParser {
    m: Machine,
}

impl ResponseParser {
    pub fn new(body_cap: usize) -> Self {
        Self {
            m: Machine::new(Side::Response(Default::default()), body_cap),
        }
    }

    pub fn feed(&mut self, ts: u64, data: &[u8]) -> Vec<Parsed<Response>> {
        convert(self.m.feed(ts, data), into_response)
    }

    pub fn gap(&mut self, ts: u64, n: u64) -> Vec<Parsed<Response>> {
        convert(self.m.gap(ts, n), into_response)
    }

    /// The connection closed: a close-delimited body ends normally here.
    pub fn close(&mut self, ts: u64) -> Vec<Parsed<Response>> {
        convert(self.m.close(ts), into_response)
    }

    /// Method of the next request on this connection, in order (FIFO). Without
    /// it, every response is assumed to answer a request that allows a body.
    pub fn push_request_method(&mut self, method: &str) {
        self.m.push_method(method);
    }

    pub fn enter_tunnel(&mut self) {
        self.m.enter_tunnel();
    }

    pub fn stats(&self) -> ParserStats {
        self.m.stats()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.m.buffered_bytes()
    }
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new(DEFAULT_BODY_CAP)
    }
}

fn convert<T>(events: Vec<Event>, f: fn(Partial) -> Option<T>) -> Vec<Parsed<T>> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Msg(p) => f(*p).map(Parsed::Message),
            Event::Err(e) => Some(Parsed::Error(e)),
        })
        .collect()
}

fn into_request(p: Partial) -> Option<Request> {
    let StartLine::Request {
        method,
        target,
        version,
    } = p.start
    else {
        return None;
    };
    Some(Request {
        method,
        target,
        version,
        headers: p.headers,
        body: p.body,
        body_size: p.body_size,
        body_truncated: p.truncated,
        wire_size: p.wire_size,
        first_ts: p.first_ts,
        last_ts: p.last_ts,
    })
}

fn into_response(p: Partial) -> Option<Response> {
    let StartLine::Status {
        version,
        status,
        reason,
    } = p.start
    else {
        return None;
    };
    let is_event_stream = p
        .headers
        .get("content-type")
        .and_then(|v| v.split(|&b| b == b';').next())
        .is_some_and(|m| m.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"));
    Some(Response {
        status,
        reason,
        version,
        headers: p.headers,
        body: p.body,
        body_size: p.body_size,
        body_truncated: p.truncated,
        wire_size: p.wire_size,
        first_ts: p.first_ts,
        last_ts: p.last_ts,
        is_event_stream,
        chunked: p.chunked,
        body_tail: p.tail,
    })
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.target.split('?').next().unwrap_or_default();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &path)
            .field("headers", &self.headers)
            .field("body_size", &self.body_size)
            .field("body_truncated", &self.body_truncated)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_size", &self.body_size)
            .field("body_truncated", &self.body_truncated)
            .field("is_event_stream", &self.is_event_stream)
            .finish_non_exhaustive()
    }
}
