//! Installing what the build and the tests need, idempotently, on Debian.
//! Where something is missing and cannot be installed (not Debian, not
//! root), fail and say what is missing and how to get it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
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
    Ok(TestEnv { venv, node_dir })
}
