//! A queue consumer that plays the Functions host for one queue-triggered function, in
//! process: receive, call the same app handler the host's adapter calls (`CopyObject`,
//! `ListPage`) with the message, delete only after it succeeded, retry with backoff, and park a
//! message in `<queue>-poison` when it is malformed or after `SYNC_MAX_DEQUEUE_COUNT`
//! attempts. `CopyObject` takes every copy queue (`SYNC_COPY_QUEUES`) in turn, within one
//! bound of messages at once. Used by `watch` and by `serve --work-queues`.
//!
//! Stopping is bounded: no message is received after the stop, those held get
//! `SYNC_SHUTDOWN_GRACE_SECS` to finish, and the rest are handed back (made visible at once)
//! rather than left hidden until their visibility timeout (decisions 129).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;

use crate::app::probes::{Probes, Side};
use crate::app::AppState;
use crate::azure::queue::{WorkItem, WorkQueue};
use crate::error::Result;

/// A queue-triggered function a worker can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFunction {
    /// `CopyObject` on `SYNC_COPY_QUEUE` (and its siblings: `SYNC_COPY_QUEUES`).
    CopyObject,
    /// `ListPage` on `SYNC_LIST_QUEUE`.
    ListPage,
}

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Copied, skipped or otherwise settled; deleted from the queue.
    Done,
    /// Failed; visible again after a backoff.
    Retry,
    /// Parked in the poison queue.
    Poisoned,
    /// Still running when the stop's grace period ended: the work was dropped and the
    /// message made visible again at once (nothing partial is visible: a copy's blob is
    /// committed whole or not at all).
    HandedBack,
}

/// Totals of a worker run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Messages settled.
    pub done: u64,
    /// Messages released for a retry.
    pub retried: u64,
    /// Messages parked.
    pub poisoned: u64,
    /// Messages handed back at a stop.
    pub handed_back: u64,
}

/// One queue a worker takes messages from, and where it parks them.
#[derive(Clone)]
struct Lane {
    queue: WorkQueue,
    poison: WorkQueue,
}

/// The consumer.
#[derive(Clone)]
pub struct Worker {
    state: AppState,
    function: QueueFunction,
    lanes: std::sync::Arc<[Lane]>,
    /// Messages processed at once.
    pub concurrency: usize,
    /// How long a received message stays hidden while it is worked on.
    pub visibility: Duration,
    /// How long held messages may finish after a stop before they are handed back.
    pub grace: Duration,
    /// Where receives report whether Azure answered.
    probes: Option<Arc<Probes>>,
}

impl Worker {
    /// A worker for `function` on its configured queues; creates them and their poison
    /// queues.
    pub async fn new(state: AppState, function: QueueFunction, concurrency: usize) -> Result<Self> {
        let config = &state.config;
        let auth = config.queue_account.authorizer()?;
        let retry = config.retry;
        let names = match function {
            QueueFunction::CopyObject => config.queues.copy_names(),
            QueueFunction::ListPage => vec![config.queues.list.clone()],
        };
        let mut lanes = Vec::new();
        for name in names {
            let queue = WorkQueue::new(&config.queue_account, &auth, &name, retry)?;
            let poison = WorkQueue::new(&config.queue_account, &auth, &format!("{name}-poison"), retry)?;
            queue.create_if_missing().await?;
            poison.create_if_missing().await?;
            lanes.push(Lane { queue, poison });
        }
        Ok(Worker {
            visibility: config.queues.visibility,
            grace: config.queues.shutdown_grace,
            probes: None,
            state,
            function,
            lanes: lanes.into(),
            concurrency: concurrency.max(1),
        })
    }

    /// Reports each receive's answer (or its failure) as Azure's reachability.
    pub fn with_probes(mut self, probes: Arc<Probes>) -> Self {
        self.probes = Some(probes);
        self
    }

