//! The `portcullis` commands (clap derive): `serve`, `review`, `check`, `audit`, `verify`,
//! `config validate` and `policy test`.
//! `main.rs` parses the arguments, starts tracing and calls [`run`].

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admission;
use crate::audit::Judged;
use crate::config::{ConfigError, LoadedConfig};
use crate::credentials::{KubePullSecrets, PullSecretSource};
use crate::decision::Outcome;
use crate::engine::{Engine, EngineBuilder, EngineError};
use crate::evidence::EvidenceSource;
use crate::manifests::{self, ManifestError, ManifestObject};
use crate::policy::Subject;
use crate::registry::RegistryClient;
use crate::registry_evidence::{RegistryEvidence, RegistryEvidenceError};
use crate::scan::operator::OperatorReports;
use crate::scan::trivy::{TrivyDirectory, TrivyError};
use crate::scan::{NewestOf, NoScans, ScanSettings, ScanSource};
use crate::server::{self, ServeError, ServeOptions, TlsSource};

mod verify;
pub use verify::VerifyArgs;

/// portcullis: a Kubernetes validating admission webhook that lets only trusted images run.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PORTCULLIS_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTPS admission webhook (POST /validate) and the probe port
    /// (/healthz, /readyz, /metrics). Exit codes: 0 clean shutdown, 1 runtime failure,
    /// 2 bad configuration (detected before any port is bound).
    Serve(Box<ServeArgs>),
    /// Answer one AdmissionReview (JSON, from FILE or stdin) exactly as the server would, on
    /// stdout. Exit codes: 0 an answer was produced (allowed or not), 2 the input is not an
    /// AdmissionReview or the configuration is bad.
    Review(ReviewArgs),
    /// Evaluate Kubernetes manifests (YAML or JSON, multi-document, List kinds) as CREATE
    /// requests with the webhook's engine. Exit codes: 0 all admitted (warnings allowed),
    /// 1 something denied, 2 error (unreadable file, bad YAML, bad configuration).
    Check(CheckArgs),
    /// Judge what already runs as if it were admitted now: every pod of the live cluster
    /// (kubeconfig or in-cluster service account; needs `list` on pods) or of a
    /// `kubectl get pods -A -o json` dump. Replicas of one controller are judged once.
    /// Nothing is changed. Exit codes as `check`: 0 all admitted, 1 something denied, 2 error.
    Audit(AuditArgs),
    /// Show what portcullis sees for each image, and whether its image policies are satisfied.
    ///
    /// The digest it resolves to (and index children), every signature and attestation found
    /// and why it counts or not, the trusted root, and each matching image policy's verdict on
    /// its signature and attestation requirements; image facts and the scan summary. Asks the
    /// registries exactly as admission does. Exit codes: 0 every image satisfies every image
    /// policy that matches it (no matching policy counts as satisfied), 1 some do not, 2 error
    /// (bad configuration, invalid image reference, registry unreachable).
    Verify(VerifyArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Policy commands.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run the table tests beside each policy (DIR/<name>/tests.yaml) and the Rego `test_`
    /// rules of its modules. Exit codes: 0 all pass, 1 a case failed, 2 a policy or table
    /// cannot be loaded.
    Test {
        /// A policy folder, or a folder of policy folders.
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file (YAML). Without it, the embedded default configuration is used.
    #[arg(long, env = "PORTCULLIS_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Address of the HTTPS webhook port.
    #[arg(long, env = "PORTCULLIS_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP probe and metrics port.
    #[arg(long, env = "PORTCULLIS_PROBE_LISTEN", default_value = "0.0.0.0:8081")]
    pub probe_listen: SocketAddr,
    /// Serving certificate (PEM), reloaded when the file changes. Requires --tls-key.
    #[arg(long, env = "PORTCULLIS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the serving certificate. Requires --tls-cert.
    #[arg(long, env = "PORTCULLIS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS name for the generated certificate (repeatable; without --tls-cert), and the
    /// names a rotated certificate is made for (with --cert-secret).
    #[arg(long = "dns-name", env = "PORTCULLIS_DNS_NAME", value_delimiter = ',')]
    pub dns_names: Vec<String>,
    /// Where to write the generated CA bundle (without --tls-cert only).
    #[arg(long, env = "PORTCULLIS_CA_OUT", default_value = "./portcullis-ca.pem")]
    pub ca_out: PathBuf,
    /// Seconds to keep answering, unready, after SIGTERM before closing.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_DELAY", default_value_t = 2)]
    pub shutdown_delay_seconds: u64,
    /// Seconds in-flight requests may take to finish while closing.
    #[arg(long, env = "PORTCULLIS_DRAIN_TIMEOUT", default_value_t = 25)]
    pub drain_timeout_seconds: u64,
    /// Rotate the certificate in this TLS Secret (`NAMESPACE/NAME`) before it expires, keeping
    /// the caBundle of --webhook-configuration in step (the chart's selfManaged mode).
    #[arg(
        long,
        env = "PORTCULLIS_CERT_SECRET",
        requires = "webhook_configuration"
    )]
    pub cert_secret: Option<String>,
    /// The ValidatingWebhookConfiguration whose caBundle trusts the rotated CA.
    #[arg(
        long,
        env = "PORTCULLIS_WEBHOOK_CONFIGURATION",
        requires = "cert_secret"
    )]
    pub webhook_configuration: Option<String>,
    /// The digest-pinning MutatingWebhookConfiguration whose caBundle is kept in step too.
    #[arg(
        long,
        env = "PORTCULLIS_MUTATING_WEBHOOK_CONFIGURATION",
        requires = "cert_secret"
    )]
    pub mutating_webhook_configuration: Option<String>,
    /// Validity of a rotated certificate.
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    pub cert_validity: Duration,
    /// Rotate this long before the certificate expires.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub cert_renew_before: Duration,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// AdmissionReview JSON file; `-` or nothing reads stdin.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Manifest files (YAML or JSON); `-` reads stdin.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// A `kubectl get pods -A -o json` dump (YAML or JSON; `-` reads stdin) instead of the
    /// live cluster.
    #[arg(long)]
    pub from_file: Option<PathBuf>,
    /// Live cluster only: how long to wait for cluster scan sources (Trivy Operator
    /// VulnerabilityReports) to be listed before judging; past it, audit fails (exit 2)
    /// rather than report every image as unscanned.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub sources_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration (and everything it names). Errors name the key path.
    /// Exit codes: 0 valid, 2 invalid. Without FILE: $PORTCULLIS_CONFIG, else the embedded
    /// default.
    Validate {
        /// Configuration file (YAML).
        #[arg(env = "PORTCULLIS_CONFIG")]
        file: Option<PathBuf>,
    },
}

