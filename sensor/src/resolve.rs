//! Names processes resolved: from the DNS answers they read (see
//! `protocol::dns`), which name led each process to each address, so a
//! connection to an address can be reported with the name the process
//! asked for (`server.domain`), as it meant it.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

/// Addresses remembered per process at most; the oldest go first.
const PER_PROCESS: usize = 256;
/// Processes remembered at most; the first seen go first.
const MAX_PROCESSES: usize = 16_384;

#[derive(Default)]
pub struct Resolutions {
    map: HashMap<u32, VecDeque<(IpAddr, String)>>,
    order: VecDeque<u32>,
    pub answers: u64,
    pub errors: u64,
}

impl Resolutions {
    /// `pid` learned that `name` is at `addr`. The latest answer wins:
    /// the process connects to what it was told last.
    pub fn insert(&mut self, pid: u32, name: &str, addr: IpAddr) {
        if !self.map.contains_key(&pid) {
            self.order.push_back(pid);
            while self.order.len() > MAX_PROCESSES {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
        let entries = self.map.entry(pid).or_default();
        entries.retain(|(a, _)| *a != addr);
        if entries.len() >= PER_PROCESS {
            entries.pop_front();
        }
        entries.push_back((addr, name.to_owned()));
    }

    pub fn lookup(&self, pid: u32, addr: IpAddr) -> Option<&str> {
        self.map
            .get(&pid)?
            .iter()
            .rev()
            .find(|(a, _)| *a == addr)
            .map(|(_, n)| n.as_str())
    }

    /// The process ended.
    pub fn forget(&mut self, pid: u32) {
        if self.map.remove(&pid).is_some() {
            self.order.retain(|p| *p != pid);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn per_process_latest_wins_and_bounded() {
        let mut r = Resolutions::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        r.insert(1, "api.openai.com", a);
        assert_eq!(r.lookup(1, a), Some("api.openai.com"));
        assert_eq!(r.lookup(2, a), None);
        r.insert(1, "other.example", a);
        assert_eq!(r.lookup(1, a), Some("other.example"));
        r.forget(1);
        assert_eq!(r.lookup(1, a), None);
        for i in 0..(MAX_PROCESSES as u32 + 10) {
            r.insert(i, "x", a);
        }
        assert!(r.map.len() <= MAX_PROCESSES);
        assert_eq!(r.lookup(0, a), None);
        for i in 0..(PER_PROCESS as u16 + 10) {
            let [hi, lo] = i.to_be_bytes();
            r.insert(7, "y", IpAddr::from([10, 0, hi, lo]));
        }
        assert_eq!(r.map[&7].len(), PER_PROCESS);
    }
}
