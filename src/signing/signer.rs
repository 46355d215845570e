//! [`Signer`]: makes signed URLs and signed cookies in CloudFront's shapes.

use super::keys::{valid_key_id, SigningKey};
use super::params::strip_signing_params;
use super::policy::{canned_policy, CustomPolicy};
use super::{b64, resource_url};

/// Makes CloudFront-style signed URLs and signed cookies with one key.
///
/// ```
/// # use tower_cdn::signing::{Signer, SigningKey};
/// let signer = Signer::new("K1", SigningKey::ed25519(&[7; 32])?)?;
/// let url = signer.sign_canned_url("https://d.example/a.jpg?size=large", 1_900_000_000);
/// assert!(url.starts_with("https://d.example/a.jpg?size=large&Expires=1900000000&Signature="));
/// assert!(url.ends_with("&Key-Pair-Id=K1"));
/// # Ok::<(), tower_cdn::signing::SigningError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Signer {
    key_id: String,
    key: SigningKey,
}

impl Signer {
    /// A signer that names `key_id` in what it signs (the id the verifying side's
    /// [`KeyGroup`](super::KeyGroup) holds the matching key under).
    pub fn new(key_id: impl Into<String>, key: SigningKey) -> Result<Self, super::SigningError> {
        let key_id = key_id.into();
        if !valid_key_id(&key_id) {
            return Err(super::SigningError::BadKeyId(key_id));
        }
        Ok(Self { key_id, key })
    }

    /// The key id this signer puts in `Key-Pair-Id`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// `url` with a canned policy valid before `expires` (seconds since the Unix epoch):
    /// `…?…&Expires=N&Signature=S&Key-Pair-Id=K`.
    ///
    /// The URL's scheme and host are lower-cased, a default port is dropped, and signing
    /// parameters already in it are replaced; a `#fragment` stays at the end, unsigned.
    pub fn sign_canned_url(&self, url: &str, expires: u64) -> String {
        let (resource, fragment) = signable_url(url);
        let signature = self.signature(&canned_policy(&resource, expires));
        let mut signed = resource;
        signed.push(if signed.contains('?') { '&' } else { '?' });
        signed.push_str(&format!(
            "Expires={expires}&Signature={signature}&Key-Pair-Id={}",
            self.key_id
        ));
        signed.push_str(fragment);
        signed
    }

    /// `url` with `policy`: `…?…&Policy=P&Signature=S&Key-Pair-Id=K`.
    ///
    /// `url` is where the viewer goes; the policy's resource pattern says which URLs the
    /// signature is good for. Signing parameters already in `url` are replaced.
    pub fn sign_custom_url(&self, url: &str, policy: &CustomPolicy) -> String {
        let (mut signed, fragment) = signable_url(url);
        let (encoded, signature) = self.custom_parts(policy);
        signed.push(if signed.contains('?') { '&' } else { '?' });
        signed.push_str(&format!(
            "Policy={encoded}&Signature={signature}&Key-Pair-Id={}",
            self.key_id
        ));
        signed.push_str(fragment);
        signed
    }

    /// Signed cookies with a canned policy for exactly `url`: `CloudFront-Expires`,
    /// `CloudFront-Signature` and `CloudFront-Key-Pair-Id`, as (name, value) pairs ready for
    /// `Set-Cookie` (add `Path`, `Domain`, `Secure`, `HttpOnly` as the site needs).
    pub fn canned_cookies(&self, url: &str, expires: u64) -> Vec<(&'static str, String)> {
        let (resource, _) = signable_url(url);
        let signature = self.signature(&canned_policy(&resource, expires));
        vec![
            ("CloudFront-Expires", expires.to_string()),
            ("CloudFront-Signature", signature),
            ("CloudFront-Key-Pair-Id", self.key_id.clone()),
        ]
    }

    /// Signed cookies with `policy`: `CloudFront-Policy`, `CloudFront-Signature` and
    /// `CloudFront-Key-Pair-Id`, as (name, value) pairs ready for `Set-Cookie`.
    pub fn custom_cookies(&self, policy: &CustomPolicy) -> Vec<(&'static str, String)> {
        let (encoded, signature) = self.custom_parts(policy);
        vec![
            ("CloudFront-Policy", encoded),
            ("CloudFront-Signature", signature),
            ("CloudFront-Key-Pair-Id", self.key_id.clone()),
        ]
    }

    fn custom_parts(&self, policy: &CustomPolicy) -> (String, String) {
        let json = policy.json();
        (b64::encode(json.as_bytes()), self.signature(json))
    }

    fn signature(&self, policy: &str) -> String {
        b64::encode(&self.key.sign(policy.as_bytes()))
    }
}

/// Splits off a fragment, normalizes scheme and host, and removes signing parameters: the URL
/// as the verifying side will rebuild it from the request.
fn signable_url(url: &str) -> (String, &str) {
    let (url, fragment) = match url.find('#') {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let out = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            let (host, path) = rest.split_at(host_end);
            resource_url(scheme, host, path, query)
        }
        None => {
            let mut out = before_query.to_owned();
            if let Some(query) = query.map(strip_signing_params).filter(|q| !q.is_empty()) {
                out.push('?');
                out.push_str(&query);
            }
            out
        }
    };
    (out, fragment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signable_urls() {
        assert_eq!(
            signable_url("HTTPS://D.Example:443/A?b=1#f"),
            ("https://d.example/A?b=1".into(), "#f")
        );
        assert_eq!(
            signable_url("http://d.example:80/"),
            ("http://d.example/".into(), "")
        );
        assert_eq!(
            signable_url("http://d.example:8080/"),
            ("http://d.example:8080/".into(), "")
        );
        assert_eq!(
            signable_url("https://d.example/a?Expires=1&x=2&Signature=s&Key-Pair-Id=k"),
            ("https://d.example/a?x=2".into(), "")
        );
        assert_eq!(
            signable_url("https://d.example/a?Policy=p"),
            ("https://d.example/a".into(), "")
        );
    }

    #[test]
    fn bad_key_id() {
        let key = SigningKey::ed25519(&[1; 32]).unwrap();
        assert!(Signer::new("", key.clone()).is_err());
        assert!(Signer::new("a&b", key.clone()).is_err());
        assert_eq!(Signer::new("K1", key).unwrap().key_id(), "K1");
    }
}
