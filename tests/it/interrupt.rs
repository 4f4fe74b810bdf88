//! An interrupted or killed `copy`: SIGINT stops cleanly (run Cancelled with its counters,
//! lock released, the resume command printed), SIGKILL leaves a lock that lapses with its
//! lease, `cancel` from another process stops it, and each re-run converges.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::handler::run_binary_async;
use crate::harness::proxy::Proxy;
use crate::harness::TestCtx;

const OBJECTS: usize = 300;

/// A bucket of small objects, and a blob endpoint slowed so a copy takes several seconds.
async fn setup(tag: &str) -> (TestCtx, Proxy) {
    let ctx = TestCtx::new(tag).await;
    ctx.put_many(
        (0..OBJECTS)
            .map(|i| (format!("i/{i:04}"), vec![b'i'; 1 + i % 30]))
            .collect(),
    )
    .await;
    let proxy = Proxy::start("http://127.0.0.1:10000").await;
    proxy.faults().delay_ms.store(60, std::sync::atomic::Ordering::SeqCst);
    (ctx, proxy)
}

fn copy_args(ctx: &TestCtx, endpoint: &str) -> Vec<String> {
    vec![
        "copy".into(),
        format!("s3://{}/", ctx.bucket),
        format!("{endpoint}/devstoreaccount1/{}/", ctx.container),
        "--concurrency".into(),
        "4".into(),
        "--no-progress".into(),
    ]
}

fn spawn(args: &[String], env: &HashMap<String, String>) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_s3-blob-sync"))
        .args(args)
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn copy")
}

async fn blobs(ctx: &TestCtx) -> usize {
    ctx.blob().list("").await.map(|l| l.len()).unwrap_or(0)
}

