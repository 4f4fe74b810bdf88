//! `verify` and `Verify`: every kind of difference between a source prefix and its target,
//! and repair, against real moto and Azurite.

use serde_json::{json, Value};

use std::time::{Duration, Instant};

use crate::harness::contract::assert_schema;
use crate::harness::handler::{queue_payload, run_binary_async, HandlerProc};
use crate::harness::host::{http_invoke, http_payload, Host, VISIBILITY};
use crate::harness::proxy::Proxy;
use crate::harness::TestCtx;
use s3_blob_sync::azure::blob::{CommitProps, WriteCondition};

/// Writes a blob the way another tool would: no s3sync provenance.
async fn foreign_blob(ctx: &TestCtx, name: &str, data: &'static [u8]) {
    let b = ctx.blob();
    let existing = b.properties(name).await.unwrap();
    let crc = s3_blob_sync::checksum::crc64(data);
    b.stage_block(name, b"foreign-000000", bytes::Bytes::from_static(data), crc)
        .await
        .unwrap();
    b.commit_blocks(
        name,
        &[b"foreign-000000".to_vec()],
        &CommitProps::default(),
        &WriteCondition::after(existing.as_ref()),
    )
    .await
    .unwrap();
}

/// Starts a verify run with `POST /api/verify` and delivers its list-pages messages (with
/// `twice`, each twice: a redelivery of a slice that was done), until `GET /api/runs/{id}`
/// answers 200. Returns the run id and its final summary.
async fn verify_run(h: &HandlerProc, host: &Host, body: &Value, twice: bool) -> (String, Value) {
    let (status, headers, rep) = http_invoke(
        h,
        "Verify",
        &http_payload("POST", "/api/verify", json!({}), Some(&body.to_string())),
    )
    .await;
    assert_eq!(status, 202, "{rep}");
    assert_schema("Accepted", &rep);
    let id = rep["runId"].as_str().unwrap().to_string();
    let location = headers["Location"].as_str().unwrap_or_default();
    assert!(location.contains(&format!("/api/runs/{id}")), "{headers}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let get = http_payload("GET", &format!("/api/runs/{id}"), json!({"id": id}), None);
        let (status, _, run) = http_invoke(h, "GetRun", &get).await;
        assert_schema("RunSummary", &run);
        if status == 200 {
            return (id, run);
        }
        assert_eq!(status, 202, "{run}");
        assert!(Instant::now() < deadline, "verify run {id} did not end: {run}");
        match host.list.receive(1, VISIBILITY).await.unwrap().pop() {
            Some(m) => {
                if twice {
                    let msg: Value = serde_json::from_str(&m.text).unwrap();
                    let (status, reply) = h.invoke("ListPage", &queue_payload(&msg, m.dequeue_count)).await;
                    assert_eq!(status, 200, "{reply}");
                }
                host.deliver(h, "ListPage", &host.list, m).await;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn json_line(out: &str) -> Value {
    serde_json::from_str(
        out.lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON in {out}")),
    )
    .unwrap()
}

#[tokio::test]
async fn verify_reports_each_difference_and_repair_fixes_all_but_extras() {
    let ctx = TestCtx::new("verify").await;
    for k in ["a", "b", "c", "d", "e"] {
        ctx.put(&format!("v/{k}"), format!("content-{k}")).await;
    }
    ctx.put("v/folder/", "").await;
    let src = format!("s3://{}/v/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/t/", ctx.container);
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--no-progress"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_binary_async(&["verify", &src, &dst, "--json"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(json_line(&out)["matched"], 5);

    ctx.blob().delete("t/a").await.unwrap(); // missing, behind a checkpoint that says copied
    ctx.put("v/b", "CONTENT-b").await; // same size, another version
    ctx.put("v/c", "a longer content now").await; // size differs
    foreign_blob(&ctx, "t/d", b"content-d").await; // right bytes, no provenance
    foreign_blob(&ctx, "t/zz", b"stray").await; // no source object
    ctx.put("v/f", "content-f").await; // never copied

    let (code, out) = run_binary_async(&["verify", &src, &dst, "--json"], &ctx.env).await;
    assert_eq!(code, 1, "{out}");
    let r = json_line(&out);
    assert_eq!(
        r["counts"],
        json!({"missing": 2, "checksum-mismatch": 1, "size-mismatch": 1, "metadata-mismatch": 1, "extra": 1}),
        "{r}"
    );
    assert_eq!(
        (r["matched"].as_u64(), r["skipped"].as_u64(), r["clean"].as_bool()),
        (Some(1), Some(1), Some(false))
    );
    let kind_of = |key: &str| {
        r["differences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["key"] == key || d["blob"] == key)
            .map(|d| d["kind"].clone())
    };
    assert_eq!(kind_of("v/a"), Some(json!("missing")));
    assert_eq!(kind_of("v/b"), Some(json!("checksum-mismatch")));
    assert_eq!(kind_of("v/c"), Some(json!("size-mismatch")));
    assert_eq!(kind_of("v/d"), Some(json!("metadata-mismatch")));
    assert_eq!(kind_of("t/zz"), Some(json!("extra")));
    // The table names them too.
    let (_, table) = run_binary_async(&["verify", &src, &dst], &ctx.env).await;
    assert!(table.contains("checksum-mismatch") && table.contains("v/b"), "{table}");

    // The HTTP function starts a verify run: 202 and Location, then slices on the list-pages
    // queue (two keys and two blobs a page, a clean point after each page), each delivered
    // twice. The run ends with the CLI's tallies, and its report names each difference.
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/hook/T01/VERIFYSECRETTOKEN", receiver.uri());
    let env = ctx.env_with(&[
        ("SYNC_VERIFY_SLICE_SECS", "0"),
        ("SYNC_LIST_PAGE_KEYS", "2"),
        ("SYNC_PRUNE_PAGE", "2"),
        ("SYNC_NOTIFY_ALLOW_HOSTS", "127.0.0.1"),
        ("SYNC_WEBHOOK_VERIFY", &hook),
    ]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let body = json!({"source": {"bucket": ctx.bucket, "prefix": "v/"}, "target": {"container": ctx.container, "prefix": "t/"}});
    let mut notified = body.clone();
    notified["notify"] = json!("setting:SYNC_WEBHOOK_VERIFY");
    let (id, ended) = verify_run(&h, &host, &notified, true).await;
    let v = &ended["verify"];
    assert_eq!(ended["state"], "PartiallySucceeded", "{ended}");
    assert_eq!(v["counts"], r["counts"], "{ended}");
    assert_eq!(
        (&v["matched"], &v["sourceObjects"], &v["skipped"], &v["clean"]),
        (&r["matched"], &r["sourceObjects"], &r["skipped"], &json!(false)),
        "{ended}"
    );
    assert!(v["slices"].as_u64().unwrap() >= 3, "{ended}");
    let (status, _, lines) = crate::report::report(&h, &id, &[]).await;
    assert_eq!(status, 200);
    for l in &lines {
        assert_schema("ReportLine", l);
    }
    let mut got: Vec<(String, String)> = lines
        .iter()
        .map(|l| (l["key"].as_str().unwrap().into(), l["outcome"].as_str().unwrap().into()))
        .collect();
    got.sort();
    let want = [
        ("t/zz", "extra"),
        ("v/a", "missing"),
        ("v/b", "checksumMismatch"),
        ("v/c", "sizeMismatch"),
        ("v/d", "metadataMismatch"),
        ("v/f", "missing"),
    ];
    assert_eq!(got, want.map(|(k, o)| (k.to_string(), o.to_string())), "{lines:?}");
    // The CLI shows the same run: its tallies, and its report names each difference.
    let (code, out) = run_binary_async(&["status", &id], &env).await;
    assert_eq!(code, 1, "a run that did not succeed: {out}");
    assert!(out.contains(&format!("verify run {id}: PartiallySucceeded")), "{out}");
    assert!(out.contains("missing") && out.contains("--report"), "{out}");
    let (code, out) = run_binary_async(&["status", &id, "--report"], &env).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("v/b") && out.contains("checksumMismatch"), "{out}");
    // The webhook goes out once (its check message, too, is delivered twice), says what was
    // found, and nothing the run shows names its URL.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let get = http_payload("GET", &format!("/api/runs/{id}"), json!({"id": id}), None);
        let (_, _, run) = http_invoke(&h, "GetRun", &get).await;
        if run["notification"]["state"] == "sent" {
            assert!(!run.to_string().contains("VERIFYSECRETTOKEN"), "{run}");
            break;
        }
        assert!(Instant::now() < deadline, "the webhook was not sent: {run}");
        match host.list.receive(1, VISIBILITY).await.unwrap().pop() {
            Some(m) => {
                let msg: Value = serde_json::from_str(&m.text).unwrap();
                h.invoke("ListPage", &queue_payload(&msg, m.dequeue_count)).await;
                host.deliver(&h, "ListPage", &host.list, m).await;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let sent = receiver.received_requests().await.unwrap();
    assert_eq!(sent.len(), 1, "one webhook");
    assert_eq!(
        sent[0].url.path(),
        "/hook/T01/VERIFYSECRETTOKEN",
        "the secret URL was used"
    );
    let hooked: Value = serde_json::from_slice(&sent[0].body).unwrap();
    let text = hooked["text"].as_str().unwrap();
    assert!(text.contains(&format!("verify run {id} PartiallySucceeded")), "{text}");
    assert!(text.contains("2 missing"), "{text}");
    assert_eq!(hooked["summary"]["verify"]["counts"], r["counts"], "{hooked}");
    assert!(!h.logs().contains("VERIFYSECRETTOKEN"), "the webhook URL reached a log");
    let mut bad = body.clone();
    bad["repair"] = json!("yes");
    let (status, _, rep) = http_invoke(
        &h,
        "Verify",
        &http_payload("POST", "/api/verify", json!({}), Some(&bad.to_string())),
    )
    .await;
    assert_eq!(status, 400, "{rep}");
    assert_schema("Error", &rep);
    assert!(rep["error"].as_str().unwrap().contains("`repair`"), "{rep}");

    // Through the HTTP function, repair queues one copy per difference, marked to ignore the
    // checkpoint (the extra blob gets none).
    let mut fix = body.clone();
    fix["repair"] = json!(true);
    let (_, ended) = verify_run(&h, &host, &fix, true).await;
    assert_eq!(ended["verify"]["repaired"], 5, "{ended}");
    let q = ctx.queue(&ctx.config(&[]).queues.copy);
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.extend(q.receive(32, std::time::Duration::from_secs(30)).await.unwrap());
    }
    let mut keys: Vec<String> = queued
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_str(&m.text).unwrap();
            assert_eq!(v["recheck"], true, "{v}");
            v["key"].as_str().unwrap().to_string()
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys, ["v/a", "v/b", "v/c", "v/d", "v/f"]);
    for m in &queued {
        q.delete(m).await.unwrap();
    }

    // Repair copies the five (ignoring the checkpoint's word), leaves the extra blob alone.
    let (code, out) = run_binary_async(&["verify", &src, &dst, "--json", "--repair"], &ctx.env).await;
    assert_eq!(code, 1, "only the extra blob should remain: {out}");
    let r = json_line(&out);
    assert_eq!(r["counts"], json!({"extra": 1}), "{r}");
    assert_eq!(
        (r["repaired"].as_u64(), r["matched"].as_u64()),
        (Some(5), Some(6)),
        "{r}"
    );
    assert_eq!(&ctx.blob().read("t/a").await.unwrap()[..], b"content-a");
    assert_eq!(&ctx.blob().read("t/b").await.unwrap()[..], b"CONTENT-b");
    assert!(ctx.blob().properties("t/zz").await.unwrap().is_some());
    ctx.cleanup().await;
}

/// Model-based: `verify` walks both listings a page at a time and reports exactly what differs,
/// for seeded mixes of matching, missing, extra and resized objects under names whose order
/// S3 (UTF-8 bytes) and Azurite (UTF-16 units: `😀` before `～`) do not share. With a window
/// wider than the disorder the report equals the model; with a window of one it never matches
/// wrongly, and every source object is still accounted for.
#[tokio::test]
async fn verify_walks_both_listings_in_pages_and_finds_exactly_the_model() {
    use s3_blob_sync::app::verify::{verify_each, DiffKind, Limits, Verifier, VerifyReport};
    use s3_blob_sync::model::Scope;

    let ctx = TestCtx::new("verifywalk").await;
    let engine = ctx.engine(&[]).await;
    engine.checkpoint().ensure().await.unwrap();
    let scope = Scope {
        bucket: ctx.bucket.clone(),
        source_prefix: "v/".into(),
        container: ctx.container.clone(),
        target_prefix: "t/".into(),
    };
    let stems = ["a", "é", "z", "😀", "～", "Z", "a/b", "ü/😀"];
    let mut model = std::collections::BTreeMap::<&str, u64>::new();
    let mut rng: u64 = 0x005e_ed0f_0a1c;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // Copies `key` from `v/` to `t/`, as a run with that mapping would.
    let copy = |key: &str| {
        let r = s3_blob_sync::engine::CopyRequest {
            source_prefix: "v/".into(),
            target_prefix: "t/".into(),
            ..crate::harness::objects::req(&ctx, key)
        };
        let engine = &engine;
        async move { engine.copy_object(&r).await.unwrap() }
    };
    for i in 0..32 {
        let stem = stems[next(stems.len() as u64) as usize];
        let key = format!("v/{stem}{i}");
        let blob = format!("t/{stem}{i}");
        match next(4) {
            0 => {
                ctx.put(&key, format!("same {i}")).await;
                copy(&key).await;
                *model.entry("matched").or_default() += 1;
            }
            1 => {
                ctx.put(&key, format!("never copied {i}")).await;
                *model.entry("missing").or_default() += 1;
            }
            2 => {
                foreign_blob(&ctx, &blob, b"no source").await;
                *model.entry("extra").or_default() += 1;
            }
            _ => {
                ctx.put(&key, format!("first {i}")).await;
                copy(&key).await;
                ctx.put(&key, format!("then longer {i}")).await;
                *model.entry("size-mismatch").or_default() += 1;
            }
        }
    }
    // Six folder markers in a row (skipped, no blob): a slice can start with a page of them.
    for i in 0..6 {
        ctx.put(&format!("v/m{i}/"), "").await;
    }
    let run = |limits: Limits| {
        let (engine, scope) = (&engine, &scope);
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let keep = async {
                let mut keys = Vec::new();
                while let Some(b) = rx.recv().await {
                    keys.extend(b);
                }
                keys
            };
            let (report, keys) = tokio::join!(verify_each(engine, scope, false, limits, tx), keep);
            (report.unwrap(), keys)
        }
    };
    // Three blobs a page, a window wider than any disorder: exactly the model.
    let (r, keys) = run(Limits {
        source_page: 1000,
        target_page: 3,
        window: 64,
    })
    .await;
    let n = |k: &str| model.get(k).copied().unwrap_or(0);
    let got = |k: &str| r.counts.get(k).copied().unwrap_or(0);
    assert_eq!(r.matched, n("matched"), "{r:?}");
    for k in ["missing", "extra", "size-mismatch"] {
        assert_eq!(got(k), n(k), "{k}: {r:?}");
    }
    assert_eq!(keys.len() as u64, n("missing") + n("size-mismatch"), "{keys:?}");
    assert_eq!(r.source_objects, n("matched") + n("missing") + n("size-mismatch"));
    assert_eq!(r.target_blobs, n("matched") + n("extra") + n("size-mismatch"));
    // A window of one: disorder beyond it is reported (missing and extra), never matched
    // wrongly, and every source object is accounted for once.
    let (small, _) = run(Limits {
        source_page: 1000,
        target_page: 2,
        window: 1,
    })
    .await;
    assert!(small.matched <= r.matched, "{small:?}");
    let source_side: u64 = ["missing", "size-mismatch", "checksum-mismatch", "metadata-mismatch"]
        .iter()
        .map(|k| small.counts.get(*k).copied().unwrap_or(0))
        .sum();
    assert_eq!(small.matched + source_side, small.source_objects, "{small:?}");
    assert_eq!(small.source_objects, r.source_objects);

    // In slices, as a verify run goes: stop at every clean point, save the place, and go on
    // from it with a new comparison (another process). Pages of three keys and two blobs;
    // every seed's tallies and differences must be those of the single pass.
    let limits = Limits {
        source_page: 3,
        target_page: 2,
        window: 64,
    };
    let mut place = s3_blob_sync::state::runs::verifying::VerifyPlace::default();
    let mut lines = Vec::new();
    let mut slices = 0;
    while !place.done {
        let mut v = Verifier::resume(&engine, &scope, false, limits, &place).unwrap();
        let mut found = Vec::new();
        loop {
            v.page().await.unwrap();
            found.extend(std::mem::take(&mut v.report.differences));
            if v.finished() || v.at_clean_point() {
                break;
            }
        }
        place = v.place();
        slices += 1;
        // Between slices the missing objects with ASCII names are repaired, as `repair` does:
        // their blobs land in the part of the target already compared, and may push a page's
        // tail into the next. What was found must not change. (A repaired non-ASCII name can
        // land ahead in the target's order and be listed again: decision 127.)
        let repairs = found
            .iter()
            .filter(|d| d.kind == DiffKind::Missing && d.key.as_deref().is_some_and(str::is_ascii));
        for d in repairs {
            copy(d.key.as_deref().unwrap()).await;
        }
        lines.extend(found);
    }
    let sliced: VerifyReport = serde_json::from_value(place.tallies.clone()).unwrap();
    assert!(slices > 3, "{slices} slices: the clean points were not found");
    assert_eq!(
        (
            sliced.matched,
            sliced.source_objects,
            sliced.target_blobs,
            sliced.skipped,
            &sliced.counts
        ),
        (r.matched, r.source_objects, r.target_blobs, 6, &r.counts),
        "{slices} slices: {sliced:?}"
    );
    let mut names: Vec<String> = lines.iter().map(|d| format!("{:?} {:?}", d.kind, d.blob)).collect();
    let mut once: Vec<String> = r
        .differences
        .iter()
        .map(|d| format!("{:?} {:?}", d.kind, d.blob))
        .collect();
    names.sort();
    once.sort();
    assert_eq!(names, once, "each difference once, as the single pass found it");
    ctx.cleanup().await;
}

/// The place a verify run saves after each slice is a write whose reply can be lost after it
/// landed, and whose retry then fails its condition against itself. The run must still end,
/// with the tallies of the CLI's single pass.
#[tokio::test]
async fn a_verify_run_whose_place_saves_lose_their_replies_still_counts_each_object_once() {
    let ctx = TestCtx::new("verifylost").await;
    for i in 0..9 {
        ctx.put(&format!("v/k{i}"), format!("content {i}")).await;
    }
    let src = format!("s3://{}/v/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/t/", ctx.container);
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--no-progress"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    for gone in ["t/k1", "t/k4", "t/k7"] {
        ctx.blob().delete(gone).await.unwrap();
    }
    foreign_blob(&ctx, "t/k5x", b"stray").await;
    let (_, out) = run_binary_async(&["verify", &src, &dst, "--json"], &ctx.env).await;
    let once = json_line(&out);
    assert_eq!(once["counts"], json!({"missing": 3, "extra": 1}), "{once}");

    let tables = Proxy::start("http://127.0.0.1:10002").await;
    let cs = TestCtx::connection_string(None, None, Some(&tables.url));
    let env = ctx.env_with(&[
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("SYNC_VERIFY_SLICE_SECS", "0"),
        ("SYNC_LIST_PAGE_KEYS", "2"),
        ("SYNC_PRUNE_PAGE", "3"),
    ]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    // The run service starts (and writes its own rows) before the fault is armed.
    let (status, _, _) = http_invoke(&h, "ListRuns", &http_payload("GET", "/api/runs", json!({}), None)).await;
    assert_eq!(status, 200);
    // The place's first If-Match update (the second slice's; its body names the slice) lands
    // and loses its reply, twice: each retry meets its own write (412).
    tables.faults().drop_replies_to.arm(r#""Slices":"2""#, 2);
    let body = json!({"source": {"bucket": ctx.bucket, "prefix": "v/"}, "target": {"container": ctx.container, "prefix": "t/"}});
    // Delivered once each: a slice that took its own landed save for another's would stop
    // the chain, and the run would never end.
    let (_, ended) = verify_run(&h, &host, &body, false).await;
    assert_eq!(tables.faults().drop_replies_to.left(), 0, "four replies were dropped");
    let v = &ended["verify"];
    assert_eq!(ended["state"], "PartiallySucceeded", "{ended}");
    assert_eq!(
        (&v["counts"], &v["matched"], &v["sourceObjects"], &v["targetBlobs"]),
        (
            &once["counts"],
            &once["matched"],
            &once["sourceObjects"],
            &once["targetBlobs"]
        ),
        "{ended}"
    );
    assert!(v["slices"].as_u64().unwrap() >= 4, "{ended}");
    ctx.cleanup().await;
}

/// A verify run cancelled after its first slice compares nothing more: its next message finds
/// it ended, and its tallies stay those of the one slice.
#[tokio::test]
async fn a_cancelled_verify_run_stops_at_its_next_slice() {
    let ctx = TestCtx::new("verifycancel").await;
    for i in 0..6 {
        ctx.put(&format!("v/k{i}"), format!("content {i}")).await;
    }
    let env = ctx.env_with(&[("SYNC_VERIFY_SLICE_SECS", "0"), ("SYNC_LIST_PAGE_KEYS", "2")]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let body = json!({"source": {"bucket": ctx.bucket, "prefix": "v/"}, "target": {"container": ctx.container, "prefix": "t/"}});
    let (status, _, rep) = http_invoke(
        &h,
        "Verify",
        &http_payload("POST", "/api/verify", json!({}), Some(&body.to_string())),
    )
    .await;
    assert_eq!(status, 202, "{rep}");
    let id = rep["runId"].as_str().unwrap().to_string();
    let first = host.next_list(VISIBILITY).await;
    assert_eq!(host.deliver(&h, "ListPage", &host.list, first).await, 200);
    let cancel = http_payload("POST", &format!("/api/runs/{id}/cancel"), json!({"id": id}), None);
    let (status, _, s) = http_invoke(&h, "CancelRun", &cancel).await;
    assert_eq!((status, s["state"].as_str()), (200, Some("Cancelled")), "{s}");
    host.drive_until(&h, Duration::from_secs(30), || async { true }).await;
    let get = http_payload("GET", &format!("/api/runs/{id}"), json!({"id": id}), None);
    let (status, _, s) = http_invoke(&h, "GetRun", &get).await;
    assert_eq!((status, s["state"].as_str()), (200, Some("Cancelled")), "{s}");
    let v = &s["verify"];
    assert_eq!(
        (&v["slices"], &v["sourceObjects"], &v["done"]),
        (&json!(1), &json!(2), &json!(false)),
        "one slice of two keys, then nothing: {s}"
    );
    ctx.cleanup().await;
}
