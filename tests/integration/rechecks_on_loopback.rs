//! Re-judging's scheduled rechecks against a real registry (Debian's `docker-registry` on
//! 127.0.0.1, images pushed with `skopeo copy`, attestations signed with the sigstore crate):
//! a base image tag that moves is found on its `baseImageCheck` schedule, and a rescan attested
//! after admission is read on the `attestationRefresh` schedule past the verification cache —
//! each re-judging only the units that read it. The clock rules and schedules judge against is
//! fixed; the pods are JSON shapes of a containerd node (no kube-apiserver runs here).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::sync::Arc;

use crate::lifecycle_on_loopback::{VULN, push, vuln_predicate};
use portcullis::clock::FixedClock;
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::registry_evidence::RegistryEvidence;
use portcullis::rejudge::{PodChange, Rejudger};
use portcullis::running::Trigger;
use portcullis_test_support::registry::{
    ImageSpec, Mode, Registry, SigstoreKey, push_attestations, sign_image, write_file,
};
use serde_json::{Value, json};

const QUIET_RULES: &str = "rules:\n  noLatestTag: {enabled: false}\n  runAsNonRoot: {enabled: false}\n  privilegeEscalation: {enabled: false}\n";
const T0: &str = "2026-12-01T00:00:00Z";

/// A running pod of ReplicaSet `owner` whose node (containerd) pulled `image` as `image_id`.
fn pod(name: &str, owner: &str, image: &str, image_id: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "resourceVersion": "1",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": owner, "uid": format!("rs-{owner}"),
                                          "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "image": image, "imageID": image_id, "ready": true,
             "restartCount": 0}]}
    })
}

/// Engines over one evidence source (one set of caches, as in `serve`), judging at `T0` plus
/// `minutes`.
struct Engines {
    loaded: LoadedConfig,
    evidence: Arc<RegistryEvidence>,
}

impl Engines {
    fn new(yaml: &str) -> Self {
        let loaded = LoadedConfig::from_yaml(yaml, "test").unwrap_or_else(|err| panic!("{err}"));
        let evidence = Arc::new(RegistryEvidence::new(&loaded.config, None).unwrap());
        Self { loaded, evidence }
    }

    fn at(&self, minutes: i64) -> Engine {
        let at =
            portcullis::timeutil::parse_instant(T0).unwrap() + time::Duration::minutes(minutes);
        Engine::new(self.loaded.clone(), self.evidence.clone())
            .unwrap()
            .with_clock(Arc::new(FixedClock(at)))
    }
}

fn rechecks(triggers: &[Trigger]) -> Vec<&str> {
    triggers
        .iter()
        .filter_map(|t| match t {
            Trigger::Recheck(key) => Some(key.as_str()),
            _ => None,
        })
        .collect()
}

