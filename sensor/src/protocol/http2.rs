//! Passive HTTP/2 (RFC 9113) parser for one captured client connection.
//!
//! Input is the plaintext of each direction as captured: egress (what the
//! client process writes: the preface, requests) and ingress (what it reads:
//! responses), each in order, split anywhere, possibly with gaps. Output is
//! the HTTP/1 parser's `Request`/`Response` pairs, so the rest of the sensor
//! treats HTTP/2 (Go clients, gRPC) like HTTP/1.1.
//!
//! Each direction has its own framing state and HPACK decoder. HPACK state
//! is the fragile part: every header block must be decoded in order, for
//! streams we track or not, or every later block is misread. So a gap, an
//! HPACK error or anything that breaks framing stops that direction for good
//! (reported once); nothing is guessed afterwards.
//!
//! Leniencies, deliberate for an observer: frames up to
//! `max(DEFAULT_FRAME_LIMIT, announced SETTINGS_MAX_FRAME_SIZE)` are
//! accepted; dynamic table size updates up to `hpack::TABLE_SIZE_CAP` are
//! accepted whatever was announced; malformed messages (missing
//! pseudo-headers, DATA before HEADERS, a bad `:status`) are reported as seen
//! or skipped rather than failing the connection.
//!
//! Memory is bounded: see `frames` for the frame layer; the header block
//! being assembled is at most `MAX_HEADER_BYTES`; at most `MAX_OPEN_STREAMS`
//! streams are tracked; bodies are capped per message (`body_cap`, plus the
//! response tail) and the bytes retained by all open streams are capped by a
//! budget (`retained_budget`), beyond which the oldest streams are reported
//! early, as cut.

mod connection;
mod frames;
mod streams;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_h2;
#[cfg(test)]
mod tests_robust;

use std::collections::BTreeMap;

use sensor_common::Direction;

use self::frames::Reader;
use self::streams::Stream;
use crate::protocol::hpack::{Decoder, HpackError};
use crate::protocol::http1::{BODY_TAIL_CAP, MAX_HEADER_BYTES, Request, Response};

pub use self::streams::HTTP2_VERSION;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frames up to this length are accepted even when no larger
/// `SETTINGS_MAX_FRAME_SIZE` was seen (the default is 16 KiB).
pub const DEFAULT_FRAME_LIMIT: u32 = 1 << 20;
/// The protocol's largest frame (RFC 9113 §4.2): 2^24 - 1.
pub const MAX_FRAME_LIMIT: u32 = (1 << 24) - 1;
/// Streams tracked at once; beyond, the oldest is reported and forgotten.
pub const MAX_OPEN_STREAMS: usize = 1024;
/// Decoded size (names plus values) of one header list kept at most.
pub const MAX_HEADER_LIST_BYTES: usize = 2 * MAX_HEADER_BYTES;
/// Floor of the budget of bytes retained by open streams of one connection.
pub const MIN_RETAINED_BUDGET: usize = 16 << 20;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "same shape as the HTTP/1 results; items are moved, not stored"
)]
pub enum Http2Item {
    /// A request, with its response when one came (None: reset, or the
    /// connection ended before it).
    Exchange(Request, Option<Response>),
    /// Something went wrong; see `Http2Error::is_fatal`.
    Error(Http2Error),
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Http2Error {
    #[error("egress does not start with the HTTP/2 client preface")]
    BadPreface,
    #[error("{direction:?}: frame of {length} bytes, above the limit of {limit}")]
    FrameTooLarge {
        direction: Direction,
        length: u32,
        limit: u32,
    },
    #[error("{direction:?}: header block of stream {stream} above {limit} bytes")]
    HeaderBlockTooLarge {
        direction: Direction,
        stream: u32,
        limit: usize,
    },
    #[error("{direction:?}: HPACK: {source}")]
    Hpack {
        direction: Direction,
        source: HpackError,
    },
    #[error(
        "{direction:?}: frame type {kind:#04x} on stream {got} inside the header block of stream {stream}"
    )]
    ContinuationExpected {
        direction: Direction,
        stream: u32,
        kind: u8,
        got: u32,
    },
    #[error("{direction:?}: CONTINUATION on stream {stream} without a header block open")]
    UnexpectedContinuation { direction: Direction, stream: u32 },
    #[error("{direction:?}: malformed header frame on stream {stream}: {what}")]
    BadHeaderFrame {
        direction: Direction,
        stream: u32,
        what: &'static str,
    },
    #[error("{direction:?}: DATA padding as long as the frame on stream {stream}")]
    BadPadding { direction: Direction, stream: u32 },
    #[error("stream {stream}: more than {limit} header fields, the rest dropped")]
    TooManyHeaders { stream: u32, limit: usize },
    #[error("stream {stream}: header list above {limit} bytes, the rest dropped")]
    HeaderListTooLarge { stream: u32, limit: usize },
    #[error("capture lost {lost} bytes of {direction:?}: that direction is no longer parsed")]
    Desync { lost: u64, direction: Direction },
}

impl Http2Error {
    /// Whether the error stopped the parsing of its direction (framing or
    /// HPACK state lost). Other errors only cut one message's headers or
    /// body.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Self::BadPadding { .. } | Self::TooManyHeaders { .. } | Self::HeaderListTooLarge { .. }
        )
    }
}

/// Counters for observability of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Http2Stats {
    pub frames: u64,
    /// Requests seen (streams opened by the client).
    pub streams: u64,
    pub exchanges: u64,
    pub errors: u64,
    /// RST_STREAM frames, either way.
    pub resets: u64,
    /// Streams reported early for the stream cap or the memory budget.
    pub streams_evicted: u64,
    /// Responses dropped because their request was never seen.
    pub responses_without_request: u64,
    /// Bytes reported lost through `gap`.
    pub gap_bytes: u64,
    /// Bytes fed to a direction that had stopped.
    pub bytes_skipped: u64,
}

