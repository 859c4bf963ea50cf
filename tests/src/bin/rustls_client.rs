//! `rustls-client`: OpenAI chat-completion calls over rustls (ring provider),
//! for the sensor's integration tests (see tests/clients/README.md).
//!
//! ```text
//! OPENAI_API_KEY=sk-... rustls-client BASE CA.pem MODEL N
//! ```
//!
//! BASE is `https://HOST:PORT` (a trailing `/v1` is accepted; HOST may be a
//! name, an IPv4 address or a bracketed IPv6 address, and is both the TLS
//! server name and the name checked against the certificate). The only trust
//! anchor is the CA in CA.pem. One TCP connection, one TLS session (ALPN
//! `http/1.1`), N keep-alive `POST /v1/chat/completions` requests with
//! `Content-Length` bodies, the last one with `Connection: close`; responses
//! are read by `Content-Length` or chunked. One JSON line per call on stdout;
//! on any error (including an HTTP status other than 200) a message on
//! stderr and exit status 1.
#![allow(
    clippy::print_stdout,
    reason = "a test client: its result goes to stdout"
)]

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    sync::Arc,
    time::Duration,
};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    if let Err(err) = run() {
        eprintln!("rustls-client: {err}");
        std::process::exit(1);
    }
}

struct Target {
    host: String,
    port: u16,
    authority: String,
    prefix: String,
}

/// Splits `https://HOST[:PORT][/PREFIX]`; a trailing `/v1` is dropped.
fn parse_base(base: &str) -> Result<Target, Error> {
    let rest = base
        .strip_prefix("https://")
        .ok_or("BASE must start with https://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed [ in BASE")?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
        None => 443,
    };
    let path = path.trim_end_matches('/');
    let prefix = path.strip_suffix("/v1").unwrap_or(path).to_owned();
    Ok(Target {
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
        prefix,
    })
}

fn run() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, ca, model, n] = args.as_slice() else {
        return Err("usage: rustls-client BASE CA.pem MODEL N".into());
    };
    let n: usize = n.parse().map_err(|_| format!("bad N {n:?}"))?;
    let key = std::env::var("OPENAI_API_KEY").map_err(|_| "OPENAI_API_KEY is not set")?;
    let target = parse_base(base)?;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("reading {ca}: {e}"))? {
        roots.add(cert.map_err(|e| format!("reading {ca}: {e}"))?)?;
    }
    if roots.is_empty() {
        return Err(format!("no certificate in {ca}").into());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = ServerName::try_from(target.host.clone())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), server_name)?;
    let tcp = TcpStream::connect((target.host.as_str(), target.port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let local_port = tcp.local_addr()?.port();
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));

    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
    })
    .to_string();
    let pid = std::process::id();
    for call in 0..n {
        let connection = if call + 1 == n { "close" } else { "keep-alive" };
        let request = format!(
            "POST {}/v1/chat/completions HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/json\r\nAuthorization: Bearer {key}\r\n\
             Content-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
            target.prefix,
            target.authority,
            body.len(),
        );
        let stream = tls.get_mut();
        stream.write_all(request.as_bytes())?;
        stream.flush()?;
        let (status, answer) = read_response(&mut tls)?;
        let doc: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|e| format!("call {call}: status {status}, body is not JSON: {e}"))?;
        let line = serde_json::json!({
            "pid": pid, "call": call, "status": status, "proto": "HTTP/1.1",
            "model": doc["model"], "id": doc["id"], "local_port": local_port,
            "ok": status == 200,
        });
        println!("{line}");
        if status != 200 {
            return Err(format!("call {call}: HTTP status {status}: {doc}").into());
        }
    }
    let stream = tls.get_mut();
    stream.conn.send_close_notify();
    // The server may already have closed after `Connection: close`.
    let _ = stream.flush();
    Ok(())
}

/// Reads one HTTP/1.1 response: (status, body).
fn read_response(r: &mut impl BufRead) -> Result<(u16, Vec<u8>), Error> {
    let status_line = read_line(r)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or("bad header line")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size_line = read_line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                while !read_line(r)?.is_empty() {} // trailers
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            read_line(r)?; // CRLF after the chunk
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        return Err("response has neither Content-Length nor chunked encoding".into());
    }
    Ok((status, body))
}

fn read_line(r: &mut impl BufRead) -> Result<String, Error> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err("connection closed in a response".into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
