//! Storability, freshness lifetime and age (RFC 9111 §3, §4.2), as pure functions of the
//! request, the response and the time.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, AGE, AUTHORIZATION, DATE, EXPIRES, LAST_MODIFIED, SET_COOKIE};
use http::{Method, StatusCode};

use super::cache_control::{delta_seconds, CacheControl};
use crate::status::NoStoreReason;

/// The edge's freshness rules: TTL clamps like a CloudFront cache policy, and heuristics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TtlRules {
    pub(crate) min: u64,
    pub(crate) default: u64,
    pub(crate) max: u64,
    pub(crate) heuristic_fraction: f64,
    pub(crate) heuristic_max: u64,
    /// The error caching minimum TTL (0: off).
    pub(crate) error_min: u64,
}

/// Status codes whose semantics this cache understands (RFC 9111 §3, `must-understand` in
/// §5.2.2.3). 206 is left out: partial content is never stored.
pub(crate) fn understood_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=305 | 307 | 308 | 400..=417 | 421..=426 | 428 | 429 | 431 | 451 | 500..=505
    )
}

/// Status codes defined as heuristically cacheable (RFC 9110 §15.1).
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a shared cache may store this response (RFC 9111 §3, §3.5).
pub(crate) fn storable(
    method: &Method,
    request_cc: &CacheControl,
    request_headers: &HeaderMap,
    status: StatusCode,
    response_cc: &CacheControl,
    response_headers: &HeaderMap,
    rules: &TtlRules,
) -> Result<(), NoStoreReason> {
    if method != Method::GET && method != Method::OPTIONS {
        return Err(NoStoreReason::Method);
    }
    if request_cc.no_store {
        return Err(NoStoreReason::RequestNoStore);
    }
    // §3: any final status may be stored; 1xx is interim. 206 and 304 only when the cache
    // understands them, and this one combines no partial content and keeps no 304 as an
    // answer of its own. With `must-understand`, only statuses it understands (§5.2.2.3).
    if status.is_informational()
        || matches!(status.as_u16(), 206 | 304)
        || (response_cc.must_understand && !understood_status(status))
    {
        return Err(NoStoreReason::Status);
    }
    // §5.2.2.3: must-understand with an understood status overrides no-store.
    if response_cc.no_store && !response_cc.must_understand {
        return Err(NoStoreReason::NoStore);
    }
    if response_cc.private {
        return Err(NoStoreReason::Private);
    }
    // Directives past the parser's bound were not read: fail closed.
    if response_cc.overflowed {
        return Err(NoStoreReason::DirectiveLimit);
    }
    if request_headers.contains_key(AUTHORIZATION)
        && !(response_cc.public || response_cc.must_revalidate || response_cc.s_maxage.is_some())
    {
        return Err(NoStoreReason::Authorization);
    }
    // §3: some explicit permission, a heuristically cacheable status, or a cache policy TTL.
    let explicit = response_cc.public || explicit_freshness(response_cc, response_headers);
    if !explicit && !heuristically_cacheable(status) && rules.default == 0 {
        return Err(NoStoreReason::NoFreshness);
    }
    Ok(())
}

/// Whether a stored copy of the response would carry `Set-Cookie` to later viewers: it has
/// the field, and neither a qualified `private="set-cookie"` (§5.2.2.7) nor a qualified
/// `no-cache="set-cookie"` (§5.2.2.4) keeps it out of storage. RFC 9111 §7.3 leaves storing
/// it to the cache; a shared cache that stored it would hand one viewer's session to the
/// next, so by default such a response is not stored.
pub(crate) fn stores_set_cookie(cc: &CacheControl, headers: &HeaderMap) -> bool {
    headers.contains_key(SET_COOKIE)
        && !cc
            .private_fields
            .iter()
            .chain(&cc.no_cache_fields)
            .any(|name| *name == SET_COOKIE)
}

/// Whether the response states its freshness: `s-maxage`, `max-age` or `Expires` (§4.2.1).
pub(crate) fn explicit_freshness(cc: &CacheControl, headers: &HeaderMap) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(EXPIRES)
}

