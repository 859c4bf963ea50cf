//! `sensor timeline`: one agent session's story from output files, in
//! order: who started the agent (its ancestry: the human's shell, the
//! parent service), its model calls with the tools they asked for, the
//! tool calls and MCP calls that followed (with the model call each one
//! answers), the processes it started and their end, and blind spots.

use std::{
    io::{BufRead as _, Write},
    path::PathBuf,
};

use serde_json::Value;

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

fn text(v: &Value, path: &str) -> Option<String> {
    match at(v, path) {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The events of `session` in the files, sorted by time (then by the
/// output's sequence). Lines that are not JSON objects are counted in the
/// second value.
pub fn collect(files: &[PathBuf], session: &str) -> std::io::Result<(Vec<Value>, u64)> {
    let mut events = Vec::new();
    let mut bad = 0u64;
    for file in files {
        let reader = std::io::BufReader::new(std::fs::File::open(file)?);
        for line in reader.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(v) if v.is_object() => {
                    if at(&v, "agent.session.id").as_str() == Some(session) {
                        events.push(v);
                    }
                }
                _ => bad += 1,
            }
        }
    }
    events.sort_by(|a, b| {
        let ka = (text(a, "@timestamp"), at(a, "event.sequence").as_u64());
        let kb = (text(b, "@timestamp"), at(b, "event.sequence").as_u64());
        ka.cmp(&kb)
    });
    Ok((events, bad))
}

/// One line describing an event.
pub fn describe(e: &Value) -> String {
    let pid = text(e, "process.pid").unwrap_or_default();
    let exe = text(e, "process.executable.name").unwrap_or_default();
    let action = text(e, "event.action").unwrap_or_default();
    let what = match action.as_str() {
        "model_call" => {
            let mut s = format!(
                "{} {} {}",
                text(e, "gen_ai.provider.name").unwrap_or_default(),
                text(e, "gen_ai.request.model").unwrap_or_default(),
                text(e, "http.response.status_code").unwrap_or_else(|| "-".into()),
            );
            if let Some(calls) = at(e, "gen_ai.response.tool_calls").as_array() {
                let names: Vec<String> = calls
                    .iter()
                    .map(|c| {
                        format!(
                            "{}({})",
                            text(c, "name").unwrap_or_default(),
                            text(c, "id").unwrap_or_default()
                        )
                    })
                    .collect();
                s.push_str(&format!(" asks for {}", names.join(", ")));
            }
            s
        }
        "tool_call" => {
            let mut s = match text(e, "mcp.method.name") {
                Some(method) => format!(
                    "MCP {method}{} on {}",
                    text(e, "gen_ai.tool.name")
                        .map(|t| format!(" {t}"))
                        .unwrap_or_default(),
                    text(e, "mcp.server.name")
                        .or_else(|| text(e, "server.address"))
                        .unwrap_or_default(),
                ),
                None => format!(
                    "{} {}{} {}",
                    text(e, "http.request.method").unwrap_or_default(),
                    text(e, "server.address").unwrap_or_default(),
                    text(e, "url.path").unwrap_or_default(),
                    text(e, "http.response.status_code").unwrap_or_else(|| "-".into()),
                ),
            };
            if let Some(id) = text(e, "gen_ai.tool.call.id") {
                s.push_str(&format!(" [tool call {id}]"));
            }
            if let Some(parent) = text(e, "causation.parent_event_id") {
                s.push_str(&format!(" <- {parent}"));
            }
            s
        }
        "connect" => format!(
            "{}:{} {}",
            text(e, "server.ip").unwrap_or_default(),
            text(e, "server.port").unwrap_or_default(),
            text(e, "event.outcome").unwrap_or_default()
        ),
        "process_exec" => text(e, "process.command_line").unwrap_or_default(),
        "blind_spot" => format!(
            "{} ({})",
            text(e, "tls.server_name")
                .or_else(|| text(e, "server.address"))
                .unwrap_or_default(),
            text(e, "blind_spot.reason").unwrap_or_default()
        ),
        _ => String::new(),
    };
    format!(
        "{} {:<12} {:>7} {:<16} {}  ({})",
        text(e, "@timestamp").unwrap_or_default(),
        action,
        pid,
        exe,
        what,
        text(e, "event.id").unwrap_or_default()
    )
}

/// Writes the session's timeline: the ancestry of its first process (who
/// started it), then every event.
pub fn print(
    out: &mut impl Write,
    session: &str,
    events: &[Value],
    json: bool,
) -> std::io::Result<()> {
    if json {
        for e in events {
            writeln!(out, "{e}")?;
        }
        return Ok(());
    }
    writeln!(out, "agent session {session}: {} events", events.len())?;
    if let Some(first) = events.first() {
        let root = text(first, "agent.root.pid").unwrap_or_default();
        writeln!(
            out,
            "started by: {}",
            ancestry_line(first).unwrap_or_else(|| "unknown".into())
        )?;
        let login = [
            ("user", text(first, "process.user.name")),
            ("login uid", text(first, "process.loginuid")),
            ("pod", text(first, "k8s.pod.name")),
            ("service account", text(first, "k8s.serviceaccount.name")),
        ];
        let who: Vec<String> = login
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
            .collect();
        writeln!(out, "agent root pid {root}; {}", who.join(", "))?;
    }
    for e in events {
        writeln!(out, "{}", describe(e))?;
    }
    Ok(())
}

fn ancestry_line(e: &Value) -> Option<String> {
    let chain = at(e, "process.ancestry").as_array()?;
    let parts: Vec<String> = chain
        .iter()
        .rev()
        .map(|a| {
            format!(
                "{}[{}]",
                text(a, "executable").unwrap_or_else(|| "?".into()),
                text(a, "pid").unwrap_or_default()
            )
        })
        .collect();
    Some(parts.join(" > "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn collects_one_session_in_order() {
        let dir = std::env::temp_dir().join(format!("timeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("events.jsonl");
        let lines = [
            r#"{"@timestamp":"2026-01-01T00:00:02.000000000Z","event":{"action":"tool_call","id":"r-3","sequence":3},"agent":{"session":{"id":"s1"}},"process":{"pid":11},"http":{"request":{"method":"GET"}},"server":{"address":"api.example"},"url":{"path":"/w"},"gen_ai":{"tool":{"call":{"id":"call_1"}}},"causation":{"parent_event_id":"r-1"}}"#,
            r#"{"@timestamp":"2026-01-01T00:00:01.000000000Z","event":{"action":"model_call","id":"r-1","sequence":1},"agent":{"session":{"id":"s1","root":{"pid":10}}},"process":{"pid":10,"ancestry":[{"pid":5,"executable":"/bin/bash"}]},"gen_ai":{"response":{"tool_calls":[{"id":"call_1","name":"get_weather"}]}}}"#,
            r#"{"@timestamp":"2026-01-01T00:00:01.500000000Z","event":{"action":"model_call","id":"r-2","sequence":2},"agent":{"session":{"id":"other"}},"process":{"pid":99}}"#,
            "not json",
        ];
        std::fs::write(&file, lines.join("\n")).unwrap();
        let (events, bad) = collect(std::slice::from_ref(&file), "s1").unwrap();
        assert_eq!(bad, 1);
        let ids: Vec<_> = events
            .iter()
            .map(|e| text(e, "event.id").unwrap())
            .collect();
        assert_eq!(ids, vec!["r-1", "r-3"]);
        let mut out = Vec::new();
        print(&mut out, "s1", &events, false).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("started by: /bin/bash[5]"), "{out}");
        assert!(out.contains("asks for get_weather(call_1)"), "{out}");
        assert!(out.contains("[tool call call_1] <- r-1"), "{out}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
