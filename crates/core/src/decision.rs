//! The decision core: findings × modes → one verdict (allowed, status message, warnings,
//! audit annotations). Pure: the same findings always give the same verdict.
//!
//! * any `enforce` finding → denied, status code 403, one message line per finding;
//! * otherwise any `warn` finding → allowed, one warning per finding (each ≤ 120 characters);
//! * otherwise any `audit` finding → allowed, findings only in `auditAnnotations` and logs.
//!
//! Every verdict carries the identity of the configuration (and policies) that made it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{Mode, OnError};
use crate::policy::{Finding, Subject};
use crate::subject::ReviewSubject;
use crate::workload::ContainerKind;

/// The Kubernetes API server shows at most this many characters per warning.
pub const MAX_WARNING_CHARS: usize = 120;
/// Audit annotation values are stored in audit logs: bound what one review can add.
const MAX_AUDIT_FINDINGS: usize = 50;
/// HTTP status code the API server returns to the client for a denial.
pub const DENIED_STATUS_CODE: u16 = 403;

/// Audit annotation keys (the API server prefixes them with the webhook name).
pub mod annotation {
    pub const VERDICT: &str = "verdict";
    pub const CONFIG_IDENTITY: &str = "config-identity";
    pub const FINDINGS: &str = "findings";
    pub const ERROR: &str = "error";
    pub const WAIVERS: &str = "waivers";
}

/// "sha256:" + 12 hex characters is enough to tell configurations apart in a message; the full
/// identity is in the audit annotations.
fn short_identity(identity: &str) -> &str {
    identity.get(..19).unwrap_or(identity)
}

/// The overall outcome, used for metrics labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// No findings.
    Allowed,
    /// Allowed; only audit-mode findings.
    Audited,
    /// Allowed with warnings.
    Warned,
    /// Denied by policy.
    Denied,
    /// Evidence could not be gathered; denied by `onError: deny`.
    ErrorDenied,
    /// Evidence could not be gathered; allowed by `onError: allow`.
    ErrorAllowed,
    /// Not judged: namespace excluded, operation or kind not evaluated.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Audited => "audited",
            Outcome::Warned => "warned",
            Outcome::Denied => "denied",
            Outcome::ErrorDenied => "error-denied",
            Outcome::ErrorAllowed => "error-allowed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// What portcullis answers for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub outcome: Outcome,
    /// Set when denied: the HTTP status the API server gives its client.
    pub status_code: Option<u16>,
    /// Set when denied: the full explanation.
    pub message: Option<String>,
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
    /// Every finding, whatever its mode (for `check`, logs and reports).
    pub findings: Vec<Finding>,
}

/// A finding as recorded in the `findings` audit annotation.
#[derive(Serialize)]
struct AuditFinding<'a> {
    rule: &'a str,
    mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    /// The image volume's name, for findings about an image volume (then `container` is
    /// absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    found: &'a str,
    /// Warnings and audit findings admit the object, so this is the one place the fix is
    /// recorded for them.
    fix: &'a str,
}

impl Verdict {
    /// A request that was not judged (excluded namespace, DELETE, a kind without pods).
    pub fn skipped(identity: &str) -> Self {
        Self::allowed_with(Outcome::Skipped, identity, Vec::new(), Vec::new())
    }

