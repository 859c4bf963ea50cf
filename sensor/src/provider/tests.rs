#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::protocol::http1::{DEFAULT_BODY_CAP, Parsed, RequestParser, ResponseParser};

fn request_cap(target: &str, body: &str, cap: usize) -> Request {
    let raw = format!(
        "POST {target} HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    match RequestParser::new(cap).feed(0, raw.as_bytes()).pop() {
        Some(Parsed::Message(m)) => m,
        other => panic!("{other:?}"),
    }
}

fn request(target: &str, body: &str) -> Request {
    request_cap(target, body, DEFAULT_BODY_CAP)
}

/// A response as a server sends it: chunked in 100-byte pieces.
fn response_cap(status: u16, content_type: &str, body: &[u8], cap: usize) -> Response {
    let mut raw = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for c in body.chunks(100) {
        raw.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        raw.extend_from_slice(c);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let mut p = ResponseParser::new(cap);
    p.push_request_method("POST");
    match p.feed(0, &raw).pop() {
        Some(Parsed::Message(m)) => m,
        other => panic!("{other:?}"),
    }
}

fn json_response(status: u16, body: &str) -> Response {
    response_cap(
        status,
        "application/json",
        body.as_bytes(),
        DEFAULT_BODY_CAP,
    )
}

fn sse_response(body: &str) -> Response {
    response_cap(
        200,
        "text/event-stream; charset=utf-8",
        body.as_bytes(),
        DEFAULT_BODY_CAP,
    )
}

const CHAT: &str = "/v1/chat/completions";

#[test]
fn recognise_table() {
    use ApiShape::*;
    let cases: &[(&str, &str, Option<ApiShape>)] = &[
        ("POST", "/v1/chat/completions", Some(OpenAiChatCompletions)),
        ("POST", "/v1/chat/completions/", Some(OpenAiChatCompletions)),
        (
            "POST",
            "/v1/chat/completions?x=1",
            Some(OpenAiChatCompletions),
        ),
        (
            "POST",
            "/openai/v1/chat/completions",
            Some(OpenAiChatCompletions),
        ),
        (
            "POST",
            "/api/v1/chat/completions",
            Some(OpenAiChatCompletions),
        ),
        ("POST", "/chat/completions", Some(OpenAiChatCompletions)),
        (
            "POST",
            "/v1beta/openai/chat/completions",
            Some(OpenAiChatCompletions),
        ),
        (
            "POST",
            "https://api.openai.com/v1/chat/completions",
            Some(OpenAiChatCompletions),
        ),
        ("POST", "/v1/completions", Some(OpenAiCompletions)),
        ("POST", "/v1/embeddings", Some(OpenAiEmbeddings)),
        ("POST", "/inference/v1/embeddings", Some(OpenAiEmbeddings)),
        ("POST", "/v1beta/openai/embeddings", Some(OpenAiEmbeddings)),
        ("POST", "/v1/responses", Some(OpenAiResponses)),
        ("POST", "/v1/messages", Some(AnthropicMessages)),
        ("POST", "/v1/messages?beta=true", Some(AnthropicMessages)),
        ("POST", "/anthropic/v1/messages", Some(AnthropicMessages)),
        (
            "POST",
            "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
            Some(OpenAiChatCompletions),
        ),
        (
            "POST",
            "/openai/deployments/emb/embeddings?api-version=2024-10-21",
            Some(OpenAiEmbeddings),
        ),
        (
            "POST",
            "/openai/deployments/davinci/completions?api-version=2024-10-21",
            Some(OpenAiCompletions),
        ),
        ("GET", "/v1/models", None),
        ("POST", "/v1/models", None),
        ("GET", "/v1/chat/completions", None),
        ("POST", "/v1/messages/count_tokens", None),
        ("POST", "/v1/messages/batches", None),
        ("POST", "/v1/threads/thread_abc/messages", None),
        ("POST", "/v1/responses/resp_1/cancel", None),
        ("POST", "/v1/chat/completions/chatcmpl-1", None),
        ("POST", "/completions", None),
        ("POST", "/foo/embeddings", None),
        ("POST", "/", None),
        ("POST", "", None),
    ];
    for (m, t, want) in cases {
        assert_eq!(recognise(m, t), *want, "{m} {t}");
    }
}

#[test]
fn provider_name_table() {
    let o = ApiShape::OpenAiChatCompletions;
    let a = ApiShape::AnthropicMessages;
    let cases: &[(Option<&str>, ApiShape, &str)] = &[
        (Some("api.openai.com"), o, "openai"),
        (Some("API.OpenAI.com:443"), o, "openai"),
        (Some("api.anthropic.com"), a, "anthropic"),
        (Some("myres.openai.azure.com"), o, "azure.ai.openai"),
        (Some("api.mistral.ai"), o, "mistral_ai"),
        (Some("api.groq.com"), o, "groq"),
        (Some("api.deepseek.com"), o, "deepseek"),
        (Some("api.x.ai"), o, "x_ai"),
        (Some("generativelanguage.googleapis.com"), o, "gcp.gemini"),
        (
            Some("bedrock-runtime.us-east-1.amazonaws.com"),
            a,
            "aws.bedrock",
        ),
        (Some("openrouter.ai"), o, "openrouter"),
        (Some("api.together.xyz"), o, "together_ai"),
        (Some("api.fireworks.ai."), o, "fireworks_ai"),
        (Some("localhost:8000"), o, "openai-compatible"),
        (Some("[::1]:8080"), a, "anthropic-compatible"),
        (
            Some("10.0.0.5"),
            ApiShape::OpenAiEmbeddings,
            "openai-compatible",
        ),
        (None, a, "anthropic-compatible"),
        (
            Some("evil-api.openai.com.attacker.net"),
            o,
            "openai-compatible",
        ),
    ];
    for (h, s, want) in cases {
        assert_eq!(provider_name(*h, *s), *want, "{h:?}");
    }
    assert_eq!(ApiShape::OpenAiCompletions.operation(), "text_completion");
    assert_eq!(ApiShape::OpenAiEmbeddings.operation(), "embeddings");
    assert_eq!(ApiShape::AnthropicMessages.operation(), "chat");
    assert_eq!(ApiShape::OpenAiResponses.operation(), "chat");
}

#[test]
fn openai_chat_non_streamed() {
    let req = request(
        CHAT,
        r#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini","max_completion_tokens":50,"temperature":0.7}"#,
    );
    let resp = json_response(
        200,
        r#"{"id":"chatcmpl-AQ1","object":"chat.completion","created":1730800000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12},"system_fingerprint":"fp_1"}"#,
    );
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, Some(&resp));
    assert_eq!(
        info,
        ModelCallInfo {
            request_model: Some("gpt-4o-mini".into()),
            response_model: Some("gpt-4o-mini-2024-07-18".into()),
            response_id: Some("chatcmpl-AQ1".into()),
            streamed: false,
            input_tokens: Some(9),
            output_tokens: Some(3),
            finish_reasons: vec!["stop".into()],
            request_max_tokens: Some(50),
            request_temperature: Some(0.7),
            request_parse_error: false,
            response_parse_error: false,
            request_tools: vec![],
            response_tool_calls: vec![],
        }
    );
}

