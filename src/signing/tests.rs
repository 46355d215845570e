//! Round trips from `Signer` to `verify`, every denial cause, rotation and hostile input.

use std::net::IpAddr;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Uri};

use super::*;

const NOW: u64 = 1_700_000_000;
const EXPIRES: u64 = NOW + 3600;
const HMAC_SECRET: &[u8] = b"an HMAC secret of 32 bytes, ok!!";

fn ed25519_key(seed: u8) -> SigningKey {
    SigningKey::ed25519(&[seed; 32]).unwrap()
}

fn hmac_key() -> SigningKey {
    SigningKey::hmac_sha256(HMAC_SECRET).unwrap()
}

/// One Ed25519 and one HMAC signer, with a group trusting both.
fn signers() -> (Vec<Signer>, KeyGroup) {
    let ed = Signer::new("ED1", ed25519_key(1)).unwrap();
    let hm = Signer::new("HM1", hmac_key()).unwrap();
    let group = KeyGroup::new()
        .with_key("ED1", VerifyingKey::ed25519(&ed25519_public(1)).unwrap())
        .unwrap()
        .with_key("HM1", VerifyingKey::hmac_sha256(HMAC_SECRET).unwrap())
        .unwrap();
    (vec![ed, hm], group)
}

/// The Ed25519 public key's 32 bytes for `ed25519_key(seed)`, computed independently, as an
/// operator would copy them to the edge.
fn ed25519_public(seed: u8) -> Vec<u8> {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
        .verifying_key()
        .to_bytes()
        .to_vec()
}

/// A request for `url` (a full URL), with optional cookies and client address.
struct Request {
    uri: Uri,
    headers: HeaderMap,
    ip: Option<IpAddr>,
}

impl Request {
    fn new(url: &str) -> Self {
        Self {
            uri: url.parse().expect("a valid URI"),
            headers: HeaderMap::new(),
            ip: None,
        }
    }

    fn cookies(mut self, cookies: &[(&str, String)]) -> Self {
        let line = cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        self.headers
            .append(COOKIE, HeaderValue::from_str(&line).unwrap());
        self
    }

    fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.parse().unwrap());
        self
    }

    fn verify_at(&self, group: &KeyGroup, now: u64, skew: u64) -> Result<(), Denied> {
        let url = self.resource_url();
        verify(
            group,
            &url,
            self.uri.query(),
            &self.headers,
            self.ip,
            now,
            skew,
        )
        .map(|_| ())
    }

    fn verify(&self, group: &KeyGroup) -> Result<(), Denied> {
        self.verify_at(group, NOW, 0)
    }

    fn resource_url(&self) -> String {
        resource_url(
            self.uri.scheme_str().unwrap(),
            self.uri.authority().unwrap().as_str(),
            self.uri.path(),
            self.uri.query(),
        )
    }
}

fn policy(resource: &str) -> CustomPolicy {
    CustomPolicy::builder(resource)
        .expires(EXPIRES)
        .build()
        .unwrap()
}

#[test]
fn canned_url_round_trip() {
    let (signers, group) = signers();
    for signer in &signers {
        let url = signer.sign_canned_url("https://d.example/a/b.jpg?size=large", EXPIRES);
        let request = Request::new(&url);
        let verified = verify(
            &group,
            &request.resource_url(),
            request.uri.query(),
            &request.headers,
            None,
            NOW,
            0,
        )
        .unwrap();
        assert_eq!(verified.key_id, signer.key_id());
        assert!(!verified.from_cookies);
        assert_eq!(
            request.resource_url(),
            "https://d.example/a/b.jpg?size=large"
        );
    }
}

#[test]
fn custom_url_round_trip() {
    let (signers, group) = signers();
    let policy = CustomPolicy::builder("https://d.example/a/*")
        .expires(EXPIRES)
        .not_before(NOW - 10)
        .ip_range("192.0.2.0/24")
        .build()
        .unwrap();
    for signer in &signers {
        let url = signer.sign_custom_url("https://d.example/a/b.jpg", &policy);
        assert_eq!(
            Request::new(&url).ip("192.0.2.9").verify(&group),
            Ok(()),
            "{url}"
        );
    }
}

#[test]
fn canned_cookie_round_trip() {
    let (signers, group) = signers();
    for signer in &signers {
        let cookies = signer.canned_cookies("https://d.example/a/b.jpg", EXPIRES);
        let names: Vec<_> = cookies.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "CloudFront-Expires",
                "CloudFront-Signature",
                "CloudFront-Key-Pair-Id"
            ]
        );
        let request = Request::new("https://d.example/a/b.jpg").cookies(&cookies);
        let verified = verify(
            &group,
            &request.resource_url(),
            request.uri.query(),
            &request.headers,
            None,
            NOW,
            0,
        )
        .unwrap();
        assert!(verified.from_cookies);
        // A canned cookie is for exactly one URL.
        let other = Request::new("https://d.example/a/c.jpg").cookies(&cookies);
        assert_eq!(other.verify(&group), Err(Denied::BadSignature));
    }
}

