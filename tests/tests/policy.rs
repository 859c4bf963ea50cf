//! Policy: decisions on real traffic, kernel enforcement at connect for a
//! Kubernetes-shaped pod, the violation events, the dry run, and nothing
//! left behind when the sensor stops.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{path::Path, process::Command, time::Duration};

use sensor_tests::{
    FakeApi, Sensor, WAIT, action, assert_schema_valid, env_path, fake_key,
    runtime::{self, PodFinished, PodOpts, service_account_token},
    scratch, unique,
};
use serde_json::Value;

const CA_IN_CONTAINER: &str = "/etc/sensor-test/ca.pem";
const GATE_IN_CONTAINER: &str = "/etc/sensor-gate";

/// A pod's shell: waits for a line on the gate FIFO when `gated` (a
/// shell builtin: nothing is executed while it waits), then one chat
/// completion with curl.
fn curl_script(api: &FakeApi, model: &str, gated: bool) -> Vec<String> {
    let url = format!("{}/chat/completions", api.openai_base());
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let wait = if gated {
        format!("read -r _ < {GATE_IN_CONTAINER}/fifo; ")
    } else {
        String::new()
    };
    let script = format!(
        "{wait}exec curl -sS --fail-with-body --cacert {CA_IN_CONTAINER} \
         -H \"Authorization: Bearer $API_KEY\" -H 'content-type: application/json' \
         -d '{body}' {url}"
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

struct PodSpec<'a> {
    api: &'a FakeApi,
    namespace: &'a str,
    service_account: &'a str,
    model: &'a str,
    key: &'a str,
    gate: Option<&'a Path>,
    /// A bash command instead of curl (after the gate).
    bash: Option<&'a str>,
}

fn pod_opts(spec: &PodSpec) -> (PodOpts, String) {
    let name = format!("pol-{}-{}", spec.service_account, &unique()[..6]);
    let pod_uid = runtime::random_uuid();
    let token = service_account_token(spec.namespace, spec.service_account, &name, &pod_uid);
    let dir = scratch(&format!("token-{name}"));
    let token_path = dir.join("token");
    std::fs::write(&token_path, token).unwrap();
    let command = match spec.bash {
        Some(text) => vec![
            "/bin/bash".to_owned(),
            "-c".to_owned(),
            format!("read -r _ < {GATE_IN_CONTAINER}/fifo; {text}"),
        ],
        None => curl_script(spec.api, spec.model, spec.gate.is_some()),
    };
    let mut opts = PodOpts::new(&command)
        .name(&name)
        .namespace(spec.namespace)
        .uid(&pod_uid)
        .container_name("agent")
        .env("API_KEY", spec.key)
        .bind_ro(&spec.api.ca, CA_IN_CONTAINER)
        .service_account_token(&token_path)
        .timeout(Duration::from_secs(120));
    if let Some(gate) = spec.gate {
        opts = opts.bind_ro(gate, GATE_IN_CONTAINER);
    }
    (opts, name)
}

fn write_policy(dir: &Path, namespace: &str, api: &FakeApi) -> std::path::PathBuf {
    let text = format!(
        r#"
# Alert on anything no rule names (so the host process's default shows).
default = "alert"
violation_interval_secs = 60

[[rules]]
id = "model-users-may-call"
action = "allow"
namespace = "{namespace}"
service_account = "model-user"

[[rules]]
id = "batch-no-model-api"
description = "batch jobs must not reach the model API"
action = "deny"
enforce = true
namespace = "{namespace}"
service_account = "batch"
host = "127.0.0.1"
port = {port}
"#,
        port = api.port
    );
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The sensor under test with `policy`, emitting `events`.
fn policy_sensor(name: &str, policy: &Path, events: &str) -> Sensor {
    Sensor::start(
        name,
        &[
            "--policy-file",
            policy.to_str().unwrap(),
            "--events",
            events,
        ],
    )
}

fn find(sensor: &Sensor, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    sensor.wait_for(WAIT, &pred).unwrap_or_else(|| {
        panic!(
            "no {what}\nevents: {:#?}\nsensor log:\n{}",
            sensor.events(
                |e| matches!(action(e), "model_call" | "policy_violation" | "connect")
                    && e.get("k8s").is_some()
            ),
            sensor.stderr_text()
        )
    })
}

#[test]
fn pods_allowed_denied_in_the_kernel_and_free_again_after_stop() {
    let api = FakeApi::start("policy");
    let namespace = format!("pol-{}", &unique()[..6]);
    let dir = scratch("policy");
    let policy = write_policy(&dir, &namespace, &api);
    let sensor = policy_sensor(
        "policy",
        &policy,
        "model_call,connect,policy_violation,process_exec,sensor_health",
    );

    // 1. The allowed pod's call goes through and says so.
    let key_a = fake_key("pol-a");
    let model_a = format!("gpt-allowed-{}", unique());
    let (opts, name_a) = pod_opts(&PodSpec {
        api: &api,
        namespace: &namespace,
        service_account: "model-user",
        model: &model_a,
        key: &key_a,
        gate: None,
        bash: None,
    });
    runtime::cri_pod(&opts).assert_success();
    let call = find(&sensor, "model_call of the allowed pod", |e| {
        action(e) == "model_call" && e["gen_ai"]["request"]["model"] == model_a.as_str()
    });
    assert_eq!(call["k8s"]["pod"]["name"], name_a.as_str(), "{call:#}");
    assert_eq!(call["policy"]["decision"], "allow", "{call:#}");
    assert_eq!(call["policy"]["rule"], "model-users-may-call", "{call:#}");
    assert!(
        call["policy"]["reason"]
            .as_str()
            .unwrap()
            .contains("service_account=model-user")
    );

    // 2. The denied pod: it waits behind a gate until the sensor has seen
    // its first process (enforcement starts once the container's cgroup
    // is judged, within milliseconds of its first exec: see the README),
    // then its connect is refused in the kernel.
    let key_b = fake_key("pol-b");
    let model_b = format!("gpt-denied-{}", unique());
    let (denied, name_b) = gated_pod(
        &sensor,
        &PodSpec {
            api: &api,
            namespace: &namespace,
            service_account: "batch",
            model: &model_b,
            key: &key_b,
            gate: None,
            bash: None,
        },
    );
    assert_eq!(
        denied.exit_code,
        7,
        "curl must fail to connect; stdout {} stderr {}",
        denied.stdout(),
        denied.stderr()
    );
    assert!(
        denied.stderr().contains("Failed to connect"),
        "{}",
        denied.stderr()
    );
    let connect = find(&sensor, "refused connect of the denied pod", |e| {
        action(e) == "connect"
            && e["k8s"]["pod"]["name"] == name_b.as_str()
            && e["server"]["port"] == api.port
    });
    assert_eq!(connect["event"]["outcome"], "failure", "{connect:#}");
    assert_eq!(connect["error"]["code"], "ECONNREFUSED", "{connect:#}");
    assert_eq!(connect["policy"]["decision"], "deny");
    assert_eq!(connect["policy"]["rule"], "batch-no-model-api");
    assert_eq!(connect["policy"]["enforcement"], "blocked");
    let violation = find(&sensor, "policy_violation of the denied pod", |e| {
        action(e) == "policy_violation" && e["k8s"]["pod"]["name"] == name_b.as_str()
    });
    assert_eq!(
        violation["policy"]["rule"], "batch-no-model-api",
        "{violation:#}"
    );
    assert_eq!(violation["policy"]["decision"], "deny");
    assert_eq!(violation["policy"]["enforcement"], "blocked");
    assert_eq!(violation["policy"]["trigger"], "connect");
    assert_eq!(violation["k8s"]["service_account"]["name"], "batch");
    assert_eq!(violation["k8s"]["namespace"]["name"], namespace.as_str());
    assert_eq!(violation["event"]["kind"], "alert");
    assert_eq!(
        violation["causation"]["parent_event_id"],
        connect["event"]["id"]
    );
    let message = violation["message"].as_str().unwrap();
    assert!(
        message.contains(&name_b) && message.contains("batch"),
        "{message}"
    );
    // The request never reached the API.
    assert!(
        !api.log()
            .iter()
            .any(|r| r.to_string().contains(model_b.as_str())),
        "the denied pod's request reached the API"
    );

    // 3. A host process no rule names gets the default (alert) and a
    // violation of its own.
    let model_h = format!("gpt-host-{}", unique());
    let key_h = fake_key("pol-host");
    // A curl of its own path: violations are limited per actor (user and
    // executable), and other tests run curl on this host meanwhile.
    let curl = dir.join(format!("curl-{}", unique()));
    std::fs::copy("/usr/bin/curl", &curl).unwrap();
    let status = Command::new(&curl)
        .args(["-sS", "--fail-with-body", "-o", "/dev/null", "--cacert"])
        .arg(&api.ca)
        .args(["-H", &format!("Authorization: Bearer {key_h}")])
        .args(["-H", "content-type: application/json", "-d"])
        .arg(format!(
            r#"{{"model":"{model_h}","messages":[{{"role":"user","content":"hi"}}]}}"#
        ))
        .arg(format!("{}/chat/completions", api.openai_base()))
        .status()
        .unwrap();
    assert!(status.success());
    let host = find(&sensor, "model_call of the host process", |e| {
        action(e) == "model_call" && e["gen_ai"]["request"]["model"] == model_h.as_str()
    });
    assert!(host.get("k8s").is_none(), "{host:#}");
    assert_eq!(host["policy"]["decision"], "alert", "{host:#}");
    assert_eq!(host["policy"]["rule"], "default");
    // One violation per actor and rule per interval: curl's connect comes
    // before its model call, so that is the one that goes out.
    let host_violation = find(&sensor, "violation of the host process", |e| {
        action(e) == "policy_violation"
            && e["policy"]["rule"] == "default"
            && e["process"]["pid"] == host["process"]["pid"]
    });
    assert_eq!(host_violation["policy"]["decision"], "alert");
    assert!(host_violation["policy"].get("enforcement").is_none());

    for e in [&call, &connect, &violation, &host, &host_violation] {
        assert_schema_valid(std::slice::from_ref(e));
    }
    for key in [&key_a, &key_b, &key_h] {
        sensor.assert_never_printed(key);
    }

    // 4. The dry run reproduces every recorded decision.
    let recorded = dir.join("recorded.jsonl");
    std::fs::write(&recorded, sensor.stdout_text()).unwrap();
    let out = Command::new(env_path("SENSOR_BIN"))
        .args(["policy", "test", "--json"])
        .arg(&policy)
        .arg(&recorded)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let judged_recorded =
        sensor.events(|e| e.get("policy").is_some() && action(e) != "policy_violation");
    assert_eq!(
        lines.len(),
        judged_recorded.len(),
        "one line per judged event"
    );
    for line in &lines {
        assert_eq!(line["changed"], false, "dry run differs: {line:#}");
    }
    for (id, rule) in [
        (&call["event"]["id"], "model-users-may-call"),
        (&connect["event"]["id"], "batch-no-model-api"),
        (&host["event"]["id"], "default"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l["event.id"] == *id && l["policy.rule"] == rule),
            "dry run lacks {id} decided by {rule}"
        );
    }
    let text = Command::new(env_path("SENSOR_BIN"))
        .args(["policy", "test"])
        .arg(&policy)
        .arg(&recorded)
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("batch-no-model-api") && text.contains("0 decided differently"),
        "{text}"
    );

    // 5. The sensor stops: the kernel programs go with it, and the same
    // service account connects again.
    assert!(sensor.stop().success(), "{}", sensor.stderr_text());
    let model_c = format!("gpt-after-{}", unique());
    let (opts, _) = pod_opts(&PodSpec {
        api: &api,
        namespace: &namespace,
        service_account: "batch",
        model: &model_c,
        key: &key_b,
        gate: None,
        bash: None,
    });
    runtime::cri_pod(&opts).assert_success();
    assert!(
        api_saw(&api, &model_c),
        "after the stop the pod's request must reach the API"
    );
}

