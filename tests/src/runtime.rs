//! Real container runtimes for the root integration tests: Docker, rootful
//! Podman, plain containerd (`ctr`), and Kubernetes-shaped pods through
//! containerd's CRI plugin. `cargo xtask test` sets them up (see
//! `xtask/src/setup.rs`, `runtimes()`): it starts containerd and dockerd
//! if they are not running, and imports the test image, a Debian bookworm
//! root filesystem with curl and ca-certificates, into each of them.
//!
//! Every container uses the host network, so it reaches a loopback server
//! (the fake model API on 127.0.0.1) directly. Each `*_run` call runs one
//! command to completion in a fresh container and returns what the runtime
//! reports about it; the container (or pod) is removed afterwards, also when
//! the test panics (a drop guard).
//!
//! Environment, set by `cargo xtask test`:
//! - `SENSOR_TEST_IMAGE`: the image reference, the same in every runtime
//!   (`localhost/sensor-test-rootfs:<hash>`);
//! - `SENSOR_TEST_CONTAINERS_CONF`: the containers.conf podman needs here
//!   (cgroupfs, file events, host network, explicit ulimits).

use std::{
    fmt,
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use sensor::grpc::GrpcError;

use crate::{cri, scratch, unique};

/// The Debian package's Docker CLI (a newer one may shadow it in PATH).
pub const DOCKER: &str = "/usr/bin/docker";
pub const PODMAN: &str = "podman";
pub const CTR: &str = "ctr";
/// containerd's socket; it serves both its own API and the CRI.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// containerd namespace of the containers `ctr_run` makes.
pub const CTR_NAMESPACE: &str = "sensor-test";
/// containerd namespace of the CRI plugin (pods).
pub const CRI_NAMESPACE: &str = "k8s.io";
/// How long a container may run by default.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Per gRPC call to the CRI.
const CRI_CALL_TIMEOUT: Duration = Duration::from_secs(60);

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the integration tests through `cargo xtask test`, \
             which sets up the container runtimes"
        )
    })
}

/// The test image, as every runtime names it.
pub fn test_image() -> String {
    env_var("SENSOR_TEST_IMAGE")
}

/// The containers.conf that podman is run with.
pub fn containers_conf() -> PathBuf {
    PathBuf::from(env_var("SENSOR_TEST_CONTAINERS_CONF"))
}

/// A podman command with the test containers.conf.
pub fn podman() -> Command {
    let mut cmd = Command::new(PODMAN);
    cmd.env("CONTAINERS_CONF", containers_conf());
    cmd
}

/// A `ctr` command in the test namespace.
pub fn ctr(namespace: &str) -> Command {
    let mut cmd = Command::new(CTR);
    cmd.args(["--address", CONTAINERD_SOCKET, "--namespace", namespace]);
    cmd
}

/// A host file or directory mounted read-only into the container.
#[derive(Clone, Debug)]
pub struct Bind {
    pub host: PathBuf,
    pub container: String,
}

impl Bind {
    /// Panics unless `host` exists: the runtimes would rather create a
    /// missing source as an empty directory (containerd's CRI does).
    pub fn new(host: impl Into<PathBuf>, container: &str) -> Self {
        let host = host.into();
        assert!(
            host.exists(),
            "bind mount source {} does not exist",
            host.display()
        );
        Self {
            host,
            container: container.to_owned(),
        }
    }
}

/// What to run in a container (`docker_run`, `podman_run`, `ctr_run`).
#[derive(Clone, Debug)]
pub struct RunOpts {
    /// The container name (for `ctr`, the container id). Default: docker
    /// and podman `sensor-it-<unique>`; ctr a random 64-hex id, the form
    /// the other runtimes use.
    pub name: Option<String>,
    /// The command and its arguments (the image has no entrypoint).
    pub command: Vec<String>,
    /// Environment variables. They reach the runtime through an env file
    /// (mode 0600), never a command line.
    pub env: Vec<(String, String)>,
    pub binds: Vec<Bind>,
    /// The container is killed, and the test fails, after this long.
    pub timeout: Duration,
}

