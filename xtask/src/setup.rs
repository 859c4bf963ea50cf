//! Installing what the build and the tests need, idempotently, on Debian.
//! Where something is missing and cannot be installed (not Debian, not
//! root), fail and say what is missing and how to get it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::{run, workspace_root};

/// Debian packages for the kernel-program build: rustc 1.96 with its own
/// library source (the BPF target needs `-Z build-std=core`) and LLVM 22
/// for bpf-linker.
const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
];
/// The rustup name under which Debian's rustc is linked.
const EBPF_TOOLCHAIN: &str = "rust-web";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Packages the integration tests use: real clients and inspection tools.
const TEST_PACKAGES: &[&str] = &[
    "curl",
    "openssl",
    "bpftool",
    "ca-certificates",
    "libssl-dev",
    "pkg-config",
    "rsyslog",
    "rsyslog-gnutls",
    // Clients of tests/tests/tls_coverage.rs: gnutls-cli, NSS's tstclnt,
    // Go (built in the test), Java 17 (the source launcher).
    "gnutls-bin",
    "libnss3-tools",
    "golang-go",
    "openjdk-17-jdk-headless",
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "{what} needs root (loading eBPF programs): run as root, e.g. `sudo -E cargo xtask ...`"
        );
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs the Debian packages not installed yet.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !Path::new("/etc/debian_version").exists() {
        bail!(
            "missing packages {missing:?}, and this is not Debian: install their equivalents \
             (Rust 1.96 with rust-src, LLVM 22 development files) by hand"
        );
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}: run `sudo apt-get install {}` or run xtask as root",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let install = |missing: &[&str]| {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install(&missing) {
        // The package lists may be stale or absent on a fresh machine.
        run(Command::new("apt-get").args(["update"]))?;
        if !install(&missing) {
            bail!("apt-get install {} failed", missing.join(" "));
        }
    }
    Ok(())
}

/// Everything `cargo build` of the sensor needs.
pub fn build_tools() -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("the sensor runs on Linux only");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!(
            "xtask: warning: this kernel exposes no BTF (/sys/kernel/btf/vmlinux); the sensor will not load here"
        );
    }
    apt_install(BUILD_PACKAGES)?;
    let toolchains = Command::new("rustup").args(["toolchain", "list"]).output().context(
        "rustup is needed to link Debian's rustc as a toolchain (install it from https://rustup.rs)",
    )?;
    if !String::from_utf8_lossy(&toolchains.stdout)
        .lines()
        .any(|l| l.starts_with(EBPF_TOOLCHAIN))
    {
        eprintln!("xtask: linking /usr as rustup toolchain {EBPF_TOOLCHAIN}");
        run(Command::new("rustup").args(["toolchain", "link", EBPF_TOOLCHAIN, "/usr"]))?;
    }
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        });
    if !linker_ok {
        eprintln!(
            "xtask: installing bpf-linker {BPF_LINKER_VERSION} (builds against LLVM 22, about a minute)"
        );
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }
    Ok(())
}

/// What the benchmark needs besides the build: openssl (certificates),
/// bpftool (per-program run time), and libssl-dev for the benchmark client.
pub fn apt_install_bench() -> anyhow::Result<()> {
    apt_install(&["openssl", "bpftool", "libssl-dev", "pkg-config"])
}

/// Paths the integration tests get.
pub struct TestEnv {
    pub venv: PathBuf,
    pub node_dir: PathBuf,
    pub runtimes: RuntimeEnv,
}

/// Slow-to-make test dependencies live outside the clone, keyed by what
/// they contain, so a second run (and CI on the same machine) reuses them.
fn cache_root() -> PathBuf {
    std::env::var_os("SENSOR_CACHE_DIR")
        .map_or_else(|| PathBuf::from("/var/cache/sensor-dev"), PathBuf::from)
}

fn key(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn version_of(program: &str) -> Vec<u8> {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| [o.stdout, o.stderr].concat())
        .unwrap_or_default()
}