#[test]
fn custom_cookie_round_trip() {
    let (signers, group) = signers();
    let policy = policy("https://d.example/private/*");
    for signer in &signers {
        let cookies = signer.custom_cookies(&policy);
        let names: Vec<_> = cookies.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "CloudFront-Policy",
                "CloudFront-Signature",
                "CloudFront-Key-Pair-Id"
            ]
        );
        for path in ["/private/a.html", "/private/b/c.css?v=3"] {
            let url = format!("https://d.example{path}");
            assert_eq!(
                Request::new(&url).cookies(&cookies).verify(&group),
                Ok(()),
                "{path}"
            );
        }
        assert_eq!(
            Request::new("https://d.example/public/a.html")
                .cookies(&cookies)
                .verify(&group),
            Err(Denied::WrongResource)
        );
        // Cookies among others, in a second header, quoted: still found.
        let mut request =
            Request::new("https://d.example/private/x").cookies(&[("theme", "dark".into())]);
        let quoted: Vec<(&str, String)> = cookies
            .iter()
            .map(|(n, v)| (*n, format!("\"{v}\"")))
            .collect();
        request = request.cookies(&quoted);
        assert_eq!(request.verify(&group), Ok(()));
    }
}

#[test]
fn expired_and_skew() {
    let (signers, group) = signers();
    for signer in &signers {
        let canned = Request::new(&signer.sign_canned_url("https://d.example/x", EXPIRES));
        assert_eq!(canned.verify_at(&group, EXPIRES - 1, 0), Ok(()));
        assert_eq!(canned.verify_at(&group, EXPIRES, 0), Err(Denied::Expired));
        assert_eq!(canned.verify_at(&group, EXPIRES + 29, 30), Ok(()));
        assert_eq!(
            canned.verify_at(&group, EXPIRES + 30, 30),
            Err(Denied::Expired)
        );

        let custom = Request::new(
            &signer.sign_custom_url("https://d.example/x", &policy("https://d.example/*")),
        );
        assert_eq!(custom.verify_at(&group, EXPIRES, 0), Err(Denied::Expired));
        assert_eq!(custom.verify_at(&group, EXPIRES + 5, 10), Ok(()));
    }
}

#[test]
fn not_yet_valid() {
    let (signers, group) = signers();
    let policy = CustomPolicy::builder("https://d.example/*")
        .expires(EXPIRES)
        .not_before(NOW + 60)
        .build()
        .unwrap();
    for signer in &signers {
        let request = Request::new(&signer.sign_custom_url("https://d.example/x", &policy));
        assert_eq!(request.verify(&group), Err(Denied::NotYetValid));
        assert_eq!(request.verify_at(&group, NOW + 61, 0), Ok(()));
        assert_eq!(request.verify_at(&group, NOW, 61), Ok(()));
        assert_eq!(request.verify_at(&group, NOW, 60), Err(Denied::NotYetValid));
    }
}

#[test]
fn wrong_resource() {
    let (signers, group) = signers();
    for signer in &signers {
        let url = signer.sign_custom_url(
            "https://d.example/a.jpg",
            &policy("https://d.example/a.jpg"),
        );
        assert_eq!(Request::new(&url).verify(&group), Ok(()));
        let elsewhere = url.replace("/a.jpg", "/b.jpg");
        assert_eq!(
            Request::new(&elsewhere).verify(&group),
            Err(Denied::WrongResource)
        );
        let other_host = url.replace("d.example", "e.example");
        assert_eq!(
            Request::new(&other_host).verify(&group),
            Err(Denied::WrongResource)
        );
        let extra_query = url.replace("?Policy", "?x=1&Policy");
        assert_eq!(
            Request::new(&extra_query).verify(&group),
            Err(Denied::WrongResource)
        );
        // For a canned policy the URL is signed text: another URL is a bad signature.
        let canned = signer.sign_canned_url("https://d.example/a.jpg", EXPIRES);
        let moved = canned.replace("/a.jpg", "/b.jpg");
        assert_eq!(
            Request::new(&moved).verify(&group),
            Err(Denied::BadSignature)
        );
    }
}

#[test]
fn unknown_key_id() {
    let (_, group) = signers();
    let stranger = Signer::new("NOBODY", ed25519_key(9)).unwrap();
    let url = stranger.sign_canned_url("https://d.example/x", EXPIRES);
    assert_eq!(Request::new(&url).verify(&group), Err(Denied::UnknownKeyId));
    let cookies = stranger.custom_cookies(&policy("*"));
    assert_eq!(
        Request::new("https://d.example/x")
            .cookies(&cookies)
            .verify(&group),
        Err(Denied::UnknownKeyId)
    );
    assert_eq!(
        Request::new(&url).verify(&KeyGroup::new()),
        Err(Denied::UnknownKeyId)
    );
}

#[test]
fn bad_signature() {
    let (signers, group) = signers();
    for signer in &signers {
        // A key the group holds under another algorithm or secret, same id.
        let impostor = if signer.key().algorithm() == "ed25519" {
            Signer::new(signer.key_id(), ed25519_key(2)).unwrap()
        } else {
            Signer::new(
                signer.key_id(),
                SigningKey::hmac_sha256(b"a different secret!!").unwrap(),
            )
            .unwrap()
        };
        let forged = impostor.sign_canned_url("https://d.example/x", EXPIRES);
        assert_eq!(
            Request::new(&forged).verify(&group),
            Err(Denied::BadSignature)
        );

        // A later expiry than the one signed.
        let url = signer.sign_canned_url("https://d.example/x", EXPIRES);
        let extended = url.replace(
            &format!("Expires={EXPIRES}"),
            &format!("Expires={}", EXPIRES + 1),
        );
        assert_eq!(
            Request::new(&extended).verify(&group),
            Err(Denied::BadSignature)
        );

        // A changed policy under the original signature.
        let url = signer.sign_custom_url("https://d.example/x", &policy("https://d.example/x"));
        let wider = policy("https://d.example/*");
        let wider_b64 = b64::encode(wider.to_json().as_bytes());
        let swapped = replace_param(&url, "Policy", &wider_b64);
        assert_eq!(
            Request::new(&swapped).verify(&group),
            Err(Denied::BadSignature)
        );

        // A flipped signature character, still valid base64.
        let sig = param(&url, "Signature");
        let mut flipped = sig.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        let flipped = replace_param(&url, "Signature", std::str::from_utf8(&flipped).unwrap());
        assert_eq!(
            Request::new(&flipped).verify(&group),
            Err(Denied::BadSignature)
        );

        // A truncated (but well-formed) signature.
        let short = replace_param(&url, "Signature", &b64::encode(&[1, 2, 3]));
        assert_eq!(
            Request::new(&short).verify(&group),
            Err(Denied::BadSignature)
        );
    }
}

