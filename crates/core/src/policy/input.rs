//! The input document every document-reading policy (Rego today) sees, built by pure
//! functions: `input.review` (the AdmissionRequest, as Gatekeeper gives it), `input.parameters`
//! (this policy's configured parameters), `input.images[]` (one entry per judged image site with
//! what portcullis verified) and `input.now` (the time the review is judged at).
//!
//! [`image`] is the one place that turns gathered evidence into the JSON policies read: when
//! evidence gains fields (image config facts, attestations), they are added there and nowhere
//! else. `docs/writing-policies.md` is the reference for every field.

use std::any::Any;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::evidence::SignatureEvidence;
use crate::workload::ContainerKind;

use super::{ImageEntry, ScanState};

/// The parts of the input document shared by every policy of one review (everything but
/// `parameters`), built once per review.
#[derive(Debug)]
pub struct InputDocument {
    base: Map<String, Value>,
    /// The same in a policy engine's own value type, converted once per review (each policy
    /// then only adds its parameters). Opaque here so the core names no engine; one engine
    /// converts per process (Rego today).
    engine_form: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl InputDocument {
    /// `review` is the AdmissionRequest as JSON (`Value::Null` when there is none).
    pub fn new(review: Value, images: &[ImageEntry], now: OffsetDateTime) -> Self {
        let mut base = Map::new();
        base.insert("review".into(), review);
        base.insert("images".into(), images_of(images));
        base.insert("now".into(), Value::String(rfc3339(now)));
        Self {
            base,
            engine_form: OnceLock::new(),
        }
    }

    /// A document whose `review` exists only in one engine's own value type, so no JSON copy
    /// of the AdmissionRequest is made: `build` receives the other shared parts (`images`,
    /// `now`) and returns the engine's whole shared document, which [`Self::engine_form`] then
    /// hands out. For a process whose document-reading policies all use that engine (Rego
    /// today); [`Self::base`] has no `review` (see [`Self::has_review`]).
    pub fn in_engine_form<T: Any + Send + Sync, E>(
        images: &[ImageEntry],
        now: OffsetDateTime,
        build: impl FnOnce(&Map<String, Value>) -> Result<T, E>,
    ) -> Result<Self, E> {
        let mut base = Map::new();
        base.insert("images".into(), images_of(images));
        base.insert("now".into(), Value::String(rfc3339(now)));
        let form: Box<dyn Any + Send + Sync> = Box::new(build(&base)?);
        Ok(Self {
            base,
            engine_form: OnceLock::from(form),
        })
    }

    /// Whether [`Self::base`] holds `review` (false for [`Self::in_engine_form`]).
    pub fn has_review(&self) -> bool {
        self.base.contains_key("review")
    }

    /// The shared parts converted by `convert` into an engine's value type, on first use.
    /// `None` when another type was stored first (two engines in one review: the caller
    /// converts itself).
    pub fn engine_form<T: Any + Send + Sync>(
        &self,
        convert: impl FnOnce(&Map<String, Value>) -> T,
    ) -> Option<&T> {
        self.engine_form
            .get_or_init(|| Box::new(convert(&self.base)))
            .downcast_ref::<T>()
    }

    /// The whole document for one policy: the shared parts plus its `parameters` (an empty
    /// object when the configuration gives none).
    pub fn with_parameters(&self, parameters: Option<&Value>) -> Value {
        let mut document = self.base.clone();
        document.insert(
            "parameters".into(),
            parameters
                .filter(|p| !p.is_null())
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new())),
        );
        Value::Object(document)
    }

    /// The shared parts (for engines that add `parameters` themselves).
    pub fn base(&self) -> &Map<String, Value> {
        &self.base
    }
}

/// `input.images`: one entry per judged image site, in pod-spec order (init containers,
/// containers, ephemeral containers, image volumes).
pub fn images_of(entries: &[ImageEntry]) -> Value {
    Value::Array(entries.iter().map(image).collect())
}

