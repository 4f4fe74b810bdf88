//! Parallel listing: a run's key space splits into shards that list at once, each by its own
//! page chain, and whatever happens to their messages every key is listed, counted and sent
//! exactly as one listing would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use s3_blob_sync::app::copy_queues::CopySink;
use s3_blob_sync::app::lister::{list_page, PageStep};
use s3_blob_sync::app::service::{RunService, Started};
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
    // Keys equal to the boundaries the probes can pick (a group's prefix): each belongs to
    // the shard before the boundary, and an off-by-one at the cut loses or repeats it.
    let edges = (0..16)
        .map(|c| format!("x{c:x}"))
        .chain((0..6).map(|f| format!("f{f}")));
    folders.chain(flat).chain(edges).collect()
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

/// Attempts cut off after their page's save landed, over every `drive` of the binary.
static KILLED_AFTER_SAVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Works a run's page messages from a queue in a seeded order: picked at random (reordered),
/// sometimes delivered twice, and sometimes cut off at a random point of their work, as a
/// killed host would (its table writes up to there stand), then delivered again. Returns
/// what each shard sent, once every message is worked; the listing must have ended.
async fn drive(svc: &RunService, id: &str, seed: u64) -> BTreeMap<u32, Vec<String>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
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
        let work = list_page(svc, id, shard, page, &sink);
        if rng.random_bool(0.1) {
            // Killed once its work was done but before its next step was queued (or its
            // reply was lost): the step is dropped and the message comes back.
            work.await
                .unwrap_or_else(|e| panic!("seed {seed}: shard {shard} page {page}: {e}"));
            KILLED_AFTER_SAVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            queue.push((shard, page));
            continue;
        }
        let step = if rng.random_bool(0.3) {
            let cut = Duration::from_millis(rng.random_range(0..40));
            match tokio::time::timeout(cut, work).await {
                Ok(step) => step,
                Err(_) => {
                    kills += 1;
                    // Cut after its save landed: the redelivery finds the page done, and
                    // must hand on its next step and its children (`Born`) all the same.
                    if svc.store.shard(id, shard).await.unwrap().is_some_and(|l| l.page > page) {
                        KILLED_AFTER_SAVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
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
            PageStep::ShardDone { start } => queue.extend(start.into_iter().map(|c| (c, 0))),
            PageStep::Stale => {}
            other => panic!("seed {seed}: unexpected {other:?}"),
        }
    }
    assert!(done, "seed {seed}: no step saw the whole listing done");
    eprintln!("seed {seed}: {steps} steps, {kills} kills");
    sent.0.into_inner().unwrap()
}

/// Starts a run of `body` in process.
async fn start(svc: &RunService, body: serde_json::Value) -> String {
    let (spec, _) = RunSpec::parse(&body.to_string(), "body", &svc.config).unwrap();
    match svc.start(spec, None, Trigger::Http, None).await.unwrap() {
        Started::Created(run) => run.id,
        other => panic!("the run did not start: {other:?}"),
    }
}

/// Through kills, duplicates and reordering, every key is listed and counted once, every
/// shard sends only keys of its own range, and the run has more than one shard and no more
/// than it was given.
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
    let mut after_save = 0;
    for seed in 0..6u64 {
        // The whole bucket, a prefix of folders, and a prefix of flat keys.
        let prefix = ["", "f", "x"][seed as usize % 3];
        let all: Vec<String> = all.iter().filter(|k| k.starts_with(prefix)).cloned().collect();
        let shards = 6;
        let body = serde_json::json!({
            "source": {"bucket": ctx.bucket, "prefix": prefix}, "target": {"container": ctx.container},
            "listShards": shards
        });
        let before = KILLED_AFTER_SAVE.load(std::sync::atomic::Ordering::Relaxed);
        let id = start(&svc, body).await;
        let sent = drive(&svc, &id, seed).await;
        let listing = svc.store.listing(&id).await.unwrap().unwrap();
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
        let distinct: BTreeSet<&String> = sent.values().flatten().collect();
        assert_eq!(distinct, all.iter().collect(), "seed {seed}: every key sent");
        after_save += KILLED_AFTER_SAVE.load(std::sync::atomic::Ordering::Relaxed) - before;
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
        end(&svc, &id).await;
    }
    assert!(
        after_save > 0,
        "no attempt was cut after its save: the redelivery path went untried"
    );
    ctx.cleanup().await;
}

async fn end(svc: &RunService, id: &str) {
    s3_blob_sync::app::service::end(svc, id, s3_blob_sync::state::runs::store::RunState::Cancelled, None)
        .await
        .unwrap();
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

/// Column order of the reports these tests write: a report of all versions, as AWS writes one.
const SCHEMA: &str = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass";

/// A key as a CSV report writes it: URL-encoded, a space as `+`.
fn form_encoded(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b' ');
    percent_encoding::utf8_percent_encode(key, KEEP)
        .to_string()
        .replace(' ', "+")
}

