//! The parts of a TLS ClientHello the sensor reports: the server name
//! (SNI, RFC 6066 §3) and the offered application protocols (ALPN, RFC
//! 7301). Read from the first bytes a client writes on a socket, so it
//! works for every TLS client, probed or not (rustls, Java, anything).
//!
//! The input is the start of a record stream, possibly cut (the kernel
//! copies at most a few KiB): whatever lies in the bytes present is
//! returned, and nothing here trusts a length field.

/// What a ClientHello says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `server_name`'s host name, lower-cased; `None` when the client sent
    /// none (an IP literal destination) or it lies past the bytes captured.
    pub server_name: Option<String>,
    /// ALPN protocol names in the client's order (`h2`, `http/1.1`, ...).
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("not a TLS handshake record")]
    NotHandshake,
    #[error("not a ClientHello")]
    NotClientHello,
    #[error("ClientHello cut before its extensions")]
    Truncated,
}

/// A cursor that fails instead of reading past the end.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.data.get(..n)?, self.data.get(n..)?);
        self.data = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    /// A vector with a one-byte or two-byte length prefix, whole or not
    /// at all: a value (a name) is never reported cut.
    fn vec_exact(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = match width {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(len)
    }

    /// A vector with a `width`-byte length prefix, cut to what is present
    /// (for containers whose items are read with [`Self::vec_exact`]).
    fn vec(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = match width {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        let len = len.min(self.data.len());
        self.take(len)
    }
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const HOST_NAME: u8 = 0;

/// Parses the start of a client's TLS stream.
pub fn parse(data: &[u8]) -> Result<ClientHello, HelloError> {
    // The handshake message may span records: join the fragments of the
    // records present (a ClientHello larger than one record is rare).
    let mut records = Reader { data };
    let mut message = Vec::new();
    while let Some(kind) = records.u8() {
        let (Some(_version), Some(len)) = (records.u16(), records.u16()) else {
            break;
        };
        if kind != HANDSHAKE {
            if message.is_empty() {
                return Err(HelloError::NotHandshake);
            }
            break;
        }
        let len = usize::from(len).min(records.data.len());
        message.extend_from_slice(records.take(len).unwrap_or_default());
    }
    if message.is_empty() {
        return Err(HelloError::NotHandshake);
    }
    let mut r = Reader { data: &message };
    if r.u8() != Some(CLIENT_HELLO) {
        return Err(HelloError::NotClientHello);
    }
    let body_len = r.u24().ok_or(HelloError::Truncated)?;
    let body = r.data.get(..body_len.min(r.data.len())).unwrap_or_default();
    let mut r = Reader { data: body };
    // legacy_version, random, legacy_session_id, cipher_suites,
    // legacy_compression_methods.
    r.take(2 + 32).ok_or(HelloError::Truncated)?;
    r.vec(1).ok_or(HelloError::Truncated)?;
    r.vec(2).ok_or(HelloError::Truncated)?;
    r.vec(1).ok_or(HelloError::Truncated)?;
    let mut hello = ClientHello::default();
    let Some(extensions) = r.vec(2) else {
        // TLS 1.2 allows a hello without extensions.
        return Ok(hello);
    };
    let mut exts = Reader { data: extensions };
    // An extension cut by the capture is read as far as it goes: its
    // items are whole or absent.
    while let (Some(kind), Some(body)) = (exts.u16(), exts.vec(2)) {
        let mut body = Reader { data: body };
        match kind {
            EXT_SERVER_NAME => {
                let Some(list) = body.vec(2) else { continue };
                let mut list = Reader { data: list };
                while let (Some(name_type), Some(name)) = (list.u8(), list.vec_exact(2)) {
                    if name_type == HOST_NAME {
                        hello.server_name = host_name(name);
                        break;
                    }
                }
            }
            EXT_ALPN => {
                let Some(list) = body.vec(2) else { continue };
                let mut list = Reader { data: list };
                while let Some(proto) = list.vec_exact(1) {
                    if hello.alpn.len() < 8 && !proto.is_empty() {
                        hello
                            .alpn
                            .push(String::from_utf8_lossy(proto).chars().take(32).collect());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// A DNS host name as sent in SNI: ASCII letters, digits, `-`, `.`, `_`,
/// at most 255 bytes, lower-cased; anything else is not a host name.
pub fn host_name(name: &[u8]) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok.then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    /// A ClientHello as a client library writes it, from rustls (the
    /// sensor's own TLS stack) talking to an in-memory buffer.
    fn rustls_hello(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
        use std::sync::Arc;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn server_name_and_alpn_from_a_real_hello() {
        let bytes = rustls_hello("API.OpenAI.com", &[b"h2", b"http/1.1"]);
        let hello = parse(&bytes).unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("api.openai.com"));
        assert_eq!(hello.alpn, vec!["h2", "http/1.1"]);
    }

    #[test]
    fn an_ip_literal_has_no_server_name() {
        let bytes = rustls_hello("127.0.0.1", &[]);
        let hello = parse(&bytes).unwrap();
        assert_eq!(hello.server_name, None);
        assert!(hello.alpn.is_empty());
    }

    #[test]
    fn every_cut_is_handled() {
        let bytes = rustls_hello("model.example.internal", &[b"h2"]);
        let full = parse(&bytes).unwrap();
        let mut seen_name = false;
        for cut in 0..bytes.len() {
            // Never a panic; once the name is in, it is the right one.
            if let Ok(hello) = parse(&bytes[..cut])
                && let Some(name) = hello.server_name
            {
                assert_eq!(Some(name), full.server_name);
                seen_name = true;
            }
        }
        assert!(seen_name);
    }

    #[test]
    fn other_bytes_are_refused() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Err(HelloError::NotHandshake)
        );
        assert_eq!(parse(&[]), Err(HelloError::NotHandshake));
        assert_eq!(
            parse(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
            Err(HelloError::NotClientHello)
        );
        // Binary noise: no panic whatever it says.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut noise = vec![22u8, 3, 3];
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                noise.push(seed as u8);
            }
            let _ = parse(&noise);
        }
    }

    #[test]
    fn a_bad_host_name_is_not_reported() {
        assert_eq!(host_name(b"ex ample.com"), None);
        assert_eq!(host_name(b"a\0b"), None);
        assert_eq!(
            host_name(b"Ok-Name_1.example").as_deref(),
            Some("ok-name_1.example")
        );
    }
}
