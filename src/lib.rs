//! portcullis: a Kubernetes validating admission webhook that lets only trusted images run.
//!
//! This crate is the binary and its composition: engine orchestration (`engine`), the
//! admission contract (`admission`), HTTP and TLS (`server`, `connections`, `tls`), metrics,
//! cluster work (`leader`, `rejudge`, `policy_report`, `events`, `cert_rotation`) and the CLI. The
//! decision core is `portcullis-core` (pure), Rego is `portcullis-rego`, and everything
//! fetched about a digest is `portcullis-evidence`; docs/architecture.md draws the arrows.
//!
//! The request path is `server` → `admission` → `engine` (gathers `evidence` through
//! `portcullis_evidence::source::EvidenceSource`, runs `policy`: built-in rules and Rego) →
//! `decision`. `POST /mutate` (opt-in digest pinning) goes `server` → `admission` →
//! `engine::Engine::pin` → `pinning` (pure).
//!
//! The modules of the workspace's other crates are re-exported under the paths they have
//! always had (`portcullis::config`, `portcullis::evidence`, ...), so the binary's modules,
//! the tests, the benches and the fuzz targets name one namespace; where a concern is split
//! between crates (`evidence`, `policy`, `scan`), the facade module joins both halves.

pub mod admission;
pub mod admitted;
pub mod cert_rotation;
pub mod cli;
pub mod connections;
pub mod engine;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod object_files;
pub mod object_review;
pub mod policy_report;
pub mod rejudge;
pub mod server;
pub mod tls;

pub use portcullis_core::{
    clock, config, decision, exceptions, inventory, notation_trust, pinning, reference, running,
    subject, timeutil, workload,
};
pub use portcullis_evidence::{
    credentials, notation, registry, registry_evidence, signature, trust_refresh, watch,
};

/// Evidence about an image: the model policies read (`portcullis_core::evidence`) and the
/// seam it is gathered through (`portcullis_evidence::source`).
pub mod evidence {
    pub use portcullis_core::evidence::*;
    pub use portcullis_evidence::source::*;
}

/// Policies: the `Policy` trait, built-in, lifecycle and vulnerability rules and the input
/// document (`portcullis_core::policy`), and Rego (`portcullis_rego`).
pub mod policy {
    pub use portcullis_core::policy::*;
    pub use portcullis_rego::{policy_test, rego, value};
}

/// Scans: the report model and `ScanSource` (`portcullis_core::scan`) and the sources that
/// read reports from outside (`portcullis_evidence::scan`).
pub mod scan {
    pub use portcullis_core::scan::*;
    pub use portcullis_evidence::scan::{operator, trivy};
}
