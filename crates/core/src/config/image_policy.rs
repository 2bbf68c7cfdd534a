//! `imagePolicies`: which images must be signed by whom, with which attestations, how old they
//! may be, their vulnerability rules and base-image freshness; and their checks.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Mode, Problem};
use crate::reference::{GlobError, ImageGlobs};

/// A first-class image rule matched by image reference glob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagePolicy {
    pub name: String,
    pub images: Vec<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub signatures: Option<SignatureRequirement>,
    /// Vulnerability rules judged on cached scan reports.
    #[serde(default)]
    pub vulnerabilities: Option<crate::policy::vulnerability::VulnerabilityPolicy>,
    /// An image built longer ago than this is a finding (build time from verified SLSA
    /// provenance, else the image config's `created`).
    #[serde(default)]
    pub max_image_age: Option<crate::timeutil::HumanDuration>,
    /// Judge whether the base image the image declares has moved since the build.
    #[serde(default)]
    pub base_image_freshness: Option<BaseImageFreshness>,
    /// This policy as canonical JSON, computed on first use: the evidence caches key compiled
    /// authorities by it, and a configuration is immutable once loaded, so it is serialised
    /// once per configuration instead of once per review.
    #[serde(skip)]
    fingerprint: PolicyFingerprint,
}

/// A lazily computed fingerprint that takes no part in equality (it is derived from the
/// fields that do).
#[derive(Clone, Default)]
struct PolicyFingerprint(std::sync::OnceLock<std::sync::Arc<str>>);

impl PartialEq for PolicyFingerprint {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for PolicyFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyFingerprint")
    }
}

/// `imagePolicies[].baseImageFreshness`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseImageFreshness {
    /// Default `warn`: a moved base is a reason to rebuild soon, rarely to stop a rollout.
    #[serde(default = "warn_mode")]
    pub mode: Mode,
}

fn warn_mode() -> Mode {
    Mode::Warn
}

/// `imagePolicies[].signatures`: who must have signed the digest. Any one of the keys or
/// keyless identities counts as one signer; `threshold` says how many distinct signers are
/// needed (default 1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignatureRequirement {
    #[serde(default)]
    pub keys: Vec<KeySource>,
    /// Keyless (Fulcio certificate) identities.
    #[serde(default)]
    pub keyless: Vec<KeylessIdentity>,
    /// Sigstore `TrustedRoot` JSON (Fulcio CAs, Rekor logs, CT logs, timestamp authorities).
    /// Without it the Sigstore public-good root embedded in portcullis is used.
    #[serde(default)]
    pub trusted_root: Option<PathBuf>,
    /// Refuse signatures that are not logged in a transparency log the root trusts (keys
    /// and keyless). Off by default: key signatures made with `--tlog-upload=false` and
    /// keyless bundles timestamped by a TSA only (GitHub's private repositories) count.
    #[serde(default)]
    pub require_transparency_log: bool,
    /// Notary Project signatures: a trust store of X.509 roots and trusted identities. Counts
    /// as one authority toward `threshold`, beside keys and keyless identities.
    #[serde(default)]
    pub notation: Option<crate::notation_trust::NotationRequirement>,
    /// In-toto predicate types that make a DSSE bundle a *signature* of the image rather than
    /// an attestation (default: Cosign 3's `https://sigstore.dev/cosign/sign/v1`).
    #[serde(default)]
    pub signature_predicate_types: Vec<String>,
    /// Distinct authorities that must have signed (default 1).
    #[serde(default)]
    pub threshold: Option<usize>,
    /// Repository globs a signature's `docker-reference` may name besides the image's own
    /// repository: for images pulled through a mirror of the repository that was signed.
    #[serde(default)]
    pub mirror_of: Vec<String>,
    /// In-toto attestations that must exist, signed by the same authorities.
    #[serde(default)]
    pub attestations: Vec<AttestationRequirement>,
}