/// A header block being assembled from HEADERS (or PUSH_PROMISE) and
/// CONTINUATION frames.
struct PendingBlock {
    stream: u32,
    promise: bool,
    end_stream: bool,
    buf: Vec<u8>,
    /// Frame bytes of the block, headers included.
    wire: u64,
    first_ts: u64,
}

/// Framing and HPACK state of one direction.
struct Side {
    reader: Reader,
    decoder: Decoder,
    block: Option<PendingBlock>,
}

impl Side {
    fn new(direction: Direction) -> Self {
        Self {
            reader: Reader::new(
                direction,
                direction == Direction::Egress,
                DEFAULT_FRAME_LIMIT,
            ),
            decoder: Decoder::new(),
            block: None,
        }
    }

    fn buffered_bytes(&self) -> usize {
        self.reader
            .buffered_bytes()
            .saturating_add(self.decoder.buffered_bytes())
            .saturating_add(self.block.as_ref().map_or(0, |b| b.buf.len()))
    }
}

pub struct Http2Connection {
    body_cap: usize,
    retained_budget: usize,
    egress: Side,
    ingress: Side,
    streams: BTreeMap<u32, Stream>,
    /// Highest stream id whose request headers came on egress.
    last_egress_id: u32,
    /// Highest stream id opened by a response that came before its request.
    last_ingress_id: u32,
    /// Upper bound of the bytes held by `streams` (made exact when it
    /// exceeds the budget).
    retained: usize,
    stats: Http2Stats,
}

impl Http2Connection {
    pub fn new(body_cap: usize) -> Self {
        // At least a few full exchanges fit, whatever `body_cap` is.
        let per_exchange = body_cap
            .saturating_add(BODY_TAIL_CAP.saturating_mul(2))
            .saturating_add(MAX_HEADER_LIST_BYTES.saturating_mul(2));
        Self {
            body_cap,
            retained_budget: MIN_RETAINED_BUDGET.max(per_exchange.saturating_mul(4)),
            egress: Side::new(Direction::Egress),
            ingress: Side::new(Direction::Ingress),
            streams: BTreeMap::new(),
            last_egress_id: 0,
            last_ingress_id: 0,
            retained: 0,
            stats: Http2Stats::default(),
        }
    }

    /// Bytes of one direction, in order. Egress must start with `PREFACE`
    /// (checked once).
    pub fn feed(&mut self, direction: Direction, ts: u64, data: &[u8]) -> Vec<Http2Item> {
        let mut out = Vec::new();
        let mut rest = data;
        let mut idle = 0u8;
        loop {
            let reader = &mut self.side_mut(direction).reader;
            if reader.is_stopped() {
                self.stats.bytes_skipped =
                    self.stats.bytes_skipped.saturating_add(rest.len() as u64);
                break;
            }
            if rest.is_empty() && !reader.end_pending() {
                break;
            }
            let (used, event) = reader.step(ts, rest);
            rest = rest.get(used..).unwrap_or_default();
            match event {
                Some(event) => {
                    idle = 0;
                    self.on_event(direction, ts, event, &mut out);
                }
                // The reader always consumes or changes state; this guard
                // only turns a logic slip into skipped bytes, not a hang.
                None if used == 0 => {
                    idle = idle.saturating_add(1);
                    if idle > 4 {
                        self.stats.bytes_skipped =
                            self.stats.bytes_skipped.saturating_add(rest.len() as u64);
                        break;
                    }
                }
                None => idle = 0,
            }
        }
        self.enforce_budget(&mut out);
        out
    }

    /// `lost` bytes of `direction` were not captured. Framing and HPACK
    /// state of that direction are lost: it is no longer parsed. Streams that
    /// can no longer complete are reported (after an ingress gap, every
    /// request whose request side is complete, with its response cut or
    /// None; after an egress gap, nothing yet: the responses of requests
    /// already seen still come on ingress).
    pub fn gap(&mut self, direction: Direction, _ts: u64, lost: u64) -> Vec<Http2Item> {
        let mut out = Vec::new();
        if lost == 0 {
            return out;
        }
        self.stats.gap_bytes = self.stats.gap_bytes.saturating_add(lost);
        if self.side_mut(direction).reader.is_stopped() {
            return out;
        }
        self.fail(Http2Error::Desync { lost, direction }, direction, &mut out);
        out
    }

    /// The connection ended: every request still open is reported (response
    /// None, or the partial response if its headers came, cut). The parser
    /// starts over as for a new connection; counters are kept.
    pub fn close(&mut self, _ts: u64) -> Vec<Http2Item> {
        let mut out = Vec::new();
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.report(id, &mut out);
        }
        let stats = self.stats;
        *self = Self::new(self.body_cap);
        self.stats = stats;
        out
    }

    pub fn stats(&self) -> Http2Stats {
        self.stats
    }

    /// Nothing more can come out of `feed`: egress stopped (bad preface,
    /// gap, lost framing or HPACK state) and no open stream can still be
    /// answered on ingress. `close` still reports what is open.
    pub fn is_broken(&self) -> bool {
        self.egress.reader.is_stopped()
            && (self.ingress.reader.is_stopped() || self.streams.is_empty())
    }

    /// Bytes currently held (for memory accounting).
    pub fn buffered_bytes(&self) -> usize {
        self.retained
            .saturating_add(self.egress.buffered_bytes())
            .saturating_add(self.ingress.buffered_bytes())
    }

    /// Streams open (request or response seen, exchange not yet reported).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    fn side_mut(&mut self, direction: Direction) -> &mut Side {
        match direction {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        }
    }
}
