//! What an agent did next: a real tool-using agent (the `openai` SDK and
//! the MCP Python SDK, tests/clients/agent.py) against the project's fake
//! model API, whose answer asks for two tools. The agent calls an HTTPS
//! tool API, an MCP server over streamable HTTP and over stdio (the same
//! server as its child), and runs `curl` as a
//! child. The sensor must mark the agent and its child, report each tool
//! call tied to the model call that asked for it, keep the trace context,
//! and `sensor timeline` must print the chain. A process that is not an
//! agent making the same request yields no `tool_call`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
};

use sensor_tests::{
    FakeApi, WAIT, action, assert_schema_valid, expect_success, fake_key, pid_of, run_client,
    scratch, shared_sensor, venv_python, workspace,
};
use serde_json::Value;

/// The MCP server of tests/fixtures, over streamable HTTP on loopback.
struct McpServer {
    child: Child,
    port: u16,
}

impl McpServer {
    /// `transport`: `streamable-http` (endpoint /mcp) or `sse` (the legacy
    /// transport, endpoint /sse).
    fn start(transport: &str) -> Self {
        let mut child = Command::new(venv_python())
            .arg(workspace().join("tests/fixtures/mcp_server.py"))
            .args(["--transport", transport, "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().expect("MCP server READY").unwrap();
        let info: Value =
            serde_json::from_str(ready.strip_prefix("READY ").expect("READY line")).unwrap();
        // Keep reading its per-call lines so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Self {
            child,
            port: info["port"].as_u64().unwrap() as u16,
        }
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn step<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["step"] == name).collect()
}

fn run_agent(
    api: &FakeApi,
    mcp: &McpServer,
    sse: &McpServer,
    key: &str,
    stream: bool,
) -> Vec<Value> {
    let mut cmd = Command::new(venv_python());
    cmd.arg(workspace().join("tests/clients/agent.py"))
        .arg("--tool-url")
        .arg(format!("https://127.0.0.1:{}/tool/weather", api.port))
        .arg("--mcp-url")
        .arg(format!("http://127.0.0.1:{}/mcp", mcp.port))
        .arg("--mcp-sse-url")
        .arg(format!("http://127.0.0.1:{}/sse", sse.port))
        .arg("--mcp-stdio")
        .arg("--fetch-url")
        .arg(format!("https://127.0.0.1:{}/healthz", api.port))
        .env("SENSOR_TEST_BASE_URL", api.openai_base())
        .env("SENSOR_TEST_API_KEY", key)
        .env("SSL_CERT_FILE", &api.ca)
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("SSL_CERT_DIR");
    if stream {
        cmd.args(["--stream", "--include-usage"]);
    }
    let (_, lines) = run_client(cmd);
    lines
}

fn the_chain(stream: bool) {
    let sensor = shared_sensor();
    let api = FakeApi::start(if stream { "agent-stream" } else { "agent" });
    let mcp = McpServer::start("streamable-http");
    let sse = McpServer::start("sse");
    let key = fake_key("agent");
    let lines = run_agent(&api, &mcp, &sse, &key, stream);
    let model_lines = step(&lines, "model_call");
    assert_eq!(model_lines.len(), 2, "{lines:#?}");
    let agent_pid = model_lines[0]["pid"].as_u64().unwrap();
    let asked = model_lines[0]["tool_calls"]
        .as_array()
        .expect("tool calls")
        .clone();
    let id_of = |name: &str| {
        asked
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["id"].as_str())
            .unwrap_or_else(|| panic!("the model asked for {name}: {asked:?}"))
            .to_owned()
    };
    let weather_id = id_of("get_weather");
    let order_id = id_of("lookup_order");
    let http = step(&lines, "tool_http")[0];
    let traceparent = http["traceparent"].as_str().unwrap();
    let trace_id = traceparent.split('-').nth(1).unwrap();
    let fetch = step(&lines, "fetch")[0];
    let curl_pid = fetch["pid"].as_u64().unwrap();
    let mcp_line = step(&lines, "mcp_call")[0];

