//! Blind spots: TLS connections to model APIs whose plaintext the sensor
//! does not see.
//!
//! Every TLS client's ClientHello is read from the socket (so the server
//! name is known for rustls, Java, anything). When the destination is a
//! model API (a known provider host, a configured endpoint, or an address
//! where the sensor has already seen model calls) the connection is
//! watched: plaintext on it (a TLS probe bound to its socket) clears it;
//! the socket closing, the process ending, or [`DECIDE_AFTER`] passing
//! without any makes it a `blind_spot`, so a security team knows what the
//! sensor is not seeing instead of reading silence as "nothing happened".

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::protocol::tls_hello::host_name;

/// A connection with no plaintext this long after its ClientHello is a
/// blind spot (clients send their request right after the handshake).
pub const DECIDE_AFTER: Duration = Duration::from_secs(2);
/// One `blind_spot` per (process, destination) per this period; later
/// ones are counted in the next event's `blind_spot.suppressed`.
const REPEAT_AFTER: Duration = Duration::from_secs(60);
/// Learned model endpoints remembered at most.
const MAX_LEARNED: usize = 4096;
/// Connections watched at most.
const MAX_WATCHED: usize = 16_384;

/// Why the plaintext is not seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The process maps no file the sensor probes: its TLS stack is
    /// linked in without symbols (rustls, a stripped static OpenSSL) or is
    /// not native code (Java's JSSE), or its Go build is not supported.
    NoTlsProbe,
    /// A probed TLS library is mapped, yet this connection's plaintext
    /// was not seen (another TLS stack in the process, a probe attached
    /// after the connection started, or records lost).
    PlaintextNotSeen,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoTlsProbe => "no_tls_probe",
            Self::PlaintextNotSeen => "plaintext_not_seen",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::NoTlsProbe => {
                "TLS connection to a model API from a process with no probed TLS library: its requests are not visible"
            }
            Self::PlaintextNotSeen => {
                "TLS connection to a model API whose plaintext was not captured, though the process maps a probed TLS library"
            }
        }
    }
}

/// A connection being watched.
#[derive(Debug, Clone)]
pub struct Watched {
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub ts_ns: u64,
    pub server_name: Option<String>,
    pub remote: Option<SocketAddr>,
    pub alpn: Vec<String>,
    /// Which rule made it a model endpoint.
    pub matched: &'static str,
    pub reason: Reason,
}

/// A blind spot to report.
#[derive(Debug, Clone)]
pub struct BlindSpot {
    pub conn: Watched,
    /// Earlier blind spots of the same process and destination not
    /// reported on their own.
    pub suppressed: u64,
}

/// A configured model endpoint: a host name (exact, or `*.suffix`) or an
/// IP address, optionally with a port.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Host { name: String, port: Option<u16> },
    Suffix { suffix: String, port: Option<u16> },
    Ip { ip: IpAddr, port: Option<u16> },
}

impl Endpoint {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty endpoint".into());
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Ip {
                ip: addr.ip(),
                port: Some(addr.port()),
            });
        }
        if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(Self::Ip { ip, port: None });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (
                host,
                Some(
                    port.parse::<u16>()
                        .map_err(|_| format!("bad port in {text:?}"))?,
                ),
            ),
            None => (text, None),
        };
        let host = host.trim_end_matches('.');
        if let Some(suffix) = host.strip_prefix("*.") {
            let suffix =
                host_name(suffix.as_bytes()).ok_or_else(|| format!("bad host pattern {text:?}"))?;
            return Ok(Self::Suffix {
                suffix: format!(".{suffix}"),
                port,
            });
        }
        let name = host_name(host.as_bytes()).ok_or_else(|| format!("bad host {text:?}"))?;
        Ok(Self::Host { name, port })
    }

    fn matches(&self, name: Option<&str>, remote: Option<SocketAddr>) -> bool {
        let port_ok = |want: &Option<u16>| match (want, remote) {
            (None, _) => true,
            (Some(p), Some(r)) => *p == r.port(),
            (Some(_), None) => false,
        };
        match self {
            Self::Host { name: want, port } => name == Some(want.as_str()) && port_ok(port),
            Self::Suffix { suffix, port } => {
                name.is_some_and(|n| n.ends_with(suffix.as_str())) && port_ok(port)
            }
            Self::Ip { ip, port } => remote.is_some_and(|r| r.ip() == *ip) && port_ok(port),
        }
    }
}

/// Parses the `model_endpoints` config list, naming the bad entry.
pub fn validate_endpoints(list: &[String]) -> Result<(), String> {
    for entry in list {
        Endpoint::parse(entry)?;
    }
    Ok(())
}

