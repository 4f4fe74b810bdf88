//! Shared harness for the integration tests: starts (or reuses) the real stand-ins on
//! loopback, gives each test its own bucket, container and table, and cleans up.

pub mod contract;
pub mod handler;
pub mod host;
pub mod objects;
pub mod proxy;
pub mod runs;
pub mod tls;

use std::collections::HashMap;
use std::sync::OnceLock;

use aws_sdk_s3::primitives::ByteStream;
use s3_blob_sync::aws::s3::S3Source;
use s3_blob_sync::azure::blob::BlobTarget;
use s3_blob_sync::azure::queue::WorkQueue;
use s3_blob_sync::azure::table::TableClient;
use s3_blob_sync::config::Config;
use s3_blob_sync::engine::Engine;
use s3_blob_sync::retry::RetryPolicy;

/// Azurite's public development key (documented, not a secret), used to build connection
/// strings that point the blob endpoint at a proxy.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// A distinctive fake AWS secret: moto ignores signatures, and the secret scan looks for it.
pub const AWS_SECRET: &str = "Sup3rSecretAwsKeyForScanning0000000000000";

/// The stand-ins' environment, from `scripts/emulators start` (which reuses running ones).
pub fn stack_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let out = std::process::Command::new(format!("{root}/scripts/emulators"))
            .arg("start")
            .output()
            .expect("run scripts/emulators start");
        assert!(
            out.status.success(),
            "scripts/emulators start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut env = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                env.insert(k.to_string(), v.trim_matches('\'').to_string());
            }
        }
        env.insert("AWS_SECRET_ACCESS_KEY".into(), AWS_SECRET.into());
        env.insert("SYNC_LOG_FORMAT".into(), "json".into());
        // Azurite cannot fetch external URLs, so plain-Azurite tests stream; tests that copy
        // server-side go through the copy-from-URL double and say so.
        env.insert("SYNC_COPY_PATH".into(), "streamed".into());
        env
    })
}

/// A unique lower-case name with `tag` in it, valid for buckets, containers and tables.
pub fn unique(tag: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{tag}{}", &id[..12])
}

/// One test's resources. Dropping it removes them, even when the test panics (see
/// [`TestCtx::cleanup`] and the `Drop` impl).
pub struct TestCtx {
    /// Source bucket.
    pub bucket: String,
    /// Target container.
    pub container: String,
    /// Checkpoint table.
    pub table: String,
    /// Environment for configs and spawned binaries.
    pub env: HashMap<String, String>,
    /// An S3 client for seeding.
    pub s3: S3Source,
    /// SQS queues made by [`TestCtx::sqs_queue`], deleted with the rest.
    sqs_queues: std::sync::Mutex<Vec<String>>,
    /// Set once the resources are gone, so `Drop` does nothing more.
    cleaned: bool,
}

impl TestCtx {
    /// Creates a bucket, a container and a table named after `tag`.
    pub async fn new(tag: &str) -> Self {
        let mut env = stack_env().clone();
        let bucket = unique(&format!("{tag}-"));
        let container = unique(&format!("{tag}-"));
        let table = unique(&tag.replace('-', ""));
        env.insert("SYNC_TARGET_CONTAINER".into(), container.clone());
        env.insert("SYNC_CHECKPOINT_TABLE".into(), table.clone());
        // Bulk runs: this test's own runs table and queues, and quick settle checks.
        env.insert("SYNC_RUNS_TABLE".into(), unique("runs"));
        env.insert("SYNC_COPY_QUEUE".into(), unique("copy-"));
        env.insert("SYNC_LIST_QUEUE".into(), unique("list-"));
        // Its own rejects queue too: the guard deletes it, and must not delete a shared one.
        env.insert("SYNC_REJECT_QUEUE".into(), unique("rejects-"));
        env.insert("SYNC_RUN_CHECK_SECS".into(), "1".into());
        let cfg = Config::from(&env).expect("stack config");
        let s3 = S3Source::new(&cfg.aws, RetryPolicy::default()).await;
        s3.client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create bucket");
        let ctx = TestCtx {
            bucket,
            container,
            table,
            env,
            s3,
            sqs_queues: Default::default(),
            cleaned: false,
        };
        ctx.blob().create_if_missing().await.expect("create container");
        ctx
    }

    /// The configuration with `overrides` applied on top of the stack's environment.
    pub fn config(&self, overrides: &[(&str, &str)]) -> Config {
        Config::from(&self.env_with(overrides)).expect("valid test config")
    }

    /// The environment with `overrides`.
    pub fn env_with(&self, overrides: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env = self.env.clone();
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        env
    }

    /// An engine with `overrides`, its table created.
    pub async fn engine(&self, overrides: &[(&str, &str)]) -> Engine {
        let e = Engine::from_config(&self.config(overrides)).await.expect("engine");
        e.checkpoint().ensure().await.expect("create table");
        e
    }

