//! `portcullis serve` with `rejudge` on, end to end: the real binary, its real kube client, a
//! real registry and a real Trivy report directory. No kube-apiserver can run here, so the
//! cluster is a stand-in: a small HTTP server on 127.0.0.1 (named by a kubeconfig file, no
//! auth) that serves a PodList, holds the pod watch open and idle, accepts PolicyReport
//! applies, PolicyReport lists and Event creates/patches, and records every request. The image
//! the pod runs is pushed to Debian's `docker-registry` on 127.0.0.1 (image policies read the
//! manifest and config of the running digest), and the Trivy report names that digest.
//!
//! What it shows: a report dropped into the watched directory is picked up while `serve`
//! runs and turns the running workload into a denial, written as a PolicyReport `fail` result
//! and an `ImageDenied` Event on the workload's controller. The design's latency is the 1 s
//! poll for scan changes + `rejudge.settle` (1 s here) + judging; the test waits up to 20 s
//! and only prints what it measured.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use portcullis_test_support::registry::{ImageSpec, Layout, Mode, Registry};
use portcullis_test_support::serve::Serve;
use serde_json::{Value, json};

use crate::common::data_path;

/// One request the stand-in API server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    /// Path and query.
    uri: String,
    body: Value,
    /// Answered 404: nothing the stand-in serves.
    unexpected: bool,
}

#[derive(Clone)]
struct StandIn {
    requests: Arc<Mutex<Vec<Seen>>>,
    pod: Value,
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Names `body` `name` in `namespace` (what the API server would add), then echoes it.
fn echoed(mut body: Value, name: Option<&str>, namespace: &str) -> Value {
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("namespace".into(), namespace.into());
        if let Some(name) = name {
            metadata.insert("name".into(), name.into());
        }
        metadata.insert("resourceVersion".into(), "7".into());
        metadata
            .entry("uid")
            .or_insert_with(|| "standin-uid".into());
    }
    body
}

async fn handle(State(standin): State<StandIn>, request: Request) -> Response {
    let method = request.method().clone();
    let uri = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let bytes = request.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let watching = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let (response, unexpected) = match (&method, segments.as_slice()) {
        (&Method::GET, ["api", "v1", "pods"]) if watching => {
            // The watch stays open and idle: no pod changes.
            let idle = futures_util::stream::pending::<Result<Bytes, Infallible>>();
            let response = Response::builder()
                .status(StatusCode::OK)
                .header(axum::http::header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(idle))
                .unwrap();
            (response, false)
        }
        (&Method::GET, ["api", "v1", "pods"]) => (
            json_response(
                StatusCode::OK,
                &json!({
                    "apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": "5"},
                    "items": [standin.pod.clone()]
                }),
            ),
            false,
        ),
        (
            &Method::PATCH,
            [
                "apis",
                "wgpolicyk8s.io",
                "v1alpha2",
                "namespaces",
                ns,
                "policyreports",
                name,
            ],
        ) => (
            json_response(StatusCode::OK, &echoed(body.clone(), Some(name), ns)),
            false,
        ),
        (&Method::GET, ["apis", "wgpolicyk8s.io", "v1alpha2", "policyreports"])
        | (
            &Method::GET,
            [
                "apis",
                "wgpolicyk8s.io",
                "v1alpha2",
                "namespaces",
                _,
                "policyreports",
            ],
        ) => (
            json_response(
                StatusCode::OK,
                &json!({
                    "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReportList",
                    "metadata": {"resourceVersion": "1"}, "items": []
                }),
            ),
            false,
        ),
        (&Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"]) => (
            json_response(StatusCode::CREATED, &echoed(body.clone(), None, ns)),
            false,
        ),
        (
            &Method::PATCH,
            [
                "apis",
                "events.k8s.io",
                "v1",
                "namespaces",
                ns,
                "events",
                name,
            ],
        ) => (
            json_response(StatusCode::OK, &echoed(body.clone(), Some(name), ns)),
            false,
        ),
        _ => (
            json_response(
                StatusCode::NOT_FOUND,
                &json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "message": format!("the stand-in does not serve {method} {path}"),
                    "reason": "NotFound", "code": 404
                }),
            ),
            true,
        ),
    };
    standin.requests.lock().unwrap().push(Seen {
        method,
        uri,
        body,
        unexpected,
    });
    response
}

/// One pod of ReplicaSet `shop/web-5b`, running `digest` of `image` (a tag).
fn pod(image: &str, running: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-5b-x2", "namespace": "shop", "uid": "uid-pod-web-5b-x2",
            "resourceVersion": "4",
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5b",
                "uid": "uid-rs-web-5b", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {"containers": [{
            "name": "app", "image": image,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false
            }
        }]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "image": image, "imageID": running,
                "ready": true, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": "2026-11-01T00:00:00Z"}}
            }]
        }
    })
}

fn requests(requests: &Mutex<Vec<Seen>>) -> Vec<Seen> {
    requests.lock().unwrap().clone()
}

/// A PolicyReport apply of `shop/portcullis` whose results hold `rule` with `result`.
fn report_has(seen: &Seen, rule: &str, result: &str) -> bool {
    seen.method == Method::PATCH
        && seen
            .uri
            .starts_with("/apis/wgpolicyk8s.io/v1alpha2/namespaces/shop/policyreports/portcullis?")
        && seen.uri.contains("fieldManager=portcullis")
        && seen.body["results"].as_array().is_some_and(|results| {
            results
                .iter()
                .any(|r| r["rule"] == rule && r["result"] == result)
        })
}

