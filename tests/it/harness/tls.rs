//! A test CA and a TLS front: where the binary must speak https (an Entra token endpoint,
//! which azure_identity refuses over http; the image's trust store), a stand-in on plain
//! loopback sits behind a TLS terminator whose certificate the test CA signed for the names
//! given. The CA is written to a PEM file: the binary trusts it through `SSL_CERT_FILE`, an
//! image through a mount over its CA bundle. Nothing here is a double: bytes are piped
//! unchanged to the stand-in behind.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The PEM written to a file of its own.
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "s3-blob-sync test CA");
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, &pem).unwrap();
        // Readable by the image's non-root user whatever the umask.
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        // Readable by the image's non-root user when mounted.
        let _ = std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755));
        TestCa {
            issuer: Issuer::new(params, key),
            file,
            _dir: dir,
        }
    }

    /// A server configuration for `names`, signed by this CA.
    fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }
}

/// Terminates TLS on a loopback port and pipes each connection to `upstream` in plain.
pub struct TlsFront {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    /// A front for `upstream` (`127.0.0.1:PORT`) whose certificate names `names`.
    pub async fn start(ca: &TestCa, names: &[&str], upstream: SocketAddr) -> TlsFront {
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(names));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the CA ends the handshake: nothing to pipe.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { port, task }
    }
}

/// `http://127.0.0.1:PORT` (or any URL with a loopback host and port) as a socket address.
pub fn upstream_of(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).unwrap();
    SocketAddr::new(
        u.host_str().unwrap().parse().unwrap(),
        u.port_or_known_default().unwrap(),
    )
}
