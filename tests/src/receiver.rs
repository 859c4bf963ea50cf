//! An HTTP(S) receiver for the sink tests, playing Splunk HEC
//! (`/services/collector/event`), Elasticsearch (`/_bulk`) and a plain
//! NDJSON webhook (`/ndjson`). It can be stopped (listener and every
//! connection closed) and started again on the same port, to make an
//! outage. Records are kept in arrival order; Elasticsearch `create`s with
//! an `_id` already stored answer 409, as Elasticsearch does.

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

#[derive(Default)]
pub struct Received {
    /// HEC events (the `event` member of each object), in order.
    pub hec: Vec<Value>,
    /// Bulk documents stored (first `create` of each id), in order.
    pub bulk: Vec<(String, Value)>,
    /// Bulk `create`s refused as already stored.
    pub bulk_conflicts: u64,
    /// NDJSON lines.
    pub ndjson: Vec<Value>,
    /// (path, status) of every request.
    pub requests: Vec<(String, u16)>,
    /// Requests that were gzipped.
    pub gzipped: u64,
    /// HEC requests refused for a wrong token.
    pub unauthorized: u64,
}

pub struct Receiver {
    pub port: u16,
    tls: Option<Arc<rustls::ServerConfig>>,
    token: String,
    pub received: Arc<Mutex<Received>>,
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<()>,
}

impl Receiver {
    /// Starts on a free port; HTTPS when `tls` gives (cert, key) PEM files.
    /// HEC requests must carry `Authorization: Splunk <token>`.
    pub fn start(tls: Option<(&Path, &Path)>, token: &str) -> Self {
        let tls = tls.map(|(cert, key)| server_config(cert, key));
        let mut receiver = Self {
            port: 0,
            tls,
            token: token.to_owned(),
            received: Arc::new(Mutex::new(Received::default())),
            running: None,
        };
        receiver.resume();
        receiver
    }

    /// Closes the listener and every connection.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            {
                let _in_flight = self.received.lock().unwrap();
                running.stop.store(true, Ordering::SeqCst);
                for conn in running.conns.lock().unwrap().drain(..) {
                    let _ = conn.shutdown(Shutdown::Both);
                }
            }
            let _ = running.accept.join();
        }
    }

    /// Listens again on the same port.
    pub fn resume(&mut self) {
        assert!(self.running.is_none(), "receiver already running");
        let listener = {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match TcpListener::bind(("127.0.0.1", self.port)) {
                    Ok(l) => break l,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("binding the receiver to port {}: {e}", self.port),
                }
            }
        };
        self.port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (stop2, conns2) = (Arc::clone(&stop), Arc::clone(&conns));
        let received = Arc::clone(&self.received);
        let tls = self.tls.clone();
        let token = self.token.clone();
        let accept = std::thread::spawn(move || {
            let mut workers = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        conns2.lock().unwrap().push(stream.try_clone().unwrap());
                        let (received, tls, token, stop) = (
                            Arc::clone(&received),
                            tls.clone(),
                            token.clone(),
                            Arc::clone(&stop2),
                        );
                        workers.push(std::thread::spawn(move || {
                            serve(stream, tls, &token, &received, &stop)
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            drop(listener);
            for w in workers {
                let _ = w.join();
            }
        });
        self.running = Some(Running {
            stop,
            conns,
            accept,
        });
    }

    /// Waits until `pred` holds for what was received.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&Received) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.received.lock().unwrap()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn server_config(cert: &Path, key: &Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    )
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn serve(
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    token: &str,
    received: &Mutex<Received>,
    stop: &AtomicBool,
) {
    let mut stream: Box<dyn Stream> = match tls {
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
        None => Box::new(tcp),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        // One request: head, then Content-Length bytes.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_owned();
        let mut length = 0;
        let mut gzip = false;
        let mut auth = String::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-encoding" => gzip = value.trim().eq_ignore_ascii_case("gzip"),
                    "authorization" => auth = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        while buf.len() < head_end + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let raw: Vec<u8> = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let body = if gzip {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            raw
        };
        // The lock is held from the stop check to the answer written, and
        // `stop` takes it: a request is either stored and answered, or
        // neither (no repeat that the receiver caused).
        let mut r = received.lock().unwrap();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if gzip {
            r.gzipped += 1;
        }
        let (status, answer) = handle(&path, &auth, token, &body, &mut r);
        r.requests.push((path.clone(), status));
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(response.as_bytes()).is_err() || stream.flush().is_err() {
            return;
        }
        drop(r);
    }
}

fn handle(path: &str, auth: &str, token: &str, body: &[u8], r: &mut Received) -> (u16, Value) {
    match path {
        "/services/collector/event" => {
            if auth != format!("Splunk {token}") {
                r.unauthorized += 1;
                return (401, json!({"text": "Invalid token", "code": 4}));
            }
            let mut events = Vec::new();
            for value in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
                match value {
                    Ok(v) if v.get("event").is_some() => events.push(v["event"].clone()),
                    _ => return (400, json!({"text": "Invalid data format", "code": 6})),
                }
            }
            r.hec.extend(events);
            (200, json!({"text": "Success", "code": 0}))
        }
        "/_bulk" => {
            let text = String::from_utf8_lossy(body);
            let mut lines = text.lines();
            let mut items = Vec::new();
            let mut errors = false;
            let seen: HashSet<String> = r.bulk.iter().map(|(id, _)| id.clone()).collect();
            let mut seen = seen;
            while let Some(action) = lines.next() {
                let Ok(action) = serde_json::from_str::<Value>(action) else {
                    return (400, json!({"error": "bad action line"}));
                };
                let Some(doc) = lines
                    .next()
                    .and_then(|d| serde_json::from_str::<Value>(d).ok())
                else {
                    return (400, json!({"error": "bad document line"}));
                };
                let id = action["create"]["_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if seen.insert(id.clone()) {
                    r.bulk.push((id, doc));
                    items.push(json!({"create": {"status": 201}}));
                } else {
                    r.bulk_conflicts += 1;
                    errors = true;
                    items.push(json!({"create": {"status": 409}}));
                }
            }
            (200, json!({"errors": errors, "items": items}))
        }
        "/ndjson" => {
            for line in String::from_utf8_lossy(body).lines() {
                match serde_json::from_str(line) {
                    Ok(v) => r.ndjson.push(v),
                    Err(_) => return (400, json!({"error": "bad line"})),
                }
            }
            (200, json!({"ok": true}))
        }
        _ => (404, json!({"error": "no such path"})),
    }
}
