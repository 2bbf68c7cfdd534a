//! Evidence about an image gathered from outside (registry digests, image facts, signatures,
//! attestations): the pure types policies read. Gathering them is the evidence crate's
//! (`portcullis_evidence::source::EvidenceSource`).

use std::collections::BTreeMap;

use serde::Serialize;

/// What is known about one image's signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum SignatureEvidence {
    /// Signed by enough of the required authorities.
    Verified { signers: Vec<String> },
    /// Checked, and no acceptable signature exists. `reason` says what was expected and what
    /// was found.
    Unverified { reason: String },
    /// This build or configuration cannot check signatures at all. Policies must treat it as
    /// unverified (fail closed), never as an error that `onError: allow` could wave through.
    Unavailable { reason: String },
}

/// Facts read from the image configuration and manifest of the judged platform.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageFacts {
    /// The config's `created` (RFC 3339, as written).
    pub created: Option<String>,
    /// `config.User` (empty string when the image sets none).
    pub user: Option<String>,
    /// `config.ExposedPorts` keys, e.g. `8080/tcp`.
    pub exposed_ports: Vec<String>,
    /// `config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// Manifest annotation `org.opencontainers.image.base.name`.
    pub base_name: Option<String>,
    /// Manifest annotation `org.opencontainers.image.base.digest`.
    pub base_digest: Option<String>,
    /// Manifest annotation `org.opencontainers.image.created`.
    pub annotation_created: Option<String>,
}

/// One verified in-toto attestation: only attestations whose signature was verified with the
/// policy's authorities and whose subject names the image digest are kept. Shared (`Arc`)
/// between the verification cache and every review's evidence, since predicates (SBOMs, scan
/// results) can be large.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedAttestation {
    pub predicate_type: String,
    pub predicate: serde_json::Value,
    /// The key or keyless identity that signed it.
    pub signer: String,
    /// A cosign vulnerability predicate read as a scan report when the attestation was
    /// verified: once per verified attestation, which is cached by digest and shared by every
    /// review, so reviews never parse it again.
    #[serde(skip)]
    pub scan_report: Option<std::sync::Arc<crate::scan::ScanReport>>,
    /// Why a vulnerability predicate could not be read as a scan (it then counts as no scan:
    /// the `missingScan` outcome applies, never a silent pass).
    #[serde(skip)]
    pub scan_error: Option<String>,
}

impl VerifiedAttestation {
    /// A verified statement about `digest`; a cosign vulnerability predicate is read as that
    /// digest's scan report here.
    pub fn new(
        predicate_type: String,
        predicate: serde_json::Value,
        signer: String,
        digest: &str,
    ) -> Self {
        let (scan_report, scan_error) = if predicate_type
            == crate::scan::attestation::VULN_PREDICATE_TYPE
        {
            match crate::scan::attestation::report_from_vuln_predicate(digest, &predicate, &signer)
            {
                Ok(report) => (Some(std::sync::Arc::new(report)), None),
                Err(err) => (None, Some(err.to_string())),
            }
        } else {
            (None, None)
        };
        Self {
            predicate_type,
            predicate,
            signer,
            scan_report,
            scan_error,
        }
    }
}

/// The result of one image policy's signature requirement.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyVerification {
    pub policy: String,
    pub signatures: SignatureEvidence,
    /// Verified attestations (for this policy's authorities).
    pub attestations: Vec<std::sync::Arc<VerifiedAttestation>>,
    /// Required predicate types with no verified attestation.
    pub missing_attestations: Vec<String>,
    /// Every signature and attestation found for the digest and what became of it (for
    /// `portcullis verify` and the inventory; denials are written from it).
    pub found: Vec<FoundArtefact>,
}

/// Facts gathered about one image for the image policies that match it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageEvidence {
    /// The digest the image is judged by: the written digest, or what the tag resolved to.
    /// For a multi-arch image this is the index digest (what `cosign sign` signs).
    pub digest: Option<String>,
    /// The overall signature state: verified only when every matching policy's requirement
    /// is met.
    pub signatures: SignatureEvidence,
    /// Facts from the configured platform's image.
    pub facts: Option<ImageFacts>,
    /// For an index: platform (`os/arch[/variant]`) → child manifest digest.
    pub children: BTreeMap<String, String>,
    /// The digest of the image the facts came from (the child for an index).
    pub platform_digest: Option<String>,
    /// Per image policy with a signature requirement.
    pub verifications: Vec<PolicyVerification>,
    /// Every verified attestation (all policies), for policies and scan sources.
    pub attestations: Vec<std::sync::Arc<VerifiedAttestation>>,
    /// Things the client should know (served from a stale resolution, ...), added as warnings.
    pub notes: Vec<String>,
    /// The declared base image's tag resolved now, when an image policy judges base freshness.
    pub base_image: crate::policy::lifecycle::BaseImageState,
}

