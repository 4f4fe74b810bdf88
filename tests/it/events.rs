//! Incremental sync from real S3 -> SQS notifications (moto) into Azurite: puts, overwrites,
//! deletes, duplicates, reordering, bad input and faults. The target is compared with the
//! source object by object.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use s3_blob_sync::app::drain::{DrainStats, Drainer};
use s3_blob_sync::app::worker::{QueueFunction, Worker, WorkerStats};
use s3_blob_sync::azure::queue::WorkQueue;
use s3_blob_sync::config::Config;
use s3_blob_sync::state::checkpoint::{CheckpointStore, Outcome};
use serde_json::json;

use crate::harness::handler::{queue_payload, run_binary_async, HandlerProc};
use crate::harness::proxy::Proxy;
use crate::harness::{bytes, sha, TestCtx};

/// A test's event pipeline: its own SQS queue (notifications configured through
/// `setup-events`), its own Azure queues.
struct Events {
    ctx: TestCtx,
    queue_url: String,
    overrides: Vec<(String, String)>,
}

impl Events {
    async fn new(tag: &str, mode: &str) -> Events {
        let mut ctx = TestCtx::new(tag).await;
        let (_, queue_url) = ctx.sqs_queue(&format!("{tag}-q-")).await;
        let overrides = vec![
            ("SYNC_SQS_QUEUE_URL".to_string(), queue_url.clone()),
            ("SYNC_MODE".to_string(), mode.to_string()),
            ("SYNC_DRAIN_BUDGET_SECS".to_string(), "8".to_string()),
        ];
        for (k, v) in &overrides {
            ctx.env.insert(k.clone(), v.clone());
        }
        let (code, out) = setup_events(&ctx.bucket, &queue_url, &["--fix-policy"], &ctx.env).await;
        assert_eq!(code, 0, "setup-events: {out}");
        Events {
            ctx,
            queue_url,
            overrides,
        }
    }

    fn config(&self, extra: &[(&str, &str)]) -> Config {
        self.ctx.config(extra)
    }

    /// Syncs again and again until `relayed` events have been relayed in all, or `within`
    /// has passed: messages SQS holds back (a failed relay's pause, a visibility timeout)
    /// come back by themselves, so this polls instead of sleeping a guessed time. No copy
    /// may be poisoned on the way.
    async fn sync_until(&self, relayed: u64, within: Duration) -> DrainStats {
        let started = std::time::Instant::now();
        let mut total = DrainStats::default();
        loop {
            let (d, w) = self.sync(&[]).await;
            assert_eq!(w.poisoned, 0, "{w:?}");
            total.merge(&d);
            if total.relayed >= relayed || started.elapsed() > within {
                return total;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Drains SQS until idle, then works the copy queue off until idle.
    async fn sync(&self, extra: &[(&str, &str)]) -> (DrainStats, WorkerStats) {
        let cfg = Arc::new(self.config(extra));
        let drainer = Drainer::from_config(&cfg).await.unwrap();
        let d = drainer.drain(Duration::from_secs(60), true).await.unwrap();
        let state = s3_blob_sync::AppState::new((*cfg).clone()).await.unwrap();
        let worker = Worker::new(state, QueueFunction::CopyObject, 16).await.unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let w = worker.run(rx, Some(Duration::from_millis(600))).await;
        (d, w)
    }

    async fn send_raw(&self, body: &str) {
        let cfg = self.config(&[]);
        let sqs = s3_blob_sync::aws::sqs::SqsQueue::new(&cfg.aws, &self.queue_url, Default::default()).await;
        sqs.client()
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// Every key: the blob equals the source, or both are absent.
    async fn assert_in_sync(&self, keys: &[String]) {
        let blobs: HashMap<String, u64> = self
            .ctx
            .blob()
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|b| (b.name, b.size))
            .collect();
        for k in keys {
            let src = self
                .ctx
                .s3
                .client()
                .get_object()
                .bucket(&self.ctx.bucket)
                .key(k)
                .send()
                .await;
            match src {
                Ok(o) => {
                    let data = o.body.collect().await.unwrap().into_bytes();
                    let blob = self
                        .ctx
                        .blob()
                        .read(k)
                        .await
                        .unwrap_or_else(|e| panic!("{k}: source exists, blob missing: {e}"));
                    assert_eq!(sha(&blob), sha(&data), "{k}: content differs");
                    let p = self.ctx.blob().properties(k).await.unwrap().unwrap();
                    assert_eq!(
                        p.metadata.get("s3sync_size").map(String::as_str),
                        Some(data.len().to_string().as_str()),
                        "{k}"
                    );
                }
                Err(_) => assert!(
                    !blobs.contains_key(k),
                    "{k}: deleted at the source but the blob remains"
                ),
            }
        }
    }

    /// A client for one of this test's Azure queues.
    fn queue(&self, name: &str) -> WorkQueue {
        let cfg = self.config(&[]);
        WorkQueue::new(&cfg.azure, &cfg.azure.authorizer().unwrap(), name, Default::default()).unwrap()
    }

    fn env(&self) -> HashMap<String, String> {
        let o: Vec<(&str, &str)> = self.overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.ctx.env_with(&o)
    }
}

fn s3_event(bucket: &str, key: &str, name: &str, sequencer: &str) -> String {
    json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
        "eventTime": "2026-11-23T10:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "sequencer": sequencer}}
    }]})
    .to_string()
}

