//! Typed configuration: the YAML file users write, its parsing, the embedded default, the
//! identity hash that every decision carries, and `validate`, which asks each section (one
//! file each, beside its types) for its problems; every problem names its key path.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use names::is_dns_label;

mod evidence;
mod image_policy;
mod lifecycle;
mod limits;
mod names;
mod pinning;
mod policies;
mod registries;
mod rejudge;
mod rules;
mod scans;
mod sigstore;
mod workloads;

pub use evidence::EvidenceSettings;
pub use image_policy::{
    AttestationRequirement, BaseImageFreshness, ClaimSetting, ImagePolicy, KeySource,
    KeylessIdentity, SignatureRequirement,
};
pub use limits::{
    DEFAULT_MAX_BUFFERED_REQUEST_BYTES, DEFAULT_MAX_REQUEST_BYTES, Limits,
    MAX_BUFFERED_REQUEST_BYTES,
};
pub use pinning::PinningSettings;
pub use policies::{
    Policies, PolicyMatch, RegoPath, RegoPathSettings, RegoPolicySettings, RegoSettings, RegoSyntax,
};
pub use registries::{RegistryCredentials, RegistrySettings};
pub use rejudge::RejudgeSettings;
pub use rules::{ContainerPortsRule, RuleSettings, Rules, parse_port_range};
pub use sigstore::{PUBLIC_GOOD_TUF_URL, SigstoreSettings, TufSettings};
pub use workloads::{CustomWorkload, WorkloadSettings, custom_workload_kinds};

/// The configuration `serve` and `check` use when no `--config` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../default-config.yaml");

/// Errors found while reading or validating a configuration. Each names where it was found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: at `{key}`: {message}")]
    Syntax {
        origin: String,
        key: String,
        message: String,
    },
    #[error(
        "{origin}: the configuration is empty (nothing but whitespace or comments). An empty \
         file (or ConfigMap value) is refused because it would silently run without any image \
         policy or trusted registry. For the embedded default configuration, omit --config \
         (and PORTCULLIS_CONFIG); for the built-in default of every key, say so explicitly \
         with `{{}}` or write the keys you mean (e.g. `mode: enforce`)"
    )]
    Empty { origin: String },
    #[error("{origin}: {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  - `{}`: {}", p.key, p.message)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// One validation problem: the key path (`rules.containerPorts.allowed[1]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// How a finding is acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Report only: allowed, recorded in auditAnnotations and logs.
    Audit,
    /// Allowed with a warning shown to the client.
    Warn,
    /// Denied.
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Audit => "audit",
            Mode::Warn => "warn",
            Mode::Enforce => "enforce",
        }
    }
}

/// What happens when evidence cannot be gathered in time (registry down, deadline reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail closed (the default).
    #[default]
    Deny,
    /// Fail open, with a warning naming the error.
    Allow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_mode")]
    pub mode: Mode,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub exclude: Exclude,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub registries: Vec<RegistrySettings>,
    #[serde(default)]
    pub trusted_registries: Vec<String>,
    #[serde(default)]
    pub image_policies: Vec<ImagePolicy>,
    #[serde(default)]
    pub rules: Rules,
    #[serde(default)]
    pub policies: Policies,
    /// Where cached scan reports come from.
    #[serde(default)]
    pub scans: crate::scan::ScanSettings,
    /// Re-judge the pods that run, periodically (`serve` only; needs `list` on pods).
    #[serde(default)]
    pub rejudge: Option<RejudgeSettings>,
    /// Images to move away from, with a sunset date.
    #[serde(default)]
    pub deprecated_images: Vec<crate::policy::lifecycle::DeprecatedImage>,
    /// Time-bound waivers.
    #[serde(default)]
    pub exceptions: Vec<crate::exceptions::Exception>,
    /// How registry evidence is gathered and cached (platform, TTLs, limits, credentials).
    #[serde(default)]
    pub evidence: EvidenceSettings,
    /// Where the Sigstore public-good trusted root comes from (embedded unless TUF is on).
    #[serde(default)]
    pub sigstore: SigstoreSettings,
    /// Custom kinds with a pod template (Argo Rollouts, Knative, OpenKruise, ...).
    #[serde(default)]
    pub workloads: WorkloadSettings,
    /// Opt-in digest pinning of Pods by `POST /mutate` (off by default).
    #[serde(default)]
    pub pinning: PinningSettings,
    /// Opt-in verified-image inventory (`GET /inventory` on the probe port; off by default).
    #[serde(default)]
    pub inventory: InventorySettings,
}

