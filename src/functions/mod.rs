//! The custom-handler side: the axum router the Functions host calls, one route per function.

pub mod copy_object;
pub mod drain_sqs;
pub mod protocol;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use tracing::Instrument;

use crate::error::Error;
use crate::AppState;
use protocol::{InvokeRequest, InvokeResponse};

/// A successful invocation's logs and return value.
pub struct Handled {
    /// Lines for the host's invocation log.
    pub logs: Vec<String>,
    /// The `$return` value.
    pub return_value: Value,
}

/// A failed invocation: the status tells the host it failed (so it retries or poisons).
pub struct Failure {
    /// HTTP status for the host (4xx bad input, 5xx otherwise).
    pub status: u16,
    /// What went wrong, already redacted.
    pub error: Error,
}

impl Failure {
    /// Bad input: the message can never succeed as it is.
    pub fn bad_input(error: Error) -> Self {
        Failure { status: 400, error }
    }
}

/// The router: `GET /` for the host's readiness probe, and `POST /<FunctionName>`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/CopyObject", post(copy_object_route))
        .route("/DrainSqs", post(drain_sqs_route))
        .with_state(state)
}

async fn copy_object_route(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    invoke("CopyObject", headers, body, |req| {
        let state = state.clone();
        async move { copy_object::handle(&state, &req).await }
    })
    .await
}

async fn drain_sqs_route(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    invoke("DrainSqs", headers, body, |req| {
        let state = state.clone();
        async move { drain_sqs::handle(&state, &req).await }
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
                    outputs: Default::default(),
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