    /// Combines findings into a verdict.
    pub fn decide(subject: &ReviewSubject, identity: &str, findings: Vec<Finding>) -> Self {
        let enforced: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.mode == Mode::Enforce)
            .collect();
        if !enforced.is_empty() {
            let mut message = format!(
                "portcullis denied {} (config {}): {} problem(s)",
                subject.describe(),
                short_identity(identity),
                enforced.len()
            );
            for finding in &enforced {
                let _ = write!(message, "\n- {}", describe(finding));
            }
            let mut verdict = Self {
                allowed: false,
                outcome: Outcome::Denied,
                status_code: Some(DENIED_STATUS_CODE),
                message: Some(message),
                warnings: warnings_for(&findings),
                audit_annotations: BTreeMap::new(),
                findings: Vec::new(),
            };
            verdict.annotate(identity, &findings);
            verdict.findings = findings;
            return verdict;
        }
        let warnings = warnings_for(&findings);
        let outcome = if !warnings.is_empty() {
            Outcome::Warned
        } else if findings.is_empty() {
            Outcome::Allowed
        } else {
            Outcome::Audited
        };
        Self::allowed_with(outcome, identity, warnings, findings)
    }

    /// The configured outcome when evidence could not be gathered in time.
    pub fn on_error(
        subject: &ReviewSubject,
        identity: &str,
        on_error: OnError,
        reason: &str,
    ) -> Self {
        let mut verdict = match on_error {
            OnError::Deny => Self {
                allowed: false,
                outcome: Outcome::ErrorDenied,
                status_code: Some(DENIED_STATUS_CODE),
                message: Some(format!(
                    "portcullis denied {} (config {}): could not verify it: {reason}; \
                     onError is deny, so nothing unverified is admitted. Fix the cause \
                     (registry reachable, deadline long enough) and retry",
                    subject.describe(),
                    short_identity(identity),
                )),
                warnings: Vec::new(),
                audit_annotations: BTreeMap::new(),
                findings: Vec::new(),
            },
            OnError::Allow => Self {
                allowed: true,
                outcome: Outcome::ErrorAllowed,
                status_code: None,
                message: None,
                warnings: vec![truncate(
                    &format!("portcullis could not verify; allowed by onError: {reason}"),
                    MAX_WARNING_CHARS,
                )],
                audit_annotations: BTreeMap::new(),
                findings: Vec::new(),
            },
        };
        verdict.annotate(identity, &[]);
        verdict
            .audit_annotations
            .insert(annotation::ERROR.into(), reason.to_owned());
        verdict
    }

    /// Records findings that exceptions waived: one warning each, and the `waivers` annotation.
    pub fn with_waivers(mut self, waivers: &[crate::exceptions::Waiver]) -> Self {
        if waivers.is_empty() {
            return self;
        }
        for waiver in waivers {
            let image = match &waiver.finding.subject {
                Subject::Container { image, .. } => image.as_str(),
                Subject::Pod => "pod",
            };
            self.warnings.push(truncate(
                &format!(
                    "[{}] waived for {image} by exception {} ({}, until {})",
                    waiver.finding.rule, waiver.exception, waiver.owner, waiver.expires
                ),
                MAX_WARNING_CHARS,
            ));
        }
        let recorded: Vec<serde_json::Value> = waivers
            .iter()
            .take(MAX_AUDIT_FINDINGS)
            .map(|w| {
                serde_json::json!({
                    "exception": w.exception,
                    "owner": w.owner,
                    "expires": w.expires,
                    "rule": w.finding.rule,
                    "subject": w.finding.subject,
                    "found": w.finding.found,
                })
            })
            .collect();
        self.audit_annotations.insert(
            annotation::WAIVERS.into(),
            serde_json::Value::Array(recorded).to_string(),
        );
        self
    }

    /// Adds warnings for evidence that could not be gathered but was waved through by
    /// `onError: allow`.
    /// Adds informational warnings from evidence gathering (e.g. a stale tag resolution was
    /// used because the registry failed). They change nothing about the outcome.
    pub fn with_notes(mut self, notes: &[String]) -> Self {
        for note in notes {
            self.warnings
                .push(truncate(&format!("portcullis: {note}"), MAX_WARNING_CHARS));
        }
        self
    }

    pub fn with_error_warnings(mut self, reasons: &[String]) -> Self {
        if reasons.is_empty() {
            return self;
        }
        for reason in reasons {
            self.warnings.push(truncate(
                &format!("portcullis: unverified, allowed by onError: {reason}"),
                MAX_WARNING_CHARS,
            ));
        }
        if self.allowed {
            self.outcome = Outcome::ErrorAllowed;
        }
        self.audit_annotations
            .insert(annotation::ERROR.into(), reasons.join("; "));
        self.audit_annotations
            .insert(annotation::VERDICT.into(), self.outcome.as_str().to_owned());
        self
    }

    fn allowed_with(
        outcome: Outcome,
        identity: &str,
        warnings: Vec<String>,
        findings: Vec<Finding>,
    ) -> Self {
        let mut verdict = Self {
            allowed: true,
            outcome,
            status_code: None,
            message: None,
            warnings,
            audit_annotations: BTreeMap::new(),
            findings: Vec::new(),
        };
        verdict.annotate(identity, &findings);
        verdict.findings = findings;
        verdict
    }

    fn annotate(&mut self, identity: &str, findings: &[Finding]) {
        self.audit_annotations
            .insert(annotation::VERDICT.into(), self.outcome.as_str().to_owned());
        self.audit_annotations
            .insert(annotation::CONFIG_IDENTITY.into(), identity.to_owned());
        if !findings.is_empty() {
            let recorded: Vec<AuditFinding<'_>> = findings
                .iter()
                .take(MAX_AUDIT_FINDINGS)
                .map(|f| {
                    let (container, volume, image) = match &f.subject {
                        Subject::Container {
                            container,
                            kind: ContainerKind::ImageVolume,
                            image,
                        } => (None, Some(container.as_str()), Some(image.as_str())),
                        Subject::Container {
                            container, image, ..
                        } => (Some(container.as_str()), None, Some(image.as_str())),
                        Subject::Pod => (None, None, None),
                    };
                    AuditFinding {
                        rule: &f.rule,
                        mode: f.mode,
                        container,
                        volume,
                        image,
                        found: &f.found,
                        fix: &f.fix,
                    }
                })
                .collect();
            // Serialising plain strings and enums cannot fail; an empty value is harmless.
            let json = serde_json::to_string(&recorded).unwrap_or_default();
            self.audit_annotations
                .insert(annotation::FINDINGS.into(), json);
        }
    }
}

