//! The seeded, model-based chaos test: random operations on a bucket (metadata-only changes
//! among them, some in the same second as the write before), their S3 events sent
//! duplicated, reordered and delayed (with per-key sequencers of varying length), faults on
//! both clouds (outages of the Azure queues longer than the relay's first pause among them),
//! two `watch` workers killed and restarted at random, concurrent `sync` runs (one of them
//! killed), and a bulk run over HTTP on `serve --work-queues` (killed mid-run and restarted;
//! on odd seeds every send to its listing queue is refused, so its chain dies and the sweep
//! must end it). At the end the target must equal the source key by key (bytes, headers, user
//! metadata), every checkpoint row must match its blob, nothing extra may exist, a last
//! `sync` must change nothing, a copy of `c/` into another target prefix of the same
//! container must neither disturb the rows of the first nor be disturbed by it, every run
//! must have ended and every finished run's counters must add up, and no queue may hold a
//! message.
//!
//! `CHAOS_SEEDS` (default 3), `CHAOS_OPS` (default 100 per seed), `CHAOS_KEYS` (default 16) and
//! `CHAOS_SEED` (replay one seed) size it; `bench/chaos.sh` runs the long soak. A failure
//! prints the seed and the first divergent key.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::harness::handler::{run_binary_async, run_ended, start_http_run};
use crate::harness::proxy::Proxy;
use crate::harness::{bytes, sha, TestCtx};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One S3 event as S3 sends it (key URL-encoded, `+` for a space).
fn event(bucket: &str, key: &str, name: &str, sequencer: &str, etag: Option<&str>, size: Option<u64>) -> Value {
    let enc: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
    let mut object = json!({"key": enc, "sequencer": sequencer});
    if let (Some(e), Some(s)) = (etag, size) {
        object["eTag"] = json!(e.trim_matches('"'));
        object["size"] = json!(s);
    }
    json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
        "eventTime": "2026-12-02T00:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": object}
    }]})
}

/// Per-key sequencers that only grow, of varying length: a fixed-width counter, then 0 to 4
/// more hex digits. Compared right-padded, each is later than every one before it, though a
/// later one is often shorter.
fn sequencer(rng: &mut StdRng, n: u64) -> String {
    let extra: String = (0..rng.random_range(0..5))
        .map(|_| {
            char::from_digit(rng.random_range(0..16), 16)
                .unwrap()
                .to_ascii_uppercase()
        })
        .collect();
    format!("{n:016X}{extra}")
}

/// A worker or run process, restartable.
struct Proc {
    args: Vec<String>,
    env: HashMap<String, String>,
    child: Option<tokio::process::Child>,
}

impl Proc {
    fn start(args: &[&str], env: &HashMap<String, String>) -> Proc {
        let mut p = Proc {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.clone(),
            child: None,
        };
        p.restart();
        p
    }

    fn restart(&mut self) {
        let log = tempfile::NamedTempFile::new().unwrap().into_temp_path().keep().unwrap();
        let out = std::fs::File::create(&log).unwrap();
        self.child = Some(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_s3-blob-sync"))
                .args(&self.args)
                .env_clear()
                .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
                .envs(&self.env)
                .stdout(std::process::Stdio::from(out.try_clone().unwrap()))
                .stderr(std::process::Stdio::from(out))
                .kill_on_drop(true)
                .spawn()
                .expect("spawn"),
        );
    }

    /// Starts a long-running process again when it exited by itself (one started during an
    /// outage gives up creating its queues), as an orchestrator would.
    fn revive(&mut self) {
        let exited = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if exited {
            self.restart();
        }
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }
}

/// What the model says the source holds.
#[derive(Clone, Debug)]
struct Expected {
    data: Vec<u8>,
    content_type: String,
    meta: BTreeMap<String, String>,
}

