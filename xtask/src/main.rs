//! `cargo xtask`: setup, build, run and test orchestration. It installs what
//! the build needs and calls cargo; the kernel programs themselves are built
//! by `sensor/build.rs`, never here.

mod bench;
mod image;
mod package;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Set up, build, run and test the sensor")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain and packages the build needs (idempotent).
    Setup {
        /// Also prepare what the tests need (Python venv, npm modules).
        #[arg(long)]
        tests: bool,
    },
    /// Build the sensor (release) with its kernel programs.
    Build,
    /// Set up, build and run the sensor on this host; arguments after `--`
    /// go to the sensor. Events go to stdout, logs to stderr.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure the sensor's cost, side by side with it off and on; writes
    /// target/bench/report.json and report.md.
    Bench {
        /// One short repetition (CI checks that the benchmark runs).
        #[arg(long)]
        short: bool,
    },
    /// Set up and run the whole test suite: unit tests, then the root
    /// integration tests against real clients.
    Test {
        /// Only the unit tests (no root, no kernel).
        #[arg(long)]
        unit: bool,
        /// Extra arguments for the integration test binaries (a filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the container image `localhost/sensor:<tag>` from the release
    /// binary (stripped) and a slim local Debian base; no registry needed.
    Image {
        /// Image tag (default: the crate version and a short content hash).
        #[arg(long)]
        tag: Option<String>,
    },
    /// Build a release tarball for host installs (binary, systemd unit,
    /// example config, README) in target/package.
    Package,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Setup { tests } => {
            setup::build_tools()?;
            if tests {
                setup::test_tools()?;
            }
            Ok(())
        }
        Cmd::Build => {
            setup::build_tools()?;
            build_release()
        }
        Cmd::Run { args } => {
            setup::build_tools()?;
            build_release()?;
            setup::require_root("running the sensor")?;
            let bin = workspace_root().join("target/release/sensor");
            eprintln!("xtask: starting {}", bin.display());
            use std::os::unix::process::CommandExt as _;
            // Replace this process so Ctrl-C goes straight to the sensor.
            let err = Command::new(&bin).args(args).exec();
            Err(err).with_context(|| format!("executing {}", bin.display()))
        }
        Cmd::Test { unit, args } => test(unit, &args),
        Cmd::Bench { short } => {
            setup::build_tools()?;
            setup::apt_install_bench()?;
            bench::bench(short)
        }
        Cmd::Image { tag } => image::image(tag.as_deref()),
        Cmd::Package => package::package(),
    }
}

fn build_release() -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "--package", "sensor"]))
}

fn test(unit_only: bool, args: &[String]) -> anyhow::Result<()> {
    setup::build_tools()?;
    // Unit tests of every crate (the kernel crate has none: it is built and
    // loaded by the integration tests).
    run(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "sensor-ebpf",
        "--lib",
        "--bins",
    ]))?;
    if unit_only {
        return Ok(());
    }
    setup::require_root("the integration tests")?;
    let env = setup::test_tools()?;
    // The integration tests run the release build: what `cargo xtask run`
    // starts and users deploy (timing-sensitive paths, such as arming a
    // freshly exec'd client, behave as they do in production).
    build_release()?;
    // The container image of that build, for the test that runs it.
    let sensor_image = image::build_image(None)?;
    let root = workspace_root();
    let mut cmd = cargo();
    cmd.args(["test", "--package", "sensor-tests", "--tests", "--"])
        .args(args)
        .env("SENSOR_BIN", root.join("target/release/sensor"))
        .env("SENSOR_TEST_VENV", &env.venv)
        .env("SENSOR_TEST_NODE_DIR", &env.node_dir)
        .env("SENSOR_TEST_IMAGE", &env.runtimes.image)
        .env("SENSOR_TEST_SENSOR_IMAGE", &sensor_image)
        .env("SENSOR_TEST_CONTAINERS_CONF", &env.runtimes.containers_conf);
    run(&mut cmd)
}
