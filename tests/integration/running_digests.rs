//! Judging what the nodes run: a container is judged by the digest its status reports, a tag
//! that moved after the pull is a finding naming both digests, and re-judging follows changes
//! (a new scan report re-judges only the units running that digest; a pod watch that restarts
//! relists). The registry is a stand-in `EvidenceSource` that resolves tags from a table (the
//! judging logic is under test, not the registry client, which has its own loopback tests);
//! scan reports are real Trivy JSON in a real directory; the pod watch goes through kube's mock
//! service, since no kube-apiserver runs here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::sync::Arc;

use futures_util::StreamExt;
use portcullis::config::{ImagePolicy, LoadedConfig};
use portcullis::engine::Engine;
use portcullis::evidence::{
    EvidenceFuture, EvidenceSource, GatherContext, ImageEvidence, SignatureEvidence,
};
use portcullis::object_review::ClusterPods;
use portcullis::reference::ImageRef;
use portcullis::rejudge::{PodChange, Rejudger};
use portcullis::running::{RULE_RUNNING_DIGEST, Trigger};
use portcullis::scan::trivy::TrivyDirectory;
use portcullis_test_support::mock_apiserver;
use serde_json::{Value, json};

use crate::common::data_path;

/// In `trivy/app-vulnerable.json` (a CRITICAL finding).
const VULNERABLE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
/// In `trivy/clean.json`.
const CLEAN: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
/// A multi-arch index (`team/app:multi`) and its linux/amd64 manifest.
const INDEX: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
const PLATFORM: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";

/// Resolves `team/app:1.0` to the clean digest and `team/app:2.0` to the clean one too; a
/// reference with a digest is judged by that digest. Nothing is signed-checked here.
#[derive(Debug)]
struct TagTable;

impl EvidenceSource for TagTable {
    fn gather<'a>(
        &'a self,
        image: &'a ImageRef,
        _policies: &'a [&'a ImagePolicy],
        _context: &'a GatherContext,
    ) -> EvidenceFuture<'a> {
        let digest = match (image.digest(), image.tag()) {
            (Some(digest), _) => Some(digest.to_owned()),
            (None, Some("1.0" | "2.0")) => Some(CLEAN.to_owned()),
            (None, Some("multi")) => Some(INDEX.to_owned()),
            (None, _) => None,
        };
        Box::pin(async move {
            let mut evidence = ImageEvidence::signatures_only(
                digest.clone(),
                SignatureEvidence::Verified {
                    signers: vec!["stand-in".into()],
                },
            );
            if digest.as_deref() == Some(INDEX) {
                evidence
                    .children
                    .insert("linux/amd64".into(), PLATFORM.into());
            }
            Ok(evidence)
        })
    }
}

const CONFIG: &str = "
scans:
  trivyReports: {directory: \"{reports}\"}
rejudge: {interval: 10m, movedTag: warn}
imagePolicies:
  - name: team-images
    images: [\"127.0.0.1:5000/team/**\"]
    vulnerabilities:
      denyAtOrAbove: HIGH
      missingScan: allow
";

fn engine(reports: &std::path::Path) -> (Engine, Arc<TrivyDirectory>) {
    let yaml = CONFIG.replace("{reports}", &reports.display().to_string());
    let loaded = LoadedConfig::from_yaml(&yaml, "test").unwrap();
    let (trivy, _) = TrivyDirectory::open(reports.to_owned()).unwrap();
    let engine = Engine::new(loaded, Arc::new(TagTable))
        .unwrap()
        .with_scans(trivy.clone());
    (engine, trivy)
}

/// A pod of ReplicaSet `owner` as containerd reports it: `image` in the spec, `image_id` in
/// the status.
fn pod(name: &str, owner: &str, image: &str, image_id: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "resourceVersion": "1",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                          "uid": format!("rs-{owner}"), "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": image, "securityContext":
            {"runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false}}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "image": image, "imageID": image_id, "ready": true,
             "restartCount": 0, "imageRef": image_id}]}
    })
}

