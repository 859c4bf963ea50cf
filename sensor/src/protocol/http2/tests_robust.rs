//! Hostile and broken input: never a panic, errors counted, memory bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use sensor_common::Direction::{self, Egress, Ingress};

use super::tests::build::*;
use super::tests::{errors, exchanges, with_preface};
use super::tests_h2::{Rng, join, scenario};
use super::*;
use crate::protocol::hpack;

/// Whatever happens, memory stays within the budget plus one header block
/// being assembled per direction plus the HPACK tables.
fn assert_bounded(c: &Http2Connection) {
    let bound = c.retained_budget + 2 * (MAX_HEADER_BYTES + 1024) + 2 * hpack::TABLE_SIZE_HARD_CAP;
    assert!(
        c.buffered_bytes() <= bound,
        "{} > {bound}",
        c.buffered_bytes()
    );
}

/// Feeds everything and checks the counters against the items.
fn feed_all(c: &mut Http2Connection, input: &[(Direction, Vec<u8>)]) -> Vec<Http2Item> {
    let mut items = Vec::new();
    for (ts, (dir, bytes)) in input.iter().enumerate() {
        items.extend(c.feed(*dir, ts as u64, bytes));
        assert_bounded(c);
    }
    items
}

fn consistent(c: &Http2Connection, items: &[Http2Item], before: Http2Stats) {
    let st = c.stats();
    assert_eq!(st.errors - before.errors, errors(items).len() as u64);
    assert_eq!(
        st.exchanges - before.exchanges,
        exchanges(items).len() as u64
    );
}

#[test]
fn random_bytes() {
    let mut rng = Rng(0xfeed_f00d);
    for round in 0..400 {
        let mut c = Http2Connection::new(4096);
        let mut input = Vec::new();
        for i in 0..20 {
            let len = rng.below(300);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let dir = if rng.below(2) == 0 { Egress } else { Ingress };
            if i == 0 && round % 2 == 0 {
                bytes.splice(0..0, PREFACE.iter().copied());
            }
            input.push((dir, bytes));
        }
        let mut items = feed_all(&mut c, &input);
        items.extend(c.close(99));
        consistent(&c, &items, Http2Stats::default());
    }
}

/// Plausible frames with random types, flags, streams and payloads: deeper
/// into the state machine than random bytes.
#[test]
fn random_frames() {
    let mut rng = Rng(0xabad_cafe);
    for _ in 0..300 {
        let mut c = Http2Connection::new(64);
        let mut egress = PREFACE.to_vec();
        let mut ingress = Vec::new();
        for _ in 0..40 {
            let kind = [
                DATA,
                HEADERS,
                CONTINUATION,
                RST_STREAM,
                SETTINGS,
                PUSH_PROMISE,
                GOAWAY,
                0x0b,
            ][rng.below(8)];
            let flags = rng.next() as u8;
            let stream = rng.below(8) as u32;
            let payload: Vec<u8> = match rng.below(4) {
                0 => block(&[(":method", "GET"), (":path", "/"), (":status", "200")]),
                1 => lit_indexed("x", &"y".repeat(rng.below(50))),
                _ => (0..rng.below(40)).map(|_| rng.next() as u8).collect(),
            };
            let f = frame(kind, flags, stream, &payload);
            if rng.below(2) == 0 {
                egress.extend(f);
            } else {
                ingress.extend(f);
            }
        }
        let mut items = Vec::new();
        let (mut e, mut i) = (&egress[..], &ingress[..]);
        while !e.is_empty() || !i.is_empty() {
            let n = rng.below(50).min(e.len());
            items.extend(c.feed(Egress, 1, &e[..n]));
            e = &e[n..];
            let n = rng.below(50).min(i.len());
            items.extend(c.feed(Ingress, 2, &i[..n]));
            i = &i[n..];
            assert_bounded(&c);
        }
        items.extend(c.close(3));
        consistent(&c, &items, Http2Stats::default());
    }
}

#[test]
fn mutated_real_traffic() {
    let s = scenario();
    let mut rng = Rng(0x0bad_5eed);
    for _ in 0..150 {
        let mut streams = [join(&s.log, Egress), join(&s.log, Ingress)];
        for _ in 0..1 + rng.below(4) {
            let d = rng.below(2);
            let len = streams[d].len();
            let at = rng.below(len);
            match rng.below(3) {
                0 => streams[d][at] ^= 1 << rng.below(8),
                1 => streams[d][at] = rng.next() as u8,
                _ => {
                    streams[d].remove(at);
                }
            }
        }
        let mut c = Http2Connection::new(1 << 16);
        let mut items = Vec::new();
        let mut at = [0usize; 2];
        while at[0] < streams[0].len() || at[1] < streams[1].len() {
            let d = rng.below(2);
            let n = (1 + rng.below(3000)).min(streams[d].len() - at[d]);
            let dir = if d == 0 { Egress } else { Ingress };
            items.extend(c.feed(dir, 1, &streams[d][at[d]..at[d] + n]));
            at[d] += n;
            assert_bounded(&c);
        }
        items.extend(c.close(2));
        consistent(&c, &items, Http2Stats::default());
        // Never more exchanges than requests made.
        assert!(exchanges(&items).len() <= s.expect_len);
    }
}

