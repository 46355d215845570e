//! Byte-range requests answered from a stored full body (RFC 9110 §14, §13.1.5, §15.3.7).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;

/// Most range-specs one `Range` field may carry before it is ignored (answered with a full 200).
///
/// RFC 9110 §14.2 lets a server ignore "a set of many small ranges" as a sign of a broken
/// client or a denial-of-service attempt (§17.15); this bound also keeps parsing and the
/// multipart response (one header block per part) small and allocation-free until `Multi`.
pub(crate) const MAX_RANGES: usize = 16;

/// Longest multipart boundary RFC 2046 §5.1.1 permits.
const MAX_BOUNDARY_LEN: usize = 70;

/// What to send for a `Range` request against a stored representation of known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeOutcome {
    /// Ignore the `Range` field and send the whole representation (200).
    Full,
    /// One range: a 206 with `Content-Range` (RFC 9110 §15.3.7.1).
    Single(Range<u64>),
    /// Two or more disjoint ranges, in request order: a 206 `multipart/byteranges` (§15.3.7.2).
    Multi(Vec<Range<u64>>),
    /// No range-spec overlaps the representation: 416 with `Content-Range: bytes */len`
    /// (§14.1.1, §15.5.17).
    Unsatisfiable,
}

/// One parsed `range-spec` of the `bytes` unit (RFC 9110 §14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `int-range`: `first-pos "-" [ last-pos ]`.
    Int { first: u64, last: Option<u64> },
    /// `suffix-range`: `"-" suffix-length`.
    Suffix(u64),
}

/// Decides how to answer `Range: <range>` from a stored body of `len` bytes.
///
/// Only the `bytes` unit is understood. The returned ranges are half-open and lie inside
/// `0..len`. Callers evaluate `If-Range` first ([`if_range_allows_partial`]) and only call this
/// for GET (RFC 9110 §14.2: a server MUST ignore `Range` for other methods).
pub(crate) fn evaluate(range: &HeaderValue, len: u64) -> RangeOutcome {
    let mut specs = [Spec::Suffix(0); MAX_RANGES];
    // An unknown unit or a syntax error means the field is ignored (RFC 9110 §14.2: an origin
    // MUST ignore a unit it does not understand and MAY ignore an invalid ranges-specifier).
    let Some(count) = parse(range.as_bytes(), &mut specs) else {
        return RangeOutcome::Full;
    };
    let specs = &specs[..count];

    if len == 0 {
        // RFC 9110 §14.1.2: "When a selected representation has zero length, the only
        // satisfiable form of range-spec in a GET request is a suffix-range with a non-zero
        // suffix-length." A 206 could not describe the empty selection (§14.4 has no empty
        // incl-range), so take §14.2's permission to ignore Range for a representation with no
        // content and send the (empty) 200. Every other spec is unsatisfiable: 416.
        let satisfiable = specs.iter().any(|s| matches!(s, Spec::Suffix(n) if *n > 0));
        return if satisfiable {
            RangeOutcome::Full
        } else {
            RangeOutcome::Unsatisfiable
        };
    }

    // Resolve each spec to a half-open range, dropping the unsatisfiable ones (§15.3.7.2:
    // parts are sent "excluding those ranges that were deemed unsatisfiable").
    let mut ranges = [(0_u64, 0_u64); MAX_RANGES];
    let mut n = 0;
    for spec in specs {
        if let Some(r) = resolve(*spec, len) {
            ranges[n] = r;
            n += 1;
        }
    }
    let ranges = &ranges[..n];

    match ranges {
        // §14.1.1 / §15.5.17: none of the range-specs is satisfiable.
        [] => RangeOutcome::Unsatisfiable,
        [(start, end)] => RangeOutcome::Single(*start..*end),
        _ => multi(ranges),
    }
}

/// Checks and coalesces two or more satisfiable ranges (request order kept).
fn multi(ranges: &[(u64, u64)]) -> RangeOutcome {
    let mut sorted = [(0_u64, 0_u64); MAX_RANGES];
    let sorted = &mut sorted[..ranges.len()];
    sorted.copy_from_slice(ranges);
    sorted.sort_unstable();

    // Overlapping ranges re-send the same bytes, which is how range requests amplify load
    // (§17.15); §14.2 lets a server ignore such a set, and we do. Once the ranges are
    // disjoint and inside `0..len` their total cannot exceed the body length, so this is
    // also the amplification bound on the response size.
    if sorted.windows(2).any(|w| w[1].0 < w[0].1) {
        return RangeOutcome::Full;
    }

    // §14.2 lets a server coalesce ranges; a disjoint set whose union is one contiguous run is
    // cheaper as a single-part 206 (§15.3.7.2 permits a single part after coalescing).
    if sorted.windows(2).all(|w| w[1].0 == w[0].1) {
        return RangeOutcome::Single(sorted[0].0..sorted[sorted.len() - 1].1);
    }

    // Otherwise merge only neighbours that touch in request order: §15.3.7.2 asks for parts
    // "in the same order that the corresponding range-spec appeared", excluding coalesced ones.
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges {
        match out.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => out.push(start..end),
        }
    }
    RangeOutcome::Multi(out)
}

/// Resolves a spec against a non-empty representation, or `None` when it is unsatisfiable.
fn resolve(spec: Spec, len: u64) -> Option<(u64, u64)> {
    debug_assert!(len > 0);
    match spec {
        // §14.1.2: an int-range is satisfiable iff first-pos < length; a last-pos at or past
        // the end (or absent) means "the remainder of the representation".
        Spec::Int { first, last } => {
            if first >= len {
                return None;
            }
            // `len - 1` cannot underflow (len > 0) and `min(..) + 1 <= len` cannot overflow.
            let end = last.map_or(len, |last| last.min(len - 1) + 1);
            Some((first, end))
        }
        // §14.1.2: a suffix-range is satisfiable iff its suffix-length is non-zero; a suffix
        // longer than the representation selects the whole representation.
        Spec::Suffix(0) => None,
        Spec::Suffix(n) => Some((len - n.min(len), len)),
    }
}

