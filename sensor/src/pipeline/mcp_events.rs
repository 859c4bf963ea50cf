//! MCP on the pipeline: the fields of a JSON-RPC exchange, over streamable
//! HTTP (a `tool_call` built from the HTTP exchange) or over stdio (a
//! `tool_call` of its own, from the pipe traffic between an agent and its
//! child server).

use serde_json::json;

use super::Pipeline;
use crate::{
    decode::Task,
    event::Event,
    identity::mask::mask_text,
    mcp_sse::{Held, Hold},
    protocol::mcp::{self, McpRequest, McpResponse},
    session::Exchange,
    stdio::StdioCall,
};

impl Pipeline {
    /// The MCP fields of a tool call over HTTP. Returns whether the
    /// answer was in the HTTP response (not so with the legacy SSE
    /// transport, whose answers come on another stream).
    pub(super) fn mcp_fields(
        &mut self,
        event: &mut Event,
        ex: &Exchange,
        m: &McpRequest,
        session: &str,
    ) -> bool {
        let session_header = ex
            .request
            .headers
            .get_str("mcp-session-id")
            .or_else(|| {
                ex.response
                    .as_ref()
                    .and_then(|r| r.headers.get_str("mcp-session-id"))
            })
            // The session id is a bearer credential for the session: its
            // fingerprint, never the value.
            .map(|s| self.fingerprinter.fingerprint(s.as_bytes()));
        let server_key = (
            session.to_owned(),
            ex.request
                .headers
                .get_str("host")
                .unwrap_or_default()
                .to_owned(),
        );
        event
            .set("mcp.session.id", session_header)
            .set("mcp.transport", "streamable-http");
        let answer = ex
            .response
            .as_ref()
            .and_then(|r| mcp::parse_response(r, m.id.as_deref()));
        self.message_fields(event, m, answer.as_ref());
        if let Some(answer) = &answer {
            self.learn_server(&server_key, m, answer);
        }
        self.server_fields(event, &server_key);
        answer.is_some()
    }

    /// An `initialize` answer names its server for the later calls.
    fn learn_server(&mut self, key: &(String, String), m: &McpRequest, answer: &McpResponse) {
        if let (Some(name), true) = (&answer.server_name, m.method == "initialize") {
            if self.mcp_servers.len() >= 4096 {
                self.mcp_servers.clear();
            }
            self.mcp_servers
                .insert(key.clone(), (name.clone(), answer.server_version.clone()));
        }
    }

    fn server_fields(&self, event: &mut Event, key: &(String, String)) {
        if let Some((name, version)) = self.mcp_servers.get(key) {
            event
                .replace("mcp.server.name", name.clone())
                .replace("mcp.server.version", version.clone());
        }
    }

    /// A legacy SSE transport call: its event waits for the answer on the
    /// session's stream (or goes out at once when the answer came first).
    pub(super) fn hold_legacy(&mut self, pid: u32, session: String, held: Held) {
        match self.legacy_sse.hold(pid, session, held) {
            Hold::Answered(held, answer) => self.finish_legacy(held, Some(answer)),
            Hold::Waiting => {}
            Hold::Refused(held) => self.finish_legacy(held, None),
        }
    }

    /// Bytes an agent's process received: answers of held legacy calls.
    pub(super) fn scan_legacy_answers(&mut self, chunk: &crate::decode::TlsData) {
        let pid = chunk.task.pid;
        for (session, id, answer) in self.legacy_sse.on_ingress(pid, chunk.conn, &chunk.data) {
            if let Some((held, answer)) =
                self.legacy_sse
                    .answer(pid, session, id, answer, chunk.task.ts_ns)
            {
                self.finish_legacy(held, Some(answer));
            }
        }
    }

