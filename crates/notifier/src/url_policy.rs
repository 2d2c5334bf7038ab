//! Which webhook URLs the controller may call. Discord and generic webhook URLs come from Secrets that anyone who
//! may create a PackerBuilder or AMIRefresher controls, while the request leaves from the controller's pod, with
//! its network position (cluster services, the instance metadata service). So by default only `https` URLs to
//! public hosts are called; controller flags widen that for in-cluster receivers and tests. Redirects are never
//! followed (the HTTP client is built without them), so a public URL cannot bounce the request inward.
//!
//! What this must never do: resolve names (a check here would race the real resolution); it judges the URL text:
//! the scheme, IP literals, and host names that are internal by convention.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a webhook URL may be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Allow `http://` besides `https://`.
    pub allow_http: bool,
    /// Allow loopback, link-local, private and cluster-internal hosts.
    pub allow_private: bool,
}

/// Why a URL is refused; the message names the rule, never the URL (it may carry a token).
pub fn check_url(url: &str, policy: UrlPolicy) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "the URL does not parse".to_owned())?;
    match parsed.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => {
            return Err("an http:// webhook URL is refused (https only, unless the controller allows http)".into());
        }
        other => return Err(format!("the URL scheme {other:?} is refused (https only)")),
    }
    if policy.allow_private {
        return Ok(());
    }
    let internal = match parsed.host() {
        None => return Err("the URL has no host".into()),
        Some(url::Host::Ipv4(ip)) => is_internal(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_internal(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost"
                || !name.contains('.')
                || [
                    ".localhost",
                    ".local",
                    ".internal",
                    ".svc",
                    ".cluster.local",
                    ".svc.cluster.local",
                ]
                .iter()
                .any(|suffix| name.ends_with(suffix))
        }
    };
    if internal {
        return Err(
            "the webhook host is loopback, link-local, private or cluster-internal; refused unless the controller \
             allows private addresses"
                .into(),
        );
    }
    Ok(())
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) // EC2 IMDS over IPv6
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || (a == 100 && (64..=127).contains(&b)) // carrier-grade NAT, also used for pod networks
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: UrlPolicy = UrlPolicy {
        allow_http: false,
        allow_private: false,
    };

    #[test]
    fn public_https_webhooks_are_allowed() {
        assert_eq!(check_url("https://hooks.example.com/T000/B000/xyz", STRICT), Ok(()));
        assert_eq!(check_url("https://discord.com/api/webhooks/1/abc", STRICT), Ok(()));
    }

    #[test]
    fn http_and_other_schemes_are_refused_unless_http_is_allowed() {
        assert!(check_url("http://hooks.example.com/x", STRICT).is_err());
        assert!(check_url("file:///etc/passwd", STRICT).is_err());
        assert!(check_url("ftp://example.com/x", STRICT).is_err());
        let http = UrlPolicy {
            allow_http: true,
            ..STRICT
        };
        assert_eq!(check_url("http://hooks.example.com/x", http), Ok(()));
    }

    #[test]
    fn metadata_loopback_private_and_cluster_hosts_are_refused_unless_allowed() {
        for url in [
            "https://169.254.169.254/latest/meta-data/",
            "https://127.0.0.1:8080/x",
            "https://10.0.0.5/x",
            "https://172.20.0.1/x",
            "https://192.168.1.1/x",
            "https://100.64.0.10/x",
            "https://[::1]/x",
            "https://[fd00:ec2::254]/x",
            "https://[::ffff:169.254.169.254]/x",
            "https://localhost/x",
            "https://kubernetes.default.svc/x",
            "https://my-service.my-ns.svc.cluster.local/x",
            "https://metadata.google.internal/x",
            "https://intranet/x",
        ] {
            let refused = check_url(url, STRICT).expect_err(url);
            assert!(!refused.contains(url), "the message never echoes the URL: {refused}");
        }
        let open = UrlPolicy {
            allow_http: true,
            allow_private: true,
        };
        assert_eq!(check_url("http://127.0.0.1:8080/x", open), Ok(()));
    }
}

/// Which SNS topics and SES senders notifications may use: the controller publishes with its own AWS identity, so
/// without a list any tenant could make it publish to any topic (or send from any verified address) its IAM role
/// allows. Patterns use `*` for any run of characters (`arn:aws:sns:*:123456789012:team-*`, `*@example.com`);
/// an empty list allows what IAM allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsAllowlist {
    /// SNS topic ARN patterns.
    pub sns_topics: Vec<String>,
    /// SES sender address patterns.
    pub ses_senders: Vec<String>,
}

impl AwsAllowlist {
    /// `Err` with the reason when the topic is not allowed.
    pub fn check_sns_topic(&self, arn: &str) -> Result<(), String> {
        allowed(
            &self.sns_topics,
            arn,
            "the SNS topic is not in the controller's --sns-topic-allowlist",
        )
    }

    /// `Err` with the reason when the sender is not allowed.
    pub fn check_ses_sender(&self, from: &str) -> Result<(), String> {
        allowed(
            &self.ses_senders,
            from,
            "the SES sender is not in the controller's --ses-sender-allowlist",
        )
    }
}

fn allowed(patterns: &[String], value: &str, refusal: &str) -> Result<(), String> {
    if patterns.is_empty() || patterns.iter().any(|p| glob_match(p, value)) {
        Ok(())
    } else {
        Err(refusal.to_owned())
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || value.len() < first.len() + last.len() || !value.ends_with(last) {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod allowlist_tests {
    use super::*;

    #[test]
    fn globs_match_whole_values() {
        assert!(glob_match(
            "arn:aws:sns:*:123456789012:team-*",
            "arn:aws:sns:us-west-2:123456789012:team-a"
        ));
        assert!(!glob_match(
            "arn:aws:sns:*:123456789012:team-*",
            "arn:aws:sns:us-west-2:999999999999:team-a"
        ));
        assert!(glob_match("*@example.com", "ami@example.com"));
        assert!(!glob_match("*@example.com", "ami@example.com.evil.org"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("a*b*c", "a-b-c"));
        assert!(!glob_match("a*b*c", "a-c"));
        assert!(!glob_match("ab*ba", "aba"), "prefix and suffix must not overlap");
    }

    #[test]
    fn an_empty_list_leaves_it_to_iam_and_a_list_refuses_everything_else() {
        let open = AwsAllowlist::default();
        assert!(open.check_sns_topic("arn:aws:sns:us-west-2:1:any").is_ok());
        let list = AwsAllowlist {
            sns_topics: vec!["arn:aws:sns:us-west-2:123456789012:ami-*".into()],
            ses_senders: vec!["*@platform.example.com".into()],
        };
        assert!(
            list.check_sns_topic("arn:aws:sns:us-west-2:123456789012:ami-builds")
                .is_ok()
        );
        let refused = list
            .check_sns_topic("arn:aws:sns:us-west-2:123456789012:payments")
            .expect_err("refused");
        assert!(refused.contains("--sns-topic-allowlist"));
        assert!(list.check_ses_sender("bot@platform.example.com").is_ok());
        assert!(list.check_ses_sender("ceo@example.com").is_err());
    }
}
