//! Finds every image site (containers, init and ephemeral containers, image volumes) and the
//! security-relevant fields around it in any pod-bearing object: Pods, PodTemplates, every
//! built-in workload kind with a pod template, and the custom kinds the configuration names
//! (`workloads.custom[]`). Pure: JSON in, views out.

use k8s_openapi::api::core::v1::{Container, ContainerPort, EphemeralContainer, PodSpec, Volume};
use serde::Serialize;
use serde_json::Value;

/// Where the image sits in the pod spec: one of the three container lists, or an image volume
/// (`spec.volumes[].image`, which the kubelet pulls and mounts like a container image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum ContainerKind {
    Container,
    InitContainer,
    EphemeralContainer,
    ImageVolume,
}

impl ContainerKind {
    /// The machine name (`input.images[].container.kind`, audit annotations).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerKind::Container => "container",
            ContainerKind::InitContainer => "initContainer",
            ContainerKind::EphemeralContainer => "ephemeralContainer",
            ContainerKind::ImageVolume => "imageVolume",
        }
    }

    /// The kind named by [`as_str`](Self::as_str)'s name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            ContainerKind::Container,
            ContainerKind::InitContainer,
            ContainerKind::EphemeralContainer,
            ContainerKind::ImageVolume,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }

    /// How messages name the site: `container "app"`, `image volume "data"`.
    pub fn label(self) -> &'static str {
        match self {
            ContainerKind::ImageVolume => "image volume",
            other => other.as_str(),
        }
    }
}

/// One declared container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortView {
    pub container_port: i32,
    pub host_port: Option<i32>,
}

/// What the rules need to know about one container: its image and security settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub name: String,
    pub kind: ContainerKind,
    /// The image exactly as written (empty when absent).
    pub image: String,
    pub privileged: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
    pub run_as_non_root: Option<bool>,
    pub run_as_user: Option<i64>,
    pub ports: Vec<PortView>,
}

/// Pod-level fields the built-in rules judge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodLevel {
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub run_as_non_root: Option<bool>,
    pub run_as_user: Option<i64>,
}

/// One image volume (`spec.volumes[]` with `image`): no security context, ports or
/// resources, so only the image rules judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageVolumeView {
    /// The volume's name.
    pub name: String,
    /// `image.reference` exactly as written (empty when absent: denied as an invalid
    /// reference, as a container without an image is).
    pub image: String,
    /// `image.pullPolicy` as written (`None`: the kubelet's default).
    pub pull_policy: Option<String>,
    /// The volume's position in `volumes[]` (which also holds volumes of other kinds), for
    /// JSON Pointers into the pod spec. Not part of what a site is: [`PodView::site_changed`]
    /// ignores it, so reordering volumes re-judges nothing.
    #[serde(skip)]
    pub index: usize,
}

/// One place the kubelet pulls an image from: a container of any kind, or an image volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSite<'a> {
    pub kind: ContainerKind,
    pub name: &'a str,
    pub image: &'a str,
    /// The site's position in its list of the pod spec (`containers`, `initContainers`,
    /// `ephemeralContainers` or `volumes`), for JSON Pointers.
    pub index: usize,
}

/// The pod spec of a pod-bearing object, reduced to what portcullis judges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    /// Where the pod spec was found, e.g. `spec.template.spec`.
    pub spec_path: String,
    pub pod: PodLevel,
    pub containers: Vec<ContainerView>,
    /// Volumes whose content is an image (`volumes[].image`), in pod-spec order.
    pub image_volumes: Vec<ImageVolumeView>,
    /// Where the kubelet would find registry credentials for this pod.
    pub pull: PullRefs,
}

/// The pod's `imagePullSecrets` and service account: the credentials the kubelet would use to
/// pull its images, which portcullis uses to read the same registries (when enabled).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRefs {
    pub image_pull_secrets: Vec<String>,
    /// `spec.serviceAccountName` (`default` when the pod names none).
    pub service_account: Option<String>,
}

