//! Time-bound exceptions (waivers): a named, owned, reasoned permission for some rules on some
//! images and/or namespaces until an expiry. Applied after every policy ran, so a waived
//! finding is still visible (warnings and `auditAnnotations`), never silently dropped; an
//! expired exception stops applying and is listed by `config validate`. Pure.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::Problem;
use crate::policy::{Finding, Subject};
use crate::reference::{GlobError, ImageGlobs, ImageRef};
use crate::timeutil::Instant;

/// `exceptions[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exception {
    pub name: String,
    /// Image globs; empty = any image (then `namespaces` must be given).
    #[serde(default)]
    pub images: Vec<String>,
    /// Namespaces; empty = any namespace (then `images` must be given).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Rule ids waived (`no-latest-tag`, `vulnerability`, …); `"*"` waives every rule except
    /// `image-reference` and `admission-request`, which no exception can waive.
    pub rules: Vec<String>,
    pub reason: String,
    pub owner: String,
    pub expires: Instant,
}

/// Rules no exception waives: an unparsable image or object cannot run at all.
const UNWAIVABLE: [&str; 2] = ["image-reference", "admission-request"];

impl Exception {
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        now < self.expires.at
    }

    /// Problems with this entry, with key paths under `key`.
    pub fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        let mut problem = |field: &str, message: String| {
            problems.push(Problem {
                key: format!("{key}.{field}"),
                message,
            })
        };
        if self.name.trim().is_empty() {
            problem("name", "must not be empty".into());
        }
        if self.images.is_empty() && self.namespaces.is_empty() {
            problem(
                "images",
                "give images and/or namespaces: an exception for everything is not an exception"
                    .into(),
            );
        }
        if self.rules.is_empty() {
            problem("rules", "must name at least one rule id (or \"*\")".into());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if UNWAIVABLE.contains(&rule.as_str()) {
                problem(&format!("rules[{i}]"), format!("{rule:?} cannot be waived"));
            }
        }
        if self.reason.trim().is_empty() {
            problem("reason", "must say why the exception exists".into());
        }
        if self.owner.trim().is_empty() {
            problem("owner", "must name who owns the exception".into());
        }
        for (i, pattern) in self.images.iter().enumerate() {
            if let Err(GlobError { message, .. }) = ImageGlobs::new([pattern.as_str()]) {
                problem(&format!("images[{i}]"), message);
            }
        }
    }
}

/// A finding an exception waived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiver {
    pub exception: String,
    pub owner: String,
    pub expires: String,
    pub reason: String,
    pub finding: Finding,
}

/// Exceptions ready to match.
#[derive(Debug, Default)]
pub struct Exceptions {
    entries: Vec<(Exception, ImageGlobs)>,
}

