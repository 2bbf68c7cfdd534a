//! What runs on the nodes, as opposed to what pod specs say: the digest each container's
//! runtime reports (`status.containerStatuses[].imageID`, normalised across runtimes'
//! spellings), the grouping of running pods into units judged once, and the pure bookkeeping
//! of re-judging — which units a trigger affects and which verdicts changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::config::Mode;
use crate::workload::ContainerKind;

/// The rule of the finding "this container runs another digest than its tag names now".
pub const RULE_RUNNING_DIGEST: &str = "running-digest";

/// What a runtime's `imageID` says about the image a container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunningImage {
    /// A registry manifest digest (`repo@sha256:…`), what signatures and scans are keyed by.
    Digest {
        /// The repository the runtime pulled it from, when it says.
        repository: Option<String>,
        digest: String,
    },
    /// Only the runtime's local image id (the config digest, e.g. Docker's `docker://sha256:…`
    /// for an image without a repository digest): not a manifest digest, so it cannot be
    /// looked up at a registry. The spec's reference is judged instead.
    LocalId(String),
    /// Not reported yet (the container is still waiting for its pull).
    Unknown,
}

impl RunningImage {
    /// The manifest digest, when the runtime reported one.
    pub fn digest(&self) -> Option<&str> {
        match self {
            RunningImage::Digest { digest, .. } => Some(digest),
            _ => None,
        }
    }
}

/// Reads a container status's `imageID` as containerd, CRI-O, cri-dockerd and dockershim spell
/// it: `docker.io/library/nginx@sha256:…`, `docker-pullable://nginx@sha256:…`,
/// `docker://sha256:…` (a local id), a bare `sha256:…` or bare 64 hex digits (local ids).
pub fn normalise_image_id(image_id: &str) -> RunningImage {
    let text = image_id.trim();
    let text = text
        .strip_prefix("docker-pullable://")
        .or_else(|| text.strip_prefix("docker://"))
        .unwrap_or(text);
    if text.is_empty() {
        return RunningImage::Unknown;
    }
    match text.rsplit_once('@') {
        Some((repository, digest)) if is_digest(digest) => RunningImage::Digest {
            repository: (!repository.is_empty()).then(|| repository.to_owned()),
            digest: digest.to_owned(),
        },
        Some(_) => RunningImage::Unknown,
        None if is_digest(text) => RunningImage::LocalId(text.to_owned()),
        None if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) => {
            RunningImage::LocalId(format!("sha256:{}", text.to_ascii_lowercase()))
        }
        None => RunningImage::Unknown,
    }
}

