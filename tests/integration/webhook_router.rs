//! In-process tests of `POST /validate` and the probe routes over the kubectl-made fixtures in
//! `tests/data` (no network): verdicts, modes, UPDATE scoping, bad input, deadlines, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use portcullis::config::ImagePolicy;
use portcullis::evidence::{
    EvidenceError, EvidenceFuture, EvidenceSource, GatherContext, ImageEvidence, SignatureEvidence,
};
use portcullis::reference::ImageRef;
use rstest::rstest;
use serde_json::{Value, json};

#[rstest]
#[case::compliant_deployment("deployment-compliant", true, &[])]
#[case::dry_run_gets_the_same_verdict("deployment-compliant-dry-run", true, &[])]
#[case::untagged_nginx("deployment-nginx-untagged", false, &["no-latest-tag", "run-as-non-root", "privilege-escalation"])]
#[case::excluded_namespace("deployment-kube-system", true, &[])]
#[case::job_from_untrusted_registry("job-untrusted-registry", false, &["trusted-registry"])]
#[case::cronjob_template_with_latest("cronjob-latest", false, &["no-latest-tag"])]
#[case::init_container_with_latest("pod-init-container-latest", false, &["no-latest-tag"])]
#[case::host_network("pod-host-network", false, &["host-namespaces"])]
#[case::invalid_image_reference("pod-invalid-image", false, &["image-reference"])]
#[case::ephemeral_container_update("pod-ephemeral-container-update", false, &["no-latest-tag", "privilege-escalation"])]
#[case::label_edit_on_a_running_legacy_pod("pod-label-update-legacy", true, &[])]
#[case::image_change_on_a_legacy_pod("pod-image-update-legacy", false, &["no-latest-tag", "run-as-non-root", "privilege-escalation"])]
#[case::delete("pod-delete", true, &[])]
#[case::kind_without_pods("configmap-create", true, &[])]
#[tokio::test]
async fn fixtures_get_their_documented_verdict(
    #[case] name: &str,
    #[case] allowed: bool,
    #[case] rules: &[&str],
) {
    let (webhook, _, _) = routers(engine(None));
    let (status, review) = post(&webhook, fixture_bytes(name), "?timeout=10s").await;
    assert_eq!(status, StatusCode::OK, "{review}");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = &review["response"];
    assert_eq!(response["uid"], format!("fixture-{name}"), "uid echoed");
    assert_eq!(response["allowed"], allowed, "{response}");
    assert_eq!(denied_rules(&review), rules, "{response}");
    if allowed {
        assert!(response["status"].get("code").is_none());
    } else {
        assert_eq!(response["status"]["code"], 403);
    }
    assert!(
        response["auditAnnotations"]["config-identity"]
            .as_str()
            .is_some_and(|id| id.starts_with("sha256:")),
        "every decision names the configuration: {response}"
    );
}

