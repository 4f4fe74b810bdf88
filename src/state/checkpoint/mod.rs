//! The per-object checkpoint in Azure Table Storage (table `objects` by default).
//!
//! A row belongs to the blob it describes (decisions 99): two runs that map the same key to
//! different target prefixes keep a row each, and a blob has one row whichever mapping wrote
//! it. Blob names may be 1024 characters and contain characters a RowKey may not (`/ \ # ?`),
//! so keys are derived. RowKey = "n" + hex(blob name bytes). Within one prefix mapping, hex
//! keeps S3's listing order (UTF-8 byte order), so the rows of one listing page are a range
//! query per partition: a re-run of an unchanged bucket costs listings, not a read per object.
//! Names whose hex would pass the 1 KiB RowKey limit use "~n" + sha256(name) and are read one
//! by one. A key that maps to no blob (a folder marker, an invalid name) has its row at "s" +
//! sha256(key). The bucket, key and blob name are properties; a row counts for a key only when
//! it names it.
//!
//! PartitionKey = bucket + "~" + a short hash of the target (`account/container`) + "~" + one
//! hex digit of the RowKey's hash: 16 partitions per bucket and target, so a bulk run's writes
//! are not capped by one partition's target (about 2,000 entities/s; decision 123). Rows
//! written before that sit in the partition without the digit: they are read until a write
//! moves them, or `s3-blob-sync migrate-checkpoints` does.
//!
//! Rows of the first form (RowKey "k" + hex(key), or "~" + sha256(key)) are not read; the
//! same command moves them (see [`CheckpointStore::migrate_legacy`]).
//!
//! - `record`: the row (what happened to one object) and its entity format;
//! - `keys`: its partition and row key;
//! - `race`: which version wins when two writers race for a row;
//! - `legacy`: rows of the previous form, and their migration;
//! - here: the store (read, write with the race rule, page ranges, failed rows).

mod keys;
mod legacy;
mod race;
mod record;

pub use keys::{partition_key, partitions, row_key, row_keys, target_partition, Subject, PARTITIONS};
pub use legacy::Migrated;
pub use record::{now_rfc3339, ObjectRecord, Outcome, Versioned};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::azure::auth::Authorizer;
use crate::azure::table::{Entity, Filter, TableClient};
use crate::config::azure::StorageAccount;
use crate::error::{ErrorKind, Result};
use crate::retry::RetryPolicy;
use race::{after_lost_race, AfterLostRace};

/// Pages of one key range [`CheckpointStore::failed_under`] reads at most.
pub const FAILED_PAGES: usize = 20;

/// How long a process trusts what it saw of a previous-layout partition (decision 123).
const PREVIOUS_LAYOUT_TTL: Duration = Duration::from_secs(300);

/// The checkpoint store.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    pub(super) table: TableClient,
    /// Per previous-layout partition: whether it held rows when last looked at, and when.
    previous: Arc<Mutex<HashMap<String, (bool, Instant)>>>,
}

impl CheckpointStore {
    /// A store over `table`.
    pub fn new(table: TableClient) -> Self {
        CheckpointStore {
            table,
            previous: Default::default(),
        }
    }

    /// The checkpoint table `name` of `account` (no network calls).
    pub fn open(account: &StorageAccount, auth: &Authorizer, name: &str, retry: RetryPolicy) -> Result<Self> {
        Ok(Self::new(TableClient::new(account, auth, name, retry)?))
    }

    /// Whether `bucket`'s partition for `target` from before rows were spread may still hold
    /// rows of this form: one query of one row, then trusted for [`PREVIOUS_LAYOUT_TTL`], so
    /// a table with none costs nothing per object once looked at.
    async fn previous_in_use(&self, bucket: &str, target: &str) -> Result<Option<String>> {
        let pk = target_partition(bucket, target);
        let known = self.previous.lock().expect("poisoned").get(&pk).copied();
        let used = match known {
            Some((used, at)) if at.elapsed() < PREVIOUS_LAYOUT_TTL => used,
            _ => {
                // Rows of this form start with `n`, `s` or `~n`; those of the first form with
                // `k` (read apart) or `~` and a hex digit (they keep it in use until moved).
                let filter = Filter::eq("PartitionKey", &pk).and("RowKey", "ge", "l");
                let used = match self.table.query(Some(filter.as_str()), Some(1), None).await {
                    Err(e) if e.kind() == ErrorKind::NotFound => false,
                    // Rows past a time limit may still come: only a page with none and no
                    // continuation says the partition is empty.
                    r => r.map(|(rows, more)| !rows.is_empty() || more.is_some())?,
                };
                self.previous
                    .lock()
                    .expect("poisoned")
                    .insert(pk.clone(), (used, Instant::now()));
                used
            }
        };
        Ok(used.then_some(pk))
    }

