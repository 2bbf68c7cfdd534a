//! The real server on 127.0.0.1 over real TLS: a client that trusts only the webhook's CA (as
//! the API server trusts `caBundle`), certificate rotation while requests flow, the generated
//! CA, graceful drain, and configuration hot reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use portcullis::config::ImagePolicy;
use portcullis::engine::Engine;
use portcullis::evidence::{
    EvidenceFuture, EvidenceSource, GatherContext, ImageEvidence, SignatureEvidence,
};
use portcullis::reference::ImageRef;
use portcullis::server::{self, Running, ServeOptions, TlsSource};
use portcullis_test_support::tls::{self, TestCa};
use portcullis_test_support::{eventually, install_crypto_provider};
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

fn client_trusting(ca_pem: &str) -> reqwest::Client {
    tls::client_builder_trusting(&[ca_pem])
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// What the server calls on a configuration reload: a new engine on the same evidence source.
fn builder(evidence: Arc<dyn EvidenceSource>) -> portcullis::engine::EngineBuilder {
    Arc::new(move |loaded| Engine::new(loaded, evidence.clone()).map_err(Into::into))
}

fn listeners() -> (std::net::TcpListener, std::net::TcpListener) {
    (
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    )
}

fn options(tls: TlsSource, config_path: Option<PathBuf>) -> ServeOptions {
    ServeOptions {
        config_path,
        tls,
        shutdown_delay: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(10),
    }
}

async fn start(engine: Engine, tls: TlsSource, config_path: Option<PathBuf>) -> Running {
    install_crypto_provider();
    let (webhook, probe) = listeners();
    server::start(
        webhook,
        probe,
        engine,
        builder(Arc::new(portcullis::evidence::NoRegistry)),
        options(tls, config_path),
    )
    .await
    .unwrap()
}

async fn validate(client: &reqwest::Client, running: &Running, fixture: &str) -> reqwest::Response {
    client
        .post(format!(
            "https://127.0.0.1:{}/validate?timeout=10s",
            running.webhook_addr.port()
        ))
        .header("content-type", "application/json")
        .body(fixture_bytes(fixture))
        .send()
        .await
        .unwrap()
}

fn peer_certificate(response: &reqwest::Response) -> Option<Vec<u8>> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_only_the_ca_gets_answers_over_http1_keep_alive() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key, der) = ca.leaf();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    write(&cert_path, &cert);
    write(&key_path, &key);
    let running = start(
        engine(None),
        TlsSource::Files {
            cert: cert_path,
            key: key_path,
        },
        None,
    )
    .await;
    let client = client_trusting(&ca.pem());
    for (fixture, allowed) in [
        ("deployment-compliant", true),
        ("deployment-nginx-untagged", false),
        ("pod-ephemeral-container-update", false),
        ("pod-label-update-legacy", true),
    ]
    .iter()
    .cycle()
    .take(20)
    {
        let response = validate(&client, &running, fixture).await;
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        assert_eq!(peer_certificate(&response), Some(der.clone()));
        let review: Value = response.json().await.unwrap();
        assert_eq!(review["response"]["allowed"], *allowed, "{fixture}");
        assert_eq!(review["response"]["uid"], format!("fixture-{fixture}"));
    }
    // HTTP/2 is offered too (ALPN), for clients that prefer it.
    let h2 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = validate(&h2, &running, "deployment-compliant").await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    // A client that does not trust the CA cannot talk to the webhook at all.
    let other = client_trusting(&TestCa::new().pem());
    let refused = other
        .post(format!(
            "https://127.0.0.1:{}/validate",
            running.webhook_addr.port()
        ))
        .body("{}")
        .send()
        .await;
    assert!(refused.is_err(), "TLS must be verified against the CA");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_served_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key, old_der) = ca.leaf();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    write(&cert_path, &cert);
    write(&key_path, &key);
    let running = Arc::new(
        start(
            engine(None),
            TlsSource::Files {
                cert: cert_path.clone(),
                key: key_path.clone(),
            },
            None,
        )
        .await,
    );
    let ca_pem = ca.pem();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // Two flows: one keep-alive connection, and a new connection for every request.
    let mut flows = Vec::new();
    for fresh_connections in [false, true] {
        let (running, stop, sent, failures, ca_pem) = (
            running.clone(),
            stop.clone(),
            sent.clone(),
            failures.clone(),
            ca_pem.clone(),
        );
        flows.push(tokio::spawn(async move {
            let mut client = client_trusting(&ca_pem);
            while !stop.load(Ordering::SeqCst) {
                if fresh_connections {
                    client = client_trusting(&ca_pem);
                }
                let result = client
                    .post(format!(
                        "https://127.0.0.1:{}/validate",
                        running.webhook_addr.port()
                    ))
                    .body(fixture_bytes("deployment-compliant"))
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::SeqCst);
                match result {
                    Ok(response) if response.status() == 200 => {}
                    Ok(response) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", response.status())),
                    Err(err) => failures.lock().unwrap().push(format!("{err:?}")),
                }
            }
        }));
    }
    eventually("requests flowing", || {
        let sent = sent.clone();
        async move { sent.load(Ordering::SeqCst) >= 10 }
    })
    .await;

    // Rotate: overwrite the files in place, certificate first (the harshest order: for a
    // moment the pair does not match, and the old one must keep serving).
    let (new_cert, new_key, new_der) = ca.leaf();
    write(&cert_path, &new_cert);
    write(&key_path, &new_key);
    eventually("the new certificate is served", || {
        let (ca_pem, running, new_der) = (ca_pem.clone(), running.clone(), new_der.clone());
        async move {
            let response =
                validate(&client_trusting(&ca_pem), &running, "deployment-compliant").await;
            peer_certificate(&response) == Some(new_der)
        }
    })
    .await;
    let before = sent.load(Ordering::SeqCst);
    eventually("more requests after the rotation", || {
        let sent = sent.clone();
        async move { sent.load(Ordering::SeqCst) >= before + 10 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for flow in flows {
        flow.await.unwrap();
    }
    assert_ne!(old_der, new_der);
    assert_eq!(*failures.lock().unwrap(), Vec::<String>::new());
    let metrics = running.state.metrics.encode();
    assert!(
        metrics.contains(r#"portcullis_tls_reloads_total{result="applied"}"#),
        "{metrics}"
    );
    Arc::into_inner(running).unwrap().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_certificate_files_a_ca_is_generated_and_written_out() {
    let dir = tempfile::tempdir().unwrap();
    let ca_out = dir.path().join("ca.pem");
    let running = start(
        engine(None),
        TlsSource::Generated {
            dns_names: vec!["portcullis.portcullis.svc".into()],
            ca_out: ca_out.clone(),
        },
        None,
    )
    .await;
    let ca_pem = std::fs::read_to_string(&ca_out).unwrap();
    let client = client_trusting(&ca_pem);
    let response = validate(&client, &running, "deployment-compliant").await;
    assert_eq!(response.status(), 200);
    // The serving certificate is a leaf (not the CA itself) naming every requested DNS name.
    let der = peer_certificate(&response).unwrap();
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    assert_ne!(der, ca_der.to_vec());
    let text = String::from_utf8_lossy(&der);
    assert!(text.contains("portcullis.portcullis.svc") && text.contains("localhost"));
    // Its expiry is exported: a year from now.
    let metrics = running.state.metrics.encode();
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_certificate_not_after_seconds "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    let in_a_year = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    assert!(
        (expiry - in_a_year.unix_timestamp()).abs() < 3600,
        "expiry {expiry}"
    );
    running.shutdown().await.unwrap();
}

/// Evidence that takes a while, to hold a request in flight.
#[derive(Debug)]
struct Slow;

impl EvidenceSource for Slow {
    fn gather<'a>(
        &'a self,
        _: &'a ImageRef,
        _: &'a [&'a ImagePolicy],
        _: &'a GatherContext,
    ) -> EvidenceFuture<'a> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            Ok(ImageEvidence::signatures_only(
                None,
                SignatureEvidence::Verified {
                    signers: vec!["test".into()],
                },
            ))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_marks_unready_and_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let config = "imagePolicies:\n  - name: slow\n    images: [\"registry.k8s.io/**\"]\n    \
                  signatures: {keys: [{pem: \"-----BEGIN PUBLIC KEY-----\"}]}\n";
    let (webhook, probe) = listeners();
    install_crypto_provider();
    let running = server::start(
        webhook,
        probe,
        engine_with(Some(config), Arc::new(Slow)),
        builder(Arc::new(Slow)),
        options(
            TlsSource::Generated {
                dns_names: vec![],
                ca_out: dir.path().join("ca.pem"),
            },
            None,
        ),
    )
    .await
    .unwrap();
    let client = client_trusting(&std::fs::read_to_string(dir.path().join("ca.pem")).unwrap());
    let url = format!("https://127.0.0.1:{}/validate", running.webhook_addr.port());
    let ready_url = format!("http://{}/readyz", running.probe_addr);
    let plain = reqwest::Client::new();
    assert_eq!(plain.get(&ready_url).send().await.unwrap().status(), 200);
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .post(url)
                .body(fixture_bytes("deployment-compliant"))
                .send()
                .await
        }
    });
    let state = running.state.clone();
    eventually("the request is in flight", || {
        let state = state.clone();
        async move { state.metrics.in_flight.get() == 1 }
    })
    .await;
    let shutdown = tokio::spawn(running.shutdown());
    eventually("readyz reports 503 while draining", || {
        let (plain, ready_url) = (plain.clone(), ready_url.clone());
        async move {
            plain
                .get(&ready_url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 503)
        }
    })
    .await;
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let review: Value = response.json().await.unwrap();
    assert_eq!(review["response"]["allowed"], true);
    shutdown.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_changes_are_applied_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    write(&config_path, "mode: enforce\n");
    let loaded = portcullis::config::LoadedConfig::from_file(&config_path).unwrap();
    let engine = Engine::new(loaded, Arc::new(portcullis::evidence::NoRegistry)).unwrap();
    let running = start(
        engine,
        TlsSource::Generated {
            dns_names: vec![],
            ca_out: dir.path().join("ca.pem"),
        },
        Some(config_path.clone()),
    )
    .await;
    let client = client_trusting(&std::fs::read_to_string(dir.path().join("ca.pem")).unwrap());
    let allowed = |client: reqwest::Client, port: u16| async move {
        let review: Value = client
            .post(format!("https://127.0.0.1:{port}/validate"))
            .body(fixture_bytes("deployment-nginx-untagged"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        review["response"]["allowed"] == true
    };
    let port = running.webhook_addr.port();
    assert!(!allowed(client.clone(), port).await);
    write(&config_path, "mode: warn\n");
    eventually("the warn configuration is in force", || {
        allowed(client.clone(), port)
    })
    .await;
    let good_identity = running.state.engine().identity().to_owned();

    write(&config_path, "mode: sometimes\n");
    let state = running.state.clone();
    eventually("the broken configuration is refused", || {
        let state = state.clone();
        async move {
            state
                .metrics
                .encode()
                .contains(r#"portcullis_config_reloads_total{result="rejected"} 1"#)
        }
    })
    .await;
    assert_eq!(running.state.engine().identity(), good_identity);
    assert!(
        allowed(client.clone(), port).await,
        "the last good configuration stays"
    );
    running.shutdown().await.unwrap();
}

/// Evidence with a digest per repository: images from registry.k8s.io are signed, others not.
#[derive(Debug)]
struct SignedByRegistry;

impl EvidenceSource for SignedByRegistry {
    fn gather<'a>(
        &'a self,
        image: &'a ImageRef,
        _: &'a [&'a ImagePolicy],
        _: &'a GatherContext,
    ) -> EvidenceFuture<'a> {
        let trusted = image.registry() == "registry.k8s.io";
        let digest = format!(
            "sha256:{}",
            if trusted {
                "a".repeat(64)
            } else {
                "b".repeat(64)
            }
        );
        Box::pin(async move {
            let signatures = if trusted {
                SignatureEvidence::Verified {
                    signers: vec!["key release".into()],
                }
            } else {
                SignatureEvidence::Unverified {
                    reason: "no signature".into(),
                }
            };
            Ok(ImageEvidence::signatures_only(Some(digest), signatures))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_lists_judged_digests_and_filters_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = "inventory: {enabled: true}\nimagePolicies:\n  - name: signed\n    images: [\"**\"]\n    \
                  signatures: {keys: [{pem: \"-----BEGIN PUBLIC KEY-----\"}]}\n";
    let (webhook, probe) = listeners();
    install_crypto_provider();
    let running = server::start(
        webhook,
        probe,
        engine_with(Some(config), Arc::new(SignedByRegistry)),
        builder(Arc::new(SignedByRegistry)),
        options(
            TlsSource::Generated {
                dns_names: vec![],
                ca_out: dir.path().join("ca.pem"),
            },
            None,
        ),
    )
    .await
    .unwrap();
    let client = client_trusting(&std::fs::read_to_string(dir.path().join("ca.pem")).unwrap());
    for fixture in ["deployment-compliant", "deployment-nginx-untagged"] {
        assert_eq!(validate(&client, &running, fixture).await.status(), 200);
    }
    let plain = reqwest::Client::new();
    let inventory = |query: &'static str| {
        let plain = plain.clone();
        let url = format!("http://{}/inventory{query}", running.probe_addr);
        async move {
            let response = plain.get(url).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let digests = |answer: &Value| -> Vec<String> {
        answer["digests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    let signed = format!("sha256:{}", "a".repeat(64));
    let unsigned = format!("sha256:{}", "b".repeat(64));

    let (status, all) = inventory("").await;
    assert_eq!(status, 200);
    assert_eq!(all["complete"], false);
    assert!(all["replica"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(digests(&all), [unsigned.clone(), signed.clone()], "{all}");
    let pause = &all["digests"][1];
    assert_eq!(pause["references"][0], "registry.k8s.io/pause:3.10");
    assert_eq!(pause["signatureState"], "verified");
    assert_eq!(pause["verdict"]["outcome"], "allowed");
    assert!(
        pause["workloads"][0]
            .as_str()
            .unwrap()
            .starts_with("Deployment "),
        "{pause}"
    );

    let (_, denied) = inventory("?verdict=denied").await;
    assert_eq!(digests(&denied), [unsigned], "{denied}");
    let (_, by_image) = inventory("?image=pause&verdict=allowed").await;
    assert_eq!(digests(&by_image), [signed], "{by_image}");

    let (status, error) = inventory("?verdict=maybe").await;
    assert_eq!(status, 400);
    assert!(
        error["error"].as_str().unwrap().contains("maybe"),
        "{error}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_inventory_is_off_unless_the_configuration_turns_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = "imagePolicies:\n  - name: signed\n    images: [\"**\"]\n    \
                  signatures: {keys: [{pem: \"-----BEGIN PUBLIC KEY-----\"}]}\n";
    let (webhook, probe) = listeners();
    install_crypto_provider();
    let running = server::start(
        webhook,
        probe,
        engine_with(Some(config), Arc::new(SignedByRegistry)),
        builder(Arc::new(SignedByRegistry)),
        options(
            TlsSource::Generated {
                dns_names: vec![],
                ca_out: dir.path().join("ca.pem"),
            },
            None,
        ),
    )
    .await
    .unwrap();
    let client = client_trusting(&std::fs::read_to_string(dir.path().join("ca.pem")).unwrap());
    assert_eq!(
        validate(&client, &running, "deployment-compliant")
            .await
            .status(),
        200
    );
    let response = reqwest::Client::new()
        .get(format!("http://{}/inventory", running.probe_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("inventory.enabled"),
        "{error}"
    );
    assert!(
        running.state.inventory().is_empty(),
        "nothing recorded while off"
    );
    running.shutdown().await.unwrap();
}

/// A Pod CREATE of ReplicaSet `web-5b` (or a bare pod when `owner` is `None`) running `image`.
fn pod_create(name: &str, owner: Option<&str>, image: &str, dry_run: bool) -> Value {
    let mut metadata = serde_json::json!({"generateName": "web-5b-", "namespace": "shop",
                                          "labels": {"app": "web"}});
    if let Some(owner) = owner {
        metadata["ownerReferences"] = serde_json::json!([{"apiVersion": "apps/v1",
            "kind": "ReplicaSet", "name": owner, "uid": "rs-uid", "controller": true,
            "blockOwnerDeletion": true}]);
    } else {
        metadata["name"] = name.into();
    }
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("uid-{name}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": if owner.is_some() { "" } else { name }, "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                "spec": {"containers": [{"name": "app", "image": image,
                    "securityContext": {"allowPrivilegeEscalation": false}}],
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 10001}}},
            "oldObject": null, "dryRun": dry_run,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_pod_s_resolved_digest_is_remembered_under_its_controller_and_a_denied_one_is_not()
 {
    let dir = tempfile::tempdir().unwrap();
    let config = "rejudge: {interval: 10m}\nimagePolicies:\n  - name: signed\n    images: [\"**\"]\n    \
                  signatures: {keys: [{pem: \"-----BEGIN PUBLIC KEY-----\"}]}\n";
    let (webhook, probe) = listeners();
    install_crypto_provider();
    let running = server::start(
        webhook,
        probe,
        engine_with(Some(config), Arc::new(SignedByRegistry)),
        builder(Arc::new(SignedByRegistry)),
        options(
            TlsSource::Generated {
                dns_names: vec![],
                ca_out: dir.path().join("ca.pem"),
            },
            None,
        ),
    )
    .await
    .unwrap();
    let client = client_trusting(&std::fs::read_to_string(dir.path().join("ca.pem")).unwrap());
    let url = format!(
        "https://127.0.0.1:{}/validate?timeout=10s",
        running.webhook_addr.port()
    );
    for (review, allowed) in [
        (
            pod_create("a", Some("web-5b"), "registry.k8s.io/pause:3.10", false),
            true,
        ),
        (
            pod_create("b", Some("api-7c"), "docker.io/team/unsigned:1", false),
            false,
        ),
        (
            pod_create("c", Some("dry-1"), "registry.k8s.io/pause:3.10", true),
            true,
        ),
        (
            pod_create("lonely", None, "registry.k8s.io/pause:3.10", false),
            true,
        ),
    ] {
        let answer: Value = client
            .post(&url)
            .json(&review)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["response"]["allowed"], allowed, "{answer}");
    }
    let site = |owner: &str| portcullis::admitted::AdmittedSite {
        namespace: "shop".into(),
        owner: owner.into(),
        kind: portcullis::workload::ContainerKind::Container,
        container: "app".into(),
    };
    let admitted = running.state.admitted_digests();
    let signed = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        admitted.get(&site("ReplicaSet/web-5b")),
        Some(signed.clone())
    );
    assert_eq!(admitted.get(&site("Pod/lonely")), Some(signed));
    assert_eq!(admitted.get(&site("ReplicaSet/api-7c")), None, "denied");
    assert_eq!(admitted.get(&site("ReplicaSet/dry-1")), None, "a dry run");
    running.shutdown().await.unwrap();
}
