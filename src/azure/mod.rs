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

/// The first line of the `<Message>` element of an Azure error body, entities resolved;
/// `None` when the body is not XML or has no message.
fn service_message(body: &[u8]) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(std::str::from_utf8(body).ok()?);
    let mut inside = false;
    let mut text = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == b"Message" => inside = true,
            Event::End(e) if inside && e.local_name().as_ref() == b"Message" => break,
            Event::Text(t) if inside => text.push_str(&t.decode().ok()?),
            Event::CData(t) if inside => text.push_str(&t.decode().ok()?),
            Event::GeneralRef(r) if inside => {
                let name = r.decode().ok()?;
                match quick_xml::escape::resolve_predefined_entity(&name) {
                    Some(s) => text.push_str(s),
                    None => text.extend(r.resolve_char_ref().ok().flatten()),
                }
            }
            Event::Eof => return None,
            _ => {}
        }
    }
    let first = text.lines().next().unwrap_or_default().trim();
    (!first.is_empty()).then(|| first.to_string())
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
            let said = raw_response.as_ref().and_then(|r| service_message(r.body()));
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
                AK::Credential => ErrorKind::Auth,
                AK::DataConversion => ErrorKind::Internal,
                // Not sent (refused, unresolved) or maybe sent (reset, timed out).
                _ => crate::error::transport_kind(&e),
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

#[cfg(test)]
mod tests {
    use super::service_message;

    #[test]
    fn the_service_message_is_its_first_line_with_entities_resolved() {
        let body = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobNotFound</Code>\
            <Message>The specified blob &amp; its &#x27;name&#x27; do not exist.\nRequestId:1\nTime:2026</Message></Error>";
        assert_eq!(
            service_message(body.trim_start_matches('\u{feff}').as_bytes()).as_deref(),
            Some("The specified blob & its 'name' do not exist.")
        );
        assert_eq!(service_message(b"<Error><Code>X</Code></Error>"), None);
        assert_eq!(service_message(b"not xml at all"), None);
        assert_eq!(service_message(b"<Error><Message>  </Message></Error>"), None);
    }
}
