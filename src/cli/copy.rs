//! `copy` and `sync`: a bulk run executed in this process, on the same run model as the
//! Function App (run row, lister row, counters, lock), so `status RUN_ID` reads both.
//! The lister hands copies to in-process workers through a bounded channel instead of the
//! `copy-objects` queue; memory holds one page plus the channel.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::{CopyArgs, EXIT_FAILED_OBJECTS};
use crate::app::copy_object::{copy_in_process, to_request};
use crate::app::copy_queues::CopySink;
use crate::app::finish::{check, CheckStep};
use crate::app::lister::{list_page, PageStep};
use crate::app::service::{RunService, Started};
use crate::config::location::{parse_blob_url, parse_s3_url};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::messages::run_spec::RunSpec;
use crate::messages::CopyMessage;
use crate::state::runs::counters::Tally;
use crate::state::runs::counting::Counted;
use crate::state::runs::store::RunState;

/// Hands the lister's copies to the workers; waits when they are busy, unless the run is
/// stopping.
struct ChannelSink {
    tx: mpsc::Sender<CopyMessage>,
    pb: ProgressBar,
    stop: Stop,
}

#[async_trait::async_trait]
impl CopySink for ChannelSink {
    async fn send(&self, copies: Vec<CopyMessage>) -> Result<()> {
        self.pb.inc_length(copies.len() as u64);
        for c in copies {
            let mut stop = self.stop.clone();
            tokio::select! {
                r = self.tx.send(c) => r.map_err(|_| Error::internal("copy workers stopped early"))?,
                _ = stop.wait_for(|s| s.is_some()) => return Err(Error::internal("stopping")),
            }
        }
        Ok(())
    }
}

/// Why the run is stopping early, once it is: a signal's name, or a cancel from elsewhere.
type Stop = tokio::sync::watch::Receiver<Option<String>>;

/// How long in-flight copies may take to finish after a stop before they are abandoned
/// (an abandoned copy has committed nothing, or its whole object: never a partial blob).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Exit code after SIGINT/SIGTERM (128 + SIGINT, as shells report an interrupt).
const EXIT_INTERRUPTED: u8 = 130;

/// SIGINT or SIGTERM asks for a clean stop; a second one aborts at once.
fn watch_signals(stop: tokio::sync::watch::Sender<Option<String>>) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let first = next_signal(&mut term).await;
        eprintln!(
            "\n{first}: stopping. No new copies start; those in flight get up to {} s to finish. {first} again aborts at once.",
            STOP_GRACE.as_secs()
        );
        let _ = stop.send(Some(first.to_string()));
        let second = next_signal(&mut term).await;
        eprintln!("{second} again: aborting now. Nothing partial is visible; the run's lock frees itself when its lease runs out.");
        std::process::exit(EXIT_INTERRUPTED.into());
    });
}

/// The next SIGINT or SIGTERM, by name.
async fn next_signal(term: &mut Option<tokio::signal::unix::Signal>) -> &'static str {
    let sigterm = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = sigterm => "SIGTERM",
    }
}

/// Renews the run's lock lease for as long as this process may write (through a stop's
/// grace period and the prune, until `run` ends), and notices a cancel from elsewhere
/// (`s3-blob-sync cancel`, `POST /api/runs/{id}/cancel`) or a lost lock. A process that
/// cannot renew for two thirds of the lease stops itself: past that, another run may take
/// the lock over, and two runs must not write the same pair.
fn keep_lease(
    svc: Arc<RunService>,
    id: String,
    key: Option<String>,
    lease: Duration,
    stop: tokio::sync::watch::Sender<Option<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let halt = |why: String| {
            if stop.borrow().is_none() {
                eprintln!("stopping: {why}");
                let _ = stop.send(Some(why));
            }
        };
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(lease / 3).await;
            // Ended elsewhere: stop (the lock stays ours until this process releases it).
            if let Ok(Some(run)) = svc.store.get(&id).await {
                if run.state.is_final() && stop.borrow().is_none() {
                    halt(format!("the run was ended elsewhere ({})", run.state.as_str()));
                }
            }
            // Alive, for the sweep (a dry run has no lock whose lease would say so).
            if let Err(e) = svc.store.touch(&id).await {
                tracing::warn!(run_id = %id, error = %e, "could not mark the run alive");
            }
            let Some(key) = &key else { continue };
            match svc.store.renew(key, &id, lease).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    halt("the run's lock is no longer its own (its lease lapsed and another run took over)".into());
                    return;
                }
                Err(e) => {
                    tracing::warn!(run_id = %id, error = %e, "could not renew the run lock lease");
                    if renewed.elapsed() > lease * 2 / 3 {
                        halt(format!(
                            "the run lock's lease could not be renewed for {} s",
                            renewed.elapsed().as_secs()
                        ));
                    }
                }
            }
        }
    })
}

