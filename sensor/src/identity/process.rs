//! The live process table: seeded from /proc at start, kept current by the
//! kernel's fork, exec and exit records, and filled lazily from /proc for a
//! process the sensor has not seen yet.
//!
//! Keyed by pid; a new exec or fork of a pid replaces the entry, so pid
//! reuse does not mix two processes. Exited processes stay for a grace
//! period so records still in flight can be attributed.

use std::{
    collections::{HashMap, VecDeque},
    fs,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{ProcIdentity, mask::mask_command_line};
use crate::decode::Task;

/// What an exec record says, besides the task.
pub struct ExecInfo<'a> {
    pub ppid: u32,
    pub comm: &'a str,
    pub filename: &'a str,
    pub args: &'a [String],
    pub args_truncated: bool,
}

/// How long an exited process stays in the table.
const EXIT_GRACE: Duration = Duration::from_secs(30);
/// Fork records remembered for processes that have not exec'd.
const MAX_FORKS: usize = 65_536;

#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// Absolute path of the executable, when known.
    pub exe: Option<String>,
    /// Command line with secrets masked.
    pub command_line: Option<String>,
    /// `comm`: the kernel's short name.
    pub name: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub cgroup_id: Option<u64>,
    /// Boot-time ns of the fork or exec that created this entry, or of the
    /// process start for seeded entries.
    pub start_boot_ns: Option<u64>,
    /// Where the data came from: `exec`, `fork`, `procfs`.
    pub source: &'static str,
    /// User, container, pod and workload identity, once resolved.
    pub identity: Option<Arc<ProcIdentity>>,
    /// `process.ancestry`, built at the first event and reused.
    pub ancestry: Option<Arc<serde_json::Value>>,
    /// This process's fields on every event about it (process, user,
    /// container, pod, workload), built at the first event and shared.
    pub actor: Option<Arc<crate::event::Fields>>,
}

impl ProcessInfo {
    fn empty(pid: u32, source: &'static str) -> Self {
        Self {
            pid,
            ppid: None,
            exe: None,
            command_line: None,
            name: None,
            uid: None,
            gid: None,
            cgroup_id: None,
            start_boot_ns: None,
            source,
            identity: None,
            ancestry: None,
            actor: None,
        }
    }
}

#[derive(Default)]
pub struct ProcessTable {
    live: HashMap<u32, ProcessInfo>,
    /// (when, pid, start time of the entry that exited).
    exited: VecDeque<(Instant, u32, Option<u64>)>,
    /// child pid -> parent pid for forks not followed by an exec yet.
    forks: HashMap<u32, u32>,
    fork_order: VecDeque<u32>,
    clock_ticks: Option<u64>,
}

