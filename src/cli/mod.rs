//! The `portcullis` commands (clap derive): `serve`, `review`, `check`, `audit`, `verify`,
//! `config validate` and `policy test`, one file each; here the command line and [`run`].
//! `main.rs` parses the arguments, starts tracing and calls [`run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod audit;
mod check;
mod components;
mod config_cmd;
mod error;
mod policy_test;
mod review;
mod serve;
mod verify;

pub use audit::AuditArgs;
pub use check::CheckArgs;
pub use components::{Components, prepare_trust};
pub use error::{CliError, ClusterUnavailable};
pub use review::ReviewArgs;
pub use serve::ServeArgs;
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

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(args) => serve::serve(*args).await,
        Command::Review(args) => review::review(args).await,
        Command::Check(args) => check::check(args).await,
        Command::Audit(args) => audit::audit(args).await,
        Command::Verify(args) => verify::verify(args).await,
        Command::Config(ConfigCommand::Validate { file }) => config_cmd::validate(file.as_deref()),
        Command::Policy(PolicyCommand::Test { dir }) => policy_test::policy_test(&dir),
    }
}
