//! Verifying Notary Project (Notation) signatures of an image digest.
//!
//! What a policy writes under `imagePolicies[].signatures.notation` is a [`NotationRequirement`];
//! [`NotationRequirement::compile`] reads the trust stores once and gives a [`NotationTrust`],
//! and [`verify`] checks one signature envelope (`application/jose+json` or `application/cose`)
//! against it. Everything here is pure: no network, no clock but the `now` passed in.
//!
//! The checks follow the Notary Project specifications (signature specification, JWS and COSE
//! envelopes, signing scheme, trust store and trust policy) at the `strict` verification level:
//!
//! * integrity: the envelope parses, the critical headers are all understood, the `alg` agrees
//!   with the signing key, the signature over the JWS signing input / COSE `Sig_structure`
//!   verifies with the leaf key, and the payload's `targetArtifact.digest` is the admitted digest;
//! * authenticity: the certificate chain in the envelope is ordered leaf first and ends in a
//!   self-signed root, its certificates meet the spec's certificate requirements, the leaf chains
//!   (rustls-webpki, code-signing EKU) to a certificate of the trust store, and the leaf subject
//!   matches one of the trusted identities;
//! * expiry: `io.cncf.notary.expiry`, when present, is after `now`;
//! * authentic timestamp, signing scheme `notary.x509`: when a TSA trust store is configured the
//!   RFC 3161 countersignature is required and verified, and the whole chain must be valid over
//!   the timestamp's range; without one, the chain must be valid at `now`. The `signingTime`
//!   header is the signer's own claim: it is reported, never trusted.
//!
//! Not implemented: revocation (OCSP/CRL), the `notary.x509.signingAuthority` scheme (refused),
//! verification plugins (their critical headers are refused), levels other than `strict`.

use std::collections::BTreeMap;
use std::fmt;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

pub use portcullis_core::notation_trust::{
    CertSource, DnSet, InlinePem, NotationRequirement, NotationTrust, NotationTrustError,
    TrustedIdentities, identity_matches, parse_dn, subject_set,
};

mod timestamp;

/// Media type of a JWS envelope (a signature manifest's layer).
pub const MEDIA_TYPE_JWS: &str = "application/jose+json";
/// Media type of a COSE_Sign1 envelope.
pub const MEDIA_TYPE_COSE: &str = "application/cose";
/// `artifactType` of a Notation signature manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
/// The only payload content type the Notary Project defines.
pub const PAYLOAD_CONTENT_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";

/// Envelopes larger than this are refused before parsing.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;
/// Certificate chains longer than this are refused.
pub const MAX_CHAIN_CERTS: usize = 10;

const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
const AUTHENTIC_SIGNING_TIME: &str = "io.cncf.notary.authenticSigningTime";
const EXPIRY: &str = "io.cncf.notary.expiry";
const TIMESTAMP_SIGNATURE: &str = "io.cncf.notary.timestampSignature";
const VERIFICATION_PLUGIN: &str = "io.cncf.notary.verificationPlugin";
const VERIFICATION_PLUGIN_MIN_VERSION: &str = "io.cncf.notary.verificationPluginMinVersion";
const SCHEME_X509: &str = "notary.x509";
const SCHEME_SIGNING_AUTHORITY: &str = "notary.x509.signingAuthority";

