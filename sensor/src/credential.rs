//! Credentials seen in requests: what kind they are, and a keyed
//! fingerprint that lets a SIEM group calls by credential without ever
//! holding it. The raw value never leaves this module: no event, log line
//! or error carries it.

use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::http1::Headers;

const KEY_BYTES: usize = 32;
/// Fingerprints keep 128 bits of the HMAC: enough to never collide by
/// accident, short enough to read.
const FINGERPRINT_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading key {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating key {path}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key {path} holds {len} bytes; at least 16 are needed")]
    TooShort { path: PathBuf, len: usize },
    #[error("key {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
}

/// HMAC-SHA256 with a per-deployment secret.
pub struct Fingerprinter {
    key: Vec<u8>,
}

impl Fingerprinter {
    pub fn from_key(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// Reads the key at `path`, or creates one (random, mode 0600) when the
    /// file does not exist, so fingerprints stay stable across restarts.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        load_or_create_key(path).map(|key| Self { key })
    }

    /// `hmac-sha256:` and 32 hex digits.
    pub fn fingerprint(&self, secret: &[u8]) -> String {
        // HMAC accepts keys of any length; this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            return String::from("hmac-sha256:unavailable");
        };
        mac.update(secret);
        let digest = mac.finalize().into_bytes();
        format!("hmac-sha256:{}", hex(&digest[..FINGERPRINT_BYTES]))
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

/// Reads a secret key at `path`, or creates one (random, 32 bytes, mode
/// 0600, in a 0700 directory) when the file does not exist. A key others
/// can read, or one shorter than 16 bytes, is refused.
pub fn load_or_create_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    match fs::read(path) {
        Ok(key) => {
            let mode = fs::metadata(path)
                .map_err(|source| KeyError::Read {
                    path: path.into(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.into(),
                    mode: mode & 0o777,
                });
            }
            if key.len() < 16 {
                return Err(KeyError::TooShort {
                    path: path.into(),
                    len: key.len(),
                });
            }
            Ok(key)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let create = |source| KeyError::Create {
                path: path.into(),
                source,
            };
            if let Some(dir) = path.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(create)?;
            }
            let mut key = vec![0u8; KEY_BYTES];
            fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut key))
                .map_err(create)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(create)?;
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .map_err(create)?;
            Ok(key)
        }
        Err(source) => Err(KeyError::Read {
            path: path.into(),
            source,
        }),
    }
}

/// A credential found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `openai_api_key`, `anthropic_api_key`, `bearer_jwt`, `bearer_token`,
    /// `basic_auth`, `aws_sigv4`, `google_api_key`, `azure_api_key`, `api_key`.
    pub kind: &'static str,
    pub fingerprint: String,
    /// The header it came from, lower case.
    pub source: &'static str,
}

fn token_kind(token: &[u8]) -> &'static str {
    if token.starts_with(b"sk-ant-") {
        "anthropic_api_key"
    } else if token.starts_with(b"sk-") {
        "openai_api_key"
    } else if token.starts_with(b"AIza") {
        "google_api_key"
    } else if token.starts_with(b"eyJ") && token.iter().filter(|b| **b == b'.').count() == 2 {
        "bearer_jwt"
    } else {
        "bearer_token"
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    bytes.get(start..end).unwrap_or_default()
}

fn strip_prefix_ci<'a>(value: &'a [u8], prefix: &str) -> Option<&'a [u8]> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix.as_bytes())
        .then(|| &value[prefix.len()..])
}

