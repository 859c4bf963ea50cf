//! Agents: processes that call models, and everything they start.
//!
//! A process becomes an agent when it makes a model call, or when its
//! executable is in the configured `agent_executables`. The mark goes to
//! its descendants, those running already (MCP servers an agent starts
//! before its first model call) and those forked later, so a tool run as a
//! subprocess is part of the agent's session. The session id is stable for
//! the life of the agent process that was marked first in the tree (its
//! root), and the same on every event of the tree.
//!
//! Each session remembers its latest model call and the tool calls the
//! model asked for, so that what the agent does next can point back at the
//! call that asked for it (see [`Sessions::cause`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use sha2::{Digest as _, Sha256};

use crate::provider::ToolCall;

/// Processes marked at most (threads of marked processes included).
const MAX_MARKS: usize = 65_536;
/// Tool calls waiting for the action that carries them out, per session.
const MAX_PENDING: usize = 64;
/// A requested tool call older than this is not matched any more (ns).
const PENDING_TTL_NS: u64 = 30 * 60 * 1_000_000_000;

/// Why a process is an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkedBy {
    ModelCall,
    Configured,
}

impl MarkedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelCall => "model_call",
            Self::Configured => "configured",
        }
    }
}

/// The agent session a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMark {
    pub session_id: String,
    /// The process whose mark the session started with.
    pub root_pid: u32,
    pub marked_by: MarkedBy,
}

/// A tool call the model asked for, waiting for the action.
#[derive(Debug, Clone)]
struct Pending {
    call: ToolCall,
    model_event_id: String,
    ts_ns: u64,
}

#[derive(Debug, Default)]
struct SessionState {
    last_model_call: Option<String>,
    pending: VecDeque<Pending>,
}

/// What an action is tied to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cause {
    /// `event.id` of the model call that asked for this action (or, when no
    /// requested call matched, the session's latest model call).
    pub parent_event_id: Option<String>,
    pub tool_call_id: Option<String>,
    pub tool_name: Option<String>,
    /// How the tool call was matched: `tool_name` (an MCP call of the
    /// tool the model named), `order` (the oldest requested call no action
    /// has taken yet), or `session` (no requested call: the latest model
    /// call of the session).
    pub matched: Option<&'static str>,
}

#[derive(Default)]
pub struct Agents {
    marks: HashMap<u32, Arc<AgentMark>>,
    sessions: HashMap<String, SessionState>,
    /// Executable paths or names that make a process an agent.
    configured: Vec<String>,
    host: String,
    pub stats: AgentStats,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct AgentStats {
    pub agents: u64,
    pub marked_processes: u64,
    pub tool_calls: u64,
    pub tool_calls_matched: u64,
    pub non_agent_requests: u64,
}

impl Agents {
    pub fn new(configured: &[String], host: &str) -> Self {
        Self {
            configured: configured.to_vec(),
            host: host.to_owned(),
            ..Self::default()
        }
    }

    pub fn get(&self, pid: u32) -> Option<&Arc<AgentMark>> {
        self.marks.get(&pid)
    }

    /// A task was forked: it inherits its parent's mark; a pid reused by
    /// an unmarked parent's child loses the old one.
    pub fn on_fork(&mut self, parent: u32, child: u32) {
        match self.marks.get(&parent).cloned() {
            Some(mark) if self.marks.len() < MAX_MARKS => {
                self.marks.insert(child, mark);
            }
            _ => {
                self.marks.remove(&child);
            }
        }
    }

    /// A process ran `exe`: a configured agent executable starts a
    /// session. Returns true when the process was newly marked.
    pub fn on_exec(&mut self, pid: u32, exe: &str, start_ns: u64) -> bool {
        if self.marks.contains_key(&pid) || self.configured.is_empty() {
            return false;
        }
        let name = exe.rsplit('/').next().unwrap_or(exe);
        if !self.configured.iter().any(|c| c == exe || c == name) {
            return false;
        }
        self.start(pid, start_ns, MarkedBy::Configured);
        true
    }

    /// `pid` made a model call: it becomes an agent unless it is one.
    /// Returns true when it was newly marked (its descendants, listed by
    /// the caller, are then to be marked with [`Self::inherit`]).
    pub fn on_model_call(&mut self, pid: u32, start_ns: u64) -> bool {
        if self.marks.contains_key(&pid) {
            return false;
        }
        self.start(pid, start_ns, MarkedBy::ModelCall);
        true
    }

    fn start(&mut self, pid: u32, start_ns: u64, by: MarkedBy) {
        let mut h = Sha256::new();
        h.update(self.host.as_bytes());
        h.update(pid.to_le_bytes());
        h.update(start_ns.to_le_bytes());
        let digest = h.finalize();
        let session_id = crate::credential::hex(&digest[..8]);
        self.stats.agents += 1;
        self.stats.marked_processes += 1;
        self.marks.insert(
            pid,
            Arc::new(AgentMark {
                session_id,
                root_pid: pid,
                marked_by: by,
            }),
        );
    }

    /// Gives `pid`'s mark to processes already running under it.
    pub fn inherit(&mut self, pid: u32, descendants: &[u32]) {
        let Some(mark) = self.marks.get(&pid).cloned() else {
            return;
        };
        for d in descendants {
            if self.marks.len() >= MAX_MARKS {
                break;
            }
            if !self.marks.contains_key(d) {
                self.stats.marked_processes += 1;
                self.marks.insert(*d, Arc::clone(&mark));
            }
        }
    }

