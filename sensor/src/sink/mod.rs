//! Where events go: any number of outputs (`[[sinks]]`), each with its own
//! action filter and format (native or OCSF). Each output numbers its
//! records (`event.sequence`) and chains them: `event.prev_hash` is the
//! previous record's `event.hash`, and `event.hash` is an HMAC-SHA256,
//! under the sensor's integrity key, of the record as written without its
//! `event.hash` (keys sorted, compact: the form `sensor verify` rebuilds).
//! A deleted, reordered or edited record breaks the chain where it happened.
//!
//! stdout and files are written on the pipeline's thread. Network sinks
//! (syslog, HTTP) hand records to their own thread through a bounded
//! queue; that thread appends them to a disk spool first, then delivers
//! from the spool in order, with retries and back-off (see [`spool`]).
//! Stdout belongs to events alone; logs go to stderr.

use std::{
    collections::BTreeSet,
    io::{self, BufWriter, Write},
    path::Path,
    sync::{Arc, Mutex},
};

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use tracing::warn;

use crate::event::Event;

pub mod config;
pub mod file;
pub mod http;
pub mod ocsf;
pub mod spool;
pub mod syslog;
pub mod transport;
pub mod verify;

use config::{Format, SinkConfig, SinkType};

/// Where the chain fields sit in each format: (sequence, prev_hash, hash).
pub const NATIVE_CHAIN: [&str; 3] = ["event.sequence", "event.prev_hash", "event.hash"];
/// OCSF's own `metadata.sequence` is a 32-bit integer: the chain keeps its
/// sequence in `unmapped`, and copies it to `metadata.sequence` while it
/// fits.
pub const OCSF_CHAIN: [&str; 3] = [
    "unmapped.event.sequence",
    "unmapped.event.prev_hash",
    "unmapped.event.hash",
];

/// Where an output's chain stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// `event.sequence` of the last record (0: none yet).
    pub sequence: u64,
    /// `event.hash` of the last record ("" before the first).
    pub last_hash: String,
}

impl Chain {
    /// The chain state a written record leaves, if it carries one.
    pub fn of_record(line: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(line).ok()?;
        for paths in [NATIVE_CHAIN, OCSF_CHAIN] {
            if let (Some(sequence), Some(hash)) = (
                get_path(&value, paths[0]).and_then(Value::as_u64),
                get_path(&value, paths[2]).and_then(Value::as_str),
            ) {
                return Some(Self {
                    sequence,
                    last_hash: hash.to_owned(),
                });
            }
        }
        None
    }
}

pub fn get_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, part| v.get(part))
}

/// HMAC-SHA256 of `bytes` under `key`, lower-case hex.
pub fn chain_hash(key: &[u8], bytes: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        // HMAC takes keys of any length.
        return String::new();
    };
    mac.update(bytes);
    crate::credential::hex(&mac.finalize().into_bytes())
}

/// Encodes `event` for one output and seals it into the chain: `out` gets
/// the record (no newline).
pub fn seal(event: &Event, format: Format, chain: &mut Chain, key: &[u8], out: &mut Vec<u8>) {
    chain.sequence += 1;
    out.clear();
    match format {
        Format::Native => {
            let extra = [
                (NATIVE_CHAIN[0], Value::from(chain.sequence)),
                (NATIVE_CHAIN[1], Value::from(chain.last_hash.as_str())),
            ];
            let at = event.write_json_with(&extra, out);
            let hash = chain_hash(key, out);
            // The hash goes first in the `event` object: where it sits does
            // not matter to `verify`, which removes it and re-sorts.
            if let Some(at) = at {
                let member = format!("\"hash\":\"{hash}\",");
                out.splice(at..at, member.into_bytes());
            }
            chain.last_hash = hash;
        }
        Format::Ocsf => {
            let mut value = ocsf::encode(&event.clone().into_value());
            set_path(&mut value, OCSF_CHAIN[0], Value::from(chain.sequence));
            if chain.sequence <= i32::MAX as u64 {
                set_path(&mut value, "metadata.sequence", Value::from(chain.sequence));
            }
            set_path(
                &mut value,
                OCSF_CHAIN[1],
                Value::from(chain.last_hash.as_str()),
            );
            // Writing a Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &value);
            let hash = chain_hash(key, out);
            set_path(&mut value, OCSF_CHAIN[2], Value::from(hash.as_str()));
            out.clear();
            let _ = serde_json::to_writer(&mut *out, &value);
            chain.last_hash = hash;
        }
    }
}

/// Sets `path` in a JSON object, creating objects on the way (a non-object
/// in the way is replaced).
pub fn set_path(value: &mut Value, path: &str, leaf: Value) {
    let mut node = value;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Value::Object(serde_json::Map::new());
        }
        let Value::Object(map) = node else { return };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), leaf);
            return;
        }
        node = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

