//! The engine: copying (or deleting) one object, verifying it, and checkpointing the outcome.

pub mod blocks;
pub mod copy;
pub mod decide;
pub mod integrity;
pub mod metadata;
pub mod naming;
pub mod server_side;
pub mod split;
pub mod streamed;
pub mod tags;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::aws::s3::S3Source;
use crate::azure::auth::Authorizer;
use crate::azure::blob::BlobTarget;
use crate::config::azure::StorageAccount;
use crate::config::{Config, EngineConfig};
use crate::error::Result;
use crate::model::{MovedBy, PartRef, SyncMode, Verification};
use crate::retry::RetryPolicy;
use crate::state::checkpoint::{CheckpointStore, Outcome};
use crate::state::staging::StagingStore;

/// One object to bring up to date.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// Source bucket.
    pub bucket: String,
    /// Source key.
    pub key: String,
    /// Target container.
    pub container: String,
    /// Removed from the key when naming the blob.
    pub source_prefix: String,
    /// Put in front of the blob name.
    pub target_prefix: String,
    /// The run this belongs to.
    pub run_id: Option<String>,
    /// Additive or mirror.
    pub mode: SyncMode,
    /// The S3 event that asked for this, when there was one.
    pub event: Option<EventInfo>,
    /// ETag and size from a listing, when the caller listed the bucket: a checkpoint row that
    /// matches them proves the object is current without a HEAD (the listing is the run's
    /// snapshot; later changes arrive by events or the next run).
    pub listed: Option<Listed>,
    /// Do not trust the checkpoint: look at the blob itself (`verify --repair`, after a blob
    /// was deleted or overwritten behind the checkpoint's back).
    pub recheck: bool,
    /// One range of an object split across invocations, instead of the whole object.
    pub part: Option<PartRef>,
    /// The lister's checkpoint query found no row for this key: skip reading the row and the
    /// blob's properties, and write with If-None-Match. A wrong hint costs a restart, never
    /// an overwrite.
    pub fresh: bool,
}

/// What a listing (or a creation event) said of the object's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// ETag.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
    /// Last-Modified (RFC 3339, whole seconds), when known: a copy-in-place that replaces
    /// metadata keeps a single-part ETag and changes only this.
    pub last_modified: Option<String>,
}

/// What one call of [`Engine::copy_step`] achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The object is settled (copied, skipped, deleted, refused).
    Done(CopyReport),
    /// The object is too big for one invocation: its ranges are to be handed out.
    Split(split::SplitPlan),
    /// One range is staged and recorded; others are still missing, so nothing is committed.
    Staged {
        /// The range.
        index: u32,
        /// Ranges recorded so far.
        staged: u32,
        /// Ranges in the plan.
        ranges: u32,
    },
}

/// What an S3 event said about a key. The engine still decides on the HEAD of the source;
/// the sequencer only lets stale or duplicate events be skipped cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventInfo {
    /// Event name, e.g. `ObjectRemoved:Delete`.
    pub name: String,
    /// S3's per-key ordering token.
    pub sequencer: Option<String>,
    /// When the event happened.
    pub time: Option<String>,
}

impl EventInfo {
    /// `ObjectTagging:*`: the tags changed, the bytes did not.
    pub fn is_tag_change(&self) -> bool {
        crate::aws::events::EventKind::of(&self.name) == crate::aws::events::EventKind::Tagged
    }
}

/// What the engine did with one object.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyReport {
    /// The outcome.
    pub outcome: Outcome,
    /// Why, for anything but a copy.
    pub reason: Option<String>,
    /// Bytes of the source object (moved or not).
    pub bytes: u64,
    /// The blob name, when there is one.
    pub blob: Option<String>,
    /// The path that moved the bytes.
    pub path: Option<MovedBy>,
    /// How the copy was verified.
    pub verified: Option<Verification>,
}

impl CopyReport {
    fn new(outcome: Outcome) -> Self {
        CopyReport {
            outcome,
            reason: None,
            bytes: 0,
            blob: None,
            path: None,
            verified: None,
        }
    }
}

/// The engine and its clients; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    s3: S3Source,
    account: StorageAccount,
    auth: Authorizer,
    checkpoint: CheckpointStore,
    staging: StagingStore,
    cfg: EngineConfig,
    retry: RetryPolicy,
    targets: Mutex<HashMap<String, BlobTarget>>,
    /// Streamed object bytes in memory, in units of [`BUFFER_UNIT`], shared by every copy.
    buffers: Arc<Semaphore>,
    buffer_units: u32,
}

/// The granule of the buffer budget: a 4 KiB object takes one unit.
const BUFFER_UNIT: u64 = 64 * 1024;

impl Engine {
    /// Builds the engine from the configuration (no network calls).
    pub async fn from_config(config: &Config) -> Result<Self> {
        let retry = config.retry;
        let auth = config.azure.authorizer()?;
        let checkpoint = CheckpointStore::open(
            &config.state,
            &config.state.authorizer()?,
            &config.tables.checkpoint,
            retry,
        )?;
        let buffer_units = Self::units(config.engine.stream_buffer_bytes);
        Ok(Engine {
            s3: S3Source::new(&config.aws, retry).await,
            account: config.azure.clone(),
            auth,
            staging: checkpoint.staging(),
            checkpoint,
            cfg: config.engine.clone(),
            retry,
            targets: Mutex::new(HashMap::new()),
            buffers: Arc::new(Semaphore::new(buffer_units as usize)),
            buffer_units,
        })
    }

    fn units(bytes: u64) -> u32 {
        bytes.div_ceil(BUFFER_UNIT).clamp(1, u32::MAX as u64 / 2) as u32
    }

    /// Waits until `bytes` of the process-wide stream buffer budget are free and holds them
    /// until the permit drops. A request above the whole budget (a block the layout raised
    /// past it) takes the whole budget, so it runs alone instead of waiting forever.
    pub(crate) async fn reserve_buffer(&self, bytes: u64) -> Result<OwnedSemaphorePermit> {
        let n = Self::units(bytes).min(self.buffer_units);
        self.buffers
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|e| crate::error::Error::internal(format!("buffer budget: {e}")))
    }

    /// The S3 source.
    pub fn s3(&self) -> &S3Source {
        &self.s3
    }

    /// The checkpoint store.
    pub fn checkpoint(&self) -> &CheckpointStore {
        &self.checkpoint
    }

    /// The engine settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// A client for `container` (cached).
    pub fn target(&self, container: &str) -> Result<BlobTarget> {
        let mut map = self.targets.lock().expect("targets lock");
        if let Some(t) = map.get(container) {
            return Ok(t.clone());
        }
        let t = BlobTarget::new(&self.account, &self.auth, container, self.retry)?;
        map.insert(container.to_string(), t.clone());
        Ok(t)
    }
}