impl PodView {
    /// The container with this name and kind, if present.
    pub fn container(&self, kind: ContainerKind, name: &str) -> Option<&ContainerView> {
        self.containers
            .iter()
            .find(|c| c.kind == kind && c.name == name)
    }

    /// The image volume with this name, if present.
    pub fn image_volume(&self, name: &str) -> Option<&ImageVolumeView> {
        self.image_volumes.iter().find(|v| v.name == name)
    }

    /// Every image site, in pod-spec order: init containers, containers, ephemeral
    /// containers, then image volumes. Everything that judges images iterates this, so a new
    /// site cannot be judged by some rules and skipped by others.
    pub fn image_sites(&self) -> impl Iterator<Item = ImageSite<'_>> {
        // Every container of a list is kept, in order, so a container's index in its list is
        // the number of views of its kind before it.
        let containers = self.containers.iter().enumerate().map(|(at, c)| ImageSite {
            kind: c.kind,
            name: &c.name,
            image: &c.image,
            index: self
                .containers
                .iter()
                .take(at)
                .filter(|other| other.kind == c.kind)
                .count(),
        });
        let volumes = self.image_volumes.iter().map(|v| ImageSite {
            kind: ContainerKind::ImageVolume,
            name: &v.name,
            image: &v.image,
            index: v.index,
        });
        containers.chain(volumes)
    }

    /// Whether the site `(kind, name)` is new or differs from the same site in `old`.
    pub fn site_changed(&self, old: &PodView, kind: ContainerKind, name: &str) -> bool {
        match kind {
            ContainerKind::ImageVolume => {
                let judged = |v: &ImageVolumeView| (v.image.clone(), v.pull_policy.clone());
                self.image_volume(name).map(judged) != old.image_volume(name).map(judged)
            }
            _ => self.container(kind, name) != old.container(kind, name),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{kind} has no pod spec at `{path}`: nothing at `{at}`")]
    MissingPodSpec {
        kind: String,
        path: String,
        at: String,
    },
    #[error("{kind} has no pod spec at `{path}`: `{at}` is {found}, not an object")]
    NotAnObject {
        kind: String,
        path: String,
        at: String,
        found: &'static str,
    },
    #[error("{kind} pod spec at `{path}` has no container list: `containers` is {found}")]
    ContainersNotAList {
        kind: String,
        path: String,
        found: &'static str,
    },
    #[error("{kind} pod spec at `{path}` cannot be read: {source}")]
    MalformedPodSpec {
        kind: String,
        path: String,
        #[source]
        source: serde_path_to_error::Error<serde_json::Error>,
    },
}

/// Where the pod spec sits for each built-in pod-bearing kind (API group, kind). `None`: not a
/// built-in pod-bearing kind (it may still be a configured custom kind, see [`WorkloadKinds`]).
pub fn pod_spec_path(group: &str, kind: &str) -> Option<&'static [&'static str]> {
    const TEMPLATE: &[&str] = &["spec", "template", "spec"];
    match (group, kind) {
        ("", "Pod") => Some(&["spec"]),
        ("", "PodTemplate") => Some(&["template", "spec"]),
        ("", "ReplicationController")
        | ("apps", "ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => Some(TEMPLATE),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

/// Extracts the pod view of a built-in kind's JSON (without `metadata`, which is not needed).
/// `Ok(None)` when the kind carries no pods.
pub fn extract(group: &str, kind: &str, object: &Value) -> Result<Option<PodView>, WorkloadError> {
    let Some(path) = pod_spec_path(group, kind) else {
        return Ok(None);
    };
    extract_at(kind, path, object).map(Some)
}

/// Where a custom kind keeps its pod spec: object keys from the root, written dot-separated
/// (`spec.template.spec`). Lists are not supported: a pod template inside a list has no single
/// pod spec to judge, so such kinds cannot be configured rather than being half-judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecPath {
    keys: Vec<String>,
}

/// Why a `podSpecPath` is not a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecPathError {
    #[error("the path is empty; write the keys to the pod spec, e.g. spec.template.spec")]
    Empty,
    #[error("key {index} is empty; separate keys with single dots, e.g. spec.template.spec")]
    EmptyKey { index: usize },
    #[error(
        "key {key:?} contains {character:?}; keys are letters, digits, `-` and `_` (list \
         indexes and wildcards are not supported)"
    )]
    BadCharacter { key: String, character: char },
}

