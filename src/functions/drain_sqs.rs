//! `DrainSqs`: timer-triggered (Azure Functions has no SQS trigger). Sweeps runs that stopped
//! moving, then long-polls the bucket's SQS queue for the configured budget and relays each S3
//! record to `copy-objects`.

use super::protocol::InvokeRequest;
use super::{Failure, Handled};
use crate::app::AppState;
use crate::error::Error;

/// Handles one timer invocation.
pub async fn handle(state: &AppState, _req: &InvokeRequest) -> Result<Handled, Failure> {
    // The minute timer is also the sweep's clock: a run whose chain stopped is ended here.
    match state.runs().await {
        Ok(svc) => {
            if let Err(e) = crate::app::sweep::sweep(svc).await {
                tracing::warn!(error = %e, "the sweep failed; trying again next minute");
            }
        }
        Err(e) => tracing::warn!(error = %e, "the sweep could not reach the runs table"),
    }
    let drainer = state.drainer().await.map_err(Failure::internal)?;
    let stats = drainer
        .drain(state.config.relay.drain_budget, false)
        .await
        .map_err(Failure::internal)?;
    if let Err(e) = crate::app::lag::record(&state.engine.checkpoint().lag(), drainer.sqs(), &stats).await {
        tracing::warn!(error = %e, "could not record drain lag");
    }
    let value = serde_json::to_value(&stats).map_err(|e| Failure::internal(Error::internal(e.to_string())))?;
    Ok(Handled::new(
        vec![format!(
            "drained {} SQS messages: {} records relayed, {} rejected, {} left for retry",
            stats.received, stats.relayed, stats.rejected, stats.left_for_retry
        )],
        value,
    ))
}
