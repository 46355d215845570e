//! The shared tier's binary format: stored objects and `Vary` records as Redis values.
//!
//! Every value starts with the magic `TCDN`, a format version and a kind byte, and ends with
//! a checksum: the xxh3-64 hash of every byte before it. Integers are little-endian; strings
//! and byte runs carry their length first.
//!
//! Decoding reads the magic and the version (they say where the checksum is), then checks the
//! checksum before it parses anything else: a value that was torn, truncated or had any byte
//! changed after it was written is refused as a whole, and is a miss, never another object
//! to serve. The checksum guards against corruption, not against an attacker: xxh3 is fast but
//! not keyed, and anyone who can write to the Redis server can write a value whose checksum
//! matches. Past the checksum, decoding still checks every length against what is left, every
//! field name and value, the status and the times, and returns an error for anything else
//! (another kind, trailing bytes), never a panic: a value that does not decode is a miss.
//! Bodies are slices of the value, not copies.
//!
//! ```text
//! value    = "TCDN" version:u8 kind:u8 (object | vary) checksum:u64
//! checksum = xxh3-64 of every byte of the value before it
//! object   = status:u16 response_time:(secs:u64 nanos:u32) corrected_initial_age:u64
//!            freshness_lifetime:u64 flags:u8 stale_while_revalidate:u64 stale_if_error:u64
//!            coding:u8 host:str32 path:str32 fields body:bytes32
//!            variant_count:u8 (encoding:u8 fields body:bytes32)*
//! fields   = count:u32 (name:bytes16 value:bytes32)*
//! vary     = epoch:u64 count:u16 name:bytes16*
//! flags    = bit 0 no-cache, bit 1 no stale reuse, bit 2 compressible
//! coding   = 0 identity, 1 gzip, 2 br, 3 zstd, 4 opaque (a coding the edge cannot undo)
//! ```
//!
//! Version 1 had no checksum; its values, like those of any other version, are refused as
//! [`DecodeError::Version`].

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{BufMut, Bytes};
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, StatusCode};
use xxhash_rust::xxh3::xxh3_64;

use crate::encoding::Encoding;
use crate::entry::{weigh, Coding, Object, ReuseRules, Variant, VaryRecord};

/// The first bytes of every value.
pub(crate) const MAGIC: [u8; 4] = *b"TCDN";
/// The format version written; values of other versions are misses.
pub(crate) const VERSION: u8 = 2;

/// The bytes before the value proper: the magic, the version and the kind.
const HEAD_LEN: usize = 6;
/// The checksum's length, at the end of every value.
const CHECKSUM_LEN: usize = 8;

const KIND_OBJECT: u8 = 1;
const KIND_VARY: u8 = 2;

const FLAG_NO_CACHE: u8 = 1;
const FLAG_NO_STALE: u8 = 1 << 1;
const FLAG_COMPRESSIBLE: u8 = 1 << 2;

/// A decoded value.
#[derive(Debug)]
pub(crate) enum Decoded {
    Object(Box<Object>),
    Vary(VaryRecord),
}