/// `inventory`: whether `serve` keeps the verified-image inventory and serves it. Off by
/// default: the probe port is plain HTTP, and the inventory names signers, findings and
/// workloads to whoever reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventorySettings {
    /// Record each judged digest (admission and re-judging) and serve `GET /inventory`.
    #[serde(default)]
    pub enabled: bool,
}

fn default_mode() -> Mode {
    Mode::Enforce
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exclude {
    /// Namespaces never evaluated (requests there are allowed untouched).
    #[serde(default)]
    pub namespaces: Vec<String>,
}

impl Exclude {
    /// Checks of `exclude`.
    fn validate(&self, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        for (i, ns) in self.namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                problem(
                    format!("exclude.namespaces[{i}]"),
                    format!("{ns:?} is not a valid namespace name"),
                );
            }
        }
    }
}

/// The serde default of the `enabled`-style switches that are on unless turned off.
fn yes() -> bool {
    true
}

/// A parsed and validated configuration with the identity of the bytes it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// `sha256:<hex>` of the configuration bytes (policies join it when the policy engine
    /// loads them), so every decision names exactly what made it.
    pub identity: String,
    /// Where it came from: a path, or `embedded default`.
    pub origin: String,
}

impl LoadedConfig {
    /// The embedded default configuration.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::from_yaml(EMBEDDED_DEFAULT, "embedded default")
    }

    /// Reads and validates a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// The file when one is named, the embedded default otherwise.
    pub fn from_optional_file(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(path) => Self::from_file(path),
            None => Self::embedded(),
        }
    }

    /// Parses YAML (unknown keys rejected, errors carry the key path) and validates it.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config = parse_yaml(text, origin)?;
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            });
        }
        Ok(Self {
            config,
            identity: identity_of(text.as_bytes()),
            origin: origin.to_owned(),
        })
    }
}

fn parse_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
    // An empty file is far more often a mistake (an empty ConfigMap value, a failed template)
    // than a wish for defaults, and its defaults have no image policy: refuse it. Comments
    // and whitespace only, or a bare `null`, parse to a null document.
    if text.trim().is_empty()
        || matches!(
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text),
            Ok(serde_yaml_ng::Value::Null)
        )
    {
        return Err(ConfigError::Empty {
            origin: origin.to_owned(),
        });
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        ConfigError::Syntax {
            origin: origin.to_owned(),
            // serde_path_to_error writes `.` for the top level, but an empty string when the
            // document is only an anchor (`&e:`) or the key itself is empty (found by fuzzing):
            // either way the message must name a place.
            key: if key == "." || key.is_empty() {
                "(top level)".into()
            } else {
                key
            },
            message: err.into_inner().to_string(),
        }
    })
}

/// `sha256:<hex>` of some bytes.
pub fn identity_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Config {
    /// Semantic checks serde cannot do. Returns every problem, not just the first, section by
    /// section in this order.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.workloads.validate(&mut problems);
        self.limits.validate(&mut problems);
        self.pinning.validate(&self.image_policies, &mut problems);
        self.exclude.validate(&mut problems);
        registries::validate_trusted_registries(&self.trusted_registries, &mut problems);
        registries::validate_registries(&self.registries, &mut problems);
        image_policy::validate_image_policies(&self.image_policies, &mut problems);
        self.evidence.validate(&mut problems);
        self.sigstore.validate(&mut problems);
        self.rules.validate(&mut problems);
        scans::validate_scans(&self.scans, &mut problems);
        if let Some(rejudge) = &self.rejudge {
            rejudge.validate(&mut problems);
        }
        lifecycle::validate_deprecated_images(&self.deprecated_images, &mut problems);
        lifecycle::validate_exceptions(&self.exceptions, &mut problems);
        self.policies.validate(&mut problems);
        problems
    }

    /// Deprecated keys that still work, each a sentence naming its key path and the key to
    /// write instead (`config validate` prints them as `warning: …` lines).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        image_policy::deprecation_warnings(&self.image_policies, &mut warnings);
        warnings
    }
}

