//! Blob operations the engine needs, over the official `azure_storage_blob` client. Every
//! call goes through the crate's retry policy; errors are mapped and redacted.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientMethodOptions, Context, Request, RequestContent, Url};
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockFromUrlOptions,
    BlockBlobClientStageBlockFromUrlResultHeaders, BlockBlobClientStageBlockOptions,
    BlockBlobClientStageBlockResultHeaders, BlockBlobClientUploadBlobFromUrlOptions,
    BlockBlobClientUploadBlobFromUrlResultHeaders, BlockBlobClientUploadOptions, BlockLookupList, ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use bytes::Bytes;
use futures::TryStreamExt;

use crate::azure::auth::Authorizer;
use crate::config::azure::StorageAccount;
use crate::error::{ok_if, Error, ErrorKind, Idempotency, Mismatch, Result};
use crate::model::{validate_container_name, ContentHeaders};
use crate::redact::ExposeSecret;
use crate::redact::Secret;
use crate::retry::RetryPolicy;

/// What a blob's properties tell us.
#[derive(Debug, Clone, Default)]
pub struct BlobProps {
    /// Content length.
    pub size: u64,
    /// ETag.
    pub etag: String,
    /// User metadata (our provenance entries included).
    pub metadata: HashMap<String, String>,
    /// Content-MD5, when the service has one.
    pub content_md5: Option<Vec<u8>>,
    /// Content headers.
    pub headers: ContentHeaders,
}

/// A short listing entry.
#[derive(Debug, Clone)]
pub struct BlobEntry {
    /// Blob name.
    pub name: String,
    /// Size.
    pub size: u64,
    /// Metadata (when listed with it).
    pub metadata: HashMap<String, String>,
    /// Content headers.
    pub headers: ContentHeaders,
}

/// What a commit writes besides the bytes.
#[derive(Debug, Clone, Default)]
pub struct CommitProps {
    /// Content headers.
    pub headers: ContentHeaders,
    /// Metadata, already validated.
    pub metadata: HashMap<String, String>,
    /// Blob index tags, already validated (sent as `x-ms-tags`, see [`tags_header`]).
    pub tags: Vec<(String, String)>,
}

/// Everything but unreserved characters is percent-encoded, so a value's `&`, `=` or `+`
/// cannot pass for the set's own separators.
const TAG_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A tag set in the `x-ms-tags` form, `k=v&k2=v2`, percent-encoded.
pub fn tags_header(tags: &[(String, String)]) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, TAG_ENCODE).to_string();
    tags.iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The blob state a write expects, so a slow writer cannot overwrite a newer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// The blob must still have this ETag.
    IfMatch(String),
    /// The blob must not exist.
    IfNoneExists,
    /// Write unconditionally.
    Always,
}

impl WriteCondition {
    /// The condition for a write after reading `existing`.
    pub fn after(existing: Option<&BlobProps>) -> Self {
        match existing {
            Some(p) if !p.etag.is_empty() => WriteCondition::IfMatch(p.etag.clone()),
            Some(_) => WriteCondition::Always,
            None => WriteCondition::IfNoneExists,
        }
    }

    fn if_match(&self) -> Option<azure_core::http::Etag> {
        match self {
            WriteCondition::IfMatch(e) => Some(e.as_str().into()),
            _ => None,
        }
    }

    fn if_none_match(&self) -> Option<azure_core::http::Etag> {
        match self {
            WriteCondition::IfNoneExists => Some("*".into()),
            _ => None,
        }
    }
}

/// The options of a committing call (Put Blob From URL, Put Block List): the same content
/// headers, metadata and write condition, plus call-specific fields. The two option types
/// are unrelated structs in the SDK, hence a macro.
macro_rules! commit_options {
    ($ty:ident, $props:expr, $cond:expr, { $($field:ident: $value:expr),* $(,)? }) => {{
        let h = &$props.headers;
        $ty {
            blob_content_type: h.content_type.clone(),
            blob_content_encoding: h.content_encoding.clone(),
            blob_content_language: h.content_language.clone(),
            blob_content_disposition: h.content_disposition.clone(),
            blob_cache_control: h.cache_control.clone(),
            metadata: Some($props.metadata.clone()),
            blob_tags_string: (!$props.tags.is_empty()).then(|| tags_header(&$props.tags)),
            if_match: $cond.if_match(),
            if_none_match: $cond.if_none_match(),
            $($field: $value,)*
            ..Default::default()
        }
    }};
}