#[tokio::test]
async fn a_container_is_judged_by_the_digest_its_node_runs_and_a_moved_tag_names_both_digests() {
    let reports = tempfile::tempdir().unwrap();
    for (file, name) in [
        ("app-vulnerable.json", "old.json"),
        ("clean.json", "new.json"),
    ] {
        std::fs::copy(
            data_path(&format!("trivy/{file}")),
            reports.path().join(name),
        )
        .unwrap();
    }
    let (engine, _trivy) = engine(reports.path());
    // The tag names the clean digest now, but the node pulled the vulnerable one earlier.
    let running = pod(
        "web-1",
        "web-5b",
        "127.0.0.1:5000/team/app:1.0",
        &format!("127.0.0.1:5000/team/app@{VULNERABLE}"),
    );
    let mut rejudger = Rejudger::new();
    rejudger.apply(PodChange::Relisted(vec![running]));
    rejudger.poll(&engine);
    let inventory = portcullis::inventory::Inventory::default();
    let changes = rejudger.judge_pending_into(&engine, Some(&inventory)).await;
    // The inventory lists the digest the node runs, not the one the tag names now.
    let record = inventory
        .get(VULNERABLE)
        .expect("the running digest is inventoried");
    assert!(
        record
            .workloads
            .iter()
            .any(|w| w.contains("ReplicaSet shop/web-5b")),
        "{:?}",
        record.workloads
    );
    assert!(inventory.get(CLEAN).is_none());
    assert_eq!(changes.len(), 1, "{changes:?}");
    let judged = &changes[0].1;
    assert!(!judged.allowed, "{judged:?}");
    let rules: Vec<&str> = judged.findings.iter().map(|f| f.rule.as_str()).collect();
    assert!(rules.contains(&"vulnerability"), "{rules:?}");
    let moved = judged
        .findings
        .iter()
        .find(|f| f.rule == RULE_RUNNING_DIGEST)
        .expect("a running-digest finding");
    assert_eq!(moved.mode, portcullis::config::Mode::Warn);
    assert!(moved.found.contains(VULNERABLE), "{}", moved.found);
    assert!(moved.found.contains(CLEAN), "{}", moved.found);
    assert!(moved.fix.contains("rollout restart"), "{}", moved.fix);

    // The same pod at admission (no running digest) is judged by what the tag names: clean.
    let object = portcullis::object_files::from_value(
        pod("web-1", "web-5b", "127.0.0.1:5000/team/app:1.0", ""),
        "t",
    )
    .unwrap()
    .remove(0);
    let admitted = portcullis::object_review::judge_objects(&engine, &[object], "t")
        .await
        .unwrap();
    assert!(admitted[0].allowed, "{:?}", admitted[0]);
    assert!(admitted[0].findings.is_empty(), "{:?}", admitted[0]);
}

#[tokio::test]
async fn a_node_running_the_platform_manifest_of_the_index_its_tag_names_has_no_moved_tag() {
    let reports = tempfile::tempdir().unwrap();
    let (engine, _trivy) = engine(reports.path());
    let mut rejudger = Rejudger::new();
    rejudger.apply(PodChange::Relisted(vec![pod(
        "web-1",
        "web-5b",
        "127.0.0.1:5000/team/app:multi",
        &format!("127.0.0.1:5000/team/app@{PLATFORM}"),
    )]));
    let changes = rejudger.judge_pending(&engine).await;
    assert_eq!(changes.len(), 1);
    let judged = &changes[0].1;
    assert!(judged.allowed, "{judged:?}");
    assert!(
        judged
            .findings
            .iter()
            .all(|f| f.rule != RULE_RUNNING_DIGEST),
        "{judged:?}"
    );
}

#[tokio::test]
async fn a_new_report_for_one_running_digest_rejudges_that_unit_and_no_other() {
    let reports = tempfile::tempdir().unwrap();
    let (engine, trivy) = engine(reports.path());
    let mut rejudger = Rejudger::new();
    rejudger.apply(PodChange::Relisted(vec![
        pod(
            "web-1",
            "web-5b",
            "127.0.0.1:5000/team/app:1.0",
            &format!("127.0.0.1:5000/team/app@{VULNERABLE}"),
        ),
        pod(
            "web-2",
            "web-5b",
            "127.0.0.1:5000/team/app:1.0",
            &format!("127.0.0.1:5000/team/app@{VULNERABLE}"),
        ),
        pod(
            "api-1",
            "api-7c",
            "127.0.0.1:5000/team/app:2.0",
            &format!("127.0.0.1:5000/team/app@{CLEAN}"),
        ),
    ]));
    assert_eq!(rejudger.pods(), 3);
    assert!(
        rejudger.poll(&engine).is_empty(),
        "the first look is no change"
    );
    // Unscanned and missingScan: allow. The vulnerable digest's tag moved (warn).
    let first = rejudger.judge_pending(&engine).await;
    assert_eq!(first.len(), 2, "two units for three pods: {first:?}");
    assert_eq!(rejudger.units(), 2);
    assert!(first.iter().all(|(_, judged)| judged.allowed), "{first:?}");

    // A report for the vulnerable digest arrives: only the unit running it is judged again.
    std::fs::copy(
        data_path("trivy/app-vulnerable.json"),
        reports.path().join("app.json"),
    )
    .unwrap();
    trivy.reload().unwrap();
    let triggers = rejudger.poll(&engine);
    assert_eq!(triggers, [Trigger::Scans(vec![VULNERABLE.to_owned()])]);
    let second = rejudger.judge_pending(&engine).await;
    assert_eq!(second.len(), 1, "{second:?}");
    let (change, judged) = &second[0];
    assert_eq!(change.previous.as_deref(), Some("warned"));
    assert!(
        change.target.label.contains("ReplicaSet shop/web-5b"),
        "{}",
        change.target.label
    );
    assert!(
        change.target.label.contains("2 pods"),
        "{}",
        change.target.label
    );
    assert!(!judged.allowed);

    // Nothing changed since: nothing to judge, no change.
    assert!(rejudger.poll(&engine).is_empty());
    assert!(!rejudger.has_pending());
    // A reload re-judges every unit once; the same answers are no changes.
    rejudger.trigger(&Trigger::Reload);
    assert!(rejudger.judge_pending(&engine).await.is_empty());
}

