//! Signature and attestation verification of a digest against one image policy's
//! authorities, for every format today's tools write: Sigstore bundles (Cosign 3, GitHub
//! artifact attestations, sigstore-js; key or Fulcio certificate; Rekor v1 or v2; RFC 3161
//! timestamps), classic Cosign `.sig` / `.att` layers, and Notary Project signatures.
//!
//! Fetching is separate from judging: [`discover::collect`] gathers what the registry holds
//! for a digest (I/O, in the three places: the `.sig`/`.att` tags, the OCI referrers API and
//! the referrers tag schema), [`judge`] decides whether the authorities signed it (pure,
//! given what was collected) and says what was wanted, what was found and how to fix it.
//! Every Sigstore artefact — classic layers included, turned into bundles first — is
//! verified by the maintained `sigstore-verify` crate.

pub mod artefact;
pub mod discover;
pub mod rekor_v2;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use regex::Regex;
use sha2::{Digest, Sha256};
use sigstore_crypto::SigningScheme;
use sigstore_trust_root::{SIGSTORE_PRODUCTION_TRUSTED_ROOT, TrustedRoot};
use sigstore_types::bundle::VerificationMaterialContent;
use sigstore_types::{Bundle, DerPublicKey, Sha256Hash, SignatureContent};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy, Verifier};

use crate::registry::cosign_tag;
use artefact::{Artefact, COSIGN_SIGN_PREDICATE, Content, SIMPLE_SIGNING_TYPE, SimpleSigning};
pub use discover::Collected;
use portcullis_core::config::{ImagePolicy, KeySource, KeylessIdentity, SignatureRequirement};
use portcullis_core::evidence::{PolicyVerification, SignatureEvidence, VerifiedAttestation};
use portcullis_core::reference::{GlobError, ImageGlobs, ImageRef};

/// A signature requirement that cannot be turned into authorities.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("imagePolicy {policy:?}: key {key}: {message}")]
    Key {
        policy: String,
        key: String,
        message: String,
    },
    #[error("imagePolicy {policy:?}: trusted root {root}: {source}")]
    TrustRoot {
        policy: String,
        root: String,
        #[source]
        source: TrustRootError,
    },
    #[error("imagePolicy {policy:?}: {message}")]
    Identity { policy: String, message: String },
    #[error("imagePolicy {policy:?}: signatures.notation: {source}")]
    Notation {
        policy: String,
        #[source]
        source: crate::notation::NotationError,
    },
    #[error(transparent)]
    Glob(#[from] GlobError),
}

