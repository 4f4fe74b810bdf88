//! Draining SQS: each S3 record becomes one `copy-objects` message; the SQS message is deleted
//! only after all of its records were relayed. Used by the `DrainSqs` timer function and the
//! `watch` worker alike. While the Azure side cannot take messages, a circuit breaker stops
//! the receives, so an outage spends no message's receive count (decisions 97).
//!
//! - `relay`: the message one record becomes, and the pause before a failed one returns;
//! - `breaker`: the circuit breaker;
//! - `parked`: what a malformed body becomes on the rejects queue;
//! - `redrive`: dead-lettered events back to the events queue.

use std::time::{Duration, Instant};

use serde::Serialize;

mod breaker;
mod parked;
mod redrive;
mod relay;

pub use breaker::Breaker;
pub use parked::{parked_message, MAX_PARKED_BYTES};
pub use redrive::{redrive, RedriveStats};
pub use relay::{relay_message, retry_visibility};

use crate::app::copy_queues::CopyQueues;
use crate::aws::events::{self, EventRecord, Notification};
use crate::aws::sqs::{SqsMessage, SqsQueue};
use crate::azure::queue::WorkQueue;
use crate::error::Result;
use crate::state::checkpoint::CheckpointStore;
use breaker::{is_outage, Gate};
use parked::{cut_at, MAX_REASON_BYTES};

/// Counters of one drain, also emitted as one tracing event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainStats {
    /// SQS messages received.
    pub received: u64,
    /// Records relayed to `copy-objects`.
    pub relayed: u64,
    /// `s3:TestEvent` messages acknowledged.
    pub test_events: u64,
    /// Records with event names we do not act on, acknowledged.
    pub unknown_events: u64,
    /// Malformed bodies parked on the rejects queue.
    pub rejected: u64,
    /// SQS messages deleted.
    pub deleted: u64,
    /// Messages left on SQS because a relay or park failed (they come back).
    pub left_for_retry: u64,
    /// Deletes SQS refused (the message comes back; harmless duplicates).
    pub delete_failures: u64,
    /// Age of the oldest message received, in milliseconds.
    pub oldest_age_ms: u64,
    /// Probes of the Azure side while the breaker was open.
    pub probes: u64,
    /// Times the breaker opened (a relay met the Azure side down).
    pub breaker_trips: u64,
}

impl DrainStats {
    /// Adds another loop's counters.
    pub fn merge(&mut self, o: &DrainStats) {
        self.received += o.received;
        self.relayed += o.relayed;
        self.test_events += o.test_events;
        self.unknown_events += o.unknown_events;
        self.rejected += o.rejected;
        self.deleted += o.deleted;
        self.left_for_retry += o.left_for_retry;
        self.delete_failures += o.delete_failures;
        self.oldest_age_ms = self.oldest_age_ms.max(o.oldest_age_ms);
        self.probes += o.probes;
        self.breaker_trips += o.breaker_trips;
    }
}

/// Where relayed messages go and what they carry by default.
#[derive(Debug, Clone)]
pub struct Drainer {
    sqs: SqsQueue,
    copies: CopyQueues,
    rejects: WorkQueue,
    /// How long received messages stay hidden; extended while work runs long.
    pub visibility: Duration,
    /// Receive loops run at once (each takes up to ten messages per receive).
    pub receivers: usize,
    /// The first pause after a failed relay (see [`retry_visibility`]).
    pub retry_base: Duration,
    breaker: std::sync::Arc<Breaker>,
    /// A long-running worker's stop: no receive starts after it turns true.
    stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Where each receive reports whether SQS answered.
    probes: Option<std::sync::Arc<crate::app::probes::Probes>>,
}

/// The longest long poll of a receive.
const LONG_POLL: Duration = Duration::from_secs(20);

enum Verdict {
    Relay(Vec<EventRecord>),
    Ack,
    Reject(String),
}

