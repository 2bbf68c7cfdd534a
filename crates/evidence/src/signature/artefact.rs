//! What a registry holds about a digest's signatures, as found (pure data, no I/O): where each
//! artefact was found, its format, and its content. Classic Cosign layers (`.sig` simple
//! signing, `.att` DSSE) are turned into Sigstore bundles here, so that one verifier — the
//! maintained `sigstore-verify` — judges every format.

pub use portcullis_core::evidence::{Format, Place};
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sigstore_types::Bundle;

/// Layer media type of a Cosign simple-signing signature.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation carrying the base64 signature on a `.sig` layer.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Layer annotations cosign writes on keyless layers.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// Layer annotation with RFC 3161 timestamp (cosign `--timestamp-server-url`).
pub const RFC3161_ANNOTATION: &str = "dev.sigstore.cosign/rfc3161timestamp";
/// Layer media type of a DSSE envelope (`cosign attest`, classic `.att`).
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// Artifact type (and layer media type) of a Sigstore bundle stored as an OCI referrer.
pub const BUNDLE_ARTIFACT_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Other bundle media-type spellings seen on referrers (older sigstore-js / cosign).
pub const BUNDLE_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// Artifact type of a Notary Project signature manifest.
pub const NOTATION_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
/// The in-toto predicate type Cosign 3 uses for a plain image signature in a bundle.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// The DSSE payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The simple-signing `critical.type` of a classic signature.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

/// What the artefact holds, ready for verification.
#[derive(Debug, Clone)]
pub enum Content {
    /// A Sigstore bundle (found as one, or built from a classic layer). `signed_payload` is
    /// the artifact a message signature signs when it is not the image itself (classic
    /// simple signing: the payload bytes); `None` means the image digest is the artifact.
    Bundle {
        bundle: Box<Bundle>,
        signed_payload: Option<Vec<u8>>,
        /// Rekor v2 `dsse` 0.0.2 entries the bundle carried, which sigstore-types cannot
        /// hold; verified by [`super::rekor_v2`].
        rekor_v2_dsse: Vec<super::rekor_v2::DsseV2Entry>,
    },
    /// A Notary Project envelope (`application/jose+json` or `application/cose`).
    Notation {
        media_type: String,
        envelope: Vec<u8>,
    },
    /// Could not be read; the text says why (shown by `verify` and in denials).
    Unreadable(String),
}

/// One signature or attestation found for a digest.
#[derive(Debug, Clone)]
pub struct Artefact {
    pub place: Place,
    pub format: Format,
    /// The manifest or layer digest it came from (for messages).
    pub source_digest: String,
    pub content: Content,
}

/// The simple-signing payload's claims, as found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SimpleSigning {
    #[serde(default)]
    pub critical: Critical,
}
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Critical {
    #[serde(default)]
    pub identity: SigningIdentity,
    #[serde(default)]
    pub image: SignedImage,
    #[serde(default, rename = "type")]
    pub type_name: String,
}
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SigningIdentity {
    #[serde(default, rename = "docker-reference")]
    pub docker_reference: String,
}
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SignedImage {
    #[serde(default, rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// An in-toto statement (the DSSE payload of bundles and `.att` layers).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    #[serde(default)]
    pub subject: Vec<StatementSubject>,
    #[serde(default)]
    pub predicate_type: String,
    #[serde(default)]
    pub predicate: serde_json::Value,
}
#[derive(Debug, Clone, Deserialize)]
pub struct StatementSubject {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub digest: BTreeMap<String, String>,
}

impl Statement {
    /// Whether a subject names `digest` (`sha256:<hex>`), whatever its name.
    pub fn names_digest(&self, digest: &str) -> bool {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return false;
        };
        self.subject.iter().any(|s| {
            s.digest
                .get(algorithm)
                .is_some_and(|d| d.eq_ignore_ascii_case(hex))
        })
    }
}

/// Cosign's Rekor bundle annotation (`dev.sigstore.cosign/bundle`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RekorBundle {
    signed_entry_timestamp: String,
    payload: RekorPayload,
}
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryKind {
    api_version: String,
    kind: String,
}

