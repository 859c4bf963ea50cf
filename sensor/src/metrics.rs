//! Prometheus `/metrics` (text exposition format 0.0.4), off by default
//! (`metrics_address`). The daemon renders its counters into a snapshot
//! every second; the endpoint serves the latest snapshot and nothing else,
//! so a scrape never touches the event path.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tracing::{info, warn};

use crate::{
    bpf::{KernelCounters, attach::AttachStats},
    pipeline::Counters,
    session::SessionStats,
    sink::OutputStats,
};

/// The latest rendering, shared with the endpoint.
pub type Snapshot = Arc<Mutex<String>>;

/// What one rendering needs.
pub struct Inputs<'a> {
    pub pipeline: &'a Counters,
    pub sessions: &'a SessionStats,
    pub kernel: &'a KernelCounters,
    pub attach: &'a AttachStats,
    pub sinks: &'a [OutputStats],
    pub processes_tracked: u64,
}

struct Out(String);

impl Out {
    fn metric(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(
            self.0,
            "# HELP sensor_{name} {help}\n# TYPE sensor_{name} {kind}"
        );
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.0, "sensor_{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.metric(name, kind, help);
        self.value(name, &[], value as f64);
    }
}

pub fn render(i: &Inputs<'_>) -> String {
    let mut o = Out(String::with_capacity(8192));
    o.metric(
        "events_total",
        "counter",
        "Events emitted, by event.action.",
    );
    for (action, n) in &i.pipeline.events_emitted {
        o.value("events_total", &[("action", action)], *n as f64);
    }
    o.one(
        "ring_records_total",
        "counter",
        "Records read from the kernel ring buffer.",
        i.pipeline.records,
    );
    o.one(
        "decode_errors_total",
        "counter",
        "Ring buffer records that could not be decoded.",
        i.pipeline.decode_errors,
    );
    o.one(
        "ringbuf_drops_total",
        "counter",
        "Records the kernel dropped because the ring buffer was full.",
        i.kernel.ringbuf_drops,
    );
    o.one(
        "tls_read_errors_total",
        "counter",
        "TLS plaintext copies that failed in the kernel.",
        i.kernel.tls_read_errors,
    );
    o.one(
        "tls_bytes_truncated_total",
        "counter",
        "TLS plaintext bytes beyond the per-call capture cap.",
        i.kernel.tls_bytes_truncated,
    );
    o.one(
        "tls_files_probed",
        "gauge",
        "Library or executable files with TLS probes attached.",
        i.attach.files_probed.len() as u64,
    );
    o.one(
        "tls_files_checked_total",
        "counter",
        "Files examined for TLS functions.",
        i.attach.files_checked,
    );
    o.one(
        "tls_attach_failures_total",
        "counter",
        "Probe attachments that failed.",
        i.attach.attach_failures,
    );
    o.one(
        "tls_check_failures_total",
        "counter",
        "Files that could not be examined.",
        i.attach.check_failures,
    );
    o.one(
        "http_exchanges_total",
        "counter",
        "HTTP request/response pairs parsed.",
        i.pipeline.http_exchanges,
    );
    o.one(
        "parse_errors_total",
        "counter",
        "HTTP parse errors (the stream resynchronises).",
        i.sessions.parse_errors,
    );
    o.one(
        "bytes_lost_total",
        "counter",
        "Stream bytes known lost (gaps in the kernel's stream positions).",
        i.sessions.bytes_lost,
    );
    o.one(
        "sessions_active",
        "gauge",
        "TLS sessions being reassembled.",
        i.sessions.sessions_active,
    );
    o.one(
        "processes_tracked",
        "gauge",
        "Processes in the process table.",
        i.processes_tracked,
    );

    type Get = fn(&OutputStats) -> Option<f64>;
    let per_sink: [(&str, &str, &str, Get); 14] = [
        (
            "sink_records_total",
            "counter",
            "Records written or queued by the sink.",
            |s| Some(s.records as f64),
        ),
        (
            "sink_bytes_total",
            "counter",
            "Bytes written or queued by the sink.",
            |s| Some(s.bytes as f64),
        ),
        (
            "sink_write_errors_total",
            "counter",
            "Write or flush failures (stdout, file).",
            |s| Some(s.write_errors as f64),
        ),
        (
            "sink_queue_dropped_total",
            "counter",
            "Records lost to a full sink queue.",
            |s| Some(s.queue_dropped as f64),
        ),
        (
            "sink_queue_depth",
            "gauge",
            "Records queued for the sink's sender.",
            |s| s.delivery.as_ref().map(|d| d.queue_depth as f64),
        ),
        (
            "sink_delivered_total",
            "counter",
            "Records the receiver accepted.",
            |s| s.delivery.as_ref().map(|d| d.delivered as f64),
        ),
        (
            "sink_retries_total",
            "counter",
            "Failed delivery attempts (each followed by a back-off).",
            |s| s.delivery.as_ref().map(|d| d.retries as f64),
        ),
        (
            "sink_rejected_total",
            "counter",
            "Records the receiver refused for good.",
            |s| s.delivery.as_ref().map(|d| d.rejected as f64),
        ),
        (
            "sink_spool_records",
            "gauge",
            "Records waiting in the spool.",
            |s| s.delivery.as_ref().map(|d| d.spool_records as f64),
        ),
        (
            "sink_spool_bytes",
            "gauge",
            "Bytes waiting in the spool.",
            |s| s.delivery.as_ref().map(|d| d.spool_bytes as f64),
        ),
        (
            "sink_spool_dropped_total",
            "counter",
            "Records dropped from a full spool.",
            |s| s.delivery.as_ref().map(|d| d.spool_dropped as f64),
        ),
        (
            "sink_up",
            "gauge",
            "1 when the last delivery attempt succeeded.",
            |s| s.delivery.as_ref().map(|d| if d.up { 1.0 } else { 0.0 }),
        ),
        (
            "sink_delivery_latency_seconds_sum",
            "counter",
            "Queued-to-delivered time of each batch's oldest record, summed.",
            |s| s.delivery.as_ref().map(|d| d.latency_ms_sum as f64 / 1e3),
        ),
        (
            "sink_delivery_latency_seconds_count",
            "counter",
            "Batches delivered (for the latency average).",
            |s| s.delivery.as_ref().map(|d| d.latency_count as f64),
        ),
    ];
    for (name, kind, help, get) in per_sink {
        o.metric(name, kind, help);
        for s in i.sinks {
            if let Some(v) = get(s) {
                o.value(name, &[("sink", &s.name), ("type", s.kind)], v);
            }
        }
    }
    o.0
}