/// The command line that resumes this one (it was interrupted): the same arguments.
fn resume_command() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `copy` (additive) or `sync` (mirror, at most `max_deletes` deletions).
pub(super) async fn run(args: CopyArgs, mirror: bool, max_deletes: Option<u64>) -> Result<ExitCode> {
    let source = parse_s3_url(&args.source)?;
    let target = parse_blob_url(&args.target)?;
    let mut cfg = super::load_config(Some(&target))?;
    super::apply_overrides(&mut cfg, &args)?;
    crate::telemetry::init(cfg.log_format, "warn");
    let body = serde_json::json!({
        "source": {"bucket": source.bucket, "prefix": source.prefix, "inventory": args.inventory},
        "target": {"container": target.container, "prefix": target.prefix},
        "mode": if mirror { "mirror" } else { "additive" },
        "filters": {"include": args.include, "exclude": args.exclude},
        "dryRun": args.dry_run,
        "maxDeletes": max_deletes.unwrap_or(crate::messages::run_spec::DEFAULT_MAX_DELETES),
        "listShards": args.list_shards,
    });
    let (spec, _) = RunSpec::parse(&body.to_string(), "options", &cfg)?;
    let cfg = Arc::new(cfg);
    let engine = Arc::new(Engine::from_config(&cfg).await?);
    engine.checkpoint().ensure().await?;
    let svc = Arc::new(RunService::local(cfg.clone(), engine.clone()).await?);
    let lease = cfg.runs.lease;
    let run = match svc.start(spec, None, crate::model::Trigger::Cli, Some(lease)).await? {
        Started::Created(r) => r,
        Started::Busy(other) => {
            return Err(Error::invalid(format!(
                "run {other} is still running for this source and target (see `s3-blob-sync status {other}`; \
                 `s3-blob-sync cancel {other}` stops it; if its process died, its lock frees itself within \
                 SYNC_RUN_LEASE_SECS={} s of its last renewal)",
                lease.as_secs()
            )))
        }
    };
    let id = run.id.clone();
    let (stop_tx, stop) = tokio::sync::watch::channel::<Option<String>>(None);
    watch_signals(stop_tx.clone());
    let renewer = keep_lease(svc.clone(), id.clone(), run.lock_key.clone(), lease, stop_tx);

    let pb = if args.no_progress || args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} copies  {per_sec}  ETA {eta}  {msg}",
        )
        .expect("static template"),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let bytes = AtomicU64::new(0);
    let (tx, rx) = mpsc::channel::<CopyMessage>(args.concurrency as usize * 4);
    let sink = ChannelSink {
        tx,
        pb: pb.clone(),
        stop: stop.clone(),
    };

    let lister = async {
        // The run's shards list at once; each page step starts the shard's next page and
        // the first page of each child it split off.
        let step = |shard: u32, page: u64| {
            let (svc, id, sink) = (&svc, &id, &sink);
            async move { (shard, list_page(svc, id, shard, page, sink).await) }
        };
        let mut steps = futures::stream::FuturesUnordered::new();
        steps.push(step(0, 0));
        let mut result = Ok(());
        while let Some((shard, r)) = steps.next().await {
            if stop.borrow().is_some() {
                break;
            }
            match r {
                Ok(PageStep::Next { page, start }) => {
                    steps.push(step(shard, page));
                    for child in start {
                        steps.push(step(child, 0));
                    }
                }
                Ok(PageStep::ShardDone { start }) => {
                    for child in start {
                        steps.push(step(child, 0));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(steps);
        drop(sink);
        result
    };
    let workers = async {
        // After a stop no new copy starts: the stream of messages ends.
        let results = futures::stream::unfold((rx, stop.clone()), |(mut rx, mut stop)| async move {
            if stop.borrow().is_some() {
                return None;
            }
            let m = tokio::select! {
                m = rx.recv() => m,
                _ = stop.wait_for(|s| s.is_some()) => None,
            };
            m.map(|m| (m, (rx, stop)))
        })
        .map(|msg| {
            let (engine, cfg) = (&engine, &cfg);
            async move {
                let req = to_request(&msg, cfg)?;
                let (tally, bytes, reason) = match copy_in_process(engine, &req, cfg).await {
                    Ok(rep) => (Tally::of_row(rep.outcome), rep.bytes, rep.reason),
                    Err(e) => (Tally::Failed, 0, Some(e.message().to_string())),
                };
                Ok::<_, Error>(Counted {
                    key: req.key,
                    tally,
                    bytes,
                    reason,
                })
            }
        })
        .buffer_unordered(args.concurrency as usize);
        let mut results = std::pin::pin!(results);
        // This process is the run's only writer, so copies are counted in batches (one
        // transaction per shard and ~100 keys) rather than two table requests a copy.
        let mut counted: Vec<Counted> = Vec::new();
        let mut flushed = Instant::now();
        let flush = |batch: Vec<Counted>| {
            let (svc, id) = (&svc, &id);
            async move {
                if let Err(e) = svc.store.record_many(id, &batch).await {
                    tracing::warn!(run_id = %id, error = %e, objects = batch.len(), "could not count copies");
                }
            }
        };
        let mut grace = stop.clone();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = match deadline {
                None => tokio::select! {
                    r = results.next() => r,
                    _ = grace.wait_for(|s| s.is_some()) => {
                        deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
                        continue;
                    }
                },
                // Stopping: what is in flight may finish, within the grace period.
                Some(d) => match tokio::time::timeout_at(d, results.next()).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(run_id = %id, outcome = "abandoned", "copies still in flight after the grace period; abandoned (nothing partial is visible)");
                        None
                    }
                },
            };
            let Some(r) = next else { break };
            match r {
                Ok(c) => {
                    if c.tally == Tally::Transferred {
                        bytes.fetch_add(c.bytes, Ordering::Relaxed);
                    }
                    counted.push(c);
                }
                Err(e) => tracing::warn!(run_id = %id, error = %e, "could not copy"),
            }
            pb.inc(1);
            let b = bytes.load(Ordering::Relaxed);
            let per_second = (b as f64 / started.elapsed().as_secs_f64().max(0.001)) as u64;
            pb.set_message(format!("{}  {}/s", HumanBytes(b), HumanBytes(per_second)));
            if counted.len() >= 1000 || flushed.elapsed() >= Duration::from_secs(1) {
                flush(std::mem::take(&mut counted)).await;
                flushed = Instant::now();
            }
        }
        flush(counted).await;
    };
    let (listing, ()) = tokio::join!(lister, workers);
    let stopped = stop.borrow().clone();
    if let Some(why) = &stopped {
        // Whatever finished is counted; the rest is for the next run, which skips what this
        // one copied (the checkpoint says so) and converges.
        let reason = format!("interrupted ({why}); resume with: {}", resume_command());
        crate::app::service::end(&svc, &id, RunState::Cancelled, Some(reason)).await?;
    } else if let Err(e) = listing {
        let reason = format!("listing failed: {}", e.message());
        crate::app::service::end(&svc, &id, RunState::Failed, Some(reason)).await?;
    }
    // Every copy has been counted (or could not be): finish the run the same way a Function
    // App does, including mirror-mode deletes.
    let mut checks = 0;
    loop {
        match check(&svc, &id).await? {
            // The prune has more to do: at once, and it is progress, not a wait.
            CheckStep::More => continue,
            CheckStep::Wait(_) => {}
            CheckStep::Finished | CheckStep::Notify(_) => break,
        }
        checks += 1;
        if checks >= 3 {
            crate::app::service::end(
                &svc,
                &id,
                RunState::PartiallySucceeded,
                Some("some copies could not be counted".into()),
            )
            .await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing of this run writes any more: stop renewing and release the lease now rather
    // than let it run out.
    renewer.abort();
    if let Some(key) = &run.lock_key {
        if let Err(e) = svc.store.unlock(key, &id, true).await {
            tracing::warn!(run_id = %id, error = %e, "could not release the run lock; its lease runs out by itself");
        }
    }
    pb.finish_and_clear();
    let summary = svc
        .summary(&id)
        .await?
        .ok_or_else(|| crate::error::Error::internal(format!("run {id} has no row in the runs table")))?;
    let elapsed = started.elapsed();
    if args.json {
        let mut s = summary.to_json();
        s["durationMs"] = (elapsed.as_millis() as u64).into();
        println!("{s}");
    } else {
        print!("{}", super::status::run_table(&summary));
        let b = bytes.load(Ordering::Relaxed) as f64;
        println!(
            "{:.1} s, {:.1} objects/s scanned, {:.1} MiB/s copied",
            elapsed.as_secs_f64(),
            summary.objects(Tally::Scanned) as f64 / elapsed.as_secs_f64().max(0.001),
            b / 1048576.0 / elapsed.as_secs_f64().max(0.001)
        );
        if args.dry_run {
            println!("dry run: nothing was changed.");
        }
        if stopped.is_some() {
            println!("stopped early; resume with:\n  {}", resume_command());
        }
    }
    Ok(if stopped.as_deref().is_some_and(|why| why.starts_with("SIG")) {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if stopped.is_some() {
        ExitCode::from(EXIT_FAILED_OBJECTS)
    } else if summary.state == RunState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED_OBJECTS)
    })
}
