//! The command line: `serve`, `copy`, `sync`, `verify`, `watch`, `setup-events`, `status`,
//! `cancel`, `redrive` and `migrate-checkpoints`.

mod copy;
mod health;
mod migrate;
mod setup;
mod status;
mod verify;
mod watch;

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, CopyPath, MetadataPolicy};
use crate::error::{Error, ErrorKind, Result};

/// Exit code when some objects failed.
pub const EXIT_FAILED_OBJECTS: u8 = 1;
/// Exit code for bad usage or configuration, or a refusal to fix (a bad name, a missing
/// right, a run already going): the message names what to change.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code when a service could not be reached or kept failing after the retry policy's
/// attempts (refused, reset, timed out, 5xx, throttled): nothing to fix; try again later.
pub const EXIT_UNAVAILABLE: u8 = 3;

/// The exit code for an error that stopped a command: the one place errors map to codes.
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Transient | ErrorKind::Throttled | ErrorKind::NotSent => EXIT_UNAVAILABLE,
        ErrorKind::NotFound
        | ErrorKind::Precondition
        | ErrorKind::Invalid
        | ErrorKind::Auth
        | ErrorKind::Integrity
        | ErrorKind::CopySourceUnreachable
        | ErrorKind::Internal => EXIT_CONFIG,
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "s3-blob-sync",
    version,
    about = "Copy objects from AWS S3 to Azure Blob Storage, verified, and keep them in sync.",
    long_about = "Copy objects from AWS S3 to Azure Blob Storage, verified, and keep them in sync.\n\n\
        Configuration comes from the environment (see local.settings.sample.json for every \
        variable). Azure: AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with a \
        managed identity / az login / AZURE_STORAGE_SAS_TOKEN; tables and queues on their own \
        accounts with SYNC_STATE_* and SYNC_QUEUE_* (CONNECTION_STRING or ACCOUNT). AWS: the standard chain \
        (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...), AWS_REGION, and AWS_ENDPOINT_URL for emulators."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Azure Functions custom handler on FUNCTIONS_CUSTOMHANDLER_PORT.
    ///
    /// Example: FUNCTIONS_CUSTOMHANDLER_PORT=7071 s3-blob-sync serve --work-queues
    ///
    /// Example (beyond loopback): SYNC_API_KEY=$(openssl rand -hex 32) s3-blob-sync serve --port 7071 --bind 0.0.0.0
    Serve {
        /// Port to listen on (default: FUNCTIONS_CUSTOMHANDLER_PORT).
        #[arg(long)]
        port: Option<u16>,
        /// Also work the list-pages and copy-objects queues in this process, as the Functions
        /// host would: for running bulk runs locally (`curl -X POST localhost:PORT/api/runs`).
        #[arg(long)]
        work_queues: bool,
        /// With --work-queues: copies this process works at once, as the Functions host's
        /// queue `batchSize` is per instance. Scale out by running more processes.
        #[arg(long, env = "SYNC_COPY_WORKERS", default_value_t = 16,
              value_parser = clap::value_parser!(u16).range(1..=512))]
        copy_workers: u16,
        /// With --work-queues: listing steps this process works at once.
        #[arg(long, env = "SYNC_LIST_WORKERS", default_value_t = 4,
              value_parser = clap::value_parser!(u16).range(1..=64))]
        list_workers: u16,
        /// Address to listen on. Anything but loopback needs SYNC_API_KEY, which every caller
        /// then sends (x-functions-key, Authorization: Bearer, or ?code=).
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
    },
    /// Copy every object under an S3 prefix to a container prefix, verified and checkpointed
    /// (a bulk run; `status RUN_ID` shows it). Never deletes. Ctrl-C stops cleanly and prints
    /// the command that resumes.
    ///
    /// Example: s3-blob-sync copy s3://my-bucket/logs/ https://myaccount.blob.core.windows.net/archive/logs/ --dry-run
    Copy(CopyArgs),
    /// Like copy, then delete blobs under the target prefix whose source object is gone
    /// (only blobs this tool wrote; at most --max-deletes, or nothing is deleted).
    ///
    /// Example: s3-blob-sync sync s3://my-bucket/ https://myaccount.blob.core.windows.net/mirror/ --max-deletes 500 --dry-run
    Sync {
        #[command(flatten)]
        args: CopyArgs,
        /// Refuse to delete more than this many blobs (the run ends PartiallySucceeded).
        #[arg(long, default_value_t = crate::messages::run_spec::DEFAULT_MAX_DELETES)]
        max_deletes: u64,
    },
    /// Keep a container in sync with a bucket's events: drain SQS into the copy queue and
    /// work it off, until SIGTERM or Ctrl-C.
    ///
    /// Example: SYNC_TARGET_CONTAINER=mirror s3-blob-sync watch --queue-url https://sqs.us-east-1.amazonaws.com/123456789012/s3-blob-sync-events
    ///
    /// Example (in a container, probed on 8080): s3-blob-sync watch --health-port 8080 --health-bind 0.0.0.0
    Watch {
        /// The SQS queue with the bucket's event notifications (default: SYNC_SQS_QUEUE_URL).
        #[arg(long)]
        queue_url: Option<String>,
        /// Objects copied at once.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
        workers: u16,
        /// Drain until SQS is empty, work off the copy queue, then exit.
        #[arg(long)]
        once: bool,
        /// Answer probes on this port: GET /livez (200 while the worker's loops run, also in
        /// an outage) and GET /readyz (200 once credentials and queues were checked and while
        /// both clouds answer; 503 otherwise).
        #[arg(long, conflicts_with = "once")]
        health_port: Option<u16>,
        /// Address the probes listen on: loopback unless the platform probes from outside
        /// the container (Container Apps, Kubernetes HTTP probes).
        #[arg(long, default_value = "127.0.0.1", requires = "health_port")]
        health_bind: std::net::IpAddr,
    },
    /// Ask a local `watch --health-port` whether it is live (or, with --ready, ready): exit 0
    /// on 200, 1 otherwise. For health checks that run a command in the container (ECS).
    ///
    /// Example: s3-blob-sync health --port 8080 --ready
    Health {
        /// The port `watch --health-port` listens on.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Ask for readiness rather than liveness.
        #[arg(long)]
        ready: bool,
    },
    /// Compare a source prefix with its target prefix: missing, extra, size-mismatch,
    /// checksum-mismatch (the blob holds another source version) and metadata-mismatch (no
    /// provenance) entries. Exit 1 when they differ.
    ///
    /// Example: s3-blob-sync verify s3://my-bucket/ https://myaccount.blob.core.windows.net/mirror/ --json
    Verify {
        /// Source, as s3://bucket/prefix.
        source: String,
        /// Target container URL and prefix.
        target: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Copy what is missing or stale (ignoring the checkpoint), then verify again. Extra
        /// blobs are reported, never deleted (use `sync`).
        #[arg(long)]
        repair: bool,
        /// Also compare each matching object's content headers and user metadata with its
        /// blob's (what a listing cannot show: a metadata-only change in the same second as
        /// the write before it). Costs one S3 HEAD per matching object (a GET-class request,
        /// about $0.0004 per 1,000 in us-east-1), 16 at a time.
        #[arg(long)]
        metadata: bool,
        /// Objects repaired at once.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
        concurrency: u16,
    },
    /// Point the bucket's event notifications at the SQS queue and check the queue policy.
    ///
    /// Example: s3-blob-sync setup-events --bucket my-bucket --queue-url https://sqs.us-east-1.amazonaws.com/123456789012/s3-blob-sync-events --dry-run
    SetupEvents(setup::SetupArgs),
    /// Stop a running run (CLI or Function App): it ends Cancelled with what it did so far,
    /// and its source/target lock is released at once.
    ///
    /// Example: s3-blob-sync cancel 20261202T054518Z-49770363
    Cancel {
        /// The run id (from `copy`, `sync`, `status --runs` or POST /api/runs).
        run_id: String,
        /// Only say what would be cancelled.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move checkpoint rows of the previous form (one row per source key) to their blobs'
    /// rows (one row per target blob), and drop split plans of that form. Run it once after
    /// upgrading, with the old version stopped: without it, the first pass over each object
    /// looks at its blob again (no copy). Idempotent; an interrupted run resumes.
    ///
    /// Example: s3-blob-sync migrate-checkpoints --dry-run
    MigrateCheckpoints {
        /// Only count what would move.
        #[arg(long)]
        dry_run: bool,
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bring S3 events back from the SQS dead-letter queue to the events queue (after an
    /// outage outlasted the retry pauses). Each is sent, then deleted from the dead-letter
    /// queue, so none is lost.
    ///
    /// Example: s3-blob-sync redrive --queue-url https://sqs.us-east-1.amazonaws.com/123456789012/s3-blob-sync-events --dry-run
    Redrive {
        /// The events queue whose RedrivePolicy names the dead-letter queue (default:
        /// SYNC_SQS_QUEUE_URL).
        #[arg(long)]
        queue_url: Option<String>,
        /// Only report how many messages wait in the dead-letter queue.
        #[arg(long)]
        dry_run: bool,
        /// Move at most this many messages.
        #[arg(long, default_value_t = u64::MAX, hide_default_value = true)]
        max: u64,
        /// Also move messages that carry no DeadLetterQueueSourceArn (not dead-lettered by
        /// SQS, e.g. sent there by hand). Messages another queue dead-lettered never move.
        #[arg(long)]
        any_source: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a run (`status RUN_ID`, `status --runs` for recent ones), or the checkpoint rows
    /// of a bucket (`status --bucket B`): what was copied, skipped or failed, and why; and the
    /// SQS backlog when SYNC_SQS_QUEUE_URL (or --queue-url) is set.
    ///
    /// Example: s3-blob-sync status 20261202T054518Z-49770363 --watch
    ///
    /// Example: s3-blob-sync status 20261202T054518Z-49770363 --report --csv > not-copied.csv
    ///
    /// Example: s3-blob-sync status --cutover --bucket my-bucket --container mirror
    ///
    /// Example: s3-blob-sync status --cutover --bucket my-bucket --container mirror --source-prefix logs/ --target-prefix archive/logs/
    Status(status::StatusArgs),
}

/// Arguments of `copy`.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// Source, as s3://bucket/prefix.
    pub source: String,
    /// Target container URL and prefix, e.g. https://acct.blob.core.windows.net/container/prefix
    /// (Azurite: http://127.0.0.1:10000/devstoreaccount1/container/prefix).
    pub target: String,
    /// Print what would be copied, skipped or refused, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Objects copied at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,
    /// auto (server-side, falling back to streamed), server-side, or streamed.
    #[arg(long, env = "SYNC_COPY_PATH", value_parser = ["auto", "server-side", "streamed"])]
    pub copy_path: Option<String>,
    /// What to do with S3 metadata names Azure rejects: exclude, fail, or rename.
    #[arg(long, env = "SYNC_METADATA_POLICY", value_parser = ["exclude", "fail", "rename"])]
    pub metadata_policy: Option<String>,
    /// Only keys (relative to the source prefix) matching this glob; repeatable. `*` stays
    /// within a `/` segment, `**` crosses them.
    #[arg(long)]
    pub include: Vec<String>,
    /// Leave out keys matching this glob; repeatable; wins over --include.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// List from an S3 Inventory report (CSV) instead of LIST requests: its manifest, as
    /// s3://bucket/prefix/source-bucket/config-ID/YYYY-MM-DDTHH-MMZ/manifest.json. Objects
    /// written after the report are for events or a following listing run.
    #[arg(long)]
    pub inventory: Option<String>,
    /// Key ranges (or inventory files) listed at once.
    #[arg(long, env = "SYNC_LIST_SHARDS", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub list_shards: Option<u32>,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Loads the configuration for a CLI run against `target`: with no Azure variables set, the
/// account comes from the URL and Entra ID is used.
fn load_config(target: Option<&crate::config::location::BlobLocation>) -> Result<Config> {
    let mut env: HashMap<String, String> = std::env::vars().collect();
    let has_azure = ["AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT"]
        .iter()
        .any(|v| env.get(*v).is_some_and(|s| !s.trim().is_empty()));
    if let (false, Some(t)) = (has_azure, target) {
        env.insert("AZURE_STORAGE_ACCOUNT".into(), t.account.clone());
    }
    env.entry("SYNC_LOG_FORMAT".into()).or_insert_with(|| "pretty".into());
    let mut cfg = Config::from(&env)?;
    if let Some(t) = target {
        if cfg.azure.name != t.account {
            return Err(Error::invalid(format!(
                "target URL names account `{}` but the Azure credentials are for `{}`",
                t.account, cfg.azure.name
            )));
        }
        cfg.azure.blob_endpoint = t.endpoint.clone();
    }
    Ok(cfg)
}

fn apply_overrides(cfg: &mut Config, args: &CopyArgs) -> Result<()> {
    if let Some(p) = &args.copy_path {
        cfg.engine.copy_path = crate::model::parse_choice::<CopyPath>(p).map_err(Error::invalid)?;
    }
    if let Some(p) = &args.metadata_policy {
        cfg.engine.metadata_policy = crate::model::parse_choice::<MetadataPolicy>(p).map_err(Error::invalid)?;
    }
    Ok(())
}

/// Entry point used by `main`.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            port,
            work_queues,
            copy_workers,
            list_workers,
            bind,
        } => {
            let workers = work_queues.then_some((list_workers as usize, copy_workers as usize));
            serve(port, workers, bind).await
        }
        Command::Copy(args) => copy::run(args, false, None).await,
        Command::Sync { args, max_deletes } => copy::run(args, true, Some(max_deletes)).await,
        Command::Watch {
            queue_url,
            workers,
            once,
            health_port,
            health_bind,
        } => {
            let health = watch::HealthListen {
                port: health_port,
                bind: health_bind,
            };
            watch::run(queue_url, workers as usize, once, health).await
        }
        Command::Health { port, ready } => health::check(port, ready).await,
        Command::SetupEvents(args) => setup::run(args).await,
        Command::Cancel { run_id, dry_run } => status::cancel(&run_id, dry_run).await,
        Command::MigrateCheckpoints { dry_run, json } => migrate::run(dry_run, json).await,
        Command::Redrive {
            queue_url,
            dry_run,
            max,
            any_source,
            json,
        } => watch::redrive(queue_url, dry_run, max, any_source, json).await,
        Command::Verify {
            source,
            target,
            json,
            repair,
            metadata,
            concurrency,
        } => verify::run(source, target, json, repair, metadata, concurrency as usize).await,
        Command::Status(args) => status::show(args.mode()).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message());
            ExitCode::from(exit_code(e.kind()))
        }
    }
}

