//! Model API calls through dynamic and static OpenSSL, end to end: the real
//! sensor, the project's fake model API over TLS, and real clients (curl,
//! the openai and anthropic Python SDKs, the openai Node SDK). Each request
//! must yield exactly one attributed `model_call`, and no planted key may
//! appear anywhere the sensor writes.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::Command;

use sensor_tests::{
    FakeApi, WAIT, action, assert_schema_valid, fake_key, node_client, pid_of, python_client,
    run_client, shared_sensor, usage,
};
use serde_json::Value;

/// Waits for `n` model calls of `pid`, makes sure no more come, and checks
/// the fields every model call must carry.
fn model_calls(pid: u32, n: usize, key: &str) -> Vec<Value> {
    let sensor = shared_sensor();
    let is_mine = |e: &Value| action(e) == "model_call" && pid_of(e) == Some(u64::from(pid));
    let found = sensor.wait_for_n(WAIT, n, is_mine);
    if found.len() < n {
        let all = sensor.events(|e| action(e) == "model_call");
        panic!(
            "expected {n} model_call events for pid {pid}, got {}: {found:#?}\nall model calls: {all:#?}\nevents of the pid: {:#?}\nsensor log:\n{}",
            found.len(),
            sensor.events(|e| pid_of(e) == Some(u64::from(pid))),
            sensor.stderr_text()
        );
    }
    sensor.barrier();
    let found = sensor.events(is_mine);
    assert_eq!(
        found.len(),
        n,
        "exactly one model_call per request: {found:#?}"
    );
    for e in &found {
        assert_eq!(e["process"]["pid"], pid);
        assert!(
            e["process"]["parent_pid"].as_u64().is_some(),
            "parent pid: {e}"
        );
        assert!(
            e["process"]["executable"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with('/')),
            "exe: {e}"
        );
        assert!(e["process"]["command_line"].as_str().is_some(), "{e}");
        assert_eq!(e["process"]["user"]["id"], 0);
        let ip = e["server"]["ip"].as_str().expect("server.ip");
        assert!(ip == "127.0.0.1" || ip == "::1", "{e}");
        assert_eq!(e["http"]["request"]["method"], "POST");
        assert_eq!(e["tls"]["library"], "openssl");
        assert_eq!(e["host"]["name"], "it-node");
        let fp = e["credential"]["fingerprint"]
            .as_str()
            .expect("credential fingerprint");
        assert!(fp.starts_with("hmac-sha256:") && fp.len() == 44, "{fp}");
        assert!(
            e["event"]["duration"].as_u64().is_some_and(|d| d > 0),
            "{e}"
        );
    }
    assert_schema_valid(&found);
    sensor.assert_never_printed(key);
    found
}

/// The shared sensor running (it must be before the client starts), a
/// fresh fake API, and a planted key unique to the test.
fn setup(name: &str, tag: &str) -> (FakeApi, String) {
    setup_on(name, "127.0.0.1", tag)
}

fn setup_on(name: &str, host: &str, tag: &str) -> (FakeApi, String) {
    shared_sensor();
    (FakeApi::start_on(name, host), fake_key(tag))
}

/// A chat completion of the default model against the fake API.
fn assert_chat(e: &Value, stream: bool) {
    assert_call(
        e,
        "openai-compatible",
        "/v1/chat/completions",
        "gpt-4o-mini",
        usage("chat", stream),
        stream,
    );
}

fn assert_call(
    e: &Value,
    provider: &str,
    path: &str,
    model: &str,
    tokens: (u64, u64),
    stream: bool,
) {
    assert_eq!(e["gen_ai"]["provider"]["name"], provider, "{e}");
    assert_eq!(e["gen_ai"]["operation"]["name"], "chat", "{e}");
    assert_eq!(e["url"]["path"], path, "{e}");
    assert_eq!(e["gen_ai"]["request"]["model"], model, "{e}");
    assert_eq!(e["gen_ai"]["response"]["model"], model, "{e}");
    assert_eq!(e["gen_ai"]["request"]["stream"], stream, "{e}");
    assert_eq!(e["gen_ai"]["usage"]["input_tokens"], tokens.0, "{e}");
    assert_eq!(e["gen_ai"]["usage"]["output_tokens"], tokens.1, "{e}");
    assert_eq!(e["http"]["response"]["status_code"], 200, "{e}");
    assert_eq!(e["event"]["outcome"], "success", "{e}");
}

fn curl(api: &FakeApi, key: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail-with-body", "--cacert"])
        .arg(&api.ca)
        .args([
            "-H",
            &format!("Authorization: Bearer {key}"),
            "-H",
            "content-type: application/json",
        ])
        .args(extra);
    cmd
}

const CHAT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;

