//! The seam the engine gathers evidence through: [`EvidenceSource`], the request context it is
//! gathered for, and [`NoRegistry`] (fail closed where no registry is wanted). The
//! registry-backed source is [`crate::registry_evidence`].

use std::future::Future;
use std::pin::Pin;

use portcullis_core::config::ImagePolicy;
use portcullis_core::evidence::{EvidenceError, ImageEvidence, SignatureEvidence};
use portcullis_core::reference::ImageRef;
use portcullis_core::workload::PullRefs;
use tokio::time::Instant;

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

/// Gathers evidence for one image under the image policies that matched it (borrowed from
/// the configuration in force: nothing is copied per review).
pub trait EvidenceSource: Send + Sync + std::fmt::Debug {
    fn gather<'a>(
        &'a self,
        image: &'a ImageRef,
        policies: &'a [&'a ImagePolicy],
        context: &'a GatherContext,
    ) -> EvidenceFuture<'a>;

    /// Drops what is cached about these digests' signatures and attestations, so the next
    /// gather reads them from the registry again (re-judging's `attestationRefresh`: a rescan
    /// attested after admission). Sources without a cache have nothing to drop.
    fn forget_signatures<'a>(
        &'a self,
        _digests: &'a [String],
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }
}

/// A source that reaches no registry, so every signature requirement stays unmet and the
/// image policy denies (fail closed). Used where no registry access is wanted.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRegistry;

impl EvidenceSource for NoRegistry {
    fn gather<'a>(
        &'a self,
        _image: &'a ImageRef,
        _policies: &'a [&'a ImagePolicy],
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
