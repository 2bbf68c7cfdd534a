//! Sigstore bundles made by independent tooling (sigstore-js: `@sigstore/sign` against a
//! local Fulcio, CT log and TSA from `@sigstore/mock`, Rekor v1/v2 logs from
//! `tests/tools/sigstore-js/lib/tlog.mjs`, attached with `@sigstore/oci`, each checked first
//! by `@sigstore/verify`), judged by portcullis through the real webhook router against a
//! real `docker-registry` on loopback. The registry has no referrers API, so `@sigstore/oci`
//! writes the referrers tag schema; the API path goes through the referrers stand-in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common;
use portcullis_test_support::eventually;
use portcullis_test_support::referrers_standin::ReferrersStandin;
use portcullis_test_support::registry::{
    Artifact, ImageSpec, Layout, Mode, Registry, push_referrers_tag,
};

const QUIET_RULES: &str = "rules:\n  noLatestTag: {enabled: false}\n  runAsNonRoot: {enabled: false}\n  privilegeEscalation: {enabled: false}\n";
pub(crate) const ISSUER: &str = "https://token.actions.githubusercontent.com";
pub(crate) const SAN: &str =
    "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main";
const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/sigstore-js")
}

pub(crate) struct Setup {
    pub(crate) registry: Registry,
    /// The mock Sigstore's keys, shared by every bundle of one test (one trusted root).
    pub(crate) work: tempfile::TempDir,
    bundles: std::cell::Cell<usize>,
}

impl Setup {
    pub(crate) fn new() -> Self {
        portcullis_test_support::install_crypto_provider();
        assert!(
            tools().join("node_modules").is_dir(),
            "sigstore-js tooling is not installed: run scripts/install-sigstore-js"
        );
        Self {
            registry: Registry::start(Mode::Plain),
            work: tempfile::tempdir().unwrap(),
            bundles: std::cell::Cell::new(0),
        }
    }

    pub(crate) fn push_image(&self, repository: &str, marker: &str) -> String {
        let mut layout = Layout::new();
        let digest = layout.single("v1", &ImageSpec::new(marker));
        self.registry.push_layout(layout.path(), "v1", repository);
        digest
    }

