//! The `runs` table: one row per run, one lister row per run, sharded counter rows, per-object
//! "counted" markers, and one lock row per source/target pair.
//!
//! | PartitionKey   | RowKey          | What                                                |
//! |----------------|-----------------|-----------------------------------------------------|
//! | `run`          | run id          | spec, state, phase, times, notification state       |
//! | `<id>`         | `lister`        | continuation token, page number, listing counters   |
//! | `<id>`         | `plan~<page>~<n>` | the page's listing, while the page is in progress |
//! | `<id>~<nn>`    | `counter`       | counters from copies whose key hashes to shard nn   |
//! | `<id>~<nn>`    | `o<hash>`       | marker: this key's outcome was counted, with reason |
//! | `<id>~<nn>`    | `r<hash>`       | this key's copy failed an attempt and will retry    |
//! | `lock`         | lock key        | the run working on a source/target pair             |
//!
//! A copy's marker and its shard's counter share a partition, so both are written in one
//! entity-group transaction: a replayed copy hits the existing marker (409) and counts
//! nothing, and concurrent copies contend on 16 rows instead of one.

use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::counters::{Counters, Tally};
use crate::azure::table::{BatchOp, BatchOutcome, Entity, TableClient};
use crate::error::{Error, ErrorKind, Result};
use crate::messages::run_spec::RunSpec;
use crate::messages::webhook::WebhookRef;
use crate::model::{NotifyState, Trigger};

/// Counter shards per run.
pub const SHARDS: u32 = 16;
const RUN_PK: &str = "run";
const LOCK_PK: &str = "lock";

/// State of a run, as Storage Mover names them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, strum::EnumString, strum::IntoStaticStr,
)]
pub enum RunState {
    /// Listing or copying.
    Running,
    /// Every object settled without failure.
    Succeeded,
    /// Done, but some objects failed or deletes were refused.
    PartiallySucceeded,
    /// The run could not proceed (listing failed for good).
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl RunState {
    /// The stored and reported name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        self != RunState::Running
    }
}

/// Where a running run is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, strum::EnumString, strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Phase {
    /// Listing pages.
    Listing,
    /// Listing done; waiting for copies to settle.
    Copying,
    /// Mirror mode: finding and deleting blobs whose source is gone.
    Pruning,
    /// Ended.
    Done,
}

impl Phase {
    /// The stored and reported name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// An unknown name reads as listing, where a run starts.
    fn parse(s: &str) -> Self {
        s.parse().unwrap_or(Phase::Listing)
    }
}

/// One run's row.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Run id (sortable by start time).
    pub id: String,
    /// What it does.
    pub spec: RunSpec,
    /// Completion webhook, by the app setting that holds its URL (never the URL).
    pub notify: Option<WebhookRef>,
    /// What started it (`None` for a row that names something else).
    pub trigger: Option<Trigger>,
    /// State.
    pub state: RunState,
    /// Phase while running.
    pub phase: Phase,
    /// Why it ended as it did, when not plainly Succeeded.
    pub reason: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, once ended.
    pub ended_at: Option<String>,
    /// Where the webhook stands.
    pub notified: NotifyState,
    /// When a sender claimed the webhook (RFC 3339), while it is `Sending`.
    pub notify_claimed_at: Option<String>,
    /// Last webhook error (redacted).
    pub notify_error: Option<String>,
    /// Lock row held, if any.
    pub lock_key: Option<String>,
    /// Settled copies at the last check, and when that number last moved.
    pub last_settled: u64,
    /// RFC 3339.
    pub last_progress_at: String,
    /// Mirror mode: blobs found with no source object (dry runs count them here too).
    pub delete_candidates: u64,
    /// Table ETag for If-Match.
    pub etag: String,
}

