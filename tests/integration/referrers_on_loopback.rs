//! OCI referrers listings (`RegistryClient::referrers_listing`) against a real registry:
//! Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, which has no referrers API, so
//! the referrers tag schema is tested on it directly, and the API through the clearly named
//! stand-in of `portcullis_test_support::referrers_standin` (a proxy that answers only that
//! endpoint itself).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::time::Duration;

use portcullis::config::LoadedConfig;
use portcullis::credentials::Credential;
use portcullis::evidence::Priority;
use portcullis::reference::ImageRef;
use portcullis::registry::{
    Call, MAX_REFERRER_PAGES, MAX_REFERRERS, Referrers, ReferrersSource, RegistryClient,
    RegistryError,
};
use rstest::rstest;
use serde_json::{Value, json};
use tokio::time::Instant;

use portcullis_test_support::referrers_standin::{ReferrersStandin, StandinAnswer};
use portcullis_test_support::registry::{
    Artifact, ImageSpec, Layout, Mode, Registry, push_referrer, push_referrers_tag,
};

const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const SBOM: &str = "application/spdx+json";
const REPOSITORY: &str = "team/app";

/// A registry with one image pushed as `team/app:v1`; returns it and the image's digest.
fn registry_with_image() -> (Registry, String) {
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let mut layout = Layout::new();
    let digest = layout.single("v1", &ImageSpec::new("referrers"));
    registry.push_layout(layout.path(), "v1", REPOSITORY);
    (registry, digest)
}

fn client_for(host: &str, attempts: usize) -> RegistryClient {
    let yaml = format!(
        "registries:\n  - host: \"{host}\"\n    insecure: true\nevidence:\n  maxAttempts: {attempts}\n"
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

fn image(host: &str) -> ImageRef {
    ImageRef::parse(&format!("{host}/{REPOSITORY}:v1")).unwrap()
}

async fn listing(
    host: &str,
    digest: &str,
    artifact_type: Option<&str>,
) -> Result<Referrers, RegistryError> {
    client_for(host, 1)
        .referrers_listing(&image(host), digest, artifact_type, &call(10))
        .await
}

fn digests(listing: &Referrers) -> Vec<String> {
    listing
        .descriptors
        .iter()
        .map(|d| d.digest.clone())
        .collect()
}

fn digests_of(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| v["digest"].as_str().unwrap().to_owned())
        .collect()
}

fn referrers_path(digest: &str) -> String {
    format!("/v2/{REPOSITORY}/referrers/{digest}")
}

#[tokio::test]
async fn referrers_are_listed_with_their_descriptors_through_the_referrers_standin() {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    let bundle = Artifact::of_type(SIGSTORE_BUNDLE, "bundle").annotated("team", "shop");
    let pushed = push_referrer(&standin.host, REPOSITORY, &digest, &bundle).await;

    let before = standin.request_count();
    let found = listing(&standin.host, &digest, None).await.unwrap();
    // One page, one round trip: no `/v2/` ping, no tag schema look-up.
    assert_eq!(standin.request_count() - before, 1);
    assert_eq!(standin.requests("GET", &referrers_path(&digest)), 1);
    assert_eq!(found.source, ReferrersSource::Api);
    assert!(!found.truncated);
    assert_eq!(found.descriptors.len(), 1);
    let descriptor = &found.descriptors[0];
    assert_eq!(descriptor.digest, pushed["digest"].as_str().unwrap());
    assert_eq!(descriptor.size, pushed["size"].as_i64().unwrap());
    assert_eq!(
        descriptor.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(descriptor.artifact_type.as_deref(), Some(SIGSTORE_BUNDLE));
    assert_eq!(
        descriptor
            .annotations
            .as_ref()
            .and_then(|a| a.get("team"))
            .map(String::as_str),
        Some("shop")
    );
    // The old form lists the same.
    let old = client_for(&standin.host, 1)
        .referrers(&image(&standin.host), &digest, &call(10))
        .await
        .unwrap();
    assert_eq!(old, found.descriptors);
}

#[tokio::test]
async fn an_artifact_type_filter_is_sent_to_the_api_and_kept_through_the_referrers_standin() {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    let bundle = push_referrer(
        &standin.host,
        REPOSITORY,
        &digest,
        &Artifact::of_type(SIGSTORE_BUNDLE, "bundle"),
    )
    .await;
    push_referrer(
        &standin.host,
        REPOSITORY,
        &digest,
        &Artifact::of_type(SBOM, "sbom"),
    )
    .await;

    let found = listing(&standin.host, &digest, Some(SIGSTORE_BUNDLE))
        .await
        .unwrap();
    assert_eq!(found.source, ReferrersSource::Api);
    assert_eq!(digests(&found), digests_of(&[bundle]));
    let queries = standin.referrers_queries();
    assert_eq!(queries.len(), 1);
    assert!(
        queries[0].ends_with("?artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson"),
        "{queries:?}"
    );
    let everything = listing(&standin.host, &digest, None).await.unwrap();
    assert_eq!(everything.descriptors.len(), 2);
}

#[tokio::test]
async fn a_registry_that_ignores_the_filter_is_filtered_here_through_the_referrers_standin() {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    // No `OCI-Filters-Applied`: the whole list, whatever was asked.
    let body = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "1".repeat(64)), "size": 10, "artifactType": SBOM},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "2".repeat(64)), "size": 10,
             "artifactType": SIGSTORE_BUNDLE},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "3".repeat(64)), "size": 10},
        ],
    });
    standin.answer_referrers(StandinAnswer::Raw {
        status: 200,
        content_type: "application/vnd.oci.image.index.v1+json".into(),
        body: body.to_string().into_bytes(),
    });
    let found = listing(&standin.host, &digest, Some(SIGSTORE_BUNDLE))
        .await
        .unwrap();
    assert_eq!(digests(&found), [format!("sha256:{}", "2".repeat(64))]);
}

