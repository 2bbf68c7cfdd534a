//! `portcullis serve`: the webhook's lifecycle. Configuration first (a bad one exits 2 before
//! any port is bound), then the ports, certificate rotation, re-judging, the TUF refresh of
//! the Sigstore root, and on SIGTERM or Ctrl-C a drain that hands the Lease over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{CliError, Components, ConfigArg, prepare_trust};
use crate::config::LoadedConfig;
use crate::server::{self, ServeOptions, TlsSource};

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
                            error = %error.with_causes(),
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

pub(super) async fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    // Configuration first: a bad one exits 2 before any port is bound.
    // Cluster access is optional: only in-cluster sources (scans.trivyOperator) need it, and a
    // configuration that enables them without access is refused with this reason.
    let cluster = kube::Client::try_default().await;
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
    // Listen for SIGTERM before the server can report ready: from then on a SIGTERM must drain
    // (the default action would kill the process with requests in flight).
    let stop = ShutdownSignal::listen();
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
    stop.received().await;
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

/// Where re-judging publishes: PolicyReports, openreports.io Reports and Events. Each is
/// built whenever there is cluster access; the configuration in force decides, on every
/// change, whether it is written; the Event rate follows reloads (set before each write).
fn outputs_for(
    state: &Arc<server::AppState>,
    client: kube::Client,
    identity: &str,
) -> crate::rejudge::Outputs {
    use crate::policy_report::{ReportApi, ReportWriter};
    let per_minute = state
        .engine()
        .config()
        .rejudge
        .as_ref()
        .map_or(60, |r| r.events_per_minute);
    crate::rejudge::Outputs::new(
        Some(Arc::new(ReportWriter::new(client.clone()))),
        Some(Arc::new(ReportWriter::for_api(
            client.clone(),
            ReportApi::OpenReports,
        ))),
        Some(Arc::new(crate::events::EventRecorder::new(
            client,
            per_minute,
            identity.to_owned(),
        ))),
    )
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
        Arc::new(crate::object_review::ClusterPods::new(client.clone())),
        Some(following.clone()),
        outputs_for(state, client, &identity),
    );
    Rejudging {
        passes,
        elector,
        lease,
        leading: following,
    }
}

/// SIGTERM or Ctrl-C, listened for from [`ShutdownSignal::listen`] on.
struct ShutdownSignal {
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Installs the SIGTERM handler now (the process no longer dies of SIGTERM).
    fn listen() -> Self {
        let terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                None
            }
        };
        Self { terminate }
    }

    /// Waits for SIGTERM (including one that arrived before this call) or Ctrl-C.
    async fn received(mut self) {
        let terminate = async {
            match &mut self.terminate {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
    }
}
