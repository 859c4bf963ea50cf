//! Attaching the TLS uprobes to every distinct file that carries a TLS
//! library: shared libssl, libgnutls and libnspr4 on the host and in
//! containers, executables that link OpenSSL or BoringSSL statically with
//! symbols (node), and Go programs (crypto/tls, found through the Go
//! runtime's own function table, so stripped binaries too).
//!
//! A uprobe belongs to an inode, not to a process: one attach covers every
//! process that maps the file, now or later. So each file is probed once,
//! keyed by the (device, inode) that `/proc/<pid>/maps` reports (for a file
//! in an overlayfs container that is the real lower-layer inode, which is
//! what the kernel probes). Files in containers are reached through
//! `/proc/<pid>/root`.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use sensor_common::TlsLibrary;
use tracing::{debug, info, warn};

use super::{
    LoadError,
    elf::{ElfError, find_tls_symbols_in},
    golang::{GoProbe, inspect_go},
};

/// Entry program for each probed library function; every one also gets
/// `ssl_ret`. GnuTLS's record calls have `SSL_write`'s shape.
const ENTRY_PROGRAMS: [(&str, &str); 10] = [
    ("SSL_write", "ssl_write"),
    ("SSL_read", "ssl_read"),
    ("SSL_write_ex", "ssl_write_ex"),
    ("SSL_read_ex", "ssl_read_ex"),
    ("gnutls_record_send", "ssl_write"),
    ("gnutls_record_recv", "ssl_read"),
    ("PR_Write", "nspr_write"),
    ("PR_Send", "nspr_write"),
    ("PR_Read", "nspr_read"),
    ("PR_Recv", "nspr_read"),
];
const RETURN_PROGRAM: &str = "ssl_ret";
/// Go's crypto/tls: write entry, read entry, and read's return sites.
const GO_WRITE_PROGRAM: &str = "go_tls_write";
const GO_READ_PROGRAM: &str = "go_tls_read";
const GO_RETURN_PROGRAM: &str = "go_tls_read_ret";

/// Every uprobe program, loaded at start.
const PROGRAMS: [&str; 10] = [
    "ssl_write",
    "ssl_read",
    "ssl_write_ex",
    "ssl_read_ex",
    "nspr_write",
    "nspr_read",
    RETURN_PROGRAM,
    GO_WRITE_PROGRAM,
    GO_READ_PROGRAM,
    GO_RETURN_PROGRAM,
];

/// Names of the shared TLS libraries looked for in library directories.
const LIBRARY_NAMES: [&str; 3] = ["libssl.so", "libgnutls.so", "libnspr4.so"];

/// Directories searched at start for libssl files no process maps yet, so a
/// client started a moment later is covered from its first request.
const LIBRARY_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

/// Where container runtimes keep the unpacked layers of their images, as
/// (directory of layers, the layer's root inside each entry). A TLS
/// library in a layer is probed before any container of the image starts:
/// overlayfs maps the layer's own file, so the probe covers every
/// container made from it, from its first request.
const IMAGE_LAYER_DIRS: [(&str, &str); 3] = [
    // docker (overlay2)
    ("var/lib/docker/overlay2", "diff"),
    // containerd (overlayfs snapshotter), CRI pods included
    (
        "var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots",
        "fs",
    ),
    // podman and CRI-O (containers/storage)
    ("var/lib/containers/storage/overlay", "diff"),
];

/// Program directories scanned at start for executables with a TLS library
/// linked in.
const EXECUTABLE_DIRS: [&str; 7] = [
    "usr/bin",
    "usr/local/bin",
    "bin",
    "usr/sbin",
    "opt/bin",
    // Where container images commonly put their program (a Go binary).
    "app",
    "ko-app",
];
/// Smaller executables do not carry OpenSSL or BoringSSL linked in.
const MIN_STATIC_TLS_EXECUTABLE: u64 = 2 << 20;

/// What a file is, whatever name or device it is seen under: inode number,
/// size and modification time (ns). Through overlayfs a layer's file keeps
/// its inode number, size and times, while the device is the mount's;
/// different files agreeing on all of these are not to be met in practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ContentKey {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn content_key(file: &std::fs::File) -> Option<ContentKey> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata().ok()?;
    Some(ContentKey {
        ino: meta.ino(),
        size: meta.size(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    })
}

