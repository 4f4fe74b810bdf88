//! Azure credentials: connection strings, account SAS signing, and the token chain.
//!
//! The official SDK signs only with Entra ID tokens (https) or a SAS already in the URL. So an
//! account-key connection string (including Azurite's `UseDevelopmentStorage=true`) is turned
//! into a short-lived account SAS here, and a [`SasPolicy`] appends it to every request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::config::azure::{AzureAuth, StorageAccount};
use crate::error::{Error, Result};
use crate::redact::ExposeSecret;
use crate::redact::Secret;

/// The signed version used for account SAS tokens we mint.
const SAS_VERSION: &str = "2022-11-02";

impl StorageAccount {
    /// The protocols a SAS for this account may be used over: `https`, or `https,http` when
    /// an endpoint is a loopback emulator over http. A SAS travels in every request's URL, so
    /// an http endpoint elsewhere would send it in clear text: refused, naming the setting.
    pub(crate) fn sas_protocols(&self) -> Result<&'static str> {
        let mut spr = "https";
        for u in [&self.blob_endpoint, &self.queue_endpoint, &self.table_endpoint] {
            if u.scheme() == "https" {
                continue;
            }
            let loopback = match u.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback {
                return Err(Error::invalid(format!(
                    "{}: {} is plain http, which would send the account's SAS in clear text; use https (http only for a loopback emulator)",
                    self.setting,
                    u.host_str().unwrap_or("the endpoint")
                )));
            }
            spr = "https,http";
        }
        Ok(spr)
    }

    /// Builds the authorization for this account's clients.
    pub fn authorizer(&self) -> Result<Authorizer> {
        Ok(match &self.auth {
            AzureAuth::AccountKey(k) => Authorizer::Sas(Arc::new(SasSource::minted(
                &self.name,
                k.clone(),
                self.sas_protocols()?,
            )?)),
            AzureAuth::Sas(s) => {
                self.sas_protocols()?;
                Authorizer::Sas(Arc::new(SasSource::fixed(s.clone())))
            }
            AzureAuth::Token => Authorizer::Token(chain_credential()),
        })
    }
}

/// How a client authorizes: a SAS appended per request, or an Entra ID token credential.
#[derive(Clone, Debug)]
pub enum Authorizer {
    /// SAS query appended by [`SasPolicy`].
    Sas(Arc<SasSource>),
    /// Bearer tokens from this credential.
    Token(Arc<dyn TokenCredential>),
}

/// Supplies the current SAS token, minting a fresh one before the old expires.
#[derive(Debug)]
pub struct SasSource {
    key: Option<(String, Secret, &'static str)>,
    current: Mutex<(Secret, OffsetDateTime)>,
}

impl SasSource {
    fn fixed(sas: Secret) -> Self {
        SasSource {
            key: None,
            current: Mutex::new((sas, OffsetDateTime::now_utc() + time::Duration::days(36500))),
        }
    }

    fn minted(account: &str, key: Secret, protocols: &'static str) -> Result<Self> {
        let (sas, exp) = mint_account_sas(account, &key, protocols, OffsetDateTime::now_utc())?;
        Ok(SasSource {
            key: Some((account.to_string(), key, protocols)),
            current: Mutex::new((sas, exp)),
        })
    }