const OPENAI_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-AQ2\",\"object\":\"chat.completion.chunk\",\"created\":1730800000,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_45c6de4934\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-AQ2\",\"object\":\"chat.completion.chunk\",\"created\":1730800000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-AQ2\",\"object\":\"chat.completion.chunk\",\"created\":1730800000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-AQ2\",\"object\":\"chat.completion.chunk\",\"created\":1730800000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2,\"total_tokens\":13,\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn openai_chat_streamed_with_usage() {
    let req = request(
        CHAT,
        r#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_usage":true},"max_tokens":2}"#,
    );
    let resp = sse_response(OPENAI_STREAM);
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, Some(&resp));
    assert!(info.streamed && !info.response_parse_error);
    assert_eq!(info.request_model.as_deref(), Some("gpt-4o"));
    assert_eq!(info.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert_eq!(info.response_id.as_deref(), Some("chatcmpl-AQ2"));
    assert_eq!((info.input_tokens, info.output_tokens), (Some(11), Some(2)));
    assert_eq!(info.finish_reasons, vec!["length"]);
    assert_eq!(info.request_max_tokens, Some(2));
}

#[test]
fn openai_stream_without_usage_and_truncated() {
    let req = request(CHAT, r#"{"model":"gpt-4o","stream":true}"#);
    let cut = &OPENAI_STREAM[..OPENAI_STREAM.find("\"usage\":{").unwrap()];
    let resp = sse_response(cut);
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, Some(&resp));
    assert!(info.response_parse_error);
    assert_eq!(info.input_tokens, None);
    assert_eq!(info.finish_reasons, vec!["length"]);
    assert_eq!(info.response_id.as_deref(), Some("chatcmpl-AQ2"));
}

#[test]
fn completions_and_embeddings() {
    let req = request(
        "/v1/completions",
        r#"{"model":"gpt-3.5-turbo-instruct","prompt":"x","max_tokens":7,"temperature":0}"#,
    );
    let resp = json_response(
        200,
        r#"{"id":"cmpl-1","object":"text_completion","model":"gpt-3.5-turbo-instruct","choices":[{"text":"y","index":0,"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":7,"total_tokens":8}}"#,
    );
    let info = extract(
        ApiShape::OpenAiCompletions,
        "/v1/completions",
        &req,
        Some(&resp),
    );
    assert_eq!((info.input_tokens, info.output_tokens), (Some(1), Some(7)));
    assert_eq!(info.request_temperature, Some(0.0));
    assert_eq!(info.finish_reasons, vec!["length"]);

    let req = request(
        "/v1/embeddings",
        r#"{"input":"The food was delicious","model":"text-embedding-3-small","encoding_format":"float"}"#,
    );
    let resp = json_response(
        200,
        r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023,-0.0093]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#,
    );
    let info = extract(
        ApiShape::OpenAiEmbeddings,
        "/v1/embeddings",
        &req,
        Some(&resp),
    );
    assert_eq!(
        info.request_model.as_deref(),
        Some("text-embedding-3-small")
    );
    assert_eq!(
        info.response_model.as_deref(),
        Some("text-embedding-3-small")
    );
    assert_eq!((info.input_tokens, info.output_tokens), (Some(5), None));
    assert!(info.finish_reasons.is_empty() && !info.streamed);
}

#[test]
fn responses_api_plain_and_streamed() {
    let req = request(
        "/v1/responses",
        r#"{"model":"gpt-4.1","input":"hi","max_output_tokens":100}"#,
    );
    let resp = json_response(
        200,
        r#"{"id":"resp_1","object":"response","created_at":1741290958,"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-4.1-2025-04-14","output":[],"usage":{"input_tokens":36,"output_tokens":100,"total_tokens":136}}"#,
    );
    let info = extract(
        ApiShape::OpenAiResponses,
        "/v1/responses",
        &req,
        Some(&resp),
    );
    assert_eq!(info.request_max_tokens, Some(100));
    assert_eq!(
        (info.input_tokens, info.output_tokens),
        (Some(36), Some(100))
    );
    assert_eq!(info.finish_reasons, vec!["max_output_tokens"]);
    assert_eq!(info.response_id.as_deref(), Some("resp_1"));

    let stream = concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_2\",\"object\":\"response\",\"created_at\":1741290958,\"status\":\"in_progress\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":null}}\n\n",
        "event: response.in_progress\n",
        "data: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_2\",\"status\":\"in_progress\",\"model\":\"gpt-4.1-2025-04-14\",\"usage\":null}}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_2\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi\"}]}],\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":48}}}\n\n",
    );
    let req = request(
        "/v1/responses",
        r#"{"model":"gpt-4.1","input":"hi","stream":true}"#,
    );
    let info = extract(
        ApiShape::OpenAiResponses,
        "/v1/responses",
        &req,
        Some(&sse_response(stream)),
    );
    assert!(info.streamed && !info.response_parse_error);
    assert_eq!(info.response_model.as_deref(), Some("gpt-4.1-2025-04-14"));
    assert_eq!(info.response_id.as_deref(), Some("resp_2"));
    assert_eq!(
        (info.input_tokens, info.output_tokens),
        (Some(37), Some(11))
    );
    assert_eq!(info.finish_reasons, vec!["completed"]);
}

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-sonnet-20241022\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