/// A keyless signer: the OIDC issuer and subject in its Fulcio certificate, each given exactly
/// or as a regular expression (anchored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeylessIdentity {
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default, rename = "issuerRegExp")]
    pub issuer_regexp: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default, rename = "subjectRegExp")]
    pub subject_regexp: Option<String>,
    // Fulcio certificate extensions a CI identity carries (GitHub Actions and others); each
    // given must match, exactly or as an anchored regular expression (OIDs
    // `1.3.6.1.4.1.57264.1.*`).
    /// `.1.12`, e.g. `https://github.com/org/repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repository_uri: Option<String>,
    #[serde(
        default,
        rename = "sourceRepositoryUriRegExp",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_repository_uri_regexp: Option<String>,
    /// `.1.14`, e.g. `refs/tags/v1.2.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repository_ref: Option<String>,
    #[serde(
        default,
        rename = "sourceRepositoryRefRegExp",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_repository_ref_regexp: Option<String>,
    /// `.1.9`, the workflow that signed, e.g.
    /// `https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_signer_uri: Option<String>,
    #[serde(
        default,
        rename = "buildSignerUriRegExp",
        skip_serializing_if = "Option::is_none"
    )]
    pub build_signer_uri_regexp: Option<String>,
    /// `.1.18`, the workflow that ran (differs from the signer for reusable workflows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_config_uri: Option<String>,
    #[serde(
        default,
        rename = "buildConfigUriRegExp",
        skip_serializing_if = "Option::is_none"
    )]
    pub build_config_uri_regexp: Option<String>,
    /// `.1.11`, `github-hosted` or `self-hosted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_environment: Option<String>,
    /// `.1.20`, e.g. `push`, `release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_trigger: Option<String>,
}

/// One CI claim of a keyless identity: its name, exact value and regular expression (for
/// claims that take one).
pub type ClaimSetting<'a> = (&'static str, &'a Option<String>, Option<&'a Option<String>>);

impl KeylessIdentity {
    /// `(claim name, exact, regexp)` for each claim, in a fixed order.
    pub fn claims(&self) -> [ClaimSetting<'_>; 6] {
        [
            (
                "sourceRepositoryUri",
                &self.source_repository_uri,
                Some(&self.source_repository_uri_regexp),
            ),
            (
                "sourceRepositoryRef",
                &self.source_repository_ref,
                Some(&self.source_repository_ref_regexp),
            ),
            (
                "buildSignerUri",
                &self.build_signer_uri,
                Some(&self.build_signer_uri_regexp),
            ),
            (
                "buildConfigUri",
                &self.build_config_uri,
                Some(&self.build_config_uri_regexp),
            ),
            ("runnerEnvironment", &self.runner_environment, None),
            ("buildTrigger", &self.build_trigger, None),
        ]
    }
}

/// An attestation that must exist: a predicate type (a short name or the full URI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestationRequirement {
    /// `slsaprovenance02`, `slsaprovenance1`, `vuln`, `cyclonedx`, `spdx`, `spdxjson`, or a URI.
    pub predicate_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySource {
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub pem: Option<String>,
}

/// Checks of `imagePolicies`: names (each used once), then each policy.
pub(super) fn validate_image_policies(policies: &[ImagePolicy], problems: &mut Vec<Problem>) {
    let mut names = BTreeSet::new();
    for (i, policy) in policies.iter().enumerate() {
        let key = format!("imagePolicies[{i}]");
        if policy.name.is_empty() {
            problems.push(Problem {
                key: format!("{key}.name"),
                message: "must not be empty".into(),
            });
        } else if !names.insert(policy.name.as_str()) {
            problems.push(Problem {
                key: format!("{key}.name"),
                message: format!("{:?} is used by another image policy", policy.name),
            });
        }
        policy.validate(&key, problems);
    }
}

impl ImagePolicy {
    /// The policy as canonical JSON (every field, in declaration order), serialised once.
    /// Two policies with the same fingerprint demand exactly the same evidence.
    pub fn fingerprint(&self) -> std::sync::Arc<str> {
        self.fingerprint
            .0
            .get_or_init(|| {
                // Serialising plain data into a String cannot fail; an empty fingerprint
                // would only make every such policy share one cache entry, so say what it is.
                serde_json::to_string(self)
                    .unwrap_or_else(|err| format!("unserialisable policy {}: {err}", self.name))
                    .into()
            })
            .clone()
    }

