//! Harness for the root integration tests: start the real sensor binary,
//! the project's fake model API, and real clients, and wait for events
//! (never fixed sleeps).
//!
//! A test that cannot run (not root, a tool missing) fails and says why:
//! CI must not pass by skipping.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test harness"
)]

pub mod cri;
pub mod receiver;
pub mod rsyslog;
pub mod runtime;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Condvar, Mutex, OnceLock, mpsc},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(60);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| {
        panic!("{name} is not set: run the integration tests through `cargo xtask test`, which sets it up")
    }))
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the integration tests load eBPF programs and must run as root"
    );
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sensor-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The stdout of a command that must have exited 0 (else a panic showing
/// both of its outputs).
pub fn expect_success(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Writes `content` to `dir/name`, readable by its owner only (what the
/// sensor demands of key and secret files).
pub fn secret_file(dir: &std::path::Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, content.as_bytes()).unwrap();
    path
}

/// Kills the child when the thread that spawned it exits. The shared
/// sensor is spawned from a thread that never exits, so this means: when
/// the test process exits.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

#[derive(Default)]
struct Collected {
    events: Vec<Value>,
    raw: String,
    bad_lines: Vec<String>,
    closed: bool,
}

/// The sensor under test.
pub struct Sensor {
    child: Mutex<Child>,
    out: Arc<(Mutex<Collected>, Condvar)>,
    stderr: Arc<Mutex<String>>,
    pub dir: PathBuf,
}

impl Sensor {
    /// Starts the sensor and waits until it reports ready.
    pub fn start(name: &str, extra: &[&str]) -> Self {
        require_root();
        let dir = scratch(&format!("sensor-{name}"));
        let mut cmd = Command::new(env_path("SENSOR_BIN"));
        cmd.arg("--fingerprint-key-file")
            .arg(dir.join("fingerprint.key"))
            .arg("--integrity-key-file")
            .arg(dir.join("integrity.key"))
            .args([
                "--host-name",
                "it-node",
                "--node-name",
                "it-node",
                "--health-interval-secs",
                "5",
                "--log",
                "info",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("starting the sensor");
        let out = Arc::new((Mutex::new(Collected::default()), Condvar::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&out);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (lock, cv) = &*sink;
                let mut c = lock.lock().unwrap();
                c.raw.push_str(&line);
                c.raw.push('\n');
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => c.events.push(v),
                    Err(_) => c.bad_lines.push(line),
                }
                cv.notify_all();
            }
            let (lock, cv) = &*sink;
            lock.lock().unwrap().closed = true;
            cv.notify_all();
        });
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let err_sink = Arc::clone(&stderr_text);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                err_sink
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let sensor = Self {
            child: Mutex::new(child),
            out,
            stderr: stderr_text,
            dir,
        };
        let ready = sensor.wait_for(WAIT, |e| {
            action(e) == "sensor_health" && e["sensor"]["status"] == "ready"
        });
        assert!(
            ready.is_some(),
            "the sensor did not report ready; stderr:\n{}",
            sensor.stderr_text()
        );
        sensor
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// The first event (in emission order) matching `pred`, waiting for it.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.wait_for_n(timeout, 1, pred).into_iter().next()
    }

    /// Waits until at least `n` events match, and returns all that match.
    pub fn wait_for_n(
        &self,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.out;
        let mut c = lock.lock().unwrap();
        loop {
            let found: Vec<Value> = c.events.iter().filter(|e| pred(e)).cloned().collect();
            if found.len() >= n || c.closed {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                return found;
            }
            c = cv.wait_timeout(c, deadline - now).unwrap().0;
        }
    }

    pub fn events(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.out
            .0
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| pred(e))
            .cloned()
            .collect()
    }

    /// Everything the sensor printed on stdout so far.
    pub fn stdout_text(&self) -> String {
        self.out.0.lock().unwrap().raw.clone()
    }

    pub fn bad_lines(&self) -> Vec<String> {
        self.out.0.lock().unwrap().bad_lines.clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Makes sure every record produced before this call has been handled:
    /// runs a marker process and waits for its exec event. The ring buffer
    /// keeps order, so anything a finished client caused is out by then.
    pub fn barrier(&self) {
        let marker = format!("sensor-barrier-{}", unique());
        let status = Command::new("/bin/sh")
            .args(["-c", "exit 0", &marker])
            .status()
            .unwrap();
        assert!(status.success());
        let seen = self.wait_for(WAIT, |e| {
            action(e) == "process_exec"
                && e["process"]["command_line"]
                    .as_str()
                    .is_some_and(|c| c.contains(&marker))
        });
        assert!(
            seen.is_some(),
            "barrier event never came; stderr:\n{}",
            self.stderr_text()
        );
    }

    /// Sends SIGINT and waits for the exit.
    pub fn stop(&self) -> ExitStatus {
        let mut child = self.child.lock().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the sensor did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no flush, no checkpoint, no clean anything.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Fails if `secret` appears anywhere the sensor wrote.
    pub fn assert_never_printed(&self, secret: &str) {
        assert!(
            !self.stdout_text().contains(secret),
            "secret leaked into the event stream"
        );
        assert!(
            !self.stderr_text().contains(secret),
            "secret leaked into the sensor's log"
        );
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// One sensor shared by the tests of a test binary. It is spawned from a
/// thread that lives as long as the process, so PR_SET_PDEATHSIG stops it
/// when the test binary exits.
pub fn shared_sensor() -> &'static Sensor {
    static SENSOR: OnceLock<&'static Sensor> = OnceLock::new();
    SENSOR.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let sensor: &'static Sensor = Box::leak(Box::new(Sensor::start("shared", &[])));
            tx.send(sensor).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv()
            .expect("sensor start failed (see the panic above)")
    })
}

pub fn action(e: &Value) -> &str {
    e["event"]["action"].as_str().unwrap_or("")
}

pub fn pid_of(e: &Value) -> Option<u64> {
    e["process"]["pid"].as_u64()
}

/// A short unique token for keys and markers.
pub fn unique() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}{n}", std::process::id(), t)
}

