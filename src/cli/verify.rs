//! `verify`: compares a source prefix with its target prefix (listings and recorded
//! provenance); `--repair` copies what is missing or stale and verifies again.

use std::process::ExitCode;

use super::EXIT_FAILED_OBJECTS;
use crate::app::verify::{repair, verify_each, Limits, VerifyReport};
use crate::config::location::{parse_blob_url, parse_s3_url};
use crate::engine::Engine;
use crate::error::Result;
use crate::model::Scope;

/// Compares, and with `repair` (its concurrency) copies each batch of differences as it is
/// found: nothing is held but a page. Returns the report and (objects asked, repaired).
async fn compare(
    engine: &Engine,
    scope: &Scope,
    metadata: bool,
    repair_with: Option<usize>,
) -> Result<(VerifyReport, (u64, u64))> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<String>>(4);
    let work = async {
        let (mut asked, mut fixed) = (0, 0);
        while let Some(keys) = rx.recv().await {
            if let Some(n) = repair_with {
                asked += keys.len() as u64;
                fixed += repair(engine, scope, keys, n).await;
            }
        }
        (asked, fixed)
    };
    let (report, counts) = tokio::join!(verify_each(engine, scope, metadata, Limits::default(), tx), work);
    Ok((report?, counts))
}

pub(super) async fn run(
    source: String,
    target: String,
    json: bool,
    fix: bool,
    metadata: bool,
    concurrency: usize,
) -> Result<ExitCode> {
    let s = parse_s3_url(&source)?;
    let t = parse_blob_url(&target)?;
    let cfg = super::load_config(Some(&t))?;
    crate::telemetry::init(cfg.log_format, "warn");
    let engine = Engine::from_config(&cfg).await?;
    engine.checkpoint().ensure().await?;
    let scope = Scope {
        bucket: s.bucket,
        source_prefix: s.prefix,
        container: t.container,
        target_prefix: t.prefix,
    };
    let (mut report, (asked, fixed)) = compare(&engine, &scope, metadata, fix.then_some(concurrency)).await?;
    if asked > 0 {
        if !json {
            print!("{}", report.table());
            println!("repaired {fixed} of {asked} objects; comparing again…");
        }
        let (again, _) = compare(&engine, &scope, metadata, None).await?;
        report = again;
        report.repaired = fixed;
    }
    if json {
        let mut v = serde_json::to_value(&report).expect("serializable");
        v["clean"] = report.clean().into();
        println!("{v}");
    } else {
        print!("{}", report.table());
        if report.clean() {
            println!("source and target agree");
        }
    }
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED_OBJECTS)
    })
}
