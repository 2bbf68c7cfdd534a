//! Cached scan results (Trivy reports in a watched directory), vulnerability rules, deprecated
//! images and time-bound exceptions, judged through the webhook router with a fixed clock
//! (time-dependent rules are never tested with sleeps).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use portcullis::clock::FixedClock;
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::evidence::NoRegistry;
use portcullis::scan::trivy::{TrivyDirectory, TrivyError};
use portcullis::scan::{ScanSource, Severity};
use rstest::rstest;
use serde_json::{Value, json};

const VULNERABLE: &str = "127.0.0.1:5000/team/app@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const CLEAN: &str = "127.0.0.1:5000/team/clean@sha256:2222222222222222222222222222222222222222222222222222222222222222";
const UNSCANNED: &str = "127.0.0.1:5000/team/new@sha256:3333333333333333333333333333333333333333333333333333333333333333";

/// A temporary copy of `tests/data/trivy` (only the named files).
fn reports(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        std::fs::copy(data_path(&format!("trivy/{file}")), dir.path().join(file)).unwrap();
    }
    dir
}

fn at(text: &str) -> FixedClock {
    FixedClock(portcullis::timeutil::parse_instant(text).unwrap())
}

/// An engine on `yaml` (with `{reports}` replaced by the report directory), scans from that
/// directory, and the clock at `now`.
fn engine_at(yaml: &str, reports: &Path, now: &str) -> Engine {
    let yaml = yaml.replace("{reports}", &reports.display().to_string());
    let loaded = LoadedConfig::from_yaml(&yaml, "test").unwrap_or_else(|err| panic!("{err}"));
    let (trivy, _) = TrivyDirectory::open(reports.to_owned()).unwrap();
    Engine::new(loaded, Arc::new(NoRegistry))
        .unwrap()
        .with_scans(trivy)
        .with_clock(Arc::new(at(now)))
}

/// A hardened pod running `image`, as a CREATE review.
fn pod_with(image: &str) -> Vec<u8> {
    let mut review = fixture("pod-host-network");
    let object = &mut review["request"]["object"];
    object["spec"]["hostNetwork"] = json!(false);
    object["spec"]["containers"][0]["image"] = json!(image);
    serde_json::to_vec(&review).unwrap()
}

async fn judge(engine: Engine, image: &str) -> Value {
    let (webhook, _, _) = routers(engine);
    let (_, review) = post(&webhook, pod_with(image), "").await;
    review["response"].clone()
}

fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

const POLICY: &str = "
scans:
  trivyReports: {directory: \"{reports}\"}
imagePolicies:
  - name: team-images
    images: [\"127.0.0.1:5000/team/**\"]
    vulnerabilities:
      maxSeverity: HIGH
";

#[test]
fn trivy_reports_are_indexed_by_repo_digest_and_bad_files_are_skipped_with_a_reason() {
    let dir = reports(&[
        "app-vulnerable.json",
        "app-vulnerable-older-scan.json",
        "clean.json",
        "not-a-report.json",
        "tarball-without-digest.json",
    ]);
    let (trivy, problems) = TrivyDirectory::open(dir.path().to_owned()).unwrap();
    let app = trivy.lookup(&format!("sha256:{}", "1".repeat(64))).unwrap();
    // Two reports name this digest: the newest scan wins.
    assert_eq!(app.scanned_at.date().to_string(), "2026-11-20");
    assert_eq!(
        app.vulnerabilities.len(),
        5,
        "os-pkgs and lang-pkgs targets"
    );
    assert!(
        app.vulnerabilities
            .iter()
            .any(|v| v.severity == Severity::Unknown && v.target == "app/package-lock.json")
    );
    let clean = trivy.lookup(&format!("sha256:{}", "2".repeat(64))).unwrap();
    assert!(clean.vulnerabilities.is_empty());
    assert_eq!(problems.len(), 2);
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, TrivyError::Format { .. }))
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, TrivyError::NoDigest { .. }))
    );
}

#[tokio::test]
async fn vulnerabilities_at_or_above_the_threshold_deny_listing_the_worst_with_their_fix() {
    let dir = reports(&["app-vulnerable.json"]);
    let response = judge(engine_at(POLICY, dir.path(), "2026-11-25"), VULNERABLE).await;
    assert_eq!(response["allowed"], false);
    let message = message(&response);
    let expected = format!(
        "rule vulnerability: 3 vulnerabilities at or above HIGH: \
         CVE-2024-0727 (CRITICAL) in libcrypto3 3.1.4-r2 (fixed in 3.1.4-r4); \
         CVE-2024-4068 (HIGH) in braces 3.0.2 (fixed in 3.0.3); \
         CVE-2023-42363 (HIGH) in busybox 1.36.1-r15 (no fix yet); \
         report: trivy report {} (127.0.0.1:5000/team/app:1.0) for \
         sha256:1111111111111111111111111111111111111111111111111111111111111111, \
         scanned 2026-11-20 (4d 15h ago)",
        dir.path().join("app-vulnerable.json").display()
    );
    assert!(
        message.contains(&expected),
        "{message}\nexpected: {expected}"
    );
    assert!(
        message.contains("fix: upgrade libcrypto3 to 3.1.4-r4, braces to 3.0.3 and rebuild"),
        "{message}"
    );
}