    /// Creates the table if needed.
    pub async fn ensure(&self) -> Result<()> {
        self.table.create_if_missing().await
    }

    /// The current row about `subject` (a blob name, or a key with no blob), if any. It may
    /// name another key that was copied to the same blob: callers check.
    pub async fn get<'a>(
        &self,
        bucket: &str,
        subject: impl Into<Subject<'a>>,
        target: &str,
    ) -> Result<Option<Versioned>> {
        let (pk, rk) = row_keys(bucket, subject, target);
        let versioned = |e: Entity, previous_layout| {
            Some(Versioned {
                etag: e.etag.clone().unwrap_or_default(),
                record: ObjectRecord::from_entity(&e)?,
                previous_layout,
            })
        };
        if let Some(e) = self.table.get(&pk, &rk).await? {
            return Ok(versioned(e, false));
        }
        match self.previous_in_use(bucket, target).await? {
            Some(previous) => Ok(self.table.get(&previous, &rk).await?.and_then(|e| versioned(e, true))),
            None => Ok(None),
        }
    }

    /// Writes `entity` over the row `seen` as read: an If-Match update in place, or, for a
    /// row found in its previous partition, an insert in its own and then the removal of the
    /// old one (if unchanged; a row left there is read after the moved one, never over it).
    /// A row changed or moved meanwhile is a `Precondition` error.
    async fn write_over(&self, entity: &Entity, seen: Option<(&str, bool)>) -> Result<()> {
        match seen {
            Some((tag, false)) => self.table.update(entity, Some(tag)).await.map(|_| ()),
            None => self.table.insert(entity).await.map(|_| ()),
            Some((tag, true)) => {
                self.table.insert(entity).await?;
                let previous = keys::previous_partition(&entity.partition_key);
                let r = self.table.delete(previous, &entity.row_key, tag).await;
                crate::error::ok_if(crate::error::ok_if(r, ErrorKind::NotFound), ErrorKind::Precondition)
            }
        }
    }

    /// Replaces the row `seen` with `rec`, once, only if nobody changed it since it was read
    /// (a `Precondition` error otherwise; the caller decides whether that matters).
    pub async fn replace(&self, rec: &ObjectRecord, seen: &Versioned) -> Result<()> {
        self.write_over(&rec.to_entity(), Some((&seen.etag, seen.previous_layout)))
            .await
    }

    /// Writes `rec` with optimistic concurrency. `seen` is the row as this writer read it
    /// (`None`: it saw no row). If another writer changed the row since, this writer lost the
    /// race: it re-reads and writes again only if its record is not older than the stored one
    /// (by source Last-Modified), so a slow writer never regresses a newer outcome.
    pub async fn put(&self, rec: &ObjectRecord, seen: Option<&Versioned>) -> Result<()> {
        let entity = rec.to_entity();
        let mut expected = seen.map(|v| (v.etag.clone(), v.previous_layout));
        let mut tries = self
            .table
            .retry()
            .conflicts(format!("checkpoint s3://{}/{}", rec.bucket, rec.key));
        loop {
            // Still losing after the policy's attempts: `Precondition`, so the copy looks
            // again from the start (blob, then source) as for any write it lost.
            tries
                .next()
                .await
                .map_err(|e| crate::error::Error::new(ErrorKind::Precondition, e.message()))?;
            let r = self
                .write_over(&entity, expected.as_ref().map(|(t, p)| (t.as_str(), *p)))
                .await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Precondition || e.kind() == ErrorKind::NotFound => {
                    let current = self.get(&rec.bucket, rec.subject(), &rec.target).await?;
                    // Another key's row (another mapping wrote this blob): its versions are
                    // not ours to compare; the blob's conditional write already ordered the
                    // two, and the row follows.
                    if let Some(cur) = current.as_ref().filter(|c| c.record.key == rec.key) {
                        match after_lost_race(&cur.record, rec) {
                            AfterLostRace::KeepNewer => {
                                tracing::info!(
                                    bucket = %rec.bucket, key = %rec.key, outcome = "stale_write_dropped",
                                    "checkpoint holds a newer source version; keeping it"
                                );
                                return Ok(());
                            }
                            AfterLostRace::KeepCopy => {
                                tracing::info!(
                                    bucket = %rec.bucket, key = %rec.key, outcome = "copy_kept",
                                    "checkpoint already records the copy of this version; keeping it"
                                );
                                return Ok(());
                            }
                            AfterLostRace::LookAgain => {
                                return Err(crate::error::Error::new(
                                    ErrorKind::Precondition,
                                    format!(
                                        "checkpoint s3://{}/{}: another version with the same Last-Modified was recorded meanwhile",
                                        rec.bucket, rec.key
                                    ),
                                ));
                            }
                            AfterLostRace::Overwrite => {}
                        }
                    }
                    expected = current.map(|c| (c.etag, c.previous_layout));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The rows of the blob names `names` (a listing page's) that have an ordered RowKey, by
    /// blob name; names too long for the ordered form are not included (read them with
    /// [`Self::get`]). One bounded read per partition that holds some of the names, at once.
    pub async fn range(&self, bucket: &str, target: &str, names: &[&str]) -> Result<HashMap<String, Versioned>> {
        let mut wanted: Vec<(String, &str)> = names
            .iter()
            .filter(|n| Self::in_range_form(n))
            .map(|n| (row_key(*n), *n))
            .collect();
        wanted.sort();
        wanted.dedup();
        let mut found = HashMap::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        // Rows not moved yet first, so a row in its own partition (written later) wins.
        if let Some(previous) = self.previous_in_use(bucket, target).await? {
            found.extend(self.range_in(&previous, &wanted, true).await?);
        }
        let mut parts: std::collections::BTreeMap<String, Vec<(String, &str)>> = Default::default();
        for w in wanted {
            parts.entry(partition_key(bucket, target, &w.0)).or_default().push(w);
        }
        let reads = parts.iter().map(|(pk, w)| self.range_in(pk, w, false));
        for rows in futures::future::try_join_all(reads).await? {
            found.extend(rows);
        }
        Ok(found)
    }

    /// The rows of partition `pk` among `wanted` (RowKey and name, sorted by RowKey).
    ///
    /// Rows are never deleted, so the key range of a page can hold any number of rows of
    /// names no longer listed (5 million keys expired under `data/2023/` between
    /// `data/2023/summary.csv` and `data/2024/a`). Each request therefore starts at the next
    /// name not yet answered, not where the last one stopped: a request answers at least
    /// that name (its row comes first, or the first row is past it), so `n` names cost at
    /// most `n` requests whatever lies between them, and one request when their rows are
    /// dense. Only the wanted rows are kept.
    async fn range_in(
        &self,
        pk: &str,
        wanted: &[(String, &str)],
        previous_layout: bool,
    ) -> Result<Vec<(String, Versioned)>> {
        let mut found = Vec::new();
        let (mut next, mut cont) = (0, None);
        while let (Some((from, _)), Some((to, _))) = (wanted.get(next), wanted.last()) {
            let filter = Filter::eq("PartitionKey", pk)
                .and("RowKey", "ge", from)
                .and("RowKey", "le", to);
            let (rows, more) = self
                .table
                .query(Some(filter.as_str()), Some(1000), cont.as_ref())
                .await?;
            let reached = rows.last().map(|e| e.row_key.clone());
            for e in &rows {
                if wanted.binary_search_by(|(rk, _)| rk.as_str().cmp(&e.row_key)).is_err() {
                    continue;
                }
                if let Some(record) = ObjectRecord::from_entity(e) {
                    if let Some(blob) = record.blob.clone() {
                        let etag = e.etag.clone().unwrap_or_default();
                        found.push((
                            blob,
                            Versioned {
                                etag,
                                record,
                                previous_layout,
                            },
                        ));
                    }
                }
            }
            match (more, reached) {
                // Everything up to `reached` is answered; go on from the next name after it.
                (Some(_), Some(reached)) => {
                    next = wanted.partition_point(|(rk, _)| *rk <= reached);
                    cont = None;
                }
                // The service stopped early with no rows (its five seconds ran out): follow
                // its token, so a long stretch of rows is crossed once, not begun again.
                (Some(c), None) => cont = Some(c),
                (None, _) => break,
            }
        }
        Ok(found)
    }

    /// Whether blob name `name` has an ordered RowKey, so [`Self::range`] covers it.
    pub fn in_range_form(name: &str) -> bool {
        row_key(name).starts_with('n')
    }

    /// Calls `each` with every page of rows that match `filter`, in turn.
    async fn each_page(&self, filter: &Filter, mut each: impl AsyncFnMut(Vec<Entity>) -> Result<()>) -> Result<()> {
        let mut cont = None;
        loop {
            let (rows, next) = self
                .table
                .query(Some(filter.as_str()), Some(1000), cont.as_ref())
                .await?;
            each(rows).await?;
            match next {
                Some(n) => cont = Some(n),
                None => return Ok(()),
            }
        }
    }

    /// The rows of `bucket` copied to `target` whose last outcome is `failed`, for keys under
    /// `source_prefix` copied to blobs under `target_prefix`, at most `limit` of them; `true`
    /// when there may be more, or when the pages read (at most [`FAILED_PAGES`] a range) did
    /// not reach the end. Rows of the previous form (by key) count until they are migrated.
    /// No table yet is no failed row.
    pub async fn failed_under(
        &self,
        bucket: &str,
        target: &str,
        (source_prefix, target_prefix): (&str, &str),
        limit: u32,
    ) -> Result<(Vec<ObjectRecord>, bool)> {
        let previous = target_partition(bucket, target);
        let failed = Outcome::Failed.as_str();
        // Ordered row keys of the names (and, in the previous form, keys) under a prefix start
        // with its hex, and hex digits sort below `g`; hashed names (`~n`), keys without a
        // blob (`s`) and hashed keys of the previous form (`~` and a hex digit) are told by
        // their properties.
        let ordered = format!("n{}", hex::encode(target_prefix.as_bytes()));
        let legacy = format!("k{}", hex::encode(source_prefix.as_bytes()));
        let blob_form: [(String, String); 3] = [
            (ordered.clone(), format!("{ordered}g")),
            ("s".into(), "t".into()),
            ("~n".into(), "~o".into()),
        ];
        // Each partition is asked on its own (`PartitionKey eq`, so the service seeks to the
        // range): the 16 for the blob form, and the one from before rows were spread
        // (decision 123), which also holds the first form's rows.
        let mut asks: Vec<(String, (String, String))> = Vec::new();
        for pk in partitions(bucket, target) {
            asks.extend(blob_form.iter().map(|r| (pk.clone(), r.clone())));
        }
        asks.extend(blob_form.iter().cloned().map(|r| (previous.clone(), r)));
        asks.push((previous.clone(), (legacy.clone(), format!("{legacy}g"))));
        asks.push((previous.clone(), ("~0".into(), "~g".into())));
        let mut out = Vec::new();
        let mut more = false;
        for (pk, (from, to)) in asks {
            if out.len() >= limit as usize {
                // Not asked: there may be more.
                more = true;
                break;
            }
            let f = Filter::eq("PartitionKey", &pk)
                .and("RowKey", "ge", &from)
                .and("RowKey", "lt", &to)
                .and("Outcome", "eq", failed);
            let mut cont = None;
            // A page may come back empty with a continuation (the service's time limit), and
            // rows outside the scope are read too: go on until enough are found.
            for page in 0.. {
                if page == FAILED_PAGES || out.len() >= limit as usize {
                    more |= cont.is_some();
                    break;
                }
                let (rows, next) = match self.table.query(Some(f.as_str()), Some(limit), cont.as_ref()).await {
                    Err(e) if e.kind() == ErrorKind::NotFound => (Vec::new(), None),
                    r => r?,
                };
                out.extend(rows.iter().filter_map(ObjectRecord::from_entity).filter(|r| {
                    r.key.starts_with(source_prefix) && r.blob.as_deref().is_none_or(|b| b.starts_with(target_prefix))
                }));
                match next {
                    Some(n) => cont = Some(n),
                    None => break,
                }
            }
        }
        more |= out.len() > limit as usize;
        out.truncate(limit as usize);
        Ok((out, more))
    }

    /// Calls `each` with every page of a bucket's records, whatever the target, in the
    /// table's order (by target and partition, then blob name): only the bucket's partitions
    /// are read, and one page is held at a time. A row a write moved to its own partition
    /// but could not remove from the single one (it changed meanwhile) is seen twice until
    /// `migrate-checkpoints` drops it.
    pub async fn each_of_bucket(
        &self,
        bucket: &str,
        mut each: impl AsyncFnMut(Vec<ObjectRecord>) -> Result<()>,
    ) -> Result<()> {
        // A bucket name holds no `~`, so its partitions (`bucket~<target hash>`, and their
        // `~staging` siblings, whose rows name no bucket) sort between these two.
        let filter = Filter::eq("Bucket", bucket)
            .and("PartitionKey", "ge", &format!("{bucket}~"))
            .and("PartitionKey", "lt", &format!("{bucket}~~"));
        self.each_page(&filter, async |rows| {
            each(rows.iter().filter_map(ObjectRecord::from_entity).collect()).await
        })
        .await
    }

    /// Every record of a bucket, all at once (tests and small buckets; `status` pages).
    pub async fn list_bucket(&self, bucket: &str) -> Result<Vec<ObjectRecord>> {
        let mut all = Vec::new();
        self.each_of_bucket(bucket, async |page| {
            all.extend(page);
            Ok(())
        })
        .await?;
        Ok(all)
    }
}
