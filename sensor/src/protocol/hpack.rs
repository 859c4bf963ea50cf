//! HPACK header block decoder (RFC 7541) for a passive observer.
//!
//! One `Decoder` follows one direction of one HTTP/2 connection: the
//! dynamic table is shared by every header block the peer's encoder sends,
//! so every block must be decoded, in order, or later ones are misread.
//!
//! Bounds, whatever the input:
//! * the dynamic table holds at most its maximum size (RFC 7541 §4.1
//!   accounting), and that size is at most `limit` (see `set_peer_setting`);
//! * a decoded string is at most 8/5 of its encoded length (Huffman codes
//!   are at least 5 bits);
//! * the fields handed back are capped by `Limits`; fields past a cap are
//!   still decoded (the table must evolve) but not copied out;
//! * table entries share their bytes (`Arc`), so a block that references
//!   one large entry many times costs no copies unless the copies are kept.

use std::collections::VecDeque;
use std::sync::Arc;

use super::hpack_huffman::{self, HuffmanError};

/// The protocol's initial `SETTINGS_HEADER_TABLE_SIZE` (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// Table size updates up to this are accepted whatever was announced: the
/// `SETTINGS` frame announcing a larger table may not have been captured
/// (or not yet, as the two directions are fed separately).
pub const TABLE_SIZE_CAP: usize = 64 * 1024;
/// A peer may announce more than `TABLE_SIZE_CAP`; updates are accepted up
/// to what it announced, but never beyond this.
pub const TABLE_SIZE_HARD_CAP: usize = 1024 * 1024;
/// Per-entry overhead of RFC 7541 §4.1.
const ENTRY_OVERHEAD: usize = 32;
/// Continuation bytes of an integer at most: 5 × 7 bits covers any `u32`
/// (values above are rejected anyway).
const MAX_INT_CONTINUATION: u32 = 5;

/// The static table, RFC 7541 Appendix A (index 1 is the first entry).
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HpackError {
    #[error("header block ends inside a field representation")]
    Truncated,
    #[error("integer above the implementation limit")]
    IntegerOverflow,
    #[error("table index {index} out of range ({dynamic} dynamic entries)")]
    BadIndex { index: usize, dynamic: usize },
    #[error("bad Huffman string: {0}")]
    Huffman(#[from] HuffmanError),
    #[error("dynamic table size update to {size} above the limit {limit}")]
    TableSizeTooLarge { size: usize, limit: usize },
    #[error("dynamic table size update after a field of the block")]
    MisplacedSizeUpdate,
}

/// One decoded header field. `Debug` shows the name and the value's length
/// only: values carry credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Sent as "never indexed" (RFC 7541 §6.2.3): the sender flagged it as
    /// sensitive.
    pub never_indexed: bool,
}

impl std::fmt::Debug for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: <{} bytes>",
            String::from_utf8_lossy(&self.name),
            self.value.len()
        )
    }
}

/// Caps on what one block hands back.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_fields: usize,
    /// Sum of name and value lengths.
    pub max_bytes: usize,
}

/// Which cap cut a block short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Fields,
    Bytes,
}

/// The fields of one header block, in order.
#[derive(Debug, Default)]
pub struct Block {
    pub fields: Vec<Field>,
    /// Fields decoded but not kept because a cap was reached (all fields
    /// after the first one that did not fit).
    pub dropped: usize,
    pub overflow: Option<Overflow>,
}

struct Entry {
    name: Arc<[u8]>,
    value: Arc<[u8]>,
}

impl Entry {
    fn size(&self) -> usize {
        self.name
            .len()
            .saturating_add(self.value.len())
            .saturating_add(ENTRY_OVERHEAD)
    }
}

