//! Byte-level syntax of HTTP/1.x: start lines, header blocks, framing headers,
//! chunk-size lines and the resynchronisation patterns.

use memchr::memchr;

use super::{Header, Headers, MAX_HEADER_COUNT, ParseError};

/// Longest method token we accept; real methods are short, and a cap lets a
/// noise stream be rejected after a few bytes instead of 64 KiB.
const MAX_METHOD_LEN: usize = 24;
/// Longest resync pattern (`OPTIONS `/`CONNECT `); a partial match at the end
/// of a chunk needs at most this minus one bytes of carry-over.
pub(super) const MAX_PATTERN_LEN: usize = 8;
/// Methods that may start a message after a resync. Any token is accepted as
/// a method on a synchronised stream, but only these are trusted in noise.
const KNOWN_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
const STATUS_PREFIX: &[u8] = b"HTTP/1.";
/// Error messages quote at most this many bytes of the offending input.
const QUOTE_LEN: usize = 80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StartLine {
    Request {
        method: String,
        target: String,
        version: u8,
    },
    Status {
        version: u8,
        status: u16,
        reason: String,
    },
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TransferCoding {
    Absent,
    Chunked,
    /// Present but not ending in `chunked`.
    Other,
}

/// A short, secret-masked excerpt of a bad line for an error message: a
/// malformed header line may well be an `Authorization` one.
pub(super) fn quote(bytes: &[u8]) -> String {
    let cut = bytes.get(..QUOTE_LEN).unwrap_or(bytes);
    crate::identity::mask::mask_text(&String::from_utf8_lossy(cut))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Request-target bytes: visible ASCII plus obs-text; no whitespace/controls.
fn is_target_byte(b: u8) -> bool {
    b > 0x20 && b != 0x7f
}

/// Strip the `\n` (and an optional preceding `\r`) ending a line.
pub(super) fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Check `HTTP/1.0` / `HTTP/1.1`, or a prefix of it when `complete` is false.
fn version_ok(v: &[u8], complete: bool) -> bool {
    match v.split_at_checked(STATUS_PREFIX.len()) {
        Some((p, minor)) => {
            p == STATUS_PREFIX
                && match minor {
                    [b'0' | b'1'] => true,
                    [] => !complete,
                    _ => false,
                }
        }
        None => !complete && STATUS_PREFIX.starts_with(v),
    }
}

/// Whether `line` (without EOL) is a valid request line or, if `complete` is
/// false, a valid prefix of one.
pub(super) fn request_line_ok(line: &[u8], complete: bool) -> bool {
    let Some(sp1) = memchr(b' ', line) else {
        return !complete && line.len() <= MAX_METHOD_LEN && line.iter().all(|&b| is_tchar(b));
    };
    let Some((method, rest)) = line.split_at_checked(sp1) else {
        return false;
    };
    if method.is_empty() || method.len() > MAX_METHOD_LEN || !method.iter().all(|&b| is_tchar(b)) {
        return false;
    }
    let rest = rest.get(1..).unwrap_or_default();
    let Some(sp2) = memchr(b' ', rest) else {
        return !complete && rest.iter().all(|&b| is_target_byte(b));
    };
    let Some((target, version)) = rest.split_at_checked(sp2) else {
        return false;
    };
    !target.is_empty()
        && target.iter().all(|&b| is_target_byte(b))
        && version_ok(version.get(1..).unwrap_or_default(), complete)
}

/// Whether `line` (without EOL) is a valid status line, or a prefix of one.
pub(super) fn status_line_ok(line: &[u8], complete: bool) -> bool {
    let shape_ok = line.iter().enumerate().all(|(i, &b)| match i {
        0..=6 => STATUS_PREFIX.get(i) == Some(&b),
        7 => b == b'0' || b == b'1',
        8 | 12 => b == b' ',
        9..=11 => b.is_ascii_digit(),
        // reason-phrase = *( HTAB / SP / VCHAR / obs-text )
        _ => b == b'\t' || (b >= 0x20 && b != 0x7f),
    });
    // A status code below 100 does not exist; reject it to avoid false syncs.
    shape_ok && line.get(9) != Some(&b'0') && (!complete || line.len() >= 12)
}

/// Position of the first plausible request start (`KNOWN_METHOD SP`).
pub(super) fn find_request_candidate(hay: &[u8]) -> Option<usize> {
    hay.iter().enumerate().find_map(|(i, &b)| {
        if !matches!(b, b'G' | b'P' | b'D' | b'H' | b'O' | b'C' | b'T') {
            return None;
        }
        let rest = hay.get(i..)?;
        KNOWN_METHODS
            .iter()
            .any(|m| rest.starts_with(m))
            .then_some(i)
    })
}

/// Position of the first plausible status line start.
pub(super) fn find_status_candidate(hay: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, STATUS_PREFIX)
}

fn parse_start_line(line: &[u8], is_request: bool) -> Option<StartLine> {
    if is_request {
        let mut parts = line.splitn(3, |&b| b == b' ');
        let method = String::from_utf8_lossy(parts.next()?).into_owned();
        // obs-text in the target is kept lossily rather than rejecting the request.
        let target = String::from_utf8_lossy(parts.next()?).into_owned();
        let version = minor_version(parts.next()?)?;
        Some(StartLine::Request {
            method,
            target,
            version,
        })
    } else {
        // The reason phrase may contain obs-text, so do not require UTF-8.
        let version = minor_version(line.get(..8)?)?;
        let code = std::str::from_utf8(line.get(9..12)?).ok()?;
        let status = code.parse::<u16>().ok()?;
        let reason = String::from_utf8_lossy(line.get(13..).unwrap_or_default()).into_owned();
        Some(StartLine::Status {
            version,
            status,
            reason,
        })
    }
}

fn minor_version(v: &[u8]) -> Option<u8> {
    match v {
        b"HTTP/1.0" => Some(0),
        b"HTTP/1.1" => Some(1),
        _ => None,
    }
}

/// Parse a complete header block (start line through the empty line).
pub(super) fn parse_head(
    head: &[u8],
    is_request: bool,
) -> Result<(StartLine, Headers), ParseError> {
    let mut lines = head.split(|&b| b == b'\n').map(strip_eol);
    let first = lines.next().unwrap_or_default();
    let ok = if is_request {
        request_line_ok(first, true)
    } else {
        status_line_ok(first, true)
    };
    let start = ok
        .then(|| parse_start_line(first, is_request))
        .flatten()
        .ok_or_else(|| ParseError::BadStartLine { line: quote(first) })?;

    let mut headers: Vec<Header> = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if let Some(cont) = line.strip_prefix(b" ").or_else(|| line.strip_prefix(b"\t")) {
            // obs-fold: join with a single SP (RFC 9112 §5.2).
            let prev = headers
                .last_mut()
                .ok_or_else(|| ParseError::BadHeader { line: quote(line) })?;
            prev.value.push(b' ');
            prev.value.extend_from_slice(cont.trim_ascii());
            continue;
        }
        let bad = || ParseError::BadHeader { line: quote(line) };
        let colon = memchr(b':', line).ok_or_else(bad)?;
        let (name, value) = line.split_at_checked(colon).ok_or_else(bad)?;
        // No whitespace is allowed between name and colon (RFC 9112 §5.1).
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(bad());
        }
        if headers.len() >= MAX_HEADER_COUNT {
            return Err(ParseError::TooManyHeaders {
                limit: MAX_HEADER_COUNT,
            });
        }
        headers.push(Header {
            name: String::from_utf8_lossy(name).into_owned(),
            value: value.get(1..).unwrap_or_default().trim_ascii().to_vec(),
        });
    }
    Ok((start, Headers(headers)))
}

