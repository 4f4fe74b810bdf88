//! `verify`: compares a source prefix with its target prefix (listings and recorded
//! provenance); `--repair` copies what is missing or stale and verifies again.

use std::process::ExitCode;

use super::EXIT_FAILED_OBJECTS;
use crate::app::verify::{repair, verify};
use crate::config::location::{parse_blob_url, parse_s3_url};
use crate::engine::Engine;
use crate::error::Result;
use crate::model::Scope;

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
    let (mut report, to_copy) = verify(&engine, &scope, metadata).await?;
    if fix && !to_copy.is_empty() {
        if !json {
            print!("{}", report.table());
            println!("repairing {} objects…", to_copy.len());
        }
        let fixed = repair(&engine, &scope, to_copy, concurrency).await;
        let (again, _) = verify(&engine, &scope, metadata).await?;
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
