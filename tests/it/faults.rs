//! Faults as real as the happy path: 503 storms, connection resets, a killed process.
//! Each test shows that nothing is lost and that errors are clear.

use std::sync::atomic::Ordering;
use std::time::Duration;

use s3_blob_sync::error::ErrorKind;
use s3_blob_sync::state::checkpoint::Outcome;
use serde_json::json;

use crate::harness::handler::{queue_payload, run_binary_async, HandlerProc};
use crate::harness::objects::req;
use crate::harness::proxy::Proxy;
use crate::harness::{bytes, sha, TestCtx};

#[tokio::test]
async fn storms_and_resets_on_both_clouds_are_retried() {
    let ctx = TestCtx::new("storm").await;
    let data = bytes(3 * 1024 * 1024, 11);
    ctx.put("obj", data.clone()).await;
    let blob_proxy = Proxy::start("http://127.0.0.1:10000").await;
    let s3_proxy = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let cs = ctx.connection_string_via(&blob_proxy.url);
    let engine = ctx
        .engine(&[
            ("AZURE_STORAGE_CONNECTION_STRING", &cs),
            ("AWS_ENDPOINT_URL", &s3_proxy.url),
            ("SYNC_COPY_PATH", "streamed"),
            ("SYNC_BLOCK_SIZE_MIB", "1"),
        ])
        .await;
    blob_proxy.storm(3, 503);
    blob_proxy.faults().resets.store(2, Ordering::SeqCst);
    s3_proxy.storm(2, 503);
    s3_proxy.faults().resets.store(1, Ordering::SeqCst);
    let rep = engine.copy_object(&req(&ctx, "obj")).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied);
    assert_eq!(sha(&ctx.blob().read("obj").await.unwrap()), sha(&data));
    // The faults were really hit, and retried.
    assert_eq!(blob_proxy.faults().storm.load(Ordering::SeqCst), 0);
    assert_eq!(blob_proxy.faults().resets.load(Ordering::SeqCst), 0);
    assert_eq!(s3_proxy.faults().storm.load(Ordering::SeqCst), 0);
    assert_eq!(s3_proxy.faults().resets.load(Ordering::SeqCst), 0);
    ctx.cleanup().await;
}

