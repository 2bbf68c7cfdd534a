//! Cost of one re-judging pass over a cluster's running pods (group by controller → judge each
//! workload → metrics) and of building the PolicyReports from it, without any API server: the
//! pod list is in memory, the registry is not consulted (no image policy), the engine is the
//! embedded default.
#![allow(clippy::panic)] // reason: a benchmark that cannot set up should stop loudly

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::evidence::NoRegistry;
use portcullis::object_review::{PodsFuture, RunningPods, group_by_controller, judge_objects};
use portcullis::policy_report::build_reports;
use portcullis::server::AppState;
use serde_json::{Value, json};

struct InMemory(Vec<Value>);

impl RunningPods for InMemory {
    fn list(&self) -> PodsFuture<'_> {
        let pods = self.0.clone();
        Box::pin(async move { Ok(pods) })
    }
}

/// `workloads` ReplicaSets of `replicas` pods each, in 20 namespaces; every third workload
/// runs an untagged image (a finding), the rest a pinned, compliant one.
fn cluster(workloads: usize, replicas: usize) -> Vec<Value> {
    let mut pods = Vec::with_capacity(workloads * replicas);
    for w in 0..workloads {
        let image = if w % 3 == 0 {
            "nginx".to_owned()
        } else {
            format!("registry.example/team/app{w}@sha256:{}", "a".repeat(64))
        };
        for r in 0..replicas {
            pods.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": format!("app{w}-5d9f-{r}"), "namespace": format!("team{}", w % 20),
                    "uid": format!("pod-{w}-{r}"),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": format!("app{w}-5d9f"), "uid": format!("rs-{w}"), "controller": true}]
                },
                "spec": {"containers": [{"name": "app", "image": image,
                    "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false},
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}
            }));
        }
    }
    pods
}

fn rejudge(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("runtime: {err}"));
    let loaded = LoadedConfig::embedded().unwrap_or_else(|err| panic!("{err}"));
    let engine = Engine::new(loaded, Arc::new(NoRegistry)).unwrap_or_else(|err| panic!("{err}"));
    let state = AppState::new(engine);
    let mut group = c.benchmark_group("rejudge");
    group.sample_size(20);
    for (workloads, replicas) in [(100, 3), (1000, 3)] {
        let pods = InMemory(cluster(workloads, replicas));
        group.throughput(Throughput::Elements((workloads * replicas) as u64));
        group.bench_function(format!("pass/{}-pods", workloads * replicas), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let summary = portcullis::rejudge::pass(&state, black_box(&pods), None).await;
                    summary.unwrap_or_else(|err| panic!("{err}"))
                })
            });
        });
        let targets = group_by_controller(
            pods.0
                .iter()
                .flat_map(|p| {
                    portcullis::object_files::from_value(p.clone(), "bench").unwrap_or_default()
                })
                .collect(),
        );
        let objects: Vec<_> = targets.iter().map(|t| t.object.clone()).collect();
        let judged = runtime
            .block_on(judge_objects(&state.engine(), &objects, "bench"))
            .unwrap_or_else(|err| panic!("{err}"));
        let now = time::OffsetDateTime::now_utc();
        group.bench_function(
            format!("policy-reports/{}-pods", workloads * replicas),
            |b| {
                b.iter(|| build_reports(black_box(&targets), black_box(&judged), now));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, rejudge);
criterion_main!(benches);
