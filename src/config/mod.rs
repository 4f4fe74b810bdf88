//! Configuration: read once from the environment, validated at start-up, failing fast with
//! the name of the variable that is wrong. Secrets are held in [`Secret`] so `Debug` is safe.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use url::Url;

pub mod azure;
pub mod location;

use crate::error::{Error, Result};
use crate::redact::ExposeSecret;
use crate::redact::Secret;
use azure::{AccountVars, AzureAuth, StorageAccount, QUEUE_ACCOUNT, STATE_ACCOUNT, TARGET_ACCOUNT};

/// App settings whose names start with this hold webhook URLs (see [`Config::webhooks`]).
pub const WEBHOOK_SETTING_PREFIX: &str = "SYNC_WEBHOOK_";

/// Which copy path to use (`SYNC_COPY_PATH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "kebab-case")]
pub enum CopyPath {
    /// Server-side, falling back to streamed when Azure cannot read the source.
    Auto,
    /// Server-side only (Put Blob/Block From URL).
    ServerSide,
    /// Bytes stream through this process (ranged GET -> Put Block).
    Streamed,
}

/// What to do with S3 user metadata whose name is not a valid Azure metadata name
/// (`SYNC_METADATA_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "lowercase")]
pub enum MetadataPolicy {
    /// Drop the entry (logged and counted).
    Exclude,
    /// Fail the object with a reason.
    Fail,
    /// Store as `rename_<sanitized>` plus `rename_key_<sanitized>` holding the original name.
    Rename,
}

/// Where S3 object tags go (`SYNC_TAGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::VariantNames, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum TagsMode {
    /// Blob index tags, written with the commit (searchable with Find Blobs by Tags).
    Index,
    /// One metadata entry, `s3sync_tags`, holding the tag set URL-encoded.
    Metadata,
    /// Not read at all.
    Drop,
}

/// Log output format (`SYNC_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable.
    Pretty,
}

/// Settings of the copy engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `SYNC_COPY_PATH`.
    pub copy_path: CopyPath,
    /// `SYNC_METADATA_POLICY`.
    pub metadata_policy: MetadataPolicy,
    /// `SYNC_TAGS` (default `index`): where an object's S3 tags go. A tag Azure cannot hold
    /// is dropped and recorded (`SYNC_METADATA_POLICY` `exclude` or `rename`) or fails the
    /// object (`fail`).
    pub tags: TagsMode,
    /// `SYNC_BLOCK_SIZE_MIB`: block size for staged copies (the layout may raise it so the
    /// object fits in 50,000 blocks).
    pub block_size: u64,
    /// `SYNC_BLOCK_CONCURRENCY`: blocks in flight per object.
    pub block_concurrency: usize,
    /// `SYNC_STREAM_BUFFER_MIB`: the most object bytes held in memory by all streamed copies
    /// of the process together (blocks being read or uploaded, small objects read whole).
    pub stream_buffer_bytes: u64,
    /// `SYNC_PRESIGN_EXPIRY_SECS`: life of a presigned source URL.
    pub presign_expiry: Duration,
    /// Largest object sent as one Put Blob From URL (Azure's limit is 5000 MiB).
    pub put_blob_from_url_max: u64,
    /// `SYNC_INVOCATION_MIB`: most bytes one invocation moves. A bigger object is split into
    /// block ranges, each its own `copy-objects` message, committed once all are staged.
    pub invocation_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            copy_path: CopyPath::Auto,
            metadata_policy: MetadataPolicy::Exclude,
            tags: TagsMode::Index,
            // 4 MiB x 8 in flight keeps a large streamed copy at Azurite's intake (bench/) in
            // 32 MiB of buffers; server-side copies send one Put Blob From URL up to 5000 MiB.
            block_size: 4 * 1024 * 1024,
            block_concurrency: 8,
            stream_buffer_bytes: 64 * 1024 * 1024,
            presign_expiry: Duration::from_secs(900),
            put_blob_from_url_max: 5000 * 1024 * 1024,
            // 2 GiB takes under two minutes even at a pessimistic 20 MB/s, well inside
            // host.json's 10-minute functionTimeout (docs/decisions.md).
            invocation_bytes: 2048 * 1024 * 1024,
        }
    }
}

/// Where the source lives.
#[derive(Debug, Clone, Default)]
pub struct AwsConfig {
    /// `AWS_REGION` (the SDK chain also reads profiles).
    pub region: Option<String>,
    /// `AWS_ENDPOINT_URL`: an S3/SQS-compatible endpoint (emulators).
    pub endpoint_url: Option<Url>,
    /// `SYNC_S3_FORCE_PATH_STYLE`.
    pub force_path_style: bool,
    /// Static credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN`; without them (and without `web_identity`) the SDK's provider
    /// chain (profile, web identity, IMDS, ECS) is used.
    pub static_credentials: Option<AwsStaticCredentials>,
    /// `SYNC_AWS_ROLE_ARN` + `SYNC_AWS_TOKEN_AUDIENCE`: assume this role with the Azure
    /// managed identity's token (no AWS key anywhere).
    pub web_identity: Option<WebIdentityConfig>,
}

