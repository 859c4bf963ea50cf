//! Container metadata from the runtimes' APIs over their Unix sockets: the
//! CRI (`runtime.v1.RuntimeService/ContainerStatus`, served by containerd's
//! CRI plugin and CRI-O) for Kubernetes pods, and containerd's own
//! `containers.v1.Containers/Get` for containers made outside Kubernetes
//! (nerdctl, `ctr`), which names the image.
//!
//! Calls run on one worker thread with its own runtime; the caller waits
//! a bounded time for the answer. A socket that is missing, refuses or
//! times out is left alone for a while, so a hung runtime costs the data
//! path one timeout, not one per container.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use super::container::ContainerMeta;
use crate::grpc::{self, GrpcError};

/// How long the data path waits for an answer.
const ANSWER_WAIT: Duration = Duration::from_millis(300);
/// How long a failing socket is left alone.
const BACKOFF: Duration = Duration::from_secs(30);

/// The CRI messages of `RuntimeService/ContainerStatus` (k8s.io/cri-api,
/// `runtime.v1`), hand-written with the proto's field numbers; fields not
/// listed are skipped by the decoder. Shared with the test harness, which
/// waits on the same call.
pub mod cri {
    use std::collections::HashMap;

    /// `ContainerState`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
    #[repr(i32)]
    pub enum ContainerState {
        Created = 0,
        Running = 1,
        Exited = 2,
        Unknown = 3,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatusRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(bool, tag = "2")]
        pub verbose: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<ContainerStatus>,
        /// With `verbose`: JSON strings, e.g. `info` (pid, runtime spec).
        #[prost(map = "string, string", tag = "2")]
        pub info: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatus {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<ContainerMetadata>,
        #[prost(enumeration = "ContainerState", tag = "3")]
        pub state: i32,
        #[prost(int64, tag = "4")]
        pub created_at: i64,
        #[prost(int64, tag = "5")]
        pub started_at: i64,
        #[prost(int64, tag = "6")]
        pub finished_at: i64,
        #[prost(int32, tag = "7")]
        pub exit_code: i32,
        #[prost(message, optional, tag = "8")]
        pub image: Option<ImageSpec>,
        #[prost(string, tag = "9")]
        pub image_ref: String,
        #[prost(string, tag = "10")]
        pub reason: String,
        #[prost(string, tag = "11")]
        pub message: String,
        #[prost(map = "string, string", tag = "12")]
        pub labels: HashMap<String, String>,
        #[prost(map = "string, string", tag = "13")]
        pub annotations: HashMap<String, String>,
        #[prost(string, tag = "15")]
        pub log_path: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(uint32, tag = "2")]
        pub attempt: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageSpec {
        #[prost(string, tag = "1")]
        pub image: String,
    }
}

mod containerd {
    use std::collections::HashMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetContainerRequest {
        #[prost(string, tag = "1")]
        pub id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetContainerResponse {
        #[prost(message, optional, tag = "1")]
        pub container: Option<Container>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Container {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(map = "string, string", tag = "2")]
        pub labels: HashMap<String, String>,
        #[prost(string, tag = "3")]
        pub image: String,
    }
}

/// The sockets runtimes listen on, below the host root.
const CONTAINERD_SOCKET: &str = "run/containerd/containerd.sock";
const CRIO_SOCKET: &str = "run/crio/crio.sock";

struct Query {
    id: String,
    namespace: Option<String>,
    reply: mpsc::SyncSender<Result<Option<ContainerMeta>, String>>,
}

/// The client the identity resolver uses.
pub struct RuntimeApi {
    host_root: PathBuf,
    tx: Option<mpsc::Sender<(PathBuf, Query)>>,
    down_until: HashMap<PathBuf, Instant>,
    pub calls: u64,
    pub failures: u64,
}

impl RuntimeApi {
    pub fn new(host_root: &Path) -> Self {
        let (tx, rx) = mpsc::channel::<(PathBuf, Query)>();
        let spawned = std::thread::Builder::new()
            .name("runtime-api".into())
            .spawn(move || worker(rx));
        if let Err(err) = &spawned {
            tracing::warn!(%err, "no runtime API worker: container metadata from state files only");
        }
        Self {
            host_root: host_root.to_path_buf(),
            tx: spawned.ok().map(|_| tx),
            down_until: HashMap::new(),
            calls: 0,
            failures: 0,
        }
    }

