//! The small public error every module maps into, and the one place that decides what is
//! retryable.

use std::fmt;
use std::sync::Arc;

/// What went wrong, by meaning. Module-private errors carry context (bucket, key) in the
/// message and map into one of these kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The resource does not exist (404).
    NotFound,
    /// A precondition failed: ETag changed, If-Match lost (409/412).
    Precondition,
    /// The service asked us to slow down (429, 503 ServerBusy, SlowDown).
    Throttled,
    /// A transient fault after the request may have reached the service: a 5xx, a reset or a
    /// timeout after it was written. The call may have been applied.
    Transient,
    /// The request never reached the service (the connection was refused, the name did not
    /// resolve): whatever the call, nothing was applied, so repeating it is safe.
    NotSent,
    /// The request or the input is invalid; retrying will not help.
    Invalid,
    /// Credentials are missing, expired or lack permission.
    Auth,
    /// The bytes written do not match the source checksum.
    Integrity,
    /// Azure could not read the copy source (CannotVerifyCopySource); the caller may fall
    /// back to the streamed path.
    CopySourceUnreachable,
    /// Anything else (a bug, an unexpected answer).
    Internal,
}

impl ErrorKind {
    /// Stable lower-case name, used in logs and checkpoint rows.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The HTTP status an API answers with for this kind: 400 for bad input, 503 when
    /// throttled (the caller should come back), 500 otherwise. The one place the HTTP API
    /// maps errors to statuses.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::Throttled => 503,
            _ => 500,
        }
    }
}

/// What an integrity check found different (see [`Error::mismatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Mismatch {
    /// A checksum (MD5, CRC-64/NVME) of what was written differs from the source's.
    Checksum,
    /// The bytes read or staged are not the source's size.
    Size,
    /// A ranged read answered with another range.
    Range,
}

impl Mismatch {
    /// The word that names it in a message.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The cause an [`Error`] keeps: the module-private error it was mapped from.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// The crate's public error: a kind by meaning, a message that is already free of secrets,
/// and what the service said (HTTP status, error code) and the cause, when there was one.
#[derive(Clone)]
#[non_exhaustive]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The service's HTTP status, when a service answered.
    status: Option<u16>,
    /// The service's error code (`BlobNotFound`, `SlowDown`), when it gave one.
    code: Option<String>,
    /// The error this one was mapped from.
    source: Option<Source>,
}

impl fmt::Debug for Error {
    // The cause is shown by its redacted text only: a transport error may quote a URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("status", &self.status)
            .field("code", &self.code)
            .field(
                "source",
                &self.source.as_ref().map(|s| crate::redact::redact(&s.to_string())),
            )
            .finish()
    }
}

impl Error {
    /// Builds an error; the message is passed through [`crate::redact::redact`] so a presigned
    /// URL or SAS that slipped into a service's error text never reaches a log.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: crate::redact::redact(&message.into()),
            status: None,
            code: None,
            source: None,
        }
    }

    /// Keeps the error this one was mapped from, for [`std::error::Error::source`].
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Records what the service answered: its HTTP status and error code.
    pub fn with_service(mut self, status: u16, code: Option<&str>) -> Self {
        self.status = Some(status);
        self.code = code.filter(|c| !c.is_empty()).map(str::to_string);
        self
    }

    /// The service's HTTP status, when a service answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The service's error code, when it gave one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The HTTP status an API answers with for this error (see [`ErrorKind::http_status`]).
    pub fn http_status(&self) -> u16 {
        self.kind.http_status()
    }

    /// Shorthand for an [`ErrorKind::Invalid`] error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Invalid, message)
    }

    /// An [`ErrorKind::Integrity`] error. Its message begins with what did not match, as a
    /// category before the first colon (`checksum mismatch: s3://b/k: …`), which is what a
    /// failed object's recorded reason starts with and what the monitoring queries group by.
    pub fn mismatch(what: Mismatch, detail: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Integrity, format!("{} mismatch: {detail}", what.as_str()))
    }

    /// Shorthand for an [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The redacted message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes context (for example `copy s3://b/k`) to the message.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = crate::redact::redact(&format!("{ctx}: {}", self.message));
        self
    }

    /// The one policy for what may be tried again: a call that failed this way is repeated
    /// when it is [`Idempotency::Idempotent`] and the failure may pass; one that is not is
    /// repeated only when nothing was applied: it was never sent, or the service refused it
    /// before acting (throttling).
    pub fn may_retry(&self, call: Idempotency) -> bool {
        match self.kind {
            ErrorKind::Throttled | ErrorKind::NotSent => true,
            // A reset or a timeout may have happened after the service applied the call.
            ErrorKind::Transient => call == Idempotency::Idempotent,
            _ => false,
        }
    }

    /// Whether the whole operation (a copy, a page, a check, each idempotent by design) may
    /// succeed when tried again: [`Self::may_retry`] for an idempotent call.
    pub fn is_retryable(&self) -> bool {
        self.may_retry(Idempotency::Idempotent)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.as_str())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Whether repeating a request is harmless, stated where each request is built (as
/// object_store's `client/retry.rs` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// A read, or a write whose repeat leaves the same state: the same bytes and headers
    /// again, a delete, a write under If-Match or If-None-Match (whose repeat fails its
    /// condition, which the caller reads), or a message whose consumers take it twice by
    /// design. Repeated after any failure that may pass.
    Idempotent,
    /// A write whose repeat could apply twice: repeated only when it was never sent or was
    /// refused before it was acted on.
    NotIdempotent,
}