impl RunRecord {
    fn to_entity(&self) -> Entity {
        let mut e = Entity::new(RUN_PK, &self.id);
        e.set_str("Spec", serde_json::to_string(&self.spec).unwrap_or_default())
            .set_str("Trigger", self.trigger.map_or("", Trigger::as_str))
            .set_str("State", self.state.as_str())
            .set_str("Phase", self.phase.as_str())
            .set_str("StartedAt", &self.started_at)
            .set_str("Notified", self.notified.as_str())
            .set_i64("LastSettled", self.last_settled as i64)
            .set_str("LastProgressAt", &self.last_progress_at)
            .set_i64("DeleteCandidates", self.delete_candidates as i64);
        for (k, v) in [
            ("Notify", self.notify.as_ref().map(ToString::to_string)),
            ("Reason", self.reason.clone()),
            ("EndedAt", self.ended_at.clone()),
            ("NotifyError", self.notify_error.clone()),
            ("NotifyClaimedAt", self.notify_claimed_at.clone()),
            ("LockKey", self.lock_key.clone()),
        ] {
            if let Some(v) = v {
                e.set_str(k, v);
            }
        }
        e
    }

    fn from_entity(e: &Entity) -> Result<Self> {
        let s = |n: &str| e.get_str(n).map(str::to_string);
        let spec: RunSpec = serde_json::from_str(e.get_str("Spec").unwrap_or_default())
            .map_err(|err| Error::internal(format!("run {}: stored spec unreadable: {err}", e.row_key)))?;
        Ok(RunRecord {
            id: e.row_key.clone(),
            spec,
            notify: s("Notify").and_then(|v| WebhookRef::parse(&v).ok()),
            trigger: s("Trigger").and_then(|t| t.parse().ok()),
            state: e.get_str("State").and_then(RunState::parse).unwrap_or(RunState::Failed),
            phase: Phase::parse(e.get_str("Phase").unwrap_or_default()),
            reason: s("Reason"),
            started_at: s("StartedAt").unwrap_or_default(),
            ended_at: s("EndedAt"),
            notified: s("Notified").and_then(|n| n.parse().ok()).unwrap_or_default(),
            notify_claimed_at: s("NotifyClaimedAt"),
            notify_error: s("NotifyError"),
            lock_key: s("LockKey"),
            last_settled: e.get_i64("LastSettled").unwrap_or(0).max(0) as u64,
            last_progress_at: s("LastProgressAt").unwrap_or_default(),
            delete_candidates: e.get_i64("DeleteCandidates").unwrap_or(0).max(0) as u64,
            etag: e.etag.clone().unwrap_or_default(),
        })
    }
}

/// The lister's row: where listing stands and what it counted.
#[derive(Debug, Clone, Default)]
pub struct ListerState {
    /// Continuation token for the next page (`None` before the first page and at the end).
    pub token: Option<String>,
    /// Pages done.
    pub page: u64,
    /// Listing finished.
    pub done: bool,
    /// Scanned, excluded, unsupported, noTransferNeeded, wouldTransfer and enqueued.
    pub counters: Counters,
    /// Table ETag for If-Match.
    pub etag: String,
}

/// The `runs` table.
#[derive(Debug, Clone)]
pub struct RunStore {
    table: TableClient,
}

impl RunStore {
    /// A store over `table`.
    pub fn new(table: TableClient) -> Self {
        RunStore { table }
    }

    /// Creates the table if needed.
    pub async fn ensure(&self) -> Result<()> {
        self.table.create_if_missing().await
    }

    /// Inserts a new run row and its lister row.
    pub async fn insert(&self, run: &mut RunRecord) -> Result<()> {
        run.etag = self.table.insert(&run.to_entity()).await?;
        let mut l = Entity::new(&run.id, "lister");
        l.set_i64("Page", 0).set_str("Done", "false");
        Counters::default().write(&mut l);
        self.table.update(&l, None).await?;
        Ok(())
    }

    /// A run by id.
    pub async fn get(&self, id: &str) -> Result<Option<RunRecord>> {
        if !valid_run_id(id) {
            return Ok(None);
        }
        self.table
            .get(RUN_PK, id)
            .await?
            .map(|e| RunRecord::from_entity(&e))
            .transpose()
    }