/// Whether the fake API logged a request for `model` (its log lines are
/// read on a thread: waits for them a while).
fn api_saw(api: &FakeApi, model: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if api.log().iter().any(|r| r.to_string().contains(model)) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory with the FIFO a gated pod waits on.
fn new_gate() -> std::path::PathBuf {
    let gate = scratch(&format!("gate-{}", unique()));
    for name in ["fifo", "fifo2"] {
        let fifo = std::ffi::CString::new(gate.join(name).to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    }
    gate
}

/// Lets the pod waiting on `gate` go on (the open waits for its reader).
fn open_gate(gate: &Path) {
    open_fifo(gate, "fifo");
}

fn open_fifo(gate: &Path, name: &str) {
    use std::io::Write as _;
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(gate.join(name))
        .unwrap();
    fifo.write_all(b"go\n").unwrap();
}

/// Runs a pod of `service_account` held behind a gate until the sensor
/// has seen its first process; returns the finished pod and its name.
fn gated_pod(sensor: &Sensor, spec: &PodSpec) -> (PodFinished, String) {
    let gate = new_gate();
    let (opts, name) = pod_opts(&PodSpec {
        gate: Some(&gate),
        ..*spec
    });
    let runner = std::thread::spawn(move || runtime::cri_pod(&opts));
    find(sensor, "process_exec of the gated pod", |e| {
        action(e) == "process_exec"
            && e["k8s"]["pod"]["name"] == name.as_str()
            && e["k8s"]["service_account"]["name"] == spec.service_account
    });
    open_gate(&gate);
    (runner.join().unwrap(), name)
}

#[test]
fn a_reloaded_policy_lifts_the_denial_at_once() {
    let api = FakeApi::start("policy-reload");
    let namespace = format!("pol-{}", &unique()[..6]);
    let dir = scratch("policy-reload");
    let policy = write_policy(&dir, &namespace, &api);
    let sensor = policy_sensor(
        "policy-reload",
        &policy,
        "model_call,connect,policy_violation,process_exec,sensor_health",
    );
    let key = fake_key("pol-reload");
    // One pod, one cgroup: bash connects (refused), waits, and connects
    // again after the reload. Its own connects: nothing is executed.
    let gate = new_gate();
    let connect = format!(
        "if (exec 3<>/dev/tcp/127.0.0.1/{port}); then echo first-connected; \
         else echo first-refused; fi; read -r _ < {GATE_IN_CONTAINER}/fifo2; \
         exec 4<>/dev/tcp/127.0.0.1/{port} && echo second-connected",
        port = api.port
    );
    let (opts, name) = pod_opts(&PodSpec {
        api: &api,
        namespace: &namespace,
        service_account: "batch",
        model: "unused",
        key: &key,
        gate: Some(&gate),
        bash: Some(&connect),
    });
    let runner = std::thread::spawn(move || runtime::cri_pod(&opts));
    find(&sensor, "process_exec of the pod", |e| {
        action(e) == "process_exec"
            && e["k8s"]["pod"]["name"] == name.as_str()
            && e["k8s"]["service_account"]["name"] == "batch"
    });
    open_gate(&gate);
    let refused = find(&sensor, "the refused connect", |e| {
        action(e) == "connect" && e["k8s"]["pod"]["name"] == name.as_str()
    });
    assert_eq!(refused["policy"]["enforcement"], "blocked", "{refused:#}");

    // The same namespace and service account now only alerted on.
    let relaxed = std::fs::read_to_string(&policy)
        .unwrap()
        .replace("action = \"deny\"\nenforce = true", "action = \"alert\"")
        .replace("batch-no-model-api", "batch-watched");
    std::fs::write(&policy, relaxed).unwrap();
    // SAFETY: signalling the sensor under test.
    unsafe { libc::kill(sensor.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + WAIT;
    while !sensor.stderr_text().contains("policy reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            sensor.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    open_fifo(&gate, "fifo2");
    let finished = runner.join().unwrap();
    let out = finished.stdout();
    assert!(
        out.contains("first-refused") && out.contains("second-connected"),
        "stdout {out} stderr {}",
        finished.stderr()
    );
    let second = find(&sensor, "the connect after the reload", |e| {
        action(e) == "connect"
            && e["k8s"]["pod"]["name"] == name.as_str()
            && e["event"]["outcome"] == "success"
    });
    assert_eq!(second["policy"]["rule"], "batch-watched", "{second:#}");
    assert_eq!(second["policy"]["decision"], "alert");
    assert!(sensor.stop().success());
}

#[test]
fn a_container_running_before_the_sensor_is_judged_at_start() {
    let api = FakeApi::start("policy-early");
    let namespace = format!("pol-{}", &unique()[..6]);
    let dir = scratch("policy-early");
    let policy = write_policy(&dir, &namespace, &api);
    let key = fake_key("pol-early");
    let gate = new_gate();
    // bash connects by itself (/dev/tcp): nothing is executed in the pod
    // after the sensor starts, so only the judging at start can refuse it.
    let marker = format!("early-{}", unique());
    let connect = format!(
        ": {marker}; exec 3<>/dev/tcp/127.0.0.1/{} && echo connected",
        api.port
    );
    let (opts, _) = pod_opts(&PodSpec {
        api: &api,
        namespace: &namespace,
        service_account: "batch",
        model: "gpt-early",
        key: &key,
        gate: Some(&gate),
        bash: Some(&connect),
    });
    let runner = std::thread::spawn(move || runtime::cri_pod(&opts));
    // The pod's shell is waiting at its gate before the sensor starts.
    let deadline = std::time::Instant::now() + WAIT;
    while !Command::new("pgrep")
        .args(["-f", &marker])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the pod did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sensor = policy_sensor(
        "policy-early",
        &policy,
        "connect,policy_violation,sensor_health",
    );
    open_gate(&gate);
    let finished = runner.join().unwrap();
    assert_ne!(finished.exit_code, 0, "{}", finished.stdout());
    assert!(
        finished.stderr().contains("Connection refused"),
        "{}",
        finished.stderr()
    );
    let connect = find(&sensor, "refused connect of the early pod", |e| {
        action(e) == "connect" && e["server"]["port"] == api.port && e.get("k8s").is_some()
    });
    assert_eq!(connect["policy"]["enforcement"], "blocked", "{connect:#}");
    assert!(sensor.stop().success());
}

#[test]
fn an_invalid_policy_stops_the_sensor_naming_the_rule() {
    let dir = scratch("policy-invalid");
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        "[[rules]]\nid = \"curl-only\"\naction = \"deny\"\nenforce = true\nexecutable = \"curl\"\nhost = \"api.openai.com\"\n",
    )
    .unwrap();
    let out = Command::new(env_path("SENSOR_BIN"))
        .arg("--policy-file")
        .arg(&path)
        .arg("--fingerprint-key-file")
        .arg(dir.join("fp.key"))
        .arg("--integrity-key-file")
        .arg(dir.join("int.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("curl-only") && err.contains("executable"),
        "the error must name the rule and why: {err}"
    );
    let check = Command::new(env_path("SENSOR_BIN"))
        .args(["policy", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
}