impl ImageEvidence {
    /// Evidence with only a digest and a signature state (for fakes and simple sources).
    pub fn signatures_only(digest: Option<String>, signatures: SignatureEvidence) -> Self {
        Self {
            digest,
            signatures,
            facts: None,
            children: BTreeMap::new(),
            platform_digest: None,
            verifications: Vec::new(),
            attestations: Vec::new(),
            notes: Vec::new(),
            base_image: crate::policy::lifecycle::BaseImageState::NotChecked,
        }
    }

    /// The signature state for one image policy: its own verification when recorded, the
    /// overall state otherwise.
    pub fn signatures_for(&self, policy: &str) -> &SignatureEvidence {
        self.verifications
            .iter()
            .find(|v| v.policy == policy)
            .map_or(&self.signatures, |v| &v.signatures)
    }

    /// The newest scan report carried by a verified cosign vulnerability attestation (read
    /// once, when the attestation was verified).
    pub fn attested_scan(&self) -> Option<std::sync::Arc<crate::scan::ScanReport>> {
        self.attestations
            .iter()
            .filter_map(|a| a.scan_report.clone())
            .max_by_key(|report| report.scanned_at)
    }

    /// The verification recorded for one image policy.
    pub fn verification(&self, policy: &str) -> Option<&PolicyVerification> {
        self.verifications.iter().find(|v| v.policy == policy)
    }
}

/// Evidence could not be gathered (registry unreachable, 5xx, timed out): the configured
/// `onError` outcome applies.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot gather evidence for {image} from {registry}: {message}")]
pub struct EvidenceError {
    pub image: String,
    pub registry: String,
    pub message: String,
    /// The failure it came from (a registry error), for `source()` chains; shared because a
    /// failure is cached and cloned into every review waiting on it.
    #[source]
    pub cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl EvidenceError {
    pub fn new(
        image: impl Into<String>,
        registry: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            image: image.into(),
            registry: registry.into(),
            message: message.into(),
            cause: None,
        }
    }

    /// The same failure with the error it came from kept as its source.
    pub fn caused_by(mut self, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(std::sync::Arc::new(error));
        self
    }
}

/// What one artefact turned out to be, for `verify` and for denials.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FoundArtefact {
    pub place: Place,
    pub format: Format,
    /// `signature`, or the attestation's predicate type.
    pub kind: String,
    /// Who signed it as far as can be told: `key <label>`, `subject S (issuer I)`, or
    /// `an unknown key`.
    pub signer: String,
    /// Whether it counts for this policy.
    pub verified: bool,
    /// Why it does not count (empty when verified).
    pub reason: String,
    /// The manifest or layer it came from.
    pub source: String,
}

/// Where an artefact was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Place {
    /// The `sha256-<hex>.sig` tag (classic Cosign).
    SigTag,
    /// The `sha256-<hex>.att` tag (classic Cosign attestations).
    AttTag,
    /// The OCI referrers API.
    ReferrersApi,
    /// The referrers tag schema (an index under the tag `sha256-<hex>`).
    ReferrersTagSchema,
}

impl Place {
    pub fn describe(self) -> &'static str {
        match self {
            Place::SigTag => ".sig tag",
            Place::AttTag => ".att tag",
            Place::ReferrersApi => "OCI referrer",
            Place::ReferrersTagSchema => "referrers tag schema",
        }
    }
}

/// The format of an artefact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    /// A Cosign simple-signing payload with its signature in an annotation.
    CosignSimpleSigning,
    /// A DSSE envelope layer (`cosign attest`, classic).
    CosignDsse,
    /// A Sigstore bundle (Cosign 3, GitHub artifact attestations, sigstore-js).
    SigstoreBundle,
    /// A Notary Project JWS envelope.
    NotationJws,
    /// A Notary Project COSE envelope.
    NotationCose,
}

impl Format {
    pub fn describe(self) -> &'static str {
        match self {
            Format::CosignSimpleSigning => "Cosign signature",
            Format::CosignDsse => "Cosign DSSE attestation",
            Format::SigstoreBundle => "Sigstore bundle",
            Format::NotationJws => "Notation JWS signature",
            Format::NotationCose => "Notation COSE signature",
        }
    }
}
