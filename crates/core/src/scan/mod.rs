//! Cached vulnerability scan results, keyed by image digest: the report model, the
//! `ScanSource` seam, and a composite that picks the newest report when sources disagree.
//!
//! Scanning at admission time is far too slow; portcullis only judges reports that already
//! exist (Trivy JSON reports in a watched directory today). Each source indexes its reports by
//! digest in memory, so a lookup on the request path is a hash-map read.

pub mod attestation;
pub mod trivy;

use std::collections::{BTreeMap, HashMap};
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
    /// Which report this is, for messages: `trivy report /path/file.json (image)`,
    /// `VulnerabilityReport namespace/name (Trivy 0.x)`, `cosign vuln attestation signed by …`.
    pub source: String,
    /// Set when the report names no digest and is filed under this normalised
    /// `registry/repository:tag` instead (a Trivy Operator report without
    /// `artifact.digest`): a weaker match, because the tag may have moved since the scan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_tag: Option<String>,
    pub vulnerabilities: Vec<Vulnerability>,
}

/// One vulnerability id with every package it affects: a CVE found in `libssl3` and
/// `libcrypto3` is one advisory with two packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisory<'a> {
    pub id: &'a str,
    /// The highest severity any of its entries gives (scanners rate per package source).
    pub severity: Severity,
    /// One entry per distinct package and installed version (an entry with a fixed version
    /// preferred), sorted by package then version.
    pub packages: Vec<&'a Vulnerability>,
}

impl Advisory<'_> {
    /// True when at least one affected package has a fixed version.
    pub fn is_fixable(&self) -> bool {
        self.packages.iter().any(|v| v.is_fixable())
    }
}

impl ScanReport {
    /// The report's vulnerabilities grouped by id, sorted by id: each id once, at the highest
    /// severity any entry gives it, with its distinct packages. The same id and package in
    /// several targets (or listed twice) is one package entry.
    pub fn advisories(&self) -> Vec<Advisory<'_>> {
        let mut by_id: BTreeMap<&str, Advisory<'_>> = BTreeMap::new();
        for v in &self.vulnerabilities {
            let advisory = by_id.entry(v.id.as_str()).or_insert_with(|| Advisory {
                id: v.id.as_str(),
                severity: v.severity,
                packages: Vec::new(),
            });
            advisory.severity = advisory.severity.max(v.severity);
            match advisory
                .packages
                .iter_mut()
                .find(|p| p.package == v.package && p.installed_version == v.installed_version)
            {
                Some(known) => {
                    if !known.is_fixable() && v.is_fixable() {
                        *known = v;
                    }
                }
                None => advisory.packages.push(v),
            }
        }
        by_id
            .into_values()
            .map(|mut advisory| {
                advisory.packages.sort_by(|a, b| {
                    (a.package.as_str(), a.installed_version.as_str())
                        .cmp(&(b.package.as_str(), b.installed_version.as_str()))
                });
                advisory
            })
            .collect()
    }

    /// What the report is and how it was matched, for messages and summaries:
    /// the source, and for a report matched by tag, that it was and that the tag may have
    /// moved since the scan.
    pub fn describe(&self) -> String {
        match &self.matched_tag {
            None => self.source.clone(),
            Some(tag) => format!(
                "{}, matched by tag {tag}, not by digest: the tag may have moved since the scan",
                self.source
            ),
        }
    }

    /// Counts by severity, for policies and annotations: each vulnerability id once, at its
    /// highest severity, however many packages it affects.
    pub fn summary(&self) -> ScanSummary {
        let advisories = self.advisories();
        let mut counts: HashMap<Severity, usize> = HashMap::new();
        for advisory in &advisories {
            *counts.entry(advisory.severity).or_default() += 1;
        }
        let count = |s| counts.get(&s).copied().unwrap_or(0);
        ScanSummary {
            scanned_at: self.scanned_at,
            source: self.describe(),
            critical: count(Severity::Critical),
            high: count(Severity::High),
            medium: count(Severity::Medium),
            low: count(Severity::Low),
            unknown: count(Severity::Unknown),
            fixable: advisories.iter().filter(|a| a.is_fixable()).count(),
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
pub(crate) mod tests {
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
            matched_tag: None,
            vulnerabilities: Vec::new(),
        })
    }

    /// A vulnerability of `package` 1.0 in an Alpine target (the rules' tests use it too).
    pub(crate) fn vuln(id: &str, package: &str, severity: Severity, fixed: &str) -> Vulnerability {
        Vulnerability {
            id: id.into(),
            package: package.into(),
            installed_version: "1.0".into(),
            fixed_version: fixed.into(),
            severity,
            target: "alpine 3.20".into(),
            title: String::new(),
        }
    }

    fn with(vulnerabilities: Vec<Vulnerability>) -> ScanReport {
        ScanReport {
            vulnerabilities,
            ..(*report(0, "trivy report r.json")).clone()
        }
    }

    #[test]
    fn advisories_group_one_id_over_its_packages_at_its_highest_severity() {
        let mut other_target = vuln("CVE-1", "libssl3", Severity::High, "2");
        other_target.target = "usr/lib".into();
        let scan = with(vec![
            vuln("CVE-1", "libssl3", Severity::High, "2"),
            vuln("CVE-2", "zlib", Severity::Low, ""),
            vuln("CVE-1", "libcrypto3", Severity::Critical, ""),
            other_target,
            vuln("CVE-1", "libcrypto3", Severity::Medium, "2"),
        ]);
        let advisories = scan.advisories();
        let ids: Vec<&str> = advisories.iter().map(|a| a.id).collect();
        assert_eq!(ids, ["CVE-1", "CVE-2"]);
        let cve = &advisories[0];
        assert_eq!(
            cve.severity,
            Severity::Critical,
            "the highest of its entries"
        );
        let packages: Vec<(&str, &str)> = cve
            .packages
            .iter()
            .map(|v| (v.package.as_str(), v.fixed_version.as_str()))
            .collect();
        assert_eq!(
            packages,
            [("libcrypto3", "2"), ("libssl3", "2")],
            "one entry per package, the one with a fix preferred"
        );
        assert!(cve.is_fixable());
        assert!(!advisories[1].is_fixable());
    }

    #[test]
    fn the_summary_counts_each_id_once_at_its_highest_severity() {
        let scan = with(vec![
            vuln("CVE-1", "libssl3", Severity::High, "2"),
            vuln("CVE-1", "libcrypto3", Severity::Critical, "2"),
            vuln("CVE-2", "zlib", Severity::High, ""),
        ]);
        let summary = scan.summary();
        assert_eq!(
            (summary.critical, summary.high, summary.fixable),
            (1, 1, 1),
            "{summary:?}"
        );
    }

    #[test]
    fn a_report_matched_by_tag_says_so_in_its_description() {
        let by_digest = with(vec![]);
        assert_eq!(by_digest.describe(), "trivy report r.json");
        let by_tag = ScanReport {
            matched_tag: Some("docker.io/library/nginx:1.16".into()),
            ..by_digest
        };
        assert_eq!(
            by_tag.describe(),
            "trivy report r.json, matched by tag docker.io/library/nginx:1.16, not by digest: \
             the tag may have moved since the scan"
        );
        assert_eq!(by_tag.summary().source, by_tag.describe());
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
