//! Per-object run reports (`GET /api/runs/{id}/report`, `status RUN_ID --report`): every
//! object a run did not copy is named with its outcome and reason, paged and filtered; a
//! copy that failed an attempt shows as `retrying` until its final outcome is counted.

use std::time::Duration;

use aws_sdk_s3::types::StorageClass;
use serde_json::{json, Value};

use crate::harness::handler::{run_binary_async, HandlerProc};
use crate::harness::host::{http_invoke, http_payload, Host};
use crate::harness::proxy::Proxy;
use crate::harness::TestCtx;

/// The report through the invoke door, with `query`: status, headers and its JSON lines.
pub(crate) async fn report(h: &HandlerProc, id: &str, query: &[(&str, &str)]) -> (u16, Value, Vec<Value>) {
    let mut payload = http_payload("GET", &format!("/api/runs/{id}/report"), json!({"id": id}), None);
    for (k, v) in query {
        payload["Data"]["req"]["Query"][*k] = json!(v);
    }
    let (status, body) = h.invoke("GetRunReport", &payload).await;
    assert_eq!(status, 200, "the host call itself must succeed: {body}");
    let res = &body["Outputs"]["res"];
    let text = res["body"].as_str().unwrap_or_default();
    let lines = if res["headers"]["Content-Type"] == "application/x-ndjson" {
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    } else {
        vec![serde_json::from_str(text).unwrap_or(Value::Null)]
    };
    (
        res["statusCode"].as_u64().unwrap_or(0) as u16,
        res["headers"].clone(),
        lines,
    )
}

fn line<'a>(lines: &'a [Value], key: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["key"] == key)
        .unwrap_or_else(|| panic!("{key} is not in the report: {lines:?}"))
}

