//! Draining SQS: each S3 record becomes one `copy-objects` message; the SQS message is deleted
//! only after all of its records were relayed. Used by the `DrainSqs` timer function and the
//! `watch` worker alike.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::error::Result;
use crate::source::events::{self, EventRecord, Notification};
use crate::source::sqs::{SqsMessage, SqsQueue};
use crate::target::queue::WorkQueue;

/// How long a message whose relay failed stays hidden before SQS redelivers it.
const RETRY_VISIBILITY: Duration = Duration::from_secs(3);
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
    }
}

/// Where relayed messages go and what they carry by default.
#[derive(Debug, Clone)]
pub struct Drainer {
    sqs: SqsQueue,
    copy_queue: WorkQueue,
    rejects: WorkQueue,
    /// How long received messages stay hidden; extended while work runs long.
    pub visibility: Duration,
    /// Receive loops run at once (each takes up to ten messages per receive).
    pub receivers: usize,
}

enum Verdict {
    Relay(Vec<EventRecord>),
    Ack,
    Reject(String),
}

impl Drainer {
    /// A drainer from `sqs` into `copy_queue`, parking malformed bodies on `rejects`.
    pub fn new(sqs: SqsQueue, copy_queue: WorkQueue, rejects: WorkQueue) -> Self {
        Drainer {
            sqs,
            copy_queue,
            rejects,
            visibility: Duration::from_secs(60),
            receivers: 4,
        }
    }

    /// Builds the drainer from the configuration and creates its Azure queues if needed.
    pub async fn from_config(cfg: &crate::config::Config) -> Result<Self> {
        let url = cfg.sqs_queue_url.as_deref().ok_or_else(|| {
            crate::error::Error::invalid(
                "SYNC_SQS_QUEUE_URL is not set: it names the SQS queue with the bucket's events",
            )
        })?;
        let retry = crate::retry::RetryPolicy::default();
        let auth = cfg.azure.authorizer()?;
        let copy_queue = WorkQueue::new(&cfg.azure, &auth, &cfg.copy_queue, retry)?;
        let rejects = WorkQueue::new(&cfg.azure, &auth, &cfg.reject_queue, retry)?;
        copy_queue.create_if_missing().await?;
        rejects.create_if_missing().await?;
        Ok(Drainer::new(
            SqsQueue::new(&cfg.aws, url, retry).await,
            copy_queue,
            rejects,
        ))
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
            if left < Duration::from_secs(3) {
                return (stats, None);
            }
            let wait = (left - Duration::from_secs(2)).min(Duration::from_secs(if stop_when_idle { 2 } else { 20 }));
            let batch = match self.sqs.receive(10, wait, self.visibility).await {
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
        for (m, r) in batch.iter().zip(results) {
            match r {
                Ok(counts) => {
                    stats.relayed += counts.relayed;
                    stats.test_events += counts.test_events;
                    stats.unknown_events += counts.unknown_events;
                    stats.rejected += counts.rejected;
                    done.push(m);
                }
                Err(e) => {
                    stats.left_for_retry += 1;
                    retry.push(m);
                    tracing::warn!(message_id = %m.id, outcome = "left_for_retry", error = %e, "relay failed; SQS will redeliver");
                }
            }
        }
        // A failed relay comes back after a short pause, not after the whole lease.
        if !retry.is_empty() {
            if let Err(e) = self.sqs.extend_visibility(&retry, RETRY_VISIBILITY).await {
                tracing::warn!(error = %e, "could not shorten SQS visibility; the message returns after its lease");
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
                    self.copy_queue.send(&relay_message(&r).to_string(), None).await?;
                    c.relayed += 1;
                }
            }
            Verdict::Reject(reason) => {
                // Keep the parked message under Azure's 64 KiB (base64 adds a third).
                let body: String = m.body.chars().take(40 * 1024).collect();
                let parked = json!({
                    "reason": reason,
                    "sqsMessageId": m.id,
                    "receiveCount": m.receive_count,
                    "parkedAt": crate::checkpoint::now_rfc3339(),
                    "body": body,
                    "truncated": body.len() < m.body.len(),
                });
                self.rejects.send(&parked.to_string(), None).await?;
                tracing::warn!(message_id = %m.id, outcome = "rejected", reason = %reason, queue = self.rejects.name(), "malformed SQS message parked");
                c.rejected += 1;
            }
        }
        Ok(c)
    }
}

/// The `copy-objects` message for one event record.
pub fn relay_message(r: &EventRecord) -> serde_json::Value {
    json!({
        "bucket": r.bucket,
        "key": r.key,
        "event": r.name,
        "sequencer": r.sequencer,
        "eTag": r.etag,
        "size": r.size,
        "versionId": r.version_id,
        "eventTime": r.event_time,
    })
}
