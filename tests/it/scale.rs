//! Scale: what a bulk run costs must not grow with what the tables remember. Checkpoint rows
//! are never deleted, so a page's key range can hold any number of rows of keys that are no
//! longer listed.

use futures::StreamExt;
use serde_json::Value;

use s3_blob_sync::azure::table::{BatchOp, BatchOutcome, Entity, TableClient};
use s3_blob_sync::state::checkpoint::{row_keys, target_partition, CheckpointStore, PARTITIONS};

use crate::harness::handler::run_binary_async;
use crate::harness::proxy::Proxy;
use crate::harness::TestCtx;

/// Writes a row for each of `names` copied from `bucket` to `target` (as a run that copied
/// them once would have), 100 of a partition to a transaction, 16 transactions at a time.
async fn seed_rows(table: &TableClient, bucket: &str, target: &str, names: impl Iterator<Item = String>) {
    table.create_if_missing().await.unwrap();
    let mut rows: Vec<Entity> = names
        .map(|n| {
            let (pk, rk) = row_keys(bucket, n.as_str(), target);
            let mut e = Entity::new(pk, rk);
            e.set_str("Bucket", bucket)
                .set_str("Key", &n)
                .set_str("Target", target)
                .set_str("Blob", &n)
                .set_str("Outcome", "copied");
            e
        })
        .collect();
    // A transaction holds one partition's rows.
    rows.sort_by(|a, b| a.partition_key.cmp(&b.partition_key));
    let chunks: Vec<&[Entity]> = rows
        .chunk_by(|a, b| a.partition_key == b.partition_key)
        .flat_map(|p| p.chunks(100))
        .collect();
    futures::stream::iter(chunks)
        .map(|c| async move {
            let ops: Vec<BatchOp> = c.iter().map(BatchOp::Insert).collect();
            assert_eq!(table.transact(&ops).await.unwrap(), BatchOutcome::Committed);
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// The checkpoint table's queries that `proxy` saw.
fn queries(proxy: &Proxy, ctx: &TestCtx) -> usize {
    proxy.count(&format!("GET /devstoreaccount1/{}()", ctx.table))
}

/// 200,000 keys expired under `data/2023/` between two keys still listed: a page with those
/// two reads a few rows, not the 200,000 (200 requests of 1,000 before), on the first copy and
/// on the re-run that finds their rows.
#[tokio::test]
async fn dead_rows_between_two_listed_keys_do_not_grow_the_pages_read() {
    let ctx = TestCtx::new("deadrows").await;
    ctx.put("data/2023/summary.csv", "s").await;
    ctx.put("data/2024/a", "a").await;
    let target = format!("devstoreaccount1/{}", ctx.container);
    let dead = (0..200_000).map(|i| format!("data/2023/t{i:06}"));
    // And one row just outside each end of the page, so a read that strays is seen.
    let ends = ["data/2023/a".to_string(), "data/2025/z".to_string()];
    seed_rows(&ctx.table(), &ctx.bucket, &target, dead.chain(ends)).await;

    let tables = Proxy::start("http://127.0.0.1:10002").await;
    let mut env = ctx.env.clone();
    env.insert(
        "AZURE_STORAGE_CONNECTION_STRING".into(),
        TestCtx::connection_string(None, None, Some(&tables.url)),
    );
    let src = format!("s3://{}/data/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/data/", ctx.container);
    for (run, copied, current) in [("first", 2, 0), ("re-run", 0, 2)] {
        let before = queries(&tables, &ctx);
        let (code, out) = run_binary_async(&["copy", &src, &dst, "--json", "--no-progress"], &env).await;
        assert_eq!(code, 0, "{run}: {out}");
        let summary: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
        let c = &summary["counters"];
        assert_eq!(
            (
                c["scanned"].as_u64(),
                c["transferred"].as_u64(),
                c["noTransferNeeded"].as_u64()
            ),
            (Some(2), Some(copied), Some(current)),
            "{run}: {summary}"
        );
        // The page's range reads (a few), the previous form's lookup and the run's own:
        // nowhere near the 200 pages the dead rows fill.
        let used = queries(&tables, &ctx) - before;
        assert!(used <= 8, "{run}: {used} checkpoint queries for a page of two keys");
    }
    assert_eq!(&ctx.blob().read("data/2023/summary.csv").await.unwrap()[..], b"s");
    // `status --bucket` pages through every row (200 pages), holding the shown ones only.
    let (code, out) = run_binary_async(&["status", "--bucket", &ctx.bucket, "--limit", "3"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("200004 checkpoint rows"), "{out}");
    assert!(out.contains("… 200001 more"), "{out}");
    ctx.cleanup().await;
}

/// Model-based: for seeded random pages, the bounded read returns exactly the page's rows,
/// whatever lies between them, in at most one request per name.
#[tokio::test]
async fn a_pages_rows_are_found_exactly_with_dead_rows_anywhere() {
    let ctx = TestCtx::new("pagerows").await;
    let tables = Proxy::start("http://127.0.0.1:10002").await;
    let cs = TestCtx::connection_string(None, None, Some(&tables.url));
    let cfg = ctx.config(&[("AZURE_STORAGE_CONNECTION_STRING", &cs)]);
    let store = CheckpointStore::open(&cfg.azure, &cfg.azure.authorizer().unwrap(), &ctx.table, cfg.retry).unwrap();
    let table = ctx.table();
    for seed in 1..=6u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let target = format!("t{seed}");
        // Names of different lengths and bytes, so the row-key order is tested, not assumed.
        let mut names: Vec<String> = (0..120)
            .map(|i| match next(4) {
                0 => format!("k/{i}"),
                1 => format!("k/{i}/ü{}", next(1000)),
                2 => format!("k/{}", "z".repeat(1 + next(40) as usize)) + &i.to_string(),
                _ => format!("k/{i:04}-{}", next(1_000_000)),
            })
            .collect();
        names.sort();
        names.dedup();
        let listed: Vec<&String> = names.iter().filter(|_| next(3) == 0).collect();
        let with_rows: Vec<&String> = listed.iter().copied().filter(|_| next(2) == 0).collect();
        // Dead rows: every name not listed, and a run of 1,500 after a random listed one.
        let gap = listed
            .get(next(listed.len().max(1) as u64) as usize)
            .map(|s| s.to_string());
        let mut dead: Vec<String> = names.iter().filter(|n| !listed.contains(n)).cloned().collect();
        if let Some(g) = &gap {
            dead.extend((0..1500).map(|i| format!("{g}\u{1}{i:05}")));
        }
        seed_rows(
            &table,
            &ctx.bucket,
            &target,
            dead.into_iter().chain(with_rows.iter().map(|s| s.to_string())),
        )
        .await;

        let page: Vec<&str> = listed.iter().map(|s| s.as_str()).collect();
        let before = queries(&tables, &ctx);
        let got = store.range(&ctx.bucket, &target, &page).await.unwrap();
        let used = queries(&tables, &ctx) - before;
        let mut found: Vec<&str> = got.keys().map(String::as_str).collect();
        found.sort();
        let mut want: Vec<&str> = with_rows.iter().map(|s| s.as_str()).collect();
        want.sort();
        assert_eq!(found, want, "seed {seed}");
        assert!(got.iter().all(|(n, v)| v.record.key == *n), "seed {seed}");
        // And one look at the partition rows had before they were spread (decision 123).
        assert!(
            used <= page.len().max(1) + 1,
            "seed {seed}: {used} requests for {} names",
            page.len()
        );
    }
    ctx.cleanup().await;
}

/// `serve --work-queues --copy-workers N` works at most N copies at once, as the Functions
/// host's `batchSize` bounds an instance: four objects of twelve sequential 1 MiB blocks each
/// behind a slow Azure, on two workers, never have more than two Put Blocks in flight (16,
/// the default, would have four).
#[tokio::test]
async fn serve_works_as_many_copies_at_once_as_it_is_given() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::harness::handler::{free_port, run_ended, start_http_run, HandlerProc};
    use crate::harness::objects::{assert_blob, multipart};

    let ctx = TestCtx::new("workers").await;
    let mut objects = Vec::new();
    for i in 0..4u64 {
        // Above the 8 MiB a listed object is read whole in: staged block by block.
        let data = crate::harness::bytes(12 << 20, 70 + i);
        let key = format!("w/{i}");
        let parts = [&data[..5 << 20], &data[5 << 20..10 << 20], &data[10 << 20..]].map(<[u8]>::to_vec);
        multipart(&ctx, &key, &parts, true).await;
        objects.push((key, data));
    }
    let blob = Proxy::start("http://127.0.0.1:10000").await;
    blob.faults().delay_ms.store(150, Ordering::SeqCst);
    let port = free_port();
    let cs = ctx.connection_string_via(&blob.url);
    let env = ctx.env_with(&[
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("SYNC_BLOCK_SIZE_MIB", "1"),
        ("SYNC_BLOCK_CONCURRENCY", "1"),
        ("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string().as_str()),
    ]);
    let mut serve = HandlerProc::spawn(&["serve", "--work-queues", "--copy-workers", "2"], &env);
    let body =
        serde_json::json!({"source": {"bucket": ctx.bucket, "prefix": "w/"}, "target": {"container": ctx.container}});
    let id = start_http_run(port, &body).await;
    let s = run_ended(port, &id, Duration::from_secs(120))
        .await
        .unwrap_or_else(|| panic!("the run did not end within 120 s: {}", serve.logs()));
    assert_eq!(s["counters"]["transferred"], 4, "{s}");
    assert_eq!(blob.count("comp=block&"), 48, "twelve blocks each");
    let most = blob.stats().max_puts_in_flight.load(Ordering::SeqCst);
    assert_eq!(most, 2, "{most} Put Blocks in flight on two copy workers");
    assert!(serve.logs().contains("\"copy_workers\":2"), "{}", serve.logs());
    // The source prefix is not part of the blob's name.
    for (key, data) in &objects {
        assert_blob(&ctx, key.trim_start_matches("w/"), data).await;
    }
    serve.kill();
    ctx.cleanup().await;
}

/// Scale-out is more processes on the same queues: two `serve --work-queues` share one bulk
/// run, one is killed with SIGKILL mid-run, and the other finishes it with exact counters and
/// every object in place (the killed one's messages come back after their visibility).
#[tokio::test]
async fn two_processes_share_a_run_and_one_survives_the_others_kill() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use crate::harness::handler::{free_port, run_ended, start_http_run, HandlerProc};

    let ctx = TestCtx::new("scaleout").await;
    let n = 60;
    for i in 0..n {
        ctx.put(&format!("s/{i:03}"), format!("object {i}")).await;
    }
    // A slow Azure, so the kill lands while copies are in flight on both.
    let blob = Proxy::start("http://127.0.0.1:10000").await;
    blob.faults().delay_ms.store(100, Ordering::SeqCst);
    let cs = ctx.connection_string_via(&blob.url);
    let (p1, p2) = (free_port(), free_port());
    let env = |port: u16| {
        ctx.env_with(&[
            ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
            ("SYNC_WORKER_VISIBILITY_SECS", "3"),
            // Pages of five keys over four shards: the kill can land in a shard's listing.
            ("SYNC_LIST_PAGE_KEYS", "5"),
            ("SYNC_LIST_SHARDS", "4"),
            ("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string().as_str()),
        ])
    };
    let args = ["serve", "--work-queues", "--copy-workers", "4"];
    let mut first = HandlerProc::spawn(&args, &env(p1));
    let mut second = HandlerProc::spawn(&args, &env(p2));
    let body =
        serde_json::json!({"source": {"bucket": ctx.bucket, "prefix": "s/"}, "target": {"container": ctx.container}});
    let id = start_http_run(p1, &body).await;
    // Both at work: a bounded wait for a dozen blobs, a copy done by each (on a loaded
    // machine one may start late), then the first dies at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |p: &HandlerProc| p.logs().contains("\"object done\"");
    while blob.count("PUT") < 12 || !done(&first) || !done(&second) {
        assert!(Instant::now() < deadline, "no copies started: {}", first.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    let copied_by_first = first.logs().matches("\"object done\"").count();
    let s = run_ended(p2, &id, Duration::from_secs(180))
        .await
        .unwrap_or_else(|| panic!("the survivor did not finish the run: {}", second.logs()));
    assert_eq!(s["state"], "Succeeded", "{s}");
    // Each object counted once. A copy the first process committed but could not record is
    // found current by its redelivery: counted `noTransferNeeded`, not copied twice.
    let c = |k: &str| s["counters"][k].as_u64().unwrap();
    assert_eq!(c("scanned"), n, "{s}");
    assert_eq!(c("transferred") + c("noTransferNeeded"), n, "{s}");
    assert_eq!((c("failed"), c("vanished")), (0, 0), "{s}");
    assert!(
        second.logs().matches("\"object done\"").count() > 0 && copied_by_first > 0,
        "both processes copied: first {copied_by_first}, second {}",
        second.logs()
    );
    let names = ctx.blob().list("").await.unwrap();
    assert_eq!(names.len() as u64, n, "every object is a blob once");
    second.kill();
    ctx.cleanup().await;
}

/// Counts a copy's JSON summary: (transferred, noTransferNeeded).
fn moved_and_current(out: &str) -> (Option<u64>, Option<u64>) {
    let summary: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let c = &summary["counters"];
    (c["transferred"].as_u64(), c["noTransferNeeded"].as_u64())
}

/// A bulk run writes its checkpoint rows over the 16 partitions of its bucket and target,
/// each its share, and none to the single partition rows had before (decision 123): 480
/// objects, 30 a partition on average, counted row by row after the copy.
#[tokio::test]
async fn checkpoint_writes_spread_over_the_partitions() {
    let ctx = TestCtx::new("spread").await;
    let keys: Vec<String> = (0..480).map(|i| format!("logs/2024/{i:05}.json")).collect();
    futures::stream::iter(&keys)
        .for_each_concurrent(32, |k| ctx.put(k, "{}"))
        .await;
    let src = format!("s3://{}/logs/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/logs/", ctx.container);
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--json", "--no-progress"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(moved_and_current(&out), (Some(480), Some(0)), "{out}");

    let single = target_partition(&ctx.bucket, &ctx.target_id());
    let mut per = std::collections::BTreeMap::<String, u32>::new();
    for e in ctx.table().query_all(None).await.unwrap() {
        if e.get_str("Bucket") == Some(ctx.bucket.as_str()) && e.row_key.starts_with('n') {
            *per.entry(e.partition_key).or_default() += 1;
        }
    }
    assert_eq!(per.values().sum::<u32>(), 480, "{per:?}");
    assert_eq!(per.len(), PARTITIONS as usize, "{per:?}");
    assert!(!per.contains_key(&single), "{per:?}");
    assert!(per.keys().all(|pk| pk.starts_with(&format!("{single}~"))), "{per:?}");
    // Binomial spread of 480 over 16: about 30 ± 5.4. No partition takes twice its share.
    assert!(per.values().all(|&n| (15..=45).contains(&n)), "{per:?}");
    ctx.cleanup().await;
}

/// Rows written before they were spread (one partition per bucket and target) still count:
/// a re-run reads them and copies nothing; a changed object's write moves its row; and
/// `migrate-checkpoints` moves the rest (counted first with `--dry-run`), after which the
/// old partition is empty and a re-run still copies nothing.
#[tokio::test]
async fn rows_of_the_single_partition_are_read_then_moved() {
    let ctx = TestCtx::new("respread").await;
    let keys = ["a/1", "a/2", "b/3", "b/4", "c/5", "c/6"];
    for k in keys {
        ctx.put(k, format!("body of {k}")).await;
    }
    let src = format!("s3://{}/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let copy = || async {
        let (code, out) = run_binary_async(&["copy", &src, &dst, "--json", "--no-progress"], &ctx.env).await;
        assert_eq!(code, 0, "{out}");
        moved_and_current(&out)
    };
    assert_eq!(copy().await, (Some(6), Some(0)));

    // Put every row back where the previous version kept it.
    let table = ctx.table();
    let single = target_partition(&ctx.bucket, &ctx.target_id());
    let rows_in = |pk: String| {
        let table = table.clone();
        async move {
            let f = s3_blob_sync::azure::table::Filter::eq("PartitionKey", &pk);
            table.query_all(Some(f.as_str())).await.unwrap()
        }
    };
    for e in table.query_all(None).await.unwrap() {
        if e.row_key.starts_with('n') && e.get_str("Bucket") == Some(ctx.bucket.as_str()) {
            let mut old = Entity::new(&single, &e.row_key);
            old.props = e.props.clone();
            table.insert(&old).await.unwrap();
            table.delete(&e.partition_key, &e.row_key, "*").await.unwrap();
        }
    }
    assert_eq!(rows_in(single.clone()).await.len(), 6);
    // And an older row of the first form (by key) for `a/1`, saying its copy failed: the
    // migration must keep the blob's newer row over it, whichever it moves first.
    let a1 = table
        .get(&single, &row_keys(&ctx.bucket, "a/1", &ctx.target_id()).1)
        .await
        .unwrap()
        .unwrap();
    let mut first_form = Entity::new(&single, format!("k{}", hex::encode("a/1")));
    first_form.props = a1.props.clone();
    first_form.set_str("Outcome", "failed");
    table.insert(&first_form).await.unwrap();

    // Read where they are: nothing to copy.
    assert_eq!(copy().await, (Some(0), Some(6)));
    // A changed object is copied, and its row moves to its own partition.
    ctx.put("b/3", "changed").await;
    assert_eq!(copy().await, (Some(1), Some(5)));
    let (own, rk) = row_keys(&ctx.bucket, "b/3", &ctx.target_id());
    assert!(table.get(&own, &rk).await.unwrap().is_some());
    assert!(table.get(&single, &rk).await.unwrap().is_none());
    assert_eq!(rows_in(single.clone()).await.len(), 6);

    let migrate = |args: &'static [&'static str]| crate::harness::handler::migrate_checkpoints(&ctx.env, args);
    let dry = migrate(&["--dry-run"]).await;
    assert_eq!(
        (dry["spread"].as_u64(), dry["found"].as_u64()),
        (Some(5), Some(1)),
        "{dry}"
    );
    assert_eq!(rows_in(single.clone()).await.len(), 6, "a dry run changes nothing");
    let done = migrate(&[]).await;
    assert_eq!(
        (
            done["spread"].as_u64(),
            done["found"].as_u64(),
            done["superseded"].as_u64()
        ),
        (Some(5), Some(1), Some(1)),
        "{done}"
    );
    assert!(rows_in(single.clone()).await.is_empty());
    let again = migrate(&[]).await;
    assert_eq!(
        (again["spread"].as_u64(), again["found"].as_u64()),
        (Some(0), Some(0)),
        "once"
    );
    for k in keys {
        let (own, rk) = row_keys(&ctx.bucket, k, &ctx.target_id());
        let row = table
            .get(&own, &rk)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{k}: no row"));
        assert_eq!(row.get_str("Key"), Some(k));
        assert_ne!(row.get_str("Outcome"), Some("failed"), "{k}: the older row won");
    }
    assert_eq!(copy().await, (Some(0), Some(6)));
    assert_eq!(&ctx.blob().read("b/3").await.unwrap()[..], b"changed");
    ctx.cleanup().await;
}

/// Tables and queues on accounts of their own (decision 124): with every endpoint a request
/// must not use unreachable (the target's queues and tables, the state account's blobs and
/// queues, the queue account's blobs and tables), a CLI copy and a Function App run through
/// the work queues both finish.
#[tokio::test]
async fn tables_and_queues_live_on_accounts_of_their_own() {
    use std::time::Duration;

    use crate::harness::handler::{free_port, run_ended, start_http_run, HandlerProc};

    let ctx = TestCtx::new("stateacct").await;
    for i in 0..8 {
        ctx.put(&format!("cli/{i}"), format!("object {i}")).await;
        ctx.put(&format!("fn/{i}"), format!("object {i}")).await;
    }
    let (blob, queue, table) = (
        Proxy::start("http://127.0.0.1:10000").await,
        Proxy::start("http://127.0.0.1:10001").await,
        Proxy::start("http://127.0.0.1:10002").await,
    );
    // Nothing listens on port 9 (discard) here: a request there fails at once.
    let nowhere = "http://127.0.0.1:9";
    let target = TestCtx::connection_string(Some(&blob.url), Some(nowhere), Some(nowhere));
    let state = TestCtx::connection_string(Some(nowhere), Some(nowhere), Some(&table.url));
    let queues = TestCtx::connection_string(Some(nowhere), Some(&queue.url), Some(nowhere));
    let port = free_port();
    let env = ctx.env_with(&[
        ("AZURE_STORAGE_CONNECTION_STRING", target.as_str()),
        ("SYNC_STATE_CONNECTION_STRING", state.as_str()),
        ("SYNC_QUEUE_CONNECTION_STRING", queues.as_str()),
        ("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string().as_str()),
    ]);

    let src = format!("s3://{}/cli/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/cli/", ctx.container);
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--json", "--no-progress"], &env).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(moved_and_current(&out), (Some(8), Some(0)), "{out}");

    let mut serve = HandlerProc::spawn(&["serve", "--work-queues"], &env);
    let body =
        serde_json::json!({"source": {"bucket": ctx.bucket, "prefix": "fn/"}, "target": {"container": ctx.container}});
    let id = start_http_run(port, &body).await;
    let s = run_ended(port, &id, Duration::from_secs(120))
        .await
        .unwrap_or_else(|| panic!("the run did not end: {}", serve.logs()));
    assert_eq!(
        (s["state"].as_str(), s["counters"]["transferred"].as_u64()),
        (Some("Succeeded"), Some(8)),
        "{s}"
    );
    serve.kill();
    // The key signed both accounts' requests, and is in nobody's output.
    crate::secrets::assert_no_secrets("state account", &format!("{out}\n{}", serve.logs()));

    assert_eq!(ctx.blob().list("").await.unwrap().len(), 16);
    // Every state request reached the state account's endpoints; the blobs went to the
    // target's (the CLI names its target by URL, the run by the target account).
    assert!(table.count(&ctx.table) > 0 && queue.count("messages") > 0);
    assert!(
        blob.count("PUT") >= 8,
        "the run's blobs went through the target's endpoint"
    );
    ctx.cleanup().await;
}

/// Several copy queues (decision 125): with `SYNC_COPY_QUEUES=4`, a run's copies spread over
/// the four queues by key, one `serve --work-queues` works them all within its one bound, and
/// a malformed message on the last queue is parked in that queue's own poison queue. Every
/// object is copied once and the run ends.
#[tokio::test]
async fn copies_spread_over_several_queues_and_each_is_worked() {
    use std::time::Duration;

    use crate::harness::handler::{free_port, run_ended, start_http_run, HandlerProc};

    let ctx = TestCtx::new("copyqueues").await;
    let n = 48u64;
    for i in 0..n {
        ctx.put(&format!("q/{i:03}"), format!("object {i}")).await;
    }
    let queues = Proxy::start("http://127.0.0.1:10001").await;
    let port = free_port();
    let cs = TestCtx::connection_string(None, Some(&queues.url), None);
    let env = ctx.env_with(&[
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("SYNC_COPY_QUEUES", "4"),
        ("SYNC_LIST_PAGE_KEYS", "8"),
        ("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string().as_str()),
    ]);
    let cfg = ctx.config(&[("SYNC_COPY_QUEUES", "4")]);
    let names = cfg.queues.copy_names();
    assert_eq!(names[3], format!("{}-3", cfg.queues.copy));
    let last = ctx.queue(&names[3]);
    last.create_if_missing().await.unwrap();
    last.send("{not json", None).await.unwrap();

    let mut serve = HandlerProc::spawn(&["serve", "--work-queues", "--copy-workers", "4"], &env);
    let body =
        serde_json::json!({"source": {"bucket": ctx.bucket, "prefix": "q/"}, "target": {"container": ctx.container}});
    let id = start_http_run(port, &body).await;
    let s = run_ended(port, &id, Duration::from_secs(120))
        .await
        .unwrap_or_else(|| panic!("the run did not end: {}", serve.logs()));
    let c = |k: &str| s["counters"][k].as_u64().unwrap();
    assert_eq!(
        (s["state"].as_str(), c("scanned"), c("transferred")),
        (Some("Succeeded"), n, n),
        "{s}"
    );
    // The run maps `q/` to the container's root.
    assert_eq!(ctx.blob().list("").await.unwrap().len() as u64, n);

    // Each queue took a share of the copies: 48 keys over 4, none empty, none with half.
    let sent: Vec<usize> = names
        .iter()
        .map(|q| queues.count(&format!("POST /devstoreaccount1/{q}/messages")))
        .collect();
    assert_eq!(sent.iter().sum::<usize>() as u64, n, "{sent:?}");
    assert!(sent.iter().all(|&k| k > 0 && (k as u64) < n / 2), "{sent:?}");
    // The malformed message was parked beside its own queue, which is empty now.
    let parked = ctx.queue(&format!("{}-poison", names[3]));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while parked.approximate_count().await.unwrap() == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing parked: {}", serve.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.approximate_count().await.unwrap(), 0);
    serve.kill();
    ctx.cleanup().await;
}
