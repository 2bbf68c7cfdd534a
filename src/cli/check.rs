//! `portcullis check`: judge manifests as CREATE requests, printed as `audit` prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::audit::print_results;
use super::components::engine_for;
use super::{CliError, ConfigArg, OutputFormat};
use crate::object_files::{self, ManifestObject};

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

pub(super) async fn check(args: CheckArgs) -> Result<ExitCode, CliError> {
    let engine = engine_for(args.config.config.as_deref()).await?;
    let mut objects: Vec<ManifestObject> = Vec::new();
    for file in &args.files {
        objects.extend(object_files::read_file(file)?);
    }
    let results =
        crate::object_review::judge_objects(&engine, &objects, "portcullis-check").await?;
    print_results(args.output, &results)
}
