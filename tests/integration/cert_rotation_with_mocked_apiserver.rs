//! Run-time rotation of the self-managed webhook certificate. No kube-apiserver can run here,
//! so each replica's kube client talks to kube's mock service (tower-test), answered by an
//! in-memory object store that keeps the API server's rules rotation relies on (404 `Status`
//! for a missing object, 409 Conflict for a stale `resourceVersion`) and logs every write. The
//! certificate about to expire is made by `openssl` (as Helm's genCA would, not by the library
//! that rotates it); the rotated one is checked with rustls' real WebPKI verifier.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kube::client::Body;
use portcullis::cert_rotation::{CertRotator, RotationSettings, Round};
use portcullis::clock::FixedClock;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use time::OffsetDateTime;

use portcullis_test_support::mock_apiserver::{
    self, json_body, json_response as respond, status_response as status,
};

const SECRET: &str = "/api/v1/namespaces/portcullis/secrets/portcullis-tls";
const WEBHOOK: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/portcullis";
const MUTATING: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/portcullis";
const DNS: &str = "portcullis.portcullis.svc";
const DNS_NAMES: &str = "portcullis,portcullis.portcullis,portcullis.portcullis.svc,portcullis.portcullis.svc.cluster.local";

/// The fake API server's objects by path, their resourceVersions, and a log of writes.
#[derive(Default)]
struct Store {
    objects: HashMap<String, Value>,
    resource_version: u64,
    writes: Vec<String>,
}

type Shared = Arc<Mutex<Store>>;

fn put(store: &mut Store, path: &str, mut object: Value) -> Value {
    store.resource_version += 1;
    object["metadata"]["resourceVersion"] = store.resource_version.to_string().into();
    store.objects.insert(path.to_owned(), object.clone());
    object
}

async fn answer(request: http::Request<Body>, shared: Shared) -> http::Response<Body> {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let object = json_body(request).await;
    let mut store = shared.lock().unwrap();
    match method.as_str() {
        "GET" => match store.objects.get(&path) {
            Some(object) => respond(200, object),
            None => status(404, "NotFound", &format!("{path} not found")),
        },
        "PUT" => {
            let current = store
                .objects
                .get(&path)
                .map(|o| o["metadata"]["resourceVersion"].clone());
            if current != Some(object["metadata"]["resourceVersion"].clone()) {
                return status(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version",
                );
            }
            store.writes.push(path.clone());
            let stored = put(&mut store, &path, object);
            respond(200, &stored)
        }
        _ => status(405, "MethodNotAllowed", &path),
    }
}

/// A certificate chain made by openssl: a CA (valid 400 days) and a serving certificate for the
/// chart's DNS names that expires in `leaf_days`.
fn openssl_pair(dir: &Path, leaf_days: u32) -> (String, String, String) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "400",
            "-subj",
            "/CN=portcullis-ca",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            &format!("/CN={DNS}"),
        ],
    ]
    .concat());
    let sans: Vec<String> = DNS_NAMES.split(',').map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
            sans.join(",")
        ),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.crt",
        "-days",
        &leaf_days.to_string(),
        "-extfile",
        "ext.cnf",
    ]);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    (read("ca.crt"), read("tls.crt"), read("tls.key"))
}

struct Cluster {
    store: Shared,
    servers: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    old_ca: String,
    old_cert: String,
}

