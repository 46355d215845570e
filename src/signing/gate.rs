//! The signature check at entry: the one step of the request path that signed URLs and
//! signed cookies add, called by the service for a behavior with a trusted key group.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};

use super::{Denied, KeyGroup};
use crate::body::CdnBody;
use crate::client::viewer_ip;
use crate::key::host_of;
use crate::layer::Shared;
use crate::respond::edge_error;
use crate::service::set_path_and_query;

/// Admits a request to a behavior that trusts `group`: on a valid signature the signing
/// parameters and cookies are removed from `req`, so the cache key and the origin never see
/// them; otherwise the `403` the viewer gets (boxed: it is the rare path).
pub(crate) fn admit<B, R>(
    shared: &Shared,
    group: &KeyGroup,
    skew: std::time::Duration,
    https: bool,
    req: &mut Request<B>,
) -> Result<(), Box<Response<CdnBody<R>>>> {
    check_signature(shared, group, skew, https, req)
        .map_err(|denied| Box::new(denied_response(shared, denied)))
}

/// Verifies a signed URL or signed cookies; on success removes the signing parameters and
/// cookies, so the cache key and the origin never see them.
///
/// The resource URL is built from the path as entry normalised it, the one the behavior was
/// chosen by and the origin receives: a policy for `/members/public/*` does not cover
/// `/members/public/../vip/x`, which is `/members/vip/x` here. A URL signed for a path that
/// is already normal verifies unchanged.
fn check_signature<B>(
    shared: &Shared,
    group: &KeyGroup,
    skew: std::time::Duration,
    https: bool,
    req: &mut Request<B>,
) -> Result<(), Denied> {
    let uri = req.uri();
    let authority = String::from_utf8_lossy(host_of(uri, req.headers()));
    // The query without the signing parameters: what the policy covers, and what the cache
    // key and the origin see once the signature is accepted.
    let stripped = uri.query().map(super::strip_signing_params);
    let url = super::resource_url(
        if https { "https" } else { "http" },
        &authority,
        uri.path(),
        stripped.as_deref(),
    );
    let now = shared
        .clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let client = viewer_ip(req);
    match super::verify(
        group,
        &url,
        uri.query(),
        req.headers(),
        client,
        now,
        skew.as_secs(),
    ) {
        Ok(verified) => {
            tracing::debug!(
                key_id = verified.key_id,
                cookies = verified.from_cookies,
                "signature accepted"
            );
            let path_and_query = match stripped {
                Some(Cow::Owned(query)) if query.is_empty() => Some(uri.path().to_owned()),
                Some(Cow::Owned(query)) => Some(format!("{}?{query}", uri.path())),
                _ => None,
            };
            if let Some(path_and_query) = path_and_query {
                set_path_and_query(req, &path_and_query);
            }
            strip_signing_cookies(req);
            Ok(())
        }
        Err(denied) => {
            tracing::info!(reason = denied.as_str(), path = %uri.path(), "signed request denied");
            Err(denied)
        }
    }
}

/// The `403` for a request whose signature was refused: a short reason, or one shared text
/// for every cause that could reveal something about the keys.
fn denied_response<R>(shared: &Shared, denied: Denied) -> Response<CdnBody<R>> {
    let mut res = edge_error(shared, StatusCode::FORBIDDEN);
    *res.body_mut() = CdnBody::full(Bytes::from(format!("{}\n", denied.public_message())));
    let cache_status = format!("{}; fwd=miss; detail=denied", shared.cache_name);
    if let Ok(v) = HeaderValue::try_from(cache_status) {
        res.headers_mut()
            .insert(HeaderName::from_static("cache-status"), v);
    }
    res
}

/// Removes the CloudFront signing cookies from a request.
fn strip_signing_cookies<B>(req: &mut Request<B>) {
    if !req.headers().contains_key(http::header::COOKIE) {
        return;
    }
    let cookies: Vec<String> = req
        .headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with("CloudFront-"))
        .map(str::to_owned)
        .collect();
    req.headers_mut().remove(http::header::COOKIE);
    if let Ok(v) = HeaderValue::try_from(cookies.join("; ")) {
        if !cookies.is_empty() {
            req.headers_mut().insert(http::header::COOKIE, v);
        }
    }
}