#[tokio::test]
async fn a_denial_names_image_container_rule_finding_and_fix() {
    let (webhook, _, _) = routers(engine(None));
    let (_, review) = post(&webhook, fixture_bytes("pod-init-container-latest"), "").await;
    let message = review["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(
        message.starts_with("portcullis denied Pod shop/web-1 (config sha256:"),
        "{message}"
    );
    assert!(
        message.contains(
            "- image \"quay.io/evil:latest\" in initContainer \"setup\": rule no-latest-tag: \
             tag \"latest\" is mutable; fix: pin a version: quay.io/evil:<version>"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn the_ephemeral_container_update_judges_only_the_new_container() {
    let (webhook, _, _) = routers(engine(None));
    let (_, review) = post(
        &webhook,
        fixture_bytes("pod-ephemeral-container-update"),
        "",
    )
    .await;
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("ephemeralContainer \"debugger\""),
        "{message}"
    );
    assert!(!message.contains("\"pause\""), "{message}");
}

/// The compliant Deployment's pod template, for building every workload kind.
fn compliant_template() -> Value {
    fixture("deployment-compliant")["request"]["object"]["spec"]["template"].clone()
}

fn with_bad_image(mut template: Value, site: &str) -> Value {
    let spec = &mut template["spec"];
    let bad = json!({"name": "bad", "image": "nginx:latest",
                     "securityContext": {"allowPrivilegeEscalation": false}});
    match site {
        "containers" => spec["containers"][0]["image"] = json!("nginx:latest"),
        "initContainers" => spec["initContainers"] = json!([bad]),
        "ephemeralContainers" => spec["ephemeralContainers"] = json!([bad]),
        other => unreachable!("{other}"),
    }
    template
}

fn workload(kind: &str, template: Value) -> (String, String, Value) {
    let meta = json!({"name": "w", "namespace": "shop"});
    let selector = json!({"matchLabels": {"app": "web"}});
    let (group, resource, object) = match kind {
        "Pod" => (
            "",
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}),
        ),
        "PodTemplate" => (
            "",
            "podtemplates",
            json!({"apiVersion": "v1", "kind": kind, "metadata": meta, "template": template}),
        ),
        "ReplicationController" => (
            "",
            "replicationcontrollers",
            json!({"apiVersion": "v1", "kind": kind, "metadata": meta,
                   "spec": {"selector": {"app": "web"}, "template": template}}),
        ),
        "ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet" => (
            "apps",
            "workloads",
            json!({"apiVersion": "apps/v1", "kind": kind, "metadata": meta,
                   "spec": {"selector": selector, "template": template}}),
        ),
        "Job" => (
            "batch",
            "jobs",
            json!({"apiVersion": "batch/v1", "kind": kind, "metadata": meta,
                   "spec": {"template": template}}),
        ),
        "CronJob" => (
            "batch",
            "cronjobs",
            json!({"apiVersion": "batch/v1", "kind": kind, "metadata": meta,
                   "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}}),
        ),
        other => unreachable!("{other}"),
    };
    (group.into(), resource.into(), object)
}

#[rstest]
#[tokio::test]
async fn every_workload_kind_and_image_site_is_judged(
    #[values(
        "Pod",
        "PodTemplate",
        "ReplicationController",
        "ReplicaSet",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob"
    )]
    kind: &str,
    #[values("containers", "initContainers", "ephemeralContainers")] site: &str,
) {
    let (webhook, _, _) = routers(engine(None));
    // The same object with a compliant image is admitted …
    let (group, resource, good) = workload(kind, compliant_template());
    let (_, review) = post(&webhook, create_review(&group, kind, &resource, good), "").await;
    assert_eq!(review["response"]["allowed"], true, "{kind}: {review}");
    // … and denied when one image site breaks a rule.
    let (group, resource, bad) = workload(kind, with_bad_image(compliant_template(), site));
    let (status, review) = post(&webhook, create_review(&group, kind, &resource, bad), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        review["response"]["allowed"], false,
        "{kind}/{site}: {review}"
    );
    assert_eq!(denied_rules(&review), ["no-latest-tag"], "{kind}/{site}");
}

fn with_mode(mode: &str) -> String {
    format!("mode: {mode}\ntrustedRegistries: [\"registry.k8s.io/**\"]\n")
}

#[tokio::test]
async fn warn_mode_admits_with_warnings_of_at_most_120_characters() {
    let (webhook, _, _) = routers(engine(Some(&with_mode("warn"))));
    let (_, review) = post(&webhook, fixture_bytes("deployment-nginx-untagged"), "").await;
    let response = &review["response"];
    assert_eq!(response["allowed"], true);
    let warnings = response["warnings"].as_array().expect("warnings");
    // no-latest-tag, trusted-registry (docker.io is not trusted here), run-as-non-root,
    // privilege-escalation
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    for warning in warnings {
        let text = warning.as_str().unwrap();
        assert!(text.chars().count() <= 120, "{text}");
    }
    assert_eq!(response["auditAnnotations"]["verdict"], "warned");
}