impl RunOpts {
    pub fn new<S: AsRef<str>>(command: &[S]) -> Self {
        Self {
            name: None,
            command: command.iter().map(|s| s.as_ref().to_owned()).collect(),
            env: Vec::new(),
            binds: Vec::new(),
            timeout: RUN_TIMEOUT,
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Mounts the host path `host` read-only at `container`.
    pub fn bind_ro(mut self, host: impl Into<PathBuf>, container: &str) -> Self {
        self.binds.push(Bind::new(host, container));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Podman,
    /// Plain containerd through `ctr`, namespace [`CTR_NAMESPACE`].
    Containerd,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Containerd => "containerd",
        })
    }
}

/// A container that ran to completion (and has been removed).
#[derive(Clone, Debug)]
pub struct Finished {
    pub runtime: Runtime,
    /// The id as the runtime reports it: docker and podman the full 64-hex
    /// id from `inspect`, ctr the container id.
    pub id: String,
    pub name: String,
    pub image: String,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Panics with the output unless the command exited 0.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.exit_code, 0,
            "{} container {} exited {}\nstdout: {}\nstderr: {}",
            self.runtime, self.name, self.exit_code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `opts` in a fresh Docker container (host network) and removes it.
pub fn docker_run(opts: &RunOpts) -> Finished {
    cli_run(Runtime::Docker, opts)
}

/// Runs `opts` in a fresh rootful Podman container (host network, the
/// test containers.conf) and removes it.
pub fn podman_run(opts: &RunOpts) -> Finished {
    cli_run(Runtime::Podman, opts)
}

fn cli(runtime: Runtime) -> Command {
    match runtime {
        Runtime::Docker => Command::new(DOCKER),
        Runtime::Podman => podman(),
        Runtime::Containerd => unreachable!("ctr is not a docker-like CLI"),
    }
}

/// Docker and Podman take the same create/start/inspect/rm commands.
fn cli_run(runtime: Runtime, opts: &RunOpts) -> Finished {
    crate::require_root();
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("sensor-it-{}", unique()));
    let image = test_image();
    let files = scratch(&format!("{runtime}-{name}"));
    // Removes the container by name, whatever happens from here on.
    let _guard = Removal {
        runtime,
        id: name.clone(),
        files: files.clone(),
    };
    let mut create = cli(runtime);
    create
        .args(["create", "--name", &name, "--network", "host"])
        .arg("--env-file")
        .arg(env_file(&files, &opts.env));
    for bind in &opts.binds {
        create.arg("--volume").arg(volume(bind));
    }
    create.arg(&image).args(&opts.command);
    let out = run_checked(&mut create, Duration::from_secs(60));
    let created = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let id = inspect(runtime, &name, "{{.Id}}");
    assert_eq!(
        created, id,
        "{runtime} create printed an id different from inspect"
    );
    let started = run_timed(
        cli(runtime).args(["start", "--attach", &name]),
        opts.timeout,
    );
    let exit_code = inspect(runtime, &name, "{{.State.ExitCode}}")
        .parse()
        .unwrap_or_else(|e| panic!("{runtime} exit code: {e}"));
    Finished {
        runtime,
        id,
        name,
        image,
        exit_code,
        stdout: String::from_utf8_lossy(&started.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&started.stderr).into_owned(),
    }
}

