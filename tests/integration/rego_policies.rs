//! Rego policies end to end with real Rego: Gatekeeper-style v0 policies run unchanged,
//! parameters, modes and match from the configuration, what reaches `input`, failures that
//! must end in a clear outcome within the limits (syntax errors, runtime errors, recursion,
//! runaway comprehensions) while the engine keeps answering, the bundle identity, UPDATE
//! scoping, and `portcullis policy test` / `config validate` as users run them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use crate::common::*;
use portcullis::admission;
use portcullis::config::LoadedConfig;
use portcullis::decision::{Outcome, Verdict};
use portcullis::engine::{Engine, EngineError};
use portcullis::evidence::NoRegistry;
use serde_json::{Value, json};

/// Built-in rules off, so only the Rego policies under test decide.
const QUIET: &str = "trustedRegistries: []\nrules:\n  noLatestTag: {enabled: false}\n  runAsNonRoot: {enabled: false}\n  privileged: {enabled: false}\n  privilegeEscalation: {enabled: false}\n  hostNamespaces: {enabled: false}\n  hostPorts: {enabled: false}\n";

/// Gatekeeper library style, Rego v0, unchanged: `violation[{"msg": msg}]` over
/// `input.review.object` and `input.parameters`.
const DISALLOWED_TAGS: &str = r#"package k8sdisallowedtags

violation[{"msg": msg}] {
    container := input_containers[_]
    tags := [forbid | tag = input.parameters.tags[_] ; forbid = endswith(container.image, concat(":", ["", tag]))]
    any(tags)
    not is_exempt(container)
    msg := sprintf("container <%v> uses a disallowed tag <%v>; disallowed tags are %v", [container.name, container.image, input.parameters.tags])
}

violation[{"msg": msg}] {
    container := input_containers[_]
    tag := [contains(container.image, ":")]
    not all(tag)
    not is_exempt(container)
    msg := sprintf("container <%v> didn't specify an image tag <%v>", [container.name, container.image])
}

is_exempt(container) {
    exempt_images := object.get(object.get(input, "parameters", {}), "exemptImages", [])
    img := container.image
    exemption := exempt_images[_]
    img == exemption
}

input_containers[c] {
    c := input.review.object.spec.containers[_]
}
input_containers[c] {
    c := input.review.object.spec.initContainers[_]
}
"#;

const REQUIRED_LABELS: &str = r#"package k8srequiredlabels

get_message(parameters, _default) = msg {
  not parameters.message
  msg := _default
}

get_message(parameters, _default) = msg {
  msg := parameters.message
}

violation[{"msg": msg, "details": {"missing_labels": missing}}] {
  provided := {label | input.review.object.metadata.labels[label]}
  required := {label | label := input.parameters.labels[_].key}
  missing := required - provided
  count(missing) > 0
  def_msg := sprintf("you must provide labels: %v", [missing])
  msg := get_message(input.parameters, def_msg)
}
"#;

struct Policies {
    dir: tempfile::TempDir,
}

impl Policies {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A configuration loading this folder, with `extra` YAML appended under `policies.rego`.
    fn config(&self, top: &str, rego: &str) -> String {
        format!(
            "{QUIET}{top}\npolicies:\n  rego:\n    paths: [{:?}]\n{rego}",
            self.path().display().to_string()
        )
    }

    fn engine(&self, top: &str, rego: &str) -> Engine {
        try_engine(&self.config(top, rego)).unwrap()
    }
}

fn try_engine(yaml: &str) -> Result<Engine, EngineError> {
    let loaded = LoadedConfig::from_yaml(yaml, "test").unwrap();
    Engine::new(loaded, Arc::new(NoRegistry))
}

fn pod(name: &str, labels: Value, containers: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"containers": containers},
    })
}

async fn judge(engine: &Engine, body: Vec<u8>) -> (Value, Verdict) {
    let (review, verdict) = admission::handle(engine, &body, None).await.unwrap();
    (serde_json::to_value(review).unwrap(), verdict)
}

async fn judge_pod(engine: &Engine, object: Value) -> (Value, Verdict) {
    judge(engine, create_review("", "Pod", "pods", object)).await
}

