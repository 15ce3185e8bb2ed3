//! URLs with credentials, shown with the secrets removed (user info, and path segments or query
//! values that look like API keys).

use std::fmt;

/// A URL that prints without its credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// Wraps `raw`; nothing secret is kept in the displayed form.
    pub fn new(raw: &str) -> Self {
        Self(redact(raw))
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Whether a path segment looks like an API key: long and made of letters and digits.
fn looks_like_key(segment: &str) -> bool {
    segment.len() >= 20
        && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && segment.chars().any(|c| c.is_ascii_digit())
}

/// Removes the URL `raw` (as given, and as a URL parser normalises it, shown as `shown`), its
/// password, and the path segments and query values its redaction hides from a message:
/// transport errors print the URL they were sending to.
pub fn scrub(message: &str, raw: &str, shown: &str) -> String {
    let mut out = message.replace(raw, shown);
    if let Ok(u) = url::Url::parse(raw) {
        out = out.replace(u.as_str(), shown);
        // User info, as given and percent-decoded: the password whatever its length, a user
        // name (some providers put the key there) from four characters on, so that a short
        // one does not mangle the message.
        for (v, min) in [(u.password().unwrap_or_default(), 1), (u.username(), 4)] {
            for v in [v.to_string(), percent_decode(v)] {
                if v.len() >= min {
                    out = out.replace(&v, "***");
                }
            }
        }
        for seg in u.path_segments().into_iter().flatten() {
            if seg.len() >= 8 && !shown.contains(seg) {
                out = out.replace(seg, "***");
            }
        }
        for (k, v) in u.query_pairs() {
            out = out.replace(&format!("{k}={v}"), &format!("{k}=***"));
            if v.len() >= 4 {
                out = out.replace(v.as_ref(), "***");
            }
        }
    }
    out
}

/// Removes user info, API-key-like path segments and query values from a URL.
pub fn redact(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        // Not a URL: do not echo something that may hold a secret.
        return "<unparseable url>".to_string();
    };
    if !url.username().is_empty() {
        let _ = url.set_username("***");
    }
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> =
            url.query_pairs().map(|(k, _)| (k.into_owned(), "***".to_string())).collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let segments: Option<Vec<String>> = url.path_segments().map(|s| {
        s.map(|seg| if looks_like_key(seg) { "***".into() } else { seg.into() }).collect()
    });
    if let Some(segments) = segments {
        url.set_path(&segments.join("/"));
    }
    url.to_string()
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{redact, scrub};

    #[test]
    fn scrub_removes_what_the_redaction_hides_from_messages() {
        let raw = "http://k3yus3r:p%40ss%2Fw0rd@10.0.0.1:8551/v2/abcDEF1234567890abcdef12?token=t0k3nvalue";
        let shown = redact(raw);
        let msg = format!(
            "error sending request for url ({raw}): user k3yus3r, password p@ss/w0rd, \
             path abcDEF1234567890abcdef12, token t0k3nvalue, short pw ab"
        );
        let out = scrub(&msg, raw, &shown);
        for secret in
            ["k3yus3r", "p@ss/w0rd", "p%40ss%2Fw0rd", "abcDEF1234567890abcdef12", "t0k3nvalue"]
        {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("10.0.0.1:8551"), "the host stays: {out}");
        // A short user name is left alone (it would mangle the message); a password never.
        let out = scrub("a message about abcd", "http://u:ab@h/", "http://***:***@h/");
        assert_eq!(out, "a message ***out ***cd");
    }

    #[test]
    fn removes_credentials() {
        let cases = [
            ("http://user:hunter2@host:8545/", "http://***:***@host:8545/"),
            (
                "https://mainnet.example/v2/abcDEF1234567890abcdef12",
                "https://mainnet.example/v2/***",
            ),
            ("wss://x.example/ws?apikey=s3cr3t", "wss://x.example/ws?apikey=***"),
            ("http://127.0.0.1:8545", "http://127.0.0.1:8545/"),
            ("not a url hunter2", "<unparseable url>"),
        ];
        for (raw, want) in cases {
            assert_eq!(redact(raw), want, "{raw}");
            assert!(!redact(raw).contains("hunter2") && !redact(raw).contains("s3cr3t"));
        }
    }
}
