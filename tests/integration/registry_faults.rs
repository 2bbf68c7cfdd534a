//! Registry failures: a small fake registry on 127.0.0.1 (axum) that answers 5xx, answers
//! late, or recovers after a few failures, to check retries, deadlines and the `onError`
//! outcome. (The happy paths run against the real registry in `registry_on_loopback.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use portcullis::config::LoadedConfig;
use portcullis::credentials::{Credential, DockerConfig, PullSecretFuture, PullSecretSource};
use portcullis::evidence::{EvidenceSource, GatherContext, Priority};
use portcullis::reference::ImageRef;
use portcullis::registry::{Call, RegistryClient, RegistryError};
use portcullis::registry_evidence::RegistryEvidence;
use portcullis::workload::PullRefs;
use tokio::time::Instant;

const CONFIG: &str = "{\"config\":{\"User\":\"1000\"}}";

/// The one image the fake serves: a manifest naming a config blob.
fn manifest() -> (String, String, String) {
    use sha2::Digest as _;
    let config_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(CONFIG)));
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_digest}\",\"size\":{}}},\"layers\":[]}}",
        CONFIG.len()
    );
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&manifest)));
    (manifest, digest, config_digest)
}

#[derive(Clone)]
struct Fake {
    /// Manifest requests seen.
    hits: Arc<AtomicUsize>,
    /// How many manifest requests fail with 503 before answering.
    failures: usize,
    /// Whether manifest requests hang instead.
    hang: bool,
    /// Credentials the fake insists on (basic auth header value), if any.
    authorization: Option<String>,
    /// Manifest requests in flight now, and the most seen at once.
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    /// Token auth as Docker Hub or GHCR do it: a `Bearer` challenge naming a token endpoint
    /// (on the fake itself) that trades basic credentials for a token.
    bearer: bool,
    /// `GET /v2/` requests seen.
    probes: Arc<AtomicUsize>,
}

async fn handle(State(fake): State<Fake>, request: axum::extract::Request) -> Response {
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if fake.bearer {
        if path == "/token" {
            let scope_ok = request
                .uri()
                .query()
                .is_some_and(|q| q.contains("scope=repository%3Ateam%2Fapp%3Apull"));
            if authorization.as_deref() == Some("Basic cmVhZGVyOnMzY3JldA==") && scope_ok {
                return (StatusCode::OK, "{\"token\":\"t0ken\"}").into_response();
            }
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if authorization.as_deref() != Some("Bearer t0ken") {
            let host = request
                .headers()
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let challenge = format!("Bearer realm=\"http://{host}/token\",service=\"fake\"");
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
            )
                .into_response();
        }
    }
    if let Some(expected) = &fake.authorization {
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"fake\"")],
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
            )
                .into_response();
        }
    }
    if path == "/v2/" {
        fake.probes.fetch_add(1, Ordering::SeqCst);
        return StatusCode::OK.into_response();
    }
    if path.contains("/manifests/") {
        let seen = fake.hits.fetch_add(1, Ordering::SeqCst);
        let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        fake.most_in_flight.fetch_max(now, Ordering::SeqCst);
        // Long enough for concurrent requests to overlap if the client let them.
        tokio::time::sleep(Duration::from_millis(20)).await;
        fake.in_flight.fetch_sub(1, Ordering::SeqCst);
        if fake.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if seen < fake.failures {
            return (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response();
        }
        let (manifest, digest, _) = manifest();
        if path.contains(".sig") || path.contains(".att") {
            return StatusCode::NOT_FOUND.into_response();
        }
        return (
            StatusCode::OK,
            [
                ("docker-content-digest", digest.as_str()),
                ("content-type", "application/vnd.oci.image.manifest.v1+json"),
            ],
            manifest,
        )
            .into_response();
    }
    let (_, _, config_digest) = manifest();
    if path.ends_with(&format!("/blobs/{config_digest}")) {
        return (StatusCode::OK, CONFIG).into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

async fn start(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let app = Router::new().fallback(any(handle)).with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await });
    host
}

fn fake(failures: usize, hang: bool) -> Fake {
    Fake {
        hits: Arc::new(AtomicUsize::new(0)),
        failures,
        hang,
        authorization: None,
        in_flight: Arc::new(AtomicUsize::new(0)),
        most_in_flight: Arc::new(AtomicUsize::new(0)),
        bearer: false,
        probes: Arc::new(AtomicUsize::new(0)),
    }
}

fn client(host: &str, attempts: usize) -> RegistryClient {
    limited_client(host, attempts, 16)
}

fn limited_client(host: &str, attempts: usize, limit: usize) -> RegistryClient {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let yaml = format!(
        "registries:\n  - host: \"{host}\"\n    insecure: true\nevidence:\n  maxAttempts: {attempts}\n  maxConcurrentRequestsPerRegistry: {limit}\n"
    );
    let loaded = LoadedConfig::from_yaml(&yaml, "test").unwrap();
    RegistryClient::new(&loaded.config.registries, &loaded.config.evidence).unwrap()
}

