//! A network sink's delivery: a bounded queue from the pipeline to a
//! sender thread, which appends every record to a disk spool first and
//! delivers from the spool in order. A batch leaves the spool only once
//! its transport accepted it; a failure keeps it and backs off
//! (exponentially, `retry_initial_ms` to `retry_max_ms`). So a receiver
//! that is down for ten minutes, or a sensor killed meanwhile, loses
//! nothing: what was spooled is delivered when both are back, in order.
//! Delivery is at least once: a batch sent but not yet marked delivered
//! when the sensor dies is sent again (receivers can drop repeats by
//! record id; the Elasticsearch sink does it for them with `create` and
//! `_id`). When the spool reaches `spool_max_bytes`, its oldest records are
//! dropped and counted.
//!
//! Layout of `<spool_dir>/<sink name>/`: segments `<16 hex digits>.spool`
//! holding lines `<record id> TAB <queued at, unix ms> TAB <record>`, and
//! `cursor` (`<segment> <offset>`: the first record not yet delivered).
//! A partial line left by a crash is cut off at start.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tracing::{info, warn};

use super::{
    Chain,
    config::{SinkConfig, SinkType},
    transport::{Transport, TransportError},
};

const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;
const DEFAULT_QUEUE: usize = 65_536;

/// What a network sink's sender reports.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DeliveryStats {
    /// Records the receiver accepted.
    pub delivered: u64,
    pub batches: u64,
    /// Failed attempts (each followed by a back-off).
    pub retries: u64,
    /// Records the receiver refused for good (dropped).
    pub rejected: u64,
    /// Records dropped from a full spool (oldest first).
    pub spool_dropped: u64,
    /// Records waiting in the spool, and their bytes.
    pub spool_records: u64,
    pub spool_bytes: u64,
    /// Whether the last attempt succeeded.
    pub up: bool,
    /// The last failure (no secrets: transports never put them in errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Queued-to-delivered time of the last batch's oldest record, and the
    /// largest seen.
    pub latency_ms_last: u64,
    pub latency_ms_max: u64,
    pub latency_ms_sum: u64,
    pub latency_count: u64,
    /// Records queued for the sender thread, not yet spooled.
    pub queue_depth: u64,
}

enum Item {
    Record { id: String, record: Vec<u8> },
    Flush,
    Stop(Duration),
}

/// The pipeline's handle on a network sink.
pub struct Sender {
    tx: Option<SyncSender<Item>>,
    depth: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<DeliveryStats>>,
    chain: Chain,
}

