//! `ScheduledRun`: timer-triggered (`%SYNC_SCHEDULE%`); sweeps runs that stopped moving, then
//! starts the run in `SYNC_SCHEDULED_RUN`, unless one for the same source and target is still
//! running.

use super::protocol::InvokeRequest;
use super::{Failure, Handled};
use crate::app::service::Started;
use crate::app::AppState;
use crate::messages::run_spec::RunSpec;
use crate::redact::ExposeSecret;

/// Handles one timer invocation.
pub async fn handle(state: &AppState, _req: &InvokeRequest) -> Result<Handled, Failure> {
    let Some(text) = state.config.runs.scheduled.as_ref().map(ExposeSecret::expose_secret) else {
        return Ok(Handled::new(
            vec!["SYNC_SCHEDULED_RUN is not set; nothing to start".into()],
            serde_json::json!({"started": false}),
        ));
    };
    let (spec, notify) = RunSpec::parse(text, "SYNC_SCHEDULED_RUN", &state.config).map_err(Failure::bad_input)?;
    let svc = state.runs().await.map_err(Failure::internal)?;
    // A run that stopped moving must not block this one for ever: ended first, naming why.
    if let Err(e) = crate::app::sweep::sweep(svc).await {
        tracing::warn!(error = %e, "the sweep failed; a stalled run may still block this schedule");
    }
    match svc
        .start_queued(spec, notify, crate::model::Trigger::Schedule)
        .await
        .map_err(Failure::internal)?
    {
        Started::Created(run) => Ok(Handled::new(
            vec![format!("started run {}", run.id)],
            serde_json::json!({"started": true, "runId": run.id}),
        )),
        Started::Busy(other) => {
            tracing::warn!(run_id = %other, outcome = "schedule_skipped", "previous run still running; not starting another");
            Ok(Handled::new(
                vec![format!("run {other} is still running; not starting another")],
                serde_json::json!({"started": false, "runningRunId": other}),
            ))
        }
    }
}
