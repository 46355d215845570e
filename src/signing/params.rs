//! Finding signing credentials in a request's query string or cookies, and stripping them.

use std::borrow::Cow;

use http::header::COOKIE;
use http::HeaderMap;

use super::error::Denied;
use super::keys::valid_key_id;
use super::{MAX_COOKIE_HEADER_LEN, MAX_POLICY_LEN, MAX_SIGNATURE_LEN};

/// The four signing query parameters, in the order a signed URL carries them.
pub(super) const QUERY_NAMES: [&str; 4] = ["Expires", "Policy", "Signature", "Key-Pair-Id"];

/// The four signing cookies, index for index with [`QUERY_NAMES`].
pub(super) const COOKIE_NAMES: [&str; 4] = [
    "CloudFront-Expires",
    "CloudFront-Policy",
    "CloudFront-Signature",
    "CloudFront-Key-Pair-Id",
];

const EXPIRES: usize = 0;
const POLICY: usize = 1;
const SIGNATURE: usize = 2;
const KEY_PAIR_ID: usize = 3;

/// An epoch time in seconds has at most 20 digits.
const MAX_EXPIRES_LEN: usize = 20;

/// Where the credentials came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Query,
    Cookies,
}

/// Which policy the credentials sign.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Form<'a> {
    /// `Expires`: the canned policy for the requested URL.
    Canned { expires: u64 },
    /// `Policy`: a custom policy, still in CloudFront base64.
    Custom { policy: Cow<'a, str> },
}

/// Signing credentials, checked for shape and size only.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Credentials<'a> {
    pub(super) source: Source,
    pub(super) form: Form<'a>,
    /// Still in CloudFront base64.
    pub(super) signature: Cow<'a, str>,
    pub(super) key_id: Cow<'a, str>,
}

/// Finds the credentials: the query string's signing parameters if it has any, else the
/// signing cookies.
///
/// `Missing` when neither has any; `Malformed` when the set found is incomplete, has both
/// `Expires` and `Policy`, repeats a query parameter, or has a value that is too long or
/// badly escaped, or when the cookie headers together exceed [`MAX_COOKIE_HEADER_LEN`] and
/// the query string has no credentials. Other parameters and cookies, however odd, are ignored.
pub(super) fn extract<'a>(
    query: Option<&'a str>,
    headers: &'a HeaderMap,
) -> Result<Credentials<'a>, Denied> {
    if let Some(found) = from_query(query.unwrap_or(""))? {
        return complete(Source::Query, found);
    }
    if let Some(found) = from_cookies(headers)? {
        return complete(Source::Cookies, found);
    }
    Err(Denied::Missing)
}

type Found<'a> = [Option<&'a str>; 4];

fn from_query(query: &str) -> Result<Option<Found<'_>>, Denied> {
    let mut found: Found<'_> = [None; 4];
    let mut any = false;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let Some(i) = QUERY_NAMES.iter().position(|&n| n == name) {
            if found[i].replace(value).is_some() {
                // Two values for one parameter: which one was meant is anyone's guess.
                return Err(Denied::Malformed);
            }
            any = true;
        }
    }
    Ok(any.then_some(found))
}

fn from_cookies(headers: &HeaderMap) -> Result<Option<Found<'_>>, Denied> {
    let mut found: Found<'_> = [None; 4];
    let mut any = false;
    let mut total = 0usize;
    for value in headers.get_all(COOKIE) {
        total = total.saturating_add(value.len());
        if total > MAX_COOKIE_HEADER_LEN {
            return Err(Denied::Malformed);
        }
        // A header that is not visible ASCII holds nothing of ours; skip it whole.
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let name = name.trim_matches([' ', '\t']);
            let value = value.trim_matches([' ', '\t']);
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            if let Some(i) = COOKIE_NAMES.iter().position(|&n| n == name) {
                // Browsers send the most specific path's cookie first: the first one wins.
                if found[i].is_none() {
                    found[i] = Some(value);
                    any = true;
                }
            }
        }
    }
    Ok(any.then_some(found))
}