/// Serves the handler; with `workers` (list, copy), also works the queues in this process.
async fn serve(port: Option<u16>, workers: Option<(usize, usize)>, bind: std::net::IpAddr) -> Result<ExitCode> {
    let port = match port {
        Some(p) => p,
        None => {
            let v = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT").map_err(|_| {
                Error::invalid("FUNCTIONS_CUSTOMHANDLER_PORT is not set (the Functions host sets it; or pass --port)")
            })?;
            v.trim()
                .parse()
                .map_err(|_| Error::invalid(format!("FUNCTIONS_CUSTOMHANDLER_PORT: `{v}` is not a port number")))?
        }
    };
    let config = Config::from_env()?;
    crate::telemetry::init(config.log_format, "info");
    crate::functions::access::check_bind(bind, &config)?;
    // Without the Functions host, nothing else fires ScheduledRun: this process does.
    let schedule = match (&workers, config.runs.schedule.as_deref()) {
        (Some(_), Some(text)) if !config.server.functions_host => {
            if config.runs.scheduled.is_none() {
                return Err(Error::invalid(
                    "SYNC_SCHEDULE is set but SYNC_SCHEDULED_RUN is not: set the run body the schedule starts, or unset SYNC_SCHEDULE",
                ));
            }
            Some(crate::app::schedule::Schedule::parse(text)?)
        }
        (_, Some(_)) if config.server.functions_host => {
            tracing::info!(
                "SYNC_SCHEDULE is fired by the Functions host (FUNCTIONS_WORKER_RUNTIME is set), not by this process"
            );
            None
        }
        (None, Some(_)) => {
            tracing::warn!(
                "SYNC_SCHEDULE is set but nothing fires it: run `serve --work-queues` (or the Function App)"
            );
            None
        }
        _ => None,
    };
    let state = crate::app::AppState::new(config).await?;
    let listener = tokio::net::TcpListener::bind((bind, port))
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {bind}:{port}: {e}")))?;
    tracing::info!(
        port,
        bind = %bind,
        api_key = state.config.server.api_key.is_some(),
        version = env!("CARGO_PKG_VERSION"),
        work_queues = workers.is_some(),
        list_workers = workers.map_or(0, |w| w.0),
        copy_workers = workers.map_or(0, |w| w.1),
        "custom handler listening"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some((list, copy)) = workers {
        use crate::app::worker::{QueueFunction, Worker};
        for (f, n) in [(QueueFunction::ListPage, list), (QueueFunction::CopyObject, copy)] {
            let w = Worker::new(state.clone(), f, n).await?;
            let rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                w.run(rx, None).await;
            }));
        }
        // The sweep runs on its own period; the schedule is the one the Functions host reads.
        let period = state.config.runs.sweep_interval;
        tasks.push(tokio::spawn(crate::app::sweep::every(
            state.clone(),
            period,
            stop_rx.clone(),
        )));
        if let Some(schedule) = schedule {
            tasks.push(tokio::spawn(crate::app::schedule::every(
                state.clone(),
                schedule,
                stop_rx.clone(),
            )));
        }
    }
    // The signal stops the queue workers at once (their grace period starts), while the
    // server finishes the requests it holds.
    let stop_tx = std::sync::Arc::new(stop_tx);
    let signalled = {
        let stop_tx = stop_tx.clone();
        async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        }
    };
    let grace = state.config.queues.shutdown_grace;
    axum::serve(listener, crate::router(state))
        .with_graceful_shutdown(signalled)
        .await
        .map_err(|e| Error::internal(format!("server: {e}")))?;
    let _ = stop_tx.send(true);
    within_stop_bound(grace, futures::future::join_all(tasks)).await;
    Ok(ExitCode::SUCCESS)
}

/// Awaits what a stopping worker process still runs, for at most the workers' own bound (the
/// grace period plus a hand-back) and a margin for whatever else hangs (a relay mid-batch, a
/// request without an answer); past it, says so and gives up (`None`).
pub(crate) async fn within_stop_bound<T>(
    grace: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let bound = grace + std::time::Duration::from_secs(8);
    let ended = tokio::time::timeout(bound, work).await.ok();
    if ended.is_none() {
        tracing::error!(
            bound_s = bound.as_secs(),
            outcome = "abandoned",
            "stopping: work still running after the bound; exiting (what it held returns after its visibility timeout)"
        );
    }
    ended
}

pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
