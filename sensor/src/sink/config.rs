//! `[[sinks]]` in the config file: where events go, each destination with
//! its own filter and format. Keys are flat per sink; a key that does not
//! apply to the sink's type, a missing required key or a bad value is an
//! error naming the sink and the key.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkType {
    Stdout,
    File,
    Syslog,
    Http,
}

impl SinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::File => "file",
            Self::Syslog => "syslog",
            Self::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The sensor's own schema (`sensor/schema/event.schema.json`).
    #[default]
    Native,
    /// OCSF 1.8.0.
    Ocsf,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Leave it to the kernel.
    Never,
    /// After each batch of records written (at most every few ms).
    #[default]
    Batch,
    /// After every record.
    Record,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HttpApi {
    /// Splunk HTTP Event Collector (`/services/collector/event`).
    SplunkHec,
    /// Elasticsearch / OpenSearch `_bulk` (NDJSON `create` actions).
    Elasticsearch,
    /// Newline-delimited JSON POSTed as is (a webhook, Vector, Fluent Bit).
    Ndjson,
}

/// One `[[sinks]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique; names the spool directory and the metrics.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkType,
    #[serde(default)]
    pub format: Format,
    /// `event.action`s this sink gets (default: all the sensor emits).
    pub events: Option<Vec<String>>,

    // file
    pub path: Option<PathBuf>,
    pub rotate_bytes: Option<u64>,
    pub rotate_secs: Option<u64>,
    pub retain: Option<usize>,
    pub fsync: Option<Fsync>,

    // syslog
    pub address: Option<String>,
    pub transport: Option<SyslogTransport>,
    pub app_name: Option<String>,
    pub facility: Option<String>,

    // http
    pub url: Option<String>,
    pub api: Option<HttpApi>,
    pub index: Option<String>,
    pub token_file: Option<PathBuf>,
    pub headers: Option<BTreeMap<String, String>>,
    pub headers_file: Option<PathBuf>,
    pub gzip: Option<bool>,
    pub batch_max_events: Option<usize>,
    pub batch_max_bytes: Option<usize>,
    pub batch_max_delay_ms: Option<u64>,

    // syslog over TLS and https
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,

    // syslog and http: the network sink's delivery
    pub timeout_secs: Option<u64>,
    pub spool_max_bytes: Option<u64>,
    pub retry_initial_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    pub queue_events: Option<usize>,
}

/// Keys each sink type accepts besides name, type, format and events.
const FILE_KEYS: &[&str] = &["path", "rotate_bytes", "rotate_secs", "retain", "fsync"];
const NETWORK_KEYS: &[&str] = &[
    "timeout_secs",
    "spool_max_bytes",
    "retry_initial_ms",
    "retry_max_ms",
    "queue_events",
];
const SYSLOG_KEYS: &[&str] = &[
    "address",
    "transport",
    "app_name",
    "facility",
    "ca_file",
    "server_name",
];
const HTTP_KEYS: &[&str] = &[
    "url",
    "api",
    "index",
    "token_file",
    "headers",
    "headers_file",
    "gzip",
    "batch_max_events",
    "batch_max_bytes",
    "batch_max_delay_ms",
    "ca_file",
    "server_name",
];

/// Syslog facility names (RFC 5424 table 1).
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

impl SinkConfig {
    /// The stdout sink the sensor uses when none is configured.
    pub fn default_stdout() -> Self {
        Self {
            name: "stdout".into(),
            kind: SinkType::Stdout,
            format: Format::Native,
            events: None,
            path: None,
            rotate_bytes: None,
            rotate_secs: None,
            retain: None,
            fsync: None,
            address: None,
            transport: None,
            app_name: None,
            facility: None,
            url: None,
            api: None,
            index: None,
            token_file: None,
            headers: None,
            headers_file: None,
            gzip: None,
            batch_max_events: None,
            batch_max_bytes: None,
            batch_max_delay_ms: None,
            ca_file: None,
            server_name: None,
            timeout_secs: None,
            spool_max_bytes: None,
            retry_initial_ms: None,
            retry_max_ms: None,
            queue_events: None,
        }
    }

