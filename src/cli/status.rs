//! `status`: the checkpoint rows of a bucket.

use std::process::ExitCode;

use crate::checkpoint::{CheckpointStore, Outcome};
use crate::error::Result;
use crate::retry::RetryPolicy;
use crate::target::table::TableClient;

pub(super) async fn run(
    bucket: &str,
    queue_url: Option<String>,
    problems: bool,
    limit: usize,
    json: bool,
) -> Result<ExitCode> {
    let cfg = super::load_config(None)?;
    crate::telemetry::init(super::cli_log_format(&cfg), "warn");
    let auth = cfg.azure.authorizer()?;
    let store = CheckpointStore::new(TableClient::new(
        &cfg.azure,
        &auth,
        &cfg.checkpoint_table,
        RetryPolicy::default(),
    )?);
    let mut rows = store.list_bucket(bucket).await?;
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    let total = rows.len();
    if problems {
        rows.retain(|r| !matches!(r.outcome, Outcome::Copied | Outcome::NoTransferNeeded));
    }
    if json {
        for r in &rows {
            let v = serde_json::json!({
                "bucket": r.bucket, "key": r.key, "target": r.target, "blob": r.blob,
                "outcome": r.outcome.as_str(), "reason": r.reason, "etag": r.etag, "size": r.size,
                "verified": r.verified, "path": r.path, "sequencer": r.sequencer,
                "lastEvent": r.last_event, "eventTime": r.event_time, "updatedAt": r.updated_at,
            });
            println!("{v}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:>12} {:<10} {:<40} {:<44} reason",
        "outcome", "bytes", "verified", "key", "last event"
    );
    for r in rows.iter().take(limit) {
        let event = match (&r.last_event, &r.event_time) {
            (Some(e), Some(t)) => format!("{e} @ {t}"),
            (Some(e), None) => e.clone(),
            _ => "-".into(),
        };
        println!(
            "{:<20} {:>12} {:<10} {:<40} {:<44} {}",
            r.outcome.as_str(),
            r.size.map(|s| s.to_string()).unwrap_or_default(),
            r.verified.as_deref().unwrap_or("-"),
            r.key,
            event,
            r.reason.as_deref().unwrap_or("")
        );
    }
    if rows.len() > limit {
        println!("… {} more (use --limit)", rows.len() - limit);
    }
    println!(
        "{total} checkpoint rows for bucket {bucket} in table {}",
        cfg.checkpoint_table
    );
    if let Some(url) = queue_url.or(cfg.sqs_queue_url.clone()) {
        let sqs = crate::source::sqs::SqsQueue::new(&cfg.aws, &url, RetryPolicy::default()).await;
        let d = sqs.depth().await?;
        let last = crate::run::lag::last(store.table(), &url).await?;
        println!(
            "sqs backlog: ~{} waiting, ~{} in flight; {}",
            d.visible,
            d.in_flight,
            match last {
                Some((at, age)) => format!("last drain {at}, oldest message then {:.1} s old", age as f64 / 1000.0),
                None => "no drain recorded yet".into(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
