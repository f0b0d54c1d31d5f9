//! Address arguments (`host:port`, `tls://host:port`, `unix:PATH`,
//! `ws://…`, `wss://…`) and connecting to them.
//!
//! Every command takes addresses through [`Address`]; clients connect with a
//! [`Connector`] (which holds the TLS trust settings). Listening is
//! gotalk-peer's, see [`crate::server`].

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use clap::Args;
use gotalk_peer::{
    Config, ConnectError, Handlers, Peer,
    tls::{self, TlsError, rustls},
    transport,
    ws::{self, WsClientConfig},
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::trace::{Traced, Tracer};

/// Where to connect or listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Address {
    /// `host:port` (or `tcp://host:port`).
    Tcp(String),
    /// `tls://host:port`: gotalk over TCP + TLS.
    Tls(String),
    /// `unix:PATH`: a Unix domain socket.
    Unix(PathBuf),
    /// `ws://…` or `wss://…`: gotalk over WebSocket.
    WebSocket(String),
    /// `http://host:port/mount/`: the HTTP endpoint of `serve --http`
    /// (plain HTTP calls; only `gotalk request` takes it).
    Http(String),
}

const ADDRESS_FORMS: &str = "use host:port (127.0.0.1:1234), tls://host:port, unix:PATH, ws://HOST:PORT/PATH (wss:// with TLS) or, for request, http://HOST:PORT/PATH";

/// `host:port` with a non-empty host and a valid port.
fn is_host_port(s: &str) -> bool {
    matches!(s.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
}

/// The port of `host:PORT` when it is a number too large for a port.
fn port_out_of_range(s: &str) -> Option<&str> {
    let (host, port) = s.rsplit_once(':')?;
    (!host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .then_some(port)
}

impl FromStr for Address {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("unix: needs a socket path, as in unix:/tmp/gotalk.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if s.starts_with("ws://") || s.starts_with("wss://") {
            return Ok(Self::WebSocket(s.to_owned()));
        }
        if s.starts_with("http://") {
            return Ok(Self::Http(s.to_owned()));
        }
        if s.starts_with("https://") {
            return Err(format!(
                "{s:?}: the HTTP client of gotalk request speaks plain http:// only \
                 (for HTTPS, use curl; for gotalk over TLS, tls:// or wss://)"
            ));
        }
        if let Some(hostport) = s.strip_prefix("tls://") {
            return if is_host_port(hostport) {
                Ok(Self::Tls(hostport.to_owned()))
            } else if let Some(port) = port_out_of_range(hostport) {
                Err(format!(
                    "{s:?}: port {port} is out of range (ports go from 0 to 65535)"
                ))
            } else {
                Err(format!(
                    "{s:?} is not an address: tls:// takes host:port, as in tls://127.0.0.1:1234"
                ))
            };
        }
        let hostport = s.strip_prefix("tcp://").unwrap_or(s);
        if let Some((scheme, _)) = hostport.split_once("://") {
            return Err(format!(
                "unknown address scheme {scheme:?}: {ADDRESS_FORMS}"
            ));
        }
        if is_host_port(hostport) {
            Ok(Self::Tcp(hostport.to_owned()))
        } else if let Some(port) = port_out_of_range(hostport) {
            Err(format!(
                "{s:?}: port {port} is out of range (ports go from 0 to 65535)"
            ))
        } else {
            Err(format!("{s:?} is not an address: {ADDRESS_FORMS}"))
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => f.write_str(a),
            Self::Tls(a) => write!(f, "tls://{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::WebSocket(u) | Self::Http(u) => f.write_str(u),
        }
    }
}

impl Address {
    /// Whether connecting needs TLS (`tls://` and `wss://`).
    pub(crate) fn uses_tls(&self) -> bool {
        match self {
            Self::Tls(_) => true,
            Self::WebSocket(url) => url.starts_with("wss://"),
            Self::Tcp(_) | Self::Unix(_) | Self::Http(_) => false,
        }
    }
}

/// The client options for `tls://` and `wss://` addresses.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct TrustArgs {
    /// Trust only this CA certificate (PEM; may hold several) for tls:// and wss://
    /// instead of the platform's root certificates
    #[arg(long, value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,
}

/// Why a [`Connector`] could not be set up.
#[derive(Debug)]
pub(crate) enum TrustError {
    /// The `--ca` file is unusable.
    Ca(PathBuf, TlsError),
    /// The platform's root certificates could not be loaded.
    Platform(TlsError),
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ca(path, e) => write!(f, "cannot use --ca {}: {e}", path.display()),
            Self::Platform(e) => write!(
                f,
                "cannot load the platform's root certificates ({e}); pass --ca FILE with the \
                 server's CA certificate"
            ),
        }
    }
}

impl std::error::Error for TrustError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Ca(_, e) | Self::Platform(e) => Some(e),
        }
    }
}

/// Connects to one address, as often as asked (bench opens several
/// connections): the address plus, for `tls://` and `wss://`, the TLS
/// settings, built once.
pub(crate) struct Connector {
    addr: Address,
    tls: Option<Arc<rustls::ClientConfig>>,
    custom_ca: bool,
}

