//! Trivy Operator `VulnerabilityReport`s (`aquasecurity.github.io/v1alpha1`), watched in the
//! cluster with a kube watcher and indexed by image digest.
//!
//! The operator writes one report per workload and container, and `report.artifact.digest` can
//! be missing (older operator versions, images referenced by tag only). portcullis prefers the
//! digest; a report without one is indexed by its normalised `registry/repository:tag` and used
//! only as a fallback when no report names the digest (its `matched_tag` is set, and its
//! description and findings say "matched by tag", because the tag may have moved since the
//! scan).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use portcullis_core::reference::ImageRef;
use portcullis_core::scan::{ScanReport, ScanSource, Severity, Vulnerability};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("VulnerabilityReport {name}: no `report` section: {message}")]
    Shape { name: String, message: String },
    #[error(
        "VulnerabilityReport {name}: no usable artifact (neither digest nor repository and tag)"
    )]
    NoArtifact { name: String },
    #[error("VulnerabilityReport {name}: no updateTimestamp or creationTimestamp")]
    NoTime { name: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    #[serde(default)]
    update_timestamp: Option<String>,
    #[serde(default)]
    registry: Registry,
    #[serde(default)]
    artifact: Artifact,
    #[serde(default)]
    scanner: Scanner,
    #[serde(default)]
    vulnerabilities: Vec<ReportVulnerability>,
}

#[derive(Deserialize, Default)]
struct Registry {
    #[serde(default)]
    server: String,
}

#[derive(Deserialize, Default)]
struct Artifact {
    #[serde(default)]
    repository: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    digest: String,
}

#[derive(Deserialize, Default)]
struct Scanner {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportVulnerability {
    #[serde(rename = "vulnerabilityID")]
    vulnerability_id: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    installed_version: String,
    #[serde(default)]
    fixed_version: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    title: String,
}

/// Where a parsed report is filed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReportKey {
    Digest(String),
    /// Normalised `registry/repository:tag` of a report without a digest.
    Tag(String),
}

/// Parses one VulnerabilityReport object.
pub fn parse(object: &DynamicObject) -> Result<(ReportKey, ScanReport), OperatorError> {
    let name = format!(
        "{}/{}",
        object.metadata.namespace.as_deref().unwrap_or(""),
        object.metadata.name.as_deref().unwrap_or("")
    );
    let report: Report = object
        .data
        .get("report")
        .ok_or_else(|| OperatorError::Shape {
            name: name.clone(),
            message: "missing".into(),
        })
        .and_then(|value| {
            Report::deserialize(value).map_err(|err| OperatorError::Shape {
                name: name.clone(),
                message: err.to_string(),
            })
        })?;
    let scanned_at = report
        .update_timestamp
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .or_else(|| {
            object
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok())
        })
        .ok_or_else(|| OperatorError::NoTime { name: name.clone() })?;
    let artifact = &report.artifact;
    let key = if artifact.digest.starts_with("sha256:") {
        ReportKey::Digest(artifact.digest.clone())
    } else if !artifact.repository.is_empty() && !artifact.tag.is_empty() {
        let server = match report.registry.server.as_str() {
            // The operator writes Docker Hub as its API host.
            "" | "index.docker.io" | "registry-1.docker.io" => "docker.io",
            other => other,
        };
        let written = format!("{server}/{}:{}", artifact.repository, artifact.tag);
        let normalized = ImageRef::parse(&written)
            .map(|image| image.normalized())
            .map_err(|_| OperatorError::NoArtifact { name: name.clone() })?;
        ReportKey::Tag(normalized)
    } else {
        return Err(OperatorError::NoArtifact { name });
    };
    let (digest, matched_tag) = match &key {
        ReportKey::Digest(digest) => (digest.clone(), None),
        ReportKey::Tag(tag) => (
            format!("{tag} (no digest in the report)"),
            Some(tag.clone()),
        ),
    };
    let vulnerabilities = report
        .vulnerabilities
        .into_iter()
        .map(|v| Vulnerability {
            id: v.vulnerability_id,
            package: v.resource,
            installed_version: v.installed_version,
            fixed_version: v.fixed_version,
            severity: Severity::parse(&v.severity),
            target: name.clone(),
            title: v.title,
        })
        .collect();
    Ok((
        key,
        ScanReport {
            digest,
            scanned_at,
            source: format!(
                "VulnerabilityReport {name} ({} {})",
                report.scanner.name, report.scanner.version
            ),
            matched_tag,
            vulnerabilities,
        },
    ))
}

