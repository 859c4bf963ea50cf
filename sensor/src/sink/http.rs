//! HTTP sinks: Splunk HEC (`/services/collector/event`), Elasticsearch
//! `_bulk`, and plain NDJSON, each batch one POST over a kept-alive
//! HTTP/1.1 connection (TLS by rustls, with a custom CA if given),
//! optionally gzipped. Header values (tokens) come from the config or a
//! file and are never logged: errors name the status and the sink only.
//!
//! Status handling: 2xx delivered; 408, 429, 5xx and connection failures
//! retried; 401, 403 and 404 retried too (a wrong token or URL is fixed
//! by an operator, and the records wait in the spool meanwhile); other
//! 4xx refuse the batch for good. Elasticsearch items are sent as `create`
//! with `_id` = the record's id, so a batch sent twice stores each record
//! once (409 conflicts are the repeats).

use std::{
    io::{self, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    sync::Arc,
    time::Duration,
};

use flate2::{Compression, write::GzEncoder};
use serde_json::Value;

use super::{
    config::{HttpApi, SinkConfig, Url, parse_headers, read_secret_file},
    transport::{TlsStream, Transport, TransportError, connect_first, tls_config, tls_handshake},
};

const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

pub struct Http {
    url: Url,
    api: HttpApi,
    index: Option<String>,
    /// Configured headers; values may be secrets.
    headers: Vec<(String, String)>,
    gzip: bool,
    timeout: Duration,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    host_name: String,
    conn: Option<Conn>,
    rejected: u64,
}

impl Http {
    pub fn new(sink: &SinkConfig, host_name: &str) -> Result<Self, String> {
        let url = Url::parse(sink.url.as_deref().unwrap_or_default())?;
        let api = sink.api.ok_or("no api")?;
        let mut headers: Vec<(String, String)> = sink
            .headers
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(path) = &sink.headers_file {
            let text = read_secret_file(path)?;
            headers.extend(
                parse_headers(&text)
                    .map_err(|e| format!("headers file {}: {e}", path.display()))?,
            );
        }
        if let Some(path) = &sink.token_file {
            let token = read_secret_file(path)?;
            if token.is_empty() || token.bytes().any(|b| b <= b' ') {
                return Err(format!(
                    "token file {} is empty or holds spaces or control characters",
                    path.display()
                ));
            }
            headers.push(("Authorization".into(), format!("Splunk {token}")));
        }
        let tls = if url.tls {
            let config = tls_config(sink.ca_file.as_deref())?;
            let name = sink.server_name.clone().unwrap_or_else(|| url.host.clone());
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|_| format!("`{name}` is not a TLS server name"))?;
            Some((config, name))
        } else {
            None
        };
        Ok(Self {
            index: sink
                .index
                .clone()
                .or_else(|| (api == HttpApi::Elasticsearch).then(|| "sensor-events".to_owned())),
            url,
            api,
            headers,
            gzip: sink.gzip.unwrap_or(false),
            timeout: sink.timeout(),
            tls,
            host_name: host_name.to_owned(),
            conn: None,
            rejected: 0,
        })
    }

    /// The request body for a batch.
    pub fn body(&self, ids: &[&str], records: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 96).sum());
        match self.api {
            HttpApi::SplunkHec => {
                let host = serde_json::to_string(&self.host_name).unwrap_or_default();
                let index = self
                    .index
                    .as_ref()
                    .map(|i| {
                        format!(
                            ",\"index\":{}",
                            serde_json::to_string(i).unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                for record in records {
                    body.extend_from_slice(b"{\"event\":");
                    body.extend_from_slice(record);
                    body.extend_from_slice(
                        format!(",\"host\":{host},\"source\":\"sensor\",\"sourcetype\":\"_json\"{index}}}\n")
                            .as_bytes(),
                    );
                }
            }
            HttpApi::Elasticsearch => {
                let index = serde_json::to_string(self.index.as_deref().unwrap_or("sensor-events"))
                    .unwrap_or_default();
                for (i, record) in records.iter().enumerate() {
                    let id = ids.get(i).copied().unwrap_or_default();
                    let id = serde_json::to_string(id).unwrap_or_default();
                    body.extend_from_slice(
                        format!("{{\"create\":{{\"_index\":{index},\"_id\":{id}}}}}\n").as_bytes(),
                    );
                    body.extend_from_slice(record);
                    body.push(b'\n');
                }
            }
            HttpApi::Ndjson => {
                for record in records {
                    body.extend_from_slice(record);
                    body.push(b'\n');
                }
            }
        }
        body
    }

    fn connect(&self) -> Result<Conn, TransportError> {
        let retry = |what: &str, e: &dyn std::fmt::Display| {
            TransportError::Retryable(format!("{what} {}:{}: {e}", self.url.host, self.url.port))
        };
        let addrs = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(|e| retry("resolving", &e))?;
        let tcp = connect_first(addrs, self.timeout).map_err(|e| retry("connecting to", &e))?;
        match &self.tls {
            None => Ok(Conn::Plain(tcp)),
            Some((config, name)) => tls_handshake(Arc::clone(config), name.clone(), tcp)
                .map(|stream| Conn::Tls(Box::new(stream)))
                .map_err(|e| retry("TLS handshake with", &e)),
        }
    }

    fn request(&self, body: &[u8]) -> Vec<u8> {
        let content_type = match self.api {
            HttpApi::SplunkHec => "application/json",
            HttpApi::Elasticsearch | HttpApi::Ndjson => "application/x-ndjson",
        };
        let host = if self.url.host.contains(':') {
            format!("[{}]:{}", self.url.host, self.url.port)
        } else {
            format!("{}:{}", self.url.host, self.url.port)
        };
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sensor/{}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n",
            self.url.target,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if self.gzip {
            head.push_str("Content-Encoding: gzip\r\n");
        }
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// One POST on `conn`; the response status and body.
    fn exchange(conn: &mut Conn, request: &[u8]) -> io::Result<(u16, Vec<u8>, bool)> {
        conn.write_all(request)?;
        conn.flush()?;
        read_response(conn)
    }

    fn judge(&mut self, status: u16, body: &[u8]) -> Result<(), TransportError> {
        match status {
            200..=299 => {
                if self.api == HttpApi::Elasticsearch {
                    return self.bulk_items(body);
                }
                Ok(())
            }
            408 | 429 | 500..=599 => Err(TransportError::Retryable(format!("HTTP {status}"))),
            401 | 403 => Err(TransportError::Retryable(format!(
                "HTTP {status}: the receiver refused the credentials (check the token or headers file); records kept in the spool"
            ))),
            404 => Err(TransportError::Retryable(
                "HTTP 404: check the URL; records kept in the spool".into(),
            )),
            413 => Err(TransportError::Rejected(
                "HTTP 413: batch too large for the receiver; lower batch_max_bytes".into(),
            )),
            other => Err(TransportError::Rejected(format!("HTTP {other}"))),
        }
    }

    /// `_bulk` answers 200 with per-item results: retry the batch when an
    /// item may succeed later; 409 means the record is stored already.
    fn bulk_items(&mut self, body: &[u8]) -> Result<(), TransportError> {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Err(TransportError::Retryable(
                "Elasticsearch _bulk answer is not JSON".into(),
            ));
        };
        if value.get("errors").and_then(Value::as_bool) != Some(true) {
            return Ok(());
        }
        let mut refused = 0;
        for item in value["items"].as_array().into_iter().flatten() {
            let status = item
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|r| r.get("status"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            match status {
                200..=299 | 409 => {}
                429 | 500..=599 => {
                    return Err(TransportError::Retryable(format!(
                        "Elasticsearch _bulk item status {status}"
                    )));
                }
                _ => refused += 1,
            }
        }
        if refused > 0 {
            tracing::warn!(
                records = refused,
                "Elasticsearch refused records of a batch (mapping errors?)"
            );
            self.rejected += refused;
        }
        Ok(())
    }
}

impl Transport for Http {
    fn send(&mut self, records: &[&[u8]]) -> Result<(), TransportError> {
        self.send_with_ids(&[], records)
    }

    fn send_with_ids(&mut self, ids: &[&str], records: &[&[u8]]) -> Result<(), TransportError> {
        let mut body = self.body(ids, records);
        if self.gzip {
            let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
            gz.write_all(&body)?;
            body = gz.finish()?;
        }
        let request = self.request(&body);
        // A kept-alive connection the receiver has closed fails at once:
        // that gets one more try on a fresh connection.
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            let mut conn = match self.conn.take().filter(|c| !peer_closed(c.tcp())) {
                Some(conn) => conn,
                None => self.connect()?,
            };
            match Self::exchange(&mut conn, &request) {
                Ok((status, response, keep)) => {
                    if keep {
                        self.conn = Some(conn);
                    }
                    return self.judge(status, &response);
                }
                Err(err) if reused && attempt == 0 => {
                    tracing::debug!(%err, "kept-alive connection failed; reconnecting");
                }
                Err(err) => {
                    return Err(TransportError::Retryable(format!(
                        "{}:{}: {err}",
                        self.url.host, self.url.port
                    )));
                }
            }
        }
        Err(TransportError::Retryable("no connection".into()))
    }

    fn take_rejected(&mut self) -> u64 {
        std::mem::take(&mut self.rejected)
    }
}

/// True when the peer has closed (or reset) an idle connection.
fn peer_closed(tcp: &TcpStream) -> bool {
    if tcp.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match tcp.peek(&mut byte) {
        Ok(0) => true,
        // Unread bytes on an idle connection: out of step, start afresh.
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    if tcp.set_nonblocking(false).is_err() {
        return true;
    }
    closed
}

/// Reads one HTTP/1.1 response: status, body (Content-Length, chunked, or
/// to the end), and whether the connection can be kept.
fn read_response(conn: &mut impl Read) -> io::Result<(u16, Vec<u8>, bool)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("response head over 64 KiB"));
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("malformed status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut keep = !status_line.starts_with("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut rest = buf[head_end..].to_vec();
    let body = if chunked {
        read_chunked(conn, &mut rest)?
    } else if let Some(length) = length {
        if length > MAX_RESPONSE_BYTES {
            return Err(io::Error::other("response body too large"));
        }
        while rest.len() < length {
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(length);
        rest
    } else if status == 204 || status == 304 {
        Vec::new()
    } else {
        keep = false;
        loop {
            let n = conn.read(&mut chunk)?;
            if n == 0 || rest.len() > MAX_RESPONSE_BYTES {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest
    };
    Ok((status, body, keep))
}

fn read_chunked(conn: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut pos = 0;
    let mut fill = |buf: &mut Vec<u8>| -> io::Result<()> {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "chunked body cut",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        Ok(())
    };
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[pos..], b"\r\n") {
                break pos + i;
            }
            fill(buf)?;
        };
        let size_text = String::from_utf8_lossy(&buf[pos..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::other("bad chunk size"))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    if i == 0 {
                        return Ok(body);
                    }
                    pos += i + 2;
                } else {
                    fill(buf)?;
                }
            }
        }
        if body.len() + size > MAX_RESPONSE_BYTES {
            return Err(io::Error::other("response body too large"));
        }
        while buf.len() < pos + size + 2 {
            fill(buf)?;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(api: &str, extra: &str) -> SinkConfig {
        toml::from_str(&format!(
            "name = \"h\"\ntype = \"http\"\napi = \"{api}\"\nurl = \"http://127.0.0.1:1/x\"\n{extra}"
        ))
        .expect("config")
    }

    #[test]
    fn bodies_per_api() {
        let h = Http::new(&sink("ndjson", ""), "node-1").expect("http");
        assert_eq!(
            h.body(&[], &[b"{\"a\":1}", b"{\"b\":2}"]),
            b"{\"a\":1}\n{\"b\":2}\n"
        );
        let h = Http::new(&sink("elasticsearch", "index = \"ev\""), "n").expect("http");
        let body = String::from_utf8(h.body(&["id-1"], &[b"{\"a\":1}"])).expect("utf8");
        assert_eq!(
            body,
            "{\"create\":{\"_index\":\"ev\",\"_id\":\"id-1\"}}\n{\"a\":1}\n"
        );
        let mut h = Http::new(&sink("ndjson", ""), "n").expect("http");
        h.api = HttpApi::SplunkHec;
        let body = String::from_utf8(h.body(&[], &[b"{\"a\":1}"])).expect("utf8");
        let v: Value = serde_json::from_str(body.trim()).expect("json");
        assert_eq!(v["event"]["a"], 1);
        assert_eq!(v["sourcetype"], "_json");
        assert_eq!(v["host"], "n");
    }

    #[test]
    fn responses() {
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            read_response(&mut r).expect("resp"),
            (200, b"ok".to_vec(), true)
        );
        let mut r: &[u8] =
            b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            read_response(&mut r).expect("resp"),
            (503, b"abcde".to_vec(), false)
        );
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nuntil close";
        assert_eq!(read_response(&mut r).expect("resp").1, b"until close");
        let mut r: &[u8] = b"garbage\r\n\r\n";
        assert!(read_response(&mut r).is_err());
    }

    #[test]
    fn bulk_item_errors() {
        let mut h = Http::new(&sink("elasticsearch", ""), "n").expect("http");
        let ok = br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409}},{"create":{"status":400}}]}"#;
        assert!(h.judge(200, ok).is_ok());
        assert_eq!(h.take_rejected(), 1);
        let retry = br#"{"errors":true,"items":[{"create":{"status":429}}]}"#;
        assert!(matches!(
            h.judge(200, retry),
            Err(TransportError::Retryable(_))
        ));
        assert!(matches!(
            h.judge(400, b""),
            Err(TransportError::Rejected(_))
        ));
        assert!(matches!(
            h.judge(403, b""),
            Err(TransportError::Retryable(_))
        ));
    }
}