fn is_digest(text: &str) -> bool {
    let Some((algorithm, hex)) = text.split_once(':') else {
        return false;
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == length && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One container of a running pod: the spec's reference (kept for messages and tag rules)
/// and what its runtime says it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    pub kind: ContainerKind,
    pub name: String,
    /// `spec.containers[].image`, as written.
    pub spec_image: String,
    pub running: RunningImage,
}

/// The containers of a pod with what each runs, from its spec and status. Containers without
/// a status yet are `Unknown`; image volumes are judged by their spec (kubelets report no
/// digest for them).
pub fn running_containers(pod: &Value) -> Vec<RunningContainer> {
    let lists = [
        (
            ContainerKind::InitContainer,
            "initContainers",
            "initContainerStatuses",
        ),
        (ContainerKind::Container, "containers", "containerStatuses"),
        (
            ContainerKind::EphemeralContainer,
            "ephemeralContainers",
            "ephemeralContainerStatuses",
        ),
    ];
    let mut found = Vec::new();
    for (kind, spec_key, status_key) in lists {
        let statuses: HashMap<&str, &str> = pod
            .pointer(&format!("/status/{status_key}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|status| {
                Some((
                    status.get("name")?.as_str()?,
                    status.get("imageID").and_then(Value::as_str).unwrap_or(""),
                ))
            })
            .collect();
        let specs = pod
            .pointer(&format!("/spec/{spec_key}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for spec in specs {
            let (Some(name), Some(image)) = (
                spec.get("name").and_then(Value::as_str),
                spec.get("image").and_then(Value::as_str),
            ) else {
                continue;
            };
            found.push(RunningContainer {
                kind,
                name: name.to_owned(),
                spec_image: image.to_owned(),
                running: statuses
                    .get(name)
                    .map_or(RunningImage::Unknown, |id| normalise_image_id(id)),
            });
        }
    }
    found
}

/// The digests a unit's containers run, by site: what re-judging judges instead of resolving
/// the spec's tags again, and the mode of the moved-tag finding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunningDigests {
    sites: BTreeMap<(ContainerKind, String), String>,
    /// What admission resolved each site to, where the replica remembers it.
    admitted: BTreeMap<(ContainerKind, String), String>,
    /// The mode of [`RULE_RUNNING_DIGEST`] findings (`rejudge.movedTag`).
    pub moved_tag: Option<Mode>,
}

impl RunningDigests {
    pub fn new(containers: &[RunningContainer], moved_tag: Mode) -> Self {
        let sites = containers
            .iter()
            .filter_map(|c| Some(((c.kind, c.name.clone()), c.running.digest()?.to_owned())))
            .collect();
        Self {
            sites,
            admitted: BTreeMap::new(),
            moved_tag: Some(moved_tag),
        }
    }

    /// Adds what admission resolved a site to (compared with what the site runs).
    pub fn admitted_at(&mut self, kind: ContainerKind, name: &str, digest: String) {
        self.admitted.insert((kind, name.to_owned()), digest);
    }

    /// The digest admission resolved the site to, when known.
    pub fn admitted(&self, kind: ContainerKind, name: &str) -> Option<&str> {
        self.admitted
            .get(&(kind, name.to_owned()))
            .map(String::as_str)
    }

    /// The digest the site runs, when its runtime reported one.
    pub fn digest(&self, kind: ContainerKind, name: &str) -> Option<&str> {
        self.sites.get(&(kind, name.to_owned())).map(String::as_str)
    }

    /// Every running digest, in site order.
    pub fn digests(&self) -> impl Iterator<Item = &str> {
        self.sites.values().map(String::as_str)
    }
}

/// The text of a moved-tag finding: the container runs `running`, its reference names
/// `current` now.
pub fn moved_tag_found(image: &str, running: &str, current: &str) -> String {
    format!(
        "runs {running}, but {image} resolves to {current} now: the tag moved after the pod \
         pulled it (or the node ran a stale cached image)"
    )
}

/// The text of a finding "the container runs another digest than its spec pins": a node
/// that ran a stale or substituted image (a pinned reference cannot move).
pub fn pinned_digest_found(image: &str, running: &str) -> String {
    format!(
        "runs {running}, but its spec pins {image}: the node runs another image than the one \
         named (a substituted or stale local image)"
    )
}

/// The text of a finding "the container runs another digest than admission resolved".
pub fn admitted_digest_found(image: &str, running: &str, admitted: &str) -> String {
    format!(
        "runs {running}, but {image} resolved to {admitted} when the pod was admitted: the \
         tag moved between admission and the pull (or the node ran a stale cached image)"
    )
}

/// How to fix a moved-tag finding.
pub fn moved_tag_fix(image: &str) -> String {
    format!(
        "restart the workload so its pods pull what {image} names now (kubectl rollout \
         restart), or pin the digest you mean in the pod spec (image@sha256:…)"
    )
}

/// A unit of re-judging: the running pods of one controller (or one bare pod) that run the
/// same digests at the same sites. Judged once; the verdict fans out to all its pods.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitKey {
    pub namespace: String,
    /// `ReplicaSet/web-5b7d`, or `Pod/lonely` for a pod without a controller.
    pub owner: String,
    /// The running digests in site order (empty when none is reported yet).
    pub digests: Vec<String>,
}

/// A controller's own controlling owner (a ReplicaSet's Deployment, a Job's CronJob), as the
/// owner watch reports it: what lets outputs name the workload people manage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLink {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// Its controlling owner, `None` when it has none (a ReplicaSet made by hand).
    pub controller: Option<Owner>,
}

