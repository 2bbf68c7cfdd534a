//! `portcullis review`: answer one AdmissionReview exactly as the server would.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::components::engine_for;
use super::{CliError, ConfigArg};
use crate::admission;

#[derive(Debug, Args)]
pub struct ReviewArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// AdmissionReview JSON file; `-` or nothing reads stdin.
    pub file: Option<PathBuf>,
}

pub(super) async fn review(args: ReviewArgs) -> Result<ExitCode, CliError> {
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
