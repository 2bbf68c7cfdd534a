//! `registries` (how to reach each registry, with which credentials) and `trustedRegistries`,
//! and their checks.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::reference::{GlobError, ImageGlobs};

/// How to reach one registry (used by the registry evidence layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrySettings {
    pub host: String,
    /// Plain HTTP. Only for loopback development registries.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Credentials for this registry; they take precedence over pull secrets and the docker
    /// config file.
    #[serde(default)]
    pub credentials: Option<RegistryCredentials>,
}

/// Basic-auth credentials for one registry (the registry's bearer-token challenge, if any, is
/// answered with them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryCredentials {
    pub username: String,
    /// The password inline; prefer `passwordFile` (a mounted Secret).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// Checks of `trustedRegistries`: each entry is an image glob.
pub(super) fn validate_trusted_registries(patterns: &[String], problems: &mut Vec<Problem>) {
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    for (i, pattern) in patterns.iter().enumerate() {
        if let Err(GlobError { message, .. }) = ImageGlobs::new([pattern.as_str()]) {
            problem(format!("trustedRegistries[{i}]"), message);
        }
    }
}

/// Checks of `registries`: hosts (each listed once), credentials, CA files.
pub(super) fn validate_registries(registries: &[RegistrySettings], problems: &mut Vec<Problem>) {
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    let mut hosts = BTreeSet::new();
    for (i, registry) in registries.iter().enumerate() {
        let key = format!("registries[{i}]");
        if registry.host.is_empty() || registry.host.contains('/') {
            problem(
                format!("{key}.host"),
                format!(
                    "{:?} must be a registry host with optional port, without scheme or path",
                    registry.host
                ),
            );
        }
        if !hosts.insert(registry.host.as_str()) {
            problem(
                format!("{key}.host"),
                format!("{:?} is listed twice", registry.host),
            );
        }
        if let Some(credentials) = &registry.credentials {
            match (&credentials.password, &credentials.password_file) {
                (Some(_), Some(_)) | (None, None) => problem(
                    format!("{key}.credentials"),
                    "give exactly one of `password` or `passwordFile`".into(),
                ),
                (None, Some(path)) if !path.is_file() => problem(
                    format!("{key}.credentials.passwordFile"),
                    format!("{} does not exist or is not a file", path.display()),
                ),
                _ => {}
            }
        }
        if let Some(ca) = &registry.ca_file {
            if registry.insecure {
                problem(
                    format!("{key}.caFile"),
                    "caFile makes no sense with insecure: true (plain HTTP)".into(),
                );
            }
            if !ca.is_file() {
                problem(
                    format!("{key}.caFile"),
                    format!("{} does not exist or is not a file", ca.display()),
                );
            }
        }
    }
}
