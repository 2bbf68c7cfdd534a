//! Registry evidence against a real registry: Debian's `docker-registry` on 127.0.0.1 (plain
//! HTTP, TLS with a generated CA, htpasswd basic auth), images pushed with `skopeo copy` from
//! OCI layouts built here, signatures made by the sigstore crate and by an independent signer
//! written to Cosign's spec. Requests go through the real webhook router.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use crate::common::{post, routers};
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::evidence::{EvidenceSource, GatherContext, ImageEvidence, SignatureEvidence};
use portcullis::reference::ImageRef;
use portcullis::registry_evidence::RegistryEvidence;
use portcullis_test_support::registry::{
    ImageSpec, IndependentKey, Layout, Mode, PrivateSigstore, Registry, push_attestations,
    push_keyless_attestation, push_signature_layers, push_signature_layers_annotated, sign_image,
    sigstore_sign, simple_signing_payload, write_file,
};
use serde_json::{Value, json};

/// Rules that need no registry are off, so each verdict is the signature rule's alone.
const QUIET_RULES: &str = "rules:\n  noLatestTag: {enabled: false}\n  runAsNonRoot: {enabled: false}\n  privilegeEscalation: {enabled: false}\n";

struct Setup {
    registry: Registry,
    keys: tempfile::TempDir,
}

impl Setup {
    fn new(mode: Mode) -> Self {
        portcullis_test_support::install_crypto_provider();
        Self {
            registry: Registry::start(mode),
            keys: tempfile::tempdir().unwrap(),
        }
    }

    fn key_file(&self, name: &str, pem: &str) -> String {
        write_file(self.keys.path(), name, pem)
            .display()
            .to_string()
    }

    /// Pushes one single-arch image as `repository:tag`; returns its digest.
    fn push_image(&self, repository: &str, tag: &str, marker: &str) -> String {
        let mut layout = Layout::new();
        let digest = layout.single(tag, &ImageSpec::new(marker));
        self.registry.push_layout(layout.path(), tag, repository);
        digest
    }

    /// A configuration with one image policy over `repository` and `signatures` (YAML
    /// mapping lines, indented by 6).
    fn config(&self, extra: &str, signatures: &str) -> String {
        format!(
            "{}{QUIET_RULES}{extra}imagePolicies:\n  - name: team\n    images: [\"{}/**\"]\n    signatures:\n{signatures}",
            self.registry.registry_yaml(),
            self.registry.host
        )
    }

    fn key_policy(&self, paths: &[&str]) -> String {
        let mut text = String::from("      keys:\n");
        for path in paths {
            text.push_str(&format!("        - path: {path}\n"));
        }
        text
    }
}

fn source(yaml: &str) -> Arc<RegistryEvidence> {
    let loaded = LoadedConfig::from_yaml(yaml, "test").unwrap();
    Arc::new(RegistryEvidence::new(&loaded.config, None).unwrap())
}

fn webhook(yaml: &str, evidence: Arc<RegistryEvidence>) -> axum::Router {
    let loaded = LoadedConfig::from_yaml(yaml, "test").unwrap();
    routers(Engine::new(loaded, evidence).unwrap()).0
}

fn pod_review(image: &str) -> Vec<u8> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": image}]}
    });
    common::create_review("", "Pod", "pods", pod)
}

async fn review(router: &axum::Router, image: &str) -> Value {
    let (status, body) = post(router, pod_review(image), "?timeout=10s").await;
    assert_eq!(status, 200);
    body
}

fn allowed(review: &Value) -> bool {
    review["response"]["allowed"].as_bool().unwrap()
}

