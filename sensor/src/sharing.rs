//! Shared credentials: one credential fingerprint used by two or more
//! distinct actors (pods, containers, host users) within a window.
//!
//! This is the case the product exists for: one API key in a Secret that
//! five deployments mount, where the provider's logs show one caller. Each
//! time a fingerprint gains a new actor while another one is still within
//! the window, a `credential_shared` event names every actor seen, and
//! model calls using the fingerprint are marked shared while it lasts.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::{
    event::Event,
    identity::{ProcIdentity, process::ProcessInfo},
};

/// Fingerprints tracked at most; the least recently used go first.
const MAX_FINGERPRINTS: usize = 16_384;
/// Actors remembered per fingerprint.
const MAX_ACTORS: usize = 256;

/// Who used a credential, at the granularity that makes two uses distinct
/// workload identities.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `pod:<uid>`, `container:<id>`, `host-user:<uid>`.
    pub key: String,
    /// The actor's identity fields, as they appear on events.
    pub fields: Value,
}

impl Actor {
    /// The actor key of a process: what makes two uses distinct.
    pub fn key_of(info: &ProcessInfo, id: Option<&ProcIdentity>) -> String {
        let container = id.and_then(|i| i.container.as_deref());
        match container {
            Some(c) if c.pod_uid.is_some() => {
                format!("pod:{}", c.pod_uid.as_deref().unwrap_or_default())
            }
            Some(c) => format!("container:{}", c.id),
            None => {
                let login = id.and_then(|i| i.loginuid);
                match (login, info.uid) {
                    (Some(l), _) => format!("host-login:{l}"),
                    (None, Some(uid)) => format!("host-user:{uid}"),
                    (None, None) => format!("host-process:{}", info.pid),
                }
            }
        }
    }

    pub fn of(info: &ProcessInfo, id: Option<&ProcIdentity>) -> Self {
        let container = id.and_then(|i| i.container.as_deref());
        let mut fields = Event::default();
        let key = Self::key_of(info, id);
        if let Some(c) = container {
            fields.set("container.id", json!(c.id));
            fields.set("container.name", json!(c.name));
            fields.set("container.image.name", json!(c.image_name));
            fields.set("container.runtime", json!(c.runtime));
            fields.set("k8s.pod.name", json!(c.pod_name));
            fields.set("k8s.pod.uid", json!(c.pod_uid));
            fields.set("k8s.namespace.name", json!(c.namespace));
            fields.set("k8s.service_account.name", json!(c.service_account));
            fields.set("workload.spiffe_id", json!(c.spiffe_id));
        }
        if let Some(i) = id {
            fields.set("process.user.name", json!(i.user_name));
            fields.set("process.loginuid", json!(i.loginuid));
            fields.set(
                "workload.cloud_identity",
                json!(i.cloud.as_ref().map(|c| c.identity.clone())),
            );
        }
        fields.set("process.user.id", json!(info.uid));
        fields.set("process.executable.path", json!(info.exe));
        fields.set("actor.key", json!(key));
        Self {
            key,
            fields: fields.into_value(),
        }
    }
}

struct Seen {
    actor: Actor,
    first_ns: u64,
    last_ns: u64,
    calls: u64,
    last_event_id: Option<String>,
    reported: bool,
}

struct Fingerprint {
    kind: String,
    actors: Vec<Seen>,
    last_ns: u64,
}

/// What using a credential revealed.
#[derive(Debug, Default)]
pub struct Observation {
    /// Distinct actors within the window, this one included.
    pub actors: usize,
    /// A `credential_shared` event to emit: the fingerprint gained an actor
    /// while shared.
    pub report: Option<Value>,
}

pub struct ShareTracker {
    window_ns: u64,
    prints: HashMap<String, Fingerprint>,
}

impl ShareTracker {
    pub fn new(window_secs: u64) -> Self {
        Self {
            window_ns: window_secs.saturating_mul(1_000_000_000),
            prints: HashMap::new(),
        }
    }

