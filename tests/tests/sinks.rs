//! Sinks, with real receivers: files with rotation checked by `sensor
//! verify` (which must pinpoint a deleted line and an edited field), HTTP
//! receivers playing Splunk HEC, Elasticsearch `_bulk` and an NDJSON
//! webhook over TLS through an outage and through a SIGKILL of the sensor,
//! syslog into a real rsyslog, and OCSF output checked against the
//! published schema.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use sensor_tests::{
    FakeApi, Sensor, WAIT, action, receiver::Receiver, rsyslog::Rsyslog, run_client, scratch,
    secret_file, unique, venv_python, workspace,
};
use serde_json::Value;

const CHAT: &str = "/chat/completions";

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("sensor.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// `n` chat completions by curl, models `<tag>-<i>`; waits for their
/// events on the sensor's stdout and returns their `event.id`s in order.
fn model_calls(
    sensor: &Sensor,
    api: &FakeApi,
    tag: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let url = format!("{}{CHAT}", api.openai_base());
    for i in range.clone() {
        let body =
            format!(r#"{{"model":"{tag}-{i}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        run_client({
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--fail-with-body", "--cacert"])
                .arg(&api.ca)
                .args([
                    "-H",
                    "Authorization: Bearer sk-test-sinks",
                    "-H",
                    "content-type: application/json",
                ])
                .args(["-d", &body, &url]);
            cmd
        });
    }
    let want = |e: &Value| {
        action(e) == "model_call"
            && e["gen_ai"]["request"]["model"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("{tag}-")))
    };
    let events = sensor.wait_for_n(WAIT, range.end, want);
    assert!(
        events.len() >= range.end,
        "{} of {} model calls seen; stderr:\n{}",
        events.len(),
        range.end,
        sensor.stderr_text()
    );
    events
        .iter()
        .skip(range.start)
        .map(|e| e["event"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn verify(files: &[PathBuf], key: &Path) -> (i32, String) {
    let out = Command::new(sensor_bin())
        .arg("verify")
        .arg("--key-file")
        .arg(key)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Copies `files` into `to`, keeping their names and order.
fn copy_all(files: &[PathBuf], to: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(to).unwrap();
    files
        .iter()
        .map(|f| {
            let copy = to.join(f.file_name().unwrap());
            std::fs::copy(f, &copy).unwrap();
            copy
        })
        .collect()
}

fn sensor_bin() -> PathBuf {
    PathBuf::from(std::env::var("SENSOR_BIN").expect("SENSOR_BIN"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn file_sink_rotates_and_verify_pinpoints_a_deleted_line_and_an_edited_field() {
    let api = FakeApi::start("sinks-file");
    let dir = scratch("sinks-file");
    let out = dir.join("out/events.jsonl");
    let config = write_config(
        &dir,
        &format!(
            r#"
[[sinks]]
name = "stdout"
type = "stdout"

[[sinks]]
name = "file"
type = "file"
path = "{}"
rotate_bytes = 16384
retain = 100
events = ["model_call", "connect"]
"#,
            out.display()
        ),
    );
    let sensor = Sensor::start("sinks-file", &["--config", config.to_str().unwrap()]);
    let tag = format!("file-{}", unique());
    let ids = model_calls(&sensor, &api, &tag, 0..20);
    assert!(sensor.stop().success());
    let key = sensor.dir.join("integrity.key");

    let mut files = sensor::sink::file::rotated_files(&out);
    assert!(files.len() >= 2, "no rotation happened: {files:?}");
    files.push(out.clone());
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let records: Vec<Value> = files
        .iter()
        .flat_map(|f| lines(f))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    // Every model call once, in order; the file ends with the checkpoint.
    let got: Vec<&str> = records
        .iter()
        .filter(|r| action(r) == "model_call")
        .map(|r| r["event"]["id"].as_str().unwrap())
        .filter(|id| ids.iter().any(|x| x == id))
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        records
            .iter()
            .all(|r| ["model_call", "connect", "sensor_checkpoint"].contains(&action(r)))
    );
    let last = records.last().unwrap();
    assert_eq!(action(last), "sensor_checkpoint");
    assert_eq!(
        last["sensor"]["checkpoint"]["records"].as_u64(),
        Some(records.len() as u64 - 1)
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["event"]["sequence"].as_u64(), Some(i as u64 + 1));
    }

    let (code, report) = verify(&files, &key);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("chain intact") && report.contains("ends with a checkpoint"),
        "{report}"
    );

    // One line deleted: the gap is reported where it shows.
    let copies = copy_all(&files, &dir.join("deleted"));
    let victim = &copies[1];
    let mut content = lines(victim);
    assert!(content.len() >= 3);
    let deleted_seq =
        serde_json::from_str::<Value>(&content[1]).unwrap()["event"]["sequence"].clone();
    content.remove(1);
    std::fs::write(victim, content.join("\n") + "\n").unwrap();
    let (code, report) = verify(&copies, &key);
    assert_eq!(code, 1, "{report}");
    let first = report.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{}:2: Gap", victim.display())),
        "first problem should be the gap at line 2 of {}: {report}",
        victim.display()
    );
    assert!(
        first.contains(&format!("sequence {deleted_seq} to {deleted_seq}")),
        "{first}"
    );

    // One field edited: that record no longer matches its hash.
    let copies = copy_all(&files, &dir.join("edited"));
    let victim = &copies[0];
    let mut content = lines(victim);
    let n = content
        .iter()
        .position(|l| l.contains("\"model_call\""))
        .expect("a model_call in the first file");
    let mut record: Value = serde_json::from_str(&content[n]).unwrap();
    record["gen_ai"]["request"]["model"] = Value::from("a-different-model");
    content[n] = serde_json::to_string(&record).unwrap();
    std::fs::write(victim, content.join("\n") + "\n").unwrap();
    let (code, report) = verify(&copies, &key);
    assert_eq!(code, 1, "{report}");
    let first = report.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{}:{}: Altered", victim.display(), n + 1)),
        "{report}"
    );
    // Without the key the edit cannot be seen, and verify says so.
    let out = Command::new(sensor_bin())
        .arg("verify")
        .arg("--key-file")
        .arg(dir.join("no-such-key"))
        .args(&copies)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn http_sinks_deliver_every_record_once_in_order_through_an_outage() {
    let api = FakeApi::start("sinks-http");
    let dir = scratch("sinks-http");
    let token = format!("hec-token-{}", unique());
    let mut receiver = Receiver::start(
        Some((&api.dir.join("server.pem"), &api.dir.join("server.key"))),
        &token,
    );
    let token_file = secret_file(&dir, "hec.token", &format!("{token}\n"));
    let headers_file = secret_file(&dir, "es.headers", "Authorization: ApiKey c2VjcmV0\n");
    let base = format!("https://127.0.0.1:{}", receiver.port);
    let common = format!(
        "ca_file = \"{}\"\nbatch_max_delay_ms = 100\nretry_initial_ms = 100\nretry_max_ms = 800\nevents = [\"model_call\"]",
        api.ca.display()
    );
    let config = write_config(
        &dir,
        &format!(
            r#"
spool_dir = "{spool}"

[[sinks]]
name = "stdout"
type = "stdout"

[[sinks]]
name = "hec"
type = "http"
api = "splunk_hec"
url = "{base}/services/collector/event"
token_file = "{token_file}"
gzip = true
{common}

[[sinks]]
name = "es"
type = "http"
api = "elasticsearch"
url = "{base}/_bulk"
index = "sensor-it"
headers_file = "{headers_file}"
{common}

[[sinks]]
name = "hook"
type = "http"
api = "ndjson"
url = "{base}/ndjson"
format = "ocsf"
{common}
"#,
            spool = dir.join("spool").display(),
            token_file = token_file.display(),
            headers_file = headers_file.display(),
        ),
    );
    let sensor = Sensor::start("sinks-http", &["--config", config.to_str().unwrap()]);
    let tag = format!("http-{}", unique());
    let mut ids = model_calls(&sensor, &api, &tag, 0..10);
    let first_ten = ids.clone();
    let has = move |got: Vec<&str>| first_ten.iter().all(|id| got.contains(&id.as_str()));
    assert!(
        receiver.wait(WAIT, |r| {
            has(r
                .hec
                .iter()
                .filter_map(|e| e["event"]["id"].as_str())
                .collect())
                && has(r.bulk.iter().map(|(id, _)| id.as_str()).collect())
                && has(r
                    .ndjson
                    .iter()
                    .filter_map(|e| e["metadata"]["uid"].as_str())
                    .collect())
        }),
        "first records not delivered; stderr:\n{}",
        sensor.stderr_text()
    );
    // The outage: the receiver is gone while calls go on.
    receiver.stop();
    ids.extend(model_calls(&sensor, &api, &tag, 10..25));
    std::thread::sleep(Duration::from_secs(3));
    receiver.resume();
    let has_all = |got: Vec<&str>| ids.iter().all(|id| got.contains(&id.as_str()));
    let delivered = receiver.wait(Duration::from_secs(60), |r| {
        has_all(
            r.hec
                .iter()
                .filter_map(|e| e["event"]["id"].as_str())
                .collect(),
        ) && has_all(r.bulk.iter().map(|(id, _)| id.as_str()).collect())
            && has_all(
                r.ndjson
                    .iter()
                    .filter_map(|e| e["metadata"]["uid"].as_str())
                    .collect(),
            )
    });
    let r = receiver.received.lock().unwrap();
    assert!(
        delivered,
        "after the outage: hec {}, bulk {}, ndjson {}; stderr:\n{}",
        r.hec.len(),
        r.bulk.len(),
        r.ndjson.len(),
        sensor.stderr_text()
    );
    // The sensor sees every model call on the host (other tests' too):
    // nothing may arrive twice, and ours must arrive once each, in order.
    let all_hec: Vec<&str> = r
        .hec
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap())
        .collect();
    let all_bulk: Vec<&str> = r.bulk.iter().map(|(id, _)| id.as_str()).collect();
    let all_hook: Vec<&str> = r
        .ndjson
        .iter()
        .map(|e| e["metadata"]["uid"].as_str().unwrap())
        .collect();
    for (name, all) in [
        ("HEC", &all_hec),
        ("bulk", &all_bulk),
        ("webhook", &all_hook),
    ] {
        let unique: std::collections::HashSet<&&str> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "{name}: a record arrived twice");
    }
    let ours = |all: &[&str]| -> Vec<String> {
        all.iter()
            .filter(|id| ids.iter().any(|x| x == *id))
            .map(|id| (*id).to_owned())
            .collect()
    };
    assert_eq!(ours(&all_hec), ids, "HEC: every record once, in order");
    assert_eq!(ours(&all_bulk), ids, "bulk: every record once, in order");
    assert_eq!(ours(&all_hook), ids, "webhook: every record once, in order");
    assert_eq!(r.bulk_conflicts, 0, "bulk: a batch was sent twice");
    for (id, doc) in &r.bulk {
        assert_eq!(doc["event"]["id"].as_str(), Some(id.as_str()));
    }
    assert!(r.gzipped > 0, "HEC batches were not gzipped");
    assert_eq!(r.unauthorized, 0);
    // The HEC stream is a whole chain (the sink's filter: model calls only).
    let key = std::fs::read(sensor.dir.join("integrity.key")).unwrap();
    let report = sensor::sink::verify::verify_lines(
        r.hec
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("hec:{}", i + 1), serde_json::to_vec(e).unwrap())),
        Some(&key),
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    drop(r);
    // The outage was seen and counted, then cleared.
    let health = sensor.wait_for(WAIT, |e| {
        action(e) == "sensor_health"
            && e["sensor"]["sinks"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["name"] == "hec"
                        && s["delivery"]["retries"].as_u64() > Some(0)
                        && s["delivery"]["delivered"].as_u64() >= Some(25)
                })
            })
    });
    assert!(
        health.is_some(),
        "no health event with the hec sink's retries"
    );
    sensor.assert_never_printed(&token);
    sensor.assert_never_printed("c2VjcmV0");
}

