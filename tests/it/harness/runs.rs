//! Bulk runs through the invoke protocol, shared by the tests: start one, read it, drive
//! the host until it ends, and read its counters.

use std::time::Duration;

use serde_json::{json, Value};

use super::contract::assert_schema;
use super::handler::HandlerProc;
use super::host::{http_invoke, http_payload, Host};
use super::TestCtx;

pub async fn start_run(h: &HandlerProc, body: &Value) -> String {
    let (status, headers, reply) = http_invoke(
        h,
        "StartRun",
        &http_payload("POST", "/api/runs", json!({}), Some(&body.to_string())),
    )
    .await;
    assert_eq!(status, 202, "{reply}");
    assert_schema("Accepted", &reply);
    let id = reply["runId"].as_str().unwrap().to_string();
    assert_eq!(
        headers["Location"],
        format!("https://app.example.net/api/runs/{id}?code=fnkey123"),
        "Location must be the absolute status URL the poller follows"
    );
    assert!(headers["Retry-After"].as_str().unwrap().parse::<u64>().unwrap() >= 1);
    id
}

pub async fn get_run(h: &HandlerProc, id: &str) -> (u16, Value) {
    let (status, _, body) = http_invoke(
        h,
        "GetRun",
        &http_payload("GET", &format!("/api/runs/{id}"), json!({"id": id}), None),
    )
    .await;
    match status {
        200 | 202 => assert_schema("RunSummary", &body),
        _ => assert_schema("Error", &body),
    }
    (status, body)
}

/// Drives the host until GetRun answers 200 (the run ended); returns the summary.
pub async fn finish(host: &Host, h: &HandlerProc, id: &str, timeout: Duration) -> Value {
    host.drive_until(h, timeout, || async { get_run(h, id).await.0 == 200 })
        .await;
    get_run(h, id).await.1
}

pub fn c(summary: &Value, name: &str) -> u64 {
    summary["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}: {summary}"))
}

pub fn body(ctx: &TestCtx, extra: Value) -> Value {
    let mut b = json!({"source": {"bucket": ctx.bucket}, "target": {"container": ctx.container}});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}