/// The kind of a failure to reach a service at all (no HTTP answer): [`ErrorKind::NotSent`]
/// when the cause chain shows the request was never written (the connection was refused or
/// the name did not resolve), else [`ErrorKind::Transient`] (a reset or timeout may come after
/// the service took the request).
pub fn transport_kind(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            ) {
                return ErrorKind::NotSent;
            }
        }
        let text = err.to_string().to_ascii_lowercase();
        if [
            "connection refused",
            "dns error",
            "failed to lookup address",
            "name or service not known",
        ]
        .iter()
        .any(|n| text.contains(n))
        {
            return ErrorKind::NotSent;
        }
        cur = err.source();
    }
    ErrorKind::Transient
}

/// Maps an HTTP status (and a service error code, when known) to a kind.
pub fn kind_from_status(status: u16, code: Option<&str>) -> ErrorKind {
    match (status, code) {
        (_, Some("CannotVerifyCopySource")) => ErrorKind::CopySourceUnreachable,
        (_, Some("Md5Mismatch" | "Crc64Mismatch" | "BadDigest" | "InvalidDigest")) => ErrorKind::Integrity,
        (_, Some("ServerBusy" | "SlowDown")) => ErrorKind::Throttled,
        // A server-side timeout: the call may have been applied, so only an idempotent
        // call may be retried on it (Azure's 500 OperationTimedOut; S3's RequestTimeout).
        (_, Some("OperationTimedOut" | "RequestTimeout")) => ErrorKind::Transient,
        // Credentials that expired while in use: refreshed ones pass (S3 answers 400).
        (_, Some("ExpiredToken" | "ExpiredTokenException" | "TokenRefreshRequired")) => ErrorKind::Transient,
        (404, _) => ErrorKind::NotFound,
        (409 | 412, _) => ErrorKind::Precondition,
        (429 | 503, _) => ErrorKind::Throttled,
        (401 | 403, _) => ErrorKind::Auth,
        (408, _) => ErrorKind::Transient,
        (400..=499, _) => ErrorKind::Invalid,
        (500..=599, _) => ErrorKind::Transient,
        _ => ErrorKind::Internal,
    }
}

/// Treats a failure of `kind` as success: "already exists" for a create, "not found" for a
/// delete.
pub fn ok_if<T>(r: Result<T>, kind: ErrorKind) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(e),
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping_and_retry_decision() {
        assert_eq!(kind_from_status(503, None), ErrorKind::Throttled);
        assert_eq!(kind_from_status(500, Some("InternalError")), ErrorKind::Transient);
        assert_eq!(kind_from_status(412, None), ErrorKind::Precondition);
        assert_eq!(
            kind_from_status(400, Some("CannotVerifyCopySource")),
            ErrorKind::CopySourceUnreachable
        );
        assert_eq!(kind_from_status(400, Some("Md5Mismatch")), ErrorKind::Integrity);
        // A server timeout may have been applied: retried only where the call is idempotent.
        let timed_out = Error::new(kind_from_status(500, Some("OperationTimedOut")), "put message");
        assert_eq!(timed_out.kind(), ErrorKind::Transient);
        assert!(timed_out.may_retry(Idempotency::Idempotent));
        assert!(!timed_out.may_retry(Idempotency::NotIdempotent));
        assert_eq!(kind_from_status(503, Some("ServerBusy")), ErrorKind::Throttled);
        assert_eq!(kind_from_status(400, Some("ExpiredToken")), ErrorKind::Transient);
        // Throttling and a request never sent are retried whatever the call.
        for kind in [ErrorKind::Throttled, ErrorKind::NotSent] {
            let e = Error::new(kind, "x");
            assert!(e.may_retry(Idempotency::NotIdempotent) && e.is_retryable(), "{kind:?}");
        }
        assert!(Error::new(ErrorKind::Transient, "reset").is_retryable());
        assert!(!Error::new(ErrorKind::Transient, "reset").may_retry(Idempotency::NotIdempotent));
        assert!(!Error::new(ErrorKind::Invalid, "bad").is_retryable());
        assert!(!Error::new(ErrorKind::Integrity, "bad").is_retryable());
    }

    #[test]
    fn a_request_never_sent_is_told_from_one_that_may_have_landed() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "client error (Connect)")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Wrapper(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(transport_kind(&refused), ErrorKind::NotSent);
        let reset = Wrapper(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(transport_kind(&reset), ErrorKind::Transient);
        let dns = std::io::Error::other("dns error: failed to lookup address information");
        assert_eq!(transport_kind(&dns), ErrorKind::NotSent);
        let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(transport_kind(&timeout), ErrorKind::Transient);
    }

    #[test]
    fn the_cause_and_the_service_answer_are_kept() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = Error::new(ErrorKind::Transient, "GET b/k")
            .with_service(503, Some("SlowDown"))
            .with_source(cause);
        assert_eq!((e.status(), e.code()), (Some(503), Some("SlowDown")));
        let src = std::error::Error::source(&e).expect("a source");
        assert_eq!(src.to_string(), "reset by peer");
        assert_eq!(Error::invalid("x").http_status(), 400);
        assert_eq!(Error::new(ErrorKind::Throttled, "x").http_status(), 503);
        assert_eq!(Error::new(ErrorKind::Integrity, "x").http_status(), 500);
        // Debug shows the cause only as redacted text.
        let leaky = Error::internal("x").with_source(std::io::Error::other("GET /c?sig=SECRETSIG"));
        assert!(!format!("{leaky:?}").contains("SECRETSIG"));
    }

    #[test]
    fn messages_are_redacted_on_construction() {
        let e = Error::new(
            ErrorKind::Transient,
            "GET http://h/b/k?X-Amz-Signature=abcdef0123&X-Amz-Credential=AKIA/x failed",
        );
        assert!(!e.to_string().contains("abcdef0123"));
        assert!(!e.to_string().contains("AKIA"));
    }
}
