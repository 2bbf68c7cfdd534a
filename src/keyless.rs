//! Keyless verification of Cosign attestations (DSSE envelopes under the `.att` tag), which
//! sigstore 0.15 does for signatures but keeps internal for attestations: the layer's Fulcio
//! certificate must chain to the trusted root's CAs and be valid (code signing) at the Rekor
//! entry's integrated time, the entry's Signed Entry Timestamp must verify with the root's log
//! key, the entry must describe this envelope (its payload hash and this certificate), and the
//! envelope's DSSE signature must verify with the certificate's key. Pure: no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};
use x509_parser::extensions::GeneralName;

use crate::signature::TrustMaterial;

/// Layer annotations cosign writes on keyless attestation layers.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// Extended key usage `codeSigning` (1.3.6.1.5.5.7.3.3), DER content octets.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// Fulcio's OIDC issuer extensions: v1 (raw string) and v2 (DER UTF8String).
const ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
const ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";

/// Who a verified certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessSigner {
    pub issuer: String,
    pub subject: String,
}

/// What a keyless attestation layer carries besides the envelope.
#[derive(Debug, Clone, Copy)]
pub struct KeylessMaterial<'a> {
    pub certificate_pem: &'a str,
    pub chain_pem: Option<&'a str>,
    pub bundle_json: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RekorBundle {
    payload: RekorPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
}

/// Verifies one DSSE envelope (`payload_type`, `payload`, `signature`) signed keylessly.
pub fn verify_envelope(
    trust: &TrustMaterial,
    material: KeylessMaterial<'_>,
    pae: &[u8],
    payload: &[u8],
    signature: &[u8],
) -> Result<KeylessSigner, String> {
    let certificate = CertificateDer::from_pem_slice(material.certificate_pem.as_bytes())
        .map_err(|err| format!("certificate annotation is not PEM: {err}"))?;

    // 1. The Signed Entry Timestamp: the log vouches for the entry at integratedTime.
    let bundle: serde_json::Value = serde_json::from_str(material.bundle_json)
        .map_err(|err| format!("bundle annotation is not JSON: {err}"))?;
    let parsed: RekorBundle = serde_json::from_value(bundle.clone())
        .map_err(|err| format!("bundle annotation is not a Rekor bundle: {err}"))?;
    let mut log_keys = BTreeMap::new();
    for (log_id, der) in &trust.rekor_keys {
        let key = CosignVerificationKey::try_from_der(der)
            .map_err(|err| format!("Rekor key {log_id}: {err}"))?;
        log_keys.insert(log_id.clone(), key);
    }
    let wrapped = serde_json::json!({
        "base64Signature": BASE64.encode(signature),
        "cert": material.certificate_pem,
        "rekorBundle": bundle,
    });
    sigstore::cosign::bundle::SignedArtifactBundle::new_verified(&wrapped.to_string(), &log_keys)
        .map_err(|err| format!("Rekor Signed Entry Timestamp does not verify: {err}"))?;
    let integrated_time = u64::try_from(parsed.payload.integrated_time)
        .map_err(|_| "Rekor integratedTime is negative".to_owned())?;

    // 2. The certificate chains to the trusted Fulcio CAs and was valid for code signing then.
    let anchors: Vec<_> = trust
        .fulcio_certs
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect::<Vec<_>>();
    let anchors = anchors
        .iter()
        .filter_map(|der| webpki::anchor_from_trusted_cert(der).ok())
        .collect::<Vec<_>>();
    if anchors.is_empty() {
        return Err("the trusted root names no usable Fulcio CA".into());
    }
    let intermediates: Vec<CertificateDer<'static>> = material
        .chain_pem
        .map(|chain| {
            CertificateDer::pem_slice_iter(chain.as_bytes())
                .filter_map(Result::ok)
                .collect()
        })
        .unwrap_or_default();
    let end_entity = webpki::EndEntityCert::try_from(&certificate)
        .map_err(|err| format!("certificate unreadable: {err}"))?;
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    end_entity
        .verify_for_usage(
            algorithms,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(Duration::from_secs(integrated_time)),
            webpki::KeyUsage::required(CODE_SIGNING),
            None,
            None,
        )
        .map_err(|err| {
            format!("certificate does not chain to the trusted root at the log time: {err}")
        })?;

    // 3. The log entry is about this envelope and this certificate.
    let body = BASE64
        .decode(&parsed.payload.body)
        .map_err(|err| format!("Rekor body is not base64: {err}"))?;
    let body: serde_json::Value =
        serde_json::from_slice(&body).map_err(|err| format!("Rekor body is not JSON: {err}"))?;
    entry_describes(&body, payload, certificate.as_ref())?;

    // 4. The envelope is signed by the certificate's key.
    let (_, parsed_certificate) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|err| format!("certificate unreadable: {err}"))?;
    let key = CosignVerificationKey::try_from_der(parsed_certificate.public_key().raw)
        .map_err(|err| format!("certificate key unusable: {err}"))?;
    key.verify_signature(Signature::Raw(signature), pae)
        .map_err(|_| "the envelope signature does not verify with the certificate".to_owned())?;

    identity(&parsed_certificate)
}