/// An IAM role assumed with an Entra ID (managed identity) token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentityConfig {
    /// The role's ARN.
    pub role_arn: String,
    /// The token audience (resource) the role's trust policy expects, e.g. `api://<app id>`.
    pub audience: String,
}

/// Static AWS credentials; the secret parts never print.
#[derive(Debug, Clone)]
pub struct AwsStaticCredentials {
    /// Access key id (not secret on its own, but kept out of logs anyway).
    pub access_key_id: Secret,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token, for temporary credentials.
    pub session_token: Option<Secret>,
}

/// The whole configuration, one section per concern (as each backend's builder holds its
/// own options): read from the environment by [`Config::from`], each value checked there.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Azure storage account that holds the target container.
    pub azure: StorageAccount,
    /// The account that holds the checkpoint and run tables: its own
    /// (SYNC_STATE_CONNECTION_STRING or SYNC_STATE_ACCOUNT), or the target's when neither is
    /// set (decision 124).
    pub state: StorageAccount,
    /// The account that holds the work queues: its own (SYNC_QUEUE_CONNECTION_STRING or
    /// SYNC_QUEUE_ACCOUNT), or the state account when neither is set (decision 124).
    pub queue_account: StorageAccount,
    /// The AWS side.
    pub aws: AwsConfig,
    /// The engine.
    pub engine: EngineConfig,
    /// Where objects go when a message or event does not say: the default container, the
    /// key-to-name mapping and the sync mode.
    pub mapping: MappingConfig,
    /// The tables that hold the state.
    pub tables: TableConfig,
    /// The Azure work queues and how their messages are worked.
    pub queues: QueueConfig,
    /// Incremental sync: the SQS queue of S3 events and how its messages are relayed.
    pub relay: RelayConfig,
    /// Bulk runs: their checks, stall bound, leases, sweep, prune pages, schedule and webhooks.
    pub runs: RunsConfig,
    /// The HTTP server (`serve`): who may call it.
    pub server: ServerConfig,
    /// `SYNC_LOG_FORMAT` (default json).
    pub log_format: LogFormat,
    /// The one retry policy every call to a cloud goes through (see [`crate::retry`]).
    pub retry: crate::retry::RetryPolicy,
}

/// Where objects go when a message or event does not say: the default container, the
/// key-to-name mapping and the sync mode.
#[derive(Debug, Clone)]
pub struct MappingConfig {
    /// `SYNC_TARGET_CONTAINER`: default container for queue messages that name none.
    pub container: Option<String>,
    /// `SYNC_SOURCE_PREFIX`: removed from keys when naming blobs.
    pub source_prefix: String,
    /// `SYNC_TARGET_PREFIX`.
    pub target_prefix: String,
    /// `SYNC_MODE`: `additive` (default: never delete) or `mirror` (delete blobs whose
    /// source is gone), for messages that do not say.
    pub mode: crate::model::SyncMode,
}

/// The tables that hold the state.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// `SYNC_CHECKPOINT_TABLE` (default `objects`).
    pub checkpoint: String,
    /// `SYNC_RUNS_TABLE` (default `runs`): bulk runs, their counters and locks.
    pub runs: String,
}

/// The Azure work queues and how their messages are worked.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// `SYNC_COPY_QUEUE` (default `copy-objects`; keep equal to CopyObject's function.json).
    pub copy: String,
    /// `SYNC_COPY_QUEUES` (default 1, at most [`MAX_COPY_QUEUES`]): copy messages are spread
    /// over this many queues, `SYNC_COPY_QUEUE` and then `<it>-1`, `<it>-2`, … (decision 125).
    pub copies: u8,
    /// `SYNC_LIST_QUEUE` (default `list-pages`; keep equal to ListPage's function.json).
    pub list: String,
    /// `SYNC_REJECT_QUEUE` (default `sqs-rejects`): malformed SQS bodies are parked here.
    pub reject: String,
    /// `SYNC_MAX_DEQUEUE_COUNT` (default 5): on this attempt a failure is final.
    pub max_dequeue_count: u32,
    /// `SYNC_WORKER_VISIBILITY_SECS` (default 60): how long the `watch` worker (and `serve
    /// --work-queues`) hides a message it works on, extended every half period while the
    /// work runs; after a crash the message returns this much later.
    pub visibility: Duration,
    /// `SYNC_SHUTDOWN_GRACE_SECS` (default 20): on SIGTERM a worker stops receiving and gives
    /// the messages it holds this long to finish; the rest it hands back (visible again at
    /// once, for another worker), so it exits inside the platforms' 30 s stop timeout.
    pub shutdown_grace: Duration,
}