/// Parses `ranges-specifier` (RFC 9110 §14.1.1) into `out`, returning how many specs it holds,
/// or `None` for anything this server ignores: another unit, bad syntax, an empty set, or more
/// than [`MAX_RANGES`] specs (stopping as soon as that is known, so work is bounded).
fn parse(value: &[u8], out: &mut [Spec; MAX_RANGES]) -> Option<usize> {
    let eq = value.iter().position(|&b| b == b'=')?;
    // §14.1: "Range unit names are case-insensitive." Whitespace around the unit and `=` is
    // not in the grammar but harmless to accept (robustness, RFC 9110 §2.3).
    let unit = trim_ows(&value[..eq]);
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut count = 0;
    for element in value[eq + 1..].split(|&b| b == b',') {
        let element = trim_ows(element);
        // §5.6.1.2: a recipient MUST accept (and not count) empty list elements.
        if element.is_empty() {
            continue;
        }
        if count == MAX_RANGES {
            return None;
        }
        out[count] = parse_spec(element)?;
        count += 1;
    }
    // `range-set = 1#range-spec`: at least one spec is required.
    (count > 0).then_some(count)
}

/// Parses one `int-range` or `suffix-range` (RFC 9110 §14.1.2); `other-range` and anything else
/// is a syntax error for the `bytes` unit.
fn parse_spec(spec: &[u8]) -> Option<Spec> {
    let dash = spec.iter().position(|&b| b == b'-')?;
    let first = trim_ows(&spec[..dash]);
    let last = trim_ows(&spec[dash + 1..]);
    if first.is_empty() {
        return Some(Spec::Suffix(parse_u64(last)?));
    }
    let first = parse_u64(first)?;
    if last.is_empty() {
        return Some(Spec::Int { first, last: None });
    }
    let last = parse_u64(last)?;
    // §14.1.1: "An int-range is invalid if the last-pos value is present and less than the
    // first-pos", which makes the whole ranges-specifier invalid (ignored, §14.2).
    if last < first {
        return None;
    }
    Some(Spec::Int {
        first,
        last: Some(last),
    })
}

/// Parses `1*DIGIT` into a u64; `None` when empty, not all digits (no sign, unlike
/// `str::parse`), or past `u64::MAX`, which we treat as a syntax error rather than clamp.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0_u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Strips optional whitespace (`OWS = *( SP / HTAB )`, RFC 9110 §5.6.3) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `Content-Range` for one part of a 206: `bytes first-last/len` (RFC 9110 §14.4).
///
/// `r` must be non-empty and inside `0..len`, as every range from [`evaluate`] is.
pub(crate) fn content_range(r: &Range<u64>, len: u64) -> HeaderValue {
    ascii_value(format!(
        "bytes {}-{}/{}",
        r.start,
        r.end.saturating_sub(1),
        len
    ))
}

/// `Content-Range` for a 416: `bytes */len` (RFC 9110 §14.4 `unsatisfied-range`, §15.5.17).
pub(crate) fn unsatisfied_content_range(len: u64) -> HeaderValue {
    ascii_value(format!("bytes */{len}"))
}

/// Wraps text built only from `bytes`, digits, ` `, `-`, `/` and `*`: always a valid field value.
fn ascii_value(text: String) -> HeaderValue {
    // The fallback is unreachable; it exists so this path cannot panic.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `multipart/byteranges` body (RFC 9110 §14.6) ready to send as a 206.
#[derive(Debug, Clone)]
pub(crate) struct Multipart {
    /// `Content-Type: multipart/byteranges; boundary=...`.
    pub(crate) content_type: HeaderValue,
    /// Body chunks in order: part header, part data (a zero-copy slice of the stored body),
    /// ..., then the closing delimiter.
    pub(crate) chunks: Vec<Bytes>,
    /// Sum of the chunk lengths, for `Content-Length`.
    pub(crate) len: u64,
}

/// Builds the multipart/byteranges body for `ranges` of the stored full `body` (RFC 9110 §14.6).
///
/// `len` is the complete representation length written into each part's `Content-Range`.
/// `content_type` is the representation's own type, repeated in every part as §14.6 asks
/// ("SHOULD generate that same Content-Type header field in the header area of each body
/// part"). `boundary` must be 1 to 70 characters of `A-Z a-z 0-9 ' + _ - .` (RFC 2046 §5.1.1
/// characters that are also `tchar`, so the parameter needs no quoting) and should be random so
/// it does not occur in the body. Returns `None` for an invalid boundary or a range that is
/// empty or outside the body, instead of panicking.
pub(crate) fn multipart(
    body: &Bytes,
    ranges: &[Range<u64>],
    content_type: Option<&HeaderValue>,
    len: u64,
    boundary: &str,
) -> Option<Multipart> {
    let boundary = boundary.as_bytes();
    let boundary_ok = (1..=MAX_BOUNDARY_LEN).contains(&boundary.len())
        && boundary
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'\'' | b'+' | b'_' | b'-' | b'.'));
    if !boundary_ok {
        return None;
    }
    let body_len = u64::try_from(body.len()).ok()?;
    if ranges
        .iter()
        .any(|r| r.start >= r.end || r.end > body_len || r.end > len)
    {
        return None;
    }

    // All part headers go into one buffer, later split into zero-copy chunks: one allocation
    // for the text, and the part data are slices of the stored body (no copies).
    let ct_len = content_type.map_or(0, |ct| ct.len() + "Content-Type: \r\n".len());
    let per_part = boundary.len() + ct_len + 96; // "\r\n--", Content-Range line, CRLFs
    let mut head = BytesMut::with_capacity(ranges.len() * per_part + boundary.len() + 8);
    let mut bounds = Vec::with_capacity(ranges.len() + 1);
    for (i, r) in ranges.iter().enumerate() {
        let start = head.len();
        // RFC 2046 §5.1.1: the CRLF before a boundary belongs to the delimiter, so every part
        // after the first starts with it; the first delimiter needs no preamble.
        if i > 0 {
            head.put_slice(b"\r\n");
        }
        head.put_slice(b"--");
        head.put_slice(boundary);
        head.put_slice(b"\r\n");
        if let Some(ct) = content_type {
            head.put_slice(b"Content-Type: ");
            head.put_slice(ct.as_bytes());
            head.put_slice(b"\r\n");
        }
        // §14.6: each body part carries its own Content-Range.
        head.put_slice(b"Content-Range: bytes ");
        put_u64(&mut head, r.start);
        head.put_u8(b'-');
        put_u64(&mut head, r.end - 1);
        head.put_u8(b'/');
        put_u64(&mut head, len);
        head.put_slice(b"\r\n\r\n");
        bounds.push(start..head.len());
    }
    // Close delimiter: CRLF "--" boundary "--" (RFC 2046 §5.1.1), plus a final CRLF.
    let start = head.len();
    head.put_slice(b"\r\n--");
    head.put_slice(boundary);
    head.put_slice(b"--\r\n");
    bounds.push(start..head.len());

    let head = head.freeze();
    let mut chunks = Vec::with_capacity(2 * ranges.len() + 1);
    for (bound, r) in bounds.iter().zip(ranges) {
        chunks.push(head.slice(bound.clone()));
        // In bounds: checked against `body.len()` above, so the casts are lossless.
        chunks.push(body.slice(r.start as usize..r.end as usize));
    }
    chunks.push(head.slice(start..));
    let total = chunks.iter().map(|c| c.len() as u64).sum();

    let mut ct = Vec::with_capacity(boundary.len() + 32);
    ct.extend_from_slice(b"multipart/byteranges; boundary=");
    ct.extend_from_slice(boundary);
    let content_type = HeaderValue::from_maybe_shared(Bytes::from(ct)).ok()?;
    Some(Multipart {
        content_type,
        chunks,
        len: total,
    })
}

