//! RFC 7541 Appendix C examples and malformed input.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

const LIMITS: Limits = Limits {
    max_fields: 512,
    max_bytes: 64 * 1024,
};

fn decode(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
    let b = d.decode(&hex(block), LIMITS).unwrap();
    assert_eq!(b.dropped, 0);
    b.fields
        .into_iter()
        .map(|f| {
            (
                String::from_utf8(f.name).unwrap(),
                String::from_utf8(f.value).unwrap(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn table(d: &Decoder) -> Vec<(String, String)> {
    d.dynamic_entries()
        .map(|(n, v)| {
            (
                String::from_utf8(n.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn c2_1_literal_with_indexing() {
    let mut d = Decoder::new();
    let got = decode(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    );
    assert_eq!(got, pairs(&[("custom-key", "custom-header")]));
    assert_eq!(table(&d), pairs(&[("custom-key", "custom-header")]));
    assert_eq!(d.table_size(), 55);
}

#[test]
fn c2_2_literal_without_indexing() {
    let mut d = Decoder::new();
    let got = decode(&mut d, "040c 2f73 616d 706c 652f 7061 7468");
    assert_eq!(got, pairs(&[(":path", "/sample/path")]));
    assert_eq!(d.table_size(), 0);
}

#[test]
fn c2_3_literal_never_indexed() {
    let mut d = Decoder::new();
    let b = d
        .decode(&hex("1008 7061 7373 776f 7264 0673 6563 7265 74"), LIMITS)
        .unwrap();
    assert_eq!(b.fields.len(), 1);
    assert_eq!(b.fields[0].name, b"password");
    assert_eq!(b.fields[0].value, b"secret");
    assert!(b.fields[0].never_indexed);
    assert_eq!(d.table_size(), 0);
    // Debug never shows the value.
    assert_eq!(format!("{:?}", b.fields[0]), "password: <6 bytes>");
}

#[test]
fn c2_4_indexed() {
    let mut d = Decoder::new();
    assert_eq!(decode(&mut d, "82"), pairs(&[(":method", "GET")]));
    assert_eq!(d.table_size(), 0);
}

fn request_sequence(blocks: [&str; 3]) {
    let mut d = Decoder::new();
    let r1 = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    assert_eq!(decode(&mut d, blocks[0]), pairs(&r1));
    assert_eq!(table(&d), pairs(&[(":authority", "www.example.com")]));
    assert_eq!(d.table_size(), 57);

    let mut r2 = r1.to_vec();
    r2.push(("cache-control", "no-cache"));
    assert_eq!(decode(&mut d, blocks[1]), pairs(&r2));
    assert_eq!(
        table(&d),
        pairs(&[
            ("cache-control", "no-cache"),
            (":authority", "www.example.com")
        ])
    );
    assert_eq!(d.table_size(), 110);

    let r3 = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    assert_eq!(decode(&mut d, blocks[2]), pairs(&r3));
    assert_eq!(
        table(&d),
        pairs(&[
            ("custom-key", "custom-value"),
            ("cache-control", "no-cache"),
            (":authority", "www.example.com")
        ])
    );
    assert_eq!(d.table_size(), 164);
}

#[test]
fn c3_requests_without_huffman() {
    request_sequence([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn c4_requests_with_huffman() {
    request_sequence([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

fn response_sequence(blocks: [&str; 3]) {
    // SETTINGS_HEADER_TABLE_SIZE = 256: evictions happen.
    let mut d = Decoder::with_max_size(256);
    let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    let loc = "https://www.example.com";
    assert_eq!(
        decode(&mut d, blocks[0]),
        pairs(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", date1),
            ("location", loc)
        ])
    );
    assert_eq!(
        table(&d),
        pairs(&[
            ("location", loc),
            ("date", date1),
            ("cache-control", "private"),
            (":status", "302")
        ])
    );
    assert_eq!(d.table_size(), 222);

    // ":status: 307" evicts ":status: 302".
    assert_eq!(
        decode(&mut d, blocks[1]),
        pairs(&[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", date1),
            ("location", loc)
        ])
    );
    assert_eq!(
        table(&d),
        pairs(&[
            (":status", "307"),
            ("location", loc),
            ("date", date1),
            ("cache-control", "private")
        ])
    );
    assert_eq!(d.table_size(), 222);

    let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
    let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
    assert_eq!(
        decode(&mut d, blocks[2]),
        pairs(&[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", date2),
            ("location", loc),
            ("content-encoding", "gzip"),
            ("set-cookie", cookie)
        ])
    );
    assert_eq!(
        table(&d),
        pairs(&[
            ("set-cookie", cookie),
            ("content-encoding", "gzip"),
            ("date", date2)
        ])
    );
    assert_eq!(d.table_size(), 215);
}

#[test]
fn c5_responses_without_huffman() {
    response_sequence([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
    ]);
}

#[test]
fn c6_responses_with_huffman() {
    response_sequence([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

/// RFC 7541 §C.1 integer examples, through a size update (5-bit prefix).
#[test]
fn integers() {
    let mut cur = Cursor { buf: &[], pos: 0 };
    assert_eq!(cur.integer(0x0a, 5).unwrap(), 10);
    let buf = [0x9a, 0x0a];
    let mut cur = Cursor { buf: &buf, pos: 0 };
    assert_eq!(cur.integer(0x1f, 5).unwrap(), 1337);
    assert_eq!(cur.pos, 2);
    let mut cur = Cursor { buf: &[], pos: 0 };
    assert_eq!(cur.integer(42, 8).unwrap(), 42);
    // Largest accepted value, then one more.
    let buf = [0x80, 0xff, 0xff, 0xff, 0x0f];
    let mut cur = Cursor { buf: &buf, pos: 0 };
    assert_eq!(cur.integer(0x7f, 7).unwrap(), 127 + 0xffff_ff80);
    assert_eq!(127 + 0xffff_ff80_u64, u64::from(u32::MAX));
    let buf = [0x81, 0xff, 0xff, 0xff, 0x0f];
    let mut cur = Cursor { buf: &buf, pos: 0 };
    assert_eq!(cur.integer(0x7f, 7), Err(HpackError::IntegerOverflow));
    // Endless continuation bytes (zero-valued) and a cut integer.
    let buf = [0x80; 16];
    let mut cur = Cursor { buf: &buf, pos: 0 };
    assert_eq!(cur.integer(0x7f, 7), Err(HpackError::IntegerOverflow));
    let buf = [0xff, 0xff];
    let mut cur = Cursor { buf: &buf, pos: 0 };
    assert_eq!(cur.integer(0x7f, 7), Err(HpackError::Truncated));
}

#[test]
fn size_updates() {
    let mut d = Decoder::new();
    decode(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    );
    assert_eq!(d.table_size(), 55);
    // Update to 0 empties the table, then back to 4096.
    assert!(decode(&mut d, "20 3fe1 1f").is_empty());
    assert_eq!(d.table_size(), 0);
    assert_eq!(d.max_size(), 4096);
    // 64 KiB accepted without any setting, one more refused.
    let mut d = Decoder::new();
    assert!(d.decode(&hex("3fe1 ff03"), LIMITS).is_ok());
    assert_eq!(d.max_size(), 65_536);
    assert_eq!(
        d.decode(&hex("3fe2 ff03"), LIMITS).unwrap_err(),
        HpackError::TableSizeTooLarge {
            size: 65_537,
            limit: 65_536
        }
    );
    // A larger announced setting raises the limit, up to the hard cap.
    d.set_peer_setting(1 << 20);
    assert!(d.decode(&hex("3fe1 ff3f"), LIMITS).is_ok());
    assert_eq!(d.max_size(), 1 << 20);
    d.set_peer_setting(u32::MAX);
    assert_eq!(
        d.decode(&hex("3fe2 ff3f"), LIMITS).unwrap_err(),
        HpackError::TableSizeTooLarge {
            size: (1 << 20) + 1,
            limit: 1 << 20
        }
    );
    // After a field, an update is an error.
    let mut d = Decoder::new();
    assert_eq!(
        d.decode(&hex("82 20"), LIMITS).unwrap_err(),
        HpackError::MisplacedSizeUpdate
    );
}

#[test]
fn entry_larger_than_table_empties_it() {
    let mut d = Decoder::with_max_size(64);
    // custom-key: custom-header is 55 bytes: fits.
    decode(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    );
    assert_eq!(d.table_size(), 55);
    // A 40-byte value with name "x": 73 > 64, table emptied, nothing added.
    let mut block = vec![0x40, 0x01, b'x', 40];
    block.extend_from_slice(&[b'v'; 40]);
    let b = d.decode(&block, LIMITS).unwrap();
    assert_eq!(b.fields.len(), 1);
    assert_eq!(d.table_size(), 0);
    assert_eq!(d.dynamic_entries().count(), 0);
    // Referencing index 62 now fails.
    assert_eq!(
        d.decode(&hex("be"), LIMITS).unwrap_err(),
        HpackError::BadIndex {
            index: 62,
            dynamic: 0
        }
    );
}

#[test]
fn insertion_may_evict_the_entry_it_names() {
    // Table of 100: one entry "custom-key: custom-header" (55). A new entry
    // named by index 62 (itself) with a 20-byte value needs 62 bytes: the
    // named entry is evicted while its name is still needed.
    let mut d = Decoder::with_max_size(100);
    decode(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    );
    let mut block = vec![0x7e, 20];
    block.extend_from_slice(&[b'z'; 20]);
    let b = d.decode(&block, LIMITS).unwrap();
    assert_eq!(b.fields[0].name, b"custom-key");
    assert_eq!(table(&d), pairs(&[("custom-key", "zzzzzzzzzzzzzzzzzzzz")]));
    assert_eq!(d.table_size(), 62);
}

#[test]
fn malformed_blocks() {
    let cases: &[(&str, HpackError)] = &[
        (
            "80",
            HpackError::BadIndex {
                index: 0,
                dynamic: 0,
            },
        ),
        (
            "be",
            HpackError::BadIndex {
                index: 62,
                dynamic: 0,
            },
        ),
        ("ff80 8080 8080 8001", HpackError::IntegerOverflow),
        ("41", HpackError::Truncated),
        ("4105 6162", HpackError::Truncated),
        ("400a 6375", HpackError::Truncated),
        // Huffman value: a full byte of ones as padding.
        (
            "4001 61 81 ff",
            HpackError::Huffman(HuffmanError::PaddingTooLong),
        ),
        // Huffman value with EOS inside.
        (
            "4001 61 84 ffff ffff",
            HpackError::Huffman(HuffmanError::Eos),
        ),
        // Huffman padding of zeros.
        (
            "4001 61 81 18",
            HpackError::Huffman(HuffmanError::PaddingNotOnes),
        ),
        // String length far beyond the block.
        ("407f ffff ff0f", HpackError::Truncated),
    ];
    for (block, err) in cases {
        let mut d = Decoder::new();
        assert_eq!(d.decode(&hex(block), LIMITS).unwrap_err(), *err, "{block}");
    }
}

#[test]
fn caps_drop_fields_but_keep_the_table_in_step() {
    let mut d = Decoder::new();
    // 3 fields: the cap keeps 2; the third (incremental indexing) still
    // lands in the table.
    let block = hex("82 86 400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    let b = d
        .decode(
            &block,
            Limits {
                max_fields: 2,
                max_bytes: 1000,
            },
        )
        .unwrap();
    assert_eq!(b.fields.len(), 2);
    assert_eq!((b.dropped, b.overflow), (1, Some(Overflow::Fields)));
    assert_eq!(d.table_size(), 55);
    let b = d
        .decode(
            &hex("be 82"),
            Limits {
                max_fields: 10,
                max_bytes: 20,
            },
        )
        .unwrap();
    // custom-key + custom-header = 23 bytes > 20: dropped, and so is the
    // field after it.
    assert_eq!(b.fields.len(), 0);
    assert_eq!((b.dropped, b.overflow), (2, Some(Overflow::Bytes)));
}

#[test]
fn amplification_is_cheap() {
    // One 60 KiB entry referenced 60 000 times: decoding must not copy it
    // each time (it would be 3.6 GB), and must keep only what fits.
    let mut d = Decoder::new();
    let mut block = hex("3fe1 ff03"); // table size 64 KiB
    block.extend_from_slice(&[0x40, 0x01, b'n', 0x7f]);
    let len = 60_000usize;
    // Integer encoding of len - 127 with 7-bit continuation.
    let mut rest = len - 127;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
    block.extend(std::iter::repeat_n(b'v', len));
    block.extend(std::iter::repeat_n(0xbe, 60_000));
    let start = std::time::Instant::now();
    let b = d.decode(&block, LIMITS).unwrap();
    assert_eq!(b.fields.len(), 1);
    assert_eq!(b.dropped, 60_000);
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn random_blocks_never_panic() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut d = Decoder::new();
    for round in 0..20_000 {
        let len = (round % 64) + 1;
        let block: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        if d.decode(&block, LIMITS).is_err() {
            d = Decoder::new();
        }
        assert!(d.table_size() <= d.max_size());
        assert!(d.max_size() <= TABLE_SIZE_CAP);
    }
}
