//! Bulk runs: start, cancel, count, report. Shared by the HTTP functions, the timer, the
//! queue-triggered lister and the CLI, so every entry point uses the same run model.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::copy_queues::CopyQueues;
use super::summary::RunSummary;
use crate::azure::queue::WorkQueue;
use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::messages::run_spec::RunSpec;
use crate::messages::webhook::WebhookRef;
use crate::messages::ListMessage;
use crate::model::{NotifyState, Trigger};
use crate::redact::ExposeSecret;
use crate::state::checkpoint::now_rfc3339;
use crate::state::runs::counters::Tally;
use crate::state::runs::lock::Lock;
use crate::state::runs::store::{new_run_id, Phase, RunRecord, RunState, RunStore};

/// Failures listed in a run summary.
pub const LISTED_FAILURES: u32 = 20;

/// Outcome of a start request.
#[derive(Debug)]
pub enum Started {
    /// Created.
    Created(Box<RunRecord>),
    /// Another run for the same source and target is still running.
    Busy(String),
}

/// Everything a run needs.
pub struct RunService {
    /// The engine (S3, checkpoint, blob targets).
    pub engine: Arc<Engine>,
    /// The `runs` table.
    pub store: RunStore,
    /// `copy-objects`, and its siblings when `SYNC_COPY_QUEUES` is above one.
    pub copy_queues: CopyQueues,
    /// `list-pages`.
    pub list_queue: WorkQueue,
    /// Configuration.
    pub config: Arc<Config>,
    cancelled: Mutex<HashMap<String, (Instant, bool)>>,
}

impl std::fmt::Debug for RunService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunService").finish_non_exhaustive()
    }
}

impl RunService {
    /// Builds the service and creates its table and queues if needed (the Function App).
    pub async fn new(config: Arc<Config>, engine: Arc<Engine>) -> Result<Self> {
        let svc = Self::local(config, engine).await?;
        svc.copy_queues.create_if_missing().await?;
        svc.list_queue.create_if_missing().await?;
        Ok(svc)
    }

    /// Builds the service for in-process runs (CLI): only the runs table is needed, so an
    /// identity without queue rights can run `copy`, `sync` and `status`.
    pub async fn local(config: Arc<Config>, engine: Arc<Engine>) -> Result<Self> {
        let retry = config.retry;
        let auth = config.state.authorizer()?;
        let store = RunStore::open(&config.state, &auth, &config.tables.runs, retry)?;
        let queue_auth = config.queue_account.authorizer()?;
        let copy_queues = CopyQueues::open(&config, &queue_auth, retry)?;
        let list_queue = WorkQueue::new(&config.queue_account, &queue_auth, &config.queues.list, retry)?;
        store.ensure().await?;
        Ok(RunService {
            engine,
            store,
            copy_queues,
            list_queue,
            config,
            cancelled: Mutex::new(HashMap::new()),
        })
    }

    /// `account/container` of the run's target, as the checkpoint names it.
    pub fn target_id(&self, spec: &RunSpec) -> Result<String> {
        Ok(self.engine.target(&spec.target.container)?.id())
    }

