//! Why a signed request was denied, and why a key, signer or policy could not be built.

use std::fmt;

/// Why a request's signed URL or signed cookies were not accepted.
///
/// [`as_str`](Self::as_str) is the stable machine name for logs and metrics;
/// [`public_message`](Self::public_message) is the short text for the 403 body, the same for
/// every cause that could otherwise tell a prober something about the keys
/// (see [`shares_generic_body`](Self::shares_generic_body)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Denied {
    /// The policy's `DateLessThan` (or the canned `Expires`) has passed.
    Expired,
    /// The custom policy's `DateGreaterThan` has not passed yet.
    NotYetValid,
    /// The custom policy's `Resource` does not match the requested URL.
    WrongResource,
    /// The `Key-Pair-Id` names no key in the key group.
    UnknownKeyId,
    /// The signature does not verify with the named key (for a canned policy this is also what a
    /// URL other than the signed one gives, since the URL is part of the signed text).
    BadSignature,
    /// The custom policy's `IpAddress` range does not contain the client's address (or the
    /// client's address is unknown).
    IpNotAllowed,
    /// Neither signing query parameters nor signing cookies were sent.
    Missing,
    /// The signing parameters or cookies are incomplete, conflicting, too long, not in
    /// CloudFront's base64 alphabet, or the policy is not a policy CloudFront would accept.
    Malformed,
}

impl Denied {
    /// Every cause, for tables and metrics.
    pub const ALL: [Denied; 8] = [
        Denied::Expired,
        Denied::NotYetValid,
        Denied::WrongResource,
        Denied::UnknownKeyId,
        Denied::BadSignature,
        Denied::IpNotAllowed,
        Denied::Missing,
        Denied::Malformed,
    ];

    /// The stable machine name: `expired`, `not-yet-valid`, `wrong-resource`, `unknown-key-id`,
    /// `bad-signature`, `ip-not-allowed`, `missing` or `malformed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Denied::Expired => "expired",
            Denied::NotYetValid => "not-yet-valid",
            Denied::WrongResource => "wrong-resource",
            Denied::UnknownKeyId => "unknown-key-id",
            Denied::BadSignature => "bad-signature",
            Denied::IpNotAllowed => "ip-not-allowed",
            Denied::Missing => "missing",
            Denied::Malformed => "malformed",
        }
    }

    /// Whether this cause must be answered with the one generic body
    /// ([`GENERIC_MESSAGE`](Self::GENERIC_MESSAGE)) rather than its own reason.
    ///
    /// True for `unknown-key-id` and `bad-signature`: telling them apart would let a prober
    /// enumerate key ids. The other causes are reported only about a policy whose signature
    /// already verified (or, for `missing`/`malformed`, about what the viewer sent), so they tell
    /// nothing about key material.
    pub const fn shares_generic_body(self) -> bool {
        matches!(self, Denied::UnknownKeyId | Denied::BadSignature)
    }

    /// The body shared by every cause for which [`shares_generic_body`](Self::shares_generic_body)
    /// is true.
    pub const GENERIC_MESSAGE: &'static str = "the signature is not valid";

    /// The short, public reason for a 403 body: actionable by a developer, and identical for the
    /// causes that share the generic body.
    pub const fn public_message(self) -> &'static str {
        match self {
            Denied::Expired => "the signed URL or cookie has expired",
            Denied::NotYetValid => "the signed URL or cookie is not valid yet",
            Denied::WrongResource => "the signed policy does not cover this URL",
            Denied::IpNotAllowed => "the signed policy does not allow this client address",
            Denied::Missing => "a signed URL or signed cookies are required",
            Denied::Malformed => "the signing parameters are malformed",
            Denied::UnknownKeyId | Denied::BadSignature => Self::GENERIC_MESSAGE,
        }
    }
}

impl fmt::Display for Denied {
    /// Writes the [`public_message`](Self::public_message).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.public_message())
    }
}

impl std::error::Error for Denied {}

/// Why a key, a key group, a [`Signer`](super::Signer) or a
/// [`CustomPolicy`](super::CustomPolicy) could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigningError {
    /// A key's bytes or PEM text are not a valid key of its kind.
    BadKey(&'static str),
    /// An HMAC secret shorter than [`MIN_HMAC_SECRET_LEN`](super::MIN_HMAC_SECRET_LEN) bytes.
    WeakSecret,
    /// A key id that is empty, longer than [`MAX_KEY_ID_LEN`](super::MAX_KEY_ID_LEN), or has a
    /// character outside `A-Z a-z 0-9 - _ . ~`.
    BadKeyId(String),
    /// The key group already holds a key with this id.
    DuplicateKeyId(String),
    /// A policy resource that is empty, has whitespace, control characters, `"` or `#`, or does
    /// not start with `http://`, `https://` or a `*`/`?` wildcard.
    BadResource(String),
    /// An `IpAddress` condition that is not an IPv4 or IPv6 address or CIDR range.
    BadCidr(String),
    /// A custom policy without [`expires`](super::CustomPolicyBuilder::expires) (CloudFront's
    /// required `DateLessThan`).
    MissingExpiry,
    /// A custom policy whose `not_before` is not before its `expires`.
    EmptyValidity,
    /// A custom policy whose encoded form exceeds [`MAX_POLICY_LEN`](super::MAX_POLICY_LEN),
    /// so the verifying side would refuse it.
    PolicyTooLong,
}

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningError::BadKey(why) => write!(f, "invalid signing key: {why}"),
            SigningError::WeakSecret => write!(
                f,
                "HMAC secret is shorter than {} bytes",
                super::MIN_HMAC_SECRET_LEN
            ),
            SigningError::BadKeyId(id) => write!(
                f,
                "invalid key id {id:?}: 1 to {} characters from A-Z a-z 0-9 - _ . ~",
                super::MAX_KEY_ID_LEN
            ),
            SigningError::DuplicateKeyId(id) => {
                write!(f, "key id {id:?} is already in the key group")
            }
            SigningError::BadResource(resource) => write!(
                f,
                "invalid policy resource {resource:?}: expected an http:// or https:// URL \
                 (wildcards * and ? allowed) without whitespace, quotes or fragment"
            ),
            SigningError::BadCidr(cidr) => write!(
                f,
                "invalid IP range {cidr:?}: expected an IPv4 or IPv6 address or CIDR such as \
                 192.0.2.0/24 or 2001:db8::/32"
            ),
            SigningError::MissingExpiry => {
                write!(f, "a custom policy needs an expiry time (DateLessThan)")
            }
            SigningError::EmptyValidity => write!(
                f,
                "a custom policy's start time (DateGreaterThan) must be before its expiry"
            ),
            SigningError::PolicyTooLong => write!(
                f,
                "the encoded policy would exceed {} characters",
                super::MAX_POLICY_LEN
            ),
        }
    }
}

impl std::error::Error for SigningError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_kebab_case() {
        let names: std::collections::HashSet<_> = Denied::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(names.len(), Denied::ALL.len());
        for name in names {
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
        }
    }

    #[test]
    fn key_related_causes_share_one_body() {
        assert_eq!(
            Denied::UnknownKeyId.public_message(),
            Denied::BadSignature.public_message()
        );
        for denied in Denied::ALL {
            assert_eq!(
                denied.shares_generic_body(),
                denied.public_message() == Denied::GENERIC_MESSAGE,
                "{denied:?}"
            );
            assert_eq!(denied.to_string(), denied.public_message());
            // The public text never names the internal cause of a generic denial.
            if denied.shares_generic_body() {
                assert!(!denied.public_message().contains("key"));
            }
        }
    }
}