#[test]
fn curl_chat_completion() {
    let (api, key) = setup("curl", "curl");
    let sensor = shared_sensor();
    let url = format!("{}/chat/completions", api.openai_base());
    let (pid, _) = run_client(curl(&api, &key, &["-d", CHAT_BODY, &url]));
    let calls = model_calls(pid, 1, &key);
    let e = &calls[0];
    assert_chat(e, false);
    assert_eq!(e["process"]["executable"]["path"], "/usr/bin/curl");
    assert_eq!(e["credential"]["kind"], "openai_api_key");
    assert_eq!(e["server"]["port"], api.port);
    assert_eq!(e["server"]["address"], "127.0.0.1");
    // The command line carried the key in a header: it is masked.
    let cmdline = e["process"]["command_line"].as_str().unwrap();
    assert!(cmdline.contains("Authorization: ****"), "{cmdline}");
    // The connect that preceded it was reported too.
    let connect = sensor.wait_for(WAIT, |c| {
        action(c) == "connect" && pid_of(c) == Some(u64::from(pid))
    });
    let connect = connect.expect("connect event");
    assert_eq!(connect["server"]["port"], api.port);
    assert_eq!(connect["event"]["outcome"], "success");
}

#[test]
fn curl_keep_alive_two_requests_one_connection() {
    let (api, key) = setup("curl-ka", "curlka");
    let url = format!("{}/chat/completions", api.openai_base());
    let second = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"again"}]}"#;
    let (pid, _) = run_client(curl(
        &api,
        &key,
        &[
            "-o",
            "/dev/null",
            "-d",
            CHAT_BODY,
            &url,
            "--next",
            "--cacert",
            api.ca.to_str().unwrap(),
            "-H",
            &format!("Authorization: Bearer {key}"),
            "-o",
            "/dev/null",
            "-d",
            second,
            &url,
        ],
    ));
    let calls = model_calls(pid, 2, &key);
    let log = api.log();
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[0]["conn_id"], log[1]["conn_id"],
        "curl did not reuse the connection: {log:?}"
    );
    let models: Vec<_> = calls
        .iter()
        .map(|e| e["gen_ai"]["request"]["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(models, ["gpt-4o-mini", "gpt-4o"]);
    assert_eq!(calls[0]["client"]["port"], calls[1]["client"]["port"]);
    assert_eq!(
        calls[0]["credential"]["fingerprint"],
        calls[1]["credential"]["fingerprint"]
    );
    assert!(calls[0]["event"]["sequence"].as_u64() < calls[1]["event"]["sequence"].as_u64());
}

#[test]
fn python_openai_sdk_keep_alive() {
    let (api, key) = setup("py-openai", "pyoai");
    let (pid, out) = run_client(python_client(
        &api,
        "openai_chat.py",
        &api.openai_base(),
        &key,
        &["--n", "3"],
    ));
    assert_eq!(out.len(), 3);
    let calls = model_calls(pid, 3, &key);
    for (e, client) in calls.iter().zip(&out) {
        assert_chat(e, false);
        assert_eq!(e["gen_ai"]["response"]["id"], client["id"]);
        assert!(
            e["process"]["command_line"]
                .as_str()
                .unwrap()
                .contains("openai_chat.py")
        );
    }
    let log = api.log();
    assert!(
        log.iter().all(|l| l["conn_id"] == log[0]["conn_id"]),
        "one keep-alive connection: {log:?}"
    );
    assert_eq!(calls[0]["client"]["port"], calls[2]["client"]["port"]);
}

#[test]
fn python_openai_sdk_streaming() {
    let (api, key) = setup("py-openai-stream", "pyoais");
    let (pid, out) = run_client(python_client(
        &api,
        "openai_chat.py",
        &api.openai_base(),
        &key,
        &["--stream"],
    ));
    let calls = model_calls(pid, 1, &key);
    assert_chat(&calls[0], true);
    assert_eq!(calls[0]["gen_ai"]["response"]["id"], out[0]["id"]);
}

#[test]
fn python_anthropic_sdk() {
    let (api, key) = setup("py-anthropic", "pyant");
    let (pid, _) = run_client(python_client(
        &api,
        "anthropic_messages.py",
        &api.anthropic_base(),
        &key,
        &[],
    ));
    let (spid, _) = run_client(python_client(
        &api,
        "anthropic_messages.py",
        &api.anthropic_base(),
        &key,
        &["--stream"],
    ));
    let calls = model_calls(pid, 1, &key);
    assert_call(
        &calls[0],
        "anthropic-compatible",
        "/v1/messages",
        "claude-haiku-4-5",
        usage("messages", false),
        false,
    );
    let streamed = model_calls(spid, 1, &key);
    assert_call(
        &streamed[0],
        "anthropic-compatible",
        "/v1/messages",
        "claude-haiku-4-5",
        usage("messages", true),
        true,
    );
    // One key, two processes: the same fingerprint.
    assert_eq!(
        calls[0]["credential"]["fingerprint"],
        streamed[0]["credential"]["fingerprint"]
    );
}

#[test]
fn python_openai_other_endpoints() {
    let (api, key) = setup("py-other", "pyoth");
    let cases = [
        (
            "embeddings",
            "/v1/embeddings",
            "embeddings",
            "embeddings",
            false,
        ),
        (
            "completions",
            "/v1/completions",
            "text_completion",
            "completions",
            false,
        ),
        ("responses", "/v1/responses", "chat", "responses", false),
        (
            "responses-stream",
            "/v1/responses",
            "chat",
            "responses",
            true,
        ),
    ];
    for (mode, path, operation, endpoint, stream) in cases {
        let (pid, _) = run_client(python_client(
            &api,
            "openai_other.py",
            &api.openai_base(),
            &key,
            &[mode],
        ));
        let calls = model_calls(pid, 1, &key);
        let e = &calls[0];
        assert_eq!(e["url"]["path"], path, "{mode}: {e}");
        assert_eq!(e["gen_ai"]["operation"]["name"], operation, "{mode}: {e}");
        let (input, output) = usage(endpoint, stream);
        assert_eq!(e["gen_ai"]["usage"]["input_tokens"], input, "{mode}: {e}");
        if endpoint != "embeddings" {
            assert_eq!(e["gen_ai"]["usage"]["output_tokens"], output, "{mode}: {e}");
        }
    }
}

#[test]
fn node_openai_sdk() {
    let (api, key) = setup("node", "node");
    let (pid, out) = run_client(node_client(&api, &key, &["--n", "2"]));
    assert_eq!(out.len(), 2);
    let calls = model_calls(pid, 2, &key);
    for e in &calls {
        assert_chat(e, false);
        assert!(
            e["process"]["executable"]["path"]
                .as_str()
                .unwrap()
                .ends_with("/node"),
            "{e}"
        );
    }
    let (spid, _) = run_client(node_client(&api, &key, &["--stream"]));
    let streamed = model_calls(spid, 1, &key);
    assert_chat(&streamed[0], true);
}

#[test]
fn error_status_and_chunked_responses() {
    let (api, key) = setup("status", "status");
    let url = format!("{}/chat/completions", api.openai_base());
    let mut cmd = curl(
        &api,
        &key,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "x-fake-status: 429",
            "-d",
            CHAT_BODY,
            &url,
        ],
    );
    // curl exits 22 on a 4xx with --fail-with-body: that is expected here.
    let child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "429");
    let failed = model_calls(pid, 1, &key);
    assert_eq!(failed[0]["http"]["response"]["status_code"], 429);
    assert_eq!(failed[0]["event"]["outcome"], "failure");
    assert_eq!(failed[0]["gen_ai"]["request"]["model"], "gpt-4o-mini");
    let (pid, _) = run_client(curl(
        &api,
        &key,
        &[
            "-o",
            "/dev/null",
            "-H",
            "x-fake-chunked: 1",
            "-d",
            CHAT_BODY,
            &url,
        ],
    ));
    let calls = model_calls(pid, 1, &key);
    assert_chat(&calls[0], false);
}

