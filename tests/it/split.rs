//! Objects bigger than one invocation's budget: split into block ranges, one `copy-objects`
//! message each, staged by separate invocations of the real handler, committed once and
//! verified; a crash in the middle resumes from the ranges already recorded.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;

use serde_json::{json, Value};

use crate::harness::handler::{queue_payload, HandlerProc};
use crate::harness::host::{Host, VISIBILITY};
use crate::harness::objects::{assert_blob, multipart};
use crate::harness::proxy::Proxy;
use crate::harness::{bytes, TestCtx};
use s3_blob_sync::checksum;
use s3_blob_sync::engine::blocks::BlockLayout;
use s3_blob_sync::state::checkpoint::{ObjectRecord, Outcome};

const MIB: usize = 1024 * 1024;

async fn record(ctx: &TestCtx, key: &str) -> Option<ObjectRecord> {
    let engine = ctx.engine(&[]).await;
    engine
        .checkpoint()
        .get(&ctx.bucket, key, &ctx.target_id())
        .await
        .unwrap()
        .map(|v| v.record)
}

/// RowKeys left in the staging partitions of the checkpoint table.
async fn staging_rows(ctx: &TestCtx) -> Vec<String> {
    let rows = ctx.table().query_all(None).await.unwrap();
    rows.iter()
        .filter(|e| e.partition_key.ends_with("~staging"))
        .map(|e| e.row_key.clone())
        .collect()
}

/// How often the double copied each block (Put Block From URL), by block id.
fn block_copies(double: &Proxy) -> HashMap<Vec<u8>, usize> {
    let mut out = HashMap::new();
    for line in double.stats().log.lock().unwrap().iter() {
        let Some(query) = line.split(' ').nth(1).and_then(|p| p.split_once('?')).map(|(_, q)| q) else {
            continue;
        };
        let pairs: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        if let (Some("block"), Some(id)) = (pairs.get("comp").map(String::as_str), pairs.get("blockid")) {
            let id = base64::engine::general_purpose::STANDARD.decode(id).unwrap();
            *out.entry(id).or_default() += 1;
        }
    }
    out
}

