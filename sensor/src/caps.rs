//! Capabilities: what the sensor holds, and dropping all but what it needs
//! once the tracing filesystem is mounted. From then on every thread (they
//! are all started later and inherit the sets) runs with:
//!
//! - `CAP_BPF` and `CAP_PERFMON`: load programs, create maps, attach
//!   tracepoints and uprobes (uprobes are attached for as long as the
//!   sensor runs, as new libraries and containers appear);
//! - `CAP_SYS_ADMIN`: attaching a uprobe is refused without it (EACCES
//!   from `perf_event_open` on the uprobe PMU, measured on 6.18 with
//!   CAP_BPF and CAP_PERFMON held), and it stands in for those two where
//!   the container runtime does not know them (docker 20.10);
//! - `CAP_SYS_PTRACE`: read other processes' `/proc/<pid>/{root,exe,environ}`
//!   and duplicate a socket with `pidfd_getfd` to read its local address;
//! - `CAP_DAC_READ_SEARCH`: read files inside containers and of other
//!   users (passwd, service-account tokens, SVIDs, runtime state);
//! - before 5.11, `CAP_SYS_RESOURCE` as well, for the locked-memory limit
//!   BPF maps were charged to.
//!
//! Everything else is dropped from the effective, permitted, inheritable,
//! ambient and bounding sets, and `no_new_privs` is set, so nothing the
//! sensor might be tricked into executing could regain privileges.

use std::io;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

pub fn name(cap: u32) -> &'static str {
    match cap {
        CAP_DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH",
        CAP_SETPCAP => "CAP_SETPCAP",
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE",
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_SYS_RESOURCE => "CAP_SYS_RESOURCE",
        CAP_PERFMON => "CAP_PERFMON",
        CAP_BPF => "CAP_BPF",
        _ => "CAP_?",
    }
}

/// A capability set from `/proc/<pid or self>/status` (`CapEff`, `CapPrm`,
/// `CapBnd`, ...).
pub fn read_set(status_path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    let prefix = format!("{field}:");
    let hex = status.lines().find_map(|l| l.strip_prefix(&prefix))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// This thread's effective set.
pub fn effective() -> u64 {
    read_set("/proc/thread-self/status", "CapEff").unwrap_or(0)
}

pub fn has(set: u64, cap: u32) -> bool {
    set & (1u64 << cap) != 0
}

/// (major, minor) of the running kernel.
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = nix::sys::utsname::uname().ok()?;
    let release = release.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The capabilities the running sensor keeps (of those it holds).
pub fn needed() -> Vec<u32> {
    let kernel = kernel_version().unwrap_or((0, 0));
    // CAP_SYS_ADMIN stays: attaching a uprobe (perf_event_open on the
    // uprobe PMU) is refused with EACCES holding CAP_BPF and CAP_PERFMON
    // alone (measured on 6.18), and the TLS probes are attached for as long
    // as the sensor runs. It also stands in for CAP_BPF/CAP_PERFMON where a
    // runtime does not know them (docker 20.10) or the kernel predates them.
    let mut keep = vec![
        CAP_SYS_PTRACE,
        CAP_DAC_READ_SEARCH,
        CAP_SYS_ADMIN,
        CAP_BPF,
        CAP_PERFMON,
    ];
    if kernel < (5, 11) {
        keep.push(CAP_SYS_RESOURCE);
    }
    keep.sort_unstable();
    keep
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Keeps `keep` (those of them this thread holds) and drops every other
/// capability from all sets, then sets `no_new_privs`. Call it before any
/// other thread starts: capabilities are per thread.
pub fn drop_all_but(keep: &[u32]) -> io::Result<()> {
    let held = read_set("/proc/thread-self/status", "CapPrm").unwrap_or(0);
    let mut mask: u64 = 0;
    for cap in keep {
        mask |= 1u64 << cap;
    }
    let mask = mask & held;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // the capset below gives up. Without CAP_SETPCAP (a container that was
    // not given it) the bounding set stays as it is; no_new_privs below
    // still keeps anything executed from gaining what is not permitted.
    if has(held, CAP_SETPCAP) {
        for cap in 0..=last_cap() {
            if mask & (1u64 << cap) == 0 {
                // SAFETY: prctl with integer arguments only.
                let rc =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                if rc != 0 {
                    let err = io::Error::last_os_error();
                    // EINVAL: a capability this kernel does not know.
                    if err.raw_os_error() != Some(libc::EINVAL) {
                        return Err(err);
                    }
                }
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask as u32,
            permitted: mask as u32,
            inheritable: 0,
        },
        CapData {
            effective: (mask >> 32) as u32,
            permitted: (mask >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset(2) with a v3 header and two data words, both valid
    // for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_set_fits_the_kernel() {
        let keep = needed();
        for cap in [
            CAP_SYS_PTRACE,
            CAP_DAC_READ_SEARCH,
            CAP_SYS_ADMIN,
            CAP_BPF,
            CAP_PERFMON,
        ] {
            assert!(keep.contains(&cap), "{}", name(cap));
        }
        let old = kernel_version().is_some_and(|v| v < (5, 11));
        assert_eq!(keep.contains(&CAP_SYS_RESOURCE), old);
    }
}
