//! The completion webhook. The body carries `text` (what Slack incoming webhooks and Teams
//! connector webhooks display) plus the run summary as data for machines. The URL is a
//! secret (Slack and Teams put the credential in it), so no error names it, and a run names
//! it only by reference: the app setting that holds it ([`WebhookRef`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};
use url::{Host, Url};

use crate::config::{Config, WEBHOOK_SETTING_PREFIX};
use crate::error::{Error, ErrorKind, Result};
use crate::redact::Secret;
use crate::retry::RetryPolicy;

/// How a run spec names its webhook.
const REF_SCHEME: &str = "setting:";

/// A run's webhook, named by the app setting that holds its URL:
/// `setting:SYNC_WEBHOOK_<NAME>`. The URL carries a credential, so it lives only in that
/// setting (in Azure a Key Vault reference, rotated there) and is read where it is sent; the
/// run row, the status body and the logs hold only this name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRef {
    setting: String,
}

impl WebhookRef {
    /// Parses `setting:SYNC_WEBHOOK_<NAME>`. A refusal never quotes the input, which may be
    /// the URL itself.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let Some(name) = s.trim().strip_prefix(REF_SCHEME) else {
            return Err(format!(
                "must name the app setting that holds the webhook URL, as \"{REF_SCHEME}{WEBHOOK_SETTING_PREFIX}<NAME>\"; \
                 a URL is a credential and is not stored with a run"
            ));
        };
        let ok = name.strip_prefix(WEBHOOK_SETTING_PREFIX).is_some_and(|rest| {
            (1..=64).contains(&rest.len())
                && rest
                    .bytes()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
        });
        if !ok {
            return Err(format!(
                "`{REF_SCHEME}` must be followed by {WEBHOOK_SETTING_PREFIX} and 1-64 of A-Z, 0-9 and _"
            ));
        }
        Ok(WebhookRef {
            setting: name.to_string(),
        })
    }

    /// The app setting's name.
    pub fn setting(&self) -> &str {
        &self.setting
    }

    /// The URL, from this process's configuration; a refusal names the setting.
    pub fn resolve<'a>(&self, cfg: &'a Config) -> std::result::Result<&'a Secret, String> {
        cfg.webhooks
            .get(&self.setting)
            .ok_or_else(|| format!("app setting `{}` is not set in this deployment", self.setting))
    }
}

impl std::fmt::Display for WebhookRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{REF_SCHEME}{}", self.setting)
    }
}