impl Cluster {
    /// The chart's objects as installed: the TLS Secret and the webhook configuration (two
    /// webhooks, as the chart renders for pods and workloads) trusting the openssl CA.
    fn installed(leaf_days: u32) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = openssl_pair(dir.path(), leaf_days);
        let mut store = Store::default();
        put(
            &mut store,
            SECRET,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": "portcullis-tls", "namespace": "portcullis",
                    "annotations": {"portcullis.io/dns-names": DNS_NAMES,
                                    "portcullis.io/not-after": "2026-12-20T00:00:00Z"}},
                "data": {"tls.crt": BASE64.encode(&cert), "tls.key": BASE64.encode(&key),
                         "ca.crt": BASE64.encode(&ca)}
            }),
        );
        let webhook = |name: &str| {
            json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "NoneOnDryRun",
                   "clientConfig": {"service": {"name": "portcullis", "namespace": "portcullis",
                                                "path": "/validate", "port": 443},
                                    "caBundle": BASE64.encode(&ca)}})
        };
        put(
            &mut store,
            WEBHOOK,
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "portcullis"},
                "webhooks": [webhook("pods.portcullis.io"), webhook("workloads.portcullis.io")]
            }),
        );
        store.writes.clear();
        Self {
            store: Arc::new(Mutex::new(store)),
            servers: Vec::new(),
            _dir: dir,
            old_ca: ca,
            old_cert: cert,
        }
    }

    fn rotator(&mut self, now: OffsetDateTime) -> CertRotator {
        self.rotator_with(now, None)
    }

    /// A rotator that also keeps the digest-pinning MutatingWebhookConfiguration `mutating` in
    /// step.
    fn rotator_with(&mut self, now: OffsetDateTime, mutating: Option<&str>) -> CertRotator {
        let store = self.store.clone();
        let (client, server) =
            mock_apiserver::client("portcullis", move |request| answer(request, store.clone()));
        self.servers.push(server);
        let settings = RotationSettings {
            secret_namespace: "portcullis".into(),
            secret_name: "portcullis-tls".into(),
            webhook_configuration: "portcullis".into(),
            mutating_webhook_configuration: mutating.map(str::to_owned),
            dns_names: Vec::new(),
            validity: Duration::from_secs(365 * 86_400),
            renew_before: Duration::from_secs(30 * 86_400),
        };
        CertRotator::new(client, settings, Arc::new(FixedClock(now)))
    }

    fn object(&self, path: &str) -> Value {
        self.store.lock().unwrap().objects[path].clone()
    }

    fn secret_field(&self, key: &str) -> String {
        let encoded = self.object(SECRET)["data"][key]
            .as_str()
            .unwrap()
            .to_owned();
        String::from_utf8(BASE64.decode(encoded).unwrap()).unwrap()
    }

    /// Every webhook's caBundle (they must all be equal).
    fn ca_bundle(&self) -> String {
        let webhook = self.object(WEBHOOK);
        let bundles: Vec<String> = webhook["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let encoded = w["clientConfig"]["caBundle"].as_str().unwrap();
                String::from_utf8(BASE64.decode(encoded).unwrap()).unwrap()
            })
            .collect();
        assert!(bundles.windows(2).all(|w| w[0] == w[1]), "{bundles:?}");
        bundles[0].clone()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// Verifies `cert` for the webhook's Service name against `bundle` as a TLS client would.
fn trusted(bundle: &str, cert: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let leaf = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    verifier
        .verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(DNS).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[tokio::test]
async fn a_certificate_far_from_expiry_is_left_alone() {
    let mut cluster = Cluster::installed(200);
    let rotator = cluster.rotator(now());
    let round = rotator.round().await.unwrap();
    assert!(matches!(round, Round::Fresh { .. }), "{round:?}");
    assert!(cluster.store.lock().unwrap().writes.is_empty());
}

#[tokio::test]
async fn a_certificate_near_expiry_is_replaced_and_trusted_before_it_is_served() {
    let mut cluster = Cluster::installed(20);
    assert!(trusted(&cluster.ca_bundle(), &cluster.old_cert).is_ok());
    let rotator = cluster.rotator(now());
    let round = rotator.round().await.unwrap();
    let Round::Rotated { not_after } = round else {
        panic!("expected a rotation: {round:?}");
    };
    assert!(not_after > now() + time::Duration::days(360), "{not_after}");

    // The webhook configuration was written first, then the Secret.
    let writes = cluster.store.lock().unwrap().writes.clone();
    assert_eq!(writes, [WEBHOOK, SECRET]);

    // The API server trusts the new certificate, and the old one that pods still serve until
    // the kubelet refreshes their Secret volume.
    let bundle = cluster.ca_bundle();
    let new_cert = cluster.secret_field("tls.crt");
    assert_ne!(new_cert, cluster.old_cert);
    trusted(&bundle, &new_cert).unwrap();
    trusted(&bundle, &cluster.old_cert).unwrap();
    assert!(bundle.contains(cluster.old_ca.trim()));
    // A client trusting only the old CA would not trust the new certificate: it is a new CA.
    assert!(trusted(&cluster.old_ca, &new_cert).is_err());
    assert_eq!(cluster.secret_field("ca.crt"), bundle);
    // The new key belongs to the new certificate (rustls refuses a mismatched pair).
    portcullis::tls::server_config(
        new_cert.as_bytes(),
        cluster.secret_field("tls.key").as_bytes(),
    )
    .unwrap();

    // The annotations the chart's `lookup` reads on upgrade are current.
    let annotations = cluster.object(SECRET)["metadata"]["annotations"].clone();
    assert_eq!(annotations["portcullis.io/dns-names"], DNS_NAMES);
    let annotated = annotations["portcullis.io/not-after"].as_str().unwrap();
    assert_eq!(
        portcullis::timeutil::parse_instant(annotated).unwrap(),
        not_after.replace_nanosecond(0).unwrap()
    );

    // The next look finds the new certificate fresh.
    assert!(matches!(
        rotator.round().await.unwrap(),
        Round::Fresh { .. }
    ));
}

#[tokio::test]
async fn with_digest_pinning_the_mutating_webhook_trusts_the_new_certificate_before_it_is_served() {
    let mut cluster = Cluster::installed(20);
    let old_ca = BASE64.encode(&cluster.old_ca);
    {
        let mut store = cluster.store.lock().unwrap();
        put(
            &mut store,
            MUTATING,
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "portcullis"},
                "webhooks": [{"name": "pin.portcullis.io", "admissionReviewVersions": ["v1"],
                              "sideEffects": "None", "reinvocationPolicy": "IfNeeded",
                              "clientConfig": {"service": {"name": "portcullis", "namespace": "portcullis",
                                                           "path": "/mutate", "port": 443},
                                               "caBundle": old_ca}}]
            }),
        );
        store.writes.clear();
    }
    let rotator = cluster.rotator_with(now(), Some("portcullis"));
    let round = rotator.round().await.unwrap();
    assert!(matches!(round, Round::Rotated { .. }), "{round:?}");
    // Both webhook configurations first, then the Secret.
    let writes = cluster.store.lock().unwrap().writes.clone();
    assert_eq!(writes, [WEBHOOK, MUTATING, SECRET]);
    let encoded = cluster.object(MUTATING)["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap()
        .to_owned();
    let mutating_bundle = String::from_utf8(BASE64.decode(encoded).unwrap()).unwrap();
    assert_eq!(mutating_bundle, cluster.ca_bundle());
    trusted(&mutating_bundle, &cluster.secret_field("tls.crt")).unwrap();
    trusted(&mutating_bundle, &cluster.old_cert).unwrap();

    // Configured but absent: an error naming it, and nothing is written.
    let mut bare = Cluster::installed(20);
    let error = bare
        .rotator_with(now(), Some("portcullis"))
        .round()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("MutatingWebhookConfiguration portcullis"),
        "{error}"
    );
    assert!(bare.store.lock().unwrap().writes.is_empty());
}

