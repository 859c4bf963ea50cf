//! Turning an HTTP exchange into a `model_call` event when it has the shape
//! of a model API call.

use sensor_common::TlsLibrary;

use crate::{
    bpf::attach::library_name,
    conntrack::ConnInfo,
    credential::{self, Fingerprinter},
    event::Event,
    identity::mask::mask_text,
    protocol::http1::Request,
    provider::{self, ApiShape, ModelCallInfo},
    session::Exchange,
};

/// The Host header without port, lower case; the port separately.
pub fn split_host(host: &str) -> (String, Option<u16>) {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        let (addr, tail) = rest.split_once(']').unwrap_or((rest, ""));
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (addr.to_ascii_lowercase(), port);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name.to_ascii_lowercase(), port.parse().ok()),
        _ => (host.to_ascii_lowercase(), None),
    }
}

/// The path of a request target without its query (which may carry keys).
pub fn target_path(target: &str) -> &str {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    // An absolute-form target (through a proxy): keep only the path.
    match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => path,
    }
}

/// Recognises a model API request.
pub fn shape_of(request: &Request) -> Option<ApiShape> {
    provider::recognise(&request.method, &request.target)
}

/// Builds the `model_call` event of `ex`; also returns what the provider
/// fields say (the tool calls the model asked for).
pub fn model_call_event(
    ex: &Exchange,
    shape: ApiShape,
    conn: Option<&ConnInfo>,
    fp: &Fingerprinter,
) -> (Event, ModelCallInfo) {
    let request = &ex.request;
    let info = provider::extract(shape, &request.target, request, ex.response.as_ref());
    let mut event = http_event("model_call", ex, conn, fp);
    let host = request.headers.get_str("host").map(|h| split_host(h).0);
    event
        .set(
            "gen_ai.provider.name",
            provider::provider_name(host.as_deref(), shape),
        )
        .set("gen_ai.operation.name", shape.operation())
        .set("gen_ai.request.model", info.request_model.clone())
        .set("gen_ai.request.max_tokens", info.request_max_tokens)
        .set("gen_ai.request.temperature", info.request_temperature)
        .set("gen_ai.request.stream", info.streamed)
        .set("gen_ai.response.model", info.response_model.clone())
        .set("gen_ai.response.id", info.response_id.clone())
        .set("gen_ai.usage.input_tokens", info.input_tokens)
        .set("gen_ai.usage.output_tokens", info.output_tokens);
    if !info.finish_reasons.is_empty() {
        event.set(
            "gen_ai.response.finish_reasons",
            info.finish_reasons.clone(),
        );
    }
    if !info.request_tools.is_empty() {
        event.set("gen_ai.request.tools", info.request_tools.clone());
    }
    if !info.response_tool_calls.is_empty() {
        let calls: Vec<serde_json::Value> = info
            .response_tool_calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "name": c.name,
                    "argument_keys": c.argument_keys,
                })
            })
            .collect();
        event.set("gen_ai.response.tool_calls", calls);
    }
    if info.request_parse_error || info.response_parse_error {
        event.set("gen_ai.parse_error", true);
    }
    (event, info)
}