    /// Runs sigstore-js's signer; returns its output folder. `push` names the registry
    /// host to attach to (`None`: only write the bundle).
    pub(crate) fn sign(
        &self,
        digest: &str,
        repository: &str,
        push: Option<&str>,
        args: &[&str],
    ) -> PathBuf {
        let index = self.bundles.get();
        self.bundles.set(index + 1);
        let out = self.work.path().join(format!("bundle-{index}"));
        let mut command = Command::new("node");
        command
            .arg(tools().join("sign.mjs"))
            .args(["--digest", digest])
            .arg("--out")
            .arg(&out)
            .arg("--state")
            .arg(self.work.path().join("state"))
            .args(["--identity-san", SAN, "--issuer", ISSUER]);
        match push {
            Some(host) => {
                command.args(["--push", &format!("{host}/{repository}"), "--plain-http"]);
            }
            None => {
                command.args([
                    "--repository",
                    &format!("{}/{repository}", self.registry.host),
                ]);
            }
        }
        command.args(args);
        let output = command.output().expect("node runs");
        assert!(
            output.status.success(),
            "sign.mjs {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        out
    }

    pub(crate) fn root(&self) -> String {
        // Every bundle of a test shares the state, hence the root; take the first's.
        self.work
            .path()
            .join("bundle-0/trusted_root.json")
            .display()
            .to_string()
    }

    pub(crate) fn config(
        &self,
        registry_yaml: &str,
        host: &str,
        extra: &str,
        signatures: &str,
    ) -> String {
        format!(
            "{registry_yaml}{QUIET_RULES}evidence:\n  unverifiedTtlSeconds: 1\n{extra}imagePolicies:\n  - name: team\n    images: [\"{host}/**\"]\n    signatures:\n{signatures}"
        )
    }

    pub(crate) fn keyless(&self, identity_extra: &str, extra: &str) -> String {
        format!(
            "      trustedRoot: {}\n{extra}      keyless:\n        - issuer: {ISSUER}\n          subject: {SAN}\n{identity_extra}",
            self.root()
        )
    }
}

fn webhook(yaml: &str) -> axum::Router {
    common::registry_webhook(yaml)
}

async fn review(router: &axum::Router, image: &str) -> Value {
    common::review_pod_image(router, image).await
}

fn allowed(review: &Value) -> bool {
    common::verdict(review).0
}

fn message(review: &Value) -> String {
    common::verdict(review).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_bundle_from_sigstore_js_is_admitted_by_its_identity_and_refused_by_another() {
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let digest = setup.push_image("team/app", "keyless");
    setup.sign(&digest, "team/app", Some(&host), &[]);
    let image = format!("{host}/team/app:v1");

    let yaml = setup.config(
        &setup.registry.registry_yaml(),
        &host,
        "",
        &setup.keyless("", ""),
    );
    let answer = review(&webhook(&yaml), &image).await;
    assert!(allowed(&answer), "{answer}");

    let other = yaml.replace(
        SAN,
        "https://github.com/acme/other/.github/workflows/x.yml@refs/heads/main",
    );
    let answer = review(&webhook(&other), &image).await;
    assert!(!allowed(&answer));
    let text = message(&answer);
    assert!(
        text.contains(&format!("a Sigstore bundle in the referrers tag schema signed by subject {SAN} (issuer {ISSUER})"))
            && text.contains("an identity the policy does not name"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_bundle_is_refused_against_a_root_that_does_not_trust_its_ca() {
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let digest = setup.push_image("team/app", "root");
    setup.sign(&digest, "team/app", Some(&host), &[]);
    // No trustedRoot: the embedded Sigstore public-good root, which knows no mock CA.
    let signatures =
        format!("      keyless:\n        - issuer: {ISSUER}\n          subject: {SAN}\n");
    let yaml = setup.config(&setup.registry.registry_yaml(), &host, "", &signatures);
    let answer = review(&webhook(&yaml), &format!("{host}/team/app:v1")).await;
    assert!(!allowed(&answer));
    let text = message(&answer);
    assert!(
        text.contains("does not verify against the Sigstore public-good root (embedded)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekor_v2_and_timestamp_only_bundles_are_admitted_and_tsa_only_is_refused_when_the_log_is_required()
 {
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let v2 = setup.push_image("team/v2", "rekor-v2");
    let tsa = setup.push_image("team/tsa", "tsa-only");
    // A message signature over the manifest: a Rekor v2 `hashedrekord` 0.0.2 entry (read by
    // sigstore-verify).
    setup.sign(
        &v2,
        "team/v2",
        Some(&host),
        &["--rekor", "v2", "--message-signature"],
    );
    // A DSSE bundle as Cosign 3 writes it: a Rekor v2 `dsse` 0.0.2 entry (checked by
    // portcullis's rekor_v2 module, the rest by sigstore-verify).
    let dsse_v2 = setup.push_image("team/dsse-v2", "dsse-v2");
    setup.sign(&dsse_v2, "team/dsse-v2", Some(&host), &["--rekor", "v2"]);
    setup.sign(&tsa, "team/tsa", Some(&host), &["--kind", "tsa-only"]);

    let yaml = setup.config(
        &setup.registry.registry_yaml(),
        &host,
        "",
        &setup.keyless("", ""),
    );
    let router = webhook(&yaml);
    for image in ["team/v2", "team/dsse-v2", "team/tsa"] {
        let answer = review(&router, &format!("{host}/{image}:v1")).await;
        assert!(allowed(&answer), "{image}: {answer}");
    }

    let strict = setup.config(
        &setup.registry.registry_yaml(),
        &host,
        "",
        &setup.keyless("", "      requireTransparencyLog: true\n"),
    );
    let router = webhook(&strict);
    for image in ["team/v2", "team/dsse-v2"] {
        let answer = review(&router, &format!("{host}/{image}:v1")).await;
        assert!(allowed(&answer), "rekor v2 is a log ({image}): {answer}");
    }
    let answer = review(&router, &format!("{host}/team/tsa:v1")).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer)
            .contains("not in a transparency log, and the policy sets requireTransparencyLog"),
        "{}",
        message(&answer)
    );
}

/// Pushes a (tampered) bundle as a referrer of `digest` in the tag schema.
async fn push_bundle(host: &str, repository: &str, digest: &str, bundle: &Value) {
    let descriptor = portcullis_test_support::registry::push_referrer(
        host,
        repository,
        digest,
        &Artifact::of_type(BUNDLE_TYPE, &bundle.to_string())
            .annotated("dev.sigstore.bundle.content", "dsse-envelope")
            .annotated(
                "dev.sigstore.bundle.predicateType",
                "https://sigstore.dev/cosign/sign/v1",
            ),
    )
    .await;
    push_referrers_tag(host, repository, digest, &[descriptor]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekor_v2_dsse_bundles_are_refused_when_the_entry_is_tampered_or_the_log_is_unknown() {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let yaml =
        |signatures: &str| setup.config(&setup.registry.registry_yaml(), &host, "", signatures);

    // The key variant signed with Rekor v2 is admitted by its key.
    let keyed = setup.push_image("team/keyed", "dsse-v2-key");
    let out = setup.sign(
        &keyed,
        "team/keyed",
        Some(&host),
        &["--kind", "key", "--rekor", "v2"],
    );
    let keys = format!(
        "      trustedRoot: {}\n      requireTransparencyLog: true\n      keys:\n        - path: {}\n",
        setup.root(),
        out.join("public.pem").display()
    );
    let answer = review(&webhook(&yaml(&keys)), &format!("{host}/team/keyed:v1")).await;
    assert!(allowed(&answer), "{answer}");

    // Tampered copies of one good keyless bundle, each pushed for its own image.
    let good_image = setup.push_image("team/good", "dsse-v2-good");
    let out = setup.sign(&good_image, "team/good", None, &["--rekor", "v2"]);
    let good: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(
        good["verificationMaterial"]["tlogEntries"][0]["kindVersion"],
        json!({"kind": "dsse", "version": "0.0.2"})
    );
    let keyless = yaml(&setup.keyless("", ""));

    // 1. An inclusion proof hash flipped: the proof no longer reaches the checkpoint's root.
    let mut bad_proof = good.clone();
    let entry = &mut bad_proof["verificationMaterial"]["tlogEntries"][0];
    let hashes = entry["inclusionProof"]["hashes"].as_array_mut().unwrap();
    if hashes.is_empty() {
        hashes.push(json!(engine.encode([7u8; 32])));
    } else {
        hashes[0] = json!(engine.encode([7u8; 32]));
    }
    // 2. The logged body swapped for one about another payload (re-encoded, so the leaf
    //    changes too): refused for the payload before the proof is even tried.
    let mut bad_body = good.clone();
    let entry = &mut bad_body["verificationMaterial"]["tlogEntries"][0];
    let mut body: Value = serde_json::from_slice(
        &engine
            .decode(entry["canonicalizedBody"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    body["spec"]["dsseV002"]["payloadHash"]["digest"] = json!(engine.encode([9u8; 32]));
    entry["canonicalizedBody"] = json!(engine.encode(body.to_string()));
    // 3. No inclusion proof at all: Rekor v2 has no SET, so nothing would prove inclusion.
    let mut no_proof = good.clone();
    no_proof["verificationMaterial"]["tlogEntries"][0]
        .as_object_mut()
        .unwrap()
        .remove("inclusionProof");

    for (repository, bundle, expected) in [
        (
            "team/bad-proof",
            &bad_proof,
            "inclusion proof does not verify",
        ),
        (
            "team/bad-body",
            &bad_body,
            "logs another payload than the bundle's envelope",
        ),
        ("team/no-proof", &no_proof, "has no inclusion proof"),
    ] {
        let digest = setup.push_image(repository, "dsse-v2-good");
        assert_eq!(digest, good_image, "same content, same digest");
        push_bundle(&host, repository, &digest, bundle).await;
        let answer = review(&webhook(&keyless), &format!("{host}/{repository}:v1")).await;
        assert!(!allowed(&answer), "{repository}: {answer}");
        assert!(
            message(&answer).contains(expected),
            "{repository}: {}",
            message(&answer)
        );
    }

    // 4. The untampered bundle against a root that lists no Rekor v2 log.
    let mut root: Value =
        serde_json::from_str(&std::fs::read_to_string(setup.root()).unwrap()).unwrap();
    let v2_log_id = good["verificationMaterial"]["tlogEntries"][0]["logId"]["keyId"].clone();
    root["tlogs"]
        .as_array_mut()
        .unwrap()
        .retain(|log| log["logId"]["keyId"] != v2_log_id);
    let v1_only = setup.work.path().join("v1-only-root.json");
    std::fs::write(&v1_only, root.to_string()).unwrap();
    push_bundle(&host, "team/good", &good_image, &good).await;
    let signatures = setup
        .keyless("", "")
        .replace(&setup.root(), &v1_only.display().to_string());
    let answer = review(
        &webhook(&yaml(&signatures)),
        &format!("{host}/team/good:v1"),
    )
    .await;
    assert!(!allowed(&answer), "{answer}");
    assert!(
        message(&answer).contains("signed by no log the trusted root lists"),
        "{}",
        message(&answer)
    );
    // ...and admitted with the root that does.
    let answer = review(&webhook(&keyless), &format!("{host}/team/good:v1")).await;
    assert!(allowed(&answer), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_signed_bundle_is_admitted_by_its_key_and_refused_by_another_key() {
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let digest = setup.push_image("team/app", "key");
    let out = setup.sign(&digest, "team/app", Some(&host), &["--kind", "key"]);
    let public = out.join("public.pem").display().to_string();
    let image = format!("{host}/team/app:v1");
    let keys = |path: &str| {
        format!(
            "      trustedRoot: {}\n      requireTransparencyLog: true\n      keys:\n        - path: {path}\n",
            setup.root()
        )
    };
    let yaml = setup.config(&setup.registry.registry_yaml(), &host, "", &keys(&public));
    let answer = review(&webhook(&yaml), &image).await;
    assert!(allowed(&answer), "{answer}");

    // Another key (made by openssl, not by the signer).
    let other = setup.work.path().join("other.pem");
    let generated = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl ecparam -name prime256v1 -genkey -noout | openssl ec -pubout -out {}",
            other.display()
        ))
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let yaml = setup.config(
        &setup.registry.registry_yaml(),
        &host,
        "",
        &keys(&other.display().to_string()),
    );
    let answer = review(&webhook(&yaml), &image).await;
    assert!(!allowed(&answer));
    let text = message(&answer);
    assert!(
        text.contains("a Sigstore bundle in the referrers tag schema signed by an unknown key")
            && text.contains(&format!("not signed by key {}", other.display())),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_style_provenance_is_required_with_the_workflow_claims_it_pins() {
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let digest = setup.push_image("team/app", "provenance");
    // A plain signature and a SLSA provenance v1 attestation, both keyless from the workflow.
    setup.sign(&digest, "team/app", Some(&host), &[]);
    let predicate = tools()
        .join("slsa-provenance-v1.json")
        .display()
        .to_string();
    setup.sign(
        &digest,
        "team/app",
        Some(&host),
        &[
            "--predicate-type",
            "https://slsa.dev/provenance/v1",
            "--predicate",
            &predicate,
            "--tsa",
        ],
    );
    let image = format!("{host}/team/app:v1");
    let attestations = "      attestations:\n        - predicateType: slsaprovenance1\n";
    let pinned = "          sourceRepositoryUri: https://github.com/acme/app\n          sourceRepositoryRefRegExp: refs/heads/main\n          buildSignerUriRegExp: https://github.com/acme/app/\\.github/workflows/release\\.yml@.*\n          runnerEnvironment: github-hosted\n";
    let yaml = setup.config(
        &setup.registry.registry_yaml(),
        &host,
        "",
        &setup.keyless(pinned, attestations),
    );
    let answer = review(&webhook(&yaml), &image).await;
    assert!(allowed(&answer), "{answer}");

    // Pinned to release tags: the main-branch build does not count.
    let tags_only = yaml.replace(
        "sourceRepositoryRefRegExp: refs/heads/main",
        "sourceRepositoryRefRegExp: refs/tags/v.*",
    );
    let answer = review(&webhook(&tags_only), &image).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains("sourceRepositoryRef is refs/heads/main"),
        "{}",
        message(&answer)
    );

    // An image with a signature but no provenance is refused for the missing attestation.
    let bare = setup.push_image("team/bare", "no-provenance");
    setup.sign(&bare, "team/bare", Some(&host), &[]);
    let answer = review(&webhook(&yaml), &format!("{host}/team/bare:v1")).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains("https://slsa.dev/provenance/v1"),
        "{}",
        message(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_for_another_digest_a_tampered_statement_and_a_bundle_in_another_repository_are_refused()
 {
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let digest = setup.push_image("team/app", "binding");
    let yaml = setup.config(&setup.registry.registry_yaml(), &host, "", "");

    // A valid bundle whose statement is about another digest.
    let other = format!("sha256:{}", "ab".repeat(32));
    setup.sign(
        &digest,
        "team/app",
        Some(&host),
        &["--subject-digest", &other],
    );
    let yaml = format!("{yaml}{}", setup.keyless("", ""));
    let image = format!("{host}/team/app:v1");
    let answer = review(&webhook(&yaml), &image).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains(&format!("its statement is about another digest ({other})")),
        "{}",
        message(&answer)
    );

    // A correct bundle, then its statement edited to a new predicate: the DSSE signature no
    // longer verifies.
    let tampered_image = setup.push_image("team/tampered", "tampered");
    let out = setup.sign(&tampered_image, "team/tampered", None, &[]);
    let mut bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bundle.json")).unwrap()).unwrap();
    let payload = bundle["dsseEnvelope"]["payload"]
        .as_str()
        .unwrap()
        .to_owned();
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut statement: Value = serde_json::from_slice(&engine.decode(payload).unwrap()).unwrap();
    statement["predicate"] = json!({"tampered": true});
    bundle["dsseEnvelope"]["payload"] = json!(engine.encode(statement.to_string()));
    let descriptor = portcullis_test_support::registry::push_referrer(
        &host,
        "team/tampered",
        &tampered_image,
        &Artifact::of_type(BUNDLE_TYPE, &bundle.to_string())
            .annotated("dev.sigstore.bundle.content", "dsse-envelope")
            .annotated(
                "dev.sigstore.bundle.predicateType",
                "https://sigstore.dev/cosign/sign/v1",
            ),
    )
    .await;
    push_referrers_tag(&host, "team/tampered", &tampered_image, &[descriptor]).await;
    let answer = review(&webhook(&yaml), &format!("{host}/team/tampered:v1")).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains("does not verify"),
        "{}",
        message(&answer)
    );

    // The same image in another repository, signed there only.
    let elsewhere = setup.push_image("other/app", "binding");
    assert_eq!(
        elsewhere, digest,
        "the same image content has the same digest"
    );
    let fresh = setup.push_image("team/fresh", "elsewhere-only");
    setup.push_image("other/fresh", "elsewhere-only");
    setup.sign(&fresh, "other/fresh", Some(&host), &[]);
    let answer = review(&webhook(&yaml), &format!("{host}/team/fresh:v1")).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains("no signature for"),
        "{}",
        message(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_signed_seconds_after_its_first_denial_is_admitted_once_the_negative_ttl_lapses() {
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let digest = setup.push_image("team/app", "push-then-sign");
    // The root must exist before the policy is read: make it with a bundle nobody uses.
    setup.sign(&digest, "team/unused", None, &[]);
    let yaml = setup.config(
        &setup.registry.registry_yaml(),
        &host,
        "",
        &setup.keyless("", ""),
    );
    let router = webhook(&yaml);
    let image = format!("{host}/team/app:v1");
    let answer = review(&router, &image).await;
    assert!(!allowed(&answer), "not signed yet: {answer}");

    setup.sign(&digest, "team/app", Some(&host), &[]);
    // unverifiedTtlSeconds is 1: the same engine (same caches) admits it soon.
    eventually("the new signature counts", || {
        let router = router.clone();
        let image = image.clone();
        async move { allowed(&review(&router, &image).await) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_found_through_the_referrers_api_of_the_referrers_standin() {
    let setup = Setup::new();
    let standin = ReferrersStandin::start(&setup.registry).await;
    let digest = setup.push_image("team/app", "api");
    // @sigstore/oci pushes to the stand-in, which answers with OCI-Subject: no tag schema.
    setup.sign(&digest, "team/app", Some(&standin.host), &[]);
    assert!(
        !standin.recorded("team/app", &digest).is_empty(),
        "the stand-in recorded the referrer"
    );
    let yaml = setup.config(
        &standin.registry_yaml(),
        &standin.host,
        "",
        &setup.keyless("", ""),
    );
    let answer = review(&webhook(&yaml), &format!("{}/team/app:v1", standin.host)).await;
    assert!(allowed(&answer), "{answer}");
    let referrers = format!("/v2/team/app/referrers/{digest}");
    assert_eq!(
        standin.requests("GET", &referrers),
        1,
        "one referrers listing"
    );
    // And no tag-schema index was written, so the API is what found it.
    let tag = format!("/v2/team/app/manifests/{}", digest.replace(':', "-"));
    assert_eq!(standin.requests("GET", &tag), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provenance_bundle_counts_as_the_signature_only_when_its_predicate_type_is_configured_so()
{
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let digest = setup.push_image("team/app", "provenance-only");
    // What actions/attest-build-provenance leaves: a provenance bundle and no signature.
    let predicate = tools()
        .join("slsa-provenance-v1.json")
        .display()
        .to_string();
    setup.sign(
        &digest,
        "team/app",
        Some(&host),
        &[
            "--predicate-type",
            "https://slsa.dev/provenance/v1",
            "--predicate",
            &predicate,
        ],
    );
    let image = format!("{host}/team/app:v1");
    let default = setup.config(
        &setup.registry.registry_yaml(),
        &host,
        "",
        &setup.keyless("", ""),
    );
    let answer = review(&webhook(&default), &image).await;
    assert!(
        !allowed(&answer),
        "provenance is not a signature by default"
    );
    assert!(
        message(&answer).contains("no signature for"),
        "{}",
        message(&answer)
    );

    let provenance_signs = setup.config(
        &setup.registry.registry_yaml(),
        &host,
        "",
        &setup.keyless("", "      signaturePredicateTypes: [slsaprovenance1]\n"),
    );
    let answer = review(&webhook(&provenance_signs), &image).await;
    assert!(allowed(&answer), "{answer}");
}
