//! What a bulk run does: the body of `POST /api/runs` (and `SYNC_SCHEDULED_RUN`), parsed
//! strictly so every mistake is a 400 that names the field.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use url::Url;

use super::webhook::WebhookRef;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::ListedObject;
use crate::model::SyncMode;
use crate::redact::ExposeSecret;

/// Default for `maxDeletes`: small, so a wrong prefix cannot empty a container.
pub const DEFAULT_MAX_DELETES: u64 = 100;

/// The source of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    /// Bucket.
    pub bucket: String,
    /// Key prefix.
    #[serde(default)]
    pub prefix: String,
    /// Must match the configured AWS_REGION when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Must match the configured AWS_ENDPOINT_URL when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// An S3 Inventory report's `manifest.json` (`s3://bucket/key`) to list the bucket from,
    /// with no LIST requests; its CSV data files are read in parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
}

/// The target of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSpec {
    /// Container.
    pub container: String,
    /// Blob name prefix.
    #[serde(default)]
    pub prefix: String,
}

/// Which objects a run considers; the rest are counted as excluded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterSpec {
    /// Globs over the key relative to the source prefix; an object must match one (when any).
    /// `*` stays within one `/` segment, `**` crosses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Globs; an object matching any is excluded (wins over include).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Smallest size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    /// Largest size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Only objects last modified at or after this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_after: Option<String>,
    /// Only objects last modified before this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_before: Option<String>,
}

/// A run as requested. `notify` is kept apart because a webhook URL is a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunSpec {
    /// Where from.
    pub source: SourceSpec,
    /// Where to.
    pub target: TargetSpec,
    /// `additive` (default) or `mirror`.
    #[serde(default)]
    pub mode: SyncMode,
    /// Which objects.
    #[serde(default)]
    pub filters: FilterSpec,
    /// Count what would happen; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Mirror mode deletes at most this many blobs; more ends the run PartiallySucceeded.
    #[serde(default = "default_max_deletes")]
    pub max_deletes: u64,
    /// Webhook called once when the run ends (never echoed back).
    #[serde(default, skip_serializing)]
    pub notify: Option<String>,
    /// Key ranges the listing may split into and list at once (1 to 64; defaults to
    /// `SYNC_LIST_SHARDS`, and is stored with the run). A run stored without it lists as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_shards: Option<u32>,
    /// A verification instead of a copy (`POST /api/verify`): both listings are compared and
    /// each difference is a report line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
}

/// What a verify run does besides comparing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifySpec {
    /// Queue a copy (that ignores the checkpoint) for every missing or stale object.
    #[serde(default)]
    pub repair: bool,
    /// Also HEAD each matching object and compare its headers and metadata.
    #[serde(default)]
    pub metadata: bool,
}

fn default_max_deletes() -> u64 {
    DEFAULT_MAX_DELETES
}

