//! Image lifecycle rules: deprecated images (warned before their sunset date, judged in the
//! default mode after it, always naming the replacement), the maximum image age (build time
//! from verified SLSA provenance, else the image config), and base image freshness (the base
//! tag moved since the build). Pure: the registry facts arrive in [`LifecycleFacts`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::Mode;
use crate::reference::{GlobError, ImageGlobs};
use crate::timeutil::{HumanDuration, Instant, describe_age};

use super::{Finding, Policy, PolicyError, PolicyInput};

pub const RULE_DEPRECATED_IMAGE: &str = "deprecated-image";

/// `deprecatedImages[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeprecatedImage {
    pub images: Vec<String>,
    pub reason: String,
    pub replacement: String,
    /// Before this instant: a warning. From it on: a finding in the default mode.
    pub sunset: Instant,
}

#[derive(Debug)]
pub struct DeprecatedImagesRule {
    entries: Vec<(DeprecatedImage, ImageGlobs)>,
    mode_after_sunset: Mode,
}

impl DeprecatedImagesRule {
    pub fn new(entries: &[DeprecatedImage], mode_after_sunset: Mode) -> Result<Self, GlobError> {
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
            mode_after_sunset,
        })
    }
}

impl Policy for DeprecatedImagesRule {
    fn name(&self) -> &str {
        RULE_DEPRECATED_IMAGE
    }

    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError> {
        let mut findings = Vec::new();
        for entry in &input.subject.images {
            let Ok(image) = &entry.reference else {
                continue;
            };
            let Some((deprecated, _)) = self.entries.iter().find(|(_, globs)| globs.matches(image))
            else {
                continue;
            };
            let past = input.now >= deprecated.sunset.at;
            let (mode, found) = if past {
                (
                    self.mode_after_sunset,
                    format!(
                        "deprecated ({}) and past its sunset on {}",
                        deprecated.reason, deprecated.sunset
                    ),
                )
            } else {
                (
                    Mode::Warn,
                    format!(
                        "deprecated ({}); denied from {}",
                        deprecated.reason, deprecated.sunset
                    ),
                )
            };
            findings.push(Finding {
                rule: RULE_DEPRECATED_IMAGE.into(),
                subject: entry.subject(),
                found,
                fix: format!("move to {}", deprecated.replacement),
                mode,
            });
        }
        Ok(findings)
    }
}

pub const RULE_IMAGE_AGE: &str = "image-age";
pub const RULE_BASE_IMAGE: &str = "base-image-outdated";

/// SLSA provenance predicate types whose build time portcullis reads.
pub const SLSA_PROVENANCE_V02: &str = "https://slsa.dev/provenance/v0.2";
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

/// Lifecycle facts about one image, gathered with its registry evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleFacts {
    /// When the image was built, and where that time comes from.
    pub built: Option<BuildTime>,
    /// What became of the base image it declares.
    pub base: BaseImageState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTime {
    pub at: OffsetDateTime,
    pub source: BuildTimeSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildTimeSource {
    /// A verified SLSA provenance attestation of this predicate type.
    Provenance { predicate_type: String },
    /// The image config's `created` field (unsigned: whoever built the image wrote it).
    ImageConfig,
}

impl std::fmt::Display for BuildTimeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildTimeSource::Provenance { predicate_type } => {
                write!(f, "verified SLSA provenance {predicate_type}")
            }
            BuildTimeSource::ImageConfig => f.write_str("the image config's created field"),
        }
    }
}

/// The base image an image declares with `org.opencontainers.image.base.name` / `.base.digest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum BaseImageState {
    /// No image policy asked for base freshness.
    #[default]
    NotChecked,
    /// The image carries no base annotations: nothing to compare.
    NotAnnotated,
    /// The base tag still names the digest the image was built on.
    Current { name: String, digest: String },
    /// The base tag moved since the build.
    #[serde(rename_all = "camelCase")]
    Moved {
        name: String,
        built_on: String,
        current: String,
    },
    /// The base tag could not be resolved now.
    Unresolved { name: String, message: String },
}

