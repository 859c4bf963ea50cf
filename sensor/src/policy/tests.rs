use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use sensor_common::policy::{ANY_PORT, PolicyKey, PolicyVerdict, UNJUDGED_CGROUP};
use serde_json::{Value, json};

use super::{
    Action, Policy,
    enforce::{Enforcer, VerdictTables, addr16},
};
use crate::event::Event;

const POLICY: &str = r#"
default = "alert"
violation_interval_secs = 30

[[rules]]
id = "batch-no-models"
action = "deny"
enforce = true
namespace = "batch"
service_account = "runner"
host = ["api.example.test", "10.1.2.3"]

[[rules]]
id = "agents-small-models-only"
action = "deny"
enforce = true
namespace = "agents"
provider = "openai"
model = ["gpt-4o", "o1*"]

[[rules]]
id = "agents-openai"
action = "allow"
namespace = "agents"
provider = "openai"

[[rules]]
id = "curl-alert"
action = "alert"
executable = "curl"
"#;

fn policy() -> Policy {
    Policy::parse(Path::new("p.toml"), POLICY).expect("valid policy")
}

fn model_call(ns: &str, sa: &str, model: &str, host: &str) -> Value {
    json!({
        "event": {"action": "model_call"},
        "k8s": {"namespace": {"name": ns}, "service_account": {"name": sa}},
        "gen_ai": {"request": {"model": model}},
        "server": {"address": host, "ip": "192.0.2.7", "port": 443},
        "process": {"executable": {"path": "/usr/bin/python3", "name": "python3"}},
    })
}

#[test]
fn first_matching_rule_decides() {
    let p = policy();
    let d = p
        .decide(&model_call("batch", "runner", "gpt-4o", "api.example.test"))
        .expect("judged");
    assert_eq!((d.action, p.rule_id(&d)), (Action::Deny, "batch-no-models"));
    assert!(d.reason.contains("service_account=runner"), "{}", d.reason);
    // The model rule before the provider allow.
    let d = p
        .decide(&model_call("agents", "x", "gpt-4o", "api.openai.com"))
        .expect("judged");
    assert_eq!(p.rule_id(&d), "agents-small-models-only");
    let d = p
        .decide(&model_call("agents", "x", "gpt-4o-mini", "api.openai.com"))
        .expect("judged");
    assert_eq!((d.action, p.rule_id(&d)), (Action::Allow, "agents-openai"));
    // Nothing matches: the default.
    let d = p
        .decide(&model_call("web", "x", "m", "api.openai.com"))
        .expect("judged");
    assert_eq!((d.action, p.rule_id(&d)), (Action::Alert, "default"));
    // Executable by file name.
    let mut e = model_call("web", "x", "m", "h");
    e["process"]["executable"] = json!({"path": "/usr/bin/curl", "name": "curl"});
    assert_eq!(p.rule_id(&p.decide(&e).expect("judged")), "curl-alert");
    // Only model calls, tool calls and connects are judged.
    assert!(
        p.decide(&json!({"event": {"action": "process_exec"}}))
            .is_none()
    );
}

#[test]
fn connects_are_judged_by_address_and_name() {
    let p = policy();
    let connect = json!({
        "event": {"action": "connect"},
        "k8s": {"namespace": {"name": "batch"}, "service_account": {"name": "runner"}},
        "server": {"address": "10.1.2.3", "ip": "10.1.2.3", "port": 443},
    });
    assert_eq!(
        p.rule_id(&p.decide(&connect).expect("judged")),
        "batch-no-models"
    );
    let mut by_name = connect.clone();
    by_name["server"] =
        json!({"address": "192.0.2.9", "ip": "192.0.2.9", "domain": "API.example.test."});
    assert_eq!(
        p.rule_id(&p.decide(&by_name).expect("judged")),
        "batch-no-models"
    );
}

