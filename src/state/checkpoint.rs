//! The per-object checkpoint in Azure Table Storage (table `objects` by default).
//!
//! A row belongs to the blob it describes (decisions 99): two runs that map the same key to
//! different target prefixes keep a row each, and a blob has one row whichever mapping wrote
//! it. Blob names may be 1024 characters and contain characters a RowKey may not (`/ \ # ?`),
//! so keys are derived. PartitionKey = bucket + "~" + a short hash of the target
//! (`account/container`); RowKey = "n" + hex(blob name bytes). Within one prefix mapping, hex
//! keeps S3's listing order (UTF-8 byte order), so the rows of one listing page are one range
//! query: a re-run of an unchanged bucket costs listings, not a read per object. Names whose
//! hex would pass the 1 KiB RowKey limit use "~n" + sha256(name) and are read one by one. A key
//! that maps to no blob (a folder marker, an invalid name) has its row at "s" + sha256(key).
//! The bucket, key and blob name are properties; a row counts for a key only when it names it.
//!
//! Rows of the previous form (RowKey "k" + hex(key), or "~" + sha256(key)) are not read; `s3-blob-sync
//! migrate-checkpoints` moves them (see [`CheckpointStore::migrate_legacy`]).
//!
//! One partition per bucket and target caps checkpoint writes near the Table service's
//! per-partition target (about 2,000 entities/s); see docs/decisions.md.

use sha2::{Digest, Sha256};

use crate::azure::auth::Authorizer;
use crate::azure::table::{Entity, Filter, TableClient};
use crate::config::azure::StorageAccount;
use crate::error::{ErrorKind, Result};
use crate::model::{MovedBy, Verification};
use crate::retry::RetryPolicy;

/// What happened to one object. The snake-case names are stored in the table and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// Copied and verified.
    Copied,
    /// Already at the target with the same ETag and size.
    NoTransferNeeded,
    /// Cannot be copied (archived class, invalid blob name).
    Unsupported,
    /// Left out on purpose (folder markers, outside the prefix).
    Excluded,
    /// Failed; the reason says why.
    Failed,
    /// The source is gone and the blob was deleted (mirror mode).
    Deleted,
    /// The source is gone; the blob was kept (additive mode) or never existed.
    SourceMissing,
}

impl Outcome {
    /// Stable name stored in the table and logs.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// One object's checkpoint row.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRecord {
    /// Source bucket.
    pub bucket: String,
    /// Source key.
    pub key: String,
    /// Target, as `account/container`.
    pub target: String,
    /// Blob name, when the key maps to one.
    pub blob: Option<String>,
    /// Last outcome.
    pub outcome: Outcome,
    /// Why, for anything but a copy.
    pub reason: Option<String>,
    /// Source ETag the outcome applies to.
    pub etag: Option<String>,
    /// Source size.
    pub size: Option<u64>,
    /// Source version id.
    pub version_id: Option<String>,
    /// Source Last-Modified (RFC 3339).
    pub last_modified: Option<String>,
    /// Digest of the source's content headers and user metadata the outcome applies to
    /// (`engine::metadata::attrs_digest`); `None` on rows written before it was kept.
    pub attrs: Option<String>,
    /// How the copy was verified.
    pub verified: Option<Verification>,
    /// Which path moved the bytes.
    pub path: Option<MovedBy>,
    /// Run that wrote it.
    pub run_id: Option<String>,
    /// Attempts that failed since the last success.
    pub failed_attempts: u32,
    /// Highest S3 event sequencer applied for this key.
    pub sequencer: Option<String>,
    /// Name of the last event applied.
    pub last_event: Option<String>,
    /// Time of the last event applied.
    pub event_time: Option<String>,
    /// When written (RFC 3339).
    pub updated_at: String,
}

impl ObjectRecord {
    /// A record with no outcome details yet.
    pub fn new(bucket: &str, key: &str, target: &str, outcome: Outcome) -> Self {
        ObjectRecord {
            bucket: bucket.into(),
            key: key.into(),
            target: target.into(),
            blob: None,
            outcome,
            reason: None,
            etag: None,
            size: None,
            version_id: None,
            last_modified: None,
            attrs: None,
            verified: None,
            path: None,
            run_id: None,
            failed_attempts: 0,
            sequencer: None,
            last_event: None,
            event_time: None,
            updated_at: now_rfc3339(),
        }
    }