#[test]
fn anthropic_streamed() {
    let req = request(
        "/v1/messages",
        r#"{"model":"claude-3-5-sonnet-latest","max_tokens":1024,"temperature":1,"stream":true,"messages":[{"role":"user","content":"Hello"}]}"#,
    );
    let info = extract(
        ApiShape::AnthropicMessages,
        "/v1/messages",
        &req,
        Some(&sse_response(ANTHROPIC_STREAM)),
    );
    assert_eq!(
        info,
        ModelCallInfo {
            request_model: Some("claude-3-5-sonnet-latest".into()),
            response_model: Some("claude-3-5-sonnet-20241022".into()),
            response_id: Some("msg_01XFDUDYJgAACzvnptvVoYEL".into()),
            streamed: true,
            input_tokens: Some(25),
            output_tokens: Some(15),
            finish_reasons: vec!["end_turn".into()],
            request_max_tokens: Some(1024),
            request_temperature: Some(1.0),
            request_parse_error: false,
            response_parse_error: false,
            request_tools: vec![],
            response_tool_calls: vec![],
        }
    );
}

#[test]
fn anthropic_plain_and_error() {
    let req = request(
        "/v1/messages",
        r#"{"model":"claude-3-haiku-20240307","max_tokens":10,"messages":[]}"#,
    );
    let resp = json_response(
        200,
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-haiku-20240307","content":[{"type":"text","text":"Hi"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":10}}"#,
    );
    let info = extract(
        ApiShape::AnthropicMessages,
        "/v1/messages",
        &req,
        Some(&resp),
    );
    assert_eq!(
        (info.input_tokens, info.output_tokens),
        (Some(12), Some(10))
    );
    assert_eq!(info.finish_reasons, vec!["max_tokens"]);
    assert!(!info.streamed);

    let err = json_response(
        529,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    let info = extract(
        ApiShape::AnthropicMessages,
        "/v1/messages",
        &req,
        Some(&err),
    );
    assert_eq!(
        info.request_model.as_deref(),
        Some("claude-3-haiku-20240307")
    );
    assert_eq!(info.request_max_tokens, Some(10));
    assert!(!info.response_parse_error && info.response_model.is_none());
}

#[test]
fn openai_error_response_keeps_request_fields() {
    let req = request(CHAT, r#"{"model":"gpt-4o","messages":[]}"#);
    let err = json_response(
        429,
        r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
    );
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, Some(&err));
    assert_eq!(info.request_model.as_deref(), Some("gpt-4o"));
    assert!(!info.response_parse_error && info.input_tokens.is_none());
    let none = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, None);
    assert_eq!(none.request_model.as_deref(), Some("gpt-4o"));
}

#[test]
fn truncated_request_uses_key_scan() {
    let long = "x".repeat(5000);
    let body = format!(
        r#"{{"model":"gpt-4o","temperature":0.5,"messages":[{{"role":"user","content":"{long}"}}],"stream":true}}"#
    );
    let req = request_cap(CHAT, &body, 1000);
    assert!(req.body_truncated);
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, None);
    assert!(info.request_parse_error);
    assert_eq!(info.request_model.as_deref(), Some("gpt-4o"));
    assert_eq!(info.request_temperature, Some(0.5));
    assert!(!info.streamed);

    let garbage = request(CHAT, "{not json");
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &garbage, None);
    assert!(info.request_parse_error && info.request_model.is_none());
    let empty = request(CHAT, "");
    assert!(!extract(ApiShape::OpenAiChatCompletions, CHAT, &empty, None).request_parse_error);
}

