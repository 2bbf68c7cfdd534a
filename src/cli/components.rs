//! The composition root: [`Components`] wires the evidence and scan sources a configuration
//! names into an engine, and keeps them (caches, indexes, watchers) across reloads;
//! [`prepare_trust`] readies the Sigstore root before the first engine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{CliError, ClusterUnavailable};
use crate::config::LoadedConfig;
use crate::credentials::{KubePullSecrets, PullSecretSource};
use crate::engine::{Engine, EngineBuilder};
use crate::evidence::EvidenceSource;
use crate::registry::RegistryClient;
use crate::registry_evidence::RegistryEvidence;
use crate::scan::operator::OperatorReports;
use crate::scan::trivy::TrivyDirectory;
use crate::scan::{NewestOf, NoScans, ScanSettings, ScanSource};

/// The I/O parts an engine needs (evidence and scan sources), kept across configuration
/// reloads so caches and indexes survive when the configuration names the same sources.
#[derive(Default)]
pub struct Components {
    /// The Trivy report directory in use, its index, and its watch task (serve only).
    trivy: Mutex<Option<TrivyInUse>>,
    /// Watch sources for changes (serve) or read them once (check, review, validate).
    watch: bool,
    /// Cluster access for in-cluster sources (serve only), or why there is none.
    cluster: Option<Result<kube::Client, ClusterUnavailable>>,
    /// Trivy Operator reports and their watch task, while the configuration enables them.
    operator: Mutex<Option<OperatorInUse>>,
    /// The registry evidence source and the settings it was built from: reused across
    /// reloads that keep `registries` and `evidence`, so its caches survive.
    registry: Mutex<Option<RegistryInUse>>,
}

