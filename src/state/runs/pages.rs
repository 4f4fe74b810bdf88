//! A run's listing as stored: one row per listing shard (its key range, token, page and
//! counters) and each page's saved listing (its plan) while the page is in progress.
//!
//! A shard lists the keys in `(after, until]`, S3 order. The first shard holds the whole key
//! space; a shard splits its remaining range in the same transaction that saves one of its
//! pages, shrinking its own `until` and inserting the children that take the rest, so the
//! shards' ranges always partition the key space, and no reader sees the listing done while a
//! range is unlisted (decisions 120).

use super::counters::Counters;
use super::store::RunStore;
use crate::azure::table::{BatchOp, BatchOutcome, Entity};
use crate::error::{Error, ErrorKind, Result};

/// One listing shard's row: its key range, where its listing stands and what it counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListerState {
    /// Shard number (0 holds the whole key space at the start; its row is `lister`).
    pub shard: u32,
    /// The range's lower bound, exclusive (`None`: from the first key).
    pub after: Option<String>,
    /// The range's upper bound, inclusive (`None`: to the last key).
    pub until: Option<String>,
    /// Shard numbers after this one that it may still hand to children: it owns
    /// `shard..=shard + spare`, so children never need to agree on numbers.
    pub spare: u32,
    /// The children its last page's save created, whose first pages that save's step starts
    /// (a redelivered page re-sends them).
    pub born: Vec<u32>,
    /// Continuation token for the next page (`None` before the first page and at the end).
    pub token: Option<String>,
    /// Pages done.
    pub page: u64,
    /// Listing finished.
    pub done: bool,
    /// Scanned, excluded, unsupported, noTransferNeeded, wouldTransfer and enqueued.
    pub counters: Counters,
    /// When a page was last saved (unix seconds; the run's start before the first): how the
    /// sweep tells a listing chain that stopped.
    pub updated_at: i64,
    /// Table ETag for If-Match.
    pub etag: String,
}

impl ListerState {
    /// Whether `key` is past this shard's range (the listing of the shard stops there).
    pub fn past(&self, key: &str) -> bool {
        self.until.as_deref().is_some_and(|u| key.as_bytes() > u.as_bytes())
    }

    /// A child taking `(after, until]` with shard numbers `shard..=shard + spare`.
    pub fn child(shard: u32, after: String, until: Option<String>, spare: u32) -> Self {
        ListerState {
            shard,
            after: Some(after),
            until,
            spare,
            updated_at: crate::state::unix_now(),
            ..ListerState::default()
        }
    }
}

/// A run's listing: every shard's row.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The shards, by number.
    pub shards: Vec<ListerState>,
}

impl Listing {
    /// Every shard listed its range to the end.
    pub fn done(&self) -> bool {
        self.shards.iter().all(|s| s.done)
    }

    /// The shards' counters, summed.
    pub fn counters(&self) -> Counters {
        let mut all = Counters::default();
        for s in &self.shards {
            all.merge(&s.counters);
        }
        all
    }

    /// When any shard last saved a page.
    pub fn updated_at(&self) -> i64 {
        self.shards.iter().map(|s| s.updated_at).max().unwrap_or(0)
    }

    /// Pages listed by all shards.
    pub fn pages(&self) -> u64 {
        self.shards.iter().map(|s| s.page).sum()
    }
}

/// The row of shard `shard` (shard 0 keeps the name of a listing that had no shards).
fn lister_row(shard: u32) -> String {
    match shard {
        0 => "lister".to_string(),
        n => format!("lister~{n:04}"),
    }
}

fn shard_of_row(row: &str) -> Option<u32> {
    match row {
        "lister" => Some(0),
        r => r.strip_prefix("lister~")?.parse().ok(),
    }
}

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

/// The row of shard `l`.
pub(super) fn lister_entity(id: &str, l: &ListerState) -> Entity {
    let mut e = Entity::new(id, lister_row(l.shard));
    e.set_i64("Page", l.page as i64)
        .set_str("Done", if l.done { "true" } else { "false" })
        .set_i64("UpdatedAt", crate::state::unix_now());
    for (k, v) in [("Token", &l.token), ("After", &l.after), ("Until", &l.until)] {
        if let Some(v) = v {
            e.set_str(k, v);
        }
    }
    if l.spare > 0 {
        e.set_i64("Spare", i64::from(l.spare));
    }
    if !l.born.is_empty() {
        e.set_str("Born", l.born.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
    }
    l.counters.write(&mut e);
    e
}

/// A shard's row as read (`None` for a row that is not one).
fn lister_state(e: &Entity) -> Option<ListerState> {
    let s = |n: &str| e.get_str(n).map(str::to_string);
    Some(ListerState {
        shard: shard_of_row(&e.row_key)?,
        after: s("After"),
        until: s("Until"),
        spare: e
            .get_i64("Spare")
            .unwrap_or(0)
            .clamp(0, i64::from(crate::config::MAX_LIST_SHARDS)) as u32,
        born: e
            .get_str("Born")
            .map(|b| b.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default(),
        token: s("Token"),
        page: e.get_i64("Page").unwrap_or(0).max(0) as u64,
        done: e.get_str("Done") == Some("true"),
        counters: Counters::read(e),
        updated_at: e.get_i64("UpdatedAt").unwrap_or(0),
        etag: e.etag.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shards_row_reads_back_as_written() {
        let mut l = ListerState::child(7, "a/b".into(), Some("c/\u{e9}'x".into()), 3);
        l.born = vec![8, 10];
        l.token = Some("tok".into());
        l.page = 4;
        l.counters.add(super::super::counters::Tally::Scanned, 12);
        let mut e = lister_entity("run1", &l);
        e.etag = Some("W/1".into());
        let back = lister_state(&e).expect("a shard row");
        assert_eq!(
            (back.shard, back.after, back.until, back.spare),
            (7, l.after.clone(), l.until.clone(), 3)
        );
        assert_eq!(
            (back.born, back.token, back.page, back.done),
            (vec![8, 10], l.token.clone(), 4, false)
        );
        assert_eq!(back.counters, l.counters);
        assert_eq!(lister_row(0), "lister");
        assert_eq!(shard_of_row(&lister_row(42)), Some(42));
        assert_eq!(shard_of_row("plan~000000000001~000"), None);
        // Shard 0's plan rows keep their old names; another shard's never fall in its range.
        assert!(plan_prefix(0, 5) == "plan~000000000005~");
        let (lo, hi) = (plan_prefix(0, 5), format!("{}~", plan_prefix(0, 5)));
        assert!(!(plan_row(3, 5, 0) > lo && plan_row(3, 5, 0) < hi));
    }
}
