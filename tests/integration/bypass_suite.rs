//! Bypass attempts, table-driven: every row is an AdmissionReview (real API-server shapes) that
//! tries to get an unsigned or untrusted image past an enforce configuration with a signature
//! requirement (a key; images signed by the independent signer of
//! `portcullis_test_support::registry`) and one trusted registry (the real `docker-registry` on
//! loopback). Each row runs through both `portcullis review` (the CLI, the AdmissionReview on
//! stdin) and a real `portcullis serve` child over HTTPS (its generated CA), built by
//! `portcullis_test_support::serve`, and must get the same, expected answer: denied naming
//! the rule (and the site), refused as not an AdmissionReview, or — the controls — admitted.
//! Nothing is mocked; the API server is simply not there (the rows are what it would send).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::path::PathBuf;

use crate::common::{self, review_cli};
use portcullis_test_support::install_crypto_provider;
use portcullis_test_support::registry::{
    ImageSpec, IndependentKey, Layout, Mode, Registry, push_signature_layers, sign_image,
    simple_signing_payload, write_file,
};
use portcullis_test_support::serve::ServeChild;
use serde_json::{Value, json};

/// What a row must get, on both paths.
#[derive(Debug, Clone)]
enum Expect {
    /// `allowed: true`.
    Allowed,
    /// `allowed: false`, the message containing this (the rule, usually with the site).
    Denied(String),
    /// Not an AdmissionReview: HTTP 400 / exit code 2, the error containing this.
    Refused(&'static str),
}

struct Row {
    name: &'static str,
    body: Vec<u8>,
    expect: Expect,
}

/// The registry, its images and the configuration the rows are judged by.
struct World {
    registry: Registry,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// `127.0.0.1:<port>` of the running registry.
    host: String,
    /// A second loopback registry, trusted and configured like the first, that is down.
    down: String,
    signed_digest: String,
    unsigned_digest: String,
    child_digest: String,
}

impl World {
    async fn new() -> Self {
        install_crypto_provider();
        let registry = Registry::start(Mode::Plain);
        let host = registry.host.clone();
        let key = IndependentKey::generate();
        let other_key = IndependentKey::generate();
        let push = |repository: &str, tag: &str, marker: &str| {
            let mut layout = Layout::new();
            let digest = layout.single(tag, &ImageSpec::new(marker));
            registry.push_layout(layout.path(), tag, repository);
            digest
        };
        let signed_digest = push("team/app", "v1", "signed");
        sign_image(&registry, "team/app", &signed_digest, &key).await;
        let unsigned_digest = push("team/app", "v2", "unsigned");
        // A valid signature by the key, made for team/app, copied to team/copied's digest.
        let copied = push("team/copied", "v1", "copied");
        let payload = simple_signing_payload(&format!("{host}/team/app"), &copied);
        let signature = key.sign_base64(&payload);
        push_signature_layers(&registry, "team/copied", &copied, &[(payload, signature)]).await;
        // A valid signature by the key whose payload names another digest (the signed one).
        let moved = push("team/moved", "v1", "moved");
        let payload = simple_signing_payload(&format!("{host}/team/moved"), &signed_digest);
        let signature = key.sign_base64(&payload);
        push_signature_layers(&registry, "team/moved", &moved, &[(payload, signature)]).await;
        // Signed, but by a key the policy does not name.
        let foreign = push("team/foreign", "v1", "foreign");
        sign_image(&registry, "team/foreign", &foreign, &other_key).await;
        // A multi-arch index whose amd64 child is signed, the index itself not.
        let mut layout = Layout::new();
        let (_index, children) = layout.multi(
            "v1",
            &[
                ImageSpec::new("multi-amd64"),
                ImageSpec::new("multi-arm64").arch("arm64"),
            ],
        );
        registry.push_layout(layout.path(), "v1", "team/multi");
        let child_digest = children[0].1.clone();
        sign_image(&registry, "team/multi", &child_digest, &key).await;
        // Unsigned images under an expired and a live exception.
        push("team/expired", "v1", "expired");
        push("team/waived", "v1", "waived");

        let dir = tempfile::tempdir().unwrap();
        let key_path = write_file(dir.path(), "team.pub", &key.public_pem());
        let down = format!(
            "127.0.0.1:{}",
            portcullis_test_support::registry::free_port()
        );
        let config = write_file(
            dir.path(),
            "config.yaml",
            &format!(
                "mode: enforce\nonError: deny\nexclude:\n  namespaces: [kube-system]\n\
                 registries:\n  - {{host: \"{host}\", insecure: true}}\n  - {{host: \"{down}\", insecure: true}}\n\
                 evidence: {{maxAttempts: 1}}\n\
                 trustedRegistries: [\"{host}/**\", \"{down}/**\"]\n\
                 imagePolicies:\n  - name: signed-team\n    images: [\"{host}/**\", \"{down}/**\"]\n    \
                 signatures:\n      keys: [{{path: \"{}\"}}]\n\
                 workloads:\n  custom:\n    - {{group: argoproj.io, kind: Rollout, resource: rollouts, podSpecPath: spec.template.spec}}\n\
                 exceptions:\n  - {{name: old-waiver, images: [\"{host}/team/expired:*\"], rules: [signature], \
                 reason: \"migration\", owner: team, expires: \"2020-01-01\"}}\n  \
                 - {{name: live-waiver, images: [\"{host}/team/waived:*\"], rules: [signature], \
                 reason: \"vendor image, ticket OPS-7\", owner: team, expires: \"2099-12-31\"}}\n",
                key_path.display()
            ),
        );
        Self {
            registry,
            dir,
            config,
            host,
            down,
            signed_digest,
            unsigned_digest,
            child_digest,
        }
    }

