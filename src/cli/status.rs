//! `status`: a run's summary, recent runs, or the checkpoint rows of a bucket.

use std::process::ExitCode;

use crate::app::summary::RunSummary;
use crate::error::Result;
use crate::state::checkpoint::{CheckpointStore, Outcome};
use crate::state::runs::counters::Tally;
use crate::state::runs::store::RunState;

/// The arguments of `status`. Which of its modes runs is [`StatusArgs::mode`]'s answer.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A run id (from `copy`, `sync`, or POST /api/runs).
    pub run_id: Option<String>,
    /// List recent runs.
    #[arg(long, conflicts_with_all = ["run_id", "bucket"])]
    pub runs: bool,
    /// The source bucket: its checkpoint rows, in the table's order (by target, then blob
    /// name), read a page at a time.
    #[arg(long, required_unless_present_any = ["run_id", "runs"])]
    pub bucket: Option<String>,
    /// The SQS queue to report the backlog of.
    #[arg(long)]
    pub queue_url: Option<String>,
    /// Only rows that are not copied or up to date.
    #[arg(long)]
    pub problems: bool,
    /// At most this many rows.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print every row as one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With a run id: follow the run, printing it every few seconds until it ends.
    #[arg(long, requires = "run_id", conflicts_with = "report")]
    pub watch: bool,
    /// With a run id: print the run's per-object report, one key a line with its outcome
    /// and reason (JSON Lines; every key that was not copied unless --outcome says).
    #[arg(long, requires = "run_id")]
    pub report: bool,
    /// With --report: which outcomes, comma-separated (excluded, unsupported, failed,
    /// retrying, deleted, vanished, transferred, noTransferNeeded, wouldTransfer,
    /// wouldDelete), or `all`.
    #[arg(long, requires = "report")]
    pub outcome: Option<String>,
    /// With --report: CSV with a header line instead of JSON Lines. A key or reason that
    /// starts with `=`, `+`, `-`, `@`, a tab or a carriage return is written with a
    /// leading `'` so that a spreadsheet shows it instead of running it as a formula;
    /// drop that one `'` to get the raw key back, or use the JSON Lines report, which
    /// keeps every key exactly as it is.
    #[arg(long, requires = "report", conflicts_with = "json")]
    pub csv: bool,
    /// With --bucket: the cutover gate. Exit 0 when `ready` (no SQS backlog, relay lag
    /// under the bound, no pending copy or running run, nothing failed, parked or
    /// dead-lettered, and a recent clean verify); otherwise exit 1 with each reason.
    #[arg(long, requires = "bucket", conflicts_with_all = ["run_id", "runs", "problems"])]
    pub cutover: bool,
    /// With --cutover: the target container (default SYNC_TARGET_CONTAINER).
    #[arg(long, requires = "cutover")]
    pub container: Option<String>,
    /// With --cutover: the keys asked about (default SYNC_SOURCE_PREFIX, the events'
    /// mapping). Only a verify whose scope covers these keys, onto the same names, counts.
    #[arg(long, requires = "cutover")]
    pub source_prefix: Option<String>,
    /// With --cutover: where those keys' blobs are (default: the events' mapping of
    /// --source-prefix, SYNC_SOURCE_PREFIX onto SYNC_TARGET_PREFIX).
    #[arg(long, requires = "cutover")]
    pub target_prefix: Option<String>,
    /// With --cutover: the relay's lag at most this many seconds.
    #[arg(long, requires = "cutover", default_value_t = 300)]
    pub max_lag_seconds: u64,
    /// With --cutover: the last clean verify at most this many seconds old.
    #[arg(long, requires = "cutover", default_value_t = 86400)]
    pub max_verify_age_seconds: u64,
}

/// What `status` shows, chosen from its flags in one place.
#[derive(Debug)]
pub enum StatusMode {
    /// `status RUN_ID --report`: the run's per-object report.
    Report {
        /// The run.
        run_id: String,
        /// Which outcomes (`--outcome`).
        outcome: Option<String>,
        /// CSV instead of JSON Lines.
        csv: bool,
    },
    /// `status RUN_ID [--watch]`: the run's summary.
    Run {
        /// The run.
        run_id: String,
        /// As JSON.
        json: bool,
        /// Follow it until it ends.
        watch: bool,
    },
    /// `status --runs`: recent runs.
    Runs {
        /// At most this many.
        limit: usize,
        /// As JSON.
        json: bool,
    },
    /// `status --cutover --bucket B`: the cutover gate for one scope.
    Cutover {
        /// The source bucket.
        bucket: String,
        /// The target container (default SYNC_TARGET_CONTAINER).
        container: Option<String>,
        /// The keys asked about.
        source_prefix: Option<String>,
        /// Where their blobs are.
        target_prefix: Option<String>,
        /// The gate's bounds.
        bounds: crate::app::cutover::Bounds,
        /// As JSON.
        json: bool,
    },
    /// `status --bucket B`: the bucket's checkpoint rows and the SQS backlog.
    Bucket {
        /// The source bucket.
        bucket: String,
        /// The SQS queue to report the backlog of.
        queue_url: Option<String>,
        /// Only rows that are not copied or up to date.
        problems: bool,
        /// At most this many rows.
        limit: usize,
        /// As JSON lines.
        json: bool,
    },
}

