//! The runtime image, run as a platform runs it: `copy` and `watch` from the image built by
//! `scripts/image` (`SYNC_TEST_IMAGE`, which `scripts/test` sets), through the engine
//! `scripts/container` finds, on the host network to reach the stand-ins.
//!
//! S3 and SQS are reached over https at a host name (`s3-stand-in`, added to the
//! container's /etc/hosts) through a TLS front signed by a test CA, mounted over the image's
//! CA bundle: an image that resolved no names, or read no trust store, fails here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::handler::free_port;
use crate::harness::proxy::Proxy;
use crate::harness::tls::{upstream_of, TestCa, TlsFront};
use crate::harness::{sha, TestCtx, AWS_SECRET};

const HOST: &str = "s3-stand-in";

fn image() -> String {
    std::env::var("SYNC_TEST_IMAGE").unwrap_or_else(|_| {
        panic!("SYNC_TEST_IMAGE is not set: build the image first, `export SYNC_TEST_IMAGE=$(scripts/image --debug | tail -1)` (scripts/test does)")
    })
}

/// The engine, run without blocking the test's runtime (it serves the TLS front).
fn engine() -> tokio::process::Command {
    tokio::process::Command::new(ENGINE)
}

const ENGINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/container");

/// Removes a named container however the test ends.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::process::Command::new(ENGINE).args(["rm", "-f", &self.0]).output();
    }
}

/// The stand-ins' settings for the container, with S3 and SQS behind the https front.
struct Setup {
    ctx: TestCtx,
    ca: TestCa,
    /// Between the TLS front and moto: records which key signed each request.
    moto: Proxy,
    _front: TlsFront,
    env_file: tempfile::NamedTempFile,
}

impl Setup {
    async fn new(tag: &str, extra: &[(&str, &str)]) -> Setup {
        let ctx = TestCtx::new(tag).await;
        let moto = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
        let ca = TestCa::new();
        let front = TlsFront::start(&ca, &[HOST], upstream_of(&moto.url)).await;
        let mut env: HashMap<String, String> = ctx.env.clone();
        env.insert("AWS_ENDPOINT_URL".into(), format!("https://{HOST}:{}", front.port));
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        for k in ["PATH", "HOME", "AWS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"] {
            env.remove(k);
        }
        let mut env_file = tempfile::NamedTempFile::new().unwrap();
        for (k, v) in &env {
            use std::io::Write;
            writeln!(env_file, "{k}={v}").unwrap();
        }
        Setup {
            ctx,
            ca,
            moto,
            _front: front,
            env_file,
        }
    }

    /// `run` arguments up to the image: host network, the host name, the env file, and
    /// (with `trust`) the test CA over the image's bundle.
    fn run_args(&self, trust: bool) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "run".into(),
            "--network=host".into(),
            format!("--add-host={HOST}:127.0.0.1"),
            format!("--env-file={}", self.env_file.path().display()),
        ];
        if trust {
            a.push(format!(
                "--volume={}:/etc/ssl/certs/ca-certificates.crt:ro",
                self.ca.file.display()
            ));
        }
        a
    }
}

