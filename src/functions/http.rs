//! The two doors of every HTTP function (the run API, `Verify`, `Cutover` and the
//! dashboard): the invoke protocol, where the Functions host calls `/StartRun` etc. with
//! `Data.req` and expects `Outputs.res`, and the same paths served directly, so a locally
//! running handler answers `curl http://localhost:PORT/api/runs` like the Function App.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::protocol::{HttpOutput, HttpTriggerRequest, InvokeRequest, Reply};
use super::runs::{api, Origin, Route};
use super::{Failure, Handled};
use crate::app::AppState;
use crate::error::Error;

/// The HTTP trigger's binding name in the run functions' function.json.
pub const BINDING: &str = "req";
/// The HTTP output binding's name.
pub const OUTPUT: &str = "res";

/// The invoke-protocol door: parses `Data.req`, runs the operation, answers `Outputs.res`.
pub async fn handle(state: &AppState, req: &InvokeRequest, function: &str) -> Result<Handled, Failure> {
    let http: HttpTriggerRequest = req
        .data
        .get(BINDING)
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| Failure::bad_input(Error::invalid(format!("Data.{BINDING} is not an HTTP request: {e}"))))?
        .ok_or_else(|| Failure::bad_input(Error::invalid(format!("invoke payload has no Data.{BINDING}"))))?;
    let id = || http.params.get("id").cloned().unwrap_or_default();
    let origin = Origin {
        base: url::Url::parse(&http.url)
            .ok()
            .map(|u| u.origin().ascii_serialization()),
        code: http.query.get("code").cloned(),
    };
    let route = match function {
        "StartRun" => Some(Route::Start),
        "ListRuns" => Some(Route::List),
        "GetRun" => Some(Route::Get(id())),
        "CancelRun" => Some(Route::Cancel(id())),
        "GetRunReport" => Some(Route::Report(id())),
        "Verify" => Some(Route::Verify),
        "Cutover" | "Dashboard" | "DashboardData" | "OpenApi" => None,
        other => {
            return Err(Failure::bad_input(Error::invalid(format!(
                "unknown HTTP function {other}"
            ))))
        }
    };
    let reply = match route {
        Some(route) => api(state, route, &http.query, http.body.as_deref(), &origin).await,
        None if function == "Cutover" => super::cutover::api(state, &http.query).await,
        None if function == "DashboardData" => super::dashboard::data(state, &http.query).await,
        None if function == "OpenApi" => openapi(),
        None => super::dashboard::page(),
    };
    let mut headers: HashMap<String, String> = reply.headers.into_iter().collect();
    let (content_type, body) = match reply.text {
        Some((t, text)) => (t, text),
        None => ("application/json", reply.body.to_string()),
    };
    headers.insert("Content-Type".into(), content_type.into());
    let out = HttpOutput {
        status_code: reply.status,
        headers,
        body,
    };
    let mut h = Handled::new(vec![format!("{function}: HTTP {}", reply.status)], Value::Null);
    h.outputs
        .insert(OUTPUT.into(), serde_json::to_value(out).expect("serializable"));
    Ok(h)
}

fn direct_reply(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = match reply.text {
        Some((content_type, text)) => {
            (status, [(axum::http::header::CONTENT_TYPE, content_type)], text).into_response()
        }
        None => (status, axum::Json(reply.body)).into_response(),
    };
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k.as_str()),
            axum::http::HeaderValue::try_from(v.as_str()),
        ) {
            res.headers_mut().insert(k, v);
        }
    }
    res
}

fn direct_origin(headers: &HeaderMap, query: &HashMap<String, String>) -> Origin {
    Origin {
        base: headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(|h| format!("http://{h}")),
        code: query.get("code").cloned(),
    }
}

/// `POST /api/runs`, served directly.
pub async fn direct_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).to_string();
    direct_reply(
        api(
            &state,
            Route::Start,
            &query,
            Some(&body),
            &direct_origin(&headers, &query),
        )
        .await,
    )
}

/// `GET /api/runs`, served directly.
pub async fn direct_list(State(state): State<AppState>, Query(query): Query<HashMap<String, String>>) -> Response {
    direct_reply(api(&state, Route::List, &query, None, &Origin::default()).await)
}

/// `GET /api/runs/{id}`, served directly.
pub async fn direct_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    direct_reply(api(&state, Route::Get(id), &query, None, &direct_origin(&headers, &query)).await)
}

/// `GET /api/runs/{id}/report`, served directly.
pub async fn direct_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    direct_reply(
        api(
            &state,
            Route::Report(id),
            &query,
            None,
            &direct_origin(&headers, &query),
        )
        .await,
    )
}

/// `POST /api/runs/{id}/cancel`, served directly.
pub async fn direct_cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    direct_reply(api(&state, Route::Cancel(id), &query, None, &Origin::default()).await)
}

/// `GET /api/cutover`, served directly.
pub async fn direct_cutover(State(state): State<AppState>, Query(query): Query<HashMap<String, String>>) -> Response {
    direct_reply(super::cutover::api(&state, &query).await)
}

/// `POST /api/verify`, served directly.
pub async fn direct_verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).to_string();
    direct_reply(
        api(
            &state,
            Route::Verify,
            &query,
            Some(&body),
            &direct_origin(&headers, &query),
        )
        .await,
    )
}

/// The HTTP API's contract (`api/openapi.json`, OpenAPI 3.1), as built into the binary.
pub const OPENAPI: &str = include_str!("../../api/openapi.json");

fn openapi() -> Reply {
    Reply::json(
        200,
        serde_json::from_str(OPENAPI).expect("api/openapi.json is JSON (a test reads it)"),
    )
}

/// `GET /api/openapi.json`, served directly.
pub async fn direct_openapi() -> Response {
    direct_reply(openapi())
}

/// `GET /api/dashboard`, served directly.
pub async fn direct_dashboard() -> Response {
    direct_reply(super::dashboard::page())
}

/// `GET /api/dashboard/data`, served directly.
pub async fn direct_dashboard_data(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    direct_reply(super::dashboard::data(&state, &query).await)
}
