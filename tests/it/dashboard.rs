//! The dashboard (`GET /api/dashboard`) in a real browser: Debian's Chromium driven by
//! playwright-core (both installed, pinned, by scripts/install-browser), against a real
//! handler over the stand-ins while a bulk run goes on. And its data paged over a thousand
//! runs.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::handler::HandlerProc;
use crate::harness::host::Host;
use crate::harness::proxy::Proxy;
use crate::harness::runs::{body, c, finish, start_run};
use crate::harness::TestCtx;

/// Where the README's screenshot comes from: this test writes it there when
/// `UPDATE_SCREENSHOT=1`, and to a temporary file otherwise.
const SCREENSHOT: &str = "docs/dashboard.png";

fn browser_ready(root: &Path) -> Result<(), String> {
    let pw = root.join(".tools/browser/node_modules/playwright-core");
    let chromium = Path::new("/usr/bin/chromium");
    if pw.is_dir() && chromium.exists() {
        Ok(())
    } else {
        Err(format!(
            "the browser test needs Chromium ({}) and playwright-core ({}): run scripts/install-browser (scripts/test does)",
            if chromium.exists() { "present" } else { "missing" },
            if pw.is_dir() { "present" } else { "missing" },
        ))
    }
}

#[tokio::test]
async fn the_dashboard_shows_a_run_moving_and_a_failure_with_its_reason() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    browser_ready(root).unwrap_or_else(|e| panic!("{e}"));
    let ctx = TestCtx::new("dash").await;
    let items: Vec<(String, Vec<u8>)> = (0..240)
        .map(|i| (format!("d/{i:04}.txt"), format!("object {i}").into_bytes()))
        .collect();
    ctx.put_many(items).await;
    // The `fail` metadata policy refuses a name Azure cannot hold: a failure with a reason.
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key("bad")
        .metadata("2nd", "v")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let (_, sqs_url) = ctx.sqs_queue("dash").await;
    // S3 answers slowly and the host runs two copies at a time, so the run lasts several of
    // the page's refreshes.
    let s3 = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    s3.faults().delay_ms.store(40, Ordering::SeqCst);
    let h = HandlerProc::start(&ctx.env_with(&[
        ("SYNC_METADATA_POLICY", "fail"),
        ("AWS_ENDPOINT_URL", &s3.url),
        ("SYNC_SQS_QUEUE_URL", &sqs_url),
    ]))
    .await;
    let mut host = Host::new(&ctx).await;
    host.concurrency = 2;
    let id = start_run(&h, &body(&ctx, json!({}))).await;

    let update = std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1");
    let tmp = tempfile::tempdir().unwrap();
    let shot = if update {
        root.join(SCREENSHOT)
    } else {
        tmp.path().join("dashboard.png")
    };
    let url = format!("http://127.0.0.1:{}/api/dashboard?refresh=0.3", h.port);
    let browser = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/dashboard.mjs"))
        .args([url.as_str(), id.as_str(), shot.to_str().unwrap()])
        .kill_on_drop(true)
        .output();
    let (out, summary) = tokio::join!(browser, async {
        // Let the page draw the run before it moves.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        finish(&host, &h, &id, Duration::from_secs(150)).await
    });
    let out = out.expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}\nrun: {summary}");
    assert!(text.contains("dashboard test: ok"), "{text}");
    // What the page showed is what the run ended with.
    assert_eq!(summary["state"], "PartiallySucceeded", "{summary}");
    assert_eq!(
        (c(&summary, "transferred"), c(&summary, "failed")),
        (240, 1),
        "{summary}"
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );
    ctx.cleanup().await;
}

/// A thousand runs: the data endpoint pages through all of them, newest first, each once,
/// and refuses a bad `top` or `before` with the parameter's name.
#[tokio::test]
async fn the_dashboard_data_pages_through_a_thousand_runs() {
    let ctx = TestCtx::new("dashk").await;
    let h = HandlerProc::start(&ctx.env).await;
    let ids = insert_runs(&ctx, 1000).await;

    let client = reqwest::Client::new();
    let get = |q: String| {
        let client = client.clone();
        let url = format!("http://127.0.0.1:{}/api/dashboard/data?{q}", h.port);
        async move {
            let r = client.get(url).send().await.unwrap();
            {
                let status = r.status().as_u16();
                (status, serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap())
            }
        }
    };
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &before {
            Some(b) => format!("top=100&before={b}"),
            None => "top=100".into(),
        };
        let (status, snap) = get(q).await;
        assert_eq!(status, 200, "{snap}");
        pages += 1;
        for r in snap["runs"].as_array().unwrap() {
            seen.push(r["summary"]["runId"].as_str().unwrap().to_string());
        }
        match snap["nextBefore"].as_str() {
            Some(b) => before = Some(b.to_string()),
            None => break,
        }
        assert!(pages <= 11, "paging does not end");
    }
    assert_eq!(pages, 10);
    assert_eq!(seen, ids, "every run once, newest first");

    for (q, name) in [("top=0", "top"), ("top=101", "top"), ("before=x'y", "before")] {
        let (status, body) = get(q.into()).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["error"].as_str().unwrap().starts_with(name), "{q}: {body}");
    }
    ctx.cleanup().await;
}