#[tokio::test]
async fn a_filtered_listing_of_three_pages_is_followed_to_its_end_through_the_referrers_standin() {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    standin.set_page_size(2);
    let mut bundles = Vec::new();
    for n in 0..6 {
        let artifact = Artifact::of_type(SIGSTORE_BUNDLE, &format!("bundle {n}"));
        bundles.push(push_referrer(&standin.host, REPOSITORY, &digest, &artifact).await);
        if n % 2 == 0 {
            let sbom = Artifact::of_type(SBOM, &format!("sbom {n}"));
            push_referrer(&standin.host, REPOSITORY, &digest, &sbom).await;
        }
    }
    assert_eq!(standin.recorded(REPOSITORY, &digest).len(), 9);

    let found = listing(&standin.host, &digest, Some(SIGSTORE_BUNDLE))
        .await
        .unwrap();
    assert_eq!(found.source, ReferrersSource::Api);
    assert!(!found.truncated);
    assert_eq!(digests(&found), digests_of(&bundles));
    // Six bundles in pages of two: three round trips, each keeping the filter.
    let queries = standin.referrers_queries();
    assert_eq!(queries.len(), 3, "{queries:?}");
    assert!(
        queries.iter().all(|q| q.contains("artifactType=")),
        "{queries:?}"
    );
    assert_eq!(standin.requests("GET", &referrers_path(&digest)), 3);

    // Unfiltered: nine in pages of two is five round trips.
    let everything = listing(&standin.host, &digest, None).await.unwrap();
    assert_eq!(everything.descriptors.len(), 9);
    assert_eq!(standin.requests("GET", &referrers_path(&digest)), 3 + 5);
}

#[tokio::test]
async fn a_manifest_without_artifact_type_is_listed_by_its_config_type_through_the_referrers_standin()
 {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    let mut artifact = Artifact::of_type("unused", "signature");
    artifact.artifact_type = None;
    artifact.config_media_type = "application/vnd.example.signature.config+json".into();
    let pushed = push_referrer(&standin.host, REPOSITORY, &digest, &artifact).await;

    let found = listing(
        &standin.host,
        &digest,
        Some("application/vnd.example.signature.config+json"),
    )
    .await
    .unwrap();
    assert_eq!(digests(&found), digests_of(&[pushed]));
}

#[tokio::test]
async fn the_referrers_standin_answers_a_manifest_with_a_subject_with_oci_subject() {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    // Blobs in place, then the same manifest PUT again by hand to see the answer's headers.
    let pushed = push_referrer(
        &standin.host,
        REPOSITORY,
        &digest,
        &Artifact::of_type(SBOM, "sbom"),
    )
    .await;
    let manifest = reqwest::Client::new()
        .get(format!(
            "http://{}/v2/{REPOSITORY}/manifests/{}",
            registry.host,
            pushed["digest"].as_str().unwrap()
        ))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let answer = reqwest::Client::new()
        .put(format!(
            "http://{}/v2/{REPOSITORY}/manifests/{}",
            standin.host,
            pushed["digest"].as_str().unwrap()
        ))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201);
    assert_eq!(
        answer
            .headers()
            .get("oci-subject")
            .and_then(|v| v.to_str().ok()),
        Some(digest.as_str())
    );
    // Pushed twice, recorded once; and the real registry holds the manifest.
    assert_eq!(standin.recorded(REPOSITORY, &digest), vec![pushed]);
}

