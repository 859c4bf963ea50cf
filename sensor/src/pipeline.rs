//! The daemon's data path, one direction: decoded records -> process and
//! connection tables -> TLS session reassembly -> HTTP -> model call
//! recognition -> enriched events -> sink.

mod mcp_events;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use sensor_common::{Direction, TlsLibrary};
use serde_json::json;
use tracing::{debug, warn};

use crate::{
    agents::{AgentMark, Agents},
    blind::{BlindSpot, BlindSpots, Reason, Watched},
    bpf::{KernelCounters, KernelTables, attach::AttachStats},
    config::Config,
    conntrack::ConnTable,
    credential::Fingerprinter,
    decode::{self, Record, Task},
    event::{Clock, Event, rfc3339},
    identity::{
        ProcIdentity, Resolver,
        process::{ExecInfo, ProcessTable},
    },
    model,
    policy::live::LivePolicy,
    protocol::{dns, mcp, tls_hello},
    provider,
    resolve::Resolutions,
    session::{Exchange, Sessions},
    sharing::{Actor, ShareTracker},
    sink::Outputs,
};

/// Ancestors listed on an event at most.
const MAX_ANCESTRY: usize = 16;

/// Counters kept in user space, reported in `sensor_health`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counters {
    pub records: u64,
    pub decode_errors: u64,
    pub events_emitted: BTreeMap<String, u64>,
    pub sink_errors: u64,
    pub non_tcp_connects: u64,
    pub http_exchanges: u64,
    pub model_calls: u64,
    /// Cleartext HTTP connections the kernel was told to stop copying (not
    /// a model call, not an agent).
    pub cleartext_released: u64,
    pub credentials_shared: u64,
}

pub struct Pipeline {
    config: Config,
    host_name: String,
    instance: String,
    clock: Clock,
    sequence: u64,
    pub procs: ProcessTable,
    identity: Resolver,
    sharing: ShareTracker,
    conns: ConnTable,
    sessions: Sessions,
    fingerprinter: Fingerprinter,
    outputs: Outputs,
    counters: Counters,
    /// The attacher's queue of pids whose mappings to look at (exec, mmap,
    /// root change): requests go out as soon as they arise, not after the
    /// batch of records (a fresh client is racing the attach). None without
    /// an attacher (tests, shutdown).
    scan_tx: Option<std::sync::mpsc::Sender<u32>>,
    /// The kernel's connection tables, cleaned as processes end (absent in
    /// tests without a kernel).
    kernel: Option<KernelTables>,
    /// TLS connections to model APIs waiting to show their plaintext.
    blind: BlindSpots,
    /// The attacher's results: which files carry probes (None in tests).
    attach: Option<Arc<Mutex<AttachStats>>>,
    /// Agent processes, their sessions and the tool calls they were asked
    /// to make.
    agents: Agents,
    /// MCP servers by (agent session, Host): name and version from their
    /// `initialize` answer.
    mcp_servers: std::collections::HashMap<(String, String), (String, Option<String>)>,
    /// Names processes resolved, from their DNS answers.
    resolutions: Resolutions,
    /// The newest record time handled, and records since the last tick.
    caught_up_ns: u64,
    records_since_tick: u64,
    /// The policy, when one is configured.
    policy: Option<LivePolicy>,
    /// MCP over stdio: agents' pipe traffic, requests waiting for answers.
    stdio: crate::stdio::StdioMcp,
    /// MCP's legacy SSE transport: calls waiting for their answers.
    legacy_sse: crate::mcp_sse::LegacySse,
}

impl Pipeline {
    pub fn new(
        config: Config,
        host_name: String,
        fingerprinter: Fingerprinter,
        outputs: Outputs,
    ) -> Self {
        let body_cap = config.body_capture_bytes;
        let identity = Resolver::new(config.identity());
        let sharing = ShareTracker::new(config.credential_share_window_secs);
        let blind = BlindSpots::new(&config.model_endpoints);
        let agents = Agents::new(&config.agent_executables, &host_name);
        Self {
            config,
            host_name,
            instance: instance_id(),
            clock: Clock::new(),
            sequence: 0,
            procs: ProcessTable::new(),
            identity,
            sharing,
            conns: ConnTable::default(),
            sessions: Sessions::new(body_cap),
            fingerprinter,
            outputs,
            counters: Counters::default(),
            scan_tx: None,
            kernel: None,
            blind,
            attach: None,
            agents,
            mcp_servers: std::collections::HashMap::new(),
            resolutions: Resolutions::default(),
            caught_up_ns: 0,
            records_since_tick: 0,
            policy: None,
            stdio: crate::stdio::StdioMcp::default(),
            legacy_sse: crate::mcp_sse::LegacySse::default(),
        }
    }

    /// Judges events by `policy` from now on. When it is enforced, the
    /// cgroups of the processes already running are judged now, so their
    /// first connects meet their verdicts.
    pub fn set_policy(&mut self, policy: LivePolicy) {
        let enforcing = policy.enforcing();
        self.policy = Some(policy);
        let root = enforcing.then(crate::bpf::policy::cgroup2_root).flatten();
        if let Some(root) = root {
            for (cgroup_id, pid) in self.procs.one_per_cgroup(&root) {
                let task = Task {
                    ts_ns: 0,
                    pid,
                    tid: pid,
                    cgroup_id,
                    uid: 0,
                    gid: 0,
                };
                self.identity_of(pid, &task);
            }
        }
    }