/// A page of the newest runs reads about those runs, not every older one. 1,000 runs, one an
/// hour (about six weeks), are paged through at the store, through a proxy that counts the
/// bytes the table answers with: every run once, newest first, and the first page of 20
/// reads under a tenth of what one read of all the runs does. Thirty rows that are not runs,
/// among the newest, take no run's place.
#[tokio::test]
async fn a_page_of_recent_runs_reads_about_its_own_runs() {
    use s3_blob_sync::state::runs::store::RunStore;
    let ctx = TestCtx::new("dashwin").await;
    let start = time::OffsetDateTime::now_utc();
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let hourly = |i: usize| {
        let t = start - time::Duration::hours(i as i64);
        format!("{}-{:08x}", t.format(&f).unwrap(), i)
    };
    let ids = insert_runs_with(&ctx, 1000, hourly).await;
    // Rows in the runs' partition that do not read as runs (a newer version's, or damaged)
    // sit among the newest; they must not fill the page in place of runs.
    let raw = ctx.runs_table(&[]);
    for i in 0..30 {
        let mut e = s3_blob_sync::azure::table::Entity::new("run", format!("{}-zz{i:02}", &ids[0][..16]));
        e.set_str("note", "not a run row");
        raw.insert(&e).await.unwrap();
    }
    let tables = Proxy::start("http://127.0.0.1:10002").await;
    let cs = TestCtx::connection_string(None, None, Some(&tables.url));
    let table = ctx.runs_table(&[("AZURE_STORAGE_CONNECTION_STRING", &cs)]);
    let all_bytes = {
        let before = tables.stats().replied_bytes.load(Ordering::SeqCst);
        let all = table.query_all(Some("PartitionKey eq 'run'")).await.unwrap();
        assert_eq!(all.len(), 1030);
        tables.stats().replied_bytes.load(Ordering::SeqCst) - before
    };
    let store = RunStore::new(table);
    let before = tables.stats().replied_bytes.load(Ordering::SeqCst);
    let (first, _) = store.recent_before(None, 20).await.unwrap();
    let page_bytes = tables.stats().replied_bytes.load(Ordering::SeqCst) - before;
    let first: Vec<&str> = first.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(first, ids[..20].iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!("the newest 20 of 1,000 runs: {page_bytes} bytes read; all runs: {all_bytes}");
    assert!(
        page_bytes * 10 < all_bytes,
        "a page of 20 read {page_bytes} bytes; all 1,000 runs are {all_bytes}"
    );

    // Paged to the end, in pages of 64: each run once, newest first.
    let (mut seen, mut next) = (Vec::new(), None::<String>);
    loop {
        let (runs, more) = store.recent_before(next.as_deref(), 64).await.unwrap();
        seen.extend(runs.into_iter().map(|r| r.id));
        match more {
            Some(b) => next = Some(b),
            None => break,
        }
        assert!(seen.len() <= 1000, "paging does not end");
    }
    assert_eq!(seen, ids, "every run once, newest first");
    ctx.cleanup().await;
}

/// Writes `n` ended runs of `ctx`'s bucket and container straight into the runs table, as
/// the run service would have; their ids, newest first.
async fn insert_runs(ctx: &TestCtx, n: usize) -> Vec<String> {
    insert_runs_with(ctx, n, |_| s3_blob_sync::state::runs::store::new_run_id()).await
}

/// [`insert_runs`] with the `i`th run's id from `id(i)`.
async fn insert_runs_with(ctx: &TestCtx, n: usize, id: impl Fn(usize) -> String) -> Vec<String> {
    use futures::StreamExt;
    use s3_blob_sync::state::runs::store::{Phase, RunRecord, RunState, RunStore};
    let cfg = ctx.config(&[]);
    let store = RunStore::new(ctx.runs_table(&[]));
    store.ensure().await.unwrap();
    let (spec, _) =
        s3_blob_sync::messages::run_spec::RunSpec::parse(&body(ctx, json!({})).to_string(), "body", &cfg).unwrap();
    let mut ids: Vec<String> = futures::stream::iter(0..n)
        .map(|i| {
            let (store, spec, id) = (&store, spec.clone(), id(i));
            async move {
                let now = s3_blob_sync::state::checkpoint::now_rfc3339();
                let mut run = RunRecord {
                    id,
                    spec,
                    notify: None,
                    trigger: Some(s3_blob_sync::model::Trigger::Cli),
                    state: RunState::Succeeded,
                    phase: Phase::Done,
                    reason: None,
                    started_at: now.clone(),
                    ended_at: Some(now.clone()),
                    notified: Default::default(),
                    notify_claimed_at: None,
                    notify_error: None,
                    notify_attempts: 0,
                    lock_key: None,
                    last_settled: 0,
                    checked_at: 0,
                    lease_secs: None,
                    last_progress_at: now,
                    delete_candidates: 0,
                    prune_marker: None,
                    prune_listed: false,
                    etag: String::new(),
                };
                store.insert(&mut run).await.unwrap();
                run.id
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    ids.sort();
    ids.reverse();
    ids
}
