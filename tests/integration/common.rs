//! Shared helpers for the integration tests: fixtures, engines, and in-process requests.
#![allow(dead_code)] // reason: each test crate uses a different subset of these helpers

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

/// Runs `portcullis serve` on `config_yaml` where no cluster can be reached (no kubeconfig, no
/// in-cluster service account), on ephemeral loopback ports. Returns (exit code, stderr).
pub fn serve_without_cluster(config_yaml: &str) -> (Option<i32>, String) {
    serve_without_cluster_with(config_yaml, &[])
}

/// As [`serve_without_cluster`], with more `serve` arguments.
pub fn serve_without_cluster_with(config_yaml: &str, extra: &[&str]) -> (Option<i32>, String) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(err) => unreachable!("temp dir: {err}"),
    };
    let path = dir.path().join("config.yaml");
    if let Err(err) = std::fs::write(&path, config_yaml) {
        unreachable!("write config: {err}");
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", &path.display().to_string()])
        .args(["--listen", "127.0.0.1:0", "--probe-listen", "127.0.0.1:0"])
        .args(extra)
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", dir.path())
        .output();
    match output {
        Ok(output) => (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ),
        Err(err) => unreachable!("run portcullis: {err}"),
    }
}

/// Polls `check` every 50 ms for at most 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    unreachable!("timed out waiting for: {what}");
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

/// A real `portcullis serve` child on 127.0.0.1 (ephemeral ports, generated CA written to
/// `ca.pem` in its directory, no cluster reachable), killed when dropped. Its stderr (JSON
/// logs) keeps being drained so it never blocks on logging.
pub struct ServeChild {
    pub child: std::process::Child,
    pub webhook_addr: std::net::SocketAddr,
    pub probe_addr: std::net::SocketAddr,
    pub ca_pem: String,
}

impl ServeChild {
    /// Starts `portcullis serve --config <config>` plus `extra` arguments; `dir` receives the
    /// CA bundle.
    pub fn start(config: &std::path::Path, dir: &std::path::Path, extra: &[&str]) -> Self {
        let ca_out = dir.join("ca.pem");
        let mut args: Vec<std::ffi::OsString> = vec!["--ca-out".into(), ca_out.clone().into()];
        args.extend(extra.iter().map(Into::into));
        Self::spawn(config, dir, &args, None)
    }

    /// As [`start`](Self::start), serving the certificate files `cert` and `key` (watched and
    /// reloaded by the server), trusted through `ca_pem`.
    pub fn start_with_files(
        config: &std::path::Path,
        dir: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
        ca_pem: &str,
    ) -> Self {
        let args: Vec<std::ffi::OsString> = vec![
            "--tls-cert".into(),
            cert.into(),
            "--tls-key".into(),
            key.into(),
        ];
        Self::spawn(config, dir, &args, Some(ca_pem.to_owned()))
    }

    fn spawn(
        config: &std::path::Path,
        dir: &std::path::Path,
        extra: &[std::ffi::OsString],
        ca_pem: Option<String>,
    ) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--probe-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(extra)
            .env_remove("PORTCULLIS_CONFIG")
            .env_remove("PORTCULLIS_LOG")
            .env("KUBECONFIG", dir.join("no-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut addrs = None;
        let mut said = Vec::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            said.push(line.clone());
            let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if event["message"] == "portcullis is serving" {
                let addr = |key: &str| event[key].as_str().and_then(|a| a.parse().ok());
                addrs = addr("webhook_addr").zip(addr("probe_addr"));
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let Some((webhook_addr, probe_addr)) = addrs else {
            let _ = child.kill();
            unreachable!(
                "portcullis serve did not announce its addresses: {}",
                said.join("\n")
            );
        };
        let ca_pem = ca_pem.unwrap_or_else(|| std::fs::read_to_string(dir.join("ca.pem")).unwrap());
        Self {
            child,
            webhook_addr,
            probe_addr,
            ca_pem,
        }
    }

    /// `https://127.0.0.1:<port>/validate?timeout=<timeout>`.
    pub fn validate_url(&self, timeout: &str) -> String {
        format!(
            "https://127.0.0.1:{}/validate?timeout={timeout}",
            self.webhook_addr.port()
        )
    }

    /// An HTTP/1.1 client trusting only this server's CA (as the API server trusts
    /// `caBundle`).
    pub fn client(&self) -> reqwest::Client {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .http1_only()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// Resident set size of the child in kB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The probe port's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.probe_addr);
        match reqwest::get(url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Peak resident set size of the child in kB (`VmHWM`).
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