/// A commit that carried index tags and was refused for its permissions: the likely cause
/// is the tags, which need their own permission (`t` in a SAS; the `blobs/tags/write` data
/// action, which Storage Blob Data Contributor lacks), so the error says how to fix it.
fn tags_hint(e: Error, props: &CommitProps) -> Error {
    if !props.tags.is_empty() && e.kind() == ErrorKind::Auth {
        e.context(
            "SYNC_TAGS=index writes blob index tags, which need their own permission: `t` in a SAS, \
             or the data action Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write \
             (infra/azure grants it with a custom role); or set SYNC_TAGS=metadata or drop",
        )
    } else {
        e
    }
}

/// One container in one account.
#[derive(Clone)]
pub struct BlobTarget {
    container: Arc<BlobContainerClient>,
    name: String,
    account: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for BlobTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobTarget")
            .field("url", &crate::redact::url_for_log(self.url()))
            .finish()
    }
}

impl BlobTarget {
    /// A target for `container` in `account`.
    pub fn new(account: &StorageAccount, auth: &Authorizer, container: &str, retry: RetryPolicy) -> Result<Self> {
        validate_container_name(container)?;
        let mut url = account.blob_endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{container}"));
        let (cred, opts) = match auth {
            Authorizer::Token(c) => (Some(c.clone()), super::client_options(account, auth)),
            Authorizer::Sas(_) => (None, super::client_options(account, auth)),
        };
        let client = BlobContainerClient::new(
            url,
            cred,
            Some(BlobContainerClientOptions {
                client_options: opts,
                ..Default::default()
            }),
        )
        .map_err(|e| super::map_azure_error(e, format!("container {container}")))?;
        Ok(BlobTarget {
            container: Arc::new(client),
            name: container.to_string(),
            account: account.name.clone(),
            retry,
        })
    }

    /// The container's name.
    pub fn container(&self) -> &str {
        &self.name
    }

