//! Pod pull secrets through the Kubernetes API. No kube-apiserver can run here, so kube's mock
//! service (tower-test) plays the API server with real JSON shapes of ServiceAccounts,
//! Secrets and Status errors; the logic under test is `KubePullSecrets`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kube::client::Body;
use portcullis::credentials::{Credential, KubePullSecrets, PullSecretSource};
use portcullis::workload::PullRefs;
use serde_json::{Value, json};

type MockHandle = tower_test::mock::Handle<http::Request<Body>, http::Response<Body>>;

fn respond(status: u16, body: &Value) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn not_found(kind: &str, name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound",
           "details": {"name": name, "kind": kind}, "code": 404})
}

fn docker_config_secret(namespace: &str, name: &str, host: &str, user: &str, pass: &str) -> Value {
    let config = json!({"auths": {host: {"auth": BASE64.encode(format!("{user}:{pass}"))}}});
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
           "metadata": {"name": name, "namespace": namespace, "uid": "6c1d1c4e-0000-4000-8000-000000000001",
                        "resourceVersion": "4711", "creationTimestamp": "2026-11-24T10:00:00Z"},
           "data": {".dockerconfigjson": BASE64.encode(config.to_string())}})
}

fn service_account(namespace: &str, name: &str, secrets: &[&str]) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
           "metadata": {"name": name, "namespace": namespace, "uid": "6c1d1c4e-0000-4000-8000-000000000002",
                        "resourceVersion": "42", "creationTimestamp": "2026-11-24T10:00:00Z"},
           "imagePullSecrets": secrets.iter().map(|s| json!({"name": s})).collect::<Vec<_>>()})
}

/// Answers GETs by path from `objects` (path → (status, body)), recording the paths asked.
async fn api_server(
    mut handle: MockHandle,
    objects: Vec<(String, u16, Value)>,
    asked: tokio::sync::mpsc::UnboundedSender<String>,
) {
    while let Some((request, send)) = handle.next_request().await {
        let path = request.uri().path().to_owned();
        assert_eq!(request.method(), "GET", "only reads are expected");
        asked.send(path.clone()).unwrap();
        match objects.iter().find(|(p, _, _)| *p == path) {
            Some((_, status, body)) => send.send_response(respond(*status, body)),
            None => send.send_response(respond(404, &not_found("Unknown", &path))),
        }
    }
}

fn mocked(
    objects: Vec<(String, u16, Value)>,
) -> (
    KubePullSecrets,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (service, handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (asked, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(api_server(handle, objects, asked));
    (KubePullSecrets::new(client), seen)
}

#[tokio::test]
async fn with_the_apiserver_mocked_pod_secrets_come_before_service_account_secrets() {
    let (source, mut seen) = mocked(vec![
        (
            "/api/v1/namespaces/shop/serviceaccounts/builder".into(),
            200,
            service_account("shop", "builder", &["sa-secret", "pod-secret"]),
        ),
        (
            "/api/v1/namespaces/shop/secrets/pod-secret".into(),
            200,
            docker_config_secret("shop", "pod-secret", "registry.example:5000", "pod", "p1"),
        ),
        (
            "/api/v1/namespaces/shop/secrets/sa-secret".into(),
            200,
            docker_config_secret("shop", "sa-secret", "ghcr.io", "sa", "p2"),
        ),
    ]);
    let pull = PullRefs {
        image_pull_secrets: vec!["pod-secret".into()],
        service_account: Some("builder".into()),
    };
    let configs = source.docker_configs("shop", &pull).await.unwrap();
    assert_eq!(configs.len(), 2);
    assert_eq!(
        configs[0].for_registry("registry.example:5000"),
        Some(&Credential::Basic {
            username: "pod".into(),
            password: "p1".into()
        })
    );
    assert_eq!(
        configs[1].for_registry("ghcr.io"),
        Some(&Credential::Basic {
            username: "sa".into(),
            password: "p2".into()
        })
    );
    let mut paths = Vec::new();
    while let Ok(path) = seen.try_recv() {
        paths.push(path);
    }
    // Each secret is read once, even when the pod and its account both name it.
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/shop/serviceaccounts/builder",
            "/api/v1/namespaces/shop/secrets/pod-secret",
            "/api/v1/namespaces/shop/secrets/sa-secret",
        ]
    );
}

#[tokio::test]
async fn with_the_apiserver_mocked_missing_secrets_and_accounts_are_skipped_like_the_kubelet_does()
{
    let (source, _seen) = mocked(vec![
        (
            "/api/v1/namespaces/shop/serviceaccounts/default".into(),
            404,
            not_found("serviceaccounts", "default"),
        ),
        (
            "/api/v1/namespaces/shop/secrets/gone".into(),
            404,
            not_found("secrets", "gone"),
        ),
    ]);
    let pull = PullRefs {
        image_pull_secrets: vec!["gone".into()],
        service_account: None,
    };
    let configs = source.docker_configs("shop", &pull).await.unwrap();
    assert!(configs.is_empty());
}

#[tokio::test]
async fn with_the_apiserver_mocked_a_forbidden_answer_is_an_error_naming_the_object() {
    let forbidden = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "secrets \"pull\" is forbidden: User \"system:serviceaccount:portcullis:portcullis\" cannot get resource \"secrets\" in API group \"\" in the namespace \"shop\"",
        "reason": "Forbidden", "details": {"name": "pull", "kind": "secrets"}, "code": 403});
    let (source, _seen) = mocked(vec![
        (
            "/api/v1/namespaces/shop/serviceaccounts/default".into(),
            200,
            service_account("shop", "default", &[]),
        ),
        (
            "/api/v1/namespaces/shop/secrets/pull".into(),
            403,
            forbidden,
        ),
    ]);
    let pull = PullRefs {
        image_pull_secrets: vec!["pull".into()],
        service_account: None,
    };
    let err = source.docker_configs("shop", &pull).await.err().unwrap();
    assert!(err.to_string().contains("secret shop/pull"), "{err}");
}

#[tokio::test]
async fn with_the_apiserver_mocked_other_secret_types_are_ignored() {
    let opaque = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "opaque", "namespace": "shop"}, "data": {"token": "c2VjcmV0"}});
    let (source, _seen) = mocked(vec![
        (
            "/api/v1/namespaces/shop/serviceaccounts/default".into(),
            200,
            service_account("shop", "default", &["opaque"]),
        ),
        ("/api/v1/namespaces/shop/secrets/opaque".into(), 200, opaque),
    ]);
    let configs = source
        .docker_configs("shop", &PullRefs::default())
        .await
        .unwrap();
    assert!(configs.is_empty());
}

#[test]
fn serve_refuses_pull_secrets_without_cluster_access() {
    let exit = common::serve()
        .config_yaml("evidence:\n  pullSecrets: true\n")
        .run();
    let (code, stderr) = (exit.code, exit.stderr);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("evidence.pullSecrets needs access to the Kubernetes API"),
        "{stderr}"
    );
}

#[test]
fn config_validate_refuses_a_key_that_is_not_a_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("team.pub");
    std::fs::write(
        &key,
        "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "imagePolicies:\n  - name: team\n    images: [\"ghcr.io/**\"]\n    signatures:\n      keys: [{{path: {}}}]\n",
            key.display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "validate", &path.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a supported public key"), "{stderr}");
    assert!(stderr.contains("team.pub"), "{stderr}");
}
