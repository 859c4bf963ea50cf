//! Who a process is: its process table entry, the human behind it (login
//! uid, session, tty), its container, Kubernetes pod and service account,
//! and its workload identity (SPIFFE, cloud role).
//!
//! Identity is resolved once per process (at exec, or when a process is
//! first seen) and once per container, and cached: processes carry an
//! `Arc` of their container's identity, so a container leaves the cache
//! when its last process has left the process table. A process that exited
//! before user space looked at it is still attributed from what the kernel
//! sent (pid, uid, cgroup id), and the event lists what could not be
//! resolved.

pub mod cgroup;
pub mod container;
pub mod k8s;
pub mod mask;
pub mod process;
pub mod runtime_api;
pub mod workload;

use std::{
    collections::HashMap,
    fs,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use self::{
    cgroup::{CgroupContainer, parse_path, parse_proc_cgroup},
    container::RuntimeState,
    runtime_api::RuntimeApi,
    workload::CloudIdentity,
};

/// What the identity resolver is told by the configuration.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `k8s.node.name`.
    pub node_name: Option<String>,
    /// Trust domain of derived SPIFFE IDs.
    pub spiffe_trust_domain: String,
    /// Paths, inside a container, where a workload may hold an X.509 SVID.
    pub spiffe_svid_paths: Vec<String>,
    /// The node's root: runtime state is read below it.
    pub host_root: PathBuf,
    /// Where /proc is (the host's, in a pod with hostPID).
    pub proc_root: PathBuf,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            node_name: None,
            spiffe_trust_domain: "cluster.local".into(),
            spiffe_svid_paths: vec![
                "/var/run/secrets/workload-spiffe-credentials/certificates.pem".into(),
                "/run/spiffe/certs/svid.pem".into(),
                "/var/run/spire/svid.pem".into(),
            ],
            host_root: PathBuf::from("/"),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// A container, as far as the node can tell. Shared by its processes.
#[derive(Debug, Default, Clone)]
pub struct ContainerIdentity {
    pub id: String,
    pub runtime: Option<&'static str>,
    pub name: Option<String>,
    pub image_name: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    pub k8s_container_name: Option<String>,
    pub service_account: Option<String>,
    pub spiffe_id: Option<String>,
    /// `svid` or `derived`.
    pub spiffe_source: Option<&'static str>,
    /// User names from the container's own /etc/passwd.
    users: HashMap<u32, String>,
    /// Whether the runtime's state was found.
    pub runtime_state_found: bool,
    /// Whether files inside the container (token, SVID, /etc/passwd) were
    /// read.
    pub root_read: bool,
    resolved_at: Option<Instant>,
}

impl ContainerIdentity {
    pub fn is_kubernetes(&self) -> bool {
        self.pod_uid.is_some() || self.service_account.is_some() || self.pod_name.is_some()
    }
}

/// A process's identity beyond the process table entry.
#[derive(Debug, Default)]
pub struct ProcIdentity {
    pub cgroup_path: Option<String>,
    pub user_name: Option<String>,
    /// Audit login uid: the human the process descends from.
    pub loginuid: Option<u32>,
    pub login_user_name: Option<String>,
    pub sessionid: Option<u32>,
    /// `pts/3`, `tty1`.
    pub tty: Option<String>,
    pub cloud: Option<CloudIdentity>,
    pub container: Option<Arc<ContainerIdentity>>,
    /// Fields that could not be read: the process had exited.
    pub unresolved: Vec<&'static str>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IdentityStats {
    pub processes_resolved: u64,
    pub processes_gone: u64,
    pub containers_resolved: u64,
    pub containers_cached: u64,
    pub container_state_missing: u64,
    pub token_errors: u64,
    pub cgroup_walks: u64,
    pub runtime_api_calls: u64,
    pub runtime_api_failures: u64,
}

/// How long a container's identity is trusted before it is looked at again
/// when its state was incomplete.
const INCOMPLETE_RETRY: Duration = Duration::from_secs(2);
/// Unset loginuid / sessionid.
const UNSET_ID: u32 = u32::MAX;

pub struct Resolver {
    config: IdentityConfig,
    state: RuntimeState,
    api: RuntimeApi,
    containers: HashMap<String, Arc<ContainerIdentity>>,
    /// Kernel cgroup id -> the container that cgroup belongs to, for
    /// processes gone before /proc could be read.
    by_cgroup_id: HashMap<u64, String>,
    host_users: HashMap<u32, Option<String>>,
    last_walk: Option<Instant>,
    host_root_key: Option<(u64, u64)>,
    stats: IdentityStats,
}

impl Resolver {
    pub fn new(config: IdentityConfig) -> Self {
        Self {
            state: RuntimeState::new(&config.host_root),
            api: RuntimeApi::new(&config.host_root),
            config,
            containers: HashMap::new(),
            by_cgroup_id: HashMap::new(),
            host_users: HashMap::new(),
            last_walk: None,
            host_root_key: None,
            stats: IdentityStats::default(),
        }
    }

    pub fn node_name(&self) -> Option<&str> {
        self.config.node_name.as_deref()
    }

    pub fn stats(&self) -> IdentityStats {
        IdentityStats {
            containers_cached: self.containers.len() as u64,
            runtime_api_calls: self.api.calls,
            runtime_api_failures: self.api.failures,
            ..self.stats.clone()
        }
    }

    /// Reads what /proc says of a live process. `cgroup_id` is the kernel's
    /// (unified hierarchy) id from the record. `None` when the process is
    /// gone; see [`Resolver::from_kernel`].
    pub fn resolve_process(
        &mut self,
        pid: u32,
        uid: Option<u32>,
        cgroup_id: Option<u64>,
    ) -> Option<ProcIdentity> {
        let dir = self.config.proc_root.join(pid.to_string());
        let cgroup_text = fs::read_to_string(dir.join("cgroup")).ok()?;
        self.stats.processes_resolved += 1;
        let cgroup = parse_proc_cgroup(&cgroup_text);
        let container = cgroup
            .container
            .as_ref()
            .map(|c| self.container(c, Some(pid)));
        if let (Some(container), Some(id), Some(unified)) =
            (&container, cgroup_id, cgroup.unified.as_deref())
            && parse_path(unified).is_some_and(|c| c.id == container.id)
        {
            // The kernel's id is this container's own cgroup.
            self.by_cgroup_id.insert(id, container.id.clone());
        }
        let read_id = |name: &str| {
            fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|v| *v != UNSET_ID)
        };
        let loginuid = read_id("loginuid");
        let sessionid = read_id("sessionid");
        let tty = fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|stat| tty_nr(&stat))
            .and_then(tty_name);
        let cloud = read_environ(&dir).and_then(|env| {
            let vars = workload::cloud_env(&env);
            if vars.is_empty() {
                return None;
            }
            let root = RootDir::open(&dir.join("root"))?;
            workload::cloud_identity(&vars, |path| root.read(path, 64 * 1024))
        });
        let user_name = uid.and_then(|uid| self.user_name(uid, container.as_deref()));
        let login_user_name = loginuid.and_then(|uid| self.host_user(uid));
        Some(ProcIdentity {
            cgroup_path: cgroup.path,
            user_name,
            loginuid,
            login_user_name,
            sessionid,
            tty,
            cloud,
            container,
            unresolved: Vec::new(),
        })
    }

    /// What can be said of a process that exited before /proc was read:
    /// its container, from the kernel's cgroup id, and its user name.
    pub fn from_kernel(&mut self, uid: Option<u32>, cgroup_id: Option<u64>) -> ProcIdentity {
        self.stats.processes_gone += 1;
        let container = cgroup_id
            .filter(|id| *id > 1)
            .and_then(|id| self.container_of_cgroup_id(id));
        let user_name = uid.and_then(|uid| self.user_name(uid, container.as_deref()));
        ProcIdentity {
            user_name,
            container,
            unresolved: vec![
                "process.loginuid",
                "process.sessionid",
                "process.tty",
                "workload.cloud_identity",
            ],
            ..ProcIdentity::default()
        }
    }

    fn container_of_cgroup_id(&mut self, id: u64) -> Option<Arc<ContainerIdentity>> {
        if let Some(c) = self
            .by_cgroup_id
            .get(&id)
            .and_then(|cid| self.containers.get(cid))
        {
            return Some(Arc::clone(c));
        }
        // Find the cgroup by its id (the inode number of its directory in
        // the unified hierarchy). A walk is not cheap: at most one a second.
        let now = Instant::now();
        if self
            .last_walk
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return None;
        }
        self.last_walk = Some(now);
        self.stats.cgroup_walks += 1;
        let root = unified_mount(&self.config.host_root)?;
        let path = find_cgroup(&root, id, 0)?;
        let rel = path
            .strip_prefix(&root)
            .ok()?
            .to_string_lossy()
            .into_owned();
        let found = parse_path(&format!("/{rel}"))?;
        let container = self.container(&found, None);
        self.by_cgroup_id.insert(id, container.id.clone());
        Some(container)
    }

    /// The container's identity, from the cache or resolved now. `pid` is a
    /// live process in it, through whose root the service-account token,
    /// SVID and /etc/passwd are read.
    fn container(&mut self, found: &CgroupContainer, pid: Option<u32>) -> Arc<ContainerIdentity> {
        if let Some(cached) = self.containers.get(&found.id).cloned() {
            let old = cached
                .resolved_at
                .is_none_or(|t| t.elapsed() >= INCOMPLETE_RETRY);
            // Runtime state written late: asked again, at most every few
            // seconds, while processes of the container appear.
            let state_retry = !cached.runtime_state_found && old && pid.is_some();
            // A pod whose token was not there yet: its files are read
            // again (not the runtime), at most every few seconds.
            let token_retry = cached.pod_uid.is_some() && cached.service_account.is_none() && old;
            if !state_retry {
                if cached.root_read && !token_retry {
                    return cached;
                }
                let Some(root) = pid.and_then(|p| self.container_root(p)) else {
                    return cached;
                };
                let mut c = ContainerIdentity::clone(&cached);
                c.resolved_at = Some(Instant::now());
                self.read_from_container_root(&mut c, &root);
                c.root_read = true;
                let c = Arc::new(c);
                self.containers.insert(found.id.clone(), Arc::clone(&c));
                return c;
            }
        }
        // Files inside the container are read through a process that is
        // already in the container's root: the runtime's own helpers sit in
        // the container's cgroup for a moment before they pivot into it.
        let root = pid.and_then(|p| self.container_root(p));
        self.stats.containers_resolved += 1;
        let meta = self
            .state
            .lookup(&found.id, found.runtime, found.namespace.as_deref());
        let runtime = found.runtime.or(meta.as_ref().and_then(|m| m.runtime));
        // The runtime's API, where it has one the sensor speaks: it knows
        // images and Kubernetes labels the files may not carry.
        let api = match runtime {
            Some("docker") | Some("podman") => None,
            _ => {
                let ns = found
                    .namespace
                    .clone()
                    .or_else(|| meta.as_ref().and_then(|m| m.containerd_namespace.clone()));
                self.api.lookup(&found.id, runtime, ns.as_deref())
            }
        };
        if meta.is_none() && api.is_none() {
            self.stats.container_state_missing += 1;
        }
        let found_any = meta.is_some() || api.is_some();
        let meta = meta.unwrap_or_default();
        let api = api.unwrap_or_default();
        let mut c = ContainerIdentity {
            id: found.id.clone(),
            runtime: runtime.or(api.runtime),
            runtime_state_found: found_any,
            name: api.name.or(meta.name),
            image_name: api.image_name.or(meta.image_name),
            pod_uid: found.pod_uid.clone().or(api.pod_uid).or(meta.pod_uid),
            pod_name: api.pod_name.or(meta.pod_name),
            namespace: api.pod_namespace.or(meta.pod_namespace),
            k8s_container_name: api.k8s_container_name.or(meta.k8s_container_name),
            resolved_at: Some(Instant::now()),
            ..ContainerIdentity::default()
        };
        // Docker runs its containers in containerd's `moby` namespace.
        if found.namespace.as_deref() == Some("moby") {
            c.runtime = Some("docker");
        }
        if let Some(root) = root {
            self.read_from_container_root(&mut c, &root);
            c.root_read = true;
        }
        if c.name.is_none() {
            c.name = c.k8s_container_name.clone();
        }
        let c = Arc::new(c);
        self.containers.insert(found.id.clone(), Arc::clone(&c));
        c
    }

    fn read_from_container_root(&mut self, c: &mut ContainerIdentity, root: &RootDir) {
        if let Some(token) = root.read(k8s::TOKEN_PATH, k8s::MAX_TOKEN_BYTES + 1) {
            match k8s::decode_token(&token) {
                Ok(claims) => {
                    c.service_account = claims.service_account;
                    c.namespace = c.namespace.take().or(claims.namespace);
                    c.pod_name = c.pod_name.take().or(claims.pod_name);
                    c.pod_uid = c.pod_uid.take().or(claims.pod_uid);
                }
                Err(err) => {
                    self.stats.token_errors += 1;
                    tracing::debug!(container = %c.id, %err, "service-account token not usable");
                }
            }
        }
        for path in &self.config.spiffe_svid_paths {
            if let Some(pem) = root.read(path, 256 * 1024)
                && let Some(id) = workload::spiffe_id_from_pem(&pem)
            {
                c.spiffe_id = Some(id);
                c.spiffe_source = Some("svid");
                break;
            }
        }
        if c.spiffe_id.is_none()
            && let (Some(ns), Some(sa)) = (&c.namespace, &c.service_account)
        {
            c.spiffe_id = Some(workload::derived_spiffe_id(
                &self.config.spiffe_trust_domain,
                ns,
                sa,
            ));
            c.spiffe_source = Some("derived");
        }
        if let Some(passwd) = root.read("etc/passwd", 1 << 20) {
            c.users = parse_passwd(&String::from_utf8_lossy(&passwd));
        }
    }

    fn user_name(&mut self, uid: u32, container: Option<&ContainerIdentity>) -> Option<String> {
        match container {
            Some(c) => c.users.get(&uid).cloned(),
            None => self.host_user(uid),
        }
    }

    /// A host user's name, through the system's user database (NSS, so
    /// directory users resolve too), cached.
    fn host_user(&mut self, uid: u32) -> Option<String> {
        self.host_users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    /// The root directory of a process that has entered its container's
    /// filesystem (the runtime's helpers sit in the container's cgroup for
    /// a moment before they pivot into it); `None` while it is the host's.
    fn container_root(&mut self, pid: u32) -> Option<RootDir> {
        let root = RootDir::open(&self.config.proc_root.join(pid.to_string()).join("root"))?;
        let key = root.key()?;
        (Some(key) != self.host_root_key()).then_some(root)
    }

    /// The host's root: init's, or where init's cannot be looked at (a
    /// hardened init), the sensor's own.
    fn host_root_key(&mut self) -> Option<(u64, u64)> {
        if self.host_root_key.is_none() {
            self.host_root_key = RootDir::open(&self.config.proc_root.join("1/root"))
                .or_else(|| RootDir::open(Path::new("/")))
                .and_then(|r| r.key());
        }
        self.host_root_key
    }

    /// Drops containers no process refers to any more.
    pub fn sweep(&mut self) {
        self.containers.retain(|_, c| Arc::strong_count(c) > 1);
        let containers = &self.containers;
        self.by_cgroup_id
            .retain(|_, id| containers.contains_key(id));
        if self.host_users.len() > 4096 {
            self.host_users.clear();
        }
    }
}

