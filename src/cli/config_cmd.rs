//! `portcullis config validate`: check a configuration and everything it names, and say what
//! is in force.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::{CliError, Components};
use crate::config::LoadedConfig;

pub(super) fn validate(file: Option<&Path>) -> Result<ExitCode, CliError> {
    let loaded = LoadedConfig::from_optional_file(file)?;
    let engine = Components::new(false).engine(loaded)?;
    let config = engine.config();
    let enabled_rules = engine.policy_names().len();
    // Written into one buffer, then to stdout with its error handled: `println!` would panic
    // when stdout is a closed pipe (`config validate | head -1`).
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(text, "valid: {}", engine.origin());
    let _ = writeln!(text, "identity: {}", engine.identity());
    if let Some(rego) = engine.rego() {
        let syntaxes: Vec<String> = crate::policy::rego::describe(rego)
            .into_iter()
            .map(|(syntax, count)| format!("{count} {syntax}"))
            .collect();
        let _ = writeln!(
            text,
            "rego: {} file(s) ({}), identity {}",
            rego.files().len(),
            syntaxes.join(", "),
            rego.identity()
        );
        for package in rego.packages().iter().filter(|p| p.is_policy()) {
            let _ = writeln!(
                text,
                "rego policy: {} ({})",
                package.name,
                package.rules.join(", ")
            );
        }
        for warning in unjudged_match_kinds(config) {
            let _ = writeln!(text, "warning: {warning}");
        }
    }
    let _ = writeln!(
        text,
        "mode: {}, onError: {:?}, {} policies in force ({} image policies), {} trusted registry pattern(s)",
        config.mode.as_str(),
        config.on_error,
        enabled_rules,
        config.image_policies.len(),
        config.trusted_registries.len()
    );
    for warning in config.warnings() {
        let _ = writeln!(text, "warning: {warning}");
    }
    // Expired waivers stay in the file but no longer apply: say so, loudly.
    for exception in engine.expired_exceptions() {
        let _ = writeln!(
            text,
            "expired exception (no longer applied): {} (owner {}, expired {})",
            exception.name, exception.owner, exception.expires
        );
    }
    let now = time::OffsetDateTime::now_utc();
    for policy in &config.image_policies {
        for ignored in policy
            .vulnerabilities
            .iter()
            .flat_map(|v| &v.ignore)
            .filter(|i| !i.is_active(now))
        {
            let _ = writeln!(
                text,
                "expired vulnerability ignore entry (no longer applied): imagePolicy {:?}: {} (expired {})",
                policy.name,
                ignored.id,
                ignored
                    .expires
                    .as_ref()
                    .map(|e| e.written.as_str())
                    .unwrap_or("")
            );
        }
    }
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(CliError::Output)?;
    Ok(ExitCode::SUCCESS)
}

/// `match.kinds` entries of Rego policies that name a kind portcullis never evaluates: only
/// pod-bearing kinds (the built-in ones and `workloads.custom[]`) reach policies, so such an
/// entry matches nothing (a Gatekeeper constraint written for `Service` or `Namespace`, say).
fn unjudged_match_kinds(config: &crate::config::Config) -> Vec<String> {
    let judged = |kind: &str| {
        ["", "apps", "batch"]
            .iter()
            .any(|group| crate::workload::pod_spec_path(group, kind).is_some())
            || config.workloads.custom.iter().any(|c| c.kind == kind)
    };
    let mut warnings = Vec::new();
    for (index, policy) in config.policies.rego.policies.iter().enumerate() {
        for (at, kind) in policy.matches.kinds.iter().enumerate() {
            if !judged(kind) {
                warnings.push(format!(
                    "policies.rego.policies[{index}].match.kinds[{at}]: policy {} matches kind {kind:?}, \
                     which portcullis never evaluates (only kinds that carry pods reach policies: \
                     Pod, PodTemplate, ReplicationController, ReplicaSet, Deployment, StatefulSet, \
                     DaemonSet, Job, CronJob and workloads.custom[] kinds)",
                    policy.package
                ));
            }
        }
    }
    warnings
}
