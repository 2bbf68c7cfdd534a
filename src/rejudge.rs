//! Re-judging what runs (`serve` with `rejudge`): the pods of the cluster are judged again
//! with the engine in force, by the digest each node runs (`status.containerStatuses[].imageID`)
//! — so a new vulnerability report, a reload, an expired exception or a tag that moved after
//! the pull shows up for workloads admitted long ago. Pods are watched, not polled: the running
//! units live in [`RunningState`] (pure), and only the units a change affects are judged
//! again; the periodic pass (`rejudge.interval`) is a safety net. Outputs follow changes:
//! one log line and one Event per changed verdict, PolicyReports / openreports.io Reports
//! rewritten when anything changed, metrics always. Nothing else in the cluster is changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use crate::decision::Outcome;
use crate::engine::Engine;
use crate::events::{EventRecorder, EventTarget, VerdictChange};
use crate::metrics::Metrics;
use crate::object_files::ManifestObject;
use crate::object_review::{AuditError, AuditTarget, Judged, RunningPods, group_by_controller};
use crate::policy_report::{ReportWriter, WriteSummary, build_reports};
use crate::running::{
    RunningDigests, RunningState, Trigger, UnitKey, UnitVerdict, running_containers,
};

/// How often a disabled re-judging task looks again whether a reload enabled it.
const IDLE_CHECK: Duration = Duration::from_secs(60);
/// How long the first full pass waits for the owner watches' listings after the pods'.
const OWNER_GRACE: Duration = Duration::from_secs(5);
/// How often the leader looks for a reload, a changed scan report or an expired exception.
const POLL: Duration = Duration::from_secs(1);

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassSummary {
    pub pods: usize,
    /// Units judged: one per controller (replicas share a template) or bare pod, and per set
    /// of digests its pods run.
    pub workloads: usize,
    /// Workloads by outcome (`allowed`, `denied`, `warned`, ...).
    pub by_outcome: HashMap<&'static str, usize>,
    /// Findings by (rule, mode).
    pub findings: HashMap<(String, &'static str), usize>,
    /// What writing PolicyReports did, when `rejudge.policyReports` is on.
    pub reports: Option<Result<WriteSummary, String>>,
    /// Units whose verdict changed (or were judged for the first time).
    pub changed: usize,
}

/// What re-judging needs from the running server: the engine in force (it changes on reload)
/// and the metrics it publishes to. `server::AppState` is one; re-judging never names the
/// server, so the HTTP layer and the cluster work do not depend on each other.
pub trait RejudgeHost: Send + Sync {
    fn engine(&self) -> Arc<Engine>;
    fn metrics(&self) -> &Metrics;
    /// Where running digests are recorded (`GET /inventory`), when the host keeps one.
    fn inventory(&self) -> Option<&crate::inventory::Inventory> {
        None
    }
    /// What this replica's admissions resolved each pod site to, when the host keeps it.
    fn admitted(&self) -> Option<&crate::admitted::AdmittedDigests> {
        None
    }
}

impl<T: RejudgeHost + ?Sized> RejudgeHost for Arc<T> {
    fn engine(&self) -> Arc<Engine> {
        (**self).engine()
    }
    fn metrics(&self) -> &Metrics {
        (**self).metrics()
    }
    fn inventory(&self) -> Option<&crate::inventory::Inventory> {
        (**self).inventory()
    }
    fn admitted(&self) -> Option<&crate::admitted::AdmittedDigests> {
        (**self).admitted()
    }
}

/// Where results go besides metrics and logs: report writers (PolicyReports, openreports.io
/// Reports) and the Event recorder. All optional; `serve` builds them from cluster access.
#[derive(Default)]
pub struct Outputs {
    pub policy_reports: Option<Arc<ReportWriter>>,
    pub open_reports: Option<Arc<ReportWriter>>,
    pub events: Option<Arc<EventRecorder>>,
    /// Whether the cluster serves openreports.io, asked once (a cluster without the CRD is
    /// logged once, not on every change).
    open_reports_served: tokio::sync::OnceCell<bool>,
}

impl Outputs {
    /// Every output this replica may write; `None` for those it has no access for.
    pub fn new(
        policy_reports: Option<Arc<ReportWriter>>,
        open_reports: Option<Arc<ReportWriter>>,
        events: Option<Arc<EventRecorder>>,
    ) -> Self {
        Self {
            policy_reports,
            open_reports,
            events,
            open_reports_served: tokio::sync::OnceCell::new(),
        }
    }

    /// PolicyReports only (what `pass` callers had before Events and openreports.io).
    pub fn policy_reports(writer: Option<Arc<ReportWriter>>) -> Self {
        Self {
            policy_reports: writer,
            ..Self::default()
        }
    }
}

/// A change of the running pods, from a watch (or a listing standing for one).
#[derive(Debug, Clone)]
pub enum PodChange {
    /// A pod appeared or changed (its status reports a new digest, ...).
    Applied(Value),
    /// A pod is gone, by uid.
    Deleted(String),
    /// The watch (re)started: these are all the pods there are.
    Relisted(Vec<Value>),
    /// The owner watch of a kind (ReplicaSet, Job) listed: these are all its objects' owners.
    OwnersRelisted {
        kind: String,
        owners: Vec<crate::running::OwnerLink>,
    },
    /// A ReplicaSet or Job appeared or changed owner.
    OwnerApplied(crate::running::OwnerLink),
    /// A ReplicaSet or Job is gone.
    OwnerDeleted {
        namespace: String,
        kind: String,
        name: String,
    },
    /// The owner watch of a kind cannot list (RBAC, not served): chains stay one hop.
    OwnersUnavailable(String),
}

/// The pods as a stream of changes. `ClusterPods` watches; a source without a watch returns
/// `None` and is listed on every periodic pass instead.
pub trait WatchedPods: RunningPods {
    fn watch(&self) -> Option<BoxStream<'static, PodChange>> {
        None
    }
    /// The controller kinds whose owners the watch reports (a first full pass waits a little
    /// for their listings, so its Events name Deployments rather than ReplicaSets).
    fn owner_kinds(&self) -> &'static [&'static str] {
        &[]
    }
}