#[tokio::test]
async fn a_gatekeeper_v0_policy_with_parameters_runs_unchanged() {
    let policies = Policies::new(&[("disallowed-tags.rego", DISALLOWED_TAGS)]);
    let engine = policies.engine(
        "",
        "    policies:\n      - package: k8sdisallowedtags\n        parameters: {tags: [latest], exemptImages: [\"nginx:latest\"]}\n",
    );
    let (review, verdict) = judge_pod(
        &engine,
        pod(
            "web",
            json!({}),
            json!([
                {"name": "app", "image": "ghcr.io/acme/app:latest"},
                {"name": "exempt", "image": "nginx:latest"},
                {"name": "bare", "image": "ghcr.io/acme/bare"},
            ]),
        ),
    )
    .await;
    assert!(!verdict.allowed);
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("rule k8sdisallowedtags: container <app> uses a disallowed tag <ghcr.io/acme/app:latest>; disallowed tags are [\"latest\"]"),
        "{message}"
    );
    assert!(
        message.contains("container <bare> didn't specify an image tag <ghcr.io/acme/bare>"),
        "{message}"
    );
    assert!(!message.contains("<exempt>"), "{message}");
    assert_eq!(verdict.findings.len(), 2);

    let (_, allowed) = judge_pod(
        &engine,
        pod(
            "web",
            json!({}),
            json!([{"name": "app", "image": "ghcr.io/acme/app:1.0"}]),
        ),
    )
    .await;
    assert!(allowed.allowed, "{:?}", allowed.message);
}

#[tokio::test]
async fn parameters_mode_and_match_come_from_the_configuration() {
    let policies = Policies::new(&[("labels.rego", REQUIRED_LABELS)]);
    let settings = |mode: &str, namespaces: &str| {
        format!(
            "    policies:\n      - package: k8srequiredlabels\n        mode: {mode}\n        parameters: {{labels: [{{key: owner}}]}}\n        match: {{kinds: [Pod], namespaces: [{namespaces}]}}\n"
        )
    };
    let unlabelled = pod(
        "web",
        json!({"app": "web"}),
        json!([{"name": "app", "image": "nginx:1.27"}]),
    );
    let labelled = pod(
        "web",
        json!({"owner": "team-a"}),
        json!([{"name": "app", "image": "nginx:1.27"}]),
    );

    let enforce = policies.engine("", &settings("enforce", "sh*"));
    let (_, denied) = judge_pod(&enforce, unlabelled.clone()).await;
    assert!(!denied.allowed);
    assert_eq!(denied.findings[0].rule, "k8srequiredlabels");
    assert_eq!(
        denied.findings[0].found,
        "you must provide labels: {\"owner\"}"
    );
    let (_, fine) = judge_pod(&enforce, labelled).await;
    assert!(fine.allowed);

    let warn = policies.engine("", &settings("warn", "shop"));
    let (_, warned) = judge_pod(&warn, unlabelled.clone()).await;
    assert!(warned.allowed);
    assert_eq!(warned.outcome, Outcome::Warned);
    assert!(
        warned.warnings[0].contains("you must provide labels"),
        "{:?}",
        warned.warnings
    );

    let elsewhere = policies.engine("", &settings("enforce", "team-*"));
    let (_, not_matched) = judge_pod(&elsewhere, unlabelled).await;
    assert_eq!(not_matched.outcome, Outcome::Allowed);
}

#[tokio::test]
async fn input_carries_the_review_images_parameters_and_now() {
    let policies = Policies::new(&[(
        "echo.rego",
        r#"package echo
import rego.v1

violation contains {"msg": msg, "details": {"container": img.container.name}} if {
    some img in input.images
    msg := sprintf("%s %s %s/%s tag=%s pinned=%v kind=%s scan=%s op=%s ns=%s user=%s p=%s now=%v", [
        img.container.kind, img.container.name, img.registry, img.repository, img.tag, img.pinned,
        input.review.kind.kind, img.scan.state, input.review.operation, input.review.namespace,
        input.review.userInfo.username, input.parameters.p, is_string(input.now)])
}
"#,
    )]);
    let engine = policies.engine(
        "",
        "    policies:\n      - package: echo\n        parameters: {p: x}\n",
    );
    let object = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "app", "image": "ghcr.io/acme/app:1.0@sha256:0000000000000000000000000000000000000000000000000000000000000000"}],
        }}},
    });
    let (_, verdict) = judge(
        &engine,
        create_review("apps", "Deployment", "deployments", object),
    )
    .await;
    // A Rego set is ordered by value, not by container.
    let found: Vec<&str> = verdict.findings.iter().map(|f| f.found.as_str()).collect();
    assert_eq!(
        found,
        [
            "container app ghcr.io/acme/app tag=1.0 pinned=true kind=Deployment scan=missing op=CREATE ns=shop user=kubernetes-admin p=x now=true",
            "initContainer init docker.io/library/busybox tag=latest pinned=false kind=Deployment scan=noDigest op=CREATE ns=shop user=kubernetes-admin p=x now=true",
        ]
    );
}