    /// Handles one message. While the handler works, a heartbeat keeps the message hidden
    /// (every half visibility period), so a copy slower than the visibility timeout is not
    /// handed to a second consumer, whose deliveries would count against its attempts.
    /// When `hand_back` turns true first, the work is dropped and the message made visible.
    async fn process(
        &self,
        lane: &Lane,
        item: &WorkItem,
        mut hand_back: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Disposition> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let beat = tokio::spawn(heartbeat(
            lane.queue.clone(),
            item.id.clone(),
            item.pop_receipt.clone(),
            self.visibility,
            stopped,
        ));
        let work = async {
            match self.function {
                QueueFunction::CopyObject => {
                    super::copy_object::handle(&self.state, &item.text, item.dequeue_count).await
                }
                QueueFunction::ListPage => super::list_page::handle(&self.state, &item.text, item.dequeue_count).await,
            }
        };
        // Dropping the work at a hand-back is what a killed process does, which every step
        // survives: uncommitted blocks are invisible, and the next delivery redoes the rest.
        let result = tokio::select! {
            r = work => r,
            // The watch guard is dropped inside `map`, never held across an await.
            () = hand_back.wait_for(|b| *b).map(|_| ()) => {
                let _ = stop.send(true);
                // Bounded as a whole (the heartbeat's last update, then the release): the
                // process is exiting. A release that does not land leaves the message to come
                // back after its visibility timeout.
                let released = tokio::time::timeout(HAND_BACK_BOUND, async {
                    let receipt = beat.await.map_or_else(|_| item.pop_receipt.clone(), |b| b.receipt);
                    let item = WorkItem { pop_receipt: receipt, ..item.clone() };
                    lane.queue.release(&item, Duration::ZERO).await
                })
                .await;
                match released {
                    Ok(Ok(())) => tracing::info!(
                        message_id = %item.id, queue = lane.queue.name(), outcome = "handed_back",
                        "stopping: the message was still being worked on; handed back for another worker"
                    ),
                    Ok(Err(e)) => tracing::warn!(
                        message_id = %item.id, queue = lane.queue.name(), outcome = "handed_back", error = %e,
                        "stopping: could not hand the message back; it returns after its visibility timeout"
                    ),
                    Err(_) => tracing::warn!(
                        message_id = %item.id, queue = lane.queue.name(), outcome = "handed_back",
                        "stopping: handing the message back timed out; it returns after its visibility timeout"
                    ),
                }
                return Ok(Disposition::HandedBack);
            }
        };
        let park = match &result {
            Err(f) if f.status == 400 || item.dequeue_count >= self.state.config.queues.max_dequeue_count => {
                // Malformed (it can never succeed) or out of attempts: park it with the
                // reason, still hidden (the heartbeat goes on), so no twin parks it too.
                tracing::error!(
                    message_id = %item.id, queue = lane.queue.name(), attempt = item.dequeue_count,
                    outcome = "poisoned", reason = %f.error, "message parked in the poison queue"
                );
                let sent = lane.poison.send(&item.text, None).await;
                Some(sent)
            }
            _ => None,
        };
        let _ = stop.send(true);
        // The heartbeat finishes the update it may be in, so the receipt is the latest.
        let beat = beat.await.unwrap_or(Beat {
            receipt: item.pop_receipt.clone(),
            lost: false,
        });
        if beat.lost {
            tracing::warn!(
                message_id = %item.id, queue = lane.queue.name(),
                "the message was handed out again while it was worked on; its next delivery settles it"
            );
        }
        let item = &WorkItem {
            pop_receipt: beat.receipt,
            ..item.clone()
        };
        if let Some(sent) = park {
            sent?;
            lane.queue.delete(item).await?;
            return Ok(Disposition::Poisoned);
        }
        match result {
            Ok(_) => {
                lane.queue.delete(item).await?;
                Ok(Disposition::Done)
            }
            Err(_) => {
                let delay = self.state.config.retry.redelivery(item.dequeue_count);
                lane.queue.release(item, delay).await?;
                Ok(Disposition::Retry)
            }
        }
    }