#[tokio::test]
async fn referrers_come_from_the_referrers_tag_on_a_registry_without_the_referrers_api() {
    let (registry, digest) = registry_with_image();
    // Straight to docker-registry: two artefact manifests, and the index a client writes under
    // the tag `sha256-<hex>` for a registry that answers 404 on the referrers API.
    let bundle = push_referrer(
        &registry.host,
        REPOSITORY,
        &digest,
        &Artifact::of_type(SIGSTORE_BUNDLE, "bundle").annotated("k", "v"),
    )
    .await;
    let sbom = push_referrer(
        &registry.host,
        REPOSITORY,
        &digest,
        &Artifact::of_type(SBOM, "sbom"),
    )
    .await;
    push_referrers_tag(
        &registry.host,
        REPOSITORY,
        &digest,
        &[bundle.clone(), sbom.clone()],
    )
    .await;

    let before = registry.request_count();
    let found = listing(&registry.host, &digest, None).await.unwrap();
    assert_eq!(found.source, ReferrersSource::TagSchema);
    assert!(!found.truncated);
    assert_eq!(digests(&found), digests_of(&[bundle.clone(), sbom.clone()]));
    assert_eq!(
        found.descriptors[0]
            .annotations
            .as_ref()
            .and_then(|a| a.get("k"))
            .map(String::as_str),
        Some("v")
    );
    // The API's 404, then the tag through oci-client (its `/v2/` probe, then the manifest).
    assert_eq!(registry.requests("GET", &referrers_path(&digest)), 1);
    let tag = format!("/v2/{REPOSITORY}/manifests/{}", digest.replace(':', "-"));
    assert_eq!(registry.requests("GET", &tag), 1);
    assert_eq!(registry.request_count() - before, 3);

    let filtered = listing(&registry.host, &digest, Some(SBOM)).await.unwrap();
    assert_eq!(filtered.source, ReferrersSource::TagSchema);
    assert_eq!(digests(&filtered), digests_of(&[sbom]));
}

#[tokio::test]
async fn an_image_without_referrers_has_no_listing_on_a_registry_without_the_referrers_api() {
    let (registry, digest) = registry_with_image();
    let found = listing(&registry.host, &digest, None).await.unwrap();
    assert_eq!(found.source, ReferrersSource::None);
    assert!(found.descriptors.is_empty());
    assert!(!found.truncated);
    let old = client_for(&registry.host, 1)
        .referrers(&image(&registry.host), &digest, &call(10))
        .await
        .unwrap();
    assert!(old.is_empty());
}

#[tokio::test]
async fn an_image_without_referrers_is_an_empty_api_listing_through_the_referrers_standin() {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    let found = listing(&standin.host, &digest, None).await.unwrap();
    assert_eq!(found.source, ReferrersSource::Api);
    assert!(found.descriptors.is_empty());
    assert_eq!(standin.request_count(), 1);
}

#[tokio::test]
async fn a_registry_that_is_down_is_unavailable_not_an_empty_listing() {
    let (mut registry, digest) = registry_with_image();
    registry.stop();
    let err = client_for(&registry.host, 2)
        .referrers_listing(&image(&registry.host), &digest, None, &call(10))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_registry_that_never_answers_is_a_timeout_not_an_empty_listing() {
    // Accepts connections, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let digest = format!("sha256:{}", "a".repeat(64));
    let started = std::time::Instant::now();
    let err = client_for(&host, 3)
        .referrers_listing(&image(&host), &digest, None, &call(1))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    server.abort();
}

#[tokio::test]
async fn a_referrers_answer_that_is_not_json_is_a_protocol_error_through_the_referrers_standin() {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    standin.answer_referrers(StandinAnswer::Raw {
        status: 200,
        content_type: "text/html".into(),
        body: b"<html>maintenance</html>".to_vec(),
    });
    let err = listing(&standin.host, &digest, None).await.unwrap_err();
    let RegistryError::Protocol { what: message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("not an OCI index"), "{message}");
}

#[tokio::test]
async fn a_failing_referrers_api_is_unavailable_after_the_retries_through_the_referrers_standin() {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    standin.answer_referrers(StandinAnswer::Raw {
        status: 503,
        content_type: "text/plain".into(),
        body: b"overloaded".to_vec(),
    });
    let err = client_for(&standin.host, 3)
        .referrers_listing(&image(&standin.host), &digest, None, &call(10))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err:?}");
    assert_eq!(standin.requests("GET", &referrers_path(&digest)), 3);
    // A refusal is not a reason to fall back to the tag, nor an empty list.
    standin.answer_referrers(StandinAnswer::Raw {
        status: 403,
        content_type: "application/json".into(),
        body: br#"{"errors":[{"code":"DENIED","message":"no"}]}"#.to_vec(),
    });
    let err = listing(&standin.host, &digest, None).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
}