pub struct Decoder {
    /// Newest first: index 62 is `entries[0]`.
    entries: VecDeque<Entry>,
    /// RFC 7541 §4.1 size of `entries`.
    size: usize,
    /// Current maximum, as set by the encoder's size updates.
    max_size: usize,
    /// Largest size update accepted.
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("entries", &self.entries.len())
            .field("size", &self.size)
            .field("max_size", &self.max_size)
            .field("limit", &self.limit)
            .finish()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::with_max_size(DEFAULT_TABLE_SIZE)
    }

    /// A decoder whose table starts at `max_size` (the value of
    /// `SETTINGS_HEADER_TABLE_SIZE` in force when the first block is sent).
    pub fn with_max_size(max_size: usize) -> Self {
        let max_size = max_size.min(TABLE_SIZE_HARD_CAP);
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size,
            limit: TABLE_SIZE_CAP.max(max_size),
        }
    }

    /// The peer whose encoder we follow was told (by `SETTINGS_HEADER_TABLE_SIZE`
    /// from the other side) that it may use `announced` bytes. Updates up to
    /// `max(TABLE_SIZE_CAP, announced)` are accepted, at most `TABLE_SIZE_HARD_CAP`.
    /// The current size does not change: the encoder signals any change of
    /// its own with a size update (RFC 7541 §4.2).
    pub fn set_peer_setting(&mut self, announced: u32) {
        let announced = usize::try_from(announced).unwrap_or(usize::MAX);
        self.limit = TABLE_SIZE_CAP.max(announced.min(TABLE_SIZE_HARD_CAP));
    }

    /// RFC 7541 §4.1 size of the dynamic table.
    pub fn table_size(&self) -> usize {
        self.size
    }

    /// Current maximum size of the dynamic table.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Entries of the dynamic table, newest first (for tests and debugging;
    /// values are secrets, do not log them).
    pub fn dynamic_entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(|e| (&*e.name, &*e.value))
    }

    /// Bytes held by the dynamic table (for memory accounting).
    pub fn buffered_bytes(&self) -> usize {
        self.size
    }

    /// Decodes one complete header block. On error the table may have been
    /// partly updated: the connection's HPACK state is lost for good.
    pub fn decode(&mut self, block: &[u8], limits: Limits) -> Result<Block, HpackError> {
        let mut cur = Cursor { buf: block, pos: 0 };
        let mut sink = Sink {
            block: Block::default(),
            bytes: 0,
            limits,
        };
        let mut seen_field = false;
        while let Some(first) = cur.next_byte() {
            if first & 0x80 != 0 {
                // Indexed field, §6.1.
                let index = cur.integer(first, 7)?;
                let (name, value) = self.get(index)?;
                sink.push(name, value, false);
                seen_field = true;
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing, §6.2.1.
                let index = cur.integer(first, 6)?;
                let name = match index {
                    0 => Arc::from(cur.string()?),
                    i => self.name_of(i)?,
                };
                let value: Arc<[u8]> = Arc::from(cur.string()?);
                sink.push(&name, &value, false);
                self.insert(Entry { name, value });
                seen_field = true;
            } else if first & 0x20 != 0 {
                // Dynamic table size update, §6.3: only before the first
                // field of a block (§4.2).
                if seen_field {
                    return Err(HpackError::MisplacedSizeUpdate);
                }
                let size = cur.integer(first, 5)?;
                if size > self.limit {
                    return Err(HpackError::TableSizeTooLarge {
                        size,
                        limit: self.limit,
                    });
                }
                self.max_size = size;
                self.evict_to(size);
            } else {
                // Literal without indexing (0000) or never indexed (0001),
                // §6.2.2 and §6.2.3.
                let never_indexed = first & 0x10 != 0;
                let index = cur.integer(first, 4)?;
                let value;
                match index {
                    0 => {
                        let name = cur.string()?;
                        value = cur.string()?;
                        sink.push(&name, &value, never_indexed);
                    }
                    i => {
                        value = cur.string()?;
                        let (name, _) = self.get(i)?;
                        sink.push(name, &value, never_indexed);
                    }
                }
                seen_field = true;
            }
        }
        Ok(sink.block)
    }

    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if let Some(&(name, value)) = index.checked_sub(1).and_then(|i| STATIC_TABLE.get(i)) {
            return Ok((name.as_bytes(), value.as_bytes()));
        }
        index
            .checked_sub(STATIC_TABLE.len().saturating_add(1))
            .and_then(|i| self.entries.get(i))
            .map(|e| (&*e.name, &*e.value))
            .ok_or(HpackError::BadIndex {
                index,
                dynamic: self.entries.len(),
            })
    }

    /// The name at `index`, shared with the table so that inserting a new
    /// entry (which may evict the one named) costs no copy.
    fn name_of(&self, index: usize) -> Result<Arc<[u8]>, HpackError> {
        if let Some(&(name, _)) = index.checked_sub(1).and_then(|i| STATIC_TABLE.get(i)) {
            return Ok(Arc::from(name.as_bytes()));
        }
        index
            .checked_sub(STATIC_TABLE.len().saturating_add(1))
            .and_then(|i| self.entries.get(i))
            .map(|e| Arc::clone(&e.name))
            .ok_or(HpackError::BadIndex {
                index,
                dynamic: self.entries.len(),
            })
    }

    /// §4.4: an entry larger than the table empties it and is not added.
    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size.saturating_sub(size));
        self.size = self.size.saturating_add(size);
        self.entries.push_front(entry);
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some(e) => self.size = self.size.saturating_sub(e.size()),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// Collects fields up to the caps.
struct Sink {
    block: Block,
    bytes: usize,
    limits: Limits,
}

