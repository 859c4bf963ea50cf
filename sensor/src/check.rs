//! `sensor check`: what this host offers the sensor, line by line, each
//! with pass/warn/fail and, when not a pass, how to fix it. The daemon runs
//! the [`basics`] at start and refuses to start on a failure, with the same
//! lines. `sensor check` goes further and does the real thing: it loads the
//! kernel programs, attaches the tracepoints and the TLS probes, and reaches
//! out to every configured sink, then undoes it all.

use std::{fmt, net::ToSocketAddrs, path::Path, time::Duration};

use serde::Serialize;

use crate::{
    caps,
    config::Config,
    sink::{
        config::{SinkConfig, SinkType, SyslogTransport, Url, host_port},
        transport::{connect_first, tls_config, tls_handshake},
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub check: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag}  {:<22} {}", self.check, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n      {:<22} fix: {fix}", "")?;
        }
        Ok(())
    }
}

fn line(check: &str, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Line {
    Line {
        check: check.to_owned(),
        status,
        detail: detail.into(),
        fix: fix.map(str::to_owned),
    }
}

/// Whether a list of lines lets the sensor run.
pub fn passed(lines: &[Line]) -> bool {
    lines.iter().all(|l| l.status != Status::Fail)
}

/// Kernel, BTF, capabilities, tracing filesystem: without any of them
/// the sensor cannot load.
pub fn basics() -> Vec<Line> {
    let mut lines = Vec::new();
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    lines.push(match caps::kernel_version() {
        Some(v) if v >= (5, 15) => line("kernel", Status::Pass, release, None),
        Some(_) => line(
            "kernel",
            Status::Fail,
            format!("{release}: the TLS probes need uprobe attach cookies (5.15 or later)"),
            Some("run on a 5.15 or later kernel"),
        ),
        None => line("kernel", Status::Warn, "version unknown", None),
    });
    lines.push(if Path::new("/sys/kernel/btf/vmlinux").exists() {
        line("btf", Status::Pass, "/sys/kernel/btf/vmlinux", None)
    } else {
        line(
            "btf",
            Status::Fail,
            "this kernel exposes no BTF (/sys/kernel/btf/vmlinux)",
            Some("a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distributions since 2021); in a pod, mount the host's /sys/kernel/btf"),
        )
    });
    let eff = caps::effective();
    let modern = caps::kernel_version().is_some_and(|v| v >= (5, 8));
    let can_bpf = caps::has(eff, caps::CAP_SYS_ADMIN)
        || (modern && caps::has(eff, caps::CAP_BPF) && caps::has(eff, caps::CAP_PERFMON));
    lines.push(if can_bpf {
        line("capabilities: bpf", Status::Pass, if caps::has(eff, caps::CAP_BPF) { "CAP_BPF, CAP_PERFMON" } else { "CAP_SYS_ADMIN" }, None)
    } else {
        line(
            "capabilities: bpf",
            Status::Fail,
            "the sensor needs CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before 5.8) to load its programs",
            Some("run as root (`sudo`, or `cargo xtask run`), or grant CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
        )
    });
    for (cap, why) in [
        (
            caps::CAP_SYS_PTRACE,
            "other processes' executables, roots and sockets",
        ),
        (
            caps::CAP_DAC_READ_SEARCH,
            "files inside containers and of other users",
        ),
    ] {
        let name = caps::name(cap);
        lines.push(if caps::has(eff, cap) || caps::has(eff, caps::CAP_SYS_ADMIN) {
            line(&format!("capabilities: {}", &name[4..].to_ascii_lowercase()), Status::Pass, name, None)
        } else {
            line(
                &format!("capabilities: {}", &name[4..].to_ascii_lowercase()),
                Status::Warn,
                format!("{name} is missing: the sensor cannot read {why}; attribution will be partial"),
                Some(&format!("grant {name}")),
            )
        });
    }
    let tracefs = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .find(|p| Path::new(p).is_dir());
    lines.push(match tracefs {
        Some(p) => line("tracefs", Status::Pass, p.trim_end_matches("/events"), None),
        None if caps::has(eff, caps::CAP_SYS_ADMIN) => line(
            "tracefs",
            Status::Pass,
            "not mounted; the sensor mounts it at /sys/kernel/tracing",
            None,
        ),
        None => line(
            "tracefs",
            Status::Fail,
            "not mounted, and mounting it needs CAP_SYS_ADMIN",
            Some("mount tracefs at /sys/kernel/tracing (in a pod: a hostPath of the host's /sys/kernel/tracing)"),
        ),
    });
    lines
}

/// Everything `sensor check` reports besides the kernel programs.
pub fn host(config: &Config) -> Vec<Line> {
    let mut lines = vec![cgroups(), runtimes(&config.host_root)];
    for (what, path) in [
        ("fingerprint key", &config.fingerprint_key_file),
        ("integrity key", &config.integrity_key_file),
    ] {
        lines.push(key_file(what, path));
    }
    for sink in config.effective_sinks() {
        lines.push(sink_line(&sink, config));
    }
    lines
}

fn cgroups() -> Line {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
    let fs = |p: &str| statfs(p).ok().map(|s| s.filesystem_type());
    let layout = match fs("/sys/fs/cgroup") {
        Some(t) if t == CGROUP2_SUPER_MAGIC => "v2 (unified)",
        Some(_) if fs("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) => {
            "hybrid (v1 controllers, cgroup2 at /sys/fs/cgroup/unified)"
        }
        Some(_) => "v1",
        None => "",
    };
    if layout.is_empty() {
        line(
            "cgroups",
            Status::Warn,
            "no cgroup filesystem at /sys/fs/cgroup: containers cannot be told apart",
            Some("mount the host's /sys/fs/cgroup"),
        )
    } else {
        line("cgroups", Status::Pass, layout, None)
    }
}

fn runtimes(host_root: &Path) -> Line {
    let under = |p: &str| host_root.join(p.trim_start_matches('/'));
    let mut found = Vec::new();
    for (name, paths) in [
        ("containerd", &["/run/containerd/containerd.sock"][..]),
        (
            "cri-o",
            &["/run/crio/crio.sock", "/var/run/crio/crio.sock"][..],
        ),
        ("docker", &["/var/lib/docker/containers"][..]),
        (
            "podman",
            &["/var/lib/containers/storage/overlay-containers"][..],
        ),
    ] {
        if let Some(p) = paths.iter().find(|p| under(p).exists()) {
            found.push(format!("{name} ({p})"));
        }
    }
    if found.is_empty() {
        line(
            "container runtimes",
            Status::Warn,
            format!(
                "none found under {}: host processes only",
                host_root.display()
            ),
            Some("in a pod, mount the host's / and set host_root"),
        )
    } else {
        line("container runtimes", Status::Pass, found.join(", "), None)
    }
}

fn key_file(what: &str, path: &Path) -> Line {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => line(
            what,
            Status::Fail,
            format!("{} is readable by group or others", path.display()),
            Some(&format!("chmod 600 {}", path.display())),
        ),
        Ok(_) => line(what, Status::Pass, path.display().to_string(), None),
        Err(_) => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            let creatable = dir
                .ancestors()
                .find(|d| d.exists())
                .is_some_and(|d| nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok());
            if creatable {
                line(
                    what,
                    Status::Pass,
                    format!("{} (created at start)", path.display()),
                    None,
                )
            } else {
                line(
                    what,
                    Status::Fail,
                    format!("{} is missing and cannot be created", path.display()),
                    Some("make its directory writable, or point the config at a writable path"),
                )
            }
        }
    }
}

