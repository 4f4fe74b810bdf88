//! The table rows of split copies: a plan and one row per staged range, under a partition of
//! their own (`<object partition>~staging`), with the row keys and OData filters that find
//! them and the best-effort cleanup that drops them. `split` holds the algorithm. Like the
//! checkpoint rows, they belong to the target blob (decisions 99): runs that map one key to
//! two names never share a plan, and the plan records the key it copies.

use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::layout::BlockLayout;
use super::Engine;
use crate::azure::table::{BatchOp, BatchOutcome, Entity, Filter};
use crate::error::Result;
use crate::model::MovedBy;
use crate::state::checkpoint::partition_key;

/// The stored plan of one split copy.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) etag: String,
    pub(super) size: u64,
    pub(super) version_id: Option<String>,
    pub(super) block_size: u64,
    pub(super) per_range: u64,
    pub(super) ranges: u32,
    pub(super) blob: String,
    /// The key the plan copies (absent on plans written before it was kept).
    pub(super) source_key: Option<String>,
    pub(super) lease_until: i64,
    /// Table ETag of the row.
    pub(super) tag: String,
}

impl Plan {
    pub(super) fn layout(&self) -> BlockLayout {
        BlockLayout::new(self.size, &self.etag, self.block_size)
    }

    pub(super) fn blocks(&self, index: u32) -> Range<u64> {
        let count = self.layout().count();
        let start = u64::from(index) * self.per_range;
        start.min(count)..(start + self.per_range).min(count)
    }

    pub(super) fn to_entity(&self, pk: &str, rk: &str, key: &str) -> Entity {
        let mut e = Entity::new(pk, rk);
        e.set_str("SourceKey", key)
            .set_str("Etag", &self.etag)
            .set_i64("Size", self.size as i64)
            .set_i64("BlockSize", self.block_size as i64)
            .set_i64("BlocksPerRange", self.per_range as i64)
            .set_i64("Ranges", i64::from(self.ranges))
            .set_str("Blob", &self.blob)
            .set_i64("LeaseUntil", self.lease_until);
        if let Some(v) = &self.version_id {
            e.set_str("VersionId", v);
        }
        e
    }

    pub(super) fn from_entity(e: &Entity) -> Option<Plan> {
        Some(Plan {
            etag: e.get_str("Etag")?.to_string(),
            size: e.get_i64("Size")? as u64,
            version_id: e.get_str("VersionId").map(str::to_string),
            block_size: e.get_i64("BlockSize")? as u64,
            per_range: e.get_i64("BlocksPerRange")?.max(1) as u64,
            ranges: e.get_i64("Ranges")? as u32,
            blob: e.get_str("Blob")?.to_string(),
            source_key: e.get_str("SourceKey").map(str::to_string),
            lease_until: e.get_i64("LeaseUntil").unwrap_or(0),
            tag: e.etag.clone().unwrap_or_default(),
        })
    }
}

/// One recorded range: its blocks' CRC64s (Azure's or ours; `-` when Azure gave none) and
/// how it was moved.
#[derive(Debug, Clone)]
pub(super) struct RangeRow {
    pub(super) index: u32,
    pub(super) crcs: Vec<Option<u64>>,
    pub(super) bytes: u64,
    pub(super) path: MovedBy,
}

impl RangeRow {
    pub(super) fn to_entity(&self, pk: &str, rk: &str) -> Entity {
        let crcs: Vec<String> = self
            .crcs
            .iter()
            .map(|c| c.map_or_else(|| "-".to_string(), |c| format!("{c:016x}")))
            .collect();
        let mut e = Entity::new(pk, rk);
        e.set_i64("Range", i64::from(self.index))
            .set_i64("Bytes", self.bytes as i64)
            .set_str("Crcs", crcs.join(","))
            .set_str("Path", self.path.as_str());
        e
    }

    pub(super) fn from_entity(e: &Entity) -> Option<RangeRow> {
        let crcs = e.get_str("Crcs")?;
        Some(RangeRow {
            index: e.get_i64("Range")? as u32,
            bytes: e.get_i64("Bytes")? as u64,
            crcs: if crcs.is_empty() {
                Vec::new()
            } else {
                crcs.split(',').map(|c| u64::from_str_radix(c, 16).ok()).collect()
            },
            // Anything but a server-side range counts as streamed, as rows before the
            // column existed were.
            path: e
                .get_str("Path")
                .and_then(|p| p.parse().ok())
                .unwrap_or(MovedBy::Streamed),
        })
    }
}

/// Partition of the staging rows of objects of `bucket` copied to `target`.
pub(super) fn staging_pk(bucket: &str, target: &str) -> String {
    format!("{}~staging", partition_key(bucket, target))
}

/// Row-key prefix of one blob's staging rows (any version): `n` and a hash of the name, so
/// any name fits (the rows of the previous form, by source key, began with a hex digit).
pub(super) fn blob_tag(blob: &str) -> String {
    format!("n{}", hex::encode(&Sha256::digest(blob.as_bytes())[..16]))
}

/// Row-key prefix of one version's staging rows.
pub(super) fn version_prefix(blob: &str, etag: &str) -> String {
    format!(
        "{}-{}-",
        blob_tag(blob),
        hex::encode(&Sha256::digest(etag.as_bytes())[..4])
    )
}

