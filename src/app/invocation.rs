//! What one unit of work ended as, whoever drives it (the Functions host through an
//! adapter, or the in-process worker): logs and a return value, or a failure whose status
//! says whether it can ever succeed.

use serde_json::Value;

use crate::error::Error;

/// A successful invocation's logs and return value.
pub struct Handled {
    /// Lines for the host's invocation log.
    pub logs: Vec<String>,
    /// The `$return` value.
    pub return_value: Value,
    /// Output bindings by name (`res` for HTTP triggers).
    pub outputs: serde_json::Map<String, Value>,
}

impl Handled {
    /// A result with logs and a return value, and no output bindings.
    pub fn new(logs: Vec<String>, return_value: Value) -> Self {
        Handled {
            logs,
            return_value,
            outputs: Default::default(),
        }
    }
}

/// A failed invocation: the status tells the host it failed (so it retries or poisons).
pub struct Failure {
    /// HTTP status for the host (4xx bad input, 5xx otherwise).
    pub status: u16,
    /// What went wrong, already redacted.
    pub error: Error,
}

impl Failure {
    /// Bad input: the message can never succeed as it is.
    pub fn bad_input(error: Error) -> Self {
        Failure { status: 400, error }
    }

    /// A failure that may pass: the host retries the invocation.
    pub fn internal(error: Error) -> Self {
        Failure { status: 500, error }
    }
}
