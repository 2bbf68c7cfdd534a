//! TLS material for the webhook port: loading a PEM certificate and key into a rustls server
//! configuration (TLS 1.2+ only, ALPN h2 and http/1.1), and generating a local CA plus a
//! separate serving certificate when none is given (rustls refuses a CA certificate used as
//! the server's own, so the two are always distinct).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("{what}: invalid PEM: {message}")]
    Pem { what: String, message: String },
    #[error("the certificate and key are not usable together: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A locally generated CA and the serving certificate it signed.
#[derive(Debug, Clone)]
pub struct GeneratedTls {
    /// The CA bundle clients (the API server's `caBundle`) must trust.
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Names every generated serving certificate covers, before any `--dns-name`.
pub const DEFAULT_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Makes a CA and a serving certificate (CA:FALSE, serverAuth) for `localhost`, `127.0.0.1`
/// and `dns_names`, valid from an hour ago for one year.
pub fn generate(dns_names: &[String]) -> Result<GeneratedTls, TlsError> {
    generate_valid_for(dns_names, OffsetDateTime::now_utc(), Duration::days(365))
}

/// As [`generate`], valid from an hour before `now` for `validity` (the CA a day longer, so
/// the serving certificate never outlives its issuer).
pub fn generate_valid_for(
    dns_names: &[String],
    now: OffsetDateTime,
    validity: Duration,
) -> Result<GeneratedTls, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "portcullis local CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::hours(1);
    ca_params.not_after = now + validity + Duration::days(1);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| (*s).to_owned()).collect();
    for name in dns_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut leaf = CertificateParams::new(names)?;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.distinguished_name
        .push(DnType::CommonName, "portcullis webhook");
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - Duration::hours(1);
    leaf.not_after = now + validity;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca)?;
    Ok(GeneratedTls {
        ca_pem: ca.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// A rustls server configuration from PEM bytes: TLS 1.2 and 1.3 only, ALPN h2 + http/1.1.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|err| TlsError::Pem {
            what: "certificate".into(),
            message: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: "certificate".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| TlsError::Pem {
        what: "private key".into(),
        message: err.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// When the first certificate of a PEM text expires (for the expiry metric).
pub fn not_after(cert_pem: &[u8]) -> Option<OffsetDateTime> {
    let der = CertificateDer::pem_slice_iter(cert_pem).next()?.ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(parsed.validity().not_after.to_datetime())
}

/// Reads a certificate and key from files (as mounted from a Secret by cert-manager).
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    server_config(&read(cert_path)?, &read(key_path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_makes_a_server_config_and_a_distinct_ca() {
        let generated = generate(&["portcullis.portcullis.svc".into()]);
        let Ok(generated) = generated else {
            unreachable!("generation failed: {generated:?}");
        };
        assert_ne!(generated.ca_pem, generated.cert_pem);
        assert!(server_config(generated.cert_pem.as_bytes(), generated.key_pem.as_bytes()).is_ok());
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let (Ok(one), Ok(two)) = (generate(&[]), generate(&[])) else {
            unreachable!("generation failed");
        };
        let mixed = server_config(one.cert_pem.as_bytes(), two.key_pem.as_bytes());
        assert!(matches!(mixed, Err(TlsError::Rustls(_))), "{mixed:?}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let result = server_config(b"not pem", b"not pem either");
        assert!(
            matches!(result, Err(TlsError::NoCertificate { .. })),
            "{result:?}"
        );
    }
}