impl Connector {
    /// A connector for `addr`. For `tls://` and `wss://` it trusts the
    /// certificates in `ca`, or the platform's root certificates without
    /// it; other addresses ignore `ca`.
    pub(crate) fn new(addr: &Address, ca: Option<&Path>) -> Result<Self, TrustError> {
        let tls = if addr.uses_tls() {
            Some(match ca {
                Some(path) => tls::client_config_with_ca_file(path)
                    .map_err(|e| TrustError::Ca(path.to_owned(), e))?,
                None => tls::client_config_with_platform_roots().map_err(TrustError::Platform)?,
            })
        } else {
            None
        };
        Ok(Self {
            addr: addr.clone(),
            tls,
            custom_ca: ca.is_some(),
        })
    }

    /// Connects and runs the handshake; with a tracer, every frame in and
    /// out is reported to it.
    pub(crate) async fn connect(
        &self,
        handlers: Handlers,
        config: Config,
        tracer: Option<Tracer>,
    ) -> Result<Peer, ConnectError> {
        let Some(tracer) = tracer else {
            return match &self.addr {
                Address::Tcp(a) => Peer::connect(a.as_str(), handlers, config).await,
                Address::Tls(a) => tls::connect(a, self.tls()?, handlers, config).await,
                #[cfg(unix)]
                Address::Unix(p) => Peer::connect_unix(p, handlers, config).await,
                #[cfg(not(unix))]
                Address::Unix(_) => Err(unix_unsupported()),
                Address::Http(url) => Err(http_unsupported(url)),
                Address::WebSocket(url) => {
                    ws::connect_with(url, handlers, config, &self.ws_config()).await
                }
            };
        };
        // The same transports as above, with the byte stream wrapped in
        // the tracer before the gotalk handshake.
        let limit = config.handshake_timeout;
        match &self.addr {
            Address::Tcp(a) => {
                let stream = transport::open_tcp(a.as_str(), limit).await?;
                handshake_traced(stream, tracer, handlers, config).await
            }
            Address::Tls(a) => {
                let stream = tls::open(a, self.tls()?, limit).await?;
                handshake_traced(stream, tracer, handlers, config).await
            }
            #[cfg(unix)]
            Address::Unix(p) => {
                let stream = transport::open_unix(p, limit).await?;
                handshake_traced(stream, tracer, handlers, config).await
            }
            #[cfg(not(unix))]
            Address::Unix(_) => Err(unix_unsupported()),
            Address::Http(url) => Err(http_unsupported(url)),
            Address::WebSocket(url) => {
                let ws_config = self
                    .ws_config()
                    .wrap_io(move |io| Box::new(Traced::new(io, tracer.connection())));
                ws::connect_with(url, handlers, config, &ws_config).await
            }
        }
    }

    fn ws_config(&self) -> WsClientConfig {
        WsClientConfig {
            tls: self.tls.clone(),
            ..WsClientConfig::default()
        }
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
        // `new` builds them for every address that needs them.
        self.tls.clone().ok_or_else(|| {
            ConnectError::InvalidAddress(format!("no TLS settings for {}", self.addr))
        })
    }

    /// A hint for a failed [`connect`](Self::connect), when the cause is a
    /// common mistake: an untrusted certificate, or TLS on one side only.
    pub(crate) fn hint(&self, e: &ConnectError) -> Option<&'static str> {
        if let ConnectError::Tls(rustls::Error::InvalidCertificate(cert)) = e {
            if let Some(hint) = certificate_hint(cert, self.custom_ca) {
                return Some(hint);
            }
        }
        match (&self.addr, e) {
            (_, ConnectError::Tls(rustls::Error::InvalidCertificate(_))) if self.custom_ca => Some(
                "the server's certificate was refused: it must be issued by the --ca \
                 certificate and valid for the host name or IP address in the address",
            ),
            (_, ConnectError::Tls(rustls::Error::InvalidCertificate(_))) => Some(
                "the server's certificate was refused: without --ca only the platform's \
                 root certificates are trusted; pass --ca FILE with the certificate (PEM) \
                 of the CA that issued it",
            ),
            (
                Address::WebSocket(_),
                ConnectError::Tls(
                    rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. },
                ),
            ) => Some("the server does not seem to speak TLS: try ws://"),
            (
                _,
                ConnectError::Tls(
                    rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. },
                ),
            ) => Some("the server does not seem to speak TLS: try HOST:PORT without tls://"),
            (Address::Tcp(_), ConnectError::Handshake(_)) => {
                Some("if the server uses TLS, connect to tls://HOST:PORT")
            }
            (Address::WebSocket(_), ConnectError::Http { status: 404, .. }) => Some(
                "nothing is served at that path: gotalk serve --ws mounts the endpoint at \
                 /gotalk/ (or its --ws-path), as in ws://HOST:PORT/gotalk/",
            ),
            (Address::WebSocket(url), ConnectError::WebSocket(_)) if url.starts_with("ws://") => {
                Some("is it a gotalk WebSocket endpoint? if the server uses TLS, connect to wss://")
            }
            _ => None,
        }
    }
}

