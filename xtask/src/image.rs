//! `cargo xtask image`: the sensor's container image, built locally with no
//! registry. The base is a slim Debian bookworm root filesystem (glibc,
//! libgcc, CA certificates, base-files; no shell, no package manager) cut
//! out of the debootstrap root filesystem the container tests already use,
//! and imported as `localhost/sensor-base:<hash>`. The sensor binary is the
//! release build with its debug information stripped, in a build context of
//! its own under `target/image/`; `deploy/image/Dockerfile` puts the two
//! together.

use std::{
    collections::{BTreeSet, HashSet},
    fs,
    io::Write as _,
    path::{Component, Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::{run, setup, workspace_root};

/// The Debian package's docker CLI: another one may come first in PATH.
const DOCKER: &str = "/usr/bin/docker";
const IMAGE_REPO: &str = "localhost/sensor";
const BASE_REPO: &str = "localhost/sensor-base";
/// Debian packages whose files make the base: what the dynamically linked
/// sensor loads (`ldd`: libc, libm, libgcc_s, the loader), the CA bundle
/// its TLS sinks trust by default, and base-files (os-release, for image
/// scanners and humans). A package missing from the root filesystem is an
/// error, except the optional ones.
const BASE_PACKAGES: &[&str] = &["libc6", "libgcc-s1", "ca-certificates", "base-files"];
const OPTIONAL_BASE_PACKAGES: &[&str] = &["netbase"];
/// Files outside any package list that the base keeps: users and groups
/// (uid 0 has a name), name service order, the generated CA bundle and its
/// hash links.
const BASE_EXTRA: &[&str] = &[
    "etc/passwd",
    "etc/group",
    "etc/nsswitch.conf",
    "etc/ssl",
    "tmp",
    "root",
    "run",
    "var/lib/dpkg/status",
];
/// Package files the sensor never reads: documentation (each package's
/// `copyright` is kept), translations, locales, and glibc's iconv modules
/// (8 MB; Rust does not use iconv).
const BASE_EXCLUDE_PREFIXES: &[&str] = &[
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/lintian/",
    "usr/share/locale/",
    "usr/share/i18n/",
];
const BASE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Bump when the way the base is cut changes (part of its tag).
const BASE_RECIPE: &str = "1";

/// `cargo xtask image`: builds the image and prints its name on stdout.
pub fn image(tag: Option<&str>) -> anyhow::Result<()> {
    let name = build_image(tag)?;
    // The name alone on stdout: `IMAGE=$(cargo xtask image)`.
    writeln!(std::io::stdout().lock(), "{name}").context("writing to stdout")?;
    Ok(())
}

/// Builds `localhost/sensor:<tag>` (default: the crate version and a short
/// hash of what went into the image), reports its id and size on stderr,
/// and returns its name.
pub fn build_image(tag: Option<&str>) -> anyhow::Result<String> {
    setup::require_root("building the image (docker)")?;
    let root = workspace_root();
    let bin = root.join("target/release/sensor");
    if !bin.exists() {
        eprintln!("xtask: {} is missing: building it", bin.display());
        setup::build_tools()?;
        crate::build_release()?;
    }
    // Makes sure dockerd answers and the test root filesystem is imported
    // (cached: seconds when it is there, a debootstrap run when not).
    let env = setup::runtimes()?;
    let base = base_image(&env.image, &root.join("target/image/base"))?;

    // A build context of its own: the stripped binary and the default
    // config, at the paths they have in the repository, so the Dockerfile
    // also builds from the repository root.
    let context = root.join("target/image/context");
    if context.exists() {
        fs::remove_dir_all(&context).with_context(|| format!("removing {}", context.display()))?;
    }
    let ctx_bin = context.join("target/release/sensor");
    fs::create_dir_all(ctx_bin.parent().unwrap_or(&context))?;
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&bin)
        .arg(&ctx_bin))
    .context("stripping the sensor's debug information (objcopy is in Debian's binutils)")?;
    let image_dir = root.join("deploy/image");
    let dockerfile = image_dir.join("Dockerfile");
    let config =
        fs::read(image_dir.join("sensor.toml")).context("reading deploy/image/sensor.toml")?;
    fs::create_dir_all(context.join("deploy/image"))?;
    fs::write(context.join("deploy/image/sensor.toml"), &config)?;

    let base_id = image_id(&base)?;
    let stripped = fs::read(&ctx_bin)?;
    let dockerfile_text = fs::read(&dockerfile).context("reading deploy/image/Dockerfile")?;
    let version = env!("CARGO_PKG_VERSION");
    let tag = match tag {
        Some(t) => t.to_owned(),
        None => format!(
            "{version}-{}",
            hash(&[&stripped, &dockerfile_text, &config, base_id.as_bytes()])
        ),
    };
    let name = format!("{IMAGE_REPO}:{tag}");
    let revision = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    eprintln!(
        "xtask: building {name} (binary {} MB stripped, base {base})",
        stripped.len() / 1_000_000
    );
    run(Command::new(DOCKER)
        .arg("build")
        .arg("--file")
        .arg(&dockerfile)
        .args(["--build-arg", &format!("BASE={base}")])
        .args(["--build-arg", &format!("VERSION={version}")])
        .args(["--build-arg", &format!("REVISION={revision}")])
        .args(["--tag", &name])
        .arg(&context)
        // The unused stage that compiles from source names an image that
        // cannot be pulled here; BuildKit skips it, the legacy builder
        // would not.
        .env("DOCKER_BUILDKIT", "1"))?;
    let id = image_id(&name)?;
    let size: u64 = inspect(&name, "{{.Size}}")?.parse().unwrap_or(0);
    let base_size: f64 = inspect(&base, "{{.Size}}")?.parse().unwrap_or(0.0);
    eprintln!("xtask: built {name}");
    eprintln!("xtask:   id   {id}");
    eprintln!(
        "xtask:   size {:.1} MB ({size} bytes; the base {:.1} MB)",
        size as f64 / 1e6,
        base_size / 1e6
    );
    Ok(name)
}