/// The build time: from a verified SLSA provenance when one carries it (v1
/// `runDetails.metadata.finishedOn`/`startedOn`, v0.2 `metadata.buildFinishedOn`/
/// `buildStartedOn`), else the image config's `created`. `provenance` yields the predicate type
/// and predicate of each verified attestation.
pub fn build_time<'a>(
    provenance: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
    created: Option<OffsetDateTime>,
) -> Option<BuildTime> {
    let from_provenance = provenance
        .into_iter()
        .filter_map(|(predicate_type, predicate)| {
            let metadata = match predicate_type {
                SLSA_PROVENANCE_V1 => predicate.pointer("/runDetails/metadata")?,
                SLSA_PROVENANCE_V02 => predicate.pointer("/metadata")?,
                _ => return None,
            };
            let (finished, started) = match predicate_type {
                SLSA_PROVENANCE_V1 => ("finishedOn", "startedOn"),
                _ => ("buildFinishedOn", "buildStartedOn"),
            };
            let at = [finished, started]
                .iter()
                .filter_map(|key| metadata.get(key)?.as_str())
                .find_map(|text| {
                    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
                })?;
            Some(BuildTime {
                at,
                source: BuildTimeSource::Provenance {
                    predicate_type: predicate_type.to_owned(),
                },
            })
        })
        // Several provenances: the newest build time is the one that describes this digest's
        // last rebuild.
        .max_by_key(|built| built.at);
    from_provenance.or(created.map(|at| BuildTime {
        at,
        source: BuildTimeSource::ImageConfig,
    }))
}

/// Reproducible builds (ko, Bazel, Nix, `SOURCE_DATE_EPOCH=0`) write a placeholder `created`
/// near the Unix epoch; it says nothing about the build's age.
fn is_placeholder(built: &BuildTime) -> bool {
    built.source == BuildTimeSource::ImageConfig && built.at.year() < 1990
}

/// `imagePolicies[].maxImageAge`: an image older than this is a finding.
#[derive(Debug)]
pub struct ImageAgeRule {
    policy_name: String,
    globs: ImageGlobs,
    max_age: HumanDuration,
    mode: Mode,
}

impl ImageAgeRule {
    pub fn new(policy_name: &str, globs: ImageGlobs, max_age: HumanDuration, mode: Mode) -> Self {
        Self {
            policy_name: policy_name.to_owned(),
            globs,
            max_age,
            mode,
        }
    }
}

impl Policy for ImageAgeRule {
    fn name(&self) -> &str {
        RULE_IMAGE_AGE
    }

    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError> {
        let mut findings = Vec::new();
        let provenance_fix = "attach SLSA provenance to the image (cosign attest --type slsaprovenance1) \
                              or build it with a real created time";
        for entry in &input.subject.images {
            let Ok(image) = &entry.reference else {
                continue;
            };
            // Evidence that could not be gathered is judged by onError, not here.
            if !self.globs.matches(image) || !matches!(entry.evidence, Some(Ok(_))) {
                continue;
            }
            let (found, fix) = match &entry.lifecycle.built {
                None => (
                    format!(
                        "build time unknown: no created field and no verified SLSA provenance \
                         (imagePolicy {:?} has maxImageAge {})",
                        self.policy_name, self.max_age
                    ),
                    provenance_fix.to_owned(),
                ),
                Some(built) if is_placeholder(built) => (
                    format!(
                        "build time unknown: created is the placeholder {} (a reproducible build) \
                         and no verified SLSA provenance (maxImageAge {})",
                        built.at.date(),
                        self.max_age
                    ),
                    provenance_fix.to_owned(),
                ),
                Some(built) => {
                    let age = input.now - built.at;
                    if age
                        <= time::Duration::try_from(self.max_age.0).unwrap_or(time::Duration::MAX)
                    {
                        continue;
                    }
                    (
                        format!(
                            "built {} ago on {} (from {}), older than maxImageAge {} of \
                             imagePolicy {:?}",
                            describe_age(age),
                            built.at.date(),
                            built.source,
                            self.max_age,
                            self.policy_name
                        ),
                        format!(
                            "rebuild {} to pick up current base image and package fixes, then \
                             deploy the new digest",
                            image.repository_path()
                        ),
                    )
                }
            };
            findings.push(Finding {
                rule: RULE_IMAGE_AGE.into(),
                subject: entry.subject(),
                found,
                fix,
                mode: self.mode,
            });
        }
        Ok(findings)
    }
}