/// The key paths of the problems `yaml` has, in report order (tests of every section).
#[cfg(test)]
pub(crate) fn problem_keys(yaml: &str) -> Vec<String> {
    match LoadedConfig::from_yaml(yaml, "t") {
        Err(ConfigError::Invalid { problems, .. }) => problems.into_iter().map(|p| p.key).collect(),
        other => unreachable!("expected validation problems, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let loaded = LoadedConfig::embedded();
        assert!(loaded.is_ok(), "{loaded:?}");
    }

    #[test]
    fn an_explicit_empty_mapping_takes_every_default() {
        let loaded = LoadedConfig::from_yaml("{}\n", "defaults").ok();
        let config = loaded.map(|l| l.config);
        assert_eq!(config.as_ref().map(|c| c.mode), Some(Mode::Enforce));
        assert_eq!(config.as_ref().map(|c| c.on_error), Some(OnError::Deny));
        let limits = config.map(|c| c.limits).unwrap_or_default();
        assert_eq!(limits.max_buffered_request_bytes, 32 * 1024 * 1024);
        assert_eq!(
            limits.header_read_timeout_millis,
            std::time::Duration::from_secs(10)
        );
        assert_eq!(
            limits.idle_timeout_seconds,
            std::time::Duration::from_secs(120)
        );
        assert_eq!(limits.max_connections, 1024);
        assert_eq!(limits.max_images_per_object, 100);
    }

    #[test]
    fn an_empty_file_is_refused_and_says_how_to_get_defaults() {
        for text in [
            "",
            "  \n\t\n",
            "# nothing yet\n  # still nothing\n",
            "---\n",
            "null\n",
        ] {
            let err = LoadedConfig::from_yaml(text, "cm.yaml").err();
            assert!(
                matches!(&err, Some(ConfigError::Empty { origin }) if origin == "cm.yaml"),
                "{text:?}: {err:?}"
            );
            let message = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("omit --config"), "{message}");
            assert!(message.contains("`{}`"), "{message}");
        }
    }

    #[test]
    fn fuzz_regression_a_syntax_error_always_names_a_place() {
        // fuzz/regressions/config/anchor-only: the error's key was an empty string.
        let err = LoadedConfig::from_yaml("&e:", "cm.yaml").err();
        assert!(err.is_some());
        if let Some(ConfigError::Syntax { key, .. }) = &err {
            assert_eq!(key, "(top level)", "{err:?}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let err = LoadedConfig::from_yaml("rules:\n  noLatestTag:\n    enabeld: true\n", "t");
        let text = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("rules.noLatestTag"), "{text}");
        assert!(text.contains("enabeld"), "{text}");
    }

    #[test]
    fn wrong_types_name_the_key_path() {
        let err = LoadedConfig::from_yaml("registries:\n  - host: a\n    insecure: maybe\n", "t");
        let text = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("registries[0].insecure"), "{text}");
    }

    #[test]
    fn semantic_problems_are_all_reported_with_paths() {
        let yaml = "trustedRegistries: ['a/[']\nrules:\n  containerPorts:\n    enabled: true\n    allowed: ['80', '9-1', 'x']\nexclude:\n  namespaces: [Bad_NS]\n";
        let keys = problem_keys(yaml);
        assert_eq!(
            keys,
            [
                "exclude.namespaces[0]",
                "trustedRegistries[0]",
                "rules.containerPorts.allowed[1]",
                "rules.containerPorts.allowed[2]"
            ]
        );
    }

    #[test]
    fn identity_changes_with_content() {
        let a = LoadedConfig::from_yaml("mode: warn\n", "a")
            .map(|l| l.identity)
            .ok();
        let b = LoadedConfig::from_yaml("mode: audit\n", "b")
            .map(|l| l.identity)
            .ok();
        assert_ne!(a, b);
        assert!(a.is_some_and(|a| a.starts_with("sha256:") && a.len() == 71));
    }

    #[test]
    fn signature_and_evidence_keys_are_validated_with_their_paths() {
        let yaml = "evidence:\n  platform: linux\n  maxAttempts: 0\nregistries:\n  - host: r.io\n    credentials: {username: u}\nimagePolicies:\n  - name: p\n    images: [\"r.io/**\"]\n    signatures:\n      trustedRoot: /nonexistent/root.json\n      keyless:\n        - {issuer: \"https://i\", subjectRegExp: \"(\"}\n        - {issuer: \"https://i\"}\n      threshold: 3\n      mirrorOf: [\"a/[\"]\n";
        let keys = problem_keys(yaml);
        assert_eq!(
            keys,
            [
                "registries[0].credentials",
                "imagePolicies[0].signatures.threshold",
                "imagePolicies[0].signatures.trustedRoot",
                "imagePolicies[0].signatures.keyless[0].subjectRegExp",
                "imagePolicies[0].signatures.keyless[1]",
                "imagePolicies[0].signatures.mirrorOf[0]",
                "evidence.platform",
                "evidence.maxAttempts",
            ]
        );
    }
}
