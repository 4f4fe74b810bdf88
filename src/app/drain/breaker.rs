//! The relay's circuit breaker.

use std::time::{Duration, Instant};

use crate::azure::queue::WorkQueue;
use crate::error::{Error, ErrorKind};
use crate::state::breaker::{BreakerStore, OpenBreaker};

/// Whether a failure is the Azure side's own outage (it cannot take any message now, or
/// cannot be reached at all), not something about one message.
pub(super) fn is_outage(e: &Error) -> bool {
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
pub(super) enum Gate {
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
    pub(super) async fn gate(&self, probes: &mut u64) -> Gate {
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
        *probes += 1;
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
    pub(super) async fn trip(&self, e: &Error) -> bool {
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
