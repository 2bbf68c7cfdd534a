//! Cached vulnerability scan results, keyed by image digest: the report model, the
//! `ScanSource` seam, and a composite that picks the newest report when sources disagree.
//!
//! Scanning at admission time is far too slow; portcullis only judges reports that already
//! exist (Trivy JSON reports in a watched directory today). Each source indexes its reports by
//! digest in memory, so a lookup on the request path is a hash-map read.

pub mod attestation;
pub mod trivy;

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Vulnerability severity, ordered from least to most severe. `Unknown` (not rated by the
/// vulnerability database) ranks lowest; see `docs/scans.md`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }

    /// Parses a scanner's severity; anything unrecognised is `Unknown`.
    pub fn parse(text: &str) -> Self {
        match text.to_ascii_uppercase().as_str() {
            "LOW" => Severity::Low,
            "MEDIUM" => Severity::Medium,
            "HIGH" => Severity::High,
            "CRITICAL" => Severity::Critical,
            _ => Severity::Unknown,
        }
    }
}

/// One vulnerability in one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Vulnerability {
    pub id: String,
    pub package: String,
    pub installed_version: String,
    /// Empty when no fixed version exists.
    pub fixed_version: String,
    pub severity: Severity,
    /// Where it was found (`alpine 3.19.1`, `app/package-lock.json`).
    pub target: String,
    pub title: String,
}

impl Vulnerability {
    pub fn is_fixable(&self) -> bool {
        !self.fixed_version.is_empty()
    }
}

/// One scan of one image digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// `sha256:<hex>` the report is about.
    pub digest: String,
    /// When the scan ran.
    #[serde(with = "time::serde::rfc3339")]
    pub scanned_at: OffsetDateTime,
    /// `trivy 0.x report /path/file.json` and the like, for messages.
    pub source: String,
    pub vulnerabilities: Vec<Vulnerability>,
}

impl ScanReport {
    /// Counts by severity, for policies and annotations.
    pub fn summary(&self) -> ScanSummary {
        let mut counts: HashMap<Severity, usize> = HashMap::new();
        for v in &self.vulnerabilities {
            *counts.entry(v.severity).or_default() += 1;
        }
        let count = |s| counts.get(&s).copied().unwrap_or(0);
        ScanSummary {
            scanned_at: self.scanned_at,
            source: self.source.clone(),
            critical: count(Severity::Critical),
            high: count(Severity::High),
            medium: count(Severity::Medium),
            low: count(Severity::Low),
            unknown: count(Severity::Unknown),
            fixable: self
                .vulnerabilities
                .iter()
                .filter(|v| v.is_fixable())
                .count(),
        }
    }
}

/// What policies see of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanSummary {
    #[serde(with = "time::serde::rfc3339")]
    pub scanned_at: OffsetDateTime,
    pub source: String,
    pub critical: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub unknown: usize,
    pub fixable: usize,
}

/// Looks up the latest known scan of a digest. Lookups are in-memory and cheap.
pub trait ScanSource: Send + Sync + Debug {
    fn lookup(&self, digest: &str) -> Option<Arc<ScanReport>>;

    /// A report that names no digest, only the image's tag: a weaker fallback, used only when
    /// no report names the digest (see `docs/scans.md`).
    fn lookup_by_tag(&self, _image: &crate::reference::ImageRef) -> Option<Arc<ScanReport>> {
        None
    }

    /// Why the source cannot answer yet (its first listing is still running), or `None` when
    /// it can. `serve` stays unready meanwhile, so a rollout never judges against an empty
    /// index (every image would get the missing-scan outcome).
    fn pending(&self) -> Option<String> {
        None
    }
}

/// No scans configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoScans;

impl ScanSource for NoScans {
    fn lookup(&self, _digest: &str) -> Option<Arc<ScanReport>> {
        None
    }
}

/// Several sources; when more than one knows a digest, the newest report wins.
#[derive(Debug, Default)]
pub struct NewestOf(pub Vec<Arc<dyn ScanSource>>);

impl ScanSource for NewestOf {
    fn lookup(&self, digest: &str) -> Option<Arc<ScanReport>> {
        self.0
            .iter()
            .filter_map(|source| source.lookup(digest))
            .max_by_key(|report| report.scanned_at)
    }

    fn lookup_by_tag(&self, image: &crate::reference::ImageRef) -> Option<Arc<ScanReport>> {
        self.0
            .iter()
            .filter_map(|source| source.lookup_by_tag(image))
            .max_by_key(|report| report.scanned_at)
    }

    fn pending(&self) -> Option<String> {
        self.0.iter().find_map(|source| source.pending())
    }
}

/// `scans:` in the configuration: where reports come from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScanSettings {
    #[serde(default)]
    pub trivy_reports: Option<TrivyReportSettings>,
    /// Trivy Operator VulnerabilityReports watched in the cluster (`serve` only).
    #[serde(default)]
    pub trivy_operator: Option<TrivyOperatorSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrivyOperatorSettings {
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrivyReportSettings {
    /// A directory of `trivy image -f json` reports (`*.json`), watched for changes.
    pub directory: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct One(Arc<ScanReport>);

    impl ScanSource for One {
        fn lookup(&self, digest: &str) -> Option<Arc<ScanReport>> {
            (digest == self.0.digest).then(|| self.0.clone())
        }
    }

    fn report(at: i64, source: &str) -> Arc<ScanReport> {
        Arc::new(ScanReport {
            digest: "sha256:aa".into(),
            scanned_at: OffsetDateTime::from_unix_timestamp(at)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            source: source.into(),
            vulnerabilities: Vec::new(),
        })
    }

    #[test]
    fn the_newest_report_wins_whatever_the_source_order() {
        let old = Arc::new(One(report(1_000, "old")));
        let new = Arc::new(One(report(2_000, "new")));
        for sources in [
            vec![old.clone(), new.clone()],
            vec![new.clone(), old.clone()],
        ] {
            let sources: Vec<Arc<dyn ScanSource>> = sources
                .into_iter()
                .map(|s| s as Arc<dyn ScanSource>)
                .collect();
            let found = NewestOf(sources).lookup("sha256:aa");
            assert_eq!(found.map(|r| r.source.clone()), Some("new".into()));
        }
        assert!(NewestOf(vec![old]).lookup("sha256:bb").is_none());
    }

    #[test]
    fn severities_order_from_unknown_to_critical() {
        assert!(Severity::Unknown < Severity::Low && Severity::High < Severity::Critical);
        assert_eq!(Severity::parse("critical"), Severity::Critical);
        assert_eq!(Severity::parse("NEGLIGIBLE"), Severity::Unknown);
    }
}