    // The two model calls, marked as the agent's.
    let is =
        |pid: u64, what: &'static str| move |e: &Value| action(e) == what && pid_of(e) == Some(pid);
    let models = sensor.wait_for_n(WAIT, 2, is(agent_pid, "model_call"));
    assert_eq!(
        models.len(),
        2,
        "model calls: {models:#?}\n{}",
        sensor.stderr_text()
    );
    let first = models
        .iter()
        .find(|e| e["gen_ai"]["response"]["tool_calls"].is_array())
        .unwrap_or_else(|| panic!("no model call with tool calls: {models:#?}"));
    let session = first["agent"]["session"]["id"].as_str().unwrap().to_owned();
    assert_eq!(first["agent"]["marked_by"], "model_call", "{first}");
    let requested: Vec<&str> = first["gen_ai"]["response"]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(requested.contains(&weather_id.as_str()), "{first}");
    assert!(requested.contains(&order_id.as_str()), "{first}");
    assert!(
        first["gen_ai"]["request"]["tools"]
            .as_array()
            .is_some_and(|t| t.len() == 2),
        "{first}"
    );
    let first_id = first["event"]["id"].as_str().unwrap();

    // The HTTP tool: tied to get_weather's call, with the trace context.
    let tools = sensor.wait_for_n(WAIT, 1, |e| {
        is(agent_pid, "tool_call")(e) && e["url"]["path"] == "/tool/weather"
    });
    let weather = tools.first().unwrap_or_else(|| {
        panic!(
            "no tool_call for the tool API; agent events: {:#?}",
            sensor.events(|e| pid_of(e) == Some(agent_pid))
        )
    });
    assert_eq!(weather["agent"]["session"]["id"], session.as_str());
    assert_eq!(
        weather["gen_ai"]["tool"]["call"]["id"],
        weather_id.as_str(),
        "{weather}"
    );
    assert_eq!(
        weather["gen_ai"]["tool"]["name"], "get_weather",
        "{weather}"
    );
    assert_eq!(
        weather["causation"]["parent_event_id"], first_id,
        "{weather}"
    );
    assert_eq!(weather["trace"]["id"], trace_id, "{weather}");
    assert_eq!(weather["http"]["response"]["status_code"], 200);
    assert_eq!(weather["tls"]["server_name"], Value::Null);

