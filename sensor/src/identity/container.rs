//! Container names, images and Kubernetes labels from the runtimes' own
//! state on the node.
//!
//! - docker: `/var/lib/docker/containers/<id>/config.v2.json`;
//! - containerd: the OCI bundle of the running task,
//!   `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`,
//!   whose annotations the CRI plugin fills with the pod and container
//!   names (`io.kubernetes.cri.*`);
//! - CRI-O: `/run/containers/storage/overlay-containers/<id>/userdata/config.json`
//!   (annotations `io.kubernetes.pod.*`, `io.kubernetes.cri-o.*`);
//! - podman: containers/storage's `containers.json` (names, image) and
//!   `images.json` (image names).
//!
//! Files are read under a configurable host root, so a sensor in a pod
//! reads the node's state from a hostPath mount. Each read is bounded in
//! size; a file that is missing or malformed leaves the fields unset.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;

/// Largest state file read (podman's containers.json lists every container).
const MAX_STATE_BYTES: u64 = 16 << 20;

/// What a runtime's state says about a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerMeta {
    pub runtime: Option<&'static str>,
    pub name: Option<String>,
    pub image_name: Option<String>,
    /// From CRI annotations or dockershim labels.
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub k8s_container_name: Option<String>,
    /// containerd namespace of the container.
    pub containerd_namespace: Option<String>,
    /// Which state gave the data: a file path.
    pub source: Option<String>,
}

/// Where the runtimes keep their state.
#[derive(Debug, Clone)]
pub struct RuntimeState {
    root: PathBuf,
}

impl RuntimeState {
    /// `root` is the node's root as the sensor sees it: `/` on a host,
    /// the hostPath mount point in a pod.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// Looks the container up in the state of the runtime the cgroup named
    /// (first) and then of the others: a Kubernetes cgroupfs layout does not
    /// say which runtime runs the pod, and docker runs on containerd.
    pub fn lookup(
        &self,
        id: &str,
        runtime_hint: Option<&'static str>,
        namespace_hint: Option<&str>,
    ) -> Option<ContainerMeta> {
        let docker = || self.docker(id);
        let containerd = || self.containerd(id, namespace_hint);
        let crio = || self.crio(id);
        let podman = || self.podman(id);
        match runtime_hint {
            Some("docker") => docker().or_else(containerd),
            Some("podman") => podman(),
            Some("cri-o") => crio(),
            Some("containerd") => containerd(),
            _ => containerd().or_else(crio).or_else(docker).or_else(podman),
        }
    }

    fn docker(&self, id: &str) -> Option<ContainerMeta> {
        #[derive(Deserialize)]
        struct Config {
            #[serde(rename = "Name")]
            name: Option<String>,
            #[serde(rename = "Config")]
            config: Option<Inner>,
        }
        #[derive(Deserialize)]
        struct Inner {
            #[serde(rename = "Image")]
            image: Option<String>,
            #[serde(rename = "Labels")]
            labels: Option<HashMap<String, String>>,
        }
        let path = self.path(&format!("/var/lib/docker/containers/{id}/config.v2.json"));
        let config: Config = read_json(&path)?;
        let inner = config.config;
        let mut labels = inner
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let mut meta = ContainerMeta {
            runtime: Some("docker"),
            name: config.name.map(|n| n.trim_start_matches('/').to_owned()),
            image_name: inner.and_then(|c| c.image),
            source: Some(path.display().to_string()),
            ..ContainerMeta::default()
        };
        // dockershim / cri-dockerd label pod containers.
        meta.pod_name = labels.remove("io.kubernetes.pod.name");
        meta.pod_namespace = labels.remove("io.kubernetes.pod.namespace");
        meta.pod_uid = labels.remove("io.kubernetes.pod.uid");
        meta.k8s_container_name = labels.remove("io.kubernetes.container.name");
        Some(meta)
    }

