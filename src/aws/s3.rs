//! S3 access over the official SDK: HEAD, presigned GET, GET and listing (long ranged
//! reads: `ranged_get.rs`). The SDK's own retries are off; calls go through the crate's
//! [`RetryPolicy`].

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use bytes::Bytes;

use crate::config::AwsConfig;
use crate::error::{kind_from_status, Error, ErrorKind, Idempotency, Result};
use crate::model::{ContentHeaders, ListedObject};
use crate::redact::Secret;
use crate::retry::RetryPolicy;

/// What HEAD tells us about one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectHead {
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// Version id, on versioned buckets.
    pub version_id: Option<String>,
    /// Last-Modified, RFC 3339.
    pub last_modified: Option<String>,
    /// Storage class (`None` means STANDARD).
    pub storage_class: Option<String>,
    /// The `x-amz-restore` header, for archived objects.
    pub restore: Option<String>,
    /// The `x-amz-archive-status` header (HEAD only): an INTELLIGENT_TIERING object in its
    /// Archive Access or Deep Archive Access tier.
    pub archive_status: Option<String>,
    /// Server-side encryption (`AES256`, `aws:kms`, ...).
    pub sse: Option<String>,
    /// Whether SSE-C protects the object.
    pub sse_customer: bool,
    /// Content headers.
    pub headers: ContentHeaders,
    /// User metadata (`x-amz-meta-*`, names without the prefix).
    pub metadata: HashMap<String, String>,
    /// S3's full-object CRC-64/NVME, when the object has one.
    pub crc64nvme: Option<u64>,
    /// How many tags the object has (`x-amz-tagging-count`); 0 when it has none.
    pub tag_count: u32,
}

impl ObjectHead {
    /// The object's MD5 when the ETag is one: single-part, not SSE-KMS or SSE-C.
    pub fn md5(&self) -> Option<[u8; 16]> {
        if self.etag.contains('-') || self.sse_customer || self.sse.as_deref().is_some_and(|s| s.starts_with("aws:kms"))
        {
            return None;
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(&self.etag, &mut out).ok()?;
        Some(out)
    }

    /// A restore was asked for and has not finished (`x-amz-restore: ongoing-request="true"`).
    pub fn restore_under_way(&self) -> bool {
        self.restore
            .as_deref()
            .is_some_and(|r| r.contains("ongoing-request=\"true\""))
    }

    /// Why the object cannot be read now: an archived class or Intelligent-Tiering archive
    /// tier without a finished restore (only `x-amz-restore` with `ongoing-request="false"`
    /// tells that a copy is readable; listings keep the original class after a restore).
    pub fn unreadable_class(&self) -> Option<String> {
        let restored = self
            .restore
            .as_deref()
            .is_some_and(|r| r.contains("ongoing-request=\"false\""));
        if restored {
            return None;
        }
        match (self.storage_class.as_deref(), self.archive_status.as_deref()) {
            (Some(c), _) if is_archive_class(c) => Some(c.to_string()),
            (class, Some(tier @ ("ARCHIVE_ACCESS" | "DEEP_ARCHIVE_ACCESS"))) => {
                Some(format!("{} in its {tier} tier", class.unwrap_or("INTELLIGENT_TIERING")))
            }
            _ => None,
        }
    }
}

/// A storage class whose objects S3 reads only after a restore (and keeps naming in listings
/// after one).
pub fn is_archive_class(class: &str) -> bool {
    matches!(class, "GLACIER" | "DEEP_ARCHIVE")
}

/// An [`ObjectHead`] from a HEAD or GET answer: both carry the same headers under the same
/// accessor names (a macro, because the SDK gives them no common trait).
macro_rules! object_head {
    ($o:expr, $bucket:expr, $key:expr) => {{
        let o = &$o;
        let size = o.content_length().filter(|n| *n >= 0).ok_or_else(|| {
            Error::new(
                ErrorKind::Transient,
                format!("s3://{}/{}: answer without Content-Length", $bucket, $key),
            )
        })?;
        Ok::<_, Error>(ObjectHead {
            size: size as u64,
            etag: o.e_tag().unwrap_or_default().trim_matches('"').to_string(),
            version_id: o.version_id().filter(|v| *v != "null").map(str::to_string),
            last_modified: o.last_modified().and_then(modified_rfc3339),
            storage_class: o.storage_class().map(|s| s.as_str().to_string()),
            restore: o.restore().map(str::to_string),
            archive_status: None,
            sse: o.server_side_encryption().map(|s| s.as_str().to_string()),
            sse_customer: o.sse_customer_algorithm().is_some(),
            headers: ContentHeaders {
                content_type: o.content_type().map(str::to_string),
                content_encoding: o.content_encoding().map(str::to_string),
                content_language: o.content_language().map(str::to_string),
                content_disposition: o.content_disposition().map(str::to_string),
                cache_control: o.cache_control().map(str::to_string),
            },
            metadata: o.metadata().cloned().unwrap_or_default(),
            crc64nvme: o.checksum_crc64_nvme().and_then(crate::checksum::from_s3),
            tag_count: o.tag_count().unwrap_or(0).max(0) as u32,
        })
    }};
}

/// An S3 client.
#[derive(Debug, Clone)]
pub struct S3Source {
    client: aws_sdk_s3::Client,
    retry: RetryPolicy,
}

impl S3Source {
    /// Builds the client from the standard AWS provider chain plus our overrides.
    pub async fn new(cfg: &AwsConfig, retry: RetryPolicy) -> Self {
        let sdk = crate::aws::aws_sdk_config(cfg, retry).await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.force_path_style)
            .build();
        S3Source {
            client: aws_sdk_s3::Client::from_conf(conf),
            retry,
        }
    }