#[test]
fn the_spool_is_delivered_after_a_sigkill_during_an_outage() {
    let api = FakeApi::start("sinks-kill");
    let dir = scratch("sinks-kill");
    let mut receiver = Receiver::start(None, "unused");
    receiver.stop();
    let config = write_config(
        &dir,
        &format!(
            r#"
spool_dir = "{}"

[[sinks]]
name = "stdout"
type = "stdout"

[[sinks]]
name = "hook"
type = "http"
api = "ndjson"
url = "http://127.0.0.1:{}/ndjson"
batch_max_delay_ms = 100
retry_initial_ms = 100
retry_max_ms = 500
events = ["model_call"]
"#,
            dir.join("spool").display(),
            receiver.port
        ),
    );
    let first = Sensor::start("sinks-kill-1", &["--config", config.to_str().unwrap()]);
    let tag = format!("kill-{}", unique());
    let ids = model_calls(&first, &api, &tag, 0..8);
    // Let the sender spool them and fail a few times.
    std::thread::sleep(Duration::from_secs(2));
    first.kill();
    receiver.resume();
    let second = Sensor::start("sinks-kill-2", &["--config", config.to_str().unwrap()]);
    let delivered = receiver.wait(Duration::from_secs(30), |r| {
        ids.iter().all(|id| {
            r.ndjson
                .iter()
                .any(|e| e["event"]["id"].as_str() == Some(id))
        })
    });
    assert!(
        delivered,
        "the spool of the killed sensor was not delivered; stderr:\n{}",
        second.stderr_text()
    );
    let r = receiver.received.lock().unwrap();
    let got: Vec<&str> = r
        .ndjson
        .iter()
        .filter_map(|e| e["event"]["id"].as_str())
        .filter(|id| ids.iter().any(|x| x == id))
        .collect();
    assert_eq!(
        got,
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "once each, in order"
    );
}

