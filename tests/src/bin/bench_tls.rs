//! `bench-tls`: the load for `cargo xtask bench`.
//!
//! - `bench-tls server --cert C --key K`: an HTTPS/1.1 keep-alive server on
//!   loopback built on rustls, which the sensor does not probe, so the
//!   measurement sees only the client's cost. It answers every request with
//!   a small chat-completion JSON, so a probed client makes the sensor do
//!   its full work (parse, recognise, emit a `model_call`).
//! - `bench-tls client --port P --ca CA --mode keepalive|handshake --body N
//!   --seconds S`: POSTs chat completions with an N-byte body through the
//!   system's OpenSSL (what the sensor probes) for S seconds, on one
//!   keep-alive connection or with a fresh handshake per request, and
//!   prints one JSON line: requests, rate, latency percentiles, CPU time.
//! - `bench-tls sequenced --port P --ca CA --rate R --seconds S
//!   --connections C --tag T`: requests at R per second in all, spread over
//!   C keep-alive connections, each naming model `bench-seq-T-<conn>-<n>`
//!   so the receiving end can tell exactly which ones it lost; prints how
//!   many were sent.
//! - `bench-tls oneshot --port P --ca CA --model M`: one process, one
//!   connection, one chat completion for model M, then exit: the
//!   short-lived client whose attribution the benchmark times.
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool: its result goes to stdout"
)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => server(&args[1..]),
        Some("client") => client(&args[1..]),
        Some("oneshot") => oneshot(&args[1..]),
        Some("sequenced") => sequenced(&args[1..]),
        _ => Err("usage: bench-tls server --cert C --key K | client --port P --ca CA --mode M --body N --seconds S".into()),
    };
    if let Err(err) = result {
        eprintln!("bench-tls: {err}");
        std::process::exit(1);
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Result<&'a str, Error> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .ok_or_else(|| format!("missing {name}").into())
}

const RESPONSE_BODY: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}"#;

fn server(args: &[String]) -> Result<(), Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs =
        CertificateDer::pem_file_iter(flag(args, "--cert")?)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(flag(args, "--key")?)?;
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?,
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("READY {}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let config = Arc::clone(&config);
        std::thread::spawn(move || {
            let _ = serve(config, stream);
        });
    }
    Ok(())
}

/// One connection: requests until the client closes.
fn serve(config: Arc<rustls::ServerConfig>, stream: TcpStream) -> Result<(), Error> {
    stream.set_nodelay(true)?;
    let conn = rustls::ServerConnection::new(config)?;
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, stream));
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{RESPONSE_BODY}",
        RESPONSE_BODY.len()
    );
    let mut body = Vec::new();
    loop {
        let Some(length) = read_head(&mut tls)? else {
            return Ok(());
        };
        body.resize(length, 0);
        tls.read_exact(&mut body)?;
        tls.get_mut().write_all(response.as_bytes())?;
        tls.get_mut().flush()?;
    }
}

/// Reads a header block; returns its Content-Length, or None at EOF.
fn read_head(reader: &mut impl BufRead) -> Result<Option<usize>, Error> {
    let mut length = 0;
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return if first {
                Ok(None)
            } else {
                Err("connection closed mid-message".into())
            };
        }
        first = false;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            return Ok(Some(length));
        }
        if let Some((name, value)) = trimmed.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
}