#[tokio::test]
async fn put_overwrite_delete_follow_the_bucket() {
    let ev = Events::new("evpod", "mirror").await;
    let ctx = &ev.ctx;
    ctx.put("docs/a b+c.txt", "one").await;
    let (d, w) = ev.sync(&[]).await;
    assert!(d.relayed >= 1 && w.done >= 1, "{d:?} {w:?}");
    assert_eq!(&ctx.blob().read("docs/a b+c.txt").await.unwrap()[..], b"one");

    ctx.put("docs/a b+c.txt", "two, longer").await;
    ev.sync(&[]).await;
    assert_eq!(&ctx.blob().read("docs/a b+c.txt").await.unwrap()[..], b"two, longer");

    ctx.s3
        .client()
        .delete_object()
        .bucket(&ctx.bucket)
        .key("docs/a b+c.txt")
        .send()
        .await
        .unwrap();
    let (d, _) = ev.sync(&[]).await;
    assert!(d.relayed >= 1);
    assert!(
        ctx.blob().properties("docs/a b+c.txt").await.unwrap().is_none(),
        "mirror deletes"
    );
    let row = CheckpointStore::new(ctx.table())
        .get(&ctx.bucket, "docs/a b+c.txt", &ctx.target_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.record.outcome, Outcome::Deleted);
    assert!(
        row.record.last_event.as_deref().unwrap().starts_with("ObjectRemoved"),
        "{:?}",
        row.record
    );
}

#[tokio::test]
async fn additive_keeps_and_mirror_deletes() {
    for mode in ["additive", "mirror"] {
        let ev = Events::new("evmode", mode).await;
        ev.ctx.put("k", "v").await;
        ev.sync(&[]).await;
        ev.ctx
            .s3
            .client()
            .delete_object()
            .bucket(&ev.ctx.bucket)
            .key("k")
            .send()
            .await
            .unwrap();
        ev.sync(&[]).await;
        let exists = ev.ctx.blob().properties("k").await.unwrap().is_some();
        assert_eq!(exists, mode == "additive", "{mode}");
    }
}

