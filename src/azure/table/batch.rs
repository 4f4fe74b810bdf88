//! Entity-group transactions: up to 100 operations on one partition, applied atomically.

use azure_core::http::{Method, Request};

use super::client::TableClient;
use super::entity::Entity;
use crate::error::{Error, Idempotency, Result};

/// One operation of an entity-group transaction ([`TableClient::transact`]).
#[derive(Debug, Clone, Copy)]
pub enum BatchOp<'a> {
    /// Insert; the transaction fails with 409 if the entity exists.
    Insert(&'a Entity),
    /// Merge properties, with If-Match when given.
    Merge(&'a Entity, Option<&'a str>),
    /// Replace, with If-Match when given (insert-or-replace without).
    Update(&'a Entity, Option<&'a str>),
    /// Delete whatever version is stored; the transaction fails with 404 if it is gone.
    Delete(&'a Entity),
}

/// How a transaction ended: all operations applied, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every operation applied.
    Committed,
    /// Nothing applied: one operation was refused with this status and error code
    /// (409 `EntityAlreadyExists`, 412 `UpdateConditionNotSatisfied`, ...).
    Rejected {
        /// HTTP status of the refused operation.
        status: u16,
        /// Its error code, when the service gave one.
        code: String,
    },
}

impl TableClient {
    /// Runs `ops` as one entity-group transaction (`$batch`): all in one partition, at most
    /// 100, applied atomically. A refusal is an outcome, not an error, so callers can tell
    /// "already there" from "changed under me".
    pub async fn transact(&self, ops: &[BatchOp<'_>]) -> Result<BatchOutcome> {
        if ops.is_empty() || ops.len() > 100 {
            return Err(Error::invalid(format!(
                "a transaction holds 1-100 operations, not {}",
                ops.len()
            )));
        }
        let batch = format!("batch_{}", uuid::Uuid::new_v4());
        let changeset = format!("changeset_{}", uuid::Uuid::new_v4());
        let mut body = format!("--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n");
        for op in ops {
            let (method, url, entity, if_match) = match *op {
                BatchOp::Insert(e) => ("POST", self.url(&self.table), e, None),
                BatchOp::Merge(e, m) => ("MERGE", self.entity_url(&e.partition_key, &e.row_key), e, m),
                BatchOp::Update(e, m) => ("PUT", self.entity_url(&e.partition_key, &e.row_key), e, m),
                BatchOp::Delete(e) => ("DELETE", self.entity_url(&e.partition_key, &e.row_key), e, Some("*")),
            };
            let payload = match op {
                BatchOp::Delete(_) => String::new(),
                _ => entity.to_json().to_string(),
            };
            body.push_str(&format!(
                "--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
                 {method} {url} HTTP/1.1\r\nContent-Type: application/json\r\n\
                 Accept: application/json;odata=minimalmetadata\r\nPrefer: return-no-content\r\n\
                 DataServiceVersion: 3.0\r\n"
            ));
            if let Some(tag) = if_match {
                body.push_str(&format!("If-Match: {tag}\r\n"));
            }
            body.push_str(&format!("\r\n{payload}\r\n"));
        }
        body.push_str(&format!("--{changeset}--\r\n--{batch}--\r\n"));
        let url = self.url("$batch");
        let r = self
            .send(
                "transaction",
                || {
                    let mut req = Request::new(url.clone(), Method::Post);
                    req.insert_header("content-type", format!("multipart/mixed; boundary={batch}"));
                    req.set_body(body.clone().into_bytes());
                    req
                },
                // Safe to resend: callers make a replay fail on an Insert (409) or an If-Match.
                Idempotency::Idempotent,
            )
            .await?;
        Ok(parse_batch_response(&String::from_utf8_lossy(r.body())))
    }
}

/// Reads the inner statuses of a `$batch` reply: the first non-2xx one rejects the whole
/// changeset.
fn parse_batch_response(body: &str) -> BatchOutcome {
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("HTTP/1.1 ") else {
            continue;
        };
        let status: u16 = rest.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
        if !(200..300).contains(&status) {
            let code = body
                .split("\"code\":")
                .nth(1)
                .and_then(|s| s.split('"').nth(1))
                .unwrap_or_default()
                .to_string();
            return BatchOutcome::Rejected { status, code };
        }
    }
    BatchOutcome::Committed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_replies() {
        let ok = "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n\
                  --changesetresponse_2\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\
                  --changesetresponse_2\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n";
        assert_eq!(parse_batch_response(ok), BatchOutcome::Committed);
        let conflict = "--b\r\nHTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n\r\n\
                        {\"odata.error\":{\"code\":\"EntityAlreadyExists\",\"message\":{\"value\":\"0:exists\"}}}";
        assert_eq!(
            parse_batch_response(conflict),
            BatchOutcome::Rejected {
                status: 409,
                code: "EntityAlreadyExists".into()
            }
        );
    }
}
