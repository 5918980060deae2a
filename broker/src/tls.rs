//! TLS for the gRPC and metrics listeners (rustls, ring): the certificate
//! chain, its key and an optional client CA (mutual TLS) come from PEM
//! files and are read again on SIGHUP, so a renewed certificate takes
//! effect without a restart; connections already open keep theirs.
//!
//! The handshake runs in a task per connection (bounded in number and
//! time), so a slow or hostile client cannot stall the accept loop.

use crate::audit::AuthFailures;
use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Longest a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once per listener; more connections wait
/// in the kernel's accept queue.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        message: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("{0}")]
    Rustls(String),
}

/// Which application protocol a listener speaks, for ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// The metrics endpoint: HTTP/1.1.
    Http1,
}

/// The current server configurations, replaced whole on reload.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsConfig,
    grpc: RwLock<Arc<ServerConfig>>,
    http: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads the files; errors name the file and what is wrong with it.
    pub fn load(files: &TlsConfig) -> Result<ServerTls, TlsError> {
        let (grpc, http) = build(files)?;
        Ok(ServerTls {
            files: files.clone(),
            grpc: RwLock::new(grpc),
            http: RwLock::new(http),
        })
    }

    /// Whether clients must present a certificate from the client CA.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again; on any error the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (grpc, http) = build(&self.files)?;
        *self.grpc.write().unwrap_or_else(|e| e.into_inner()) = grpc;
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = http;
        Ok(())
    }

    fn acceptor(&self, protocol: Protocol) -> TlsAcceptor {
        let current = match protocol {
            Protocol::Grpc => &self.grpc,
            Protocol::Http1 => &self.http,
        };
        TlsAcceptor::from(Arc::clone(
            &current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }

    /// Reloads on every SIGHUP until `shutdown`, logging the outcome.
    pub async fn reload_on_hangup(self: Arc<Self>, shutdown: CancellationToken) {
        let mut hangup = crate::reload::hangup_signal();
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = hup => {}
            }
            let this = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(Ok(())) => tracing::info!("TLS certificate reloaded"),
                Ok(Err(error)) => {
                    tracing::error!(%error, "TLS reload failed; still serving the previous certificate")
                }
                Err(error) => tracing::error!(%error, "TLS reload task failed"),
            }
        }
    }

    /// Accepts connections on `listener` and hands out those whose
    /// handshake succeeded, until `shutdown`.
    /// With mutual TLS, a refused handshake (no or an untrusted client
    /// certificate) is a failed authentication, recorded in `failures`.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
        protocol: Protocol,
        shutdown: CancellationToken,
        failures: Option<Arc<AuthFailures>>,
    ) -> mpsc::Receiver<TlsStream<TcpStream>> {
        let failures = failures.filter(|_| self.mutual());
        let (sender, receiver) = mpsc::channel(64);
        let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // E.g. out of file descriptors: back off, go on.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = self.acceptor(protocol);
                let sender = sender.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    handshake(acceptor, tcp, peer, sender, failures).await;
                });
            }
        });
        receiver
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    sender: mpsc::Sender<TlsStream<TcpStream>>,
    failures: Option<Arc<AuthFailures>>,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let _ = sender.send(stream).await;
        }
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            if let Some(failures) = failures {
                let detail = error.to_string();
                failures.record(Some(peer), None, "TLS handshake refused", &detail);
            }
        }
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// The metrics endpoint's listener over TLS, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    connections: mpsc::Receiver<TlsStream<TcpStream>>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves handshaken connections from [`ServerTls::incoming`].
    pub fn new(connections: mpsc::Receiver<TlsStream<TcpStream>>, local: SocketAddr) -> Self {
        Self { connections, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.recv().await {
                Some(stream) => {
                    let peer = stream.get_ref().0.peer_addr();
                    if let Ok(peer) = peer {
                        return (stream, peer);
                    }
                }
                // Shut down: graceful shutdown ends the server.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: format!("malformed PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no CERTIFICATE in the file".into(),
        });
    }
    Ok(certs)
}

/// The gRPC (h2) and HTTP/1.1 server configs from the files.
fn build(files: &TlsConfig) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), TlsError> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        message: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    path: ca.clone(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut grpc = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("{}: {e}", files.cert.display())))?;
    let mut http = grpc.clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(grpc), Arc::new(http)))
}
