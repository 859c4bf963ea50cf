//! The event the sensor emits: one JSON object per line, nested objects
//! whose paths follow OpenTelemetry semantic conventions (and ECS where
//! OTel has no name): `process.pid`, `server.address`, `gen_ai.usage.input_tokens`.
//! The contract is written down in `schema/event.schema.json`.

use std::sync::Arc;

use serde_json::Value;

use crate::identity::{ProcIdentity, process::ProcessInfo};

/// Version of the event schema; bumped on any breaking change.
pub const SCHEMA_VERSION: &str = "1.3.0";

/// Fields by dotted path, in the order they were set.
pub type Fields = Vec<(&'static str, Value)>;

/// An event under construction: a flat list of (dotted path, value),
/// written out as nested JSON objects only once, at [`Event::write_json`].
/// Building a tree of maps per event (a map and a key allocation per
/// level, a string compare per lookup) was the daemon's largest cost.
/// `None` values are left out, so absent means unknown. A process's own
/// fields, the same on every event about it, are built once and shared
/// ([`Event::with_shared`]).
#[derive(Debug, Clone, Default)]
pub struct Event {
    fields: Fields,
    shared: Option<Arc<Fields>>,
}

impl Event {
    pub fn new(action: &'static str) -> Self {
        let mut event = Self {
            fields: Vec::with_capacity(48),
            shared: None,
        };
        event.set("event.action", action);
        event.set("event.schema_version", SCHEMA_VERSION);
        event
    }

    /// Sets `path` (dot separated) to `value`; a later set of the same path
    /// wins. A `None` (or JSON null) leaves the field out. A path is either
    /// a leaf or the parent of others: when both are set, the parent's
    /// children win.
    pub fn set(&mut self, path: &'static str, value: impl Into<Value>) -> &mut Self {
        // Paths sort in plain byte order, which groups every object's
        // members and puts a path right before its children only while no
        // byte sorts below `.`: keep paths to this alphabet.
        debug_assert!(
            path.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@".contains(&b)),
            "event path {path:?}"
        );
        let value = value.into();
        if !value.is_null() {
            self.fields.push((path, value));
        }
        self
    }

    /// Sets `path`, replacing a value set before.
    pub fn replace(&mut self, path: &'static str, value: impl Into<Value>) -> &mut Self {
        self.fields.retain(|(p, _)| *p != path);
        self.set(path, value)
    }

    /// Fields shared with other events (a process's identity): written out
    /// with this event's own, which win on the same path.
    pub fn with_shared(&mut self, shared: Arc<Fields>) -> &mut Self {
        self.shared = Some(shared);
        self
    }

    /// The fields set so far, without the shared ones, sorted by path
    /// with one entry per path (the last set): ready to be shared.
    pub fn into_fields(self) -> Fields {
        let mut fields = self.fields;
        fields.sort_by(|a, b| a.0.cmp(b.0));
        // Of equal paths keep the last (the sort is stable).
        fields.reverse();
        fields.dedup_by(|later, earlier| later.0 == earlier.0);
        fields.reverse();
        fields
    }

    /// Gives `other` this event's actor: the shared process fields, and
    /// its own fields about the process, container, pod, workload, user
    /// and agent session.
    pub fn copy_actor_to(&self, other: &mut Event) {
        const ACTOR: [&str; 8] = [
            "process.",
            "container.",
            "k8s.",
            "workload.",
            "user.",
            "agent.",
            "identity.",
            "host.",
        ];
        if let Some(shared) = &self.shared {
            other.with_shared(Arc::clone(shared));
        }
        for (path, value) in &self.fields {
            if ACTOR.iter().any(|p| path.starts_with(p)) && *path != "process.io.fd" {
                other.fields.push((path, value.clone()));
            }
        }
    }

    pub fn get(&self, path: &str) -> Option<&Value> {
        let own = self.fields.iter().rev().find(|(p, _)| *p == path);
        own.or_else(|| {
            self.shared
                .as_deref()
                .and_then(|s| s.iter().rev().find(|(p, _)| *p == path))
        })
        .map(|(_, v)| v)
    }

    pub fn action(&self) -> &str {
        self.get("event.action")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Appends the event as one JSON object (no newline) to `out`.
    /// Sorting the paths groups every object's members together (all
    /// strings with a common prefix are adjacent in byte order), so one
    /// pass with a stack of open objects writes the nesting.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_with(&[], out);
    }

    /// [`Event::write_json`] with `extra` fields (set after, so they win).
    /// Returns the offset in `out` just after the `{` that opens the
    /// top-level `event` object, where a member can be spliced in.
    pub fn write_json_with(
        &self,
        extra: &[(&'static str, Value)],
        out: &mut Vec<u8>,
    ) -> Option<usize> {
        let mut event_at = None;
        let mut own: Vec<&(&'static str, Value)> = self.fields.iter().chain(extra.iter()).collect();
        // Stable: of equal paths, the one set last ends up last, and is the
        // one kept below.
        own.sort_by(|a, b| a.0.cmp(b.0));
        let shared = self.shared.as_deref().map(Vec::as_slice).unwrap_or(&[]);
        let order = merge_sorted(shared, &own);
        out.push(b'{');
        let mut open: Vec<&str> = Vec::with_capacity(4);
        let mut first = true;
        for (i, entry) in order.iter().enumerate() {
            let (path, value) = (entry.0, &entry.1);
            if let Some(next) = order.get(i + 1) {
                // The same path set again, or children of this path: they
                // come right after it in this order.
                let shadowed = next.0 == path
                    || (next.0.len() > path.len()
                        && next.0.starts_with(path)
                        && next.0.as_bytes()[path.len()] == b'.');
                if shadowed {
                    continue;
                }
            }
            let (parents, leaf) = match path.rsplit_once('.') {
                Some((parents, leaf)) => (Some(parents), leaf),
                None => (None, path),
            };
            let segments = || parents.into_iter().flat_map(|p| p.split('.'));
            let common = open
                .iter()
                .zip(segments())
                .take_while(|(a, b)| **a == *b)
                .count();
            while open.len() > common {
                open.pop();
                out.push(b'}');
                first = false;
            }
            for part in segments().skip(common) {
                if !first {
                    out.push(b',');
                }
                write_key(out, part);
                out.push(b'{');
                if open.is_empty() && part == "event" {
                    event_at = Some(out.len());
                }
                open.push(part);
                first = true;
            }
            if !first {
                out.push(b',');
            }
            write_key(out, leaf);
            // Writing a `Value` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, value);
            first = false;
        }
        for _ in open {
            out.push(b'}');
        }
        out.push(b'}');
        event_at
    }

    /// The event as a JSON value (tests, replay; not the hot path).
    pub fn into_value(self) -> Value {
        let mut out = Vec::new();
        self.write_json(&mut out);
        serde_json::from_slice(&out).unwrap_or(Value::Null)
    }

    /// The process fields every event about a process carries.
    pub fn set_process(&mut self, info: &ProcessInfo) -> &mut Self {
        self.set("process.pid", info.pid)
            .set("process.parent_pid", info.ppid)
            .set("process.executable.path", info.exe.clone())
            .set("process.executable.name", info.name.clone())
            .set("process.command_line", info.command_line.clone())
            .set("process.user.id", info.uid)
            .set("process.group.id", info.gid)
            .set("process.cgroup.id", info.cgroup_id)
            .set("process.attribution_source", info.source)
    }

    /// Who the process is beyond the process table: user and login user,
    /// terminal, container, Kubernetes pod, workload identity.
    pub fn set_identity(&mut self, id: &ProcIdentity, node_name: Option<&str>) -> &mut Self {
        self.set("process.user.name", id.user_name.clone())
            .set("process.loginuid", id.loginuid)
            .set("process.sessionid", id.sessionid)
            .set("process.tty", id.tty.clone())
            .set("process.cgroup.path", id.cgroup_path.clone());
        if let Some(loginuid) = id.loginuid {
            // The human: who logged in, whatever the process runs as.
            self.set("process.login_user.id", loginuid)
                .set("process.login_user.name", id.login_user_name.clone())
                .set("user.id", loginuid.to_string())
                .set("user.name", id.login_user_name.clone());
        }
        if let Some(cloud) = &id.cloud {
            self.set("workload.cloud_identity", cloud.identity.clone())
                .set("workload.cloud_provider", cloud.provider)
                .set("workload.cloud_identity_source", cloud.mechanism)
                .set("workload.cloud_tenant", cloud.tenant.clone());
        }
        let mut unresolved: Vec<&str> = id.unresolved.clone();
        if let Some(c) = &id.container {
            self.set("container.id", c.id.clone())
                .set("container.runtime", c.runtime)
                .set("container.name", c.name.clone())
                .set("container.image.name", c.image_name.clone());
            if c.is_kubernetes() {
                self.set("k8s.pod.uid", c.pod_uid.clone())
                    .set("k8s.pod.name", c.pod_name.clone())
                    .set("k8s.namespace.name", c.namespace.clone())
                    .set("k8s.container.name", c.k8s_container_name.clone())
                    .set("k8s.service_account.name", c.service_account.clone())
                    .set("k8s.node.name", node_name);
                for (field, known) in [
                    ("k8s.pod.name", c.pod_name.is_some()),
                    ("k8s.namespace.name", c.namespace.is_some()),
                    ("k8s.service_account.name", c.service_account.is_some()),
                ] {
                    if !known {
                        unresolved.push(field);
                    }
                }
            }
            self.set("workload.spiffe_id", c.spiffe_id.clone())
                .set("workload.spiffe_id_source", c.spiffe_source);
            if !c.runtime_state_found {
                unresolved.extend(["container.name", "container.image.name"]);
            }
        }
        if !unresolved.is_empty() {
            self.set("identity.unresolved", unresolved);
        }
        self
    }
}

/// Merges `shared` (sorted, one entry per path) and `own` (sorted) into one
/// sorted sequence; on equal paths `own` comes last, so it wins.
fn merge_sorted<'a>(
    shared: &'a [(&'static str, Value)],
    own: &[&'a (&'static str, Value)],
) -> Vec<&'a (&'static str, Value)> {
    let mut out = Vec::with_capacity(shared.len() + own.len());
    let (mut i, mut j) = (0, 0);
    while i < shared.len() && j < own.len() {
        if shared[i].0 <= own[j].0 {
            out.push(&shared[i]);
            i += 1;
        } else {
            out.push(own[j]);
            j += 1;
        }
    }
    out.extend(shared[i..].iter());
    out.extend(own[j..].iter().copied());
    out
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

/// RFC 3339 UTC timestamp with nanoseconds from ns since the Unix epoch.
pub fn rfc3339(unix_ns: u128) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let nanos = (unix_ns % 1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm, https://howardhinnant.github.io/date_algorithms.html).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Converts kernel boot-time ns to wall-clock ns, with an offset measured
/// once at start (CLOCK_REALTIME - CLOCK_BOOTTIME).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        Self {
            offset_ns: real - boot,
        }
    }

    pub fn wall_ns(&self, boot_ns: u64) -> u128 {
        (boot_ns as i128 + self.offset_ns).max(0) as u128
    }

    pub fn now_boot_ns(&self) -> u64 {
        clock_ns(libc::CLOCK_BOOTTIME).max(0) as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_paths_and_absent_values() {
        let mut e = Event::new("model_call");
        e.set("gen_ai.usage.input_tokens", 17u64)
            .set("gen_ai.usage.output_tokens", None::<u64>);
        e.set("server.port", 443u16);
        let v = e.clone().into_value();
        assert_eq!(v["gen_ai"]["usage"]["input_tokens"], 17);
        assert!(v["gen_ai"]["usage"].get("output_tokens").is_none());
        assert_eq!(v["event"]["action"], "model_call");
        assert_eq!(e.get("server.port"), Some(&Value::from(443)));
        assert_eq!(e.action(), "model_call");
    }

    #[test]
    fn flat_fields_written_as_nested_objects() {
        let mut shared = Event::default();
        shared
            .set("process.pid", 7u32)
            .set("process.executable.path", "/bin/x")
            .set("container.id", "abc")
            .set("process.user.name", "root");
        let shared = Arc::new(shared.into_fields());
        let mut e = Event::new("connect");
        e.with_shared(Arc::clone(&shared))
            .set("process.thread.id", 8u32)
            .set("server.port", 1u16)
            .set("server.port", 2u16)
            .set("container.id", "own wins")
            .set("a.b", "leaf loses to children")
            .set("a.b.c", 1u8)
            .set("a.b_c", 2u8)
            .set("a.b", "set again: still shadowed");
        let mut out = Vec::new();
        e.write_json(&mut out);
        let text = String::from_utf8(out).expect("utf-8");
        let v: Value = serde_json::from_str(&text).expect(&text);
        assert_eq!(v["process"]["pid"], 7);
        assert_eq!(v["process"]["thread"]["id"], 8);
        assert_eq!(v["process"]["executable"]["path"], "/bin/x");
        assert_eq!(v["process"]["user"]["name"], "root");
        assert_eq!(v["server"]["port"], 2);
        assert_eq!(v["container"]["id"], "own wins");
        assert_eq!(v["a"]["b"]["c"], 1);
        assert_eq!(v["a"]["b_c"], 2);
        // No key twice in any object (serde_json would keep the last).
        assert_eq!(text.matches("\"port\"").count(), 1);
        assert_eq!(text.matches("\"id\"").count(), 2, "{text}");
        assert_eq!(text.matches("\"b\"").count(), 1);
        // The shared fields are untouched.
        assert_eq!(shared.len(), 4);
        assert_eq!(e.get("container.id"), Some(&Value::from("own wins")));
        assert_eq!(e.get("process.pid"), Some(&Value::from(7)));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_795_000_000_123_456_789),
            "2026-11-18T11:06:40.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
