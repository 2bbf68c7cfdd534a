//! Trivy Operator VulnerabilityReports through a kube watcher. No kube-apiserver can run here,
//! so kube's mock service (tower-test) answers the LIST and WATCH requests with real JSON shapes
//! from `tests/data/trivy-operator`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use crate::common::data_path;
use kube::client::Body;
use portcullis::reference::ImageRef;
use portcullis::scan::ScanSource;
use portcullis::scan::operator::{OperatorReports, ReportKey, parse};

type MockHandle = tower_test::mock::Handle<http::Request<Body>, http::Response<Body>>;

fn ok(body: Vec<u8>) -> http::Response<Body> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// Plays the API server: answers the LIST, then one WATCH, then leaves later requests pending.
async fn api_server(mut handle: MockHandle, paths: tokio::sync::mpsc::UnboundedSender<String>) {
    let (list, respond) = handle.next_request().await.expect("a LIST request");
    paths.send(list.uri().to_string()).unwrap();
    respond.send_response(ok(
        std::fs::read(data_path("trivy-operator/list.json")).unwrap()
    ));
    let (watch, respond) = handle.next_request().await.expect("a WATCH request");
    paths.send(watch.uri().to_string()).unwrap();
    respond.send_response(ok(std::fs::read(data_path(
        "trivy-operator/watch-events.jsonl",
    ))
    .unwrap()));
    // Keep the mock alive (a re-watch simply waits) until the test ends.
    let _pending = handle.next_request().await;
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn reports_are_listed_watched_and_indexed_by_digest_with_a_tag_fallback() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (service, handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (paths, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(api_server(handle, paths));
    let reports = OperatorReports::new();
    assert!(
        reports.pending().is_some(),
        "nothing listed yet: the source says it cannot answer"
    );
    let watcher = reports.watch(client);

    let digest = format!("sha256:{}", "4".repeat(64));
    let nginx = ImageRef::parse("nginx:1.16").unwrap();
    // After LIST and WATCH: the newer rescan of the digest wins, the tag-only report is gone.
    portcullis_test_support::eventually("the watch events are applied", || {
        std::future::ready(
            reports
                .lookup(&digest)
                .is_some_and(|r| r.vulnerabilities.len() == 2)
                && reports.lookup_by_tag(&nginx).is_none(),
        )
    })
    .await;
    assert_eq!(reports.pending(), None, "listed: the source answers");
    let report = reports.lookup(&digest).unwrap();
    assert_eq!(report.scanned_at.date().to_string(), "2026-11-24");
    assert!(
        report
            .source
            .contains("VulnerabilityReport shop/replicaset-web2-5b7d9c8f4-app")
    );

    let list = seen.recv().await.unwrap();
    assert!(
        list.starts_with("/apis/aquasecurity.github.io/v1alpha1/vulnerabilityreports?"),
        "{list}"
    );
    let watch = seen.recv().await.unwrap();
    assert!(
        watch.contains("watch=true") && watch.contains("resourceVersion=105"),
        "{watch}"
    );
    watcher.abort();
    server.abort();
}

#[test]
fn a_report_without_a_digest_is_filed_under_its_normalised_tag() {
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_path("trivy-operator/list.json")).unwrap())
            .unwrap();
    let objects: Vec<kube::api::DynamicObject> =
        serde_json::from_value(list["items"].clone()).unwrap();
    let (key, report) = parse(&objects[0]).unwrap();
    assert_eq!(key, ReportKey::Digest(format!("sha256:{}", "4".repeat(64))));
    assert_eq!(report.vulnerabilities[0].package, "libssl3");
    let (key, report) = parse(&objects[1]).unwrap();
    assert_eq!(key, ReportKey::Tag("docker.io/library/nginx:1.16".into()));
    assert_eq!(
        report.matched_tag.as_deref(),
        Some("docker.io/library/nginx:1.16")
    );
    assert!(
        report.describe().contains("matched by tag"),
        "{}",
        report.describe()
    );
    let broken = parse(&objects[2]);
    assert!(broken.is_err(), "a report without an artifact is refused");

    // The index serves the fallback only by tag, never as a digest.
    let reports = Arc::new(OperatorReports::default());
    reports.apply(kube::runtime::watcher::Event::Apply(objects[1].clone()));
    assert!(
        reports
            .lookup_by_tag(&ImageRef::parse("docker.io/library/nginx:1.16").unwrap())
            .is_some()
    );
    assert!(
        reports
            .lookup_by_tag(&ImageRef::parse("nginx:1.17").unwrap())
            .is_none()
    );
}

