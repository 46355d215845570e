//! CORS response headers for a response headers policy.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue, VARY};
use http::{Method, Uri};

use super::BehaviorError;

/// The origins a [`CorsConfig`] grants access to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsOrigins(Origins);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Origins {
    Any,
    List(Vec<String>),
}

impl CorsOrigins {
    /// Any origin: `Access-Control-Allow-Origin: *`. Not combinable with credentials.
    pub fn any() -> Self {
        Self(Origins::Any)
    }

    /// The listed origins (`scheme://host[:port]`, compared case-insensitively): a listed
    /// request `Origin` is echoed back, and responses carry `Vary: Origin`.
    pub fn list<I>(origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self(Origins::List(origins.into_iter().map(Into::into).collect()))
    }
}

/// The CORS part of a response headers policy, like CloudFront's CORS configuration.
///
/// Headers are added only to requests carrying `Origin`; the preflight-only ones
/// (`Allow-Methods`, `Allow-Headers`, `Max-Age`) only to requests carrying
/// `Access-Control-Request-Method`. Allowed methods default to `GET` and `HEAD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsConfig {
    origins: CorsOrigins,
    allow_methods: Vec<Method>,
    allow_headers: Vec<String>,
    expose_headers: Vec<String>,
    max_age: Option<Duration>,
    allow_credentials: bool,
}

impl CorsConfig {
    /// A CORS configuration for these origins.
    pub fn new(origins: CorsOrigins) -> Self {
        Self {
            origins,
            allow_methods: vec![Method::GET, Method::HEAD],
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            max_age: None,
            allow_credentials: false,
        }
    }

    /// The methods a preflight allows (`Access-Control-Allow-Methods`).
    pub fn allow_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.allow_methods = methods.into_iter().collect();
        self
    }

    /// The request headers a preflight allows (`Access-Control-Allow-Headers`): header
    /// names, or `*`.
    pub fn allow_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.allow_headers = names.into_iter().map(Into::into).collect();
        self
    }

    /// The response headers scripts may read (`Access-Control-Expose-Headers`): header
    /// names, or `*`.
    pub fn expose_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.expose_headers = names.into_iter().map(Into::into).collect();
        self
    }

    /// How long browsers may cache a preflight (`Access-Control-Max-Age`, whole seconds).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Whether credentialed requests are allowed (`Access-Control-Allow-Credentials`).
    pub fn allow_credentials(mut self, allow: bool) -> Self {
        self.allow_credentials = allow;
        self
    }

    /// Validates the configuration into ready-made header values.
    pub(crate) fn build(self) -> Result<Cors, BehaviorError> {
        let origins = match self.origins.0 {
            Origins::Any if self.allow_credentials => {
                return Err(BehaviorError::CorsCredentialsWithAnyOrigin)
            }
            Origins::Any => None,
            Origins::List(list) => Some(list.iter().map(|o| origin(o)).collect::<Result<_, _>>()?),
        };
        let methods: Vec<&str> = self.allow_methods.iter().map(Method::as_str).collect();
        Ok(Cors {
            origins,
            allow_methods: join(&methods)?,
            allow_headers: join(&header_names(&self.allow_headers)?)?,
            expose_headers: join(&header_names(&self.expose_headers)?)?,
            max_age: self.max_age.map(|d| d.as_secs().into()),
            allow_credentials: self.allow_credentials,
        })
    }
}

/// A validated [`CorsConfig`].
#[derive(Clone, Debug)]
pub(crate) struct Cors {
    /// `None` for any origin.
    origins: Option<Box<[HeaderValue]>>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
}

