//! Plays the Functions host's queue triggers: receives from the test's `list-pages` and
//! `copy-objects` queues on Azurite, invokes `ListPage` / `CopyObject` on the handler with the
//! documented payload, deletes on 2xx, leaves the message for redelivery otherwise, and moves
//! it to `<queue>-poison` after the fifth attempt, as host.json configures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use super::handler::{queue_payload, HandlerProc};
use super::TestCtx;
use s3_blob_sync::azure::queue::{WorkItem, WorkQueue};

/// How long a received message stays hidden (the host's visibilityTimeout).
pub const VISIBILITY: Duration = Duration::from_secs(10);
const MAX_DEQUEUE: u32 = 5;

/// The simulated host.
pub struct Host {
    /// `list-pages`.
    pub list: WorkQueue,
    /// `copy-objects`.
    pub copy: WorkQueue,
    /// `list-pages-poison`.
    pub list_poison: WorkQueue,
    /// `copy-objects-poison`.
    pub copy_poison: WorkQueue,
    /// Invocations per function.
    pub list_invocations: AtomicUsize,
    /// CopyObject invocations.
    pub copy_invocations: AtomicUsize,
    /// Parallel invocations.
    pub concurrency: usize,
}

impl Host {
    /// A host for `ctx`'s queues.
    pub async fn new(ctx: &TestCtx) -> Host {
        let cfg = ctx.config(&[]);
        let (list, copy) = (ctx.queue(&cfg.queues.list), ctx.queue(&cfg.queues.copy));
        list.create_if_missing().await.unwrap();
        copy.create_if_missing().await.unwrap();
        Host {
            list_poison: ctx.queue(&format!("{}-poison", cfg.queues.list)),
            copy_poison: ctx.queue(&format!("{}-poison", cfg.queues.copy)),
            list,
            copy,
            list_invocations: AtomicUsize::new(0),
            copy_invocations: AtomicUsize::new(0),
            concurrency: 16,
        }
    }

    /// One round: receives what is visible on both queues and invokes the handler for each.
    /// Returns how many messages were handled.
    pub async fn round(&self, h: &HandlerProc) -> usize {
        let mut work: Vec<(&'static str, &WorkQueue, WorkItem)> = Vec::new();
        for (f, q) in [("ListPage", &self.list), ("CopyObject", &self.copy)] {
            for _ in 0..4 {
                let items = q.receive(32, VISIBILITY).await.unwrap_or_default();
                let n = items.len();
                work.extend(items.into_iter().map(|i| (f, q, i)));
                if n < 32 {
                    break;
                }
            }
        }
        let n = work.len();
        futures::stream::iter(work)
            .for_each_concurrent(self.concurrency, |(f, q, item)| async move {
                self.deliver(h, f, q, item).await;
            })
            .await;
        n
    }

    /// Invokes `function` for `item`, acknowledging as the host does.
    pub async fn deliver(&self, h: &HandlerProc, function: &str, q: &WorkQueue, item: WorkItem) -> u16 {
        let counter = if function == "ListPage" {
            &self.list_invocations
        } else {
            &self.copy_invocations
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let msg: Value = serde_json::from_str(&item.text).unwrap_or(Value::String(item.text.clone()));
        let (status, _) = h.invoke(function, &queue_payload(&msg, item.dequeue_count)).await;
        if (200..300).contains(&status) {
            // A delivery that outlived its visibility may have been handed out again; the
            // host then fails to delete too, and the redelivery is the idempotency's job.
            let _ = q.delete(&item).await;
        } else if item.dequeue_count >= MAX_DEQUEUE {
            let poison = if function == "ListPage" {
                &self.list_poison
            } else {
                &self.copy_poison
            };
            poison.create_if_missing().await.unwrap();
            poison.send(&item.text, None).await.unwrap();
            q.delete(&item).await.unwrap();
        }
        status
    }

    /// Receives exactly `n` copy messages, hidden for two minutes, failing after a minute.
    pub async fn take_copies(&self, n: usize) -> Vec<WorkItem> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let want = (n - got.len()).min(32) as u32;
            got.extend(self.copy.receive(want, Duration::from_secs(120)).await.unwrap());
            assert!(
                Instant::now() < deadline,
                "only {} of {n} copy messages arrived",
                got.len()
            );
        }
        got
    }

    /// Delivers copy messages to `h`, each of which must succeed.
    pub async fn deliver_copies(&self, h: &HandlerProc, items: Vec<WorkItem>) {
        for m in items {
            assert_eq!(self.deliver(h, "CopyObject", &self.copy, m).await, 200);
        }
    }

    /// The next listing message, hidden for `visibility`, failing after a minute.
    pub async fn next_list(&self, visibility: Duration) -> WorkItem {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(m) = self.list.receive(1, visibility).await.unwrap().pop() {
                return m;
            }
            assert!(Instant::now() < deadline, "no listing message arrived");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Redoes listing `page` (its second delivery) on `h`, which must succeed, and
    /// acknowledges it.
    pub async fn redo_page(&self, h: &HandlerProc, page: &WorkItem) {
        let msg: Value = serde_json::from_str(&page.text).unwrap();
        let (status, reply) = h.invoke("ListPage", &queue_payload(&msg, 2)).await;
        assert_eq!(status, 200, "{reply}");
        self.list.delete(page).await.unwrap();
    }

    /// Runs rounds until `done()` holds, failing after `timeout`.
    pub async fn drive_until<F, Fut>(&self, h: &HandlerProc, timeout: Duration, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.round(h).await;
            if n == 0 && done().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "host: not done after {timeout:?}\n{}",
                tail(&h.logs())
            );
            if n == 0 {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    }
}

/// The last lines of a log, for assertion messages.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// An HTTP-trigger invoke payload (`Data.req`), as the host sends it.
pub fn http_payload(method: &str, path: &str, params: Value, body: Option<&str>) -> Value {
    json!({
        "Data": { "req": {
            "Url": format!("https://app.example.net{path}?code=fnkey123"),
            "Method": method,
            "Query": {"code": "fnkey123"},
            "Headers": {"Content-Type": ["application/json"]},
            "Params": params,
            "Body": body,
        }},
        "Metadata": {}
    })
}

/// Invokes an HTTP-triggered function; returns `Outputs.res` (status, headers, parsed body).
pub async fn http_invoke(h: &HandlerProc, function: &str, payload: &Value) -> (u16, Value, Value) {
    let (status, body) = h.invoke(function, payload).await;
    assert_eq!(status, 200, "{function}: the host call itself must succeed: {body}");
    let res = &body["Outputs"]["res"];
    let inner: Value = serde_json::from_str(res["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    (
        res["statusCode"].as_u64().unwrap_or(0) as u16,
        res["headers"].clone(),
        inner,
    )
}