/// A GET stream cut off halfway is resumed from the first byte not yet received (bytes
/// already in hand are kept), for the parallel spans of an object with a full-object CRC64
/// and for the single in-order span an MD5 check needs. Nothing is lost and both verify.
#[tokio::test]
async fn a_cut_get_stream_resumes_from_the_first_unread_byte() {
    let ctx = TestCtx::new("cutget").await;
    let (a, b, c) = (bytes(5 << 20, 1), bytes(5 << 20, 2), bytes((2 << 20) + 1000, 3));
    crate::harness::objects::multipart(&ctx, "crc", &[a.clone(), b.clone(), c.clone()], true).await;
    let whole = [a, b, c].concat();
    let single = bytes((7 << 20) + 333, 4);
    ctx.put("md5", single.clone()).await;
    let s3_proxy = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let mut cfg = ctx.config(&[
        ("AWS_ENDPOINT_URL", &s3_proxy.url),
        ("SYNC_COPY_PATH", "streamed"),
        ("SYNC_BLOCK_SIZE_MIB", "1"),
    ]);
    cfg.engine.block_concurrency = 2;
    let engine = s3_blob_sync::engine::Engine::from_config(&cfg).await.unwrap();
    engine.checkpoint().ensure().await.unwrap();

    for (key, data, spans, check) in [("crc", &whole, 2, "crc64nvme"), ("md5", &single, 1, "md5")] {
        s3_proxy.stats().ranges.lock().unwrap().clear();
        s3_proxy.faults().cut_get.store(1, Ordering::SeqCst);
        let rep = engine.copy_object(&req(&ctx, key)).await.unwrap();
        assert_eq!(rep.outcome, Outcome::Copied, "{key}");
        assert_eq!(rep.verified.map(|v| v.as_str()), Some(check), "{key}");
        assert_eq!(sha(&ctx.blob().read(key).await.unwrap()), sha(data), "{key}");
        assert_eq!(
            s3_proxy.faults().cut_get.load(Ordering::SeqCst),
            0,
            "{key}: the cut was hit"
        );

        let parse = |r: &str| -> (u64, u64) {
            let (a, b) = r.trim_start_matches("bytes=").split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let ranges: Vec<(u64, u64)> = s3_proxy
            .stats()
            .ranges
            .lock()
            .unwrap()
            .iter()
            .map(|r| parse(r))
            .collect();
        assert_eq!(
            ranges.len(),
            spans + 1,
            "{key}: one GET per span plus one resume: {ranges:?}"
        );
        // The first GETs tile the object exactly.
        let mut first = ranges[..spans].to_vec();
        first.sort();
        assert_eq!(first[0].0, 0, "{key}: {ranges:?}");
        assert_eq!(first[spans - 1].1, data.len() as u64 - 1, "{key}: {ranges:?}");
        assert!(first.windows(2).all(|w| w[0].1 + 1 == w[1].0), "{key}: {ranges:?}");
        // The resume starts inside the span that broke, past its start, and runs to its end.
        let (from, to) = ranges[spans];
        assert!(
            first.iter().any(|&(s, e)| s < from && from <= e && to == e),
            "{key}: resume {from}-{to} does not continue a span of {first:?}"
        );
    }
    ctx.cleanup().await;
}

/// A server that answers a ranged GET with the whole object (or another range) would hand
/// out wrong blocks: the copy stops with an integrity error that names the Content-Range,
/// nothing is committed, and the next attempt copies the object.
#[tokio::test]
async fn a_get_answered_with_another_range_is_refused() {
    let ctx = TestCtx::new("norange").await;
    let (a, b) = (bytes(5 << 20, 41), bytes(3 << 20, 42));
    crate::harness::objects::multipart(&ctx, "obj", &[a.clone(), b.clone()], true).await;
    let s3_proxy = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let engine = ctx
        .engine(&[
            ("AWS_ENDPOINT_URL", &s3_proxy.url),
            ("SYNC_COPY_PATH", "streamed"),
            ("SYNC_BLOCK_SIZE_MIB", "1"),
        ])
        .await;
    s3_proxy.faults().ignore_range.store(1, Ordering::SeqCst);
    let err = engine.copy_object(&req(&ctx, "obj")).await.unwrap_err();
    assert_eq!(
        s3_proxy.faults().ignore_range.load(Ordering::SeqCst),
        0,
        "the fault was hit"
    );
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("Content-Range"), "{err}");
    assert!(
        ctx.blob().properties("obj").await.unwrap().is_none(),
        "nothing was committed"
    );

    let rep = engine.copy_object(&req(&ctx, "obj")).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied);
    assert_eq!(sha(&ctx.blob().read("obj").await.unwrap()), sha(&[a, b].concat()));
    ctx.cleanup().await;
}