    /// The raw SDK client (tests seed data through it).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The retry policy every call of this source runs under.
    pub(crate) fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// HEAD of an object; `None` when it does not exist.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectHead>> {
        let r = self
            .retry
            .run("s3 head object", Idempotency::Idempotent, || async {
                self.client
                    .head_object()
                    .bucket(bucket)
                    .key(key)
                    .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                    .send()
                    .await
                    .map_err(|e| map_sdk_error(e, bucket, key, "head object"))
            })
            .await;
        let o = match r {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut head = object_head!(o, bucket, key)?;
        head.archive_status = o.archive_status().map(|s| s.as_str().to_string());
        Ok(Some(head))
    }

    /// The object's tags, in S3's order, read for `version_id` when the bucket is versioned
    /// (the version HEADed, not a newer one). Call only when `tag_count` says there are any.
    pub async fn tags(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Vec<(String, String)>> {
        let r = self
            .retry
            .run("s3 get object tagging", Idempotency::Idempotent, || async {
                self.client
                    .get_object_tagging()
                    .bucket(bucket)
                    .key(key)
                    .set_version_id(version_id.map(str::to_string))
                    .send()
                    .await
                    .map_err(|e| map_sdk_error(e, bucket, key, "get object tagging"))
            })
            .await?;
        Ok(r.tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    /// A presigned GET for Azure to read the object from. Pinned to `version_id` when the
    /// bucket is versioned, so Azure cannot read a newer version than the one we HEADed.
    pub async fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        expiry: Duration,
    ) -> Result<Secret> {
        let cfg = PresigningConfig::expires_in(expiry).map_err(|e| Error::invalid(format!("presign expiry: {e}")))?;
        let req = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .presigned(cfg)
            .await
            .map_err(|e| map_sdk_error(e, bucket, key, "presign get"))?;
        Ok(Secret::from(req.uri().to_string()))
    }

    /// The whole object with its headers, only if its ETag is still `etag` (else
    /// [`ErrorKind::Precondition`]); `None` when it does not exist. For small objects: one
    /// request instead of HEAD + GET.
    pub async fn get_small(&self, bucket: &str, key: &str, etag: &str) -> Result<Option<(ObjectHead, Bytes)>> {
        self.get_all(bucket, key, Some(etag)).await
    }

    /// A whole small object (a manifest), whatever its version; `None` when there is none.
    pub async fn get_whole(&self, bucket: &str, key: &str) -> Result<Option<(ObjectHead, Bytes)>> {
        self.get_all(bucket, key, None).await
    }

    /// One GET of a whole object, only while its ETag is `if_match` when given.
    async fn get_all(&self, bucket: &str, key: &str, if_match: Option<&str>) -> Result<Option<(ObjectHead, Bytes)>> {
        let r = self
            .retry
            .run("s3 get object", Idempotency::Idempotent, || async {
                let o = self
                    .client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .set_if_match(if_match.map(|e| format!("\"{e}\"")))
                    .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                    .send()
                    .await
                    .map_err(|e| map_sdk_error(e, bucket, key, "get object"))?;
                let head = object_head!(o, bucket, key)?;
                let data = o
                    .body
                    .collect()
                    .await
                    .map_err(|e| Error::new(ErrorKind::Transient, format!("s3://{bucket}/{key}: reading body: {e}")))?
                    .into_bytes();
                Ok((head, data))
            })
            .await;
        match r {
            Ok(x) => Ok(Some(x)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An object's body as a stream, to be read as it arrives (an inventory data file). The
    /// request is retried; a read that fails later is the caller's to retry.
    pub async fn get_stream(&self, bucket: &str, key: &str) -> Result<aws_sdk_s3::primitives::ByteStream> {
        self.retry
            .run("s3 get object", Idempotency::Idempotent, || async {
                self.client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map(|o| o.body)
                    .map_err(|e| map_sdk_error(e, bucket, key, "get object"))
            })
            .await
    }

    /// One page (up to 1000 keys) of a listing under `prefix`.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<(Vec<ListedObject>, Option<String>)> {
        self.list_range(bucket, prefix, token, None, 1000).await
    }

    /// One page of at most `max_keys` keys under `prefix`, starting after `start_after` (S3
    /// order) on the first page, or from `token`.
    pub async fn list_range(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
        start_after: Option<&str>,
        max_keys: u32,
    ) -> Result<(Vec<ListedObject>, Option<String>)> {
        let max_keys = Some(max_keys.clamp(1, 1000) as i32);
        let out = self.list(bucket, prefix, token, start_after, max_keys, None).await?;
        Ok(listed(&out))
    }

    /// The first key under `prefix` after `after` (one LIST of one key): the probe that
    /// finds where a listing can split.
    pub async fn first_key_after(&self, bucket: &str, prefix: &str, after: Option<&str>) -> Result<Option<String>> {
        let out = self.list(bucket, prefix, None, after, Some(1), None).await?;
        Ok(out.contents().first().and_then(|o| o.key()).map(str::to_string))
    }

    /// The folders (common prefixes at the next `/`) under `prefix` after `after`, one page
    /// of them: where keys have folders, the ranges a listing splits into.
    pub async fn folders_after(&self, bucket: &str, prefix: &str, after: Option<&str>) -> Result<Vec<String>> {
        let out = self.list(bucket, prefix, None, after, None, Some("/")).await?;
        Ok(out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(str::to_string))
            .collect())
    }

    /// One ListObjectsV2 request.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
        start_after: Option<&str>,
        max_keys: Option<i32>,
        delimiter: Option<&str>,
    ) -> Result<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output> {
        self.retry
            .run("s3 list objects", Idempotency::Idempotent, || async {
                self.client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .set_continuation_token(token.clone())
                    .set_start_after(start_after.map(str::to_string))
                    .set_max_keys(max_keys)
                    .set_delimiter(delimiter.map(str::to_string))
                    .send()
                    .await
                    .map_err(|e| map_sdk_error(e, bucket, prefix, "list objects"))
            })
            .await
    }

    /// Whether any object's key starts with `prefix` (one LIST of one key).
    pub async fn any_object(&self, bucket: &str, prefix: &str) -> Result<bool> {
        Ok(self.first_key_after(bucket, prefix, None).await?.is_some())
    }
}

/// A ListObjectsV2 page's objects, and its continuation token when there is more.
fn listed(out: &aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output) -> (Vec<ListedObject>, Option<String>) {
    let objects = out
        .contents()
        .iter()
        .map(|o| ListedObject {
            key: o.key().unwrap_or_default().to_string(),
            size: o.size().unwrap_or(0).max(0) as u64,
            etag: o.e_tag().unwrap_or_default().trim_matches('"').to_string(),
            storage_class: o.storage_class().map(|s| s.as_str().to_string()),
            last_modified: o.last_modified().and_then(modified_rfc3339),
        })
        .collect();
    let next = out
        .is_truncated()
        .unwrap_or(false)
        .then(|| out.next_continuation_token().map(str::to_string))
        .flatten();
    (objects, next)
}

/// Maps an SDK error to ours with bucket and key as context, keeping the service's status,
/// code and the cause.
pub(crate) fn map_sdk_error<E, R>(e: SdkError<E, R>, bucket: &str, key: &str, op: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HasStatus + Send + Sync + 'static,
{
    let ctx = format!("s3://{bucket}/{key}: {op}");
    let err = match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status();
            let code = se.err().code().map(str::to_string);
            let kind = kind_from_status(status, code.as_deref());
            let msg = se.err().message().unwrap_or("");
            let kind = match (kind, code.as_deref()) {
                (_, Some("NoSuchBucket")) => ErrorKind::Invalid,
                (_, Some("InvalidObjectState")) => ErrorKind::Invalid,
                (k, _) => k,
            };
            Error::new(
                kind,
                format!("{ctx}: HTTP {status} {} {msg}", code.as_deref().unwrap_or_default()),
            )
            .with_service(status, code.as_deref())
        }
        // No region from AWS_REGION, a profile or the instance: the endpoint cannot even be
        // formed. Not a transport fault to retry, but a setting to name.
        SdkError::DispatchFailure(_) if no_region(&e) => Error::invalid(format!(
            "{ctx}: no AWS region is set: set AWS_REGION to the source bucket's region (or `region` in ~/.aws/config)"
        )),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => Error::new(
            crate::error::transport_kind(&e),
            format!("{ctx}: {}", aws_smithy_types::error::display::DisplayErrorContext(&e)),
        ),
        _ => Error::new(
            ErrorKind::Internal,
            format!("{ctx}: {}", aws_smithy_types::error::display::DisplayErrorContext(&e)),
        ),
    };
    err.with_source(e)
}

/// Whether the SDK refused to send because no region was found (its endpoint resolver's
/// words; `an_s3_call_without_a_region_names_the_setting` fails if they change).
fn no_region<E: std::error::Error + 'static, R: std::fmt::Debug>(e: &SdkError<E, R>) -> bool {
    aws_smithy_types::error::display::DisplayErrorContext(e)
        .to_string()
        .contains("A region must be set")
}