/// One `input.images[]` entry.
pub fn image(entry: &ImageEntry) -> Value {
    let mut out = Map::new();
    out.insert(
        "container".into(),
        json!({"name": entry.container, "kind": entry.container_kind.as_str()}),
    );
    // Image volumes keep `container` (name and kind `imageVolume`) so a policy written for
    // containers judges them too instead of skipping them; `volume` names the volume for
    // policies that tell sites apart (null for containers).
    let volume = match entry.container_kind {
        ContainerKind::ImageVolume => json!({"name": entry.container}),
        _ => Value::Null,
    };
    out.insert("volume".into(), volume);
    let evidence = entry.evidence.as_ref().and_then(|e| e.as_ref().ok());
    match &entry.reference {
        Ok(image) => {
            out.insert("image".into(), json!(image.written()));
            out.insert("reference".into(), json!(image.normalized()));
            out.insert("registry".into(), json!(image.registry()));
            out.insert("repository".into(), json!(image.repository()));
            // The tag as it applies: `latest` when neither tag nor digest was written.
            out.insert("tag".into(), json!(image.tag()));
            out.insert("tagWritten".into(), json!(image.tag_written()));
            let digest = evidence
                .and_then(|e| e.digest.clone())
                .or_else(|| image.digest().map(str::to_owned));
            out.insert("digest".into(), json!(digest));
            // The digest written in the reference: what the kubelet pulls by.
            out.insert("pinned".into(), json!(image.digest().is_some()));
        }
        Err(err) => {
            out.insert("image".into(), json!(err.written));
            for key in ["reference", "registry", "repository", "tag", "digest"] {
                out.insert(key.into(), Value::Null);
            }
            out.insert("tagWritten".into(), json!(false));
            out.insert("pinned".into(), json!(false));
            out.insert("error".into(), json!(err.reason));
        }
    }
    out.insert("signatures".into(), signatures(entry));
    out.insert("attestations".into(), attestations(entry));
    out.insert("scan".into(), scan(&entry.scan));
    out.insert("facts".into(), facts(entry));
    out.insert("build".into(), build(entry));
    out.insert(
        "baseImage".into(),
        serde_json::to_value(&entry.lifecycle.base).unwrap_or(Value::Null),
    );
    Value::Object(out)
}

/// Verified attestations: predicate type, signer and the predicate itself.
fn attestations(entry: &ImageEntry) -> Value {
    let Some(Ok(evidence)) = &entry.evidence else {
        return Value::Array(Vec::new());
    };
    Value::Array(
        evidence
            .attestations
            .iter()
            .map(|a| json!({"predicateType": a.predicate_type, "signer": a.signer, "predicate": a.predicate}))
            .collect(),
    )
}

/// Facts from the judged platform's image config and manifest, plus the multi-arch layout;
/// `{}` when no registry evidence was gathered (policies must treat a missing fact as unknown).
fn facts(entry: &ImageEntry) -> Value {
    let Some(Ok(evidence)) = &entry.evidence else {
        return Value::Object(Map::new());
    };
    let mut facts = match evidence.facts.as_ref().map(serde_json::to_value) {
        Some(Ok(Value::Object(map))) => map,
        _ => Map::new(),
    };
    if let Some(platform_digest) = &evidence.platform_digest {
        facts.insert("platformDigest".into(), json!(platform_digest));
    }
    if !evidence.children.is_empty() {
        facts.insert("children".into(), json!(evidence.children));
    }
    Value::Object(facts)
}

/// When the image was built and where that time comes from (`null` when unknown).
fn build(entry: &ImageEntry) -> Value {
    match &entry.lifecycle.built {
        None => Value::Null,
        Some(built) => {
            let source = match &built.source {
                super::lifecycle::BuildTimeSource::Provenance { predicate_type } => {
                    json!({"kind": "provenance", "predicateType": predicate_type})
                }
                super::lifecycle::BuildTimeSource::ImageConfig => json!({"kind": "imageConfig"}),
            };
            json!({"at": rfc3339(built.at), "source": source})
        }
    }
}

fn signatures(entry: &ImageEntry) -> Value {
    match &entry.evidence {
        None => json!({"state": "notChecked", "signers": []}),
        Some(Err(err)) => json!({"state": "error", "signers": [], "reason": err.message}),
        Some(Ok(evidence)) => match &evidence.signatures {
            SignatureEvidence::Verified { signers } => {
                json!({"state": "verified", "signers": signers})
            }
            SignatureEvidence::Unverified { reason } => {
                json!({"state": "unverified", "signers": [], "reason": reason})
            }
            SignatureEvidence::Unavailable { reason } => {
                json!({"state": "unavailable", "signers": [], "reason": reason})
            }
        },
    }
}

