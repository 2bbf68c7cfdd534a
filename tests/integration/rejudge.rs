//! Re-judging what runs: a pass over running pods with the engine in force, published as
//! metrics. The pod lister is a fixed in-memory list (the kube-apiserver is not needed for the
//! judging logic; the real lister's LIST is tested with kube's mock service in
//! `audit_with_mocked_apiserver.rs`). Scan reports are real Trivy JSON in a real directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use crate::common;

use std::sync::Arc;

use crate::common::data_path;
use portcullis::clock::FixedClock;
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::evidence::NoRegistry;
use portcullis::object_review::{PodsFuture, RunningPods};
use portcullis::rejudge::pass;
use portcullis::scan::trivy::TrivyDirectory;
use portcullis::server::AppState;
use serde_json::Value;

pub(crate) const VULNERABLE: &str = "127.0.0.1:5000/team/app@sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// The running pods of `tests/data/cluster/pods.json`, held in memory (no API server).
pub(crate) struct FixedPodList(pub(crate) Vec<Value>);

impl RunningPods for FixedPodList {
    fn list(&self) -> PodsFuture<'_> {
        let pods = self.0.clone();
        Box::pin(async move { Ok(pods) })
    }
}

/// Listed on every periodic pass, never watched.
impl portcullis::rejudge::WatchedPods for FixedPodList {}

