//! A run's listing as stored: one row per listing shard (its key range, token, page and
//! counters) and each page's saved listing (its plan) while the page is in progress.
//!
//! A shard lists the keys in `(after, until]`, S3 order. The first shard holds the whole key
//! space; a shard splits its remaining range in the same transaction that saves one of its
//! pages, shrinking its own `until` and inserting the children that take the rest, so the
//! shards' ranges always partition the key space, and no reader sees the listing done while a
//! range is unlisted (decisions 120).

use super::listing::{lister_entity, lister_row, lister_state, ListerState, Listing};
use super::store::RunStore;
use crate::azure::table::{BatchOp, BatchOutcome, Entity};
use crate::error::{Error, ErrorKind, Result};

/// What one listing page returned, saved before its copies are sent so that every attempt
/// at the page works on the same keys (decisions 64).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PagePlan {
    /// The objects, in listing order.
    pub objects: Vec<crate::model::ListedObject>,
    /// The continuation token after this page (`None` on the last).
    pub next: Option<String>,
    /// Table rows the saved plan takes (0 before it is saved).
    #[serde(skip)]
    pub rows: u32,
}

impl PagePlan {
    /// A plan not saved yet.
    pub fn new(objects: Vec<crate::model::ListedObject>, next: Option<String>) -> Self {
        PagePlan { objects, next, rows: 0 }
    }
}

/// Characters of base64 per string property: 60,000 bytes in UTF-16, under the Table
/// service's 64 KiB a property. Base64 is ASCII, so a key of quotes or backslashes costs no
/// escaping on the wire (the transaction's body stays far under its 4 MiB).
const PLAN_PIECE: usize = 30_000;
/// Pieces per plan row: about 840 KB, under the 1 MiB an entity.
const PLAN_PIECES: usize = 14;

fn plan_prefix(shard: u32, page: u64) -> String {
    match shard {
        0 => format!("plan~{page:012}~"),
        s => format!("plan~s{s:04}~{page:012}~"),
    }
}

fn plan_row(shard: u32, page: u64, n: usize) -> String {
    format!("{}{n:03}", plan_prefix(shard, page))
}

impl RunStore {
    /// The row of listing shard `shard` of run `id`.
    pub async fn shard(&self, id: &str, shard: u32) -> Result<Option<ListerState>> {
        Ok(self
            .table
            .get(id, &lister_row(shard))
            .await?
            .and_then(|e| lister_state(&e)))
    }

    /// Every listing shard of run `id` (`None` for an unknown run). Range-read from the
    /// run's partition: at most `SYNC_LIST_SHARDS` rows.
    pub async fn listing(&self, id: &str) -> Result<Option<Listing>> {
        let filter = format!("PartitionKey eq '{id}' and RowKey ge 'lister' and RowKey lt 'lister~~'");
        let rows = match self.table.query_all(Some(&filter)).await {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            r => r?,
        };
        let mut shards: Vec<ListerState> = rows.iter().filter_map(lister_state).collect();
        shards.sort_by_key(|s| s.shard);
        Ok((!shards.is_empty()).then_some(Listing { shards }))
    }

    /// The saved listing of shard `shard`'s page `page`, when an attempt saved one.
    pub async fn page_plan(&self, id: &str, shard: u32, page: u64) -> Result<Option<PagePlan>> {
        let prefix = plan_prefix(shard, page);
        let filter = format!("PartitionKey eq '{id}' and RowKey gt '{prefix}' and RowKey lt '{prefix}~'");
        let mut rows = self.table.query_all(Some(&filter)).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.sort_by(|a, b| a.row_key.cmp(&b.row_key));
        let rows_expected = rows[0].get_i64("Rows").unwrap_or(0).max(0) as usize;
        let mut encoded = String::new();
        for r in &rows {
            for i in 0..PLAN_PIECES {
                if let Some(p) = r.get_str(&format!("P{i:02}")) {
                    encoded.push_str(p);
                }
            }
        }
        use base64::Engine;
        let plan = (rows.len() == rows_expected)
            .then(|| base64::engine::general_purpose::STANDARD.decode(&encoded).ok())
            .flatten()
            .and_then(|json| serde_json::from_slice::<PagePlan>(&json).ok());
        match plan {
            Some(mut p) => {
                p.rows = rows.len() as u32;
                Ok(Some(p))
            }
            None => Err(Error::internal(format!(
                "run {id}: the saved listing of page {page} is damaged ({} of {rows_expected} rows); \
                 cancel the run and start it again",
                rows.len()
            ))),
        }
    }

