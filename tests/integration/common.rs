//! Helpers of the integration tests that need the portcullis library or this package's
//! binary and fixtures: fixtures, engines, in-process requests, the `portcullis` binary as a
//! `serve` builder and a `review` run. Support code that needs neither is the
//! `portcullis-test-support` crate.
#![allow(dead_code)] // reason: each test module uses a different subset of these helpers

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::evidence::{EvidenceSource, NoRegistry};
use portcullis::server::{AppState, probe_router, webhook_router};
use portcullis_test_support::serve::Serve;
use serde_json::Value;
use tower::ServiceExt;

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = data_path(&format!("{name}.json"));
    match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) => unreachable!("fixture {} unreadable: {err}", path.display()),
    }
}

pub fn fixture(name: &str) -> Value {
    match serde_json::from_slice(&fixture_bytes(name)) {
        Ok(value) => value,
        Err(err) => unreachable!("fixture {name} is not JSON: {err}"),
    }
}

/// An engine on the embedded default, or on `yaml` when given.
pub fn engine(yaml: Option<&str>) -> Engine {
    engine_with(yaml, Arc::new(NoRegistry))
}

pub fn engine_with(yaml: Option<&str>, evidence: Arc<dyn EvidenceSource>) -> Engine {
    let loaded = match yaml {
        Some(yaml) => LoadedConfig::from_yaml(yaml, "test"),
        None => LoadedConfig::embedded(),
    };
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(err) => unreachable!("test configuration invalid: {err}"),
    };
    match Engine::new(loaded, evidence) {
        Ok(engine) => engine,
        Err(err) => unreachable!("engine: {err}"),
    }
}

/// Both routers over one ready state.
pub fn routers(engine: Engine) -> (Router, Router, Arc<AppState>) {
    let state = AppState::new(engine);
    state.set_ready(true);
    (
        webhook_router(state.clone()),
        probe_router(state.clone()),
        state,
    )
}

/// POSTs a body to `/validate` (with an optional query) and returns status and JSON body.
pub async fn post(router: &Router, body: Vec<u8>, query: &str) -> (StatusCode, Value) {
    post_to(router, "/validate", body, query).await
}

/// POSTs a body to `path` (`/validate`, `/mutate`) and returns status and JSON body.
pub async fn post_to(
    router: &Router,
    path: &str,
    body: Vec<u8>,
    query: &str,
) -> (StatusCode, Value) {
    let request = Request::post(format!("{path}{query}"))
        .header("content-type", "application/json")
        .body(Body::from(body));
    let Ok(request) = request else {
        unreachable!("request builder")
    };
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => unreachable!("body: {err}"),
    };
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

/// GETs a probe path and returns status and text.
pub async fn get(router: &Router, path: &str) -> (StatusCode, String) {
    let Ok(request) = Request::get(path).body(Body::empty()) else {
        unreachable!("request builder")
    };
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => unreachable!("body: {err}"),
    };
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The rules named in a denial message's lines (`rule <id>:`), in order.
pub fn denied_rules(review: &Value) -> Vec<String> {
    let message = review["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    message
        .lines()
        .filter_map(|line| {
            let rest = line.split(": rule ").nth(1)?;
            Some(rest.split(':').next()?.to_owned())
        })
        .collect()
}

/// The AdmissionReview body for `object` as a CREATE of `kind`.
pub fn create_review(group: &str, kind: &str, resource: &str, object: Value) -> Vec<u8> {
    let version = "v1";
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("built-{kind}"),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "name": object["metadata"]["name"].clone(),
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": object,
        }
    });
    serde_json::to_vec(&review).unwrap_or_default()
}

/// `portcullis serve` of this package's binary, as a builder: run to its exit or spawned
/// until ready (see `portcullis_test_support::serve`).
pub fn serve() -> Serve {
    Serve::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// The webhook router over the registry-backed evidence source of `yaml` (real registries).
pub fn registry_webhook(yaml: &str) -> Router {
    let loaded = LoadedConfig::from_yaml(yaml, "test").unwrap();
    let evidence = Arc::new(
        portcullis::registry_evidence::RegistryEvidence::new(&loaded.config, None).unwrap(),
    );
    routers(Engine::new(loaded, evidence).unwrap()).0
}

/// The answer to a CREATE review of the Pod `shop/app` with one container running `image`.
pub async fn review_pod_image(router: &Router, image: &str) -> Value {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": image}]}
    });
    let (status, body) = post(
        router,
        create_review("", "Pod", "pods", pod),
        "?timeout=10s",
    )
    .await;
    assert_eq!(status, 200);
    body
}

/// Whether an answered review allowed the request, and its status message.
pub fn verdict(review: &Value) -> (bool, String) {
    (
        review["response"]["allowed"].as_bool().unwrap(),
        review["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Runs `portcullis review --config <config> -` with `body` on stdin: (exit code, stdout as
/// JSON or Null, stderr).
pub fn review_cli(config: &std::path::Path, body: &[u8]) -> (Option<i32>, Value, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["review", "--config"])
        .arg(config)
        .arg("-")
        .env_remove("PORTCULLIS_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let output = child.wait_with_output().unwrap();
    let _ = writer.join();
    (
        output.status.code(),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
