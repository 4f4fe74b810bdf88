//! Bulk runs driven only through the invoke protocol: the test plays the Functions host
//! (HTTP triggers, and the `list-pages` / `copy-objects` queue triggers on Azurite) against
//! the real handler binary, with moto as the source.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::handler::{queue_payload, HandlerProc};
use crate::harness::host::{http_invoke, http_payload, Host};
use crate::harness::proxy::Proxy;
use crate::harness::runs::{body, c, finish, get_run, start_run};
use crate::harness::TestCtx;
use s3_blob_sync::azure::queue::WorkItem;

#[tokio::test]
async fn five_thousand_objects_then_unchanged_rerun_then_ten_changes() {
    let ctx = TestCtx::new("bulk").await;
    let sizes = [0usize, 1, 100, 1000, 4096, 20000];
    let items: Vec<(String, Vec<u8>)> = (0..5000)
        .map(|i| {
            let key = format!("big/{}/{}/obj-{i:05}.bin", i % 10, i % 7);
            (key, crate::harness::bytes(sizes[i % sizes.len()], i as u64))
        })
        .chain(
            ["big/0/", "big/1/2/", "big/9/"]
                .iter()
                .map(|k| (k.to_string(), Vec::new())),
        )
        .collect();
    let total_bytes: u64 = items.iter().map(|(_, v)| v.len() as u64).sum();
    ctx.put_many(items).await;
    let h = HandlerProc::start(&ctx.env).await;
    let mut host = Host::new(&ctx).await;
    host.concurrency = 24;
    let spec = body(
        &ctx,
        json!({"source": {"bucket": ctx.bucket, "prefix": "big/"}, "target": {"container": ctx.container, "prefix": "m/"}}),
    );

    let id = start_run(&h, &spec).await;
    let s = finish(&host, &h, &id, Duration::from_secs(600)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!(c(&s, "scanned"), 5003);
    assert_eq!(c(&s, "excluded"), 3, "folder markers");
    assert_eq!(c(&s, "transferred"), 5000);
    assert_eq!(c(&s, "transferredBytes"), total_bytes);
    assert_eq!(c(&s, "failed") + c(&s, "noTransferNeeded") + c(&s, "unsupported"), 0);
    assert_eq!(c(&s, "transferred") + c(&s, "excluded"), c(&s, "scanned"));
    assert_eq!(ctx.blob().list("m/").await.unwrap().len(), 5000);
    let copies_first = host.copy_invocations.load(Ordering::SeqCst);
    assert!(copies_first >= 5000);

    // Unchanged: listings only, no copy message at all.
    let t = Instant::now();
    let id2 = start_run(&h, &spec).await;
    let s2 = finish(&host, &h, &id2, Duration::from_secs(300)).await;
    let rerun = t.elapsed();
    assert_eq!(s2["state"], "Succeeded", "{s2}");
    assert_eq!(c(&s2, "noTransferNeeded"), 5000, "{s2}");
    assert_eq!(c(&s2, "transferred"), 0);
    assert_eq!(
        host.copy_invocations.load(Ordering::SeqCst),
        copies_first,
        "an unchanged re-run enqueued copies"
    );
    eprintln!(
        "MEASURE unchanged re-run of 5,000 objects through the invoke protocol: {:.2} s ({} ListPage invocations)",
        rerun.as_secs_f64(),
        host.list_invocations.load(Ordering::SeqCst)
    );

    // Ten changed objects: exactly ten copies.
    for i in (0..5000).step_by(500) {
        ctx.put(
            &format!("big/{}/{}/obj-{i:05}.bin", i % 10, i % 7),
            format!("changed {i}"),
        )
        .await;
    }
    let id3 = start_run(&h, &spec).await;
    let s3 = finish(&host, &h, &id3, Duration::from_secs(300)).await;
    assert_eq!(c(&s3, "transferred"), 10, "{s3}");
    assert_eq!(c(&s3, "noTransferNeeded"), 4990);
    assert_eq!(host.copy_invocations.load(Ordering::SeqCst), copies_first + 10);
    let changed = ctx.blob().read("m/0/0/obj-00000.bin").await.unwrap();
    assert_eq!(&changed[..], b"changed 0");
    ctx.cleanup().await;
}

#[tokio::test]
async fn lister_killed_between_pages_still_counts_exactly() {
    let ctx = TestCtx::new("killlist").await;
    let items: Vec<(String, Vec<u8>)> = (0..2100).map(|i| (format!("k/{i:05}"), vec![b'x'; i % 50])).collect();
    ctx.put_many(items).await;
    let mut a = HandlerProc::start(&ctx.env).await;
    let host = Host::new(&ctx).await;
    // One shard: this is the page chain of one lister (shards: `listing.rs`).
    let id = start_run(&a, &body(&ctx, json!({"listShards": 1}))).await;

    // Page 0 completes; page 1's lister is killed mid-invocation; its message is not acked.
    let page0 = host.list.receive(1, Duration::from_secs(30)).await.unwrap().remove(0);
    assert_eq!(host.deliver(&a, "ListPage", &host.list, page0).await, 200);
    let page1 = host.next_list(Duration::from_secs(2)).await;
    assert!(page1.text.contains("\"page\":1"), "{}", page1.text);
    let payload = queue_payload(&serde_json::from_str(&page1.text).unwrap(), 1);
    let port = a.port;
    let call = tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/ListPage"))
            .header("content-type", "application/json")
            .body(payload.to_string())
            .send()
            .await;
    });
    tokio::time::sleep(Duration::from_millis(40)).await;
    a.kill();
    let _ = call.await;

    // A new handler picks up the redelivered message and the run completes.
    let b = HandlerProc::start(&ctx.env).await;
    let s = finish(&host, &b, &id, Duration::from_secs(300)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!(c(&s, "scanned"), 2100, "{s}");
    assert_eq!(c(&s, "transferred"), 2100, "{s}");

    // A late duplicate of a page that is long done changes nothing.
    let stale = json!({"kind": "page", "runId": id, "page": 0});
    let (status, reply) = b.invoke("ListPage", &queue_payload(&stale, 1)).await;
    assert_eq!(status, 200, "{reply}");
    let (_, again) = get_run(&b, &id).await;
    assert_eq!(again["counters"], s["counters"]);
    ctx.cleanup().await;
}

/// Azurite's queue and table endpoints, for [`proxied_handler`].
const QUEUES: &str = "http://127.0.0.1:10001";
const TABLES: &str = "http://127.0.0.1:10002";