/// Rekor `intoto` (0.0.2) and `dsse` (0.0.1) entries name the payload's hash and the signing
/// certificate; anything else is not an entry for this attestation.
fn entry_describes(
    body: &serde_json::Value,
    payload: &[u8],
    certificate: &[u8],
) -> Result<(), String> {
    let kind = body["kind"].as_str().unwrap_or_default();
    let (payload_hash, verifiers): (&serde_json::Value, Vec<&serde_json::Value>) = match kind {
        "intoto" => (
            &body["spec"]["content"]["payloadHash"],
            body["spec"]["content"]["envelope"]["signatures"]
                .as_array()
                .map(|s| s.iter().map(|s| &s["publicKey"]).collect())
                .unwrap_or_default(),
        ),
        "dsse" => (
            &body["spec"]["payloadHash"],
            body["spec"]["signatures"]
                .as_array()
                .map(|s| s.iter().map(|s| &s["verifier"]).collect())
                .unwrap_or_default(),
        ),
        other => {
            return Err(format!(
                "Rekor entry of kind {other:?} is not an attestation entry"
            ));
        }
    };
    let wanted = hex::encode(Sha256::digest(payload));
    if payload_hash["algorithm"] != "sha256" || payload_hash["value"] != wanted.as_str() {
        return Err("Rekor entry records another payload".into());
    }
    let names_certificate = verifiers.iter().filter_map(|v| v.as_str()).any(|encoded| {
        BASE64
            .decode(encoded)
            .ok()
            .and_then(|pem| CertificateDer::from_pem_slice(&pem).ok())
            .is_some_and(|der| der.as_ref() == certificate)
    });
    if !names_certificate {
        return Err("Rekor entry names another signing certificate".into());
    }
    Ok(())
}

/// The OIDC issuer (Fulcio extension) and the subject (email or URI SAN) of a certificate.
fn identity(
    certificate: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<KeylessSigner, String> {
    let mut issuer = None;
    for extension in certificate.extensions() {
        let oid = extension.oid.to_id_string();
        if oid == ISSUER_V2 {
            // DER UTF8String: tag 0x0c, short-form length.
            let value = extension.value;
            if value.len() >= 2 && value[0] == 0x0c && usize::from(value[1]) == value.len() - 2 {
                issuer = String::from_utf8(value[2..].to_vec()).ok();
            }
        } else if oid == ISSUER_V1 && issuer.is_none() {
            issuer = String::from_utf8(extension.value.to_vec()).ok();
        }
    }
    let issuer = issuer.ok_or("certificate has no Fulcio OIDC issuer extension")?;
    let subject = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::RFC822Name(email) => Some((*email).to_owned()),
                GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
        })
        .ok_or("certificate has no email or URI subject alternative name")?;
    Ok(KeylessSigner { issuer, subject })
}
