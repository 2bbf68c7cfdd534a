//! portcullis: a Kubernetes validating admission webhook that lets only trusted images run.
//!
//! The request path is `server` → `admission` → `engine` (gathers `evidence`, runs `policy`:
//! built-in rules and Rego modules) → `decision`. Everything from `reference` to `decision` is pure; I/O sits in `server`,
//! `evidence` sources and `cli`. `POST /mutate` (opt-in digest pinning) goes `server` →
//! `admission` → `engine::Engine::pin` (gathers the same `evidence`) → `pinning` (pure).

pub mod admission;
pub mod audit;
pub mod cert_rotation;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod decision;
pub mod engine;
pub mod evidence;
pub mod exceptions;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod notation;
pub mod pinning;
pub mod policy;
pub mod policy_report;
pub mod reference;
pub mod registry;
pub mod registry_evidence;
pub mod rejudge;
pub mod scan;
pub mod server;
pub mod signature;
pub mod timeutil;
pub mod tls;
pub mod trust_refresh;
pub mod watch;
pub mod workload;
