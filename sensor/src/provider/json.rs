//! JSON helpers shared by the providers, tolerant of truncated captures.

use memchr::{memchr2, memmem};
use serde_json::{Map, Value};

use super::ModelCallInfo;
use super::tools::{self, CUT_KEY, ToolNames};
use crate::protocol::http1::{Headers, Request, Response};
use crate::protocol::sse::{self, SseEvent};

/// Request keys read by every provider; each API uses its own subset.
const REQUEST_KEYS: [&str; 6] = [
    "model",
    "stream",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "temperature",
];

/// Request keys declaring tools: `tools`, and the legacy `functions` of
/// Chat Completions.
const TOOL_KEYS: [&str; 2] = ["tools", "functions"];

/// Whether a body is content-encoded (gzip, br, ...), which we cannot decode
/// without a decompression dependency; such bodies are reported unparsable.
pub(super) fn is_encoded(headers: &Headers) -> bool {
    headers.get_all("content-encoding").any(|v| {
        v.split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
    })
}

/// Fill the request-side fields. A body that does not parse (typically cut
/// at the body cap) is scanned for top-level scalar keys instead.
pub(super) fn request_fields(req: &Request, info: &mut ModelCallInfo) {
    if req.body.is_empty() && !req.body_truncated {
        return;
    }
    if is_encoded(&req.headers) {
        info.request_parse_error = true;
        return;
    }
    let (obj, tool_lists) = match request_top(&req.body) {
        Some(Ok(top)) => (top.fields, top.tools),
        None => {
            info.request_parse_error = true;
            return;
        }
        Some(Err(())) => {
            info.request_parse_error = true;
            let fields = top_level_scalars(&req.body, &REQUEST_KEYS);
            (fields, top_level_tool_names(&req.body))
        }
    };
    for name in tool_lists.iter().flatten() {
        tools::push_name(&mut info.request_tools, name);
    }
    info.request_model = str_at(&obj, "model");
    info.streamed = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    info.request_max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_u64));
    info.request_temperature = obj.get("temperature").and_then(Value::as_f64);
}

/// What the request body says, prompts left out.
#[derive(Debug, Default, PartialEq)]
struct RequestTop {
    /// Values of `REQUEST_KEYS`.
    fields: Map<String, Value>,
    /// Declared tool names, per key of `TOOL_KEYS`.
    tools: [Vec<String>; 2],
}

/// The request keys of a JSON object body, validating the whole body but
/// building values for those keys only: prompts (`messages`, `input`) are
/// skipped, not copied into a tree, and tool declarations are read one at a
/// time for their names. `None` when the body is JSON but not an object;
/// `Some(Err)` when it is not JSON (cut at the capture cap).
fn request_top(body: &[u8]) -> Option<Result<RequestTop, ()>> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

    /// Keeps the request keys of an object (the last of duplicates, as a
    /// tree would); anything else is not an object.
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<RequestTop>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut top = RequestTop::default();
            while let Some(key) = access.next_key::<std::borrow::Cow<'de, str>>()? {
                let tool_list = TOOL_KEYS.iter().position(|k| *k == key.as_ref());
                if REQUEST_KEYS.contains(&key.as_ref()) {
                    top.fields
                        .insert(key.into_owned(), access.next_value::<Value>()?);
                } else if let Some(list) = tool_list.and_then(|i| top.tools.get_mut(i)) {
                    *list = access.next_value::<ToolNames>()?.0;
                } else {
                    access.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Some(top))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match de
        .deserialize_any(Keys)
        .and_then(|keys| de.end().map(|()| keys))
    {
        Ok(Some(top)) => Some(Ok(top)),
        Ok(None) => None,
        Err(_) => Some(Err(())),
    }
}

