//! The table rows of split copies: a plan and one row per staged range, under a partition of
//! their own (`<object partition>~staging`), with the row keys and OData filters that find
//! them, the plan's lease, and the best-effort cleanup that drops them. `engine::split` holds
//! the algorithm. Like the checkpoint rows, they belong to the target blob (decisions 99):
//! runs that map one key to two names never share a plan, and the plan records the key it
//! copies.

use sha2::{Digest, Sha256};

use crate::azure::table::{BatchOp, BatchOutcome, Entity, Filter, TableClient};
use crate::error::{Error, ErrorKind, Result};
use crate::model::MovedBy;
use crate::state::checkpoint::target_partition;
use crate::state::unix_now;

/// The stored plan of one split copy.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The source version copied.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its S3 version, when the bucket is versioned.
    pub version_id: Option<String>,
    /// Bytes per block of the layout.
    pub block_size: u64,
    /// Blocks per range (the last may hold fewer).
    pub per_range: u64,
    /// How many ranges.
    pub ranges: u32,
    /// The target blob.
    pub blob: String,
    /// The key the plan copies (absent on plans written before it was kept).
    pub source_key: Option<String>,
    /// Unix seconds until which the planner that sent the ranges holds them.
    pub lease_until: i64,
    /// Table ETag of the row.
    pub tag: String,
}