/// The message body for `summary`.
pub fn payload(summary: &Value) -> Value {
    let c = &summary["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let mut text = format!(
        "s3-blob-sync run {} {}: s3://{}/{} -> {}/{}. {} scanned, {} transferred ({}), {} no transfer needed, \
         {} excluded, {} unsupported, {} failed, {} deleted.",
        summary["runId"].as_str().unwrap_or(""),
        summary["state"].as_str().unwrap_or(""),
        summary["source"]["bucket"].as_str().unwrap_or(""),
        summary["source"]["prefix"].as_str().unwrap_or(""),
        summary["target"]["container"].as_str().unwrap_or(""),
        summary["target"]["prefix"].as_str().unwrap_or(""),
        n("scanned"),
        n("transferred"),
        human_bytes(n("transferredBytes")),
        n("noTransferNeeded"),
        n("excluded"),
        n("unsupported"),
        n("failed"),
        n("deleted"),
    );
    if let Some(r) = summary["reason"].as_str() {
        text.push_str(&format!(" Reason: {r}"));
    }
    if summary["dryRun"].as_bool() == Some(true) {
        text.push_str(&format!(
            " Dry run: {} would transfer, {} would be deleted; nothing was changed.",
            n("wouldTransfer"),
            n("wouldDelete")
        ));
    }
    json!({
        "text": text,
        "runId": summary["runId"],
        "state": summary["state"],
        "summary": summary,
    })
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Why a webhook may not go to `ip`, or `None` for a public address. Loopback, private,
/// link-local, shared (CGNAT), unspecified, broadcast, multicast and reserved ranges, the
/// cloud metadata addresses, and IPv6 forms that embed such an IPv4 address.
pub fn refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4 == Ipv4Addr::new(169, 254, 169, 254) {
                Some("the cloud metadata address")
            } else if v4 == Ipv4Addr::new(168, 63, 129, 16) {
                Some("Azure's platform address (wireserver)")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if v4.is_private() {
                Some("a private address")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("a shared (carrier-grade NAT) address")
            } else if o[0] == 0 {
                Some("an unspecified address")
            } else if (o[0] == 192 && o[1] == 0 && o[2] == 0) || (o[0] == 198 && (o[1] & 0xfe) == 18) {
                Some("a reserved address (IETF assignments, benchmarking)")
            } else if v4.is_broadcast() || v4.is_multicast() || o[0] >= 240 {
                Some("a broadcast, multicast or reserved address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            if let Some(v4) = v6.to_ipv4_mapped() {
                refused(IpAddr::V4(v4))
            } else if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("a unique local (private) address")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a broadcast, multicast or reserved address")
            } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                Some("a local-use NAT64 address")
            } else if (s[0] == 0x64 && s[1] == 0xff9b)
                || s[..6] == [0; 6]
                || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0)
            {
                // NAT64, IPv4-compatible and IPv4-translated forms reach the IPv4 address
                // they embed.
                refused(IpAddr::V4(embedded()))
            } else {
                None
            }
        }
    }
}

/// The URL's host is in SYNC_NOTIFY_ALLOW_HOSTS, as `host` or `host:port`.
fn allowed(u: &Url, allow: &[String]) -> bool {
    let Some(host) = u.host_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    let with_port = u.port_or_known_default().map(|p| format!("{host}:{p}"));
    allow.iter().any(|a| *a == host || Some(a) == with_port.as_ref())
}

