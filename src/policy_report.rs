//! PolicyReports (`wgpolicyk8s.io/v1alpha2`) from re-judging: one report named `portcullis`
//! per namespace, listing each running workload's findings, so Policy Reporter, Kyverno's UI
//! or `kubectl get policyreports -A` show what would be denied today. Building the reports is
//! pure ([`build_reports`]); [`PolicyReportWriter`] applies them (server-side apply) and
//! deletes the ones of namespaces that no longer have judged workloads.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::config::Mode;
use crate::decision::Outcome;
use crate::object_review::{AuditTarget, Judged};
use crate::policy::Subject;

/// Every report portcullis writes has this name (one per namespace) and label.
pub const REPORT_NAME: &str = "portcullis";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=portcullis";
const FIELD_MANAGER: &str = "portcullis";
/// etcd refuses objects over 1.5 MiB: a namespace's report keeps at most this many results
/// (the summary still counts all of them).
pub const MAX_RESULTS: usize = 1000;
/// Messages longer than this are cut (with "…").
const MAX_MESSAGE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "cannot write PolicyReport {namespace}/{REPORT_NAME}: {source} (is the wgpolicyk8s.io \
         CRD installed, and does the chart grant rbac.policyReports?)"
    )]
    Apply {
        namespace: String,
        source: kube::Error,
    },
    #[error("cannot list or delete stale PolicyReports: {0}")]
    Prune(kube::Error),
}

pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    )
}