#[tokio::test]
async fn duplicates_reordering_and_recreate_never_regress() {
    let ev = Events::new("evorder", "mirror").await;
    let ctx = &ev.ctx;
    // Count commits through a proxy in front of Azurite.
    let blob_proxy = Proxy::start("http://127.0.0.1:10000").await;
    let cs = ctx.connection_string_via(&blob_proxy.url);
    let via = [("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())];

    // The same event three times: one copy.
    ctx.put("dup", "data").await;
    ev.sync(&via).await;
    let commits = blob_proxy.commits();
    assert_eq!(commits, 1);
    for _ in 0..3 {
        ev.send_raw(&s3_event(&ctx.bucket, "dup", "ObjectCreated:Put", "00000000000000000A"))
            .await;
    }
    ev.sync(&via).await;
    assert_eq!(blob_proxy.commits(), commits, "duplicates copied again");

    // create(new) applied, then a stale create(old) arrives: skipped by sequencer.
    ctx.put("seq", "new").await;
    ev.send_raw(&s3_event(&ctx.bucket, "seq", "ObjectCreated:Put", "0000000000000000FF"))
        .await;
    ev.sync(&via).await;
    let before = blob_proxy.commits();
    ev.send_raw(&s3_event(&ctx.bucket, "seq", "ObjectCreated:Put", "00000000000000000B"))
        .await;
    ev.sync(&via).await;
    assert_eq!(blob_proxy.commits(), before, "stale event was applied");
    assert_eq!(&ctx.blob().read("seq").await.unwrap()[..], b"new");

    // delete-then-create delivered in that order while the object exists: it stays.
    ctx.put("flip", "exists").await;
    ev.sync(&via).await;
    ev.send_raw(&s3_event(
        &ctx.bucket,
        "flip",
        "ObjectRemoved:Delete",
        "0000000000000001000",
    ))
    .await;
    ev.send_raw(&s3_event(
        &ctx.bucket,
        "flip",
        "ObjectCreated:Put",
        "0000000000000000FFF",
    ))
    .await;
    ev.sync(&via).await;
    assert_eq!(
        &ctx.blob().read("flip").await.unwrap()[..],
        b"exists",
        "a stale delete removed a live object"
    );

    // Delete then re-create before anything is processed: the blob must exist.
    ctx.put("again", "v1").await;
    ctx.s3
        .client()
        .delete_object()
        .bucket(&ctx.bucket)
        .key("again")
        .send()
        .await
        .unwrap();
    ctx.put("again", "v2").await;
    ev.sync(&via).await;
    assert_eq!(&ctx.blob().read("again").await.unwrap()[..], b"v2");
    ev.assert_in_sync(&["dup".into(), "seq".into(), "flip".into(), "again".into()])
        .await;
}

#[tokio::test]
async fn multipart_completion_with_two_events_gives_one_blob() {
    let ev = Events::new("evmulti", "mirror").await;
    let ctx = &ev.ctx;
    let c = ctx.s3.client();
    let up = c
        .create_multipart_upload()
        .bucket(&ctx.bucket)
        .key("mp")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let p1 = bytes(5 * 1024 * 1024, 1);
    let p2 = bytes(1024, 2);
    let mut parts = Vec::new();
    for (n, p) in [(1, &p1), (2, &p2)] {
        let r = c
            .upload_part()
            .bucket(&ctx.bucket)
            .key("mp")
            .upload_id(id)
            .part_number(n)
            .body(p.clone().into())
            .send()
            .await
            .unwrap();
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().unwrap())
                .build(),
        );
    }
    c.complete_multipart_upload()
        .bucket(&ctx.bucket)
        .key("mp")
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    // S3 may emit a second event for the same completion.
    ev.send_raw(&s3_event(
        &ctx.bucket,
        "mp",
        "ObjectCreated:CompleteMultipartUpload",
        "",
    ))
    .await;
    let (d, w) = ev.sync(&[]).await;
    assert!(d.relayed >= 2, "{d:?}");
    assert_eq!(w.poisoned, 0);
    let blob = ctx.blob().read("mp").await.unwrap();
    assert_eq!(sha(&blob), sha(&[p1, p2].concat()));
    assert_eq!(ctx.blob().list("").await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_bodies_unknown_events_and_test_events_are_counted_and_parked() {
    let ev = Events::new("evbad", "mirror").await;
    let ctx = &ev.ctx;
    ev.send_raw("this is not json").await;
    ev.send_raw(&s3_event(&ctx.bucket, "k", "ObjectTeleported:Quantum", "01"))
        .await;
    ev.send_raw(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#)
        .await;
    ev.send_raw(r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#).await;
    // Bodies whose naive park would exceed Azure's 64 KiB: one top-level JSON string of
    // 200 KiB (serde quotes it whole in its message), and 132 KB of non-ASCII text.
    let huge_string = format!("\"{}\"", "y".repeat(200 * 1024));
    let non_ascii = "grüße €".repeat(132 * 1024 / 10);
    ev.send_raw(&huge_string).await;
    ev.send_raw(&non_ascii).await;
    let (d, _) = ev.sync(&[]).await;
    assert_eq!(d.rejected, 4, "{d:?}");
    assert_eq!(d.unknown_events, 1, "{d:?}");
    assert!(d.test_events >= 1, "{d:?}");
    assert_eq!(d.left_for_retry, 0);
    // Parked with the reason, nothing dropped; SQS is empty.
    let cfg = ev.config(&[]);
    let rejects = ev.queue(&cfg.queues.reject);
    let parked = rejects.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(parked.len(), 4);
    let reasons: Vec<serde_json::Value> = parked.iter().map(|p| serde_json::from_str(&p.text).unwrap()).collect();
    assert!(reasons.iter().any(
        |r| r["reason"].as_str().unwrap().contains("not an S3 event notification") && r["body"] == "this is not json"
    ));
    assert!(reasons
        .iter()
        .any(|r| r["reason"].as_str().unwrap().contains("missing field `s3`")));
    // The big ones: cut, but with their size and digest, so the original can be matched.
    for big in [&huge_string, &non_ascii] {
        let r = reasons
            .iter()
            .find(|r| r["bodyBytes"] == big.len())
            .unwrap_or_else(|| panic!("no parked message of {} bytes", big.len()));
        assert_eq!(r["truncated"], true);
        assert_eq!(r["bodySha256"], sha(big.as_bytes()));
        assert!(big.starts_with(r["body"].as_str().unwrap()));
        assert!(!r["sqsMessageId"].as_str().unwrap().is_empty());
        assert!(r["reason"].as_str().unwrap().len() <= 2048 + 4, "{r}");
    }
    let depth = Drainer::from_config(&cfg).await.unwrap().sqs().depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 0));
}

/// While the Azure queue is down, the relay's breaker stops receiving from SQS. Two outages,
/// scaled by the retry base (4 s here, 60 s in production): one of 1.5 bases (90 s) and one of
/// 10 (10 minutes), longer than the relay's first pause. Each event lands within one probe
/// interval and a few seconds of the outage's end, nothing reaches the dead-letter queue
/// although it takes a message after only two receives, and a fresh drainer (the next
/// stateless `DrainSqs` invocation) honours the open breaker without receiving.
#[tokio::test]
async fn an_azure_outage_spends_no_receive_and_events_land_right_after_it() {
    let ev = Events::new("evdlq", "mirror").await;
    let ctx = &ev.ctx;
    // The events queue dead-letters a message on its third receive: an outage may cost a
    // message one receive (the relay that met it) and its relay one more.
    let sqs = ev.config(&[]);
    let client = s3_blob_sync::aws::sqs::SqsQueue::new(&sqs.aws, &ev.queue_url, Default::default()).await;
    let (_, dlq_url) = ctx.sqs_queue("evdlq-dead-").await;
    let dlq_arn = client
        .client()
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    client
        .client()
        .set_queue_attributes()
        .queue_url(&ev.queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}).to_string(),
        )
        .send()
        .await
        .unwrap();
    let (dlq, max) = client.dead_letter().await.unwrap().expect("redrive policy is read");
    assert_eq!((dlq.url(), max), (dlq_url.as_str(), 2));

    const BASE: u64 = 4;
    let queue_proxy = Proxy::start("http://127.0.0.1:10001").await;
    let cs = crate::harness::TestCtx::connection_string(None, Some(&queue_proxy.url), None);
    let base = BASE.to_string();
    let overrides = [
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("SYNC_SQS_RETRY_BASE_SECS", base.as_str()),
    ];
    let cfg = ev.config(&overrides);
    let interval = Drainer::probe_interval(Duration::from_secs(BASE));
    // S3's TestEvent from setup-events is acknowledged before the outages.
    Drainer::from_config(&cfg)
        .await
        .unwrap()
        .drain(Duration::from_secs(5), true)
        .await
        .unwrap();
    // The relay runs as DrainSqs does in one process: one invocation after another.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let totals = Arc::new(std::sync::Mutex::new(DrainStats::default()));
    let relay = {
        let (stop, totals) = (stop.clone(), totals.clone());
        let drainer = Drainer::from_config(&cfg).await.unwrap();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let got = drainer.drain(Duration::from_secs(8), false).await.unwrap_or_default();
                totals.lock().unwrap().merge(&got);
            }
        })
    };
    // The next DrainSqs on another instance: it knows nothing of the outage but what the
    // breaker's stored state tells it.
    let fresh = Drainer::from_config(&ev.config(&overrides)).await.unwrap();
    let copies = ctx.queue(&cfg.queues.copy);
    let mut all_keys = Vec::new();
    for (n, outage) in [(1, BASE * 3 / 2), (2, BASE * 10)] {
        let before = copies.approximate_count().await.unwrap();
        queue_proxy.outage(Duration::from_secs(outage));
        let ends = std::time::Instant::now() + Duration::from_secs(outage);
        let keys: Vec<String> = (0..5).map(|i| format!("out{n}/{i}")).collect();
        for k in &keys {
            ctx.put(k, format!("during the outage: {k}")).await;
        }
        if n == 2 {
            // Mid-outage, it learns from the stored breaker that the side is down, and
            // receives nothing.
            tokio::time::sleep(Duration::from_secs(BASE * 3)).await;
            let got = fresh.drain(Duration::from_secs(5), true).await.unwrap_or_default();
            assert_eq!(
                got.received,
                0,
                "a drainer received during the outage: {got:?}; the relay: {:?}",
                totals.lock().unwrap()
            );
        }
        // Every event of the outage relayed, soon after it ends.
        let deadline = ends + interval + Duration::from_secs(BASE + 6);
        loop {
            let now = copies.approximate_count().await.unwrap();
            if now >= before + keys.len() as u64 {
                println!(
                    "outage {n} ({outage} s): its {} events relayed {:?} after it ended",
                    keys.len(),
                    std::time::Instant::now().saturating_duration_since(ends)
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "outage {n} ({outage} s): {} of {} events relayed {:?} after it ended; {:?}",
                now - before,
                keys.len(),
                std::time::Instant::now().saturating_duration_since(ends),
                totals.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            dlq.depth().await.unwrap().visible,
            0,
            "outage {n}: events reached the DLQ"
        );
        all_keys.extend(keys);
    }
    stop.store(true, Ordering::SeqCst);
    relay.await.unwrap();
    let total = totals.lock().unwrap().clone();
    assert!(total.breaker_trips >= 1 && total.probes >= 3, "{total:?}");
    assert_eq!(
        dlq.depth().await.unwrap().visible,
        0,
        "events reached the DLQ: {total:?}"
    );
    ev.sync(&[]).await;
    ev.assert_in_sync(&all_keys).await;
    for k in &all_keys {
        assert!(ctx.blob().properties(k).await.unwrap().is_some(), "{k} did not arrive");
    }

    // `redrive` brings back what a longer outage would have dead-lettered.
    client
        .client()
        .send_message()
        .queue_url(&dlq_url)
        .message_body(s3_event(&ctx.bucket, "out/0", "ObjectCreated:Put", "00FF"))
        .send()
        .await
        .unwrap();
    let env = ev.env();
    let (code, out) = run_binary_async(&["redrive", "--dry-run"], &env).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("~1 messages wait") && out.contains("nothing was moved"),
        "{out}"
    );
    assert_eq!(dlq.depth().await.unwrap().visible, 1, "a dry run moved something");
    // Sent there by hand, it carries no DeadLetterQueueSourceArn: not moved unless asked.
    let (code, out) = run_binary_async(&["redrive"], &env).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("moved 0 of") && out.contains("--any-source moves it"),
        "{out}"
    );
    assert_eq!(
        dlq.depth().await.unwrap().visible,
        1,
        "the message left behind is visible again"
    );
    let (code, out) = run_binary_async(&["redrive", "--any-source", "--json"], &env).await;
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(v["moved"], 1, "{out}");
    assert_eq!(dlq.depth().await.unwrap().visible, 0);
    let (d, _) = ev.sync(&[]).await;
    assert_eq!(d.relayed, 1, "{d:?}");
    let (code, out) = run_binary_async(&["status", "--bucket", &ctx.bucket], &env).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dead-letter queue: ~0 messages"), "{out}");
}

