//! Where objects come from and go to, as operators write them: `s3://bucket/prefix` and a
//! container URL with an optional prefix (beside [`super::azure::account_from_url`], which
//! reads the account from such a URL).

use url::Url;

use super::azure::account_from_url;
use crate::error::{Error, Result};

/// An S3 location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (may be empty).
    pub prefix: String,
}

/// Parses `s3://bucket/prefix`.
pub fn parse_s3_url(s: &str) -> Result<S3Location> {
    let rest = s
        .strip_prefix("s3://")
        .ok_or_else(|| Error::invalid(format!("source `{s}` must look like s3://bucket/prefix")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    crate::model::validate_bucket_name(bucket).map_err(|e| Error::invalid(format!("source `{s}`: {}", e.message())))?;
    Ok(S3Location {
        bucket: bucket.into(),
        prefix: prefix.into(),
    })
}

/// A parsed target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLocation {
    /// Blob service endpoint (path-style includes the account).
    pub endpoint: Url,
    /// Account name.
    pub account: String,
    /// Container.
    pub container: String,
    /// Name prefix (may be empty).
    pub prefix: String,
}

/// Parses `https://acct.blob.core.windows.net/container/prefix` or the path-style
/// `http://host:port/acct/container/prefix`. A query string (SAS) is refused: pass it in
/// AZURE_STORAGE_SAS_TOKEN so it is never echoed.
pub fn parse_blob_url(s: &str) -> Result<BlobLocation> {
    let u = Url::parse(s).map_err(|e| {
        Error::invalid(format!(
            "target is not a URL ({e}); expected https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX"
        ))
    })?;
    if u.query().is_some() {
        return Err(Error::invalid(
            "target URL must not carry a query (SAS): set AZURE_STORAGE_SAS_TOKEN instead",
        ));
    }
    if !matches!(u.scheme(), "http" | "https") {
        return Err(Error::invalid("target URL must be http(s)"));
    }
    let account = account_from_url(&u).ok_or_else(|| Error::invalid("target URL names no storage account"))?;
    let path_style = !u.host_str().unwrap_or("").contains(".blob.");
    let mut segs: Vec<&str> = u
        .path()
        .trim_start_matches('/')
        .splitn(if path_style { 3 } else { 2 }, '/')
        .collect();
    if path_style {
        segs.remove(0);
    }
    let container = segs.first().copied().unwrap_or("").to_string();
    if container.is_empty() {
        return Err(Error::invalid("target URL names no container"));
    }
    crate::model::validate_container_name(&container)?;
    let prefix = percent_encoding::percent_decode_str(segs.get(1).copied().unwrap_or(""))
        .decode_utf8()
        .map_err(|_| Error::invalid("target prefix is not UTF-8"))?
        .to_string();
    let mut endpoint = u.clone();
    endpoint.set_path(if path_style { &account } else { "" });
    let endpoint = Url::parse(endpoint.as_str().trim_end_matches('/')).expect("valid");
    Ok(BlobLocation {
        endpoint,
        account,
        container,
        prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_s3_url("s3://my-bucket/a/b/").unwrap(),
            S3Location {
                bucket: "my-bucket".into(),
                prefix: "a/b/".into()
            }
        );
        assert_eq!(parse_s3_url("s3://bkt").unwrap().prefix, "");
        assert!(parse_s3_url("http://x").is_err());
        assert!(parse_s3_url("s3://UPPER/x").is_err());
        // The one bucket rule: also no `.` or `-` at either end.
        let e = parse_s3_url("s3://-bkt/x").unwrap_err();
        assert!(e.message().contains("not a valid S3 bucket name"), "{e}");
    }

    #[test]
    fn blob_urls() {
        let l = parse_blob_url("https://acme.blob.core.windows.net/data/in/").unwrap();
        assert_eq!(
            (l.account.as_str(), l.container.as_str(), l.prefix.as_str()),
            ("acme", "data", "in/")
        );
        assert_eq!(l.endpoint.as_str(), "https://acme.blob.core.windows.net/");
        let l = parse_blob_url("http://127.0.0.1:10000/devstoreaccount1/c01/p").unwrap();
        assert_eq!(
            (l.account.as_str(), l.container.as_str(), l.prefix.as_str()),
            ("devstoreaccount1", "c01", "p")
        );
        assert_eq!(l.endpoint.as_str(), "http://127.0.0.1:10000/devstoreaccount1");
        let e = parse_blob_url("https://acme.blob.core.windows.net/c?sv=1&sig=SECRET").unwrap_err();
        assert!(!e.message().contains("SECRET"));
        assert!(parse_blob_url("https://acme.blob.core.windows.net/").is_err());
        assert!(parse_blob_url("https://acme.blob.core.windows.net/Bad_C").is_err());
    }
}
