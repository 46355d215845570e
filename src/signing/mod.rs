//! Signed URLs and signed cookies in CloudFront's shapes: policies, keys, signing and verifying.
//!
//! A viewer proves it may fetch a URL with CloudFront's credentials, either as query
//! parameters (`Expires` or `Policy`, `Signature`, `Key-Pair-Id`) or as cookies
//! (`CloudFront-Expires` or `CloudFront-Policy`, `CloudFront-Signature`,
//! `CloudFront-Key-Pair-Id`):
//!
//! - a **canned policy** (`Expires`) signs CloudFront's fixed policy text for exactly one URL
//!   and an expiry;
//! - a **custom policy** (`Policy`, CloudFront base64 of the JSON) carries a resource pattern
//!   with `*` and `?` wildcards, `DateLessThan`, and optionally `DateGreaterThan` and an
//!   `IpAddress` CIDR range (IPv4 or IPv6).
//!
//! Signatures are Ed25519 ([`VerifyingKey::ed25519`]: edges hold public keys only) or
//! HMAC-SHA256 ([`VerifyingKey::hmac_sha256`]: a shared secret, compared in constant time);
//! with the `cloudfront-compat` feature also CloudFront's own RSA-SHA1, so URLs made by the AWS
//! SDKs' CloudFront signers verify unchanged. A [`KeyGroup`] holds several keys by id, so keys
//! rotate without downtime. [`Signer`] makes signed URLs and cookies.
//!
//! A key group remembers the signatures it verified, bounded in bytes
//! ([`KeyGroup::signature_memo`]): a viewer repeating a signed request costs a lookup, not a
//! signature verification. Only the signature check is remembered; expiry, `DateGreaterThan`,
//! resource and IP range are checked on every request.
//!
//! The URL a policy is checked against is `scheme://host/path?query` with the signing
//! parameters removed, scheme and host in lower case and a default port dropped, as CloudFront
//! does. The signing parameters are also removed from the cache key and the origin request, so
//! every signed viewer of one object shares one cached copy.
//!
//! ```
//! use tower_cdn::signing::{CustomPolicy, KeyGroup, Signer, SigningKey};
//!
//! // The operator signs with the secret key...
//! let key = SigningKey::ed25519(&[42; 32])?;
//! let signer = Signer::new("K2024", key.clone())?;
//! let policy = CustomPolicy::builder("https://d.example/videos/*")
//!     .expires(1_900_000_000)
//!     .ip_range("2001:db8::/32")
//!     .build()?;
//! let url = signer.sign_custom_url("https://d.example/videos/intro.mp4", &policy);
//! assert!(url.contains("&Signature=") && url.ends_with("&Key-Pair-Id=K2024"));
//!
//! // ...and the edge trusts the public key under the same id.
//! let trusted = KeyGroup::new().with_key("K2024", key.verifying_key())?;
//! assert_eq!(trusted.len(), 1);
//! # Ok::<(), tower_cdn::signing::SigningError>(())
//! ```

mod b64;
mod error;
mod gate;
mod keys;
mod memo;
mod params;
mod policy;
mod signer;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use http::HeaderMap;

pub use error::{Denied, SigningError};
pub(crate) use gate::admit;
pub use keys::{KeyGroup, SigningKey, VerifyingKey};
pub(crate) use params::strip_signing_params;
pub use policy::{CustomPolicy, CustomPolicyBuilder};
pub use signer::Signer;

use params::Form;
use policy::ReceivedPolicy;

/// The longest `Policy` value accepted, in base64 characters (about 3 kB of policy JSON).
/// Longer values are `malformed`; [`CustomPolicyBuilder::build`] refuses policies that would
/// exceed it.
pub const MAX_POLICY_LEN: usize = 4096;

/// The longest `Signature` value accepted, in base64 characters: room for an 8192-bit RSA
/// signature (1368 characters).
pub const MAX_SIGNATURE_LEN: usize = 1400;

/// The longest key id, in characters.
pub const MAX_KEY_ID_LEN: usize = 128;

/// The most bytes of `Cookie` header (all of them together) searched for signing cookies;
/// a request with more, and no signing query parameters, is `malformed`.
pub const MAX_COOKIE_HEADER_LEN: usize = 16 * 1024;