/// An Azure side that cannot be reached at all (the connection is refused: a firewall, a
/// private endpoint gone, DNS) is an outage too: the breaker opens and no more SQS receives
/// start, so no message spends its receives on it.
#[tokio::test]
async fn an_azure_side_that_refuses_connections_opens_the_breaker() {
    let ev = Events::new("evrefused", "mirror").await;
    let ctx = &ev.ctx;
    // S3's TestEvent, acknowledged while the Azure side still answers.
    Drainer::from_config(&ev.config(&[]))
        .await
        .unwrap()
        .drain(Duration::from_secs(5), true)
        .await
        .unwrap();
    // Then every Azure queue of the relay is on a port where nothing listens.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let cs = crate::harness::TestCtx::connection_string(None, Some(&closed), None);
    let cfg = ev.config(&[("AZURE_STORAGE_CONNECTION_STRING", &cs)]);
    let auth = cfg.azure.authorizer().unwrap();
    let queue = |name: &str| WorkQueue::new(&cfg.azure, &auth, name, cfg.retry).unwrap();
    let sqs = s3_blob_sync::aws::sqs::SqsQueue::new(&cfg.aws, &ev.queue_url, cfg.retry).await;
    let breaker = s3_blob_sync::app::drain::Breaker::new(queue(&cfg.queues.copy), None, Duration::from_secs(30));
    let drainer = Drainer::new(sqs, queue(&cfg.queues.copy), queue(&cfg.queues.reject), breaker);
    for i in 0..3 {
        ctx.put(&format!("r{i}"), "while unreachable").await;
    }
    let mut total = DrainStats::default();
    let started = std::time::Instant::now();
    while total.breaker_trips == 0 && started.elapsed() < Duration::from_secs(60) {
        total.merge(&drainer.drain(Duration::from_secs(8), true).await.unwrap_or_default());
    }
    assert!(total.breaker_trips == 1 && total.relayed == 0, "{total:?}");
    // Open: the next drains receive nothing, though the events wait in SQS.
    let again = drainer.drain(Duration::from_secs(5), true).await.unwrap_or_default();
    assert_eq!(again.received, 0, "{again:?}");
    let depth = drainer.sqs().depth().await.unwrap();
    assert!(depth.visible + depth.in_flight >= 3, "{depth:?}");
}