#[derive(Default)]
pub struct BlindSpots {
    configured: Vec<Endpoint>,
    /// Destinations where model calls were seen, oldest first.
    learned_addrs: HashSet<SocketAddr>,
    learned_names: HashSet<String>,
    learned_order: VecDeque<(Option<SocketAddr>, Option<String>)>,
    watched: HashMap<(u32, i32), Watched>,
    /// Last report and suppressed count per (pid, destination).
    reported: HashMap<(u32, String), (u64, u64)>,
    pub stats: BlindStats,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct BlindStats {
    pub client_hellos: u64,
    pub client_hello_errors: u64,
    pub watched: u64,
    pub covered: u64,
    pub blind_spots: u64,
    pub suppressed: u64,
}

impl BlindSpots {
    pub fn new(endpoints: &[String]) -> Self {
        Self {
            configured: endpoints
                .iter()
                .filter_map(|e| Endpoint::parse(e).ok())
                .collect(),
            ..Self::default()
        }
    }

    /// Why `name`/`remote` is a model endpoint, if it is one.
    pub fn model_endpoint(
        &self,
        name: Option<&str>,
        remote: Option<SocketAddr>,
    ) -> Option<&'static str> {
        if name.is_some_and(|n| crate::provider::known_provider(n).is_some()) {
            return Some("provider_host");
        }
        if self.configured.iter().any(|e| e.matches(name, remote)) {
            return Some("configured");
        }
        if remote.is_some_and(|r| self.learned_addrs.contains(&r))
            || name.is_some_and(|n| self.learned_names.contains(n))
        {
            return Some("seen_model_calls");
        }
        None
    }

    /// A model call went to `remote` / `host`: later connections there
    /// are model API connections too.
    pub fn learn(&mut self, remote: Option<SocketAddr>, host: Option<&str>) {
        let host = host.map(str::to_ascii_lowercase);
        let new_addr = remote.is_some_and(|r| !self.learned_addrs.contains(&r));
        let new_name = host
            .as_ref()
            .is_some_and(|h| !self.learned_names.contains(h));
        if !new_addr && !new_name {
            return;
        }
        if self.learned_order.len() >= MAX_LEARNED
            && let Some((addr, name)) = self.learned_order.pop_front()
        {
            if let Some(addr) = addr {
                self.learned_addrs.remove(&addr);
            }
            if let Some(name) = name {
                self.learned_names.remove(&name);
            }
        }
        if let Some(r) = remote {
            self.learned_addrs.insert(r);
        }
        if let Some(h) = &host {
            self.learned_names.insert(h.clone());
        }
        self.learned_order.push_back((remote, host));
    }

    /// Starts watching a connection (its ClientHello went to a model API).
    pub fn watch(&mut self, conn: Watched) {
        if self.watched.len() >= MAX_WATCHED {
            return;
        }
        self.stats.watched += 1;
        self.watched.insert((conn.pid, conn.fd), conn);
    }

    /// Plaintext was seen on (pid, fd): not a blind spot.
    pub fn covered(&mut self, pid: u32, fd: i32) {
        if self.watched.remove(&(pid, fd)).is_some() {
            self.stats.covered += 1;
        }
    }

    /// The socket closed: a watched connection that showed no plaintext
    /// is a blind spot.
    pub fn closed(&mut self, pid: u32, fd: i32) -> Option<BlindSpot> {
        let conn = self.watched.remove(&(pid, fd))?;
        self.report(conn)
    }

    /// The process ended.
    pub fn exited(&mut self, pid: u32) -> Vec<BlindSpot> {
        let keys: Vec<_> = self
            .watched
            .keys()
            .filter(|(p, _)| *p == pid)
            .copied()
            .collect();
        self.report_all(keys)
    }

    /// Connections past their deadline at boot time `now_ns`.
    pub fn expire(&mut self, now_ns: u64) -> Vec<BlindSpot> {
        let limit = DECIDE_AFTER.as_nanos() as u64;
        let keys: Vec<_> = self
            .watched
            .iter()
            .filter(|(_, c)| now_ns.saturating_sub(c.ts_ns) >= limit)
            .map(|(k, _)| *k)
            .collect();
        self.report_all(keys)
    }

    fn report_all(&mut self, keys: Vec<(u32, i32)>) -> Vec<BlindSpot> {
        let mut out = Vec::new();
        for key in keys {
            if let Some(conn) = self.watched.remove(&key)
                && let Some(spot) = self.report(conn)
            {
                out.push(spot);
            }
        }
        out
    }

