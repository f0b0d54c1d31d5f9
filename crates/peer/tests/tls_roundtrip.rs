//! TLS over TCP and `wss://`, with certificates made at run time by rcgen:
//! round trips, and refusal of untrusted or misnamed certificates.
#![cfg(feature = "tls")]

use std::{
    error::Error as _,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use bytes::Bytes;
use gotalk_peer::{Config, ConnectError, HandlerError, Handlers, Server, ServerHandle, tls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls;

/// A CA, and a server certificate + key it signed.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki(names: &[&str]) -> Pki {
    let ca = ca("gotalk test CA");
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn handlers() -> Handlers {
    Handlers::new().buffer(
        "echo",
        |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
    )
}

/// The rustls error of a failed connect, if TLS refused.
fn tls_cause(e: &ConnectError) -> Option<&rustls::Error> {
    match e {
        ConnectError::Tls(e) => Some(e),
        _ => None,
    }
}

/// A gotalk server over TLS on an ephemeral loopback port.
async fn tls_server(server_tls: std::sync::Arc<rustls::ServerConfig>) -> ServerHandle {
    let listener = tls::TlsListener::bind("127.0.0.1:0", server_tls)
        .await
        .unwrap();
    Server::new(listener, handlers(), Config::default()).spawn()
}

/// A unique scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gotalk-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn tcp_tls_round_trip_from_pem_files() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    let dir = TempDir::new();
    let cert = dir.write("cert.pem", &pki.cert_pem);
    let key = dir.write("key.pem", &pki.key_pem);
    let ca = dir.write("ca.pem", &pki.ca_pem);

    let server_tls = tls::server_config_from_pem_files(&cert, &key).unwrap();
    let server = tls_server(server_tls).await;
    assert!(
        server
            .local_addr()
            .to_string()
            .starts_with("tls://127.0.0.1:")
    );
    let port = server.local_addr().port().unwrap();
    let client_tls = tls::client_config_with_ca_file(&ca).unwrap();

    for addr in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let peer = tls::connect(
            &addr,
            client_tls.clone(),
            Handlers::new(),
            Config::default(),
        )
        .await
        .unwrap();
        assert_eq!(peer.request("echo", "over tls").await.unwrap(), "over tls");
        let big = Bytes::from(vec![7u8; 3 << 20]);
        assert_eq!(peer.request("echo", big.clone()).await.unwrap(), big);
        assert_eq!(peer.remote_addr(), Some(format!("tls://{addr}").as_str()));
        peer.close().await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn untrusted_certificate_is_refused() {
    let pki = pki(&["localhost"]);
    let server_tls =
        tls::server_config_from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    let server = tls_server(server_tls).await;
    let addr = format!("localhost:{}", server.local_addr().port().unwrap());

    // Trusting some other CA only.
    let other = ca("some other CA");
    let client_tls = tls::client_config_with_ca_pem(other.pem().as_bytes()).unwrap();
    let err = tls::connect(&addr, client_tls, Handlers::new(), Config::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            tls_cause(&err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err} / {:?}",
        err.source()
    );

    // The right CA still works against the same server.
    let client_tls = tls::client_config_with_ca_pem(pki.ca_pem.as_bytes()).unwrap();
    let peer = tls::connect(&addr, client_tls, Handlers::new(), Config::default())
        .await
        .unwrap();
    assert_eq!(peer.request("echo", "ok").await.unwrap(), "ok");
    assert_eq!(server.connection_count(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn certificate_for_another_name_is_refused() {
    let pki = pki(&["other.example"]);
    let server_tls =
        tls::server_config_from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    let server = tls_server(server_tls).await;
    let client_tls = tls::client_config_with_ca_pem(pki.ca_pem.as_bytes()).unwrap();
    let err = tls::connect(
        &format!("localhost:{}", server.local_addr().port().unwrap()),
        client_tls,
        Handlers::new(),
        Config::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            tls_cause(&err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. }
                    | rustls::CertificateError::NotValidForName
            ))
        ),
        "{err} / {:?}",
        err.source()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn plain_tcp_client_does_not_get_through() {
    let pki = pki(&["localhost"]);
    let server_tls =
        tls::server_config_from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    let server = tls_server(server_tls).await;
    let config = Config {
        handshake_timeout: std::time::Duration::from_secs(2),
        ..Config::default()
    };
    // A gotalk client without TLS sends "01": not a TLS ClientHello.
    let plain = server.local_addr().socket_addr().unwrap();
    let result = gotalk_peer::Peer::connect(plain, Handlers::new(), config).await;
    assert!(result.is_err());
    assert_eq!(server.connection_count(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_key_material_is_reported() {
    let pki = pki(&["localhost"]);
    assert!(matches!(
        tls::server_config_from_pem(pki.cert_pem.as_bytes(), b""),
        Err(tls::TlsError::NoPrivateKey)
    ));
    // A key that does not belong to the certificate.
    let other = KeyPair::generate().unwrap();
    assert!(matches!(
        tls::server_config_from_pem(pki.cert_pem.as_bytes(), other.serialize_pem().as_bytes()),
        Err(tls::TlsError::Rustls(_))
    ));
    assert!(matches!(
        tls::server_config_from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem"),
        Err(tls::TlsError::Read { .. })
    ));
}

#[cfg(feature = "websocket")]
mod wss {
    use super::*;
    use gotalk_peer::ws::{self, WsClientConfig, WsConfig, WsListener};

    #[tokio::test]
    async fn wss_round_trip_and_wrong_ca() {
        let pki = pki(&["localhost", "127.0.0.1"]);
        let server_tls =
            tls::server_config_from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
        let listener = WsListener::bind_tls("127.0.0.1:0", WsConfig::default(), server_tls)
            .await
            .unwrap();
        let server = Server::new(listener, handlers(), Config::default()).spawn();
        assert!(
            server
                .local_addr()
                .to_string()
                .starts_with("wss://127.0.0.1:")
        );
        let port = server.local_addr().port().unwrap();
        let good = WsClientConfig {
            tls: Some(tls::client_config_with_ca_pem(pki.ca_pem.as_bytes()).unwrap()),
            ..WsClientConfig::default()
        };
        for host in ["localhost", "127.0.0.1"] {
            let url = format!("wss://{host}:{port}/gotalk/");
            let peer = ws::connect_with(&url, Handlers::new(), Config::default(), &good)
                .await
                .unwrap();
            assert_eq!(peer.request("echo", "over wss").await.unwrap(), "over wss");
            assert_eq!(
                peer.remote_addr(),
                Some(format!("wss://{host}:{port}").as_str())
            );
            peer.close().await;
        }

        let other = ca("some other CA");
        let bad = WsClientConfig {
            tls: Some(tls::client_config_with_ca_pem(other.pem().as_bytes()).unwrap()),
            ..WsClientConfig::default()
        };
        let err = ws::connect_with(
            &format!("wss://localhost:{port}/gotalk/"),
            Handlers::new(),
            Config::default(),
            &bad,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(tls_cause(&err), Some(rustls::Error::InvalidCertificate(_))),
            "{err}"
        );
        server.shutdown().await;
    }
}