fn client(args: &[String]) -> Result<(), Error> {
    use openssl::ssl::{SslConnector, SslMethod};
    let port: u16 = flag(args, "--port")?.parse()?;
    let mode = flag(args, "--mode")?;
    let body_len: usize = flag(args, "--body")?.parse()?;
    let seconds: f64 = flag(args, "--seconds")?.parse()?;
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    builder.set_ca_file(flag(args, "--ca")?)?;
    let connector = builder.build();
    let prefix = r#"{"model":"bench-model","messages":[{"role":"user","content":""#;
    let suffix = r#""}]}"#;
    let pad = body_len.saturating_sub(prefix.len() + suffix.len());
    let body = format!("{prefix}{}{suffix}", "x".repeat(pad));
    let request = chat_request(port, &body);
    let connections: usize = flag(args, "--connections")
        .ok()
        .map(str::parse)
        .transpose()?
        .unwrap_or(1);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    // One thread per connection: with several, the run is CPU-bound, so the
    // rate measures cost rather than wake-up latency.
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let connector = connector.clone();
            let request = request.clone();
            let mode = mode.to_owned();
            std::thread::spawn(move || -> Result<Vec<u32>, Error> {
                let connect = || -> Result<_, Error> {
                    let tcp = TcpStream::connect(("127.0.0.1", port))?;
                    tcp.set_nodelay(true)?;
                    Ok(BufReader::new(connector.connect("localhost", tcp)?))
                };
                let mut latencies = Vec::new();
                let mut conn = None;
                let mut response = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let stream = match (&mut conn, mode.as_str()) {
                        (Some(stream), "keepalive") => stream,
                        _ => conn.insert(connect()?),
                    };
                    stream.get_mut().write_all(request.as_bytes())?;
                    let length = read_head(stream)?.ok_or("server closed the connection")?;
                    response.resize(length, 0);
                    stream.read_exact(&mut response)?;
                    if mode == "handshake"
                        && let Some(mut stream) = conn.take()
                    {
                        let _ = stream.get_mut().shutdown();
                    }
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies: Vec<u32> = Vec::new();
    for worker in workers {
        latencies.extend(worker.join().map_err(|_| "client thread panicked")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (user, sys) = cpu_seconds();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let n = latencies.len() as f64;
    let cpu = (user - cpu_before.0) + (sys - cpu_before.1);
    println!(
        "{}",
        serde_json::json!({
            "mode": mode, "connections": connections, "body_bytes": body.len(), "requests": latencies.len(), "seconds": elapsed,
            "rps": n / elapsed, "p50_us": pct(0.50), "p99_us": pct(0.99),
            "cpu_seconds": cpu, "cpu_us_per_request": if n > 0.0 { cpu * 1e6 / n } else { 0.0 },
        })
    );
    Ok(())
}

fn sequenced(args: &[String]) -> Result<(), Error> {
    use openssl::ssl::{SslConnector, SslMethod};
    let port: u16 = flag(args, "--port")?.parse()?;
    let rate: f64 = flag(args, "--rate")?.parse()?;
    let seconds: f64 = flag(args, "--seconds")?.parse()?;
    let connections: usize = flag(args, "--connections")?.parse()?;
    let tag = flag(args, "--tag")?.to_owned();
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    builder.set_ca_file(flag(args, "--ca")?)?;
    let connector = builder.build();
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|conn| {
            let connector = connector.clone();
            let tag = tag.clone();
            std::thread::spawn(move || -> Result<u64, Error> {
                let tcp = TcpStream::connect(("127.0.0.1", port))?;
                tcp.set_nodelay(true)?;
                let mut stream = BufReader::new(connector.connect("localhost", tcp)?);
                let mut response = Vec::new();
                let mut sent = 0u64;
                // Paced from the start: a late request is sent at once and
                // the schedule kept, so the rate is the one asked for.
                let mut next = Instant::now();
                while next < deadline {
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let body = format!(
                        r#"{{"model":"bench-seq-{tag}-{conn}-{sent}","messages":[{{"role":"user","content":"sequenced"}}]}}"#
                    );
                    stream.get_mut().write_all(chat_request(port, &body).as_bytes())?;
                    let length = read_head(&mut stream)?.ok_or("server closed the connection")?;
                    response.resize(length, 0);
                    stream.read_exact(&mut response)?;
                    sent += 1;
                    next += interval;
                }
                Ok(sent)
            })
        })
        .collect();
    let mut sent = 0;
    for worker in workers {
        sent += worker.join().map_err(|_| "client thread panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"sent": sent, "seconds": elapsed, "rate": sent as f64 / elapsed})
    );
    Ok(())
}

/// A chat-completion request with `body`.
fn chat_request(port: u16, body: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost:{port}\r\nauthorization: Bearer sk-bench-not-a-key\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn oneshot(args: &[String]) -> Result<(), Error> {
    use openssl::ssl::{Ssl, SslContext, SslMethod, SslVerifyMode};
    let port: u16 = flag(args, "--port")?.parse()?;
    let model = flag(args, "--model")?;
    // Only the test CA: `SslConnector` would also parse the system bundle,
    // which alone takes tens of milliseconds, and this client must be short.
    let mut builder = SslContext::builder(SslMethod::tls_client())?;
    builder.set_verify(SslVerifyMode::PEER);
    builder.set_ca_file(flag(args, "--ca")?)?;
    let context = builder.build();
    let mut ssl = Ssl::new(&context)?;
    ssl.set_hostname("localhost")?;
    ssl.param_mut().set_host("localhost")?;
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_nodelay(true)?;
    let mut stream = BufReader::new(ssl.connect(tcp)?);
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let request = chat_request(port, &body);
    stream.get_mut().write_all(request.as_bytes())?;
    let length = read_head(&mut stream)?.ok_or("server closed the connection")?;
    let mut response = vec![0; length];
    stream.read_exact(&mut response)?;
    let _ = stream.get_mut().shutdown();
    Ok(())
}

/// User and system CPU seconds of this process so far.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}
