//! `Dashboard` (`GET /api/dashboard`): one self-contained page (no CDN, no external
//! request) that draws `DashboardData` (`GET /api/dashboard/data?top=20&before=RUN_ID`)
//! and refreshes itself. The page carries the caller's `code` on to its data requests and
//! report links, so the Functions host's function keys guard both (decisions 70).

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine as _;
use sha2::Digest;

use super::protocol::Reply;
use crate::app::dashboard::{snapshot, MAX_RUNS};
use crate::app::AppState;
use crate::error::Error;

/// The page: markup, style and script in one file.
const PAGE: &str = include_str!("dashboard.html");

/// A Content-Security-Policy that lets the page run only its own inline script (by hash)
/// and talk only to its own origin.
fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let script = PAGE
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map(|(s, _)| s)
            .unwrap_or("");
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script.as_bytes()));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    })
}

/// The page itself.
pub fn page() -> Reply {
    Reply {
        status: 200,
        headers: vec![
            ("Content-Security-Policy".into(), csp().into()),
            ("X-Content-Type-Options".into(), "nosniff".into()),
            ("Referrer-Policy".into(), "no-referrer".into()),
            ("Cache-Control".into(), "no-store".into()),
        ],
        body: serde_json::Value::Null,
        text: Some(("text/html; charset=utf-8", PAGE.to_string())),
    }
}

/// One refresh's data, as JSON.
pub async fn data(state: &AppState, query: &HashMap<String, String>) -> Reply {
    match run(state, query).await {
        Ok(r) => r,
        Err(e) => {
            let status = e.http_status();
            tracing::warn!(outcome = "api_error", status, error = %e, "dashboard data failed");
            Reply::error(status, &e)
        }
    }
}

async fn run(state: &AppState, query: &HashMap<String, String>) -> crate::error::Result<Reply> {
    let top = match query.get("top") {
        None => 20,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=MAX_RUNS).contains(&n) => n,
            _ => {
                return Err(Error::invalid(format!(
                    "top: must be a number from 1 to {MAX_RUNS}, not `{t}`"
                )))
            }
        },
    };
    let before = query.get("before").map(String::as_str).filter(|b| !b.is_empty());
    let svc = state.runs().await?;
    let snap = snapshot(svc, top, before).await?;
    let mut reply = Reply::json(
        200,
        serde_json::to_value(&snap).map_err(|e| Error::internal(format!("encode the dashboard: {e}")))?,
    );
    reply.headers.push(("Cache-Control".into(), "no-store".into()));
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_its_script_is_pinned_by_hash() {
        // Nothing fetched from elsewhere: no absolute URL in a src, href or fetch.
        for needle in [
            "src=\"http",
            "href=\"http",
            "fetch(\"http",
            "fetch('http",
            "@import",
            "//cdn",
        ] {
            assert!(!PAGE.contains(needle), "the page reaches out: {needle}");
        }
        assert_eq!(
            PAGE.matches("<script>").count(),
            1,
            "one inline script, hashed in the CSP"
        );
        let c = csp();
        assert!(
            c.contains("script-src 'sha256-") && c.contains("connect-src 'self'"),
            "{c}"
        );
        let r = page();
        assert_eq!(r.text.as_ref().unwrap().0, "text/html; charset=utf-8");
    }
}