/// Access to a raw response's status, for error mapping.
pub(crate) trait HasStatus {
    /// The HTTP status code.
    fn status(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Last-Modified as RFC 3339 at whole seconds: HEAD gives seconds, a listing milliseconds,
/// and both must compare equal for the same version.
pub(crate) fn modified_rfc3339(t: &aws_smithy_types::DateTime) -> Option<String> {
    aws_smithy_types::DateTime::from_secs(t.secs())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_only_for_single_part_unencrypted_etags() {
        let mut h = ObjectHead {
            etag: "9e107d9d372bb6826bd81d3542a419d6".into(),
            ..Default::default()
        };
        assert!(h.md5().is_some());
        h.sse = Some("aws:kms".into());
        assert!(h.md5().is_none());
        h.sse = None;
        h.etag = "d41d8cd98f00b204e9800998ecf8427e-3".into();
        assert!(h.md5().is_none());
    }

    #[test]
    fn archive_classes_unreadable_until_restored() {
        let mut h = ObjectHead {
            storage_class: Some("GLACIER".into()),
            ..Default::default()
        };
        assert_eq!(h.unreadable_class().as_deref(), Some("GLACIER"));
        h.restore = Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"".into());
        assert_eq!(h.unreadable_class(), None);
        h.storage_class = Some("GLACIER_IR".into());
        h.restore = None;
        assert_eq!(h.unreadable_class(), None);
        // Intelligent-Tiering's archive tiers, told by x-amz-archive-status only.
        h.storage_class = Some("INTELLIGENT_TIERING".into());
        assert_eq!(h.unreadable_class(), None);
        for tier in ["ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"] {
            h.archive_status = Some(tier.into());
            assert_eq!(
                h.unreadable_class(),
                Some(format!("INTELLIGENT_TIERING in its {tier} tier"))
            );
        }
        h.restore = Some("ongoing-request=\"true\"".into());
        assert!(
            h.unreadable_class().is_some(),
            "a restore under way is not readable yet"
        );
        h.restore = Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"".into());
        assert_eq!(h.unreadable_class(), None);
    }
}