/// Appends the decimal digits of `n` without going through `fmt`.
fn put_u64(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0_u8; 20]; // u64::MAX has 20 digits
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[i..]);
}

/// Whether `If-Range` lets a `Range` request be answered with a 206 (RFC 9110 §13.1.5);
/// `false` means ignore `Range` and send the full 200.
///
/// An entity-tag must equal the current `ETag` by the strong comparison (§8.8.3.2), so a weak
/// tag on either side never matches. An HTTP-date must equal `Last-Modified` exactly. §13.1.5
/// also requires the date to be a strong validator (§8.8.2.2); this function cannot see the
/// stored `Date`, so it relies on exact equality alone. Anything malformed is `false`, the safe
/// answer (a full response is always correct).
pub(crate) fn if_range_allows_partial(
    if_range: &HeaderValue,
    etag: Option<&HeaderValue>,
    last_modified: Option<&HeaderValue>,
) -> bool {
    let value = trim_ows(if_range.as_bytes());
    // `If-Range = entity-tag / HTTP-date`: an entity-tag starts with `W/` or DQUOTE, which no
    // HTTP-date does.
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        // Strong comparison: both tags strong and their opaque-tags identical. A well-formed
        // strong tag is the whole quoted string, so that is byte equality of two strong tags.
        return is_strong_entity_tag(value)
            && etag.is_some_and(|current| trim_ows(current.as_bytes()) == value);
    }
    let (Some(date), Some(last_modified)) =
        (http_date(if_range), last_modified.and_then(http_date))
    else {
        return false;
    };
    date == last_modified
}

/// Whether `tag` is exactly a strong `entity-tag`: DQUOTE *etagc DQUOTE (RFC 9110 §8.8.3).
fn is_strong_entity_tag(tag: &[u8]) -> bool {
    match tag {
        [b'"', inner @ .., b'"'] => inner
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80),
        _ => false,
    }
}

