//! The completion webhook. The body carries `text` (what Slack incoming webhooks and Teams
//! connector webhooks display) plus the run summary as data for machines. The URL is a
//! secret (Slack and Teams put the credential in it), so no error names it, and a run names
//! it only by reference: the app setting that holds it ([`WebhookRef`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};
use url::{Host, Url};

use indicatif::HumanBytes;

use super::summary::RunSummary;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Idempotency, Result};
use crate::messages::webhook::{allowed, check_url, refused};
use crate::redact::ExposeSecret;
use crate::redact::Secret;
use crate::state::runs::counters::Tally;

/// The message body for `summary`.
pub fn payload(summary: &RunSummary) -> Value {
    let n = |t: Tally| summary.objects(t);
    let what = if summary.verify.is_some() { "verify run" } else { "run" };
    let mut text = format!(
        "s3-blob-sync {what} {} {}: {}. ",
        summary.run_id,
        summary.state.as_str(),
        summary.route()
    );
    match &summary.verify {
        // A verification copies nothing: its own tallies say what it found.
        Some(v) => {
            text.push_str(&format!(
                "{} source objects, {} blobs, {} match; {}.",
                v.report.source_objects,
                v.report.target_blobs,
                v.report.matched,
                if v.clean {
                    "no differences".to_string()
                } else {
                    format!("differences: {}", v.report.counts_text())
                }
            ));
            if v.report.repaired > 0 {
                text.push_str(&format!(" {} repair copies queued.", v.report.repaired));
            }
        }
        None => text.push_str(&format!(
            "{} scanned, {} transferred ({}), {} no transfer needed, {} excluded, {} unsupported, \
             {} failed, {} deleted.",
            n(Tally::Scanned),
            n(Tally::Transferred),
            HumanBytes(summary.counters.bytes(Tally::Transferred)),
            n(Tally::NoTransferNeeded),
            n(Tally::Excluded),
            n(Tally::Unsupported),
            n(Tally::Failed),
            n(Tally::Pruned),
        )),
    }
    if let Some(r) = &summary.reason {
        text.push_str(&format!(" Reason: {r}"));
    }
    if summary.dry_run {
        text.push_str(&format!(
            " Dry run: {} would transfer, {} would be deleted; nothing was changed.",
            n(Tally::WouldTransfer),
            n(Tally::WouldDelete)
        ));
    }
    json!({
        "text": text,
        "runId": summary.run_id,
        "state": summary.state,
        "summary": summary,
    })
}

/// Checks where a webhook would go: [`check_url`], then every address its host resolves to
/// must be public. Returns the addresses to connect to (so the request goes where the check
/// looked, even if the name's DNS answer changes meanwhile), or `None` for an allowed host.
pub async fn vet(u: &Url, allow: &[String]) -> Result<Option<Vec<SocketAddr>>> {
    check_url(u, allow).map_err(|w| Error::invalid(format!("notify: {w}")))?;
    if allowed(u, allow) {
        return Ok(None);
    }
    let port = u.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match u.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Transient,
                    format!("notify: the webhook's host does not resolve: {e}"),
                )
            })?
            .collect(),
        None => Vec::new(),
    };
    if addrs.is_empty() {
        return Err(Error::new(
            ErrorKind::Transient,
            "notify: the webhook's host resolves to no address",
        ));
    }
    // One refused address refuses the name: the client could pick any of them.
    if let Some((ip, why)) = addrs.iter().find_map(|a| refused(a.ip()).map(|w| (a.ip(), w))) {
        return Err(Error::invalid(format!(
            "notify: the webhook's host resolves to {ip}, {why}; a webhook must reach a public address (or a host in SYNC_NOTIFY_ALLOW_HOSTS)"
        )));
    }
    Ok(Some(addrs))
}