fn complete(source: Source, found: Found<'_>) -> Result<Credentials<'_>, Denied> {
    let field = |i: usize, max: usize| -> Result<Option<Cow<'_, str>>, Denied> {
        match found[i] {
            None => Ok(None),
            Some(raw) if raw.len() > max.saturating_mul(3) => Err(Denied::Malformed),
            Some(raw) => {
                let value = percent_decode(raw).ok_or(Denied::Malformed)?;
                if value.is_empty() || value.len() > max {
                    return Err(Denied::Malformed);
                }
                Ok(Some(value))
            }
        }
    };
    let expires = field(EXPIRES, MAX_EXPIRES_LEN)?;
    let policy = field(POLICY, MAX_POLICY_LEN)?;
    let signature = field(SIGNATURE, MAX_SIGNATURE_LEN)?.ok_or(Denied::Malformed)?;
    let key_id = field(KEY_PAIR_ID, super::MAX_KEY_ID_LEN)?.ok_or(Denied::Malformed)?;
    if !valid_key_id(&key_id) {
        return Err(Denied::Malformed);
    }
    let form = match (expires, policy) {
        (Some(expires), None) => {
            if !expires.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Denied::Malformed);
            }
            let expires = expires.parse().map_err(|_| Denied::Malformed)?;
            Form::Canned { expires }
        }
        (None, Some(policy)) => Form::Custom { policy },
        // Both, or neither: CloudFront accepts exactly one.
        _ => return Err(Denied::Malformed),
    };
    Ok(Credentials {
        source,
        form,
        signature,
        key_id,
    })
}