#[tokio::test]
async fn the_engine_falls_back_to_a_tag_report_only_without_a_digest_report() {
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_path("trivy-operator/list.json")).unwrap())
            .unwrap();
    let objects: Vec<kube::api::DynamicObject> =
        serde_json::from_value(list["items"].clone()).unwrap();
    let reports = OperatorReports::new();
    reports.apply(kube::runtime::watcher::Event::Apply(objects[1].clone()));
    let config = "trustedRegistries: []\nrules: {noLatestTag: {enabled: false}}\nimagePolicies:\n  \
                  - name: hub\n    images: [\"docker.io/**\"]\n    vulnerabilities: {maxSeverity: HIGH}\n";
    let engine = common::engine(Some(config)).with_scans(reports);
    let (webhook, _, _) = common::routers(engine);
    let mut review = common::fixture("pod-host-network");
    review["request"]["object"]["spec"]["hostNetwork"] = serde_json::json!(false);
    review["request"]["object"]["spec"]["containers"][0]["image"] = serde_json::json!("nginx:1.16");
    let (_, answer) = common::post(&webhook, serde_json::to_vec(&review).unwrap(), "").await;
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("rule vulnerability: 1 vulnerability at or above HIGH: "),
        "{message}"
    );
    assert!(
        message
            .contains("report: VulnerabilityReport shop/replicaset-legacy-7f9c8d7b5-nginx (Trivy "),
        "{message}"
    );
    assert!(
        message.contains(
            "matched by tag docker.io/library/nginx:1.16, not by digest: the tag may have moved since the scan"
        ),
        "{message}"
    );
}

#[test]
fn serve_refuses_a_trivy_operator_configuration_without_cluster_access() {
    let exit = common::serve()
        .config_yaml("scans:\n  trivyOperator: {enabled: true}\n")
        .run();
    let (code, stderr) = (exit.code, exit.stderr);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("scans.trivyOperator needs access to the Kubernetes API"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_stays_unready_until_the_reports_are_first_listed() {
    use kube::runtime::watcher::Event;
    let reports = OperatorReports::new();
    let engine = common::engine(None).with_scans(reports.clone());
    let (_, probe, _) = common::routers(engine);
    let (status, body) = common::get(&probe, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("Trivy Operator VulnerabilityReports"),
        "{body}"
    );

    // A listing that has begun but not finished keeps it unready.
    reports.apply(Event::Init);
    assert_eq!(common::get(&probe, "/readyz").await.0, 503);
    reports.apply(Event::InitDone);
    let (status, body) = common::get(&probe, "/readyz").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ready"));

    // A later relist (after a watch error) does not make it unready again: the old index
    // keeps answering until the new listing replaces it.
    reports.apply(Event::Init);
    assert_eq!(common::get(&probe, "/readyz").await.0, 200);
}

#[tokio::test]
async fn a_one_shot_audit_waits_for_the_first_listing_and_gives_up_with_a_clear_error() {
    use kube::runtime::watcher::Event;
    use portcullis::object_review::wait_for_sources;
    let reports = OperatorReports::new();
    let engine = common::engine(None).with_scans(reports.clone());
    let err = wait_for_sources(&engine, Duration::from_millis(250))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("VulnerabilityReports") && err.contains("250ms"),
        "{err}"
    );

    let listing = reports.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        listing.apply(Event::Init);
        listing.apply(Event::InitDone);
    });
    wait_for_sources(&engine, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(engine.pending(), None);
}
