//! The run API: `StartRun` (`POST /api/runs`), `ListRuns` (`GET /api/runs`), `GetRun`
//! (`GET /api/runs/{id}`), `GetRunReport` (`GET /api/runs/{id}/report`, JSON Lines) and
//! `CancelRun` (`POST /api/runs/{id}/cancel`).
//!
//! One core serves two doors: the invoke protocol (the Functions host calls `/StartRun` etc.
//! with `Data.req` and expects `Outputs.res`), and the same paths served directly, so a
//! locally running handler answers `curl http://localhost:PORT/api/runs` like the Function App.
//! Starting answers `202 Accepted` with `Location` and `Retry-After`, and a run answers 202
//! until it ends, then 200: the asynchronous pattern the Logic Apps HTTP action follows.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::protocol::{HttpOutput, HttpTriggerRequest, InvokeRequest, Reply};
use super::{Failure, Handled};
use crate::app::service::{RunService, Started};
use crate::app::AppState;
use crate::error::{Error, ErrorKind};
use crate::messages::run_spec::RunSpec;
use crate::messages::ListMessage;

/// The HTTP trigger's binding name in the run functions' function.json.
pub const BINDING: &str = "req";
/// The HTTP output binding's name.
pub const OUTPUT: &str = "res";

/// Which operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Start a run.
    Start,
    /// Recent runs.
    List,
    /// One run.
    Get(String),
    /// Cancel a run.
    Cancel(String),
    /// One run's per-object report.
    Report(String),
}

/// Where the caller reached us, for an absolute `Location`; and the `code` it passed, which
/// the poller needs again (it is the caller's own key, echoed only to the caller).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `scheme://host[:port]`.
    pub base: Option<String>,
    /// The `code` query parameter.
    pub code: Option<String>,
}

impl Origin {
    fn location(&self, id: &str) -> String {
        let mut s = format!("{}/api/runs/{id}", self.base.as_deref().unwrap_or(""));
        if let Some(c) = &self.code {
            s.push_str("?code=");
            s.push_str(&percent_encoding::utf8_percent_encode(c, percent_encoding::NON_ALPHANUMERIC).to_string());
        }
        s
    }
}

/// Runs one API operation.
pub async fn api(
    state: &AppState,
    route: Route,
    query: &HashMap<String, String>,
    body: Option<&str>,
    origin: &Origin,
) -> Reply {
    let svc = match state.runs().await {
        Ok(s) => s,
        Err(e) => return Reply::error(503, &e.context("run service unavailable")),
    };
    let retry_after = svc.config.runs.check_interval.as_secs().max(1).to_string();
    let result = match route {
        Route::Start => start(svc, body, origin, &retry_after).await,
        Route::List => list(svc, query).await,
        Route::Get(id) => get(svc, &id, origin, &retry_after).await,
        Route::Cancel(id) => cancel(svc, &id).await,
        Route::Report(id) => report(svc, &id, query, origin).await,
    };
    result.unwrap_or_else(|e| {
        let status = e.http_status();
        tracing::warn!(outcome = "api_error", status, error = %e, "run API call failed");
        Reply::error(status, &e)
    })
}

async fn start(
    svc: &RunService,
    body: Option<&str>,
    origin: &Origin,
    retry_after: &str,
) -> crate::error::Result<Reply> {
    let text = body.unwrap_or("").trim();
    if text.is_empty() {
        return Ok(Reply::error(400, &Error::invalid("request body is empty: send the run as JSON, e.g. {\"source\":{\"bucket\":\"b\"},\"target\":{\"container\":\"c\"}}")));
    }
    let (spec, notify) = match RunSpec::parse(text, "request body", &svc.config) {
        Ok(x) => x,
        Err(e) => return Ok(Reply::error(400, &e)),
    };
    match svc.start_queued(spec, notify, crate::model::Trigger::Http).await? {
        Started::Busy(other) => Ok(Reply::json(
            409,
            json!({"error": format!("run {other} is still running for this source and target; wait for it or cancel it"),
                   "kind": "conflict", "runId": other}),
        )),
        Started::Created(run) => {
            let location = origin.location(&run.id);
            Ok(Reply {
                status: 202,
                headers: vec![
                    ("Location".into(), location),
                    ("Retry-After".into(), retry_after.into()),
                ],
                body: json!({"runId": run.id, "state": run.state.as_str(), "statusUrl": format!("/api/runs/{}", run.id)}),
                text: None,
            })
        }
    }
}

async fn list(svc: &RunService, query: &HashMap<String, String>) -> crate::error::Result<Reply> {
    let top = query
        .get("top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(20usize)
        .clamp(1, 200);
    let runs = svc.store.recent(top).await?;
    let items: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({"runId": r.id, "state": r.state.as_str(), "phase": r.phase.as_str(), "trigger": r.trigger,
                   "startTime": r.started_at, "endTime": r.ended_at, "source": r.spec.source, "target": r.spec.target,
                   "dryRun": r.spec.dry_run})
        })
        .collect();
    Ok(Reply::json(200, json!({ "runs": items })))
}

