//! Image sites beyond containers, through the webhook router: image volumes
//! (`spec.volumes[].image`) judged by every image rule (trusted registries, signatures, scans,
//! deprecations, Rego), scoped on UPDATE, re-judged when running, never misread by container-only
//! rules; and custom kinds with a pod template (`workloads.custom`, an Argo Rollout here),
//! judged when configured, ignored when not, denied when their path holds no pod spec.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::sync::Arc;

use crate::common::*;
use portcullis::clock::FixedClock;
use portcullis::config::{EMBEDDED_DEFAULT, ImagePolicy, LoadedConfig};
use portcullis::engine::Engine;
use portcullis::evidence::{
    EvidenceFuture, EvidenceSource, GatherContext, ImageEvidence, NoRegistry, SignatureEvidence,
};
use portcullis::reference::ImageRef;
use portcullis::scan::trivy::TrivyDirectory;
use portcullis::server::AppState;
use serde_json::{Value, json};

/// The embedded default plus `workloads.custom` naming Argo Rollouts.
fn with_rollouts() -> String {
    format!(
        "{EMBEDDED_DEFAULT}\nworkloads:\n  custom:\n    - group: argoproj.io\n      version: v1alpha1\n      \
         kind: Rollout\n      resource: rollouts\n      podSpecPath: spec.template.spec\n"
    )
}

/// A fixture review with `edit` applied.
fn edited(name: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review = fixture(name);
    edit(&mut review);
    serde_json::to_vec(&review).unwrap()
}

async fn answer(engine: Engine, body: Vec<u8>) -> Value {
    let (webhook, _, _) = routers(engine);
    let (status, review) = post(&webhook, body, "?timeout=10s").await;
    assert_eq!(status, 200, "{review}");
    review
}

fn findings_annotation(review: &Value) -> Value {
    review["response"]["auditAnnotations"]["findings"]
        .as_str()
        .map(|text| serde_json::from_str(text).unwrap())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn an_untrusted_image_volume_is_denied_naming_the_volume() {
    let review = answer(engine(None), fixture_bytes("pod-image-volume-untrusted")).await;
    let (allowed, message) = verdict(&review);
    assert!(!allowed, "{review}");
    assert_eq!(denied_rules(&review), ["trusted-registry"], "{message}");
    assert!(
        message.contains(
            "- image \"docker.io/evil/payload:1.0\" in image volume \"data\": rule \
             trusted-registry: docker.io/evil/payload is not from a trusted registry"
        ),
        "{message}"
    );
    // The audit log names the volume as a volume, not as a container.
    let findings = findings_annotation(&review);
    assert_eq!(findings[0]["volume"], "data", "{findings}");
    assert!(findings[0].get("container").is_none(), "{findings}");
}

#[tokio::test]
async fn the_same_volume_from_a_trusted_registry_is_admitted_and_container_rules_leave_it_alone() {
    // The embedded default's pod-security rules (runAsNonRoot, privilege escalation, host
    // ports) are on: a volume has no securityContext, and none of them may fire on it.
    let review = answer(engine(None), fixture_bytes("pod-image-volume-trusted")).await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert_eq!(findings_annotation(&review), Value::Null, "{review}");
    // Same with every container-only rule on, container ports included.
    let yaml = EMBEDDED_DEFAULT.replace(
        "containerPorts: {enabled: false}",
        "containerPorts: {enabled: true, allowed: [\"8080\"]}",
    );
    assert!(yaml.contains("allowed: [\"8080\"]"), "{yaml}");
    let review = answer(
        engine(Some(&yaml)),
        fixture_bytes("pod-image-volume-trusted"),
    )
    .await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
}

/// Signatures verify for the Pod's container (`registry.k8s.io`) and `ghcr.io/acme`; nothing
/// else is signed.
#[derive(Debug)]
struct SignedByTeam;

impl EvidenceSource for SignedByTeam {
    fn gather<'a>(
        &'a self,
        image: &'a ImageRef,
        _: &'a [&'a ImagePolicy],
        _: &'a GatherContext,
    ) -> EvidenceFuture<'a> {
        let signed = ["registry.k8s.io", "ghcr.io"].contains(&image.registry());
        Box::pin(async move {
            let signatures = if signed {
                SignatureEvidence::Verified {
                    signers: vec!["key team.pub".into()],
                }
            } else {
                SignatureEvidence::Unverified {
                    reason: "no signature found".into(),
                }
            };
            Ok(ImageEvidence::signatures_only(
                Some(format!("sha256:{}", "b".repeat(64))),
                signatures,
            ))
        })
    }
}

