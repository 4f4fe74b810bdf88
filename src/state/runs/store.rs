//! The `runs` table: one row per run, one lister row per run, sharded counter rows, per-object
//! "counted" markers, and one lock row per source/target pair.
//!
//! | PartitionKey   | RowKey          | What                                                |
//! |----------------|-----------------|-----------------------------------------------------|
//! | `run`          | run id          | spec, state, phase, times, notification state       |
//! | `<id>`         | `lister`, `lister~<nnnn>` | a listing shard: its key range, token, page, counters |
//! | `<id>`         | `plan~<page>~<n>`, `plan~s<nnnn>~<page>~<n>` | a page's listing, while the page is in progress |
//! | `<id>~<nn>`    | `counter`       | counters from copies whose key hashes to shard nn   |
//! | `<id>~<nn>`    | `o<hash>`       | marker: this key's outcome was counted, with reason |
//! | `<id>~<nn>`    | `r<hash>`       | this key's copy failed an attempt and will retry    |
//! | `lock`         | lock key        | the run working on a source/target pair             |
//!
//! A copy's marker and its shard's counter share a partition, so both are written in one
//! entity-group transaction: a replayed copy hits the existing marker (409) and counts
//! nothing, and concurrent copies contend on 16 rows instead of one.
//!
//! This file holds the run row; `pages` the listing shards' rows and page plans, `counting` the
//! counters and markers, `lock` the lock row.

use super::listing::ListerState;
use crate::azure::auth::Authorizer;
use crate::azure::table::{BatchOp, BatchOutcome, Entity, TableClient};
use crate::config::azure::StorageAccount;
use crate::error::{Error, ErrorKind, Result};
use crate::messages::run_spec::RunSpec;
use crate::messages::webhook::WebhookRef;
use crate::model::{NotifyState, Trigger};
use crate::retry::RetryPolicy;
use crate::state::unix_now;

const RUN_PK: &str = "run";

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
    /// Webhook sends claimed so far (each claim is an attempt, whether its sender reported
    /// back or died).
    pub notify_attempts: u32,
    /// Lock row held, if any.
    pub lock_key: Option<String>,
    /// Settled copies at the last check, and when that number last moved.
    pub last_settled: u64,
    /// When a check last looked at the run while it was running (unix seconds; 0 before
    /// the first): how the sweep tells a check chain that stopped.
    pub checked_at: i64,
    /// The lease (seconds) of the process that drives the run, which marks it alive every
    /// third of it; `None` for a run driven by queues.
    pub lease_secs: Option<u64>,
    /// RFC 3339.
    pub last_progress_at: String,
    /// Mirror mode: blobs found with no source object (dry runs count them here too).
    pub delete_candidates: u64,
    /// Mirror mode: where the page-by-page listing of the target stands (the next page's
    /// marker; `None` before the first page and after the last).
    pub prune_marker: Option<String>,
    /// Mirror mode: every page of the target was listed, and the candidates are known.
    pub prune_listed: bool,
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
            .set_i64("NotifyAttempts", i64::from(self.notify_attempts))
            .set_i64("LastSettled", self.last_settled as i64)
            .set_i64("CheckedAt", self.checked_at)
            .set_i64("LeaseSecs", self.lease_secs.map_or(0, |s| s as i64))
            .set_str("LastProgressAt", &self.last_progress_at)
            .set_i64("DeleteCandidates", self.delete_candidates as i64)
            .set_str("PruneListed", if self.prune_listed { "true" } else { "false" });
        for (k, v) in [
            ("Notify", self.notify.as_ref().map(ToString::to_string)),
            ("Reason", self.reason.clone()),
            ("EndedAt", self.ended_at.clone()),
            ("NotifyError", self.notify_error.clone()),
            ("NotifyClaimedAt", self.notify_claimed_at.clone()),
            ("LockKey", self.lock_key.clone()),
            ("PruneMarker", self.prune_marker.clone()),
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
            notify_attempts: e.get_i64("NotifyAttempts").unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
            lock_key: s("LockKey"),
            last_settled: e.get_i64("LastSettled").unwrap_or(0).max(0) as u64,
            checked_at: e.get_i64("CheckedAt").unwrap_or(0),
            lease_secs: e.get_i64("LeaseSecs").filter(|s| *s > 0).map(|s| s as u64),
            last_progress_at: s("LastProgressAt").unwrap_or_default(),
            delete_candidates: e.get_i64("DeleteCandidates").unwrap_or(0).max(0) as u64,
            prune_marker: s("PruneMarker"),
            prune_listed: e.get_str("PruneListed") == Some("true"),
            etag: e.etag.clone().unwrap_or_default(),
        })
    }
}