impl WatchedPods for crate::object_review::ClusterPods {
    fn watch(&self) -> Option<BoxStream<'static, PodChange>> {
        Some(futures_util::stream::select(self.changes(), self.owner_changes()).boxed())
    }
    fn owner_kinds(&self) -> &'static [&'static str] {
        &crate::object_review::OWNER_KINDS
    }
}

/// One unit's last judgement, kept for reports and outputs.
#[derive(Debug, Clone)]
struct UnitRecord {
    target: AuditTarget,
    judged: Judged,
}

/// What re-judging keeps of a running unit: a sample pod (all of a unit's pods share the
/// template and the digests) and its last judgement.
#[derive(Debug)]
struct Unit {
    sample: Value,
    record: Option<UnitRecord>,
}

/// The re-judging state of one replica: the running units, a sample pod and the last
/// judgement of each, the controllers' owner chains, and what the sources looked like, so a
/// poll can tell what changed.
#[derive(Default)]
pub struct Rejudger {
    state: RunningState,
    units: HashMap<UnitKey, Unit>,
    pending: BTreeSet<UnitKey>,
    /// ReplicaSet → Deployment, Job → CronJob: what outputs name.
    owners: crate::running::OwnerChains,
    /// What this replica's admissions resolved each site to.
    admitted: Option<crate::admitted::AdmittedDigests>,
    /// The engine identity last judged with (a change is a reload).
    identity: Option<String>,
    expired: BTreeSet<String>,
    /// Per running digest: the scan report seen last (`scanned_at` and source).
    scans: HashMap<String, Option<(i64, String)>>,
    /// Units judged since start (each one engine review).
    evaluations: u64,
    /// Base images and attested digests the units' verdicts read, and when each is due again.
    rechecks: crate::running::RecheckSchedule,
    /// Digests whose cached signatures and attestations are dropped before the next judgement.
    refresh: BTreeSet<String>,
}

/// The prefixes of [`Trigger::Recheck`] keys.
const RECHECK_BASE: &str = "base:";
const RECHECK_ATTESTATIONS: &str = "attestations:";

/// The unit a pod belongs to, and its uid.
fn unit_of(pod: &Value) -> Option<(String, UnitKey)> {
    let text = |pointer: &str| pod.pointer(pointer).and_then(Value::as_str);
    let namespace = text("/metadata/namespace").unwrap_or_default().to_owned();
    let name = text("/metadata/name")?;
    let uid = text("/metadata/uid").map_or_else(|| format!("{namespace}/{name}"), str::to_owned);
    let owner = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|owner| {
            Some(format!(
                "{}/{}",
                owner.get("kind")?.as_str()?,
                owner.get("name")?.as_str()?
            ))
        })
        .unwrap_or_else(|| format!("Pod/{name}"));
    let digests = running_containers(pod)
        .iter()
        .map(|c| c.running.digest().unwrap_or("").to_owned())
        .collect();
    Some((
        uid,
        UnitKey {
            namespace,
            owner,
            digests,
        },
    ))
}

/// The pod as the engine reads it: list and watch items carry no type.
fn typed(mut pod: Value) -> Value {
    if let Value::Object(map) = &mut pod {
        map.entry("apiVersion").or_insert_with(|| "v1".into());
        map.entry("kind").or_insert_with(|| "Pod".into());
    }
    pod
}

