//! Configuration: a TOML file with documented defaults, overridden by
//! command-line flags. Unknown keys and bad values are errors that name the
//! key; the sensor never starts half-configured.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::sink::config::SinkConfig;

/// Event actions the sensor can emit.
pub const ACTIONS: [&str; 11] = [
    "model_call",
    "tool_call",
    "policy_violation",
    "blind_spot",
    "connection_close",
    "credential_shared",
    "connect",
    "process_exec",
    "process_exit",
    "sensor_health",
    "sensor_checkpoint",
];

pub const DEFAULT_CONFIG_PATH: &str = "/etc/sensor/sensor.toml";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `host.name` on every event. Default: the kernel's hostname.
    pub host_name: Option<String>,
    /// Ring buffer size in bytes: a power of two, at least one page.
    /// Default 16 MiB.
    pub ring_buffer_bytes: u32,
    /// How often the daemon drains the ring buffer, in milliseconds. Below
    /// an eighth of the ring waiting, records wake nobody and wait for this
    /// tick (the latency it adds); above it, the kernel wakes the daemon at
    /// once. 0 wakes the daemon for every record. Default 5.
    pub ring_buffer_poll_ms: u64,
    /// HMAC key for credential fingerprints; created (random, 0600) when
    /// missing. Default `/var/lib/sensor/fingerprint.key`.
    pub fingerprint_key_file: PathBuf,
    /// Which `event.action`s to emit. Default: all of them.
    pub events: Vec<String>,
    /// Seconds between periodic `sensor_health` events. Default 60.
    pub health_interval_secs: u64,
    /// Bytes of each HTTP body kept for parsing (model, usage). Default 256 KiB.
    pub body_capture_bytes: usize,
    /// `k8s.node.name`. Default: the `NODE_NAME` or `K8S_NODE_NAME`
    /// environment variable (set it from the downward API in a DaemonSet).
    pub node_name: Option<String>,
    /// Trust domain of SPIFFE IDs derived from namespace and service
    /// account when a workload holds no SVID. Default `cluster.local`.
    pub spiffe_trust_domain: String,
    /// Paths inside a container where a workload's X.509 SVID may be.
    pub spiffe_svid_paths: Vec<String>,
    /// The node's root filesystem as the sensor sees it: container runtime
    /// state (`/var/lib/docker`, `/run/containerd`, ...) is read below it.
    /// Default `/`; in a pod, the hostPath mount of `/`.
    pub host_root: PathBuf,
    /// A credential used by two or more actors within this many seconds is
    /// reported as shared. Default 3600.
    pub credential_share_window_secs: u64,
    /// Where events go (`[[sinks]]` tables). Default: stdout, native format.
    pub sinks: Vec<SinkConfig>,
    /// HMAC key of each output's hash chain (`event.hash`); created
    /// (random, 0600) when missing. `sensor verify` needs it to tell an
    /// altered record. Default `/var/lib/sensor/integrity.key`.
    pub integrity_key_file: PathBuf,
    /// Network sinks keep every record here until delivered, one
    /// directory per sink. Default `/var/lib/sensor/spool`.
    pub spool_dir: PathBuf,
    /// `host:port` of the Prometheus `/metrics` endpoint. Default: off.
    pub metrics_address: Option<String>,
    /// Self-hosted model endpoints (vLLM, Ollama, gateways), for
    /// `blind_spot` reports: host names (`llm.internal`, `*.inference.corp`)
    /// or IP addresses, each with an optional `:port`. The public
    /// providers' hosts and every destination where the sensor saw a
    /// model call count already. Default: none.
    pub model_endpoints: Vec<String>,
    /// Executables (a full path, or a file name) whose processes are
    /// agents from their start, before any model call: their HTTP traffic
    /// and that of everything they start is reported as `tool_call`s.
    /// Default: none (a process becomes an agent at its first model call).
    pub agent_executables: Vec<String>,
    /// Policy file (TOML): ordered rules deciding which actor may call
    /// which model, tool or host, with `deny` rules optionally enforced in
    /// the kernel at connect. Read again on SIGHUP. Default: none (no
    /// `policy.*` fields, no connect hooks).
    pub policy_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host_name: None,
            ring_buffer_bytes: 16 * 1024 * 1024,
            ring_buffer_poll_ms: 5,
            fingerprint_key_file: PathBuf::from("/var/lib/sensor/fingerprint.key"),
            events: ACTIONS.iter().map(|s| (*s).to_owned()).collect(),
            health_interval_secs: 60,
            body_capture_bytes: 256 * 1024,
            node_name: None,
            spiffe_trust_domain: "cluster.local".into(),
            spiffe_svid_paths: crate::identity::IdentityConfig::default().spiffe_svid_paths,
            host_root: PathBuf::from("/"),
            credential_share_window_secs: 3600,
            sinks: Vec::new(),
            integrity_key_file: PathBuf::from("/var/lib/sensor/integrity.key"),
            spool_dir: PathBuf::from("/var/lib/sensor/spool"),
            metrics_address: None,
            model_endpoints: Vec::new(),
            agent_executables: Vec::new(),
            policy_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config sink `{sink}`: {message}")]
    Sink { sink: String, message: String },
}

