//! The storage account as configured: its name, its three service endpoints and how requests
//! are authorized, read from a connection string or an account name. Reading only: the
//! clients and the SAS minting are in `crate::azure`.

use base64::Engine as _;
use url::Url;

use crate::error::{Error, Result};
use crate::http::HttpPool;
use crate::redact::Secret;

/// Azurite's fixed, publicly documented development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub(crate) const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How requests to Azure Storage are authorized.
#[derive(Clone, Debug)]
pub enum AzureAuth {
    /// An account key: we mint account SAS tokens from it.
    AccountKey(Secret),
    /// A SAS token supplied by the operator (query string without the leading `?`).
    Sas(Secret),
    /// Entra ID: managed identity, workload identity, client secret, then Azure CLI.
    Token,
}

/// One storage account's endpoints and credentials.
#[derive(Clone, Debug)]
pub struct StorageAccount {
    /// The account name.
    pub name: String,
    /// Blob service endpoint, ending without a slash.
    pub blob_endpoint: Url,
    /// Queue service endpoint.
    pub queue_endpoint: Url,
    /// Table service endpoint.
    pub table_endpoint: Url,
    /// How to authorize.
    pub auth: AzureAuth,
    /// The variable that configured this account, named by errors about it
    /// (`AZURE_STORAGE_CONNECTION_STRING`, or `SYNC_STATE_CONNECTION_STRING`).
    pub setting: &'static str,
    /// One HTTP connection pool for every client of this account (clones share it). Tied to
    /// the account rather than the process: pooled connections belong to the async runtime
    /// that opened them.
    pub(crate) http: HttpPool,
}

/// The variables that configure one account: a connection string, or a name (Entra ID, or a
/// SAS in its own variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountVars {
    /// The connection string's variable.
    pub connection_string: &'static str,
    /// The account name's variable.
    pub name: &'static str,
    /// The SAS token's variable, used with the name.
    pub sas: &'static str,
}

/// The target account: blobs, and state and queues unless the state account is set.
pub const TARGET_ACCOUNT: AccountVars = AccountVars {
    connection_string: "AZURE_STORAGE_CONNECTION_STRING",
    name: "AZURE_STORAGE_ACCOUNT",
    sas: "AZURE_STORAGE_SAS_TOKEN",
};

/// The state account: checkpoint and run tables, and the work queues unless the queue
/// account is set (decision 124).
pub const STATE_ACCOUNT: AccountVars = AccountVars {
    connection_string: "SYNC_STATE_CONNECTION_STRING",
    name: "SYNC_STATE_ACCOUNT",
    sas: "SYNC_STATE_SAS_TOKEN",
};

/// The queue account: the work queues, apart from the tables (decision 124).
pub const QUEUE_ACCOUNT: AccountVars = AccountVars {
    connection_string: "SYNC_QUEUE_CONNECTION_STRING",
    name: "SYNC_QUEUE_ACCOUNT",
    sas: "SYNC_QUEUE_SAS_TOKEN",
};

impl StorageAccount {
    /// Parses an Azure Storage connection string given in AZURE_STORAGE_CONNECTION_STRING.
    /// Errors never echo the string itself.
    pub fn from_connection_string(cs: &str) -> Result<Self> {
        Self::from_connection_string_in(&TARGET_ACCOUNT, cs)
    }