struct World {
    ctx: TestCtx,
    rng: StdRng,
    keys: Vec<String>,
    model: HashMap<String, Expected>,
    seq: HashMap<String, u64>,
    /// Events waiting to be sent (duplicates included), sent in random order.
    pending: Vec<String>,
    queue_url: String,
    sqs: aws_sdk_sqs::Client,
    multipart_left: u32,
    /// When each key was last written at the source.
    last_write: HashMap<String, Instant>,
}

impl World {
    fn next_seq(&mut self, key: &str) -> String {
        let n = self.seq.entry(key.to_string()).or_insert(0);
        *n += 1;
        let n = *n;
        sequencer(&mut self.rng, n)
    }

    fn emit(&mut self, key: &str, name: &str, etag: Option<&str>, size: Option<u64>) {
        self.last_write.insert(key.to_string(), Instant::now());
        let seq = self.next_seq(key);
        let body = event(&self.ctx.bucket, key, name, &seq, etag, size).to_string();
        for _ in 0..self.rng.random_range(1..=3) {
            self.pending.push(body.clone());
        }
    }

    /// Sends a random share of the pending events, shuffled.
    async fn flush_some(&mut self, all: bool) {
        self.pending.shuffle(&mut self.rng);
        let n = if all {
            self.pending.len()
        } else {
            self.rng.random_range(0..=self.pending.len())
        };
        for body in self.pending.drain(..n).collect::<Vec<_>>() {
            self.sqs
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(body)
                .send()
                .await
                .unwrap();
        }
    }

    async fn put(&mut self, key: &str) {
        let size = match self.rng.random_range(0..100) {
            0..=39 => self.rng.random_range(0..2048),
            40..=79 => self.rng.random_range(2048..200_000),
            // More than one block (1 MiB here): the multi-block streamed path.
            _ => self.rng.random_range(1_100_000..2_600_000),
        };
        let data = bytes(size, self.rng.random());
        let ct = ["text/plain", "application/json", "image/png"][self.rng.random_range(0..3)].to_string();
        let meta: BTreeMap<String, String> = [("gen".to_string(), self.rng.random::<u32>().to_string())].into();
        let mut req = self
            .ctx
            .s3
            .client()
            .put_object()
            .bucket(&self.ctx.bucket)
            .key(key)
            .content_type(&ct)
            .body(data.clone().into());
        for (k, v) in &meta {
            req = req.metadata(k, v);
        }
        let out = req.send().await.unwrap();
        let etag = out.e_tag().unwrap_or_default().to_string();
        self.model.insert(
            key.into(),
            Expected {
                data,
                content_type: ct,
                meta,
            },
        );
        self.emit(key, "ObjectCreated:Put", Some(&etag), Some(size as u64));
    }