/// The fields every HTTP exchange's event carries: destination, TLS,
/// request and response sizes and status, timing, trace context, and the
/// credential's fingerprint.
pub fn http_event(
    action: &'static str,
    ex: &Exchange,
    conn: Option<&ConnInfo>,
    fp: &Fingerprinter,
) -> Event {
    let request = &ex.request;
    let host_header = request.headers.get_str("host");
    let (host, host_port) = host_header.map(split_host).unzip();
    let host_port = host_port.flatten();

    let mut event = Event::new(action);
    let remote = conn.map(|c| c.remote);
    let cleartext = ex.library == TlsLibrary::Cleartext;
    let server_address = host.clone().or_else(|| remote.map(|r| r.ip().to_string()));
    event
        .set("event.kind", "event")
        .set("event.category", serde_json::json!(["network", "api"]))
        .set("server.address", server_address)
        .set(
            "server.port",
            remote
                .map(|r| r.port())
                .or(host_port)
                .or(Some(if cleartext { 80 } else { 443 })),
        )
        .set("server.ip", remote.map(|r| r.ip().to_string()))
        .set(
            "client.address",
            conn.and_then(|c| c.local).map(|l| l.ip().to_string()),
        )
        .set("client.port", conn.and_then(|c| c.local).map(|l| l.port()))
        .set("network.transport", "tcp")
        .set(
            "network.type",
            remote.map(|r| if r.is_ipv4() { "ipv4" } else { "ipv6" }),
        )
        .set("network.protocol.name", "http")
        .set(
            "network.protocol.version",
            match request.version {
                0 => "1.0",
                2 => "2",
                _ => "1.1",
            },
        )
        .set("url.scheme", if cleartext { "http" } else { "https" })
        .set("tls.established", !cleartext)
        .set("tls.library", library_name(ex.library))
        .set("tls.session.id", ex.session_id)
        .set("tls.server_name", conn.and_then(|c| c.server_name.clone()))
        .set("process.io.fd", ex.fd)
        .set("http.request.method", request.method.clone())
        .set("url.path", mask_text(target_path(&request.target)))
        .set("url.domain", host.clone())
        .set("http.request.body.size", request.body_size)
        .set("http.request.size", request.wire_size)
        .set("http.request.body.truncated", request.body_truncated);
    if let Some(query) = request.target.split_once('?').map(|(_, q)| q) {
        event.set("url.query", mask_text(query));
    }
    if let Some(ua) = request.headers.get_str("user-agent") {
        event.set("user_agent.original", mask_text(ua));
    }
    if let Some((trace, span)) = request
        .headers
        .get_str("traceparent")
        .and_then(parse_traceparent)
    {
        event.set("trace.id", trace).set("span.id", span);
    }
    match &ex.response {
        Some(response) => {
            let latency = response.last_ts.saturating_sub(request.first_ts);
            event
                .set("http.response.status_code", response.status)
                .set("http.response.body.size", response.body_size)
                .set("http.response.size", response.wire_size)
                .set("http.response.body.truncated", response.body_truncated)
                .set("event.duration", latency)
                .set(
                    "gen_ai.server.time_to_first_byte",
                    response.first_ts.saturating_sub(request.last_ts),
                )
                .set(
                    "event.outcome",
                    if response.status < 400 {
                        "success"
                    } else {
                        "failure"
                    },
                );
        }
        None => {
            event
                .set("event.outcome", "unknown")
                .set("http.response.missing", true);
        }
    }
    if let Some(cred) = credential::detect(&request.headers, fp) {
        event
            .set("credential.kind", cred.kind)
            .set("credential.fingerprint", cred.fingerprint)
            .set("credential.source", cred.source);
    }
    event
}

/// A tool API's path with the segments that look like tokens masked
/// (`/bot<token>/sendMessage`, `/api/webhooks/<id>/<token>`): long runs of
/// letters and digits together. Model API paths have none.
pub fn mask_path_tokens(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            let token_chars = seg.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.' | b'~')
            });
            let digits = seg.bytes().filter(u8::is_ascii_digit).count();
            let letters = seg.bytes().filter(u8::is_ascii_alphabetic).count();
            if seg.len() >= 20 && token_chars && digits >= 2 && letters >= 2 {
                "****"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// W3C trace context (`traceparent: 00-<trace id>-<parent id>-<flags>`):
/// the trace id and the caller's span id, when well formed and not zero.
pub fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    ok.then(|| (trace.to_owned(), span.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_paths() {
        assert_eq!(
            mask_path_tokens("/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage"),
            "/****/sendMessage"
        );
        assert_eq!(
            mask_path_tokens("/api/webhooks/1234567890/abcDEF1234567890ghijKLMN"),
            "/api/webhooks/1234567890/****"
        );
        assert_eq!(mask_path_tokens("/tool/weather"), "/tool/weather");
        assert_eq!(
            mask_path_tokens("/v1/chat/completions"),
            "/v1/chat/completions"
        );
    }

    #[test]
    fn traceparent() {
        assert_eq!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        assert_eq!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(parse_traceparent("garbage"), None);
    }

    #[test]
    fn hosts_and_paths() {
        assert_eq!(
            split_host("API.OpenAI.com"),
            ("api.openai.com".into(), None)
        );
        assert_eq!(
            split_host("127.0.0.1:8443"),
            ("127.0.0.1".into(), Some(8443))
        );
        assert_eq!(split_host("[::1]:9"), ("::1".into(), Some(9)));
        assert_eq!(split_host("::1"), ("::1".into(), None));
        assert_eq!(
            target_path("/v1/chat/completions?key=x"),
            "/v1/chat/completions"
        );
        assert_eq!(target_path("https://h/v1/messages"), "/v1/messages");
    }
}
