//! The checkpoint table holds more than the per-object rows: the staging rows of split
//! copies, the SQS relay's lag and its circuit breaker, and the results of `verify`, each
//! family in partitions of its own. A [`CheckpointStore`] hands out the store of each, over
//! the same table client.

use crate::state::breaker::BreakerStore;
use crate::state::checkpoint::CheckpointStore;
use crate::state::lag::LagStore;
use crate::state::staging::StagingStore;
use crate::state::verify::VerifyStore;

impl CheckpointStore {
    /// The staging rows of split copies, kept in the same table.
    pub fn staging(&self) -> StagingStore {
        StagingStore::new(self.table.clone())
    }

    /// The SQS relay's lag rows, kept in the same table.
    pub fn lag(&self) -> LagStore {
        LagStore::new(self.table.clone())
    }

    /// The results of `verify`, kept in the same table.
    pub fn verify(&self) -> VerifyStore {
        VerifyStore::new(self.table.clone())
    }

    /// The circuit breaker of the relay into `target`, kept in the same table.
    pub fn breaker(&self, target: &str) -> BreakerStore {
        BreakerStore::new(self.table.clone(), target)
    }
}