#[test]
fn truncated_response_recovers_usage_from_tail() {
    let req = request("/v1/responses", r#"{"model":"gpt-4.1"}"#);
    let text = "y".repeat(200_000);
    let body = format!(
        r#"{{"id":"resp_9","model":"gpt-4.1","status":"completed","output":[{{"type":"message","content":[{{"type":"output_text","text":"{text}"}}]}}],"usage":{{"input_tokens":3,"output_tokens":50000,"total_tokens":50003}},"user":null}}"#
    );
    let resp = response_cap(200, "application/json", body.as_bytes(), 4096);
    let info = extract(
        ApiShape::OpenAiResponses,
        "/v1/responses",
        &req,
        Some(&resp),
    );
    assert!(info.response_parse_error);
    assert_eq!(
        (info.input_tokens, info.output_tokens),
        (Some(3), Some(50000))
    );
}

#[test]
fn long_anthropic_stream_keeps_final_usage_via_tail() {
    let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"aaaaaaaaaa\"}}\n\n";
    let (head, rest) =
        ANTHROPIC_STREAM.split_at(ANTHROPIC_STREAM.find("event: content_block_stop").unwrap());
    let body = format!("{head}{}{rest}", delta.repeat(20_000));
    let resp = response_cap(200, "text/event-stream", body.as_bytes(), 64 * 1024);
    assert!(resp.body_truncated && !resp.body_tail.is_empty());
    let req = request(
        "/v1/messages",
        r#"{"model":"claude-sonnet-4-5","stream":true}"#,
    );
    let info = extract(
        ApiShape::AnthropicMessages,
        "/v1/messages",
        &req,
        Some(&resp),
    );
    assert_eq!(
        (info.input_tokens, info.output_tokens),
        (Some(25), Some(15))
    );
    assert_eq!(info.finish_reasons, vec!["end_turn"]);
    assert_eq!(
        info.response_model.as_deref(),
        Some("claude-3-5-sonnet-20241022")
    );
}

#[test]
fn azure_deployment_is_request_model_fallback() {
    let t = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21";
    let req = request(t, r#"{"messages":[{"role":"user","content":"hi"}]}"#);
    let info = extract(ApiShape::OpenAiChatCompletions, t, &req, None);
    assert_eq!(info.request_model.as_deref(), Some("my-gpt4o"));
    let req = request(t, r#"{"model":"gpt-4o","messages":[]}"#);
    let info = extract(ApiShape::OpenAiChatCompletions, t, &req, None);
    assert_eq!(info.request_model.as_deref(), Some("gpt-4o"));
}

#[test]
fn compressed_response_is_flagged() {
    let req = request(CHAT, r#"{"model":"gpt-4o"}"#);
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\n\x1f\x8b\x08\x00";
    let resp = match ResponseParser::default().feed(0, raw).pop() {
        Some(Parsed::Message(m)) => m,
        other => panic!("{other:?}"),
    };
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, Some(&resp));
    assert!(info.response_parse_error);
    assert_eq!(info.request_model.as_deref(), Some("gpt-4o"));
}

#[test]
fn hostile_bodies_never_panic() {
    let bodies: [&[u8]; 8] = [
        b"",
        b"\"",
        b"{\"model\":",
        b"{\"model\":\"\\",
        b"[1,2",
        b"\xff\xfe",
        b"{\"usage\":{\"input_tokens\":-1}}",
        b"data: {\"usage\":null}\n\ndata: [DONE]\n\ndata: \"usage\" :",
    ];
    for shape in [
        ApiShape::OpenAiChatCompletions,
        ApiShape::OpenAiEmbeddings,
        ApiShape::OpenAiResponses,
        ApiShape::AnthropicMessages,
    ] {
        for b in bodies {
            let s = String::from_utf8_lossy(b);
            let req = request(CHAT, &s);
            for resp in [json_response(200, &s), sse_response(&s)] {
                let _ = extract(shape, CHAT, &req, Some(&resp));
            }
        }
    }
}

fn call(id: Option<&str>, name: &str, keys: &[&str]) -> ToolCall {
    ToolCall {
        id: id.map(str::to_owned),
        name: name.to_owned(),
        argument_keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}

/// `s` in pieces of `n` characters, as models stream arguments.
fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// An SSE event, with an `event:` line when `name` is given.
fn sse_event(name: Option<&str>, data: &serde_json::Value) -> String {
    match name {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// `stream` with the event holding `marker` cut short, as if part of it
/// was lost: its payload no longer parses.
fn lose_event(stream: &str, marker: &str) -> String {
    let at = stream.find(marker).unwrap();
    let start = stream[..at].rfind("data: ").unwrap();
    let end = at + stream[at..].find("\n\n").unwrap();
    format!(
        "{}data: {{\"type\":\"cont\n\n{}",
        &stream[..start],
        &stream[end + 2..]
    )
}

const WEATHER_ARGS: &str = r#"{"location":"Paris, France","unit":"celsius"}"#;
const TIME_ARGS: &str = r#"{"timezone":"Asia/Tokyo"}"#;

const CHAT_TOOLS_REQUEST: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"What's the weather like in Paris, and the time in Tokyo?"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"Get current temperature for a given location.","parameters":{"type":"object","properties":{"location":{"type":"string","description":"City and country e.g. Bogotá, Colombia"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location","unit"],"additionalProperties":false},"strict":true}},{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"timezone":{"type":"string"}},"required":["timezone"]}}},{"type":"function","function":{"name":"get_weather","parameters":{}}}],"tool_choice":"auto","parallel_tool_calls":true}"#;

#[test]
fn openai_chat_tool_calls_non_streamed() {
    let req = request(CHAT, CHAT_TOOLS_REQUEST);
    let body = serde_json::json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": null,
                "tool_calls": [
                    {"id": "call_8qty38EBTAp3gv3Z5x0MXm5w", "type": "function",
                     "function": {"name": "get_weather", "arguments": WEATHER_ARGS}},
                    {"id": "call_Gx1hX9E0VdHTQQ6hh3JIHxs3", "type": "function",
                     "function": {"name": "get_time", "arguments": TIME_ARGS}}
                ],
                "refusal": null,
                "annotations": []
            },
            "logprobs": null,
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 82, "completion_tokens": 54, "total_tokens": 136},
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035"
    });
    let resp = json_response(200, &body.to_string());
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, Some(&resp));
    assert_eq!(info.request_tools, vec!["get_weather", "get_time"]);
    assert_eq!(
        info.response_tool_calls,
        vec![
            call(
                Some("call_8qty38EBTAp3gv3Z5x0MXm5w"),
                "get_weather",
                &["location", "unit"]
            ),
            call(
                Some("call_Gx1hX9E0VdHTQQ6hh3JIHxs3"),
                "get_time",
                &["timezone"]
            ),
        ]
    );
    assert_eq!(info.finish_reasons, vec!["tool_calls"]);
    assert!(!info.request_parse_error && !info.response_parse_error);
    // Names and keys only: argument values are neither kept nor printed.
    let printed = format!("{info:?}");
    assert!(printed.contains("get_weather") && printed.contains("timezone"));
    assert!(!printed.contains("Paris") && !printed.contains("Tokyo"));
}

/// A streamed chat completion calling get_weather and get_time in parallel,
/// their arguments in pieces of `n` characters.
fn chat_tool_stream(n: usize) -> String {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        let data = serde_json::json!({
            "id": "chatcmpl-BL3XU5M4jGHkuXJkLz2YOTxkOfgpu",
            "object": "chat.completion.chunk",
            "created": 1744196628,
            "model": "gpt-4o-2024-08-06",
            "service_tier": "default",
            "system_fingerprint": "fp_f5bdcc3276",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        sse_event(None, &data)
    };
    let mut s = chunk(
        serde_json::json!({"role": "assistant", "content": null, "refusal": null}),
        None,
    );
    let calls = [
        (
            0,
            "call_DdmO9pD3xa9XTPNJ32zg2hcA",
            "get_weather",
            WEATHER_ARGS,
        ),
        (1, "call_ABNGNdbgiw4Ar8FsOYhaCsaq", "get_time", TIME_ARGS),
    ];
    for (index, id, name, args) in calls {
        s += &chunk(
            serde_json::json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            None,
        );
        for piece in pieces(args, n) {
            s += &chunk(
                serde_json::json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            );
        }
    }
    s += &chunk(serde_json::json!({}), Some("tool_calls"));
    s + "data: [DONE]\n\n"
}

#[test]
fn openai_chat_tool_calls_streamed() {
    let req = request(CHAT, CHAT_TOOLS_REQUEST);
    let stream = chat_tool_stream(3);
    assert!(stream.matches("\"arguments\"").count() > 20);
    let info = extract(
        ApiShape::OpenAiChatCompletions,
        CHAT,
        &req,
        Some(&sse_response(&stream)),
    );
    assert!(info.streamed && !info.response_parse_error);
    assert_eq!(
        info.response_tool_calls,
        vec![
            call(
                Some("call_DdmO9pD3xa9XTPNJ32zg2hcA"),
                "get_weather",
                &["location", "unit"]
            ),
            call(
                Some("call_ABNGNdbgiw4Ar8FsOYhaCsaq"),
                "get_time",
                &["timezone"]
            ),
        ]
    );
    assert_eq!(info.finish_reasons, vec!["tool_calls"]);

    // Cut in the middle of the second call's arguments (the connection
    // closed): the first call is whole, the second keeps id and name only.
    let cut = &stream[..stream.find("Tok").unwrap() + 40];
    let info = extract(
        ApiShape::OpenAiChatCompletions,
        CHAT,
        &req,
        Some(&sse_response(cut)),
    );
    assert!(info.response_parse_error);
    assert_eq!(
        info.response_tool_calls,
        vec![
            call(
                Some("call_DdmO9pD3xa9XTPNJ32zg2hcA"),
                "get_weather",
                &["location", "unit"]
            ),
            call(Some("call_ABNGNdbgiw4Ar8FsOYhaCsaq"), "get_time", &[]),
        ]
    );

    // A piece lost in the middle (an event that does not parse) could leave
    // arguments that still parse with keys missing: no keys then.
    let lost = lose_event(&stream, r#""arguments":"nit""#);
    let info = extract(
        ApiShape::OpenAiChatCompletions,
        CHAT,
        &req,
        Some(&sse_response(&lost)),
    );
    assert!(info.response_parse_error);
    assert_eq!(info.response_tool_calls.len(), 2);
    assert_eq!(
        info.response_tool_calls[0].argument_keys,
        Vec::<String>::new()
    );
    assert_eq!(info.response_tool_calls[1].argument_keys, vec!["timezone"]);
}

#[test]
fn openai_chat_legacy_functions_and_no_tool_calls() {
    let req = request(
        CHAT,
        r#"{"model":"gpt-3.5-turbo-0613","messages":[{"role":"user","content":"What is the weather like in Boston?"}],"functions":[{"name":"get_current_weather","description":"Get the current weather in a given location","parameters":{"type":"object","properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location"]}}],"function_call":"auto"}"#,
    );
    let resp = json_response(
        200,
        r#"{"id":"chatcmpl-7Q1","object":"chat.completion","created":1686000000,"model":"gpt-3.5-turbo-0613","choices":[{"index":0,"message":{"role":"assistant","content":null,"function_call":{"name":"get_current_weather","arguments":"{\n  \"location\": \"Boston, MA\"\n}"}},"finish_reason":"function_call"}],"usage":{"prompt_tokens":82,"completion_tokens":18,"total_tokens":100}}"#,
    );
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, Some(&resp));
    assert_eq!(info.request_tools, vec!["get_current_weather"]);
    assert_eq!(
        info.response_tool_calls,
        vec![call(None, "get_current_weather", &["location"])]
    );

    // Tools declared, none called.
    let req = request(CHAT, CHAT_TOOLS_REQUEST);
    let resp = json_response(
        200,
        r#"{"id":"chatcmpl-AQ1","object":"chat.completion","created":1730800000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Which city?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#,
    );
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, Some(&resp));
    assert_eq!(info.request_tools.len(), 2);
    assert!(info.response_tool_calls.is_empty());
    let info = extract(
        ApiShape::OpenAiChatCompletions,
        CHAT,
        &req,
        Some(&sse_response(OPENAI_STREAM)),
    );
    assert!(info.response_tool_calls.is_empty());
}

#[test]
fn openai_chat_truncated_body_keeps_whole_calls() {
    let req = request(CHAT, r#"{"model":"gpt-4o","stream":false}"#);
    // Members in the order OpenAI sends them (`json!` would sort them).
    let tool_call = |id: &str, name: &str, args: &str| {
        format!(
            r#"{{"id":"{id}","type":"function","function":{{"name":"{name}","arguments":{}}}}}"#,
            serde_json::Value::from(args)
        )
    };
    let body = format!(
        r#"{{"id":"chatcmpl-B9M","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":null,"tool_calls":[{},{},{}],"refusal":null}},"logprobs":null,"finish_reason":"tool_calls"}}],"usage":{{"prompt_tokens":82,"completion_tokens":54,"total_tokens":136}}}}"#,
        tool_call("call_1", "get_weather", WEATHER_ARGS),
        tool_call("call_2", "get_time", TIME_ARGS),
        tool_call("call_3", "get_news", "{}"),
    );
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok());
    // Cut inside the second call's arguments string, then inside the
    // third call's name.
    for (cut_at, want) in [
        (
            body.find("Asia").unwrap(),
            vec![
                call(Some("call_1"), "get_weather", &["location", "unit"]),
                call(Some("call_2"), "get_time", &[]),
            ],
        ),
        (
            body.find("get_ne").unwrap() + 3,
            vec![
                call(Some("call_1"), "get_weather", &["location", "unit"]),
                call(Some("call_2"), "get_time", &["timezone"]),
            ],
        ),
    ] {
        let resp = response_cap(200, "application/json", body.as_bytes(), cut_at);
        assert!(resp.body_truncated);
        let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, Some(&resp));
        assert!(info.response_parse_error);
        assert_eq!(info.response_tool_calls, want, "cut at {cut_at}");
        assert!(info.response_model.is_none());
    }
}

const RESPONSES: &str = "/v1/responses";

const RESPONSES_TOOLS_REQUEST: &str = r#"{"model":"gpt-4.1","input":[{"role":"user","content":"What's the weather like in Paris, and the time in Tokyo?"}],"tools":[{"type":"function","name":"get_weather","description":"Get current temperature for a given location.","parameters":{"type":"object","properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location","unit"],"additionalProperties":false},"strict":true},{"type":"function","name":"get_time","parameters":{"type":"object","properties":{"timezone":{"type":"string"}}},"strict":false},{"type":"web_search_preview"},{"type":"file_search","vector_store_ids":["vs_1234567890"]},{"type":"mcp","server_label":"deepwiki","server_url":"https://mcp.example.com/mcp","require_approval":"never","headers":{"Authorization":"Bearer sk-not-a-real-key"}}],"parallel_tool_calls":true}"#;

fn responses_output() -> serde_json::Value {
    serde_json::json!([
        {"type": "function_call", "id": "fc_67ca09c6bedc8190a7abfec07b1a1332", "call_id": "call_unLAR8MvFNptuiZK6K6HCy5k",
         "name": "get_weather", "arguments": WEATHER_ARGS, "status": "completed"},
        {"type": "function_call", "id": "fc_67ca09c6bedc8190a7abfec07b1a1333", "call_id": "call_uhmJ6TnCTmNyTx9T3MH2BKFV",
         "name": "get_time", "arguments": TIME_ARGS, "status": "completed"}
    ])
}

fn responses_calls() -> Vec<ToolCall> {
    vec![
        call(
            Some("call_unLAR8MvFNptuiZK6K6HCy5k"),
            "get_weather",
            &["location", "unit"],
        ),
        call(
            Some("call_uhmJ6TnCTmNyTx9T3MH2BKFV"),
            "get_time",
            &["timezone"],
        ),
    ]
}

#[test]
fn responses_api_tool_calls_non_streamed() {
    let req = request(RESPONSES, RESPONSES_TOOLS_REQUEST);
    let body = serde_json::json!({
        "id": "resp_67ca09c5efe0819096d0511c92b8c890096610f474011cc0",
        "object": "response",
        "created_at": 1741294021,
        "status": "completed",
        "model": "gpt-4.1-2025-04-14",
        "output": responses_output(),
        "parallel_tool_calls": true,
        "usage": {"input_tokens": 291, "output_tokens": 23, "total_tokens": 314}
    });
    let resp = json_response(200, &body.to_string());
    let info = extract(ApiShape::OpenAiResponses, RESPONSES, &req, Some(&resp));
    assert_eq!(
        info.request_tools,
        vec![
            "get_weather",
            "get_time",
            "web_search_preview",
            "file_search",
            "mcp"
        ]
    );
    assert_eq!(info.response_tool_calls, responses_calls());
    assert!(!format!("{info:?}").contains("sk-not-a-real-key"));

    // A message and no calls.
    let resp = json_response(
        200,
        r#"{"id":"resp_3","object":"response","status":"completed","model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi","annotations":[]}]}],"usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}"#,
    );
    let info = extract(ApiShape::OpenAiResponses, RESPONSES, &req, Some(&resp));
    assert!(info.response_tool_calls.is_empty());
}

/// A Responses API stream calling get_weather and get_time, arguments in
/// pieces of 4 characters; `completed` adds the final `response.completed`.
fn responses_tool_stream(completed: bool) -> String {
    let mut s = String::new();
    let mut seq = 0;
    let mut ev = |s: &mut String, mut data: serde_json::Value| {
        data["sequence_number"] = seq.into();
        seq += 1;
        let name = data["type"].as_str().unwrap().to_owned();
        *s += &sse_event(Some(&name), &data);
    };
    let response = |status: &str, output: serde_json::Value| {
        serde_json::json!({"id": "resp_682d514e268c8191a89c38ea318446200f2610a7ec781a4f",
            "object": "response", "created_at": 1747800398, "status": status,
            "model": "gpt-4.1-2025-04-14", "output": output, "usage": null})
    };
    ev(
        &mut s,
        serde_json::json!({"type": "response.created", "response": response("in_progress", serde_json::json!([]))}),
    );
    let output = responses_output();
    for (i, item) in output.as_array().unwrap().iter().enumerate() {
        let mut added = item.clone();
        added["arguments"] = "".into();
        added["status"] = "in_progress".into();
        ev(
            &mut s,
            serde_json::json!({"type": "response.output_item.added", "output_index": i, "item": added}),
        );
        let args = item["arguments"].as_str().unwrap();
        for piece in pieces(args, 4) {
            ev(
                &mut s,
                serde_json::json!({"type": "response.function_call_arguments.delta",
                    "item_id": item["id"], "output_index": i, "delta": piece}),
            );
        }
        ev(
            &mut s,
            serde_json::json!({"type": "response.function_call_arguments.done",
                "item_id": item["id"], "output_index": i, "arguments": args}),
        );
        ev(
            &mut s,
            serde_json::json!({"type": "response.output_item.done", "output_index": i, "item": item}),
        );
    }
    if completed {
        let mut done = response("completed", output);
        done["usage"] =
            serde_json::json!({"input_tokens": 291, "output_tokens": 23, "total_tokens": 314});
        ev(
            &mut s,
            serde_json::json!({"type": "response.completed", "response": done}),
        );
    }
    s
}

#[test]
fn responses_api_tool_calls_streamed() {
    let req = request(RESPONSES, RESPONSES_TOOLS_REQUEST);
    let stream = responses_tool_stream(true);
    let info = extract(
        ApiShape::OpenAiResponses,
        RESPONSES,
        &req,
        Some(&sse_response(&stream)),
    );
    assert!(info.streamed && !info.response_parse_error);
    assert_eq!(info.response_tool_calls, responses_calls());
    assert_eq!(info.finish_reasons, vec!["completed"]);
    assert_eq!(
        (info.input_tokens, info.output_tokens),
        (Some(291), Some(23))
    );

    // Without `response.completed`, from the output item events.
    let stream = responses_tool_stream(false);
    let info = extract(
        ApiShape::OpenAiResponses,
        RESPONSES,
        &req,
        Some(&sse_response(&stream)),
    );
    assert_eq!(info.response_tool_calls, responses_calls());

    // Cut while the second call's arguments stream: its deltas are not
    // assembled, so it has no keys.
    let cut = &stream[..stream.find(r#""delta":"a/To""#).unwrap()];
    let info = extract(
        ApiShape::OpenAiResponses,
        RESPONSES,
        &req,
        Some(&sse_response(cut)),
    );
    let mut want = responses_calls();
    want[1].argument_keys.clear();
    assert_eq!(info.response_tool_calls, want);
}

const MESSAGES: &str = "/v1/messages";

const ANTHROPIC_TOOLS_REQUEST: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"tools":[{"name":"get_weather","description":"Get the current weather in a given location","input_schema":{"type":"object","properties":{"location":{"type":"string","description":"The city and state, e.g. San Francisco, CA"},"unit":{"type":"string","enum":["celsius","fahrenheit"],"description":"The unit of temperature"}},"required":["location"]}},{"name":"get_time","description":"Get the current time in a given time zone","input_schema":{"type":"object","properties":{"timezone":{"type":"string","description":"The IANA time zone name, e.g. America/Los_Angeles"}},"required":["timezone"]}},{"type":"web_search_20250305","name":"web_search","max_uses":5}],"messages":[{"role":"user","content":"What is the weather like in Paris right now, and what time is it in Tokyo?"}]}"#;

fn anthropic_calls() -> Vec<ToolCall> {
    vec![
        call(
            Some("toolu_01A09q90qw90lq917835lq9"),
            "get_weather",
            &["location", "unit"],
        ),
        call(
            Some("toolu_01CgDYLrBiwMCLN3Rk6A8EyX"),
            "get_time",
            &["timezone"],
        ),
    ]
}

const ANTHROPIC_TOOL_MESSAGE: &str = r#"{"id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"I'll check the weather in Paris and the time in Tokyo."},{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"location":"Paris, France","unit":"celsius"}},{"type":"tool_use","id":"toolu_01CgDYLrBiwMCLN3Rk6A8EyX","name":"get_time","input":{"timezone":"Asia/Tokyo"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":121}}"#;

#[test]
fn anthropic_tool_calls_non_streamed() {
    let req = request(MESSAGES, ANTHROPIC_TOOLS_REQUEST);
    let resp = json_response(200, ANTHROPIC_TOOL_MESSAGE);
    let info = extract(ApiShape::AnthropicMessages, MESSAGES, &req, Some(&resp));
    assert_eq!(
        info.request_tools,
        vec!["get_weather", "get_time", "web_search"]
    );
    assert_eq!(info.response_tool_calls, anthropic_calls());
    assert_eq!(info.finish_reasons, vec!["tool_use"]);
    assert!(!format!("{info:?}").contains("Paris"));

    // Cut inside the second call's input: it keeps id and name, not the
    // keys it had so far.
    let cut = ANTHROPIC_TOOL_MESSAGE.find("Asia").unwrap();
    let resp = response_cap(
        200,
        "application/json",
        ANTHROPIC_TOOL_MESSAGE.as_bytes(),
        cut,
    );
    let info = extract(ApiShape::AnthropicMessages, MESSAGES, &req, Some(&resp));
    assert!(info.response_parse_error);
    let mut want = anthropic_calls();
    want[1].argument_keys.clear();
    assert_eq!(info.response_tool_calls, want);
    // Cut after a whole key of the first input: no keys either.
    let cut = ANTHROPIC_TOOL_MESSAGE.find(",\"unit\"").unwrap() + 2;
    let resp = response_cap(
        200,
        "application/json",
        ANTHROPIC_TOOL_MESSAGE.as_bytes(),
        cut,
    );
    let info = extract(ApiShape::AnthropicMessages, MESSAGES, &req, Some(&resp));
    assert_eq!(
        info.response_tool_calls,
        vec![call(
            Some("toolu_01A09q90qw90lq917835lq9"),
            "get_weather",
            &[]
        )]
    );
}

/// An Anthropic stream: a text block, then get_weather and get_time with
/// their input in pieces of `n` characters.
fn anthropic_tool_stream(n: usize) -> String {
    let mut s = String::new();
    let ev = |s: &mut String, data: serde_json::Value| {
        let name = data["type"].as_str().unwrap().to_owned();
        *s += &sse_event(Some(&name), &data);
    };
    ev(
        &mut s,
        serde_json::json!({"type": "message_start", "message": {"id": "msg_014p7gG3wDgGV9EUtLvnow3U",
            "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "stop_sequence": null, "usage": {"input_tokens": 472, "output_tokens": 2},
            "content": [], "stop_reason": null}}),
    );
    ev(
        &mut s,
        serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    ev(&mut s, serde_json::json!({"type": "ping"}));
    ev(
        &mut s,
        serde_json::json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Okay, let me check."}}),
    );
    ev(
        &mut s,
        serde_json::json!({"type": "content_block_stop", "index": 0}),
    );
    let calls = [
        (
            1,
            "toolu_01A09q90qw90lq917835lq9",
            "get_weather",
            WEATHER_ARGS,
        ),
        (2, "toolu_01CgDYLrBiwMCLN3Rk6A8EyX", "get_time", TIME_ARGS),
    ];
    for (index, id, name, args) in calls {
        ev(
            &mut s,
            serde_json::json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        );
        ev(
            &mut s,
            serde_json::json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": ""}}),
        );
        for piece in pieces(args, n) {
            ev(
                &mut s,
                serde_json::json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece}}),
            );
        }
        ev(
            &mut s,
            serde_json::json!({"type": "content_block_stop", "index": index}),
        );
    }
    ev(
        &mut s,
        serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 89}}),
    );
    ev(&mut s, serde_json::json!({"type": "message_stop"}));
    s
}

