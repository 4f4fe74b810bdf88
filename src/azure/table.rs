//! A thin Azure Table Storage client over `azure_core`'s [`Pipeline`]. There is no official
//! Rust crate for Tables; this covers what the checkpoint store needs: create table, get,
//! insert, update and merge with If-Match, delete, query with continuation, and
//! entity-group transactions.

use std::sync::Arc;

use azure_core::http::policies::{auth::BearerTokenAuthorizationPolicy, Policy};
use azure_core::http::{Context, Method, Pipeline, PipelineSendOptions, RawResponse, Request};
use serde_json::{Map, Value};
use url::Url;

use crate::azure::auth::Authorizer;
use crate::config::azure::StorageAccount;
use crate::error::{kind_from_status, ok_if, Error, ErrorKind, Idempotency, Result};
use crate::model::validate_table_name;
use crate::retry::RetryPolicy;

const API_VERSION: &str = "2019-02-02";

/// One table entity: keys, ETag, and the other properties as OData JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entity {
    /// PartitionKey.
    pub partition_key: String,
    /// RowKey.
    pub row_key: String,
    /// The ETag the service gave this version, for If-Match.
    pub etag: Option<String>,
    /// Other properties (type annotations included, e.g. `Size@odata.type`).
    pub props: Map<String, Value>,
}

/// An OData `$filter` of comparisons joined by `and`, each string value quoted here and
/// nowhere else (a `'` in a bucket name or key doubles, as OData requires).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter(String);

impl Filter {
    /// `prop eq 'value'` as the first comparison.
    pub fn eq(prop: &str, value: &str) -> Self {
        Filter::default().and(prop, "eq", value)
    }

    /// Adds `prop op 'value'` (`op` one of `eq`, `ne`, `ge`, `gt`, `le`, `lt`).
    pub fn and(mut self, prop: &str, op: &str, value: &str) -> Self {
        debug_assert!(matches!(op, "eq" | "ne" | "ge" | "gt" | "le" | "lt"), "{op}");
        if !self.0.is_empty() {
            self.0.push_str(" and ");
        }
        self.0.push_str(&format!("{prop} {op} {}", literal(value)));
        self
    }

    /// The expression.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `value` as an OData string literal: quoted, an inner quote doubled. The one place a
/// value is quoted, for filters and entity addresses alike.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Whether `stored` has every property of `sent` with the same value (the service adds
/// `Timestamp` and may drop type annotations it does not need).
fn holds_all(stored: &Entity, sent: &Entity) -> bool {
    sent.props
        .iter()
        .filter(|(k, _)| !k.ends_with("@odata.type"))
        .all(|(k, v)| stored.props.get(k) == Some(v))
}

impl Entity {
    /// A new entity with no properties.
    pub fn new(partition_key: impl Into<String>, row_key: impl Into<String>) -> Self {
        Entity {
            partition_key: partition_key.into(),
            row_key: row_key.into(),
            ..Default::default()
        }
    }

    /// Sets a string property.
    pub fn set_str(&mut self, name: &str, v: impl Into<String>) -> &mut Self {
        self.props.insert(name.into(), Value::String(v.into()));
        self
    }

    /// Sets an Edm.Int64 property (sent as a string with its type annotation).
    pub fn set_i64(&mut self, name: &str, v: i64) -> &mut Self {
        self.props
            .insert(format!("{name}@odata.type"), Value::String("Edm.Int64".into()));
        self.props.insert(name.into(), Value::String(v.to_string()));
        self
    }

    /// A string property.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.props.get(name).and_then(Value::as_str)
    }

    /// An integer property, whether stored as Edm.Int64 (string) or Edm.Int32 (number).
    pub fn get_i64(&self, name: &str) -> Option<i64> {
        match self.props.get(name)? {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        let mut m = self.props.clone();
        m.insert("PartitionKey".into(), Value::String(self.partition_key.clone()));
        m.insert("RowKey".into(), Value::String(self.row_key.clone()));
        Value::Object(m)
    }

    fn from_json(mut m: Map<String, Value>, etag: Option<String>) -> Result<Self> {
        let take = |m: &mut Map<String, Value>, k: &str| match m.remove(k) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(Error::internal(format!("table entity without {k}"))),
        };
        let partition_key = take(&mut m, "PartitionKey")?;
        let row_key = take(&mut m, "RowKey")?;
        let etag = etag.or_else(|| m.get("odata.etag").and_then(Value::as_str).map(str::to_string));
        m.retain(|k, _| !k.starts_with("odata.") && k != "Timestamp" && k != "Timestamp@odata.type");
        Ok(Entity {
            partition_key,
            row_key,
            etag,
            props: m,
        })
    }
}