fn call(seconds: u64) -> Call {
    Call {
        deadline: Instant::now() + Duration::from_secs(seconds),
        credential: Credential::Anonymous,
        priority: Priority::Admission,
    }
}

#[tokio::test]
async fn transient_5xx_answers_are_retried_within_the_deadline() {
    let fake = fake(2, false);
    let hits = fake.hits.clone();
    let host = start(fake).await;
    let image = ImageRef::parse(&format!("{host}/team/app:v1")).unwrap();
    let digest = client(&host, 3).resolve_with(&image, &call(10)).await;
    assert_eq!(digest.ok(), Some(manifest().1));
    // Two 503s, then success (HEAD answers carry no body, so each attempt is one request).
    assert!(hits.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn a_registry_that_keeps_failing_is_an_unavailable_error_after_the_configured_attempts() {
    let fake = fake(usize::MAX, false);
    let hits = fake.hits.clone();
    let host = start(fake).await;
    let image = ImageRef::parse(&format!("{host}/team/app:v1")).unwrap();
    let err = client(&host, 2)
        .resolve_with(&image, &call(10))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    let attempts = hits.load(Ordering::SeqCst);
    // HEAD without a digest falls back to GET, so one attempt is at most two requests.
    assert!((2..=4).contains(&attempts), "{attempts} requests");
}

#[tokio::test]
async fn a_registry_that_does_not_answer_is_a_timeout_at_the_deadline() {
    let host = start(fake(0, true)).await;
    let image = ImageRef::parse(&format!("{host}/team/app:v1")).unwrap();
    let err = client(&host, 3)
        .resolve_with(&image, &call(1))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, RegistryError::Timeout), "{err}");
}

#[tokio::test]
async fn an_unreachable_registry_is_an_evidence_error_naming_the_registry() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let yaml = format!(
        "registries:\n  - host: \"{host}\"\n    insecure: true\nimagePolicies:\n  - name: p\n    images: [\"{host}/**\"]\n    signatures:\n      keys:\n        - pem: |\n            -----BEGIN PUBLIC KEY-----\n            MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEKbfNeNmuXaFY6M4XnTkYVTk9F9iH\n            PVZqrSq0aWkr0DYMDdVK8CSsLhz5TtZyqsoMA2GqHyLd3KP3qGYvB4XlGg==\n            -----END PUBLIC KEY-----\n"
    );
    let loaded = LoadedConfig::from_yaml(&yaml, "test").unwrap();
    let evidence = RegistryEvidence::new(&loaded.config, None).unwrap();
    let image = ImageRef::parse(&format!("{host}/team/app:v1")).unwrap();
    let context = GatherContext::anonymous(Instant::now() + Duration::from_secs(5));
    let err = evidence
        .gather(
            &image,
            &loaded.config.image_policies.iter().collect::<Vec<_>>(),
            &context,
        )
        .await
        .err()
        .unwrap();
    assert_eq!(err.registry, host);
    assert!(err.message.contains("unavailable"), "{err}");
}

/// A hand-written pull-secret source: the credentials a pod's secret would carry.
#[derive(Debug)]
struct PodSecrets(DockerConfig);

impl PullSecretSource for PodSecrets {
    fn docker_configs<'a>(
        &'a self,
        _namespace: &'a str,
        pull: &'a PullRefs,
    ) -> PullSecretFuture<'a> {
        let configs = if pull.image_pull_secrets.is_empty() {
            Vec::new()
        } else {
            vec![self.0.clone()]
        };
        Box::pin(async move { Ok(configs) })
    }
}

