//! [`CliError`]: why a command failed, with the error it comes from as its source, and the
//! exit code that says how.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::admission;
use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::object_files::ManifestError;
use crate::registry_evidence::RegistryEvidenceError;
use crate::scan::trivy::TrivyError;
use crate::server::ServeError;

/// A command failed; the exit code says how.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("configuration: {0}")]
    Engine(#[from] EngineError),
    #[error(transparent)]
    NotAReview(#[from] admission::AdmissionError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot read {what}: {source}")]
    Input {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("scan reports: {0}")]
    Scans(#[from] TrivyError),
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    #[error("internal lock poisoned")]
    Poisoned,
    #[error("scans.trivyOperator needs access to the Kubernetes API")]
    Cluster(#[source] ClusterUnavailable),
    #[error("rejudge needs access to the Kubernetes API to list pods")]
    RejudgeCluster(#[source] ClusterUnavailable),
    #[error("certificate rotation needs access to the Kubernetes API: {0}")]
    RotationCluster(String),
    #[error("{0}")]
    RotationArgs(String),
    #[error(transparent)]
    Audit(#[from] crate::object_review::AuditError),
    #[error("policy test: {0}")]
    PolicyTest(#[from] crate::policy::policy_test::TestError),
    #[error("evidence.pullSecrets needs access to the Kubernetes API")]
    PullSecretsCluster(#[source] ClusterUnavailable),
    #[error(transparent)]
    Evidence(#[from] RegistryEvidenceError),
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error("sigstore.tuf: {0}")]
    Tuf(#[from] crate::trust_refresh::TufError),
}

impl CliError {
    /// 2 for bad input or configuration (as `interface.md` says), 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_)
            | CliError::Engine(_)
            | CliError::NotAReview(_)
            | CliError::Manifest(_)
            | CliError::Input { .. }
            | CliError::Scans(_)
            | CliError::Cluster(_)
            | CliError::Audit(_)
            | CliError::RejudgeCluster(_)
            | CliError::RotationCluster(_)
            | CliError::RotationArgs(_)
            | CliError::PolicyTest(_)
            | CliError::PullSecretsCluster(_)
            | CliError::Evidence(_)
            | CliError::Reference(_)
            | CliError::Tuf(_) => 2,
            CliError::Bind { .. }
            | CliError::Serve(_)
            | CliError::Output(_)
            | CliError::Watch(_)
            | CliError::Poisoned => 1,
        }
    }

    /// The message followed by each cause it does not already include (most variants print
    /// their source in their own message; the `…Cluster` ones do not): what a refused reload
    /// logs, and what `{:#}` prints without the repetitions.
    pub fn with_causes(&self) -> String {
        crate::engine::describe_error(self)
    }
}

/// Why there is no Kubernetes client: the error `kube::Client::try_default` gave. Shared
/// (`Arc`), because each source that needs the client reports the same failure.
///
/// It prints kube's message, which already includes its causes (kubeconfig and in-cluster
/// errors); so that `{:#}` and [`CliError::with_causes`] do not repeat them, the chain ends
/// here. The kube error itself is [`ClusterUnavailable::kube_error`].
#[derive(Debug, Clone)]
pub struct ClusterUnavailable(Arc<kube::Error>);

impl ClusterUnavailable {
    pub fn kube_error(&self) -> &kube::Error {
        &self.0
    }
}

impl From<kube::Error> for ClusterUnavailable {
    fn from(err: kube::Error) -> Self {
        Self(Arc::new(err))
    }
}

impl std::fmt::Display for ClusterUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ClusterUnavailable {}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn no_cluster() -> ClusterUnavailable {
        kube::Error::ReadEvents(std::io::Error::other("no kubeconfig")).into()
    }

    #[test]
    fn a_missing_cluster_keeps_the_kube_error_and_prints_it_once() {
        let err = CliError::RejudgeCluster(no_cluster());
        assert_eq!(err.exit_code(), 2);
        let kube = err
            .source()
            .and_then(|source| source.downcast_ref::<ClusterUnavailable>())
            .map(ClusterUnavailable::kube_error);
        assert!(matches!(kube, Some(kube::Error::ReadEvents(_))), "{kube:?}");
        let expected = "rejudge needs access to the Kubernetes API to list pods: Error reading \
                        events stream: no kubeconfig";
        // What main.rs prints.
        assert_eq!(err.with_causes(), expected);
    }

    #[test]
    fn with_causes_adds_no_cause_the_message_already_names() {
        let err = CliError::Input {
            what: "stdin".into(),
            source: std::io::Error::other("closed"),
        };
        assert_eq!(err.with_causes(), "cannot read stdin: closed");
        assert_eq!(err.exit_code(), 2);
    }
}
