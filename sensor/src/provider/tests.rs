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
