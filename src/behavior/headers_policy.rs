//! Response headers policy: security, CORS, custom and removed headers on viewer responses.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::cors::{Cors, CorsConfig};
use super::BehaviorError;

/// Headers the edge adds to or removes from viewer responses, like a CloudFront response
/// headers policy. Built and validated once by [`ResponseHeadersPolicyBuilder::build`], so
/// applying it only copies ready-made values.
///
/// Security headers and CORS headers replace the origin's by default
/// ([`override_origin`](ResponseHeadersPolicyBuilder::override_origin)); custom headers
/// carry their own flag. Removals run first, then additions.
#[derive(Clone, Debug)]
pub struct ResponseHeadersPolicy {
    set: Box<[SetHeader]>,
    cors: Option<Cors>,
    remove: Box<[HeaderName]>,
    server_timing: bool,
    override_origin: bool,
}

#[derive(Clone, Debug)]
struct SetHeader {
    name: HeaderName,
    value: HeaderValue,
    override_origin: bool,
}

impl ResponseHeadersPolicy {
    /// An empty policy to add headers to.
    pub fn builder() -> ResponseHeadersPolicyBuilder {
        ResponseHeadersPolicyBuilder::default()
    }

    /// Applies the policy to a viewer response. `cache_result` (e.g. `Hit`, `Miss`) is what
    /// `Server-Timing` reports. Apply it to the copy sent to the viewer, not to the stored
    /// response: `Server-Timing` is appended, not replaced.
    pub(crate) fn apply(
        &self,
        request_headers: &HeaderMap,
        response: &mut HeaderMap,
        cache_result: &str,
    ) {
        for name in self.remove.iter() {
            response.remove(name);
        }
        for h in self.set.iter() {
            if h.override_origin || !response.contains_key(&h.name) {
                response.insert(h.name.clone(), h.value.clone());
            }
        }
        if let Some(cors) = &self.cors {
            cors.apply(request_headers, response, self.override_origin);
        }
        if self.server_timing {
            if let Some(v) = server_timing(cache_result) {
                // A list header: the origin's own metrics stay.
                response.append(header::HeaderName::from_static("server-timing"), v);
            }
        }
    }
}

/// `cdn-cache; desc=HIT`, quoting the description when it is not a token.
fn server_timing(cache_result: &str) -> Option<HeaderValue> {
    if cache_result.is_empty() {
        return None;
    }
    let is_token = cache_result
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let value = if is_token {
        format!("cdn-cache; desc={cache_result}")
    } else {
        let escaped = cache_result.replace('\\', "\\\\").replace('"', "\\\"");
        format!("cdn-cache; desc=\"{escaped}\"")
    };
    HeaderValue::try_from(value).ok()
}

/// Collects a [`ResponseHeadersPolicy`]; values are checked by [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct ResponseHeadersPolicyBuilder {
    hsts: Option<String>,
    nosniff: bool,
    frame_options: Option<FrameOptions>,
    referrer_policy: Option<String>,
    content_security_policy: Option<String>,
    cors: Option<CorsConfig>,
    custom: Vec<(String, String, bool)>,
    remove: Vec<String>,
    server_timing: bool,
    override_origin: bool,
}

impl Default for ResponseHeadersPolicyBuilder {
    fn default() -> Self {
        Self {
            hsts: None,
            nosniff: false,
            frame_options: None,
            referrer_policy: None,
            content_security_policy: None,
            cors: None,
            custom: Vec::new(),
            remove: Vec::new(),
            server_timing: false,
            override_origin: true,
        }
    }
}

impl ResponseHeadersPolicyBuilder {
    /// `Strict-Transport-Security: max-age=…[; includeSubDomains][; preload]`.
    pub fn hsts(mut self, max_age_secs: u64, include_subdomains: bool, preload: bool) -> Self {
        let mut v = format!("max-age={max_age_secs}");
        if include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if preload {
            v.push_str("; preload");
        }
        self.hsts = Some(v);
        self
    }

    /// `X-Content-Type-Options: nosniff`.
    pub fn content_type_options_nosniff(mut self) -> Self {
        self.nosniff = true;
        self
    }