#[rstest]
#[case::fixable_only("      fixableOnly: true\n", "2 vulnerabilities")]
#[case::bounded_list("      maxListed: 1\n", "; and 2 more; report: ")]
#[case::active_ignore(
    "      ignore:\n        - {id: CVE-2024-0727, reason: \"not reachable\", expires: \"2027-01-01\"}\n",
    "2 vulnerabilities"
)]
#[case::expired_ignore(
    "      ignore:\n        - {id: CVE-2024-0727, reason: \"not reachable\", expires: \"2026-11-01\"}\n",
    "no longer ignored: CVE-2024-0727 (ignore entry expired 2026-11-01)"
)]
#[tokio::test]
async fn vulnerability_options_shape_what_counts(#[case] extra: &str, #[case] expected: &str) {
    let dir = reports(&["app-vulnerable.json"]);
    let config = format!("{POLICY}{extra}");
    let response = judge(engine_at(&config, dir.path(), "2026-11-25"), VULNERABLE).await;
    assert_eq!(response["allowed"], false);
    assert!(
        message(&response).contains(expected),
        "{}",
        message(&response)
    );
}

#[tokio::test]
async fn a_clean_recent_scan_is_admitted() {
    let dir = reports(&["clean.json"]);
    let config = format!("{POLICY}      maxScanAge: 7d\n");
    let response = judge(engine_at(&config, dir.path(), "2026-11-25"), CLEAN).await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn a_stale_scan_requires_a_rescan() {
    let dir = reports(&["clean.json"]);
    let config = format!("{POLICY}      maxScanAge: 7d\n");
    // Scanned 2026-11-24; eight days later the scan is too old.
    let response = judge(
        engine_at(&config, dir.path(), "2026-12-02T08:00:01Z"),
        CLEAN,
    )
    .await;
    assert_eq!(response["allowed"], false);
    let message = message(&response);
    assert!(
        message.contains(
            "rule scan-age: scanned 8d ago, older than maxScanAge 7d of imagePolicy \"team-images\"; \
             report: trivy report "
        ),
        "{message}"
    );
    assert!(
        message.contains("clean.json (127.0.0.1:5000/team/clean:2.0) for sha256:2222"),
        "{message}"
    );
    assert!(
        message.contains("fix: rescan required: trivy image"),
        "{message}"
    );
}

#[rstest]
#[case::deny_by_default("", false, false)]
#[case::warn("      missingScan: warn\n", true, true)]
#[case::allow("      missingScan: allow\n", true, false)]
#[tokio::test]
async fn a_missing_scan_gets_the_configured_outcome(
    #[case] extra: &str,
    #[case] allowed: bool,
    #[case] warned: bool,
) {
    let dir = reports(&["app-vulnerable.json"]);
    let config = format!("{POLICY}{extra}");
    let response = judge(engine_at(&config, dir.path(), "2026-11-25"), UNSCANNED).await;
    assert_eq!(response["allowed"], allowed, "{response}");
    assert_eq!(response.get("warnings").is_some(), warned, "{response}");
    if !allowed {
        assert!(
            message(&response).contains("rule scan-missing: no scan report exists for sha256:3333")
        );
    }
}

#[tokio::test]
async fn an_unresolved_tag_cannot_be_matched_to_a_scan_and_says_how_to_fix_it() {
    let dir = reports(&["app-vulnerable.json"]);
    let response = judge(
        engine_at(POLICY, dir.path(), "2026-11-25"),
        "127.0.0.1:5000/team/app:1.0",
    )
    .await;
    assert_eq!(response["allowed"], false);
    assert!(
        message(&response).contains("the image's digest is unknown"),
        "{}",
        message(&response)
    );
}

#[tokio::test]
async fn a_new_report_in_the_watched_directory_is_picked_up_without_a_restart() {
    let dir = reports(&[]);
    let (trivy, _) = TrivyDirectory::open(dir.path().to_owned()).unwrap();
    let _watch = trivy.watch().unwrap();
    let digest = format!("sha256:{}", "2".repeat(64));
    assert!(trivy.lookup(&digest).is_none());
    std::fs::copy(data_path("trivy/clean.json"), dir.path().join("clean.json")).unwrap();
    for _ in 0..200 {
        if trivy.lookup(&digest).is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the new report was not picked up within 10 s");
}

const DEPRECATED: &str = "
deprecatedImages:
  - images: [\"docker.io/library/python:2*\"]
    reason: \"Python 2 is end of life\"
    replacement: \"docker.io/library/python:3.13\"
    sunset: \"2026-12-01\"
";

#[rstest]
#[case::before_the_sunset("2026-11-25", true)]
#[case::after_the_sunset("2026-12-01", false)]
#[tokio::test]
async fn deprecated_images_warn_before_the_sunset_and_deny_after(
    #[case] now: &str,
    #[case] allowed: bool,
) {
    let dir = reports(&[]);
    let response = judge(engine_at(DEPRECATED, dir.path(), now), "python:2.7").await;
    assert_eq!(response["allowed"], allowed, "{response}");
    let text = if allowed {
        response["warnings"][0].as_str().unwrap().to_owned()
    } else {
        message(&response)
    };
    assert!(text.contains("deprecated"), "{text}");
    if !allowed {
        assert!(
            text.contains(
                "past its sunset on 2026-12-01; fix: move to docker.io/library/python:3.13"
            ),
            "{text}"
        );
    }
}

const EXCEPTION: &str = "
exceptions:
  - name: legacy-batch
    images: [\"docker.io/library/python:*\"]
    namespaces: [shop]
    rules: [no-latest-tag]
    reason: \"batch job pinned by the vendor, ticket OPS-42\"
    owner: team-data
    expires: \"2026-12-31\"
";

#[rstest]
#[case::active("2026-11-25", true)]
#[case::expired("2027-01-02", false)]
#[tokio::test]
async fn an_exception_waives_visibly_until_it_expires(#[case] now: &str, #[case] allowed: bool) {
    let dir = reports(&[]);
    let response = judge(engine_at(EXCEPTION, dir.path(), now), "python:latest").await;
    assert_eq!(response["allowed"], allowed, "{response}");
    if allowed {
        let warning = response["warnings"][0].as_str().unwrap();
        assert!(
            warning.contains("[no-latest-tag] waived for python:latest by exception legacy-batch"),
            "{warning}"
        );
        let waivers: Value =
            serde_json::from_str(response["auditAnnotations"]["waivers"].as_str().unwrap())
                .unwrap();
        assert_eq!(waivers[0]["exception"], "legacy-batch");
        assert_eq!(waivers[0]["owner"], "team-data");
    } else {
        assert_eq!(
            denied_rules(&json!({"response": response})),
            ["no-latest-tag"]
        );
    }
}

#[test]
fn config_validate_lists_expired_exceptions_and_ignore_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "{}imagePolicies:\n  - name: p\n    images: [\"ghcr.io/**\"]\n    vulnerabilities:\n      \
             ignore: [{{id: CVE-1, reason: r, expires: \"2020-01-01\"}}]\n",
            EXCEPTION.replace("2026-12-31", "2020-06-30")
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "validate", &path.display().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("expired exception (no longer applied): legacy-batch (owner team-data, expired 2020-06-30)"), "{stdout}");
    assert!(
        stdout.contains(
            "expired vulnerability ignore entry (no longer applied): imagePolicy \"p\": CVE-1"
        ),
        "{stdout}"
    );
}

#[rstest]
#[case::exception_without_scope(
    "exceptions: [{name: x, rules: [privileged], reason: r, owner: o, expires: \"2030-01-01\"}]\n",
    "exceptions[0].images"
)]
#[case::unwaivable_rule(
    "exceptions: [{name: x, namespaces: [a], rules: [image-reference], reason: r, owner: o, expires: \"2030-01-01\"}]\n",
    "exceptions[0].rules[0]"
)]
#[case::bad_expiry(
    "exceptions: [{name: x, namespaces: [a], rules: [privileged], reason: r, owner: o, expires: \"next week\"}]\n",
    "exceptions[0].expires"
)]
#[case::bad_severity(
    "imagePolicies: [{name: p, images: [\"x/**\"], vulnerabilities: {maxSeverity: SEVERE}}]\n",
    "imagePolicies[0].vulnerabilities.maxSeverity"
)]
#[case::bad_scan_age(
    "imagePolicies: [{name: p, images: [\"x/**\"], vulnerabilities: {maxScanAge: soon}}]\n",
    "imagePolicies[0].vulnerabilities.maxScanAge"
)]
#[case::missing_reports_dir(
    "scans: {trivyReports: {directory: /nonexistent/reports}}\n",
    "scans.trivyReports.directory"
)]
#[case::deprecated_without_replacement(
    "deprecatedImages: [{images: [\"x/**\"], reason: r, replacement: \"\", sunset: \"2030-01-01\"}]\n",
    "deprecatedImages[0].replacement"
)]
fn broken_lifecycle_configuration_names_the_key(#[case] yaml: &str, #[case] key: &str) {
    let err = LoadedConfig::from_yaml(yaml, "test").expect_err("must be refused");
    assert!(err.to_string().contains(key), "{key} not in: {err}");
}