impl Rejudger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compares each running site with what this replica's admissions resolved it to.
    pub fn with_admitted(mut self, admitted: Option<crate::admitted::AdmittedDigests>) -> Self {
        self.admitted = admitted;
        self
    }

    /// Applies a change of the running pods (or of their controllers' owners); units never
    /// judged become pending.
    pub fn apply(&mut self, change: PodChange) {
        match change {
            PodChange::Applied(pod) => self.upsert(pod),
            PodChange::Deleted(uid) => {
                if let Some(unit) = self.state.remove_pod(&uid) {
                    self.forget(&unit);
                }
            }
            PodChange::Relisted(pods) => {
                let mut uids = BTreeSet::new();
                for pod in pods {
                    if let Some((uid, _)) = unit_of(&pod) {
                        uids.insert(uid);
                    }
                    self.upsert(pod);
                }
                for unit in self.state.retain_pods(&uids) {
                    self.forget(&unit);
                }
            }
            PodChange::OwnersRelisted { kind, owners } => self.owners.relist(&kind, owners),
            PodChange::OwnerApplied(link) => self.owners.apply(link),
            PodChange::OwnerDeleted {
                namespace,
                kind,
                name,
            } => self.owners.remove(&namespace, &kind, &name),
            PodChange::OwnersUnavailable(kind) => self.owners.unavailable(&kind),
        }
    }

    fn upsert(&mut self, pod: Value) {
        let Some((uid, unit)) = unit_of(&pod) else {
            return;
        };
        // The unit the pod belonged to before (its status now reports another digest).
        let left = self
            .state
            .unit_of_pod(&uid)
            .filter(|before| **before != unit)
            .cloned();
        if let Some(fresh) = self.state.upsert_pod(&uid, unit.clone()) {
            self.pending.insert(fresh);
        }
        if let Some(left) = left {
            match self.state.pods_of(&left).map(BTreeSet::len) {
                None => self.forget(&left),
                Some(count) => {
                    if let Some(record) = self.units.get_mut(&left).and_then(|u| u.record.as_mut())
                    {
                        record.target.count = count;
                    }
                }
            }
        }
        let count = self.state.pods_of(&unit).map_or(1, BTreeSet::len);
        let entry = self.units.entry(unit).or_insert_with(|| Unit {
            sample: typed(pod),
            record: None,
        });
        // A replica more or fewer changes the counts reports show, not the verdict.
        if let Some(record) = &mut entry.record {
            record.target.count = count;
        }
    }

    fn forget(&mut self, unit: &UnitKey) {
        self.units.remove(unit);
        self.pending.remove(unit);
    }

    /// Whether the owner watches of `kinds` have listed (or cannot).
    pub fn owners_settled(&self, kinds: &[&str]) -> bool {
        self.owners.settled(kinds)
    }

    /// Units judged since this state was made (one engine review each): replicas share
    /// their unit's judgement, and evidence is gathered once per digest (cached by digest).
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// Marks the units `trigger` affects for judging.
    pub fn trigger(&mut self, trigger: &Trigger) {
        self.pending.extend(self.state.affected(trigger));
    }

    /// Looks at the sources for what changed since the last look: a new engine (reload,
    /// trust root, policies), exceptions that expired, scan reports of running digests added,
    /// replaced or removed. Returns the triggers found (and marks their units).
    pub fn poll(&mut self, engine: &Engine) -> Vec<Trigger> {
        let mut triggers = Vec::new();
        if self.identity.as_deref() != Some(engine.identity()) {
            if self.identity.is_some() {
                triggers.push(Trigger::Reload);
            }
            self.identity = Some(engine.identity().to_owned());
        }
        let expired: BTreeSet<String> = engine
            .expired_exceptions()
            .iter()
            .map(|e| format!("exception:{}", e.name))
            .collect();
        // A deprecated image's sunset turns its warning into a finding in the configured mode:
        // the units with a deprecated-image finding recorded the keys of sunsets to come.
        let now = engine.clock().now();
        let expired: BTreeSet<String> = expired
            .into_iter()
            .chain(sunset_keys(engine, |sunset| now >= sunset))
            .collect();
        for key in expired.difference(&self.expired) {
            triggers.push(Trigger::Expiry(key.clone()));
        }
        self.expired = expired;
        for key in self.rechecks.take_due(now) {
            if let Some(digest) = key.strip_prefix(RECHECK_ATTESTATIONS) {
                self.refresh.insert(digest.to_owned());
            }
            triggers.push(Trigger::Recheck(key));
        }
        let digests: BTreeSet<String> = self
            .state
            .units()
            .flat_map(|u| u.digests.iter())
            .filter(|d| !d.is_empty())
            .cloned()
            .collect();
        let mut changed = Vec::new();
        for digest in &digests {
            let now = engine
                .scan_lookup(digest)
                .map(|r| (r.scanned_at.unix_timestamp(), r.source.clone()));
            match self.scans.insert(digest.clone(), now.clone()) {
                Some(seen) if seen != now => changed.push(digest.clone()),
                _ => {}
            }
        }
        self.scans.retain(|digest, _| digests.contains(digest));
        if !changed.is_empty() {
            triggers.push(Trigger::Scans(changed));
        }
        for trigger in &triggers {
            self.trigger(trigger);
        }
        triggers
    }

    /// Judges every pending unit with `engine`, each by the digests its pods run, and
    /// returns the units whose verdict changed, with their judgement.
    pub async fn judge_pending(&mut self, engine: &Engine) -> Vec<(VerdictChangeOf, Judged)> {
        self.judge_pending_into(engine, None).await
    }

    /// [`Rejudger::judge_pending`], recording every judged unit's running digests in
    /// `inventory` (workload: the unit's label).
    pub async fn judge_pending_into(
        &mut self,
        engine: &Engine,
        inventory: Option<&crate::inventory::Inventory>,
    ) -> Vec<(VerdictChangeOf, Judged)> {
        let moved_tag = engine
            .config()
            .rejudge
            .as_ref()
            .map_or(crate::config::Mode::Warn, |r| r.moved_tag);
        let (base_every, attestations_every) = engine.config().rejudge.as_ref().map_or_else(
            || {
                let hour = std::time::Duration::from_secs(3600);
                (hour, hour)
            },
            |r| (r.base_image_check.0, r.attestation_refresh.0),
        );
        if !self.refresh.is_empty() {
            let digests: Vec<String> = std::mem::take(&mut self.refresh).into_iter().collect();
            engine.forget_signatures(&digests).await;
        }
        let pending = std::mem::take(&mut self.pending);
        let mut changes = Vec::new();
        for (index, unit) in pending.into_iter().enumerate() {
            let Some(pod) = self.units.get(&unit).map(|u| &u.sample) else {
                continue;
            };
            let containers = running_containers(pod);
            let mut running = RunningDigests::new(&containers, moved_tag);
            if let Some(admitted) = &self.admitted {
                for container in &containers {
                    let site = crate::admitted::AdmittedSite {
                        namespace: unit.namespace.clone(),
                        owner: unit.owner.clone(),
                        kind: container.kind,
                        container: container.name.clone(),
                    };
                    if let Some(digest) = admitted.get(&site) {
                        running.admitted_at(container.kind, &container.name, digest);
                    }
                }
            }
            self.evaluations += 1;
            let Some((target, judged, waived, subject)) = judge_unit(
                engine,
                pod,
                &running,
                index,
                &self.state,
                &self.owners,
                &unit,
            )
            .await
            else {
                continue;
            };
            if let (Some(inventory), Some((subject, verdict))) = (inventory, &subject) {
                inventory.observe(
                    subject,
                    verdict,
                    &target.label,
                    engine.identity(),
                    engine.clock().now(),
                );
            }
            let mut waived = waived;
            if let Some((subject, _)) = &subject {
                let now = engine.clock().now();
                for key in recheck_keys(subject) {
                    let every = if key.starts_with(RECHECK_BASE) {
                        base_every
                    } else {
                        attestations_every
                    };
                    self.rechecks.note(&key, now, every);
                    waived.insert(key);
                }
            }
            if judged
                .findings
                .iter()
                .any(|f| f.rule == crate::policy::lifecycle::RULE_DEPRECATED_IMAGE)
            {
                let now = engine.clock().now();
                waived.extend(sunset_keys(engine, |sunset| now < sunset));
            }
            let verdict = unit_verdict(&judged, waived);
            if let Some(change) = self.state.record(&unit, verdict) {
                changes.push((
                    VerdictChangeOf {
                        previous: change.previous.map(|v| v.outcome),
                        target: target.clone(),
                    },
                    judged.clone(),
                ));
            }
            if let Some(entry) = self.units.get_mut(&unit) {
                entry.record = Some(UnitRecord { target, judged });
            }
        }
        changes
    }

    /// Every unit's last judgement, for reports and metrics.
    fn judged(&self) -> (Vec<AuditTarget>, Vec<Judged>) {
        let mut records: Vec<(&UnitKey, &UnitRecord)> = self
            .units
            .iter()
            .filter_map(|(key, unit)| Some((key, unit.record.as_ref()?)))
            .collect();
        records.sort_by(|a, b| a.0.cmp(b.0));
        records
            .into_iter()
            .map(|(_, r)| (r.target.clone(), r.judged.clone()))
            .unzip()
    }

    pub fn pods(&self) -> usize {
        self.state.pod_count()
    }

    /// Whether some unit waits to be judged.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Units judged at least once.
    pub fn units(&self) -> usize {
        self.units.values().filter(|u| u.record.is_some()).count()
    }

    /// Distinct running digests.
    pub fn digests(&self) -> usize {
        self.state.digest_count()
    }
}