    /// The signed image, by tag.
    fn signed(&self) -> String {
        format!("{}/team/app:v1", self.host)
    }
    /// The unsigned image, by tag.
    fn unsigned(&self) -> String {
        format!("{}/team/app:v2", self.host)
    }
}

/// A hardened security context, so only image rules can fire.
fn hardened() -> Value {
    json!({"runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false})
}

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
           "resources": {}, "securityContext": hardened()})
}

/// A pod spec with one container `app` running `image`.
fn spec(image: &str) -> Value {
    json!({"containers": [container("app", image)], "restartPolicy": "Always"})
}

fn meta(name: &str, namespace: &str) -> Value {
    json!({"name": name, "namespace": namespace, "labels": {"app": name}})
}

/// A pod-bearing object of a built-in or configured kind around `pod_spec`.
fn object(kind: &str, pod_spec: Value) -> Value {
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": pod_spec});
    let selector = json!({"matchLabels": {"app": "web"}});
    match kind {
        "Pod" => {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("web", "shop"), "spec": pod_spec})
        }
        "PodTemplate" => {
            json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta("web", "shop"), "template": template})
        }
        "ReplicationController" => {
            json!({"apiVersion": "v1", "kind": kind, "metadata": meta("web", "shop"),
                                           "spec": {"replicas": 1, "selector": {"app": "web"}, "template": template}})
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            json!({"apiVersion": "apps/v1", "kind": kind,
            "metadata": meta("web", "shop"), "spec": {"selector": selector, "template": template}})
        }
        "Job" => json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("web", "shop"),
                        "spec": {"template": {"spec": with_restart(pod_spec, "Never")}}}),
        "CronJob" => {
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("web", "shop"),
                            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": with_restart(pod_spec, "OnFailure")}}}}})
        }
        "Rollout" => {
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": meta("web", "shop"),
                            "spec": {"replicas": 2, "selector": selector, "template": template,
                                     "strategy": {"canary": {"steps": [{"setWeight": 20}]}}}})
        }
        other => unreachable!("no builder for {other}"),
    }
}

fn with_restart(mut pod_spec: Value, policy: &str) -> Value {
    pod_spec["restartPolicy"] = json!(policy);
    pod_spec
}