fn image_denied_event(seen: &Seen) -> bool {
    seen.method == Method::POST
        && seen
            .uri
            .starts_with("/apis/events.k8s.io/v1/namespaces/shop/events")
        && seen.body["reason"] == "ImageDenied"
}

fn describe(seen: &[Seen], serve_log: &[String]) -> String {
    let lines: Vec<String> = seen
        .iter()
        .map(|s| {
            format!(
                "{}{} {} {}",
                if s.unexpected { "UNEXPECTED " } else { "" },
                s.method,
                s.uri,
                s.body
            )
        })
        .collect();
    format!(
        "requests:\n{}\nserve log:\n{}",
        lines.join("\n"),
        serve_log.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_rejudges_a_dropped_trivy_report_into_a_policy_report_and_an_event_with_a_standin_apiserver()
 {
    portcullis_test_support::install_crypto_provider();
    // The image the pod runs, in a real registry (its manifest and config are read).
    let registry = Registry::start(Mode::Plain);
    let mut layout = Layout::new();
    let digest = layout.single("1.0", &ImageSpec::new("rejudged"));
    registry.push_layout(layout.path(), "1.0", "team/app");
    let image = format!("{}/team/app:1.0", registry.host);
    let running = format!("{}/team/app@{digest}", registry.host);

    // The stand-in API server and a kubeconfig naming it.
    let standin = StandIn {
        requests: Arc::default(),
        pod: pod(&image, &running),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(standin.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: standin\n    cluster:\n      \
             server: http://127.0.0.1:{port}\nusers:\n  - name: anonymous\n    user: {{}}\n\
             contexts:\n  - name: standin\n    context:\n      cluster: standin\n      \
             user: anonymous\n      namespace: portcullis\ncurrent-context: standin\n"
        ),
    )
    .unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    let config = format!(
        "{}scans:\n  trivyReports: {{directory: \"{}\"}}\nrejudge:\n  interval: 10m\n  \
         leaderElection: false\n  policyReports: true\n  events: true\n  settle: 1s\n\
         imagePolicies:\n  - name: team-images\n    images: [\"{}/team/**\"]\n    \
         vulnerabilities: {{denyAtOrAbove: HIGH, missingScan: allow}}\n",
        registry.registry_yaml(),
        reports.display(),
        registry.host
    );
    let serve = Serve::new(env!("CARGO_BIN_EXE_portcullis"))
        .config_yaml(config)
        .env("KUBECONFIG", &kubeconfig)
        .spawn();

    // The first full pass: the pods are listed, the workload judged without a scan (allowed).
    serve.wait_for_log("re-judged running workloads", Duration::from_secs(20));
    let seen = requests(&standin.requests);
    assert!(
        seen.iter()
            .any(|s| s.method == Method::GET && s.uri.starts_with("/api/v1/pods?")),
        "{}",
        describe(&seen, &serve.stderr_lines())
    );
    assert!(
        !seen.iter().any(|s| report_has(s, "vulnerability", "fail")),
        "a vulnerability failure before any report: {}",
        describe(&seen, &serve.stderr_lines())
    );
    assert!(
        !seen.iter().any(image_denied_event),
        "{}",
        describe(&seen, &serve.stderr_lines())
    );

    // A Trivy report of the running digest with a CRITICAL finding is dropped in.
    let report = std::fs::read_to_string(data_path("trivy/app-vulnerable.json"))
        .unwrap()
        .replace(
            "sha256:1111111111111111111111111111111111111111111111111111111111111111",
            &digest,
        );
    let staging = dir.path().join("app.json.tmp");
    std::fs::write(&staging, report).unwrap();
    let dropped = Instant::now();
    std::fs::rename(&staging, reports.join("app.json")).unwrap();

    let (mut report_at, mut event_at) = (None, None);
    let deadline = dropped + Duration::from_secs(20);
    while (report_at.is_none() || event_at.is_none()) && Instant::now() < deadline {
        let seen = requests(&standin.requests);
        if report_at.is_none() && seen.iter().any(|s| report_has(s, "vulnerability", "fail")) {
            report_at = Some(dropped.elapsed());
        }
        if event_at.is_none() && seen.iter().any(image_denied_event) {
            event_at = Some(dropped.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = requests(&standin.requests);
    let (Some(report_at), Some(event_at)) = (report_at, event_at) else {
        panic!(
            "within 20 s of the report: PolicyReport fail {report_at:?}, ImageDenied Event \
             {event_at:?}; {}",
            describe(&seen, &serve.stderr_lines())
        );
    };
    eprintln!(
        "from the dropped report: PolicyReport fail after {report_at:?}, ImageDenied Event \
         after {event_at:?} (design: <= 1 s poll + 1 s settle + judging)"
    );

    // The Event is about the workload's controller and names the image.
    let event = seen.iter().find(|s| image_denied_event(s)).unwrap();
    let regarding = &event.body["regarding"];
    assert_eq!(regarding["kind"], "ReplicaSet", "{}", event.body);
    assert_eq!(regarding["name"], "web-5b", "{}", event.body);
    assert_eq!(regarding["namespace"], "shop", "{}", event.body);
    assert_eq!(event.body["type"], "Warning", "{}", event.body);
    let note = event.body["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(&image) || note.contains("team/app"),
        "{}",
        event.body
    );
    server.abort();
}
