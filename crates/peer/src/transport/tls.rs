//! TLS for gotalk over TCP, and for `wss://` (feature `tls`).
//!
//! Built on tokio-rustls with rustls' *ring* crypto provider (it builds with
//! a C compiler alone; no cmake or nasm). See `docs/tls.md`.
//!
//! - Servers: [`server_config_from_pem_files`] (certificate chain and
//!   private key in PEM), then a [`TlsListener`] for gotalk over TLS, or
//!   [`WsListener::bind_tls`](crate::ws::WsListener::bind_tls) for `wss://`,
//!   served by a [`Server`](crate::Server).
//! - Clients: [`client_config_with_platform_roots`] or
//!   [`client_config_with_ca_file`], then [`connect`] (or `wss://` URLs with
//!   [`ws::connect`](crate::ws::connect)).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use gotalk_peer::{Config, Handlers, HandlerError, Server, tls};
//! let server_tls = tls::server_config_from_pem_files("cert.pem", "key.pem")?;
//! let handlers = Handlers::new()
//!     .buffer("echo", |_ctx, p| async move { Ok::<_, HandlerError>(p) });
//! let listener = tls::TlsListener::bind("127.0.0.1:0", server_tls).await?;
//! let server = Server::new(listener, handlers, Config::default()).spawn();
//!
//! let client_tls = tls::client_config_with_ca_file("ca.pem")?;
//! let addr = format!("localhost:{}", server.local_addr().port().unwrap());
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
    net::{TcpStream, ToSocketAddrs},
    time::timeout,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{ConnectError, Connecting, ConnectionInfo, Listener, LocalAddr};
use crate::{Config, Handlers, Peer};

/// The rustls version this module uses, for building configurations by hand.
pub use tokio_rustls::rustls;

/// A TLS stream over TCP, as accepted by a server.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A TLS stream over TCP, as opened by a client.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

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
fn host_of(addr: &str) -> Result<&str, ConnectError> {
    let invalid = || ConnectError::InvalidAddress(format!("expected host:port, got {addr:?}"));
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
/// address). TLS refusals are [`ConnectError::Tls`].
pub async fn wrap_client(
    tcp: TcpStream,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<ClientStream, ConnectError> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| ConnectError::InvalidAddress(format!("{server_name:?}: {e}")))?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(ConnectError::from_io)
}

/// Opens a TCP connection to `addr` (`host:port`; `host` is the name the
/// server's certificate must be valid for) and runs the TLS handshake, both
/// within `limit`: the byte stream [`connect`] runs gotalk over, for callers
/// that want to wrap it first.
pub async fn open(
    addr: &str,
    tls: Arc<ClientConfig>,
    limit: Duration,
) -> Result<ClientStream, ConnectError> {
    let host = host_of(addr)?;
    timeout(limit, async {
        let tcp = super::open_tcp(addr, limit).await?;
        wrap_client(tcp, host, tls).await
    })
    .await
    .map_err(|_| ConnectError::Timeout(limit))?
}

/// Connects to a gotalk server over TCP and TLS at `addr` (`host:port`;
/// `host` is the name the server's certificate must be valid for), then runs
/// the gotalk handshake.
///
/// TCP connect plus TLS handshake must finish within
/// [`Config::handshake_timeout`], and so must the version exchange. An
/// untrusted certificate or a wrong name is [`ConnectError::Tls`].
pub async fn connect(
    addr: &str,
    tls: Arc<ClientConfig>,
    handlers: Handlers,
    config: Config,
) -> Result<Peer, ConnectError> {
    let stream = open(addr, tls, config.handshake_timeout).await?;
    let remote = Some(format!("tls://{addr}"));
    Ok(Peer::handshake_with_addr(stream, handlers, config, remote, |_| {}).await?)
}

/// The server side of a TLS handshake over `tcp`, within `limit`.
pub(crate) async fn accept(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    limit: Duration,
) -> io::Result<ServerStream> {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    timeout(limit, acceptor.accept(tcp)).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake took longer than {limit:?}"),
        )
    })?
}

/// A TCP listener that speaks TLS, for a [`Server`](crate::Server).
///
/// The TLS handshake runs only once the server admitted the connection
/// (see [`Server::on_connect`](crate::Server::on_connect)), within
/// [`Config::handshake_timeout`], in the connection's own task: slow or
/// silent clients hold up nobody.
pub struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    local_addr: SocketAddr,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Binds `addr` and accepts with `tls`.
    pub async fn bind(addr: impl ToSocketAddrs, tls: Arc<ServerConfig>) -> io::Result<Self> {
        Self::from_tokio(tokio::net::TcpListener::bind(addr).await?, tls)
    }

    /// Accepts with `tls` on a listener bound elsewhere.
    pub fn from_tokio(tcp: tokio::net::TcpListener, tls: Arc<ServerConfig>) -> io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        Ok(Self {
            tcp,
            acceptor: TlsAcceptor::from(tls),
            local_addr,
        })
    }
}

impl Listener for TlsListener {
    type Conn = TlsConnecting;

    async fn accept(&mut self) -> io::Result<TlsConnecting> {
        let (tcp, remote) = self.tcp.accept().await?;
        Ok(TlsConnecting {
            tcp,
            acceptor: self.acceptor.clone(),
            info: ConnectionInfo::new(LocalAddr::Tls(self.local_addr), Some(remote)),
        })
    }

    fn local_addr(&self) -> LocalAddr {
        LocalAddr::Tls(self.local_addr)
    }
}

/// An accepted TCP connection whose TLS handshake has not run yet (see
/// [`Connecting`]).
pub struct TlsConnecting {
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    info: ConnectionInfo,
}

impl fmt::Debug for TlsConnecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnecting")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connecting for TlsConnecting {
    type Io = ServerStream;

    fn info(&self) -> ConnectionInfo {
        self.info.clone()
    }

    async fn establish(self, config: &Config) -> io::Result<ServerStream> {
        accept(self.acceptor, self.tcp, config.handshake_timeout).await
    }
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
