//! Per-connection reassembly: the plaintext records of one TLS session (an
//! `SSL *`, a GnuTLS session, an NSS socket, a Go `*tls.Conn`) or of one
//! cleartext socket in one process become an ordered byte stream per
//! direction, parsed as HTTP/1.1 (requests paired to their responses in
//! order, keep-alive) or HTTP/2 (paired by stream).
//!
//! The kernel numbers every byte of each direction (`stream_pos`), captured
//! or not, so a lost record or a cut call shows as a jump and becomes a gap
//! for the parser instead of silently gluing two messages together.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use sensor_common::{Direction, TlsLibrary};

use crate::{
    decode::TlsData,
    protocol::{
        http1::{Parsed, Request, RequestParser, Response, ResponseParser},
        http2::{Http2Connection, Http2Item},
    },
};

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
    /// No bytes from the start of the stream yet.
    Unknown,
    /// This process sends requests: the case the sensor reports.
    Client,
    /// This process answers requests (a server's side of TLS): not reported
    /// here, its clients are.
    Server,
    /// This process speaks HTTP/2 as a client (it sent the preface).
    Http2Client,
    /// Something that is not HTTP.
    Other,
}

/// One request and, when it came, its response.
#[derive(Clone)]
pub struct Exchange {
    /// Sensor-assigned id of the TLS session, unique within a sensor run
    /// (the `SSL *` address itself is not reported: it would leak the
    /// process's heap layout).
    pub session_id: u64,
    pub pid: u32,
    pub tid: u32,
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
    pub http2_sessions: u64,
    pub http2_errors: u64,
    pub parse_errors: u64,
    pub bytes_lost: u64,
    pub requests_without_response: u64,
    pub responses_without_request: u64,
}

/// Where one direction of a session stands.
#[derive(Default, Clone, Copy)]
struct Flow {
    /// Stream position of the next byte expected.
    next: Option<u64>,
    /// End of the latest call seen: beyond `next` when its tail was not
    /// captured (size cap, lost record).
    call_end: u64,
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
    /// The HTTP/2 parser, for a session that opened with the preface.
    h2: Option<Box<Http2Connection>>,
    /// Requests waiting for their response, in order; `None` stands for a
    /// request that could not be parsed, so the responses stay aligned.
    pending: VecDeque<Option<Request>>,
    /// Responses that came with no request waiting: answers to requests
    /// whose bytes were lost before the loss was noticed.
    orphan_responses: u32,
    flows: [Flow; 2],
}

pub struct Sessions {
    map: HashMap<(u32, u64), Session>,
    next_id: u64,
    body_cap: usize,
    stats: SessionStats,
}