/// The hint for a refused server certificate whose reason a newcomer can
/// act on; `None` for the rest (the generic hints in [`Connector::hint`]).
fn certificate_hint(e: &rustls::CertificateError, custom_ca: bool) -> Option<&'static str> {
    use rustls::CertificateError as C;
    match e {
        // webpki's `CaUsedAsEndEntity` reaches rustls as `Other`.
        C::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => Some(
            "the server's certificate is a CA certificate (basicConstraints CA:TRUE, what \
             `openssl req -x509` makes by default), and a CA certificate cannot be a server's \
             own: make it with -addext basicConstraints=critical,CA:FALSE, or issue it from a \
             separate CA and pass that CA as --ca (recipes in docs/tls.md)",
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => Some(
            "the server's certificate is not valid for the host in the address: connect to a \
             name or IP address its subjectAltName lists (e.g. tls://localhost:PORT)",
        ),
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            Some("the server's certificate has expired or is not valid yet (check both clocks)")
        }
        C::UnknownIssuer if custom_ca => Some(
            "the server's certificate was not issued by the --ca certificate: pass the CA \
             that signed it, or, for a self-signed certificate, the certificate itself",
        ),
        _ => None,
    }
}

/// Whether a TCP or TLS server at `addr` is an HTTP server (such as the
/// WebSocket listener of `gotalk serve --ws`): it is sent the gotalk
/// version and a line end, which an HTTP server answers with an HTTP
/// status line. Used only to explain a failed connection; gives up (with
/// `false`) after `limit`.
pub(crate) async fn answers_http(addr: &str, limit: std::time::Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"01\r\n\r\n").await.ok()?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    matches!(tokio::time::timeout(limit, probe).await, Ok(Some(true)))
}

/// The hint for a TCP address that turned out to be an HTTP server.
pub(crate) fn http_hint(hostport: &str) -> String {
    format!(
        "the server answered in HTTP: if it is gotalk over WebSocket (gotalk serve --ws), \
         connect to ws://{hostport}/gotalk/"
    )
}

/// An `http://` address where a gotalk connection is needed.
fn http_unsupported(url: &str) -> ConnectError {
    ConnectError::InvalidAddress(format!(
        "{url} is an HTTP endpoint, which takes single calls (gotalk request) only; \
         for this command connect over gotalk: host:port or ws://"
    ))
}

#[cfg(not(unix))]
fn unix_unsupported() -> ConnectError {
    ConnectError::InvalidAddress("Unix domain sockets need a Unix system".into())
}

/// The gotalk handshake over `io`, every frame reported to `tracer`.
async fn handshake_traced<T>(
    io: T,
    tracer: Tracer,
    handlers: Handlers,
    config: Config,
) -> Result<Peer, ConnectError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let traced = Traced::new(io, tracer.connection());
    Ok(Peer::handshake(traced, handlers, config).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "127.0.0.1:1234".parse(),
            Ok(Address::Tcp("127.0.0.1:1234".into()))
        );
        assert_eq!(
            "tcp://localhost:80".parse(),
            Ok(Address::Tcp("localhost:80".into()))
        );
        assert_eq!("[::1]:9".parse(), Ok(Address::Tcp("[::1]:9".into())));
        assert_eq!(
            "unix:/tmp/g.sock".parse(),
            Ok(Address::Unix("/tmp/g.sock".into()))
        );
        assert_eq!(
            "ws://localhost:1234/gotalk/".parse(),
            Ok(Address::WebSocket("ws://localhost:1234/gotalk/".into()))
        );
        assert!("wss://example.invalid/".parse::<Address>().is_ok());
        assert_eq!(
            "tls://localhost:1235".parse(),
            Ok(Address::Tls("localhost:1235".into()))
        );
        assert_eq!(Address::Tls("h:1".into()).to_string(), "tls://h:1");
        for (a, tls) in [
            ("h:1", false),
            ("tls://h:1", true),
            ("ws://h/", false),
            ("wss://h/", true),
            ("unix:/s", false),
        ] {
            assert_eq!(a.parse::<Address>().unwrap().uses_tls(), tls, "{a}");
        }
        for bad in [
            "tls://",
            "tls://host",
            "tls://:1",
            "localhost",
            "host:",
            ":80",
            "host:99999",
            "tls://host:70000",
            "https://x:1/gotalk/",
            "ftp://x:1",
            "unix:",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
        assert_eq!(
            "http://x:1/gotalk/".parse::<Address>(),
            Ok(Address::Http("http://x:1/gotalk/".into()))
        );
        let e = "127.0.0.1:99999".parse::<Address>().unwrap_err();
        assert!(e.contains("port 99999 is out of range"), "{e}");
        assert_eq!(
            Address::Unix("/s".into()).to_string(),
            "unix:/s",
            "display round-trips"
        );
    }
}