    /// Sets the policy decision on `event`, emits it (when its action is
    /// emitted), then the `policy_violation` it raises. `blocked`: the
    /// kernel refused this connect. Returns the event's id when emitted.
    fn judge_and_emit(
        &mut self,
        mut event: Event,
        ts: u64,
        blocked: Option<Option<usize>>,
    ) -> Option<String> {
        let violation = match self.policy.as_mut() {
            Some(policy) => match policy.judge(&mut event, blocked) {
                Some(decision) => policy.violation(&event, &decision, ts),
                None => None,
            },
            None => None,
        };
        let id = self
            .config
            .emits(event.action())
            .then(|| self.emit_at(event, ts));
        if let Some(mut violation) = violation
            && self.config.emits("policy_violation")
        {
            violation.set("causation.parent_event_id", id.clone());
            self.emit_at(violation, ts);
        }
        id
    }

    /// Shares the attacher's results (which files are probed).
    pub fn set_attach_stats(&mut self, stats: Arc<Mutex<AttachStats>>) {
        self.attach = Some(stats);
    }

    /// Whether `pid` maps a file the sensor probes; `None` when it cannot
    /// be told (the process is gone, or no attacher).
    fn maps_probed_file(&self, pid: u32) -> Option<bool> {
        let stats = self.attach.as_ref()?;
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let stats = stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(crate::bpf::attach::maps_probed_file(
            &maps,
            &stats.probed_ids,
        ))
    }

    pub fn set_kernel_tables(&mut self, tables: KernelTables) {
        self.kernel = Some(tables);
    }

    /// Sends scan requests straight to the attacher from now on.
    pub fn set_scan_sender(&mut self, tx: std::sync::mpsc::Sender<u32>) {
        self.scan_tx = Some(tx);
    }

    /// Drops the attacher's queue (shutdown: the attacher ends when every
    /// sender is gone).
    pub fn stop_scans(&mut self) {
        self.scan_tx = None;
    }

    fn request_scan(&self, pid: u32) {
        if let Some(tx) = &self.scan_tx {
            // A closed queue means the sensor is stopping.
            let _ = tx.send(pid);
        }
    }

    /// Handles one ring buffer record.
    pub fn handle(&mut self, bytes: &[u8]) {
        self.counters.records += 1;
        // How far the records have got (`Header::ts_ns`, bytes 8..16):
        // deadlines are judged against it while a backlog is drained.
        if let Some(ts) = bytes.get(8..16).and_then(|b| b.try_into().ok()) {
            self.caught_up_ns = self.caught_up_ns.max(u64::from_ne_bytes(ts));
            self.records_since_tick += 1;
        }
        match decode::decode(bytes) {
            Ok(record) => self.on_record(record),
            Err(err) => {
                self.counters.decode_errors += 1;
                if self.counters.decode_errors.is_power_of_two() {
                    warn!(%err, count = self.counters.decode_errors, "undecodable record");
                }
            }
        }
    }

