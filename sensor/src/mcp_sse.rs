//! MCP's legacy HTTP+SSE transport: the client POSTs each JSON-RPC
//! request to the server's message endpoint and gets `202 Accepted`; the
//! answer comes later as a `data:` line of a long-lived `GET /sse` stream
//! on another connection of the same process. That stream never ends while
//! the session lives, so its answers are read from the raw bytes as they
//! arrive, and the request's `tool_call` waits (a few seconds at most) for
//! its answer.

use std::collections::HashMap;

use crate::{
    event::Event,
    protocol::mcp::{self, McpRequest, McpResponse, Message},
};

/// How long a request's event waits for its answer before it goes out
/// without one, and how long an answer waits for its request's event (the
/// two connections' records may come in either order).
pub const WAIT_NS: u64 = 5_000_000_000;
/// Bytes of an unfinished SSE line kept per connection at most.
const MAX_LINE: usize = 1024 * 1024;
/// Held events and early answers at most.
const MAX_HELD: usize = 4096;

/// A `tool_call` waiting for its answer.
pub struct Held {
    pub event: Event,
    pub request: McpRequest,
    pub ts: u64,
    /// `(agent session, Host)` of the server, for its name.
    pub server_key: (String, String),
}

/// What became of a held call.
pub enum Hold {
    /// Its answer had come already.
    Answered(Held, McpResponse),
    /// It waits for its answer.
    Waiting,
    /// It cannot wait: it goes out as it is.
    Refused(Held),
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct SseStats {
    pub answers_read: u64,
    pub paired: u64,
    pub unanswered: u64,
    pub lines_too_long: u64,
}

#[derive(Default)]
pub struct LegacySse {
    /// Unfinished lines per (pid, connection).
    lines: HashMap<(u32, u64), Vec<u8>>,
    held: HashMap<(u32, String), Held>,
    answers: HashMap<(u32, String), (McpResponse, u64)>,
    pub stats: SseStats,
}

impl LegacySse {
    /// Bytes an agent's process received: the JSON-RPC answers on `data:`
    /// lines in them, by id.
    pub fn on_ingress(&mut self, pid: u32, conn: u64, data: &[u8]) -> Vec<(String, McpResponse)> {
        let key = (pid, conn);
        let has_state = self.lines.contains_key(&key);
        if !has_state && memchr::memmem::find(data, b"data:").is_none() {
            return Vec::new();
        }
        let buf = self.lines.entry(key).or_default();
        let mut out = Vec::new();
        for piece in data.split_inclusive(|&b| b == b'\n') {
            if buf.len() + piece.len() > MAX_LINE {
                self.stats.lines_too_long += 1;
                buf.clear();
                continue;
            }
            buf.extend_from_slice(piece);
            if buf.last() != Some(&b'\n') {
                continue;
            }
            let line = std::mem::take(buf);
            let Some(payload) = line.trim_ascii().strip_prefix(b"data:") else {
                continue;
            };
            if memchr::memmem::find(payload, b"\"jsonrpc\"").is_none() {
                continue;
            }
            if let Some(Message::Response(Some(id), answer)) =
                mcp::parse_message(payload.trim_ascii())
            {
                self.stats.answers_read += 1;
                out.push((id, answer));
            }
        }
        if buf.is_empty() {
            self.lines.remove(&key);
        }
        out
    }

    /// A request's event whose HTTP answer was only `202 Accepted`: the
    /// answer it already has (read first), else it waits. Refused (to go
    /// out as it is) without an id or when too many wait.
    pub fn hold(&mut self, pid: u32, held: Held) -> Hold {
        let Some(id) = held.request.id.clone() else {
            return Hold::Refused(held);
        };
        if let Some((answer, _)) = self.answers.remove(&(pid, id.clone())) {
            self.stats.paired += 1;
            return Hold::Answered(held, answer);
        }
        if self.held.len() >= MAX_HELD {
            self.stats.unanswered += 1;
            return Hold::Refused(held);
        }
        self.held.insert((pid, id), held);
        Hold::Waiting
    }

    /// An answer read from a stream: the held event it completes, if any.
    pub fn answer(
        &mut self,
        pid: u32,
        id: String,
        answer: McpResponse,
        ts: u64,
    ) -> Option<(Held, McpResponse)> {
        match self.held.remove(&(pid, id.clone())) {
            Some(held) => {
                self.stats.paired += 1;
                Some((held, answer))
            }
            None => {
                if self.answers.len() < MAX_HELD {
                    self.answers.insert((pid, id), (answer, ts));
                }
                None
            }
        }
    }

    /// Events that waited long enough (they go out without an answer),
    /// and answers nobody asked for.
    pub fn expire(&mut self, now: u64) -> Vec<Held> {
        self.answers
            .retain(|_, (_, ts)| now.saturating_sub(*ts) < WAIT_NS);
        let late: Vec<(u32, String)> = self
            .held
            .iter()
            .filter(|(_, h)| now.saturating_sub(h.ts) >= WAIT_NS)
            .map(|(k, _)| k.clone())
            .collect();
        let out: Vec<Held> = late.iter().filter_map(|k| self.held.remove(k)).collect();
        self.stats.unanswered += out.len() as u64;
        out
    }

    /// Every held event (shutdown).
    pub fn drain(&mut self) -> Vec<Held> {
        self.held.drain().map(|(_, h)| h).collect()
    }

    pub fn forget_process(&mut self, pid: u32) {
        self.lines.retain(|(p, _), _| *p != pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: &str) -> Held {
        let request = match mcp::parse_message(
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#).as_bytes(),
        ) {
            Some(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        };
        Held {
            event: Event::new("tool_call"),
            request,
            ts: 0,
            server_key: ("s".into(), "h".into()),
        }
    }

    #[test]
    fn answers_on_the_stream_complete_held_calls_in_either_order() {
        let mut s = LegacySse::default();
        // The endpoint event and a split answer.
        let first = b"event: endpoint\r\ndata: /messages/?session_id=ab\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"res";
        assert!(s.on_ingress(7, 9, first).is_empty());
        let answers = s.on_ingress(7, 9, b"ult\":{\"tools\":[{\"name\":\"a\"}]}}\r\n\r\n");
        assert_eq!(answers.len(), 1);
        let (id, answer) = answers.into_iter().next().expect("one");
        assert_eq!(id, "1");
        assert_eq!(answer.tools, vec!["a"]);
        // The answer first, then its request's event.
        assert!(s.answer(7, id, answer, 10).is_none());
        assert!(matches!(s.hold(7, held("1")), Hold::Answered(..)));
        // The event first, then the answer.
        assert!(matches!(s.hold(7, held("2")), Hold::Waiting));
        let done = s.answer(7, "2".into(), McpResponse::default(), 20);
        assert!(done.is_some());
        // Nobody answers: out after the wait, counted.
        assert!(matches!(s.hold(7, held("3")), Hold::Waiting));
        assert!(s.expire(WAIT_NS - 1).is_empty());
        assert_eq!(s.expire(WAIT_NS).len(), 1);
        assert_eq!(s.stats.unanswered, 1);
    }

    #[test]
    fn model_streams_and_noise_are_not_answers() {
        let mut s = LegacySse::default();
        let chunk = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\"}\n\ndata: [DONE]\n\n";
        assert!(s.on_ingress(1, 1, chunk).is_empty());
        assert!(
            s.on_ingress(1, 2, b"\x00\xffdata:\xfe{\"jsonrpc\"\n")
                .is_empty()
        );
        assert!(s.on_ingress(1, 3, b"{\"no\":\"data lines\"}").is_empty());
        assert!(s.lines.is_empty());
    }
}
