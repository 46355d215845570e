//! CloudFront's canned and custom policies: building, parsing, wildcard resources, IP ranges.

use std::net::IpAddr;

use serde::Deserialize;

use super::error::{Denied, SigningError};
use super::{b64, MAX_POLICY_LEN};
use crate::access::IpRange;

/// The text a canned policy signs, exactly as CloudFront and the AWS SDKs build it:
/// `{"Statement":[{"Resource":"URL","Condition":{"DateLessThan":{"AWS:EpochTime":N}}}]}`, no
/// whitespace, the URL inserted as is.
///
/// Inserting the URL unescaped is safe: `N` is all digits, so no two (URL, time) pairs give the
/// same text.
pub(super) fn canned_policy(resource: &str, expires: u64) -> String {
    let mut text = String::with_capacity(resource.len() + 96);
    text.push_str(r#"{"Statement":[{"Resource":""#);
    text.push_str(resource);
    text.push_str(r#"","Condition":{"DateLessThan":{"AWS:EpochTime":"#);
    text.push_str(&expires.to_string());
    text.push_str("}}}]}");
    text
}

/// Whether `text` matches CloudFront's resource `pattern`: `*` matches any sequence (also
/// empty), `?` exactly one character, everything else itself, case-sensitively.
///
/// Greedy with one backtrack point: O(pattern × text) at worst, no recursion.
pub(super) fn wildcard_match(pattern: &str, text: &str) -> bool {
    wildcard_match_counted(pattern, text).0
}

/// [`wildcard_match`] and the number of steps it took: at most one step per pattern byte
/// for each text position a `*` restarts from, so `O(pattern × text)`, never exponential.
fn wildcard_match_counted(pattern: &str, text: &str) -> (bool, usize) {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut steps = 0;
    // After the last `*` seen: where the pattern resumes and where that `*` started consuming.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        steps += 1;
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p + 1, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((resume, start)) => {
                    // Let the last `*` swallow one more character and retry.
                    backtrack = Some((resume, start + 1));
                    p = resume;
                    t = start + 1;
                }
                None => return (false, steps),
            },
        }
    }
    (pattern[p..].iter().all(|&c| c == b'*'), steps)
}

/// The time conditions, with `skew` seconds of tolerance either way: valid while
/// `now < date_less_than + skew` and, with a start, `now + skew > date_greater_than`.
pub(super) fn check_times(
    now: u64,
    skew: u64,
    date_less_than: u64,
    date_greater_than: Option<u64>,
) -> Result<(), Denied> {
    if now >= date_less_than.saturating_add(skew) {
        return Err(Denied::Expired);
    }
    if let Some(start) = date_greater_than {
        if now.saturating_add(skew) <= start {
            return Err(Denied::NotYetValid);
        }
    }
    Ok(())
}

/// A CloudFront custom policy: a resource pattern, an expiry, an optional start and an optional
/// client IP range. Built with [`CustomPolicy::builder`].
///
/// ```
/// # use tower_cdn::signing::CustomPolicy;
/// let policy = CustomPolicy::builder("https://d.example/videos/*")
///     .expires(1_900_000_000)
///     .not_before(1_800_000_000)
///     .ip_range("192.0.2.0/24")
///     .build()?;
/// assert_eq!(
///     policy.to_json(),
///     r#"{"Statement":[{"Resource":"https://d.example/videos/*","Condition":{"DateLessThan":{"AWS:EpochTime":1900000000},"DateGreaterThan":{"AWS:EpochTime":1800000000},"IpAddress":{"AWS:SourceIp":"192.0.2.0/24"}}}]}"#
/// );
/// # Ok::<(), tower_cdn::signing::SigningError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomPolicy {
    resource: String,
    expires: u64,
    not_before: Option<u64>,
    ip_range: Option<IpRange>,
    json: String,
}

impl CustomPolicy {
    /// Starts a policy for `resource`: a URL such as `https://d.example/videos/*`, where `*`
    /// matches any sequence and `?` one character, as in CloudFront.
    pub fn builder(resource: impl Into<String>) -> CustomPolicyBuilder {
        CustomPolicyBuilder {
            resource: resource.into(),
            expires: None,
            not_before: None,
            ip_range: None,
        }
    }

    /// The resource pattern (scheme and host lower-cased).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// `DateLessThan`, in seconds since the Unix epoch.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// `DateGreaterThan`, in seconds since the Unix epoch.
    pub fn not_before(&self) -> Option<u64> {
        self.not_before
    }

