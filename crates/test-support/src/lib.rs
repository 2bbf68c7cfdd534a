//! portcullis's shared test infrastructure (a dev-dependency only, never shipped): the real
//! parts and stand-ins the integration tests (`tests/integration/`) and the benchmarks
//! (`benches/`) run against. Test cases live with the tests; only support code lives here.
//!
//! - [`registry`]: Debian's `docker-registry` on 127.0.0.1, OCI layouts pushed with `skopeo`,
//!   Cosign signers and a private Sigstore-style CA and log.
//! - [`referrers_standin`]: a proxy adding the OCI referrers API the registry lacks.
//! - [`mock_apiserver`]: kube clients whose requests a test's handler answers.
//! - [`serve`]: the one builder for a `portcullis serve` child process.
//! - [`tls`]: a test CA, HTTPS clients and raw TLS connections that trust only a given CA.
//! - [`wait`]: polling until a condition holds.
//!
//! The helpers panic on any setup failure: a test that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: helpers of tests

pub mod mock_apiserver;
pub mod referrers_standin;
pub mod registry;
pub mod serve;
pub mod tls;
pub mod wait;

pub use tls::install_crypto_provider;
pub use wait::eventually;