/// A file the sensor probes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbedFile {
    pub path: String,
    pub library: &'static str,
    pub functions: Vec<&'static str>,
    /// Where the file was found: `host`, `image layer` (a container
    /// image's layer on disk), or `process root` (through a running
    /// process's `/proc/<pid>/root`, a container's).
    pub found_in: &'static str,
}

/// Attach results, shared with the health reporter.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct AttachStats {
    pub files_probed: Vec<ProbedFile>,
    /// (major, minor, inode) of every probed file, as `/proc/<pid>/maps`
    /// names it: tells whether a process maps a probed TLS library.
    #[serde(skip)]
    pub probed_ids: HashSet<(u32, u32, u64)>,
    pub files_checked: u64,
    pub attach_failures: u64,
    pub check_failures: u64,
}

pub fn library_name(library: TlsLibrary) -> &'static str {
    match library {
        TlsLibrary::OpenSsl => "openssl",
        TlsLibrary::BoringSsl => "boringssl",
        TlsLibrary::GnuTls => "gnutls",
        TlsLibrary::Nss => "nss",
        TlsLibrary::GoTls => "go",
        TlsLibrary::Cleartext => "none",
        TlsLibrary::Unknown => "unknown",
    }
}

/// Identity of a file as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    major: u32,
    minor: u32,
    inode: u64,
}

impl FileId {
    /// From the `major:minor` (hex) and inode fields of a maps line.
    fn from_maps(dev: &str, inode: u64) -> Option<Self> {
        let (major, minor) = dev.split_once(':')?;
        Some(Self {
            major: u32::from_str_radix(major, 16).ok()?,
            minor: u32::from_str_radix(minor, 16).ok()?,
            inode,
        })
    }
}

pub struct Attacher {
    ebpf: Ebpf,
    seen: HashSet<FileId>,
    /// The files checked, by what they are rather than where they were seen
    /// (see [`ContentKey`]).
    checked: HashSet<ContentKey>,
    /// The files probed among them.
    probed_content: HashSet<ContentKey>,
    /// Executables read at start whose probes wait for their first run.
    prechecked: std::collections::HashMap<ContentKey, Probes>,
    /// Root directories (device, inode) whose library directories were
    /// scanned.
    roots: HashSet<(u64, u64)>,
    /// The node's root as the sensor sees it (image layers are below it).
    host_root: PathBuf,
    /// Every uprobe attached, to detach them side by side at the end.
    links: Vec<(&'static str, UProbeLinkId)>,
    stats: Arc<Mutex<AttachStats>>,
}

impl Attacher {
    /// Loads the uprobe programs (not attached yet) and takes ownership of
    /// the eBPF object: dropping the attacher detaches every program.
    pub fn new(
        mut ebpf: Ebpf,
        host_root: &Path,
        stats: Arc<Mutex<AttachStats>>,
    ) -> Result<Self, LoadError> {
        for name in PROGRAMS {
            let program: &mut UProbe = super::program(&mut ebpf, name)?;
            program.load().map_err(|source| LoadError::Program {
                name: name.to_owned(),
                source,
            })?;
        }
        Ok(Self {
            ebpf,
            seen: HashSet::new(),
            checked: HashSet::new(),
            probed_content: HashSet::new(),
            prechecked: std::collections::HashMap::new(),
            roots: HashSet::new(),
            host_root: host_root.to_path_buf(),
            links: Vec::new(),
            stats,
        })
    }