    /// `X-Frame-Options`.
    pub fn frame_options(mut self, options: FrameOptions) -> Self {
        self.frame_options = Some(options);
        self
    }

    /// `Referrer-Policy`: one of `no-referrer`, `no-referrer-when-downgrade`, `origin`,
    /// `origin-when-cross-origin`, `same-origin`, `strict-origin`,
    /// `strict-origin-when-cross-origin`, `unsafe-url`.
    pub fn referrer_policy(mut self, policy: &str) -> Self {
        self.referrer_policy = Some(policy.to_owned());
        self
    }

    /// `Content-Security-Policy`, taken as written.
    pub fn content_security_policy(mut self, policy: &str) -> Self {
        self.content_security_policy = Some(policy.to_owned());
        self
    }

    /// CORS headers for requests carrying `Origin`.
    pub fn cors(mut self, cors: CorsConfig) -> Self {
        self.cors = Some(cors);
        self
    }

    /// A custom header; `override_origin` replaces a header of that name from the origin,
    /// otherwise the origin's value wins.
    pub fn custom(mut self, name: &str, value: &str, override_origin: bool) -> Self {
        self.custom
            .push((name.to_owned(), value.to_owned(), override_origin));
        self
    }

    /// `Server-Timing: cdn-cache; desc=<cache result>`, appended to the origin's.
    pub fn server_timing(mut self, enabled: bool) -> Self {
        self.server_timing = enabled;
        self
    }

    /// Removes a header the origin sent (e.g. `Server`, `X-Powered-By`).
    pub fn remove(mut self, name: &str) -> Self {
        self.remove.push(name.to_owned());
        self
    }

    /// Whether security and CORS headers replace the origin's (default `true`).
    pub fn override_origin(mut self, override_origin: bool) -> Self {
        self.override_origin = override_origin;
        self
    }

    /// Validates every name and value.
    pub fn build(self) -> Result<ResponseHeadersPolicy, BehaviorError> {
        let mut set = Vec::new();
        let mut security = |name: HeaderName, value: HeaderValue| {
            set.push(SetHeader {
                name,
                value,
                override_origin: self.override_origin,
            });
        };
        if let Some(v) = self.hsts {
            security(
                header::STRICT_TRANSPORT_SECURITY,
                value(header::STRICT_TRANSPORT_SECURITY.as_str(), v.as_str())?,
            );
        }
        if self.nosniff {
            security(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
        }
        if let Some(f) = self.frame_options {
            security(header::X_FRAME_OPTIONS, f.value());
        }
        if let Some(p) = self.referrer_policy {
            security(header::REFERRER_POLICY, referrer_policy(&p)?);
        }
        if let Some(csp) = self.content_security_policy {
            let name = header::CONTENT_SECURITY_POLICY;
            if csp.trim().is_empty() {
                return Err(BehaviorError::HeaderValue {
                    name: name.to_string(),
                    value: csp,
                });
            }
            security(name.clone(), value(name.as_str(), &csp)?);
        }
        for (name, v, override_origin) in &self.custom {
            let name = unprotected(name)?;
            let value = value(name.as_str(), v)?;
            set.push(SetHeader {
                name,
                value,
                override_origin: *override_origin,
            });
        }
        let remove = self
            .remove
            .iter()
            .map(|n| unprotected(n))
            .collect::<Result<_, _>>()?;
        Ok(ResponseHeadersPolicy {
            set: set.into(),
            cors: self.cors.map(CorsConfig::build).transpose()?,
            remove,
            server_timing: self.server_timing,
            override_origin: self.override_origin,
        })
    }
}

/// `X-Frame-Options` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameOptions(Frame);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    Deny,
    SameOrigin,
}

impl FrameOptions {
    /// `DENY`: the page may not be framed.
    pub fn deny() -> Self {
        Self(Frame::Deny)
    }

    /// `SAMEORIGIN`: only pages of the same origin may frame it.
    pub fn same_origin() -> Self {
        Self(Frame::SameOrigin)
    }

    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self.0 {
            Frame::Deny => "DENY",
            Frame::SameOrigin => "SAMEORIGIN",
        })
    }
}

const REFERRER_POLICIES: [&str; 8] = [
    "no-referrer",
    "no-referrer-when-downgrade",
    "origin",
    "origin-when-cross-origin",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
];

