//! Coverage beyond dynamic OpenSSL: cleartext HTTP from the socket
//! syscalls, GnuTLS (`gnutls-cli`), NSS (`tstclnt`), Go's crypto/tls over
//! HTTP/2 and HTTP/1.1 (stripped and not), and the clients whose plaintext
//! the sensor cannot read (rustls linked in, Java's JSSE), which must yield
//! `blind_spot` events naming the server from the ClientHello. Every
//! client is real and runs against the project's fake model API.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use sensor_tests::{
    FakeApi, WAIT, action, assert_schema_valid, expect_success, fake_key, pid_of, run_client,
    scratch, shared_sensor, workspace,
};
use serde_json::Value;

/// Waits for `n` model calls of `pid`, checks no more come, and checks
/// what every model call must carry.
fn model_calls(pid: u32, n: usize, library: &str, key: &str) -> Vec<Value> {
    let sensor = shared_sensor();
    let mine = |e: &Value| action(e) == "model_call" && pid_of(e) == Some(u64::from(pid));
    let found = sensor.wait_for_n(WAIT, n, mine);
    if found.len() < n {
        panic!(
            "expected {n} model_call events for pid {pid}, got {}: {found:#?}\nevents of the pid: {:#?}\nsensor log:\n{}",
            found.len(),
            sensor.events(|e| pid_of(e) == Some(u64::from(pid))),
            sensor.stderr_text()
        );
    }
    sensor.barrier();
    let found = sensor.events(mine);
    assert_eq!(found.len(), n, "one model_call per request: {found:#?}");
    for e in &found {
        assert_eq!(e["process"]["pid"], pid, "{e}");
        assert_eq!(e["tls"]["library"], library, "{e}");
        assert_eq!(e["http"]["request"]["method"], "POST", "{e}");
        assert_eq!(e["url"]["path"], "/v1/chat/completions", "{e}");
        assert_eq!(e["http"]["response"]["status_code"], 200, "{e}");
        assert_eq!(e["gen_ai"]["request"]["model"], "gpt-4o-mini", "{e}");
        assert!(
            e["gen_ai"]["usage"]["input_tokens"].as_u64().is_some(),
            "usage parsed from the response: {e}"
        );
        let fp = e["credential"]["fingerprint"]
            .as_str()
            .expect("fingerprint");
        assert!(fp.starts_with("hmac-sha256:"), "{fp}");
        assert_eq!(e["server"]["ip"], "127.0.0.1", "{e}");
    }
    assert_schema_valid(&found);
    sensor.assert_never_printed(key);
    found
}

/// One blind spot for `pid`, and no model call (its plaintext is not
/// visible).
fn blind_spot(pid: u32, server_name: &str, port: u16) -> Value {
    let sensor = shared_sensor();
    let mine = |e: &Value| action(e) == "blind_spot" && pid_of(e) == Some(u64::from(pid));
    let Some(spot) = sensor.wait_for(WAIT, mine) else {
        panic!(
            "no blind_spot for pid {pid}; its events: {:#?}\nsensor log:\n{}",
            sensor.events(|e| pid_of(e) == Some(u64::from(pid))),
            sensor.stderr_text()
        );
    };
    assert_eq!(spot["tls"]["server_name"], server_name, "{spot}");
    assert_eq!(spot["server"]["port"], port, "{spot}");
    assert_eq!(spot["server"]["ip"], "127.0.0.1", "{spot}");
    assert_eq!(spot["blind_spot"]["reason"], "no_tls_probe", "{spot}");
    assert_eq!(spot["blind_spot"]["matched"], "seen_model_calls", "{spot}");
    assert!(
        spot["process"]["executable"]["path"].as_str().is_some(),
        "{spot}"
    );
    sensor.barrier();
    assert!(
        sensor
            .events(|e| action(e) == "model_call" && pid_of(e) == Some(u64::from(pid)))
            .is_empty(),
        "an unprobed client yields no model_call"
    );
    assert_schema_valid(std::slice::from_ref(&spot));
    spot
}

