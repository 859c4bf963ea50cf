//! OpenAI-family response extraction: chat completions, completions,
//! embeddings and the Responses API, plain JSON or SSE.

use serde_json::Value;

use super::json::{self, StreamItem, u64_at};
use super::tools::{self, Assembler, Slot};
use super::{ApiShape, ModelCallInfo, ToolCall};
use crate::protocol::http1::Response;

/// Tool index of a legacy `function_call`, which has none.
const LEGACY_FUNCTION_CALL: u64 = u64::MAX;

pub(super) fn response(shape: ApiShape, resp: &Response, info: &mut ModelCallInfo) {
    let responses_api = shape == ApiShape::OpenAiResponses;
    if resp.is_event_stream {
        let mut calls = Assembler::new(json::is_whole(resp));
        // The tool calls of a terminal Responses API event's `output`.
        let mut final_calls = None;
        for item in json::sse_items(resp, info) {
            let StreamItem::Payload(ev, v) = item else {
                calls.lost();
                continue;
            };
            if responses_api {
                let ty = v.get("type").and_then(Value::as_str);
                let ty = ty.or(ev.event.as_deref()).unwrap_or_default();
                responses_event(ty, &v, info);
                responses_event_calls(ty, &v, &mut calls, &mut final_calls);
            } else {
                completion_object(shape, &v, info);
                chunk_calls(&v, &mut calls);
            }
        }
        info.response_tool_calls = final_calls.unwrap_or_else(|| calls.into_calls());
    } else if let Some(v) = json::response_json(resp, info) {
        if responses_api {
            responses_object(&v, true, info);
            info.response_tool_calls = output_calls(&v);
        } else {
            completion_object(shape, &v, info);
            info.response_tool_calls = message_calls(&v);
        }
    } else if let Some(v) = json::truncated_json(resp) {
        // Whole calls keep their keys; cut ones keep what they have of id
        // and name (`close_truncated` drops cut strings).
        info.response_tool_calls = if responses_api {
            output_calls(&v)
        } else {
            message_calls(&v)
        };
    }
    if info.input_tokens.is_none() && resp.body_truncated {
        // Usage sits at the end of a body; look for it in the raw bytes.
        let usage = json::last_usage_object(&resp.body_tail)
            .or_else(|| json::last_usage_object(&resp.body));
        if let Some(u) = usage {
            apply_usage(shape, &u, info);
        }
    }
}

/// A chat/completions/embeddings response object or stream chunk. Model and
/// id are taken from the first object carrying them; usage from the last one
/// with a non-null `usage` (the final chunk with `include_usage`).
fn completion_object(shape: ApiShape, v: &Value, info: &mut ModelCallInfo) {
    let Some(obj) = v.as_object() else {
        return;
    };
    if info.response_model.is_none() {
        info.response_model = json::str_at(obj, "model");
    }
    if info.response_id.is_none() {
        info.response_id = json::str_at(obj, "id");
    }
    if let Some(u) = obj.get("usage").filter(|u| u.is_object()) {
        apply_usage(shape, u, info);
    }
    let choices = obj.get("choices").and_then(Value::as_array);
    for choice in choices.into_iter().flatten() {
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            info.finish_reasons.push(r.to_owned());
        }
    }
}

fn apply_usage(shape: ApiShape, u: &Value, info: &mut ModelCallInfo) {
    // Prefer the shape's own names, accept the other family's as a fallback
    // for compatible servers that mix them.
    let (inp, out) = match shape {
        ApiShape::OpenAiResponses => (
            u64_at(u, "input_tokens").or_else(|| u64_at(u, "prompt_tokens")),
            u64_at(u, "output_tokens").or_else(|| u64_at(u, "completion_tokens")),
        ),
        _ => (
            u64_at(u, "prompt_tokens").or_else(|| u64_at(u, "input_tokens")),
            u64_at(u, "completion_tokens").or_else(|| u64_at(u, "output_tokens")),
        ),
    };
    if inp.is_some() {
        info.input_tokens = inp;
    }
    if shape != ApiShape::OpenAiEmbeddings && out.is_some() {
        info.output_tokens = out;
    }
}

/// A Responses API stream event: lifecycle events carry the `response`.
fn responses_event(ty: &str, v: &Value, info: &mut ModelCallInfo) {
    let Some(r) = v.get("response") else {
        return;
    };
    let terminal = matches!(
        ty,
        "response.completed" | "response.incomplete" | "response.failed" | "response.cancelled"
    );
    responses_object(r, terminal, info);
}

/// A Responses API `response` object. Its terminal `status` (or the reason
/// it is incomplete, e.g. `max_output_tokens`) is reported as finish reason.
fn responses_object(r: &Value, terminal: bool, info: &mut ModelCallInfo) {
    let Some(obj) = r.as_object() else {
        return;
    };
    if let Some(m) = json::str_at(obj, "model") {
        info.response_model = Some(m);
    }
    if let Some(id) = json::str_at(obj, "id") {
        info.response_id = Some(id);
    }
    if let Some(u) = obj.get("usage").filter(|u| u.is_object()) {
        apply_usage(ApiShape::OpenAiResponses, u, info);
    }
    let status = obj.get("status").and_then(Value::as_str);
    if let (true, Some(status)) = (terminal, status) {
        let reason = obj
            .get("incomplete_details")
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or(status);
        info.finish_reasons.push(reason.to_owned());
    }
}

