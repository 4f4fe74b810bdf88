//! S3 object tags on the blob (`SYNC_TAGS`), on every path that commits: a small object's
//! Put Blob, streamed blocks, a split object's ranges (one commit after several invocations)
//! and server-side Put Blob From URL (through the copy-from-URL double, which forwards
//! `x-ms-tags` to Azurite as Azure would keep them). Azurite serves blob index tags for real.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use s3_blob_sync::state::checkpoint::Outcome;
use serde_json::json;

use crate::harness::handler::HandlerProc;
use crate::harness::host::Host;
use crate::harness::objects::{assert_blob, req, server_side_engine};
use crate::harness::proxy::Proxy;
use crate::harness::{bytes, TestCtx};

const MIB: usize = 1024 * 1024;

async fn put_tagged(ctx: &TestCtx, key: &str, body: Vec<u8>, tagging: Option<&str>) {
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key(key)
        .body(ByteStream::from(body))
        .set_tagging(tagging.map(str::to_string))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    v.sort();
    v
}

/// `team=data`, `cost center=a/b+c=d` (a value with the encoding's own characters), and two
/// S3 takes but Azure cannot hold: `café=x` and `owner=ops@example.com`.
const TAGGING: &str = "team=data&cost%20center=a%2Fb%2Bc%3Dd&caf%C3%A9=x&owner=ops%40example.com";

