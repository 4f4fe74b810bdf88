//! The SQS relay's circuit breaker, as remembered between `DrainSqs` invocations (which are
//! stateless) and shared by `watch` replicas: one row per relay target in the checkpoint
//! table's `_breaker` partition, saying until when the target is taken to be down.

use sha2::Digest;

use crate::azure::table::{Entity, TableClient};
use crate::error::{ErrorKind, Result};

const BREAKER_PARTITION: &str = "_breaker";

/// An open breaker as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBreaker {
    /// The next probe is due then (unix milliseconds).
    pub probe_at_ms: i64,
    /// When it opened (unix milliseconds).
    pub opened_at_ms: i64,
    /// The failure that opened it (redacted).
    pub reason: String,
}

/// The breaker row of one relay target.
#[derive(Debug, Clone)]
pub struct BreakerStore {
    table: TableClient,
    row_key: String,
}

impl BreakerStore {
    /// The row for `target` (e.g. the copy queue's account and name) in `table`.
    pub fn new(table: TableClient, target: &str) -> Self {
        let row_key = hex::encode(&sha2::Sha256::digest(target.as_bytes())[..16]);
        BreakerStore { table, row_key }
    }

    /// The breaker's stored state: `None` when it is closed (or was never opened).
    pub async fn get(&self) -> Result<Option<OpenBreaker>> {
        let e = match self.table.get(BREAKER_PARTITION, &self.row_key).await {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            r => r?,
        };
        Ok(e.and_then(|e| {
            Some(OpenBreaker {
                probe_at_ms: e.get_i64("ProbeAtMs")?,
                opened_at_ms: e.get_i64("OpenedAtMs").unwrap_or(0),
                reason: e.get_str("Reason").unwrap_or_default().to_string(),
            })
        }))
    }

    /// Records the breaker open until `b.probe_at_ms`.
    pub async fn open(&self, b: &OpenBreaker) -> Result<()> {
        let mut e = Entity::new(BREAKER_PARTITION, &self.row_key);
        e.set_i64("ProbeAtMs", b.probe_at_ms)
            .set_i64("OpenedAtMs", b.opened_at_ms)
            .set_str("Reason", crate::redact::redact(&b.reason));
        self.table.update(&e, None).await.map(|_| ())
    }

    /// Records the breaker closed.
    pub async fn close(&self) -> Result<()> {
        crate::error::ok_if(
            self.table.delete(BREAKER_PARTITION, &self.row_key, "*").await,
            ErrorKind::NotFound,
        )
    }
}