impl SpecPath {
    pub fn parse(text: &str) -> Result<Self, SpecPathError> {
        if text.trim().is_empty() {
            return Err(SpecPathError::Empty);
        }
        let mut keys = Vec::new();
        for (index, key) in text.split('.').enumerate() {
            if key.is_empty() {
                return Err(SpecPathError::EmptyKey { index });
            }
            if let Some(character) = key
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(SpecPathError::BadCharacter {
                    key: key.to_owned(),
                    character,
                });
            }
            keys.push(key.to_owned());
        }
        Ok(Self { keys })
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }
}

impl std::fmt::Display for SpecPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.keys.join("."))
    }
}

/// A custom pod-bearing kind from `workloads.custom[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomKind {
    pub group: String,
    /// `None`: every version of the kind.
    pub version: Option<String>,
    pub kind: String,
    pub path: SpecPath,
}

/// Every kind portcullis judges: the built-in ones and the configured custom ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadKinds {
    custom: Vec<CustomKind>,
}

impl WorkloadKinds {
    pub fn new(custom: Vec<CustomKind>) -> Self {
        Self { custom }
    }

    /// Whether objects of this group, version and kind carry a pod spec to judge.
    pub fn judges(&self, group: &str, version: &str, kind: &str) -> bool {
        pod_spec_path(group, kind).is_some() || self.custom(group, version, kind).is_some()
    }

    fn custom(&self, group: &str, version: &str, kind: &str) -> Option<&CustomKind> {
        self.custom.iter().find(|c| {
            c.group == group && c.kind == kind && c.version.as_deref().is_none_or(|v| v == version)
        })
    }

    /// Extracts the pod view of an object of this group, version and kind. `Ok(None)` when the
    /// kind carries no pods. For a custom kind, anything at the path that is not a pod spec is
    /// an error (the engine denies it): a configured kind is never skipped.
    pub fn extract(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        object: &Value,
    ) -> Result<Option<PodView>, WorkloadError> {
        if let Some(path) = pod_spec_path(group, kind) {
            return extract_at(kind, path, object).map(Some);
        }
        let Some(custom) = self.custom(group, version, kind) else {
            return Ok(None);
        };
        extract_at(kind, custom.path.keys(), object).map(Some)
    }
}

/// How an unexpected JSON value is named in messages.
fn shape(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The pod view of the pod spec at `keys`; every shape that is not a pod spec is an error
/// naming where it went wrong.
fn extract_at<K: AsRef<str>>(
    kind: &str,
    keys: &[K],
    object: &Value,
) -> Result<PodView, WorkloadError> {
    let spec_path = keys.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(".");
    let mut value = object;
    let mut at = String::new();
    for key in keys {
        let Value::Object(map) = value else {
            return Err(WorkloadError::NotAnObject {
                kind: kind.to_owned(),
                path: spec_path,
                at: if at.is_empty() {
                    "(the object)".into()
                } else {
                    at
                },
                found: shape(value),
            });
        };
        if !at.is_empty() {
            at.push('.');
        }
        at.push_str(key.as_ref());
        value = match map.get(key.as_ref()) {
            Some(next) if !next.is_null() => next,
            _ => {
                return Err(WorkloadError::MissingPodSpec {
                    kind: kind.to_owned(),
                    path: spec_path,
                    at,
                });
            }
        };
    }
    let Value::Object(map) = value else {
        return Err(WorkloadError::NotAnObject {
            kind: kind.to_owned(),
            path: spec_path.clone(),
            at: spec_path,
            found: shape(value),
        });
    };
    match map.get("containers") {
        Some(Value::Array(_)) => {}
        other => {
            return Err(WorkloadError::ContainersNotAList {
                kind: kind.to_owned(),
                path: spec_path,
                found: other.map_or("missing", shape),
            });
        }
    }
    let spec: PodSpec = serde_path_to_error::deserialize(value).map_err(|source| {
        WorkloadError::MalformedPodSpec {
            kind: kind.to_owned(),
            path: spec_path.clone(),
            source,
        }
    })?;
    Ok(view_of(spec_path, spec))
}

fn view_of(spec_path: String, spec: PodSpec) -> PodView {
    let pull = PullRefs {
        image_pull_secrets: spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|r| r.name.clone())
            .filter(|name| !name.is_empty())
            .collect(),
        service_account: spec.service_account_name.clone().filter(|n| !n.is_empty()),
    };
    let pod_security = spec.security_context.unwrap_or_default();
    let pod = PodLevel {
        host_network: spec.host_network.unwrap_or(false),
        host_pid: spec.host_pid.unwrap_or(false),
        host_ipc: spec.host_ipc.unwrap_or(false),
        run_as_non_root: pod_security.run_as_non_root,
        run_as_user: pod_security.run_as_user,
    };
    let mut containers = Vec::new();
    for container in spec.init_containers.unwrap_or_default() {
        containers.push(container_view(ContainerKind::InitContainer, container));
    }
    for container in spec.containers {
        containers.push(container_view(ContainerKind::Container, container));
    }
    for container in spec.ephemeral_containers.unwrap_or_default() {
        containers.push(ephemeral_view(container));
    }
    PodView {
        spec_path,
        pod,
        containers,
        image_volumes: image_volumes(spec.volumes.unwrap_or_default()),
        pull,
    }
}