    fn on_record(&mut self, record: Record) {
        match record {
            Record::Exec {
                task,
                ppid,
                comm,
                filename,
                args,
                args_truncated,
            } => {
                let exec = ExecInfo {
                    ppid,
                    comm: &comm,
                    filename: &filename,
                    args: &args,
                    args_truncated,
                };
                // The old image's TLS sessions died with it.
                let exchanges = self.sessions.on_exit(task.pid, task.ts_ns);
                self.on_exchanges(exchanges);
                self.procs.on_exec(&task, &exec);
                if self.agents.on_exec(task.pid, &filename, task.ts_ns)
                    && let Some(kernel) = self.kernel.as_mut()
                {
                    kernel.set_agent(task.pid, true);
                }
                self.request_scan(task.pid);
                // Identity is read now, while the new image runs: a
                // short-lived process may be gone by its first event.
                self.identity_of(task.pid, &task);
                if self.config.emits("process_exec") {
                    let mut event = Event::new("process_exec");
                    event
                        .set("event.kind", "event")
                        .set("event.category", json!(["process"]))
                        .set("event.type", json!(["start"]));
                    self.with_process(&mut event, &task);
                    self.emit_at(event, task.ts_ns);
                }
            }
            Record::Fork { task, child_pid } => {
                self.procs.on_fork(task.pid, child_pid);
                self.agents.on_fork(task.pid, child_pid);
            }
            Record::Exit { task } => {
                for spot in self.blind.exited(task.pid) {
                    self.emit_blind_spot(spot);
                }
                self.blind.forget_process(task.pid);
                let tls_conns = self.sessions.conns_of(task.pid);
                let exchanges = self.sessions.on_exit(task.pid, task.ts_ns);
                self.on_exchanges(exchanges);
                if self.config.emits("process_exit") {
                    let mut event = Event::new("process_exit");
                    event
                        .set("event.kind", "event")
                        .set("event.category", json!(["process"]))
                        .set("event.type", json!(["end"]));
                    self.with_process(&mut event, &task);
                    self.emit_at(event, task.ts_ns);
                }
                self.procs.on_exit(task.pid);
                if self.agents.get(task.pid).is_some()
                    && let Some(kernel) = self.kernel.as_mut()
                {
                    kernel.set_agent(task.pid, false);
                }
                self.agents.on_exit(task.pid);
                self.resolutions.forget(task.pid);
                self.stdio.forget_process(task.pid);
                self.legacy_sse.forget_process(task.pid);
                let fds = self.conns.on_exit(task.pid);
                if let Some(kernel) = self.kernel.as_mut() {
                    kernel.forget_process(task.pid, &fds, &tls_conns);
                }
            }
            Record::Connect {
                task,
                fd,
                ret,
                in_progress,
                addr,
                port,
                sock_type,
            } => {
                if sock_type > 1 {
                    // A connected datagram socket (DNS and the like) is not a
                    // TCP connection; one the policy refused is reported.
                    self.counters.non_tcp_connects += 1;
                    let blocked = self
                        .policy
                        .as_mut()
                        .and_then(|p| p.take_block(task.tid, addr, port));
                    if blocked.is_some() {
                        let mut event = Event::new("connect");
                        event
                            .set("event.kind", "event")
                            .set("event.category", json!(["network"]))
                            .set("event.type", json!(["connection", "start"]))
                            .set("event.outcome", "failure")
                            .set("server.address", addr.to_string())
                            .set("server.ip", addr.to_string())
                            .set("server.port", port)
                            .set("network.transport", "udp")
                            .set("network.type", if addr.is_ipv4() { "ipv4" } else { "ipv6" })
                            .set("process.io.fd", fd)
                            .set("error.code", errno_name(-ret));
                        self.with_process(&mut event, &task);
                        self.judge_and_emit(event, task.ts_ns, blocked);
                    }
                    return;
                }
                let ok = ret == 0 || in_progress;
                let blocked = self
                    .policy
                    .as_mut()
                    .and_then(|p| p.take_block(task.tid, addr, port));
                let remote = SocketAddr::new(addr, port);
                let domain = self.resolutions.lookup(task.pid, addr).map(str::to_owned);
                if ok {
                    self.conns
                        .on_connect(task.pid, fd, remote, task.ts_ns, domain.clone());
                }
                if self.config.emits("connect") || self.policy.is_some() {
                    let mut event = Event::new("connect");
                    event
                        .set("event.kind", "event")
                        .set("event.category", json!(["network"]))
                        .set("event.type", json!(["connection", "start"]))
                        .set("event.outcome", if ok { "success" } else { "failure" })
                        // The name is what the process was told, by a
                        // resolver it chose: evidence, kept apart from the
                        // address the kernel saw.
                        .set("server.address", addr.to_string())
                        .set("server.domain", domain)
                        .set("server.ip", addr.to_string())
                        .set("server.port", port)
                        .set("network.transport", "tcp")
                        .set("network.type", if addr.is_ipv4() { "ipv4" } else { "ipv6" })
                        .set("process.io.fd", fd)
                        .set("network.connect.in_progress", in_progress);
                    if !ok {
                        event.set("error.code", errno_name(-ret));
                    }
                    self.with_process(&mut event, &task);
                    self.judge_and_emit(event, task.ts_ns, blocked);
                }
            }
            Record::Close {
                task,
                fd,
                sent,
                received,
            } => {
                if let Some(spot) = self.blind.closed(task.pid, fd) {
                    self.emit_blind_spot(spot);
                }
                let exchanges = self.sessions.on_close(task.pid, fd, task.ts_ns);
                self.on_exchanges(exchanges);
                if let Some(conn) = self.conns.on_close(task.pid, fd)
                    && self.agents.get(task.pid).is_some()
                    && self.config.emits("connection_close")
                {
                    self.connection_close(&task, fd, &conn, sent, received);
                }
            }
            Record::TlsData(chunk) => {
                if chunk.direction == Direction::Ingress
                    && self.agents.get(chunk.task.pid).is_some()
                {
                    self.scan_legacy_answers(&chunk);
                }
                if let Some(fd) = chunk.fd {
                    self.blind.covered(chunk.task.pid, fd);
                    self.maybe_release_cleartext(&chunk, fd);
                }
                let exchanges = self.sessions.on_data(&chunk);
                self.on_exchanges(exchanges);
            }
            Record::ClientHello(chunk) => self.on_client_hello(&chunk),
            Record::StdioData(chunk) => {
                let procs = &mut self.procs;
                let calls = self.stdio.on_data(&chunk, &mut |pid| {
                    procs.get_or_resolve(pid).and_then(|p| p.ppid)
                });
                for call in calls {
                    self.on_stdio_call(call);
                }
            }
            Record::DnsAnswer(chunk) => match dns::parse_response(&chunk.data) {
                Ok(answers) => {
                    self.resolutions.answers += 1;
                    for a in answers {
                        if let Some(policy) = self.policy.as_mut() {
                            policy.learn(chunk.task.cgroup_id, &a.name, a.addr);
                        }
                        self.resolutions.insert(chunk.task.pid, &a.name, a.addr);
                    }
                }
                Err(err) => {
                    self.resolutions.errors += 1;
                    debug!(pid = chunk.task.pid, %err, "unreadable DNS answer");
                }
            },
            Record::TlsBind { task, conn, fd } => {
                self.blind.covered(task.pid, fd);
                let exchanges = self.sessions.on_bind(task.pid, conn, fd, task.ts_ns);
                self.on_exchanges(exchanges);
                // Look the local address up now, while the socket is open.
                let _ = self.conns.get(task.pid, fd);
            }
            Record::ExecMmap { task, .. } | Record::RootChange { task } => {
                self.request_scan(task.pid)
            }
            Record::PolicyBlock {
                task,
                rule,
                generation,
                addr,
                port,
            } => {
                if let Some(policy) = self.policy.as_mut() {
                    policy.on_block(task.tid, rule, generation, addr, port, task.ts_ns);
                }
            }
        }
    }

