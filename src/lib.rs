//! s3-blob-sync: server-side copy and continuous sync from AWS S3 to Azure Blob Storage.
//!
//! The same engine runs as an Azure Functions custom handler ([`functions::router`]), as a
//! CLI ([`cli`]), and (later) as a long-running worker.

#![warn(missing_docs)]

pub mod audit;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod functions;
pub mod redact;
pub mod retry;
pub mod run;
pub mod source;
pub mod target;
pub mod telemetry;

#[cfg(test)]
mod proptests;

use std::sync::Arc;

pub use functions::router;

/// Shared state of the custom handler.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<config::Config>,
    /// The copy engine.
    pub engine: Arc<engine::Engine>,
    drainer: Arc<tokio::sync::OnceCell<run::drain::Drainer>>,
    runs: Arc<tokio::sync::OnceCell<run::service::RunService>>,
}

impl AppState {
    /// Builds the state: engine clients and the checkpoint table.
    pub async fn new(config: config::Config) -> error::Result<Self> {
        let engine = engine::Engine::from_config(&config).await?;
        engine.checkpoint().ensure().await?;
        Ok(AppState {
            config: Arc::new(config),
            engine: Arc::new(engine),
            drainer: Arc::default(),
            runs: Arc::default(),
        })
    }

    /// The bulk-run service, built on first use (creates the runs table and queues).
    pub async fn runs(&self) -> error::Result<&run::service::RunService> {
        self.runs
            .get_or_try_init(|| run::service::RunService::new(self.config.clone(), self.engine.clone()))
            .await
    }

    /// The SQS drainer, built on first use (only `DrainSqs` needs SQS settings).
    pub async fn drainer(&self) -> error::Result<&run::drain::Drainer> {
        self.drainer
            .get_or_try_init(|| run::drain::Drainer::from_config(&self.config))
            .await
    }
}
