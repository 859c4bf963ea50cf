//! What each frame does to the connection's streams: header blocks become
//! requests and responses, DATA feeds bodies, END_STREAM and RST_STREAM
//! complete exchanges, SETTINGS and GOAWAY adjust limits and refuse streams.

use sensor_common::Direction;

use super::frames::{self, Event, FrameHead};
use super::streams::{Half, Message, Stream};
use super::{
    DEFAULT_FRAME_LIMIT, Http2Connection, Http2Error, Http2Item, MAX_FRAME_LIMIT,
    MAX_HEADER_LIST_BYTES, MAX_OPEN_STREAMS, PendingBlock, SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
};
use crate::protocol::hpack::{self, Decoder, Limits, Overflow};
use crate::protocol::http1::{MAX_HEADER_BYTES, MAX_HEADER_COUNT};

impl Http2Connection {
    pub(super) fn on_event(
        &mut self,
        direction: Direction,
        ts: u64,
        event: Event<'_>,
        out: &mut Vec<Http2Item>,
    ) {
        match event {
            Event::Start(head) => self.on_frame_start(direction, ts, head, out),
            Event::Data(head, bytes) => self.on_data(direction, head, bytes),
            Event::End {
                head,
                payload,
                start_ts,
            } => self.on_frame_end(direction, ts, head, &payload, start_ts, out),
            Event::Fatal(e) => self.fail(e, direction, out),
            Event::Error(e) => self.error(e, out),
        }
    }

    fn on_frame_start(
        &mut self,
        direction: Direction,
        ts: u64,
        head: FrameHead,
        out: &mut Vec<Http2Item>,
    ) {
        self.stats.frames = self.stats.frames.saturating_add(1);
        // RFC 9113 §6.10: nothing may come between a header block's frames.
        match &self.side_mut(direction).block {
            Some(b) if head.kind != frames::CONTINUATION || head.stream != b.stream => {
                let e = Http2Error::ContinuationExpected {
                    direction,
                    stream: b.stream,
                    kind: head.kind,
                    got: head.stream,
                };
                return self.fail(e, direction, out);
            }
            None if head.kind == frames::CONTINUATION => {
                let e = Http2Error::UnexpectedContinuation {
                    direction,
                    stream: head.stream,
                };
                return self.fail(e, direction, out);
            }
            _ => {}
        }
        if head.kind == frames::DATA
            && let Some(s) = self.streams.get_mut(&head.stream)
        {
            let half = half_mut(s, direction);
            half.wire_size = half.wire_size.saturating_add(head.wire_len());
            half.last_ts = ts;
        }
    }

    fn on_data(&mut self, direction: Direction, head: FrameHead, bytes: &[u8]) {
        let Some(s) = self.streams.get_mut(&head.stream) else {
            return;
        };
        let half = half_mut(s, direction);
        // DATA before HEADERS or after END_STREAM is a protocol error: skip.
        if !half.started || half.ended {
            return;
        }
        let grown = half.append(bytes, self.body_cap, direction == Direction::Ingress);
        self.retained = self.retained.saturating_add(grown);
    }

    fn on_frame_end(
        &mut self,
        direction: Direction,
        ts: u64,
        head: FrameHead,
        payload: &[u8],
        start_ts: u64,
        out: &mut Vec<Http2Item>,
    ) {
        match head.kind {
            frames::DATA if head.has(frames::FLAG_END_STREAM) => {
                self.end_half(direction, head.stream, ts, out);
            }
            frames::HEADERS | frames::PUSH_PROMISE => {
                let promise = head.kind == frames::PUSH_PROMISE;
                let fragment = if promise {
                    frames::push_promise_fragment(head, payload)
                } else {
                    frames::headers_fragment(head, payload)
                };
                let Some(fragment) = fragment else {
                    let e = Http2Error::BadHeaderFrame {
                        direction,
                        stream: head.stream,
                        what: "padding or priority longer than the frame",
                    };
                    return self.fail(e, direction, out);
                };
                let block = PendingBlock {
                    stream: head.stream,
                    promise,
                    end_stream: !promise && head.has(frames::FLAG_END_STREAM),
                    buf: fragment.to_vec(),
                    wire: head.wire_len(),
                    first_ts: start_ts,
                };
                self.block_fragment(direction, ts, head, block, out);
            }
            frames::CONTINUATION => {
                let Some(mut block) = self.side_mut(direction).block.take() else {
                    return;
                };
                block.buf.extend_from_slice(payload);
                block.wire = block.wire.saturating_add(head.wire_len());
                self.block_fragment(direction, ts, head, block, out);
            }
            frames::RST_STREAM => {
                self.stats.resets = self.stats.resets.saturating_add(1);
                if let Some(s) = self.streams.get_mut(&head.stream) {
                    s.reset = true;
                    half_mut(s, direction).last_ts = ts;
                    self.maybe_report(head.stream, out);
                }
            }
            frames::SETTINGS if !head.has(frames::FLAG_ACK) => {
                self.apply_settings(direction, payload);
            }
            frames::GOAWAY if direction == Direction::Ingress => {
                if let Some(&[a, b, c, d]) = payload.get(..4) {
                    let last = u32::from_be_bytes([a, b, c, d]) & 0x7fff_ffff;
                    self.refused_above(last, out);
                }
            }
            // PRIORITY, PING, WINDOW_UPDATE, SETTINGS ACK, client GOAWAY,
            // extension frames: nothing to track.
            _ => {}
        }
    }