/// What a judgement read that is looked at again on a schedule: the base image each site
/// declares (when an image policy judged its freshness), and the digest of each site whose
/// vulnerabilities were judged with signatures read (a rescan may be attested later).
fn recheck_keys(subject: &crate::subject::ReviewSubject) -> BTreeSet<String> {
    use crate::policy::lifecycle::BaseImageState;
    let mut keys = BTreeSet::new();
    for entry in &subject.images {
        match &entry.lifecycle.base {
            BaseImageState::Current { name, .. }
            | BaseImageState::Moved { name, .. }
            | BaseImageState::Unresolved { name, .. } => {
                keys.insert(format!("{RECHECK_BASE}{name}"));
            }
            BaseImageState::NotChecked | BaseImageState::NotAnnotated => {}
        }
        let scanned = !matches!(entry.scan, crate::policy::ScanState::NotRequested);
        if let Some(Ok(evidence)) = &entry.evidence
            && scanned
            && !evidence.verifications.is_empty()
            && let Some(digest) = &evidence.digest
        {
            keys.insert(format!("{RECHECK_ATTESTATIONS}{digest}"));
        }
    }
    keys
}

/// The keys (`sunset:<n>`, by `deprecatedImages[]` index) of the sunsets `when` selects.
fn sunset_keys(
    engine: &Engine,
    when: impl Fn(time::OffsetDateTime) -> bool,
) -> impl Iterator<Item = String> {
    engine
        .config()
        .deprecated_images
        .iter()
        .enumerate()
        .filter(|(_, deprecated)| when(deprecated.sunset.at))
        .map(|(index, _)| format!("sunset:{index}"))
        .collect::<Vec<_>>()
        .into_iter()
}