/// Where a query stopped, to pass back for the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    next_partition_key: String,
    next_row_key: Option<String>,
}

impl Continuation {
    /// An opaque cursor for an API caller to send back (URL-safe base64).
    pub fn encode(&self) -> String {
        use base64::Engine;
        let raw = format!(
            "{}\n{}",
            self.next_partition_key,
            self.next_row_key.as_deref().unwrap_or("")
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// A cursor from [`Self::encode`]; `None` for anything else.
    pub fn decode(cursor: &str) -> Option<Self> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (pk, rk) = raw.split_once('\n')?;
        if pk.is_empty() {
            return None;
        }
        Some(Continuation {
            next_partition_key: pk.to_string(),
            next_row_key: (!rk.is_empty()).then(|| rk.to_string()),
        })
    }
}

/// A client for one table.
#[derive(Debug, Clone)]
pub struct TableClient {
    endpoint: Url,
    table: String,
    pipeline: Arc<Pipeline>,
    retry: RetryPolicy,
}

impl TableClient {
    /// A client for `table` in `account`.
    pub fn new(account: &StorageAccount, auth: &Authorizer, table: &str, retry: RetryPolicy) -> Result<Self> {
        validate_table_name(table)?;
        let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
        if let Authorizer::Token(cred) = auth {
            if account.table_endpoint.scheme() != "https" {
                return Err(Error::invalid(format!(
                    "AZURE_STORAGE_CONNECTION_STRING: TableEndpoint `{}` must use https when the identity signs in with Entra ID",
                    account.table_endpoint
                )));
            }
            per_try.push(Arc::new(BearerTokenAuthorizationPolicy::new(
                cred.clone(),
                vec!["https://storage.azure.com/.default"],
            )));
        }
        let pipeline = Pipeline::new(
            Some("s3-blob-sync"),
            Some(env!("CARGO_PKG_VERSION")),
            super::client_options(account, auth),
            Vec::new(),
            per_try,
            None,
        );
        Ok(TableClient {
            endpoint: account.table_endpoint.clone(),
            table: table.to_string(),
            pipeline: Arc::new(pipeline),
            retry,
        })
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.table
    }

    fn url(&self, path: &str) -> Url {
        let mut u = self.endpoint.clone();
        let base = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{base}/{path}"));
        u
    }

    fn entity_url(&self, pk: &str, rk: &str) -> Url {
        // Keys we write are hex and bucket names, but encode anyway: the key is part of the path.
        let seg = format!("{}(PartitionKey={},RowKey={})", self.table, literal(pk), literal(rk));
        let enc = percent_encoding::utf8_percent_encode(&seg, KEY_SET).to_string();
        self.url(&enc)
    }