/// The `runs` table.
#[derive(Debug, Clone)]
pub struct RunStore {
    pub(super) table: TableClient,
}

impl RunStore {
    /// A store over `table`.
    pub fn new(table: TableClient) -> Self {
        RunStore { table }
    }

    /// The runs table `name` of `account` (no network calls).
    pub fn open(account: &StorageAccount, auth: &Authorizer, name: &str, retry: RetryPolicy) -> Result<Self> {
        Ok(RunStore::new(TableClient::new(account, auth, name, retry)?))
    }

    /// Creates the table if needed.
    pub async fn ensure(&self) -> Result<()> {
        self.table.create_if_missing().await
    }

    /// Inserts a new run row and the lister row of its first shard, which holds the whole
    /// key space and the run's other shards to split off.
    pub async fn insert(&self, run: &mut RunRecord) -> Result<()> {
        run.etag = self.table.insert(&run.to_entity()).await?;
        let first = ListerState {
            spare: run.spec.shards() - 1,
            updated_at: unix_now(),
            ..ListerState::default()
        };
        self.table
            .update(&super::listing::lister_entity(&run.id, &first), None)
            .await?;
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
    ///
    /// Azure returns rows in ascending key order only, so the newest rows are found by
    /// reading windows of start time backwards from `before` (a minute, then four times
    /// longer each step) until more than `limit` runs are in hand or the oldest run is
    /// reached. A page reads about the runs of its own time span, not every older run.
    pub async fn recent_before(&self, before: Option<&str>, limit: usize) -> Result<(Vec<RunRecord>, Option<String>)> {
        let below = |hi: Option<&str>| {
            let mut f = format!("PartitionKey eq '{RUN_PK}'");
            if let Some(h) = hi {
                f.push_str(&format!(" and RowKey lt '{h}'"));
            }
            f
        };
        if let Some(b) = before {
            if !valid_run_id(b) {
                return Err(Error::invalid(format!("before: `{b}` is not a run id")));
            }
        }
        let mut runs: Vec<RunRecord> = Vec::new();
        // The oldest run below `before`: when a window reaches it, there is nothing older.
        // Azure may answer a page with no rows and a continuation, so follow it.
        let mut cont = None;
        let first = loop {
            let (rows, next) = self.table.query(Some(&below(before)), Some(1), cont.as_ref()).await?;
            match next {
                Some(c) if rows.is_empty() => cont = Some(c),
                _ => break rows,
            }
        };
        let Some(oldest) = first.first().map(|e| e.row_key.clone()) else {
            return Ok((Vec::new(), None));
        };
        // A `before` that does not begin with a time (no run id made here does that) reads
        // everything below it, as one window.
        let start = match before {
            Some(b) => id_time(b),
            None => Some(time::OffsetDateTime::now_utc()),
        };
        let mut hi = before.map(str::to_string);
        let mut window = time::Duration::minutes(1);
        loop {
            // Before year 0 a prefix would start with `-` and no longer sort by time, so
            // the last window then takes everything below.
            let lo = start
                .and_then(|t| t.checked_sub(window))
                .filter(|t| t.year() >= 0)
                .map(id_prefix);
            let mut f = below(hi.as_deref());
            if let Some(lo) = &lo {
                f.push_str(&format!(" and RowKey ge '{lo}'"));
            }
            let rows = self.table.query_all(Some(&f)).await?;
            // Only rows that read as runs count towards the page.
            runs.extend(rows.iter().filter_map(|e| RunRecord::from_entity(e).ok()));
            match lo {
                Some(lo) if runs.len() <= limit && lo > oldest => {
                    hi = Some(lo);
                    window = window.saturating_mul(4);
                }
                _ => break,
            }
        }
        runs.sort_by(|a, b| (&b.id, &b.started_at).cmp(&(&a.id, &a.started_at)));
        let next = (limit > 0 && runs.len() > limit).then(|| runs[limit - 1].id.clone());
        runs.truncate(limit);
        Ok((runs, next))
    }

    /// Every run still marked running, whatever its age (the sweep's list).
    pub async fn running(&self) -> Result<Vec<RunRecord>> {
        let filter =
            crate::azure::table::Filter::eq("PartitionKey", RUN_PK).and("State", "eq", RunState::Running.as_str());
        let rows = match self.table.query_all(Some(filter.as_str())).await {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            r => r?,
        };
        Ok(rows.iter().filter_map(|e| RunRecord::from_entity(e).ok()).collect())
    }

    /// Marks run `id` as alive now (its driving process is still working on it), without
    /// reading it: a merge of `CheckedAt` only.
    pub async fn touch(&self, id: &str) -> Result<()> {
        let mut e = Entity::new(RUN_PK, id);
        e.set_i64("CheckedAt", unix_now());
        self.table.merge(&e, Some("*")).await.map(|_| ())
    }

    /// Inserts or replaces `rows` (all in one partition), a transaction per hundred: writing
    /// them again changes nothing. `what` names them in an error.
    pub(super) async fn upsert_rows(&self, id: &str, what: &str, rows: &[Entity]) -> Result<()> {
        for chunk in rows.chunks(100) {
            let ops: Vec<BatchOp> = chunk.iter().map(|e| BatchOp::Update(e, None)).collect();
            if let BatchOutcome::Rejected { status, code } = self.table.transact(&ops).await? {
                return Err(Error::new(
                    crate::error::kind_from_status(status, Some(&code)),
                    format!("run {id}: writing {} {what}: HTTP {status} {code}", chunk.len()),
                ));
            }
        }
        Ok(())
    }

    /// The attempts of one of this store's If-Match loops (see [`RetryPolicy::conflicts`]).
    ///
    /// [`RetryPolicy::conflicts`]: crate::retry::RetryPolicy::conflicts
    pub(super) fn conflicts(&self, what: String) -> crate::retry::Conflicts {
        self.table.retry().conflicts(what)
    }

    /// The table, for the report's queries.
    pub(crate) fn table(&self) -> &TableClient {
        &self.table
    }
}

/// Run ids are `YYYYMMDDTHHMMSSZ-<8 hex>`: sortable, and safe as table keys.
pub fn new_run_id() -> String {
    format!(
        "{}-{:08x}",
        id_prefix(time::OffsetDateTime::now_utc()),
        rand::random::<u32>()
    )
}

const ID_TIME: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");

/// The start time a run id begins with, when it does.
fn id_time(id: &str) -> Option<time::OffsetDateTime> {
    let t = time::PrimitiveDateTime::parse(id.get(..16)?, ID_TIME).ok()?;
    Some(t.assume_utc())
}

/// The run id prefix of time `t`: every id of a run started at or after `t` sorts at or
/// after it.
fn id_prefix(t: time::OffsetDateTime) -> String {
    t.format(ID_TIME).unwrap_or_default()
}

/// Whether `id` looks like a run id (anything else is not looked up).
pub fn valid_run_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

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
        let t = id_time(&a).expect("a run id begins with its start time");
        assert_eq!(id_prefix(t), a[..16]);
        assert_eq!(id_time("manual-run-0001"), None);
    }
}