/// Tool calls of a chat completion: `choices[].message.tool_calls[]`
/// (`function` calls with JSON text `arguments`, `custom` calls with free
/// text `input`), and the legacy `choices[].message.function_call`.
fn message_calls(v: &Value) -> Vec<ToolCall> {
    let mut calls = Vec::new();
    let choices = v.get("choices").and_then(Value::as_array);
    for message in choices
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("message"))
    {
        let tool_calls = message.get("tool_calls").and_then(Value::as_array);
        for tc in tool_calls.into_iter().flatten() {
            let id = tools::name_at(tc, "id");
            if let Some(f) = tc.get("function") {
                let keys = tools::keys_of(f.get("arguments"));
                tools::push_call(&mut calls, id, tools::name_at(f, "name"), keys);
            } else if let Some(c) = tc.get("custom") {
                tools::push_call(&mut calls, id, tools::name_at(c, "name"), Vec::new());
            }
        }
        if let Some(f) = message.get("function_call") {
            let keys = tools::keys_of(f.get("arguments"));
            tools::push_call(&mut calls, None, tools::name_at(f, "name"), keys);
        }
    }
    calls
}

/// The tool call deltas of a chat completion chunk. The first delta of a
/// call carries its id and name, the next ones pieces of `arguments`; a
/// choice's `finish_reason` ends its calls.
fn chunk_calls(v: &Value, calls: &mut Assembler) {
    let choices = v.get("choices").and_then(Value::as_array);
    for (pos, choice) in choices.into_iter().flatten().enumerate() {
        let c = u64_at(choice, "index").unwrap_or(pos as u64);
        let delta = choice.get("delta");
        let tool_calls = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array);
        for (j, tc) in tool_calls.into_iter().flatten().enumerate() {
            let slot: Slot = (c, u64_at(tc, "index").unwrap_or(j as u64));
            let id = tc.get("id").and_then(Value::as_str);
            let f = tc.get("function");
            let name = f
                .or_else(|| tc.get("custom"))
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            let args = f.and_then(|f| f.get("arguments")).and_then(Value::as_str);
            calls.piece(slot, id, name, args.unwrap_or_default());
        }
        if let Some(f) = delta.and_then(|d| d.get("function_call")) {
            let name = f.get("name").and_then(Value::as_str);
            let args = f.get("arguments").and_then(Value::as_str);
            calls.piece(
                (c, LEGACY_FUNCTION_CALL),
                None,
                name,
                args.unwrap_or_default(),
            );
        }
        if choice.get("finish_reason").is_some_and(Value::is_string) {
            calls.finish(|slot| slot.0 == c);
        }
    }
}

/// Tool calls of a Responses API `response`: its `output[]` items of type
/// `function_call` (JSON text `arguments`) and `custom_tool_call` (free
/// text `input`).
fn output_calls(r: &Value) -> Vec<ToolCall> {
    let mut calls = Vec::new();
    let output = r.get("output").and_then(Value::as_array);
    for item in output.into_iter().flatten() {
        let keys = match item.get("type").and_then(Value::as_str) {
            Some("function_call") => tools::keys_of(item.get("arguments")),
            Some("custom_tool_call") => Vec::new(),
            _ => continue,
        };
        let (id, name) = (
            tools::name_at(item, "call_id"),
            tools::name_at(item, "name"),
        );
        tools::push_call(&mut calls, id, name, keys);
    }
    calls
}

/// The tool calls of a Responses API stream event. Output items come whole
/// in `response.output_item.added` (arguments still empty) and `.done`,
/// and the whole arguments again in `response.function_call_arguments.done`,
/// so their deltas are not needed. The `output` of a terminal event, when
/// not empty, is the final word.
fn responses_event_calls(
    ty: &str,
    v: &Value,
    calls: &mut Assembler,
    final_calls: &mut Option<Vec<ToolCall>>,
) {
    let slot: Slot = (0, u64_at(v, "output_index").unwrap_or(u64::MAX));
    match ty {
        "response.output_item.added" | "response.output_item.done" => {
            let Some(item) = v.get("item") else {
                return;
            };
            let call = matches!(
                item.get("type").and_then(Value::as_str),
                Some("function_call" | "custom_tool_call")
            );
            if !call {
                return;
            }
            let id = item.get("call_id").and_then(Value::as_str);
            let name = item.get("name").and_then(Value::as_str);
            let args = item.get("arguments").and_then(Value::as_str);
            if ty == "response.output_item.done" {
                calls.whole(slot, id, name, args.unwrap_or_default());
            } else {
                calls.piece(slot, id, name, args.unwrap_or_default());
            }
        }
        "response.function_call_arguments.done" => {
            if let Some(args) = v.get("arguments").and_then(Value::as_str) {
                calls.whole(slot, None, None, args);
            }
        }
        "response.completed" | "response.incomplete" | "response.failed" | "response.cancelled" => {
            let output = v.get("response").and_then(|r| r.get("output"));
            if output
                .and_then(Value::as_array)
                .is_some_and(|o| !o.is_empty())
            {
                *final_calls = v.get("response").map(output_calls);
            }
        }
        _ => {}
    }
}
