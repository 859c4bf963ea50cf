//! Per-TLS-session reassembly: the plaintext records of one `SSL *` in one
//! process become an ordered byte stream per direction, parsed as HTTP/1.1,
//! with requests paired to their responses in order (keep-alive).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use sensor_common::{Direction, TlsLibrary};

use crate::protocol::http1::{Parsed, Request, RequestParser, Response, ResponseParser};

/// Sessions tracked at most; the least recently active go first.
const MAX_SESSIONS: usize = 16_384;
/// Requests waiting for a response per session at most.
const MAX_PENDING: usize = 64;
/// A session idle this long is finished (its process may have been killed).
const IDLE: Duration = Duration::from_secs(300);

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"PATCH ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// No bytes yet.
    Unknown,
    /// This process sends requests: the case the sensor reports.
    Client,
    /// This process answers requests (a server's side of TLS): not reported
    /// here, its clients are.
    Server,
    /// HTTP/2 or something that is not HTTP.
    Other,
}

/// One request and, when it came, its response.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Sensor-assigned id of the TLS session, unique within a sensor run
    /// (the `SSL *` address itself is not reported: it would leak the
    /// process's heap layout).
    pub session_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub conn: u64,
    pub fd: Option<i32>,
    pub library: TlsLibrary,
    pub request: Request,
    pub response: Option<Response>,
}

/// Counters for the health event.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct SessionStats {
    pub sessions_active: u64,
    pub sessions_evicted: u64,
    pub server_sessions: u64,
    pub non_http1_sessions: u64,
    pub parse_errors: u64,
    pub bytes_lost: u64,
    pub requests_without_response: u64,
    pub responses_without_request: u64,
}

struct Session {
    id: u64,
    fd: Option<i32>,
    library: TlsLibrary,
    role: Role,
    last_tid: u32,
    last_active: Instant,
    requests: RequestParser,
    responses: ResponseParser,
    pending: VecDeque<Request>,
    /// Per direction: (next offset, total) of a call not fully received.
    partial: [Option<(u32, u32)>; 2],
}

/// One TLS data record, as the pipeline hands it over.
pub struct Chunk<'a> {
    pub ts: u64,
    pub pid: u32,
    pub tid: u32,
    pub conn: u64,
    pub fd: Option<i32>,
    pub direction: Direction,
    pub library: TlsLibrary,
    pub total_len: u32,
    pub offset: u32,
    pub data: &'a [u8],
}

pub struct Sessions {
    map: HashMap<(u32, u64), Session>,
    next_id: u64,
    body_cap: usize,
    stats: SessionStats,
}

fn role_of(direction: Direction, data: &[u8]) -> Role {
    let is_request = METHODS.iter().any(|m| data.starts_with(m));
    let is_response = data.starts_with(b"HTTP/1.");
    match (direction, is_request, is_response) {
        (Direction::Egress, true, _) | (Direction::Ingress, _, true) => Role::Client,
        (Direction::Ingress, true, _) | (Direction::Egress, _, true) => Role::Server,
        _ => Role::Other,
    }
}