/// A handler whose calls to one Azurite endpoint ([`QUEUES`] or [`TABLES`]) go through a
/// fresh fault proxy, and the simulated host, which reaches Azurite directly.
async fn proxied_handler(ctx: &TestCtx, endpoint: &str) -> (Proxy, HandlerProc, Host) {
    let proxy = Proxy::start(endpoint).await;
    let via = Some(proxy.url.as_str());
    let cs = match endpoint {
        QUEUES => crate::harness::TestCtx::connection_string(None, via, None),
        TABLES => crate::harness::TestCtx::connection_string(None, None, via),
        other => panic!("no proxied handler for {other}"),
    };
    let h = HandlerProc::start(&ctx.env_with(&[("AZURE_STORAGE_CONNECTION_STRING", &cs)])).await;
    (proxy, h, Host::new(ctx).await)
}

/// Starts a run on a handler whose tables go through a proxy, and makes the first attempt at
/// its first page send its copies and die before it saves the page (the save is reset).
/// Returns the proxy, the handler, the host, the run id and the page's message (still queued).
async fn first_attempt_dies(ctx: &TestCtx) -> (Proxy, HandlerProc, Host, String, WorkItem) {
    let (tables, h, host) = proxied_handler(ctx, TABLES).await;
    let id = start_run(&h, &body(ctx, json!({}))).await;
    // The page's save is the only write that carries the lister's `Page`.
    tables.faults().reset_writes_to.arm("Page@odata.type", 1000);
    let page0 = host.list.receive(1, Duration::from_secs(30)).await.unwrap().remove(0);
    let payload = queue_payload(&serde_json::from_str(&page0.text).unwrap(), 1);
    let (status, reply) = h.invoke("ListPage", &payload).await;
    assert!(status >= 500, "the page's save was meant to fail: {status} {reply}");
    tables.faults().reset_writes_to.disarm();
    (tables, h, host, id, page0)
}

