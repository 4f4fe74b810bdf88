//! Objects and copies shared by the tests: a copy request, an engine through the
//! copy-from-URL double, multipart uploads, and checks of a blob's bytes.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use s3_blob_sync::engine::{CopyRequest, Engine};
use s3_blob_sync::model::SyncMode;

use super::proxy::Proxy;
use super::{sha, TestCtx};

pub fn req(ctx: &TestCtx, key: &str) -> CopyRequest {
    CopyRequest {
        bucket: ctx.bucket.clone(),
        key: key.to_string(),
        container: ctx.container.clone(),
        source_prefix: String::new(),
        target_prefix: String::new(),
        run_id: Some("test".into()),
        mode: SyncMode::Additive,
        event: None,
        listed: None,
        recheck: false,
        part: None,
        fresh: false,
    }
}

/// An engine that copies server-side through the double (which fetches from moto).
pub async fn server_side_engine(ctx: &TestCtx, double: &Proxy, extra: &[(&str, &str)]) -> Engine {
    let cs = ctx.connection_string_via(&double.url);
    let mut o = vec![
        ("AZURE_STORAGE_CONNECTION_STRING", cs.as_str()),
        ("SYNC_COPY_PATH", "server-side"),
    ];
    o.extend_from_slice(extra);
    ctx.engine(&o).await
}

pub async fn assert_blob(ctx: &TestCtx, name: &str, want: &[u8]) {
    let got = ctx
        .blob()
        .read(name)
        .await
        .unwrap_or_else(|e| panic!("read {name}: {e}"));
    assert_eq!(got.len(), want.len(), "{name}: length");
    assert_eq!(sha(&got), sha(want), "{name}: content");
}

/// A multipart upload; with `crc64`, one carrying S3's full-object CRC64NVME (the SDK sends
/// part checksums; S3, here moto with awscrt, combines them).
pub async fn multipart(ctx: &TestCtx, key: &str, parts: &[Vec<u8>], crc64: bool) {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};
    let algorithm = crc64.then_some(ChecksumAlgorithm::Crc64Nvme);
    let c = ctx.s3.client();
    let up = c
        .create_multipart_upload()
        .bucket(&ctx.bucket)
        .key(key)
        .set_checksum_algorithm(algorithm.clone())
        .set_checksum_type(crc64.then_some(ChecksumType::FullObject))
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let mut done = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let r = c
            .upload_part()
            .bucket(&ctx.bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .set_checksum_algorithm(algorithm.clone())
            .body(ByteStream::from(p.clone()))
            .send()
            .await
            .unwrap();
        done.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().unwrap())
                .set_checksum_crc64_nvme(r.checksum_crc64_nvme().map(str::to_string))
                .build(),
        );
    }
    c.complete_multipart_upload()
        .bucket(&ctx.bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        .send()
        .await
        .unwrap();
}

/// The CRC-64 Azure computes of `data`.
pub fn checksum_of(data: &[u8]) -> u64 {
    s3_blob_sync::checksum::crc64(data)
}