/// The shortest HMAC-SHA256 secret accepted, in bytes.
pub const MIN_HMAC_SECRET_LEN: usize = 16;

/// The bytes a [`KeyGroup`]'s memo of verified signatures holds by default
/// ([`KeyGroup::signature_memo`]): a few thousand canned-policy URLs.
pub const DEFAULT_SIGNATURE_MEMO_BYTES: usize = 1024 * 1024;

/// The largest verification a [`KeyGroup`] remembers: key id, signed message and signature
/// together, in bytes. Larger ones are verified on every request.
pub const MAX_MEMO_ENTRY_BYTES: usize = 8 * 1024;

/// A request whose signature was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verified<'g> {
    /// The id of the key that verified it, as the group holds it (for logs: when an old id
    /// stops appearing, it can be removed).
    pub(crate) key_id: &'g str,
    /// Whether the credentials came from cookies rather than the query string.
    pub(crate) from_cookies: bool,
}

/// Checks a request's signed URL or signed cookies against `group`.
///
/// - `url`: the request as CloudFront compares it with a policy's resource, built by
///   [`resource_url`] (`scheme://host/path?query`, signing parameters removed).
/// - `query`: the request's raw query string, signing parameters included (they take
///   precedence over cookies when present).
/// - `headers`: searched for `Cookie` headers.
/// - `client_ip`: the viewer's address, for a policy's `IpAddress` condition; `None` fails
///   any such condition.
/// - `now_epoch_secs`, `skew_secs`: the current time and how many seconds of clock difference
///   to forgive at either end of the validity window.
///
/// The signature is checked before anything it signs is looked at: `expired`,
/// `not-yet-valid`, `wrong-resource` and `ip-not-allowed` are only ever reported about an
/// authentic policy. For a canned policy the URL is part of the signed text, so another URL
/// shows as `bad-signature`.
pub(crate) fn verify<'g>(
    group: &'g KeyGroup,
    url: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    client_ip: Option<IpAddr>,
    now_epoch_secs: u64,
    skew_secs: u64,
) -> Result<Verified<'g>, Denied> {
    let credentials = params::extract(query, headers)?;
    let entry = group
        .entry(&credentials.key_id)
        .ok_or(Denied::UnknownKeyId)?;
    let signature = b64::decode(&credentials.signature).ok_or(Denied::Malformed)?;
    match credentials.form {
        Form::Canned { expires } => {
            group.verify(
                entry,
                policy::canned_policy(url, expires).as_bytes(),
                &signature,
            )?;
            policy::check_times(now_epoch_secs, skew_secs, expires, None)?;
        }
        Form::Custom { policy } => {
            let json = policy::decode_policy(&policy).ok_or(Denied::Malformed)?;
            group.verify(entry, &json, &signature)?;
            ReceivedPolicy::parse(&json)
                .ok_or(Denied::Malformed)?
                .check(url, client_ip, now_epoch_secs, skew_secs)?;
        }
    }
    Ok(Verified {
        key_id: entry.0,
        from_cookies: credentials.source == params::Source::Cookies,
    })
}

/// The URL a policy is checked against, as CloudFront builds it: `scheme://host/path?query`
/// with scheme and host lower-cased, a default port (`:443` for https, `:80` for http) and any
/// user info dropped, an empty path as `/`, and the signing parameters removed from the query
/// (no `?` when nothing is left).
pub(crate) fn resource_url(
    scheme: &str,
    authority: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        Some(":443")
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(":80")
    } else {
        None
    };
    let host = default_port.map_or(host, |port| host.strip_suffix(port).unwrap_or(host));
    let path = if path.is_empty() { "/" } else { path };
    let query = query
        .map(strip_signing_params)
        .filter(|query| !query.is_empty());
    // One allocation: `scheme://host` lower-cased in place, then path and query as they are.
    let mut url = String::with_capacity(
        scheme.len() + 3 + host.len() + path.len() + query.as_ref().map_or(0, |q| q.len() + 1),
    );
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(host);
    url.make_ascii_lowercase();
    url.push_str(path);
    if let Some(query) = query {
        url.push('?');
        url.push_str(&query);
    }
    url
}