async fn get(svc: &RunService, id: &str, origin: &Origin, retry_after: &str) -> crate::error::Result<Reply> {
    let Some(summary) = svc.summary(id).await? else {
        return Ok(Reply::json(
            404,
            json!({"error": format!("no run with id `{id}`"), "kind": "not_found"}),
        ));
    };
    if summary.state == crate::state::runs::store::RunState::Running {
        Ok(Reply {
            status: 202,
            headers: vec![
                ("Location".into(), origin.location(id)),
                ("Retry-After".into(), retry_after.into()),
            ],
            body: summary.to_json(),
            text: None,
        })
    } else {
        Ok(Reply::json(200, summary.to_json()))
    }
}

/// JSON Lines, one object per key; the next page's address in `Link` (rel="next") and its
/// cursor in `x-next-cursor`.
async fn report(
    svc: &RunService,
    id: &str,
    query: &HashMap<String, String>,
    origin: &Origin,
) -> crate::error::Result<Reply> {
    use crate::state::runs::report::{parse_outcomes, report_page, MAX_PAGE};
    if svc.store.get(id).await?.is_none() {
        return Ok(Reply::json(
            404,
            json!({"error": format!("no run with id `{id}`"), "kind": "not_found"}),
        ));
    }
    let outcomes = match parse_outcomes(query.get("outcome").map(String::as_str)) {
        Ok(o) => o,
        Err(e) => return Ok(Reply::error(400, &e.context("outcome"))),
    };
    let limit = match query.get("limit").map(|l| l.parse::<u32>()) {
        None => 1000,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return Ok(Reply::error(
                400,
                &Error::invalid(format!("limit: must be a number from 1 to {MAX_PAGE}")),
            ))
        }
    };
    let page = match report_page(
        &svc.store,
        id,
        &outcomes,
        limit,
        query.get("cursor").map(String::as_str),
    )
    .await
    {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::Invalid => return Ok(Reply::error(400, &e)),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    for l in &page.lines {
        text.push_str(&serde_json::to_string(l).expect("serializable"));
        text.push('\n');
    }
    let mut headers = Vec::new();
    if let Some(next) = &page.next {
        let names: Vec<&str> = outcomes.iter().map(|o| o.name()).collect();
        let mut url = format!(
            "{}/api/runs/{id}/report?outcome={}&limit={limit}&cursor={next}",
            origin.base.as_deref().unwrap_or(""),
            names.join(",")
        );
        if let Some(c) = &origin.code {
            url.push_str("&code=");
            url.push_str(&percent_encoding::utf8_percent_encode(c, percent_encoding::NON_ALPHANUMERIC).to_string());
        }
        headers.push(("Link".into(), format!("<{url}>; rel=\"next\"")));
        headers.push(("x-next-cursor".into(), next.clone()));
    }
    Ok(Reply {
        status: 200,
        headers,
        body: Value::Null,
        text: Some(("application/x-ndjson", text)),
    })
}

async fn cancel(svc: &RunService, id: &str) -> crate::error::Result<Reply> {
    match svc.cancel(id, "the run API (CancelRun)").await {
        Ok(None) => Ok(Reply::json(
            404,
            json!({"error": format!("no run with id `{id}`"), "kind": "not_found"}),
        )),
        Ok(Some(run)) => {
            // The webhook goes out from the list-pages queue, with its retries.
            svc.enqueue(&ListMessage::Check { run_id: id.into() }, None).await?;
            Ok(Reply::json(200, svc.summary_of(&run).await?.to_json()))
        }
        Err(e) if e.kind() == ErrorKind::Precondition => Ok(Reply::error(409, &e)),
        Err(e) => Err(e),
    }
}

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
        "Verify" | "Cutover" | "Dashboard" | "DashboardData" => None,
        other => {
            return Err(Failure::bad_input(Error::invalid(format!(
                "unknown HTTP function {other}"
            ))))
        }
    };
    let reply = match route {
        Some(route) => api(state, route, &http.query, http.body.as_deref(), &origin).await,
        None if function == "Cutover" => super::cutover::api(state, &http.query).await,
        None if function == "Dashboard" => super::dashboard::page(),
        None if function == "DashboardData" => super::dashboard::data(state, &http.query).await,
        None => super::verify::api(state, http.body.as_deref()).await,
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
pub async fn direct_verify(State(state): State<AppState>, body: Bytes) -> Response {
    let body = String::from_utf8_lossy(&body).to_string();
    direct_reply(super::verify::api(&state, Some(&body)).await)
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
