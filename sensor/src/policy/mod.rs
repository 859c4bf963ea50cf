//! Policy: which actor may reach which model, tool or host. A TOML file of
//! ordered rules, each a set of match terms on the actor's identity and on
//! the destination, with an action (`allow`, `alert`, `deny`); the first
//! rule whose terms all match decides, else the default action.
//!
//! Rules are judged on an event's own fields (the JSON that goes out), so
//! `sensor policy test` replaying an output file reaches the decisions the
//! daemon reached. `deny` rules marked `enforce` are also turned into
//! kernel verdicts that refuse the connect ([`enforce`]).

pub mod dryrun;
pub mod enforce;
pub mod live;
mod pattern;
mod rules;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde_json::Value;

pub use pattern::Pattern;
pub use rules::{Action, Rule, Term};

/// What a rule's terms read: the event's fields by dotted path.
pub trait Facts {
    fn fact(&self, path: &str) -> Option<&Value>;
}

impl Facts for crate::event::Event {
    fn fact(&self, path: &str) -> Option<&Value> {
        self.get(path)
    }
}

impl Facts for Value {
    fn fact(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(self, |v, key| v.get(key))
    }
}

/// Actions a policy judges.
pub const JUDGED_ACTIONS: [&str; 3] = ["model_call", "tool_call", "connect"];

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading policy {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("policy {path}: rule `{rule}` (#{index}): {reason}")]
    Rule {
        path: PathBuf,
        rule: String,
        index: usize,
        reason: String,
    },
    #[error("policy {path}: `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

/// A loaded, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub path: PathBuf,
    /// First 16 hex digits of the file's SHA-256: which policy decided.
    pub version: String,
    pub default: Action,
    pub rules: Vec<Rule>,
    /// Seconds between two `policy_violation` events of one actor and rule.
    pub violation_interval_secs: u64,
}

/// The decision on one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// Index of the deciding rule; `None` for the default.
    pub rule: Option<usize>,
    pub reason: String,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let file: rules::PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let version = {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(text.as_bytes());
            crate::credential::hex(&digest[..8])
        };
        if file.violation_interval_secs == 0 {
            return Err(PolicyError::Invalid {
                path: path.to_path_buf(),
                key: "violation_interval_secs",
                reason: "must be at least 1".into(),
            });
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        let mut ids = HashMap::new();
        for (index, raw) in file.rules.into_iter().enumerate() {
            let id = raw.id.clone();
            let rule = Rule::from_file(raw).map_err(|reason| PolicyError::Rule {
                path: path.to_path_buf(),
                rule: id.clone(),
                index: index + 1,
                reason,
            })?;
            if let Some(first) = ids.insert(id.clone(), index + 1) {
                return Err(PolicyError::Rule {
                    path: path.to_path_buf(),
                    rule: id,
                    index: index + 1,
                    reason: format!("the same id as rule #{first}"),
                });
            }
            rules.push(rule);
        }
        Ok(Self {
            path: path.to_path_buf(),
            version,
            default: file.default,
            rules,
            violation_interval_secs: file.violation_interval_secs,
        })
    }

    /// Whether any rule asks the kernel to refuse connects.
    pub fn enforces(&self) -> bool {
        self.rules.iter().any(Rule::kernel_enforced)
    }

    /// The rule id of a decision (`default` for the default action).
    pub fn rule_id(&self, decision: &Decision) -> &str {
        decision
            .rule
            .and_then(|i| self.rules.get(i))
            .map_or("default", |r| r.id.as_str())
    }

    /// Judges one event. Actions other than model calls, tool calls and
    /// connects are not judged.
    pub fn decide(&self, facts: &dyn Facts) -> Option<Decision> {
        let action = facts.fact("event.action")?.as_str()?;
        if !JUDGED_ACTIONS.contains(&action) {
            return None;
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if let Some(matched) = rule.matches(facts) {
                return Some(Decision {
                    action: rule.action,
                    rule: Some(index),
                    reason: format!("rule `{}` matched {}", rule.id, matched.join(", ")),
                });
            }
        }
        Some(Decision {
            action: self.default,
            rule: None,
            reason: format!("no rule matched: default action {}", self.default.as_str()),
        })
    }

    /// Sets `policy.*` on `event`. `blocked` says the kernel refused this
    /// connect under rule `blocked`. Returns the decision.
    pub fn judge(
        &self,
        event: &mut crate::event::Event,
        blocked: Option<usize>,
    ) -> Option<Decision> {
        let mut decision = self.decide(event)?;
        let mut rule_id = None;
        if let Some(rule) = blocked
            && decision.rule != Some(rule)
        {
            // The kernel's verdict is the fact: the connection did not
            // happen. Its rule may differ from the event's first match
            // when an earlier rule names fields a connect cannot show, or
            // belong to the policy a reload replaced a moment ago.
            decision = match self.rules.get(rule) {
                Some(r) => Decision {
                    action: Action::Deny,
                    rule: Some(rule),
                    reason: format!("rule `{}` refused the connection in the kernel", r.id),
                },
                None => {
                    rule_id = Some("replaced-policy");
                    Decision {
                        action: Action::Deny,
                        rule: None,
                        reason: "a rule of the policy replaced since refused the connection in the kernel"
                            .into(),
                    }
                }
            };
        }
        let rule_id = rule_id
            .unwrap_or_else(|| self.rule_id(&decision))
            .to_owned();
        event
            .set("policy.decision", decision.action.as_str())
            .set("policy.rule", rule_id)
            .set("policy.reason", decision.reason.clone())
            .set("policy.version", self.version.clone());
        if decision.action == Action::Deny {
            let rule = decision.rule.and_then(|i| self.rules.get(i));
            let enforcement = match (blocked.is_some(), rule) {
                (true, _) => "blocked",
                _ => "alert-only",
            };
            event.set("policy.enforcement", enforcement);
            if blocked.is_none() {
                event.set("policy.enforcement_reason", not_blocked_reason(rule));
            }
        }
        Some(decision)
    }
}