#[tokio::test]
async fn azure_queue_failure_mid_batch_loses_nothing() {
    let ev = Events::new("evfail", "mirror").await;
    let ctx = &ev.ctx;
    for i in 0..6 {
        ctx.put(&format!("k{i}"), format!("v{i}")).await;
    }
    // The Azure queue answers 500 long enough to exhaust the relay's retries.
    let queue_proxy = Proxy::start("http://127.0.0.1:10001").await;
    let cs = crate::harness::TestCtx::connection_string(None, Some(&queue_proxy.url), None);
    // A first failed receive pauses 2 s here (the default is 60 s).
    let cfg = ev.config(&[
        ("AZURE_STORAGE_CONNECTION_STRING", &cs),
        ("SYNC_SQS_RETRY_BASE_SECS", "2"),
    ]);
    let mut drainer = Drainer::from_config(&cfg).await.unwrap();
    drainer.visibility = Duration::from_secs(2);
    queue_proxy.storm(1_000_000, 500);
    let d = drainer.drain(Duration::from_secs(10), true).await.unwrap();
    // Nothing relayed, so none of the six event messages was deleted (only the TestEvent
    // S3 sent when notifications were configured needed no relay).
    assert!(
        d.relayed == 0 && d.left_for_retry >= 6 && d.deleted == d.test_events,
        "{d:?}"
    );
    queue_proxy.storm(0, 500);
    // SQS hands the six back once their 2 s pause ends: drain until all are relayed.
    let d = ev.sync_until(6, Duration::from_secs(30)).await;
    assert!(d.relayed >= 6, "{d:?}");
    ev.assert_in_sync(&(0..6).map(|i| format!("k{i}")).collect::<Vec<_>>())
        .await;

    // SQS receive errors: a storm in front of moto's SQS, retried.
    let sqs_proxy = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    sqs_proxy.storm(3, 503);
    sqs_proxy.faults().resets.store(1, Ordering::SeqCst);
    ctx.put("k9", "late").await;
    let (d, _) = ev.sync(&[("AWS_ENDPOINT_URL", &sqs_proxy.url)]).await;
    assert!(d.relayed >= 1, "{d:?}");
    assert_eq!(&ctx.blob().read("k9").await.unwrap()[..], b"late");
}

#[tokio::test]
async fn five_hundred_rapid_events_over_a_hundred_keys() {
    let ev = Events::new("evmany", "mirror").await;
    let ctx = &ev.ctx;
    let keys: Vec<String> = (0..100).map(|i| format!("n/{i:03}")).collect();
    // 5 operations per key: put, overwrite, maybe delete, maybe re-create. Seeded, not random
    // per run, so a failure can be replayed.
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut ops = Vec::new();
    for round in 0..5 {
        for k in &keys {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let delete = round > 0 && x.is_multiple_of(4);
            ops.push((k.clone(), delete, round, x));
        }
    }
    // Ten writers in parallel, each owning ten keys, so every key sees its operations in
    // order (moto mishandles concurrent writes to one key; S3 does not need this).
    let client = ctx.s3.client().clone();
    let bucket = ctx.bucket.clone();
    futures::future::join_all((0..10).map(|w| {
        let (client, bucket) = (client.clone(), bucket.clone());
        let mine: Vec<_> = ops
            .iter()
            .filter(|(k, ..)| k[2..].parse::<usize>().unwrap() % 10 == w)
            .cloned()
            .collect();
        async move {
            for (k, delete, round, seed) in mine {
                if delete {
                    client.delete_object().bucket(&bucket).key(&k).send().await.unwrap();
                } else {
                    let body = bytes(100 + (seed % 3000) as usize, seed ^ round);
                    client
                        .put_object()
                        .bucket(&bucket)
                        .key(&k)
                        .body(body.into())
                        .send()
                        .await
                        .unwrap();
                }
            }
        }
    }))
    .await;
    // Duplicates and reordering on top of the real stream.
    for k in keys.iter().step_by(7) {
        ev.send_raw(&s3_event(&ctx.bucket, k, "ObjectCreated:Put", "")).await;
        ev.send_raw(&s3_event(&ctx.bucket, k, "ObjectRemoved:Delete", "")).await;
    }
    // Under load a relay can fail; the drainer makes SQS redeliver it after a few seconds, so
    // a later drain relays it. Nothing may be lost.
    let d = ev.sync_until(500, Duration::from_secs(60)).await;
    assert!(d.relayed >= 500, "{d:?}");
    ev.assert_in_sync(&keys).await;
}

#[tokio::test]
async fn drain_sqs_and_copy_object_through_the_invoke_protocol() {
    let ev = Events::new("evinvoke", "mirror").await;
    let ctx = &ev.ctx;
    ctx.put("via/host.txt", "hello host").await;
    let h = HandlerProc::start(&ev.env()).await;
    let timer = json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "IsPastDue": false}}, "Metadata": {}});
    let (status, body) = h.invoke("DrainSqs", &timer).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["ReturnValue"]["relayed"].as_u64().unwrap() >= 1, "{body}");
    // Play the host's queue trigger: each copy-objects message becomes one CopyObject call.
    let cfg = ev.config(&[]);
    let q = ev.queue(&cfg.queues.copy);
    let items = q.receive(32, Duration::from_secs(30)).await.unwrap();
    assert!(!items.is_empty());
    for item in items {
        let msg: serde_json::Value = serde_json::from_str(&item.text).unwrap();
        let (status, body) = h.invoke("CopyObject", &queue_payload(&msg, item.dequeue_count)).await;
        assert_eq!(status, 200, "{body}");
        q.delete(&item).await.unwrap();
    }
    assert_eq!(&ctx.blob().read("via/host.txt").await.unwrap()[..], b"hello host");
    // Lag is recorded and shown by `status`.
    let (code, out) = run_binary_async(&["status", "--bucket", &ctx.bucket], &ev.env()).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sqs backlog") && out.contains("last drain"), "{out}");
    assert!(out.contains("ObjectCreated:"), "{out}");
}

