//! Judging Kubernetes objects outside admission — `portcullis audit`, `check` and re-judging:
//! what already runs, judged as if it were admitted now — from the live
//! cluster (through the narrow [`RunningPods`] seam) or from a `kubectl get pods -A -o json`
//! dump. Replicas of one controller are judged once, since they share one pod template.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::decision::Outcome;
use crate::engine::Engine;
use crate::inventory::Inventory;
use crate::object_files::{self, ManifestError, ManifestObject};
use crate::policy::Finding;

/// Pods are listed in pages of this many, so a large cluster is never one huge response.
const PAGE_SIZE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{origin}: cannot be judged: {message}")]
    Judge { origin: String, message: String },
    #[error(
        "cannot list pods in the cluster: {0} (or audit a dump: kubectl get pods -A -o json > pods.json; portcullis audit --from-file pods.json)"
    )]
    List(#[source] kube::Error),
    #[error("cannot encode pod {name}: {message}")]
    Encode { name: String, message: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "{why} after {waited} (is the Trivy Operator installed, and may this user list \
         vulnerabilityreports?); raise --sources-timeout or turn scans.trivyOperator off"
    )]
    SourcesTimeout { waited: String, why: String },
}

/// Waits until the engine's sources have listed what they read from the cluster, so a
/// one-shot audit never reports images as unscanned only because it looked too early.
pub async fn wait_for_sources(
    engine: &Engine,
    timeout: std::time::Duration,
) -> Result<(), AuditError> {
    let started = tokio::time::Instant::now();
    loop {
        let Some(why) = engine.pending() else {
            return Ok(());
        };
        if started.elapsed() >= timeout {
            return Err(AuditError::SourcesTimeout {
                waited: humantime::format_duration(timeout).to_string(),
                why,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The boxed future [`RunningPods::list`] returns, so sources can be trait objects.
pub type PodsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Value>, AuditError>> + Send + 'a>>;

/// Lists the pods that run now, as JSON objects with `apiVersion` and `kind`.
pub trait RunningPods: Send + Sync {
    fn list(&self) -> PodsFuture<'_>;
}

/// Every pod of every namespace, through the Kubernetes API (`list` on `pods`).
pub struct ClusterPods {
    client: kube::Client,
}

impl ClusterPods {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl RunningPods for ClusterPods {
    fn list(&self) -> PodsFuture<'_> {
        Box::pin(async move {
            let api: Api<Pod> = Api::all(self.client.clone());
            let mut pods = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut params = ListParams::default().limit(PAGE_SIZE);
                if let Some(token) = &token {
                    params = params.continue_token(token);
                }
                let page = api.list(&params).await.map_err(AuditError::List)?;
                for pod in page.items {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let mut value =
                        serde_json::to_value(&pod).map_err(|err| AuditError::Encode {
                            name,
                            message: err.to_string(),
                        })?;
                    // List items carry no type; the engine needs it to find the pod spec.
                    if let Value::Object(map) = &mut value {
                        map.insert("apiVersion".into(), "v1".into());
                        map.insert("kind".into(), "Pod".into());
                    }
                    pods.push(value);
                }
                token = page.metadata.continue_.filter(|t| !t.is_empty());
                if token.is_none() {
                    return Ok(pods);
                }
            }
        })
    }
}

impl ClusterPods {
    /// Every pod of every namespace as a stream of changes (kube-runtime's watcher: a listing
    /// first, then watch events; on a lost watch it backs off, relists and goes on, and a
    /// relisting replaces what re-judging knows). Errors are logged; the stream goes on.
    pub fn changes(&self) -> futures_util::stream::BoxStream<'static, crate::rejudge::PodChange> {
        use futures_util::StreamExt;
        use kube::runtime::WatchStreamExt;
        use kube::runtime::watcher::{self, Event};

        use crate::rejudge::PodChange;
        let api: Api<Pod> = Api::all(self.client.clone());
        let encode = |pod: Pod| serde_json::to_value(&pod).ok();
        let mut listing: Vec<Value> = Vec::new();
        watcher::watcher(api, watcher::Config::default().page_size(PAGE_SIZE))
            .default_backoff()
            .filter_map(move |event| {
                let change = match event {
                    Ok(Event::Init) => {
                        listing.clear();
                        None
                    }
                    Ok(Event::InitApply(pod)) => {
                        listing.extend(encode(pod));
                        None
                    }
                    Ok(Event::InitDone) => Some(PodChange::Relisted(std::mem::take(&mut listing))),
                    Ok(Event::Apply(pod)) => encode(pod).map(PodChange::Applied),
                    Ok(Event::Delete(pod)) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_else(|| {
                            format!(
                                "{}/{}",
                                pod.metadata.namespace.clone().unwrap_or_default(),
                                pod.metadata.name.clone().unwrap_or_default()
                            )
                        });
                        Some(PodChange::Deleted(uid))
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "the pod watch failed; retrying");
                        None
                    }
                };
                std::future::ready(change)
            })
            .boxed()
    }
}

/// The kinds whose owners re-judging follows: a ReplicaSet's Deployment, a Job's CronJob
/// (other controllers — DaemonSets, StatefulSets — own their pods directly).
pub const OWNER_KINDS: [&str; 2] = ["ReplicaSet", "Job"];

impl ClusterPods {
    /// The controlling owners of every ReplicaSet and Job, as a stream of changes (metadata
    /// only: `get`/`list`/`watch` on `replicasets` and `jobs`, what the chart grants). A kind
    /// that cannot be listed (RBAC, not served) is reported once as unavailable; the watch
    /// keeps retrying with backoff, and a later listing fills its chains in.
    pub fn owner_changes(
        &self,
    ) -> futures_util::stream::BoxStream<'static, crate::rejudge::PodChange> {
        use futures_util::StreamExt;
        use k8s_openapi::api::apps::v1::ReplicaSet;
        use k8s_openapi::api::batch::v1::Job;
        use kube::core::PartialObjectMeta;
        let replicasets = owner_watch(
            Api::<PartialObjectMeta<ReplicaSet>>::all(self.client.clone()),
            "ReplicaSet",
        );
        let jobs = owner_watch(
            Api::<PartialObjectMeta<Job>>::all(self.client.clone()),
            "Job",
        );
        futures_util::stream::select(replicasets, jobs).boxed()
    }
}