    fn report(&mut self, conn: Watched) -> Option<BlindSpot> {
        let dest = match (&conn.server_name, conn.remote) {
            (Some(name), Some(r)) => format!("{name}:{}", r.port()),
            (Some(name), None) => name.clone(),
            (None, Some(r)) => r.to_string(),
            (None, None) => String::new(),
        };
        let key = (conn.pid, dest);
        let period = REPEAT_AFTER.as_nanos() as u64;
        match self.reported.get_mut(&key) {
            Some((last, suppressed)) if conn.ts_ns.saturating_sub(*last) < period => {
                *suppressed += 1;
                self.stats.suppressed += 1;
                None
            }
            _ => {
                let suppressed = self.reported.remove(&key).map(|(_, n)| n).unwrap_or(0);
                if self.reported.len() >= MAX_WATCHED {
                    self.reported.clear();
                }
                self.reported.insert(key, (conn.ts_ns, 0));
                self.stats.blind_spots += 1;
                Some(BlindSpot { conn, suppressed })
            }
        }
    }

    /// Forgets rate-limit state of processes gone (called rarely).
    pub fn forget_process(&mut self, pid: u32) {
        self.reported.retain(|(p, _), _| *p != pid);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    fn watched(pid: u32, fd: i32, ts: u64) -> Watched {
        Watched {
            pid,
            tid: pid,
            fd,
            ts_ns: ts,
            server_name: Some("api.openai.com".into()),
            remote: Some("192.0.2.1:443".parse().unwrap()),
            alpn: vec![],
            matched: "provider_host",
            reason: Reason::NoTlsProbe,
        }
    }

    #[test]
    fn endpoints_parse_and_match() {
        let b = BlindSpots::new(&[
            "llm.internal:8443".into(),
            "*.inference.example".into(),
            "10.0.0.7".into(),
            "[fd00::1]:443".into(),
        ]);
        let at = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(
            b.model_endpoint(Some("llm.internal"), at("1.2.3.4:8443")),
            Some("configured")
        );
        assert_eq!(
            b.model_endpoint(Some("llm.internal"), at("1.2.3.4:443")),
            None
        );
        assert_eq!(
            b.model_endpoint(Some("a.inference.example"), at("1.2.3.4:1")),
            Some("configured")
        );
        assert_eq!(
            b.model_endpoint(Some("inference.example"), at("1.2.3.4:1")),
            None
        );
        assert_eq!(
            b.model_endpoint(None, at("10.0.0.7:80")),
            Some("configured")
        );
        assert_eq!(
            b.model_endpoint(None, at("[fd00::1]:443")),
            Some("configured")
        );
        assert_eq!(
            b.model_endpoint(Some("api.anthropic.com"), None),
            Some("provider_host")
        );
        assert_eq!(
            b.model_endpoint(Some("example.com"), at("1.2.3.4:443")),
            None
        );
        assert!(validate_endpoints(&["bad host".into()]).is_err());
        assert!(validate_endpoints(&["h:99999".into()]).is_err());
    }

    #[test]
    fn learned_destinations_count() {
        let mut b = BlindSpots::new(&[]);
        let r: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(b.model_endpoint(None, Some(r)), None);
        b.learn(Some(r), Some("LocalHost"));
        assert_eq!(b.model_endpoint(None, Some(r)), Some("seen_model_calls"));
        assert_eq!(
            b.model_endpoint(Some("localhost"), None),
            Some("seen_model_calls")
        );
    }

    #[test]
    fn covered_connections_are_not_reported_and_repeats_are_suppressed() {
        let mut b = BlindSpots::new(&[]);
        b.watch(watched(1, 3, 0));
        b.covered(1, 3);
        assert!(b.closed(1, 3).is_none());
        b.watch(watched(1, 4, 10));
        assert!(b.expire(10 + DECIDE_AFTER.as_nanos() as u64 - 1).is_empty());
        let spots = b.expire(10 + DECIDE_AFTER.as_nanos() as u64);
        assert_eq!(spots.len(), 1);
        b.watch(watched(1, 5, 20));
        assert!(
            b.closed(1, 5).is_none(),
            "same destination within the period"
        );
        let later = 20 + REPEAT_AFTER.as_nanos() as u64;
        b.watch(watched(1, 6, later));
        let spot = b.exited(1).pop().expect("reported again after the period");
        assert_eq!(spot.suppressed, 1);
        assert_eq!(b.stats.blind_spots, 2);
    }
}