impl RunSpec {
    /// Parses and validates a run body against the configuration. `what` names the input in
    /// errors (`request body`, `SYNC_SCHEDULED_RUN`).
    pub fn parse(text: &str, what: &str, cfg: &Config) -> Result<(RunSpec, Option<WebhookRef>)> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::invalid(format!("{what} is not JSON: {e}")))?;
        if !value.is_object() {
            return Err(Error::invalid(format!("{what} must be a JSON object")));
        }
        let mut spec: RunSpec = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let inner = inner.split(" at line ").next().unwrap_or(&inner).to_string();
            if path == "." {
                Error::invalid(format!("{what}: {inner}"))
            } else {
                Error::invalid(format!("{what}: `{path}`: {inner}"))
            }
        })?;
        let bad = |field: &str, why: String| Error::invalid(format!("{what}: `{field}`: {why}"));
        if spec.source.bucket.trim().is_empty() {
            return Err(bad("source.bucket", "is empty".into()));
        }
        crate::model::validate_bucket_name(&spec.source.bucket)
            .map_err(|e| bad("source.bucket", e.message().to_string()))?;
        crate::model::validate_container_name(&spec.target.container)
            .map_err(|e| bad("target.container", e.message().to_string()))?;
        if let Some(r) = &spec.source.region {
            if cfg.aws.region.as_deref() != Some(r.as_str()) {
                return Err(bad(
                    "source.region",
                    format!(
                        "`{r}` is not this deployment's AWS_REGION ({}); deploy one per source region",
                        cfg.aws.region.as_deref().unwrap_or("unset")
                    ),
                ));
            }
        }
        if let Some(ep) = &spec.source.endpoint {
            // Signed requests never go to an endpoint a caller names: only the configured one.
            let same = match (Url::parse(ep), &cfg.aws.endpoint_url) {
                (Ok(a), Some(b)) => a.origin() == b.origin(),
                _ => false,
            };
            if !same {
                return Err(bad(
                    "source.endpoint",
                    "must equal the configured AWS_ENDPOINT_URL (requests are signed with this \
                     deployment's credentials)"
                        .into(),
                ));
            }
        }
        spec.filters.compile().map_err(|(field, why)| bad(&field, why))?;
        if let Some(url) = &spec.source.inventory {
            let at = crate::config::location::parse_s3_url(url)
                .map_err(|e| bad("source.inventory", e.message().to_string()))?;
            if at.prefix.is_empty() || at.prefix.ends_with('/') {
                return Err(bad(
                    "source.inventory",
                    "must name a report's manifest (s3://bucket/prefix/source-bucket/config-ID/YYYY-MM-DDTHH-MMZ/manifest.json)".into(),
                ));
            }
        }
        if spec.verify.is_some() {
            // A verification compares both listings whole: the copy-only fields mean nothing.
            let copy_only = [
                ("source.inventory", spec.source.inventory.is_some()),
                ("mode", spec.mode != SyncMode::Additive),
                ("filters", spec.filters != FilterSpec::default()),
                ("dryRun", spec.dry_run),
                ("listShards", spec.list_shards.is_some()),
            ];
            if let Some((field, _)) = copy_only.iter().find(|(_, set)| *set) {
                return Err(bad(field, "is not used by a verification; leave it out".into()));
            }
        }
        let max = crate::config::MAX_LIST_SHARDS;
        match spec.list_shards {
            _ if spec.verify.is_some() => {}
            Some(n) if n == 0 || n > max => return Err(bad("listShards", format!("must be between 1 and {max}"))),
            Some(_) => {}
            None => spec.list_shards = Some(cfg.runs.list_shards),
        }
        // One shard is stored as none: such a run's row reads on a host of the previous
        // version too (decisions 120).
        spec.list_shards = spec.list_shards.filter(|&n| n > 1);
        let notify = match spec.notify.take() {
            None => None,
            Some(n) => Some(validate_webhook(&n, cfg).map_err(|w| bad("notify", w))?),
        };
        Ok((spec, notify))
    }

    /// Key ranges the listing may split into (1 for a run stored before shards).
    pub fn shards(&self) -> u32 {
        self.list_shards.unwrap_or(1).clamp(1, crate::config::MAX_LIST_SHARDS)
    }

    /// Filters compiled for matching (the spec was validated by [`Self::parse`]).
    pub fn compiled_filters(&self) -> Result<Filters> {
        self.filters
            .compile()
            .map_err(|(f, w)| Error::invalid(format!("`{f}`: {w}")))
    }

    /// A key identifying source and target, so two runs never work on the same pair at once.
    pub fn lock_key(&self, account: &str) -> String {
        use sha2::Digest;
        let s = format!(
            "s3://{}/{}\n{}/{}/{}",
            self.source.bucket, self.source.prefix, account, self.target.container, self.target.prefix
        );
        hex::encode(&sha2::Sha256::digest(s.as_bytes())[..16])
    }
}

/// A webhook is named by its app setting, which must be set and hold an https URL (http only
/// to a host in SYNC_NOTIFY_ALLOW_HOSTS).
fn validate_webhook(s: &str, cfg: &Config) -> std::result::Result<WebhookRef, String> {
    let r = WebhookRef::parse(s)?;
    let url = r.resolve(cfg)?;
    // The parser's message never quotes the input, which is a secret.
    let u = Url::parse(url.expose_secret()).map_err(|e| format!("app setting `{}`: not a URL: {e}", r.setting()))?;
    super::webhook::check_url(&u, &cfg.runs.notify_allow_hosts)
        .map_err(|w| format!("app setting `{}`: {w}", r.setting()))?;
    Ok(r)
}

/// Compiled filters.
#[derive(Debug, Clone)]
pub struct Filters {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    after: Option<OffsetDateTime>,
    before: Option<OffsetDateTime>,
}

impl FilterSpec {
    fn compile(&self) -> std::result::Result<Filters, (String, String)> {
        let set = |field: &str, globs: &[String]| -> std::result::Result<Option<GlobSet>, (String, String)> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for (i, g) in globs.iter().enumerate() {
                let glob: Glob = GlobBuilder::new(g).literal_separator(true).build().map_err(|e| {
                    (
                        format!("filters.{field}[{i}]"),
                        format!("invalid glob `{g}`: {}", e.kind()),
                    )
                })?;
                b.add(glob);
            }
            b.build()
                .map(Some)
                .map_err(|e| (format!("filters.{field}"), e.to_string()))
        };
        let time = |field: &str, v: &Option<String>| -> std::result::Result<Option<OffsetDateTime>, (String, String)> {
            v.as_deref()
                .map(|s| {
                    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
                        (
                            format!("filters.{field}"),
                            format!("`{s}` is not an RFC 3339 time (e.g. 2026-01-31T00:00:00Z): {e}"),
                        )
                    })
                })
                .transpose()
        };
        if let (Some(a), Some(b)) = (self.min_size, self.max_size) {
            if a > b {
                return Err(("filters.minSize".into(), format!("{a} is larger than maxSize {b}")));
            }
        }
        let f = Filters {
            include: set("include", &self.include)?,
            exclude: set("exclude", &self.exclude)?,
            min_size: self.min_size,
            max_size: self.max_size,
            after: time("modifiedAfter", &self.modified_after)?,
            before: time("modifiedBefore", &self.modified_before)?,
        };
        if let (Some(a), Some(b)) = (f.after, f.before) {
            if a >= b {
                return Err((
                    "filters.modifiedAfter".into(),
                    "must be earlier than modifiedBefore".into(),
                ));
            }
        }
        Ok(f)
    }
}