    /// Writes `run` back if nobody changed it since it was read; `false` when someone did.
    pub async fn save(&self, run: &mut RunRecord) -> Result<bool> {
        match self.table.update(&run.to_entity(), Some(&run.etag)).await {
            Ok(tag) => {
                run.etag = tag;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::Precondition => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<RunRecord>> {
        Ok(self.recent_before(None, limit).await?.0)
    }

    /// Up to `limit` runs started before run `before` (a run id; ids begin with their start
    /// time), newest first, and the id to pass for the next older page when there is one.
    pub async fn recent_before(&self, before: Option<&str>, limit: usize) -> Result<(Vec<RunRecord>, Option<String>)> {
        let mut filter = format!("PartitionKey eq '{RUN_PK}'");
        if let Some(b) = before {
            if !valid_run_id(b) {
                return Err(Error::invalid(format!("before: `{b}` is not a run id")));
            }
            filter.push_str(&format!(" and RowKey lt '{b}'"));
        }
        let rows = self.table.query_all(Some(&filter)).await?;
        let mut runs: Vec<RunRecord> = rows.iter().filter_map(|e| RunRecord::from_entity(e).ok()).collect();
        runs.sort_by(|a, b| (&b.id, &b.started_at).cmp(&(&a.id, &a.started_at)));
        let next = (limit > 0 && runs.len() > limit).then(|| runs[limit - 1].id.clone());
        runs.truncate(limit);
        Ok((runs, next))
    }

    /// The lister row.
    pub async fn lister(&self, id: &str) -> Result<Option<ListerState>> {
        Ok(self.table.get(id, "lister").await?.map(|e| ListerState {
            token: e.get_str("Token").map(str::to_string),
            page: e.get_i64("Page").unwrap_or(0).max(0) as u64,
            done: e.get_str("Done") == Some("true"),
            counters: Counters::read(&e),
            etag: e.etag.clone().unwrap_or_default(),
        }))
    }

    /// Counts many keys, each once per run, with one transaction per shard for up to 99 of
    /// them (their markers plus the shard's counter). For a single writer, the CLI, that is
    /// about one table request per hundred copies instead of two a copy. A key counted
    /// before (a replay) makes its group fall back to [`Self::record`], key by key.
    pub async fn record_many(&self, id: &str, items: &[Counted]) -> Result<()> {
        let mut shards: HashMap<String, Vec<(Entity, &Counted)>> = HashMap::new();
        for c in items {
            let m = count_marker(id, &c.key, c.tally, c.bytes, c.reason.as_deref());
            shards.entry(m.partition_key.clone()).or_default().push((m, c));
        }
        for (pk, group) in shards {
            for chunk in group.chunks(99) {
                self.record_chunk(id, &pk, chunk).await?;
            }
        }
        Ok(())
    }

    async fn record_chunk(&self, id: &str, pk: &str, chunk: &[(Entity, &Counted)]) -> Result<()> {
        let mut tries = self.table.retry().conflicts(format!("run {id}: counter shard {pk}"));
        loop {
            tries.next().await?;
            let current = self.table.get(pk, "counter").await?;
            let mut counters = current.as_ref().map(Counters::read).unwrap_or_default();
            for (_, c) in chunk {
                counters.add(c.tally, c.bytes);
            }
            let mut row = Entity::new(pk, "counter");
            counters.write(&mut row);
            let tag = current.as_ref().and_then(|c| c.etag.clone());
            let mut ops: Vec<BatchOp> = chunk.iter().map(|(m, _)| BatchOp::Insert(m)).collect();
            ops.push(match &tag {
                Some(t) => BatchOp::Update(&row, Some(t)),
                None => BatchOp::Insert(&row),
            });
            match self.table.transact(&ops).await? {
                BatchOutcome::Committed => return Ok(()),
                BatchOutcome::Rejected { status: 409, code } if code != "EntityAlreadyExists" || tag.is_some() => {
                    for (_, c) in chunk {
                        self.record(id, &c.key, c.tally, c.bytes, c.reason.as_deref()).await?;
                    }
                    return Ok(());
                }
                // The shard moved under us: read it again.
                BatchOutcome::Rejected { status: 409 | 412, .. } => {}
                BatchOutcome::Rejected { status, code } => {
                    return Err(Error::new(
                        crate::error::kind_from_status(status, Some(&code)),
                        format!("run {id}: counting {} keys: HTTP {status} {code}", chunk.len()),
                    ))
                }
            }
        }
    }

    /// Counts `key` under `tally` exactly once per run, however often it is replayed.
    /// Returns whether this call counted it.
    pub async fn record(&self, id: &str, key: &str, tally: Tally, bytes: u64, reason: Option<&str>) -> Result<bool> {
        let marker = count_marker(id, key, tally, bytes, reason);
        let pk = marker.partition_key.clone();
        // Set when the key was counted as "no transfer needed" by a twin delivery that lost
        // the race to this one's copy: the count moves over instead of being added.
        let mut upgrade: Option<(String, u64)> = None;
        let mut tries = self.table.retry().conflicts(format!("run {id}: counter shard {pk}"));
        loop {
            tries.next().await?;
            let current = self.table.get(&pk, "counter").await?;
            let mut counters = current.as_ref().map(Counters::read).unwrap_or_default();
            counters.add(tally, bytes);
            if let Some((_, old_bytes)) = &upgrade {
                counters.remove(Tally::NoTransferNeeded, *old_bytes);
            }
            let mut row = Entity::new(&pk, "counter");
            counters.write(&mut row);
            let tag = current.as_ref().and_then(|c| c.etag.clone());
            let op = match &tag {
                Some(t) => BatchOp::Update(&row, Some(t)),
                None => BatchOp::Insert(&row),
            };
            let mark = match &upgrade {
                Some((marker_tag, _)) => BatchOp::Update(&marker, Some(marker_tag)),
                None => BatchOp::Insert(&marker),
            };
            match self.table.transact(&[mark, op]).await? {
                BatchOutcome::Committed => return Ok(true),
                BatchOutcome::Rejected { status: 409, .. } | BatchOutcome::Rejected { status: 412, .. } => {
                    if let Some(existing) = self.table.get(&pk, &marker.row_key).await? {
                        let was = existing.get_str("Tally").unwrap_or_default();
                        if tally == Tally::Transferred && was == Tally::NoTransferNeeded.name() {
                            let old_bytes = existing.get_i64("Bytes").unwrap_or(0).max(0) as u64;
                            upgrade = Some((existing.etag.clone().unwrap_or_default(), old_bytes));
                            continue;
                        }
                        return Ok(false);
                    }
                    // The shard moved under us: read it again.
                }
                BatchOutcome::Rejected { status, code } => {
                    return Err(Error::new(
                        crate::error::kind_from_status(status, Some(&code)),
                        format!("run {id}: counting {key}: HTTP {status} {code}"),
                    ))
                }
            }
        }
    }

    /// The sum of every counter shard.
    pub async fn shard_counters(&self, id: &str) -> Result<Counters> {
        let filter = format!("PartitionKey ge '{id}~' and PartitionKey lt '{id}~~' and RowKey eq 'counter'");
        let mut c = Counters::default();
        for e in self.table.query_all(Some(&filter)).await? {
            c.merge(&Counters::read(&e));
        }
        Ok(c)
    }

    /// The first `n` failed keys with their reasons.
    pub async fn failures(&self, id: &str, n: u32) -> Result<Vec<(String, String)>> {
        let filter = format!("PartitionKey ge '{id}~' and PartitionKey lt '{id}~~' and Tally eq 'failed'");
        let (rows, _) = self.table.query(Some(&filter), Some(n), None).await?;
        Ok(rows
            .iter()
            .take(n as usize)
            .map(|e| {
                (
                    e.get_str("Key").unwrap_or_default().to_string(),
                    e.get_str("Reason").unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// Takes the lock for `key` for run `id`, as a lease of `lease` when the run is driven by
    /// one process that renews it ([`Self::renew`]), or for as long as the run runs when it is
    /// driven by queues (`None`).
    pub async fn lock(&self, key: &str, id: &str, lease: Option<Duration>) -> Result<Lock> {
        let mut e = Entity::new(LOCK_PK, key);
        e.set_str("RunId", id);
        if let Some(l) = lease {
            e.set_i64("LeaseUntil", unix_now() + l.as_secs() as i64);
        }
        let mut tries = self
            .table
            .retry()
            .conflicts(format!("run lock {key}: taking it for run {id}"));
        loop {
            tries.next().await?;
            match self.table.insert(&e).await {
                Ok(_) => return Ok(Lock::Taken),
                Err(err) if err.kind() == ErrorKind::Precondition => {}
                Err(err) => return Err(err),
            }
            let Some(held) = self.table.get(LOCK_PK, key).await? else {
                continue;
            };
            let holder = held.get_str("RunId").unwrap_or_default().to_string();
            let lease = held.get_i64("LeaseUntil");
            let lapsed = lease.is_some_and(|t| t < unix_now());
            let running = self.get(&holder).await?.is_some_and(|r| !r.state.is_final());
            // A current lease holds even for a run that ended (cancelled elsewhere): its
            // process may still be finishing copies, and releases the lease when it stops.
            if (running || lease.is_some()) && !lapsed {
                return Ok(Lock::Busy(holder));
            }
            // The holder ended (or vanished) without releasing, or its process stopped
            // renewing the lease: take the lock over.
            match self.table.update(&e, held.etag.as_deref()).await {
                Ok(_) if running => return Ok(Lock::TakenOver(holder)),
                Ok(_) => return Ok(Lock::Taken),
                Err(err) if err.kind() == ErrorKind::Precondition => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Extends run `id`'s lease on `key` to `lease` from now. `false` when the lock is no
    /// longer this run's (it lapsed and another run took it over).
    pub async fn renew(&self, key: &str, id: &str, lease: Duration) -> Result<bool> {
        let mut tries = self
            .table
            .retry()
            .conflicts(format!("run lock {key}: renewing run {id}'s lease"));
        loop {
            tries.next().await?;
            let Some(held) = self.table.get(LOCK_PK, key).await? else {
                return Ok(false);
            };
            if held.get_str("RunId") != Some(id) {
                return Ok(false);
            }
            let mut e = Entity::new(LOCK_PK, key);
            e.set_str("RunId", id)
                .set_i64("LeaseUntil", unix_now() + lease.as_secs() as i64);
            match self.table.update(&e, held.etag.as_deref()).await {
                Ok(_) => return Ok(true),
                Err(err) if err.kind() == ErrorKind::Precondition => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Releases `key` if run `id` still holds it.
    ///
    /// A lease (a lock its driving process renews) is released only with `leased`: by that
    /// process itself, once it has stopped writing. Anyone else ending the run (a cancel)
    /// leaves it to run out, so no second run starts while the first still writes.
    pub async fn unlock(&self, key: &str, id: &str, leased: bool) -> Result<()> {
        if let Some(held) = self.table.get(LOCK_PK, key).await? {
            if held.get_str("RunId") == Some(id) && (leased || held.get_i64("LeaseUntil").is_none()) {
                let r = self
                    .table
                    .delete(LOCK_PK, key, held.etag.as_deref().unwrap_or("*"))
                    .await;
                return crate::error::ok_if(r, ErrorKind::Precondition);
            }
        }
        Ok(())
    }
}

/// What taking a run lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    /// Taken for this run.
    Taken,
    /// This run (by id) holds it and is alive: still running, its lease (if any) current.
    Busy(String),
    /// Taken over from this run, still marked running, whose process stopped renewing its
    /// lease: the caller ends it.
    TakenOver(String),
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Run ids are `YYYYMMDDTHHMMSSZ-<8 hex>`: sortable, and safe as table keys.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    format!("{}-{:08x}", now.format(&f).unwrap_or_default(), rand::random::<u32>())
}

/// Whether `id` looks like a run id (anything else is not looked up).
pub fn valid_run_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
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

fn plan_prefix(page: u64) -> String {
    format!("plan~{page:012}~")
}

fn plan_row(page: u64, n: usize) -> String {
    format!("{}{n:03}", plan_prefix(page))
}

impl RunStore {
    /// The saved listing of page `page`, when an attempt at the page saved one.
    pub async fn page_plan(&self, id: &str, page: u64) -> Result<Option<PagePlan>> {
        let prefix = plan_prefix(page);
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
    pub async fn save_page_plan(&self, id: &str, page: u64, mut plan: PagePlan) -> Result<PagePlan> {
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
                let mut e = Entity::new(id, plan_row(page, n));
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
            BatchOutcome::Rejected { status: 409, .. } => self.page_plan(id, page).await?.ok_or_else(|| {
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

    /// Saves the lister row after page `page` if nobody changed it since it was read, and
    /// removes the page's listing (`rows` rows) in the same transaction, so a done page
    /// never leaves its listing behind and a listing is gone only once its page is saved.
    /// `false` when the row changed or the listing is gone (the caller reads why).
    pub async fn save_page(&self, id: &str, l: &ListerState, page: u64, rows: u32) -> Result<bool> {
        let row = lister_entity(id, l);
        let plan: Vec<Entity> = (0..rows as usize).map(|n| Entity::new(id, plan_row(page, n))).collect();
        let mut ops = vec![BatchOp::Update(&row, Some(&l.etag))];
        ops.extend(plan.iter().map(BatchOp::Delete));
        match self.table.transact(&ops).await? {
            BatchOutcome::Committed => Ok(true),
            BatchOutcome::Rejected { status: 404 | 412, .. } => Ok(false),
            BatchOutcome::Rejected { status, code } => Err(Error::new(
                crate::error::kind_from_status(status, Some(&code)),
                format!("run {id}: saving page {page}: HTTP {status} {code}"),
            )),
        }
    }

    /// Removes page `page`'s listing of `rows` rows (best effort).
    pub async fn drop_page_plan(&self, id: &str, page: u64, rows: u32) {
        let plan: Vec<Entity> = (0..rows as usize).map(|n| Entity::new(id, plan_row(page, n))).collect();
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

/// The lister row for `l`.
fn lister_entity(id: &str, l: &ListerState) -> Entity {
    let mut e = Entity::new(id, "lister");
    e.set_i64("Page", l.page as i64)
        .set_str("Done", if l.done { "true" } else { "false" });
    if let Some(t) = &l.token {
        e.set_str("Token", t);
    }
    l.counters.write(&mut e);
    e
}

/// One key's count for [`RunStore::record_many`].
#[derive(Debug, Clone)]
pub struct Counted {
    /// The key.
    pub key: String,
    /// Its counter.
    pub tally: Tally,
    /// Its bytes.
    pub bytes: u64,
    /// Why, for failures.
    pub reason: Option<String>,
}

/// The longest reason a row keeps, in characters: rows stay small (a run has one per key),
/// and far under the Table service's 64 KiB a property.
pub const MAX_REASON_CHARS: usize = 1000;

/// A reason as a row keeps it: redacted, and cut to [`MAX_REASON_CHARS`].
fn stored_reason(r: &str) -> String {
    let r = crate::redact::redact(r);
    match r.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &r[..cut]),
        None => r,
    }
}

/// A key's counter shard (partition) and its hash, which names its rows there.
pub(crate) fn key_rows(id: &str, key: &str) -> (String, String) {
    let h = Sha256::digest(key.as_bytes());
    (format!("{id}~{:02}", u32::from(h[0]) % SHARDS), hex::encode(&h[..20]))
}

/// The per-key marker that makes counting idempotent, in the key's counter shard.
fn count_marker(id: &str, key: &str, tally: Tally, bytes: u64, reason: Option<&str>) -> Entity {
    let (pk, hash) = key_rows(id, key);
    let mut marker = Entity::new(pk, format!("o{hash}"));
    marker
        .set_str("Key", key)
        .set_str("Tally", tally.name())
        .set_i64("Bytes", bytes as i64);
    if let Some(r) = reason {
        marker.set_str("Reason", stored_reason(r));
    }
    marker
}

impl RunStore {
    /// Notes that `key`'s copy failed an attempt that is not its last (`retrying` in the
    /// run's report until a final outcome is counted). Counts nothing. Insert-or-replace: the
    /// latest attempt's reason wins.
    pub async fn record_retrying(&self, id: &str, key: &str, reason: &str, attempt: u32) -> Result<()> {
        let (pk, hash) = key_rows(id, key);
        let mut row = Entity::new(pk, format!("r{hash}"));
        row.set_str("Key", key)
            .set_str("Tally", RETRYING)
            .set_str("Reason", stored_reason(reason))
            .set_i64("Attempt", attempt as i64);
        self.table.update(&row, None).await.map(|_| ())
    }

    /// The table, for the report's queries.
    pub(crate) fn table(&self) -> &TableClient {
        &self.table
    }
}

/// The `Tally` a retrying row carries (not a counter).
pub(crate) const RETRYING: &str = "retrying";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids() {
        let a = new_run_id();
        assert!(valid_run_id(&a), "{a}");
        assert_eq!(a.len(), 25);
        for bad in ["", "x", "../etc/passwd", "a'b-00000000", "run id with spaces"] {
            assert!(!valid_run_id(bad), "{bad}");
        }
    }
}
