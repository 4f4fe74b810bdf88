//! `watch --health-port`: the probes' HTTP listener, and `health`, the probe a platform runs
//! inside the container (an ECS health check is a command; the image has no curl).
//!
//! Both routes answer a status and a fixed-shape body that holds no data but which side is
//! unreachable, and they take no action; like `serve`'s `GET /`, they need no key. The
//! listener binds loopback unless `--health-bind` says otherwise (decisions 129).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use serde_json::json;

use crate::app::probes::Probes;
use crate::error::{Error, Result};

/// The liveness route.
pub(super) const LIVE: &str = "/livez";
/// The readiness route.
pub(super) const READY: &str = "/readyz";

async fn live(State(p): State<Arc<Probes>>) -> impl IntoResponse {
    let live = p.live();
    let status = if live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "live": live })))
}

async fn ready(State(p): State<Arc<Probes>>) -> impl IntoResponse {
    let r = p.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r))
}

/// Binds `addr` and serves the probes until the process ends.
pub(super) async fn serve(addr: SocketAddr, probes: Arc<Probes>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::invalid(format!("--health-port {}: cannot listen on {addr}: {e}", addr.port())))?;
    let app = axum::Router::new()
        .route(LIVE, get(live))
        .route(READY, get(ready))
        .with_state(probes);
    tracing::info!(addr = %addr, "health probes listening ({LIVE}, {READY})");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the health listener stopped");
        }
    });
    Ok(())
}

/// `health`: asks the local listener; exit 0 when it answers 200, 1 otherwise.
pub(super) async fn check(port: u16, ready: bool) -> Result<ExitCode> {
    let route = if ready { READY } else { LIVE };
    let url = format!("http://127.0.0.1:{port}{route}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| Error::internal(format!("http client: {e}")))?;
    match client.get(&url).send().await {
        Ok(resp) => {
            let ok = resp.status() == reqwest::StatusCode::OK;
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            println!("{status} {}", body.trim());
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Err(e) => {
            let why = if e.is_timeout() { "timed out" } else { "no answer" };
            println!("{why} from {url}: is `watch --health-port {port}` running here?");
            Ok(ExitCode::from(1))
        }
    }
}