fn owner_watch<K>(
    api: Api<kube::core::PartialObjectMeta<K>>,
    kind: &'static str,
) -> futures_util::stream::BoxStream<'static, crate::rejudge::PodChange>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default + Clone + Eq + std::hash::Hash,
{
    use futures_util::StreamExt;
    use kube::core::PartialObjectMeta;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::{self, Event};

    use crate::rejudge::PodChange;
    use crate::running::{Owner, OwnerLink};
    let link = move |object: PartialObjectMeta<K>| {
        let meta = object.metadata;
        OwnerLink {
            namespace: meta.namespace.unwrap_or_default(),
            kind: kind.to_owned(),
            name: meta.name.unwrap_or_default(),
            controller: meta
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .find(|o| o.controller == Some(true))
                .map(|o| Owner {
                    api_version: o.api_version,
                    kind: o.kind,
                    name: o.name,
                    uid: o.uid,
                }),
        }
    };
    let mut listing: Vec<OwnerLink> = Vec::new();
    let mut listed = false;
    let mut reported = false;
    watcher::watcher(api, watcher::Config::default().page_size(PAGE_SIZE))
        .default_backoff()
        .filter_map(move |event| {
            let change = match event {
                Ok(Event::Init) => {
                    listing.clear();
                    None
                }
                Ok(Event::InitApply(object)) => {
                    listing.push(link(object));
                    None
                }
                Ok(Event::InitDone) => {
                    listed = true;
                    Some(PodChange::OwnersRelisted {
                        kind: kind.to_owned(),
                        owners: std::mem::take(&mut listing),
                    })
                }
                Ok(Event::Apply(object)) => Some(PodChange::OwnerApplied(link(object))),
                Ok(Event::Delete(object)) => {
                    let gone = link(object);
                    Some(PodChange::OwnerDeleted {
                        namespace: gone.namespace,
                        kind: gone.kind,
                        name: gone.name,
                    })
                }
                Err(err) if !listed && !reported => {
                    reported = true;
                    tracing::warn!(
                        error = %err,
                        "cannot list {kind}s: Events and reports name the {kind} instead of \
                         the workload that owns it (may portcullis list and watch them?); retrying"
                    );
                    Some(PodChange::OwnersUnavailable(kind.to_owned()))
                }
                Err(err) => {
                    tracing::debug!(error = %err, "the {kind} watch failed; retrying");
                    None
                }
            };
            std::future::ready(change)
        })
        .boxed()
}

/// One object to judge, standing for `count` running pods.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditTarget {
    pub object: ManifestObject,
    /// `Pod shop/web-5b7d-x2 (3 pods of ReplicaSet shop/web-5b7d)`, for tables.
    pub label: String,
    pub count: usize,
    /// The pods' controlling owner, when they have one (what reports name).
    pub controller: Option<OwnerRef>,
}

/// A controlling owner reference of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// Groups pods by their controlling owner (all replicas of one ReplicaSet, DaemonSet, Job ...
/// share a template), keeping the first pod of each group; pods without a controller stay
/// alone. Objects that are not pods (a dump of other kinds) are judged one by one.
pub fn group_by_controller(objects: Vec<ManifestObject>) -> Vec<AuditTarget> {
    let mut groups: BTreeMap<(String, String, String), AuditTarget> = BTreeMap::new();
    let mut alone = Vec::new();
    for object in objects {
        let controller = (object.kind == "Pod")
            .then(|| controller_of(&object.object))
            .flatten();
        match controller {
            Some(owner) => {
                let key = (
                    object.namespace.clone(),
                    owner.kind.clone(),
                    owner.name.clone(),
                );
                groups
                    .entry(key)
                    .and_modify(|target| target.count += 1)
                    .or_insert_with(|| AuditTarget {
                        label: String::new(),
                        object,
                        count: 1,
                        controller: Some(owner),
                    });
            }
            None => alone.push(AuditTarget {
                label: object.display(),
                object,
                count: 1,
                controller: None,
            }),
        }
    }
    let mut targets: Vec<AuditTarget> = groups
        .into_iter()
        .map(|((namespace, kind, name), mut target)| {
            let pods = if target.count == 1 { "pod" } else { "pods" };
            target.label = format!(
                "{} ({} {pods} of {kind} {namespace}/{name})",
                target.object.display(),
                target.count
            );
            target
        })
        .collect();
    targets.extend(alone);
    targets
}

