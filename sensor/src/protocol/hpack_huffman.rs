//! The HPACK Huffman code, RFC 7541 Appendix B, and a decoder for it.
//!
//! The table below is the specification's data: symbol `i` (a byte, or 256
//! for EOS) is coded by the low `len` bits of `code`, most significant bit
//! first. The code is canonical (codes of one length are consecutive in
//! symbol order), which the tests check, so a transcription slip shows up.
//!
//! Decoding walks a binary tree built once from the table. Per RFC 7541
//! §5.2 a string is rejected when it contains EOS, or ends with more than 7
//! bits of padding, or with padding that is not a prefix of EOS (all ones).

use std::sync::OnceLock;

/// `(code, bit length)` for symbols 0..=255 and EOS (256).
pub const CODES: [(u32, u8); 257] = [
    // 0..=7
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    // 8..=15
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    // 16..=23
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    // 24..=31
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    // 32..=39: ' ' ! " # $ % & '
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    // 40..=47: ( ) * + , - . /
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    // 48..=55: 0 1 2 3 4 5 6 7
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    // 56..=63: 8 9 : ; < = > ?
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    // 64..=71: @ A B C D E F G
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    // 72..=79: H I J K L M N O
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    // 80..=87: P Q R S T U V W
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    // 88..=95: X Y Z [ \ ] ^ _
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    // 96..=103: ` a b c d e f g
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    // 104..=111: h i j k l m n o
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    // 112..=119: p q r s t u v w
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    // 120..=127: x y z { | } ~ DEL
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    // 128..=135
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    // 136..=143
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    // 144..=151
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    // 152..=159
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    // 160..=167
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    // 168..=175
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    // 176..=183
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    // 184..=191
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    // 192..=199
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    // 200..=207
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    // 208..=215
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    // 216..=223
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    // 224..=231
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    // 232..=239
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    // 240..=247
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    // 248..=255
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    // 256: EOS
    (0x3fffffff, 30),
];

/// The symbol number of EOS, which must never appear in a decoded string.
const EOS: u16 = 256;
/// RFC 7541 §5.2: padding longer than 7 bits is an error.
const MAX_PADDING_BITS: u8 = 7;

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum HuffmanError {
    #[error("EOS symbol inside a Huffman-coded string")]
    Eos,
    #[error("Huffman padding longer than 7 bits")]
    PaddingTooLong,
    #[error("Huffman padding is not a prefix of EOS (all ones)")]
    PaddingNotOnes,
    #[error("bit sequence matches no Huffman code")]
    NoCode,
}

#[derive(Clone, Copy)]
enum Link {
    Empty,
    Node(u16),
    Symbol(u16),
}

/// Binary decoding tree: `nodes[i][bit]` says where bit `bit` leads from
/// node `i`; node 0 is the root. A complete code of 257 symbols has 256
/// internal nodes.
struct Tree {
    nodes: Vec<[Link; 2]>,
}

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(build_tree)
}

fn build_tree() -> Tree {
    let mut nodes: Vec<[Link; 2]> = vec![[Link::Empty; 2]];
    for (symbol, &(code, len)) in (0u16..).zip(CODES.iter()) {
        let mut at = 0usize;
        for shift in (0..len).rev() {
            let bit = usize::from(code >> shift & 1 == 1);
            let next_index = nodes.len();
            let Some(link) = nodes.get_mut(at).and_then(|n| n.get_mut(bit)) else {
                break;
            };
            if shift == 0 {
                *link = Link::Symbol(symbol);
                break;
            }
            match *link {
                Link::Node(n) => at = usize::from(n),
                Link::Empty => {
                    // At most 256 internal nodes: always fits in u16.
                    let Ok(n) = u16::try_from(next_index) else {
                        break;
                    };
                    *link = Link::Node(n);
                    nodes.push([Link::Empty; 2]);
                    at = next_index;
                }
                // Only a table that is not prefix-free gets here; the tests
                // rule that out.
                Link::Symbol(_) => break,
            }
        }
    }
    Tree { nodes }
}