/// A command failed; the exit code says how.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("configuration: {0}")]
    Engine(#[from] EngineError),
    #[error(transparent)]
    NotAReview(#[from] admission::AdmissionError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot read {what}: {source}")]
    Input {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("scan reports: {0}")]
    Scans(#[from] TrivyError),
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    #[error("internal lock poisoned")]
    Poisoned,
    #[error("scans.trivyOperator needs access to the Kubernetes API: {0}")]
    Cluster(String),
    #[error("rejudge needs access to the Kubernetes API to list pods: {0}")]
    RejudgeCluster(String),
    #[error("certificate rotation needs access to the Kubernetes API: {0}")]
    RotationCluster(String),
    #[error("{0}")]
    RotationArgs(String),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("policy test: {0}")]
    PolicyTest(#[from] crate::policy::testing::TestError),
    #[error("evidence.pullSecrets needs access to the Kubernetes API: {0}")]
    PullSecretsCluster(String),
    #[error(transparent)]
    Evidence(#[from] RegistryEvidenceError),
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error("sigstore.tuf: {0}")]
    Tuf(#[from] crate::trust_refresh::TufError),
}

impl CliError {
    /// 2 for bad input or configuration (as `interface.md` says), 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_)
            | CliError::Engine(_)
            | CliError::NotAReview(_)
            | CliError::Manifest(_)
            | CliError::Input { .. }
            | CliError::Scans(_)
            | CliError::Cluster(_)
            | CliError::Audit(_)
            | CliError::RejudgeCluster(_)
            | CliError::RotationCluster(_)
            | CliError::RotationArgs(_)
            | CliError::PolicyTest(_)
            | CliError::PullSecretsCluster(_)
            | CliError::Evidence(_)
            | CliError::Reference(_)
            | CliError::Tuf(_) => 2,
            CliError::Bind { .. }
            | CliError::Serve(_)
            | CliError::Output(_)
            | CliError::Watch(_)
            | CliError::Poisoned => 1,
        }
    }
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Review(args) => review(args).await,
        Command::Check(args) => check(args).await,
        Command::Audit(args) => audit(args).await,
        Command::Verify(args) => verify::verify(args).await,
        Command::Config(ConfigCommand::Validate { file }) => validate(file.as_deref()),
        Command::Policy(PolicyCommand::Test { dir }) => policy_test(&dir),
    }
}

