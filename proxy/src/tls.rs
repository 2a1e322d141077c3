//! TLS termination with rustls (ring provider). The certificate and key are PEM files (a mounted
//! `kubernetes.io/tls` Secret); they are re-read when their modification time changes, and new
//! connections use the new certificate while existing ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading PEM from {path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads a server config offering HTTP/1.1.
pub fn load(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            path: cert.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        path: key.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The current acceptor, swapped when the files change.
pub struct ReloadingAcceptor {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(TlsAcceptor, Option<SystemTime>)>,
}

fn modified(cert: &Path, key: &Path) -> Option<SystemTime> {
    let c = std::fs::metadata(cert).and_then(|m| m.modified()).ok()?;
    let k = std::fs::metadata(key).and_then(|m| m.modified()).ok()?;
    Some(c.max(k))
}

impl ReloadingAcceptor {
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>, TlsError> {
        let stamp = modified(&cert, &key);
        let acceptor = TlsAcceptor::from(Arc::new(load(&cert, &key)?));
        Ok(Arc::new(Self {
            cert,
            key,
            current: RwLock::new((acceptor, stamp)),
        }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().expect("tls lock").0.clone()
    }

    /// Re-reads the files if they changed; a broken new pair keeps the old one in service.
    pub fn reload_if_changed(&self) {
        let stamp = modified(&self.cert, &self.key);
        if stamp == self.current.read().expect("tls lock").1 {
            return;
        }
        match load(&self.cert, &self.key) {
            Ok(config) => {
                *self.current.write().expect("tls lock") =
                    (TlsAcceptor::from(Arc::new(config)), stamp);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => tracing::warn!(%error, "keeping the previous TLS certificate"),
        }
    }

    /// Polls the files every `every` (Secret mounts change by symlink swap; polling sees it).
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            self.reload_if_changed();
        }
    }
}
