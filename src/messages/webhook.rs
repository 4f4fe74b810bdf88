//! How a run names its webhook ([`WebhookRef`]), and where a webhook may go
//! ([`check_url`]): the checks that need no network. Resolving the host and sending are
//! `crate::app::webhook`'s job.

use std::net::{IpAddr, Ipv4Addr};

use url::{Host, Url};

use crate::config::{Config, WEBHOOK_SETTING_PREFIX};
use crate::redact::Secret;

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
        cfg.runs
            .webhooks
            .get(&self.setting)
            .ok_or_else(|| format!("app setting `{}` is not set in this deployment", self.setting))
    }
}

impl std::fmt::Display for WebhookRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{REF_SCHEME}{}", self.setting)
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
pub(crate) fn allowed(u: &Url, allow: &[String]) -> bool {
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
}