    /// Records which source version the outcome applies to: its bytes (ETag, size), its
    /// time, and the digest of its headers and metadata.
    pub fn note_source(&mut self, head: &crate::aws::s3::ObjectHead, attrs: String) {
        self.etag = Some(head.etag.clone());
        self.size = Some(head.size);
        self.version_id = head.version_id.clone();
        self.last_modified = head.last_modified.clone();
        self.attrs = Some(attrs);
    }

    /// What the row is about: its blob, or its key when it maps to none.
    pub fn subject(&self) -> Subject<'_> {
        match &self.blob {
            Some(b) => Subject::Blob(b),
            None => Subject::Key(&self.key),
        }
    }

    fn to_entity(&self) -> Entity {
        let (pk, rk) = row_keys(&self.bucket, self.subject(), &self.target);
        let mut e = Entity::new(pk, rk);
        e.set_str("Bucket", &self.bucket)
            .set_str("Key", &self.key)
            .set_str("Target", &self.target)
            .set_str("Outcome", self.outcome.as_str())
            .set_i64("FailedAttempts", self.failed_attempts as i64)
            .set_str("UpdatedAt", &self.updated_at);
        let opt = [
            ("Blob", &self.blob),
            ("Reason", &self.reason),
            ("ETag", &self.etag),
            ("VersionId", &self.version_id),
            ("LastModified", &self.last_modified),
            ("Attrs", &self.attrs),
            ("RunId", &self.run_id),
            ("Sequencer", &self.sequencer),
            ("LastEvent", &self.last_event),
            ("EventTime", &self.event_time),
        ];
        for (name, v) in opt {
            if let Some(v) = v {
                e.set_str(name, v);
            }
        }
        if let Some(s) = self.size {
            e.set_i64("Size", s as i64);
        }
        if let Some(v) = self.verified {
            e.set_str("Verified", v.as_str());
        }
        if let Some(p) = self.path {
            e.set_str("Path", p.as_str());
        }
        e
    }

    fn from_entity(e: &Entity) -> Option<Self> {
        let s = |n: &str| e.get_str(n).map(str::to_string);
        Some(ObjectRecord {
            bucket: s("Bucket")?,
            key: s("Key")?,
            target: s("Target")?,
            blob: s("Blob"),
            outcome: Outcome::parse(e.get_str("Outcome")?)?,
            reason: s("Reason"),
            etag: s("ETag"),
            size: e.get_i64("Size").map(|v| v as u64),
            version_id: s("VersionId"),
            last_modified: s("LastModified"),
            attrs: s("Attrs"),
            // A name this build does not know reads as unknown, not as a broken row.
            verified: e.get_str("Verified").and_then(|v| v.parse().ok()),
            path: e.get_str("Path").and_then(|v| v.parse().ok()),
            run_id: s("RunId"),
            failed_attempts: e.get_i64("FailedAttempts").unwrap_or(0) as u32,
            sequencer: s("Sequencer"),
            last_event: s("LastEvent"),
            event_time: s("EventTime"),
            updated_at: s("UpdatedAt").unwrap_or_default(),
        })
    }
}

/// A record as read, with the ETag to write it back under.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The record.
    pub record: ObjectRecord,
    /// Table ETag for If-Match.
    pub etag: String,
}

/// Longest RowKey written in the ordered form ("n" + hex); longer names are hashed.
const MAX_ORDERED_ROW_KEY: usize = 1001;

/// What a checkpoint row is about: the blob a key is copied to, or, for a key that maps to no
/// blob (a folder marker, a name Azure cannot hold, a key outside the prefix), the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A blob name.
    Blob(&'a str),
    /// A source key with no blob.
    Key(&'a str),
}

/// A plain name is a blob's.
impl<'a> From<&'a str> for Subject<'a> {
    fn from(blob: &'a str) -> Self {
        Subject::Blob(blob)
    }
}