/// The freshness lifetime in seconds (RFC 9111 §4.2.1), clamped by the TTL rules. `None`
/// when there is neither explicit nor heuristic freshness and no default TTL: such a
/// response is not worth storing.
pub(crate) fn freshness_lifetime(
    status: StatusCode,
    cc: &CacheControl,
    headers: &HeaderMap,
    rules: &TtlRules,
) -> Option<u64> {
    let explicit = cc.s_maxage.or(cc.max_age).or_else(|| {
        headers.get(EXPIRES).map(|expires| {
            // §5.3: an invalid Expires (e.g. "0") means already expired.
            let Some(expires) = http_date(expires.as_bytes()) else {
                return 0;
            };
            let date = date_value(headers).unwrap_or(expires);
            expires
                .duration_since(date)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
    });
    let lifetime = match explicit {
        Some(l) => l,
        None if rules.default > 0 => rules.default,
        None => heuristic(status, cc, headers, rules)?,
    };
    Some(lifetime.clamp(rules.min, rules.max.max(rules.min)))
}

/// The freshness lifetime the edge stores a response for: [`freshness_lifetime`], except for
/// an error (status 400 and up) without explicit freshness, which is kept for `error_ttl`
/// (the error-caching TTL configured for its status, CloudFront's rule) or else for a
/// heuristic where RFC 9111 §4.2.2 allows one (404, 405, 410, 414, 501 with a
/// `Last-Modified`), never for a default TTL. `None`: not worth storing.
pub(crate) fn stored_lifetime(
    status: StatusCode,
    cc: &CacheControl,
    headers: &HeaderMap,
    rules: &TtlRules,
    error_ttl: Option<u64>,
) -> Option<u64> {
    if status.as_u16() < 400 || explicit_freshness(cc, headers) {
        return freshness_lifetime(status, cc, headers, rules);
    }
    error_ttl.or_else(|| {
        heuristic(status, cc, headers, rules)
            .map(|lifetime| lifetime.clamp(rules.min, rules.max.max(rules.min)))
    })
}

/// §4.2.2: a fraction of the time since Last-Modified, for heuristically cacheable statuses
/// or responses marked `public`; never for a status the cache does not understand (§3 lets
/// such a response be stored only for its explicit freshness).
fn heuristic(
    status: StatusCode,
    cc: &CacheControl,
    headers: &HeaderMap,
    rules: &TtlRules,
) -> Option<u64> {
    if !(heuristically_cacheable(status) || (cc.public && understood_status(status))) {
        return None;
    }
    let last_modified = http_date(headers.get(LAST_MODIFIED)?.as_bytes())?;
    let date = date_value(headers)?;
    let since = date.duration_since(last_modified).ok()?.as_secs();
    let lifetime = (since as f64 * rules.heuristic_fraction) as u64;
    (lifetime > 0).then_some(lifetime.min(rules.heuristic_max))
}

/// `corrected_initial_age` of RFC 9111 §4.2.3, in seconds.
pub(crate) fn corrected_initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> u64 {
    let apparent_age = date_value(headers)
        .and_then(|date| response_time.duration_since(date).ok())
        .map_or(0, |d| d.as_secs());
    let response_delay = response_time
        .duration_since(request_time)
        .map_or(0, |d| d.as_secs());
    let age_value = headers
        .get(AGE)
        .and_then(|v| delta_seconds(v.as_bytes().trim_ascii()))
        .unwrap_or(0);
    apparent_age.max(age_value.saturating_add(response_delay))
}

/// `current_age` of RFC 9111 §4.2.3, in seconds.
pub(crate) fn current_age(
    corrected_initial_age: u64,
    response_time: SystemTime,
    now: SystemTime,
) -> u64 {
    let resident = now.duration_since(response_time).unwrap_or(Duration::ZERO);
    corrected_initial_age.saturating_add(resident.as_secs())
}

/// The `Date` of a response, when present and valid.
pub(crate) fn date_value(headers: &HeaderMap) -> Option<SystemTime> {
    http_date(headers.get(DATE)?.as_bytes())
}

/// Parses any of the three HTTP-date forms (RFC 9110 §5.6.7).
pub(crate) fn http_date(bytes: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(bytes).ok()?.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const RFC: TtlRules = TtlRules {
        min: 0,
        default: 0,
        max: 31_536_000,
        heuristic_fraction: 0.1,
        heuristic_max: 86_400,
        error_min: 0,
    };

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn lifetime(status: u16, pairs: &[(&str, &str)], rules: &TtlRules) -> Option<u64> {
        let h = headers(pairs);
        freshness_lifetime(
            StatusCode::from_u16(status).unwrap(),
            &CacheControl::parse(&h),
            &h,
            rules,
        )
    }

    fn store(req: &[(&str, &str)], status: u16, res: &[(&str, &str)]) -> Result<(), NoStoreReason> {
        let (rq, rs) = (headers(req), headers(res));
        storable(
            &Method::GET,
            &CacheControl::parse_request(&rq),
            &rq,
            StatusCode::from_u16(status).unwrap(),
            &CacheControl::parse(&rs),
            &rs,
            &RFC,
        )
    }

    const DATE_0: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const DATE_100: &str = "Sun, 06 Nov 1994 08:51:17 GMT";

    #[test]
    fn s_maxage_wins_over_max_age_and_expires() {
        // §4.2.1: a shared cache uses s-maxage, then max-age, then Expires.
        let p = [
            ("cache-control", "max-age=10, s-maxage=20"),
            ("date", DATE_0),
            ("expires", DATE_100),
        ];
        assert_eq!(lifetime(200, &p, &RFC), Some(20));
        let p = [
            ("cache-control", "max-age=10"),
            ("date", DATE_0),
            ("expires", DATE_100),
        ];
        assert_eq!(lifetime(200, &p, &RFC), Some(10));
    }

    #[test]
    fn expires_is_relative_to_date() {
        let p = [("date", DATE_0), ("expires", DATE_100)];
        assert_eq!(lifetime(200, &p, &RFC), Some(100));
    }

    #[test]
    fn invalid_expires_means_already_stale() {
        // §5.3
        assert_eq!(lifetime(200, &[("expires", "0")], &RFC), Some(0));
    }

    #[test]
    fn heuristic_uses_a_fraction_of_last_modified_age() {
        // §4.2.2: 10% of 1000 s.
        let p = [
            ("date", "Sun, 06 Nov 1994 09:06:17 GMT"),
            ("last-modified", DATE_0),
        ];
        assert_eq!(lifetime(200, &p, &RFC), Some(100));
        let capped = TtlRules {
            heuristic_max: 50,
            ..RFC
        };
        assert_eq!(lifetime(200, &p, &capped), Some(50));
    }

    #[test]
    fn heuristic_only_for_heuristically_cacheable_statuses() {
        let p = [
            ("date", "Sun, 06 Nov 1994 09:06:17 GMT"),
            ("last-modified", DATE_0),
        ];
        assert_eq!(lifetime(302, &p, &RFC), None);
        assert_eq!(lifetime(404, &p, &RFC), Some(100));
    }

    #[test]
    fn ttl_clamps_apply_like_a_cache_policy() {
        let rules = TtlRules {
            min: 30,
            default: 60,
            max: 90,
            ..RFC
        };
        assert_eq!(
            lifetime(200, &[("cache-control", "max-age=5")], &rules),
            Some(30)
        );
        assert_eq!(
            lifetime(200, &[("cache-control", "max-age=500")], &rules),
            Some(90)
        );
        assert_eq!(lifetime(200, &[], &rules), Some(60));
    }

    #[test]
    fn nothing_without_freshness_under_rfc_defaults() {
        assert_eq!(lifetime(200, &[], &RFC), None);
    }

    #[test]
    fn corrected_age_counts_origin_age_and_delay() {
        // §4.2.3
        let t0 = httpdate::parse_http_date(DATE_0).unwrap();
        let h = headers(&[("date", DATE_0), ("age", "30")]);
        let age = corrected_initial_age(&h, t0, t0 + Duration::from_secs(2));
        assert_eq!(age, 32);
        assert_eq!(current_age(age, t0, t0 + Duration::from_secs(10)), 42);
    }

    #[test]
    fn apparent_age_from_date_when_larger() {
        let t0 = httpdate::parse_http_date(DATE_0).unwrap();
        let h = headers(&[("date", DATE_0)]);
        assert_eq!(
            corrected_initial_age(
                &h,
                t0 + Duration::from_secs(50),
                t0 + Duration::from_secs(50)
            ),
            50
        );
    }

    #[test]
    fn no_store_private_and_authorization_are_not_stored() {
        // §3, §5.2.2.5, §5.2.2.7, §3.5
        assert_eq!(
            store(&[], 200, &[("cache-control", "no-store, max-age=9")]),
            Err(NoStoreReason::NoStore)
        );
        assert_eq!(
            store(&[], 200, &[("cache-control", "private, max-age=9")]),
            Err(NoStoreReason::Private)
        );
        assert_eq!(
            store(
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "max-age=9")]
            ),
            Err(NoStoreReason::RequestNoStore)
        );
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            store(&auth, 200, &[("cache-control", "max-age=9")]),
            Err(NoStoreReason::Authorization)
        );
        assert_eq!(
            store(&auth, 200, &[("cache-control", "public, max-age=9")]),
            Ok(())
        );
        assert_eq!(
            store(&auth, 200, &[("cache-control", "s-maxage=9")]),
            Ok(())
        );
        assert_eq!(
            store(
                &auth,
                200,
                &[("cache-control", "must-revalidate, max-age=9")]
            ),
            Ok(())
        );
    }

    #[test]
    fn must_understand_overrides_no_store_for_understood_status() {
        // §5.2.2.3
        let cc = [("cache-control", "must-understand, no-store, max-age=9")];
        assert_eq!(store(&[], 200, &cc), Ok(()));
        assert_eq!(store(&[], 299, &cc), Err(NoStoreReason::Status));
    }

    #[test]
    fn partial_content_is_never_stored() {
        assert_eq!(
            store(&[], 206, &[("cache-control", "max-age=9")]),
            Err(NoStoreReason::Status)
        );
    }

    #[test]
    fn overflowed_cache_control_is_not_stored() {
        // Fail closed: directives past the bound were not all read.
        let many = format!("max-age=60, {}", "ext, ".repeat(80));
        assert_eq!(
            store(&[], 200, &[("cache-control", &many)]),
            Err(NoStoreReason::DirectiveLimit)
        );
        let private = many + "private";
        assert_eq!(
            store(&[], 200, &[("cache-control", &private)]),
            Err(NoStoreReason::Private)
        );
    }

    #[test]
    fn set_cookie_would_be_stored_unless_a_qualified_directive_names_it() {
        let with = |cc: &str| {
            let h = headers(&[("set-cookie", "session=1"), ("cache-control", cc)]);
            stores_set_cookie(&CacheControl::parse(&h), &h)
        };
        assert!(with("max-age=60"));
        // §5.2.2.7, §5.2.2.4: the named field is not stored, the rest may be.
        assert!(!with("max-age=60, private=\"Set-Cookie\""));
        assert!(!with("max-age=60, no-cache=\"set-cookie, x-a\""));
        assert!(with("max-age=60, private=\"x-a\""));
        let h = headers(&[("cache-control", "max-age=60")]);
        assert!(!stores_set_cookie(&CacheControl::parse(&h), &h));
    }

    #[test]
    fn any_final_status_may_be_stored_for_explicit_freshness() {
        // RFC 9111 §3: the status must be final; understood only for 206, 304 and
        // must-understand.
        let explicit = [("cache-control", "max-age=60")];
        for status in [200, 299, 302, 418, 499, 599] {
            assert_eq!(store(&[], status, &explicit), Ok(()), "{status}");
        }
        for status in [100, 101, 103, 206, 304] {
            assert_eq!(
                store(&[], status, &explicit),
                Err(NoStoreReason::Status),
                "{status}"
            );
        }
        let heuristic = [("last-modified", DATE_0), ("date", DATE_100)];
        assert_eq!(store(&[], 299, &heuristic), Err(NoStoreReason::NoFreshness));
    }

    #[test]
    fn unknown_statuses_get_no_heuristic_even_when_public() {
        // §4.2.2 via §3: heuristics are for heuristically cacheable statuses (or `public`
        // with a status the cache understands).
        let p = [
            ("cache-control", "public"),
            ("date", "Sun, 06 Nov 1994 09:06:17 GMT"),
            ("last-modified", DATE_0),
        ];
        assert_eq!(lifetime(200, &p, &RFC), Some(100));
        assert_eq!(lifetime(302, &p, &RFC), Some(100));
        assert_eq!(lifetime(299, &p, &RFC), None);
        assert_eq!(lifetime(599, &p, &RFC), None);
    }

    fn stored(status: u16, pairs: &[(&str, &str)], error_ttl: Option<u64>) -> Option<u64> {
        let h = headers(pairs);
        let status = StatusCode::from_u16(status).unwrap();
        stored_lifetime(status, &CacheControl::parse(&h), &h, &RFC, error_ttl)
    }

    #[test]
    fn errors_without_freshness_get_the_error_ttl_else_a_heuristic_never_the_default() {
        let lm = [
            ("date", "Sun, 06 Nov 1994 09:06:17 GMT"),
            ("last-modified", DATE_0),
        ];
        // RFC 9110 §15.1: 404, 405, 410, 414, 501 are heuristically cacheable.
        for status in [404, 405, 410, 414, 501] {
            assert_eq!(stored(status, &lm, None), Some(100), "{status}");
            assert_eq!(stored(status, &lm, Some(10)), Some(10), "{status}");
        }
        assert_eq!(stored(503, &lm, None), None);
        assert_eq!(stored(503, &[], Some(10)), Some(10));
        assert_eq!(stored(404, &[], None), None);
        let with_default = TtlRules {
            default: 3_600,
            ..RFC
        };
        let h = HeaderMap::new();
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let cc = CacheControl::default();
        assert_eq!(stored_lifetime(status, &cc, &h, &with_default, None), None);
        // Explicit freshness wins over the error TTL.
        assert_eq!(
            stored(503, &[("cache-control", "max-age=5")], Some(10)),
            Some(5)
        );
    }

    #[test]
    fn status_without_freshness_or_heuristic_is_not_stored() {
        assert_eq!(store(&[], 302, &[]), Err(NoStoreReason::NoFreshness));
        assert_eq!(store(&[], 302, &[("cache-control", "max-age=5")]), Ok(()));
    }
}