    /// Checks of one image policy at `key` (`imagePolicies[i]`), but its name.
    fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        {
            let mut problem =
                |key: String, message: String| problems.push(Problem { key, message });
            if self.images.is_empty() {
                problem(
                    format!("{key}.images"),
                    "must list at least one image glob".into(),
                );
            }
            for (j, pattern) in self.images.iter().enumerate() {
                if let Err(GlobError { message, .. }) = ImageGlobs::new([pattern.as_str()]) {
                    problem(format!("{key}.images[{j}]"), message);
                }
            }
        }
        if let Some(signatures) = &self.signatures {
            signatures.validate(&format!("{key}.signatures"), problems);
        }
        if let Some(vulnerabilities) = &self.vulnerabilities {
            validate_vulnerabilities(&format!("{key}.vulnerabilities"), vulnerabilities, problems);
        }
    }
}

impl SignatureRequirement {
    /// Checks of `imagePolicies[].signatures` at `key`.
    fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        if self.keys.is_empty() && self.keyless.is_empty() && self.notation.is_none() {
            problem(
                format!("{key}.keys"),
                "must name at least one key, keyless identity or Notation trust store".into(),
            );
        }
        if let Some(notation) = &self.notation
            && let Err(err) = notation.compile()
        {
            problem(format!("{key}.notation"), err.to_string());
        }
        let authorities =
            self.keys.len() + self.keyless.len() + usize::from(self.notation.is_some());
        match self.threshold {
            Some(0) => problem(format!("{key}.threshold"), "must be at least 1".into()),
            Some(n) if n > authorities => problem(
                format!("{key}.threshold"),
                format!("{n} is more than the {authorities} authorities listed"),
            ),
            _ => {}
        }
        if let Some(path) = &self.trusted_root
            && !path.is_file()
        {
            problem(
                format!("{key}.trustedRoot"),
                format!("{} does not exist or is not a file", path.display()),
            );
        }
        for (i, identity) in self.keyless.iter().enumerate() {
            let at = format!("{key}.keyless[{i}]");
            for (name, exact, pattern) in [
                ("issuer", &identity.issuer, &identity.issuer_regexp),
                ("subject", &identity.subject, &identity.subject_regexp),
            ] {
                match (exact, pattern) {
                    (Some(_), Some(_)) | (None, None) => problem(
                        at.clone(),
                        format!("give exactly one of `{name}` or `{name}RegExp`"),
                    ),
                    (None, Some(pattern)) => {
                        if let Err(err) = regex::Regex::new(pattern) {
                            problem(format!("{at}.{name}RegExp"), err.to_string());
                        }
                    }
                    _ => {}
                }
            }
            for (name, exact, pattern) in identity.claims() {
                match (exact, pattern.and_then(Option::as_ref)) {
                    (Some(_), Some(_)) => problem(
                        format!("{at}.{name}"),
                        format!("give one of `{name}` or `{name}RegExp`, not both"),
                    ),
                    (None, Some(pattern)) => {
                        if let Err(err) = regex::Regex::new(pattern) {
                            problem(format!("{at}.{name}RegExp"), err.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        for (i, predicate) in self.signature_predicate_types.iter().enumerate() {
            if predicate.trim().is_empty() {
                problem(
                    format!("{key}.signaturePredicateTypes[{i}]"),
                    "must not be empty".into(),
                );
            }
        }
        for (i, pattern) in self.mirror_of.iter().enumerate() {
            if let Err(GlobError { message, .. }) = ImageGlobs::new([pattern.as_str()]) {
                problem(format!("{key}.mirrorOf[{i}]"), message);
            }
        }
        for (i, attestation) in self.attestations.iter().enumerate() {
            if attestation.predicate_type.trim().is_empty() {
                problem(
                    format!("{key}.attestations[{i}].predicateType"),
                    "must not be empty".into(),
                );
            }
        }
        for (j, source) in self.keys.iter().enumerate() {
            let key = format!("{key}.keys[{j}]");
            match (&source.path, &source.pem) {
                (Some(_), Some(_)) | (None, None) => {
                    problem(key, "give exactly one of `path` or `pem`".into())
                }
                (Some(path), None) if !path.is_file() => problem(
                    format!("{key}.path"),
                    format!("{} does not exist or is not a file", path.display()),
                ),
                (None, Some(pem)) if !pem.contains("-----BEGIN PUBLIC KEY-----") => problem(
                    format!("{key}.pem"),
                    "is not a PEM public key (-----BEGIN PUBLIC KEY-----)".into(),
                ),
                _ => {}
            }
        }
    }
}

/// Checks of `imagePolicies[].vulnerabilities` at `key`.
fn validate_vulnerabilities(
    key: &str,
    vulnerabilities: &crate::policy::vulnerability::VulnerabilityPolicy,
    problems: &mut Vec<Problem>,
) {
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    if vulnerabilities.deny_at_or_above.is_some() && vulnerabilities.max_severity.is_some() {
        problem(
            format!("{key}.maxSeverity"),
            "give only `denyAtOrAbove`: `maxSeverity` is its deprecated alias".into(),
        );
    }
    if vulnerabilities.max_listed == 0 {
        problem(format!("{key}.maxListed"), "must be at least 1".into());
    }
    let mut ids = BTreeSet::new();
    for (j, ignored) in vulnerabilities.ignore.iter().enumerate() {
        if ignored.id.trim().is_empty() {
            problem(format!("{key}.ignore[{j}].id"), "must not be empty".into());
        } else if !ids.insert(ignored.id.as_str()) {
            problem(
                format!("{key}.ignore[{j}].id"),
                format!("{:?} is listed twice", ignored.id),
            );
        }
        if ignored.reason.trim().is_empty() {
            problem(
                format!("{key}.ignore[{j}].reason"),
                "must say why the vulnerability is accepted".into(),
            );
        }
    }
}

/// Deprecated keys of `imagePolicies` that still work, one sentence each with its key path.
pub(super) fn deprecation_warnings(policies: &[ImagePolicy], warnings: &mut Vec<String>) {
    for (i, policy) in policies.iter().enumerate() {
        if let Some(severity) = policy.vulnerabilities.as_ref().and_then(|v| v.max_severity) {
            warnings.push(format!(
                "imagePolicies[{i}].vulnerabilities.maxSeverity is deprecated (it denies at the \
                 severity it names, it is not the highest allowed): write `denyAtOrAbove: {}`",
                severity.as_str()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LoadedConfig, problem_keys};
    use crate::scan::Severity;

    fn policy(vulnerabilities: &str) -> String {
        format!(
            "imagePolicies:\n  - name: team\n    images: [\"ghcr.io/acme/**\"]\n    \
             vulnerabilities: {vulnerabilities}\n"
        )
    }

    #[test]
    fn deny_at_or_above_sets_the_threshold_without_a_warning() {
        let loaded = LoadedConfig::from_yaml(&policy("{denyAtOrAbove: HIGH}"), "t").unwrap();
        let settings = loaded.config.image_policies[0].vulnerabilities.clone();
        assert_eq!(settings.and_then(|v| v.threshold()), Some(Severity::High));
        assert_eq!(loaded.config.warnings(), Vec::<String>::new());
    }

    #[test]
    fn max_severity_still_works_as_a_deprecated_alias_and_warns() {
        let loaded = LoadedConfig::from_yaml(&policy("{maxSeverity: CRITICAL}"), "t").unwrap();
        let settings = loaded.config.image_policies[0].vulnerabilities.clone();
        assert_eq!(
            settings.and_then(|v| v.threshold()),
            Some(Severity::Critical)
        );
        assert_eq!(
            loaded.config.warnings(),
            [
                "imagePolicies[0].vulnerabilities.maxSeverity is deprecated (it denies at the \
              severity it names, it is not the highest allowed): write `denyAtOrAbove: CRITICAL`"
            ]
        );
    }

    #[test]
    fn both_severity_keys_at_once_are_a_validation_error() {
        assert_eq!(
            problem_keys(&policy("{denyAtOrAbove: HIGH, maxSeverity: HIGH}")),
            ["imagePolicies[0].vulnerabilities.maxSeverity"]
        );
    }
}