#[tokio::test]
async fn setup_events_keeps_other_notifications_and_checks_the_policy() {
    let ctx = TestCtx::new("evsetup").await;
    let (_, url) = ctx.sqs_queue("setup-").await;
    // Without a policy and without --fix-policy: refused, with the statement to add.
    let (code, out) = setup_events(&ctx.bucket, &url, &[], &ctx.env).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("s3.amazonaws.com") && out.contains("--fix-policy"),
        "{out}"
    );
    // Dry run changes nothing.
    let (code, out) = setup_events(&ctx.bucket, &url, &["--dry-run"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    let raw = reqwest::get(format!("{}/{}?notification", ctx.env["AWS_ENDPOINT_URL"], ctx.bucket))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!raw.contains("QueueConfiguration"), "{raw}");
    // A prefix filter, then a second run with --fix-policy; the config is replaced, not duplicated.
    for _ in 0..2 {
        let (code, out) = setup_events(&ctx.bucket, &url, &["--prefix", "in/", "--fix-policy"], &ctx.env).await;
        assert_eq!(code, 0, "{out}");
    }
    let n = ctx
        .s3
        .client()
        .get_bucket_notification_configuration()
        .bucket(&ctx.bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(n.queue_configurations().len(), 1);
    // The policy it wrote lets S3 send for this bucket, while the bucket is the account's.
    let sqs = s3_blob_sync::aws::sqs::SqsQueue::new(&ctx.config(&[]).aws, &url, Default::default()).await;
    let attrs = sqs
        .client()
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::Policy)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let get = |n| attrs.attributes().unwrap()[&n].clone();
    let policy: serde_json::Value = serde_json::from_str(&get(aws_sdk_sqs::types::QueueAttributeName::Policy)).unwrap();
    let account = get(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .split(':')
        .nth(4)
        .unwrap()
        .to_string();
    let st = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Principal"]["Service"] == "s3.amazonaws.com")
        .expect("the statement for S3")
        .clone();
    assert_eq!(
        st["Condition"]["StringEquals"]["aws:SourceAccount"],
        account.as_str(),
        "{st}"
    );
    assert_eq!(
        st["Condition"]["ArnEquals"]["aws:SourceArn"],
        format!("arn:aws:s3:::{}", ctx.bucket),
        "{st}"
    );
    let events: Vec<String> = n.queue_configurations()[0]
        .events()
        .iter()
        .map(|e| e.as_str().to_string())
        .collect();
    assert!(events.contains(&"s3:ObjectCreated:*".to_string()) && events.contains(&"s3:ObjectRemoved:*".to_string()));

    // 503s from S3 and SQS are retried by the crate's one policy (the SDK's own retries are
    // off, so before they went through it, the first 503 ended the command).
    let flaky = crate::harness::proxy::Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    flaky.faults().storm.store(3, Ordering::SeqCst);
    let (code, out) = setup_events(
        &ctx.bucket,
        &url,
        &["--fix-policy"],
        &ctx.env_with(&[("AWS_ENDPOINT_URL", &flaky.url)]),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(flaky.faults().storm.load(Ordering::SeqCst), 0, "the storm was not met");
}

#[tokio::test]
async fn killed_worker_mid_copy_then_restart_completes() {
    let ev = Events::new("evkill", "mirror").await;
    let ctx = &ev.ctx;
    ctx.put("big", "old content").await;
    ev.sync(&[]).await;
    assert_eq!(&ctx.blob().read("big").await.unwrap()[..], b"old content");

    let data = bytes(16 * 1024 * 1024, 77);
    ctx.put("big", data.clone()).await;
    // Slow Azure so the kill lands mid-copy; a short visibility so the message returns soon.
    let (blob_proxy, mut env) = slow_azure(&ev, 100).await;
    env.insert("SYNC_WORKER_VISIBILITY_SECS".into(), "4".into());
    let mut worker = HandlerProc::spawn(&["watch"], &env);
    // Several of the 16 blocks went up, none committed yet: kill -9.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while blob_proxy.count("comp=block&") < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "copy never started: {}",
            worker.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill();
    assert_eq!(
        &ctx.blob().read("big").await.unwrap()[..],
        b"old content",
        "a partial copy became visible"
    );

    assert_eq!(blob_proxy.commits(), 0, "killed before the commit");

    // Restart: a worker that finds the queue empty (the message is still invisible) exits,
    // so one is started after another until the message is back and the copy completes.
    blob_proxy.faults().delay_ms.store(0, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut again = HandlerProc::spawn(&["watch", "--once"], &env);
        let code = again.wait(Duration::from_secs(120)).await;
        assert_eq!(code, Some(0), "{}", again.logs());
        let blob = ctx.blob().read("big").await.unwrap();
        if sha(&blob) == sha(&data) {
            // The worker that copied it counts the copy among its events.
            assert!(again.logs().contains(r#"objects{copied}\":1"#), "{}", again.logs());
            break;
        }
        assert_eq!(&blob[..], b"old content", "{}", again.logs());
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never completed: {}",
            again.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_copy_slower_than_the_visibility_timeout_is_worked_by_one_consumer() {
    let ctx = TestCtx::new("hbeat").await;
    ctx.put("slow", "slow bytes").await;
    let blob_proxy = Proxy::start("http://127.0.0.1:10000").await;
    let copy = ctx.env["SYNC_COPY_QUEUE"].clone();
    let cs = ctx.connection_string_via(&blob_proxy.url);
    let cfg = ctx.config(&[
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("SYNC_WORKER_VISIBILITY_SECS", "3"),
    ]);
    let state = s3_blob_sync::AppState::new(cfg).await.unwrap();
    let worker = Worker::new(state, QueueFunction::CopyObject, 4).await.unwrap();
    let msg = json!({"bucket": ctx.bucket, "key": "slow"}).to_string();
    ctx.queue(&copy).send(&msg, None).await.unwrap();
    // The copy's first write stalls for three visibility periods.
    blob_proxy.faults().hold_writes.store(1, Ordering::SeqCst);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(async move { worker.run(rx, Some(Duration::from_secs(4))).await });
    blob_proxy.until_held(1).await;
    // The fault itself, not a wait for something: the write stays held this long.
    tokio::time::sleep(Duration::from_secs(9)).await;
    blob_proxy.release(1);
    let stats = run.await.unwrap();

    assert_eq!(&ctx.blob().read("slow").await.unwrap()[..], b"slow bytes");
    assert_eq!(
        stats,
        WorkerStats {
            done: 1,
            retried: 0,
            poisoned: 0,
            handed_back: 0,
        },
        "the message was handed out again while its copy ran"
    );
    assert_eq!(blob_proxy.commits(), 1, "a second consumer wrote the blob too");
    let poison = ctx
        .queue(&format!("{copy}-poison"))
        .receive(32, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(poison.is_empty(), "parked: {}", poison[0].text);
    ctx.cleanup().await;
}

/// Runs `setup-events` for `bucket` and queue `url` with `extra` arguments, in `env`.
pub(crate) async fn setup_events(
    bucket: &str,
    url: &str,
    extra: &[&str],
    env: &std::collections::HashMap<String, String>,
) -> (i32, String) {
    let mut args = vec!["setup-events", "--bucket", bucket, "--queue-url", url];
    args.extend_from_slice(extra);
    run_binary_async(&args, env).await
}

/// A blob endpoint that answers each request `delay_ms` late, and the environment of a worker
/// that copies through it in 1 MiB blocks, two at a time: a 16 MiB copy takes seconds, so a
/// kill or a stop lands in the middle of it.
async fn slow_azure(ev: &Events, delay_ms: u64) -> (Proxy, HashMap<String, String>) {
    let blob_proxy = Proxy::start("http://127.0.0.1:10000").await;
    blob_proxy.faults().delay_ms.store(delay_ms, Ordering::SeqCst);
    let mut env = ev.env();
    env.insert(
        "AZURE_STORAGE_CONNECTION_STRING".into(),
        ev.ctx.connection_string_via(&blob_proxy.url),
    );
    env.insert("SYNC_BLOCK_SIZE_MIB".into(), "1".into());
    env.insert("SYNC_BLOCK_CONCURRENCY".into(), "2".into());
    (blob_proxy, env)
}

/// Starts `watch` on a slow Azure, waits until the copy of a 16 MiB object is under way, and
/// sends SIGTERM. Returns the stopped worker, the proxy and the object's bytes.
async fn terminate_mid_copy(ev: &Events, grace_s: &str) -> (HandlerProc, Proxy, Vec<u8>, Duration) {
    let ctx = &ev.ctx;
    let data = bytes(16 * 1024 * 1024, 91);
    ctx.put("big", data.clone()).await;
    let (blob_proxy, mut env) = slow_azure(ev, 150).await;
    // A visibility far longer than the test: a message left hidden would not come back in time.
    env.insert("SYNC_WORKER_VISIBILITY_SECS".into(), "600".into());
    env.insert("SYNC_SHUTDOWN_GRACE_SECS".into(), grace_s.into());
    // One worker slot, held by the copy: the stop must reach a worker that waits for a slot.
    let worker = HandlerProc::spawn(&["watch", "--workers", "1"], &env);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while blob_proxy.count("comp=block&") < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "copy never started: {}",
            worker.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = std::time::Instant::now();
    worker.terminate();
    (worker, blob_proxy, data, signalled.elapsed())
}

#[tokio::test]
async fn sigterm_mid_copy_hands_the_message_back_at_once_and_loses_nothing() {
    let ev = Events::new("evterm", "mirror").await;
    let ctx = &ev.ctx;
    let (mut worker, blob_proxy, data, _) = terminate_mid_copy(&ev, "0").await;
    let signalled = std::time::Instant::now();
    let code = worker.wait(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "watch did not stop within its bound: {}", worker.logs());
    // Grace 0: the copy is dropped and its message handed back; 5 s of hand-back at most.
    assert!(
        signalled.elapsed() < Duration::from_secs(12),
        "stopping took {:?}",
        signalled.elapsed()
    );
    let logs = worker.logs();
    assert!(logs.contains("handed back for another worker"), "{logs}");
    assert!(logs.contains(r#""handed_back":1"#), "{logs}");
    assert_eq!(
        blob_proxy.commits(),
        0,
        "the copy was committed although it was dropped"
    );
    assert!(ctx.blob().read("big").await.is_err(), "a partial blob became visible");

    // The message is visible again now, not after its 600 s visibility: the next worker
    // (without the slow proxy) copies the object whole.
    let mut again = HandlerProc::spawn(&["watch", "--once"], &ev.env());
    assert_eq!(again.wait(Duration::from_secs(90)).await, Some(0), "{}", again.logs());
    let blob = ctx.blob().read("big").await.expect("the object was lost at the stop");
    assert_eq!(sha(&blob), sha(&data));
    assert!(again.logs().contains(r#"objects{copied}\":1"#), "{}", again.logs());
}

#[tokio::test]
async fn sigterm_lets_a_held_copy_finish_within_the_grace_period() {
    let ev = Events::new("evgrace", "mirror").await;
    let ctx = &ev.ctx;
    let (mut worker, _proxy, data, _) = terminate_mid_copy(&ev, "25").await;
    let code = worker.wait(Duration::from_secs(40)).await;
    assert_eq!(code, Some(0), "watch did not stop within its bound: {}", worker.logs());
    let logs = worker.logs();
    assert!(
        logs.contains(r#""done":1"#) && logs.contains(r#""handed_back":0"#),
        "{logs}"
    );
    let blob = ctx.blob().read("big").await.expect("the held copy did not finish");
    assert_eq!(sha(&blob), sha(&data));
}

/// GETs a probe of a `watch --health-port`: its status and body.
async fn probe(port: u16, route: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}{route}"))
        .send()
        .await;
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default(),
            )
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// Polls `route` until it answers `status` (at most `within`).
async fn probe_until(port: u16, route: &str, status: u16, within: Duration, w: &HandlerProc) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (got, body) = probe(port, route).await;
        if got == status {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{route} answered {got} {body}, never {status}: {}",
            w.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn health_probes_stay_live_in_an_aws_outage_and_readiness_follows_it() {
    let ev = Events::new("evhealth", "mirror").await;
    let ctx = &ev.ctx;
    let aws = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let port = crate::harness::handler::free_port();
    let mut env = ev.env();
    env.insert("AWS_ENDPOINT_URL".into(), aws.url.clone());
    let mut w = HandlerProc::spawn(&["watch", "--health-port", &port.to_string()], &env);
    let ready = probe_until(port, "/readyz", 200, Duration::from_secs(60), &w).await;
    assert_eq!(ready, json!({"ready": true, "checked": true, "unreachable": []}));
    assert_eq!(probe(port, "/livez").await.0, 200);
    let (code, out) = run_binary_async(&["health", "--port", &port.to_string(), "--ready"], &env).await;
    assert_eq!(code, 0, "{out}");

    // S3 and SQS answer nothing but 503 for a while: not ready, naming the side; still live.
    aws.outage(Duration::from_secs(25));
    let body = probe_until(port, "/readyz", 503, Duration::from_secs(25), &w).await;
    assert_eq!(body["unreachable"], json!(["aws"]), "{body}");
    assert_eq!(
        probe(port, "/livez").await,
        (200, json!({"live": true})),
        "an outage restarted the worker"
    );
    let (code, out) = run_binary_async(&["health", "--port", &port.to_string(), "--ready"], &env).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("503") && out.contains("aws"), "{out}");
    let (code, out) = run_binary_async(&["health", "--port", &port.to_string()], &env).await;
    assert_eq!(code, 0, "liveness during the outage: {out}");

    // The outage ends: ready again, and an object written meanwhile is synced.
    probe_until(port, "/readyz", 200, Duration::from_secs(60), &w).await;
    ctx.put("after-outage", "bytes").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ctx.blob().read("after-outage").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "not synced after the outage: {}",
            w.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.terminate();
    assert_eq!(w.wait(Duration::from_secs(35)).await, Some(0), "{}", w.logs());
    // Nothing answers once it stopped; `health` says so and fails.
    let (code, out) = run_binary_async(&["health", "--port", &port.to_string()], &env).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("watch --health-port"), "{out}");
}

/// A tag change (`ObjectTagging:Put`, `ObjectTagging:Delete`) sets the blob's index tags and
/// moves no bytes; its sequencer is not judged against the key's content sequencer, so one
/// that sorts below the applied put still applies. The events are sent as S3 would, through
/// SQS.
#[tokio::test]
async fn a_tag_change_sets_the_blobs_tags_without_copying() {
    let ev = Events::new("evtags", "mirror").await;
    let ctx = &ev.ctx;
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key("t.txt")
        .tagging("team=data")
        .body(b"tagged".to_vec().into())
        .send()
        .await
        .unwrap();
    ev.sync_until(1, Duration::from_secs(30)).await;
    let before = ctx.blob().properties("t.txt").await.unwrap().expect("copied");
    assert_eq!(
        ctx.blob().tags("t.txt").await.unwrap(),
        vec![("team".to_string(), "data".to_string())]
    );

    use aws_sdk_s3::types::{Tag, Tagging};
    let tagging = Tagging::builder()
        .tag_set(Tag::builder().key("team").value("ops").build().unwrap())
        .tag_set(Tag::builder().key("env").value("prod").build().unwrap())
        .build()
        .unwrap();
    ctx.s3
        .client()
        .put_object_tagging()
        .bucket(&ctx.bucket)
        .key("t.txt")
        .tagging(tagging)
        .send()
        .await
        .unwrap();
    // A sequencer below any real one: a content event this old would be stale.
    ev.send_raw(&s3_event(&ctx.bucket, "t.txt", "ObjectTagging:Put", "0000000000000000"))
        .await;
    ev.sync_until(1, Duration::from_secs(30)).await;
    let mut want = vec![
        ("env".to_string(), "prod".to_string()),
        ("team".to_string(), "ops".to_string()),
    ];
    want.sort();
    assert_eq!(ctx.blob().tags("t.txt").await.unwrap(), want);
    let after = ctx.blob().properties("t.txt").await.unwrap().unwrap();
    assert_eq!(after.etag, before.etag, "the bytes were written again");

    ctx.s3
        .client()
        .delete_object_tagging()
        .bucket(&ctx.bucket)
        .key("t.txt")
        .send()
        .await
        .unwrap();
    ev.send_raw(&s3_event(
        &ctx.bucket,
        "t.txt",
        "ObjectTagging:Delete",
        "0000000000000001",
    ))
    .await;
    ev.sync_until(1, Duration::from_secs(30)).await;
    assert!(ctx.blob().tags("t.txt").await.unwrap().is_empty());
    assert_eq!(ctx.blob().properties("t.txt").await.unwrap().unwrap().etag, before.etag);
    assert_eq!(&ctx.blob().read("t.txt").await.unwrap()[..], b"tagged");
}