#[test]
fn ip_conditions_v4_and_v6() {
    let (signers, group) = signers();
    let v4 = CustomPolicy::builder("https://d.example/*")
        .expires(EXPIRES)
        .ip_range("203.0.113.0/24")
        .build()
        .unwrap();
    let v6 = CustomPolicy::builder("https://d.example/*")
        .expires(EXPIRES)
        .ip_range("2001:db8:1234::/48")
        .build()
        .unwrap();
    for signer in &signers {
        let url4 = signer.sign_custom_url("https://d.example/x", &v4);
        assert_eq!(
            Request::new(&url4).ip("203.0.113.200").verify(&group),
            Ok(())
        );
        assert_eq!(
            Request::new(&url4).ip("::ffff:203.0.113.7").verify(&group),
            Ok(())
        );
        assert_eq!(
            Request::new(&url4).ip("203.0.114.1").verify(&group),
            Err(Denied::IpNotAllowed)
        );
        assert_eq!(
            Request::new(&url4).ip("2001:db8:1234::1").verify(&group),
            Err(Denied::IpNotAllowed)
        );
        assert_eq!(
            Request::new(&url4).verify(&group),
            Err(Denied::IpNotAllowed)
        );

        let cookies = signer.custom_cookies(&v6);
        let request = |ip: &str| Request::new("https://d.example/y").cookies(&cookies).ip(ip);
        assert_eq!(request("2001:db8:1234:ffff::1").verify(&group), Ok(()));
        assert_eq!(
            request("2001:db8:1235::1").verify(&group),
            Err(Denied::IpNotAllowed)
        );
        assert_eq!(
            request("203.0.113.200").verify(&group),
            Err(Denied::IpNotAllowed)
        );
    }
}

#[test]
fn wildcard_resource_matching() {
    let (signers, group) = signers();
    let videos = policy("https://d.example/videos/*");
    for signer in &signers {
        let cookies = signer.custom_cookies(&videos);
        for (path, expected) in [
            ("/videos/intro.mp4", Ok(())),
            ("/videos/", Ok(())),
            ("/videos/hls/seg-00001.ts?quality=720", Ok(())),
            ("/videos", Err(Denied::WrongResource)),
            ("/video/intro.mp4", Err(Denied::WrongResource)),
            ("/images/videos/a.jpg", Err(Denied::WrongResource)),
        ] {
            let url = format!("https://d.example{path}");
            assert_eq!(
                Request::new(&url).cookies(&cookies).verify(&group),
                expected,
                "{path}"
            );
        }
        // Scheme and host are compared in lower case, a default port dropped.
        assert_eq!(
            Request::new("HTTPS://D.EXAMPLE:443/videos/a")
                .cookies(&cookies)
                .verify(&group),
            Ok(())
        );
        assert_eq!(
            Request::new("http://d.example/videos/a")
                .cookies(&cookies)
                .verify(&group),
            Err(Denied::WrongResource)
        );
        let any_scheme = signer.custom_cookies(&policy("http*://d.example/*.m3u8"));
        for url in ["http://d.example/a.m3u8", "https://d.example/live/b.m3u8"] {
            assert_eq!(
                Request::new(url).cookies(&any_scheme).verify(&group),
                Ok(()),
                "{url}"
            );
        }
        assert_eq!(
            Request::new("https://d.example/a.m3u8x")
                .cookies(&any_scheme)
                .verify(&group),
            Err(Denied::WrongResource)
        );
        let one_char = signer.custom_cookies(&policy("https://d.example/v?/index.html"));
        assert_eq!(
            Request::new("https://d.example/v2/index.html")
                .cookies(&one_char)
                .verify(&group),
            Ok(())
        );
        assert_eq!(
            Request::new("https://d.example/v10/index.html")
                .cookies(&one_char)
                .verify(&group),
            Err(Denied::WrongResource)
        );
    }
}

#[test]
fn key_rotation() {
    let old = Signer::new("K-2023", ed25519_key(3)).unwrap();
    let new = Signer::new("K-2024", ed25519_key(4)).unwrap();
    let hmac = Signer::new("H-2024", hmac_key()).unwrap();
    let mut group = KeyGroup::new()
        .with_key("K-2023", old.key().verifying_key())
        .unwrap()
        .with_key("K-2024", new.key().verifying_key())
        .unwrap()
        .with_key("H-2024", hmac.key().verifying_key())
        .unwrap();
    let urls: Vec<String> = [&old, &new, &hmac]
        .iter()
        .map(|s| s.sign_canned_url("https://d.example/x", EXPIRES))
        .collect();
    for url in &urls {
        assert_eq!(Request::new(url).verify(&group), Ok(()), "{url}");
    }
    // Each id checks with its own key only.
    let crossed = urls[0].replace("K-2023", "K-2024");
    assert_eq!(
        Request::new(&crossed).verify(&group),
        Err(Denied::BadSignature)
    );

    assert!(group.remove("K-2023").is_some());
    assert_eq!(
        Request::new(&urls[0]).verify(&group),
        Err(Denied::UnknownKeyId)
    );
    assert_eq!(Request::new(&urls[1]).verify(&group), Ok(()));
    assert_eq!(Request::new(&urls[2]).verify(&group), Ok(()));
}

