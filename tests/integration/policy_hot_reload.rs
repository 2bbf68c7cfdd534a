//! The real server over HTTPS with Rego policies: a changed policy file takes effect on a
//! following review, a broken one is refused while the last good set keeps deciding, the
//! bundle identity follows in `/metrics` and `auditAnnotations`, and a runaway policy is
//! stopped by its limit while the server keeps answering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::create_review;
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::evidence::NoRegistry;
use portcullis::server::{self, Running, ServeOptions, TlsSource};
use portcullis_test_support::eventually;
use serde_json::{Value, json};

const QUIET: &str = "trustedRegistries: []\nrules:\n  noLatestTag: {enabled: false}\n  runAsNonRoot: {enabled: false}\n  privileged: {enabled: false}\n  privilegeEscalation: {enabled: false}\n  hostNamespaces: {enabled: false}\n  hostPorts: {enabled: false}\n";

fn policy(forbidden: &str) -> String {
    format!(
        "package names\nimport rego.v1\n\ndeny contains msg if {{\n    input.review.object.metadata.name == {forbidden:?}\n    msg := \"the name {forbidden} is taken\"\n}}\n\nviolation contains {{\"msg\": \"runaway\"}} if {{\n    input.review.object.metadata.name == \"spin\"\n    count([x | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); x := i * j]) > 0\n}}\n"
    )
}

fn write(path: &Path, text: &str) {
    // Write then rename, as editors and ConfigMap updates do: never a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(config_path: &Path, ca_out: &Path) -> Running {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let loaded = LoadedConfig::from_file(config_path).unwrap();
    let engine = Engine::new(loaded, Arc::new(NoRegistry)).unwrap();
    let build: portcullis::engine::EngineBuilder =
        Arc::new(|loaded| Engine::new(loaded, Arc::new(NoRegistry)).map_err(Into::into));
    server::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        engine,
        build,
        ServeOptions {
            config_path: Some(config_path.to_owned()),
            tls: TlsSource::Generated {
                dns_names: vec![],
                ca_out: ca_out.to_owned(),
            },
            shutdown_delay: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap()
}

fn client(ca_out: &Path) -> reqwest::Client {
    let ca = std::fs::read(ca_out).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn review(client: &reqwest::Client, running: &Running, name: &str) -> Value {
    let object = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    });
    client
        .post(format!(
            "https://127.0.0.1:{}/validate?timeout=10s",
            running.webhook_addr.port()
        ))
        .header("content-type", "application/json")
        .body(create_review("", "Pod", "pods", object))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metrics(running: &Running) -> String {
    reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        running.probe_addr.port()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_policies_apply_broken_ones_are_refused_and_runaways_are_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let policy_file = policies.join("names.rego");
    write(&policy_file, &policy("alice"));
    let config_path = dir.path().join("config.yaml");
    write(
        &config_path,
        &format!(
            "{QUIET}policies:\n  rego:\n    timeoutMillis: 200\n    paths: [{:?}]\n",
            policies.display().to_string()
        ),
    );
    let ca_out = dir.path().join("ca.pem");
    let running = start(&config_path, &ca_out).await;
    let client = client(&ca_out);

    let first = review(&client, &running, "alice").await;
    assert_eq!(first["response"]["allowed"], false);
    assert!(
        first["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("rule names: the name alice is taken")
    );
    let first_identity = first["response"]["auditAnnotations"]["config-identity"].clone();
    assert!(metrics(&running).await.contains(&format!(
        "portcullis_config_identity{{identity={first_identity}}} 1"
    )));
    assert!(
        metrics(&running)
            .await
            .contains("portcullis_rego_policies 1")
    );

    // A runaway policy is stopped by its limit; the server keeps answering.
    let runaway = review(&client, &running, "spin").await;
    assert_eq!(runaway["response"]["allowed"], false);
    assert_eq!(
        runaway["response"]["auditAnnotations"]["verdict"],
        "error-denied"
    );
    assert!(
        runaway["response"]["auditAnnotations"]["error"]
            .as_str()
            .unwrap()
            .contains("execution exceeded time limit")
    );
    assert_eq!(
        review(&client, &running, "carol").await["response"]["allowed"],
        true
    );

    // A good change applies to a following review.
    write(&policy_file, &policy("bob"));
    let (c, r) = (client.clone(), &running);
    eventually("the new policy decides", || {
        let c = c.clone();
        async move { review(&c, r, "bob").await["response"]["allowed"] == false }
    })
    .await;
    let second = review(&client, &running, "alice").await;
    assert_eq!(second["response"]["allowed"], true);
    let second_identity = second["response"]["auditAnnotations"]["config-identity"].clone();
    assert_ne!(second_identity, first_identity);

    // A broken change is refused; the last good policies stay in force.
    write(&policy_file, "package names\n\ndeny contains msg if {\n");
    eventually("the broken policy is refused", || async {
        metrics(&running)
            .await
            .contains(r#"portcullis_config_reloads_total{result="rejected"}"#)
    })
    .await;
    let still = review(&client, &running, "bob").await;
    assert_eq!(still["response"]["allowed"], false);
    assert_eq!(
        still["response"]["auditAnnotations"]["config-identity"],
        second_identity
    );

    // Once repaired, a new file in the folder is picked up too.
    write(&policy_file, &policy("bob"));
    write(
        &policies.join("more.rego"),
        &policy("dave").replace("package names", "package more"),
    );
    eventually("the added policy decides", || {
        let c = c.clone();
        async move { review(&c, r, "dave").await["response"]["allowed"] == false }
    })
    .await;
    running.shutdown().await.unwrap();
}
