//! Paths that once left the target silently wrong (issue "no silent divergence"), each
//! reproduced against real moto and Azurite: sequencers of different lengths, a slow writer
//! racing a newer version, a mirror delete of a blob another key wrote, a metadata-only
//! change that keeps the ETag, and a source overwritten while Azure reads it server-side.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aws_sdk_s3::types::MetadataDirective;
use s3_blob_sync::app::verify::{verify, DiffKind};
use s3_blob_sync::engine::{EventInfo, Listed};
use s3_blob_sync::model::Scope;
use s3_blob_sync::model::SyncMode;
use s3_blob_sync::state::checkpoint::{CheckpointStore, Outcome};

use crate::harness::objects::{assert_blob, checksum_of, multipart, req, server_side_engine};
use crate::harness::proxy::Proxy;
use crate::harness::{bytes, TestCtx};
use s3_blob_sync::azure::blob::WriteCondition;

const MIB: usize = 1024 * 1024;

fn event(name: &str, sequencer: &str) -> Option<EventInfo> {
    Some(EventInfo {
        name: name.into(),
        sequencer: Some(sequencer.into()),
        time: None,
    })
}

/// An S3 copy-in-place that replaces the metadata (`owner`) and, if given, the content type:
/// same bytes, same single-part ETag, a new Last-Modified. Last-Modified has one-second
/// precision, so it waits for a later second first (a change within the same second cannot
/// be told apart; decisions 51).
async fn replace_metadata(ctx: &TestCtx, key: &str, content_type: Option<&str>, owner: &str) {
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    copy_in_place(ctx, key, content_type, ("owner", owner)).await;
}

