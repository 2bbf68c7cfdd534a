//! `portcullis policy test`: the table tests beside each policy (`<dir>/tests.yaml`) and the
//! Rego `test_` rules of its modules.
//!
//! A case gives a Kubernetes object (and optionally the operation, namespace, `oldObject`,
//! parameters, image evidence and the time), and the violations (and warnings) expected. The
//! input document is built by the same functions the webhook uses, so a case sees exactly what
//! a review of that object would see; only evidence that would come from registries and
//! scanners is taken from the case (`images:`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use portcullis_core::config::RegoSyntax;
use portcullis_core::reference::ImageRef;
use portcullis_core::workload;

use crate::rego::{Package, RegoBundle, RegoError, RegoSource, rego_files};
use portcullis_core::policy::input::{InputDocument, images_of};
use portcullis_core::policy::{ImageEntry, ScanState};

/// The table file name looked for in each policy folder.
pub const TABLE_FILE: &str = "tests.yaml";
/// Generous: tests should fail on wrong results, not on a slow machine.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A test folder could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Table { path: PathBuf, message: String },
    #[error("{0}")]
    Rego(#[from] RegoError),
    #[error("{path}: no policy folder (with .rego files or {TABLE_FILE}) found")]
    Nothing { path: PathBuf },
}

/// `tests.yaml`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TableFile {
    /// The package under test; may be left out when the folder holds one policy package.
    #[serde(default)]
    pub policy: Option<String>,
    /// Parameters for every case (a case's own `parameters` replace them).
    #[serde(default)]
    pub parameters: Option<Json>,
    /// `input.now` for every case (RFC 3339); default: the real time.
    #[serde(default)]
    pub now: Option<String>,
    pub cases: Vec<Case>,
}

/// One table case.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// The object under review (`input.review.object`).
    pub object: Json,
    #[serde(default)]
    pub old_object: Option<Json>,
    /// `CREATE` unless given.
    #[serde(default)]
    pub operation: Option<String>,
    /// Default: the object's `metadata.namespace`, else `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub parameters: Option<Json>,
    #[serde(default)]
    pub now: Option<String>,
    /// Evidence per image as written in the object: fields merged into its
    /// `input.images[]` entries (`facts`, `scan`, `signatures`, `digest`, ...).
    #[serde(default)]
    pub images: BTreeMap<String, Json>,
    /// Expected violation (and `deny`) messages: each must be found (as a substring) in a
    /// distinct actual message, and there must be no others. `[]` expects none.
    pub violations: Vec<String>,
    /// Expected warnings, same rules; not compared when left out.
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
}

/// Results of one run.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    /// Human-readable lines, one per case, with differences under failures.
    pub text: String,
}

/// Runs every policy folder under `dir` (or `dir` itself when it is one).
pub fn run(dir: &Path) -> Result<Report, TestError> {
    let folders = policy_folders(dir)?;
    if folders.is_empty() {
        return Err(TestError::Nothing {
            path: dir.to_owned(),
        });
    }
    let mut report = Report::default();
    for folder in folders {
        run_folder(&folder, &mut report)?;
    }
    let _ = writeln!(
        report.text,
        "\n{} passed, {} failed",
        report.passed, report.failed
    );
    Ok(report)
}

fn policy_folders(dir: &Path) -> Result<Vec<PathBuf>, TestError> {
    let read = |path: &Path| {
        std::fs::read_dir(path).map_err(|source| TestError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let is_policy = |path: &Path| -> Result<bool, TestError> {
        if path.join(TABLE_FILE).is_file() {
            return Ok(true);
        }
        Ok(read(path)?
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|x| x == "rego")))
    };
    if is_policy(dir)? {
        return Ok(vec![dir.to_owned()]);
    }
    let mut folders = Vec::new();
    for entry in read(dir)?.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() && is_policy(&path)? {
            folders.push(path);
        }
    }
    folders.sort();
    Ok(folders)
}

