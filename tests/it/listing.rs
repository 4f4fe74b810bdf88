//! Parallel listing: a run's key space splits into shards that list at once, each by its own
//! page chain, and whatever happens to their messages every key is listed, counted and sent
//! exactly as one listing would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use s3_blob_sync::app::lister::{list_page, PageStep};
use s3_blob_sync::app::service::{CopySink, RunService, Started};
use s3_blob_sync::error::Result;
use s3_blob_sync::messages::run_spec::RunSpec;
use s3_blob_sync::messages::CopyMessage;
use s3_blob_sync::model::Trigger;
use s3_blob_sync::state::runs::counters::Tally;

use crate::harness::handler::run_binary_async;
use crate::harness::TestCtx;

/// Keys with folders and keys without: the probes find folders for the first and next
/// characters for the second.
fn keys() -> Vec<String> {
    let folders = (0..6).flat_map(|f| (0..12).map(move |i| format!("f{f}/k{i:02}")));
    let flat = (0..60u32).map(|i| format!("x{:06x}", i.wrapping_mul(2_654_435_761) >> 8));
    folders.chain(flat).collect()
}

/// What one shard's steps sent, by shard.
#[derive(Default)]
struct Sent(Mutex<BTreeMap<u32, Vec<String>>>);

struct ShardSink<'a>(&'a Sent, u32);

#[async_trait::async_trait]
impl CopySink for ShardSink<'_> {
    async fn send(&self, copies: Vec<CopyMessage>) -> Result<()> {
        let mut sent = self.0 .0.lock().unwrap();
        sent.entry(self.1)
            .or_default()
            .extend(copies.into_iter().map(|c| c.key));
        Ok(())
    }
}

/// A queue of page messages worked in a seeded order: picked at random (reordered), sometimes
/// delivered twice, and sometimes cut off at a random point of their work, as a killed host
/// would (its table writes up to there stand), then delivered again. Every key is listed and
/// counted once, every shard sends only keys of its own range, and the run has more than one
/// shard and no more than it was given.
#[tokio::test]
async fn shards_list_every_key_once_through_kills_duplicates_and_reordering() {
    let ctx = TestCtx::new("shards").await;
    let all = keys();
    ctx.put_many(all.iter().map(|k| (k.clone(), k.clone().into_bytes())).collect())
        .await;
    let cfg = Arc::new(ctx.config(&[("SYNC_LIST_PAGE_KEYS", "7")]));
    let engine = Arc::new(s3_blob_sync::engine::Engine::from_config(&cfg).await.unwrap());
    engine.checkpoint().ensure().await.unwrap();
    let svc = RunService::local(cfg.clone(), engine).await.unwrap();
    for seed in 0..3u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let shards = 6;
        let body = serde_json::json!({
            "source": {"bucket": ctx.bucket}, "target": {"container": ctx.container}, "listShards": shards
        });
        let (spec, _) = RunSpec::parse(&body.to_string(), "body", &cfg).unwrap();
        let Started::Created(run) = svc.start(spec, None, Trigger::Http, None).await.unwrap() else {
            panic!("seed {seed}: the run did not start");
        };
        let sent = Sent::default();
        let mut queue: Vec<(u32, u64)> = vec![(0, 0)];
        let (mut kills, mut steps) = (0, 0);
        let mut done = false;
        while !queue.is_empty() {
            steps += 1;
            assert!(steps < 2_000, "seed {seed}: the listing does not end");
            let (shard, page) = queue.swap_remove(rng.random_range(0..queue.len()));
            if rng.random_bool(0.15) {
                queue.push((shard, page));
            }
            let sink = ShardSink(&sent, shard);
            let work = list_page(&svc, &run.id, shard, page, &sink);
            let step = if rng.random_bool(0.3) {
                let cut = Duration::from_millis(rng.random_range(0..40));
                match tokio::time::timeout(cut, work).await {
                    Ok(step) => step,
                    Err(_) => {
                        kills += 1;
                        queue.push((shard, page));
                        continue;
                    }
                }
            } else {
                work.await
            };
            match step.unwrap_or_else(|e| panic!("seed {seed}: shard {shard} page {page}: {e}")) {
                PageStep::Next { page, start } => {
                    queue.push((shard, page));
                    queue.extend(start.into_iter().map(|c| (c, 0)));
                }
                PageStep::Done => done = true,
                PageStep::ShardDone | PageStep::Stale => {}
                other => panic!("seed {seed}: unexpected {other:?}"),
            }
        }
        assert!(done, "seed {seed}: no step saw the whole listing done");
        let listing = svc.store.listing(&run.id).await.unwrap().unwrap();
        assert!(listing.done(), "seed {seed}");
        let n = listing.shards.len();
        assert!(n > 1 && n <= shards, "seed {seed}: {n} shards");
        let counters = listing.counters();
        assert_eq!(
            counters.objects(Tally::Scanned),
            all.len() as u64,
            "seed {seed}: each key scanned once"
        );
        assert_eq!(counters.objects(Tally::Enqueued), all.len() as u64, "seed {seed}");
        let sent = sent.0.into_inner().unwrap();
        let distinct: BTreeSet<&String> = sent.values().flatten().collect();
        assert_eq!(distinct, all.iter().collect(), "seed {seed}: every key sent");
        // A shard, however often killed and redelivered, worked its own range only.
        for (shard, keys) in &sent {
            let l = listing.shards.iter().find(|l| l.shard == *shard).unwrap();
            for k in keys {
                assert!(
                    l.after.as_deref().is_none_or(|a| k.as_str() > a) && !l.past(k),
                    "seed {seed}: shard {shard} ({:?}, {:?}] sent {k}",
                    l.after,
                    l.until
                );
            }
        }
        eprintln!("seed {seed}: {n} shards, {} pages, {kills} kills", listing.pages());
        s3_blob_sync::app::service::end(
            &svc,
            &run.id,
            s3_blob_sync::state::runs::store::RunState::Cancelled,
            None,
        )
        .await
        .unwrap();
    }
    ctx.cleanup().await;
}

/// The CLI lists the same shards in-process: every object copied once, counted once, and the
/// log names pages of more than one shard.
#[tokio::test]
async fn the_cli_copies_through_parallel_shards() {
    let ctx = TestCtx::new("clishards").await;
    let all = keys();
    ctx.put_many(all.iter().map(|k| (k.clone(), k.clone().into_bytes())).collect())
        .await;
    let env = ctx.env_with(&[
        ("SYNC_LIST_SHARDS", "4"),
        ("SYNC_LIST_PAGE_KEYS", "9"),
        ("SYNC_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ]);
    let src = format!("s3://{}/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--json", "--no-progress"], &env).await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<serde_json::Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let summary = lines.iter().find(|v| v["counters"].is_object()).expect("a summary");
    let c = |k: &str| summary["counters"][k].as_u64().unwrap();
    assert_eq!(
        (c("scanned"), c("transferred")),
        (all.len() as u64, all.len() as u64),
        "{summary}"
    );
    let shards: BTreeSet<u64> = lines
        .iter()
        .filter(|v| v["outcome"] == "page_listed")
        .filter_map(|v| v["shard"].as_u64())
        .collect();
    assert!(shards.len() > 1, "pages of one shard only: {shards:?}\n{out}");
    let blobs = ctx.blob().list("").await.unwrap();
    assert_eq!(blobs.len(), all.len(), "every object a blob once");
    ctx.cleanup().await;
}