    /// A blob client on Azurite directly (not through any proxy), for assertions.
    pub fn blob(&self) -> BlobTarget {
        let cfg = self.config(&[]);
        BlobTarget::new(
            &cfg.azure,
            &cfg.azure.authorizer().unwrap(),
            &self.container,
            RetryPolicy::default(),
        )
        .expect("blob target")
    }

    /// The target identity used in checkpoint rows.
    /// A new SQS queue of this test (moto), named `<prefix><unique>`: a client and its URL.
    pub async fn sqs_queue(&self, prefix: &str) -> (aws_sdk_sqs::Client, String) {
        let sqs = s3_blob_sync::aws::sqs::SqsQueue::new(&self.config(&[]).aws, "unused", Default::default()).await;
        let url = sqs
            .client()
            .create_queue()
            .queue_name(unique(prefix))
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string();
        self.sqs_queues.lock().unwrap().push(url.clone());
        (sqs.client().clone(), url)
    }

    pub fn target_id(&self) -> String {
        format!("devstoreaccount1/{}", self.container)
    }

    /// The checkpoint table client.
    pub fn table(&self) -> TableClient {
        let cfg = self.config(&[]);
        TableClient::new(
            &cfg.azure,
            &cfg.azure.authorizer().unwrap(),
            &self.table,
            RetryPolicy::default(),
        )
        .unwrap()
    }

    /// The runs table client, reached the way `overrides` say (a proxy's connection
    /// string, for instance).
    pub fn runs_table(&self, overrides: &[(&str, &str)]) -> TableClient {
        let cfg = self.config(overrides);
        TableClient::new(
            &cfg.azure,
            &cfg.azure.authorizer().unwrap(),
            &cfg.tables.runs,
            cfg.retry,
        )
        .unwrap()
    }

    /// Puts an object.
    pub async fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        self.s3
            .client()
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body.into()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    /// Puts `key` in storage class `class` (moto keeps GLACIER objects unreadable until they
    /// are restored).
    pub async fn put_class(&self, key: &str, class: aws_sdk_s3::types::StorageClass, body: impl Into<Vec<u8>>) {
        self.s3
            .client()
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .storage_class(class)
            .body(ByteStream::from(body.into()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    /// A connection string whose blob endpoint is `blob_endpoint` (a proxy), queue and table
    /// on Azurite.
    pub fn connection_string_via(&self, blob_endpoint: &str) -> String {
        Self::connection_string(Some(blob_endpoint), None, None)
    }

    /// A connection string with any of the three endpoints replaced (by a proxy's URL); the
    /// others are Azurite's.
    pub fn connection_string(blob: Option<&str>, queue: Option<&str>, table: Option<&str>) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};\
             BlobEndpoint={}/devstoreaccount1;QueueEndpoint={}/devstoreaccount1;\
             TableEndpoint={}/devstoreaccount1;",
            blob.unwrap_or("http://127.0.0.1:10000"),
            queue.unwrap_or("http://127.0.0.1:10001"),
            table.unwrap_or("http://127.0.0.1:10002"),
        )
    }

    /// A queue client by name.
    pub fn queue(&self, name: &str) -> WorkQueue {
        let cfg = self.config(&[]);
        WorkQueue::new(
            &cfg.azure,
            &cfg.azure.authorizer().unwrap(),
            name,
            RetryPolicy::default(),
        )
        .unwrap()
    }

    /// Removes the container, tables and queues now (the bucket lives in moto's memory
    /// only). A test that does not call it, or panics first, has them removed on drop.
    pub async fn cleanup(mut self) {
        let sqs = self.sqs_queues.lock().unwrap().clone();
        remove(self.env.clone(), sqs).await;
        self.cleaned = true;
    }

    /// Puts `n` objects concurrently (distinct keys; moto fails concurrent writes to one key).
    pub async fn put_many(&self, items: Vec<(String, Vec<u8>)>) {
        use futures::StreamExt;
        futures::stream::iter(items)
            .for_each_concurrent(32, |(k, v)| async move { self.put(&k, v).await })
            .await;
    }
}

impl Drop for TestCtx {
    /// The guard: `Drop` cannot await and may run on the test's runtime thread while it
    /// unwinds, so the removal runs on a thread of its own, with its own runtime, and is
    /// waited for.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (env, sqs) = (
            self.env.clone(),
            self.sqs_queues.lock().map(|q| q.clone()).unwrap_or_default(),
        );
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(remove(env, sqs));
            }
        })
        .join();
    }
}

