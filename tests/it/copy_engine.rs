//! The engine against real moto and Azurite (and the copy-from-URL double for the
//! server-side path): sizes, names, metadata, headers, skips, reruns, integrity.

use std::sync::atomic::Ordering;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::StorageClass;
use s3_blob_sync::engine::{Engine, Listed};
use s3_blob_sync::error::ErrorKind;
use s3_blob_sync::state::checkpoint::Outcome;

use crate::harness::objects::{assert_blob, checksum_of, multipart, req, server_side_engine};
use crate::harness::proxy::Proxy;
use crate::harness::{bytes, TestCtx};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn sizes_and_multipart_on_both_paths() {
    let ctx = TestCtx::new("sizes").await;
    let objects: Vec<(&str, Vec<u8>)> = vec![("empty", vec![]), ("one", vec![7]), ("twenty", bytes(20 * MIB + 3, 1))];
    for (k, v) in &objects {
        ctx.put(k, v.clone()).await;
    }
    let parts = vec![bytes(5 * MIB, 2), bytes(5 * MIB, 3), bytes(MIB, 4)];
    multipart(&ctx, "multi", &parts, false).await;
    let multi: Vec<u8> = parts.concat();

    let double = Proxy::blob_double().await;
    let mut server = server_side_engine(&ctx, &double, &[("SYNC_BLOCK_SIZE_MIB", "4")]).await;
    let streamed = ctx
        .engine(&[("SYNC_COPY_PATH", "streamed"), ("SYNC_BLOCK_SIZE_MIB", "4")])
        .await;
    for (label, engine, prefix) in [("streamed", &streamed, "s/"), ("server-side", &server, "x/")] {
        for (k, v) in objects.iter().chain([("multi", multi.clone())].iter()) {
            let mut r = req(&ctx, k);
            r.target_prefix = prefix.into();
            let rep = engine
                .copy_object(&r)
                .await
                .unwrap_or_else(|e| panic!("{label} {k}: {e}"));
            assert_eq!(rep.outcome, Outcome::Copied, "{label} {k}");
            assert_eq!(rep.path.map(|p| p.as_str()), Some(label), "{k}");
            let want_verify = if *k == "multi" { "size" } else { "md5" };
            assert_eq!(rep.verified.map(|v| v.as_str()), Some(want_verify), "{label} {k}");
            assert_blob(&ctx, &format!("{prefix}{k}"), v).await;
        }
    }
    // Server-side: the double read every byte from S3; the engine uploaded none of them.
    let total: usize = objects.iter().map(|(_, v)| v.len()).sum::<usize>() + multi.len();
    assert_eq!(double.stats().source_bytes.load(Ordering::SeqCst), total as u64);
    assert!(
        double.stats().uploaded_bytes.load(Ordering::SeqCst) < 4096,
        "object bytes went through the engine"
    );

    // Above the Put Blob From URL limit: Put Block From URL per range, then Put Block List.
    server = {
        let cs = ctx.connection_string_via(&double.url);
        let mut cfg = ctx.config(&[
            ("AZURE_STORAGE_CONNECTION_STRING", &cs),
            ("SYNC_COPY_PATH", "server-side"),
            ("SYNC_BLOCK_SIZE_MIB", "4"),
        ]);
        cfg.engine.put_blob_from_url_max = 8 * MIB as u64;
        Engine::from_config(&cfg).await.unwrap()
    };
    let mut r = req(&ctx, "twenty");
    r.target_prefix = "staged/".into();
    let before = double.count("comp=block&");
    let rep = server.copy_object(&r).await.unwrap();
    // No whole-object MD5 can be checked across blocks Azure read itself (and S3 has no
    // CRC64 for this object): the blocks tile the size of the version HEADed, pinned by
    // x-ms-source-if-match and HEADed again before the commit. It used to claim `md5`.
    assert_eq!(
        (rep.outcome, rep.verified.map(|v| v.as_str())),
        (Outcome::Copied, Some("size"))
    );
    assert_eq!(double.count("comp=block&") - before, 6, "20 MiB in 4 MiB blocks");
    assert_blob(&ctx, "staged/twenty", &objects[2].1).await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn awkward_keys_map_to_blob_names() {
    let long = format!("long/{}", "k".repeat(1019));
    assert_eq!(long.len(), 1024);
    let good = [
        "with space.txt",
        "plus+sign",
        "percent%20literal",
        "hash#frag",
        "question?mark",
        "unicodé/日本語/ü.txt",
        "a//b",
        long.as_str(),
    ];
    // Each path in its own bucket and container, with no prefix, so the 1024-byte key
    // becomes a 1024-character blob name.
    for path in ["server-side", "streamed"] {
        let ctx = TestCtx::new("keys").await;
        for (i, k) in good.iter().enumerate() {
            ctx.put(k, format!("body {i}")).await;
        }
        ctx.put("trailing.", "x").await;
        ctx.put("seg./x", "x").await;
        let double = Proxy::blob_double().await;
        let engine = match path {
            "server-side" => server_side_engine(&ctx, &double, &[]).await,
            _ => ctx.engine(&[("SYNC_COPY_PATH", "streamed")]).await,
        };
        for (i, k) in good.iter().enumerate() {
            let rep = engine
                .copy_object(&req(&ctx, k))
                .await
                .unwrap_or_else(|e| panic!("{path} {k}: {e}"));
            assert_eq!(
                (rep.outcome, rep.path.map(|p| p.as_str())),
                (Outcome::Copied, Some(path)),
                "{k}"
            );
            assert_blob(&ctx, k, format!("body {i}").as_bytes()).await;
        }
        for bad in ["trailing.", "seg./x"] {
            let rep = engine.copy_object(&req(&ctx, bad)).await.unwrap();
            assert_eq!(rep.outcome, Outcome::Unsupported);
            assert!(rep.reason.unwrap().starts_with("invalid blob name"));
        }
        // Exactly the expected names exist: nothing partial, nothing mangled.
        let mut names: Vec<String> = ctx.blob().list("").await.unwrap().into_iter().map(|b| b.name).collect();
        names.sort();
        let mut want: Vec<String> = good.iter().map(|k| k.to_string()).collect();
        want.sort();
        assert_eq!(names, want, "{path}");
        // Every key has its own checkpoint row, found by the key itself.
        let rows = engine.checkpoint().list_bucket(&ctx.bucket).await.unwrap();
        assert_eq!(rows.len(), good.len() + 2);
        assert!(rows.iter().any(|r| r.key == long && r.outcome == Outcome::Copied));
        assert!(rows
            .iter()
            .any(|r| r.key == "trailing." && r.outcome == Outcome::Unsupported));
        ctx.cleanup().await;
    }
}

#[tokio::test]
async fn metadata_policies_and_content_headers() {
    let ctx = TestCtx::new("meta").await;
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key("doc.html")
        .body(ByteStream::from_static(b"<p>hi</p>"))
        .content_type("text/html; charset=utf-8")
        .cache_control("max-age=3600")
        .content_encoding("identity")
        .content_disposition("attachment; filename=\"doc.html\"")
        .content_language("de-DE")
        .metadata("author", "ann")
        .metadata("content-owner", "bob")
        .metadata("2nd", "z")
        .send()
        .await
        .unwrap();
    for policy in ["exclude", "rename", "fail"] {
        let engine = ctx
            .engine(&[("SYNC_METADATA_POLICY", policy), ("SYNC_COPY_PATH", "streamed")])
            .await;
        let mut r = req(&ctx, "doc.html");
        r.target_prefix = format!("{policy}/");
        let rep = engine.copy_object(&r).await.unwrap();
        let props = ctx.blob().properties(&format!("{policy}/doc.html")).await.unwrap();
        match policy {
            "fail" => {
                assert_eq!(rep.outcome, Outcome::Failed);
                assert!(rep.reason.unwrap().contains("invalid metadata name `2nd`"));
                assert!(props.is_none(), "fail policy must not write a blob");
            }
            _ => {
                assert_eq!(rep.outcome, Outcome::Copied);
                let p = props.unwrap();
                let m = &p.metadata;
                assert_eq!(m.get("author").map(String::as_str), Some("ann"));
                assert_eq!(m.get("s3sync_bucket"), Some(&ctx.bucket));
                if policy == "exclude" {
                    assert!(!m.keys().any(|k| k.contains("owner") || k.contains("2nd")), "{m:?}");
                } else {
                    assert_eq!(m.get("rename_content_owner").map(String::as_str), Some("bob"));
                    assert_eq!(
                        m.get("rename_key_content_owner").map(String::as_str),
                        Some("content-owner")
                    );
                    assert_eq!(m.get("rename_2nd").map(String::as_str), Some("z"));
                    assert_eq!(m.get("rename_key_2nd").map(String::as_str), Some("2nd"));
                }
                let h = &p.headers;
                assert_eq!(h.content_type.as_deref(), Some("text/html; charset=utf-8"));
                assert_eq!(h.cache_control.as_deref(), Some("max-age=3600"));
                assert_eq!(h.content_encoding.as_deref(), Some("identity"));
                assert_eq!(
                    h.content_disposition.as_deref(),
                    Some("attachment; filename=\"doc.html\"")
                );
                assert_eq!(h.content_language.as_deref(), Some("de-DE"));
            }
        }
    }
    // The same headers survive the server-side path.
    let double = Proxy::blob_double().await;
    let engine = server_side_engine(&ctx, &double, &[]).await;
    let mut r = req(&ctx, "doc.html");
    r.target_prefix = "srv/".into();
    engine.copy_object(&r).await.unwrap();
    let p = ctx.blob().properties("srv/doc.html").await.unwrap().unwrap();
    assert_eq!(p.headers.content_type.as_deref(), Some("text/html; charset=utf-8"));
    assert_eq!(p.headers.cache_control.as_deref(), Some("max-age=3600"));
    assert_eq!(p.metadata.get("author").map(String::as_str), Some("ann"));
    ctx.cleanup().await;
}

#[tokio::test]
async fn folder_markers_glacier_reruns_and_changes() {
    let ctx = TestCtx::new("rerun").await;
    ctx.put("dir/", "").await;
    ctx.put("dir/file", "v1").await;
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key("cold")
        .body(ByteStream::from_static(b"frozen"))
        .storage_class(StorageClass::Glacier)
        .send()
        .await
        .unwrap();
    let double = Proxy::blob_double().await;
    let engine = server_side_engine(&ctx, &double, &[]).await;
    let keys = ["dir/", "dir/file", "cold"];
    let mut first = Vec::new();
    for k in keys {
        first.push(engine.copy_object(&req(&ctx, k)).await.unwrap());
    }
    assert_eq!(first[0].outcome, Outcome::Excluded);
    assert_eq!(first[0].reason.as_deref(), Some("folder marker"));
    assert_eq!(first[1].outcome, Outcome::Copied);
    assert_eq!(first[2].outcome, Outcome::Unsupported);
    assert!(first[2].reason.as_deref().unwrap().contains("GLACIER"));
    assert!(ctx.blob().properties("cold").await.unwrap().is_none());
    assert!(ctx.blob().properties("dir/").await.unwrap().is_none());

    // Rerun: nothing is copied again.
    let copies = double.stats().copy_from_url.load(Ordering::SeqCst);
    let rep = engine.copy_object(&req(&ctx, "dir/file")).await.unwrap();
    assert_eq!(rep.outcome, Outcome::NoTransferNeeded);
    assert_eq!(double.stats().copy_from_url.load(Ordering::SeqCst), copies);

    // Without the checkpoint row, the blob's provenance still proves it is current.
    let (pk, rk) = s3_blob_sync::state::checkpoint::row_keys(&ctx.bucket, "dir/file", &ctx.target_id());
    ctx.table().delete(&pk, &rk, "*").await.unwrap();
    let rep = engine.copy_object(&req(&ctx, "dir/file")).await.unwrap();
    assert_eq!(rep.outcome, Outcome::NoTransferNeeded);
    assert_eq!(double.stats().copy_from_url.load(Ordering::SeqCst), copies);

    // The source changes: copied again, new content.
    ctx.put("dir/file", "version two").await;
    let rep = engine.copy_object(&req(&ctx, "dir/file")).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied);
    assert_eq!(double.stats().copy_from_url.load(Ordering::SeqCst), copies + 1);
    assert_blob(&ctx, "dir/file", b"version two").await;
    let row = engine
        .checkpoint()
        .get(&ctx.bucket, "dir/file", &ctx.target_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.record.size, Some(11));
    ctx.cleanup().await;
}

