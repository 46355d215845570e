//! Who the viewer is: its address from the connection, or from `X-Forwarded-For` when the
//! hop that sent it is a proxy the operator trusts.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, Request};

use crate::access::IpRange;
use crate::behavior::ClientAddr;

/// The most `X-Forwarded-For` entries walked.
const MAX_FORWARDED_HOPS: usize = 16;

/// The viewer's address: the connection's ([`ClientAddr`]); when that is a trusted proxy,
/// the right-most `X-Forwarded-For` entry that is not a trusted proxy itself. Never trusted
/// by default: with no trusted proxies, forwarding headers are ignored.
pub(crate) fn client_ip<B>(req: &Request<B>, trusted: &[IpRange]) -> Option<IpAddr> {
    let peer = req.extensions().get::<ClientAddr>()?.0.ip();
    Some(forwarded_viewer(peer, req.headers(), trusted))
}

/// [`client_ip`] for a connection from `peer` that sent `headers`.
fn forwarded_viewer(peer: IpAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    if trusted.is_empty() || !trusted.iter().any(|r| r.contains(peer)) {
        return peer;
    }
    forwarded_for(headers)
        .take(MAX_FORWARDED_HOPS)
        .find(|ip| !trusted.iter().any(|r| r.contains(*ip)))
        .unwrap_or(peer)
}

/// Resolves the viewer's address at entry, before the viewer's forwarding fields are dropped:
/// when the connection is a trusted proxy, [`ClientAddr`] is replaced in place by the address
/// `X-Forwarded-For` names (port 0), so later phases (signed-URL IP conditions, rate limits,
/// geo, logs) and an origin proxy building `X-Forwarded-For` read that one address. With no
/// trusted proxies nothing is read or written.
pub(crate) fn resolve_client<B>(req: &mut Request<B>, trusted: &[IpRange]) {
    if trusted.is_empty() {
        return;
    }
    let Some(resolved) = client_ip(req, trusted) else {
        return;
    };
    let Some(addr) = req.extensions_mut().get_mut::<ClientAddr>() else {
        return;
    };
    let peer = addr.0.ip();
    if peer != resolved {
        addr.0 = SocketAddr::new(resolved, 0);
        req.extensions_mut().insert(ProxiedBy(peer));
    }
}

/// A request extension set at entry when [`ClientAddr`] was resolved through a trusted proxy:
/// the address of the connection, which the access log shows apart from the viewer's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProxiedBy(pub(crate) IpAddr);

/// The viewer's address as entry resolved it, and the connection's address (the same unless a
/// trusted proxy forwarded the request).
pub(crate) fn addresses(extensions: &http::Extensions) -> Option<(IpAddr, IpAddr)> {
    let viewer = extensions.get::<ClientAddr>()?.0.ip();
    let peer = extensions.get::<ProxiedBy>().map_or(viewer, |p| p.0);
    Some((viewer, peer))
}

/// The viewer's address as entry resolved it.
pub(crate) fn viewer_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions().get::<ClientAddr>().map(|addr| addr.0.ip())
}

/// `X-Forwarded-For` entries, right-most (nearest) first; unparsable ones end the walk.
fn forwarded_for(headers: &HeaderMap) -> impl Iterator<Item = IpAddr> + '_ {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    entries.into_iter().rev().map_while(|e| e.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn req(peer: &str, xff: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        r.extensions_mut()
            .insert(ClientAddr(SocketAddr::new(peer.parse().unwrap(), 1)));
        if let Some(x) = xff {
            r.headers_mut()
                .insert("x-forwarded-for", x.parse().unwrap());
        }
        r
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let trusted = [IpRange::parse("10.0.0.0/8").unwrap()];
        let spoofed = req("203.0.113.9", Some("1.2.3.4"));
        assert_eq!(client_ip(&spoofed, &trusted), "203.0.113.9".parse().ok());
        let proxied = req("10.0.0.2", Some("1.2.3.4, 198.51.100.7, 10.0.0.5"));
        assert_eq!(client_ip(&proxied, &trusted), "198.51.100.7".parse().ok());
        assert_eq!(
            client_ip(&proxied, &[]),
            "10.0.0.2".parse().ok(),
            "nothing trusted by default"
        );
        assert_eq!(client_ip(&Request::new(()), &trusted), None);
    }

    #[test]
    fn resolved_once_into_client_addr() {
        let trusted = [IpRange::parse("10.0.0.0/8").unwrap()];
        let mut proxied = req("10.0.0.2", Some("198.51.100.7"));
        resolve_client(&mut proxied, &trusted);
        assert_eq!(viewer_ip(&proxied), "198.51.100.7".parse().ok());
        // Idempotent once the field is gone: the resolved address is not a trusted proxy.
        proxied.headers_mut().remove("x-forwarded-for");
        resolve_client(&mut proxied, &trusted);
        assert_eq!(viewer_ip(&proxied), "198.51.100.7".parse().ok());

        let mut spoofed = req("203.0.113.9", Some("1.2.3.4"));
        resolve_client(&mut spoofed, &trusted);
        assert_eq!(viewer_ip(&spoofed), "203.0.113.9".parse().ok());
        let mut untrusting = req("10.0.0.2", Some("1.2.3.4"));
        resolve_client(&mut untrusting, &[]);
        assert_eq!(viewer_ip(&untrusting), "10.0.0.2".parse().ok());
        // The connection's address is kept for the access log.
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            addresses(proxied.extensions()),
            Some((ip("198.51.100.7"), ip("10.0.0.2")))
        );
        assert_eq!(
            addresses(spoofed.extensions()),
            Some((ip("203.0.113.9"), ip("203.0.113.9")))
        );
    }
}