/// One owner: enough to name it in a report or aim an Event at it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// How deep an owner chain is followed: Pod → ReplicaSet → Deployment is two; a longer chain
/// (an operator owning a Deployment) stops here rather than loop on a malformed cycle.
const MAX_OWNER_HOPS: usize = 4;

/// The controllers' owners, by (namespace, kind, name), and which kinds' listings arrived.
#[derive(Debug, Default)]
pub struct OwnerChains {
    links: HashMap<(String, String, String), Owner>,
    /// Kinds whose watch has listed (or failed: their chains stay one hop).
    settled: BTreeSet<String>,
}

impl OwnerChains {
    /// Records an object's controlling owner (or that it has none).
    pub fn apply(&mut self, link: OwnerLink) {
        let key = (link.namespace, link.kind, link.name);
        match link.controller {
            Some(owner) => {
                self.links.insert(key, owner);
            }
            None => {
                self.links.remove(&key);
            }
        }
    }

    pub fn remove(&mut self, namespace: &str, kind: &str, name: &str) {
        self.links
            .remove(&(namespace.to_owned(), kind.to_owned(), name.to_owned()));
    }

    /// A fresh listing of one kind replaces what was known of it.
    pub fn relist(&mut self, kind: &str, links: Vec<OwnerLink>) {
        self.links.retain(|(_, k, _), _| k != kind);
        for link in links {
            self.apply(link);
        }
        self.settled.insert(kind.to_owned());
    }

    /// The watch of `kind` cannot list: its objects' owners stay unknown.
    pub fn unavailable(&mut self, kind: &str) {
        self.settled.insert(kind.to_owned());
    }

    /// Whether every one of `kinds` has listed (or is known not to).
    pub fn settled(&self, kinds: &[&str]) -> bool {
        kinds.iter().all(|kind| self.settled.contains(*kind))
    }

    /// The top of `owner`'s chain in `namespace`: the Deployment of a ReplicaSet, the CronJob
    /// of a Job, or `owner` itself when nothing owns it (or its owner is not known).
    pub fn top(&self, namespace: &str, owner: &Owner) -> Owner {
        let mut current = owner.clone();
        for _ in 0..MAX_OWNER_HOPS {
            match self.links.get(&(
                namespace.to_owned(),
                current.kind.clone(),
                current.name.clone(),
            )) {
                Some(next) => current = next.clone(),
                None => break,
            }
        }
        current
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

/// What can change a running workload's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Scan reports for these digests were added, replaced or removed.
    Scans(Vec<String>),
    /// Scan sources changed in a way that names no digest (a whole directory reloaded).
    AllScans,
    /// The configuration, policies, keys or trust roots changed (a new decision identity).
    Reload,
    /// An exception expired or a deprecated image's sunset passed: a time-based rule changes
    /// its answer for the units whose last verdict depended on it.
    Expiry(String),
    /// Evidence that is looked at again on a schedule, for the units whose last verdict read
    /// it: a base image's tag (`base:<name>`) or a digest's signatures and attestations
    /// (`attestations:<digest>`, re-read past the verification cache).
    Recheck(String),
    /// The periodic safety pass.
    Periodic,
}

/// The last known verdict of a unit, as far as outputs care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitVerdict {
    /// `allowed`, `denied`, `warned`, ...
    pub outcome: String,
    /// `rule@site` of every finding, sorted: a change in what was found is a change.
    pub findings: Vec<String>,
    /// What can change the answer without a pod changing: exceptions that waived a finding
    /// and sunsets to come (the keys [`Trigger::Expiry`] names), evidence looked at again on
    /// a schedule (the keys [`Trigger::Recheck`] names).
    pub depends_on: BTreeSet<String>,
}

/// One unit whose verdict changed (or was judged for the first time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictChange {
    pub unit: UnitKey,
    pub previous: Option<UnitVerdict>,
    pub current: UnitVerdict,
}

/// When each piece of evidence re-checked on a schedule is due again, by the key
/// [`Trigger::Recheck`] names. A key is due once; the judgement it triggers notes it again if
/// some unit still reads it, so evidence no running unit reads drops out by itself.
#[derive(Debug, Default)]
pub struct RecheckSchedule {
    due: BTreeMap<String, time::OffsetDateTime>,
}