    /// Creates a run (taking the source/target lock unless it is a dry run; as a lease when
    /// one process drives the run and renews it). The caller starts its listing.
    pub async fn start(
        &self,
        spec: RunSpec,
        notify: Option<WebhookRef>,
        trigger: Trigger,
        lease: Option<Duration>,
    ) -> Result<Started> {
        let target = self.engine.target(&spec.target.container)?;
        if let Some(n) = &notify {
            // Where the webhook would go, before anything is created (a 400 that says why).
            let secret = n
                .resolve(&self.config)
                .map_err(|w| Error::invalid(format!("notify: {w}")))?;
            let u = url::Url::parse(secret.expose_secret())
                .map_err(|_| Error::invalid(format!("notify: app setting `{}` is not a URL", n.setting())))?;
            super::webhook::vet(&u, &self.config.runs.notify_allow_hosts)
                .await
                .map_err(|e| Error::invalid(e.message().to_string()))?;
        }
        let id = new_run_id();
        // A verification changes nothing (its repairs are copies like an event's), so it
        // neither waits for nor holds the pair's lock, and creates no container.
        let read_only = spec.dry_run || spec.verify.is_some();
        let lock_key = if read_only {
            None
        } else {
            let key = spec.lock_key(&target.id());
            match self.store.lock(&key, &id, lease).await? {
                Lock::Taken => {}
                Lock::Busy(holder) => return Ok(Started::Busy(holder)),
                Lock::TakenOver(previous) => {
                    let reason =
                        format!("abandoned: the process running it stopped renewing its lock; run {id} took over");
                    tracing::warn!(run_id = %previous, next = %id, outcome = "abandoned", "run lock lease lapsed; taking over");
                    end(self, &previous, RunState::Cancelled, Some(reason)).await?;
                }
            }
            Some(key)
        };
        if !read_only {
            target.create_if_missing().await?;
        }
        let now = now_rfc3339();
        let mut run = RunRecord {
            id,
            spec,
            notify,
            trigger: Some(trigger),
            state: RunState::Running,
            phase: Phase::Listing,
            reason: None,
            started_at: now.clone(),
            ended_at: None,
            notified: crate::model::NotifyState::None,
            notify_claimed_at: None,
            notify_error: None,
            notify_attempts: 0,
            lock_key,
            last_settled: 0,
            checked_at: 0,
            lease_secs: lease.map(|l| l.as_secs()),
            last_progress_at: now,
            delete_candidates: 0,
            prune_marker: None,
            prune_listed: false,
            etag: String::new(),
        };
        self.store.insert(&mut run).await?;
        tracing::info!(
            run_id = %run.id, bucket = %run.spec.source.bucket, container = %run.spec.target.container,
            trigger = %trigger, dry_run = run.spec.dry_run, outcome = "run_started", "run started"
        );
        Ok(Started::Created(Box::new(run)))
    }

    /// Starts a run and queues its first page (the Functions entry points).
    pub async fn start_queued(&self, spec: RunSpec, notify: Option<WebhookRef>, trigger: Trigger) -> Result<Started> {
        let started = self.start(spec, notify, trigger, None).await?;
        if let Started::Created(run) = &started {
            let first = match run.spec.verify {
                Some(_) => ListMessage::Verify { run_id: run.id.clone() },
                None => ListMessage::Page {
                    run_id: run.id.clone(),
                    shard: 0,
                    page: 0,
                },
            };
            if let Err(e) = self.enqueue(&first, None).await {
                // Without its first page the run would wait forever: end it now, clearly.
                let reason = format!("could not queue the first listing page: {}", e.message());
                end(self, run.id.as_str(), RunState::Failed, Some(reason)).await?;
                return Err(e);
            }
        }
        Ok(started)
    }

    /// Queues a `list-pages` message.
    pub async fn enqueue(&self, msg: &ListMessage, delay: Option<Duration>) -> Result<()> {
        let text = serde_json::to_string(msg).expect("serializable");
        self.list_queue.send(&text, delay).await
    }

    /// Cancels a running run. `Ok(None)`: no such run; `Err(Precondition)` when it ended.
    pub async fn cancel(&self, id: &str, requested_by: &str) -> Result<Option<RunRecord>> {
        let mut tries = self.config.retry.conflicts(format!("run {id}: cancelling"));
        loop {
            tries.next().await?;
            let Some(mut run) = self.store.get(id).await? else {
                return Ok(None);
            };
            if run.state.is_final() {
                return Err(Error::new(
                    crate::error::ErrorKind::Precondition,
                    format!("run {id} already ended ({})", run.state.as_str()),
                ));
            }
            mark_ended(&mut run, RunState::Cancelled, Some("cancelled by request".into()));
            if self.store.save(&mut run).await? {
                crate::audit::record(
                    crate::audit::Action::CancelRun,
                    requested_by,
                    id,
                    &format!(
                        "run {id} (s3://{} -> {})",
                        run.spec.source.bucket, run.spec.target.container
                    ),
                    "cancelled by request",
                );
                self.cancelled
                    .lock()
                    .expect("lock")
                    .insert(id.into(), (Instant::now(), true));
                after_end(self, &run).await;
                return Ok(Some(run));
            }
        }
    }