    /// Start-up scan: libssl files in the usual directories and in
    /// container image layers, then every running process's mappings.
    pub fn scan_system(&mut self) {
        self.scan_root(Path::new("/"));
        let host_root = self.host_root.clone();
        self.scan_root(&host_root);
        self.scan_image_layers();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                self.scan_pid(pid);
            }
        }
    }

    /// Probes the TLS libraries in the usual library directories under
    /// `root` (`/`, an image layer, or a container's root through
    /// `/proc/<pid>/root`), and the big executables in its program
    /// directories, once per root, before any process maps them: attaching takes milliseconds
    /// (the first uprobe on a file waits for an RCU grace period), which a
    /// client started a moment later would otherwise win.
    fn scan_root(&mut self, root: &Path) {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(meta) = std::fs::metadata(root) else {
            return;
        };
        if !self.roots.insert((meta.dev(), meta.ino())) {
            return;
        }
        for dir in LIBRARY_DIRS {
            let Ok(entries) = std::fs::read_dir(root.join(dir.trim_start_matches('/'))) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if LIBRARY_NAMES.iter().any(|l| name.starts_with(l)) {
                    self.consider_path(&entry.path(), root);
                }
            }
        }
        self.scan_executables(root);
    }

    /// Checks a file found on disk (not through a mapping).
    fn consider_path(&mut self, path: &Path, root: &Path) {
        // The identity the kernel gives the file (for overlayfs, the real
        // lower-layer inode), so a later mapping of the same file is
        // recognised and not probed twice.
        let Some(id) = std::fs::File::open(path)
            .ok()
            .and_then(|f| kernel_file_id(&f))
        else {
            return;
        };
        let shown = match path.strip_prefix(root) {
            Ok(inner) => format!("/{}", inner.display()),
            Err(_) => path.display().to_string(),
        };
        let place = if root == Path::new("/") || root == self.host_root {
            "host"
        } else if root.starts_with("/proc") {
            "process root"
        } else {
            "image layer"
        };
        self.consider(id, &[path.to_path_buf()], &shown, place);
    }

    /// The executables under `root`'s program directories that are big
    /// enough to carry a TLS library linked in (node, Bun-style single
    /// binaries, a static curl, Go programs) are read now, and their
    /// probes placed when they first run: the reading (symbol tables, a Go
    /// function table: tens of ms) is what would lose a fresh client's
    /// first request, while attaching takes a few ms. Probing them all now
    /// would cost every one of their probes at stop (each removal waits
    /// for an RCU grace period) for programs that may never run.
    fn scan_executables(&mut self, root: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        for dir in EXECUTABLE_DIRS {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if !(meta.is_file()
                    && meta.permissions().mode() & 0o111 != 0
                    && meta.len() >= MIN_STATIC_TLS_EXECUTABLE)
                {
                    continue;
                }
                let Ok(file) = std::fs::File::open(entry.path()) else {
                    continue;
                };
                let Some(key) = content_key(&file) else {
                    continue;
                };
                if self.checked.contains(&key) || self.prechecked.contains_key(&key) {
                    continue;
                }
                lock(&self.stats).files_checked += 1;
                match find_probes(&file, &entry.path()) {
                    Ok(Some(probes)) => {
                        self.prechecked.insert(key, probes);
                    }
                    Ok(None) => {
                        self.checked.insert(key);
                    }
                    Err(err) => {
                        debug!(path = %entry.path().display(), %err, "cannot check file for TLS functions");
                    }
                }
            }
        }
    }

    /// Probes TLS libraries in image layers not seen before (images pulled
    /// since the last scan). Cheap when nothing is new: one directory
    /// listing per runtime.
    pub fn scan_image_layers(&mut self) {
        for (layers, inner) in IMAGE_LAYER_DIRS {
            let Ok(entries) = std::fs::read_dir(self.host_root.join(layers)) else {
                continue;
            };
            for entry in entries.flatten() {
                let layer = entry.path().join(inner);
                if layer.is_dir() {
                    self.scan_root(&layer);
                }
            }
        }
    }

    /// Checks every executable file mapping of `pid` not seen before.
    pub fn scan_pid(&mut self, pid: u32) {
        // A process in a root not seen before (a new container): its TLS
        // libraries first, before the loader maps them.
        self.scan_root(&PathBuf::from(format!("/proc/{pid}/root")));
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            // The process is gone; whatever it mapped was either seen or
            // will be seen in the next process that maps it.
            return;
        };
        // A process in the sensor's own root is a host process.
        let place = {
            use std::os::unix::fs::MetadataExt;
            let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
            if id(&format!("/proc/{pid}/root")).is_some_and(|r| Some(r) == id("/proc/self/root")) {
                "host"
            } else {
                "process root"
            }
        };
        let mut mappings: Vec<Mapping<'_>> = maps
            .lines()
            .filter_map(parse_maps_line)
            .filter(|m| !self.seen.contains(&m.id))
            .collect();
        // A new container maps dozens of files never seen before; the TLS
        // library among them is checked first, since the client may be
        // about to use it (a process armed late loses its first request).
        mappings.sort_by_key(|m| tls_priority(m.path));
        mappings.dedup_by_key(|m| m.id);
        for mapping in mappings {
            if self.seen.contains(&mapping.id) {
                continue;
            }
            // The path in `maps` is relative to *our* root when the file is
            // reachable from it (a chroot shows `/srv/root/usr/lib/...`) and
            // to the process's mount namespace when not (a container shows
            // `/usr/lib/...`). `map_files` names the mapped file itself,
            // whatever the namespaces; the two path forms are fallbacks for
            // kernels or privileges without it.
            let candidates = [
                PathBuf::from(format!("/proc/{pid}/map_files/{}", mapping.range)),
                PathBuf::from(format!("/proc/{pid}/root{}", mapping.path)),
                PathBuf::from(mapping.path),
            ];
            self.consider(mapping.id, &candidates, mapping.path, place);
        }
    }

    fn consider(&mut self, id: FileId, candidates: &[PathBuf], shown: &str, place: &'static str) {
        if !self.seen.insert(id) {
            return;
        }
        // One open file for the check and the attach: the process whose
        // root the path goes through may exit meanwhile (a short-lived
        // client), and the fd keeps the file reachable as
        // /proc/self/fd/N, which the kernel resolves to the same inode.
        let mut opened = Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        for candidate in candidates {
            opened = std::fs::File::open(candidate);
            if opened.is_ok() {
                break;
            }
        }
        // One file, many names: every container's overlay mount shows an
        // image layer's file under its own device (with the layer file's
        // inode), and the layer itself is scanned under the real one. The
        // kernel probes the real inode, so a second attach would run every
        // probe twice: the file is recognised by what it is.
        let content = opened.as_ref().ok().and_then(content_key);
        if content.is_some_and(|key| self.checked.contains(&key)) {
            if content.is_some_and(|key| self.probed_content.contains(&key)) {
                lock(&self.stats)
                    .probed_ids
                    .insert((id.major, id.minor, id.inode));
            }
            return;
        }
        let started = std::time::Instant::now();
        let ready = content.and_then(|key| self.prechecked.remove(&key));
        let found = opened
            .map_err(|source| ElfError::Open {
                path: shown.to_owned(),
                source,
            })
            .and_then(|file| match ready {
                // Read at start: attach at once.
                Some(probes) => Ok((Some(probes), file)),
                None => Ok((find_probes(&file, Path::new(shown))?, file)),
            });
        debug!(
            path = shown,
            took_us = started.elapsed().as_micros() as u64,
            "checked"
        );
        let mut stats = lock(&self.stats);
        stats.files_checked += 1;
        match found {
            Ok((None, _)) => {
                drop(stats);
                self.checked.extend(content);
            }
            Ok((Some(probes), file)) => {
                drop(stats);
                use std::os::fd::AsRawFd as _;
                let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
                if self.attach(&by_fd, shown, &probes, place) {
                    self.checked.extend(content);
                    self.probed_content.extend(content);
                    lock(&self.stats)
                        .probed_ids
                        .insert((id.major, id.minor, id.inode));
                } else {
                    // Nothing attached: let a later mapping try again.
                    self.seen.remove(&id);
                }
            }
            Err(err) => {
                stats.check_failures += 1;
                // Deleted or replaced files, special mappings: forget the id
                // so a later mapping of a readable file is checked again.
                debug!(path = shown, %err, "cannot check file for TLS functions");
                self.seen.remove(&id);
            }
        }
    }

    /// Attaches every function found; true if any attach succeeded.
    fn attach(
        &mut self,
        host_path: &Path,
        shown: &str,
        probes: &Probes,
        place: &'static str,
    ) -> bool {
        let mut attached = Vec::new();
        let mut failures = 0u64;
        for (function, points) in &probes.points {
            let mut ok = true;
            for &(program, offset) in points {
                let point = UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(offset),
                    cookie: Some(probes.library as u64),
                };
                let t0 = std::time::Instant::now();
                let result = match self.ebpf.program_mut(program).map(<&mut UProbe>::try_from) {
                    Some(Ok(probe)) => probe
                        .attach(point, host_path, UProbeScope::AllProcesses)
                        .map(|id| self.links.push((program, id)))
                        .map_err(|e| error_chain(&e)),
                    Some(Err(e)) => Err(error_chain(&e)),
                    None => Err(format!("program {program} missing")),
                };
                debug!(
                    function,
                    program,
                    took_us = t0.elapsed().as_micros() as u64,
                    "attach"
                );
                if let Err(err) = result {
                    warn!(path = shown, function, program, %err, "uprobe attach failed");
                    failures += 1;
                    ok = false;
                }
            }
            if ok {
                attached.push(*function);
            }
        }
        let library = library_name(probes.library);
        let mut stats = lock(&self.stats);
        stats.attach_failures += failures;
        if attached.is_empty() {
            return false;
        }
        match &probes.go_version {
            Some(go) => {
                info!(path = shown, library, go, functions = ?attached, "TLS library probed")
            }
            None => info!(path = shown, library, functions = ?attached, "TLS library probed"),
        }
        stats.files_probed.push(ProbedFile {
            path: shown.to_owned(),
            library,
            functions: attached,
            found_in: place,
        });
        true
    }
}