/// A process's root directory, held open: files are read as the process
/// sees them, even if it exits meanwhile. Paths resolve with this directory
/// as their root, so the container's own absolute symlinks (`/var/run` ->
/// `/run`) stay inside it and none can lead the sensor to a host file. Only
/// regular files are read (a FIFO planted at a token path cannot block the
/// sensor), and at most the bytes asked for.
pub struct RootDir(std::os::fd::OwnedFd);

impl RootDir {
    pub fn open(root: &Path) -> Option<Self> {
        use std::os::fd::{FromRawFd as _, OwnedFd};

        use nix::{
            fcntl::{OFlag, open},
            sys::stat::Mode,
        };
        let fd = open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        Some(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Device and inode of the directory.
    fn key(&self) -> Option<(u64, u64)> {
        let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&self.0)).ok()?;
        Some((st.st_dev, st.st_ino))
    }

    pub fn read(&self, path: &str, max: usize) -> Option<Vec<u8>> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

        use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(self.0.as_raw_fd(), path.trim_start_matches('/'), how).ok()?;
        // SAFETY: `openat2` returned a new descriptor that nothing else owns.
        let file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        file.take(max as u64).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }
}

fn read_capped(path: &Path, max: usize) -> Option<Vec<u8>> {
    let file = fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(max as u64).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

fn read_environ(dir: &Path) -> Option<Vec<u8>> {
    read_capped(&dir.join("environ"), workload::MAX_ENVIRON_BYTES)
}

fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            (!name.is_empty()).then(|| (uid, name.to_owned()))
        })
        .collect()
}