#[tokio::test]
async fn an_endless_listing_is_cut_at_the_page_cap_through_the_referrers_standin() {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    standin.answer_referrers(StandinAnswer::EndlessPages);
    let found = listing(&standin.host, &digest, None).await.unwrap();
    assert_eq!(found.source, ReferrersSource::Api);
    assert!(found.truncated);
    assert_eq!(found.descriptors.len(), MAX_REFERRER_PAGES);
    assert_eq!(
        standin.requests("GET", &referrers_path(&digest)),
        MAX_REFERRER_PAGES
    );
    // The old form cannot say "truncated": it refuses the listing instead.
    let err = client_for(&standin.host, 1)
        .referrers(&image(&standin.host), &digest, &call(10))
        .await
        .unwrap_err();
    let RegistryError::Protocol { what: message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("beyond 10 pages"), "{message}");
}

#[tokio::test]
async fn a_page_beyond_the_descriptor_cap_is_cut_through_the_referrers_standin() {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    let manifests: Vec<Value> = (0..MAX_REFERRERS + 500)
        .map(|n| {
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": format!("sha256:{n:064x}"), "size": 1, "artifactType": SBOM})
        })
        .collect();
    standin.answer_referrers(StandinAnswer::Raw {
        status: 200,
        content_type: "application/vnd.oci.image.index.v1+json".into(),
        body: json!({"schemaVersion": 2, "manifests": manifests})
            .to_string()
            .into_bytes(),
    });
    let found = listing(&standin.host, &digest, None).await.unwrap();
    assert!(found.truncated);
    assert_eq!(found.descriptors.len(), MAX_REFERRERS);
}

/// Turns on one way the stand-in's referrers endpoint challenges (user, password).
type RequireAuth = fn(&ReferrersStandin, &str, &str);

/// A `Basic` challenge is answered with the credential, a `Bearer` one with a token the
/// credential buys at the realm; either way an anonymous or wrong credential is refused, never
/// an empty listing. `round_trips`: referrers requests of the first listing with the credential
/// and of the one after it, where the scheme fixes them (Basic: the challenge then the answer,
/// then the credential at once).
#[rstest]
#[case::basic(ReferrersStandin::require_basic_auth, Some([2, 1]), false)]
#[case::bearer_token_from_the_realm(ReferrersStandin::require_bearer_token, None, true)]
#[tokio::test]
async fn a_challenge_is_answered_with_the_credential_through_the_referrers_standin(
    #[case] require: RequireAuth,
    #[case] round_trips: Option<[usize; 2]>,
    #[case] token_from_the_realm: bool,
) {
    let (registry, digest) = registry_with_image();
    let standin = ReferrersStandin::start(&registry).await;
    let pushed = push_referrer(
        &standin.host,
        REPOSITORY,
        &digest,
        &Artifact::of_type(SBOM, "sbom"),
    )
    .await;
    require(&standin, "reader", "s3cret");
    let client = client_for(&standin.host, 1);
    let anonymous = client
        .referrers_listing(&image(&standin.host), &digest, None, &call(10))
        .await
        .unwrap_err();
    assert!(
        matches!(anonymous, RegistryError::Unauthorized { .. }),
        "{anonymous:?}"
    );
    let with_password = |password: &str| Call {
        credential: Credential::Basic {
            username: "reader".into(),
            password: password.into(),
        },
        ..call(10)
    };
    assert!(
        client
            .referrers_listing(
                &image(&standin.host),
                &digest,
                None,
                &with_password("wrong")
            )
            .await
            .is_err()
    );
    let reader = with_password("s3cret");
    let referrers_before = standin.requests("GET", &referrers_path(&digest));
    let tokens_before = standin.requests("GET", "/token");
    let found = client
        .referrers_listing(&image(&standin.host), &digest, None, &reader)
        .await
        .unwrap();
    assert_eq!(digests(&found), digests_of(&[pushed]));
    let first = standin.requests("GET", &referrers_path(&digest)) - referrers_before;
    client
        .referrers_listing(&image(&standin.host), &digest, None, &reader)
        .await
        .unwrap();
    let second = standin.requests("GET", &referrers_path(&digest)) - referrers_before - first;
    if let Some(expected) = round_trips {
        assert_eq!([first, second], expected, "referrers requests per listing");
    }
    assert_eq!(
        standin.requests("GET", "/token") > tokens_before,
        token_from_the_realm,
        "whether a token came from the realm"
    );
}