/// One message line: image, container, rule, what was found, the fix.
pub fn describe(finding: &Finding) -> String {
    match &finding.subject {
        Subject::Container {
            container,
            kind,
            image,
        } => format!(
            "image {image:?} in {} {container:?}: rule {}: {}; fix: {}",
            kind.label(),
            finding.rule,
            finding.found,
            finding.fix
        ),
        Subject::Pod => format!(
            "pod spec: rule {}: {}; fix: {}",
            finding.rule, finding.found, finding.fix
        ),
    }
}

fn warnings_for(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.mode == Mode::Warn)
        .map(|f| {
            let text = match &f.subject {
                Subject::Container {
                    container,
                    kind: ContainerKind::ImageVolume,
                    image,
                } => format!("[{}] volume {container} ({image}): {}", f.rule, f.found),
                Subject::Container {
                    container, image, ..
                } => format!("[{}] {container} ({image}): {}", f.rule, f.found),
                Subject::Pod => format!("[{}] pod: {}", f.rule, f.found),
            };
            truncate(&text, MAX_WARNING_CHARS)
        })
        .collect()
}

/// Shortens `text` to at most `max` characters, marking the cut with an ellipsis.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: &str = "sha256:0123456789abcdef0123456789abcdef";

    fn subject() -> ReviewSubject {
        ReviewSubject::new("CREATE", "Deployment", "team-a", "web")
    }

    fn finding(rule: &str, mode: Mode) -> Finding {
        Finding {
            rule: rule.into(),
            subject: Subject::Container {
                container: "app".into(),
                kind: ContainerKind::InitContainer,
                image: "nginx:latest".into(),
            },
            found: "tag \"latest\" is mutable".into(),
            fix: "pin a version".into(),
            mode,
        }
    }

    #[test]
    fn an_image_volume_finding_names_the_volume_in_message_warning_and_annotation() {
        let volume = |mode| Finding {
            subject: Subject::Container {
                container: "data".into(),
                kind: ContainerKind::ImageVolume,
                image: "docker.io/evil/payload:1".into(),
            },
            ..finding("trusted-registry", mode)
        };
        let denied = Verdict::decide(&subject(), IDENTITY, vec![volume(Mode::Enforce)]);
        let message = denied.message.unwrap_or_default();
        assert!(
            message.contains(
                "- image \"docker.io/evil/payload:1\" in image volume \"data\": rule trusted-registry"
            ),
            "{message}"
        );
        let recorded: serde_json::Value =
            serde_json::from_str(&denied.audit_annotations["findings"]).unwrap_or_default();
        assert_eq!(recorded[0]["volume"], "data", "{recorded}");
        assert!(recorded[0].get("container").is_none(), "{recorded}");
        let warned = Verdict::decide(&subject(), IDENTITY, vec![volume(Mode::Warn)]);
        assert!(
            warned.warnings[0]
                .starts_with("[trusted-registry] volume data (docker.io/evil/payload:1)"),
            "{:?}",
            warned.warnings
        );
    }

    #[test]
    fn no_findings_allow_and_record_the_identity() {
        let verdict = Verdict::decide(&subject(), IDENTITY, Vec::new());
        assert!(verdict.allowed);
        assert_eq!(verdict.outcome, Outcome::Allowed);
        assert_eq!(verdict.audit_annotations["config-identity"], IDENTITY);
        assert!(!verdict.audit_annotations.contains_key("findings"));
    }

    #[test]
    fn one_enforced_finding_denies_with_a_line_naming_image_container_rule_and_fix() {
        let verdict = Verdict::decide(
            &subject(),
            IDENTITY,
            vec![
                finding("no-latest-tag", Mode::Enforce),
                finding("privileged", Mode::Warn),
            ],
        );
        assert!(!verdict.allowed);
        assert_eq!(verdict.status_code, Some(403));
        let message = verdict.message.unwrap_or_default();
        assert!(message.starts_with(
            "portcullis denied Deployment team-a/web (config sha256:0123456789ab): 1 problem(s)"
        ));
        assert!(message.contains(
            "\n- image \"nginx:latest\" in initContainer \"app\": rule no-latest-tag: \
             tag \"latest\" is mutable; fix: pin a version"
        ));
        // The warn-mode finding still reaches the user as a warning.
        assert_eq!(verdict.warnings.len(), 1);
    }

    #[test]
    fn warn_findings_allow_with_bounded_warnings() {
        let mut long = finding("no-latest-tag", Mode::Warn);
        long.found = "x".repeat(500);
        let verdict = Verdict::decide(&subject(), IDENTITY, vec![long]);
        assert!(verdict.allowed);
        assert_eq!(verdict.outcome, Outcome::Warned);
        assert_eq!(verdict.warnings[0].chars().count(), MAX_WARNING_CHARS);
        assert!(verdict.warnings[0].ends_with('…'));
    }

    #[test]
    fn audit_findings_allow_silently_but_are_annotated() {
        let verdict = Verdict::decide(
            &subject(),
            IDENTITY,
            vec![finding("privileged", Mode::Audit)],
        );
        assert!(verdict.allowed);
        assert!(verdict.warnings.is_empty());
        assert_eq!(verdict.outcome, Outcome::Audited);
        let recorded: serde_json::Value =
            serde_json::from_str(&verdict.audit_annotations["findings"]).unwrap_or_default();
        assert_eq!(recorded[0]["rule"], "privileged");
        assert_eq!(recorded[0]["mode"], "audit");
        assert_eq!(recorded[0]["container"], "app");
    }

    #[test]
    fn on_error_deny_is_a_denial_and_allow_is_a_warning() {
        let denied = Verdict::on_error(
            &subject(),
            IDENTITY,
            OnError::Deny,
            "registry 127.0.0.1:1 refused",
        );
        assert!(!denied.allowed);
        assert_eq!(denied.outcome, Outcome::ErrorDenied);
        assert!(
            denied
                .message
                .unwrap_or_default()
                .contains("registry 127.0.0.1:1 refused")
        );
        let allowed = Verdict::on_error(&subject(), IDENTITY, OnError::Allow, "registry down");
        assert!(allowed.allowed);
        assert_eq!(allowed.outcome, Outcome::ErrorAllowed);
        assert!(allowed.warnings[0].contains("registry down"));
    }

    #[test]
    fn audit_annotation_keys_are_valid_qualified_names() {
        let verdict = Verdict::decide(
            &subject(),
            IDENTITY,
            vec![finding("privileged", Mode::Audit)],
        )
        .with_error_warnings(&["x".into()]);
        for key in verdict.audit_annotations.keys() {
            assert!(key.len() <= 63 && !key.is_empty());
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            );
        }
    }
}
