//! Logging: structured `tracing` events, JSON in production. Field names are stable:
//! `bucket`, `key`, `blob`, `bytes`, `run_id`, `outcome`, `reason`, `duration_ms`.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides `default_level`
/// for this crate; other crates log at `warn`.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,s3_blob_sync={default_level}")));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
