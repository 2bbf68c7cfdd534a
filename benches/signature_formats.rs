//! Cold verification per signature format against a real `docker-registry` on 127.0.0.1:
//! a classic Cosign `.sig` (key), and Sigstore bundles made by sigstore-js (key with Rekor v1,
//! keyless with Rekor v1, keyless timestamp-only) attached through the referrers tag schema.
//! Prints registry requests per cold verification (from the registry's access log) and times
//! each with new caches. Needs `scripts/install-sigstore-js` to have run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a benchmark that cannot set up should stop loudly

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::config::{Config, LoadedConfig};
use portcullis::evidence::{EvidenceSource, GatherContext, SignatureEvidence};
use portcullis::reference::ImageRef;
use portcullis::registry::RegistryClient;
use portcullis::registry_evidence::RegistryEvidence;
use portcullis_test_support::registry::{
    ImageSpec, IndependentKey, Layout, Mode, Registry, push_signature_layers,
    simple_signing_payload, write_file,
};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SAN: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main";

struct Case {
    name: &'static str,
    config: Config,
    image: ImageRef,
}

fn push(registry: &Registry, repository: &str, marker: &str) -> String {
    let mut layout = Layout::new();
    let digest = layout.single("v1", &ImageSpec::new(marker));
    registry.push_layout(layout.path(), "v1", repository);
    digest
}

fn sign(
    work: &Path,
    registry: &Registry,
    digest: &str,
    repository: &str,
    args: &[&str],
) -> PathBuf {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/sigstore-js");
    let out = work.join(repository.replace('/', "-"));
    let status = Command::new("node")
        .arg(tools.join("sign.mjs"))
        .args([
            "--digest",
            digest,
            "--identity-san",
            SAN,
            "--issuer",
            ISSUER,
        ])
        .args([
            "--push",
            &format!("{}/{repository}", registry.host),
            "--plain-http",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--state")
        .arg(work.join("state"))
        .args(args)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    out
}

fn config(registry: &Registry, repository: &str, signatures: &str) -> Config {
    let yaml = format!(
        "{}imagePolicies:\n  - name: team\n    images: [\"{}/{repository}\"]\n    signatures:\n{signatures}",
        registry.registry_yaml(),
        registry.host
    );
    LoadedConfig::from_yaml(&yaml, "bench").unwrap().config
}

fn cases(runtime: &tokio::runtime::Runtime, registry: &Registry, work: &Path) -> Vec<Case> {
    let image =
        |repository: &str| ImageRef::parse(&format!("{}/{repository}:v1", registry.host)).unwrap();
    // Classic .sig, key.
    let digest = push(registry, "team/classic", "classic");
    let key = IndependentKey::generate();
    let payload = simple_signing_payload(&format!("{}/team/classic", registry.host), &digest);
    let signature = key.sign_base64(&payload);
    runtime.block_on(push_signature_layers(
        registry,
        "team/classic",
        &digest,
        &[(payload, signature)],
    ));
    let key_path = write_file(work, "classic.pub", &key.public_pem());
    let classic = config(
        registry,
        "team/classic",
        &format!("      keys:\n        - path: {}\n", key_path.display()),
    );
    // Bundles from sigstore-js.
    let digest = push(registry, "team/key-bundle", "key-bundle");
    let out = sign(
        work,
        registry,
        &digest,
        "team/key-bundle",
        &["--kind", "key"],
    );
    let root = out.join("trusted_root.json");
    let key_bundle = config(
        registry,
        "team/key-bundle",
        &format!(
            "      trustedRoot: {}\n      requireTransparencyLog: true\n      keys:\n        - path: {}\n",
            root.display(),
            out.join("public.pem").display()
        ),
    );
    let keyless = format!(
        "      trustedRoot: {}\n      keyless:\n        - issuer: {ISSUER}\n          subject: {SAN}\n",
        root.display()
    );
    let digest = push(registry, "team/keyless", "keyless");
    sign(work, registry, &digest, "team/keyless", &[]);
    let digest = push(registry, "team/tsa", "tsa");
    sign(work, registry, &digest, "team/tsa", &["--kind", "tsa-only"]);
    // Cosign 3 on Rekor v2: a DSSE bundle with a `dsse` 0.0.2 entry and a TSA timestamp.
    let digest = push(registry, "team/dsse-v2", "dsse-v2");
    sign(work, registry, &digest, "team/dsse-v2", &["--rekor", "v2"]);
    vec![
        Case {
            name: "classic .sig, key",
            config: classic,
            image: image("team/classic"),
        },
        Case {
            name: "bundle, key, Rekor v1 (tag schema)",
            config: key_bundle,
            image: image("team/key-bundle"),
        },
        Case {
            name: "bundle, keyless, Rekor v1 (tag schema)",
            config: config(registry, "team/keyless", &keyless),
            image: image("team/keyless"),
        },
        Case {
            name: "bundle, keyless, TSA only (tag schema)",
            config: config(registry, "team/tsa", &keyless),
            image: image("team/tsa"),
        },
        Case {
            name: "bundle, keyless, Rekor v2 dsse + TSA (tag schema)",
            config: config(registry, "team/dsse-v2", &keyless),
            image: image("team/dsse-v2"),
        },
    ]
}

fn fresh_source(config: &Config) -> RegistryEvidence {
    let client = Arc::new(RegistryClient::new(&config.registries, &config.evidence).unwrap());
    RegistryEvidence::with_registry(client, config.evidence.clone(), None)
}

async fn gather_once(source: &RegistryEvidence, case: &Case) {
    let context = GatherContext::anonymous(tokio::time::Instant::now() + Duration::from_secs(10));
    let evidence = source
        .gather(
            &case.image,
            &case.config.image_policies.iter().collect::<Vec<_>>(),
            &context,
        )
        .await
        .unwrap();
    assert!(
        matches!(evidence.signatures, SignatureEvidence::Verified { .. }),
        "{}: {:?}",
        case.name,
        evidence.signatures
    );
    black_box(evidence);
}

fn signature_formats(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let cases = cases(&runtime, &registry, work.path());
    for case in &cases {
        let source = fresh_source(&case.config);
        let before = registry.request_count();
        runtime.block_on(gather_once(&source, case));
        println!(
            "registry requests for one cold verification, {}: {}",
            case.name,
            registry.request_count() - before
        );
    }
    let mut group = c.benchmark_group("cold verification");
    group.sample_size(20);
    for case in &cases {
        group.bench_function(case.name, |b| {
            b.iter(|| runtime.block_on(gather_once(&fresh_source(&case.config), case)));
        });
    }
    group.finish();
}

criterion_group!(benches, signature_formats);
criterion_main!(benches);