/// Most copy queues (`SYNC_COPY_QUEUES`); the Function App ships a `CopyObject` function for
/// each (`functions/CopyObject`, `functions/CopyObject1` … `CopyObject15`).
pub const MAX_COPY_QUEUES: u8 = 16;

impl QueueConfig {
    /// The copy queues' names, the first being `SYNC_COPY_QUEUE`.
    pub fn copy_names(&self) -> Vec<String> {
        (0..self.copies)
            .map(|i| match i {
                0 => self.copy.clone(),
                i => format!("{}-{i}", self.copy),
            })
            .collect()
    }
}

/// Incremental sync: the SQS queue of S3 events and how its messages are relayed.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `SYNC_SQS_QUEUE_URL`: the SQS queue receiving the bucket's event notifications.
    pub queue_url: Option<String>,
    /// `SYNC_DRAIN_BUDGET_SECS` (default 50): how long one DrainSqs invocation receives.
    /// DrainSqs fires every minute, so 50 s keeps one receiver running almost all the time
    /// and always finishes well inside host.json's functionTimeout.
    pub drain_budget: Duration,
    /// `SYNC_SQS_RETRY_BASE_SECS` (default 60): after a failed relay an SQS message stays
    /// hidden this long times 4^(receives-1), at most 12 h, so an Azure outage spends the
    /// queue's receive count slowly (with `maxReceiveCount` 5: 60+240+960+3840 s, about
    /// 85 minutes before the dead-letter queue).
    pub retry_base: Duration,
    /// `SYNC_SQS_VISIBILITY_SECS` (default 60): how long a received SQS message stays hidden
    /// while it is relayed (extended while the relay runs long); the messages of a relay that
    /// died come back after it.
    pub visibility: Duration,
}

/// The most key ranges one run's listing splits into (`SYNC_LIST_SHARDS`, `listShards`): a
/// shard's split is one table transaction with its children, under the 100 operations a
/// transaction may hold.
pub const MAX_LIST_SHARDS: u32 = 64;

/// Bulk runs: their checks, stall bound, leases, sweep, prune pages, schedule and webhooks.
#[derive(Debug, Clone)]
pub struct RunsConfig {
    /// `SYNC_RUN_CHECK_SECS` (default 10): how often a listed run checks whether its copies
    /// have settled.
    pub check_interval: Duration,
    /// `SYNC_RUN_STALL_SECS` (default 3600): a run whose copies make no progress this long
    /// ends PartiallySucceeded, naming how many never settled.
    pub stall: Duration,
    /// `SYNC_NOTIFY_RETRY_SECS` (default 60): the pause after a run's first failed webhook
    /// send; it doubles after each, up to an hour, for at most six sends (about 31 minutes at
    /// the default). 0 tries again at the next check.
    pub notify_retry: Duration,
    /// `SYNC_SWEEP_SECS` (default 60): how often `serve --work-queues` and `watch` look for
    /// runs that stopped moving (the Functions timers sweep on their own schedules).
    pub sweep_interval: Duration,
    /// `SYNC_PRUNE_PAGE` (default 1000, at most 5000): blobs a mirror run's prune lists per
    /// page; each check lists and judges pages (or deletes) for at most 20 s, then hands the
    /// rest to the next check, so no invocation outlives the host's timeout.
    pub prune_page: u32,
    /// `SYNC_LIST_SHARDS` (default 8, at most 64): how many key ranges a run's listing may
    /// split into and list at once (a run's `listShards` overrides it). The ranges are found
    /// from the keys' folders, or their next characters where there are none, and a range
    /// that stays large splits again while it has shards to spare.
    pub list_shards: u32,
    /// `SYNC_LIST_PAGE_KEYS` (default 1000, the most S3 returns): keys a listing page asks
    /// for. Smaller pages mean smaller saved listings and more, shorter list steps.
    pub list_page_keys: u32,
    /// `SYNC_VERIFY_SLICE_SECS` (default 60, at most 600): how long one `list-pages` message
    /// of a verify run compares before it saves its place and queues the next; 0 saves at
    /// every clean point (after each page, in most prefixes).
    pub verify_slice: Duration,
    /// `SYNC_RUN_LEASE_SECS` (default 60): a run driven by a CLI process holds its
    /// source/target lock as a lease it renews; if the process dies (SIGKILL, OOM, eviction)
    /// the lock frees itself this long after the last renewal, and the next run takes over.
    pub lease: Duration,
    /// `SYNC_SCHEDULED_RUN`: the run body ScheduledRun starts (validated at start-up, but
    /// for `notify`, which is checked when the timer fires). Kept as a secret because it
    /// names buckets and containers, though its webhook is only a setting's name.
    pub scheduled: Option<Secret>,
    /// `SYNC_SCHEDULE`: when `ScheduledRun` fires (NCRONTAB, six fields, UTC). The Functions
    /// host reads it through `%SYNC_SCHEDULE%`; `serve --work-queues` fires on it itself.
    pub schedule: Option<String>,
    /// `SYNC_NOTIFY_ALLOW_HOSTS`: hosts (`name` or `name:port`, comma-separated) a run's
    /// webhook may reach although they are loopback or private, and over plain http: for a
    /// local receiver. Every other webhook must be https to a public address.
    pub notify_allow_hosts: Vec<String>,
    /// `SYNC_WEBHOOK_<NAME>`: webhook URLs a run names by reference (`"notify":
    /// "setting:SYNC_WEBHOOK_<NAME>"`), so the URL, which carries a credential, lives only in
    /// the app setting (a Key Vault reference in Azure) and never in a run row.
    pub webhooks: BTreeMap<String, Secret>,
}