/// An S3 copy-in-place of `key` that replaces its metadata with `entry` (and, if given, its
/// content type), at once.
async fn copy_in_place(ctx: &TestCtx, key: &str, content_type: Option<&str>, (name, value): (&str, &str)) {
    ctx.s3
        .client()
        .copy_object()
        .bucket(&ctx.bucket)
        .key(key)
        .copy_source(format!("{}/{key}", ctx.bucket))
        .metadata_directive(MetadataDirective::Replace)
        .set_content_type(content_type.map(str::to_string))
        .metadata(name, value)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_later_shorter_sequencer_is_applied_and_a_skip_records_it() {
    let ctx = TestCtx::new("seqlen").await;
    let engine = ctx.engine(&[]).await;
    let store = CheckpointStore::new(ctx.table());
    let row = || async {
        store
            .get(&ctx.bucket, "k", &ctx.target_id())
            .await
            .unwrap()
            .unwrap()
            .record
    };

    ctx.put("k", "v1").await;
    let mut r = req(&ctx, "k");
    r.event = event("ObjectCreated:Put", "0055AED6DCD90281E4A0");
    assert_eq!(engine.copy_object(&r).await.unwrap().outcome, Outcome::Copied);

    // S3's own example: the shorter sequencer is the later one (right-padded, E5 > E4A0).
    ctx.put("k", "v2, later").await;
    r.event = event("ObjectCreated:Put", "0055AED6DCD90281E5");
    let rep = engine.copy_object(&r).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied, "{rep:?}");
    assert_blob(&ctx, "k", b"v2, later").await;
    assert_eq!(row().await.sequencer.as_deref(), Some("0055AED6DCD90281E5"));

    // A later event for the version the checkpoint already has: skipped, but its sequencer
    // is recorded...
    r.event = event("ObjectCreated:Copy", "0055AED6DCD90281E6");
    let rep = engine.copy_object(&r).await.unwrap();
    assert_eq!(rep.reason.as_deref(), Some("checkpoint has this version"));
    assert_eq!(row().await.sequencer.as_deref(), Some("0055AED6DCD90281E6"));
    // ...so an event between the two is known stale without looking at the source.
    r.event = event("ObjectRemoved:Delete", "0055AED6DCD90281E5A0");
    let rep = engine.copy_object(&r).await.unwrap();
    assert!(
        rep.reason.as_deref().unwrap_or("").starts_with("stale event"),
        "{rep:?}"
    );
    assert_blob(&ctx, "k", b"v2, later").await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_slow_writer_never_commits_an_older_version_over_a_newer_one() {
    let ctx = TestCtx::new("slowwr").await;
    // Worker A talks to Azure through a proxy that holds its first blob Get Properties.
    let proxy = Proxy::start("http://127.0.0.1:10000").await;
    let cs = ctx.connection_string_via(&proxy.url);
    let slow = Arc::new(ctx.engine(&[("AZURE_STORAGE_CONNECTION_STRING", &cs)]).await);
    let fast = ctx.engine(&[]).await;

    ctx.put("k", "version one").await;
    // A has the listing's word for v1, so it reads v1's bytes in one GET up front (a
    // streamed read pinned per block would notice the change itself; these bytes cannot).
    let v1 = slow.s3().head(&ctx.bucket, "k").await.unwrap().unwrap();
    let mut r = req(&ctx, "k");
    r.listed = Some(Listed {
        etag: v1.etag.clone(),
        size: v1.size,
        last_modified: v1.last_modified.clone(),
    });
    proxy.faults().hold_heads.store(1, Ordering::SeqCst);
    let a = {
        let slow = slow.clone();
        tokio::spawn(async move { slow.copy_object(&r).await })
    };
    proxy.until_held(1).await;
    // While A waits on the blob's properties, v2 lands at the source and B copies it.
    ctx.put("k", "version two, newer").await;
    assert_eq!(
        fast.copy_object(&req(&ctx, "k")).await.unwrap().outcome,
        Outcome::Copied
    );
    proxy.release(1);
    let rep = a.await.unwrap().unwrap();

    // A never commits v1 over v2, and the checkpoint claims what the blob holds.
    assert_blob(&ctx, "k", b"version two, newer").await;
    assert_eq!(proxy.commits(), 0, "the slow writer committed: {rep:?}");
    let row = CheckpointStore::new(ctx.table())
        .get(&ctx.bucket, "k", &ctx.target_id())
        .await
        .unwrap()
        .unwrap()
        .record;
    let blob = ctx.blob().properties("k").await.unwrap().unwrap();
    assert_eq!(row.etag.as_ref(), blob.metadata.get("s3sync_etag"), "{row:?}");
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_mirror_delete_only_removes_the_blob_written_for_that_key() {
    let ctx = TestCtx::new("mirkey").await;
    let engine = ctx.engine(&[]).await;
    // A run with source prefix `2024/` writes `2024/x.csv` as blob `x.csv`.
    ctx.put("2024/x.csv", "from 2024").await;
    let mut r = req(&ctx, "2024/x.csv");
    r.source_prefix = "2024/".into();
    assert_eq!(engine.copy_object(&r).await.unwrap().outcome, Outcome::Copied);

    // A delete event for root `x.csv` (never existed) maps to the same blob name.
    let mut d = req(&ctx, "x.csv");
    d.mode = SyncMode::Mirror;
    d.event = event("ObjectRemoved:Delete", "00AA");
    let rep = engine.copy_object(&d).await.unwrap();
    assert_eq!(rep.outcome, Outcome::SourceMissing, "{rep:?}");
    assert_blob(&ctx, "x.csv", b"from 2024").await;

    // The key the blob was written for does go, when its source goes.
    ctx.s3
        .client()
        .delete_object()
        .bucket(&ctx.bucket)
        .key("2024/x.csv")
        .send()
        .await
        .unwrap();
    r.mode = SyncMode::Mirror;
    assert_eq!(engine.copy_object(&r).await.unwrap().outcome, Outcome::Deleted);
    assert!(ctx.blob().properties("x.csv").await.unwrap().is_none());
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_metadata_only_change_is_seen_by_copy_and_verify() {
    let ctx = TestCtx::new("metaonly").await;
    let engine = ctx.engine(&[]).await;
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key("doc")
        .body(b"same bytes".to_vec().into())
        .content_type("text/plain")
        .metadata("owner", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(
        engine.copy_object(&req(&ctx, "doc")).await.unwrap().outcome,
        Outcome::Copied
    );
    let before = engine.s3().head(&ctx.bucket, "doc").await.unwrap().unwrap();

    replace_metadata(&ctx, "doc", Some("text/markdown"), "bob").await;
    let after = engine.s3().head(&ctx.bucket, "doc").await.unwrap().unwrap();
    assert_eq!(
        after.etag, before.etag,
        "moto keeps a single-part ETag on copy-in-place"
    );
    assert_ne!(after.last_modified, before.last_modified);

    let scope = Scope {
        bucket: ctx.bucket.clone(),
        source_prefix: String::new(),
        container: ctx.container.clone(),
        target_prefix: String::new(),
    };
    let (report, to_copy) = verify(&engine, &scope, false).await.unwrap();
    assert_eq!(to_copy, vec!["doc".to_string()], "{report:?}");
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.kind == DiffKind::MetadataMismatch && d.detail.contains("metadata changed")),
        "{report:?}"
    );

    // A bulk run's listing hint no longer matches the checkpoint, and the copy rewrites the
    // headers and metadata.
    let mut r = req(&ctx, "doc");
    r.listed = Some(Listed {
        etag: after.etag.clone(),
        size: after.size,
        last_modified: after.last_modified.clone(),
    });
    let rep = engine.copy_object(&r).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied, "{rep:?}");
    let p = ctx.blob().properties("doc").await.unwrap().unwrap();
    assert_eq!(p.metadata.get("owner").map(String::as_str), Some("bob"));
    assert_eq!(p.headers.content_type.as_deref(), Some("text/markdown"));
    let (report, _) = verify(&engine, &scope, false).await.unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_server_side_copy_is_pinned_to_the_version_it_headed() {
    let ctx = TestCtx::new("pinsrc").await;
    // Multipart without a full-object CRC: no checksum would catch other bytes of the same
    // size, so only the pin (and the HEAD before the commit) can.
    let v1 = [bytes(5 * MIB, 31), bytes(MIB, 32)];
    let v2 = [bytes(5 * MIB, 33), bytes(MIB, 34)];
    multipart(&ctx, "mp", &v1, false).await;
    let double = Proxy::blob_double().await;
    let engine = Arc::new(server_side_engine(&ctx, &double, &[]).await);

    // "Azure" is about to read the source when v2 replaces it.
    double.faults().hold_copies.store(1, Ordering::SeqCst);
    let a = {
        let (engine, r) = (engine.clone(), req(&ctx, "mp"));
        tokio::spawn(async move { engine.copy_object(&r).await })
    };
    double.until_held(1).await;
    multipart(&ctx, "mp", &v2, false).await;
    double.release(1);
    let rep = a.await.unwrap().unwrap();

    assert_eq!(rep.outcome, Outcome::Copied, "{rep:?}");
    assert_blob(&ctx, "mp", &v2.concat()).await;
    let now = engine.s3().head(&ctx.bucket, "mp").await.unwrap().unwrap();
    let p = ctx.blob().properties("mp").await.unwrap().unwrap();
    assert_eq!(
        p.metadata.get("s3sync_etag"),
        Some(&now.etag),
        "the blob's bytes are v2 but its provenance names another version"
    );
    assert!(
        double.count("comp=blocklist") >= 1,
        "committed as blocks, after the checks"
    );
    ctx.cleanup().await;
}

#[tokio::test]
async fn an_event_hint_never_skips_a_metadata_only_change() {
    let ctx = TestCtx::new("evmeta").await;
    let engine = ctx.engine(&[]).await;
    ctx.put("k", "same bytes").await;
    assert_eq!(
        engine.copy_object(&req(&ctx, "k")).await.unwrap().outcome,
        Outcome::Copied
    );
    let before = engine.s3().head(&ctx.bucket, "k").await.unwrap().unwrap();
    replace_metadata(&ctx, "k", None, "carol").await;
    // The relayed event carries the ETag and size (unchanged) but no Last-Modified.
    let mut r = req(&ctx, "k");
    r.event = event("ObjectCreated:Copy", "00A0");
    r.listed = Some(Listed {
        etag: before.etag.clone(),
        size: before.size,
        last_modified: None,
    });
    let rep = engine.copy_object(&r).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied, "{rep:?}");
    let p = ctx.blob().properties("k").await.unwrap().unwrap();
    assert_eq!(p.metadata.get("owner").map(String::as_str), Some("carol"));
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_late_checkpoint_write_never_claims_a_blob_that_was_deleted() {
    let ctx = TestCtx::new("latecp").await;
    // W1's table writes go through a proxy that holds its first one: it commits the blob,
    // then stalls before its checkpoint write lands.
    let tables = Proxy::start("http://127.0.0.1:10002").await;
    let cs = crate::harness::TestCtx::connection_string(None, None, Some(&tables.url));
    let w1 = Arc::new(ctx.engine(&[("AZURE_STORAGE_CONNECTION_STRING", &cs)]).await);
    let w2 = ctx.engine(&[]).await;
    ctx.put("k", "v1").await;
    tables.faults().hold_writes.store(1, Ordering::SeqCst);
    let a = {
        let (w1, r) = (w1.clone(), req(&ctx, "k"));
        tokio::spawn(async move { w1.copy_object(&r).await })
    };
    tables.until_held(1).await;
    assert!(
        ctx.blob().properties("k").await.unwrap().is_some(),
        "W1 committed first"
    );
    // Meanwhile the source is deleted and W2 applies it in mirror mode.
    ctx.s3
        .client()
        .delete_object()
        .bucket(&ctx.bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    let mut d = req(&ctx, "k");
    d.mode = SyncMode::Mirror;
    assert_eq!(w2.copy_object(&d).await.unwrap().outcome, Outcome::Deleted);
    tables.release(1);
    let _ = a.await.unwrap();

    let row = CheckpointStore::new(ctx.table())
        .get(&ctx.bucket, "k", &ctx.target_id())
        .await
        .unwrap()
        .unwrap()
        .record;
    assert!(ctx.blob().properties("k").await.unwrap().is_none());
    assert!(
        matches!(row.outcome, Outcome::Deleted | Outcome::SourceMissing),
        "the row claims a blob that is gone: {row:?}"
    );
    ctx.cleanup().await;
}

/// The soak's seed 14: a key's blob was deleted (mirror), then a writer of a bigger version
/// died between Put Block and Put Block List. Azurite then answers every create-only Put
/// Blob, and Put Blob From URL, with 409 BlobAlreadyExists while the blob reads as absent;
/// the copy restarted on that and was poisoned after five deliveries. Both small paths must
/// now write it, and only under the create-only condition.
#[tokio::test]
async fn a_name_held_by_a_dead_writers_uncommitted_blocks_is_still_written() {
    let ctx = TestCtx::new("deadblk").await;
    let double = Proxy::blob_double().await;
    let streamed = ctx.engine(&[]).await;
    let server_side = server_side_engine(&ctx, &double, &[]).await;
    // A listed small object is read whole and written with one Put Blob; one without a
    // hint takes blocks; server-side starts with Put Blob From URL.
    let cases = [
        ("listed", &streamed, true),
        ("streamed", &streamed, false),
        ("server-side", &server_side, false),
    ];
    for (path, engine, listed) in cases {
        let key = format!("{path}.bin");
        ctx.put(&key, bytes(1000, 7)).await;
        assert_eq!(
            engine.copy_object(&req(&ctx, &key)).await.unwrap().outcome,
            Outcome::Copied
        );
        ctx.s3
            .client()
            .delete_object()
            .bucket(&ctx.bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let mut d = req(&ctx, &key);
        d.mode = SyncMode::Mirror;
        assert_eq!(
            engine.copy_object(&d).await.unwrap().outcome,
            Outcome::Deleted,
            "{path}"
        );
        // The dead writer: one block of the engine's id length, never committed.
        let dead = bytes(MIB, 8);
        ctx.blob()
            .stage_block(&key, b"deadbeef-000000", dead.clone().into(), checksum_of(&dead))
            .await
            .unwrap();
        assert!(
            ctx.blob().properties(&key).await.unwrap().is_none(),
            "{path}: reads as absent"
        );

        let v3 = bytes(2000, 9);
        ctx.put(&key, v3.clone()).await;
        let mut r = req(&ctx, &key);
        if listed {
            let h = ctx.s3.head(&ctx.bucket, &key).await.unwrap().unwrap();
            r.listed = Some(Listed {
                etag: h.etag,
                size: h.size,
                last_modified: None,
            });
        }
        let rep = engine.copy_object(&r).await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(rep.outcome, Outcome::Copied, "{path}: {rep:?}");
        assert_blob(&ctx, &key, &v3).await;
        let p = ctx.blob().properties(&key).await.unwrap().unwrap();
        let head = ctx.s3.head(&ctx.bucket, &key).await.unwrap().unwrap();
        assert_eq!(p.metadata.get("s3sync_etag"), Some(&head.etag), "{path}: provenance");
    }
    // The fallback keeps the create-only guard: over uncommitted blocks *and* a committed
    // blob that landed after the read, the commit loses.
    let b = ctx.blob();
    let (d, crc) = (bytes(10, 1), checksum_of(&bytes(10, 1)));
    b.stage_block("guard", b"deadbeef-000000", d.clone().into(), crc)
        .await
        .unwrap();
    b.stage_block("guard", b"aaaaaaaa-000000", d.clone().into(), crc)
        .await
        .unwrap();
    b.commit_blocks(
        "guard",
        &[b"aaaaaaaa-000000".to_vec()],
        &Default::default(),
        &WriteCondition::Always,
    )
    .await
    .unwrap();
    b.stage_block("guard", b"bbbbbbbb-000000", d.clone().into(), crc)
        .await
        .unwrap();
    let lost = b
        .commit_blocks(
            "guard",
            &[b"bbbbbbbb-000000".to_vec()],
            &Default::default(),
            &WriteCondition::IfNoneExists,
        )
        .await;
    assert!(
        lost.is_err(),
        "a create-only block list over a committed blob must lose"
    );
    ctx.cleanup().await;
}

/// A twin delivery that lost the race finds the blob already holding the version and would
/// record "no transfer needed": the row keeps the winner's copy, with how it was moved and
/// verified, while a genuinely newer verdict still replaces it.
#[tokio::test]
async fn a_losing_twins_no_transfer_verdict_keeps_the_winners_copy_row() {
    use s3_blob_sync::model::{MovedBy, Verification};
    use s3_blob_sync::state::checkpoint::ObjectRecord;
    let ctx = TestCtx::new("twinrow").await;
    ctx.put("k", bytes(5000, 3)).await;
    let engine = ctx.engine(&[("SYNC_COPY_PATH", "streamed")]).await;
    assert_eq!(
        engine.copy_object(&req(&ctx, "k")).await.unwrap().outcome,
        Outcome::Copied
    );
    let row = |engine: &s3_blob_sync::engine::Engine| {
        let (bucket, target) = (ctx.bucket.clone(), ctx.target_id());
        let store = engine.checkpoint().clone();
        async move { store.get(&bucket, "k", &target).await.unwrap().unwrap().record }
    };
    let won = row(&engine).await;
    assert_eq!(
        (won.path, won.verified),
        (Some(MovedBy::Streamed), Some(Verification::Md5))
    );

    // The twin read no row before the winner wrote one, and writes its verdict now.
    let head = ctx.s3.head(&ctx.bucket, "k").await.unwrap().unwrap();
    let mut twin = ObjectRecord::new(&ctx.bucket, "k", &ctx.target_id(), Outcome::NoTransferNeeded);
    twin.note_source(&head, s3_blob_sync::engine::metadata::attrs_digest(&head));
    twin.blob = Some("k".into());
    twin.verified = Some(Verification::Provenance);
    twin.reason = Some("blob already holds this version".into());
    engine.checkpoint().put(&twin, None).await.unwrap();
    let kept = row(&engine).await;
    assert_eq!(
        (kept.outcome, kept.path, kept.verified, kept.etag.clone()),
        (
            Outcome::Copied,
            Some(MovedBy::Streamed),
            Some(Verification::Md5),
            won.etag.clone()
        ),
        "{kept:?}"
    );

    // A failure, or another version, is not a twin's verdict: it is written.
    let mut failed = ObjectRecord::new(&ctx.bucket, "k", &ctx.target_id(), Outcome::Failed);
    failed.reason = Some("throttled: test".into());
    // As the engine writes a failure: about the blob the key maps to.
    failed.blob = Some("k".into());
    engine.checkpoint().put(&failed, None).await.unwrap();
    assert_eq!(row(&engine).await.outcome, Outcome::Failed);
    ctx.cleanup().await;
}

/// Waits until a second has just turned (its first 150 ms), so the few calls that follow
/// share one Last-Modified second at S3's one-second precision.
async fn at_a_second_start() {
    loop {
        let ms = time::OffsetDateTime::now_utc().millisecond();
        if ms < 150 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(u64::from(1000 - ms) + 5)).await;
    }
}

/// An S3 put with user metadata `a`.
async fn put_with(ctx: &TestCtx, key: &str, a: &str) {
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key(key)
        .metadata("a", a)
        .body(b"same bytes".to_vec().into())
        .send()
        .await
        .unwrap();
}

/// A metadata-only change in the same second as the write before it keeps the ETag, the size
/// and the Last-Modified second; the digest of headers and metadata still tells it apart. Its
/// event is applied. A change whose event was missed is invisible to a plain `verify` (a
/// listing has no headers), found by `verify --metadata`, and repaired. Tried until moto
/// stamps a put and its replacement within one second.
#[tokio::test]
async fn a_metadata_change_in_the_same_second_is_applied_and_found_by_verify() {
    let ctx = TestCtx::new("samesec").await;
    let engine = ctx.engine(&[]).await;
    let scope = Scope {
        bucket: ctx.bucket.clone(),
        source_prefix: String::new(),
        container: ctx.container.clone(),
        target_prefix: String::new(),
    };
    let on_event = |key: &str, name: &str, seq: &str| {
        let mut r = req(&ctx, key);
        r.event = event(name, seq);
        r
    };
    for attempt in 0..10 {
        let (applied, missed) = (format!("a{attempt}"), format!("m{attempt}"));
        at_a_second_start().await;
        for k in [&applied, &missed] {
            put_with(&ctx, k, "1").await;
            let rep = engine
                .copy_object(&on_event(k, "ObjectCreated:Put", "0A"))
                .await
                .unwrap();
            assert_eq!(rep.outcome, Outcome::Copied, "{rep:?}");
        }
        let before = [
            engine.s3().head(&ctx.bucket, &applied).await.unwrap().unwrap(),
            engine.s3().head(&ctx.bucket, &missed).await.unwrap().unwrap(),
        ];
        for k in [&applied, &missed] {
            copy_in_place(&ctx, k, None, ("a", "2")).await;
        }
        let after = [
            engine.s3().head(&ctx.bucket, &applied).await.unwrap().unwrap(),
            engine.s3().head(&ctx.bucket, &missed).await.unwrap().unwrap(),
        ];
        if before
            .iter()
            .zip(&after)
            .any(|(b, a)| b.last_modified != a.last_modified)
        {
            continue; // a second turned in between: not the case under test
        }
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((&b.etag, b.size), (&a.etag, a.size), "moto keeps a single-part ETag");
        }

        // The change's own event is applied: the blob gets the new metadata.
        let rep = engine
            .copy_object(&on_event(&applied, "ObjectCreated:Copy", "0B"))
            .await
            .unwrap();
        assert_eq!(rep.outcome, Outcome::Copied, "{rep:?}");
        let p = ctx.blob().properties(&applied).await.unwrap().unwrap();
        assert_eq!(p.metadata.get("a").map(String::as_str), Some("2"));

        // The other's event was lost: a listing cannot see it, a HEAD can.
        let (plain, _) = verify(&engine, &scope, false).await.unwrap();
        assert!(plain.clean(), "{plain:?}");
        let (deep, to_copy) = verify(&engine, &scope, true).await.unwrap();
        assert_eq!(to_copy, vec![missed.clone()], "{deep:?}");
        assert_eq!(deep.differences[0].kind, DiffKind::MetadataMismatch, "{deep:?}");
        assert!(deep.metadata_checked >= 2, "{deep:?}");
        let fixed = s3_blob_sync::app::verify::repair(&engine, &scope, to_copy, 4).await;
        assert_eq!(fixed, 1);
        let p = ctx.blob().properties(&missed).await.unwrap().unwrap();
        assert_eq!(p.metadata.get("a").map(String::as_str), Some("2"));
        let (deep, _) = verify(&engine, &scope, true).await.unwrap();
        assert!(deep.clean(), "{deep:?}");
        ctx.cleanup().await;
        return;
    }
    panic!("moto never stamped a put and its replacement within one second in 10 tries");
}

/// Rows and blobs written before digests were kept: the next HEAD of the key judges the blob
/// by its own headers and metadata, once, and the row then keeps the digest. No mass re-copy;
/// a blob whose metadata is not the source's is copied again. Changing the metadata policy
/// changes no digest, so it re-copies nothing either.
#[tokio::test]
async fn rows_and_blobs_from_before_digests_are_judged_by_the_blob_once() {
    use s3_blob_sync::engine::metadata::ATTRS_KEY;
    let ctx = TestCtx::new("legacy").await;
    let engine = ctx.engine(&[]).await;
    let store = CheckpointStore::new(ctx.table());
    let on_event = |seq: &str| {
        let mut r = req(&ctx, "k");
        r.event = event("ObjectCreated:Put", seq);
        r
    };
    // As the previous version wrote them: a row without `Attrs`, a blob without the digest;
    // `a` as given.
    let make_legacy = |a: &'static str| {
        let (ctx, store) = (&ctx, &store);
        async move {
            let mut row = store.get(&ctx.bucket, "k", &ctx.target_id()).await.unwrap().unwrap();
            let seen = row.clone();
            row.record.attrs = None;
            store.replace(&row.record, &seen).await.unwrap();
            let blob = ctx.blob();
            let p = blob.properties("k").await.unwrap().unwrap();
            let data = blob.read("k").await.unwrap();
            let mut metadata = p.metadata.clone();
            metadata.remove(ATTRS_KEY);
            metadata.insert("a".into(), a.into());
            let props = s3_blob_sync::azure::blob::CommitProps {
                headers: p.headers.clone(),
                metadata,
                tags: Vec::new(),
            };
            let crc = s3_blob_sync::checksum::crc64(&data);
            blob.put_blob("k", data, crc, &props, &WriteCondition::Always)
                .await
                .unwrap();
            blob.properties("k").await.unwrap().unwrap().etag
        }
    };
    put_with(&ctx, "k", "1").await;
    ctx.s3
        .client()
        .copy_object()
        .bucket(&ctx.bucket)
        .key("k")
        .copy_source(format!("{}/k", ctx.bucket))
        .metadata_directive(MetadataDirective::Replace)
        .metadata("a", "1")
        .metadata("has-dash", "excluded by the default policy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        engine.copy_object(&on_event("01")).await.unwrap().outcome,
        Outcome::Copied
    );

    // A legacy blob that holds the source's headers and metadata: `verify --metadata` finds
    // nothing to repair, and a copy looks at it and copies nothing.
    let tag = make_legacy("1").await;
    let scope = Scope {
        bucket: ctx.bucket.clone(),
        source_prefix: String::new(),
        container: ctx.container.clone(),
        target_prefix: String::new(),
    };
    let (deep, _) = verify(&engine, &scope, true).await.unwrap();
    assert!(deep.clean() && deep.metadata_checked == 1, "{deep:?}");
    let rep = engine.copy_object(&on_event("02")).await.unwrap();
    assert_eq!(rep.outcome, Outcome::NoTransferNeeded, "{rep:?}");
    assert_eq!(
        ctx.blob().properties("k").await.unwrap().unwrap().etag,
        tag,
        "the blob was rewritten"
    );
    let row = store
        .get(&ctx.bucket, "k", &ctx.target_id())
        .await
        .unwrap()
        .unwrap()
        .record;
    let head = engine.s3().head(&ctx.bucket, "k").await.unwrap().unwrap();
    assert_eq!(
        row.attrs,
        Some(s3_blob_sync::engine::metadata::attrs_digest(&head)),
        "the digest is kept now"
    );
    // From now on the row alone says so.
    assert_eq!(
        engine.copy_object(&on_event("03")).await.unwrap().outcome,
        Outcome::NoTransferNeeded
    );

    // A legacy blob whose metadata is not the source's: copied again.
    make_legacy("0").await;
    let rep = engine.copy_object(&on_event("04")).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied, "{rep:?}");
    let p = ctx.blob().properties("k").await.unwrap().unwrap();
    assert_eq!(p.metadata.get("a").map(String::as_str), Some("1"));

    // Another metadata policy writes other entries, from the same source values: no copy.
    let renaming = ctx.engine(&[("SYNC_METADATA_POLICY", "rename")]).await;
    let rep = renaming.copy_object(&on_event("05")).await.unwrap();
    assert_eq!(rep.outcome, Outcome::NoTransferNeeded, "{rep:?}");
    ctx.cleanup().await;
}