/// A unit whose verdict changed: what outputs name.
#[derive(Debug, Clone)]
pub struct VerdictChangeOf {
    pub previous: Option<String>,
    pub target: AuditTarget,
}

/// Judges one unit's sample pod as a CREATE (a dry run), by its running digests. Returns the
/// target (for reports), the judgement and the exceptions that waived its findings.
async fn judge_unit(
    engine: &Engine,
    pod: &Value,
    running: &RunningDigests,
    index: usize,
    state: &RunningState,
    owners: &crate::running::OwnerChains,
    unit: &UnitKey,
) -> Option<(AuditTarget, Judged, BTreeSet<String>, Option<Observation>)> {
    let object = crate::object_files::from_value(pod.clone(), "cluster")
        .ok()?
        .into_iter()
        .next()?;
    let mut target: AuditTarget = group_by_controller(vec![object.clone()])
        .into_iter()
        .next()?;
    target.count = state.pods_of(unit).map_or(1, BTreeSet::len);
    if let Some(owner) = target.controller.take() {
        // Name the workload people manage: the Deployment of a ReplicaSet, the CronJob of a
        // Job (what the owner watch knows), with the immediate controller in the label.
        let direct = crate::running::Owner {
            api_version: owner.api_version,
            kind: owner.kind,
            name: owner.name,
            uid: owner.uid,
        };
        let top = owners.top(&object.namespace, &direct);
        let pods = if target.count == 1 { "pod" } else { "pods" };
        let via = if top == direct {
            String::new()
        } else {
            format!(" via {} {}", direct.kind, direct.name)
        };
        target.label = format!(
            "{} ({} {pods} of {} {}/{}{via})",
            object.display(),
            target.count,
            top.kind,
            object.namespace,
            top.name
        );
        target.controller = Some(crate::object_review::OwnerRef {
            api_version: top.api_version,
            kind: top.kind,
            name: top.name,
            uid: top.uid,
        });
    }
    let (judged, waived, observed) = judge_object(engine, &object, running, index).await;
    Some((target, judged, waived, observed))
}

/// What a judgement was decided on, for the inventory.
type Observation = (Arc<crate::subject::ReviewSubject>, crate::decision::Verdict);

async fn judge_object(
    engine: &Engine,
    object: &ManifestObject,
    running: &RunningDigests,
    index: usize,
) -> (Judged, BTreeSet<String>, Option<Observation>) {
    let request = match object.as_admission_request(&format!("portcullis-rejudge-{index}")) {
        Ok(request) => request,
        Err(err) => {
            // Fail closed: a pod that cannot be read is reported, never silently allowed.
            return (
                Judged {
                    origin: object.origin.clone(),
                    object: object.display(),
                    allowed: false,
                    outcome: Outcome::ErrorDenied,
                    message: Some(format!("the pod cannot be judged: {err}")),
                    warnings: Vec::new(),
                    findings: Vec::new(),
                },
                BTreeSet::new(),
                None,
            );
        }
    };
    let deadline = tokio::time::Instant::now() + engine.budget(None);
    let observed = engine
        .review_observed(
            &request,
            deadline,
            crate::evidence::Priority::Background,
            Some(running),
        )
        .await;
    let observation = observed
        .subject
        .map(|subject| (subject, observed.verdict.clone()));
    let verdict = observed.verdict;
    let waived = verdict
        .audit_annotations
        .get(crate::decision::annotation::WAIVERS)
        .and_then(|text| serde_json::from_str::<Vec<Value>>(text).ok())
        .into_iter()
        .flatten()
        .filter_map(|w| Some(format!("exception:{}", w.get("exception")?.as_str()?)))
        .collect();
    (
        Judged {
            origin: object.origin.clone(),
            object: object.display(),
            allowed: verdict.allowed,
            outcome: verdict.outcome,
            message: verdict.message,
            warnings: verdict.warnings,
            findings: verdict.findings,
        },
        waived,
        observation,
    )
}

/// What of a judgement counts as "the verdict changed": the outcome and which rule, in which
/// mode, found something at which site — not the finding's text, which carries ages ("scanned
/// 11d ago") that would make every day a change and every change an Event.
fn unit_verdict(judged: &Judged, depends_on: BTreeSet<String>) -> UnitVerdict {
    let mut findings: Vec<String> = judged
        .findings
        .iter()
        .map(|f| {
            let site = match &f.subject {
                crate::policy::Subject::Container {
                    container, image, ..
                } => format!("{container}={image}"),
                crate::policy::Subject::Pod => "pod".to_owned(),
            };
            format!("{}@{}:{site}", f.rule, f.mode.as_str())
        })
        .collect();
    findings.sort();
    findings.dedup();
    UnitVerdict {
        outcome: judged.outcome.as_str().to_owned(),
        findings,
        depends_on,
    }
}

