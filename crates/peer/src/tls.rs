//! TLS for gotalk over TCP, and for `wss://` (feature `tls`).
//!
//! Built on tokio-rustls with rustls' *ring* crypto provider (it builds with
//! a C compiler alone; no cmake or nasm). See `docs/tls.md`.
//!
//! - Servers: [`server_config_from_pem_files`] (certificate chain and
//!   private key in PEM), then [`TlsServer::bind`] for gotalk over TLS, or
//!   [`WsServer::serve_tls`](crate::ws::WsServer::serve_tls) for `wss://`.
//! - Clients: [`client_config_with_platform_roots`] or
//!   [`client_config_with_ca_file`], then [`connect`] (or `wss://` URLs with
//!   [`ws::connect`](crate::ws::connect)).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use gotalk_peer::{Config, Handlers, HandlerError, tls};
//! let server_tls = tls::server_config_from_pem_files("cert.pem", "key.pem")?;
//! let handlers = Handlers::new()
//!     .buffer("echo", |_ctx, p| async move { Ok::<_, HandlerError>(p) });
//! let server = tls::TlsServer::bind("127.0.0.1:0", server_tls, handlers, Config::default()).await?;
//!
//! let client_tls = tls::client_config_with_ca_file("ca.pem")?;
//! let addr = format!("localhost:{}", server.local_addr().port());
//! let peer = tls::connect(&addr, client_tls, Handlers::new(), Config::default()).await?;
//! assert_eq!(peer.request("echo", "hi").await?, "hi");
//! # Ok(()) }
//! ```

use std::{
    fmt, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tokio::{
    net::{TcpListener, TcpStream, ToSocketAddrs},
    sync::{Semaphore, mpsc, watch},
    task::JoinHandle,
    time::timeout,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::server::Connections;
use crate::{Config, Error, Handlers, Peer};

/// The rustls version this module uses, for building configurations by hand.
pub use tokio_rustls::rustls;

/// A TLS stream over TCP, as accepted by a server.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A TLS stream over TCP, as opened by a client.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// TLS handshakes a listener runs at once; further connections wait in the
/// kernel's accept queue.
const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// Why TLS settings could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// PEM input that does not parse.
    Pem(String),
    /// No certificate in the certificate PEM.
    NoCertificates,
    /// No private key in the key PEM.
    NoPrivateKey,
    /// No usable root certificate (an empty CA file, or a platform store
    /// that could not be read).
    NoRootCertificates(String),
    /// rustls refused the configuration (e.g. key does not match the
    /// certificate).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::Pem(e) => write!(f, "invalid PEM: {e}"),
            Self::NoCertificates => f.write_str("no certificate found in PEM input"),
            Self::NoPrivateKey => f.write_str("no private key found in PEM input"),
            Self::NoRootCertificates(why) => write!(f, "no usable root certificates: {why}"),
            Self::Rustls(e) => write!(f, "TLS configuration refused: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            Self::Rustls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        Self::Rustls(e)
    }
}

fn pem_error(e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem(e.to_string())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates);
    }
    Ok(certs)
}

/// A server configuration from a PEM certificate chain (leaf first) and a
/// PEM private key (PKCS#8, PKCS#1 or SEC1). No client certificates are
/// asked for; TLS 1.2 and 1.3 are offered.
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = certificates(cert_chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey,
        e => pem_error(e),
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// [`server_config_from_pem`] reading the two PEM files.
pub fn server_config_from_pem_files(
    cert_chain: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_from_pem(&read(cert_chain.as_ref())?, &read(key.as_ref())?)
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client configuration that trusts the certificate authorities in
/// `ca_pem` (one or more PEM certificates) and nothing else.
pub fn client_config_with_ca_pem(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem)? {
        roots.add(cert)?;
    }
    client_config(roots)
}

/// [`client_config_with_ca_pem`] reading a PEM file.
pub fn client_config_with_ca_file(path: impl AsRef<Path>) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with_ca_pem(&read(path.as_ref())?)
}

/// A client configuration that trusts the platform's root certificates
/// (on Linux the system bundle, e.g. `/etc/ssl/certs`; `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` override it). Certificates that fail to parse are skipped;
/// an empty result is an error.
pub fn client_config_with_platform_roots() -> Result<Arc<ClientConfig>, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(TlsError::NoRootCertificates(why));
    }
    client_config(roots)
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> io::Result<&str> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("expected host:port, got {addr:?}"),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(invalid)?;
    port.parse::<u16>().map_err(|_| invalid())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(invalid());
    }
    Ok(host)
}

