//! MCP over stdio: an agent starts a server as a child and they talk
//! JSON-RPC, one message per line, over the child's stdin and stdout. The
//! kernel copies what agents' processes write to non-socket files when it
//! starts like a JSON-RPC object (and everything after it on that fd), so
//! both sides are seen writing: the agent its requests, the server its
//! answers.
//!
//! A request is tied to its answer by the JSON-RPC id and the processes:
//! the answering server is a descendant of the client that wrote the
//! request (the agent started it). When both ends are pipes (the usual
//! `subprocess` stdin), the pipe the client wrote to must also be the
//! server's stdin, read from `/proc/<pid>/fd`; a socket pair (asyncio's
//! choice on some systems) has two inodes and is paired by process and id
//! alone.

use std::collections::HashMap;

use crate::{
    decode::TlsData,
    protocol::mcp::{self, McpRequest, McpResponse, Message},
};

/// Bytes of an unfinished line kept at most per (process, fd).
const MAX_LINE: usize = 1024 * 1024;
/// Requests waiting for an answer at most; unanswered ones are dropped
/// after [`PENDING_NS`].
const MAX_PENDING: usize = 4096;
const PENDING_NS: u64 = 120_000_000_000;
/// Levels between a client and its server looked at, at most.
const MAX_ANCESTORS: usize = 4;

/// A request and its answer (or the lack of one).
#[derive(Debug, Clone)]
pub struct StdioCall {
    pub request: McpRequest,
    pub response: Option<McpResponse>,
    /// Who wrote the request: the MCP client (the agent).
    pub client_pid: u32,
    pub client_tid: u32,
    pub client_fd: i32,
    pub request_ts: u64,
    pub response_ts: Option<u64>,
    /// Who answered: the server process.
    pub server_pid: Option<u32>,
    /// Name and version from the server's `initialize` answer.
    pub server: Option<(String, Option<String>)>,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct StdioStats {
    pub messages: u64,
    pub not_jsonrpc: u64,
    pub lines_too_long: u64,
    pub stream_gaps: u64,
    pub paired: u64,
    pub unanswered: u64,
}

struct Pending {
    request: McpRequest,
    /// The pipe the request went into, when it was one.
    pipe: Option<u64>,
    pid: u32,
    tid: u32,
    fd: i32,
    ts: u64,
}

#[derive(Default)]
struct Partial {
    bytes: Vec<u8>,
    next_pos: Option<u64>,
    skipping: bool,
}

#[derive(Default)]
pub struct StdioMcp {
    partial: HashMap<(u32, i32), Partial>,
    /// By (client pid, client fd, JSON-RPC id): every client session
    /// numbers its requests from 0, so one agent talking to two servers
    /// has two requests of each id.
    pending: HashMap<(u32, i32, String), Pending>,
    /// Servers by pid: name and version from their `initialize` answer.
    servers: HashMap<u32, (String, Option<String>)>,
    pub stats: StdioStats,
}

impl StdioMcp {
    /// A piece of what a process wrote; returns the calls it completes.
    /// `parent_of` names a process's parent (the process table).
    pub fn on_data(
        &mut self,
        chunk: &TlsData,
        parent_of: &mut dyn FnMut(u32) -> Option<u32>,
    ) -> Vec<StdioCall> {
        let Some(fd) = chunk.fd else {
            return Vec::new();
        };
        let key = (chunk.task.pid, fd);
        let partial = self.partial.entry(key).or_default();
        let pos = chunk.stream_pos + u64::from(chunk.offset);
        if partial.next_pos.is_some_and(|next| next != pos) {
            // Lost bytes: the line under way is broken.
            self.stats.stream_gaps += 1;
            partial.bytes.clear();
            partial.skipping = true;
        }
        partial.next_pos = Some(pos + chunk.data.len() as u64);
        let mut lines = Vec::new();
        for piece in chunk.data.split_inclusive(|&b| b == b'\n') {
            let complete = piece.last() == Some(&b'\n');
            if !partial.skipping {
                if partial.bytes.len() + piece.len() > MAX_LINE {
                    self.stats.lines_too_long += 1;
                    partial.bytes.clear();
                    partial.skipping = true;
                } else {
                    partial.bytes.extend_from_slice(piece);
                }
            }
            if complete {
                if !partial.skipping {
                    lines.push(std::mem::take(&mut partial.bytes));
                }
                partial.bytes.clear();
                partial.skipping = false;
            }
        }
        let mut out = Vec::new();
        for line in lines {
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            self.stats.messages += 1;
            match mcp::parse_message(text) {
                Some(Message::Request(request)) => self.on_request(chunk, fd, request),
                Some(Message::Response(Some(id), response)) => {
                    if let Some(call) = self.on_response(chunk, id, response, parent_of) {
                        out.push(call);
                    }
                }
                Some(Message::Response(None, _)) | None => self.stats.not_jsonrpc += 1,
            }
        }
        out
    }