fn scan(state: &ScanState) -> Value {
    match state {
        ScanState::NotRequested => json!({"state": "notRequested"}),
        ScanState::NoDigest => json!({"state": "noDigest"}),
        ScanState::Missing { digest } => json!({"state": "missing", "digest": digest}),
        ScanState::Found(report) => {
            let summary = serde_json::to_value(report.summary()).unwrap_or(Value::Null);
            json!({"state": "found", "digest": report.digest, "summary": summary})
        }
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::evidence::ImageEvidence;
    use crate::reference::ImageRef;
    use crate::scan::{ScanReport, Severity, Vulnerability};

    fn entry(image: &str) -> ImageEntry {
        ImageEntry {
            container: "app".into(),
            container_kind: ContainerKind::InitContainer,
            reference: ImageRef::parse(image),
            evidence: None,
            scan: ScanState::NotRequested,
            lifecycle: Default::default(),
        }
    }

    #[test]
    fn an_image_entry_names_container_reference_parts_and_unknown_evidence() {
        let value = image(&entry("nginx"));
        assert_eq!(
            value["container"],
            json!({"name": "app", "kind": "initContainer"})
        );
        assert_eq!(value["image"], "nginx");
        assert_eq!(value["reference"], "docker.io/library/nginx:latest");
        assert_eq!(value["registry"], "docker.io");
        assert_eq!(value["repository"], "library/nginx");
        assert_eq!(value["tag"], "latest");
        assert_eq!(value["tagWritten"], false);
        assert_eq!(value["digest"], Value::Null);
        assert_eq!(value["pinned"], false);
        assert_eq!(value["signatures"]["state"], "notChecked");
        assert_eq!(value["scan"]["state"], "notRequested");
        assert_eq!(value["facts"], json!({}));
    }

    #[test]
    fn verified_signers_resolved_digest_and_scan_summary_are_included() {
        let mut e = entry("ghcr.io/acme/app:1.0");
        e.evidence = Some(Ok(std::sync::Arc::new(ImageEvidence::signatures_only(
            Some("sha256:abc".into()),
            SignatureEvidence::Verified {
                signers: vec!["team.pub".into()],
            },
        ))));
        e.scan = ScanState::Found(Arc::new(ScanReport {
            digest: "sha256:abc".into(),
            scanned_at: OffsetDateTime::UNIX_EPOCH,
            source: "trivy".into(),
            matched_tag: None,
            vulnerabilities: vec![Vulnerability {
                id: "CVE-1".into(),
                package: "openssl".into(),
                installed_version: "1".into(),
                fixed_version: "2".into(),
                severity: Severity::Critical,
                target: "alpine".into(),
                title: "bad".into(),
            }],
        }));
        let value = image(&e);
        assert_eq!(value["digest"], "sha256:abc");
        assert_eq!(
            value["pinned"], false,
            "resolved by the registry, not written"
        );
        assert_eq!(
            value["signatures"],
            json!({"state": "verified", "signers": ["team.pub"]})
        );
        assert_eq!(value["scan"]["state"], "found");
        assert_eq!(value["scan"]["summary"]["critical"], 1);
        assert_eq!(value["scan"]["summary"]["fixable"], 1);
        assert_eq!(
            value["scan"]["summary"]["scannedAt"],
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn image_facts_attestations_build_time_and_base_image_are_included() {
        use crate::evidence::{ImageFacts, VerifiedAttestation};
        use crate::policy::lifecycle::{BaseImageState, BuildTime, BuildTimeSource};
        let mut evidence = ImageEvidence::signatures_only(
            Some("sha256:index".into()),
            SignatureEvidence::Verified {
                signers: vec!["key team.pub".into()],
            },
        );
        evidence.facts = Some(ImageFacts {
            created: Some("2026-11-01T10:00:00Z".into()),
            user: Some("1000".into()),
            exposed_ports: vec!["8080/tcp".into()],
            base_name: Some("docker.io/library/alpine:3.20".into()),
            ..ImageFacts::default()
        });
        evidence.platform_digest = Some("sha256:child".into());
        evidence.children = [("linux/amd64".to_owned(), "sha256:child".to_owned())].into();
        evidence.attestations = vec![Arc::new(VerifiedAttestation::new(
            "https://slsa.dev/provenance/v1".into(),
            json!({"buildDefinition": {}}),
            "key team.pub".into(),
            "sha256:index",
        ))];
        let mut e = entry("ghcr.io/acme/app:1.0");
        e.evidence = Some(Ok(std::sync::Arc::new(evidence)));
        e.lifecycle.built = Some(BuildTime {
            at: OffsetDateTime::UNIX_EPOCH,
            source: BuildTimeSource::Provenance {
                predicate_type: "https://slsa.dev/provenance/v1".into(),
            },
        });
        e.lifecycle.base = BaseImageState::Moved {
            name: "docker.io/library/alpine:3.20".into(),
            built_on: "sha256:old".into(),
            current: "sha256:new".into(),
        };
        let value = image(&e);
        assert_eq!(value["facts"]["user"], "1000");
        assert_eq!(value["facts"]["created"], "2026-11-01T10:00:00Z");
        assert_eq!(value["facts"]["exposedPorts"], json!(["8080/tcp"]));
        assert_eq!(value["facts"]["platformDigest"], "sha256:child");
        assert_eq!(value["facts"]["children"]["linux/amd64"], "sha256:child");
        assert_eq!(
            value["attestations"][0]["predicateType"],
            "https://slsa.dev/provenance/v1"
        );
        assert_eq!(value["attestations"][0]["signer"], "key team.pub");
        assert_eq!(value["build"]["at"], "1970-01-01T00:00:00Z");
        assert_eq!(value["build"]["source"]["kind"], "provenance");
        assert_eq!(value["baseImage"]["state"], "moved");
        assert_eq!(value["baseImage"]["current"], "sha256:new");
    }

    #[test]
    fn an_image_volume_is_named_as_a_volume_and_keeps_the_container_fields() {
        let mut e = entry("docker.io/acme/data:1");
        e.container = "data".into();
        e.container_kind = ContainerKind::ImageVolume;
        let value = image(&e);
        assert_eq!(
            value["container"],
            json!({"name": "data", "kind": "imageVolume"})
        );
        assert_eq!(value["volume"], json!({"name": "data"}));
        assert_eq!(value["reference"], "docker.io/acme/data:1");
        assert_eq!(image(&entry("nginx"))["volume"], Value::Null);
    }

    #[test]
    fn an_invalid_reference_keeps_what_was_written_and_why() {
        let value = image(&entry("Not Valid"));
        assert_eq!(value["image"], "Not Valid");
        assert_eq!(value["reference"], Value::Null);
        assert!(value["error"].as_str().is_some_and(|e| !e.is_empty()));
    }

    #[test]
    fn the_document_has_review_parameters_images_and_now() {
        let doc = InputDocument::new(
            json!({"operation": "CREATE"}),
            &[entry("nginx:1.27")],
            OffsetDateTime::UNIX_EPOCH,
        );
        let with = doc.with_parameters(Some(&json!({"max": 1})));
        assert_eq!(with["review"]["operation"], "CREATE");
        assert_eq!(with["parameters"], json!({"max": 1}));
        assert_eq!(with["images"][0]["tag"], "1.27");
        assert_eq!(with["now"], "1970-01-01T00:00:00Z");
        assert_eq!(doc.with_parameters(None)["parameters"], json!({}));
        assert!(doc.has_review());
    }

    #[test]
    fn a_document_in_an_engine_form_is_built_once_from_images_and_now() {
        let doc = InputDocument::in_engine_form(
            &[entry("nginx:1.27")],
            OffsetDateTime::UNIX_EPOCH,
            |base| Ok::<_, ()>(format!("{}|{}", base["now"], base["images"][0]["tag"])),
        )
        .unwrap();
        assert!(!doc.has_review());
        let form = doc.engine_form(|_| -> String { unreachable!("already built") });
        assert_eq!(
            form.map(String::as_str),
            Some("\"1970-01-01T00:00:00Z\"|\"1.27\"")
        );
        // Another engine's type: not this document's form.
        assert!(doc.engine_form(|_| 1u8).is_none());
        let failed = InputDocument::in_engine_form(&[], OffsetDateTime::UNIX_EPOCH, |_| {
            Err::<String, _>("no")
        });
        assert_eq!(failed.err(), Some("no"));
    }
}