fn sink_line(sink: &SinkConfig, config: &Config) -> Line {
    let check = format!("sink {}", sink.name);
    let timeout = sink.timeout().min(Duration::from_secs(5));
    let result: Result<String, String> = match sink.kind {
        SinkType::Stdout => Ok("stdout".into()),
        SinkType::File => {
            let path = sink.path.clone().unwrap_or_default();
            let dir = path.parent().unwrap_or(Path::new("/"));
            let existing = dir
                .ancestors()
                .find(|d| d.exists())
                .unwrap_or(Path::new("/"));
            nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK)
                .map(|()| format!("{} writable", path.display()))
                .map_err(|e| format!("{} is not writable: {e}", existing.display()))
        }
        SinkType::Syslog => {
            let address = sink.address.clone().unwrap_or_default();
            match sink.transport {
                Some(SyslogTransport::Udp) => resolve(&address)
                    .map(|()| format!("udp {address} (resolves; UDP cannot be checked further)")),
                Some(SyslogTransport::Tcp) => {
                    reach(&address, None, timeout).map(|()| format!("tcp {address} reachable"))
                }
                _ => {
                    let name = sink
                        .server_name
                        .clone()
                        .unwrap_or_else(|| host_port(&address).map(|(h, _)| h).unwrap_or_default());
                    reach(&address, Some((sink.ca_file.as_deref(), name)), timeout)
                        .map(|()| format!("tls {address}: handshake and certificate good"))
                }
            }
        }
        SinkType::Http => match Url::parse(sink.url.as_deref().unwrap_or_default()) {
            Ok(url) => {
                let address = if url.host.contains(':') {
                    format!("[{}]:{}", url.host, url.port)
                } else {
                    format!("{}:{}", url.host, url.port)
                };
                let tls = url.tls.then(|| {
                    (
                        sink.ca_file.as_deref(),
                        sink.server_name.clone().unwrap_or_else(|| url.host.clone()),
                    )
                });
                reach(&address, tls, timeout).map(|()| format!("{address} reachable"))
            }
            Err(e) => Err(e),
        },
    };
    let spool = matches!(sink.kind, SinkType::Syslog | SinkType::Http).then(|| {
        let dir = config.spool_dir.join(&sink.name);
        let existing = dir
            .ancestors()
            .find(|d| d.exists())
            .unwrap_or(Path::new("/"));
        nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK)
            .map_err(|e| format!("spool {} not writable: {e}", dir.display()))
    });
    match (result, spool) {
        (Ok(detail), None | Some(Ok(()))) => line(&check, Status::Pass, detail, None),
        (Ok(_), Some(Err(e))) => line(&check, Status::Fail, e, Some("make spool_dir writable")),
        // A sink that is down now is not fatal: records wait in the spool.
        (Err(e), _) if matches!(sink.kind, SinkType::Syslog | SinkType::Http) => line(
            &check,
            Status::Warn,
            e,
            Some(
                "records wait in the spool until the receiver is reachable; check the address, firewall and CA",
            ),
        ),
        (Err(e), _) => line(
            &check,
            Status::Fail,
            e,
            Some("fix the path or its permissions"),
        ),
    }
}

fn resolve(address: &str) -> Result<(), String> {
    address
        .to_socket_addrs()
        .map(drop)
        .map_err(|e| format!("{address}: {e}"))
}

fn reach(
    address: &str,
    tls: Option<(Option<&Path>, String)>,
    timeout: Duration,
) -> Result<(), String> {
    let addrs = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?;
    let tcp = connect_first(addrs, timeout).map_err(|e| format!("{address}: {e}"))?;
    let Some((ca, name)) = tls else {
        return Ok(());
    };
    let config = tls_config(ca)?;
    let server = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|_| format!("`{name}` is not a TLS server name"))?;
    tls_handshake(config, server, tcp)
        .map(drop)
        .map_err(|e| format!("TLS handshake with {address}: {e}"))
}
