//! The `Policy` trait that built-in rules (and later Rego modules) implement, the input they
//! read and the findings they return. Pure: no I/O happens here.
//!
//! Evaluation order: policies run in a fixed order (built-in rules in the order of
//! [`builtin::from_config`], then image policies in configuration order); every policy sees the
//! same input; findings from all policies are concatenated, and the decision core combines them.

pub mod builtin;
pub mod lifecycle;
pub mod vulnerability;

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::Mode;
use crate::evidence::{EvidenceError, ImageEvidence};
use crate::reference::{ImageRef, ReferenceError};
use crate::scan::ScanReport;
use crate::workload::{ContainerKind, PodView};

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
    pub evidence: Option<Result<ImageEvidence, EvidenceError>>,
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
    pub operation: &'a str,
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub pod: &'a PodView,
    pub images: &'a [ImageEntry],
    /// The time rules judge against (injected, so tests need no sleeps).
    pub now: OffsetDateTime,
}

/// A policy that could not be evaluated (a runtime error, a limit reached).
#[derive(Debug, thiserror::Error)]
#[error("policy {policy} failed: {message}")]
pub struct PolicyError {
    pub policy: String,
    pub message: String,
}

/// Anything that judges a request and returns findings.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// A stable name, used in logs and errors.
    fn name(&self) -> &str;
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError>;
}
