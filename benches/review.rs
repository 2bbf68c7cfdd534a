//! Cost of judging one AdmissionReview in process (parse → extract → policies → verdict →
//! response JSON), without TLS or HTTP: the floor under every `/validate` request.
#![allow(clippy::panic)] // reason: a benchmark that cannot set up should stop loudly

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::admission;
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::evidence::NoRegistry;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn review(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|err| panic!("runtime: {err}"));
    let loaded = LoadedConfig::embedded().unwrap_or_else(|err| panic!("{err}"));
    let engine = Engine::new(loaded, Arc::new(NoRegistry)).unwrap_or_else(|err| panic!("{err}"));
    let mut group = c.benchmark_group("review");
    for name in [
        "deployment-compliant",
        "deployment-nginx-untagged",
        "pod-ephemeral-container-update",
        "configmap-create",
    ] {
        let body = fixture(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let answer = admission::handle(&engine, black_box(&body), None).await;
                    let (review, _) = answer.unwrap_or_else(|err| panic!("{err}"));
                    black_box(serde_json::to_vec(&review).unwrap_or_default())
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = review
}
criterion_main!(benches);
