//! `ScheduledRun`: timer-triggered (`%SYNC_SCHEDULE%`); sweeps runs that stopped moving, then
//! starts the run in `SYNC_SCHEDULED_RUN`, unless one for the same source and target is still
//! running (`app::schedule::fire`, which `serve --work-queues` fires on its own timer).

use super::protocol::InvokeRequest;
use super::{Failure, Handled};
use crate::app::schedule::{fire, Fired};
use crate::app::AppState;

/// Handles one timer invocation.
pub async fn handle(state: &AppState, _req: &InvokeRequest) -> Result<Handled, Failure> {
    Ok(match fire(state).await? {
        Fired::NotConfigured => Handled::new(
            vec!["SYNC_SCHEDULED_RUN is not set; nothing to start".into()],
            serde_json::json!({"started": false}),
        ),
        Fired::Started(id) => Handled::new(
            vec![format!("started run {id}")],
            serde_json::json!({"started": true, "runId": id}),
        ),
        Fired::Busy(other) => Handled::new(
            vec![format!("run {other} is still running; not starting another")],
            serde_json::json!({"started": false, "runningRunId": other}),
        ),
    })
}
