//! Recognise model API calls by their HTTP shape and extract GenAI attributes.
//!
//! Recognition is by path shape on any host, because self-hosted and proxy
//! endpoints (vLLM, Ollama, LiteLLM, gateways) speak the same APIs as the big
//! providers; the host only refines the provider name.

mod anthropic;
mod json;
mod openai;
mod tools;

use crate::protocol::http1::{Request, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiShape {
    OpenAiChatCompletions,
    OpenAiCompletions,
    OpenAiEmbeddings,
    OpenAiResponses,
    AnthropicMessages,
}

impl ApiShape {
    /// OTel `gen_ai.operation.name`.
    pub fn operation(&self) -> &'static str {
        match self {
            ApiShape::OpenAiChatCompletions
            | ApiShape::OpenAiResponses
            | ApiShape::AnthropicMessages => "chat",
            ApiShape::OpenAiCompletions => "text_completion",
            ApiShape::OpenAiEmbeddings => "embeddings",
        }
    }
}

/// Endpoint suffixes of the OpenAI family, most specific first.
const OPENAI_ENDPOINTS: [(&str, ApiShape); 4] = [
    ("chat/completions", ApiShape::OpenAiChatCompletions),
    ("completions", ApiShape::OpenAiCompletions),
    ("embeddings", ApiShape::OpenAiEmbeddings),
    ("responses", ApiShape::OpenAiResponses),
];

/// Recognise a model API call from its method and request-target.
///
/// Accepted (query string ignored, any prefix before the version segment):
/// `…/v1/{chat/completions,completions,embeddings,responses,messages}`, other
/// version segments like `v1beta`/`v2` and an `openai` segment for the OpenAI
/// family (Gemini's `/v1beta/openai/chat/completions`), any path ending in
/// `/chat/completions` (DeepSeek's bare `/chat/completions`, Open WebUI's
/// `/api/chat/completions`), and Azure `/openai/deployments/{name}/…`.
pub fn recognise(method: &str, target: &str) -> Option<ApiShape> {
    if method != "POST" {
        return None;
    }
    let path = request_path(target);
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if path.ends_with("/chat/completions") {
        return Some(ApiShape::OpenAiChatCompletions);
    }
    if let [.., parent, "messages"] = segs.as_slice() {
        return (*parent == "v1").then_some(ApiShape::AnthropicMessages);
    }
    if azure_deployment(target).is_some() {
        let last = segs.last().copied().unwrap_or_default();
        return OPENAI_ENDPOINTS
            .iter()
            .find(|(e, _)| *e == last)
            .map(|&(_, shape)| shape);
    }
    let [.., parent, last] = segs.as_slice() else {
        return None;
    };
    if !(*parent == "openai" || is_version_segment(parent)) {
        return None;
    }
    OPENAI_ENDPOINTS
        .iter()
        .find(|(e, _)| e == last)
        .map(|&(_, shape)| shape)
}

