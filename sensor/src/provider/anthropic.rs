//! Anthropic Messages API response extraction, plain JSON or SSE.

use serde_json::Value;

use super::json::{self, StreamItem, u64_at};
use super::tools::{self, Assembler, Slot};
use super::{ModelCallInfo, ToolCall};
use crate::protocol::http1::Response;

pub(super) fn response(resp: &Response, info: &mut ModelCallInfo) {
    if resp.is_event_stream {
        let mut calls = Assembler::new(json::is_whole(resp));
        for item in json::sse_items(resp, info) {
            let StreamItem::Payload(ev, v) = item else {
                calls.lost();
                continue;
            };
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
                "content_block_start" => block_start(&v, &mut calls),
                "content_block_delta" => block_delta(&v, &mut calls),
                "content_block_stop" => {
                    let slot = block_slot(&v);
                    calls.finish(|s| s == slot);
                }
                _ => {}
            }
        }
        info.response_tool_calls = calls.into_calls();
    } else if let Some(v) = json::response_json(resp, info) {
        message_object(&v, info);
        push_stop_reason(Some(&v), info);
        info.response_tool_calls = content_calls(&v);
    } else if let Some(v) = json::truncated_json(resp) {
        // A cut `input` is marked by `close_truncated`: its keys are left out.
        info.response_tool_calls = content_calls(&v);
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

/// The `tool_use` blocks of a message's `content`, with the keys of their
/// `input` object.
fn content_calls(m: &Value) -> Vec<ToolCall> {
    let mut calls = Vec::new();
    let content = m.get("content").and_then(Value::as_array);
    for block in content.into_iter().flatten() {
        if block.get("type").and_then(Value::as_str) == Some("tool_use") {
            let keys = tools::keys_of(block.get("input"));
            let (id, name) = (tools::name_at(block, "id"), tools::name_at(block, "name"));
            tools::push_call(&mut calls, id, name, keys);
        }
    }
    calls
}

fn block_slot(v: &Value) -> Slot {
    (0, u64_at(v, "index").unwrap_or(u64::MAX))
}

/// `content_block_start` of a `tool_use` block: its id and name. Its
/// `input` is always `{}` here; the real one follows in pieces.
fn block_start(v: &Value, calls: &mut Assembler) {
    let Some(block) = v.get("content_block") else {
        return;
    };
    if block.get("type").and_then(Value::as_str) == Some("tool_use") {
        let id = block.get("id").and_then(Value::as_str);
        let name = block.get("name").and_then(Value::as_str);
        calls.start(block_slot(v), id, name);
    }
}

/// `content_block_delta` with an `input_json_delta`: a piece of the input's
/// JSON text, to append to the block's.
fn block_delta(v: &Value, calls: &mut Assembler) {
    let Some(delta) = v.get("delta") else {
        return;
    };
    if delta.get("type").and_then(Value::as_str) == Some("input_json_delta")
        && let Some(piece) = delta.get("partial_json").and_then(Value::as_str)
    {
        calls.append(block_slot(v), piece);
    }
}