/// Counters of one output, reported in `sensor_health` and `/metrics`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OutputStats {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Records written (stdout, file) or queued (network).
    pub records: u64,
    pub bytes: u64,
    /// Write or flush failures (stdout, file).
    pub write_errors: u64,
    /// Records lost because the network sink's queue was full.
    pub queue_dropped: u64,
    /// Network sinks: what the sender reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<spool::DeliveryStats>,
}

enum Target {
    Stdout(BufWriter<io::Stdout>),
    File(file::RotatingFile),
    Network(spool::Sender),
    /// Collected in memory (tests, replay).
    Memory(Arc<Mutex<Vec<Vec<u8>>>>),
}

struct Output {
    config: SinkConfig,
    filter: Option<BTreeSet<String>>,
    format: Format,
    chain: Chain,
    target: Target,
    stats: OutputStats,
}

impl Output {
    fn write(&mut self, record: &[u8], id: &str) {
        self.stats.records += 1;
        self.stats.bytes += record.len() as u64 + 1;
        let result = match &mut self.target {
            Target::Stdout(out) => out.write_all(record).and_then(|()| out.write_all(b"\n")),
            Target::File(file) => file.write(record),
            Target::Network(sender) => {
                if !sender.send(id, record) {
                    self.stats.queue_dropped += 1;
                    if self.stats.queue_dropped.is_power_of_two() {
                        warn!(sink = %self.stats.name, dropped = self.stats.queue_dropped, "sink queue full: records dropped");
                    }
                }
                Ok(())
            }
            Target::Memory(lines) => {
                if let Ok(mut lines) = lines.lock() {
                    lines.push(record.to_vec());
                }
                Ok(())
            }
        };
        if let Err(err) = result {
            self.stats.write_errors += 1;
            if self.stats.write_errors.is_power_of_two() {
                warn!(sink = %self.stats.name, %err, count = self.stats.write_errors, "sink write failed");
            }
        }
    }

