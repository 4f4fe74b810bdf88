//! Requests to one table: the pipeline, retry with each request's idempotency, error
//! mapping, and the single-entity operations and queries.

use std::sync::Arc;

use azure_core::http::policies::{auth::BearerTokenAuthorizationPolicy, Policy};
use azure_core::http::{Context, Method, Pipeline, PipelineSendOptions, RawResponse, Request};
use serde_json::{Map, Value};
use url::Url;

use super::entity::{holds_all, literal, Continuation, Entity};
use crate::azure::auth::Authorizer;
use crate::config::azure::StorageAccount;
use crate::error::{kind_from_status, ok_if, Error, ErrorKind, Idempotency, Result};
use crate::model::validate_table_name;
use crate::retry::RetryPolicy;

const API_VERSION: &str = "2019-02-02";

/// A client for one table.
#[derive(Debug, Clone)]
pub struct TableClient {
    endpoint: Url,
    pub(super) table: String,
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
                    "{}: TableEndpoint `{}` must use https when the identity signs in with Entra ID",
                    account.setting, account.table_endpoint
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
            crate::azure::client_options(account, auth),
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

    pub(super) fn url(&self, path: &str) -> Url {
        let mut u = self.endpoint.clone();
        let base = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{base}/{path}"));
        u
    }

    pub(super) fn entity_url(&self, pk: &str, rk: &str) -> Url {
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

    pub(super) async fn send(
        &self,
        what: &str,
        build: impl Fn() -> Request,
        idempotency: Idempotency,
    ) -> Result<RawResponse> {
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
                        return Err(crate::azure::map_azure_error(
                            e,
                            format!("table {}: {what}", self.table),
                        ));
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