/// Why a value did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not a value of this format.
    Magic,
    /// Written by another version of the format.
    Version(u8),
    /// An unknown kind of value.
    Kind(u8),
    /// A length runs past the end of the value, or the value is too short to hold a head
    /// and a checksum.
    Truncated,
    /// The checksum does not match the bytes before it: the value is corrupt or torn.
    Checksum,
    /// A field that is not valid.
    Invalid(&'static str),
    /// Bytes left over between the end of the value and its checksum.
    Trailing,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Magic => f.write_str("not a tower-cdn value"),
            DecodeError::Version(v) => write!(f, "format version {v}, expected {VERSION}"),
            DecodeError::Kind(k) => write!(f, "unknown value kind {k}"),
            DecodeError::Truncated => f.write_str("value truncated"),
            DecodeError::Checksum => f.write_str("checksum mismatch: value corrupt or torn"),
            DecodeError::Invalid(what) => write!(f, "invalid {what}"),
            DecodeError::Trailing => {
                f.write_str("bytes between the end of the value and its checksum")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

fn coding_byte(coding: Coding) -> u8 {
    match coding {
        Coding::Identity | Coding::Encoded(Encoding::Identity) => 0,
        Coding::Encoded(Encoding::Gzip) => 1,
        Coding::Encoded(Encoding::Br) => 2,
        Coding::Encoded(Encoding::Zstd) => 3,
        Coding::Opaque => 4,
    }
}

fn encoding_byte(encoding: Encoding) -> u8 {
    match encoding {
        Encoding::Identity => 0,
        Encoding::Gzip => 1,
        Encoding::Br => 2,
        Encoding::Zstd => 3,
    }
}

fn encoding_of(byte: u8) -> Result<Encoding, DecodeError> {
    Ok(match byte {
        0 => Encoding::Identity,
        1 => Encoding::Gzip,
        2 => Encoding::Br,
        3 => Encoding::Zstd,
        _ => return Err(DecodeError::Invalid("encoding")),
    })
}

fn fields_len(headers: &HeaderMap) -> usize {
    4 + headers
        .iter()
        .map(|(k, v)| 6 + k.as_str().len() + v.len())
        .sum::<usize>()
}

fn put_fields(out: &mut Vec<u8>, headers: &HeaderMap) -> Option<()> {
    out.put_u32_le(u32::try_from(headers.len()).ok()?);
    for (name, value) in headers {
        out.put_u16_le(u16::try_from(name.as_str().len()).ok()?);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32_le(u32::try_from(value.len()).ok()?);
        out.put_slice(value.as_bytes());
    }
    Some(())
}

fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    out.put_u32_le(u32::try_from(bytes.len()).ok()?);
    out.put_slice(bytes);
    Some(())
}

fn put_head(out: &mut Vec<u8>, kind: u8) {
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(kind);
}

/// Appends the checksum of everything written so far; the last write of every value.
fn seal(out: &mut Vec<u8>) {
    let sum = xxh3_64(out);
    out.put_u64_le(sum);
}

/// Encodes an object, or `None` when its body is larger than `max_body` bytes (or its
/// response time predates 1970). Other codings are kept only while the body and every
/// coding together stay within `max_body`; a reader makes them again on demand.
pub(crate) fn encode_object(obj: &Object, max_body: usize) -> Option<Vec<u8>> {
    if obj.body.len() > max_body {
        return None;
    }
    let since_epoch = obj.response_time.duration_since(UNIX_EPOCH).ok()?;
    let mut variants = Vec::new();
    let mut total = obj.body.len();
    for v in &obj.variants {
        total += v.body.len();
        if total > max_body || variants.len() == usize::from(u8::MAX) {
            break;
        }
        variants.push(v);
    }
    let len = HEAD_LEN
        + 2
        + 12
        + 16
        + 1
        + 16
        + 1
        + 8
        + obj.host.len()
        + obj.path.len()
        + fields_len(&obj.headers)
        + 4
        + obj.body.len()
        + 1
        + variants
            .iter()
            .map(|v| 5 + fields_len(&v.headers) + v.body.len())
            .sum::<usize>()
        + CHECKSUM_LEN;
    let mut out = Vec::with_capacity(len);
    put_head(&mut out, KIND_OBJECT);
    out.put_u16_le(obj.status.as_u16());
    out.put_u64_le(since_epoch.as_secs());
    out.put_u32_le(since_epoch.subsec_nanos());
    out.put_u64_le(obj.corrected_initial_age);
    out.put_u64_le(obj.freshness_lifetime);
    let mut flags = 0;
    if obj.rules.no_cache {
        flags |= FLAG_NO_CACHE;
    }
    if obj.rules.no_stale {
        flags |= FLAG_NO_STALE;
    }
    if obj.compressible {
        flags |= FLAG_COMPRESSIBLE;
    }
    out.put_u8(flags);
    out.put_u64_le(obj.rules.stale_while_revalidate);
    out.put_u64_le(obj.rules.stale_if_error);
    out.put_u8(coding_byte(obj.coding));
    put_bytes32(&mut out, obj.host.as_bytes())?;
    put_bytes32(&mut out, obj.path.as_bytes())?;
    put_fields(&mut out, &obj.headers)?;
    put_bytes32(&mut out, &obj.body)?;
    out.put_u8(variants.len() as u8);
    for v in variants {
        out.put_u8(encoding_byte(v.encoding));
        put_fields(&mut out, &v.headers)?;
        put_bytes32(&mut out, &v.body)?;
    }
    seal(&mut out);
    debug_assert_eq!(out.len(), len);
    Some(out)
}

/// Encodes a `Vary` record.
pub(crate) fn encode_vary(record: &VaryRecord) -> Vec<u8> {
    let names: usize = record.names.iter().map(|n| 2 + n.as_str().len()).sum();
    let mut out = Vec::with_capacity(HEAD_LEN + 8 + 2 + names + CHECKSUM_LEN);
    put_head(&mut out, KIND_VARY);
    out.put_u64_le(record.epoch);
    // A response's `Vary` is bounded far below this by the header size limits.
    let count = record.names.len().min(usize::from(u16::MAX));
    out.put_u16_le(count as u16);
    for name in &record.names[..count] {
        let name = name.as_str().as_bytes();
        let len = name.len().min(usize::from(u16::MAX));
        out.put_u16_le(len as u16);
        out.put_slice(&name[..len]);
    }
    seal(&mut out);
    out
}

/// Decodes a value. Bodies are slices of `value`, not copies.
///
/// The magic and the version are read first; then the checksum is checked against every byte
/// before it, and only a value whose checksum matches is parsed further.
pub(crate) fn decode(value: Bytes) -> Result<Decoded, DecodeError> {
    if value.get(..MAGIC.len()).ok_or(DecodeError::Truncated)? != MAGIC {
        return Err(DecodeError::Magic);
    }
    match *value.get(MAGIC.len()).ok_or(DecodeError::Truncated)? {
        VERSION => {}
        other => return Err(DecodeError::Version(other)),
    }
    let end = value
        .len()
        .checked_sub(CHECKSUM_LEN)
        .filter(|&end| end >= HEAD_LEN)
        .ok_or(DecodeError::Truncated)?;
    let (sealed, sum) = value.split_at(end);
    let sum = u64::from_le_bytes(sum.try_into().map_err(|_| DecodeError::Truncated)?);
    if xxh3_64(sealed) != sum {
        return Err(DecodeError::Checksum);
    }
    // A slice shares `value`'s buffer: bodies cut from it are still slices of `value`.
    let mut r = Reader {
        buf: value.slice(..end),
        // The kind, after the magic and the version.
        pos: MAGIC.len() + 1,
    };
    let decoded = match r.u8()? {
        KIND_OBJECT => Decoded::Object(Box::new(r.object()?)),
        KIND_VARY => Decoded::Vary(r.vary()?),
        other => return Err(DecodeError::Kind(other)),
    };
    if r.pos != r.buf.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(decoded)
}

/// A cursor over a value; every read is checked against what is left.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    fn bytes32(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        let start = self.pos;
        self.take(len)?;
        Ok(self.buf.slice(start..start + len))
    }

    fn str32(&mut self, what: &'static str) -> Result<Box<str>, DecodeError> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?)
            .map(Box::from)
            .map_err(|_| DecodeError::Invalid(what))
    }

    fn name(&mut self) -> Result<HeaderName, DecodeError> {
        let len = usize::from(self.u16()?);
        HeaderName::from_bytes(self.take(len)?).map_err(|_| DecodeError::Invalid("field name"))
    }

    fn fields(&mut self) -> Result<HeaderMap, DecodeError> {
        let count = self.u32()?;
        let mut headers = HeaderMap::new();
        for _ in 0..count {
            let name = self.name()?;
            let len = self.u32()? as usize;
            let value = HeaderValue::from_bytes(self.take(len)?)
                .map_err(|_| DecodeError::Invalid("field value"))?;
            headers
                .try_append(name, value)
                .map_err(|_| DecodeError::Invalid("field count"))?;
        }
        Ok(headers)
    }

    fn object(&mut self) -> Result<Object, DecodeError> {
        let status =
            StatusCode::from_u16(self.u16()?).map_err(|_| DecodeError::Invalid("status"))?;
        let (secs, nanos) = (self.u64()?, self.u32()?);
        if nanos >= 1_000_000_000 {
            return Err(DecodeError::Invalid("response time"));
        }
        let response_time = UNIX_EPOCH
            .checked_add(Duration::new(secs, nanos))
            .ok_or(DecodeError::Invalid("response time"))?;
        let corrected_initial_age = self.u64()?;
        let freshness_lifetime = self.u64()?;
        let flags = self.u8()?;
        if flags & !(FLAG_NO_CACHE | FLAG_NO_STALE | FLAG_COMPRESSIBLE) != 0 {
            return Err(DecodeError::Invalid("flags"));
        }
        let rules = ReuseRules {
            no_cache: flags & FLAG_NO_CACHE != 0,
            no_stale: flags & FLAG_NO_STALE != 0,
            stale_while_revalidate: self.u64()?,
            stale_if_error: self.u64()?,
        };
        let coding = match self.u8()? {
            4 => Coding::Opaque,
            b => match encoding_of(b)? {
                Encoding::Identity => Coding::Identity,
                e => Coding::Encoded(e),
            },
        };
        let host = self.str32("host")?;
        let path = self.str32("path")?;
        let headers = self.fields()?;
        let body = self.bytes32()?;
        let mut weight = weigh(&headers, &body, host.len() + path.len());
        let count = self.u8()?;
        let mut variants = Vec::new();
        for _ in 0..count {
            let encoding = encoding_of(self.u8()?)?;
            let headers = self.fields()?;
            let body = self.bytes32()?;
            weight += weigh(&headers, &body, 0);
            variants.push(Variant {
                encoding,
                headers,
                body,
            });
        }
        Ok(Object {
            status,
            // Tags travel in their own fields, which the object keeps.
            tags: crate::purge::tags_of(&headers),
            headers,
            body,
            response_time,
            corrected_initial_age,
            freshness_lifetime,
            rules,
            host,
            path,
            coding,
            compressible: flags & FLAG_COMPRESSIBLE != 0,
            variants,
            weight,
        })
    }

    fn vary(&mut self) -> Result<VaryRecord, DecodeError> {
        let epoch = self.u64()?;
        let count = self.u16()?;
        let mut names = Vec::new();
        for _ in 0..count {
            names.push(self.name()?);
        }
        if names.is_empty() {
            return Err(DecodeError::Invalid("vary record without names"));
        }
        Ok(VaryRecord { names, epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn object() -> Object {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        headers.append("set-thing", HeaderValue::from_static("a"));
        headers.append("set-thing", HeaderValue::from_static("b"));
        headers.insert("etag", HeaderValue::from_static("\"v1\""));
        let body = Bytes::from_static(b"hello, shared tier");
        let mut variant_headers = headers.clone();
        variant_headers.insert("content-encoding", HeaderValue::from_static("gzip"));
        let variant = Variant {
            encoding: Encoding::Gzip,
            headers: variant_headers,
            body: Bytes::from_static(b"\x1f\x8bnot really gzip"),
        };
        let weight = weigh(&headers, &body, 13) + weigh(&variant.headers, &variant.body, 0);
        Object {
            status: StatusCode::OK,
            tags: Default::default(),
            headers,
            body,
            response_time: UNIX_EPOCH + Duration::new(1_767_225_600, 123_456_789),
            corrected_initial_age: 5,
            freshness_lifetime: 60,
            rules: ReuseRules {
                no_cache: false,
                no_stale: true,
                stale_while_revalidate: 30,
                stale_if_error: 300,
            },
            host: "example.com".into(),
            path: "/a".into(),
            coding: Coding::Identity,
            compressible: true,
            variants: vec![variant],
            weight,
        }
    }

    fn decode_object(bytes: Vec<u8>) -> Object {
        match decode(Bytes::from(bytes)) {
            Ok(Decoded::Object(obj)) => *obj,
            other => panic!("expected an object, got {other:?}"),
        }
    }

    fn assert_same(a: &Object, b: &Object) {
        assert_eq!(a.status, b.status);
        assert_eq!(a.headers, b.headers);
        assert_eq!(a.body, b.body);
        assert_eq!(a.response_time, b.response_time);
        assert_eq!(a.corrected_initial_age, b.corrected_initial_age);
        assert_eq!(a.freshness_lifetime, b.freshness_lifetime);
        assert_eq!(a.rules, b.rules);
        assert_eq!(a.host, b.host);
        assert_eq!(a.path, b.path);
        assert_eq!(a.coding, b.coding);
        assert_eq!(a.compressible, b.compressible);
        assert_eq!(a.weight, b.weight);
        assert_eq!(a.variants.len(), b.variants.len());
        for (x, y) in a.variants.iter().zip(&b.variants) {
            assert_eq!(x.encoding, y.encoding);
            assert_eq!(x.headers, y.headers);
            assert_eq!(x.body, y.body);
        }
    }

    #[test]
    fn object_round_trips() {
        let obj = object();
        let decoded = decode_object(encode_object(&obj, 1 << 20).unwrap());
        assert_same(&obj, &decoded);
        // Multi-valued fields keep their order.
        let values: Vec<_> = decoded.headers.get_all("set-thing").iter().collect();
        assert_eq!(values, ["a", "b"]);
    }

    #[test]
    fn every_coding_round_trips() {
        for coding in [
            Coding::Identity,
            Coding::Encoded(Encoding::Gzip),
            Coding::Encoded(Encoding::Br),
            Coding::Encoded(Encoding::Zstd),
            Coding::Opaque,
        ] {
            let obj = Object {
                coding,
                compressible: false,
                variants: Vec::new(),
                status: StatusCode::NOT_FOUND,
                ..object()
            };
            let decoded = decode_object(encode_object(&obj, 1 << 20).unwrap());
            assert_eq!(decoded.coding, coding);
            assert_eq!(decoded.status, StatusCode::NOT_FOUND);
            assert!(!decoded.compressible);
        }
    }

    #[test]
    fn vary_record_round_trips() {
        let record = VaryRecord {
            names: vec![
                HeaderName::from_static("accept-language"),
                HeaderName::from_static("x-device"),
            ],
            epoch: 0xdead_beef_0000_0001,
        };
        match decode(Bytes::from(encode_vary(&record))) {
            Ok(Decoded::Vary(r)) => {
                assert_eq!(r.names, record.names);
                assert_eq!(r.epoch, record.epoch);
            }
            other => panic!("expected a record, got {other:?}"),
        }
    }

    #[test]
    fn bodies_over_the_bound_are_not_encoded_and_codings_are_dropped_first() {
        let obj = object();
        assert!(encode_object(&obj, obj.body.len() - 1).is_none());
        // Room for the body but not for the gzip coding: the object goes without it.
        let decoded = decode_object(encode_object(&obj, obj.body.len()).unwrap());
        assert!(decoded.variants.is_empty());
        assert_eq!(decoded.body, obj.body);
        assert_eq!(decoded.weight, weigh(&obj.headers, &obj.body, 13));
    }

    /// `bytes` with the checksum of all of them appended.
    fn sealed(mut bytes: Vec<u8>) -> Vec<u8> {
        seal(&mut bytes);
        bytes
    }

    /// A value edited by a test, with its checksum made again over the edited bytes, so the
    /// value reaches the check the test is about instead of being refused as corrupt.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        sealed(bytes)
    }

    fn decode_err(bytes: Vec<u8>) -> DecodeError {
        decode(Bytes::from(bytes)).unwrap_err()
    }

    /// The error a value with one byte changed at `at` (and its checksum left as written) is
    /// refused with: the magic and the version are read before the checksum, everything else
    /// is covered by it.
    fn refusal_of_a_change_at(at: usize, changed: &[u8]) -> DecodeError {
        match at {
            0..4 => DecodeError::Magic,
            4 => DecodeError::Version(changed[4]),
            _ => DecodeError::Checksum,
        }
    }

    #[test]
    fn other_versions_kinds_and_magics_are_refused() {
        let bytes = encode_object(&object(), 1 << 20).unwrap();
        // Another version is refused before its checksum is looked at, whatever it holds.
        let mut other = bytes.clone();
        other[4] = VERSION + 1;
        assert_eq!(decode_err(other.clone()), DecodeError::Version(VERSION + 1));
        assert_eq!(decode_err(reseal(other)), DecodeError::Version(VERSION + 1));
        // A value of version 1 (the same fields, no checksum), and the value
        // tests/shared_tier.rs plants in Redis.
        let mut v1 = bytes[..bytes.len() - CHECKSUM_LEN].to_vec();
        v1[4] = 1;
        assert_eq!(decode_err(v1), DecodeError::Version(1));
        assert_eq!(
            decode(Bytes::from_static(b"TCDN\x01\x01 not an object")).unwrap_err(),
            DecodeError::Version(1)
        );
        // An unknown kind: the checksum no longer matches; sealed again, the kind is refused.
        let mut kind = bytes.clone();
        kind[5] = 9;
        assert_eq!(decode_err(kind.clone()), DecodeError::Checksum);
        assert_eq!(decode_err(reseal(kind)), DecodeError::Kind(9));
        let mut magic = bytes;
        magic[0] = b'X';
        assert_eq!(decode_err(reseal(magic)), DecodeError::Magic);
        assert_eq!(
            decode(Bytes::from_static(b"")).unwrap_err(),
            DecodeError::Truncated
        );
        // Too short to hold a head and a checksum.
        assert_eq!(decode_err(b"TCDN\x02\x01".to_vec()), DecodeError::Truncated);
        assert_eq!(
            decode_err(sealed(b"TCDN\x02".to_vec())),
            DecodeError::Truncated
        );
    }

    // A torn or corrupt value is never served: any change the checksum covers is refused
    // before the value is parsed.
    #[test]
    fn corrupt_and_torn_values_are_refused_by_the_checksum() {
        let obj = object();
        let bytes = encode_object(&obj, 1 << 20).unwrap();
        let at = bytes
            .windows(obj.body.len())
            .position(|w| w == &obj.body[..])
            .unwrap();
        let mut body = bytes.clone();
        body[at] = b'j';
        assert_eq!(decode_err(body), DecodeError::Checksum);
        // The checksum itself changed.
        let mut sum = bytes.clone();
        *sum.last_mut().unwrap() ^= 0x80;
        assert_eq!(decode_err(sum), DecodeError::Checksum);
        // A value torn between two writes of the same length: the head of one, the tail of
        // the other.
        let other = Object {
            body: Bytes::from_static(b"HELLO, SHARED TIER"),
            ..object()
        };
        let other = encode_object(&other, 1 << 20).unwrap();
        assert_eq!(other.len(), bytes.len());
        let mut torn = bytes[..at + 4].to_vec();
        torn.extend_from_slice(&other[at + 4..]);
        assert_eq!(decode_err(torn), DecodeError::Checksum);
        // A flip in a `Vary` record's names or epoch.
        let record = encode_vary(&VaryRecord {
            names: vec![HeaderName::from_static("accept-language")],
            epoch: 3,
        });
        for at in HEAD_LEN..record.len() {
            let mut flipped = record.clone();
            flipped[at] ^= 0x20;
            assert_eq!(decode_err(flipped), DecodeError::Checksum, "at {at}");
        }
    }

    // Decoding copies no body: the body and every coding's body are slices of the value.
    #[test]
    fn bodies_are_slices_of_the_value() {
        let value = Bytes::from(encode_object(&object(), 1 << 20).unwrap());
        let range = value.as_ptr_range();
        let Ok(Decoded::Object(obj)) = decode(value.clone()) else {
            panic!("expected an object");
        };
        assert_eq!(obj.variants.len(), 1);
        for body in std::iter::once(&obj.body).chain(obj.variants.iter().map(|v| &v.body)) {
            assert!(!body.is_empty());
            let body = body.as_ptr_range();
            assert!(range.start <= body.start && body.end <= range.end);
        }
    }

    #[test]
    fn truncated_and_padded_values_are_refused() {
        let bytes = encode_object(&object(), 1 << 20).unwrap();
        for len in 0..bytes.len() {
            assert!(
                decode(Bytes::copy_from_slice(&bytes[..len])).is_err(),
                "a value cut at {len} bytes decoded"
            );
        }
        // Cut values whose checksum matches still end too early for the parser.
        let unsealed = &bytes[..bytes.len() - CHECKSUM_LEN];
        for len in HEAD_LEN..unsealed.len() {
            assert_eq!(
                decode_err(sealed(unsealed[..len].to_vec())),
                DecodeError::Truncated,
                "a sealed value cut at {len} bytes"
            );
        }
        // A byte after the checksum moves where the checksum is read from.
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(decode_err(padded), DecodeError::Checksum);
        // A byte after the value and before its checksum, sealed: trailing bytes.
        let mut padded = unsealed.to_vec();
        padded.push(0);
        assert_eq!(decode_err(sealed(padded)), DecodeError::Trailing);
    }

    #[test]
    fn invalid_fields_are_refused() {
        let obj = object();
        let bytes = encode_object(&obj, 1 << 20).unwrap();
        // The status: 6 bytes of head, then the u16.
        let mut bad = bytes.clone();
        bad[6..8].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(decode_err(bad.clone()), DecodeError::Checksum);
        assert_eq!(decode_err(reseal(bad)), DecodeError::Invalid("status"));
        // Nanoseconds past a second.
        let mut bad = bytes.clone();
        bad[16..20].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert_eq!(
            decode_err(reseal(bad)),
            DecodeError::Invalid("response time")
        );
        // A field value with a newline in it.
        let at = bytes.windows(4).position(|w| w == b"\"v1\"").unwrap();
        let mut bad = bytes;
        bad[at] = b'\n';
        assert_eq!(decode_err(reseal(bad)), DecodeError::Invalid("field value"));
    }

    #[test]
    fn huge_counts_fail_without_allocating() {
        let mut bytes = Vec::new();
        put_head(&mut bytes, KIND_VARY);
        bytes.put_u64_le(1);
        bytes.put_u16_le(u16::MAX);
        assert_eq!(decode_err(sealed(bytes)), DecodeError::Truncated);
    }

    // A `Vary` record is written only for a response that names fields (RFC 9110 §12.5.5);
    // one with none is not a value this format writes, and is refused.
    #[test]
    fn vary_record_without_names_is_refused() {
        let mut bytes = Vec::new();
        put_head(&mut bytes, KIND_VARY);
        bytes.put_u64_le(7);
        bytes.put_u16_le(0);
        assert_eq!(
            decode_err(sealed(bytes)),
            DecodeError::Invalid("vary record without names")
        );
    }

    /// An arbitrary header map: a few well-known and arbitrary names (repeated now and then,
    /// so multi-line fields occur) with arbitrary visible-ASCII or obs-text values.
    fn arb_headers() -> impl Strategy<Value = HeaderMap> {
        let name = prop_oneof![
            Just("cache-control".to_owned()),
            Just("etag".to_owned()),
            Just("vary".to_owned()),
            Just("surrogate-key".to_owned()),
            Just("set-thing".to_owned()),
            "[a-z0-9!#$%&'*+.^_`|~-]{1,12}",
        ];
        let value = proptest::collection::vec(
            prop_oneof![0x20_u8..0x7f, Just(b'\t'), 0x80_u8..=0xff],
            0..24,
        );
        proptest::collection::vec((name, value), 0..8).prop_map(|fields| {
            let mut headers = HeaderMap::new();
            for (name, value) in fields {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(&value),
                ) {
                    headers.append(name, value);
                }
            }
            headers
        })
    }

    fn arb_encoding() -> impl Strategy<Value = Encoding> {
        prop_oneof![
            Just(Encoding::Identity),
            Just(Encoding::Gzip),
            Just(Encoding::Br),
            Just(Encoding::Zstd),
        ]
    }

    fn arb_variant() -> impl Strategy<Value = Variant> {
        (
            arb_encoding(),
            arb_headers(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(encoding, headers, body)| Variant {
                encoding,
                headers,
                body: Bytes::from(body),
            })
    }

    /// An arbitrary object as the store holds one: the weight and tags are what the store
    /// computes from the rest.
    fn arb_object() -> impl Strategy<Value = Object> {
        let coding = prop_oneof![
            Just(Coding::Identity),
            Just(Coding::Encoded(Encoding::Gzip)),
            Just(Coding::Encoded(Encoding::Br)),
            Just(Coding::Encoded(Encoding::Zstd)),
            Just(Coding::Opaque),
        ];
        let rules = (any::<bool>(), any::<bool>(), any::<u64>(), any::<u64>()).prop_map(
            |(no_cache, no_stale, stale_while_revalidate, stale_if_error)| ReuseRules {
                no_cache,
                no_stale,
                stale_while_revalidate,
                stale_if_error,
            },
        );
        (
            (
                100_u16..1000,
                arb_headers(),
                proptest::collection::vec(any::<u8>(), 0..128),
            ),
            (
                0_u64..(1 << 40),
                0_u32..1_000_000_000,
                any::<u64>(),
                any::<u64>(),
            ),
            (
                rules,
                any::<String>(),
                any::<String>(),
                coding,
                any::<bool>(),
            ),
            proptest::collection::vec(arb_variant(), 0..3),
        )
            .prop_map(
                |(
                    (status, headers, body),
                    (secs, nanos, corrected_initial_age, freshness_lifetime),
                    (rules, host, path, coding, compressible),
                    variants,
                )| {
                    let body = Bytes::from(body);
                    let weight = weigh(&headers, &body, host.len() + path.len())
                        + variants
                            .iter()
                            .map(|v| weigh(&v.headers, &v.body, 0))
                            .sum::<u64>();
                    Object {
                        status: StatusCode::from_u16(status).unwrap(),
                        tags: crate::purge::tags_of(&headers),
                        headers,
                        body,
                        response_time: UNIX_EPOCH + Duration::new(secs, nanos),
                        corrected_initial_age,
                        freshness_lifetime,
                        rules,
                        host: host.into(),
                        path: path.into(),
                        coding,
                        compressible,
                        variants,
                        weight,
                    }
                },
            )
    }

    fn arb_vary() -> impl Strategy<Value = VaryRecord> {
        (
            proptest::collection::vec("[a-z0-9-]{1,16}", 1..6),
            any::<u64>(),
        )
            .prop_map(|(names, epoch)| VaryRecord {
                names: names
                    .iter()
                    .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
                    .collect(),
                epoch,
            })
    }

    /// The parts of `b` that differ from `a`.
    fn differences(a: &Object, b: &Object) -> Vec<&'static str> {
        let variants = |o: &Object| -> Vec<(Encoding, HeaderMap, Bytes)> {
            o.variants
                .iter()
                .map(|v| (v.encoding, v.headers.clone(), v.body.clone()))
                .collect()
        };
        [
            ("status", a.status != b.status),
            ("headers", a.headers != b.headers),
            ("body", a.body != b.body),
            ("response time", a.response_time != b.response_time),
            (
                "corrected initial age",
                a.corrected_initial_age != b.corrected_initial_age,
            ),
            (
                "freshness lifetime",
                a.freshness_lifetime != b.freshness_lifetime,
            ),
            ("rules", a.rules != b.rules),
            ("host", a.host != b.host),
            ("path", a.path != b.path),
            ("coding", a.coding != b.coding),
            ("compressible", a.compressible != b.compressible),
            ("variants", variants(a) != variants(b)),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }

    /// Decodes `bytes`; if they decode, checks that encoding and decoding again gives the same
    /// object (decoding yields one normal form, whatever bytes it accepted).
    fn decode_stably(bytes: &[u8]) -> Result<Option<Object>, TestCaseError> {
        match decode(Bytes::copy_from_slice(bytes)) {
            Ok(Decoded::Object(obj)) => {
                let again = decode_object(encode_object(&obj, usize::MAX).unwrap());
                prop_assert!(differences(&obj, &again).is_empty());
                prop_assert_eq!(&obj.tags, &again.tags);
                prop_assert_eq!(obj.weight, again.weight);
                Ok(Some(*obj))
            }
            Ok(Decoded::Vary(record)) => {
                match decode(Bytes::from(encode_vary(&record))) {
                    Ok(Decoded::Vary(again)) => {
                        prop_assert_eq!(&again.names, &record.names);
                        prop_assert_eq!(again.epoch, record.epoch);
                    }
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                }
                Ok(None)
            }
            Err(_) => Ok(None),
        }
    }

    // Every single-bit flip anywhere in a value is refused: in the magic or the version by
    // those checks, anywhere else (the kind, a number, a field, the host, path or a body, the
    // checksum itself) by the checksum.
    #[test]
    fn every_bit_flip_is_refused() {
        let record = VaryRecord {
            names: vec![
                HeaderName::from_static("accept-language"),
                HeaderName::from_static("x-device"),
            ],
            epoch: 0xdead_beef_0000_0001,
        };
        for bytes in [
            encode_object(&object(), 1 << 20).unwrap(),
            encode_vary(&record),
        ] {
            for at in 0..bytes.len() {
                for bit in 0..8 {
                    let mut flipped = bytes.clone();
                    flipped[at] ^= 1 << bit;
                    let expected = refusal_of_a_change_at(at, &flipped);
                    assert_eq!(
                        decode(Bytes::from(flipped)).err(),
                        Some(expected),
                        "flip at {at}.{bit}"
                    );
                }
            }
        }
    }

    // Behind a matching checksum (a value sealed again after the flip, as a faulty writer
    // would), every single-bit flip is refused, or decodes to an object that differs from the
    // original in at most the one part the flipped byte belongs to (a flip of a field name's
    // case decodes to the same object: names are case-insensitive). A flip in the magic,
    // version or kind is always refused.
    #[test]
    fn every_resealed_bit_flip_is_refused_or_touches_one_part() {
        let obj = object();
        let bytes = encode_object(&obj, 1 << 20).unwrap();
        let mut decoded = 0;
        for at in 0..bytes.len() - CHECKSUM_LEN {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[at] ^= 1 << bit;
                let Some(other) = decode_stably(&reseal(flipped)).unwrap() else {
                    continue;
                };
                decoded += 1;
                assert!(at >= HEAD_LEN, "a flip in the head at {at} decoded");
                let differs = differences(&obj, &other);
                assert!(differs.len() <= 1, "flip at {at}.{bit} changed {differs:?}");
            }
        }
        // Flips inside the body, values and numbers parse: only the checksum refuses them.
        assert!(decoded > 0);
    }

    // Format version 1 carried no checksum, so a flipped byte inside a body, a field value,
    // the host or path, or a number decoded to another valid object (a corrupted Redis value
    // was served). The property asked of the shared tier is that it never does.
    #[test]
    fn a_flipped_body_byte_never_decodes_to_another_object() {
        let obj = object();
        let bytes = encode_object(&obj, 1 << 20).unwrap();
        let at = bytes
            .windows(obj.body.len())
            .position(|w| w == &obj.body[..])
            .unwrap();
        let mut flipped = bytes;
        flipped[at] ^= 1;
        assert_eq!(
            decode(Bytes::from(flipped)).err(),
            Some(DecodeError::Checksum),
            "a value with a flipped body byte decoded"
        );
    }

    proptest! {
        // `decode(encode(obj))` gives back every field of an arbitrary object, the tags the
        // store derives from its fields, and its weight.
        #[test]
        fn arbitrary_objects_round_trip(obj in arb_object()) {
            let bytes = encode_object(&obj, usize::MAX).unwrap();
            let decoded = decode_object(bytes.clone());
            assert_same(&obj, &decoded);
            prop_assert_eq!(&decoded.tags, &obj.tags);
            // The encoding is canonical: encoding the decoded object gives the same bytes.
            prop_assert_eq!(encode_object(&decoded, usize::MAX).unwrap(), bytes);
        }

        #[test]
        fn arbitrary_vary_records_round_trip(record in arb_vary()) {
            let bytes = encode_vary(&record);
            match decode(Bytes::from(bytes.clone())) {
                Ok(Decoded::Vary(r)) => {
                    prop_assert_eq!(&r.names, &record.names);
                    prop_assert_eq!(r.epoch, record.epoch);
                }
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            }
        }

        // Every strict prefix of a value is refused, and so is a value with bytes after it:
        // after the checksum (the checksum no longer matches) or, sealed again, between the
        // value and its checksum (trailing bytes).
        #[test]
        fn truncated_or_padded_values_are_errors(
            obj in arb_object(),
            record in arb_vary(),
            pad in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            for bytes in [encode_object(&obj, usize::MAX).unwrap(), encode_vary(&record)] {
                for len in 0..bytes.len() {
                    prop_assert!(
                        decode(Bytes::copy_from_slice(&bytes[..len])).is_err(),
                        "a value cut at {} of {} bytes decoded", len, bytes.len()
                    );
                }
                let mut padded = bytes.clone();
                padded.extend_from_slice(&pad);
                prop_assert_eq!(decode_err(padded), DecodeError::Checksum);
                let mut padded = bytes[..bytes.len() - CHECKSUM_LEN].to_vec();
                padded.extend_from_slice(&pad);
                prop_assert_eq!(decode_err(sealed(padded)), DecodeError::Trailing);
            }
        }

        // A single-bit flip anywhere in an arbitrary object or `Vary` record is refused (the
        // checksum covers all but the magic and version, which are checked on their own).
        // Sealed again after the flip, it never panics, whatever decodes has one normal form
        // (decode, encode, decode gives the same object), and a flip in the head is refused.
        #[test]
        fn flipped_bits_anywhere_are_refused(
            obj in arb_object(),
            record in arb_vary(),
            at in any::<prop::sample::Index>(),
            bit in 0..8_u8,
        ) {
            for bytes in [encode_object(&obj, usize::MAX).unwrap(), encode_vary(&record)] {
                let at = at.index(bytes.len());
                let mut flipped = bytes.clone();
                flipped[at] ^= 1 << bit;
                let expected = refusal_of_a_change_at(at, &flipped);
                prop_assert_eq!(decode(Bytes::copy_from_slice(&flipped)).err(), Some(expected));
                if at < bytes.len() - CHECKSUM_LEN {
                    let resealed = reseal(flipped);
                    let decodes = decode(Bytes::copy_from_slice(&resealed)).is_ok();
                    decode_stably(&resealed)?;
                    prop_assert!(at >= HEAD_LEN || !decodes, "a flip in the head at {} decoded", at);
                }
            }
        }

        // Arbitrary bytes never panic, sealed or not; without the magic nothing decodes, and
        // with the magic and version but no matching checksum nothing does either.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut value = MAGIC.to_vec();
            value.push(VERSION);
            value.extend_from_slice(&bytes);
            decode_stably(&value)?;
            decode_stably(&sealed(value.clone()))?;
            decode_stably(&bytes)?;
            // Without the magic, nothing decodes.
            if !bytes.starts_with(&MAGIC) {
                prop_assert!(decode(Bytes::from(bytes)).is_err());
            }
            if value.len() >= HEAD_LEN + CHECKSUM_LEN {
                let (sealed, sum) = value.split_at(value.len() - CHECKSUM_LEN);
                if xxh3_64(sealed).to_le_bytes() != sum {
                    prop_assert_eq!(decode_err(value), DecodeError::Checksum);
                }
            }
        }

        // A byte set to any other value is refused; sealed again, it never panics and decodes,
        // if at all, to an object that differs in at most one part.
        #[test]
        fn changed_bytes_are_refused(at in any::<prop::sample::Index>(), to in any::<u8>()) {
            let original = object();
            let bytes = encode_object(&original, 1 << 20).unwrap();
            let at = at.index(bytes.len());
            let mut changed = bytes.clone();
            changed[at] = to;
            if changed == bytes {
                prop_assert!(decode(Bytes::from(changed)).is_ok());
                return Ok(());
            }
            let expected = refusal_of_a_change_at(at, &changed);
            prop_assert_eq!(decode(Bytes::copy_from_slice(&changed)).err(), Some(expected));
            if at < bytes.len() - CHECKSUM_LEN {
                if let Some(other) = decode_stably(&reseal(changed))? {
                    let differs = differences(&original, &other);
                    prop_assert!(differs.len() <= 1, "changed {:?}", differs);
                }
            }
        }
    }
}