#[test]
fn missing_credentials() {
    let (_, group) = signers();
    for url in [
        "https://d.example/x",
        "https://d.example/x?a=1&b=2",
        "https://d.example/x?",
    ] {
        assert_eq!(
            Request::new(url).verify(&group),
            Err(Denied::Missing),
            "{url}"
        );
    }
    let with_other_cookies =
        Request::new("https://d.example/x").cookies(&[("session", "abc".into())]);
    assert_eq!(with_other_cookies.verify(&group), Err(Denied::Missing));
}

#[test]
fn malformed_credentials() {
    let (signers, group) = signers();
    let signer = &signers[0];
    let canned = signer.sign_canned_url("https://d.example/x", EXPIRES);
    let custom = signer.sign_custom_url("https://d.example/x", &policy("*"));
    let cases = [
        // Junk base64 in the signature and the policy.
        replace_param(&canned, "Signature", "not+base64/at=all"),
        replace_param(&canned, "Signature", "!!!!"),
        replace_param(&custom, "Policy", "%%%"),
        replace_param(&custom, "Policy", "abc$"),
        // Both policy kinds, or a part missing.
        format!("{custom}&Expires=5"),
        canned.replace("&Signature=", "&X="),
        canned.replace("Expires=", "Expires=12a"),
        format!("{canned}&Key-Pair-Id=ED1"),
    ];
    for url in &cases {
        assert_eq!(
            Request::new(url).verify(&group),
            Err(Denied::Malformed),
            "{url}"
        );
    }
}

#[test]
fn signed_junk_json_is_malformed_not_accepted() {
    let (signers, group) = signers();
    for signer in &signers {
        for junk in [
            &b"not json"[..],
            b"{}",
            br#"{"Statement":[{"Resource":"*","Condition":{"DateLessThan":{"AWS:EpochTime":"soon"}}}]}"#,
            br#"{"Statement":[{"Resource":"*","Condition":{"DateLessThan":{"AWS:EpochTime":1900000000},"Unknown":{}}}]}"#,
        ] {
            let policy = b64::encode(junk);
            let signature = b64::encode(&signer.key().sign(junk));
            let url = format!(
                "https://d.example/x?Policy={policy}&Signature={signature}&Key-Pair-Id={}",
                signer.key_id()
            );
            assert_eq!(Request::new(&url).verify(&group), Err(Denied::Malformed));
        }
    }
}

#[test]
fn signed_urls_use_cloudfront_alphabet_and_strip_to_one_cache_key() {
    let (signers, group) = signers();
    let mut saw = [false; 3];
    for i in 0..16u64 {
        for signer in &signers {
            let url = signer.sign_canned_url("https://d.example/v.mp4?q=1", EXPIRES + i);
            let query = url.split_once('?').unwrap().1;
            for (name, value) in query.split('&').map(|p| p.split_once('=').unwrap()) {
                assert!(
                    value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_~".contains(&b)),
                    "{name}={value}"
                );
            }
            let sig = param(&url, "Signature");
            for (seen, c) in saw.iter_mut().zip(['-', '~', '_']) {
                *seen |= sig.contains(c);
            }
            // Every signed URL for the object reduces to the same cache key and origin query.
            assert_eq!(strip_signing_params(query), "q=1");
            assert_eq!(
                Request::new(&url).resource_url(),
                "https://d.example/v.mp4?q=1"
            );
            assert_eq!(Request::new(&url).verify(&group), Ok(()));
        }
    }
    // Ed25519 signatures (64 bytes) always end in `_` padding; `-` and `~` turn up by chance.
    assert_eq!(saw, [true; 3]);

    // Standard-alphabet base64 (as a careless client might send) is refused.
    let url = signers[0].sign_canned_url("https://d.example/x", EXPIRES);
    let standard = param(&url, "Signature")
        .replace('-', "+")
        .replace('~', "/")
        .replace('_', "=");
    if standard != param(&url, "Signature") {
        let url = replace_param(&url, "Signature", &standard);
        assert_eq!(Request::new(&url).verify(&group), Err(Denied::Malformed));
    }
}

#[test]
fn percent_escaped_values_are_accepted() {
    let (signers, group) = signers();
    for i in 0..32 {
        let url = signers[0].sign_canned_url("https://d.example/x", EXPIRES + i);
        let sig = param(&url, "Signature");
        let escaped = sig.replace('~', "%7E").replace('_', "%5F");
        let url = replace_param(&url, "Signature", &escaped);
        assert_eq!(Request::new(&url).verify(&group), Ok(()), "{url}");
    }
}