#[tokio::test]
async fn a_signature_requirement_judges_image_volumes_even_from_a_trusted_registry() {
    // docker.io is trusted here: only the signature requirement stands in the way.
    let yaml = "trustedRegistries: [\"registry.k8s.io/**\", \"docker.io/**\", \"ghcr.io/**\"]\n\
                imagePolicies:\n  - name: signed\n    images: [\"**\"]\n    signatures:\n      keys:\n        \
                - pem: |\n            -----BEGIN PUBLIC KEY-----\n            \
                MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n            -----END PUBLIC KEY-----\n";
    let unsigned = answer(
        engine_with(Some(yaml), Arc::new(SignedByTeam)),
        fixture_bytes("pod-image-volume-untrusted"),
    )
    .await;
    let (allowed, message) = verdict(&unsigned);
    assert!(!allowed, "{unsigned}");
    assert_eq!(denied_rules(&unsigned), ["signature"], "{message}");
    assert!(
        message.contains("image \"docker.io/evil/payload:1.0\" in image volume \"data\": rule signature: imagePolicy \"signed\" requires a signature: no signature found"),
        "{message}"
    );
    assert!(!message.contains("container \"pause\""), "{message}");

    let signed = answer(
        engine_with(Some(yaml), Arc::new(SignedByTeam)),
        fixture_bytes("pod-image-volume-trusted"),
    )
    .await;
    assert_eq!(signed["response"]["allowed"], true, "{signed}");
}

#[tokio::test]
async fn an_image_volume_without_a_valid_reference_is_denied_even_in_audit_mode() {
    let body = edited("pod-image-volume-untrusted", |r| {
        r["request"]["object"]["spec"]["volumes"] = json!([
            {"name": "data", "image": {"pullPolicy": "Always"}},
            {"name": "upper", "image": {"reference": "Docker.io/Evil:1"}}
        ]);
    });
    let review = answer(engine(Some("mode: audit\n")), body).await;
    let (allowed, message) = verdict(&review);
    assert!(!allowed, "{review}");
    assert_eq!(
        denied_rules(&review),
        ["image-reference", "image-reference"],
        "{message}"
    );
    assert!(
        message.contains("image \"\" in image volume \"data\": rule image-reference"),
        "{message}"
    );
    assert!(
        message
            .contains("image \"Docker.io/Evil:1\" in image volume \"upper\": rule image-reference"),
        "{message}"
    );
}

#[tokio::test]
async fn an_update_adding_an_image_volume_judges_it_and_an_unchanged_volume_is_not_judged_again() {
    let review = answer(
        engine(None),
        fixture_bytes("deployment-image-volume-update"),
    )
    .await;
    let (allowed, message) = verdict(&review);
    assert!(!allowed, "{review}");
    assert_eq!(denied_rules(&review), ["trusted-registry"], "{message}");
    assert!(message.contains("image volume \"data\""), "{message}");

    // The same Deployment, already carrying the volume, gets a label: nothing changed that
    // portcullis judges, so a rule tightened since admission does not block the edit.
    let relabelled = edited("deployment-image-volume-update", |r| {
        let object = r["request"]["object"].clone();
        r["request"]["oldObject"] = object;
        r["request"]["object"]["metadata"]["labels"]["team"] = json!("payments");
    });
    let review = answer(engine(None), relabelled).await;
    assert_eq!(review["response"]["allowed"], true, "{review}");

    // Changing only the volume's pull policy is a change of the volume: judged again.
    let repulled = edited("deployment-image-volume-update", |r| {
        let object = r["request"]["object"].clone();
        r["request"]["oldObject"] = object;
        r["request"]["object"]["spec"]["template"]["spec"]["volumes"][0]["image"]["pullPolicy"] =
            json!("Always");
    });
    let review = answer(engine(None), repulled).await;
    assert_eq!(denied_rules(&review), ["trusted-registry"], "{review}");
}

const VOLUME_POLICY: &str = r#"package portcullis.volumes

import rego.v1

