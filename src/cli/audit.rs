//! `portcullis audit`: judge what already runs (the live cluster or a dump), and the results
//! table or JSON that `audit` and `check` print.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::components::engine_for;
use super::{CliError, Components, ConfigArg, OutputFormat};
use crate::config::LoadedConfig;
use crate::decision::Outcome;
use crate::object_files::ManifestObject;
use crate::object_review::Judged;
use crate::policy::Subject;

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

pub(super) async fn audit(args: AuditArgs) -> Result<ExitCode, CliError> {
    // `_components` keeps the cluster watchers alive while the engine judges.
    let (engine, objects, _components) = match &args.from_file {
        Some(path) => (
            engine_for(args.config.config.as_deref()).await?,
            crate::object_review::read_dump(path)?,
            None,
        ),
        None => {
            let client = kube::Client::try_default()
                .await
                .map_err(crate::object_review::AuditError::List)?;
            let components = Components::auditing(client.clone());
            let loaded = LoadedConfig::from_optional_file(args.config.config.as_deref())?;
            // As `serve` does: with `sigstore.tuf`, judge with the root it asks for.
            super::prepare_trust(&loaded.config).await?;
            let engine = components.engine(loaded)?;
            crate::object_review::wait_for_sources(&engine, args.sources_timeout).await?;
            let pods =
                crate::object_review::read_cluster(&crate::object_review::ClusterPods::new(client))
                    .await?;
            (engine, pods, Some(components))
        }
    };
    let targets = crate::object_review::group_by_controller(objects);
    let objects: Vec<ManifestObject> = targets.iter().map(|t| t.object.clone()).collect();
    let mut results =
        crate::object_review::judge_objects(&engine, &objects, "portcullis-audit").await?;
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
pub(super) fn print_results(
    output: OutputFormat,
    results: &[Judged],
) -> Result<ExitCode, CliError> {
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
