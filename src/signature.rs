//! Cosign verification of a digest against one image policy's authorities, with the
//! `sigstore` crate: key-based signatures (ECDSA P-256/P-384, RSA, Ed25519), keyless
//! signatures (a Fulcio chain to the policy's `TrustedRoot`, Rekor SET or bundle checked
//! offline), the `.sig` tag scheme and OCI referrers bundles, and DSSE in-toto attestations
//! (`.att` tag, verified with the policy's keys).
//!
//! Fetching is separate from judging: [`collect`] gathers what the registry holds for a
//! digest (I/O), [`judge`] decides whether the authorities signed it (pure, given what was
//! collected), and says what was expected, what was found and how to fix it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sigstore::cosign::payload::simple_signing::SimpleSigning;
use sigstore::cosign::signature_layers::CertificateSubject;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{ClientBuilder, CosignCapabilities, SignatureLayer};
use sigstore::crypto::{CosignVerificationKey, Signature};
use sigstore::registry::OciReference;
use sigstore::trust::ManualTrustRoot;

use crate::config::{ImagePolicy, KeySource, SignatureRequirement};
use crate::credentials::Credential;
use crate::evidence::{PolicyVerification, SignatureEvidence, VerifiedAttestation};
use crate::reference::{GlobError, ImageGlobs, ImageRef};
use crate::registry::{Call, RegistryClient, RegistryError, cosign_tag};

/// Layer media type of a Cosign simple-signing signature.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation carrying the base64 signature on a `.sig` layer.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Layer media type of a DSSE envelope (`cosign attest`).
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// Artifact type of a Sigstore bundle stored as an OCI referrer (cosign 3 default).
pub const BUNDLE_ARTIFACT_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The in-toto predicate type cosign 3 uses for plain signatures in a bundle.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// Largest number of signature layers or attestation envelopes looked at per digest.
const MAX_ARTEFACTS: usize = 32;

/// A signature requirement that cannot be turned into authorities.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("imagePolicy {policy:?}: key {key}: {message}")]
    Key {
        policy: String,
        key: String,
        message: String,
    },
    #[error("imagePolicy {policy:?}: trusted root {path}: {message}")]
    TrustRoot {
        policy: String,
        path: PathBuf,
        message: String,
    },
    #[error("imagePolicy {policy:?}: {message}")]
    Identity { policy: String, message: String },
    #[error(transparent)]
    Glob(#[from] GlobError),
}

/// A public key a policy trusts.
#[derive(Debug, Clone)]
struct TrustedKey {
    /// What users wrote: the path, or `inline key sha256:<12 hex>`.
    label: String,
    /// What to put in `cosign sign --key ...`.
    hint: String,
    pem: Vec<u8>,
    key: CosignVerificationKey,
}

/// Exact text or an anchored regular expression.
#[derive(Debug, Clone)]
enum TextMatch {
    Exact(String),
    Pattern(Regex),
}

