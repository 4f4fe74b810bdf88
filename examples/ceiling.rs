//! Benchmark helper (bench/run.sh): the stand-ins' own ceilings, so copy figures read as a
//! fraction of what the emulators can do on this machine.
//!
//! ```text
//! cargo run --release --example ceiling -- BUCKET CONTAINER [CONCURRENCY]
//! ```
//! Prints one line per measurement: raw concurrent GETs of every object in BUCKET (moto's
//! ceiling, objects/s and MB/s), raw 4 KiB Put Block requests/s and 8 MiB Put Block MB/s into
//! CONTAINER (Azurite's), and the one-core speed of the checksums every streamed byte gets. Configuration is the usual environment (scripts/emulators env).

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use s3_blob_sync::aws::s3::S3Source;
use s3_blob_sync::azure::blob::BlobTarget;
use s3_blob_sync::checksum::crc64;
use s3_blob_sync::config::Config;
use s3_blob_sync::retry::RetryPolicy;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bucket, container) = (&args[1], &args[2]);
    let c: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
    let cfg = Config::from_env().expect("config");
    let s3 = S3Source::new(&cfg.aws, RetryPolicy::default()).await;
    let mut objects = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = s3.list_page(bucket, "", token).await.expect("list");
        objects.extend(page);
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let t = Instant::now();
    let bytes: u64 = futures::stream::iter(objects.iter())
        .map(|o| {
            let s3 = &s3;
            async move {
                s3.span(bucket, &o.key, &o.etag, 0..o.size)
                    .next(o.size)
                    .await
                    .expect("get")
                    .len() as u64
            }
        })
        .buffer_unordered(c)
        .fold(0u64, |a, b| async move { a + b })
        .await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "moto_get\t{}\t{secs:.2}\t{:.0} obj/s\t{:.1} MB/s",
        objects.len(),
        objects.len() as f64 / secs,
        bytes as f64 / 1e6 / secs
    );

    let target = BlobTarget::new(
        &cfg.azure,
        &cfg.azure.authorizer().unwrap(),
        container,
        RetryPolicy::default(),
    )
    .unwrap();
    target.create_if_missing().await.unwrap();
    // `_hashed`: the same uploads, but each block's CRC-64 and MD5 are computed as the streamed
    // path does (one MD5 pass when the source's only check is an MD5 ETag): throughput with
    // and without the local integrity work, through the same pipeline.
    for (label, size, n, hashed) in [
        ("azurite_put_block_4k", 4096usize, 2000usize, false),
        ("azurite_put_block_8m", 8 << 20, 64, false),
        ("azurite_put_block_8m_hashed", 8 << 20, 64, true),
    ] {
        let data = Bytes::from(vec![7u8; size]);
        let fixed_crc = crc64(&data);
        let t = Instant::now();
        futures::stream::iter(0..n)
            .map(|i| {
                let (target, data) = (&target, data.clone());
                async move {
                    let id = format!("ceil-{i:06}");
                    let crc = if hashed {
                        std::hint::black_box(<md5::Md5 as md5::Digest>::digest(&data));
                        crc64(&data)
                    } else {
                        fixed_crc
                    };
                    target
                        .stage_block(&format!("ceiling/{label}/{}", i % 64), id.as_bytes(), data, crc)
                        .await
                        .expect("put block")
                }
            })
            .buffer_unordered(c)
            .collect::<Vec<()>>()
            .await;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{label}\t{n}\t{secs:.2}\t{:.0} req/s\t{:.1} MB/s",
            n as f64 / secs,
            (n * size) as f64 / 1e6 / secs
        );
    }

    // The cost of integrity checking: what the streamed path computes over every byte
    // (CRC-64/NVME for each block, MD5 for single-part sources), on one core.
    let data = vec![0x5au8; 256 << 20];
    let t = Instant::now();
    std::hint::black_box(crc64(&data));
    let crc_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::hint::black_box(<md5::Md5 as md5::Digest>::digest(&data));
    let md5_secs = t.elapsed().as_secs_f64();
    println!(
        "hash_one_core	{}	{:.2}	crc64 {:.0} MB/s	md5 {:.0} MB/s",
        data.len(),
        crc_secs + md5_secs,
        data.len() as f64 / 1e6 / crc_secs,
        data.len() as f64 / 1e6 / md5_secs
    );
}