    /// Parses an Azure Storage connection string given in `vars.connection_string`; errors
    /// name that variable and never echo the string itself.
    pub fn from_connection_string_in(vars: &AccountVars, cs: &str) -> Result<Self> {
        let setting = vars.connection_string;
        let mut name = None;
        let mut key = None;
        let mut sas = None;
        let mut protocol = "https".to_string();
        let mut suffix = "core.windows.net".to_string();
        let (mut blob, mut queue, mut table) = (None, None, None);
        let mut dev = false;
        for part in cs.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(Error::invalid(format!(
                    "{setting}: a field is not of the form Name=Value"
                )));
            };
            match k.to_ascii_lowercase().as_str() {
                "usedevelopmentstorage" => dev = v.eq_ignore_ascii_case("true"),
                "defaultendpointsprotocol" => protocol = v.to_ascii_lowercase(),
                "accountname" => name = Some(v.to_string()),
                "accountkey" => key = Some(v.to_string()),
                "sharedaccesssignature" => sas = Some(v.trim_start_matches('?').to_string()),
                "endpointsuffix" => suffix = v.to_string(),
                "blobendpoint" => blob = Some(parse_endpoint(&format!("{setting}: BlobEndpoint"), v)?),
                "queueendpoint" => queue = Some(parse_endpoint(&format!("{setting}: QueueEndpoint"), v)?),
                "tableendpoint" => table = Some(parse_endpoint(&format!("{setting}: TableEndpoint"), v)?),
                _ => {} // FileEndpoint and others: not ours to use.
            }
        }
        if dev {
            let base = |port: u16| Url::parse(&format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")).expect("static");
            return Ok(StorageAccount {
                name: AZURITE_ACCOUNT.into(),
                blob_endpoint: blob.unwrap_or_else(|| base(10000)),
                queue_endpoint: queue.unwrap_or_else(|| base(10001)),
                table_endpoint: table.unwrap_or_else(|| base(10002)),
                auth: AzureAuth::AccountKey(Secret::from(AZURITE_KEY)),
                setting,
                http: HttpPool::default(),
            });
        }
        let auth = match (key, sas) {
            (Some(k), _) => {
                if base64::engine::general_purpose::STANDARD.decode(&k).is_err() {
                    return Err(Error::invalid(format!("{setting}: AccountKey is not valid base64")));
                }
                AzureAuth::AccountKey(Secret::from(k))
            }
            (None, Some(s)) => AzureAuth::Sas(Secret::from(s)),
            (None, None) => {
                return Err(Error::invalid(format!(
                    "{setting}: needs AccountKey or SharedAccessSignature (or use {} for Entra ID)",
                    vars.name
                )))
            }
        };
        let name = match name {
            Some(n) => n,
            None => blob
                .as_ref()
                .and_then(account_from_url)
                .ok_or_else(|| Error::invalid(format!("{setting}: AccountName is missing")))?,
        };
        let default = |svc: &str| {
            parse_endpoint(
                &format!("{setting}: EndpointSuffix"),
                &format!("{protocol}://{name}.{svc}.{suffix}"),
            )
        };
        Ok(StorageAccount {
            blob_endpoint: match blob {
                Some(u) => u,
                None => default("blob")?,
            },
            queue_endpoint: match queue {
                Some(u) => u,
                None => default("queue")?,
            },
            table_endpoint: match table {
                Some(u) => u,
                None => default("table")?,
            },
            name,
            auth,
            setting,
            http: HttpPool::default(),
        })
    }

    /// An account reached with Entra ID or a SAS, by name, at the public cloud endpoints.
    pub fn for_account(name: &str, auth: AzureAuth) -> Result<Self> {
        Self::for_account_in(&TARGET_ACCOUNT, name, auth)
    }

    /// [`Self::for_account`], for the account `vars.name` names.
    pub fn for_account_in(vars: &AccountVars, name: &str, auth: AzureAuth) -> Result<Self> {
        let ep = |svc: &str| parse_endpoint(vars.name, &format!("https://{name}.{svc}.core.windows.net"));
        Ok(StorageAccount {
            setting: vars.connection_string,
            name: name.to_string(),
            blob_endpoint: ep("blob")?,
            queue_endpoint: ep("queue")?,
            table_endpoint: ep("table")?,
            auth,
            http: HttpPool::default(),
        })
    }
}

pub(crate) fn parse_endpoint(field: &str, v: &str) -> Result<Url> {
    let u =
        Url::parse(v.trim_end_matches('/')).map_err(|e| Error::invalid(format!("{field}: not a valid URL ({e})")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(Error::invalid(format!("{field}: must be an http(s) URL with a host")));
    }
    Ok(u)
}

/// `https://acct.blob.core.windows.net` -> `acct`; path-style `http://host/acct` -> `acct`.
pub fn account_from_url(u: &Url) -> Option<String> {
    let host = u.host_str()?;
    if let Some((first, _)) = host.split_once(".blob.") {
        return Some(first.to_string());
    }
    u.path_segments()?.find(|s| !s.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dev_storage_and_full_strings() {
        let a = StorageAccount::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(a.name, AZURITE_ACCOUNT);
        assert_eq!(a.table_endpoint.as_str(), "http://127.0.0.1:10002/devstoreaccount1");
        let a = StorageAccount::from_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(a.blob_endpoint.as_str(), "https://acme.blob.core.windows.net/");
        assert!(matches!(a.auth, AzureAuth::AccountKey(_)));
        assert!(!format!("{a:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn rejects_bad_strings_without_echoing_them() {
        let e = StorageAccount::from_connection_string("AccountName=a;AccountKey=not*base64!").unwrap_err();
        assert!(e.message().contains("AccountKey is not valid base64"));
        assert!(!e.message().contains("not*base64"));
        let e = StorageAccount::from_connection_string("garbage").unwrap_err();
        assert!(e.message().contains("Name=Value"));
        let e = StorageAccount::from_connection_string("AccountName=a").unwrap_err();
        assert!(e.message().contains("needs AccountKey"));
    }

    #[test]
    fn account_from_urls() {
        let u = Url::parse("https://acme.blob.core.windows.net/c").unwrap();
        assert_eq!(account_from_url(&u).as_deref(), Some("acme"));
        let u = Url::parse("http://127.0.0.1:10000/devstoreaccount1/c").unwrap();
        assert_eq!(account_from_url(&u).as_deref(), Some("devstoreaccount1"));
    }
}