/// Waits (at most 60 s) until at least `n` blobs exist: the copy is under way.
async fn until_blobs(ctx: &TestCtx, n: usize) {
    let started = Instant::now();
    while blobs(ctx).await < n {
        assert!(started.elapsed() < Duration::from_secs(60), "the copy made no progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn finish(child: tokio::process::Child, within: Duration) -> (i32, String) {
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the process did not exit within {within:?}"))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn runs(ctx: &TestCtx) -> Vec<Value> {
    let (code, out) = run_binary_async(&["status", "--runs", "--json"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn summary(ctx: &TestCtx, id: &str) -> Value {
    let (_, out) = run_binary_async(&["status", id, "--json"], &ctx.env).await;
    serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap_or("{}")).unwrap()
}

/// A re-run without the slow proxy: exit 0, every blob there, each key counted once.
async fn rerun_converges(ctx: &TestCtx) {
    let args: Vec<String> = copy_args(ctx, "http://127.0.0.1:10000");
    let args: Vec<&str> = args.iter().map(String::as_str).chain(["--json"]).collect();
    let (code, out) = run_binary_async(&args, &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    let s: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let c = |k: &str| s["counters"][k].as_u64().unwrap();
    assert_eq!(c("scanned"), OBJECTS as u64, "{s}");
    assert_eq!(c("transferred") + c("noTransferNeeded"), OBJECTS as u64, "{s}");
    assert_eq!(blobs(ctx).await, OBJECTS);
}

#[tokio::test]
async fn sigint_mid_copy_cancels_cleanly_and_the_rerun_converges() {
    let (ctx, proxy) = setup("sigint").await;
    let child = spawn(&copy_args(&ctx, &proxy.url), &ctx.env);
    until_blobs(&ctx, 20).await;
    // `status RUN --watch` follows the run from another process until it ends.
    let running = runs(&ctx).await[0]["runId"].as_str().unwrap().to_string();
    let follow = spawn(
        &["status".into(), running.clone(), "--watch".into(), "--json".into()],
        &ctx.env,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child, "-INT");
    let (code, out) = finish(child, Duration::from_secs(45)).await;
    assert_eq!(code, 130, "{out}");
    let (code, followed) = finish(follow, Duration::from_secs(30)).await;
    let states: Vec<String> = followed
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(states.first().map(String::as_str), Some("Running"), "{followed}");
    assert_eq!(states.last().map(String::as_str), Some("Cancelled"), "{followed}");
    assert_eq!(code, 1, "a cancelled run is not a success: {followed}");
    assert!(out.contains("SIGINT: stopping"), "{out}");
    assert!(
        out.contains("resume with:") && out.contains(&format!("s3://{}/", ctx.bucket)),
        "{out}"
    );

    let run = &runs(&ctx).await[0];
    let id = run["runId"].as_str().unwrap();
    let s = summary(&ctx, id).await;
    assert_eq!(s["state"], "Cancelled", "{s}");
    assert!(s["reason"].as_str().unwrap().contains("SIGINT"), "{s}");
    // What finished in the grace period is counted; nothing else was committed.
    let present = blobs(&ctx).await;
    assert!(present < OBJECTS, "the copy was meant to be interrupted");
    assert_eq!(s["counters"]["transferred"].as_u64().unwrap() as usize, present, "{s}");
    // The lock was released: the re-run starts at once.
    rerun_converges(&ctx).await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn sigkill_mid_copy_frees_the_lock_when_its_lease_lapses() {
    let (mut ctx, proxy) = setup("sigkill").await;
    ctx.env.insert("SYNC_RUN_LEASE_SECS".into(), "6".into());
    let mut child = spawn(&copy_args(&ctx, &proxy.url), &ctx.env);
    until_blobs(&ctx, 20).await;
    child.kill().await.unwrap();
    let _ = child.wait().await;

    // At once: the lease still holds, and the refusal says how it frees itself.
    let args = copy_args(&ctx, "http://127.0.0.1:10000");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = run_binary_async(&args, &ctx.env).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("still running") && out.contains("SYNC_RUN_LEASE_SECS"),
        "{out}"
    );

    // Within the lease (plus a bound), a re-run takes over and converges.
    let started = Instant::now();
    loop {
        let (code, out) = run_binary_async(&args, &ctx.env).await;
        if code == 0 {
            break;
        }
        assert!(out.contains("still running"), "{out}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the lock never lapsed: {out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(blobs(&ctx).await, OBJECTS);
    let killed = runs(&ctx)
        .await
        .into_iter()
        .find(|r| r["state"] == "Cancelled")
        .expect("the killed run ends Cancelled");
    let s = summary(&ctx, killed["runId"].as_str().unwrap()).await;
    assert!(s["reason"].as_str().unwrap().contains("abandoned"), "{s}");
    rerun_converges(&ctx).await;
    ctx.cleanup().await;
}

#[tokio::test]
async fn cancel_from_another_process_stops_a_running_copy() {
    let (mut ctx, proxy) = setup("cancel").await;
    ctx.env.insert("SYNC_RUN_LEASE_SECS".into(), "3".into());
    let child = spawn(&copy_args(&ctx, &proxy.url), &ctx.env);
    until_blobs(&ctx, 20).await;
    let id = runs(&ctx).await[0]["runId"].as_str().unwrap().to_string();
    let (code, out) = run_binary_async(&["cancel", &id, "--dry-run"], &ctx.env).await;
    assert!(code == 0 && out.contains("would cancel"), "{out}");
    let (code, out) = run_binary_async(&["cancel", &id], &ctx.env).await;
    assert!(code == 0 && out.contains("cancelled"), "{out}");
    // Until the copying process has stopped, its lease keeps a second run out: two runs
    // must never write the same pair.
    let args = copy_args(&ctx, "http://127.0.0.1:10000");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = run_binary_async(&args, &ctx.env).await;
    assert_eq!(code, 2, "a second run started while the first still wrote: {out}");
    // The copying process notices within a third of its lease and stops (exit 1: stopped,
    // not interrupted by a signal).
    let (code, out) = finish(child, Duration::from_secs(45)).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ended elsewhere"), "{out}");
    let s = summary(&ctx, &id).await;
    assert_eq!(s["state"], "Cancelled", "{s}");
    rerun_converges(&ctx).await;
    ctx.cleanup().await;
}