    /// A TLS client's first bytes: the server name for the connection's
    /// events, and a watch for a blind spot when it goes to a model API.
    fn on_client_hello(&mut self, chunk: &crate::decode::TlsData) {
        let Some(fd) = chunk.fd else { return };
        let hello = match tls_hello::parse(&chunk.data) {
            Ok(hello) => hello,
            Err(err) => {
                self.blind.stats.client_hello_errors += 1;
                debug!(pid = chunk.task.pid, %err, "unreadable ClientHello");
                return;
            }
        };
        self.blind.stats.client_hellos += 1;
        let pid = chunk.task.pid;
        let remote =
            self.conns
                .on_client_hello(pid, fd, hello.server_name.clone(), hello.alpn.clone());
        let Some(matched) = self
            .blind
            .model_endpoint(hello.server_name.as_deref(), remote)
        else {
            return;
        };
        if !self.config.emits("blind_spot") {
            return;
        }
        // Whether the process maps a probed library; when it is gone
        // already (a short-lived client), whether any probe reported
        // plaintext of it.
        let probed = self
            .maps_probed_file(pid)
            .unwrap_or_else(|| self.sessions.has_library_sessions(pid));
        let reason = if probed {
            Reason::PlaintextNotSeen
        } else {
            Reason::NoTlsProbe
        };
        self.blind.watch(Watched {
            pid,
            tid: chunk.task.tid,
            fd,
            ts_ns: chunk.task.ts_ns,
            server_name: hello.server_name,
            remote,
            alpn: hello.alpn,
            matched,
            reason,
        });
    }

    fn emit_blind_spot(&mut self, spot: BlindSpot) {
        let conn = &spot.conn;
        let mut event = Event::new("blind_spot");
        event
            .set("event.kind", "alert")
            .set("event.category", json!(["network"]))
            .set("event.type", json!(["info"]))
            .set("event.outcome", "unknown")
            .set("blind_spot.reason", conn.reason.as_str())
            .set("blind_spot.matched", conn.matched)
            .set("blind_spot.suppressed", spot.suppressed)
            .set("message", conn.reason.message())
            .set(
                "server.address",
                conn.server_name
                    .clone()
                    .or_else(|| conn.remote.map(|r| r.ip().to_string())),
            )
            .set("server.ip", conn.remote.map(|r| r.ip().to_string()))
            .set("server.port", conn.remote.map(|r| r.port()))
            .set("network.transport", "tcp")
            .set("tls.server_name", conn.server_name.clone())
            .set("process.io.fd", conn.fd);
        if !conn.alpn.is_empty() {
            event.set("tls.client.supported_protocols", conn.alpn.clone());
        }
        if let Some(name) = conn.server_name.as_deref()
            && let Some(provider) = crate::provider::known_provider(name)
        {
            event.set("gen_ai.provider.name", provider);
        }
        let task = Task {
            ts_ns: conn.ts_ns,
            pid: conn.pid,
            tid: conn.tid,
            cgroup_id: 0,
            uid: 0,
            gid: 0,
        };
        self.with_process(&mut event, &task);
        self.emit_at(event, conn.ts_ns);
    }

