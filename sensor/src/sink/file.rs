//! A file sink: JSON lines appended to `path` (created 0600), rotated by
//! size and age to `path.<UTC time>` (names sort in time order), keeping
//! `retain` rotated files. The chain continues across restarts from the
//! last record in the file, so `sensor verify path.* path` checks the
//! whole history.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    Chain,
    config::{Fsync, SinkConfig},
};

const DEFAULT_ROTATE_BYTES: u64 = 100 * 1024 * 1024;
const DEFAULT_RETAIN: usize = 10;

pub struct RotatingFile {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    opened: Instant,
    rotate_bytes: u64,
    rotate_secs: Option<u64>,
    retain: usize,
    fsync: Fsync,
    chain: Chain,
}

impl RotatingFile {
    pub fn open(sink: &SinkConfig) -> Result<Self, String> {
        let path = sink.path.clone().ok_or("no path")?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let file = open_append(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let chain = last_record(&path)
            .or_else(|| newest_rotated(&path).and_then(|p| last_record(&p)))
            .and_then(|line| Chain::of_record(&line))
            .unwrap_or_default();
        Ok(Self {
            out: BufWriter::with_capacity(256 * 1024, file),
            size,
            opened: Instant::now(),
            rotate_bytes: sink.rotate_bytes.unwrap_or(DEFAULT_ROTATE_BYTES),
            rotate_secs: sink.rotate_secs.filter(|s| *s > 0),
            retain: sink.retain.unwrap_or(DEFAULT_RETAIN),
            fsync: sink.fsync.unwrap_or_default(),
            chain,
            path,
        })
    }

    /// Where the chain stood in the file when it was opened.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    pub fn write(&mut self, record: &[u8]) -> io::Result<()> {
        let len = record.len() as u64 + 1;
        let too_old = self
            .rotate_secs
            .is_some_and(|s| self.opened.elapsed().as_secs() >= s);
        if self.size > 0 && (self.size + len > self.rotate_bytes || too_old) {
            self.rotate()?;
        }
        self.out.write_all(record)?;
        self.out.write_all(b"\n")?;
        self.size += len;
        if self.fsync == Fsync::Record {
            self.out.flush()?;
            self.out.get_ref().sync_data()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.fsync == Fsync::Batch {
            self.out.get_ref().sync_data()?;
        }
        Ok(())
    }

    /// Reopens `path` (after something else renamed it away).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let file = open_append(&self.path).map_err(io::Error::other)?;
        self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.out = BufWriter::with_capacity(256 * 1024, file);
        self.opened = Instant::now();
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        let mut target = rotated_name(&self.path, SystemTime::now());
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!(
                "{}-{n}",
                rotated_name(&self.path, SystemTime::now()).display()
            ));
            n += 1;
        }
        fs::rename(&self.path, &target)?;
        self.reopen()?;
        let mut rotated = rotated_files(&self.path);
        while rotated.len() > self.retain {
            let oldest = rotated.remove(0);
            fs::remove_file(&oldest)?;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

/// `path.YYYYmmddTHHMMSS.nnnnnnnnnZ`.
fn rotated_name(path: &Path, at: SystemTime) -> PathBuf {
    let ns = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let stamp = crate::event::rfc3339(ns).replace(['-', ':'], "");
    PathBuf::from(format!("{}.{stamp}", path.display()))
}

/// Rotated files of `path`, oldest first.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix)
                        && n[prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn newest_rotated(path: &Path) -> Option<PathBuf> {
    rotated_files(path).pop()
}

/// The last complete line of a file (read from its last 1 MiB).
pub fn last_record(path: &Path) -> Option<Vec<u8>> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(1 << 20);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let end = tail.iter().rposition(|b| *b == b'\n')?;
    let tail = &tail[..end];
    let begin = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if begin == 0 && start > 0 {
        return None;
    }
    Some(tail[begin..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_retention_and_chain_recovery() {
        let dir = std::env::temp_dir().join(format!("sensor-file-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("events.jsonl");
        let toml = format!(
            "name = \"f\"\ntype = \"file\"\npath = \"{}\"\nrotate_bytes = 4096\nretain = 2",
            path.display()
        );
        let sink: SinkConfig = toml::from_str(&toml).expect("config");
        let mut file = RotatingFile::open(&sink).expect("open");
        assert_eq!(file.chain(), &Chain::default());
        let record = |n: u64| {
            format!(
                r#"{{"event":{{"hash":"h{n}","prev_hash":"","sequence":{n}}},"pad":"{}"}}"#,
                "x".repeat(900)
            )
        };
        for n in 1..=20 {
            file.write(record(n).as_bytes()).expect("write");
        }
        file.flush().expect("flush");
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let mode = fs::metadata(&path).expect("meta");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        drop(file);
        let again = RotatingFile::open(&sink).expect("reopen");
        assert_eq!(again.chain().sequence, 20);
        assert_eq!(again.chain().last_hash, "h20");
        let _ = fs::remove_dir_all(&dir);
    }
}