#[test]
fn anthropic_tool_calls_streamed() {
    let req = request(MESSAGES, ANTHROPIC_TOOLS_REQUEST);
    let stream = anthropic_tool_stream(5);
    let info = extract(
        ApiShape::AnthropicMessages,
        MESSAGES,
        &req,
        Some(&sse_response(&stream)),
    );
    assert!(info.streamed && !info.response_parse_error);
    assert_eq!(info.response_tool_calls, anthropic_calls());
    assert_eq!(info.finish_reasons, vec!["tool_use"]);
    assert_eq!(info.output_tokens, Some(89));

    // Cut inside the second call's input.
    let cut = &stream[..stream.find("kyo").unwrap()];
    let info = extract(
        ApiShape::AnthropicMessages,
        MESSAGES,
        &req,
        Some(&sse_response(cut)),
    );
    let mut want = anthropic_calls();
    want[1].argument_keys.clear();
    assert_eq!(info.response_tool_calls, want);

    // An event lost in the middle of the first input: no keys for it.
    let lost = lose_event(&stream, r#""partial_json":"nit\":""#);
    let info = extract(
        ApiShape::AnthropicMessages,
        MESSAGES,
        &req,
        Some(&sse_response(&lost)),
    );
    assert!(info.response_parse_error);
    let mut want = anthropic_calls();
    want[0].argument_keys.clear();
    assert_eq!(info.response_tool_calls, want);
}

#[test]
fn streamed_keys_need_every_byte_of_the_body() {
    // A stream longer than the cap, kept as head and tail with a hole
    // between: pieces may be missing anywhere, so no keys from pieces.
    let stream = anthropic_tool_stream(5);
    let text = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"aaaaaaaaaa\"}}\n\n";
    let at = stream.find("event: content_block_stop").unwrap();
    let body = format!("{}{}{}", &stream[..at], text.repeat(5_000), &stream[at..]);
    let resp = response_cap(200, "text/event-stream", body.as_bytes(), 64 * 1024);
    assert!(resp.body_truncated && !resp.body_tail.is_empty());
    let req = request(MESSAGES, r#"{"model":"claude-sonnet-4-5","stream":true}"#);
    let info = extract(ApiShape::AnthropicMessages, MESSAGES, &req, Some(&resp));
    assert_eq!(info.finish_reasons, vec!["tool_use"]);
    let calls = &info.response_tool_calls;
    assert_eq!(
        calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["get_weather", "get_time"]
    );
    assert!(
        calls
            .iter()
            .all(|c| c.argument_keys.is_empty() && c.id.is_some())
    );
}

#[test]
fn truncated_request_keeps_whole_tool_declarations() {
    let long = "x".repeat(5000);
    // Tools before a long prompt: all recovered.
    let body = format!(
        r#"{{"model":"claude-sonnet-4-5","tools":[{{"name":"get_weather","input_schema":{{"type":"object"}}}},{{"name":"get_time","input_schema":{{"type":"object"}}}}],"messages":[{{"role":"user","content":"{long}"}}]}}"#
    );
    let req = request_cap(MESSAGES, &body, 1000);
    let info = extract(ApiShape::AnthropicMessages, MESSAGES, &req, None);
    assert!(info.request_parse_error);
    assert_eq!(info.request_tools, vec!["get_weather", "get_time"]);
    // Cut inside the second declaration: the first only.
    let req = request_cap(
        CHAT,
        CHAT_TOOLS_REQUEST,
        CHAT_TOOLS_REQUEST.find("get_time").unwrap() + 4,
    );
    let info = extract(ApiShape::OpenAiChatCompletions, CHAT, &req, None);
    assert!(info.request_parse_error);
    assert_eq!(info.request_tools, vec!["get_weather"]);
    assert_eq!(info.request_model.as_deref(), Some("gpt-4o"));
}

#[test]
fn tool_caps() {
    let decls: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"type":"function","function":{{"name":"tool_{i}_{}"}}}}"#,
                "n".repeat(200)
            )
        })
        .collect();
    let body = format!(
        r#"{{"model":"gpt-4o","tools":[{}],"tools_extra":1}}"#,
        decls.join(",")
    );
    let info = extract(
        ApiShape::OpenAiChatCompletions,
        CHAT,
        &request(CHAT, &body),
        None,
    );
    assert_eq!(info.request_tools.len(), 64);
    assert!(info.request_tools.iter().all(|t| t.chars().count() == 128));

    let calls: Vec<serde_json::Value> = (0..100)
        .map(|i| {
            let keys: serde_json::Map<String, serde_json::Value> =
                (0..40).map(|k| (format!("k{k:02}"), k.into())).collect();
            serde_json::json!({"id": format!("call_{i}"), "type": "function",
                "function": {"name": "f", "arguments": serde_json::Value::Object(keys).to_string()}})
        })
        .collect();
    let body = serde_json::json!({"choices": [{"index": 0, "message": {"tool_calls": calls}}]});
    let info = extract(
        ApiShape::OpenAiChatCompletions,
        CHAT,
        &request(CHAT, "{}"),
        Some(&json_response(200, &body.to_string())),
    );
    assert_eq!(info.response_tool_calls.len(), 64);
    assert!(
        info.response_tool_calls
            .iter()
            .all(|c| c.argument_keys.len() == 32)
    );
    assert_eq!(info.response_tool_calls[63].id.as_deref(), Some("call_63"));
}

