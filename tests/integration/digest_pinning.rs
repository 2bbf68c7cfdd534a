//! Opt-in digest pinning (`POST /mutate`, `pinning.enabled`) against a real `docker-registry`
//! on loopback with signed images: every image site of a Pod is pinned to the digest the
//! registry resolved (the index digest for a multi-arch image), the base64 JSON patch applies
//! with the `json-patch` crate, the pinned Pod is admitted by `/validate` from the same cache,
//! a moved tag still pins the verified digest, and what is not pinned stays as written: pinned
//! images, untagged ones, Deployments, excluded namespaces, an unreachable registry (the
//! validating webhook's `onError` decides), pinning switched off. The first test runs over
//! real HTTPS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::registry_evidence::RegistryEvidence;
use portcullis::server::{self, AppState, ServeOptions, TlsSource};
use serde_json::{Value, json};

use crate::common::{self, post, post_to, routers};
use portcullis_test_support::registry::{
    ImageSpec, IndependentKey, Layout, Mode, Registry, sign_image, write_file,
};

struct Setup {
    registry: Registry,
    key: IndependentKey,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        portcullis_test_support::install_crypto_provider();
        Self {
            registry: Registry::start(Mode::Plain),
            key: IndependentKey::generate(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn push(&self, repository: &str, tag: &str, marker: &str) -> String {
        let mut layout = Layout::new();
        let digest = layout.single(tag, &ImageSpec::new(marker));
        self.registry.push_layout(layout.path(), tag, repository);
        digest
    }

    async fn push_signed(&self, repository: &str, tag: &str, marker: &str) -> String {
        let digest = self.push(repository, tag, marker);
        sign_image(&self.registry, repository, &digest, &self.key).await;
        digest
    }

    /// Signature policy over `host/team/**`, pod-security rules off, pinning as given.
    fn config(&self, pinning: bool, extra: &str) -> String {
        let key = write_file(self.dir.path(), "team.pub", &self.key.public_pem());
        format!(
            "{}rules:\n  runAsNonRoot: {{enabled: false}}\n  privilegeEscalation: {{enabled: false}}\n\
             exclude:\n  namespaces: [kube-system]\npinning:\n  enabled: {pinning}\n{extra}\
             imagePolicies:\n  - name: team\n    images: [\"{}/team/**\"]\n    signatures:\n      keys:\n        - path: {}\n",
            self.registry.registry_yaml(),
            self.registry.host,
            key.display()
        )
    }

    fn image(&self, path: &str) -> String {
        format!("{}/{path}", self.registry.host)
    }
}

fn engine(yaml: &str) -> Engine {
    let loaded = LoadedConfig::from_yaml(yaml, "test").unwrap();
    let evidence = Arc::new(RegistryEvidence::new(&loaded.config, None).unwrap());
    Engine::new(loaded, evidence).unwrap()
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "app", "namespace": "shop"}, "spec": spec})
}

fn review_of(pod: &Value, namespace: &str) -> Value {
    let mut review: Value =
        serde_json::from_slice(&common::create_review("", "Pod", "pods", pod.clone())).unwrap();
    review["request"]["namespace"] = json!(namespace);
    review
}

