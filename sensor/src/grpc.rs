//! A minimal gRPC client for unary calls over a Unix socket: HTTP/2 (h2)
//! on a tokio `UnixStream`, with the gRPC length-prefixed framing and the
//! `grpc-status` / `grpc-message` trailers. Messages are prost structs.
//!
//! No compression, no deadlines on the wire (wrap the call in
//! `tokio::time::timeout`), no streaming RPCs. Responses are capped at
//! [`MAX_RESPONSE_BYTES`].

use std::{fmt, future::poll_fn, path::Path};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode};
use tokio::net::UnixStream;

/// Why a unary call failed.
#[derive(Debug)]
pub enum GrpcError {
    /// Connecting to the socket.
    Connect(std::io::Error),
    /// The HTTP/2 layer (handshake, stream reset, connection closed).
    Http2(h2::Error),
    /// The server answered with a non-OK `grpc-status`.
    Status { code: u32, message: String },
    /// The answer was not a well-formed gRPC response.
    Protocol(String),
    /// The response message did not decode as the expected type.
    Decode(prost::DecodeError),
}

impl fmt::Display for GrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connecting: {e}"),
            Self::Http2(e) => write!(f, "HTTP/2: {e}"),
            Self::Status { code, message } => {
                write!(f, "grpc-status {code} ({}): {message}", code_name(*code))
            }
            Self::Protocol(what) => write!(f, "bad gRPC response: {what}"),
            Self::Decode(e) => write!(f, "decoding the response: {e}"),
        }
    }
}

impl std::error::Error for GrpcError {}

impl From<h2::Error> for GrpcError {
    fn from(e: h2::Error) -> Self {
        Self::Http2(e)
    }
}

/// The canonical name of a gRPC status code.
pub fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("?")
}

/// gRPC status UNKNOWN.
pub const UNKNOWN: u32 = 2;
/// gRPC status NOT_FOUND, as returned for an unknown container or sandbox.
pub const NOT_FOUND: u32 = 5;
/// gRPC status UNIMPLEMENTED: the server does not serve the method.
pub const UNIMPLEMENTED: u32 = 12;
/// Largest response accepted.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Calls the unary method `path` (`/package.Service/Method`) on the gRPC
/// server listening on the Unix socket `socket`, on a fresh connection.
/// `metadata` are extra request headers (containerd's
/// `containerd-namespace`).
pub async fn unary<Req, Resp>(
    socket: &Path,
    path: &str,
    req: &Req,
    metadata: &[(&str, &str)],
) -> Result<Resp, GrpcError>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    let stream = UnixStream::connect(socket)
        .await
        .map_err(GrpcError::Connect)?;
    let (client, connection) = h2::client::handshake(stream).await?;
    // The connection task moves frames; it ends when the client side is
    // dropped or the server closes.
    let driver = tokio::spawn(connection);
    let result = call(client, path, req, metadata).await;
    driver.abort();
    result
}

async fn call<Req, Resp>(
    client: h2::client::SendRequest<Bytes>,
    path: &str,
    req: &Req,
    metadata: &[(&str, &str)],
) -> Result<Resp, GrpcError>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    // The authority is not used over a Unix socket; grpc-go accepts any.
    let mut request = Request::builder();
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    let request = request
        .method(Method::POST)
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| GrpcError::Protocol(format!("building the request: {e}")))?;
    let mut client = client.ready().await?;
    let (response, mut body) = client.send_request(request, false)?;
    send_all(&mut body, frame(req)).await?;

    let response = response.await?;
    let (head, mut recv) = response.into_parts();
    if head.status != StatusCode::OK {
        return Err(GrpcError::Protocol(format!("HTTP status {}", head.status)));
    }
    // A "trailers-only" response carries grpc-status in the headers.
    if head.headers.contains_key("grpc-status") {
        check_status(&head.headers)?;
        return Err(GrpcError::Protocol(
            "OK status without a response message".into(),
        ));
    }
    let mut data = BytesMut::new();
    while let Some(chunk) = poll_fn(|cx| recv.poll_data(cx)).await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        if data.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(GrpcError::Protocol(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        data.extend_from_slice(&chunk);
    }
    let trailers = recv
        .trailers()
        .await?
        .ok_or_else(|| GrpcError::Protocol("no trailers (no grpc-status)".into()))?;
    check_status(&trailers)?;
    unframe(data.freeze())
}

