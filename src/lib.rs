//! s3-blob-sync: server-side copy and continuous sync from AWS S3 to Azure Blob Storage.
//!
//! The same engine runs as an Azure Functions custom handler ([`functions::router`]), as a
//! CLI ([`cli`]), and as a long-running worker (`watch`, [`app::worker`]).

#![warn(missing_docs)]

pub mod app;
pub mod audit;
pub mod aws;
pub mod azure;
pub mod checksum;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod functions;
pub(crate) mod http;
pub mod internal_events;
pub mod messages;
pub mod model;
pub mod redact;
pub mod retry;
pub mod state;
pub mod telemetry;

#[cfg(test)]
mod proptests;

pub use app::AppState;
pub use functions::router;