#[test]
fn judge_sets_fields_and_enforcement() {
    let p = policy();
    let mut e = Event::new("model_call");
    e.set("k8s.namespace.name", "agents")
        .set("gen_ai.request.model", "o1-preview")
        .set("server.address", "api.openai.com");
    let d = p.judge(&mut e, None).expect("judged");
    assert_eq!(d.action, Action::Deny);
    assert_eq!(e.get("policy.decision"), Some(&json!("deny")));
    assert_eq!(
        e.get("policy.rule"),
        Some(&json!("agents-small-models-only"))
    );
    // A model rule cannot be carried out at connect: alert-only, and why.
    assert_eq!(e.get("policy.enforcement"), Some(&json!("alert-only")));
    assert!(e.get("policy.enforcement_reason").is_some());
    assert_eq!(e.get("policy.version"), Some(&json!(p.version)));
    let mut c = Event::new("connect");
    c.set("k8s.namespace.name", "batch")
        .set("k8s.service_account.name", "runner")
        .set("server.ip", "10.1.2.3");
    p.judge(&mut c, Some(0)).expect("judged");
    assert_eq!(c.get("policy.enforcement"), Some(&json!("blocked")));
}

#[test]
fn invalid_rules_are_refused_with_rule_and_reason() {
    let bad = |rule: &str, needle: &str| {
        let text = format!("[[rules]]\nid = \"r1\"\n{rule}\n");
        let err = Policy::parse(Path::new("p.toml"), &text)
            .expect_err(rule)
            .to_string();
        assert!(err.contains("r1") || err.contains("p.toml"), "{err}");
        assert!(err.contains(needle), "{rule}: {err}");
    };
    bad(
        "action = \"deny\"\nenforce = true\nexecutable = \"curl\"\nhost = \"x\"",
        "executable",
    );
    bad("action = \"alert\"\nenforce = true\nhost = \"x\"", "deny");
    bad(
        "action = \"deny\"\nenforce = true\nnamespace = \"a\"",
        "host",
    );
    bad("action = \"allow\"", "no match terms");
    bad("action = \"allow\"\nhost = \"x:443\"", "port");
    bad(
        "action = \"allow\"\nevents = [\"process_exec\"]",
        "process_exec",
    );
    bad("action = \"allow\"\nnamespace = []", "empty");
    bad("action = \"block\"\nnamespace = \"a\"", "block");
    bad("action = \"allow\"\nnamspace = \"a\"", "namspace");
    let dup = "[[rules]]\nid = \"a\"\naction = \"allow\"\npod = \"x\"\n[[rules]]\nid = \"a\"\naction = \"deny\"\npod = \"y\"\n";
    let err = Policy::parse(Path::new("p.toml"), dup)
        .expect_err("dup")
        .to_string();
    assert!(err.contains("same id"), "{err}");
}

#[derive(Default, Clone)]
struct Tables(Arc<Mutex<TablesInner>>);

#[derive(Default)]
struct TablesInner {
    verdicts: BTreeMap<PolicyKey, PolicyVerdict>,
    addrs: std::collections::BTreeSet<[u8; 16]>,
    judged: std::collections::BTreeSet<u64>,
}

impl VerdictTables for Tables {
    fn set_verdict(&mut self, key: PolicyKey, verdict: PolicyVerdict) -> Result<(), String> {
        self.0.lock().expect("lock").verdicts.insert(key, verdict);
        Ok(())
    }
    fn remove_verdict(&mut self, key: &PolicyKey) {
        self.0.lock().expect("lock").verdicts.remove(key);
    }
    fn set_address(&mut self, addr: [u8; 16]) -> Result<(), String> {
        self.0.lock().expect("lock").addrs.insert(addr);
        Ok(())
    }
    fn remove_address(&mut self, addr: &[u8; 16]) {
        self.0.lock().expect("lock").addrs.remove(addr);
    }
    fn set_judged(&mut self, cgroup: u64) -> Result<(), String> {
        self.0.lock().expect("lock").judged.insert(cgroup);
        Ok(())
    }
    fn remove_judged(&mut self, cgroup: u64) {
        self.0.lock().expect("lock").judged.remove(&cgroup);
    }
}

/// What the kernel program decides, from the tables.
fn kernel_refuses(t: &Tables, cgroup: u64, ip: &str, port: u16) -> bool {
    let t = t.0.lock().expect("lock");
    let addr = addr16(ip.parse::<IpAddr>().expect("ip"));
    if !t.addrs.contains(&addr) {
        return false;
    }
    let subject = if t.judged.contains(&cgroup) {
        cgroup
    } else {
        UNJUDGED_CGROUP
    };
    let key = |port| PolicyKey {
        cgroup_id: subject,
        addr,
        port,
        _pad: [0; 6],
    };
    t.verdicts
        .get(&key(port))
        .or_else(|| t.verdicts.get(&key(ANY_PORT)))
        .is_some_and(|v| v.deny == 1)
}