/// Runs the client side of a TLS handshake over `tcp`, checking that the
/// server's certificate is valid for `server_name` (a DNS name or an IP
/// address).
pub async fn wrap_client(
    tcp: TcpStream,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> io::Result<ClientStream> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// Connects to a gotalk server over TCP and TLS at `addr` (`host:port`;
/// `host` is the name the server's certificate must be valid for), then runs
/// the gotalk handshake.
///
/// TCP connect plus TLS handshake must finish within
/// [`Config::handshake_timeout`], and so must the version exchange.
/// Failures of TCP and TLS (an untrusted certificate, a wrong name) are
/// [`Error::Io`]; the [`rustls::Error`] is inside when TLS refused.
pub async fn connect(
    addr: &str,
    tls: Arc<ClientConfig>,
    handlers: Handlers,
    config: Config,
) -> Result<Peer, Error> {
    let host = host_of(addr)?;
    let limit = config.handshake_timeout;
    let stream = timeout(limit, async {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        wrap_client(tcp, host, tls).await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP/TLS connect timed out"))??;
    Peer::handshake_with_addr(
        stream,
        handlers,
        config,
        Some(format!("tls://{addr}")),
        |_| {},
    )
    .await
}

/// A TCP listener that runs TLS handshakes in the background and yields
/// only connections whose handshake succeeded.
///
/// Up to 256 handshakes run at once, each limited to the handshake timeout
/// given to [`bind`](Self::bind), so slow or silent clients cannot stall
/// the others. Dropping the listener stops accepting.
#[derive(Debug)]
pub struct TlsListener {
    local_addr: SocketAddr,
    rx: mpsc::Receiver<(ServerStream, SocketAddr)>,
    task: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    /// Binds `addr` and starts accepting with `tls`.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        tls: Arc<ServerConfig>,
        handshake_timeout: Duration,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::from_listener(listener, tls, handshake_timeout)
    }

    /// Accepts with `tls` on a bound listener.
    pub fn from_listener(
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        handshake_timeout: Duration,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(tls);
        let task = tokio::spawn(accept_loop(listener, acceptor, handshake_timeout, tx));
        Ok(Self {
            local_addr,
            rx,
            task,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next connection whose TLS handshake succeeded.
    pub async fn accept(&mut self) -> io::Result<(ServerStream, SocketAddr)> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| io::Error::other("TLS accept loop ended"))
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limit: Duration,
    tx: mpsc::Sender<(ServerStream, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = tx.closed() => return,
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let accepted = tokio::select! {
            () = tx.closed() => return,
            a = listener.accept() => a,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                tracing::warn!(error = %e, "TLS listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match timeout(limit, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

#[cfg(feature = "websocket")]
impl axum::serve::Listener for TlsListener {
    type Io = ServerStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop only ends once this receiver is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(feature = "websocket")]
impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for crate::ws::server::RemoteAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Called with every connection of a [`TlsServer`] after its handshakes.
pub type ConnectCallback = Arc<dyn Fn(&Peer, SocketAddr) + Send + Sync>;

struct ServerInner {
    connections: Connections,
}

/// A gotalk server over TCP and TLS: accepts, runs the TLS and gotalk
/// handshakes and serves `handlers` on every connection.
pub struct TlsServer {
    local_addr: SocketAddr,
    inner: Arc<ServerInner>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Binds `addr` and serves. The TLS handshake gets
    /// [`Config::handshake_timeout`], and so does the version exchange.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        tls: Arc<ServerConfig>,
        handlers: Handlers,
        config: Config,
    ) -> io::Result<Self> {
        Self::bind_with(addr, tls, handlers, config, None).await
    }

    /// [`bind`](Self::bind), calling `on_connect` with every new connection.
    pub async fn bind_with(
        addr: impl ToSocketAddrs,
        tls: Arc<ServerConfig>,
        handlers: Handlers,
        config: Config,
        on_connect: Option<ConnectCallback>,
    ) -> io::Result<Self> {
        let mut listener = TlsListener::bind(addr, tls, config.handshake_timeout).await?;
        let local_addr = listener.local_addr();
        let inner = Arc::new(ServerInner {
            connections: Connections::default(),
        });
        let (stop, mut stop_rx) = watch::channel(false);
        let task = {
            let inner = inner.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, addr) = tokio::select! {
                        _ = stop_rx.wait_for(|s| *s) => return,
                        conn = listener.accept() => match conn {
                            Ok(c) => c,
                            Err(_) => return,
                        },
                    };
                    tokio::spawn(serve_connection(
                        inner.clone(),
                        stream,
                        addr,
                        handlers.clone(),
                        config.clone(),
                        on_connect.clone(),
                    ));
                }
            })
        };
        Ok(Self {
            local_addr,
            inner,
            stop,
            task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The connections open right now.
    pub fn peers(&self) -> Vec<Peer> {
        self.inner.connections.peers()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.len()
    }

    /// Stops accepting, closes every connection gracefully and waits until
    /// the listener is released.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.inner.connections.close_all().await;
        let _ = (&mut self.task).await;
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(
    inner: Arc<ServerInner>,
    stream: ServerStream,
    addr: SocketAddr,
    handlers: Handlers,
    config: Config,
    on_connect: Option<ConnectCallback>,
) {
    // The callback runs before the first message is read.
    let setup = |peer: &Peer| {
        if let Some(cb) = &on_connect {
            cb(peer, addr);
        }
    };
    let peer =
        match Peer::handshake_with_addr(stream, handlers, config, Some(addr.to_string()), setup)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "gotalk handshake over TLS failed");
                return;
            }
        };
    let connections = &inner.connections;
    let reason = connections.hold(connections.next_id(), peer).await;
    tracing::debug!(%addr, %reason, "TLS connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parts() {
        assert_eq!(host_of("localhost:443").unwrap(), "localhost");
        assert_eq!(host_of("[::1]:8443").unwrap(), "::1");
        assert_eq!(host_of("127.0.0.1:1").unwrap(), "127.0.0.1");
        assert!(host_of("localhost").is_err());
        assert!(host_of(":443").is_err());
        assert!(host_of("a:b").is_err());
    }

    #[test]
    fn pem_errors() {
        assert!(matches!(
            server_config_from_pem(b"", b""),
            Err(TlsError::NoCertificates)
        ));
        assert!(matches!(
            client_config_with_ca_pem(b"not pem"),
            Err(TlsError::NoCertificates)
        ));
        assert!(matches!(
            client_config_with_ca_file("/nonexistent/ca.pem"),
            Err(TlsError::Read { .. })
        ));
    }
}
