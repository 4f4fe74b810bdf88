//! Sync lag: after each drain, the queue's depth and the drain's figures are kept (in
//! `state::lag`), so `status` can show the backlog and the age of the oldest message seen.

use crate::app::drain::DrainStats;
use crate::aws::sqs::{QueueDepth, SqsQueue};
use crate::error::Result;
use crate::state::lag::{LagRecord, LagStore};

/// Records the last drain of `sqs` and the queue's depth.
pub async fn record(store: &LagStore, sqs: &SqsQueue, stats: &DrainStats) -> Result<QueueDepth> {
    let depth = sqs.depth().await?;
    store
        .record(&LagRecord {
            queue_url: sqs.url().to_string(),
            oldest_age_ms: stats.oldest_age_ms,
            received: stats.received,
            relayed: stats.relayed,
            rejected: stats.rejected,
            visible: depth.visible,
            in_flight: depth.in_flight,
        })
        .await?;
    tracing::info!(
        queue_visible = depth.visible,
        queue_in_flight = depth.in_flight,
        oldest_age_ms = stats.oldest_age_ms,
        outcome = "lag",
        "sqs lag"
    );
    Ok(depth)
}
