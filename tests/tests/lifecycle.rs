//! The sensor's own life: it loads and attaches its programs, reports
//! health, and on SIGINT stops cleanly with every program detached.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{collections::BTreeSet, process::Command};

use sensor_tests::{FakeApi, Sensor, WAIT, action, fake_key, run_client};
use serde_json::Value;

/// Ids of the BPF programs whose fds process `pid` holds, from
/// `/proc/<pid>/fdinfo` (each program fd lists its `prog_id`).
fn programs_of(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix("prog_id:")) {
            ids.insert(id.trim().parse().unwrap());
        }
    }
    ids
}

/// Ids of every program loaded in the kernel.
fn all_programs() -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool (cargo xtask setup --tests installs it)");
    assert!(
        out.status.success(),
        "bpftool prog show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: Value = serde_json::from_slice(&out.stdout).unwrap();
    progs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

#[test]
fn starts_reports_and_detaches_everything_on_sigint() {
    let sensor = Sensor::start("lifecycle", &[]);
    let ready = sensor.events(|e| action(e) == "sensor_health" && e["sensor"]["status"] == "ready");
    let ready = &ready[0];
    // The host's libssl is probed with all four functions.
    let probed = ready["sensor"]["tls"]["files_probed"].as_array().unwrap();
    assert!(
        probed
            .iter()
            .any(|f| f["path"].as_str().unwrap().contains("libssl.so")
                && f["functions"].as_array().unwrap().len() == 4),
        "libssl not probed: {ready}"
    );
    assert_eq!(ready["sensor"]["kernel"]["ringbuf_drops"], 0);
    let mine = programs_of(sensor.pid());
    // 30 tracepoints and 10 uprobe programs (OpenSSL's four entries,
    // NSPR's two, one return, Go's three).
    assert_eq!(mine.len(), 40, "programs held by the sensor: {mine:?}");

    // Periodic health keeps coming.
    let running = sensor.wait_for(WAIT, |e| {
        action(e) == "sensor_health" && e["sensor"]["status"] == "running"
    });
    assert!(running.is_some(), "no periodic health event");

    let status = sensor.stop();
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{}",
        sensor.stderr_text()
    );
    let stopped = sensor.wait_for(WAIT, |e| {
        action(e) == "sensor_health" && e["sensor"]["status"] == "stopped"
    });
    assert!(stopped.is_some(), "no final health event");
    assert!(sensor.stderr_text().contains("all probes detached"));
    let left: BTreeSet<u64> = all_programs().intersection(&mine).copied().collect();
    assert!(
        left.is_empty(),
        "programs still loaded after stop: {left:?}"
    );
}

#[test]
fn refuses_a_bad_config_with_a_clear_error() {
    sensor_tests::require_root();
    let dir = sensor_tests::scratch("badconfig");
    let file = dir.join("sensor.toml");
    std::fs::write(&file, "ring_buffer_bytes = 1000\n").unwrap();
    let out = Command::new(std::env::var_os("SENSOR_BIN").expect("SENSOR_BIN"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ring_buffer_bytes"), "{err}");
    assert!(out.stdout.is_empty());
}

/// A ring buffer too small for a TLS record (one page, records of up to
/// 16 KiB): every large record is lost, and the loss must be counted and
/// reported, never silent.
#[test]
fn a_full_ring_buffer_is_counted_and_reported() {
    let sensor = Sensor::start("tiny-ring", &["--ring-buffer-bytes", "4096"]);
    let api = FakeApi::start("tiny-ring");
    let key = fake_key("ring");
    let body = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "y".repeat(40_000)
    );
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-o", "/dev/null", "--cacert"])
        .arg(&api.ca)
        .args(["-H", &format!("Authorization: Bearer {key}"), "-d", &body])
        .arg(format!("{}/chat/completions", api.openai_base()));
    // A ring this small may overflow before the client runs (the records
    // of every process on the host go through it): count from here.
    let drops = |e: &serde_json::Value| e["sensor"]["kernel"]["ringbuf_drops"].as_u64();
    let before = sensor
        .events(|e| action(e) == "sensor_health")
        .iter()
        .filter_map(drops)
        .max()
        .unwrap_or(0);
    run_client(curl);
    let degraded = sensor.wait_for(WAIT, |e| {
        action(e) == "sensor_health"
            && e["sensor"]["status"] == "degraded"
            && drops(e).is_some_and(|d| d > before)
    });
    degraded.expect("no degraded sensor_health event reported the lost records");
    assert!(sensor.stderr_text().contains("records lost"));
    sensor.assert_never_printed(&key);
}

/// Without the capabilities to load BPF programs the sensor refuses to
/// start and says what it needs, rather than running blind.
#[test]
fn refuses_to_start_without_bpf_capabilities() {
    sensor_tests::require_root();
    let dir = sensor_tests::scratch("nocaps");
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin,-bpf,-perfmon", "--"])
        .arg(std::env::var_os("SENSOR_BIN").expect("SENSOR_BIN"))
        .arg("--fingerprint-key-file")
        .arg(dir.join("key"))
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// The running sensor keeps only the capabilities it needs, in every
/// thread, and cannot regain others (no_new_privs, bounding set).
#[test]
fn runs_with_only_the_capabilities_it_needs() {
    let sensor = sensor_tests::Sensor::start("caps", &[]);
    let pid = sensor.pid();
    let expected = sensor::caps::needed()
        .iter()
        .fold(0u64, |m, c| m | (1u64 << c));
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(tasks.len() >= 2, "the sensor runs several threads");
    for task in tasks {
        let status = task.join("status");
        let status = status.to_str().unwrap();
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(
                sensor::caps::read_set(status, set),
                Some(expected),
                "{set} of {status}"
            );
        }
        assert_eq!(sensor::caps::read_set(status, "CapInh"), Some(0));
        assert_eq!(sensor::caps::read_set(status, "CapAmb"), Some(0));
        let text = std::fs::read_to_string(status).unwrap();
        assert!(text.contains("NoNewPrivs:\t1"), "{status}");
    }
    // Still working after the drop: an exec is seen and attributed.
    sensor.barrier();
}

#[test]
fn check_reports_a_host_that_can_run_the_sensor_and_one_that_cannot() {
    sensor_tests::require_root();
    let dir = sensor_tests::scratch("check");
    let bin = std::env::var_os("SENSOR_BIN").expect("SENSOR_BIN");
    let keys = [
        "--fingerprint-key-file",
        dir.join("f.key").to_str().unwrap(),
        "--integrity-key-file",
        dir.join("i.key").to_str().unwrap(),
    ]
    .map(str::to_owned);
    let out = Command::new(&bin)
        .arg("check")
        .args(&keys)
        .output()
        .unwrap();
    let text = sensor_tests::expect_success(&out);
    for want in [
        "PASS  kernel",
        "PASS  btf",
        "PASS  tracepoints",
        "PASS  ring buffer",
        "PASS  uprobes: host",
        "libssl.so.3",
        "PASS  cgroups",
        "the sensor can run on this host",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // Without the BPF capabilities: a FAIL with its fix, exit 1, and
    // nothing loaded.
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin,-bpf,-perfmon", "--"])
        .arg(&bin)
        .args(&keys)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  capabilities: bpf"), "{text}");
    assert!(text.contains("fix: run as root"), "{text}");
    assert!(
        text.contains("FAIL  kernel programs") && text.contains("not tried"),
        "{text}"
    );
}