/// Serves `snapshot` at `GET /metrics` on `address` until the runtime ends.
pub async fn serve(address: String, snapshot: Snapshot) -> std::io::Result<()> {
    let listener = TcpListener::bind(&address).await?;
    info!(%address, "metrics endpoint listening");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let snapshot = Arc::clone(&snapshot);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut len = 0;
                // The request head only; bodies are not expected.
                let head_done = loop {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        stream.read(&mut buf[len..]),
                    )
                    .await
                    {
                        Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break false,
                        Ok(Ok(n)) => {
                            len += n;
                            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                                break true;
                            }
                            if len == buf.len() {
                                break false;
                            }
                        }
                    }
                };
                if !head_done {
                    return;
                }
                let line = String::from_utf8_lossy(&buf[..len]);
                let first = line.lines().next().unwrap_or_default();
                let (status, body) =
                    if first.starts_with("GET /metrics ") || first.starts_with("GET /metrics?") {
                        let text = snapshot.lock().map(|s| s.clone()).unwrap_or_default();
                        ("200 OK", text)
                    } else if first.starts_with("GET ") {
                        ("404 Not Found", "see /metrics\n".to_owned())
                    } else {
                        ("405 Method Not Allowed", String::new())
                    };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Err(err) = stream.write_all(response.as_bytes()).await {
                    warn!(%err, "metrics response not sent");
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(())
}
