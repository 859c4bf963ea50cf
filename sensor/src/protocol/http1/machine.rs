//! The per-direction state machine shared by the request and response parsers.
//!
//! Invariants that keep memory bounded whatever is fed:
//! * `buf` only ever holds one header block, at most `MAX_HEADER_BYTES`;
//! * a body keeps at most `body_cap` bytes plus `2 * BODY_TAIL_CAP` of tail;
//! * a chunk-size line keeps at most `MAX_CHUNK_LINE` bytes;
//! * the resync carry-over is shorter than the longest pattern;
//! * the pending-method queue holds at most `MAX_PENDING_METHODS` entries.

use std::collections::VecDeque;

use memchr::memchr;

mod body;

use super::syntax::{self, MAX_PATTERN_LEN, StartLine, TransferCoding};
use super::{BODY_TAIL_CAP, Headers, MAX_HEADER_BYTES, ParseError, ParserStats};

/// Chunk-size line including extensions; real ones are a few bytes.
const MAX_CHUNK_LINE: usize = 4096;
/// Pipelined requests whose responses are still pending; beyond this the
/// oldest are forgotten (the queue is then out of step anyway).
const MAX_PENDING_METHODS: usize = 1024;
/// An incomplete start line is vetted on its first bytes only, so noise is
/// rejected early without re-checking a growing line on every chunk.
const PREFIX_CHECK_LEN: usize = 64;
/// Give back the header buffer's allocation once it grew past this, so idle
/// keep-alive connections do not each pin 64 KiB.
const SHRINK_ABOVE: usize = 16 * 1024;

/// A message under construction.
pub(crate) struct Partial {
    pub(super) start: StartLine,
    pub(super) headers: Headers,
    pub(super) body: Vec<u8>,
    pub(super) tail: Vec<u8>,
    pub(super) body_size: u64,
    pub(super) truncated: bool,
    pub(super) wire_size: u64,
    pub(super) first_ts: u64,
    pub(super) last_ts: u64,
    pub(super) chunked: bool,
}

pub(crate) enum Event {
    Msg(Box<Partial>),
    Err(ParseError),
}

pub(crate) enum Side {
    Request,
    /// Methods of requests whose responses have not been parsed yet.
    Response(VecDeque<String>),
}

#[derive(Clone, Copy, Default)]
struct HeadState {
    first_ts: u64,
    /// The start line is complete and valid.
    line1_done: bool,
    /// Where the search for the blank line ending the block resumes.
    scan_from: usize,
    /// This head began at a resync candidate: a bad start line is a false
    /// candidate, not a new error, so scanning silently goes on.
    from_resync: bool,
}

enum Chunk {
    Size(Vec<u8>),
    Data(u64),
    DataEnd {
        got_cr: bool,
    },
    Trailers {
        line_has_content: bool,
        total: usize,
    },
}

enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

struct BodyState {
    msg: Partial,
    framing: Framing,
    then_tunnel: bool,
}

enum State {
    Head(HeadState),
    Body(Box<BodyState>),
    /// Scanning for a start line; holds the carry-over of the last chunk.
    Resync(Vec<u8>),
    Tunnel,
}

/// What the head of a message implies for what follows it.
enum Plan {
    /// Interim (1xx) response: drop it and wait for the final one.
    Skip,
    Done {
        tunnel: bool,
    },
    Body {
        framing: Framing,
        tunnel: bool,
    },
}

enum Step {
    Continue,
    Done,
    Fail(ParseError),
}

pub(crate) struct Machine {
    side: Side,
    body_cap: usize,
    state: State,
    buf: Vec<u8>,
    stats: ParserStats,
}