fn role_of(direction: Direction, data: &[u8]) -> Role {
    if direction == Direction::Egress && data.starts_with(b"PRI * HTTP/2.0") {
        return Role::Http2Client;
    }
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
    pub fn on_data(&mut self, chunk: &TlsData) -> Vec<Exchange> {
        let key = (chunk.task.pid, chunk.conn);
        let mut out = Vec::new();
        // The same `SSL *` on another socket: the old session was freed and
        // its address reused. Finish it rather than mix the two.
        if let (Some(session), Some(fd)) = (self.map.get(&key), chunk.fd)
            && session.fd.is_some_and(|old| old != fd)
        {
            out.extend(self.finish(vec![key], chunk.task.ts_ns));
        }
        if !self.map.contains_key(&key) {
            out.extend(self.make_room(chunk.task.ts_ns));
            self.next_id += 1;
            self.map.insert(key, self.new_session(chunk));
        }
        let Some(session) = self.map.get_mut(&key) else {
            return out;
        };
        session.last_active = Instant::now();
        session.last_tid = chunk.task.tid;
        if chunk.fd.is_some() {
            session.fd = chunk.fd;
        }
        let pos = chunk.stream_pos + u64::from(chunk.offset);
        if session.role == Role::Unknown && pos == 0 {
            session.role = role_of(chunk.direction, &chunk.data);
            match session.role {
                Role::Server => self.stats.server_sessions += 1,
                Role::Other => self.stats.non_http1_sessions += 1,
                Role::Http2Client => {
                    self.stats.http2_sessions += 1;
                    session.h2 = Some(Box::new(Http2Connection::new(self.body_cap)));
                }
                Role::Client | Role::Unknown => {}
            }
        } else if matches!(session.role, Role::Unknown | Role::Other)
            && chunk.offset == 0
            && chunk.direction == Direction::Egress
            && role_of(chunk.direction, &chunk.data) == Role::Client
        {
            // A connection first seen mid-way (opened before the sensor
            // started, or its first records lost): parse from the first
            // request that starts a call. The other direction starts with
            // whatever comes next.
            session.role = Role::Client;
            session.flows = [Flow::default(); 2];
            session.flows[Direction::Egress as usize].next = Some(pos);
        }
        if !matches!(session.role, Role::Client | Role::Http2Client) {
            // Servers, other protocols, and streams first seen mid-way:
            // nothing to parse.
            return out;
        }
        let stats = &mut self.stats;
        let dir = chunk.direction as usize;
        // Data in one direction means the other direction's latest call is
        // over: bytes it did not deliver never will.
        let other = match chunk.direction {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        };
        let flow = session.flows[other as usize];
        if let Some(next) = flow.next
            && flow.call_end > next
        {
            session.flows[other as usize].next = Some(flow.call_end);
            gap(
                session,
                other,
                chunk.task.ts_ns,
                flow.call_end - next,
                stats,
                &mut out,
                chunk.task.pid,
            );
        }
        let mut data = chunk.data.as_slice();
        match session.flows[dir].next {
            Some(next) if pos > next => {
                gap(
                    session,
                    chunk.direction,
                    chunk.task.ts_ns,
                    pos - next,
                    stats,
                    &mut out,
                    chunk.task.pid,
                );
            }
            Some(next) if pos < next => {
                if chunk.offset == 0 {
                    // The kernel's counter started over (its table entry was
                    // recycled): carry on from here.
                } else {
                    let skip = usize::try_from(next - pos).unwrap_or(usize::MAX);
                    data = data.get(skip..).unwrap_or_default();
                }
            }
            _ => {}
        }
        let end = pos.max(session.flows[dir].next.unwrap_or(0)) + data.len() as u64;
        let call_end = chunk.stream_pos + u64::from(chunk.total_len);
        session.flows[dir] = Flow {
            next: Some(end),
            call_end: call_end.max(end),
        };
        if let Some(h2) = session.h2.as_mut() {
            let items = h2.feed(chunk.direction, chunk.task.ts_ns, data);
            absorb_h2(session, items, stats, &mut out, chunk.task.pid);
            return out;
        }
        let (reqs, resps) = match chunk.direction {
            Direction::Egress => (session.requests.feed(chunk.task.ts_ns, data), Vec::new()),
            Direction::Ingress => (Vec::new(), session.responses.feed(chunk.task.ts_ns, data)),
        };
        absorb(session, reqs, resps, stats, &mut out, chunk.task.pid);
        out
    }

    fn new_session(&self, chunk: &TlsData) -> Session {
        Session {
            id: self.next_id,
            fd: chunk.fd,
            library: chunk.library,
            role: Role::Unknown,
            last_tid: chunk.task.tid,
            last_active: Instant::now(),
            requests: RequestParser::new(self.body_cap),
            responses: ResponseParser::new(self.body_cap),
            h2: None,
            pending: VecDeque::new(),
            orphan_responses: 0,
            // The kernel starts counting both directions at the session's
            // first call, so a direction whose first record is not at 0 lost
            // its beginning.
            flows: [Flow {
                next: Some(0),
                call_end: 0,
            }; 2],
        }
    }

    /// The kernel tied a session to its socket.
    pub fn on_bind(&mut self, pid: u32, conn: u64, fd: i32, ts: u64) -> Vec<Exchange> {
        let key = (pid, conn);
        let Some(session) = self.map.get_mut(&key) else {
            return Vec::new();
        };
        match session.fd {
            Some(old) if old != fd => self.finish(vec![key], ts),
            _ => {
                session.fd = Some(fd);
                Vec::new()
            }
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

    /// Whether a TLS library probe reported plaintext of `pid` (a session
    /// not from the socket syscalls).
    pub fn has_library_sessions(&self, pid: u32) -> bool {
        self.map
            .iter()
            .any(|((p, _), s)| *p == pid && s.library != TlsLibrary::Cleartext)
    }

    /// The `SSL *` of every session of `pid`.
    pub fn conns_of(&self, pid: u32) -> Vec<u64> {
        self.map
            .keys()
            .filter(|(p, _)| *p == pid)
            .map(|(_, conn)| *conn)
            .collect()
    }

    /// A process exited or replaced its image: all its sessions are over.
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
            if let Some(mut h2) = session.h2.take() {
                let items = h2.close(ts);
                absorb_h2(&session, items, &mut self.stats, &mut out, key.0);
                continue;
            }
            if session.role != Role::Client {
                continue;
            }
            let reqs = session.requests.close(ts);
            let resps = session.responses.close(ts);
            absorb(&mut session, reqs, resps, &mut self.stats, &mut out, key.0);
            // Requests that never got an answer are still calls made.
            let unanswered: Vec<Request> = session.pending.drain(..).flatten().collect();
            for request in unanswered {
                self.stats.requests_without_response += 1;
                out.push(exchange(&session, key.0, request, None));
            }
        }
        out
    }

    /// Makes room for one more session by finishing the least recently
    /// active one (its calls are reported, not dropped).
    fn make_room(&mut self, ts: u64) -> Vec<Exchange> {
        if self.map.len() < MAX_SESSIONS {
            return Vec::new();
        }
        let Some(key) = self
            .map
            .iter()
            .min_by_key(|(_, s)| s.last_active)
            .map(|(k, _)| *k)
        else {
            return Vec::new();
        };
        self.stats.sessions_evicted += 1;
        self.finish(vec![key], ts)
    }
}