    /// Emits a held legacy call, with its answer when it came.
    pub(super) fn finish_legacy(&mut self, held: Held, answer: Option<McpResponse>) {
        let Held {
            mut event,
            request,
            ts,
            server_key,
        } = held;
        match &answer {
            Some(answer) => {
                self.answer_fields(&mut event, answer);
                self.learn_server(&server_key, &request, answer);
                self.server_fields(&mut event, &server_key);
            }
            None => {
                event.replace("event.outcome", "unknown");
            }
        }
        event.replace("mcp.transport", "sse");
        self.judge_and_emit(event, ts, None);
    }

    /// What any transport shows of a request and its answer: method, id,
    /// argument names and hash (never values), protocol version, the
    /// listed tools, and how it ended.
    fn message_fields(&self, event: &mut Event, m: &McpRequest, answer: Option<&McpResponse>) {
        event
            .set("mcp.method.name", m.method.clone())
            .set("jsonrpc.request.id", m.id.clone());
        if !m.argument_keys.is_empty() {
            event.set("mcp.tool.argument_keys", m.argument_keys.clone());
        }
        if let Some(args) = &m.arguments_json {
            event.set(
                "mcp.tool.arguments.hash",
                self.fingerprinter.fingerprint(args.as_bytes()),
            );
        }
        if let Some(v) = &m.protocol_version {
            event.replace("mcp.protocol.version", v.clone());
        }
        if let Some(answer) = answer {
            self.answer_fields(event, answer);
        }
    }

    /// How a request ended, from its answer.
    fn answer_fields(&self, event: &mut Event, answer: &McpResponse) {
        if let Some(v) = &answer.protocol_version {
            event.replace("mcp.protocol.version", v.clone());
        }
        event.set("mcp.tool.result.is_error", answer.tool_is_error);
        if !answer.tools.is_empty() {
            event.set("mcp.tools", answer.tools.clone());
        }
        if let Some((code, message)) = &answer.error {
            event
                .set("error.code", code.to_string())
                .set("error.message", mask_text(message))
                .replace("event.outcome", "failure");
        } else if answer.tool_is_error == Some(true) {
            event.replace("event.outcome", "failure");
        }
    }

    /// An MCP exchange over stdio between an agent (or a process of its
    /// tree) and the server it started: a `tool_call`, tied like any other
    /// to the model call that asked for the tool.
    pub(super) fn on_stdio_call(&mut self, call: StdioCall) {
        let Some(mark) = self.agents.get(call.client_pid).cloned() else {
            self.agents.stats.non_agent_requests += 1;
            return;
        };
        if !self.config.emits("tool_call") && self.policy.is_none() {
            return;
        }
        let m = &call.request;
        let mut event = Event::new("tool_call");
        event
            .set("event.kind", "event")
            .set("event.category", json!(["process", "api"]))
            .set("event.outcome", "success")
            .set("network.transport", "pipe")
            .set("mcp.transport", "stdio")
            .set("process.io.fd", call.client_fd)
            .set(
                "event.duration",
                call.response_ts.map(|t| t.saturating_sub(call.request_ts)),
            )
            .set("mcp.server.process.pid", call.server_pid);
        if let Some(server) = call.server_pid
            && let Some(info) = self.procs.get_or_resolve(server)
        {
            event.set("mcp.server.process.executable", info.exe.clone());
        }
        if let Some((name, version)) = &call.server {
            event
                .set("mcp.server.name", name.clone())
                .set("mcp.server.version", version.clone());
        }
        self.message_fields(&mut event, m, call.response.as_ref());
        let cause = self.agents.cause(
            &mark.session_id,
            m.tool_name.as_deref(),
            m.method == "tools/call",
            call.request_ts,
        );
        event
            .set("causation.parent_event_id", cause.parent_event_id)
            .set("causation.match", cause.matched)
            .set("gen_ai.tool.call.id", cause.tool_call_id)
            .set("gen_ai.tool.name", cause.tool_name);
        let task = Task {
            ts_ns: call.request_ts,
            pid: call.client_pid,
            tid: call.client_tid,
            cgroup_id: 0,
            uid: 0,
            gid: 0,
        };
        self.with_process(&mut event, &task);
        self.judge_and_emit(event, call.request_ts, None);
    }
}