/// `imagePolicies[].baseImageFreshness`: an image whose declared base tag has moved since the
/// build should be rebuilt on the new base (warn by default).
#[derive(Debug)]
pub struct BaseImageRule {
    globs: ImageGlobs,
    mode: Mode,
}

impl BaseImageRule {
    pub fn new(globs: ImageGlobs, mode: Mode) -> Self {
        Self { globs, mode }
    }
}

impl Policy for BaseImageRule {
    fn name(&self) -> &str {
        RULE_BASE_IMAGE
    }

    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError> {
        let mut findings = Vec::new();
        for entry in &input.subject.images {
            let Ok(image) = &entry.reference else {
                continue;
            };
            if !self.globs.matches(image) {
                continue;
            }
            let (found, fix) = match &entry.lifecycle.base {
                BaseImageState::Moved {
                    name,
                    built_on,
                    current,
                } => (
                    format!("built on {name}@{built_on}, but {name} now points to {current}"),
                    format!("rebuild on {name}@{current}"),
                ),
                BaseImageState::Unresolved { name, message } => (
                    format!("cannot check whether base image {name} moved: {message}"),
                    format!("make {name} resolvable from portcullis (registries[] settings)"),
                ),
                BaseImageState::NotChecked
                | BaseImageState::NotAnnotated
                | BaseImageState::Current { .. } => continue,
            };
            findings.push(Finding {
                rule: RULE_BASE_IMAGE.into(),
                subject: entry.subject(),
                found,
                fix,
                mode: self.mode,
            });
        }
        Ok(findings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{ImageEvidence, SignatureEvidence};
    use crate::policy::{ImageEntry, ScanState};
    use crate::reference::ImageRef;
    use crate::workload::ContainerKind;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 00:00 UTC);

    fn entry(lifecycle: LifecycleFacts) -> ImageEntry {
        ImageEntry {
            container: "app".into(),
            container_kind: ContainerKind::Container,
            reference: ImageRef::parse("registry.example/team/app:1.0"),
            evidence: Some(Ok(std::sync::Arc::new(ImageEvidence::signatures_only(
                Some("sha256:aa".into()),
                SignatureEvidence::Unverified {
                    reason: "not asked".into(),
                },
            )))),
            scan: ScanState::NotRequested,
            lifecycle,
        }
    }

    fn judge(policy: &dyn Policy, images: &[ImageEntry]) -> Vec<Finding> {
        let subject = crate::subject::ReviewSubject {
            images: images.to_vec(),
            ..crate::subject::ReviewSubject::new("CREATE", "Pod", "team", "app")
        };
        let input = PolicyInput {
            subject: &subject,
            now: NOW,
            document: None,
        };
        policy.evaluate(&input).unwrap()
    }

    fn age_rule(max: &str) -> ImageAgeRule {
        ImageAgeRule::new(
            "team",
            ImageGlobs::new(["registry.example/**"]).unwrap(),
            HumanDuration(humantime::parse_duration(max).unwrap()),
            Mode::Enforce,
        )
    }

    fn built(at: OffsetDateTime, source: BuildTimeSource) -> LifecycleFacts {
        LifecycleFacts {
            built: Some(BuildTime { at, source }),
            base: BaseImageState::NotChecked,
        }
    }

    #[test]
    fn provenance_build_time_wins_over_the_image_config() {
        let v1 = json!({"runDetails": {"metadata": {"startedOn": "2026-10-01T00:00:00Z",
                                                    "finishedOn": "2026-10-01T00:10:00Z"}}});
        let v02 = json!({"metadata": {"buildStartedOn": "2026-09-01T00:00:00Z"}});
        let other = json!({"metadata": {"buildFinishedOn": "2026-11-30T00:00:00Z"}});
        let created = Some(datetime!(2026-11-15 00:00 UTC));
        let found = build_time(
            [
                (SLSA_PROVENANCE_V02, &v02),
                (SLSA_PROVENANCE_V1, &v1),
                ("https://cyclonedx.org/bom", &other),
            ],
            created,
        )
        .unwrap();
        assert_eq!(found.at, datetime!(2026-10-01 00:10 UTC));
        assert_eq!(
            found.source,
            BuildTimeSource::Provenance {
                predicate_type: SLSA_PROVENANCE_V1.into()
            }
        );
        let fallback = build_time([("https://cyclonedx.org/bom", &other)], created).unwrap();
        assert_eq!(fallback.source, BuildTimeSource::ImageConfig);
        assert_eq!(build_time([], None), None);
    }

    #[test]
    fn an_old_image_is_a_finding_that_says_where_the_build_time_came_from() {
        let rule = age_rule("90d");
        let fresh = entry(built(
            datetime!(2026-11-01 00:00 UTC),
            BuildTimeSource::ImageConfig,
        ));
        assert!(judge(&rule, &[fresh]).is_empty());

        let old_config = entry(built(
            datetime!(2026-01-01 00:00 UTC),
            BuildTimeSource::ImageConfig,
        ));
        let findings = judge(&rule, &[old_config]);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].rule, RULE_IMAGE_AGE);
        assert!(
            findings[0].found.contains("334 days")
                && findings[0].found.contains("image config's created"),
            "{}",
            findings[0].found
        );
        assert!(
            findings[0]
                .fix
                .contains("rebuild registry.example/team/app")
        );