/// `tty_nr`, field 7 of `/proc/<pid>/stat`.
fn tty_nr(stat: &str) -> Option<u32> {
    process::stat_field(stat, 7)?
        .parse::<i64>()
        .ok()
        .and_then(|v| u32::try_from(v).ok())
}

/// The terminal a `tty_nr` names: major 136-143 are pseudo-terminals,
/// major 4 virtual consoles and serial ports.
fn tty_name(nr: u32) -> Option<String> {
    if nr == 0 {
        return None;
    }
    let major = (nr >> 8) & 0xfff;
    let minor = (nr & 0xff) | ((nr >> 12) & 0xfff00);
    match major {
        136..=143 => Some(format!("pts/{}", (major - 136) * 256 + minor)),
        4 if minor < 64 => Some(format!("tty{minor}")),
        4 => Some(format!("ttyS{}", minor - 64)),
        5 if minor == 1 => Some("console".into()),
        _ => Some(format!("{major}:{minor}")),
    }
}

/// Where the unified (v2) hierarchy is mounted: `/sys/fs/cgroup` on a v2
/// host, `/sys/fs/cgroup/unified` on a hybrid one.
fn unified_mount(host_root: &Path) -> Option<PathBuf> {
    let base = host_root.join("sys/fs/cgroup");
    [base.clone(), base.join("unified")].into_iter().find(|p| {
        p.join("cgroup.controllers").exists()
            || p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists()
    })
}