    /// The keys set in this table, by name.
    fn set_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut note = |set: bool, key: &'static str| {
            if set {
                keys.push(key);
            }
        };
        note(self.path.is_some(), "path");
        note(self.rotate_bytes.is_some(), "rotate_bytes");
        note(self.rotate_secs.is_some(), "rotate_secs");
        note(self.retain.is_some(), "retain");
        note(self.fsync.is_some(), "fsync");
        note(self.address.is_some(), "address");
        note(self.transport.is_some(), "transport");
        note(self.app_name.is_some(), "app_name");
        note(self.facility.is_some(), "facility");
        note(self.url.is_some(), "url");
        note(self.api.is_some(), "api");
        note(self.index.is_some(), "index");
        note(self.token_file.is_some(), "token_file");
        note(self.headers.is_some(), "headers");
        note(self.headers_file.is_some(), "headers_file");
        note(self.gzip.is_some(), "gzip");
        note(self.batch_max_events.is_some(), "batch_max_events");
        note(self.batch_max_bytes.is_some(), "batch_max_bytes");
        note(self.batch_max_delay_ms.is_some(), "batch_max_delay_ms");
        note(self.ca_file.is_some(), "ca_file");
        note(self.server_name.is_some(), "server_name");
        note(self.timeout_secs.is_some(), "timeout_secs");
        note(self.spool_max_bytes.is_some(), "spool_max_bytes");
        note(self.retry_initial_ms.is_some(), "retry_initial_ms");
        note(self.retry_max_ms.is_some(), "retry_max_ms");
        note(self.queue_events.is_some(), "queue_events");
        keys
    }

    /// Checks the table; the message names the key.
    pub fn validate(&self, actions: &[&str]) -> Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "`name`: `{}` must be 1-64 letters, digits, `-` or `_`",
                self.name
            ));
        }
        let allowed: Vec<&str> = match self.kind {
            SinkType::Stdout => Vec::new(),
            SinkType::File => FILE_KEYS.to_vec(),
            SinkType::Syslog => [SYSLOG_KEYS, NETWORK_KEYS].concat(),
            SinkType::Http => [HTTP_KEYS, NETWORK_KEYS].concat(),
        };
        if let Some(bad) = self.set_keys().into_iter().find(|k| !allowed.contains(k)) {
            return Err(format!(
                "`{bad}` does not apply to a sink of type {}",
                self.kind.as_str()
            ));
        }
        if let Some(events) = &self.events
            && let Some(bad) = events.iter().find(|e| !actions.contains(&e.as_str()))
        {
            return Err(format!(
                "`events`: unknown action `{bad}`; known: {}",
                actions.join(", ")
            ));
        }
        match self.kind {
            SinkType::Stdout => {}
            SinkType::File => {
                let path = self.path.as_ref().ok_or("`path` is required")?;
                if !path.is_absolute() {
                    return Err(format!("`path`: {} is not absolute", path.display()));
                }
                if self.rotate_bytes.is_some_and(|b| b < 4096) {
                    return Err("`rotate_bytes` must be at least 4096".into());
                }
                if self.retain == Some(0) {
                    return Err("`retain` must be at least 1".into());
                }
            }
            SinkType::Syslog => {
                let address = self.address.as_ref().ok_or("`address` is required")?;
                host_port(address).map_err(|e| format!("`address`: {e}"))?;
                if self.transport.is_none() {
                    return Err("`transport` is required (udp, tcp or tls)".into());
                }
                if let Some(f) = &self.facility
                    && facility_code(f).is_none()
                {
                    return Err(format!(
                        "`facility`: `{f}` is not a facility ({} or 0-23)",
                        FACILITIES.join(", ")
                    ));
                }
                if (self.ca_file.is_some() || self.server_name.is_some())
                    && self.transport != Some(SyslogTransport::Tls)
                {
                    return Err(
                        "`ca_file` and `server_name` apply to transport = \"tls\" only".into(),
                    );
                }
            }
            SinkType::Http => {
                let url = self.url.as_ref().ok_or("`url` is required")?;
                let parsed = Url::parse(url).map_err(|e| format!("`url`: {e}"))?;
                if self.api.is_none() {
                    return Err("`api` is required (splunk_hec, elasticsearch or ndjson)".into());
                }
                if (self.ca_file.is_some() || self.server_name.is_some()) && !parsed.tls {
                    return Err("`ca_file` and `server_name` apply to https URLs only".into());
                }
                if self.token_file.is_some() && self.api != Some(HttpApi::SplunkHec) {
                    return Err(
                        "`token_file` applies to api = \"splunk_hec\" (use `headers_file` for others)"
                            .into(),
                    );
                }
                if self.api == Some(HttpApi::SplunkHec) && self.token_file.is_none() {
                    return Err("`token_file` is required for api = \"splunk_hec\"".into());
                }
                if let Some(headers) = &self.headers {
                    for name in headers.keys() {
                        header_name(name).map_err(|e| format!("`headers`: {e}"))?;
                    }
                }
                if self.batch_max_events == Some(0) || self.batch_max_bytes == Some(0) {
                    return Err("`batch_max_events` and `batch_max_bytes` must be positive".into());
                }
            }
        }
        if self.timeout_secs == Some(0) {
            return Err("`timeout_secs` must be at least 1".into());
        }
        if self.spool_max_bytes.is_some_and(|b| b < 1 << 20) {
            return Err("`spool_max_bytes` must be at least 1 MiB".into());
        }
        if self.queue_events == Some(0) {
            return Err("`queue_events` must be at least 1".into());
        }
        Ok(())
    }

    /// The action filter, `None` for all.
    pub fn event_filter(&self) -> Option<BTreeSet<String>> {
        self.events.as_ref().map(|e| e.iter().cloned().collect())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.unwrap_or(10))
    }

    pub fn facility(&self) -> u8 {
        self.facility
            .as_deref()
            .and_then(facility_code)
            .unwrap_or(16)
    }
}