#[tokio::test]
async fn audit_mode_admits_silently_and_records_findings_in_audit_annotations() {
    let (webhook, _, _) = routers(engine(Some(&with_mode("audit"))));
    let (_, review) = post(&webhook, fixture_bytes("deployment-nginx-untagged"), "").await;
    let response = &review["response"];
    assert_eq!(response["allowed"], true);
    assert!(response.get("warnings").is_none(), "{response}");
    assert_eq!(response["auditAnnotations"]["verdict"], "audited");
    let findings: Value = serde_json::from_str(
        response["auditAnnotations"]["findings"]
            .as_str()
            .expect("findings annotation"),
    )
    .expect("findings JSON");
    let rules: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"no-latest-tag") && rules.contains(&"trusted-registry"));
}

#[tokio::test]
async fn a_rule_mode_overrides_the_default_mode() {
    let config = "mode: enforce\nrules:\n  noLatestTag: {enabled: true, mode: warn}\n  \
                  runAsNonRoot: {enabled: false}\n  privilegeEscalation: {enabled: false}\n";
    let (webhook, _, _) = routers(engine(Some(config)));
    let (_, review) = post(&webhook, fixture_bytes("deployment-nginx-untagged"), "").await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert_eq!(
        review["response"]["warnings"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn an_invalid_image_reference_is_denied_even_in_audit_mode() {
    let (webhook, _, _) = routers(engine(Some(&with_mode("audit"))));
    let (_, review) = post(&webhook, fixture_bytes("pod-invalid-image"), "").await;
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(denied_rules(&review), ["image-reference"]);
}

/// Mutates a fixture's JSON.
fn edited(name: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review = fixture(name);
    edit(&mut review);
    serde_json::to_vec(&review).unwrap()
}

fn deeply_nested(depth: usize) -> Vec<u8> {
    let mut body = String::from(
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"deep","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":{"containers":[{"name":"c","image":"registry.k8s.io/pause:3.10","x":"#,
    );
    body.push_str(&"[".repeat(depth));
    body.push_str(&"]".repeat(depth));
    body.push_str("}]}}}}");
    body.into_bytes()
}

#[rstest]
#[case::truncated_json(fixture_bytes("deployment-compliant")[..200].to_vec(), "malformed")]
#[case::not_json(b"hello".to_vec(), "malformed")]
#[case::empty_body(Vec::new(), "malformed")]
#[case::wrong_api_version(edited("deployment-compliant", |r| r["apiVersion"] = json!("admission.k8s.io/v1beta1")), "wrong-api-version")]
#[case::wrong_kind(edited("deployment-compliant", |r| r["kind"] = json!("TokenReview")), "wrong-kind")]
#[case::missing_request(edited("deployment-compliant", |r| { r.as_object_mut().unwrap().remove("request"); }), "missing-request")]
#[case::missing_uid(edited("deployment-compliant", |r| { r["request"].as_object_mut().unwrap().remove("uid"); }), "malformed")]
#[case::empty_uid(edited("deployment-compliant", |r| r["request"]["uid"] = json!("")), "missing-uid")]
#[case::object_is_not_an_object(edited("deployment-compliant", |r| r["request"]["object"] = json!("a string")), "malformed")]
#[case::deeply_nested_json(deeply_nested(10_000), "malformed")]
#[tokio::test]
async fn a_body_that_is_not_an_admission_review_is_a_400_with_a_json_error(
    #[case] body: Vec<u8>,
    #[case] reason: &str,
) {
    let (webhook, _, _) = routers(engine(None));
    let (status, error) = post(&webhook, body, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["reason"], reason, "{error}");
    assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()));
}

#[rstest]
#[case::null_object_on_create(edited("deployment-compliant", |r| r["request"]["object"] = Value::Null), "admission-request")]
#[case::pod_spec_missing(edited("deployment-compliant", |r| { r["request"]["object"]["spec"].as_object_mut().unwrap().remove("template"); }), "admission-request")]
#[case::pod_spec_malformed(edited("deployment-compliant", |r| r["request"]["object"]["spec"]["template"]["spec"]["containers"] = json!("nope")), "admission-request")]
#[case::empty_image(edited("deployment-compliant", |r| r["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] = json!("")), "image-reference")]
#[case::image_with_scheme(edited("deployment-compliant", |r| r["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] = json!("https://registry.k8s.io/pause:3.10")), "image-reference")]
#[case::image_with_bad_digest(edited("deployment-compliant", |r| r["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] = json!("registry.k8s.io/pause@sha256:abc")), "image-reference")]
#[tokio::test]
async fn an_admission_review_that_cannot_be_judged_is_denied_not_allowed(
    #[case] body: Vec<u8>,
    #[case] rule: &str,
) {
    let (webhook, _, _) = routers(engine(None));
    let (status, review) = post(&webhook, body, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["response"]["uid"], "fixture-deployment-compliant");
    assert_eq!(review["response"]["allowed"], false, "{review}");
    assert_eq!(denied_rules(&review), [rule], "{review}");
}

#[tokio::test]
async fn an_unknown_kind_is_allowed_without_evaluation() {
    let body = edited("deployment-compliant", |r| {
        r["request"]["kind"] = json!({"group": "example.com", "version": "v1", "kind": "Widget"});
    });
    let (webhook, _, _) = routers(engine(None));
    let (_, review) = post(&webhook, body, "").await;
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["auditAnnotations"]["verdict"], "skipped");
}

#[tokio::test]
async fn an_8_mib_body_is_a_413_and_the_limit_is_configurable() {
    let (webhook, _, _) = routers(engine(None));
    let mut big = fixture("deployment-compliant");
    big["request"]["object"]["metadata"]["annotations"] =
        json!({"filler": "x".repeat(8 * 1024 * 1024)});
    let big = serde_json::to_vec(&big).unwrap();
    let (status, error) = post(&webhook, big, "").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["reason"], "too-large");

    let (small_limit, _, _) = routers(engine(Some("limits: {maxRequestBytes: 1024}\n")));
    let (status, _) = post(&small_limit, fixture_bytes("deployment-compliant"), "").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// An evidence source that never answers in time.
#[derive(Debug)]
struct NeverAnswers;

impl EvidenceSource for NeverAnswers {
    fn gather<'a>(
        &'a self,
        _: &'a ImageRef,
        _: &'a [&'a ImagePolicy],
        _: &'a GatherContext,
    ) -> EvidenceFuture<'a> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Err(EvidenceError::new(
                "unreachable",
                "unreachable",
                "unreachable",
            ))
        })
    }
}