    /// A use of `fingerprint` by the actor `key` at boot time `now_ns`;
    /// `actor` describes it, and is called only for an actor not seen yet.
    pub fn observe(
        &mut self,
        fingerprint: &str,
        kind: &str,
        key: &str,
        actor: impl FnOnce() -> Actor,
        now_ns: u64,
    ) -> Observation {
        if !self.prints.contains_key(fingerprint) && self.prints.len() >= MAX_FINGERPRINTS {
            self.evict_oldest();
        }
        let window = self.window_ns;
        let fp = self
            .prints
            .entry(fingerprint.to_owned())
            .or_insert_with(|| Fingerprint {
                kind: kind.to_owned(),
                actors: Vec::new(),
                last_ns: now_ns,
            });
        fp.last_ns = fp.last_ns.max(now_ns);
        fp.actors
            .retain(|s| now_ns.saturating_sub(s.last_ns) <= window);
        let is_new = match fp.actors.iter_mut().find(|s| s.actor.key == key) {
            Some(seen) => {
                seen.last_ns = seen.last_ns.max(now_ns);
                seen.calls += 1;
                false
            }
            None => {
                let actor = actor();
                if fp.actors.len() >= MAX_ACTORS {
                    fp.actors.remove(0);
                }
                fp.actors.push(Seen {
                    actor,
                    first_ns: now_ns,
                    last_ns: now_ns,
                    calls: 1,
                    last_event_id: None,
                    reported: false,
                });
                true
            }
        };
        let actors = fp.actors.len();
        let report = (is_new && actors >= 2).then(|| {
            for s in &mut fp.actors {
                s.reported = true;
            }
            json!({
                "fingerprint": fingerprint,
                "kind": fp.kind,
                "actor_count": actors,
                "window_seconds": window / 1_000_000_000,
                "actors": fp.actors.iter().map(|s| {
                    let mut v = s.actor.fields.clone();
                    if let Some(m) = v.as_object_mut() {
                        m.insert("first_seen_boot_ns".into(), json!(s.first_ns));
                        m.insert("last_seen_boot_ns".into(), json!(s.last_ns));
                        m.insert("model_calls".into(), json!(s.calls));
                        if let Some(id) = &s.last_event_id {
                            m.insert("last_event_id".into(), json!(id));
                        }
                    }
                    v
                }).collect::<Vec<_>>(),
            })
        });
        Observation { actors, report }
    }

    /// The event id of the call an actor just made with the fingerprint.
    pub fn note_event(&mut self, fingerprint: &str, actor_key: &str, event_id: String) {
        if let Some(seen) = self
            .prints
            .get_mut(fingerprint)
            .and_then(|fp| fp.actors.iter_mut().find(|s| s.actor.key == actor_key))
        {
            seen.last_event_id = Some(event_id);
        }
    }

    /// Forgets fingerprints unused for a window.
    pub fn sweep(&mut self, now_ns: u64) {
        let window = self.window_ns;
        self.prints
            .retain(|_, fp| now_ns.saturating_sub(fp.last_ns) <= window);
    }

    pub fn len(&self) -> usize {
        self.prints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prints.is_empty()
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self
            .prints
            .iter()
            .min_by_key(|(_, fp)| fp.last_ns)
            .map(|(k, _)| k.clone())
        {
            self.prints.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(key: &str) -> Actor {
        Actor {
            key: key.into(),
            fields: json!({"actor": {"key": key}}),
        }
    }

    #[test]
    fn second_actor_within_window_reports_both() {
        let mut t = ShareTracker::new(60);
        let s = 1_000_000_000;
        let o = t.observe("fp1", "openai_api_key", "pod:a", || actor("pod:a"), s);
        assert_eq!((o.actors, o.report.is_some()), (1, false));
        t.note_event("fp1", "pod:a", "ev-1".into());
        let o = t.observe("fp1", "openai_api_key", "pod:a", || actor("pod:a"), 2 * s);
        assert_eq!((o.actors, o.report.is_some()), (1, false));
        let o = t.observe("fp1", "openai_api_key", "pod:b", || actor("pod:b"), 3 * s);
        let report = o.report.expect("shared");
        assert_eq!(o.actors, 2);
        assert_eq!(report["actor_count"], 2);
        let keys: Vec<_> = report["actors"]
            .as_array()
            .expect("actors")
            .iter()
            .map(|a| a["actor"]["key"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(keys, ["pod:a", "pod:b"]);
        assert_eq!(report["actors"][0]["model_calls"], 2);
        assert_eq!(report["actors"][0]["last_event_id"], "ev-1");
        // Known actors again: still shared, no new report.
        let o = t.observe("fp1", "openai_api_key", "pod:a", || actor("pod:a"), 4 * s);
        assert_eq!((o.actors, o.report.is_some()), (2, false));
        // A third actor: a new report listing all three.
        let o = t.observe(
            "fp1",
            "openai_api_key",
            "container:c",
            || actor("container:c"),
            5 * s,
        );
        assert_eq!(o.report.expect("third")["actor_count"], 3);
    }

    #[test]
    fn actors_outside_the_window_do_not_count() {
        let mut t = ShareTracker::new(10);
        let s = 1_000_000_000;
        t.observe("fp", "k", "host-user:1000", || actor("host-user:1000"), s);
        let o = t.observe(
            "fp",
            "k",
            "host-user:1001",
            || actor("host-user:1001"),
            20 * s,
        );
        assert_eq!((o.actors, o.report.is_some()), (1, false));
        // Different fingerprints never mix.
        let o = t.observe(
            "other",
            "k",
            "host-user:1000",
            || actor("host-user:1000"),
            21 * s,
        );
        assert_eq!(o.actors, 1);
        t.sweep(100 * s);
        assert!(t.is_empty());
    }
}