impl TextMatch {
    fn matches(&self, text: &str) -> bool {
        match self {
            TextMatch::Exact(expected) => expected == text,
            TextMatch::Pattern(pattern) => pattern.is_match(text),
        }
    }
    fn describe(&self) -> String {
        match self {
            TextMatch::Exact(expected) => expected.clone(),
            TextMatch::Pattern(pattern) => format!("~{}", pattern.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct KeylessMatcher {
    issuer: TextMatch,
    subject: TextMatch,
}

/// Fulcio CAs and Rekor keys from a Sigstore `TrustedRoot` JSON file.
#[derive(Debug, Clone, Default)]
pub struct TrustMaterial {
    /// DER certificates of every Fulcio CA chain.
    pub fulcio_certs: Vec<Vec<u8>>,
    /// Rekor public keys (DER SPKI) by log id (hex).
    pub rekor_keys: BTreeMap<String, Vec<u8>>,
    /// Hash of the file's bytes.
    pub fingerprint: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrustedRootFile {
    #[serde(default)]
    tlogs: Vec<TransparencyLog>,
    #[serde(default)]
    certificate_authorities: Vec<CertificateAuthority>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransparencyLog {
    #[serde(default)]
    public_key: Option<RawBytes>,
    #[serde(default)]
    log_id: Option<LogId>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogId {
    key_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    #[serde(default)]
    raw_bytes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateAuthority {
    #[serde(default)]
    cert_chain: Option<CertChain>,
}

#[derive(Debug, Deserialize)]
struct CertChain {
    #[serde(default)]
    certificates: Vec<RawBytes>,
}

impl TrustMaterial {
    /// Parses a Sigstore `TrustedRoot` JSON document (the format of the public-good
    /// `trusted_root.json` that `cosign` and `sigstore-go` ship, and of private roots).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file: TrustedRootFile =
            serde_json::from_slice(bytes).map_err(|err| format!("not a TrustedRoot: {err}"))?;
        let decode = |text: &str, what: &str| {
            BASE64
                .decode(text)
                .map_err(|err| format!("{what} is not base64: {err}"))
        };
        let mut material = TrustMaterial {
            fingerprint: hex::encode(Sha256::digest(bytes)),
            ..TrustMaterial::default()
        };
        for ca in &file.certificate_authorities {
            for cert in ca.cert_chain.iter().flat_map(|c| &c.certificates) {
                if let Some(raw) = &cert.raw_bytes {
                    material
                        .fulcio_certs
                        .push(decode(raw, "certificateAuthorities[].certChain")?);
                }
            }
        }
        for log in &file.tlogs {
            let Some(raw) = log.public_key.as_ref().and_then(|k| k.raw_bytes.as_ref()) else {
                continue;
            };
            let der = decode(raw, "tlogs[].publicKey.rawBytes")?;
            // The log id is the SHA-256 of the key; derive it when the file omits it.
            let log_id = match &log.log_id {
                Some(id) => hex::encode(decode(&id.key_id, "tlogs[].logId.keyId")?),
                None => hex::encode(Sha256::digest(&der)),
            };
            material.rekor_keys.insert(log_id, der);
        }
        if material.fulcio_certs.is_empty() {
            return Err("names no certificate authority (certificateAuthorities)".into());
        }
        if material.rekor_keys.is_empty() {
            return Err("names no transparency log key (tlogs)".into());
        }
        Ok(material)
    }
}

/// One image policy's signature requirement, compiled: keys parsed, identities compiled,
/// trust root read. Its `fingerprint` changes whenever any of that material changes, so
/// cached verification results are never reused across a key rotation.
#[derive(Debug, Clone)]
pub struct Authorities {
    pub policy: String,
    keys: Vec<TrustedKey>,
    keyless: Vec<KeylessMatcher>,
    trust: Option<TrustMaterial>,
    threshold: usize,
    mirror_of: Option<ImageGlobs>,
    attestations: Vec<String>,
    /// Read (and verify) attestations even when none is required: the policy's vulnerability
    /// rules take scans from cosign vuln attestations, and `maxImageAge` takes the build time
    /// from SLSA provenance.
    reads_attestations: bool,
    fingerprint: String,
}

/// `slsaprovenance1` → `https://slsa.dev/provenance/v1`, as `cosign attest --type` names them.
pub fn predicate_type_uri(name: &str) -> String {
    match name {
        "slsaprovenance" | "slsaprovenance02" => "https://slsa.dev/provenance/v0.2".into(),
        "slsaprovenance1" => "https://slsa.dev/provenance/v1".into(),
        "vuln" => "https://cosign.sigstore.dev/attestation/vuln/v1".into(),
        "cyclonedx" => "https://cyclonedx.org/bom".into(),
        "spdx" | "spdxjson" => "https://spdx.dev/Document".into(),
        "custom" => "https://cosign.sigstore.dev/attestation/v1".into(),
        other => other.to_owned(),
    }
}

impl Authorities {
    /// Compiles the policy's requirement; `None` when it has none.
    pub fn compile(policy: &ImagePolicy) -> Result<Option<Self>, SignatureError> {
        let Some(requirement) = &policy.signatures else {
            return Ok(None);
        };
        let mut authorities = Self::from_requirement(&policy.name, requirement)?;
        if policy.vulnerabilities.is_some() || policy.max_image_age.is_some() {
            authorities.reads_attestations = true;
            authorities.fingerprint.push_str("+attestations");
        }
        Ok(Some(authorities))
    }

    fn from_requirement(
        policy: &str,
        requirement: &SignatureRequirement,
    ) -> Result<Self, SignatureError> {
        let mut fingerprint = Sha256::new();
        let mut keys = Vec::new();
        for (index, source) in requirement.keys.iter().enumerate() {
            let key = load_key(policy, index, source)?;
            fingerprint.update(b"key\0");
            fingerprint.update(&key.pem);
            keys.push(key);
        }
        let mut keyless = Vec::new();
        for identity in &requirement.keyless {
            let issuer = text_match(policy, &identity.issuer, &identity.issuer_regexp, "issuer")?;
            let subject = text_match(
                policy,
                &identity.subject,
                &identity.subject_regexp,
                "subject",
            )?;
            fingerprint.update(
                format!("keyless\0{}\0{}", issuer.describe(), subject.describe()).as_bytes(),
            );
            keyless.push(KeylessMatcher { issuer, subject });
        }
        let trust = match &requirement.trusted_root {
            Some(path) if !keyless.is_empty() => {
                let bytes = std::fs::read(path).map_err(|err| SignatureError::TrustRoot {
                    policy: policy.to_owned(),
                    path: path.clone(),
                    message: err.to_string(),
                })?;
                let material =
                    TrustMaterial::parse(&bytes).map_err(|message| SignatureError::TrustRoot {
                        policy: policy.to_owned(),
                        path: path.clone(),
                        message,
                    })?;
                fingerprint.update(material.fingerprint.as_bytes());
                Some(material)
            }
            _ => None,
        };
        let mirror_of = if requirement.mirror_of.is_empty() {
            None
        } else {
            for pattern in &requirement.mirror_of {
                fingerprint.update(format!("mirror\0{pattern}").as_bytes());
            }
            Some(ImageGlobs::new(
                requirement.mirror_of.iter().map(String::as_str),
            )?)
        };
        let attestations: Vec<String> = requirement
            .attestations
            .iter()
            .map(|a| predicate_type_uri(&a.predicate_type))
            .collect();
        for predicate in &attestations {
            fingerprint.update(format!("attestation\0{predicate}").as_bytes());
        }
        let threshold = requirement.threshold.unwrap_or(1).max(1);
        fingerprint.update(format!("threshold\0{threshold}").as_bytes());
        Ok(Self {
            policy: policy.to_owned(),
            keys,
            keyless,
            trust,
            threshold,
            mirror_of,
            attestations,
            reads_attestations: false,
            fingerprint: hex::encode(fingerprint.finalize()),
        })
    }

    /// Identifies the exact trust material (keys, identities, root, threshold).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether verification needs sigstore's certificate/bundle path (keyless).
    pub fn trust(&self) -> Option<&TrustMaterial> {
        self.trust.as_ref()
    }

    /// Whether attestations are read: some are required, or the policy's scan or image-age
    /// rules use them.
    pub fn wants_attestations(&self) -> bool {
        self.reads_attestations || !self.attestations.is_empty()
    }

    /// `key /etc/keys/team.pub, keyless issuer=... subject=...` for messages.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("key {}", k.label))
            .collect();
        parts.extend(self.keyless.iter().map(|k| {
            format!(
                "keyless issuer={} subject={}",
                k.issuer.describe(),
                k.subject.describe()
            )
        }));
        let mut text = parts.join(" or ");
        if self.threshold > 1 {
            text = format!("{} distinct of: {text}", self.threshold);
        }
        text
    }

    fn fix(&self, image: &ImageRef, digest: &str) -> String {
        let target = format!("{}@{digest}", image.repository_path());
        match (self.keys.first(), self.keyless.first()) {
            (Some(key), _) => format!("sign the digest: cosign sign --key {} {target}", key.hint),
            (None, Some(identity)) => format!(
                "sign the digest keylessly as {} (issuer {}): cosign sign {target}",
                identity.subject.describe(),
                identity.issuer.describe()
            ),
            (None, None) => format!("sign the digest: cosign sign {target}"),
        }
    }

    /// Whether a signature's `docker-reference` is acceptable for this image.
    fn accepts_reference(&self, image: &ImageRef, docker_reference: &str) -> bool {
        let signed = normalize_repository(docker_reference);
        if signed == normalize_repository(&image.repository_path()) {
            return true;
        }
        let Some(mirror_of) = &self.mirror_of else {
            return false;
        };
        ImageRef::parse(&signed).is_ok_and(|signed| mirror_of.matches(&signed))
    }

    /// The authorities (by index: keys first, then keyless) that signed this layer.
    fn signers_of(&self, layer: &SignatureLayer) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        for (index, key) in self.keys.iter().enumerate() {
            if layer.signature.is_some() && signed_by(layer, &key.key) {
                found.push((index, format!("key {}", key.label)));
            }
        }
        if let Some(certificate) = &layer.certificate_signature {
            let subject = match &certificate.subject {
                CertificateSubject::Email(email) => email.clone(),
                CertificateSubject::Uri(uri) => uri.clone(),
            };
            let issuer = certificate.issuer.clone().unwrap_or_default();
            for (index, identity) in self.keyless.iter().enumerate() {
                if identity.issuer.matches(&issuer) && identity.subject.matches(&subject) {
                    found.push((
                        self.keys.len() + index,
                        format!("keyless {subject} ({issuer})"),
                    ));
                }
            }
        }
        found
    }
}

fn signed_by(layer: &SignatureLayer, key: &CosignVerificationKey) -> bool {
    // PublicKeyVerifier owns its key; building one per check is cheap (a Vec clone).
    let pem = key_to_pem(key);
    match pem.and_then(|pem| PublicKeyVerifier::try_from(pem.as_bytes()).ok()) {
        Some(verifier) => verifier.verify(layer).unwrap_or(false),
        None => false,
    }
}

fn key_to_pem(key: &CosignVerificationKey) -> Option<String> {
    let der = match key {
        CosignVerificationKey::RSA_PSS_SHA256(der)
        | CosignVerificationKey::RSA_PKCS1_SHA256(der)
        | CosignVerificationKey::ECDSA_P256_SHA256_ASN1(der)
        | CosignVerificationKey::ECDSA_P384_SHA384_ASN1(der)
        | CosignVerificationKey::ECDSA_P521_SHA512_ASN1(der)
        | CosignVerificationKey::ED25519(der) => der,
    };
    let body = BASE64.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).ok()?);
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    Some(pem)
}

fn load_key(policy: &str, index: usize, source: &KeySource) -> Result<TrustedKey, SignatureError> {
    let error = |key: String, message: String| SignatureError::Key {
        policy: policy.to_owned(),
        key,
        message,
    };
    let (pem, label, hint) = match (&source.path, &source.pem) {
        (Some(path), _) => {
            let pem = std::fs::read(path)
                .map_err(|err| error(path.display().to_string(), err.to_string()))?;
            let shown = path.display().to_string();
            (pem, shown.clone(), shown)
        }
        (None, Some(pem)) => {
            let pem = pem.as_bytes().to_vec();
            let fingerprint = hex::encode(Sha256::digest(&pem));
            let label = format!("inline key #{index} sha256:{}", &fingerprint[..12]);
            (pem, label, "<private key of the inline key>".to_owned())
        }
        (None, None) => return Err(error(format!("#{index}"), "no path or pem".into())),
    };
    let key = CosignVerificationKey::try_from_pem(&pem).map_err(|err| {
        error(
            label.clone(),
            format!("not a supported public key (ECDSA P-256/P-384, RSA, Ed25519): {err}"),
        )
    })?;
    Ok(TrustedKey {
        label,
        hint,
        pem,
        key,
    })
}

fn text_match(
    policy: &str,
    exact: &Option<String>,
    pattern: &Option<String>,
    what: &str,
) -> Result<TextMatch, SignatureError> {
    match (exact, pattern) {
        (Some(exact), None) => Ok(TextMatch::Exact(exact.clone())),
        (None, Some(pattern)) => Regex::new(&format!("^(?:{pattern})$"))
            .map(TextMatch::Pattern)
            .map_err(|err| SignatureError::Identity {
                policy: policy.to_owned(),
                message: format!("{what}RegExp: {err}"),
            }),
        _ => Err(SignatureError::Identity {
            policy: policy.to_owned(),
            message: format!("give exactly one of {what} or {what}RegExp"),
        }),
    }
}

/// `index.docker.io/library/nginx:1` → `docker.io/library/nginx`.
fn normalize_repository(reference: &str) -> String {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let (name, last) = match without_digest.rsplit_once('/') {
        Some((head, last)) => (Some(head), last),
        None => (None, without_digest),
    };
    let last = last.split(':').next().unwrap_or(last);
    let joined = match name {
        Some(head) => format!("{head}/{last}"),
        None => last.to_owned(),
    };
    joined
        .strip_prefix("index.docker.io/")
        .map(|rest| format!("docker.io/{rest}"))
        .unwrap_or(joined)
}

/// A simple-signing payload as found, for diagnostics (what is wrong with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPayload {
    pub docker_reference: Option<String>,
    pub manifest_digest: Option<String>,
}

/// An in-toto statement in a DSSE envelope, with its signatures.
#[derive(Debug, Clone)]
pub struct FoundEnvelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<Vec<u8>>,
    /// Keyless: the layer's Fulcio certificate, its chain and Rekor bundle annotations.
    pub certificate_pem: Option<String>,
    pub chain_pem: Option<String>,
    pub bundle_json: Option<String>,
}

/// Everything the registry holds about one digest's signatures and attestations.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// Simple-signing payloads under the `.sig` tag (for messages).
    pub payloads: Vec<FoundPayload>,
    /// OCI referrers that are Sigstore bundles.
    pub bundles: usize,
    /// Layers sigstore verified (payload digest matches; certificates chained and Rekor
    /// entries checked when the trust root was given), per trust root fingerprint (`""` for
    /// none).
    pub layers: BTreeMap<String, Vec<SignatureLayer>>,
    /// DSSE envelopes under the `.att` tag.
    pub envelopes: Vec<FoundEnvelope>,
    /// Problems worth telling (an artefact that could not be read).
    pub notes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SimpleSigningProbe {
    critical: Option<CriticalProbe>,
}
#[derive(Debug, Deserialize)]
struct CriticalProbe {
    identity: Option<IdentityProbe>,
    image: Option<ImageProbe>,
}
#[derive(Debug, Deserialize)]
struct IdentityProbe {
    #[serde(rename = "docker-reference")]
    docker_reference: Option<String>,
}
#[derive(Debug, Deserialize)]
struct ImageProbe {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeFile {
    payload_type: String,
    payload: String,
    #[serde(default)]
    signatures: Vec<EnvelopeSignature>,
}
#[derive(Debug, Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

/// Fetches what the registry holds for `digest` (I/O). Registry failures other than "not
/// found" are errors (the caller applies `onError`); an unreadable artefact is a note.
pub async fn collect(
    registry: &RegistryClient,
    image: &ImageRef,
    digest: &str,
    call: &Call,
    authorities: &[&Authorities],
) -> Result<Collected, RegistryError> {
    let mut collected = Collected::default();
    // `.sig` layers as sigstore would build them without a trust root: payload parsed, its
    // digest checked, the signature taken from the annotation. Key-only policies are judged on
    // these directly, which saves sigstore a second round of the same requests.
    let mut own_layers = Vec::new();
    let signature_manifest = registry
        .manifest_by_tag(image, &cosign_tag(digest, "sig"), call)
        .await?;
    if let Some(crate::registry::Manifest::Image { layers, .. }) = &signature_manifest {
        for layer in layers
            .iter()
            .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
            .take(MAX_ARTEFACTS)
        {
            let bytes = registry.blob(image, layer, call).await?;
            match serde_json::from_slice::<SimpleSigningProbe>(&bytes) {
                Ok(probe) => {
                    let critical = probe.critical;
                    collected.payloads.push(FoundPayload {
                        docker_reference: critical
                            .as_ref()
                            .and_then(|c| c.identity.as_ref())
                            .and_then(|i| i.docker_reference.clone()),
                        manifest_digest: critical
                            .as_ref()
                            .and_then(|c| c.image.as_ref())
                            .and_then(|i| i.docker_manifest_digest.clone()),
                    });
                }
                Err(err) => collected.notes.push(format!(
                    "signature layer {} unreadable: {err}",
                    layer.digest
                )),
            }
            let signature = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .cloned();
            let parsed = serde_json::from_slice::<SimpleSigning>(&bytes).ok();
            if let (Some(simple_signing), Some(signature)) = (parsed, signature)
                && simple_signing.satisfies_manifest_digest(digest)
            {
                own_layers.push(SignatureLayer {
                    simple_signing,
                    oci_digest: layer.digest.clone(),
                    certificate_signature: None,
                    bundle: None,
                    signature: Some(signature),
                    raw_data: bytes,
                });
            }
        }
    }
    let referrers = registry.referrers(image, digest, call).await?;
    collected.bundles = referrers
        .iter()
        .filter(|r| r.artifact_type.as_deref() == Some(BUNDLE_ARTIFACT_TYPE))
        .count();
    collected.layers.insert(String::new(), own_layers);
    if !collected.payloads.is_empty() || collected.bundles > 0 {
        // Certificates and Rekor bundles need sigstore's chain and log verification, per
        // trust root.
        let mut roots: BTreeMap<String, &TrustMaterial> = BTreeMap::new();
        for trust in authorities.iter().filter_map(|a| a.trust()) {
            roots.insert(trust.fingerprint.clone(), trust);
        }
        for (fingerprint, trust) in roots {
            let layers = sigstore_layers(registry, image, digest, call, Some(trust)).await?;
            collected.layers.insert(fingerprint, layers);
        }
    }
    if authorities.iter().any(|a| a.wants_attestations()) {
        let attestation_manifest = registry
            .manifest_by_tag(image, &cosign_tag(digest, "att"), call)
            .await?;
        if let Some(crate::registry::Manifest::Image { layers, .. }) = &attestation_manifest {
            for layer in layers
                .iter()
                .filter(|l| l.media_type == DSSE_MEDIA_TYPE)
                .take(MAX_ARTEFACTS)
            {
                let bytes = registry.blob(image, layer, call).await?;
                match parse_envelope(&bytes) {
                    Ok(mut envelope) => {
                        let annotation = |key: &str| {
                            layer.annotations.as_ref().and_then(|a| a.get(key)).cloned()
                        };
                        envelope.certificate_pem =
                            annotation(crate::keyless::CERTIFICATE_ANNOTATION);
                        envelope.chain_pem = annotation(crate::keyless::CHAIN_ANNOTATION);
                        envelope.bundle_json = annotation(crate::keyless::BUNDLE_ANNOTATION);
                        collected.envelopes.push(envelope);
                    }
                    Err(err) => collected.notes.push(format!(
                        "attestation layer {} unreadable: {err}",
                        layer.digest
                    )),
                }
            }
        }
    }
    Ok(collected)
}

fn parse_envelope(bytes: &[u8]) -> Result<FoundEnvelope, String> {
    let file: EnvelopeFile = serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
    let payload = BASE64
        .decode(&file.payload)
        .map_err(|err| format!("payload is not base64: {err}"))?;
    let signatures = file
        .signatures
        .iter()
        .filter_map(|s| BASE64.decode(&s.sig).ok())
        .collect();
    Ok(FoundEnvelope {
        payload_type: file.payload_type,
        payload,
        signatures,
        certificate_pem: None,
        chain_pem: None,
        bundle_json: None,
    })
}

/// Signature layers through sigstore's client (`.sig` tag and OCI referrers), verified
/// against the trust root when one is given.
async fn sigstore_layers(
    registry: &RegistryClient,
    image: &ImageRef,
    digest: &str,
    call: &Call,
    trust: Option<&TrustMaterial>,
) -> Result<Vec<SignatureLayer>, RegistryError> {
    let (insecure, ca_pem) = registry.endpoint_tls(image.registry());
    let mut config = sigstore::registry::ClientConfig {
        protocol: if insecure {
            sigstore::registry::ClientProtocol::Http
        } else {
            sigstore::registry::ClientProtocol::Https
        },
        ..sigstore::registry::ClientConfig::default()
    };
    if let Some(pem) = ca_pem {
        config
            .extra_root_certificates
            .push(sigstore::registry::Certificate {
                encoding: sigstore::registry::CertificateEncoding::Pem,
                data: pem,
            });
    }
    let root = trust.map(|material| ManualTrustRoot {
        fulcio_certs: material
            .fulcio_certs
            .iter()
            .map(|der| der.clone().into())
            .collect(),
        rekor_keys: material.rekor_keys.clone(),
        ctfe_keys: BTreeMap::new(),
    });
    let mut builder = ClientBuilder::default().with_oci_client_config(config);
    if let Some(root) = &root {
        builder = builder
            .with_trust_repository(root)
            .map_err(|err| RegistryError::Config(format!("trusted root: {err}")))?;
    }
    let mut client = builder
        .build()
        .map_err(|err| RegistryError::Config(format!("sigstore client: {err}")))?;
    let auth = match &call.credential {
        Credential::Anonymous => sigstore::registry::Auth::Anonymous,
        Credential::Basic { username, password } => {
            sigstore::registry::Auth::Basic(username.clone(), password.clone())
        }
    };
    let reference = OciReference::with_digest(
        image.registry().to_owned(),
        image.repository().to_owned(),
        digest.to_owned(),
    );
    let work = client.trusted_signature_layers(&auth, &reference);
    match tokio::time::timeout_at(call.deadline, work).await {
        Ok(Ok(layers)) => Ok(layers),
        // sigstore stringifies registry errors; the probe before this call already
        // classified the registry's health, so what fails here is the artefact itself.
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "sigstore found no verifiable signature layer");
            Ok(Vec::new())
        }
        Err(_elapsed) => Err(RegistryError::Timeout),
    }
}

