//! Registry evidence against a real `docker-registry` on 127.0.0.1: the cold path (resolve the
//! tag, read manifest and config, find and verify the Cosign signature) versus the warm path
//! (everything answered from the caches), plus registry requests per cold verification and per
//! burst of concurrent reviews of one uncached image (printed, not timed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a benchmark that cannot set up should stop loudly

use std::hint::black_box;
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

struct Setup {
    registry: Registry,
    _keys: tempfile::TempDir,
    config: Config,
    image: ImageRef,
}

fn setup(runtime: &tokio::runtime::Runtime) -> Setup {
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let mut layout = Layout::new();
    let digest = layout.single("v1", &ImageSpec::new("bench"));
    registry.push_layout(layout.path(), "v1", "team/app");
    let key = IndependentKey::generate();
    let reference = format!("{}/team/app", registry.host);
    let payload = simple_signing_payload(&reference, &digest);
    let signature = key.sign_base64(&payload);
    runtime.block_on(push_signature_layers(
        &registry,
        "team/app",
        &digest,
        &[(payload, signature)],
    ));
    let keys = tempfile::tempdir().unwrap();
    let key_path = write_file(keys.path(), "team.pub", &key.public_pem());
    let yaml = format!(
        "{}imagePolicies:\n  - name: team\n    images: [\"{}/**\"]\n    signatures:\n      keys:\n        - path: {}\n",
        registry.registry_yaml(),
        registry.host,
        key_path.display()
    );
    let config = LoadedConfig::from_yaml(&yaml, "bench").unwrap().config;
    let image = ImageRef::parse(&format!("{reference}:v1")).unwrap();
    Setup {
        registry,
        _keys: keys,
        config,
        image,
    }
}

fn fresh_source(config: &Config) -> (Arc<RegistryClient>, RegistryEvidence) {
    let client = Arc::new(RegistryClient::new(&config.registries, &config.evidence).unwrap());
    let source = RegistryEvidence::with_registry(client.clone(), config.evidence.clone(), None);
    (client, source)
}

async fn gather_once(source: &RegistryEvidence, setup: &Setup) {
    let context = GatherContext::anonymous(tokio::time::Instant::now() + Duration::from_secs(10));
    let evidence = source
        .gather(
            &setup.image,
            &setup.config.image_policies.iter().collect::<Vec<_>>(),
            &context,
        )
        .await
        .unwrap();
    assert!(matches!(
        evidence.signatures,
        SignatureEvidence::Verified { .. }
    ));
    black_box(evidence);
}

fn registry_evidence(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let setup = setup(&runtime);

    // Registry requests: one cold verification, and a burst of 200 concurrent ones.
    // Counted from the registry's access log: portcullis's client and sigstore's together.
    let (client, source) = fresh_source(&setup.config);
    let before = setup.registry.request_count();
    runtime.block_on(gather_once(&source, &setup));
    println!(
        "registry requests for one cold verification: {} ({} by portcullis's client)",
        setup.registry.request_count() - before,
        client.requests()
    );
    let (client, source) = fresh_source(&setup.config);
    let before = setup.registry.request_count();
    runtime.block_on(async {
        futures_util::future::join_all((0..200).map(|_| gather_once(&source, &setup))).await;
    });
    println!(
        "registry requests for 200 concurrent cold reviews of one image: {} ({} by portcullis's client)",
        setup.registry.request_count() - before,
        client.requests()
    );

    let mut group = c.benchmark_group("registry_evidence");
    group.sample_size(30);
    group.bench_function("cold (new caches, one signed image)", |b| {
        b.iter(|| {
            let (_client, source) = fresh_source(&setup.config);
            runtime.block_on(gather_once(&source, &setup));
        });
    });
    let (_client, warm) = fresh_source(&setup.config);
    runtime.block_on(gather_once(&warm, &setup));
    group.sample_size(100);
    group.bench_function("warm (cache hit)", |b| {
        b.iter(|| runtime.block_on(gather_once(&warm, &setup)));
    });
    group.finish();
}

criterion_group!(benches, registry_evidence);
criterion_main!(benches);