/// The message's Content-Length, if any. Repeated fields and list values are
/// allowed only when they all agree (RFC 9110 §8.6).
pub(super) fn content_length(headers: &Headers) -> Result<Option<u64>, ParseError> {
    let mut found: Option<u64> = None;
    for value in headers.get_all("content-length") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            let bad = || ParseError::BadContentLength {
                value: quote(value),
            };
            let n = parse_decimal(part).ok_or_else(bad)?;
            if found.is_some_and(|f| f != n) {
                return Err(bad());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Classify the Transfer-Encoding fields; the last coding decides framing.
pub(super) fn transfer_coding(headers: &Headers) -> TransferCoding {
    let mut last: Option<&[u8]> = None;
    for value in headers.get_all("transfer-encoding") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if !part.is_empty() {
                last = Some(part);
            }
        }
    }
    match last {
        None => TransferCoding::Absent,
        // A coding may carry parameters (`chunked;x=y` is invalid but harmless).
        Some(c) if c.eq_ignore_ascii_case(b"chunked") => TransferCoding::Chunked,
        Some(_) => TransferCoding::Other,
    }
}

/// Parse `chunk-size [ BWS ; ext ]` (line without EOL).
pub(super) fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = strip_eol(line);
    let hex_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    // 16 hex digits fill a u64; more means garbage or an absurd size.
    if hex_len == 0 || hex_len > 16 {
        return None;
    }
    let (hex, rest) = line.split_at_checked(hex_len)?;
    let size = hex.iter().try_fold(0u64, |acc, &b| {
        let d = char::from(b).to_digit(16)?;
        acc.checked_mul(16)?.checked_add(u64::from(d))
    })?;
    let rest = rest.trim_ascii_start();
    (rest.is_empty() || rest.starts_with(b";")).then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert!(request_line_ok(b"GET / HTTP/1.1", true));
        assert!(request_line_ok(b"POST /v1/chat/completions HTTP/1.0", true));
        assert!(request_line_ok(b"PROPFIND /x HTTP/1.1", true));
        assert!(!request_line_ok(b"GET / HTTP/2.0", true));
        assert!(!request_line_ok(b"GET  / HTTP/1.1", true));
        assert!(!request_line_ok(b"GET / HTTP/1.1 ", true));
        assert!(!request_line_ok(b"GET /", true));
        assert!(request_line_ok(b"GET /", false));
        assert!(request_line_ok(b"GET / HTTP/", false));
        assert!(!request_line_ok(b"GET / HTTX", false));
        assert!(!request_line_ok(b"G\x00T", false));
    }

    #[test]
    fn status_lines() {
        assert!(status_line_ok(b"HTTP/1.1 200 OK", true));
        assert!(status_line_ok(b"HTTP/1.1 200", true));
        assert!(status_line_ok(b"HTTP/1.0 404 Not Found", true));
        assert!(!status_line_ok(b"HTTP/1.1 20", true));
        assert!(status_line_ok(b"HTTP/1.1 20", false));
        assert!(!status_line_ok(b"HTTP/1.1 099 x", true));
        assert!(!status_line_ok(b"HTTP/2 200 OK", false));
        assert!(!status_line_ok(b"HTTP/1.1 200 O\x01", true));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"1A;name=val\r"), Some(26));
        assert_eq!(parse_chunk_size(b"0 ; x"), Some(0));
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"zz"), None);
        assert_eq!(parse_chunk_size(b"12 34"), None);
        assert_eq!(parse_chunk_size(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_chunk_size(b"1ffffffffffffffff"), None);
    }

    #[test]
    fn candidates() {
        assert_eq!(find_request_candidate(b"xxGETPOST /"), Some(5));
        assert_eq!(find_request_candidate(b"GE"), None);
        assert_eq!(find_status_candidate(b"\x00HTTP/1.1"), Some(1));
    }

    #[test]
    fn content_length_rules() {
        let h = |vals: &[&str]| {
            Headers(
                vals.iter()
                    .map(|v| Header {
                        name: "Content-Length".into(),
                        value: v.as_bytes().to_vec(),
                    })
                    .collect(),
            )
        };
        assert_eq!(content_length(&h(&["5"])), Ok(Some(5)));
        assert_eq!(content_length(&h(&["5", "5, 5"])), Ok(Some(5)));
        assert!(content_length(&h(&["5", "6"])).is_err());
        assert!(content_length(&h(&["-1"])).is_err());
        assert!(content_length(&h(&["99999999999999999999999"])).is_err());
        assert_eq!(content_length(&Headers::default()), Ok(None));
    }
}