fn referrer_policy(policy: &str) -> Result<HeaderValue, BehaviorError> {
    REFERRER_POLICIES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(policy.trim()))
        .map(|known| HeaderValue::from_static(known))
        .ok_or_else(|| BehaviorError::ReferrerPolicy(policy.to_owned()))
}

/// Headers that frame or route the message: adding or removing them would corrupt it.
const PROTECTED: [&str; 10] = [
    "connection",
    "content-encoding",
    "content-length",
    "content-range",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn unprotected(name: &str) -> Result<HeaderName, BehaviorError> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| BehaviorError::HeaderName(name.to_owned()))?;
    if PROTECTED.contains(&parsed.as_str()) {
        return Err(BehaviorError::ProtectedHeader(name.to_owned()));
    }
    Ok(parsed)
}

fn value(name: &str, value: &str) -> Result<HeaderValue, BehaviorError> {
    HeaderValue::from_str(value).map_err(|_| BehaviorError::HeaderValue {
        name: name.to_owned(),
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{CorsConfig, CorsOrigins};
    use super::*;
    use http::header::*;

    fn applied(
        builder: ResponseHeadersPolicyBuilder,
        origin: &[(HeaderName, &'static str)],
    ) -> HeaderMap {
        let mut res: HeaderMap = origin
            .iter()
            .map(|(n, v)| (n.clone(), HeaderValue::from_static(v)))
            .collect();
        builder
            .build()
            .unwrap()
            .apply(&HeaderMap::new(), &mut res, "Hit");
        res
    }

    #[test]
    fn hsts() {
        let b = || ResponseHeadersPolicy::builder();
        let h = |b| applied(b, &[])[STRICT_TRANSPORT_SECURITY].clone();
        assert_eq!(h(b().hsts(31_536_000, false, false)), "max-age=31536000");
        assert_eq!(
            h(b().hsts(63_072_000, true, true)),
            "max-age=63072000; includeSubDomains; preload"
        );
    }

    #[test]
    fn nosniff_and_frame_options() {
        let res = applied(
            ResponseHeadersPolicy::builder()
                .content_type_options_nosniff()
                .frame_options(FrameOptions::deny()),
            &[],
        );
        assert_eq!(res[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(res[X_FRAME_OPTIONS], "DENY");
        let res = applied(
            ResponseHeadersPolicy::builder().frame_options(FrameOptions::same_origin()),
            &[],
        );
        assert_eq!(res[X_FRAME_OPTIONS], "SAMEORIGIN");
    }

    #[test]
    fn referrer_policy_is_validated() {
        let res = applied(
            ResponseHeadersPolicy::builder().referrer_policy("Strict-Origin-When-Cross-Origin"),
            &[],
        );
        assert_eq!(res[REFERRER_POLICY], "strict-origin-when-cross-origin");
        let err = ResponseHeadersPolicy::builder()
            .referrer_policy("sometimes")
            .build()
            .unwrap_err();
        assert_eq!(err, BehaviorError::ReferrerPolicy("sometimes".to_owned()));
    }

    #[test]
    fn content_security_policy() {
        let csp = "default-src 'self'; img-src *";
        let res = applied(
            ResponseHeadersPolicy::builder().content_security_policy(csp),
            &[],
        );
        assert_eq!(res[CONTENT_SECURITY_POLICY], csp);
        for bad in ["", "a\nb"] {
            let err = ResponseHeadersPolicy::builder()
                .content_security_policy(bad)
                .build();
            assert!(matches!(err, Err(BehaviorError::HeaderValue { value, .. }) if value == bad));
        }
    }

    #[test]
    fn security_headers_override_origin_unless_disabled() {
        let origin = [
            (X_FRAME_OPTIONS, "ALLOWALL"),
            (REFERRER_POLICY, "unsafe-url"),
        ];
        let b = || {
            ResponseHeadersPolicy::builder()
                .frame_options(FrameOptions::deny())
                .referrer_policy("no-referrer")
                .content_type_options_nosniff()
        };
        let res = applied(b(), &origin);
        assert_eq!(res[X_FRAME_OPTIONS], "DENY");
        assert_eq!(res[REFERRER_POLICY], "no-referrer");
        let res = applied(b().override_origin(false), &origin);
        assert_eq!(res[X_FRAME_OPTIONS], "ALLOWALL");
        assert_eq!(res[REFERRER_POLICY], "unsafe-url");
        assert_eq!(
            res[X_CONTENT_TYPE_OPTIONS], "nosniff",
            "absent ones are still added"
        );
    }

    #[test]
    fn custom_headers_with_their_own_override() {
        let origin = [
            (HeaderName::from_static("x-a"), "origin"),
            (HeaderName::from_static("x-b"), "origin"),
        ];
        let res = applied(
            ResponseHeadersPolicy::builder()
                .custom("X-A", "edge", true)
                .custom("x-b", "edge", false)
                .custom("x-c", "edge", false),
            &origin,
        );
        assert_eq!(res["x-a"], "edge");
        assert_eq!(res["x-b"], "origin");
        assert_eq!(res["x-c"], "edge");
        let err = |b: ResponseHeadersPolicyBuilder| b.build().unwrap_err();
        let b = ResponseHeadersPolicy::builder;
        assert_eq!(
            err(b().custom("x y", "v", true)),
            BehaviorError::HeaderName("x y".into())
        );
        assert!(matches!(
            err(b().custom("x-a", "a\rb", true)),
            BehaviorError::HeaderValue { .. }
        ));
        assert_eq!(
            err(b().custom("Content-Length", "0", true)),
            BehaviorError::ProtectedHeader("Content-Length".into())
        );
    }

    #[test]
    fn remove_runs_before_additions() {
        let origin = [
            (SERVER, "nginx"),
            (HeaderName::from_static("x-powered-by"), "php"),
            (ETAG, "\"1\""),
        ];
        let res = applied(
            ResponseHeadersPolicy::builder()
                .remove("server")
                .remove("X-Powered-By")
                .custom("x-powered-by", "tower-cdn", false),
            &origin,
        );
        assert!(!res.contains_key(SERVER));
        assert_eq!(res["x-powered-by"], "tower-cdn");
        assert_eq!(res[ETAG], "\"1\"");
        let err = ResponseHeadersPolicy::builder()
            .remove("transfer-encoding")
            .build();
        assert_eq!(
            err.unwrap_err(),
            BehaviorError::ProtectedHeader("transfer-encoding".into())
        );
    }

    #[test]
    fn server_timing_is_appended() {
        let origin = [(HeaderName::from_static("server-timing"), "db;dur=53")];
        let res = applied(
            ResponseHeadersPolicy::builder().server_timing(true),
            &origin,
        );
        let values: Vec<_> = res.get_all("server-timing").iter().collect();
        assert_eq!(values, ["db;dur=53", "cdn-cache; desc=Hit"]);
        assert!(!applied(ResponseHeadersPolicy::builder(), &[]).contains_key("server-timing"));
        assert_eq!(
            server_timing("hit for pass").unwrap(),
            "cdn-cache; desc=\"hit for pass\""
        );
        assert_eq!(server_timing("a\"b").unwrap(), "cdn-cache; desc=\"a\\\"b\"");
        assert!(server_timing("").is_none());
        assert!(server_timing("a\nb").is_none());
    }

    #[test]
    fn cors_through_the_policy() {
        let policy = ResponseHeadersPolicy::builder()
            .cors(CorsConfig::new(CorsOrigins::list(["https://app.example"])))
            .build()
            .unwrap();
        let req: HeaderMap = [(ORIGIN, HeaderValue::from_static("https://app.example"))]
            .into_iter()
            .collect();
        let mut res: HeaderMap = [(VARY, HeaderValue::from_static("Accept-Encoding"))]
            .into_iter()
            .collect();
        policy.apply(&req, &mut res, "Miss");
        policy.apply(&req, &mut res, "Miss");
        assert_eq!(res[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(
            res.get_all(VARY).iter().collect::<Vec<_>>(),
            ["Accept-Encoding, Origin"]
        );
        let err = ResponseHeadersPolicy::builder()
            .cors(CorsConfig::new(CorsOrigins::list(["nope"])))
            .build();
        assert_eq!(err.unwrap_err(), BehaviorError::CorsOrigin("nope".into()));
    }
}