fn curl(api: &FakeApi, url: &str, key: &str) -> u32 {
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "--http1.1", "--cacert"])
        .arg(&api.ca)
        .args(["-H", "content-type: application/json", "-H"])
        .arg(format!("authorization: Bearer {key}"))
        .args(["-d", body, "-o", "/dev/null", url]);
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl {url}: {out:?}");
    pid
}

/// The shared sensor, and a fake API serving HTTP/2 and cleartext too.
fn setup(name: &str) -> FakeApi {
    shared_sensor();
    FakeApi::start_full(name)
}

#[test]
fn cleartext_http_from_the_socket_syscalls() {
    let api = setup("cleartext");
    let key = fake_key("clear");
    let port = api.plain_port.expect("plain port");
    let pid = curl(
        &api,
        &format!("http://127.0.0.1:{port}/v1/chat/completions"),
        &key,
    );
    let calls = model_calls(pid, 1, "none", &key);
    let e = &calls[0];
    assert_eq!(e["url"]["scheme"], "http", "{e}");
    assert_eq!(e["tls"]["established"], false, "{e}");
    assert_eq!(e["server"]["port"], port, "{e}");
    assert!(e["tls"]["server_name"].is_null(), "{e}");
}

#[test]
fn tls_through_openssl_is_not_reported_twice_and_names_the_server() {
    let api = setup("sni");
    let key = fake_key("sni");
    let pid = curl(
        &api,
        &format!("https://localhost:{}/v1/chat/completions", api.port),
        &key,
    );
    // Exactly one event (the syscalls carry ciphertext here), with the
    // server name from the ClientHello.
    let calls = model_calls(pid, 1, "openssl", &key);
    let e = &calls[0];
    assert_eq!(e["tls"]["server_name"], "localhost", "{e}");
    assert_eq!(e["url"]["scheme"], "https", "{e}");
    assert_eq!(e["network"]["protocol"]["version"], "1.1", "{e}");
}

fn tls_cli(api: &FakeApi, tool: &str, key: &str, n: usize) -> u32 {
    let mut cmd = Command::new("python3");
    cmd.arg(workspace().join("tests/clients/tls_cli_request.py"))
        .args(["--tool", tool, "--url"])
        .arg(format!("https://localhost:{}", api.port))
        .arg("--ca")
        .arg(&api.ca)
        .args(["--model", "gpt-4o-mini", "-n", &n.to_string()])
        .env("OPENAI_API_KEY", key);
    let (_, lines) = run_client(cmd);
    assert_eq!(lines.len(), n, "{lines:?}");
    let pid = lines[0]["client_pid"].as_u64().expect("client_pid") as u32;
    for line in &lines {
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["client_pid"], pid, "one connection, one process");
    }
    pid
}

/// A command-line TLS client: two calls on one connection, attributed to
/// the tool's process, with the library's name.
fn tls_cli_calls(tool: &str, library: &str, exe: &str) {
    let api = setup(tool);
    let key = fake_key(tool);
    let pid = tls_cli(&api, tool, &key, 2);
    let calls = model_calls(pid, 2, library, &key);
    assert_eq!(calls[0]["tls"]["server_name"], "localhost");
    assert!(
        calls[0]["process"]["executable"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with(exe)),
        "{}",
        calls[0]
    );
}

#[test]
fn gnutls_cli() {
    tls_cli_calls("gnutls", "gnutls", "/gnutls-cli");
}

#[test]
fn nss_tstclnt() {
    tls_cli_calls("nss", "nss", "/tstclnt");
}

/// The Go client built with Debian's Go, with symbols and stripped; once
/// per test binary.
fn go_clients() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = scratch("go-build");
        let src = workspace().join("tests/clients/go/modelclient");
        let build = |out: &Path, strip: bool| {
            let mut cmd = Command::new("go");
            cmd.current_dir(&src)
                .args(["build", "-o"])
                .arg(out)
                .env("GOFLAGS", "-mod=mod")
                .env("GOPROXY", "off")
                .env("GOCACHE", dir.join("cache"))
                .env("GOPATH", dir.join("gopath"));
            if strip {
                cmd.args(["-ldflags", "-s -w"]);
            }
            cmd.arg(".");
            expect_success(&cmd.output().expect("go is needed (golang-go)"));
        };
        let full = dir.join("modelclient");
        let stripped = dir.join("modelclient-stripped");
        build(&full, false);
        build(&stripped, true);
        (full, stripped)
    })
}