/// (group, version, resource) of each kind.
fn gvr(kind: &str) -> (&'static str, &'static str, &'static str) {
    match kind {
        "Pod" => ("", "v1", "pods"),
        "PodTemplate" => ("", "v1", "podtemplates"),
        "ReplicationController" => ("", "v1", "replicationcontrollers"),
        "Deployment" => ("apps", "v1", "deployments"),
        "ReplicaSet" => ("apps", "v1", "replicasets"),
        "StatefulSet" => ("apps", "v1", "statefulsets"),
        "DaemonSet" => ("apps", "v1", "daemonsets"),
        "Job" => ("batch", "v1", "jobs"),
        "CronJob" => ("batch", "v1", "cronjobs"),
        "Rollout" => ("argoproj.io", "v1alpha1", "rollouts"),
        other => unreachable!("no resource for {other}"),
    }
}

/// The AdmissionReview the API server sends for `object` (and `old` on UPDATE).
fn review(kind: &str, operation: &str, object: Value, old: Option<Value>) -> Value {
    let (group, version, resource) = gvr(kind);
    let mut request = json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "name": "web",
        "namespace": "shop",
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": old,
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": if operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" }},
    });
    if old.is_none() {
        request["oldObject"] = Value::Null;
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

fn create(kind: &str, pod_spec: Value) -> Value {
    review(kind, "CREATE", object(kind, pod_spec), None)
}

fn bytes(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).unwrap()
}

/// A Pod CREATE whose one container runs `image`.
fn pod_with(image: &str) -> Vec<u8> {
    bytes(&create("Pod", spec(image)))
}

/// An UPDATE of pods/ephemeralcontainers adding a debug container running `image`.
fn ephemeral_update(world: &World, image: &str) -> Vec<u8> {
    let old = object("Pod", spec(&world.signed()));
    let mut new = old.clone();
    let mut debug = container("debugger", image);
    debug["stdin"] = json!(true);
    debug["tty"] = json!(true);
    debug["targetContainerName"] = json!("app");
    new["spec"]["ephemeralContainers"] = json!([debug]);
    let mut review = review("Pod", "UPDATE", new, Some(old));
    review["request"]["subResource"] = json!("ephemeralcontainers");
    review["request"]["requestSubResource"] = json!("ephemeralcontainers");
    bytes(&review)
}