#[tokio::test]
async fn tags_reach_the_blob_on_every_path_and_what_azure_refuses_is_recorded() {
    let ctx = TestCtx::new("tags").await;
    let mid = bytes(9 * MIB, 41);
    put_tagged(&ctx, "small.txt", b"small".to_vec(), Some(TAGGING)).await;
    put_tagged(&ctx, "mid.bin", mid.clone(), Some(TAGGING)).await;
    put_tagged(&ctx, "plain.txt", b"no tags".to_vec(), None).await;
    let want = pairs(&[("team", "data"), ("cost center", "a/b+c=d")]);

    // Streamed, S3 behind a proxy that counts GetObjectTagging: only tagged objects pay it.
    let s3 = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let streamed = ctx
        .engine(&[
            ("AWS_ENDPOINT_URL", s3.url.as_str()),
            ("SYNC_COPY_PATH", "streamed"),
            ("SYNC_BLOCK_SIZE_MIB", "1"),
        ])
        .await;
    for key in ["small.txt", "mid.bin", "plain.txt"] {
        let rep = streamed.copy_object(&req(&ctx, key)).await.unwrap();
        assert_eq!(rep.outcome, Outcome::Copied, "{key}: {rep:?}");
        let tags = ctx.blob().tags(key).await.unwrap();
        if key == "plain.txt" {
            assert!(tags.is_empty(), "{tags:?}");
            assert_eq!(rep.reason, None);
        } else {
            assert_eq!(tags, want, "{key}");
            let reason = rep.reason.unwrap_or_default();
            assert!(reason.contains("tags left out: tag `café`"), "{key}: {reason}");
            assert!(reason.contains("tag `owner`: `@` is not allowed"), "{key}: {reason}");
        }
    }
    assert_blob(&ctx, "mid.bin", &mid).await;
    assert!(s3.count("comp=block&") == 0, "the S3 proxy saw no Azure call");
    assert_eq!(
        s3.count("?tagging"),
        2,
        "GetObjectTagging for the two tagged objects only"
    );
    // The row keeps what was left out.
    let row = streamed
        .checkpoint()
        .get(&ctx.bucket, "small.txt", &ctx.target_id())
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.record.reason.as_deref().unwrap_or_default().contains("café"),
        "{:?}",
        row.record
    );

    // Server-side: the tags go with Put Blob From URL.
    let double = Proxy::blob_double().await;
    let server = server_side_engine(&ctx, &double, &[]).await;
    let mut r = req(&ctx, "small.txt");
    r.target_prefix = "x/".into();
    let rep = server.copy_object(&r).await.unwrap();
    assert_eq!(
        (rep.outcome, rep.path.map(|p| p.as_str())),
        (Outcome::Copied, Some("server-side"))
    );
    assert_eq!(ctx.blob().tags("x/small.txt").await.unwrap(), want);

    // `metadata`: every tag, `café` too, in one entry; no index tags.
    let meta = ctx.engine(&[("SYNC_TAGS", "metadata")]).await;
    let mut r = req(&ctx, "small.txt");
    r.target_prefix = "m/".into();
    assert_eq!(meta.copy_object(&r).await.unwrap().outcome, Outcome::Copied);
    let props = ctx.blob().properties("m/small.txt").await.unwrap().unwrap();
    assert_eq!(
        props.metadata.get("s3sync_tags").map(String::as_str),
        Some("team=data&cost%20center=a%2Fb%2Bc%3Dd&caf%C3%A9=x&owner=ops%40example.com")
    );
    assert!(ctx.blob().tags("m/small.txt").await.unwrap().is_empty());

    // `fail`: the object fails, naming the tag; no blob is written.
    let strict = ctx.engine(&[("SYNC_METADATA_POLICY", "fail")]).await;
    let mut r = req(&ctx, "small.txt");
    r.target_prefix = "f/".into();
    let rep = strict.copy_object(&r).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Failed);
    assert!(rep.reason.unwrap_or_default().contains("tag `café`"));
    assert!(ctx.blob().read("f/small.txt").await.is_err());

    // `drop`: not even read.
    let before = s3.count("?tagging");
    let drop = ctx
        .engine(&[("AWS_ENDPOINT_URL", s3.url.as_str()), ("SYNC_TAGS", "drop")])
        .await;
    let mut r = req(&ctx, "small.txt");
    r.target_prefix = "d/".into();
    assert_eq!(drop.copy_object(&r).await.unwrap().outcome, Outcome::Copied);
    assert!(ctx.blob().tags("d/small.txt").await.unwrap().is_empty());
    assert_eq!(s3.count("?tagging"), before);
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_split_objects_one_commit_carries_its_tags() {
    let ctx = TestCtx::new("tagsplit").await;
    let data = bytes(20 * MIB, 43);
    put_tagged(&ctx, "big.bin", data.clone(), Some("team=data&tier=cold")).await;
    let env = ctx.env_with(&[("SYNC_BLOCK_SIZE_MIB", "4"), ("SYNC_INVOCATION_MIB", "8")]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    host.copy
        .send(&json!({"bucket": ctx.bucket, "key": "big.bin"}).to_string(), None)
        .await
        .unwrap();
    let engine = ctx.engine(&[]).await;
    host.drive_until(&h, Duration::from_secs(120), || async {
        engine
            .checkpoint()
            .get(&ctx.bucket, "big.bin", &ctx.target_id())
            .await
            .unwrap()
            .is_some_and(|v| v.record.outcome == Outcome::Copied)
    })
    .await;
    assert!(h.logs().contains("object split into ranges"), "not split: {}", h.logs());
    assert_blob(&ctx, "big.bin", &data).await;
    assert_eq!(
        ctx.blob().tags("big.bin").await.unwrap(),
        pairs(&[("team", "data"), ("tier", "cold")])
    );
}

/// An operator's SAS without `t`, or an identity with Storage Blob Data Contributor alone,
/// may write blobs but not index tags: the tagged object's commit is refused, and the error
/// says which permission is missing and which setting avoids it. Untagged objects copy.
/// The SAS really lacks `t` (Azurite refuses it Get Blob Tags), but Azurite does not check
/// it on writes, so the proxy in front refuses tagged writes as Azure does.
#[tokio::test]
async fn a_commit_refused_for_its_tags_names_the_permission_and_sync_tags() {
    use s3_blob_sync::azure::auth::mint_account_sas_for;
    use s3_blob_sync::redact::{ExposeSecret, Secret};
    let ctx = TestCtx::new("tagsperm").await;
    put_tagged(&ctx, "tagged.txt", b"t".to_vec(), Some("team=data")).await;
    put_tagged(&ctx, "plain.txt", b"p".to_vec(), None).await;
    let key = Secret::from(crate::harness::AZURITE_KEY);
    let (sas, _) = mint_account_sas_for(
        "devstoreaccount1",
        &key,
        "https,http",
        time::OffsetDateTime::now_utc(),
        "racwdlup",
    )
    .unwrap();
    // Azurite takes x-ms-tags from any SAS; the proxy refuses them as Azure does.
    let azure = Proxy::start("http://127.0.0.1:10000").await;
    azure
        .faults()
        .forbid_tag_writes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let cs = format!(
        "BlobEndpoint={}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;\
         TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;SharedAccessSignature={}",
        azure.url,
        sas.expose_secret()
    );
    let engine = ctx.engine(&[("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())]).await;
    let rep = engine.copy_object(&req(&ctx, "plain.txt")).await.unwrap();
    assert_eq!(rep.outcome, Outcome::Copied);
    let e = engine.copy_object(&req(&ctx, "tagged.txt")).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("SYNC_TAGS") && msg.contains("tags/write") && msg.contains("403"),
        "{msg}"
    );
    assert!(!msg.contains("sig="), "the SAS reached the error: {msg}");
    assert!(ctx.blob().read("tagged.txt").await.is_err());
    // As metadata, the same SAS is enough.
    let meta = ctx
        .engine(&[
            ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
            ("SYNC_TAGS", "metadata"),
        ])
        .await;
    assert_eq!(
        meta.copy_object(&req(&ctx, "tagged.txt")).await.unwrap().outcome,
        Outcome::Copied
    );
    // The SAS is the narrow one: Azurite itself refuses it the tags read.
    let direct = cs.replace(&azure.url, "http://127.0.0.1:10000");
    let plain = ctx
        .engine(&[("AZURE_STORAGE_CONNECTION_STRING", direct.as_str())])
        .await;
    let refused = plain
        .target(&ctx.container)
        .unwrap()
        .tags("plain.txt")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
}