impl Sink {
    fn push(&mut self, name: &[u8], value: &[u8], never_indexed: bool) {
        if self.block.overflow.is_some() {
            self.block.dropped = self.block.dropped.saturating_add(1);
            return;
        }
        let bytes = self
            .bytes
            .saturating_add(name.len())
            .saturating_add(value.len());
        let overflow = if self.block.fields.len() >= self.limits.max_fields {
            Some(Overflow::Fields)
        } else if bytes > self.limits.max_bytes {
            Some(Overflow::Bytes)
        } else {
            None
        };
        if overflow.is_some() {
            self.block.overflow = overflow;
            self.block.dropped = self.block.dropped.saturating_add(1);
            return;
        }
        self.bytes = bytes;
        self.block.fields.push(Field {
            name: name.to_vec(),
            value: value.to_vec(),
            never_indexed,
        });
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next_byte(&mut self) -> Option<u8> {
        let b = self.buf.get(self.pos).copied()?;
        self.pos = self.pos.saturating_add(1);
        Some(b)
    }

    /// §5.1: the low `prefix` bits of `first`, continued on later bytes when
    /// they are all ones. Values above `u32::MAX` are rejected.
    fn integer(&mut self, first: u8, prefix: u8) -> Result<usize, HpackError> {
        let mask = u8::MAX >> 8u8.saturating_sub(prefix);
        let mut value = u64::from(first & mask);
        if value < u64::from(mask) {
            return usize::try_from(value).map_err(|_| HpackError::IntegerOverflow);
        }
        let mut shift = 0u32;
        loop {
            if shift >= MAX_INT_CONTINUATION.saturating_mul(7) {
                return Err(HpackError::IntegerOverflow);
            }
            let b = self.next_byte().ok_or(HpackError::Truncated)?;
            value = value.saturating_add(u64::from(b & 0x7f) << shift);
            if value > u64::from(u32::MAX) {
                return Err(HpackError::IntegerOverflow);
            }
            if b & 0x80 == 0 {
                break;
            }
            shift = shift.saturating_add(7);
        }
        usize::try_from(value).map_err(|_| HpackError::IntegerOverflow)
    }

    /// §5.2: a length-prefixed string, Huffman-coded when the high bit is set.
    fn string(&mut self) -> Result<Vec<u8>, HpackError> {
        let first = self.next_byte().ok_or(HpackError::Truncated)?;
        let len = self.integer(first, 7)?;
        let end = self.pos.checked_add(len).ok_or(HpackError::Truncated)?;
        let raw = self.buf.get(self.pos..end).ok_or(HpackError::Truncated)?;
        self.pos = end;
        if first & 0x80 != 0 {
            let mut out = Vec::new();
            hpack_huffman::decode(raw, &mut out)?;
            Ok(out)
        } else {
            Ok(raw.to_vec())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