#[test]
fn hostile_inputs_never_panic() {
    let (signers, group) = signers();
    let big_policy = "A".repeat(10 * 1024);
    let url = format!("https://d.example/x?Policy={big_policy}&Signature=AAAA&Key-Pair-Id=ED1");
    assert_eq!(Request::new(&url).verify(&group), Err(Denied::Malformed));

    // A 10 kB policy in a cookie too.
    let cookies = [
        ("CloudFront-Policy", big_policy.clone()),
        ("CloudFront-Signature", "AAAA".into()),
        ("CloudFront-Key-Pair-Id", "ED1".into()),
    ];
    assert_eq!(
        Request::new("https://d.example/x")
            .cookies(&cookies)
            .verify(&group),
        Err(Denied::Malformed)
    );

    // A huge cookie header with valid signing cookies inside.
    let mut good = signers[0].custom_cookies(&policy("*"));
    good.push(("padding", "p".repeat(MAX_COOKIE_HEADER_LEN)));
    assert_eq!(
        Request::new("https://d.example/x")
            .cookies(&good)
            .verify(&group),
        Err(Denied::Malformed)
    );

    // Junk JSON under junk signatures, and deep nesting.
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    for junk in [
        "{",
        "null",
        "[]",
        "\"\"",
        deep.as_str(),
        "{\"Statement\":[{\"Resource\":\"\\ud800\"}]}",
    ] {
        let url = format!(
            "https://d.example/x?Policy={}&Signature=AAAA&Key-Pair-Id=ED1",
            b64::encode(junk.as_bytes())
        );
        let result = Request::new(&url).verify(&group);
        assert!(
            matches!(result, Err(Denied::Malformed | Denied::BadSignature)),
            "{result:?}"
        );
    }

    // Random query strings and cookie headers built from the interesting characters.
    let alphabet: &[u8] = b"&=;%\"' ~-_AZaz09+/PolicySignatureExpiresKey-Pair-IdCloudFront-";
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let len = (next() % 200) as usize;
        let junk: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
            .collect();
        let query = junk.replace(['"', ' ', ';'], "");
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&junk) {
            headers.append(COOKIE, value);
        }
        let url = resource_url("https", "d.example", "/x", Some(&query));
        // No junk carries a signature by one of the group's keys: never accepted.
        let result = verify(&group, &url, Some(&query), &headers, None, NOW, 0);
        assert!(result.is_err(), "junk accepted: {query:?} / {junk:?}");
        // Stripping leaves no signing parameter and changes nothing when done again.
        let stripped = strip_signing_params(&query);
        for pair in stripped.split('&') {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            assert!(
                !params::QUERY_NAMES.contains(&name),
                "{query:?} -> {stripped:?}"
            );
        }
        assert_eq!(strip_signing_params(&stripped), stripped);
    }
}

/// One change to a signed URL. Each makes a URL that is not the one signed (or credentials
/// that are not the ones issued), so it must never be accepted.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace one character of the path with another.
    PathChar(proptest::sample::Index, char),
    /// Replace one character of the (unsigned-parameter) query value with another.
    QueryChar(proptest::sample::Index, char),
    /// Replace one character of the host with another (lower case: host case is not a change).
    HostChar(proptest::sample::Index, char),
    /// Add a parameter before the signing parameters.
    AddParam(String),
    /// Remove the viewer's own query parameter.
    DropParam,
    /// Change one digit of `Expires` (canned) or flip one bit of the policy (custom).
    Signed(proptest::sample::Index, u8),
    /// Flip one bit of the decoded signature.
    SignatureBit(proptest::sample::Index, u8),
    /// Present the signature under another key id the group holds, or one it does not.
    KeyId(&'static str),
}

fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
    use proptest::prelude::*;
    prop_oneof![
        (any::<proptest::sample::Index>(), "[a-z0-9/._~-]")
            .prop_map(|(i, c)| Mutation::PathChar(i, c.chars().next().unwrap())),
        (any::<proptest::sample::Index>(), "[a-z0-9]")
            .prop_map(|(i, c)| Mutation::QueryChar(i, c.chars().next().unwrap())),
        (any::<proptest::sample::Index>(), "[a-z0-9.-]")
            .prop_map(|(i, c)| Mutation::HostChar(i, c.chars().next().unwrap())),
        "[a-z]{1,4}=[a-z0-9]{0,4}".prop_map(Mutation::AddParam),
        Just(Mutation::DropParam),
        (any::<proptest::sample::Index>(), 0..8_u8).prop_map(|(i, b)| Mutation::Signed(i, b)),
        (any::<proptest::sample::Index>(), 0..8_u8).prop_map(|(i, b)| Mutation::SignatureBit(i, b)),
        prop_oneof![Just("ED1"), Just("HM1"), Just("ZZ9")].prop_map(Mutation::KeyId),
    ]
}

/// `s` with its character at `at` replaced by `c`; `None` when it is `c` already.
fn replace_char(s: &str, at: proptest::sample::Index, c: char) -> Option<String> {
    let at = at.index(s.len());
    let mut chars: Vec<char> = s.chars().collect();
    (chars[at] != c).then(|| {
        chars[at] = c;
        chars.into_iter().collect()
    })
}

