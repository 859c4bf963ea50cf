//! A real rsyslogd receiving the sensor's syslog sink: one instance per
//! test, in the foreground, with its own configuration, pid file, work
//! directory and ports; it never reads /etc/rsyslog.conf, never opens
//! /dev/log (no imuxsock, no imklog), and needs no systemd.
//!
//! Listeners, all on 127.0.0.1: TCP (octet-counted or LF framing), TLS
//! (the gtls driver, anonymous clients, the given server certificate), and
//! UDP. Everything they receive goes to two files in the directory:
//! `received.log`, the MSG part of each message (the JSON record) on a
//! line, and `raw.log`, the whole message as received (the RFC 5424
//! header and MSG, without the TCP octet count). rsyslog's own messages
//! go to `rsyslogd.log`, its stderr to `rsyslogd.stderr`.
//!
//! Configuration notes (rsyslog 8.2302, Debian 12):
//! - `maxMessageSize` (default 8 KiB, longer messages are cut) must be set
//!   in `global()` before any input is defined; imtcp's `maxFrameSize`
//!   (default 200,000) caps an octet-counted frame, beyond which rsyslog
//!   falls back to LF framing: both are set to 256 KiB here.
//! - `parser.escapeControlCharactersOnReceive` is turned off so bytes reach
//!   the file as sent (JSON has no raw control characters anyway).
//! - `processInternalMessages="on"`: otherwise rsyslog sends its own
//!   messages to the system log socket (/dev/log), which is not ours.
//! - Per-input `streamDriver.*` settings (since 8.2108) let one imtcp
//!   module serve a plain and a TLS listener; the TLS one needs the
//!   rsyslog-gnutls package (lmnsd_gtls).
//! - imtcp can pick a free port (`port="0"` with `listenPortFileName`);
//!   imudp cannot in this version, so its port is found by binding port 0
//!   and letting go of it just before rsyslogd starts.
//! - A restart keeps the ports: the configuration is rewritten with the
//!   ports found at the first start.

use std::{
    fs,
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long rsyslogd may take to start listening or to stop.
const STARTUP: Duration = Duration::from_secs(30);

/// The largest message (and octet-counted frame) rsyslogd takes here.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// A running rsyslogd. Dropping it stops it.
pub struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    tls_ca: PathBuf,
    tcp_port: u16,
    tls_port: u16,
    udp_port: u16,
}

impl Rsyslog {
    /// Starts rsyslogd with its configuration, pid file and work directory
    /// under `dir`, and waits until all three listeners are up. The TLS
    /// listener presents `tls_cert` (PEM, the chain after the server's
    /// certificate) with `tls_key`, and takes clients without
    /// certificates; `tls_ca` is the CA that issued `tls_cert`.
    pub fn start(dir: &Path, tls_cert: &Path, tls_key: &Path, tls_ca: &Path) -> Self {
        fs::create_dir_all(dir.join("work"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        for file in [tls_cert, tls_key, tls_ca] {
            assert!(
                file.is_file(),
                "rsyslog TLS file {} does not exist",
                file.display()
            );
        }
        let mut rsyslog = Self {
            child: None,
            dir: dir.to_path_buf(),
            tls_cert: tls_cert.to_path_buf(),
            tls_key: tls_key.to_path_buf(),
            tls_ca: tls_ca.to_path_buf(),
            tcp_port: 0,
            tls_port: 0,
            udp_port: free_udp_port(),
        };
        rsyslog.launch();
        rsyslog
    }

    /// The plain TCP listener's port.
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The TLS listener's port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The UDP listener's port.
    pub fn udp_port(&self) -> u16 {
        self.udp_port
    }

    /// The directory with the configuration and the received files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The MSG of every message received so far, in arrival order.
    pub fn messages(&self) -> Vec<String> {
        read_lines(&self.dir.join("received.log"))
    }

    /// Every message received so far as it came (RFC 5424 header and
    /// MSG, no octet count).
    pub fn raw_lines(&self) -> Vec<String> {
        read_lines(&self.dir.join("raw.log"))
    }

    /// Waits until at least `n` messages have been received, or `timeout`
    /// has passed, and returns them all ([`Rsyslog::messages`]): fewer
    /// than `n` means the wait timed out.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() >= deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops rsyslogd (SIGTERM: it closes its connections and writes out
    /// what it has received), waiting for the exit; SIGKILL if it hangs.
    /// Does nothing if it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "rsyslogd did not stop on SIGTERM within {STARTUP:?}; its log:\n{}",
            self.diagnostics()
        );
    }

