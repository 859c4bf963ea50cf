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

use super::syntax::{self, StartLine, TransferCoding, MAX_PATTERN_LEN};
use super::{Headers, ParseError, ParserStats, BODY_TAIL_CAP, MAX_HEADER_BYTES};

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
    DataEnd { got_cr: bool },
    Trailers { line_has_content: bool, total: usize },
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
    Done { tunnel: bool },
    Body { framing: Framing, tunnel: bool },
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
                    self.stats.bytes_skipped += rest.len() as u64;
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
                self.stats.tunnel_bytes += data.len() as u64;
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
        let take = memchr(b'\n', data)
            .map_or(data.len(), |i| i + 1)
            .min(room);
        self.buf.extend_from_slice(data.get(..take).unwrap_or_default());
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
            let prefix = self.buf.get(..PREFIX_CHECK_LEN).unwrap_or(&self.buf);
            if self.line_ok(prefix, false) {
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
        self.buf.extend_from_slice(data.get(..take).unwrap_or_default());
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

    fn body_step(
        &mut self,
        ts: u64,
        mut bs: Box<BodyState>,
        data: &[u8],
        out: &mut Vec<Event>,
    ) -> usize {
        let BodyState { msg, framing, .. } = &mut *bs;
        msg.last_ts = ts;
        let (used, step) = match framing {
            Framing::Length(remaining) => {
                let take = take_len(*remaining, data.len());
                self.append(msg, data.get(..take).unwrap_or_default());
                *remaining = remaining.saturating_sub(take as u64);
                (take, if *remaining == 0 { Step::Done } else { Step::Continue })
            }
            Framing::UntilClose => {
                self.append(msg, data);
                (data.len(), Step::Continue)
            }
            Framing::Chunked(chunk) => self.chunk_step(msg, chunk, data),
        };
        bs.msg.wire_size = bs.msg.wire_size.saturating_add(used as u64);
        match step {
            Step::Continue => self.state = State::Body(bs),
            Step::Done => self.emit(bs.msg, bs.then_tunnel, out),
            Step::Fail(e) => {
                // Keep what was parsed (the headers matter most), then resync.
                bs.msg.truncated = true;
                self.emit(bs.msg, false, out);
                self.fail(e, out);
            }
        }
        used
    }

    fn chunk_step(&self, msg: &mut Partial, chunk: &mut Chunk, data: &[u8]) -> (usize, Step) {
        match chunk {
            Chunk::Size(line) => {
                let nl = memchr(b'\n', data);
                let part = data.get(..nl.unwrap_or(data.len())).unwrap_or_default();
                if line.len() + part.len() > MAX_CHUNK_LINE {
                    let mut quoted = line.clone();
                    quoted.extend_from_slice(part);
                    let line = syntax::quote(&quoted);
                    return (part.len(), Step::Fail(ParseError::BadChunkSize { line }));
                }
                line.extend_from_slice(part);
                let Some(nl) = nl else {
                    return (data.len(), Step::Continue);
                };
                match syntax::parse_chunk_size(line) {
                    None => {
                        let line = syntax::quote(line);
                        (nl + 1, Step::Fail(ParseError::BadChunkSize { line }))
                    }
                    Some(0) => {
                        *chunk = Chunk::Trailers {
                            line_has_content: false,
                            total: 0,
                        };
                        (nl + 1, Step::Continue)
                    }
                    Some(n) => {
                        *chunk = Chunk::Data(n);
                        (nl + 1, Step::Continue)
                    }
                }
            }
            Chunk::Data(remaining) => {
                let take = take_len(*remaining, data.len());
                self.append(msg, data.get(..take).unwrap_or_default());
                *remaining = remaining.saturating_sub(take as u64);
                if *remaining == 0 {
                    *chunk = Chunk::DataEnd { got_cr: false };
                }
                (take, Step::Continue)
            }
            Chunk::DataEnd { got_cr } => match data.first() {
                Some(b'\r') if !*got_cr => {
                    *got_cr = true;
                    (1, Step::Continue)
                }
                Some(b'\n') => {
                    *chunk = Chunk::Size(Vec::new());
                    (1, Step::Continue)
                }
                Some(&found) => (0, Step::Fail(ParseError::BadChunkTerminator { found })),
                None => (0, Step::Continue),
            },
            Chunk::Trailers {
                line_has_content,
                total,
            } => {
                // Trailer fields are not kept; only their end matters.
                let mut pos = 0;
                while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
                    let nl = memchr(b'\n', rest);
                    let seg = rest.get(..nl.unwrap_or(rest.len())).unwrap_or_default();
                    *line_has_content |= seg.iter().any(|&b| b != b'\r');
                    let used = nl.map_or(rest.len(), |i| i + 1);
                    pos += used;
                    *total = total.saturating_add(used);
                    if nl.is_some() {
                        if !*line_has_content {
                            return (pos, Step::Done);
                        }
                        *line_has_content = false;
                    }
                    if *total > MAX_HEADER_BYTES {
                        let e = ParseError::HeaderTooLarge {
                            limit: MAX_HEADER_BYTES,
                        };
                        return (pos, Step::Fail(e));
                    }
                }
                (pos, Step::Continue)
            }
        }
    }

    /// Add decoded body bytes, keeping at most `body_cap` plus a bounded tail.
    fn append(&self, msg: &mut Partial, bytes: &[u8]) {
        msg.body_size = msg.body_size.saturating_add(bytes.len() as u64);
        let room = self.body_cap.saturating_sub(msg.body.len());
        let (keep, over) = bytes.split_at(room.min(bytes.len()));
        msg.body.extend_from_slice(keep);
        if over.is_empty() {
            return;
        }
        msg.truncated = true;
        if self.is_request() {
            return;
        }
        if over.len() >= BODY_TAIL_CAP {
            msg.tail.clear();
            let from = over.len() - BODY_TAIL_CAP;
            msg.tail.extend_from_slice(over.get(from..).unwrap_or_default());
        } else {
            msg.tail.extend_from_slice(over);
            // Trim in batches so the cost per byte stays constant.
            if msg.tail.len() > 2 * BODY_TAIL_CAP {
                let cut = msg.tail.len() - BODY_TAIL_CAP;
                msg.tail.drain(..cut);
            }
        }
    }

    fn resync_step(&mut self, ts: u64, mut tail: Vec<u8>, data: &[u8]) -> usize {
        let resumed = HeadState {
            first_ts: ts,
            from_resync: true,
            ..HeadState::default()
        };
        if !tail.is_empty() {
            // A pattern may straddle the previous chunk and this one.
            let tail_len = tail.len();
            let mut joined = tail.clone();
            joined.extend_from_slice(data.get(..MAX_PATTERN_LEN).unwrap_or(data));
            if let Some(p) = self.find_candidate(&joined).filter(|&p| p < tail_len) {
                self.stats.bytes_skipped += p as u64;
                self.buf.clear();
                self.buf.extend_from_slice(tail.get(p..).unwrap_or_default());
                self.state = State::Head(resumed);
                return 0;
            }
            self.stats.bytes_skipped += tail_len as u64;
            tail.clear();
        }
        if let Some(p) = self.find_candidate(data) {
            self.stats.bytes_skipped += p as u64;
            self.state = State::Head(resumed);
            return p;
        }
        let keep = data.len().min(MAX_PATTERN_LEN - 1);
        let split = data.len() - keep;
        self.stats.bytes_skipped += split as u64;
        tail.extend_from_slice(data.get(split..).unwrap_or_default());
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
                self.line_ok(cand.get(..PREFIX_CHECK_LEN).unwrap_or(cand), false)
            };
            if ok {
                self.stats.bytes_skipped += q as u64;
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
        self.to_resync_keeping_tail();
    }

    fn to_resync_keeping_tail(&mut self) {
        let keep = self.buf.len().min(MAX_PATTERN_LEN - 1);
        let split = self.buf.len() - keep;
        self.stats.bytes_skipped += split as u64;
        let tail = self.buf.get(split..).unwrap_or_default().to_vec();
        self.reset_buf();
        self.state = State::Resync(tail);
    }

    fn head_too_large(&mut self, hs: HeadState, out: &mut Vec<Event>) {
        // An unvetted overlong line after a resync is noise, not a new error.
        if !(hs.from_resync && !hs.line1_done) {
            let e = ParseError::HeaderTooLarge {
                limit: MAX_HEADER_BYTES,
            };
            self.error(e, out);
        }
        self.to_resync_keeping_tail();
    }

    fn error(&mut self, e: ParseError, out: &mut Vec<Event>) {
        self.stats.errors += 1;
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
        self.stats.messages += 1;
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

    pub(crate) fn gap(&mut self, ts: u64, n: u64) -> Vec<Event> {
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        self.stats.gap_bytes += n;
        match std::mem::replace(&mut self.state, State::Tunnel) {
            State::Tunnel => {}
            State::Resync(_) => {
                // The carry-over is no longer adjacent to what comes next.
                self.stats.bytes_skipped += n;
                self.state = State::Resync(Vec::new());
            }
            State::Head(hs) => {
                let context = if self.buf.is_empty() {
                    "message start"
                } else {
                    "header block"
                };
                self.stats.bytes_skipped += self.buf.len() as u64;
                if hs.from_resync {
                    self.reset_buf();
                    self.state = State::Resync(Vec::new());
                } else {
                    self.fail(ParseError::Desync { lost: n, context }, &mut out);
                }
            }
            State::Body(mut bs) => {
                bs.msg.last_ts = ts;
                bs.msg.truncated = true;
                bs.msg.wire_size = bs.msg.wire_size.saturating_add(n);
                let lost_after = match &mut bs.framing {
                    Framing::UntilClose => {
                        bs.msg.body_size = bs.msg.body_size.saturating_add(n);
                        Some(0)
                    }
                    Framing::Length(rem) | Framing::Chunked(Chunk::Data(rem)) => {
                        let inside = n.min(*rem);
                        *rem -= inside;
                        bs.msg.body_size = bs.msg.body_size.saturating_add(inside);
                        Some(n - inside)
                    }
                    // Chunk framing bytes were lost: the body end is unknowable.
                    Framing::Chunked(_) => None,
                };
                match (lost_after, &mut bs.framing) {
                    (Some(0), Framing::Length(0)) => self.emit(bs.msg, bs.then_tunnel, &mut out),
                    (Some(0), Framing::Chunked(chunk)) => {
                        if matches!(chunk, Chunk::Data(0)) {
                            *chunk = Chunk::DataEnd { got_cr: false };
                        }
                        self.state = State::Body(bs);
                    }
                    (Some(0), _) => self.state = State::Body(bs),
                    (lost, _) => {
                        let context = if lost.is_some() {
                            "after the body"
                        } else {
                            "chunk framing"
                        };
                        let lost = lost.unwrap_or(n);
                        self.emit(bs.msg, false, &mut out);
                        self.fail(ParseError::Desync { lost, context }, &mut out);
                    }
                }
            }
        }
        out
    }

    pub(crate) fn close(&mut self, _ts: u64) -> Vec<Event> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::Head(HeadState::default())) {
            State::Head(hs) => {
                if !self.buf.is_empty() && !hs.from_resync {
                    let buffered = self.buf.len();
                    self.error(ParseError::IncompleteHead { buffered }, &mut out);
                }
            }
            State::Body(mut bs) => {
                if !matches!(bs.framing, Framing::UntilClose) {
                    bs.msg.truncated = true;
                }
                self.emit(bs.msg, false, &mut out);
            }
            State::Resync(_) | State::Tunnel => {}
        }
        self.reset_buf();
        self.state = State::Head(HeadState::default());
        if let Side::Response(q) = &mut self.side {
            q.clear();
        }
        out
    }
}

/// How many of `avail` bytes a body with `remaining` bytes to go consumes.
fn take_len(remaining: u64, avail: usize) -> usize {
    usize::try_from(remaining).map_or(avail, |r| r.min(avail))
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