/// The reports of one re-judging pass, by namespace. Skipped objects (excluded namespaces)
/// get no report; a workload without findings is one `pass` result.
pub fn build_reports(
    targets: &[AuditTarget],
    judged: &[Judged],
    now: OffsetDateTime,
) -> BTreeMap<String, Value> {
    let timestamp = json!({"seconds": now.unix_timestamp(), "nanos": 0});
    let mut results: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (target, judged) in targets.iter().zip(judged) {
        if judged.outcome == Outcome::Skipped || target.object.namespace.is_empty() {
            continue;
        }
        let resource = resource_of(target);
        let entries = results.entry(target.object.namespace.clone()).or_default();
        let result = |rule: &str, result: &str, message: String, properties: Value| {
            json!({
                "source": "portcullis",
                "policy": "portcullis",
                "rule": rule,
                "result": result,
                "message": cut(message),
                "scored": true,
                "timestamp": timestamp,
                "resources": [resource],
                "properties": properties,
            })
        };
        match judged.outcome {
            Outcome::ErrorDenied | Outcome::ErrorAllowed => entries.push(result(
                "evidence",
                "error",
                judged
                    .message
                    .clone()
                    .unwrap_or_else(|| "evidence could not be gathered".into()),
                json!({"outcome": judged.outcome.as_str()}),
            )),
            _ if judged.findings.is_empty() => entries.push(result(
                "all",
                "pass",
                "no findings".into(),
                json!({"outcome": judged.outcome.as_str()}),
            )),
            _ => {
                for finding in &judged.findings {
                    let (site, container, image) = match &finding.subject {
                        Subject::Container {
                            container,
                            kind,
                            image,
                        } => {
                            // `(container app)`, or `(image volume data)` for an image volume.
                            let site = match kind {
                                crate::workload::ContainerKind::ImageVolume => "image volume",
                                _ => "container",
                            };
                            (site, container.as_str(), image.as_str())
                        }
                        Subject::Pod => ("", "", ""),
                    };
                    let message = if image.is_empty() {
                        format!("{}. Fix: {}", finding.found, finding.fix)
                    } else {
                        format!(
                            "{image} ({site} {container}): {}. Fix: {}",
                            finding.found, finding.fix
                        )
                    };
                    // A warn-mode rule is a warning; enforce and audit mode rules report a
                    // violation (audit only changes what admission does with it).
                    let verdict = if finding.mode == Mode::Warn {
                        "warn"
                    } else {
                        "fail"
                    };
                    entries.push(result(
                        &finding.rule,
                        verdict,
                        message,
                        json!({
                            "container": container,
                            "image": image,
                            "mode": finding.mode.as_str(),
                            "fix": cut(finding.fix.clone()),
                        }),
                    ));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|(namespace, mut entries)| {
            let mut summary = BTreeMap::from([
                ("pass", 0),
                ("fail", 0),
                ("warn", 0),
                ("error", 0),
                ("skip", 0),
            ]);
            for entry in &entries {
                if let Some(count) = entry["result"].as_str().and_then(|r| summary.get_mut(r)) {
                    *count += 1;
                }
            }
            // Keep violations first when the report must be cut.
            entries.sort_by_key(|e| match e["result"].as_str() {
                Some("fail") => 0,
                Some("error") => 1,
                Some("warn") => 2,
                _ => 3,
            });
            entries.truncate(MAX_RESULTS);
            let report = json!({
                "apiVersion": "wgpolicyk8s.io/v1alpha2",
                "kind": "PolicyReport",
                "metadata": {
                    "name": REPORT_NAME,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "portcullis"},
                },
                "summary": summary,
                "results": entries,
            });
            (namespace, report)
        })
        .collect()
}

/// The object a result is about: the pods' controller (as `kubectl get` names it), or the
/// pod itself.
fn resource_of(target: &AuditTarget) -> Value {
    match &target.controller {
        Some(owner) => json!({
            "apiVersion": owner.api_version,
            "kind": owner.kind,
            "name": owner.name,
            "namespace": target.object.namespace,
            "uid": owner.uid,
        }),
        None => {
            let object = &target.object;
            let api_version = if object.group.is_empty() {
                object.version.clone()
            } else {
                format!("{}/{}", object.group, object.version)
            };
            let mut resource = json!({
                "apiVersion": api_version,
                "kind": object.kind,
                "name": object.name,
                "namespace": object.namespace,
            });
            if let Some(uid) = object.object.pointer("/metadata/uid") {
                resource["uid"] = uid.clone();
            }
            resource
        }
    }
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// What one write did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    pub applied: usize,
    pub deleted: usize,
}

/// Writes reports through the Kubernetes API.
pub struct PolicyReportWriter {
    client: kube::Client,
}

impl PolicyReportWriter {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// Applies every report (server-side apply, field manager `portcullis`, so nobody
    /// else's fields are touched), then deletes portcullis's reports in namespaces that have
    /// none now. Every report is attempted; the first error is returned after the others.
    pub async fn write(
        &self,
        reports: &BTreeMap<String, Value>,
    ) -> Result<WriteSummary, ReportError> {
        let resource = api_resource();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut summary = WriteSummary::default();
        let mut first_error = None;
        for (namespace, report) in reports {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &resource);
            match api.patch(REPORT_NAME, &params, &Patch::Apply(report)).await {
                Ok(_) => summary.applied += 1,
                Err(source) => {
                    first_error.get_or_insert(ReportError::Apply {
                        namespace: namespace.clone(),
                        source,
                    });
                }
            }
        }
        let all: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let existing = match all.list(&ListParams::default().labels(MANAGED_BY)).await {
            Ok(existing) => existing,
            // An apply error says more (often the same cause: no CRD, no RBAC).
            Err(err) => return Err(first_error.unwrap_or(ReportError::Prune(err))),
        };
        let current: BTreeSet<&str> = reports.keys().map(String::as_str).collect();
        for stale in existing.items {
            let (Some(namespace), Some(name)) = (stale.metadata.namespace, stale.metadata.name)
            else {
                continue;
            };
            if name != REPORT_NAME || current.contains(namespace.as_str()) {
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &namespace, &resource);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => summary.deleted += 1,
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => {
                    first_error.get_or_insert(ReportError::Prune(err));
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(summary),
        }
    }
}
