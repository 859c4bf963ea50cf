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
/// Streams followed at once at most.
const MAX_STREAMS: usize = 256;

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

/// An event stream being read.
#[derive(Default)]
struct Stream {
    /// The unfinished line.
    line: Vec<u8>,
    /// The `event:` of the event being read.
    event: Vec<u8>,
    /// The session its `endpoint` event named: only such a stream carries
    /// legacy answers.
    session: Option<String>,
}

/// Keyed by (pid, session, JSON-RPC id): each session numbers its
/// requests from 0.
type Key = (u32, String, String);

#[derive(Default)]
pub struct LegacySse {
    streams: HashMap<(u32, u64), Stream>,
    held: HashMap<Key, Held>,
    answers: HashMap<Key, (McpResponse, u64)>,
    pub stats: SseStats,
}

/// The session a message endpoint URL names: the value of its query
/// parameter whose name says session (`session_id`, `sessionId`), else
/// the whole endpoint.
pub fn session_of(endpoint: &str) -> String {
    let query = endpoint.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.to_ascii_lowercase().contains("session"))
        .map_or_else(|| endpoint.to_owned(), |(_, v)| v.to_owned())
}

impl LegacySse {
    /// Bytes an agent's process received: the JSON-RPC answers on `data:`
    /// lines of a legacy session's stream, with the session and id.
    pub fn on_ingress(
        &mut self,
        pid: u32,
        conn: u64,
        data: &[u8],
    ) -> Vec<(String, String, McpResponse)> {
        let key = (pid, conn);
        if !self.streams.contains_key(&key) {
            // A stream starts with its `endpoint` event.
            if memchr::memmem::find(data, b"event: endpoint").is_none()
                && memchr::memmem::find(data, b"event:endpoint").is_none()
            {
                return Vec::new();
            }
            if self.streams.len() >= MAX_STREAMS {
                self.streams.clear();
            }
        }
        let stream = self.streams.entry(key).or_default();
        let mut out = Vec::new();
        for piece in data.split_inclusive(|&b| b == b'\n') {
            if stream.line.len() + piece.len() > MAX_LINE {
                self.stats.lines_too_long += 1;
                stream.line.clear();
                continue;
            }
            stream.line.extend_from_slice(piece);
            if stream.line.last() != Some(&b'\n') {
                continue;
            }
            let line = std::mem::take(&mut stream.line);
            let line = line.trim_ascii();
            if line.is_empty() {
                stream.event.clear();
            } else if let Some(name) = line.strip_prefix(b"event:") {
                stream.event = name.trim_ascii().to_vec();
            } else if let Some(payload) = line.strip_prefix(b"data:") {
                let payload = payload.trim_ascii();
                if stream.event == b"endpoint" {
                    stream.session = Some(session_of(&String::from_utf8_lossy(payload)));
                } else if let Some(session) = &stream.session
                    && let Some(Message::Response(Some(id), answer)) = mcp::parse_message(payload)
                {
                    self.stats.answers_read += 1;
                    out.push((session.clone(), id, answer));
                }
            }
        }
        out
    }

    /// A request's event whose HTTP answer was only `202 Accepted`: the
    /// answer it already has (read first), else it waits. Refused (to go
    /// out as it is) without an id or when too many wait.
    pub fn hold(&mut self, pid: u32, session: String, held: Held) -> Hold {
        let Some(id) = held.request.id.clone() else {
            return Hold::Refused(held);
        };
        let key = (pid, session, id);
        if let Some((answer, _)) = self.answers.remove(&key) {
            self.stats.paired += 1;
            return Hold::Answered(held, answer);
        }
        if self.held.len() >= MAX_HELD {
            self.stats.unanswered += 1;
            return Hold::Refused(held);
        }
        self.held.insert(key, held);
        Hold::Waiting
    }

    /// An answer read from a stream: the held event it completes, if any.
    pub fn answer(
        &mut self,
        pid: u32,
        session: String,
        id: String,
        answer: McpResponse,
        ts: u64,
    ) -> Option<(Held, McpResponse)> {
        let key = (pid, session, id);
        match self.held.remove(&key) {
            Some(held) => {
                self.stats.paired += 1;
                Some((held, answer))
            }
            None => {
                if self.answers.len() < MAX_HELD {
                    self.answers.insert(key, (answer, ts));
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
        let late: Vec<Key> = self
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
        self.streams.retain(|(p, _), _| *p != pid);
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
        let first = b"event: endpoint\r\ndata: /messages/?session_id=ab12\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"res";
        assert!(s.on_ingress(7, 9, first).is_empty());
        let answers = s.on_ingress(7, 9, b"ult\":{\"tools\":[{\"name\":\"a\"}]}}\r\n\r\n");
        assert_eq!(answers.len(), 1);
        let (session, id, answer) = answers.into_iter().next().expect("one");
        assert_eq!((session.as_str(), id.as_str()), ("ab12", "1"));
        assert_eq!(answer.tools, vec!["a"]);
        let session_of_post = session_of("/messages/?session_id=ab12");
        // The answer first, then its request's event.
        assert!(s.answer(7, session.clone(), id, answer, 10).is_none());
        assert!(matches!(
            s.hold(7, session_of_post, held("1")),
            Hold::Answered(..)
        ));
        // Another session's call of the same id does not take it.
        assert!(matches!(
            s.hold(7, "other".into(), held("2")),
            Hold::Waiting
        ));
        // The event first, then the answer.
        assert!(matches!(
            s.hold(7, session.clone(), held("2")),
            Hold::Waiting
        ));
        let done = s.answer(7, session.clone(), "2".into(), McpResponse::default(), 20);
        assert!(done.is_some());
        // Nobody answers: out after the wait, counted.
        assert_eq!(s.expire(WAIT_NS).len(), 1, "the other session's call");
        let mut late = held("3");
        late.ts = WAIT_NS;
        assert!(matches!(s.hold(7, session, late), Hold::Waiting));
        assert_eq!(s.expire(2 * WAIT_NS).len(), 1);
        assert_eq!(s.stats.unanswered, 2);
        assert_eq!(session_of("/messages?sessionId=Z9"), "Z9");
        assert_eq!(session_of("/msg"), "/msg");
    }

    #[test]
    fn streams_without_an_endpoint_are_not_read() {
        let mut s = LegacySse::default();
        // A model's stream and a streamable-HTTP answer (no endpoint).
        let chunk = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\"}\n\ndata: [DONE]\n\n";
        assert!(s.on_ingress(1, 1, chunk).is_empty());
        let mcp = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        assert!(s.on_ingress(1, 2, mcp).is_empty());
        assert!(
            s.on_ingress(1, 3, b"\x00\xffdata:\xfe{\"jsonrpc\"\n")
                .is_empty()
        );
        assert!(s.streams.is_empty());
    }
}
