//! The custom-handler side: the axum router the Functions host calls, one route per function.

pub mod access;
pub mod copy_object;
pub mod cutover;
pub mod dashboard;
pub mod drain_sqs;
pub mod http;
pub mod list_page;
pub mod protocol;
pub mod runs;
pub mod scheduled_run;
pub mod verify;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tracing::Instrument;

use crate::app::AppState;
use crate::error::Error;
use protocol::{InvokeRequest, InvokeResponse};

pub use crate::app::invocation::{Failure, Handled};

/// The queue message of a queue-triggered invocation (`Data.<binding>`), or a bad-input
/// failure naming what is missing.
pub fn queue_message(req: &InvokeRequest, binding: &str) -> Result<String, Failure> {
    req.data
        .get(binding)
        .and_then(protocol::queue_message_text)
        .ok_or_else(|| {
            Failure::bad_input(Error::invalid(format!(
                "invoke payload has no Data.{binding} queue message"
            )))
        })
}

/// Every function the handler serves, by the name the host calls (`POST /<name>`). Each has
/// a `functions/<name>/function.json`.
pub const FUNCTIONS: [&str; 14] = [
    "CopyObject",
    "DrainSqs",
    "ListPage",
    "ScheduledRun",
    "StartRun",
    "ListRuns",
    "GetRun",
    "GetRunReport",
    "CancelRun",
    "Verify",
    "Cutover",
    "Dashboard",
    "DashboardData",
    "OpenApi",
];

/// The functions of the copy queues past the first (`SYNC_COPY_QUEUES`, decision 125):
/// `CopyObjectK` triggers on `copy-objects-K` and runs `CopyObject`. One whose queue was not
/// created idles: the host's queue listener takes a missing queue for an empty one.
pub const COPY_SIBLINGS: [&str; 15] = [
    "CopyObject1",
    "CopyObject2",
    "CopyObject3",
    "CopyObject4",
    "CopyObject5",
    "CopyObject6",
    "CopyObject7",
    "CopyObject8",
    "CopyObject9",
    "CopyObject10",
    "CopyObject11",
    "CopyObject12",
    "CopyObject13",
    "CopyObject14",
    "CopyObject15",
];

/// The router: `GET /` for the host's readiness probe, `POST /<FunctionName>` for the invoke
/// protocol, and the HTTP API under `/api/` served directly (for local use without the
/// Functions host); every route behind [`access::guard`].
pub fn router(state: AppState) -> Router {
    let mut r = Router::new().route("/", get(|| async { "ok" }));
    for f in FUNCTIONS.into_iter().chain(COPY_SIBLINGS) {
        r = r.route(&format!("/{f}"), post(move |s, h, b| function_route(f, s, h, b)));
    }
    r.route("/api/runs", post(http::direct_start).get(http::direct_list))
        .route("/api/runs/{id}", get(http::direct_get))
        .route("/api/runs/{id}/report", get(http::direct_report))
        .route("/api/runs/{id}/cancel", post(http::direct_cancel))
        .route("/api/verify", post(http::direct_verify))
        .route("/api/cutover", get(http::direct_cutover))
        .route("/api/dashboard", get(http::direct_dashboard))
        .route("/api/dashboard/data", get(http::direct_dashboard_data))
        .route("/api/openapi.json", get(http::direct_openapi))
        .layer(axum::middleware::from_fn_with_state(state.clone(), access::guard))
        .with_state(state)
}

async fn function_route(
    function: &'static str,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    invoke(function, headers, body, |req| {
        let state = state.clone();
        async move {
            match function {
                f if f.starts_with("CopyObject") => copy_object::handle(&state, &req).await,
                "DrainSqs" => drain_sqs::handle(&state, &req).await,
                "ListPage" => list_page::handle(&state, &req).await,
                "ScheduledRun" => scheduled_run::handle(&state, &req).await,
                other => http::handle(&state, &req, other).await,
            }
        }
    })
    .await
}

/// Parses the invoke payload, runs the handler inside a span carrying the invocation id, and
/// shapes the reply.
async fn invoke<F, Fut>(function: &'static str, headers: HeaderMap, body: Bytes, run: F) -> Response
where
    F: FnOnce(InvokeRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Handled, Failure>>,
{
    let invocation_id = headers
        .get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let span = tracing::info_span!("invocation", function, invocation_id = %invocation_id);
    async move {
        let result = match serde_json::from_slice::<InvokeRequest>(&body) {
            Ok(req) => run(req).await,
            Err(e) => Err(Failure::bad_input(Error::invalid(format!(
                "invoke payload is not the custom-handler JSON {{\"Data\":…,\"Metadata\":…}}: {e}"
            )))),
        };
        match result {
            Ok(h) => (
                StatusCode::OK,
                Json(InvokeResponse {
                    outputs: h.outputs,
                    logs: h.logs,
                    return_value: Some(h.return_value),
                }),
            )
                .into_response(),
            Err(f) => {
                tracing::warn!(function, outcome = "invocation_failed", status = f.status, error = %f.error, "invocation failed");
                let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let body = InvokeResponse {
                    outputs: Default::default(),
                    logs: vec![f.error.to_string()],
                    return_value: Some(serde_json::json!({
                        "error": f.error.message(),
                        "kind": f.error.kind().as_str(),
                    })),
                };
                (status, Json(body)).into_response()
            }
        }
    }
    .instrument(span)
    .await
}