impl Filters {
    /// Why `o` is left out, or `None` when the run considers it. `rel` is the key relative
    /// to the source prefix.
    pub fn excludes(&self, o: &ListedObject, rel: &str) -> Option<&'static str> {
        if let Some(inc) = &self.include {
            if !inc.is_match(rel) {
                return Some("not matched by filters.include");
            }
        }
        if self.exclude.as_ref().is_some_and(|e| e.is_match(rel)) {
            return Some("matched by filters.exclude");
        }
        if self.min_size.is_some_and(|m| o.size < m) {
            return Some("smaller than filters.minSize");
        }
        if self.max_size.is_some_and(|m| o.size > m) {
            return Some("larger than filters.maxSize");
        }
        if self.after.is_some() || self.before.is_some() {
            let Some(lm) = o
                .last_modified
                .as_deref()
                .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            else {
                return Some("no Last-Modified to compare with the time filters");
            };
            if self.after.is_some_and(|a| lm < a) {
                return Some("modified before filters.modifiedAfter");
            }
            if self.before.is_some_and(|b| lm >= b) {
                return Some("modified at or after filters.modifiedBefore");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let mut c = Config::for_emulators();
        for (k, v) in [
            ("SYNC_WEBHOOK_TEAMS", "https://hooks.example/T/abc"),
            ("SYNC_WEBHOOK_PLAIN", "http://hooks.example/x"),
        ] {
            c.runs
                .webhooks
                .insert(k.into(), crate::redact::Secret::from(v.to_string()));
        }
        c
    }

    fn err(body: &str) -> String {
        RunSpec::parse(body, "request body", &cfg())
            .unwrap_err()
            .message()
            .to_string()
    }

    #[test]
    fn a_verification_takes_no_copy_only_field() {
        let base = r#""source":{"bucket":"b-1","prefix":"p/"},"target":{"container":"cc1"},"verify":{"repair":true}"#;
        let (s, _) = RunSpec::parse(&format!("{{{base}}}"), "request body", &cfg()).unwrap();
        assert_eq!(
            s.verify,
            Some(VerifySpec {
                repair: true,
                metadata: false
            })
        );
        assert_eq!(s.list_shards, None, "a verification lists as one");
        for (extra, field) in [
            (r#""mode":"mirror""#, "`mode`"),
            (r#""dryRun":true"#, "`dryRun`"),
            (r#""listShards":4"#, "`listShards`"),
            (r#""filters":{"include":["*.csv"]}"#, "`filters`"),
        ] {
            let e = err(&format!("{{{base},{extra}}}"));
            assert!(e.contains(field) && e.contains("verification"), "{extra}: {e}");
        }
        let e = err(
            r#"{"source":{"bucket":"b-1","inventory":"s3://i/p/manifest.json"},"target":{"container":"cc1"},"verify":{}}"#,
        );
        assert!(e.contains("`source.inventory`"), "{e}");
        let e = err(r#"{"source":{"bucket":"b-1"},"target":{"container":"cc1"},"verify":{"fix":true}}"#);
        assert!(e.contains("`verify.fix`: unknown field"), "{e}");
    }

    #[test]
    fn full_body_parses() {
        let (s, notify) = RunSpec::parse(
            r#"{"source":{"bucket":"b-1","prefix":"p/","region":"us-east-1"},
                "target":{"container":"cc1","prefix":"x/"},"mode":"mirror",
                "filters":{"include":["**/*.csv"],"exclude":["tmp/**"],"minSize":1,"maxSize":9,
                           "modifiedAfter":"2024-01-01T00:00:00Z"},
                "dryRun":true,"notify":"setting:SYNC_WEBHOOK_TEAMS","maxDeletes":5}"#,
            "request body",
            &cfg(),
        )
        .unwrap();
        assert_eq!(s.mode, SyncMode::Mirror);
        assert!(s.dry_run);
        assert_eq!(s.max_deletes, 5);
        let notify = notify.unwrap();
        assert_eq!(notify.setting(), "SYNC_WEBHOOK_TEAMS");
        assert_eq!(
            notify.resolve(&cfg()).unwrap().expose_secret(),
            "https://hooks.example/T/abc"
        );
        // The webhook never appears in the stored/echoed spec.
        assert!(!serde_json::to_string(&s).unwrap().contains("SYNC_WEBHOOK"));
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let t = r#""target":{"container":"cc1"}"#;
        for (body, needle) in [
            ("not json".to_string(), "request body is not JSON"),
            ("[1]".to_string(), "must be a JSON object"),
            (format!(r#"{{{t}}}"#), "missing field `source`"),
            (format!(r#"{{"source":{{}},{t}}}"#), "`source`: missing field `bucket`"),
            (
                format!(r#"{{"source":{{"bucket":""}},{t}}}"#),
                "`source.bucket`: is empty",
            ),
            (format!(r#"{{"source":{{"bucket":"B_"}},{t}}}"#), "`source.bucket`"),
            (
                format!(r#"{{"source":{{"bucket":"bb1"}},{t},"mode":"sideways"}}"#),
                "`mode`: unknown variant `sideways`",
            ),
            (
                format!(r#"{{"source":{{"bucket":"bb1"}},{t},"filters":{{"minSize":-1}}}}"#),
                "`filters.minSize`: invalid value: integer `-1`",
            ),
            (
                format!(r#"{{"source":{{"bucket":"bb1"}},{t},"filters":{{"include":["a","[x"]}}}}"#),
                "`filters.include[1]`: invalid glob `[x`",
            ),
            (
                format!(r#"{{"source":{{"bucket":"bb1"}},{t},"filters":{{"minSize":5,"maxSize":1}}}}"#),
                "`filters.minSize`",
            ),
            (
                format!(r#"{{"source":{{"bucket":"bb1"}},{t},"filters":{{"modifiedAfter":"yesterday"}}}}"#),
                "`filters.modifiedAfter`",
            ),
            (
                format!(r#"{{"source":{{"bucket":"bb1"}},{t},"maxDelete":3}}"#),
                "unknown field `maxDelete`",
            ),
            (
                format!(r#"{{"source":{{"bucket":"bb1","region":"eu-west-1"}},{t}}}"#),
                "`source.region`",
            ),
            (
                format!(r#"{{"source":{{"bucket":"bb1","endpoint":"http://evil.example"}},{t}}}"#),
                "`source.endpoint`",
            ),
            (
                format!(r#"{{"source":{{"bucket":"bb1"}},{t},"notify":"setting:SYNC_WEBHOOK_PLAIN"}}"#),
                "`notify`: app setting `SYNC_WEBHOOK_PLAIN`: must be an https URL",
            ),
            // A URL is a credential: refused, and not quoted back.
            (
                format!(r#"{{"source":{{"bucket":"bb1"}},{t},"notify":"https://hooks.example/T/abc"}}"#),
                "`notify`: must name the app setting that holds the webhook URL, as \"setting:SYNC_WEBHOOK_<NAME>\"",
            ),
            (
                format!(r#"{{"source":{{"bucket":"bb1"}},{t},"notify":"setting:SYNC_WEBHOOK_NONE"}}"#),
                "`notify`: app setting `SYNC_WEBHOOK_NONE` is not set in this deployment",
            ),
            (
                format!(r#"{{"source":{{"bucket":"bb1"}},{t},"notify":"setting:AzureWebJobsStorage"}}"#),
                "`notify`: `setting:` must be followed by SYNC_WEBHOOK_",
            ),
            (
                r#"{"source":{"bucket":"bb1"},"target":{"container":"A"}}"#.to_string(),
                "`target.container`",
            ),
        ] {
            let e = err(&body);
            assert!(e.contains(needle), "{body}\n  -> {e}\n  wanted {needle}");
        }
    }

    #[test]
    fn filters_match_relative_keys() {
        let spec = FilterSpec {
            include: vec!["**/*.csv".into(), "*.csv".into()],
            exclude: vec!["tmp/**".into()],
            min_size: Some(2),
            ..Default::default()
        };
        let f = spec.compile().unwrap();
        let o = |size| ListedObject {
            key: String::new(),
            etag: String::new(),
            size,
            last_modified: Some("2024-05-01T00:00:00Z".into()),
            storage_class: None,
        };
        assert_eq!(f.excludes(&o(5), "a/b.csv"), None);
        assert_eq!(f.excludes(&o(5), "b.csv"), None);
        assert!(f.excludes(&o(5), "tmp/b.csv").unwrap().contains("exclude"));
        assert!(f.excludes(&o(5), "a/b.txt").unwrap().contains("include"));
        assert!(f.excludes(&o(1), "a/b.csv").unwrap().contains("minSize"));
    }
}