impl Exceptions {
    pub fn new(entries: &[Exception]) -> Result<Self, GlobError> {
        Ok(Self {
            entries: entries
                .iter()
                .map(|e| {
                    Ok((
                        e.clone(),
                        ImageGlobs::new(e.images.iter().map(String::as_str))?,
                    ))
                })
                .collect::<Result<_, GlobError>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Splits findings into those that stand and those an active exception waives.
    pub fn apply(
        &self,
        findings: Vec<Finding>,
        namespace: &str,
        now: OffsetDateTime,
    ) -> (Vec<Finding>, Vec<Waiver>) {
        if self.entries.is_empty() {
            return (findings, Vec::new());
        }
        let mut standing = Vec::new();
        let mut waived = Vec::new();
        for finding in findings {
            match self.waiver_for(&finding, namespace, now) {
                Some(exception) => waived.push(Waiver {
                    exception: exception.name.clone(),
                    owner: exception.owner.clone(),
                    expires: exception.expires.written.clone(),
                    reason: exception.reason.clone(),
                    finding,
                }),
                None => standing.push(finding),
            }
        }
        (standing, waived)
    }

    fn waiver_for(
        &self,
        finding: &Finding,
        namespace: &str,
        now: OffsetDateTime,
    ) -> Option<&Exception> {
        if UNWAIVABLE.contains(&finding.rule.as_str()) {
            return None;
        }
        self.entries
            .iter()
            .find(|(exception, globs)| {
                exception.is_active(now)
                    && exception
                        .rules
                        .iter()
                        .any(|rule| rule == "*" || *rule == finding.rule)
                    && (exception.namespaces.is_empty()
                        || exception.namespaces.iter().any(|n| n == namespace))
                    && (exception.images.is_empty() || subject_matches(&finding.subject, globs))
            })
            .map(|(exception, _)| exception)
    }

    /// Exceptions that no longer apply at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> Vec<&Exception> {
        self.entries
            .iter()
            .map(|(exception, _)| exception)
            .filter(|exception| !exception.is_active(now))
            .collect()
    }
}

fn subject_matches(subject: &Subject, globs: &ImageGlobs) -> bool {
    match subject {
        Subject::Container { image, .. } => {
            ImageRef::parse(image).is_ok_and(|image| globs.matches(&image))
        }
        // A pod-level finding is not about one image: only namespace-wide exceptions waive it.
        Subject::Pod => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::workload::ContainerKind;

    fn exception(yaml: &str) -> Exception {
        match serde_yaml_ng::from_str(yaml) {
            Ok(e) => e,
            Err(err) => unreachable!("{err}"),
        }
    }

    fn finding(rule: &str, image: &str) -> Finding {
        Finding {
            rule: rule.into(),
            subject: Subject::Container {
                container: "app".into(),
                kind: ContainerKind::Container,
                image: image.into(),
            },
            found: "x".into(),
            fix: "y".into(),
            mode: Mode::Enforce,
        }
    }

    fn at(text: &str) -> OffsetDateTime {
        crate::timeutil::parse_instant(text).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    const LEGACY: &str = "name: legacy-nginx\nimages: [\"docker.io/library/nginx:*\"]\n\
                          rules: [no-latest-tag]\nreason: migration\nowner: team-web\n\
                          expires: \"2026-12-31\"\n";

    #[test]
    fn an_active_exception_waives_only_its_rules_on_its_images() {
        let exceptions = Exceptions::new(&[exception(LEGACY)]).unwrap_or_default();
        let (standing, waived) = exceptions.apply(
            vec![
                finding("no-latest-tag", "nginx:latest"),
                finding("privileged", "nginx:latest"),
                finding("no-latest-tag", "busybox:latest"),
            ],
            "shop",
            at("2026-11-25"),
        );
        assert_eq!(waived.len(), 1);
        assert_eq!(waived[0].exception, "legacy-nginx");
        assert_eq!(waived[0].finding.rule, "no-latest-tag");
        assert_eq!(standing.len(), 2);
    }

    #[test]
    fn an_expired_exception_stops_applying_and_is_listed() {
        let exceptions = Exceptions::new(&[exception(LEGACY)]).unwrap_or_default();
        let (standing, waived) = exceptions.apply(
            vec![finding("no-latest-tag", "nginx:latest")],
            "shop",
            at("2026-12-31"),
        );
        assert!(waived.is_empty());
        assert_eq!(standing.len(), 1);
        assert_eq!(exceptions.expired(at("2027-01-01")).len(), 1);
        assert!(exceptions.expired(at("2026-12-30")).is_empty());
    }

    #[test]
    fn image_references_can_never_be_waived() {
        let wildcard = exception(
            "name: all\nnamespaces: [shop]\nrules: [\"*\"]\nreason: r\nowner: o\nexpires: \"2030-01-01\"\n",
        );
        let exceptions = Exceptions::new(&[wildcard]).unwrap_or_default();
        let (standing, waived) = exceptions.apply(
            vec![
                finding("image-reference", "x"),
                finding("privileged", "nginx"),
            ],
            "shop",
            at("2026-11-25"),
        );
        assert_eq!(standing.len(), 1);
        assert_eq!(standing[0].rule, "image-reference");
        assert_eq!(waived.len(), 1);
    }

    #[test]
    fn validation_names_every_missing_part() {
        let empty = exception(
            "name: \"\"\nrules: []\nreason: \"\"\nowner: \"\"\nexpires: \"2030-01-01\"\n",
        );
        let mut problems = Vec::new();
        empty.validate("exceptions[0]", &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "exceptions[0].name",
                "exceptions[0].images",
                "exceptions[0].rules",
                "exceptions[0].reason",
                "exceptions[0].owner"
            ]
        );
    }
}