/// Parses an HTTP-date (RFC 9110 §5.6.7); `None` if malformed.
fn http_date(value: &HeaderValue) -> Option<std::time::SystemTime> {
    let text = std::str::from_utf8(trim_ows(value.as_bytes())).ok()?;
    httpdate::parse_http_date(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn eval(s: &str, len: u64) -> RangeOutcome {
        evaluate(&hv(s), len)
    }

    use RangeOutcome::{Full, Multi, Single, Unsatisfiable};

    // §14.1.2: first-last are inclusive positions.
    #[test]
    fn single_range_selects_inclusive_bounds() {
        assert_eq!(eval("bytes=0-99", 1234), Single(0..100));
        assert_eq!(eval("bytes=5-5", 10), Single(5..6));
    }

    // §14.1.2: an absent last-pos means the remainder.
    #[test]
    fn open_ended_range_runs_to_end() {
        assert_eq!(eval("bytes=1000-", 1234), Single(1000..1234));
    }

    // §14.1.2: a last-pos at or past the length is clamped to length - 1.
    #[test]
    fn last_pos_past_end_is_clamped() {
        assert_eq!(eval("bytes=10-99999", 100), Single(10..100));
        assert_eq!(eval("bytes=0-18446744073709551615", 100), Single(0..100));
    }

    // §14.1.2: suffix-range selects the last N bytes.
    #[test]
    fn suffix_range_selects_tail() {
        assert_eq!(eval("bytes=-100", 1234), Single(1134..1234));
    }

    // §14.1.2: "If the selected representation is shorter than the specified suffix-length,
    // the entire representation is used."
    #[test]
    fn suffix_range_longer_than_body_is_whole_body() {
        assert_eq!(eval("bytes=-5000", 1234), Single(0..1234));
    }

    // §14.1.2: a suffix-range is satisfiable only with a non-zero suffix-length.
    #[test]
    fn suffix_zero_is_unsatisfiable() {
        assert_eq!(eval("bytes=-0", 1234), Unsatisfiable);
    }

    // §14.1.1: last-pos < first-pos is invalid, so the field is ignored (§14.2).
    #[test]
    fn first_after_last_is_invalid_and_ignored() {
        assert_eq!(eval("bytes=10-5", 100), Full);
        assert_eq!(eval("bytes=0-1,10-5", 100), Full);
    }

    // Numbers past u64::MAX are treated as a syntax error: no overflow, no panic.
    #[test]
    fn numbers_past_u64_are_ignored_without_panic() {
        assert_eq!(eval("bytes=18446744073709551616-", 100), Full);
        assert_eq!(eval("bytes=0-99999999999999999999999999", 100), Full);
        assert_eq!(eval("bytes=-99999999999999999999999999", 100), Full);
        assert_eq!(
            eval("bytes=18446744073709551614-18446744073709551615", u64::MAX),
            Single(u64::MAX - 1..u64::MAX)
        );
    }

    // §14.2: an origin MUST ignore a unit it does not understand; §14.1: units are
    // case-insensitive.
    #[test]
    fn unknown_unit_is_ignored_and_unit_is_case_insensitive() {
        assert_eq!(eval("items=0-5", 100), Full);
        assert_eq!(eval("bytesx=0-5", 100), Full);
        assert_eq!(eval("BYTES=0-5", 100), Single(0..6));
        assert_eq!(eval("Bytes=0-5", 100), Single(0..6));
    }

    // §14.2: an invalid ranges-specifier may be ignored; we always ignore it.
    #[test]
    fn syntax_errors_are_ignored() {
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes= , ,",
            "bytes=abc",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=1-2-3",
            "bytes=--1",
            "bytes=-",
            "bytes=1",
            "bytes=0x10-20",
            "bytes=1 2-3",
            "=0-1",
        ] {
            assert_eq!(eval(bad, 100), Full, "{bad:?}");
        }
    }

    // §5.6.1.2: OWS around list elements and empty elements are accepted.
    #[test]
    fn whitespace_and_empty_elements_are_tolerated() {
        assert_eq!(eval(" bytes = 0 - 9 ", 100), Single(0..10));
        assert_eq!(
            eval("bytes=,\t0-9 ,, 20-29,", 100),
            Multi(vec![0..10, 20..30])
        );
    }

    // §15.3.7.2: parts follow the order of the range-specs.
    #[test]
    fn disjoint_ranges_keep_request_order() {
        assert_eq!(
            eval("bytes=50-59,0-9,-10", 100),
            Multi(vec![50..60, 0..10, 90..100])
        );
    }

    // §14.2 and §17.15: overlapping ranges are an amplification vector; ignore the field.
    #[test]
    fn overlapping_ranges_are_served_full() {
        assert_eq!(eval("bytes=0-50,40-99", 100), Full);
        assert_eq!(eval("bytes=0-9,0-9", 100), Full);
        assert_eq!(eval("bytes=0-,-1", 100), Full);
        // Overlap after clamping still counts.
        assert_eq!(eval("bytes=90-200,95-", 100), Full);
    }

    // §14.2: a server may coalesce; a contiguous union becomes one part.
    #[test]
    fn contiguous_ranges_coalesce_to_single() {
        assert_eq!(eval("bytes=0-9,10-19", 100), Single(0..20));
        assert_eq!(eval("bytes=10-19,0-9,20-", 100), Single(0..100));
    }

    #[test]
    fn touching_neighbours_merge_in_request_order() {
        assert_eq!(
            eval("bytes=0-9,10-19,30-39", 100),
            Multi(vec![0..20, 30..40])
        );
    }

    // §15.3.7.2: unsatisfiable specs are dropped from a satisfiable set.
    #[test]
    fn unsatisfiable_specs_are_dropped_from_a_satisfiable_set() {
        assert_eq!(eval("bytes=0-9,5000-6000", 100), Single(0..10));
        assert_eq!(
            eval("bytes=-0,0-9,200-,50-59", 100),
            Multi(vec![0..10, 50..60])
        );
    }

    // §14.1.1, §15.5.17: no satisfiable spec → 416 with `bytes */len`.
    #[test]
    fn all_unsatisfiable_is_416() {
        assert_eq!(eval("bytes=100-", 100), Unsatisfiable);
        assert_eq!(eval("bytes=200-300,-0", 100), Unsatisfiable);
        assert_eq!(unsatisfied_content_range(100), "bytes */100");
    }

    // §14.1.2: on a zero-length representation only a non-zero suffix-range is satisfiable,
    // and it is answered with the (empty) full response; everything else is 416.
    #[test]
    fn empty_body_is_unsatisfiable_except_suffix_ranges() {
        assert_eq!(eval("bytes=0-", 0), Unsatisfiable);
        assert_eq!(eval("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(eval("bytes=-0", 0), Unsatisfiable);
        assert_eq!(eval("bytes=-1", 0), Full);
        assert_eq!(eval("bytes=0-5,-1", 0), Full);
        assert_eq!(eval("bytes=nonsense", 0), Full);
    }

    // §14.2 / §17.15: many ranges are ignored, and parsing stops early.
    #[test]
    fn more_than_max_ranges_is_full() {
        let at_max: Vec<String> = (0..MAX_RANGES)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect();
        assert!(
            matches!(eval(&format!("bytes={}", at_max.join(",")), 100), Multi(v) if v.len() == MAX_RANGES)
        );
        let over: Vec<String> = (0..=MAX_RANGES)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect();
        assert_eq!(eval(&format!("bytes={}", over.join(",")), 100), Full);
    }

    #[test]
    fn thousands_of_ranges_are_full() {
        let header = format!("bytes={}", "0-0,".repeat(100_000));
        // The parser stops after MAX_RANGES + 1 elements.
        assert_eq!(eval(&header, 100), Full);
    }

    #[test]
    fn header_values_with_obs_text_do_not_panic() {
        let v = HeaderValue::from_bytes(b"bytes=\xff0-1").unwrap();
        assert_eq!(evaluate(&v, 10), Full);
    }

    // §14.4: `bytes first-last/complete-length`.
    #[test]
    fn content_range_formats_inclusive_last() {
        assert_eq!(content_range(&(0..100), 1234), "bytes 0-99/1234");
        assert_eq!(content_range(&(1233..1234), 1234), "bytes 1233-1233/1234");
    }

    // §14.6: delimiter, per-part Content-Type and Content-Range, close delimiter.
    #[test]
    fn multipart_layout_follows_14_6() {
        let body = Bytes::from_static(b"0123456789abcdefghij");
        let ct = hv("text/plain");
        let m = multipart(&body, &[0..3, 10..12], Some(&ct), 20, "SEP").unwrap();
        assert_eq!(m.content_type, "multipart/byteranges; boundary=SEP");
        let joined: Vec<u8> = m.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let expected = "--SEP\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-2/20\r\n\r\n\
                        012\
                        \r\n--SEP\r\nContent-Type: text/plain\r\nContent-Range: bytes 10-11/20\r\n\r\n\
                        ab\
                        \r\n--SEP--\r\n";
        assert_eq!(String::from_utf8(joined).unwrap(), expected);
        assert_eq!(m.len, expected.len() as u64);
        assert_eq!(m.chunks.len(), 5);
        // Part data are slices of the stored body, not copies.
        assert_eq!(m.chunks[1].as_ptr(), body.as_ptr());
    }

    #[test]
    fn multipart_without_content_type_omits_the_line() {
        let body = Bytes::from_static(b"abcdef");
        let m = multipart(&body, &[0..1, 4..6], None, 6, "b").unwrap();
        assert_eq!(
            &m.chunks[0][..],
            b"--b\r\nContent-Range: bytes 0-0/6\r\n\r\n"
        );
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one-part range lists are meant here
    fn multipart_rejects_bad_boundary_and_out_of_body_ranges() {
        let body = Bytes::from_static(b"abcdef");
        for bad in ["", "a b", "a\r\nb", "a;b", "\"q\"", &"x".repeat(71)] {
            assert!(multipart(&body, &[0..1], None, 6, bad).is_none(), "{bad:?}");
        }
        assert!(multipart(&body, &[0..7], None, 6, "b").is_none());
        assert!(multipart(&body, &[3..3], None, 6, "b").is_none());
        assert!(multipart(&body, &[u64::MAX - 1..u64::MAX], None, u64::MAX, "b").is_none());
        assert!(multipart(&body, &[0..6], None, 6, &"x".repeat(70)).is_some());
    }

    const ETAG: &str = "\"v1\"";
    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    fn if_range(value: &str, etag: Option<&str>, lm: Option<&str>) -> bool {
        let etag = etag.map(hv);
        let lm = lm.map(hv);
        if_range_allows_partial(&hv(value), etag.as_ref(), lm.as_ref())
    }

    // §13.1.5: entity-tags are compared with the strong comparison.
    #[test]
    fn if_range_strong_etag_match_allows_partial() {
        assert!(if_range("\"v1\"", Some(ETAG), Some(LM)));
        assert!(!if_range("\"v2\"", Some(ETAG), Some(LM)));
        assert!(!if_range("\"v1\"", None, Some(LM)));
    }

    // §13.1.5 with §8.8.3.2: weak tags never match strongly, on either side.
    #[test]
    fn if_range_weak_tags_never_match() {
        assert!(!if_range("W/\"v1\"", Some("W/\"v1\""), None));
        assert!(!if_range("W/\"v1\"", Some(ETAG), None));
        assert!(!if_range("\"v1\"", Some("W/\"v1\""), None));
    }

    // §13.1.5: an HTTP-date must exactly match Last-Modified.
    #[test]
    fn if_range_date_equal_to_last_modified_allows_partial() {
        assert!(if_range(LM, Some(ETAG), Some(LM)));
        // The same instant in the obsolete RFC 850 format is the same date.
        assert!(if_range("Sunday, 06-Nov-94 08:49:37 GMT", None, Some(LM)));
    }

    #[test]
    fn if_range_date_that_differs_serves_full() {
        assert!(!if_range("Sun, 06 Nov 1994 08:49:38 GMT", None, Some(LM)));
        assert!(!if_range("Sun, 06 Nov 1994 08:49:36 GMT", None, Some(LM)));
        assert!(!if_range(LM, Some(ETAG), None));
    }

    #[test]
    fn if_range_garbage_serves_full() {
        for bad in [
            "", "v1", "\"v1", "\"v1\"x", "\"v 1\"", "W/", "tomorrow", "*",
        ] {
            assert!(!if_range(bad, Some(ETAG), Some(LM)), "{bad:?}");
        }
        assert!(!if_range("garbage", Some(ETAG), Some("garbage")));
    }

    /// A well-formed range-spec for the property tests.
    #[derive(Debug, Clone)]
    enum TestSpec {
        Int(u64, Option<u64>),
        Suffix(u64),
    }

    impl TestSpec {
        fn text(&self) -> String {
            match self {
                TestSpec::Int(a, Some(b)) => format!("{a}-{b}"),
                TestSpec::Int(a, None) => format!("{a}-"),
                TestSpec::Suffix(n) => format!("-{n}"),
            }
        }

        /// The RFC 9110 §14.1.2 selection, written independently of `resolve`.
        fn selects(&self, len: u64) -> Option<Range<u64>> {
            let r = match *self {
                TestSpec::Int(a, b) => a..b.map_or(len, |b| (b + 1).min(len)),
                TestSpec::Suffix(n) => len.saturating_sub(n)..len,
            };
            let satisfiable = match *self {
                TestSpec::Int(a, _) => a < len,
                TestSpec::Suffix(n) => n > 0,
            };
            (satisfiable && len > 0).then_some(r)
        }
    }

    fn spec() -> impl Strategy<Value = TestSpec> {
        prop_oneof![
            (0..5000_u64, 0..5000_u64).prop_map(|(a, b)| TestSpec::Int(a.min(b), Some(a.max(b)))),
            // Short ranges, so that disjoint multi-range sets are common.
            (0..4200_u64, 0..64_u64).prop_map(|(a, w)| TestSpec::Int(a, Some(a + w))),
            (0..4200_u64, 0..64_u64).prop_map(|(a, w)| TestSpec::Int(a, Some(a + w))),
            (0..5000_u64).prop_map(|a| TestSpec::Int(a, None)),
            (0..5000_u64).prop_map(TestSpec::Suffix),
        ]
    }

    fn union(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
        ranges.sort_by_key(|r| (r.start, r.end));
        let mut out: Vec<Range<u64>> = Vec::new();
        for r in ranges {
            match out.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        out
    }

    proptest! {
        // The bytes an outcome selects are exactly the requested slices of the body.
        #[test]
        fn selected_bytes_are_the_requested_slices(
            body in proptest::collection::vec(any::<u8>(), 0..4096),
            specs in proptest::collection::vec(spec(), 1..6),
        ) {
            let body = Bytes::from(body);
            let len = body.len() as u64;
            let header = format!("bytes={}", specs.iter().map(TestSpec::text).collect::<Vec<_>>().join(", "));
            let expected: Vec<Range<u64>> = specs.iter().filter_map(|s| s.selects(len)).collect();
            let outcome = evaluate(&hv(&header), len);
            match outcome {
                Full => {
                    // Only overlap, or the zero-length rule, may ignore a well-formed set.
                    let overlap = union(expected.clone()).iter().map(|r| r.end - r.start).sum::<u64>()
                        < expected.iter().map(|r| r.end - r.start).sum::<u64>();
                    let empty_suffix = len == 0 && specs.iter().any(|s| matches!(s, TestSpec::Suffix(n) if *n > 0));
                    prop_assert!(overlap || empty_suffix, "unexpected Full for {header} / {len}");
                }
                Unsatisfiable => prop_assert!(expected.is_empty()),
                Single(r) => {
                    prop_assert!(r.start < r.end && r.end <= len);
                    prop_assert_eq!(union(expected), vec![r.clone()]);
                    let part = body.slice(r.start as usize..r.end as usize);
                    prop_assert_eq!(&part[..], &body[r.start as usize..r.end as usize]);
                }
                Multi(rs) => {
                    prop_assert!(rs.len() >= 2);
                    let total: u64 = rs.iter().map(|r| r.end - r.start).sum();
                    prop_assert!(total <= len);
                    prop_assert_eq!(union(rs.clone()), union(expected));
                    let m = multipart(&body, &rs, None, len, "BOUNDARY").unwrap();
                    prop_assert_eq!(m.chunks.len(), 2 * rs.len() + 1);
                    prop_assert_eq!(m.len, m.chunks.iter().map(|c| c.len() as u64).sum::<u64>());
                    for (i, r) in rs.iter().enumerate() {
                        prop_assert_eq!(&m.chunks[2 * i + 1][..], &body[r.start as usize..r.end as usize]);
                        let head = String::from_utf8(m.chunks[2 * i].to_vec()).unwrap();
                        let expected_range = format!("Content-Range: bytes {}-{}/{}\r\n", r.start, r.end - 1, len);
                        prop_assert!(head.contains(&expected_range));
                    }
                }
            }
        }

        // The decision for any header text equals the reference model of RFC 9110 §14.1-§14.2
        // (with this server's documented choices), and every range served lies in the body.
        #[test]
        fn evaluate_matches_the_reference_model_on_strings(s in any::<String>(), len in any::<u64>()) {
            if let Ok(v) = HeaderValue::from_str(&s) {
                check_against_model(&v, len)?;
                check_if_range_against_model(&v, Some(&v), Some(&v))?;
            }
        }

        #[test]
        fn evaluate_matches_the_reference_model_on_bytes(
            tail in proptest::collection::vec(any::<u8>(), 0..64),
            len in prop_oneof![Just(0_u64), Just(1), Just(u64::MAX), any::<u64>()],
        ) {
            let mut raw = b"bytes=".to_vec();
            raw.extend(tail);
            if let Ok(v) = HeaderValue::from_bytes(&raw) {
                check_against_model(&v, len)?;
            }
            if let Ok(v) = HeaderValue::from_bytes(&raw[6..]) {
                check_against_model(&v, len)?;
                check_if_range_against_model(&v, Some(&v), Some(&v))?;
            }
        }

        #[test]
        fn evaluate_matches_the_reference_model_on_range_like_text(
            s in "[bB]ytes ?= ?[0-9 ,\\-]{0,80}",
            len in prop_oneof![Just(0_u64), 1..20_u64, 1..200_u64, any::<u64>()],
        ) {
            check_against_model(&hv(&s), len)?;
        }

        // §13.1.5 with §8.8.3.2: only a strong tag equal to a strong current ETag, or a date
        // equal to Last-Modified (in any of the three HTTP-date forms), allows a 206.
        #[test]
        fn if_range_matches_the_reference_model(
            value in if_range_text(),
            etag in proptest::option::of(if_range_text()),
            last_modified in proptest::option::of(if_range_text()),
        ) {
            let (etag, last_modified) = (etag.map(|e| hv(&e)), last_modified.map(|l| hv(&l)));
            check_if_range_against_model(&hv(&value), etag.as_ref(), last_modified.as_ref())?;
        }

        // Well-formed and slightly broken lists (reversed bounds, junk, too many specs) over
        // small bodies: the decision equals the model, and the bytes served, single part or
        // multipart, are exactly the slices of the body the model selects.
        #[test]
        fn served_bytes_equal_the_model_selection(
            parts in prop_oneof![
                // Mostly a few specs, so that disjoint (multipart) sets are common.
                4 => proptest::collection::vec(spec_text(), 1..4),
                1 => proptest::collection::vec(spec_text(), 0..(MAX_RANGES + 3)),
            ],
            unit in prop_oneof![8 => Just("bytes"), 1 => Just("BYTES"), 1 => Just(" bytes "), 1 => Just("items")],
            len in 0..40_u64,
        ) {
            let header = format!("{unit}={}", parts.join(","));
            let value = hv(&header);
            let outcome = check_against_model(&value, len)?;
            let body: Bytes = (0..len).map(|i| (i % 251) as u8).collect();
            let served: Vec<Range<u64>> = match &outcome {
                Single(r) => vec![r.clone()],
                Multi(rs) => rs.clone(),
                Full | Unsatisfiable => return Ok(()),
            };
            let selected: Vec<u8> = served
                .iter()
                .flat_map(|r| body[r.start as usize..r.end as usize].iter().copied())
                .collect();
            // The union of the model's satisfiable ranges, in offset order, is what was asked.
            let wanted = match model(value.as_bytes(), len) {
                Model::Ranges(rs) => union(rs),
                other => return Err(TestCaseError::fail(format!("{other:?} but served {outcome:?}"))),
            };
            let asked: Vec<u8> = wanted
                .iter()
                .flat_map(|r| body[r.start as usize..r.end as usize].iter().copied())
                .collect();
            let mut sorted = served.clone();
            sorted.sort_by_key(|r| r.start);
            let served_in_order: Vec<u8> = sorted
                .iter()
                .flat_map(|r| body[r.start as usize..r.end as usize].iter().copied())
                .collect();
            prop_assert_eq!(served_in_order, asked);
            if let Multi(rs) = &outcome {
                let m = multipart(&body, rs, None, len, "B").unwrap();
                let data: Vec<u8> = m.chunks.iter().skip(1).step_by(2).flat_map(|c| c.iter().copied()).collect();
                prop_assert_eq!(data, selected);
            }
        }
    }

    // Every one- and two-spec set over positions 0..7 against bodies of 0 to 5 bytes: each
    // boundary of RFC 9110 §14.1.2 (first-pos at the length, last-pos at or past the last
    // byte, suffix of zero, longer than the body) is met, and the decision equals the model.
    #[test]
    fn small_scope_sets_match_the_model_exhaustively() {
        let mut specs = Vec::new();
        for a in 0..7_u64 {
            specs.push(format!("{a}-"));
            specs.push(format!("-{a}"));
            for b in 0..7_u64 {
                specs.push(format!("{a}-{b}"));
            }
        }
        for len in 0..6_u64 {
            for first in &specs {
                for value in std::iter::once(format!("bytes={first}"))
                    .chain(specs.iter().map(|second| format!("bytes={first},{second}")))
                {
                    if let Err(e) = check_against_model(&hv(&value), len) {
                        panic!("{e}");
                    }
                }
            }
        }
        // Three int-ranges: coalescing of neighbours that touch in request order (§14.2)
        // next to a part that stays separate.
        let ints: Vec<String> = (0..7_u64)
            .flat_map(|a| (a..7).map(move |b| format!("{a}-{b}")))
            .collect();
        for len in [5_u64, 7] {
            for a in &ints {
                for b in &ints {
                    for c in &ints {
                        if let Err(e) = check_against_model(&hv(&format!("bytes={a},{b},{c}")), len)
                        {
                            panic!("{e}");
                        }
                    }
                }
            }
        }
    }

    /// `If-Range`, `ETag` or `Last-Modified` text: tags strong or weak over a tiny alphabet
    /// (so that equal tags are common), one instant in the three HTTP-date forms, the next
    /// second, and junk.
    fn if_range_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "(W/)?\"[ab]{0,2}\"",
            "[ \t]?\"[ab]{0,2}\"[ \t]?",
            Just("Sun, 06 Nov 1994 08:49:37 GMT".to_owned()),
            Just("Sunday, 06-Nov-94 08:49:37 GMT".to_owned()),
            Just("Sun Nov  6 08:49:37 1994".to_owned()),
            Just("Sun, 06 Nov 1994 08:49:38 GMT".to_owned()),
            "[\"W/ab*]{0,5}",
        ]
    }

    /// One range-spec as text over positions around a short body, so that the boundaries
    /// (first-pos at, before and after the length; last-pos at the last byte) come up often;
    /// now and then reversed bounds or junk, which make the whole field invalid.
    fn spec_text() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => (0..48_u64, 0..48_u64).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            4 => (0..48_u64, 0..4_u64).prop_map(|(a, w)| format!("{a}-{}", a + w)),
            1 => (0..48_u64, 0..48_u64).prop_map(|(a, b)| format!("{a}-{b}")),
            3 => (0..48_u64).prop_map(|a| format!("{a}-")),
            3 => (0..48_u64).prop_map(|n| format!("-{n}")),
            1 => Just(String::new()),
            1 => "[ \t]{0,2}[0-9x+]{0,2}[ \t]?-?[ \t]?[0-9]{0,2}[ \t]{0,2}",
        ]
    }

    /// What RFC 9110 §14.1-§14.2 and this server's documented choices make of a `Range`
    /// value: written from the grammar, independently of `parse`/`resolve`/`multi`.
    #[derive(Debug, PartialEq)]
    enum Model {
        /// Unknown unit, invalid syntax, more than `MAX_RANGES` specs (§14.2: ignore).
        Ignored,
        /// Valid, zero-length representation with a non-zero suffix: the empty 200.
        EmptyFull,
        /// Valid, but nothing satisfiable (§14.1.1): 416.
        Unsatisfiable,
        /// The satisfiable ranges in request order (§15.3.7.2), before coalescing.
        Ranges(Vec<Range<u64>>),
    }

    /// Parses `1*DIGIT` as u64 with `str::parse`, after checking that only digits are present
    /// (`parse` alone would accept a leading `+`).
    fn digits(s: &[u8]) -> Option<u64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    }

    fn ows_trim(s: &[u8]) -> &[u8] {
        let start = s
            .iter()
            .position(|b| *b != b' ' && *b != b'\t')
            .unwrap_or(s.len());
        let end = s
            .iter()
            .rposition(|b| *b != b' ' && *b != b'\t')
            .map_or(start, |e| e + 1);
        &s[start..end.max(start)]
    }

    fn model(value: &[u8], len: u64) -> Model {
        let Some(eq) = value.iter().position(|b| *b == b'=') else {
            return Model::Ignored;
        };
        if !ows_trim(&value[..eq]).eq_ignore_ascii_case(b"bytes") {
            return Model::Ignored;
        }
        // (first, last) with `None` first for a suffix-range.
        let mut specs: Vec<(Option<u64>, Option<u64>)> = Vec::new();
        for element in value[eq + 1..].split(|b| *b == b',').map(ows_trim) {
            if element.is_empty() {
                continue;
            }
            let Some(dash) = element.iter().position(|b| *b == b'-') else {
                return Model::Ignored;
            };
            let (first, last) = (ows_trim(&element[..dash]), ows_trim(&element[dash + 1..]));
            let spec = match (first.is_empty(), last.is_empty()) {
                (true, _) => match digits(last) {
                    Some(n) => (None, Some(n)),
                    None => return Model::Ignored,
                },
                (false, true) => match digits(first) {
                    Some(a) => (Some(a), None),
                    None => return Model::Ignored,
                },
                (false, false) => match (digits(first), digits(last)) {
                    (Some(a), Some(b)) if a <= b => (Some(a), Some(b)),
                    _ => return Model::Ignored,
                },
            };
            specs.push(spec);
        }
        if specs.is_empty() || specs.len() > MAX_RANGES {
            return Model::Ignored;
        }
        if len == 0 {
            let suffix = specs.iter().any(|s| matches!(s, (None, Some(n)) if *n > 0));
            return if suffix {
                Model::EmptyFull
            } else {
                Model::Unsatisfiable
            };
        }
        let ranges: Vec<Range<u64>> = specs
            .iter()
            .filter_map(|spec| match *spec {
                (Some(a), _) if a >= len => None,
                (Some(a), None) => Some(a..len),
                (Some(a), Some(b)) => Some(a..if b >= len - 1 { len } else { b + 1 }),
                (None, Some(0)) | (None, None) => None,
                (None, Some(n)) => Some(len.saturating_sub(n)..len),
            })
            .collect();
        if ranges.is_empty() {
            Model::Unsatisfiable
        } else {
            Model::Ranges(ranges)
        }
    }

    /// Checks `evaluate` against the model, including the documented policy for several ranges:
    /// any overlap → the whole 200 (§14.2, §17.15); a contiguous union → one part; otherwise
    /// neighbours that touch in request order are merged (§14.2 permits coalescing).
    fn check_against_model(value: &HeaderValue, len: u64) -> Result<RangeOutcome, TestCaseError> {
        let outcome = evaluate(value, len);
        let expected = match model(value.as_bytes(), len) {
            Model::Ignored | Model::EmptyFull => Full,
            Model::Unsatisfiable => Unsatisfiable,
            Model::Ranges(rs) if rs.len() == 1 => Single(rs[0].clone()),
            Model::Ranges(rs) => {
                let total: u64 = rs.iter().map(|r| r.end - r.start).sum();
                let merged = union(rs.clone());
                let covered: u64 = merged.iter().map(|r| r.end - r.start).sum();
                if covered < total {
                    Full
                } else if merged.len() == 1 {
                    Single(merged[0].clone())
                } else {
                    let mut parts: Vec<Range<u64>> = Vec::new();
                    for r in rs {
                        if let Some(last) = parts.last_mut().filter(|l| l.end == r.start) {
                            last.end = r.end;
                        } else {
                            parts.push(r);
                        }
                    }
                    Multi(parts)
                }
            }
        };
        prop_assert_eq!(&outcome, &expected, "Range: {:?}, length {}", value, len);
        match &outcome {
            Single(r) => prop_assert!(r.start < r.end && r.end <= len),
            Multi(rs) => {
                prop_assert!(rs.len() >= 2 && rs.len() <= MAX_RANGES);
                prop_assert!(rs.iter().all(|r| r.start < r.end && r.end <= len));
            }
            Full | Unsatisfiable => {}
        }
        Ok(outcome)
    }

    /// §13.1.5: a partial response only for an entity-tag strongly equal to the current one
    /// or an HTTP-date equal to Last-Modified.
    fn check_if_range_against_model(
        value: &HeaderValue,
        etag: Option<&HeaderValue>,
        last_modified: Option<&HeaderValue>,
    ) -> Result<(), TestCaseError> {
        let v = ows_trim(value.as_bytes());
        let expected = if v.first() == Some(&b'"') || v.starts_with(b"W/") {
            let strong = v.len() >= 2
                && v[0] == b'"'
                && v[v.len() - 1] == b'"'
                && v[1..v.len() - 1]
                    .iter()
                    .all(|&b| b != b'"' && b > 0x20 && b != 0x7f);
            strong && etag.is_some_and(|e| ows_trim(e.as_bytes()) == v)
        } else {
            let date = |h: &HeaderValue| {
                std::str::from_utf8(ows_trim(h.as_bytes()))
                    .ok()
                    .and_then(|t| httpdate::parse_http_date(t).ok())
            };
            matches!((date(value), last_modified.and_then(date)), (Some(a), Some(b)) if a == b)
        };
        prop_assert_eq!(
            if_range_allows_partial(value, etag, last_modified),
            expected
        );
        Ok(())
    }
}