impl Config {
    /// Reads `path`; a missing file at the default path means defaults, a
    /// missing file named explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if !explicit && err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path,
            message: e.to_string(),
        })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::blind::validate_endpoints(&self.model_endpoints).map_err(|message| {
            ConfigError::Invalid {
                key: "model_endpoints",
                message,
            }
        })?;
        let ring = self.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(ConfigError::Invalid {
                key: "ring_buffer_bytes",
                message: format!("{ring} is not a power of two of at least 4096"),
            });
        }
        if self.ring_buffer_poll_ms > 1000 {
            return Err(ConfigError::Invalid {
                key: "ring_buffer_poll_ms",
                message: format!("{} is above 1000", self.ring_buffer_poll_ms),
            });
        }
        if let Some(bad) = self.events.iter().find(|e| !ACTIONS.contains(&e.as_str())) {
            return Err(ConfigError::Invalid {
                key: "events",
                message: format!("unknown action `{bad}`; known: {}", ACTIONS.join(", ")),
            });
        }
        if self.health_interval_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "health_interval_secs",
                message: "must be at least 1".into(),
            });
        }
        if self.body_capture_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "body_capture_bytes",
                message: "must be at least 1024".into(),
            });
        }
        if self.credential_share_window_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "credential_share_window_secs",
                message: "must be at least 1".into(),
            });
        }
        let td = &self.spiffe_trust_domain;
        if td.is_empty()
            || !td.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            })
        {
            return Err(ConfigError::Invalid {
                key: "spiffe_trust_domain",
                message: format!(
                    "`{td}` is not a trust domain (lowercase letters, digits, `.`, `-`, `_`)"
                ),
            });
        }
        if !self.host_root.is_absolute() {
            return Err(ConfigError::Invalid {
                key: "host_root",
                message: "must be an absolute path".into(),
            });
        }
        let mut names = std::collections::BTreeSet::new();
        for sink in &self.sinks {
            sink.validate(&ACTIONS)
                .map_err(|message| ConfigError::Sink {
                    sink: sink.name.clone(),
                    message,
                })?;
            if !names.insert(sink.name.as_str()) {
                return Err(ConfigError::Sink {
                    sink: sink.name.clone(),
                    message: "two sinks have this name".into(),
                });
            }
        }
        if let Some(address) = &self.metrics_address
            && address.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::Invalid {
                key: "metrics_address",
                message: format!("`{address}` is not ip:port"),
            });
        }
        Ok(())
    }

    /// The sinks to run: the configured ones, else stdout.
    pub fn effective_sinks(&self) -> Vec<SinkConfig> {
        if self.sinks.is_empty() {
            vec![SinkConfig::default_stdout()]
        } else {
            self.sinks.clone()
        }
    }

    /// What the identity resolver needs.
    pub fn identity(&self) -> crate::identity::IdentityConfig {
        let node_name = self.node_name.clone().or_else(|| {
            ["NODE_NAME", "K8S_NODE_NAME"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        });
        crate::identity::IdentityConfig {
            node_name,
            spiffe_trust_domain: self.spiffe_trust_domain.clone(),
            spiffe_svid_paths: self.spiffe_svid_paths.clone(),
            host_root: self.host_root.clone(),
            proc_root: PathBuf::from("/proc"),
        }
    }

    pub fn emits(&self, action: &str) -> bool {
        self.events.iter().any(|e| e == action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unknown_keys_rejected() {
        Config::default().validate().expect("defaults");
        let err = toml::from_str::<Config>("ring_buffer_byte = 4096")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ring_buffer_byte"), "{err}");
        let c: Config = toml::from_str("ring_buffer_bytes = 5000").expect("parse");
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("ring_buffer_bytes"), "{err}");
        let c: Config = toml::from_str("events = [\"model_call\", \"nope\"]").expect("parse");
        assert!(c.validate().unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        assert!(Config::load(Some(Path::new("/nonexistent/sensor.toml"))).is_err());
    }
}