#[test]
fn truncated_traffic() {
    let s = scenario();
    let streams = [join(&s.log, Egress), join(&s.log, Ingress)];
    let mut rng = Rng(31);
    for _ in 0..100 {
        // Each direction cut at a random point, then the connection closes.
        let cut = [
            rng.below(streams[0].len() + 1),
            rng.below(streams[1].len() + 1),
        ];
        let mut c = Http2Connection::new(1 << 20);
        let mut items = c.feed(Egress, 1, &streams[0][..cut[0]]);
        items.extend(c.feed(Ingress, 2, &streams[1][..cut[1]]));
        items.extend(c.close(3));
        // Cut frames are not errors; closing reports what was open.
        assert!(errors(&items).is_empty(), "{:?}", errors(&items));
        let ex = exchanges(&items);
        assert!(ex.len() <= s.expect_len);
        for (r, _) in ex {
            assert_eq!(r.version, 2);
        }
    }
}

#[test]
fn huge_declared_lengths() {
    for (kind, len) in [
        (DATA, 0xff_ffff),
        (DATA, DEFAULT_FRAME_LIMIT + 1),
        (0xee, 0x80_0000),
    ] {
        let mut c = Http2Connection::new(1024);
        let mut f = frame(kind, 0, 1, &[]);
        f[..3].copy_from_slice(&len.to_be_bytes()[1..]);
        let items = c.feed(Ingress, 1, &f);
        assert_eq!(
            errors(&items),
            [&Http2Error::FrameTooLarge {
                direction: Ingress,
                length: len,
                limit: DEFAULT_FRAME_LIMIT
            }]
        );
        assert!(errors(&items)[0].is_fatal());
        // Later bytes are skipped, not buffered.
        c.feed(Ingress, 2, &vec![0; 100_000]);
        assert_eq!(c.stats().bytes_skipped, 100_000);
        assert!(c.buffered_bytes() < 16 * 1024);
    }
    // A header frame above the header block cap fails as soon as its
    // header is read, before its payload is buffered.
    let mut c = Http2Connection::new(1024);
    let mut f = frame(HEADERS, END_HEADERS, 1, &[]);
    f[..3].copy_from_slice(&(MAX_HEADER_BYTES as u32 + 300).to_be_bytes()[1..]);
    let items = c.feed(Egress, 1, &with_preface(&[f]));
    assert!(matches!(
        errors(&items)[..],
        [Http2Error::HeaderBlockTooLarge { stream: 1, .. }]
    ));
    assert!(c.is_broken());
}

#[test]
fn slow_header_block_is_bounded() {
    let mut c = Http2Connection::new(1024);
    let mut b = block(&[(":method", "GET"), (":path", "/")]);
    b.extend(lit("x", &"v".repeat(60_000)));
    let input = with_preface(&[frame(HEADERS, END_HEADERS | END_STREAM, 1, &b)]);
    for chunk in input.chunks(997) {
        assert!(c.feed(Egress, 1, chunk).is_empty());
        assert!(c.buffered_bytes() <= MAX_HEADER_BYTES + 1024 + 4096);
    }
    assert_eq!(c.open_streams(), 1);
    // A CONTINUATION flood is cut at the cap.
    let mut c = Http2Connection::new(1024);
    let mut frames = vec![frame(HEADERS, 0, 1, &block(&[(":method", "GET")]))];
    frames.extend((0..100).map(|_| frame(CONTINUATION, 0, 1, &[0u8; 1000])));
    let items = c.feed(Egress, 1, &with_preface(&frames));
    assert!(matches!(
        errors(&items)[..],
        [Http2Error::HeaderBlockTooLarge { .. }]
    ));
    assert!(c.buffered_bytes() <= MAX_HEADER_BYTES + 1024 + 4096);
}

