//! The connect hooks of policy enforcement: the `cgroup/connect4|6`
//! programs attached to the root of the host's cgroup v2 hierarchy through
//! BPF links, and the verdict tables user space fills.
//!
//! The links are held by this process's file descriptors and are not
//! pinned: when the sensor stops or dies, the kernel detaches the programs
//! and every connect goes through again (fails open).

use std::{
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use sensor_common::policy::{PolicyKey, PolicyVerdict};

use super::{LoadError, table};

/// The programs' names in the object.
pub const PROGRAMS: [&str; 2] = ["policy_connect4", "policy_connect6"];

/// The verdict tables, written by [`crate::policy::enforce::Enforcer`].
pub struct PolicyTables {
    verdicts: HashMap<MapData, PolicyKey, PolicyVerdict>,
    judged: HashMap<MapData, u64, u8>,
    addrs: HashMap<MapData, [u8; 16], u8>,
}

impl crate::policy::enforce::VerdictTables for PolicyTables {
    fn set_verdict(&mut self, key: PolicyKey, verdict: PolicyVerdict) -> Result<(), String> {
        self.verdicts
            .insert(key, verdict, 0)
            .map_err(|e| e.to_string())
    }

    fn remove_verdict(&mut self, key: &PolicyKey) {
        // Gone already is fine.
        let _ = self.verdicts.remove(key);
    }

    fn set_address(&mut self, addr: [u8; 16]) -> Result<(), String> {
        self.addrs.insert(addr, 1, 0).map_err(|e| e.to_string())
    }

    fn remove_address(&mut self, addr: &[u8; 16]) {
        let _ = self.addrs.remove(addr);
    }

    fn set_judged(&mut self, cgroup: u64) -> Result<(), String> {
        self.judged.insert(cgroup, 1, 0).map_err(|e| e.to_string())
    }

    fn remove_judged(&mut self, cgroup: u64) {
        let _ = self.judged.remove(&cgroup);
    }
}

/// The root of the host's cgroup v2 hierarchy. Read through pid 1's view
/// (the host's, with `hostPID` in a pod) so a sensor in a container with
/// its own cgroup namespace still attaches at the real root.
pub fn cgroup2_root() -> Option<PathBuf> {
    for (mountinfo, prefix) in [
        ("/proc/1/mountinfo", Some("/proc/1/root")),
        ("/proc/self/mountinfo", None),
    ] {
        let Ok(text) = std::fs::read_to_string(mountinfo) else {
            continue;
        };
        if let Some(mount) = parse_cgroup2_root(&text) {
            let path = match prefix {
                Some(prefix) => Path::new(prefix).join(mount.trim_start_matches('/')),
                None => PathBuf::from(mount),
            };
            if path.is_dir() {
                return Some(path);
            }
        }
    }
    None
}

/// The mount point of a cgroup2 mount of the hierarchy's root (its
/// mountinfo root field is `/`), from a mountinfo file.
fn parse_cgroup2_root(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split(' ').next()?;
        let mut fields = left.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (fstype == "cgroup2" && root == "/").then(|| unescape(mount_point))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0')));
        match octal {
            Some(v) if v <= 0xff => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Loads the two programs and attaches them to `root`; returns the tables.
pub fn attach(ebpf: &mut Ebpf, root: &Path) -> Result<PolicyTables, LoadError> {
    let dir = std::fs::File::open(root).map_err(|source| LoadError::Cgroup {
        path: root.display().to_string(),
        source,
    })?;
    for name in PROGRAMS {
        let program: &mut CgroupSockAddr = super::program(ebpf, name)?;
        // On 5.7+ aya attaches through a BPF link, whose flags must be 0
        // (`Single`): a link to a cgroup always runs alongside the other
        // programs there (the kernel attaches links with
        // BPF_F_ALLOW_MULTI, kernel/bpf/cgroup.c `cgroup_bpf_link_attach`).
        program
            .load()
            .and_then(|()| {
                program
                    .attach(dir.as_fd(), CgroupAttachMode::Single)
                    .map(drop)
            })
            .map_err(|source| LoadError::Program {
                name: name.to_owned(),
                source,
            })?;
    }
    Ok(PolicyTables {
        verdicts: table(ebpf, "POLICY_VERDICTS")?,
        judged: table(ebpf, "POLICY_JUDGED")?,
        addrs: table(ebpf, "POLICY_ADDRS")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_root() {
        let hybrid = "\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
";
        assert_eq!(
            parse_cgroup2_root(hybrid).as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
        // A container's view: the hierarchy below its own cgroup.
        let nested = "700 690 0:29 /kubepods/pod1/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_cgroup2_root(nested), None);
        let escaped = "1 0 0:29 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_root(escaped).as_deref(),
            Some("/mnt/with space")
        );
    }
}
