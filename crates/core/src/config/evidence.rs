//! `evidence`: how registry evidence is gathered and cached (platform, TTLs, limits, the docker
//! config file, pull secrets), and its checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problem;

/// `evidence`: how registry evidence is gathered and cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceSettings {
    /// The platform whose image (in a multi-arch index) facts are read from: `os/arch` or
    /// `os/arch/variant`.
    #[serde(default = "default_platform")]
    pub platform: String,
    /// How long a tag → digest resolution is reused.
    #[serde(default = "default_tag_ttl", with = "crate::timeutil::whole_seconds")]
    pub tag_ttl_seconds: std::time::Duration,
    /// How long a resolution may be served after its TTL when the registry fails (0: never).
    #[serde(
        default = "default_max_staleness",
        with = "crate::timeutil::whole_seconds"
    )]
    pub max_staleness_seconds: std::time::Duration,
    /// How long a verification result (per digest and authorities) is kept. Digests are
    /// immutable, so this can be long.
    #[serde(
        default = "default_verified_ttl",
        with = "crate::timeutil::whole_seconds"
    )]
    pub verified_ttl_seconds: std::time::Duration,
    /// How long "no acceptable signature" is remembered for a digest. Short, because a
    /// pipeline pushes and then signs seconds later; positive verifications keep
    /// `verifiedTtlSeconds`.
    #[serde(
        default = "default_unverified_ttl",
        with = "crate::timeutil::whole_seconds"
    )]
    pub unverified_ttl_seconds: std::time::Duration,
    /// How long a registry failure is remembered (so a failing registry is not hammered).
    #[serde(
        default = "default_failure_ttl",
        with = "crate::timeutil::whole_seconds"
    )]
    pub failure_ttl_seconds: std::time::Duration,
    /// Concurrent requests to one registry, across all reviews.
    #[serde(default = "default_registry_concurrency")]
    pub max_concurrent_requests_per_registry: usize,
    /// Attempts per registry request on transient failures (5xx, connection errors), always
    /// within the review's deadline.
    #[serde(default = "default_attempts")]
    pub max_attempts: usize,
    /// A docker `config.json` whose `auths` are used for registries without `credentials`.
    #[serde(default)]
    pub docker_config_file: Option<PathBuf>,
    /// Read the pod's `imagePullSecrets` and its service account's pull secrets through the
    /// Kubernetes API (serve only; needs `get` on secrets and serviceaccounts).
    #[serde(default)]
    pub pull_secrets: bool,
    /// Entries kept per cache.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: u64,
}

impl Default for EvidenceSettings {
    fn default() -> Self {
        Self {
            platform: default_platform(),
            tag_ttl_seconds: default_tag_ttl(),
            max_staleness_seconds: default_max_staleness(),
            verified_ttl_seconds: default_verified_ttl(),
            unverified_ttl_seconds: default_unverified_ttl(),
            failure_ttl_seconds: default_failure_ttl(),
            max_concurrent_requests_per_registry: default_registry_concurrency(),
            max_attempts: default_attempts(),
            docker_config_file: None,
            pull_secrets: false,
            cache_capacity: default_cache_capacity(),
        }
    }
}

fn default_platform() -> String {
    "linux/amd64".into()
}
fn default_tag_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}
fn default_max_staleness() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}
fn default_verified_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}
fn default_unverified_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_failure_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}
fn default_registry_concurrency() -> usize {
    16
}
fn default_attempts() -> usize {
    3
}
fn default_cache_capacity() -> u64 {
    10_000
}

impl EvidenceSettings {
    /// Checks of `evidence`.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        let parts: Vec<&str> = self.platform.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            problem(
                "evidence.platform".into(),
                format!("{:?} is not os/arch or os/arch/variant", self.platform),
            );
        }
        if self.max_concurrent_requests_per_registry == 0 {
            problem(
                "evidence.maxConcurrentRequestsPerRegistry".into(),
                "must be at least 1".into(),
            );
        }
        if self.max_attempts == 0 {
            problem("evidence.maxAttempts".into(), "must be at least 1".into());
        }
        if self.cache_capacity == 0 {
            problem("evidence.cacheCapacity".into(), "must be at least 1".into());
        }
        if let Some(path) = self
            .docker_config_file
            .as_ref()
            .filter(|path| !path.is_file())
        {
            problem(
                "evidence.dockerConfigFile".into(),
                format!("{} does not exist or is not a file", path.display()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::LoadedConfig;

    #[test]
    fn evidence_defaults_are_documented_values() {
        let config = LoadedConfig::from_yaml("{}", "t").map(|l| l.config).ok();
        let evidence = config.map(|c| c.evidence).unwrap_or_default();
        assert_eq!(evidence.platform, "linux/amd64");
        assert_eq!(evidence.tag_ttl_seconds, std::time::Duration::from_secs(60));
        assert_eq!(
            evidence.max_staleness_seconds,
            std::time::Duration::from_secs(300)
        );
        assert!(!evidence.pull_secrets);
    }
}