fn identity(ns: &str, sa: &str) -> Arc<crate::event::Fields> {
    let mut e = Event::default();
    e.set("k8s.namespace.name", ns.to_owned())
        .set("k8s.service_account.name", sa.to_owned());
    Arc::new(e.into_fields())
}

#[test]
fn kernel_verdicts_follow_the_rules_and_never_overreach() {
    let tables = Tables::default();
    let policy = Arc::new(policy());
    let mut enf = Enforcer::new(Arc::clone(&policy), Box::new(tables.clone()), false);
    enf.resolved("api.example.test", "192.0.2.10".parse().expect("ip"));
    // A name no enforced rule names is not guarded.
    enf.resolved("api.other.test", "192.0.2.11".parse().expect("ip"));
    enf.tick();
    enf.judge_cgroup(100, identity("batch", "runner"));
    enf.judge_cgroup(200, identity("batch", "other"));
    enf.judge_cgroup(300, identity("agents", "x"));
    assert!(kernel_refuses(&tables, 100, "192.0.2.10", 443));
    assert!(kernel_refuses(&tables, 100, "10.1.2.3", 5432));
    assert!(kernel_refuses(&tables, 100, "::ffff:10.1.2.3", 443));
    assert!(!kernel_refuses(&tables, 100, "192.0.2.11", 443));
    assert!(!kernel_refuses(&tables, 200, "192.0.2.10", 443));
    // The model rule is request-level: agents' connects to OpenAI go on.
    enf.resolved("api.openai.com", "192.0.2.20".parse().expect("ip"));
    enf.tick();
    assert!(!kernel_refuses(&tables, 300, "192.0.2.20", 443));
    // A cgroup not judged yet: the namespace rule may or may not hold,
    // so nothing is refused.
    assert!(!kernel_refuses(&tables, 999, "192.0.2.10", 443));
    // A reload without the rule takes every verdict away.
    let relaxed = Policy::parse(
        Path::new("p.toml"),
        "[[rules]]\nid = \"a\"\naction = \"alert\"\nnamespace = \"batch\"\n",
    )
    .expect("valid");
    enf.set_policy(Arc::new(relaxed));
    assert!(!kernel_refuses(&tables, 100, "192.0.2.10", 443));
    let inner = tables.0.lock().expect("lock");
    assert!(
        inner.verdicts.is_empty() && inner.addrs.is_empty(),
        "stale state left"
    );
}

#[test]
fn unjudged_cgroups_get_only_certain_denials() {
    let text = r#"
[[rules]]
id = "nobody-to-evil"
action = "deny"
enforce = true
host = "evil.test"

[[rules]]
id = "ops-to-internal"
action = "allow"
namespace = "ops"
host = "internal.test"

[[rules]]
id = "nobody-to-internal"
action = "deny"
enforce = true
host = "internal.test"
port = 8443
"#;
    let tables = Tables::default();
    let policy = Arc::new(Policy::parse(Path::new("p.toml"), text).expect("valid"));
    let mut enf = Enforcer::new(policy, Box::new(tables.clone()), false);
    enf.resolved("evil.test", "192.0.2.66".parse().expect("ip"));
    enf.resolved("internal.test", "192.0.2.77".parse().expect("ip"));
    enf.tick();
    // Whoever it is, evil.test is refused, even before the cgroup is judged.
    assert!(kernel_refuses(&tables, 5, "192.0.2.66", 443));
    // internal.test: ops may, so an unknown cgroup is let through...
    assert!(!kernel_refuses(&tables, 5, "192.0.2.77", 8443));
    // ... and once judged, only ops is, and only the named port is refused.
    enf.judge_cgroup(5, identity("web", "x"));
    enf.judge_cgroup(6, identity("ops", "x"));
    assert!(kernel_refuses(&tables, 5, "192.0.2.77", 8443));
    assert!(!kernel_refuses(&tables, 5, "192.0.2.77", 443));
    assert!(!kernel_refuses(&tables, 6, "192.0.2.77", 8443));
}