/// The object an Event is about: the pods' controller, or the bare pod.
fn event_target(target: &AuditTarget) -> EventTarget {
    match &target.controller {
        Some(owner) => EventTarget {
            api_version: owner.api_version.clone(),
            kind: owner.kind.clone(),
            namespace: target.object.namespace.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
        },
        None => EventTarget {
            api_version: "v1".into(),
            kind: target.object.kind.clone(),
            namespace: target.object.namespace.clone(),
            name: target.object.name.clone(),
            uid: target
                .object
                .object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        },
    }
}

/// Publishes the state after a round: metrics always; for each change one log line and (with
/// `rejudge.events`) an Event; reports rewritten when anything changed or `full` (a periodic
/// pass rewrites them, so a report deleted by hand comes back).
async fn publish(
    state: &(impl RejudgeHost + ?Sized),
    rejudger: &Rejudger,
    changes: &[(VerdictChangeOf, Judged)],
    outputs: &Outputs,
    full: bool,
) -> PassSummary {
    let engine = state.engine();
    let (targets, judged) = rejudger.judged();
    let mut summary = PassSummary {
        pods: rejudger.pods(),
        workloads: targets.len(),
        changed: changes.len(),
        ..PassSummary::default()
    };
    for result in &judged {
        *summary
            .by_outcome
            .entry(result.outcome.as_str())
            .or_default() += 1;
        for finding in &result.findings {
            *summary
                .findings
                .entry((finding.rule.clone(), finding.mode.as_str()))
                .or_default() += 1;
        }
    }
    let settings = engine.config().rejudge.clone();
    for (change, result) in changes {
        let rules: Vec<String> = result.findings.iter().map(|f| f.rule.clone()).collect();
        // One line per change (never per pass): the first judgement of a clean unit is quiet.
        let worth_logging = change.previous.is_some() || result.outcome != Outcome::Allowed;
        if worth_logging {
            tracing::warn!(
                workload = %change.target.label,
                previous = change.previous.as_deref().unwrap_or("unjudged"),
                now = result.outcome.as_str(),
                rules = %rules.join(","),
                message = result.message.as_deref().unwrap_or_default(),
                "a running workload's verdict changed"
            );
        }
        let events_on = settings.as_ref().is_some_and(|s| s.events);
        if let (Some(recorder), true) = (&outputs.events, events_on) {
            if let Some(settings) = &settings {
                recorder.set_per_minute(settings.events_per_minute);
            }
            let previous = change.previous.as_deref().and_then(outcome_named);
            // A unit judged the first time and allowed is no news.
            if previous.is_none() && result.outcome == Outcome::Allowed {
                continue;
            }
            let event = VerdictChange {
                target: event_target(&change.target),
                previous,
                current: result.outcome,
                rules,
                message: result
                    .message
                    .clone()
                    .or_else(|| result.warnings.first().cloned())
                    .unwrap_or_else(|| format!("{} now", result.outcome.as_str())),
                identity: engine.identity().to_owned(),
            };
            match recorder.record(&event).await {
                Ok(recorded) => state.metrics().record_rejudge_event(recorded.as_str()),
                Err(err) => {
                    state.metrics().record_rejudge_event("failed");
                    tracing::error!(error = %err, "cannot record the Event");
                }
            }
        }
    }
    state
        .metrics()
        .record_running(&summary.by_outcome, &summary.findings);
    let mut by_namespace: HashMap<(String, String, &'static str), usize> = HashMap::new();
    for (target, result) in targets.iter().zip(&judged) {
        for finding in &result.findings {
            *by_namespace
                .entry((
                    target.object.namespace.clone(),
                    finding.rule.clone(),
                    finding.mode.as_str(),
                ))
                .or_default() += 1;
        }
    }
    state.metrics().record_running_by_namespace(&by_namespace);
    let anything = full || !changes.is_empty();
    let policy_reports = settings.as_ref().is_some_and(|s| s.policy_reports);
    let open_reports = settings.as_ref().is_some_and(|s| s.open_reports);
    if anything && (policy_reports || open_reports) {
        let built = build_reports(&targets, &judged, engine.clock().now());
        if policy_reports {
            summary.reports = Some(match &outputs.policy_reports {
                Some(writer) => write_reports(state, writer, &built).await,
                None => Err("no cluster access to write PolicyReports".to_owned()),
            });
        }
        if open_reports && let Some(writer) = &outputs.open_reports {
            let served = outputs
                .open_reports_served
                .get_or_init(|| async {
                    match writer.is_served().await {
                        Ok(true) => true,
                        Ok(false) => {
                            tracing::warn!(
                                "rejudge.openReports is on, but the cluster does not serve \
                                 openreports.io/v1alpha1 (install the openreports.io CRDs and \
                                 restart): no Reports are written"
                            );
                            false
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "cannot tell whether the cluster serves openreports.io; no Reports are written");
                            false
                        }
                    }
                })
                .await;
            if *served {
                // A failure is logged and counted in write_reports; PolicyReports' result
                // stays the summary's.
                let _ = write_reports(state, writer, &built).await;
            }
        }
    }
    summary
}