    fn on_request(&mut self, chunk: &TlsData, fd: i32, request: McpRequest) {
        // Notifications are not answered.
        let Some(id) = request.id.clone() else {
            return;
        };
        let pipe = pipe_inode(chunk.task.pid, fd);
        if self.pending.len() >= MAX_PENDING {
            self.expire(chunk.task.ts_ns);
            if self.pending.len() >= MAX_PENDING {
                self.stats.unanswered += self.pending.len() as u64;
                self.pending.clear();
            }
        }
        self.pending.insert(
            (chunk.task.pid, fd, id),
            Pending {
                request,
                pipe,
                pid: chunk.task.pid,
                tid: chunk.task.tid,
                fd,
                ts: chunk.task.ts_ns,
            },
        );
    }

    fn on_response(
        &mut self,
        chunk: &TlsData,
        id: String,
        response: McpResponse,
        parent_of: &mut dyn FnMut(u32) -> Option<u32>,
    ) -> Option<StdioCall> {
        let server = chunk.task.pid;
        // The server reads its requests from its stdin.
        let stdin = pipe_inode(server, 0);
        // The client is the nearest ancestor with a request of this id
        // (through a wrapper such as `npx` or a shell, a few levels up).
        let mut ancestor = server;
        let mut key = None;
        for _ in 0..MAX_ANCESTORS {
            let Some(parent) = parent_of(ancestor).filter(|p| *p != ancestor && *p > 1) else {
                break;
            };
            ancestor = parent;
            // This client's requests of this id: the one that went into
            // the server's stdin, else (a socket pair, or a process gone)
            // the oldest whose pipe is not another server's.
            let mut candidates: Vec<(&(u32, i32, String), &Pending)> = self
                .pending
                .iter()
                .filter(|((pid, _, rid), p)| {
                    *pid == parent
                        && *rid == id
                        && !matches!((p.pipe, stdin), (Some(a), Some(b)) if a != b)
                })
                .collect();
            candidates.sort_by_key(|(_, p)| {
                (
                    !matches!((p.pipe, stdin), (Some(a), Some(b)) if a == b),
                    p.ts,
                )
            });
            if let Some((k, _)) = candidates.first() {
                key = Some((*k).clone());
                break;
            }
        }
        let pending = self.pending.remove(&key?)?;
        self.stats.paired += 1;
        if pending.request.method == "initialize"
            && let Some(name) = &response.server_name
        {
            if self.servers.len() >= MAX_PENDING {
                self.servers.clear();
            }
            self.servers
                .insert(server, (name.clone(), response.server_version.clone()));
        }
        Some(StdioCall {
            request: pending.request,
            response: Some(response),
            client_pid: pending.pid,
            client_tid: pending.tid,
            client_fd: pending.fd,
            request_ts: pending.ts,
            response_ts: Some(chunk.task.ts_ns),
            server_pid: Some(server),
            server: self.servers.get(&server).cloned(),
        })
    }

    /// Drops requests unanswered for too long.
    pub fn expire(&mut self, now_ns: u64) {
        let before = self.pending.len();
        self.pending
            .retain(|_, p| now_ns.saturating_sub(p.ts) < PENDING_NS);
        self.stats.unanswered += (before - self.pending.len()) as u64;
    }