    fn flush(&mut self) {
        let result = match &mut self.target {
            Target::Stdout(out) => out.flush(),
            Target::File(file) => file.flush(),
            Target::Network(sender) => {
                sender.wake();
                Ok(())
            }
            Target::Memory(_) => Ok(()),
        };
        if let Err(err) = result {
            self.stats.write_errors += 1;
            if self.stats.write_errors.is_power_of_two() {
                warn!(sink = %self.stats.name, %err, "sink flush failed");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("sink `{sink}`: {message}")]
pub struct OpenError {
    pub sink: String,
    pub message: String,
}

/// Every output of the sensor.
pub struct Outputs {
    outputs: Vec<Output>,
    key: Vec<u8>,
    line: Vec<u8>,
}

impl Outputs {
    /// Opens every configured sink: files are created (0600), network
    /// sinks start their senders over their spools.
    pub fn open(
        sinks: &[SinkConfig],
        key: Vec<u8>,
        spool_dir: &Path,
        host_name: &str,
    ) -> Result<Self, OpenError> {
        let mut outputs = Vec::new();
        for sink in sinks {
            let err = |message: String| OpenError {
                sink: sink.name.clone(),
                message,
            };
            let (target, chain) = match sink.kind {
                SinkType::Stdout => (
                    Target::Stdout(BufWriter::with_capacity(256 * 1024, io::stdout())),
                    Chain::default(),
                ),
                SinkType::File => {
                    let file = file::RotatingFile::open(sink).map_err(err)?;
                    let chain = file.chain().clone();
                    (Target::File(file), chain)
                }
                SinkType::Syslog | SinkType::Http => {
                    let sender = spool::Sender::start(sink, spool_dir, host_name).map_err(err)?;
                    let chain = sender.chain().clone();
                    (Target::Network(sender), chain)
                }
            };
            outputs.push(Output {
                config: sink.clone(),
                filter: sink.event_filter(),
                format: sink.format,
                chain,
                target,
                stats: OutputStats {
                    name: sink.name.clone(),
                    kind: sink.kind.as_str(),
                    ..OutputStats::default()
                },
            });
        }
        Ok(Self {
            outputs,
            key,
            line: Vec::with_capacity(4096),
        })
    }

    /// One in-memory output (tests, replay); the lines go to `lines`.
    pub fn memory(lines: Arc<Mutex<Vec<Vec<u8>>>>, format: Format, key: Vec<u8>) -> Self {
        Self {
            outputs: vec![Output {
                config: SinkConfig::default_stdout(),
                filter: None,
                format,
                chain: Chain::default(),
                target: Target::Memory(lines),
                stats: OutputStats {
                    name: "memory".into(),
                    kind: "memory",
                    ..OutputStats::default()
                },
            }],
            key,
            line: Vec::with_capacity(4096),
        }
    }

    /// Writes `event` to every output whose filter takes `action`.
    pub fn deliver(&mut self, event: &Event, action: &str, id: &str) {
        for output in &mut self.outputs {
            if output.filter.as_ref().is_some_and(|f| !f.contains(action)) {
                continue;
            }
            seal(
                event,
                output.format,
                &mut output.chain,
                &self.key,
                &mut self.line,
            );
            output.write(&self.line, id);
        }
    }

    /// A `sensor_checkpoint` for each output, whatever its filter: the
    /// signed-off end of its chain for this run. `make` builds the event
    /// from (records written by this output, last hash so far).
    pub fn checkpoint(&mut self, mut make: impl FnMut(u64, &str) -> (Event, String)) {
        for output in &mut self.outputs {
            let (event, id) = make(output.stats.records, &output.chain.last_hash);
            seal(
                &event,
                output.format,
                &mut output.chain,
                &self.key,
                &mut self.line,
            );
            output.write(&self.line, &id);
        }
    }

    pub fn flush(&mut self) {
        for output in &mut self.outputs {
            output.flush();
        }
    }

    /// SIGHUP: each sink's `events` filter is replaced; any other change
    /// to the sinks waits for a restart. Returns what was not applied.
    pub fn set_filters(&mut self, sinks: &[SinkConfig]) -> Vec<String> {
        let mut notes = Vec::new();
        let neutral = |c: &SinkConfig| {
            let mut c = c.clone();
            c.events = None;
            c
        };
        for output in &mut self.outputs {
            match sinks.iter().find(|s| s.name == output.config.name) {
                Some(new) if neutral(new) == neutral(&output.config) => {
                    output.filter = new.event_filter();
                    output.config.events = new.events.clone();
                }
                Some(_) => notes.push(format!(
                    "sink `{}` changed beyond `events`; the change applies at the next start",
                    output.config.name
                )),
                None => notes.push(format!(
                    "sink `{}` was removed; it keeps running until the next start",
                    output.config.name
                )),
            }
        }
        for new in sinks {
            if !self.outputs.iter().any(|o| o.config.name == new.name) {
                notes.push(format!(
                    "sink `{}` was added; it starts at the next start",
                    new.name
                ));
            }
        }
        notes
    }

    /// SIGHUP: files are reopened (after an external rotation).
    pub fn reopen(&mut self) {
        for output in &mut self.outputs {
            if let Target::File(file) = &mut output.target
                && let Err(err) = file.reopen()
            {
                output.stats.write_errors += 1;
                warn!(sink = %output.stats.name, %err, "reopening the sink's file failed");
            }
        }
    }

    /// Flushes everything and stops the network senders: each spools what
    /// it holds and tries to deliver for up to `grace`.
    pub fn close(&mut self, grace: std::time::Duration) {
        self.flush();
        // All senders get the same grace, side by side.
        for output in &mut self.outputs {
            if let Target::Network(sender) = &mut output.target {
                sender.request_stop(grace);
            }
        }
        for output in &mut self.outputs {
            if let Target::Network(sender) = &mut output.target {
                sender.stop(grace);
            }
        }
    }

    pub fn stats(&self) -> Vec<OutputStats> {
        self.outputs
            .iter()
            .map(|o| {
                let mut stats = o.stats.clone();
                if let Target::Network(sender) = &o.target {
                    stats.delivery = Some(sender.stats());
                }
                stats
            })
            .collect()
    }

    /// Write failures of all outputs.
    pub fn errors(&self) -> u64 {
        self.outputs
            .iter()
            .map(|o| o.stats.write_errors + o.stats.queue_dropped)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64) -> Event {
        let mut e = Event::new("connect");
        e.set("event.id", format!("x-{n}"))
            .set("process.pid", 42u32)
            .set("server.port", 443u16)
            .set("message", "a \"quoted\" \u{e9} value");
        e
    }

    #[test]
    fn native_records_chain_and_verify() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let mut outputs = Outputs::memory(Arc::clone(&lines), Format::Native, key.clone());
        for n in 0..3 {
            outputs.deliver(&sample(n), "connect", &format!("x-{n}"));
        }
        let lines = lines.lock().expect("lock").clone();
        let values: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_slice(l).expect("json"))
            .collect();
        assert_eq!(values[0]["event"]["sequence"], 1);
        assert_eq!(values[0]["event"]["prev_hash"], "");
        assert_eq!(values[1]["event"]["prev_hash"], values[0]["event"]["hash"]);
        assert_eq!(values[2]["event"]["sequence"], 3);
        let report = verify::verify_lines(
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("mem:{}", i + 1), l.clone())),
            Some(&key),
        );
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.records, 3);
    }
}