fn inspect(image: &str, format: &str) -> anyhow::Result<String> {
    let out = Command::new(DOCKER)
        .args(["image", "inspect", "--format", format, image])
        .output()
        .context("running docker image inspect")?;
    if !out.status.success() {
        bail!(
            "docker image inspect {image}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn image_id(image: &str) -> anyhow::Result<String> {
    inspect(image, "{{.Id}}")
}

fn image_exists(image: &str) -> bool {
    Command::new(DOCKER)
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `localhost/sensor-base:<hash>` (also tagged `latest`), cut from the
/// test image `debian` and keyed by its id and this recipe: made once,
/// reused after.
fn base_image(debian: &str, work: &Path) -> anyhow::Result<String> {
    let debian_id = image_id(debian)?;
    let tag = hash(&[
        debian_id.as_bytes(),
        BASE_RECIPE.as_bytes(),
        BASE_PACKAGES.join(",").as_bytes(),
        OPTIONAL_BASE_PACKAGES.join(",").as_bytes(),
        BASE_EXTRA.join(",").as_bytes(),
        BASE_EXCLUDE_PREFIXES.join(",").as_bytes(),
        BASE_PATH.as_bytes(),
    ]);
    let name = format!("{BASE_REPO}:{tag}");
    if !image_exists(&name) {
        eprintln!("xtask: making the base image {name} from {debian}");
        if work.exists() {
            fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
        }
        fs::create_dir_all(work)?;
        let result = make_base(debian, &name, work);
        let _ = fs::remove_dir_all(work);
        result?;
    }
    run(Command::new(DOCKER).args(["tag", &name, &format!("{BASE_REPO}:latest")]))?;
    Ok(name)
}

fn make_base(debian: &str, name: &str, work: &Path) -> anyhow::Result<()> {
    // The image's root filesystem, through a container that never runs.
    let created = Command::new(DOCKER)
        .args(["create", debian, "/bin/true"])
        .output()
        .context("running docker create")?;
    if !created.status.success() {
        bail!(
            "docker create {debian}: {}",
            String::from_utf8_lossy(&created.stderr).trim()
        );
    }
    let cid = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let full = work.join("full.tar");
    let exported = run(Command::new(DOCKER)
        .args(["export", "--output"])
        .arg(&full)
        .arg(&cid));
    let _ = Command::new(DOCKER)
        .args(["rm", &cid])
        .stdout(Stdio::null())
        .status();
    exported?;
    let tree = work.join("tree");
    fs::create_dir_all(&tree)?;
    run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-xf")
        .arg(&full)
        .arg("-C")
        .arg(&tree))?;
    fs::remove_file(&full)?;

    let mut keep = BTreeSet::new();
    let mut packages = Vec::new();
    for (package, required) in BASE_PACKAGES
        .iter()
        .map(|p| (*p, true))
        .chain(OPTIONAL_BASE_PACKAGES.iter().map(|p| (*p, false)))
    {
        let info = tree.join("var/lib/dpkg/info");
        let list = [format!("{package}.list"), format!("{package}:amd64.list")]
            .into_iter()
            .chain(
                fs::read_dir(&info)?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("{package}:")) && n.ends_with(".list")),
            )
            .map(|n| info.join(n))
            .find(|p| p.exists());
        let Some(list) = list else {
            if required {
                bail!("package {package} is not in {debian}: the base cannot be made");
            }
            continue;
        };
        packages.push(package);
        for line in fs::read_to_string(&list)?.lines() {
            let rel = line.trim_start_matches('/');
            if rel.is_empty() || rel == "." {
                continue;
            }
            let keep_doc = rel.starts_with("usr/share/doc/") && rel.ends_with("/copyright");
            if !keep_doc && BASE_EXCLUDE_PREFIXES.iter().any(|p| rel.starts_with(p)) {
                continue;
            }
            if rel.split('/').any(|c| c == "gconv") {
                continue;
            }
            add(&tree, Path::new(rel), &mut keep)?;
        }
    }
    // The merged-/usr links (the loader's path is /lib64/...).
    for link in ["bin", "sbin", "lib", "lib64"] {
        if tree.join(link).is_symlink() {
            keep.insert(PathBuf::from(link));
        }
    }
    // Only the kept packages in dpkg's status, for image scanners.
    let status = fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap_or_default();
    let wanted: HashSet<&str> = packages.iter().copied().collect();
    let stanzas: Vec<&str> = status
        .split("\n\n")
        .filter(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Package: "))
                .is_some_and(|p| wanted.contains(p.trim()))
        })
        .collect();
    fs::write(
        tree.join("var/lib/dpkg/status"),
        stanzas.join("\n\n") + "\n",
    )?;
    for extra in BASE_EXTRA {
        if tree.join(extra).symlink_metadata().is_ok() {
            add_tree(&tree, Path::new(extra), &mut keep)?;
        }
    }

    let list = work.join("files");
    let mut text = String::new();
    for path in &keep {
        text.push_str("./");
        text.push_str(
            path.to_str()
                .context("non-UTF-8 path in the root filesystem")?,
        );
        text.push('\n');
    }
    fs::write(&list, text)?;
    let slim = work.join("base.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--no-recursion", "-C"])
        .arg(&tree)
        .arg("-cf")
        .arg(&slim)
        .arg("-T")
        .arg(&list))?;
    run(Command::new(DOCKER)
        .arg("import")
        .args(["--change", &format!("ENV {BASE_PATH}")])
        .args([
            "--message",
            "sensor base: Debian files of libc6 libgcc-s1 ca-certificates base-files",
        ])
        .arg(&slim)
        .arg(name)
        .stdout(Stdio::null()))
}