    /// A stable identity of the target, `account/container`, whatever endpoint reaches it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.account, self.name)
    }

    /// The container URL (no credentials in it).
    pub fn url(&self) -> &Url {
        self.container.url()
    }

    /// Creates the container; an existing one is fine.
    pub async fn create_if_missing(&self) -> Result<()> {
        let r = self
            .retry
            .run("create container", Idempotency::Idempotent, || async {
                self.container
                    .create(None)
                    .await
                    .map(|_| ())
                    .map_err(|e| super::map_azure_error(e, format!("create container {}", self.name)))
            })
            .await;
        ok_if(r, ErrorKind::Precondition)
    }

    /// Deletes the container (tests and cleanup).
    pub async fn delete_container(&self) -> Result<()> {
        let r = self.container.delete(None).await;
        ok_if(
            r.map_err(|e| super::map_azure_error(e, format!("delete container {}", self.name))),
            ErrorKind::NotFound,
        )
    }

    fn ctx(&self, blob: &str, op: &str) -> String {
        format!("{op} {}/{blob}", self.name)
    }

    /// Properties of a blob; `None` when it does not exist.
    pub async fn properties(&self, blob: &str) -> Result<Option<BlobProps>> {
        let client = self.container.blob_client(blob);
        let r = self
            .retry
            .run("get blob properties", Idempotency::Idempotent, || async {
                client
                    .get_properties(None)
                    .await
                    .map_err(|e| super::map_azure_error(e, self.ctx(blob, "get properties")))
            })
            .await;
        let resp = match r {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let h = |r: azure_core::Result<Option<String>>| r.ok().flatten();
        Ok(Some(BlobProps {
            size: resp.content_length().ok().flatten().unwrap_or(0),
            etag: resp.etag().ok().flatten().map(|e| e.to_string()).unwrap_or_default(),
            metadata: resp.metadata().unwrap_or_default(),
            content_md5: resp.content_md5().ok().flatten(),
            headers: ContentHeaders {
                content_type: h(resp.content_type()),
                content_encoding: h(resp.content_encoding()),
                content_language: h(resp.content_language()),
                content_disposition: h(resp.content_disposition()),
                cache_control: h(resp.cache_control()),
            },
        }))
    }

    /// Put Blob From URL: Azure reads `source` itself and commits the blob in one call.
    /// With `source_md5`, Azure checks the bytes it read against it before committing.
    /// Returns the Content-MD5 Azure computed, when it sends one.
    pub async fn put_blob_from_url(
        &self,
        blob: &str,
        source: &Secret,
        source_etag: &str,
        source_md5: Option<&[u8]>,
        props: &CommitProps,
        cond: &WriteCondition,
    ) -> Result<Option<Vec<u8>>> {
        let client = self.container.blob_client(blob).block_blob_client();
        let resp = self
            .retry
            // Idempotent: the same bytes and headers under the same condition.
            .run("put blob from url", Idempotency::Idempotent, || async {
                let opts = commit_options!(BlockBlobClientUploadBlobFromUrlOptions, props, cond, {
                    copy_source_blob_properties: Some(false),
                    source_content_md5: source_md5.map(<[u8]>::to_vec),
                    source_if_match: Some(source_if_match(source_etag)),
                });
                client
                    .upload_blob_from_url(source.expose_secret().to_string(), Some(opts))
                    .await
                    .map_err(|e| tags_hint(super::map_azure_error(e, self.ctx(blob, "put blob from url")), props))
            })
            .await?;
        Ok(resp.content_md5().ok().flatten())
    }

    /// Put Block From URL for `range` (inclusive start, exclusive end) of `source`, read only
    /// while the source's ETag is `source_etag` (else 412, a [`ErrorKind::Precondition`]).
    /// Returns the CRC-64/NVME Azure computed over the bytes it read, when it says.
    pub async fn stage_block_from_url(
        &self,
        blob: &str,
        block_id: &[u8],
        source: &Secret,
        source_etag: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<u64>> {
        let client = self.container.blob_client(blob).block_blob_client();
        self.retry
            // Idempotent: the same block id and bytes.
            .run("put block from url", Idempotency::Idempotent, || async {
                let opts = BlockBlobClientStageBlockFromUrlOptions {
                    source_range: Some(range.clone().into()),
                    source_if_match: Some(source_if_match(source_etag)),
                    ..Default::default()
                };
                client
                    .stage_block_from_url(block_id, 0, source.expose_secret().to_string(), Some(opts))
                    .await
                    .map(|r| {
                        r.content_crc64()
                            .ok()
                            .flatten()
                            .and_then(|b| crate::checksum::from_azure(&b))
                    })
                    .map_err(|e| super::map_azure_error(e, self.ctx(blob, "put block from url")))
            })
            .await
    }

    /// Put Block with a transactional CRC-64/NVME, so Azure rejects bytes damaged in transit
    /// (400 `Crc64Mismatch`); a CRC echoed back that differs means it stored other bytes.
    pub async fn stage_block(&self, blob: &str, block_id: &[u8], data: Bytes, crc64: u64) -> Result<()> {
        let client = self.container.blob_client(blob).block_blob_client();
        let len = data.len() as u64;
        self.retry
            // Idempotent: the same block id and bytes.
            .run("put block", Idempotency::Idempotent, || async {
                let opts = BlockBlobClientStageBlockOptions {
                    transactional_content_crc64: Some(crate::checksum::to_azure(crc64)),
                    ..Default::default()
                };
                let resp = client
                    .stage_block(block_id, len, data.clone().into(), Some(opts))
                    .await
                    .map_err(|e| super::map_azure_error(e, self.ctx(blob, "put block")))?;
                let echoed = resp
                    .content_crc64()
                    .ok()
                    .flatten()
                    .and_then(|b| crate::checksum::from_azure(&b));
                match echoed {
                    Some(got) if got != crc64 => Err(Error::mismatch(
                        Mismatch::Checksum,
                        format_args!(
                            "{}: service CRC64 differs from the block's",
                            self.ctx(blob, "put block")
                        ),
                    )),
                    _ => Ok(()),
                }
            })
            .await
    }

    /// Put Blob: the whole blob in one request, with a transactional CRC-64/NVME that Azure
    /// checks (400 `Crc64Mismatch` on bytes damaged in transit), the content headers,
    /// metadata and write condition of a commit. For small objects read whole: it saves the
    /// Put Block and Put Block List round trips.
    pub async fn put_blob(
        &self,
        blob: &str,
        data: Bytes,
        crc64: u64,
        props: &CommitProps,
        cond: &WriteCondition,
    ) -> Result<()> {
        let client = self.container.blob_client(blob).block_blob_client();
        // At least the body's length, so the SDK makes one Put Blob and never splits.
        let oneshot = std::num::NonZero::new(data.len() as u64).unwrap_or(std::num::NonZero::<u64>::MIN);
        self.retry
            // Idempotent: the same bytes and headers under the same condition.
            .run("put blob", Idempotency::Idempotent, || async {
                let opts = commit_options!(BlockBlobClientUploadOptions, props, cond, {
                    partition_size: Some(oneshot),
                    method_options: ClientMethodOptions {
                        context: Context::new().with_value(PutBlobCrc64(crc64)),
                    },
                });
                client
                    .upload(data.clone().into(), Some(opts))
                    .await
                    .map(|_| ())
                    .map_err(|e| tags_hint(super::map_azure_error(e, self.ctx(blob, "put blob")), props))
            })
            .await
    }

    /// Put Block List: makes the staged blocks the blob's content, atomically.
    pub async fn commit_blocks(
        &self,
        blob: &str,
        ids: &[Vec<u8>],
        props: &CommitProps,
        cond: &WriteCondition,
    ) -> Result<String> {
        let client = self.container.blob_client(blob).block_blob_client();
        let resp = self
            .retry
            // Idempotent: conditional: a repeat after one that landed fails its condition, and the copy looks again.
            .run("put block list", Idempotency::Idempotent, || async {
                let opts = commit_options!(BlockBlobClientCommitBlockListOptions, props, cond, {});
                let list = BlockLookupList {
                    latest: Some(ids.to_vec()),
                    ..Default::default()
                };
                let body =
                    RequestContent::try_from(list).map_err(|e| Error::internal(format!("encode block list: {e}")))?;
                client
                    .commit_block_list(body, Some(opts))
                    .await
                    .map_err(|e| tags_hint(super::map_azure_error(e, self.ctx(blob, "put block list")), props))
            })
            .await?;
        use azure_storage_blob::models::BlockBlobClientCommitBlockListResultHeaders;
        Ok(resp.etag().ok().flatten().map(|e| e.to_string()).unwrap_or_default())
    }

    /// Deletes a blob; a missing one is fine. Returns whether one was deleted.
    pub async fn delete(&self, blob: &str) -> Result<bool> {
        self.delete_if(blob, &WriteCondition::Always).await
    }

    /// Deletes a blob only if `cond` holds ([`ErrorKind::Precondition`] otherwise).
    pub async fn delete_if(&self, blob: &str, cond: &WriteCondition) -> Result<bool> {
        let client = self.container.blob_client(blob);
        let r = self
            .retry
            // Idempotent: a repeat finds it gone.
            .run("delete blob", Idempotency::Idempotent, || async {
                let opts = BlobClientDeleteOptions {
                    if_match: cond.if_match(),
                    ..Default::default()
                };
                client
                    .delete(Some(opts))
                    .await
                    .map_err(|e| super::map_azure_error(e, self.ctx(blob, "delete")))
            })
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replaces a blob's index tags (none clears them), only while the blob is the one
    /// `cond` names. Tags are not part of the ETag, so a repeat changes nothing.
    pub async fn set_tags(&self, blob: &str, tags: &[(String, String)], cond: &WriteCondition) -> Result<()> {
        let client = self.container.blob_client(blob);
        let map: HashMap<String, String> = tags.iter().cloned().collect();
        self.retry
            // Idempotent: the same tags on the same blob.
            .run("set blob tags", Idempotency::Idempotent, || async {
                let body = RequestContent::try_from(azure_storage_blob::models::BlobTags::from(map.clone()))
                    .map_err(|e| Error::internal(format!("encode blob tags: {e}")))?;
                let opts = azure_storage_blob::models::BlobClientSetTagsOptions {
                    if_match: cond.if_match(),
                    ..Default::default()
                };
                client
                    .set_tags(body, Some(opts))
                    .await
                    .map(|_| ())
                    .map_err(|e| super::map_azure_error(e, self.ctx(blob, "set blob tags")))
            })
            .await
    }

    /// A blob's index tags, sorted by key (tests and `verify`; not on the copy path).
    pub async fn tags(&self, blob: &str) -> Result<Vec<(String, String)>> {
        let client = self.container.blob_client(blob);
        let resp = self
            .retry
            .run("get blob tags", Idempotency::Idempotent, || async {
                client
                    .get_tags(None)
                    .await
                    .map_err(|e| super::map_azure_error(e, self.ctx(blob, "get blob tags")))
            })
            .await?;
        let tags = resp
            .into_model()
            .map_err(|e| Error::internal(format!("{}: blob tags: {e}", self.ctx(blob, "get blob tags"))))?;
        let mut out: Vec<(String, String)> = HashMap::from(tags).into_iter().collect();
        out.sort();
        Ok(out)
    }

    /// Downloads a whole blob (tests and `verify`; not on the copy path).
    pub async fn read(&self, blob: &str) -> Result<Bytes> {
        let client = self.container.blob_client(blob);
        self.retry
            .run("download blob", Idempotency::Idempotent, || async {
                let resp = client
                    .download(None)
                    .await
                    .map_err(|e| super::map_azure_error(e, self.ctx(blob, "download")))?;
                resp.body
                    .collect()
                    .await
                    .map_err(|e| super::map_azure_error(e, self.ctx(blob, "download")))
            })
            .await
    }

    /// One page (at most `max` blobs, Azure's cap being 5,000) of the listing under `prefix`
    /// with metadata, from `marker`; the next page's marker, unless this was the last.
    pub async fn list_page(
        &self,
        prefix: &str,
        marker: Option<&str>,
        max: u32,
    ) -> Result<(Vec<BlobEntry>, Option<String>)> {
        self.retry
            .run("list blobs", Idempotency::Idempotent, || async {
                let opts = BlobContainerClientListBlobsOptions {
                    include: Some(vec![ListBlobsIncludeItem::Metadata]),
                    prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
                    marker: marker.map(str::to_string),
                    maxresults: Some(max.clamp(1, 5000) as i32),
                    ..Default::default()
                };
                let ctx = || format!("list {}", self.name);
                let mut pages = self
                    .container
                    .list_blobs(Some(opts))
                    .map_err(|e| super::map_azure_error(e, ctx()))?
                    .into_pages();
                let Some(page) = pages.try_next().await.map_err(|e| super::map_azure_error(e, ctx()))? else {
                    return Ok((Vec::new(), None));
                };
                let page = page.into_model().map_err(|e| super::map_azure_error(e, ctx()))?;
                let entries = page
                    .blob_items
                    .into_iter()
                    .map(|item| {
                        let p = item.properties.unwrap_or_default();
                        BlobEntry {
                            name: item.name.unwrap_or_default(),
                            size: p.content_length.unwrap_or(0),
                            metadata: item.metadata.and_then(|m| m.values).unwrap_or_default(),
                            // Azure lists a header never set as an empty element, which
                            // reads as `Some("")`: absent, as Get Blob Properties says.
                            headers: ContentHeaders {
                                content_type: p.content_type.filter(|v| !v.is_empty()),
                                content_encoding: p.content_encoding.filter(|v| !v.is_empty()),
                                content_language: p.content_language.filter(|v| !v.is_empty()),
                                content_disposition: p.content_disposition.filter(|v| !v.is_empty()),
                                cache_control: p.cache_control.filter(|v| !v.is_empty()),
                            },
                        }
                    })
                    .collect();
                Ok((entries, page.next_marker.filter(|m| !m.is_empty())))
            })
            .await
    }

    /// Lists blobs under `prefix`, with metadata, every page.
    pub async fn list(&self, prefix: &str) -> Result<Vec<BlobEntry>> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let (page, next) = self.list_page(prefix, marker.as_deref(), 5000).await?;
            out.extend(page);
            match next {
                Some(m) => marker = Some(m),
                None => return Ok(out),
            }
        }
    }
}