async fn write_reports(
    state: &(impl RejudgeHost + ?Sized),
    writer: &ReportWriter,
    built: &std::collections::BTreeMap<String, Value>,
) -> Result<WriteSummary, String> {
    let written = writer.write(built).await.map_err(|err| err.to_string());
    state.metrics().record_policy_report_write(written.is_ok());
    if let Err(err) = &written {
        tracing::error!(error = %err, "cannot write reports");
    }
    written
}

fn outcome_named(name: &str) -> Option<Outcome> {
    [
        Outcome::Allowed,
        Outcome::Denied,
        Outcome::Warned,
        Outcome::Audited,
        Outcome::ErrorDenied,
        Outcome::ErrorAllowed,
        Outcome::Skipped,
    ]
    .into_iter()
    .find(|o| o.as_str() == name)
}

/// One full pass: lists every running pod, judges every unit with the engine in force, and
/// publishes the result (metrics and logs always, reports when configured). A report that
/// cannot be written is logged and counted; it does not fail the pass.
pub async fn pass(
    state: &(impl RejudgeHost + ?Sized),
    pods: &dyn RunningPods,
    reports: Option<&ReportWriter>,
) -> Result<PassSummary, AuditError> {
    let mut rejudger = Rejudger::new().with_admitted(state.admitted().cloned());
    let outputs = Outputs::policy_reports(reports.map(|w| Arc::new(w.clone())));
    full_pass(state, Some(pods), &mut rejudger, &outputs).await
}

/// Judges every unit, after listing the pods when `pods` is given (a fresh listing replaces
/// the state's pods; with a watch running, the watch keeps them and nothing is listed).
async fn full_pass(
    state: &(impl RejudgeHost + ?Sized),
    pods: Option<&dyn RunningPods>,
    rejudger: &mut Rejudger,
    outputs: &Outputs,
) -> Result<PassSummary, AuditError> {
    if let Some(pods) = pods {
        let listed = pods.list().await?;
        rejudger.apply(PodChange::Relisted(listed));
    }
    let engine = state.engine();
    rejudger.poll(&engine);
    rejudger.trigger(&Trigger::Periodic);
    let changes = rejudger
        .judge_pending_into(&engine, state.inventory())
        .await;
    let summary = publish(state, rejudger, &changes, outputs, true).await;
    state.metrics().record_rejudge_pass();
    Ok(summary)
}