/// The I/O parts an engine needs (evidence and scan sources), kept across configuration
/// reloads so caches and indexes survive when the configuration names the same sources.
#[derive(Default)]
pub struct Components {
    /// The Trivy report directory in use, its index, and its watch task (serve only).
    trivy: Mutex<Option<TrivyInUse>>,
    /// Watch sources for changes (serve) or read them once (check, review, validate).
    watch: bool,
    /// Cluster access for in-cluster sources (serve only), or why there is none.
    cluster: Option<Result<kube::Client, String>>,
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
    pub fn serving(cluster: Result<kube::Client, String>) -> Arc<Self> {
        Arc::new(Self {
            trivy: Mutex::new(None),
            watch: true,
            cluster: Some(cluster),
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
        let scans = self.scan_source(&loaded.config.scans)?;
        let (evidence, trust) = self.evidence_source(&loaded.config)?;
        Ok(Engine::new(loaded, evidence)?
            .with_scans(scans)
            .with_trust_material(&trust))
    }

    /// The registry evidence source: keys and trust roots are read now (a bad one refuses
    /// the configuration); the source, with its caches, connections and limits, is kept
    /// across reloads that do not change `registries` or `evidence`.
    fn evidence_source(
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

    fn scan_source(&self, settings: &ScanSettings) -> Result<Arc<dyn ScanSource>, CliError> {
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

    /// The builder the server calls on every configuration reload.
    /// The cluster client `serve` has, if any.
    pub fn cluster_client(&self) -> Option<kube::Client> {
        self.cluster.as_ref().and_then(|c| c.as_ref().ok()).cloned()
    }

    pub fn builder(self: &Arc<Self>) -> EngineBuilder {
        let components = self.clone();
        Arc::new(move |loaded| components.engine(loaded).map_err(|err| err.to_string()))
    }
}

async fn engine_for(config: Option<&Path>) -> Result<Engine, CliError> {
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

/// `serve`: refreshes the TUF root on the configured interval (read from the configuration
/// in force on every pass, so a reload that turns TUF on or off is followed); a changed root
/// rebuilds the engine, whose identity changes with it. A failed refresh keeps the root in
/// use and is retried within a minute.
fn start_trust_refresh(
    state: Arc<server::AppState>,
    components: Arc<Components>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // `prepare_trust` refreshed just before the server started.
        let mut wait = state
            .engine()
            .config()
            .sigstore
            .tuf
            .as_ref()
            .map_or(Duration::from_secs(60), |settings| {
                crate::trust_refresh::next_attempt(settings, true)
            });
        loop {
            tokio::time::sleep(wait).await;
            let engine = state.engine();
            let Some(settings) = engine.config().sigstore.tuf.clone() else {
                wait = Duration::from_secs(60);
                continue;
            };
            match crate::trust_refresh::refresh(&settings).await {
                Ok(refreshed) => {
                    wait = crate::trust_refresh::next_attempt(&settings, true);
                    if !refreshed.changed {
                        continue;
                    }
                    match components.engine(engine.loaded().clone()) {
                        Ok(rebuilt) => {
                            tracing::info!(
                                url = %settings.url,
                                root = %refreshed.fingerprint,
                                config = rebuilt.identity(),
                                "Sigstore trusted root refreshed from TUF"
                            );
                            state.replace_engine(rebuilt);
                        }
                        Err(error) => tracing::error!(
                            %error,
                            "the refreshed Sigstore trusted root was refused; the engine in force stays"
                        ),
                    }
                }
                Err(error) => {
                    wait = crate::trust_refresh::next_attempt(&settings, false);
                    tracing::warn!(%error, "TUF refresh failed; the Sigstore trusted root in use stays");
                }
            }
        }
    })
}

async fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    // Configuration first: a bad one exits 2 before any port is bound.
    // Cluster access is optional: only in-cluster sources (scans.trivyOperator) need it, and a
    // configuration that enables them without access is refused with this reason.
    let cluster = kube::Client::try_default()
        .await
        .map_err(|err| err.to_string());
    let components = Components::serving(cluster);
    let loaded = LoadedConfig::from_optional_file(args.config.config.as_deref())?;
    prepare_trust(&loaded.config).await?;
    let engine = components.engine(loaded)?;
    tracing::info!(
        config = engine.identity(),
        origin = engine.origin(),
        rego_files = engine.rego().map_or(0, |r| r.files().len()),
        rego_identity = engine.rego().map_or("", |r| r.identity()),
        "configuration and policies loaded"
    );
    let bind = |addr: SocketAddr| {
        std::net::TcpListener::bind(addr).map_err(|source| CliError::Bind { addr, source })
    };
    let rotation = rotation_settings(&args)?;
    let rotation_client = match (&rotation, components.cluster_client()) {
        (None, _) => None,
        (Some(_), Some(client)) => Some(client),
        (Some(_), None) => {
            return Err(CliError::RotationCluster(
                "no in-cluster service account or kubeconfig".into(),
            ));
        }
    };
    let webhook = bind(args.listen)?;
    let probe = bind(args.probe_listen)?;
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => TlsSource::Files { cert, key },
        _ => TlsSource::Generated {
            dns_names: args.dns_names,
            ca_out: args.ca_out,
        },
    };
    let options = ServeOptions {
        config_path: args.config.config,
        tls,
        shutdown_delay: Duration::from_secs(args.shutdown_delay_seconds),
        drain_timeout: Duration::from_secs(args.drain_timeout_seconds),
    };
    let running = server::start(webhook, probe, engine, components.builder(), options).await?;
    // Re-judging reads `rejudge` from the configuration in force on every pass; the elector
    // campaigns for the Lease only while that configuration asks for leader election.
    let rejudging = components
        .cluster_client()
        .map(|client| start_rejudging(&running.state, client));
    let trust_refresh = start_trust_refresh(running.state.clone(), components.clone());
    let rotating = rotation.zip(rotation_client).map(|(settings, client)| {
        let rotator = crate::cert_rotation::CertRotator::new(
            client,
            settings,
            Arc::new(crate::clock::SystemClock),
        );
        crate::cert_rotation::spawn(Arc::new(rotator), running.state.clone())
    });
    shutdown_signal().await;
    tracing::info!("shutdown signal received");
    if let Some(rotating) = rotating {
        rotating.abort();
    }
    trust_refresh.abort();
    // Hand the Lease over while draining, not before: the drain starts at once.
    let stop_rejudging = async {
        if let Some(rejudging) = rejudging {
            rejudging.stop().await;
        }
    };
    let ((), drained) = tokio::join!(stop_rejudging, running.shutdown());
    drained?;
    Ok(ExitCode::SUCCESS)
}

/// `--cert-secret` and friends, checked before any port is bound.
fn rotation_settings(
    args: &ServeArgs,
) -> Result<Option<crate::cert_rotation::RotationSettings>, CliError> {
    let (Some(secret), Some(webhook)) = (&args.cert_secret, &args.webhook_configuration) else {
        return Ok(None);
    };
    let Some((namespace, name)) = secret
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
    else {
        return Err(CliError::RotationArgs(format!(
            "--cert-secret {secret:?}: expected NAMESPACE/NAME"
        )));
    };
    if args.tls_cert.is_none() {
        return Err(CliError::RotationArgs(
            "--cert-secret needs --tls-cert/--tls-key: the mounted files of that Secret".into(),
        ));
    }
    if args.cert_renew_before >= args.cert_validity {
        return Err(CliError::RotationArgs(format!(
            "--cert-renew-before ({}) must be shorter than --cert-validity ({})",
            humantime::format_duration(args.cert_renew_before),
            humantime::format_duration(args.cert_validity)
        )));
    }
    Ok(Some(crate::cert_rotation::RotationSettings {
        secret_namespace: namespace.to_owned(),
        secret_name: name.to_owned(),
        webhook_configuration: webhook.clone(),
        mutating_webhook_configuration: args.mutating_webhook_configuration.clone(),
        dns_names: args.dns_names.clone(),
        validity: args.cert_validity,
        renew_before: args.cert_renew_before,
    }))
}

/// The background re-judging of `serve`: its task, the leader elector and the Lease.
struct Rejudging {
    passes: tokio::task::JoinHandle<()>,
    elector: tokio::task::JoinHandle<()>,
    lease: Arc<crate::leader::LeaseLock>,
    leading: tokio::sync::watch::Receiver<bool>,
}

impl Rejudging {
    /// Stops both tasks and hands the Lease over (bounded: shutdown must not hang on the API).
    async fn stop(self) {
        self.passes.abort();
        self.elector.abort();
        if !*self.leading.borrow() {
            // Never held it (or re-judging is off): nothing to hand over, no API call.
            return;
        }
        match tokio::time::timeout(Duration::from_secs(2), self.lease.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot release the leader Lease"),
            Err(_) => tracing::warn!("releasing the leader Lease timed out"),
        }
    }
}

fn start_rejudging(state: &Arc<server::AppState>, client: kube::Client) -> Rejudging {
    let lease_name = state
        .engine()
        .config()
        .rejudge
        .as_ref()
        .map_or_else(|| "portcullis-rejudge".to_owned(), |r| r.lease_name.clone());
    // In a pod, HOSTNAME is the pod's name: unique among the replicas.
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("portcullis-{}", std::process::id()));
    let lease = Arc::new(crate::leader::LeaseLock::new(
        client.clone(),
        client.default_namespace(),
        &lease_name,
        &identity,
        Arc::new(crate::clock::SystemClock),
    ));
    let (leading, following) = tokio::sync::watch::channel(false);
    let wanted_state = state.clone();
    let elector = crate::leader::spawn(
        lease.clone(),
        leading,
        Box::new(move || {
            wanted_state
                .engine()
                .config()
                .rejudge
                .as_ref()
                .is_some_and(|r| r.leader_election)
        }),
    );
    let passes = crate::rejudge::spawn(
        state.clone(),
        Arc::new(crate::audit::ClusterPods::new(client.clone())),
        Some(following.clone()),
        Some(Arc::new(crate::policy_report::PolicyReportWriter::new(
            client,
        ))),
    );
    Rejudging {
        passes,
        elector,
        lease,
        leading: following,
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

async fn review(args: ReviewArgs) -> Result<ExitCode, CliError> {
    let engine = engine_for(args.config.config.as_deref()).await?;
    let (what, body) = match args.file.as_deref() {
        None => ("stdin".to_owned(), read_stdin()),
        Some(path) if path == Path::new("-") => ("stdin".to_owned(), read_stdin()),
        Some(path) => (path.display().to_string(), std::fs::read(path)),
    };
    let body = body.map_err(|source| CliError::Input { what, source })?;
    let (answer, _verdict) = admission::handle(&engine, &body, None).await?;
    // Through `Value` so map keys (audit annotations) print in a stable, sorted order.
    let answer = serde_json::to_value(&answer).map_err(|err| CliError::Output(err.into()))?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &answer).map_err(|err| CliError::Output(err.into()))?;
    writeln!(out).map_err(CliError::Output)?;
    Ok(ExitCode::SUCCESS)
}

fn read_stdin() -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    Ok(body)
}

