//! Body framing: Content-Length, chunked and close-delimited bodies, plus
//! the gap and close events that end or damage them.

use memchr::memchr;

use super::{
    BodyState, Chunk, Event, Framing, HeadState, MAX_CHUNK_LINE, Machine, Partial, Side, State,
    Step,
};
use crate::protocol::http1::syntax;
use crate::protocol::http1::{BODY_TAIL_CAP, MAX_HEADER_BYTES, ParseError};

impl Machine {
    pub(super) fn body_step(
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
                (
                    take,
                    if *remaining == 0 {
                        Step::Done
                    } else {
                        Step::Continue
                    },
                )
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
            msg.tail
                .extend_from_slice(over.get(from..).unwrap_or_default());
        } else {
            msg.tail.extend_from_slice(over);
            // Trim in batches so the cost per byte stays constant.
            if msg.tail.len() > 2 * BODY_TAIL_CAP {
                let cut = msg.tail.len() - BODY_TAIL_CAP;
                msg.tail.drain(..cut);
            }
        }
    }

    pub(crate) fn gap(&mut self, ts: u64, n: u64) -> Vec<Event> {
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        self.stats.gap_bytes = self.stats.gap_bytes.saturating_add(n);
        match std::mem::replace(&mut self.state, State::Tunnel) {
            State::Tunnel => {}
            State::Resync(_) => {
                // The carry-over is no longer adjacent to what comes next.
                self.stats.bytes_skipped = self.stats.bytes_skipped.saturating_add(n);
                self.state = State::Resync(Vec::new());
            }
            State::Head(hs) => {
                let context = if self.buf.is_empty() {
                    "message start"
                } else {
                    "header block"
                };
                self.stats.bytes_skipped = self
                    .stats
                    .bytes_skipped
                    .saturating_add(self.buf.len() as u64);
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