    // MCP over streamable HTTP (cleartext): the handshake, then the call,
    // tied to lookup_order's call by the tool's name.
    let over_http =
        |e: &Value| is(agent_pid, "tool_call")(e) && e["mcp"]["transport"] == "streamable-http";
    let calls = sensor.wait_for_n(WAIT, 1, |e| {
        over_http(e) && e["mcp"]["method"]["name"] == "tools/call"
    });
    let call = calls.first().unwrap_or_else(|| {
        panic!(
            "no MCP tools/call; agent events: {:#?}",
            sensor.events(|e| pid_of(e) == Some(agent_pid))
        )
    });
    assert_eq!(call["gen_ai"]["tool"]["name"], "lookup_order", "{call}");
    assert_eq!(
        call["gen_ai"]["tool"]["call"]["id"],
        order_id.as_str(),
        "{call}"
    );
    assert_eq!(call["causation"]["parent_event_id"], first_id, "{call}");
    assert_eq!(call["causation"]["match"], "tool_name", "{call}");
    assert_eq!(call["tls"]["library"], "none", "{call}");
    assert_eq!(
        call["mcp"]["tool"]["argument_keys"],
        serde_json::json!(["order_id"]),
        "{call}"
    );
    assert!(
        call["mcp"]["tool"]["arguments"]["hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("hmac-sha256:")),
        "{call}"
    );
    assert_eq!(call["mcp"]["tool"]["result"]["is_error"], false, "{call}");
    let init = sensor.events(|e| over_http(e) && e["mcp"]["method"]["name"] == "initialize");
    assert_eq!(init.len(), 1, "{init:#?}");
    let server = init[0]["mcp"]["server"]["name"]
        .as_str()
        .expect("server name");
    assert_eq!(call["mcp"]["server"]["name"], server, "{call}");
    if mcp_line["session_id"].as_str().is_some() {
        // A fingerprint: the session id is a credential for the session.
        assert!(
            call["mcp"]["session"]["id"]
                .as_str()
                .is_some_and(|f| f.starts_with("hmac-sha256:")),
            "{call}"
        );
        assert_eq!(
            init[0]["mcp"]["session"]["id"],
            call["mcp"]["session"]["id"]
        );
    }

    // MCP over the legacy HTTP+SSE transport: each POST is answered 202,
    // the answer comes on the session's event stream.
    let legacy = |e: &Value| is(agent_pid, "tool_call")(e) && e["mcp"]["transport"] == "sse";
    let old = sensor.wait_for_n(WAIT, 1, |e| {
        legacy(e) && e["mcp"]["method"]["name"] == "tools/call"
    });
    let old = old.first().unwrap_or_else(|| {
        panic!(
            "no MCP tools/call over the SSE transport; agent events: {:#?}",
            sensor.events(|e| pid_of(e) == Some(agent_pid))
        )
    });
    assert_eq!(old["gen_ai"]["tool"]["name"], "lookup_order", "{old}");
    assert_eq!(old["http"]["response"]["status_code"], 202, "{old}");
    // The session id in the endpoint's query is a bearer secret.
    assert_eq!(old["url"]["query"], "session_id=****", "{old}");
    assert_eq!(old["mcp"]["tool"]["result"]["is_error"], false, "{old}");
    assert_eq!(old["event"]["outcome"], "success", "{old}");
    assert_eq!(old["mcp"]["server"]["name"], server, "{old}");
    assert_eq!(old["causation"]["parent_event_id"], first_id, "{old}");

    // MCP over stdio: the server the agent started as a child, seen in
    // the pipe traffic between them (both write JSON-RPC lines).
    let piped = |e: &Value| is(agent_pid, "tool_call")(e) && e["network"]["transport"] == "pipe";
    let stdio = sensor.wait_for_n(WAIT, 1, |e| {
        piped(e) && e["mcp"]["method"]["name"] == "tools/call"
    });
    let stdio = stdio.first().unwrap_or_else(|| {
        panic!(
            "no MCP tools/call over stdio; agent events: {:#?}\nsensor log:\n{}",
            sensor.events(|e| pid_of(e) == Some(agent_pid)),
            sensor.stderr_text()
        )
    });
    assert_eq!(stdio["gen_ai"]["tool"]["name"], "lookup_order", "{stdio}");
    assert_eq!(stdio["agent"]["session"]["id"], session.as_str());
    assert_eq!(stdio["causation"]["parent_event_id"], first_id, "{stdio}");
    assert_eq!(stdio["mcp"]["server"]["name"], server, "{stdio}");
    assert_eq!(
        stdio["mcp"]["tool"]["argument_keys"],
        serde_json::json!(["order_id"]),
        "{stdio}"
    );
    assert_eq!(stdio["mcp"]["tool"]["result"]["is_error"], false, "{stdio}");
    let server_pid = stdio["mcp"]["server"]["process"]["pid"].as_u64().unwrap();
    assert_ne!(server_pid, agent_pid);
    let stdio_init = sensor.events(|e| piped(e) && e["mcp"]["method"]["name"] == "initialize");
    assert_eq!(stdio_init.len(), 1, "{stdio_init:#?}");
    assert_eq!(stdio_init[0]["mcp"]["server"]["process"]["pid"], server_pid);
    // The server's own writes are its answers, not tool calls of its own.
    assert!(
        sensor
            .events(|e| action(e) == "tool_call" && pid_of(e) == Some(server_pid))
            .is_empty()
    );

    // The child the agent started is part of its session.
    let fetched = sensor.wait_for_n(WAIT, 1, is(curl_pid, "tool_call"));
    let fetched = fetched.first().expect("the child's request is a tool call");
    assert_eq!(
        fetched["agent"]["session"]["id"],
        session.as_str(),
        "{fetched}"
    );
    assert_eq!(fetched["agent"]["root"]["pid"], agent_pid, "{fetched}");
    assert_eq!(fetched["url"]["path"], "/healthz");
    assert_eq!(fetched["tls"]["library"], "openssl");
    assert_eq!(
        fetched["causation"]["parent_event_id"], first_id,
        "{fetched}"
    );

    // The agent's connections end with their duration and bytes: the
    // tool API's connection (opened after the process became an agent, so
    // counted whole; urllib closes it after the answer) has both ways.
    let counted = |e: &Value| {
        is(agent_pid, "connection_close")(e)
            && e["server"]["port"] == api.port
            && e["client"]["bytes"].as_u64().is_some_and(|b| b > 0)
            && e["server"]["bytes"].as_u64().is_some_and(|b| b > 0)
    };
    let closes = sensor.wait_for_n(WAIT, 1, counted);
    let close = closes.first().unwrap_or_else(|| {
        panic!(
            "no connection_close with bytes both ways; agent events: {:#?}",
            sensor.events(|e| pid_of(e) == Some(agent_pid))
        )
    });
    assert!(
        close["event"]["duration"].as_u64().is_some_and(|d| d > 0),
        "{close}"
    );
    assert_eq!(close["agent"]["session"]["id"], session.as_str());

    sensor.barrier();
    let all = sensor.events(|e| e["agent"]["session"]["id"] == session.as_str());
    assert_schema_valid(&all);
    sensor.assert_never_printed(&key);

    // The timeline of the session, from the sensor's output as a file.
    let dir = scratch(if stream {
        "timeline-stream"
    } else {
        "timeline"
    });
    let file = dir.join("events.jsonl");
    std::fs::write(&file, sensor.stdout_text()).unwrap();
    let out = Command::new(std::env::var_os("SENSOR_BIN").unwrap())
        .args(["timeline", "--session", &session])
        .arg(&file)
        .output()
        .unwrap();
    let text = expect_success(&out);
    for needle in [
        format!("[tool call {weather_id}] <- {first_id}"),
        format!("MCP tools/call lookup_order on {server} [tool call {order_id}]"),
        "asks for ".to_owned(),
        "/healthz".to_owned(),
    ] {
        assert!(text.contains(&needle), "timeline lacks {needle:?}:\n{text}");
    }
    let model_at = text.find("model_call").unwrap();
    let tool_at = text.find("tool_call").unwrap();
    assert!(model_at < tool_at, "in order:\n{text}");
}

#[test]
fn agent_tool_calls_mcp_and_children_are_tied_to_the_model_call() {
    the_chain(false);
}

#[test]
fn the_same_with_a_streamed_model_answer() {
    the_chain(true);
}

#[test]
fn a_process_that_is_not_an_agent_makes_no_tool_call() {
    let sensor = shared_sensor();
    let api = FakeApi::start("not-agent");
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--fail", "-o", "/dev/null", "--cacert"])
        .arg(&api.ca)
        .arg(format!(
            "https://127.0.0.1:{}/tool/weather?city=Paris",
            api.port
        ));
    let child = curl.spawn().unwrap();
    let pid = u64::from(child.id());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Its connect is seen (so the sensor watched it), and nothing else.
    assert!(
        sensor
            .wait_for(WAIT, |e| action(e) == "connect" && pid_of(e) == Some(pid))
            .is_some()
    );
    sensor.barrier();
    let events = sensor.events(|e| pid_of(e) == Some(pid));
    assert!(
        events
            .iter()
            .all(|e| action(e) != "tool_call" && e["agent"].is_null()),
        "{events:#?}"
    );
}

/// The DNS name a process resolved is on its connect events: a real
/// resolver exchange (glibc in curl) with the project's DNS server,
/// through a resolv.conf of the test's own (in a mount namespace).
#[test]
fn connect_events_carry_the_name_the_process_resolved() {
    let sensor = shared_sensor();
    let api = FakeApi::start_full("dns");
    let dir = scratch("dns");
    let mut dns = Command::new("python3")
        .arg(workspace().join("tests/fixtures/dns_server.py"))
        .args(["--addr", "127.0.0.2", "--zone", "sensor.test=127.0.0.1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dns.stdout.take().unwrap()).lines();
    let ready = lines.next().expect("DNS server READY").unwrap();
    assert!(ready.starts_with("READY "), "{ready}");
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.2\n").unwrap();
    let url = format!("http://api.sensor.test:{}/healthz", api.plain_port.unwrap());
    let child = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc/resolv.conf && exec curl -sS --fail -o /dev/null {url}",
            resolv.display()
        ))
        .spawn()
        .unwrap();
    let pid = u64::from(child.id());
    let out = child.wait_with_output().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(dns.id() as i32, libc::SIGTERM) };
    let _ = dns.wait();
    assert!(out.status.success(), "{out:?}");
    let connect = sensor
        .wait_for(WAIT, |e| {
            action(e) == "connect"
                && pid_of(e) == Some(pid)
                && e["server"]["port"] == api.plain_port.unwrap()
        })
        .unwrap_or_else(|| {
            panic!(
                "no connect; events of {pid}: {:#?}",
                sensor.events(|e| pid_of(e) == Some(pid))
            )
        });
    assert_eq!(connect["server"]["domain"], "api.sensor.test", "{connect}");
    assert_eq!(connect["server"]["address"], "127.0.0.1", "{connect}");
    assert_eq!(connect["server"]["ip"], "127.0.0.1", "{connect}");
    assert_schema_valid(std::slice::from_ref(&connect));
    // Not a model call and not an agent: the kernel was told to stop
    // copying that cleartext connection.
    let released = sensor.wait_for(WAIT, |e| {
        action(e) == "sensor_health"
            && e["sensor"]["pipeline"]["cleartext_released"]
                .as_u64()
                .is_some_and(|n| n > 0)
    });
    assert!(released.is_some(), "no cleartext connection was released");
}