impl Plan {
    fn to_entity(&self, pk: &str, rk: &str, key: &str) -> Entity {
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

    fn from_entity(e: &Entity) -> Option<Plan> {
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
pub struct RangeRow {
    /// Which range.
    pub index: u32,
    /// Its blocks' CRC64s.
    pub crcs: Vec<Option<u64>>,
    /// Its bytes.
    pub bytes: u64,
    /// How it was moved.
    pub path: MovedBy,
}

impl RangeRow {
    fn to_entity(&self, pk: &str, rk: &str) -> Entity {
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

    fn from_entity(e: &Entity) -> Option<RangeRow> {
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
pub fn staging_pk(bucket: &str, target: &str) -> String {
    format!("{}~staging", target_partition(bucket, target))
}

/// Row-key prefix of one blob's staging rows (any version): `n` and a hash of the name, so
/// any name fits (the rows of the previous form, by source key, began with a hex digit).
fn blob_tag(blob: &str) -> String {
    format!("n{}", hex::encode(&Sha256::digest(blob.as_bytes())[..16]))
}

/// Row-key prefix of one version's staging rows.
fn version_prefix(blob: &str, etag: &str) -> String {
    format!(
        "{}-{}-",
        blob_tag(blob),
        hex::encode(&Sha256::digest(etag.as_bytes())[..4])
    )
}

fn plan_rk(blob: &str, etag: &str) -> String {
    format!("{}p", version_prefix(blob, etag))
}

fn range_rk(blob: &str, etag: &str, index: u32) -> String {
    format!("{}r{index:05}", version_prefix(blob, etag))
}

/// The staging rows, kept in the checkpoint table.
#[derive(Debug, Clone)]
pub struct StagingStore {
    table: TableClient,
}

impl StagingStore {
    /// The staging rows of `table` (the checkpoint table).
    pub(crate) fn new(table: TableClient) -> Self {
        StagingStore { table }
    }

    /// Inserts `plan` for the object `key` as a new row; `false` when a plan for this version
    /// of the blob exists already. A nonce makes this planner's row its own: an insert whose
    /// reply was lost and that conflicts on its retry is recognised as ours (and its ranges
    /// sent), not as another planner's lease (decisions 59).
    pub async fn insert_plan(&self, pk: &str, plan: &Plan, key: &str) -> Result<bool> {
        let mut row = plan.to_entity(pk, &plan_rk(&plan.blob, &plan.etag), key);
        row.set_str("Planner", uuid::Uuid::new_v4().to_string());
        match self.table.insert(&row).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::Precondition => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The plan of `blob` at source version `etag`, if any.
    pub async fn load_plan(&self, pk: &str, blob: &str, etag: &str) -> Result<Option<Plan>> {
        let e = self.table.get(pk, &plan_rk(blob, etag)).await?;
        Ok(e.as_ref().and_then(Plan::from_entity))
    }

    /// Takes over the lease of `plan` as read (its table ETag) until `until`; `false` when
    /// another planner changed the row first.
    pub async fn take_over(&self, pk: &str, plan: &Plan, until: i64) -> Result<bool> {
        let mut e = Entity::new(pk, plan_rk(&plan.blob, &plan.etag));
        e.set_i64("LeaseUntil", until);
        match self.table.merge(&e, Some(&plan.tag)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::Precondition => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets the lease of the plan of `blob` at `etag`, whoever holds it (`0` gives it up);
    /// `false` when the plan is gone (committed and dropped).
    pub async fn set_lease(&self, pk: &str, blob: &str, etag: &str, until: i64) -> Result<bool> {
        let mut e = Entity::new(pk, plan_rk(blob, etag));
        e.set_i64("LeaseUntil", until);
        match self.table.merge(&e, Some("*")).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether range `index` of `plan` is recorded.
    pub async fn has_range(&self, pk: &str, plan: &Plan, index: u32) -> Result<bool> {
        let rk = range_rk(&plan.blob, &plan.etag, index);
        Ok(self.table.get(pk, &rk).await?.is_some())
    }

    /// Records `row` (insert-or-replace: a duplicate delivery staged the same bytes), in one
    /// transaction with a touch of the plan row that renews its lease until `until`: if the
    /// plan is gone (committed and dropped meanwhile), no orphan range row is left behind and
    /// the answer is `false`.
    pub async fn record_range(&self, pk: &str, plan: &Plan, row: &RangeRow, until: i64) -> Result<bool> {
        let mut touch = Entity::new(pk, plan_rk(&plan.blob, &plan.etag));
        touch.set_i64("TouchedAt", unix_now()).set_i64("LeaseUntil", until);
        let range_row = row.to_entity(pk, &range_rk(&plan.blob, &plan.etag, row.index));
        match self
            .table
            .transact(&[BatchOp::Update(&range_row, None), BatchOp::Merge(&touch, Some("*"))])
            .await?
        {
            BatchOutcome::Committed => Ok(true),
            BatchOutcome::Rejected { status: 404, .. } => Ok(false),
            BatchOutcome::Rejected { status, code } => Err(Error::new(
                crate::error::kind_from_status(status, Some(&code)),
                format!(
                    "recording range {} of the split copy to blob {}: HTTP {status} {code}",
                    row.index, plan.blob
                ),
            )),
        }
    }

    /// The recorded ranges of `plan`: one range query.
    pub async fn staged_ranges(&self, pk: &str, plan: &Plan) -> Result<Vec<RangeRow>> {
        let prefix = version_prefix(&plan.blob, &plan.etag);
        let filter = Filter::eq("PartitionKey", pk)
            .and("RowKey", "ge", &format!("{prefix}r"))
            .and("RowKey", "lt", &format!("{prefix}s"));
        let rows = self.table.query_all(Some(filter.as_str())).await?;
        Ok(rows
            .iter()
            .filter_map(RangeRow::from_entity)
            .filter(|r| r.index < plan.ranges)
            .collect())
    }

    /// Deletes the staging rows of `blob`, except those of version `keep`. Best effort: a
    /// row left behind costs storage only, since plans are looked up by version.
    pub async fn drop_staging(&self, pk: &str, blob: &str, keep: Option<&str>) {
        let keep = keep.map(|etag| version_prefix(blob, etag));
        self.drop_rows(pk, blob, |rk| keep.as_ref().is_none_or(|k| !rk.starts_with(k.as_str())))
            .await
    }

    /// Drops the plan and ranges of one version only: a plan that can no longer complete,
    /// while another invocation may already be planning the next version (its rows stay).
    pub async fn drop_version(&self, pk: &str, blob: &str, etag: &str) {
        let prefix = version_prefix(blob, etag);
        self.drop_rows(pk, blob, |rk| rk.starts_with(prefix.as_str())).await
    }

    async fn drop_rows(&self, pk: &str, blob: &str, doomed_row: impl Fn(&str) -> bool) {
        let table = &self.table;
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