fn hpack_error(block: Vec<u8>) -> HpackError {
    let mut c = Http2Connection::new(1024);
    let items = c.feed(
        Ingress,
        1,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, &block),
    );
    match errors(&items)[..] {
        [
            Http2Error::Hpack {
                direction: Ingress,
                source,
            },
        ] => source.clone(),
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn hpack_errors_are_fatal_for_their_direction() {
    use crate::protocol::hpack_huffman::HuffmanError;
    // Huffman: EOS inside, padding over 7 bits, padding not all ones.
    let huff = |bytes: &[u8]| {
        let mut b = vec![0x40, 0x01, b'x'];
        b.extend(int(7, 0x80, bytes.len()));
        b.extend_from_slice(bytes);
        b
    };
    assert_eq!(
        hpack_error(huff(&[0xff, 0xff, 0xff, 0xff])),
        HpackError::Huffman(HuffmanError::Eos)
    );
    assert_eq!(
        hpack_error(huff(&[0x1f, 0xff])),
        HpackError::Huffman(HuffmanError::PaddingTooLong)
    );
    assert_eq!(
        hpack_error(huff(&[0x18])),
        HpackError::Huffman(HuffmanError::PaddingNotOnes)
    );
    // Integers: overflow, endless continuation, cut.
    assert_eq!(
        hpack_error(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        HpackError::IntegerOverflow
    );
    assert_eq!(hpack_error(vec![0xff; 40]), HpackError::IntegerOverflow);
    assert_eq!(hpack_error(vec![0x3f]), HpackError::Truncated);
    // Table size update above the cap, and misplaced.
    assert_eq!(
        hpack_error(int(5, 0x20, hpack::TABLE_SIZE_CAP + 1)),
        HpackError::TableSizeTooLarge {
            size: hpack::TABLE_SIZE_CAP + 1,
            limit: hpack::TABLE_SIZE_CAP
        }
    );
    assert_eq!(
        hpack_error(vec![0x88, 0x20]),
        HpackError::MisplacedSizeUpdate
    );
    // Index past the table.
    assert_eq!(
        hpack_error(vec![0x80 | 70]),
        HpackError::BadIndex {
            index: 70,
            dynamic: 0
        }
    );

    // The response direction is gone: open requests come out, later
    // requests too once complete; egress goes on.
    let mut c = Http2Connection::new(1024);
    c.feed(Egress, 1, &with_preface(&[get(1, "/a")]));
    let items = c.feed(Ingress, 2, &frame(HEADERS, END_HEADERS, 1, &[0xbf]));
    assert_eq!(errors(&items).len(), 1);
    assert_eq!(exchanges(&items).len(), 1);
    assert!(exchanges(&items)[0].1.is_none());
    assert!(c.feed(Ingress, 3, &status(3, "200", true)).is_empty());
    assert_eq!(exchanges(&c.feed(Egress, 4, &get(3, "/b"))).len(), 1);
    assert!(!c.is_broken());
    assert_eq!(c.stats().errors, 1);
}

#[test]
fn server_side_capture_does_not_panic() {
    // A server's view: it reads the preface and writes SETTINGS first.
    let mut c = Http2Connection::new(1024);
    let mut items = c.feed(Ingress, 1, &with_preface(&[get(1, "/")]));
    items.extend(c.feed(Egress, 2, &[settings(&[]), status(1, "200", true)].concat()));
    items.extend(c.close(3));
    assert!(exchanges(&items).is_empty());
    let errs = errors(&items);
    assert!(errs.contains(&&Http2Error::BadPreface));
    assert!(errs.iter().any(|e| matches!(
        e,
        Http2Error::FrameTooLarge {
            direction: Ingress,
            ..
        }
    )));
}

#[test]
fn gap_edge_cases() {
    let mut c = Http2Connection::new(1024);
    assert!(c.gap(Egress, 1, 0).is_empty());
    assert_eq!(c.stats(), Http2Stats::default());
    c.feed(Egress, 1, &with_preface(&[get(1, "/")]));
    let items = c.gap(Ingress, 2, u64::MAX);
    assert_eq!(exchanges(&items).len(), 1);
    let items = c.gap(Egress, 3, u64::MAX);
    assert!(items.is_empty() || errors(&items).len() == 1);
    assert_eq!(c.stats().gap_bytes, u64::MAX);
    assert!(c.is_broken());
    // Fed after both directions stopped: counted as skipped.
    c.feed(Egress, 4, b"abc");
    assert_eq!(c.stats().bytes_skipped, 3);
    // close starts over.
    c.close(5);
    assert!(!c.is_broken());
    // A gap in the middle of the preface.
    let mut c = Http2Connection::new(1024);
    c.feed(Egress, 1, &PREFACE[..5]);
    let items = c.gap(Egress, 2, 3);
    assert_eq!(
        errors(&items),
        [&Http2Error::Desync {
            lost: 3,
            direction: Egress
        }]
    );
    assert!(c.is_broken());
}

#[test]
fn empty_frames_at_the_end_of_input() {
    let mut c = Http2Connection::new(1024);
    let b = block(&[(":method", "POST"), (":path", "/")]);
    c.feed(
        Egress,
        1,
        &with_preface(&[frame(HEADERS, END_HEADERS, 1, &b)]),
    );
    // An empty DATA frame with END_STREAM, alone in its call.
    assert!(
        c.feed(Egress, 2, &frame(DATA, END_STREAM, 1, &[]))
            .is_empty()
    );
    c.feed(Ingress, 3, &status(1, "200", false));
    let items = c.feed(Ingress, 4, &frame(DATA, END_STREAM, 1, &[]));
    let (r, s) = exchanges(&items)[0];
    assert!(!r.body_truncated);
    assert_eq!(r.last_ts, 2);
    assert_eq!(s.unwrap().last_ts, 4);
}

#[test]
fn oversized_settings_are_read_in_part() {
    let mut c = Http2Connection::new(1024);
    let entries: Vec<(u16, u32)> = (0..5000).map(|i| (0x100 + i as u16, 7)).collect();
    let items = c.feed(Ingress, 1, &settings(&entries));
    assert!(items.is_empty());
    assert!(c.buffered_bytes() < 8192);
}
