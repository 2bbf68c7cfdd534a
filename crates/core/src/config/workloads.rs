//! `workloads`: custom kinds with a pod template (Argo Rollouts, Knative, OpenKruise, ...), their
//! checks, and the engine's view of them.

use serde::{Deserialize, Serialize};

use super::Problem;
use super::names::{is_dns_label, is_dns_subdomain};

/// `workloads`: kinds beyond the built-in ones whose pod template portcullis judges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSettings {
    #[serde(default)]
    pub custom: Vec<CustomWorkload>,
}

/// `workloads.custom[]`: one custom kind and where its pod spec lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomWorkload {
    /// The API group, e.g. `argoproj.io` (never the core group: its kinds are built in).
    pub group: String,
    /// One version (`v1alpha1`); absent: every version of the kind.
    #[serde(default)]
    pub version: Option<String>,
    /// The kind, e.g. `Rollout`.
    pub kind: String,
    /// The plural resource, e.g. `rollouts` (the chart's webhook rules name it).
    pub resource: String,
    /// Dot-separated object keys to the PodSpec, e.g. `spec.template.spec`.
    pub pod_spec_path: String,
}

impl WorkloadSettings {
    /// Checks of `workloads.custom`.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        for (i, custom) in self.custom.iter().enumerate() {
            let key = format!("workloads.custom[{i}]");
            if custom.group.is_empty() {
                problem(
                    format!("{key}.group"),
                    "must not be empty: the core group's pod-bearing kinds are built in".into(),
                );
            } else if !is_dns_subdomain(&custom.group) {
                problem(
                    format!("{key}.group"),
                    format!(
                        "{:?} is not an API group (a DNS subdomain, e.g. argoproj.io)",
                        custom.group
                    ),
                );
            }
            if let Some(version) = &custom.version
                && !is_dns_label(version)
            {
                problem(
                    format!("{key}.version"),
                    format!(
                        "{version:?} is not an API version (e.g. v1alpha1); omit it for every version"
                    ),
                );
            }
            let kind_ok = custom.kind.starts_with(|c: char| c.is_ascii_uppercase())
                && custom.kind.chars().all(|c| c.is_ascii_alphanumeric());
            if !kind_ok {
                problem(
                    format!("{key}.kind"),
                    format!(
                        "{:?} is not a kind (CamelCase letters and digits, e.g. Rollout)",
                        custom.kind
                    ),
                );
            }
            if !is_dns_label(&custom.resource) {
                problem(
                    format!("{key}.resource"),
                    format!(
                        "{:?} is not a resource name (the lowercase plural, e.g. rollouts)",
                        custom.resource
                    ),
                );
            }
            if let Err(err) = crate::workload::SpecPath::parse(&custom.pod_spec_path) {
                problem(format!("{key}.podSpecPath"), err.to_string());
            }
            if crate::workload::pod_spec_path(&custom.group, &custom.kind).is_some() {
                problem(
                    format!("{key}.kind"),
                    format!(
                        "{}/{} is a built-in kind, already judged; remove this entry",
                        custom.group, custom.kind
                    ),
                );
            }
            // Two entries for one kind whose versions overlap: which path applies is ambiguous.
            let clash = self.custom[..i].iter().position(|earlier| {
                earlier.group == custom.group
                    && earlier.kind == custom.kind
                    && (earlier.version.is_none()
                        || custom.version.is_none()
                        || earlier.version == custom.version)
            });
            if let Some(earlier) = clash {
                problem(
                    format!("{key}.kind"),
                    format!(
                        "{}/{} is already configured at workloads.custom[{earlier}] for an \
                     overlapping version; configure each kind and version once",
                        custom.group, custom.kind
                    ),
                );
            }
        }
    }
}

/// The engine's view of `workloads.custom`: every entry with its parsed path. Errs (with the
/// entry's index) only on a configuration that skipped validation.
pub fn custom_workload_kinds(
    workloads: &WorkloadSettings,
) -> Result<crate::workload::WorkloadKinds, (usize, crate::workload::SpecPathError)> {
    let custom = workloads
        .custom
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(crate::workload::CustomKind {
                group: c.group.clone(),
                version: c.version.clone(),
                kind: c.kind.clone(),
                path: crate::workload::SpecPath::parse(&c.pod_spec_path).map_err(|e| (i, e))?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::workload::WorkloadKinds::new(custom))
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, LoadedConfig};

    #[test]
    fn custom_workloads_load_with_an_optional_version() {
        let yaml = "workloads:\n  custom:\n    - {group: argoproj.io, version: v1alpha1, kind: Rollout, resource: rollouts, podSpecPath: spec.template.spec}\n    - {group: apps.kruise.io, kind: CloneSet, resource: clonesets, podSpecPath: spec.template.spec}\n";
        let loaded = LoadedConfig::from_yaml(yaml, "t");
        let custom = loaded
            .map(|l| l.config.workloads.custom)
            .unwrap_or_default();
        assert_eq!(custom.len(), 2);
        assert_eq!(custom[0].version.as_deref(), Some("v1alpha1"));
        assert_eq!(custom[1].version, None);
    }

    #[test]
    fn bad_custom_workloads_are_refused_with_their_paths() {
        let yaml = "workloads:\n  custom:\n    - {group: argoproj.io, kind: Rollout, resource: rollouts, podSpecPath: ''}\n    - {group: argoproj.io, version: v1alpha1, kind: Rollout, resource: rollouts, podSpecPath: spec.template.spec}\n    - {group: apps, kind: Deployment, resource: deployments, podSpecPath: spec.template.spec}\n    - {group: '', kind: rollout, resource: Rollouts, podSpecPath: 'spec.templates[0].spec'}\n";
        let err = LoadedConfig::from_yaml(yaml, "t").err();
        let Some(ConfigError::Invalid { problems, .. }) = err else {
            unreachable!("expected validation problems, got {err:?}")
        };
        let found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.key.as_str(), p.message.as_str()))
            .collect();
        let keys: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "workloads.custom[0].podSpecPath",
                "workloads.custom[1].kind",
                "workloads.custom[2].kind",
                "workloads.custom[3].group",
                "workloads.custom[3].kind",
                "workloads.custom[3].resource",
                "workloads.custom[3].podSpecPath",
            ],
            "{found:?}"
        );
        assert!(found[0].1.contains("empty"), "{found:?}");
        assert!(
            found[1]
                .1
                .contains("already configured at workloads.custom[0]"),
            "{found:?}"
        );
        assert!(found[2].1.contains("built-in kind"), "{found:?}");
        assert!(found[6].1.contains("not supported"), "{found:?}");
        let missing = LoadedConfig::from_yaml(
            "workloads:\n  custom:\n    - {group: argoproj.io, kind: Rollout, resource: rollouts}\n",
            "t",
        );
        let text = missing.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("workloads.custom[0]") && text.contains("podSpecPath"),
            "{text}"
        );
    }
}