        let old_provenance = entry(built(
            datetime!(2026-01-01 00:00 UTC),
            BuildTimeSource::Provenance {
                predicate_type: SLSA_PROVENANCE_V1.into(),
            },
        ));
        let findings = judge(&rule, &[old_provenance]);
        assert!(
            findings[0].found.contains("verified SLSA provenance"),
            "{}",
            findings[0].found
        );
    }

    #[test]
    fn unknown_and_placeholder_build_times_fail_closed() {
        let rule = age_rule("90d");
        let unknown = judge(&rule, &[entry(LifecycleFacts::default())]);
        assert!(unknown[0].found.contains("build time unknown"));
        let epoch = judge(
            &rule,
            &[entry(built(
                OffsetDateTime::UNIX_EPOCH,
                BuildTimeSource::ImageConfig,
            ))],
        );
        assert!(
            epoch[0].found.contains("placeholder 1970-01-01"),
            "{}",
            epoch[0].found
        );
        assert_eq!(epoch[0].mode, Mode::Enforce);
        // Evidence that failed is onError's business, not a second finding here.
        let mut failed = entry(LifecycleFacts::default());
        failed.evidence = None;
        assert!(judge(&rule, &[failed]).is_empty());
    }

    #[test]
    fn a_moved_base_names_the_digest_to_rebuild_on() {
        let rule = BaseImageRule::new(
            ImageGlobs::new(["registry.example/**"]).unwrap(),
            Mode::Warn,
        );
        let moved = entry(LifecycleFacts {
            built: None,
            base: BaseImageState::Moved {
                name: "registry.example/base:3".into(),
                built_on: "sha256:old".into(),
                current: "sha256:new".into(),
            },
        });
        let findings = judge(&rule, &[moved]);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].mode, Mode::Warn);
        assert_eq!(
            findings[0].fix,
            "rebuild on registry.example/base:3@sha256:new"
        );
        assert!(findings[0].found.contains("sha256:old"));

        for quiet in [
            BaseImageState::NotAnnotated,
            BaseImageState::NotChecked,
            BaseImageState::Current {
                name: "registry.example/base:3".into(),
                digest: "sha256:new".into(),
            },
        ] {
            let image = entry(LifecycleFacts {
                built: None,
                base: quiet,
            });
            assert!(judge(&rule, &[image]).is_empty());
        }
        let unresolved = entry(LifecycleFacts {
            built: None,
            base: BaseImageState::Unresolved {
                name: "registry.example/base:3".into(),
                message: "connection refused".into(),
            },
        });
        assert!(
            judge(&rule, &[unresolved])[0]
                .found
                .contains("connection refused")
        );
    }
}