    /// A header block grew by one frame: decode it once complete.
    fn block_fragment(
        &mut self,
        direction: Direction,
        ts: u64,
        head: FrameHead,
        block: PendingBlock,
        out: &mut Vec<Http2Item>,
    ) {
        if block.buf.len() > MAX_HEADER_BYTES {
            let e = Http2Error::HeaderBlockTooLarge {
                direction,
                stream: block.stream,
                limit: MAX_HEADER_BYTES,
            };
            return self.fail(e, direction, out);
        }
        if !head.has(frames::FLAG_END_HEADERS) {
            self.side_mut(direction).block = Some(block);
            return;
        }
        let limits = Limits {
            max_fields: MAX_HEADER_COUNT,
            max_bytes: MAX_HEADER_LIST_BYTES,
        };
        let decoded = match self.side_mut(direction).decoder.decode(&block.buf, limits) {
            Ok(d) => d,
            Err(source) => {
                return self.fail(Http2Error::Hpack { direction, source }, direction, out);
            }
        };
        let stream = block.stream;
        match decoded.overflow {
            Some(Overflow::Fields) => self.error(
                Http2Error::TooManyHeaders {
                    stream,
                    limit: MAX_HEADER_COUNT,
                },
                out,
            ),
            Some(Overflow::Bytes) => self.error(
                Http2Error::HeaderListTooLarge {
                    stream,
                    limit: MAX_HEADER_LIST_BYTES,
                },
                out,
            ),
            None => {}
        }
        // Promised streams are not tracked; stream 0 carries no message.
        if block.promise || stream == 0 {
            return;
        }
        match direction {
            Direction::Egress => self.request_block(ts, block, decoded.fields, out),
            Direction::Ingress => self.response_block(ts, block, decoded.fields, out),
        }
    }

    fn request_block(
        &mut self,
        ts: u64,
        block: PendingBlock,
        fields: Vec<hpack::Field>,
        out: &mut Vec<Http2Item>,
    ) {
        let id = block.stream;
        if !self.streams.contains_key(&id) {
            // Client streams are odd and increasing (RFC 9113 §5.1.1); a
            // block for an older one (e.g. trailers of a stream already
            // reported) is not a new request.
            if id & 1 == 0 || id <= self.last_egress_id {
                return;
            }
            self.make_room(out);
            self.streams.insert(id, Stream::default());
        }
        self.last_egress_id = self.last_egress_id.max(id);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let message = Message::from_fields(fields, true);
        let (grown, dropped) = if s.req.started {
            s.req.add_fields(message.headers)
        } else {
            self.stats.streams = self.stats.streams.saturating_add(1);
            s.req.first_ts = block.first_ts;
            message.into_request(&mut s.req)
        };
        s.req.wire_size = s.req.wire_size.saturating_add(block.wire);
        s.req.last_ts = ts;
        self.retained = self.retained.saturating_add(grown);
        if dropped {
            let limit = MAX_HEADER_COUNT;
            self.error(Http2Error::TooManyHeaders { stream: id, limit }, out);
        }
        if block.end_stream {
            self.end_half(Direction::Egress, id, ts, out);
        } else {
            // The request headers may be what a response waited for.
            self.maybe_report(id, out);
        }
    }