/// Why a `deny` decision on something that happened was only reported.
fn not_blocked_reason(rule: Option<&Rule>) -> &'static str {
    match rule {
        None => "the default action is never enforced in the kernel",
        Some(r) if !r.enforce => "the rule is not enforced (`enforce = false`)",
        Some(r) if r.has_request_terms() => {
            "the rule names request fields (model, operation, tool, MCP server) that only show \
             inside an allowed connection: the request was already sent"
        }
        Some(_) => {
            "the connection was made before the kernel held this verdict (a process of a new \
             container, a name not yet resolved, a policy loaded later), or an earlier rule \
             may allow requests on it"
        }
    }
}

/// `policy_violation` rate limit: one event per actor and rule per
/// interval; what falls in between is counted and reported with the next.
#[derive(Debug, Default)]
pub struct ViolationLimiter {
    last: HashMap<(String, String), (u64, u64)>,
}

/// Actor-rule pairs remembered at most (oldest forgotten past it).
const MAX_LIMITER_KEYS: usize = 65_536;

impl ViolationLimiter {
    /// Whether to emit a violation of `rule` by `actor` at `now_ns`; when
    /// yes, how many were held back since the last one.
    pub fn admit(
        &mut self,
        actor: &str,
        rule: &str,
        now_ns: u64,
        interval_secs: u64,
    ) -> Option<u64> {
        let interval = interval_secs.saturating_mul(1_000_000_000);
        let key = (actor.to_owned(), rule.to_owned());
        match self.last.get_mut(&key) {
            Some((at, held)) if now_ns.saturating_sub(*at) < interval => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let suppressed = *held;
                *at = now_ns;
                *held = 0;
                Some(suppressed)
            }
            None => {
                if self.last.len() >= MAX_LIMITER_KEYS {
                    let cutoff = now_ns.saturating_sub(interval);
                    self.last.retain(|_, (at, _)| *at >= cutoff);
                    if self.last.len() >= MAX_LIMITER_KEYS {
                        self.last.clear();
                    }
                }
                self.last.insert(key, (now_ns, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests;
