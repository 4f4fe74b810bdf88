//! Keeping secrets out of logs, errors and status bodies.
//!
//! Two tools: [`Secret`] wraps a value whose `Debug`/`Display` never show it, and [`redact`]
//! scrubs the known secret shapes (SAS `sig=`, presigned `X-Amz-*` parameters,
//! `AccountKey=`, `SharedAccessSignature=`) out of any text before it is logged.

use std::fmt;

/// A secret value: printing it shows `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Query parameters and connection-string fields whose values are secret. Matched
/// case-insensitively; the value runs up to the next `&`, `;`, quote or white space.
const SECRET_FIELDS: &[&str] = &[
    "sig=",
    "x-amz-signature=",
    "x-amz-credential=",
    "x-amz-security-token=",
    "accountkey=",
    "sharedaccesssignature=",
    "aws_secret_access_key=",
    "client_secret=",
];

/// Replaces every secret value in `text` with `[redacted]`.
pub fn redact(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let bytes = text.as_bytes();
    'outer: while i < text.len() {
        for field in SECRET_FIELDS {
            if lower[i..].starts_with(field) && starts_field(bytes, i) {
                out.push_str(&text[i..i + field.len()]);
                out.push_str("[redacted]");
                let mut j = i + field.len();
                while j < text.len() && !is_value_end(bytes[j]) {
                    j += 1;
                }
                i = j;
                continue 'outer;
            }
        }
        let ch = text[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A field name counts only at the start of a parameter, so `design=` does not match `sig=`.
fn starts_field(bytes: &[u8], i: usize) -> bool {
    i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-' || bytes[i - 1] == b'_')
}

fn is_value_end(b: u8) -> bool {
    matches!(
        b,
        b'&' | b';' | b'"' | b'\'' | b' ' | b'\n' | b'\r' | b'\t' | b'>' | b'<' | b','
    )
}

/// A URL for logs: scheme, host and path, with the query reduced to its parameter names.
pub fn url_for_log(url: &url::Url) -> String {
    let mut s = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        s.push_str(&format!(":{port}"));
    }
    s.push_str(url.path());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_sas_presign_and_keys() {
        let t = "https://a.blob.core.windows.net/c/b?sv=2022&sig=AbC%2Bd%3D&se=x \
                 X-Amz-Credential=AKIAX%2F2020&X-Amz-Signature=deadbeef&X-Amz-Security-Token=tok \
                 DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0==;EndpointSuffix=x";
        let r = redact(t);
        for s in ["AbC%2Bd%3D", "AKIAX", "deadbeef", "tok ", "c2VjcmV0=="] {
            assert!(!r.contains(s), "{s} leaked in {r}");
        }
        assert!(r.contains("sv=2022"));
        assert!(r.contains("AccountName=a"));
    }

    #[test]
    fn leaves_lookalikes_alone() {
        assert_eq!(redact("design=ok"), "design=ok");
        assert_eq!(redact("héllo sig"), "héllo sig");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret([redacted]) [redacted]");
    }
}