fn facility_code(name: &str) -> Option<u8> {
    if let Ok(n) = name.parse::<u8>() {
        return (n < 24).then_some(n);
    }
    FACILITIES.iter().position(|f| *f == name).map(|i| i as u8)
}

/// `host:port` with a non-empty host and a port; `[v6]:port` allowed.
pub fn host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{address}` is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{address}`: bad port `{port}`"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(format!("`{address}` is not host:port"));
    }
    Ok((host.to_owned(), port))
}

fn header_name(name: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("`{name}` is not a header name"));
    }
    Ok(())
}

/// An `http` or `https` URL, enough of it to make requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("`{url}` is not an http:// or https:// URL"));
        };
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not accepted; use `headers_file`".into());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if authority.ends_with(']') || !authority.contains(':') {
            (authority.to_owned(), default_port)
        } else {
            let (h, p) = host_port(authority)?;
            (h, p)
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("`{url}` has spaces or control characters"));
        }
        Ok(Self {
            tls,
            host,
            port,
            target: target.to_owned(),
        })
    }
}

/// Reads a secret file (a token, headers), refusing one that others can
/// read. The error names the file, never its content.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("secret file {}: {e}", path.display()))?;
    if meta.mode() & 0o007 != 0 {
        return Err(format!(
            "secret file {} is accessible to other users (mode {:o}); chmod o-rwx it",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("secret file {}: {e}", path.display()))
}

/// `Name: value` lines of a headers file (blank lines and `#` comments
/// skipped). Errors name the line number, never its value.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: not `Name: value`", i + 1))?;
        let name = name.trim();
        header_name(name).map_err(|e| format!("line {}: {e}", i + 1))?;
        let value = value.trim();
        if value.bytes().any(|b| b < b' ' && b != b'\t') {
            return Err(format!("line {}: control characters in the value", i + 1));
        }
        out.push((name.to_owned(), value.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIONS: &[&str] = &["model_call", "connect"];

    fn parse(text: &str) -> Result<SinkConfig, String> {
        toml::from_str::<SinkConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_must_fit_the_type() {
        let s = parse("name = \"a\"\ntype = \"stdout\"\nurl = \"http://x/\"").expect("parse");
        let err = s.validate(ACTIONS).unwrap_err();
        assert!(err.contains("`url`") && err.contains("stdout"), "{err}");
        let s = parse("name = \"a\"\ntype = \"file\"").expect("parse");
        assert!(s.validate(ACTIONS).unwrap_err().contains("`path`"));
        let s = parse("name = \"a\"\ntype = \"file\"\npath = \"/x\"\nevents = [\"nope\"]")
            .expect("parse");
        assert!(s.validate(ACTIONS).unwrap_err().contains("nope"));
        assert!(parse("name = \"a\"\ntype = \"file\"\npth = \"/x\"").is_err());
        let s = parse("name = \"a b\"\ntype = \"stdout\"").expect("parse");
        assert!(s.validate(ACTIONS).unwrap_err().contains("`name`"));
    }

    #[test]
    fn network_sinks() {
        let s = parse(
            "name = \"hec\"\ntype = \"http\"\napi = \"splunk_hec\"\nurl = \"https://splunk:8088/services/collector/event\"\ntoken_file = \"/t\"\ngzip = true",
        )
        .expect("parse");
        s.validate(ACTIONS).expect("valid");
        let s =
            parse("name = \"hec\"\ntype = \"http\"\napi = \"splunk_hec\"\nurl = \"https://s/\"")
                .expect("parse");
        assert!(s.validate(ACTIONS).unwrap_err().contains("token_file"));
        let s = parse("name = \"s\"\ntype = \"syslog\"\naddress = \"h:514\"\ntransport = \"udp\"\nfacility = \"local9\"")
            .expect("parse");
        assert!(s.validate(ACTIONS).unwrap_err().contains("facility"));
        let s = parse("name = \"s\"\ntype = \"syslog\"\naddress = \"h\"\ntransport = \"tcp\"")
            .expect("parse");
        assert!(s.validate(ACTIONS).unwrap_err().contains("address"));
    }

    #[test]
    fn urls() {
        let u = Url::parse("https://es.example:9200/_bulk?refresh=false").expect("url");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.target.as_str()),
            (true, "es.example", 9200, "/_bulk?refresh=false")
        );
        let u = Url::parse("http://[::1]/x").expect("url");
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        let u = Url::parse("http://[::1]:8080").expect("url");
        assert_eq!((u.port, u.target.as_str()), (8080, "/"));
        assert!(Url::parse("ftp://x/").is_err());
        let err = Url::parse("https://user:pw@x/").unwrap_err();
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn header_files() {
        let h = parse_headers("# auth\nAuthorization: ApiKey abc==\n\nX-Tenant: t1\n").expect("ok");
        assert_eq!(h.len(), 2);
        assert_eq!(h[0], ("Authorization".into(), "ApiKey abc==".into()));
        let err = parse_headers("Authorization ApiKey secretvalue").unwrap_err();
        assert!(!err.contains("secretvalue"), "{err}");
    }
}