impl Sessions {
    pub fn new(body_cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            next_id: 0,
            body_cap,
            stats: SessionStats::default(),
        }
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            sessions_active: self.map.len() as u64,
            ..self.stats
        }
    }

    /// Feeds one record; returns the exchanges it completed.
    pub fn on_data(&mut self, chunk: &Chunk<'_>) -> Vec<Exchange> {
        let key = (chunk.pid, chunk.conn);
        if !self.map.contains_key(&key) {
            self.make_room();
            let role = if chunk.offset == 0 {
                role_of(chunk.direction, chunk.data)
            } else {
                Role::Unknown
            };
            match role {
                Role::Server => self.stats.server_sessions += 1,
                Role::Other => self.stats.non_http1_sessions += 1,
                Role::Client | Role::Unknown => {}
            }
            self.next_id += 1;
            self.map.insert(
                key,
                Session {
                    id: self.next_id,
                    fd: chunk.fd,
                    library: chunk.library,
                    role,
                    last_tid: chunk.tid,
                    last_active: Instant::now(),
                    requests: RequestParser::new(self.body_cap),
                    responses: ResponseParser::new(self.body_cap),
                    pending: VecDeque::new(),
                    partial: [None, None],
                },
            );
        }
        let Some(session) = self.map.get_mut(&key) else {
            return Vec::new();
        };
        session.last_active = Instant::now();
        session.last_tid = chunk.tid;
        if chunk.fd.is_some() {
            session.fd = chunk.fd;
        }
        if session.role == Role::Unknown && chunk.offset == 0 {
            session.role = role_of(chunk.direction, chunk.data);
        }
        if session.role != Role::Client {
            // Servers and other protocols: nothing to parse; the session is
            // kept only so it is not re-classified on every record.
            return Vec::new();
        }
        let mut out = Vec::new();
        let stats = &mut self.stats;
        let dir = chunk.direction as usize;
        // A new call on either direction means any earlier call that was cut
        // short (capture cap, lost record) will not get its missing bytes.
        if chunk.offset == 0 {
            for d in [Direction::Egress, Direction::Ingress] {
                if let Some((next, total)) = session.partial[d as usize].take() {
                    gap(
                        session,
                        d,
                        chunk.ts,
                        u64::from(total - next),
                        stats,
                        &mut out,
                        chunk,
                    );
                }
            }
        } else {
            match session.partial[dir] {
                Some((next, _)) if next == chunk.offset => {}
                Some((next, _)) if chunk.offset > next => {
                    gap(
                        session,
                        chunk.direction,
                        chunk.ts,
                        u64::from(chunk.offset - next),
                        stats,
                        &mut out,
                        chunk,
                    );
                }
                _ => {
                    gap(
                        session,
                        chunk.direction,
                        chunk.ts,
                        u64::from(chunk.offset),
                        stats,
                        &mut out,
                        chunk,
                    );
                }
            }
        }
        let end = chunk.offset.saturating_add(chunk.data.len() as u32);
        session.partial[dir] = (end < chunk.total_len).then_some((end, chunk.total_len));
        let parsed_req;
        let parsed_resp;
        match chunk.direction {
            Direction::Egress => {
                parsed_req = session.requests.feed(chunk.ts, chunk.data);
                parsed_resp = Vec::new();
            }
            Direction::Ingress => {
                parsed_req = Vec::new();
                parsed_resp = session.responses.feed(chunk.ts, chunk.data);
            }
        }
        absorb(
            session,
            parsed_req,
            parsed_resp,
            stats,
            &mut out,
            chunk.pid,
            chunk.conn,
        );
        out
    }

    /// The kernel tied a session to its socket.
    pub fn on_bind(&mut self, pid: u32, conn: u64, fd: i32) {
        if let Some(session) = self.map.get_mut(&(pid, conn)) {
            session.fd = Some(fd);
        }
    }

    /// A socket closed: sessions bound to it are finished.
    pub fn on_close(&mut self, pid: u32, fd: i32, ts: u64) -> Vec<Exchange> {
        let keys: Vec<_> = self
            .map
            .iter()
            .filter(|((p, _), s)| *p == pid && s.fd == Some(fd))
            .map(|(k, _)| *k)
            .collect();
        self.finish(keys, ts)
    }

    /// A process exited: all its sessions are finished.
    pub fn on_exit(&mut self, pid: u32, ts: u64) -> Vec<Exchange> {
        let keys: Vec<_> = self
            .map
            .keys()
            .filter(|(p, _)| *p == pid)
            .copied()
            .collect();
        self.finish(keys, ts)
    }

    /// Finishes sessions idle for too long.
    pub fn sweep(&mut self, ts: u64) -> Vec<Exchange> {
        let now = Instant::now();
        let keys: Vec<_> = self
            .map
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_active) > IDLE)
            .map(|(k, _)| *k)
            .collect();
        self.finish(keys, ts)
    }

    /// Finishes every session (shutdown).
    pub fn drain(&mut self, ts: u64) -> Vec<Exchange> {
        let keys: Vec<_> = self.map.keys().copied().collect();
        self.finish(keys, ts)
    }

    fn finish(&mut self, keys: Vec<(u32, u64)>, ts: u64) -> Vec<Exchange> {
        let mut out = Vec::new();
        for key in keys {
            let Some(mut session) = self.map.remove(&key) else {
                continue;
            };
            if session.role != Role::Client {
                continue;
            }
            let reqs = session.requests.close(ts);
            let resps = session.responses.close(ts);
            absorb(
                &mut session,
                reqs,
                resps,
                &mut self.stats,
                &mut out,
                key.0,
                key.1,
            );
            // Requests that never got an answer are still calls made.
            self.stats.requests_without_response += session.pending.len() as u64;
            for request in session.pending.drain(..) {
                out.push(Exchange {
                    session_id: session.id,
                    pid: key.0,
                    tid: session.last_tid,
                    conn: key.1,
                    fd: session.fd,
                    library: session.library,
                    request,
                    response: None,
                });
            }
        }
        out
    }

    fn make_room(&mut self) {
        if self.map.len() < MAX_SESSIONS {
            return;
        }
        if let Some(key) = self
            .map
            .iter()
            .min_by_key(|(_, s)| s.last_active)
            .map(|(k, _)| *k)
        {
            self.map.remove(&key);
            self.stats.sessions_evicted += 1;
        }
    }
}

fn gap(
    session: &mut Session,
    direction: Direction,
    ts: u64,
    lost: u64,
    stats: &mut SessionStats,
    out: &mut Vec<Exchange>,
    chunk: &Chunk<'_>,
) {
    if lost == 0 {
        return;
    }
    stats.bytes_lost += lost;
    let (reqs, resps) = match direction {
        Direction::Egress => (session.requests.gap(ts, lost), Vec::new()),
        Direction::Ingress => (Vec::new(), session.responses.gap(ts, lost)),
    };
    absorb(session, reqs, resps, stats, out, chunk.pid, chunk.conn);
}

/// Queues parsed requests and pairs parsed responses with them, in order.
fn absorb(
    session: &mut Session,
    reqs: Vec<Parsed<Request>>,
    resps: Vec<Parsed<Response>>,
    stats: &mut SessionStats,
    out: &mut Vec<Exchange>,
    pid: u32,
    conn: u64,
) {
    for parsed in reqs {
        match parsed {
            Parsed::Message(request) => {
                session.responses.push_request_method(&request.method);
                if session.pending.len() >= MAX_PENDING {
                    // A peer that never answers: report the oldest unanswered.
                    if let Some(request) = session.pending.pop_front() {
                        stats.requests_without_response += 1;
                        out.push(exchange(session, pid, conn, request, None));
                    }
                }
                session.pending.push_back(request);
            }
            Parsed::Error(_) => stats.parse_errors += 1,
        }
    }
    for parsed in resps {
        match parsed {
            Parsed::Message(response) => match session.pending.pop_front() {
                Some(request) => out.push(exchange(session, pid, conn, request, Some(response))),
                None => stats.responses_without_request += 1,
            },
            Parsed::Error(_) => stats.parse_errors += 1,
        }
    }
}

fn exchange(
    session: &Session,
    pid: u32,
    conn: u64,
    request: Request,
    response: Option<Response>,
) -> Exchange {
    Exchange {
        session_id: session.id,
        pid,
        tid: session.last_tid,
        conn,
        fd: session.fd,
        library: session.library,
        request,
        response,
    }
}