fn go_run(api: &FakeApi, exe: &Path, proto: &str, stream: bool, key: &str, n: usize) -> u32 {
    let mut cmd = Command::new(exe);
    cmd.arg("-url")
        .arg(format!("https://localhost:{}", api.port))
        .arg("-ca")
        .arg(&api.ca)
        .args([
            "-model",
            "gpt-4o-mini",
            "-n",
            &n.to_string(),
            "-proto",
            proto,
        ])
        .env("OPENAI_API_KEY", key);
    if stream {
        cmd.arg("-stream");
    }
    let (pid, lines) = run_client(cmd);
    assert_eq!(lines.len(), n, "{lines:?}");
    let want = if proto == "h2" {
        "HTTP/2.0"
    } else {
        "HTTP/1.1"
    };
    for line in &lines {
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["proto"], want, "{line}");
    }
    pid
}

/// A Go program is probed when it is first mapped; give the attacher the
/// time a fresh executable needs (parsing its function table) by starting
/// each binary once before the measured run. The run itself is a new
/// process of an already probed file, as every later run on a node is.
fn warm(api: &FakeApi, exe: &Path) {
    let key = fake_key("warm");
    go_run(api, exe, "http1.1", false, &key, 1);
}

#[test]
fn go_crypto_tls_http2_and_http1_stripped_and_not() {
    let api = setup("go");
    let (full, stripped) = go_clients();
    for exe in [full, stripped] {
        warm(&api, exe);
        for (proto, version) in [("h2", "2"), ("http1.1", "1.1")] {
            for stream in [false, true] {
                let key = fake_key("go");
                let pid = go_run(&api, exe, proto, stream, &key, 2);
                let calls = model_calls(pid, 2, "go", &key);
                for e in &calls {
                    assert_eq!(e["network"]["protocol"]["version"], version, "{e}");
                    assert_eq!(e["tls"]["server_name"], "localhost", "{e}");
                    assert_eq!(e["gen_ai"]["request"]["stream"], stream, "{e}");
                    assert!(
                        e["gen_ai"]["usage"]["output_tokens"].as_u64().is_some(),
                        "{e}"
                    );
                }
            }
        }
    }
}

/// A probed client first: the sensor learns the fake API is a model
/// endpoint (as it would on a node where any probed client calls it).
fn learn_endpoint(api: &FakeApi) {
    let learn = fake_key("learn");
    let pid = curl(
        api,
        &format!("https://localhost:{}/v1/chat/completions", api.port),
        &learn,
    );
    model_calls(pid, 1, "openssl", &learn);
}

#[test]
fn rustls_client_is_a_blind_spot() {
    let api = setup("rustls");
    learn_endpoint(&api);
    let key = fake_key("rustls");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rustls-client"));
    cmd.arg(format!("https://localhost:{}", api.port))
        .arg(&api.ca)
        .args(["gpt-4o-mini", "1"])
        .env("OPENAI_API_KEY", &key);
    let (pid, lines) = run_client(cmd);
    assert_eq!(lines[0]["status"], 200, "{lines:?}");
    blind_spot(pid, "localhost", api.port);
    shared_sensor().assert_never_printed(&key);
}

#[test]
fn java_client_is_a_blind_spot() {
    let api = setup("java");
    learn_endpoint(&api);
    let key = fake_key("java");
    let mut cmd = Command::new("java");
    cmd.arg(workspace().join("tests/clients/java/ModelClient.java"))
        .arg(format!("https://localhost:{}", api.port))
        .arg(&api.ca)
        .args(["gpt-4o-mini", "1", "http1.1"])
        .env("OPENAI_API_KEY", &key);
    let (_, lines) = run_client(cmd);
    assert_eq!(lines[0]["status"], 200, "{lines:?}");
    let pid = lines[0]["pid"].as_u64().expect("pid") as u32;
    blind_spot(pid, "localhost", api.port);
    shared_sensor().assert_never_printed(&key);
}