/// Applies `m` to the signed `url` (`https://HOST/PATH?q=VALUE&<signing params>`); `None` when
/// the mutation would not change it.
fn mutate(url: &str, host: &str, path: &str, value: &str, m: &Mutation) -> Option<String> {
    let signing = url.split_once(&format!("q={value}&")).unwrap().1;
    let rebuild =
        |host: &str, path: &str, query: &str| format!("https://{host}/{path}?{query}{signing}");
    Some(match m {
        Mutation::PathChar(at, c) => {
            rebuild(host, &replace_char(path, *at, *c)?, &format!("q={value}&"))
        }
        Mutation::QueryChar(at, c) => {
            rebuild(host, path, &format!("q={}&", replace_char(value, *at, *c)?))
        }
        Mutation::HostChar(at, c) => {
            let host = replace_char(host, *at, *c)?;
            // A host that no longer parses is no request the edge could receive.
            if host.parse::<http::uri::Authority>().is_err() {
                return None;
            }
            rebuild(&host, path, &format!("q={value}&"))
        }
        Mutation::AddParam(pair) => rebuild(host, path, &format!("q={value}&{pair}&")),
        Mutation::DropParam => rebuild(host, path, ""),
        Mutation::Signed(at, bit) => {
            if url.contains("Expires=") {
                let expires = param(url, "Expires");
                let digit = (b'0' + (*bit % 10)) as char;
                let changed = replace_char(&expires, *at, digit)?;
                replace_param(url, "Expires", &changed)
            } else {
                let mut json = b64::decode(&param(url, "Policy")).unwrap();
                let at = at.index(json.len());
                json[at] ^= 1 << bit;
                replace_param(url, "Policy", &b64::encode(&json))
            }
        }
        Mutation::SignatureBit(at, bit) => {
            let mut sig = b64::decode(&param(url, "Signature")).unwrap();
            let at = at.index(sig.len());
            sig[at] ^= 1 << bit;
            replace_param(url, "Signature", &b64::encode(&sig))
        }
        Mutation::KeyId(id) => {
            if param(url, "Key-Pair-Id") == *id {
                return None;
            }
            replace_param(url, "Key-Pair-Id", id)
        }
    })
}

proptest::proptest! {
    // A signed URL is accepted as issued, and no change to its path, host, query, signed
    // expiry or policy, signature bytes or key id is ever accepted (a canned policy signs the
    // exact URL; a custom policy here names the exact URL as its resource).
    #[test]
    fn a_mutated_signed_url_is_never_accepted(
        host in "[a-z]{1,6}\\.example",
        path in "[a-z0-9]{1,6}(/[a-z0-9._-]{1,6}){0,2}",
        value in "[a-z0-9]{1,6}",
        signer in 0..2_usize,
        custom in proptest::bool::ANY,
        m in mutation(),
    ) {
        let (signers, group) = signers();
        let signer = &signers[signer];
        let target = format!("https://{host}/{path}?q={value}");
        let url = if custom {
            signer.sign_custom_url(&target, &policy(&target))
        } else {
            signer.sign_canned_url(&target, EXPIRES)
        };
        proptest::prop_assert_eq!(Request::new(&url).verify(&group), Ok(()), "{}", url);
        if let Some(mutated) = mutate(&url, &host, &path, &value, &m) {
            proptest::prop_assert_ne!(&mutated, &url);
            if let Ok(uri) = mutated.parse::<Uri>() {
                let request = Request { uri, headers: HeaderMap::new(), ip: None };
                let result = request.verify(&group);
                proptest::prop_assert!(result.is_err(), "{:?} accepted: {}", m, mutated);
            }
        }
    }
}

/// The bytes a canned-policy `url` signed, and its decoded signature.
fn canned_parts(url: &str) -> (String, Vec<u8>) {
    let request = Request::new(url);
    let expires = param(url, "Expires").parse().unwrap();
    let message = policy::canned_policy(&request.resource_url(), expires);
    (message, b64::decode(&param(url, "Signature")).unwrap())
}

#[test]
fn memo_answers_a_repeated_verification() {
    let (signers, group) = signers();
    for signer in &signers {
        let url = signer.sign_canned_url("https://d.example/memo", EXPIRES);
        let (message, signature) = canned_parts(&url);
        let id = signer.key_id();
        assert!(!group.memo().contains(id, message.as_bytes(), &signature));
        assert_eq!(Request::new(&url).verify(&group), Ok(()));
        assert!(group.memo().contains(id, message.as_bytes(), &signature));
        let held = group.memo().len();
        assert_eq!(Request::new(&url).verify(&group), Ok(()));
        assert_eq!(group.memo().len(), held, "a hit adds nothing");

        // A remembered verification is answered without the key: plant one for a signature
        // the key would refuse, and it is accepted.
        let (message, _) = canned_parts(&signer.sign_canned_url("https://d.example/p", EXPIRES));
        group.memo().insert(id, message.as_bytes(), &[9; 64]);
        let planted = replace_param(
            &signer.sign_canned_url("https://d.example/p", EXPIRES),
            "Signature",
            &b64::encode(&[9; 64]),
        );
        assert_eq!(Request::new(&planted).verify(&group), Ok(()));
    }
}

