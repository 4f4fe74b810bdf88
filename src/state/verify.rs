//! The results of `verify`: one row per scope (bucket, source prefix, container, target
//! prefix) in the checkpoint table's `_verify` partition, overwritten by the scope's next
//! verify. The cutover gate reads them (see `app::cutover`).

use sha2::Digest;

use crate::azure::table::{Entity, Filter, TableClient};
use crate::error::{ErrorKind, Result};
use crate::model::Scope;

/// The checkpoint table's partition for verification results.
const VERIFY_PARTITION: &str = "_verify";

/// What one verify found, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyResult {
    /// What it compared.
    pub scope: Scope,
    /// When it started (its listings were taken from then on).
    pub started: time::OffsetDateTime,
    /// When it ended.
    pub at: time::OffsetDateTime,
    /// Differences found (all kinds).
    pub differences: u64,
    /// Source objects it compared.
    pub source_objects: u64,
    /// Objects whose blob matched.
    pub matched: u64,
}

impl VerifyResult {
    fn to_entity(&self) -> Entity {
        let s = &self.scope;
        let id = format!(
            "{}\n{}\n{}\n{}",
            s.bucket, s.source_prefix, s.container, s.target_prefix
        );
        let rk = hex::encode(&sha2::Sha256::digest(id.as_bytes())[..16]);
        let mut e = Entity::new(VERIFY_PARTITION, rk);
        e.set_str("Bucket", &s.bucket)
            .set_str("SourcePrefix", &s.source_prefix)
            .set_str("Container", &s.container)
            .set_str("TargetPrefix", &s.target_prefix)
            .set_str("StartedAt", rfc3339(self.started))
            .set_str("At", rfc3339(self.at))
            .set_str("Clean", if self.differences == 0 { "true" } else { "false" })
            .set_i64("Differences", self.differences as i64)
            .set_i64("SourceObjects", self.source_objects as i64)
            .set_i64("Matched", self.matched as i64);
        e
    }

    /// A stored row; `None` when it cannot be read as one (its time, above all).
    fn from_entity(e: &Entity) -> Option<Self> {
        let count = |n: &str| e.get_i64(n).unwrap_or(0).max(0) as u64;
        let time = |n: &str| {
            e.get_str(n)
                .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        };
        let at = time("At")?;
        Some(VerifyResult {
            scope: Scope {
                bucket: e.get_str("Bucket")?.to_string(),
                source_prefix: e.get_str("SourcePrefix").unwrap_or_default().to_string(),
                container: e.get_str("Container")?.to_string(),
                target_prefix: e.get_str("TargetPrefix").unwrap_or_default().to_string(),
            },
            // A row from before starts were kept: its end stands for both.
            started: time("StartedAt").unwrap_or(at),
            at,
            // A row without the count says whether it was clean.
            differences: e
                .get_i64("Differences")
                .map(|n| n.max(0) as u64)
                .unwrap_or(u64::from(e.get_str("Clean") != Some("true"))),
            source_objects: count("SourceObjects"),
            matched: count("Matched"),
        })
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The verification results.
#[derive(Debug, Clone)]
pub struct VerifyStore {
    table: TableClient,
}

impl VerifyStore {
    /// The results kept in `table` (the checkpoint table).
    pub fn new(table: TableClient) -> Self {
        VerifyStore { table }
    }

    /// Keeps `result` as its scope's latest.
    pub async fn record(&self, result: &VerifyResult) -> Result<()> {
        self.table.update(&result.to_entity(), None).await.map(|_| ())
    }

    /// Every kept result for `bucket` into `container`, any prefixes (none when the table
    /// does not exist yet).
    pub async fn of_pair(&self, bucket: &str, container: &str) -> Result<Vec<VerifyResult>> {
        let filter = Filter::eq("PartitionKey", VERIFY_PARTITION)
            .and("Bucket", "eq", bucket)
            .and("Container", "eq", container);
        match self.table.query_all(Some(filter.as_str())).await {
            Ok(rows) => Ok(rows.iter().filter_map(VerifyResult::from_entity).collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_round_trips_and_old_rows_still_read() {
        let r = VerifyResult {
            scope: Scope {
                bucket: "b".into(),
                source_prefix: "in/".into(),
                container: "c".into(),
                target_prefix: "out/".into(),
            },
            started: time::macros::datetime!(2026-12-07 09:00:00 UTC),
            at: time::macros::datetime!(2026-12-07 10:00:00.25 UTC),
            differences: 3,
            source_objects: 10,
            matched: 7,
        };
        assert_eq!(VerifyResult::from_entity(&r.to_entity()), Some(r.clone()));
        // A row written before the counts were kept reads its cleanliness from `Clean`.
        let mut old = r.to_entity();
        old.props.remove("Differences");
        old.props.remove("Differences@odata.type");
        assert_eq!(VerifyResult::from_entity(&old).unwrap().differences, 1);
        old.props.remove("StartedAt");
        let read = VerifyResult::from_entity(&old).unwrap();
        assert_eq!(read.started, read.at, "a row without a start reads its end");
        old.set_str("At", "yesterday");
        assert_eq!(VerifyResult::from_entity(&old), None);
    }
}