/// Sends `data` as the request body, respecting HTTP/2 flow control, and
/// ends the stream.
async fn send_all(body: &mut h2::SendStream<Bytes>, mut data: Bytes) -> Result<(), GrpcError> {
    while !data.is_empty() {
        body.reserve_capacity(data.len());
        let granted = poll_fn(|cx| body.poll_capacity(cx))
            .await
            .ok_or_else(|| GrpcError::Protocol("stream closed while sending".into()))??;
        let part = data.split_to(granted.min(data.len()));
        body.send_data(part, data.is_empty())?;
    }
    Ok(())
}

/// One gRPC message: compressed flag (0), big-endian length, protobuf.
fn frame(msg: &impl prost::Message) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer with enough capacity cannot fail.
    let _ = msg.encode(&mut buf);
    buf.freeze()
}

/// Decodes exactly one uncompressed message.
fn unframe<Resp: prost::Message + Default>(mut data: Bytes) -> Result<Resp, GrpcError> {
    if data.len() < 5 {
        return Err(GrpcError::Protocol(format!(
            "{} bytes of body, less than a message header",
            data.len()
        )));
    }
    let compressed = data.get_u8();
    let len = data.get_u32() as usize;
    if compressed != 0 {
        return Err(GrpcError::Protocol(
            "compressed message (none was offered)".into(),
        ));
    }
    if data.len() != len {
        return Err(GrpcError::Protocol(format!(
            "message length {len}, {} bytes follow (a unary call has one message)",
            data.len()
        )));
    }
    Resp::decode(data).map_err(GrpcError::Decode)
}

fn check_status(headers: &HeaderMap) -> Result<(), GrpcError> {
    let code = headers
        .get("grpc-status")
        .ok_or_else(|| GrpcError::Protocol("no grpc-status".into()))?
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| GrpcError::Protocol("grpc-status is not a number".into()))?;
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Err(GrpcError::Status { code, message })
}

/// grpc-message is percent-encoded UTF-8.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if raw[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                raw.get(i + 1).and_then(|b| hex(*b)),
                raw.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Probe {
        #[prost(string, tag = "1")]
        text: String,
        #[prost(uint32, tag = "2")]
        n: u32,
    }

    #[test]
    fn frame_round_trip() {
        let msg = Probe {
            text: "hello".into(),
            n: 7,
        };
        let framed = frame(&msg);
        assert_eq!(framed[0], 0);
        assert_eq!(
            u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
            framed.len() - 5
        );
        let back: Probe = unframe(framed).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn unframe_rejects_truncated_and_compressed() {
        assert!(unframe::<Probe>(Bytes::from_static(&[0, 0, 0])).is_err());
        assert!(unframe::<Probe>(Bytes::from_static(&[0, 0, 0, 0, 4, 1])).is_err());
        assert!(unframe::<Probe>(Bytes::from_static(&[1, 0, 0, 0, 0])).is_err());
        assert_eq!(
            unframe::<Probe>(Bytes::from_static(&[0, 0, 0, 0, 0])).unwrap(),
            Probe::default()
        );
    }

    #[test]
    fn status_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(check_status(&h).is_ok());
        h.insert("grpc-status", "5".parse().unwrap());
        h.insert(
            "grpc-message",
            "an error occurred when try to find container %22x%22: not found"
                .parse()
                .unwrap(),
        );
        match check_status(&h) {
            Err(GrpcError::Status { code, message }) => {
                assert_eq!(code, NOT_FOUND);
                assert_eq!(
                    message,
                    "an error occurred when try to find container \"x\": not found"
                );
            }
            other => panic!("{other:?}"),
        }
        h.remove("grpc-status");
        assert!(matches!(check_status(&h), Err(GrpcError::Protocol(_))));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%20b%zz%4"), "a b%zz%4");
        assert_eq!(percent_decode("%C3%A9".as_bytes()), "é");
    }
}
