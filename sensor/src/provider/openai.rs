//! OpenAI-family response extraction: chat completions, completions,
//! embeddings and the Responses API, plain JSON or SSE.

use serde_json::Value;

use super::json::{self, u64_at};
use super::{ApiShape, ModelCallInfo};
use crate::protocol::http1::Response;

pub(super) fn response(shape: ApiShape, resp: &Response, info: &mut ModelCallInfo) {
    if resp.is_event_stream {
        for (ev, v) in json::sse_payloads(resp, info) {
            if shape == ApiShape::OpenAiResponses {
                let ty = v.get("type").and_then(Value::as_str);
                let ty = ty.or(ev.event.as_deref()).unwrap_or_default();
                responses_event(ty, &v, info);
            } else {
                completion_object(shape, &v, info);
            }
        }
    } else if let Some(v) = json::response_json(resp, info) {
        if shape == ApiShape::OpenAiResponses {
            responses_object(&v, true, info);
        } else {
            completion_object(shape, &v, info);
        }
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