/// One request of the pod watch, as the API server answers it: a list (resourceVersion `rv`)
/// or a watch stream of events.
fn list_of(pods: &[Value], rv: &str) -> http::Response<kube::client::Body> {
    mock_apiserver::json_response(
        200,
        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": rv}, "items": pods}),
    )
}

fn watch_of(events: &[Value]) -> http::Response<kube::client::Body> {
    let mut body = Vec::new();
    for event in events {
        body.extend(serde_json::to_vec(event).unwrap());
        body.push(b'\n');
    }
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn the_pod_watch_lists_follows_events_and_relists_after_it_restarts_against_a_mocked_api_server()
 {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let (client, server) = mock_apiserver::client("default", move |request| {
        let call = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let query = request.uri().query().unwrap_or_default().to_owned();
        let path = request.uri().path().to_owned();
        async move {
            assert_eq!(path, "/api/v1/pods", "every pod of every namespace");
            let watching = query.contains("watch=true");
            match call {
                0 => {
                    assert!(!watching, "a listing first: {query}");
                    list_of(
                        &[pod("a", "web", "x:1", ""), pod("b", "web", "x:1", "")],
                        "10",
                    )
                }
                1 => {
                    assert!(watching && query.contains("resourceVersion=10"), "{query}");
                    watch_of(&[
                        json!({"type": "ADDED", "object": pod("c", "api", "y:1", "")}),
                        json!({"type": "DELETED", "object": pod("a", "web", "x:1", "")}),
                        // The history is gone: the watcher must list again.
                        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                            "status": "Failure", "reason": "Expired", "code": 410,
                            "message": "too old resource version"}}),
                    ])
                }
                2 => {
                    assert!(!watching, "a relisting after 410: {query}");
                    list_of(&[pod("c", "api", "y:1", "")], "20")
                }
                _ => {
                    // Hold later watches open: the test has seen what it needs.
                    std::future::pending::<()>().await;
                    unreachable!()
                }
            }
        }
    });
    let mut changes = ClusterPods::new(client).changes();
    let mut names = Vec::new();
    while names.len() < 4 {
        let change = tokio::time::timeout(std::time::Duration::from_secs(20), changes.next())
            .await
            .expect("the watch goes on")
            .expect("the stream does not end");
        names.push(match change {
            PodChange::Relisted(pods) => format!(
                "relisted {}",
                pods.iter()
                    .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            PodChange::Applied(pod) => {
                format!("applied {}", pod["metadata"]["name"].as_str().unwrap())
            }
            PodChange::Deleted(uid) => format!("deleted {uid}"),
            other => format!("unexpected {other:?}"),
        });
    }
    assert_eq!(
        names,
        ["relisted a,b", "applied c", "deleted uid-a", "relisted c"]
    );
    // A relisting replaces what re-judging knows: only `c` runs now.
    let mut rejudger = Rejudger::new();
    rejudger.apply(PodChange::Relisted(vec![
        pod("a", "web", "x:1", ""),
        pod("b", "web", "x:1", ""),
    ]));
    rejudger.apply(PodChange::Applied(pod("c", "api", "y:1", "")));
    rejudger.apply(PodChange::Relisted(vec![pod("c", "api", "y:1", "")]));
    assert_eq!(rejudger.pods(), 1);
    server.abort();
}

