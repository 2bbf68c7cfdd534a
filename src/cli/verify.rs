//! `portcullis verify IMAGE...`: what portcullis sees for each image, for when a denial
//! surprises. Evidence is gathered through the same `EvidenceSource::gather` (and caches) the
//! webhook uses, with background priority, so what is shown is exactly what admission sees:
//! the digest, index children, every signature and attestation found and what became of it,
//! and each matching image policy's verdict on its signature and attestation requirements.
//!
//! Exit codes: 0 every image satisfies every image policy that matches it (an image no policy
//! matches counts as satisfied); 1 some do not; 2 error (bad configuration, an invalid image
//! reference, a registry that cannot be reached).
//!
//! The JSON shape (`-o json`) is documented in `docs/signatures.md`; keys are only ever added.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use futures_util::future::join_all;
use serde::Serialize;
use tokio::time::Instant;

use super::{CliError, Components, ConfigArg, OutputFormat};
use crate::config::{Config, ImagePolicy, LoadedConfig, Mode};
use crate::evidence::{
    EvidenceError, EvidenceSource, GatherContext, ImageEvidence, Priority, SignatureEvidence,
};
use crate::object_files::ManifestObject;
use crate::reference::{ImageGlobs, ImageRef};
use crate::scan::{ScanReport, ScanSource, ScanSummary};
use crate::signature::{Authorities, FoundArtefact};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Image references, as a pod spec would write them (`registry/repo:tag`,
    /// `registry/repo@sha256:...`).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// `{"images": [...]}`.
#[derive(Debug, Serialize)]
struct Report {
    images: Vec<ImageReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageReport {
    /// As written on the command line.
    image: String,
    /// `registry/repository[:tag][@digest]`.
    normalized: String,
    /// Every matching image policy is satisfied (and the evidence could be gathered).
    satisfied: bool,
    /// Why evidence could not be gathered (registry unreachable, ...): exit code 2.
    error: Option<String>,
    /// The digest judged: the written one or what the tag resolved to (index digest for a
    /// multi-arch image). `null` when no policy matches, or the tag does not exist.
    digest: Option<String>,
    /// The digest the facts came from (the configured platform's child of an index).
    platform_digest: Option<String>,
    /// Platform (`os/arch[/variant]`) → child digest, for an index.
    children: BTreeMap<String, String>,
    policies: Vec<PolicyReport>,
    facts: Option<Facts>,
    /// `null` when no matching policy judges vulnerabilities.
    scan: Option<ScanView>,
    /// Things admission would add as warnings (stale tag resolution, no platform image, ...).
    notes: Vec<String>,
    /// What the webhook answers for a minimal Pod running only this image: every rule,
    /// including each image policy's vulnerability and lifecycle rules and Rego.
    admission: Option<AdmissionView>,
}

/// The webhook's verdict on [`probe_pod`] for one image.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionView {
    allowed: bool,
    /// `allowed`, `denied`, `warned`, `skipped`, ...
    outcome: String,
    findings: Vec<AdmissionFinding>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionFinding {
    rule: String,
    mode: &'static str,
    found: String,
    fix: String,
    /// Whether it comes from an image policy (signature, attestation, vulnerability, scan,
    /// lifecycle): those make the image unsatisfied. Others (pod-level rules, Rego) are judged
    /// on the minimal pod and may not apply to the real workload.
    image_policy: bool,
}

/// Rules an image policy produces: a finding of one of them means the image does not satisfy
/// its policies, whatever the rest of a workload looks like.
const IMAGE_POLICY_RULES: &[&str] = &[
    crate::policy::builtin::rule::SIGNATURE,
    crate::policy::vulnerability::RULE_VULNERABILITY,
    crate::policy::vulnerability::RULE_SCAN_AGE,
    crate::policy::vulnerability::RULE_SCAN_MISSING,
    crate::policy::lifecycle::RULE_IMAGE_AGE,
    crate::policy::lifecycle::RULE_BASE_IMAGE,
];

/// A Pod in `default` whose only container runs `image`, with a security context that meets
/// the built-in pod rules, so that what is left is about the image.
fn probe_pod(image: &str) -> ManifestObject {
    ManifestObject {
        origin: "portcullis verify".into(),
        group: String::new(),
        version: "v1".into(),
        kind: "Pod".into(),
        name: "portcullis-verify".into(),
        namespace: "default".into(),
        object: serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "portcullis-verify", "namespace": "default"},
            "spec": {
                "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "verify",
                    "image": image,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "allowPrivilegeEscalation": false,
                        "privileged": false,
                        "capabilities": {"drop": ["ALL"]}
                    }
                }]
            }
        }),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyReport {
    name: String,
    /// `enforce`, `warn` or `audit`: what admission does when the policy is not satisfied.
    mode: &'static str,
    /// The label of the Sigstore trusted root the policy verifies against; `null` without a
    /// signature requirement.
    root: Option<String>,
    /// The signature requirement is met and no required attestation is missing.
    satisfied: bool,
    /// Why not (`null` when satisfied).
    reason: Option<String>,
    /// Who signed, when verified.
    signers: Vec<String>,
    found: Vec<FoundView>,
    attestations: Vec<AttestationView>,
    missing_attestations: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FoundView {
    /// `.sig tag`, `.att tag`, `OCI referrer` or `referrers tag schema`.
    place: &'static str,
    /// `Cosign signature`, `Cosign DSSE attestation`, `Sigstore bundle`, `Notation ...`.
    format: &'static str,
    /// `signature`, or the attestation's predicate type.
    kind: String,
    /// `key <label>`, `subject S (issuer I)` or `an unknown key`.
    signer: String,
    verified: bool,
    /// Why it does not count (`null` when verified).
    reason: Option<String>,
    /// The manifest or layer it came from.
    source: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AttestationView {
    predicate_type: String,
    signer: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Facts {
    user: Option<String>,
    created: Option<String>,
    base_name: Option<String>,
    base_digest: Option<String>,
    exposed_ports: Vec<String>,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
enum ScanView {
    /// The newest report for the digest (scan sources or a verified vuln attestation).
    Found(ScanSummary),
    /// No report names the digest.
    Missing { digest: Option<String> },
}

/// Runs `portcullis verify`.
pub(super) async fn verify(args: VerifyArgs) -> Result<ExitCode, CliError> {
    // Every reference first: an invalid one fails before any registry is asked.
    let images = args
        .images
        .iter()
        .map(|written| ImageRef::parse(written))
        .collect::<Result<Vec<_>, _>>()?;
    let loaded = LoadedConfig::from_optional_file(args.config.config.as_deref())?;
    super::prepare_trust(&loaded.config).await?;
    let components = Components::new(false);
    // The engine validates the configuration as every command does (rules, Rego, globs) and
    // builds the sources; the same sources are then asked directly.
    let engine = components.engine(loaded)?;
    let config = engine.config();
    let (evidence, _) = components.evidence_source(config)?;
    let scans = components.scan_source(&config.scans)?;
    let globs = config
        .image_policies
        .iter()
        .map(|p| Ok((p, ImageGlobs::new(p.images.iter().map(String::as_str))?)))
        .collect::<Result<Vec<_>, crate::reference::GlobError>>()
        .map_err(|err| CliError::Engine(err.into()))?;
    let context = GatherContext {
        priority: Priority::Background,
        ..GatherContext::anonymous(Instant::now() + engine.budget(None))
    };
    let inspected = join_all(images.iter().map(|image| {
        let matching: Vec<ImagePolicy> = globs
            .iter()
            .filter(|(_, globs)| globs.matches(image))
            .map(|(policy, _)| (*policy).clone())
            .collect();
        inspect(image, matching, evidence.as_ref(), &context)
    }))
    .await;
    let reports: Vec<ImageReport> = images
        .iter()
        .zip(inspected)
        .map(|(image, (policies, result))| report(image, &policies, result, config, scans.as_ref()))
        .collect();
    let mut reports = reports;
    // The same image judged as admission would judge it (the evidence is cached by now).
    let probes: Vec<ManifestObject> = images.iter().map(|i| probe_pod(i.written())).collect();
    let judged = crate::object_review::judge_objects(&engine, &probes, "portcullis-verify").await?;
    for (report, judged) in reports.iter_mut().zip(judged) {
        if report.error.is_some() {
            continue;
        }
        let findings: Vec<AdmissionFinding> = judged
            .findings
            .iter()
            .map(|finding| AdmissionFinding {
                rule: finding.rule.clone(),
                mode: finding.mode.as_str(),
                found: finding.found.clone(),
                fix: finding.fix.clone(),
                image_policy: IMAGE_POLICY_RULES.contains(&finding.rule.as_str()),
            })
            .collect();
        if findings.iter().any(|f| f.image_policy) {
            report.satisfied = false;
        }
        report.admission = Some(AdmissionView {
            allowed: judged.allowed,
            outcome: judged.outcome.as_str().to_owned(),
            findings,
        });
    }
    let mut out = std::io::stdout().lock();
    let report = Report { images: reports };
    match args.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report)
                .map_err(|err| CliError::Output(err.into()))?;
            writeln!(out).map_err(CliError::Output)?;
        }
        OutputFormat::Table => write_table(&mut out, &report).map_err(CliError::Output)?,
    }
    out.flush().map_err(CliError::Output)?;
    let errors: Vec<&str> = report
        .images
        .iter()
        .filter_map(|i| i.error.as_deref())
        .collect();
    for error in &errors {
        eprintln!("portcullis: {error}");
    }
    Ok(if !errors.is_empty() {
        ExitCode::from(2)
    } else if report.images.iter().any(|i| !i.satisfied) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Gathers evidence for one image under its matching policies (none: nothing is asked, as in
/// admission).
async fn inspect(
    image: &ImageRef,
    policies: Vec<ImagePolicy>,
    evidence: &dyn EvidenceSource,
    context: &GatherContext,
) -> (
    Vec<ImagePolicy>,
    Option<Result<ImageEvidence, EvidenceError>>,
) {
    if policies.is_empty() {
        return (policies, None);
    }
    let borrowed: Vec<&ImagePolicy> = policies.iter().collect();
    let result = evidence.gather(image, &borrowed, context).await;
    (policies, Some(result))
}

fn report(
    image: &ImageRef,
    policies: &[ImagePolicy],
    result: Option<Result<ImageEvidence, EvidenceError>>,
    config: &Config,
    scans: &dyn ScanSource,
) -> ImageReport {
    let mut report = ImageReport {
        image: image.written().to_owned(),
        normalized: image.normalized(),
        satisfied: true,
        error: None,
        digest: None,
        platform_digest: None,
        children: BTreeMap::new(),
        policies: Vec::new(),
        facts: None,
        scan: None,
        notes: Vec::new(),
        admission: None,
    };
    let evidence = match result {
        None => return report,
        Some(Err(err)) => {
            report.satisfied = false;
            report.error = Some(err.to_string());
            return report;
        }
        Some(Ok(evidence)) => evidence,
    };
    report.policies = policies
        .iter()
        .map(|policy| policy_report(policy, &evidence, config.mode))
        .collect();
    report.satisfied = report.policies.iter().all(|p| p.satisfied);
    report.facts = evidence.facts.as_ref().map(|facts| Facts {
        user: facts.user.clone(),
        created: facts.created.clone(),
        base_name: facts.base_name.clone(),
        base_digest: facts.base_digest.clone(),
        exposed_ports: facts.exposed_ports.clone(),
        labels: facts.labels.clone(),
    });
    if policies.iter().any(|p| p.vulnerabilities.is_some()) {
        report.scan = Some(scan_of(image, &evidence, scans));
    }
    report.digest.clone_from(&evidence.digest);
    report.platform_digest.clone_from(&evidence.platform_digest);
    report.children.clone_from(&evidence.children);
    report.notes.clone_from(&evidence.notes);
    report
}

fn policy_report(
    policy: &ImagePolicy,
    evidence: &ImageEvidence,
    default_mode: Mode,
) -> PolicyReport {
    let mode = policy.mode.unwrap_or(default_mode).as_str();
    let mut report = PolicyReport {
        name: policy.name.clone(),
        mode,
        root: None,
        satisfied: true,
        reason: None,
        signers: Vec::new(),
        found: Vec::new(),
        attestations: Vec::new(),
        missing_attestations: Vec::new(),
    };
    if policy.signatures.is_none() {
        return report;
    }
    // Compiled again only for its label; a failure shows as the verification's reason.
    report.root = Authorities::compile(policy)
        .ok()
        .flatten()
        .map(|authorities| authorities.root().label.clone());
    // No verification recorded: the image (or its digest) does not exist, and the overall
    // state says so.
    let (signatures, verification) = match evidence.verification(&policy.name) {
        Some(verification) => (&verification.signatures, Some(verification)),
        None => (&evidence.signatures, None),
    };
    if let Some(verification) = verification {
        report.found = verification.found.iter().map(found_view).collect();
        report.attestations = verification
            .attestations
            .iter()
            .map(|a| AttestationView {
                predicate_type: a.predicate_type.clone(),
                signer: a.signer.clone(),
            })
            .collect();
        report
            .missing_attestations
            .clone_from(&verification.missing_attestations);
    }
    match signatures {
        SignatureEvidence::Verified { signers } => {
            report.signers.clone_from(signers);
            if !report.missing_attestations.is_empty() {
                report.satisfied = false;
                report.reason = Some(format!(
                    "signed, but no verified attestation of type {}",
                    report.missing_attestations.join(", ")
                ));
            }
        }
        SignatureEvidence::Unverified { reason } | SignatureEvidence::Unavailable { reason } => {
            report.satisfied = false;
            report.reason = Some(reason.clone());
        }
    }
    report
}

fn found_view(found: &FoundArtefact) -> FoundView {
    FoundView {
        place: found.place.describe(),
        format: found.format.describe(),
        kind: found.kind.clone(),
        signer: found.signer.clone(),
        verified: found.verified,
        reason: (!found.verified).then(|| found.reason.clone()),
        source: found.source.clone(),
    }
}

/// The scan the engine would attach: the newest report for the digest from the scan sources
/// or a verified vuln attestation, else a report that names only the tag.
fn scan_of(image: &ImageRef, evidence: &ImageEvidence, scans: &dyn ScanSource) -> ScanView {
    let digest = evidence
        .digest
        .clone()
        .or_else(|| image.digest().map(str::to_owned));
    let attested = digest.as_ref().and_then(|_| evidence.attested_scan());
    let newest: Option<Arc<ScanReport>> = digest
        .as_deref()
        .and_then(|d| scans.lookup(d))
        .into_iter()
        .chain(attested)
        .max_by_key(|report| report.scanned_at)
        .or_else(|| scans.lookup_by_tag(image));
    match newest {
        Some(report) => ScanView::Found(report.summary()),
        None => ScanView::Missing { digest },
    }
}

fn write_table(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    for (index, image) in report.images.iter().enumerate() {
        if index > 0 {
            writeln!(out)?;
        }
        writeln!(out, "IMAGE {}", image.image)?;
        if image.normalized != image.image {
            writeln!(out, "  normalized   {}", image.normalized)?;
        }
        if let Some(error) = &image.error {
            writeln!(out, "  error        {error}")?;
            writeln!(out, "  verdict      error")?;
            continue;
        }
        if image.policies.is_empty() {
            writeln!(out, "  policies     no image policy matches")?;
            writeln!(out, "  verdict      satisfied")?;
            continue;
        }
        writeln!(
            out,
            "  digest       {}",
            image.digest.as_deref().unwrap_or("(none: not found)")
        )?;
        for (platform, digest) in &image.children {
            writeln!(out, "  child        {platform} {digest}")?;
        }
        if let Some(facts) = &image.facts {
            let user = match facts.user.as_deref() {
                None | Some("") => "(none: root)",
                Some(user) => user,
            };
            writeln!(out, "  user         {user}")?;
            writeln!(
                out,
                "  created      {}",
                facts.created.as_deref().unwrap_or("(not set)")
            )?;
            let base = match (&facts.base_name, &facts.base_digest) {
                (Some(name), Some(digest)) => format!("{name}@{digest}"),
                (Some(name), None) => name.clone(),
                (None, Some(digest)) => digest.clone(),
                (None, None) => "(not annotated)".into(),
            };
            writeln!(out, "  base image   {base}")?;
        }
        match &image.scan {
            None => {}
            Some(ScanView::Found(scan)) => writeln!(
                out,
                "  scan         {} critical, {} high, {} medium, {} low, {} unknown ({} fixable); {} at {}",
                scan.critical,
                scan.high,
                scan.medium,
                scan.low,
                scan.unknown,
                scan.fixable,
                scan.source,
                scan.scanned_at
            )?,
            Some(ScanView::Missing { .. }) => {
                writeln!(out, "  scan         no scan report for this digest")?;
            }
        }
        for note in &image.notes {
            writeln!(out, "  note         {note}")?;
        }
        for policy in &image.policies {
            write_policy(out, policy)?;
        }
        if let Some(admission) = &image.admission {
            write_admission(out, admission)?;
        }
        let verdict = if image.satisfied {
            "satisfied"
        } else {
            "NOT satisfied"
        };
        writeln!(out, "  verdict      {verdict}")?;
    }
    Ok(())
}

fn write_admission(out: &mut impl Write, admission: &AdmissionView) -> std::io::Result<()> {
    writeln!(
        out,
        "  admission    {} (a minimal Pod running only this image)",
        admission.outcome
    )?;
    for finding in &admission.findings {
        let scope = if finding.image_policy {
            ""
        } else {
            " (pod-level: may not apply to your workload)"
        };
        writeln!(
            out,
            "    [{}] {} {}{scope}; fix: {}",
            finding.mode, finding.rule, finding.found, finding.fix
        )?;
    }
    Ok(())
}

fn write_policy(out: &mut impl Write, policy: &PolicyReport) -> std::io::Result<()> {
    let verdict = if policy.satisfied {
        "satisfied"
    } else {
        "NOT satisfied"
    };
    writeln!(
        out,
        "  policy {} (mode {}): {verdict}",
        policy.name, policy.mode
    )?;
    let Some(root) = &policy.root else {
        if policy.reason.is_none() && policy.found.is_empty() {
            writeln!(out, "    signatures   no signature requirement")?;
        }
        if let Some(reason) = &policy.reason {
            writeln!(out, "    reason       {reason}")?;
        }
        return Ok(());
    };
    writeln!(out, "    root         {root}")?;
    if policy.found.is_empty() {
        writeln!(
            out,
            "    found        nothing (no signature or attestation)"
        )?;
    }
    for found in &policy.found {
        let outcome = match &found.reason {
            None => "verified".to_owned(),
            Some(reason) => format!("not verified: {reason}"),
        };
        writeln!(
            out,
            "    found        {} ({} in the {}) signed by {}: {outcome}",
            found.kind, found.format, found.place, found.signer
        )?;
    }
    if !policy.signers.is_empty() {
        writeln!(out, "    signed by    {}", policy.signers.join(", "))?;
    }
    for attestation in &policy.attestations {
        writeln!(
            out,
            "    attestation  {} by {}",
            attestation.predicate_type, attestation.signer
        )?;
    }
    for missing in &policy.missing_attestations {
        writeln!(out, "    missing      attestation {missing}")?;
    }
    if let Some(reason) = &policy.reason {
        writeln!(out, "    reason       {reason}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_policy_missing_an_attestation_is_not_satisfied() {
        let policy: ImagePolicy =
            serde_yaml_ng::from_str("name: team\nimages: [\"**\"]\nsignatures: {}\n").unwrap();
        let mut evidence = ImageEvidence::signatures_only(
            Some("sha256:00".into()),
            SignatureEvidence::Verified { signers: vec![] },
        );
        evidence
            .verifications
            .push(crate::evidence::PolicyVerification {
                policy: "team".into(),
                signatures: SignatureEvidence::Verified {
                    signers: vec!["subject s (issuer https://i)".into()],
                },
                attestations: Vec::new(),
                missing_attestations: vec!["https://slsa.dev/provenance/v1".into()],
                found: Vec::new(),
            });
        let report = policy_report(&policy, &evidence, Mode::Enforce);
        assert!(!report.satisfied);
        assert!(
            report
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("https://slsa.dev/provenance/v1")),
            "{report:?}"
        );
    }
}
