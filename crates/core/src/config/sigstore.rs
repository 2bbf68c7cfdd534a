//! `sigstore`: where the Sigstore public-good trusted root comes from (embedded, or refreshed
//! from a TUF repository), and its checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problem;

/// `sigstore`: the public-good trusted root that policies without `trustedRoot` use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigstoreSettings {
    /// Opt-in: refresh the root from a TUF repository (clusters with egress). Without it the
    /// root embedded at build time is used.
    #[serde(default)]
    pub tuf: Option<TufSettings>,
}

/// `sigstore.tuf`: the TUF repository the trusted root is refreshed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TufSettings {
    /// The repository (metadata at the root, targets under `targets/`).
    #[serde(default = "default_tuf_url")]
    pub url: String,
    /// The TUF `root.json` trust starts from. Optional for the public-good repository (its
    /// root ships inside portcullis); required for any other.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// A writable directory for verified TUF metadata, so a restart without egress still has
    /// the last verified root (offline, expiry still checked).
    pub cache_dir: PathBuf,
    /// How often the root is refreshed.
    #[serde(
        default = "default_tuf_refresh",
        with = "crate::timeutil::whole_seconds"
    )]
    pub refresh_interval_seconds: std::time::Duration,
}

/// Sigstore's public-good TUF repository.
pub const PUBLIC_GOOD_TUF_URL: &str = "https://tuf-repo-cdn.sigstore.dev";

fn default_tuf_url() -> String {
    PUBLIC_GOOD_TUF_URL.to_owned()
}

fn default_tuf_refresh() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 60 * 60)
}

impl SigstoreSettings {
    /// Checks of `sigstore.tuf`.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        if let Some(tuf) = &self.tuf {
            match url::Url::parse(&tuf.url) {
                Ok(url) if matches!(url.scheme(), "https" | "http") => {}
                Ok(url) => problem(
                    "sigstore.tuf.url".into(),
                    format!("{:?} is not an http(s) URL ({})", tuf.url, url.scheme()),
                ),
                Err(err) => problem(
                    "sigstore.tuf.url".into(),
                    format!("{:?} is not a URL: {err}", tuf.url),
                ),
            }
            match &tuf.root {
                Some(path) if !path.is_file() => problem(
                    "sigstore.tuf.root".into(),
                    format!("{} does not exist or is not a file", path.display()),
                ),
                None if tuf.url.trim_end_matches('/') != PUBLIC_GOOD_TUF_URL => problem(
                    "sigstore.tuf.root".into(),
                    "required for a repository other than Sigstore's public-good one (the TUF \
                     root.json trust starts from)"
                        .into(),
                ),
                _ => {}
            }
            if tuf.cache_dir.as_os_str().is_empty() {
                problem(
                    "sigstore.tuf.cacheDir".into(),
                    "must name a directory".into(),
                );
            }
            if tuf.refresh_interval_seconds.is_zero() {
                problem(
                    "sigstore.tuf.refreshIntervalSeconds".into(),
                    "must be at least 1".into(),
                );
            }
        }
    }
}