/// Decides one policy's requirement on what was collected (pure).
pub fn judge(
    authorities: &Authorities,
    image: &ImageRef,
    digest: &str,
    collected: &Collected,
) -> PolicyVerification {
    let root = authorities
        .trust()
        .map(|t| t.fingerprint.clone())
        .unwrap_or_default();
    let layers = collected
        .layers
        .get(&root)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut signed_by: BTreeMap<usize, String> = BTreeMap::new();
    let mut wrong_reference: BTreeSet<String> = BTreeSet::new();
    let mut unknown_signers = 0usize;
    for layer in layers {
        // Attestations that arrive as bundles are not signatures of the image.
        let type_name = &layer.simple_signing.critical.type_name;
        if layer.bundle.is_some()
            && type_name != COSIGN_SIGN_PREDICATE
            && type_name != "cosign container image signature"
        {
            continue;
        }
        let signers = authorities.signers_of(layer);
        if signers.is_empty() {
            unknown_signers += 1;
            continue;
        }
        let reference = &layer.simple_signing.critical.identity.docker_reference;
        if !authorities.accepts_reference(image, reference) {
            wrong_reference.insert(reference.clone());
            continue;
        }
        for (index, label) in signers {
            signed_by.entry(index).or_insert(label);
        }
    }
    let (attestations, missing) = judge_attestations(authorities, digest, collected);
    let signatures = if signed_by.len() >= authorities.threshold {
        SignatureEvidence::Verified {
            signers: signed_by.into_values().collect(),
        }
    } else {
        let found = describe_found(
            authorities,
            image,
            digest,
            collected,
            &signed_by,
            &wrong_reference,
            unknown_signers,
        );
        SignatureEvidence::Unverified {
            reason: format!(
                "expected a signature by {}; found {found}; fix: {}",
                authorities.describe(),
                authorities.fix(image, digest)
            ),
        }
    };
    PolicyVerification {
        policy: authorities.policy.clone(),
        signatures,
        attestations,
        missing_attestations: missing,
    }
}