    fn response_block(
        &mut self,
        ts: u64,
        block: PendingBlock,
        fields: Vec<hpack::Field>,
        out: &mut Vec<Http2Item>,
    ) {
        let id = block.stream;
        if !self.streams.contains_key(&id) {
            // A response whose request was not captured yet (records of the
            // two directions can be reported out of order) opens the stream;
            // anything else (pushed streams, streams already reported) is
            // not tracked.
            if id & 1 == 0
                || id <= self.last_egress_id
                || id <= self.last_ingress_id
                || self.egress.reader.is_stopped()
            {
                return;
            }
            self.make_room(out);
            self.streams.insert(id, Stream::default());
            self.last_ingress_id = id;
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.resp.wire_size = s.resp.wire_size.saturating_add(block.wire);
        s.resp.last_ts = ts;
        let message = Message::from_fields(fields, false);
        let (grown, dropped) = if s.resp.started {
            s.resp.add_fields(message.headers)
        } else if message.status.is_some_and(|st| (100..200).contains(&st)) {
            // Interim response (RFC 9113 §8.1): the final one follows.
            return;
        } else {
            s.resp.first_ts = block.first_ts;
            message.into_response(&mut s.resp)
        };
        self.retained = self.retained.saturating_add(grown);
        if dropped {
            let limit = MAX_HEADER_COUNT;
            self.error(Http2Error::TooManyHeaders { stream: id, limit }, out);
        }
        if block.end_stream {
            self.end_half(Direction::Ingress, id, ts, out);
        }
    }

    fn end_half(&mut self, direction: Direction, id: u32, ts: u64, out: &mut Vec<Http2Item>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let req_started = s.req.started;
        let half = half_mut(s, direction);
        if !half.started || half.ended {
            return;
        }
        half.ended = true;
        half.last_ts = ts;
        if direction == Direction::Ingress && !req_started {
            s.resp_before_req = true;
        }
        self.maybe_report(id, out);
    }

    /// Reports the stream if nothing more can be learnt about it.
    fn maybe_report(&mut self, id: u32, out: &mut Vec<Http2Item>) {
        let egress_stopped = self.egress.reader.is_stopped();
        let ingress_stopped = self.ingress.reader.is_stopped();
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        let done = if !s.req.started {
            // A response still waiting for its request: drop it once the
            // request can no longer come.
            egress_stopped || s.reset
        } else {
            s.reset
                || (s.resp.ended && (!s.resp_before_req || s.req.ended || egress_stopped))
                || (ingress_stopped && (s.req.ended || egress_stopped))
        };
        if done {
            self.report(id, out);
        }
    }

    /// Removes the stream; reports it when its request was seen.
    pub(super) fn report(&mut self, id: u32, out: &mut Vec<Http2Item>) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        self.retained = self.retained.saturating_sub(s.mem());
        if !s.req.started {
            self.stats.responses_without_request =
                self.stats.responses_without_request.saturating_add(1);
            return;
        }
        self.stats.exchanges = self.stats.exchanges.saturating_add(1);
        let (request, response) = s.into_exchange();
        out.push(Http2Item::Exchange(request, response));
    }

    /// GOAWAY: the server did not and will not process streams above
    /// `last` (RFC 9113 §6.8); their requests get no response.
    fn refused_above(&mut self, last: u32, out: &mut Vec<Http2Item>) {
        let ids: Vec<u32> = self
            .streams
            .range(last.saturating_add(1)..)
            .filter(|(_, s)| !s.resp.started)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(s) = self.streams.get_mut(&id) {
                s.reset = true;
            }
            self.maybe_report(id, out);
        }
    }

    /// SETTINGS bound the other direction: what the client announces
    /// bounds the server's frames and encoder (ingress), and vice versa.
    fn apply_settings(&mut self, direction: Direction, payload: &[u8]) {
        let other = match direction {
            Direction::Egress => &mut self.ingress,
            Direction::Ingress => &mut self.egress,
        };
        for entry in payload.chunks_exact(6) {
            let &[i0, i1, v0, v1, v2, v3] = entry else {
                continue;
            };
            let value = u32::from_be_bytes([v0, v1, v2, v3]);
            match u16::from_be_bytes([i0, i1]) {
                SETTINGS_HEADER_TABLE_SIZE => other.decoder.set_peer_setting(value),
                SETTINGS_MAX_FRAME_SIZE => {
                    other.reader.frame_limit = value.clamp(DEFAULT_FRAME_LIMIT, MAX_FRAME_LIMIT);
                }
                _ => {}
            }
        }
    }

    /// Makes room for one more stream by reporting the oldest.
    fn make_room(&mut self, out: &mut Vec<Http2Item>) {
        while self.streams.len() >= MAX_OPEN_STREAMS {
            let Some(&id) = self.streams.keys().next() else {
                return;
            };
            self.stats.streams_evicted = self.stats.streams_evicted.saturating_add(1);
            self.report(id, out);
        }
    }

    /// Reports the oldest streams (as cut) while open streams hold more than
    /// the budget.
    pub(super) fn enforce_budget(&mut self, out: &mut Vec<Http2Item>) {
        if self.retained <= self.retained_budget {
            return;
        }
        self.retained = self
            .streams
            .values()
            .map(Stream::mem)
            .fold(0usize, usize::saturating_add);
        // Down to three quarters, so that the exact count is not redone on
        // every chunk near the limit.
        let target = (self.retained_budget / 4).saturating_mul(3);
        if self.retained <= self.retained_budget {
            return;
        }
        while self.retained > target {
            let Some(&id) = self.streams.keys().next() else {
                break;
            };
            self.stats.streams_evicted = self.stats.streams_evicted.saturating_add(1);
            self.report(id, out);
        }
    }

    fn error(&mut self, e: Http2Error, out: &mut Vec<Http2Item>) {
        self.stats.errors = self.stats.errors.saturating_add(1);
        out.push(Http2Item::Error(e));
    }

    /// Reports `e` and stops `direction`; reports the streams that can no
    /// longer complete.
    pub(super) fn fail(&mut self, e: Http2Error, direction: Direction, out: &mut Vec<Http2Item>) {
        self.error(e, out);
        let side = self.side_mut(direction);
        side.reader.stop();
        side.block = None;
        side.decoder = Decoder::new();
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.maybe_report(id, out);
        }
    }
}

fn half_mut(s: &mut Stream, direction: Direction) -> &mut Half {
    match direction {
        Direction::Egress => &mut s.req,
        Direction::Ingress => &mut s.resp,
    }
}
