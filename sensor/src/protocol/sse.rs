//! `text/event-stream` parsing per the WHATWG HTML spec, §9.2.6 "Interpreting
//! an event stream", applied to a whole (possibly truncated) captured body.

use memchr::memchr2;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, "message".
    pub event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// The last event ID in force when the event was dispatched (the spec
    /// carries it over to later events until another `id:` line changes it).
    pub id: Option<String>,
}

#[derive(Default)]
struct Pending {
    event: String,
    data: String,
    has_data: bool,
    last_id: String,
}

impl Pending {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b"event" => self.event = lossy(value),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            // An id containing NUL is ignored, per spec.
            b"id" if !value.contains(&0) => self.last_id = lossy(value),
            // `retry` only tunes reconnection; other names are ignored by spec.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            // Spec: no data => reset the buffers without dispatching.
            return;
        }
        out.push(SseEvent {
            event: (!event.is_empty()).then_some(event),
            data: std::mem::take(&mut self.data),
            id: (!self.last_id.is_empty()).then(|| self.last_id.clone()),
        });
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parse an event-stream body into events. Unlike a live client, a final event
/// lacking its terminating blank line is still returned if it has data, since
/// a captured body may be cut short; its last line may then be partial.
pub fn parse_events(body: &[u8]) -> Vec<SseEvent> {
    let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
    let mut out = Vec::new();
    let mut pending = Pending::default();
    let mut pos = 0;
    while let Some(rest) = body.get(pos..).filter(|r| !r.is_empty()) {
        let (line, used) = match memchr2(b'\r', b'\n', rest) {
            Some(i) => {
                let crlf = rest.get(i) == Some(&b'\r') && rest.get(i + 1) == Some(&b'\n');
                (
                    rest.get(..i).unwrap_or_default(),
                    i + if crlf { 2 } else { 1 },
                )
            }
            None => (rest, rest.len()),
        };
        pos += used;
        if line.is_empty() {
            pending.dispatch(&mut out);
        } else if line.first() == Some(&b':') {
            // Comment (often a keep-alive ping).
        } else {
            let (name, value) = match memchr::memchr(b':', line) {
                Some(c) => {
                    let value = line.get(c + 1..).unwrap_or_default();
                    let value = value.strip_prefix(b" ").unwrap_or(value);
                    (line.get(..c).unwrap_or_default(), value)
                }
                None => (line, &b""[..]),
            };
            pending.field(name, value);
        }
    }
    pending.dispatch(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn basic_and_multiline() {
        let body = b"data: a\ndata: b\n\nevent: ping\ndata:x\n\n";
        assert_eq!(
            parse_events(body),
            vec![ev(None, "a\nb", None), ev(Some("ping"), "x", None)]
        );
    }

    #[test]
    fn line_endings_mixed() {
        let body = b"data: 1\r\n\r\ndata: 2\r\rdata: 3\n\r\n";
        let got: Vec<_> = parse_events(body).into_iter().map(|e| e.data).collect();
        assert_eq!(got, vec!["1", "2", "3"]);
    }

    #[test]
    fn comments_retry_unknown_and_empty_data() {
        let body = b": keep-alive\nretry: 1000\nfoo: bar\n\ndata\n\ndata:\ndata:\n\n";
        // `data` with no colon is a data field with empty value.
        assert_eq!(
            parse_events(body),
            vec![ev(None, "", None), ev(None, "\n", None)]
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_type_resets() {
        let body = b"event: a\n\ndata: x\n\n";
        assert_eq!(parse_events(body), vec![ev(None, "x", None)]);
    }

    #[test]
    fn id_persists_and_nul_ignored() {
        let body = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\0\ndata: c\n\nid\ndata: d\n\n";
        let ids: Vec<_> = parse_events(body).into_iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            vec![Some("1".into()), Some("1".into()), Some("1".into()), None]
        );
    }

    #[test]
    fn only_one_leading_space_stripped_and_bom() {
        let body = "\u{feff}data:  two\n\n".as_bytes();
        assert_eq!(parse_events(body), vec![ev(None, " two", None)]);
    }

    #[test]
    fn truncated_final_event_is_returned() {
        let body = b"data: {\"a\":1}\n\ndata: {\"b\":";
        let got = parse_events(body);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].data, "{\"b\":");
        assert!(parse_events(b"").is_empty());
        assert!(parse_events(b"event: x\n").is_empty());
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        let got = parse_events(b"data: \xff\xfe\n\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].data.contains('\u{fffd}'));
    }
}
