//! Scan reports carried by the image itself: Cosign vulnerability attestations (predicate type
//! `https://cosign.sigstore.dev/attestation/vuln/v1`) whose `scanner.result` holds Trivy JSON.
//!
//! Pure: the attestation has already been verified with the image policy's authorities by the
//! registry evidence layer; this module only turns its predicate into a [`ScanReport`]. The
//! digest comes from the verified statement's subject, never from the (unsigned-by-us) Trivy
//! metadata inside it, so a report cannot be replayed onto another image.

use serde::Deserialize;
use time::OffsetDateTime;

use super::ScanReport;

/// The in-toto predicate type of a Cosign vulnerability attestation.
pub const VULN_PREDICATE_TYPE: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VulnAttestationError {
    #[error("vulnerability attestation by {signer}: not a cosign vuln/v1 predicate: {message}")]
    Format { signer: String, message: String },
    #[error(
        "vulnerability attestation by {signer}: scanner.result is not a Trivy JSON report: {message}"
    )]
    Result { signer: String, message: String },
    #[error(
        "vulnerability attestation by {signer}: no metadata.scanFinishedOn, scanStartedOn or result CreatedAt, so its age is unknown"
    )]
    NoTime { signer: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Predicate {
    scanner: Scanner,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Scanner {
    #[serde(default)]
    uri: String,
    #[serde(default)]
    version: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default, with = "time::serde::rfc3339::option")]
    scan_started_on: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    scan_finished_on: Option<OffsetDateTime>,
}

/// Turns a verified vuln/v1 predicate about `digest` into a scan report. The scan time is
/// `metadata.scanFinishedOn`, else `scanStartedOn`, else the Trivy report's `CreatedAt`.
pub fn report_from_vuln_predicate(
    digest: &str,
    predicate: &serde_json::Value,
    signer: &str,
) -> Result<ScanReport, VulnAttestationError> {
    let parsed = Predicate::deserialize(predicate).map_err(|err| VulnAttestationError::Format {
        signer: signer.to_owned(),
        message: err.to_string(),
    })?;
    let (created_at, vulnerabilities) = super::trivy::embedded_report(&parsed.scanner.result)
        .map_err(|message| VulnAttestationError::Result {
            signer: signer.to_owned(),
            message,
        })?;
    let metadata = parsed.metadata.as_ref();
    let scanned_at = metadata
        .and_then(|m| m.scan_finished_on.or(m.scan_started_on))
        .or(created_at)
        .ok_or_else(|| VulnAttestationError::NoTime {
            signer: signer.to_owned(),
        })?;
    let scanner = match (parsed.scanner.uri.as_str(), parsed.scanner.version.as_str()) {
        ("", "") => "unnamed scanner".to_owned(),
        (uri, "") => uri.to_owned(),
        (uri, version) => format!("{uri} {version}"),
    };
    Ok(ScanReport {
        digest: digest.to_owned(),
        scanned_at,
        source: format!("cosign vuln attestation signed by {signer} ({scanner})"),
        matched_tag: None,
        vulnerabilities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Severity;
    use serde_json::json;

    fn trivy_result() -> serde_json::Value {
        json!({
            "SchemaVersion": 2,
            "CreatedAt": "2026-11-01T10:00:00Z",
            "ArtifactName": "registry.example/app:1",
            "Metadata": {"RepoDigests": ["registry.example/app@sha256:ffff"]},
            "Results": [
                {"Target": "alpine 3.19", "Class": "os-pkgs", "Vulnerabilities": [
                    {"VulnerabilityID": "CVE-2026-0001", "PkgName": "openssl",
                     "InstalledVersion": "3.1.0", "FixedVersion": "3.1.5", "Severity": "CRITICAL"}
                ]},
                {"Target": "app/go.mod", "Class": "lang-pkgs"}
            ]
        })
    }

    #[test]
    fn a_vuln_predicate_becomes_a_report_for_the_signed_digest() {
        let predicate = json!({
            "invocation": {"uri": "", "event_id": "", "builder.id": ""},
            "scanner": {"uri": "pkg:github/aquasecurity/trivy", "version": "0.57.0",
                        "db": {"uri": "", "version": ""}, "result": trivy_result()},
            "metadata": {"scanStartedOn": "2026-11-02T10:00:00Z",
                         "scanFinishedOn": "2026-11-02T10:01:00Z"}
        });
        let report = report_from_vuln_predicate("sha256:aaaa", &predicate, "key team")
            .expect("a valid predicate");
        // The signed subject names the digest, not the embedded Trivy metadata.
        assert_eq!(report.digest, "sha256:aaaa");
        assert_eq!(report.scanned_at.unix_timestamp(), 1_793_613_660);
        assert_eq!(report.vulnerabilities.len(), 1);
        assert_eq!(report.vulnerabilities[0].severity, Severity::Critical);
        assert_eq!(report.vulnerabilities[0].fixed_version, "3.1.5");
        assert!(report.source.contains("key team"), "{}", report.source);
        assert!(report.source.contains("0.57.0"), "{}", report.source);
    }

    #[test]
    fn without_metadata_the_trivy_creation_time_is_the_scan_time() {
        let predicate = json!({"scanner": {"result": trivy_result()}});
        let report = report_from_vuln_predicate("sha256:aaaa", &predicate, "k").unwrap();
        assert_eq!(report.scanned_at.unix_timestamp(), 1_793_527_200);
    }

    #[test]
    fn broken_predicates_are_errors_naming_the_signer() {
        let no_time = json!({"scanner": {"result": {"Results": []}}});
        assert_eq!(
            report_from_vuln_predicate("sha256:aa", &no_time, "k"),
            Err(VulnAttestationError::NoTime { signer: "k".into() })
        );
        let not_trivy = json!({"scanner": {"result": {"Results": "many"}}});
        assert!(matches!(
            report_from_vuln_predicate("sha256:aa", &not_trivy, "k"),
            Err(VulnAttestationError::Result { .. })
        ));
        let no_scanner = json!({"predicate": 1});
        let err = report_from_vuln_predicate("sha256:aa", &no_scanner, "k").unwrap_err();
        assert!(err.to_string().contains("scanner"), "{err}");
    }
}
