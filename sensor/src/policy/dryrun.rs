//! `sensor policy test POLICY FILE...`: replays recorded events through a
//! policy and prints what it decides for each judged event and per rule,
//! next to what was recorded, so rules can be tuned on real traffic before
//! they are enforced.

use std::{
    collections::BTreeMap,
    io::{BufRead, Write},
    path::PathBuf,
};

use serde_json::{Value, json};

use super::{Action, Facts, Policy};

#[derive(Debug, Default)]
pub struct Summary {
    pub lines: u64,
    pub unreadable: u64,
    pub judged: u64,
    /// Judged events whose recorded decision (or rule) differs.
    pub changed: u64,
    /// Per rule id (and `default`): events decided, by action.
    pub per_rule: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Replays `files` (JSON lines, as the sensor writes them) and writes one
/// line per judged event, then the summary, to `out`.
pub fn replay(
    policy: &Policy,
    files: &[PathBuf],
    as_json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Summary> {
    use anyhow::Context as _;
    let mut summary = Summary::default();
    for id in std::iter::once("default".to_owned()).chain(policy.rules.iter().map(|r| r.id.clone()))
    {
        summary.per_rule.insert(id, BTreeMap::new());
    }
    for path in files {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            summary.lines += 1;
            if line.trim().is_empty() {
                continue;
            }
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                summary.unreadable += 1;
                continue;
            };
            let Some(decision) = policy.decide(&event) else {
                continue;
            };
            summary.judged += 1;
            let rule = policy.rule_id(&decision).to_owned();
            let action = event
                .fact("event.action")
                .and_then(Value::as_str)
                .unwrap_or("");
            *summary
                .per_rule
                .entry(rule.clone())
                .or_default()
                .entry(action.to_owned())
                .or_default() += 1;
            let recorded = (
                event.fact("policy.decision").and_then(Value::as_str),
                event.fact("policy.rule").and_then(Value::as_str),
            );
            let changed = match recorded {
                (Some(d), Some(r)) => d != decision.action.as_str() || r != rule,
                _ => false,
            };
            if changed {
                summary.changed += 1;
            }
            let at = format!("{}:{}", path.display(), n + 1);
            if as_json {
                let line = json!({
                    "at": at,
                    "event.id": event.fact("event.id"),
                    "event.action": action,
                    "actor": actor(&event),
                    "destination": destination(&event),
                    "policy.decision": decision.action.as_str(),
                    "policy.rule": rule,
                    "policy.reason": decision.reason,
                    "recorded.decision": recorded.0,
                    "recorded.rule": recorded.1,
                    "changed": changed,
                });
                writeln!(out, "{line}")?;
            } else {
                let was = match recorded {
                    (Some(d), Some(r)) if changed => format!("  (recorded: {d} by {r})"),
                    (Some(_), Some(_)) => "  (as recorded)".to_owned(),
                    _ => String::new(),
                };
                writeln!(
                    out,
                    "{at}  {action:<10}  {}  ->  {}  :  {} by {rule}{was}",
                    actor(&event),
                    destination(&event),
                    decision.action.as_str().to_uppercase(),
                )?;
            }
        }
    }
    if !as_json {
        writeln!(out)?;
        writeln!(
            out,
            "{} judged events of {} lines ({} unreadable); {} decided differently from the record",
            summary.judged, summary.lines, summary.unreadable, summary.changed
        )?;
        writeln!(
            out,
            "{:<32} {:>7} {:>11} {:>10} {:>8}",
            "rule", "action", "model_call", "tool_call", "connect"
        )?;
        let action_of = |id: &str| -> Action {
            policy
                .rules
                .iter()
                .find(|r| r.id == id)
                .map_or(policy.default, |r| r.action)
        };
        for (rule, counts) in &summary.per_rule {
            let n = |a: &str| counts.get(a).copied().unwrap_or(0);
            writeln!(
                out,
                "{rule:<32} {:>7} {:>11} {:>10} {:>8}",
                action_of(rule).as_str(),
                n("model_call"),
                n("tool_call"),
                n("connect")
            )?;
        }
    }
    Ok(summary)
}

/// Who acted, in a few words: the pod, the container, or the process.
fn actor(e: &Value) -> String {
    let s = |p: &str| e.fact(p).and_then(Value::as_str).map(str::to_owned);
    let pid = e.fact("process.pid").and_then(Value::as_u64).unwrap_or(0);
    let exe = s("process.executable.name").unwrap_or_else(|| "?".into());
    if let (Some(ns), Some(pod)) = (s("k8s.namespace.name"), s("k8s.pod.name")) {
        let sa = s("k8s.service_account.name").unwrap_or_else(|| "?".into());
        return format!("pod {ns}/{pod} sa={sa} {exe}[{pid}]");
    }
    if let Some(c) = s("container.name").or_else(|| s("container.id")) {
        return format!("container {c} {exe}[{pid}]");
    }
    let user = s("process.user.name").unwrap_or_else(|| "?".into());
    format!("host {user} {exe}[{pid}]")
}

/// Where it went: model and host, tool, or address.
fn destination(e: &Value) -> String {
    let s = |p: &str| e.fact(p).and_then(Value::as_str).map(str::to_owned);
    let host = s("tls.server_name")
        .or_else(|| s("server.domain"))
        .or_else(|| s("server.address"))
        .unwrap_or_else(|| "?".into());
    let port = e.fact("server.port").and_then(Value::as_u64).unwrap_or(0);
    let what = s("gen_ai.request.model")
        .map(|m| format!("model {m} "))
        .or_else(|| s("gen_ai.tool.name").map(|t| format!("tool {t} ")))
        .unwrap_or_default();
    format!("{what}{host}:{port}")
}
