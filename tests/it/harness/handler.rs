//! Plays the Azure Functions host: starts the real binary as a custom handler on a free port
//! and POSTs the documented invoke payloads to it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running `s3-blob-sync serve`.
pub struct HandlerProc {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Drop for HandlerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the binary with `args` and exactly `env` (plus PATH and HOME); returns its exit
/// code and combined output.
pub fn run_binary(args: &[&str], env: &HashMap<String, String>) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_s3-blob-sync"))
        .args(args)
        .env_clear()
        .envs(base_env())
        .envs(env)
        .output()
        .expect("run binary");
    exit_and_output(&out)
}

/// Runs `migrate-checkpoints --json` with `args` under `env`, and returns what it counted.
pub async fn migrate_checkpoints(env: &HashMap<String, String>, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["migrate-checkpoints", "--json"];
    all.extend_from_slice(args);
    let (code, out) = run_binary_async(&all, env).await;
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap()
}

/// [`run_binary`] for async tests: the runtime keeps serving in-process proxies meanwhile.
pub async fn run_binary_async(args: &[&str], env: &HashMap<String, String>) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_s3-blob-sync"))
        .args(args)
        .env_clear()
        .envs(base_env())
        .envs(env)
        .output()
        .await
        .expect("run binary");
    exit_and_output(&out)
}

/// Exit code and stdout followed by stderr.
fn exit_and_output(out: &std::process::Output) -> (i32, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn base_env() -> Vec<(String, String)> {
    ["PATH", "HOME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

impl HandlerProc {
    /// Starts the handler with `env` and waits until `GET /` answers.
    pub async fn start(env: &HashMap<String, String>) -> HandlerProc {
        Self::start_at(std::path::Path::new(env!("CARGO_BIN_EXE_s3-blob-sync")), env).await
    }

    /// [`Self::start`] with the binary at `exe` (e.g. unpacked from the deployment zip).
    pub async fn start_at(exe: &std::path::Path, env: &HashMap<String, String>) -> HandlerProc {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("handler.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(exe)
            .arg("serve")
            .env_clear()
            .envs(base_env())
            .envs(env)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn handler");
        let mut h = HandlerProc {
            child,
            port,
            log_path,
            _dir: dir,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = h.child.try_wait() {
                panic!("handler exited early with {status}: {}", h.logs());
            }
            if let Ok(r) = h.client.get(format!("http://127.0.0.1:{port}/")).send().await {
                if r.status().is_success() {
                    return h;
                }
            }
            assert!(Instant::now() < deadline, "handler not ready: {}", h.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the binary with `args` (no readiness wait), logging to a file.
    pub fn spawn(args: &[&str], env: &HashMap<String, String>) -> HandlerProc {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("proc.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_s3-blob-sync"))
            .args(args)
            .env_clear()
            .envs(base_env())
            .envs(env)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn binary");
        HandlerProc {
            child,
            port: 0,
            log_path,
            _dir: dir,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// Waits for the process to exit by itself; its exit code.
    pub async fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// POSTs an invoke payload to `/<function>`; returns status and JSON body.
    pub async fn invoke(&self, function: &str, payload: &Value) -> (u16, Value) {
        self.invoke_raw(function, payload.to_string().into_bytes()).await
    }

    /// POSTs raw bytes (for malformed payloads).
    pub async fn invoke_raw(&self, function: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .post(format!("http://127.0.0.1:{}/{function}", self.port))
            .header("content-type", "application/json")
            .header("x-azure-functions-invocationid", uuid::Uuid::new_v4().to_string())
            .body(body)
            .send()
            .await
            .expect("invoke");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Sends SIGTERM, as a platform stopping the container does.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap().success();
        assert!(ok, "kill -TERM {pid}");
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// A queue-trigger invoke payload as the host sends it: the message JSON-encoded twice
/// under `Data.message`, metadata values quoted.
pub fn queue_payload(message: &Value, dequeue_count: u32) -> Value {
    let text = message.to_string();
    json!({
        "Data": { "message": serde_json::to_string(&text).unwrap() },
        "Metadata": {
            "DequeueCount": dequeue_count.to_string(),
            "Id": format!("\"{}\"", uuid::Uuid::new_v4()),
            "PopReceipt": "\"AgAAAAMAAAAAAAAA\"",
            "InsertionTime": "2026-11-23T10:00:00+00:00",
            "sys": { "MethodName": "CopyObject", "UtcNow": "2026-11-23T10:00:01Z", "RandGuid": uuid::Uuid::new_v4().to_string() }
        }
    })
}

/// Starts a bulk run with `POST /api/runs` on the local `serve`, once it answers (at most
/// 30 s); returns the run id.
pub async fn start_http_run(port: u16, body: &Value) -> String {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    loop {
        let r = client
            .post(format!("http://127.0.0.1:{port}/api/runs"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        if let Ok(r) = r {
            let status = r.status().as_u16();
            let reply: Value = serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default();
            assert_eq!(status, 202, "POST /api/runs: {reply}");
            return reply["runId"].as_str().expect("runId").to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "serve never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run `id`'s summary once it ended (GET answers 200), waiting at most `bound`.
pub async fn run_ended(port: u16, id: &str, bound: Duration) -> Option<Value> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    while started.elapsed() < bound {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/api/runs/{id}"))
            .send()
            .await
        {
            if r.status().as_u16() == 200 {
                return serde_json::from_str(&r.text().await.unwrap_or_default()).ok();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}