fn running_digest_findings(judged: &portcullis::object_review::Judged) -> Vec<String> {
    judged
        .findings
        .iter()
        .filter(|f| f.rule == RULE_RUNNING_DIGEST)
        .map(|f| f.found.clone())
        .collect()
}

#[tokio::test]
async fn a_node_running_another_digest_than_admission_resolved_is_a_finding_naming_both() {
    let reports = tempfile::tempdir().unwrap();
    let (engine, _trivy) = engine(reports.path());
    // This replica admitted web-5b's pods when team/app:1.0 named VULNERABLE; the tag names
    // CLEAN now, and the node runs CLEAN: only admission's digest differs.
    let admitted = portcullis::admitted::AdmittedDigests::default();
    admitted.record(
        portcullis::admitted::AdmittedSite {
            namespace: "shop".into(),
            owner: "ReplicaSet/web-5b".into(),
            kind: portcullis::workload::ContainerKind::Container,
            container: "app".into(),
        },
        VULNERABLE,
    );
    let mut rejudger = Rejudger::new().with_admitted(Some(admitted));
    rejudger.apply(PodChange::Relisted(vec![
        pod(
            "web-1",
            "web-5b",
            "127.0.0.1:5000/team/app:1.0",
            &format!("127.0.0.1:5000/team/app@{CLEAN}"),
        ),
        // Another controller's pod with the same image: nothing admitted is known of it.
        pod(
            "api-1",
            "api-7c",
            "127.0.0.1:5000/team/app:1.0",
            &format!("127.0.0.1:5000/team/app@{CLEAN}"),
        ),
    ]));
    let changes = rejudger.judge_pending(&engine).await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(rejudger.evaluations(), 2);
    for (change, judged) in &changes {
        let found = running_digest_findings(judged);
        if change.target.label.contains("web-5b") {
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(
                found[0].contains(CLEAN) && found[0].contains(VULNERABLE),
                "{found:?}"
            );
            assert!(found[0].contains("admitted"), "{found:?}");
        } else {
            assert!(found.is_empty(), "{found:?}");
        }
    }
}

#[tokio::test]
async fn a_node_running_another_digest_than_its_spec_pins_is_a_finding_unless_it_is_a_platform_child()
 {
    let reports = tempfile::tempdir().unwrap();
    let (engine, _trivy) = engine(reports.path());
    let mut rejudger = Rejudger::new();
    rejudger.apply(PodChange::Relisted(vec![
        pod(
            "pinned-1",
            "pinned-5b",
            &format!("127.0.0.1:5000/team/app@{CLEAN}"),
            &format!("127.0.0.1:5000/team/app@{VULNERABLE}"),
        ),
        pod(
            "index-1",
            "index-5b",
            &format!("127.0.0.1:5000/team/app@{INDEX}"),
            &format!("127.0.0.1:5000/team/app@{PLATFORM}"),
        ),
    ]));
    let changes = rejudger.judge_pending(&engine).await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    for (change, judged) in &changes {
        let found = running_digest_findings(judged);
        if change.target.label.contains("pinned-5b") {
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(
                found[0].contains(VULNERABLE) && found[0].contains("pins"),
                "{found:?}"
            );
        } else {
            assert!(
                found.is_empty(),
                "the platform manifest of the pinned index: {found:?}"
            );
            assert!(judged.allowed, "{judged:?}");
        }
    }
}

/// A metadata-only list, as the API server answers `Accept: ...;as=PartialObjectMetadataList`.
fn metadata_list_of(items: &[Value], rv: &str) -> http::Response<kube::client::Body> {
    mock_apiserver::json_response(
        200,
        &json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                "metadata": {"resourceVersion": rv}, "items": items}),
    )
}

