//! Which names a process resolved to which addresses, read from the DNS
//! responses it receives (RFC 1035; AAAA records from RFC 3596) on a UDP
//! socket, or on a TCP one behind the two-byte length prefix.
//!
//! The input is what the capture copied, so it may be cut (at 512 or
//! 4096 bytes): every answer record whole before the cut is used, and
//! nothing is read from a record the cut reaches. The bytes come from the
//! network, so nothing here trusts them: compression pointers must go
//! back to an earlier name (so they can never loop) and are followed at
//! most [`MAX_POINTERS`] times, names and labels are held to their
//! limits, and only the answer section's records reachable from the
//! question's name (directly or through its CNAME chain) are believed. A
//! response cannot map a name the process did not ask about.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One answer: the name the process asked for (the question's QNAME,
/// lower-cased, no trailing dot), and one address it got for it (through
/// any CNAME chain in the answer section: a question for `api.openai.com`
/// answered by a CNAME to `x.cdn.net` and A records for `x.cdn.net` maps
/// `api.openai.com` to those addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub addr: IpAddr,
    /// Seconds the mapping may be cached: the address record's TTL, or
    /// less when a CNAME on the way to it expires sooner.
    pub ttl: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("not a DNS response (QR bit clear)")]
    NotResponse,
    #[error("DNS message cut before its answer section")]
    Truncated,
    #[error("malformed DNS name")]
    BadName,
    #[error("DNS compression pointer not to an earlier name")]
    BadPointer,
    #[error("DNS name follows more than {MAX_POINTERS} compression pointers")]
    TooManyPointers,
    #[error("malformed DNS resource record")]
    BadRecord,
}

/// Compression pointers followed in one name before giving up.
pub const MAX_POINTERS: usize = 64;
/// Answers reported from one message.
pub const MAX_RESULTS: usize = 64;
/// CNAMEs followed from the question's name.
const MAX_CNAME_HOPS: usize = 16;

const HEADER_LEN: usize = 12;
/// Longest name on the wire, length bytes and final zero included.
const MAX_NAME_LEN: usize = 255;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const CLASS_CH: u16 = 3;
const CLASS_HS: u16 = 4;
const CLASS_ANY: u16 = 255;

/// The fixed 12-byte header (RFC 1035 §4.1.1).
struct Header {
    flags: u16,
    qdcount: u16,
    ancount: u16,
    nscount: u16,
}

impl Header {
    fn read(msg: &[u8]) -> Option<Self> {
        if msg.len() < HEADER_LEN {
            return None;
        }
        Some(Self {
            flags: u16_at(msg, 2)?,
            qdcount: u16_at(msg, 4)?,
            ancount: u16_at(msg, 6)?,
            nscount: u16_at(msg, 8)?,
        })
    }

    fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    fn opcode(&self) -> u16 {
        (self.flags >> 11) & 0xF
    }

