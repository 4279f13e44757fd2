//! TLS on the listener (rustls, ring): ALPN offers `h2` and `http/1.1`, so a
//! browser multiplexes every EventSource of a page over one connection (the
//! cure for HTTP/1.1's six-connections-per-host cap). The certificate is
//! served through a swappable resolver: when the cert or key file changes it
//! is reloaded for new handshakes while open connections carry on.

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Quiet time after a file event before reloading (tools write in steps).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Why the certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the certificate, key or settings.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The listener's TLS state: the acceptor and the swappable certificate.
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    resolver: Arc<Resolver>,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

#[derive(Debug)]
struct Resolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn load(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let pem_err = |path: &Path, detail: String| TlsError::Pem {
        path: path.to_owned(),
        detail,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(cert, "holds no CERTIFICATE block".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e.to_string()))?;
    Ok(CertifiedKey::from_der(chain, key_der, provider)?)
}

impl Tls {
    /// Loads the certificate chain and key (PEM) and builds the acceptor.
    pub fn new(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = load(cert, key, &provider)?;
        let resolver = Arc::new(Resolver(ArcSwap::from_pointee(certified)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            resolver,
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Re-reads the files; on error the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = load(&self.cert, &self.key, &self.provider)?;
        self.resolver.0.store(Arc::new(certified));
        Ok(())
    }

    /// Reloads whenever the cert or key file changes, until `stop`. Watches
    /// their directories (renames replace files), debounced.
    pub fn watch(self: Arc<Self>, stop: CancellationToken) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let files = [self.cert.clone(), self.key.clone()];
        let names = files.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if !event.kind.is_access() && event.paths.iter().any(|p| names.contains(p)) {
                let _ = tx.send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the TLS files; certificates will not reload");
                return;
            }
        };
        for f in &files {
            let dir = f.parent().unwrap_or(Path::new("."));
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a TLS directory");
            }
        }
        let reloads_ok = metrics::counter!("spout_tls_reloads_total", "result" => "ok");
        let reloads_err = metrics::counter!("spout_tls_reloads_total", "result" => "error");
        tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = rx.recv() => if got.is_none() { return },
                }
                // Let the writer finish, then take every queued event at once.
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                match self.reload() {
                    Ok(()) => {
                        reloads_ok.increment(1);
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        reloads_err.increment(1);
                        tracing::warn!(error = %e, "TLS certificate not reloaded; keeping the current one");
                    }
                }
            }
        });
    }
}
