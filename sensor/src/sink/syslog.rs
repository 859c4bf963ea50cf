//! Syslog transport: each record becomes one RFC 5424 message, sent over
//! UDP (RFC 5426), TCP (RFC 6587) or TLS (RFC 5425).
//!
//! A message is
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`:
//!
//! - PRI is `facility * 8 + severity`; severity is 6 (informational), or
//!   4 (warning) for an alert: a record containing `"kind":"alert"`
//!   (native) or `"is_alert":true` (OCSF).
//! - TIMESTAMP is the send time, RFC 3339 in UTC with microseconds.
//! - PROCID is the sensor's pid.
//! - MSGID names the event, found by a cheap byte search of the record (no
//!   JSON parse): an OCSF record's `class_name` (or else its `class_uid`),
//!   a native record's `"action"`, `-` when there is none.
//! - There is no STRUCTURED-DATA (`-`).
//! - MSG is the record's bytes exactly as given (one JSON object). It is
//!   sent without the UTF-8 BOM, so by RFC 5424 it is `MSG-ANY`, not
//!   `MSG-UTF8`: receivers take the bytes as they are, which is what a JSON
//!   consumer wants.
//!
//! Header fields are sanitised to what the RFC allows (printable US-ASCII
//! without spaces, at most 255/48/128/32 characters for HOSTNAME/APP-NAME/
//! PROCID/MSGID; anything else becomes `_`, an empty field `-`).
//!
//! Framing: over UDP one datagram per message, and a message longer than
//! [`MAX_UDP_MESSAGE`] bytes is dropped and counted
//! ([`Syslog::oversize_dropped`]) while the rest of the batch still goes.
//! Over TCP and TLS every message is octet-counted (`LEN SP MSG`), so it
//! may hold any bytes, newlines included. Receivers cap the message size
//! (rsyslog: 8 KiB unless `maxMessageSize` is raised) and cut longer ones.
//!
//! Delivery is at-least-once. A connection is made on first use and kept.
//! Before a batch goes out on a kept connection, the transport checks
//! (without blocking) whether the receiver has closed it, and reconnects
//! if so: a receiver that restarted between batches gets the next batch
//! on a new connection instead of the kernel silently discarding it on the
//! dead one. Any connect or write error drops the connection and returns
//! [`TransportError::Retryable`]; the sender then resends the whole batch,
//! so records the receiver already took before the error arrive twice.
//!
//! Syslog has no acknowledgements, so `Ok` only means the bytes were
//! handed to the kernel. A receiver that stops reading and then closes
//! (rsyslog shutting down) discards what sat unread in its socket, and its
//! TCP stack answers with a reset instead of a clean close. So when a
//! connection turns out to have been reset (or a write on it failed), the
//! transport writes what it sent last on it again (up to
//! [`RESEND_WINDOW`] bytes, whole batches) on the next connection, ahead
//! of the next batch: duplicates instead of loss, as long as no more than
//! that sat unread. A clean close (TCP FIN or
//! TLS close_notify, such as an idle timeout) means the receiver read
//! everything first, and nothing is resent. What a receiver read but
//! lost itself (killed with messages in its memory queue) is beyond the
//! sender's sight.
//!
//! UDP is best effort: a datagram the network or the receiver drops is
//! lost; only errors the kernel reports (such as a refused port seen on a
//! later send) return `Retryable`.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::pki_types::ServerName;

use super::transport::{
    TlsStream, Transport, TransportError, connect_first, tls_config, tls_handshake,
};

/// The largest message sent over UDP, header included (RFC 5426 lets a
/// receiver take up to 65,535 octets, IPv4 carries at most 65,507 in one
/// datagram); longer ones are dropped and counted.
pub const MAX_UDP_MESSAGE: usize = 65_000;

/// Facility `local0`, the default.
pub const DEFAULT_FACILITY: u8 = 16;

/// Severity 6, informational: every record but alerts.
const SEVERITY_INFO: u8 = 6;
/// Severity 4, warning: alerts (`"kind":"alert"`, OCSF `"is_alert":true`).
const SEVERITY_WARNING: u8 = 4;

/// RFC 5424 maximum lengths of the header fields.
const MAX_HOSTNAME: usize = 255;
const MAX_APP_NAME: usize = 48;
const MAX_PROCID: usize = 128;
const MAX_MSGID: usize = 32;

/// How much of what was written last on a connection is kept, to be sent
/// again if the connection turns out to have been reset.
pub const RESEND_WINDOW: usize = 1024 * 1024;

/// A batch buffer grown beyond this is released after use.
const KEEP_BUFFER: usize = 4 * 1024 * 1024;

/// How messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogProtocol {
    /// One datagram per message (RFC 5426).
    Udp,
    /// Octet-counted messages on a TCP connection (RFC 6587).
    Tcp,
    /// Octet-counted messages on a TLS connection (RFC 5425).
    Tls,
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct SyslogOptions {
    /// The receiver, `host:port` (`[v6-address]:port` for IPv6).
    pub address: String,
    /// The transport protocol.
    pub protocol: SyslogProtocol,
    /// CA certificates (PEM) that the TLS receiver's certificate must
    /// chain to; the system bundle when `None`. TLS only.
    pub ca_file: Option<PathBuf>,
    /// The name the TLS receiver's certificate must carry; the host part
    /// of `address` when `None`. TLS only.
    pub server_name: Option<String>,
    /// APP-NAME; empty means `sensor`.
    pub app_name: String,
    /// HOSTNAME; empty means this machine's host name.
    pub hostname: String,
    /// The syslog facility, 0..=23 (16, `local0`, by default).
    pub facility: u8,
    /// Limit for connecting (and the TLS handshake) and for each write.
    pub timeout: Duration,
}

impl SyslogOptions {
    /// Options with the defaults: APP-NAME `sensor`, this host's name,
    /// facility `local0`, a 10 s timeout, the system's CA bundle.
    pub fn new(address: impl Into<String>, protocol: SyslogProtocol) -> Self {
        Self {
            address: address.into(),
            protocol,
            ca_file: None,
            server_name: None,
            app_name: "sensor".to_owned(),
            hostname: String::new(),
            facility: DEFAULT_FACILITY,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A syslog receiver. See the module documentation.
pub struct Syslog {
    protocol: SyslogProtocol,
    /// As configured, for messages.
    address: String,
    host: String,
    port: u16,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    timeout: Duration,
    facility: u8,
    /// ` HOSTNAME APP-NAME PROCID `, sanitised, between TIMESTAMP and MSGID.
    middle: String,
    conn: Option<Conn>,
    /// Framed batches written on `conn`, newest last, at most
    /// [`RESEND_WINDOW`] bytes in all ([`Syslog::written_bytes`]).
    written: VecDeque<Vec<u8>>,
    written_bytes: usize,
    /// Framed batches to write again, ahead of the next batch, on the next
    /// connection: what was written on one that was reset.
    resend: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    oversize_dropped: u64,
}

impl std::fmt::Debug for Syslog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syslog")
            .field("protocol", &self.protocol)
            .field("address", &self.address)
            .field("connected", &self.conn.is_some())
            .field("oversize_dropped", &self.oversize_dropped)
            .finish_non_exhaustive()
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
}

impl Syslog {
    /// Checks the options and prepares the transport; the connection is
    /// made by the first [`Transport::send`].
    pub fn new(opts: SyslogOptions) -> Result<Self, String> {
        let (host, port) = split_address(&opts.address)?;
        if opts.facility > 23 {
            return Err(format!(
                "syslog facility {} is out of range (0..=23)",
                opts.facility
            ));
        }
        if opts.timeout.is_zero() {
            return Err("the syslog timeout must not be zero".to_owned());
        }
        let tls = match opts.protocol {
            SyslogProtocol::Tls => {
                let config = tls_config(opts.ca_file.as_deref())?;
                let name = opts.server_name.as_deref().unwrap_or(&host);
                let name = ServerName::try_from(name.to_owned())
                    .map_err(|e| format!("syslog TLS server name {name:?}: {e}"))?;
                Some((config, name))
            }
            SyslogProtocol::Udp | SyslogProtocol::Tcp => {
                if opts.ca_file.is_some() || opts.server_name.is_some() {
                    return Err("a syslog CA file or server name needs the TLS protocol".to_owned());
                }
                None
            }
        };
        let app_name = if opts.app_name.is_empty() {
            "sensor"
        } else {
            &opts.app_name
        };
        let hostname = if opts.hostname.is_empty() {
            system_hostname()
        } else {
            opts.hostname.clone()
        };
        let mut middle = String::with_capacity(64);
        middle.push(' ');
        push_field(&mut middle, hostname.as_bytes(), MAX_HOSTNAME);
        middle.push(' ');
        push_field(&mut middle, app_name.as_bytes(), MAX_APP_NAME);
        middle.push(' ');
        push_field(
            &mut middle,
            std::process::id().to_string().as_bytes(),
            MAX_PROCID,
        );
        middle.push(' ');
        Ok(Self {
            protocol: opts.protocol,
            address: opts.address,
            host,
            port,
            tls,
            timeout: opts.timeout,
            facility: opts.facility,
            middle,
            conn: None,
            written: VecDeque::new(),
            written_bytes: 0,
            resend: VecDeque::new(),
            buf: Vec::new(),
            oversize_dropped: 0,
        })
    }

    /// How many messages were too large for a UDP datagram and dropped.
    pub fn oversize_dropped(&self) -> u64 {
        self.oversize_dropped
    }

    /// Appends the header of `record`'s message, up to MSG, to `out`.
    fn header(&self, timestamp: &str, record: &[u8], out: &mut Vec<u8>) {
        format_header(self.facility, timestamp, &self.middle, record, out);
    }

    fn resolve(&self) -> Result<Vec<SocketAddr>, TransportError> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| retryable(&self.address, "resolving", &e))?
            .collect();
        if addrs.is_empty() {
            return Err(TransportError::Retryable(format!(
                "syslog receiver {}: the name has no address",
                self.address
            )));
        }
        Ok(addrs)
    }

    fn connect(&self) -> Result<Conn, TransportError> {
        let addrs = self.resolve()?;
        if self.protocol == SyslogProtocol::Udp {
            let mut last = None;
            for addr in addrs {
                match self.udp_socket(addr) {
                    Ok(sock) => return Ok(Conn::Udp(sock)),
                    Err(e) => last = Some(e),
                }
            }
            return Err(last.map_or_else(
                || TransportError::Retryable(format!("syslog receiver {}", self.address)),
                |e| retryable(&self.address, "connecting", &e),
            ));
        }
        let sock = connect_first(addrs, self.timeout)
            .map_err(|e| retryable(&self.address, "connecting to", &e))?;
        let Some((config, name)) = &self.tls else {
            return Ok(Conn::Tcp(sock));
        };
        let stream = tls_handshake(Arc::clone(config), name.clone(), sock)
            .map_err(|e| retryable(&self.address, "TLS handshake with", &e))?;
        Ok(Conn::Tls(Box::new(stream)))
    }

    fn udp_socket(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local)?;
        sock.connect(addr)?;
        sock.set_write_timeout(Some(self.timeout))?;
        Ok(sock)
    }

    /// The kept connection if the receiver has not closed it, or a new one.
    fn connection(&mut self) -> Result<&mut Conn, TransportError> {
        let state = self.conn.as_mut().map(peer_state);
        match state {
            None | Some(PeerState::Open) => {}
            Some(PeerState::Closed) => {
                tracing::debug!(
                    address = %self.address,
                    "syslog receiver closed the connection; reconnecting"
                );
                self.drop_connection(false);
            }
            Some(PeerState::Reset) => {
                tracing::debug!(
                    address = %self.address,
                    resend_bytes = self.written_bytes,
                    "syslog connection was reset; reconnecting and resending what was written last"
                );
                self.drop_connection(true);
            }
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        self.conn.as_mut().ok_or_else(|| {
            TransportError::Retryable(format!("syslog receiver {}: no connection", self.address))
        })
    }

    /// Forgets the connection; with `resend`, what was written on it
    /// last goes out again, ahead of the next batch, on the next one.
    fn drop_connection(&mut self, resend: bool) {
        self.conn = None;
        if resend {
            self.resend.extend(self.written.drain(..));
        } else {
            self.written.clear();
        }
        self.written_bytes = 0;
        trim_window(&mut self.resend);
    }

    fn send_udp(&mut self, timestamp: &str, records: &[&[u8]]) -> Result<(), TransportError> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut dropped = 0u64;
        let mut result = Ok(());
        for record in records {
            buf.clear();
            self.header(timestamp, record, &mut buf);
            buf.extend_from_slice(record);
            if buf.len() > MAX_UDP_MESSAGE {
                dropped += 1;
                continue;
            }
            let sent = match self.connection() {
                Ok(Conn::Udp(sock)) => sock.send(&buf),
                Ok(_) => Err(io::Error::other("not a UDP socket")),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            match sent {
                Ok(n) if n == buf.len() => {}
                Ok(_) => {
                    self.conn = None;
                    result = Err(TransportError::Retryable(format!(
                        "syslog to {}: a datagram went out truncated",
                        self.address
                    )));
                    break;
                }
                Err(e) => {
                    self.conn = None;
                    result = Err(retryable(&self.address, "sending to", &e));
                    break;
                }
            }
        }
        // Counted when the batch is done with: a failed one is sent (and
        // counted) again.
        if dropped > 0 && result.is_ok() {
            self.oversize_dropped += dropped;
            tracing::warn!(
                address = %self.address,
                dropped,
                max = MAX_UDP_MESSAGE,
                "syslog over UDP: records too large for a datagram were dropped"
            );
        }
        self.keep_buffer(buf);
        result
    }

    fn send_stream(&mut self, timestamp: &str, records: &[&[u8]]) -> Result<(), TransportError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut header = Vec::with_capacity(256);
        for record in records {
            header.clear();
            self.header(timestamp, record, &mut header);
            let len = header.len() + record.len();
            buf.extend_from_slice(len.to_string().as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(&header);
            buf.extend_from_slice(record);
        }
        let result = self.write_batch(&buf);
        self.keep_buffer(buf);
        result
    }

    /// Writes what is to be resent, then `batch`, and remembers both as
    /// written on this connection.
    fn write_batch(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        self.connection()?;
        let written = match &mut self.conn {
            Some(Conn::Tcp(sock)) => write_chunks(sock, &self.resend, batch),
            Some(Conn::Tls(stream)) => write_chunks(stream.as_mut(), &self.resend, batch),
            Some(Conn::Udp(_)) | None => Err(io::Error::other("not a stream connection")),
        };
        if let Err(e) = written {
            self.drop_connection(true);
            return Err(retryable(&self.address, "writing to", &e));
        }
        for chunk in self.resend.drain(..) {
            self.written_bytes += chunk.len();
            self.written.push_back(chunk);
        }
        self.written_bytes += batch.len();
        self.written.push_back(batch.to_vec());
        while self.written_bytes > RESEND_WINDOW {
            match self.written.pop_front() {
                Some(old) => self.written_bytes -= old.len(),
                None => break,
            }
        }
        Ok(())
    }

    fn keep_buffer(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > KEEP_BUFFER {
            buf = Vec::new();
        }
        buf.clear();
        self.buf = buf;
    }
}

impl Transport for Syslog {
    fn send(&mut self, records: &[&[u8]]) -> Result<(), TransportError> {
        if records.is_empty() {
            return Ok(());
        }
        let timestamp = rfc3339_micros(SystemTime::now());
        match self.protocol {
            SyslogProtocol::Udp => self.send_udp(&timestamp, records),
            SyslogProtocol::Tcp | SyslogProtocol::Tls => self.send_stream(&timestamp, records),
        }
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        // Best effort: tell a TLS receiver the stream ended on purpose.
        if let Some(Conn::Tls(stream)) = &mut self.conn {
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
    }
}

/// Writes `resend` then `batch`, and flushes.
fn write_chunks(
    out: &mut impl io::Write,
    resend: &VecDeque<Vec<u8>>,
    batch: &[u8],
) -> io::Result<()> {
    for chunk in resend {
        out.write_all(chunk)?;
    }
    out.write_all(batch)?;
    out.flush()
}

/// Drops the oldest batches beyond [`RESEND_WINDOW`] bytes.
fn trim_window(window: &mut VecDeque<Vec<u8>>) {
    let mut total: usize = window.iter().map(Vec::len).sum();
    while total > RESEND_WINDOW {
        match window.pop_front() {
            Some(old) => total -= old.len(),
            None => break,
        }
    }
}

/// What became of a kept connection, from the receiver's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    /// Still open.
    Open,
    /// Closed cleanly (FIN, or a TLS close_notify): the receiver read
    /// everything it was sent before closing.
    Closed,
    /// Reset or failed: what was sent last may have been discarded unread
    /// (a TCP stack resets a connection closed with unread data).
    Reset,
}

/// The state of a kept connection, found without blocking. Stray bytes
/// from the receiver are read and dropped.
fn peer_state(conn: &mut Conn) -> PeerState {
    match conn {
        Conn::Udp(_) => PeerState::Open,
        Conn::Tcp(sock) => {
            if sock.set_nonblocking(true).is_err() {
                return PeerState::Reset;
            }
            let mut scratch = [0u8; 512];
            let state = loop {
                match sock.read(&mut scratch) {
                    Ok(0) => break PeerState::Closed,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break PeerState::Open,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break PeerState::Reset,
                }
            };
            if sock.set_nonblocking(false).is_err() {
                return PeerState::Reset;
            }
            state
        }
        Conn::Tls(stream) => {
            if stream.sock.set_nonblocking(true).is_err() {
                return PeerState::Reset;
            }
            let state = loop {
                match stream.conn.read_tls(&mut stream.sock) {
                    Ok(0) => break PeerState::Closed,
                    Ok(_) => match stream.conn.process_new_packets() {
                        Ok(io) if io.peer_has_closed() => break PeerState::Closed,
                        // A TLS 1.3 receiver sends session tickets after
                        // the handshake: records, but no close.
                        Ok(io) => {
                            let pending = io.plaintext_bytes_to_read();
                            if pending > 0 {
                                let mut scratch = vec![0u8; pending];
                                let _ = stream.conn.reader().read(&mut scratch);
                            }
                        }
                        Err(_) => break PeerState::Reset,
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break PeerState::Open,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break PeerState::Reset,
                }
            };
            if stream.sock.set_nonblocking(false).is_err() {
                return PeerState::Reset;
            }
            state
        }
    }
}

fn retryable(address: &str, doing: &str, err: &io::Error) -> TransportError {
    TransportError::Retryable(format!("syslog {doing} {address}: {err}"))
}

/// Splits `host:port` (`[v6]:port`) and checks both parts.
fn split_address(address: &str) -> Result<(String, u16), String> {
    let bad = || format!("syslog address {address:?} is not host:port");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(format!("syslog address {address:?}: port 0"));
    }
    Ok((host.to_owned(), port))
}

/// This machine's host name, `-` if it cannot be read.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

/// Appends `value` as an RFC 5424 header field: printable US-ASCII
/// without spaces (anything else becomes `_`), at most `max` characters,
/// `-` when empty.
fn push_field(out: &mut String, value: &[u8], max: usize) {
    if value.is_empty() {
        out.push('-');
        return;
    }
    for &b in value.iter().take(max) {
        out.push(if (33..=126).contains(&b) {
            char::from(b)
        } else {
            '_'
        });
    }
}

/// Appends the header of `record`'s message (through the space before
/// MSG) to `out`.
fn format_header(facility: u8, timestamp: &str, middle: &str, record: &[u8], out: &mut Vec<u8>) {
    let alert = find(record, br#""kind":"alert""#).is_some()
        || find(record, br#""is_alert":true"#).is_some();
    let severity = if alert {
        SEVERITY_WARNING
    } else {
        SEVERITY_INFO
    };
    let pri = u16::from(facility) * 8 + u16::from(severity);
    let mut header = String::with_capacity(96);
    let _ = write!(header, "<{pri}>1 {timestamp}{middle}");
    push_field(&mut header, msgid(record).unwrap_or_default(), MAX_MSGID);
    header.push_str(" - ");
    out.extend_from_slice(header.as_bytes());
}

/// The bytes naming the event in `record`, unsanitised: an OCSF record's
/// `class_name` (or `class_uid`), a native record's `action`.
fn msgid(record: &[u8]) -> Option<&[u8]> {
    json_string(record, b"class_name")
        .or_else(|| json_number(record, b"class_uid"))
        .or_else(|| json_string(record, b"action"))
        .filter(|v| !v.is_empty())
}

/// The value part after the first `"key":` (spaces allowed around the
/// colon) in `record`.
fn json_value<'a>(record: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut at = 0;
    while let Some(pos) = find(&record[at..], key) {
        let start = at + pos;
        let end = start + key.len();
        at = start + 1;
        if start == 0 || record[start - 1] != b'"' || record.get(end) != Some(&b'"') {
            continue;
        }
        let mut rest = &record[end + 1..];
        rest = rest.trim_ascii_start();
        let Some(after) = rest.strip_prefix(b":") else {
            continue;
        };
        return Some(after.trim_ascii_start());
    }
    None
}

/// The string value of the first `"key":"..."`, up to its closing quote.
fn json_string<'a>(record: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let value = json_value(record, key)?.strip_prefix(b"\"")?;
    let mut end = 0;
    while end < value.len() {
        match value[end] {
            b'"' => return Some(&value[..end]),
            b'\\' => end += 2,
            _ => end += 1,
        }
    }
    None
}

/// The digits of the first `"key":N`.
fn json_number<'a>(record: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let value = json_value(record, key)?;
    let len = value.iter().take_while(|b| b.is_ascii_digit()).count();
    (len > 0).then(|| &value[..len])
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = 0;
    while at + needle.len() <= haystack.len() {
        let pos = haystack[at..=haystack.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        let start = at + pos;
        if haystack[start + 1..start + needle.len()] == *rest {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

/// `t` as RFC 3339 in UTC with microseconds: `2024-05-06T07:08:09.123456Z`.
fn rfc3339_micros(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=31, 1..=12).
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader},
        net::TcpListener,
        sync::mpsc,
        thread,
    };

    use super::*;

    fn opts(address: String, protocol: SyslogProtocol) -> SyslogOptions {
        SyslogOptions {
            hostname: "host-1".to_owned(),
            timeout: Duration::from_secs(5),
            ..SyslogOptions::new(address, protocol)
        }
    }

    fn message(record: &[u8]) -> String {
        let mut out = Vec::new();
        format_header(
            16,
            "2024-01-02T03:04:05.000006Z",
            " h app 42 ",
            record,
            &mut out,
        );
        out.extend_from_slice(record);
        String::from_utf8(out).unwrap()
    }

    /// Splits octet-counted frames.
    fn frames(mut data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let sp = data.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&data[..sp]).unwrap().parse().unwrap();
            out.push(data[sp + 1..sp + 1 + len].to_vec());
            data = &data[sp + 1 + len..];
        }
        out
    }

    /// The MSG part of an unframed message (after `- `, the 7th space).
    fn msg_of(message: &[u8]) -> &[u8] {
        let mut spaces = 0;
        for (i, &b) in message.iter().enumerate() {
            if b == b' ' {
                spaces += 1;
                if spaces == 7 {
                    return &message[i + 1..];
                }
            }
        }
        panic!("no MSG in {:?}", String::from_utf8_lossy(message));
    }

    #[test]
    fn formats_header_and_pri() {
        let record = br#"{"event":{"action":"process_exec"},"x":1}"#;
        assert_eq!(
            message(record),
            r#"<134>1 2024-01-02T03:04:05.000006Z h app 42 process_exec - {"event":{"action":"process_exec"},"x":1}"#
        );
        // local0 (16) * 8 + warning (4).
        let alert = br#"{"event":{"action":"credential_leak","kind":"alert"}}"#;
        assert!(message(alert).starts_with("<132>1 "));
        let ocsf = br#"{"class_uid":2004,"is_alert":true,"severity_id":4}"#;
        assert!(message(ocsf).starts_with("<132>1 "));
        assert!(message(br#"{"is_alert":false}"#).starts_with("<134>1 "));
        let mut out = Vec::new();
        format_header(0, "T", " h a 1 ", b"{}", &mut out);
        assert_eq!(out, b"<6>1 T h a 1 - - ");
        let mut out = Vec::new();
        format_header(23, "T", " h a 1 ", b"{\"kind\":\"alert\"}", &mut out);
        assert!(out.starts_with(b"<188>1 "));
    }

    #[test]
    fn sanitises_header_fields() {
        let mut s = String::new();
        push_field(&mut s, "my host\té".as_bytes(), 255);
        assert_eq!(s, "my_host___");
        let mut s = String::new();
        push_field(&mut s, b"", 10);
        assert_eq!(s, "-");
        let mut s = String::new();
        push_field(&mut s, &[b'a'; 100], 48);
        assert_eq!(s.len(), 48);

        let t = Syslog::new(SyslogOptions {
            app_name: "my app".to_owned(),
            hostname: "node 1".to_owned(),
            ..SyslogOptions::new("127.0.0.1:514", SyslogProtocol::Udp)
        })
        .unwrap();
        assert_eq!(t.middle, format!(" node_1 my_app {} ", std::process::id()));

        let long = format!(r#"{{"action":"{}"}}"#, "a".repeat(50));
        let m = message(long.as_bytes());
        let msgid = m.split(' ').nth(5).unwrap();
        assert_eq!(msgid, "a".repeat(32));
        let m = message(br#"{"class_name":"Process Activity","class_uid":1007}"#);
        assert_eq!(m.split(' ').nth(5).unwrap(), "Process_Activity");
    }

    #[test]
    fn extracts_msgid() {
        assert_eq!(
            msgid(br#"{"a":1,"event":{"action":"model_call","kind":"event"}}"#),
            Some(&b"model_call"[..])
        );
        assert_eq!(msgid(br#"{"event": {"action" : "x"}}"#), Some(&b"x"[..]));
        // A key that merely ends in "action" does not count.
        assert_eq!(msgid(br#"{"transaction":"t"}"#), None);
        assert_eq!(
            msgid(br#"{"transaction":"t","event":{"action":"y"}}"#),
            Some(&b"y"[..])
        );
        // OCSF: class_name first, then class_uid; an OCSF `action` is not it.
        assert_eq!(
            msgid(br#"{"action":"Allowed","class_name":"Network Activity","class_uid":4001}"#),
            Some(&b"Network Activity"[..])
        );
        assert_eq!(
            msgid(br#"{"action":"Allowed","class_uid":4001,"x":2}"#),
            Some(&b"4001"[..])
        );
        assert_eq!(msgid(br#"{"event":{"action":""}}"#), None);
        assert_eq!(msgid(br#"{"event":{"action":"unterminated"#), None);
        assert_eq!(msgid(b"not json"), None);
        assert_eq!(msgid(b""), None);
        // A quoted "action" inside a string value is escaped, so not seen.
        assert_eq!(
            msgid(br#"{"cmd":"echo \"action\":\"evil\"","event":{"action":"ok"}}"#),
            Some(&b"ok"[..])
        );
        assert!(message(b"{}").contains(" 42 - - {}"));
    }

    #[test]
    fn finds_bytes() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"aaa", b"aa"), Some(0));
        assert_eq!(find(b"xa", b"a"), Some(1));
        assert_eq!(find(b"abc", b""), None);
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400 + 3_661, 123_456_789);
        assert_eq!(rfc3339_micros(t), "2000-02-29T01:01:01.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339_micros(t), "2099-12-31T23:59:59.000000Z");
    }

    #[test]
    fn validates_options() {
        let ok = |a: &str| split_address(a).unwrap();
        assert_eq!(ok("10.0.0.1:514"), ("10.0.0.1".to_owned(), 514));
        assert_eq!(ok("[::1]:6514"), ("::1".to_owned(), 6514));
        assert_eq!(ok("logs.example:601"), ("logs.example".to_owned(), 601));
        for bad in [
            "",
            "host",
            ":514",
            "host:",
            "host:0",
            "host:99999",
            "::1:514",
            "[::1:5",
        ] {
            assert!(split_address(bad).is_err(), "{bad}");
        }
        let udp = |f: fn(&mut SyslogOptions)| {
            let mut o = SyslogOptions::new("127.0.0.1:514", SyslogProtocol::Udp);
            f(&mut o);
            Syslog::new(o)
        };
        assert!(udp(|_| {}).is_ok());
        assert!(udp(|o| o.facility = 24).is_err());
        assert!(udp(|o| o.timeout = Duration::ZERO).is_err());
        assert!(udp(|o| o.ca_file = Some("/x".into())).is_err());
        let mut o = SyslogOptions::new("127.0.0.1:6514", SyslogProtocol::Tls);
        o.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(Syslog::new(o).unwrap_err().contains("/nonexistent/ca.pem"));
        // Validation does not connect: nothing listens on port 9.
        assert!(Syslog::new(SyslogOptions::new("127.0.0.1:9", SyslogProtocol::Tcp)).is_ok());
    }

    /// Accepts one connection and returns everything read until it closes.
    fn accept_all(listener: TcpListener) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut data = Vec::new();
            s.read_to_end(&mut data).unwrap();
            data
        })
    }

    #[test]
    fn tcp_octet_counting() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = accept_all(listener);
        let mut t = Syslog::new(opts(format!("127.0.0.1:{port}"), SyslogProtocol::Tcp)).unwrap();
        let big = format!(
            r#"{{"event":{{"action":"big"}},"pad":"{}"}}"#,
            "x".repeat(100_000)
        );
        let records: Vec<&[u8]> = vec![
            br#"{"event":{"action":"a"}}"#,
            b"{\"line\":\"with\nnewline\"}",
            big.as_bytes(),
        ];
        t.send(&records).unwrap();
        t.send(&[br#"{"n":2}"#]).unwrap();
        drop(t);
        let got = frames(&receiver.join().unwrap());
        assert_eq!(got.len(), 4);
        for (frame, record) in got.iter().zip(records.iter().chain([&&br#"{"n":2}"#[..]])) {
            assert_eq!(msg_of(frame), *record);
        }
        let first = String::from_utf8_lossy(&got[0]);
        let pid = std::process::id();
        assert!(
            first.starts_with("<134>1 20")
                && first.contains(&format!("Z host-1 sensor {pid} a - {{")),
            "{first}"
        );
    }

    /// Reads octet-counted frames from one connection and passes each on;
    /// stops (closing the connection and the listener) after `n`.
    fn receive_n(
        listener: TcpListener,
        n: usize,
        tx: mpsc::Sender<Vec<u8>>,
    ) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut r = BufReader::new(s);
            for _ in 0..n {
                let mut len = Vec::new();
                r.read_until(b' ', &mut len).unwrap();
                let len: usize = std::str::from_utf8(&len[..len.len() - 1])
                    .unwrap()
                    .parse()
                    .unwrap();
                let mut frame = vec![0; len];
                r.read_exact(&mut frame).unwrap();
                tx.send(frame).unwrap();
            }
        })
    }

    #[test]
    fn tcp_reconnects_after_receiver_restart() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut t = Syslog::new(opts(addr.to_string(), SyslogProtocol::Tcp)).unwrap();

        // 1. Delivered; then the receiver closes and goes away.
        let first = receive_n(listener, 1, tx.clone());
        t.send(&[b"{\"n\":1}"]).unwrap();
        first.join().unwrap();
        assert_eq!(msg_of(&rx.recv().unwrap()), b"{\"n\":1}");

        // 2. A new receiver on the same port: the closed connection is
        // noticed before writing, and the batch goes on a new one.
        let listener = TcpListener::bind(addr).unwrap();
        let second = receive_n(listener, 2, tx.clone());
        t.send(&[b"{\"n\":2}", b"{\"n\":3}"]).unwrap();
        second.join().unwrap();
        assert_eq!(msg_of(&rx.recv().unwrap()), b"{\"n\":2}");
        assert_eq!(msg_of(&rx.recv().unwrap()), b"{\"n\":3}");

        // 3. Nobody listens: retryable, and the resend after the receiver
        // is back delivers the batch.
        let batch: [&[u8]; 2] = [b"{\"n\":4}", b"{\"n\":5}"];
        match t.send(&batch) {
            Err(TransportError::Retryable(e)) => assert!(e.contains(&addr.to_string()), "{e}"),
            other => panic!("expected Retryable, got {other:?}"),
        }
        let listener = TcpListener::bind(addr).unwrap();
        let third = receive_n(listener, 2, tx);
        t.send(&batch).unwrap();
        third.join().unwrap();
        assert_eq!(msg_of(&rx.recv().unwrap()), b"{\"n\":4}");
        assert_eq!(msg_of(&rx.recv().unwrap()), b"{\"n\":5}");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn tcp_resends_after_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut t = Syslog::new(opts(addr.to_string(), SyslogProtocol::Tcp)).unwrap();
        t.send(&[b"{\"n\":1}", b"{\"n\":2}"]).unwrap();
        // The receiver closes with the batch unread: its stack resets the
        // connection, and the batch was lost.
        let (s, _) = listener.accept().unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(s.peek(&mut byte).unwrap(), 1);
        drop(s);
        let (tx, rx) = mpsc::channel();
        let receiver = receive_n(listener, 3, tx);
        // Give the reset time to come back over loopback.
        thread::sleep(Duration::from_millis(50));
        t.send(&[b"{\"n\":3}"]).unwrap();
        receiver.join().unwrap();
        let got: Vec<Vec<u8>> = rx.iter().map(|f| msg_of(&f).to_vec()).collect();
        assert_eq!(got, [&b"{\"n\":1}"[..], b"{\"n\":2}", b"{\"n\":3}"]);
        assert!(t.resend.is_empty());
        assert_eq!(t.written.len(), 2);
    }

    #[test]
    fn resend_window_is_bounded() {
        let mut w: VecDeque<Vec<u8>> = (0..5).map(|_| vec![0u8; RESEND_WINDOW / 4]).collect();
        trim_window(&mut w);
        assert_eq!(w.len(), 4);
        w.push_back(vec![1u8; RESEND_WINDOW]);
        trim_window(&mut w);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0][0], 1);
    }

    #[test]
    fn udp_datagrams_and_oversize() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let addr = sock.local_addr().unwrap();
        let mut t = Syslog::new(opts(addr.to_string(), SyslogProtocol::Udp)).unwrap();
        let fits = format!(r#"{{"pad":"{}"}}"#, "y".repeat(MAX_UDP_MESSAGE - 200));
        let too_big = format!(r#"{{"pad":"{}"}}"#, "z".repeat(MAX_UDP_MESSAGE));
        let records: Vec<&[u8]> = vec![
            br#"{"event":{"action":"one","kind":"alert"}}"#,
            too_big.as_bytes(),
            fits.as_bytes(),
        ];
        t.send(&records).unwrap();
        assert_eq!(t.oversize_dropped(), 1);
        let mut buf = vec![0u8; 70_000];
        let n = sock.recv(&mut buf).unwrap();
        let first = String::from_utf8(buf[..n].to_vec()).unwrap();
        assert!(first.starts_with("<132>1 "), "{first}");
        assert!(
            first.ends_with(r#" one - {"event":{"action":"one","kind":"alert"}}"#),
            "{first}"
        );
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(msg_of(&buf[..n]), fits.as_bytes());
        assert!(n <= MAX_UDP_MESSAGE);
    }
}