/// The report row of `key` as it is now in `ctx`'s bucket (current version).
async fn row_of(ctx: &TestCtx, key: &str) -> String {
    let h = ctx
        .s3
        .client()
        .head_object()
        .bucket(&ctx.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let modified = h
        .last_modified()
        .unwrap()
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap()
        .replace('Z', ".000Z");
    format!(
        "\"{}\",\"{}\",\"v1\",\"true\",\"false\",\"{}\",\"{modified}\",\"{}\",\"STANDARD\"",
        ctx.bucket,
        form_encoded(key),
        h.content_length().unwrap(),
        h.e_tag().unwrap().trim_matches('"')
    )
}

/// Writes a report of `files` (rows each) under `inventory/` of `ctx`'s own bucket, as AWS
/// writes one (the destination may be the source bucket); returns its manifest's URL.
async fn write_report(ctx: &TestCtx, files: &[Vec<String>], format: &str) -> String {
    use std::io::Write;
    let base = format!("inventory/{}/cfg/2026-12-06T00-00Z", ctx.bucket);
    let mut listed = Vec::new();
    for (i, rows) in files.iter().enumerate() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for r in rows {
            writeln!(gz, "{r}").unwrap();
        }
        let data = gz.finish().unwrap();
        let key = format!("inventory/{}/cfg/data/file-{i}.csv.gz", ctx.bucket);
        let md5 = {
            use md5::Digest;
            hex::encode(md5::Md5::digest(&data))
        };
        listed.push(serde_json::json!({"key": key, "size": data.len(), "MD5checksum": md5}));
        ctx.put(&key, data).await;
    }
    let manifest = serde_json::json!({
        "sourceBucket": ctx.bucket, "destinationBucket": format!("arn:aws:s3:::{}", ctx.bucket),
        "version": "2016-11-30", "creationTimestamp": "1765000000000", "fileFormat": format,
        "fileSchema": SCHEMA, "files": listed,
    });
    let key = format!("{base}/manifest.json");
    ctx.put(&key, manifest.to_string()).await;
    format!("s3://{}/{key}", ctx.bucket)
}

/// A run listed from an S3 Inventory report makes no LIST request, decodes keys as AWS
/// encodes them, lists current versions only, and decides each object from S3 itself: an
/// object rewritten since the report is copied as it is now, one deleted since is counted
/// vanished, and a key outside the prefix is not looked at.
#[tokio::test]
async fn an_inventory_lists_the_run_with_no_list_request_and_a_stale_one_is_safe() {
    let ctx = TestCtx::new("inventory").await;
    let mut keys: Vec<String> = (0..21).map(|i| format!("inv/k{i:02}")).collect();
    keys.extend(["inv/a b.txt", "inv/c+d.txt", "inv/é/ü 100%.bin"].map(String::from));
    ctx.put_many(
        keys.iter()
            .map(|k| (k.clone(), format!("body of {k}").into_bytes()))
            .collect(),
    )
    .await;
    ctx.put("inv/changed", "as the report saw it").await;
    ctx.put("inv/gone", "deleted after the report").await;
    ctx.put("other/outside", "not under the run's prefix").await;
    let mut rows = Vec::new();
    for k in keys.iter().chain(
        [
            "inv/changed".to_string(),
            "inv/gone".to_string(),
            "other/outside".to_string(),
        ]
        .iter(),
    ) {
        rows.push(row_of(&ctx, k).await);
    }
    // An older version of a key, which a report of all versions lists beside the current.
    rows.push(format!(
        "\"{}\",\"inv/k00\",\"v0\",\"false\",\"false\",\"3\",\"2020-01-01T00:00:00.000Z\",\"00\",\"STANDARD\"",
        ctx.bucket
    ));
    // Rows spread over three files, out of key order.
    let mut files = vec![Vec::new(), Vec::new(), Vec::new()];
    for (i, r) in rows.into_iter().rev().enumerate() {
        files[i % 3].push(r);
    }
    let manifest = write_report(&ctx, &files, "CSV").await;
    ctx.put("inv/changed", "rewritten after the report").await;
    ctx.s3
        .client()
        .delete_object()
        .bucket(&ctx.bucket)
        .key("inv/gone")
        .send()
        .await
        .unwrap();
    ctx.put("inv/after", "written after the report: for events or a listing run")
        .await;

    let s3 = crate::harness::proxy::Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let env = ctx.env_with(&[("AWS_ENDPOINT_URL", s3.url.as_str()), ("SYNC_LIST_PAGE_KEYS", "4")]);
    let src = format!("s3://{}/inv/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let args = [
        "copy",
        &src,
        &dst,
        "--inventory",
        &manifest,
        "--list-shards",
        "3",
        "--json",
        "--no-progress",
    ];
    let (code, out) = run_binary_async(&args, &env).await;
    assert_eq!(code, 0, "{out}");
    let summary: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["counters"].is_object())
        .expect("a summary");
    let c = |k: &str| summary["counters"][k].as_u64().unwrap();
    let n = keys.len() as u64 + 2;
    assert_eq!(
        c("scanned"),
        n,
        "current versions under the prefix, once each: {summary}"
    );
    assert_eq!((c("transferred"), c("vanished")), (n - 1, 1), "{summary}");
    assert_eq!(s3.count("list-type=2"), 0, "an inventory run made LIST requests");
    for k in &keys {
        let name = k.strip_prefix("inv/").unwrap();
        let blob = ctx.blob().read(name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&blob[..], format!("body of {k}").as_bytes(), "{name}");
    }
    assert_eq!(
        &ctx.blob().read("changed").await.unwrap()[..],
        b"rewritten after the report"
    );
    let names = ctx.blob().list("").await.unwrap();
    assert_eq!(names.len() as u64, n - 1, "{names:?}");
    ctx.cleanup().await;
}