/// The cgroup directory whose inode number is `id`.
fn find_cgroup(dir: &Path, id: u64, depth: usize) -> Option<PathBuf> {
    if depth > 12 {
        return None;
    }
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let path = entry.path();
        if entry.metadata().is_ok_and(|m| m.ino() == id) {
            return Some(path);
        }
        if let Some(found) = find_cgroup(&path, id, depth + 1) {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_names() {
        assert_eq!(tty_name(0), None);
        assert_eq!(tty_name(136 << 8 | 3).as_deref(), Some("pts/3"));
        // pts/300: major 137, minor 44.
        assert_eq!(tty_name(137 << 8 | 44).as_deref(), Some("pts/300"));
        assert_eq!(tty_name(4 << 8 | 1).as_deref(), Some("tty1"));
        assert_eq!(tty_name(4 << 8 | 64).as_deref(), Some("ttyS0"));
        let stat = "1234 (my (odd) name) S 1 1234 1234 34816 1234 4194560 1 0";
        assert_eq!(tty_nr(stat), Some(34816));
        assert_eq!(tty_name(34816).as_deref(), Some("pts/0"));
    }

    #[test]
    fn reads_stay_inside_the_root() {
        let root = std::env::temp_dir().join(format!("sensor-root-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("run/secrets")).expect("mkdir");
        fs::create_dir_all(root.join("var")).expect("mkdir");
        fs::write(root.join("run/secrets/token"), "inside").expect("write");
        // Absolute symlinks resolve within the root, as in the container.
        std::os::unix::fs::symlink("/run", root.join("var/run")).expect("symlink");
        let dir = RootDir::open(&root).expect("open root");
        assert_eq!(
            dir.read("/var/run/secrets/token", 100).as_deref(),
            Some(&b"inside"[..])
        );
        // A link pointing at a host file cannot escape.
        std::os::unix::fs::symlink("/../../../../etc/hostname", root.join("escape"))
            .expect("symlink");
        assert_eq!(dir.read("escape", 100), None);
        assert_eq!(dir.read("../../../etc/hostname", 100), None);
        // A FIFO is not read (it would block).
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        assert_eq!(dir.read("fifo", 100), None);
        // Caps apply.
        assert_eq!(
            dir.read("run/secrets/token", 2).as_deref(),
            Some(&b"in"[..])
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn passwd() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\nagent:x:1001:1001::/home/agent:/bin/sh\nbroken\n::5\n",
        );
        assert_eq!(users.get(&1001).map(String::as_str), Some("agent"));
        assert_eq!(users.len(), 2);
    }

    #[test]
    fn resolves_this_process_and_finds_its_cgroup_by_id() {
        let mut r = Resolver::new(IdentityConfig::default());
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let me = r
            .resolve_process(std::process::id(), Some(uid), None)
            .expect("self");
        assert!(me.cgroup_path.is_some());
        assert!(me.user_name.is_some());
        assert_eq!(
            r.resolve_process(4_000_000_001, None, None).map(|_| ()),
            None
        );
        let gone = r.from_kernel(Some(uid), Some(1));
        assert!(gone.container.is_none() && gone.unresolved.contains(&"process.loginuid"));
    }
}