/// A planted, obviously fake API key, unique per call.
pub fn fake_key(tag: &str) -> String {
    format!("sk-test-{tag}-{}", unique())
}

/// The project's fake model API (tests/fixtures/fake_model_api.py).
pub struct FakeApi {
    child: Child,
    pub port: u16,
    /// The cleartext HTTP port, when asked for.
    pub plain_port: Option<u16>,
    pub ca: PathBuf,
    pub dir: PathBuf,
    log: Arc<Mutex<Vec<Value>>>,
}

impl FakeApi {
    pub fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1")
    }

    /// Listens on `host` (`::1` for IPv6).
    pub fn start_on(name: &str, host: &str) -> Self {
        Self::start_with(name, host, false)
    }

    /// Also serves HTTP/2 (ALPN `h2`, with the venv's `h2` package) and
    /// cleartext HTTP/1.1 on a second port.
    pub fn start_full(name: &str) -> Self {
        Self::start_with(name, "127.0.0.1", true)
    }

    fn start_with(name: &str, host: &str, full: bool) -> Self {
        let dir = scratch(&format!("api-{name}"));
        let mut cmd = if full {
            Command::new(venv_python())
        } else {
            Command::new("python3")
        };
        cmd.arg(workspace().join("tests/fixtures/fake_model_api.py"))
            .arg("--dir")
            .arg(&dir)
            .args(["--host", host]);
        if full {
            cmd.args(["--http2", "--plain-port", "0"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .expect("python3 is needed for the fake model API");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().expect("fake API exited before READY").unwrap();
        let info: Value =
            serde_json::from_str(ready.strip_prefix("READY ").expect("READY line")).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Self {
            child,
            port: info["port"].as_u64().unwrap() as u16,
            plain_port: info["plain_port"].as_u64().map(|p| p as u16),
            ca: PathBuf::from(info["ca"].as_str().unwrap()),
            dir,
            log,
        }
    }

    pub fn openai_base(&self) -> String {
        format!("https://127.0.0.1:{}/v1", self.port)
    }

    pub fn anthropic_base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Request log lines the server wrote so far.
    pub fn log(&self) -> Vec<Value> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The token counts the fake API answers with.
pub fn usage(endpoint: &str, stream: bool) -> (u64, u64) {
    let text =
        std::fs::read_to_string(workspace().join("tests/fixtures/fake_model_api_usage.json"))
            .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let key = if stream {
        format!("{endpoint}_stream")
    } else {
        endpoint.to_owned()
    };
    let u = &v[key.as_str()];
    (
        u["input"].as_u64().expect("usage input"),
        u["output"].as_u64().expect("usage output"),
    )
}

/// The Python interpreter of the test virtualenv (openai, anthropic SDKs).
pub fn venv_python() -> PathBuf {
    env_path("SENSOR_TEST_VENV").join("bin/python")
}

/// Runs a client; its stdout is JSON lines. Panics with its stderr on failure.
pub fn run_client(mut cmd: Command) -> (u32, Vec<Value>) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client");
    let pid = child.id();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "client {cmd:?} failed: {status}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    let lines = String::from_utf8_lossy(&stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (pid, lines)
}

/// A Python SDK client from tests/clients against `api`.
pub fn python_client(api: &FakeApi, script: &str, base: &str, key: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(venv_python());
    cmd.arg(workspace().join("tests/clients").join(script))
        .args(args)
        .env("SENSOR_TEST_BASE_URL", base)
        .env("SENSOR_TEST_API_KEY", key)
        .env("SSL_CERT_FILE", &api.ca)
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("SSL_CERT_DIR");
    cmd
}

/// The Node SDK client, run from the cached npm modules directory (ESM
/// resolves `openai` next to the script).
pub fn node_client(api: &FakeApi, key: &str, args: &[&str]) -> Command {
    let dir = env_path("SENSOR_TEST_NODE_DIR");
    let script = dir.join("openai_chat.mjs");
    std::fs::copy(workspace().join("tests/clients/openai_chat.mjs"), &script).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .args(args)
        .env("SENSOR_TEST_BASE_URL", api.openai_base())
        .env("SENSOR_TEST_API_KEY", key)
        .env("NODE_EXTRA_CA_CERTS", &api.ca);
    cmd
}

/// Validates events against the JSON Schema in sensor/schema with the
/// Python `jsonschema` package of the test venv.
pub fn assert_schema_valid(events: &[Value]) {
    let mut child = Command::new(venv_python())
        .arg(workspace().join("tests/fixtures/validate_events.py"))
        .arg(workspace().join("sensor/schema/event.schema.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        for e in events {
            writeln!(stdin, "{e}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "events do not match the schema:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
