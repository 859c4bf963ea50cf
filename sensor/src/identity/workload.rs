//! Workload identity: the SPIFFE ID a workload holds or would be given, and
//! the cloud identity its environment names (AWS IRSA, GKE and Azure
//! workload identity).
//!
//! From a process environment only the variables listed here are read out;
//! nothing else of it is kept, and none of these carries a secret (token
//! *files* are named, never read).

use base64::Engine as _;

/// Environment variables that name a cloud identity.
pub const CLOUD_ENV: [&str; 6] = [
    "AWS_ROLE_ARN",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_SERVICE_ACCOUNT_EMAIL",
];

/// Largest environment read from /proc (the kernel allows more; a process
/// with a bigger one is described without its cloud identity).
pub const MAX_ENVIRON_BYTES: usize = 1 << 20;

/// The identity a workload uses towards its cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudIdentity {
    /// `aws`, `gcp`, `azure`.
    pub provider: &'static str,
    /// AWS role ARN, Google service account e-mail, Azure client id.
    pub identity: String,
    /// Azure tenant id.
    pub tenant: Option<String>,
    /// How it was found: `irsa`, `azure-workload-identity`,
    /// `gcp-credential-config`, `gcp-env`.
    pub mechanism: &'static str,
}

/// The listed variables of a NUL-separated environment block.
pub fn cloud_env(environ: &[u8]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for entry in environ.split(|b| *b == 0) {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (name, value) = (&entry[..eq], &entry[eq + 1..]);
        if let Some(known) = CLOUD_ENV.iter().find(|k| k.as_bytes() == name)
            && let Ok(value) = std::str::from_utf8(value)
            && !value.is_empty()
            && value.len() <= 2048
        {
            out.push((*known, value.to_owned()));
        }
    }
    out
}