/// Builds `dir` with `make` unless a completed copy exists.
fn cached(dir: &Path, make: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(());
    }
    if dir.exists() {
        fs::remove_dir_all(dir)
            .with_context(|| format!("removing incomplete {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Err(err) = make(dir) {
        let _ = fs::remove_dir_all(dir);
        return Err(err);
    }
    fs::write(&done, b"").context("marking cache entry complete")
}

pub fn test_tools() -> anyhow::Result<TestEnv> {
    apt_install(TEST_PACKAGES)?;
    if !succeeds(Command::new("python3").args(["-m", "venv", "--help"])) {
        apt_install(&["python3", "python3-venv"])?;
    }
    if !succeeds(Command::new("node").arg("--version"))
        || !succeeds(Command::new("npm").arg("--version"))
    {
        apt_install(&["nodejs", "npm"])?;
    }
    let clients = workspace_root().join("tests/clients");
    let requirements = fs::read(clients.join("requirements.txt"))
        .context("reading tests/clients/requirements.txt")?;
    let venv = cache_root().join(format!(
        "venv-{}",
        key(&[&requirements, &version_of("python3")])
    ));
    cached(&venv, |dir| {
        eprintln!("xtask: creating the test virtualenv in {}", dir.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(dir))?;
        run(Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "-r"])
            .arg(clients.join("requirements.txt")))
    })?;
    let lock = fs::read(clients.join("package-lock.json"))
        .context("reading tests/clients/package-lock.json")?;
    let manifest =
        fs::read(clients.join("package.json")).context("reading tests/clients/package.json")?;
    let node_dir = cache_root().join(format!(
        "node-{}",
        key(&[&lock, &manifest, &version_of("node")])
    ));
    cached(&node_dir, |dir| {
        eprintln!(
            "xtask: installing the test npm modules in {}",
            dir.display()
        );
        fs::write(dir.join("package.json"), &manifest)?;
        fs::write(dir.join("package-lock.json"), &lock)?;
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir))
    })?;
    let runtimes = runtimes()?;
    Ok(TestEnv {
        venv,
        node_dir,
        runtimes,
    })
}

/// Container runtimes for the tests, from Debian packages. docker.io pulls
/// in iptables, which stays unused: every test container uses the host
/// network (dockerd runs with `--bridge=none --iptables=false`).
const RUNTIME_PACKAGES: &[&str] = &["docker.io", "containerd", "runc", "podman", "debootstrap"];
/// The test image: a Debian root filesystem made by debootstrap.
const ROOTFS_SUITE: &str = "bookworm";
const ROOTFS_VARIANT: &str = "minbase";
const ROOTFS_PACKAGES: &[&str] = &["curl", "ca-certificates"];
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// The Debian package's docker CLI: another one may come first in PATH.
const DOCKER: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const CONTAINERD: &str = "/usr/bin/containerd";
const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// containerd namespaces: plain `ctr run` containers, and the CRI plugin's.
const CTR_NAMESPACE: &str = "sensor-test";
const CRI_NAMESPACE: &str = "k8s.io";
/// `docker import` leaves the image config empty; the CRI (unlike docker)
/// adds no default PATH, so the images carry one.
const IMAGE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The test image's default command (the tests always give one).
const IMAGE_CMD: &str = r#"["/bin/bash"]"#;
/// The CRI sandbox ("pause") stand-in only has to stay up until killed.
const PAUSE_CMD: &str = r#"["/bin/sleep", "infinity"]"#;
const DAEMON_START: Duration = Duration::from_secs(60);

/// What the container-runtime tests get (`tests/src/runtime.rs`).
pub struct RuntimeEnv {
    /// The test image, under this name in docker, podman, and containerd's
    /// `sensor-test` and `k8s.io` namespaces.
    pub image: String,
    /// The containers.conf podman must be run with (`CONTAINERS_CONF`).
    pub containers_conf: PathBuf,
}