#[test]
fn a_syntax_error_fails_the_engine_with_file_and_line() {
    let policies = Policies::new(&[
        (
            "good.rego",
            "package good\nimport rego.v1\ndeny contains \"x\" if false\n",
        ),
        (
            "broken.rego",
            "package broken\nimport rego.v1\n\ndeny contains msg if {\n    msg := \n}\n",
        ),
    ]);
    let err = try_engine(&policies.config("", ""))
        .unwrap_err()
        .to_string();
    let broken = policies.path().join("broken.rego").display().to_string();
    assert!(err.contains(&format!("{broken}:5:")), "{err}");
}

#[test]
fn a_recursive_function_is_refused_at_load_time() {
    let policies = Policies::new(&[(
        "loop.rego",
        "package loop\nimport rego.v1\n\nforever(n) := forever(n + 1)\n\ndeny contains \"never\" if forever(1)\n",
    )]);
    let err = try_engine(&policies.config("", ""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("loop.rego:4: recursive function: loop.forever -> loop.forever"),
        "{err}"
    );
}

#[test]
fn a_configured_package_that_is_not_loaded_is_an_error() {
    let policies = Policies::new(&[("labels.rego", REQUIRED_LABELS)]);
    let err =
        try_engine(&policies.config("", "    policies:\n      - package: k8srequiredlabel\n"))
            .unwrap_err()
            .to_string();
    assert!(err.contains("policies.rego.policies[0].package"), "{err}");
    assert!(err.contains("k8srequiredlabels"), "{err}");
}

#[tokio::test]
async fn failures_at_run_time_take_the_on_error_outcome_and_the_engine_keeps_answering() {
    let policies = Policies::new(&[
        (
            "divide.rego",
            "package divide\nimport rego.v1\n\ndeny contains msg if {\n    input.review.object.metadata.name == \"divide\"\n    msg := sprintf(\"%v\", [1 / 0])\n}\n",
        ),
        (
            "cycle.rego",
            "package cycle\nimport rego.v1\n\nr if { input.review.object.metadata.name == \"cycle\"; r }\n\ndeny contains \"cycle\" if r\n",
        ),
        (
            "spin.rego",
            "package spin\nimport rego.v1\n\ndeny contains \"big\" if {\n    input.review.object.metadata.name == \"spin\"\n    n := count([x | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); x := i * j])\n    n > 0\n}\n",
        ),
    ]);
    let engine = policies.engine("", "    timeoutMillis: 200\n");
    let container = json!([{"name": "app", "image": "nginx:1.27"}]);
    for (name, expected) in [
        ("divide", "divide.rego:6:"),
        ("cycle", "recursion detected"),
        ("spin", "execution exceeded time limit"),
    ] {
        let (review, verdict) = judge_pod(&engine, pod(name, json!({}), container.clone())).await;
        assert_eq!(verdict.outcome, Outcome::ErrorDenied, "{name}: {verdict:?}");
        assert!(!verdict.allowed);
        let message = review["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(
            review["response"]["auditAnnotations"]["error"]
                .as_str()
                .unwrap()
                .contains(expected)
        );
        // The same engine still judges the next request normally.
        let (_, next) = judge_pod(&engine, pod("fine", json!({}), container.clone())).await;
        assert_eq!(next.outcome, Outcome::Allowed, "after {name}");
    }

    let lenient = policies.engine("onError: allow\n", "    timeoutMillis: 200\n");
    let (_, allowed) = judge_pod(&lenient, pod("divide", json!({}), container)).await;
    assert!(allowed.allowed);
    assert_eq!(allowed.outcome, Outcome::ErrorAllowed);
    assert!(
        allowed.warnings[0].contains("divide by zero"),
        "{:?}",
        allowed.warnings
    );
}

#[tokio::test]
async fn the_identity_covers_policy_contents_and_is_in_every_decision() {
    let policies = Policies::new(&[("labels.rego", REQUIRED_LABELS)]);
    let yaml = policies.config("", "");
    let config_only = LoadedConfig::from_yaml(&yaml, "t").unwrap().identity;
    let engine = try_engine(&yaml).unwrap();
    assert_ne!(engine.identity(), config_only);
    let (review, _) = judge_pod(
        &engine,
        pod(
            "web",
            json!({}),
            json!([{"name": "app", "image": "nginx:1.27"}]),
        ),
    )
    .await;
    assert_eq!(
        review["response"]["auditAnnotations"]["config-identity"],
        engine.identity()
    );

    std::fs::write(
        policies.path().join("labels.rego"),
        REQUIRED_LABELS.replace("you must provide", "please provide"),
    )
    .unwrap();
    let changed = try_engine(&yaml).unwrap();
    assert_ne!(changed.identity(), engine.identity());
    assert_eq!(try_engine(&yaml).unwrap().identity(), changed.identity());
}

#[tokio::test]
async fn updates_rejudge_changed_containers_and_keep_whole_object_findings() {
    let policies = Policies::new(&[
        ("disallowed-tags.rego", DISALLOWED_TAGS),
        (
            "by-container.rego",
            "package by_container\nimport rego.v1\n\nviolation contains {\"msg\": sprintf(\"%s is latest\", [img.image]), \"details\": {\"container\": img.container.name}} if {\n    some img in input.images\n    img.tag == \"latest\"\n}\n",
        ),
    ]);
    let engine = policies.engine(
        "",
        "    policies:\n      - package: k8sdisallowedtags\n        parameters: {tags: [latest]}\n",
    );
    let old = pod(
        "web",
        json!({}),
        json!([{"name": "legacy", "image": "ghcr.io/acme/legacy:latest"}, {"name": "app", "image": "ghcr.io/acme/app:1"}]),
    );
    let mut new = old.clone();
    new["spec"]["containers"][1]["image"] = json!("ghcr.io/acme/app:2");
    let mut review: Value = serde_json::from_slice(&create_review("", "Pod", "pods", new)).unwrap();
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = old;
    let (_, verdict) = judge(&engine, serde_json::to_vec(&review).unwrap()).await;
    let rules: Vec<&str> = verdict.findings.iter().map(|f| f.rule.as_str()).collect();
    // The per-container finding about the unchanged `legacy` container is dropped; the
    // Gatekeeper policy judged the whole object and says nothing about containers, so its
    // finding stays (as Gatekeeper would deny).
    assert_eq!(rules, ["k8sdisallowedtags"]);
}

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("PORTCULLIS_LOG")
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_shipped_policy_library_passes_its_own_tests() {
    let library = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let output = portcullis(&["policy", "test", library.to_str().unwrap()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
    for policy in [
        "no-root-user",
        "no-privileged",
        "allowed-registries",
        "no-latest-tag",
        "required-resource-limits",
        "image-age",
        "critical-vulnerabilities",
    ] {
        assert!(
            out.contains(&format!("policies/{policy}\n")),
            "{policy} not run:\n{out}"
        );
    }
}

#[test]
fn policy_test_prints_what_differed_and_exits_1() {
    let policies = Policies::new(&[
        ("labels.rego", REQUIRED_LABELS),
        (
            "labels_test.rego",
            "package k8srequiredlabels_test\nimport rego.v1\ntest_fails if false\n",
        ),
        (
            "tests.yaml",
            "parameters: {labels: [{key: owner}]}\ncases:\n  - name: labelled\n    object: {apiVersion: v1, kind: Pod, metadata: {name: p, labels: {owner: a}}, spec: {containers: []}}\n    violations: []\n  - name: wrongly expected\n    object: {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: []}}\n    violations: [\"something else\"]\n",
        ),
    ]);
    let output = portcullis(&["policy", "test", policies.path().to_str().unwrap()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("  ok    labelled"), "{out}");
    assert!(out.contains("  FAIL  wrongly expected"), "{out}");
    assert!(
        out.contains("expected, not found: \"something else\""),
        "{out}"
    );
    assert!(
        out.contains("found, not expected: \"you must provide labels: {\\\"owner\\\"}\""),
        "{out}"
    );
    assert!(
        out.contains("  FAIL  k8srequiredlabels_test.test_fails (rego)"),
        "{out}"
    );
    assert!(out.contains("1 passed, 2 failed"), "{out}");
}

#[test]
fn config_validate_names_the_broken_file_and_line_or_shows_the_bundle() {
    let policies = Policies::new(&[("labels.rego", REQUIRED_LABELS)]);
    let config = policies.path().join("config.yaml");
    std::fs::write(&config, policies.config("", "")).unwrap();
    let output = portcullis(&["config", "validate", config.to_str().unwrap()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("rego: 1 file(s) (1 v0)"), "{out}");
    assert!(
        out.contains("rego policy: k8srequiredlabels (violation)"),
        "{out}"
    );

    std::fs::write(
        policies.path().join("bad.rego"),
        "package bad\n\nallow if {\n",
    )
    .unwrap();
    let output = portcullis(&["config", "validate", config.to_str().unwrap()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(out.contains("bad.rego:"), "{out}");
}

#[test]
fn a_forced_syntax_refuses_the_other_one() {
    let policies = Policies::new(&[("labels.rego", REQUIRED_LABELS)]);
    let path = policies.path().display().to_string();
    let forced = |syntax: &str| {
        format!(
            "{QUIET}policies:\n  rego:\n    paths:\n      - {{path: {path:?}, syntax: {syntax}}}\n"
        )
    };
    assert!(try_engine(&forced("v0")).is_ok());
    let err = try_engine(&forced("v1")).unwrap_err().to_string();
    assert!(err.contains("labels.rego:"), "{err}");
}

#[test]
fn check_denies_manifests_with_a_rego_policy_and_names_it() {
    let policies = Policies::new(&[("disallowed-tags.rego", DISALLOWED_TAGS)]);
    let config = policies.path().join("config.yaml");
    std::fs::write(
        &config,
        policies.config(
            "",
            "    policies:\n      - package: k8sdisallowedtags\n        parameters: {tags: [latest]}\n",
        ),
    )
    .unwrap();
    let manifest = policies.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec:\n  containers: [{name: app, image: \"nginx:latest\"}]\n",
    )
    .unwrap();
    let output = portcullis(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "-o",
        "json",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results[0]["findings"][0]["rule"], "k8sdisallowedtags");
    assert_eq!(
        results[0]["findings"][0]["found"],
        "container <app> uses a disallowed tag <nginx:latest>; disallowed tags are [\"latest\"]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_reviews_queues_for_policy_slots_and_every_one_gets_its_own_verdict() {
    let policies = Policies::new(&[("disallowed-tags.rego", DISALLOWED_TAGS)]);
    let engine = policies.engine(
        "",
        "    policies:\n      - package: k8sdisallowedtags\n        parameters: {tags: [latest]}\n",
    );
    // Far more reviews than evaluation slots (twice the cores): none is lost, none gets
    // another review's findings.
    let reviews = (0..64).map(|i| {
        let tag = if i % 2 == 0 { "latest" } else { "1.0" };
        let body = create_review(
            "",
            "Pod",
            "pods",
            pod(
                &format!("web{i}"),
                json!({}),
                json!([{"name": format!("app{i}"), "image": format!("ghcr.io/acme/app:{tag}")}]),
            ),
        );
        let engine = &engine;
        async move { (i, judge(engine, body).await) }
    });
    for (i, (review, verdict)) in futures_util::future::join_all(reviews).await {
        assert_eq!(
            verdict.allowed,
            i % 2 == 1,
            "review {i}: {:?}",
            verdict.message
        );
        if i % 2 == 0 {
            let message = review["response"]["status"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("container <app{i}>")),
                "{message}"
            );
        }
    }
}

#[test]
fn the_rego_input_document_is_the_request_exactly_as_through_json() {
    // A real AdmissionRequest as the server parses it, with an UPDATE's oldObject, userInfo
    // extras, a dry run and odd JSON (floats, nulls, nested arrays) in the object.
    let mut object = pod(
        "app",
        json!({"owner": "team-a"}),
        json!([{"name": "web", "image": "nginx:1.27", "resources": {"limits": {"cpu": 0.5}},
                "args": [null, ["x"], {"y": 1e3}]}]),
    );
    object["metadata"]["annotations"] = json!({"a": "b"});
    let mut body: Value =
        serde_json::from_slice(&create_review("", "Pod", "pods", object.clone())).unwrap();
    body["request"]["operation"] = json!("UPDATE");
    body["request"]["oldObject"] = object;
    body["request"]["dryRun"] = json!(true);
    body["request"]["userInfo"] = json!({"username": "u", "groups": ["g"], "extra": {"k": ["v"]}});
    let request = admission::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
    let now = time::OffsetDateTime::UNIX_EPOCH;
    let direct = portcullis::policy::rego::input_document(&request, &[], now).unwrap();
    let direct = direct
        .engine_form(
            |_| -> Result<regorus::Value, portcullis::policy::value::ValueError> {
                unreachable!("built with the document")
            },
        )
        .cloned()
        .unwrap()
        .unwrap();
    let json = portcullis::policy::input::InputDocument::new(
        serde_json::to_value(&request).unwrap(),
        &[],
        now,
    );
    let through_json = regorus::Value::from(Value::Object(json.base().clone()));
    assert_eq!(direct, through_json);
    assert_eq!(direct.to_string(), through_json.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rego_route_gives_byte_identical_answers_and_a_slow_policy_goes_back_to_the_pool() {
    use portcullis::engine::RegoRoute;
    let policies = Policies::new(&[
        ("disallowed-tags.rego", DISALLOWED_TAGS),
        ("labels.rego", REQUIRED_LABELS),
        (
            "spin.rego",
            "package spin\nimport rego.v1\n\ndeny contains \"big\" if {\n    input.review.object.metadata.name == \"spin\"\n    n := count([x | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); x := i * j])\n    n > 0\n}\n",
        ),
        (
            "divide.rego",
            "package divide\nimport rego.v1\n\ndeny contains msg if {\n    input.review.object.metadata.name == \"divide\"\n    msg := sprintf(\"%v\", [1 / 0])\n}\n",
        ),
    ]);
    let rego = "    timeoutMillis: 200\n    policies:\n      - package: k8sdisallowedtags\n        parameters: {tags: [latest]}\n      - package: k8srequiredlabels\n        parameters: {labels: [{key: owner}]}\n";
    let reviews: Vec<Vec<u8>> = [
        ("web", json!({"owner": "shop"}), "ghcr.io/acme/app:1.0"),
        (
            "latest",
            json!({"owner": "shop"}),
            "ghcr.io/acme/app:latest",
        ),
        ("unlabelled", json!({}), "ghcr.io/acme/app"),
        ("divide", json!({"owner": "shop"}), "ghcr.io/acme/app:1.0"),
        ("spin", json!({"owner": "shop"}), "ghcr.io/acme/app:1.0"),
    ]
    .into_iter()
    .map(|(name, labels, image)| {
        create_review(
            "",
            "Pod",
            "pods",
            pod(name, labels, json!([{"name": "app", "image": image}])),
        )
    })
    .collect();
    let answers = |route: RegoRoute| {
        let engine = policies.engine("", rego).with_rego_route(route);
        let reviews = reviews.clone();
        async move {
            let mut answers = Vec::new();
            // Twice over, so the adaptive route has a cost history when it answers again.
            for body in reviews.iter().chain(reviews.iter()) {
                let (review, _) = judge(&engine, body.clone()).await;
                answers.push(without_elapsed(&serde_json::to_string(&review).unwrap()));
            }
            (answers, engine)
        }
    };
    let (pool, _) = answers(RegoRoute::Pool).await;
    let (inline, _) = answers(RegoRoute::Inline).await;
    let (adaptive, engine) = answers(RegoRoute::Adaptive).await;
    assert_eq!(pool, inline);
    assert_eq!(pool, adaptive);
    assert!(pool[1].contains("disallowed tag") && pool[2].contains("owner"));
    assert!(
        pool[4].contains("execution exceeded time limit"),
        "{}",
        pool[4]
    );
    // The last evaluation ran into the 200 ms limit: the next ones go to the pool.
    assert!(!engine.rego_runs_inline());
}

/// The text with regorus's measured time (`elapsed=<n>ns`, which differs run to run) elided.
fn without_elapsed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("elapsed=") {
        let (before, after) = rest.split_at(at + "elapsed=".len());
        out.push_str(before);
        out.push('…');
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}