/// An evidence source whose registry always fails.
#[derive(Debug)]
struct RegistryDown;

impl EvidenceSource for RegistryDown {
    fn gather<'a>(
        &'a self,
        image: &'a ImageRef,
        _: &'a [&'a ImagePolicy],
        _: &'a GatherContext,
    ) -> EvidenceFuture<'a> {
        Box::pin(async move {
            Err(EvidenceError::new(
                image.written(),
                image.registry(),
                "connection refused",
            ))
        })
    }
}

/// An evidence source that vouches for everything.
#[derive(Debug)]
struct AllSigned;

impl EvidenceSource for AllSigned {
    fn gather<'a>(
        &'a self,
        _: &'a ImageRef,
        _: &'a [&'a ImagePolicy],
        _: &'a GatherContext,
    ) -> EvidenceFuture<'a> {
        Box::pin(async {
            Ok(ImageEvidence::signatures_only(
                Some(format!("sha256:{}", "a".repeat(64))),
                SignatureEvidence::Verified {
                    signers: vec!["key team.pub".into()],
                },
            ))
        })
    }
}

fn signed_policy_config(on_error: &str) -> String {
    format!(
        "onError: {on_error}\nimagePolicies:\n  - name: signed\n    images: [\"registry.k8s.io/**\"]\n    \
         signatures:\n      keys:\n        - pem: |\n            -----BEGIN PUBLIC KEY-----\n            \
         MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n            -----END PUBLIC KEY-----\n"
    )
}