fn run_folder(folder: &Path, report: &mut Report) -> Result<(), TestError> {
    let mut sources = Vec::new();
    for path in rego_files(folder)? {
        let text = std::fs::read_to_string(&path).map_err(|source| TestError::Read {
            path: path.clone(),
            source,
        })?;
        sources.push(RegoSource {
            path: path.display().to_string(),
            text,
            syntax: RegoSyntax::Auto,
        });
    }
    let bundle = RegoBundle::compile(sources, TEST_TIMEOUT)?;
    let _ = writeln!(report.text, "{}", folder.display());
    for package in bundle.packages() {
        for test in &package.tests {
            let label = format!("{}.{test} (rego)", package.name);
            match bundle.run_test(package, test) {
                Ok(true) => pass(report, &label),
                Ok(false) => fail(report, &label, "    the rule is false or undefined\n"),
                Err(err) => fail(report, &label, &format!("    error: {err}\n")),
            }
        }
    }
    let table_path = folder.join(TABLE_FILE);
    if !table_path.is_file() {
        return Ok(());
    }
    let table_error = |message: String| TestError::Table {
        path: table_path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&table_path).map_err(|source| TestError::Read {
        path: table_path.clone(),
        source,
    })?;
    let table: TableFile =
        serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(&text))
            .map_err(|err| table_error(format!("at `{}`: {}", err.path(), err.inner())))?;
    let package = pick_package(&bundle, table.policy.as_deref()).map_err(table_error)?;
    for case in &table.cases {
        let outcome = input_for(case, &table).and_then(|input| {
            bundle
                .evaluate(package, regorus::Value::from(input))
                .map_err(|err| err.to_string())
        });
        match outcome {
            Err(err) => fail(report, &case.name, &format!("    error: {err}\n")),
            Ok(outcome) => {
                let actual: Vec<&str> =
                    outcome.violations.iter().map(|(m, _)| m.as_str()).collect();
                let mut differences = compare("violations", &case.violations, &actual);
                if let Some(expected) = &case.warnings {
                    let actual: Vec<&str> =
                        outcome.warnings.iter().map(|(m, _)| m.as_str()).collect();
                    differences.push_str(&compare("warnings", expected, &actual));
                }
                if differences.is_empty() {
                    pass(report, &case.name);
                } else {
                    fail(report, &case.name, &differences);
                }
            }
        }
    }
    Ok(())
}

fn pass(report: &mut Report, label: &str) {
    report.passed += 1;
    let _ = writeln!(report.text, "  ok    {label}");
}

fn fail(report: &mut Report, label: &str, why: &str) {
    report.failed += 1;
    let _ = write!(report.text, "  FAIL  {label}\n{why}");
}

fn pick_package<'a>(bundle: &'a RegoBundle, wanted: Option<&str>) -> Result<&'a Package, String> {
    let policies: Vec<&Package> = bundle.packages().iter().filter(|p| p.is_policy()).collect();
    match wanted {
        Some(name) => {
            let name = name.strip_prefix("data.").unwrap_or(name);
            policies
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| format!("`policy`: no policy package {name:?} in this folder"))
        }
        None => match policies.as_slice() {
            [one] => Ok(one),
            [] => Err("no package here declares violation, deny or warn".into()),
            _ => Err("several policy packages here: name one with `policy:`".into()),
        },
    }
}

/// Expected substrings vs actual messages: empty when they agree, else what differed.
fn compare(what: &str, expected: &[String], actual: &[&str]) -> String {
    let mut unmatched: Vec<&str> = actual.to_vec();
    let mut missing = Vec::new();
    for want in expected {
        match unmatched.iter().position(|a| a.contains(want.as_str())) {
            Some(at) => {
                unmatched.remove(at);
            }
            None => missing.push(want.as_str()),
        }
    }
    if missing.is_empty() && unmatched.is_empty() {
        return String::new();
    }
    let mut out = format!("    {what} differ:\n");
    for m in missing {
        let _ = writeln!(out, "      expected, not found: {m:?}");
    }
    for u in unmatched {
        let _ = writeln!(out, "      found, not expected: {u:?}");
    }
    let _ = writeln!(out, "      all found: {actual:?}");
    out
}