    pub fn on_exit(&mut self, pid: u32) {
        if let Some(mark) = self.marks.remove(&pid)
            && mark.root_pid == pid
        {
            self.sessions.remove(&mark.session_id);
        }
    }

    /// A model call of the session, with the tool calls its response asked
    /// for.
    pub fn model_call(&mut self, session: &str, event_id: &str, calls: &[ToolCall], ts_ns: u64) {
        let state = self.sessions.entry(session.to_owned()).or_default();
        state.last_model_call = Some(event_id.to_owned());
        for call in calls {
            if state.pending.len() >= MAX_PENDING {
                state.pending.pop_front();
            }
            state.pending.push_back(Pending {
                call: call.clone(),
                model_event_id: event_id.to_owned(),
                ts_ns,
            });
        }
    }

    /// What an action of the session at `ts_ns` is tied to. An action that
    /// carries out a tool call (`consumes`: an MCP `tools/call` or an HTTP
    /// request) takes the requested call with the same tool name if it
    /// names one, else the oldest requested call not taken yet.
    pub fn cause(
        &mut self,
        session: &str,
        tool: Option<&str>,
        consumes: bool,
        ts_ns: u64,
    ) -> Cause {
        self.stats.tool_calls += 1;
        let Some(state) = self.sessions.get_mut(session) else {
            return Cause::default();
        };
        state
            .pending
            .retain(|p| ts_ns.saturating_sub(p.ts_ns) < PENDING_TTL_NS);
        let found = if !consumes {
            None
        } else if let Some(tool) = tool {
            state
                .pending
                .iter()
                .position(|p| p.call.name == tool)
                .map(|i| (i, "tool_name"))
        } else {
            (!state.pending.is_empty()).then_some((0, "order"))
        };
        match found.and_then(|(i, how)| Some((state.pending.remove(i)?, how))) {
            Some((p, how)) => {
                self.stats.tool_calls_matched += 1;
                Cause {
                    parent_event_id: Some(p.model_event_id),
                    tool_call_id: p.call.id,
                    tool_name: Some(p.call.name),
                    matched: Some(how),
                }
            }
            None => Cause {
                parent_event_id: state.last_model_call.clone(),
                tool_call_id: None,
                tool_name: tool.map(str::to_owned),
                matched: state.last_model_call.as_ref().map(|_| "session"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    fn call(id: &str, name: &str) -> ToolCall {
        ToolCall {
            id: Some(id.into()),
            name: name.into(),
            argument_keys: vec![],
        }
    }

    #[test]
    fn marks_go_to_children_old_and_new() {
        let mut a = Agents::new(&[], "h");
        a.on_fork(10, 11);
        assert!(a.get(11).is_none());
        assert!(a.on_model_call(10, 5));
        assert!(!a.on_model_call(10, 5));
        a.inherit(10, &[11]);
        a.on_fork(11, 12);
        let root = a.get(10).unwrap().session_id.clone();
        assert_eq!(a.get(11).unwrap().session_id, root);
        assert_eq!(a.get(12).unwrap().session_id, root);
        assert_eq!(a.get(12).unwrap().root_pid, 10);
        // A reused pid under an unmarked parent is not an agent.
        a.on_fork(1, 12);
        assert!(a.get(12).is_none());
        // Same pid, other start time: another session.
        let mut b = Agents::new(&[], "h");
        b.on_model_call(10, 6);
        assert_ne!(b.get(10).unwrap().session_id, root);
    }

    #[test]
    fn configured_executables() {
        let mut a = Agents::new(&["claude".into(), "/opt/agent/bin/run".into()], "h");
        assert!(a.on_exec(5, "/usr/local/bin/claude", 1));
        assert!(a.on_exec(6, "/opt/agent/bin/run", 1));
        assert!(!a.on_exec(7, "/usr/bin/run", 1));
        assert_eq!(a.get(5).unwrap().marked_by, MarkedBy::Configured);
    }

    #[test]
    fn actions_match_requested_tool_calls() {
        let mut a = Agents::new(&[], "h");
        a.on_model_call(1, 0);
        let s = a.get(1).unwrap().session_id.clone();
        a.model_call(
            &s,
            "m1",
            &[call("c1", "get_weather"), call("c2", "lookup_order")],
            10,
        );
        // MCP by name, out of order.
        let c = a.cause(&s, Some("lookup_order"), true, 20);
        assert_eq!(c.tool_call_id.as_deref(), Some("c2"));
        assert_eq!(c.parent_event_id.as_deref(), Some("m1"));
        assert_eq!(c.matched, Some("tool_name"));
        // HTTP: the oldest left.
        let c = a.cause(&s, None, true, 30);
        assert_eq!(c.tool_call_id.as_deref(), Some("c1"));
        assert_eq!(c.tool_name.as_deref(), Some("get_weather"));
        assert_eq!(c.matched, Some("order"));
        // Nothing left: tied to the latest model call only.
        let c = a.cause(&s, None, true, 40);
        assert_eq!(c.tool_call_id, None);
        assert_eq!(c.parent_event_id.as_deref(), Some("m1"));
        assert_eq!(c.matched, Some("session"));
        // An unknown session: nothing.
        assert_eq!(a.cause("nope", None, true, 1), Cause::default());
    }
}