/// Decodes `%XX` escapes (some clients escape `~`); `None` for a broken escape or a result that
/// is not ASCII. No `+`-as-space: CloudFront's alphabet has no `+`.
fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if !out.is_ascii() {
        return None;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Removes `Expires`, `Policy`, `Signature` and `Key-Pair-Id` from a query string (every
/// occurrence, with or without a value), keeping every other parameter as it was, in order.
///
/// Borrowed when there was nothing to remove. The result can be empty.
pub(crate) fn strip_signing_params(query: &str) -> Cow<'_, str> {
    let is_signing = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        QUERY_NAMES.contains(&name)
    };
    if !query.split('&').any(is_signing) {
        return Cow::Borrowed(query);
    }
    let mut kept = String::with_capacity(query.len());
    for pair in query.split('&').filter(|pair| !is_signing(pair)) {
        if !kept.is_empty() {
            kept.push('&');
        }
        kept.push_str(pair);
    }
    Cow::Owned(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(COOKIE, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn strips_only_signing_params() {
        assert!(matches!(
            strip_signing_params("a=1&b=2"),
            Cow::Borrowed("a=1&b=2")
        ));
        assert!(matches!(strip_signing_params(""), Cow::Borrowed("")));
        assert_eq!(
            strip_signing_params("a=1&Expires=5&Signature=x&Key-Pair-Id=K&b=2"),
            "a=1&b=2"
        );
        assert_eq!(
            strip_signing_params("Policy=p&Signature=s&Key-Pair-Id=k"),
            ""
        );
        assert_eq!(strip_signing_params("Expires&a=&Signature="), "a=");
        // Names are exact: other cases and look-alikes stay.
        assert_eq!(
            strip_signing_params("expires=1&ExpiresX=2&Signature=s&X-Signature=3"),
            "expires=1&ExpiresX=2&X-Signature=3"
        );
        assert_eq!(strip_signing_params("Signature=1&Signature=2&z"), "z");
    }

    #[test]
    fn query_credentials() {
        let empty = HeaderMap::new();
        let creds = extract(
            Some("x=1&Expires=100&Signature=c2ln&Key-Pair-Id=K1"),
            &empty,
        )
        .unwrap();
        assert_eq!(creds.source, Source::Query);
        assert_eq!(creds.form, Form::Canned { expires: 100 });
        assert_eq!((&*creds.signature, &*creds.key_id), ("c2ln", "K1"));

        let creds = extract(Some("Policy=eyJ9&Signature=c2ln%7E&Key-Pair-Id=K1"), &empty).unwrap();
        assert_eq!(
            creds.form,
            Form::Custom {
                policy: "eyJ9".into()
            }
        );
        assert_eq!(creds.signature, "c2ln~");

        assert_eq!(extract(None, &empty), Err(Denied::Missing));
        assert_eq!(extract(Some("a=1&b"), &empty), Err(Denied::Missing));
        for bad in [
            "Expires=100&Signature=s",
            "Expires=100&Key-Pair-Id=K",
            "Signature=s&Key-Pair-Id=K",
            "Expires=100&Policy=p&Signature=s&Key-Pair-Id=K",
            "Expires=100&Expires=100&Signature=s&Key-Pair-Id=K",
            "Expires=-1&Signature=s&Key-Pair-Id=K",
            "Expires=+1&Signature=s&Key-Pair-Id=K",
            "Expires=99999999999999999999999&Signature=s&Key-Pair-Id=K",
            "Expires=18446744073709551616&Signature=s&Key-Pair-Id=K",
            "Expires=100&Signature=&Key-Pair-Id=K",
            "Expires=100&Signature=s&Key-Pair-Id=",
            "Expires=100&Signature=s&Key-Pair-Id=K%20K",
            "Expires=100&Signature=%zz&Key-Pair-Id=K",
            "Expires=100&Signature=%c3%a9&Key-Pair-Id=K",
            "Expires=100&Signature=s%&Key-Pair-Id=K",
            "Key-Pair-Id=K",
        ] {
            assert_eq!(extract(Some(bad), &empty), Err(Denied::Malformed), "{bad}");
        }
    }

    #[test]
    fn cookie_credentials() {
        let headers = cookies(&[
            "session=abc; CloudFront-Policy=cG9s; junk; =; ;;",
            "CloudFront-Signature=\"c2ln\";CloudFront-Key-Pair-Id=K2 ; CloudFront-Policy=second",
        ]);
        let creds = extract(Some("a=1"), &headers).unwrap();
        assert_eq!(creds.source, Source::Cookies);
        assert_eq!(
            creds.form,
            Form::Custom {
                policy: "cG9s".into()
            }
        );
        assert_eq!((&*creds.signature, &*creds.key_id), ("c2ln", "K2"));

        let canned =
            cookies(&["CloudFront-Expires=77; CloudFront-Signature=s; CloudFront-Key-Pair-Id=K"]);
        assert_eq!(
            extract(None, &canned).unwrap().form,
            Form::Canned { expires: 77 }
        );

        // Query parameters win over cookies, even when they are broken.
        assert_eq!(extract(Some("Expires=1"), &canned), Err(Denied::Malformed));
        assert_eq!(extract(None, &cookies(&["a=b; c=d"])), Err(Denied::Missing));
        assert_eq!(
            extract(
                None,
                &cookies(&["CloudFront-Expires=77; CloudFront-Key-Pair-Id=K"])
            ),
            Err(Denied::Malformed)
        );
    }

    #[test]
    fn huge_or_binary_cookie_headers() {
        let big = format!(
            "CloudFront-Expires=1; pad={}",
            "x".repeat(MAX_COOKIE_HEADER_LEN)
        );
        assert_eq!(extract(None, &cookies(&[&big])), Err(Denied::Malformed));
        // Many small headers add up.
        let many: Vec<String> = (0..200)
            .map(|i| format!("c{i}={}", "y".repeat(100)))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(extract(None, &cookies(&many)), Err(Denied::Malformed));
        // A huge cookie header does not matter when the query carries the credentials.
        let huge = cookies(&[&big]);
        let creds = extract(Some("Expires=1&Signature=s&Key-Pair-Id=K"), &huge).unwrap();
        assert_eq!(creds.source, Source::Query);

        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_bytes(b"CloudFront-Expires=\xff1").unwrap(),
        );
        headers.append(
            COOKIE,
            HeaderValue::from_static(
                "CloudFront-Expires=5; CloudFront-Signature=s; CloudFront-Key-Pair-Id=K",
            ),
        );
        assert_eq!(
            extract(None, &headers).unwrap().form,
            Form::Canned { expires: 5 }
        );
    }

    #[test]
    fn oversized_values() {
        let empty = HeaderMap::new();
        let policy = "A".repeat(MAX_POLICY_LEN + 4);
        let q = format!("Policy={policy}&Signature=s&Key-Pair-Id=K");
        assert_eq!(extract(Some(&q), &empty), Err(Denied::Malformed));
        let sig = "A".repeat(MAX_SIGNATURE_LEN + 4);
        let q = format!("Expires=1&Signature={sig}&Key-Pair-Id=K");
        assert_eq!(extract(Some(&q), &empty), Err(Denied::Malformed));
        let escaped = "%41".repeat(MAX_SIGNATURE_LEN + 1);
        let q = format!("Expires=1&Signature={escaped}&Key-Pair-Id=K");
        assert_eq!(extract(Some(&q), &empty), Err(Denied::Malformed));
    }
}