impl StatusArgs {
    /// The mode the flags ask for. A run id wins (its report with `--report`), then
    /// `--runs`, then `--cutover`, then the bucket's rows; clap's rules keep the rest apart.
    pub fn mode(self) -> StatusMode {
        let s = self;
        match (s.run_id, s.bucket) {
            (Some(run_id), _) if s.report => StatusMode::Report {
                run_id,
                outcome: s.outcome,
                csv: s.csv,
            },
            (Some(run_id), _) => StatusMode::Run {
                run_id,
                json: s.json,
                watch: s.watch,
            },
            (None, _) if s.runs => StatusMode::Runs {
                limit: s.limit,
                json: s.json,
            },
            (None, Some(bucket)) if s.cutover => StatusMode::Cutover {
                bucket,
                container: s.container,
                source_prefix: s.source_prefix,
                target_prefix: s.target_prefix,
                bounds: crate::app::cutover::Bounds {
                    max_lag: std::time::Duration::from_secs(s.max_lag_seconds),
                    max_verify_age: std::time::Duration::from_secs(s.max_verify_age_seconds),
                },
                json: s.json,
            },
            (None, bucket) => StatusMode::Bucket {
                bucket: bucket.unwrap_or_default(),
                queue_url: s.queue_url,
                problems: s.problems,
                limit: s.limit,
                json: s.json,
            },
        }
    }
}

/// Runs `status` in `mode`.
pub(super) async fn show(mode: StatusMode) -> Result<ExitCode> {
    match mode {
        StatusMode::Report { run_id, outcome, csv } => run_report(&run_id, outcome.as_deref(), csv).await,
        StatusMode::Run { run_id, json, watch } => run_status(&run_id, json, watch).await,
        StatusMode::Runs { limit, json } => recent_runs(limit, json).await,
        StatusMode::Cutover {
            bucket,
            container,
            source_prefix,
            target_prefix,
            bounds,
            json,
        } => {
            let prefixes = (source_prefix.as_deref(), target_prefix.as_deref());
            cutover(&bucket, container, prefixes, bounds, json).await
        }
        StatusMode::Bucket {
            bucket,
            queue_url,
            problems,
            limit,
            json,
        } => run(&bucket, queue_url, problems, limit, json).await,
    }
}

/// Where a checkpoint row's object went: `account/container/blob` (the blob name carries
/// the target prefix).
fn target_of(r: &crate::state::checkpoint::ObjectRecord) -> String {
    match &r.blob {
        Some(b) => format!("{}/{b}", r.target),
        None => r.target.clone(),
    }
}

/// One checkpoint row as a JSON line.
fn row_json(r: &crate::state::checkpoint::ObjectRecord) -> serde_json::Value {
    serde_json::json!({
        "bucket": r.bucket, "key": r.key, "target": r.target, "blob": r.blob,
        "outcome": r.outcome.as_str(), "reason": r.reason, "etag": r.etag, "size": r.size,
        "verified": r.verified, "path": r.path, "sequencer": r.sequencer,
        "lastEvent": r.last_event, "eventTime": r.event_time, "updatedAt": r.updated_at,
    })
}