fn running_pods() -> FixedPodList {
    let dump: Value =
        serde_json::from_slice(&std::fs::read(data_path("cluster/pods.json")).unwrap()).unwrap();
    let pods = dump["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pod| pod["metadata"]["name"] != "legacy")
        .cloned()
        .map(|mut pod| {
            if pod["metadata"]["namespace"] == "shop" {
                pod["spec"]["containers"][0]["image"] = VULNERABLE.into();
            }
            pod
        })
        .collect();
    FixedPodList(pods)
}

pub(crate) const CONFIG: &str = "
exclude: {namespaces: [kube-system]}
scans:
  trivyReports: {directory: \"{reports}\"}
rejudge: {interval: 10m}
imagePolicies:
  - name: team-images
    images: [\"127.0.0.1:5000/team/**\"]
    vulnerabilities:
      maxSeverity: HIGH
      missingScan: allow
";

#[tokio::test]
async fn a_new_vulnerability_report_turns_a_running_workload_into_a_would_be_denial() {
    let reports = tempfile::tempdir().unwrap();
    let yaml = CONFIG.replace("{reports}", &reports.path().display().to_string());
    let loaded = LoadedConfig::from_yaml(&yaml, "test").unwrap();
    let (trivy, _) = TrivyDirectory::open(reports.path().to_owned()).unwrap();
    let clock = FixedClock(portcullis::timeutil::parse_instant("2026-11-25").unwrap());
    let engine = Engine::new(loaded, Arc::new(NoRegistry))
        .unwrap()
        .with_scans(trivy.clone())
        .with_clock(Arc::new(clock));
    let state = AppState::new(engine);
    let pods = running_pods();

    // No report yet (missingScan: allow): the ReplicaSet's two pods are one admitted workload;
    // CoreDNS is in an excluded namespace.
    let first = pass(&state, &pods, None).await.unwrap();
    assert_eq!((first.pods, first.workloads), (3, 2));
    assert_eq!(first.by_outcome.get("allowed"), Some(&1));
    assert_eq!(first.by_outcome.get("skipped"), Some(&1));
    assert!(first.findings.is_empty(), "{first:?}");
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains("portcullis_running_workloads{outcome=\"allowed\"} 1"),
        "{metrics}"
    );

    // A scan of the running digest arrives with a CRITICAL vulnerability.
    std::fs::copy(
        data_path("trivy/app-vulnerable.json"),
        reports.path().join("app.json"),
    )
    .unwrap();
    trivy.reload().unwrap();
    let second = pass(&state, &pods, None).await.unwrap();
    assert_eq!(second.by_outcome.get("denied"), Some(&1), "{second:?}");
    assert_eq!(second.by_outcome.get("allowed"), None);
    assert_eq!(
        second
            .findings
            .get(&("vulnerability".to_owned(), "enforce")),
        Some(&1)
    );
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains("portcullis_running_workloads{outcome=\"denied\"} 1"),
        "{metrics}"
    );
    // Outcomes that no workload has any more are gone, not stale.
    assert!(
        !metrics.contains("portcullis_running_workloads{outcome=\"allowed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_running_findings{rule=\"vulnerability\",mode=\"enforce\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "portcullis_running_namespace_findings{namespace=\"shop\",rule=\"vulnerability\",mode=\"enforce\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_rejudge_passes_total{result=\"ok\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn only_the_lease_holder_runs_passes_and_a_new_leader_runs_one_at_once() {
    let loaded = LoadedConfig::from_yaml("rejudge: {interval: 10m}\n", "test").unwrap();
    let state = AppState::new(Engine::new(loaded, Arc::new(NoRegistry)).unwrap());
    let (leading, following) = tokio::sync::watch::channel(false);
    let task = portcullis::rejudge::spawn(
        state.clone(),
        Arc::new(running_pods()),
        Some(following),
        portcullis::rejudge::Outputs::default(),
    );
    let passes = |state: &AppState| {
        state
            .metrics
            .encode()
            .contains("portcullis_rejudge_passes_total{result=\"ok\"} 1")
    };

    // A follower runs no pass (an ungated task would run its first one at once).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!passes(&state), "{}", state.metrics.encode());
    assert!(
        state
            .metrics
            .encode()
            .contains("portcullis_rejudge_leader 0")
    );

    // Becoming leader runs a pass now, not an interval later.
    leading.send(true).unwrap();
    let leader = state.clone();
    portcullis_test_support::eventually("the new leader's pass", || {
        let done = passes(&leader);
        async move { done }
    })
    .await;
    let metrics = state.metrics.encode();
    assert!(metrics.contains("portcullis_rejudge_leader 1"), "{metrics}");
    assert!(
        metrics.contains("portcullis_running_workloads{"),
        "{metrics}"
    );

    // Losing the Lease withdraws this replica's figures (the new leader publishes its own).
    leading.send(false).unwrap();
    let follower = state.clone();
    portcullis_test_support::eventually("the figures are withdrawn", || {
        let metrics = follower.metrics.encode();
        let done = metrics.contains("portcullis_rejudge_leader 0")
            && !metrics.contains("portcullis_running_workloads{");
        async move { done }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn a_leader_whose_elector_is_gone_keeps_the_interval_instead_of_spinning() {
    let loaded = LoadedConfig::from_yaml("rejudge: {interval: 10m}\n", "test").unwrap();
    let state = AppState::new(Engine::new(loaded, Arc::new(NoRegistry)).unwrap());
    let (leading, following) = tokio::sync::watch::channel(true);
    let task = portcullis::rejudge::spawn(
        state.clone(),
        Arc::new(running_pods()),
        Some(following),
        portcullis::rejudge::Outputs::default(),
    );
    let first = state.clone();
    portcullis_test_support::eventually("the first pass", || {
        let done = first
            .metrics
            .encode()
            .contains("portcullis_rejudge_passes_total{result=\"ok\"} 1");
        async move { done }
    })
    .await;
    drop(leading);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains("portcullis_rejudge_passes_total{result=\"ok\"} 1\n"),
        "a loop that spins would have run many passes: {metrics}"
    );
    task.abort();
}

#[test]
fn rejudging_more_often_than_a_minute_is_refused_with_its_key_path() {
    let err = LoadedConfig::from_yaml("rejudge: {interval: 10s}\n", "test").unwrap_err();
    assert!(err.to_string().contains("rejudge.interval"), "{err}");
}

#[test]
fn leader_election_is_on_by_default_and_a_bad_lease_name_is_refused() {
    let loaded = LoadedConfig::from_yaml("rejudge: {interval: 10m}\n", "test").unwrap();
    let rejudge = loaded.config.rejudge.unwrap();
    assert!(rejudge.leader_election);
    assert_eq!(rejudge.lease_name, "portcullis-rejudge");
    for bad in ["Portcullis", "-lease", "lease_1", "\"\""] {
        let yaml = format!("rejudge: {{interval: 10m, leaseName: {bad}}}\n");
        let err = LoadedConfig::from_yaml(&yaml, "test").unwrap_err();
        assert!(
            err.to_string().contains("rejudge.leaseName"),
            "{bad}: {err}"
        );
    }
    let off = "rejudge: {interval: 10m, leaderElection: false, leaseName: team-a.rejudge}\n";
    let rejudge = LoadedConfig::from_yaml(off, "test")
        .unwrap()
        .config
        .rejudge
        .unwrap();
    assert!(!rejudge.leader_election);
}

#[test]
fn serve_refuses_rejudging_without_cluster_access_before_binding() {
    let exit = common::serve()
        .config_yaml("rejudge: {interval: 15m}\n")
        .run();
    let (code, stderr) = (exit.code, exit.stderr);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("rejudge needs access to the Kubernetes API"),
        "{stderr}"
    );
    // check and review have no cluster: the key is accepted and ignored there.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "rejudge: {interval: 15m}\n").unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", &path.display().to_string()])
        .arg(data_path("manifests/compliant.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