impl<'a> From<&'a String> for Subject<'a> {
    fn from(blob: &'a String) -> Self {
        Subject::Blob(blob)
    }
}

/// PartitionKey for every object of `bucket` copied to `target`.
pub fn partition_key(bucket: &str, target: &str) -> String {
    let h = Sha256::digest(target.as_bytes());
    format!("{bucket}~{}", hex::encode(&h[..6]))
}

/// RowKey for a row's subject: ordered by blob name when short enough, hashed otherwise.
pub fn row_key<'a>(subject: impl Into<Subject<'a>>) -> String {
    match subject.into() {
        Subject::Blob(name) if 2 * name.len() < MAX_ORDERED_ROW_KEY => {
            format!("n{}", hex::encode(name.as_bytes()))
        }
        Subject::Blob(name) => format!("~n{}", hex::encode(Sha256::digest(name.as_bytes()))),
        Subject::Key(key) => format!("s{}", hex::encode(Sha256::digest(key.as_bytes()))),
    }
}

/// PartitionKey and RowKey of a row about `subject` for `bucket` copied to `target`.
pub fn row_keys<'a>(bucket: &str, subject: impl Into<Subject<'a>>, target: &str) -> (String, String) {
    (partition_key(bucket, target), row_key(subject))
}

/// The RowKey of the previous form (by source key), read only to migrate it.
fn legacy_row_key(key: &str) -> String {
    if 2 * key.len() < MAX_ORDERED_ROW_KEY {
        format!("k{}", hex::encode(key.as_bytes()))
    } else {
        format!("~{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

/// Pages of one key range [`CheckpointStore::failed_under`] reads at most.
pub const FAILED_PAGES: usize = 20;

/// What [`CheckpointStore::migrate_legacy`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Migrated {
    /// Rows of the previous form found.
    pub found: u64,
    /// Moved to their blob's row.
    pub moved: u64,
    /// Dropped because the blob's row already held a later word.
    pub superseded: u64,
    /// Split plans and ranges of the previous form dropped (a split in flight starts over).
    pub staging_dropped: u64,
}

/// RFC 3339 now, UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The checkpoint store.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    pub(super) table: TableClient,
}

impl CheckpointStore {
    /// A store over `table`.
    pub fn new(table: TableClient) -> Self {
        CheckpointStore { table }
    }

    /// The checkpoint table `name` of `account` (no network calls).
    pub fn open(account: &StorageAccount, auth: &Authorizer, name: &str, retry: RetryPolicy) -> Result<Self> {
        Ok(CheckpointStore {
            table: TableClient::new(account, auth, name, retry)?,
        })
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
        Ok(self.table.get(&pk, &rk).await?.and_then(|e| {
            Some(Versioned {
                etag: e.etag.clone().unwrap_or_default(),
                record: ObjectRecord::from_entity(&e)?,
            })
        }))
    }

    /// Replaces the row `seen` with `rec`, once, only if nobody changed it since it was read
    /// (a `Precondition` error otherwise; the caller decides whether that matters).
    pub async fn replace(&self, rec: &ObjectRecord, seen: &Versioned) -> Result<()> {
        self.table.update(&rec.to_entity(), Some(&seen.etag)).await.map(|_| ())
    }

    /// Writes `rec` with optimistic concurrency. `seen` is the row as this writer read it
    /// (`None`: it saw no row). If another writer changed the row since, this writer lost the
    /// race: it re-reads and writes again only if its record is not older than the stored one
    /// (by source Last-Modified), so a slow writer never regresses a newer outcome.
    pub async fn put(&self, rec: &ObjectRecord, seen: Option<&Versioned>) -> Result<()> {
        let entity = rec.to_entity();
        let mut expected = seen.map(|v| v.etag.clone());
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
            let r = match &expected {
                Some(tag) => self.table.update(&entity, Some(tag)).await.map(|_| ()),
                None => self.table.insert(&entity).await.map(|_| ()),
            };
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
                    expected = current.map(|c| c.etag);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The rows of every blob name in `[first, last]` that has an ordered RowKey, by blob
    /// name: one range query for a listing page (a page's names, under one prefix mapping,
    /// keep its keys' order). Names too long for the ordered form are not included; read them
    /// with [`Self::get`].
    pub async fn range(
        &self,
        bucket: &str,
        target: &str,
        first: &str,
        last: &str,
    ) -> Result<std::collections::HashMap<String, Versioned>> {
        let filter = Filter::eq("PartitionKey", &partition_key(bucket, target))
            .and("RowKey", "ge", &row_key(first))
            .and("RowKey", "le", &row_key(last));
        let rows = self.table.query_all(Some(filter.as_str())).await?;
        Ok(rows
            .iter()
            .filter_map(|e| {
                let record = ObjectRecord::from_entity(e)?;
                Some((
                    record.blob.clone()?,
                    Versioned {
                        etag: e.etag.clone().unwrap_or_default(),
                        record,
                    },
                ))
            })
            .collect())
    }

    /// Whether blob name `name` has an ordered RowKey, so [`Self::range`] covers it.
    pub fn in_range_form(name: &str) -> bool {
        row_key(name).starts_with('n')
    }

    /// The keys in `[first, last]` (S3 order) that still have a row of the previous form:
    /// a lister must not take them for never copied (decisions 99). One range query.
    pub async fn legacy_keys(
        &self,
        bucket: &str,
        target: &str,
        first: &str,
        last: &str,
    ) -> Result<std::collections::HashSet<String>> {
        let filter = Filter::eq("PartitionKey", &partition_key(bucket, target))
            .and("RowKey", "ge", &legacy_row_key(first))
            .and("RowKey", "le", &legacy_row_key(last));
        Ok(self
            .table
            .query_all(Some(filter.as_str()))
            .await?
            .iter()
            .filter(|e| e.row_key.starts_with('k'))
            .filter_map(|e| e.get_str("Key").map(str::to_string))
            .collect())
    }

    /// Moves every row of the previous form (by source key) to its blob's row, keeping a row
    /// already there (it was written later), and drops split plans of the previous form.
    /// Idempotent and resumable: a row is deleted only after its blob's row exists. With
    /// `dry_run`, only counts. `progress` is called after each page of rows.
    pub async fn migrate_legacy(&self, dry_run: bool, progress: &(dyn Fn(&Migrated) + Sync)) -> Result<Migrated> {
        let mut done = Migrated::default();
        // Ordered rows ("k…") and hashed ones ("~" and a hex digit; "~n…" is the new form).
        for (from, to) in [("k", "l"), ("~0", "~g")] {
            let filter = Filter::default().and("RowKey", "ge", from).and("RowKey", "lt", to);
            self.each_page(&filter, async |rows: Vec<Entity>| {
                for e in &rows {
                    let Some(rec) = ObjectRecord::from_entity(e) else {
                        continue;
                    };
                    // Not a checkpoint row of the previous form (a split row, another table's).
                    if e.partition_key.ends_with("~staging") || e.row_key != legacy_row_key(&rec.key) {
                        continue;
                    }
                    done.found += 1;
                    if dry_run {
                        continue;
                    }
                    match self.table.insert(&rec.to_entity()).await {
                        Ok(_) => done.moved += 1,
                        Err(err) if err.kind() == ErrorKind::Precondition => done.superseded += 1,
                        Err(err) => return Err(err),
                    }
                    let r = self.table.delete(&e.partition_key, &e.row_key, "*").await;
                    crate::error::ok_if(r, ErrorKind::NotFound)?;
                }
                progress(&done);
                Ok(())
            })
            .await?;
        }
        // Split plans and ranges of the previous form: their row keys start with a hex digit
        // (the new ones with `n`).
        let filter = Filter::default().and("RowKey", "ge", "0").and("RowKey", "lt", "g");
        self.each_page(&filter, async |rows: Vec<Entity>| {
            for e in rows.iter().filter(|e| e.partition_key.ends_with("~staging")) {
                done.staging_dropped += 1;
                if !dry_run {
                    let r = self.table.delete(&e.partition_key, &e.row_key, "*").await;
                    crate::error::ok_if(r, ErrorKind::NotFound)?;
                }
            }
            progress(&done);
            Ok(())
        })
        .await?;
        Ok(done)
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
        let pk = partition_key(bucket, target);
        let failed = Outcome::Failed.as_str();
        // Ordered row keys of the names (and, in the previous form, keys) under a prefix start
        // with its hex, and hex digits sort below `g`; hashed names (`~n`), keys without a
        // blob (`s`) and hashed keys of the previous form (`~` and a hex digit) are told by
        // their properties.
        let ordered = format!("n{}", hex::encode(target_prefix.as_bytes()));
        let legacy = format!("k{}", hex::encode(source_prefix.as_bytes()));
        let ranges = [
            (ordered.clone(), format!("{ordered}g")),
            ("s".into(), "t".into()),
            ("~n".into(), "~o".into()),
            (legacy.clone(), format!("{legacy}g")),
            ("~0".into(), "~g".into()),
        ];
        let mut out = Vec::new();
        let mut more = false;
        for (from, to) in ranges {
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

    /// Every record of a bucket (status and tests).
    pub async fn list_bucket(&self, bucket: &str) -> Result<Vec<ObjectRecord>> {
        let filter = Filter::eq("Bucket", bucket);
        Ok(self
            .table
            .query_all(Some(filter.as_str()))
            .await?
            .iter()
            .filter_map(ObjectRecord::from_entity)
            .collect())
    }
}

/// What a writer that lost the race for a key's row does with the row now stored there
/// (another writer's, of the same key): the one rule for which version wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterLostRace {
    /// The stored row describes a strictly newer source version: a slow writer never
    /// regresses it.
    KeepNewer,
    /// The stored row records the copy of the very version this writer only found already
    /// there: its "no transfer" would hide how the copy was made and verified.
    KeepCopy,
    /// Last-Modified has one-second precision, and a removal has none: which of the two the
    /// blob reflects cannot be told from the rows, so the caller looks again (blob, then
    /// source) instead of guessing.
    LookAgain,
    /// This writer's row replaces the stored one.
    Overwrite,
}

fn after_lost_race(stored: &ObjectRecord, ours: &ObjectRecord) -> AfterLostRace {
    if is_newer(stored, ours) {
        AfterLostRace::KeepNewer
    } else if copy_of_same_version(stored, ours) {
        AfterLostRace::KeepCopy
    } else if same_second_other_version(stored, ours) || content_vs_removal(stored, ours) {
        AfterLostRace::LookAgain
    } else {
        AfterLostRace::Overwrite
    }
}

/// Whether both rows claim content of different source versions modified in the same second:
/// other bytes, or the same bytes with other headers or metadata (a copy-in-place).
fn same_second_other_version(stored: &ObjectRecord, ours: &ObjectRecord) -> bool {
    let content = |r: &ObjectRecord| matches!(r.outcome, Outcome::Copied | Outcome::NoTransferNeeded);
    content(stored)
        && content(ours)
        && stored.last_modified.is_some()
        && stored.last_modified == ours.last_modified
        && (stored.etag != ours.etag || other_attrs(stored, ours))
}

/// Whether both rows know the source's headers and metadata, and they differ.
fn other_attrs(a: &ObjectRecord, b: &ObjectRecord) -> bool {
    matches!((&a.attrs, &b.attrs), (Some(x), Some(y)) if x != y)
}

/// Whether one row says the blob holds content and the other that it was removed (or the
/// source is gone): rows without a Last-Modified cannot be ordered against each other.
fn content_vs_removal(stored: &ObjectRecord, ours: &ObjectRecord) -> bool {
    let content = |r: &ObjectRecord| matches!(r.outcome, Outcome::Copied | Outcome::NoTransferNeeded);
    let removal = |r: &ObjectRecord| matches!(r.outcome, Outcome::Deleted | Outcome::SourceMissing);
    (content(stored) && removal(ours)) || (removal(stored) && content(ours))
}

/// Whether `stored` records the copy of the very version (and blob) that `ours` only finds
/// already there.
fn copy_of_same_version(stored: &ObjectRecord, ours: &ObjectRecord) -> bool {
    stored.outcome == Outcome::Copied
        && ours.outcome == Outcome::NoTransferNeeded
        && stored.etag.is_some()
        && stored.etag == ours.etag
        && stored.size == ours.size
        && stored.blob == ours.blob
        && stored.last_modified == ours.last_modified
        && !other_attrs(stored, ours)
}

/// Whether `stored` describes a strictly newer source version than `ours`.
fn is_newer(stored: &ObjectRecord, ours: &ObjectRecord) -> bool {
    match (&stored.last_modified, &ours.last_modified) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_table_safe_for_any_blob_name_or_key() {
        for name in [
            format!("{}/#?\\ü{}", "x".repeat(300), "\u{7}"),
            "x".repeat(1024),
            "a".into(),
        ] {
            for subject in [Subject::Blob(&name), Subject::Key(&name)] {
                let (pk, rk) = row_keys("my.bucket", subject, "http://h/acct/c");
                assert!(rk.len() <= 1024, "{}", rk.len());
                assert!(rk
                    .trim_start_matches(['~', 'n', 's'])
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit()));
                assert!(pk.starts_with("my.bucket~"));
                for k in [&pk, &rk] {
                    assert!(!k.contains(['/', '\\', '#', '?']) && !k.chars().any(char::is_control));
                }
                // Same name, other target: another partition.
                assert_ne!(row_keys("my.bucket", subject, "http://h/acct/d").0, pk);
            }
            // A blob's row and a nameless key's row never meet, nor the previous form's.
            assert_ne!(row_key(Subject::Blob(&name)), row_key(Subject::Key(&name)));
            assert_ne!(row_key(Subject::Blob(&name)), legacy_row_key(&name));
        }
        assert!(row_key(&"x".repeat(1024)).starts_with("~n"));
        assert!(CheckpointStore::in_range_form(&"x".repeat(500)));
        // The previous form's hashed keys ("~" and a hex digit) sort apart from "~n".
        assert!(legacy_row_key(&"x".repeat(1024)).as_str() < "~g");
    }

    #[test]
    fn ordered_row_keys_follow_s3_listing_order() {
        // S3 lists in UTF-8 byte order; the RowKeys must sort the same way as strings.
        let mut keys = vec![
            "a",
            "a/b",
            "a0",
            "a b",
            "Z",
            "é",
            "a\u{7f}",
            "ab",
            "",
            "\u{10000}",
            "\u{ffff}",
        ];
        keys.retain(|k| !k.is_empty());
        let mut by_bytes = keys.clone();
        by_bytes.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut by_row_key = keys.clone();
        by_row_key.sort_by_key(|k| row_key(*k));
        assert_eq!(by_bytes, by_row_key);
    }

    #[test]
    fn record_round_trips_through_an_entity() {
        let mut r = ObjectRecord::new("b", "a/b c", "http://t/c", Outcome::Failed);
        r.reason = Some("checksum mismatch".into());
        r.size = Some(5 << 30);
        r.attrs = Some("v1:0123".into());
        r.failed_attempts = 2;
        let back = ObjectRecord::from_entity(&r.to_entity()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn newer_by_last_modified() {
        let mut a = ObjectRecord::new("b", "k", "t", Outcome::Copied);
        let mut b = a.clone();
        a.last_modified = Some("2024-01-02T00:00:00Z".into());
        b.last_modified = Some("2024-01-01T00:00:00Z".into());
        assert!(is_newer(&a, &b));
        assert!(!is_newer(&b, &a));
    }

    /// A row of `outcome` for source version `etag` modified at second `lm` (of one minute)
    /// with attribute digest `attrs`, written to blob `k`.
    fn row(outcome: Outcome, etag: Option<&str>, lm: Option<u8>, attrs: Option<&str>) -> ObjectRecord {
        let mut r = ObjectRecord::new("b", "k", "t", outcome);
        r.blob = Some("k".into());
        r.etag = etag.map(Into::into);
        r.size = etag.map(|_| 5);
        r.last_modified = lm.map(|s| format!("2026-12-07T10:00:{s:02}Z"));
        r.attrs = attrs.map(Into::into);
        r
    }

    #[test]
    fn which_version_wins_a_lost_race_for_a_row() {
        use AfterLostRace::*;
        use Outcome::*;
        let copied = |e, lm, a| row(Copied, Some(e), Some(lm), Some(a));
        let found = |e, lm, a| row(NoTransferNeeded, Some(e), Some(lm), Some(a));
        let cases: Vec<(&str, ObjectRecord, ObjectRecord, AfterLostRace)> = vec![
            (
                "a newer copy stays",
                copied("e2", 2, "a"),
                copied("e1", 1, "a"),
                KeepNewer,
            ),
            (
                "a newer failure stays too",
                row(Failed, Some("e2"), Some(2), None),
                copied("e1", 1, "a"),
                KeepNewer,
            ),
            (
                "an older copy is replaced",
                copied("e1", 1, "a"),
                copied("e2", 2, "a"),
                Overwrite,
            ),
            (
                "the copy of this version stays",
                copied("e1", 1, "a"),
                found("e1", 1, "a"),
                KeepCopy,
            ),
            (
                "a copy of the same version is rewritten",
                copied("e1", 1, "a"),
                copied("e1", 1, "a"),
                Overwrite,
            ),
            (
                "a find replaces a find",
                found("e1", 1, "a"),
                found("e1", 1, "a"),
                Overwrite,
            ),
            (
                "a copy replaces a find",
                found("e1", 1, "a"),
                copied("e1", 1, "a"),
                Overwrite,
            ),
            (
                "other bytes, same second",
                copied("e1", 1, "a"),
                copied("e2", 1, "a"),
                LookAgain,
            ),
            (
                "other headers, same second",
                copied("e1", 1, "a"),
                copied("e1", 1, "b"),
                LookAgain,
            ),
            (
                "a find of other headers is not the copy",
                copied("e1", 1, "a"),
                found("e1", 1, "b"),
                LookAgain,
            ),
            (
                "a row without a digest: the bytes decide",
                row(Copied, Some("e1"), Some(1), None),
                found("e1", 1, "b"),
                KeepCopy,
            ),
            (
                "another blob's copy is not this find",
                {
                    let mut r = copied("e1", 1, "a");
                    r.blob = Some("x/k".into());
                    r
                },
                found("e1", 1, "a"),
                Overwrite,
            ),
            (
                "a removal after content",
                copied("e1", 1, "a"),
                row(Deleted, None, None, None),
                LookAgain,
            ),
            (
                "content after a removal",
                row(Deleted, None, None, None),
                copied("e1", 1, "a"),
                LookAgain,
            ),
            (
                "content after a vanished source",
                row(SourceMissing, None, None, None),
                found("e1", 1, "a"),
                LookAgain,
            ),
            (
                "a removal replaces a removal",
                row(SourceMissing, None, None, None),
                row(Deleted, None, None, None),
                Overwrite,
            ),
            (
                "a copy replaces a failure of its second",
                row(Failed, Some("e1"), Some(1), None),
                copied("e1", 1, "a"),
                Overwrite,
            ),
            (
                "a failure after a copy of its second",
                copied("e1", 1, "a"),
                row(Failed, Some("e1"), Some(1), None),
                Overwrite,
            ),
        ];
        for (what, stored, ours, want) in cases {
            assert_eq!(after_lost_race(&stored, &ours), want, "{what}");
        }
    }

    #[test]
    fn a_metadata_change_in_the_same_second_is_another_version() {
        let mut stored = ObjectRecord::new("b", "k", "t", Outcome::Copied);
        stored.etag = Some("e".into());
        stored.last_modified = Some("2026-12-07T10:00:00Z".into());
        stored.attrs = Some("v1:aa".into());
        let mut ours = stored.clone();
        assert!(!same_second_other_version(&stored, &ours));
        ours.attrs = Some("v1:bb".into());
        assert!(same_second_other_version(&stored, &ours));
        // A twin that found the blob holding a copy of other headers is not that copy.
        ours.outcome = Outcome::NoTransferNeeded;
        assert!(!copy_of_same_version(&stored, &ours));
        // A row written before digests were kept cannot tell: the bytes decide, as before.
        ours.attrs = None;
        assert!(copy_of_same_version(&stored, &ours));
        assert!(!same_second_other_version(&stored, &ours));
    }
}