    /// Whether run `id` was cancelled (cached for a few seconds: asked once per copy).
    pub async fn is_cancelled(&self, id: &str) -> Result<bool> {
        if let Some((at, v)) = self.cancelled.lock().expect("lock").get(id) {
            if *v || at.elapsed() < Duration::from_secs(5) {
                return Ok(*v);
            }
        }
        let v = self
            .store
            .get(id)
            .await?
            .is_some_and(|r| r.state == RunState::Cancelled);
        self.cancelled
            .lock()
            .expect("lock")
            .insert(id.into(), (Instant::now(), v));
        Ok(v)
    }

    /// Everything a status reader wants about a run: state, counters, first failures.
    pub async fn summary(&self, id: &str) -> Result<Option<RunSummary>> {
        let Some(run) = self.store.get(id).await? else {
            return Ok(None);
        };
        self.summary_of(&run).await.map(Some)
    }

    /// The summary of a run row already read (its counters and failures are read here).
    pub async fn summary_of(&self, run: &RunRecord) -> Result<RunSummary> {
        let listing = self.store.listing(&run.id).await?.unwrap_or_default();
        let shards = self.store.shard_counters(&run.id).await?;
        let failures = self.store.failures(&run.id, LISTED_FAILURES).await?;
        let mut summary = RunSummary::of(run, &listing.counters(), &shards, failures);
        if run.spec.verify.is_some() {
            let place = self.store.verify_place(&run.id).await?.unwrap_or_default();
            summary.verify = Some(super::summary::VerifyProgress::of(&place)?);
        }
        Ok(summary)
    }
}

/// How long ago `rfc3339` was (zero when unreadable).
pub(super) fn since(rfc3339: &str) -> Duration {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| (time::OffsetDateTime::now_utc() - t).unsigned_abs())
        .unwrap_or_default()
}

/// Sets the ended fields of `run` (not saved).
pub fn mark_ended(run: &mut RunRecord, state: RunState, reason: Option<String>) {
    run.state = state;
    run.phase = Phase::Done;
    run.reason = reason;
    run.ended_at = Some(now_rfc3339());
    run.notified = if run.notify.is_some() {
        NotifyState::Pending
    } else {
        NotifyState::None
    };
}

/// Ends run `id` with `state` unless it already ended. Only the writer whose If-Match
/// update lands ends it, so a run ends exactly once.
pub async fn end(svc: &RunService, id: &str, state: RunState, reason: Option<String>) -> Result<()> {
    let mut tries = svc.config.retry.conflicts(format!("run {id}: recording its end"));
    loop {
        tries.next().await?;
        let Some(mut run) = svc.store.get(id).await? else {
            return Ok(());
        };
        if run.state.is_final() {
            return Ok(());
        }
        mark_ended(&mut run, state, reason.clone());
        if svc.store.save(&mut run).await? {
            after_end(svc, &run).await;
            return Ok(());
        }
    }
}

/// After a run ended: release its lock and emit the `run_finished` event.
pub async fn after_end(svc: &RunService, run: &RunRecord) {
    if let Some(key) = &run.lock_key {
        if let Err(e) = svc.store.unlock(key, &run.id, false).await {
            tracing::warn!(run_id = %run.id, error = %e, "could not release the run lock; the next start takes it over");
        }
    }
    svc.store.drop_page_plans(&run.id).await;
    let listing = svc.store.listing(&run.id).await.ok().flatten().unwrap_or_default();
    let copies = svc.store.shard_counters(&run.id).await.unwrap_or_default();
    let mut all = listing.counters();
    all.merge(&copies);
    tracing::info!(
        run_id = %run.id, state = run.state.as_str(), reason = run.reason.as_deref().unwrap_or(""),
        bucket = %run.spec.source.bucket, container = %run.spec.target.container,
        scanned = all.objects(Tally::Scanned), transferred = all.objects(Tally::Transferred),
        bytes = all.bytes(Tally::Transferred), failed = all.objects(Tally::Failed),
        deleted = all.objects(Tally::Pruned), duration_ms = since(&run.started_at).as_millis() as u64,
        outcome = "run_finished", "run finished"
    );
}