fn gap(
    session: &mut Session,
    direction: Direction,
    ts: u64,
    lost: u64,
    stats: &mut SessionStats,
    out: &mut Vec<Exchange>,
    pid: u32,
) {
    if lost == 0 {
        return;
    }
    stats.bytes_lost += lost;
    if let Some(h2) = session.h2.as_mut() {
        let items = h2.gap(direction, ts, lost);
        absorb_h2(session, items, stats, out, pid);
        return;
    }
    let (reqs, resps) = match direction {
        Direction::Egress => (session.requests.gap(ts, lost), Vec::new()),
        Direction::Ingress => (Vec::new(), session.responses.gap(ts, lost)),
    };
    absorb(session, reqs, resps, stats, out, pid);
}

/// Queues parsed requests and pairs parsed responses with them, in order.
fn absorb(
    session: &mut Session,
    reqs: Vec<Parsed<Request>>,
    resps: Vec<Parsed<Response>>,
    stats: &mut SessionStats,
    out: &mut Vec<Exchange>,
    pid: u32,
) {
    // A parser reports a cut message as the partial message followed by an
    // error; only an error on its own stands for a message lost whole.
    let mut after_message = false;
    for parsed in reqs {
        let request = match parsed {
            Parsed::Message(request) => {
                after_message = true;
                session.responses.push_request_method(&request.method);
                Some(request)
            }
            Parsed::Error(_) if after_message => {
                stats.parse_errors += 1;
                after_message = false;
                continue;
            }
            Parsed::Error(_) if session.orphan_responses > 0 => {
                // Its answer came already, unpaired.
                stats.parse_errors += 1;
                session.orphan_responses -= 1;
                continue;
            }
            Parsed::Error(_) => {
                // The server will likely still answer whatever this was:
                // hold its place so later responses pair correctly.
                stats.parse_errors += 1;
                session.responses.push_request_method("POST");
                None
            }
        };
        if session.pending.len() >= MAX_PENDING {
            // A peer that never answers: report the oldest unanswered.
            if let Some(oldest) = session.pending.pop_front().flatten() {
                stats.requests_without_response += 1;
                out.push(exchange(session, pid, oldest, None));
            }
        }
        session.pending.push_back(request);
    }
    let mut after_message = false;
    for parsed in resps {
        match parsed {
            Parsed::Message(response) => {
                after_message = true;
                match session.pending.pop_front() {
                    Some(Some(request)) => {
                        out.push(exchange(session, pid, request, Some(response)))
                    }
                    // The answer to a request that could not be parsed.
                    Some(None) => {}
                    None => {
                        stats.responses_without_request += 1;
                        session.orphan_responses = session.orphan_responses.saturating_add(1);
                    }
                }
            }
            Parsed::Error(_) if after_message => {
                stats.parse_errors += 1;
                after_message = false;
            }
            Parsed::Error(_) => {
                // A response lost its start: the request it answered will
                // not be paired; report it unanswered and keep the order.
                stats.parse_errors += 1;
                if let Some(Some(request)) = session.pending.pop_front() {
                    stats.requests_without_response += 1;
                    out.push(exchange(session, pid, request, None));
                }
            }
        }
    }
}