    fn containerd(&self, id: &str, namespace_hint: Option<&str>) -> Option<ContainerMeta> {
        let tasks = self.path("/run/containerd/io.containerd.runtime.v2.task");
        let bundle = namespace_hint
            .map(|ns| tasks.join(ns).join(id))
            .filter(|p| p.is_dir())
            .or_else(|| {
                fs::read_dir(&tasks)
                    .ok()?
                    .flatten()
                    .map(|ns| ns.path().join(id))
                    .find(|p| p.is_dir())
            })?;
        let path = bundle.join("config.json");
        let spec: Value = read_json(&path)?;
        let namespace = bundle
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned());
        let a = annotations(&spec);
        let mut meta = ContainerMeta {
            runtime: Some("containerd"),
            source: Some(path.display().to_string()),
            ..ContainerMeta::default()
        };
        if namespace.as_deref() == Some("moby") {
            // A docker container: docker's own state names it.
            meta.runtime = Some("docker");
        }
        meta.containerd_namespace = namespace.clone();
        meta.k8s_container_name = a("io.kubernetes.cri.container-name");
        meta.pod_name = a("io.kubernetes.cri.sandbox-name");
        meta.pod_namespace = a("io.kubernetes.cri.sandbox-namespace");
        meta.pod_uid = a("io.kubernetes.cri.sandbox-uid");
        meta.image_name =
            a("io.kubernetes.cri.image-name").or_else(|| a("org.opencontainers.image.ref.name"));
        // CRI names a container `<container>` within its pod; outside
        // Kubernetes the id is the only name containerd has (nerdctl keeps
        // one in an annotation).
        meta.name = a("nerdctl/name").or_else(|| meta.k8s_container_name.clone());
        Some(meta)
    }

    fn crio(&self, id: &str) -> Option<ContainerMeta> {
        let candidates = [
            format!("/run/containers/storage/overlay-containers/{id}/userdata/config.json"),
            format!("/var/lib/containers/storage/overlay-containers/{id}/userdata/config.json"),
        ];
        for candidate in candidates {
            let path = self.path(&candidate);
            let Some(spec) = read_json::<Value>(&path) else {
                continue;
            };
            let a = annotations(&spec);
            // podman writes the same layout; only CRI-O sets its annotations.
            if a("io.kubernetes.cri-o.ContainerID").is_none() {
                continue;
            }
            return Some(ContainerMeta {
                runtime: Some("cri-o"),
                name: a("io.kubernetes.cri-o.Name"),
                image_name: a("io.kubernetes.cri-o.ImageName"),
                pod_name: a("io.kubernetes.pod.name"),
                pod_namespace: a("io.kubernetes.pod.namespace"),
                pod_uid: a("io.kubernetes.pod.uid"),
                k8s_container_name: a("io.kubernetes.container.name"),
                containerd_namespace: None,
                source: Some(path.display().to_string()),
            });
        }
        None
    }

    fn podman(&self, id: &str) -> Option<ContainerMeta> {
        #[derive(Deserialize)]
        struct Container {
            id: String,
            #[serde(default)]
            names: Vec<String>,
            image: Option<String>,
            metadata: Option<String>,
        }
        #[derive(Deserialize)]
        struct Metadata {
            #[serde(rename = "image-name")]
            image_name: Option<String>,
            name: Option<String>,
        }
        #[derive(Deserialize)]
        struct Image {
            id: String,
            #[serde(default)]
            names: Vec<String>,
        }
        let storage = self.path("/var/lib/containers/storage");
        let path = storage.join("overlay-containers/containers.json");
        let containers: Vec<Container> = read_json(&path)?;
        let c = containers.into_iter().find(|c| c.id == id)?;
        let metadata: Option<Metadata> = c
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok());
        let (meta_image, meta_name) = metadata.map_or((None, None), |m| (m.image_name, m.name));
        let image_name = meta_image.or_else(|| {
            let image_id = c.image.as_deref()?;
            let images: Vec<Image> = read_json(&storage.join("overlay-images/images.json"))?;
            images
                .into_iter()
                .find(|i| i.id == image_id)
                .and_then(|i| i.names.into_iter().next())
        });
        Some(ContainerMeta {
            runtime: Some("podman"),
            name: c.names.into_iter().next().or(meta_name),
            image_name,
            source: Some(path.display().to_string()),
            ..ContainerMeta::default()
        })
    }
}