/// The volumes whose source is an image. A volume with an `image` block but no reference is
/// kept with an empty image, so it is denied as an invalid reference instead of skipped.
fn image_volumes(volumes: Vec<Volume>) -> Vec<ImageVolumeView> {
    volumes
        .into_iter()
        .enumerate()
        .filter_map(|(index, volume)| {
            let source = volume.image?;
            Some(ImageVolumeView {
                name: volume.name,
                image: source.reference.unwrap_or_default(),
                pull_policy: source.pull_policy,
                index,
            })
        })
        .collect()
}

fn ports(ports: Option<Vec<ContainerPort>>) -> Vec<PortView> {
    ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| PortView {
            container_port: p.container_port,
            host_port: p.host_port,
        })
        .collect()
}

fn container_view(kind: ContainerKind, c: Container) -> ContainerView {
    let security = c.security_context.unwrap_or_default();
    ContainerView {
        name: c.name,
        kind,
        image: c.image.unwrap_or_default(),
        privileged: security.privileged,
        allow_privilege_escalation: security.allow_privilege_escalation,
        run_as_non_root: security.run_as_non_root,
        run_as_user: security.run_as_user,
        ports: ports(c.ports),
    }
}

fn ephemeral_view(c: EphemeralContainer) -> ContainerView {
    let security = c.security_context.unwrap_or_default();
    ContainerView {
        name: c.name,
        kind: ContainerKind::EphemeralContainer,
        image: c.image.unwrap_or_default(),
        privileged: security.privileged,
        allow_privilege_escalation: security.allow_privilege_escalation,
        run_as_non_root: security.run_as_non_root,
        run_as_user: security.run_as_user,
        ports: ports(c.ports),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn pod_spec() -> Value {
        json!({
            "initContainers": [{"name": "init", "image": "busybox:1.36"}],
            "containers": [{"name": "app", "image": "nginx:1.27",
                            "ports": [{"containerPort": 80, "hostPort": 8080}],
                            "securityContext": {"privileged": true}}],
            "ephemeralContainers": [{"name": "debug", "image": "alpine"}],
            "hostNetwork": true
        })
    }

    #[rstest]
    #[case::pod("", "Pod", json!({"spec": pod_spec()}))]
    #[case::pod_template("", "PodTemplate", json!({"template": {"spec": pod_spec()}}))]
    #[case::replication_controller("", "ReplicationController", json!({"spec": {"template": {"spec": pod_spec()}}}))]
    #[case::deployment("apps", "Deployment", json!({"spec": {"template": {"spec": pod_spec()}}}))]
    #[case::replica_set("apps", "ReplicaSet", json!({"spec": {"template": {"spec": pod_spec()}}}))]
    #[case::stateful_set("apps", "StatefulSet", json!({"spec": {"template": {"spec": pod_spec()}}}))]
    #[case::daemon_set("apps", "DaemonSet", json!({"spec": {"template": {"spec": pod_spec()}}}))]
    #[case::job("batch", "Job", json!({"spec": {"template": {"spec": pod_spec()}}}))]
    #[case::cron_job("batch", "CronJob", json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec()}}}}}))]
    fn every_kind_yields_every_container(
        #[case] group: &str,
        #[case] kind: &str,
        #[case] object: Value,
    ) {
        let view = extract(group, kind, &object)
            .ok()
            .flatten()
            .unwrap_or_default();
        let found: Vec<_> = view
            .containers
            .iter()
            .map(|c| (c.kind, c.name.as_str(), c.image.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (ContainerKind::InitContainer, "init", "busybox:1.36"),
                (ContainerKind::Container, "app", "nginx:1.27"),
                (ContainerKind::EphemeralContainer, "debug", "alpine"),
            ]
        );
        assert!(view.pod.host_network);
        assert_eq!(
            view.containers[1].ports,
            [PortView {
                container_port: 80,
                host_port: Some(8080)
            }]
        );
        assert_eq!(view.containers[1].privileged, Some(true));
    }

    #[test]
    fn kinds_without_pods_yield_nothing() {
        assert!(matches!(
            extract("", "ConfigMap", &json!({"data": {}})),
            Ok(None)
        ));
        // Same kind name, another API group: not the workload kind portcullis knows.
        assert!(matches!(
            extract("example.com", "Deployment", &json!({})),
            Ok(None)
        ));
    }

    #[test]
    fn a_missing_pod_spec_is_an_error() {
        let err = extract("apps", "Deployment", &json!({"spec": {}})).err();
        assert!(err.is_some_and(|e| e.to_string().contains("spec.template.spec")));
    }

    #[test]
    fn a_malformed_pod_spec_names_the_field() {
        let object = json!({"spec": {"containers": [{"name": "a", "image": 7}]}});
        let err = extract("", "Pod", &object).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("containers[0].image")),
            "{err:?}"
        );
    }

    fn rollouts() -> WorkloadKinds {
        let path = SpecPath::parse("spec.template.spec");
        WorkloadKinds::new(vec![CustomKind {
            group: "argoproj.io".into(),
            version: Some("v1alpha1".into()),
            kind: "Rollout".into(),
            path: path.unwrap_or_else(|err| unreachable!("{err}")),
        }])
    }

    #[test]
    fn image_volumes_are_image_sites_after_the_containers() {
        let object = json!({"spec": {
            "containers": [{"name": "app", "image": "ghcr.io/acme/app:1"}],
            "volumes": [
                {"name": "config", "configMap": {"name": "settings"}},
                {"name": "data", "image": {"reference": "docker.io/evil/data:1", "pullPolicy": "Always"}},
                {"name": "blank", "image": {}}
            ]
        }});
        let view = extract("", "Pod", &object)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(
            view.image_volumes,
            [
                ImageVolumeView {
                    name: "data".into(),
                    image: "docker.io/evil/data:1".into(),
                    pull_policy: Some("Always".into()),
                    index: 1,
                },
                // No reference: kept (and denied as an invalid reference), never dropped.
                ImageVolumeView {
                    name: "blank".into(),
                    image: String::new(),
                    pull_policy: None,
                    index: 2,
                },
            ]
        );
        let sites: Vec<_> = view
            .image_sites()
            .map(|s| (s.kind, s.name, s.image))
            .collect();
        assert_eq!(
            sites,
            [
                (ContainerKind::Container, "app", "ghcr.io/acme/app:1"),
                (ContainerKind::ImageVolume, "data", "docker.io/evil/data:1"),
                (ContainerKind::ImageVolume, "blank", ""),
            ]
        );
    }

    #[test]
    fn a_changed_or_new_image_volume_is_a_changed_site() {
        let pod = |volumes: Value| {
            let object = json!({"spec": {"containers": [{"name": "app", "image": "a:1"}],
                                         "volumes": volumes}});
            extract("", "Pod", &object)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let old = pod(json!([{"name": "data", "image": {"reference": "a:1"}}]));
        let same = pod(json!([{"name": "data", "image": {"reference": "a:1"}}]));
        let moved = pod(json!([{"name": "data", "image": {"reference": "a:2"}}]));
        let policy =
            pod(json!([{"name": "data", "image": {"reference": "a:1", "pullPolicy": "Never"}}]));
        let added = pod(json!([{"name": "data", "image": {"reference": "a:1"}},
                               {"name": "more", "image": {"reference": "b:1"}}]));
        let volume = ContainerKind::ImageVolume;
        assert!(!same.site_changed(&old, volume, "data"));
        assert!(moved.site_changed(&old, volume, "data"));
        assert!(policy.site_changed(&old, volume, "data"));
        assert!(added.site_changed(&old, volume, "more"));
        assert!(!added.site_changed(&old, ContainerKind::Container, "app"));
    }

    #[test]
    fn a_configured_custom_kind_is_extracted_at_its_path() {
        let kinds = rollouts();
        let object = json!({"spec": {"template": {"spec": pod_spec()}}});
        let view = kinds
            .extract("argoproj.io", "v1alpha1", "Rollout", &object)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(view.spec_path, "spec.template.spec");
        assert_eq!(view.containers.len(), 3);
        assert!(kinds.judges("argoproj.io", "v1alpha1", "Rollout"));
        // Another version than the configured one, another group, or no configuration at all.
        assert!(!kinds.judges("argoproj.io", "v1", "Rollout"));
        assert!(!kinds.judges("example.com", "v1alpha1", "Rollout"));
        assert!(matches!(
            WorkloadKinds::default().extract("argoproj.io", "v1alpha1", "Rollout", &object),
            Ok(None)
        ));
        // Built-in kinds stay built in.
        assert!(kinds.judges("apps", "v1", "Deployment"));
    }

    #[rstest]
    #[case::path_missing(json!({"spec": {"strategy": {}}}),
        "Rollout has no pod spec at `spec.template.spec`: nothing at `spec.template`")]
    #[case::not_an_object(json!({"spec": {"template": "nginx"}}),
        "Rollout has no pod spec at `spec.template.spec`: `spec.template` is a string, not an object")]
    #[case::spec_is_a_list(json!({"spec": {"template": {"spec": []}}}),
        "Rollout has no pod spec at `spec.template.spec`: `spec.template.spec` is a list, not an object")]
    #[case::containers_not_a_list(json!({"spec": {"template": {"spec": {"containers": {"name": "app"}}}}}),
        "Rollout pod spec at `spec.template.spec` has no container list: `containers` is an object")]
    #[case::no_containers(json!({"spec": {"template": {"spec": {"volumes": []}}}}),
        "Rollout pod spec at `spec.template.spec` has no container list: `containers` is missing")]
    fn an_unknown_shape_at_a_custom_path_is_an_error_naming_kind_path_and_finding(
        #[case] object: Value,
        #[case] expected: &str,
    ) {
        let err = rollouts()
            .extract("argoproj.io", "v1alpha1", "Rollout", &object)
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some(expected));
    }

    #[rstest]
    #[case::empty("", SpecPathError::Empty)]
    #[case::blank("  ", SpecPathError::Empty)]
    #[case::double_dot("spec..spec", SpecPathError::EmptyKey { index: 1 })]
    #[case::trailing_dot("spec.template.", SpecPathError::EmptyKey { index: 2 })]
    #[case::list_index("spec.templates[0].spec", SpecPathError::BadCharacter { key: "templates[0]".into(), character: '[' })]
    fn bad_spec_paths_are_refused(#[case] text: &str, #[case] expected: SpecPathError) {
        assert_eq!(SpecPath::parse(text), Err(expected));
    }

    #[test]
    fn a_spec_path_round_trips() {
        let path = SpecPath::parse("spec.template.spec").map(|p| p.to_string());
        assert_eq!(path.as_deref(), Ok("spec.template.spec"));
    }
}
