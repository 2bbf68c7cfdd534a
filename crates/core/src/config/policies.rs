//! `policies`: Rego modules (paths and syntax, the evaluation timeout) and each policy's
//! settings and `match`, and their checks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::names::is_dns_label_prefix;
use super::{Mode, Problem, yes};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policies {
    #[serde(default)]
    pub rego: RegoSettings,
}

/// `policies.rego`: Rego modules, how they are loaded, limited and configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegoSettings {
    /// `.rego` files or folders (searched recursively, files in name order). Each entry is a
    /// path, or `{path, syntax}` to force the Rego syntax of everything under it.
    #[serde(default)]
    pub paths: Vec<RegoPath>,
    /// Wall-clock limit for evaluating one policy on one review; a policy that runs longer
    /// is stopped and the review gets the `onError` outcome.
    #[serde(
        default = "default_rego_timeout_millis",
        with = "crate::timeutil::whole_millis"
    )]
    pub timeout_millis: std::time::Duration,
    /// Settings per policy (package): parameters, mode, which requests it judges.
    #[serde(default)]
    pub policies: Vec<RegoPolicySettings>,
}

impl Default for RegoSettings {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            timeout_millis: default_rego_timeout_millis(),
            policies: Vec::new(),
        }
    }
}

fn default_rego_timeout_millis() -> std::time::Duration {
    std::time::Duration::from_millis(500)
}

/// One entry of `policies.rego.paths`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RegoPath {
    /// A file or folder; the syntax of each file is detected (`auto`).
    Plain(PathBuf),
    /// A file or folder with an explicit syntax.
    Detailed(RegoPathSettings),
}

impl RegoPath {
    pub fn path(&self) -> &Path {
        match self {
            RegoPath::Plain(path) => path,
            RegoPath::Detailed(settings) => &settings.path,
        }
    }

    pub fn syntax(&self) -> RegoSyntax {
        match self {
            RegoPath::Plain(_) => RegoSyntax::Auto,
            RegoPath::Detailed(settings) => settings.syntax,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegoPathSettings {
    pub path: PathBuf,
    #[serde(default)]
    pub syntax: RegoSyntax,
}

/// Which Rego syntax a file is parsed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegoSyntax {
    /// Rego v1 (OPA 1.0: `if`, `contains`); when that fails, Rego v0.
    #[default]
    Auto,
    /// Rego v1 only.
    V1,
    /// Rego v0 only (Gatekeeper library style: `violation[{"msg": msg}] { ... }`).
    V0,
}

/// `policies.rego.policies[]`: settings of one Rego policy, named by its package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegoPolicySettings {
    /// The package, without `data.`: `k8sdisallowedtags`, `portcullis.no_latest_tag`.
    pub package: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Overrides the top-level `mode` for this policy.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `input.parameters` for this policy (Gatekeeper: the constraint's `spec.parameters`).
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
    /// Which requests the policy judges (default: every pod-bearing request).
    #[serde(default, rename = "match")]
    pub matches: PolicyMatch,
}

/// Which requests a policy judges. Empty lists match everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyMatch {
    /// Object kinds (`Pod`, `Deployment`, ...).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Namespaces: exact names, or a prefix ending in `*` (`team-*`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces never judged by this policy (same patterns).
    #[serde(default)]
    pub excluded_namespaces: Vec<String>,
}

impl PolicyMatch {
    /// Whether a request for `kind` in `namespace` is judged.
    pub fn matches(&self, kind: &str, namespace: &str) -> bool {
        let pattern = |p: &String| match p.strip_suffix('*') {
            Some(prefix) => namespace.starts_with(prefix),
            None => p == namespace,
        };
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(pattern))
            && !self.excluded_namespaces.iter().any(pattern)
    }
}

