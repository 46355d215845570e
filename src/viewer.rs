//! Facts about the viewer's connection that the edge's front end records on each request.

/// A request extension saying that the viewer's connection used TLS (HTTPS).
///
/// Whatever accepts viewer connections inserts it into the extensions of every request that
/// arrived over TLS; the `tower-cdn` server does so on its HTTPS listener. Its absence means
/// plain HTTP. A viewer cannot set it: it is not a header, so it cannot be forged. It is what a
/// viewer protocol policy (redirect HTTP to HTTPS, HTTPS only) reads, and what decides the
/// `X-Forwarded-Proto` the server's proxy sends to the origin.
///
/// ```
/// use http::Request;
/// use tower_cdn::ViewerTls;
///
/// let mut request = Request::get("/").body(()).unwrap();
/// request.extensions_mut().insert(ViewerTls);
/// assert!(request.extensions().get::<ViewerTls>().is_some());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ViewerTls;
