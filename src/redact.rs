//! Keeping secrets out of logs, errors and status bodies.
//!
//! Two tools: [`Secret`] holds a value that `Debug` never shows, and [`redact`]
//! scrubs the known secret shapes (SAS `sig=`, presigned `X-Amz-*` parameters,
//! `AccountKey=`, `SharedAccessSignature=`) out of any text before it is logged.

/// A secret value (`secrecy`): its `Debug` shows `[REDACTED]`, it has no `Display`, and its
/// memory is zeroed when dropped. [`ExposeSecret::expose_secret`] gives the value to the
/// one place that must send it.
pub type Secret = secrecy::SecretString;
pub use secrecy::ExposeSecret;

/// Query parameters and connection-string fields whose values are secret. Matched
/// case-insensitively at the start of a field; the value runs up to the next `&`, `;`,
/// quote, comma or white space.
const SECRET_FIELDS: &[&str] = &[
    "sig=",
    "signature=",
    "x-amz-signature=",
    "x-amz-credential=",
    "x-amz-security-token=",
    "accountkey=",
    "sharedaccesssignature=",
    "aws_secret_access_key=",
    "aws_session_token=",
    "client_secret=",
    "code=",
    "webidentitytoken=",
    "access_token=",
    "refresh_token=",
    "id_token=",
    "bearer ",
];

/// Headers whose values are secret, in any of the forms logs and debug output give them
/// (`Name: value`, `"name": "value"`, `name=value`); the value runs to the end of the line
/// or the next quote, so `Authorization: Bearer …` and SigV4's `Credential=…, Signature=…`
/// go whole.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-security-token",
    "x-functions-key",
    "x-identity-header",
    "x-ms-copy-source-authorization",
    "proxy-authorization",
];

/// Webhook addresses whose path is the credential (Slack, Teams, Discord): everything after
/// the prefix is secret, wherever it appears.
const SECRET_PATHS: &[&str] = &[
    "hooks.slack.com/",
    "webhook.office.com/",
    "discord.com/api/webhooks/",
    "discordapp.com/api/webhooks/",
];

/// Replaces every secret value in `text` with `[redacted]`.
pub fn redact(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let bytes = text.as_bytes();
    'outer: while i < text.len() {
        let rest = &lower[i..];
        for field in SECRET_FIELDS {
            if rest.starts_with(field) && starts_field(bytes, i) {
                out.push_str(&text[i..i + field.len()]);
                out.push_str("[redacted]");
                i = skip(bytes, i + field.len(), is_value_end);
                continue 'outer;
            }
        }
        for header in SECRET_HEADERS {
            if rest.starts_with(header) && starts_field(bytes, i) {
                // `name` then an optional closing quote, then `:` or `=`.
                let mut j = i + header.len();
                if bytes.get(j) == Some(&b'"') {
                    j += 1;
                }
                if matches!(bytes.get(j), Some(b':' | b'=')) {
                    j += 1;
                    while bytes.get(j) == Some(&b' ') {
                        j += 1;
                    }
                    // One opening quote at most: an empty value ends at its closing one.
                    if matches!(bytes.get(j), Some(b'"' | b'\'')) {
                        j += 1;
                    }
                    out.push_str(&text[i..j]);
                    out.push_str("[redacted]");
                    i = skip(bytes, j, |b| matches!(b, b'"' | b'\'' | b'\n' | b'\r'));
                    continue 'outer;
                }
            }
        }
        for prefix in SECRET_PATHS {
            if rest.starts_with(prefix) {
                out.push_str(&text[i..i + prefix.len()]);
                out.push_str("[redacted]");
                i = skip(bytes, i + prefix.len(), is_value_end);
                continue 'outer;
            }
        }
        let ch = text[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The index of the first byte from `j` on where `end` holds (or the end of the text).
fn skip(bytes: &[u8], mut j: usize, end: impl Fn(u8) -> bool) -> usize {
    while j < bytes.len() && !end(bytes[j]) {
        j += 1;
    }
    j
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
    fn scrubs_headers_tokens_and_webhook_paths() {
        let cases = [
            ("x-amz-security-token: FQoGZXIvYXdzSESSION\nnext", "FQoGZXIvYXdzSESSION"),
            ("\"x-amz-security-token\": \"FQoGSESSION2\"", "FQoGSESSION2"),
            (
                "Authorization: Bearer eyJ0eXAiOiJKV1QBEARER\r\n",
                "eyJ0eXAiOiJKV1QBEARER",
            ),
            (
                "authorization=AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/x, SignedHeaders=host, Signature=f00dfeed",
                "f00dfeed",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host, Signature=cafe1234",
                "cafe1234",
            ),
            ("got 401 for Bearer tok3nVALUE from the IdP", "tok3nVALUE"),
            ("X-IDENTITY-HEADER: 4d5e6fIDHEADER", "4d5e6fIDHEADER"),
            ("x-functions-key: fnKEY123", "fnKEY123"),
            (
                "POST https://app.azurewebsites.net/api/runs?code=FUNCKEY%3D%3D&x=1",
                "FUNCKEY",
            ),
            (
                "Action=AssumeRoleWithWebIdentity&WebIdentityToken=eyJhbGciWEBID&RoleArn=r",
                "eyJhbGciWEBID",
            ),
            (
                "hook https://hooks.slack.com/services/T000/B000/SLACKSECRET failed",
                "SLACKSECRET",
            ),
            (
                "https://acme.webhook.office.com/webhookb2/abc@def/IncomingWebhook/TEAMSSECRET/x",
                "TEAMSSECRET",
            ),
        ];
        for (text, secret) in cases {
            let r = redact(text);
            assert!(!r.contains(secret), "{secret} leaked in {r}");
            assert!(r.contains("[redacted]"), "{r}");
        }
        // What follows a header's value on the next line survives, and an empty JSON value
        // keeps the line's JSON whole.
        assert!(redact("x-functions-key: k\nkept").ends_with("\nkept"));
        assert_eq!(
            redact(r#"{"authorization":"","next":1}"#),
            r#"{"authorization":"[redacted]","next":1}"#
        );
    }

    #[test]
    fn leaves_lookalikes_alone() {
        assert_eq!(redact("barcode=12 unicode=1 bearer"), "barcode=12 unicode=1 bearer");
        assert_eq!(redact("authorization failed"), "authorization failed");
        assert_eq!(redact("design=ok"), "design=ok");
        assert_eq!(redact("héllo sig"), "héllo sig");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::from("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
        assert_eq!(s.expose_secret(), "hunter2");
    }
}