#[tokio::test]
async fn corrupted_server_side_copy_is_failed_and_leaves_no_blob() {
    let ctx = TestCtx::new("corrupt").await;
    let data = bytes(3 * MIB, 9);
    ctx.put("obj", data.clone()).await;
    ctx.put("kept", "old").await;
    let double = Proxy::blob_double().await;
    let engine = server_side_engine(&ctx, &double, &[]).await;
    engine.copy_object(&req(&ctx, "kept")).await.unwrap();
    ctx.put("kept", data.clone()).await;

    for key in ["obj", "kept"] {
        double.faults().corrupt_copy_source.store(1, Ordering::SeqCst);
        let err = engine.copy_object(&req(&ctx, key)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
        let row = engine
            .checkpoint()
            .get(&ctx.bucket, key, &ctx.target_id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.record.outcome, Outcome::Failed);
        assert!(
            row.record.reason.as_deref().unwrap().starts_with("checksum mismatch"),
            "{:?}",
            row.record.reason
        );
    }
    // No blob for the new object; the previous version of the other stays untouched.
    assert!(ctx.blob().properties("obj").await.unwrap().is_none());
    assert_blob(&ctx, "kept", b"old").await;
    // A retry without the fault succeeds.
    for key in ["obj", "kept"] {
        assert_eq!(
            engine.copy_object(&req(&ctx, key)).await.unwrap().outcome,
            Outcome::Copied
        );
        assert_blob(&ctx, key, &data).await;
    }
    ctx.cleanup().await;
}

#[tokio::test]
async fn corrupted_stream_is_caught_before_commit() {
    let ctx = TestCtx::new("corrupts").await;
    let data = bytes(9 * MIB, 5);
    ctx.put("obj", data.clone()).await;
    let s3_proxy = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let engine = ctx
        .engine(&[
            ("AWS_ENDPOINT_URL", &s3_proxy.url),
            ("SYNC_COPY_PATH", "streamed"),
            ("SYNC_BLOCK_SIZE_MIB", "2"),
        ])
        .await;
    s3_proxy.faults().corrupt_get.store(1, Ordering::SeqCst);
    let err = engine.copy_object(&req(&ctx, "obj")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity);
    assert!(err.message().contains("checksum mismatch"), "{err}");
    assert!(
        ctx.blob().properties("obj").await.unwrap().is_none(),
        "uncommitted blocks must stay invisible"
    );
    let rep = engine.copy_object(&req(&ctx, "obj")).await.unwrap();
    assert_eq!(
        (rep.outcome, rep.verified.map(|v| v.as_str())),
        (Outcome::Copied, Some("md5"))
    );
    assert_blob(&ctx, "obj", &data).await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn auto_falls_back_to_streaming_when_azure_cannot_read_the_source() {
    let ctx = TestCtx::new("fallback").await;
    ctx.put("obj", "private bucket").await;
    let double = Proxy::blob_double().await;
    double.faults().copy_source_unreachable.store(true, Ordering::SeqCst);
    let cs = ctx.connection_string_via(&double.url);
    let auto = ctx
        .engine(&[("AZURE_STORAGE_CONNECTION_STRING", &cs), ("SYNC_COPY_PATH", "auto")])
        .await;
    let rep = auto.copy_object(&req(&ctx, "obj")).await.unwrap();
    assert_eq!(
        (rep.outcome, rep.path.map(|p| p.as_str())),
        (Outcome::Copied, Some("streamed"))
    );
    assert_blob(&ctx, "obj", b"private bucket").await;
    // Forced server-side has no fallback: a clear failure instead.
    ctx.put("obj2", "x").await;
    let forced = server_side_engine(&ctx, &double, &[]).await;
    let err = forced.copy_object(&req(&ctx, "obj2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CopySourceUnreachable);
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_listing_that_matches_the_checkpoint_skips_without_a_head() {
    let ctx = TestCtx::new("listed").await;
    ctx.put("obj", "content").await;
    let s3_proxy = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let engine = ctx.engine(&[("AWS_ENDPOINT_URL", &s3_proxy.url)]).await;
    let first = engine.copy_object(&req(&ctx, "obj")).await.unwrap();
    assert_eq!(first.outcome, Outcome::Copied);
    let head = ctx.s3.head(&ctx.bucket, "obj").await.unwrap().unwrap();
    let heads = s3_proxy.count("HEAD /");

    let mut listed = req(&ctx, "obj");
    listed.listed = Some(Listed {
        etag: head.etag.clone(),
        size: head.size,
        last_modified: head.last_modified.clone(),
    });
    let rep = engine.copy_object(&listed).await.unwrap();
    assert_eq!(rep.outcome, Outcome::NoTransferNeeded);
    assert_eq!(s3_proxy.count("HEAD /"), heads, "no HEAD when the listing matches");

    // The object changed after an older listing was taken: the listing no longer matches the
    // checkpoint after the next copy, and a stale listing never hides a change.
    ctx.put("obj", "content v2").await;
    listed.listed = Some(Listed {
        etag: "0123456789abcdef0123456789abcdef".into(),
        size: 10,
        last_modified: None,
    });
    let rep = engine.copy_object(&listed).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied);
    assert!(s3_proxy.count("HEAD /") > heads);
    assert_blob(&ctx, "obj", b"content v2").await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_slow_copy_of_an_old_version_never_overwrites_a_newer_blob() {
    let ctx = TestCtx::new("race").await;
    ctx.put("obj", "version one").await;
    // The slow writer's blob calls each wait a second; the fast one goes straight to Azurite.
    let slow_blob = Proxy::start("http://127.0.0.1:10000").await;
    slow_blob.faults().delay_ms.store(1000, Ordering::SeqCst);
    let cs = ctx.connection_string_via(&slow_blob.url);
    let slow = ctx.engine(&[("AZURE_STORAGE_CONNECTION_STRING", &cs)]).await;
    let fast = ctx.engine(&[]).await;
    let r = req(&ctx, "obj");
    let slow_task = {
        let r = r.clone();
        tokio::spawn(async move { slow.copy_object(&r).await })
    };
    // Once the slow writer is staging version one, version two lands and is copied.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while slow_blob.count("comp=block&") == 0 {
        assert!(std::time::Instant::now() < deadline, "slow copy never staged");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    ctx.put("obj", "version two").await;
    assert_eq!(fast.copy_object(&r).await.unwrap().outcome, Outcome::Copied);
    // The slow commit is conditional and loses; the restart sees version two is in place.
    let rep = slow_task.await.unwrap().unwrap();
    assert_eq!(rep.outcome, Outcome::NoTransferNeeded, "{rep:?}");
    assert!(
        slow_blob.count("comp=blocklist") >= 1,
        "the slow writer did try to commit"
    );
    assert_blob(&ctx, "obj", b"version two").await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn multipart_object_is_verified_by_crc64nvme_and_a_corrupted_block_is_caught() {
    use s3_blob_sync::checksum;
    let ctx = TestCtx::new("crc").await;
    let parts = vec![bytes(5 * MIB, 21), bytes(MIB + 123, 22)];
    let whole = parts.concat();
    let want = checksum::crc64(&whole);
    for key in ["mp", "mp2"] {
        multipart(&ctx, key, &parts, true).await;
    }
    let head = ctx.s3.head(&ctx.bucket, "mp").await.unwrap().unwrap();
    assert!(
        head.etag.contains('-') && head.md5().is_none(),
        "multipart: no MD5 to compare"
    );
    assert_eq!(
        head.crc64nvme,
        Some(want),
        "S3's full-object CRC64NVME, read with ChecksumMode"
    );

    // Streamed: per-block CRCs sent with Put Block, folded, compared with S3's.
    let engine = ctx.engine(&[("SYNC_BLOCK_SIZE_MIB", "1")]).await;
    let rep = engine.copy_object(&req(&ctx, "mp")).await.unwrap();
    assert_eq!(
        (rep.outcome, rep.verified.map(|v| v.as_str())),
        (Outcome::Copied, Some("crc64nvme")),
        "{rep:?}"
    );
    let row = engine
        .checkpoint()
        .get(&ctx.bucket, "mp", &ctx.target_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.record.verified.map(|v| v.as_str()), Some("crc64nvme"));
    let props = ctx.blob().properties("mp").await.unwrap().unwrap();
    assert_eq!(props.metadata["s3sync_crc64nvme"], checksum::to_s3(want));
    assert_blob(&ctx, "mp", &whole).await;

    // Server-side through the double: Azure's CRC64 of each block it read, folded. A block
    // corrupted on its way to Azure is caught before the commit.
    let double = Proxy::blob_double().await;
    let engine = server_side_engine(&ctx, &double, &[("SYNC_BLOCK_SIZE_MIB", "1")]).await;
    double.faults().corrupt_copy_source.store(1, Ordering::SeqCst);
    let err = engine.copy_object(&req(&ctx, "mp2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.message().contains("source CRC64NVME"), "{err}");
    assert!(
        ctx.blob().properties("mp2").await.unwrap().is_none(),
        "a corrupt copy was committed"
    );
    let rep = engine.copy_object(&req(&ctx, "mp2")).await.unwrap();
    assert_eq!(
        (rep.path.map(|p| p.as_str()), rep.verified.map(|v| v.as_str())),
        (Some("server-side"), Some("crc64nvme")),
        "{rep:?}"
    );
    assert_blob(&ctx, "mp2", &whole).await;
    ctx.cleanup().await;
}

/// `SYNC_STREAM_BUFFER_MIB` bounds the object bytes all copies of a process hold together:
/// two copies of 1 MiB blocks at 8 blocks in flight each, under a 2 MiB budget, never have
/// more than two Put Blocks in flight at once, and both still copy byte-exact.
#[tokio::test]
async fn the_stream_buffer_budget_bounds_blocks_in_flight_across_copies() {
    let ctx = TestCtx::new("budget").await;
    let (a, b) = (bytes(6 << 20, 31), bytes(6 << 20, 32));
    multipart(&ctx, "a", &[a[..5 << 20].to_vec(), a[5 << 20..].to_vec()], true).await;
    multipart(&ctx, "b", &[b[..5 << 20].to_vec(), b[5 << 20..].to_vec()], true).await;
    let blob_proxy = Proxy::start("http://127.0.0.1:10000").await;
    blob_proxy.faults().delay_ms.store(50, Ordering::SeqCst);
    let cs = ctx.connection_string_via(&blob_proxy.url);
    let engine = ctx
        .engine(&[
            ("AZURE_STORAGE_CONNECTION_STRING", &cs),
            ("SYNC_COPY_PATH", "streamed"),
            ("SYNC_BLOCK_SIZE_MIB", "1"),
            ("SYNC_BLOCK_CONCURRENCY", "8"),
            ("SYNC_STREAM_BUFFER_MIB", "2"),
        ])
        .await;
    let (ra, rb) = (req(&ctx, "a"), req(&ctx, "b"));
    let (x, y) = tokio::join!(engine.copy_object(&ra), engine.copy_object(&rb));
    assert_eq!(x.unwrap().outcome, Outcome::Copied);
    assert_eq!(y.unwrap().outcome, Outcome::Copied);
    assert_eq!(blob_proxy.count("comp=block&"), 12, "6 blocks each");
    let most = blob_proxy.stats().max_puts_in_flight.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&most),
        "{most} Put Blocks in flight under a 2 MiB budget"
    );
    assert_blob(&ctx, "a", &a).await;
    assert_blob(&ctx, "b", &b).await;
    ctx.cleanup().await;
}

/// A hinted small object is written with one Put Blob that carries its CRC64, and Azure
/// (Azurite checks it as Azure does) refuses bytes damaged on the way: nothing is written,
/// the failure says why, and the redelivery copies it.
#[tokio::test]
async fn small_objects_are_one_put_blob_whose_crc64_azure_checks() {
    let ctx = TestCtx::new("putblob").await;
    let data = crate::harness::bytes(4096, 9);
    ctx.put("s.bin", data.clone()).await;
    let blob_proxy = Proxy::start("http://127.0.0.1:10000").await;
    let cs = ctx.connection_string_via(&blob_proxy.url);
    let engine = ctx.engine(&[("AZURE_STORAGE_CONNECTION_STRING", &cs)]).await;
    let h = ctx.s3.head(&ctx.bucket, "s.bin").await.unwrap().unwrap();
    let mut r = req(&ctx, "s.bin");
    r.listed = Some(Listed {
        etag: h.etag.clone(),
        size: h.size,
        last_modified: h.last_modified.clone(),
    });
    r.fresh = true;

    blob_proxy.faults().corrupt_put.store(1, Ordering::SeqCst);
    let err = engine.copy_object(&r).await.unwrap_err();
    assert_eq!(
        blob_proxy.faults().corrupt_put.load(Ordering::SeqCst),
        0,
        "the fault was hit"
    );
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("put blob"), "{err}");
    assert!(
        ctx.blob().properties("s.bin").await.unwrap().is_none(),
        "nothing was written"
    );

    // The same message again: one Put Blob, no Put Block or Put Block List.
    let before = blob_proxy.stats().log.lock().unwrap().len();
    let rep = engine.copy_object(&r).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied, "{rep:?}");
    let puts: Vec<String> = blob_proxy.stats().log.lock().unwrap()[before..]
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.contains("/s.bin"))
        .cloned()
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert!(!puts[0].contains("comp=block"), "{puts:?}");
    assert_blob(&ctx, "s.bin", &data).await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn small_objects_take_one_get_and_wrong_hints_only_cost_a_restart() {
    use s3_blob_sync::azure::blob::{CommitProps, WriteCondition};
    let ctx = TestCtx::new("oneget").await;
    for (k, v) in [("a.txt", "alpha"), ("b.txt", "bravo"), ("c.txt", "charlie")] {
        ctx.put(k, v.as_bytes().to_vec()).await;
    }
    let s3_proxy = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let engine = ctx.engine(&[("AWS_ENDPOINT_URL", &s3_proxy.url)]).await;
    let hinted = |key: &str, etag: &str, size: u64| {
        let mut r = req(&ctx, key);
        r.listed = Some(Listed {
            etag: etag.to_string(),
            size,
            last_modified: None,
        });
        r.fresh = true;
        r
    };

    // As the lister sends it (ETag, size, no checkpoint row): one GET, no HEAD.
    let a = ctx.s3.head(&ctx.bucket, "a.txt").await.unwrap().unwrap();
    let log_before = s3_proxy.stats().log.lock().unwrap().len();
    let rep = engine.copy_object(&hinted("a.txt", &a.etag, a.size)).await.unwrap();
    assert_eq!(
        (rep.outcome, rep.verified.map(|v| v.as_str())),
        (Outcome::Copied, Some("md5")),
        "{rep:?}"
    );
    let log: Vec<String> = s3_proxy.stats().log.lock().unwrap()[log_before..].to_vec();
    assert_eq!(log.len(), 1, "one request to S3: {log:?}");
    assert!(log[0].starts_with(&format!("GET /{}/a.txt", ctx.bucket)), "{log:?}");
    assert_blob(&ctx, "a.txt", b"alpha").await;

    // A blob the hint did not know of: the If-None-Match commit fails and the copy starts
    // over, reading the blob's properties this time, and replaces it.
    let blob = ctx.blob();
    blob.stage_block(
        "b.txt",
        b"x",
        bytes::Bytes::from_static(b"stale"),
        checksum_of(b"stale"),
    )
    .await
    .unwrap();
    blob.commit_blocks(
        "b.txt",
        &[b"x".to_vec()],
        &CommitProps::default(),
        &WriteCondition::Always,
    )
    .await
    .unwrap();
    let b = ctx.s3.head(&ctx.bucket, "b.txt").await.unwrap().unwrap();
    let rep = engine.copy_object(&hinted("b.txt", &b.etag, b.size)).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied, "{rep:?}");
    assert_blob(&ctx, "b.txt", b"bravo").await;

    // Changed since it was listed: the GET's If-Match fails and HEAD decides; the new
    // version is copied, never the old one.
    let c = ctx.s3.head(&ctx.bucket, "c.txt").await.unwrap().unwrap();
    ctx.put("c.txt", b"charlie, second version".to_vec()).await;
    let rep = engine.copy_object(&hinted("c.txt", &c.etag, c.size)).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied, "{rep:?}");
    assert_blob(&ctx, "c.txt", b"charlie, second version").await;
    ctx.cleanup().await;
}

/// Checkpoint rows of the previous form (one per source key, RowKey `k` + hex(key)) are not
/// read as rows, but a run never takes their keys for never copied (no blind create, no copy),
/// and `migrate-checkpoints` moves them to their blobs' rows: counted first with `--dry-run`,
/// then moved (a row the new form already has is kept), once.
#[tokio::test]
async fn rows_of_the_previous_form_are_respected_then_migrated() {
    use crate::harness::handler::run_binary_async;
    use s3_blob_sync::azure::table::Entity;
    let ctx = TestCtx::new("migrate").await;
    for k in ["x1", "y2", "y3"] {
        ctx.put(k, format!("body of {k}")).await;
    }
    let src = |p: &str| format!("s3://{}/{p}", ctx.bucket);
    let dst = |p: &str| format!("http://127.0.0.1:10000/devstoreaccount1/{}/{p}", ctx.container);
    let copy = |from: String, to: String| {
        let env = ctx.env.clone();
        async move {
            let (code, out) = run_binary_async(&["copy", &from, &to, "--no-progress", "--json"], &env).await;
            assert_eq!(code, 0, "{out}");
            let line = out.lines().find(|l| l.starts_with('{')).unwrap().to_string();
            serde_json::from_str::<serde_json::Value>(&line).unwrap()
        }
    };
    let s = copy(src(""), dst("")).await;
    assert_eq!(s["counters"]["transferred"], 3, "{s}");

    // Rewrite every row as the previous version kept it, plus a split plan of that form.
    let table = ctx.table();
    let rows = table.query_all(None).await.unwrap();
    // That version kept one partition per bucket and target.
    let pk = s3_blob_sync::state::checkpoint::target_partition(&ctx.bucket, &ctx.target_id());
    for e in rows.iter().filter(|e| e.row_key.starts_with('n')) {
        let key = e.get_str("Key").unwrap();
        let mut legacy = Entity::new(&pk, format!("k{}", hex::encode(key.as_bytes())));
        legacy.props = e.props.clone();
        table.insert(&legacy).await.unwrap();
        table.delete(&e.partition_key, &e.row_key, "*").await.unwrap();
    }
    let mut plan = Entity::new(format!("{pk}~staging"), "0123abcd-89ab-p");
    plan.set_str("Blob", "y2");
    table.insert(&plan).await.unwrap();

    // Not migrated: a run over x… finds no row of its own, yet copies nothing.
    let s = copy(src("x"), dst("x")).await;
    assert_eq!(
        (
            s["counters"]["transferred"].as_u64(),
            s["counters"]["noTransferNeeded"].as_u64()
        ),
        (Some(0), Some(1)),
        "{s}"
    );

    let migrate = |args: &'static [&'static str]| crate::harness::handler::migrate_checkpoints(&ctx.env, args);
    let dry = migrate(&["--dry-run"]).await;
    assert_eq!(
        (
            dry["found"].as_u64(),
            dry["stagingDropped"].as_u64(),
            dry["moved"].as_u64()
        ),
        (Some(3), Some(1), Some(0)),
        "{dry}"
    );
    assert_eq!(
        table
            .query_all(None)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.row_key.starts_with('k'))
            .count(),
        3,
        "a dry run changed rows"
    );
    let done = migrate(&[]).await;
    assert_eq!(
        (
            done["found"].as_u64(),
            done["moved"].as_u64(),
            done["superseded"].as_u64(),
            done["stagingDropped"].as_u64()
        ),
        (Some(3), Some(2), Some(1), Some(1)),
        "{done}"
    );
    let left = table.query_all(None).await.unwrap();
    assert!(
        left.iter()
            .all(|e| !e.row_key.starts_with('k') && !e.partition_key.ends_with("~staging")),
        "{left:?}"
    );
    let store = s3_blob_sync::state::checkpoint::CheckpointStore::new(table.clone());
    for k in ["x1", "y2", "y3"] {
        let row = store
            .get(&ctx.bucket, k, &ctx.target_id())
            .await
            .unwrap()
            .unwrap()
            .record;
        // x1's row is the unmigrated run's verdict, kept over its older row.
        let want = if k == "x1" {
            Outcome::NoTransferNeeded
        } else {
            Outcome::Copied
        };
        assert_eq!((row.key.as_str(), row.outcome), (k, want), "{row:?}");
    }
    assert_eq!(migrate(&[]).await["found"], 0, "a second migration finds nothing");
    let s = copy(src(""), dst("")).await;
    assert_eq!(s["counters"]["transferred"], 0, "{s}");
    ctx.cleanup().await;
}
