//! The run API: `StartRun` (`POST /api/runs`), `Verify` (`POST /api/verify`, a verify run),
//! `ListRuns` (`GET /api/runs`), `GetRun` (`GET /api/runs/{id}`), `GetRunReport`
//! (`GET /api/runs/{id}/report`, JSON Lines) and `CancelRun` (`POST /api/runs/{id}/cancel`).
//! `http` serves it through both doors.
//!
//! Starting answers `202 Accepted` with `Location` and `Retry-After`, and a run answers 202
//! until it ends, then 200: the asynchronous pattern the Logic Apps HTTP action follows.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::protocol::Reply;
use crate::app::service::{RunService, Started};
use crate::app::AppState;
use crate::error::{Error, ErrorKind};
use crate::messages::run_spec::RunSpec;
use crate::messages::ListMessage;

/// Which operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Start a run.
    Start,
    /// Start a verify run (`POST /api/verify`).
    Verify,
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
        Route::Verify => match super::verify::run_body(body.unwrap_or("")) {
            Ok(b) => start(svc, Some(&b), origin, &retry_after).await,
            Err(e) => Ok(Reply::error(400, &e)),
        },
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