/// The transactional CRC-64 of one Put Blob body, carried to [`TransactionalCrc64Policy`] in
/// the call's context: the SDK's single-shot upload has no option for the header, though Put
/// Blob accepts it (the generated request type has the field, but it is crate-private).
#[derive(Debug, Clone, Copy)]
struct PutBlobCrc64(u64);

/// Sets `x-ms-content-crc64` on a request whose context carries a [`PutBlobCrc64`]; every
/// other request passes through unchanged.
#[derive(Debug)]
pub(crate) struct TransactionalCrc64Policy;

#[async_trait]
impl Policy for TransactionalCrc64Policy {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        if let Some(PutBlobCrc64(crc)) = ctx.value::<PutBlobCrc64>() {
            use base64::Engine as _;
            let value = base64::engine::general_purpose::STANDARD.encode(crate::checksum::to_azure(*crc));
            request.insert_header("x-ms-content-crc64", value);
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// `x-ms-source-if-match` for an S3 ETag: quoted, as HTTP's If-Match wants it (the ETag is
/// kept unquoted everywhere else). Azure applies it to its read of the source, so a source
/// overwritten after our HEAD is refused (412) instead of copied under the old version's name.
fn source_if_match(etag: &str) -> azure_core::http::Etag {
    azure_core::http::Etag::from(format!("\"{}\"", etag.trim_matches('"')))
}
