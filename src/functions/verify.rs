//! `Verify` (`POST /api/verify`): compares a source prefix with its target prefix and
//! answers the report; with `"repair": true` it also queues a copy (that ignores the
//! checkpoint) for every missing or stale object.

use serde_json::{json, Value};

use super::protocol::Reply;
use crate::app::copy_queues::CopySink;
use crate::app::verify::{verify_each, Limits, MAX_LISTED};
use crate::app::AppState;
use crate::error::Error;
use crate::messages::run_spec::RunSpec;
use crate::messages::CopyMessage;
use crate::model::Scope;

/// Runs one verification for the HTTP API.
pub async fn api(state: &AppState, body: Option<&str>) -> Reply {
    match run(state, body.unwrap_or("")).await {
        Ok(r) => r,
        Err(e) => Reply::error(
            if e.kind() == crate::error::ErrorKind::Invalid {
                400
            } else {
                500
            },
            &e,
        ),
    }
}

async fn run(state: &AppState, body: &str) -> crate::error::Result<Reply> {
    // The body is a run's source and target plus `repair`: parsed by the run spec's rules.
    let mut v: Value =
        serde_json::from_str(body).map_err(|e| Error::invalid(format!("request body is not JSON: {e}")))?;
    let mut flag = |name: &str| match v.as_object_mut().and_then(|m| m.remove(name)) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(Error::invalid(format!("request body: `{name}`: must be true or false"))),
    };
    let repair = flag("repair")?;
    let metadata = flag("metadata")?;
    let (spec, _) = RunSpec::parse(&v.to_string(), "request body", &state.config)?;
    let scope = Scope {
        bucket: spec.source.bucket.clone(),
        source_prefix: spec.source.prefix.clone(),
        container: spec.target.container.clone(),
        target_prefix: spec.target.prefix.clone(),
    };
    let svc = match repair {
        true => Some(state.runs().await?),
        false => None,
    };
    // Each batch of differences is queued as it is found (or dropped without `repair`), so
    // the request holds a page, not the prefix's differences.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<String>>(4);
    let queue = async {
        let mut queued = 0u64;
        while let Some(keys) = rx.recv().await {
            let Some(svc) = &svc else { continue };
            let copies: Vec<CopyMessage> = keys
                .into_iter()
                .map(|key| CopyMessage {
                    bucket: scope.bucket.clone(),
                    key,
                    container: Some(scope.container.clone()),
                    source_prefix: Some(scope.source_prefix.clone()),
                    target_prefix: Some(scope.target_prefix.clone()),
                    recheck: Some(true),
                    ..Default::default()
                })
                .collect();
            queued += copies.len() as u64;
            CopySink::send(&svc.copy_queues, copies).await?;
        }
        Ok::<u64, Error>(queued)
    };
    let (report, queued) = tokio::join!(
        verify_each(&state.engine, &scope, metadata, Limits::default(), tx),
        queue
    );
    // A failed send stops the comparison: its own error says why.
    let queued = queued?;
    let mut report = report?;
    report.repaired = queued;
    let clean = report.clean();
    let mut out = serde_json::to_value(&report).expect("serializable");
    out["clean"] = json!(clean);
    out["listedLimit"] = json!(MAX_LISTED);
    if repair {
        out["repairQueued"] = json!(report.repaired);
    }
    Ok(Reply::json(200, out))
}