/// Reports the HTTP/2 exchanges completed (paired by stream already).
fn absorb_h2(
    session: &Session,
    items: Vec<Http2Item>,
    stats: &mut SessionStats,
    out: &mut Vec<Exchange>,
    pid: u32,
) {
    for item in items {
        match item {
            Http2Item::Exchange(request, response) => {
                if response.is_none() {
                    stats.requests_without_response += 1;
                }
                out.push(exchange(session, pid, request, response));
            }
            Http2Item::Error(err) => {
                stats.http2_errors += 1;
                tracing::debug!(%err, "HTTP/2 parse error");
            }
        }
    }
}

fn exchange(session: &Session, pid: u32, request: Request, response: Option<Response>) -> Exchange {
    Exchange {
        session_id: session.id,
        pid,
        tid: session.last_tid,
        fd: session.fd,
        library: session.library,
        request,
        response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Task;

    const REQ: &[u8] =
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}";

    fn resp(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    struct Feeder {
        sessions: Sessions,
        pos: [u64; 2],
        fd: Option<i32>,
        conn: u64,
    }

    impl Feeder {
        fn new() -> Self {
            Self {
                sessions: Sessions::new(1 << 16),
                pos: [0, 0],
                fd: Some(3),
                conn: 0xabc,
            }
        }

        /// One SSL call of `data`, of which only `captured` bytes arrive.
        fn call(&mut self, direction: Direction, data: &[u8], captured: usize) -> Vec<Exchange> {
            let d = direction as usize;
            let chunk = TlsData {
                task: Task {
                    ts_ns: 1,
                    pid: 7,
                    tid: 7,
                    cgroup_id: 1,
                    uid: 0,
                    gid: 0,
                },
                conn: self.conn,
                fd: self.fd,
                direction,
                library: TlsLibrary::OpenSsl,
                stream_pos: self.pos[d],
                total_len: data.len() as u32,
                offset: 0,
                data: data[..captured].to_vec(),
            };
            self.pos[d] += data.len() as u64;
            self.sessions.on_data(&chunk)
        }

        fn send(&mut self, data: &[u8]) -> Vec<Exchange> {
            self.call(Direction::Egress, data, data.len())
        }

        fn recv(&mut self, data: &[u8]) -> Vec<Exchange> {
            self.call(Direction::Ingress, data, data.len())
        }

        /// A call the kernel counted but whose record was lost.
        fn lose(&mut self, direction: Direction, len: usize) {
            self.pos[direction as usize] += len as u64;
        }
    }

    fn bodies(out: &[Exchange]) -> Vec<Option<String>> {
        out.iter()
            .map(|e| {
                e.response
                    .as_ref()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            })
            .collect()
    }

    #[test]
    fn keep_alive_pairs_in_order() {
        let mut f = Feeder::new();
        assert!(f.send(REQ).is_empty());
        assert_eq!(bodies(&f.recv(&resp("a"))), [Some("a".to_owned())]);
        assert!(f.send(REQ).is_empty());
        let out = f.recv(&resp("b"));
        assert_eq!(bodies(&out), [Some("b".to_owned())]);
        assert_eq!(out[0].fd, Some(3));
        assert_eq!(f.sessions.stats().parse_errors, 0);
    }

    #[test]
    fn a_lost_response_does_not_shift_later_pairs() {
        let mut f = Feeder::new();
        f.send(REQ);
        let first = resp("first");
        f.lose(Direction::Ingress, first.len());
        f.send(REQ);
        let out = f.recv(&resp("second"));
        // The first request is reported unanswered, the second gets its own answer.
        assert_eq!(bodies(&out), [None, Some("second".to_owned())]);
        assert_eq!(f.sessions.stats().bytes_lost, first.len() as u64);
    }

    #[test]
    fn a_lost_request_does_not_shift_later_pairs() {
        let mut f = Feeder::new();
        f.lose(Direction::Egress, REQ.len());
        // The session was first seen mid-stream: nothing can be parsed yet,
        // until a call starts with a request.
        assert!(f.recv(&resp("x")).is_empty());
        assert!(f.send(REQ).is_empty());
        assert_eq!(bodies(&f.recv(&resp("y"))), [Some("y".to_owned())]);
        let mut g = Feeder::new();
        g.send(REQ);
        g.recv(&resp("a"));
        g.lose(Direction::Egress, REQ.len());
        g.send(REQ);
        let mut out = g.recv(&resp("lost-request-answer"));
        out.extend(g.recv(&resp("b")));
        assert_eq!(bodies(&out), [Some("b".to_owned())]);
    }

    #[test]
    fn a_cut_call_is_a_gap_when_the_other_side_speaks() {
        let mut f = Feeder::new();
        let mut big = b"POST /v1/x HTTP/1.1\r\nContent-Length: 100\r\n\r\n".to_vec();
        big.extend([b'z'; 100]);
        // Only the head and 10 body bytes were captured.
        f.call(Direction::Egress, &big, big.len() - 90);
        let out = f.recv(&resp("ok"));
        assert_eq!(bodies(&out), [Some("ok".to_owned())]);
        assert!(out[0].request.body_truncated);
        assert_eq!(out[0].request.body_size, 100);
        assert_eq!(f.sessions.stats().bytes_lost, 90);
    }

    #[test]
    fn a_reused_ssl_address_on_another_socket_is_a_new_session() {
        let mut f = Feeder::new();
        f.send(REQ);
        let first_id = f.sessions.map.values().next().map(|s| s.id);
        // The SSL object was freed and its address reused on fd 9.
        f.fd = Some(9);
        f.pos = [0, 0];
        let out = f.send(REQ);
        assert_eq!(out.len(), 1, "the old session's request is reported");
        assert!(out[0].response.is_none());
        assert_eq!(out[0].fd, Some(3));
        let second_id = f.sessions.map.values().next().map(|s| s.id);
        assert_ne!(first_id, second_id);
        assert_eq!(bodies(&f.recv(&resp("new"))), [Some("new".to_owned())]);
    }

    #[test]
    fn server_side_sessions_are_not_reported() {
        let mut f = Feeder::new();
        assert!(f.recv(REQ).is_empty());
        assert!(f.send(&resp("x")).is_empty());
        assert_eq!(f.sessions.stats().server_sessions, 1);
        assert!(f.sessions.on_exit(7, 2).is_empty());
    }

    #[test]
    fn unanswered_requests_are_reported_at_close() {
        let mut f = Feeder::new();
        f.send(REQ);
        let out = f.sessions.on_close(7, 3, 5);
        assert_eq!(bodies(&out), [None]);
        assert_eq!(f.sessions.stats().requests_without_response, 1);
        assert_eq!(f.sessions.stats().sessions_active, 0);
    }
}
