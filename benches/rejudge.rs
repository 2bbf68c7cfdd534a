//! Cost of one re-judging pass over a cluster's running pods (group by controller → judge each
//! workload → metrics) and of building the PolicyReports from it, without any API server: the
//! pod list is in memory, the registry is not consulted (no image policy), the engine is the
//! embedded default.
#![allow(clippy::panic)] // reason: a benchmark that cannot set up should stop loudly

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Counts every allocation of this bench binary, so the memory of one structure is measured
/// in live bytes (what was allocated and not freed) rather than read off RSS, which the
/// allocator's retention blurs. The counters are atomics: timings here include their cost.
#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed by this process.
fn live_bytes() -> i64 {
    let stats = ALLOCATOR.stats();
    let signed = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    signed(stats.bytes_allocated) - signed(stats.bytes_deallocated)
        + i64::try_from(stats.bytes_reallocated).unwrap_or(0)
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
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

/// Resident memory of this process, from `/proc/self/status` (0 where it cannot be read).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `units` ReplicaSets of `replicas` pods, each ReplicaSet running its own digest (reported in
/// the pods' status as containerd spells it).
fn running_cluster(units: usize, replicas: usize) -> Vec<Value> {
    let mut pods = Vec::with_capacity(units * replicas);
    for u in 0..units {
        let digest = format!("sha256:{u:064x}");
        let image = format!("registry.example/team/app{u}:1.0");
        for r in 0..replicas {
            pods.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": format!("app{u}-5d9f-{r}"), "namespace": format!("team{}", u % 20),
                    "uid": format!("pod-{u}-{r}"),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": format!("app{u}-5d9f"), "uid": format!("rs-{u}"), "controller": true}]
                },
                "spec": {"containers": [{"name": "app", "image": image,
                    "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false},
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]},
                "status": {"containerStatuses": [{"name": "app", "image": image,
                    "imageID": format!("registry.example/team/app{u}@{digest}")}]}
            }));
        }
    }
    pods
}

/// Says every image is signed, by the digest its reference names (or a digest made from its
/// tag): the inventory then has signer, verdict and digest to record, without a registry.
#[derive(Debug)]
struct SignedStandIn;

impl portcullis::evidence::EvidenceSource for SignedStandIn {
    fn gather<'a>(
        &'a self,
        image: &'a portcullis::reference::ImageRef,
        _: &'a [&'a portcullis::config::ImagePolicy],
        _: &'a portcullis::evidence::GatherContext,
    ) -> portcullis::evidence::EvidenceFuture<'a> {
        let digest = image.digest().map(str::to_owned);
        Box::pin(async move {
            Ok(portcullis::evidence::ImageEvidence::signatures_only(
                digest,
                portcullis::evidence::SignatureEvidence::Verified {
                    signers: vec!["key release".into()],
                },
            ))
        })
    }
}

/// The inventory's share of issue 13's scale figures: 30,000 pods over 3,000 digests judged
/// under a signature policy (a stand-in says each is signed), every digest recorded.
fn inventory_at_scale() {
    use portcullis::rejudge::{PodChange, Rejudger};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("runtime: {err}"));
    let yaml = "inventory: {enabled: true}\nimagePolicies:\n  - name: team\n    images: \
                [\"registry.example/**\"]\n    signatures: {keys: [{pem: \"-----BEGIN PUBLIC \
                KEY-----\"}]}\n";
    let loaded = LoadedConfig::from_yaml(yaml, "bench").unwrap_or_else(|err| panic!("{err}"));
    let engine = Engine::new(loaded, Arc::new(SignedStandIn)).unwrap_or_else(|err| panic!("{err}"));
    let start = live_bytes();
    let pods = running_cluster(3000, 10);
    let listing = live_bytes() - start;
    let mut rejudger = Rejudger::new();
    rejudger.apply(PodChange::Relisted(pods));
    // The listing is consumed: what stays is the state (one sample pod per unit, the pods'
    // uids and units).
    let state = live_bytes() - start;
    let before = live_bytes();
    let started = std::time::Instant::now();
    runtime.block_on(rejudger.judge_pending(&engine));
    let full = started.elapsed();
    let evaluations = rejudger.evaluations();
    let judged = live_bytes() - before;
    // Judged again with the inventory: verdicts and records are replaced by equal ones, so
    // what is added is the inventory's; dropping it gives back exactly what it held.
    let inventory = portcullis::inventory::Inventory::default();
    rejudger.trigger(&portcullis::running::Trigger::Reload);
    runtime.block_on(rejudger.judge_pending_into(&engine, Some(&inventory)));
    let digests = inventory
        .query(&portcullis::inventory::Filter::default())
        .len();
    let with_inventory = live_bytes();
    drop(inventory);
    let inventory_bytes = with_inventory - live_bytes();
    eprintln!(
        "inventory: {} pods over {} digests judged in {} evaluations (first full judgement \
         {:?}); {} digests recorded; live bytes: the listing {}, the re-judging state built from \
         it {}, judging every unit added {} (verdicts, unit records, the engine's caches), the \
         inventory {} ({} bytes per digest)",
        rejudger.pods(),
        rejudger.digests(),
        evaluations,
        full,
        digests,
        mib(listing),
        mib(state),
        mib(judged),
        mib(inventory_bytes),
        inventory_bytes / i64::try_from(digests.max(1)).unwrap_or(1),
    );
}

/// The scale figures of issue 13: 30,000 pods over 3,000 digests held by the re-judging state,
/// a full judgement of every unit, and one digest's change judged (what a new report costs
/// after the poll and the settle delay). Printed once, then the change is benchmarked.
fn event_driven(c: &mut Criterion) {
    // First, while the process is small: RSS rarely shrinks, so later figures would hide it.
    inventory_at_scale();
    use portcullis::rejudge::{PodChange, Rejudger};
    use portcullis::running::Trigger;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("runtime: {err}"));
    let loaded = LoadedConfig::embedded().unwrap_or_else(|err| panic!("{err}"));
    let engine = Engine::new(loaded, Arc::new(NoRegistry)).unwrap_or_else(|err| panic!("{err}"));
    let pods = running_cluster(3000, 10);
    let before = rss_kib();
    let mut rejudger = Rejudger::new();
    rejudger.apply(PodChange::Relisted(pods));
    let held = rss_kib().saturating_sub(before);
    let started = std::time::Instant::now();
    let first = runtime.block_on(rejudger.judge_pending(&engine));
    let full = started.elapsed();
    eprintln!(
        "event-driven: {} pods over {} digests in {} units; state (with the listing it was built \
         from freed) {} KiB more RSS; first full judgement {:?} ({} verdicts); RSS now {} KiB",
        rejudger.pods(),
        rejudger.digests(),
        rejudger.units(),
        held,
        full,
        first.len(),
        rss_kib()
    );
    let changed = format!("sha256:{:064x}", 7);
    let mut group = c.benchmark_group("rejudge-event-driven");
    group.sample_size(20);
    group.bench_function("one-digest-change/30000-pods", |b| {
        b.iter(|| {
            rejudger.trigger(&Trigger::Scans(vec![changed.clone()]));
            runtime.block_on(rejudger.judge_pending(&engine))
        });
    });
    group.bench_function("reload/30000-pods", |b| {
        b.iter(|| {
            rejudger.trigger(&Trigger::Reload);
            runtime.block_on(rejudger.judge_pending(&engine))
        });
    });
    group.finish();
}

criterion_group!(benches, rejudge, event_driven);
criterion_main!(benches);
