//! Loading the kernel programs, attaching the tracepoints, and the handles
//! the daemon keeps: the ring buffer, the loss counters, and the TLS attacher.

pub mod attach;
pub mod elf;
pub mod golang;
pub mod policy;

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use sensor_common::{SockKey, SockValue, SslKey, StreamPos, counter};

/// The kernel programs, built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the kernel programs were not built into this binary (AYA_BUILD_SKIP was set); \
         build with `cargo xtask build`"
    )]
    NotBuilt,
    #[error("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {errno}")]
    Tracefs { errno: nix::errno::Errno },
    #[error("cannot read tracepoint format {path} (is tracefs mounted?)")]
    TracepointFormat {
        path: String,
        source: std::io::Error,
    },
    #[error("tracepoint format {path} has no field `{field}`")]
    TracepointField { path: String, field: String },
    #[error("loading the eBPF object")]
    Load(#[from] aya::EbpfError),
    #[error("program {name} is missing from the eBPF object")]
    MissingProgram { name: String },
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: String },
    #[error("program {name}")]
    Program {
        name: String,
        source: aya::programs::ProgramError,
    },
    #[error("opening the cgroup v2 root {path}")]
    Cgroup {
        path: String,
        source: std::io::Error,
    },
    #[error("map {name}")]
    Map {
        name: String,
        source: aya::maps::MapError,
    },
}

/// Tracepoints the sensor attaches: (program, category, event).
pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sys_enter_execve", "syscalls", "sys_enter_execve"),
    ("sys_enter_execveat", "syscalls", "sys_enter_execveat"),
    ("sys_enter_socket", "syscalls", "sys_enter_socket"),
    ("sys_exit_socket", "syscalls", "sys_exit_socket"),
    ("sys_enter_connect", "syscalls", "sys_enter_connect"),
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
    ("sys_enter_close", "syscalls", "sys_enter_close"),
    ("sys_enter_write", "syscalls", "sys_enter_write"),
    ("sys_exit_write", "syscalls", "sys_exit_write"),
    ("sys_enter_writev", "syscalls", "sys_enter_writev"),
    ("sys_exit_writev", "syscalls", "sys_exit_writev"),
    ("sys_enter_sendto", "syscalls", "sys_enter_sendto"),
    ("sys_exit_sendto", "syscalls", "sys_exit_sendto"),
    ("sys_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
    ("sys_exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
    ("sys_enter_read", "syscalls", "sys_enter_read"),
    ("sys_exit_read", "syscalls", "sys_exit_read"),
    ("sys_enter_readv", "syscalls", "sys_enter_readv"),
    ("sys_exit_readv", "syscalls", "sys_exit_readv"),
    ("sys_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    ("sys_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
    ("sys_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    ("sys_exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
    ("sys_enter_mmap", "syscalls", "sys_enter_mmap"),
    ("sys_exit_chroot", "syscalls", "sys_exit_chroot"),
    ("sys_exit_pivot_root", "syscalls", "sys_exit_pivot_root"),
    ("sys_exit_setns", "syscalls", "sys_exit_setns"),
];

/// What `load` hands back: the programs (kept alive by the attacher) and the
/// maps the pipeline reads.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    pub tables: KernelTables,
    /// The connect hooks' tables, when they were asked for and attached;
    /// else why not.
    pub policy: Option<Result<policy::PolicyTables, String>>,
}

/// The kernel's per-process connection tables, which user space cleans
/// when a process ends: its sockets may never see a `close(2)` (killed,
/// `exit` with open fds), and LRU eviction alone would let a reused
/// (pid, fd) or `SSL *` inherit a stale binding.
pub struct KernelTables {
    socks: aya::maps::HashMap<MapData, SockKey, SockValue>,
    ssl_fd: aya::maps::HashMap<MapData, SslKey, i32>,
    stream_pos: aya::maps::HashMap<MapData, SslKey, StreamPos>,
    agents: aya::maps::HashMap<MapData, u32, u8>,
}

impl KernelTables {
    /// Stops copying the cleartext of socket `fd` of `pid`: the kernel
    /// leaves it alone from its next call (counting continues for agents).
    pub fn release_socket(&mut self, pid: u32, fd: i32) {
        let key = SockKey { tgid: pid, fd };
        if let Ok(mut value) = self.socks.get(&key, 0)
            && value.state == sensor_common::sock_state::HTTP
        {
            value.state = sensor_common::sock_state::OTHER;
            // Closed meanwhile: nothing to release.
            let _ = self.socks.insert(key, value, 0);
        }
    }

    /// `tgid` is (or stops being) part of an agent session: the kernel
    /// counts its sockets' bytes, and its children's.
    pub fn set_agent(&mut self, tgid: u32, agent: bool) {
        // A full table or a gone process is not an error: the counts are
        // then missing from its close events.
        let _ = if agent {
            self.agents.insert(tgid, 1, 0)
        } else {
            self.agents.remove(&tgid)
        };
    }

    /// Forgets the sockets `fds` and TLS sessions `conns` of `pid`. Entries
    /// already gone (closed, evicted) are not an error.
    pub fn forget_process(&mut self, pid: u32, fds: &[i32], conns: &[u64]) {
        for fd in fds {
            let _ = self.socks.remove(&SockKey { tgid: pid, fd: *fd });
        }
        for ssl in conns {
            let key = SslKey {
                tgid: pid,
                _pad: 0,
                ssl: *ssl,
            };
            let _ = self.ssl_fd.remove(&key);
            let _ = self.stream_pos.remove(&key);
        }
    }
}

fn tracefs_root() -> &'static str {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        "/sys/kernel/tracing"
    } else {
        "/sys/kernel/debug/tracing"
    }
}