#[tokio::test(start_paused = true)]
async fn late_evidence_gets_the_configured_on_error_outcome_before_the_api_server_timeout() {
    for (on_error, allowed) in [("deny", false), ("allow", true)] {
        let (webhook, _, _) = routers(engine_with(
            Some(&signed_policy_config(on_error)),
            Arc::new(NeverAnswers),
        ));
        let started = tokio::time::Instant::now();
        let (status, review) = post(
            &webhook,
            fixture_bytes("deployment-compliant"),
            "?timeout=3s",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        // Paused clock: exactly the budget elapsed (3 s minus the 500 ms margin).
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
        let response = &review["response"];
        assert_eq!(response["allowed"], allowed, "{on_error}: {response}");
        let text = if allowed {
            response["warnings"][0].as_str().unwrap().to_owned()
        } else {
            response["status"]["message"].as_str().unwrap().to_owned()
        };
        assert!(text.contains("deadline"), "{text}");
    }
}

#[tokio::test]
async fn an_unreachable_registry_is_denied_by_default_and_named_in_the_message() {
    let (webhook, _, _) = routers(engine_with(
        Some(&signed_policy_config("deny")),
        Arc::new(RegistryDown),
    ));
    let (_, review) = post(&webhook, fixture_bytes("deployment-compliant"), "").await;
    let response = &review["response"];
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("from registry.k8s.io: connection refused"),
        "{message}"
    );
    assert_eq!(response["auditAnnotations"]["verdict"], "error-denied");
}

#[tokio::test]
async fn on_error_allow_admits_an_unreachable_registry_with_a_warning() {
    let (webhook, _, _) = routers(engine_with(
        Some(&signed_policy_config("allow")),
        Arc::new(RegistryDown),
    ));
    let (_, review) = post(&webhook, fixture_bytes("deployment-compliant"), "").await;
    let response = &review["response"];
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );
    assert_eq!(response["auditAnnotations"]["verdict"], "error-allowed");
}

#[tokio::test]
async fn signature_policies_judge_the_gathered_evidence() {
    // Without a registry client nothing can be verified: fail closed.
    let (webhook, _, _) = routers(engine(Some(&signed_policy_config("allow"))));
    let (_, review) = post(&webhook, fixture_bytes("deployment-compliant"), "").await;
    assert_eq!(review["response"]["allowed"], false, "{review}");
    assert_eq!(denied_rules(&review), ["signature"]);
    // With verified evidence the same request is admitted.
    let (webhook, _, _) = routers(engine_with(
        Some(&signed_policy_config("deny")),
        Arc::new(AllSigned),
    ));
    let (_, review) = post(&webhook, fixture_bytes("deployment-compliant"), "").await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
}

#[tokio::test]
async fn a_label_edit_does_not_touch_the_registry_even_when_it_is_down() {
    let config = signed_policy_config("deny").replace("registry.k8s.io/**", "docker.io/**");
    let (webhook, _, _) = routers(engine_with(Some(&config), Arc::new(RegistryDown)));
    let (_, review) = post(&webhook, fixture_bytes("pod-label-update-legacy"), "").await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
}

#[tokio::test]
async fn metrics_count_reviews_by_verdict_kind_and_operation() {
    let (webhook, probes, state) = routers(engine(None));
    post(&webhook, fixture_bytes("deployment-nginx-untagged"), "").await;
    post(&webhook, fixture_bytes("deployment-compliant"), "").await;
    post(&webhook, b"nope".to_vec(), "").await;
    let (status, text) = get(&probes, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        r#"portcullis_reviews_total{verdict="denied",kind="Deployment",operation="CREATE"} 1"#,
        r#"portcullis_reviews_total{verdict="allowed",kind="Deployment",operation="CREATE"} 1"#,
        r#"portcullis_rejected_requests_total{reason="malformed"} 1"#,
        "portcullis_review_duration_seconds_bucket",
        "portcullis_reviews_in_flight 0",
        &format!(
            r#"portcullis_config_identity{{identity="{}"}} 1"#,
            state.engine().identity()
        ),
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
}

#[tokio::test]
async fn readiness_follows_the_state_and_health_is_always_ok() {
    let (_, probes, state) = routers(engine(None));
    assert_eq!(get(&probes, "/readyz").await.0, StatusCode::OK);
    state.set_ready(false);
    assert_eq!(
        get(&probes, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&probes, "/healthz").await.0, StatusCode::OK);
}