impl Attacher {
    /// Detaches every uprobe, many at a time: removing one waits for an
    /// RCU grace period in the kernel (tens to hundreds of ms on a busy
    /// host), and hundreds of probes one after the other would hold a
    /// stopping sensor for minutes. The waits overlap across threads.
    pub fn detach_all(&mut self) {
        const THREADS: usize = 32;
        let mut links = Vec::with_capacity(self.links.len());
        for (program, id) in self.links.drain(..) {
            if let Some(Ok(probe)) = self.ebpf.program_mut(program).map(<&mut UProbe>::try_from)
                && let Ok(link) = probe.take_link(id)
            {
                links.push(link);
            }
        }
        let per_thread = links.len().div_ceil(THREADS).max(1);
        std::thread::scope(|scope| {
            while !links.is_empty() {
                let chunk: Vec<_> = links.drain(..per_thread.min(links.len())).collect();
                scope.spawn(move || drop(chunk));
            }
        });
    }
}

/// Where to put probes in one file: per function, the (program, file
/// offset) pairs.
#[derive(Clone)]
struct Probes {
    library: TlsLibrary,
    points: Vec<(&'static str, Vec<(&'static str, u64)>)>,
    go_version: Option<String>,
}

/// The probes a file needs: a TLS library's functions from its symbol
/// tables, or a Go program's crypto/tls. `None` for every other file.
fn find_probes(file: &std::fs::File, path: &Path) -> Result<Option<Probes>, ElfError> {
    if let Some(symbols) = find_tls_symbols_in(file, path)? {
        let points = symbols
            .functions
            .iter()
            .filter_map(|(function, offset)| {
                let (_, entry) = ENTRY_PROGRAMS.iter().find(|(f, _)| f == function)?;
                Some((
                    *function,
                    vec![(*entry, *offset), (RETURN_PROGRAM, *offset)],
                ))
            })
            .collect();
        return Ok(Some(Probes {
            library: symbols.library,
            points,
            go_version: None,
        }));
    }
    match inspect_go(file, path) {
        Ok(GoProbe::Found(go)) if !go.register_abi => {
            warn!(
                path = %path.display(),
                go_version = go.go_version,
                "Go program built with the stack calling convention (before Go 1.17): its TLS is not probed"
            );
            Ok(None)
        }
        Ok(GoProbe::Found(go)) => {
            let mut read = vec![(GO_READ_PROGRAM, go.read_entry)];
            read.extend(go.read_returns.iter().map(|&ret| (GO_RETURN_PROGRAM, ret)));
            Ok(Some(Probes {
                library: TlsLibrary::GoTls,
                points: vec![
                    (
                        "crypto/tls.(*Conn).Write",
                        vec![(GO_WRITE_PROGRAM, go.write_body)],
                    ),
                    ("crypto/tls.(*Conn).Read", read),
                ],
                go_version: Some(go.go_version),
            }))
        }
        Ok(GoProbe::Unsupported { go_version, reason }) => {
            warn!(path = %path.display(), go_version, reason, "Go program's TLS cannot be probed");
            Ok(None)
        }
        Ok(GoProbe::NotGo | GoProbe::NoTls) => Ok(None),
        Err(err) => {
            debug!(path = %path.display(), %err, "cannot inspect Go program");
            Ok(None)
        }
    }
}