#[tokio::test]
async fn endless_throttling_gives_up_with_a_recorded_reason() {
    let ctx = TestCtx::new("endless").await;
    ctx.put("obj", "data").await;
    let blob_proxy = Proxy::start("http://127.0.0.1:10000").await;
    let cs = ctx.connection_string_via(&blob_proxy.url);
    let mut cfg = ctx.config(&[("AZURE_STORAGE_CONNECTION_STRING", &cs), ("SYNC_COPY_PATH", "streamed")]);
    cfg.engine.block_concurrency = 1;
    let engine = s3_blob_sync::engine::Engine::from_config(&cfg).await.unwrap();
    engine.checkpoint().ensure().await.unwrap();
    blob_proxy.storm(10_000, 503);
    let started = std::time::Instant::now();
    let err = engine.copy_object(&req(&ctx, "obj")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled);
    assert!(err.message().contains("gave up after"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "retries are bounded in time"
    );
    blob_proxy.storm(0, 503);
    let row = engine
        .checkpoint()
        .get(&ctx.bucket, "obj", &ctx.target_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.record.outcome, Outcome::Failed);
    assert!(row.record.reason.unwrap().starts_with("throttled"));
    assert!(ctx.blob().properties("obj").await.unwrap().is_none());
    ctx.cleanup().await;
}

/// The README's one bound: the CLI attempts an object at most `SYNC_MAX_DEQUEUE_COUNT`
/// times, as the queue would, and each attempt tries a call at most 6 times. Only one
/// object's calls are refused, so the other is copied and the failure is named.
#[tokio::test]
async fn the_cli_attempts_an_object_as_often_as_the_queue_would() {
    let ctx = TestCtx::new("cliattempts").await;
    ctx.put("keep.bin", bytes(4096, 1)).await;
    ctx.put("storm.bin", bytes(4096, 2)).await;
    let proxy = Proxy::start("http://127.0.0.1:10000").await;
    let target = format!("{}/devstoreaccount1/{}/", proxy.url, ctx.container);
    let source = format!("s3://{}/", ctx.bucket);
    let args = ["copy", &source, &target, "--no-progress", "--json"];
    let env = ctx.env_with(&[("SYNC_MAX_DEQUEUE_COUNT", "2"), ("SYNC_COPY_PATH", "streamed")]);
    let summary = |out: &str| -> serde_json::Value {
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).expect("a summary")).unwrap()
    };

    proxy.faults().storm_to.arm("storm.bin", 1000);
    let (code, out) = run_binary_async(&args, &env).await;
    assert_eq!(code, 1, "{out}");
    // Two attempts, each one Put Blob tried six times: no third attempt, no seventh try.
    assert_eq!(proxy.count("storm.bin"), 12, "{out}");
    let s = summary(&out);
    assert_eq!(
        (s["counters"]["transferred"].as_u64(), s["counters"]["failed"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(s["failures"][0]["key"], "storm.bin", "{s}");
    assert!(
        s["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("gave up after 6 attempts"),
        "{s}"
    );
    assert!(ctx.blob().properties("storm.bin").await.unwrap().is_none());

    // Seven refusals: the first attempt gives up after six, the second gets through.
    proxy.faults().storm_to.arm("storm.bin", 7);
    let (code, out) = run_binary_async(&args, &env).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("object attempt failed; trying again").count(), 1, "{out}");
    assert_eq!(sha(&ctx.blob().read("storm.bin").await.unwrap()), sha(&bytes(4096, 2)));
    ctx.cleanup().await;
}

#[tokio::test]
async fn killed_handler_mid_copy_leaves_old_blob_and_rerun_completes() {
    let ctx = TestCtx::new("killed").await;
    ctx.put("big", "old content").await;
    let env = ctx.env_with(&[("SYNC_COPY_PATH", "streamed")]);
    // First, a committed old version.
    let mut h = HandlerProc::start(&env).await;
    let msg = json!({"bucket": ctx.bucket, "key": "big"});
    let (status, _) = h.invoke("CopyObject", &queue_payload(&msg, 1)).await;
    assert_eq!(status, 200);

    // Then a new 24 MiB version, written slowly through a proxy so the kill lands mid-copy.
    let data = bytes(24 * 1024 * 1024, 21);
    ctx.put("big", data.clone()).await;
    let blob_proxy = Proxy::start("http://127.0.0.1:10000").await;
    blob_proxy.faults().delay_ms.store(150, Ordering::SeqCst);
    let cs = ctx.connection_string_via(&blob_proxy.url);
    let env = ctx.env_with(&[
        ("SYNC_COPY_PATH", "streamed"),
        ("AZURE_STORAGE_CONNECTION_STRING", &cs),
        ("SYNC_BLOCK_SIZE_MIB", "1"),
        ("SYNC_BLOCK_CONCURRENCY", "2"),
    ]);
    h.kill();
    let mut h = HandlerProc::start(&env).await;
    let payload = queue_payload(&msg, 1);
    let invoke = {
        let port = h.port;
        tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/CopyObject"))
                .header("content-type", "application/json")
                .body(payload.to_string())
                .send()
                .await;
        })
    };
    // Wait until several of the 24 blocks went up, then kill -9.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while blob_proxy.count("comp=block&") < 6 {
        assert!(std::time::Instant::now() < deadline, "copy never started: {}", h.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.kill();
    let _ = invoke.await;
    assert_eq!(
        &ctx.blob().read("big").await.unwrap()[..],
        b"old content",
        "after a crash the old blob is intact, no partial one is visible"
    );

    assert_eq!(blob_proxy.commits(), 0, "killed before the commit");

    // The host redelivers: a fresh process completes the copy.
    blob_proxy.faults().delay_ms.store(0, Ordering::SeqCst);
    let h = HandlerProc::start(&env).await;
    let (status, body) = h.invoke("CopyObject", &queue_payload(&msg, 2)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ReturnValue"]["outcome"], "copied");
    assert_eq!(sha(&ctx.blob().read("big").await.unwrap()), sha(&data));
    ctx.cleanup().await;
}

/// A request that never reached its service (the connection was refused) is `NotSent` on
/// every client, the one failure a call that is not idempotent may repeat; one that may have
/// landed (a reset after the request was written) is `Transient`.
#[tokio::test]
async fn a_request_never_sent_is_told_apart_on_every_client() {
    let ctx = TestCtx::new("notsent").await;
    // A port with nothing listening: bound, then released.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let cs = crate::harness::TestCtx::connection_string(Some(&closed), Some(&closed), Some(&closed));
    let cfg = ctx.config(&[("AZURE_STORAGE_CONNECTION_STRING", &cs), ("AWS_ENDPOINT_URL", &closed)]);
    let auth = cfg.azure.authorizer().unwrap();
    let quick = s3_blob_sync::retry::RetryPolicy {
        max_attempts: 2,
        ..Default::default()
    };
    let table = s3_blob_sync::azure::table::TableClient::new(&cfg.azure, &auth, "notsent", quick).unwrap();
    let blob = s3_blob_sync::azure::blob::BlobTarget::new(&cfg.azure, &auth, &ctx.container, quick).unwrap();
    let queue = s3_blob_sync::azure::queue::WorkQueue::new(&cfg.azure, &auth, "notsent", quick).unwrap();
    let s3 = s3_blob_sync::aws::s3::S3Source::new(&cfg.aws, quick).await;
    let sqs = s3_blob_sync::aws::sqs::SqsQueue::new(&cfg.aws, &format!("{closed}/1/q"), quick).await;
    let errors = [
        ("table", table.get("p", "r").await.unwrap_err()),
        ("blob", blob.properties("b").await.unwrap_err()),
        ("queue", queue.approximate_count().await.unwrap_err()),
        ("s3", s3.head(&ctx.bucket, "k").await.unwrap_err()),
        ("sqs", sqs.depth().await.map(|_| ()).unwrap_err()),
    ];
    for (what, e) in &errors {
        assert_eq!(e.kind(), ErrorKind::NotSent, "{what}: {e}");
        assert!(e.may_retry(s3_blob_sync::error::Idempotency::NotIdempotent), "{what}");
    }

    // A reset after the request was written may have landed: Transient.
    let s3_proxy = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    s3_proxy.faults().resets.store(10, Ordering::SeqCst);
    let cfg = ctx.config(&[("AWS_ENDPOINT_URL", &s3_proxy.url)]);
    let s3 = s3_blob_sync::aws::s3::S3Source::new(&cfg.aws, quick).await;
    let e = s3.head(&ctx.bucket, "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert!(!e.may_retry(s3_blob_sync::error::Idempotency::NotIdempotent));
    ctx.cleanup().await;
}

/// SQS's own refusals keep the service's status, code and cause, and a 4xx is `Invalid`:
/// answered once, not retried as a fault.
#[tokio::test]
async fn an_sqs_refusal_is_invalid_with_its_status_and_not_retried() {
    let ctx = TestCtx::new("sqs400").await;
    let (_, url) = ctx.sqs_queue("sqs400-").await;
    let proxy = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    proxy.faults().refuse_to.arm("POST /", u32::MAX);
    let cfg = ctx.config(&[("AWS_ENDPOINT_URL", &proxy.url)]);
    let sqs = s3_blob_sync::aws::sqs::SqsQueue::new(&cfg.aws, &url, Default::default()).await;
    let before = proxy.stats().requests.load(Ordering::SeqCst);
    let e = sqs.depth().await.map(|_| ()).unwrap_err();
    assert_eq!((e.kind(), e.status()), (ErrorKind::Invalid, Some(400)), "{e}");
    assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
    assert_eq!(
        proxy.stats().requests.load(Ordering::SeqCst) - before,
        1,
        "a 400 was retried"
    );
    ctx.cleanup().await;
}
