//! What the adapters ask for: bulk runs (spec, service, lister, finish, webhook, cutover,
//! dashboard, health, verify), the sweep that ends runs which stopped moving, the SQS drain
//! loop and lag, and the `watch` worker.

pub mod copy_object;
pub mod copy_queues;
pub mod cutover;
pub mod dashboard;
pub mod drain;
pub mod finish;
pub mod health;
pub mod inventory;
pub mod invocation;
pub mod lag;
pub mod list_page;
pub mod lister;
pub mod probes;
pub mod schedule;
pub mod service;
pub mod shards;
pub mod summary;
pub mod sweep;
pub mod verify;
pub mod verify_run;
pub mod webhook;
pub mod worker;

use crate::redact::ExposeSecret;
use std::sync::Arc;

/// Shared state of the custom handler.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<crate::config::Config>,
    /// The copy engine.
    pub engine: Arc<crate::engine::Engine>,
    drainer: Arc<tokio::sync::OnceCell<drain::Drainer>>,
    runs: Arc<tokio::sync::OnceCell<service::RunService>>,
}

impl AppState {
    /// Builds the state: engine clients and the checkpoint table.
    /// `SYNC_SCHEDULED_RUN` is checked here, at start, but for its `notify`: the webhook is
    /// checked when the timer fires, so a notification problem fails that run's start, not
    /// every function of the app.
    pub async fn new(config: crate::config::Config) -> crate::error::Result<Self> {
        if let Some(text) = config.runs.scheduled.as_ref().map(ExposeSecret::expose_secret) {
            let mut spec: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| crate::error::Error::invalid(format!("SYNC_SCHEDULED_RUN is not JSON: {e}")))?;
            if let Some(o) = spec.as_object_mut() {
                o.remove("notify");
            }
            crate::messages::run_spec::RunSpec::parse(&spec.to_string(), "SYNC_SCHEDULED_RUN", &config)?;
        }
        let engine = crate::engine::Engine::from_config(&config).await?;
        engine.checkpoint().ensure().await?;
        Ok(AppState {
            config: Arc::new(config),
            engine: Arc::new(engine),
            drainer: Arc::default(),
            runs: Arc::default(),
        })
    }

    /// The bulk-run service, built on first use (creates the runs table and queues).
    pub async fn runs(&self) -> crate::error::Result<&service::RunService> {
        self.runs
            .get_or_try_init(|| service::RunService::new(self.config.clone(), self.engine.clone()))
            .await
    }

    /// The SQS drainer, built on first use (only `DrainSqs` needs SQS settings).
    pub async fn drainer(&self) -> crate::error::Result<&drain::Drainer> {
        self.drainer
            .get_or_try_init(|| drain::Drainer::from_config(&self.config))
            .await
    }
}