#[test]
fn what_a_process_resolves_holds_for_its_own_cgroup_only() {
    let text =
        "[[rules]]\nid = \"no-openai\"\naction = \"deny\"\nenforce = true\nprovider = \"openai\"\n";
    let tables = Tables::default();
    let policy = Arc::new(Policy::parse(Path::new("p.toml"), text).expect("valid"));
    let mut enf = Enforcer::new(policy, Box::new(tables.clone()), false);
    enf.judge_cgroup(10, identity("a", "x"));
    enf.judge_cgroup(20, identity("b", "y"));
    // cgroup 10 says api.openai.com is the cluster DNS.
    enf.learn(10, "api.openai.com", "10.96.0.10".parse().expect("ip"));
    enf.tick();
    assert!(kernel_refuses(&tables, 10, "10.96.0.10", 53));
    assert!(!kernel_refuses(&tables, 20, "10.96.0.10", 53));
    assert!(!kernel_refuses(&tables, 99, "10.96.0.10", 53));
    // The sensor's own resolution holds for everyone.
    enf.resolved("api.openai.com", "192.0.2.30".parse().expect("ip"));
    enf.tick();
    assert!(kernel_refuses(&tables, 20, "192.0.2.30", 443));
    assert!(kernel_refuses(&tables, 99, "192.0.2.30", 443));
    // A cgroup with no process left is forgotten, and its addresses.
    enf.forget_cgroups_except(&[20].into_iter().collect());
    assert!(
        !tables
            .0
            .lock()
            .expect("lock")
            .addrs
            .contains(&addr16("10.96.0.10".parse().expect("ip")))
    );
}

#[test]
fn an_identity_not_read_yet_is_not_denied_for_what_it_may_be() {
    let text = r#"
[[rules]]
id = "model-users"
action = "allow"
service_account = "model-user"

[[rules]]
id = "nobody-else"
action = "deny"
enforce = true
host = "api.example.test"
"#;
    let tables = Tables::default();
    let policy = Arc::new(Policy::parse(Path::new("p.toml"), text).expect("valid"));
    let mut enf = Enforcer::new(policy, Box::new(tables.clone()), false);
    enf.resolved("api.example.test", "192.0.2.40".parse().expect("ip"));
    enf.tick();
    let mut e = Event::default();
    e.set("k8s.namespace.name", "ml")
        .set("identity.unresolved", json!(["k8s.service_account.name"]));
    enf.judge_cgroup(30, Arc::new(e.into_fields()));
    assert!(!kernel_refuses(&tables, 30, "192.0.2.40", 443));
    enf.judge_cgroup(30, identity("ml", "other"));
    assert!(kernel_refuses(&tables, 30, "192.0.2.40", 443));
    enf.judge_cgroup(31, identity("ml", "model-user"));
    assert!(!kernel_refuses(&tables, 31, "192.0.2.40", 443));
}

#[test]
fn violations_are_rate_limited_per_actor_and_rule() {
    let mut l = super::ViolationLimiter::default();
    let s = 1_000_000_000;
    assert_eq!(l.admit("pod:a", "r", 0, 60), Some(0));
    assert_eq!(l.admit("pod:a", "r", 10 * s, 60), None);
    assert_eq!(l.admit("pod:a", "r", 20 * s, 60), None);
    assert_eq!(l.admit("pod:b", "r", 20 * s, 60), Some(0));
    assert_eq!(l.admit("pod:a", "other", 20 * s, 60), Some(0));
    assert_eq!(l.admit("pod:a", "r", 61 * s, 60), Some(2));
}

#[test]
fn dry_run_reproduces_decisions() {
    let p = policy();
    let dir = std::env::temp_dir().join(format!("policy-dry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("events.jsonl");
    let mut recorded = model_call("batch", "runner", "gpt-4o", "api.example.test");
    recorded["policy"] = json!({"decision": "deny", "rule": "batch-no-models"});
    let mut changed = model_call("web", "x", "m", "h");
    changed["policy"] = json!({"decision": "allow", "rule": "old-rule"});
    let text = format!(
        "{}\n{}\nnot json\n{}\n",
        recorded,
        changed,
        json!({"event": {"action": "process_exit"}})
    );
    std::fs::write(&file, text).expect("write");
    let mut out = Vec::new();
    let summary = super::dryrun::replay(&p, &[file], false, &mut out).expect("replay");
    let out = String::from_utf8(out).expect("utf-8");
    assert_eq!(
        (summary.judged, summary.changed, summary.unreadable),
        (2, 1, 1),
        "{out}"
    );
    assert!(
        out.contains("DENY by batch-no-models  (as recorded)"),
        "{out}"
    );
    assert!(
        out.contains("ALERT by default  (recorded: allow by old-rule)"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
