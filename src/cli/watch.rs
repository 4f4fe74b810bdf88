//! `watch`: the long-running worker for containers — drains SQS into `copy-objects` and
//! consumes it with the same engine, until SIGTERM/Ctrl-C (or, with `--once`, until both
//! queues are idle).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::app::drain::Drainer;
use crate::app::worker::{QueueFunction, Worker};
use crate::error::Result;

pub(super) async fn run(queue_url: Option<String>, workers: usize, once: bool) -> Result<ExitCode> {
    let mut cfg = crate::config::Config::from_env()?;
    if queue_url.is_some() {
        cfg.relay.queue_url = queue_url;
    }
    crate::telemetry::init(cfg.log_format, "info");
    let state = crate::app::AppState::new(cfg).await?;
    let (cfg, engine) = (state.config.clone(), state.engine.clone());
    match &cfg.mapping.container {
        Some(c) => engine.target(c)?.create_if_missing().await.map_err(|e| {
            e.context(format!("SYNC_TARGET_CONTAINER: container `{c}` does not exist and could not be created; create it or grant the identity rights to"))
        })?,
        None => tracing::warn!("SYNC_TARGET_CONTAINER is not set: every copy message must name its container"),
    }
    let drainer = Arc::new(Drainer::from_config(&cfg).await?);
    let worker = Worker::new(state.clone(), QueueFunction::CopyObject, workers).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

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
        tokio::spawn(async move {
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
    let sweep_task = tokio::spawn(crate::app::sweep::every(
        state.clone(),
        cfg.runs.sweep_interval,
        stop_rx.clone(),
    ));
    let worker_task = tokio::spawn(async move { worker.run(stop_rx, None).await });
    super::shutdown_signal().await;
    tracing::info!("stopping: finishing in-flight work");
    let _ = stop_tx.send(true);
    drain_task.abort();
    sweep_task.abort();
    let stats = worker_task.await.unwrap_or_default();
    stopped(&stats);
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
