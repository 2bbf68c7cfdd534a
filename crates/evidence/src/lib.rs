//! portcullis-evidence: everything portcullis fetches about an image digest — the registry
//! client and its credentials, signature and attestation discovery and verification (Sigstore
//! bundles, classic Cosign, Notation), scan sources (Trivy reports, Trivy Operator), trust-root
//! refresh, and the caches — behind the [`source::EvidenceSource`] seam the engine gathers
//! through. What it returns is `portcullis_core::evidence`, which pure code judges.

pub mod credentials;
pub mod notation;
pub mod registry;
pub mod registry_evidence;
pub mod scan;
pub mod signature;
pub mod source;
pub mod trust_refresh;
pub mod watch;
