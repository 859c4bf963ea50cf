//! Model Context Protocol messages (JSON-RPC 2.0) in captured HTTP bodies:
//! the streamable HTTP transport POSTs one request (or a batch) and gets
//! JSON or an SSE stream of JSON-RPC messages back; the older SSE
//! transport answers on a separate stream, which this does not pair. The
//! stdio transport's messages, one per line, go through
//! [`parse_message`].
//! See https://modelcontextprotocol.io/specification (basic/transports).
//!
//! Only what an investigator needs is kept: the method, the tool name, the
//! argument names (values are reduced to a keyed hash by the caller), the
//! server's name and version from `initialize`, the tool names of
//! `tools/list`, and whether a call failed. Never argument or result
//! values.

use serde_json::Value;

use crate::protocol::{http1::Response, sse};

/// Tools listed or argument keys kept at most.
const MAX_NAMES: usize = 64;
/// Bytes of a name kept at most.
const MAX_NAME: usize = 128;

/// One JSON-RPC request (or notification) from the client. `Debug` leaves
/// the arguments out.
#[derive(Clone, PartialEq, Eq)]
pub struct McpRequest {
    pub method: String,
    /// The JSON-RPC id as text (number or string), absent for a
    /// notification.
    pub id: Option<String>,
    /// `tools/call`: the tool.
    pub tool_name: Option<String>,
    /// `tools/call`: the argument names, sorted.
    pub argument_keys: Vec<String>,
    /// `tools/call`: the arguments as canonical JSON, to be hashed by the
    /// caller and dropped. Not `Debug`-printed.
    pub arguments_json: Option<String>,
    /// `initialize`: the protocol version the client asked for.
    pub protocol_version: Option<String>,
    /// `initialize`: the client's name.
    pub client_name: Option<String>,
}

impl std::fmt::Debug for McpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpRequest")
            .field("method", &self.method)
            .field("id", &self.id)
            .field("tool_name", &self.tool_name)
            .field("argument_keys", &self.argument_keys)
            .field("protocol_version", &self.protocol_version)
            .field("client_name", &self.client_name)
            .finish_non_exhaustive()
    }
}

/// The server's answer to one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpResponse {
    /// A JSON-RPC error: code and message.
    pub error: Option<(i64, String)>,
    /// `tools/call`: `result.isError`.
    pub tool_is_error: Option<bool>,
    /// `initialize`: `serverInfo.name`, `serverInfo.version`,
    /// `protocolVersion`.
    pub server_name: Option<String>,
    pub server_version: Option<String>,
    pub protocol_version: Option<String>,
    /// `tools/list`: the tool names.
    pub tools: Vec<String>,
}

fn short(s: &str) -> String {
    s.chars().take(MAX_NAME).collect()
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(short(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The JSON-RPC requests in a request body: an object or a batch array.
/// `None` when the body is not JSON-RPC 2.0 with a method.
pub fn parse_requests(body: &[u8]) -> Option<Vec<McpRequest>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let items = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    let out: Vec<McpRequest> = items.iter().filter_map(request).collect();
    (!out.is_empty()).then_some(out)
}

fn request(v: &Value) -> Option<McpRequest> {
    if v.get("jsonrpc")?.as_str()? != "2.0" {
        return None;
    }
    let method = short(v.get("method")?.as_str()?);
    let params = v.get("params");
    let mut req = McpRequest {
        method,
        id: v.get("id").and_then(id_text),
        tool_name: None,
        argument_keys: Vec::new(),
        arguments_json: None,
        protocol_version: None,
        client_name: None,
    };
    match req.method.as_str() {
        "tools/call" => {
            req.tool_name = params
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .map(short);
            if let Some(args) = params.and_then(|p| p.get("arguments")) {
                if let Some(map) = args.as_object() {
                    let mut keys: Vec<String> =
                        map.keys().take(MAX_NAMES).map(|k| short(k)).collect();
                    keys.sort();
                    req.argument_keys = keys;
                }
                // serde_json's maps are sorted (no preserve_order): the
                // text is canonical enough to compare hashes.
                req.arguments_json = serde_json::to_string(args).ok();
            }
        }
        "initialize" => {
            req.protocol_version = params
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str)
                .map(short);
            req.client_name = params
                .and_then(|p| p.pointer("/clientInfo/name"))
                .and_then(Value::as_str)
                .map(short);
        }
        _ => {}
    }
    Some(req)
}

/// The answer to the request with `id` (or the only answer, when `id` is
/// `None`), from a JSON body or an SSE stream of JSON-RPC messages.
pub fn parse_response(resp: &Response, id: Option<&str>) -> Option<McpResponse> {
    let messages: Vec<Value> = if resp.is_event_stream {
        let mut body = resp.body.clone();
        if body.len() as u64 == resp.body_size {
            body.extend_from_slice(&resp.body_tail);
        }
        sse::parse_events(&body)
            .iter()
            .filter_map(|e| serde_json::from_str(&e.data).ok())
            .collect()
    } else {
        match serde_json::from_slice::<Value>(&resp.body).ok()? {
            Value::Array(items) => items,
            one => vec![one],
        }
    };
    let answer = messages.iter().find(|m| {
        is_response(m)
            && match id {
                Some(id) => m.get("id").and_then(id_text).as_deref() == Some(id),
                None => true,
            }
    })?;
    Some(response_of(answer))
}

/// Whether `m` is a JSON-RPC 2.0 response (a result or an error).
fn is_response(m: &Value) -> bool {
    m.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
        && (m.get("result").is_some() || m.get("error").is_some())
}

/// One JSON-RPC message on its own (a line of the stdio transport).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request or notification (no id).
    Request(McpRequest),
    /// A response and the id it answers.
    Response(Option<String>, McpResponse),
}