fn count(logs: &str, needle: &str) -> usize {
    logs.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn a_200_mib_object_fans_out_into_ranges_then_commits_once_verified() {
    let ctx = TestCtx::new("split").await;
    let parts: Vec<Vec<u8>> = (0..10).map(|i| bytes(20 * MIB, 300 + i)).collect();
    let whole = parts.concat();
    multipart(&ctx, "big/200mib.bin", &parts, true).await;

    // 8 MiB blocks, 32 MiB a invocation: 25 blocks in 7 ranges of at most 4 blocks.
    let env = ctx.env_with(&[("SYNC_BLOCK_SIZE_MIB", "8"), ("SYNC_INVOCATION_MIB", "32")]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    host.copy
        .send(
            &json!({"bucket": ctx.bucket, "key": "big/200mib.bin"}).to_string(),
            None,
        )
        .await
        .unwrap();
    host.drive_until(&h, Duration::from_secs(240), || async {
        record(&ctx, "big/200mib.bin").await.map(|r| r.outcome) == Some(Outcome::Copied)
    })
    .await;

    let logs = h.logs();
    let splits: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("object split into ranges"))
        .collect();
    assert_eq!(splits.len(), 1, "one split");
    assert!(splits[0].contains("\"ranges\":7"), "{}", splits[0]);
    // Ranges that finish together may each find every range recorded: one commits, the
    // others find its blob and report no transfer.
    assert!(count(&logs, "range staged") >= 1, "ranges staged without committing");
    assert_eq!(count(&logs, "\"outcome\":\"copied\""), 1, "one commit");
    assert!(
        host.copy_invocations.load(Ordering::SeqCst) >= 8,
        "the planner plus one invocation a range"
    );
    let rec = record(&ctx, "big/200mib.bin").await.unwrap();
    assert_eq!(rec.verified.map(|v| v.as_str()), Some("crc64nvme"), "{rec:?}");
    assert_eq!(rec.path.map(|p| p.as_str()), Some("streamed"));
    assert_eq!(rec.size, Some(whole.len() as u64));
    let props = ctx.blob().properties("big/200mib.bin").await.unwrap().unwrap();
    assert_eq!(
        props.metadata["s3sync_crc64nvme"],
        checksum::to_s3(checksum::crc64(&whole))
    );
    assert_blob(&ctx, "big/200mib.bin", &whole).await;
    let left = staging_rows(&ctx).await;
    assert!(
        left.is_empty(),
        "staging rows left after the commit: {left:?}\n{}",
        crate::harness::host::tail(&logs)
    );
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_crash_after_half_the_ranges_resumes_without_restaging_them() {
    let ctx = TestCtx::new("resume").await;
    let parts: Vec<Vec<u8>> = (0..6).map(|i| bytes(8 * MIB, 400 + i)).collect();
    let whole = parts.concat();
    multipart(&ctx, "resume.bin", &parts, true).await;

    // Server-side through the copy-from-URL double: 4 MiB blocks, 2 a range, 6 ranges.
    let double = Proxy::blob_double().await;
    let cs = ctx.connection_string_via(&double.url);
    let env = ctx.env_with(&[
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("SYNC_COPY_PATH", "server-side"),
        ("SYNC_BLOCK_SIZE_MIB", "4"),
        ("SYNC_INVOCATION_MIB", "8"),
    ]);
    let mut first = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let planner = json!({"bucket": ctx.bucket, "key": "resume.bin"});
    let (status, out) = first.invoke("CopyObject", &queue_payload(&planner, 1)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["ReturnValue"]["outcome"], "split", "{out}");
    assert_eq!(out["ReturnValue"]["ranges"], 6, "{out}");

    let items = host.copy.receive(32, VISIBILITY).await.unwrap();
    assert_eq!(items.len(), 6, "one message a range");
    let msgs: Vec<Value> = items.iter().map(|i| serde_json::from_str(&i.text).unwrap()).collect();
    let mut indexes: Vec<u64> = msgs.iter().map(|m| m["part"]["index"].as_u64().unwrap()).collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1, 2, 3, 4, 5]);

    // Three ranges are staged and recorded, but their acknowledgements never reach the
    // queue (the host dies first), so they come back.
    for m in &msgs[..3] {
        let (status, out) = first.invoke("CopyObject", &queue_payload(m, 1)).await;
        assert_eq!(
            (status, out["ReturnValue"]["outcome"].as_str()),
            (200, Some("staged")),
            "{out}"
        );
    }
    // The fourth is killed in the middle of its block copies.
    double.faults().delay_ms.store(1500, Ordering::SeqCst);
    let port = first.port;
    let m4 = msgs[3].clone();
    let crashing = tokio::spawn(async move {
        let _ = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("http://127.0.0.1:{port}/CopyObject"))
            .header("content-type", "application/json")
            .body(queue_payload(&m4, 1).to_string())
            .send()
            .await;
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    first.kill();
    let _ = crashing.await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    double.faults().delay_ms.store(0, Ordering::SeqCst);
    let before = double.stats().copy_from_url.load(Ordering::SeqCst);
    assert!(before >= 6, "three ranges of two blocks were copied: {before}");
    assert!(
        ctx.blob().properties("resume.bin").await.unwrap().is_none(),
        "nothing is committed before every range is recorded"
    );

    // The leases run out (shortened here) and a new host works the queue to the end.
    for item in &items {
        host.copy.release(item, Duration::ZERO).await.unwrap();
    }
    let second = HandlerProc::start(&env).await;
    // Done when the row says the blob holds the object: Copied, or NoTransferNeeded when a
    // twin delivery that lost the commit race (409) started over and found the blob current
    // after the winner's row was written.
    host.drive_until(&second, Duration::from_secs(120), || async {
        matches!(
            record(&ctx, "resume.bin").await.map(|r| r.outcome),
            Some(Outcome::Copied | Outcome::NoTransferNeeded)
        )
    })
    .await;
    let after = double.stats().copy_from_url.load(Ordering::SeqCst);
    // By block: the three recorded ranges were copied once in all, before the crash; the
    // others were copied (again) after it.
    let head = ctx.s3.head(&ctx.bucket, "resume.bin").await.unwrap().unwrap();
    let layout = BlockLayout::new(head.size, &head.etag, 4 * MIB as u64);
    assert_eq!(layout.count(), 12);
    let copies = block_copies(&double);
    let recorded: Vec<u64> = msgs[..3]
        .iter()
        .flat_map(|m| {
            let r = m["part"]["index"].as_u64().unwrap();
            [2 * r, 2 * r + 1]
        })
        .collect();
    for i in 0..layout.count() {
        let n = copies.get(&layout.id(i)).copied().unwrap_or(0);
        if recorded.contains(&i) {
            assert_eq!(n, 1, "block {i} of a recorded range was staged again");
        } else {
            assert!(n >= 1, "block {i} was never staged");
        }
    }
    assert!(
        after - before >= 6,
        "the unrecorded ranges were staged after the restart"
    );
    let logs = second.logs();
    assert_eq!(
        count(&logs, "\"outcome\":\"already_staged\""),
        3,
        "{}",
        crate::harness::host::tail(&logs)
    );
    let rec = record(&ctx, "resume.bin").await.unwrap();
    assert_eq!(
        (rec.verified.map(|v| v.as_str()), rec.path.map(|p| p.as_str())),
        (Some("crc64nvme"), Some("server-side")),
        "{rec:?}"
    );
    assert_blob(&ctx, "resume.bin", &whole).await;
    assert_eq!(staging_rows(&ctx).await, Vec::<String>::new());

    // A range message delivered again after the commit changes nothing.
    let (status, out) = second.invoke("CopyObject", &queue_payload(&msgs[0], 2)).await;
    assert_eq!(
        (status, out["ReturnValue"]["outcome"].as_str()),
        (200, Some("no_transfer_needed")),
        "{out}"
    );
    assert_eq!(double.stats().copy_from_url.load(Ordering::SeqCst), after);
    ctx.cleanup().await;
}

/// The request for range `index` of the split of `r`'s object planned for `etag`.
fn part(r: &s3_blob_sync::engine::CopyRequest, etag: &str, index: u32) -> s3_blob_sync::engine::CopyRequest {
    let mut p = r.clone();
    p.part = Some(s3_blob_sync::model::PartRef {
        etag: etag.into(),
        index,
    });
    p
}

/// Drives a split copy in this process: every unstaged range of `plan`, in order.
async fn stage_all(
    engine: &s3_blob_sync::engine::Engine,
    req: &s3_blob_sync::engine::CopyRequest,
    plan: &s3_blob_sync::engine::split::SplitPlan,
    budget: u64,
) -> s3_blob_sync::engine::Step {
    let mut last = None;
    for &index in &plan.unstaged {
        last = Some(
            engine
                .copy_step(&part(req, &plan.etag, index), Some(budget))
                .await
                .unwrap(),
        );
    }
    last.expect("a plan has ranges")
}

#[tokio::test]
async fn a_split_whose_source_changed_or_whose_blocks_are_gone_starts_over() {
    use s3_blob_sync::engine::Step;
    let ctx = TestCtx::new("splitredo").await;
    let engine = ctx
        .engine(&[("SYNC_COPY_PATH", "streamed"), ("SYNC_BLOCK_SIZE_MIB", "1")])
        .await;
    let budget = 4 * MIB as u64;

    // 1. The source changes after one range was staged: the next range's pinned read loses,
    // and instead of failing until poisoned the plan is dropped and the new version planned.
    let v1 = bytes(12 * MIB, 41);
    ctx.put("changing", v1).await;
    let r = crate::harness::objects::req(&ctx, "changing");
    let Step::Split(plan) = engine.copy_step(&r, Some(budget)).await.unwrap() else {
        panic!("12 MiB over a 4 MiB budget splits")
    };
    assert_eq!(plan.ranges, 3);
    assert!(matches!(
        engine.copy_step(&part(&r, &plan.etag, 0), Some(budget)).await.unwrap(),
        Step::Staged { .. }
    ));
    let v2 = bytes(9 * MIB, 42);
    ctx.put("changing", v2.clone()).await;
    let step = engine.copy_step(&part(&r, &plan.etag, 1), Some(budget)).await.unwrap();
    let Step::Split(replan) = step else {
        panic!("expected a new plan for the new version, got {step:?}")
    };
    assert_ne!(replan.etag, plan.etag);
    assert!(replan.claimed && replan.ranges == 3, "{replan:?}");
    let done = stage_all(&engine, &r, &replan, budget).await;
    assert!(
        matches!(done, Step::Done(ref rep) if rep.outcome == Outcome::Copied),
        "{done:?}"
    );
    assert_blob(&ctx, "changing", &v2).await;
    assert!(staging_rows(&ctx).await.is_empty(), "{:?}", staging_rows(&ctx).await);

    // 2. The staged blocks vanish (any commit to the name discards uncommitted blocks; so does
    // Azure after 7 days): the last range's commit fails with InvalidBlockList, and the
    // object starts over instead of failing the same way forever.
    let v3 = bytes(12 * MIB, 43);
    ctx.put("vanishing", v3.clone()).await;
    let r = crate::harness::objects::req(&ctx, "vanishing");
    let Step::Split(plan) = engine.copy_step(&r, Some(budget)).await.unwrap() else {
        panic!("splits")
    };
    for i in 0..2 {
        engine.copy_step(&part(&r, &plan.etag, i), Some(budget)).await.unwrap();
    }
    let b = ctx.blob();
    let data = bytes::Bytes::from_static(b"someone else");
    // Another writer's block list (block ids of a blob all have one length): committing it
    // discards every uncommitted block of the name.
    let id_len = BlockLayout::new(12 * MIB as u64, &plan.etag, MIB as u64).id(0).len();
    let other = vec![b'z'; id_len];
    b.stage_block("vanishing", &other, data.clone(), checksum::crc64(&data))
        .await
        .unwrap();
    b.commit_blocks(
        "vanishing",
        &[other],
        &Default::default(),
        &s3_blob_sync::azure::blob::WriteCondition::Always,
    )
    .await
    .unwrap();
    let step = engine.copy_step(&part(&r, &plan.etag, 2), Some(budget)).await.unwrap();
    let Step::Split(replan) = step else {
        panic!("expected the object to start over, got {step:?}")
    };
    assert!(replan.claimed && replan.staged == 0, "{replan:?}");
    let done = stage_all(&engine, &r, &replan, budget).await;
    assert!(
        matches!(done, Step::Done(ref rep) if rep.outcome == Outcome::Copied),
        "{done:?}"
    );
    assert_blob(&ctx, "vanishing", &v3).await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_plan_insert_whose_reply_was_lost_is_still_this_planners() {
    use s3_blob_sync::engine::Step;
    let ctx = TestCtx::new("lostplan").await;
    ctx.put("big", bytes(12 * MIB, 51)).await;
    // The checkpoint table through a proxy that forwards the plan's insert, then drops the
    // reply: the insert landed, the planner's retry meets its own row (409).
    let tables = Proxy::start("http://127.0.0.1:10002").await;
    let cs = crate::harness::TestCtx::connection_string(None, None, Some(&tables.url));
    let engine = ctx
        .engine(&[
            ("AZURE_STORAGE_CONNECTION_STRING", &cs),
            ("SYNC_COPY_PATH", "streamed"),
            ("SYNC_BLOCK_SIZE_MIB", "1"),
        ])
        .await;
    let insert = format!("POST /devstoreaccount1/{}", ctx.table);
    tables.faults().drop_replies_to.arm(insert.clone(), 1);
    let budget = 4 * MIB as u64;
    let r = crate::harness::objects::req(&ctx, "big");
    let Step::Split(plan) = engine.copy_step(&r, Some(budget)).await.unwrap() else {
        panic!("splits")
    };
    assert!(
        tables.count(&insert) >= 2,
        "the insert was retried after its lost reply"
    );
    // Its own plan: claimed, every range to send. (Taken for another planner's, it sent
    // nothing, the message was acknowledged, and the object was never copied.)
    assert!(plan.claimed, "{plan:?}");
    assert_eq!(plan.unstaged, vec![0, 1, 2]);
    let done = stage_all(&engine, &r, &plan, budget).await;
    assert!(
        matches!(done, Step::Done(ref rep) if rep.outcome == Outcome::Copied),
        "{done:?}"
    );
    assert_blob(&ctx, "big", &bytes(12 * MIB, 51)).await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_late_failing_range_of_a_dead_plan_leaves_the_next_versions_plan_alone() {
    use s3_blob_sync::engine::Step;
    let ctx = TestCtx::new("splitlate").await;
    let double = Proxy::blob_double().await;
    let engine = std::sync::Arc::new(
        crate::harness::objects::server_side_engine(&ctx, &double, &[("SYNC_BLOCK_SIZE_MIB", "1")]).await,
    );
    let budget = 4 * MIB as u64;
    ctx.put("k", bytes(12 * MIB, 61)).await;
    let r = crate::harness::objects::req(&ctx, "k");
    let Step::Split(v1) = engine.copy_step(&r, Some(budget)).await.unwrap() else {
        panic!("splits")
    };
    // Y stages range 2 of v1; "Azure" holds one of its reads.
    double.faults().hold_copies.store(1, Ordering::SeqCst);
    let y = {
        let (engine, p) = (engine.clone(), part(&r, &v1.etag, 2));
        tokio::spawn(async move { engine.copy_step(&p, Some(budget)).await })
    };
    double.until_held(1).await;
    // Meanwhile v2 lands; X's range of v1 fails its pinned read and plans v2, and one range of
    // v2 is staged.
    ctx.put("k", bytes(11 * MIB, 62)).await;
    let Step::Split(v2) = engine.copy_step(&part(&r, &v1.etag, 1), Some(budget)).await.unwrap() else {
        panic!("X plans the new version")
    };
    assert!(v2.claimed && v2.etag != v1.etag, "{v2:?}");
    assert!(matches!(
        engine.copy_step(&part(&r, &v2.etag, 0), Some(budget)).await.unwrap(),
        Step::Staged { .. }
    ));
    // Y's held read now fails too: it must drop only v1, not v2's plan and staged range.
    double.release(1);
    let late = y.await.unwrap().unwrap();
    assert!(
        matches!(late, Step::Split(ref p) if p.etag == v2.etag && !p.claimed && p.staged == 1),
        "the next version's plan was dropped or claimed again: {late:?}"
    );
    ctx.cleanup().await;
}

/// Rows and split plans belong to their target blob (decisions 99). Runs that copy the same
/// keys into one container under other target prefixes keep their own checkpoint rows (a
/// re-run of each copies nothing) and their own split plans (a cancelled run's plan for
/// `a/big.bin` is never taken over by a run into `b/`). A run whose object's split is held by
/// an event's copy looks again until the blob lands, and counts it then.
#[tokio::test]
async fn rows_and_plans_belong_to_their_blob_and_a_run_waits_for_a_held_split() {
    use crate::harness::runs::{c, finish, start_run};
    let ctx = TestCtx::new("pertarget").await;
    for k in ["s/one", "s/two"] {
        ctx.put(k, format!("body of {k}")).await;
    }
    let big = bytes(20 * MIB, 99);
    ctx.put("p/big.bin", big.clone()).await;
    ctx.put("q/held.bin", big.clone()).await;
    // 8 MiB blocks, 8 MiB an invocation: a 20 MiB object is three ranges.
    let env = ctx.env_with(&[("SYNC_BLOCK_SIZE_MIB", "8"), ("SYNC_INVOCATION_MIB", "8")]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let run = |from: &str, to: &str| json!({"source": {"bucket": ctx.bucket, "prefix": from}, "target": {"container": ctx.container, "prefix": to}});

    // Rows: s/ into a/, then into b/, then into a/ again, which copies nothing.
    for to in ["a/", "b/"] {
        let id = start_run(&h, &run("s/", to)).await;
        let s = finish(&host, &h, &id, Duration::from_secs(60)).await;
        assert_eq!(
            (s["state"].as_str(), c(&s, "transferred")),
            (Some("Succeeded"), 2),
            "{s}"
        );
    }
    let id = start_run(&h, &run("s/", "a/")).await;
    let s = finish(&host, &h, &id, Duration::from_secs(60)).await;
    assert_eq!(
        (c(&s, "transferred"), c(&s, "noTransferNeeded")),
        (0, 2),
        "a/'s rows were lost to b/'s: {s}"
    );

    // Plans: p/ into a/ is planned, then cancelled before any range is staged...
    let a = start_run(&h, &run("p/", "a/")).await;
    let page = host.next_list(Duration::from_secs(60)).await;
    host.redo_page(&h, &page).await;
    host.deliver_copies(&h, host.take_copies(1).await).await;
    let (status, _, reply) = crate::harness::host::http_invoke(
        &h,
        "CancelRun",
        &crate::harness::host::http_payload("POST", &format!("/api/runs/{a}/cancel"), json!({"id": a}), None),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    // ...its three range messages are dropped as the cancelled run's...
    host.deliver_copies(&h, host.take_copies(3).await).await;
    // ...and p/ into b/ makes its own plan and its own blob, leaving a/ alone.
    let b = start_run(&h, &run("p/", "b/")).await;
    let s = finish(&host, &h, &b, Duration::from_secs(120)).await;
    assert_eq!(
        (s["state"].as_str(), c(&s, "transferred")),
        (Some("Succeeded"), 1),
        "{s}"
    );
    crate::harness::objects::assert_blob(&ctx, "b/big.bin", &big).await;
    assert!(
        ctx.blob().properties("a/big.bin").await.unwrap().is_none(),
        "a/'s plan was committed"
    );

    // The ended run's last look for its blob may still be queued: let it go first (the
    // count includes messages not yet visible).
    host.drive_until(&h, Duration::from_secs(30), || async {
        host.copy.approximate_count().await.unwrap() == 0
    })
    .await;

    // A held split: an event's copy of q/held.bin plans it and sends its ranges (held here).
    host.copy
        .send(
            &json!({"bucket": ctx.bucket, "key": "q/held.bin", "event": "ObjectCreated:Put"}).to_string(),
            None,
        )
        .await
        .unwrap();
    host.deliver_copies(&h, host.take_copies(1).await).await;
    let ranges = host.take_copies(3).await;
    // A run over the same blob finds the plan in the event's hands...
    let c_run = start_run(&h, &run("q/", "q/")).await;
    let page = host.next_list(Duration::from_secs(60)).await;
    host.redo_page(&h, &page).await;
    let copy = host.take_copies(1).await.remove(0);
    let msg: Value = serde_json::from_str(&copy.text).unwrap();
    let (status, reply) = h.invoke("CopyObject", &queue_payload(&msg, 1)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["ReturnValue"]["watching"], true,
        "the run's copy does not wait: {reply}"
    );
    host.copy.delete(&copy).await.unwrap();
    // ...the event's ranges land and commit; the run counts the blob when it looks again.
    host.deliver_copies(&h, ranges).await;
    let s = finish(&host, &h, &c_run, Duration::from_secs(60)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!(c(&s, "transferred") + c(&s, "noTransferNeeded"), 1, "{s}");
    crate::harness::objects::assert_blob(&ctx, "q/held.bin", &big).await;
    ctx.cleanup().await;
}
