//! `portcullis audit`: judge what already runs (the live cluster or a dump), and the results
//! table or JSON that `audit` and `check` print; audit adds the inventory of the image
//! digests it judged.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::components::engine_for;
use super::{CliError, Components, ConfigArg, OutputFormat};
use crate::config::LoadedConfig;
use crate::decision::Outcome;
use crate::inventory::{DigestRecord, Filter, Inventory};
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
    let progress = Progress::new();
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
            progress.spin("waiting for scan sources");
            crate::object_review::wait_for_sources(&engine, args.sources_timeout).await?;
            progress.spin("listing pods");
            let pods =
                crate::object_review::read_cluster(&crate::object_review::ClusterPods::new(client))
                    .await?;
            (engine, pods, Some(components))
        }
    };
    let targets = crate::object_review::group_by_controller(objects);
    let objects: Vec<ManifestObject> = targets.iter().map(|t| t.object.clone()).collect();
    let pods: usize = targets.iter().map(|t| t.count).sum();
    progress.judging(pods, objects.len());
    // One audit judges each digest once per object: the default bound is far above that.
    let inventory = Inventory::default();
    let judged = crate::object_review::judge_objects_observed(
        &engine,
        &objects,
        "portcullis-audit",
        &inventory,
        &mut |done| progress.judged(done),
    )
    .await;
    progress.finish();
    let mut results = judged?;
    for (result, target) in results.iter_mut().zip(&targets) {
        result.object.clone_from(&target.label);
    }
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
    let images = inventory.query(&Filter::default());
    print_audit(args.output, &results, &images)
}

/// Audit progress on stderr when it is a terminal; hidden otherwise (logs and pipes get the
/// one-line summary only).
struct Progress(indicatif::ProgressBar);

impl Progress {
    fn new() -> Self {
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new_spinner()
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_message("preparing");
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(bar)
    }

    fn spin(&self, message: &'static str) {
        self.0.set_message(message);
    }

    fn judging(&self, pods: usize, objects: usize) {
        self.0.set_length(objects as u64);
        self.0.set_position(0);
        // The template is a constant: it cannot fail to parse, but a bare bar beats a panic.
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} objects judged",
        ) {
            self.0.set_style(style.progress_chars("=> "));
        }
        self.0.set_message(format!("{pods} pod(s) listed"));
    }

    fn judged(&self, done: usize) {
        self.0.set_position(done as u64);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Drop for Progress {
    /// An audit that fails part-way leaves no spinner behind its error message.
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// What `audit -o json` prints.
#[derive(serde::Serialize)]
struct AuditReport<'a> {
    results: &'a [Judged],
    /// One record per image digest judged (sites whose digest is unknown are not listed).
    images: &'a [DigestRecord],
}

/// Prints audit's results and image inventory as tables or JSON; exit code 1 when something
/// was denied.
fn print_audit(
    output: OutputFormat,
    results: &[Judged],
    images: &[DigestRecord],
) -> Result<ExitCode, CliError> {
    let mut out = std::io::stdout().lock();
    match output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &AuditReport { results, images })
                .map_err(|err| CliError::Output(err.into()))?;
            writeln!(out).map_err(CliError::Output)?;
        }
        OutputFormat::Table => {
            write_table(&mut out, results).map_err(CliError::Output)?;
            if !images.is_empty() {
                writeln!(out).map_err(CliError::Output)?;
                write_images_table(&mut out, images).map_err(CliError::Output)?;
            }
        }
    }
    Ok(exit_code(results))
}

fn exit_code(results: &[Judged]) -> ExitCode {
    if results.iter().any(|r| !r.allowed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// One row per digest: DIGEST, IMAGE, WORKLOADS, SIGNERS, SCAN, VERDICT.
fn write_images_table(out: &mut impl Write, images: &[DigestRecord]) -> std::io::Result<()> {
    let mut rows: Vec<[String; 6]> = vec![[
        "DIGEST".into(),
        "IMAGE".into(),
        "WORKLOADS".into(),
        "SIGNERS".into(),
        "SCAN".into(),
        "VERDICT".into(),
    ]];
    for image in images {
        // `sha256:` and 12 hex digits tell digests apart in a table, as `docker images` does.
        let digest: String = image.digest.chars().take(19).collect();
        let workloads = image.workloads.len() as u64 + image.other_workloads;
        let workloads = match image.workloads.first() {
            Some(first) if workloads > 1 => format!("{first} (+{})", workloads - 1),
            Some(first) => first.clone(),
            None => "-".into(),
        };
        let mut signers: Vec<&str> = image.signers.iter().map(|s| s.signer.as_str()).collect();
        signers.dedup();
        let signers = if signers.is_empty() {
            image.signature_state.unwrap_or("-").to_owned()
        } else {
            signers.join(", ")
        };
        let scan = image.scan.as_ref().map_or_else(
            || "-".to_owned(),
            |s| {
                format!(
                    "{}C {}H {}M {}L {}U",
                    s.critical, s.high, s.medium, s.low, s.unknown
                )
            },
        );
        rows.push([
            digest,
            image.references.join(", "),
            workloads,
            signers,
            scan,
            image.verdict.outcome.to_owned(),
        ]);
    }
    write_rows(out, &rows)
}

/// Columns padded to their widest cell (at most 60 characters); the last is not padded.
fn write_rows(out: &mut impl Write, rows: &[[String; 6]]) -> std::io::Result<()> {
    let widths: Vec<usize> = (0..5)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (column, width) in widths.iter().enumerate() {
            line.push_str(&format!("{:<width$}  ", row[column], width = *width));
        }
        line.push_str(&row[5]);
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
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
    Ok(exit_code(results))
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
    write_rows(out, &rows)
}
