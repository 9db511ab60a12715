//! RTMPS: TLS (rustls through tokio-rustls, the stack the HTTP client already uses) in front of
//! the same RTMP connection code. The certificate chain and private key are PEM files named by
//! `rtmps.cert` and `rtmps.key`; a file that cannot be read or parsed stops the server at start
//! with the setting and the path in the message.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("rtmps.cert: cannot read a PEM certificate chain from {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("rtmps.key: cannot read a PEM private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("rtmps.cert and rtmps.key do not make a usable TLS identity: {0}")]
    Identity(String),
}

/// The TLS acceptor for the RTMPS listener.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.display().to_string(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Identity(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Identity(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
