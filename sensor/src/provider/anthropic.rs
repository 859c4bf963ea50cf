//! Anthropic Messages API response extraction, plain JSON or SSE.

use serde_json::Value;

use super::ModelCallInfo;
use super::json::{self, u64_at};
use crate::protocol::http1::Response;

pub(super) fn response(resp: &Response, info: &mut ModelCallInfo) {
    if resp.is_event_stream {
        for (ev, v) in json::sse_payloads(resp, info) {
            // The payload's `type` is authoritative; the SSE event name repeats it.
            let ty = v.get("type").and_then(Value::as_str);
            match ty.or(ev.event.as_deref()).unwrap_or_default() {
                "message_start" => {
                    if let Some(m) = v.get("message") {
                        message_object(m, info);
                    }
                }
                "message_delta" => {
                    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                        apply_usage(u, info);
                    }
                    push_stop_reason(v.get("delta"), info);
                }
                _ => {}
            }
        }
    } else if let Some(v) = json::response_json(resp, info) {
        message_object(&v, info);
        push_stop_reason(Some(&v), info);
    }
    if info.output_tokens.is_none() && resp.body_truncated {
        let usage = json::last_usage_object(&resp.body_tail)
            .or_else(|| json::last_usage_object(&resp.body));
        if let Some(u) = usage {
            apply_usage(&u, info);
        }
    }
}

/// A `message` object (non-streamed body or `message_start.message`).
fn message_object(m: &Value, info: &mut ModelCallInfo) {
    let Some(obj) = m.as_object() else {
        return;
    };
    if let Some(model) = json::str_at(obj, "model") {
        info.response_model = Some(model);
    }
    if let Some(id) = json::str_at(obj, "id") {
        info.response_id = Some(id);
    }
    if let Some(u) = obj.get("usage").filter(|u| u.is_object()) {
        apply_usage(u, info);
    }
}

/// `usage.input_tokens` excludes cache reads/writes, which Anthropic reports
/// separately; we report it as is. `message_delta` counts are cumulative, so
/// the last one seen wins.
fn apply_usage(u: &Value, info: &mut ModelCallInfo) {
    if let Some(n) = u64_at(u, "input_tokens") {
        info.input_tokens = Some(n);
    }
    if let Some(n) = u64_at(u, "output_tokens") {
        info.output_tokens = Some(n);
    }
}

fn push_stop_reason(holder: Option<&Value>, info: &mut ModelCallInfo) {
    let reason = holder
        .and_then(|d| d.get("stop_reason"))
        .and_then(Value::as_str);
    if let Some(r) = reason {
        info.finish_reasons.push(r.to_owned());
    }
}