impl ProcessTable {
    pub fn new() -> Self {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            clock_ticks: u64::try_from(ticks).ok().filter(|t| *t > 0),
            ..Self::default()
        }
    }

    /// Reads every process in /proc.
    pub fn seed(&mut self) {
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok())
                && let Some(info) = self.read_procfs(pid)
            {
                self.live.insert(pid, info);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// The cgroups of the live processes.
    pub fn cgroup_ids(&self) -> std::collections::BTreeSet<u64> {
        self.live.values().filter_map(|p| p.cgroup_id).collect()
    }

    /// One live process per cgroup (the lowest pid), for work done once
    /// per cgroup. Processes read from /proc (running before the sensor)
    /// get their cgroup v2 id here: the inode of their cgroup's directory
    /// below `cgroup2_root`.
    pub fn one_per_cgroup(&mut self, cgroup2_root: &std::path::Path) -> Vec<(u64, u32)> {
        use std::os::unix::fs::MetadataExt as _;
        let mut first: std::collections::BTreeMap<u64, u32> = Default::default();
        for (pid, info) in &mut self.live {
            if info.cgroup_id.is_none() {
                info.cgroup_id = fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .ok()
                    .and_then(|text| super::cgroup::parse_proc_cgroup(&text).unified)
                    .and_then(|path| {
                        fs::metadata(cgroup2_root.join(path.trim_start_matches('/'))).ok()
                    })
                    .map(|m| m.ino());
            }
            if let Some(cgroup) = info.cgroup_id {
                let slot = first.entry(cgroup).or_insert(*pid);
                *slot = (*slot).min(*pid);
            }
        }
        first.into_iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// A process image was replaced. The command line comes from the
    /// arguments the kernel captured at `execve` (complete unless the
    /// record says they were cut, then /proc is tried); the absolute
    /// executable path from /proc while the process lives, else the path
    /// exec was given.
    pub fn on_exec(&mut self, task: &Task, exec: &ExecInfo<'_>) -> &ProcessInfo {
        let pid = task.pid;
        self.forget_fork(pid);
        let mut info = ProcessInfo::empty(pid, "exec");
        let prior_parent = self.live.get(&pid).and_then(|p| p.ppid);
        info.ppid = (exec.ppid != 0)
            .then_some(exec.ppid)
            .or(prior_parent)
            .or_else(|| read_ppid(pid));
        info.uid = Some(task.uid);
        info.gid = Some(task.gid);
        info.cgroup_id = Some(task.cgroup_id);
        info.start_boot_ns = Some(task.ts_ns);
        info.name = Some(exec.comm.to_owned());
        info.exe = fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .or_else(|| (!exec.filename.is_empty()).then(|| exec.filename.to_owned()));
        let from_kernel = || {
            if exec.args.is_empty() {
                (!exec.filename.is_empty()).then(|| mask_command_line(&[exec.filename]))
            } else {
                Some(mask_command_line(exec.args))
            }
        };
        info.command_line = if exec.args_truncated {
            read_cmdline(pid).or_else(from_kernel)
        } else {
            from_kernel().or_else(|| read_cmdline(pid))
        };
        self.live.insert(pid, info);
        &self.live[&pid]
    }

    /// A task was created. Threads are reported too; they are only
    /// remembered, and only turn into entries if data arrives from them
    /// without an exec (a forked worker).
    pub fn on_fork(&mut self, parent: u32, child: u32) {
        if child == parent {
            return;
        }
        // A new task with this id means whatever process had it is gone.
        self.live.remove(&child);
        if self.forks.insert(child, parent).is_none() {
            self.fork_order.push_back(child);
        }
        while self.fork_order.len() > MAX_FORKS {
            if let Some(old) = self.fork_order.pop_front() {
                self.forks.remove(&old);
            }
        }
    }

    fn forget_fork(&mut self, pid: u32) {
        self.forks.remove(&pid);
    }

    pub fn on_exit(&mut self, pid: u32) {
        self.forget_fork(pid);
        if let Some(info) = self.live.get(&pid) {
            self.exited
                .push_back((Instant::now(), pid, info.start_boot_ns));
        }
    }

    pub fn set_identity(&mut self, pid: u32, identity: Arc<ProcIdentity>) {
        if let Some(info) = self.live.get_mut(&pid) {
            info.identity = Some(identity);
            info.actor = None;
        }
    }

    pub fn set_ancestry(&mut self, pid: u32, ancestry: Arc<serde_json::Value>) {
        if let Some(info) = self.live.get_mut(&pid) {
            info.ancestry = Some(ancestry);
            info.actor = None;
        }
    }

    /// Drops the process's cached event fields (something they show
    /// changed, like its agent mark).
    pub fn forget_actor(&mut self, pid: u32) {
        if let Some(info) = self.live.get_mut(&pid) {
            info.actor = None;
        }
    }

    /// The processes running under `pid` (children, grandchildren, ...),
    /// from the parent links of the table, forks not yet exec'd included.
    pub fn descendants(&self, pid: u32) -> Vec<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for info in self.live.values() {
            if let Some(ppid) = info.ppid
                && ppid != info.pid
            {
                children.entry(ppid).or_default().push(info.pid);
            }
        }
        for (child, parent) in &self.forks {
            if !self.live.contains_key(child) {
                children.entry(*parent).or_default().push(*child);
            }
        }
        let mut out = Vec::new();
        let mut queue = vec![pid];
        while let Some(p) = queue.pop() {
            if let Some(kids) = children.get(&p) {
                for kid in kids {
                    if *kid != pid && !out.contains(kid) && out.len() < 4096 {
                        out.push(*kid);
                        queue.push(*kid);
                    }
                }
            }
        }
        out
    }

    pub fn set_actor(&mut self, pid: u32, actor: Arc<crate::event::Fields>) {
        if let Some(info) = self.live.get_mut(&pid) {
            info.actor = Some(actor);
        }
    }

    /// Drops exited processes past their grace period.
    pub fn sweep(&mut self) {
        let now = Instant::now();
        while let Some((at, pid, start)) = self.exited.front().copied() {
            if now.duration_since(at) < EXIT_GRACE {
                break;
            }
            self.exited.pop_front();
            // Only the entry that exited: the pid may belong to a new
            // process (pid reuse, or an exec that replaced the entry).
            if self
                .live
                .get(&pid)
                .is_some_and(|info| info.start_boot_ns == start)
            {
                self.live.remove(&pid);
            }
        }
    }

    /// The process, resolving it from a remembered fork or /proc if it is
    /// not in the table yet.
    pub fn get_or_resolve(&mut self, pid: u32) -> Option<&ProcessInfo> {
        if !self.live.contains_key(&pid) {
            let info = self.read_procfs(pid).or_else(|| {
                let parent = *self.forks.get(&pid)?;
                let mut info = self.live.get(&parent)?.clone();
                info.pid = pid;
                info.ppid = Some(parent);
                info.source = "fork";
                info.ancestry = None;
                info.actor = None;
                Some(info)
            })?;
            self.live.insert(pid, info);
        }
        self.live.get(&pid)
    }

    fn read_procfs(&self, pid: u32) -> Option<ProcessInfo> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let mut info = ProcessInfo::empty(pid, "procfs");
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("Name:") {
                info.name = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("PPid:") {
                info.ppid = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("Uid:") {
                info.uid = v.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            } else if let Some(v) = line.strip_prefix("Gid:") {
                info.gid = v.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            } else if let Some(v) = line.strip_prefix("Tgid:") {
                // A thread id: its process is the one to describe.
                if v.trim().parse::<u32>().ok() != Some(pid) {
                    return None;
                }
            }
        }
        info.exe = fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        info.command_line = read_cmdline(pid);
        info.start_boot_ns = self.clock_ticks.and_then(|ticks| read_start_ns(pid, ticks));
        Some(info)
    }
}