    /// The token to use now.
    pub fn token(&self) -> Secret {
        let mut cur = self.current.lock().expect("sas lock");
        if let Some((account, key, protocols)) = &self.key {
            if cur.1 - OffsetDateTime::now_utc() < SAS_RENEW_BEFORE {
                if let Ok(fresh) = mint_account_sas(account, key, protocols, OffsetDateTime::now_utc()) {
                    *cur = fresh;
                }
            }
        }
        cur.0.clone()
    }
}

/// How long a minted SAS is valid: an hour, renewed by [`SasSource::token`] when less than
/// [`SAS_RENEW_BEFORE`] is left, so a leaked token is short-lived whatever a run's length.
pub const SAS_LIFETIME: Duration = Duration::from_secs(3600);
/// Renew a minted SAS when less than this is left.
const SAS_RENEW_BEFORE: time::Duration = time::Duration::minutes(15);

/// Mints an account SAS (services blob, queue, table; all resource types) for `protocols`
/// (`https`, or `https,http` for a loopback emulator), valid for [`SAS_LIFETIME`], with a
/// start 5 minutes back to absorb clock skew.
pub fn mint_account_sas(
    account: &str,
    key: &Secret,
    protocols: &str,
    now: OffsetDateTime,
) -> Result<(Secret, OffsetDateTime)> {
    // `t`: blob index tags, read and written with the commit (SYNC_TAGS=index).
    mint_account_sas_for(account, key, protocols, now, ACCOUNT_SAS_PERMISSIONS)
}

/// The permissions of a minted account SAS.
pub const ACCOUNT_SAS_PERMISSIONS: &str = "racwdlupt";

/// [`mint_account_sas`] with other permissions `sp` (tests mint narrower ones, as an
/// operator's SAS may be).
pub fn mint_account_sas_for(
    account: &str,
    key: &Secret,
    protocols: &str,
    now: OffsetDateTime,
    sp: &str,
) -> Result<(Secret, OffsetDateTime)> {
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(key.expose_secret())
        .map_err(|_| Error::invalid("the account key (AZURE_STORAGE_KEY, or AccountKey in AZURE_STORAGE_CONNECTION_STRING) is not valid base64"))?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let start = (now - Duration::from_secs(300))
        .format(&fmt)
        .map_err(|e| Error::internal(e.to_string()))?;
    let expiry_at = now + SAS_LIFETIME;
    let expiry = expiry_at.format(&fmt).map_err(|e| Error::internal(e.to_string()))?;
    let (ss, srt, spr) = ("bqt", "sco", protocols);
    // Field order for signed versions 2020-12-06 and later (the encryption scope is empty).
    let to_sign = format!("{account}\n{sp}\n{ss}\n{srt}\n{start}\n{expiry}\n\n{spr}\n{SAS_VERSION}\n\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_bytes).map_err(|e| Error::internal(e.to_string()))?;
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", SAS_VERSION)
        .append_pair("ss", ss)
        .append_pair("srt", srt)
        .append_pair("sp", sp)
        .append_pair("st", &start)
        .append_pair("se", &expiry)
        .append_pair("spr", spr)
        .append_pair("sig", &sig)
        .finish();
    Ok((Secret::from(query), expiry_at))
}

/// Appends the current SAS to each request's query, once per try.
#[derive(Debug)]
pub struct SasPolicy(pub Arc<SasSource>);

#[async_trait]
impl Policy for SasPolicy {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let token = self.0.token();
        let url = request.url_mut();
        let merged = match url.query() {
            // A retry already carries the SAS from the previous try.
            Some(q) if q.contains("sig=") => q.to_string(),
            Some(q) if !q.is_empty() => format!("{q}&{}", token.expose_secret()),
            _ => token.expose_secret().to_string(),
        };
        url.set_query(Some(&merged));
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// Tries a client secret first when one is configured (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
/// `AZURE_CLIENT_SECRET`: what the operator set beats what the host offers, and a host with
/// no identity endpoint, as on ECS, would make every start wait for IMDS to time out), then
/// managed identity, workload identity and the Azure CLI; remembers the first that answers.
#[derive(Debug)]
struct ChainCredential {
    sources: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    chosen: Mutex<Option<usize>>,
}

fn chain_credential() -> Arc<dyn TokenCredential> {
    let mut sources: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
    // An empty variable (a platform secret that resolved to nothing) is no secret.
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let (Some(t), Some(id), Some(secret)) = (
        set("AZURE_TENANT_ID"),
        set("AZURE_CLIENT_ID"),
        set("AZURE_CLIENT_SECRET"),
    ) {
        let options = azure_identity::ClientSecretCredentialOptions {
            client_options: crate::http::credential_client_options(),
        };
        if let Ok(c) = azure_identity::ClientSecretCredential::new(&t, id, secret.into(), Some(options)) {
            sources.push(("client secret", c));
        }
    }
    if let Ok(c) = azure_identity::ManagedIdentityCredential::new(Some(crate::http::managed_identity_options())) {
        sources.push(("managed identity", c));
    }
    if let Ok(c) = azure_identity::WorkloadIdentityCredential::new(None) {
        sources.push(("workload identity", c));
    }
    if let Ok(c) = azure_identity::AzureCliCredential::new(None) {
        sources.push(("azure cli", c));
    }
    Arc::new(ChainCredential {
        sources,
        chosen: Mutex::new(None),
    })
}

#[async_trait]
impl TokenCredential for ChainCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = *self.chosen.lock().expect("chain lock");
        if let Some(i) = chosen {
            return self.sources[i].1.get_token(scopes, options).await;
        }
        let mut tried = Vec::new();
        for (i, (name, c)) in self.sources.iter().enumerate() {
            match c.get_token(scopes, options.clone()).await {
                Ok(t) => {
                    *self.chosen.lock().expect("chain lock") = Some(i);
                    tracing::info!(credential = *name, "azure credential selected");
                    return Ok(t);
                }
                Err(e) => tried.push(format!("{name}: {}", crate::redact::redact(&e.to_string()))),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no Azure credential worked (set AZURE_STORAGE_CONNECTION_STRING, or give this \
                 host a managed identity, or log in with `az login`); tried: {}",
                tried.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::azure::AZURITE_KEY;

    #[test]
    fn minted_sas_has_expected_fields() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let (sas, exp) = mint_account_sas("acct", &Secret::from(AZURITE_KEY), "https", now).unwrap();
        let q = sas.expose_secret();
        assert!(q.starts_with("sv=2022-11-02&ss=bqt&srt=sco&sp=racwdlupt&st=2023-11-14T22%3A08%3A20Z"));
        assert!(q.contains("&spr=https&sig="), "{q}");
        assert_eq!(exp - now, time::Duration::hours(1));
    }

    #[test]
    fn a_sas_is_https_only_unless_the_endpoint_is_a_loopback_emulator() {
        let cs = |proto: &str, host: &str| {
            format!("DefaultEndpointsProtocol={proto};AccountName=acme;AccountKey={AZURITE_KEY};BlobEndpoint={proto}://{host}/acme;QueueEndpoint={proto}://{host}/acme;TableEndpoint={proto}://{host}/acme")
        };
        let spr = |c: &str| StorageAccount::from_connection_string(c).unwrap().sas_protocols();
        assert_eq!(spr(&cs("https", "acme.blob.core.windows.net")).unwrap(), "https");
        assert_eq!(spr(&cs("http", "127.0.0.1:10000")).unwrap(), "https,http");
        assert_eq!(spr(&cs("http", "localhost:10000")).unwrap(), "https,http");
        let e = spr(&cs("http", "acme.blob.core.windows.net")).unwrap_err();
        assert!(
            e.message().contains("plain http") && e.message().contains("AZURE_STORAGE_CONNECTION_STRING"),
            "{e}"
        );
        assert!(!e.message().contains(AZURITE_KEY));
        // The refusal comes before any client is built.
        let a = StorageAccount::from_connection_string(&cs("http", "10.0.0.5:10000")).unwrap();
        assert!(a.authorizer().is_err());
    }
}
