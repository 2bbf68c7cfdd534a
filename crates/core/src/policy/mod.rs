//! The `Policy` trait that built-in rules and Rego modules implement, the input they read and
//! the findings they return. Pure: no I/O happens here (Rego files are read by
//! [`rego::RegoBundle::load`] when an engine is built, never on the request path).
//!
//! * **Naming.** Built-in rules are named by their rule id (`no-latest-tag`), which is the
//!   `rule` of every finding they return, as are the lifecycle rules (`image-age`,
//!   `base-image-outdated`, `deprecated-image`). The signature and vulnerability rules are named after
//!   their image policy; their findings carry the rule that found them (`signature`,
//!   `vulnerability`, `scan-age`, `scan-missing`). A Rego policy is named by its package
//!   without `data.` (`k8sdisallowedtags`), the `rule` of its findings.
//! * **Evaluation order.** Built-in rules first, in the order of [`builtin::from_config`] (the
//!   table in `docs/configuration.md`), then Rego policies in load order (paths in
//!   configuration order, files of a folder in path order, packages in first-seen order).
//!   Every policy sees the same input; none sees another's findings, so the order only
//!   decides the order of message lines.
//! * **Merging.** Findings of all policies are concatenated; UPDATE scoping drops those about
//!   containers the update did not change (and pod-level findings of built-ins, which only
//!   judge what changed; document-reading policies judge the whole object, as in
//!   Gatekeeper); exceptions waive some; the decision core combines the rest by mode (any
//!   `enforce` denies, else any `warn` warns, else `audit` is recorded). A policy that fails
//!   (runtime error, execution limit) makes the whole review take the `onError` outcome: a
//!   partial set of findings is never decided on.
//! * **A new engine** (CEL, WebAssembly) is one more module implementing [`Policy`] with
//!   `reads_document() == true`, reading [`input::InputDocument`].

pub mod builtin;
pub mod input;
pub mod lifecycle;
pub mod vulnerability;

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::Mode;
use crate::evidence::{EvidenceError, ImageEvidence};
use crate::reference::{ImageRef, ReferenceError};
use crate::scan::ScanReport;
use crate::subject::ReviewSubject;
use crate::workload::ContainerKind;

/// What a finding is about: one container's image, or the pod as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", rename_all = "camelCase")]
pub enum Subject {
    Container {
        container: String,
        kind: ContainerKind,
        image: String,
    },
    Pod,
}

/// One thing a policy found wrong, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Stable rule identifier, e.g. `no-latest-tag`.
    pub rule: String,
    pub subject: Subject,
    /// What was found, e.g. `tag "latest" is mutable`.
    pub found: String,
    /// How to fix it.
    pub fix: String,
    /// The mode the producing policy is configured with.
    pub mode: Mode,
}

/// One container's image as the policies see it.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    pub container: String,
    pub container_kind: ContainerKind,
    /// The parsed reference, or why it could not be parsed.
    pub reference: Result<ImageRef, ReferenceError>,
    /// Registry evidence, when an image policy asked for it: `None` when no image policy
    /// matched, `Some(Err)` when gathering failed (the engine applies `onError` to that).
    /// Shared by `Arc`: one gathered evidence serves every site of that image and the
    /// document-reading policies without a copy per site.
    pub evidence: Option<Result<Arc<ImageEvidence>, EvidenceError>>,
    /// The cached scan of the image's digest, when an image policy judges vulnerabilities.
    pub scan: ScanState,
    /// Build time and base image state, when an image policy judges the image's lifecycle.
    pub lifecycle: lifecycle::LifecycleFacts,
}

/// What is known about an image's vulnerability scan.
#[derive(Debug, Clone, Default)]
pub enum ScanState {
    /// No image policy asked for a scan.
    #[default]
    NotRequested,
    /// The digest is unknown (tag not resolved), so no report can be matched.
    NoDigest,
    /// No source has a report for this digest.
    Missing {
        digest: String,
    },
    Found(Arc<ScanReport>),
}

impl ImageEntry {
    pub fn subject(&self) -> Subject {
        Subject::Container {
            container: self.container.clone(),
            kind: self.container_kind,
            image: match &self.reference {
                Ok(image) => image.written().to_owned(),
                Err(err) => err.written.clone(),
            },
        }
    }
}

/// Everything a policy may read about one admission request.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// The object under review, its pod and its image sites with their evidence.
    pub subject: &'a ReviewSubject,
    /// The time rules judge against (injected, so tests need no sleeps).
    pub now: OffsetDateTime,
    /// The JSON input document (`input.review`, `input.images`, `input.now`), built once per
    /// review when a policy [reads it](Policy::reads_document); `None` otherwise.
    pub document: Option<&'a input::InputDocument>,
}

/// A policy that could not be evaluated (a runtime error, a limit reached).
#[derive(Debug, thiserror::Error)]
#[error("policy {policy} failed: {message}")]
pub struct PolicyError {
    pub policy: String,
    pub message: String,
    /// The engine's own error, when there is one (kept for `source()` chains).
    #[source]
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl PolicyError {
    pub fn new(policy: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            policy: policy.into(),
            message: message.into(),
            cause: None,
        }
    }

    /// The same failure with the engine's error kept as its source.
    pub fn caused_by(mut self, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Box::new(error));
        self
    }
}

/// Anything that judges a request and returns findings.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// A stable name, used in logs, errors and as the `rule` of its findings.
    fn name(&self) -> &str;
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError>;
    /// Whether the policy reads [`PolicyInput::document`]. Such policies are interpreters
    /// (CPU-bound, bounded by their own execution limits): the engine runs them off the async
    /// workers, and they judge the whole object (their pod-level findings survive UPDATE
    /// scoping).
    fn reads_document(&self) -> bool {
        false
    }
}
