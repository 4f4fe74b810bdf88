//! The SQS relay's lag as data: each drain writes its figures to one row of the checkpoint
//! table's `_lag` partition, so `status` and the cutover gate can show the backlog and the
//! age of the oldest message seen.

use crate::azure::table::{Entity, TableClient};
use crate::error::Result;

const PARTITION: &str = "_lag";

/// The figures of one drain of one SQS queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LagRecord {
    /// The SQS queue drained.
    pub queue_url: String,
    /// Age of the oldest message received, in ms.
    pub oldest_age_ms: u64,
    /// SQS messages received.
    pub received: u64,
    /// Records relayed to the copy queue.
    pub relayed: u64,
    /// Malformed bodies parked.
    pub rejected: u64,
    /// The queue's approximate depth after the drain: messages waiting...
    pub visible: u64,
    /// ...and in flight.
    pub in_flight: u64,
}

/// The last drain recorded for one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastDrain {
    /// RFC 3339.
    pub at: String,
    /// Age of the oldest message it received, in ms.
    pub oldest_age_ms: i64,
}

/// The lag rows, kept in the checkpoint table.
#[derive(Debug, Clone)]
pub struct LagStore {
    table: TableClient,
}

fn row_key(queue_url: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(queue_url.as_bytes())[..16])
}

impl LagStore {
    pub(crate) fn new(table: TableClient) -> Self {
        LagStore { table }
    }

    /// Keeps `rec` as its queue's last drain.
    pub async fn record(&self, rec: &LagRecord) -> Result<()> {
        let mut e = Entity::new(PARTITION, row_key(&rec.queue_url));
        e.set_str("QueueUrl", &rec.queue_url)
            .set_str("LastDrainAt", crate::state::checkpoint::now_rfc3339())
            .set_i64("OldestAgeMs", rec.oldest_age_ms as i64)
            .set_i64("Received", rec.received as i64)
            .set_i64("Relayed", rec.relayed as i64)
            .set_i64("Rejected", rec.rejected as i64)
            .set_i64("ApproxVisible", rec.visible as i64)
            .set_i64("ApproxInFlight", rec.in_flight as i64);
        self.table.update(&e, None).await.map(|_| ())
    }

    /// The last recorded drain of `queue_url`.
    pub async fn last(&self, queue_url: &str) -> Result<Option<LastDrain>> {
        Ok(self
            .table
            .get(PARTITION, &row_key(queue_url))
            .await?
            .map(|e| LastDrain {
                at: e.get_str("LastDrainAt").unwrap_or_default().to_string(),
                oldest_age_ms: e.get_i64("OldestAgeMs").unwrap_or(0),
            }))
    }
}