impl Policies {
    /// Checks of `policies.rego`.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        let rego = &self.rego;
        for (i, entry) in rego.paths.iter().enumerate() {
            if !entry.path().exists() {
                problem(
                    format!("policies.rego.paths[{i}]"),
                    format!("{} does not exist", entry.path().display()),
                );
            }
        }
        let timeout_millis = rego.timeout_millis.as_millis();
        if timeout_millis == 0 || timeout_millis > 30_000 {
            problem(
                "policies.rego.timeoutMillis".into(),
                "must be between 1 and 30000 (the API server waits at most 30 s)".into(),
            );
        }
        let mut packages = BTreeSet::new();
        for (i, policy) in rego.policies.iter().enumerate() {
            let key = format!("policies.rego.policies[{i}]");
            let package = policy
                .package
                .strip_prefix("data.")
                .unwrap_or(&policy.package);
            if package.is_empty() {
                problem(format!("{key}.package"), "must not be empty".into());
            } else if !packages.insert(package) {
                problem(
                    format!("{key}.package"),
                    format!("{package:?} is configured twice"),
                );
            }
            if policy
                .parameters
                .as_ref()
                .is_some_and(|p| !p.is_object() && !p.is_null())
            {
                problem(
                    format!("{key}.parameters"),
                    "must be a mapping (it becomes input.parameters)".into(),
                );
            }
            let namespaces = policy
                .matches
                .namespaces
                .iter()
                .map(|n| ("namespaces", n))
                .chain(
                    policy
                        .matches
                        .excluded_namespaces
                        .iter()
                        .map(|n| ("excludedNamespaces", n)),
                );
            for (field, ns) in namespaces {
                let name = ns.strip_suffix('*').unwrap_or(ns);
                if name.contains('*') || (!name.is_empty() && !is_dns_label_prefix(name)) {
                    problem(
                        format!("{key}.match.{field}"),
                        format!("{ns:?} is not a namespace name or a prefix ending in *"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadedConfig;

    #[test]
    fn rego_paths_take_a_plain_path_or_a_forced_syntax() {
        let yaml = "policies:\n  rego:\n    paths: [/, {path: /, syntax: v0}]\n";
        let config = LoadedConfig::from_yaml(yaml, "t").map(|l| l.config).ok();
        let paths = config.map(|c| c.policies.rego.paths).unwrap_or_default();
        let syntaxes: Vec<_> = paths.iter().map(RegoPath::syntax).collect();
        assert_eq!(syntaxes, [RegoSyntax::Auto, RegoSyntax::V0]);
        let typo = LoadedConfig::from_yaml(
            "policies:\n  rego:\n    paths: [{path: /, sintax: v0}]\n",
            "t",
        );
        assert!(typo.is_err(), "an unknown key in a path entry is refused");
    }

    #[test]
    fn rego_policy_settings_are_validated_with_their_paths() {
        let yaml = "policies:\n  rego:\n    timeoutMillis: 0\n    policies:\n      - package: a\n        parameters: [1]\n      - package: data.a\n        match: {namespaces: [Bad, 'team-*'], excludedNamespaces: ['a*b']}\n";
        let keys = crate::config::problem_keys(yaml);
        assert_eq!(
            keys,
            [
                "policies.rego.timeoutMillis",
                "policies.rego.policies[0].parameters",
                "policies.rego.policies[1].package",
                "policies.rego.policies[1].match.namespaces",
                "policies.rego.policies[1].match.excludedNamespaces",
            ]
        );
    }

    #[test]
    fn a_policy_match_checks_kind_and_namespace_patterns() {
        let matches = PolicyMatch {
            kinds: vec!["Pod".into()],
            namespaces: vec!["team-*".into(), "shop".into()],
            excluded_namespaces: vec!["team-test".into()],
        };
        assert!(matches.matches("Pod", "team-a"));
        assert!(matches.matches("Pod", "shop"));
        assert!(!matches.matches("Pod", "team-test"));
        assert!(!matches.matches("Pod", "shopping"));
        assert!(!matches.matches("Deployment", "shop"));
        assert!(PolicyMatch::default().matches("Deployment", "anything"));
    }
}
