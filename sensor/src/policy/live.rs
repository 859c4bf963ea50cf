//! The policy inside the running daemon: decisions on events, the
//! `policy_violation` events they raise, the kernel's refused connects,
//! and the enforcer's upkeep.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use serde_json::{Value, json};

use super::{
    Action, Decision, Facts, Policy, ViolationLimiter, enforce::Enforcer, enforce::VerdictTables,
};
use crate::event::{Event, Fields};

/// A refused connect waits this long for its `connect` record.
const BLOCK_WAIT_NS: u64 = 2_000_000_000;

/// Fields of the judged event a violation repeats (besides the actor's).
const COPIED: [&str; 18] = [
    "server.address",
    "server.domain",
    "server.ip",
    "server.port",
    "tls.server_name",
    "url.domain",
    "url.path",
    "http.request.method",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.operation.name",
    "gen_ai.tool.name",
    "mcp.server.name",
    "mcp.method.name",
    "credential.kind",
    "credential.fingerprint",
    "trace.id",
    "error.code",
];

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct LiveStats {
    pub decisions_allow: u64,
    pub decisions_alert: u64,
    pub decisions_deny: u64,
    pub violations_emitted: u64,
    pub violations_suppressed: u64,
    pub connects_blocked: u64,
    /// Refused connects whose `connect` record never came (a UDP socket,
    /// a lost record).
    pub blocks_unmatched: u64,
}

#[derive(Debug, Clone, Copy)]
struct Block {
    rule: u32,
    generation: u32,
    addr: IpAddr,
    port: u16,
    ts_ns: u64,
}

pub struct LivePolicy {
    policy: Arc<Policy>,
    enforcer: Option<Enforcer>,
    limiter: ViolationLimiter,
    /// Refused connects by thread, until the connect's exit record.
    pending: HashMap<u32, Block>,
    pub stats: LiveStats,
}