    /// Stops rsyslogd and starts it again on the same ports, appending to
    /// the same files.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "rsyslogd is already running");
        let conf = self.dir.join("rsyslog.conf");
        fs::write(&conf, self.config()).unwrap();
        let pid_file = self.dir.join("rsyslogd.pid");
        for stale in [
            pid_file.clone(),
            self.port_file("tcp"),
            self.port_file("tls"),
        ] {
            let _ = fs::remove_file(stale);
        }
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rsyslogd.stderr"))
            .unwrap();
        let mut cmd = Command::new(rsyslogd());
        cmd.arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        crate::die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("starting rsyslogd: {e}: install rsyslog and rsyslog-gnutls (`cargo xtask setup` does)")
        });
        self.child = Some(child);
        self.wait_listening();
    }

    /// Waits for the port files (first start) and for the three sockets.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "rsyslogd exited at startup ({status}); its log:\n{}",
                    self.diagnostics()
                );
            }
            if self.tcp_port == 0 {
                self.tcp_port = read_port(&self.port_file("tcp"));
            }
            if self.tls_port == 0 {
                self.tls_port = read_port(&self.port_file("tls"));
            }
            let up = self.tcp_port != 0
                && self.tls_port != 0
                && listening("/proc/net/tcp", self.tcp_port, TCP_LISTEN)
                && listening("/proc/net/tcp", self.tls_port, TCP_LISTEN)
                && listening("/proc/net/udp", self.udp_port, UDP_BOUND);
            if up {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "rsyslogd did not open its listeners (tcp {}, tls {}, udp {}) within {STARTUP:?} \
                     (the TLS one needs rsyslog-gnutls); its log:\n{}",
                    self.tcp_port,
                    self.tls_port,
                    self.udp_port,
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn port_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.port"))
    }

    /// rsyslogd's own log and stderr, for failure messages.
    fn diagnostics(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- rsyslogd.log\n{}--- rsyslogd.stderr\n{}",
            read("rsyslogd.log"),
            read("rsyslogd.stderr")
        )
    }

    fn config(&self) -> String {
        let path = |p: &Path| {
            let s = p.to_str().expect("a UTF-8 path");
            assert!(
                !s.contains(['"', '\\', '\n']),
                "path {s:?} cannot go into rsyslog.conf"
            );
            s.to_owned()
        };
        let dir = path(&self.dir);
        let (cert, key, ca) = (
            path(&self.tls_cert),
            path(&self.tls_key),
            path(&self.tls_ca),
        );
        let (tcp, tls, udp) = (self.tcp_port, self.tls_port, self.udp_port);
        format!(
            r#"# Written by the sensor-tests rsyslog harness.
# Must come before the inputs: it sizes their buffers.
global(
  maxMessageSize="{MAX_MESSAGE}"
  workDirectory="{dir}/work"
  processInternalMessages="on"
  net.enableDNS="off"
  parser.escapeControlCharactersOnReceive="off"
)

module(load="imtcp" maxFrameSize="{MAX_MESSAGE}")
module(load="imudp")

template(name="msg_only" type="string" string="%msg%\n")
template(name="raw_msg" type="string" string="%rawmsg%\n")

ruleset(name="received") {{
  action(type="omfile" file="{dir}/received.log" template="msg_only")
  action(type="omfile" file="{dir}/raw.log" template="raw_msg")
}}

input(type="imtcp" address="127.0.0.1" port="{tcp}"
      listenPortFileName="{dir}/tcp.port" ruleset="received")
input(type="imtcp" address="127.0.0.1" port="{tls}"
      listenPortFileName="{dir}/tls.port" ruleset="received"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"
      streamDriver.caFile="{ca}" streamDriver.certFile="{cert}"
      streamDriver.keyFile="{key}")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="received")

# rsyslogd's own messages (the default ruleset has nothing else).
action(type="omfile" file="{dir}/rsyslogd.log")
"#
        )
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `st` column values in /proc/net/{tcp,udp}.
const TCP_LISTEN: &str = "0A";
const UDP_BOUND: &str = "07";

/// Whether a socket on 127.0.0.1:`port` is in `state` (from /proc/net).
fn listening(table: &str, port: u16, state: &str) -> bool {
    let local = format!("0100007F:{port:04X}");
    fs::read_to_string(table).unwrap().lines().skip(1).any(|l| {
        let mut cols = l.split_whitespace().skip(1);
        cols.next() == Some(local.as_str()) && cols.nth(1) == Some(state)
    })
}

fn read_port(file: &Path) -> u16 {
    fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn free_udp_port() -> u16 {
    // A port free for both, so a TCP client sent to it by mistake is
    // refused rather than reaching someone else.
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn rsyslogd() -> PathBuf {
    let sbin = Path::new("/usr/sbin/rsyslogd");
    if sbin.exists() {
        sbin.to_path_buf()
    } else {
        PathBuf::from("rsyslogd")
    }
}

fn read_lines(file: &Path) -> Vec<String> {
    match fs::read(file) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", file.display()),
    }
}