/// id-kp-codeSigning, 1.3.6.1.5.5.7.3.3, DER content octets.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// What went wrong, by layer: configuration, envelope parsing, cryptography, trust.
#[derive(Debug, thiserror::Error)]
pub enum NotationError {
    /// The trust section could not be compiled.
    #[error(transparent)]
    Trust(#[from] NotationTrustError),

    // --- envelope ---
    #[error(
        "notation signature envelope of {size} bytes is over the limit of {MAX_ENVELOPE_BYTES}"
    )]
    TooLarge { size: usize },
    #[error(
        "notation signature envelope media type {0:?} is neither {MEDIA_TYPE_JWS} nor {MEDIA_TYPE_COSE}"
    )]
    UnknownMediaType(String),
    #[error("notation JWS envelope is malformed: {0}")]
    MalformedJws(String),
    #[error("notation COSE envelope is malformed: {0}")]
    MalformedCose(String),
    #[error("notation signature header {header}: {message}")]
    Header { header: String, message: String },
    #[error("notation signature marks {0:?} critical, which portcullis does not understand")]
    UnknownCritical(String),
    #[error("notation signing scheme {0} is not supported (only notary.x509 is)")]
    UnsupportedScheme(String),
    #[error("notation signature payload is malformed: {0}")]
    Payload(String),
    #[error("notation signature is for another digest {found} (admitting {expected})")]
    DigestMismatch { found: String, expected: String },

    // --- cryptography and certificates ---
    #[error("notation certificate chain: {0}")]
    Chain(String),
    #[error("notation signing certificate does not fit: {0}")]
    Key(String),
    #[error("notation signature does not verify with the signing certificate's key ({alg})")]
    BadSignature { alg: &'static str },
    #[error("notation certificate chain is not trusted by the trust store: {0}")]
    Untrusted(#[source] webpki::Error),
    #[error("notation signer {subject:?} matches none of the trusted identities")]
    Identity { subject: String },
    #[error("notation signature expired at {0}")]
    Expired(String),
    #[error("notation timestamp countersignature: {0}")]
    Timestamp(String),
    #[error("notation timestamp certificate chain is not trusted by the TSA trust store: {0}")]
    TimestampUntrusted(#[source] webpki::Error),
}

/// A Notary Project signature algorithm (`alg`), the only ones the spec allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SignatureAlgorithm {
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
}

impl SignatureAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::ES512 => "ES512",
        }
    }

    fn from_jws(name: &str) -> Option<Self> {
        Some(match name {
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "ES512" => Self::ES512,
            _ => return None,
        })
    }

    fn from_cose(alg: coset::iana::Algorithm) -> Option<Self> {
        use coset::iana::Algorithm as A;
        Some(match alg {
            A::PS256 => Self::PS256,
            A::PS384 => Self::PS384,
            A::PS512 => Self::PS512,
            A::ES256 => Self::ES256,
            A::ES384 => Self::ES384,
            A::ES512 => Self::ES512,
            _ => return None,
        })
    }

    fn aws_lc(self) -> &'static dyn aws_lc_rs::signature::VerificationAlgorithm {
        use aws_lc_rs::signature as s;
        match self {
            Self::PS256 => &s::RSA_PSS_2048_8192_SHA256,
            Self::PS384 => &s::RSA_PSS_2048_8192_SHA384,
            Self::PS512 => &s::RSA_PSS_2048_8192_SHA512,
            Self::ES256 => &s::ECDSA_P256_SHA256_FIXED,
            Self::ES384 => &s::ECDSA_P384_SHA384_FIXED,
            Self::ES512 => &s::ECDSA_P521_SHA512_FIXED,
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which envelope format a signature came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EnvelopeFormat {
    Jws,
    Cose,
}

/// The payload's `targetArtifact`: the descriptor of what was signed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetArtifact {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    target_artifact: TargetArtifact,
}

/// Who signed, and how: the result of a successful [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotationSigner {
    /// The leaf certificate's subject DN as the certificate orders it, e.g. `C=US, ST=WA, O=x`.
    pub subject: String,
    /// The leaf certificate's issuer DN.
    pub issuer: String,
    /// `notary.x509` (the only scheme accepted).
    pub signing_scheme: String,
    pub algorithm: SignatureAlgorithm,
    pub envelope: EnvelopeFormat,
    /// `io.cncf.notary.signingTime`: the signer's own claim, not authenticated.
    #[serde(with = "time::serde::rfc3339::option")]
    pub signing_time: Option<OffsetDateTime>,
    /// `io.cncf.notary.expiry`, when the signer set one.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expiry: Option<OffsetDateTime>,
    /// The RFC 3161 `genTime` when a timestamp countersignature was verified.
    #[serde(with = "time::serde::rfc3339::option")]
    pub timestamp: Option<OffsetDateTime>,
    /// Whether a timestamp countersignature was verified against the TSA trust store.
    pub timestamp_verified: bool,
    pub target: TargetArtifact,
}

/// What both envelope formats come down to before the cryptography.
struct Parsed {
    format: EnvelopeFormat,
    alg: SignatureAlgorithm,
    scheme: String,
    signing_time: Option<OffsetDateTime>,
    expiry: Option<OffsetDateTime>,
    chain: Vec<Vec<u8>>,
    payload: Vec<u8>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    timestamp_token: Option<Vec<u8>>,
}

fn header_err(header: &str, message: impl Into<String>) -> NotationError {
    NotationError::Header {
        header: header.to_string(),
        message: message.into(),
    }
}

/// The protected headers both formats share, once their encodings are undone.
struct CommonHeaders<'a> {
    /// Names of the protected headers present (text labels only).
    present: Vec<&'a str>,
    crit: Vec<String>,
    content_type: Option<&'a str>,
    scheme: Option<&'a str>,
}

