//! Evidence about an image gathered from outside (registry digests, image facts, signatures,
//! attestations): the pure types policies read, and the `EvidenceSource` seam the engine
//! gathers them through. The registry-backed source lives in `registry_evidence`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::ImagePolicy;
use crate::reference::ImageRef;
use crate::workload::PullRefs;

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
    /// A cosign vuln predicate read as a scan report, once per verified attestation (the
    /// attestation is shared by every review that hits the cache, so reviews do not parse it
    /// again). Filled by the engine.
    #[serde(skip)]
    pub scan_report: std::sync::OnceLock<Option<std::sync::Arc<crate::scan::ScanReport>>>,
}

impl VerifiedAttestation {
    pub fn new(predicate_type: String, predicate: serde_json::Value, signer: String) -> Self {
        Self {
            predicate_type,
            predicate,
            signer,
            scan_report: std::sync::OnceLock::new(),
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
    pub found: Vec<crate::signature::FoundArtefact>,
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
}

/// What the engine knows about the request an image is gathered for.
#[derive(Debug, Clone)]
pub struct GatherContext {
    pub namespace: String,
    /// The pod's pull secrets and service account (credentials the kubelet would use).
    pub pull: PullRefs,
    /// When the answer must be on its way; retries never go past it.
    pub deadline: Instant,
    /// Whose registry requests these are.
    pub priority: Priority,
}

/// Who is waiting for evidence: the API server (admission) or nobody in a hurry (re-judging,
/// `audit`, `check`). Background work may hold at most half of a registry's concurrency
/// slots, so a large re-judging pass never starves admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    #[default]
    Admission,
    Background,
}

impl GatherContext {
    /// A context without pod credentials (CLI checks, benches).
    pub fn anonymous(deadline: Instant) -> Self {
        Self {
            namespace: String::new(),
            pull: PullRefs::default(),
            deadline,
            priority: Priority::Admission,
        }
    }
}

/// A boxed future, so that sources can be used as trait objects.
pub type EvidenceFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ImageEvidence, EvidenceError>> + Send + 'a>>;

/// Gathers evidence for one image under the image policies that matched it.
pub trait EvidenceSource: Send + Sync + std::fmt::Debug {
    fn gather<'a>(
        &'a self,
        image: &'a ImageRef,
        policies: &'a [ImagePolicy],
        context: &'a GatherContext,
    ) -> EvidenceFuture<'a>;
}

/// A source that reaches no registry, so every signature requirement stays unmet and the
/// image policy denies (fail closed). Used where no registry access is wanted.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRegistry;

impl EvidenceSource for NoRegistry {
    fn gather<'a>(
        &'a self,
        _image: &'a ImageRef,
        _policies: &'a [ImagePolicy],
        _context: &'a GatherContext,
    ) -> EvidenceFuture<'a> {
        Box::pin(async {
            Ok(ImageEvidence::signatures_only(
                None,
                SignatureEvidence::Unavailable {
                    reason: "signature verification is not available here (no registry client)"
                        .into(),
                },
            ))
        })
    }
}