    /// Receives and processes until `stop` turns true, or — with `idle_exit` — until the queue
    /// has been empty that long. After an idle exit every message held is finished; after a
    /// stop they get the grace period, and the rest are handed back.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>, idle_exit: Option<Duration>) -> WorkerStats {
        let mut stats = WorkerStats::default();
        let mut running: JoinSet<Result<Disposition>> = JoinSet::new();
        let (hand_back, handing_back) = tokio::sync::watch::channel(false);
        let mut idle_since = tokio::time::Instant::now();
        // Lanes are taken in turn; only a whole round of empty receives is idle.
        let (mut turn, mut empty) = (0usize, 0usize);
        loop {
            while let Some(done) = running.try_join_next() {
                tally(&mut stats, done);
            }
            if *stop.borrow() {
                break;
            }
            let free = self.concurrency.saturating_sub(running.len());
            if free == 0 {
                // Full: wait for a slot, or for the stop, whose grace period starts now.
                tokio::select! {
                    done = running.join_next() => {
                        if let Some(done) = done {
                            tally(&mut stats, done);
                        }
                    }
                    // A sender gone (`Err`) disables the branch: only the other can end the wait.
                    Ok(()) = stop.changed() => {}
                }
                continue;
            }
            let lane = self.lanes[turn % self.lanes.len()].clone();
            turn = turn.wrapping_add(1);
            // A receive in flight at the stop is let finish: what it got is then worked on
            // within the grace period (or handed back), never left hidden.
            let received = lane.queue.receive(free.min(32) as u32, self.visibility).await;
            if let Some(p) = &self.probes {
                p.reached(Side::Azure, received.is_ok());
            }
            let items = match received {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(error = %e, queue = lane.queue.name(), "receive failed");
                    // Not idle: a queue that cannot be read may still hold messages.
                    idle_since = tokio::time::Instant::now();
                    Vec::new()
                }
            };
            if items.is_empty() {
                empty += 1;
                if empty < self.lanes.len() {
                    continue;
                }
                empty = 0;
                if running.is_empty() && idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    // A sender gone (`Err`) disables the branch: only the other can end the wait.
                    Ok(()) = stop.changed() => {}
                }
                continue;
            }
            idle_since = tokio::time::Instant::now();
            empty = 0;
            for item in items {
                let (w, lane, hb) = (self.clone(), lane.clone(), handing_back.clone());
                running.spawn(async move { w.process(&lane, &item, hb).await });
            }
        }
        if *stop.borrow() && !running.is_empty() {
            tracing::info!(
                in_flight = running.len(),
                grace_s = self.grace.as_secs(),
                "stopping: no new messages; those held get the grace period, then are handed back"
            );
            let deadline = tokio::time::Instant::now() + self.grace;
            loop {
                tokio::select! {
                    done = running.join_next() => match done {
                        Some(done) => tally(&mut stats, done),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        let _ = hand_back.send(true);
                        break;
                    }
                }
            }
        }
        while let Some(done) = running.join_next().await {
            tally(&mut stats, done);
        }
        stats
    }
}

/// How long handing one message back may take at a stop.
const HAND_BACK_BOUND: Duration = Duration::from_secs(5);

/// What the heartbeat ends with.
struct Beat {
    /// The latest pop receipt.
    receipt: String,
    /// The message is no longer ours: an update found it gone, or another consumer holds it.
    lost: bool,
}

/// Extends the message's visibility every half period until `stop` turns true. A failed
/// extension is logged and the beat goes on with the receipt it has; one that finds the
/// message gone (404: deleted, or its receipt void because it was handed out again) ends the
/// beat, since no later update can succeed. Either way the work is idempotent, and the
/// delivery that holds the message settles it.
async fn heartbeat(
    queue: WorkQueue,
    id: String,
    receipt: String,
    visibility: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Beat {
    let period = (visibility / 2).max(Duration::from_millis(500));
    let mut beat = Beat { receipt, lost: false };
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return beat,
            _ = tokio::time::sleep(period) => {}
        }
        match queue.extend(&id, &beat.receipt, visibility).await {
            Ok(r) => beat.receipt = r,
            Err(e) if e.kind() == crate::error::ErrorKind::NotFound => {
                beat.lost = true;
                return beat;
            }
            Err(e) => tracing::warn!(
                message_id = %id, queue = queue.name(), error = %e,
                "could not extend the message's visibility; it may be handed out again"
            ),
        }
    }
}

fn tally(stats: &mut WorkerStats, r: std::result::Result<Result<Disposition>, tokio::task::JoinError>) {
    match r {
        Ok(Ok(Disposition::Done)) => stats.done += 1,
        Ok(Ok(Disposition::Retry)) => stats.retried += 1,
        Ok(Ok(Disposition::Poisoned)) => stats.poisoned += 1,
        Ok(Ok(Disposition::HandedBack)) => stats.handed_back += 1,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "queue operation failed; the message becomes visible again")
        }
        Err(e) => tracing::error!(error = %e, "worker task failed"),
    }
}