/// The HTTP server (`serve`): who may call it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `SYNC_API_KEY`: the key `serve` requires outside the Functions host, sent in
    /// the `x-functions-key` header, a Bearer token or the `code` query parameter; at least
    /// 32 characters.
    /// Without it `serve` listens on loopback only and answers loopback host names only.
    pub api_key: Option<Secret>,
    /// The Functions host started this process (`FUNCTIONS_WORKER_RUNTIME` is set): the host
    /// alone calls the invoke routes, and its function keys gate the HTTP functions.
    pub functions_host: bool,
}

/// Reads variables from somewhere: the process environment, or a map in tests.
pub trait Env {
    /// The value of `name`, if set and not empty.
    fn get(&self, name: &str) -> Option<String>;
    /// The names of the set, non-empty variables that start with `prefix`.
    fn names_with_prefix(&self, prefix: &str) -> Vec<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
    fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with(prefix) && self.get(k).is_some())
            .collect()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned().filter(|v| !v.trim().is_empty())
    }
    fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.keys()
            .filter(|k| k.starts_with(prefix) && Env::get(self, k).is_some())
            .cloned()
            .collect()
    }
}

fn parse<T: FromStr>(env: &dyn Env, name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match env.get(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e| Error::invalid(format!("{name}: {e}"))),
    }
}

/// A setting that names one of an enum's variants; the refusal names the setting and lists
/// the variants.
fn choice<T: FromStr + strum::VariantNames>(env: &dyn Env, name: &str, default: T) -> Result<T> {
    match env.get(name) {
        None => Ok(default),
        Some(v) => crate::model::parse_choice(v.trim()).map_err(|e| Error::invalid(format!("{name}: {e}"))),
    }
}

fn bool_var(env: &dyn Env, name: &str) -> Result<bool> {
    match env.get(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(v) => Err(Error::invalid(format!("{name}: `{v}` is not true or false"))),
    }
}