#[tokio::test]
async fn the_pods_pull_secret_credentials_are_sent_to_its_registry() {
    let mut fake = fake(0, false);
    // "reader:s3cret"
    fake.authorization = Some("Basic cmVhZGVyOnMzY3JldA==".into());
    let host = start(fake).await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let yaml = format!("registries:\n  - host: \"{host}\"\n    insecure: true\n");
    let loaded = LoadedConfig::from_yaml(&yaml, "test").unwrap();
    let secret = DockerConfig::parse(
        format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"cmVhZGVyOnMzY3JldA==\"}}}}}}").as_bytes(),
        "test",
    )
    .unwrap();
    let evidence =
        RegistryEvidence::new(&loaded.config, Some(Arc::new(PodSecrets(secret)))).unwrap();
    let image = ImageRef::parse(&format!("{host}/team/app:v1")).unwrap();
    let with_secret = GatherContext {
        namespace: "shop".into(),
        pull: PullRefs {
            image_pull_secrets: vec!["pull".into()],
            service_account: None,
        },
        deadline: Instant::now() + Duration::from_secs(5),
        priority: Priority::Admission,
    };
    let found = evidence.gather(&image, &[], &with_secret).await.unwrap();
    assert_eq!(found.digest, Some(manifest().1));
    assert_eq!(found.facts.and_then(|f| f.user).as_deref(), Some("1000"));

    let without_secret = GatherContext {
        namespace: "shop".into(),
        pull: PullRefs::default(),
        deadline: Instant::now() + Duration::from_secs(5),
        priority: Priority::Admission,
    };
    let other = ImageRef::parse(&format!("{host}/team/other:v1")).unwrap();
    let err = evidence
        .gather(&other, &[], &without_secret)
        .await
        .err()
        .unwrap();
    assert!(err.message.contains("access denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_one_registry_stay_within_its_concurrency_limit() {
    let fake = fake(0, false);
    let (hits, most) = (fake.hits.clone(), fake.most_in_flight.clone());
    let host = start(fake).await;
    let client = limited_client(&host, 1, 2);
    let images: Vec<ImageRef> = (0..12)
        .map(|i| ImageRef::parse(&format!("{host}/team/app:v{i}")).unwrap())
        .collect();
    let deadline = call(10);
    let results = futures_util::future::join_all(
        images
            .iter()
            .map(|image| client.resolve_with(image, &deadline)),
    )
    .await;
    assert!(results.iter().all(Result::is_ok));
    assert!(hits.load(Ordering::SeqCst) >= 12);
    let most = most.load(Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} requests in flight at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_requests_hold_at_most_half_of_a_registrys_slots() {
    let fake = fake(0, false);
    let (hits, most) = (fake.hits.clone(), fake.most_in_flight.clone());
    let host = start(fake).await;
    let client = limited_client(&host, 1, 4);
    let images: Vec<ImageRef> = (0..12)
        .map(|i| ImageRef::parse(&format!("{host}/team/app:v{i}")).unwrap())
        .collect();
    let mut background = call(10);
    background.priority = Priority::Background;
    let results = futures_util::future::join_all(
        images
            .iter()
            .map(|image| client.resolve_with(image, &background)),
    )
    .await;
    assert!(results.iter().all(Result::is_ok));
    assert!(hits.load(Ordering::SeqCst) >= 12);
    let background_most = most.swap(0, Ordering::SeqCst);
    assert!(
        (1..=2).contains(&background_most),
        "{background_most} background requests in flight at once (limit 4)"
    );

    // Admission requests beside a background flood: together they stay within the limit, and
    // the flood never holds more than its half.
    let admission = call(10);
    let mixed = images.iter().enumerate().map(|(i, image)| {
        let call = if i % 3 == 0 { &admission } else { &background };
        client.resolve_with(image, call)
    });
    let results = futures_util::future::join_all(mixed).await;
    assert!(results.iter().all(Result::is_ok));
    let mixed_most = most.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&mixed_most),
        "{mixed_most} in flight at once"
    );
}

#[tokio::test]
async fn a_bearer_token_challenge_is_answered_with_the_configured_credentials() {
    let mut fake = fake(0, false);
    fake.bearer = true;
    let host = start(fake).await;
    let image = ImageRef::parse(&format!("{host}/team/app:v1")).unwrap();
    let client = client(&host, 1);
    let with_credentials = Call {
        deadline: Instant::now() + Duration::from_secs(10),
        credential: Credential::Basic {
            username: "reader".into(),
            password: "s3cret".into(),
        },
        priority: Priority::Admission,
    };
    let digest = client.resolve_with(&image, &with_credentials).await;
    assert_eq!(digest.ok(), Some(manifest().1));

    let wrong = Call {
        deadline: Instant::now() + Duration::from_secs(10),
        credential: Credential::Basic {
            username: "reader".into(),
            password: "wrong".into(),
        },
        priority: Priority::Admission,
    };
    let other = ImageRef::parse(&format!("{host}/team/app:v2")).unwrap();
    let err = limited_client(&host, 1, 4)
        .resolve_with(&other, &wrong)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

#[tokio::test]
async fn an_open_registry_answering_other_content_than_the_digest_names_is_refused() {
    let fake = fake(0, false);
    let probes = fake.probes.clone();
    let host = start(fake).await;
    let client = client(&host, 1);
    let image = ImageRef::parse(&format!("{host}/team/app:v1")).unwrap();
    // The fake answers its one manifest for every digest: asked for another, it lies.
    let (_, digest, _) = manifest();
    let good = client.manifest(&image, &digest, &call(10)).await;
    assert!(good.is_ok(), "{good:?}");
    let other = format!("sha256:{}", "ab".repeat(32));
    let err = client
        .manifest(&image, &other, &call(10))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains(&other), "{err}");
    assert_eq!(
        probes.load(Ordering::SeqCst),
        1,
        "probed once for both requests"
    );
}
