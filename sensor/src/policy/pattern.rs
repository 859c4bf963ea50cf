//! Glob patterns of policy terms: `*` stands for any run of characters
//! (none included), everything else for itself. Host names compare without
//! case.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    fold_case: bool,
}

impl Pattern {
    pub fn new(text: &str, fold_case: bool) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty pattern".into());
        }
        if text.chars().any(char::is_control) {
            return Err(format!("pattern {text:?} has control characters"));
        }
        Ok(Self {
            text: if fold_case {
                text.to_ascii_lowercase()
            } else {
                text.to_owned()
            },
            fold_case,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no `*`: it names one value.
    pub fn is_literal(&self) -> bool {
        !self.text.contains('*')
    }

    pub fn matches(&self, value: &str) -> bool {
        if self.fold_case {
            glob(self.text.as_bytes(), value.to_ascii_lowercase().as_bytes())
        } else {
            glob(self.text.as_bytes(), value.as_bytes())
        }
    }
}

/// `*`-only glob, iterative with one backtrack point (linear in practice,
/// never exponential).
fn glob(pattern: &[u8], value: &[u8]) -> bool {
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, v));
            p += 1;
        } else if p < pattern.len() && pattern[p] == value[v] {
            p += 1;
            v += 1;
        } else if let Some((sp, sv)) = star {
            p = sp + 1;
            v = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let p = |s| Pattern::new(s, false).expect("pattern");
        assert!(p("gpt-4*").matches("gpt-4o-mini"));
        assert!(p("gpt-4*").matches("gpt-4"));
        assert!(!p("gpt-4*").matches("gpt-3.5"));
        assert!(p("*mini").matches("gpt-4o-mini"));
        assert!(p("a*b*c").matches("axxbyyc"));
        assert!(!p("a*b*c").matches("axxbyy"));
        assert!(p("*").matches(""));
        assert!(!p("abc").matches("abcd"));
        assert!(
            p("spiffe://cluster.local/ns/*/sa/batch")
                .matches("spiffe://cluster.local/ns/x/sa/batch")
        );
        let h = Pattern::new("*.OpenAI.azure.com", true).expect("pattern");
        assert!(h.matches("east.openai.AZURE.com"));
        assert!(!h.matches("openai.azure.com"));
        assert!(Pattern::new("", false).is_err());
        // Many stars against a long value stay fast.
        let long = "a".repeat(10_000);
        assert!(!p("*a*a*a*a*a*b").matches(&long));
    }
}