/// Two writers stream one blob at once (a message handed out again while its first consumer
/// still works, or an event and a run): the one that commits first discards the other's
/// staged blocks, whose Put Block List then fails with 400 `InvalidBlockList`. That is a lost
/// race, not a refusal: the loser looks again (and finds the winner's blob), instead of
/// failing for good and being parked.
#[tokio::test]
async fn a_writer_whose_staged_blocks_another_commit_discarded_looks_again() {
    let ctx = TestCtx::new("lostblocks").await;
    let proxy = Proxy::start("http://127.0.0.1:10000").await;
    let cs = ctx.connection_string_via(&proxy.url);
    let small_blocks = [("SYNC_BLOCK_SIZE_MIB", "1")];
    let slow = Arc::new(
        ctx.engine(&[("AZURE_STORAGE_CONNECTION_STRING", &cs), small_blocks[0]])
            .await,
    );
    let fast = ctx.engine(&small_blocks).await;
    let mirror = |key: &str| {
        let mut r = req(&ctx, key);
        r.mode = SyncMode::Mirror;
        r
    };
    // A streams v1 into a blob that does not exist yet, and stalls before its Put Block List...
    ctx.put("k", bytes(3 * MIB, 1)).await;
    proxy.faults().hold_to.arm("comp=blocklist", 1);
    let a = {
        let (slow, r) = (slow.clone(), mirror("k"));
        tokio::spawn(async move { slow.copy_object(&r).await })
    };
    proxy.until_held(1).await;
    // ...while v2 lands and B commits it (discarding A's staged blocks), then the source is
    // deleted and B deletes the blob: A's "no blob yet" condition holds again, its blocks
    // are gone.
    ctx.put("k", bytes(3 * MIB, 2)).await;
    assert_eq!(fast.copy_object(&mirror("k")).await.unwrap().outcome, Outcome::Copied);
    ctx.s3
        .client()
        .delete_object()
        .bucket(&ctx.bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(fast.copy_object(&mirror("k")).await.unwrap().outcome, Outcome::Deleted);
    proxy.release(1);
    let rep = a.await.unwrap();
    let rep = rep.unwrap_or_else(|e| panic!("the writer that lost the race failed: {e}"));
    assert_eq!(rep.outcome, Outcome::SourceMissing, "{rep:?}");
    assert!(ctx.blob().properties("k").await.unwrap().is_none(), "a blob came back");
    ctx.cleanup().await;
}
