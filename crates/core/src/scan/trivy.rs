//! The Trivy JSON report format (`trivy image -f json`, `SchemaVersion: 2`): parsed into
//! [`ScanReport`]s, one per digest the report names in `Metadata.RepoDigests`; the scan time
//! is `CreatedAt`. Reading and watching a directory of reports is the evidence crate's.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::OffsetDateTime;

use super::{ScanReport, Severity, Vulnerability};

#[derive(Debug, thiserror::Error)]
pub enum TrivyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a Trivy JSON report: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: SchemaVersion {found} is not supported (expected 2)")]
    Schema { path: PathBuf, found: i64 },
    #[error(
        "{path}: no Metadata.RepoDigests, so the report cannot be matched to an image digest (scan the image from a registry, not a tarball)"
    )]
    NoDigest { path: PathBuf },
    #[error("{path}: no CreatedAt; report time unknown (use Trivy 0.48 or later)")]
    NoTime { path: PathBuf },
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Report {
    schema_version: i64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    created_at: Option<OffsetDateTime>,
    #[serde(default)]
    artifact_name: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    results: Vec<ReportResult>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    #[serde(default)]
    repo_digests: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReportResult {
    #[serde(default)]
    target: String,
    #[serde(default)]
    vulnerabilities: Option<Vec<ReportVulnerability>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReportVulnerability {
    #[serde(rename = "VulnerabilityID")]
    vulnerability_id: String,
    #[serde(default)]
    pkg_name: String,
    #[serde(default)]
    installed_version: String,
    #[serde(default)]
    fixed_version: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    title: String,
}

/// Parses one report; one `ScanReport` per distinct digest it names.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Vec<ScanReport>, TrivyError> {
    let report: Report = serde_json::from_slice(bytes).map_err(|err| TrivyError::Format {
        path: path.to_owned(),
        message: err.to_string(),
    })?;
    if report.schema_version != 2 {
        return Err(TrivyError::Schema {
            path: path.to_owned(),
            found: report.schema_version,
        });
    }
    let scanned_at = report.created_at.ok_or_else(|| TrivyError::NoTime {
        path: path.to_owned(),
    })?;
    let mut digests: Vec<String> = report
        .metadata
        .repo_digests
        .iter()
        .filter_map(|rd| rd.rsplit_once('@').map(|(_, digest)| digest.to_owned()))
        .filter(|digest| digest.starts_with("sha256:"))
        .collect();
    digests.sort();
    digests.dedup();
    if digests.is_empty() {
        return Err(TrivyError::NoDigest {
            path: path.to_owned(),
        });
    }
    let vulnerabilities = flatten(report.results);
    let source = format!("trivy report {} ({})", path.display(), report.artifact_name);
    Ok(digests
        .into_iter()
        .map(|digest| ScanReport {
            digest,
            scanned_at,
            source: source.clone(),
            matched_tag: None,
            vulnerabilities: vulnerabilities.clone(),
        })
        .collect())
}

/// One `Vulnerability` per entry of every result, remembering the result's target.
fn flatten(results: Vec<ReportResult>) -> Vec<Vulnerability> {
    results
        .into_iter()
        .flat_map(|result| {
            let target = result.target;
            result
                .vulnerabilities
                .unwrap_or_default()
                .into_iter()
                .map(move |v| Vulnerability {
                    id: v.vulnerability_id,
                    package: v.pkg_name,
                    installed_version: v.installed_version,
                    fixed_version: v.fixed_version,
                    severity: Severity::parse(&v.severity),
                    target: target.clone(),
                    title: v.title,
                })
        })
        .collect()
}

/// The vulnerabilities and `CreatedAt` of a Trivy JSON report embedded in another document
/// (the `scanner.result` of a Cosign vulnerability attestation). The digest is not read from
/// it: the caller knows which digest the signed statement is about.
pub(crate) fn embedded_report(
    value: &serde_json::Value,
) -> Result<(Option<OffsetDateTime>, Vec<Vulnerability>), String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Embedded {
        #[serde(default, with = "time::serde::rfc3339::option")]
        created_at: Option<OffsetDateTime>,
        #[serde(default)]
        results: Vec<ReportResult>,
    }
    let embedded = Embedded::deserialize(value).map_err(|err| err.to_string())?;
    Ok((embedded.created_at, flatten(embedded.results)))
}