#[test]
fn syslog_reaches_rsyslog_over_udp_tcp_and_tls() {
    let api = FakeApi::start("sinks-syslog");
    let dir = scratch("sinks-syslog");
    let rsyslog = Rsyslog::start(
        &dir.join("rsyslog"),
        &api.dir.join("server.pem"),
        &api.dir.join("server.key"),
        &api.ca,
    );
    let sink = |name: &str, transport: &str, port: u16, extra: &str| {
        format!(
            "[[sinks]]\nname = \"{name}\"\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\ntransport = \"{transport}\"\napp_name = \"sensor-it\"\nfacility = \"local3\"\nevents = [\"model_call\"]\nretry_initial_ms = 100\n{extra}\n"
        )
    };
    let config = write_config(
        &dir,
        &format!(
            "spool_dir = \"{}\"\n\n[[sinks]]\nname = \"stdout\"\ntype = \"stdout\"\n\n{}\n{}\n{}",
            dir.join("spool").display(),
            sink("udp", "udp", rsyslog.udp_port(), ""),
            sink("tcp", "tcp", rsyslog.tcp_port(), ""),
            sink(
                "tls",
                "tls",
                rsyslog.tls_port(),
                &format!(
                    "ca_file = \"{}\"\nserver_name = \"localhost\"",
                    api.ca.display()
                )
            ),
        ),
    );
    let sensor = Sensor::start("sinks-syslog", &["--config", config.to_str().unwrap()]);
    let tag = format!("syslog-{}", unique());
    let ids = model_calls(&sensor, &api, &tag, 0..5);
    let messages = rsyslog.wait_for(15, Duration::from_secs(30));
    let records: Vec<Value> = messages
        .iter()
        .filter_map(|m| serde_json::from_str(m).ok())
        .collect();
    for id in &ids {
        let n = records
            .iter()
            .filter(|r| r["event"]["id"].as_str() == Some(id))
            .count();
        assert_eq!(
            n,
            3,
            "record {id} should arrive once per transport; got {n}; stderr:\n{}",
            sensor.stderr_text()
        );
    }
    // RFC 5424 headers: <PRI>1 with local3.info = 19*8+6 = 158, the app
    // name and the action as MSGID.
    let raw = rsyslog.raw_lines();
    assert!(
        raw.iter()
            .any(|l| l.contains("sensor-it") && l.contains("model_call")),
        "{raw:?}"
    );
}