    /// Saves `plan` as page `page`'s listing, unless an attempt saved one first; returns the
    /// listing that rules (the first saved). Written in one transaction, so a reader sees all
    /// of it or nothing.
    pub async fn save_page_plan(&self, id: &str, shard: u32, page: u64, mut plan: PagePlan) -> Result<PagePlan> {
        use base64::Engine;
        let json = serde_json::to_vec(&plan).map_err(|e| Error::internal(format!("encode page plan: {e}")))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(json);
        // ASCII: every byte offset is a character boundary.
        let parts: Vec<&str> = encoded
            .as_bytes()
            .chunks(PLAN_PIECE)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        let chunks: Vec<&[&str]> = parts.chunks(PLAN_PIECES).collect();
        let rows: Vec<Entity> = chunks
            .iter()
            .enumerate()
            .map(|(n, chunk)| {
                let mut e = Entity::new(id, plan_row(shard, page, n));
                e.set_i64("Rows", chunks.len() as i64);
                for (i, p) in chunk.iter().enumerate() {
                    e.set_str(&format!("P{i:02}"), *p);
                }
                e
            })
            .collect();
        let ops: Vec<BatchOp> = rows.iter().map(BatchOp::Insert).collect();
        match self.table.transact(&ops).await? {
            BatchOutcome::Committed => {
                plan.rows = rows.len() as u32;
                Ok(plan)
            }
            // Another attempt saved its listing first (or this one did, and its reply was
            // lost): the stored one rules either way.
            BatchOutcome::Rejected { status: 409, .. } => self.page_plan(id, shard, page).await?.ok_or_else(|| {
                Error::new(
                    ErrorKind::Transient,
                    format!("run {id}: page {page}'s listing was saved and is gone again"),
                )
            }),
            BatchOutcome::Rejected { status, code } => Err(Error::new(
                crate::error::kind_from_status(status, Some(&code)),
                format!("run {id}: saving page {page}'s listing: HTTP {status} {code}"),
            )),
        }
    }

    /// Saves shard `l`'s row after page `page` if nobody changed it since it was read,
    /// removes the page's listing (`rows` rows) and inserts the `children` it split off, all
    /// in one transaction: a done page never leaves its listing behind, a listing is gone
    /// only once its page is saved, and a range is never both the parent's and a child's.
    /// `false` when the row changed or the listing is gone (the caller reads why).
    pub async fn save_page(
        &self,
        id: &str,
        l: &ListerState,
        page: u64,
        rows: u32,
        children: &[ListerState],
    ) -> Result<bool> {
        let row = lister_entity(id, l);
        let plan: Vec<Entity> = (0..rows as usize)
            .map(|n| Entity::new(id, plan_row(l.shard, page, n)))
            .collect();
        let born: Vec<Entity> = children.iter().map(|c| lister_entity(id, c)).collect();
        let mut ops = vec![BatchOp::Update(&row, Some(&l.etag))];
        ops.extend(plan.iter().map(BatchOp::Delete));
        ops.extend(born.iter().map(BatchOp::Insert));
        match self.table.transact(&ops).await? {
            BatchOutcome::Committed => Ok(true),
            // 409: a child's row exists, which only a save of this same page makes.
            BatchOutcome::Rejected {
                status: 404 | 409 | 412,
                ..
            } => Ok(false),
            BatchOutcome::Rejected { status, code } => Err(Error::new(
                crate::error::kind_from_status(status, Some(&code)),
                format!("run {id}: saving page {page}: HTTP {status} {code}"),
            )),
        }
    }

    /// Removes shard `shard`'s page `page`'s listing of `rows` rows (best effort).
    pub async fn drop_page_plan(&self, id: &str, shard: u32, page: u64, rows: u32) {
        let plan: Vec<Entity> = (0..rows as usize)
            .map(|n| Entity::new(id, plan_row(shard, page, n)))
            .collect();
        let ops: Vec<BatchOp> = plan.iter().map(BatchOp::Delete).collect();
        if ops.is_empty() {
            return;
        }
        match self.table.transact(&ops).await {
            Ok(BatchOutcome::Committed) => {}
            Ok(BatchOutcome::Rejected { status, code }) => {
                tracing::warn!(run_id = %id, page, status, error_code = %code, "could not remove a page's listing")
            }
            Err(e) => tracing::warn!(run_id = %id, page, error = %e, "could not remove a page's listing"),
        }
    }

    /// Removes every listing a run left (when it has ended). Best effort: a leftover is only
    /// storage, never read again, and the next check of the ended run tries again.
    pub async fn drop_page_plans(&self, id: &str) {
        let filter = format!("PartitionKey eq '{id}' and RowKey gt 'plan~' and RowKey lt 'plan~~'");
        let rows = match self.table.query_all(Some(&filter)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(run_id = %id, error = %e, "could not read an ended run's listings to remove them");
                return;
            }
        };
        for chunk in rows.chunks(100) {
            let ops: Vec<BatchOp> = chunk.iter().map(BatchOp::Delete).collect();
            match self.table.transact(&ops).await {
                Ok(BatchOutcome::Committed) => {}
                Ok(BatchOutcome::Rejected { status, code }) => {
                    tracing::warn!(run_id = %id, status, error_code = %code, "could not remove an ended run's listings")
                }
                Err(e) => tracing::warn!(run_id = %id, error = %e, "could not remove an ended run's listings"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_plan_rows_stay_apart() {
        // Shard 0's plan rows keep their old names; another shard's never fall in its range.
        assert!(plan_prefix(0, 5) == "plan~000000000005~");
        let (lo, hi) = (plan_prefix(0, 5), format!("{}~", plan_prefix(0, 5)));
        assert!(!(plan_row(3, 5, 0) > lo && plan_row(3, 5, 0) < hi));
    }
}
