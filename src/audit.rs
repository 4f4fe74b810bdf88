//! The audit trail: every destructive action (a blob deleted, a run cancelled, a
//! dead-lettered event sent back) is one `tracing` event with target `audit` and fixed
//! fields: `action`, `requested_by` (a run, an S3 event, an API caller or the CLI),
//! `run_id`, `object` (what was removed or moved) and `reason`. The invocation id comes
//! from the enclosing span. `infra/monitoring/queries.kql` has the query that reads them.

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Action {
    /// A blob was deleted.
    DeleteBlob,
    /// A run was cancelled.
    CancelRun,
    /// A dead-lettered SQS message was sent back to its queue and removed from the DLQ.
    RedriveMessage,
}

impl Action {
    /// The stable name in the `action` field.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Records one destructive action.
pub fn record(action: Action, requested_by: &str, run_id: &str, object: &str, reason: &str) {
    tracing::info!(
        target: "audit",
        audit = true,
        action = action.as_str(),
        requested_by,
        run_id,
        object,
        reason,
        outcome = "audit",
        "destructive action"
    );
}