    /// The retry policy its calls go through; its [`RetryPolicy::conflicts`] bounds the
    /// If-Match loops of the stores built on this table.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    async fn send(&self, what: &str, build: impl Fn() -> Request, idempotency: Idempotency) -> Result<RawResponse> {
        self.retry
            .run(what, idempotency, || async {
                let mut req = build();
                req.insert_header("x-ms-version", API_VERSION);
                req.insert_header("dataserviceversion", "3.0");
                req.insert_header("maxdataserviceversion", "3.0;NetFx");
                req.insert_header("accept", "application/json;odata=minimalmetadata");
                let res = self
                    .pipeline
                    .send(
                        &Context::new(),
                        &mut req,
                        Some(PipelineSendOptions {
                            skip_checks: true,
                            ..Default::default()
                        }),
                    )
                    .await;
                let res = match res {
                    Ok(r) => r,
                    Err(e) => {
                        return Err(super::map_azure_error(e, format!("table {}: {what}", self.table)));
                    }
                };
                let status = u16::from(res.status());
                if (200..300).contains(&status) {
                    return Ok(res);
                }
                let body = String::from_utf8_lossy(res.body()).to_string();
                let code = serde_json::from_str::<Value>(&body).ok().and_then(|v| {
                    v.pointer("/odata.error/code")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
                let code = code.or_else(|| header(&res, "x-ms-error-code"));
                let kind = kind_from_status(status, code.as_deref());
                let err = Error::new(
                    kind,
                    format!(
                        "table {}: {what}: HTTP {status} {}",
                        self.table,
                        code.as_deref().unwrap_or_default()
                    ),
                )
                .with_service(status, code.as_deref());
                Err(err)
            })
            .await
    }

    /// Creates the table; an existing one is fine.
    pub async fn create_if_missing(&self) -> Result<()> {
        let body = serde_json::json!({ "TableName": self.table }).to_string();
        let r = self.post_json("create table", self.url("Tables"), &body).await;
        ok_if(r, ErrorKind::Precondition) // 409 TableAlreadyExists
    }

    /// POSTs a JSON body that creates something (a table, an entity), asking for no body
    /// back. Retried on faults: a conflict after a retry may be this very call (the callers
    /// say how they tell).
    async fn post_json(&self, what: &str, url: Url, body: &str) -> Result<RawResponse> {
        self.send(
            what,
            || {
                let mut req = Request::new(url.clone(), Method::Post);
                req.insert_header("content-type", "application/json");
                req.insert_header("prefer", "return-no-content");
                req.set_body(body.as_bytes().to_vec());
                req
            },
            // A create: its repeat after one that landed answers 409, which the caller reads.
            Idempotency::Idempotent,
        )
        .await
    }

    /// Deletes the table (tests and cleanup).
    pub async fn delete_table(&self) -> Result<()> {
        let url = self.url(&format!("Tables('{}')", self.table));
        let r = self
            .send(
                "delete table",
                || Request::new(url.clone(), Method::Delete),
                Idempotency::Idempotent,
            )
            .await;
        ok_if(r, ErrorKind::NotFound)
    }

    /// Reads one entity; `None` when it does not exist.
    pub async fn get(&self, pk: &str, rk: &str) -> Result<Option<Entity>> {
        let url = self.entity_url(pk, rk);
        match self
            .send(
                "get entity",
                || Request::new(url.clone(), Method::Get),
                Idempotency::Idempotent,
            )
            .await
        {
            Ok(r) => {
                let etag = header(&r, "etag");
                let m: Map<String, Value> = serde_json::from_slice(r.body())
                    .map_err(|e| Error::internal(format!("table {}: bad entity JSON: {e}", self.table)))?;
                Ok(Some(Entity::from_json(m, etag)?))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Inserts a new entity; [`ErrorKind::Precondition`] if another one exists under its keys.
    /// Returns the ETag.
    ///
    /// Retried on faults. A conflict may be this very insert, landed on an earlier try whose
    /// reply was lost ("maybe mine"): the stored entity is read back, and when it holds
    /// exactly what was sent the insert counts as done. Callers that must tell their own
    /// insert from an identical one by someone else put a unique value in it (a run id, a
    /// planner nonce).
    pub async fn insert(&self, e: &Entity) -> Result<String> {
        let body = e.to_json().to_string();
        let url = self.url(&self.table);
        let sent = self.post_json("insert entity", url, &body).await;
        match sent {
            Ok(r) => Ok(header(&r, "etag").unwrap_or_default()),
            Err(err) if err.kind() == ErrorKind::Precondition => match self.get(&e.partition_key, &e.row_key).await? {
                Some(stored) if holds_all(&stored, e) => {
                    tracing::debug!(table = %self.table, "insert conflicted with an identical entity: taken as this insert, landed before its reply was lost");
                    Ok(stored.etag.unwrap_or_default())
                }
                _ => Err(err),
            },
            Err(err) => Err(err),
        }
    }

    /// Replaces an entity. With `if_match`, only if its ETag still matches
    /// ([`ErrorKind::Precondition`] otherwise); without, inserts or replaces.
    pub async fn update(&self, e: &Entity, if_match: Option<&str>) -> Result<String> {
        self.write("update entity", Method::Put, None, e, if_match).await
    }

    /// Merges properties into an entity, with the same If-Match rules as [`Self::update`].
    pub async fn merge(&self, e: &Entity, if_match: Option<&str>) -> Result<String> {
        // MERGE is not an HTTP method the pipeline knows; the Table service accepts it
        // tunnelled through POST with X-HTTP-Method.
        self.write("merge entity", Method::Post, Some("MERGE"), e, if_match)
            .await
    }

    async fn write(
        &self,
        what: &str,
        method: Method,
        tunnel: Option<&str>,
        e: &Entity,
        if_match: Option<&str>,
    ) -> Result<String> {
        let body = e.to_json().to_string();
        let url = self.entity_url(&e.partition_key, &e.row_key);
        let r = self
            .send(
                what,
                || {
                    let mut req = Request::new(url.clone(), method);
                    req.insert_header("content-type", "application/json");
                    if let Some(m) = tunnel {
                        req.insert_header("x-http-method", m.to_string());
                    }
                    if let Some(tag) = if_match {
                        req.insert_header("if-match", tag.to_string());
                    }
                    req.set_body(body.clone().into_bytes());
                    req
                },
                // A replace or merge of the same entity, or one under If-Match, whose repeat
                // after one that landed fails its condition (412) for the caller to read.
                Idempotency::Idempotent,
            )
            .await?;
        Ok(header(&r, "etag").unwrap_or_default())
    }

    /// Deletes an entity (`*` matches any ETag); a missing one is fine.
    pub async fn delete(&self, pk: &str, rk: &str, if_match: &str) -> Result<()> {
        let url = self.entity_url(pk, rk);
        let r = self
            .send(
                "delete entity",
                || {
                    let mut req = Request::new(url.clone(), Method::Delete);
                    req.insert_header("if-match", if_match.to_string());
                    req
                },
                // A repeat finds it gone (404, read as done).
                Idempotency::Idempotent,
            )
            .await;
        ok_if(r, ErrorKind::NotFound)
    }

    /// One page of a query. `filter` is an OData `$filter` expression.
    pub async fn query(
        &self,
        filter: Option<&str>,
        top: Option<u32>,
        from: Option<&Continuation>,
    ) -> Result<(Vec<Entity>, Option<Continuation>)> {
        let mut url = self.url(&format!("{}()", self.table));
        {
            let mut q = url.query_pairs_mut();
            if let Some(f) = filter {
                q.append_pair("$filter", f);
            }
            if let Some(t) = top {
                q.append_pair("$top", &t.to_string());
            }
            if let Some(c) = from {
                q.append_pair("NextPartitionKey", &c.next_partition_key);
                if let Some(rk) = &c.next_row_key {
                    q.append_pair("NextRowKey", rk);
                }
            }
        }
        let r = self
            .send(
                "query entities",
                || Request::new(url.clone(), Method::Get),
                Idempotency::Idempotent,
            )
            .await?;
        let next = header(&r, "x-ms-continuation-nextpartitionkey").map(|pk| Continuation {
            next_partition_key: pk,
            next_row_key: header(&r, "x-ms-continuation-nextrowkey"),
        });
        #[derive(serde::Deserialize)]
        struct Page {
            value: Vec<Map<String, Value>>,
        }
        let page: Page = serde_json::from_slice(r.body())
            .map_err(|e| Error::internal(format!("table {}: bad query JSON: {e}", self.table)))?;
        let rows = page
            .value
            .into_iter()
            .map(|m| Entity::from_json(m, None))
            .collect::<Result<Vec<_>>>()?;
        Ok((rows, next))
    }

    /// Every entity matching `filter`, following continuations.
    pub async fn query_all(&self, filter: Option<&str>) -> Result<Vec<Entity>> {
        let mut out = Vec::new();
        let mut cont = None;
        loop {
            let (rows, next) = self.query(filter, Some(1000), cont.as_ref()).await?;
            out.extend(rows);
            match next {
                Some(c) => cont = Some(c),
                None => return Ok(out),
            }
        }
    }
}

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

/// Characters to encode inside an entity path segment (keeps `(`, `)`, `'`, `,`, `=`).
const KEY_SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'\\')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn header(r: &RawResponse, name: &str) -> Option<String> {
    r.headers()
        .get_optional_str(&azure_core::http::headers::HeaderName::from(name.to_string()))
        .map(str::to_string)
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

    #[test]
    fn entity_json_round_trip() {
        let mut e = Entity::new("b:0a", "ff");
        e.set_str("Key", "a/b").set_i64("Size", 1 << 40);
        let j = e.to_json();
        assert_eq!(j["Size@odata.type"], "Edm.Int64");
        let mut m = j.as_object().unwrap().clone();
        m.insert("odata.etag".into(), "W/\"x\"".into());
        m.insert("Timestamp".into(), "2020".into());
        let back = Entity::from_json(m, None).unwrap();
        assert_eq!(back.get_i64("Size"), Some(1 << 40));
        assert_eq!(back.get_str("Key"), Some("a/b"));
        assert_eq!(back.etag.as_deref(), Some("W/\"x\""));
        assert!(!back.props.contains_key("Timestamp"));
    }

    #[test]
    fn filters_quote_every_value_once() {
        let f = Filter::eq("PartitionKey", "it's")
            .and("RowKey", "ge", "k61")
            .and("Outcome", "eq", "failed");
        assert_eq!(
            f.as_str(),
            "PartitionKey eq 'it''s' and RowKey ge 'k61' and Outcome eq 'failed'"
        );
    }
}