/// Reads one JSON-RPC message; `None` when it is not JSON-RPC 2.0.
pub fn parse_message(text: &[u8]) -> Option<Message> {
    let v: Value = serde_json::from_slice(text).ok()?;
    if v.get("method").is_some() {
        return request(&v).map(Message::Request);
    }
    is_response(&v).then(|| Message::Response(v.get("id").and_then(id_text), response_of(&v)))
}

fn response_of(answer: &Value) -> McpResponse {
    let mut out = McpResponse::default();
    if let Some(err) = answer.get("error") {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .map(short)
            .unwrap_or_default();
        out.error = Some((code, message));
    }
    if let Some(result) = answer.get("result") {
        out.tool_is_error = result.get("isError").and_then(Value::as_bool);
        out.server_name = result
            .pointer("/serverInfo/name")
            .and_then(Value::as_str)
            .map(short);
        out.server_version = result
            .pointer("/serverInfo/version")
            .and_then(Value::as_str)
            .map(short);
        out.protocol_version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .map(short);
        if let Some(tools) = result.get("tools").and_then(Value::as_array) {
            out.tools = tools
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .take(MAX_NAMES)
                .map(short)
                .collect();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;
    use crate::protocol::http1::Headers;

    fn response(body: &str, sse: bool) -> Response {
        Response {
            status: 200,
            reason: "OK".into(),
            version: 1,
            headers: Headers::default(),
            body: body.as_bytes().to_vec(),
            body_size: body.len() as u64,
            body_truncated: false,
            wire_size: 0,
            first_ts: 0,
            last_ts: 0,
            is_event_stream: sse,
            chunked: false,
            body_tail: Vec::new(),
        }
    }

    #[test]
    fn tools_call_keeps_names_not_values() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"send_email","arguments":{"to":"a@b.c","subject":"s","body":"secret text"}}}"#;
        let reqs = parse_requests(body).unwrap();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(r.method, "tools/call");
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(r.tool_name.as_deref(), Some("send_email"));
        assert_eq!(r.argument_keys, vec!["body", "subject", "to"]);
        let debug = format!("{r:?}");
        assert!(debug.contains("send_email"));
        assert!(!debug.contains("secret text"), "{debug}");
        assert!(!debug.contains("a@b.c"), "{debug}");
    }

    #[test]
    fn initialize_and_batch_and_notifications() {
        let body = br#"[{"jsonrpc":"2.0","id":"a1","method":"initialize","params":{"protocolVersion":"2025-06-18","clientInfo":{"name":"agent","version":"1"}}},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
        let reqs = parse_requests(body).unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].protocol_version.as_deref(), Some("2025-06-18"));
        assert_eq!(reqs[0].client_name.as_deref(), Some("agent"));
        assert_eq!(reqs[1].id, None);
        assert!(parse_requests(br#"{"model":"gpt-4o"}"#).is_none());
        assert!(parse_requests(b"not json").is_none());
        assert!(parse_requests(br#"{"jsonrpc":"1.0","method":"x"}"#).is_none());
    }

    #[test]
    fn responses_from_json_and_sse() {
        let init = r#"{"jsonrpc":"2.0","id":"a1","result":{"protocolVersion":"2025-06-18","serverInfo":{"name":"orders","version":"1.2.0"},"capabilities":{}}}"#;
        let r = parse_response(&response(init, false), Some("a1")).unwrap();
        assert_eq!(r.server_name.as_deref(), Some("orders"));
        assert_eq!(r.server_version.as_deref(), Some("1.2.0"));
        let sse = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"isError\":true}}\n\n";
        let r = parse_response(&response(sse, true), Some("7")).unwrap();
        assert_eq!(r.tool_is_error, Some(true));
        let list = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"lookup_order"},{"name":"send_email"}]}}"#;
        let r = parse_response(&response(list, false), Some("2")).unwrap();
        assert_eq!(r.tools, vec!["lookup_order", "send_email"]);
        let err = r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"Unknown tool"}}"#;
        let r = parse_response(&response(err, false), Some("3")).unwrap();
        assert_eq!(r.error, Some((-32602, "Unknown tool".into())));
        assert!(parse_response(&response(err, false), Some("4")).is_none());
        assert!(parse_response(&response("garbage", false), None).is_none());
    }
}
