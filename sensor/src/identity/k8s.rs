//! Kubernetes identity from the service-account token a pod holds.
//!
//! The kubelet mounts a projected token at
//! `/var/run/secrets/kubernetes.io/serviceaccount/token` in every container
//! that automounts one. It is a JWT whose claims name the namespace, the
//! pod and the service account, so the node can tell who a pod runs as
//! without asking an API server. Only the claims are decoded; the
//! signature is not checked (the sensor reads the file the kubelet wrote,
//! it does not authenticate anyone with it) and the token itself never
//! leaves this module: not in events, logs or errors.

use base64::Engine as _;
use serde::Deserialize;

/// Where Kubernetes mounts the service-account token in a container.
pub const TOKEN_PATH: &str = "var/run/secrets/kubernetes.io/serviceaccount/token";
/// Tokens are a few KiB; anything far bigger is not one.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Who a service-account token says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceAccountClaims {
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub issuer: Option<String>,
}

/// Why a token could not be read. Never carries token bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("token is not a JWT (expected three dot-separated parts)")]
    NotJwt,
    #[error("token payload is not base64url")]
    Base64,
    #[error("token payload is not a JSON object")]
    Json,
    #[error("token names no Kubernetes service account")]
    NoServiceAccount,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaim>,
    // Legacy secret-based tokens.
    #[serde(rename = "kubernetes.io/serviceaccount/namespace")]
    legacy_namespace: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name")]
    legacy_name: Option<String>,
}

#[derive(Deserialize)]
struct KubernetesClaim {
    namespace: Option<String>,
    pod: Option<NamedObject>,
    serviceaccount: Option<NamedObject>,
}

#[derive(Deserialize)]
struct NamedObject {
    name: Option<String>,
    uid: Option<String>,
}

/// Decodes the claims of a service-account token (projected or legacy).
pub fn decode_token(token: &[u8]) -> Result<ServiceAccountClaims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let token = token.trim_ascii();
    let mut parts = token.split(|b| *b == b'.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::NotJwt);
    };
    // base64url, with or without padding.
    let payload = payload
        .strip_suffix(b"==")
        .or_else(|| payload.strip_suffix(b"="))
        .unwrap_or(payload);
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Base64)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Json)?;
    let mut out = ServiceAccountClaims {
        issuer: claims.iss,
        ..ServiceAccountClaims::default()
    };
    if let Some(k) = claims.kubernetes {
        out.namespace = k.namespace;
        if let Some(pod) = k.pod {
            out.pod_name = pod.name;
            out.pod_uid = pod.uid;
        }
        out.service_account = k.serviceaccount.and_then(|sa| sa.name);
    }
    out.namespace = out.namespace.or(claims.legacy_namespace);
    out.service_account = out.service_account.or(claims.legacy_name);
    // `system:serviceaccount:<namespace>:<name>` names both.
    if let Some(rest) = claims
        .sub
        .as_deref()
        .and_then(|s| s.strip_prefix("system:serviceaccount:"))
        && let Some((ns, name)) = rest.split_once(':')
    {
        out.namespace.get_or_insert_with(|| ns.to_owned());
        out.service_account.get_or_insert_with(|| name.to_owned());
    }
    if out.service_account.is_none() {
        return Err(TokenError::NoServiceAccount);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) fn encode_jwt(claims: &serde_json::Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        b64.encode(br#"{"alg":"RS256","kid":"test"}"#),
        b64.encode(claims.to_string()),
        b64.encode(b"not-a-signature")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn projected_token() {
        let token = encode_jwt(&json!({
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "exp": 1_900_000_000, "iat": 1_800_000_000,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "kubernetes.io": {
                "namespace": "payments",
                "node": {"name": "node-a", "uid": "0d1f"},
                "pod": {"name": "agent-7d9f", "uid": "6b7c0e9a-1f2d-4c3b-8a9e-0f1e2d3c4b5a"},
                "serviceaccount": {"name": "agent-sa", "uid": "11aa"},
                "warnafter": 1_800_003_607
            },
            "sub": "system:serviceaccount:payments:agent-sa"
        }));
        let claims = decode_token(format!("{token}\n").as_bytes()).expect("claims");
        assert_eq!(
            claims,
            ServiceAccountClaims {
                namespace: Some("payments".into()),
                service_account: Some("agent-sa".into()),
                pod_name: Some("agent-7d9f".into()),
                pod_uid: Some("6b7c0e9a-1f2d-4c3b-8a9e-0f1e2d3c4b5a".into()),
                issuer: Some("https://kubernetes.default.svc.cluster.local".into()),
            }
        );
    }

    #[test]
    fn legacy_secret_token_and_subject_only() {
        let legacy = encode_jwt(&json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "default",
            "kubernetes.io/serviceaccount/secret.name": "builder-token-x",
            "kubernetes.io/serviceaccount/service-account.name": "builder",
            "sub": "system:serviceaccount:default:builder"
        }));
        let c = decode_token(legacy.as_bytes()).expect("legacy");
        assert_eq!(
            (
                c.namespace.as_deref(),
                c.service_account.as_deref(),
                c.pod_name
            ),
            (Some("default"), Some("builder"), None)
        );
        let sub_only = encode_jwt(&json!({"sub": "system:serviceaccount:ci:runner"}));
        let c = decode_token(sub_only.as_bytes()).expect("subject");
        assert_eq!(
            (c.namespace.as_deref(), c.service_account.as_deref()),
            (Some("ci"), Some("runner"))
        );
    }

    #[test]
    fn malformed_tokens_are_errors_without_token_bytes() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let cases: Vec<(Vec<u8>, TokenError)> = vec![
            (b"".to_vec(), TokenError::NotJwt),
            (b"only.two".to_vec(), TokenError::NotJwt),
            (b"a.b.c.d".to_vec(), TokenError::NotJwt),
            (b"hdr.!!!notbase64!!!.sig".to_vec(), TokenError::Base64),
            (
                format!("h.{}.s", b64.encode("[1,2]")).into_bytes(),
                TokenError::Json,
            ),
            (
                format!("h.{}.s", b64.encode("{\"sub\":")).into_bytes(),
                TokenError::Json,
            ),
            (
                format!("h.{}.s", b64.encode(r#"{"sub":"user:alice"}"#)).into_bytes(),
                TokenError::NoServiceAccount,
            ),
            (vec![0xff; MAX_TOKEN_BYTES + 1], TokenError::TooLarge),
            (vec![0x00, b'.', 0xfe, b'.', 0x01], TokenError::Base64),
        ];
        for (token, want) in cases {
            let err = decode_token(&token).expect_err("malformed");
            assert_eq!(err, want);
            // The message never quotes the token.
            let msg = err.to_string();
            assert!(
                !msg.contains("notbase64") && !msg.contains("alice"),
                "{msg}"
            );
        }
        // Padded base64url payloads are accepted.
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE
                .encode(r#"{"sub":"system:serviceaccount:a:b"}"#)
        );
        assert!(decode_token(padded.as_bytes()).is_ok());
    }
}
