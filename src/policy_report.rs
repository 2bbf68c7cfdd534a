//! Reports from re-judging: one report named `portcullis` per namespace, listing each running
//! workload's findings, so Policy Reporter, Kyverno's UI or `kubectl get policyreports -A` show
//! what would be denied today. Two APIs carry the same results ([`ReportApi`]):
//! `wgpolicyk8s.io/v1alpha2` PolicyReports and their successor, `openreports.io/v1alpha1`
//! Reports. Building the reports is pure ([`build_reports`], in PolicyReport shape;
//! [`ReportApi::shape`] turns one into the other API's object); [`ReportWriter`] applies them
//! (server-side apply) and deletes the ones of namespaces that no longer have judged
//! workloads; [`ReportApi::is_served`] tells whether the cluster serves an API at all.

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
/// The `source` of every result (and of an openreports.io Report).
const SOURCE: &str = "portcullis";
/// etcd refuses objects over 1.5 MiB: a namespace's report keeps at most this many results
/// (the summary still counts all of them).
pub const MAX_RESULTS: usize = 1000;
/// Messages longer than this are cut (with "…").
const MAX_MESSAGE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "cannot write {kind} {namespace}/{REPORT_NAME}: {source} (is the {group} CRD installed, \
         and does the chart grant rbac.{value}?)",
        kind = api.kind(), group = api.group(), value = api.rbac_value()
    )]
    Apply {
        api: ReportApi,
        namespace: String,
        source: kube::Error,
    },
    #[error("cannot list or delete stale {kind}s: {source}", kind = api.kind())]
    Prune { api: ReportApi, source: kube::Error },
    #[error(
        "cannot tell whether the cluster serves {api_version}: {source}",
        api_version = api.api_version()
    )]
    Discovery { api: ReportApi, source: kube::Error },
}

/// Which API a report is written to. Both carry the same results and summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportApi {
    /// `wgpolicyk8s.io/v1alpha2` `PolicyReport` (`rejudge.policyReports`).
    PolicyReport,
    /// `openreports.io/v1alpha1` `Report`, the successor of wgpolicyk8s.io
    /// (`rejudge.openReports`).
    OpenReports,
}

impl ReportApi {
    pub fn group(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "wgpolicyk8s.io",
            ReportApi::OpenReports => "openreports.io",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "v1alpha2",
            ReportApi::OpenReports => "v1alpha1",
        }
    }

    /// `group/version`, as objects' `apiVersion` says it.
    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }

    pub fn kind(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "PolicyReport",
            ReportApi::OpenReports => "Report",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "policyreports",
            ReportApi::OpenReports => "reports",
        }
    }

    /// The chart value that grants writing it (`rbac.<value>`), for error messages.
    fn rbac_value(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "policyReports",
            ReportApi::OpenReports => "openReports",
        }
    }

    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group(), self.version(), self.kind()),
            self.plural(),
        )
    }

    /// A report from [`build_reports`] (PolicyReport shape) as this API's object. The
    /// openreports.io Report has the same `results` and `summary` (its results' `properties`
    /// are strings, as ours are) and also names its producer once, at the top (`source`).
    pub fn shape(self, report: &Value) -> Value {
        let mut shaped = report.clone();
        if let Some(object) = shaped.as_object_mut() {
            object.insert("apiVersion".into(), Value::String(self.api_version()));
            object.insert("kind".into(), Value::String(self.kind().to_owned()));
            if self == ReportApi::OpenReports {
                object.insert("source".into(), Value::String(SOURCE.to_owned()));
            }
        }
        shaped
    }

    /// Whether the cluster serves this API with its reports resource: a GET of
    /// `/apis/<group>/<version>`, where 404 (the CRD is not installed) is `false`. Callers
    /// check once and skip (and log) an API that is not served rather than fail every pass.
    pub async fn is_served(self, client: &kube::Client) -> Result<bool, ReportError> {
        match client.list_api_group_resources(&self.api_version()).await {
            Ok(resources) => Ok(resources
                .resources
                .iter()
                .any(|resource| resource.name == self.plural())),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(source) => Err(ReportError::Discovery { api: self, source }),
        }
    }
}

