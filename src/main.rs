//! The `s3-blob-sync` binary: all logic lives in the library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    s3_blob_sync::cli::main().await
}