    fn rcode(&self) -> u16 {
        self.flags & 0xF
    }
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    let b = msg.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

fn u32_at(msg: &[u8], at: usize) -> Option<u32> {
    let b = msg.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

/// Reads the name at `start`: its text, lower-cased (`None` when a label
/// holds a byte that is not printable ASCII, or a dot, which would make it
/// read as another name: such a name is stepped over but never reported),
/// and the offset just past it in place.
///
/// Running out of bytes in place is [`DnsError::Truncated`] (the capture
/// was cut). A pointer must go past the header and strictly before the
/// run of labels it ends, that is, to a name written earlier in the
/// message (RFC 1035 §4.1.4: "a prior occurrence"), so every jump goes
/// further back and no loop is possible; the hop limit stands anyway.
/// Running out of bytes after a jump is a bad pointer: an earlier name is
/// always whole.
fn read_name(msg: &[u8], start: usize) -> Result<(Option<String>, usize), DnsError> {
    let mut pos = start;
    // Where the labels now being read began: a pointer must go before it.
    let mut run_start = start;
    // Offset just past the name in place, known at its first pointer.
    let mut end_in_place: Option<usize> = None;
    let mut hops = 0usize;
    let mut wire_len = 1usize; // the final zero
    let mut text = String::new();
    let mut printable = true;
    let cut = |jumped: bool| {
        if jumped {
            DnsError::BadPointer
        } else {
            DnsError::Truncated
        }
    };
    loop {
        let jumped = end_in_place.is_some();
        let len = *msg.get(pos).ok_or(cut(jumped))?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                let end = match end_in_place {
                    Some(end) => end,
                    None => pos.checked_add(1).ok_or(DnsError::Truncated)?,
                };
                return Ok((printable.then_some(text), end));
            }
            // The top two bits clear: a label of at most 63 bytes.
            0x00 => {
                let n = usize::from(len);
                wire_len = wire_len
                    .checked_add(n)
                    .and_then(|l| l.checked_add(1))
                    .ok_or(DnsError::BadName)?;
                if wire_len > MAX_NAME_LEN {
                    return Err(DnsError::BadName);
                }
                let from = pos.checked_add(1).ok_or(cut(jumped))?;
                let to = from.checked_add(n).ok_or(cut(jumped))?;
                let label = msg.get(from..to).ok_or(cut(jumped))?;
                if printable {
                    if !text.is_empty() {
                        text.push('.');
                    }
                    for &b in label {
                        if b.is_ascii_graphic() && b != b'.' {
                            text.push(char::from(b.to_ascii_lowercase()));
                        } else {
                            printable = false;
                            break;
                        }
                    }
                }
                pos = to;
            }
            0xC0 => {
                let next = pos.checked_add(1).ok_or(cut(jumped))?;
                let low = *msg.get(next).ok_or(cut(jumped))?;
                let target = usize::from(u16::from_be_bytes([len & 0x3F, low]));
                hops = hops.checked_add(1).ok_or(DnsError::TooManyPointers)?;
                if hops > MAX_POINTERS {
                    return Err(DnsError::TooManyPointers);
                }
                if target < HEADER_LEN || target >= run_start {
                    return Err(DnsError::BadPointer);
                }
                if end_in_place.is_none() {
                    end_in_place = Some(next.checked_add(1).ok_or(DnsError::Truncated)?);
                }
                pos = target;
                run_start = target;
            }
            // 0x40 (extended label types, RFC 6891 §5) and 0x80: reserved.
            _ => return Err(DnsError::BadName),
        }
    }
}

/// What an answer record says, as far as this module cares.
enum Data {
    Addr(IpAddr),
    /// The canonical name, `None` when it is not reportable.
    Cname(Option<String>),
    Other,
}

struct Record {
    owner: Option<String>,
    ttl: u32,
    data: Data,
}