fn controller_of(pod: &Value) -> Option<OwnerRef> {
    let text = |owner: &Value, key: &str| {
        owner
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    pod.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|owner| {
            Some(OwnerRef {
                api_version: text(owner, "apiVersion"),
                kind: owner.get("kind")?.as_str()?.to_owned(),
                name: owner.get("name")?.as_str()?.to_owned(),
                uid: text(owner, "uid"),
            })
        })
}

/// One judged object (`check -o json`, `audit -o json`, re-judging).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Judged {
    pub origin: String,
    /// `Kind namespace/name`, or an audit label naming the replicas it stands for.
    pub object: String,
    pub allowed: bool,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub warnings: Vec<String>,
    pub findings: Vec<Finding>,
}

/// Judges each object as the CREATE request the API server would send for it (a dry run:
/// nothing is changed, and the verdict is the one the webhook would give now).
pub async fn judge_objects(
    engine: &Engine,
    objects: &[ManifestObject],
    uid_prefix: &str,
) -> Result<Vec<Judged>, AuditError> {
    judge_each(engine, objects, uid_prefix, None, &mut |_| {}).await
}

/// [`judge_objects`], also recording each judged object's image sites in `inventory` and
/// calling `on_judged` with the number judged so far after each one (audit's progress).
pub async fn judge_objects_observed(
    engine: &Engine,
    objects: &[ManifestObject],
    uid_prefix: &str,
    inventory: &Inventory,
    on_judged: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<Judged>, AuditError> {
    judge_each(engine, objects, uid_prefix, Some(inventory), on_judged).await
}

async fn judge_each(
    engine: &Engine,
    objects: &[ManifestObject],
    uid_prefix: &str,
    inventory: Option<&Inventory>,
    on_judged: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<Judged>, AuditError> {
    let mut results = Vec::with_capacity(objects.len());
    for (index, object) in objects.iter().enumerate() {
        let request = object
            .as_admission_request(&format!("{uid_prefix}-{index}"))
            .map_err(|err| AuditError::Judge {
                origin: object.origin.clone(),
                message: err.to_string(),
            })?;
        let deadline = tokio::time::Instant::now() + engine.budget(None);
        let (_, observed) = crate::admission::judge_observed(
            engine,
            &request,
            deadline,
            crate::evidence::Priority::Background,
        )
        .await;
        if let Some(inventory) = inventory {
            crate::admission::observe(inventory, engine, &request, &observed);
        }
        let verdict = observed.verdict;
        results.push(Judged {
            origin: object.origin.clone(),
            object: object.display(),
            allowed: verdict.allowed,
            outcome: verdict.outcome,
            message: verdict.message,
            warnings: verdict.warnings,
            findings: verdict.findings,
        });
        on_judged(index + 1);
    }
    Ok(results)
}

/// The pods (or other objects) of a dump file (`kubectl get pods -A -o json`, YAML or JSON,
/// `List` kinds expanded).
pub fn read_dump(path: &std::path::Path) -> Result<Vec<ManifestObject>, AuditError> {
    Ok(object_files::read_file(path)?)
}

/// The pods a cluster runs now, as objects to judge.
pub async fn read_cluster(pods: &dyn RunningPods) -> Result<Vec<ManifestObject>, AuditError> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": pods.list().await?});
    Ok(object_files::from_value(list, "cluster")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, owner: Option<(&str, &str)>) -> Value {
        let owners: Vec<Value> = owner
            .map(|(kind, name)| json!({"kind": kind, "name": name, "controller": true, "apiVersion": "apps/v1", "uid": "u"}))
            .into_iter()
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "shop", "ownerReferences": owners},
               "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}})
    }

    #[test]
    fn replicas_of_one_controller_are_judged_once() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            pod("web-1", Some(("ReplicaSet", "web-5b"))),
            pod("web-2", Some(("ReplicaSet", "web-5b"))),
            pod("lonely", None),
            pod("db-0", Some(("StatefulSet", "db"))),
        ]});
        let objects = object_files::from_value(list, "dump.json").unwrap();
        let targets = group_by_controller(objects);
        let labels: Vec<&str> = targets.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "Pod shop/web-1 (2 pods of ReplicaSet shop/web-5b)",
                "Pod shop/db-0 (1 pod of StatefulSet shop/db)",
                "Pod shop/lonely",
            ]
        );
        assert_eq!(targets[0].count, 2);
    }
}
