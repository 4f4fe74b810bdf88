//! The AWS side: S3 objects, SQS events, and credentials.

pub mod events;
pub mod inventory;
pub mod ranged_get;
pub mod s3;
pub mod sqs;
pub mod web_identity;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};

use crate::config::AwsConfig;
use crate::redact::ExposeSecret;
use crate::retry::RetryPolicy;

/// The shared AWS SDK configuration: static credentials, the Entra web-identity role, or the
/// standard provider chain; our region and endpoint overrides; and the SDK's retries off (the
/// crate's retry policy is the only one).
pub async fn aws_sdk_config(cfg: &AwsConfig, retry: RetryPolicy) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::disabled());
    if let Some(r) = &cfg.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(c) = &cfg.static_credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            c.access_key_id.expose_secret(),
            c.secret_access_key.expose_secret(),
            c.session_token.as_ref().map(|t| t.expose_secret().to_string()),
            None,
            "environment",
        ));
    }
    if let Some(wi) = &cfg.web_identity {
        loader = loader.credentials_provider(web_identity::EntraWebIdentity::new(cfg, wi, retry).await);
    }
    if let Some(ep) = &cfg.endpoint_url {
        loader = loader.endpoint_url(ep.as_str().trim_end_matches('/'));
    }
    loader.load().await
}
