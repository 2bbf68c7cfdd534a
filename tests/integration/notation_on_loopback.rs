//! Notary Project signatures in a real `docker-registry` on loopback, pushed by the
//! independent Python signer (`tests/tools/notation/sign.py`, PyPI `cryptography` and
//! `pycose`) the way `notation sign` does on a registry without the referrers API (the
//! referrers tag schema), judged through the real webhook router: JWS and COSE accepted by
//! the right trust store and identity, refused by another, and counted toward one threshold
//! with a Cosign key signature.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use portcullis_test_support::registry::{
    ImageSpec, IndependentKey, Layout, Mode, Registry, manifest_descriptor, sign_image, write_file,
};

const QUIET_RULES: &str = "rules:\n  noLatestTag: {enabled: false}\n  runAsNonRoot: {enabled: false}\n  privilegeEscalation: {enabled: false}\n";
const SUBJECT: &str = "C=US, ST=WA, O=acme, CN=release signer";

fn signer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/notation/sign.py")
}

fn run(args: &[&str]) {
    let output = Command::new("python3")
        .arg(signer())
        .args(args)
        .output()
        .expect("python3 runs (scripts/install-python-tools)");
    assert!(
        output.status.success(),
        "sign.py {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Signs `digest` in `repository` with the keys in `keys` and pushes the envelope.
async fn notation_sign(
    registry: &Registry,
    repository: &str,
    digest: &str,
    keys: &Path,
    format: &str,
) {
    let descriptor: Value = manifest_descriptor(&registry.host, repository, digest).await;
    let media_type = descriptor["mediaType"].as_str().unwrap().to_owned();
    let size = descriptor["size"].to_string();
    let envelope = keys.join(format!("{format}-{}.sig", &digest[7..19]));
    let envelope = envelope.display().to_string();
    let keys = keys.display().to_string();
    let common = [
        "--keys",
        &keys,
        "--digest",
        digest,
        "--media-type",
        &media_type,
        "--size",
        &size,
        "--format",
        format,
    ];
    let mut sign = vec!["sign"];
    sign.extend_from_slice(&common);
    sign.extend_from_slice(&["--out", &envelope]);
    run(&sign);
    let mut push = vec!["push", "--registry", &registry.host, "--repo", repository];
    push.extend_from_slice(&common);
    push.extend_from_slice(&["--envelope", &envelope]);
    run(&push);
}

fn keygen(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    run(&[
        "keygen",
        "--out",
        &dir.display().to_string(),
        "--subject",
        SUBJECT,
    ]);
    dir.to_owned()
}

use crate::common::{registry_webhook as webhook, review_pod_image as review, verdict};

fn push_image(registry: &Registry, repository: &str, marker: &str) -> String {
    let mut layout = Layout::new();
    let digest = layout.single("v1", &ImageSpec::new(marker));
    registry.push_layout(layout.path(), "v1", repository);
    digest
}

fn config(registry: &Registry, signatures: &str) -> String {
    format!(
        "{}{QUIET_RULES}imagePolicies:\n  - name: team\n    images: [\"{}/**\"]\n    signatures:\n{signatures}",
        registry.registry_yaml(),
        registry.host
    )
}

fn notation_policy(ca: &Path, identity: &str) -> String {
    format!(
        "      notation:\n        trustStore: [{}]\n        trustedIdentities: [\"x509.subject: {identity}\"]\n",
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notation_jws_and_cose_signatures_are_admitted_by_their_trust_store_and_refused_by_another()
{
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let keys = keygen(&work.path().join("keys"));
    let other = keygen(&work.path().join("other"));
    let jws = push_image(&registry, "team/jws", "notation-jws");
    let cose = push_image(&registry, "team/cose", "notation-cose");
    notation_sign(&registry, "team/jws", &jws, &keys, "jws").await;
    notation_sign(&registry, "team/cose", &cose, &keys, "cose").await;

    let yaml = config(&registry, &notation_policy(&keys.join("ca.pem"), SUBJECT));
    let router = webhook(&yaml);
    for repository in ["team/jws", "team/cose"] {
        let (allowed, text) =
            verdict(&review(&router, &format!("{}/{repository}:v1", registry.host)).await);
        assert!(allowed, "{repository}: {text}");
    }

    // Another root: the chain leads nowhere the policy trusts.
    let yaml = config(&registry, &notation_policy(&other.join("ca.pem"), SUBJECT));
    let (allowed, text) =
        verdict(&review(&webhook(&yaml), &format!("{}/team/jws:v1", registry.host)).await);
    assert!(!allowed);
    assert!(
        text.contains(
            "a Notation JWS signature in the referrers tag schema signed by a Notation signer"
        ),
        "{text}"
    );

    // Another identity.
    let yaml = config(
        &registry,
        &notation_policy(&keys.join("ca.pem"), "C=US, ST=WA, O=someone-else"),
    );
    let (allowed, text) =
        verdict(&review(&webhook(&yaml), &format!("{}/team/cose:v1", registry.host)).await);
    assert!(!allowed);
    assert!(text.contains("Notation COSE signature"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notation_signature_and_a_cosign_key_signature_count_toward_one_threshold() {
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let keys = keygen(&work.path().join("keys"));
    let digest = push_image(&registry, "team/app", "mixed");
    let cosign = IndependentKey::generate();
    let key_path = write_file(work.path(), "team.pub", &cosign.public_pem());
    let signatures = format!(
        "      threshold: 2\n      keys:\n        - path: {}\n{}",
        key_path.display(),
        notation_policy(&keys.join("ca.pem"), SUBJECT)
    );
    let yaml = config(&registry, &signatures);
    let image = format!("{}/team/app:v1", registry.host);

    sign_image(&registry, "team/app", &digest, &cosign).await;
    let (allowed, text) = verdict(&review(&webhook(&yaml), &image).await);
    assert!(!allowed);
    assert!(text.contains("only 1 of 2 required signers"), "{text}");

    notation_sign(&registry, "team/app", &digest, &keys, "jws").await;
    let (allowed, text) = verdict(&review(&webhook(&yaml), &image).await);
    assert!(allowed, "{text}");
}