/// The layer annotations of a classic keyless layer, as strings.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassicMaterial<'a> {
    pub signature_b64: Option<&'a str>,
    pub certificate_pem: Option<&'a str>,
    pub chain_pem: Option<&'a str>,
    pub rekor_bundle: Option<&'a str>,
    pub rfc3161_timestamp: Option<&'a str>,
}

impl<'a> ClassicMaterial<'a> {
    pub fn from_annotations(annotations: Option<&'a BTreeMap<String, String>>) -> Self {
        let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        Self {
            signature_b64: get(SIGNATURE_ANNOTATION),
            certificate_pem: get(CERTIFICATE_ANNOTATION),
            chain_pem: get(CHAIN_ANNOTATION),
            rekor_bundle: get(REKOR_BUNDLE_ANNOTATION),
            rfc3161_timestamp: get(RFC3161_ANNOTATION),
        }
    }
}

/// The verification material and log entries of a classic layer, as bundle JSON parts.
fn classic_material(material: &ClassicMaterial<'_>) -> Result<serde_json::Value, String> {
    let mut verification = serde_json::Map::new();
    match material.certificate_pem {
        Some(pem) => {
            let mut certificates = pem_certificates(pem)?;
            if let Some(chain) = material.chain_pem {
                certificates.extend(pem_certificates(chain)?);
            }
            if certificates.is_empty() {
                return Err("the certificate annotation holds no certificate".into());
            }
            let certificates: Vec<_> = certificates
                .iter()
                .map(|der| json!({"rawBytes": BASE64.encode(der)}))
                .collect();
            verification.insert(
                "x509CertificateChain".into(),
                json!({"certificates": certificates}),
            );
        }
        None => {
            verification.insert("publicKey".into(), json!({"hint": ""}));
        }
    }
    let mut entries = Vec::new();
    if let Some(text) = material.rekor_bundle {
        let rekor: RekorBundle = serde_json::from_str(text)
            .map_err(|err| format!("the Rekor bundle annotation is not readable: {err}"))?;
        let body = BASE64
            .decode(&rekor.payload.body)
            .map_err(|err| format!("the Rekor entry body is not base64: {err}"))?;
        let kind: EntryKind = serde_json::from_slice(&body)
            .map_err(|err| format!("the Rekor entry body is not an entry: {err}"))?;
        let log_id = hex::decode(&rekor.payload.log_id)
            .map_err(|err| format!("the Rekor log id is not hex: {err}"))?;
        entries.push(json!({
            "logIndex": rekor.payload.log_index.to_string(),
            "logId": {"keyId": BASE64.encode(log_id)},
            "kindVersion": {"kind": kind.kind, "version": kind.api_version},
            "integratedTime": rekor.payload.integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": rekor.signed_entry_timestamp},
            "canonicalizedBody": rekor.payload.body,
        }));
    }
    verification.insert("tlogEntries".into(), serde_json::Value::Array(entries));
    let timestamps: Vec<_> = material
        .rfc3161_timestamp
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|value| value.get("SignedRFC3161Timestamp").cloned())
        .map(|token| json!({"signedTimestamp": token}))
        .into_iter()
        .collect();
    verification.insert(
        "timestampVerificationData".into(),
        json!({"rfc3161Timestamps": timestamps}),
    );
    Ok(serde_json::Value::Object(verification))
}

/// The bundle media type for a classic layer: v0.1 when a Rekor SET exists (what cosign's
/// own conversion uses), v0.2 otherwise (no log entry; a timestamp, or key-only).
fn classic_media_type(material: &ClassicMaterial<'_>) -> &'static str {
    if material.rekor_bundle.is_some() {
        "application/vnd.dev.sigstore.bundle+json;version=0.1"
    } else {
        "application/vnd.dev.sigstore.bundle+json;version=0.2"
    }
}

/// A classic `.sig` layer as a Sigstore bundle whose message signature signs `payload`.
pub fn bundle_from_simple_signing(
    payload: &[u8],
    material: &ClassicMaterial<'_>,
) -> Result<Bundle, String> {
    let signature = material
        .signature_b64
        .ok_or("the layer has no dev.cosignproject.cosign/signature annotation")?;
    let document = json!({
        "mediaType": classic_media_type(material),
        "verificationMaterial": classic_material(material)?,
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": BASE64.encode(Sha256::digest(payload))},
            "signature": signature.trim(),
        }
    });
    Bundle::from_json(&document.to_string()).map_err(|err| format!("not a valid signature: {err}"))
}