violation contains {"msg": msg, "details": {"volume": image.volume.name}} if {
    some image in input.images
    image.container.kind == "imageVolume"
    not startswith(image.reference, "ghcr.io/acme/")
    msg := sprintf("image volume %s mounts %s (%s)", [image.volume.name, image.reference, image.container.name])
}
"#;

#[tokio::test]
async fn rego_sees_image_volumes_with_their_kind_and_volume_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("volumes.rego"), VOLUME_POLICY).unwrap();
    let yaml = format!(
        "trustedRegistries: []\npolicies:\n  rego:\n    paths: [\"{}\"]\n",
        dir.path().display()
    );
    let review = answer(
        engine(Some(&yaml)),
        fixture_bytes("pod-image-volume-untrusted"),
    )
    .await;
    let (allowed, message) = verdict(&review);
    assert!(!allowed, "{review}");
    assert!(
        message.contains(
            "- image \"docker.io/evil/payload:1.0\" in image volume \"data\": rule \
             portcullis.volumes: image volume data mounts docker.io/evil/payload:1.0 (data)"
        ),
        "{message}"
    );
    let review = answer(
        engine(Some(&yaml)),
        fixture_bytes("pod-image-volume-trusted"),
    )
    .await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
}

#[tokio::test]
async fn scans_and_deprecations_judge_image_volumes() {
    let reports = tempfile::tempdir().unwrap();
    std::fs::copy(
        data_path("trivy/app-vulnerable.json"),
        reports.path().join("app-vulnerable.json"),
    )
    .unwrap();
    let yaml = format!(
        "trustedRegistries: []\nscans:\n  trivyReports: {{directory: \"{}\"}}\nimagePolicies:\n  \
         - name: team-images\n    images: [\"127.0.0.1:5000/team/**\"]\n    vulnerabilities:\n      \
         maxSeverity: HIGH\ndeprecatedImages:\n  - images: [\"ghcr.io/acme/models:2*\"]\n    \
         reason: \"models 2 are withdrawn\"\n    replacement: \"ghcr.io/acme/models:3.0\"\n    \
         sunset: \"2026-12-01\"\n",
        reports.path().display()
    );
    let engine_now = || {
        let loaded = LoadedConfig::from_yaml(&yaml, "test").unwrap();
        let (trivy, _) = TrivyDirectory::open(reports.path().to_owned()).unwrap();
        let clock = FixedClock(portcullis::timeutil::parse_instant("2026-12-02").unwrap());
        Engine::new(loaded, Arc::new(NoRegistry))
            .unwrap()
            .with_scans(trivy)
            .with_clock(Arc::new(clock))
    };
    let vulnerable = edited("pod-image-volume-untrusted", |r| {
        r["request"]["object"]["spec"]["volumes"][0]["image"]["reference"] =
            json!(crate::rejudge::VULNERABLE);
    });
    let review = answer(engine_now(), vulnerable).await;
    let (allowed, message) = verdict(&review);
    assert!(!allowed, "{review}");
    assert!(
        message.contains("in image volume \"data\": rule vulnerability"),
        "{message}"
    );

    let review = answer(engine_now(), fixture_bytes("pod-image-volume-trusted")).await;
    let (allowed, message) = verdict(&review);
    assert!(!allowed, "{review}");
    assert!(
        message.contains(
            "image \"ghcr.io/acme/models:2.1\" in image volume \"data\": rule deprecated-image"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn rejudging_running_pods_judges_their_image_volumes() {
    let pod = fixture("pod-image-volume-untrusted")["request"]["object"].clone();
    let clean = fixture("pod-image-volume-trusted")["request"]["object"].clone();
    let state = AppState::new(engine(None));
    let pods = crate::rejudge::FixedPodList(vec![pod, clean]);
    let summary = portcullis::rejudge::pass(&state, &pods, None)
        .await
        .unwrap();
    assert_eq!(summary.workloads, 2, "{summary:?}");
    assert_eq!(summary.by_outcome.get("denied"), Some(&1), "{summary:?}");
    assert_eq!(
        summary
            .findings
            .get(&("trusted-registry".to_owned(), "enforce")),
        Some(&1),
        "{summary:?}"
    );
}

#[tokio::test]
async fn a_rollout_is_ignored_unless_configured_and_then_judged_like_a_deployment() {
    let ignored = answer(engine(None), fixture_bytes("rollout-untrusted")).await;
    assert_eq!(ignored["response"]["allowed"], true, "{ignored}");
    assert_eq!(
        ignored["response"]["auditAnnotations"]["verdict"], "skipped",
        "{ignored}"
    );

    let judged = answer(
        engine(Some(&with_rollouts())),
        fixture_bytes("rollout-untrusted"),
    )
    .await;
    let (allowed, message) = verdict(&judged);
    assert!(!allowed, "{judged}");
    assert!(
        message.starts_with("portcullis denied Rollout shop/checkout"),
        "{message}"
    );
    assert_eq!(denied_rules(&judged), ["trusted-registry"], "{message}");
    assert!(
        message.contains("image \"evil.example.com/shop/checkout:1.4\" in container \"checkout\""),
        "{message}"
    );

    // From a trusted registry, the hardened template passes.
    let trusted = edited("rollout-untrusted", |r| {
        r["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("ghcr.io/acme/checkout:1.4");
    });
    let review = answer(engine(Some(&with_rollouts())), trusted).await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
}

#[tokio::test]
async fn a_rollout_update_judges_only_what_changed_in_its_template() {
    let old = fixture("rollout-untrusted")["request"]["object"].clone();
    let body = edited("rollout-untrusted", |r| {
        r["request"]["operation"] = json!("UPDATE");
        r["request"]["oldObject"] = old.clone();
        r["request"]["object"]["spec"]["replicas"] = json!(10);
    });
    let review = answer(engine(Some(&with_rollouts())), body).await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
}

#[tokio::test]
async fn a_configured_kind_without_a_pod_spec_at_its_path_is_denied_naming_kind_path_and_shape() {
    let cases = [
        (
            json!("checkout:1.4"),
            "Rollout has no pod spec at `spec.template.spec`: `spec.template` is a string, not an object",
        ),
        (
            Value::Null,
            "Rollout has no pod spec at `spec.template.spec`: nothing at `spec.template`",
        ),
        (
            json!({"spec": {"containers": "checkout"}}),
            "Rollout pod spec at `spec.template.spec` has no container list: `containers` is a string",
        ),
    ];
    for (template, expected) in cases {
        let body = edited("rollout-untrusted", |r| {
            r["request"]["object"]["spec"]["template"] = template.clone();
        });
        let review = answer(engine(Some(&with_rollouts())), body).await;
        let (allowed, message) = verdict(&review);
        assert!(!allowed, "{review}");
        assert_eq!(denied_rules(&review), ["admission-request"], "{message}");
        assert!(message.contains(expected), "{expected} not in: {message}");
    }
}

#[test]
fn config_validate_refuses_bad_custom_workloads_with_their_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "workloads:\n  custom:\n    - {group: argoproj.io, kind: Rollout, resource: rollouts, podSpecPath: ''}\n    \
         - {group: argoproj.io, kind: Rollout, resource: rollouts, podSpecPath: spec.template.spec}\n    \
         - {group: batch, kind: Job, resource: jobs, podSpecPath: spec.template.spec}\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "validate", &path.display().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for expected in [
        "`workloads.custom[0].podSpecPath`: the path is empty",
        "`workloads.custom[1].kind`: argoproj.io/Rollout is already configured at workloads.custom[0]",
        "`workloads.custom[2].kind`: batch/Job is a built-in kind",
    ] {
        assert!(stderr.contains(expected), "{expected} not in: {stderr}");
    }
}

#[test]
fn check_judges_a_rollout_manifest_when_the_kind_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("rollout.json");
    let object = fixture("rollout-untrusted")["request"]["object"].clone();
    std::fs::write(&manifest, serde_json::to_vec(&object).unwrap()).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, with_rollouts()).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .output()
            .unwrap()
    };
    let manifest = manifest.display().to_string();
    let judged = run(&[
        "check",
        "--config",
        &config.display().to_string(),
        &manifest,
    ]);
    let stdout = String::from_utf8_lossy(&judged.stdout);
    assert_eq!(judged.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("trusted-registry"), "{stdout}");
    // The embedded default does not know the kind: not judged, so nothing is denied.
    let ignored = run(&["check", &manifest]);
    assert_eq!(
        ignored.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ignored.stdout)
    );
}