impl Sender {
    pub fn start(sink: &SinkConfig, spool_dir: &Path, host_name: &str) -> Result<Self, String> {
        let transport = make_transport(sink, host_name)?;
        let dir = spool_dir.join(&sink.name);
        let spool = Spool::open(
            &dir,
            sink.spool_max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES),
        )
        .map_err(|e| format!("spool {}: {e}", dir.display()))?;
        let chain = spool.chain.clone();
        let stats = Arc::new(Mutex::new(DeliveryStats::default()));
        let (tx, rx) = mpsc::sync_channel(sink.queue_events.unwrap_or(DEFAULT_QUEUE));
        let depth = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            depth: Arc::clone(&depth),
            name: sink.name.clone(),
            spool,
            transport,
            stats: Arc::clone(&stats),
            batch_events: sink.batch_max_events.unwrap_or(match sink.kind {
                SinkType::Http => 500,
                _ => 100,
            }),
            batch_bytes: sink.batch_max_bytes.unwrap_or(4 * 1024 * 1024),
            batch_delay: Duration::from_millis(sink.batch_max_delay_ms.unwrap_or(
                match sink.kind {
                    SinkType::Http => 1000,
                    _ => 0,
                },
            )),
            retry_initial: Duration::from_millis(sink.retry_initial_ms.unwrap_or(500).max(1)),
            retry_max: Duration::from_millis(sink.retry_max_ms.unwrap_or(30_000).max(1)),
        };
        worker.publish();
        let thread = std::thread::Builder::new()
            .name(format!("sink-{}", sink.name))
            .spawn(move || worker.run(rx))
            .map_err(|e| format!("starting the sender thread: {e}"))?;
        Ok(Self {
            tx: Some(tx),
            depth,
            thread: Some(thread),
            stats,
            chain,
        })
    }

    /// Where the chain stood in the spool at start.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Queues a record; false when the queue is full.
    pub fn send(&self, id: &str, record: &[u8]) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(Item::Record {
            id: id.to_owned(),
            record: record.to_vec(),
        }) {
            Ok(()) => {
                self.depth.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Asks the sender to write its spool out (end of a batch of records).
    pub fn wake(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Item::Flush);
        }
    }

    /// Tells the sender to stop: it spools everything queued and keeps
    /// delivering for up to `grace`; what is left stays in the spool for
    /// next time. [`Sender::stop`] waits for it.
    pub fn request_stop(&mut self, grace: Duration) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Item::Stop(grace));
        }
    }

    /// [`Sender::request_stop`], then waits for the sender to finish.
    pub fn stop(&mut self, grace: Duration) {
        self.request_stop(grace);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    pub fn stats(&self) -> DeliveryStats {
        let mut stats = self
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        stats.queue_depth = self.depth.load(Ordering::Relaxed);
        stats
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

fn make_transport(sink: &SinkConfig, host_name: &str) -> Result<Box<dyn Transport>, String> {
    match sink.kind {
        SinkType::Http => Ok(Box::new(super::http::Http::new(sink, host_name)?)),
        SinkType::Syslog => {
            use super::{
                config::SyslogTransport,
                syslog::{Syslog, SyslogOptions, SyslogProtocol},
            };
            let protocol = match sink.transport {
                Some(SyslogTransport::Udp) => SyslogProtocol::Udp,
                Some(SyslogTransport::Tcp) => SyslogProtocol::Tcp,
                Some(SyslogTransport::Tls) | None => SyslogProtocol::Tls,
            };
            let mut options =
                SyslogOptions::new(sink.address.clone().unwrap_or_default(), protocol);
            options.ca_file = sink.ca_file.clone();
            options.server_name = sink.server_name.clone();
            if let Some(app) = &sink.app_name {
                options.app_name = app.clone();
            }
            options.hostname = host_name.to_owned();
            options.facility = sink.facility();
            options.timeout = sink.timeout();
            Ok(Box::new(Syslog::new(options)?))
        }
        other => Err(format!(
            "a {} sink has no network transport",
            other.as_str()
        )),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Worker {
    name: String,
    depth: Arc<AtomicU64>,
    spool: Spool,
    transport: Box<dyn Transport>,
    stats: Arc<Mutex<DeliveryStats>>,
    batch_events: usize,
    batch_bytes: usize,
    batch_delay: Duration,
    retry_initial: Duration,
    retry_max: Duration,
}

impl Worker {
    fn publish(&self) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.spool_records = self.spool.unsent_records;
            stats.spool_bytes = self.spool.unsent_bytes();
            stats.spool_dropped = self.spool.dropped;
        }
    }

    fn stat(&self, f: impl FnOnce(&mut DeliveryStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            f(&mut stats);
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Item>) {
        let mut backoff: Option<(Instant, Duration)> = None;
        let mut stop_by: Option<Instant> = None;
        let mut disconnected = false;
        let mut failures: u64 = 0;
        loop {
            let now = Instant::now();
            let wait = match (backoff, self.spool.unsent_records) {
                (Some((until, _)), _) => until.saturating_duration_since(now),
                (None, 0) => Duration::from_secs(1),
                (None, _) => self.batch_delay.min(Duration::from_millis(200)),
            };
            let wait = match stop_by {
                Some(deadline) => wait.min(deadline.saturating_duration_since(now)),
                None => wait,
            };
            let mut stop_now = false;
            let mut take =
                |item: Item, stop_by: &mut Option<Instant>, stop_now: &mut bool| match item {
                    Item::Record { id, record } => {
                        self.depth.fetch_sub(1, Ordering::Relaxed);
                        if let Err(err) = self.spool.append(&id, now_ms(), &record) {
                            warn!(sink = %self.name, %err, "spool write failed: record lost");
                            self.spool.dropped += 1;
                        }
                    }
                    Item::Flush => {}
                    Item::Stop(grace) => {
                        *stop_by = Some(Instant::now() + grace);
                        *stop_now = true;
                    }
                };
            if disconnected {
                // Nothing more can come: just wait out the back-off.
                std::thread::sleep(wait);
            } else if stop_by.is_none() || wait > Duration::ZERO {
                match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                    Ok(item) => take(item, &mut stop_by, &mut stop_now),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        disconnected = true;
                        stop_by.get_or_insert_with(Instant::now);
                    }
                }
            }
            while let Ok(item) = rx.try_recv() {
                take(item, &mut stop_by, &mut stop_now);
            }
            if stop_now {
                // One more attempt right away, whatever the back-off.
                backoff = None;
            }
            if let Err(err) = self.spool.flush() {
                warn!(sink = %self.name, %err, "spool flush failed");
            }
            let stopping = stop_by.is_some();
            let in_backoff = backoff.is_some_and(|(until, _)| Instant::now() < until);
            if !in_backoff {
                match self.deliver(stopping) {
                    Ok(()) => {
                        if failures > 0 {
                            info!(sink = %self.name, failures, "sink delivering again");
                        }
                        failures = 0;
                        backoff = None;
                    }
                    Err(err) => {
                        failures += 1;
                        let delay = match backoff {
                            Some((_, d)) => (d * 2).min(self.retry_max),
                            None => self.retry_initial,
                        };
                        backoff = Some((Instant::now() + delay, delay));
                        if stopping {
                            // Down at stop: the spool keeps the rest for
                            // the next start; waiting out the grace would
                            // only delay the stop.
                            stop_by = Some(Instant::now());
                        }
                        if failures.is_power_of_two() {
                            warn!(sink = %self.name, %err, failures, retry_in_ms = delay.as_millis() as u64, spooled = self.spool.unsent_records, "sink delivery failed; records kept in the spool");
                        }
                        self.stat(|s| {
                            s.retries += 1;
                            s.up = false;
                            s.last_error = Some(err);
                        });
                    }
                }
            }
            self.publish();
            if let Some(deadline) = stop_by
                && (self.spool.unsent_records == 0 || Instant::now() >= deadline)
            {
                break;
            }
        }
        if let Err(err) = self.spool.sync() {
            warn!(sink = %self.name, %err, "spool sync at stop failed");
        }
        if self.spool.unsent_records > 0 {
            info!(sink = %self.name, spooled = self.spool.unsent_records, "records left in the spool for the next start");
        }
    }

    /// Sends batches while full ones are ready (or any, when stopping or
    /// the oldest waited `batch_delay`). Err on a retryable failure.
    fn deliver(&mut self, stopping: bool) -> Result<(), String> {
        loop {
            let batch = self
                .spool
                .peek(self.batch_events, self.batch_bytes)
                .map_err(|e| format!("reading the spool: {e}"))?;
            if batch.entries.is_empty() {
                return Ok(());
            }
            let oldest = batch.entries.iter().map(|e| e.queued_ms).min().unwrap_or(0);
            let full = batch.entries.len() >= self.batch_events || batch.bytes >= self.batch_bytes;
            let aged = now_ms().saturating_sub(oldest) >= self.batch_delay.as_millis() as u64;
            if !(full || aged || stopping) {
                return Ok(());
            }
            let ids: Vec<&str> = batch.entries.iter().map(|e| e.id.as_str()).collect();
            let records: Vec<&[u8]> = batch.entries.iter().map(|e| e.record.as_slice()).collect();
            let n = records.len() as u64;
            match self.transport.send_with_ids(&ids, &records) {
                Ok(()) => {
                    self.spool
                        .commit(&batch)
                        .map_err(|e| format!("updating the spool cursor: {e}"))?;
                    let latency = now_ms().saturating_sub(oldest);
                    let refused = self.transport.take_rejected();
                    self.stat(|s| {
                        s.rejected += refused;
                        s.delivered += n - refused.min(n);
                        s.batches += 1;
                        s.up = true;
                        s.latency_ms_last = latency;
                        s.latency_ms_max = s.latency_ms_max.max(latency);
                        s.latency_ms_sum += latency;
                        s.latency_count += 1;
                    });
                }
                Err(TransportError::Rejected(err)) => {
                    warn!(sink = %self.name, %err, records = n, "receiver refused a batch: dropped");
                    self.spool
                        .commit(&batch)
                        .map_err(|e| format!("updating the spool cursor: {e}"))?;
                    self.stat(|s| {
                        s.rejected += n;
                        s.last_error = Some(err);
                    });
                }
                Err(TransportError::Retryable(err)) => {
                    self.spool.rewind();
                    return Err(err);
                }
            }
        }
    }
}

/// One spooled record.
pub struct Entry {
    pub id: String,
    pub queued_ms: u64,
    pub record: Vec<u8>,
}

/// Records read from the cursor on, and where they end.
pub struct Batch {
    pub entries: Vec<Entry>,
    pub bytes: usize,
    end: (u64, u64),
}

struct Segment {
    id: u64,
    bytes: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    writer: BufWriter<File>,
    /// First record not yet delivered.
    cursor: (u64, u64),
    /// Where reading stands (ahead of the cursor while a batch is out).
    reader: Option<(u64, BufReader<File>)>,
    pub unsent_records: u64,
    pub dropped: u64,
    /// Where the chain stood at the newest spooled record at start.
    pub chain: Chain,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.spool"))
}

fn count_lines_from(path: &Path, offset: u64) -> io::Result<u64> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut n = 0;
    for line in BufReader::new(file).split(b'\n') {
        line?;
        n += 1;
    }
    Ok(n)
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let hex = name.strip_suffix(".spool")?;
                u64::from_str_radix(hex, 16).ok()
            })
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            ids.push(1);
        }
        let newest = *ids.last().unwrap_or(&1);
        // Cut a partial line a crash may have left at the end.
        let newest_path = segment_path(dir, newest);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&newest_path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let keep = find_last_newline(&newest_path)?.map_or(0, |i| i + 1);
            if keep < len {
                file.set_len(keep)?;
            }
        }
        let chain = super::file::last_record(&newest_path)
            .and_then(|line| split_entry(&line).map(|(_, _, r)| r.to_vec()))
            .and_then(|record| Chain::of_record(&record))
            .unwrap_or_default();
        let mut segments = VecDeque::new();
        for id in &ids {
            let bytes = fs::metadata(segment_path(dir, *id))
                .map(|m| m.len())
                .unwrap_or(0);
            segments.push_back(Segment { id: *id, bytes });
        }
        let cursor = fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|s| {
                let (seg, off) = s.trim().split_once(' ')?;
                Some((seg.parse::<u64>().ok()?, off.parse::<u64>().ok()?))
            })
            .filter(|(seg, off)| segments.iter().any(|s| s.id == *seg && *off <= s.bytes))
            .unwrap_or((ids[0], 0));
        let mut unsent = 0;
        for s in &segments {
            if s.id > cursor.0 {
                unsent += count_lines_from(&segment_path(dir, s.id), 0)?;
            } else if s.id == cursor.0 {
                unsent += count_lines_from(&segment_path(dir, s.id), cursor.1)?;
            }
        }
        let mut spool = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segments,
            writer: BufWriter::with_capacity(256 * 1024, file),
            cursor,
            reader: None,
            unsent_records: unsent,
            dropped: 0,
            chain,
        };
        spool.drop_delivered_segments()?;
        Ok(spool)
    }

    fn newest(&self) -> u64 {
        self.segments.back().map_or(1, |s| s.id)
    }

    pub fn unsent_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.id >= self.cursor.0)
            .map(|s| {
                if s.id == self.cursor.0 {
                    s.bytes.saturating_sub(self.cursor.1)
                } else {
                    s.bytes
                }
            })
            .sum()
    }

    pub fn append(&mut self, id: &str, queued_ms: u64, record: &[u8]) -> io::Result<()> {
        let line_len = (id.len() + 24 + record.len() + 2) as u64;
        if self
            .segments
            .back()
            .is_some_and(|s| s.bytes > 0 && s.bytes + line_len > SEGMENT_BYTES)
        {
            self.roll()?;
        }
        let prefix = format!("{id}\t{queued_ms}\t");
        self.writer.write_all(prefix.as_bytes())?;
        self.writer.write_all(record)?;
        self.writer.write_all(b"\n")?;
        let written = (prefix.len() + record.len() + 1) as u64;
        if let Some(s) = self.segments.back_mut() {
            s.bytes += written;
        }
        self.unsent_records += 1;
        self.enforce_cap()
    }

    fn roll(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_data()?;
        let id = self.newest() + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(segment_path(&self.dir, id))?;
        self.writer = BufWriter::with_capacity(256 * 1024, file);
        self.segments.push_back(Segment { id, bytes: 0 });
        Ok(())
    }

    /// Drops the oldest segments while the spool is over its cap.
    fn enforce_cap(&mut self) -> io::Result<()> {
        let total = |s: &Self| s.segments.iter().map(|s| s.bytes).sum::<u64>();
        while total(self) > self.max_bytes {
            if self.segments.len() == 1 {
                self.roll()?;
            }
            let Some(oldest) = self.segments.pop_front() else {
                break;
            };
            let path = segment_path(&self.dir, oldest.id);
            let lost = if oldest.id > self.cursor.0 {
                count_lines_from(&path, 0)?
            } else if oldest.id == self.cursor.0 {
                count_lines_from(&path, self.cursor.1)?
            } else {
                0
            };
            fs::remove_file(&path)?;
            if lost > 0 {
                warn!(records = lost, spool = %self.dir.display(), "spool full: oldest records dropped");
            }
            self.dropped += lost;
            self.unsent_records = self.unsent_records.saturating_sub(lost);
            if oldest.id >= self.cursor.0 {
                let next = self.segments.front().map_or(oldest.id + 1, |s| s.id);
                self.cursor = (next, 0);
                self.reader = None;
                self.save_cursor()?;
            }
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_all()
    }

    /// Reads up to `max_events` / `max_bytes` complete records from the
    /// cursor on, without delivering them.
    pub fn peek(&mut self, max_events: usize, max_bytes: usize) -> io::Result<Batch> {
        let mut entries = Vec::new();
        let mut bytes = 0;
        let (mut seg, mut off) = self.cursor;
        // Reading restarts at the cursor for each batch: a failed batch is
        // read again.
        let mut reader = match self.reader.take() {
            Some((s, r)) if s == seg => r,
            _ => {
                let mut file = File::open(segment_path(&self.dir, seg))?;
                file.seek(SeekFrom::Start(off))?;
                BufReader::new(file)
            }
        };
        reader.seek(SeekFrom::Start(off))?;
        let mut line = Vec::new();
        while entries.len() < max_events && bytes < max_bytes {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                // End of this segment (or a line still being written).
                if n == 0 && seg < self.newest() {
                    let next = self
                        .segments
                        .iter()
                        .find(|s| s.id > seg)
                        .map_or(seg + 1, |s| s.id);
                    seg = next;
                    off = 0;
                    reader = BufReader::new(File::open(segment_path(&self.dir, seg))?);
                    continue;
                }
                break;
            }
            off += n as u64;
            let Some((id, queued_ms, record)) = split_entry(&line[..line.len() - 1]) else {
                // A damaged line: skip it, counted as dropped.
                self.dropped += 1;
                continue;
            };
            bytes += record.len();
            entries.push(Entry {
                id: id.to_owned(),
                queued_ms,
                record: record.to_vec(),
            });
        }
        self.reader = Some((seg, reader));
        Ok(Batch {
            entries,
            bytes,
            end: (seg, off),
        })
    }

    /// Marks a peeked batch delivered.
    pub fn commit(&mut self, batch: &Batch) -> io::Result<()> {
        self.cursor = batch.end;
        self.unsent_records = self
            .unsent_records
            .saturating_sub(batch.entries.len() as u64);
        self.save_cursor()?;
        self.drop_delivered_segments()
    }

    /// Forgets a peeked batch (it will be read again).
    pub fn rewind(&mut self) {
        self.reader = None;
    }

    fn save_cursor(&self) -> io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{} {}\n", self.cursor.0, self.cursor.1))?;
        fs::rename(&tmp, self.dir.join("cursor"))
    }

    fn drop_delivered_segments(&mut self) -> io::Result<()> {
        while self.segments.front().is_some_and(|s| s.id < self.cursor.0) {
            if let Some(old) = self.segments.pop_front() {
                fs::remove_file(segment_path(&self.dir, old.id))?;
            }
        }
        Ok(())
    }
}