/// Decodes a Huffman-coded string literal, appending to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let nodes = &tree().nodes;
    // Every code is at least 5 bits long.
    out.reserve(input.len().saturating_mul(8) / 5);
    let mut at = 0usize;
    // Bits read since the last complete symbol, and whether all were ones.
    let mut pending: u8 = 0;
    let mut all_ones = true;
    for &byte in input {
        for shift in (0..8u8).rev() {
            let bit = byte >> shift & 1;
            let link = nodes
                .get(at)
                .and_then(|n| n.get(usize::from(bit)))
                .copied()
                .unwrap_or(Link::Empty);
            match link {
                Link::Symbol(EOS) => return Err(HuffmanError::Eos),
                Link::Symbol(s) => {
                    // Symbols other than EOS are byte values.
                    out.push(u8::try_from(s).map_err(|_| HuffmanError::NoCode)?);
                    at = 0;
                    pending = 0;
                    all_ones = true;
                }
                Link::Node(n) => {
                    at = usize::from(n);
                    pending = pending.saturating_add(1);
                    all_ones &= bit == 1;
                }
                Link::Empty => return Err(HuffmanError::NoCode),
            }
        }
    }
    if pending > MAX_PADDING_BITS {
        return Err(HuffmanError::PaddingTooLong);
    }
    if !all_ones {
        return Err(HuffmanError::PaddingNotOnes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    /// Encoder used only to test the decoder: packs codes MSB first and pads
    /// with ones.
    pub(crate) fn encode(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut acc: u64 = 0;
        let mut bits = 0u32;
        for &b in input {
            let (code, len) = CODES[usize::from(b)];
            acc = acc << len | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            let pad = 8 - bits;
            out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
        }
        out
    }

    fn dec(input: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(input, &mut out).map(|()| out)
    }

    #[test]
    fn table_is_a_complete_canonical_code() {
        // Kraft sum of exactly 1: every bit string decodes to something.
        let kraft: u64 = CODES.iter().map(|&(_, len)| 1u64 << (30 - len)).sum();
        assert_eq!(kraft, 1 << 30);
        // Canonical: sorted by (length, symbol), each code is the previous
        // one plus one, shifted left when the length grows. This pins every
        // code value once the lengths are right.
        let mut order: Vec<usize> = (0..CODES.len()).collect();
        order.sort_by_key(|&s| (CODES[s].1, s));
        let mut expect: u32 = 0;
        let mut prev_len = CODES[order[0]].1;
        for (i, &s) in order.iter().enumerate() {
            let (code, len) = CODES[s];
            if i > 0 {
                expect = (expect + 1) << (len - prev_len);
            }
            assert_eq!(code, expect, "symbol {s}");
            assert!(u64::from(code) < 1u64 << len, "symbol {s}");
            prev_len = len;
        }
        // Spot checks against the RFC's listing.
        assert_eq!(CODES[b'a' as usize], (0x3, 5));
        assert_eq!(CODES[b'0' as usize], (0x0, 5));
        assert_eq!(CODES[b'\\' as usize], (0x7fff0, 19));
        assert_eq!(CODES[255], (0x3ffffee, 26));
        assert_eq!(CODES[256], (0x3fffffff, 30));
        assert_eq!(tree().nodes.len(), 256);
    }

    #[test]
    fn rfc_7541_strings() {
        let cases: &[(&str, &str)] = &[
            ("f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"),
            ("a8eb10649cbf", "no-cache"),
            ("25a849e95ba97d7f", "custom-key"),
            ("25a849e95bb8e8b4bf", "custom-value"),
            ("6402", "302"),
            ("aec3771a4b", "private"),
            (
                "d07abe941054d444a8200595040b8166e082a62d1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29ad171863c78f0b97c8e9ae82ae43d3",
                "https://www.example.com",
            ),
            ("9bd9ab", "gzip"),
        ];
        for (hex, text) in cases {
            let bytes = super::super::hpack::tests::hex(hex);
            assert_eq!(dec(&bytes).unwrap(), text.as_bytes(), "{text}");
            assert_eq!(encode(text.as_bytes()), bytes, "{text}");
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(dec(&encode(&all)).unwrap(), all);
        for b in 0..=255u8 {
            assert_eq!(dec(&encode(&[b, b'x', b])).unwrap(), [b, b'x', b]);
        }
        assert_eq!(dec(&[]).unwrap(), b"");
    }

    #[test]
    fn bad_strings_are_rejected() {
        // EOS coded explicitly (30 ones), then padding.
        assert_eq!(dec(&[0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Eos));
        // 'a' (00011) then EOS.
        assert_eq!(dec(&[0x1f, 0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Eos));
        // A full byte of padding: 8 ones.
        assert_eq!(dec(&[0xff]), Err(HuffmanError::PaddingTooLong));
        let mut s = encode(b"abc");
        s.push(0xff);
        assert_eq!(dec(&s), Err(HuffmanError::PaddingTooLong));
        // 'a' then padding 000 (not ones).
        assert_eq!(dec(&[0x18]), Err(HuffmanError::PaddingNotOnes));
        // '0' (00000) then 101 padding.
        assert_eq!(dec(&[0x05]), Err(HuffmanError::PaddingNotOnes));
        // '0' (00000) then 000 padding.
        assert_eq!(dec(&[0x00]), Err(HuffmanError::PaddingNotOnes));
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut ok = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32 * 8) & 0xff) as u8)
                .collect();
            if let Ok(out) = dec(&bytes) {
                ok += 1;
                // Whatever decodes re-encodes to the same bytes.
                assert_eq!(encode(&out), bytes);
            }
        }
        assert!(ok > 0);
    }
}