impl LivePolicy {
    /// `tables`: the kernel's verdict tables when the connect hooks are
    /// attached.
    pub fn new(policy: Policy, tables: Option<Box<dyn VerdictTables + Send>>) -> Self {
        let policy = Arc::new(policy);
        let enforcer = tables.map(|t| Enforcer::new(Arc::clone(&policy), t, true));
        Self {
            policy,
            enforcer,
            limiter: ViolationLimiter::default(),
            pending: HashMap::new(),
            stats: LiveStats::default(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// SIGHUP with a valid policy.
    pub fn replace(&mut self, policy: Policy) {
        self.policy = Arc::new(policy);
        if let Some(enforcer) = self.enforcer.as_mut() {
            enforcer.set_policy(Arc::clone(&self.policy));
        }
    }

    pub fn enforcing(&self) -> bool {
        self.enforcer.is_some()
    }

    pub fn enforce_stats(&self) -> Option<super::enforce::EnforceStats> {
        self.enforcer.as_ref().map(|e| e.stats)
    }

    pub fn judge_cgroup(&mut self, cgroup: u64, identity: Arc<Fields>) {
        if let Some(e) = self.enforcer.as_mut() {
            e.judge_cgroup(cgroup, identity);
        }
    }

    /// A DNS answer a process of `cgroup` read.
    pub fn learn(&mut self, cgroup: u64, name: &str, ip: IpAddr) {
        if let Some(e) = self.enforcer.as_mut() {
            e.learn(cgroup, name, ip);
        }
    }

    /// The cgroups of the processes the sensor knows (sweep): the others'
    /// verdicts go.
    pub fn forget_cgroups_except(&mut self, live: &std::collections::BTreeSet<u64>) {
        if let Some(e) = self.enforcer.as_mut() {
            e.forget_cgroups_except(live);
        }
    }

    /// A connect refused in the kernel, waiting for its connect record.
    pub fn on_block(
        &mut self,
        tid: u32,
        rule: u32,
        generation: u32,
        addr: IpAddr,
        port: u16,
        ts_ns: u64,
    ) {
        self.stats.connects_blocked += 1;
        if self.pending.len() >= 16_384 {
            self.stats.blocks_unmatched += self.pending.len() as u64;
            self.pending.clear();
        }
        self.pending.insert(
            tid,
            Block {
                rule,
                generation,
                addr,
                port,
                ts_ns,
            },
        );
    }

    /// Whether the kernel refused this connect of thread `tid`: the rule
    /// (in the current policy), or `Some(None)` when the rule belongs to
    /// a policy replaced since.
    pub fn take_block(&mut self, tid: u32, addr: IpAddr, port: u16) -> Option<Option<usize>> {
        let block = self.pending.get(&tid)?;
        if !super::rules::same_ip(block.addr, addr) || block.port != port {
            return None;
        }
        let block = self.pending.remove(&tid)?;
        let current = self.enforcer.as_ref().map(Enforcer::generation);
        Some((current == Some(block.generation)).then_some(block.rule as usize))
    }

    /// Upkeep: the enforcer, and refused connects that never matched.
    pub fn tick(&mut self, now_ns: u64) {
        let before = self.pending.len();
        self.pending
            .retain(|_, b| now_ns.saturating_sub(b.ts_ns) < BLOCK_WAIT_NS);
        self.stats.blocks_unmatched += (before - self.pending.len()) as u64;
        if let Some(e) = self.enforcer.as_mut() {
            e.tick();
        }
    }

    /// Sets `policy.*` on `event`; `blocked` when the kernel refused it
    /// (with the rule when known).
    pub fn judge(&mut self, event: &mut Event, blocked: Option<Option<usize>>) -> Option<Decision> {
        let rule = blocked.map(|r| r.unwrap_or(usize::MAX));
        let decision = self.policy.judge(event, rule)?;
        match decision.action {
            Action::Allow => self.stats.decisions_allow += 1,
            Action::Alert => self.stats.decisions_alert += 1,
            Action::Deny => self.stats.decisions_deny += 1,
        }
        Some(decision)
    }

    /// The `policy_violation` event of an `alert` or `deny` decision on
    /// `event`, unless one for the same actor and rule went out within the
    /// policy's interval (then it is counted).
    pub fn violation(&mut self, event: &Event, decision: &Decision, now_ns: u64) -> Option<Event> {
        if decision.action == Action::Allow {
            return None;
        }
        // As the event says (a connect refused under a replaced policy
        // names no rule of this one).
        let rule = event
            .get("policy.rule")
            .and_then(Value::as_str)
            .unwrap_or_else(|| self.policy.rule_id(decision))
            .to_owned();
        let actor = actor_key(event);
        let Some(suppressed) =
            self.limiter
                .admit(&actor, &rule, now_ns, self.policy.violation_interval_secs)
        else {
            self.stats.violations_suppressed += 1;
            return None;
        };
        self.stats.violations_emitted += 1;
        let trigger = event.action().to_owned();
        let blocked = event.get("policy.enforcement").and_then(Value::as_str) == Some("blocked");
        let mut v = Event::new("policy_violation");
        event.copy_actor_to(&mut v);
        for path in COPIED {
            if let Some(value) = event.get(path) {
                v.set(path, value.clone());
            }
        }
        for path in [
            "policy.decision",
            "policy.rule",
            "policy.reason",
            "policy.version",
            "policy.enforcement",
            "policy.enforcement_reason",
        ] {
            if let Some(value) = event.get(path) {
                v.set(path, value.clone());
            }
        }
        let destination = ["tls.server_name", "server.domain", "server.address"]
            .iter()
            .find_map(|p| event.get(p).and_then(Value::as_str))
            .unwrap_or("?")
            .to_owned();
        let what = match (
            event.get("gen_ai.request.model").and_then(Value::as_str),
            event.get("gen_ai.tool.name").and_then(Value::as_str),
        ) {
            (Some(model), _) => format!("{trigger} (model {model})"),
            (None, Some(tool)) => format!("{trigger} (tool {tool})"),
            _ => trigger.clone(),
        };
        v.set("event.kind", "alert")
            .set("event.category", json!(["network"]))
            .set(
                "event.type",
                json!([if blocked { "denied" } else { "info" }]),
            )
            .set("event.outcome", if blocked { "failure" } else { "unknown" })
            .set("policy.trigger", trigger)
            .set("policy.violation.suppressed", suppressed)
            .set(
                "message",
                format!(
                    "{} by rule `{rule}`: {} {what} to {destination}{}",
                    decision.action.as_str(),
                    actor_words(event),
                    if blocked {
                        ": refused in the kernel"
                    } else {
                        ""
                    }
                ),
            );
        Some(v)
    }
}

/// Who acted, as the rate limiter keys it: the pod, the container, the
/// login user or user with the executable, else the process.
fn actor_key(e: &dyn Facts) -> String {
    let s = |p: &str| {
        e.fact(p)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };
    if let Some(uid) = s("k8s.pod.uid") {
        return format!("pod:{uid}");
    }
    if let Some(id) = s("container.id") {
        return format!("container:{id}");
    }
    // On the host: a person or user running a program.
    let exe = s("process.executable.path").unwrap_or_default();
    if let Some(l) = s("process.loginuid") {
        return format!("host-login:{l}:{exe}");
    }
    if let Some(u) = s("process.user.id") {
        return format!("host-user:{u}:{exe}");
    }
    format!("host-process:{}", s("process.pid").unwrap_or_default())
}

fn actor_words(e: &Event) -> String {
    let s = |p: &str| e.get(p).and_then(Value::as_str).map(str::to_owned);
    if let (Some(ns), Some(pod)) = (s("k8s.namespace.name"), s("k8s.pod.name")) {
        return match s("k8s.service_account.name") {
            Some(sa) => format!("pod {ns}/{pod} (service account {sa})"),
            None => format!("pod {ns}/{pod}"),
        };
    }
    if let Some(c) = s("container.name").or_else(|| s("container.id")) {
        return format!("container {c}");
    }
    let exe = s("process.executable.path").unwrap_or_else(|| "a process".into());
    match s("process.user.name") {
        Some(user) => format!("{exe} of {user}"),
        None => exe,
    }
}
