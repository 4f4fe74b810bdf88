//! The cutover gate (`GET /api/cutover`, `status --cutover`): `ready` only when nothing is in
//! flight, nothing is stuck and a recent verify was clean; otherwise `not ready` with each
//! reason and its number. Each condition is broken once, for real, against the stand-ins.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::handler::{run_binary_async, HandlerProc};
use crate::harness::host::http_payload;
use crate::harness::TestCtx;

/// The gate as the CLI reports it: exit code and the JSON answer.
async fn gate(env: &HashMap<String, String>, bucket: &str, container: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "status",
        "--cutover",
        "--bucket",
        bucket,
        "--container",
        container,
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out) = run_binary_async(&args, env).await;
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON answer ({code}): {out}"));
    (code, serde_json::from_str(line).unwrap())
}

fn failing(g: &Value) -> Vec<String> {
    g["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn check<'a>(g: &'a Value, name: &str) -> &'a Value {
    g["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {g}"))
}

#[tokio::test]
async fn the_cutover_gate_says_ready_only_when_every_condition_holds() {
    let ctx = TestCtx::new("cutover").await;
    let (sqs, queue_url) = ctx.sqs_queue("cut-q-").await;
    // The rejects queue is the context's own, which its guard removes.
    let env = ctx.env_with(&[("SYNC_SQS_QUEUE_URL", queue_url.as_str())]);
    let (b, c) = (ctx.bucket.clone(), ctx.container.clone());
    for i in 0..3 {
        ctx.put(&format!("d/{i}.txt"), format!("object {i}")).await;
    }

    // Nothing has run: not ready, and it says why.
    let (code, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!(
        (code, g["ready"].as_bool(), g["state"].as_str()),
        (1, Some(false), Some("not ready")),
        "{g}"
    );
    let f = failing(&g);
    assert!(
        f.contains(&"relayLagSeconds".into()) && f.contains(&"verifyDifferences".into()),
        "{g}"
    );
    assert!(
        g["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("s3-blob-sync verify")),
        "a reason says what to do: {g}"
    );

    // Copied, the relay drained the (empty) queue, and a verify found no difference: ready.
    let src = format!("s3://{b}/");
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{c}/");
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--no-progress"], &env).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_binary_async(&["watch", "--once"], &env).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_binary_async(&["verify", &src, &dst], &env).await;
    assert_eq!(code, 0, "{out}");
    let (code, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!((code, g["ready"].as_bool()), (0, Some(true)), "{g}");
    assert!(g["reasons"].as_array().unwrap().is_empty(), "{g}");

    // Each condition, broken on its own, is named with its number.
    let copy_q = ctx.queue(&env["SYNC_COPY_QUEUE"]);
    copy_q
        .send(&json!({"bucket": b, "key": "d/0.txt"}).to_string(), None)
        .await
        .unwrap();
    let (code, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!(code, 1);
    assert_eq!(failing(&g), ["pendingCopies"], "{g}");
    assert_eq!(check(&g, "pendingCopies")["value"], 1, "{g}");
    for m in copy_q.receive(32, Duration::from_secs(5)).await.unwrap() {
        copy_q.delete(&m).await.unwrap();
    }

    let poison = ctx.queue(&format!("{}-poison", env["SYNC_COPY_QUEUE"]));
    poison.create_if_missing().await.unwrap();
    poison.send("{\"bucket\":\"b\",\"key\":\"k\"}", None).await.unwrap();
    let (_, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!(failing(&g), ["poisonedMessages"], "{g}");
    assert!(
        check(&g, "poisonedMessages")["detail"]
            .as_str()
            .unwrap()
            .contains("-poison"),
        "{g}"
    );
    poison.delete_queue().await.unwrap();

    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("{}")
        .send()
        .await
        .unwrap();
    let (_, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!(failing(&g), ["sqsBacklog"], "{g}");
    sqs.purge_queue().queue_url(&queue_url).send().await.unwrap();

    let store = s3_blob_sync::state::checkpoint::CheckpointStore::new(ctx.table());
    let failed = s3_blob_sync::state::checkpoint::ObjectRecord::new(
        &b,
        "d/broken.bin",
        &ctx.target_id(),
        s3_blob_sync::state::checkpoint::Outcome::Failed,
    );
    store.put(&failed, None).await.unwrap();
    let (_, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!(failing(&g), ["failedObjects"], "{g}");
    assert_eq!(check(&g, "failedObjects")["value"], 1);

    // A verify counts for a bounded time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, g) = gate(&env, &b, &c, &["--max-verify-age-seconds", "0"]).await;
    assert!(failing(&g).contains(&"verifyAgeSeconds".into()), "{g}");

    // The same gate over HTTP (the Functions door), and its bad input named.
    let h = HandlerProc::start(&env).await;
    let mut p = http_payload("GET", "/api/cutover", json!({}), None);
    p["Data"]["req"]["Query"]["bucket"] = json!(b);
    p["Data"]["req"]["Query"]["container"] = json!(c);
    let (status, body) = h.invoke("Cutover", &p).await;
    assert_eq!(status, 200, "{body}");
    let res = &body["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200, "{res}");
    let g: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(failing(&g), ["failedObjects"], "{g}");
    let mut p = http_payload("GET", "/api/cutover", json!({}), None);
    p["Data"]["req"]["Query"]["container"] = json!(c);
    let (_, body) = h.invoke("Cutover", &p).await;
    let res = &body["Outputs"]["res"];
    assert_eq!(res["statusCode"], 400, "{res}");
    assert!(res["body"].as_str().unwrap().contains("bucket: "), "{res}");
    ctx.cleanup().await;
}

/// A verify speaks only for the keys it covered, onto the names it compared: a clean verify
/// of `tmp/` (or of a prefix that matched nothing) never makes the whole bucket ready, and a
/// newer clean narrow verify never hides an older broad one that found differences.
#[tokio::test]
async fn a_verify_speaks_only_for_the_keys_it_covered() {
    let ctx = TestCtx::new("cutscope").await;
    let (_sqs, queue_url) = ctx.sqs_queue("cut-s-").await;
    let env = ctx.env_with(&[("SYNC_SQS_QUEUE_URL", queue_url.as_str())]);
    let (b, c) = (ctx.bucket.clone(), ctx.container.clone());
    for k in ["tmp/a", "tmp/b", "data/x", "data/y"] {
        ctx.put(k, format!("body of {k}")).await;
    }
    let blob = |p: &str| format!("http://127.0.0.1:10000/devstoreaccount1/{c}/{p}");
    let s3 = |p: &str| format!("s3://{b}/{p}");
    let cli = |args: Vec<String>| {
        let env = env.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_binary_async(&args, &env).await
        }
    };
    let verify = |p: &str| cli(vec!["verify".into(), s3(p), blob(p)]);
    let (code, out) = cli(vec!["copy".into(), s3("tmp/"), blob("tmp/"), "--no-progress".into()]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_binary_async(&["watch", "--once"], &env).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify("tmp/").await;
    assert_eq!(code, 0, "{out}");

    // The whole bucket is asked about by default: tmp/'s verify does not stand for it.
    let (code, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!((code, failing(&g)), (1, vec!["verifyDifferences".to_string()]), "{g}");
    let why = check(&g, "verifyDifferences")["detail"].as_str().unwrap();
    assert!(why.contains("no verify covers") && why.contains("tmp/"), "{g}");
    assert_eq!(g["verify"], Value::Null, "{g}");
    // Asked about tmp/ itself, it does, and the gate says which verify and how many objects.
    let (code, g) = gate(&env, &b, &c, &["--source-prefix", "tmp/", "--target-prefix", "tmp/"]).await;
    assert_eq!(code, 0, "{g}");
    assert_eq!(
        (
            g["verify"]["sourcePrefix"].as_str(),
            g["verify"]["sourceObjects"].as_u64()
        ),
        (Some("tmp/"), Some(2)),
        "{g}"
    );
    // tmp/ onto other names is another scope.
    let (code, _) = gate(
        &env,
        &b,
        &c,
        &["--source-prefix", "tmp/", "--target-prefix", "old/tmp/"],
    )
    .await;
    assert_eq!(code, 1);

    // A mistyped prefix matches nothing: clean, 0 objects, and the whole is still not ready.
    let (code, out) = verify("tpm/").await;
    assert_eq!(code, 0, "{out}");
    let (code, _) = gate(&env, &b, &c, &[]).await;
    assert_eq!(code, 1);

    // The whole bucket, verified: two blobs are missing.
    let (code, out) = verify("").await;
    assert_eq!(code, 1, "{out}");
    let (code, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!((code, failing(&g)), (1, vec!["verifyDifferences".to_string()]), "{g}");
    assert_eq!(check(&g, "verifyDifferences")["value"], 2, "{g}");
    // A newer clean verify of tmp/ does not hide it.
    let (code, _) = verify("tmp/").await;
    assert_eq!(code, 0);
    let (_, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!(check(&g, "verifyDifferences")["value"], 2, "{g}");

    // Copied and verified whole: ready, by the verify of the whole bucket.
    let (code, out) = cli(vec!["copy".into(), s3(""), blob(""), "--no-progress".into()]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify("").await;
    assert_eq!(code, 0, "{out}");
    let (code, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!(code, 0, "{g}");
    assert_eq!(
        (
            g["verify"]["sourcePrefix"].as_str(),
            g["verify"]["sourceObjects"].as_u64()
        ),
        (Some(""), Some(4)),
        "{g}"
    );
    // A later verify of data/ that finds a difference counts against the whole.
    ctx.put("data/z", "new").await;
    let (code, _) = verify("data/").await;
    assert_eq!(code, 1);
    let (code, g) = gate(&env, &b, &c, &[]).await;
    assert_eq!(
        (code, check(&g, "verifyDifferences")["value"].as_u64()),
        (1, Some(1)),
        "{g}"
    );
    assert!(
        check(&g, "verifyDifferences")["detail"]
            .as_str()
            .unwrap()
            .contains("data/"),
        "{g}"
    );

    // A verify that saw no object proves nothing once the source has some.
    let (code, _) = verify("new/").await;
    assert_eq!(code, 0);
    let (code, g) = gate(&env, &b, &c, &["--source-prefix", "new/", "--target-prefix", "new/"]).await;
    assert_eq!(code, 0, "an empty source is ready, and says so: {g}");
    assert!(
        check(&g, "verifyObjects")["detail"]
            .as_str()
            .unwrap()
            .contains("is empty"),
        "{g}"
    );
    ctx.put("new/k", "late").await;
    let (code, g) = gate(&env, &b, &c, &["--source-prefix", "new/", "--target-prefix", "new/"]).await;
    assert_eq!((code, failing(&g)), (1, vec!["verifyObjects".to_string()]), "{g}");

    // A bad scope is refused, naming the flag.
    let (code, out) = run_binary_async(
        &[
            "status",
            "--cutover",
            "--bucket",
            &b,
            "--container",
            &c,
            "--target-prefix",
            "x/",
        ],
        &env,
    )
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--source-prefix"), "{out}");
    ctx.cleanup().await;
}

/// Failed rows are counted within the scope to the end: a failed row under `tmp/` that sorts
/// after more than a page of failed rows of other keys (keys with no blob have hashed row
/// keys) still fails the gate for `tmp/`.
#[tokio::test]
async fn a_failed_row_behind_a_page_of_others_still_fails_the_gate() {
    use futures::StreamExt;
    use s3_blob_sync::state::checkpoint::{row_key, CheckpointStore, ObjectRecord, Outcome, Subject};
    let ctx = TestCtx::new("cutfail").await;
    let store = CheckpointStore::new(ctx.table());
    store.ensure().await.unwrap();
    // The in-scope key whose row sorts late, and 1,100 others whose rows sort before it.
    let mine = (0..)
        .map(|i| format!("tmp/{i}"))
        .find(|k| row_key(Subject::Key(k)).as_str() > "sf8")
        .unwrap();
    let others: Vec<String> = (0..)
        .map(|i| format!("other/{i}"))
        .filter(|k| row_key(Subject::Key(k)) < row_key(Subject::Key(&mine)))
        .take(1100)
        .collect();
    let failed = |key: &str| ObjectRecord::new(&ctx.bucket, key, &ctx.target_id(), Outcome::Failed);
    futures::stream::iter(others.iter().map(|k| failed(k)).chain([failed(&mine)]))
        .for_each_concurrent(32, |r| {
            let store = store.clone();
            async move { store.put(&r, None).await.unwrap() }
        })
        .await;
    let (rows, more) = store
        .failed_under(&ctx.bucket, &ctx.target_id(), ("tmp/", "tmp/"), 1000)
        .await
        .unwrap();
    assert_eq!((rows.len(), rows[0].key.as_str(), more), (1, mine.as_str(), false));
    let (rows, more) = store
        .failed_under(&ctx.bucket, &ctx.target_id(), ("", ""), 1000)
        .await
        .unwrap();
    assert_eq!((rows.len(), more), (1000, true), "the whole bucket: at least 1,000");
    ctx.cleanup().await;
}
