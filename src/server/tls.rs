//! TLS for both sides of the edge: the HTTPS listener's certificate (from PEM files, or
//! self-signed at start) and the root store for `https://` origins. rustls on `ring` throughout.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::Arc,
};

use rustls::{
    crypto::{ring, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
    ClientConfig, RootCertStore, ServerConfig as RustlsServerConfig,
};
use tokio_rustls::TlsAcceptor;

use super::{
    hosts::{HostTable, SniResolver},
    DistributionConfig, ServerConfig, ServerError,
};

/// The provider is named explicitly rather than installed process-wide, so that another crate
/// in the same program enabling a second provider cannot make rustls refuse to pick one.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// What the HTTPS listener serves with.
pub(crate) struct ViewerTlsSetup {
    pub(crate) acceptor: TlsAcceptor,
    /// The generated certificate, when no files were given.
    pub(crate) self_signed_pem: Option<String>,
}

/// The HTTPS listener's TLS settings for `config`, listening on `addr`. Distributions with
/// their own certificate get it for their names (by SNI); other names get the listener's.
pub(crate) fn viewer_tls(
    config: &ServerConfig,
    addr: SocketAddr,
    names: &HostTable,
    distributions: &[DistributionConfig],
) -> Result<ViewerTlsSetup, ServerError> {
    let (chain, key, self_signed_pem) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (read_chain(cert)?, read_key(key)?, None),
        (None, None) => {
            let (chain, key, pem) = self_signed(addr)?;
            (chain, key, Some(pem))
        }
        (Some(_), None) => return Err(tls_error("tls_cert is set but tls_key is not")),
        (None, Some(_)) => return Err(tls_error("tls_key is set but tls_cert is not")),
    };
    let provider = provider();
    let builder = RustlsServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| tls_error(format!("TLS setup: {err}")))?
        .with_no_client_auth();
    let own =
        |distribution: &DistributionConfig| match (&distribution.tls_cert, &distribution.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(certified(
                read_chain(cert)?,
                read_key(key)?,
                &provider,
            )?)),
            (None, None) => Ok(None),
            _ => Err(tls_error(format!(
                "distribution `{}`: tls_cert and tls_key go together",
                distribution.name
            ))),
        };
    let certificates = distributions
        .iter()
        .map(own)
        .collect::<Result<Vec<_>, ServerError>>()?;
    if self_signed_pem.is_some() {
        // Browsers and other clients will not trust it: say so, per distribution, rather
        // than let a site serve it unnoticed.
        for (distribution, own) in distributions.iter().zip(&certificates) {
            if own.is_none() {
                tracing::warn!(
                    distribution = %distribution.name,
                    "no certificate configured (tls_cert and tls_key): HTTPS viewers of this \
                     distribution get the generated self-signed certificate for localhost"
                );
            }
        }
    }
    let mut server = if certificates.iter().all(Option::is_none) {
        builder
            .with_single_cert(chain, key)
            .map_err(|err| tls_error(format!("the certificate and key do not fit: {err}")))?
    } else {
        let default = certified(chain, key, &provider)?;
        builder.with_cert_resolver(Arc::new(SniResolver::new(
            names.clone(),
            certificates,
            default,
        )))
    };
    // Both protocols the listener speaks; the connection builder detects which one follows.
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ViewerTlsSetup {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        self_signed_pem,
    })
}

/// A certificate chain and its key, checked to fit together.
fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ServerError> {
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|err| tls_error(format!("the certificate and key do not fit: {err}")))
}

/// The TLS settings for `https://` origins: Mozilla's roots, or the CAs of `ca_file` instead.
pub(crate) fn origin_tls(ca_file: Option<&Path>) -> Result<ClientConfig, ServerError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_chain(path)? {
                roots.add(cert).map_err(|err| {
                    tls_error(format!(
                        "{}: unusable CA certificate: {err}",
                        path.display()
                    ))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // ALPN is left to the connector, which offers the HTTP versions the client speaks.
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| tls_error(format!("TLS setup: {err}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A self-signed certificate for `localhost`, the loopback addresses and the listener's own
/// address, with its key and PEM text.
fn self_signed(
    addr: SocketAddr,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), ServerError> {
    let mut names = vec![
        "localhost".to_owned(),
        IpAddr::from(Ipv4Addr::LOCALHOST).to_string(),
        IpAddr::from(Ipv6Addr::LOCALHOST).to_string(),
    ];
    let ip = addr.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|err| tls_error(format!("cannot generate a self-signed certificate: {err}")))?;
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .map_err(|err| tls_error(format!("generated key: {err}")))?;
    Ok((
        vec![generated.cert.der().clone()],
        key,
        generated.cert.pem(),
    ))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|err| tls_error(format!("{}: {err}", path.display())))?;
    if chain.is_empty() {
        return Err(tls_error(format!(
            "{}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ServerError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| {
        tls_error(format!(
            "{}: no usable PEM private key: {err}",
            path.display()
        ))
    })
}

fn tls_error(message: impl Into<String>) -> ServerError {
    ServerError::Tls(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_listener_and_default_roots() {
        let config = ServerConfig {
            https_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..ServerConfig::default()
        };
        let setup = viewer_tls(
            &config,
            "127.0.0.1:0".parse().unwrap(),
            &HostTable::default(),
            &[],
        )
        .unwrap();
        assert!(setup
            .self_signed_pem
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        origin_tls(None).unwrap();
    }

    #[test]
    fn half_a_certificate_is_refused() {
        let config = ServerConfig {
            tls_cert: Some("cert.pem".into()),
            ..ServerConfig::default()
        };
        let err = viewer_tls(
            &config,
            "127.0.0.1:0".parse().unwrap(),
            &HostTable::default(),
            &[],
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("tls_key"), "{err}");
    }

    #[test]
    fn missing_files_are_named() {
        let err = origin_tls(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