async fn check(args: CheckArgs) -> Result<ExitCode, CliError> {
    let engine = engine_for(args.config.config.as_deref()).await?;
    let mut objects: Vec<ManifestObject> = Vec::new();
    for file in &args.files {
        objects.extend(manifests::read_file(file)?);
    }
    let results = crate::audit::judge_objects(&engine, &objects, "portcullis-check").await?;
    print_results(args.output, &results)
}

async fn audit(args: AuditArgs) -> Result<ExitCode, CliError> {
    // `_components` keeps the cluster watchers alive while the engine judges.
    let (engine, objects, _components) = match &args.from_file {
        Some(path) => (
            engine_for(args.config.config.as_deref()).await?,
            crate::audit::read_dump(path)?,
            None,
        ),
        None => {
            let client = kube::Client::try_default()
                .await
                .map_err(|err| crate::audit::AuditError::List(err.to_string()))?;
            let components = Components::auditing(client.clone());
            let loaded = LoadedConfig::from_optional_file(args.config.config.as_deref())?;
            let engine = components.engine(loaded)?;
            crate::audit::wait_for_sources(&engine, args.sources_timeout).await?;
            let pods = crate::audit::read_cluster(&crate::audit::ClusterPods::new(client)).await?;
            (engine, pods, Some(components))
        }
    };
    let targets = crate::audit::group_by_controller(objects);
    let objects: Vec<ManifestObject> = targets.iter().map(|t| t.object.clone()).collect();
    let mut results = crate::audit::judge_objects(&engine, &objects, "portcullis-audit").await?;
    for (result, target) in results.iter_mut().zip(&targets) {
        result.object.clone_from(&target.label);
    }
    let pods: usize = targets.iter().map(|t| t.count).sum();
    let skipped = results
        .iter()
        .filter(|r| r.outcome == Outcome::Skipped)
        .count();
    let denied = results.iter().filter(|r| !r.allowed).count();
    // Excluded namespaces (kube-system ...) are never judged: keep them out of the table.
    results.retain(|r| r.outcome != Outcome::Skipped);
    eprintln!(
        "audited {pods} pod(s) as {} object(s): {denied} would be denied, {skipped} not judged \
         (excluded namespaces or kinds); configuration {}",
        targets.len(),
        engine.identity()
    );
    print_results(args.output, &results)
}

