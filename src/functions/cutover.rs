//! `Cutover` (`GET /api/cutover?bucket=B&container=C`): the cutover gate's answer, 200 with
//! `ready` true or false and each check with its number. `sourcePrefix` and `targetPrefix`
//! name the scope (by default the events' mapping), `maxLagSeconds` and
//! `maxVerifyAgeSeconds` change the bounds; `container` defaults to SYNC_TARGET_CONTAINER.

use std::collections::HashMap;
use std::time::Duration;

use super::protocol::Reply;
use crate::app::cutover::{asked_scope, assess, Bounds};
use crate::app::AppState;
use crate::error::Error;

/// Assesses the gate for the HTTP API.
pub async fn api(state: &AppState, query: &HashMap<String, String>) -> Reply {
    match run(state, query).await {
        Ok(r) => r,
        Err(e) => Reply::error(e.http_status(), &e),
    }
}

/// A whole number of seconds from query parameter `name`, or `default`.
fn seconds(query: &HashMap<String, String>, name: &str, default: Duration) -> crate::error::Result<Duration> {
    match query.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| Error::invalid(format!("{name}: must be a whole number of seconds, not `{v}`"))),
    }
}

async fn run(state: &AppState, query: &HashMap<String, String>) -> crate::error::Result<Reply> {
    let bucket = query
        .get("bucket")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| Error::invalid("bucket: the source bucket is required, e.g. ?bucket=my-bucket"))?;
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) => c.clone(),
        None => state.config.mapping.container.clone().ok_or_else(|| {
            Error::invalid("container: required when SYNC_TARGET_CONTAINER is not set, e.g. &container=mirror")
        })?,
    };
    crate::model::validate_container_name(&container).map_err(|e| e.context("container"))?;
    let bounds = Bounds {
        max_lag: seconds(query, "maxLagSeconds", Bounds::default().max_lag)?,
        max_verify_age: seconds(query, "maxVerifyAgeSeconds", Bounds::default().max_verify_age)?,
    };
    let scope = asked_scope(
        &state.config,
        bucket,
        &container,
        query.get("sourcePrefix").map(String::as_str),
        query.get("targetPrefix").map(String::as_str),
    )?;
    let svc = state.runs().await?;
    let gate = assess(svc, &scope, bounds).await?;
    Ok(Reply::json(
        200,
        serde_json::to_value(&gate).map_err(|e| Error::internal(format!("encode the gate: {e}")))?,
    ))
}