/// Reads the resource record at `pos` and the offset past it.
/// [`DnsError::Truncated`] when the capture ends before the record does.
fn read_record(msg: &[u8], pos: usize) -> Result<(Record, usize), DnsError> {
    let (owner, after_name) = read_name(msg, pos)?;
    let rtype = u16_at(msg, after_name).ok_or(DnsError::Truncated)?;
    let class = after_name
        .checked_add(2)
        .and_then(|at| u16_at(msg, at))
        .ok_or(DnsError::Truncated)?;
    let ttl = after_name
        .checked_add(4)
        .and_then(|at| u32_at(msg, at))
        .ok_or(DnsError::Truncated)?;
    let rdlength = after_name
        .checked_add(8)
        .and_then(|at| u16_at(msg, at))
        .ok_or(DnsError::Truncated)?;
    let rdata_start = after_name.checked_add(10).ok_or(DnsError::Truncated)?;
    let rdata_end = rdata_start
        .checked_add(usize::from(rdlength))
        .ok_or(DnsError::Truncated)?;
    let rdata = msg.get(rdata_start..rdata_end).ok_or(DnsError::Truncated)?;
    // RFC 2181 §8: a TTL with the top bit set is read as zero.
    let ttl = if ttl > 0x7FFF_FFFF { 0 } else { ttl };
    let data = match (class, rtype) {
        (CLASS_IN, TYPE_A) => {
            let octets: [u8; 4] = rdata.try_into().map_err(|_| DnsError::BadRecord)?;
            Data::Addr(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        (CLASS_IN, TYPE_AAAA) => {
            let octets: [u8; 16] = rdata.try_into().map_err(|_| DnsError::BadRecord)?;
            Data::Addr(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        (CLASS_IN, TYPE_CNAME) => {
            // The whole RDATA is present, so a name running past the
            // message's end ran past the RDATA too: the record is bad.
            let (target, end) = read_name(msg, rdata_start).map_err(|e| match e {
                DnsError::Truncated => DnsError::BadRecord,
                other => other,
            })?;
            if end != rdata_end {
                return Err(DnsError::BadRecord);
            }
            Data::Cname(target)
        }
        _ => Data::Other,
    };
    Ok((Record { owner, ttl, data }, rdata_end))
}

/// Every answer record, up to `ancount` or to the last one whole before
/// the capture's cut.
fn read_answers(msg: &[u8], mut pos: usize, ancount: u16) -> Result<Vec<Record>, DnsError> {
    let mut records = Vec::new();
    for _ in 0..ancount {
        match read_record(msg, pos) {
            Ok((record, next)) => {
                records.push(record);
                pos = next;
            }
            Err(DnsError::Truncated) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(records)
}

/// The addresses `qname` resolves to: its own A/AAAA records and those of
/// the names its CNAME chain leads to, nothing else.
fn resolve(qname: &str, records: &[Record]) -> Vec<Resolved> {
    // Each name on the chain, with the shortest TTL of the CNAMEs that
    // led to it.
    let mut chain: Vec<(&str, u32)> = vec![(qname, u32::MAX)];
    let mut current = (qname, u32::MAX);
    while chain.len() <= MAX_CNAME_HOPS {
        let next = records.iter().find_map(|r| match (&r.owner, &r.data) {
            (Some(owner), Data::Cname(Some(target))) if owner == current.0 => {
                Some((target.as_str(), r.ttl.min(current.1)))
            }
            _ => None,
        });
        let Some(next) = next else { break };
        if chain.iter().any(|(name, _)| *name == next.0) {
            break; // a CNAME loop: the names already found stand
        }
        chain.push(next);
        current = next;
    }
    let mut out: Vec<Resolved> = Vec::new();
    for record in records {
        let (Some(owner), Data::Addr(addr)) = (&record.owner, &record.data) else {
            continue;
        };
        let Some((_, chain_ttl)) = chain.iter().find(|(name, _)| name == owner) else {
            continue;
        };
        if out.iter().any(|r| r.addr == *addr) {
            continue;
        }
        out.push(Resolved {
            name: qname.to_owned(),
            addr: *addr,
            ttl: record.ttl.min(*chain_ttl),
        });
        if out.len() >= MAX_RESULTS {
            break;
        }
    }
    out
}

/// The addresses a DNS response message gives for its (first) question's
/// name. A failed lookup (RCODE other than 0), a non-QUERY opcode, or a
/// question name that is not printable ASCII gives `Ok` and no answers; a
/// query is [`DnsError::NotResponse`]. A message cut by the capture gives
/// the answers whole before the cut, or [`DnsError::Truncated`] when the
/// cut falls before the answer section.
pub fn parse_response(msg: &[u8]) -> Result<Vec<Resolved>, DnsError> {
    let header = Header::read(msg).ok_or(DnsError::Truncated)?;
    if !header.is_response() {
        return Err(DnsError::NotResponse);
    }
    if header.opcode() != 0 || header.rcode() != 0 || header.qdcount == 0 {
        return Ok(Vec::new());
    }
    let mut pos = HEADER_LEN;
    let mut qname = None;
    for index in 0..header.qdcount {
        let (name, after_name) = read_name(msg, pos)?;
        // QTYPE and QCLASS.
        pos = after_name.checked_add(4).ok_or(DnsError::Truncated)?;
        if pos > msg.len() {
            return Err(DnsError::Truncated);
        }
        if index == 0 {
            qname = name;
        }
    }
    let Some(qname) = qname.filter(|name| !name.is_empty()) else {
        return Ok(Vec::new());
    };
    let records = read_answers(msg, pos, header.ancount)?;
    Ok(resolve(&qname, &records))
}

/// [`parse_response`] for the first message of a DNS-over-TCP stream
/// chunk: a two-byte length, then the message (cut if the chunk is;
/// bytes past it, the next message, are ignored).
pub fn parse_tcp(stream_chunk: &[u8]) -> Result<Vec<Resolved>, DnsError> {
    let [high, low, body @ ..] = stream_chunk else {
        return Err(DnsError::Truncated);
    };
    let len = usize::from(u16::from_be_bytes([*high, *low]));
    parse_response(body.get(..len).unwrap_or(body))
}

/// Whether the bytes look like a standard DNS query (QR = 0, opcode
/// QUERY, no answers) with at least one whole, well-formed question: lets
/// the caller confirm a socket speaks DNS before reading its responses.
#[must_use]
pub fn is_query(msg: &[u8]) -> bool {
    let Some(header) = Header::read(msg) else {
        return false;
    };
    if header.is_response()
        || header.opcode() != 0
        || header.rcode() != 0
        || header.qdcount == 0
        || header.ancount != 0
        || header.nscount != 0
    {
        return false;
    }
    let Ok((_, after_name)) = read_name(msg, HEADER_LEN) else {
        return false;
    };
    let qclass = after_name.checked_add(2).and_then(|at| u16_at(msg, at));
    matches!(qclass, Some(CLASS_IN | CLASS_CH | CLASS_HS | CLASS_ANY))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Real exchanges, captured from the resolver of the machine this was
    // written on (a query built by hand, sent over UDP to port 53; the
    // bytes are the datagrams as sent and received).
    const REAL_QUERY_A: &str =
        "123401000001000000000000067374617469630663726174657302696f0000010001";
    /// static.crates.io A: one A record, owner a pointer to the question.
    const REAL_A: &str = "123481800001000100000000067374617469630663726174657302696f\
                          0000010001c00c000100010000003c0004cb007150";
    const REAL_A2: &str = "1234818000010001000000000566696c65730c707974686f6e686f73746564\
                           036f72670000010001c00c000100010000003c0004cb007150";
    /// static.crates.io AAAA: no data (RCODE 0, no answers).
    const REAL_NODATA: &str =
        "123481800001000000000000067374617469630663726174657302696f00001c0001";
    /// crates.io A: NXDOMAIN.
    const REAL_NXDOMAIN: &str = "1234818300010000000000000663726174657302696f0000010001";
    /// What TCP port 53 of that resolver answered: an HTTP proxy's 400.
    const REAL_TCP_HTTP: &str = "485454502f312e31203430302042616420526571756573740d0a636f6e\
                                 6e656374696f6e3a20636c6f73650d0a636f6e74656e742d6c656e6774\
                                 683a20300d0a0d0a";

    /// Builds messages by hand, following RFC 1035 §4.
    struct Msg(Vec<u8>);

    impl Msg {
        fn new(flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Self {
            let mut b = vec![0xab, 0xcd];
            for v in [flags, qd, an, ns, ar] {
                b.extend_from_slice(&v.to_be_bytes());
            }
            Self(b)
        }
        /// A response (QR, RD, RA set) with one question for `qname`.
        fn response(qname: &str, qtype: u16, an: u16) -> Self {
            let mut m = Self::new(0x8180, 1, an, 0, 0);
            m.name(qname).u16(qtype).u16(CLASS_IN);
            m
        }
        fn at(&self) -> u16 {
            u16::try_from(self.0.len()).unwrap()
        }
        fn raw(&mut self, b: &[u8]) -> &mut Self {
            self.0.extend_from_slice(b);
            self
        }
        fn u16(&mut self, v: u16) -> &mut Self {
            self.raw(&v.to_be_bytes())
        }
        fn labels(&mut self, name: &str) -> &mut Self {
            for label in name.split('.').filter(|l| !l.is_empty()) {
                self.0.push(u8::try_from(label.len()).unwrap());
                self.raw(label.as_bytes());
            }
            self
        }
        /// An uncompressed name.
        fn name(&mut self, name: &str) -> &mut Self {
            self.labels(name).raw(&[0])
        }
        fn ptr(&mut self, to: u16) -> &mut Self {
            self.u16(0xC000 | to)
        }
        /// TYPE, CLASS, TTL and RDLENGTH, after an owner name.
        fn rr(&mut self, rtype: u16, class: u16, ttl: u32, rdlength: u16) -> &mut Self {
            self.u16(rtype)
                .u16(class)
                .raw(&ttl.to_be_bytes())
                .u16(rdlength)
        }
        fn a(&mut self, ttl: u32, ip: [u8; 4]) -> &mut Self {
            self.rr(TYPE_A, CLASS_IN, ttl, 4).raw(&ip)
        }
        fn aaaa(&mut self, ttl: u32, ip: Ipv6Addr) -> &mut Self {
            self.rr(TYPE_AAAA, CLASS_IN, ttl, 16).raw(&ip.octets())
        }
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn res(name: &str, addr: IpAddr, ttl: u32) -> Resolved {
        Resolved {
            name: name.to_owned(),
            addr,
            ttl,
        }
    }

    /// `api.openai.com` CNAME `x.cdn.net` (compressed against the
    /// question), CNAME `edge.x.cdn.net` (compressed against the first
    /// CNAME's target), then two A and one AAAA for the end of the chain.
    fn cname_chain() -> Vec<u8> {
        let mut m = Msg::response("API.OpenAI.com", TYPE_A, 5);
        let q = HEADER_LEN as u16;
        m.ptr(q).rr(TYPE_CNAME, CLASS_IN, 300, 11);
        let x = m.at();
        m.name("x.cdn.net");
        m.ptr(x).rr(TYPE_CNAME, CLASS_IN, 120, 7);
        let edge = m.at();
        m.labels("edge").ptr(x);
        m.ptr(edge).a(600, [104, 18, 33, 45]);
        m.ptr(edge).a(30, [172, 66, 0, 243]);
        m.ptr(edge)
            .aaaa(600, "2606:4700:4400::6812:212d".parse().unwrap());
        m.0
    }

    #[test]
    fn real_a_responses() {
        assert_eq!(
            parse_response(&hex(REAL_A)).unwrap(),
            vec![res("static.crates.io", v4(203, 0, 113, 80), 60)]
        );
        assert_eq!(
            parse_response(&hex(REAL_A2)).unwrap(),
            vec![res("files.pythonhosted.org", v4(203, 0, 113, 80), 60)]
        );
    }

    #[test]
    fn real_nodata_and_nxdomain_give_nothing() {
        assert_eq!(parse_response(&hex(REAL_NODATA)), Ok(vec![]));
        assert_eq!(parse_response(&hex(REAL_NXDOMAIN)), Ok(vec![]));
        // NXDOMAIN with an answer (a lying server) is still nothing.
        let mut m = hex(REAL_A);
        m[3] |= 3;
        assert_eq!(parse_response(&m), Ok(vec![]));
    }

    #[test]
    fn queries_are_told_apart() {
        let query = hex(REAL_QUERY_A);
        assert!(is_query(&query));
        assert_eq!(parse_response(&query), Err(DnsError::NotResponse));
        for response in [REAL_A, REAL_A2, REAL_NODATA, REAL_NXDOMAIN] {
            assert!(!is_query(&hex(response)));
        }
        // An EDNS query (an OPT record in the additional section).
        let mut m = Msg::new(0x0120, 1, 0, 0, 1);
        m.name("api.openai.com").u16(TYPE_AAAA).u16(CLASS_IN);
        m.raw(&[0]).rr(41, 1232, 0, 0);
        assert!(is_query(&m.0));
        // No question, a cut question, another opcode, another class, text.
        assert!(!is_query(&Msg::new(0x0100, 0, 0, 0, 0).0));
        assert!(!is_query(&query[..query.len() - 1]));
        assert!(!is_query(&query[..HEADER_LEN]));
        let mut notify = query.clone();
        notify[2] |= 4 << 3;
        assert!(!is_query(&notify));
        let mut class = query.clone();
        *class.last_mut().unwrap() = 9;
        assert!(!is_query(&class));
        assert!(!is_query(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!is_query(&[]));
    }

    #[test]
    fn cname_chain_with_compression() {
        let got = parse_response(&cname_chain()).unwrap();
        // Lower-cased question name; TTL capped by the 120 s CNAME.
        assert_eq!(
            got,
            vec![
                res("api.openai.com", v4(104, 18, 33, 45), 120),
                res("api.openai.com", v4(172, 66, 0, 243), 30),
                res(
                    "api.openai.com",
                    "2606:4700:4400::6812:212d".parse().unwrap(),
                    120
                ),
            ]
        );
    }

    #[test]
    fn aaaa_answer() {
        let mut m = Msg::response("example.com", TYPE_AAAA, 1);
        m.ptr(12).aaaa(3600, Ipv6Addr::LOCALHOST);
        assert_eq!(
            parse_response(&m.0).unwrap(),
            vec![res("example.com", IpAddr::V6(Ipv6Addr::LOCALHOST), 3600)]
        );
    }

    #[test]
    fn unrelated_records_are_not_trusted() {
        let mut m = Msg::response("example.com", TYPE_A, 5);
        // An A record for another name, a CNAME from another name to a
        // name that has an address, a record of another class, and one
        // with a TTL whose top bit is set (RFC 2181: zero).
        m.name("api.openai.com").a(60, [6, 6, 6, 6]);
        m.name("evil.test").rr(TYPE_CNAME, CLASS_IN, 60, 2).ptr(12);
        m.name("evil.test").a(60, [7, 7, 7, 7]);
        m.ptr(12).rr(TYPE_A, CLASS_CH, 60, 4).raw(&[8, 8, 8, 8]);
        m.ptr(12).a(0x8000_0000, [93, 184, 216, 34]);
        // The additional section is not read at all.
        m.0[11] = 1;
        m.ptr(12).a(60, [9, 9, 9, 9]);
        assert_eq!(
            parse_response(&m.0).unwrap(),
            vec![res("example.com", v4(93, 184, 216, 34), 0)]
        );
    }

    #[test]
    fn cname_loop_stops() {
        let mut m = Msg::response("a.test", TYPE_A, 3);
        m.ptr(12).rr(TYPE_CNAME, CLASS_IN, 60, 8).name("b.test");
        m.name("b.test").rr(TYPE_CNAME, CLASS_IN, 60, 2).ptr(12);
        m.name("b.test").a(60, [1, 2, 3, 4]);
        assert_eq!(
            parse_response(&m.0).unwrap(),
            vec![res("a.test", v4(1, 2, 3, 4), 60)]
        );
    }

    #[test]
    fn pointer_loops_and_strays() {
        // A pointer to itself.
        let mut m = Msg::response("a.test", TYPE_A, 1);
        let here = m.at();
        m.ptr(here).a(60, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadPointer));
        // A label, then a pointer back to that label: would loop forever
        // if pointers only had to point before themselves.
        let mut m = Msg::response("a.test", TYPE_A, 1);
        let here = m.at();
        m.labels("x").ptr(here).a(60, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadPointer));
        // Two names pointing at each other: one of them points forward.
        let mut m = Msg::response("a.test", TYPE_A, 2);
        let first = m.at();
        m.ptr(first + 16).a(60, [1, 1, 1, 1]);
        assert_eq!(m.at(), first + 16);
        m.ptr(first).a(60, [2, 2, 2, 2]);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadPointer));
        // Past the end, into the header, in the question.
        for to in [0x3FFF, 2] {
            let mut m = Msg::response("a.test", TYPE_A, 1);
            m.ptr(to).a(60, [1, 1, 1, 1]);
            assert_eq!(parse_response(&m.0), Err(DnsError::BadPointer));
        }
        let mut m = Msg::new(0x8180, 1, 0, 0, 0);
        m.labels("a").ptr(12).u16(1).u16(1);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadPointer));
        // A CNAME's target pointing past the end.
        let mut m = Msg::response("a.test", TYPE_A, 1);
        m.ptr(12).rr(TYPE_CNAME, CLASS_IN, 60, 2).ptr(0x3000);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadPointer));
    }

    #[test]
    fn pointer_hops_are_limited() {
        // A chain of pointers, each to the one before it (legal, each
        // going further back), kept in an unknown record's RDATA; then an
        // A record named by the last of them.
        let build = |hops: u16| {
            let mut m = Msg::response("a.test", TYPE_A, 2);
            m.ptr(12).rr(99, CLASS_IN, 60, 2 * hops);
            let mut prev = 12;
            for _ in 0..hops {
                let here = m.at();
                m.ptr(prev);
                prev = here;
            }
            m.ptr(prev).a(60, [1, 2, 3, 4]);
            m.0
        };
        // The A record's name takes `hops + 1` pointers.
        let ok = parse_response(&build(63)).unwrap();
        assert_eq!(ok, vec![res("a.test", v4(1, 2, 3, 4), 60)]);
        assert_eq!(parse_response(&build(64)), Err(DnsError::TooManyPointers));
        assert_eq!(parse_response(&build(2000)), Err(DnsError::TooManyPointers));
    }

    #[test]
    fn names_are_held_to_their_limits() {
        // A label length with the reserved top bits (0x40: 64 bytes).
        let mut m = Msg::response("a.test", TYPE_A, 1);
        m.raw(&[0x40])
            .raw(&[b'a'; 64])
            .raw(&[0])
            .a(60, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadName));
        let mut m = Msg::response("a.test", TYPE_A, 1);
        m.raw(&[0x80, 0]).a(60, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadName));
        // 63-byte labels: four make 257 bytes on the wire, three 193.
        let long = |n: usize| vec!["a".repeat(63); n].join(".");
        let mut m = Msg::response(&long(3), TYPE_A, 1);
        m.ptr(12).a(60, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.0).unwrap()[0].name, long(3));
        let mut m = Msg::response(&long(4), TYPE_A, 1);
        m.ptr(12).a(60, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadName));
        // Over 255 only through a pointer: "b" * 63 + pointer to it.
        let mut m = Msg::response(&long(3), TYPE_A, 1);
        m.labels(&"b".repeat(63)).ptr(12).a(60, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadName));
    }

    #[test]
    fn unprintable_names_are_skipped() {
        // A question with a control byte: nothing to report.
        let mut m = Msg::new(0x8180, 1, 1, 0, 0);
        m.raw(&[3, b'a', 7, b'b', 4]).raw(b"test").raw(&[0]);
        m.u16(TYPE_A).u16(CLASS_IN);
        m.ptr(12).a(60, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.0), Ok(vec![]));
        // A label holding a dot would read as another name.
        let mut m = Msg::new(0x8180, 1, 1, 0, 0);
        m.raw(&[10])
            .raw(b"api.openai")
            .raw(&[3])
            .raw(b"com")
            .raw(&[0]);
        m.u16(TYPE_A).u16(CLASS_IN);
        m.ptr(12).a(60, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.0), Ok(vec![]));
        // A CNAME to an unprintable name ends the chain there.
        let mut m = Msg::response("a.test", TYPE_A, 2);
        m.ptr(12).rr(TYPE_CNAME, CLASS_IN, 60, 5);
        let target = m.at();
        m.raw(&[2, b'x', 0xff]).ptr(14);
        m.ptr(target).a(60, [1, 1, 1, 1]);
        assert_eq!(parse_response(&m.0), Ok(vec![]));
    }

    #[test]
    fn malformed_records_are_refused() {
        let mut m = Msg::response("a.test", TYPE_A, 1);
        m.ptr(12).rr(TYPE_A, CLASS_IN, 60, 5).raw(&[1, 2, 3, 4, 5]);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadRecord));
        let mut m = Msg::response("a.test", TYPE_AAAA, 1);
        m.ptr(12).rr(TYPE_AAAA, CLASS_IN, 60, 4).raw(&[1, 2, 3, 4]);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadRecord));
        // A CNAME whose name is longer or shorter than its RDATA.
        let mut m = Msg::response("a.test", TYPE_A, 1);
        m.ptr(12).rr(TYPE_CNAME, CLASS_IN, 60, 3).name("b.test");
        assert_eq!(parse_response(&m.0), Err(DnsError::BadRecord));
        let mut m = Msg::response("a.test", TYPE_A, 1);
        m.ptr(12)
            .rr(TYPE_CNAME, CLASS_IN, 60, 4)
            .ptr(12)
            .raw(&[0, 0]);
        assert_eq!(parse_response(&m.0), Err(DnsError::BadRecord));
    }

    #[test]
    fn results_are_capped_and_deduplicated() {
        let mut m = Msg::response("many.test", TYPE_A, 201);
        for i in 0..200u8 {
            m.ptr(12).a(60, [10, 0, 0, i]);
        }
        m.ptr(12).a(60, [10, 0, 0, 0]);
        let got = parse_response(&m.0).unwrap();
        assert_eq!(got.len(), MAX_RESULTS);
        assert_eq!(got[63].addr, v4(10, 0, 0, 63));
        let mut m = Msg::response("dup.test", TYPE_A, 2);
        m.ptr(12).a(60, [10, 0, 0, 1]).ptr(12).a(30, [10, 0, 0, 1]);
        assert_eq!(parse_response(&m.0).unwrap().len(), 1);
    }

    #[test]
    fn every_cut_gives_a_prefix_of_the_answers() {
        for full in [cname_chain(), hex(REAL_A), hex(REAL_A2)] {
            let all = parse_response(&full).unwrap();
            assert!(!all.is_empty());
            let answers_start = read_name(&full, HEADER_LEN).unwrap().1 + 4;
            for cut in 0..full.len() {
                match parse_response(&full[..cut]) {
                    Ok(got) => {
                        assert!(cut >= answers_start, "cut {cut}");
                        // Only whole records count: no address until its
                        // RDATA is all there, and never a wrong one. (A
                        // later address may arrive before an earlier one
                        // only when the earlier owner's chain is cut.)
                        for r in &got {
                            assert!(all.contains(r), "cut {cut}: {r:?}");
                        }
                        assert!(got.len() < all.len(), "cut {cut}");
                    }
                    Err(e) => {
                        assert_eq!(e, DnsError::Truncated, "cut {cut}");
                        assert!(cut < answers_start, "cut {cut}");
                    }
                }
            }
        }
        // The single-answer capture: the address appears only whole.
        let full = hex(REAL_A);
        for cut in 0..full.len() {
            let got = parse_response(&full[..cut]).unwrap_or_default();
            assert!(got.is_empty(), "cut {cut}");
        }
    }

    #[test]
    fn tcp_framing() {
        let msg = cname_chain();
        let mut stream = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
        stream.extend_from_slice(&msg);
        let want = parse_response(&msg).unwrap();
        assert_eq!(parse_tcp(&stream).unwrap(), want);
        // The next message's bytes after it are not read.
        let mut two = stream.clone();
        two.extend_from_slice(&[0xff; 40]);
        assert_eq!(parse_tcp(&two).unwrap(), want);
        // Cut anywhere: as the UDP message cut there.
        for cut in 0..stream.len() {
            let udp = parse_response(&msg[..cut.saturating_sub(2)]);
            let tcp = parse_tcp(&stream[..cut]);
            assert_eq!(tcp, udp, "cut {cut}");
        }
        // What the capture machine's TCP port 53 answered (an HTTP 400).
        assert_eq!(parse_tcp(&hex(REAL_TCP_HTTP)), Err(DnsError::NotResponse));
        assert_eq!(parse_tcp(&[0, 5, 1, 2]), Err(DnsError::Truncated));
    }

    /// xorshift64: reproducible noise without a dependency.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..50_000 {
            let len = usize::try_from(next(&mut seed) % 600).unwrap();
            let mut msg: Vec<u8> = (0..len).map(|_| next(&mut seed) as u8).collect();
            // Half the time, a plausible header so the body gets read.
            if round % 2 == 0 && msg.len() >= HEADER_LEN {
                msg[2] = 0x81;
                msg[3] = 0x80;
                msg[4] = 0;
                msg[5] = 1;
            }
            let _ = parse_response(&msg);
            let _ = parse_tcp(&msg);
            let _ = is_query(&msg);
        }
    }

    #[test]
    fn mutated_responses_never_panic() {
        let base = cname_chain();
        let mut seed = 0x0123_4567_89AB_CDEFu64;
        for _ in 0..50_000 {
            let mut msg = base.clone();
            for _ in 0..1 + next(&mut seed) % 4 {
                let at = usize::try_from(next(&mut seed) % base.len() as u64).unwrap();
                msg[at] = next(&mut seed) as u8;
            }
            if let Ok(got) = parse_response(&msg) {
                assert!(got.len() <= MAX_RESULTS);
            }
            let _ = is_query(&msg);
        }
    }
}
