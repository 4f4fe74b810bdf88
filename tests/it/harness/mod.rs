//! Shared harness for the integration tests: starts (or reuses) the real stand-ins on
//! loopback, gives each test its own bucket, container and table, and cleans up.

pub mod handler;
pub mod host;
pub mod proxy;

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

/// One test's resources.
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

    /// Removes the container, tables and queues (the bucket lives in moto's memory only).
    pub async fn cleanup(self) {
        let _ = self.blob().delete_container().await;
        let _ = self.table().delete_table().await;
        let cfg = self.config(&[]);
        let auth = cfg.azure.authorizer().unwrap();
        if let Ok(t) = TableClient::new(&cfg.azure, &auth, &cfg.runs_table, RetryPolicy::default()) {
            let _ = t.delete_table().await;
        }
        for q in [&cfg.copy_queue, &cfg.list_queue] {
            for name in [q.clone(), format!("{q}-poison")] {
                let _ = self.queue(&name).delete_queue().await;
            }
        }
    }

    /// Puts `n` objects concurrently (distinct keys; moto fails concurrent writes to one key).
    pub async fn put_many(&self, items: Vec<(String, Vec<u8>)>) {
        use futures::StreamExt;
        futures::stream::iter(items)
            .for_each_concurrent(32, |(k, v)| async move { self.put(&k, v).await })
            .await;
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
