//! Tools: the names a request declares and the calls a response asks for.
//!
//! Argument values are read only to find their top-level keys and are never
//! kept: a call is reported as its id, name and argument keys.

use std::collections::BTreeMap;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::ToolCall;

/// At most this many declared tools, and this many calls, are reported.
pub(super) const MAX_TOOLS: usize = 64;
/// Tool names and call ids are cut to this many characters.
pub(super) const MAX_NAME_CHARS: usize = 128;
/// At most this many argument keys are reported per call.
pub(super) const MAX_ARGUMENT_KEYS: usize = 32;
/// Member added by `json::close_truncated` to each object it had to close:
/// such an object is partial, so its keys are not reported.
pub(super) const CUT_KEY: &str = "\u{0}cut";

/// `s` cut to `MAX_NAME_CHARS` characters.
pub(super) fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_NAME_CHARS) {
        Some((at, _)) => s.get(..at).unwrap_or_default().to_owned(),
        None => s.to_owned(),
    }
}

/// Add a declared tool name: cut, deduplicated, and only while there is room.
pub(super) fn push_name(names: &mut Vec<String>, name: &str) {
    let name = clip(name);
    if names.len() < MAX_TOOLS && !name.is_empty() && !names.contains(&name) {
        names.push(name);
    }
}

/// The name of a tool declaration: `function.name` (Chat Completions),
/// `custom.name` (Chat Completions custom tools), `name` (Responses API
/// functions, Anthropic, legacy `functions`), else the `type` of a built-in
/// tool (`web_search`, `file_search`, `code_interpreter`, `mcp`, ...).
pub(super) fn declared_name(decl: &Value) -> Option<&str> {
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|s| !s.is_empty())
    }
    let nested = |k: &str| text(decl.get(k).and_then(|o| o.get("name")));
    let ty = text(decl.get("type")).filter(|t| !matches!(*t, "function" | "custom"));
    nested("function")
        .or_else(|| nested("custom"))
        .or_else(|| text(decl.get("name")))
        .or(ty)
}

/// Declared tool names of a `tools` or `functions` array, read one
/// declaration at a time; anything other than an array declares none.
pub(super) struct ToolNames(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for ToolNames {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ToolNamesVisitor)
    }
}

struct ToolNamesVisitor;

