//! `copy`: every object under an S3 prefix, with bounded concurrency, a progress bar and a
//! summary table.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::{parse_blob_url, parse_s3_url, CopyArgs, S3Location, EXIT_FAILED_OBJECTS};
use crate::checkpoint::Outcome;
use crate::engine::naming::{blob_name, NameIssue};
use crate::engine::{CopyReport, CopyRequest, Engine, SyncMode};
use crate::error::{ErrorKind, Result};
use crate::retry::RetryPolicy;
use crate::run::RunSummary;
use crate::source::s3::{ListedObject, S3Source};

pub(super) async fn run(args: CopyArgs) -> Result<ExitCode> {
    let source = parse_s3_url(&args.source)?;
    let target = parse_blob_url(&args.target)?;
    let mut cfg = super::load_config(Some(&target))?;
    super::apply_overrides(&mut cfg, &args)?;
    crate::telemetry::init(super::cli_log_format(&cfg), "warn");
    let run_id = format!("cli-{}", uuid::Uuid::new_v4());

    if args.dry_run {
        let s3 = S3Source::new(&cfg.aws, RetryPolicy::default()).await;
        return dry_run(&s3, &source, &target.container, &target.prefix).await;
    }

    let engine = Arc::new(Engine::from_config(&cfg).await?);
    engine.checkpoint().ensure().await?;
    engine.target(&target.container)?.create_if_missing().await?;

    let pb = if args.no_progress || args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} objects  {msg}")
            .expect("static template"),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    let bytes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    // Pages are listed lazily as the copies drain them, so memory holds one page at a time.
    let pages = futures::stream::try_unfold(Some(None::<String>), |state| {
        let engine = engine.clone();
        let source = source.clone();
        async move {
            let Some(token) = state else { return Ok(None) };
            let (objs, next) = engine.s3().list_page(&source.bucket, &source.prefix, token).await?;
            Ok::<_, crate::error::Error>(Some((objs, next.map(Some))))
        }
    });
    let mut summary = RunSummary::default();
    let mut listing_error = None;
    let results = pages
        .flat_map(|page| {
            let items: Vec<Result<ListedObject>> = match page {
                Ok(objs) => {
                    pb.inc_length(objs.len() as u64);
                    objs.into_iter().map(Ok).collect()
                }
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        })
        .map(|item| {
            let engine = engine.clone();
            let req = item.map(|o| CopyRequest {
                listed: Some((o.etag.clone(), o.size)),
                bucket: source.bucket.clone(),
                key: o.key,
                container: target.container.clone(),
                source_prefix: source.prefix.clone(),
                target_prefix: target.prefix.clone(),
                run_id: Some(run_id.clone()),
                mode: SyncMode::Additive,
                event: None,
            });
            async move {
                let req = req?;
                let r = copy_with_retries(&engine, &req).await;
                Ok::<_, crate::error::Error>((req.key, r))
            }
        })
        .buffer_unordered(args.concurrency as usize);
    let mut results = std::pin::pin!(results);
    while let Some(r) = results.next().await {
        match r {
            Ok((key, Ok(rep))) => {
                if rep.outcome == Outcome::Copied {
                    bytes.fetch_add(rep.bytes, Ordering::Relaxed);
                }
                summary.add(&key, rep.outcome, rep.bytes, rep.reason.as_deref());
            }
            Ok((key, Err(e))) => summary.add(&key, Outcome::Failed, 0, Some(e.message())),
            Err(e) => {
                listing_error = Some(e);
                break;
            }
        }
        pb.inc(1);
        let b = bytes.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        pb.set_message(format!(
            "{:.1} MiB  {:.1} MiB/s",
            b as f64 / 1048576.0,
            b as f64 / 1048576.0 / secs
        ));
    }
    pb.finish_and_clear();
    let elapsed = started.elapsed();
    if args.json {
        let by: serde_json::Map<String, serde_json::Value> = summary
            .by_outcome
            .iter()
            .map(|(k, (n, b))| (k.to_string(), serde_json::json!({"objects": n, "bytes": b})))
            .collect();
        let failures: Vec<_> = summary
            .failures
            .iter()
            .map(|(k, r)| serde_json::json!({"key": k, "reason": r}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"runId": run_id, "scanned": summary.scanned, "outcomes": by,
                "failures": failures, "durationMs": elapsed.as_millis() as u64,
                "listingError": listing_error.as_ref().map(|e| e.message().to_string())})
        );
    } else {
        println!(
            "run {run_id}: s3://{}/{} -> {}",
            source.bucket, source.prefix, args.target
        );
        print!("{}", summary.table());
        let b = bytes.load(Ordering::Relaxed) as f64;
        println!(
            "{:.1} s, {:.1} objects/s, {:.1} MiB/s copied",
            elapsed.as_secs_f64(),
            summary.scanned as f64 / elapsed.as_secs_f64().max(0.001),
            b / 1048576.0 / elapsed.as_secs_f64().max(0.001)
        );
    }
    if let Some(e) = listing_error {
        eprintln!("error: listing stopped early: {}", e.message());
        return Ok(ExitCode::from(EXIT_FAILED_OBJECTS));
    }
    Ok(if summary.count(Outcome::Failed) > 0 {
        ExitCode::from(EXIT_FAILED_OBJECTS)
    } else {
        ExitCode::SUCCESS
    })
}

/// One object, retried as a whole (each call inside is already retried) when the failure
/// may pass: throttling, faults, or a checksum mismatch from a damaged transfer.
async fn copy_with_retries(engine: &Engine, req: &CopyRequest) -> Result<CopyReport> {
    let mut attempt = 1;
    loop {
        match engine.copy_object(req).await {
            Err(e)
                if attempt < 3
                    && (e.is_retryable()
                        || e.kind() == ErrorKind::Integrity
                        || e.kind() == ErrorKind::Precondition) =>
            {
                tokio::time::sleep(RetryPolicy::default().backoff(attempt)).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

async fn dry_run(s3: &S3Source, source: &S3Location, container: &str, prefix: &str) -> Result<ExitCode> {
    let mut token = None;
    let mut summary = RunSummary::default();
    loop {
        let (objs, next) = s3.list_page(&source.bucket, &source.prefix, token).await?;
        for o in objs {
            let (outcome, what) = match blob_name(&o.key, &source.prefix, prefix) {
                Err(issue @ (NameIssue::FolderMarker | NameIssue::OutsidePrefix)) => {
                    (Outcome::Excluded, format!("skip ({})", issue.reason()))
                }
                Err(issue) => (Outcome::Unsupported, format!("refuse ({})", issue.reason())),
                Ok(_) if matches!(o.storage_class.as_deref(), Some("GLACIER" | "DEEP_ARCHIVE")) => (
                    Outcome::Unsupported,
                    format!("refuse (unsupported: {})", o.storage_class.as_deref().unwrap_or("")),
                ),
                Ok(name) => (Outcome::Copied, format!("copy -> {container}/{name}")),
            };
            println!(
                "{:<10} {:>12}  s3://{}/{}  {}",
                outcome.as_str(),
                o.size,
                source.bucket,
                o.key,
                what
            );
            summary.add(&o.key, outcome, o.size, Some(&what));
        }
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    println!("dry run: nothing was changed. Plan (\"copied\" = would be copied unless already up to date):");
    print!("{}", summary.table());
    Ok(ExitCode::SUCCESS)
}