#[tokio::test]
async fn replicas_rotating_at_once_leave_a_certificate_the_api_server_trusts() {
    let mut cluster = Cluster::installed(10);
    let a = cluster.rotator(now());
    let b = cluster.rotator(now());
    let c = cluster.rotator(now());
    let (a, b, c) = tokio::join!(a.round(), b.round(), c.round());
    let rounds = [a.unwrap(), b.unwrap(), c.unwrap()];
    let rotated = rounds
        .iter()
        .filter(|r| matches!(r, Round::Rotated { .. }))
        .count();
    assert_eq!(rotated, 1, "{rounds:?}");
    trusted(&cluster.ca_bundle(), &cluster.secret_field("tls.crt")).unwrap();
    trusted(&cluster.ca_bundle(), &cluster.old_cert).unwrap();
}

#[tokio::test]
async fn a_missing_secret_is_an_error_that_names_it() {
    let mut cluster = Cluster::installed(10);
    cluster.store.lock().unwrap().objects.remove(SECRET);
    let err = cluster
        .rotator(now())
        .round()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Secret portcullis/portcullis-tls does not exist")
            && err.contains("selfManaged"),
        "{err}"
    );
}

#[test]
fn serve_refuses_rotation_arguments_it_cannot_honour_before_binding() {
    let exit = crate::common::serve()
        .config_yaml("mode: enforce\n")
        .args([
            "--cert-secret",
            "portcullis-tls",
            "--webhook-configuration",
            "portcullis",
        ])
        .run();
    let (code, stderr) = (exit.code, exit.stderr);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("expected NAMESPACE/NAME"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = openssl_pair(dir.path(), 30);
    std::fs::write(dir.path().join("s.crt"), cert).unwrap();
    std::fs::write(dir.path().join("s.key"), key).unwrap();
    let exit = crate::common::serve()
        .config_yaml("mode: enforce\n")
        .tls_files(&dir.path().join("s.crt"), &dir.path().join("s.key"), &ca)
        .args([
            "--cert-secret",
            "portcullis/portcullis-tls",
            "--webhook-configuration",
            "portcullis",
        ])
        .run();
    let (code, stderr) = (exit.code, exit.stderr);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("certificate rotation needs access to the Kubernetes API"),
        "{stderr}"
    );
}