pub(super) async fn run(
    bucket: &str,
    queue_url: Option<String>,
    problems: bool,
    limit: usize,
    json: bool,
) -> Result<ExitCode> {
    let cfg = super::load_config(None)?;
    crate::telemetry::init(cfg.log_format, "warn");
    let auth = cfg.state.authorizer()?;
    let store = CheckpointStore::open(&cfg.state, &auth, &cfg.tables.checkpoint, cfg.retry)?;
    // Page by page: a bucket of a billion rows is counted, not held. JSON lines are printed
    // as they come; the table keeps the first `limit` rows shown.
    let (mut total, mut matching, mut shown) = (0u64, 0u64, Vec::new());
    store
        .each_of_bucket(bucket, async |page| {
            total += page.len() as u64;
            for r in page {
                if problems && matches!(r.outcome, Outcome::Copied | Outcome::NoTransferNeeded) {
                    continue;
                }
                matching += 1;
                if json {
                    println!("{}", row_json(&r));
                } else if shown.len() < limit {
                    shown.push(r);
                }
            }
            Ok(())
        })
        .await?;
    if json {
        return Ok(ExitCode::SUCCESS);
    }
    // A key copied to two containers (or under two prefixes) has a row for each: the target
    // column tells them apart.
    let mut t = table(
        &["outcome", "bytes", "verified", "key", "target", "last event", "reason"],
        &[1],
    );
    for r in &shown {
        let event = match (&r.last_event, &r.event_time) {
            (Some(e), Some(t)) => format!("{e} @ {t}"),
            (Some(e), None) => e.clone(),
            _ => "-".into(),
        };
        t.add_row(vec![
            r.outcome.as_str().to_string(),
            r.size.map(|s| s.to_string()).unwrap_or_default(),
            r.verified.map_or("-", crate::model::Verification::as_str).to_string(),
            r.key.clone(),
            target_of(r),
            event,
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    if matching > shown.len() as u64 {
        println!("… {} more (use --limit)", matching - shown.len() as u64);
    }
    println!(
        "{total} checkpoint rows for bucket {bucket} in table {}",
        cfg.tables.checkpoint
    );
    if let Some(url) = queue_url.or(cfg.relay.queue_url.clone()) {
        let sqs = crate::aws::sqs::SqsQueue::new(&cfg.aws, &url, cfg.retry).await;
        let d = sqs.depth().await?;
        let last = store.lag().last(&url).await?;
        println!(
            "sqs backlog: ~{} waiting, ~{} in flight; {}",
            d.visible,
            d.in_flight,
            match last {
                Some(l) => format!(
                    "last drain {}, oldest message then {:.1} s old",
                    l.at,
                    l.oldest_age_ms as f64 / 1000.0
                ),
                None => "no drain recorded yet".into(),
            }
        );
        match sqs.dead_letter().await? {
            Some((dlq, max)) => {
                let n = dlq.depth().await?.visible;
                println!(
                    "dead-letter queue: ~{n} messages{} (after {max} receives); bring them back with `s3-blob-sync redrive`",
                    if n > 0 { " — changes the target has NOT seen" } else { "" }
                );
            }
            None => println!("dead-letter queue: none (the events queue has no RedrivePolicy)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn runs_service() -> Result<crate::app::service::RunService> {
    let cfg = super::load_config(None)?;
    crate::telemetry::init(cfg.log_format, "warn");
    let engine = std::sync::Arc::new(crate::engine::Engine::from_config(&cfg).await?);
    crate::app::service::RunService::local(std::sync::Arc::new(cfg), engine).await
}

/// `status RUN_ID`: the run's summary (exit 0 when Succeeded or still running). With
/// `watch`, again every few seconds until the run ends (exit as for its end state).
pub(super) async fn run_status(id: &str, json: bool, watch: bool) -> Result<ExitCode> {
    let svc = runs_service().await?;
    let summary = loop {
        let Some(summary) = svc.summary(id).await? else {
            return Err(crate::error::Error::invalid(format!(
                "no run with id `{id}` in table {} (see `status --runs`)",
                svc.config.tables.runs
            )));
        };
        if json {
            println!("{}", summary.to_json());
        } else {
            print!("{}", run_table(&summary));
        }
        if !watch || summary.state != RunState::Running {
            break summary;
        }
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        if !json {
            println!();
        }
    };
    Ok(match summary.state {
        RunState::Succeeded | RunState::Running => ExitCode::SUCCESS,
        _ => ExitCode::from(super::EXIT_FAILED_OBJECTS),
    })
}

/// `status RUN_ID --report`: every key of the run's report, all pages, as JSON Lines or
/// CSV on stdout; exit 0 (the report is the answer, whatever it holds).
pub(super) async fn run_report(id: &str, outcome: Option<&str>, csv: bool) -> Result<ExitCode> {
    use crate::state::runs::report::{csv_line, parse_outcomes, report_page, CSV_HEADER, MAX_PAGE};
    use std::io::Write;
    let outcomes = parse_outcomes(outcome).map_err(|e| e.context("--outcome"))?;
    let svc = runs_service().await?;
    if svc.store.get(id).await?.is_none() {
        return Err(crate::error::Error::invalid(format!(
            "no run with id `{id}` in table {} (see `status --runs`)",
            svc.config.tables.runs
        )));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let write_err = |e: std::io::Error| crate::error::Error::internal(format!("writing the report: {e}"));
    if csv {
        writeln!(out, "{CSV_HEADER}").map_err(write_err)?;
    }
    let mut cursor: Option<String> = None;
    loop {
        let page = report_page(&svc.store, id, &outcomes, MAX_PAGE, cursor.as_deref()).await?;
        for l in &page.lines {
            let line = if csv {
                csv_line(l)
            } else {
                serde_json::to_string(l).expect("serializable")
            };
            writeln!(out, "{line}").map_err(write_err)?;
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    out.flush().map_err(write_err)?;
    Ok(ExitCode::SUCCESS)
}

/// `status --cutover --bucket B`: the cutover gate; exit 0 when ready, 1 when not.
pub(super) async fn cutover(
    bucket: &str,
    container: Option<String>,
    (source_prefix, target_prefix): (Option<&str>, Option<&str>),
    bounds: crate::app::cutover::Bounds,
    json: bool,
) -> Result<ExitCode> {
    let svc = runs_service().await?;
    let container = match container.or_else(|| svc.config.mapping.container.clone()) {
        Some(c) => c,
        None => {
            return Err(crate::error::Error::invalid(
                "--container: required when SYNC_TARGET_CONTAINER is not set",
            ))
        }
    };
    let scope = crate::app::cutover::asked_scope(&svc.config, bucket, &container, source_prefix, target_prefix)
        .map_err(|e| crate::error::Error::invalid(cli_names(e.message())))?;
    let gate = crate::app::cutover::assess(&svc, &scope, bounds).await?;
    if json {
        println!("{}", serde_json::to_string(&gate).expect("serializable"));
    } else {
        println!("cutover {scope}: {}", gate.state);
        let mut t = table(&["", "check", "value", "at most", "detail"], &[2, 3]);
        for c in &gate.checks {
            t.add_row(vec![
                if c.ok { "ok" } else { "!!" }.to_string(),
                c.name.to_string(),
                c.value.to_string(),
                c.limit.to_string(),
                c.detail.to_string(),
            ]);
        }
        println!("{t}");
    }
    Ok(if gate.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILED_OBJECTS)
    })
}

/// `status --runs`: recent runs, newest first.
pub(super) async fn recent_runs(limit: usize, json: bool) -> Result<ExitCode> {
    let svc = runs_service().await?;
    let mut t = table(&["run", "state", "trigger", "source", "target"], &[]);
    for r in svc.store.recent(limit).await? {
        if json {
            println!(
                "{}",
                serde_json::json!({"runId": r.id, "state": r.state.as_str(), "trigger": r.trigger,
                    "startTime": r.started_at, "endTime": r.ended_at, "source": r.spec.source, "target": r.spec.target})
            );
        } else {
            t.add_row(vec![
                r.id.clone(),
                r.state.as_str().to_string(),
                r.trigger.map(|t| t.to_string()).unwrap_or_default(),
                format!("s3://{}/{}", r.spec.source.bucket, r.spec.source.prefix),
                format!("{}/{}", r.spec.target.container, r.spec.target.prefix),
            ]);
        }
    }
    if !json {
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A terminal table with a header; the columns in `right` are right-aligned (numbers).
fn table(header: &[&str], right: &[usize]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING).set_header(header.to_vec());
    for &i in right {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    t
}

/// A run summary as a terminal table.
pub(super) fn run_table(s: &RunSummary) -> String {
    if let Some(v) = &s.verify {
        return verify_table(s, v);
    }
    let mut out = format!(
        "run {}: {} ({}) {}{}\n",
        s.run_id,
        s.state.as_str(),
        <&str>::from(s.mode),
        s.route(),
        if s.dry_run { " [dry run]" } else { "" },
    );
    let mut t = table(&["counter", "objects", "bytes"], &[1, 2]);
    for tally in Tally::ALL {
        let n = s.objects(tally);
        if tally == Tally::Enqueued || (n == 0 && tally != Tally::Scanned) {
            continue;
        }
        t.add_row(vec![
            tally.name().to_string(),
            n.to_string(),
            s.counters.bytes(tally).to_string(),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    if let Some(r) = &s.reason {
        out.push_str(&format!("reason: {r}\n"));
    }
    for f in &s.failures {
        out.push_str(&format!("  ! {}: {}\n", f.key, f.reason));
    }
    let skipped: u64 = [
        Tally::Excluded,
        Tally::Unsupported,
        Tally::Failed,
        Tally::Pruned,
        Tally::Vanished,
    ]
    .iter()
    .map(|t| s.objects(*t))
    .sum();
    if skipped > 0 {
        out.push_str(&format!(
            "{skipped} objects were not copied; each is named with its reason by: s3-blob-sync status {} --report\n",
            s.run_id
        ));
    }
    out
}

/// A verify run's summary: its tallies and differences by kind, as `verify` prints them.
fn verify_table(s: &RunSummary, v: &crate::app::summary::VerifyProgress) -> String {
    let mut out = format!(
        "verify run {}: {} {} ({} slices{})\n",
        s.run_id,
        s.state.as_str(),
        s.route(),
        v.slices,
        if v.done { "" } else { ", still comparing" },
    );
    out.push_str(&v.report.table());
    if let Some(r) = &s.reason {
        out.push_str(&format!("reason: {r}\n"));
    }
    if !v.report.counts.is_empty() {
        out.push_str(&format!(
            "each difference is named by: s3-blob-sync status {} --report\n",
            s.run_id
        ));
    }
    out
}

/// `cancel RUN_ID`: ends a running run as Cancelled and releases its lock. A CLI process
/// driving it notices within a third of its lease and stops; a Function App's queued copies
/// of it are dropped as they come.
pub(super) async fn cancel(id: &str, dry_run: bool) -> Result<ExitCode> {
    let svc = runs_service().await?;
    let Some(run) = svc.store.get(id).await? else {
        return Err(crate::error::Error::invalid(format!(
            "no run with id `{id}` in table {} (see `status --runs`)",
            svc.config.tables.runs
        )));
    };
    if run.state.is_final() {
        println!("run {id} already ended: {}", run.state.as_str());
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        println!(
            "dry run: would cancel run {id} ({}, phase {}); nothing was changed.",
            run.state.as_str(),
            run.phase.as_str()
        );
        return Ok(ExitCode::SUCCESS);
    }
    match svc.cancel(id, "the CLI (cancel)").await {
        Ok(_) => {
            println!(
                "run {id} cancelled; its source/target lock is released. `s3-blob-sync status {id}` shows what it did."
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == crate::error::ErrorKind::Precondition => {
            println!("{}", e.message());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

/// An API field's name in a message, as the CLI flag that sets it.
fn cli_names(message: &str) -> String {
    message
        .replace("sourcePrefix", "--source-prefix")
        .replace("targetPrefix", "--target-prefix")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::StatusMode;
    use crate::cli::{Cli, Command};

    fn mode(args: &[&str]) -> StatusMode {
        let cli = Cli::try_parse_from([&["s3-blob-sync", "status"], args].concat()).unwrap();
        match cli.command {
            Command::Status(a) => a.mode(),
            c => panic!("{c:?}"),
        }
    }

    /// The flags users and the README know choose the same mode as before the enum.
    #[test]
    fn each_documented_flag_set_chooses_its_mode() {
        assert!(matches!(mode(&["R1"]), StatusMode::Run { run_id, json: false, watch: false } if run_id == "R1"));
        assert!(matches!(
            mode(&["R1", "--watch", "--json"]),
            StatusMode::Run {
                json: true,
                watch: true,
                ..
            }
        ));
        assert!(matches!(
            mode(&["R1", "--report", "--csv", "--outcome", "failed"]),
            StatusMode::Report { csv: true, outcome: Some(o), .. } if o == "failed"
        ));
        // A run id wins over --bucket, as it always did.
        assert!(matches!(mode(&["R1", "--bucket", "b"]), StatusMode::Run { .. }));
        assert!(matches!(
            mode(&["--runs", "--limit", "7"]),
            StatusMode::Runs { limit: 7, json: false }
        ));
        match mode(&[
            "--cutover",
            "--bucket",
            "bkt",
            "--container",
            "c",
            "--max-lag-seconds",
            "9",
        ]) {
            StatusMode::Cutover {
                bucket,
                container,
                bounds,
                ..
            } => {
                assert_eq!((bucket.as_str(), container.as_deref()), ("bkt", Some("c")));
                assert_eq!(bounds.max_lag.as_secs(), 9);
                assert_eq!(bounds.max_verify_age.as_secs(), 86_400);
            }
            m => panic!("{m:?}"),
        }
        assert!(matches!(
            mode(&["--bucket", "bkt", "--problems"]),
            StatusMode::Bucket { bucket, problems: true, limit: 50, .. } if bucket == "bkt"
        ));
        // clap keeps the modes apart where two would apply.
        for bad in [&["--runs", "R1"][..], &["--cutover", "--runs"], &["--report"], &[]] {
            let args = [&["s3-blob-sync", "status"], bad].concat();
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}