/// A classic `.att` layer (a DSSE envelope) as Sigstore bundles, one per envelope signature
/// (a bundle's verification material vouches for exactly one signature).
pub fn bundles_from_dsse_layer(
    envelope: &[u8],
    material: &ClassicMaterial<'_>,
) -> Result<Vec<Bundle>, String> {
    let mut envelope: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(envelope)
        .map_err(|err| format!("the DSSE envelope is not a JSON object: {err}"))?;
    let signatures = match envelope.remove("signatures") {
        Some(serde_json::Value::Array(signatures)) if !signatures.is_empty() => signatures,
        _ => return Err("the DSSE envelope has no signatures".into()),
    };
    let verification = classic_material(material)?;
    signatures
        .into_iter()
        .map(|signature| {
            let mut one = envelope.clone();
            one.insert(
                "signatures".into(),
                serde_json::Value::Array(vec![signature]),
            );
            let document = json!({
                "mediaType": classic_media_type(material),
                "verificationMaterial": verification,
                "dsseEnvelope": one,
            });
            Bundle::from_json(&document.to_string())
                .map_err(|err| format!("not a valid DSSE envelope: {err}"))
        })
        .collect()
}

/// Every certificate in a PEM text, as DER.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|cert| {
            cert.map(|c| c.to_vec())
                .map_err(|err| format!("certificate PEM: {err}"))
        })
        .collect()
}

/// A Sigstore bundle as found in a referrer layer.
pub fn parse_bundle(bytes: &[u8]) -> Result<(Bundle, Vec<super::rekor_v2::DsseV2Entry>), String> {
    let mut document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| format!("not a Sigstore bundle: {err}"))?;
    let rekor_v2_dsse = super::rekor_v2::set_aside(&mut document)?;
    let bundle = Bundle::from_json(&document.to_string())
        .map_err(|err| format!("not a Sigstore bundle: {err}"))?;
    Ok((bundle, rekor_v2_dsse))
}

/// The in-toto statement of a DSSE bundle, if it is one.
pub fn statement_of(bundle: &Bundle) -> Option<Result<Statement, String>> {
    match &bundle.content {
        sigstore_types::SignatureContent::DsseEnvelope(envelope) => {
            if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
                return Some(Err(format!(
                    "DSSE payload type {:?} is not an in-toto statement",
                    envelope.payload_type
                )));
            }
            Some(
                serde_json::from_slice::<Statement>(envelope.payload.as_bytes())
                    .map_err(|err| format!("the in-toto statement is not readable: {err}")),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_names_a_digest_by_value_whatever_the_subject_name() {
        let statement: Statement = serde_json::from_str(
            r#"{"subject":[{"name":"","digest":{"sha256":"ABCD"}}],"predicateType":"p"}"#,
        )
        .unwrap();
        assert!(statement.names_digest("sha256:abcd"));
        assert!(!statement.names_digest("sha256:abce"));
        assert!(!statement.names_digest("abcd"));
    }

    #[test]
    fn a_key_signed_sig_layer_becomes_a_public_key_bundle() {
        let material = ClassicMaterial {
            signature_b64: Some("MEUCIQ=="),
            ..ClassicMaterial::default()
        };
        let bundle = bundle_from_simple_signing(b"{}", &material).unwrap();
        assert!(matches!(
            bundle.verification_material.content,
            sigstore_types::bundle::VerificationMaterialContent::PublicKey(_)
        ));
        assert!(bundle.verification_material.tlog_entries.is_empty());
    }

    #[test]
    fn a_sig_layer_without_a_signature_or_with_a_broken_rekor_bundle_is_refused() {
        assert!(bundle_from_simple_signing(b"{}", &ClassicMaterial::default()).is_err());
        let material = ClassicMaterial {
            signature_b64: Some("MEUCIQ=="),
            rekor_bundle: Some("{not json"),
            ..ClassicMaterial::default()
        };
        let err = bundle_from_simple_signing(b"{}", &material).unwrap_err();
        assert!(err.contains("Rekor bundle"), "{err}");
    }
}
