//! `watch`: the long-running worker for containers — drains SQS into `copy-objects` and
//! consumes it with the same engine, until SIGTERM/Ctrl-C (or, with `--once`, until both
//! queues are idle). With `--health-port` it answers liveness and readiness probes; a stop is
//! bounded (`SYNC_SHUTDOWN_GRACE_SECS`, then what is held is handed back).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::app::drain::Drainer;
use crate::app::probes::{Probes, Side};
use crate::app::worker::{QueueFunction, Worker};
use crate::error::Result;

/// Where `watch` answers its probes.
#[derive(Debug, Clone, Copy)]
pub(super) struct HealthListen {
    pub port: Option<u16>,
    pub bind: std::net::IpAddr,
}

pub(super) async fn run(
    queue_url: Option<String>,
    workers: usize,
    once: bool,
    health: HealthListen,
) -> Result<ExitCode> {
    let mut cfg = crate::config::Config::from_env()?;
    if queue_url.is_some() {
        cfg.relay.queue_url = queue_url;
    }
    crate::telemetry::init(cfg.log_format, "info");
    let probes = Probes::new();
    // Live from the start: a start-up slowed by an outage is not a dead process.
    let starting = probes.loop_started();
    if let Some(port) = health.port {
        super::health::serve(std::net::SocketAddr::new(health.bind, port), probes.clone()).await?;
    }
    let state = crate::app::AppState::new(cfg).await?;
    let (cfg, engine) = (state.config.clone(), state.engine.clone());
    match &cfg.mapping.container {
        Some(c) => engine.target(c)?.create_if_missing().await.map_err(|e| {
            e.context(format!("SYNC_TARGET_CONTAINER: container `{c}` does not exist and could not be created; create it or grant the identity rights to"))
        })?,
        None => tracing::warn!("SYNC_TARGET_CONTAINER is not set: every copy message must name its container"),
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let drainer = Drainer::from_config(&cfg).await?;
    let drainer = Arc::new(drainer.with_stop(stop_rx.clone()).with_probes(probes.clone()));
    let worker = Worker::new(state.clone(), QueueFunction::CopyObject, workers)
        .await?
        .with_probes(probes.clone());
    // The events queue and the credentials that read it: a wrong URL or a refused identity
    // ends here, naming the setting; a side that does not answer yet only delays readiness.
    match drainer.sqs().depth().await {
        Ok(_) => probes.reached(Side::Aws, true),
        Err(e) if e.is_retryable() => {
            tracing::warn!(error = %e, "SYNC_SQS_QUEUE_URL: the events queue does not answer yet; not ready until it does");
            probes.reached(Side::Aws, false);
        }
        Err(e) => {
            return Err(e.context("SYNC_SQS_QUEUE_URL: the events queue could not be read with these credentials"))
        }
    }
    probes.checked();

    if once {
        let stats = drainer.drain(cfg.relay.drain_budget, true).await?;
        // The relay's lag, as the long-running loop keeps it (the cutover gate reads it).
        if let Err(e) = crate::app::lag::record(&engine.checkpoint().lag(), drainer.sqs(), &stats).await {
            tracing::warn!(error = %e, "could not record the relay's lag");
        }
        let w = worker.run(stop_rx, Some(Duration::from_secs(2))).await;
        println!(
            "drained {} SQS messages ({} relayed, {} rejected); copy queue: {} done, {} retried, {} poisoned",
            stats.received, stats.relayed, stats.rejected, w.done, w.retried, w.poisoned
        );
        stopped(&w);
        return Ok(ExitCode::SUCCESS);
    }

    let drain_task = {
        let drainer = drainer.clone();
        let lag = engine.checkpoint().lag();
        let mut stop = stop_rx.clone();
        let probes = probes.clone();
        tokio::spawn(async move {
            let _running = probes.loop_started();
            while !*stop.borrow() {
                match drainer.drain(Duration::from_secs(20), false).await {
                    Ok(stats) => {
                        let _ = crate::app::lag::record(&lag, drainer.sqs(), &stats).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "sqs drain failed; retrying in 5 s");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            _ = stop.changed() => {}
                        }
                    }
                }
            }
        })
    };
    // No timers here: the sweep runs on its own period.
    let sweep_task = {
        let (state, probes, stop) = (state.clone(), probes.clone(), stop_rx.clone());
        let every = cfg.runs.sweep_interval;
        tokio::spawn(async move {
            let _running = probes.loop_started();
            crate::app::sweep::every(state, every, stop).await
        })
    };
    let worker_task = {
        let probes = probes.clone();
        tokio::spawn(async move {
            let _running = probes.loop_started();
            worker.run(stop_rx, None).await
        })
    };
    starting.done();
    super::shutdown_signal().await;
    let grace = cfg.queues.shutdown_grace;
    tracing::info!(
        grace_s = grace.as_secs(),
        "stopping: no new messages; those held get the grace period, then are handed back"
    );
    let _ = stop_tx.send(true);
    sweep_task.abort();
    let ended = super::within_stop_bound(grace, async {
        let (_, worker) = tokio::join!(drain_task, worker_task);
        worker.unwrap_or_default()
    });
    // A second signal ends it at once, as the operator asked twice.
    tokio::select! {
        ended = ended => {
            if let Some(stats) = ended {
                stopped(&stats);
            }
        }
        _ = super::shutdown_signal() => {
            tracing::warn!(outcome = "abandoned", "second signal: exiting at once (what the worker held returns after its visibility timeout)");
            return Ok(ExitCode::from(130));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The worker's last line: its messages, and what it did by event (objects and bytes per
/// outcome, failed attempts by kind).
fn stopped(stats: &crate::app::worker::WorkerStats) {
    let events = serde_json::to_string(&crate::internal_events::counters()).unwrap_or_default();
    tracing::info!(
        done = stats.done,
        retried = stats.retried,
        poisoned = stats.poisoned,
        handed_back = stats.handed_back,
        events = %events,
        "worker stopped"
    );
}

/// `redrive`: moves dead-lettered S3 events back to the events queue.
pub(super) async fn redrive(
    queue_url: Option<String>,
    dry_run: bool,
    max: u64,
    any_source: bool,
    json: bool,
) -> Result<ExitCode> {
    let cfg = crate::config::Config::from_env()?;
    crate::telemetry::init(cfg.log_format, "warn");
    let url = queue_url
        .or(cfg.relay.queue_url.clone())
        .ok_or_else(|| crate::error::Error::invalid("no events queue: pass --queue-url or set SYNC_SQS_QUEUE_URL"))?;
    let sqs = crate::aws::sqs::SqsQueue::new(&cfg.aws, &url, cfg.retry).await;
    let stats = crate::app::drain::redrive(&sqs, max, dry_run, any_source).await?;
    if json {
        println!("{}", serde_json::to_string(&stats).unwrap_or_default());
    } else if dry_run {
        println!(
            "dry run: ~{} messages wait in {}; nothing was moved.",
            stats.waiting, stats.dead_letter_queue
        );
    } else {
        println!(
            "moved {} of ~{} messages from {} back to {url}",
            stats.moved, stats.waiting, stats.dead_letter_queue
        );
        for why in &stats.left {
            println!("left: {why}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