impl RecheckSchedule {
    /// Schedules `key` `every` after `now`, unless it is already scheduled.
    pub fn note(&mut self, key: &str, now: time::OffsetDateTime, every: std::time::Duration) {
        if !self.due.contains_key(key) {
            self.due.insert(key.to_owned(), now + every);
        }
    }

    /// Removes and returns, in key order, the keys due at `now`.
    pub fn take_due(&mut self, now: time::OffsetDateTime) -> Vec<String> {
        let due: Vec<String> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &due {
            self.due.remove(key);
        }
        due
    }

    /// Keys scheduled.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

/// The running units with their pods and last verdicts: which units a trigger affects, and
/// which verdicts changed. Pure; the cluster watch and the engine sit outside.
#[derive(Debug, Default)]
pub struct RunningState {
    /// Pod uid → the unit it belongs to.
    pods: HashMap<String, UnitKey>,
    /// Unit → its pods' uids.
    units: BTreeMap<UnitKey, BTreeSet<String>>,
    verdicts: HashMap<UnitKey, UnitVerdict>,
}

impl RunningState {
    /// Records a pod (new, or its status changed). Returns its unit when that unit is new
    /// (never judged): only then is there anything to judge; a further replica of a judged
    /// unit shares its verdict.
    pub fn upsert_pod(&mut self, uid: &str, unit: UnitKey) -> Option<UnitKey> {
        if self.pods.get(uid) == Some(&unit) {
            return None;
        }
        self.remove_pod(uid);
        self.pods.insert(uid.to_owned(), unit.clone());
        let pods = self.units.entry(unit.clone()).or_default();
        let fresh = pods.is_empty();
        pods.insert(uid.to_owned());
        (fresh && !self.verdicts.contains_key(&unit)).then_some(unit)
    }

    /// Forgets a pod; a unit without pods is forgotten with its verdict.
    pub fn remove_pod(&mut self, uid: &str) -> Option<UnitKey> {
        let unit = self.pods.remove(uid)?;
        if let Some(pods) = self.units.get_mut(&unit) {
            pods.remove(uid);
            if pods.is_empty() {
                self.units.remove(&unit);
                self.verdicts.remove(&unit);
                return Some(unit);
            }
        }
        None
    }

    /// Keeps only the pods in `uids` (after a watch restarted with a fresh listing).
    pub fn retain_pods(&mut self, uids: &BTreeSet<String>) -> Vec<UnitKey> {
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !uids.contains(*uid))
            .cloned()
            .collect();
        gone.iter().filter_map(|uid| self.remove_pod(uid)).collect()
    }

    /// The units a trigger asks to judge again: those running a digest whose scan changed,
    /// those whose last verdict depended on what expired, or all of them.
    pub fn affected(&self, trigger: &Trigger) -> Vec<UnitKey> {
        match trigger {
            Trigger::Scans(digests) => self
                .units
                .keys()
                .filter(|unit| unit.digests.iter().any(|d| digests.contains(d)))
                .cloned()
                .collect(),
            Trigger::Expiry(key) | Trigger::Recheck(key) => self
                .units
                .keys()
                .filter(|unit| {
                    self.verdicts
                        .get(*unit)
                        .is_some_and(|v| v.depends_on.contains(key))
                })
                .cloned()
                .collect(),
            Trigger::AllScans | Trigger::Reload | Trigger::Periodic => {
                self.units.keys().cloned().collect()
            }
        }
    }

    /// Records a unit's verdict; returns the change when it differs from the last one (or is
    /// the first), `None` when nothing changed or the unit is gone meanwhile.
    pub fn record(&mut self, unit: &UnitKey, current: UnitVerdict) -> Option<VerdictChange> {
        if !self.units.contains_key(unit) {
            return None;
        }
        let previous = self.verdicts.insert(unit.clone(), current.clone());
        if previous.as_ref() == Some(&current) {
            return None;
        }
        Some(VerdictChange {
            unit: unit.clone(),
            previous,
            current,
        })
    }

    pub fn verdict(&self, unit: &UnitKey) -> Option<&UnitVerdict> {
        self.verdicts.get(unit)
    }

