//! Signing and verifying keys (Ed25519, HMAC-SHA256, optionally RSA-SHA1) and key groups.

use std::fmt;
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::error::{Denied, SigningError};
use super::memo::Memo;
use super::{MAX_KEY_ID_LEN, MIN_HMAC_SECRET_LEN};

type HmacSha256 = hmac::Hmac<Sha256>;

/// A key that checks signatures: what an edge holds, in a [`KeyGroup`].
///
/// `Debug` shows the algorithm only, never key material.
#[derive(Clone)]
pub struct VerifyingKey {
    inner: Verifier,
}

#[derive(Clone)]
enum Verifier {
    Ed25519(ed25519_dalek::VerifyingKey),
    /// Keyed once; each verification clones the keyed state.
    HmacSha256(HmacSha256),
    #[cfg(feature = "cloudfront-compat")]
    RsaSha1(Box<rsa::PublicKey>),
}

impl VerifyingKey {
    /// An Ed25519 public key: its 32 bytes (RFC 8032). Signatures are checked with
    /// `verify_strict` (no small-order keys, no malleable signatures).
    pub fn ed25519(public_key: &[u8]) -> Result<Self, SigningError> {
        let bytes: &[u8; 32] = public_key
            .try_into()
            .map_err(|_| SigningError::BadKey("an Ed25519 public key is 32 bytes"))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| SigningError::BadKey("not an Ed25519 public key"))?;
        if key.is_weak() {
            return Err(SigningError::BadKey("a small-order Ed25519 public key"));
        }
        Ok(Self {
            inner: Verifier::Ed25519(key),
        })
    }

    /// An HMAC-SHA256 shared secret (at least [`MIN_HMAC_SECRET_LEN`] bytes). Signatures are
    /// compared in constant time.
    pub fn hmac_sha256(secret: &[u8]) -> Result<Self, SigningError> {
        Ok(Self {
            inner: Verifier::HmacSha256(keyed_hmac(secret)?),
        })
    }

    /// A CloudFront RSA public key, PEM-encoded as CloudFront takes it
    /// (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo) or as PKCS#1
    /// (`-----BEGIN RSA PUBLIC KEY-----`); 1024 to 8192 bits. Signatures are RSASSA-PKCS1-v1_5
    /// with SHA-1, as CloudFront's trusted key groups use.
    #[cfg(feature = "cloudfront-compat")]
    pub fn rsa_sha1_pem(pem: &str) -> Result<Self, SigningError> {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use rsa::pkcs8::DecodePublicKey;
        let key = rsa::PublicKey::from_public_key_pem(pem)
            .ok()
            .or_else(|| rsa::PublicKey::from_pkcs1_pem(pem).ok())
            .ok_or(SigningError::BadKey(
                "not a PEM RSA public key (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY) of 1024 to 8192 bits",
            ))?;
        Ok(Self {
            inner: Verifier::RsaSha1(Box::new(key)),
        })
    }

    /// The algorithm's name: `ed25519`, `hmac-sha256` or `rsa-sha1`.
    pub fn algorithm(&self) -> &'static str {
        match &self.inner {
            Verifier::Ed25519(_) => "ed25519",
            Verifier::HmacSha256(_) => "hmac-sha256",
            #[cfg(feature = "cloudfront-compat")]
            Verifier::RsaSha1(_) => "rsa-sha1",
        }
    }

    /// Checks `signature` over `message`.
    pub(super) fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Denied> {
        let ok = match &self.inner {
            Verifier::Ed25519(key) => match <&[u8; 64]>::try_from(signature) {
                Ok(bytes) => key
                    .verify_strict(message, &ed25519_dalek::Signature::from_bytes(bytes))
                    .is_ok(),
                Err(_) => false,
            },
            Verifier::HmacSha256(keyed) => {
                let mut mac = keyed.clone();
                mac.update(message);
                // Constant-time comparison; a wrong length is rejected up front.
                mac.verify_slice(signature).is_ok()
            }
            #[cfg(feature = "cloudfront-compat")]
            Verifier::RsaSha1(key) => key
                .pkcs1v15_verify::<sha1::Sha1>(message, signature)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(Denied::BadSignature)
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

fn keyed_hmac(secret: &[u8]) -> Result<HmacSha256, SigningError> {
    if secret.len() < MIN_HMAC_SECRET_LEN {
        return Err(SigningError::WeakSecret);
    }
    HmacSha256::new_from_slice(secret).map_err(|_| SigningError::BadKey("HMAC secret"))
}

/// A key that makes signatures: what a [`Signer`](super::Signer) holds.
///
/// `Debug` shows the algorithm only, never key material.
#[derive(Clone)]
pub struct SigningKey {
    inner: Maker,
}

#[derive(Clone)]
enum Maker {
    Ed25519(ed25519_dalek::SigningKey),
    HmacSha256(HmacSha256),
    #[cfg(feature = "cloudfront-compat")]
    RsaSha1(Box<rsa::PrivateKey>),
}

impl SigningKey {
    /// An Ed25519 secret key: its 32-byte seed (RFC 8032).
    pub fn ed25519(secret_key: &[u8]) -> Result<Self, SigningError> {
        let bytes: &[u8; 32] = secret_key
            .try_into()
            .map_err(|_| SigningError::BadKey("an Ed25519 secret key is 32 bytes"))?;
        Ok(Self {
            inner: Maker::Ed25519(ed25519_dalek::SigningKey::from_bytes(bytes)),
        })
    }

    /// An HMAC-SHA256 shared secret (at least [`MIN_HMAC_SECRET_LEN`] bytes).
    pub fn hmac_sha256(secret: &[u8]) -> Result<Self, SigningError> {
        Ok(Self {
            inner: Maker::HmacSha256(keyed_hmac(secret)?),
        })
    }

    /// A CloudFront RSA private key, PEM-encoded as PKCS#1 (`-----BEGIN RSA PRIVATE KEY-----`,
    /// what `openssl genrsa` and CloudFront's documentation use) or PKCS#8
    /// (`-----BEGIN PRIVATE KEY-----`); 1024 to 8192 bits. Signs with RSASSA-PKCS1-v1_5 and
    /// SHA-1, as CloudFront specifies.
    #[cfg(feature = "cloudfront-compat")]
    pub fn rsa_sha1_pem(pem: &str) -> Result<Self, SigningError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let key = rsa::PrivateKey::from_pkcs1_pem(pem)
            .ok()
            .or_else(|| rsa::PrivateKey::from_pkcs8_pem(pem).ok())
            .ok_or(SigningError::BadKey(
                "not a PEM RSA private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)",
            ))?;
        let size_bits = rsa::traits::PublicKeyParts::size(&key) * 8;
        if !(1024..=8192).contains(&size_bits) {
            return Err(SigningError::BadKey("an RSA key of 1024 to 8192 bits"));
        }
        // One signature now, so signing later cannot fail on a bad key.
        let probe = key
            .pkcs1v15_sign::<sha1::Sha1>(b"tower-cdn key check")
            .map_err(|_| SigningError::BadKey("this RSA key cannot sign"))?;
        key.as_public_key()
            .pkcs1v15_verify::<sha1::Sha1>(b"tower-cdn key check", &probe)
            .map_err(|_| SigningError::BadKey("this RSA key's signatures do not verify"))?;
        Ok(Self {
            inner: Maker::RsaSha1(Box::new(key)),
        })
    }

    /// The algorithm's name: `ed25519`, `hmac-sha256` or `rsa-sha1`.
    pub fn algorithm(&self) -> &'static str {
        match &self.inner {
            Maker::Ed25519(_) => "ed25519",
            Maker::HmacSha256(_) => "hmac-sha256",
            #[cfg(feature = "cloudfront-compat")]
            Maker::RsaSha1(_) => "rsa-sha1",
        }
    }

    /// The matching [`VerifyingKey`]: the public key for Ed25519 and RSA, the same secret for
    /// HMAC.
    pub fn verifying_key(&self) -> VerifyingKey {
        let inner = match &self.inner {
            Maker::Ed25519(key) => Verifier::Ed25519(key.verifying_key()),
            Maker::HmacSha256(keyed) => Verifier::HmacSha256(keyed.clone()),
            #[cfg(feature = "cloudfront-compat")]
            Maker::RsaSha1(key) => Verifier::RsaSha1(Box::new(key.to_public_key())),
        };
        VerifyingKey { inner }
    }

    /// Signs `message`.
    ///
    /// # Panics
    ///
    /// With an RSA key, only if the operating system's random number generator (used for RSA
    /// blinding) fails or the RSA computation detects a hardware fault; the key itself was
    /// checked when it was built.
    pub(super) fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.inner {
            Maker::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(message).to_bytes().to_vec()
            }
            Maker::HmacSha256(keyed) => {
                let mut mac = keyed.clone();
                mac.update(message);
                mac.finalize().into_bytes().to_vec()
            }
            #[cfg(feature = "cloudfront-compat")]
            Maker::RsaSha1(key) => key
                .pkcs1v15_sign::<sha1::Sha1>(message)
                .expect("RSA signing with a key checked at construction"),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// Checks a key id: 1 to [`MAX_KEY_ID_LEN`] characters from `A-Z a-z 0-9 - _ . ~`, so it
/// travels in a query string or cookie without escaping.
pub(super) fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// The keys a behavior trusts, by id (CloudFront's "trusted key group").
///
/// Holding the old and the new key at once lets keys rotate without downtime: sign with the
/// new id, keep the old one until what it signed has expired, then remove it.
///
/// A group remembers the signatures it verified, so a viewer repeating a signed request costs
/// a lookup rather than a signature verification (an Ed25519 verification costs tens of
/// microseconds). Only the signature check is remembered: expiry, `DateGreaterThan`, resource
/// and IP range are checked on every request. The memo is found only by the exact key id,
/// signed bytes and signature bytes (the signature compared in constant time), holds only
/// successes, and is bounded in bytes ([`signature_memo`](Self::signature_memo),
/// [`DEFAULT_SIGNATURE_MEMO_BYTES`](super::DEFAULT_SIGNATURE_MEMO_BYTES) by default). Clones
/// share it; [`insert`](Self::insert) and [`remove`](Self::remove) give the changed group a new,
/// empty one, so nothing verified by a key survives that key's replacement.
#[derive(Clone, Default)]
pub struct KeyGroup {
    keys: Vec<(String, VerifyingKey)>,
    memo: Arc<Memo>,
}

impl KeyGroup {
    /// An empty group (which denies every request as `unknown-key-id`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` under `id`, for chaining.
    pub fn with_key(
        mut self,
        id: impl Into<String>,
        key: VerifyingKey,
    ) -> Result<Self, SigningError> {
        self.insert(id, key)?;
        Ok(self)
    }

    /// Adds `key` under `id`; an id already present or not valid is an error.
    pub fn insert(&mut self, id: impl Into<String>, key: VerifyingKey) -> Result<(), SigningError> {
        let id = id.into();
        if !valid_key_id(&id) {
            return Err(SigningError::BadKeyId(id));
        }
        if self.get(&id).is_some() {
            return Err(SigningError::DuplicateKeyId(id));
        }
        self.keys.push((id, key));
        self.forget_verified();
        Ok(())
    }

    /// Removes and returns the key under `id`.
    pub fn remove(&mut self, id: &str) -> Option<VerifyingKey> {
        let at = self.keys.iter().position(|(k, _)| k == id)?;
        self.forget_verified();
        Some(self.keys.remove(at).1)
    }

    /// Bounds the memo of verified signatures to `bytes` (each entry weighs its key id,
    /// signed message and signature plus a fixed overhead); `0` turns it off, so every request
    /// is verified. Starts the memo empty.
    pub fn signature_memo(mut self, bytes: usize) -> Self {
        self.memo = Arc::new(Memo::new(bytes));
        self
    }

    /// The memo of verified signatures.
    #[cfg(test)]
    pub(super) fn memo(&self) -> &Memo {
        &self.memo
    }

    /// Replaces the memo by an empty one of the same bound, not shared with any clone.
    fn forget_verified(&mut self) {
        self.memo = Arc::new(Memo::new(self.memo.capacity()));
    }

    /// Checks `signature` over `message` with `key`, held under `key_id` in this group (as
    /// [`entry`](Self::entry) returns them): from the memo when these exact bytes verified
    /// before, otherwise with the key, remembering a success.
    pub(super) fn verify(
        &self,
        (key_id, key): (&str, &VerifyingKey),
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), Denied> {
        if self.memo.contains(key_id, message, signature) {
            return Ok(());
        }
        key.verify(message, signature)?;
        self.memo.insert(key_id, message, signature);
        Ok(())
    }

    /// The key under `id`.
    pub fn get(&self, id: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, key)| key)
    }

    /// The key under `id`, with the id as the group holds it.
    pub(super) fn entry(&self, id: &str) -> Option<(&str, &VerifyingKey)> {
        self.keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(k, key)| (k.as_str(), key))
    }

    /// The ids, in insertion order.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// How many keys the group holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the group holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for KeyGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.keys.iter().map(|(id, key)| (id, key.algorithm())))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 32] = [7; 32];

    #[test]
    fn ed25519_sign_verify_and_reject() {
        let signing = SigningKey::ed25519(&SEED).unwrap();
        let verifying = signing.verifying_key();
        let sig = signing.sign(b"hello");
        assert_eq!(sig.len(), 64);
        assert_eq!(verifying.verify(b"hello", &sig), Ok(()));
        assert_eq!(verifying.verify(b"hellO", &sig), Err(Denied::BadSignature));
        assert_eq!(
            verifying.verify(b"hello", &sig[..63]),
            Err(Denied::BadSignature)
        );
        assert_eq!(verifying.verify(b"hello", &[]), Err(Denied::BadSignature));
        // The public bytes round-trip through the public constructor.
        let Verifier::Ed25519(public) = &verifying.inner else {
            unreachable!()
        };
        let rebuilt = VerifyingKey::ed25519(public.as_bytes()).unwrap();
        assert_eq!(rebuilt.verify(b"hello", &sig), Ok(()));
    }

    #[test]
    fn hmac_sign_verify_and_reject() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let signing = SigningKey::hmac_sha256(secret).unwrap();
        let verifying = VerifyingKey::hmac_sha256(secret).unwrap();
        let sig = signing.sign(b"hello");
        assert_eq!(sig.len(), 32);
        assert_eq!(verifying.verify(b"hello", &sig), Ok(()));
        assert_eq!(verifying.verify(b"hellO", &sig), Err(Denied::BadSignature));
        assert_eq!(
            verifying.verify(b"hello", &sig[..16]),
            Err(Denied::BadSignature)
        );
        let other = VerifyingKey::hmac_sha256(b"another secret of enough length").unwrap();
        assert_eq!(other.verify(b"hello", &sig), Err(Denied::BadSignature));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(matches!(
            VerifyingKey::ed25519(&[1; 31]),
            Err(SigningError::BadKey(_))
        ));
        assert!(matches!(
            SigningKey::ed25519(&[1; 33]),
            Err(SigningError::BadKey(_))
        ));
        // The identity point is a small-order key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            VerifyingKey::ed25519(&identity),
            Err(SigningError::BadKey(_))
        ));
        assert_eq!(
            VerifyingKey::hmac_sha256(b"short").unwrap_err(),
            SigningError::WeakSecret
        );
        assert_eq!(
            SigningKey::hmac_sha256(b"").unwrap_err(),
            SigningError::WeakSecret
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = SigningKey::hmac_sha256(b"super-secret-value-1234").unwrap();
        let group = KeyGroup::new().with_key("k1", key.verifying_key()).unwrap();
        let text = format!("{key:?} {:?} {group:?}", key.verifying_key());
        assert!(!text.contains("super"), "{text}");
        assert!(
            text.contains("hmac-sha256") && text.contains("k1"),
            "{text}"
        );
    }

    #[test]
    fn key_group_ids() {
        let key = SigningKey::ed25519(&SEED).unwrap().verifying_key();
        let mut group = KeyGroup::new()
            .with_key("old", key.clone())
            .unwrap()
            .with_key("new", key.clone())
            .unwrap();
        assert_eq!(group.key_ids().collect::<Vec<_>>(), ["old", "new"]);
        assert_eq!(
            group.insert("old", key.clone()),
            Err(SigningError::DuplicateKeyId("old".into()))
        );
        for bad in [
            "",
            "a b",
            "a&b",
            "a=b",
            "a;b",
            "é",
            &"k".repeat(MAX_KEY_ID_LEN + 1),
        ] {
            assert!(matches!(
                group.insert(bad, key.clone()),
                Err(SigningError::BadKeyId(_))
            ));
        }
        assert!(group.insert("K2JCJMDEHXQW5F.v_2~", key).is_ok());
        assert!(group.remove("old").is_some());
        assert!(group.get("old").is_none() && group.get("new").is_some());
        assert_eq!(group.len(), 2);
        assert!(!group.is_empty());
    }
}