/// The reports seen in the cluster, indexed for lookups.
#[derive(Debug, Default)]
pub struct OperatorReports {
    state: RwLock<State>,
    /// True once the first complete listing was applied (and stays true across relists).
    listed: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    /// Object uid (or namespace/name) → where its report is filed and the report.
    objects: HashMap<String, (ReportKey, Arc<ScanReport>)>,
    /// Buffer while a (re)list is in progress.
    relisting: Option<HashMap<String, (ReportKey, Arc<ScanReport>)>>,
    index: HashMap<ReportKey, Arc<ScanReport>>,
}

impl State {
    fn reindex(&mut self) {
        let mut index: HashMap<ReportKey, Arc<ScanReport>> = HashMap::new();
        for (key, report) in self.objects.values() {
            let newer = index
                .get(key)
                .is_none_or(|known| known.scanned_at < report.scanned_at);
            if newer {
                index.insert(key.clone(), report.clone());
            }
        }
        self.index = index;
    }
}

fn object_key(object: &DynamicObject) -> String {
    object.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            object.metadata.namespace.as_deref().unwrap_or(""),
            object.metadata.name.as_deref().unwrap_or("")
        )
    })
}

/// The API resource of VulnerabilityReports.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("aquasecurity.github.io", "v1alpha1", "VulnerabilityReport"),
        "vulnerabilityreports",
    )
}

impl OperatorReports {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Applies one watcher event. Reports that do not parse are skipped with a warning.
    pub fn apply(&self, event: Event<DynamicObject>) {
        let Ok(mut state) = self.state.write() else {
            tracing::error!("VulnerabilityReport index lock poisoned; event dropped");
            return;
        };
        let parsed = |object: &DynamicObject| match parse(object) {
            Ok(entry) => Some((object_key(object), (entry.0, Arc::new(entry.1)))),
            Err(err) => {
                tracing::warn!(error = %err, "skipping a VulnerabilityReport");
                None
            }
        };
        match event {
            Event::Init => state.relisting = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let Some((key, entry)) = parsed(&object) {
                    state
                        .relisting
                        .get_or_insert_with(HashMap::new)
                        .insert(key, entry);
                }
            }
            Event::InitDone => {
                if let Some(listed) = state.relisting.take() {
                    state.objects = listed;
                }
                state.reindex();
                self.listed.send_replace(true);
            }
            Event::Apply(object) => {
                let key = object_key(&object);
                match parsed(&object) {
                    Some((key, entry)) => {
                        state.objects.insert(key, entry);
                    }
                    None => {
                        state.objects.remove(&key);
                    }
                }
                state.reindex();
            }
            Event::Delete(object) => {
                state.objects.remove(&object_key(&object));
                state.reindex();
            }
        }
    }

    /// Watches every VulnerabilityReport the client may list, until the task is aborted.
    /// Watch errors are logged and retried with kube's default backoff.
    pub fn watch(self: &Arc<Self>, client: kube::Client) -> tokio::task::JoinHandle<()> {
        let api: Api<DynamicObject> = Api::all_with(client, &api_resource());
        let reports = self.clone();
        tokio::spawn(async move {
            let stream = kube::runtime::WatchStreamExt::default_backoff(watcher::watcher(
                api,
                watcher::Config::default(),
            ));
            futures_util::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => reports.apply(event),
                    Err(err) => {
                        tracing::warn!(error = %err, "VulnerabilityReport watch failed; retrying")
                    }
                }
            }
        })
    }

    /// Whether the first complete listing has been applied.
    pub fn is_listed(&self) -> bool {
        *self.listed.borrow()
    }

    fn get(&self, key: &ReportKey) -> Option<Arc<ScanReport>> {
        self.state.read().ok()?.index.get(key).cloned()
    }
}

impl ScanSource for OperatorReports {
    fn lookup(&self, digest: &str) -> Option<Arc<ScanReport>> {
        self.get(&ReportKey::Digest(digest.to_owned()))
    }

    fn lookup_by_tag(&self, image: &ImageRef) -> Option<Arc<ScanReport>> {
        self.get(&ReportKey::Tag(image.normalized()))
    }

    fn pending(&self) -> Option<String> {
        (!self.is_listed()).then(|| {
            "waiting for the first listing of Trivy Operator VulnerabilityReports".to_owned()
        })
    }
}