async fn mutate(router: &axum::Router, review: &Value) -> Value {
    let (status, body) = post_to(
        router,
        "/mutate",
        serde_json::to_vec(review).unwrap(),
        "?timeout=10s",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert_eq!(body["response"]["uid"], review["request"]["uid"], "{body}");
    body
}

/// The decoded JSON patch of a `/mutate` answer (None without one).
fn patch_of(answer: &Value) -> Option<json_patch::Patch> {
    let encoded = answer["response"]["patch"].as_str()?;
    assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

fn patched(object: &Value, answer: &Value) -> Value {
    let mut object = object.clone();
    json_patch::patch(&mut object, &patch_of(answer).unwrap()).unwrap();
    object
}

fn annotation(answer: &Value, key: &str) -> Value {
    match answer["response"]["auditAnnotations"][key].as_str() {
        Some(text) if text.starts_with('[') => serde_json::from_str(text).unwrap(),
        Some(text) => json!(text),
        None => Value::Null,
    }
}

async fn validate(router: &axum::Router, object: &Value) -> Value {
    let (status, body) = post(
        router,
        serde_json::to_vec(&review_of(object, "shop")).unwrap(),
        "?timeout=10s",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Pins through real HTTPS: a `serve`-style server with a generated CA.
async fn mutate_over_https(engine: Engine, review: &Value) -> (Value, Arc<AppState>) {
    let dir = tempfile::tempdir().unwrap();
    let ca_out = dir.path().join("ca.pem");
    let webhook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let running = server::start(
        webhook,
        probe,
        engine,
        Arc::new(|_| Err("no reloads here".into())),
        ServeOptions {
            config_path: None,
            tls: TlsSource::Generated {
                dns_names: vec![],
                ca_out: ca_out.clone(),
            },
            shutdown_delay: Duration::from_millis(10),
            drain_timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    let ca = std::fs::read(&ca_out).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = client
        .post(format!(
            "https://127.0.0.1:{}/mutate?timeout=10s",
            running.webhook_addr.port()
        ))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(review).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let state = running.state.clone();
    running.shutdown().await.unwrap();
    (answer, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_site_of_a_pod_is_pinned_over_https_and_the_pinned_pod_is_admitted_from_the_cache() {
    let setup = Setup::new();
    let app = setup.push_signed("team/app", "v1", "app").await;
    let data = setup.push_signed("team/data", "v3", "data").await;
    // A multi-arch image: pinned to the index digest, the one signatures are checked on.
    let mut layout = Layout::new();
    let (index, children) = layout.multi(
        "v2",
        &[
            ImageSpec::new("tools-amd64").arch("amd64"),
            ImageSpec::new("tools-arm64").arch("arm64"),
        ],
    );
    setup
        .registry
        .push_layout(layout.path(), "v2", "team/tools");
    sign_image(&setup.registry, "team/tools", &index, &setup.key).await;
    let object = pod(json!({
        "initContainers": [{"name": "init", "image": setup.image("team/tools:v2")}],
        "containers": [
            {"name": "side", "image": "docker.io/library/busybox:1.36"},
            {"name": "app", "image": setup.image("team/app:v1")}
        ],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "data", "image": {"reference": setup.image("team/data:v3")}}
        ]
    }));
    let yaml = setup.config(true, "");
    let loaded = LoadedConfig::from_yaml(&yaml, "test").unwrap();
    let evidence = Arc::new(RegistryEvidence::new(&loaded.config, None).unwrap());
    let (answer, state) = mutate_over_https(
        Engine::new(loaded, evidence.clone()).unwrap(),
        &review_of(&object, "shop"),
    )
    .await;

    let pinned = patched(&object, &answer);
    let spec = &pinned["spec"];
    assert_eq!(
        spec["initContainers"][0]["image"],
        format!("{}@{index}", setup.image("team/tools:v2"))
    );
    assert!(children.iter().all(|(_, child)| *child != index));
    assert_eq!(
        spec["containers"][1]["image"],
        format!("{}@{app}", setup.image("team/app:v1"))
    );
    assert_eq!(
        spec["volumes"][1]["image"]["reference"],
        format!("{}@{data}", setup.image("team/data:v3"))
    );
    // No image policy matches busybox: never resolved, never touched; nor is the emptyDir.
    assert_eq!(
        spec["containers"][0]["image"],
        "docker.io/library/busybox:1.36"
    );
    assert_eq!(
        spec["volumes"][0],
        json!({"name": "scratch", "emptyDir": {}})
    );

    assert_eq!(annotation(&answer, "pinning"), "patched", "{answer}");
    let listed = annotation(&answer, "pinned");
    let list: Vec<(&str, &str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["container"].as_str().unwrap(),
                p["from"].as_str().unwrap(),
                p["to"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(list.len(), 3, "{listed}");
    assert!(list.contains(&(
        "app",
        setup.image("team/app:v1").as_str(),
        format!("{}@{app}", setup.image("team/app:v1")).as_str()
    )));
    assert_eq!(annotation(&answer, "not-pinned")[0]["container"], "side");
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains("portcullis_pinned_images_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_pinning_reviews_total{result=\"patched\"} 1"),
        "{metrics}"
    );

    // The validating webhook judges the pinned references: same digests, signed, admitted,
    // and every answer comes from the cache the pinning filled (no registry request).
    let before = setup.registry.request_count();
    let (router, _, _) =
        routers(Engine::new(LoadedConfig::from_yaml(&yaml, "test").unwrap(), evidence).unwrap());
    let verdict = validate(&router, &pinned).await;
    assert_eq!(verdict["response"]["allowed"], true, "{verdict}");
    assert_eq!(setup.registry.request_count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_pins_the_verified_digest_and_a_fresh_replica_pins_and_judges_the_new_one() {
    let setup = Setup::new();
    let verified = setup.push_signed("team/app", "v1", "first").await;
    let yaml = setup.config(true, "");
    let (router, _, _) = routers(engine(&yaml));
    let object = pod(json!({"containers": [{"name": "app", "image": setup.image("team/app:v1")}]}));
    let first = patched(&object, &mutate(&router, &review_of(&object, "shop")).await);
    assert_eq!(validate(&router, &first).await["response"]["allowed"], true);

    // The tag moves to an unsigned image. Within evidence.tagTtlSeconds this replica still
    // knows v1 as the digest it verified, and pins that: the kubelet pulls what was judged,
    // not whatever the tag names at pull time.
    let moved = setup.push("team/app", "v1", "second");
    assert_ne!(moved, verified);
    let again = patched(&object, &mutate(&router, &review_of(&object, "shop")).await);
    assert_eq!(
        again["spec"]["containers"][0]["image"],
        format!("{}@{verified}", setup.image("team/app:v1"))
    );

    // A replica with a cold cache resolves the tag now and pins the new digest; the
    // validating webhook judges that pinned reference and denies it (not signed).
    let (fresh, _, _) = routers(engine(&yaml));
    let pinned = patched(&object, &mutate(&fresh, &review_of(&object, "shop")).await);
    assert_eq!(
        pinned["spec"]["containers"][0]["image"],
        format!("{}@{moved}", setup.image("team/app:v1"))
    );
    let verdict = validate(&fresh, &pinned).await;
    assert_eq!(verdict["response"]["allowed"], false, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_untagged_deployments_and_excluded_namespaces_are_left_alone() {
    let setup = Setup::new();
    let digest = setup.push_signed("team/app", "v1", "app").await;
    setup.push_signed("team/app", "latest", "latest").await;
    let (router, _, _) = routers(engine(&setup.config(true, "")));

    let already = pod(json!({"containers": [
        {"name": "app", "image": format!("{}@{digest}", setup.image("team/app:v1"))},
        {"name": "latest", "image": setup.image("team/app")}
    ]}));
    let answer = mutate(&router, &review_of(&already, "shop")).await;
    assert!(patch_of(&answer).is_none(), "{answer}");
    assert_eq!(annotation(&answer, "pinning"), "unchanged");
    let skipped = annotation(&answer, "not-pinned");
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("already pinned"),
        "{skipped}"
    );
    assert!(
        skipped[1]["reason"].as_str().unwrap().contains("latest"),
        "{skipped}"
    );

    // A Deployment keeps its tags (GitOps tools compare it with Git); its Pods are pinned.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": setup.image("team/app:v1")}]}}}
    });
    let body = common::create_review("apps", "Deployment", "deployments", deployment);
    let (status, answer) = post_to(&router, "/mutate", body, "?timeout=10s").await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], true);
    assert!(patch_of(&answer).is_none(), "{answer}");
    assert_eq!(annotation(&answer, "pinning"), "not-applicable");

    // A Pod in an excluded namespace is not evaluated, so not pinned either.
    let tagged = pod(json!({"containers": [{"name": "app", "image": setup.image("team/app:v1")}]}));
    let answer = mutate(&router, &review_of(&tagged, "kube-system")).await;
    assert!(patch_of(&answer).is_none(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_container_update_pins_only_the_new_container() {
    let setup = Setup::new();
    let digest = setup.push_signed("team/debug", "v1", "debug").await;
    setup.push_signed("team/app", "v1", "app").await;
    let (router, _, _) = routers(engine(&setup.config(true, "")));
    let old = pod(json!({"containers": [{"name": "app", "image": setup.image("team/app:v1")}]}));
    let mut new = old.clone();
    new["spec"]["ephemeralContainers"] =
        json!([{"name": "debugger", "image": setup.image("team/debug:v1")}]);
    let mut review = review_of(&new, "shop");
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["subResource"] = json!("ephemeralcontainers");
    review["request"]["oldObject"] = old;
    let answer = mutate(&router, &review).await;
    let ops = serde_json::to_value(patch_of(&answer).unwrap()).unwrap();
    // A test of the image as judged, then the replace; the running container is untouched
    // (rewriting its image would restart it, and this subresource may change nothing else).
    assert_eq!(
        ops,
        json!([
            {"op": "test", "path": "/spec/ephemeralContainers/0/image", "value": setup.image("team/debug:v1")},
            {"op": "replace", "path": "/spec/ephemeralContainers/0/image",
             "value": format!("{}@{digest}", setup.image("team/debug:v1"))}
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_leaves_the_image_unpinned_and_on_error_decides_at_validation() {
    let mut setup = Setup::new();
    setup.push_signed("team/app", "v1", "app").await;
    setup.registry.stop();
    let object = pod(json!({"containers": [{"name": "app", "image": setup.image("team/app:v1")}]}));
    for (on_error, admitted) in [("deny", false), ("allow", true)] {
        let yaml = setup.config(
            true,
            &format!("onError: {on_error}\nevidence:\n  maxAttempts: 1\n"),
        );
        let (router, probe, _) = routers(engine(&yaml));
        let answer = mutate(&router, &review_of(&object, "shop")).await;
        // Allowed (the mutating answer never decides), unpinned, and said so.
        assert!(patch_of(&answer).is_none(), "{answer}");
        assert_eq!(annotation(&answer, "pinning"), "unchanged");
        let skipped = annotation(&answer, "not-pinned");
        assert!(
            skipped[0]["reason"]
                .as_str()
                .unwrap()
                .contains("not resolved"),
            "{skipped}"
        );
        let warnings = answer["response"]["warnings"].to_string();
        assert!(warnings.contains("not pinned"), "{answer}");
        let (_, metrics) = common::get(&probe, "/metrics").await;
        assert!(
            metrics.contains("portcullis_unpinned_images_total 1"),
            "{metrics}"
        );
        // The validating webhook judges the tag as written, with its onError.
        let verdict = validate(&router, &object).await;
        assert_eq!(verdict["response"]["allowed"], admitted, "{verdict}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_gets_the_same_patch_and_disabled_pinning_none() {
    let setup = Setup::new();
    setup.push_signed("team/app", "v1", "app").await;
    let object = pod(json!({"containers": [{"name": "app", "image": setup.image("team/app:v1")}]}));
    let (router, _, _) = routers(engine(&setup.config(true, "")));
    let real = mutate(&router, &review_of(&object, "shop")).await;
    let mut dry = review_of(&object, "shop");
    dry["request"]["dryRun"] = json!(true);
    let dry = mutate(&router, &dry).await;
    // dryRun requests are not persisted, and a server-side dry run should show what would be
    // stored and judged: the same patch.
    assert!(patch_of(&real).is_some());
    assert_eq!(patch_of(&dry), patch_of(&real));

    let (router, probe, _) = routers(engine(&setup.config(false, "")));
    let answer = mutate(&router, &review_of(&object, "shop")).await;
    assert!(patch_of(&answer).is_none(), "{answer}");
    assert!(answer["response"].get("patchType").is_none(), "{answer}");
    assert_eq!(annotation(&answer, "pinning"), "disabled");
    let (_, metrics) = common::get(&probe, "/metrics").await;
    assert!(
        metrics.contains("portcullis_pinning_reviews_total{result=\"disabled\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn mutate_keeps_the_servers_guards_and_the_contract() {
    let (router, _, _) = routers(common::engine(None));
    // Not an AdmissionReview: 400, as /validate answers.
    let (status, body) = post_to(&router, "/mutate", b"{\"kind\": 1}".to_vec(), "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reason"], "malformed");
    // Over limits.maxRequestBytes (7 MiB): 413 before anything is judged.
    let big = vec![b' '; 8 * 1024 * 1024];
    let (status, body) = post_to(&router, "/mutate", big, "").await;
    assert_eq!(status, 413, "{body}");
}

#[test]
fn pinning_needs_an_image_policy() {
    let err = LoadedConfig::from_yaml("pinning: {enabled: true}\n", "test").unwrap_err();
    assert!(err.to_string().contains("pinning.enabled"), "{err}");
    let err =
        LoadedConfig::from_yaml("pinning: {enabled: true, pinAll: true}\n", "test").unwrap_err();
    assert!(err.to_string().contains("pinAll"), "{err}");
    let loaded = LoadedConfig::from_yaml("{}", "test").unwrap();
    assert!(!loaded.config.pinning.enabled);
}

/// A registry that answers after the API server has given up.
#[derive(Debug)]
struct Stalled;

impl portcullis::evidence::EvidenceSource for Stalled {
    fn gather<'a>(
        &'a self,
        _: &'a portcullis::reference::ImageRef,
        _: &'a [&'a portcullis::config::ImagePolicy],
        _: &'a portcullis::evidence::GatherContext,
    ) -> portcullis::evidence::EvidenceFuture<'a> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(portcullis::evidence::ImageEvidence::signatures_only(
                Some(format!("sha256:{}", "c".repeat(64))),
                portcullis::evidence::SignatureEvidence::Verified {
                    signers: vec!["late".into()],
                },
            ))
        })
    }
}

#[tokio::test]
async fn a_registry_slower_than_the_deadline_gets_an_unpinned_answer_in_time() {
    let yaml = "pinning: {enabled: true}\nimagePolicies:\n  - name: team\n    images: [\"ghcr.io/acme/**\"]\n";
    let (router, _, _) = routers(common::engine_with(Some(yaml), Arc::new(Stalled)));
    let object = pod(json!({"containers": [{"name": "app", "image": "ghcr.io/acme/app:1"}]}));
    let started = std::time::Instant::now();
    let (status, answer) = post_to(
        &router,
        "/mutate",
        serde_json::to_vec(&review_of(&object, "shop")).unwrap(),
        "?timeout=2s",
    )
    .await;
    // Answered before the API server's 2 s (less the 500 ms margin), allowed, nothing pinned.
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], true);
    assert!(patch_of(&answer).is_none(), "{answer}");
    let skipped = annotation(&answer, "not-pinned");
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("deadline"),
        "{skipped}"
    );
}