/// A reader of string annotations of an OCI runtime spec.
fn annotations(spec: &Value) -> impl Fn(&str) -> Option<String> + '_ {
    move |key| {
        spec.get("annotations")?
            .get(key)?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    use std::io::Read as _;
    let file = fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1a2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sensor-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn docker_config() {
        let root = scratch("docker");
        write(
            &root,
            &format!("var/lib/docker/containers/{ID}/config.v2.json"),
            r#"{"ID":"x","Name":"/agent-1","Image":"sha256:ab","Config":{"Image":"registry.local/agent:1.2","Labels":{"app":"a"}}}"#,
        );
        let meta = RuntimeState::new(&root)
            .lookup(ID, Some("docker"), None)
            .expect("meta");
        assert_eq!(
            (
                meta.runtime,
                meta.name.as_deref(),
                meta.image_name.as_deref()
            ),
            (
                Some("docker"),
                Some("agent-1"),
                Some("registry.local/agent:1.2")
            )
        );
        assert_eq!(meta.pod_name, None);
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn containerd_cri_bundle() {
        let root = scratch("containerd");
        write(
            &root,
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{
                "io.kubernetes.cri.container-type":"container",
                "io.kubernetes.cri.container-name":"agent",
                "io.kubernetes.cri.image-name":"localhost/agent:1",
                "io.kubernetes.cri.sandbox-name":"agent-7d9f",
                "io.kubernetes.cri.sandbox-namespace":"payments",
                "io.kubernetes.cri.sandbox-uid":"6b7c0e9a-1f2d-4c3b-8a9e-0f1e2d3c4b5a"}}"#,
        );
        let meta = RuntimeState::new(&root)
            .lookup(ID, None, None)
            .expect("meta");
        assert_eq!(meta.runtime, Some("containerd"));
        assert_eq!(
            (
                meta.pod_name.as_deref(),
                meta.pod_namespace.as_deref(),
                meta.k8s_container_name.as_deref(),
                meta.image_name.as_deref()
            ),
            (
                Some("agent-7d9f"),
                Some("payments"),
                Some("agent"),
                Some("localhost/agent:1")
            )
        );
        // Malformed bundle: nothing, no panic.
        write(
            &root,
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
            "{\"annotations\": [",
        );
        assert_eq!(
            RuntimeState::new(&root).lookup(ID, Some("containerd"), None),
            None
        );
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn crio_and_podman() {
        let root = scratch("crio-podman");
        write(
            &root,
            &format!("run/containers/storage/overlay-containers/{ID}/userdata/config.json"),
            r#"{"annotations":{"io.kubernetes.cri-o.ContainerID":"x","io.kubernetes.cri-o.Name":"k8s_agent_pod",
                "io.kubernetes.cri-o.ImageName":"quay.io/a/agent:2","io.kubernetes.pod.name":"p",
                "io.kubernetes.pod.namespace":"ns","io.kubernetes.pod.uid":"u","io.kubernetes.container.name":"agent"}}"#,
        );
        let meta = RuntimeState::new(&root)
            .lookup(ID, Some("cri-o"), None)
            .expect("crio");
        assert_eq!(
            (meta.image_name.as_deref(), meta.pod_namespace.as_deref()),
            (Some("quay.io/a/agent:2"), Some("ns"))
        );

        let other = "b".repeat(64);
        write(
            &root,
            "var/lib/containers/storage/overlay-containers/containers.json",
            &format!(
                r#"[{{"id":"{other}","names":["web"],"image":"img1"}},
                    {{"id":"{ID}","names":["agent-pm"],"image":"img2","metadata":"{{\"image-name\":\"localhost/agent:3\",\"name\":\"agent-pm\"}}"}}]"#
            ),
        );
        write(
            &root,
            "var/lib/containers/storage/overlay-images/images.json",
            r#"[{"id":"img1","names":["docker.io/library/nginx:latest"]}]"#,
        );
        let meta = RuntimeState::new(&root)
            .lookup(ID, Some("podman"), None)
            .expect("podman");
        assert_eq!(
            (
                meta.runtime,
                meta.name.as_deref(),
                meta.image_name.as_deref()
            ),
            (Some("podman"), Some("agent-pm"), Some("localhost/agent:3"))
        );
        let meta = RuntimeState::new(&root)
            .lookup(&other, Some("podman"), None)
            .expect("web");
        assert_eq!(
            meta.image_name.as_deref(),
            Some("docker.io/library/nginx:latest")
        );
        let _ = fs::remove_dir_all(root);
    }
}
