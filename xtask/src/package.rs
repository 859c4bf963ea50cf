//! `cargo xtask package`: a release tarball for host installs,
//! `target/package/sensor-<version>-<arch>-linux.tar.gz`, holding the
//! stripped binary, the systemd unit, an example config and the README,
//! with an install note and SHA-256 sums.

use std::{fs, path::Path, process::Command};

use anyhow::Context as _;

use crate::{run, setup, workspace_root};

pub fn package() -> anyhow::Result<()> {
    let root = workspace_root();
    let bin = root.join("target/release/sensor");
    setup::build_tools()?;
    crate::build_release()?;
    let version = env!("CARGO_PKG_VERSION");
    let arch = std::env::consts::ARCH;
    let name = format!("sensor-{version}-{arch}-linux");
    let out = root.join("target/package");
    let dir = out.join(&name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir.join("bin"))?;
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&bin)
        .arg(dir.join("bin/sensor")))
    .context("stripping the binary (objcopy is in Debian's binutils)")?;
    for (from, to) in [
        ("deploy/systemd/sensor.service", "systemd/sensor.service"),
        ("deploy/systemd/sensor.toml", "sensor.toml.example"),
        ("README.md", "README.md"),
        ("sensor/schema/event.schema.json", "event.schema.json"),
    ] {
        copy(&root.join(from), &dir.join(to))?;
    }
    fs::write(
        dir.join("INSTALL"),
        format!(
            "sensor {version}\n\n\
             install -m 0755 bin/sensor /usr/local/bin/sensor\n\
             install -d -m 0755 /etc/sensor\n\
             install -m 0644 sensor.toml.example /etc/sensor/sensor.toml   # then edit it\n\
             install -m 0644 systemd/sensor.service /etc/systemd/system/sensor.service\n\
             sensor check                      # what this host offers; fix any FAIL\n\
             systemctl daemon-reload && systemctl enable --now sensor\n\n\
             See README.md (Deploy) for the details.\n"
        ),
    )?;
    // Checksums of the files inside, and of the tarball next to it.
    let sums = Command::new("sha256sum")
        .current_dir(&dir)
        .args([
            "bin/sensor",
            "systemd/sensor.service",
            "sensor.toml.example",
            "README.md",
            "event.schema.json",
            "INSTALL",
        ])
        .output()
        .context("sha256sum")?;
    anyhow::ensure!(sums.status.success(), "sha256sum failed");
    fs::write(dir.join("SHA256SUMS"), &sums.stdout)?;
    let tarball = out.join(format!("{name}.tar.gz"));
    run(Command::new("tar")
        .current_dir(&out)
        .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
        .arg(&tarball)
        .arg(&name))?;
    let sum = Command::new("sha256sum")
        .current_dir(&out)
        .arg(tarball.file_name().unwrap_or_default())
        .output()
        .context("sha256sum")?;
    fs::write(out.join(format!("{name}.tar.gz.sha256")), &sum.stdout)?;
    let size = fs::metadata(&tarball)?.len();
    eprintln!(
        "xtask: wrote {} ({:.1} MB) and its .sha256",
        tarball.display(),
        size as f64 / 1e6
    );
    Ok(())
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}
