//! The Azure side: credentials, Blob, and Table Storage.

pub mod auth;
pub mod blob;
pub mod queue;
pub mod table;

use std::sync::Arc;

use azure_core::http::policies::Policy;
use azure_core::http::{ClientOptions, RetryOptions};

use crate::config::azure::StorageAccount;
use crate::error::{kind_from_status, Error, ErrorKind};
use auth::{Authorizer, SasPolicy};

/// Client options for every Azure SDK client: the account's connection pool, the SDK's own retries
/// off (the crate's [`crate::retry::RetryPolicy`] is the one policy), and the SAS policy when
/// the account uses one.
pub(crate) fn client_options(account: &StorageAccount, auth: &Authorizer) -> ClientOptions {
    let mut o = ClientOptions {
        transport: Some(account.http.transport()),
        retry: RetryOptions::none(),
        ..Default::default()
    };
    o.per_call_policies
        .push(Arc::new(blob::TransactionalCrc64Policy) as Arc<dyn Policy>);
    if let Authorizer::Sas(src) = auth {
        o.per_try_policies
            .push(Arc::new(SasPolicy(src.clone())) as Arc<dyn Policy>);
    }
    o
}

/// Maps an SDK error into ours, keeping the HTTP status and service error code.
pub(crate) fn map_azure_error(e: azure_core::Error, what: impl std::fmt::Display) -> Error {
    use azure_core::error::ErrorKind as AK;
    match e.kind() {
        AK::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = u16::from(*status);
            // The service's own sentence, first line only: the XML around it is noise.
            let said = raw_response
                .as_ref()
                .map(|r| String::from_utf8_lossy(r.body()).to_string())
                .and_then(|b| {
                    let start = b.find("<Message>")? + "<Message>".len();
                    let rest = &b[start..];
                    let end = rest.find(['\n', '<']).unwrap_or(rest.len());
                    Some(rest[..end].trim().to_string())
                })
                .filter(|m| !m.is_empty());
            let code = error_code.clone().unwrap_or_default();
            let kind = kind_from_status(status, error_code.as_deref());
            let msg = match said {
                Some(m) => format!("{what}: HTTP {status} {code}: {m}"),
                None => format!("{what}: HTTP {status} {code}"),
            };
            Error::new(kind, msg).with_service(status, Some(&code)).with_source(e)
        }
        other => {
            let kind = match other {
                AK::Connection | AK::Io => ErrorKind::Transient,
                AK::Credential => ErrorKind::Auth,
                AK::DataConversion => ErrorKind::Internal,
                _ => ErrorKind::Transient,
            };
            // The top message alone ("failed to execute request") does not say what to fix;
            // the cause chain does (connection refused, DNS, TLS).
            let mut causes = String::new();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                causes.push_str(&format!(": {s}"));
                src = s.source();
            }
            Error::new(kind, format!("{what}: {e}{causes}")).with_source(e)
        }
    }
}
