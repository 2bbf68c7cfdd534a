//! `pinning`: opt-in digest pinning of Pods by `POST /mutate`, and its check.

use serde::{Deserialize, Serialize};

use super::{ImagePolicy, Problem};

/// `pinning`: whether `POST /mutate` rewrites a Pod's verified images to
/// `repo[:tag]@sha256:<digest>` (docs/configuration.md, "Digest pinning"). Off by default:
/// rewriting what users wrote is a choice the cluster's owners make, not a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinningSettings {
    /// Pin images of Pods sent to `/mutate`. Off: `/mutate` answers allowed with no patch.
    #[serde(default)]
    pub enabled: bool,
}

impl PinningSettings {
    /// Checks of `pinning` (it needs an image policy to act on).
    pub(super) fn validate(&self, image_policies: &[ImagePolicy], problems: &mut Vec<Problem>) {
        // Only images an image policy matches are resolved at the registry, so pinning without
        // one would be switched on and silently do nothing.
        if self.enabled && image_policies.is_empty() {
            problems.push(Problem {
                key: "pinning.enabled".into(),
                message:
                    "pinning rewrites only images an image policy matches (they are resolved at \
                 the registry), and imagePolicies is empty: add an image policy or turn \
                 pinning off"
                        .into(),
            });
        }
    }
}