impl Machine {
    pub(crate) fn new(side: Side, body_cap: usize) -> Self {
        Self {
            side,
            body_cap,
            state: State::Head(HeadState::default()),
            buf: Vec::new(),
            stats: ParserStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> ParserStats {
        self.stats
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        let state = match &self.state {
            State::Body(bs) => {
                let line = match &bs.framing {
                    Framing::Chunked(Chunk::Size(l)) => l.len(),
                    _ => 0,
                };
                bs.msg.body.len() + bs.msg.tail.len() + line
            }
            State::Resync(t) => t.len(),
            State::Head(_) | State::Tunnel => 0,
        };
        self.buf.len() + state
    }

    pub(crate) fn push_method(&mut self, method: &str) {
        if let Side::Response(q) = &mut self.side {
            if q.len() >= MAX_PENDING_METHODS {
                q.pop_front();
            }
            q.push_back(method.to_owned());
        }
    }

    pub(crate) fn enter_tunnel(&mut self) {
        self.buf.clear();
        self.state = State::Tunnel;
    }

    fn is_request(&self) -> bool {
        matches!(self.side, Side::Request)
    }

    fn line_ok(&self, line: &[u8], complete: bool) -> bool {
        if self.is_request() {
            syntax::request_line_ok(line, complete)
        } else {
            syntax::status_line_ok(line, complete)
        }
    }

    fn find_candidate(&self, hay: &[u8]) -> Option<usize> {
        if self.is_request() {
            syntax::find_request_candidate(hay)
        } else {
            syntax::find_status_candidate(hay)
        }
    }

    pub(crate) fn feed(&mut self, ts: u64, data: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut rest = data;
        let mut stalled = 0u8;
        while !rest.is_empty() {
            let used = self.step(ts, rest, &mut out);
            // Every state consumes input or moves to one that will; this guard
            // only turns a logic slip into dropped bytes instead of a hang.
            if used == 0 {
                stalled += 1;
                if stalled > 4 {
                    self.stats.bytes_skipped =
                        self.stats.bytes_skipped.saturating_add(rest.len() as u64);
                    break;
                }
            } else {
                stalled = 0;
            }
            rest = rest.get(used..).unwrap_or_default();
        }
        out
    }

    fn step(&mut self, ts: u64, data: &[u8], out: &mut Vec<Event>) -> usize {
        match std::mem::replace(&mut self.state, State::Tunnel) {
            State::Head(hs) if hs.line1_done => self.head_step(ts, hs, data, out),
            State::Head(hs) => self.line1_step(ts, hs, data, out),
            State::Body(bs) => self.body_step(ts, bs, data, out),
            State::Resync(tail) => self.resync_step(ts, tail, data),
            State::Tunnel => {
                self.stats.tunnel_bytes = self.stats.tunnel_bytes.saturating_add(data.len() as u64);
                data.len()
            }
        }
    }

    /// Accumulate the start line (only up to its LF, so a rejected line never
    /// swallows bytes that may hold the next message) and vet it.
    fn line1_step(
        &mut self,
        ts: u64,
        mut hs: HeadState,
        data: &[u8],
        out: &mut Vec<Event>,
    ) -> usize {
        if self.buf.is_empty() {
            let blank = data
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                self.state = State::Head(hs);
                return blank;
            }
            hs.first_ts = ts;
        }
        let old = self.buf.len();
        let room = MAX_HEADER_BYTES.saturating_sub(old);
        let take = memchr(b'\n', data).map_or(data.len(), |i| i + 1).min(room);
        self.buf
            .extend_from_slice(data.get(..take).unwrap_or_default());
        if self.buf.last() == Some(&b'\n') {
            if self.line_ok(syntax::strip_eol(&self.buf), true) {
                hs.line1_done = true;
                hs.scan_from = self.buf.len().saturating_sub(1);
                self.state = State::Head(hs);
            } else {
                self.bad_start(ts, hs, out);
            }
        } else if self.buf.len() >= MAX_HEADER_BYTES {
            self.head_too_large(hs, out);
        } else if old < PREFIX_CHECK_LEN {
            if self.line_ok(vet_prefix(&self.buf), false) {
                self.state = State::Head(hs);
            } else {
                self.bad_start(ts, hs, out);
            }
        } else {
            self.state = State::Head(hs);
        }
        take
    }

    /// Accumulate header lines until the empty line.
    fn head_step(
        &mut self,
        ts: u64,
        mut hs: HeadState,
        data: &[u8],
        out: &mut Vec<Event>,
    ) -> usize {
        let old = self.buf.len();
        let take = MAX_HEADER_BYTES.saturating_sub(old).min(data.len());
        self.buf
            .extend_from_slice(data.get(..take).unwrap_or_default());
        match find_head_end(&self.buf, &mut hs.scan_from) {
            Some(end) => {
                // The block could not end inside bytes already searched, so
                // `end > old`; the excess goes back to the caller as input.
                self.buf.truncate(end);
                self.finish_head(ts, hs, out);
                end.saturating_sub(old)
            }
            None if self.buf.len() >= MAX_HEADER_BYTES => {
                self.head_too_large(hs, out);
                take
            }
            None => {
                self.state = State::Head(hs);
                take
            }
        }
    }

    fn finish_head(&mut self, ts: u64, hs: HeadState, out: &mut Vec<Event>) {
        let head_len = self.buf.len() as u64;
        let parsed = syntax::parse_head(&self.buf, self.is_request());
        self.reset_buf();
        let (start, headers) = match parsed {
            Ok(p) => p,
            Err(e) => return self.fail(e, out),
        };
        let plan = match self.plan(&start, &headers) {
            Ok(p) => p,
            Err(e) => return self.fail(e, out),
        };
        let mut msg = Partial {
            start,
            headers,
            body: Vec::new(),
            tail: Vec::new(),
            body_size: 0,
            truncated: false,
            wire_size: head_len,
            first_ts: hs.first_ts,
            last_ts: ts,
            chunked: false,
        };
        match plan {
            Plan::Skip => self.state = State::Head(HeadState::default()),
            Plan::Done { tunnel } => self.emit(msg, tunnel, out),
            Plan::Body { framing, tunnel } => {
                msg.chunked = matches!(framing, Framing::Chunked(_));
                self.state = State::Body(Box::new(BodyState {
                    msg,
                    framing,
                    then_tunnel: tunnel,
                }));
            }
        }
    }

    /// Message framing per RFC 9112 §6.3.
    fn plan(&mut self, start: &StartLine, headers: &Headers) -> Result<Plan, ParseError> {
        let coding = syntax::transfer_coding(headers);
        let length = syntax::content_length(headers);
        let with_length = |n: u64, tunnel: bool| match n {
            0 => Plan::Done { tunnel },
            n => Plan::Body {
                framing: Framing::Length(n),
                tunnel,
            },
        };
        let chunked = |tunnel: bool| Plan::Body {
            framing: Framing::Chunked(Chunk::Size(Vec::new())),
            tunnel,
        };
        match (start, &mut self.side) {
            (StartLine::Request { method, .. }, _) => {
                // A CONNECT request is followed by tunnelled bytes.
                let tunnel = method == "CONNECT";
                match coding {
                    TransferCoding::Chunked => Ok(chunked(tunnel)),
                    TransferCoding::Other => Err(ParseError::BadTransferEncoding {
                        value: syntax::quote(headers.get("transfer-encoding").unwrap_or_default()),
                    }),
                    TransferCoding::Absent => Ok(with_length(length?.unwrap_or(0), tunnel)),
                }
            }
            (StartLine::Status { status, .. }, Side::Response(methods)) => {
                let status = *status;
                if (100..200).contains(&status) && status != 101 {
                    return Ok(Plan::Skip);
                }
                let method = methods.pop_front();
                let method = method.as_deref().unwrap_or("");
                if status == 101 || (method == "CONNECT" && (200..300).contains(&status)) {
                    return Ok(Plan::Done { tunnel: true });
                }
                if method == "HEAD" || status == 204 || status == 304 {
                    return Ok(Plan::Done { tunnel: false });
                }
                match coding {
                    TransferCoding::Chunked => Ok(chunked(false)),
                    TransferCoding::Other => Ok(Plan::Body {
                        framing: Framing::UntilClose,
                        tunnel: false,
                    }),
                    TransferCoding::Absent => match length? {
                        Some(n) => Ok(with_length(n, false)),
                        None => Ok(Plan::Body {
                            framing: Framing::UntilClose,
                            tunnel: false,
                        }),
                    },
                }
            }
            // A status line on the request side cannot be produced by the
            // request-line check; treat it as an empty message anyway.
            (StartLine::Status { .. }, Side::Request) => Ok(Plan::Done { tunnel: false }),
        }
    }

    fn resync_step(&mut self, ts: u64, mut tail: Vec<u8>, data: &[u8]) -> usize {
        let resumed = HeadState {
            first_ts: ts,
            from_resync: true,
            ..HeadState::default()
        };
        let tail_len = tail.len();
        if tail_len > 0 {
            // A pattern may straddle the previous chunk and this one.
            let mut joined = tail.clone();
            joined.extend_from_slice(data.get(..MAX_PATTERN_LEN).unwrap_or(data));
            if let Some(p) = self.find_candidate(&joined).filter(|&p| p < tail_len) {
                self.stats.bytes_skipped = self.stats.bytes_skipped.saturating_add(p as u64);
                self.buf.clear();
                self.buf
                    .extend_from_slice(tail.get(p..).unwrap_or_default());
                self.state = State::Head(resumed);
                return 0;
            }
        }
        if let Some(p) = self.find_candidate(data) {
            self.stats.bytes_skipped = self
                .stats
                .bytes_skipped
                .saturating_add((tail_len + p) as u64);
            self.state = State::Head(resumed);
            return p;
        }
        // Carry the last bytes of (tail ++ data): a short chunk must not push
        // out a partial pattern still held in the tail.
        let keep = MAX_PATTERN_LEN - 1;
        tail.extend_from_slice(
            data.get(data.len().saturating_sub(keep)..)
                .unwrap_or_default(),
        );
        let drop = tail.len().saturating_sub(keep);
        tail.drain(..drop);
        let total = (tail_len + data.len()) as u64;
        self.stats.bytes_skipped = self
            .stats
            .bytes_skipped
            .saturating_add(total - tail.len() as u64);
        self.state = State::Resync(tail);
        data.len()
    }

    fn bad_start(&mut self, ts: u64, hs: HeadState, out: &mut Vec<Event>) {
        if !hs.from_resync {
            let line = syntax::quote(syntax::strip_eol(&self.buf));
            self.error(ParseError::BadStartLine { line }, out);
        }
        self.rescan_buf(ts);
    }

    /// After a rejected start line, a valid one may begin inside it (e.g.
    /// noise glued to `GET / HTTP/1.1`): look there before scanning on.
    fn rescan_buf(&mut self, ts: u64) {
        let mut from = 1;
        while let Some(q) = self
            .buf
            .get(from..)
            .and_then(|s| self.find_candidate(s))
            .map(|r| r + from)
        {
            let cand = self.buf.get(q..).unwrap_or_default();
            let complete = cand.last() == Some(&b'\n');
            let ok = if complete {
                self.line_ok(syntax::strip_eol(cand), true)
            } else {
                self.line_ok(vet_prefix(cand), false)
            };
            if ok {
                self.stats.bytes_skipped = self.stats.bytes_skipped.saturating_add(q as u64);
                self.buf.drain(..q);
                self.state = State::Head(HeadState {
                    first_ts: ts,
                    line1_done: complete,
                    scan_from: self.buf.len().saturating_sub(1),
                    from_resync: true,
                });
                return;
            }
            from = q + 1;
        }
        self.resync_keeping_tail();
    }

    fn resync_keeping_tail(&mut self) {
        let keep = self.buf.len().min(MAX_PATTERN_LEN - 1);
        let split = self.buf.len() - keep;
        self.stats.bytes_skipped = self.stats.bytes_skipped.saturating_add(split as u64);
        let tail = self.buf.get(split..).unwrap_or_default().to_vec();
        self.reset_buf();
        self.state = State::Resync(tail);
    }

    fn head_too_large(&mut self, hs: HeadState, out: &mut Vec<Event>) {
        // An unvetted overlong line after a resync is noise, not a new error.
        if !hs.from_resync || hs.line1_done {
            let e = ParseError::HeaderTooLarge {
                limit: MAX_HEADER_BYTES,
            };
            self.error(e, out);
        }
        self.resync_keeping_tail();
    }

    fn error(&mut self, e: ParseError, out: &mut Vec<Event>) {
        self.stats.errors = self.stats.errors.saturating_add(1);
        out.push(Event::Err(e));
    }

    /// Report `e` and look for the next start line from here on.
    fn fail(&mut self, e: ParseError, out: &mut Vec<Event>) {
        self.error(e, out);
        self.reset_buf();
        self.state = State::Resync(Vec::new());
    }

    fn emit(&mut self, mut msg: Partial, tunnel: bool, out: &mut Vec<Event>) {
        if msg.tail.len() > BODY_TAIL_CAP {
            let cut = msg.tail.len() - BODY_TAIL_CAP;
            msg.tail.drain(..cut);
        }
        self.stats.messages = self.stats.messages.saturating_add(1);
        out.push(Event::Msg(Box::new(msg)));
        self.state = if tunnel {
            State::Tunnel
        } else {
            State::Head(HeadState::default())
        };
    }

    fn reset_buf(&mut self) {
        if self.buf.capacity() > SHRINK_ABOVE {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }
}

/// The part of an incomplete start line to vet: its first bytes, without a
/// final CR that may be the first half of the line's CRLF.
fn vet_prefix(line: &[u8]) -> &[u8] {
    let line = line.get(..PREFIX_CHECK_LEN).unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Find the end of a header block: an LF followed by LF or CRLF. Resumes at
/// `scan_from` and leaves it at the first LF that cannot be decided yet.
fn find_head_end(buf: &[u8], scan_from: &mut usize) -> Option<usize> {
    let mut from = *scan_from;
    while let Some(rel) = buf.get(from..).and_then(|s| memchr(b'\n', s)) {
        let i = from + rel;
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => return Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
            (None, _) | (Some(b'\r'), None) => {
                *scan_from = i;
                return None;
            }
            _ => from = i + 1,
        }
    }
    *scan_from = buf.len();
    None
}
