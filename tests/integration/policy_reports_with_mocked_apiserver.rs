//! PolicyReports written after a re-judging pass. No kube-apiserver can run here, so the
//! writer's kube client talks to kube's mock service (tower-test), which records each request
//! and answers with the API server's JSON shapes; the pass itself judges real pods from
//! `tests/data/cluster/pods.json` against a real Trivy report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::sync::{Arc, Mutex};

use kube::client::Body;
use portcullis::clock::FixedClock;
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::evidence::NoRegistry;
use portcullis::policy_report::{MAX_RESULTS, PolicyReportWriter, build_reports};
use portcullis::rejudge::pass;
use portcullis::scan::trivy::TrivyDirectory;
use portcullis::server::AppState;
use serde_json::{Value, json};

use crate::common::data_path;
use crate::rejudge::{CONFIG, FixedPodList, VULNERABLE};
use portcullis_test_support::mock_apiserver::{
    self, json_body, json_response as response, status_response,
};

const REPORTS: &str = "/apis/wgpolicyk8s.io/v1alpha2/namespaces";

/// Every pod of the dump; the shop ReplicaSet runs the vulnerable digest.
fn pods() -> FixedPodList {
    let dump: Value =
        serde_json::from_slice(&std::fs::read(data_path("cluster/pods.json")).unwrap()).unwrap();
    let pods = dump["items"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(|mut pod| {
            if pod["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("web-")
            {
                pod["spec"]["containers"][0]["image"] = VULNERABLE.into();
            }
            pod
        })
        .collect();
    FixedPodList(pods)
}

fn state(policy_reports: bool) -> (Arc<AppState>, tempfile::TempDir) {
    let reports = tempfile::tempdir().unwrap();
    std::fs::copy(
        data_path("trivy/app-vulnerable.json"),
        reports.path().join("app.json"),
    )
    .unwrap();
    let mut yaml = CONFIG.replace("{reports}", &reports.path().display().to_string());
    if policy_reports {
        yaml = yaml.replace(
            "rejudge: {interval: 10m}",
            "rejudge: {interval: 10m, policyReports: true}",
        );
    }
    let loaded = LoadedConfig::from_yaml(&yaml, "test").unwrap();
    let (trivy, _) = TrivyDirectory::open(reports.path().to_owned()).unwrap();
    let clock = FixedClock(portcullis::timeutil::parse_instant("2026-11-25T08:00:00Z").unwrap());
    let engine = Engine::new(loaded, Arc::new(NoRegistry))
        .unwrap()
        .with_scans(trivy)
        .with_clock(Arc::new(clock));
    (AppState::new(engine), reports)
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    content_type: String,
    body: Value,
}

fn not_found(what: &str) -> http::Response<Body> {
    status_response(
        404,
        "NotFound",
        &format!("the server could not find the requested resource ({what})"),
    )
}

/// Plays the API server: applies echo the object back; the LIST of portcullis's reports
/// returns one report in `shop` and a stale one in namespace `gone`; deletes succeed. With
/// `crd_missing`, every request about policyreports is a 404 (CRD not installed).
fn api_server(crd_missing: bool) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let (client, _server) = mock_apiserver::client("default", move |request| {
        let record = record.clone();
        async move {
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let content_type = request
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = json_body(request).await;
            record.lock().unwrap().push(Seen {
                method: method.clone(),
                uri: uri.clone(),
                content_type,
                body: body.clone(),
            });
            if crd_missing {
                return not_found("patch policyreports.wgpolicyk8s.io portcullis");
            }
            match method.as_str() {
                "PATCH" => response(200, &body),
                "GET" => response(
                    200,
                    &json!({
                        "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReportList",
                        "metadata": {"resourceVersion": "4711"},
                        "items": [
                            {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
                             "metadata": {"name": "portcullis", "namespace": "shop"}},
                            {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
                             "metadata": {"name": "portcullis", "namespace": "gone"}}
                        ]
                    }),
                ),
                "DELETE" => response(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "code": 200}),
                ),
                _ => not_found(&uri),
            }
        }
    });
    (client, seen)
}