/// Prints the results as a table or JSON; exit code 1 when something was denied.
fn print_results(output: OutputFormat, results: &[Judged]) -> Result<ExitCode, CliError> {
    let mut out = std::io::stdout().lock();
    match output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, results)
                .map_err(|err| CliError::Output(err.into()))?;
            writeln!(out).map_err(CliError::Output)?;
        }
        OutputFormat::Table => write_table(&mut out, results).map_err(CliError::Output)?,
    }
    let denied = results.iter().any(|r| !r.allowed);
    Ok(if denied {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn write_table(out: &mut impl Write, results: &[Judged]) -> std::io::Result<()> {
    let mut rows: Vec<[String; 6]> = vec![[
        "OBJECT".into(),
        "CONTAINER".into(),
        "IMAGE".into(),
        "RULE".into(),
        "VERDICT".into(),
        "FIX".into(),
    ]];
    for result in results {
        if result.findings.is_empty() {
            let verdict = match result.outcome {
                Outcome::Skipped => "skipped (not judged)",
                Outcome::ErrorDenied => "denied (error)",
                Outcome::ErrorAllowed => "admitted (error)",
                _ => "admitted",
            };
            let fix = result.message.clone().unwrap_or_default();
            rows.push([
                result.object.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                verdict.into(),
                fix.replace('\n', " "),
            ]);
        }
        for finding in &result.findings {
            let (container, image) = match &finding.subject {
                Subject::Container {
                    container,
                    kind: crate::workload::ContainerKind::ImageVolume,
                    image,
                } => (format!("(volume) {container}"), image.clone()),
                Subject::Container {
                    container, image, ..
                } => (container.clone(), image.clone()),
                Subject::Pod => ("(pod)".into(), "-".into()),
            };
            let verdict = match finding.mode {
                crate::config::Mode::Enforce => "denied",
                crate::config::Mode::Warn => "warning",
                crate::config::Mode::Audit => "audit",
            };
            rows.push([
                result.object.clone(),
                container,
                image,
                finding.rule.clone(),
                format!("{verdict}: {}", finding.found),
                finding.fix.clone(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..5)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (column, width) in widths.iter().enumerate() {
            line.push_str(&format!("{:<width$}  ", row[column], width = *width));
        }
        line.push_str(&row[5]);
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn policy_test(dir: &Path) -> Result<ExitCode, CliError> {
    let report = crate::policy::testing::run(dir)?;
    let mut out = std::io::stdout().lock();
    out.write_all(report.text.as_bytes())
        .map_err(CliError::Output)?;
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn validate(file: Option<&Path>) -> Result<ExitCode, CliError> {
    let loaded = LoadedConfig::from_optional_file(file)?;
    let engine = Components::new(false).engine(loaded)?;
    let config = engine.config();
    let enabled_rules = engine.policy_names().len();
    // Written into one buffer, then to stdout with its error handled: `println!` would panic
    // when stdout is a closed pipe (`config validate | head -1`).
    let mut text = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(text, "valid: {}", engine.origin());
    let _ = writeln!(text, "identity: {}", engine.identity());
    if let Some(rego) = engine.rego() {
        let syntaxes: Vec<String> = crate::policy::rego::describe(rego)
            .into_iter()
            .map(|(syntax, count)| format!("{count} {syntax}"))
            .collect();
        let _ = writeln!(
            text,
            "rego: {} file(s) ({}), identity {}",
            rego.files().len(),
            syntaxes.join(", "),
            rego.identity()
        );
        for package in rego.packages().iter().filter(|p| p.is_policy()) {
            let _ = writeln!(
                text,
                "rego policy: {} ({})",
                package.name,
                package.rules.join(", ")
            );
        }
    }
    let _ = writeln!(
        text,
        "mode: {}, onError: {:?}, {} policies in force ({} image policies), {} trusted registry pattern(s)",
        config.mode.as_str(),
        config.on_error,
        enabled_rules,
        config.image_policies.len(),
        config.trusted_registries.len()
    );
    // Expired waivers stay in the file but no longer apply: say so, loudly.
    for exception in engine.expired_exceptions() {
        let _ = writeln!(
            text,
            "expired exception (no longer applied): {} (owner {}, expired {})",
            exception.name, exception.owner, exception.expires
        );
    }
    let now = time::OffsetDateTime::now_utc();
    for policy in &config.image_policies {
        for ignored in policy
            .vulnerabilities
            .iter()
            .flat_map(|v| &v.ignore)
            .filter(|i| !i.is_active(now))
        {
            let _ = writeln!(
                text,
                "expired vulnerability ignore entry (no longer applied): imagePolicy {:?}: {} (expired {})",
                policy.name,
                ignored.id,
                ignored
                    .expires
                    .as_ref()
                    .map(|e| e.written.as_str())
                    .unwrap_or("")
            );
        }
    }
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(CliError::Output)?;
    Ok(ExitCode::SUCCESS)
}
