//! Scans carried by the image, image age and base image freshness against a real registry
//! (Debian's `docker-registry` on 127.0.0.1): images pushed with `skopeo copy`, Cosign
//! vulnerability and SLSA provenance attestations signed with the sigstore crate (and one with
//! another key), judged through the webhook router with a fixed clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use crate::common;

use std::sync::Arc;

use crate::common::{post, routers};
use portcullis::clock::FixedClock;
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::registry_evidence::RegistryEvidence;
use portcullis_test_support::registry::{
    ImageSpec, Layout, Mode, Registry, SigstoreKey, push_attestations, sign_image, write_file,
};
use serde_json::{Value, json};

/// Rules that need no registry are off, so each verdict comes from the rules under test.
const QUIET_RULES: &str = "rules:\n  noLatestTag: {enabled: false}\n  runAsNonRoot: {enabled: false}\n  privilegeEscalation: {enabled: false}\n";
const NOW: &str = "2026-12-01T00:00:00Z";
pub(crate) const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
const SLSA_V1: &str = "https://slsa.dev/provenance/v1";

pub(crate) fn push(registry: &Registry, repository: &str, tag: &str, spec: &ImageSpec) -> String {
    let mut layout = Layout::new();
    let digest = layout.single(tag, spec);
    registry.push_layout(layout.path(), tag, repository);
    digest
}

/// A fresh evidence source (empty caches) and engine judging at [`NOW`].
fn webhook(yaml: &str) -> axum::Router {
    let loaded = LoadedConfig::from_yaml(yaml, "test").unwrap_or_else(|err| panic!("{err}"));
    let evidence = Arc::new(RegistryEvidence::new(&loaded.config, None).unwrap());
    let clock = FixedClock(portcullis::timeutil::parse_instant(NOW).unwrap());
    routers(
        Engine::new(loaded, evidence)
            .unwrap()
            .with_clock(Arc::new(clock)),
    )
    .0
}

async fn review(router: &axum::Router, image: &str) -> Value {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": image}]}
    });
    let (status, body) = post(
        router,
        common::create_review("", "Pod", "pods", pod),
        "?timeout=10s",
    )
    .await;
    assert_eq!(status, 200);
    body["response"].clone()
}

fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn vuln_predicate(severity: &str, finished: &str) -> Value {
    let vulnerabilities = if severity.is_empty() {
        json!(null)
    } else {
        json!([{"VulnerabilityID": "CVE-2026-4242", "PkgName": "openssl",
                "InstalledVersion": "3.1.0", "FixedVersion": "3.1.7", "Severity": severity}])
    };
    json!({
        "invocation": {"parameters": null, "uri": "", "event_id": "", "builder.id": ""},
        "scanner": {"uri": "pkg:github/aquasecurity/trivy@v0.57.0", "version": "0.57.0",
                    "db": {"uri": "", "version": ""},
                    "result": {"SchemaVersion": 2, "CreatedAt": finished,
                               "ArtifactName": "app", "ArtifactType": "container_image",
                               "Results": [{"Target": "app (alpine 3.20.3)", "Class": "os-pkgs",
                                            "Type": "alpine", "Vulnerabilities": vulnerabilities}]}},
        "metadata": {"scanStartedOn": finished, "scanFinishedOn": finished}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vuln_attestation_is_a_scan_only_when_signed_by_the_policy_key() {
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let keys = tempfile::tempdir().unwrap();
    let key = SigstoreKey::generate();
    let stranger = SigstoreKey::generate();
    let key_path = write_file(keys.path(), "team.pub", &key.public_pem);
    let digest = push(&registry, "team/app", "v1", &ImageSpec::new("scanned"));
    sign_image(&registry, "team/app", &digest, &key).await;
    let image = format!("{}/team/app:v1", registry.host);
    let yaml = format!(
        "{}{QUIET_RULES}imagePolicies:\n  - name: team\n    images: [\"{}/**\"]\n    signatures:\n      keys:\n        - path: {}\n    vulnerabilities:\n      maxSeverity: HIGH\n      maxScanAge: 7d\n",
        registry.registry_yaml(),
        registry.host,
        key_path.display()
    );

    // No attestation and no other source: the missing-scan outcome (deny by default).
    let answer = review(&webhook(&yaml), &image).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer).contains("no scan report exists for"),
        "{}",
        message(&answer)
    );

    // A vulnerability attestation signed by the policy's key: its CRITICAL finding counts.
    push_attestations(
        &registry,
        "team/app",
        &digest,
        &key,
        &[(
            VULN,
            vuln_predicate("CRITICAL", "2026-11-30T12:00:00Z"),
            &digest,
        )],
    )
    .await;
    let answer = review(&webhook(&yaml), &image).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    let text = message(&answer);
    assert!(
        text.contains("CVE-2026-4242") && text.contains("3.1.7"),
        "{text}"
    );

    // A clean rescan (newer, same key) wins.
    push_attestations(
        &registry,
        "team/app",
        &digest,
        &key,
        &[
            (
                VULN,
                vuln_predicate("CRITICAL", "2026-11-30T12:00:00Z"),
                &digest,
            ),
            (VULN, vuln_predicate("", "2026-11-30T18:00:00Z"), &digest),
        ],
    )
    .await;
    let answer = review(&webhook(&yaml), &image).await;
    assert_eq!(answer["allowed"], true, "{answer}");

    // A clean report signed by another key is ignored: back to the missing-scan outcome.
    push_attestations(
        &registry,
        "team/app",
        &digest,
        &stranger,
        &[(VULN, vuln_predicate("", "2026-11-30T18:00:00Z"), &digest)],
    )
    .await;
    let answer = review(&webhook(&yaml), &image).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer).contains("no scan report exists for"),
        "{}",
        message(&answer)
    );

    // A report older than maxScanAge (7d before NOW) asks for a rescan.
    push_attestations(
        &registry,
        "team/app",
        &digest,
        &key,
        &[(VULN, vuln_predicate("", "2026-11-01T00:00:00Z"), &digest)],
    )
    .await;
    let answer = review(&webhook(&yaml), &image).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer).contains("rescan required"),
        "{}",
        message(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_age_comes_from_verified_provenance_else_the_config_created_time() {
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let keys = tempfile::tempdir().unwrap();
    let key = SigstoreKey::generate();
    let key_path = write_file(keys.path(), "team.pub", &key.public_pem);
    // ImageSpec's config says created 2026-11-01T10:00:00Z: 29 days before NOW.
    let digest = push(&registry, "team/app", "v1", &ImageSpec::new("aged"));
    sign_image(&registry, "team/app", &digest, &key).await;
    let image = format!("{}/team/app:v1", registry.host);
    let config = |max: &str| {
        format!(
            "{}{QUIET_RULES}imagePolicies:\n  - name: team\n    images: [\"{}/**\"]\n    maxImageAge: {max}\n    signatures:\n      keys:\n        - path: {}\n",
            registry.registry_yaml(),
            registry.host,
            key_path.display()
        )
    };
    assert_eq!(
        review(&webhook(&config("30d")), &image).await["allowed"],
        true
    );
    let answer = review(&webhook(&config("7d")), &image).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer).contains("from the image config's created field"),
        "{}",
        message(&answer)
    );

    // Verified SLSA provenance says the build finished yesterday: it wins over `created`.
    let provenance = json!({"buildDefinition": {"buildType": "https://example.com/ci"},
                            "runDetails": {"builder": {"id": "https://example.com/ci"},
                                           "metadata": {"startedOn": "2026-11-30T09:00:00Z",
                                                        "finishedOn": "2026-11-30T09:10:00Z"}}});
    push_attestations(
        &registry,
        "team/app",
        &digest,
        &key,
        &[(SLSA_V1, provenance, &digest)],
    )
    .await;
    assert_eq!(
        review(&webhook(&config("7d")), &image).await["allowed"],
        true
    );
    let answer = review(&webhook(&config("12h")), &image).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer).contains("from verified SLSA provenance https://slsa.dev/provenance/v1"),
        "{}",
        message(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_base_tag_asks_to_rebuild_on_the_new_digest() {
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let base_name = format!("{}/base/alpine:3.20", registry.host);
    let mut base_spec = ImageSpec::new("base v1");
    base_spec.base_name = None;
    let base_v1 = push(&registry, "base/alpine", "3.20", &base_spec);
    let mut app = ImageSpec::new("built on base v1");
    app.base_name = Some(base_name.clone());
    app.base_digest = Some(base_v1.clone());
    push(&registry, "team/app", "v1", &app);
    let image = format!("{}/team/app:v1", registry.host);
    let config = |freshness: &str| {
        format!(
            "{}{QUIET_RULES}imagePolicies:\n  - name: team\n    images: [\"{}/team/**\"]\n    baseImageFreshness: {freshness}\n",
            registry.registry_yaml(),
            registry.host
        )
    };

    // The base tag still names the digest the app was built on: nothing to say.
    let answer = review(&webhook(&config("{}")), &image).await;
    assert_eq!(answer["allowed"], true, "{answer}");
    assert!(answer["warnings"].is_null(), "{answer}");

    // The base tag moves (a rebuilt base with security fixes).
    base_spec.marker = "base v2".into();
    let base_v2 = push(&registry, "base/alpine", "3.20", &base_spec);
    assert_ne!(base_v1, base_v2);
    let expected = format!("rebuild on {base_name}@{base_v2}");
    let answer = review(&webhook(&config("{}")), &image).await;
    assert_eq!(answer["allowed"], true, "warn is the default: {answer}");
    let warnings = answer["warnings"].to_string();
    assert!(warnings.contains("base-image-outdated"), "{warnings}");
    // Warnings are cut to 120 characters; the whole finding is in the audit annotations.
    let findings = answer["auditAnnotations"]["findings"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        findings.contains(&format!("now points to {base_v2}")) && findings.contains(&expected),
        "{findings}"
    );

    let answer = review(&webhook(&config("{mode: enforce}")), &image).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    let text = message(&answer);
    assert!(text.contains(&expected), "{text}");
    assert!(
        text.contains(&format!("built on {base_name}@{base_v1}")),
        "{text}"
    );
}
