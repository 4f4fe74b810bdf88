//! The HTTP client under every Azure SDK pipeline (blob, queue, table). It is reqwest, as the
//! SDK's own client is, with two differences that keep credentials where they were born:
//!
//! - the request headers that carry a credential are marked sensitive, so no `Debug` of a
//!   request or header map (reqwest's, hyper's, ours) prints their values;
//! - a transport error loses its URL before it is wrapped, because a SAS travels in the
//!   query string and reqwest's error text quotes the whole URL.
//!
//! Timeouts, redirects and decompression are as the SDK sets them: 20 s to connect, 60 s
//! between reads, no redirects, bodies as sent (the engine checks checksums of raw bytes).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Request};
use futures::TryStreamExt;

/// Request headers whose values are credentials: a bearer token, the source credential of a
/// copy, a customer-provided key, the copy source URL itself (a presigned S3 URL with its
/// signature, and with STS credentials its session token), and the managed-identity
/// endpoint's secret header.
const SENSITIVE: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "x-ms-copy-source",
    "x-ms-copy-source-authorization",
    "x-ms-encryption-key",
    "x-identity-header",
];

/// Client options for the SDK's credential pipelines (managed identity, client secret): the
/// same marked transport, so the identity endpoint's secret header is marked too.
pub(crate) fn credential_client_options() -> azure_core::http::ClientOptions {
    azure_core::http::ClientOptions {
        transport: Some(azure_core::http::Transport::new(std::sync::Arc::new(
            MarkedClient::new(),
        ))),
        ..Default::default()
    }
}

/// Managed identity options: the user-assigned identity `AZURE_CLIENT_ID` names when no
/// client secret goes with it (Container Apps and App Service give an app several), else the
/// system-assigned one.
pub(crate) fn managed_identity_options() -> azure_identity::ManagedIdentityCredentialOptions {
    let secret = std::env::var("AZURE_CLIENT_SECRET")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let user_assigned_id = match (std::env::var("AZURE_CLIENT_ID"), secret) {
        (Ok(id), None) if !id.trim().is_empty() => {
            Some(azure_identity::UserAssignedId::ClientId(id.trim().to_string()))
        }
        _ => None,
    };
    azure_identity::ManagedIdentityCredentialOptions {
        user_assigned_id,
        client_options: crate::http::credential_client_options(),
    }
}

/// A lazily created, shared HTTP transport.
#[derive(Clone, Default)]
pub struct HttpPool(Arc<std::sync::OnceLock<azure_core::http::Transport>>);

impl std::fmt::Debug for HttpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpPool")
    }
}

impl HttpPool {
    /// The transport, created on first use.
    pub fn transport(&self) -> azure_core::http::Transport {
        self.0
            .get_or_init(|| azure_core::http::Transport::new(Arc::new(MarkedClient::new())))
            .clone()
    }
}

/// reqwest with credential headers marked sensitive and URLs kept out of errors.
#[derive(Debug)]
pub(crate) struct MarkedClient(reqwest::Client);

impl MarkedClient {
    pub(crate) fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .no_deflate()
            .build()
            .expect("an HTTP client with rustls and no custom roots builds");
        MarkedClient(client)
    }
}

/// Whether a request header's value is a credential.
fn sensitive(name: &str) -> bool {
    SENSITIVE.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// The SDK's request headers as reqwest's, the credential ones marked sensitive.
fn marked_headers(from: &Headers) -> azure_core::Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in from.iter() {
        let n = reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()).map_err(|e| {
            azure_core::Error::with_error(ErrorKind::DataConversion, e, format!("header name `{}`", name.as_str()))
        })?;
        // The value is never quoted: it may be the credential.
        let mut v = reqwest::header::HeaderValue::from_str(value.as_str()).map_err(|e| {
            azure_core::Error::with_error(
                ErrorKind::DataConversion,
                e,
                format!("header `{}` has a bad value", name.as_str()),
            )
        })?;
        v.set_sensitive(sensitive(name.as_str()));
        headers.append(n, v);
    }
    Ok(headers)
}

#[async_trait]
impl HttpClient for MarkedClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
            .map_err(|e| azure_core::Error::with_error(ErrorKind::Other, e, "unsupported HTTP method"))?;
        let headers = marked_headers(request.headers())?;
        let req = self.0.request(method, request.url().clone()).headers(headers);
        let req = match request.body().clone() {
            Body::Bytes(bytes) => req.body(bytes),
            Body::SeekableStream(stream) => req.body(reqwest::Body::wrap_stream(stream)),
        };
        let rsp = req.send().await.map_err(|e| {
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            azure_core::Error::with_error(kind, e.without_url(), "failed to execute `reqwest` request")
        })?;
        let status = rsp.status().as_u16();
        let mut out = Headers::new();
        for (k, v) in rsp.headers() {
            if let Ok(s) = v.to_str() {
                out.insert(HeaderName::from(k.as_str().to_owned()), HeaderValue::from(s.to_owned()));
            }
        }
        let body = rsp
            .bytes_stream()
            .map_err(|e| azure_core::Error::with_error(ErrorKind::Io, e.without_url(), "reading a response body"));
        Ok(AsyncRawResponse::new(status.into(), out, Box::pin(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_sensitive_whatever_their_case() {
        for h in [
            "Authorization",
            "x-ms-copy-source",
            "X-MS-COPY-SOURCE-AUTHORIZATION",
            "x-ms-encryption-key",
        ] {
            assert!(sensitive(h), "{h}");
        }
        for h in ["x-ms-version", "content-type", "x-ms-copy-source-range-x"] {
            assert!(!sensitive(h), "{h}");
        }
    }

    #[test]
    fn the_headers_sent_print_no_credential() {
        let mut h = Headers::new();
        for (name, value) in [
            ("authorization", "Bearer TOKENVALUE"),
            (
                "x-ms-copy-source",
                "https://b.s3.amazonaws.com/k?X-Amz-Signature=SIGVALUE",
            ),
            ("x-identity-header", "MIVALUE"),
            ("x-ms-version", "2025-01-05"),
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let map = marked_headers(&h).unwrap();
        let debug = format!("{map:?}");
        for secret in ["TOKENVALUE", "SIGVALUE", "MIVALUE"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        // Marked, not dropped: the values still go out, and the rest prints as usual.
        assert_eq!(map["authorization"], "Bearer TOKENVALUE");
        assert!(debug.contains("2025-01-05"), "{debug}");
    }

    #[tokio::test]
    async fn a_transport_error_does_not_quote_the_url_and_its_sas() {
        use azure_core::http::Method;
        // A port that was just free: nothing listens there, so the connect fails.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/c/b?sv=2022-11-02&sig=SECRETSIGNATURE")
            .parse()
            .unwrap();
        let req = Request::new(url, Method::Get);
        let err = MarkedClient::new().execute_request(&req).await.unwrap_err();
        let mut text = format!("{err} {err:?}");
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
        while let Some(s) = src {
            text.push_str(&format!(" {s} {s:?}"));
            src = s.source();
        }
        assert!(!text.contains("SECRETSIGNATURE"), "{text}");
        assert_eq!(*err.kind(), ErrorKind::Connection, "{text}");
    }
}
