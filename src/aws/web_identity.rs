//! AWS credentials with no AWS key: the Function App's managed-identity token, requested for
//! the audience the IAM role trusts, is exchanged through STS `AssumeRoleWithWebIdentity`
//! against the OIDC provider AWS keeps for the Entra ID tenant (see infra/aws/template.yaml).
//!
//! The token comes from `azure_identity`'s managed-identity credential (App Service /
//! Functions: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`; VMs: IMDS), the exchange from
//! `aws-sdk-sts`. The SDK's identity cache keeps the temporary credentials until shortly
//! before they expire, so a token is fetched about once an hour, not per request. Neither the
//! token nor the credentials reach a log or an error.

use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;
use azure_core::credentials::TokenCredential;

use crate::config::{AwsConfig, WebIdentityConfig};
use crate::error::{Error, ErrorKind, Idempotency};
use crate::retry::RetryPolicy;

/// Session name recorded in CloudTrail for every assumed session.
const SESSION_NAME: &str = "s3-blob-sync";

/// The credentials provider.
pub struct EntraWebIdentity {
    role_arn: String,
    scope: String,
    sts: aws_sdk_sts::Client,
    azure: tokio::sync::OnceCell<Arc<dyn TokenCredential>>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for EntraWebIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraWebIdentity")
            .field("role_arn", &self.role_arn)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl EntraWebIdentity {
    /// A provider for `wi`, with STS reached like the other AWS services (region, endpoint).
    pub async fn new(aws: &AwsConfig, wi: &WebIdentityConfig, retry: RetryPolicy) -> Self {
        // AssumeRoleWithWebIdentity is not signed: the token is the proof.
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .no_credentials()
            // The crate's one retry policy retries the call below; the SDK's own is off.
            .retry_config(RetryConfig::disabled());
        if let Some(r) = &aws.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(ep) = &aws.endpoint_url {
            loader = loader.endpoint_url(ep.as_str().trim_end_matches('/'));
        }
        let sdk = loader.load().await;
        let audience = wi.audience.trim_end_matches('/');
        EntraWebIdentity {
            role_arn: wi.role_arn.clone(),
            scope: format!("{audience}/.default"),
            sts: aws_sdk_sts::Client::new(&sdk),
            azure: tokio::sync::OnceCell::new(),
            retry,
        }
    }

    async fn azure(&self) -> Result<&Arc<dyn TokenCredential>, CredentialsError> {
        self.azure
            .get_or_try_init(|| async {
                let options = crate::http::managed_identity_options();
                azure_identity::ManagedIdentityCredential::new(Some(options))
                    .map(|c| c as Arc<dyn TokenCredential>)
                    .map_err(|e| {
                        CredentialsError::invalid_configuration(format!(
                            "SYNC_AWS_ROLE_ARN needs an Azure managed identity (IDENTITY_ENDPOINT and \
                             IDENTITY_HEADER on App Service/Functions, or IMDS on a VM): {e}"
                        ))
                    })
            })
            .await
    }

    async fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let token = self
            .azure()
            .await?
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(|e| {
                CredentialsError::provider_error(format!(
                    "managed-identity token for audience `{}` failed (is the app's identity enabled, \
                     and is SYNC_AWS_TOKEN_AUDIENCE an application ID URI in this tenant?): {}",
                    self.scope.trim_end_matches("/.default"),
                    crate::redact::redact(&e.to_string())
                ))
            })?;
        // Idempotent: each call only exchanges the token for fresh temporary credentials.
        let out = self
            .retry
            // Idempotent: each answer is a fresh set of credentials.
            .run("sts assume role with web identity", Idempotency::Idempotent, || async {
                self.sts
                    .assume_role_with_web_identity()
                    .role_arn(&self.role_arn)
                    .role_session_name(SESSION_NAME)
                    .web_identity_token(token.token.secret())
                    .send()
                    .await
                    .map_err(|e| {
                        let (kind, detail) = match e.as_service_error() {
                            Some(se) => {
                                let code = se.meta().code().unwrap_or("error");
                                let kind = match code {
                                    "IDPCommunicationError" | "ServiceUnavailable" | "InternalFailure" => {
                                        ErrorKind::Transient
                                    }
                                    "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                                        ErrorKind::Throttled
                                    }
                                    _ => match e.raw_response().map(|r| r.status().as_u16()) {
                                        Some(s) if s >= 500 => ErrorKind::Transient,
                                        _ => ErrorKind::Auth,
                                    },
                                };
                                (kind, format!("{code}: {}", se.meta().message().unwrap_or("")))
                            }
                            None => match e.raw_response().map(|r| r.status().as_u16()) {
                                Some(429) => (ErrorKind::Throttled, "HTTP 429".to_string()),
                                Some(s) if s < 500 => (ErrorKind::Auth, format!("HTTP {s}")),
                                _ => (
                                    crate::error::transport_kind(&e),
                                    "the STS endpoint could not be reached".to_string(),
                                ),
                            },
                        };
                        Error::new(kind, crate::redact::redact(&detail))
                    })
            })
            .await
            .map_err(|e| {
                CredentialsError::provider_error(format!(
                    "STS AssumeRoleWithWebIdentity for {} refused the managed-identity token \
                     (check the role's trust policy: OIDC provider, aud and sub): {}",
                    self.role_arn,
                    e.message()
                ))
            })?;
        let c = out
            .credentials()
            .ok_or_else(|| CredentialsError::provider_error("STS answered without credentials"))?;
        let expires = std::time::SystemTime::try_from(*c.expiration()).ok();
        tracing::info!(role_arn = %self.role_arn, outcome = "aws_credentials", "assumed the AWS role with the managed identity");
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            expires,
            "entra-web-identity",
        ))
    }
}

impl ProvideCredentials for EntraWebIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.fetch())
    }
}