/// Makes docker, rootful podman, containerd (`ctr`) and containerd's CRI
/// plugin usable by the tests: installs them, starts containerd and dockerd
/// if they are not answering, and imports the test image into each. The
/// image's root filesystem is built once with debootstrap and cached as a
/// tarball keyed by its recipe; each import is skipped when the image is
/// there, so a second run takes seconds.
pub fn runtimes() -> anyhow::Result<RuntimeEnv> {
    require_root("setting up the container runtimes")?;
    if !Path::new("/etc/debian_version").exists() {
        bail!(
            "the container-runtime tests need docker (dockerd 20.10), containerd 1.6 with its \
             CRI plugin, runc, podman 4 and debootstrap; they are set up on Debian 12 only"
        );
    }
    apt_install(RUNTIME_PACKAGES)?;
    let dir = cache_root().join("runtimes");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let arch = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg --print-architecture")?
        .stdout;
    let rootfs_key = key(&[
        ROOTFS_SUITE.as_bytes(),
        ROOTFS_VARIANT.as_bytes(),
        ROOTFS_PACKAGES.join(",").as_bytes(),
        arch.trim_ascii(),
    ]);
    // The images also depend on how they are imported.
    let tag = key(&[
        rootfs_key.as_bytes(),
        IMAGE_PATH.as_bytes(),
        IMAGE_CMD.as_bytes(),
        PAUSE_CMD.as_bytes(),
    ]);
    let image = format!("localhost/sensor-test-rootfs:{tag}");
    let pause = format!("localhost/sensor-test-pause:{tag}");

    let rootfs_dir = cache_root().join(format!("rootfs-{rootfs_key}"));
    cached(&rootfs_dir, |out| build_rootfs(out, &dir))?;
    let rootfs = rootfs_dir.join("rootfs.tar");

    start_containerd(&dir, &pause)?;
    start_dockerd(&dir)?;
    let containers_conf = write_containers_conf(&dir)?;
    import_images(&rootfs, &image, &pause, &containers_conf, &dir)?;
    Ok(RuntimeEnv {
        image,
        containers_conf,
    })
}

/// debootstrap into a scratch tree in `work`, then a tarball of it in
/// `out` (numeric owners, without the downloaded .debs and package lists).
/// The tree is outside `out`, which `cached` deletes on failure: nothing may
/// delete it through a mount debootstrap left (proc, sys, or a bind of the
/// host's /dev) before it is unmounted.
fn build_rootfs(out: &Path, work: &Path) -> anyhow::Result<()> {
    let tree = work.join("rootfs-tree");
    let log = work.join("debootstrap.log");
    let remove_tree = || -> anyhow::Result<()> {
        unmount_under(&tree)?;
        if tree.exists() {
            fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
        }
        Ok(())
    };
    // A run killed inside debootstrap leaves its tree (and mounts).
    remove_tree()?;
    eprintln!(
        "xtask: building the test root filesystem ({ROOTFS_SUITE} {ROOTFS_VARIANT} + {}) \
         with debootstrap, log in {}",
        ROOTFS_PACKAGES.join(","),
        log.display()
    );
    let result = (|| {
        let log_file =
            fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let status = Command::new("debootstrap")
            .arg(format!("--variant={ROOTFS_VARIANT}"))
            .arg(format!("--include={}", ROOTFS_PACKAGES.join(",")))
            .arg(ROOTFS_SUITE)
            .arg(&tree)
            .arg(DEBIAN_MIRROR)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .status()
            .context("running debootstrap")?;
        if !status.success() {
            bail!(
                "debootstrap failed ({status}); the end of {}:\n{}",
                log.display(),
                tail(&log, 20)
            );
        }
        for junk in ["var/cache/apt/archives", "var/lib/apt/lists"] {
            for entry in fs::read_dir(tree.join(junk))?.flatten() {
                if entry.file_type()?.is_file() {
                    fs::remove_file(entry.path())?;
                }
            }
        }
        run(Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&tree)
            .args(["-cf"])
            .arg(out.join("rootfs.tar"))
            .arg("."))
    })();
    remove_tree()?;
    result
}