/// An error and its sources on one line (aya's attach errors keep the
/// errno in a source).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn lock(stats: &Mutex<AttachStats>) -> std::sync::MutexGuard<'_, AttachStats> {
    // A poisoned lock only means another thread panicked mid-update of
    // counters; the counters are still usable.
    stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The (device, inode) the kernel reports for `file` in `/proc/*/maps`: it
/// maps one page of it and reads its own maps line. For a file on overlayfs
/// (containers) this is the real lower-layer file, which is also what a
/// uprobe attaches to, while `stat` would report the overlay's identity.
fn kernel_file_id(file: &std::fs::File) -> Option<FileId> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a private read-only mapping of one page of an open file; the
    // address is only compared with /proc/self/maps, never dereferenced,
    // and is unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return None;
    }
    let prefix = format!("{:x}-", addr as usize);
    let id = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            let line = maps.lines().find(|l| l.starts_with(&prefix))?;
            let mut fields = line.split_whitespace();
            let dev = fields.nth(3)?;
            FileId::from_maps(dev, fields.next()?.parse().ok()?)
        });
    // SAFETY: unmapping exactly the mapping made above.
    unsafe { libc::munmap(addr, 4096) };
    id
}

/// Order in which to check newly mapped files: names of TLS libraries
/// first, then everything else (executables with TLS linked in, other
/// libraries).
fn tls_priority(path: &str) -> u8 {
    let name = path.rsplit('/').next().unwrap_or(path);
    const TLS_NAMES: [&str; 6] = [
        "libssl",
        "libcrypto",
        "libgnutls",
        "libnss",
        "libboringssl",
        "libtls",
    ];
    if TLS_NAMES.iter().any(|t| name.starts_with(t)) {
        0
    } else {
        1
    }
}