#[test]
fn conditions_are_checked_on_every_request_even_when_memoized() {
    let (signers, group) = signers();
    let wide = CustomPolicy::builder("https://d.example/a/*")
        .expires(EXPIRES)
        .not_before(NOW - 60)
        .ip_range("192.0.2.0/24")
        .build()
        .unwrap();
    for signer in &signers {
        let canned = Request::new(&signer.sign_canned_url("https://d.example/x", EXPIRES));
        assert_eq!(canned.verify(&group), Ok(()));
        assert_eq!(canned.verify_at(&group, EXPIRES, 0), Err(Denied::Expired));
        assert_eq!(canned.verify_at(&group, EXPIRES + 9, 10), Ok(()), "skew");
        assert_eq!(
            canned.verify_at(&group, EXPIRES + 10, 10),
            Err(Denied::Expired)
        );

        let url = signer.sign_custom_url("https://d.example/a/x", &wide);
        let custom = Request::new(&url).ip("192.0.2.9");
        assert_eq!(custom.verify(&group), Ok(()));
        assert_eq!(custom.verify_at(&group, EXPIRES, 0), Err(Denied::Expired));
        assert_eq!(
            custom.verify_at(&group, NOW - 60, 0),
            Err(Denied::NotYetValid)
        );
        assert_eq!(custom.verify_at(&group, NOW - 60, 1), Ok(()), "skew");
        assert_eq!(
            Request::new(&url).ip("198.51.100.1").verify(&group),
            Err(Denied::IpNotAllowed)
        );
        assert_eq!(
            Request::new(&url).verify(&group),
            Err(Denied::IpNotAllowed),
            "unknown client"
        );
        let elsewhere = url.replace("/a/x", "/b/x");
        assert_eq!(
            Request::new(&elsewhere).ip("192.0.2.9").verify(&group),
            Err(Denied::WrongResource)
        );
    }
}

#[test]
fn another_signature_for_a_memoized_message_is_verified_for_real() {
    let (signers, group) = signers();
    for signer in &signers {
        let url = signer.sign_canned_url("https://d.example/x", EXPIRES);
        assert_eq!(Request::new(&url).verify(&group), Ok(()));
        let held = group.memo().len();
        let (message, mut signature) = canned_parts(&url);
        for at in [0, signature.len() / 2, signature.len() - 1] {
            signature[at] ^= 0x01;
            let flipped = replace_param(&url, "Signature", &b64::encode(&signature));
            assert_eq!(
                Request::new(&flipped).verify(&group),
                Err(Denied::BadSignature)
            );
            assert!(
                !group
                    .memo()
                    .contains(signer.key_id(), message.as_bytes(), &signature),
                "a failure is never remembered"
            );
            signature[at] ^= 0x01;
        }
        assert_eq!(group.memo().len(), held);
        assert_eq!(Request::new(&url).verify(&group), Ok(()));
    }
}

#[test]
fn memo_stays_bounded_under_many_distinct_signed_urls() {
    let signer = Signer::new("HM1", hmac_key()).unwrap();
    let capacity = 32 * 1024;
    let group = KeyGroup::new()
        .with_key("HM1", hmac_key().verifying_key())
        .unwrap()
        .signature_memo(capacity);
    for i in 0..5_000 {
        let url = signer.sign_canned_url(&format!("https://d.example/flood/{i}"), EXPIRES);
        assert_eq!(Request::new(&url).verify(&group), Ok(()));
    }
    let memo = group.memo();
    assert!(memo.weight() <= capacity as u64, "{}", memo.weight());
    assert!(memo.len() < 5_000 / 10, "{}", memo.len());
    assert!(memo.len() > 0);

    let off = KeyGroup::new()
        .with_key("HM1", hmac_key().verifying_key())
        .unwrap()
        .signature_memo(0);
    let url = signer.sign_canned_url("https://d.example/x", EXPIRES);
    assert_eq!(Request::new(&url).verify(&off), Ok(()));
    assert_eq!(off.memo().len(), 0);
}

#[test]
fn a_replaced_key_does_not_inherit_what_the_old_one_verified() {
    let old = Signer::new("K1", ed25519_key(1)).unwrap();
    let mut group = KeyGroup::new()
        .with_key("K1", ed25519_key(1).verifying_key())
        .unwrap();
    let url = old.sign_canned_url("https://d.example/x", EXPIRES);
    assert_eq!(Request::new(&url).verify(&group), Ok(()));

    // A clone shares the memo until either side changes its keys.
    let before = group.clone();
    assert!(std::ptr::eq(before.memo(), group.memo()));
    group.remove("K1").unwrap();
    group.insert("K1", ed25519_key(2).verifying_key()).unwrap();
    assert!(!std::ptr::eq(before.memo(), group.memo()));
    assert_eq!(Request::new(&url).verify(&group), Err(Denied::BadSignature));
    assert_eq!(Request::new(&url).verify(&before), Ok(()));
}