fn findings_text(judged: &portcullis::object_review::Judged) -> String {
    judged
        .findings
        .iter()
        .map(|f| format!("{}: {} ({})", f.rule, f.found, f.fix))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_tag_that_moves_is_found_on_its_schedule_for_the_units_built_on_it_and_no_other() {
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let base_name = format!("{}/base/alpine:3.20", registry.host);
    let mut base_spec = ImageSpec::new("base v1");
    base_spec.base_name = None;
    let base_v1 = push(&registry, "base/alpine", "3.20", &base_spec);
    let mut app = ImageSpec::new("built on base v1");
    app.base_name = Some(base_name.clone());
    app.base_digest = Some(base_v1.clone());
    let app_digest = push(&registry, "team/app", "v1", &app);
    let mut plain = ImageSpec::new("no base declared");
    plain.base_name = None;
    let plain_digest = push(&registry, "team/plain", "v1", &plain);
    let yaml = format!(
        "{}{QUIET_RULES}evidence: {{tagTtlSeconds: 1}}\nrejudge: {{interval: 10m, baseImageCheck: 5m}}\nimagePolicies:\n  - name: team\n    images: [\"{}/team/**\"]\n    baseImageFreshness: {{mode: enforce}}\n",
        registry.registry_yaml(),
        registry.host
    );
    let engines = Engines::new(&yaml);
    let host = &registry.host;
    let mut rejudger = Rejudger::new();
    rejudger.apply(PodChange::Relisted(vec![
        pod(
            "web-1",
            "web-5b",
            &format!("{host}/team/app:v1"),
            &format!("{host}/team/app@{app_digest}"),
        ),
        pod(
            "plain-1",
            "plain-7c",
            &format!("{host}/team/plain:v1"),
            &format!("{host}/team/plain@{plain_digest}"),
        ),
    ]));
    let start = engines.at(0);
    rejudger.poll(&start);
    let first = rejudger.judge_pending(&start).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|(_, j)| j.allowed), "{first:?}");

    // The base is rebuilt (security fixes) and its tag moves.
    base_spec.marker = "base v2".into();
    let base_v2 = push(&registry, "base/alpine", "3.20", &base_spec);
    assert_ne!(base_v1, base_v2);
    // Let the tag resolution cached at the first judgement expire (tagTtlSeconds: 1).
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;

    // Before the base's check is due nothing is re-judged.
    let early = engines.at(4);
    assert!(rechecks(&rejudger.poll(&early)).is_empty());
    assert!(rejudger.judge_pending(&early).await.is_empty());

    // Due: only the unit built on that base is judged again, and now fails.
    let due = engines.at(5);
    let expected = format!("base:{base_name}");
    assert_eq!(rechecks(&rejudger.poll(&due)), [expected.as_str()]);
    let second = rejudger.judge_pending(&due).await;
    assert_eq!(second.len(), 1, "{second:?}");
    let (change, judged) = &second[0];
    assert!(
        change.target.label.contains("web-5b"),
        "{}",
        change.target.label
    );
    assert!(!judged.allowed, "{judged:?}");
    let text = findings_text(judged);
    assert!(
        text.contains("base-image-outdated") && text.contains(&format!("{base_name}@{base_v2}")),
        "{text}"
    );
    assert_eq!(
        rejudger.evaluations(),
        3,
        "two first judgements and one recheck"
    );

    // The judgement noted the base again: due another period later, not at once.
    assert!(rechecks(&rejudger.poll(&engines.at(6))).is_empty());
    assert_eq!(
        rechecks(&rejudger.poll(&engines.at(10))),
        [expected.as_str()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescan_attested_after_admission_is_read_on_the_refresh_schedule_past_the_cache() {
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let keys = tempfile::tempdir().unwrap();
    let key = SigstoreKey::generate();
    let key_path = write_file(keys.path(), "team.pub", &key.public_pem);
    let app_digest = push(&registry, "team/app", "v1", &ImageSpec::new("scanned"));
    sign_image(&registry, "team/app", &app_digest, &key).await;
    push_attestations(
        &registry,
        "team/app",
        &app_digest,
        &key,
        &[(
            VULN,
            vuln_predicate("CRITICAL", "2026-11-30T12:00:00Z"),
            &app_digest,
        )],
    )
    .await;
    let tool_digest = push(&registry, "tools/shell", "v1", &ImageSpec::new("unscanned"));
    sign_image(&registry, "tools/shell", &tool_digest, &key).await;
    let host = &registry.host;
    let yaml = format!(
        "{}{QUIET_RULES}rejudge: {{interval: 10m, attestationRefresh: 1h}}\nimagePolicies:\n  - name: team\n    images: [\"{host}/team/**\"]\n    signatures:\n      keys:\n        - path: {}\n    vulnerabilities:\n      denyAtOrAbove: HIGH\n      maxScanAge: 7d\n  - name: tools\n    images: [\"{host}/tools/**\"]\n    signatures:\n      keys:\n        - path: {}\n",
        registry.registry_yaml(),
        key_path.display(),
        key_path.display()
    );
    let engines = Engines::new(&yaml);
    let mut rejudger = Rejudger::new();
    rejudger.apply(PodChange::Relisted(vec![
        pod(
            "web-1",
            "web-5b",
            &format!("{host}/team/app:v1"),
            &format!("{host}/team/app@{app_digest}"),
        ),
        pod(
            "shell-1",
            "shell-9d",
            &format!("{host}/tools/shell:v1"),
            &format!("{host}/tools/shell@{tool_digest}"),
        ),
    ]));
    let start = engines.at(0);
    rejudger.poll(&start);
    let first = rejudger.judge_pending(&start).await;
    assert_eq!(first.len(), 2, "{first:?}");
    let web = first
        .iter()
        .find(|(c, _)| c.target.label.contains("web-5b"))
        .unwrap();
    assert!(!web.1.allowed, "the CRITICAL finding denies: {:?}", web.1);
    assert!(findings_text(&web.1).contains("CVE-2026-4242"));
    let shell = first
        .iter()
        .find(|(c, _)| c.target.label.contains("shell-9d"))
        .unwrap();
    assert!(shell.1.allowed, "{:?}", shell.1);

    // The pipeline rescans with a fixed package and attests the clean result.
    push_attestations(
        &registry,
        "team/app",
        &app_digest,
        &key,
        &[
            (
                VULN,
                vuln_predicate("CRITICAL", "2026-11-30T12:00:00Z"),
                &app_digest,
            ),
            (
                VULN,
                vuln_predicate("", "2026-11-30T18:00:00Z"),
                &app_digest,
            ),
        ],
    )
    .await;

    // A full pass half an hour later judges from the verification cache (a day by
    // default): the rescan is not seen yet.
    let half = engines.at(30);
    assert!(rechecks(&rejudger.poll(&half)).is_empty());
    rejudger.trigger(&Trigger::Periodic);
    assert!(
        rejudger.judge_pending(&half).await.is_empty(),
        "the cached attestations still deny"
    );

    // The refresh is due: the app's attestations are read again, and only its unit changes.
    let due = engines.at(60);
    let expected = format!("attestations:{app_digest}");
    assert_eq!(rechecks(&rejudger.poll(&due)), [expected.as_str()]);
    let refreshed = rejudger.judge_pending(&due).await;
    assert_eq!(refreshed.len(), 1, "{refreshed:?}");
    let (change, judged) = &refreshed[0];
    assert!(
        change.target.label.contains("web-5b"),
        "{}",
        change.target.label
    );
    assert!(judged.allowed, "the attested rescan is clean: {judged:?}");
    assert_eq!(change.previous.as_deref(), Some("denied"));
    assert_eq!(
        rejudger.evaluations(),
        5,
        "two first judgements, two in the full pass, one refresh"
    );
}