#[tokio::test]
async fn a_pass_applies_one_report_per_namespace_and_deletes_stale_ones() {
    let (state, _reports) = state(true);
    let (client, seen) = api_server(false);
    let writer = PolicyReportWriter::new(client);
    let summary = pass(&state, &pods(), Some(&writer)).await.unwrap();
    let written = summary.reports.clone().unwrap().unwrap();
    assert_eq!((written.applied, written.deleted), (1, 1), "{summary:?}");

    let seen = seen.lock().unwrap().clone();
    let apply = &seen[0];
    assert_eq!(apply.method, "PATCH");
    assert!(
        apply
            .uri
            .starts_with(&format!("{REPORTS}/shop/policyreports/portcullis?")),
        "{}",
        apply.uri
    );
    assert!(
        apply.uri.contains("fieldManager=portcullis") && apply.uri.contains("force=true"),
        "{}",
        apply.uri
    );
    assert_eq!(apply.content_type, "application/apply-patch+yaml");

    // The shop namespace: the ReplicaSet fails the vulnerability rule; the bare `legacy` pod
    // has its own results. kube-system is excluded: no report for it.
    let report = &apply.body;
    assert_eq!(report["kind"], "PolicyReport");
    assert_eq!(
        report["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "portcullis"
    );
    let results = report["results"].as_array().unwrap();
    let vulnerable = results
        .iter()
        .find(|r| r["rule"] == "vulnerability")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(vulnerable["result"], "fail");
    assert_eq!(
        vulnerable["resources"][0],
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
               "namespace": "shop", "uid": "uid-web-7d4b9c"})
    );
    assert_eq!(vulnerable["properties"]["image"], VULNERABLE);
    assert_eq!(vulnerable["properties"]["mode"], "enforce");
    let message = vulnerable["message"].as_str().unwrap();
    assert!(
        message.contains("(container ") && message.contains("Fix: "),
        "{message}"
    );
    assert_eq!(
        vulnerable["timestamp"]["seconds"],
        json!(1_795_593_600),
        "the engine's clock"
    );
    assert!(
        results
            .iter()
            .any(|r| r["resources"][0]["kind"] == "Pod" && r["resources"][0]["name"] == "legacy"),
        "{report:#}"
    );
    let failed = results.iter().filter(|r| r["result"] == "fail").count();
    assert_eq!(report["summary"]["fail"], json!(failed));

    // Then the stale report of namespace `gone` is deleted, and only it.
    assert_eq!(seen[1].method, "GET");
    assert!(
        seen[1]
            .uri
            .starts_with("/apis/wgpolicyk8s.io/v1alpha2/policyreports?")
            && seen[1]
                .uri
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dportcullis"),
        "{}",
        seen[1].uri
    );
    let deletes: Vec<&Seen> = seen.iter().filter(|s| s.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(
        deletes[0].uri,
        format!("{REPORTS}/gone/policyreports/portcullis?")
    );
    assert!(
        state
            .metrics
            .encode()
            .contains("portcullis_policy_report_writes_total{result=\"ok\"} 1")
    );
}

#[tokio::test]
async fn a_missing_crd_is_a_logged_and_counted_failure_not_a_failed_pass() {
    let (state, _reports) = state(true);
    let (client, _) = api_server(true);
    let writer = PolicyReportWriter::new(client);
    let summary = pass(&state, &pods(), Some(&writer)).await.unwrap();
    let err = summary.reports.clone().unwrap().unwrap_err();
    assert!(
        err.contains("PolicyReport shop/portcullis") && err.contains("CRD installed"),
        "{err}"
    );
    assert_eq!(summary.by_outcome.get("denied"), Some(&2), "{summary:?}");
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains("portcullis_policy_report_writes_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_rejudge_passes_total{result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn reports_are_written_only_when_the_configuration_asks() {
    let (state, _reports) = state(false);
    let (client, seen) = api_server(false);
    let writer = PolicyReportWriter::new(client);
    let summary = pass(&state, &pods(), Some(&writer)).await.unwrap();
    assert_eq!(summary.reports, None);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_huge_namespace_keeps_violations_first_and_counts_everything() {
    // 1200 bare pods in one namespace, every other one privileged.
    let pods: Vec<_> = (0..1200)
        .flat_map(|i| {
            let mut pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i}"), "namespace": "batch", "uid": format!("u{i}")},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
            });
            if i % 2 == 0 {
                pod["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
            }
            portcullis::object_files::from_value(pod, "test").unwrap()
        })
        .collect();
    let engine = crate::common::engine(None);
    let targets = portcullis::object_review::group_by_controller(pods);
    let objects: Vec<_> = targets.iter().map(|t| t.object.clone()).collect();
    let judged = portcullis::object_review::judge_objects(&engine, &objects, "t")
        .await
        .unwrap();
    let now = portcullis::timeutil::parse_instant("2026-11-25").unwrap();
    let reports = build_reports(&targets, &judged, now);
    let report = &reports["batch"];
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), MAX_RESULTS);
    let fails = judged
        .iter()
        .flat_map(|j| &j.findings)
        .filter(|f| f.mode != portcullis::config::Mode::Warn)
        .count();
    assert!(fails >= 600, "every privileged pod fails: {fails}");
    assert_eq!(report["summary"]["fail"], json!(fails));
    // The cut drops passes, never a violation that fits.
    assert!(
        results[..600].iter().all(|r| r["result"] == "fail"),
        "{:#}",
        results[599]
    );
}
