//! Image lifecycle rules that need no registry: deprecated images, warned before their sunset
//! date and judged in the default mode after it, always naming the replacement.

use serde::{Deserialize, Serialize};

use crate::config::Mode;
use crate::reference::{GlobError, ImageGlobs};
use crate::timeutil::Instant;

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
        for entry in input.images {
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