/// Unmounts every mount point at or below `dir`, deepest first.
fn unmount_under(dir: &Path) -> anyhow::Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        // mountinfo escapes space, tab, newline and backslash as octal.
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in points {
        eprintln!("xtask: unmounting leftover {}", point.display());
        let c_path = std::ffi::CString::new(point.as_os_str().as_encoded_bytes())?;
        // SAFETY: a valid NUL-terminated path; MNT_DETACH has no other
        // preconditions.
        if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } != 0 {
            let err = std::io::Error::last_os_error();
            bail!("unmounting {}: {err}", point.display());
        }
    }
    Ok(())
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether `cmd` exits 0 within `timeout` (it is killed otherwise).
fn answers(cmd: &mut Command, timeout: Duration) -> bool {
    let Ok(mut child) = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

fn ctr(namespace: &str) -> Command {
    let mut cmd = Command::new("ctr");
    cmd.args(["--address", CONTAINERD_SOCKET, "--namespace", namespace]);
    cmd
}

fn containerd_answers() -> bool {
    answers(
        ctr("default").args(["--connect-timeout", "2s", "version"]),
        Duration::from_secs(5),
    )
}

fn docker_answers() -> bool {
    answers(
        Command::new(DOCKER).args(["--host", &format!("unix://{DOCKER_SOCKET}"), "info"]),
        Duration::from_secs(10),
    )
}

/// Pids and command lines of the running processes named `comm`.
fn processes(comm: &str) -> Vec<(i32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let name = fs::read_to_string(e.path().join("comm")).ok()?;
            if name.trim_end() != comm {
                return None;
            }
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

/// The containerd configuration: the CRI plugin on, with the local pause
/// stand-in as sandbox image (nothing can be pulled here), the cgroupfs
/// driver (no systemd), `restrict_oom_score_adj` (the sandbox's -998
/// cannot be set in this environment), and an empty CNI directory: pods
/// use the host network.
fn containerd_config(pause: &str, cni_dir: &Path) -> String {
    format!(
        r#"# Written by `cargo xtask` (xtask/src/setup.rs) for the integration tests.
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  disable_tcp_service = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{}"
"#,
        cni_dir.display()
    )
}

/// Starts `program` detached (own session, stdio to `log`), with a plain
/// environment, and waits until `ready` or the process exits.
fn start_daemon(
    name: &str,
    program: &str,
    args: &[String],
    log: &Path,
    ready: impl Fn() -> bool,
) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    eprintln!(
        "xtask: starting {name}: {program} {}, log in {}",
        args.join(" "),
        log.display()
    );
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // SAFETY: setsid is async-signal-safe; nothing else runs in pre_exec.
    // The daemon outlives xtask, away from its terminal and signals.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    let deadline = Instant::now() + DAEMON_START;
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name} exited at start ({status}); the end of {}:\n{}",
                log.display(),
                tail(log, 30)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{name} (pid {}) did not answer within {DAEMON_START:?}; the end of {}:\n{}",
                child.id(),
                log.display(),
                tail(log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Makes sure containerd answers on its socket with this project's config,
/// restarting one that xtask started with an older config. A containerd
/// started otherwise is not touched: setup stops and says so.
fn start_containerd(dir: &Path, pause: &str) -> anyhow::Result<()> {
    let cni_dir = dir.join("cni");
    fs::create_dir_all(&cni_dir)?;
    let config = containerd_config(pause, &cni_dir);
    let config_path = dir.join(format!("containerd-{}.toml", key(&[config.as_bytes()])));
    fs::write(&config_path, &config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let config_arg = config_path.display().to_string();
    let ours = |cmdline: &str| cmdline.contains(&dir.display().to_string());
    if containerd_answers() {
        let running = processes("containerd");
        if running.iter().any(|(_, c)| c.contains(&config_arg)) {
            return Ok(());
        }
        let stale: Vec<i32> = running
            .iter()
            .filter(|(_, c)| ours(c))
            .map(|(pid, _)| *pid)
            .collect();
        if stale.is_empty() {
            bail!(
                "a containerd that xtask did not start serves {CONTAINERD_SOCKET} \
                 (running: {running:?}); the tests need one with the CRI config in {}: \
                 stop it and run again",
                config_path.display()
            );
        }
        for pid in stale {
            eprintln!("xtask: stopping containerd {pid} (started with an older config)");
            // SAFETY: signalling a containerd this tool started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while alive(pid) {
                if Instant::now() >= deadline {
                    bail!("containerd {pid} did not stop on SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    start_daemon(
        "containerd",
        CONTAINERD,
        &["--config".into(), config_arg],
        &dir.join("containerd.log"),
        containerd_answers,
    )?;
    // Configs of earlier recipes are no longer used by anything.
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("containerd-") && name.ends_with(".toml") && entry.path() != config_path
        {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// Makes sure dockerd answers, starting it without bridge or iptables
/// networking, on the shared containerd, if it does not.
fn start_dockerd(dir: &Path) -> anyhow::Result<()> {
    if docker_answers() {
        if !processes("dockerd")
            .iter()
            .any(|(_, c)| c.contains(&format!("--containerd={CONTAINERD_SOCKET}")))
        {
            eprintln!(
                "xtask: warning: the running dockerd was not started by xtask; \
                 the tests use it as it is"
            );
        }
        return Ok(());
    }
    start_daemon(
        "dockerd",
        DOCKERD,
        &[
            "--bridge=none".into(),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            format!("--containerd={CONTAINERD_SOCKET}"),
        ],
        &dir.join("dockerd.log"),
        docker_answers,
    )
}

/// Hard limit of a resource, capped.
fn hard_limit(resource: libc::__rlimit_resource_t, cap: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return cap;
    }
    limit.rlim_max.min(cap)
}

/// The containers.conf for rootful podman here: the cgroupfs manager and
/// file events (no systemd, no journald), host network, runc, and explicit
/// ulimits no higher than this process's hard limits (podman's defaults
/// would raise them, which is not permitted here; podman also caps its own
/// nproc at 32768).
fn write_containers_conf(dir: &Path) -> anyhow::Result<PathBuf> {
    let nofile = hard_limit(libc::RLIMIT_NOFILE, 1 << 20);
    let nproc = hard_limit(libc::RLIMIT_NPROC, 32768);
    let conf = format!(
        r#"# Written by `cargo xtask` (xtask/src/setup.rs) for the integration tests:
# CONTAINERS_CONF={path}
[containers]
netns = "host"
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
runtime = "runc"
"#,
        path = dir.join("containers.conf").display(),
        events = dir.join("podman-events.log").display(),
    );
    let path = dir.join("containers.conf");
    fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
    if !answers(
        Command::new("podman")
            .arg("info")
            .env("CONTAINERS_CONF", &path),
        Duration::from_secs(60),
    ) {
        bail!(
            "`CONTAINERS_CONF={} podman info` fails: podman is not usable",
            path.display()
        );
    }
    Ok(path)
}

/// Imports the rootfs as the test image (and the CRI pause stand-in) where
/// it is missing: docker, podman, and containerd's two namespaces.
fn import_images(
    rootfs: &Path,
    image: &str,
    pause: &str,
    containers_conf: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let changes = |cmd: &str| {
        [
            "--change".to_owned(),
            format!("ENV {IMAGE_PATH}"),
            "--change".to_owned(),
            format!("CMD {cmd}"),
        ]
    };
    for (name, cmd) in [(image, IMAGE_CMD), (pause, PAUSE_CMD)] {
        if !answers(
            Command::new(DOCKER).args(["image", "inspect", name]),
            Duration::from_secs(30),
        ) {
            eprintln!("xtask: importing {name} into docker");
            run(Command::new(DOCKER)
                .arg("import")
                .args(changes(cmd))
                .arg(rootfs)
                .arg(name)
                .stdout(Stdio::null()))?;
        }
    }
    let podman = || {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", containers_conf);
        cmd
    };
    if !answers(
        podman().args(["image", "exists", image]),
        Duration::from_secs(30),
    ) {
        eprintln!("xtask: importing {image} into podman");
        run(podman()
            .args(["import", "--quiet"])
            .args(changes(IMAGE_CMD))
            .arg(rootfs)
            .arg(image)
            .stdout(Stdio::null()))?;
    }
    // containerd gets docker's images (same ids and config) through a
    // docker-archive, made afresh (one left by a killed run may be stale).
    let archive = dir.join("images.tar");
    if archive.exists() {
        fs::remove_file(&archive)?;
    }
    for namespace in [CTR_NAMESPACE, CRI_NAMESPACE] {
        let listed = ctr(namespace)
            .args(["images", "ls", "--quiet"])
            .output()
            .context("running ctr images ls")?;
        if !listed.status.success() {
            bail!(
                "ctr images ls failed: {}",
                String::from_utf8_lossy(&listed.stderr)
            );
        }
        let listed = String::from_utf8_lossy(&listed.stdout);
        if [image, pause]
            .iter()
            .all(|name| listed.lines().any(|l| l == *name))
        {
            continue;
        }
        if !archive.exists() {
            run(Command::new(DOCKER)
                .args(["save", "--output"])
                .arg(&archive)
                .args([image, pause]))?;
        }
        eprintln!("xtask: importing {image} and {pause} into containerd namespace {namespace}");
        run(ctr(namespace)
            .args(["images", "import"])
            .arg(&archive)
            .stdout(Stdio::null()))?;
    }
    if archive.exists() {
        fs::remove_file(&archive)?;
    }
    Ok(())
}
