//! Reading Kubernetes manifests for `portcullis check`: YAML or JSON files with several
//! documents, `List` kinds expanded, each object turned into the CREATE request the API server
//! would send, so `check` judges exactly as the webhook does. (Kubernetes object files, not
//! OCI manifests: those are `registry::Manifest`.)

use std::path::Path;

use k8s_openapi::api::authentication::v1::UserInfo;
use kube_core::admission::{AdmissionRequest, Operation};
use kube_core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {origin}: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: document {document}: not valid YAML or JSON: {message}")]
    Syntax {
        origin: String,
        document: usize,
        message: String,
    },
    #[error("{origin}: document {document}: {message}")]
    NotAnObject {
        origin: String,
        document: usize,
        message: String,
    },
}

/// One Kubernetes object found in a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestObject {
    /// `file` or `file#3` (1-based document number), for messages.
    pub origin: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub object: Value,
}

impl ManifestObject {
    /// `Kind namespace/name`, for tables.
    pub fn display(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// The CREATE request the API server would send for this object (dry run), built
    /// directly: `audit` and `check` judge objects without encoding an AdmissionReview.
    pub fn as_admission_request(
        &self,
        uid: &str,
    ) -> Result<AdmissionRequest<DynamicObject>, serde_json::Error> {
        let object: DynamicObject = serde_json::from_value(self.object.clone())?;
        Ok(AdmissionRequest {
            types: TypeMeta {
                api_version: crate::admission::API_VERSION.into(),
                kind: crate::admission::KIND.into(),
            },
            uid: uid.into(),
            kind: GroupVersionKind::gvk(&self.group, &self.version, &self.kind),
            resource: GroupVersionResource::gvr(
                &self.group,
                &self.version,
                &resource_of(&self.kind),
            ),
            sub_resource: None,
            request_kind: None,
            request_resource: None,
            request_sub_resource: None,
            name: self.name.clone(),
            namespace: Some(self.namespace.clone()).filter(|n| !n.is_empty()),
            operation: Operation::Create,
            user_info: UserInfo {
                username: Some("portcullis-check".into()),
                ..UserInfo::default()
            },
            object: Some(object),
            old_object: None,
            dry_run: true,
            options: None,
        })
    }
}

/// The plural resource name of the kinds portcullis judges.
fn resource_of(kind: &str) -> String {
    format!("{}s", kind.to_ascii_lowercase())
}

/// Reads every object of a manifest file (`-` is stdin).
pub fn read_file(path: &Path) -> Result<Vec<ManifestObject>, ManifestError> {
    let origin = path.display().to_string();
    let text = if origin == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|source| ManifestError::Read {
        origin: origin.clone(),
        source,
    })?;
    parse(&text, &origin)
}

/// Parses multi-document YAML (JSON is accepted as YAML) into objects, expanding `List`s.
pub fn parse(text: &str, origin: &str) -> Result<Vec<ManifestObject>, ManifestError> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let value = Value::deserialize(document).map_err(|err| ManifestError::Syntax {
            origin: origin.to_owned(),
            document: number,
            message: err.to_string(),
        })?;
        if value.is_null() {
            continue; // an empty document (`---` at the end)
        }
        collect(value, origin, number, &mut objects)?;
    }
    Ok(objects)
}

/// The objects of one JSON value (a `List` is expanded); `origin` names it in messages.
pub fn from_value(value: Value, origin: &str) -> Result<Vec<ManifestObject>, ManifestError> {
    let mut objects = Vec::new();
    collect(value, origin, 1, &mut objects)?;
    Ok(objects)
}

fn collect(
    value: Value,
    origin: &str,
    document: usize,
    out: &mut Vec<ManifestObject>,
) -> Result<(), ManifestError> {
    let not_object = |message: String| ManifestError::NotAnObject {
        origin: origin.to_owned(),
        document,
        message,
    };
    let Value::Object(map) = &value else {
        return Err(not_object(
            "not a Kubernetes object (expected a mapping)".into(),
        ));
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| not_object("has no `kind`".into()))?
        .to_owned();
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| not_object(format!("{kind} has no `apiVersion`")))?
        .to_owned();
    if let Some(items) = map
        .get("items")
        .and_then(Value::as_array)
        .filter(|_| kind.ends_with("List"))
    {
        for item in items.clone() {
            collect(item, origin, document, out)?;
        }
        return Ok(());
    }
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group.to_owned(), version.to_owned()),
        None => (String::new(), api_version.clone()),
    };
    let metadata = map.get("metadata");
    let field = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let name = field("name")
        .or_else(|| field("generateName"))
        .unwrap_or_default();
    out.push(ManifestObject {
        origin: format!("{origin}#{document}"),
        group,
        version,
        kind,
        name,
        namespace: field("namespace").unwrap_or_else(|| "default".into()),
        object: value,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_with_a_list_and_json() {
        let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec: {}
---
{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}},
  {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "b"}}
]}
---
"#;
        let objects = parse(text, "x.yaml").unwrap_or_default();
        let names: Vec<String> = objects.iter().map(ManifestObject::display).collect();
        assert_eq!(
            names,
            ["Deployment shop/web", "Pod default/a", "CronJob default/b"]
        );
        assert_eq!(objects[2].group, "batch");
        assert_eq!(objects[1].group, "");
        assert_eq!(objects[0].origin, "x.yaml#1");
        assert_eq!(objects[1].origin, "x.yaml#2");
    }

    #[test]
    fn broken_documents_name_the_file_and_document() {
        let err = parse(
            "apiVersion: v1\nkind: Pod\n---\nkind: [unclosed\n",
            "bad.yaml",
        );
        assert!(
            matches!(&err, Err(ManifestError::Syntax { document: 2, .. })),
            "{err:?}"
        );
        let err = parse("just a string\n", "s.yaml");
        assert!(
            matches!(&err, Err(ManifestError::NotAnObject { .. })),
            "{err:?}"
        );
        let err = parse("apiVersion: v1\nmetadata: {}\n", "k.yaml");
        assert!(
            err.as_ref()
                .is_err_and(|e| e.to_string().contains("has no `kind`")),
            "{err:?}"
        );
    }
}