/// The spec's rules on `crit` and the signing scheme, shared by JWS and COSE.
fn check_common(headers: &CommonHeaders<'_>) -> Result<String, NotationError> {
    match headers.content_type {
        Some(PAYLOAD_CONTENT_TYPE) => {}
        Some(other) => {
            return Err(header_err(
                "content type",
                format!("{other:?} is not {PAYLOAD_CONTENT_TYPE}"),
            ));
        }
        None => return Err(header_err("content type", "is missing")),
    }
    if headers.crit.is_empty() {
        return Err(header_err("crit", "is missing or empty"));
    }
    for name in &headers.crit {
        match name.as_str() {
            SIGNING_SCHEME | EXPIRY | AUTHENTIC_SIGNING_TIME => {}
            _ => return Err(NotationError::UnknownCritical(name.clone())),
        }
        if !headers.present.contains(&name.as_str()) {
            return Err(header_err(
                "crit",
                format!("lists {name}, which is not a protected header"),
            ));
        }
    }
    for must in [SIGNING_SCHEME, EXPIRY, AUTHENTIC_SIGNING_TIME] {
        if headers.present.contains(&must) && !headers.crit.iter().any(|c| c == must) {
            return Err(header_err(must, "is present but not marked critical"));
        }
    }
    for plugin in [VERIFICATION_PLUGIN, VERIFICATION_PLUGIN_MIN_VERSION] {
        if headers.present.contains(&plugin) {
            return Err(header_err(
                plugin,
                "asks for a verification plugin, which portcullis does not run",
            ));
        }
    }
    let scheme = headers
        .scheme
        .ok_or_else(|| header_err(SIGNING_SCHEME, "is missing or not a string"))?;
    match scheme {
        SCHEME_X509 => {}
        SCHEME_SIGNING_AUTHORITY => {
            return Err(NotationError::UnsupportedScheme(format!(
                "{scheme} (it needs a signingAuthority trust store, which portcullis does not \
                 implement)"
            )));
        }
        other => return Err(NotationError::UnsupportedScheme(other.to_string())),
    }
    if headers.present.contains(&AUTHENTIC_SIGNING_TIME) {
        return Err(header_err(
            AUTHENTIC_SIGNING_TIME,
            "belongs to notary.x509.signingAuthority, not notary.x509",
        ));
    }
    if !headers.present.contains(&SIGNING_TIME) {
        return Err(header_err(SIGNING_TIME, "is required under notary.x509"));
    }
    Ok(scheme.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwsEnvelope {
    payload: String,
    protected: String,
    header: JwsUnprotected,
    signature: String,
}

#[derive(Deserialize)]
struct JwsUnprotected {
    #[serde(default)]
    x5c: Option<Vec<String>>,
    #[serde(default, rename = "io.cncf.notary.timestampSignature")]
    timestamp_signature: Option<String>,
}

/// The protected header's known fields. A derived struct refuses a duplicated known key;
/// `serde_json::Map` alone would silently keep the last one.
#[derive(Deserialize)]
struct JwsProtected {
    alg: Option<String>,
    cty: Option<String>,
    crit: Option<Vec<String>>,
    #[serde(rename = "io.cncf.notary.signingScheme")]
    signing_scheme: Option<String>,
    #[serde(rename = "io.cncf.notary.signingTime")]
    signing_time: Option<String>,
    #[serde(rename = "io.cncf.notary.expiry")]
    expiry: Option<String>,
}

fn parse_jws(envelope: &[u8]) -> Result<Parsed, NotationError> {
    let bad = |m: String| NotationError::MalformedJws(m);
    let env: JwsEnvelope = serde_json::from_slice(envelope)
        .map_err(|e| bad(format!("not a flattened JWS JSON serialization: {e}")))?;
    let protected_bytes = URL_SAFE_NO_PAD
        .decode(env.protected.as_bytes())
        .map_err(|e| bad(format!("protected is not base64url: {e}")))?;
    let protected: JwsProtected = serde_json::from_slice(&protected_bytes)
        .map_err(|e| bad(format!("protected header: {e}")))?;
    let protected_map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&protected_bytes)
            .map_err(|e| bad(format!("protected header: {e}")))?;
    let alg_name = protected
        .alg
        .as_deref()
        .ok_or_else(|| header_err("alg", "is missing"))?;
    let alg = SignatureAlgorithm::from_jws(alg_name).ok_or_else(|| {
        header_err(
            "alg",
            format!("{alg_name:?} is not one of PS256, PS384, PS512, ES256, ES384, ES512"),
        )
    })?;
    let crit = protected.crit.clone().unwrap_or_default();
    for registered in [
        "alg", "cty", "crit", "typ", "kid", "x5c", "jku", "jwk", "x5u", "x5t", "x5t#S256", "b64",
    ] {
        if crit.iter().any(|c| c == registered) {
            return Err(header_err(
                "crit",
                format!("must not list the JWS header {registered}"),
            ));
        }
    }
    let common = CommonHeaders {
        present: protected_map.keys().map(String::as_str).collect(),
        crit,
        content_type: protected.cty.as_deref(),
        scheme: protected.signing_scheme.as_deref(),
    };
    let scheme = check_common(&common)?;
    let signing_time = protected
        .signing_time
        .as_deref()
        .map(|t| parse_rfc3339(SIGNING_TIME, t))
        .transpose()?;
    let expiry = protected
        .expiry
        .as_deref()
        .map(|t| parse_rfc3339(EXPIRY, t))
        .transpose()?;
    let x5c = env
        .header
        .x5c
        .ok_or_else(|| header_err("x5c", "is missing"))?;
    if x5c.len() > MAX_CHAIN_CERTS {
        return Err(NotationError::Chain(format!(
            "{} certificates, over the limit of {MAX_CHAIN_CERTS}",
            x5c.len()
        )));
    }
    let chain = x5c
        .iter()
        .enumerate()
        .map(|(i, c)| {
            STANDARD
                .decode(c.as_bytes())
                .map_err(|e| header_err("x5c", format!("entry {i} is not base64: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timestamp_token = env
        .header
        .timestamp_signature
        .map(|t| {
            STANDARD
                .decode(t.as_bytes())
                .map_err(|e| header_err(TIMESTAMP_SIGNATURE, format!("is not base64: {e}")))
        })
        .transpose()?;
    let payload = URL_SAFE_NO_PAD
        .decode(env.payload.as_bytes())
        .map_err(|e| bad(format!("payload is not base64url: {e}")))?;
    let signature = URL_SAFE_NO_PAD
        .decode(env.signature.as_bytes())
        .map_err(|e| bad(format!("signature is not base64url: {e}")))?;
    let mut signing_input = Vec::with_capacity(env.protected.len() + 1 + env.payload.len());
    signing_input.extend_from_slice(env.protected.as_bytes());
    signing_input.push(b'.');
    signing_input.extend_from_slice(env.payload.as_bytes());
    Ok(Parsed {
        format: EnvelopeFormat::Jws,
        alg,
        scheme,
        signing_time,
        expiry,
        chain,
        payload,
        signing_input,
        signature,
        timestamp_token,
    })
}

fn parse_rfc3339(header: &str, text: &str) -> Result<OffsetDateTime, NotationError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| header_err(header, format!("{text:?} is not an RFC 3339 time: {e}")))
}

fn parse_cose(envelope: &[u8]) -> Result<Parsed, NotationError> {
    use coset::{Label, RegisteredLabel, RegisteredLabelWithPrivate, TaggedCborSerializable as _};
    let bad = |m: String| NotationError::MalformedCose(m);
    let sign1 = coset::CoseSign1::from_tagged_slice(envelope)
        .map_err(|e| bad(format!("not a COSE_Sign1_Tagged message: {e}")))?;
    let protected = &sign1.protected.header;
    let alg = match &protected.alg {
        Some(RegisteredLabelWithPrivate::Assigned(a)) => SignatureAlgorithm::from_cose(*a),
        _ => None,
    }
    .ok_or_else(|| {
        header_err(
            "alg",
            format!(
                "{:?} is not one of PS256/384/512 (-37/-38/-39), ES256/384/512 (-7/-35/-36)",
                protected.alg
            ),
        )
    })?;
    let mut crit = Vec::new();
    for label in &protected.crit {
        match label {
            RegisteredLabelWithPrivate::Text(t) => crit.push(t.clone()),
            other => return Err(NotationError::UnknownCritical(format!("{other:?}"))),
        }
    }
    let content_type = match &protected.content_type {
        Some(RegisteredLabel::Text(t)) => Some(t.as_str()),
        Some(other) => return Err(header_err("content type", format!("{other:?} is not text"))),
        None => None,
    };
    let text_value = |name: &str| {
        protected.rest.iter().find_map(|(l, v)| match l {
            Label::Text(t) if t == name => Some(v),
            _ => None,
        })
    };
    let mut present: Vec<&str> = protected
        .rest
        .iter()
        .filter_map(|(l, _)| match l {
            Label::Text(t) => Some(t.as_str()),
            Label::Int(_) => None,
        })
        .collect();
    present.sort_unstable();
    let scheme_value = text_value(SIGNING_SCHEME).and_then(|v| v.as_text());
    let common = CommonHeaders {
        present: present.clone(),
        crit,
        content_type,
        scheme: scheme_value,
    };
    let scheme = check_common(&common)?;
    let signing_time = text_value(SIGNING_TIME)
        .map(|v| cose_time(SIGNING_TIME, v))
        .transpose()?;
    let expiry = text_value(EXPIRY)
        .map(|v| cose_time(EXPIRY, v))
        .transpose()?;

    let x5chain_label = Label::Int(coset::iana::HeaderParameter::X5Chain as i64);
    let unprotected = &sign1.unprotected;
    let chain_value = unprotected
        .rest
        .iter()
        .chain(protected.rest.iter())
        .find_map(|(l, v)| (l == &x5chain_label).then_some(v))
        .ok_or_else(|| header_err("x5chain (33)", "is missing"))?;
    let chain = match chain_value {
        ciborium::Value::Bytes(one) => vec![one.clone()],
        ciborium::Value::Array(items) => {
            if items.len() > MAX_CHAIN_CERTS {
                return Err(NotationError::Chain(format!(
                    "{} certificates, over the limit of {MAX_CHAIN_CERTS}",
                    items.len()
                )));
            }
            items
                .iter()
                .map(|i| match i {
                    ciborium::Value::Bytes(b) => Ok(b.clone()),
                    _ => Err(header_err("x5chain (33)", "holds a non-bstr entry")),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        _ => {
            return Err(header_err(
                "x5chain (33)",
                "is neither a bstr nor an array of bstr",
            ));
        }
    };
    let timestamp_token = unprotected
        .rest
        .iter()
        .find_map(|(l, v)| match l {
            Label::Text(t) if t == TIMESTAMP_SIGNATURE => Some(v),
            _ => None,
        })
        .map(|v| match v {
            ciborium::Value::Bytes(b) => Ok(b.clone()),
            _ => Err(header_err(TIMESTAMP_SIGNATURE, "is not a bstr")),
        })
        .transpose()?;
    let payload = sign1
        .payload
        .clone()
        .ok_or_else(|| bad("the payload is detached".to_string()))?;
    let signing_input = sign1.tbs_data(&[]);
    Ok(Parsed {
        format: EnvelopeFormat::Cose,
        alg,
        scheme,
        signing_time,
        expiry,
        chain,
        payload,
        signing_input,
        signature: sign1.signature.clone(),
        timestamp_token,
    })
}

/// An RFC 8949 epoch date/time: tag 1 around an integer (notation requires the tag).
fn cose_time(header: &str, value: &ciborium::Value) -> Result<OffsetDateTime, NotationError> {
    let ciborium::Value::Tag(1, inner) = value else {
        return Err(header_err(header, "is not a tag-1 epoch date/time"));
    };
    let seconds = match inner.as_ref() {
        ciborium::Value::Integer(i) => {
            i64::try_from(i128::from(*i)).map_err(|_| header_err(header, "is out of range"))?
        }
        ciborium::Value::Float(f) if f.is_finite() && f.abs() < 1e15 => f.floor() as i64,
        _ => return Err(header_err(header, "is not a number of seconds")),
    };
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|e| header_err(header, e.to_string()))
}

// ------------------------------------------------------------------------------------------
// Certificates
// ------------------------------------------------------------------------------------------

fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, NotationError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(NotationError::Chain(format!("{what} has trailing bytes"))),
        Err(e) => Err(NotationError::Chain(format!(
            "{what} is not an X.509 certificate: {e}"
        ))),
    }
}

/// The `alg` a signing key implies: RSA 2048/3072/4096 → PS256/384/512, EC P-256/384/521 →
/// ES256/384/512 (the spec's mapping, which stops algorithm substitution).
fn key_algorithm(cert: &X509Certificate<'_>) -> Result<SignatureAlgorithm, NotationError> {
    use x509_parser::public_key::PublicKey;
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => match rsa.key_size() {
            2048 => Ok(SignatureAlgorithm::PS256),
            3072 => Ok(SignatureAlgorithm::PS384),
            4096 => Ok(SignatureAlgorithm::PS512),
            bits => Err(NotationError::Key(format!(
                "RSA key of {bits} bits (Notary Project signing keys are RSA 2048, 3072 or 4096)"
            ))),
        },
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => Ok(SignatureAlgorithm::ES256),
                Some("1.3.132.0.34") => Ok(SignatureAlgorithm::ES384),
                Some("1.3.132.0.35") => Ok(SignatureAlgorithm::ES512),
                other => Err(NotationError::Key(format!("EC key on curve {other:?}"))),
            }
        }
        Ok(_) => Err(NotationError::Key(
            "neither an RSA nor an EC key".to_string(),
        )),
        Err(e) => Err(NotationError::Key(format!("unreadable public key: {e}"))),
    }
}

/// Which role a certificate plays, for the spec's certificate requirements.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    CodeSigningLeaf,
    TimestampingLeaf,
    Ca,
}