impl Config {
    /// Reads and validates the configuration from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from(&ProcessEnv)
    }

    /// The configuration of the local stand-ins with every default: Azurite's development
    /// storage and moto on its default port. For tests and fuzz targets that need a valid
    /// `Config` without an environment.
    pub fn for_emulators() -> Self {
        let env: HashMap<String, String> = [
            ("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self::from(&env).expect("the emulator configuration is valid")
    }

    /// Reads and validates the configuration from `env`, section by section; the first
    /// bad value is refused, naming its variable.
    pub fn from(env: &dyn Env) -> Result<Self> {
        let secs = |name: &str, default: u64, min: u64, max: u64| -> Result<Duration> {
            bounded(env, name, default, min, Some(max), "").map(Duration::from_secs)
        };
        let azure = account(env, &TARGET_ACCOUNT)?.ok_or_else(|| {
            Error::invalid(
                "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT must be set \
                 (for the local stand-ins: AZURE_STORAGE_CONNECTION_STRING='UseDevelopmentStorage=true')",
            )
        })?;
        let state = account(env, &STATE_ACCOUNT)?.unwrap_or_else(|| azure.clone());
        Ok(Config {
            queue_account: account(env, &QUEUE_ACCOUNT)?.unwrap_or_else(|| state.clone()),
            state,
            azure,
            aws: aws_config(env)?,
            engine: engine_config(env)?,
            mapping: MappingConfig {
                container: container_var(env, "SYNC_TARGET_CONTAINER")?,
                source_prefix: env.get("SYNC_SOURCE_PREFIX").unwrap_or_default(),
                target_prefix: env.get("SYNC_TARGET_PREFIX").unwrap_or_default(),
                mode: choice(env, "SYNC_MODE", crate::model::SyncMode::Additive)?,
            },
            tables: TableConfig {
                checkpoint: table_var(env, "SYNC_CHECKPOINT_TABLE", "objects")?,
                runs: table_var(env, "SYNC_RUNS_TABLE", "runs")?,
            },
            queues: QueueConfig {
                copy: queue_var(env, "SYNC_COPY_QUEUE", "copy-objects")?,
                copies: copy_queues(env)?,
                list: queue_var(env, "SYNC_LIST_QUEUE", "list-pages")?,
                reject: queue_var(env, "SYNC_REJECT_QUEUE", "sqs-rejects")?,
                max_dequeue_count: bounded(env, "SYNC_MAX_DEQUEUE_COUNT", 5, 1, None, "")?,
                visibility: secs("SYNC_WORKER_VISIBILITY_SECS", 60, 1, 7 * 24 * 3600)?,
                shutdown_grace: secs("SYNC_SHUTDOWN_GRACE_SECS", 20, 0, 3600)?,
            },
            relay: RelayConfig {
                queue_url: sqs_queue_url(env)?,
                drain_budget: secs("SYNC_DRAIN_BUDGET_SECS", 50, 5, 3600)?,
                retry_base: secs("SYNC_SQS_RETRY_BASE_SECS", 60, 1, 3600)?,
                visibility: secs("SYNC_SQS_VISIBILITY_SECS", 60, 5, 43_200)?,
            },
            runs: RunsConfig {
                check_interval: secs("SYNC_RUN_CHECK_SECS", 10, 1, 600)?,
                stall: secs("SYNC_RUN_STALL_SECS", 3600, 5, 7 * 24 * 3600)?,
                notify_retry: secs("SYNC_NOTIFY_RETRY_SECS", 60, 0, 3600)?,
                sweep_interval: secs("SYNC_SWEEP_SECS", 60, 1, 3600)?,
                prune_page: bounded(env, "SYNC_PRUNE_PAGE", 1000, 1, Some(5000), "")?,
                list_shards: bounded(env, "SYNC_LIST_SHARDS", 8, 1, Some(MAX_LIST_SHARDS), "")?,
                list_page_keys: bounded(env, "SYNC_LIST_PAGE_KEYS", 1000, 1, Some(1000), "")?,
                verify_slice: secs("SYNC_VERIFY_SLICE_SECS", 60, 0, 600)?,
                lease: secs("SYNC_RUN_LEASE_SECS", 60, 2, 3600)?,
                scheduled: env.get("SYNC_SCHEDULED_RUN").map(Secret::from),
                schedule: env.get("SYNC_SCHEDULE"),
                notify_allow_hosts: env
                    .get("SYNC_NOTIFY_ALLOW_HOSTS")
                    .map(|v| {
                        v.split(',')
                            .map(|h| h.trim().to_ascii_lowercase())
                            .filter(|h| !h.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                webhooks: env
                    .names_with_prefix(WEBHOOK_SETTING_PREFIX)
                    .into_iter()
                    .filter_map(|k| env.get(&k).map(|v| (k, Secret::from(v.trim().to_string()))))
                    .collect(),
            },
            server: ServerConfig {
                api_key: api_key(env)?,
                functions_host: env.get("FUNCTIONS_WORKER_RUNTIME").is_some(),
            },
            log_format: choice(env, "SYNC_LOG_FORMAT", LogFormat::Json)?,
            retry: crate::retry::RetryPolicy::default(),
        })
    }
}

/// A whole-number setting of at least `min` (and at most `max`); the refusal names the
/// setting, the bounds and, in `note`, what they protect.
fn bounded<T>(env: &dyn Env, name: &str, default: T, min: T, max: Option<T>, note: &str) -> Result<T>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
    T::Err: std::fmt::Display,
{
    let v = parse(env, name, default)?;
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(" ({note})")
    };
    match max {
        Some(max) if v < min || v > max => {
            Err(Error::invalid(format!("{name}: must be between {min} and {max}{note}")))
        }
        None if v < min => Err(Error::invalid(format!("{name}: must be at least {min}{note}"))),
        _ => Ok(v),
    }
}

/// A table name setting, checked against Azure's rules.
fn table_var(env: &dyn Env, name: &str, default: &str) -> Result<String> {
    let t = env.get(name).unwrap_or_else(|| default.into());
    crate::model::validate_table_name(&t).map_err(|e| Error::invalid(format!("{name}: {}", e.message())))?;
    Ok(t)
}

/// A queue name setting, checked against Azure's rules.
/// `SYNC_COPY_QUEUES`, with every queue name it makes (and its poison queue's) checked.
fn copy_queues(env: &dyn Env) -> Result<u8> {
    let n: u8 = bounded(env, "SYNC_COPY_QUEUES", 1, 1, Some(MAX_COPY_QUEUES), "")?;
    let base = env.get("SYNC_COPY_QUEUE").unwrap_or_else(|| "copy-objects".into());
    for i in 1..n {
        crate::model::validate_queue_name(&format!("{base}-{i}-poison")).map_err(|e| {
            Error::invalid(format!(
                "SYNC_COPY_QUEUE: `{base}-{i}-poison` (with SYNC_COPY_QUEUES={n}): {}",
                e.message()
            ))
        })?;
    }
    Ok(n)
}

fn queue_var(env: &dyn Env, name: &str, default: &str) -> Result<String> {
    let q = env.get(name).unwrap_or_else(|| default.to_string());
    crate::model::validate_queue_name(&q).map_err(|e| Error::invalid(format!("{name}: {}", e.message())))?;
    Ok(q)
}

/// A container name setting, when set, checked against Azure's rules.
fn container_var(env: &dyn Env, name: &str) -> Result<Option<String>> {
    let c = env.get(name);
    if let Some(c) = &c {
        crate::model::validate_container_name(c).map_err(|e| Error::invalid(format!("{name}: {}", e.message())))?;
    }
    Ok(c)
}

/// `SYNC_SQS_QUEUE_URL`, when set: a queue URL.
fn sqs_queue_url(env: &dyn Env) -> Result<Option<String>> {
    let Some(v) = env.get("SYNC_SQS_QUEUE_URL") else {
        return Ok(None);
    };
    let u = Url::parse(&v)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.path().len() > 1)
        .ok_or_else(|| {
            Error::invalid("SYNC_SQS_QUEUE_URL: not a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")
        })?;
    Ok(Some(u.to_string()))
}

/// `SYNC_API_KEY`, when set: at least 32 characters.
fn api_key(env: &dyn Env) -> Result<Option<Secret>> {
    let key = env.get("SYNC_API_KEY").map(|k| Secret::from(k.trim()));
    if key.as_ref().is_some_and(|k| k.expose_secret().len() < 32) {
        return Err(Error::invalid(
            "SYNC_API_KEY: must be at least 32 characters (for example `openssl rand -hex 32`)",
        ));
    }
    Ok(key)
}

/// The AWS side: endpoint, region, and either a web identity (a role assumed with the
/// managed identity's token) or static keys, never both.
fn aws_config(env: &dyn Env) -> Result<AwsConfig> {
    let endpoint_url = match env.get("AWS_ENDPOINT_URL") {
        None => None,
        Some(v) => Some(
            Url::parse(&v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| Error::invalid("AWS_ENDPOINT_URL: not a valid http(s) URL"))?,
        ),
    };
    let web_identity = match (env.get("SYNC_AWS_ROLE_ARN"), env.get("SYNC_AWS_TOKEN_AUDIENCE")) {
        (None, None) => None,
        (Some(role_arn), Some(audience)) => {
            let arn_ok = role_arn.starts_with("arn:aws")
                && role_arn.split(':').nth(2) == Some("iam")
                && role_arn.split(':').nth(5).is_some_and(|r| r.starts_with("role/"));
            if !arn_ok {
                return Err(Error::invalid(format!(
                    "SYNC_AWS_ROLE_ARN: `{role_arn}` is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                )));
            }
            Some(WebIdentityConfig { role_arn, audience })
        }
        (Some(_), None) => {
            return Err(Error::invalid(
                "SYNC_AWS_TOKEN_AUDIENCE: must be set with SYNC_AWS_ROLE_ARN (the audience the role's trust policy expects, e.g. api://<app id>)",
            ))
        }
        (None, Some(_)) => return Err(Error::invalid("SYNC_AWS_ROLE_ARN: must be set with SYNC_AWS_TOKEN_AUDIENCE")),
    };
    if web_identity.is_some() && env.get("AWS_ACCESS_KEY_ID").is_some() {
        return Err(Error::invalid(
            "SYNC_AWS_ROLE_ARN: set either it or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, not both",
        ));
    }
    let static_credentials = match (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Some(AwsStaticCredentials {
            access_key_id: Secret::from(id),
            secret_access_key: Secret::from(secret),
            session_token: env.get("AWS_SESSION_TOKEN").map(Secret::from),
        }),
        (Some(_), None) => {
            return Err(Error::invalid(
                "AWS_SECRET_ACCESS_KEY: must be set when AWS_ACCESS_KEY_ID is",
            ))
        }
        (None, Some(_)) => {
            return Err(Error::invalid(
                "AWS_ACCESS_KEY_ID: must be set when AWS_SECRET_ACCESS_KEY is",
            ))
        }
        (None, None) => None,
    };
    Ok(AwsConfig {
        web_identity,
        region: env.get("AWS_REGION").or_else(|| env.get("AWS_DEFAULT_REGION")),
        endpoint_url,
        force_path_style: bool_var(env, "SYNC_S3_FORCE_PATH_STYLE")?,
        static_credentials,
    })
}

/// The copy engine's settings.
fn engine_config(env: &dyn Env) -> Result<EngineConfig> {
    const MIB: u64 = 1024 * 1024;
    let d = EngineConfig::default();
    let block_mib = bounded(env, "SYNC_BLOCK_SIZE_MIB", d.block_size / MIB, 1, Some(4000), "")?;
    let buffer_mib = bounded(
        env,
        "SYNC_STREAM_BUFFER_MIB",
        d.stream_buffer_bytes / MIB,
        1,
        Some(65536),
        "MiB of object data held in memory",
    )?;
    let invocation_mib = bounded(
        env,
        "SYNC_INVOCATION_MIB",
        d.invocation_bytes / MIB,
        1,
        None,
        "MiB one invocation may copy",
    )?;
    let presign = bounded(
        env,
        "SYNC_PRESIGN_EXPIRY_SECS",
        d.presign_expiry.as_secs(),
        60,
        Some(3600),
        "presigned URLs stay short-lived",
    )?;
    Ok(EngineConfig {
        copy_path: choice(env, "SYNC_COPY_PATH", d.copy_path)?,
        metadata_policy: choice(env, "SYNC_METADATA_POLICY", d.metadata_policy)?,
        tags: choice(env, "SYNC_TAGS", d.tags)?,
        block_size: block_mib * MIB,
        block_concurrency: bounded(env, "SYNC_BLOCK_CONCURRENCY", d.block_concurrency, 1, Some(256), "")?,
        stream_buffer_bytes: buffer_mib * MIB,
        presign_expiry: Duration::from_secs(presign),
        put_blob_from_url_max: d.put_blob_from_url_max,
        invocation_bytes: invocation_mib.saturating_mul(MIB),
    })
}

/// The account `vars` configure, if any: a connection string, or a name with a SAS or Entra ID.
fn account(env: &dyn Env, vars: &AccountVars) -> Result<Option<StorageAccount>> {
    if let Some(cs) = env.get(vars.connection_string) {
        return StorageAccount::from_connection_string_in(vars, &cs).map(Some);
    }
    let Some(name) = env.get(vars.name) else {
        return Ok(None);
    };
    if !(3..=24).contains(&name.len()) || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(Error::invalid(format!(
            "{}: must be 3-24 lower-case letters and digits",
            vars.name
        )));
    }
    let auth = match env.get(vars.sas) {
        Some(s) => AzureAuth::Sas(Secret::from(s.trim_start_matches('?'))),
        None => AzureAuth::Token,
    };
    StorageAccount::for_account_in(vars, &name, auth).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn minimal_dev_config_is_valid() {
        let c = Config::from(&env(&[(
            "AZURE_STORAGE_CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        )]))
        .unwrap();
        assert_eq!(c.engine.copy_path, CopyPath::Auto);
        assert_eq!(c.tables.checkpoint, "objects");
        assert_eq!(c.queues.max_dequeue_count, 5);
        assert_eq!(c.relay.visibility, Duration::from_secs(60));
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let base = [("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")];
        let cases = [
            ("SYNC_COPY_PATH", "sideways"),
            ("SYNC_METADATA_POLICY", "keep"),
            ("SYNC_BLOCK_SIZE_MIB", "0"),
            ("SYNC_BLOCK_SIZE_MIB", "lots"),
            ("SYNC_BLOCK_CONCURRENCY", "0"),
            ("SYNC_STREAM_BUFFER_MIB", "0"),
            ("SYNC_PRESIGN_EXPIRY_SECS", "604800"),
            ("AWS_ENDPOINT_URL", "not a url"),
            ("SYNC_S3_FORCE_PATH_STYLE", "maybe"),
            ("SYNC_TARGET_CONTAINER", "Bad_Name"),
            ("SYNC_CHECKPOINT_TABLE", "1bad"),
            ("SYNC_LOG_FORMAT", "xml"),
            ("SYNC_MAX_DEQUEUE_COUNT", "0"),
            ("SYNC_MODE", "delete-everything"),
            ("SYNC_SQS_QUEUE_URL", "queue"),
            ("SYNC_COPY_QUEUE", "Copy_Objects"),
            ("SYNC_COPY_QUEUES", "0"),
            ("SYNC_COPY_QUEUES", "17"),
            ("SYNC_REJECT_QUEUE", "x"),
            ("SYNC_DRAIN_BUDGET_SECS", "1"),
            ("SYNC_SQS_RETRY_BASE_SECS", "0"),
            ("SYNC_SQS_VISIBILITY_SECS", "2"),
            ("SYNC_WORKER_VISIBILITY_SECS", "0"),
        ];
        for (var, val) in cases {
            let mut e = env(&base);
            e.insert(var.into(), val.into());
            let err = Config::from(&e).unwrap_err();
            assert!(err.message().starts_with(var), "{var}={val}: {err}");
        }
        // A half-set key pair names the missing half.
        let mut e = env(&base);
        e.insert("AWS_ACCESS_KEY_ID".into(), "AKIAONLY".into());
        assert!(Config::from(&e)
            .unwrap_err()
            .message()
            .starts_with("AWS_SECRET_ACCESS_KEY"));
        let err = Config::from(&env(&[])).unwrap_err();
        assert!(err.message().contains("AZURE_STORAGE_CONNECTION_STRING"));
        let err = Config::from(&env(&[("AZURE_STORAGE_ACCOUNT", "Has-Caps")])).unwrap_err();
        assert!(err.message().starts_with("AZURE_STORAGE_ACCOUNT"));
        // The state account's variables name themselves.
        for (var, val) in [
            ("SYNC_STATE_ACCOUNT", "Has-Caps"),
            ("SYNC_STATE_CONNECTION_STRING", "AccountName=x"),
            ("SYNC_STATE_CONNECTION_STRING", "nonsense"),
            ("SYNC_QUEUE_ACCOUNT", "x"),
            (
                "SYNC_QUEUE_CONNECTION_STRING",
                "UseDevelopmentStorage=true;BlobEndpoint=ftp://x",
            ),
        ] {
            let mut e = env(&base);
            e.insert(var.into(), val.into());
            let err = Config::from(&e).unwrap_err();
            assert!(err.message().starts_with(var), "{var}={val}: {err}");
        }
    }

    #[test]
    fn state_lives_in_the_target_account_unless_told() {
        let target = [("AZURE_STORAGE_ACCOUNT", "tgtacct")];
        let c = Config::from(&env(&target)).unwrap();
        assert_eq!((c.azure.name.as_str(), c.state.name.as_str()), ("tgtacct", "tgtacct"));
        let mut e = env(&target);
        e.insert("SYNC_STATE_ACCOUNT".into(), "stateacct".into());
        let c = Config::from(&e).unwrap();
        assert_eq!((c.azure.name.as_str(), c.state.name.as_str()), ("tgtacct", "stateacct"));
        assert_eq!(
            c.queue_account.name, "stateacct",
            "queues follow the tables unless told"
        );
        e.insert("SYNC_QUEUE_ACCOUNT".into(), "queueacct".into());
        let c = Config::from(&e).unwrap();
        assert_eq!(
            (c.state.name.as_str(), c.queue_account.name.as_str()),
            ("stateacct", "queueacct")
        );
        assert_eq!(
            c.queue_account.queue_endpoint.as_str(),
            "https://queueacct.queue.core.windows.net/"
        );
        e.remove("SYNC_QUEUE_ACCOUNT");
        assert_eq!(
            c.state.table_endpoint.as_str(),
            "https://stateacct.table.core.windows.net/"
        );
        assert_eq!(c.state.setting, "SYNC_STATE_CONNECTION_STRING");
        assert!(matches!(c.state.auth, AzureAuth::Token));
        // A state SAS is its own, never the target's.
        e.insert("SYNC_STATE_SAS_TOKEN".into(), "?sv=1&sig=STATESIG".into());
        e.insert("AZURE_STORAGE_SAS_TOKEN".into(), "?sv=1&sig=TARGETSIG".into());
        let c = Config::from(&e).unwrap();
        assert!(matches!(&c.state.auth, AzureAuth::Sas(s) if s.expose_secret() == "sv=1&sig=STATESIG"));
        assert!(!format!("{c:?}").contains("STATESIG"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Config::from(&env(&[
            ("AZURE_STORAGE_ACCOUNT", "acme"),
            ("AZURE_STORAGE_SAS_TOKEN", "?sv=1&sig=SECRETSIG"),
            (
                "SYNC_SCHEDULED_RUN",
                r#"{"source":{"bucket":"bb1"},"target":{"container":"cc1"},"notify":"setting:SYNC_WEBHOOK_DEFAULT"}"#,
            ),
            ("SYNC_WEBHOOK_DEFAULT", "https://hooks.example/T/HOOKSECRET"),
        ]))
        .unwrap();
        assert_eq!(
            c.runs.webhooks["SYNC_WEBHOOK_DEFAULT"].expose_secret(),
            "https://hooks.example/T/HOOKSECRET"
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("SECRETSIG") && !debug.contains("HOOKSECRET"), "{debug}");
    }
}