#[derive(Debug)]
struct RegistryInUse {
    settings: (
        Vec<crate::config::RegistrySettings>,
        crate::config::EvidenceSettings,
    ),
    source: Arc<RegistryEvidence>,
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Components")
            .field("trivy", &self.trivy)
            .field("watch", &self.watch)
            .field(
                "cluster",
                &self.cluster.as_ref().map(|c| c.as_ref().map(|_| "client")),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct OperatorInUse {
    reports: Arc<OperatorReports>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for OperatorInUse {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

#[derive(Debug)]
struct TrivyInUse {
    directory: PathBuf,
    source: Arc<TrivyDirectory>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TrivyInUse {
    fn drop(&mut self) {
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
    }
}

impl Components {
    pub fn new(watch: bool) -> Arc<Self> {
        Arc::new(Self {
            trivy: Mutex::new(None),
            watch,
            cluster: None,
            operator: Mutex::new(None),
            registry: Mutex::new(None),
        })
    }

    /// Components for a one-shot `audit` of the live cluster: cluster sources (Trivy Operator
    /// reports, pull secrets) are read through `cluster`; files are not watched.
    pub fn auditing(cluster: kube::Client) -> Arc<Self> {
        Arc::new(Self {
            trivy: Mutex::new(None),
            watch: false,
            cluster: Some(Ok(cluster)),
            operator: Mutex::new(None),
            registry: Mutex::new(None),
        })
    }

    /// Components for `serve`: sources are watched, and cluster sources use `cluster`.
    pub fn serving(cluster: Result<kube::Client, kube::Error>) -> Arc<Self> {
        Arc::new(Self {
            trivy: Mutex::new(None),
            watch: true,
            cluster: Some(cluster.map_err(ClusterUnavailable::from)),
            operator: Mutex::new(None),
            registry: Mutex::new(None),
        })
    }

    /// An engine for `loaded`, with the sources it names.
    pub fn engine(&self, loaded: LoadedConfig) -> Result<Engine, CliError> {
        if loaded.config.rejudge.is_some()
            && let Some(Err(why)) = &self.cluster
        {
            return Err(CliError::RejudgeCluster(why.clone()));
        }
        // Every engine built (start, reload, `check`, `review`, `audit`) says which deprecated
        // keys its configuration still uses; `config validate` prints the same list.
        for warning in loaded.config.warnings() {
            tracing::warn!(origin = %loaded.origin, "{warning}");
        }
        let scans = self.scan_source(&loaded.config.scans)?;
        let (evidence, trust) = self.evidence_source(&loaded.config)?;
        Ok(Engine::new(loaded, evidence)?
            .with_scans(scans)
            .with_trust_material(&trust))
    }

    /// The registry evidence source: keys and trust roots are read now (a bad one refuses
    /// the configuration); the source, with its caches, connections and limits, is kept
    /// across reloads that do not change `registries` or `evidence`.
    pub(super) fn evidence_source(
        &self,
        config: &crate::config::Config,
    ) -> Result<(Arc<dyn EvidenceSource>, Vec<String>), CliError> {
        // The fingerprints of the keys, identities and trust roots in force: part of the
        // decision identity, so a refreshed TUF root or a rotated key file shows in it.
        let mut trust = Vec::new();
        for policy in &config.image_policies {
            if let Some(authorities) = crate::signature::Authorities::compile(policy)
                .map_err(|err| CliError::Evidence(err.into()))?
            {
                trust.push(authorities.fingerprint().to_owned());
            }
        }
        let wanted = (config.registries.clone(), config.evidence.clone());
        let mut registry = self.registry.lock().map_err(|_| CliError::Poisoned)?;
        if let Some(in_use) = registry.as_ref().filter(|r| r.settings == wanted) {
            // Same registries and evidence settings: keep the caches. Verification results
            // are keyed by the authorities' fingerprint, so changed keys are never served
            // from them.
            return Ok((in_use.source.clone(), trust));
        }
        let client = Arc::new(
            RegistryClient::new(&config.registries, &config.evidence)
                .map_err(|err| CliError::Evidence(err.into()))?,
        );
        let pull_secrets: Option<Arc<dyn PullSecretSource>> = if config.evidence.pull_secrets {
            match &self.cluster {
                None => {
                    tracing::warn!(
                        "evidence.pullSecrets is only read by `serve`; using configured credentials"
                    );
                    None
                }
                Some(Err(why)) => return Err(CliError::PullSecretsCluster(why.clone())),
                Some(Ok(client)) => Some(Arc::new(KubePullSecrets::new(client.clone()))),
            }
        } else {
            None
        };
        let source = Arc::new(RegistryEvidence::with_registry(
            client,
            config.evidence.clone(),
            pull_secrets,
        ));
        *registry = Some(RegistryInUse {
            settings: wanted,
            source: source.clone(),
        });
        Ok((source, trust))
    }

    pub(super) fn scan_source(
        &self,
        settings: &ScanSettings,
    ) -> Result<Arc<dyn ScanSource>, CliError> {
        let mut sources: Vec<Arc<dyn ScanSource>> = Vec::new();
        if let Some(trivy) = self.trivy_source(settings)? {
            sources.push(trivy);
        }
        if let Some(operator) = self.operator_source(settings)? {
            sources.push(operator);
        }
        Ok(match sources.len() {
            0 => Arc::new(NoScans),
            1 => sources.remove(0),
            _ => Arc::new(NewestOf(sources)),
        })
    }

    fn operator_source(
        &self,
        settings: &ScanSettings,
    ) -> Result<Option<Arc<dyn ScanSource>>, CliError> {
        let mut operator = self.operator.lock().map_err(|_| CliError::Poisoned)?;
        if !settings.trivy_operator.as_ref().is_some_and(|o| o.enabled) {
            *operator = None;
            return Ok(None);
        }
        if let Some(in_use) = operator.as_ref() {
            return Ok(Some(in_use.reports.clone()));
        }
        match &self.cluster {
            // check, review, validate: no cluster; those images get the missing-scan outcome.
            None => {
                tracing::warn!(
                    "scans.trivyOperator is only read by `serve`; judging without those reports"
                );
                Ok(None)
            }
            Some(Err(why)) => Err(CliError::Cluster(why.clone())),
            Some(Ok(client)) => {
                let reports = OperatorReports::new();
                let watcher = reports.watch(client.clone());
                *operator = Some(OperatorInUse {
                    reports: reports.clone(),
                    watcher,
                });
                Ok(Some(reports))
            }
        }
    }

    fn trivy_source(
        &self,
        settings: &ScanSettings,
    ) -> Result<Option<Arc<dyn ScanSource>>, CliError> {
        let mut trivy = self.trivy.lock().map_err(|_| CliError::Poisoned)?;
        let Some(wanted) = &settings.trivy_reports else {
            *trivy = None;
            return Ok(None);
        };
        if let Some(in_use) = trivy.as_ref().filter(|t| t.directory == wanted.directory) {
            return Ok(Some(in_use.source.clone()));
        }
        let (source, problems) = TrivyDirectory::open(wanted.directory.clone())?;
        for problem in problems {
            tracing::warn!(error = %problem, "Trivy report skipped");
        }
        let watcher = if self.watch {
            Some(source.watch()?)
        } else {
            None
        };
        *trivy = Some(TrivyInUse {
            directory: wanted.directory.clone(),
            source: source.clone(),
            watcher,
        });
        Ok(Some(source))
    }

    /// The cluster client `serve` has, if any.
    pub fn cluster_client(&self) -> Option<kube::Client> {
        self.cluster.as_ref().and_then(|c| c.as_ref().ok()).cloned()
    }

    /// The builder the server calls on every configuration reload.
    pub fn builder(self: &Arc<Self>) -> EngineBuilder {
        let components = self.clone();
        Arc::new(move |loaded| components.engine(loaded).map_err(Into::into))
    }
}

/// An engine for the configuration at `config` (or the embedded default), with the trust
/// root it asks for; no cluster, nothing watched (`review`, `check`, `audit --from-file`).
pub(super) async fn engine_for(config: Option<&Path>) -> Result<Engine, CliError> {
    let loaded = LoadedConfig::from_optional_file(config)?;
    prepare_trust(&loaded.config).await?;
    Components::new(false).engine(loaded)
}

/// With `sigstore.tuf`, the public-good root is fetched (or read from the TUF cache) before
/// the first engine is built; neither working refuses to start (exit 2) rather than judging
/// with the embedded root the configuration asked to replace.
pub async fn prepare_trust(config: &crate::config::Config) -> Result<(), CliError> {
    let Some(settings) = &config.sigstore.tuf else {
        return Ok(());
    };
    let refreshed = crate::trust_refresh::refresh(settings).await?;
    tracing::info!(
        url = %settings.url,
        origin = ?refreshed.origin,
        root = %refreshed.fingerprint,
        "Sigstore trusted root from TUF in use"
    );
    Ok(())
}
