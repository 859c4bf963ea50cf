//! Masking secrets in command lines before they leave the process.
//!
//! Command lines carry API keys more often than they should (`curl -H
//! 'Authorization: Bearer sk-...'`, `--api-key=...`, `TOKEN=... cmd`). The
//! sensor reports the command line, so it masks: values of secret-looking
//! flags, secret-looking `name=value` pairs, auth headers, URL userinfo, and
//! strings shaped like well-known keys. Masking errs on the side of hiding.

use std::sync::LazyLock;

use regex::Regex;

pub const MASK: &str = "****";

/// Short flags whose *next* (or attached) argument is a secret: curl's
/// `-u user:pass` and `-b cookie`. (`-p` is left alone: it is a port far
/// more often than a password.)
const SECRET_SHORT_FLAGS: &[&str] = &["-u", "-b"];
/// Long flags that carry secrets without saying so in their name.
const SECRET_LONG_FLAGS: &[&str] = &[
    "--user",
    "--proxy-user",
    "--cookie",
    "--bearer",
    "--oauth2-bearer",
];
/// Words that make a flag name secret: `--api-key`, `--hf-token`,
/// `--db-password`, `--client-secret`, `--openai-api-key`.
const SECRET_WORDS: &[&str] = &[
    "key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "pass",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "cookie",
    "bearer",
    "sig",
    "signature",
];

static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    let table: [(&str, &str); 8] = [
        // Auth-carrying headers: keep the name, hide the rest.
        (
            r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-goog-api-key|cookie|set-cookie|x-auth-token|private-token)(\s*[:=]\s*)\S.*",
            "${1}${2}****",
        ),
        // name=value where the name smells of a secret (env, query strings,
        // flags); a session id (MCP's legacy transport puts it in the
        // message endpoint's query) or an OAuth code is a bearer secret too.
        (
            r"(?i)([A-Za-z0-9_.-]*(?:key|token|secret|passw(?:or)?d|pwd|credential|auth|signature|\bsig|session|\bsid|\bcode)[A-Za-z0-9_.-]*)=([^&\s]+)",
            "${1}=****",
        ),
        // JSON "name": "value" with a secret-looking name.
        (
            r#"(?i)("[A-Za-z0-9_.-]*(?:key|token|secret|passw(?:or)?d|pwd|credential|auth|session)[A-Za-z0-9_.-]*"\s*:\s*)"[^"]*""#,
            r#"${1}"****""#,
        ),
        // URL userinfo.
        (
            r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@",
            "${1}:****@",
        ),
        // Well-known key shapes anywhere.
        (r"\bsk-[A-Za-z0-9_-]{6,}", "****"),
        (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "****"),
        (r"\bAIza[0-9A-Za-z_-]{20,}", "****"),
        (
            r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
            "****",
        ),
    ];
    table
        .into_iter()
        .filter_map(|(re, with)| Regex::new(re).ok().map(|re| (re, with)))
        .collect()
});

static OTHER_KEYS: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20,})",
    )
    .ok()
});

/// Masks one argument (or any free text).
pub fn mask_text(text: &str) -> String {
    let mut out = std::borrow::Cow::Borrowed(text);
    for (re, with) in PATTERNS.iter() {
        if re.is_match(&out) {
            out = std::borrow::Cow::Owned(re.replace_all(&out, *with).into_owned());
        }
    }
    if let Some(re) = OTHER_KEYS.as_ref()
        && re.is_match(&out)
    {
        out = std::borrow::Cow::Owned(re.replace_all(&out, MASK).into_owned());
    }
    out.into_owned()
}

/// Is this flag name (without its value) one that carries a secret?
fn is_secret_flag(flag: &str) -> bool {
    if SECRET_SHORT_FLAGS.contains(&flag) || SECRET_LONG_FLAGS.contains(&flag) {
        return true;
    }
    let Some(name) = flag
        .strip_prefix("--")
        .or_else(|| flag.strip_prefix('-').filter(|n| n.len() > 1))
    else {
        return false;
    };
    name.split(['-', '_', '.'])
        .map(str::to_ascii_lowercase)
        .any(|word| {
            SECRET_WORDS.contains(&word.as_str())
                || word.ends_with("key")
                || word.ends_with("token")
        })
}