#[tokio::test]
async fn a_runs_report_names_every_object_not_copied_with_its_reason() {
    let ctx = TestCtx::new("report").await;
    for k in ["ok/a.txt", "ok/b.txt", "tmp/x.tmp", "folder/", "bad."] {
        ctx.put(k, format!("body of {k}")).await;
    }
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key("cold.bin")
        .storage_class(StorageClass::Glacier)
        .body(b"archived".to_vec().into())
        .send()
        .await
        .unwrap();
    // S3 through a proxy, so one copy's first attempt can be refused.
    let s3 = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let env = ctx.env_with(&[("AWS_ENDPOINT_URL", s3.url.as_str())]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let run = json!({"source": {"bucket": ctx.bucket}, "target": {"container": ctx.container},
                     "filters": {"exclude": ["tmp/**"]}});
    let (status, _, reply) = http_invoke(
        &h,
        "StartRun",
        &http_payload("POST", "/api/runs", json!({}), Some(&run.to_string())),
    )
    .await;
    assert_eq!(status, 202, "{reply}");
    let id = reply["runId"].as_str().unwrap().to_string();
    let page = host.list.receive(1, Duration::from_secs(30)).await.unwrap().remove(0);
    assert_eq!(host.deliver(&h, "ListPage", &host.list, page).await, 200);

    // One copy's first attempt meets an S3 outage longer than its retries: not final, so
    // `retrying` with its reason.
    let mut copies = Vec::new();
    while copies.len() < 2 {
        copies.extend(host.copy.receive(32, Duration::from_secs(2)).await.unwrap());
    }
    let first = copies.remove(0);
    let failing_key = serde_json::from_str::<Value>(&first.text).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    s3.outage(Duration::from_secs(12));
    assert_eq!(
        host.deliver(&h, "CopyObject", &host.copy, first).await,
        500,
        "{}",
        crate::harness::host::tail(&h.logs())
    );
    let (status, _, lines) = report(&h, &id, &[("outcome", "retrying")]).await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let r = line(&lines, &failing_key);
    assert_eq!(
        (r["outcome"].as_str(), r["attempt"].as_u64()),
        (Some("retrying"), Some(1)),
        "{r}"
    );
    assert!(
        r["reason"].as_str().unwrap().contains("HTTP 503"),
        "the reason names what failed: {r}"
    );

    // The run ends once the retry lands; the report then names each object not copied.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (status, _, body) = loop {
        assert!(std::time::Instant::now() < deadline, "the run did not end");
        host.round(&h).await;
        let got = http_invoke(
            &h,
            "GetRun",
            &http_payload("GET", &format!("/api/runs/{id}"), json!({"id": id}), None),
        )
        .await;
        if got.0 == 200 {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((status, body["state"].as_str()), (200, Some("Succeeded")), "{body}");
    assert_eq!(
        body["reportUrl"],
        format!("/api/runs/{id}/report"),
        "the summary (and so the webhook) links to the report"
    );
    let (status, headers, lines) = report(&h, &id, &[]).await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(headers["Content-Type"], "application/x-ndjson");
    assert_eq!(
        lines.len(),
        4,
        "only the objects not copied, the settled retry gone: {lines:?}"
    );
    for (key, outcome, why) in [
        ("tmp/x.tmp", "excluded", "excluded: "),
        ("folder/", "excluded", "folder marker"),
        ("cold.bin", "unsupported", "GLACIER"),
        ("bad.", "unsupported", "ends with '.'"),
    ] {
        let l = line(&lines, key);
        assert_eq!(l["outcome"], outcome, "{l}");
        assert!(l["reason"].as_str().unwrap_or_default().contains(why), "{key}: {l}");
    }
    // Everything, paged two at a time by the cursor the reply names.
    let mut all = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let mut q = vec![("outcome", "all"), ("limit", "2")];
        if !cursor.is_empty() {
            q.push(("cursor", cursor.as_str()));
        }
        let (status, headers, lines) = report(&h, &id, &q).await;
        assert_eq!(status, 200, "{lines:?}");
        assert!(lines.len() <= 2);
        all.extend(lines);
        match headers["x-next-cursor"].as_str() {
            Some(next) => {
                assert!(headers["Link"].as_str().unwrap().contains("rel=\"next\""), "{headers}");
                cursor = next.to_string();
            }
            None => break,
        }
    }
    let mut keys: Vec<&str> = all.iter().map(|l| l["key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["bad.", "cold.bin", "folder/", "ok/a.txt", "ok/b.txt", "tmp/x.tmp"],
        "each key once over the pages"
    );
    assert_eq!(line(&all, &failing_key)["outcome"], "transferred");
    // Bad input is named.
    let (status, _, body) = report(&h, &id, &[("outcome", "glacier")]).await;
    assert_eq!(status, 400);
    assert!(
        body[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("outcome: `glacier` is not an outcome"),
        "{body:?}"
    );
    let (status, _, body) = report(&h, &id, &[("cursor", "not-a-cursor!")]).await;
    assert_eq!(status, 400);
    assert!(body[0]["error"].as_str().unwrap().starts_with("cursor:"), "{body:?}");
    let (status, _, _) = report(&h, "20261202T000000Z-00000000", &[]).await;
    assert_eq!(status, 404);

    // The CLI prints the same report, as CSV.
    let (code, out) = run_binary_async(&["status", &id, "--report", "--csv"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    let mut rows = out.lines();
    assert_eq!(rows.next(), Some("key,outcome,bytes,reason,attempt"));
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("cold.bin,unsupported,8,") && r.contains("GLACIER")),
        "{out}"
    );
    let (code, out) = run_binary_async(&["status", &id, "--report", "--outcome", "transferred"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out) = run_binary_async(&["status", &id, "--report", "--outcome", "nope"], &ctx.env).await;
    assert_ne!(code, 0);
    assert!(out.contains("--outcome: `nope` is not an outcome"), "{out}");
    ctx.cleanup().await;
}

/// A copy that can never pass is settled with its final outcome and reason whichever host
/// parks it: `serve --work-queues` parks a refused read on its first delivery, the Functions
/// host tries it five times. An Intelligent-Tiering object in an archive tier (seen only in
/// `x-amz-archive-status`, and in S3's 403 InvalidObjectState to a GET) is unsupported, not
/// a failure. Neither run waits for its stall guard.
#[tokio::test]
async fn a_parked_copy_is_settled_with_its_reason_whichever_host_parks_it() {
    use crate::harness::handler::{free_port, run_ended, start_http_run};
    let ctx = TestCtx::new("parked").await;
    ctx.put("p/ok", "fine").await;
    ctx.put("p/refused", "never readable").await;
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key("p/cold")
        .storage_class(StorageClass::IntelligentTiering)
        .body(b"in the archive tier".to_vec().into())
        .send()
        .await
        .unwrap();
    let s3 = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    s3.faults().archived.arm(format!("/{}/p/cold", ctx.bucket), u32::MAX);
    s3.faults()
        .refuse_to
        .arm(format!("GET /{}/p/refused", ctx.bucket), u32::MAX);
    // A stall guard of ten minutes: a run that waits for it fails the test's bound.
    let env = ctx.env_with(&[("AWS_ENDPOINT_URL", s3.url.as_str()), ("SYNC_RUN_STALL_SECS", "600")]);
    let check = |lines: &[Value]| {
        let cold = line(lines, "p/cold");
        assert_eq!(cold["outcome"], "unsupported", "{cold}");
        assert!(
            cold["reason"]
                .as_str()
                .unwrap()
                .contains("INTELLIGENT_TIERING in its ARCHIVE_ACCESS tier"),
            "{cold}"
        );
        let refused = line(lines, "p/refused");
        assert_eq!(refused["outcome"], "failed", "{refused}");
        assert!(
            refused["reason"].as_str().unwrap().contains("InvalidRequest"),
            "{refused}"
        );
        assert!(lines.iter().all(|l| l["outcome"] != "retrying"), "{lines:?}");
    };

    // The in-process host: parked on the first delivery, settled at once.
    let port = free_port();
    let mut serve_env = env.clone();
    serve_env.insert("FUNCTIONS_CUSTOMHANDLER_PORT".into(), port.to_string());
    let mut serve = HandlerProc::spawn(&["serve", "--work-queues"], &serve_env);
    let body = json!({"source": {"bucket": ctx.bucket, "prefix": "p/"}, "target": {"container": ctx.container}});
    let id = start_http_run(port, &body).await;
    let s = run_ended(port, &id, Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("the run did not end within 60 s: {}", serve.logs()));
    assert_eq!(s["state"], "PartiallySucceeded", "{s}");
    let n = |k: &str| s["counters"][k].as_u64().unwrap();
    assert_eq!((n("transferred"), n("unsupported"), n("failed")), (1, 1, 1), "{s}");
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/api/runs/{id}/report"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    check(&lines);
    let poison = ctx.queue(&format!("{}-poison", ctx.config(&[]).queues.copy));
    let parked = poison.receive(32, Duration::from_secs(30)).await.unwrap();
    assert_eq!(parked.len(), 1, "the refused copy is parked, and only it");
    assert!(parked[0].text.contains("p/refused"), "{}", parked[0].text);
    serve.kill();

    // The Functions host (played by the test): the same verdicts, the first delivery settles.
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let id = crate::harness::runs::start_run(&h, &body).await;
    let s = crate::harness::runs::finish(&host, &h, &id, Duration::from_secs(30)).await;
    assert_eq!(s["state"], "PartiallySucceeded", "{s}");
    let (_, _, lines) = report(&h, &id, &[]).await;
    check(&lines);
    let cold_gets = s3.count(&format!("/{}/p/cold", ctx.bucket));
    assert!(
        cold_gets <= 4,
        "the archived object was tried again and again: {cold_gets} requests"
    );
    ctx.cleanup().await;
}

/// A copy whose attempt failed and whose message is then lost (a host that poisoned it after
/// a last attempt timed out never tells the handler) is settled when the run's stall guard
/// ends the run: counted as failed, with its last attempt's reason, not left `retrying`.
#[tokio::test]
async fn a_copy_lost_after_a_failed_attempt_is_settled_by_the_stall_guard() {
    let ctx = TestCtx::new("lostcopy").await;
    ctx.put("p/a", "fine").await;
    ctx.put("p/lost", "lost").await;
    let s3 = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let env = ctx.env_with(&[("AWS_ENDPOINT_URL", s3.url.as_str()), ("SYNC_RUN_STALL_SECS", "5")]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let body = json!({"source": {"bucket": ctx.bucket, "prefix": "p/"}, "target": {"container": ctx.container}});
    let id = crate::harness::runs::start_run(&h, &body).await;
    let page = host.next_list(Duration::from_secs(60)).await;
    host.redo_page(&h, &page).await;
    let copies = host.take_copies(2).await;
    let (lost, rest): (Vec<_>, Vec<_>) = copies.into_iter().partition(|m| m.text.contains("p/lost"));
    host.deliver_copies(&h, rest).await;
    // Its first attempt fails (S3 keeps answering 503)...
    s3.faults().storm_to.arm(format!("/{}/p/lost", ctx.bucket), 1000);
    let msg: Value = serde_json::from_str(&lost[0].text).unwrap();
    let (status, _) = h
        .invoke("CopyObject", &crate::harness::handler::queue_payload(&msg, 1))
        .await;
    assert_eq!(status, 500);
    s3.faults().storm_to.disarm();
    // ...and then the message is gone for good.
    host.copy.delete(&lost[0]).await.unwrap();
    let s = crate::harness::runs::finish(&host, &h, &id, Duration::from_secs(60)).await;
    assert_eq!(s["state"], "PartiallySucceeded", "{s}");
    assert_eq!(
        (s["counters"]["transferred"].as_u64(), s["counters"]["failed"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("1 of them, which had failed attempts, are counted as failed"),
        "{s}"
    );
    let (_, _, lines) = report(&h, &id, &[]).await;
    let l = line(&lines, "p/lost");
    assert_eq!(l["outcome"], "failed", "{l}");
    let reason = l["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("never settled: attempt 1 failed (") && reason.contains("ServerBusy"),
        "{l}"
    );
    ctx.cleanup().await;
}
