//! Signed URLs and cookies decided before the cache: who may fetch what.

mod support;

use std::net::SocketAddr;

use http::{Request, StatusCode};
use support::*;
use tower::Layer;
use tower_cdn::signing::{CustomPolicy, KeyGroup, Signer, SigningKey};
use tower_cdn::{Behavior, CdnLayer, ClientAddr, ManualClock};

const NOW: u64 = 1_767_225_600; // ManualClock::new()
const HOST: &str = "http://example.com";

fn ed25519(seed: u8) -> SigningKey {
    SigningKey::ed25519(&[seed; 32]).unwrap()
}

fn edge(group: KeyGroup) -> (tower_cdn::CdnService<Origin>, Seen, ManualClock) {
    let (origin, seen) =
        origin(|req| response(&[("cache-control", "max-age=600")], req.uri().to_string()));
    let clock = ManualClock::new();
    let svc = CdnLayer::builder()
        .clock(clock.clone())
        .trusted_proxies(["10.0.0.0/8"])
        .behavior("/private/*", Behavior::new().trusted_key_group(group))
        .build()
        .unwrap()
        .layer(origin);
    (svc, seen, clock)
}

fn group(keys: &[(&str, &SigningKey)]) -> KeyGroup {
    let mut g = KeyGroup::new();
    for (id, key) in keys {
        g.insert(*id, key.verifying_key()).unwrap();
    }
    g
}

/// A request for a full URL as the signer printed it (path and query only go on the wire).
fn signed(url: &str) -> Request<()> {
    get(url.strip_prefix(HOST).unwrap(), &[])
}

#[tokio::test]
async fn canned_and_custom_policies_in_url_form() {
    let key = ed25519(1);
    let (svc, seen, _) = edge(group(&[("K1", &key)]));
    let signer = Signer::new("K1", key.clone()).unwrap();
    let canned = signer.sign_canned_url(&format!("{HOST}/private/a.mp4"), NOW + 60);
    let res = send(&svc, signed(&canned)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.body, "/private/a.mp4",
        "the origin never sees the signing parameters"
    );

    let policy = CustomPolicy::builder(format!("{HOST}/private/*"))
        .expires(NOW + 60)
        .build()
        .unwrap();
    let custom = signer.sign_custom_url(&format!("{HOST}/private/a.mp4"), &policy);
    let res = send(&svc, signed(&custom)).await;
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::OK, "Hit from tower-cdn"),
        "one object for every signature"
    );
    let other = signer.sign_custom_url(&format!("{HOST}/private/b/c.mp4?x=1"), &policy);
    assert_eq!(
        send(&svc, signed(&other)).await.body,
        "/private/b/c.mp4?x=1",
        "wildcard resource"
    );
    assert_eq!(seen.calls(), 2);
    assert_eq!(
        send(&svc, get("/public", &[])).await.status,
        StatusCode::OK,
        "other behaviors are open"
    );
}

