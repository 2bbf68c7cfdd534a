//! The integration tests, one module per area, linked into one test binary: every test binary
//! links the whole dependency tree (kube, sigstore, aws-lc), so one binary instead of thirteen
//! keeps CI's disk use and link time down. Test names keep their area as the module path, e.g.
//! `cargo nextest run -E 'test(/^registry_on_loopback::/)'`. The support code they share
//! (real registry, stand-in servers, the `portcullis serve` child builder) is the
//! `portcullis-test-support` crate (`crates/test-support`); `common` keeps the helpers that
//! need the portcullis library or this package's binary and fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

mod common;

mod audit_with_mocked_apiserver;
mod bypass_suite;
mod cert_rotation_with_mocked_apiserver;
mod cli;
mod digest_pinning;
mod faults_under_load;
mod fuzz_regressions;
mod https_server;
mod image_sites;
mod leader_election_with_mocked_apiserver;
mod lifecycle_on_loopback;
mod notation_envelopes;
mod notation_on_loopback;
mod policy_hot_reload;
mod policy_reports_with_mocked_apiserver;
mod pull_secrets_with_mocked_apiserver;
mod rechecks_on_loopback;
mod referrers_on_loopback;
mod registry_faults;
mod registry_on_loopback;
mod rego_policies;
mod rejudge;
mod rejudge_serve_with_standin_apiserver;
mod running_digests;
mod scans_and_lifecycle;
mod server_guards;
mod sigstore_bundles;
mod trivy_operator_with_mocked_apiserver;
mod tuf_refresh;
mod verify_command;
mod webhook_router;
