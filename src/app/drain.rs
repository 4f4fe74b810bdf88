//! Draining SQS: each S3 record becomes one `copy-objects` message; the SQS message is deleted
//! only after all of its records were relayed. Used by the `DrainSqs` timer function and the
//! `watch` worker alike. While the Azure side cannot take messages, a circuit breaker stops
//! the receives, so an outage spends no message's receive count (decisions 97).

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::aws::events::{self, EventRecord, Notification};
use crate::aws::sqs::{SqsMessage, SqsQueue};
use crate::azure::queue::WorkQueue;
use crate::error::{Error, ErrorKind, Result};
use crate::messages::CopyMessage;
use crate::state::breaker::{BreakerStore, OpenBreaker};
use crate::state::checkpoint::CheckpointStore;

/// The longest retry pause. SQS refuses a visibility timeout that ends more than 12 h after
/// the message was received, and a drain can set it up to its budget (at most 1 h) after the
/// receive: 11 h always fits.
const MAX_VISIBILITY: Duration = Duration::from_secs(11 * 3600);

/// How long a message whose relay failed on its `receives`-th receive stays hidden:
/// `base` × 4^(receives−1), at most 11 h. Each failed receive spends one of the queue's
/// `maxReceiveCount`, so the pauses grow fast enough that an outage of the Azure side of
/// about an hour (base 60 s, maxReceiveCount 5: 60+240+960+3840 s) sends nothing to the
/// dead-letter queue (decisions 53).
pub fn retry_visibility(base: Duration, receives: u32) -> Duration {
    let factor = 4u32.saturating_pow(receives.saturating_sub(1).min(15));
    base.saturating_mul(factor).min(MAX_VISIBILITY)
}
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
    copy_queue: WorkQueue,
    rejects: WorkQueue,
    /// How long received messages stay hidden; extended while work runs long.
    pub visibility: Duration,
    /// Receive loops run at once (each takes up to ten messages per receive).
    pub receivers: usize,
    /// The first pause after a failed relay (see [`retry_visibility`]).
    pub retry_base: Duration,
    breaker: std::sync::Arc<Breaker>,
}

/// The longest long poll of a receive.
const LONG_POLL: Duration = Duration::from_secs(20);

/// Whether a failure is the Azure side's own outage (it cannot take any message now, or
/// cannot be reached at all), not something about one message.
fn is_outage(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Transient | ErrorKind::Throttled | ErrorKind::NotSent
    )
}

fn unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The relay's circuit breaker: open while the Azure side cannot take messages. While open,
/// no SQS receive starts, so no message spends a receive on an outage; one probe every
/// `interval` asks whether the side is back. Its state is kept in `state/` for the next
/// `DrainSqs` invocation and for other `watch` replicas, and in memory when the table is part
/// of the outage.
#[derive(Debug)]
pub struct Breaker {
    /// The copy queue, asked once (no retries) whether it answers.
    probe: WorkQueue,
    store: Option<BreakerStore>,
    /// Between probes, and how long a message that met the outage stays hidden.
    pub interval: Duration,
    local: tokio::sync::Mutex<Local>,
}

#[derive(Debug, Default)]
struct Local {
    open: Option<OpenBreaker>,
    /// When the stored state was last read.
    read_at: Option<Instant>,
}

/// What the breaker lets a receive loop do.
enum Gate {
    /// Receive.
    Closed,
    /// Do not receive; the next probe is due after this long.
    Open(Duration),
}

impl Breaker {
    /// A breaker probing `probe` every `interval`, its state kept in `store`.
    pub fn new(probe: WorkQueue, store: Option<BreakerStore>, interval: Duration) -> Self {
        Breaker {
            probe,
            store,
            interval: interval.max(Duration::from_secs(1)),
            local: Default::default(),
        }
    }

    /// Whether a receive may start; when the breaker is open and a probe is due, this call
    /// makes it (other loops wait for its answer).
    async fn gate(&self, stats: &mut DrainStats) -> Gate {
        let mut local = self.local.lock().await;
        // What another invocation or replica found, read again every interval.
        if local.open.is_none() && local.read_at.is_none_or(|t| t.elapsed() >= self.interval) {
            if let Some(store) = &self.store {
                match store.get().await {
                    Ok(open) => local.open = open,
                    Err(e) => tracing::debug!(error = %e, "could not read the relay breaker"),
                }
            }
            local.read_at = Some(Instant::now());
        }
        let Some(open) = local.open.clone() else {
            return Gate::Closed;
        };
        let now = unix_ms();
        if now < open.probe_at_ms {
            return Gate::Open(Duration::from_millis((open.probe_at_ms - now) as u64));
        }
        stats.probes += 1;
        match self.probe.approximate_count().await {
            Err(e) if is_outage(&e) => {
                let next = OpenBreaker {
                    probe_at_ms: now + self.interval.as_millis() as i64,
                    reason: e.message().to_string(),
                    ..open
                };
                local.open = Some(next.clone());
                drop(local);
                self.save(Some(&next)).await;
                tracing::info!(outcome = "breaker_probe_failed", error = %e, "the Azure side is still down; no SQS message is received");
                Gate::Open(self.interval)
            }
            // Back (or failing for a reason of its own, which the relay's per-message pauses
            // handle): receive again.
            _ => {
                local.open = None;
                drop(local);
                self.save(None).await;
                tracing::warn!(
                    outcome = "breaker_closed",
                    down_ms = (now - open.opened_at_ms).max(0),
                    "the Azure side answers again; receiving from SQS"
                );
                Gate::Closed
            }
        }
    }

