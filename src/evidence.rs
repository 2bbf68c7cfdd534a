//! Evidence about an image gathered from outside (registry digests, signatures): the pure
//! types policies read, and the `EvidenceSource` seam the engine gathers them through.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use crate::config::ImagePolicy;
use crate::reference::ImageRef;

/// What is known about one image's signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum SignatureEvidence {
    /// Signed by at least one of the required authorities.
    Verified { signers: Vec<String> },
    /// Checked, and no acceptable signature exists.
    Unverified { reason: String },
    /// This build or configuration cannot check signatures at all. Policies must treat it as
    /// unverified (fail closed), never as an error that `onError: allow` could wave through.
    Unavailable { reason: String },
}

/// Facts gathered about one image for the image policies that match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageEvidence {
    /// The digest the registry resolved the reference to, when it was resolved.
    pub digest: Option<String>,
    pub signatures: SignatureEvidence,
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

/// A boxed future, so that sources can be used as trait objects.
pub type EvidenceFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ImageEvidence, EvidenceError>> + Send + 'a>>;

/// Gathers evidence for one image under the image policies that matched it.
pub trait EvidenceSource: Send + Sync + std::fmt::Debug {
    fn gather<'a>(&'a self, image: &'a ImageRef, policies: &'a [ImagePolicy])
    -> EvidenceFuture<'a>;
}

/// The source used until a registry client is configured: it reaches no registry, so every
/// signature requirement stays unmet and the image policy denies (fail closed).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRegistry;

impl EvidenceSource for NoRegistry {
    fn gather<'a>(
        &'a self,
        _image: &'a ImageRef,
        _policies: &'a [ImagePolicy],
    ) -> EvidenceFuture<'a> {
        Box::pin(async {
            Ok(ImageEvidence {
                digest: None,
                signatures: SignatureEvidence::Unavailable {
                    reason: "signature verification is not available in this build \
                             (no registry client)"
                        .into(),
                },
            })
        })
    }
}