impl Cors {
    /// Adds the CORS headers for this request; origin headers are replaced only when
    /// `override_origin`.
    pub(crate) fn apply(
        &self,
        request: &HeaderMap,
        response: &mut HeaderMap,
        override_origin: bool,
    ) {
        let mut set = |name: HeaderName, value: &HeaderValue| {
            if override_origin || !response.contains_key(&name) {
                response.insert(name, value.clone());
            }
        };
        let origin = request.get(header::ORIGIN);
        let allow_origin = match (&self.origins, origin) {
            (_, None) => None,
            (None, Some(_)) => Some(HeaderValue::from_static("*")),
            (Some(list), Some(origin)) => list
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
                .then(|| origin.clone()),
        };
        if let Some(allow_origin) = allow_origin {
            set(header::ACCESS_CONTROL_ALLOW_ORIGIN, &allow_origin);
            if self.allow_credentials {
                set(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    &HeaderValue::from_static("true"),
                );
            }
            if let Some(v) = &self.expose_headers {
                set(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
            }
            if request.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
                let preflight = [
                    (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
                    (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
                    (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
                ];
                for (name, value) in preflight {
                    if let Some(v) = value {
                        set(name, v);
                    }
                }
            }
        }
        // With a list, the answer depends on the request's Origin, with or without one.
        if self.origins.is_some() {
            merge_vary(response, "Origin");
        }
    }
}

/// Adds `name` to `Vary` unless it is already there (or `Vary: *`), merging the lines into
/// one.
pub(crate) fn merge_vary(headers: &mut HeaderMap, name: &'static str) {
    let mut merged = String::new();
    let mut rewritable = true;
    for value in headers.get_all(VARY) {
        let Ok(value) = value.to_str() else {
            // Opaque bytes cannot be merged into text: leave them be.
            rewritable = false;
            continue;
        };
        let mut items = value.split(',').map(str::trim);
        if items.any(|v| v == "*" || v.eq_ignore_ascii_case(name)) {
            return;
        }
        let value = value.trim();
        if !value.is_empty() {
            if !merged.is_empty() {
                merged.push_str(", ");
            }
            merged.push_str(value);
        }
    }
    if !rewritable {
        headers.append(VARY, HeaderValue::from_static(name));
        return;
    }
    if !merged.is_empty() {
        merged.push_str(", ");
    }
    merged.push_str(name);
    // Visible-ASCII pieces joined by ", " always make a valid value.
    if let Ok(v) = HeaderValue::try_from(merged) {
        headers.insert(VARY, v);
    }
}

/// Validates `scheme://host[:port]`, nothing more.
fn origin(s: &str) -> Result<HeaderValue, BehaviorError> {
    let invalid = || BehaviorError::CorsOrigin(s.to_owned());
    let uri: Uri = s.parse().map_err(|_| invalid())?;
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        return Err(invalid());
    };
    if authority.as_str().contains('@') || s != format!("{scheme}://{authority}") {
        return Err(invalid());
    }
    HeaderValue::from_str(s).map_err(|_| invalid())
}

/// Validates header names (or `*`), lowercased.
fn header_names(names: &[String]) -> Result<Vec<String>, BehaviorError> {
    names
        .iter()
        .map(|n| match n.as_str() {
            "*" => Ok("*".to_owned()),
            n => HeaderName::from_bytes(n.as_bytes())
                .map(|h| h.as_str().to_owned())
                .map_err(|_| BehaviorError::HeaderName(n.to_owned())),
        })
        .collect()
}

/// `a, b, c`, or `None` for an empty list.
fn join<S: AsRef<str>>(items: &[S]) -> Result<Option<HeaderValue>, BehaviorError> {
    if items.is_empty() {
        return Ok(None);
    }
    let joined = items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    // Method extensions are tokens and names are validated, so this only fails on bugs;
    // still report rather than panic.
    HeaderValue::try_from(joined.as_str())
        .map(Some)
        .map_err(|_| BehaviorError::HeaderValue {
            name: "access-control".to_owned(),
            value: joined,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::*;

    fn request(pairs: &[(HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (n.clone(), HeaderValue::from_static(v)))
            .collect()
    }

    fn listed() -> Cors {
        CorsConfig::new(CorsOrigins::list([
            "https://app.example",
            "http://localhost:3000",
        ]))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(["Content-Type", "X-Token"])
        .expose_headers(["ETag"])
        .max_age(Duration::from_secs(600))
        .allow_credentials(true)
        .build()
        .unwrap()
    }

    #[test]
    fn listed_origin_is_echoed_with_vary() {
        let mut res = HeaderMap::new();
        let req = request(&[(ORIGIN, "https://APP.example")]);
        listed().apply(&req, &mut res, true);
        assert_eq!(res[ACCESS_CONTROL_ALLOW_ORIGIN], "https://APP.example");
        assert_eq!(res[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(res[ACCESS_CONTROL_EXPOSE_HEADERS], "etag");
        assert_eq!(res[VARY], "Origin");
        assert!(
            !res.contains_key(ACCESS_CONTROL_ALLOW_METHODS),
            "not a preflight"
        );
    }

    #[test]
    fn unlisted_or_missing_origin_gets_only_vary() {
        for req in [request(&[(ORIGIN, "https://evil.example")]), request(&[])] {
            let mut res = HeaderMap::new();
            listed().apply(&req, &mut res, true);
            assert_eq!(res.len(), 1);
            assert_eq!(res[VARY], "Origin");
        }
    }

    #[test]
    fn preflight_headers() {
        let mut res = HeaderMap::new();
        let req = request(&[
            (ORIGIN, "http://localhost:3000"),
            (ACCESS_CONTROL_REQUEST_METHOD, "POST"),
        ]);
        listed().apply(&req, &mut res, true);
        assert_eq!(res[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(res[ACCESS_CONTROL_ALLOW_HEADERS], "content-type, x-token");
        assert_eq!(res[ACCESS_CONTROL_MAX_AGE], "600");
    }

    #[test]
    fn any_origin_is_a_star_without_vary() {
        let cors = CorsConfig::new(CorsOrigins::any()).build().unwrap();
        let mut res = HeaderMap::new();
        cors.apply(&request(&[(ORIGIN, "https://x.example")]), &mut res, true);
        assert_eq!(res[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!res.contains_key(VARY));
        assert!(!res.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let mut res = HeaderMap::new();
        cors.apply(&request(&[]), &mut res, true);
        assert!(res.is_empty());
    }

    #[test]
    fn origin_override_flag() {
        let origin_sent = || request(&[(ACCESS_CONTROL_ALLOW_ORIGIN, "https://origin.example")]);
        let req = request(&[(ORIGIN, "https://app.example")]);
        let mut res = origin_sent();
        listed().apply(&req, &mut res, false);
        assert_eq!(res[ACCESS_CONTROL_ALLOW_ORIGIN], "https://origin.example");
        assert_eq!(
            res[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true",
            "absent ones are added"
        );
        let mut res = origin_sent();
        listed().apply(&req, &mut res, true);
        assert_eq!(res[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
    }

    #[test]
    fn invalid_configurations() {
        let err = |c: CorsConfig| c.build().unwrap_err();
        assert_eq!(
            err(CorsConfig::new(CorsOrigins::any()).allow_credentials(true)),
            BehaviorError::CorsCredentialsWithAnyOrigin
        );
        for bad in [
            "*",
            "app.example",
            "https://app.example/",
            "https://u@a.example",
            "https://a b",
        ] {
            assert_eq!(
                err(CorsConfig::new(CorsOrigins::list([bad]))),
                BehaviorError::CorsOrigin(bad.to_owned())
            );
        }
        let bad_header = CorsConfig::new(CorsOrigins::any()).expose_headers(["x y"]);
        assert_eq!(err(bad_header), BehaviorError::HeaderName("x y".to_owned()));
        let star = CorsConfig::new(CorsOrigins::any())
            .allow_headers(["*"])
            .build();
        assert!(star.is_ok());
    }

    #[test]
    fn vary_merging_without_duplicates() {
        let merged = |lines: &[&'static str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(VARY, HeaderValue::from_static(l));
            }
            merge_vary(&mut h, "Origin");
            merge_vary(&mut h, "Origin");
            h.get_all(VARY)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(merged(&[]), ["Origin"]);
        assert_eq!(merged(&["Accept-Encoding"]), ["Accept-Encoding, Origin"]);
        assert_eq!(
            merged(&["accept-encoding", "x-a, x-b"]),
            ["accept-encoding, x-a, x-b, Origin"]
        );
        assert_eq!(
            merged(&["Accept-Encoding, origin"]),
            ["Accept-Encoding, origin"]
        );
        assert_eq!(merged(&["x", "ORIGIN"]), ["x", "ORIGIN"]);
        assert_eq!(merged(&["*"]), ["*"]);
        assert_eq!(merged(&[""]), ["Origin"]);
    }
}