    /// `IpAddress.AWS:SourceIp` in CIDR form.
    pub fn ip_range(&self) -> Option<String> {
        self.ip_range.map(|range| range.to_string())
    }

    /// The policy JSON that is signed and sent (without whitespace, as CloudFront asks).
    pub fn to_json(&self) -> String {
        self.json.clone()
    }

    pub(super) fn json(&self) -> &str {
        &self.json
    }
}

/// Builds a [`CustomPolicy`]; every check happens in [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct CustomPolicyBuilder {
    resource: String,
    expires: Option<u64>,
    not_before: Option<u64>,
    ip_range: Option<String>,
}

impl CustomPolicyBuilder {
    /// `DateLessThan` (required): the policy is valid before this time, in seconds since the
    /// Unix epoch.
    pub fn expires(mut self, epoch_secs: u64) -> Self {
        self.expires = Some(epoch_secs);
        self
    }

    /// `DateGreaterThan` (optional): the policy is valid after this time, in seconds since the
    /// Unix epoch.
    pub fn not_before(mut self, epoch_secs: u64) -> Self {
        self.not_before = Some(epoch_secs);
        self
    }

    /// `IpAddress` (optional): the client address must be in this IPv4 or IPv6 range, given as
    /// CIDR (`192.0.2.0/24`, `2001:db8::/32`) or as one address.
    pub fn ip_range(mut self, cidr: impl Into<String>) -> Self {
        self.ip_range = Some(cidr.into());
        self
    }

    /// Checks everything and builds the policy: [`SigningError::BadResource`],
    /// [`SigningError::BadCidr`], [`SigningError::MissingExpiry`],
    /// [`SigningError::EmptyValidity`] or [`SigningError::PolicyTooLong`] otherwise.
    pub fn build(self) -> Result<CustomPolicy, SigningError> {
        let resource = normalize_resource(&self.resource)
            .ok_or_else(|| SigningError::BadResource(self.resource.clone()))?;
        let expires = self.expires.ok_or(SigningError::MissingExpiry)?;
        if self.not_before.is_some_and(|start| start >= expires) {
            return Err(SigningError::EmptyValidity);
        }
        let ip_range = match &self.ip_range {
            Some(text) => {
                Some(IpRange::parse(text).ok_or_else(|| SigningError::BadCidr(text.clone()))?)
            }
            None => None,
        };
        let json = custom_policy_json(&resource, expires, self.not_before, ip_range);
        if json.len().div_ceil(3) * 4 > MAX_POLICY_LEN {
            return Err(SigningError::PolicyTooLong);
        }
        Ok(CustomPolicy {
            resource,
            expires,
            not_before: self.not_before,
            ip_range,
            json,
        })
    }
}

/// Checks a resource pattern and lower-cases its scheme and host (the parts a request URL is
/// compared in lower case). Visible ASCII only, without `"`, `\` or `#`, so it goes into the JSON
/// as is; either it starts with a wildcard or it has a scheme of letters and wildcards.
fn normalize_resource(resource: &str) -> Option<String> {
    let visible = |b: u8| (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b'\\' | b'#');
    if resource.is_empty() || !resource.bytes().all(visible) {
        return None;
    }
    if resource.starts_with(['*', '?']) {
        return Some(resource.to_owned());
    }
    let (scheme, rest) = resource.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'*' || b == b'?')
    {
        return None;
    }
    let host_end = rest.find('/').unwrap_or(rest.len());
    if host_end == 0 {
        return None;
    }
    Some(format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        rest[..host_end].to_ascii_lowercase(),
        &rest[host_end..]
    ))
}