/// Why a trusted root could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustRootError {
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a Sigstore TrustedRoot: {0}")]
    Parse(#[source] sigstore_trust_root::Error),
    #[error("unusable trust material: {0}")]
    Material(#[source] sigstore_verify::Error),
}

/// A public key a policy trusts.
#[derive(Debug, Clone)]
struct TrustedKey {
    /// What users wrote: the path, or `inline key #i sha256:<12 hex>`.
    label: String,
    /// What to put in `cosign sign --key ...`.
    hint: String,
    der: DerPublicKey,
    pem: Vec<u8>,
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

/// A keyless identity: issuer, subject and the CI claims it pins.
#[derive(Debug, Clone)]
struct KeylessMatcher {
    issuer: TextMatch,
    subject: TextMatch,
    claims: Vec<(&'static str, TextMatch)>,
}

impl KeylessMatcher {
    fn describe(&self) -> String {
        let mut text = format!(
            "issuer={} subject={}",
            self.issuer.describe(),
            self.subject.describe()
        );
        for (name, value) in &self.claims {
            text.push_str(&format!(" {name}={}", value.describe()));
        }
        text
    }

    /// Why a verified certificate's identity is not this one (`None`: it is).
    fn mismatch(&self, identity: &CertificateIdentity) -> Option<String> {
        if !self.issuer.matches(&identity.issuer) || !self.subject.matches(&identity.subject) {
            return Some("subject/issuer".into());
        }
        for (name, wanted) in &self.claims {
            match identity.claims.get(*name) {
                Some(value) if wanted.matches(value) => {}
                Some(value) => return Some(format!("{name} is {value}")),
                None => return Some(format!("the certificate has no {name}")),
            }
        }
        None
    }
}

/// The identity a Fulcio certificate names, with its CI claims by config name.
#[derive(Debug, Clone, Default)]
struct CertificateIdentity {
    subject: String,
    issuer: String,
    claims: BTreeMap<&'static str, String>,
}

impl CertificateIdentity {
    fn from_info(info: &sigstore_crypto::CertificateInfo) -> Self {
        let ci = &info.ci_claims;
        let claims = [
            ("sourceRepositoryUri", &ci.source_repository_uri),
            ("sourceRepositoryRef", &ci.source_repository_ref),
            ("buildSignerUri", &ci.build_signer_uri),
            ("buildConfigUri", &ci.build_config_uri),
            ("runnerEnvironment", &ci.runner_environment),
            ("buildTrigger", &ci.build_trigger),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
        .collect();
        Self {
            subject: info
                .identity
                .as_ref()
                .map(|san| san.as_str().to_owned())
                .unwrap_or_default(),
            issuer: info.issuer.clone().unwrap_or_default(),
            claims,
        }
    }

    fn describe(&self) -> String {
        format!("subject {} (issuer {})", self.subject, self.issuer)
    }
}

/// The Sigstore trusted root a policy verifies against, prepared once.
pub struct RootInUse {
    /// `the Sigstore public-good root (embedded)` or the file's path.
    pub label: String,
    /// SHA-256 of the root document (part of the decision identity).
    pub fingerprint: String,
    verifier: Verifier,
    /// The root's transparency log keys, for the Rekor v2 entries sigstore-verify cannot read.
    log_keys: sigstore_crypto::Keyring,
    /// Whether certificates must carry an SCT from a CT log the root lists (roots without CT
    /// logs, such as most private test roots, cannot check one).
    verify_sct: bool,
}

impl std::fmt::Debug for RootInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootInUse")
            .field("label", &self.label)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl RootInUse {
    /// Prepares a TrustedRoot document.
    pub fn from_json(label: String, json: &str) -> Result<Self, TrustRootError> {
        let root = TrustedRoot::from_json(json).map_err(TrustRootError::Parse)?;
        let verifier = Verifier::new(&root).map_err(TrustRootError::Material)?;
        let log_keys = root
            .rekor_keys()
            .map_err(|err| TrustRootError::Material(sigstore_verify::Error::TrustRoot(err)))?;
        Ok(Self {
            log_keys,
            label,
            fingerprint: hex::encode(Sha256::digest(json.as_bytes())),
            verify_sct: !root.ctlogs.is_empty(),
            verifier,
        })
    }

    /// The Sigstore public-good root that ships inside portcullis.
    pub fn public_good() -> Result<Self, TrustRootError> {
        Self::from_json(
            "the Sigstore public-good root (embedded)".into(),
            SIGSTORE_PRODUCTION_TRUSTED_ROOT,
        )
    }
}

/// The public-good root this process uses for policies without `trustedRoot`: the embedded
/// one, prepared once, until a TUF refresh (`sigstore.tuf`) installs a newer one. Process-wide
/// like the embedded constant it starts from; `generation` tells caches keyed by policy
/// text that it changed.
static PUBLIC_GOOD: std::sync::RwLock<Option<(u64, Arc<RootInUse>)>> = std::sync::RwLock::new(None);

/// The public-good root in use (see [`PUBLIC_GOOD`]).
pub fn public_good_root() -> Result<Arc<RootInUse>, TrustRootError> {
    if let Some((_, root)) = PUBLIC_GOOD.read().ok().and_then(|slot| slot.clone()) {
        return Ok(root);
    }
    let embedded = Arc::new(RootInUse::public_good()?);
    // A poisoned lock only means another thread panicked mid-write of an Option: the value
    // is still whole, so keep using it.
    let mut slot = PUBLIC_GOOD.write().unwrap_or_else(|p| p.into_inner());
    Ok(slot.get_or_insert((0, embedded)).1.clone())
}

/// Installs a public-good root (from TUF). Returns whether it differs from the one in use.
pub fn install_public_good_root(root: RootInUse) -> bool {
    let mut slot = PUBLIC_GOOD.write().unwrap_or_else(|p| p.into_inner());
    match slot.as_ref() {
        Some((_, current)) if current.fingerprint == root.fingerprint => false,
        current => {
            let generation = current.map_or(0, |(generation, _)| generation + 1);
            *slot = Some((generation, Arc::new(root)));
            true
        }
    }
}

/// Counts public-good root changes (0: the first root installed or the embedded one).
pub fn public_good_generation() -> u64 {
    PUBLIC_GOOD
        .read()
        .ok()
        .and_then(|slot| slot.as_ref().map(|(generation, _)| *generation))
        .unwrap_or(0)
}

/// One image policy's signature requirement, compiled: keys parsed, identities compiled,
/// trust root read and prepared. Its `fingerprint` changes whenever any of that material
/// changes, so cached verification results are never reused across a key rotation.
#[derive(Debug, Clone)]
pub struct Authorities {
    pub policy: String,
    keys: Vec<TrustedKey>,
    keyless: Vec<KeylessMatcher>,
    /// Notary Project trust (one authority, after keys and keyless identities).
    notation: Option<Arc<crate::notation::NotationTrust>>,
    root: Arc<RootInUse>,
    threshold: usize,
    mirror_of: Option<ImageGlobs>,
    attestations: Vec<String>,
    signature_predicates: Vec<String>,
    require_tlog: bool,
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

    pub fn from_requirement(
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
            let matcher = keyless_matcher(policy, identity)?;
            fingerprint.update(format!("keyless\0{}", matcher.describe()).as_bytes());
            keyless.push(matcher);
        }
        let notation = match &requirement.notation {
            Some(notation) => {
                let trust = notation.compile().map_err(|err| SignatureError::Notation {
                    policy: policy.to_owned(),
                    source: crate::notation::NotationError::Trust(err),
                })?;
                fingerprint.update(format!("notation\0{}", trust.fingerprint()).as_bytes());
                Some(Arc::new(trust))
            }
            None => None,
        };
        let root = load_root(policy, requirement.trusted_root.as_ref())?;
        fingerprint.update(format!("root\0{}", root.fingerprint).as_bytes());
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
        let signature_predicates: Vec<String> = if requirement.signature_predicate_types.is_empty()
        {
            vec![COSIGN_SIGN_PREDICATE.to_owned()]
        } else {
            requirement
                .signature_predicate_types
                .iter()
                .map(|p| predicate_type_uri(p))
                .collect()
        };
        for predicate in &signature_predicates {
            fingerprint.update(format!("signs\0{predicate}").as_bytes());
        }
        let threshold = requirement.threshold.unwrap_or(1).max(1);
        fingerprint.update(format!("threshold\0{threshold}").as_bytes());
        fingerprint.update(format!("tlog\0{}", requirement.require_transparency_log).as_bytes());
        Ok(Self {
            policy: policy.to_owned(),
            keys,
            keyless,
            notation,
            root,
            threshold,
            mirror_of,
            attestations,
            signature_predicates,
            require_tlog: requirement.require_transparency_log,
            reads_attestations: false,
            fingerprint: hex::encode(fingerprint.finalize()),
        })
    }

    /// Identifies the exact trust material (keys, identities, root, threshold).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The trusted root in use (its label and fingerprint go into `verify` output).
    pub fn root(&self) -> &RootInUse {
        &self.root
    }

    /// What discovery must read for this policy.
    pub fn wanted(&self) -> discover::Wanted {
        discover::Wanted {
            attestations: self.wants_attestations(),
            signature_predicates: self.signature_predicates.clone(),
        }
    }

    /// Whether attestations are read: some are required, or the policy's scan or image-age
    /// rules use them.
    pub fn wants_attestations(&self) -> bool {
        self.reads_attestations || !self.attestations.is_empty()
    }

    /// `key /etc/keys/team.pub or keyless subject ... (issuer ...)` for messages.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("key {}", k.label))
            .collect();
        parts.extend(
            self.keyless
                .iter()
                .map(|k| format!("keyless {}", k.describe())),
        );
        if self.notation.is_some() {
            parts.push("a Notation signature chaining to the policy's trust store".into());
        }
        let mut text = parts.join(" or ");
        if self.threshold > 1 {
            text = format!("{} distinct of: {text}", self.threshold);
        }
        text
    }

    fn authority_count(&self) -> usize {
        self.keys.len() + self.keyless.len() + usize::from(self.notation.is_some())
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
}

fn load_root(policy: &str, path: Option<&PathBuf>) -> Result<Arc<RootInUse>, SignatureError> {
    let error = |root: String, source| SignatureError::TrustRoot {
        policy: policy.to_owned(),
        root,
        source,
    };
    match path {
        Some(path) => {
            let label = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|err| error(label.clone(), TrustRootError::Read(err)))?;
            RootInUse::from_json(label.clone(), &text)
                .map(Arc::new)
                .map_err(|err| error(label, err))
        }
        None => public_good_root().map_err(|err| error("public-good".into(), err)),
    }
}

fn keyless_matcher(
    policy: &str,
    identity: &KeylessIdentity,
) -> Result<KeylessMatcher, SignatureError> {
    let issuer = text_match(policy, &identity.issuer, &identity.issuer_regexp, "issuer")?;
    let subject = text_match(
        policy,
        &identity.subject,
        &identity.subject_regexp,
        "subject",
    )?;
    let mut claims = Vec::new();
    for (name, exact, pattern) in identity.claims() {
        let pattern = pattern.and_then(Option::as_ref);
        if exact.is_none() && pattern.is_none() {
            continue;
        }
        claims.push((name, text_match(policy, exact, &pattern.cloned(), name)?));
    }
    Ok(KeylessMatcher {
        issuer,
        subject,
        claims,
    })
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
    let unsupported = |message: String| {
        error(
            label.clone(),
            format!("not a supported public key (ECDSA P-256/P-384, RSA, Ed25519): {message}"),
        )
    };
    let text = std::str::from_utf8(&pem).map_err(|_| unsupported("not UTF-8 PEM".into()))?;
    let der = DerPublicKey::from_pem(text).map_err(|err| unsupported(err.to_string()))?;
    sigstore_crypto::KeyAlgorithm::from_spki(&der).map_err(|err| unsupported(err.to_string()))?;
    Ok(TrustedKey {
        label,
        hint,
        der,
        pem,
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

pub use portcullis_core::evidence::FoundArtefact;

/// The outcome of one artefact against the authorities.
enum Judged {
    /// A signature of the image by these authorities (index, label).
    Signature(Vec<(usize, String)>),
    /// An attestation about the image by these authorities.
    Attestation {
        predicate_type: String,
        predicate: serde_json::Value,
        signers: Vec<(usize, String)>,
    },
    Rejected {
        kind: String,
        signer: String,
        reason: String,
    },
}

/// Decides one policy's requirement on what was collected (pure).
pub fn judge(
    authorities: &Authorities,
    image: &ImageRef,
    digest: &str,
    collected: &Collected,
) -> PolicyVerification {
    let mut signed_by: BTreeMap<usize, String> = BTreeMap::new();
    let mut found = Vec::new();
    let mut attestations: Vec<Arc<VerifiedAttestation>> = Vec::new();
    for artefact in &collected.artefacts {
        let (kind, signer, verified, reason) = match judge_artefact(
            authorities,
            image,
            digest,
            artefact,
        ) {
            Judged::Signature(signers) => {
                let labels: Vec<String> = signers.iter().map(|(_, l)| l.clone()).collect();
                for (index, label) in signers {
                    signed_by.entry(index).or_insert(label);
                }
                (
                    "signature".to_owned(),
                    labels.join(", "),
                    true,
                    String::new(),
                )
            }
            Judged::Attestation {
                predicate_type,
                predicate,
                signers,
            } => {
                let labels: Vec<String> = signers.iter().map(|(_, l)| l.clone()).collect();
                let label = labels.join(", ");
                // The same statement found in two places (a `.att` layer and a referrer)
                // counts once; distinct statements of one type (scans over time) all count.
                if !attestations.iter().any(|a| {
                    a.predicate_type == predicate_type
                        && a.signer == label
                        && a.predicate == predicate
                }) {
                    let attestation = VerifiedAttestation::new(
                        predicate_type.clone(),
                        predicate,
                        label.clone(),
                        digest,
                    );
                    if let Some(error) = &attestation.scan_error {
                        tracing::warn!(%error, digest, "ignoring a vulnerability attestation's scan");
                    }
                    attestations.push(Arc::new(attestation));
                }
                (predicate_type, label, true, String::new())
            }
            Judged::Rejected {
                kind,
                signer,
                reason,
            } => (kind, signer, false, reason),
        };
        found.push(FoundArtefact {
            place: artefact.place,
            format: artefact.format,
            kind,
            signer,
            verified,
            reason,
            source: artefact.source_digest.clone(),
        });
    }
    let missing = authorities
        .attestations
        .iter()
        .filter(|wanted| !attestations.iter().any(|v| &v.predicate_type == *wanted))
        .cloned()
        .collect();
    let signatures = if signed_by.len() >= authorities.threshold {
        SignatureEvidence::Verified {
            signers: signed_by.into_values().collect(),
        }
    } else {
        SignatureEvidence::Unverified {
            reason: format!(
                "expected a signature by {}; found {}; fix: {}",
                authorities.describe(),
                describe_found(authorities, image, digest, collected, &found, &signed_by),
                authorities.fix(image, digest)
            ),
        }
    };
    PolicyVerification {
        policy: authorities.policy.clone(),
        signatures,
        attestations,
        missing_attestations: missing,
        found,
    }
}

fn describe_found(
    authorities: &Authorities,
    image: &ImageRef,
    digest: &str,
    collected: &Collected,
    found: &[FoundArtefact],
    signed_by: &BTreeMap<usize, String>,
) -> String {
    let signatures: Vec<&FoundArtefact> = found.iter().filter(|f| f.kind == "signature").collect();
    if signatures.is_empty() {
        let mut text = format!(
            "no signature for {}@{digest} (looked in tag {}, OCI referrers and the referrers tag schema)",
            image.repository_path(),
            cosign_tag(digest, "sig"),
        );
        let attestations = found.iter().filter(|f| f.verified).count();
        if attestations > 0 {
            text.push_str(&format!(
                "; {attestations} attestation(s) found, which are not signatures (a signature bundle has predicate type {})",
                authorities.signature_predicates.join(" or ")
            ));
        }
        for artefact in found.iter().filter(|f| !f.verified) {
            text.push_str(&format!(
                "; a {} in the {} ({}) that does not count: {}",
                artefact.format.describe(),
                artefact.place.describe(),
                artefact.kind,
                artefact.reason
            ));
        }
        for note in &collected.notes {
            text.push_str(&format!("; {note}"));
        }
        return text;
    }
    let mut parts = Vec::new();
    if !signed_by.is_empty() {
        parts.push(format!(
            "only {} of {} required signers ({})",
            signed_by.len(),
            authorities.threshold,
            signed_by.values().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut seen = BTreeSet::new();
    for artefact in signatures.iter().filter(|f| !f.verified) {
        let line = format!(
            "a {} in the {} signed by {}: {}",
            artefact.format.describe(),
            artefact.place.describe(),
            artefact.signer,
            artefact.reason
        );
        if seen.insert(line.clone()) {
            parts.push(line);
        }
    }
    parts.join("; ")
}

/// The verdict on one artefact (pure; the crypto is sigstore-verify's).
fn judge_artefact(
    authorities: &Authorities,
    image: &ImageRef,
    digest: &str,
    artefact: &Artefact,
) -> Judged {
    match &artefact.content {
        Content::Unreadable(why) => Judged::Rejected {
            kind: "unknown".into(),
            signer: "unknown".into(),
            reason: why.clone(),
        },
        Content::Notation {
            media_type,
            envelope,
        } => judge_notation(authorities, digest, media_type, envelope),
        Content::Bundle {
            bundle,
            signed_payload,
            rekor_v2_dsse,
        } => judge_bundle(
            authorities,
            image,
            digest,
            bundle,
            signed_payload.as_deref(),
            rekor_v2_dsse,
        ),
    }
}

/// A Notary Project envelope against the policy's Notation trust (crypto in `notation`).
fn judge_notation(
    authorities: &Authorities,
    digest: &str,
    media_type: &str,
    envelope: &[u8],
) -> Judged {
    let Some(trust) = &authorities.notation else {
        return Judged::Rejected {
            kind: "signature".into(),
            signer: "a Notation signer".into(),
            reason: "this policy names no Notation trust store (signatures.notation)".into(),
        };
    };
    match crate::notation::verify(
        trust,
        media_type,
        envelope,
        digest,
        std::time::SystemTime::now(),
    ) {
        Ok(signer) => Judged::Signature(vec![(
            authorities.keys.len() + authorities.keyless.len(),
            format!("notation {}", signer.subject),
        )]),
        Err(err) => Judged::Rejected {
            kind: "signature".into(),
            signer: "a Notation signer".into(),
            reason: err.to_string(),
        },
    }
}

/// What a verified bundle says it is about.
enum Claim {
    Signature,
    Attestation {
        predicate_type: String,
        predicate: serde_json::Value,
    },
}

fn judge_bundle(
    authorities: &Authorities,
    image: &ImageRef,
    digest: &str,
    bundle: &Bundle,
    signed_payload: Option<&[u8]>,
    rekor_v2_dsse: &[rekor_v2::DsseV2Entry],
) -> Judged {
    // First what the bundle claims (cheap, no crypto), so that a bundle about another digest
    // or repository is named as such.
    let claim = match claim_of(authorities, image, digest, bundle, signed_payload) {
        Ok(claim) => claim,
        Err((kind, reason)) => {
            return Judged::Rejected {
                kind,
                signer: signer_hint(bundle),
                reason,
            };
        }
    };
    let kind = match &claim {
        Claim::Signature => "signature".to_owned(),
        Claim::Attestation { predicate_type, .. } => predicate_type.clone(),
    };
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Judged::Rejected {
            kind,
            signer: signer_hint(bundle),
            reason: format!("{digest} is not a sha256 digest"),
        };
    };
    let signers = match &bundle.verification_material.content {
        VerificationMaterialContent::PublicKey(_) => {
            verify_with_keys(authorities, bundle, signed_payload, hex, rekor_v2_dsse)
        }
        _ => verify_with_identities(authorities, bundle, signed_payload, hex, rekor_v2_dsse),
    };
    match signers {
        Ok(signers) => match claim {
            Claim::Signature => Judged::Signature(signers),
            Claim::Attestation {
                predicate_type,
                predicate,
            } => Judged::Attestation {
                predicate_type,
                predicate,
                signers,
            },
        },
        Err((signer, reason)) => Judged::Rejected {
            kind,
            signer,
            reason,
        },
    }
}

/// Who a bundle says signed it, before any verification (for messages only).
fn signer_hint(bundle: &Bundle) -> String {
    match bundle.signing_certificate() {
        Some(cert) => match sigstore_crypto::parse_certificate_info(cert) {
            Ok(info) => CertificateIdentity::from_info(&info).describe(),
            Err(_) => "an unreadable certificate".into(),
        },
        None => "a key".into(),
    }
}

/// The bundle's claim about the image: a signature or an attestation of `digest`.
fn claim_of(
    authorities: &Authorities,
    image: &ImageRef,
    digest: &str,
    bundle: &Bundle,
    signed_payload: Option<&[u8]>,
) -> Result<Claim, (String, String)> {
    let signature = || "signature".to_owned();
    if let Some(payload) = signed_payload {
        // A classic simple-signing payload: it names the digest and the repository.
        let simple: SimpleSigning = serde_json::from_slice(payload).map_err(|err| {
            (
                signature(),
                format!("the simple-signing payload is not readable: {err}"),
            )
        })?;
        if simple.critical.type_name != SIMPLE_SIGNING_TYPE {
            return Err((
                signature(),
                format!(
                    "the payload's type is {:?}, not {SIMPLE_SIGNING_TYPE:?}",
                    simple.critical.type_name
                ),
            ));
        }
        let named = &simple.critical.image.docker_manifest_digest;
        if named != digest {
            return Err((
                signature(),
                format!("its payload names another digest ({named})"),
            ));
        }
        let reference = &simple.critical.identity.docker_reference;
        if !authorities.accepts_reference(image, reference) {
            return Err((
                signature(),
                format!(
                    "it is for another repository ({reference}); copied signatures are not \
                     accepted (see signatures.mirrorOf for mirrors)"
                ),
            ));
        }
        return Ok(Claim::Signature);
    }
    match artefact::statement_of(bundle) {
        // A message signature over the image manifest: the bundle's messageDigest must be
        // the digest (sigstore-verify checks it against the artifact).
        None => Ok(Claim::Signature),
        Some(Err(reason)) => Err(("unknown".into(), reason)),
        Some(Ok(statement)) => {
            let is_signature = authorities
                .signature_predicates
                .contains(&statement.predicate_type);
            let kind = if is_signature {
                signature()
            } else {
                statement.predicate_type.clone()
            };
            if !statement.names_digest(digest) {
                let named: Vec<String> = statement
                    .subject
                    .iter()
                    .filter_map(|s| s.digest.get("sha256").map(|d| format!("sha256:{d}")))
                    .collect();
                return Err((
                    kind,
                    format!(
                        "its statement is about another digest ({})",
                        if named.is_empty() {
                            "no sha256 subject".to_owned()
                        } else {
                            named.join(", ")
                        }
                    ),
                ));
            }
            if is_signature {
                Ok(Claim::Signature)
            } else {
                Ok(Claim::Attestation {
                    predicate_type: statement.predicate_type,
                    predicate: statement.predicate,
                })
            }
        }
    }
}

/// The artifact a bundle signs: the payload bytes of a classic signature, else the image
/// digest (DSSE subjects and message digests name it).
fn artifact_of<'a>(
    signed_payload: Option<&'a [u8]>,
    hex: &str,
) -> Result<sigstore_types::Artifact<'a>, String> {
    match signed_payload {
        Some(payload) => Ok(sigstore_types::Artifact::from(payload)),
        None => Sha256Hash::from_hex(hex)
            .map(sigstore_types::Artifact::from)
            .map_err(|err| format!("digest: {err}")),
    }
}

fn has_signed_time(bundle: &Bundle) -> bool {
    !bundle.verification_material.tlog_entries.is_empty()
        || !bundle
            .verification_material
            .timestamp_verification_data
            .rfc3161_timestamps
            .is_empty()
}

/// A key-signed bundle (or classic key `.sig`/`.att`): which of the policy's keys signed it.
fn verify_with_keys(
    authorities: &Authorities,
    bundle: &Bundle,
    signed_payload: Option<&[u8]>,
    hex: &str,
    rekor_v2_dsse: &[rekor_v2::DsseV2Entry],
) -> Result<Vec<(usize, String)>, (String, String)> {
    let unknown = || "an unknown key".to_owned();
    if authorities.keys.is_empty() {
        return Err((
            unknown(),
            "signed with a key, and this policy names no key".into(),
        ));
    }
    let logged_here = !bundle.verification_material.tlog_entries.is_empty();
    let logged = logged_here || !rekor_v2_dsse.is_empty();
    if authorities.require_tlog && !logged {
        return Err((
            unknown(),
            "not in a transparency log, and the policy sets requireTransparencyLog".into(),
        ));
    }
    let mut signers = Vec::new();
    let mut last_error = String::new();
    for (index, key) in authorities.keys.iter().enumerate() {
        // Rekor v2 dsse entries name the key that signed: checked for this key first.
        if let Err(err) = verify_rekor_v2_entries(
            authorities,
            bundle,
            rekor_v2_dsse,
            rekor_v2::ExpectedVerifier::PublicKey(key.der.as_bytes()),
        ) {
            last_error = err;
            continue;
        }
        let outcome = if has_signed_time(bundle) {
            // Log entries and timestamps present are verified (inclusion too when the policy
            // requires the log); consistency of the entry with the bundle always is.
            let mut policy = PublicKeyVerificationPolicy::new(key.der.clone());
            if !authorities.require_tlog || !logged_here {
                policy = policy.skip_tlog_unsafe();
            }
            artifact_of(signed_payload, hex).and_then(|artifact| {
                authorities
                    .root
                    .verifier
                    .verify(artifact, bundle, &policy)
                    .map(|_| ())
                    .map_err(|err| err.to_string())
            })
        } else {
            // No log entry and no timestamp: sigstore-verify's bundle path insists on signed
            // time, which key signatures made with `--tlog-upload=false` do not have; the
            // signature itself is still checked with sigstore-crypto.
            verify_bare_key_signature(&key.der, bundle, signed_payload, hex)
        };
        match outcome {
            Ok(()) => signers.push((index, format!("key {}", key.label))),
            Err(err) => last_error = err,
        }
    }
    if signers.is_empty() {
        let reason = if authorities.keys.len() == 1 {
            format!(
                "not signed by key {} ({last_error})",
                authorities.keys[0].label
            )
        } else {
            format!("signed by none of the policy's keys ({last_error})")
        };
        return Err((unknown(), reason));
    }
    Ok(signers)
}

/// Every Rekor v2 dsse entry the bundle carried must log this bundle's envelope and signer
/// and be included in a log of the policy's root (an entry that does not verify is a refusal,
/// whether or not the policy requires the log).
fn verify_rekor_v2_entries(
    authorities: &Authorities,
    bundle: &Bundle,
    entries: &[rekor_v2::DsseV2Entry],
    expected: rekor_v2::ExpectedVerifier<'_>,
) -> Result<(), String> {
    if entries.is_empty() {
        return Ok(());
    }
    let SignatureContent::DsseEnvelope(envelope) = &bundle.content else {
        return Err("it carries a Rekor v2 dsse entry but no DSSE envelope".into());
    };
    for entry in entries {
        rekor_v2::verify(entry, envelope, expected, &authorities.root.log_keys)
            .map_err(|err| format!("its Rekor v2 log entry does not verify: {err}"))?;
    }
    Ok(())
}

/// Signature schemes to try for a key: its default, and RSA-PSS beside PKCS#1 v1.5 (Cosign
/// signs RSA keys either way).
fn schemes_for(key: &DerPublicKey) -> Vec<SigningScheme> {
    let Ok(algorithm) = sigstore_crypto::KeyAlgorithm::from_spki(key) else {
        return Vec::new();
    };
    let default = algorithm.default_signing_scheme();
    let mut schemes = vec![default];
    if matches!(
        default,
        SigningScheme::RsaPkcs1Sha256
            | SigningScheme::RsaPkcs1Sha384
            | SigningScheme::RsaPkcs1Sha512
    ) {
        schemes.push(SigningScheme::RsaPssSha256);
        schemes.push(SigningScheme::RsaPkcs1Sha256);
    }
    schemes
}

fn verify_bare_key_signature(
    key: &DerPublicKey,
    bundle: &Bundle,
    signed_payload: Option<&[u8]>,
    hex: &str,
) -> Result<(), String> {
    let (data, signature): (Vec<u8>, &sigstore_types::SignatureBytes) = match &bundle.content {
        SignatureContent::DsseEnvelope(envelope) => (envelope.pae(), &envelope.signature.sig),
        SignatureContent::MessageSignature(message) => match signed_payload {
            Some(payload) => (payload.to_vec(), &message.signature),
            // A detached signature over the manifest needs the manifest bytes, which are not
            // at hand; such bundles always carry signed time in practice.
            None => {
                return Err(
                    "a message signature over the manifest without a log entry or \
                            timestamp cannot be verified"
                        .into(),
                );
            }
        },
        _ => return Err("unsupported bundle content".into()),
    };
    if let SignatureContent::DsseEnvelope(_) = &bundle.content {
        // The subject check sigstore-verify does on its own path.
        match artefact::statement_of(bundle) {
            Some(Ok(statement)) if statement.names_digest(&format!("sha256:{hex}")) => {}
            _ => return Err("the statement does not name this digest".into()),
        }
    }
    let schemes = schemes_for(key);
    if schemes.is_empty() {
        return Err("unsupported key".into());
    }
    for scheme in schemes {
        if sigstore_crypto::verify_signature(key, &data, signature, scheme).is_ok() {
            return Ok(());
        }
    }
    Err("signature does not verify".into())
}

/// A certificate-signed bundle: which of the policy's keyless identities signed it.
fn verify_with_identities(
    authorities: &Authorities,
    bundle: &Bundle,
    signed_payload: Option<&[u8]>,
    hex: &str,
    rekor_v2_dsse: &[rekor_v2::DsseV2Entry],
) -> Result<Vec<(usize, String)>, (String, String)> {
    let hint = signer_hint(bundle);
    if authorities.keyless.is_empty() {
        return Err((
            hint,
            "signed with a certificate, and this policy names no keyless identity".into(),
        ));
    }
    let logged_here = !bundle.verification_material.tlog_entries.is_empty();
    let logged = logged_here || !rekor_v2_dsse.is_empty();
    if authorities.require_tlog && !logged {
        return Err((
            hint,
            "not in a transparency log, and the policy sets requireTransparencyLog".into(),
        ));
    }
    let mut policy = VerificationPolicy::any_identity();
    if !authorities.root.verify_sct {
        policy = policy.skip_sct();
    }
    if !logged_here {
        // Timestamp-only bundles (RFC 3161 from a TSA the root trusts), and Rekor v2 dsse
        // bundles whose entries were checked above: the signed time comes from the timestamp;
        // sigstore-verify still refuses a bundle with neither.
        policy = policy.skip_tlog_unsafe();
    }
    if let Some(certificate) = bundle.signing_certificate() {
        verify_rekor_v2_entries(
            authorities,
            bundle,
            rekor_v2_dsse,
            rekor_v2::ExpectedVerifier::Certificate(certificate.as_bytes()),
        )
        .map_err(|err| (hint.clone(), err))?;
    }
    let artifact = artifact_of(signed_payload, hex).map_err(|err| (hint.clone(), err))?;
    let result = authorities
        .root
        .verifier
        .verify(artifact, bundle, &policy)
        .map_err(|err| {
            (
                hint.clone(),
                format!("does not verify against {}: {err}", authorities.root.label),
            )
        })?;
    let Some(info) = result.certificate() else {
        return Err((hint, "no certificate in the verified result".into()));
    };
    let identity = CertificateIdentity::from_info(info);
    let mut signers = Vec::new();
    let mut mismatches = Vec::new();
    for (index, matcher) in authorities.keyless.iter().enumerate() {
        match matcher.mismatch(&identity) {
            None => signers.push((
                authorities.keys.len() + index,
                format!("keyless {} ({})", identity.subject, identity.issuer),
            )),
            Some(why) => mismatches.push(why),
        }
    }
    if signers.is_empty() {
        return Err((
            identity.describe(),
            format!(
                "an identity the policy does not name ({})",
                mismatches.join("; ")
            ),
        ));
    }
    debug_assert!(signers.len() <= authorities.authority_count());
    Ok(signers)
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
    fn the_embedded_public_good_root_prepares_and_checks_scts() {
        let root = RootInUse::public_good().unwrap();
        assert!(root.verify_sct);
        assert_eq!(root.fingerprint.len(), 64);
    }

    #[test]
    fn a_root_that_is_not_a_trusted_root_is_refused_with_the_policy_name() {
        let dir = std::env::temp_dir().join(format!("portcullis-root-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("root.json");
        std::fs::write(&path, "[]").unwrap();
        let requirement = SignatureRequirement {
            keyless: vec![KeylessIdentity {
                issuer: Some("https://i".into()),
                subject: Some("s".into()),
                ..KeylessIdentity::default()
            }],
            trusted_root: Some(path),
            ..SignatureRequirement::default()
        };
        let err = Authorities::from_requirement("team", &requirement).unwrap_err();
        assert!(err.to_string().contains("imagePolicy \"team\""), "{err}");
        assert!(
            err.to_string().contains("not a Sigstore TrustedRoot"),
            "{err}"
        );
    }

    #[test]
    fn a_keyless_identity_pins_ci_claims() {
        let identity = KeylessIdentity {
            issuer: Some("https://token.actions.githubusercontent.com".into()),
            subject_regexp: Some("https://github.com/org/repo/.+".into()),
            source_repository_ref_regexp: Some("refs/tags/v.*".into()),
            runner_environment: Some("github-hosted".into()),
            ..KeylessIdentity::default()
        };
        let matcher = keyless_matcher("p", &identity).unwrap();
        let mut certificate = CertificateIdentity {
            subject: "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1"
                .into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            claims: BTreeMap::from([
                ("sourceRepositoryRef", "refs/tags/v1".to_owned()),
                ("runnerEnvironment", "github-hosted".to_owned()),
            ]),
        };
        assert_eq!(matcher.mismatch(&certificate), None);
        certificate
            .claims
            .insert("sourceRepositoryRef", "refs/heads/main".into());
        assert_eq!(
            matcher.mismatch(&certificate).as_deref(),
            Some("sourceRepositoryRef is refs/heads/main")
        );
        certificate.claims.remove("runnerEnvironment");
        certificate
            .claims
            .insert("sourceRepositoryRef", "refs/tags/v2".into());
        assert_eq!(
            matcher.mismatch(&certificate).as_deref(),
            Some("the certificate has no runnerEnvironment")
        );
    }

    fn identity(issuer: &str, subject: &str) -> CertificateIdentity {
        CertificateIdentity {
            subject: subject.into(),
            issuer: issuer.into(),
            claims: BTreeMap::new(),
        }
    }

    fn exact(issuer: &str, subject: &str) -> KeylessIdentity {
        KeylessIdentity {
            issuer: Some(issuer.into()),
            subject: Some(subject.into()),
            ..KeylessIdentity::default()
        }
    }

    #[test]
    fn an_exact_identity_matches_only_the_same_subject_and_issuer() {
        let matcher =
            keyless_matcher("p", &exact("https://issuer.example", "ci@acme.example")).unwrap();
        assert_eq!(
            matcher.mismatch(&identity("https://issuer.example", "ci@acme.example")),
            None
        );
        for (issuer, subject) in [
            ("https://issuer.example", "CI@acme.example"),
            ("https://issuer.example", "ci@acme.example.evil"),
            ("https://issuer.example", "xci@acme.example"),
            ("https://issuer.example/", "ci@acme.example"),
            ("https://evil.example", "ci@acme.example"),
        ] {
            assert_eq!(
                matcher.mismatch(&identity(issuer, subject)).as_deref(),
                Some("subject/issuer"),
                "{issuer} {subject}"
            );
        }
    }

    #[test]
    fn an_identity_regexp_must_match_the_whole_value() {
        let matcher = keyless_matcher(
            "p",
            &KeylessIdentity {
                issuer_regexp: Some(r"https://token\.actions\.githubusercontent\.com".into()),
                subject_regexp: Some(r"https://github\.com/org/repo/.+@refs/tags/v.*".into()),
                ..KeylessIdentity::default()
            },
        )
        .unwrap();
        let issuer = "https://token.actions.githubusercontent.com";
        assert_eq!(
            matcher.mismatch(&identity(
                issuer,
                "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1"
            )),
            None
        );
        for (issuer, subject) in [
            // A prefix before the anchored pattern.
            (
                issuer,
                "evil https://github.com/org/repo/.github/workflows/r.yml@refs/tags/v1",
            ),
            // A branch, not a tag.
            (
                issuer,
                "https://github.com/org/repo/.github/workflows/r.yml@refs/heads/main",
            ),
            // The issuer with something after it.
            (
                "https://token.actions.githubusercontent.com.evil.example",
                "https://github.com/org/repo/.github/workflows/r.yml@refs/tags/v1",
            ),
        ] {
            assert!(
                matcher.mismatch(&identity(issuer, subject)).is_some(),
                "{issuer} {subject}"
            );
        }
    }

    #[test]
    fn an_alternation_in_an_identity_regexp_stays_anchored() {
        let matcher = keyless_matcher(
            "p",
            &KeylessIdentity {
                issuer: Some("https://i".into()),
                subject_regexp: Some("alice@acme.example|bob@acme.example".into()),
                ..KeylessIdentity::default()
            },
        )
        .unwrap();
        assert_eq!(
            matcher.mismatch(&identity("https://i", "bob@acme.example")),
            None
        );
        for subject in ["mallory+bob@acme.example", "alice@acme.example.evil"] {
            assert!(
                matcher.mismatch(&identity("https://i", subject)).is_some(),
                "{subject}"
            );
        }
    }

    #[test]
    fn exactly_one_of_a_value_or_its_regexp_must_be_given() {
        let both = KeylessIdentity {
            subject_regexp: Some(".*".into()),
            ..exact("https://i", "s")
        };
        let err = keyless_matcher("team", &both).unwrap_err().to_string();
        assert!(err.contains("team"), "{err}");
        assert!(
            err.contains("give exactly one of subject or subjectRegExp"),
            "{err}"
        );
        let neither = KeylessIdentity {
            subject: Some("s".into()),
            ..KeylessIdentity::default()
        };
        let err = keyless_matcher("team", &neither).unwrap_err().to_string();
        assert!(
            err.contains("give exactly one of issuer or issuerRegExp"),
            "{err}"
        );
    }

    #[test]
    fn an_invalid_identity_regexp_is_an_error_naming_the_key() {
        let bad = KeylessIdentity {
            issuer: Some("https://i".into()),
            subject_regexp: Some("(unclosed".into()),
            ..KeylessIdentity::default()
        };
        let err = keyless_matcher("team", &bad).unwrap_err().to_string();
        assert!(err.contains("subjectRegExp"), "{err}");
        let bad_claim = KeylessIdentity {
            build_signer_uri_regexp: Some("[".into()),
            ..exact("https://i", "s")
        };
        let err = keyless_matcher("team", &bad_claim).unwrap_err().to_string();
        assert!(err.contains("buildSignerUriRegExp"), "{err}");
    }

    #[test]
    fn unset_claims_are_not_required_and_exact_claims_match_whole_values() {
        let matcher = keyless_matcher(
            "p",
            &KeylessIdentity {
                build_trigger: Some("release".into()),
                ..exact("https://i", "s")
            },
        )
        .unwrap();
        assert_eq!(matcher.claims.len(), 1, "only the claim given is pinned");
        let mut certificate = identity("https://i", "s");
        certificate.claims.insert("buildTrigger", "release".into());
        certificate
            .claims
            .insert("runnerEnvironment", "self-hosted".into());
        assert_eq!(matcher.mismatch(&certificate), None);
        certificate
            .claims
            .insert("buildTrigger", "release-x".into());
        assert_eq!(
            matcher.mismatch(&certificate).as_deref(),
            Some("buildTrigger is release-x")
        );
    }

    #[test]
    fn a_subject_or_issuer_mismatch_is_reported_before_the_claims() {
        let matcher = keyless_matcher(
            "p",
            &KeylessIdentity {
                runner_environment: Some("github-hosted".into()),
                ..exact("https://i", "s")
            },
        )
        .unwrap();
        assert_eq!(
            matcher.mismatch(&identity("https://i", "other")).as_deref(),
            Some("subject/issuer")
        );
    }

    #[test]
    fn a_keyless_identity_is_described_with_its_patterns() {
        let matcher = keyless_matcher(
            "p",
            &KeylessIdentity {
                issuer: Some("https://i".into()),
                subject_regexp: Some("ci@.*".into()),
                source_repository_ref: Some("refs/tags/v1".into()),
                ..KeylessIdentity::default()
            },
        )
        .unwrap();
        assert_eq!(
            matcher.describe(),
            "issuer=https://i subject=~^(?:ci@.*)$ sourceRepositoryRef=refs/tags/v1"
        );
    }

    fn keyless_authorities(mirror_of: &[&str]) -> Authorities {
        let requirement = SignatureRequirement {
            keyless: vec![exact("https://issuer.example", "ci@acme.example")],
            mirror_of: mirror_of.iter().map(|m| (*m).to_owned()).collect(),
            ..SignatureRequirement::default()
        };
        Authorities::from_requirement("team", &requirement).unwrap()
    }

    #[test]
    fn a_keyless_policy_describes_and_fixes_with_its_identity() {
        let authorities = keyless_authorities(&[]);
        assert_eq!(
            authorities.describe(),
            "keyless issuer=https://issuer.example subject=ci@acme.example"
        );
        let image = ImageRef::parse("ghcr.io/acme/app:1").unwrap();
        assert_eq!(
            authorities.fix(&image, "sha256:ab"),
            "sign the digest keylessly as ci@acme.example (issuer https://issuer.example): \
             cosign sign ghcr.io/acme/app@sha256:ab"
        );
    }

    #[test]
    fn the_fingerprint_changes_with_the_identity_and_mirrors() {
        let base = keyless_authorities(&[]);
        assert_eq!(base.fingerprint(), keyless_authorities(&[]).fingerprint());
        assert_ne!(
            base.fingerprint(),
            keyless_authorities(&["ghcr.io/upstream/**"]).fingerprint()
        );
        let other = Authorities::from_requirement(
            "team",
            &SignatureRequirement {
                keyless: vec![exact("https://issuer.example", "other@acme.example")],
                ..SignatureRequirement::default()
            },
        )
        .unwrap();
        assert_ne!(base.fingerprint(), other.fingerprint());
    }

    #[test]
    fn a_signed_docker_reference_must_name_the_images_repository() {
        let authorities = keyless_authorities(&[]);
        let image = ImageRef::parse("docker.io/acme/app:1.0").unwrap();
        for signed in [
            "docker.io/acme/app",
            "index.docker.io/acme/app",
            "docker.io/acme/app:2.0",
            "docker.io/acme/app@sha256:00",
        ] {
            assert!(authorities.accepts_reference(&image, signed), "{signed}");
        }
        for signed in [
            "docker.io/acme/other",
            "docker.io/acme/app/sub",
            "ghcr.io/acme/app",
        ] {
            assert!(!authorities.accepts_reference(&image, signed), "{signed}");
        }
    }

    #[test]
    fn mirror_of_accepts_signatures_made_for_the_upstream_repositories_only() {
        let authorities = keyless_authorities(&["ghcr.io/upstream/**"]);
        let mirrored = ImageRef::parse("mirror.example.com/upstream/app:1").unwrap();
        assert!(authorities.accepts_reference(&mirrored, "ghcr.io/upstream/app"));
        assert!(authorities.accepts_reference(&mirrored, "mirror.example.com/upstream/app"));
        assert!(!authorities.accepts_reference(&mirrored, "ghcr.io/elsewhere/app"));
        assert!(!authorities.accepts_reference(&mirrored, "ghcr.io.evil.example/upstream/app"));
        // Without mirrorOf, the upstream's signature does not count for the mirror.
        assert!(!keyless_authorities(&[]).accepts_reference(&mirrored, "ghcr.io/upstream/app"));
    }
}