pub(super) fn plan_rk(blob: &str, etag: &str) -> String {
    format!("{}p", version_prefix(blob, etag))
}

pub(super) fn range_rk(blob: &str, etag: &str, index: u32) -> String {
    format!("{}r{index:05}", version_prefix(blob, etag))
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Engine {
    pub(super) async fn load_plan(&self, pk: &str, blob: &str, etag: &str) -> Result<Option<Plan>> {
        let e = self.checkpoint.table().get(pk, &plan_rk(blob, etag)).await?;
        Ok(e.as_ref().and_then(Plan::from_entity))
    }

    /// The recorded ranges of `plan`: one range query.
    pub(super) async fn staged_ranges(&self, pk: &str, plan: &Plan) -> Result<Vec<RangeRow>> {
        let prefix = version_prefix(&plan.blob, &plan.etag);
        let filter = Filter::eq("PartitionKey", pk)
            .and("RowKey", "ge", &format!("{prefix}r"))
            .and("RowKey", "lt", &format!("{prefix}s"));
        let rows = self.checkpoint.table().query_all(Some(filter.as_str())).await?;
        Ok(rows
            .iter()
            .filter_map(RangeRow::from_entity)
            .filter(|r| r.index < plan.ranges)
            .collect())
    }

    /// Deletes the staging rows of `blob`, except those of version `keep`. Best effort: a
    /// row left behind costs storage only, since plans are looked up by version.
    pub(super) async fn drop_staging(&self, pk: &str, blob: &str, keep: Option<&str>) {
        let keep = keep.map(|etag| version_prefix(blob, etag));
        self.drop_rows(pk, blob, |rk| keep.as_ref().is_none_or(|k| !rk.starts_with(k.as_str())))
            .await
    }

    /// Drops the plan and ranges of one version only: a plan that can no longer complete,
    /// while another invocation may already be planning the next version (its rows stay).
    pub(super) async fn drop_version(&self, pk: &str, blob: &str, etag: &str) {
        let prefix = version_prefix(blob, etag);
        self.drop_rows(pk, blob, |rk| rk.starts_with(prefix.as_str())).await
    }

    pub(super) async fn drop_rows(&self, pk: &str, blob: &str, doomed_row: impl Fn(&str) -> bool) {
        let table = self.checkpoint.table();
        let key = blob;
        let tag = blob_tag(blob);
        let filter = Filter::eq("PartitionKey", pk)
            .and("RowKey", "ge", &format!("{tag}-"))
            .and("RowKey", "lt", &format!("{tag}."));
        // Again when a row deleted by another step first rejected a whole batch.
        let mut tries = table.retry().conflicts(format!("dropping the staging rows of {key}"));
        loop {
            if let Err(e) = tries.next().await {
                tracing::warn!(key, error = %e, "could not drop staging rows");
                return;
            }
            let rows = match table.query_all(Some(filter.as_str())).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(key, error = %e, "could not list staging rows to drop");
                    return;
                }
            };
            let doomed: Vec<&Entity> = rows.iter().filter(|e| doomed_row(&e.row_key)).collect();
            let mut clean = true;
            for chunk in doomed.chunks(100) {
                let ops: Vec<BatchOp> = chunk.iter().map(|e| BatchOp::Delete(e)).collect();
                match table.transact(&ops).await {
                    Ok(BatchOutcome::Committed) => {}
                    Ok(BatchOutcome::Rejected { status: 404, .. }) => clean = false,
                    Ok(BatchOutcome::Rejected { status, code }) => {
                        tracing::warn!(key, status, code, "could not drop staging rows");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(key, error = %e, "could not drop staging rows");
                        return;
                    }
                }
            }
            if clean {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_group_by_key_and_version_and_sort_ranges() {
        let (a, b) = (range_rk("k", "e1", 2), range_rk("k", "e1", 10));
        assert!(a < b, "ranges sort by number");
        assert!(a.starts_with(&version_prefix("k", "e1")));
        assert!(plan_rk("k", "e1").starts_with(&blob_tag("k")));
        assert!(
            blob_tag("k").starts_with('n'),
            "apart from the previous form's hex tags"
        );
        assert_ne!(version_prefix("k", "e1"), version_prefix("k", "e2"));
        assert!(range_rk(&"x".repeat(1024), "e", 49_999).len() < 100);
        // The range filter `ge …r and lt …s` takes ranges, not the plan.
        let p = version_prefix("k", "e1");
        assert!(plan_rk("k", "e1") < format!("{p}r"));
    }

    #[test]
    fn range_rows_round_trip_including_unknown_crcs() {
        let row = RangeRow {
            index: 3,
            crcs: vec![Some(0xdead_beef), None, Some(u64::MAX)],
            bytes: 42,
            path: MovedBy::ServerSide,
        };
        let back = RangeRow::from_entity(&row.to_entity("p", "r")).unwrap();
        assert_eq!(back.crcs, row.crcs);
        let row = RangeRow {
            index: 3,
            crcs: vec![None],
            bytes: 42,
            path: MovedBy::ServerSide,
        };
        let back = RangeRow::from_entity(&row.to_entity("p", "r")).unwrap();
        assert_eq!(back.crcs, row.crcs);
        assert_eq!((back.index, back.bytes, back.path), (3, 42, MovedBy::ServerSide));
    }
}