pub(super) fn str_at(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub(super) fn u64_at(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Parse a non-streamed JSON response body. `None` with the error flag set
/// when it does not parse; `None` without it when there is nothing to parse.
pub(super) fn response_json(resp: &Response, info: &mut ModelCallInfo) -> Option<Value> {
    if resp.body.is_empty() {
        return None;
    }
    if is_encoded(&resp.headers) {
        info.response_parse_error = true;
        return None;
    }
    match serde_json::from_slice::<Value>(&resp.body) {
        Ok(v) => Some(v),
        Err(_) => {
            info.response_parse_error = true;
            None
        }
    }
}

/// An item of an event-stream response.
pub(super) enum StreamItem {
    /// A JSON payload, with its event.
    Payload(SseEvent, Value),
    /// A payload that did not parse (cut, or not JSON): whatever it carried
    /// is missing from the stream.
    Lost,
}

/// The JSON payloads of an event-stream response, with their event names.
/// Payloads that fail to parse set the error flag and leave a `Lost` in
/// their place; `[DONE]` is skipped.
pub(super) fn sse_items(resp: &Response, info: &mut ModelCallInfo) -> Vec<StreamItem> {
    if is_encoded(&resp.headers) {
        info.response_parse_error = true;
        return Vec::new();
    }
    let mut out = Vec::new();
    for ev in stream_events(resp) {
        let data = ev.data.trim();
        if data.is_empty() || data == "[DONE]" {
            continue;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(v) => out.push(StreamItem::Payload(ev, v)),
            Err(_) => {
                info.response_parse_error = true;
                out.push(StreamItem::Lost);
            }
        }
    }
    out
}

/// Every byte of the body is in `body` or `body_tail`, in order: nothing
/// was dropped between them or lost by the capture. A body cut short (the
/// connection closed) is still whole as far as it goes.
pub(super) fn is_whole(resp: &Response) -> bool {
    (resp.body.len() as u64).saturating_add(resp.body_tail.len() as u64) == resp.body_size
}

/// A non-streamed response body that was cut (at the capture cap, or by a
/// closed connection), closed where it was cut by `close_truncated`.
pub(super) fn truncated_json(resp: &Response) -> Option<Value> {
    if !resp.body_truncated || resp.body.is_empty() || is_encoded(&resp.headers) {
        return None;
    }
    close_truncated(&resp.body)
}

/// Parse a JSON text cut short, by closing it at the end of its last whole
/// value: a cut string, number or member is dropped, open arrays are closed,
/// and each open object gets the member `CUT_KEY: true` before its closing
/// brace, so that a reader can tell it is partial. `None` when the text does
/// not start like JSON, is complete, or still does not parse (bytes lost in
/// its middle).
pub(super) fn close_truncated(b: &[u8]) -> Option<Value> {
    struct Open {
        object: bool,
        /// A member (or element) is complete.
        members: bool,
        /// A key is expected next.
        key_next: bool,
    }
    let mut stack: Vec<Open> = Vec::new();
    // End of the last whole value, or of the last opening bracket: the
    // containers open there are those open at the end, since only keys,
    // colons, commas and a cut value can follow it.
    let mut safe = None;
    let mut i = skip_ws(b, 0);
    if !matches!(b.get(i), Some(b'{' | b'[')) {
        return None;
    }
    while let Some(&c) = b.get(i) {
        let top = stack.last_mut();
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'{' | b'[' => {
                stack.push(Open {
                    object: c == b'{',
                    members: false,
                    key_next: c == b'{',
                });
                i += 1;
                safe = Some(i);
            }
            b'}' | b']' => {
                stack.pop();
                let Some(parent) = stack.last_mut() else {
                    // The text is complete: not for us to mend.
                    return None;
                };
                parent.members = true;
                i += 1;
                safe = Some(i);
            }
            b',' => {
                if let Some(top) = top {
                    top.key_next = top.object;
                }
                i += 1;
            }
            b':' => i += 1,
            b'"' => {
                let Some(end) = string_end(b, i) else {
                    break;
                };
                match top {
                    Some(top) if top.object && top.key_next => top.key_next = false,
                    Some(top) => {
                        top.members = true;
                        safe = Some(end);
                    }
                    None => return None,
                }
                i = end;
            }
            _ => {
                // A number or literal: whole only if something follows it.
                let rest = b.get(i..).unwrap_or_default();
                let Some(len) = rest
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                else {
                    break;
                };
                if let Some(top) = top {
                    top.members = true;
                }
                i += len.max(1);
                safe = Some(i);
            }
        }
    }
    let mut text = b.get(..safe?)?.to_vec();
    let cut_member = format!("{}:true}}", Value::from(CUT_KEY));
    for (depth, open) in stack.iter().rev().enumerate() {
        if open.object {
            // Below the innermost container, the member holding the one
            // just closed is complete.
            if open.members || depth > 0 {
                text.push(b',');
            }
            text.extend_from_slice(cut_member.as_bytes());
        } else {
            text.push(b']');
        }
    }
    serde_json::from_slice(&text).ok()
}

/// Events of the kept body, plus those of the kept tail when the body
/// overflowed the cap. A tail not contiguous with the body starts mid-event:
/// that first fragment is dropped rather than misread.
fn stream_events(resp: &Response) -> Vec<SseEvent> {
    if resp.body_tail.is_empty() {
        return sse::parse_events(&resp.body);
    }
    let kept = (resp.body.len() + resp.body_tail.len()) as u64;
    if kept == resp.body_size {
        let mut all = resp.body.clone();
        all.extend_from_slice(&resp.body_tail);
        return sse::parse_events(&all);
    }
    let mut events = sse::parse_events(&resp.body);
    let tail = after_first_blank_line(&resp.body_tail);
    events.extend(sse::parse_events(tail));
    events
}

fn after_first_blank_line(b: &[u8]) -> &[u8] {
    let mut pos = 0;
    while let Some(i) = b.get(pos..).and_then(|r| memchr2(b'\n', b'\r', r)) {
        let at = pos + i;
        let next = match (b.get(at), b.get(at + 1)) {
            (Some(b'\r'), Some(b'\n')) => at + 2,
            _ => at + 1,
        };
        if matches!(b.get(next), Some(b'\n' | b'\r')) {
            let skip = match (b.get(next), b.get(next + 1)) {
                (Some(b'\r'), Some(b'\n')) => 2,
                _ => 1,
            };
            return b.get(next + skip..).unwrap_or_default();
        }
        pos = next;
    }
    &[]
}

/// Last `"usage": {...}` object found in raw bytes: a fallback for response
/// bodies whose JSON was cut, where usage usually sits near the end.
pub(super) fn last_usage_object(hay: &[u8]) -> Option<Value> {
    let mut end = hay.len();
    while let Some(p) = memmem::rfind(hay.get(..end)?, b"\"usage\"") {
        let after = hay.get(p + 7..).unwrap_or_default();
        let after = after.trim_ascii_start();
        if let Some(v) = after
            .strip_prefix(b":")
            .and_then(|v| first_value(v.trim_ascii_start()))
            && v.is_object()
        {
            return Some(v);
        }
        end = p;
    }
    None
}

/// Parse the first JSON value at the start of `b`, ignoring what follows.
fn first_value(b: &[u8]) -> Option<Value> {
    let mut it = serde_json::Deserializer::from_slice(b).into_iter::<Value>();
    let v = it.next()?.ok()?;
    // A number or literal running into the end of a cut body may itself be
    // cut (`12` of `120`): trust it only when something follows it.
    let delimited = matches!(v, Value::String(_) | Value::Object(_) | Value::Array(_));
    (delimited || it.byte_offset() < b.len()).then_some(v)
}

/// Scalar values of `keys` that are members of the top-level object of a
/// possibly truncated JSON text (the first of duplicates).
pub(super) fn top_level_scalars(body: &[u8], keys: &[&str]) -> Map<String, Value> {
    let mut found = Map::new();
    top_level_members(body, |key, k| {
        let wanted = keys.iter().find(|w| w.as_bytes() == key);
        let scalar = matches!(body.get(k), Some(b'"' | b'-' | b'0'..=b'9' | b't' | b'f'));
        if let (Some(w), true) = (wanted, scalar) {
            let v = body.get(k..).and_then(first_value);
            if let Some(v) = v.filter(|v| !v.is_object() && !v.is_array()) {
                found.entry(w.to_string()).or_insert(v);
            }
        }
    });
    found
}

/// Declared tool names of a possibly truncated request body, per key of
/// `TOOL_KEYS` (the first of duplicates): the declarations that are whole
/// before the cut, read one at a time.
fn top_level_tool_names(body: &[u8]) -> [Vec<String>; 2] {
    let mut lists: [Option<Vec<String>>; 2] = Default::default();
    top_level_members(body, |key, k| {
        let at = TOOL_KEYS.iter().position(|t| t.as_bytes() == key);
        if let Some(slot @ None) = at.and_then(|i| lists.get_mut(i)) {
            *slot = Some(array_tool_names(body, k));
        }
    });
    lists.map(Option::unwrap_or_default)
}

/// Names of the whole declarations of the array at `start`, up to the
/// first one that does not parse (the one cut, if the array is).
fn array_tool_names(body: &[u8], start: usize) -> Vec<String> {
    let mut names = Vec::new();
    if body.get(start) != Some(&b'[') {
        return names;
    }
    let mut i = skip_ws(body, start + 1);
    while let Some(rest) = body.get(i..).filter(|r| r.first() != Some(&b']')) {
        let mut it = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        let Some(Ok(decl)) = it.next() else {
            break;
        };
        if let Some(name) = tools::declared_name(&decl) {
            tools::push_name(&mut names, name);
        }
        i = skip_ws(body, i + it.byte_offset());
        if body.get(i) != Some(&b',') {
            break;
        }
        i = skip_ws(body, i + 1);
    }
    names
}

/// Calls `member(key, value_start)` for each member of the top-level object
/// of a possibly truncated JSON text. A tiny tokenizer tracks strings and
/// nesting depth, so keys inside messages or tool schemas are not mistaken
/// for them.
fn top_level_members(body: &[u8], mut member: impl FnMut(&[u8], usize)) {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                let Some(end) = string_end(body, i) else {
                    break;
                };
                if depth == 1 {
                    let key = body.get(i + 1..end - 1).unwrap_or_default();
                    let j = skip_ws(body, end);
                    if body.get(j) == Some(&b':') {
                        let k = skip_ws(body, j + 1);
                        member(key, k);
                        i = k;
                        continue;
                    }
                }
                i = end;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// Index just past the closing quote of the string opening at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut pos = start + 1;
    loop {
        let i = pos + memchr2(b'"', b'\\', b.get(pos..)?)?;
        match b.get(i) {
            Some(b'\\') => pos = i + 2,
            _ => return Some(i + 1),
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_scan_ignores_nested_and_handles_truncation() {
        let body =
            br#"{"messages":[{"role":"user","content":"say \"model\": \"x\"","model":"nested"}],
            "tools":[{"parameters":{"properties":{"model":{"type":"string"}}}}],
            "model" : "gpt-4o", "stream":true, "temperature":0.2, "max_tokens": 12, "x": "trunc"#;
        let m = top_level_scalars(body, &REQUEST_KEYS);
        assert_eq!(m.get("model"), Some(&Value::from("gpt-4o")));
        assert_eq!(m.get("stream"), Some(&Value::from(true)));
        assert_eq!(m.get("temperature"), Some(&Value::from(0.2)));
        assert_eq!(m.get("max_tokens"), Some(&Value::from(12)));
        let cut = br#"{"model":"claude-3-5-sonnet","messages":[{"role":"user","content":"hel"#;
        let m = top_level_scalars(cut, &REQUEST_KEYS);
        assert_eq!(m.get("model"), Some(&Value::from("claude-3-5-sonnet")));
        assert!(top_level_scalars(br#"{"model":"abc"#, &REQUEST_KEYS).is_empty());
        assert!(top_level_scalars(b"\"\\", &REQUEST_KEYS).is_empty());
    }

    #[test]
    fn request_keys_without_building_the_prompt() {
        let body = br#"{"messages":[{"role":"user","content":"a \"quoted\" prompt"}],"model":"gpt-4o","stream":true,"model":"gpt-4o-mini","temperature":0.5}"#;
        let map = request_top(body).expect("json").expect("object").fields;
        // The last of duplicate keys wins, as in a tree; prompts are left out.
        assert_eq!(map.get("model"), Some(&Value::from("gpt-4o-mini")));
        assert_eq!(map.get("stream"), Some(&Value::from(true)));
        assert_eq!(map.get("temperature"), Some(&Value::from(0.5)));
        assert!(map.get("messages").is_none());
        assert_eq!(request_top(b"[1,2]"), None);
        assert_eq!(request_top(b" \"text\" "), None);
        assert_eq!(
            request_top(br#"{"model":"gpt-4o","messages":[{"ro"#),
            Some(Err(()))
        );
        assert_eq!(request_top(br#"{"model":"x"} trailing"#), Some(Err(())));
        assert_eq!(request_top(b""), Some(Err(())));
    }

    #[test]
    fn closing_a_cut_text() {
        let cut = |s: &str| close_truncated(s.as_bytes());
        let v = cut(
            r#"{"id":"msg_1","content":[{"type":"tool_use","id":"toolu_1","input":{"a":1,"b":"tw"#,
        )
        .unwrap_or_default();
        assert_eq!(v["id"], "msg_1");
        assert_eq!(v[CUT_KEY], true);
        let block = &v["content"][0];
        assert_eq!(
            (&block["id"], &block[CUT_KEY]),
            (&"toolu_1".into(), &true.into())
        );
        let input = block["input"].as_object().cloned().unwrap_or_default();
        let keys: Vec<&str> = input.keys().map(String::as_str).collect();
        assert_eq!(keys, ["\u{0}cut", "a"]);
        // Cut keys, numbers and literals are dropped, not guessed.
        assert_eq!(
            cut(r#"{"a":[1,2"#),
            Some(serde_json::json!({"a":[1], CUT_KEY: true}))
        );
        assert_eq!(cut(r#"{"a":tr"#), Some(serde_json::json!({CUT_KEY: true})));
        assert_eq!(
            cut(r#"{"a":{"b":1},"c"#),
            Some(serde_json::json!({"a":{"b":1}, CUT_KEY: true}))
        );
        assert_eq!(
            cut(r#"[{"x":"y"}, {"#),
            Some(serde_json::json!([{"x":"y"}, {CUT_KEY: true}]))
        );
        assert_eq!(
            cut(r#" {"s":"a \"q\" b","#),
            Some(serde_json::json!({"s":"a \"q\" b", CUT_KEY: true}))
        );
        // Complete, not JSON, or broken inside: nothing.
        assert_eq!(cut(r#"{"a":1}"#), None);
        assert_eq!(cut("text"), None);
        assert_eq!(cut(r#"{"a":1 "b":2,"#), None);
        assert_eq!(cut(""), None);
        assert_eq!(cut(&"[".repeat(10_000)), None);
    }

    #[test]
    fn tool_names_of_a_cut_request() {
        let body = br#"{"model":"gpt-4o","tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"name":{"type":"string"}}}}} , {"type":"web_search"},{"type":"function","function":{"name":"get_ti"#;
        assert_eq!(
            top_level_tool_names(body),
            [vec!["get_weather".to_owned(), "web_search".into()], vec![]]
        );
        let body = br#"{"messages":[{"content":"\"tools\": [{\"name\":\"x\"}]"}],"functions":[{"name":"f1"}],"tools":"#;
        assert_eq!(top_level_tool_names(body), [vec![], vec!["f1".to_owned()]]);
        assert_eq!(
            top_level_tool_names(br#"{"tools":{"name":"x"},"#),
            <[Vec<String>; 2]>::default()
        );
    }

    #[test]
    fn usage_fallback() {
        let hay = br#"...","usage":{"input_tokens":5,"output_tokens":7},"user":null}}"#;
        let u = last_usage_object(hay).unwrap_or_default();
        assert_eq!(u.get("output_tokens").and_then(Value::as_u64), Some(7));
        assert!(last_usage_object(br#""usage": {"a":"#).is_none());
        assert!(last_usage_object(b"").is_none());
    }

    #[test]
    fn blank_line_skip() {
        assert_eq!(
            after_first_blank_line(b"ta\": 1}\n\ndata: x\n\n"),
            b"data: x\n\n"
        );
        assert_eq!(after_first_blank_line(b"a\r\n\r\nb"), b"b");
        assert_eq!(after_first_blank_line(b"abc"), b"");
    }
}
