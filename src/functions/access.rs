//! Who may call `serve`, checked before any route runs (decisions 71).
//!
//! - Inside the Functions host (`FUNCTIONS_WORKER_RUNTIME` set), the host's function keys
//!   gate the HTTP functions, and the host alone calls the invoke routes (`POST /<Function>`)
//!   on loopback: they pass.
//! - With `SYNC_API_KEY`, every other route but the readiness probe (`GET /`) needs the key,
//!   in `x-functions-key`, `Authorization: Bearer` or `?code=` (the page's links carry it),
//!   compared in constant time.
//! - Without a key, `serve` listens on loopback only (checked at bind) and answers only
//!   requests addressed to a loopback name, so a page that rebinds its own DNS name to
//!   127.0.0.1 is refused.
//! - Always: a request body must be JSON. A cross-site form or `text/plain` POST (which a
//!   browser sends without asking) gets 415, and a cross-site JSON POST needs a CORS preflight
//!   that `serve` never grants.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::Digest;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::redact::ExposeSecret;

/// Whether `serve` may listen on `addr` with this configuration.
pub fn check_bind(addr: std::net::IpAddr, config: &crate::config::Config) -> Result<()> {
    if addr.is_loopback() {
        return Ok(());
    }
    if config.server.functions_host {
        return Err(Error::invalid(format!(
            "serve --bind {addr}: under the Functions host (FUNCTIONS_WORKER_RUNTIME is set) serve listens on loopback only; the host is its one caller"
        )));
    }
    if config.server.api_key.is_some() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "serve --bind {addr}: listening beyond loopback needs SYNC_API_KEY (32+ characters; callers send it as the x-functions-key header or a Bearer token)"
    )))
}

fn refuse(status: StatusCode, kind: &str, error: String) -> Response {
    tracing::warn!(outcome = "request_refused", status = status.as_u16(), kind, reason = %error, "request refused");
    (status, axum::Json(json!({"error": error, "kind": kind}))).into_response()
}

/// `Host` is a loopback name: `localhost`, `127.x.x.x` or `[::1]`, with any port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The key the caller presented, if any.
fn presented(req: &Request) -> Option<String> {
    let h = req.headers();
    if let Some(k) = h.get("x-functions-key").and_then(|v| v.to_str().ok()) {
        return Some(k.to_string());
    }
    if let Some(k) = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(k.trim().to_string());
    }
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
}

/// Equal keys, in time that does not depend on where they differ (digests first, so the
/// length leaks nothing either).
fn same_key(a: &str, b: &str) -> bool {
    let (a, b) = (sha2::Sha256::digest(a.as_bytes()), sha2::Sha256::digest(b.as_bytes()));
    a.ct_eq(&b).into()
}

/// The body a request carries is JSON, or it carries none.
fn json_or_empty(req: &Request) -> bool {
    let h = req.headers();
    let has_body = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(h.contains_key(header::TRANSFER_ENCODING), |n| n > 0);
    if !has_body {
        return true;
    }
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The middleware: refuses what the rules above do not allow, before the route runs.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == "/" {
        return next.run(req).await;
    }
    if !json_or_empty(&req) {
        let got = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .chars()
            .take(100)
            .collect::<String>();
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type: send the body as application/json (got `{got}`)"),
        );
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // A browser marks what another site makes it send; a form or no-cors POST with an empty
    // body needs no preflight, so it is refused here.
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let fetch_site = req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let origin_host = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .and_then(|o| url::Url::parse(o).ok())
            .map(|u| match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
                None => u.host_str().unwrap_or("").to_string(),
            });
        let foreign_origin = origin_host.is_some_and(|o| !o.eq_ignore_ascii_case(&host));
        if matches!(fetch_site, Some("cross-site" | "same-site")) || foreign_origin {
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a request another site's page made is refused (Origin or Sec-Fetch-Site)".into(),
            );
        }
    }
    let invoke_route = !path.starts_with("/api/");
    // The Functions host calls the invoke routes on 127.0.0.1; nothing else may.
    if state.config.server.functions_host && invoke_route && loopback_host(&host) {
        return next.run(req).await;
    }
    match state.config.server.api_key.as_ref() {
        Some(key) => {
            if !presented(&req).is_some_and(|k| same_key(&k, key.expose_secret())) {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong key: send SYNC_API_KEY as the x-functions-key header, a Bearer token, or the code query parameter".into(),
                );
            }
        }
        None => {
            if !loopback_host(&host) {
                let host: String = host.chars().take(100).collect();
                return refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("Host `{host}` is not a loopback name: without SYNC_API_KEY, serve answers only requests to localhost or 127.0.0.1"),
                );
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names() {
        for ok in [
            "localhost",
            "localhost:7071",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:7071",
            "LOCALHOST",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:7071",
            "localhost.evil.example",
            "10.0.0.1:7071",
            "[::2]:80",
            "0.0.0.0",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn keys_compare_whole() {
        let k = "k".repeat(40);
        assert!(same_key(&k, &k));
        assert!(!same_key(&k, &"k".repeat(39)));
        assert!(!same_key(&k, &format!("{}x", &k[..39])));
        assert!(!same_key(&k, ""));
    }
}
