//! Frame layer (RFC 9113 §4.1): cuts one direction's byte stream into
//! frames, whatever the split points of the captured calls.
//!
//! Memory: a frame header is assembled in a 9-byte array; DATA payloads are
//! streamed to the caller, never buffered; header-bearing payloads are kept
//! whole but are capped by `MAX_BLOCK_FRAME`; other frames keep at most the
//! few bytes the connection reads (`keep_len`).

use sensor_common::Direction;

use super::{Http2Error, PREFACE};
use crate::protocol::http1::MAX_HEADER_BYTES;

pub(super) const FRAME_HEADER_LEN: usize = 9;

pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const PUSH_PROMISE: u8 = 0x5;
pub(super) const GOAWAY: u8 = 0x7;
pub(super) const CONTINUATION: u8 = 0x9;

pub(super) const FLAG_END_STREAM: u8 = 0x1;
pub(super) const FLAG_ACK: u8 = 0x1;
pub(super) const FLAG_END_HEADERS: u8 = 0x4;
pub(super) const FLAG_PADDED: u8 = 0x8;
pub(super) const FLAG_PRIORITY: u8 = 0x20;

/// Largest payload of a HEADERS, PUSH_PROMISE or CONTINUATION frame kept:
/// a whole header block plus pad length, priority (or promised id) and the
/// largest padding.
pub(super) const MAX_BLOCK_FRAME: u32 = MAX_HEADER_BYTES as u32 + 1 + 5 + 255;
/// SETTINGS payload bytes read (256 entries); later entries are ignored.
const MAX_SETTINGS_KEEP: u32 = 256 * 6;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct FrameHead {
    pub length: u32,
    pub kind: u8,
    pub flags: u8,
    /// Stream identifier, reserved bit cleared.
    pub stream: u32,
}

impl FrameHead {
    fn parse(b: [u8; FRAME_HEADER_LEN]) -> Self {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = b;
        Self {
            length: u32::from_be_bytes([0, l0, l1, l2]),
            kind,
            flags,
            stream: u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Frame bytes on the wire, header included.
    pub fn wire_len(&self) -> u64 {
        u64::from(self.length).saturating_add(FRAME_HEADER_LEN as u64)
    }

    pub fn carries_block(&self) -> bool {
        matches!(self.kind, HEADERS | PUSH_PROMISE | CONTINUATION)
    }

    /// Payload bytes the connection needs to see at the end of the frame.
    fn keep_len(&self) -> u32 {
        match self.kind {
            HEADERS | PUSH_PROMISE | CONTINUATION => self.length,
            SETTINGS => self.length.min(MAX_SETTINGS_KEEP),
            // Error code: not reported, but cheap to keep.
            RST_STREAM => self.length.min(4),
            // Last-Stream-ID and error code; debug data is skipped.
            GOAWAY => self.length.min(8),
            _ => 0,
        }
    }
}

pub(super) enum Event<'a> {
    /// A frame header was read (the payload follows).
    Start(FrameHead),
    /// Payload bytes of a DATA frame, padding removed.
    Data(FrameHead, &'a [u8]),
    /// The frame is complete; `payload` holds its first `keep_len` bytes.
    End {
        head: FrameHead,
        payload: Vec<u8>,
        /// Timestamp of the chunk holding the frame's first byte.
        start_ts: u64,
    },
    /// The direction can no longer be framed: the reader stopped.
    Fatal(Http2Error),
    /// A frame was malformed in a way that keeps framing intact.
    Error(Http2Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes of the client preface matched so far.
    Preface(usize),
    Header,
    Payload,
    Stopped,
}

pub(super) struct Reader {
    direction: Direction,
    state: State,
    hdr: [u8; FRAME_HEADER_LEN],
    hdr_len: usize,
    head: FrameHead,
    /// Payload bytes of `head` consumed so far.
    done: u32,
    payload: Vec<u8>,
    start_ts: u64,
    /// DATA: payload offsets holding data (the rest is pad length and
    /// padding); `None` until the pad length byte was read.
    data_region: Option<(u32, u32)>,
    /// Largest frame accepted; see `Http2Connection::set_frame_limit`.
    pub frame_limit: u32,
}

impl Reader {
    pub fn new(direction: Direction, expect_preface: bool, frame_limit: u32) -> Self {
        Self {
            direction,
            state: if expect_preface {
                State::Preface(0)
            } else {
                State::Header
            },
            hdr: [0; FRAME_HEADER_LEN],
            hdr_len: 0,
            head: FrameHead::default(),
            done: 0,
            payload: Vec::new(),
            start_ts: 0,
            data_region: None,
            frame_limit,
        }
    }

    pub fn stop(&mut self) {
        self.state = State::Stopped;
        self.payload = Vec::new();
    }

    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// A complete frame waits to be reported even with no input left
    /// (zero-length frames, or the last bytes of one).
    pub fn end_pending(&self) -> bool {
        self.state == State::Payload && self.done >= self.head.length
    }

    pub fn buffered_bytes(&self) -> usize {
        self.payload.len().saturating_add(self.hdr_len)
    }

    /// Consumes a prefix of `data`; returns how much, and what happened.
    /// Every call either consumes input or changes state.
    pub fn step<'a>(&mut self, ts: u64, data: &'a [u8]) -> (usize, Option<Event<'a>>) {
        match self.state {
            State::Stopped => (data.len(), None),
            State::Preface(matched) => self.preface(matched, data),
            State::Header => self.header(ts, data),
            State::Payload => self.payload(data),
        }
    }

    fn preface<'a>(&mut self, matched: usize, data: &'a [u8]) -> (usize, Option<Event<'a>>) {
        let want = PREFACE.get(matched..).unwrap_or_default();
        let take = want.len().min(data.len());
        if data.get(..take) != want.get(..take) {
            self.stop();
            return (0, Some(Event::Fatal(Http2Error::BadPreface)));
        }
        let matched = matched.saturating_add(take);
        self.state = if matched >= PREFACE.len() {
            State::Header
        } else {
            State::Preface(matched)
        };
        (take, None)
    }

    fn header<'a>(&mut self, ts: u64, data: &'a [u8]) -> (usize, Option<Event<'a>>) {
        if self.hdr_len == 0 {
            self.start_ts = ts;
        }
        let take = FRAME_HEADER_LEN
            .saturating_sub(self.hdr_len)
            .min(data.len());
        for (slot, &b) in self
            .hdr
            .iter_mut()
            .skip(self.hdr_len)
            .zip(data.iter().take(take))
        {
            *slot = b;
        }
        self.hdr_len = self.hdr_len.saturating_add(take);
        if self.hdr_len < FRAME_HEADER_LEN {
            return (take, None);
        }
        self.hdr_len = 0;
        let head = FrameHead::parse(self.hdr);
        let direction = self.direction;
        if head.length > self.frame_limit {
            self.stop();
            let e = Http2Error::FrameTooLarge {
                direction,
                length: head.length,
                limit: self.frame_limit,
            };
            return (take, Some(Event::Fatal(e)));
        }
        if head.carries_block() && head.length > MAX_BLOCK_FRAME {
            self.stop();
            let e = Http2Error::HeaderBlockTooLarge {
                direction,
                stream: head.stream,
                limit: MAX_HEADER_BYTES,
            };
            return (take, Some(Event::Fatal(e)));
        }
        self.head = head;
        self.done = 0;
        self.payload.clear();
        self.data_region = (!head.has(FLAG_PADDED)).then_some((0, head.length));
        self.state = State::Payload;
        (take, Some(Event::Start(head)))
    }