#[tokio::test]
async fn a_page_redone_after_its_copies_ran_counts_each_key_once_and_waits_for_every_copy() {
    let ctx = TestCtx::new("redo").await;
    let items: Vec<(String, Vec<u8>)> = (0..600)
        .map(|i| (format!("r/{i:04}"), vec![b'r'; 1 + i % 40]))
        .collect();
    ctx.put_many(items).await;
    let (_tables, h, host, id, page0) = first_attempt_dies(&ctx).await;

    // Half of the first attempt's copies run; the others wait in the queue.
    let first = host.take_copies(300).await;
    host.deliver_copies(&h, first).await;

    // The page is redone (its message came back): 300 keys now look current.
    host.redo_page(&h, &page0).await;
    // A settle check right now must not end the run: 300 copies are still to come.
    let check = host.next_list(Duration::from_secs(30)).await;
    assert!(check.text.contains("check"), "{}", check.text);
    host.deliver(&h, "ListPage", &host.list, check).await;
    let (status, s) = get_run(&h, &id).await;
    assert_eq!(status, 202, "the run ended before its copies did: {s}");
    assert!(s["pendingCopies"].as_u64().unwrap() >= 300, "{s}");

    let s = finish(&host, &h, &id, Duration::from_secs(300)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!(c(&s, "scanned"), 600, "{s}");
    assert_eq!(c(&s, "transferred"), 600, "each key once: {s}");
    assert_eq!(c(&s, "noTransferNeeded"), 0, "a key counted twice: {s}");
    assert_eq!(ctx.blob().list("").await.unwrap().len(), 600);
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_page_whose_keys_change_between_attempts_still_counts_exactly() {
    let ctx = TestCtx::new("replan").await;
    ctx.put_many((0..40).map(|i| (format!("p/{i:03}"), vec![b'p'; 3 + i])).collect())
        .await;
    // The first attempt sends its 40 copies and dies before it saves the page.
    let (_tables, h, host, id, page0) = first_attempt_dies(&ctx).await;

    // Before the redo, the page's keys change: one is deleted, another created in its range.
    ctx.s3
        .client()
        .delete_object()
        .bucket(&ctx.bucket)
        .key("p/005")
        .send()
        .await
        .unwrap();
    ctx.put("p/005a", "new in the page").await;
    // The first attempt's copies run (p/005's finds nothing), then the page is redone.
    let first = host.take_copies(40).await;
    host.deliver_copies(&h, first).await;
    host.redo_page(&h, &page0).await;

    // Every queued message is delivered before `finish` returns, so the counters are final.
    let s = finish(&host, &h, &id, Duration::from_secs(120)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!(
        crate::harness::accounted(&s),
        c(&s, "scanned"),
        "a copy of a key the redo listed anew was counted outside the page: {s}"
    );
    assert_eq!(c(&s, "scanned"), 40, "{s}");
    assert_eq!(c(&s, "transferred"), 39, "{s}");
    assert_eq!(s["counters"]["vanished"].as_u64(), Some(1), "{s}");
    let store = s3_blob_sync::state::runs::store::RunStore::new(ctx.runs_table(&[]));
    assert_eq!(
        store.page_plan(&id, 0, 0).await.unwrap(),
        None,
        "the done page's listing was left behind"
    );
    ctx.cleanup().await;
}

/// An in-process run service for `ctx`, its runs table reached through `tables` if given.
async fn run_service(ctx: &TestCtx, tables: Option<&Proxy>) -> s3_blob_sync::app::service::RunService {
    let cs = tables.map(|t| crate::harness::TestCtx::connection_string(None, None, Some(&t.url)));
    let overrides: Vec<(&str, &str)> = cs
        .as_deref()
        .map(|cs| vec![("AZURE_STORAGE_CONNECTION_STRING", cs)])
        .unwrap_or_default();
    let cfg = std::sync::Arc::new(ctx.config(&overrides));
    s3_blob_sync::app::service::RunService::local(cfg, std::sync::Arc::new(ctx.engine(&[]).await))
        .await
        .unwrap()
}

/// Starts a run over `ctx`'s bucket and container with `svc` (its listing is the caller's
/// to drive); returns its id.
async fn start_in_process(svc: &s3_blob_sync::app::service::RunService, ctx: &TestCtx) -> String {
    let (spec, _) =
        s3_blob_sync::messages::run_spec::RunSpec::parse(&body(ctx, json!({})).to_string(), "body", &svc.config)
            .unwrap();
    match svc
        .start(spec, None, s3_blob_sync::model::Trigger::Cli, None)
        .await
        .unwrap()
    {
        s3_blob_sync::app::service::Started::Created(run) => run.id,
        other => panic!("the run did not start: {other:?}"),
    }
}

/// A sink that keeps what it is handed (an in-process lister's copies).
#[derive(Default)]
struct Collect(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl s3_blob_sync::app::copy_queues::CopySink for Collect {
    async fn send(&self, copies: Vec<s3_blob_sync::messages::CopyMessage>) -> s3_blob_sync::error::Result<()> {
        self.0.lock().unwrap().extend(copies.into_iter().map(|c| c.key));
        Ok(())
    }
}

#[tokio::test]
async fn an_attempt_that_finds_its_page_done_by_another_sends_nothing() {
    use s3_blob_sync::app::lister::{list_page, PageStep};
    let ctx = TestCtx::new("lateatt").await;
    ctx.put_many((0..30).map(|i| (format!("l/{i:02}"), vec![b'l'; 4])).collect())
        .await;
    // Attempt B reaches the runs table through a proxy that can stall one request.
    let tables = Proxy::start("http://127.0.0.1:10002").await;
    let a = run_service(&ctx, None).await;
    let b = run_service(&ctx, Some(&tables)).await;
    let id = start_in_process(&a, &ctx).await;

    // B has read the run and its lister row (page 0 to do) and stalls on its look for the
    // page's saved listing.
    tables.faults().hold_to.arm("plan", 1);
    let late = {
        let id = id.clone();
        tokio::spawn(async move {
            let sink = Collect::default();
            let step = list_page(&b, &id, 0, 0, &sink).await.unwrap();
            let sent = sink.0.lock().unwrap().len();
            (step, sent)
        })
    };
    tables.until_held(1).await;
    // Meanwhile A does the whole page (and removes its listing); then the page's keys change.
    let sink = Collect::default();
    assert_eq!(list_page(&a, &id, 0, 0, &sink).await.unwrap(), PageStep::Done);
    assert_eq!(sink.0.lock().unwrap().len(), 30);
    ctx.s3
        .client()
        .delete_object()
        .bucket(&ctx.bucket)
        .key("l/05")
        .send()
        .await
        .unwrap();
    ctx.put("l/05b", "new").await;
    tables.release(1);
    let (step, sent) = late.await.unwrap();

    assert_eq!(
        sent, 0,
        "an attempt at a page already done sent copies for keys it listed anew"
    );
    assert_eq!(step, PageStep::Stale);
    assert_eq!(
        a.store.page_plan(&id, 0, 0).await.unwrap(),
        None,
        "the late attempt's listing was left behind"
    );
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_page_save_whose_reply_was_lost_still_hands_on_the_next_step() {
    use s3_blob_sync::app::lister::{list_page, PageStep};
    let ctx = TestCtx::new("lostsave").await;
    ctx.put_many((0..30).map(|i| (format!("s/{i:02}"), vec![b's'; 4])).collect())
        .await;
    let tables = Proxy::start("http://127.0.0.1:10002").await;
    let svc = run_service(&ctx, Some(&tables)).await;
    let id = start_in_process(&svc, &ctx).await;
    // The page's save (the only write that carries the lister's `Page`) lands; its reply
    // is lost, and the retry meets the change it made itself.
    tables.faults().drop_replies_to.arm("Page@odata.type", 1);
    let sink = Collect::default();
    let step = list_page(&svc, &id, 0, 0, &sink).await.unwrap();
    assert_eq!(
        tables.faults().drop_replies_to.left(),
        0,
        "the save's reply was meant to be lost"
    );
    assert_eq!(
        step,
        PageStep::Done,
        "the run's next step (its settle check) was never handed on"
    );
    assert_eq!(sink.0.lock().unwrap().len(), 30);
    let lister = svc.store.shard(&id, 0).await.unwrap().unwrap();
    assert_eq!((lister.page, lister.done), (1, true));
    assert_eq!(svc.store.page_plan(&id, 0, 0).await.unwrap(), None);
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_run_start_whose_insert_reply_was_lost_still_starts_and_finishes() {
    let ctx = TestCtx::new("loststart").await;
    ctx.put_many((0..20).map(|i| (format!("s/{i:02}"), vec![b's'; 5])).collect())
        .await;
    // The runs table through a proxy that forwards the run row's insert, then drops its
    // reply: it landed, and the retry meets its own entity (409).
    let (tables, h, host) = proxied_handler(&ctx, TABLES).await;
    let inserts = format!("POST /devstoreaccount1/{}", ctx.env["SYNC_RUNS_TABLE"]);
    // The run row's insert (its body names the `run` partition) lands; its reply is lost.
    tables.faults().drop_replies_to.arm(r#""PartitionKey":"run""#, 1);
    // 202, not a 500 that leaves a Running run without its first page and its lock held.
    let id = start_run(&h, &body(&ctx, json!({}))).await;
    assert!(tables.count(&inserts) >= 3, "the run row's insert was retried");
    assert_eq!(tables.faults().drop_replies_to.left(), 0);
    let s = finish(&host, &h, &id, Duration::from_secs(120)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!(c(&s, "transferred"), 20, "{s}");
    // And the lock was released: the next run starts.
    let again = start_run(&h, &body(&ctx, json!({}))).await;
    let s = finish(&host, &h, &again, Duration::from_secs(120)).await;
    assert_eq!(c(&s, "noTransferNeeded"), 20, "{s}");
    ctx.cleanup().await;
}

/// The first listing page's Put Message lands, but Azure answers 500 OperationTimedOut (one
/// run), or the reply is lost (the next run). The send is retried, since every queue message
/// is safe to receive twice: both runs start (202, not a run ended Failed for want of its
/// first page), and the duplicate page 0 counts no key twice.
#[tokio::test]
async fn a_first_page_message_that_timed_out_or_lost_its_reply_still_starts_the_run() {
    let ctx = TestCtx::new("pagesend").await;
    ctx.put_many((0..20).map(|i| (format!("q/{i:02}"), vec![b'q'; 7])).collect())
        .await;
    let (queues, h, host) = proxied_handler(&ctx, QUEUES).await;
    let page_sends = format!("POST /devstoreaccount1/{}/messages", ctx.env["SYNC_LIST_QUEUE"]);

    queues.faults().timeout_replies_to.arm(page_sends.as_str(), 1);
    let id = start_run(&h, &body(&ctx, json!({}))).await;
    assert_eq!(
        queues.faults().timeout_replies_to.left(),
        0,
        "no page message timed out"
    );
    assert_eq!(queues.count(&page_sends), 2, "the timed-out send was not retried once");
    let s = finish(&host, &h, &id, Duration::from_secs(120)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!((c(&s, "scanned"), c(&s, "transferred")), (20, 20), "{s}");

    queues.faults().drop_replies_to.arm(page_sends.as_str(), 1);
    let again = start_run(&h, &body(&ctx, json!({}))).await;
    assert_eq!(
        queues.faults().drop_replies_to.left(),
        0,
        "no page message lost its reply"
    );
    let s = finish(&host, &h, &again, Duration::from_secs(120)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!((c(&s, "scanned"), c(&s, "noTransferNeeded")), (20, 20), "{s}");
    ctx.cleanup().await;
}

#[tokio::test]
async fn fifty_concurrent_copies_and_their_duplicates_lose_no_count() {
    let ctx = TestCtx::new("conc").await;
    let items: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("c/{i:03}"), vec![b'y'; 10 + i])).collect();
    let total: u64 = items.iter().map(|(_, v)| v.len() as u64).sum();
    ctx.put_many(items).await;
    let h = HandlerProc::start(&ctx.env).await;
    let host = Host::new(&ctx).await;
    let id = start_run(&h, &body(&ctx, json!({}))).await;
    let page = host.list.receive(1, Duration::from_secs(60)).await.unwrap().remove(0);
    assert_eq!(host.deliver(&h, "ListPage", &host.list, page).await, 200);
    let copies = host.take_copies(50).await;
    // Every message twice (a redelivery racing the first delivery), all at once.
    let calls = copies.iter().chain(copies.iter()).map(|m| {
        let payload = queue_payload(&serde_json::from_str(&m.text).unwrap(), 1);
        let h = &h;
        async move { h.invoke("CopyObject", &payload).await.0 }
    });
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}\n{}", h.logs());
    for m in &copies {
        host.copy.delete(m).await.unwrap();
    }
    let s = finish(&host, &h, &id, Duration::from_secs(60)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!(c(&s, "transferred"), 50, "{s}");
    assert_eq!(c(&s, "transferredBytes"), total);
    ctx.cleanup().await;
}

#[tokio::test]
async fn filters_dry_run_bad_bodies_and_unknown_runs() {
    let ctx = TestCtx::new("filt").await;
    for (k, n) in [
        ("a.csv", 10),
        ("b/c.csv", 20),
        ("tmp/d.csv", 30),
        ("e.txt", 40),
        ("big.csv", 10_000),
    ] {
        ctx.put(k, vec![b'z'; n]).await;
    }
    let h = HandlerProc::start(&ctx.env).await;
    let host = Host::new(&ctx).await;
    let filters = json!({"include": ["**/*.csv"], "exclude": ["tmp/**"], "maxSize": 5000});

    let id = start_run(&h, &body(&ctx, json!({"filters": filters, "dryRun": true}))).await;
    let s = finish(&host, &h, &id, Duration::from_secs(60)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!(
        (c(&s, "scanned"), c(&s, "excluded"), c(&s, "wouldTransfer")),
        (5, 3, 2),
        "{s}"
    );
    assert_eq!(c(&s, "transferred"), 0);
    assert!(ctx.blob().list("").await.unwrap().is_empty(), "a dry run wrote blobs");
    assert!(
        ctx.table().query_all(None).await.unwrap_or_default().is_empty(),
        "a dry run wrote checkpoints"
    );
    assert_eq!(host.copy_invocations.load(Ordering::SeqCst), 0);

    let id = start_run(&h, &body(&ctx, json!({"filters": filters}))).await;
    let s = finish(&host, &h, &id, Duration::from_secs(60)).await;
    assert_eq!((c(&s, "excluded"), c(&s, "transferred")), (3, 2), "{s}");
    let mut names: Vec<String> = ctx.blob().list("").await.unwrap().into_iter().map(|b| b.name).collect();
    names.sort();
    assert_eq!(names, ["a.csv", "b/c.csv"]);

    let t = format!(r#""target":{{"container":"{}"}}"#, ctx.container);
    for (bad, needle) in [
        (format!(r#"{{{t}}}"#), "missing field `source`"),
        (
            format!(r#"{{"source":{{"prefix":"p"}},{t}}}"#),
            "`source`: missing field `bucket`",
        ),
        (
            format!(r#"{{"source":{{"bucket":"{}"}},{t},"mode":"copy"}}"#, ctx.bucket),
            "`mode`: unknown variant `copy`",
        ),
        (
            format!(
                r#"{{"source":{{"bucket":"{}"}},{t},"filters":{{"minSize":-4}}}}"#,
                ctx.bucket
            ),
            "`filters.minSize`",
        ),
        (
            format!(
                r#"{{"source":{{"bucket":"{}"}},{t},"filters":{{"exclude":["a[b"]}}}}"#,
                ctx.bucket
            ),
            "`filters.exclude[0]`: invalid glob",
        ),
        ("{not json".to_string(), "request body is not JSON"),
        (String::new(), "request body is empty"),
    ] {
        let (status, _, reply) = http_invoke(
            &h,
            "StartRun",
            &http_payload("POST", "/api/runs", json!({}), Some(&bad)),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {reply}");
        assert!(reply["error"].as_str().unwrap().contains(needle), "{bad}: {reply}");
    }
    // The same API served directly (local use without the Functions host).
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/api/runs", h.port))
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("must be a JSON object"));

    let (status, reply) = get_run(&h, "20990101T000000Z-deadbeef").await;
    assert_eq!(status, 404, "{reply}");
    let (status, _, list) = http_invoke(&h, "ListRuns", &http_payload("GET", "/api/runs", json!({}), None)).await;
    assert_eq!(status, 200);
    assert_eq!(list["runs"].as_array().unwrap().len(), 2, "{list}");
    ctx.cleanup().await;
}

#[tokio::test]
async fn mirror_deletes_respect_max_deletes_and_runs_lock_and_cancel() {
    let ctx = TestCtx::new("mirror").await;
    for i in 0..6 {
        ctx.put(&format!("m/{i}"), format!("v{i}")).await;
    }
    ctx.blob().create_if_missing().await.unwrap();
    // Pages of two blobs: the prune spans several pages, and the refusal comes before the
    // listing ends.
    let h = HandlerProc::start(&ctx.env_with(&[("SYNC_PRUNE_PAGE", "2")])).await;
    let host = Host::new(&ctx).await;
    let id = start_run(&h, &body(&ctx, json!({}))).await;
    assert_eq!(
        c(&finish(&host, &h, &id, Duration::from_secs(60)).await, "transferred"),
        6
    );
    for i in 0..3 {
        ctx.s3
            .client()
            .delete_object()
            .bucket(&ctx.bucket)
            .key(format!("m/{i}"))
            .send()
            .await
            .unwrap();
    }

    let id = start_run(&h, &body(&ctx, json!({"mode": "mirror", "maxDeletes": 2}))).await;
    let s = finish(&host, &h, &id, Duration::from_secs(60)).await;
    assert_eq!(s["state"], "PartiallySucceeded", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("at least 3 blobs have no source object, more than maxDeletes=2"),
        "{s}"
    );
    assert_eq!(c(&s, "deleted"), 0);
    assert_eq!(
        ctx.blob().list("m/").await.unwrap().len(),
        6,
        "the guard deleted something"
    );

    let id = start_run(&h, &body(&ctx, json!({"mode": "mirror", "maxDeletes": 3}))).await;
    let s = finish(&host, &h, &id, Duration::from_secs(60)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!(c(&s, "deleted"), 3, "{s}");
    let mut left: Vec<String> = ctx
        .blob()
        .list("m/")
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    left.sort();
    assert_eq!(left, ["m/3", "m/4", "m/5"]);

    // One run per source and target; cancel frees it.
    let a = start_run(&h, &body(&ctx, json!({}))).await;
    let (status, _, busy) = http_invoke(
        &h,
        "StartRun",
        &http_payload("POST", "/api/runs", json!({}), Some(&body(&ctx, json!({})).to_string())),
    )
    .await;
    assert_eq!(status, 409, "{busy}");
    assert_eq!(busy["runId"], a.as_str());
    let cancel = |id: String| {
        let h = &h;
        async move {
            http_invoke(
                h,
                "CancelRun",
                &http_payload("POST", &format!("/api/runs/{id}/cancel"), json!({"id": id}), None),
            )
            .await
        }
    };
    let (status, _, s) = cancel(a.clone()).await;
    assert_eq!((status, s["state"].as_str()), (200, Some("Cancelled")), "{s}");
    assert_eq!(cancel(a.clone()).await.0, 409, "cancelling an ended run");
    host.drive_until(&h, Duration::from_secs(30), || async { true }).await;
    let (status, s) = get_run(&h, &a).await;
    assert_eq!((status, s["state"].as_str()), (200, Some("Cancelled")));
    assert_eq!(c(&s, "scanned"), 0, "a cancelled run listed pages: {s}");
    start_run(&h, &body(&ctx, json!({}))).await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn webhook_is_sent_once_on_success_and_on_failure_and_never_leaks() {
    use wiremock::matchers::{header_exists, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let ctx = TestCtx::new("hook").await;
    ctx.put("w/1", "one").await;
    let receiver = MockServer::start().await;
    for p in ["/hook/T01/OKSECRETTOKEN", "/hook/T01/FAILSECRETTOKEN"] {
        Mock::given(method("POST"))
            .and(path(p))
            .and(header_exists("idempotency-key"))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&receiver)
            .await;
    }
    // The receiver is on loopback over http: allowed by name, as for a local demo. A run
    // names each webhook by the app setting that holds its URL.
    let ok_url = format!("{}/hook/T01/OKSECRETTOKEN", receiver.uri());
    let fail_url = format!("{}/hook/T01/FAILSECRETTOKEN", receiver.uri());
    let h = HandlerProc::start(&ctx.env_with(&[
        ("SYNC_NOTIFY_ALLOW_HOSTS", "127.0.0.1"),
        ("SYNC_WEBHOOK_OK", &ok_url),
        ("SYNC_WEBHOOK_FAIL", &fail_url),
    ]))
    .await;
    let host = Host::new(&ctx).await;
    let id = start_run(&h, &body(&ctx, json!({"notify": "setting:SYNC_WEBHOOK_OK"}))).await;
    let s = finish(&host, &h, &id, Duration::from_secs(60)).await;
    assert_eq!(s["state"], "Succeeded");
    assert_eq!(s["notification"]["webhook"], "setting:SYNC_WEBHOOK_OK", "{s}");
    // Extra checks (duplicate messages, a retried invocation) must not send it again.
    for _ in 0..3 {
        let (status, _) = h
            .invoke("ListPage", &queue_payload(&json!({"kind": "check", "runId": id}), 2))
            .await;
        assert_eq!(status, 200);
    }

    let bad = json!({"source": {"bucket": "no-such-bucket-for-runs"}, "target": {"container": ctx.container}, "notify": "setting:SYNC_WEBHOOK_FAIL"});
    let id2 = start_run(&h, &bad).await;
    let s2 = finish(&host, &h, &id2, Duration::from_secs(60)).await;
    assert_eq!(s2["state"], "Failed", "{s2}");
    assert!(
        s2["reason"].as_str().unwrap().contains("no-such-bucket-for-runs"),
        "{s2}"
    );
    host.drive_until(&h, Duration::from_secs(20), || async {
        let (_, s) = get_run(&h, &id2).await;
        s["notification"]["state"] == "sent"
    })
    .await;

    receiver.verify().await;
    let got = receiver.received_requests().await.unwrap();
    let texts: Vec<Value> = got.iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t["text"].as_str().unwrap().contains(&format!("{id} Succeeded"))),
        "{texts:?}"
    );
    assert!(texts
        .iter()
        .any(|t| t["state"] == "Failed" && t["runId"] == id2.as_str()));
    // The webhook URL is a secret: not in logs, not in status.
    for hay in [h.logs(), s.to_string(), s2.to_string()] {
        assert!(
            !hay.contains("SECRETTOKEN"),
            "webhook URL leaked: {}",
            hay.lines().find(|l| l.contains("SECRETTOKEN")).unwrap()
        );
    }
    ctx.cleanup().await;
}

/// A run whose chain of messages dies still ends, and its lock frees: one whose page
/// could not queue its check on any delivery (the message was then parked), and one whose
/// first page message was lost. The next scheduled run sweeps both, naming why, and starts.
#[tokio::test]
async fn a_run_whose_chain_died_is_swept_and_the_next_schedule_starts() {
    let ctx = TestCtx::new("sweep").await;
    for i in 0..3 {
        ctx.put(&format!("s/{i}"), format!("object {i}")).await;
    }
    let spec = json!({"source": {"bucket": ctx.bucket}, "target": {"container": ctx.container}}).to_string();
    let queues = Proxy::start(QUEUES).await;
    let cs = crate::harness::TestCtx::connection_string(None, Some(&queues.url), None);
    let env = ctx.env_with(&[
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("SYNC_SCHEDULED_RUN", spec.as_str()),
        ("SYNC_RUN_STALL_SECS", "5"),
    ]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let timer = json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "IsPastDue": false}}, "Metadata": {}});
    let (status, first) = h.invoke("ScheduledRun", &timer).await;
    assert_eq!(status, 200, "{first}");
    let a = first["ReturnValue"]["runId"].as_str().unwrap().to_string();

    // Every send to the listing queue fails from now on: the page lists, sends its copies,
    // and cannot queue its check, on all five deliveries; then it is parked.
    let list_queue = ctx.config(&[]).queues.list;
    queues
        .faults()
        .refuse_to
        .arm(format!("POST /devstoreaccount1/{list_queue}/messages"), u32::MAX);
    let page = host.next_list(Duration::from_secs(120)).await;
    let msg: Value = serde_json::from_str(&page.text).unwrap();
    for attempt in 1..=5 {
        let (status, _) = h.invoke("ListPage", &queue_payload(&msg, attempt)).await;
        assert_eq!(status, 500, "attempt {attempt}: the check could not be queued");
    }
    host.list.delete(&page).await.unwrap();
    host.deliver_copies(&h, host.take_copies(3).await).await;
    queues.faults().refuse_to.disarm();

    // A run on another prefix pair whose first page message is lost.
    let b = start_run(
        &h,
        &body(&ctx, json!({"target": {"container": ctx.container, "prefix": "b/"}})),
    )
    .await;
    let lost = host.next_list(Duration::from_secs(120)).await;
    host.list.delete(&lost).await.unwrap();

    // Within the stall bound, both are alive as far as anyone can tell: the schedule waits.
    let (_, second) = h.invoke("ScheduledRun", &timer).await;
    assert_eq!(second["ReturnValue"]["runningRunId"], a.as_str(), "{second}");
    assert!(
        h.logs().contains("\"outcome\":\"schedule_skipped\""),
        "a skipped schedule is logged"
    );
    assert!(
        h.logs()
            .lines()
            .any(|l| l.contains("schedule_skipped") && l.contains("\"level\":\"WARN\"")),
        "a skipped schedule is a warning"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, third) = h.invoke("ScheduledRun", &timer).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(
        third["ReturnValue"]["started"], true,
        "the swept run still blocks the schedule: {third}"
    );
    let next = third["ReturnValue"]["runId"].as_str().unwrap().to_string();

    let (status, sa) = get_run(&h, &a).await;
    assert_eq!(status, 200, "{sa}");
    assert_eq!(sa["state"], "PartiallySucceeded", "{sa}");
    assert!(
        sa["reason"]
            .as_str()
            .unwrap()
            .starts_with("stalled: its checks stopped"),
        "{sa}"
    );
    assert_eq!(c(&sa, "transferred"), 3, "the copies the run made are kept: {sa}");
    let (_, sb) = get_run(&h, &b).await;
    assert_eq!(sb["state"], "Failed", "{sb}");
    assert!(
        sb["reason"]
            .as_str()
            .unwrap()
            .starts_with("stalled: the listing stopped (shard 0 after page 0)"),
        "{sb}"
    );
    let s = finish(&host, &h, &next, Duration::from_secs(60)).await;
    assert_eq!(s["state"], "Succeeded", "{s}");
    assert_eq!(c(&s, "noTransferNeeded"), 3, "{s}");
    ctx.cleanup().await;
}

/// Rows written by the previous version carry no sign of life the sweep can read: a run
/// started hours ago under it is not ended by the first sweep after an upgrade, but marked
/// alive and given a whole bound; only then, with nothing moving, is it ended.
#[tokio::test]
async fn a_run_from_before_the_sweep_gets_a_whole_bound_before_it_is_swept() {
    let ctx = TestCtx::new("sweepold").await;
    let cfg = std::sync::Arc::new(ctx.config(&[("SYNC_RUN_STALL_SECS", "5")]));
    let engine = std::sync::Arc::new(ctx.engine(&[]).await);
    let svc = s3_blob_sync::app::service::RunService::new(cfg.clone(), engine)
        .await
        .unwrap();
    let spec = s3_blob_sync::messages::run_spec::RunSpec::parse(&body(&ctx, json!({})).to_string(), "test", &cfg)
        .unwrap()
        .0;
    let s3_blob_sync::app::service::Started::Created(run) = svc
        .start(spec, None, s3_blob_sync::model::Trigger::Http, None)
        .await
        .unwrap()
    else {
        panic!("not started")
    };
    // As the previous version wrote them: started three hours ago, no `CheckedAt`, a lister
    // row without `UpdatedAt`.
    let table = ctx.runs_table(&[]);
    let mut row = table.get("run", &run.id).await.unwrap().unwrap();
    row.props.remove("CheckedAt");
    row.props.remove("CheckedAt@odata.type");
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(3);
    row.set_str(
        "StartedAt",
        long_ago.format(&time::format_description::well_known::Rfc3339).unwrap(),
    );
    table.update(&row, None).await.unwrap();
    let mut lister = table.get(&run.id, "lister").await.unwrap().unwrap();
    lister.props.remove("UpdatedAt");
    lister.props.remove("UpdatedAt@odata.type");
    table.update(&lister, None).await.unwrap();

    let swept = s3_blob_sync::app::sweep::sweep(&svc).await.unwrap();
    assert!(swept.is_empty(), "the first sweep after an upgrade ended {swept:?}");
    assert!(s3_blob_sync::app::sweep::sweep(&svc).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let swept = s3_blob_sync::app::sweep::sweep(&svc).await.unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(swept[0].run_id, run.id);
    ctx.cleanup().await;
}

#[tokio::test]
async fn scheduled_run_starts_once_while_one_is_running() {
    let ctx = TestCtx::new("sched").await;
    ctx.put("s/1", "one").await;
    let spec = json!({"source": {"bucket": ctx.bucket}, "target": {"container": ctx.container}}).to_string();
    let env = ctx.env_with(&[("SYNC_SCHEDULED_RUN", &spec)]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let timer = json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "IsPastDue": false}}, "Metadata": {}});
    let (status, first) = h.invoke("ScheduledRun", &timer).await;
    assert_eq!(status, 200, "{first}");
    let id = first["ReturnValue"]["runId"].as_str().unwrap().to_string();
    let (status, second) = h.invoke("ScheduledRun", &timer).await;
    assert_eq!(status, 200);
    assert_eq!(second["ReturnValue"]["started"], false, "{second}");
    assert_eq!(second["ReturnValue"]["runningRunId"], id.as_str());
    let s = finish(&host, &h, &id, Duration::from_secs(60)).await;
    assert_eq!(
        (s["state"].as_str(), s["trigger"].as_str()),
        (Some("Succeeded"), Some("schedule"))
    );

    // A bad SYNC_SCHEDULED_RUN stops the handler at start-up, naming the variable and field.
    let bad = ctx.env_with(&[(
        "SYNC_SCHEDULED_RUN",
        r#"{"source":{"bucket":"ok-bucket"},"target":{"container":"x"}}"#,
    )]);
    let (code, out) = crate::harness::handler::run_binary_async(&["serve", "--port", "1"], &bad).await;
    assert_ne!(code, 0);
    assert!(out.contains("SYNC_SCHEDULED_RUN: `target.container`"), "{out}");
    ctx.cleanup().await;
}

#[tokio::test]
async fn a_failed_object_makes_the_run_partially_succeeded_with_its_reason() {
    let ctx = TestCtx::new("partial").await;
    ctx.put("p/good", "fine").await;
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key("p/bad")
        .metadata("2nd", "v")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    // The `fail` metadata policy refuses a name Azure cannot hold: a permanent, recorded failure.
    let h = HandlerProc::start(&ctx.env_with(&[("SYNC_METADATA_POLICY", "fail")])).await;
    let host = Host::new(&ctx).await;
    let id = start_run(&h, &body(&ctx, json!({}))).await;
    let s = finish(&host, &h, &id, Duration::from_secs(60)).await;
    assert_eq!(s["state"], "PartiallySucceeded", "{s}");
    assert_eq!((c(&s, "transferred"), c(&s, "failed")), (1, 1), "{s}");
    assert!(s["reason"].as_str().unwrap().contains("1 objects failed"), "{s}");
    let failures = s["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{s}");
    assert_eq!(failures[0]["key"], "p/bad");
    assert!(
        failures[0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid metadata name `2nd`"),
        "{s}"
    );
    ctx.cleanup().await;
}

/// Request forgery through `notify`: a webhook may reach only public https addresses (or a
/// host in SYNC_NOTIFY_ALLOW_HOSTS). Refused at start with a 400 that says why (address
/// literals of each class, and a name that resolves to loopback), refused again at send time
/// (what was allowed at start is not trusted later), and a redirect is never followed.
#[tokio::test]
async fn a_webhook_cannot_reach_internal_addresses_or_follow_redirects() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let ctx = TestCtx::new("ssrf").await;
    ctx.put("s/1", "one").await;
    let receiver = MockServer::start().await;
    let port = receiver.address().port();
    Mock::given(method("POST"))
        .and(path("/hop/T02/SSRFTOKEN"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", format!("{}/landed", receiver.uri())))
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    // Every webhook lives in an app setting; the run names the setting.
    let late = format!("{}/late/T02/SSRFTOKEN", receiver.uri());
    let hop = format!("{}/hop/T02/SSRFTOKEN", receiver.uri());
    let refused: Vec<(String, &str)> = vec![
        (
            "https://169.254.169.254/latest/T02/SSRFTOKEN".to_string(),
            "the cloud metadata address",
        ),
        ("https://10.0.0.1/T02/SSRFTOKEN".into(), "a private address"),
        ("https://[::1]/T02/SSRFTOKEN".into(), "a loopback address"),
        (
            "https://[fd00:ec2::254]/T02/SSRFTOKEN".into(),
            "a unique local (private) address",
        ),
        ("https://[::ffff:192.168.0.1]/T02/SSRFTOKEN".into(), "a private address"),
        (format!("http://127.0.0.1:{port}/T02/SSRFTOKEN"), "must be an https URL"),
        // Not a literal: refused once the name is resolved (here by /etc/hosts).
        (format!("https://localhost:{port}/T02/SSRFTOKEN"), "resolves to"),
    ];
    let mut settings: Vec<(String, String)> = refused
        .iter()
        .enumerate()
        .map(|(i, (url, _))| (format!("SYNC_WEBHOOK_R{i}"), url.clone()))
        .collect();
    settings.push(("SYNC_WEBHOOK_LATE".into(), late));
    settings.push(("SYNC_WEBHOOK_HOP".into(), hop));
    let with = |extra: &[(&str, &str)]| {
        let mut env = ctx.env.clone();
        env.extend(settings.iter().cloned());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    let strict = HandlerProc::start(&with(&[])).await;
    for (i, (url, why)) in refused.iter().enumerate() {
        let (status, _, reply) = http_invoke(
            &strict,
            "StartRun",
            &http_payload(
                "POST",
                "/api/runs",
                json!({}),
                Some(&body(&ctx, json!({"notify": format!("setting:SYNC_WEBHOOK_R{i}")})).to_string()),
            ),
        )
        .await;
        assert_eq!(status, 400, "{url}: {reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains(why), "{url}: {error}");
        assert!(!error.contains("SSRFTOKEN"), "the webhook URL leaked: {error}");
    }
    // A URL itself is refused (it would be stored with the run), and not quoted back.
    let (status, _, reply) = http_invoke(
        &strict,
        "StartRun",
        &http_payload(
            "POST",
            "/api/runs",
            json!({}),
            Some(&body(&ctx, json!({"notify": settings[7].1})).to_string()),
        ),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(
        error.contains("`notify`: must name the app setting that holds the webhook URL"),
        "{error}"
    );
    assert!(!error.contains("SSRFTOKEN"), "the webhook URL leaked: {error}");
    let (_, _, runs) = http_invoke(&strict, "ListRuns", &http_payload("GET", "/api/runs", json!({}), None)).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        0,
        "a refused run was created: {runs}"
    );

    // Allowed at start by a process with the allow list; sent by one without it: refused
    // at send time, and nothing reaches the receiver.
    let allowing = HandlerProc::start(&with(&[("SYNC_NOTIFY_ALLOW_HOSTS", "127.0.0.1")])).await;
    let host = Host::new(&ctx).await;
    let s = notify_error_of_run(&ctx, &host, &allowing, &strict, "setting:SYNC_WEBHOOK_LATE").await;
    let error = s["notification"]["error"].as_str().unwrap();
    assert!(error.contains("must be an https URL"), "{s}");
    assert_ne!(s["notification"]["state"], "sent", "{s}");

    // A redirect is an answer, not a hop: the run's webhook is not sent to where it points.
    let s = notify_error_of_run(&ctx, &host, &allowing, &allowing, "setting:SYNC_WEBHOOK_HOP").await;
    assert!(
        s["notification"]["error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{s}"
    );
    let got = receiver.received_requests().await.unwrap();
    let paths: Vec<&str> = got.iter().map(|r| r.url.path()).collect();
    assert!(
        paths
            .iter()
            .all(|p| !p.starts_with("/late") && !p.starts_with("/landed")),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/hop/T02/SSRFTOKEN"),
        "the allowed webhook was tried: {paths:?}"
    );
    for hay in [strict.logs(), allowing.logs(), s.to_string()] {
        assert!(!hay.contains("SSRFTOKEN"), "the webhook URL leaked");
    }
    ctx.cleanup().await;
}

/// A webhook that keeps failing is tried a bounded number of times, then recorded as failed
/// with the reason: a receiver stuck on 5xx, and an app setting removed after the run started.
/// A failed send waits out its pause, however many checks arrive meanwhile.
#[tokio::test]
async fn a_webhook_that_keeps_failing_is_given_up_with_its_reason() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let ctx = TestCtx::new("hookdown").await;
    // Each attempt is one call under the retry policy, which tries a 503 (throttling: refused
    // before it was acted on) again within it.
    let per_attempt = s3_blob_sync::retry::RetryPolicy::default().max_attempts as usize;
    ctx.put("w/1", "one").await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/down/T03/DOWNTOKEN"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/flaky/T03/FLAKYTOKEN"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/flaky/T03/FLAKYTOKEN"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let down = format!("{}/down/T03/DOWNTOKEN", receiver.uri());
    let flaky = format!("{}/flaky/T03/FLAKYTOKEN", receiver.uri());
    let with = |extra: &[(&str, &str)]| {
        let mut env = ctx.env_with(&[
            ("SYNC_NOTIFY_ALLOW_HOSTS", "127.0.0.1"),
            ("SYNC_WEBHOOK_DOWN", down.as_str()),
            ("SYNC_WEBHOOK_FLAKY", flaky.as_str()),
        ]);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    let sent_to = |prefix: &'static str| {
        let receiver = &receiver;
        async move {
            let got = receiver.received_requests().await.unwrap();
            got.iter().filter(|r| r.url.path().starts_with(prefix)).count()
        }
    };
    let host = Host::new(&ctx).await;
    let quick = HandlerProc::start(&with(&[
        ("SYNC_NOTIFY_RETRY_SECS", "0"),
        ("SYNC_WEBHOOK_GONE", down.as_str()),
    ]))
    .await;

    // A receiver that answers 503 every time: six sends, then failed, naming the answer.
    let id = start_run(&quick, &body(&ctx, json!({"notify": "setting:SYNC_WEBHOOK_DOWN"}))).await;
    finish(&host, &quick, &id, Duration::from_secs(60)).await;
    host.drive_until(&quick, Duration::from_secs(60), || async {
        get_run(&quick, &id).await.1["notification"]["state"] == "failed"
    })
    .await;
    let s = get_run(&quick, &id).await.1;
    let error = s["notification"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("gave up after 6 attempts: ") && error.contains("503"),
        "{s}"
    );
    assert_eq!(s["notification"]["attempts"], 6, "{s}");
    assert_eq!(sent_to("/down").await, 6 * per_attempt);
    // More checks send nothing more.
    for _ in 0..3 {
        let (status, _) = quick
            .invoke("ListPage", &queue_payload(&json!({"kind": "check", "runId": id}), 1))
            .await;
        assert_eq!(status, 200);
    }
    host.drive_until(&quick, Duration::from_secs(20), || async { true })
        .await;
    assert_eq!(sent_to("/down").await, 6 * per_attempt);

    // The setting is gone from the process that finishes the run: the same bound.
    let missing = HandlerProc::start(&with(&[("SYNC_NOTIFY_RETRY_SECS", "0")])).await;
    let id = start_run(&quick, &body(&ctx, json!({"notify": "setting:SYNC_WEBHOOK_GONE"}))).await;
    finish(&host, &missing, &id, Duration::from_secs(60)).await;
    host.drive_until(&missing, Duration::from_secs(60), || async {
        get_run(&missing, &id).await.1["notification"]["state"] == "failed"
    })
    .await;
    let s = get_run(&missing, &id).await.1;
    let error = s["notification"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("gave up after 6 attempts: ") && error.contains("`SYNC_WEBHOOK_GONE` is not set"),
        "{s}"
    );

    // A failed send waits out its pause: checks that arrive meanwhile do not send.
    let paced = HandlerProc::start(&with(&[("SYNC_NOTIFY_RETRY_SECS", "5")])).await;
    let id = start_run(&paced, &body(&ctx, json!({"notify": "setting:SYNC_WEBHOOK_FLAKY"}))).await;
    finish(&host, &paced, &id, Duration::from_secs(60)).await;
    host.drive_until(&paced, Duration::from_secs(20), || async {
        {
            let n = &get_run(&paced, &id).await.1["notification"];
            n["attempts"] == 1 && n["state"] == "pending"
        }
    })
    .await;
    for _ in 0..3 {
        let (status, _) = paced
            .invoke("ListPage", &queue_payload(&json!({"kind": "check", "runId": id}), 1))
            .await;
        assert_eq!(status, 200);
    }
    // A 500 may have reached the receiver: not repeated within the attempt.
    assert_eq!(sent_to("/flaky").await, 1, "a check sent during the pause");
    host.drive_until(&paced, Duration::from_secs(30), || async {
        get_run(&paced, &id).await.1["notification"]["state"] == "sent"
    })
    .await;
    let s = get_run(&paced, &id).await.1;
    assert_eq!(
        (s["notification"]["attempts"].as_u64(), sent_to("/flaky").await),
        (Some(2), 2),
        "{s}"
    );
    for hay in [quick.logs(), missing.logs(), paced.logs()] {
        assert!(
            !hay.contains("DOWNTOKEN") && !hay.contains("FLAKYTOKEN"),
            "a webhook URL leaked"
        );
    }
    ctx.cleanup().await;
}

/// Starts a run with webhook `notify` (a setting reference) on `starter`, drives it to its
/// end on `driver`, and waits until the webhook's error is recorded; the run's summary.
async fn notify_error_of_run(
    ctx: &TestCtx,
    host: &Host,
    starter: &HandlerProc,
    driver: &HandlerProc,
    notify: &str,
) -> Value {
    let id = start_run(starter, &body(ctx, json!({"notify": notify}))).await;
    finish(host, driver, &id, Duration::from_secs(60)).await;
    host.drive_until(driver, Duration::from_secs(20), || async {
        get_run(driver, &id).await.1["notification"]["error"].is_string()
    })
    .await;
    get_run(driver, &id).await.1
}

/// Without the Functions host nothing fires ScheduledRun: `serve --work-queues` (the
/// container deployment) reads `SYNC_SCHEDULE` itself, starts the run, and works it off.
#[tokio::test]
async fn serve_with_work_queues_fires_the_schedule_itself() {
    let ctx = TestCtx::new("sched").await;
    for i in 0..3 {
        ctx.put(&format!("s/{i}"), format!("object {i}")).await;
    }
    let spec = json!({"source": {"bucket": ctx.bucket}, "target": {"container": ctx.container}}).to_string();
    let port = crate::harness::handler::free_port().to_string();
    let args = ["serve", "--work-queues", "--port", port.as_str()];

    // A five-field (Vixie) schedule is refused, naming the setting and the form it takes.
    let bad = ctx.env_with(&[("SYNC_SCHEDULED_RUN", spec.as_str()), ("SYNC_SCHEDULE", "0 2 * * *")]);
    let mut p = HandlerProc::spawn(&args, &bad);
    assert_eq!(p.wait(Duration::from_secs(20)).await, Some(2), "{}", p.logs());
    assert!(
        p.logs().contains("SYNC_SCHEDULE") && p.logs().contains("six-field"),
        "{}",
        p.logs()
    );

    // Every two seconds: the first firing starts the run, later ones find it running or done.
    let env = ctx.env_with(&[
        ("SYNC_SCHEDULED_RUN", spec.as_str()),
        ("SYNC_SCHEDULE", "*/2 * * * * *"),
    ]);
    let mut p = HandlerProc::spawn(&args, &env);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = ctx.blob().list("s/").await.map(|l| l.len()).unwrap_or(0);
        if n == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} of 3 copied: {}", p.logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs = p.logs();
    assert!(logs.contains("scheduled run started"), "{logs}");
    for i in 0..3 {
        let blob = ctx.blob().read(&format!("s/{i}")).await.unwrap();
        assert_eq!(blob, format!("object {i}").as_bytes());
    }
    p.terminate();
    assert_eq!(p.wait(Duration::from_secs(40)).await, Some(0), "{}", p.logs());
}