/// Removes what a test made: its container, checkpoint and runs tables, work queues (with
/// their poison queues, and every copy queue `SYNC_COPY_QUEUES` may name, whatever the test
/// set it to), rejects queue and SQS queues. Each removal is best effort.
async fn remove(mut env: HashMap<String, String>, sqs_queues: Vec<String>) {
    let most = s3_blob_sync::config::MAX_COPY_QUEUES.to_string();
    env.insert("SYNC_COPY_QUEUES".into(), most);
    let Ok(cfg) = Config::from(&env) else { return };
    let Ok(auth) = cfg.azure.authorizer() else { return };
    if let Some(c) = &cfg.mapping.container {
        if let Ok(b) = BlobTarget::new(&cfg.azure, &auth, c, RetryPolicy::default()) {
            let _ = b.delete_container().await;
        }
    }
    for t in [&cfg.tables.checkpoint, &cfg.tables.runs] {
        if let Ok(t) = TableClient::new(&cfg.azure, &auth, t, RetryPolicy::default()) {
            let _ = t.delete_table().await;
        }
    }
    let queues = cfg
        .queues
        .copy_names()
        .into_iter()
        .chain([cfg.queues.list.clone(), cfg.queues.reject.clone()]);
    let deletes = queues.flat_map(|q| [format!("{q}-poison"), q]).map(|name| {
        let (cfg, auth) = (&cfg, &auth);
        async move {
            if let Ok(q) = WorkQueue::new(&cfg.azure, auth, &name, RetryPolicy::default()) {
                let _ = q.delete_queue().await;
            }
        }
    });
    futures::future::join_all(deletes).await;
    if !sqs_queues.is_empty() {
        let sqs = s3_blob_sync::aws::sqs::SqsQueue::new(&cfg.aws, "unused", RetryPolicy::default()).await;
        for url in sqs_queues {
            let _ = sqs.client().delete_queue().queue_url(url).send().await;
        }
    }
}

/// Deterministic pseudo-random bytes (fast, no RNG state shared between tests).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Hex SHA-256, for comparing content.
pub fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The objects a run summary's counters account for (each scanned key has one of these
/// outcomes once it settles): compared with `scanned` to prove a run counted each key once.
pub fn accounted(summary: &serde_json::Value) -> u64 {
    [
        "excluded",
        "unsupported",
        "noTransferNeeded",
        "transferred",
        "failed",
        "vanished",
    ]
    .iter()
    .map(|k| summary["counters"][k].as_u64().unwrap_or(0))
    .sum()
}

/// Every `.rs` file under `root`, sorted.
pub fn rust_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// The guard: a test that panics halfway leaves no container, table, queue or SQS queue.
#[tokio::test]
async fn a_test_that_panics_leaves_nothing_behind() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let ctx = TestCtx::new("guard").await;
        let engine = ctx.engine(&[]).await; // creates the checkpoint table
        let cfg = ctx.config(&[]);
        ctx.queue(&cfg.queues.copy).create_if_missing().await.unwrap();
        let (_, sqs_url) = ctx.sqs_queue("guard-q-").await;
        ctx.put("k", "v").await;
        engine.copy_object(&objects::req(&ctx, "k")).await.unwrap();
        assert_eq!(ctx.blob().list("").await.unwrap().len(), 1, "the test made a blob");
        tx.send((ctx.env.clone(), sqs_url)).unwrap();
        panic!("the test fails here, before any cleanup call");
    });
    assert!(test.await.unwrap_err().is_panic());
    let (env, sqs_url) = rx.await.unwrap();
    let cfg = Config::from(&env).unwrap();
    let auth = cfg.azure.authorizer().unwrap();
    let container = cfg.mapping.container.clone().unwrap();
    let blob = BlobTarget::new(&cfg.azure, &auth, &container, RetryPolicy::default()).unwrap();
    // NotFound, not any error: a refused connection or a failed sign-in would pass too.
    let not_found = |e: s3_blob_sync::error::Error| e.kind() == s3_blob_sync::error::ErrorKind::NotFound;
    assert!(
        blob.list("").await.is_err_and(not_found),
        "container {container} is still there"
    );
    let table = TableClient::new(&cfg.azure, &auth, &cfg.tables.checkpoint, RetryPolicy::default()).unwrap();
    assert!(
        table.query(None, Some(1), None).await.is_err_and(not_found),
        "table {} is still there",
        cfg.tables.checkpoint
    );
    let queue = WorkQueue::new(&cfg.azure, &auth, &cfg.queues.copy, RetryPolicy::default()).unwrap();
    let gone = queue.receive(1, std::time::Duration::from_secs(1)).await;
    assert!(gone.is_err_and(not_found), "queue {} is still there", cfg.queues.copy);
    let sqs = s3_blob_sync::aws::sqs::SqsQueue::new(&cfg.aws, "unused", RetryPolicy::default()).await;
    let attrs = sqs.client().get_queue_attributes().queue_url(&sqs_url).send().await;
    // SQS names a missing queue by its code (the query and JSON protocols spell it apart).
    let code = attrs.map_err(|e| {
        use aws_sdk_sqs::error::ProvideErrorMetadata;
        e.code().unwrap_or_default().to_string()
    });
    assert!(
        code.as_ref()
            .is_err_and(|c| c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist")),
        "SQS queue {sqs_url} is still there ({code:?})"
    );
}
