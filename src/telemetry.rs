//! Logging: structured `tracing` events, JSON in production. Field names are stable:
//! `bucket`, `key`, `blob`, `bytes`, `run_id`, `outcome`, `reason`, `duration_ms`.
//!
//! Two guards keep secrets out of logs whatever `RUST_LOG` asks for: targets known to log
//! signing material (`aws_sigv4` prints canonical requests with presign parameters at debug
//! and trace) are pinned at `warn`, and every formatted line passes through
//! [`crate::redact::redact`] on its way to stderr.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Targets that must never log below `warn`.
const PINNED: &[&str] = &["aws_sigv4=warn", "aws_credential_types=warn", "aws_config=warn"];

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides `default_level`
/// for this crate; other crates log at `warn`.
pub fn init(format: LogFormat, default_level: &str) {
    // By default the SDK's probe of the EC2 metadata service stays quiet: off EC2 (a laptop, a
    // container) it warns twice, a kilobyte of SDK structs each, before the error that names
    // the variable to set. `RUST_LOG` brings it back.
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,aws_config::imds=error,s3_blob_sync={default_level}")));
    // The audit trail (crate::audit) is written whatever the level asks for.
    for d in PINNED.iter().chain(&["audit=info"]) {
        filter = filter.add_directive(d.parse().expect("static directive"));
    }
    let builder = fmt().with_env_filter(filter).with_writer(RedactingStderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Stderr, with every write scrubbed of secrets. The formatter hands over one whole event
/// per write, so a secret cannot straddle two writes.
#[derive(Clone, Copy)]
pub struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = crate::redact::redact(&String::from_utf8_lossy(buf));
        std::io::stderr().lock().write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}