/// A report the tool cannot read ends the run at once, naming the field; and the shards of a
/// report list every row once through kills, duplicates and reordering.
#[tokio::test]
async fn an_inventory_run_is_exact_through_kills_and_a_bad_report_names_its_field() {
    let ctx = TestCtx::new("invkill").await;
    let all: Vec<String> = (0..45).map(|i| format!("p/{:02}", (i * 7) % 45)).collect();
    ctx.put_many(all.iter().map(|k| (k.clone(), k.clone().into_bytes())).collect())
        .await;
    let mut files = vec![Vec::new(); 5];
    for (i, k) in all.iter().enumerate() {
        files[i % 5].push(row_of(&ctx, k).await);
    }
    let manifest = write_report(&ctx, &files, "CSV").await;
    let cfg = Arc::new(ctx.config(&[("SYNC_LIST_PAGE_KEYS", "4")]));
    let engine = Arc::new(s3_blob_sync::engine::Engine::from_config(&cfg).await.unwrap());
    engine.checkpoint().ensure().await.unwrap();
    let svc = RunService::local(cfg.clone(), engine).await.unwrap();
    for seed in 10..13u64 {
        let body = serde_json::json!({
            "source": {"bucket": ctx.bucket, "prefix": "p/", "inventory": manifest},
            "target": {"container": ctx.container}, "listShards": 3
        });
        let id = start(&svc, body).await;
        let sent = drive(&svc, &id, seed).await;
        let listing = svc.store.listing(&id).await.unwrap().unwrap();
        assert_eq!(listing.shards.len(), 3, "seed {seed}");
        assert_eq!(
            listing.counters().objects(Tally::Scanned),
            all.len() as u64,
            "seed {seed}"
        );
        let distinct: BTreeSet<&String> = sent.values().flatten().collect();
        assert_eq!(distinct, all.iter().collect(), "seed {seed}");
        end(&svc, &id).await;
    }

    let parquet = write_report(&ctx, &files, "Parquet").await;
    let src = format!("s3://{}/p/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let (code, out) = run_binary_async(
        &["copy", &src, &dst, "--inventory", &parquet, "--no-progress"],
        &ctx.env,
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("`fileFormat` is `Parquet`"), "{out}");

    // With pages of 1,000 keys, the first shard's first file is one page: the shards it
    // starts for the other files must still list them (they were lost once).
    let manifest = write_report(&ctx, &files, "CSV").await;
    let (code, out) = run_binary_async(
        &["copy", &src, &dst, "--inventory", &manifest, "--no-progress", "--json"],
        &ctx.env,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(
        summary["counters"]["scanned"].as_u64(),
        Some(all.len() as u64),
        "{summary}"
    );

    // A data file rewritten since its manifest (one row fewer) is refused by name, with the
    // sums that differ, and the run ends failed rather than listing a partial report.
    let changed = format!("inventory/{}/cfg/data/file-2.csv.gz", ctx.bucket);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for r in &files[2][1..] {
        std::io::Write::write_all(&mut gz, format!("{r}\n").as_bytes()).unwrap();
    }
    ctx.put(&changed, gz.finish().unwrap()).await;
    let (code, out) = run_binary_async(
        &["copy", &src, &dst, "--inventory", &manifest, "--no-progress"],
        &ctx.env,
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("file-2.csv.gz") && out.contains("the manifest"), "{out}");
    ctx.cleanup().await;
}

/// S3 keeps listing GLACIER for an object after its restore, so the listing's class alone
/// cannot say it is unreadable: a run HEADs the archived objects the checkpoint does not hold
/// and copies the restored ones. Before, an object restored by hand was `unsupported` in every
/// run, for ever.
#[tokio::test]
async fn an_archived_object_restored_by_hand_is_copied_by_the_next_run() {
    use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, StorageClass, Tier};
    let ctx = TestCtx::new("restored").await;
    for (key, class) in [
        ("cold/a", StorageClass::Glacier),
        ("cold/b", StorageClass::DeepArchive),
        ("warm/c", StorageClass::Standard),
    ] {
        ctx.put_class(key, class, format!("bytes of {key}")).await;
    }
    let src = format!("s3://{}/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let copy = || async {
        let (code, out) = run_binary_async(&["copy", &src, &dst, "--json", "--no-progress"], &ctx.env).await;
        let summary: serde_json::Value = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["counters"].is_object())
            .unwrap_or_else(|| panic!("no summary: {out}"));
        (code, summary, out)
    };
    let counts = |s: &serde_json::Value| {
        let c = |k: &str| s["counters"][k].as_u64().unwrap();
        (c("transferred"), c("unsupported"), c("noTransferNeeded"))
    };

    let (_, first, out) = copy().await;
    assert_eq!(counts(&first), (1, 2, 0), "{out}");
    assert!(ctx.blob().read("cold/a").await.is_err());

    // Restored by hand: the listing still says GLACIER.
    ctx.s3
        .client()
        .restore_object()
        .bucket(&ctx.bucket)
        .key("cold/a")
        .restore_request(
            RestoreRequest::builder()
                .days(1)
                .glacier_job_parameters(GlacierJobParameters::builder().tier(Tier::Standard).build().unwrap())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let listed = ctx
        .s3
        .client()
        .list_objects_v2()
        .bucket(&ctx.bucket)
        .prefix("cold/a")
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.contents()[0].storage_class().map(|c| c.as_str()),
        Some("GLACIER")
    );

    let (_, second, out) = copy().await;
    assert_eq!(counts(&second), (1, 1, 1), "the restored object was not copied: {out}");
    assert_eq!(&ctx.blob().read("cold/a").await.unwrap()[..], b"bytes of cold/a");
    // The one still archived is named with its reason.
    let id = second["runId"].as_str().unwrap();
    let (code, report) = run_binary_async(&["status", id, "--report"], &ctx.env).await;
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("cold/b") && report.contains("DEEP_ARCHIVE (restore the object first)"),
        "{report}"
    );

    // Copied: the next run takes it from the checkpoint, with no HEAD needed for it.
    let (_, third, out) = copy().await;
    assert_eq!(counts(&third), (0, 1, 2), "{out}");
    ctx.cleanup().await;
}