/// Masks an argument vector and joins it into one command line.
pub fn mask_command_line<S: AsRef<str>>(args: &[S]) -> String {
    let mut out: Vec<String> = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.as_ref();
        if hide_next {
            out.push(MASK.to_owned());
            hide_next = false;
            continue;
        }
        // argv[0] is the program, never a flag.
        let is_flag = i > 0 && arg.starts_with('-') && arg.len() > 1;
        if is_flag
            && let Some((flag, _)) = arg.split_once('=')
            && is_secret_flag(flag)
        {
            out.push(format!("{flag}={MASK}"));
        } else if is_flag && is_secret_flag(arg) {
            hide_next = true;
            out.push(arg.to_owned());
        } else if is_flag
            && !arg.starts_with("--")
            && let Some(short) = SECRET_SHORT_FLAGS.iter().find(|f| arg.starts_with(**f))
        {
            // An attached value: `-uuser:pass`, `-pPASS`.
            out.push(format!("{short}{MASK}"));
        } else {
            out.push(mask_text(arg));
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_curl_auth_headers_and_flags() {
        let args = [
            "curl",
            "-H",
            "Authorization: Bearer sk-test-abcdefghij",
            "-H",
            "x-api-key: sk-ant-test-1234567",
            "-u",
            "alice:hunter2",
            "https://api.openai.com/v1/chat/completions",
        ];
        let line = mask_command_line(&args);
        assert!(
            !line.contains("abcdefghij") && !line.contains("1234567") && !line.contains("hunter2"),
            "{line}"
        );
        assert!(line.contains("Authorization: ****"), "{line}");
        assert!(
            line.contains("https://api.openai.com/v1/chat/completions"),
            "{line}"
        );
    }

    #[test]
    fn masks_session_ids_and_codes_in_queries() {
        let q = mask_text("session_id=2b1f0c9d8e7a4b3c&cursor=7&code=abc123&zipcode=75001");
        assert!(
            !q.contains("2b1f0c9d8e7a4b3c") && !q.contains("abc123"),
            "{q}"
        );
        assert!(q.contains("cursor=7") && q.contains("zipcode=75001"), "{q}");
        let j = mask_text(r#"{"sessionId": "2b1f0c9d"}"#);
        assert!(!j.contains("2b1f0c9d"), "{j}");
    }

    #[test]
    fn masks_key_value_pairs_urls_and_shapes() {
        // Built at run time so no key-shaped literal sits in the source.
        let aws_key_id = format!("AKIA{}", "ABCDEFGHIJKLMNOP");
        let line = mask_command_line(&[
            "app",
            "--api-key=verysecret",
            "OPENAI_API_KEY=zzz",
            "https://bob:pw@host/x?key=abc&q=1",
            aws_key_id.as_str(),
            "--token",
            "t0k",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
        ]);
        for secret in [
            "verysecret",
            "zzz",
            ":pw@",
            "key=abc",
            aws_key_id.as_str(),
            "t0k",
            "eyJhbGci",
        ] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
        assert!(line.contains("q=1") && line.contains("bob:****@"), "{line}");
    }

    #[test]
    fn masks_secret_flag_families_attached_values_and_json() {
        let line = mask_command_line(&[
            "tool",
            "--hf-token",
            "hf_abc",
            "--openai-api-key",
            "0123abcd",
            "--db-password",
            "pw1",
            "-uuser:pw2",
            "--password=PW3",
            r#"{"api_key": "k-123", "model": "m"}"#,
            "https://x/y?X-Amz-Signature=abcd&sig=efgh",
        ]);
        for secret in [
            "hf_abc", "0123abcd", "pw1", "pw2", "PW3", "k-123", "abcd", "efgh",
        ] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
        assert!(line.contains(r#""model": "m""#), "{line}");
    }

    #[test]
    fn leaves_ordinary_arguments_alone() {
        let args = [
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "8080",
        ];
        assert_eq!(mask_command_line(&args), args.join(" "));
    }
}