/// Whether a `/proc/<pid>/maps` text maps one of the files `probed`
/// (major, minor, inode) executable.
pub fn maps_probed_file(maps: &str, probed: &HashSet<(u32, u32, u64)>) -> bool {
    maps.lines()
        .filter_map(parse_maps_line)
        .any(|m| probed.contains(&(m.id.major, m.id.minor, m.id.inode)))
}

struct Mapping<'a> {
    id: FileId,
    /// `start-end`, as `/proc/<pid>/map_files/` names the mapping.
    range: &'a str,
    path: &'a str,
}

/// One line of `/proc/<pid>/maps`, if it is an executable mapping of a file:
/// `start-end perms offset major:minor inode path`.
fn parse_maps_line(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let dev = fields.next()?;
    let inode: u64 = fields.next()?.parse().ok()?;
    let path = fields.next()?.trim_start();
    if !perms.contains('x') || inode == 0 || !path.starts_with('/') || path.ends_with(" (deleted)")
    {
        return None;
    }
    Some(Mapping {
        id: FileId::from_maps(dev, inode)?,
        range,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_file_id_matches_stat_on_a_plain_filesystem() {
        use std::os::unix::fs::MetadataExt as _;
        let exe = std::env::current_exe().expect("exe");
        let file = std::fs::File::open(&exe).expect("open");
        let meta = file.metadata().expect("meta");
        let id = kernel_file_id(&file).expect("id");
        assert_eq!(id.inode, meta.ino());
        assert_eq!(
            (id.major, id.minor),
            (
                nix::sys::stat::major(meta.dev()) as u32,
                nix::sys::stat::minor(meta.dev()) as u32
            )
        );
    }

    #[test]
    fn parses_executable_file_mappings_only() {
        let lib = "7f2a1c000000-7f2a1c0a0000 r-xp 00022000 fd:01 1835274                    /usr/lib/x86_64-linux-gnu/libssl.so.3";
        let m = parse_maps_line(lib).expect("mapping");
        assert_eq!(
            m.id,
            FileId {
                major: 0xfd,
                minor: 1,
                inode: 1835274
            }
        );
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let data = "7f2a1c0a0000-7f2a1c0b0000 r--p 00000000 fd:01 1835274 /usr/lib/x86_64-linux-gnu/libssl.so.3";
        assert!(parse_maps_line(data).is_none());
        let anon =
            "7ffd5c7e1000-7ffd5c802000 rw-p 00000000 00:00 0                          [stack]";
        assert!(parse_maps_line(anon).is_none());
        let vdso =
            "7ffd5c9f0000-7ffd5c9f2000 r-xp 00000000 00:00 0                          [vdso]";
        assert!(parse_maps_line(vdso).is_none());
        let deleted = "7f00-7f10 r-xp 00000000 08:02 42 /tmp/x.so (deleted)";
        assert!(parse_maps_line(deleted).is_none());
        let spaces = "7f00-7f10 r-xp 00000000 08:02 42 /opt/my app/libssl.so.3";
        assert_eq!(
            parse_maps_line(spaces).expect("mapping").path,
            "/opt/my app/libssl.so.3"
        );
    }
}