fn inspect(runtime: Runtime, name: &str, format: &str) -> String {
    let out = run_checked(
        cli(runtime).args(["inspect", "--type", "container", "--format", format, name]),
        Duration::from_secs(30),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn volume(bind: &Bind) -> String {
    let host = bind.host.to_str().expect("UTF-8 host path");
    assert!(
        !host.contains(':') && !bind.container.contains(':'),
        "bind paths must not contain ':'"
    );
    format!("{host}:{}:ro", bind.container)
}

/// Runs `opts` in a fresh containerd container through `ctr run`
/// (namespace [`CTR_NAMESPACE`], host network) and removes it.
pub fn ctr_run(opts: &RunOpts) -> Finished {
    crate::require_root();
    let id = opts.name.clone().unwrap_or_else(random_hex_id);
    let image = test_image();
    let files = scratch(&format!("ctr-{}", &id[..id.len().min(12)]));
    let _guard = Removal {
        runtime: Runtime::Containerd,
        id: id.clone(),
        files: files.clone(),
    };
    let mut run = ctr(CTR_NAMESPACE);
    run.args(["run", "--net-host"])
        .arg("--env-file")
        .arg(env_file(&files, &opts.env));
    for bind in &opts.binds {
        run.arg("--mount").arg(format!(
            "type=bind,src={},dst={},options=rbind:ro",
            bind.host.display(),
            bind.container
        ));
    }
    run.arg(&image).arg(&id).args(&opts.command);
    let out = run_timed(&mut run, opts.timeout);
    // ctr exits with the task's exit status; a failure of ctr itself also
    // shows here, with its message on stderr.
    let exit_code = out.status.code().unwrap_or(-1);
    Finished {
        runtime: Runtime::Containerd,
        name: id.clone(),
        id,
        image,
        exit_code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes the environment as an env file (KEY=VALUE lines, mode 0600).
fn env_file(dir: &Path, env: &[(String, String)]) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("env");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    for (key, value) in env {
        assert!(
            !key.contains('=') && !value.contains('\n'),
            "env {key}: no '=' in names, no newline in values"
        );
        writeln!(file, "{key}={value}").unwrap();
    }
    path
}

/// 64 random hex digits, the id form of docker, podman and CRI.
pub fn random_hex_id() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes a docker/podman/ctr container and its scratch files on drop.
struct Removal {
    runtime: Runtime,
    id: String,
    files: PathBuf,
}

impl Drop for Removal {
    fn drop(&mut self) {
        let quiet = |cmd: &mut Command| {
            let _ = run_timed_quiet(cmd, Duration::from_secs(60));
        };
        match self.runtime {
            Runtime::Docker | Runtime::Podman => {
                quiet(cli(self.runtime).args(["rm", "--force", "--volumes", &self.id]));
            }
            Runtime::Containerd => {
                quiet(ctr(CTR_NAMESPACE).args(["task", "kill", "--signal", "SIGKILL", &self.id]));
                quiet(ctr(CTR_NAMESPACE).args(["task", "delete", "--force", &self.id]));
                quiet(ctr(CTR_NAMESPACE).args(["container", "delete", &self.id]));
            }
        }
        let _ = std::fs::remove_dir_all(&self.files);
    }
}

/// Runs `cmd`, panics with its output unless it exits 0.
fn run_checked(cmd: &mut Command, timeout: Duration) -> Output {
    let out = run_timed(cmd, timeout);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` with captured output; panics if it takes longer than
/// `timeout` (after killing it).
fn run_timed(cmd: &mut Command, timeout: Duration) -> Output {
    match run_timed_quiet(cmd, timeout) {
        Ok(out) => out,
        Err(err) => panic!("{err}"),
    }
}

fn run_timed_quiet(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {cmd:?}: {e}"))?;
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    })
}

/// A pod to run through the CRI (`cri_pod`): one sandbox with one
/// container, as the kubelet would create them for a best-effort pod with
/// `hostNetwork: true`.
#[derive(Clone, Debug)]
pub struct PodOpts {
    /// Pod name; default `sensor-it-<unique>`.
    pub name: Option<String>,
    /// Kubernetes namespace; default `sensor-test`.
    pub namespace: String,
    /// Container name in the pod; default `app`.
    pub container_name: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub binds: Vec<Bind>,
    /// Extra pod labels (besides the `io.kubernetes.pod.*` ones).
    pub labels: Vec<(String, String)>,
    /// Pod uid; default a random UUID.
    pub uid: Option<String>,
    pub timeout: Duration,
}

/// Where Kubernetes mounts a projected service account token.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

impl PodOpts {
    pub fn new<S: AsRef<str>>(command: &[S]) -> Self {
        Self {
            name: None,
            namespace: "sensor-test".into(),
            container_name: "app".into(),
            command: command.iter().map(|s| s.as_ref().to_owned()).collect(),
            env: Vec::new(),
            binds: Vec::new(),
            labels: Vec::new(),
            uid: None,
            timeout: RUN_TIMEOUT,
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    pub fn uid(mut self, uid: &str) -> Self {
        self.uid = Some(uid.to_owned());
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.namespace);
        self
    }

    pub fn container_name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.container_name);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn bind_ro(mut self, host: impl Into<PathBuf>, container: &str) -> Self {
        self.binds.push(Bind::new(host, container));
        self
    }

    /// Mounts `host` read-only where a projected service account token
    /// goes ([`SERVICE_ACCOUNT_TOKEN`]).
    pub fn service_account_token(self, host: impl Into<PathBuf>) -> Self {
        self.bind_ro(host, SERVICE_ACCOUNT_TOKEN)
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// One line of a CRI container log: `<RFC 3339 time> <stream> <tag> <text>`,
/// tag `F` (full line) or `P` (partial: the line goes on in the next one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriLogLine {
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub partial: bool,
    pub text: String,
}

/// Parses a CRI log file; lines that do not have the format are skipped.
pub fn parse_cri_log(text: &str) -> Vec<CriLogLine> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ' ');
            let time = parts.next()?;
            let stream = parts.next()?;
            let tag = parts.next()?;
            let text = parts.next().unwrap_or("");
            Some(CriLogLine {
                time: time.to_owned(),
                stream: stream.to_owned(),
                partial: tag.split(':').any(|t| t == "P"),
                text: text.to_owned(),
            })
        })
        .collect()
}

/// A pod whose container ran to completion (the pod has been removed).
#[derive(Clone, Debug)]
pub struct PodFinished {
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
    pub container_name: String,
    /// 64-hex, as the CRI reports it (and as it appears in the cgroup path).
    pub container_id: String,
    pub sandbox_id: String,
    pub image: String,
    /// The pod's cgroup parent (cgroupfs syntax).
    pub cgroup_parent: String,
    pub exit_code: i32,
    /// The container's log, as containerd wrote it.
    pub logs: Vec<CriLogLine>,
}

impl PodFinished {
    fn stream(&self, stream: &str) -> String {
        let mut out = String::new();
        for line in self.logs.iter().filter(|l| l.stream == stream) {
            out.push_str(&line.text);
            if !line.partial {
                out.push('\n');
            }
        }
        out
    }

    pub fn stdout(&self) -> String {
        self.stream("stdout")
    }

    pub fn stderr(&self) -> String {
        self.stream("stderr")
    }

    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.exit_code,
            0,
            "pod {}/{} container {} exited {}\nstdout: {}\nstderr: {}",
            self.namespace,
            self.pod_name,
            self.container_name,
            self.exit_code,
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// Runs a future to completion on a private single-thread tokio runtime,
/// on its own thread, so it works whether or not the caller is inside a
/// runtime (and from `Drop`).
fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(future)
        })
        .join()
        .expect("CRI call thread panicked")
    })
}

/// One CRI call, with a timeout, from synchronous code.
fn cri_call<Req, Resp>(method: &str, req: &Req) -> Result<Resp, GrpcError>
where
    Req: prost::Message + Sync,
    Resp: prost::Message + Default + Send,
{
    block_on(async {
        let socket = Path::new(CONTAINERD_SOCKET);
        tokio::time::timeout(CRI_CALL_TIMEOUT, cri::call(socket, method, req))
            .await
            .unwrap_or_else(|_| {
                Err(GrpcError::Protocol(format!(
                    "no answer within {CRI_CALL_TIMEOUT:?}"
                )))
            })
    })
}

fn cri_call_ok<Req, Resp>(method: &str, req: &Req) -> Resp
where
    Req: prost::Message + Sync,
    Resp: prost::Message + Default + Send,
{
    cri_call(method, req).unwrap_or_else(|e| panic!("CRI {method}: {e}"))
}

/// The CRI runtime's name and versions (a cheap liveness check).
pub fn cri_version() -> cri::VersionResponse {
    cri_call_ok(
        "Version",
        &cri::VersionRequest {
            version: "v1".into(),
        },
    )
}

/// A random UUID (the form of Kubernetes uids).
pub fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("reading a random UUID")
        .trim()
        .to_owned()
}

fn host_namespaces() -> cri::NamespaceOption {
    // What the kubelet asks for a `hostNetwork: true` pod.
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
    }
}

/// Runs a pod through containerd's CRI plugin: RunPodSandbox (host
/// network, cgroup parent `/kubepods/besteffort/pod<uid>` so the cgroupfs
/// driver gives the kubelet's layout, a random pod uid, the
/// `io.kubernetes.pod.*` labels), CreateContainer and StartContainer, waits
/// for the container to exit, reads its log, and returns. The sandbox is
/// stopped and removed on return or panic.
pub fn cri_pod(opts: &PodOpts) -> PodFinished {
    crate::require_root();
    let pod_name = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("sensor-it-{}", unique()));
    let pod_uid = opts.uid.clone().unwrap_or_else(random_uuid);
    let image = test_image();
    let log_directory = scratch(&format!("cri-{pod_name}"));
    let cgroup_parent = format!("/kubepods/besteffort/pod{pod_uid}");
    let pod_labels = [
        ("io.kubernetes.pod.name", pod_name.as_str()),
        ("io.kubernetes.pod.namespace", opts.namespace.as_str()),
        ("io.kubernetes.pod.uid", pod_uid.as_str()),
    ];
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod_name.clone(),
            uid: pod_uid.clone(),
            namespace: opts.namespace.clone(),
            attempt: 0,
        }),
        hostname: String::new(),
        log_directory: log_directory.to_str().expect("UTF-8 temp dir").to_owned(),
        labels: pod_labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain(opts.labels.iter().cloned())
            .collect(),
        annotations: [("kubernetes.io/config.source", "api")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(host_namespaces()),
            }),
        }),
    };
    let mut guard = Sandbox {
        id: None,
        log_directory: log_directory.clone(),
    };
    let sandbox: cri::RunPodSandboxResponse = cri_call_ok(
        "RunPodSandbox",
        &cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        },
    );
    let sandbox_id = sandbox.pod_sandbox_id;
    guard.id = Some(sandbox_id.clone());

    let log_path = format!("{}/0.log", opts.container_name);
    let container_labels = pod_labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain([(
            "io.kubernetes.container.name".to_owned(),
            opts.container_name.clone(),
        )])
        .collect();
    let container_config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: opts.container_name.clone(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.clone(),
        }),
        command: opts.command.clone(),
        envs: opts
            .env
            .iter()
            .map(|(key, value)| cri::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: opts
            .binds
            .iter()
            .map(|b| cri::Mount {
                container_path: b.container.clone(),
                host_path: b.host.to_str().expect("UTF-8 host path").to_owned(),
                readonly: true,
            })
            .collect(),
        labels: container_labels,
        annotations: [("io.kubernetes.container.restartCount", "0")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        log_path,
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(host_namespaces()),
            }),
        }),
        ..Default::default()
    };
    let created: cri::CreateContainerResponse = cri_call_ok(
        "CreateContainer",
        &cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(container_config),
            sandbox_config: Some(sandbox_config),
        },
    );
    let container_id = created.container_id;
    let _: cri::Empty = cri_call_ok(
        "StartContainer",
        &cri::ContainerIdRequest {
            container_id: container_id.clone(),
        },
    );

    let deadline = Instant::now() + opts.timeout;
    let status = loop {
        let answer: cri::ContainerStatusResponse = cri_call_ok(
            "ContainerStatus",
            &cri::ContainerStatusRequest {
                container_id: container_id.clone(),
                verbose: false,
            },
        );
        let status = answer.status.expect("ContainerStatus without a status");
        if status.state == cri::ContainerState::Exited as i32 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "pod {pod_name}: container {container_id} still {:?} after {:?}",
            cri::ContainerState::try_from(status.state),
            opts.timeout
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log_file = if status.log_path.is_empty() {
        log_directory.join(&opts.container_name).join("0.log")
    } else {
        PathBuf::from(&status.log_path)
    };
    let logs = std::fs::read_to_string(&log_file)
        .map(|text| parse_cri_log(&text))
        .unwrap_or_else(|e| panic!("reading the container log {}: {e}", log_file.display()));
    PodFinished {
        pod_uid,
        pod_name,
        namespace: opts.namespace.clone(),
        container_name: opts.container_name.clone(),
        container_id,
        sandbox_id,
        image,
        cgroup_parent,
        exit_code: status.exit_code,
        logs,
    }
}

/// Stops and removes a pod sandbox (and with it its containers) on drop.
struct Sandbox {
    id: Option<String>,
    log_directory: PathBuf,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(id) = &self.id {
            let req = cri::PodSandboxIdRequest {
                pod_sandbox_id: id.clone(),
            };
            for method in ["StopPodSandbox", "RemovePodSandbox"] {
                if let Err(e) = cri_call::<_, cri::Empty>(method, &req) {
                    eprintln!("warning: CRI {method} {id}: {e}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.log_directory);
    }
}

/// A projected service account token as the kubelet mounts it: a JWT
/// whose `kubernetes.io` claim names the namespace, pod and service
/// account (the signature is not checked by anyone here).
pub fn service_account_token(namespace: &str, sa: &str, pod: &str, pod_uid: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = serde_json::json!({
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": 4_102_444_800u64, "iat": 1_700_000_000u64, "nbf": 1_700_000_000u64,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": pod, "uid": pod_uid},
            "serviceaccount": {"name": sa, "uid": "5d3c9a70-0000-4000-8000-000000000001"},
        },
        "sub": format!("system:serviceaccount:{namespace}:{sa}"),
    });
    format!(
        "{}.{}.{}",
        b64.encode(br#"{"alg":"RS256","kid":"sensor-test"}"#),
        b64.encode(claims.to_string()),
        b64.encode(b"signature-not-checked")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines() {
        let text = "2026-11-22T07:30:00.1Z stdout F hello world\n\
                    2026-11-22T07:30:00.2Z stderr P part\n\
                    2026-11-22T07:30:00.3Z stderr F ial\n\
                    2026-11-22T07:30:00.4Z stdout F \n\
                    garbage\n";
        let lines = parse_cri_log(text);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].text, "hello world");
        assert!(lines[1].partial);
        let pod = PodFinished {
            pod_uid: String::new(),
            pod_name: String::new(),
            namespace: String::new(),
            container_name: String::new(),
            container_id: String::new(),
            sandbox_id: String::new(),
            image: String::new(),
            cgroup_parent: String::new(),
            exit_code: 0,
            logs: lines,
        };
        assert_eq!(pod.stdout(), "hello world\n\n");
        assert_eq!(pod.stderr(), "partial\n");
    }

    #[test]
    fn hex_ids() {
        let id = random_hex_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, random_hex_id());
    }
}