impl<'de> Visitor<'de> for ToolNamesVisitor {
    type Value = ToolNames;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of tool declarations")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut names = Vec::new();
        while let Some(decl) = seq.next_element::<Value>()? {
            if let Some(name) = declared_name(&decl) {
                push_name(&mut names, name);
            }
        }
        Ok(ToolNames(names))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(ToolNames(Vec::new()))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(ToolNames(Vec::new()))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(ToolNames(Vec::new()))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(ToolNames(Vec::new()))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(ToolNames(Vec::new()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(ToolNames(Vec::new()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(ToolNames(Vec::new()))
    }
}

/// Top-level keys of arguments given as JSON text (OpenAI), or as an object
/// (Anthropic `input`, and compatible servers that send OpenAI `arguments`
/// as an object).
pub(super) fn keys_of(args: Option<&Value>) -> Vec<String> {
    match args {
        Some(Value::String(text)) => keys_of_text(text),
        other => keys_of_object(other),
    }
}

/// Top-level keys of arguments given as JSON text (OpenAI), when the text is
/// one whole JSON object; values are skipped, not built. A cut text never
/// parses: an object is complete only at its closing brace.
pub(super) fn keys_of_text(args: &str) -> Vec<String> {
    match serde_json::from_str::<BTreeMap<String, IgnoredAny>>(args) {
        Ok(map) => bounded_keys(map.into_keys()),
        Err(_) => Vec::new(),
    }
}

/// Top-level keys of arguments given as a JSON object (Anthropic `input`),
/// unless the object was closed by `json::close_truncated`.
pub(super) fn keys_of_object(v: Option<&Value>) -> Vec<String> {
    match v.and_then(Value::as_object) {
        Some(obj) if !obj.contains_key(CUT_KEY) => bounded_keys(obj.keys().cloned()),
        _ => Vec::new(),
    }
}

/// Keys cut, sorted, deduplicated, and at most `MAX_ARGUMENT_KEYS`.
fn bounded_keys(keys: impl Iterator<Item = String>) -> Vec<String> {
    let mut keys: Vec<String> = keys.map(|k| clip(&k)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.truncate(MAX_ARGUMENT_KEYS);
    keys
}

/// A non-empty string member, cut.
pub(super) fn name_at(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(clip)
}

/// Add a call from a whole response object; one without a name is dropped.
pub(super) fn push_call(
    calls: &mut Vec<ToolCall>,
    id: Option<String>,
    name: Option<String>,
    argument_keys: Vec<String>,
) {
    if let (Some(name), true) = (name, calls.len() < MAX_TOOLS) {
        calls.push(ToolCall {
            id,
            name,
            argument_keys,
        });
    }
}

/// Where a streamed call sits: (choice index, tool call index) for Chat
/// Completions, (0, content block index) for Anthropic, (0, output index)
/// for the Responses API.
pub(super) type Slot = (u64, u64);

/// Tool calls assembled from stream events.
///
/// Pieces of arguments are concatenated per slot. The text is trusted only
/// when no piece may be missing in between: a lost piece can leave text
/// that still parses, with keys missing. So a call is broken when it gets
/// more pieces after events were lost, and every concatenated call is when
/// the captured body itself lost bytes (at a place we cannot tell). A text
/// that merely stops early is safe: a JSON object is whole only at its end.
pub(super) struct Assembler {
    /// No `Debug`: `args` holds argument values.
    calls: Vec<Pending>,
    /// The captured body lost bytes somewhere.
    holes: bool,
}

struct Pending {
    slot: Slot,
    id: Option<String>,
    name: Option<String>,
    args: String,
    /// `args` was concatenated from pieces (not given whole).
    pieced: bool,
    finished: bool,
    /// Events were lost while the call was unfinished.
    gap: bool,
    broken: bool,
}

impl Pending {
    /// Append a piece of arguments text: after lost events or after the end
    /// of the call, something is missing or off.
    fn add(&mut self, args: &str) {
        self.broken |= self.gap || self.finished;
        self.pieced = true;
        self.args.push_str(args);
    }
}

impl Assembler {
    pub(super) fn new(whole_body: bool) -> Self {
        Assembler {
            calls: Vec::new(),
            holes: !whole_body,
        }
    }

    /// Index of a new call at `slot`, if there is room.
    fn push(&mut self, slot: Slot) -> Option<usize> {
        if self.calls.len() >= MAX_TOOLS {
            return None;
        }
        self.calls.push(Pending {
            slot,
            id: None,
            name: None,
            args: String::new(),
            pieced: false,
            finished: false,
            gap: false,
            broken: false,
        });
        Some(self.calls.len() - 1)
    }

    /// A call starts at `slot` (Anthropic `content_block_start`); an
    /// unfinished one there is superseded, and broken.
    pub(super) fn start(&mut self, slot: Slot, id: Option<&str>, name: Option<&str>) {
        for c in self.calls.iter_mut().filter(|c| c.slot == slot) {
            c.broken |= !c.finished;
            c.finished = true;
        }
        if let Some(c) = self.push(slot).and_then(|i| self.calls.get_mut(i)) {
            c.id = id.filter(|s| !s.is_empty()).map(clip);
            c.name = name.filter(|s| !s.is_empty()).map(clip);
        }
    }

    /// The call at `slot`, a new one when there is none or `id` or `name`
    /// is another call's (servers that reuse an index for parallel calls);
    /// id and name fill in what it is missing.
    fn locate(&mut self, slot: Slot, id: Option<&str>, name: Option<&str>) -> Option<&mut Pending> {
        let id = id.filter(|s| !s.is_empty()).map(clip);
        let name = name.filter(|s| !s.is_empty()).map(clip);
        let differs = |new: &Option<String>, old: &Option<String>| matches!((new, old), (Some(new), Some(old)) if new != old);
        let same = |c: &Pending| !differs(&id, &c.id) && !differs(&name, &c.name);
        let at = self.calls.iter().rposition(|c| c.slot == slot);
        let at = match at.filter(|&i| self.calls.get(i).is_some_and(same)) {
            Some(i) => Some(i),
            None => self.push(slot),
        };
        let call = at.and_then(|i| self.calls.get_mut(i))?;
        if call.id.is_none() {
            call.id = id;
        }
        if call.name.is_none() {
            call.name = name;
        }
        Some(call)
    }

    /// A piece of the call at `slot` (Chat Completions deltas: the first
    /// carries id and name, the others more arguments text to append).
    pub(super) fn piece(&mut self, slot: Slot, id: Option<&str>, name: Option<&str>, args: &str) {
        if let Some(call) = self.locate(slot, id, name)
            && !args.is_empty()
        {
            call.add(args);
        }
    }

    /// More arguments text for the call already at `slot` (Anthropic
    /// `input_json_delta`); none is started.
    pub(super) fn append(&mut self, slot: Slot, args: &str) {
        let at = self.calls.iter().rposition(|c| c.slot == slot);
        if let Some(call) = at.and_then(|i| self.calls.get_mut(i))
            && !args.is_empty()
        {
            call.add(args);
        }
    }

    /// The whole arguments of the call at `slot` (Responses API `done`
    /// events), which replace any pieces; the call is finished.
    pub(super) fn whole(&mut self, slot: Slot, id: Option<&str>, name: Option<&str>, args: &str) {
        if let Some(call) = self.locate(slot, id, name) {
            call.args.clear();
            call.args.push_str(args);
            call.pieced = false;
            call.gap = false;
            call.broken = false;
            call.finished = true;
        }
    }

    /// The calls at the slots `which` selects are over.
    pub(super) fn finish(&mut self, which: impl Fn(Slot) -> bool) {
        for c in self.calls.iter_mut().filter(|c| which(c.slot)) {
            c.finished = true;
        }
    }

    /// Events may be missing here: unfinished calls that get more pieces
    /// after this lose their keys.
    pub(super) fn lost(&mut self) {
        for c in self.calls.iter_mut().filter(|c| !c.finished) {
            c.gap = true;
        }
    }

    /// The calls in slot order; those that never got a name are dropped.
    pub(super) fn into_calls(mut self) -> Vec<ToolCall> {
        self.calls.sort_by_key(|c| c.slot);
        let holes = self.holes;
        self.calls
            .into_iter()
            .filter_map(|c| {
                let trusted = !(c.broken || (c.pieced && holes));
                Some(ToolCall {
                    id: c.id,
                    name: c.name?,
                    argument_keys: if trusted {
                        keys_of_text(&c.args)
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_on_char_boundaries() {
        let long = "é".repeat(200);
        assert_eq!(clip(&long).chars().count(), MAX_NAME_CHARS);
        assert_eq!(clip("get_weather"), "get_weather");
        let mut names = Vec::new();
        for i in 0..100 {
            push_name(&mut names, &format!("tool_{}", i % 70));
        }
        assert_eq!(names.len(), MAX_TOOLS);
        assert_eq!(names.first().map(String::as_str), Some("tool_0"));
    }

    #[test]
    fn argument_keys() {
        assert_eq!(
            keys_of_text(r#"{"unit":"c","location":"Paris, France","unit":"f"}"#),
            vec!["location", "unit"]
        );
        assert!(keys_of_text(r#"{"location":"Par"#).is_empty());
        assert!(keys_of_text(r#"{"a":1}{"b":2}"#).is_empty());
        assert!(keys_of_text(r#"["a"]"#).is_empty());
        assert!(keys_of_text("").is_empty());
        let many: Vec<String> = (0..50).map(|i| format!("\"k{i:02}\":{i}")).collect();
        let keys = keys_of_text(&format!("{{{}}}", many.join(",")));
        assert_eq!(keys.len(), MAX_ARGUMENT_KEYS);
        assert_eq!(keys.first().map(String::as_str), Some("k00"));
        let cut = serde_json::json!({"a": 1, CUT_KEY: true});
        assert!(keys_of_object(Some(&cut)).is_empty());
        assert_eq!(
            keys_of_object(Some(&serde_json::json!({"b": 1, "a": {"x": 2}}))),
            vec!["a", "b"]
        );
    }

    #[test]
    fn declared_names() {
        let cases = [
            (
                r#"{"type":"function","function":{"name":"get_weather"}}"#,
                Some("get_weather"),
            ),
            (r#"{"type":"function","name":"f2"}"#, Some("f2")),
            (
                r#"{"type":"custom","custom":{"name":"grammar"}}"#,
                Some("grammar"),
            ),
            (
                r#"{"type":"web_search_preview"}"#,
                Some("web_search_preview"),
            ),
            (
                r#"{"type":"web_search_20250305","name":"web_search"}"#,
                Some("web_search"),
            ),
            (r#"{"type":"function"}"#, None),
            (r#"{"name":""}"#, None),
            ("3", None),
        ];
        for (decl, want) in cases {
            let v: Value = serde_json::from_str(decl).unwrap_or_default();
            assert_eq!(declared_name(&v), want, "{decl}");
        }
    }

    #[test]
    fn assembler_breaks_calls_across_lost_events() {
        let mut a = Assembler::new(true);
        a.start((0, 1), Some("toolu_1"), Some("a"));
        a.append((0, 1), r#"{"x":1"#);
        a.lost();
        a.append((0, 1), "}");
        a.start((0, 2), Some("toolu_2"), Some("b"));
        a.append((0, 2), r#"{"y":2}"#);
        a.append((0, 3), r#"{"z":3}"#);
        a.finish(|s| s == (0, 2));
        a.lost();
        let calls = a.into_calls();
        assert_eq!(calls.len(), 2);
        assert!(calls.first().is_some_and(|c| c.argument_keys.is_empty()));
        assert_eq!(
            calls.get(1).map(|c| c.argument_keys.clone()),
            Some(vec!["y".into()])
        );

        // A server reusing index 0 for parallel calls.
        let mut a = Assembler::new(true);
        a.piece((0, 0), Some("call_1"), Some("f"), r#"{"a":1}"#);
        a.piece((0, 0), Some("call_2"), Some("f"), r#"{"b":1}"#);
        a.piece((0, 0), None, Some("g"), r#"{"c":1}"#);
        let calls = a.into_calls();
        let keys: Vec<_> = calls.iter().map(|c| c.argument_keys.concat()).collect();
        assert_eq!(keys, ["a", "b", "c"]);

        // Events lost after the last piece take nothing away from the text.
        let mut a = Assembler::new(true);
        a.piece((0, 0), Some("call_1"), Some("f"), r#"{"k":"#);
        a.piece((0, 0), None, None, "1}");
        a.lost();
        let calls = a.into_calls();
        assert!(calls.first().is_some_and(|c| c.argument_keys == ["k"]));

        let mut a = Assembler::new(false);
        a.piece((0, 0), Some("call_1"), Some("f"), r#"{"k":1}"#);
        a.whole((0, 1), Some("call_2"), Some("g"), r#"{"k":1}"#);
        a.piece((0, 2), Some("call_3"), None, r#"{"k":1}"#);
        let calls = a.into_calls();
        assert_eq!(calls.len(), 2, "a call without a name is dropped");
        assert!(calls.first().is_some_and(|c| c.argument_keys.is_empty()));
        assert!(calls.get(1).is_some_and(|c| c.argument_keys == ["k"]));
    }
}
