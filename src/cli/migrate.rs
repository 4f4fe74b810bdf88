//! `migrate-checkpoints`: moves checkpoint rows of earlier forms: by source key, to their
//! blobs' rows (decisions 99); in one partition per bucket and target, to their own of
//! sixteen (decision 123).

use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::Result;
use crate::state::checkpoint::{CheckpointStore, Migrated};

pub(super) async fn run(dry_run: bool, json: bool) -> Result<ExitCode> {
    let cfg = super::load_config(None)?;
    crate::telemetry::init(cfg.log_format, "warn");
    let auth = cfg.state.authorizer()?;
    let store = CheckpointStore::open(&cfg.state, &auth, &cfg.tables.checkpoint, cfg.retry)?;
    let pb = if json {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new_spinner();
        pb.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"));
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        pb
    };
    let show = |m: &Migrated| {
        pb.set_message(format!(
            "{} rows of the previous form found, {} moved, {} superseded, {} split rows dropped, {} rows spread",
            m.found, m.moved, m.superseded, m.staging_dropped, m.spread
        ))
    };
    let done = store.migrate_legacy(dry_run, &show).await?;
    pb.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&done).expect("serializable"));
    } else if dry_run {
        println!(
            "dry run: {} checkpoint rows of the previous form and {} split rows would be moved or dropped, and {} rows spread over their partitions, in table {}; nothing was changed",
            done.found, done.staging_dropped, done.spread, cfg.tables.checkpoint
        );
    } else {
        println!(
            "table {}: {} rows of the previous form: {} moved to their blobs' rows, {} dropped (the blob's row was newer); {} split rows dropped; {} rows moved to their own partitions",
            cfg.tables.checkpoint, done.found, done.moved, done.superseded, done.staging_dropped, done.spread
        );
    }
    Ok(ExitCode::SUCCESS)
}