/// One archived object S3 will not describe (another account's object, an SSE-C object, a
/// denied prefix: refused here by the proxy) is that object's failure, named; the run lists
/// every page and ends.
#[tokio::test]
async fn an_archived_object_whose_head_is_refused_fails_alone() {
    use aws_sdk_s3::types::StorageClass;
    let ctx = TestCtx::new("headrefused").await;
    ctx.put_class("cold/a", StorageClass::Glacier, "cold/a").await;
    ctx.put_class("cold/b", StorageClass::Glacier, "cold/b").await;
    ctx.put("warm/c", "warm/c").await;
    let s3 = crate::harness::proxy::Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    s3.faults()
        .refuse_to
        .arm(format!("HEAD /{}/cold/b", ctx.bucket), u32::MAX);
    let env = ctx.env_with(&[("AWS_ENDPOINT_URL", s3.url.as_str())]);
    let src = format!("s3://{}/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--json", "--no-progress"], &env).await;
    let summary: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["counters"].is_object())
        .unwrap_or_else(|| panic!("no summary: {out}"));
    assert_eq!(code, 1, "{out}");
    assert_eq!(summary["state"], "PartiallySucceeded", "{summary}");
    let c = |k: &str| summary["counters"][k].as_u64().unwrap();
    assert_eq!(
        (c("transferred"), c("unsupported"), c("failed")),
        (1, 1, 1),
        "{summary}"
    );
    let id = summary["runId"].as_str().unwrap();
    let (_, report) = run_binary_async(&["status", id, "--report"], &env).await;
    assert!(
        report.contains("cold/b") && report.contains("S3 refused the HEAD"),
        "{report}"
    );
    ctx.cleanup().await;
}
