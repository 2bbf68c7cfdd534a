//! portcullis-core: the pure decision core of portcullis. References and globs, workload image
//! extraction, the configuration schema and its validation, findings, built-in rules,
//! lifecycle and vulnerability rules, exceptions, the engine-neutral policy input document,
//! the evidence model policies read, and the decision with its messages.
//!
//! Nothing here does I/O on the request path: no tokio, no network, no kube client. The
//! compiler keeps it so — this crate does not depend on any of them (`cargo tree -p
//! portcullis-core`). Gathering evidence is `portcullis-evidence`'s, Rego is `portcullis-rego`'s.

pub mod clock;
pub mod config;
pub mod decision;
pub mod evidence;
pub mod exceptions;
pub mod inventory;
pub mod notation_trust;
pub mod pinning;
pub mod policy;
pub mod reference;
pub mod running;
pub mod scan;
pub mod subject;
pub mod timeutil;
pub mod workload;