/// Mounts tracefs at /sys/kernel/tracing when neither it nor the debugfs
/// path is there (minimal hosts and containers don't mount it); tracepoint
/// attach and the format files need it.
/// Mounts tracefs at /sys/kernel/tracing unless a tracing directory is
/// there already (needs CAP_SYS_ADMIN when it mounts).
pub fn ensure_tracefs() -> Result<(), LoadError> {
    if Path::new("/sys/kernel/tracing/events").is_dir()
        || Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        "/sys/kernel/tracing",
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|errno| LoadError::Tracefs { errno })?;
    tracing::info!("mounted tracefs at /sys/kernel/tracing");
    Ok(())
}

/// Offset of `field` in a tracepoint record, from its format file. Layouts
/// change between kernels (6.x turned the fork comms into `__data_loc`), so
/// the programs get them patched in rather than compiled in.
fn field_offset(category: &str, event: &str, field: &str) -> Result<u32, LoadError> {
    let path = format!("{}/events/{category}/{event}/format", tracefs_root());
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::TracepointFormat {
        path: path.clone(),
        source,
    })?;
    parse_field_offset(&text, field).ok_or_else(|| LoadError::TracepointField {
        path,
        field: field.to_owned(),
    })
}

fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit(' ').next()?.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line
            .split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