#[test]
fn large_request_body_is_flagged_truncated() {
    let (api, key) = setup("large", "large");
    let url = format!("{}/chat/completions", api.openai_base());
    let filler = "x".repeat(400 * 1024);
    let body =
        format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{filler}"}}]}}"#);
    let file = sensor_tests::scratch("large-body").join("body.json");
    std::fs::write(&file, body.as_bytes()).unwrap();
    let data = format!("@{}", file.display());
    let (pid, _) = run_client(curl(
        &api,
        &key,
        &["-o", "/dev/null", "--data-binary", &data, &url],
    ));
    let calls = model_calls(pid, 1, &key);
    let e = &calls[0];
    assert_eq!(e["http"]["request"]["body"]["truncated"], true, "{e}");
    assert_eq!(e["http"]["request"]["body"]["size"], body.len(), "{e}");
    assert_eq!(e["gen_ai"]["request"]["model"], "gpt-4o-mini", "{e}");
    assert_eq!(
        e["gen_ai"]["usage"]["input_tokens"],
        usage("chat", false).0,
        "{e}"
    );
}

#[test]
fn other_events_match_the_schema() {
    let sensor = shared_sensor();
    sensor.barrier();
    let all = sensor.events(|_| true);
    for kind in ["process_exec", "process_exit", "connect", "sensor_health"] {
        assert!(
            all.iter().any(|e| action(e) == kind),
            "no {kind} event seen"
        );
    }
    assert!(
        sensor.bad_lines().is_empty(),
        "non-JSON lines on stdout: {:?}",
        sensor.bad_lines()
    );
    assert_schema_valid(&all);
}

