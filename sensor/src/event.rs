//! The event the sensor emits: one JSON object per line, nested objects
//! whose paths follow OpenTelemetry semantic conventions (and ECS where
//! OTel has no name): `process.pid`, `server.address`, `gen_ai.usage.input_tokens`.
//! The contract is written down in `schema/event.schema.json`.

use serde_json::{Map, Value};

use crate::identity::{ProcIdentity, process::ProcessInfo};

/// Version of the event schema; bumped on any breaking change.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// An event under construction. Fields are set by dotted path; `None`
/// values are left out, so absent means unknown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    root: Map<String, Value>,
}

impl Event {
    pub fn new(action: &str) -> Self {
        let mut event = Self::default();
        event.set("event.action", action);
        event.set("event.schema_version", SCHEMA_VERSION);
        event
    }

    /// Sets `path` (dot separated) to `value`, creating the objects on the
    /// way. A `None` (or JSON null) leaves the field out.
    pub fn set(&mut self, path: &str, value: impl Into<Value>) -> &mut Self {
        let value = value.into();
        if value.is_null() {
            return self;
        }
        let mut node = &mut self.root;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                node.insert(part.to_owned(), value);
                break;
            }
            // Most parents exist already: look them up without allocating
            // a key (events are built with dozens of fields each).
            if !node.get(part).is_some_and(Value::is_object) {
                node.insert(part.to_owned(), Value::Object(Map::new()));
            }
            let Some(Value::Object(next)) = node.get_mut(part) else {
                break;
            };
            node = next;
        }
        self
    }

    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut value = self.root.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }

    pub fn action(&self) -> &str {
        self.get("event.action")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The process fields every event about a process carries.
    pub fn set_process(&mut self, info: &ProcessInfo, tid: Option<u32>) -> &mut Self {
        self.set("process.pid", info.pid)
            .set("process.parent_pid", info.ppid)
            .set("process.thread.id", tid)
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

    pub fn into_value(self) -> Value {
        Value::Object(self.root)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.root
    }
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