#[test]
fn hostile_tool_shapes_never_panic() {
    let bodies = [
        r#"{"tools":[1,null,{"function":3},{"name":{}},{"type":7},[],{"custom":{"name":"c"}}],"functions":{"name":"x"}}"#,
        r#"{"tools":"#,
        r#"{"tools":[{"type":"function","function":{"name":"f"}},"#,
        r#"{"choices":[{"message":{"tool_calls":[null,{"function":{"name":5,"arguments":7}},{"type":"custom"}],"function_call":"x"}}]}"#,
        r#"{"choices":[{"message":{"tool_calls":[{"id":"call_1","function":{"name":"f","arguments":"{\"a\":"#,
        r#"{"output":[{"type":"function_call","name":"f","arguments":{"a":1}},{"type":"custom_tool_call"}],"content":[{"type":"tool_use","name":"t","input":"x"},{"type":"tool_use","input":{}}]}"#,
        r#"{"content":[{"type":"tool_use","id":"toolu_1","name":"t","input":{"\u0000cut":1,"a":2}}]}"#,
        "data: {\"choices\":[{\"index\":-1,\"delta\":{\"tool_calls\":[{\"index\":-1,\"function\":{\"arguments\":\"}\"}},7]},\"finish_reason\":5}]}\n\n",
        "data: {\"type\":\"content_block_delta\",\"index\":9,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\ndata: {\"type\":\"content_block_stop\"}\n\n",
        "data: {\"type\":\"response.output_item.done\",\"item\":{\"type\":\"function_call\",\"arguments\":\"{}\"}}\n\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[7]}}\n\n",
        &format!("{}1{}", "[".repeat(300), "]".repeat(299)),
        &format!(r#"{{"content":{}"#, "[{\"a\":".repeat(500)),
    ];
    for shape in [
        ApiShape::OpenAiChatCompletions,
        ApiShape::OpenAiResponses,
        ApiShape::AnthropicMessages,
    ] {
        for b in &bodies {
            let req = request(CHAT, b);
            for cap in [10, 64, DEFAULT_BODY_CAP] {
                for ct in ["application/json", "text/event-stream"] {
                    let resp = response_cap(200, ct, b.as_bytes(), cap);
                    let info = extract(shape, CHAT, &req, Some(&resp));
                    assert!(info.response_tool_calls.iter().all(|c| !c.name.is_empty()));
                }
            }
        }
    }
    // A key that looks like the cut marker only costs the keys.
    let resp = json_response(200, bodies[6]);
    let info = extract(
        ApiShape::AnthropicMessages,
        MESSAGES,
        &request(MESSAGES, "{}"),
        Some(&resp),
    );
    assert_eq!(
        info.response_tool_calls,
        vec![call(Some("toolu_1"), "t", &[])]
    );
}