    /// A process ended: its unfinished lines and server name go.
    pub fn forget_process(&mut self, pid: u32) {
        self.partial.retain(|(p, _), _| *p != pid);
        self.servers.remove(&pid);
    }
}

/// The inode of the pipe (or other anonymous file) at `fd` of `pid`.
fn pipe_inode(pid: u32, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let text = link.to_str()?;
    let inode = text.strip_prefix("pipe:[")?.strip_suffix(']')?;
    inode.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Task;
    use sensor_common::{Direction, TlsLibrary};

    fn chunk(pid: u32, fd: i32, pos: u64, data: &[u8]) -> TlsData {
        TlsData {
            task: Task {
                ts_ns: 1_000 + pos,
                pid,
                tid: pid,
                cgroup_id: 0,
                uid: 0,
                gid: 0,
            },
            conn: 0,
            fd: Some(fd),
            direction: Direction::Egress,
            library: TlsLibrary::Cleartext,
            stream_pos: pos,
            total_len: data.len() as u32,
            offset: 0,
            data: data.to_vec(),
        }
    }

    #[test]
    fn requests_pair_with_answers_across_split_writes() {
        let mut s = StdioMcp::default();
        // pids that do not exist: no /proc fd, paired by process and id.
        let (client, server) = (u32::MAX - 1, u32::MAX - 2);
        let mut parent = |pid: u32| (pid == server).then_some(client);
        let parent = &mut parent;
        let init = br#"{"method":"initialize","params":{"protocolVersion":"2025-06-18","clientInfo":{"name":"a"}},"jsonrpc":"2.0","id":0}"#;
        let mut line = init.to_vec();
        line.push(b'\n');
        assert!(s.on_data(&chunk(client, 7, 0, &line), parent).is_empty());
        // The answer comes in two writes.
        let answer = b"{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"serverInfo\":{\"name\":\"orders\",\"version\":\"1.0\"}}}\n";
        assert!(
            s.on_data(&chunk(server, 1, 0, &answer[..20]), parent)
                .is_empty()
        );
        let calls = s.on_data(&chunk(server, 1, 20, &answer[20..]), parent);
        assert_eq!(calls.len(), 1);
        let c = &calls[0];
        assert_eq!(c.request.method, "initialize");
        assert_eq!(c.client_pid, client);
        assert_eq!(c.server_pid, Some(server));
        assert_eq!(
            c.response.as_ref().and_then(|r| r.server_name.as_deref()),
            Some("orders")
        );
        // Notifications wait for nothing; a tools/call pairs by id.
        let more = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"lookup_order\",\"arguments\":{\"order_id\":\"A1\"}}}\n";
        assert!(
            s.on_data(&chunk(client, 7, line.len() as u64, more), parent)
                .is_empty()
        );
        let done =
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[],\"isError\":false}}\n";
        let calls = s.on_data(&chunk(server, 1, answer.len() as u64, done), parent);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].request.tool_name.as_deref(), Some("lookup_order"));
        assert_eq!(
            calls[0].server.as_ref().map(|s| s.0.as_str()),
            Some("orders")
        );
        // An answer from a process that is not the client's descendant
        // pairs with nothing.
        let stray = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n";
        assert!(
            s.on_data(&chunk(u32::MAX - 9, 1, 0, stray), parent)
                .is_empty()
        );
        assert_eq!(
            calls[0].response.as_ref().and_then(|r| r.tool_is_error),
            Some(false)
        );
        assert_eq!(s.stats.paired, 2);
    }

    #[test]
    fn gaps_and_noise_lose_only_what_they_touch() {
        let mut s = StdioMcp::default();
        let pid = u32::MAX - 3;
        // A gap in the middle of a line: that line is dropped, the next
        // one is read.
        assert!(
            s.on_data(
                &chunk(pid, 3, 0, b"{\"jsonrpc\":\"2.0\",\"id\":"),
                &mut |_| None
            )
            .is_empty()
        );
        let next = b"9}\n{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"ping\"}\n";
        assert!(
            s.on_data(&chunk(pid, 3, 100, next), &mut |_| None)
                .is_empty()
        );
        assert_eq!(s.stats.stream_gaps, 1);
        assert_eq!(s.pending.len(), 1);
        // Binary noise and half objects are counted, never a panic.
        s.on_data(&chunk(pid, 4, 0, b"{\"x\x00\xff\n\n{}\n"), &mut |_| None);
        assert_eq!(s.stats.not_jsonrpc, 2);
        // A line past the cap is dropped whole.
        let big = vec![b'a'; MAX_LINE + 10];
        s.on_data(&chunk(pid, 5, 0, &big), &mut |_| None);
        s.on_data(&chunk(pid, 5, big.len() as u64, b"\n"), &mut |_| None);
        assert_eq!(s.stats.lines_too_long, 1);
    }
}