fn custom_policy_json(
    resource: &str,
    expires: u64,
    not_before: Option<u64>,
    ip_range: Option<IpRange>,
) -> String {
    let mut json = format!(
        r#"{{"Statement":[{{"Resource":"{resource}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}"#
    );
    if let Some(start) = not_before {
        json.push_str(&format!(
            r#","DateGreaterThan":{{"AWS:EpochTime":{start}}}"#
        ));
    }
    if let Some(range) = ip_range {
        json.push_str(&format!(r#","IpAddress":{{"AWS:SourceIp":"{range}"}}"#));
    }
    json.push_str("}}]}");
    json
}

/// A custom policy as received, after its signature verified.
#[derive(Debug)]
pub(super) struct ReceivedPolicy {
    /// `None` when the statement has no `Resource`, which CloudFront reads as every resource.
    resource: Option<String>,
    date_less_than: u64,
    date_greater_than: Option<u64>,
    ip_range: Option<IpRange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDocument {
    #[serde(rename = "Statement")]
    statement: Vec<Statement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    #[serde(rename = "Resource", default)]
    resource: Option<String>,
    #[serde(rename = "Condition")]
    condition: Condition,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Condition {
    #[serde(rename = "DateLessThan")]
    date_less_than: EpochTime,
    #[serde(rename = "DateGreaterThan", default)]
    date_greater_than: Option<EpochTime>,
    #[serde(rename = "IpAddress", default)]
    ip_address: Option<SourceIp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochTime {
    #[serde(rename = "AWS:EpochTime")]
    epoch_time: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceIp {
    #[serde(rename = "AWS:SourceIp")]
    source_ip: String,
}

impl ReceivedPolicy {
    /// Parses a policy document in CloudFront's shape: exactly one statement, a required
    /// `DateLessThan`, nothing CloudFront would not know (an unknown condition is refused rather
    /// than ignored, so nothing the signer meant to restrict goes unchecked), and no duplicate
    /// keys. `None` for anything else.
    pub(super) fn parse(json: &[u8]) -> Option<Self> {
        let document: PolicyDocument = serde_json::from_slice(json).ok()?;
        let [statement] = <[Statement; 1]>::try_from(document.statement).ok()?;
        let ip_range = match statement.condition.ip_address {
            Some(ip) => Some(IpRange::parse(&ip.source_ip)?),
            None => None,
        };
        Some(Self {
            resource: statement.resource,
            date_less_than: statement.condition.date_less_than.epoch_time,
            date_greater_than: statement.condition.date_greater_than.map(|t| t.epoch_time),
            ip_range,
        })
    }

    /// Checks the times, then the resource, then the client address.
    pub(super) fn check(
        &self,
        url: &str,
        client_ip: Option<IpAddr>,
        now: u64,
        skew: u64,
    ) -> Result<(), Denied> {
        check_times(now, skew, self.date_less_than, self.date_greater_than)?;
        if let Some(resource) = &self.resource {
            if !wildcard_match(resource, url) {
                return Err(Denied::WrongResource);
            }
        }
        if let Some(range) = &self.ip_range {
            if !client_ip.is_some_and(|ip| range.contains(ip)) {
                return Err(Denied::IpNotAllowed);
            }
        }
        Ok(())
    }
}

/// The policy text a custom-policy credential carries: its base64 decoded.
pub(super) fn decode_policy(encoded: &str) -> Option<Vec<u8>> {
    if encoded.len() > MAX_POLICY_LEN {
        return None;
    }
    b64::decode(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_policy_is_cloudfronts_exact_text() {
        assert_eq!(
            canned_policy("https://d111111abcdef8.cloudfront.net/horizon.jpg?size=large&license=yes", 1357034400),
            "{\"Statement\":[{\"Resource\":\"https://d111111abcdef8.cloudfront.net/horizon.jpg?size=large&license=yes\",\
             \"Condition\":{\"DateLessThan\":{\"AWS:EpochTime\":1357034400}}}]}"
        );
    }

    #[test]
    fn wildcards() {
        let cases = [
            (
                "https://d.example/videos/*",
                "https://d.example/videos/a.mp4",
                true,
            ),
            (
                "https://d.example/videos/*",
                "https://d.example/videos/",
                true,
            ),
            (
                "https://d.example/videos/*",
                "https://d.example/videos/x/y?z=1",
                true,
            ),
            (
                "https://d.example/videos/*",
                "https://d.example/video/a.mp4",
                false,
            ),
            (
                "https://d.example/videos/*",
                "https://d.example/videosx",
                false,
            ),
            (
                "https://d.example/videos/*",
                "http://d.example/videos/a",
                false,
            ),
            ("http*://d.example/*", "http://d.example/a", true),
            ("http*://d.example/*", "https://d.example/a", true),
            ("https://d.example/a?.jpg", "https://d.example/ab.jpg", true),
            ("https://d.example/a?.jpg", "https://d.example/a.jpg", false),
            (
                "https://d.example/a?.jpg",
                "https://d.example/abc.jpg",
                false,
            ),
            ("https://d.example/*.jpg", "https://d.example/x/y.jpg", true),
            (
                "https://d.example/*.jpg",
                "https://d.example/x/y.jpeg",
                false,
            ),
            (
                "https://d.example/*/b/*/d",
                "https://d.example/a/b/c/b/x/d",
                true,
            ),
            (
                "https://d.example/*/b/*/d",
                "https://d.example/a/b/c/d/e",
                false,
            ),
            ("https://d.example/exact", "https://d.example/exact", true),
            ("https://d.example/exact", "https://d.example/exact2", false),
            ("https://d.example/Exact", "https://d.example/exact", false),
            ("*", "", true),
            ("*", "anything", true),
            ("**", "x", true),
            ("", "", true),
            ("", "x", false),
            ("?", "", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                wildcard_match(pattern, text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn wildcard_worst_case_is_bounded() {
        let pattern = format!("{}b", "*a".repeat(200));
        let text = "a".repeat(8000);
        let (matched, steps) = wildcard_match_counted(&pattern, &text);
        assert!(!matched);
        // Polynomial, not exponential: bounded by one pass of the pattern per text byte.
        assert!(
            steps <= (pattern.len() + 1) * (text.len() + 1),
            "{steps} steps"
        );
    }

    #[test]
    fn ip_ranges() {
        let v4 = IpRange::parse("192.0.2.77/24").unwrap();
        assert_eq!(v4.to_string(), "192.0.2.0/24");
        assert!(v4.contains("192.0.2.1".parse().unwrap()));
        assert!(v4.contains("::ffff:192.0.2.200".parse().unwrap()));
        assert!(!v4.contains("192.0.3.1".parse().unwrap()));
        assert!(!v4.contains("2001:db8::1".parse().unwrap()));

        let v6 = IpRange::parse("2001:db8:abcd::/48").unwrap();
        assert!(v6.contains("2001:db8:abcd:12::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8:abce::1".parse().unwrap()));
        assert!(!v6.contains("192.0.2.1".parse().unwrap()));

        let one = IpRange::parse("198.51.100.7").unwrap();
        assert_eq!(one.to_string(), "198.51.100.7/32");
        assert!(one.contains("198.51.100.7".parse().unwrap()));
        assert!(!one.contains("198.51.100.8".parse().unwrap()));

        let all = IpRange::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let all6 = IpRange::parse("::/0").unwrap();
        assert!(all6.contains("2001:db8::9".parse().unwrap()));
        assert_eq!(IpRange::parse("::1").unwrap().to_string(), "::1/128");

        for bad in [
            "",
            "/24",
            "192.0.2.0/",
            "192.0.2.0/33",
            "2001:db8::/129",
            "192.0.2.0/+1",
            "192.0.2.0/024x",
            "192.0.2/24",
            "host.example/24",
            " 192.0.2.0/24",
            "192.0.2.0/24/1",
            "192.0.2.0/0255",
        ] {
            assert_eq!(IpRange::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_with_skew() {
        assert_eq!(check_times(99, 0, 100, None), Ok(()));
        assert_eq!(check_times(100, 0, 100, None), Err(Denied::Expired));
        assert_eq!(check_times(104, 5, 100, None), Ok(()));
        assert_eq!(check_times(105, 5, 100, None), Err(Denied::Expired));
        assert_eq!(check_times(51, 0, 100, Some(50)), Ok(()));
        assert_eq!(check_times(50, 0, 100, Some(50)), Err(Denied::NotYetValid));
        assert_eq!(check_times(46, 5, 100, Some(50)), Ok(()));
        assert_eq!(check_times(45, 5, 100, Some(50)), Err(Denied::NotYetValid));
        assert_eq!(
            check_times(u64::MAX, u64::MAX, u64::MAX, Some(u64::MAX)),
            Err(Denied::Expired)
        );
    }

    #[test]
    fn builder_validates() {
        let ok = CustomPolicy::builder("HTTPS://D.Example/Videos/*")
            .expires(10)
            .build()
            .unwrap();
        assert_eq!(ok.resource(), "https://d.example/Videos/*");
        assert_eq!(
            ok.to_json(),
            r#"{"Statement":[{"Resource":"https://d.example/Videos/*","Condition":{"DateLessThan":{"AWS:EpochTime":10}}}]}"#
        );
        assert_eq!(
            (ok.expires(), ok.not_before(), ok.ip_range()),
            (10, None, None)
        );

        let v6 = CustomPolicy::builder("*")
            .expires(10)
            .ip_range("2001:db8::1/32")
            .build()
            .unwrap();
        assert_eq!(v6.ip_range().as_deref(), Some("2001:db8::/32"));

        for bad in [
            "",
            "d.example/x",
            "://d.example/x",
            "https:///x",
            "https://d.example/a b",
            "https://d.example/\"",
            "https://d.example/a\\b",
            "https://d.example/#top",
            "https://d.example/é",
            "ht1tp://d.example/",
            "https://d.example/\n",
        ] {
            assert!(
                matches!(
                    CustomPolicy::builder(bad).expires(10).build(),
                    Err(SigningError::BadResource(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            CustomPolicy::builder("*").build().unwrap_err(),
            SigningError::MissingExpiry
        );
        assert_eq!(
            CustomPolicy::builder("*")
                .expires(10)
                .not_before(10)
                .build()
                .unwrap_err(),
            SigningError::EmptyValidity
        );
        assert_eq!(
            CustomPolicy::builder("*")
                .expires(10)
                .ip_range("10.0.0.0/40")
                .build()
                .unwrap_err(),
            SigningError::BadCidr("10.0.0.0/40".into())
        );
        let long = format!("https://d.example/{}", "a".repeat(MAX_POLICY_LEN));
        assert_eq!(
            CustomPolicy::builder(long).expires(10).build().unwrap_err(),
            SigningError::PolicyTooLong
        );
    }

    #[test]
    fn built_policies_parse_back() {
        let policy = CustomPolicy::builder("https://d.example/*")
            .expires(200)
            .not_before(100)
            .ip_range("192.0.2.0/24")
            .build()
            .unwrap();
        let received = ReceivedPolicy::parse(policy.json().as_bytes()).unwrap();
        assert_eq!(received.resource.as_deref(), Some("https://d.example/*"));
        assert_eq!(
            (received.date_less_than, received.date_greater_than),
            (200, Some(100))
        );
        assert_eq!(received.ip_range, IpRange::parse("192.0.2.0/24"));
    }

    #[test]
    fn received_policies_follow_cloudfront_shape() {
        // Whitespace, as in CloudFront's documentation, is fine.
        let spaced = br#"{
            "Statement": [{
                "Resource": "https://d.example/*",
                "Condition": {
                    "DateLessThan": {"AWS:EpochTime": 200},
                    "IpAddress": {"AWS:SourceIp": "2001:db8::/32"}
                }
            }]
        }"#;
        let parsed = ReceivedPolicy::parse(spaced).unwrap();
        assert_eq!(
            parsed.check("https://d.example/x", "2001:db8::5".parse().ok(), 10, 0),
            Ok(())
        );
        assert_eq!(
            parsed.check("https://d.example/x", "2001:db9::5".parse().ok(), 10, 0),
            Err(Denied::IpNotAllowed)
        );
        assert_eq!(
            parsed.check("https://d.example/x", None, 10, 0),
            Err(Denied::IpNotAllowed)
        );
        assert_eq!(
            parsed.check("https://e.example/x", None, 10, 0),
            Err(Denied::WrongResource)
        );
        assert_eq!(
            parsed.check("https://d.example/x", None, 300, 0),
            Err(Denied::Expired)
        );

        // No Resource: every resource, as CloudFront reads it.
        let any = ReceivedPolicy::parse(
            br#"{"Statement":[{"Condition":{"DateLessThan":{"AWS:EpochTime":5}}}]}"#,
        )
        .unwrap();
        assert_eq!(any.check("https://anything.example/", None, 1, 0), Ok(()));

        for bad in [
            &br#"{"Statement":[]}"#[..],
            br#"{"Statement":[{"Condition":{"DateLessThan":{"AWS:EpochTime":5}}},{"Condition":{"DateLessThan":{"AWS:EpochTime":5}}}]}"#,
            br#"{"Statement":[{"Resource":"*","Condition":{}}]}"#,
            br#"{"Statement":[{"Resource":"*","Condition":{"DateLessThan":{"AWS:EpochTime":"5"}}}]}"#,
            br#"{"Statement":[{"Resource":"*","Condition":{"DateLessThan":{"AWS:EpochTime":-5}}}]}"#,
            br#"{"Statement":[{"Resource":"*","Condition":{"DateLessThan":{"AWS:EpochTime":5.5}}}]}"#,
            br#"{"Statement":[{"Resource":"*","Condition":{"DateLessThan":{"AWS:EpochTime":5},"Referer":{}}}]}"#,
            br#"{"Statement":[{"Resource":"*","Condition":{"DateLessThan":{"AWS:EpochTime":5},"IpAddress":{"AWS:SourceIp":"nope"}}}]}"#,
            br#"{"Statement":[{"Resource":"*","Resource":"x","Condition":{"DateLessThan":{"AWS:EpochTime":5}}}]}"#,
            br#"{"Statement":[{"Resource":"*","Condition":{"DateLessThan":{"AWS:EpochTime":5}}}]} trailing"#,
            b"not json",
            b"",
            b"\xff\xfe",
        ] {
            assert!(ReceivedPolicy::parse(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
