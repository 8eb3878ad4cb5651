//! A TLS front for a fake API: it serves TLS on 127.0.0.1 with a certificate for `localhost`
//! signed by a certificate authority made for the test (not trusted by anything until a client is
//! told of it: its PEM file is there for `SSL_CERT_FILE`), and forwards each connection, decrypted,
//! to the fake's plain address. An endpoint behind an internal CA, as users self-host them.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A TLS front, serving while it lives.
pub struct TlsFront {
    addr: SocketAddr,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl TlsFront {
    /// Starts a front on 127.0.0.1:0 for the plain server at `backend`.
    pub async fn start(backend: SocketAddr) -> io::Result<TlsFront> {
        let ca_key = KeyPair::generate().map_err(other)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).map_err(other)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().map_err(other)?;
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(other)?;
        let cert = params.signed_by(&key, &issuer).map_err(other)?;
        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem())?;
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(other)?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(other)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let (Ok(mut tls), Ok(mut plain)) = (
                        acceptor.accept(stream).await,
                        TcpStream::connect(backend).await,
                    ) {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Ok(TlsFront {
            addr,
            ca_file,
            _dir: dir,
            task,
        })
    }

    /// The front's URL, by the name its certificate holds: `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The PEM file of the certificate authority that signed the front's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }
}