    async fn put_multipart(&mut self, key: &str) {
        let c = self.ctx.s3.client();
        let up = c
            .create_multipart_upload()
            .bucket(&self.ctx.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .send()
            .await
            .unwrap();
        let id = up.upload_id().unwrap().to_string();
        let parts = [
            bytes(5 * 1024 * 1024, self.rng.random()),
            bytes(300_000, self.rng.random()),
        ];
        let mut done = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let n = i as i32 + 1;
            let r = c
                .upload_part()
                .bucket(&self.ctx.bucket)
                .key(key)
                .upload_id(&id)
                .part_number(n)
                .body(p.clone().into())
                .send()
                .await
                .unwrap();
            done.push(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(r.e_tag().unwrap())
                    .build(),
            );
        }
        let out = c
            .complete_multipart_upload()
            .bucket(&self.ctx.bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
            .send()
            .await
            .unwrap();
        let data = parts.concat();
        let size = data.len() as u64;
        self.model.insert(
            key.into(),
            Expected {
                data,
                content_type: "application/octet-stream".into(),
                meta: BTreeMap::new(),
            },
        );
        let etag = out.e_tag().unwrap_or_default().to_string();
        self.emit(key, "ObjectCreated:CompleteMultipartUpload", Some(&etag), Some(size));
    }

    async fn delete(&mut self, key: &str) {
        self.ctx
            .s3
            .client()
            .delete_object()
            .bucket(&self.ctx.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        self.model.remove(key);
        self.emit(key, "ObjectRemoved:Delete", None, None);
    }

    /// A copy-in-place that replaces headers and metadata: same bytes, same ETag (single
    /// part), and a new Last-Modified, or, half the time, at once, often in the same second as
    /// the key's write before it: then only the digest of headers and metadata tells the two
    /// apart (decisions 98).
    async fn touch(&mut self, key: &str) {
        let Some(mut e) = self.model.get(key).cloned() else {
            return self.put(key).await;
        };
        if let (false, Some(t)) = (self.rng.random_bool(0.5), self.last_write.get(key)) {
            tokio::time::sleep(Duration::from_millis(1050).saturating_sub(t.elapsed())).await;
        }
        e.content_type = "text/markdown".into();
        e.meta.insert("touched".into(), self.rng.random::<u16>().to_string());
        let mut req = self
            .ctx
            .s3
            .client()
            .copy_object()
            .bucket(&self.ctx.bucket)
            .key(key)
            .copy_source(format!(
                "{}/{}",
                self.ctx.bucket,
                url::form_urlencoded::byte_serialize(key.as_bytes())
                    .collect::<String>()
                    .replace('+', "%20")
            ))
            .metadata_directive(MetadataDirective::Replace)
            .content_type(&e.content_type);
        for (k, v) in &e.meta {
            req = req.metadata(k, v);
        }
        let out = req.send().await.unwrap();
        let etag = out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .to_string();
        let size = e.data.len() as u64;
        self.model.insert(key.into(), e);
        self.emit(key, "ObjectCreated:Copy", Some(&etag), Some(size));
    }

    /// The first key whose blob differs from the model, with what differs.
    async fn divergence(&self) -> Option<String> {
        let blob = self.ctx.blob();
        let listed: HashMap<String, u64> = blob
            .list("")
            .await
            .ok()?
            .into_iter()
            .map(|b| (b.name, b.size))
            .collect();
        for key in &self.keys {
            match (self.model.get(key), listed.get(key)) {
                (None, None) => {}
                (None, Some(_)) => return Some(format!("{key}: deleted at the source, the blob remains")),
                (Some(_), None) => return Some(format!("{key}: the source has it, no blob")),
                (Some(e), Some(size)) => {
                    if *size != e.data.len() as u64 {
                        return Some(format!("{key}: blob has {size} bytes, source {}", e.data.len()));
                    }
                    let got = blob.read(key).await.ok()?;
                    if sha(&got) != sha(&e.data) {
                        return Some(format!("{key}: content differs"));
                    }
                    let p = blob.properties(key).await.ok()??;
                    if p.headers.content_type.as_deref() != Some(e.content_type.as_str()) {
                        return Some(format!(
                            "{key}: content type {:?}, source {}",
                            p.headers.content_type, e.content_type
                        ));
                    }
                    let user: BTreeMap<String, String> = p
                        .metadata
                        .iter()
                        .filter(|(k, _)| !k.starts_with("s3sync_"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if user != e.meta {
                        return Some(format!("{key}: metadata {user:?}, source {:?}", e.meta));
                    }
                }
            }
        }
        // `alt/` is the other target prefix's (checked at the end by itself).
        if let Some(extra) = listed.keys().find(|k| !self.keys.contains(k) && !k.starts_with(ALT)) {
            return Some(format!("{extra}: a blob no key maps to"));
        }
        None
    }
}

/// The other target prefix a copy of `c/` goes to, in the same container.
const ALT: &str = "alt/";

/// Arms a random fault on one of the proxies; on the Azure queues' proxy, sometimes an
/// outage of 2 to 5 s, longer than the relay's first pause (`SYNC_SQS_RETRY_BASE_SECS`, 1 s
/// here, as an hour's outage is to the default 60 s).
fn random_fault(rng: &mut StdRng, proxies: &[&Proxy], queues: &Proxy) {
    if rng.random_bool(0.1) {
        queues.outage(Duration::from_secs(rng.random_range(2..=5)));
        return;
    }
    let p = proxies[rng.random_range(0..proxies.len())];
    let f = p.faults();
    match rng.random_range(0..5) {
        0 => p.storm(rng.random_range(1..4), 503),
        1 => f.resets.store(rng.random_range(1..3), Ordering::SeqCst),
        // A request that lands, and its reply that does not.
        2 => f.drop_replies_to.arm("PUT ", 1),
        3 => f.delay_ms.store(rng.random_range(0..40), Ordering::SeqCst),
        _ => f.drop_replies_to.arm("POST ", 1),
    }
}

async fn run_seed(seed: u64, ops: u64, nkeys: usize) -> u64 {
    let ctx = TestCtx::new("chaos").await;
    let (sqs, queue_url) = ctx.sqs_queue("chaos-q-").await;
    // Both clouds through fault proxies: S3 and SQS (moto), and Blob and Queue (Azurite).
    let s3_proxy = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let blob_proxy = Proxy::start("http://127.0.0.1:10000").await;
    let queue_proxy = Proxy::start("http://127.0.0.1:10001").await;
    let cs = crate::harness::TestCtx::connection_string(Some(&blob_proxy.url), Some(&queue_proxy.url), None);
    // The test's own copy and rejects queues come from the context, whose guard removes them.
    let (copy_queue, rejects) = (ctx.env["SYNC_COPY_QUEUE"].clone(), ctx.env["SYNC_REJECT_QUEUE"].clone());
    let env = ctx.env_with(&[
        ("AWS_ENDPOINT_URL", s3_proxy.url.as_str()),
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("SYNC_SQS_QUEUE_URL", queue_url.as_str()),
        ("SYNC_MODE", "mirror"),
        ("SYNC_BLOCK_SIZE_MIB", "1"),
        ("SYNC_SQS_RETRY_BASE_SECS", "1"),
        // Shorter than many copies under faults: the workers' heartbeat must keep a message
        // from being handed out again (and poisoned by its deliveries) while it is worked on.
        ("SYNC_WORKER_VISIBILITY_SECS", "4"),
        // A killed worker's SQS messages come back after this.
        ("SYNC_SQS_VISIBILITY_SECS", "8"),
        ("SYNC_DRAIN_BUDGET_SECS", "5"),
        ("SYNC_RUN_LEASE_SECS", "3"),
        // A run whose chain died is swept within seconds here (an hour by default).
        ("SYNC_RUN_STALL_SECS", "20"),
        ("SYNC_SWEEP_SECS", "2"),
        // One to three copy queues by seed (decision 125): every producer and worker must
        // reach each of them.
        ("SYNC_COPY_QUEUES", (1 + seed % 3).to_string().as_str()),
    ]);
    let copy_queues = s3_blob_sync::config::Config::from(&env).unwrap().queues.copy_names();
    assert_eq!(copy_queues[0], copy_queue);
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<String> = (0..nkeys)
        .map(|i| match i % 4 {
            0 => format!("c/{i:02}.bin"),
            1 => format!("c/dir {i:02}/ü+{i}.txt"),
            2 => format!("c/{i:02}"),
            _ => format!("deep/a/b/{i:02}.json"),
        })
        .collect();
    let mut w = World {
        ctx,
        rng: StdRng::seed_from_u64(seed ^ 0x5eed),
        keys: keys.clone(),
        model: HashMap::new(),
        seq: HashMap::new(),
        pending: Vec::new(),
        queue_url,
        sqs,
        multipart_left: 1,
        last_write: HashMap::new(),
    };
    let mut workers = [
        Proc::start(&["watch", "--workers", "4"], &env),
        Proc::start(&["watch", "--workers", "4"], &env),
    ];
    let sync_args = [
        "sync".to_string(),
        format!("s3://{}/", w.ctx.bucket),
        format!("{}/devstoreaccount1/{}/", blob_proxy.url, w.ctx.container),
        "--no-progress".into(),
        "--concurrency".into(),
        "4".into(),
    ];
    let mut syncs: Vec<Proc> = Vec::new();
    // The bulk run over HTTP: `serve --work-queues` plays the Functions host. Its pair (the
    // `c/` prefix on both sides) differs from the CLI runs' (the root), so no lock keeps them
    // apart, while it writes the same blobs as they and the events do.
    let port = crate::harness::handler::free_port();
    let serve_env = {
        let mut e = env.clone();
        e.insert("FUNCTIONS_CUSTOMHANDLER_PORT".into(), port.to_string());
        e
    };
    let mut serve: Option<Proc> = None;
    let mut http_run: Option<String> = None;
    let http_at = ops / 4;
    let http_kill_at = http_at + rng.random_range(1..8);

    let began = Instant::now();
    for op in 0..ops {
        let key = keys[rng.random_range(0..keys.len())].clone();
        match rng.random_range(0..100) {
            0..=54 => w.put(&key).await,
            55..=69 => {
                if w.model.contains_key(&key) {
                    w.delete(&key).await
                } else {
                    w.put(&key).await
                }
            }
            70..=79 => {
                if w.model.contains_key(&key) {
                    w.delete(&key).await;
                }
                w.put(&key).await
            }
            80..=86 => w.touch(&key).await,
            87 if w.multipart_left > 0 => {
                w.multipart_left -= 1;
                w.put_multipart(&key).await
            }
            _ => w.put(&key).await,
        }
        if rng.random_bool(0.5) {
            w.flush_some(false).await;
        }
        if rng.random_bool(0.15) {
            random_fault(&mut rng, &[&s3_proxy, &blob_proxy, &queue_proxy], &queue_proxy);
        }
        if rng.random_bool(0.04) {
            let i = rng.random_range(0..workers.len());
            workers[i].kill().await;
            workers[i].restart();
        }
        for p in workers.iter_mut().chain(serve.as_mut()) {
            p.revive();
        }
        // Two bulk runs along the way, mirror mode, over the same pair: the first is killed
        // at a random point (its lock lapses by lease), the second must finish.
        if op == ops / 3 || op == 2 * ops / 3 {
            syncs.push(Proc::start(
                &sync_args.iter().map(String::as_str).collect::<Vec<_>>(),
                &env,
            ));
        }
        if op == ops / 3 + 3 {
            if let Some(s) = syncs.first_mut() {
                s.kill().await;
            }
        }
        if op == http_at {
            // Its start must find the queues up (an outage would only make it exit and be
            // revived, and the run's start waits for it).
            queue_proxy.outage(Duration::ZERO);
            serve = Some(Proc::start(&["serve", "--work-queues"], &serve_env));
            let body = json!({
                "source": {"bucket": w.ctx.bucket, "prefix": "c/"},
                "target": {"container": w.ctx.container, "prefix": "c/"},
                "mode": "mirror",
            });
            http_run = Some(start_http_run(port, &body).await);
            // On odd seeds its listing chain dies: every send to the listing queue is
            // refused (the check after its page on all five deliveries), and the sweep must
            // end it.
            if seed % 2 == 1 {
                let list = &env["SYNC_LIST_QUEUE"];
                queue_proxy
                    .faults()
                    .refuse_to
                    .arm(format!("POST /devstoreaccount1/{list}/messages"), u32::MAX);
            }
        }
        if op == http_kill_at {
            if let Some(s) = serve.as_mut() {
                s.kill().await;
                s.restart();
            }
        }
    }
    w.flush_some(true).await;
    // Faults off; let the workers catch up, then compare.
    for p in [&s3_proxy, &blob_proxy, &queue_proxy] {
        p.faults().delay_ms.store(0, Ordering::SeqCst);
        p.faults().storm.store(0, Ordering::SeqCst);
        p.faults().resets.store(0, Ordering::SeqCst);
        p.faults().drop_replies_to.disarm();
        p.outage(Duration::ZERO);
    }
    let ops_s = began.elapsed().as_secs_f64();
    // First the events alone must converge the target (a bulk run would repair what they
    // missed and hide it).
    let waited = Instant::now();
    if let Some(d) = converge(&w, Duration::from_secs(150)).await {
        panic!("seed {seed}: divergence after {ops} operations, by events: {d}");
    }
    println!(
        "seed {seed}: {ops} operations in {ops_s:.1} s; events converged {:.1} s after the last",
        waited.elapsed().as_secs_f64()
    );
    for s in syncs.iter_mut().skip(1) {
        if let Some(c) = s.child.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(120), c.wait()).await;
        }
    }
    if let Some(id) = &http_run {
        let waited = Instant::now();
        let Some(s) = run_ended(port, id, Duration::from_secs(180)).await else {
            panic!("seed {seed}: the HTTP run {id} did not end within 180 s");
        };
        queue_proxy.faults().refuse_to.disarm();
        if seed % 2 == 1 {
            assert!(
                s["reason"].as_str().unwrap_or("").starts_with("stalled:"),
                "seed {seed}: the HTTP run whose chain died ended otherwise: {s}"
            );
        }
        println!(
            "seed {seed}: the HTTP run (serve killed at operation {http_kill_at}) ended {} ({:.1} s after the events converged): {}",
            s["state"],
            waited.elapsed().as_secs_f64(),
            s["counters"]
        );
        // The host keeps consuming after a run ends: a page still waiting out its backoff
        // when the sweep ended the run comes back, finds it ended and settles. Only then is
        // `serve` stopped, so nothing it alone consumes is left behind.
        let list = w.ctx.queue(&env["SYNC_LIST_QUEUE"]);
        let left = list.approximate_count().await.unwrap_or(0);
        let waited = Instant::now();
        assert!(
            drained(&list, Duration::from_secs(90)).await,
            "seed {seed}: the listing queue still holds messages 90 s after the HTTP run ended"
        );
        if left > 0 {
            println!(
                "seed {seed}: the listing queue held {left} messages when the run ended; drained {:.1} s later",
                waited.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(s) = serve.as_mut() {
        s.kill().await;
    }
    // The other target prefix: `c/` copied into `alt/c/` of the same container, now that the
    // source is still. Its rows and plans are its blobs' own (decisions 99).
    let alt_args = [
        "copy".to_string(),
        format!("s3://{}/c/", w.ctx.bucket),
        format!("{}/devstoreaccount1/{}/{ALT}c/", blob_proxy.url, w.ctx.container),
        "--no-progress".into(),
        "--json".into(),
    ];
    let alt_first = last_counters(&alt_args, &env, seed).await;
    // A last bulk run over the root pair: it takes over the killed run's lock once its lease
    // lapses (ending that run as abandoned), and must itself succeed and change nothing,
    // though the copy into `alt/` wrote blobs of the same keys.
    let mut last_args = sync_args.to_vec();
    last_args.push("--json".into());
    let last_sync = last_counters(&last_args, &env, seed).await;
    assert_eq!(
        (last_sync["transferred"].as_u64(), last_sync["deleted"].as_u64()),
        (Some(0), Some(0)),
        "seed {seed}: the last sync changed something: {last_sync}"
    );
    // And `alt/` again copies nothing: its rows were not taken over by the root's.
    let alt_again = last_counters(&alt_args, &env, seed).await;
    assert_eq!(
        alt_again["transferred"].as_u64(),
        Some(0),
        "seed {seed}: the second copy into {ALT} copied again (first: {alt_first}): {alt_again}"
    );
    let alt_blobs = w.ctx.blob().list(ALT).await.unwrap();
    let c_keys = w.model.keys().filter(|k| k.starts_with("c/")).count();
    assert_eq!(alt_blobs.len(), c_keys, "seed {seed}: {ALT} holds {alt_blobs:?}");
    for b in &alt_blobs {
        let key = b.name.trim_start_matches(ALT);
        let want = &w
            .model
            .get(key)
            .unwrap_or_else(|| panic!("seed {seed}: {} has no source", b.name))
            .data;
        assert_eq!(
            sha(&w.ctx.blob().read(&b.name).await.unwrap()),
            sha(want),
            "seed {seed}: {}",
            b.name
        );
    }
    let last = converge(&w, Duration::from_secs(60)).await;
    // The workers also consume the copy queue: copies still waiting out a backoff are theirs
    // to settle before they stop.
    for q in &copy_queues {
        assert!(
            drained(&w.ctx.queue(q), Duration::from_secs(90)).await,
            "seed {seed}: copy queue {q} still holds messages 90 s after the target converged"
        );
    }
    for wk in workers.iter_mut() {
        wk.kill().await;
    }
    if let Some(d) = last {
        panic!("seed {seed}: divergence after {ops} operations: {d}");
    }
    check_rows_runs_and_queues(&w, seed, &env, &copy_queues, &rejects).await;
    let runs: Vec<Value> = status_runs(&env).await;
    assert!(
        http_run.is_none()
            || runs
                .iter()
                .any(|r| Some(r["runId"].as_str().unwrap_or("")) == http_run.as_deref()),
        "seed {seed}: the HTTP run is not among the runs: {runs:?}"
    );
    w.ctx.cleanup().await;
    ops
}

/// Runs `args` (a `copy` or `sync` with `--json`) until it succeeds, waiting out a lock that
/// a killed run still holds; its counters.
async fn last_counters(args: &[String], env: &HashMap<String, String>, seed: u64) -> Value {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    loop {
        let (code, out) = run_binary_async(&args, env).await;
        if code == 0 {
            let line = out.lines().find(|l| l.starts_with('{')).unwrap_or("{}");
            let v: Value = serde_json::from_str(line).unwrap_or_default();
            return v["counters"].clone();
        }
        assert!(
            out.contains("still running") && started.elapsed() < Duration::from_secs(60),
            "seed {seed}: `{}` failed ({code}): {out}",
            args.join(" ")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits (at most `bound`) until `queue` holds no message, hidden or visible.
async fn drained(queue: &s3_blob_sync::azure::queue::WorkQueue, bound: Duration) -> bool {
    let started = Instant::now();
    loop {
        if queue.approximate_count().await.is_ok_and(|n| n == 0) {
            return true;
        }
        if started.elapsed() > bound {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every run, as `status --runs --json` lists them.
async fn status_runs(env: &HashMap<String, String>) -> Vec<Value> {
    let (code, out) = run_binary_async(&["status", "--runs", "--json"], env).await;
    assert_eq!(code, 0, "{out}");
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits (at most `bound`) until the target matches the model and SQS is empty; returns the
/// divergence still there at the end.
async fn converge(w: &World, bound: Duration) -> Option<String> {
    let started = Instant::now();
    loop {
        let depth = sqs_depth(w).await;
        let d = w.divergence().await;
        if d.is_none() && depth == 0 {
            return None;
        }
        if started.elapsed() > bound {
            return d.or(Some(format!("SQS still holds {depth} messages")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn sqs_depth(w: &World) -> u64 {
    let q = s3_blob_sync::aws::sqs::SqsQueue::new(&w.ctx.config(&[]).aws, &w.queue_url, Default::default()).await;
    q.depth().await.map(|d| d.visible + d.in_flight).unwrap_or(u64::MAX)
}

/// Checkpoint rows agree with blobs, finished runs add up, and no queue holds a message.
async fn check_rows_runs_and_queues(
    w: &World,
    seed: u64,
    env: &HashMap<String, String>,
    copies: &[String],
    rejects: &str,
) {
    let store = s3_blob_sync::state::checkpoint::CheckpointStore::new(w.ctx.table());
    for key in &w.keys {
        let row = store.get(&w.ctx.bucket, key, &w.ctx.target_id()).await.unwrap();
        let blob = w.ctx.blob().properties(key).await.unwrap();
        use s3_blob_sync::state::checkpoint::Outcome::*;
        match (row.map(|r| r.record), blob) {
            (Some(r), Some(b)) => assert!(
                matches!(r.outcome, Copied | NoTransferNeeded) && r.etag.as_ref() == b.metadata.get("s3sync_etag"),
                "seed {seed}: {key}: the row {r:?} does not describe the blob (provenance ETag {:?})",
                b.metadata.get("s3sync_etag")
            ),
            (Some(r), None) => assert!(
                !matches!(r.outcome, Copied | NoTransferNeeded),
                "seed {seed}: {key}: the row claims a blob that does not exist: {r:?}"
            ),
            (None, Some(_)) => panic!("seed {seed}: {key}: a blob without a checkpoint row"),
            (None, None) => {}
        }
    }
    for r in status_runs(env).await {
        let id = r["runId"].as_str().unwrap();
        let (_, s) = run_binary_async(&["status", id, "--json"], env).await;
        let s: Value = serde_json::from_str(s.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
        assert_ne!(s["state"], "Running", "seed {seed}: run {id} never ended: {s}");
        if s["state"] == "Succeeded" {
            let c = |k: &str| s["counters"][k].as_u64().unwrap_or(0);
            assert_eq!(
                crate::harness::accounted(&s),
                c("scanned"),
                "seed {seed}: run {id} counts do not add up: {s}"
            );
        }
    }
    let list = &env["SYNC_LIST_QUEUE"];
    // The page of a run whose chain was made to die may be parked: it is that run's only.
    let parked = w.ctx.queue(&format!("{list}-poison"));
    for m in parked.receive(32, Duration::from_secs(5)).await.unwrap_or_default() {
        assert!(seed % 2 == 1, "seed {seed}: a page was parked: {}", m.text);
        parked.delete(&m).await.unwrap();
    }
    let copy_and_poison = copies.iter().flat_map(|c| [c.clone(), format!("{c}-poison")]);
    for q in copy_and_poison.chain([list.to_string(), format!("{list}-poison"), rejects.to_string()]) {
        let items = w
            .ctx
            .queue(&q)
            .receive(32, Duration::from_secs(1))
            .await
            .unwrap_or_default();
        if let Some(m) = items.first() {
            // Printed as well: a CI log may keep the test's output and cut the panic message.
            println!(
                "seed {seed}: queue {q} still holds {} messages, e.g. {}",
                items.len(),
                m.text
            );
            panic!("seed {seed}: queue {q} still holds messages, e.g. {}", m.text);
        }
    }
}

#[tokio::test]
async fn chaos_converges_for_every_seed() {
    let seeds: Vec<u64> = match std::env::var("CHAOS_SEED") {
        Ok(s) => vec![s.parse().expect("CHAOS_SEED is a number")],
        Err(_) => (1..=env_num("CHAOS_SEEDS", 3)).collect(),
    };
    let ops = env_num("CHAOS_OPS", 100);
    let keys = env_num("CHAOS_KEYS", 16) as usize;
    let mut total = 0;
    for &seed in &seeds {
        total += run_seed(seed, ops, keys).await;
        println!("seed {seed}: {ops} operations, converged");
    }
    println!("seeds {}, operations {total}, divergences 0", seeds.len());
}