#[tokio::test]
async fn signed_cookies_and_hmac_keys() {
    let key = SigningKey::hmac_sha256(b"a shared secret of 32 bytes.....").unwrap();
    let (svc, _, _) = edge(group(&[("H1", &key)]));
    let signer = Signer::new("H1", key).unwrap();
    let policy = CustomPolicy::builder(format!("{HOST}/private/*"))
        .expires(NOW + 60)
        .build()
        .unwrap();
    let cookie = signer
        .custom_cookies(&policy)
        .into_iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let res = send(
        &svc,
        get(
            "/private/x",
            &[("cookie", &format!("theme=dark; {cookie}"))],
        ),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let canned: Vec<String> = signer
        .canned_cookies(&format!("{HOST}/private/y"), NOW + 60)
        .into_iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let res = send(&svc, get("/private/y", &[("cookie", &canned.join("; "))])).await;
    assert_eq!(res.status, StatusCode::OK);
}

#[tokio::test]
async fn every_failure_cause_is_a_403_with_a_short_reason() {
    let key = ed25519(1);
    let (svc, seen, _) = edge(group(&[("K1", &key)]));
    let signer = Signer::new("K1", key.clone()).unwrap();
    let stranger = Signer::new("K1", ed25519(2)).unwrap();
    let unknown = Signer::new("K9", key.clone()).unwrap();
    let url = format!("{HOST}/private/a");
    let later = CustomPolicy::builder(format!("{HOST}/private/*"))
        .expires(NOW + 600)
        .not_before(NOW + 300)
        .build()
        .unwrap();
    let elsewhere = CustomPolicy::builder(format!("{HOST}/other/*"))
        .expires(NOW + 600)
        .build()
        .unwrap();
    let cases = [
        ("missing", get("/private/a", &[])),
        ("expired", signed(&signer.sign_canned_url(&url, NOW - 1))),
        (
            "not yet valid",
            signed(&signer.sign_custom_url(&url, &later)),
        ),
        (
            "wrong resource",
            signed(&signer.sign_custom_url(&url, &elsewhere)),
        ),
        (
            "bad signature",
            signed(&stranger.sign_canned_url(&url, NOW + 60)),
        ),
        (
            "unknown key",
            signed(&unknown.sign_canned_url(&url, NOW + 60)),
        ),
        (
            "malformed",
            get("/private/a?Expires=x&Signature=%%%&Key-Pair-Id=K1", &[]),
        ),
    ];
    let mut generic = Vec::new();
    for (cause, req) in cases {
        let res = send(&svc, req).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{cause}");
        assert_eq!(res.x_cache(), "Error from tower-cdn");
        let text = String::from_utf8_lossy(&res.body).into_owned();
        if cause == "bad signature" || cause == "unknown key" {
            generic.push(text);
        } else {
            assert!(!text.is_empty(), "{cause}");
        }
    }
    assert_eq!(
        generic[0], generic[1],
        "causes that could leak key material share one body"
    );
    assert_eq!(seen.calls(), 0, "a denied viewer never reaches the origin");
}

#[tokio::test]
async fn a_denied_viewer_never_gets_a_cached_body() {
    let key = ed25519(1);
    let (svc, _, _) = edge(group(&[("K1", &key)]));
    let signer = Signer::new("K1", key).unwrap();
    let ok = send(
        &svc,
        signed(&signer.sign_canned_url(&format!("{HOST}/private/a"), NOW + 60)),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let denied = send(&svc, get("/private/a", &[])).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(!denied.body.starts_with(b"/private"));
}

fn from(peer: &str, xff: Option<&str>, url: &str) -> Request<()> {
    let mut req = signed(url);
    req.extensions_mut()
        .insert(ClientAddr(SocketAddr::new(peer.parse().unwrap(), 4000)));
    if let Some(x) = xff {
        req.headers_mut()
            .insert("x-forwarded-for", x.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn ip_conditions_trust_forwarding_headers_only_from_trusted_proxies() {
    let key = ed25519(1);
    let (svc, _, _) = edge(group(&[("K1", &key)]));
    let signer = Signer::new("K1", key).unwrap();
    let policy = CustomPolicy::builder(format!("{HOST}/private/*"))
        .expires(NOW + 60)
        .ip_range("198.51.100.0/24")
        .build()
        .unwrap();
    let url = signer.sign_custom_url(&format!("{HOST}/private/a"), &policy);
    assert_eq!(
        send(&svc, from("198.51.100.7", None, &url)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&svc, from("203.0.113.1", None, &url)).await.status,
        StatusCode::FORBIDDEN
    );
    let spoofed = from("203.0.113.1", Some("198.51.100.7"), &url);
    assert_eq!(
        send(&svc, spoofed).await.status,
        StatusCode::FORBIDDEN,
        "untrusted hop"
    );
    let proxied = from("10.1.2.3", Some("198.51.100.7"), &url);
    assert_eq!(
        send(&svc, proxied).await.status,
        StatusCode::OK,
        "trusted proxy"
    );
}

#[tokio::test]
async fn keys_rotate_without_downtime() {
    let (old, new) = (ed25519(1), ed25519(2));
    let (svc, _, _) = edge(group(&[("OLD", &old), ("NEW", &new)]));
    for (id, key) in [("OLD", &old), ("NEW", &new)] {
        let url = Signer::new(id, key.clone())
            .unwrap()
            .sign_canned_url(&format!("{HOST}/private/{id}"), NOW + 60);
        assert_eq!(
            send(&svc, signed(&url)).await.status,
            StatusCode::OK,
            "{id}"
        );
    }
    let (svc, _, _) = edge(group(&[("NEW", &new)]));
    let url = Signer::new("OLD", old)
        .unwrap()
        .sign_canned_url(&format!("{HOST}/private/x"), NOW + 60);
    assert_eq!(
        send(&svc, signed(&url)).await.status,
        StatusCode::FORBIDDEN,
        "retired key"
    );
}

/// CloudFront's own RSA-SHA1 URLs, made here without the crate's `Signer`, through the layer.
#[cfg(feature = "cloudfront-compat")]
mod cloudfront_rsa_sha1 {
    use super::*;
    use base64::Engine as _;
    use rand::SeedableRng as _;
    use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
    use tower_cdn::signing::VerifyingKey;

    const KEY_ID: &str = "APKAEXAMPLE";

    /// A 2048-bit key, as CloudFront's key groups take, from a fixed seed; and the edge's
    /// group trusting its public half as PEM.
    fn key_and_group() -> (rsa::PrivateKey, KeyGroup) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9111);
        let private = rsa::PrivateKey::new(&mut rng, 2048).unwrap();
        let pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let group = KeyGroup::new()
            .with_key(KEY_ID, VerifyingKey::rsa_sha1_pem(&pem).unwrap())
            .unwrap();
        (private, group)
    }

    /// RSASSA-PKCS1-v1_5 over SHA-1 of `policy`, as CloudFront signs.
    fn sign(key: &rsa::PrivateKey, policy: &str) -> Vec<u8> {
        key.pkcs1v15_sign::<sha1::Sha1>(policy.as_bytes()).unwrap()
    }

    /// CloudFront's URL-safe base64: standard base64, then `+`→`-`, `=`→`_`, `/`→`~`.
    fn cloudfront_b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .replace('+', "-")
            .replace('=', "_")
            .replace('/', "~")
    }

    /// `signature` with one bit of its first byte flipped.
    fn flipped(signature: &[u8]) -> Vec<u8> {
        let mut bad = signature.to_vec();
        bad[0] ^= 0x01;
        bad
    }

    #[tokio::test]
    async fn canned_policy_signed_as_cloudfront_specifies() {
        let (key, group) = key_and_group();
        let (svc, seen, _) = edge(group);
        let resource = format!("{HOST}/private/horizon.jpg?size=large");
        let policy = format!(
            "{{\"Statement\":[{{\"Resource\":\"{resource}\",\"Condition\":{{\"DateLessThan\":{{\"AWS:EpochTime\":{}}}}}}}]}}",
            NOW + 60
        );
        let signature = sign(&key, &policy);
        let url_with = |signature: &[u8]| {
            format!(
                "{resource}&Expires={}&Signature={}&Key-Pair-Id={KEY_ID}",
                NOW + 60,
                cloudfront_b64(signature)
            )
        };

        let res = send(&svc, signed(&url_with(&signature))).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(
            res.body, "/private/horizon.jpg?size=large",
            "the origin never sees the signing parameters"
        );
        assert_eq!(seen.calls(), 1);

        let res = send(&svc, signed(&url_with(&flipped(&signature)))).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "a flipped signature bit");
        assert_eq!(seen.calls(), 1, "a denied viewer never reaches the origin");
    }

    #[tokio::test]
    async fn custom_policy_signed_as_cloudfront_specifies() {
        let (key, group) = key_and_group();
        let (svc, seen, _) = edge(group);
        // Whitespace as in CloudFront's documentation's example policy.
        let policy = format!(
            "{{ \"Statement\": [ {{ \"Resource\": \"{HOST}/private/*\", \
             \"Condition\": {{ \"DateLessThan\": {{ \"AWS:EpochTime\": {} }} }} }} ] }}",
            NOW + 60
        );
        let signature = sign(&key, &policy);
        let url_with = |signature: &[u8]| {
            format!(
                "{HOST}/private/game_download.zip?Policy={}&Signature={}&Key-Pair-Id={KEY_ID}",
                cloudfront_b64(policy.as_bytes()),
                cloudfront_b64(signature)
            )
        };

        let res = send(&svc, signed(&url_with(&signature))).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(
            res.body, "/private/game_download.zip",
            "the origin never sees the signing parameters"
        );
        assert_eq!(seen.calls(), 1);

        let res = send(&svc, signed(&url_with(&flipped(&signature)))).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "a flipped signature bit");
        assert_eq!(seen.calls(), 1, "a denied viewer never reaches the origin");
    }
}