/// The input document for a case, as the webhook would build it.
pub fn input_for(case: &Case, table: &TableFile) -> Result<Json, String> {
    let api_version = case.object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    let kind = case.object["kind"]
        .as_str()
        .ok_or("the object has no `kind`")?;
    let namespace = case
        .namespace
        .clone()
        .or_else(|| {
            case.object["metadata"]["namespace"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "default".into());
    let review = json!({
        "uid": "portcullis-policy-test",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
        "name": case.object["metadata"]["name"].clone(),
        "namespace": namespace,
        "operation": case.operation.clone().unwrap_or_else(|| "CREATE".into()),
        "userInfo": {"username": "portcullis-policy-test"},
        "object": case.object,
        "oldObject": case.old_object.clone().unwrap_or(Json::Null),
        "dryRun": false,
    });
    let pod = workload::extract(group, kind, &case.object).map_err(|err| err.to_string())?;
    let entries: Vec<ImageEntry> = pod
        .iter()
        .flat_map(|pod| pod.image_sites())
        .map(|site| ImageEntry {
            reference: ImageRef::parse(site.image),
            container: site.name.to_owned(),
            container_kind: site.kind,
            evidence: None,
            scan: ScanState::NotRequested,
            lifecycle: Default::default(),
        })
        .collect();
    let now = match case.now.as_deref().or(table.now.as_deref()) {
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|err| format!("`now` {text:?} is not RFC 3339: {err}"))?,
        None => OffsetDateTime::now_utc(),
    };
    let mut images = images_of(&entries);
    for (written, fields) in &case.images {
        let Some(fields) = fields.as_object() else {
            return Err(format!("images[{written:?}] must be a mapping"));
        };
        let mut found = false;
        for entry in images.as_array_mut().into_iter().flatten() {
            if entry["image"].as_str() == Some(written.as_str())
                && let Some(entry) = entry.as_object_mut()
            {
                found = true;
                merge(entry, fields);
            }
        }
        if !found {
            return Err(format!("images[{written:?}]: no container uses this image"));
        }
    }
    let parameters = case.parameters.as_ref().or(table.parameters.as_ref());
    let mut document = InputDocument::new(review, &[], now).with_parameters(parameters);
    document["images"] = images;
    Ok(document)
}

fn merge(entry: &mut Map<String, Json>, fields: &Map<String, Json>) {
    for (key, value) in fields {
        entry.insert(key.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_reports_missing_and_unexpected_messages() {
        assert_eq!(compare("violations", &["a".into()], &["xa"]), "");
        let diff = compare("violations", &["a".into(), "b".into()], &["a", "c"]);
        assert!(diff.contains("expected, not found: \"b\""), "{diff}");
        assert!(diff.contains("found, not expected: \"c\""), "{diff}");
        assert!(!compare("violations", &[], &["a"]).is_empty());
    }

    #[test]
    fn a_case_input_carries_images_with_merged_evidence() {
        let table: TableFile = serde_yaml_ng::from_str(
            r#"
now: "2026-01-01T00:00:00Z"
cases:
  - name: one
    object: {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: [{name: app, image: "nginx:1.27"}]}}
    images:
      "nginx:1.27": {facts: {user: root}}
    violations: []
"#,
        )
        .unwrap_or_else(|err| unreachable!("{err}"));
        let input = input_for(&table.cases[0], &table).unwrap_or_default();
        assert_eq!(input["review"]["kind"]["kind"], "Pod");
        assert_eq!(input["review"]["namespace"], "default");
        assert_eq!(input["images"][0]["registry"], "docker.io");
        assert_eq!(input["images"][0]["facts"]["user"], "root");
        assert_eq!(input["now"], "2026-01-01T00:00:00Z");
        assert_eq!(input["parameters"], json!({}));
    }
}