/// The provider is named from the host the client asked for; IPv6 works.
#[test]
fn provider_from_host_name_and_ipv6() {
    let (api, key) = setup_on("ipv6", "::1", "v6");
    let chat = format!("https://api.openai.com:{}/v1/chat/completions", api.port);
    let resolve = format!("api.openai.com:{}:[::1]", api.port);
    let (pid, _) = run_client(curl(
        &api,
        &key,
        &[
            "-o",
            "/dev/null",
            "--resolve",
            &resolve,
            "-d",
            CHAT_BODY,
            &chat,
        ],
    ));
    let calls = model_calls(pid, 1, &key);
    let e = &calls[0];
    assert_eq!(e["gen_ai"]["provider"]["name"], "openai", "{e}");
    assert_eq!(e["server"]["address"], "api.openai.com", "{e}");
    assert_eq!(e["server"]["ip"], "::1", "{e}");
    assert_eq!(e["network"]["type"], "ipv6", "{e}");
    assert_eq!(e["client"]["address"], "::1", "{e}");

    let messages = format!("https://api.anthropic.com:{}/v1/messages", api.port);
    let resolve = format!("api.anthropic.com:{}:[::1]", api.port);
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail-with-body", "-o", "/dev/null", "--cacert"])
        .arg(&api.ca)
        .args([
            "--resolve",
            &resolve,
            "-H",
            &format!("x-api-key: {key}"),
            "-H",
            "anthropic-version: 2023-06-01",
        ])
        .args([
            "-H",
            "content-type: application/json",
            "-d",
            body,
            &messages,
        ]);
    let (pid, _) = run_client(cmd);
    let calls = model_calls(pid, 1, &key);
    let e = &calls[0];
    assert_eq!(e["gen_ai"]["provider"]["name"], "anthropic", "{e}");
    assert_eq!(e["gen_ai"]["request"]["max_tokens"], 64, "{e}");
    assert_eq!(e["credential"]["source"], "x-api-key", "{e}");
    assert_eq!(
        e["gen_ai"]["usage"]["input_tokens"],
        usage("messages", false).0,
        "{e}"
    );
}

/// Copies `curl` and every library it loads into a fresh root, so the
/// copy's libssl is a file the sensor has never seen (as in a container).
fn curl_root(dir: &std::path::Path) {
    let out = Command::new("ldd")
        .arg("/usr/bin/curl")
        .output()
        .expect("ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let libs = text.split_whitespace().filter(|w| w.starts_with('/'));
    for file in std::iter::once("/usr/bin/curl").chain(libs) {
        let target = dir.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(file, &target).unwrap_or_else(|e| panic!("copying {file}: {e}"));
    }
}

/// A client in a root of its own, with its own copy of libssl, started the
/// way a container runtime starts one (change root, then exec a moment
/// later): the sensor probes the new libssl from the root change and sees
/// the very first request.
#[test]
fn a_new_root_with_its_own_libssl_is_armed_before_its_first_request() {
    use std::os::unix::process::CommandExt as _;
    let (api, key) = setup("newroot", "root");
    let root = sensor_tests::scratch("newroot-fs");
    curl_root(&root);
    std::fs::copy(&api.ca, root.join("ca.pem")).unwrap();
    let url = format!("https://127.0.0.1:{}/v1/chat/completions", api.port);
    let mut cmd = Command::new("/usr/bin/curl");
    // No /dev in the new root: the body goes to a file in it.
    cmd.args([
        "-sS",
        "--fail-with-body",
        "-o",
        "/response.json",
        "--cacert",
        "/ca.pem",
    ])
    .args([
        "-H",
        &format!("Authorization: Bearer {key}"),
        "-d",
        CHAT_BODY,
        &url,
    ]);
    let root_c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: chroot, chdir and nanosleep are async-signal-safe; the
    // CString was made before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::chroot(root_c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // runc pivots into the container's root well before it execs the
            // entrypoint (the runtime's create and start are two steps).
            // Probing a file not probed before waits for an RCU grace
            // period in the kernel: about 10 ms on an idle machine, measured
            // at 0.1 to 1 s on this 2-core VM under the test suite's load.
            let pause = libc::timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
            Ok(())
        });
    }
    let (pid, _) = run_client(cmd);
    let calls = model_calls(pid, 1, &key);
    assert_chat(&calls[0], false);
    assert_eq!(calls[0]["process"]["executable"]["name"], "curl");
    let _ = std::fs::remove_dir_all(&root);
}