fn describe_found(
    authorities: &Authorities,
    image: &ImageRef,
    digest: &str,
    collected: &Collected,
    signed_by: &BTreeMap<usize, String>,
    wrong_reference: &BTreeSet<String>,
    unknown_signers: usize,
) -> String {
    if collected.payloads.is_empty() && collected.bundles == 0 {
        return format!(
            "no signature for {}@{digest} (tag {} and OCI referrers)",
            image.repository_path(),
            cosign_tag(digest, "sig")
        );
    }
    let mut found = Vec::new();
    if !signed_by.is_empty() {
        found.push(format!(
            "only {} of {} required signers ({})",
            signed_by.len(),
            authorities.threshold,
            signed_by.values().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    for reference in wrong_reference {
        found.push(format!(
            "a signature for another repository ({reference}); copied signatures are not \
             accepted (see signatures.mirrorOf for mirrors)"
        ));
    }
    let other_digests: BTreeSet<&str> = collected
        .payloads
        .iter()
        .filter_map(|p| p.manifest_digest.as_deref())
        .filter(|d| *d != digest)
        .collect();
    for other in other_digests {
        found.push(format!(
            "a signature whose payload names another digest ({other})"
        ));
    }
    if unknown_signers > 0 {
        found.push(format!(
            "{unknown_signers} signature(s) by other keys or identities"
        ));
    }
    if found.is_empty() {
        found.push(format!(
            "{} signature payload(s) and {} bundle(s), none verifiable",
            collected.payloads.len(),
            collected.bundles
        ));
    }
    found.join("; ")
}

/// DSSE pre-authentication encoding (what a DSSE signature signs).
pub fn dsse_pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut pae = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(payload);
    pae
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(default)]
    subject: Vec<StatementSubject>,
    #[serde(default)]
    predicate_type: String,
    #[serde(default)]
    predicate: serde_json::Value,
}
#[derive(Debug, Deserialize)]
struct StatementSubject {
    #[serde(default)]
    digest: BTreeMap<String, String>,
}

fn judge_attestations(
    authorities: &Authorities,
    digest: &str,
    collected: &Collected,
) -> (Vec<std::sync::Arc<VerifiedAttestation>>, Vec<String>) {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let mut verified = Vec::new();
    for envelope in &collected.envelopes {
        if envelope.payload_type != "application/vnd.in-toto+json" {
            continue;
        }
        let pae = dsse_pae(&envelope.payload_type, &envelope.payload);
        let signer = authorities
            .keys
            .iter()
            .find(|key| {
                envelope
                    .signatures
                    .iter()
                    .any(|sig| key.key.verify_signature(Signature::Raw(sig), &pae).is_ok())
            })
            .map(|key| format!("key {}", key.label))
            .or_else(|| keyless_signer(authorities, envelope, &pae));
        let Some(signer) = signer else {
            continue;
        };
        let Ok(statement) = serde_json::from_slice::<Statement>(&envelope.payload) else {
            continue;
        };
        // The statement must be about this digest, or it attests something else.
        if !statement
            .subject
            .iter()
            .any(|s| s.digest.get("sha256").is_some_and(|d| d == hex))
        {
            continue;
        }
        verified.push(std::sync::Arc::new(VerifiedAttestation::new(
            statement.predicate_type,
            statement.predicate,
            signer,
        )));
    }
    let missing = authorities
        .attestations
        .iter()
        .filter(|wanted| !verified.iter().any(|v| &v.predicate_type == *wanted))
        .cloned()
        .collect();
    (verified, missing)
}

/// The keyless identity of the policy that signed `envelope`, when its certificate, chain
/// and Rekor entry verify against the policy's trusted root (see `crate::keyless`).
fn keyless_signer(
    authorities: &Authorities,
    envelope: &FoundEnvelope,
    pae: &[u8],
) -> Option<String> {
    let trust = authorities.trust()?;
    if authorities.keyless.is_empty() {
        return None;
    }
    let material = crate::keyless::KeylessMaterial {
        certificate_pem: envelope.certificate_pem.as_deref()?,
        chain_pem: envelope.chain_pem.as_deref(),
        bundle_json: envelope.bundle_json.as_deref()?,
    };
    for signature in &envelope.signatures {
        match crate::keyless::verify_envelope(trust, material, pae, &envelope.payload, signature) {
            Ok(signer) => {
                let accepted = authorities.keyless.iter().any(|identity| {
                    identity.issuer.matches(&signer.issuer)
                        && identity.subject.matches(&signer.subject)
                });
                if accepted {
                    return Some(format!("keyless {} ({})", signer.subject, signer.issuer));
                }
                tracing::debug!(
                    subject = %signer.subject,
                    issuer = %signer.issuer,
                    "keyless attestation by an identity the policy does not name"
                );
            }
            Err(why) => tracing::debug!(%why, "keyless attestation does not verify"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_references_normalise_like_cosign_writes_them() {
        assert_eq!(
            normalize_repository("index.docker.io/library/nginx"),
            "docker.io/library/nginx"
        );
        assert_eq!(
            normalize_repository("127.0.0.1:5000/team/app:v1"),
            "127.0.0.1:5000/team/app"
        );
        assert_eq!(normalize_repository("ghcr.io/a/b@sha256:00"), "ghcr.io/a/b");
    }

    #[test]
    fn predicate_short_names_expand() {
        assert_eq!(
            predicate_type_uri("slsaprovenance1"),
            "https://slsa.dev/provenance/v1"
        );
        assert_eq!(
            predicate_type_uri("https://example.com/p"),
            "https://example.com/p"
        );
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE specification: PAE("http://example.com/HelloWorld", "hello world").
        assert_eq!(
            dsse_pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    /// A `.sig` layer for `digest` in `repository`, signed by `signer`.
    fn layer(
        signer: &sigstore::crypto::signing_key::SigStoreSigner,
        repository: &str,
        digest: &str,
    ) -> SignatureLayer {
        let payload = format!(
            "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"{repository}\"}},\"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
        )
        .into_bytes();
        let signature = BASE64.encode(signer.sign(&payload).unwrap());
        SignatureLayer {
            simple_signing: serde_json::from_slice(&payload).unwrap(),
            oci_digest: String::new(),
            certificate_signature: None,
            bundle: None,
            signature: Some(signature),
            raw_data: payload,
        }
    }

    fn public_pem(signer: &sigstore::crypto::signing_key::SigStoreSigner) -> String {
        signer
            .to_sigstore_keypair()
            .unwrap()
            .public_key_to_pem()
            .unwrap()
    }

    fn authorities(pems: &[String], threshold: usize) -> Authorities {
        let requirement = SignatureRequirement {
            keys: pems
                .iter()
                .map(|pem| KeySource {
                    path: None,
                    pem: Some(pem.clone()),
                })
                .collect(),
            keyless: Vec::new(),
            trusted_root: None,
            threshold: Some(threshold),
            mirror_of: Vec::new(),
            attestations: Vec::new(),
        };
        Authorities::from_requirement("team", &requirement).unwrap()
    }

    #[test]
    fn a_threshold_counts_distinct_keys_not_signatures() {
        use sigstore::crypto::SigningScheme;
        let first = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .unwrap();
        let second = SigningScheme::ED25519.create_signer().unwrap();
        let image = ImageRef::parse("registry.example/team/app:v1").unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        let both = authorities(&[public_pem(&first), public_pem(&second)], 2);
        let judged = |layers: Vec<SignatureLayer>| {
            let collected = Collected {
                payloads: vec![FoundPayload {
                    docker_reference: None,
                    manifest_digest: Some(digest.clone()),
                }],
                layers: BTreeMap::from([(String::new(), layers)]),
                ..Collected::default()
            };
            judge(&both, &image, &digest, &collected).signatures
        };
        let twice_by_first = judged(vec![
            layer(&first, "registry.example/team/app", &digest),
            layer(&first, "registry.example/team/app", &digest),
        ]);
        assert!(
            matches!(&twice_by_first, SignatureEvidence::Unverified { reason } if reason.contains("only 1 of 2")),
            "{twice_by_first:?}"
        );
        let by_both = judged(vec![
            layer(&first, "registry.example/team/app", &digest),
            layer(&second, "registry.example/team/app", &digest),
        ]);
        assert!(
            matches!(&by_both, SignatureEvidence::Verified { signers } if signers.len() == 2),
            "{by_both:?}"
        );
        // The second key signed for another repository: that signature does not count.
        let copied = judged(vec![
            layer(&first, "registry.example/team/app", &digest),
            layer(&second, "registry.example/other/app", &digest),
        ]);
        assert!(
            matches!(&copied, SignatureEvidence::Unverified { reason } if reason.contains("another repository (registry.example/other/app)")),
            "{copied:?}"
        );
    }

    #[test]
    fn a_trusted_root_without_a_log_key_is_refused() {
        let root = br#"{"certificateAuthorities":[{"certChain":{"certificates":[{"rawBytes":"AAAA"}]}}],"tlogs":[]}"#;
        assert!(TrustMaterial::parse(root).is_err());
        assert!(TrustMaterial::parse(b"[]").is_err());
    }
}