/// Adds `rel` (its parent directories resolved through the tree's own
/// symlinks, so `lib64/ld-linux-x86-64.so.2` lands in `usr/lib64`) and its
/// ancestors. Paths that do not exist are skipped (dpkg lists diversions'
/// originals, for one).
fn add(tree: &Path, rel: &Path, keep: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let Some(file) = rel.file_name() else {
        return Ok(());
    };
    let path = resolve(tree, parent)?.join(file);
    if tree.join(&path).symlink_metadata().is_err() {
        return Ok(());
    }
    let mut ancestor = path.parent();
    while let Some(a) = ancestor {
        if a.as_os_str().is_empty() {
            break;
        }
        keep.insert(a.to_path_buf());
        ancestor = a.parent();
    }
    keep.insert(path);
    Ok(())
}

/// `add` for `rel` and, if it is a directory, everything below it.
fn add_tree(tree: &Path, rel: &Path, keep: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
    add(tree, rel, keep)?;
    let full = tree.join(rel);
    if full.is_dir() && !full.is_symlink() {
        for entry in fs::read_dir(&full)?.flatten() {
            add_tree(tree, &rel.join(entry.file_name()), keep)?;
        }
    }
    Ok(())
}

/// `rel` with every symlink among its components followed inside `tree`
/// (relative targets only: the merged-/usr links are relative).
fn resolve(tree: &Path, rel: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    let mut pending: Vec<PathBuf> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(next) = pending.pop() {
        if next.as_os_str() == ".." {
            out.pop();
            continue;
        }
        let candidate = out.join(&next);
        let full = tree.join(&candidate);
        if full.is_symlink() {
            hops += 1;
            if hops > 40 {
                bail!("symlink loop at {}", candidate.display());
            }
            let target = fs::read_link(&full)?;
            if target.is_absolute() {
                out = PathBuf::new();
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => pending.push(PathBuf::from(n)),
                    Component::ParentDir => pending.push(PathBuf::from("..")),
                    _ => {}
                }
            }
        } else {
            out = candidate;
        }
    }
    Ok(out)
}