impl Drainer {
    /// A drainer from `sqs` into `copies` (each key to its queue), parking malformed bodies
    /// on `rejects`, with `breaker` guarding the receives.
    pub fn new(sqs: SqsQueue, copies: impl Into<CopyQueues>, rejects: WorkQueue, breaker: Breaker) -> Self {
        Drainer {
            sqs,
            copies: copies.into(),
            rejects,
            visibility: Duration::from_secs(60),
            receivers: 4,
            retry_base: Duration::from_secs(60),
            breaker: std::sync::Arc::new(breaker),
            stop: None,
            probes: None,
        }
    }

    /// Reports each receive's answer (or its failure) as AWS's reachability.
    pub fn with_probes(mut self, probes: std::sync::Arc<crate::app::probes::Probes>) -> Self {
        self.probes = Some(probes);
        self
    }

    /// Ends every receive loop once `stop` turns true. A batch being relayed is finished; a
    /// long poll still waiting is cut short, so a stop does not wait out its 15 s. Should SQS
    /// have answered it in that instant, its messages come back after their visibility
    /// (`SYNC_SQS_VISIBILITY_SECS`): an event is late, never lost (decisions 129).
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    /// Awaits `work` unless the stop comes first (`None`).
    async fn unless_stopped<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        match self.stop.clone() {
            Some(mut stop) => tokio::select! {
                r = work => Some(r),
                _ = stop.wait_for(|s| *s) => None,
            },
            None => Some(work.await),
        }
    }

    /// The breaker's probe interval for a relay whose first retry pause is `retry_base`:
    /// that pause, at most 30 s (a message that met an outage waits one interval at most
    /// after the outage ends).
    pub fn probe_interval(retry_base: Duration) -> Duration {
        retry_base.clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Builds the drainer from the configuration and creates its Azure queues if needed.
    pub async fn from_config(cfg: &crate::config::Config) -> Result<Self> {
        let url = cfg.relay.queue_url.as_deref().ok_or_else(|| {
            crate::error::Error::invalid(
                "SYNC_SQS_QUEUE_URL is not set: it names the SQS queue with the bucket's events",
            )
        })?;
        let retry = cfg.retry;
        let auth = cfg.state.authorizer()?;
        let queue_auth = cfg.queue_account.authorizer()?;
        let copies = CopyQueues::open(cfg, &queue_auth, retry)?;
        let rejects = WorkQueue::new(&cfg.queue_account, &queue_auth, &cfg.queues.reject, retry)?;
        copies.create_if_missing().await?;
        rejects.create_if_missing().await?;
        // The probe asks once: its answer is whether the side is up now.
        let once = crate::retry::RetryPolicy {
            max_attempts: 1,
            ..retry
        };
        let probe = WorkQueue::new(&cfg.queue_account, &queue_auth, &cfg.queues.copy, once)?;
        let checkpoint = CheckpointStore::open(&cfg.state, &auth, &cfg.tables.checkpoint, retry)?;
        // Where the breaker's state is kept for the next invocation and other replicas.
        checkpoint.ensure().await?;
        let store = checkpoint.breaker(&format!("{}/{}", cfg.queue_account.name, cfg.queues.copy));
        let breaker = Breaker::new(probe, Some(store), Self::probe_interval(cfg.relay.retry_base));
        let mut d = Drainer::new(SqsQueue::new(&cfg.aws, url, retry).await, copies, rejects, breaker);
        d.retry_base = cfg.relay.retry_base;
        d.visibility = cfg.relay.visibility;
        Ok(d)
    }

    /// The SQS queue.
    pub fn sqs(&self) -> &SqsQueue {
        &self.sqs
    }

    /// Receives and relays until `budget` is spent, or — with `stop_when_idle` — until a
    /// receive comes back empty. No receive starts that could outlast the budget.
    pub async fn drain(&self, budget: Duration, stop_when_idle: bool) -> Result<DrainStats> {
        let started = Instant::now();
        let loops = futures::future::join_all(
            (0..self.receivers.max(1)).map(|_| self.receive_loop(started, budget, stop_when_idle)),
        )
        .await;
        let mut stats = DrainStats::default();
        let mut first_error = None;
        for (s, err) in loops {
            stats.merge(&s);
            first_error = first_error.or(err);
        }
        // Only an error when nothing could be received at all.
        if let (Some(e), 0) = (first_error, stats.received) {
            return Err(e);
        }
        tracing::info!(
            outcome = "drained",
            received = stats.received,
            relayed = stats.relayed,
            test_events = stats.test_events,
            unknown_events = stats.unknown_events,
            rejected = stats.rejected,
            deleted = stats.deleted,
            left_for_retry = stats.left_for_retry,
            delete_failures = stats.delete_failures,
            oldest_age_ms = stats.oldest_age_ms,
            duration_ms = started.elapsed().as_millis() as u64,
            "sqs drain finished"
        );
        Ok(stats)
    }

    /// One receive loop; its counters survive an error that ends it.
    async fn receive_loop(
        &self,
        started: Instant,
        budget: Duration,
        stop_when_idle: bool,
    ) -> (DrainStats, Option<crate::error::Error>) {
        let mut stats = DrainStats::default();
        loop {
            let left = budget.saturating_sub(started.elapsed());
            // Keep room to relay and delete what a receive returns.
            if left < Duration::from_secs(3) || self.stopped() {
                return (stats, None);
            }
            if let Gate::Open(wait) = self.breaker.gate(&mut stats.probes).await {
                // Nothing is received while the Azure side is down.
                if stop_when_idle || wait + Duration::from_secs(3) > left {
                    return (stats, None);
                }
                // The loop's head ends it if the stop came.
                self.unless_stopped(tokio::time::sleep(wait)).await;
                continue;
            }
            // A poll shorter than the probe interval: one that started before the breaker
            // opened ends before a message that met the outage shows again.
            let poll = if stop_when_idle {
                Duration::from_secs(2)
            } else {
                LONG_POLL.min(self.breaker.interval / 2).max(Duration::from_secs(1))
            };
            let wait = (left - Duration::from_secs(2)).min(poll);
            let Some(received) = self.unless_stopped(self.sqs.receive(10, wait, self.visibility)).await else {
                return (stats, None);
            };
            if let Some(p) = &self.probes {
                p.reached(crate::app::probes::Side::Aws, received.is_ok());
            }
            let batch = match received {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "sqs receive failed");
                    return (stats, Some(e));
                }
            };
            if batch.is_empty() {
                if stop_when_idle {
                    return (stats, None);
                }
                continue;
            }
            self.handle_batch(&batch, &mut stats).await;
        }
    }

    /// Relays one received batch; deletes what is done. Never fails as a whole: what could
    /// not be done stays on SQS and comes back.
    pub async fn handle_batch(&self, batch: &[SqsMessage], stats: &mut DrainStats) {
        stats.received += batch.len() as u64;
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        for m in batch {
            if let Some(sent) = m.sent_ms {
                stats.oldest_age_ms = stats.oldest_age_ms.max((now_ms - sent).max(0) as u64);
            }
        }
        // Work that runs long keeps its messages hidden.
        let heartbeat = {
            let sqs = self.sqs.clone();
            let msgs: Vec<SqsMessage> = batch.to_vec();
            let vis = self.visibility;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(vis / 2).await;
                    let refs: Vec<&SqsMessage> = msgs.iter().collect();
                    if let Err(e) = sqs.extend_visibility(&refs, vis).await {
                        tracing::warn!(error = %e, "could not extend SQS visibility");
                    }
                }
            })
        };
        let results = futures::future::join_all(batch.iter().map(|m| self.handle_one(m))).await;
        heartbeat.abort();
        let mut done = Vec::new();
        let mut retry = Vec::new();
        let mut outage = Vec::new();
        for (m, r) in batch.iter().zip(results) {
            match r {
                Ok(counts) => {
                    stats.relayed += counts.relayed;
                    stats.test_events += counts.test_events;
                    stats.unknown_events += counts.unknown_events;
                    stats.rejected += counts.rejected;
                    done.push(m);
                }
                // The Azure side is down: the message is not to blame, so it gets no pause of
                // its own; it shows again after one probe interval, and is received only once
                // the breaker finds the side back.
                Err(e) if is_outage(&e) => {
                    stats.left_for_retry += 1;
                    if self.breaker.trip(&e).await {
                        stats.breaker_trips += 1;
                    }
                    outage.push(m);
                    tracing::warn!(message_id = %m.id, outcome = "left_for_retry", receive_count = m.receive_count, pause_s = self.breaker.interval.as_secs(), error = %e, "relay failed: the Azure side is down; SQS will redeliver");
                }
                Err(e) => {
                    stats.left_for_retry += 1;
                    retry.push(m);
                    let pause_s = retry_visibility(self.retry_base, m.receive_count).as_secs();
                    tracing::warn!(message_id = %m.id, outcome = "left_for_retry", receive_count = m.receive_count, pause_s, error = %e, "relay failed; SQS will redeliver");
                }
            }
        }
        if !outage.is_empty() {
            if let Err(e) = self.sqs.extend_visibility(&outage, self.breaker.interval).await {
                tracing::warn!(error = %e, "could not set the SQS pause; the message returns after its lease");
            }
        }
        // A failed relay comes back after a pause that grows with its receive count.
        let mut by_pause: std::collections::BTreeMap<Duration, Vec<&SqsMessage>> = Default::default();
        for m in retry {
            by_pause
                .entry(retry_visibility(self.retry_base, m.receive_count))
                .or_default()
                .push(m);
        }
        for (pause, msgs) in by_pause {
            if let Err(e) = self.sqs.extend_visibility(&msgs, pause).await {
                tracing::warn!(error = %e, "could not set the SQS retry pause; the message returns after its lease");
            }
        }
        match self.sqs.delete_batch(&done).await {
            Ok(failed) => {
                stats.delete_failures += failed.len() as u64;
                stats.deleted += (done.len() - failed.len()) as u64;
            }
            Err(e) => {
                stats.delete_failures += done.len() as u64;
                tracing::warn!(error = %e, "sqs delete failed; messages will be redelivered");
            }
        }
    }

    async fn handle_one(&self, m: &SqsMessage) -> Result<DrainStats> {
        let mut c = DrainStats::default();
        let verdict = match events::parse(&m.body) {
            Err(reason) => Verdict::Reject(reason),
            Ok(Notification::TestEvent) => {
                c.test_events += 1;
                Verdict::Ack
            }
            Ok(Notification::Records(records)) => {
                let (relevant, unknown): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| r.kind.is_relevant());
                for r in &unknown {
                    tracing::info!(bucket = %r.bucket, key = %r.key, event = %r.name, outcome = "unknown_event", "event name not acted on");
                }
                c.unknown_events += unknown.len() as u64;
                Verdict::Relay(relevant)
            }
        };
        match verdict {
            Verdict::Ack => {}
            Verdict::Relay(records) => {
                for r in records {
                    self.copies.send_one(&relay_message(&r), None).await?;
                    c.relayed += 1;
                }
            }
            Verdict::Reject(reason) => {
                let parked = parked_message(m, &reason);
                self.rejects.send(&parked, None).await?;
                let reason = cut_at(&reason, MAX_REASON_BYTES);
                tracing::warn!(message_id = %m.id, outcome = "rejected", reason = %reason, bytes = m.body.len(), queue = self.rejects.name(), "malformed SQS message parked");
                c.rejected += 1;
            }
        }
        Ok(c)
    }
}