/// A pod spec with the signed container and an image volume `data` of `reference`.
fn volume_spec(world: &World, reference: Value) -> Value {
    let mut pod_spec = spec(&world.signed());
    pod_spec["volumes"] = json!([
        {"name": "config", "configMap": {"name": "settings"}},
        {"name": "data", "image": reference}
    ]);
    pod_spec["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    pod_spec
}

/// A Pod UPDATE from `old` to `new` pod specs.
fn pod_update(old: Value, new: Value) -> Vec<u8> {
    bytes(&review(
        "Pod",
        "UPDATE",
        object("Pod", new),
        Some(object("Pod", old)),
    ))
}

/// Replaces the JSON text `"<marker>"` (a placeholder string value) with `raw` in the body.
fn splice(body: &Value, marker: &str, raw: &str) -> Vec<u8> {
    let text = serde_json::to_string(body).unwrap();
    let needle = format!("\"{marker}\"");
    assert!(text.contains(&needle), "{marker} not in the body");
    text.replacen(&needle, raw, 1).into_bytes()
}

fn denied(text: &str) -> Expect {
    Expect::Denied(text.to_owned())
}

/// `image "<image>" in <site> "<name>": rule <rule>`.
fn site(image: &str, label: &str, name: &str, rule: &str) -> Expect {
    denied(&format!("image {image:?} in {label} {name:?}: rule {rule}"))
}

fn in_container(image: &str, rule: &str) -> Expect {
    site(image, "container", "app", rule)
}

fn attempts(w: &World) -> Vec<Row> {
    let unsigned = w.unsigned();
    let signed = w.signed();
    let host = &w.host;
    let port = host.rsplit(':').next().unwrap_or_default().to_owned();
    let sig = |image: &str| in_container(image, "signature");
    let untrusted = |image: &str| in_container(image, "trusted-registry");
    let mut rows = Vec::new();
    let mut row = |name: &'static str, body: Vec<u8>, expect: Expect| {
        rows.push(Row { name, body, expect });
    };

    // Every image site.
    row(
        "site_container_unsigned",
        pod_with(&unsigned),
        sig(&unsigned),
    );
    let mut init = spec(&signed);
    init["initContainers"] = json!([container("init", &unsigned)]);
    row(
        "site_init_container_unsigned",
        bytes(&create("Pod", init)),
        site(&unsigned, "initContainer", "init", "signature"),
    );
    row(
        "site_ephemeral_container_unsigned_via_update_of_pods_ephemeralcontainers",
        ephemeral_update(w, &unsigned),
        site(&unsigned, "ephemeralContainer", "debugger", "signature"),
    );
    row(
        "site_image_volume_unsigned",
        bytes(&create(
            "Pod",
            volume_spec(
                w,
                json!({"reference": unsigned, "pullPolicy": "IfNotPresent"}),
            ),
        )),
        site(&unsigned, "image volume", "data", "signature"),
    );
    row(
        "site_image_volume_without_reference",
        bytes(&create(
            "Pod",
            volume_spec(w, json!({"pullPolicy": "Always"})),
        )),
        site("", "image volume", "data", "image-reference"),
    );
    row(
        "site_container_without_image",
        bytes(&create(
            "Pod",
            json!({"containers": [container("app", &signed), {"name": "blank", "securityContext": hardened()}]}),
        )),
        site("", "container", "blank", "image-reference"),
    );

    // Every workload kind, unsigned image in its template.
    for kind in [
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
        "ReplicationController",
        "PodTemplate",
        "Rollout",
    ] {
        let name: &'static str = Box::leak(format!("kind_{kind}_unsigned").into_boxed_str());
        row(name, bytes(&create(kind, spec(&unsigned))), sig(&unsigned));
    }
    let mut old_version = create("CronJob", spec(&unsigned));
    old_version["request"]["kind"]["version"] = json!("v1beta1");
    old_version["request"]["object"]["apiVersion"] = json!("batch/v1beta1");
    row(
        "kind_CronJob_old_api_version_unsigned",
        bytes(&old_version),
        sig(&unsigned),
    );
    row(
        "kind_Rollout_image_volume_unsigned",
        bytes(&create(
            "Rollout",
            volume_spec(w, json!({"reference": unsigned})),
        )),
        site(&unsigned, "image volume", "data", "signature"),
    );

    // UPDATEs that swap or add images.
    row(
        "update_swaps_the_image_to_an_unsigned_one",
        pod_update(spec(&signed), spec(&unsigned)),
        sig(&unsigned),
    );
    let mut added = spec(&signed);
    added["containers"]
        .as_array_mut()
        .unwrap()
        .push(container("sidecar", &unsigned));
    row(
        "update_adds_an_unsigned_sidecar",
        pod_update(spec(&signed), added.clone()),
        site(&unsigned, "container", "sidecar", "signature"),
    );
    let mut renamed = spec(&unsigned);
    renamed["containers"][0]["name"] = json!("app2");
    row(
        "update_renames_the_container_and_swaps_its_image",
        pod_update(spec(&signed), renamed),
        site(&unsigned, "container", "app2", "signature"),
    );
    let mut moved = spec(&signed);
    moved["initContainers"] = json!([container("app", &unsigned)]);
    row(
        "update_adds_an_init_container_named_like_the_signed_container",
        pod_update(spec(&signed), moved),
        site(&unsigned, "initContainer", "app", "signature"),
    );
    row(
        "update_adds_an_unsigned_image_volume_to_a_deployment",
        bytes(&review(
            "Deployment",
            "UPDATE",
            object("Deployment", volume_spec(w, json!({"reference": unsigned}))),
            Some(object("Deployment", spec(&signed))),
        )),
        site(&unsigned, "image volume", "data", "signature"),
    );
    row(
        "update_without_old_object_is_judged_in_full",
        bytes(&review(
            "Pod",
            "UPDATE",
            object("Pod", spec(&unsigned)),
            None,
        )),
        sig(&unsigned),
    );
    let mut twins = spec(&signed);
    twins["containers"]
        .as_array_mut()
        .unwrap()
        .push(container("app", &unsigned));
    row(
        "update_adds_a_second_container_with_the_same_name",
        pod_update(spec(&signed), twins),
        sig(&unsigned),
    );
    let mut twin_volumes = volume_spec(w, json!({"reference": signed}));
    twin_volumes["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "data", "image": {"reference": unsigned}}));
    row(
        "update_adds_a_second_image_volume_with_the_same_name",
        pod_update(volume_spec(w, json!({"reference": signed})), twin_volumes),
        site(&unsigned, "image volume", "data", "signature"),
    );

    // Reference spellings.
    for (name, image) in [
        ("spelling_docker_io_alias", "docker.io/team/app:v2"),
        (
            "spelling_index_docker_io_alias",
            "index.docker.io/team/app:v2",
        ),
        (
            "spelling_registry_1_docker_io_alias",
            "registry-1.docker.io/team/app:v2",
        ),
        ("spelling_docker_hub_short_name", "team/app:v2"),
    ] {
        row(name, pod_with(image), untrusted(image));
    }
    let spellings: Vec<(&'static str, String, &'static str)> = vec![
        (
            "spelling_localhost_for_the_trusted_ip",
            format!("localhost:{port}/team/app:v2"),
            "trusted-registry",
        ),
        (
            "spelling_upper_case_host",
            format!("LOCALHOST:{port}/team/app:v2"),
            "trusted-registry",
        ),
        (
            "spelling_without_the_port",
            "127.0.0.1/team/app:v2".to_owned(),
            "trusted-registry",
        ),
        (
            "spelling_port_with_leading_zero",
            format!("127.0.0.1:0{port}/team/app:v2"),
            "trusted-registry",
        ),
        (
            "spelling_trailing_dot_host",
            format!("127.0.0.1.:{port}/team/app:v2"),
            "image-reference",
        ),
        (
            "spelling_ipv6_loopback",
            format!("[::1]:{port}/team/app:v2"),
            "image-reference",
        ),
        (
            "spelling_ipv4_mapped_ipv6",
            format!("[::ffff:127.0.0.1]:{port}/team/app:v2"),
            "image-reference",
        ),
        (
            "spelling_upper_case_repository",
            format!("{host}/Team/app:v2"),
            "image-reference",
        ),
        (
            "spelling_leading_whitespace",
            format!(" {unsigned}"),
            "image-reference",
        ),
        (
            "spelling_trailing_whitespace",
            format!("{unsigned} "),
            "image-reference",
        ),
        (
            "spelling_trailing_newline",
            format!("{unsigned}\n"),
            "image-reference",
        ),
        (
            "spelling_cyrillic_a_in_repository",
            format!("{host}/team/\u{0430}pp:v2"),
            "image-reference",
        ),
        (
            "spelling_fullwidth_digit_in_port",
            format!("127.0.0.1:{}\u{FF10}/team/app:v2", &port[..port.len() - 1]),
            "image-reference",
        ),
        (
            "spelling_zero_width_space_in_host",
            format!("127.0.0.\u{200B}1:{port}/team/app:v2"),
            "image-reference",
        ),
        (
            "spelling_scheme_prefix",
            format!("http://{unsigned}"),
            "image-reference",
        ),
        (
            "digest_wrong_algorithm",
            format!("{host}/team/app@sha512:{}", "a".repeat(128)),
            "signature",
        ),
        (
            "digest_short_hex",
            format!(
                "{host}/team/app@{}",
                &w.signed_digest[..w.signed_digest.len() - 1]
            ),
            "image-reference",
        ),
        (
            "digest_upper_case_hex",
            format!(
                "{host}/team/app@{}",
                w.unsigned_digest.to_uppercase().replace("SHA256", "sha256")
            ),
            "image-reference",
        ),
        (
            "digest_signed_tag_with_unsigned_digest",
            format!("{signed}@{}", w.unsigned_digest),
            "signature",
        ),
        (
            "digest_unsigned_digest_only",
            format!("{host}/team/app@{}", w.unsigned_digest),
            "signature",
        ),
    ];
    for (name, image, rule) in spellings {
        let body = pod_with(&image);
        row(name, body, in_container(&image, rule));
    }

    // Signatures that belong to something else.
    for (name, image) in [
        (
            "signature_of_another_repository",
            format!("{host}/team/copied:v1"),
        ),
        (
            "signature_naming_another_digest",
            format!("{host}/team/moved:v1"),
        ),
        (
            "signature_by_another_key",
            format!("{host}/team/foreign:v1"),
        ),
        (
            "signature_on_a_child_does_not_count_for_the_index",
            format!("{host}/team/multi:v1"),
        ),
        ("signature_missing_on_an_unsigned_tag", unsigned.clone()),
    ] {
        let body = pod_with(&image);
        row(name, body, sig(&image));
    }

    // Namespace and kind spoofing.
    let deployment = object("Deployment", spec(&unsigned));
    let mut spoofed = review("Pod", "CREATE", deployment, None);
    spoofed["request"]["resource"]["resource"] = json!("pods");
    row(
        "spoof_request_kind_pod_with_a_deployment_object",
        bytes(&spoofed),
        denied("rule admission-request: Pod pod spec at `spec` has no container list"),
    );
    let mut excluded_in_object = create("Pod", spec(&unsigned));
    excluded_in_object["request"]["object"]["metadata"]["namespace"] = json!("kube-system");
    row(
        "spoof_excluded_namespace_named_only_in_the_object",
        bytes(&excluded_in_object),
        sig(&unsigned),
    );
    let mut no_request_namespace = excluded_in_object.clone();
    no_request_namespace["request"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    row(
        "spoof_no_request_namespace_and_an_excluded_one_in_the_object",
        bytes(&no_request_namespace),
        sig(&unsigned),
    );

    // Duplicate JSON keys: the API server never sends them (it re-encodes what it decoded), so
    // a body carrying them is refused rather than guessed at.
    let mut dup = spec("__DUP__");
    dup["containers"][0]["image"] = json!("__DUP__");
    let dup_review = create("Pod", dup);
    row(
        "duplicate_image_key_signed_then_unsigned",
        splice(
            &dup_review,
            "__DUP__",
            &format!("\"{signed}\",\"image\":\"{unsigned}\""),
        ),
        Expect::Refused("duplicate key `image`"),
    );
    row(
        "duplicate_image_key_unsigned_then_signed",
        splice(
            &dup_review,
            "__DUP__",
            &format!("\"{unsigned}\",\"image\":\"{signed}\""),
        ),
        Expect::Refused("duplicate key `image`"),
    );
    // Go's decoder merges a repeated object into the first: the init container of the first
    // `spec` would be persisted, while a last-wins reader would see only the second.
    let mut merged = create("Pod", json!("__SPEC__"));
    merged["request"]["object"]["spec"] = json!("__SPEC__");
    let mut first = spec(&signed);
    first["initContainers"] = json!([container("init", &unsigned)]);
    row(
        "duplicate_spec_key_hides_an_init_container",
        splice(
            &merged,
            "__SPEC__",
            &format!(
                "{},\"spec\":{}",
                serde_json::to_string(&first).unwrap(),
                serde_json::to_string(&spec(&signed)).unwrap()
            ),
        ),
        Expect::Refused("duplicate key `spec`"),
    );

    // Exceptions and faults.
    let expired = format!("{host}/team/expired:v1");
    row(
        "exception_expired_does_not_waive_the_signature",
        pod_with(&expired),
        sig(&expired),
    );
    let down = format!("{}/team/app:v1", w.down);
    row(
        "registry_down_gets_on_error_deny",
        pod_with(&down),
        denied("could not verify it"),
    );
    rows
}

fn controls(w: &World) -> Vec<Row> {
    let signed = w.signed();
    let host = &w.host;
    let mut rows = Vec::new();
    let mut row = |name: &'static str, body: Vec<u8>| {
        rows.push(Row {
            name,
            body,
            expect: Expect::Allowed,
        });
    };
    row("control_site_container_signed", pod_with(&signed));
    let mut init = spec(&signed);
    init["initContainers"] = json!([container("init", &signed)]);
    row(
        "control_site_init_container_signed",
        bytes(&create("Pod", init)),
    );
    row(
        "control_site_ephemeral_container_signed",
        ephemeral_update(w, &signed),
    );
    row(
        "control_site_image_volume_signed",
        bytes(&create("Pod", volume_spec(w, json!({"reference": signed})))),
    );
    for kind in [
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
        "ReplicationController",
        "PodTemplate",
        "Rollout",
    ] {
        let name: &'static str = Box::leak(format!("control_kind_{kind}_signed").into_boxed_str());
        row(name, bytes(&create(kind, spec(&signed))));
    }
    row(
        "control_signed_by_digest",
        pod_with(&format!("{host}/team/app@{}", w.signed_digest)),
    );
    row(
        "control_signed_tag_and_digest",
        pod_with(&format!("{signed}@{}", w.signed_digest)),
    );
    row(
        "control_signed_child_of_a_multi_arch_index_by_digest",
        pod_with(&format!("{host}/team/multi@{}", w.child_digest)),
    );
    row(
        "control_live_exception_waives_the_signature",
        pod_with(&format!("{host}/team/waived:v1")),
    );
    let mut relabelled = object("Pod", spec(&signed));
    let old = relabelled.clone();
    relabelled["metadata"]["labels"]["team"] = json!("payments");
    row(
        "control_update_of_labels_only",
        bytes(&review("Pod", "UPDATE", relabelled, Some(old))),
    );
    let mut excluded = create("Pod", spec(&w.unsigned()));
    excluded["request"]["namespace"] = json!("kube-system");
    excluded["request"]["object"]["metadata"]["namespace"] = json!("kube-system");
    row(
        "control_excluded_namespace_is_not_evaluated",
        bytes(&excluded),
    );
    rows
}

/// Whether an answer meets the expectation; `Err` says what was seen instead.
fn check(expect: &Expect, allowed: Option<bool>, message: &str) -> Result<(), String> {
    match (expect, allowed) {
        (Expect::Allowed, Some(true)) => Ok(()),
        (Expect::Denied(text), Some(false)) if message.contains(text.as_str()) => Ok(()),
        (Expect::Refused(text), None) if message.contains(text) => Ok(()),
        _ => Err(format!("allowed {allowed:?}: {message}")),
    }
}

/// The CLI's answer: (allowed, message), allowed `None` when it refused the body (exit 2).
fn through_cli(world: &World, body: &[u8]) -> (Option<bool>, String) {
    let (code, answer, stderr) = review_cli(&world.config, body);
    match code {
        Some(0) => (
            answer["response"]["allowed"].as_bool(),
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ),
        Some(2) => (None, stderr),
        other => (Some(true), format!("exit {other:?}: {stderr}")),
    }
}

async fn through_https(
    serve: &ServeChild,
    client: &reqwest::Client,
    body: &[u8],
) -> (Option<bool>, String) {
    let response = client
        .post(serve.validate_url("10s"))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    match status.as_u16() {
        200 => (
            answer["response"]["allowed"].as_bool(),
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ),
        400 => (
            None,
            answer["error"].as_str().unwrap_or_default().to_owned(),
        ),
        other => (Some(true), format!("HTTP {other}: {answer}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bypass_attempt_is_denied_and_every_control_admitted_by_review_and_serve() {
    let world = World::new().await;
    let attempts = attempts(&world);
    let controls = controls(&world);
    assert!(attempts.len() >= 40, "{} attempts", attempts.len());
    let serve = common::serve().config(&world.config).spawn();
    let client = serve.client();
    let mut failures = Vec::new();
    for row in attempts.iter().chain(controls.iter()) {
        let (allowed, message) = through_cli(&world, &row.body);
        if let Err(seen) = check(&row.expect, allowed, &message) {
            failures.push(format!(
                "{} (review): expected {:?}, got {seen}",
                row.name, row.expect
            ));
        }
        let (allowed, message) = through_https(&serve, &client, &row.body).await;
        if let Err(seen) = check(&row.expect, allowed, &message) {
            failures.push(format!(
                "{} (serve): expected {:?}, got {seen}",
                row.name, row.expect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}",
        failures.len(),
        2 * (attempts.len() + controls.len()),
        failures.join("\n")
    );
    // The registry really was asked (the verdicts are not decided without it).
    assert!(world.registry.request_count() > 0);
    let _ = &world.dir;
    let _ = &world.registry.host;
}