/// The request's credential, by the header that carries it. The first
/// match wins, in the order providers document them.
pub fn detect(headers: &Headers, fp: &Fingerprinter) -> Option<Credential> {
    if let Some(value) = headers.get("authorization") {
        let value = trim(value);
        if let Some(token) = strip_prefix_ci(value, "bearer ") {
            let token = trim(token);
            if !token.is_empty() {
                let kind = token_kind(token);
                return Some(Credential {
                    kind,
                    fingerprint: fp.fingerprint(token),
                    source: "authorization",
                });
            }
        } else if let Some(basic) = strip_prefix_ci(value, "basic ") {
            return Some(Credential {
                kind: "basic_auth",
                fingerprint: fp.fingerprint(trim(basic)),
                source: "authorization",
            });
        } else if let Some(sig) = strip_prefix_ci(value, "AWS4-HMAC-SHA256 ") {
            // The access key id names the credential; the signature changes
            // on every request and is not a credential.
            let key_id = sig
                .split(|b| *b == b',')
                .find_map(|part| strip_prefix_ci(trim(part), "Credential="))
                .map(|cred| cred.split(|b| *b == b'/').next().unwrap_or_default())?;
            return Some(Credential {
                kind: "aws_sigv4",
                fingerprint: fp.fingerprint(key_id),
                source: "authorization",
            });
        } else if !value.is_empty() {
            return Some(Credential {
                kind: "authorization",
                fingerprint: fp.fingerprint(value),
                source: "authorization",
            });
        }
    }
    type KindOf = fn(&[u8]) -> &'static str;
    let by_header: [(&'static str, KindOf); 4] = [
        ("x-api-key", |v| {
            if v.starts_with(b"sk-ant-") {
                "anthropic_api_key"
            } else {
                "api_key"
            }
        }),
        ("api-key", |_| "azure_api_key"),
        ("x-goog-api-key", |_| "google_api_key"),
        ("x-api-token", |_| "api_key"),
    ];
    by_header.iter().find_map(|(name, kind)| {
        let value = trim(headers.get(name)?);
        (!value.is_empty()).then(|| Credential {
            kind: kind(value),
            fingerprint: fp.fingerprint(value),
            source: name,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http1::Header;

    fn headers(list: &[(&str, &str)]) -> Headers {
        Headers(
            list.iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
        )
    }

    #[test]
    fn kinds_and_stable_fingerprints() {
        let fp = Fingerprinter::from_key(b"0123456789abcdef0123456789abcdef");
        let c = detect(&headers(&[("Authorization", "Bearer sk-test-abc")]), &fp).expect("cred");
        assert_eq!(c.kind, "openai_api_key");
        assert_eq!(c.fingerprint, fp.fingerprint(b"sk-test-abc"));
        assert!(c.fingerprint.starts_with("hmac-sha256:") && c.fingerprint.len() == 12 + 32);
        assert!(!c.fingerprint.contains("sk-test"));
        let c = detect(&headers(&[("X-Api-Key", "sk-ant-test-1")]), &fp).expect("cred");
        assert_eq!((c.kind, c.source), ("anthropic_api_key", "x-api-key"));
        let c = detect(&headers(&[("authorization", "bearer eyJa.eyJb.sig")]), &fp).expect("cred");
        assert_eq!(c.kind, "bearer_jwt");
        let sig = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=abc";
        let c = detect(&headers(&[("Authorization", sig)]), &fp).expect("cred");
        assert_eq!(
            (c.kind, c.fingerprint.clone()),
            ("aws_sigv4", fp.fingerprint(b"AKIDEXAMPLE"))
        );
        assert_eq!(
            detect(&headers(&[("content-type", "application/json")]), &fp),
            None
        );
        // Another key gives another fingerprint.
        let other = Fingerprinter::from_key(b"another key, at least 16 bytes");
        assert_ne!(
            other.fingerprint(b"sk-test-abc"),
            fp.fingerprint(b"sk-test-abc")
        );
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("sensor-key-test-{}", std::process::id()));
        let path = dir.join("sub/fingerprint.key");
        let a = Fingerprinter::load_or_create(&path).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = Fingerprinter::load_or_create(&path).expect("reuse");
        assert_eq!(a.fingerprint(b"x"), b.fingerprint(b"x"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            Fingerprinter::load_or_create(&path),
            Err(KeyError::Permissions { .. })
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
