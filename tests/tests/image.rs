//! The container image (`cargo xtask image`, built by `cargo xtask test`
//! and named in SENSOR_TEST_SENSOR_IMAGE): `sensor check` passes inside a
//! privileged container, and the sensor runs there, sees host processes,
//! and stops cleanly. Privileged containers are run with podman: docker
//! cannot start one on a host whose root lacks CAP_SYS_RESOURCE (as on the
//! test VM). Docker runs it with the exact capabilities the DaemonSet
//! grants.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sensor_tests::{WAIT, expect_success, require_root, runtime::podman, unique};

fn image() -> String {
    std::env::var("SENSOR_TEST_SENSOR_IMAGE")
        .expect("SENSOR_TEST_SENSOR_IMAGE (set by `cargo xtask test`)")
}

/// What the sensor needs from the host, as the README's `docker run`.
const MOUNTS: [&str; 4] = [
    "-v",
    "/sys/kernel/tracing:/sys/kernel/tracing:ro",
    "-v",
    "/:/host:ro",
];

/// The image in podman's store too (it is built with docker).
fn podman_image() -> String {
    let name = image();
    let mut save = Command::new("/usr/bin/docker")
        .args(["save", &name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = podman()
        .arg("load")
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(save.wait().unwrap().success(), "docker save {name}");
    expect_success(&load);
    name
}

#[test]
fn check_passes_and_the_sensor_runs_in_a_privileged_container() {
    require_root();
    let image = podman_image();
    let out = podman()
        .args(["run", "--rm", "--privileged", "--pid=host"])
        .args(MOUNTS)
        .arg(&image)
        .args(["--host-root", "/host", "check"])
        .output()
        .unwrap();
    let text = expect_success(&out);
    for want in [
        "PASS  tracepoints",
        "PASS  uprobes: host",
        "PASS  capabilities kept",
        "PASS  container runtimes",
        "the sensor can run on this host",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }

    // The daemon itself: ready, sees a host process, stops cleanly.
    let name = format!("sensor-image-{}", unique());
    let started = podman()
        .args(["run", "-d", "--name", &name, "--privileged", "--pid=host"])
        .args(MOUNTS)
        .arg(&image)
        .args([
            "--host-root",
            "/host",
            "--events",
            "process_exec,sensor_health",
        ])
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let logs = || {
        let out = podman().args(["logs", &name]).output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let wait = |what: &str, pred: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + WAIT;
        loop {
            let (stdout, stderr) = logs();
            if pred(&stdout) {
                return stdout;
            }
            assert!(
                Instant::now() < deadline,
                "no {what}; stdout:\n{stdout}\nstderr:\n{stderr}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("ready event", &|s| s.contains("\"status\":\"ready\""));
    let marker = format!("image-marker-{}", unique());
    assert!(
        Command::new("/bin/sh")
            .args(["-c", "exit 0", &marker])
            .status()
            .unwrap()
            .success()
    );
    wait("process_exec of a host process", &|s| {
        s.lines()
            .any(|l| l.contains("\"process_exec\"") && l.contains(&marker))
    });
    let stop = podman()
        .args(["stop", "--time", "60", &name])
        .output()
        .unwrap();
    assert!(stop.status.success());
    let code = podman()
        .args(["inspect", "--format", "{{.State.ExitCode}}", &name])
        .output()
        .unwrap();
    let (stdout, stderr) = logs();
    let _ = podman().args(["rm", "-f", &name]).output();
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "exit code; stderr:\n{stderr}"
    );
    assert!(stdout.contains("\"status\":\"stopped\""), "{stdout}");
    assert!(stdout.contains("\"sensor_checkpoint\""), "{stdout}");
    // The copy in podman's store (docker keeps the original).
    let _ = podman().args(["rmi", &image]).output();
}

#[test]
fn check_passes_in_docker_with_the_daemonsets_capabilities() {
    require_root();
    // docker 20.10 does not know CAP_BPF and CAP_PERFMON: SYS_ADMIN stands
    // in for them (see the README).
    let out = Command::new("/usr/bin/docker")
        .args(["run", "--rm", "--pid=host", "--cap-drop", "ALL"])
        .args(["--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE"])
        .args(["--cap-add", "DAC_READ_SEARCH", "--cap-add", "SETPCAP"])
        .args(["--security-opt", "apparmor=unconfined"])
        .args(MOUNTS)
        .arg(image())
        .args(["--host-root", "/host", "check"])
        .output()
        .unwrap();
    let text = expect_success(&out);
    assert!(text.contains("PASS  uprobes: host"), "{text}");
}