/// `v1`, `v2`, `v1beta`, `v1alpha2`: a `v`, digits, then alphanumerics.
fn is_version_segment(seg: &str) -> bool {
    let mut chars = seg.chars();
    chars.next() == Some('v')
        && chars.next().is_some_and(|c| c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

/// The path of a request-target: query and fragment removed, the scheme and
/// authority of an absolute-form target (forward proxies) removed, and
/// trailing slashes trimmed.
fn request_path(target: &str) -> &str {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let mut path = target.get(..end).unwrap_or(target);
    if let Some(idx) = path.find("://") {
        let after = path.get(idx + 3..).unwrap_or_default();
        path = after.find('/').and_then(|i| after.get(i..)).unwrap_or("/");
    }
    path.trim_end_matches('/')
}

/// Deployment name of an Azure OpenAI `/openai/deployments/{name}/…` path.
pub(crate) fn azure_deployment(target: &str) -> Option<&str> {
    let path = request_path(target);
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    while let Some(seg) = segs.next() {
        if seg == "openai" {
            return match (segs.next(), segs.next()) {
                (Some("deployments"), Some(name)) => Some(name),
                _ => None,
            };
        }
    }
    None
}

/// Provider name in the style of OTel `gen_ai.provider.name`.
pub fn provider_name(host: Option<&str>, shape: ApiShape) -> String {
    let host = host.map(normalise_host).unwrap_or_default();
    let known = known_provider(&host);
    let fallback = match shape {
        ApiShape::AnthropicMessages => "anthropic-compatible",
        _ => "openai-compatible",
    };
    known.unwrap_or(fallback).to_owned()
}

/// The model provider serving a host name (lower case, no port), if it is
/// one of the public model APIs.
/// Exact host names of the public providers (each [`known_provider`]
/// names its provider), for policies that must find a provider's
/// addresses before any traffic shows them. Regional and per-tenant hosts
/// (Azure, Bedrock, Vertex) are only learned from DNS answers and TLS
/// server names.
pub const KNOWN_HOSTS: [&str; 14] = [
    "api.openai.com",
    "api.anthropic.com",
    "api.mistral.ai",
    "api.groq.com",
    "api.deepseek.com",
    "api.x.ai",
    "generativelanguage.googleapis.com",
    "openrouter.ai",
    "api.together.xyz",
    "api.fireworks.ai",
    "aiplatform.googleapis.com",
    "api.cohere.com",
    "api.cohere.ai",
    "api.perplexity.ai",
];

pub fn known_provider(h: &str) -> Option<&'static str> {
    match h {
        "api.openai.com" => Some("openai"),
        "api.anthropic.com" => Some("anthropic"),
        "api.mistral.ai" => Some("mistral_ai"),
        "api.groq.com" => Some("groq"),
        "api.deepseek.com" => Some("deepseek"),
        "api.x.ai" => Some("x_ai"),
        "generativelanguage.googleapis.com" => Some("gcp.gemini"),
        "openrouter.ai" => Some("openrouter"),
        "api.together.xyz" => Some("together_ai"),
        "api.fireworks.ai" => Some("fireworks_ai"),
        _ if h.ends_with(".api.openai.com") => Some("openai"),
        _ if h.ends_with(".openai.azure.com") || h.ends_with(".cognitiveservices.azure.com") => {
            Some("azure.ai.openai")
        }
        _ if h.starts_with("bedrock-runtime") && h.ends_with(".amazonaws.com") => {
            Some("aws.bedrock")
        }
        "aiplatform.googleapis.com" => Some("gcp.vertex_ai"),
        _ if h.ends_with("-aiplatform.googleapis.com") => Some("gcp.vertex_ai"),
        "api.cohere.com" | "api.cohere.ai" => Some("cohere"),
        "api.perplexity.ai" => Some("perplexity"),
        _ => None,
    }
}

/// Lower-case a Host value and strip its port and any trailing dot.
fn normalise_host(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelCallInfo {
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    /// The request asked for a stream, or the response is an event stream.
    pub streamed: bool,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub finish_reasons: Vec<String>,
    pub request_max_tokens: Option<u64>,
    pub request_temperature: Option<f64>,
    /// The request body could not be fully parsed (truncated, invalid, or
    /// compressed); fields were recovered by a top-level key scan.
    pub request_parse_error: bool,
    /// The response body (or one of its SSE payloads) could not be parsed.
    pub response_parse_error: bool,
    /// Tools the request declared (names, in order, deduplicated, at most 64, each at most 128 chars).
    pub request_tools: Vec<String>,
    /// Tool calls the model asked for in its response, in order (at most 64).
    pub response_tool_calls: Vec<ToolCall>,
}

/// A tool call of a response. It never holds argument values, so `Debug`
/// may print it. Id, name and keys are cut to 128 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// The provider's call id (`call_...`, `toolu_...`); None if absent.
    pub id: Option<String>,
    /// The tool (function) name.
    pub name: String,
    /// Names (keys) of the top-level arguments, sorted, when the arguments are a JSON object that was complete (at most 32). Never the values.
    pub argument_keys: Vec<String>,
}

/// Extract GenAI attributes from a request and, when present, its response.
pub fn extract(
    shape: ApiShape,
    target: &str,
    req: &Request,
    resp: Option<&Response>,
) -> ModelCallInfo {
    let mut info = ModelCallInfo::default();
    json::request_fields(req, &mut info);
    if info.request_model.is_none() {
        info.request_model = azure_deployment(target).map(str::to_owned);
    }
    if let Some(resp) = resp {
        info.streamed |= resp.is_event_stream;
        match shape {
            ApiShape::AnthropicMessages => anthropic::response(resp, &mut info),
            _ => openai::response(shape, resp, &mut info),
        }
    }
    info
}

#[cfg(test)]
mod tests;
