//! TLS for tests: the process-wide rustls provider, a test CA issuing serving certificates for
//! 127.0.0.1, and clients that trust only a given CA (as the API server trusts `caBundle`):
//! reqwest clients and raw TLS connections for clients that misbehave on purpose.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Installs aws-lc-rs as the process's rustls provider (the one the binary uses); a second
/// call is a no-op.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A self-signed test CA that can sign several serving certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA certificate (PEM), what a client trusts.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A new serving certificate for 127.0.0.1 and localhost: (cert PEM, key PEM, cert DER).
    pub fn leaf(&self) -> (String, String, Vec<u8>) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A reqwest client builder trusting only the CAs `ca_pems`, speaking HTTP/1.1 (as the API
/// server does to webhooks); callers add timeouts and pool settings.
pub fn client_builder_trusting(ca_pems: &[&str]) -> reqwest::ClientBuilder {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .http1_only();
    for pem in ca_pems {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    builder
}

/// A raw TLS connection (HTTP/1.1 by ALPN, server name 127.0.0.1) to `addr`, trusting only
/// `ca_pem`.
pub async fn connect(addr: SocketAddr, ca_pem: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    handshake(tcp, ca_pem).await
}

/// The client side of a TLS handshake (HTTP/1.1 by ALPN, server name 127.0.0.1) over `tcp`,
/// trusting only `ca_pem`.
pub async fn handshake(tcp: TcpStream, ca_pem: &str) -> std::io::Result<TlsStream<TcpStream>> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}
