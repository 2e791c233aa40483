//! The TLS 1.3 server configuration: PEM chain and key, ALPN `h2` + `http/1.1`, optional mTLS.
//!
//! Built once per configuration with an explicit aws-lc-rs provider (no process-wide default,
//! which panics when two providers are linked) and TLS 1.3 as the only protocol version.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// ALPN identifiers offered, most preferred first.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The crypto provider every TLS object of fieldseal uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM certificate chain (leaf first).
pub fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{} is not a valid PEM certificate file: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("{} holds no CERTIFICATE block", path.display()));
    }
    Ok(certs)
}

/// Reads a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        format!(
            "{} holds no usable PEM private key (PKCS#8, RSA or EC)",
            path.display()
        )
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Builds the server configuration; `client_ca` turns on required client certificates.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS 1.3 is not available: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let mut roots = RootCertStore::empty();
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| format!("client CA certificate rejected: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("cannot build the client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