    /// The unit a pod belongs to now.
    pub fn unit_of_pod(&self, uid: &str) -> Option<&UnitKey> {
        self.pods.get(uid)
    }

    /// The uids of a unit's pods.
    pub fn pods_of(&self, unit: &UnitKey) -> Option<&BTreeSet<String>> {
        self.units.get(unit)
    }

    pub fn units(&self) -> impl Iterator<Item = &UnitKey> {
        self.units.keys()
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Distinct running digests across every unit.
    pub fn digest_count(&self) -> usize {
        self.units
            .keys()
            .flat_map(|u| u.digests.iter())
            .collect::<BTreeSet<_>>()
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn every_runtime_spelling_of_a_repository_digest_gives_the_digest() {
        for (written, repository) in [
            (
                format!("docker.io/library/nginx@{A}"),
                Some("docker.io/library/nginx"),
            ),
            (format!("docker-pullable://nginx@{A}"), Some("nginx")),
            (format!("quay.io/team/app@{A}"), Some("quay.io/team/app")),
            (
                format!("127.0.0.1:5000/team/app@{A}"),
                Some("127.0.0.1:5000/team/app"),
            ),
            (format!("@{A}"), None),
        ] {
            assert_eq!(
                normalise_image_id(&written),
                RunningImage::Digest {
                    repository: repository.map(str::to_owned),
                    digest: A.to_owned()
                },
                "{written}"
            );
        }
    }

    #[test]
    fn local_image_ids_are_not_taken_for_manifest_digests() {
        assert_eq!(
            normalise_image_id(&format!("docker://{A}")),
            RunningImage::LocalId(A.into())
        );
        assert_eq!(normalise_image_id(A), RunningImage::LocalId(A.into()));
        let bare = A.trim_start_matches("sha256:").to_ascii_uppercase();
        assert_eq!(normalise_image_id(&bare), RunningImage::LocalId(A.into()));
        for unknown in ["", "  ", "nginx:1.27", "nginx@sha256:short", "x@md5:abcd"] {
            assert_eq!(
                normalise_image_id(unknown),
                RunningImage::Unknown,
                "{unknown:?}"
            );
        }
        assert_eq!(RunningImage::LocalId(A.into()).digest(), None);
    }

    /// A pod as containerd reports it: init container done, app running, sidecar waiting.
    fn containerd_pod() -> Value {
        json!({
            "spec": {
                "initContainers": [{"name": "migrate", "image": "team/migrate:1"}],
                "containers": [
                    {"name": "app", "image": "127.0.0.1:5000/team/app:1.0"},
                    {"name": "sidecar", "image": "envoy:1.30"}
                ],
                "ephemeralContainers": [{"name": "debug", "image": "busybox"}]
            },
            "status": {
                "initContainerStatuses": [{"name": "migrate", "imageID": format!("docker.io/team/migrate@{B}")}],
                "containerStatuses": [
                    {"name": "app", "image": "127.0.0.1:5000/team/app:1.0", "imageID": format!("127.0.0.1:5000/team/app@{A}")},
                    {"name": "sidecar", "image": "envoy:1.30", "imageID": ""}
                ],
                "ephemeralContainerStatuses": [{"name": "debug", "imageID": format!("docker.io/library/busybox@{A}")}]
            }
        })
    }

    #[test]
    fn running_containers_pair_each_spec_site_with_its_status() {
        let found = running_containers(&containerd_pod());
        let summary: Vec<(ContainerKind, &str, Option<&str>)> = found
            .iter()
            .map(|c| (c.kind, c.name.as_str(), c.running.digest()))
            .collect();
        assert_eq!(
            summary,
            [
                (ContainerKind::InitContainer, "migrate", Some(B)),
                (ContainerKind::Container, "app", Some(A)),
                (ContainerKind::Container, "sidecar", None),
                (ContainerKind::EphemeralContainer, "debug", Some(A)),
            ]
        );
        assert_eq!(found[1].spec_image, "127.0.0.1:5000/team/app:1.0");
        let digests = RunningDigests::new(&found, Mode::Warn);
        assert_eq!(digests.digest(ContainerKind::Container, "app"), Some(A));
        assert_eq!(digests.digest(ContainerKind::Container, "sidecar"), None);
        assert_eq!(digests.digest(ContainerKind::InitContainer, "app"), None);
    }

    #[test]
    fn a_pod_without_status_runs_nothing_known_yet() {
        let found =
            running_containers(&json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].running, RunningImage::Unknown);
        assert!(running_containers(&json!("not a pod")).is_empty());
    }

    fn unit(owner: &str, digests: &[&str]) -> UnitKey {
        UnitKey {
            namespace: "shop".into(),
            owner: owner.into(),
            digests: digests.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn verdict(outcome: &str, expiries: &[&str]) -> UnitVerdict {
        UnitVerdict {
            outcome: outcome.into(),
            findings: Vec::new(),
            depends_on: expiries.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    #[test]
    fn replicas_of_a_judged_unit_need_no_judgement_of_their_own() {
        let mut state = RunningState::default();
        let web = unit("ReplicaSet/web", &[A]);
        assert_eq!(state.upsert_pod("p1", web.clone()), Some(web.clone()));
        state.record(&web, verdict("allowed", &[]));
        assert_eq!(state.upsert_pod("p2", web.clone()), None);
        assert_eq!(
            state.upsert_pod("p2", web.clone()),
            None,
            "an unchanged pod"
        );
        assert_eq!(state.pods_of(&web).map(BTreeSet::len), Some(2));
        // A replica that pulled another digest of the same tag is a unit of its own.
        let moved = unit("ReplicaSet/web", &[B]);
        assert_eq!(state.upsert_pod("p2", moved.clone()), Some(moved.clone()));
        assert_eq!(state.pods_of(&web).map(BTreeSet::len), Some(1));
        assert_eq!(state.digest_count(), 2);
    }

    #[test]
    fn a_new_report_for_a_running_digest_affects_that_workload_and_no_other() {
        let mut state = RunningState::default();
        let web = unit("ReplicaSet/web", &[A]);
        let db = unit("StatefulSet/db", &[B]);
        state.upsert_pod("p1", web.clone());
        state.upsert_pod("p2", db.clone());
        assert_eq!(
            state.affected(&Trigger::Scans(vec![A.into()])),
            std::slice::from_ref(&web)
        );
        assert!(
            state
                .affected(&Trigger::Scans(vec!["sha256:other".into()]))
                .is_empty()
        );
        assert_eq!(state.affected(&Trigger::Reload).len(), 2);
        // Its verdict changes once; the same verdict again is no change.
        assert!(state.record(&web, verdict("allowed", &[])).is_some());
        let change = state.record(&web, verdict("denied", &[])).unwrap();
        assert_eq!(change.previous.unwrap().outcome, "allowed");
        assert_eq!(change.current.outcome, "denied");
        assert_eq!(state.record(&web, verdict("denied", &[])), None);
    }

    #[test]
    fn an_expiry_affects_exactly_the_units_whose_verdict_depended_on_it() {
        let mut state = RunningState::default();
        let web = unit("ReplicaSet/web", &[A]);
        let db = unit("StatefulSet/db", &[B]);
        let job = unit("Job/nightly", &[A]);
        for (uid, u) in [("p1", &web), ("p2", &db), ("p3", &job)] {
            state.upsert_pod(uid, u.clone());
        }
        state.record(&web, verdict("allowed", &["exception:legacy-openssl"]));
        state.record(&db, verdict("allowed", &[]));
        state.record(
            &job,
            verdict("warned", &["exception:legacy-openssl", "sunset:old"]),
        );
        let affected = state.affected(&Trigger::Expiry("exception:legacy-openssl".into()));
        assert_eq!(affected, [job.clone(), web.clone()]);
        assert_eq!(state.affected(&Trigger::Expiry("sunset:old".into())), [job]);
    }

    #[test]
    fn a_recheck_is_due_once_every_period_after_it_was_first_noted() {
        let at = |minute: i64| time::OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(minute);
        let hour = std::time::Duration::from_secs(3600);
        let mut schedule = RecheckSchedule::default();
        schedule.note("base:b", at(0), hour);
        schedule.note("attestations:a", at(30), hour);
        // Noting again (every judgement does) keeps the first due time.
        schedule.note("base:b", at(59), hour);
        assert!(schedule.take_due(at(59)).is_empty());
        assert_eq!(schedule.take_due(at(60)), ["base:b"]);
        assert!(schedule.take_due(at(61)).is_empty(), "due once");
        assert_eq!(schedule.len(), 1);
        // Re-noted by the judgement the recheck triggered: due a period later.
        schedule.note("base:b", at(61), hour);
        assert_eq!(schedule.take_due(at(121)), ["attestations:a", "base:b"]);
        assert!(schedule.is_empty(), "nothing reads them any more");
    }

    #[test]
    fn a_recheck_affects_exactly_the_units_whose_verdict_read_that_evidence() {
        let mut state = RunningState::default();
        let web = unit("ReplicaSet/web", &[A]);
        let db = unit("StatefulSet/db", &[B]);
        for (uid, u) in [("p1", &web), ("p2", &db)] {
            state.upsert_pod(uid, u.clone());
        }
        state.record(&web, verdict("allowed", &["base:registry/base:3.20"]));
        state.record(&db, verdict("denied", &[&format!("attestations:{B}")]));
        assert_eq!(
            state.affected(&Trigger::Recheck("base:registry/base:3.20".into())),
            [web]
        );
        assert_eq!(
            state.affected(&Trigger::Recheck(format!("attestations:{B}"))),
            [db]
        );
        assert!(
            state
                .affected(&Trigger::Recheck("base:registry/other:1".into()))
                .is_empty()
        );
    }

    #[test]
    fn a_unit_whose_last_pod_is_gone_is_forgotten_with_its_verdict() {
        let mut state = RunningState::default();
        let web = unit("ReplicaSet/web", &[A]);
        state.upsert_pod("p1", web.clone());
        state.record(&web, verdict("denied", &[]));
        assert_eq!(state.remove_pod("p1"), Some(web.clone()));
        assert_eq!(state.verdict(&web), None);
        assert_eq!(
            state.record(&web, verdict("denied", &[])),
            None,
            "gone meanwhile"
        );
        // A watch restart keeps only the listed pods.
        state.upsert_pod("p2", web.clone());
        state.upsert_pod("p3", unit("Pod/lonely", &[]));
        let gone = state.retain_pods(&["p2".to_owned()].into());
        assert_eq!(gone, [unit("Pod/lonely", &[])]);
        assert_eq!(state.pod_count(), 1);
    }

    fn owner(kind: &str, name: &str) -> Owner {
        Owner {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn link(kind: &str, name: &str, controller: Option<Owner>) -> OwnerLink {
        OwnerLink {
            namespace: "shop".into(),
            kind: kind.into(),
            name: name.into(),
            controller,
        }
    }

    #[test]
    fn an_owner_chain_leads_from_a_replicaset_to_its_deployment_and_stops_on_a_cycle() {
        let mut chains = OwnerChains::default();
        assert!(!chains.settled(&["ReplicaSet", "Job"]));
        chains.relist(
            "ReplicaSet",
            vec![link(
                "ReplicaSet",
                "web-5b7d",
                Some(owner("Deployment", "web")),
            )],
        );
        chains.unavailable("Job");
        assert!(chains.settled(&["ReplicaSet", "Job"]));
        let replicaset = owner("ReplicaSet", "web-5b7d");
        assert_eq!(chains.top("shop", &replicaset), owner("Deployment", "web"));
        assert_eq!(chains.top("other", &replicaset), replicaset, "namespaced");
        // A malformed cycle ends after a few hops instead of looping.
        chains.apply(link(
            "Deployment",
            "web",
            Some(owner("ReplicaSet", "web-5b7d")),
        ));
        let top = chains.top("shop", &replicaset);
        assert!(top == replicaset || top == owner("Deployment", "web"));
        // A relisting replaces the kind's links; a deletion forgets one.
        chains.relist("ReplicaSet", Vec::new());
        chains.remove("shop", "Deployment", "web");
        assert_eq!(chains.top("shop", &replicaset), replicaset);
        assert!(chains.is_empty());
    }
}