fn message(review: &Value) -> String {
    review["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn warnings(review: &Value) -> String {
    review["response"]["warnings"].to_string()
}

async fn gather(evidence: &RegistryEvidence, yaml: &str, image: &str) -> ImageEvidence {
    let loaded = LoadedConfig::from_yaml(yaml, "test").unwrap();
    let image = ImageRef::parse(image).unwrap();
    let context = GatherContext::anonymous(tokio::time::Instant::now() + Duration::from_secs(10));
    evidence
        .gather(
            &image,
            &loaded.config.image_policies.iter().collect::<Vec<_>>(),
            &context,
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_signed_by_the_independent_signer_is_allowed_and_its_facts_are_read() {
    let setup = Setup::new(Mode::Plain);
    let digest = setup.push_image("team/app", "v1", "signed");
    let key = IndependentKey::generate();
    let reference = format!("{}/team/app", setup.registry.host);
    sign_image(&setup.registry, "team/app", &digest, &key).await;
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let yaml = setup.config("", &setup.key_policy(&[&key_path]));
    let evidence = source(&yaml);

    let router = webhook(&yaml, evidence.clone());
    let answer = review(&router, &format!("{reference}:v1")).await;
    assert!(allowed(&answer), "{answer}");

    let found = gather(&evidence, &yaml, &format!("{reference}:v1")).await;
    assert_eq!(found.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(
        found.signatures,
        SignatureEvidence::Verified {
            signers: vec![format!("key {key_path}")]
        }
    );
    let facts = found.facts.unwrap();
    assert_eq!(facts.user.as_deref(), Some("1000"));
    assert_eq!(facts.exposed_ports, ["8080/tcp"]);
    assert_eq!(facts.labels.get("team").map(String::as_str), Some("shop"));
    assert_eq!(facts.created.as_deref(), Some("2026-11-01T10:00:00Z"));
    assert_eq!(
        facts.base_name.as_deref(),
        Some("docker.io/library/alpine:3.20")
    );
    assert_eq!(
        facts.annotation_created.as_deref(),
        Some("2026-11-01T10:00:00Z")
    );
    assert!(found.children.is_empty());
    assert_eq!(found.platform_digest.as_deref(), Some(digest.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_made_by_the_sigstore_crate_verify_for_every_key_type() {
    use sigstore::crypto::SigningScheme;
    let setup = Setup::new(Mode::Plain);
    for (index, scheme) in [
        SigningScheme::ECDSA_P256_SHA256_ASN1,
        SigningScheme::ECDSA_P384_SHA384_ASN1,
        SigningScheme::ED25519,
        SigningScheme::RSA_PKCS1_SHA256(2048),
    ]
    .into_iter()
    .enumerate()
    {
        let repository = format!("team/app{index}");
        let digest = setup.push_image(&repository, "v1", &format!("key-type-{index}"));
        let pem = sigstore_sign(&setup.registry, &repository, &digest, scheme).await;
        let key_path = setup.key_file(&format!("key{index}.pub"), &pem);
        let yaml = setup.config("", &setup.key_policy(&[&key_path]));
        let router = webhook(&yaml, source(&yaml));
        let image = format!("{}/{repository}:v1", setup.registry.host);
        let answer = review(&router, &image).await;
        assert!(allowed(&answer), "{scheme}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_digest_is_denied_naming_the_expected_key_and_the_cosign_command() {
    let setup = Setup::new(Mode::Plain);
    let digest = setup.push_image("team/app", "v1", "unsigned");
    let key = IndependentKey::generate();
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let yaml = setup.config("", &setup.key_policy(&[&key_path]));
    let router = webhook(&yaml, source(&yaml));
    let answer = review(&router, &format!("{}/team/app:v1", setup.registry.host)).await;
    assert!(!allowed(&answer));
    let text = message(&answer);
    assert!(
        text.contains(&format!("expected a signature by key {key_path}")),
        "{text}"
    );
    assert!(text.contains("no signature for"), "{text}");
    assert!(
        text.contains(&format!(
            "cosign sign --key {key_path} {}/team/app@{digest}",
            setup.registry.host
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_by_another_key_is_denied() {
    let setup = Setup::new(Mode::Plain);
    let digest = setup.push_image("team/app", "v1", "other-key");
    let signer = IndependentKey::generate();
    let trusted = IndependentKey::generate();
    let reference = format!("{}/team/app", setup.registry.host);
    sign_image(&setup.registry, "team/app", &digest, &signer).await;
    let key_path = setup.key_file("team.pub", &trusted.public_pem());
    let yaml = setup.config("", &setup.key_policy(&[&key_path]));
    let router = webhook(&yaml, source(&yaml));
    let answer = review(&router, &format!("{reference}:v1")).await;
    assert!(!allowed(&answer));
    let text = message(&answer);
    assert!(
        text.contains("a Cosign signature in the .sig tag signed by an unknown key")
            && text.contains(&format!("not signed by key {key_path}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_copied_from_another_repository_is_denied_unless_that_repository_is_mirrored() {
    let setup = Setup::new(Mode::Plain);
    let digest = setup.push_image("team/app", "v1", "copied");
    let key = IndependentKey::generate();
    // Signed for the upstream repository, then copied next to the image.
    let upstream = "ghcr.io/upstream/app";
    let payload = simple_signing_payload(upstream, &digest);
    let signature = key.sign_base64(&payload);
    push_signature_layers(
        &setup.registry,
        "team/app",
        &digest,
        &[(payload, signature)],
    )
    .await;
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let image = format!("{}/team/app:v1", setup.registry.host);

    let yaml = setup.config("", &setup.key_policy(&[&key_path]));
    let answer = review(&webhook(&yaml, source(&yaml)), &image).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains("it is for another repository (ghcr.io/upstream/app)"),
        "{}",
        message(&answer)
    );

    let mirrored = setup.config(
        "",
        &format!(
            "{}      mirrorOf: [\"ghcr.io/upstream/**\"]\n",
            setup.key_policy(&[&key_path])
        ),
    );
    let answer = review(&webhook(&mirrored, source(&mirrored)), &image).await;
    assert!(allowed(&answer), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_naming_another_digest_is_denied() {
    let setup = Setup::new(Mode::Plain);
    let digest = setup.push_image("team/app", "v1", "payload-digest");
    let other = setup.push_image("team/app", "v2", "payload-digest-other");
    let key = IndependentKey::generate();
    let reference = format!("{}/team/app", setup.registry.host);
    // A valid signature, but over a payload for another digest, stored under this digest.
    let payload = simple_signing_payload(&reference, &other);
    let signature = key.sign_base64(&payload);
    push_signature_layers(
        &setup.registry,
        "team/app",
        &digest,
        &[(payload, signature)],
    )
    .await;
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let yaml = setup.config("", &setup.key_policy(&[&key_path]));
    let answer = review(&webhook(&yaml, source(&yaml)), &format!("{reference}:v1")).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains(&format!("payload names another digest ({other})")),
        "{}",
        message(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_digest_written_with_a_signed_tag_is_judged_by_the_digest() {
    let setup = Setup::new(Mode::Plain);
    let signed = setup.push_image("team/app", "v1", "tag-signed");
    let unsigned = setup.push_image("team/app", "v2", "digest-unsigned");
    let key = IndependentKey::generate();
    let reference = format!("{}/team/app", setup.registry.host);
    sign_image(&setup.registry, "team/app", &signed, &key).await;
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let yaml = setup.config("", &setup.key_policy(&[&key_path]));
    let router = webhook(&yaml, source(&yaml));
    assert!(allowed(&review(&router, &format!("{reference}:v1")).await));
    let answer = review(&router, &format!("{reference}:v1@{unsigned}")).await;
    assert!(!allowed(&answer), "{answer}");
    assert!(message(&answer).contains(&unsigned), "{}", message(&answer));
    // A pinned digest is not resolved again: no manifest request names the tag for it.
    let tag_requests = setup.registry.requests("HEAD", "/v2/team/app/manifests/v1");
    assert_eq!(tag_requests, 1, "{}", setup.registry.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_to_an_unsigned_digest_is_denied_once_the_tag_ttl_lapses() {
    let setup = Setup::new(Mode::Plain);
    let signed = setup.push_image("team/app", "v1", "before-move");
    let key = IndependentKey::generate();
    let reference = format!("{}/team/app", setup.registry.host);
    sign_image(&setup.registry, "team/app", &signed, &key).await;
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let yaml = setup.config(
        "evidence:\n  tagTtlSeconds: 1\n",
        &setup.key_policy(&[&key_path]),
    );
    let router = webhook(&yaml, source(&yaml));
    let image = format!("{reference}:v1");
    assert!(allowed(&review(&router, &image).await));

    let moved = setup.push_image("team/app", "v1", "after-move");
    assert_ne!(moved, signed);
    let mut denied = None;
    for _ in 0..100 {
        let answer = review(&router, &image).await;
        if !allowed(&answer) {
            denied = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let denied = denied.expect("the moved tag is judged by its new digest after the TTL");
    assert!(message(&denied).contains(&moved), "{}", message(&denied));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_registry_stopped_cached_digests_are_decided_as_before_and_others_get_on_error() {
    let mut setup = Setup::new(Mode::Plain);
    let signed = setup.push_image("team/app", "v1", "cached");
    setup.push_image("team/other", "v1", "uncached");
    let key = IndependentKey::generate();
    let reference = format!("{}/team/app", setup.registry.host);
    sign_image(&setup.registry, "team/app", &signed, &key).await;
    let key_path = setup.key_file("team.pub", &key.public_pem());
    // A 1 s tag TTL: after it, the tag can only be answered from the stale resolution.
    let deny = setup.config(
        "evidence:\n  tagTtlSeconds: 1\n  maxStalenessSeconds: 600\n",
        &setup.key_policy(&[&key_path]),
    );
    let evidence = source(&deny);
    let router = webhook(&deny, evidence.clone());
    assert!(allowed(&review(&router, &format!("{reference}:v1")).await));
    assert!(allowed(
        &review(&router, &format!("{reference}@{signed}")).await
    ));

    setup.registry.stop();
    // Pinned digest: decided from the verification cache.
    assert!(allowed(
        &review(&router, &format!("{reference}@{signed}")).await
    ));
    // Tag, once its TTL lapsed: the last known digest is judged, with a warning saying so.
    let mut stale = None;
    for _ in 0..100 {
        let answer = review(&router, &format!("{reference}:v1")).await;
        if warnings(&answer).contains("judged sha256:") {
            stale = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stale = stale.expect("a stale resolution is served with a warning");
    assert!(allowed(&stale), "{stale}");
    assert!(warnings(&stale).contains(&signed), "{stale}");

    // Never seen: the onError outcome, naming the registry, well before the deadline.
    let other = format!("{}/team/other:v1", setup.registry.host);
    let started = std::time::Instant::now();
    let answer = review(&router, &other).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains(&setup.registry.host),
        "{}",
        message(&answer)
    );

    let allow = deny.replacen("rules:", "onError: allow\nrules:", 1);
    let router = webhook(&allow, evidence);
    let answer = review(&router, &other).await;
    assert!(allowed(&answer), "{answer}");
    assert!(warnings(&answer).contains("allowed by onError"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_reviews_of_one_uncached_image_share_one_registry_round_trip() {
    let setup = Setup::new(Mode::Plain);
    let digest = setup.push_image("team/burst", "v1", "burst");
    let key = IndependentKey::generate();
    let reference = format!("{}/team/burst", setup.registry.host);
    sign_image(&setup.registry, "team/burst", &digest, &key).await;
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let yaml = setup.config("", &setup.key_policy(&[&key_path]));
    let router = webhook(&yaml, source(&yaml));
    let before = setup.registry.manifest_requests("team/burst").len();
    let image = format!("{reference}:v1");
    let answers = futures_util::future::join_all((0..200).map(|_| {
        let router = router.clone();
        let image = image.clone();
        async move { review(&router, &image).await }
    }))
    .await;
    assert!(answers.iter().all(allowed));
    let lines = setup.registry.manifest_requests("team/burst");
    let during: Vec<&String> = lines.iter().skip(before).collect();
    let tag_requests = during
        .iter()
        .filter(|l| l.contains("/manifests/v1 "))
        .count();
    assert_eq!(tag_requests, 1, "{during:#?}");
    let digest_requests = during
        .iter()
        .filter(|l| l.contains(&format!("\"GET /v2/team/burst/manifests/{digest} ")))
        .count();
    assert_eq!(digest_requests, 1, "{during:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_arch_index_is_signed_on_its_digest_and_facts_come_from_the_configured_platform() {
    let setup = Setup::new(Mode::Plain);
    let mut layout = Layout::new();
    let mut arm = ImageSpec::new("arm").arch("arm64");
    arm.user = "2000".into();
    let (index, children) = layout.multi("v1", &[ImageSpec::new("amd"), arm]);
    setup
        .registry
        .push_layout(layout.path(), "v1", "team/multi");
    let key = IndependentKey::generate();
    let reference = format!("{}/team/multi", setup.registry.host);
    let payload = simple_signing_payload(&reference, &index);
    let signature = key.sign_base64(&payload);
    push_signature_layers(
        &setup.registry,
        "team/multi",
        &index,
        &[(payload, signature)],
    )
    .await;
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let image = format!("{reference}:v1");

    let yaml = setup.config("", &setup.key_policy(&[&key_path]));
    let found = gather(&source(&yaml), &yaml, &image).await;
    assert_eq!(found.digest.as_deref(), Some(index.as_str()));
    assert!(matches!(
        found.signatures,
        SignatureEvidence::Verified { .. }
    ));
    let expected: std::collections::BTreeMap<String, String> = children.iter().cloned().collect();
    assert_eq!(found.children, expected);
    assert_eq!(found.platform_digest.as_ref(), Some(&children[0].1));
    assert_eq!(found.facts.unwrap().user.as_deref(), Some("1000"));

    let arm_yaml = setup.config(
        "evidence:\n  platform: linux/arm64\n",
        &setup.key_policy(&[&key_path]),
    );
    let found = gather(&source(&arm_yaml), &arm_yaml, &image).await;
    assert_eq!(found.platform_digest.as_ref(), Some(&children[1].1));
    assert_eq!(found.facts.unwrap().user.as_deref(), Some("2000"));

    // A signature on a child only does not count: cosign signs the index by default.
    let child_only = IndependentKey::generate();
    let payload = simple_signing_payload(&reference, &children[0].1);
    let signature = child_only.sign_base64(&payload);
    push_signature_layers(
        &setup.registry,
        "team/multi",
        &children[0].1,
        &[(payload, signature)],
    )
    .await;
    let child_key = setup.key_file("child.pub", &child_only.public_pem());
    let yaml = setup.config("", &setup.key_policy(&[&child_key]));
    let found = gather(&source(&yaml), &yaml, &image).await;
    assert!(matches!(
        found.signatures,
        SignatureEvidence::Unverified { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_needs_distinct_keys() {
    let setup = Setup::new(Mode::Plain);
    let digest = setup.push_image("team/app", "v1", "threshold");
    let (first, second) = (IndependentKey::generate(), IndependentKey::generate());
    let reference = format!("{}/team/app", setup.registry.host);
    let payload = simple_signing_payload(&reference, &digest);
    let first_path = setup.key_file("first.pub", &first.public_pem());
    let second_path = setup.key_file("second.pub", &second.public_pem());
    let yaml = setup.config(
        "",
        &format!(
            "{}      threshold: 2\n",
            setup.key_policy(&[&first_path, &second_path])
        ),
    );
    let image = format!("{reference}:v1");
    let signature = first.sign_base64(&payload);
    push_signature_layers(
        &setup.registry,
        "team/app",
        &digest,
        &[(payload.clone(), signature.clone())],
    )
    .await;
    let answer = review(&webhook(&yaml, source(&yaml)), &image).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains("only 1 of 2 required signers"),
        "{}",
        message(&answer)
    );

    let both = [
        (payload.clone(), signature),
        (payload.clone(), second.sign_base64(&payload)),
    ];
    push_signature_layers(&setup.registry, "team/app", &digest, &both).await;
    let answer = review(&webhook(&yaml, source(&yaml)), &image).await;
    assert!(allowed(&answer), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestations_are_verified_exposed_and_required_by_predicate_type() {
    let setup = Setup::new(Mode::Plain);
    let digest = setup.push_image("team/app", "v1", "attested");
    let key = IndependentKey::generate();
    let other_key = IndependentKey::generate();
    let reference = format!("{}/team/app", setup.registry.host);
    sign_image(&setup.registry, "team/app", &digest, &key).await;
    let provenance = json!({"buildDefinition": {"buildType": "https://example.com/build"},
                            "runDetails": {"metadata": {"finishedOn": "2026-11-01T09:00:00Z"}}});
    push_attestations(
        &setup.registry,
        "team/app",
        &digest,
        &key,
        &[
            (
                "https://slsa.dev/provenance/v1",
                provenance.clone(),
                &digest,
            ),
            // About another digest: not kept.
            (
                "https://cosign.sigstore.dev/attestation/vuln/v1",
                json!({"scanner": {"result": {}}}),
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ),
        ],
    )
    .await;
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let image = format!("{reference}:v1");

    let yaml = setup.config(
        "",
        &format!(
            "{}      attestations:\n        - predicateType: slsaprovenance1\n",
            setup.key_policy(&[&key_path])
        ),
    );
    let found = gather(&source(&yaml), &yaml, &image).await;
    assert_eq!(found.attestations.len(), 1, "{:?}", found.attestations);
    assert_eq!(
        found.attestations[0].predicate_type,
        "https://slsa.dev/provenance/v1"
    );
    assert_eq!(found.attestations[0].predicate, provenance);
    assert!(allowed(
        &review(&webhook(&yaml, source(&yaml)), &image).await
    ));

    let wants_vuln = setup.config(
        "",
        &format!(
            "{}      attestations:\n        - predicateType: vuln\n",
            setup.key_policy(&[&key_path])
        ),
    );
    let answer = review(&webhook(&wants_vuln, source(&wants_vuln)), &image).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains("https://cosign.sigstore.dev/attestation/vuln/v1"),
        "{}",
        message(&answer)
    );

    // Attestations signed by a key the policy does not trust are not exposed.
    push_attestations(
        &setup.registry,
        "team/app",
        &digest,
        &other_key,
        &[("https://slsa.dev/provenance/v1", provenance, &digest)],
    )
    .await;
    let found = gather(&source(&yaml), &yaml, &image).await;
    assert!(found.attestations.is_empty(), "{:?}", found.attestations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_basic_auth_is_read_with_configured_credentials_and_refused_without() {
    let setup = Setup::new(Mode::Htpasswd {
        user: "reader".into(),
        password: "s3cret".into(),
    });
    let digest = setup.push_image("team/app", "v1", "private");
    let key = IndependentKey::generate();
    let reference = format!("{}/team/app", setup.registry.host);
    sign_image(&setup.registry, "team/app", &digest, &key).await;
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let image = format!("{reference}:v1");

    let anonymous = setup.config("", &setup.key_policy(&[&key_path]));
    let answer = review(&webhook(&anonymous, source(&anonymous)), &image).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains("access denied"),
        "{}",
        message(&answer)
    );

    let password = write_file(setup.keys.path(), "password", "s3cret\n");
    let with_credentials = anonymous.replacen(
        "    insecure: true\n",
        &format!(
            "    insecure: true\n    credentials:\n      username: reader\n      passwordFile: {}\n",
            password.display()
        ),
        1,
    );
    let answer = review(
        &webhook(&with_credentials, source(&with_credentials)),
        &image,
    )
    .await;
    assert!(allowed(&answer), "{answer}");

    let docker_config = write_file(
        setup.keys.path(),
        "config.json",
        &json!({"auths": {setup.registry.host.clone(): {"auth": "cmVhZGVyOnMzY3JldA=="}}})
            .to_string(),
    );
    let from_docker_config = anonymous.replacen(
        "rules:",
        &format!(
            "evidence:\n  dockerConfigFile: {}\nrules:",
            docker_config.display()
        ),
        1,
    );
    let answer = review(
        &webhook(&from_docker_config, source(&from_docker_config)),
        &image,
    )
    .await;
    assert!(allowed(&answer), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_registry_is_trusted_through_its_ca_file_only() {
    let setup = Setup::new(Mode::Tls);
    let digest = setup.push_image("team/app", "v1", "tls");
    let pem = sigstore_sign(
        &setup.registry,
        "team/app",
        &digest,
        sigstore::crypto::SigningScheme::ECDSA_P256_SHA256_ASN1,
    )
    .await;
    let key_path = setup.key_file("team.pub", &pem);
    let image = format!("{}/team/app:v1", setup.registry.host);
    let yaml = setup.config("", &setup.key_policy(&[&key_path]));
    let answer = review(&webhook(&yaml, source(&yaml)), &image).await;
    assert!(allowed(&answer), "{answer}");

    // Without the CA the registry's certificate is not trusted: onError (deny), named.
    let untrusted = yaml.replacen(
        &format!(
            "    caFile: {}\n",
            setup.registry.dir.path().join("certs/ca.crt").display()
        ),
        "",
        1,
    );
    assert_ne!(untrusted, yaml);
    let answer = review(&webhook(&untrusted, source(&untrusted)), &image).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains(&setup.registry.host),
        "{}",
        message(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_that_does_not_exist_is_denied_not_an_error() {
    let setup = Setup::new(Mode::Plain);
    setup.push_image("team/app", "v1", "exists");
    let key = IndependentKey::generate();
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let yaml = setup.config("", &setup.key_policy(&[&key_path])).replacen(
        "rules:",
        "onError: allow\nrules:",
        1,
    );
    let answer = review(
        &webhook(&yaml, source(&yaml)),
        &format!("{}/team/app:missing", setup.registry.host),
    )
    .await;
    // onError: allow must not wave a nonexistent image through.
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains("does not exist"),
        "{}",
        message(&answer)
    );
}

/// Keyless cases against a private Sigstore-style chain made by the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_signatures_are_checked_against_the_trusted_root_issuer_subject_and_rekor_time() {
    let setup = Setup::new(Mode::Plain);
    let sigstore = PrivateSigstore::new();
    let root = write_file(
        setup.keys.path(),
        "trusted_root.json",
        &sigstore.trusted_root_json(),
    );
    let issuer = "https://issuer.example";
    let subject = "dev@example.com";
    let now = time::OffsetDateTime::now_utc();
    let policy = |identity: &str| {
        format!(
            "      keyless:\n        - {identity}\n      trustedRoot: {}\n",
            root.display()
        )
    };
    let exact = setup.config(
        "",
        &policy(&format!("{{issuer: \"{issuer}\", subject: \"{subject}\"}}")),
    );
    let by_pattern = setup.config(
        "",
        &policy(
            "{issuerRegExp: \"https://issuer\\\\.example\", subjectRegExp: \".*@example\\\\.com\"}",
        ),
    );
    let other_issuer = setup.config(
        "",
        &policy(&format!(
            "{{issuer: \"https://other.example\", subject: \"{subject}\"}}"
        )),
    );
    let other_subject = setup.config(
        "",
        &policy(&format!(
            "{{issuer: \"{issuer}\", subject: \"ops@example.com\"}}"
        )),
    );

    let mut case = 0;
    let mut sign = |certificate_from: &PrivateSigstore,
                    not_before: time::OffsetDateTime,
                    minutes: i64,
                    integrated: Option<i64>| {
        case += 1;
        let repository = format!("team/keyless{case}");
        let digest = setup.push_image(&repository, "v1", &format!("keyless-{case}"));
        let signer = certificate_from.issue(issuer, subject, not_before, minutes);
        let reference = format!("{}/{repository}", setup.registry.host);
        let payload = simple_signing_payload(&reference, &digest);
        let annotations = signer.annotations(integrated.map(|t| (&sigstore, t)), &payload);
        (repository, digest, payload, annotations)
    };

    // Signed now with a fresh certificate and a Rekor entry inside its validity.
    let fresh = sign(
        &sigstore,
        now - time::Duration::minutes(1),
        10,
        Some(now.unix_timestamp()),
    );
    // The certificate expired long ago, but Rekor saw the signature while it was valid.
    let expired_logged = sign(
        &sigstore,
        now - time::Duration::hours(2),
        10,
        Some((now - time::Duration::hours(2) + time::Duration::minutes(5)).unix_timestamp()),
    );
    // Expired certificate, Rekor time after its expiry: no valid timestamp.
    let expired_late = sign(
        &sigstore,
        now - time::Duration::hours(2),
        10,
        Some(now.unix_timestamp()),
    );
    // Expired certificate and no bundle at all.
    let expired_unlogged = sign(&sigstore, now - time::Duration::hours(2), 10, None);
    // A certificate from a CA the trusted root does not name.
    let stranger = PrivateSigstore::new();
    let untrusted = sign(
        &stranger,
        now - time::Duration::minutes(1),
        10,
        Some(now.unix_timestamp()),
    );

    for (repository, digest, payload, annotations) in [
        &fresh,
        &expired_logged,
        &expired_late,
        &expired_unlogged,
        &untrusted,
    ] {
        push_signature_layers_annotated(
            &setup.registry,
            repository,
            digest,
            vec![(payload.clone(), annotations.clone())],
        )
        .await;
    }
    let image = |signed: &(
        String,
        String,
        Vec<u8>,
        std::collections::BTreeMap<String, String>,
    )| { format!("{}/{}:v1", setup.registry.host, signed.0) };
    for (name, yaml, signed, expected) in [
        ("exact identity", &exact, &fresh, true),
        ("identity by pattern", &by_pattern, &fresh, true),
        (
            "expired certificate logged in time",
            &exact,
            &expired_logged,
            true,
        ),
        ("wrong issuer", &other_issuer, &fresh, false),
        ("wrong subject", &other_subject, &fresh, false),
        (
            "expired certificate, logged too late",
            &exact,
            &expired_late,
            false,
        ),
        (
            "expired certificate, not logged",
            &exact,
            &expired_unlogged,
            false,
        ),
        ("untrusted CA", &exact, &untrusted, false),
    ] {
        let answer = review(&webhook(yaml, source(yaml)), &image(signed)).await;
        assert_eq!(allowed(&answer), expected, "{name}: {answer}");
        if !expected {
            assert!(
                message(&answer).contains("expected a signature by keyless issuer="),
                "{name}: {}",
                message(&answer)
            );
        }
    }
}

/// Keyless attestations (Fulcio certificate + Rekor `intoto` entry, as cosign writes them under
/// the `.att` tag) against the same private Sigstore-style chain: verified ones are exposed and
/// satisfy `attestations`; each broken link leaves the requirement unmet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_attestations_need_a_trusted_certificate_a_logged_entry_for_them_and_the_identity()
{
    let setup = Setup::new(Mode::Plain);
    let sigstore = PrivateSigstore::new();
    let root = write_file(
        setup.keys.path(),
        "trusted_root.json",
        &sigstore.trusted_root_json(),
    );
    let (issuer, subject) = ("https://issuer.example", "dev@example.com");
    let now = time::OffsetDateTime::now_utc();
    let yaml = setup.config(
        "",
        &format!(
            "      keyless:\n        - {{issuer: \"{issuer}\", subject: \"{subject}\"}}\n      \
             trustedRoot: {}\n      attestations:\n        - predicateType: slsaprovenance1\n",
            root.display()
        ),
    );
    let provenance = json!({"buildDefinition": {"buildType": "https://example.com/build"},
                            "runDetails": {"metadata": {"finishedOn": "2026-11-01T09:00:00Z"}}});
    let stranger_log = PrivateSigstore::new();
    let stranger_ca = PrivateSigstore::new();
    let signer = sigstore.issue(issuer, subject, now - time::Duration::minutes(1), 10);
    let expired = sigstore.issue(issuer, subject, now - time::Duration::hours(2), 10);
    let other_subject = sigstore.issue(
        issuer,
        "ops@example.com",
        now - time::Duration::minutes(1),
        10,
    );
    let untrusted = stranger_ca.issue(issuer, subject, now - time::Duration::minutes(1), 10);
    let at = now.unix_timestamp();

    // name, attestation signer, log that signs the entry, payload the entry records, log time
    let no_entry_change: Option<&[u8]> = None;
    let cases = [
        ("verified", &signer, &sigstore, no_entry_change, at, true),
        (
            "entry for another payload",
            &signer,
            &sigstore,
            Some(b"another statement".as_slice()),
            at,
            false,
        ),
        (
            "entry signed by another log",
            &signer,
            &stranger_log,
            None,
            at,
            false,
        ),
        (
            "certificate expired before the log time",
            &expired,
            &sigstore,
            None,
            at,
            false,
        ),
        (
            "identity the policy does not name",
            &other_subject,
            &sigstore,
            None,
            at,
            false,
        ),
        (
            "certificate from an untrusted CA",
            &untrusted,
            &stranger_ca,
            None,
            at,
            false,
        ),
    ];
    for (index, (name, attester, log, entry, integrated, expected)) in cases.into_iter().enumerate()
    {
        let repository = format!("team/attested{index}");
        let digest = setup.push_image(&repository, "v1", &format!("attested-{index}"));
        let reference = format!("{}/{repository}", setup.registry.host);
        // The image itself is keylessly signed by the policy's identity in every case.
        let payload = simple_signing_payload(&reference, &digest);
        let annotations = signer.annotations(Some((&sigstore, at)), &payload);
        push_signature_layers_annotated(
            &setup.registry,
            &repository,
            &digest,
            vec![(payload, annotations)],
        )
        .await;
        push_keyless_attestation(
            &setup.registry,
            &repository,
            &digest,
            attester,
            log,
            ("https://slsa.dev/provenance/v1", provenance.clone()),
            entry,
            integrated,
        )
        .await;

        let image = format!("{reference}:v1");
        let found = gather(&source(&yaml), &yaml, &image).await;
        let answer = review(&webhook(&yaml, source(&yaml)), &image).await;
        assert_eq!(allowed(&answer), expected, "{name}: {answer}");
        if expected {
            assert_eq!(found.attestations.len(), 1, "{name}");
            assert_eq!(found.attestations[0].predicate, provenance, "{name}");
            assert!(
                found.attestations[0]
                    .signer
                    .contains("keyless dev@example.com (https://issuer.example)"),
                "{name}: {}",
                found.attestations[0].signer
            );
        } else {
            assert!(
                found.attestations.is_empty(),
                "{name}: {:?}",
                found.attestations
            );
            assert!(
                message(&answer).contains("https://slsa.dev/provenance/v1"),
                "{name}: {}",
                message(&answer)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_registry_is_probed_once_not_before_every_request() {
    let setup = Setup::new(Mode::Plain);
    let key = IndependentKey::generate();
    let key_path = setup.key_file("team.pub", &key.public_pem());
    let mut digests = Vec::new();
    for name in ["one", "two", "three"] {
        let digest = setup.push_image(&format!("team/{name}"), "v1", name);
        sign_image(&setup.registry, &format!("team/{name}"), &digest, &key).await;
        digests.push(digest);
    }
    let yaml = setup.config("", &setup.key_policy(&[&key_path]));
    let router = webhook(&yaml, source(&yaml));
    let probes_before = setup.registry.requests("GET", "/v2/");
    let before = setup.registry.request_count();
    for name in ["one", "two", "three"] {
        let answer = review(&router, &format!("{}/team/{name}:v1", setup.registry.host)).await;
        assert!(allowed(&answer), "{answer}");
    }
    let probes = setup.registry.requests("GET", "/v2/") - probes_before;
    assert_eq!(probes, 1, "{}", setup.registry.log_text());
    // Per cold image: the tag, the manifest, its config, the .sig tag and its blob, the
    // referrers API and the referrers tag — and nothing in front of each.
    let per_image = (setup.registry.request_count() - before - probes) / 3;
    assert!(per_image <= 7, "{per_image} requests per image");
}
