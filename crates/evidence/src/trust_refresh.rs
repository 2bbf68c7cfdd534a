//! Refreshes the Sigstore public-good trusted root from a TUF repository (`sigstore.tuf`, opt-in
//! for clusters with egress), with sigstore-trust-root's TUF client, and installs it for the
//! policies that name no `trustedRoot` of their own.
//!
//! Why TUF: the embedded root is as old as the build; Sigstore rotates log and CA keys through
//! TUF, so a long-lived installation without it slowly stops admitting images signed against
//! the new keys. Every failure here keeps the root in use (fail closed): at start, a
//! configuration that asks for TUF and can get neither a fresh nor a cached verified root is
//! refused rather than silently falling back to the embedded one.

use std::time::Duration;

use sigstore_trust_root::{SigstoreInstance, TrustedRoot, TufBootstrap, TufConfig};

use crate::signature::{RootInUse, TrustRootError};
use portcullis_core::config::{PUBLIC_GOOD_TUF_URL, TufSettings};

/// Why no trusted root could be had from TUF.
#[derive(Debug, thiserror::Error)]
pub enum TufError {
    #[error("cannot read the TUF root {path}: {source}")]
    BootstrapRoot {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot refresh the Sigstore trusted root from TUF at {url} ({online}), and the cache \
         in {cache} holds no verified copy ({offline})"
    )]
    Fetch {
        url: String,
        cache: String,
        online: sigstore_trust_root::Error,
        #[source]
        offline: sigstore_trust_root::Error,
    },
    #[error("the trusted root from TUF at {url} is unusable: {source}")]
    Prepare {
        url: String,
        #[source]
        source: TrustRootError,
    },
    #[error("the trusted root from TUF at {url} cannot be re-encoded: {source}")]
    Encode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Where a refreshed root came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Fetched and verified now.
    Repository,
    /// The repository was unreachable or refused; the last verified copy in the cache (TUF
    /// expiry still enforced) was used.
    Cache,
}

/// The outcome of one refresh.
#[derive(Debug)]
pub struct Refreshed {
    pub origin: Origin,
    /// Whether it differs from the root in use (and was installed).
    pub changed: bool,
    /// SHA-256 of the root now in use.
    pub fingerprint: String,
}

fn tuf_config(settings: &TufSettings) -> Result<TufConfig, TufError> {
    let bootstrap = match &settings.root {
        Some(path) => TufBootstrap::trusted(std::fs::read(path).map_err(|source| {
            TufError::BootstrapRoot {
                path: path.display().to_string(),
                source,
            }
        })?),
        // Validation requires `root` for any other repository.
        None => TufBootstrap::trusted(SigstoreInstance::PublicGood.tuf_root()),
    };
    Ok(TufConfig::custom(settings.url.clone(), bootstrap)
        .with_cache_dir(settings.cache_dir.clone()))
}

/// Fetches (or, when the repository cannot be used, reads the cached copy of) the trusted
/// root, prepared for verification.
pub async fn fetch(settings: &TufSettings) -> Result<(RootInUse, Origin), TufError> {
    let config = tuf_config(settings)?;
    let (root, origin) = match TrustedRoot::from_tuf(config.clone()).await {
        Ok(root) => (root, Origin::Repository),
        Err(online) => match TrustedRoot::from_tuf(config.offline()).await {
            Ok(root) => {
                tracing::warn!(
                    url = %settings.url,
                    error = %online,
                    "TUF repository unusable; using the last verified trusted root from the cache"
                );
                (root, Origin::Cache)
            }
            Err(offline) => {
                return Err(TufError::Fetch {
                    url: settings.url.clone(),
                    cache: settings.cache_dir.display().to_string(),
                    online,
                    offline,
                });
            }
        },
    };
    let json = serde_json::to_string(&root).map_err(|source| TufError::Encode {
        url: settings.url.clone(),
        source,
    })?;
    let label = if settings.url.trim_end_matches('/') == PUBLIC_GOOD_TUF_URL {
        "the Sigstore public-good root (from TUF)".to_owned()
    } else {
        format!("the Sigstore trusted root from TUF at {}", settings.url)
    };
    let root = RootInUse::from_json(label, &json).map_err(|source| TufError::Prepare {
        url: settings.url.clone(),
        source,
    })?;
    Ok((root, origin))
}

/// Fetches the root and installs it as the public-good root of this process.
pub async fn refresh(settings: &TufSettings) -> Result<Refreshed, TufError> {
    let (root, origin) = fetch(settings).await?;
    let fingerprint = root.fingerprint.clone();
    let changed = crate::signature::install_public_good_root(root);
    Ok(Refreshed {
        origin,
        changed,
        fingerprint,
    })
}

/// How long to wait before the next attempt: the configured interval after a success, at
/// most a minute after a failure (the root in use stays meanwhile).
pub fn next_attempt(settings: &TufSettings, succeeded: bool) -> Duration {
    let interval = settings
        .refresh_interval_seconds
        .max(Duration::from_secs(1));
    if succeeded {
        interval
    } else {
        interval.min(Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, root: Option<&str>) -> TufSettings {
        TufSettings {
            url: url.into(),
            root: root.map(Into::into),
            cache_dir: std::env::temp_dir().join("portcullis-tuf-unit"),
            refresh_interval_seconds: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_missing_bootstrap_root_is_named() {
        let err = tuf_config(&settings(
            "http://127.0.0.1:1",
            Some("/nonexistent/root.json"),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/root.json"), "{err}");
    }

    #[test]
    fn failures_retry_within_a_minute_and_successes_wait_the_interval() {
        let s = settings(PUBLIC_GOOD_TUF_URL, None);
        assert_eq!(next_attempt(&s, true), Duration::from_secs(3600));
        assert_eq!(next_attempt(&s, false), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn an_unreachable_repository_without_a_cache_is_an_error_not_the_embedded_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings("http://127.0.0.1:9", None);
        s.cache_dir = dir.path().to_owned();
        let err = fetch(&s).await.unwrap_err();
        assert!(matches!(err, TufError::Fetch { .. }), "{err}");
        assert!(err.to_string().contains("holds no verified copy"), "{err}");
    }
}
