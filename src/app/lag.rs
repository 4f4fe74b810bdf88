//! Sync lag as data: each drain writes its figures to one row of the checkpoint table, so
//! `status` can show the backlog and the age of the oldest message seen.

use crate::app::drain::DrainStats;
use crate::aws::sqs::{QueueDepth, SqsQueue};
use crate::azure::table::{Entity, TableClient};
use crate::error::Result;

const PARTITION: &str = "_lag";

fn row_key(queue_url: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(queue_url.as_bytes())[..16])
}

/// Records the last drain of `sqs` and the queue's depth.
pub async fn record(table: &TableClient, sqs: &SqsQueue, stats: &DrainStats) -> Result<QueueDepth> {
    let depth = sqs.depth().await?;
    let mut e = Entity::new(PARTITION, row_key(sqs.url()));
    e.set_str("QueueUrl", sqs.url())
        .set_str("LastDrainAt", crate::state::checkpoint::now_rfc3339())
        .set_i64("OldestAgeMs", stats.oldest_age_ms as i64)
        .set_i64("Received", stats.received as i64)
        .set_i64("Relayed", stats.relayed as i64)
        .set_i64("Rejected", stats.rejected as i64)
        .set_i64("ApproxVisible", depth.visible as i64)
        .set_i64("ApproxInFlight", depth.in_flight as i64);
    table.update(&e, None).await?;
    tracing::info!(
        queue_visible = depth.visible,
        queue_in_flight = depth.in_flight,
        oldest_age_ms = stats.oldest_age_ms,
        outcome = "lag",
        "sqs lag"
    );
    Ok(depth)
}

/// The last recorded drain for `queue_url`: (last drain time, oldest age in ms).
pub async fn last(table: &TableClient, queue_url: &str) -> Result<Option<(String, i64)>> {
    Ok(table.get(PARTITION, &row_key(queue_url)).await?.map(|e| {
        (
            e.get_str("LastDrainAt").unwrap_or_default().to_string(),
            e.get_i64("OldestAgeMs").unwrap_or(0),
        )
    }))
}
