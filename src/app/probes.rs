//! What a long-running worker tells its platform's probes (`watch --health-port`).
//!
//! - **Live** while every loop it started still runs. A cloud outage does not make it dead:
//!   the loops go on retrying, and a platform that restarts a task whose liveness fails would
//!   otherwise restart every worker at once in an outage (decisions 129).
//! - **Ready** once its credentials and queues were checked at start, and while the last
//!   call to each cloud got an answer: not ready while either side cannot be reached.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;

/// One cloud the worker depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::Display)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Side {
    /// S3 and SQS.
    Aws,
    /// Blob, Queue and Table storage.
    Azure,
}

/// The worker's state as its probes read it.
#[derive(Debug, Default)]
pub struct Probes {
    loops_started: AtomicUsize,
    loops_running: AtomicUsize,
    checked: AtomicBool,
    aws_down: AtomicBool,
    azure_down: AtomicBool,
}

/// What `GET /readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// Ready to take work.
    pub ready: bool,
    /// The start-up checks (credentials, queues) passed.
    pub checked: bool,
    /// The sides whose last call got no answer.
    pub unreachable: Vec<Side>,
}

/// Held by a running loop; the loop counts as stopped once it is dropped, also when the loop
/// panicked, unless it was [`done`](LoopGuard::done): a phase that ends by design (start-up).
#[derive(Debug)]
pub struct LoopGuard {
    probes: Arc<Probes>,
    done: bool,
}

impl LoopGuard {
    /// The phase ended as it should: it no longer counts either way.
    pub fn done(mut self) {
        self.done = true;
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        self.probes.loops_running.fetch_sub(1, Ordering::SeqCst);
        if self.done {
            self.probes.loops_started.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Probes {
    /// A new state: not checked, no loop.
    pub fn new() -> Arc<Self> {
        Arc::new(Probes::default())
    }

    /// A loop starts; it runs until the guard is dropped.
    pub fn loop_started(self: &Arc<Self>) -> LoopGuard {
        self.loops_started.fetch_add(1, Ordering::SeqCst);
        self.loops_running.fetch_add(1, Ordering::SeqCst);
        LoopGuard {
            probes: self.clone(),
            done: false,
        }
    }

    /// Every loop that started still runs (and at least one did).
    pub fn live(&self) -> bool {
        let started = self.loops_started.load(Ordering::SeqCst);
        started > 0 && self.loops_running.load(Ordering::SeqCst) == started
    }

    /// The start-up checks passed.
    pub fn checked(&self) {
        self.checked.store(true, Ordering::SeqCst);
    }

    /// The last call to `side` got an answer (`true`) or could not reach it.
    pub fn reached(&self, side: Side, answered: bool) {
        let flag = match side {
            Side::Aws => &self.aws_down,
            Side::Azure => &self.azure_down,
        };
        if flag.swap(!answered, Ordering::SeqCst) == answered {
            // It changed: one event per edge, not per call.
            if answered {
                tracing::info!(side = %side, outcome = "reachable", "the worker reaches {side} again");
            } else {
                tracing::warn!(side = %side, outcome = "unreachable", "the worker cannot reach {side}; not ready until it can");
            }
        }
    }

    /// What the readiness probe answers.
    pub fn readiness(&self) -> Readiness {
        let checked = self.checked.load(Ordering::SeqCst);
        let mut unreachable = Vec::new();
        if self.aws_down.load(Ordering::SeqCst) {
            unreachable.push(Side::Aws);
        }
        if self.azure_down.load(Ordering::SeqCst) {
            unreachable.push(Side::Azure);
        }
        Readiness {
            ready: checked && unreachable.is_empty(),
            checked,
            unreachable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_while_every_loop_runs_ready_while_both_sides_answer() {
        let p = Probes::new();
        assert!(!p.live(), "no loop yet");
        let start = p.loop_started();
        assert!(p.live(), "live while it starts");
        let a = p.loop_started();
        let b = p.loop_started();
        start.done();
        assert!(p.live(), "a phase that ended as it should is no death");
        assert!(!p.readiness().ready, "not checked yet");
        p.checked();
        assert!(p.readiness().ready);
        p.reached(Side::Aws, false);
        assert_eq!(p.readiness().unreachable, vec![Side::Aws]);
        assert!(!p.readiness().ready);
        assert!(p.live(), "an outage is not death");
        p.reached(Side::Aws, true);
        p.reached(Side::Azure, false);
        assert_eq!(p.readiness().unreachable, vec![Side::Azure]);
        p.reached(Side::Azure, true);
        assert!(p.readiness().ready);
        drop(b);
        assert!(!p.live(), "a loop ended");
        drop(a);
        assert!(!p.live());
    }

    #[test]
    fn a_loop_that_panics_is_no_longer_running() {
        let p = Probes::new();
        let q = p.clone();
        let r = std::thread::spawn(move || {
            let _g = q.loop_started();
            panic!("loop failed");
        })
        .join();
        assert!(r.is_err());
        assert!(!p.live());
    }
}