/// Loads the programs with a ring buffer of `ring_bytes` and attaches every
/// tracepoint. Uprobes are attached later by [`attach::Attacher`].
/// `wakeup_bytes` is the ring backlog above which a record wakes the
/// consumer (0: every record does).
/// With `policy_hooks`, the connect programs of policy enforcement are
/// attached to the cgroup v2 root too; failing that is reported in
/// [`Loaded::policy`], not an error here.
pub fn load(ring_bytes: u32, wakeup_bytes: u64, policy_hooks: bool) -> Result<Loaded, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NotBuilt);
    }
    ensure_tracefs()?;
    let fork_child = field_offset("sched", "sched_process_fork", "child_pid")?;
    let exec_filename = field_offset("sched", "sched_process_exec", "filename")?;
    let exec_old_pid = field_offset("sched", "sched_process_exec", "old_pid")?;
    // Absent before 6.x: the programs fall back to the leader's exit.
    let group_dead = match field_offset("sched", "sched_process_exit", "group_dead") {
        Ok(offset) => offset,
        Err(LoadError::TracepointField { .. }) => 0,
        Err(other) => return Err(other),
    };
    let mut ebpf = EbpfLoader::new()
        .override_global("FORK_CHILD_PID_OFFSET", &fork_child, true)
        .override_global("EXEC_FILENAME_OFFSET", &exec_filename, true)
        .override_global("EXEC_OLD_PID_OFFSET", &exec_old_pid, true)
        .override_global("EXIT_GROUP_DEAD_OFFSET", &group_dead, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
        .map_max_entries("EVENTS", ring_bytes)
        .load(EBPF_OBJECT)?;
    for (name, category, event) in TRACEPOINTS {
        let program: &mut TracePoint = program(&mut ebpf, name)?;
        program
            .load()
            .and_then(|()| program.attach(category, event).map(drop))
            .map_err(|source| LoadError::Program {
                name: (*name).to_owned(),
                source,
            })?;
    }
    let policy = policy_hooks.then(|| match policy::cgroup2_root() {
        Some(root) => policy::attach(&mut ebpf, &root).map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }),
        None => Err("no cgroup v2 hierarchy is mounted (cgroup2 in /proc/1/mountinfo)".into()),
    });
    let events = take_map(&mut ebpf, "EVENTS")?;
    let events = RingBuf::try_from(events).map_err(|source| LoadError::Map {
        name: "EVENTS".into(),
        source,
    })?;
    let counters = take_map(&mut ebpf, "COUNTERS")?;
    let counters = PerCpuArray::try_from(counters).map_err(|source| LoadError::Map {
        name: "COUNTERS".into(),
        source,
    })?;
    let tables = KernelTables {
        socks: table(&mut ebpf, "SOCKS")?,
        ssl_fd: table(&mut ebpf, "SSL_FD")?,
        stream_pos: table(&mut ebpf, "STREAM_POS")?,
        agents: table(&mut ebpf, "AGENTS")?,
    };
    Ok(Loaded {
        ebpf,
        events,
        counters,
        tables,
        policy,
    })
}

/// A program of the object, as its type.
pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, LoadError>
where
    &'a mut aya::programs::Program: TryInto<&'a mut T, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| LoadError::MissingProgram {
            name: name.to_owned(),
        })?
        .try_into()
        .map_err(|source| LoadError::Program {
            name: name.to_owned(),
            source,
        })
}

/// A (LRU) hash map taken out of the object for user space to update.
fn table<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<aya::maps::HashMap<MapData, K, V>, LoadError> {
    aya::maps::HashMap::try_from(take_map(ebpf, name)?).map_err(|source| LoadError::Map {
        name: name.to_owned(),
        source,
    })
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or_else(|| LoadError::MissingMap {
        name: name.to_owned(),
    })
}

/// Kernel-side counters summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelCounters {
    pub ringbuf_drops: u64,
    pub tls_read_errors: u64,
    pub tls_bytes_truncated: u64,
    pub tls_orphan_returns: u64,
    /// Cleartext socket calls whose bytes were copied.
    pub cleartext_calls: u64,
    /// Vectored socket calls with more buffers than the kernel copies.
    pub iovec_truncated: u64,
    /// Connects refused by the policy programs.
    pub policy_blocks: u64,
}

pub fn read_counters(map: &PerCpuArray<MapData, u64>) -> KernelCounters {
    let sum = |index: u32| -> u64 {
        map.get(&index, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    };
    KernelCounters {
        ringbuf_drops: sum(counter::RINGBUF_DROPS),
        tls_read_errors: sum(counter::TLS_READ_ERRORS),
        tls_bytes_truncated: sum(counter::TLS_BYTES_TRUNCATED),
        tls_orphan_returns: sum(counter::TLS_ORPHAN_RETURNS),
        cleartext_calls: sum(counter::CLEARTEXT_CALLS),
        iovec_truncated: sum(counter::IOVEC_TRUNCATED),
        policy_blocks: sum(counter::POLICY_BLOCKS),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    const FORK_6_18: &str = "name: sched_process_fork
ID: 316
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";
    const FORK_5_10: &str = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:1;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;
";

    #[test]
    fn finds_offsets_across_layouts() {
        assert_eq!(parse_field_offset(FORK_6_18, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(FORK_5_10, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(FORK_6_18, "child_comm"), Some(16));
        assert_eq!(parse_field_offset(FORK_5_10, "child_comm"), Some(28));
        assert_eq!(parse_field_offset(FORK_6_18, "nope"), None);
    }
}