/// What can be told without resolving the host: https (plain http only to an allowed host),
/// a host, no credentials in the URL, and no address literal of a refused class. The
/// reasons never quote the URL, which is a secret.
pub fn check_url(u: &Url, allow: &[String]) -> std::result::Result<(), String> {
    if u.host_str().is_none_or(str::is_empty) {
        return Err("must be an https URL with a host".into());
    }
    let listed = allowed(u, allow);
    match u.scheme() {
        "https" => {}
        "http" if listed => {}
        _ => return Err("must be an https URL (plain http only to a host in SYNC_NOTIFY_ALLOW_HOSTS)".into()),
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    if listed {
        return Ok(());
    }
    let literal = match u.host() {
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    match literal.and_then(|ip| refused(ip).map(|why| (ip, why))) {
        Some((ip, why)) => Err(format!(
            "{ip} is {why}; a webhook must reach a public address (or a host in SYNC_NOTIFY_ALLOW_HOSTS)"
        )),
        None => Ok(()),
    }
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

/// Posts the payload for `summary` to `url`, retrying throttling and server errors. The run
/// id goes in `Idempotency-Key` so a receiver can drop a repeat after a crash. The
/// destination is vetted again here (its DNS may have changed since the run started) and
/// the connection pinned to the vetted addresses; redirects are not followed, and the whole
/// exchange is bounded by a short timeout.
pub async fn send(url: &Secret, summary: &Value, allow: &[String]) -> Result<()> {
    // Not a URL: in Azure most likely a Key Vault reference the platform has not resolved
    // (the setting then holds the reference text), so it is retried.
    let u = Url::parse(url.expose()).map_err(|_| {
        Error::new(
            ErrorKind::Transient,
            "notify: the webhook setting's value is not a URL (a Key Vault reference not resolved yet?)",
        )
    })?;
    let pinned = vet(&u, allow).await?;
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
    let key = summary["runId"].as_str().unwrap_or_default().to_string();
    RetryPolicy::default()
        .run("webhook", || async {
            let res = client
                .post(url.expose())
                .header("content-type", "application/json")
                .header("idempotency-key", key.clone())
                .body(body.clone())
                .send()
                .await
                .map_err(|e| {
                    let kind = if e.is_timeout() || e.is_connect() {
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
    fn refused_classes_and_public_addresses() {
        let cases = [
            ("127.0.0.1", Some("a loopback address")),
            ("10.1.2.3", Some("a private address")),
            ("172.16.0.1", Some("a private address")),
            ("192.168.1.1", Some("a private address")),
            ("169.254.169.254", Some("the cloud metadata address")),
            ("169.254.10.1", Some("a link-local address")),
            ("168.63.129.16", Some("Azure's platform address (wireserver)")),
            ("100.64.0.1", Some("a shared (carrier-grade NAT) address")),
            ("0.0.0.0", Some("an unspecified address")),
            ("255.255.255.255", Some("a broadcast, multicast or reserved address")),
            ("::1", Some("a loopback address")),
            ("fd00:ec2::254", Some("a unique local (private) address")),
            ("fe80::1", Some("a link-local address")),
            ("::ffff:10.0.0.1", Some("a private address")),
            ("::ffff:169.254.169.254", Some("the cloud metadata address")),
            ("64:ff9b::a9fe:a9fe", Some("the cloud metadata address")),
            ("93.184.215.14", None),
            ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None),
            ("100.128.0.1", None),
            ("192.0.0.8", Some("a reserved address (IETF assignments, benchmarking)")),
            (
                "198.19.1.1",
                Some("a reserved address (IETF assignments, benchmarking)"),
            ),
            ("64:ff9b:1::a00:1", Some("a local-use NAT64 address")),
            ("::ffff:0:a00:1", Some("a private address")),
        ];
        for (ip, want) in cases {
            assert_eq!(refused(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn urls_refused_before_resolution_say_why() {
        let check = |s: &str, allow: &[&str]| {
            let allow: Vec<String> = allow.iter().map(|a| a.to_string()).collect();
            check_url(&Url::parse(s).unwrap(), &allow)
        };
        assert!(check("https://hooks.example/T/abc", &[]).is_ok());
        let e = check("https://169.254.169.254/latest/meta-data", &[]).unwrap_err();
        assert!(e.contains("the cloud metadata address"), "{e}");
        let e = check("https://[::ffff:a00:1]/x", &[]).unwrap_err();
        assert!(e.contains("a private address"), "{e}");
        let e = check("http://127.0.0.1:9/x", &[]).unwrap_err();
        assert!(e.contains("must be an https URL"), "{e}");
        let e = check("https://user:pw@hooks.example/x", &[]).unwrap_err();
        assert!(e.contains("user name or password") && !e.contains("pw"), "{e}");
        // The local receiver of a demo, by name or with its port.
        assert!(check("http://127.0.0.1:9/x", &["127.0.0.1"]).is_ok());
        assert!(check("http://127.0.0.1:9/x", &["127.0.0.1:9"]).is_ok());
        assert!(check("http://127.0.0.1:10/x", &["127.0.0.1:9"]).is_err());
    }

    #[test]
    fn payload_reads_as_text() {
        let s = json!({"runId": "r1", "state": "PartiallySucceeded", "reason": "2 objects failed",
            "source": {"bucket": "b", "prefix": "p/"}, "target": {"container": "c", "prefix": ""},
            "counters": {"scanned": 5, "transferred": 3, "transferredBytes": 3 * 1048576, "failed": 2}});
        let p = payload(&s);
        let t = p["text"].as_str().unwrap();
        assert!(t.contains("r1 PartiallySucceeded"), "{t}");
        assert!(t.contains("3 transferred (3.0 MiB)"), "{t}");
        assert!(t.contains("Reason: 2 objects failed"), "{t}");
        assert_eq!(p["summary"]["counters"]["failed"], 2);
    }
}