    fn payload<'a>(&mut self, data: &'a [u8]) -> (usize, Option<Event<'a>>) {
        let head = self.head;
        let remaining = head.length.saturating_sub(self.done);
        if remaining == 0 {
            self.state = State::Header;
            let payload = std::mem::take(&mut self.payload);
            let start_ts = self.start_ts;
            return (
                0,
                Some(Event::End {
                    head,
                    payload,
                    start_ts,
                }),
            );
        }
        let take = usize::try_from(remaining).map_or(data.len(), |r| r.min(data.len()));
        let chunk = data.get(..take).unwrap_or_default();
        let offset = self.done;
        // `take <= remaining`, a u32.
        self.done = self
            .done
            .saturating_add(u32::try_from(take).unwrap_or(u32::MAX));
        if head.kind == DATA {
            return (take, self.data_chunk(offset, chunk));
        }
        let room = usize::try_from(head.keep_len())
            .unwrap_or(usize::MAX)
            .saturating_sub(self.payload.len());
        self.payload
            .extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        (take, None)
    }

    /// The data part of DATA payload bytes `offset..offset + chunk.len()`.
    fn data_chunk<'a>(&mut self, offset: u32, chunk: &'a [u8]) -> Option<Event<'a>> {
        let head = self.head;
        let (mut offset, mut chunk) = (offset, chunk);
        if self.data_region.is_none() {
            if offset != 0 {
                // Bad padding was reported: the rest of the frame is ignored.
                return None;
            }
            let (&pad, rest) = chunk.split_first()?;
            if u32::from(pad) >= head.length {
                // Padding as long as the frame (RFC 9113 §6.1): a
                // PROTOCOL_ERROR for the peer; the framing is intact.
                return Some(Event::Error(Http2Error::BadPadding {
                    direction: self.direction,
                    stream: head.stream,
                }));
            }
            self.data_region = Some((1, head.length.saturating_sub(u32::from(pad))));
            offset = 1;
            chunk = rest;
        }
        let (from, to) = self.data_region?;
        let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        let a = offset.max(from);
        let b = offset.saturating_add(len).min(to);
        if a >= b {
            return None;
        }
        let a = usize::try_from(a.saturating_sub(offset)).unwrap_or(usize::MAX);
        let b = usize::try_from(b.saturating_sub(offset)).unwrap_or(usize::MAX);
        let part = chunk.get(a..b)?;
        Some(Event::Data(head, part))
    }
}

/// The header block fragment of a HEADERS payload (RFC 9113 §6.2), or
/// `None` when padding and priority do not fit in it.
pub(super) fn headers_fragment(head: FrameHead, payload: &[u8]) -> Option<&[u8]> {
    let (payload, pad) = strip_pad_length(head, payload)?;
    let payload = if head.has(FLAG_PRIORITY) {
        payload.get(5..)?
    } else {
        payload
    };
    payload.get(..payload.len().checked_sub(pad)?)
}

/// The header block fragment of a PUSH_PROMISE payload (RFC 9113 §6.6).
pub(super) fn push_promise_fragment(head: FrameHead, payload: &[u8]) -> Option<&[u8]> {
    let (payload, pad) = strip_pad_length(head, payload)?;
    let payload = payload.get(4..)?;
    payload.get(..payload.len().checked_sub(pad)?)
}

fn strip_pad_length(head: FrameHead, payload: &[u8]) -> Option<(&[u8], usize)> {
    if head.has(FLAG_PADDED) {
        let (&pad, rest) = payload.split_first()?;
        Some((rest, usize::from(pad)))
    } else {
        Some((payload, 0))
    }
}