    /// Opens the breaker after a relay met the Azure side's outage.
    async fn trip(&self, e: &Error) -> bool {
        let mut local = self.local.lock().await;
        if local.open.is_some() {
            return false;
        }
        let now = unix_ms();
        let open = OpenBreaker {
            probe_at_ms: now + self.interval.as_millis() as i64,
            opened_at_ms: now,
            reason: e.message().to_string(),
        };
        local.open = Some(open.clone());
        drop(local);
        tracing::warn!(
            outcome = "breaker_opened", error = %e, probe_every_s = self.interval.as_secs(),
            "the Azure side cannot take messages: no SQS message is received until a probe finds it back"
        );
        self.save(Some(&open)).await;
        true
    }

    /// Keeps the state for others (best effort: the table may be part of the outage).
    async fn save(&self, open: Option<&OpenBreaker>) {
        let Some(store) = &self.store else { return };
        let r = match open {
            Some(o) => store.open(o).await,
            None => store.close().await,
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not keep the relay breaker's state; other relays learn of the outage by their own failures");
        }
    }
}

enum Verdict {
    Relay(Vec<EventRecord>),
    Ack,
    Reject(String),
}

impl Drainer {
    /// A drainer from `sqs` into `copy_queue`, parking malformed bodies on `rejects`, with
    /// `breaker` guarding the receives.
    pub fn new(sqs: SqsQueue, copy_queue: WorkQueue, rejects: WorkQueue, breaker: Breaker) -> Self {
        Drainer {
            sqs,
            copy_queue,
            rejects,
            visibility: Duration::from_secs(60),
            receivers: 4,
            retry_base: Duration::from_secs(60),
            breaker: std::sync::Arc::new(breaker),
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
        let url = cfg.sqs_queue_url.as_deref().ok_or_else(|| {
            crate::error::Error::invalid(
                "SYNC_SQS_QUEUE_URL is not set: it names the SQS queue with the bucket's events",
            )
        })?;
        let retry = cfg.retry;
        let auth = cfg.azure.authorizer()?;
        let copy_queue = WorkQueue::new(&cfg.azure, &auth, &cfg.copy_queue, retry)?;
        let rejects = WorkQueue::new(&cfg.azure, &auth, &cfg.reject_queue, retry)?;
        copy_queue.create_if_missing().await?;
        rejects.create_if_missing().await?;
        // The probe asks once: its answer is whether the side is up now.
        let once = crate::retry::RetryPolicy {
            max_attempts: 1,
            ..retry
        };
        let probe = WorkQueue::new(&cfg.azure, &auth, &cfg.copy_queue, once)?;
        let checkpoint = CheckpointStore::open(&cfg.azure, &auth, &cfg.checkpoint_table, retry)?;
        // Where the breaker's state is kept for the next invocation and other replicas.
        checkpoint.ensure().await?;
        let store = checkpoint.breaker(&format!("{}/{}", cfg.azure.name, cfg.copy_queue));
        let breaker = Breaker::new(probe, Some(store), Self::probe_interval(cfg.sqs_retry_base));
        let mut d = Drainer::new(SqsQueue::new(&cfg.aws, url, retry).await, copy_queue, rejects, breaker);
        d.retry_base = cfg.sqs_retry_base;
        d.visibility = cfg.sqs_visibility;
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
            if left < Duration::from_secs(3) {
                return (stats, None);
            }
            if let Gate::Open(wait) = self.breaker.gate(&mut stats).await {
                // Nothing is received while the Azure side is down.
                if stop_when_idle || wait + Duration::from_secs(3) > left {
                    return (stats, None);
                }
                tokio::time::sleep(wait).await;
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
                    self.copy_queue.send(&relay_message(&r).to_json(), None).await?;
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

/// What `redrive` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveStats {
    /// The dead-letter queue's URL.
    pub dead_letter_queue: String,
    /// Messages waiting there when it started (approximate).
    pub waiting: u64,
    /// Messages sent back to the source queue and deleted from the dead-letter queue.
    pub moved: u64,
    /// Messages left where they are, each with why (another queue's, or of unknown origin).
    pub left: Vec<String>,
}

/// Whether a dead-lettered message is this queue's to take back: SQS names the queue it
/// came from (`DeadLetterQueueSourceArn`), and a dead-letter queue may serve several. One
/// without the attribute was not dead-lettered by SQS; it moves only with `any_source`.
fn belongs(m: &SqsMessage, our_arn: &str, any_source: bool) -> std::result::Result<(), String> {
    match m.dead_letter_source.as_deref() {
        Some(src) if src == our_arn => Ok(()),
        Some(src) => Err(format!("message {}: dead-lettered from {src}, not this queue", m.id)),
        None if any_source => Ok(()),
        None => Err(format!(
            "message {}: no DeadLetterQueueSourceArn (not dead-lettered by SQS); --any-source moves it",
            m.id
        )),
    }
}

/// Moves messages from `sqs`'s dead-letter queue back to `sqs`, at most `max`: only those
/// SQS dead-lettered from `sqs` (or of no recorded origin, with `any_source`). Each is sent
/// first and deleted from the dead-letter queue only after the send succeeded, so a crash
/// can duplicate a message (harmless: events are idempotent) but never lose one. Messages
/// left behind become visible again at once. A dry run only reports how many wait there.
pub async fn redrive(sqs: &SqsQueue, max: u64, dry_run: bool, any_source: bool) -> Result<RedriveStats> {
    let (dlq, _) = sqs.dead_letter().await?.ok_or_else(|| {
        crate::error::Error::invalid(format!(
            "queue {} has no RedrivePolicy, so it has no dead-letter queue to bring messages back from",
            sqs.url()
        ))
    })?;
    let mut stats = RedriveStats {
        dead_letter_queue: dlq.url().to_string(),
        waiting: dlq.depth().await?.visible,
        ..Default::default()
    };
    if dry_run {
        return Ok(stats);
    }
    let our_arn = sqs.arn().await?;
    let mut seen = std::collections::HashSet::new();
    while stats.moved < max {
        let want = (max - stats.moved).min(10) as i32;
        let batch = dlq
            .receive(want, Duration::from_secs(1), Duration::from_secs(300))
            .await?;
        if batch.is_empty() {
            break;
        }
        let mut skipped = Vec::new();
        for m in &batch {
            if !seen.insert(m.id.clone()) {
                skipped.push(m);
                continue;
            }
            if let Err(why) = belongs(m, &our_arn, any_source) {
                tracing::info!(message_id = %m.id, outcome = "left", reason = %why, "dead-lettered message not ours to move");
                stats.left.push(why);
                skipped.push(m);
                continue;
            }
            sqs.send(&m.body).await?;
            if dlq.delete_batch(&[m]).await?.is_empty() {
                stats.moved += 1;
                tracing::info!(message_id = %m.id, outcome = "redriven", "dead-lettered message sent back to the source queue");
                crate::audit::record(
                    crate::audit::Action::RedriveMessage,
                    "the CLI (redrive)",
                    "",
                    &format!("SQS message {} from {}", m.id, dlq.url()),
                    "sent back to the source queue and removed from the dead-letter queue",
                );
            } else {
                stats.left.push(format!(
                    "message {}: sent back, but the dead-letter queue kept it too",
                    m.id
                ));
            }
        }
        if !skipped.is_empty() {
            // Left behind: visible again at once for whoever owns them.
            dlq.extend_visibility(&skipped, Duration::ZERO).await?;
            if skipped.len() == batch.len() {
                break;
            }
        }
    }
    Ok(stats)
}

/// The most a parked message may take, in bytes of JSON: Azure queues take 64 KiB of
/// base64, which carries 48 KiB; the rest is margin.
pub const MAX_PARKED_BYTES: usize = 46 * 1024;
/// The most of a rejection's reason kept (serde quotes offending input, which can be huge).
const MAX_REASON_BYTES: usize = 2048;

/// The rejects-queue message for a malformed SQS body: the reason, the SQS message id, the
/// body's size and SHA-256 (so the original can be matched even when cut), and as much of
/// the body as fits, all within [`MAX_PARKED_BYTES`] whatever the body holds (non-ASCII,
/// control characters that JSON escapes six-fold, one huge string).
pub fn parked_message(m: &SqsMessage, reason: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(m.body.as_bytes()));
    let reason = cut_at(reason, MAX_REASON_BYTES);
    let mut keep = m.body.len().min(MAX_PARKED_BYTES);
    loop {
        let excerpt = cut_at(&m.body, keep);
        let text = json!({
            "reason": reason,
            "sqsMessageId": m.id,
            "receiveCount": m.receive_count,
            "parkedAt": crate::state::checkpoint::now_rfc3339(),
            "bodyBytes": m.body.len(),
            "bodySha256": digest,
            "body": excerpt,
            "truncated": excerpt.len() < m.body.len(),
        })
        .to_string();
        if text.len() <= MAX_PARKED_BYTES || keep == 0 {
            return text;
        }
        keep /= 2;
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut_at(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The `copy-objects` message for one event record. The event's version id is not carried:
/// the copy HEADs the key's current version, whichever event woke it.
pub fn relay_message(r: &EventRecord) -> CopyMessage {
    CopyMessage {
        bucket: r.bucket.clone(),
        key: r.key.clone(),
        event: Some(r.name.clone()),
        sequencer: r.sequencer.clone(),
        etag: r.etag.clone(),
        size: r.size,
        event_time: r.event_time.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: String) -> SqsMessage {
        SqsMessage {
            id: "m-1".into(),
            body,
            ..Default::default()
        }
    }

    #[test]
    fn a_relayed_event_reads_back_as_the_same_copy_message() {
        let body = r#"{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2026-12-02T10:00:00.000Z",
            "s3":{"bucket":{"name":"bkt"},"object":{"key":"a%20b.txt","size":5,"eTag":"abc","sequencer":"0A"}}}]}"#;
        let Ok(events::Notification::Records(records)) = events::parse(body) else {
            panic!("not parsed")
        };
        let sent = relay_message(&records[0]);
        let back = CopyMessage::parse(&sent.to_json()).unwrap();
        assert_eq!(back, sent);
        assert_eq!(
            (
                back.key.as_str(),
                back.event.as_deref(),
                back.sequencer.as_deref(),
                back.etag.as_deref(),
                back.size
            ),
            ("a b.txt", Some("ObjectCreated:Put"), Some("0A"), Some("abc"), Some(5))
        );
    }

    #[test]
    fn retry_pauses_grow_to_outlast_an_hour_within_five_receives() {
        let base = Duration::from_secs(60);
        let pauses: Vec<u64> = (1..=5).map(|n| retry_visibility(base, n).as_secs()).collect();
        assert_eq!(pauses, [60, 240, 960, 3840, 15360]);
        // maxReceiveCount 5: four pauses before the fifth receive.
        assert!(pauses[..4].iter().sum::<u64>() >= 3600);
        assert_eq!(retry_visibility(base, 40), MAX_VISIBILITY);
        assert!(MAX_VISIBILITY + Duration::from_secs(3600) <= Duration::from_secs(12 * 3600));
        assert_eq!(retry_visibility(base, 0), base);
    }

    #[test]
    fn redrive_takes_back_only_its_own_messages() {
        let ours = "arn:aws:sqs:us-east-1:1:events";
        let m = |src: Option<&str>| SqsMessage {
            id: "m".into(),
            dead_letter_source: src.map(str::to_string),
            ..Default::default()
        };
        assert!(belongs(&m(Some(ours)), ours, false).is_ok());
        let other = belongs(&m(Some("arn:aws:sqs:us-east-1:1:other")), ours, true).unwrap_err();
        assert!(other.contains("not this queue"), "{other}");
        let unknown = belongs(&m(None), ours, false).unwrap_err();
        assert!(unknown.contains("--any-source"), "{unknown}");
        assert!(belongs(&m(None), ours, true).is_ok());
    }

    #[test]
    fn parked_messages_fit_a_queue_message_whatever_the_body() {
        let huge_string = format!("\"{}\"", "x".repeat(200 * 1024));
        let non_ascii = "ü€😀".repeat(132 * 1024 / 9);
        let controls = "\u{1}".repeat(60 * 1024);
        for body in [huge_string, non_ascii, controls, "short".to_string()] {
            let reason = match events::parse(&body) {
                Err(r) => r,
                Ok(_) => "parsed".into(),
            };
            let text = parked_message(&msg(body.clone()), &reason);
            assert!(text.len() <= MAX_PARKED_BYTES, "{} bytes", text.len());
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["sqsMessageId"], "m-1");
            assert_eq!(v["bodyBytes"], body.len());
            use sha2::Digest;
            assert_eq!(v["bodySha256"], hex::encode(sha2::Sha256::digest(body.as_bytes())));
            assert_eq!(v["truncated"], body.len() > v["body"].as_str().unwrap().len());
            assert!(body.starts_with(v["body"].as_str().unwrap()));
            assert!(!v["reason"].as_str().unwrap().is_empty());
            // base64 of it fits Azure's 64 KiB message.
            assert!(text.len().div_ceil(3) * 4 <= 64 * 1024);
        }
    }
}
