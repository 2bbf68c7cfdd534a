//! Finds every container image (and the security-relevant fields around it) in any
//! pod-bearing object: Pods, PodTemplates and every workload kind with a pod template.

use k8s_openapi::api::core::v1::{Container, ContainerPort, EphemeralContainer, PodSpec};
use serde::Serialize;
use serde_json::Value;

/// Where the container sits in the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum ContainerKind {
    Container,
    InitContainer,
    EphemeralContainer,
}

impl ContainerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerKind::Container => "container",
            ContainerKind::InitContainer => "initContainer",
            ContainerKind::EphemeralContainer => "ephemeralContainer",
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

/// The pod spec of a pod-bearing object, reduced to what portcullis judges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    /// Where the pod spec was found, e.g. `spec.template.spec`.
    pub spec_path: String,
    pub pod: PodLevel,
    pub containers: Vec<ContainerView>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{kind} has no pod spec at `{path}`")]
    MissingPodSpec { kind: String, path: String },
    #[error("{kind} pod spec at `{path}` cannot be read: {source}")]
    MalformedPodSpec {
        kind: String,
        path: String,
        #[source]
        source: serde_path_to_error::Error<serde_json::Error>,
    },
}

/// Where the pod spec sits for each pod-bearing kind (API group, kind). `None`: not a
/// pod-bearing kind, nothing to judge.
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

/// Extracts the pod view of an object's JSON (without `metadata`, which is not needed).
/// `Ok(None)` when the kind carries no pods.
pub fn extract(group: &str, kind: &str, object: &Value) -> Result<Option<PodView>, WorkloadError> {
    let Some(path) = pod_spec_path(group, kind) else {
        return Ok(None);
    };
    let spec_path = path.join(".");
    let spec = path
        .iter()
        .try_fold(object, |value, key| value.get(key))
        .filter(|v| !v.is_null())
        .ok_or_else(|| WorkloadError::MissingPodSpec {
            kind: kind.to_owned(),
            path: spec_path.clone(),
        })?;
    let spec: PodSpec = serde_path_to_error::deserialize(spec).map_err(|source| {
        WorkloadError::MalformedPodSpec {
            kind: kind.to_owned(),
            path: spec_path.clone(),
            source,
        }
    })?;
    Ok(Some(view_of(spec_path, spec)))
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
        pull,
    }
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
}