/// The PolicyReport API's resource (kept for callers that only write PolicyReports).
pub fn api_resource() -> ApiResource {
    ReportApi::PolicyReport.api_resource()
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
                "source": SOURCE,
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

/// Writes reports to one API ([`ReportApi`]) through the Kubernetes API.
#[derive(Clone)]
pub struct ReportWriter {
    client: kube::Client,
    api: ReportApi,
}

/// The name re-judging and `serve` know the writer by; [`ReportWriter::new`] writes
/// PolicyReports.
pub type PolicyReportWriter = ReportWriter;

impl ReportWriter {
    /// A writer of `wgpolicyk8s.io/v1alpha2` PolicyReports.
    pub fn new(client: kube::Client) -> Self {
        Self::for_api(client, ReportApi::PolicyReport)
    }

    /// A writer of `api`'s reports.
    pub fn for_api(client: kube::Client, api: ReportApi) -> Self {
        Self { client, api }
    }

    pub fn api(&self) -> ReportApi {
        self.api
    }

    /// Whether the cluster this writer reaches serves its API ([`ReportApi::is_served`]).
    pub async fn is_served(&self) -> Result<bool, ReportError> {
        self.api.is_served(&self.client).await
    }

    /// Applies every report (server-side apply, field manager `portcullis`, so nobody
    /// else's fields are touched), then deletes portcullis's reports in namespaces that have
    /// none now. Every report is attempted; the first error is returned after the others.
    pub async fn write(
        &self,
        reports: &BTreeMap<String, Value>,
    ) -> Result<WriteSummary, ReportError> {
        let resource = self.api.api_resource();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut summary = WriteSummary::default();
        let mut first_error = None;
        for (namespace, report) in reports {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &resource);
            let report = self.api.shape(report);
            match api
                .patch(REPORT_NAME, &params, &Patch::Apply(&report))
                .await
            {
                Ok(_) => summary.applied += 1,
                Err(source) => {
                    first_error.get_or_insert(ReportError::Apply {
                        api: self.api,
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
            Err(source) => {
                return Err(first_error.unwrap_or(ReportError::Prune {
                    api: self.api,
                    source,
                }));
            }
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
                Err(source) => {
                    first_error.get_or_insert(ReportError::Prune {
                        api: self.api,
                        source,
                    });
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(summary),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

    use std::sync::{Arc, Mutex};

    use kube::client::Body;
    use portcullis_test_support::mock_apiserver::{
        self, json_body, json_response, status_response,
    };

    use super::*;

    const OPEN_REPORTS: &str = "/apis/openreports.io/v1alpha1";

    /// A report as `build_reports` makes it (PolicyReport shape).
    fn shop_report() -> Value {
        json!({
            "apiVersion": "wgpolicyk8s.io/v1alpha2",
            "kind": "PolicyReport",
            "metadata": {"name": REPORT_NAME, "namespace": "shop",
                         "labels": {"app.kubernetes.io/managed-by": "portcullis"}},
            "summary": {"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 0},
            "results": [{
                "source": "portcullis", "policy": "portcullis", "rule": "vulnerability",
                "result": "fail", "message": "ghcr.io/acme/web:1.0 (container app): CVE-2026-0001",
                "scored": true, "timestamp": {"seconds": 1_795_593_600, "nanos": 0},
                "resources": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                               "namespace": "shop", "uid": "uid-web-7d4b9c"}],
                "properties": {"container": "app", "image": "ghcr.io/acme/web:1.0",
                               "mode": "enforce", "fix": "rebuild"},
            }],
        })
    }

    #[test]
    fn a_policy_report_keeps_its_shape() {
        assert_eq!(ReportApi::PolicyReport.shape(&shop_report()), shop_report());
    }

    #[test]
    fn an_open_report_is_the_same_results_as_an_openreports_io_report() {
        let report = ReportApi::OpenReports.shape(&shop_report());
        assert_eq!(report["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(report["kind"], "Report");
        assert_eq!(report["source"], "portcullis");
        for same in ["metadata", "summary", "results"] {
            assert_eq!(report[same], shop_report()[same], "{same}");
        }
        let resource = ReportApi::OpenReports.api_resource();
        assert_eq!(
            (
                resource.group.as_str(),
                resource.version.as_str(),
                resource.plural.as_str()
            ),
            ("openreports.io", "v1alpha1", "reports")
        );
    }

    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        uri: String,
        content_type: String,
        body: Value,
    }

    fn api_server(
        answer: fn(&str, &str, &Value) -> http::Response<Body>,
    ) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let (client, _server) = mock_apiserver::client("default", move |request| {
            let record = record.clone();
            async move {
                let method = request.method().to_string();
                let uri = request.uri().to_string();
                let content_type = request
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let body = json_body(request).await;
                let path = uri.split('?').next().unwrap_or_default().to_owned();
                let response = answer(&method, &path, &body);
                record.lock().unwrap().push(Seen {
                    method,
                    uri,
                    content_type,
                    body,
                });
                response
            }
        });
        (client, seen)
    }

    /// Applies echo the object back; the LIST of portcullis's Reports has one in `shop` and a
    /// stale one in `gone`; deletes succeed.
    fn open_reports_served(method: &str, _path: &str, body: &Value) -> http::Response<Body> {
        match method {
            "PATCH" => json_response(200, body),
            "GET" => json_response(
                200,
                &json!({
                    "apiVersion": "openreports.io/v1alpha1", "kind": "ReportList",
                    "metadata": {"resourceVersion": "4711"},
                    "items": [
                        {"apiVersion": "openreports.io/v1alpha1", "kind": "Report",
                         "metadata": {"name": "portcullis", "namespace": "shop"}},
                        {"apiVersion": "openreports.io/v1alpha1", "kind": "Report",
                         "metadata": {"name": "portcullis", "namespace": "gone"}}
                    ]
                }),
            ),
            "DELETE" => json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success", "code": 200}),
            ),
            _ => status_response(405, "MethodNotAllowed", "unexpected"),
        }
    }

    #[tokio::test]
    async fn the_openreports_writer_applies_reports_and_deletes_stale_ones_against_a_mocked_api_server()
     {
        let (client, seen) = api_server(open_reports_served);
        let writer = ReportWriter::for_api(client, ReportApi::OpenReports);
        assert_eq!(writer.api(), ReportApi::OpenReports);
        let reports = BTreeMap::from([("shop".to_owned(), shop_report())]);
        let summary = writer.write(&reports).await.unwrap();
        assert_eq!(
            summary,
            WriteSummary {
                applied: 1,
                deleted: 1
            }
        );

        let seen = seen.lock().unwrap().clone();
        let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
        assert_eq!(methods, ["PATCH", "GET", "DELETE"]);
        let apply = &seen[0];
        assert!(
            apply.uri.starts_with(&format!(
                "{OPEN_REPORTS}/namespaces/shop/reports/portcullis?"
            )),
            "{}",
            apply.uri
        );
        assert!(
            apply.uri.contains("fieldManager=portcullis") && apply.uri.contains("force=true"),
            "{}",
            apply.uri
        );
        assert_eq!(apply.content_type, "application/apply-patch+yaml");
        assert_eq!(apply.body["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(apply.body["kind"], "Report");
        assert_eq!(apply.body["source"], "portcullis");
        assert_eq!(apply.body["results"], shop_report()["results"]);
        assert_eq!(apply.body["summary"]["fail"], 1);

        let list = &seen[1];
        assert!(
            list.uri.starts_with(&format!("{OPEN_REPORTS}/reports?")),
            "{}",
            list.uri
        );
        assert!(
            list.uri
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dportcullis"),
            "{}",
            list.uri
        );
        assert_eq!(
            seen[2].uri.split('?').next().unwrap(),
            format!("{OPEN_REPORTS}/namespaces/gone/reports/portcullis")
        );
    }

    #[tokio::test]
    async fn an_openreports_write_without_the_crd_names_the_api_and_its_chart_value_against_a_mocked_api_server()
     {
        fn missing(_: &str, path: &str, _: &Value) -> http::Response<Body> {
            status_response(
                404,
                "NotFound",
                &format!("the server could not find {path}"),
            )
        }
        let (client, _seen) = api_server(missing);
        let writer = ReportWriter::for_api(client, ReportApi::OpenReports);
        let reports = BTreeMap::from([("shop".to_owned(), shop_report())]);
        let err = writer.write(&reports).await.unwrap_err();
        assert!(
            matches!(
                err,
                ReportError::Apply {
                    api: ReportApi::OpenReports,
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        for expected in [
            "Report shop/portcullis",
            "openreports.io CRD",
            "rbac.openReports",
        ] {
            assert!(message.contains(expected), "{message}");
        }
    }

    fn group_resources(resources: &[&str]) -> Value {
        json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "openreports.io/v1alpha1",
            "resources": resources.iter().map(|name| json!({
                "name": name, "singularName": "", "namespaced": true, "kind": "Report",
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]
            })).collect::<Vec<_>>(),
        })
    }

    #[tokio::test]
    async fn openreports_is_served_when_the_cluster_lists_its_reports_against_a_mocked_api_server()
    {
        fn served(_: &str, _: &str, _: &Value) -> http::Response<Body> {
            json_response(200, &group_resources(&["reports", "clusterreports"]))
        }
        let (client, seen) = api_server(served);
        assert!(ReportApi::OpenReports.is_served(&client).await.unwrap());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].uri.as_str()),
            ("GET", OPEN_REPORTS)
        );
    }

    #[tokio::test]
    async fn openreports_is_not_served_without_its_crd_against_a_mocked_api_server() {
        fn missing(_: &str, _: &str, _: &Value) -> http::Response<Body> {
            status_response(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
        let (client, _seen) = api_server(missing);
        assert!(!ReportApi::OpenReports.is_served(&client).await.unwrap());
    }

    #[tokio::test]
    async fn openreports_is_not_served_when_the_group_lacks_reports_against_a_mocked_api_server() {
        fn other(_: &str, _: &str, _: &Value) -> http::Response<Body> {
            json_response(200, &group_resources(&["clusterreports"]))
        }
        let (client, _seen) = api_server(other);
        assert!(!ReportApi::OpenReports.is_served(&client).await.unwrap());
    }

    #[tokio::test]
    async fn a_refused_discovery_is_an_error_not_a_missing_api_against_a_mocked_api_server() {
        fn forbidden(_: &str, _: &str, _: &Value) -> http::Response<Body> {
            status_response(403, "Forbidden", "forbidden")
        }
        let (client, _seen) = api_server(forbidden);
        let err = ReportApi::OpenReports.is_served(&client).await.unwrap_err();
        assert!(matches!(err, ReportError::Discovery { .. }), "{err:?}");
        assert!(err.to_string().contains("openreports.io/v1alpha1"), "{err}");
    }
}