async fn output(c: &mut tokio::process::Command) -> (i32, String) {
    let out = c.output().await.expect("run the container engine");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn assert_no_secret(out: &str) {
    for secret in [AWS_SECRET, crate::harness::AZURITE_KEY] {
        assert!(!out.contains(secret), "a secret reached the output: {out}");
    }
}

#[tokio::test]
async fn copy_from_the_image_over_https_by_host_name_loses_nothing() {
    let s = Setup::new("imgcopy", &[]).await;
    let ctx = &s.ctx;
    let mut want = Vec::new();
    for (key, len) in [
        ("a.txt", 5usize),
        ("dir/ünï cödé.bin", 70_000),
        ("big.bin", 9 * 1024 * 1024),
    ] {
        let data = crate::harness::bytes(len, len as u64);
        ctx.put(key, data.clone()).await;
        want.push((key, data));
    }
    let src = format!("s3://{}/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let copy = ["copy", src.as_str(), dst.as_str(), "--no-progress", "--json"];

    // The image's own bundle does not hold the test CA: the handshake is refused.
    let (code, out) = output(engine().args(s.run_args(false)).arg("--rm").arg(image()).args(copy)).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        out.to_lowercase().contains("certificate") || out.contains("tls"),
        "{out}"
    );
    assert_no_secret(&out);

    let (code, out) = output(engine().args(s.run_args(true)).arg("--rm").arg(image()).args(copy)).await;
    assert_eq!(code, 0, "{out}");
    let summary: serde_json::Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(summary["counters"]["transferred"], 3, "{summary}");
    for (key, data) in &want {
        let blob = ctx.blob().read(key).await.unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(sha(&blob), sha(data), "{key}");
    }
    // The key really signed the requests that crossed the front, and never shows.
    assert!(
        s.moto.count(" akid=") >= 4,
        "signed requests: {}",
        s.moto.count(" akid=")
    );
    assert_no_secret(&out);
}

#[tokio::test]
async fn watch_from_the_image_syncs_changes_and_stops_on_sigterm_within_its_bound() {
    let s = Setup::new(
        "imgwatch",
        &[("SYNC_MODE", "mirror"), ("SYNC_SHUTDOWN_GRACE_SECS", "5")],
    )
    .await;
    let ctx = &s.ctx;
    ctx.put("gone.txt", "old").await;
    ctx.put("kept.txt", "v1").await;
    let (_, queue_url) = ctx.sqs_queue("imgq-").await;
    let (code, out) = crate::events::setup_events(&ctx.bucket, &queue_url, &["--fix-policy"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    // The bucket's existing objects first, from the image.
    let src = format!("s3://{}/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let (code, out) =
        output(
            engine()
                .args(s.run_args(true))
                .arg("--rm")
                .arg(image())
                .args(["copy", &src, &dst, "--no-progress"]),
        )
        .await;
    assert_eq!(code, 0, "{out}");

    let port = free_port();
    let name = format!("s3bs-{}", ctx.container);
    let running = Running(name.clone());
    let mut run = engine();
    run.args(s.run_args(true))
        .args([
            "--detach",
            "--name",
            &name,
            "--env",
            &format!("SYNC_SQS_QUEUE_URL={queue_url}"),
        ])
        .arg(image())
        .args(["watch", "--health-port", &port.to_string()]);
    let (code, out) = output(&mut run).await;
    assert_eq!(code, 0, "{out}");
    let logs = || async { output(engine().args(["logs", &name])).await.1 };

    // Ready (credentials and queues checked over https), then live changes land.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {}", logs().await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ctx.put("new.txt", "fresh").await;
    ctx.put("kept.txt", "v2").await;
    ctx.s3
        .client()
        .delete_object()
        .bucket(&ctx.bucket)
        .key("gone.txt")
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let new = ctx.blob().read("new.txt").await.ok();
        let kept = ctx.blob().read("kept.txt").await.ok();
        let gone = ctx.blob().read("gone.txt").await.is_err();
        if new.as_deref() == Some(b"fresh".as_slice()) && kept.as_deref() == Some(b"v2".as_slice()) && gone {
            break;
        }
        assert!(Instant::now() < deadline, "changes not synced: {}", logs().await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // SIGTERM, as a platform stops a task: the worker ends by itself, well inside 30 s.
    let stopping = Instant::now();
    let (code, out) = output(engine().args(["stop", "--time", "30", &name])).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "stopping took {:?}",
        stopping.elapsed()
    );
    let (_, exit) = output(engine().args(["inspect", "--format", "{{.State.ExitCode}}", &name])).await;
    assert_eq!(exit.trim(), "0", "killed rather than stopped: {}", logs().await);
    let logs = logs().await;
    assert!(logs.contains("worker stopped"), "{logs}");
    assert_no_secret(&logs);
    drop(running);
}