    /// Asks the runtime that runs container `id`. `runtime` is what the
    /// cgroup path or the state files said (`None`: unknown, ask both).
    pub fn lookup(
        &mut self,
        id: &str,
        runtime: Option<&'static str>,
        namespace: Option<&str>,
    ) -> Option<ContainerMeta> {
        let sockets: &[&str] = match runtime {
            Some("containerd") => &[CONTAINERD_SOCKET],
            Some("cri-o") => &[CRIO_SOCKET],
            Some(_) => &[],
            None => &[CONTAINERD_SOCKET, CRIO_SOCKET],
        };
        for socket in sockets {
            let path = self.host_root.join(socket);
            if self
                .down_until
                .get(&path)
                .is_some_and(|t| Instant::now() < *t)
                || !path.exists()
            {
                continue;
            }
            let tx = self.tx.as_ref()?;
            let (reply, answer) = mpsc::sync_channel(1);
            let query = Query {
                id: id.to_owned(),
                namespace: namespace.map(str::to_owned),
                reply,
            };
            if tx.send((path.clone(), query)).is_err() {
                self.tx = None;
                return None;
            }
            self.calls += 1;
            match answer.recv_timeout(ANSWER_WAIT) {
                Ok(Ok(Some(meta))) => return Some(meta),
                Ok(Ok(None)) => {}
                Ok(Err(err)) => {
                    self.failures += 1;
                    tracing::info!(socket = %path.display(), %err, "runtime API unavailable; retrying in 30 s");
                    self.down_until.insert(path, Instant::now() + BACKOFF);
                }
                Err(_) => {
                    self.failures += 1;
                    tracing::warn!(socket = %path.display(), "runtime API did not answer in time; retrying in 30 s");
                    self.down_until.insert(path, Instant::now() + BACKOFF);
                }
            }
        }
        None
    }
}

fn worker(rx: mpsc::Receiver<(PathBuf, Query)>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    while let Ok((socket, query)) = rx.recv() {
        let answer = runtime.block_on(async {
            tokio::time::timeout(ANSWER_WAIT, ask(&socket, &query))
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        });
        // The caller may have stopped waiting.
        let _ = query.reply.try_send(answer);
    }
}

async fn ask(socket: &Path, q: &Query) -> Result<Option<ContainerMeta>, String> {
    let source = socket.display().to_string();
    let request = cri::ContainerStatusRequest {
        container_id: q.id.clone(),
        verbose: false,
    };
    let cri: Result<cri::ContainerStatusResponse, GrpcError> = grpc::unary(
        socket,
        "/runtime.v1.RuntimeService/ContainerStatus",
        &request,
        &[],
    )
    .await;
    match cri {
        Ok(response) => {
            if let Some(status) = response.status {
                return Ok(Some(from_cri(status, socket, source)));
            }
        }
        Err(GrpcError::Status { code, .. })
            if code == grpc::NOT_FOUND || code == grpc::UNIMPLEMENTED => {}
        Err(GrpcError::Status { code, message })
            if code == grpc::UNKNOWN && message.contains("not found") => {}
        Err(err) => return Err(err.to_string()),
    }
    if !socket.ends_with("containerd.sock") {
        return Ok(None);
    }
    // Not a CRI container: containerd's own metadata, in its namespace.
    let namespaces: Vec<String> = match &q.namespace {
        Some(ns) => vec![ns.clone()],
        None => ["default", "moby", "k8s.io"].map(String::from).to_vec(),
    };
    for ns in namespaces {
        let request = containerd::GetContainerRequest { id: q.id.clone() };
        let response: Result<containerd::GetContainerResponse, GrpcError> = grpc::unary(
            socket,
            "/containerd.services.containers.v1.Containers/Get",
            &request,
            &[("containerd-namespace", ns.as_str())],
        )
        .await;
        match response {
            Ok(r) => {
                let Some(c) = r.container else { continue };
                let mut labels = c.labels;
                return Ok(Some(ContainerMeta {
                    runtime: Some(if ns == "moby" { "docker" } else { "containerd" }),
                    name: labels.remove("nerdctl/name"),
                    image_name: Some(c.image).filter(|i| !i.is_empty()),
                    pod_name: labels.remove("io.kubernetes.pod.name"),
                    pod_namespace: labels.remove("io.kubernetes.pod.namespace"),
                    pod_uid: labels.remove("io.kubernetes.pod.uid"),
                    k8s_container_name: labels.remove("io.kubernetes.container.name"),
                    containerd_namespace: Some(ns.clone()),
                    source: Some(format!("{source} (namespace {ns})")),
                }));
            }
            Err(GrpcError::Status { code, .. }) if code == grpc::NOT_FOUND => {}
            Err(err) => return Err(err.to_string()),
        }
    }
    Ok(None)
}

fn from_cri(status: cri::ContainerStatus, socket: &Path, source: String) -> ContainerMeta {
    let mut labels = status.labels;
    let a = &status.annotations;
    let crio = socket.ends_with("crio.sock");
    let image = status
        .image
        .map(|i| i.image)
        .filter(|i| !i.is_empty() && !i.starts_with("sha256:"))
        .or_else(|| a.get("io.kubernetes.cri.image-name").cloned())
        .or_else(|| Some(status.image_ref).filter(|i| !i.is_empty()));
    let k8s_name = labels.remove("io.kubernetes.container.name").or_else(|| {
        status
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .filter(|n| !n.is_empty())
    });
    ContainerMeta {
        runtime: Some(if crio { "cri-o" } else { "containerd" }),
        name: status.metadata.map(|m| m.name).filter(|n| !n.is_empty()),
        image_name: image,
        pod_name: labels
            .remove("io.kubernetes.pod.name")
            .or_else(|| a.get("io.kubernetes.cri.sandbox-name").cloned()),
        pod_namespace: labels
            .remove("io.kubernetes.pod.namespace")
            .or_else(|| a.get("io.kubernetes.cri.sandbox-namespace").cloned()),
        pod_uid: labels
            .remove("io.kubernetes.pod.uid")
            .or_else(|| a.get("io.kubernetes.cri.sandbox-uid").cloned()),
        k8s_container_name: k8s_name,
        containerd_namespace: None,
        source: Some(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_status_to_meta() {
        let status = cri::ContainerStatus {
            id: "x".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "agent".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "localhost/agent:1".into(),
            }),
            image_ref: "sha256:abc".into(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), "agent-7d9f".into()),
                ("io.kubernetes.pod.namespace".into(), "payments".into()),
                ("io.kubernetes.pod.uid".into(), "u-1".into()),
                ("io.kubernetes.container.name".into(), "agent".into()),
            ]),
            ..Default::default()
        };
        let meta = from_cri(
            status,
            Path::new("/run/containerd/containerd.sock"),
            "s".into(),
        );
        assert_eq!(
            (
                meta.runtime,
                meta.pod_name.as_deref(),
                meta.pod_namespace.as_deref(),
                meta.k8s_container_name.as_deref(),
                meta.image_name.as_deref()
            ),
            (
                Some("containerd"),
                Some("agent-7d9f"),
                Some("payments"),
                Some("agent"),
                Some("localhost/agent:1")
            )
        );
        // Without kubelet labels the CRI annotations name the pod; an image
        // given by digest falls back to the annotated name.
        let status = cri::ContainerStatus {
            image: Some(cri::ImageSpec {
                image: "sha256:0123".into(),
            }),
            annotations: HashMap::from([
                ("io.kubernetes.cri.sandbox-name".into(), "p".into()),
                (
                    "io.kubernetes.cri.image-name".into(),
                    "localhost/x:2".into(),
                ),
            ]),
            ..Default::default()
        };
        let meta = from_cri(status, Path::new("/run/crio/crio.sock"), "s".into());
        assert_eq!(
            (
                meta.runtime,
                meta.pod_name.as_deref(),
                meta.image_name.as_deref(),
                meta.name
            ),
            (Some("cri-o"), Some("p"), Some("localhost/x:2"), None)
        );
    }

    #[test]
    fn missing_socket_is_skipped_quickly() {
        let dir = std::env::temp_dir().join(format!("sensor-api-{}", std::process::id()));
        let mut api = RuntimeApi::new(&dir);
        assert_eq!(api.lookup(&"a".repeat(64), None, None), None);
        assert_eq!(api.calls, 0);
    }
}