fn find_last_newline(path: &Path) -> io::Result<Option<u64>> {
    let data = fs::read(path)?;
    Ok(data.iter().rposition(|b| *b == b'\n').map(|i| i as u64))
}

fn split_entry(line: &[u8]) -> Option<(&str, u64, &[u8])> {
    let tab = line.iter().position(|b| *b == b'\t')?;
    let id = std::str::from_utf8(&line[..tab]).ok()?;
    let rest = &line[tab + 1..];
    let tab2 = rest.iter().position(|b| *b == b'\t')?;
    let ms = std::str::from_utf8(&rest[..tab2]).ok()?.parse().ok()?;
    Some((id, ms, &rest[tab2 + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sensor-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn survives_restart_with_cursor_and_partial_line() {
        let d = dir("restart");
        let mut spool = Spool::open(&d, 1 << 30).expect("open");
        for n in 0..10 {
            spool
                .append(&format!("id-{n}"), 1, format!("{{\"n\":{n}}}").as_bytes())
                .expect("append");
        }
        spool.flush().expect("flush");
        let batch = spool.peek(4, 1 << 20).expect("peek");
        assert_eq!(batch.entries.len(), 4);
        spool.commit(&batch).expect("commit");
        // A batch read but not delivered is read again.
        let again = spool.peek(3, 1 << 20).expect("peek");
        spool.rewind();
        let same = spool.peek(3, 1 << 20).expect("peek");
        assert_eq!(again.entries[0].id, same.entries[0].id);
        assert_eq!(same.entries[0].id, "id-4");
        spool.sync().expect("sync");
        drop(spool);
        // A crash mid-line.
        let seg = segment_path(&d, 1);
        let mut f = OpenOptions::new().append(true).open(&seg).expect("seg");
        f.write_all(b"id-x\t1\t{\"par").expect("partial");
        drop(f);
        let mut spool = Spool::open(&d, 1 << 30).expect("reopen");
        assert_eq!(spool.unsent_records, 6);
        let rest = spool.peek(100, 1 << 20).expect("peek");
        let ids: Vec<&str> = rest.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["id-4", "id-5", "id-6", "id-7", "id-8", "id-9"]);
        spool.append("id-10", 1, b"{}").expect("append after cut");
        spool.flush().expect("flush");
        spool.rewind();
        let all = spool.peek(100, 1 << 20).expect("peek");
        assert_eq!(all.entries.last().map(|e| e.id.as_str()), Some("id-10"));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts() {
        let d = dir("cap");
        let mut spool = Spool::open(&d, 1 << 20).expect("open");
        let record = vec![b'x'; 10_000];
        for n in 0..300 {
            spool
                .append(&format!("id-{n}"), 1, &record)
                .expect("append");
        }
        spool.flush().expect("flush");
        assert!(spool.dropped > 0);
        assert_eq!(spool.unsent_records + spool.dropped, 300);
        let total: u64 = spool.segments.iter().map(|s| s.bytes).sum();
        assert!(total <= 1 << 20, "{total}");
        let batch = spool.peek(1, 1 << 20).expect("peek");
        assert_eq!(batch.entries[0].id, format!("id-{}", spool.dropped));
        let _ = fs::remove_dir_all(&d);
    }
}