/// Re-judges what runs until the task is aborted, with the configuration in force (re-read
/// on every round, so a reload can enable, disable or retime it).
///
/// While this replica leads (or leader election is off): a full pass at once, then pod
/// changes from the watch, and every second a look for a reload, a changed scan report or an
/// expired exception; changes are collected for `rejudge.settle` and judged together, only
/// for the units they affect. Every `rejudge.interval` a full pass relists and re-judges
/// everything. A replica that stops leading withdraws its running-workload gauges, so only
/// the leader's figures are exported.
pub fn spawn(
    state: Arc<dyn RejudgeHost>,
    pods: Arc<dyn WatchedPods>,
    mut leading: Option<tokio::sync::watch::Receiver<bool>>,
    outputs: Outputs,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rejudger = Rejudger::new().with_admitted(state.admitted().cloned());
        // Kept across passes while this replica leads: the watch's own listing and events
        // keep the pods, so a full pass lists nothing more.
        let mut watch: Option<BoxStream<'static, PodChange>> = None;
        // Whether the watch has delivered its listing (until then a full pass would judge
        // an empty cluster).
        let mut listed = false;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(settings) = state.engine().config().rejudge.clone() else {
                tokio::time::sleep(IDLE_CHECK).await;
                continue;
            };
            let interval = settings.interval.0;
            let gated = settings.leader_election;
            if gated
                && let Some(leading) = leading.as_mut()
                && !*leading.borrow_and_update()
            {
                state.metrics().set_rejudge_leader(false);
                // A follower keeps no state: the new leader judges everything at once.
                rejudger = Rejudger::new().with_admitted(state.admitted().cloned());
                watch = None;
                let waited = tokio::time::timeout(interval.min(IDLE_CHECK), leading.changed());
                if let Ok(Err(_elector_gone)) = waited.await {
                    // Never spin: without an elector this replica stays a follower.
                    tokio::time::sleep(IDLE_CHECK).await;
                }
                continue;
            }
            state.metrics().set_rejudge_leader(true);
            if watch.is_none() {
                watch = pods.watch();
                listed = false;
            }
            // A full pass needs the watch's first listing: judging an empty state would
            // prune every report of the cluster. Wait for it (within the interval).
            if !listed && let Some(stream) = watch.as_mut() {
                let first_listing = async {
                    while let Some(change) = stream.next().await {
                        let relisted = matches!(change, PodChange::Relisted(_));
                        rejudger.apply(change);
                        if relisted {
                            return true;
                        }
                    }
                    false
                };
                match tokio::time::timeout(interval.min(IDLE_CHECK), first_listing).await {
                    Ok(true) => {
                        listed = true;
                        // The owners' listings are worth a short wait (Events then name the
                        // Deployment), never the pass: a slow owner watch only costs names.
                        let kinds = pods.owner_kinds();
                        let owners = async {
                            while !rejudger.owners_settled(kinds) {
                                match stream.next().await {
                                    Some(change) => rejudger.apply(change),
                                    None => break,
                                }
                            }
                        };
                        let _ = tokio::time::timeout(OWNER_GRACE, owners).await;
                    }
                    Ok(false) | Err(_) => {
                        state.metrics().record_rejudge_failure();
                        tracing::error!(
                            "the pod watch has not listed the pods yet (is the API server \
                             reachable, and may portcullis list and watch pods?); retrying"
                        );
                        watch = None;
                        // Never spin on a watch that ends at once.
                        tokio::time::sleep(POLL).await;
                        continue;
                    }
                }
            }
            // Without a watch, every full pass lists the pods.
            let list = watch.is_none().then_some(pods.as_ref() as &dyn RunningPods);
            match full_pass(&state, list, &mut rejudger, &outputs).await {
                Ok(summary) => tracing::info!(
                    pods = summary.pods,
                    workloads = summary.workloads,
                    digests = rejudger.digests(),
                    changed = summary.changed,
                    denied = summary.by_outcome.get("denied").copied().unwrap_or(0),
                    "re-judged running workloads"
                ),
                Err(err) => {
                    state.metrics().record_rejudge_failure();
                    tracing::error!(error = %err, "cannot re-judge running workloads");
                }
            }
            // Between full passes: follow changes until the interval ends or leadership is lost.
            let until = tokio::time::Instant::now() + interval;
            let mut lost = false;
            let mut elector_gone = false;
            loop {
                let settle = state
                    .engine()
                    .config()
                    .rejudge
                    .as_ref()
                    .map_or(Duration::from_secs(2), |r| r.settle.0);
                let leadership = async {
                    match leading.as_mut().filter(|_| gated) {
                        Some(leading) => leading.wait_for(|l| !*l).await.is_err(),
                        None => std::future::pending::<bool>().await,
                    }
                };
                let next_change = async {
                    match watch.as_mut() {
                        Some(stream) => stream.next().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    gone = leadership, if !elector_gone => {
                        // A closed elector keeps the interval (never spin); a lost Lease ends
                        // this replica's work now.
                        if gone { elector_gone = true; continue; }
                        lost = true;
                        break;
                    }
                    change = next_change => match change {
                        Some(change) => rejudger.apply(change),
                        None => {
                            tracing::warn!("the pod watch ended; it is restarted");
                            tokio::time::sleep(POLL).await;
                            watch = pods.watch();
                        }
                    },
                    // An interval, not a sleep per iteration: a busy pod watch must never
                    // starve the look for new reports and reloads.
                    _ = poll.tick() => {
                        let engine = state.engine();
                        if engine.config().rejudge.is_none() {
                            break;
                        }
                        let triggers = rejudger.poll(&engine);
                        if !triggers.is_empty() {
                            tracing::debug!(?triggers, "re-judging what the changes affect");
                        }
                    }
                }
                if rejudger.has_pending() {
                    // Let a burst settle (a rollout's pods, a directory of reports), then
                    // judge once.
                    tokio::time::sleep(
                        settle.min(until.saturating_duration_since(tokio::time::Instant::now())),
                    )
                    .await;
                    let engine = state.engine();
                    rejudger.poll(&engine);
                    let changes = rejudger
                        .judge_pending_into(&engine, state.inventory())
                        .await;
                    if !changes.is_empty() {
                        let summary = publish(&state, &rejudger, &changes, &outputs, false).await;
                        tracing::info!(
                            changed = summary.changed,
                            workloads = summary.workloads,
                            "re-judged what changed"
                        );
                    }
                }
            }
            if lost {
                rejudger = Rejudger::new().with_admitted(state.admitted().cloned());
                watch = None;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::policy::{Finding, Subject};
    use crate::workload::ContainerKind;

    fn judged(found: &str, mode: Mode) -> Judged {
        Judged {
            origin: "cluster".into(),
            object: "Pod shop/web-1".into(),
            allowed: mode != Mode::Enforce,
            outcome: if mode == Mode::Enforce {
                Outcome::Denied
            } else {
                Outcome::Warned
            },
            message: None,
            warnings: Vec::new(),
            findings: vec![Finding {
                rule: "vulnerability".into(),
                subject: Subject::Container {
                    container: "app".into(),
                    kind: ContainerKind::Container,
                    image: "team/app:1.0".into(),
                },
                found: found.into(),
                fix: "rebuild".into(),
                mode,
            }],
        }
    }

    #[test]
    fn a_finding_whose_text_only_ages_is_no_change_but_another_mode_is() {
        let today = unit_verdict(&judged("scanned 11d ago", Mode::Enforce), BTreeSet::new());
        let tomorrow = unit_verdict(&judged("scanned 12d ago", Mode::Enforce), BTreeSet::new());
        assert_eq!(today, tomorrow);
        let warned = unit_verdict(&judged("scanned 12d ago", Mode::Warn), BTreeSet::new());
        assert_ne!(today, warned);
    }
}