/// Builds CloudFront's canned policy independently of the module, signs it with RSA-SHA1
/// PKCS#1 v1.5 as CloudFront specifies, and verifies through the module.
#[cfg(feature = "cloudfront-compat")]
mod cloudfront_compat {
    use super::*;
    use base64::Engine as _;
    use rand::SeedableRng as _;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};

    struct Keys {
        private: rsa::PrivateKey,
        private_pkcs1_pem: String,
        public_spki_pem: String,
    }

    /// One 2048-bit key for every test here (key generation is the slow part), from a fixed
    /// seed so runs are repeatable.
    fn keys() -> &'static Keys {
        static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
            let private = rsa::PrivateKey::new(&mut rng, 2048).unwrap();
            Keys {
                private_pkcs1_pem: private.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
                public_spki_pem: private
                    .to_public_key()
                    .to_public_key_pem(LineEnding::LF)
                    .unwrap(),
                private,
            }
        })
    }

    /// CloudFront's documented encoding: standard base64, then `+`→`-`, `=`→`_`, `/`→`~`.
    fn cloudfront_b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .replace('+', "-")
            .replace('=', "_")
            .replace('/', "~")
    }

    #[test]
    fn rsa_sha1_canned_url_as_cloudfront_specifies() {
        let keys = keys();
        let group = KeyGroup::new()
            .with_key(
                "APKAEXAMPLE",
                VerifyingKey::rsa_sha1_pem(&keys.public_spki_pem).unwrap(),
            )
            .unwrap();

        let resource = "https://d111111abcdef8.cloudfront.net/horizon.jpg?size=large&license=yes";
        let policy = format!(
            "{{\"Statement\":[{{\"Resource\":\"{resource}\",\"Condition\":{{\"DateLessThan\":{{\"AWS:EpochTime\":{EXPIRES}}}}}}}]}}"
        );
        assert!(!policy.contains(char::is_whitespace));
        let signature = keys
            .private
            .pkcs1v15_sign::<sha1::Sha1>(policy.as_bytes())
            .unwrap();
        let url = format!(
            "{resource}&Expires={EXPIRES}&Signature={}&Key-Pair-Id=APKAEXAMPLE",
            cloudfront_b64(&signature)
        );
        assert_eq!(Request::new(&url).verify(&group), Ok(()));
        assert_eq!(
            Request::new(&url).verify_at(&group, EXPIRES, 0),
            Err(Denied::Expired)
        );
        let moved = url.replace("horizon", "sunset");
        assert_eq!(
            Request::new(&moved).verify(&group),
            Err(Denied::BadSignature)
        );

        // The module's own RSA signer makes the same, deterministic, signature.
        let signer = Signer::new(
            "APKAEXAMPLE",
            SigningKey::rsa_sha1_pem(&keys.private_pkcs1_pem).unwrap(),
        )
        .unwrap();
        assert_eq!(signer.sign_canned_url(resource, EXPIRES), url);

        // The same credentials as cookies.
        let cookies = [
            ("CloudFront-Expires", EXPIRES.to_string()),
            ("CloudFront-Signature", cloudfront_b64(&signature)),
            ("CloudFront-Key-Pair-Id", "APKAEXAMPLE".to_string()),
        ];
        assert_eq!(
            Request::new(resource).cookies(&cookies).verify(&group),
            Ok(())
        );
    }

    #[test]
    fn rsa_sha1_custom_policy_as_cloudfront_specifies() {
        let keys = keys();
        let group = KeyGroup::new()
            .with_key(
                "APKAEXAMPLE",
                VerifyingKey::rsa_sha1_pem(&keys.public_spki_pem).unwrap(),
            )
            .unwrap();
        // Whitespace as in CloudFront's documentation's example policy.
        let policy = format!(
            "{{ \"Statement\": [ {{ \"Resource\": \"https://d111111abcdef8.cloudfront.net/game_download.zip*\", \
             \"Condition\": {{ \"IpAddress\": {{ \"AWS:SourceIp\": \"192.0.2.0/24\" }}, \
             \"DateLessThan\": {{ \"AWS:EpochTime\": {EXPIRES} }} }} }} ] }}"
        );
        let signature = keys
            .private
            .pkcs1v15_sign::<sha1::Sha1>(policy.as_bytes())
            .unwrap();
        let url = format!(
            "https://d111111abcdef8.cloudfront.net/game_download.zip?Policy={}&Signature={}&Key-Pair-Id=APKAEXAMPLE",
            cloudfront_b64(policy.as_bytes()),
            cloudfront_b64(&signature)
        );
        assert_eq!(Request::new(&url).ip("192.0.2.5").verify(&group), Ok(()));
        assert_eq!(
            Request::new(&url).ip("198.51.100.5").verify(&group),
            Err(Denied::IpNotAllowed)
        );
    }

    #[test]
    fn rsa_key_formats() {
        let keys = keys();
        let pkcs8 = keys.private.to_pkcs8_pem(LineEnding::LF).unwrap();
        let from_pkcs8 = SigningKey::rsa_sha1_pem(&pkcs8).unwrap();
        let from_pkcs1 = SigningKey::rsa_sha1_pem(&keys.private_pkcs1_pem).unwrap();
        assert_eq!(from_pkcs8.sign(b"m"), from_pkcs1.sign(b"m"));
        assert_eq!(from_pkcs1.algorithm(), "rsa-sha1");

        use rsa::pkcs1::EncodeRsaPublicKey as _;
        let pkcs1_public = keys
            .private
            .to_public_key()
            .to_pkcs1_pem(LineEnding::LF)
            .unwrap();
        let verifying = VerifyingKey::rsa_sha1_pem(&pkcs1_public).unwrap();
        assert_eq!(verifying.verify(b"m", &from_pkcs1.sign(b"m")), Ok(()));
        assert_eq!(
            verifying.verify(b"n", &from_pkcs1.sign(b"m")),
            Err(Denied::BadSignature)
        );
        assert_eq!(verifying.verify(b"m", &[0; 256]), Err(Denied::BadSignature));
        assert_eq!(verifying.verify(b"m", &[]), Err(Denied::BadSignature));

        for junk in [
            "",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            &keys.private_pkcs1_pem,
        ] {
            assert!(matches!(
                VerifyingKey::rsa_sha1_pem(junk),
                Err(SigningError::BadKey(_))
            ));
        }
        assert!(matches!(
            SigningKey::rsa_sha1_pem(&keys.public_spki_pem),
            Err(SigningError::BadKey(_))
        ));
    }
}

/// The value of query parameter `name` in `url`.
fn param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .unwrap()
        .to_owned()
}

/// `url` with query parameter `name`'s value replaced.
fn replace_param(url: &str, name: &str, value: &str) -> String {
    url.replace(
        &format!("{name}={}", param(url, name)),
        &format!("{name}={value}"),
    )
}