/// Posts the payload for `summary` to `url`, retrying within the call only what never reached
/// the receiver or was refused before it acted (throttling): a POST is not idempotent for a
/// receiver that ignores the run id in `Idempotency-Key`. The attempts of `finish::notify`
/// retry the rest, paced. The
/// destination is vetted again here (its DNS may have changed since the run started) and
/// the connection pinned to the vetted addresses; redirects are not followed, and the whole
/// exchange is bounded by a short timeout.
pub async fn send(url: &Secret, summary: &RunSummary, cfg: &Config) -> Result<()> {
    // Not a URL: in Azure most likely a Key Vault reference the platform has not resolved
    // (the setting then holds the reference text), so it is retried.
    let u = Url::parse(url.expose_secret()).map_err(|_| {
        Error::new(
            ErrorKind::Transient,
            "notify: the webhook setting's value is not a URL (a Key Vault reference not resolved yet?)",
        )
    })?;
    let pinned = vet(&u, &cfg.runs.notify_allow_hosts).await?;
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the name itself, around the pinned addresses.
        .no_proxy();
    if let (Some(addrs), Some(Host::Domain(name))) = (pinned.as_ref(), u.host()) {
        builder = builder.resolve_to_addrs(name, addrs);
    }
    let client = builder
        .build()
        .map_err(|e| Error::internal(format!("webhook client: {}", e.without_url())))?;
    let body = payload(summary).to_string();
    let key = summary.run_id.clone();
    cfg.retry
        // Not idempotent: a receiver may not drop a repeat (Slack and Teams do not read Idempotency-Key).
        .run("webhook", Idempotency::NotIdempotent, || async {
            let res = client
                .post(url.expose_secret())
                .header("content-type", "application/json")
                .header("idempotency-key", key.clone())
                .body(body.clone())
                .send()
                .await
                .map_err(|e| {
                    // Never sent (no connection) is tried again within the call; a timeout
                    // may have reached the receiver, and is left to the next attempt.
                    let kind = if e.is_connect() {
                        ErrorKind::NotSent
                    } else if e.is_timeout() {
                        ErrorKind::Transient
                    } else {
                        ErrorKind::Invalid
                    };
                    Error::new(kind, format!("webhook: {}", e.without_url()))
                })?;
            let status = res.status().as_u16();
            if res.status().is_success() {
                return Ok(());
            }
            if res.status().is_redirection() {
                return Err(Error::invalid(format!(
                    "webhook answered HTTP {status}; redirects are not followed: set the final URL"
                )));
            }
            Err(Error::new(
                crate::error::kind_from_status(status, None),
                format!("webhook answered HTTP {status}"),
            ))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_reads_as_text() {
        let s = json!({"runId": "r1", "state": "PartiallySucceeded", "reason": "2 objects failed",
            "source": {"bucket": "b", "prefix": "p/"}, "target": {"container": "c", "prefix": ""},
            "counters": {"scanned": 5, "transferred": 3, "transferredBytes": 3 * 1048576, "failed": 2}});
        let p = payload(&crate::app::summary::summary_from(s));
        let t = p["text"].as_str().unwrap();
        assert!(t.contains("r1 PartiallySucceeded"), "{t}");
        assert!(t.contains("3 transferred (3.00 MiB)"), "{t}");
        assert!(t.contains("Reason: 2 objects failed"), "{t}");
        assert_eq!(p["summary"]["counters"]["failed"], 2);
    }

    #[test]
    fn a_verify_runs_payload_says_what_it_found() {
        let s = json!({"runId": "v1", "state": "PartiallySucceeded",
            "verify": {"sourceObjects": 7, "targetBlobs": 6, "matched": 5, "counts": {"missing": 2, "extra": 1},
                       "repaired": 2, "clean": false, "done": true, "slices": 3}});
        let p = payload(&crate::app::summary::summary_from(s));
        let t = p["text"].as_str().unwrap();
        assert!(t.contains("verify run v1 PartiallySucceeded"), "{t}");
        assert!(
            t.contains("7 source objects, 6 blobs, 5 match; differences: 1 extra, 2 missing"),
            "{t}"
        );
        assert!(t.contains("2 repair copies queued"), "{t}");
        assert!(!t.contains("transferred"), "{t}");
        assert_eq!(p["summary"]["verify"]["counts"]["missing"], 2);
    }
}