#[test]
fn ocsf_output_validates_against_the_published_schema() {
    let api = FakeApi::start("sinks-ocsf");
    let dir = scratch("sinks-ocsf");
    let out = dir.join("ocsf.jsonl");
    let config = write_config(
        &dir,
        &format!(
            "[[sinks]]\nname = \"stdout\"\ntype = \"stdout\"\n\n[[sinks]]\nname = \"ocsf\"\ntype = \"file\"\nformat = \"ocsf\"\npath = \"{}\"\n",
            out.display()
        ),
    );
    let sensor = Sensor::start("sinks-ocsf", &["--config", config.to_str().unwrap()]);
    let tag = format!("ocsf-{}", unique());
    model_calls(&sensor, &api, &tag, 0..3);
    assert!(sensor.stop().success());
    let records: Vec<Value> = lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let classes: std::collections::BTreeSet<u64> = records
        .iter()
        .filter_map(|r| r["class_uid"].as_u64())
        .collect();
    for class in [6003, 4001, 1007, 6002] {
        assert!(classes.contains(&class), "no class {class} in {classes:?}");
    }
    let status = Command::new(venv_python())
        .arg(workspace().join("tests/fixtures/validate_ocsf.py"))
        .args(["--version", "1.8.0", "--strict"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "OCSF output does not validate (see above)"
    );
    let (code, report) = verify(&[out], &sensor.dir.join("integrity.key"));
    assert_eq!(code, 0, "{report}");
}

#[test]
fn a_bad_sink_is_refused_naming_the_sink_and_the_key() {
    let dir = scratch("sinks-bad");
    for (body, expect) in [
        (
            "[[sinks]]\nname = \"f\"\ntype = \"file\"\n",
            "`path` is required",
        ),
        (
            "[[sinks]]\nname = \"h\"\ntype = \"http\"\napi = \"ndjson\"\nurl = \"http://x/\"\npath = \"/x\"\n",
            "`path` does not apply",
        ),
        (
            "[[sinks]]\nname = \"s\"\ntype = \"syslog\"\naddress = \"h:1\"\ntransprt = \"udp\"\n",
            "transprt",
        ),
    ] {
        let config = write_config(&dir, body);
        let out = Command::new(sensor_bin())
            .args(["--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
        assert!(out.stdout.is_empty());
    }
    // A token file others can read is refused.
    let token = dir.join("open.token");
    std::fs::write(&token, "t").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = write_config(
        &dir,
        &format!(
            "spool_dir = \"{}\"\n[[sinks]]\nname = \"h\"\ntype = \"http\"\napi = \"splunk_hec\"\nurl = \"http://127.0.0.1:9/services/collector/event\"\ntoken_file = \"{}\"\n",
            dir.join("spool").display(),
            token.display()
        ),
    );
    let out = Command::new(sensor_bin())
        .args(["--config", config.to_str().unwrap()])
        .args(["--integrity-key-file", dir.join("k").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("accessible to other users"), "{err}");
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// Runs `sh -c 'exit 0' <marker>` and waits for its exec and exit events.
fn marker_process(sensor: &Sensor, marker: &str) {
    assert!(
        Command::new("/bin/sh")
            .args(["-c", "exit 0", marker])
            .status()
            .unwrap()
            .success()
    );
    let mine = |e: &Value| {
        e["process"]["command_line"]
            .as_str()
            .is_some_and(|c| c.contains(marker))
    };
    for what in ["process_exec", "process_exit"] {
        assert!(
            sensor
                .wait_for(WAIT, |e| action(e) == what && mine(e))
                .is_some(),
            "no {what} for {marker}"
        );
    }
}

#[test]
fn metrics_endpoint_and_sighup_reopen_and_reload() {
    let dir = scratch("sinks-hup");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = dir.join("events.jsonl");
    let config_text = |events: &str| {
        format!(
            "metrics_address = \"127.0.0.1:{port}\"\n\n[[sinks]]\nname = \"stdout\"\ntype = \"stdout\"\n\n[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"{}\"\nevents = {events}\n",
            out.display()
        )
    };
    let config = write_config(&dir, &config_text("[\"process_exec\"]"));
    let sensor = Sensor::start("sinks-hup", &["--config", config.to_str().unwrap()]);
    let first = format!("hup-first-{}", unique());
    marker_process(&sensor, &first);

    // The endpoint serves the counters (refreshed every second).
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = scrape(port);
        if text.contains("sensor_sink_records_total{sink=\"file\",type=\"file\"} ")
            && !text.contains("sensor_sink_records_total{sink=\"file\",type=\"file\"} 0\n")
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never showed the file sink:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for name in [
        "sensor_events_total{action=\"process_exec\"}",
        "sensor_ringbuf_drops_total 0",
        "sensor_tls_files_probed ",
        "sensor_parse_errors_total ",
        "# TYPE sensor_sink_queue_depth gauge",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }

    // logrotate-style: the file is moved away, SIGHUP reopens the path;
    // the new config also sends exits to the file.
    let moved = dir.join("events.jsonl.1");
    std::fs::rename(&out, &moved).unwrap();
    std::fs::write(&config, config_text("[\"process_exec\", \"process_exit\"]")).unwrap();
    // SAFETY: signalling the sensor we started.
    unsafe { libc::kill(sensor.pid() as i32, libc::SIGHUP) };
    // The signal is handled on the event loop: wait until it was.
    let deadline = std::time::Instant::now() + WAIT;
    while !sensor.stderr_text().contains("SIGHUP") {
        assert!(std::time::Instant::now() < deadline, "SIGHUP not handled");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = format!("hup-second-{}", unique());
    marker_process(&sensor, &second);
    assert!(sensor.stop().success());
    let old = std::fs::read_to_string(&moved).unwrap();
    let new = std::fs::read_to_string(&out).unwrap();
    assert!(old.contains(&first) && !old.contains(&second));
    assert!(
        !old.contains("\"process_exit\""),
        "exits went to the file before the reload"
    );
    let second_actions: Vec<String> = new
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| {
            e["process"]["command_line"]
                .as_str()
                .is_some_and(|c| c.contains(&second))
        })
        .map(|e| action(&e).to_owned())
        .collect();
    assert!(
        second_actions.contains(&"process_exec".to_owned())
            && second_actions.contains(&"process_exit".to_owned()),
        "{second_actions:?}"
    );
    // One chain across the reopen.
    let (code, report) = verify(&[moved, out], &sensor.dir.join("integrity.key"));
    assert_eq!(code, 0, "{report}");
}