    /// A cleartext HTTP connection's first request: unless it is a model
    /// call or its process is an agent, the kernel stops copying it (the
    /// host's other plaintext HTTP, like metrics scrapes and package
    /// downloads, is not the sensor's business and would crowd the ring).
    /// What is in flight is still parsed; bytes are still counted.
    fn maybe_release_cleartext(&mut self, chunk: &crate::decode::TlsData, fd: i32) {
        if chunk.library != TlsLibrary::Cleartext
            || chunk.direction != Direction::Egress
            || chunk.stream_pos != 0
            || chunk.offset != 0
        {
            return;
        }
        let line = chunk.data.split(|&b| b == b'\n').next().unwrap_or_default();
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target))
        else {
            return;
        };
        // h2c, model calls, and JSON-RPC (an MCP server an agent connects
        // to before its first model call, over a connection it keeps).
        if method == "PRI"
            || provider::recognise(method, target).is_some()
            || memchr::memmem::find(&chunk.data, b"\"jsonrpc\"").is_some()
        {
            return;
        }
        if self.agents.get(chunk.task.pid).is_some() {
            return;
        }
        self.counters.cleartext_released += 1;
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.release_socket(chunk.task.pid, fd);
        }
    }

    /// The end of an agent's connection: how long it lasted and how many
    /// bytes went each way.
    fn connection_close(
        &mut self,
        task: &Task,
        fd: i32,
        conn: &crate::conntrack::ConnInfo,
        sent: u64,
        received: u64,
    ) {
        let mut event = Event::new("connection_close");
        event
            .set("event.kind", "event")
            .set("event.category", json!(["network"]))
            .set("event.type", json!(["connection", "end"]))
            .set("server.address", conn.remote.ip().to_string())
            .set("server.domain", conn.domain.clone())
            .set("server.ip", conn.remote.ip().to_string())
            .set("server.port", conn.remote.port())
            .set("tls.server_name", conn.server_name.clone())
            .set("network.transport", "tcp")
            .set(
                "network.type",
                if conn.remote.is_ipv4() {
                    "ipv4"
                } else {
                    "ipv6"
                },
            )
            .set("process.io.fd", fd)
            .set("event.duration", task.ts_ns.saturating_sub(conn.connect_ts))
            .set("client.bytes", sent)
            .set("server.bytes", received);
        if let Some(local) = conn.local {
            event
                .set("client.address", local.ip().to_string())
                .set("client.port", local.port());
        }
        self.with_process(&mut event, task);
        self.emit_at(event, task.ts_ns);
    }

    /// Frequent upkeep (every second): blind spots past their deadline.
    pub fn tick(&mut self) {
        // With records flowing, the time they have reached; idle, the
        // clock (a backlog must not make connections look late).
        let now = if self.records_since_tick > 0 {
            self.caught_up_ns
        } else {
            self.clock.now_boot_ns()
        };
        self.records_since_tick = 0;
        for spot in self.blind.expire(now) {
            self.emit_blind_spot(spot);
        }
        if let Some(policy) = self.policy.as_mut() {
            policy.tick(now);
        }
        self.stdio.expire(now);
        for held in self.legacy_sse.expire(now) {
            self.finish_legacy(held, None);
        }
    }

    fn on_exchanges(&mut self, exchanges: Vec<Exchange>) {
        for ex in exchanges {
            self.counters.http_exchanges += 1;
            match model::shape_of(&ex.request) {
                Some(shape) => self.on_model_call(&ex, shape),
                None => self.on_tool_call(&ex),
            }
        }
    }

    fn task_of(ex: &Exchange) -> Task {
        Task {
            ts_ns: ex.request.first_ts,
            pid: ex.pid,
            tid: ex.tid,
            cgroup_id: 0,
            uid: 0,
            gid: 0,
        }
    }

    /// Marks `pid` as an agent (and what already runs under it) when a
    /// model call makes it one.
    fn mark_agent(&mut self, pid: u32) {
        let start = self
            .procs
            .get_or_resolve(pid)
            .and_then(|p| p.start_boot_ns)
            .unwrap_or(0);
        if self.agents.on_model_call(pid, start) {
            let descendants = self.procs.descendants(pid);
            self.agents.inherit(pid, &descendants);
            for p in std::iter::once(pid).chain(descendants) {
                self.procs.forget_actor(p);
                if let Some(kernel) = self.kernel.as_mut() {
                    kernel.set_agent(p, true);
                }
            }
        }
    }

    fn on_model_call(&mut self, ex: &Exchange, shape: provider::ApiShape) {
        self.counters.model_calls += 1;
        self.mark_agent(ex.pid);
        let conn = ex.fd.and_then(|fd| self.conns.get(ex.pid, fd)).cloned();
        // Where model calls go is a model endpoint: an unprobed client
        // connecting there later is a blind spot.
        self.blind.learn(
            conn.as_ref().map(|c| c.remote),
            ex.request
                .headers
                .get_str("host")
                .map(|h| model::split_host(h).0)
                .as_deref(),
        );
        if !self.config.emits("model_call") && self.policy.is_none() {
            return;
        }
        let (mut event, info) =
            model::model_call_event(ex, shape, conn.as_ref(), &self.fingerprinter);
        self.with_process(&mut event, &Self::task_of(ex));
        let shared = self.observe_credential(&mut event, ex.pid, ex.request.first_ts);
        let session = self.agents.get(ex.pid).map(|m| m.session_id.clone());
        let Some(id) = self.judge_and_emit(event, ex.request.first_ts, None) else {
            return;
        };
        if let Some(session) = session {
            self.agents.model_call(
                &session,
                &id,
                &info.response_tool_calls,
                ex.request.first_ts,
            );
        }
        if let Some((fingerprint, actor_key, report)) = shared {
            self.sharing.note_event(&fingerprint, &actor_key, id);
            if let Some(report) = report {
                self.credential_shared(report, ex.request.first_ts);
            }
        }
    }

    /// An HTTP exchange that is not a model call: a `tool_call` when an
    /// agent's tree made it (MCP or any other API), else only counted.
    fn on_tool_call(&mut self, ex: &Exchange) {
        let Some(mark) = self.agents.get(ex.pid).cloned() else {
            self.agents.stats.non_agent_requests += 1;
            return;
        };
        let mcp = mcp::parse_requests(&ex.request.body).and_then(|reqs| reqs.into_iter().next());
        if mcp
            .as_ref()
            .is_some_and(|m| m.method.starts_with("notifications/"))
        {
            // Protocol chatter, not an action.
            return;
        }
        if !self.config.emits("tool_call") && self.policy.is_none() {
            return;
        }
        let conn = ex.fd.and_then(|fd| self.conns.get(ex.pid, fd)).cloned();
        let mut event = model::http_event("tool_call", ex, conn.as_ref(), &self.fingerprinter);
        if let Some(path) = event.get("url.path").and_then(|p| p.as_str()) {
            let masked = model::mask_path_tokens(path);
            event.replace("url.path", masked);
        }
        let tool = mcp.as_ref().and_then(|m| m.tool_name.clone());
        // An HTTP request carries out a tool call; of MCP, only tools/call
        // (not the transport's own GET and DELETE to a known MCP server).
        let host = ex.request.headers.get_str("host").unwrap_or_default();
        let known_mcp = self
            .mcp_servers
            .contains_key(&(mark.session_id.clone(), host.to_owned()));
        let consumes = match &mcp {
            Some(m) => m.method == "tools/call",
            None => !known_mcp,
        };
        let cause = self.agents.cause(
            &mark.session_id,
            tool.as_deref(),
            consumes,
            ex.request.first_ts,
        );
        event
            .set("causation.parent_event_id", cause.parent_event_id)
            .set("causation.match", cause.matched)
            .set("gen_ai.tool.call.id", cause.tool_call_id)
            .set("gen_ai.tool.name", cause.tool_name);
        let mut held = None;
        if let Some(m) = &mcp {
            let answered = self.mcp_fields(&mut event, ex, m, &mark.session_id);
            // The legacy SSE transport: `202 Accepted`, the answer comes on
            // the session's stream.
            if !answered && m.id.is_some() && ex.response.as_ref().is_some_and(|r| r.status == 202)
            {
                held = Some(m.clone());
            }
        }
        self.with_process(&mut event, &Self::task_of(ex));
        match held {
            Some(request) => {
                let server_key = (
                    mark.session_id.clone(),
                    ex.request
                        .headers
                        .get_str("host")
                        .unwrap_or_default()
                        .to_owned(),
                );
                self.hold_legacy(
                    ex.pid,
                    crate::mcp_sse::session_of(&ex.request.target),
                    crate::mcp_sse::Held {
                        event,
                        request,
                        ts: ex.request.first_ts,
                        server_key,
                    },
                );
            }
            None => {
                self.judge_and_emit(event, ex.request.first_ts, None);
            }
        }
    }

    /// Notes who used the model call's credential; marks the event when the
    /// credential is shared. Returns the fingerprint, the actor and a
    /// `credential_shared` report when this use revealed a new sharer.
    fn observe_credential(
        &mut self,
        event: &mut Event,
        pid: u32,
        ts: u64,
    ) -> Option<(String, String, Option<serde_json::Value>)> {
        let fingerprint = event.get("credential.fingerprint")?.as_str()?.to_owned();
        let kind = event
            .get("credential.kind")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_owned();
        let info = self.procs.get_or_resolve(pid);
        let key = match info {
            Some(info) => Actor::key_of(info, info.identity.as_deref()),
            None => format!("host-process:{pid}"),
        };
        let actor = || match info {
            Some(info) => Actor::of(info, info.identity.as_deref()),
            None => Actor {
                key: format!("host-process:{pid}"),
                fields: json!({"process": {"pid": pid}}),
            },
        };
        let seen = self.sharing.observe(&fingerprint, &kind, &key, actor, ts);
        if seen.actors >= 2 {
            event
                .set("credential.shared", true)
                .set("credential.actor_count", seen.actors as u64);
        }
        Some((fingerprint, key, seen.report))
    }

    fn credential_shared(&mut self, report: serde_json::Value, ts: u64) {
        self.counters.credentials_shared += 1;
        if !self.config.emits("credential_shared") {
            return;
        }
        let mut event = Event::new("credential_shared");
        event
            .set("event.kind", "alert")
            .set("event.category", json!(["iam"]))
            .set("event.type", json!(["info"]))
            .set("credential.fingerprint", report["fingerprint"].clone())
            .set("credential.kind", report["kind"].clone())
            .set("credential.actor_count", report["actor_count"].clone())
            .set(
                "credential.share_window_seconds",
                report["window_seconds"].clone(),
            )
            .set("credential.actors", report["actors"].clone())
            .set(
                "message",
                format!(
                    "credential {} used by {} distinct actors",
                    report["fingerprint"].as_str().unwrap_or_default(),
                    report["actor_count"]
                ),
            );
        self.emit_at(event, ts);
    }

    /// The identity of a process, resolved once and cached on its table
    /// entry: from /proc while it lives, else from what the kernel sent.
    fn identity_of(&mut self, pid: u32, task: &Task) -> Option<Arc<ProcIdentity>> {
        let (uid, cgroup_id, known) = {
            let info = self.procs.get_or_resolve(pid)?;
            (info.uid, info.cgroup_id, info.identity.clone())
        };
        if known.is_some() {
            return known;
        }
        let cgroup_id = cgroup_id.or((task.cgroup_id != 0).then_some(task.cgroup_id));
        let uid = uid.or((task.cgroup_id != 0).then_some(task.uid));
        let identity = match self.identity.resolve_process(pid, uid, cgroup_id) {
            Some(identity) => identity,
            None => self.identity.from_kernel(uid, cgroup_id),
        };
        let identity = Arc::new(identity);
        self.procs.set_identity(pid, Arc::clone(&identity));
        if let (Some(policy), Some(cgroup)) = (self.policy.as_mut(), cgroup_id)
            && policy.enforcing()
        {
            let mut facts = Event::default();
            facts.set_identity(&identity, self.identity.node_name());
            policy.judge_cgroup(cgroup, Arc::new(facts.into_fields()));
        }
        Some(identity)
    }

    /// Adds the process fields: from the table, else what the record says.
    /// A process's own fields are built at its first event and shared by
    /// every later one.
    fn with_process(&mut self, event: &mut Event, task: &Task) {
        event.set("process.thread.id", task.tid);
        let identity = self.identity_of(task.pid, task);
        let Some(info) = self.procs.get_or_resolve(task.pid) else {
            // Gone before the sensor could look: say what is known.
            event
                .set("process.pid", task.pid)
                .set("process.attribution_source", "kernel");
            let mut identity = ProcIdentity::default();
            if task.cgroup_id != 0 {
                event
                    .set("process.user.id", task.uid)
                    .set("process.group.id", task.gid)
                    .set("process.cgroup.id", task.cgroup_id);
                identity = self
                    .identity
                    .from_kernel(Some(task.uid), Some(task.cgroup_id));
            }
            identity.unresolved.extend([
                "process.executable.path",
                "process.command_line",
                "process.parent_pid",
            ]);
            event.set_identity(&identity, self.identity.node_name());
            if let Some(mark) = self.agents.get(task.pid) {
                set_agent(event, mark);
            }
            return;
        };
        if let Some(actor) = &info.actor {
            event.with_shared(Arc::clone(actor));
            return;
        }
        let mut fields = Event::default();
        fields.set_process(info);
        if let Some(mark) = self.agents.get(task.pid) {
            set_agent(&mut fields, mark);
        }
        if let Some(start) = info.start_boot_ns {
            fields
                .set("process.start", rfc3339(self.clock.wall_ns(start)))
                .set("process.entity_id", format!("{}-{start}", info.pid));
        }
        let cached_ancestry = info.ancestry.clone();
        if let Some(identity) = &identity {
            fields.set_identity(identity, self.identity.node_name());
        }
        let ancestry = match cached_ancestry {
            Some(ancestry) => ancestry,
            None => {
                // Parents do not change once a process runs (a parent that
                // exits leaves its place in the chain as it was).
                let ancestry = Arc::new(serde_json::Value::from(
                    self.ancestry(task.pid, identity.as_deref()),
                ));
                self.procs.set_ancestry(task.pid, Arc::clone(&ancestry));
                ancestry
            }
        };
        if ancestry.as_array().is_some_and(|a| !a.is_empty()) {
            fields.set("process.ancestry", (*ancestry).clone());
        }
        let actor = Arc::new(fields.into_fields());
        self.procs.set_actor(task.pid, Arc::clone(&actor));
        event.with_shared(actor);
    }

    /// The chain of parents, nearest first, up to the container's first
    /// process or the host's init.
    fn ancestry(&mut self, pid: u32, identity: Option<&ProcIdentity>) -> Vec<serde_json::Value> {
        let container = identity
            .and_then(|i| i.container.as_ref())
            .map(|c| c.id.clone());
        let mut chain = Vec::new();
        let mut next = self.procs.get_or_resolve(pid).and_then(|i| i.ppid);
        while let Some(ppid) = next {
            if ppid == 0 || chain.len() >= MAX_ANCESTRY {
                break;
            }
            let task = Task {
                ts_ns: 0,
                pid: ppid,
                tid: ppid,
                cgroup_id: 0,
                uid: 0,
                gid: 0,
            };
            let parent_container = self
                .identity_of(ppid, &task)
                .and_then(|i| i.container.as_ref().map(|c| c.id.clone()));
            if container.is_some() && parent_container != container {
                // The runtime's shim or the host: outside the container.
                break;
            }
            let Some(info) = self.procs.get_or_resolve(ppid) else {
                break;
            };
            let mut entry = json!({"pid": ppid});
            if let Some(exe) = &info.exe {
                entry["executable"] = json!(exe);
            }
            if let Some(start) = info.start_boot_ns {
                entry["start"] = json!(rfc3339(self.clock.wall_ns(start)));
            }
            next = info.ppid;
            chain.push(entry);
        }
        chain
    }

    fn emit_at(&mut self, mut event: Event, boot_ns: u64) -> String {
        event.set("@timestamp", rfc3339(self.clock.wall_ns(boot_ns)));
        self.emit(event)
    }

    /// Stamps id and host, and hands the event to every output (each adds
    /// its own sequence and chain). Returns its id.
    pub fn emit(&mut self, mut event: Event) -> String {
        if event.get("@timestamp").is_none() {
            event.set(
                "@timestamp",
                rfc3339(self.clock.wall_ns(self.clock.now_boot_ns())),
            );
        }
        self.sequence += 1;
        let id = format!("{}-{:012x}", self.instance, self.sequence);
        event
            .set("event.id", id.clone())
            .set("host.name", self.host_name.clone())
            .set("observer.type", "sensor")
            .set("observer.version", env!("CARGO_PKG_VERSION"));
        let action = event.action();
        // Counted without allocating a key after the first of an action.
        match self.counters.events_emitted.get_mut(action) {
            Some(n) => *n += 1,
            None => {
                self.counters.events_emitted.insert(action.to_owned(), 1);
            }
        }
        self.outputs.deliver(&event, action, &id);
        id
    }

    pub fn flush(&mut self) {
        self.outputs.flush();
    }

    /// SIGHUP with a valid new config: what can change while running
    /// does (the `events` lists, globally and per sink); the rest waits
    /// for a restart. Returns what was not applied.
    pub fn reload(&mut self, new: &Config) -> Vec<String> {
        let mut notes = self.outputs.set_filters(&new.effective_sinks());
        let neutral = |c: &Config| {
            let mut c = c.clone();
            c.events.clear();
            c.sinks.clear();
            c.policy_file = c.policy_file.is_some().then(Default::default);
            c
        };
        if neutral(&self.config) != neutral(new) {
            notes.push(
                "settings other than `events` and the policy changed; they apply at the next start"
                    .into(),
            );
        }
        self.config.events = new.events.clone();
        if let (Some(live), Some(path)) = (self.policy.as_mut(), new.policy_file.as_deref()) {
            match crate::policy::Policy::load(path) {
                Ok(policy) => {
                    if policy.enforces() && !live.enforcing() {
                        notes.push(
                            "the new policy enforces rules but the connect hooks are not attached: \
                             its denials are reported, not enforced"
                                .into(),
                        );
                    }
                    let (version, rules) = (policy.version.clone(), policy.rules.len());
                    live.replace(policy);
                    self.config.policy_file = Some(path.to_path_buf());
                    // Said once the kernel holds the new verdicts.
                    tracing::info!(%version, rules, "policy reloaded");
                }
                Err(err) => notes.push(format!(
                    "policy reload refused, the running policy stays: {err}"
                )),
            }
        }
        notes
    }

    /// SIGHUP: output files are reopened.
    pub fn reopen_outputs(&mut self) {
        self.outputs.reopen();
    }

    /// Clean stop: a `sensor_checkpoint` closes each output's chain, then
    /// the outputs are flushed and network senders get `grace` to deliver.
    pub fn close_outputs(&mut self, grace: std::time::Duration) {
        let now = rfc3339(self.clock.wall_ns(self.clock.now_boot_ns()));
        let (instance, host) = (self.instance.clone(), self.host_name.clone());
        let mut sequence = self.sequence;
        self.outputs.checkpoint(|records, last_hash| {
            sequence += 1;
            let id = format!("{instance}-{sequence:012x}");
            let mut event = Event::new("sensor_checkpoint");
            event
                .set("@timestamp", now.clone())
                .set("event.kind", "metric")
                .set("event.id", id.clone())
                .set("host.name", host.clone())
                .set("observer.type", "sensor")
                .set("observer.version", env!("CARGO_PKG_VERSION"))
                .set("sensor.instance", instance.clone())
                .set("sensor.checkpoint.records", records)
                .set("sensor.checkpoint.last_hash", last_hash.to_owned())
                .set(
                    "message",
                    format!("clean stop: {records} records written by this output in this run"),
                );
            (event, id)
        });
        self.sequence = sequence;
        self.outputs.close(grace);
    }

    /// Every counter in Prometheus text format.
    pub fn metrics(&self, kernel: &KernelCounters, attach: &AttachStats) -> String {
        crate::metrics::render(&crate::metrics::Inputs {
            pipeline: &self.counters,
            sessions: &self.sessions.stats(),
            kernel,
            attach,
            sinks: &self.outputs.stats(),
            processes_tracked: self.procs.len() as u64,
        })
    }

    /// Per-sink counters.
    pub fn sink_stats(&self) -> Vec<crate::sink::OutputStats> {
        self.outputs.stats()
    }

    /// Periodic upkeep: idle sessions and exited processes.
    pub fn sweep(&mut self) {
        let now = self.clock.now_boot_ns();
        let exchanges = self.sessions.sweep(now);
        self.on_exchanges(exchanges);
        self.procs.sweep();
        if let Some(policy) = self.policy.as_mut() {
            let live = self.procs.cgroup_ids();
            policy.forget_cgroups_except(&live);
        }
        self.identity.sweep();
        self.sharing.sweep(now);
    }

    /// Finishes every open session (shutdown).
    pub fn drain(&mut self) {
        let now = self.clock.now_boot_ns();
        let exchanges = self.sessions.drain(now);
        self.on_exchanges(exchanges);
        for held in self.legacy_sse.drain() {
            self.finish_legacy(held, None);
        }
    }

    /// A `sensor_health` event with every counter.
    pub fn health(&mut self, status: &str, kernel: KernelCounters, attach: &AttachStats) {
        self.counters.sink_errors = self.outputs.errors();
        if !self.config.emits("sensor_health") {
            return;
        }
        let mut event = Event::new("sensor_health");
        let probed: Vec<_> = attach
            .files_probed
            .iter()
            .map(|f| json!({"path": f.path, "library": f.library, "functions": f.functions}))
            .collect();
        event
            .set("event.kind", "metric")
            .set("sensor.status", status)
            .set("sensor.instance", self.instance.clone())
            .set("sensor.kernel.ringbuf_drops", kernel.ringbuf_drops)
            .set("sensor.kernel.tls_read_errors", kernel.tls_read_errors)
            .set(
                "sensor.kernel.tls_bytes_truncated",
                kernel.tls_bytes_truncated,
            )
            .set(
                "sensor.kernel.tls_orphan_returns",
                kernel.tls_orphan_returns,
            )
            .set(
                "sensor.pipeline",
                serde_json::to_value(&self.counters).unwrap_or_default(),
            )
            .set(
                "sensor.sessions",
                serde_json::to_value(self.sessions.stats()).unwrap_or_default(),
            )
            .set("sensor.processes_tracked", self.procs.len() as u64)
            .set(
                "sensor.identity",
                serde_json::to_value(self.identity.stats()).unwrap_or_default(),
            )
            .set("sensor.credentials_tracked", self.sharing.len() as u64)
            .set(
                "sensor.sinks",
                serde_json::to_value(self.outputs.stats()).unwrap_or_default(),
            )
            .set("sensor.tls.files_probed", probed)
            .set("sensor.tls.files_checked", attach.files_checked)
            .set("sensor.tls.attach_failures", attach.attach_failures)
            .set("sensor.tls.check_failures", attach.check_failures)
            .set("sensor.kernel.cleartext_calls", kernel.cleartext_calls)
            .set("sensor.kernel.iovec_truncated", kernel.iovec_truncated)
            .set("sensor.kernel.policy_blocks", kernel.policy_blocks)
            .set(
                "sensor.blind_spots",
                serde_json::to_value(self.blind.stats).unwrap_or_default(),
            )
            .set(
                "sensor.agents",
                serde_json::to_value(self.agents.stats).unwrap_or_default(),
            )
            .set(
                "sensor.policy",
                self.policy.as_ref().map(|p| {
                    json!({
                        "version": p.policy().version,
                        "rules": p.policy().rules.len(),
                        "enforcing": p.enforcing(),
                        "kernel_blocks": kernel.policy_blocks,
                        "decisions": p.stats,
                        "enforcement": p.enforce_stats(),
                    })
                }),
            )
            .set(
                "sensor.mcp_stdio",
                serde_json::to_value(self.stdio.stats).unwrap_or_default(),
            )
            .set(
                "sensor.mcp_sse",
                serde_json::to_value(self.legacy_sse.stats).unwrap_or_default(),
            )
            .set("sensor.dns.answers", self.resolutions.answers)
            .set("sensor.dns.errors", self.resolutions.errors);
        self.emit(event);
        self.flush();
    }
}

/// The agent fields of a process in an agent's tree.
fn set_agent(event: &mut Event, mark: &AgentMark) {
    event
        .set("agent.session.id", mark.session_id.clone())
        .set("agent.root.pid", mark.root_pid)
        .set("agent.marked_by", mark.marked_by.as_str());
}

/// A random id for this sensor run, so event ids are unique across restarts.
fn instance_id() -> String {
    let mut bytes = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        let t = Clock::new().wall_ns(0) as u64 ^ u64::from(std::process::id());
        bytes = t.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn errno_name(errno: i32) -> String {
    match errno {
        111 => "ECONNREFUSED".into(),
        110 => "ETIMEDOUT".into(),
        113 => "EHOSTUNREACH".into(),
        101 => "ENETUNREACH".into(),
        13 => "EACCES".into(),
        1 => "EPERM".into(),
        99 => "EADDRNOTAVAIL".into(),
        other => format!("errno {other}"),
    }
}