#[tokio::test]
async fn owner_chains_name_the_deployment_of_a_replicaset_against_a_mocked_api_server() {
    let (client, server) = mock_apiserver::client("default", move |request| {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        async move {
            match path.as_str() {
                "/apis/apps/v1/replicasets" if !query.contains("watch=true") => metadata_list_of(
                    &[
                        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": "web-5b", "namespace": "shop", "uid": "rs-web-5b",
                            "resourceVersion": "4",
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                "name": "web", "uid": "deploy-web", "controller": true,
                                "blockOwnerDeletion": true}]}}),
                    ],
                    "5",
                ),
                // RBAC without jobs: the chains of Jobs stay one hop.
                "/apis/batch/v1/jobs" => mock_apiserver::json_response(
                    403,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "Forbidden", "code": 403,
                        "message": "jobs.batch is forbidden: User \"system:serviceaccount:portcullis:portcullis\" cannot list resource \"jobs\""}),
                ),
                _ => {
                    // Hold watches open: the test has seen the listings.
                    std::future::pending::<()>().await;
                    unreachable!()
                }
            }
        }
    });
    let mut changes = ClusterPods::new(client).owner_changes();
    let mut rejudger = Rejudger::new();
    let mut seen = Vec::new();
    while !rejudger.owners_settled(&portcullis::object_review::OWNER_KINDS) {
        let change = tokio::time::timeout(std::time::Duration::from_secs(20), changes.next())
            .await
            .expect("the owner watches report")
            .expect("the stream does not end");
        seen.push(match &change {
            PodChange::OwnersRelisted { kind, owners } => format!("{kind} listed {}", owners.len()),
            PodChange::OwnersUnavailable(kind) => format!("{kind} unavailable"),
            other => format!("unexpected {other:?}"),
        });
        rejudger.apply(change);
    }
    seen.sort();
    assert_eq!(seen, ["Job unavailable", "ReplicaSet listed 1"]);
    let reports = tempfile::tempdir().unwrap();
    let (engine, _trivy) = engine(reports.path());
    rejudger.apply(PodChange::Relisted(vec![pod(
        "web-1",
        "web-5b",
        "127.0.0.1:5000/team/app:1.0",
        &format!("127.0.0.1:5000/team/app@{CLEAN}"),
    )]));
    let changes = rejudger.judge_pending(&engine).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    let target = &changes[0].0.target;
    let controller = target.controller.as_ref().expect("a controller");
    assert_eq!(
        (
            controller.kind.as_str(),
            controller.name.as_str(),
            controller.uid.as_str()
        ),
        ("Deployment", "web", "deploy-web")
    );
    assert!(
        target
            .label
            .contains("of Deployment shop/web via ReplicaSet web-5b"),
        "{}",
        target.label
    );
    server.abort();
}

#[tokio::test]
async fn a_deprecated_images_sunset_passing_rejudges_the_units_running_it_and_no_other() {
    let reports = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}deprecatedImages:\n  - images: [\"127.0.0.1:5000/team/app:1.0\"]\n    reason: \"1.0 is \
         withdrawn\"\n    replacement: \"127.0.0.1:5000/team/app:2.0\"\n    sunset: \"2026-12-01\"\n",
        CONFIG.replace("{reports}", &reports.path().display().to_string())
    );
    let engine_at = |date: &str| {
        let loaded = LoadedConfig::from_yaml(&yaml, "test").unwrap();
        let at = time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc3339)
            .unwrap();
        Engine::new(loaded, Arc::new(TagTable))
            .unwrap()
            .with_clock(Arc::new(portcullis::clock::FixedClock(at)))
    };
    let before = engine_at("2026-11-30T00:00:00Z");
    let mut rejudger = Rejudger::new();
    rejudger.apply(PodChange::Relisted(vec![
        pod(
            "old-1",
            "old-5b",
            "127.0.0.1:5000/team/app:1.0",
            &format!("127.0.0.1:5000/team/app@{CLEAN}"),
        ),
        pod(
            "new-1",
            "new-5b",
            "127.0.0.1:5000/team/app:2.0",
            &format!("127.0.0.1:5000/team/app@{CLEAN}"),
        ),
    ]));
    rejudger.poll(&before);
    let first = rejudger.judge_pending(&before).await;
    assert_eq!(first.len(), 2);
    let old = first
        .iter()
        .find(|(c, _)| c.target.label.contains("old-5b"))
        .unwrap();
    assert!(old.1.allowed, "warned before the sunset: {:?}", old.1);
    assert!(
        old.1.findings.iter().any(|f| f.rule == "deprecated-image"),
        "{:?}",
        old.1
    );
    // The same configuration a day later: no reload, but the sunset passed.
    let after = engine_at("2026-12-02T00:00:00Z");
    assert_eq!(after.identity(), before.identity());
    let triggers = rejudger.poll(&after);
    assert_eq!(triggers, [Trigger::Expiry("sunset:0".into())]);
    let second = rejudger.judge_pending(&after).await;
    assert_eq!(
        second.len(),
        1,
        "only the unit running the deprecated image: {second:?}"
    );
    assert!(second[0].0.target.label.contains("old-5b"));
    assert!(!second[0].1.allowed, "{:?}", second[0].1);
    assert_eq!(rejudger.evaluations(), 3);
}
