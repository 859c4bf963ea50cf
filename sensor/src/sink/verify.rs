//! `sensor verify`: reads output files (rotated files oldest first) and
//! checks each output's chain: sequence without gaps or reorders, each
//! `prev_hash` naming the record before, and, with the integrity key,
//! each record's `hash` (an edited field shows there).

use std::{
    fmt,
    io::{BufRead, BufReader},
    path::PathBuf,
};

use serde::Serialize;
use serde_json::Value;

use super::{NATIVE_CHAIN, OCSF_CHAIN, chain_hash, get_path};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A file could not be read.
    Unreadable,
    /// A line is not a JSON object.
    NotJson,
    /// A record carries no chain fields.
    Unchained,
    /// Records are missing before this one.
    Gap,
    /// This record's sequence is not after the previous one.
    Reorder,
    /// `prev_hash` does not name the previous record's hash.
    BrokenLink,
    /// The record's content does not match its hash.
    Altered,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `file:line`.
    pub at: String,
    pub kind: ProblemKind,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}: {}", self.at, self.kind, self.detail)
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub records: u64,
    /// Chains begun (sequence 1): one per sensor run that had nothing to
    /// continue from.
    pub chains: u64,
    pub checkpoints: u64,
    /// Whether the last record is a `sensor_checkpoint` (a clean stop).
    pub ends_with_checkpoint: bool,
    /// Whether hashes were checked (the key was given).
    pub keyed: bool,
    pub problems: Vec<Problem>,
}

/// At most this many problems are listed.
const MAX_PROBLEMS: usize = 100;

pub fn verify_files(paths: &[PathBuf], key: Option<&[u8]>) -> Report {
    let mut unreadable = Vec::new();
    let lines = paths.iter().flat_map(|path| {
        let name = path.display().to_string();
        let lines: Vec<(String, Vec<u8>)> = match std::fs::File::open(path) {
            Ok(file) => BufReader::new(file)
                .split(b'\n')
                .enumerate()
                .filter_map(|(i, line)| match line {
                    Ok(line) => Some((format!("{name}:{}", i + 1), line)),
                    Err(err) => {
                        unreadable.push(Problem {
                            at: format!("{name}:{}", i + 1),
                            kind: ProblemKind::Unreadable,
                            detail: err.to_string(),
                        });
                        None
                    }
                })
                .collect(),
            Err(err) => {
                unreadable.push(Problem {
                    at: name,
                    kind: ProblemKind::Unreadable,
                    detail: err.to_string(),
                });
                Vec::new()
            }
        };
        lines
    });
    let lines: Vec<(String, Vec<u8>)> = lines.collect();
    let mut report = verify_lines(lines.into_iter(), key);
    if !unreadable.is_empty() {
        unreadable.extend(report.problems);
        report.problems = unreadable;
    }
    report
}

/// Checks records given as (position, line) in order.
pub fn verify_lines(lines: impl Iterator<Item = (String, Vec<u8>)>, key: Option<&[u8]>) -> Report {
    let mut report = Report {
        keyed: key.is_some(),
        ..Report::default()
    };
    let mut last: Option<(u64, String)> = None;
    let problem = |report: &mut Report, at: &str, kind, detail: String| {
        if report.problems.len() < MAX_PROBLEMS {
            report.problems.push(Problem {
                at: at.to_owned(),
                kind,
                detail,
            });
        }
    };
    for (at, line) in lines {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.records += 1;
        let Ok(mut value) = serde_json::from_slice::<Value>(&line) else {
            problem(
                &mut report,
                &at,
                ProblemKind::NotJson,
                "not a JSON record".into(),
            );
            last = None;
            continue;
        };
        let Some(paths) = [NATIVE_CHAIN, OCSF_CHAIN]
            .into_iter()
            .find(|p| get_path(&value, p[2]).is_some())
        else {
            problem(
                &mut report,
                &at,
                ProblemKind::Unchained,
                "no event.hash".into(),
            );
            last = None;
            continue;
        };
        let sequence = get_path(&value, paths[0]).and_then(Value::as_u64);
        let prev = get_path(&value, paths[1])
            .and_then(Value::as_str)
            .map(str::to_owned);
        let hash = get_path(&value, paths[2])
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default();
        let (Some(sequence), Some(prev)) = (sequence, prev) else {
            problem(
                &mut report,
                &at,
                ProblemKind::Unchained,
                format!("no {} or {}", paths[0], paths[1]),
            );
            last = None;
            continue;
        };
        if let Some(key) = key {
            remove_path(&mut value, paths[2]);
            let canonical = serde_json::to_vec(&value).unwrap_or_default();
            if chain_hash(key, &canonical) != hash {
                problem(
                    &mut report,
                    &at,
                    ProblemKind::Altered,
                    format!("record {sequence} does not match its hash"),
                );
            }
        }
        let checkpoint = ["event.action", "metadata.event_code"]
            .iter()
            .any(|p| get_path(&value, p).and_then(Value::as_str) == Some("sensor_checkpoint"));
        if checkpoint {
            report.checkpoints += 1;
        }
        report.ends_with_checkpoint = checkpoint;
        if sequence == 1 && prev.is_empty() {
            report.chains += 1;
        } else {
            match &last {
                Some((last_seq, last_hash)) => {
                    if sequence > last_seq + 1 {
                        let missing = sequence - last_seq - 1;
                        problem(
                            &mut report,
                            &at,
                            ProblemKind::Gap,
                            format!(
                                "{missing} record(s) missing before this one (sequence {} to {})",
                                last_seq + 1,
                                sequence - 1
                            ),
                        );
                    } else if sequence <= *last_seq {
                        problem(
                            &mut report,
                            &at,
                            ProblemKind::Reorder,
                            format!("sequence {sequence} after {last_seq}"),
                        );
                    } else if prev != *last_hash {
                        problem(
                            &mut report,
                            &at,
                            ProblemKind::BrokenLink,
                            format!("prev_hash does not name record {last_seq}"),
                        );
                    }
                }
                None if report.records == 1 => {
                    // The first file may start mid-chain (older files
                    // deleted by retention): nothing to compare with.
                }
                None => {}
            }
        }
        last = Some((sequence, hash));
    }
    report
}

fn remove_path(value: &mut Value, path: &str) {
    let Some((parent, leaf)) = path.rsplit_once('.') else {
        if let Some(map) = value.as_object_mut() {
            map.remove(path);
        }
        return;
    };
    let mut node = value;
    for part in parent.split('.') {
        let Some(next) = node.get_mut(part) else {
            return;
        };
        node = next;
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(leaf);
    }
}