/// The Notary Project certificate requirements (signature specification, "Certificate
/// Requirements"), on top of what rustls-webpki checks during path building.
fn check_requirements(
    cert: &X509Certificate<'_>,
    role: Role,
    what: &str,
) -> Result<(), NotationError> {
    let fail = |m: String| NotationError::Chain(format!("{what}: {m}"));
    let bc = cert
        .basic_constraints()
        .map_err(|e| fail(format!("basicConstraints: {e}")))?;
    let ku = cert
        .key_usage()
        .map_err(|e| fail(format!("keyUsage: {e}")))?;
    let eku = cert
        .extended_key_usage()
        .map_err(|e| fail(format!("extendedKeyUsage: {e}")))?;
    match role {
        Role::Ca => {
            let bc =
                bc.ok_or_else(|| fail("a CA certificate lacks basicConstraints".to_string()))?;
            if !bc.critical || !bc.value.ca {
                return Err(fail(
                    "a CA certificate needs critical basicConstraints with cA=true".to_string(),
                ));
            }
            let ku = ku.ok_or_else(|| fail("a CA certificate lacks keyUsage".to_string()))?;
            if !ku.critical || !ku.value.key_cert_sign() {
                return Err(fail(
                    "a CA certificate needs critical keyUsage with keyCertSign".to_string(),
                ));
            }
        }
        Role::CodeSigningLeaf | Role::TimestampingLeaf => {
            if let Some(bc) = bc
                && bc.value.ca
            {
                return Err(fail(
                    "the signing certificate is a CA (basicConstraints cA=true)".to_string(),
                ));
            }
            let ku =
                ku.ok_or_else(|| fail("the signing certificate lacks keyUsage".to_string()))?;
            if role == Role::CodeSigningLeaf && !ku.critical {
                return Err(fail("keyUsage must be critical".to_string()));
            }
            let k = ku.value;
            if !k.digital_signature() {
                return Err(fail("keyUsage lacks digitalSignature".to_string()));
            }
            if k.key_encipherment()
                || k.data_encipherment()
                || k.key_agreement()
                || k.key_cert_sign()
                || k.crl_sign()
                || k.encipher_only()
                || k.decipher_only()
            {
                return Err(fail("keyUsage allows more than signing".to_string()));
            }
            match role {
                Role::CodeSigningLeaf => {
                    if let Some(eku) = eku {
                        let e = eku.value;
                        if e.any
                            || e.server_auth
                            || e.client_auth
                            || e.email_protection
                            || e.time_stamping
                        {
                            return Err(fail(
                                "extendedKeyUsage allows anyExtendedKeyUsage, serverAuth, clientAuth, \
                                 emailProtection or timeStamping"
                                    .to_string(),
                            ));
                        }
                    }
                }
                _ => {
                    let eku = eku.ok_or_else(|| {
                        fail("a TSA certificate lacks extendedKeyUsage".to_string())
                    })?;
                    let e = eku.value;
                    if !eku.critical
                        || !e.time_stamping
                        || e.any
                        || e.server_auth
                        || e.client_auth
                        || e.code_signing
                        || e.email_protection
                        || e.ocsp_signing
                        || !e.other.is_empty()
                    {
                        return Err(fail("a TSA certificate needs a critical extendedKeyUsage of timeStamping only".to_string()));
                    }
                }
            }
            use x509_parser::public_key::PublicKey;
            match cert.public_key().parsed() {
                Ok(PublicKey::RSA(rsa)) if rsa.key_size() < 2048 => {
                    return Err(fail("RSA key under 2048 bits".to_string()));
                }
                Ok(PublicKey::EC(ec)) if ec.key_size() < 256 => {
                    return Err(fail("EC key under 256 bits".to_string()));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The chain in the envelope must be ordered leaf first, each certificate issued by the next,
/// ending in a self-issued root; each must meet the certificate requirements for its role.
fn check_chain_shape(certs: &[X509Certificate<'_>], leaf_role: Role) -> Result<(), NotationError> {
    let Some(last) = certs.last() else {
        return Err(NotationError::Chain("is empty".to_string()));
    };
    for (i, pair) in certs.windows(2).enumerate() {
        if let [child, parent] = pair
            && child.issuer().as_raw() != parent.subject().as_raw()
        {
            return Err(NotationError::Chain(format!(
                "certificate {i} ({}) is not issued by certificate {} ({}): the chain must be \
                 ordered leaf first",
                child.subject(),
                i + 1,
                parent.subject()
            )));
        }
    }
    if last.issuer().as_raw() != last.subject().as_raw() {
        return Err(NotationError::Chain(format!(
            "ends at {}, which is not a self-signed root (the spec requires the full chain)",
            last.subject()
        )));
    }
    for (i, cert) in certs.iter().enumerate() {
        let role = if i == 0 { leaf_role } else { Role::Ca };
        check_requirements(cert, role, &format!("certificate {i} ({})", cert.subject()))?;
    }
    Ok(())
}

/// Certificate signature algorithms accepted in chains (no SHA-1: webpki has none).
static CERT_SIG_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ECDSA_P521_SHA256,
    webpki::aws_lc_rs::ECDSA_P521_SHA384,
    webpki::aws_lc_rs::ECDSA_P521_SHA512,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
    webpki::aws_lc_rs::RSA_PKCS1_3072_8192_SHA384,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

fn unix_time(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
}

/// Path validation with rustls-webpki from `chain[0]` through `chain[1..]` to one of `roots`,
/// with every certificate valid at each instant of `times`.
fn verify_path(
    chain: &[Vec<u8>],
    roots: &[CertificateDer<'static>],
    eku: webpki::KeyUsage,
    times: &[SystemTime],
) -> Result<(), webpki::Error> {
    let anchors = roots
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()?;
    let leaf_der = CertificateDer::from(chain.first().map(Vec::as_slice).unwrap_or_default());
    let intermediates: Vec<CertificateDer<'_>> = chain
        .iter()
        .skip(1)
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)?;
    for &time in times {
        leaf.verify_for_usage(
            CERT_SIG_ALGS,
            &anchors,
            &intermediates,
            unix_time(time),
            eku,
            None,
            None,
        )?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Verification
// ------------------------------------------------------------------------------------------

/// The envelope decoded and its shape checked (size, format, certificate count): everything
/// [`verify`] does before it parses certificates.
fn parse_checked(envelope_media_type: &str, envelope: &[u8]) -> Result<Parsed, NotationError> {
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(NotationError::TooLarge {
            size: envelope.len(),
        });
    }
    let parsed = match envelope_media_type {
        MEDIA_TYPE_JWS => parse_jws(envelope)?,
        MEDIA_TYPE_COSE => parse_cose(envelope)?,
        other => return Err(NotationError::UnknownMediaType(other.to_string())),
    };
    if parsed.chain.is_empty() {
        return Err(NotationError::Chain(
            "the envelope carries no certificate".to_string(),
        ));
    }
    if parsed.chain.len() > MAX_CHAIN_CERTS {
        return Err(NotationError::Chain(format!(
            "{} certificates, over the limit of {MAX_CHAIN_CERTS}",
            parsed.chain.len()
        )));
    }
    Ok(parsed)
}

/// Everything [`verify`] checks before the cryptography, with no trust store: the envelope's
/// encoding and header rules, the chain's size and DER, and that the leaf key suits the
/// envelope's `alg`. Used by `portcullis`'s fuzz targets and tests (a signature that passes
/// this can still fail [`verify`], never the other way round).
pub fn parse_envelope(
    envelope_media_type: &str,
    envelope: &[u8],
) -> Result<(EnvelopeFormat, SignatureAlgorithm), NotationError> {
    let parsed = parse_checked(envelope_media_type, envelope)?;
    for (i, der) in parsed.chain.iter().enumerate() {
        let cert = parse_cert(der, &format!("certificate {i}"))?;
        if i == 0 {
            let key_alg = key_algorithm(&cert)?;
            if key_alg != parsed.alg {
                return Err(NotationError::Key(format!(
                    "the envelope says {} but the signing key calls for {key_alg}",
                    parsed.alg
                )));
            }
        }
    }
    Ok((parsed.format, parsed.alg))
}

/// Reads an RFC 3161 timestamp token as [`verify`] would for `signature`, against an empty
/// TSA trust store: the token can never be trusted, so this always ends in an error, but every
/// step before the chain (the DER reader, CMS and TSTInfo structure, digests) runs. The fuzz
/// and test entry point of the timestamp parser.
pub fn check_timestamp_token(token: &[u8], signature: &[u8]) -> Result<(), NotationError> {
    timestamp::verify_token(token, signature, &[], SystemTime::now()).map(|_| ())
}

/// Verifies one Notation signature envelope for `image_digest` (`sha256:<hex>`) at `now`.
///
/// `envelope_media_type` is the media type of the signature manifest's layer:
/// [`MEDIA_TYPE_JWS`] or [`MEDIA_TYPE_COSE`].
pub fn verify(
    trust: &NotationTrust,
    envelope_media_type: &str,
    envelope: &[u8],
    image_digest: &str,
    now: SystemTime,
) -> Result<NotationSigner, NotationError> {
    let parsed = parse_checked(envelope_media_type, envelope)?;
    let certs = parsed
        .chain
        .iter()
        .enumerate()
        .map(|(i, der)| parse_cert(der, &format!("certificate {i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = certs
        .first()
        .ok_or_else(|| NotationError::Chain("the envelope carries no certificate".to_string()))?;

    // Integrity: alg agrees with the key, the signature verifies, the payload is for this digest.
    let key_alg = key_algorithm(leaf)?;
    if key_alg != parsed.alg {
        return Err(NotationError::Key(format!(
            "the envelope says {} but the signing key calls for {key_alg}",
            parsed.alg
        )));
    }
    let key_bytes: &[u8] = &leaf.public_key().subject_public_key.data;
    aws_lc_rs::signature::UnparsedPublicKey::new(parsed.alg.aws_lc(), key_bytes)
        .verify(&parsed.signing_input, &parsed.signature)
        .map_err(|_| NotationError::BadSignature {
            alg: parsed.alg.name(),
        })?;
    let payload: Payload = serde_json::from_slice(&parsed.payload)
        .map_err(|e| NotationError::Payload(e.to_string()))?;
    let target = payload.target_artifact;
    if target.digest != image_digest {
        return Err(NotationError::DigestMismatch {
            found: target.digest,
            expected: image_digest.to_string(),
        });
    }

    // Authenticity: chain shape and requirements, path to the trust store, identity.
    check_chain_shape(&certs, Role::CodeSigningLeaf)?;
    let subject = subject_set(leaf).map_err(NotationError::Chain)?;
    let subject_text = leaf.subject().to_string();

    // Authentic timestamp (notary.x509): the TSA's time when a TSA trust store is configured,
    // else the verification time.
    let (times, timestamp) = if trust.requires_timestamp() {
        let token = parsed.timestamp_token.as_deref().ok_or_else(|| {
            NotationError::Timestamp(
                "none in the envelope, but tsaTrustStore is configured so one is required"
                    .to_string(),
            )
        })?;
        let stamped = timestamp::verify_token(token, &parsed.signature, trust.tsa_roots(), now)?;
        (vec![stamped.lower, stamped.upper], Some(stamped.gen_time))
    } else {
        (vec![now], None)
    };
    verify_path(
        &parsed.chain,
        trust.roots(),
        webpki::KeyUsage::required_if_present(EKU_CODE_SIGNING),
        &times,
    )
    .map_err(NotationError::Untrusted)?;
    if !identity_matches(trust.identities(), &subject) {
        return Err(NotationError::Identity {
            subject: subject_text,
        });
    }

    // Expiry.
    if let Some(expiry) = parsed.expiry
        && OffsetDateTime::from(now) >= expiry
    {
        return Err(NotationError::Expired(
            expiry
                .format(&Rfc3339)
                .unwrap_or_else(|_| expiry.to_string()),
        ));
    }

    Ok(NotationSigner {
        subject: subject_text,
        issuer: leaf.issuer().to_string(),
        signing_scheme: parsed.scheme,
        algorithm: parsed.alg,
        envelope: parsed.format,
        signing_time: parsed.signing_time,
        expiry: parsed.expiry,
        timestamp_verified: timestamp.is_some(),
        timestamp,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust_any() -> NotationTrust {
        NotationTrust::new(Vec::new(), Vec::new(), TrustedIdentities::Any)
    }

    fn jws_with(protected: serde_json::Value) -> Vec<u8> {
        let p = URL_SAFE_NO_PAD.encode(protected.to_string());
        serde_json::json!({"payload": "e30", "protected": p, "header": {"x5c": []}, "signature": "AA"})
            .to_string()
            .into_bytes()
    }

    fn verify_jws(protected: serde_json::Value) -> NotationError {
        verify(
            &trust_any(),
            MEDIA_TYPE_JWS,
            &jws_with(protected),
            "sha256:00",
            SystemTime::now(),
        )
        .unwrap_err()
    }

    #[test]
    fn envelope_limits_and_media_types() {
        let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        let err = verify(
            &trust_any(),
            MEDIA_TYPE_JWS,
            &big,
            "sha256:00",
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(matches!(err, NotationError::TooLarge { .. }));
        let err = verify(
            &trust_any(),
            "text/plain",
            b"{}",
            "sha256:00",
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(matches!(err, NotationError::UnknownMediaType(_)));
        let err = verify(
            &trust_any(),
            MEDIA_TYPE_COSE,
            b"\xd2\x84",
            "sha256:00",
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(matches!(err, NotationError::MalformedCose(_)));
    }

    #[test]
    fn jws_header_rules() {
        let base = serde_json::json!({
            "alg": "ES256", "cty": PAYLOAD_CONTENT_TYPE,
            "crit": [SIGNING_SCHEME], SIGNING_SCHEME: "notary.x509",
            SIGNING_TIME: "2026-01-01T00:00:00Z"
        });
        // Well-formed headers get as far as the (empty) certificate chain.
        assert!(matches!(verify_jws(base.clone()), NotationError::Chain(_)));
        let with = |k: &str, v: serde_json::Value| {
            let mut h = base.clone();
            h[k] = v;
            h
        };
        assert!(matches!(
            verify_jws(with("alg", "HS256".into())),
            NotationError::Header { .. }
        ));
        assert!(matches!(
            verify_jws(with("alg", "none".into())),
            NotationError::Header { .. }
        ));
        assert!(matches!(
            verify_jws(with("cty", "application/json".into())),
            NotationError::Header { .. }
        ));
        assert!(matches!(
            verify_jws(with("crit", serde_json::json!([SIGNING_SCHEME, "x.y"]))),
            NotationError::UnknownCritical(_)
        ));
        assert!(matches!(
            verify_jws(with("crit", serde_json::json!([]))),
            NotationError::Header { .. }
        ));
        // An expiry must be critical.
        assert!(matches!(
            verify_jws(with(EXPIRY, "2030-01-01T00:00:00Z".into())),
            NotationError::Header { .. }
        ));
        assert!(matches!(
            verify_jws(with(SIGNING_SCHEME, "notary.x509.signingAuthority".into())),
            NotationError::UnsupportedScheme(_)
        ));
        assert!(matches!(
            verify_jws(with(SIGNING_TIME, "yesterday".into())),
            NotationError::Header { .. }
        ));
        assert!(matches!(
            verify_jws(with(VERIFICATION_PLUGIN, "p".into())),
            NotationError::Header { .. }
        ));
        // Unknown top-level members are refused.
        let mut env: serde_json::Value = serde_json::from_slice(&jws_with(base)).unwrap();
        env["signatures"] = serde_json::json!([]);
        let err = verify(
            &trust_any(),
            MEDIA_TYPE_JWS,
            env.to_string().as_bytes(),
            "sha256:00",
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(matches!(err, NotationError::MalformedJws(_)));
    }

    #[test]
    fn parse_envelope_checks_shape_without_trust() {
        let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(
            parse_envelope(MEDIA_TYPE_JWS, &big),
            Err(NotationError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_envelope("text/plain", b"{}"),
            Err(NotationError::UnknownMediaType(_))
        ));
        // Well-formed headers but no certificate: refused before any cryptography.
        let protected = serde_json::json!({
            "alg": "PS256",
            "cty": PAYLOAD_CONTENT_TYPE,
            "crit": ["io.cncf.notary.signingScheme"],
            "io.cncf.notary.signingScheme": "notary.x509",
            "io.cncf.notary.signingTime": "2026-01-01T00:00:00Z",
        });
        assert!(matches!(
            parse_envelope(MEDIA_TYPE_JWS, &jws_with(protected)),
            Err(NotationError::Chain(_))
        ));
        assert!(parse_envelope(MEDIA_TYPE_COSE, b"\xd2\x84").is_err());
    }

    #[test]
    fn a_timestamp_token_is_never_trusted_without_tsa_roots() {
        assert!(check_timestamp_token(b"", b"sig").is_err());
        assert!(check_timestamp_token(&[0x30, 0x03, 0x02, 0x01, 0x01], b"sig").is_err());
    }

    #[test]
    fn cose_times_need_tag_1() {
        use ciborium::Value;
        let t = cose_time(
            "t",
            &Value::Tag(1, Box::new(Value::Integer(1_700_000_000.into()))),
        )
        .unwrap();
        assert_eq!(t.unix_timestamp(), 1_700_000_000);
        assert!(cose_time("t", &Value::Integer(1.into())).is_err());
        assert!(cose_time("t", &Value::Tag(0, Box::new(Value::Text("x".into())))).is_err());
    }
}