/// The cloud identity the variables name. `read_file` reads a file the
/// variables point at, as the process sees it (through its root).
pub fn cloud_identity(
    vars: &[(&'static str, String)],
    read_file: impl Fn(&str) -> Option<Vec<u8>>,
) -> Option<CloudIdentity> {
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(arn) = get("AWS_ROLE_ARN").filter(|a| a.starts_with("arn:")) {
        return Some(CloudIdentity {
            provider: "aws",
            identity: arn.to_owned(),
            tenant: None,
            mechanism: "irsa",
        });
    }
    if let Some(client) = get("AZURE_CLIENT_ID")
        && get("AZURE_FEDERATED_TOKEN_FILE").is_some()
    {
        return Some(CloudIdentity {
            provider: "azure",
            identity: client.to_owned(),
            tenant: get("AZURE_TENANT_ID").map(str::to_owned),
            mechanism: "azure-workload-identity",
        });
    }
    if let Some(email) = get("GOOGLE_SERVICE_ACCOUNT_EMAIL") {
        return Some(CloudIdentity {
            provider: "gcp",
            identity: email.to_owned(),
            tenant: None,
            mechanism: "gcp-env",
        });
    }
    if let Some(path) = get("GOOGLE_APPLICATION_CREDENTIALS")
        && let Some(bytes) = read_file(path)
        && let Some(email) = google_credential_account(&bytes)
    {
        return Some(CloudIdentity {
            provider: "gcp",
            identity: email,
            tenant: None,
            mechanism: "gcp-credential-config",
        });
    }
    None
}

/// The service account a Google credential file acts as: the impersonated
/// account of a workload identity federation config, or the `client_email`
/// of a key file. Nothing else of the file is looked at (a key file holds
/// a private key).
fn google_credential_account(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Cred {
        #[serde(rename = "type")]
        kind: Option<String>,
        service_account_impersonation_url: Option<String>,
        client_email: Option<String>,
    }
    let cred: Cred = serde_json::from_slice(bytes).ok()?;
    match cred.kind.as_deref() {
        Some("external_account") => {
            // .../serviceAccounts/<email>:generateAccessToken
            let url = cred.service_account_impersonation_url?;
            let tail = url.rsplit_once("/serviceAccounts/")?.1;
            Some(tail.split(':').next()?.to_owned()).filter(|e| e.contains('@'))
        }
        Some("service_account") => cred.client_email.filter(|e| e.contains('@')),
        _ => None,
    }
}

/// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, the ID
/// Istio and SPIRE's Kubernetes workload registrar give a pod.
pub fn derived_spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The SPIFFE ID in the first certificate of a PEM bundle (an X.509 SVID:
/// the URI subject alternative name starting with `spiffe://`).
pub fn spiffe_id_from_pem(pem: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(pem).ok()?;
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = text.find(begin)? + begin.len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = text[start..end].split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    spiffe_id_from_der(&der)
}

/// One DER element: (tag, contents, rest).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Walks Certificate -> TBSCertificate -> extensions [3] -> the
/// subjectAltName extension (2.5.29.17) -> URI names ([6]).
fn spiffe_id_from_der(der: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];
    let (tag, cert, _) = der_next(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = der_next(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut fields = tbs;
    while !fields.is_empty() {
        let (tag, body, rest) = der_next(fields)?;
        fields = rest;
        if tag != 0xa3 {
            continue;
        }
        let (_, mut extensions, _) = der_next(body)?;
        while !extensions.is_empty() {
            let (_, extension, rest) = der_next(extensions)?;
            extensions = rest;
            let (oid_tag, oid, mut ext_rest) = der_next(extension)?;
            if oid_tag != 0x06 || oid != SAN_OID {
                continue;
            }
            // Optional `critical` BOOLEAN, then the OCTET STRING.
            let (mut tag, mut value, rest) = der_next(ext_rest)?;
            if tag == 0x01 {
                ext_rest = rest;
                (tag, value, _) = der_next(ext_rest)?;
            }
            if tag != 0x04 {
                return None;
            }
            let (_, mut names, _) = der_next(value)?;
            while !names.is_empty() {
                let (tag, name, rest) = der_next(names)?;
                names = rest;
                if tag == 0x86
                    && let Ok(uri) = std::str::from_utf8(name)
                    && uri.starts_with("spiffe://")
                {
                    return Some(uri.to_owned());
                }
            }
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_variables_are_read() {
        let environ = b"PATH=/usr/bin\0AWS_ROLE_ARN=arn:aws:iam::123456789012:role/agent\0\
AWS_WEB_IDENTITY_TOKEN_FILE=/var/run/secrets/eks.amazonaws.com/serviceaccount/token\0\
OPENAI_API_KEY=not-read\0AWS_ROLE_ARN_X=y\0broken\0";
        let vars = cloud_env(environ);
        assert_eq!(
            vars,
            vec![(
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/agent".to_owned()
            )]
        );
        let id = cloud_identity(&vars, |_| None).expect("irsa");
        assert_eq!((id.provider, id.mechanism), ("aws", "irsa"));
        assert_eq!(id.identity, "arn:aws:iam::123456789012:role/agent");
    }

    #[test]
    fn azure_and_gcp() {
        let env =
            b"AZURE_CLIENT_ID=11111111-2222-3333-4444-555555555555\0AZURE_TENANT_ID=tenant-1\0\
AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/tokens/azure-identity-token\0";
        let id = cloud_identity(&cloud_env(env), |_| None).expect("azure");
        assert_eq!(
            (id.provider, id.identity.as_str(), id.tenant.as_deref()),
            (
                "azure",
                "11111111-2222-3333-4444-555555555555",
                Some("tenant-1")
            )
        );

        let env = b"GOOGLE_APPLICATION_CREDENTIALS=/var/run/gcp/config.json\0";
        let federation = br#"{"type":"external_account","audience":"//iam.googleapis.com/x",
            "service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/agent@proj.iam.gserviceaccount.com:generateAccessToken"}"#;
        let id = cloud_identity(&cloud_env(env), |p| {
            (p == "/var/run/gcp/config.json").then(|| federation.to_vec())
        })
        .expect("gcp");
        assert_eq!(
            (id.provider, id.identity.as_str()),
            ("gcp", "agent@proj.iam.gserviceaccount.com")
        );
        // An unreadable or unrelated file gives nothing.
        assert_eq!(
            cloud_identity(&cloud_env(env), |_| Some(b"{}".to_vec())),
            None
        );
        assert_eq!(cloud_identity(&cloud_env(env), |_| None), None);
    }

    #[test]
    fn spiffe_ids() {
        assert_eq!(
            derived_spiffe_id("cluster.local", "payments", "agent-sa"),
            "spiffe://cluster.local/ns/payments/sa/agent-sa"
        );
        let pem = include_bytes!("../../../tests/fixtures/svid.pem");
        assert_eq!(
            spiffe_id_from_pem(pem).as_deref(),
            Some("spiffe://example.org/ns/payments/sa/agent-sa")
        );
        assert_eq!(spiffe_id_from_pem(b"not a pem"), None);
        let mut corrupt = pem.to_vec();
        let mid = corrupt.len() / 2;
        corrupt.truncate(mid);
        assert_eq!(spiffe_id_from_pem(&corrupt), None);
        // Truncated DER does not panic.
        for n in 0..64 {
            let _ = spiffe_id_from_der(&[0x30, 0x82, 0xff, 0xff][..n.min(4)]);
        }
    }
}
