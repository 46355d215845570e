//! Allowed and cached methods: CloudFront's fixed method sets.

use http::Method;

use super::BehaviorError;

/// The methods the edge accepts for a behavior, as one of CloudFront's three sets. Other
/// methods are refused at the edge with `403` (as CloudFront does) and never reach the
/// origin.
///
/// The default is [`get_head`](Self::get_head), CloudFront's default: a behavior serves
/// what a cache can serve unless told otherwise. A behavior in front of forms or an API says
/// [`all`](Self::all) (or [`any`](Self::any) for methods beyond CloudFront's seven).
///
/// ```
/// use http::Method;
/// use tower_cdn::AllowedMethods;
///
/// assert_eq!(AllowedMethods::default(), AllowedMethods::get_head());
/// assert!(!AllowedMethods::default().allows(&Method::POST));
/// assert!(AllowedMethods::all().allows(&Method::POST));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowedMethods(Allowed);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Allowed {
    Any,
    #[default]
    GetHead,
    GetHeadOptions,
    All,
}

impl AllowedMethods {
    /// `GET` and `HEAD` (the default).
    pub fn get_head() -> Self {
        Self(Allowed::GetHead)
    }

    /// `GET`, `HEAD` and `OPTIONS`.
    pub fn get_head_options() -> Self {
        Self(Allowed::GetHeadOptions)
    }

    /// `GET`, `HEAD`, `OPTIONS`, `PUT`, `POST`, `PATCH` and `DELETE`.
    pub fn all() -> Self {
        Self(Allowed::All)
    }

    /// Every method, including extension methods CloudFront does not know (`PURGE`,
    /// `PROPFIND`, ...). `TRACE` and `CONNECT` too, as far as the layer is concerned; the
    /// edge server answers those with `501` before any behavior.
    pub fn any() -> Self {
        Self(Allowed::Any)
    }

    /// Whether `method` is in the set.
    pub fn allows(&self, method: &Method) -> bool {
        let m = method;
        let get_head = m == Method::GET || m == Method::HEAD;
        match self.0 {
            Allowed::Any => true,
            Allowed::GetHead => get_head,
            Allowed::GetHeadOptions => get_head || m == Method::OPTIONS,
            Allowed::All => {
                get_head
                    || [
                        Method::OPTIONS,
                        Method::PUT,
                        Method::POST,
                        Method::PATCH,
                        Method::DELETE,
                    ]
                    .contains(m)
            }
        }
    }
}

/// The methods whose responses the edge caches: `GET` and `HEAD`, optionally `OPTIONS`.
/// Must be a subset of the [`AllowedMethods`]. The default is [`get_head`](Self::get_head).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedMethods(Cached);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Cached {
    #[default]
    GetHead,
    GetHeadOptions,
}

impl CachedMethods {
    /// `GET` and `HEAD`.
    pub fn get_head() -> Self {
        Self(Cached::GetHead)
    }

    /// `GET`, `HEAD` and `OPTIONS` (for preflight responses, which then should vary on the
    /// CORS request headers through the key policy).
    pub fn get_head_options() -> Self {
        Self(Cached::GetHeadOptions)
    }

    /// Whether responses to `method` are cached.
    pub(crate) fn caches(&self, method: &Method) -> bool {
        method == Method::GET
            || method == Method::HEAD
            || (self.0 == Cached::GetHeadOptions && method == Method::OPTIONS)
    }

    /// Checks that every cached method is allowed.
    pub(crate) fn validate(&self, allowed: &AllowedMethods) -> Result<(), BehaviorError> {
        let methods: &[Method] = match self.0 {
            Cached::GetHead => &[Method::GET, Method::HEAD],
            Cached::GetHeadOptions => &[Method::GET, Method::HEAD, Method::OPTIONS],
        };
        match methods.iter().find(|m| !allowed.allows(m)) {
            Some(m) => Err(BehaviorError::CachedMethodNotAllowed(m.clone())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::TRACE,
        Method::CONNECT,
    ];

    fn allowed(set: AllowedMethods) -> Vec<Method> {
        EVERY.into_iter().filter(|m| set.allows(m)).collect()
    }

    #[test]
    fn allowed_sets() {
        assert_eq!(
            allowed(AllowedMethods::default()),
            [Method::GET, Method::HEAD]
        );
        assert_eq!(allowed(AllowedMethods::any()), EVERY);
        assert_eq!(
            allowed(AllowedMethods::get_head()),
            [Method::GET, Method::HEAD]
        );
        assert_eq!(
            allowed(AllowedMethods::get_head_options()),
            [Method::GET, Method::HEAD, Method::OPTIONS]
        );
        assert_eq!(allowed(AllowedMethods::all()), EVERY[..7]);
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert!(!AllowedMethods::all().allows(&purge));
    }

    #[test]
    fn cached_sets() {
        let cached = |set: CachedMethods| -> Vec<Method> {
            EVERY.into_iter().filter(|m| set.caches(m)).collect()
        };
        assert_eq!(
            cached(CachedMethods::default()),
            [Method::GET, Method::HEAD]
        );
        assert_eq!(
            cached(CachedMethods::get_head_options()),
            [Method::GET, Method::HEAD, Method::OPTIONS]
        );
    }

    #[test]
    fn cached_must_be_a_subset_of_allowed() {
        let gh = CachedMethods::get_head();
        let gho = CachedMethods::get_head_options();
        for allowed in [
            AllowedMethods::get_head(),
            AllowedMethods::get_head_options(),
            AllowedMethods::all(),
        ] {
            assert_eq!(gh.validate(&allowed), Ok(()));
        }
        assert_eq!(gho.validate(&AllowedMethods::get_head_options()), Ok(()));
        assert_eq!(gho.validate(&AllowedMethods::all()), Ok(()));
        assert_eq!(
            gho.validate(&AllowedMethods::get_head()),
            Err(BehaviorError::CachedMethodNotAllowed(Method::OPTIONS))
        );
    }
}