fn read_cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None; // kernel thread, or a zombie
    }
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(mask_command_line(&args))
}

fn read_ppid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Start time from `/proc/<pid>/stat` field 22 (clock ticks since boot).
fn read_start_ns(pid: u32, ticks_per_sec: u64) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start: u64 = stat_field(&stat, 22)?.parse().ok()?;
    Some(start.checked_mul(1_000_000_000)? / ticks_per_sec)
}

/// Field `n` (1-based, as proc(5) numbers them; 3 or more) of a
/// `/proc/<pid>/stat` line. The command name before it is in parentheses
/// and may contain spaces and parentheses.
pub(crate) fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split(' ').nth(n.checked_sub(3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_self_from_procfs() {
        let mut table = ProcessTable::new();
        let me = std::process::id();
        let info = table.get_or_resolve(me).expect("self").clone();
        assert_eq!(info.pid, me);
        assert!(info.exe.is_some() && info.command_line.is_some() && info.start_boot_ns.is_some());
        assert_eq!(info.ppid, Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn forked_child_inherits_parent_until_exec() {
        let mut table = ProcessTable::new();
        table.live.insert(
            10,
            ProcessInfo {
                exe: Some("/bin/agent".into()),
                ..ProcessInfo::empty(10, "exec")
            },
        );
        // A pid that cannot exist in /proc (above pid_max).
        let child = 4_000_000_001;
        table.on_fork(10, child);
        let info = table.get_or_resolve(child).expect("child").clone();
        assert_eq!(
            (info.ppid, info.exe.as_deref(), info.source),
            (Some(10), Some("/bin/agent"), "fork")
        );
        let task = Task {
            ts_ns: 99,
            pid: child,
            tid: child,
            cgroup_id: 5,
            uid: 1000,
            gid: 1000,
        };
        let args = vec!["curl".to_owned(), "--token".to_owned(), "s3cret".to_owned()];
        let exec = ExecInfo {
            ppid: 10,
            comm: "curl",
            filename: "/usr/bin/curl",
            args: &args,
            args_truncated: false,
        };
        table.on_exec(&task, &exec);
        let info = table.get_or_resolve(child).expect("child");
        assert_eq!(
            (info.uid, info.source, info.exe.as_deref()),
            (Some(1000), "exec", Some("/usr/bin/curl"))
        );
        assert_eq!(info.command_line.as_deref(), Some("curl --token ****"));
    }
}
