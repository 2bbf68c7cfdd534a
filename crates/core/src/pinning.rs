//! Opt-in digest pinning, the pure part: which image sites of a Pod are rewritten to
//! `repo[:tag]@sha256:<digest>`, and the RFC 6902 JSON patch that does it. The digests come
//! from the evidence the engine gathered (the same cache the validating review reads, so the
//! pinned Pod is judged by the digest that was pinned); this module only decides and writes.
//!
//! A site is pinned when its reference is valid, carries no digest yet, has a written tag
//! other than `latest`, an image policy matches it and the registry resolved it. Everything
//! else is left exactly as written and recorded with the reason, so the validating webhook
//! judges what the user wrote:
//! * already pinned: nothing to do (idempotent under `reinvocationPolicy: IfNeeded`);
//! * untagged or `latest`: pinning would make rule `no-latest-tag` pass ("a digest pins the
//!   content"), so the mutating webhook would turn a denial into an admission; it must not
//!   decide anything;
//! * no image policy: portcullis never asked the registry, so it knows no digest;
//! * unresolved (registry unreachable, too slow, tag missing): no digest to pin; the
//!   validating webhook resolves again and applies its `onError` (or denies a missing tag).

use json_patch::jsonptr::PointerBuf;
use json_patch::{Patch, PatchOperation, ReplaceOperation, TestOperation};
use serde::Serialize;
use serde_json::Value;

use crate::reference::ImageRef;
use crate::workload::{ContainerKind, ImageSite, PodView};

/// What the evidence layer said about one reference, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// No image policy matches: never resolved at the registry.
    NotMatched,
    /// Resolved to this digest (for a multi-arch image, the index digest signatures are
    /// checked on).
    Resolved(String),
    /// Matched, but no digest is known: why.
    Unresolved(String),
}

/// One image rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// `container`, `initContainer`, `ephemeralContainer` or `imageVolume`.
    pub kind: &'static str,
    /// The container's or volume's name.
    pub container: String,
    /// The JSON Pointer of the rewritten string.
    pub path: String,
    pub from: String,
    pub to: String,
}

/// One image left as written, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skip {
    pub kind: &'static str,
    pub container: String,
    pub image: String,
    pub reason: String,
    /// True when the image should have been pinned and could not be (registry failure): the
    /// caller warns and counts these.
    #[serde(skip)]
    pub unresolved: bool,
}

/// Everything the planner decided for one Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub pins: Vec<Pin>,
    pub skips: Vec<Skip>,
}

/// What `/mutate` did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `pinning.enabled` is false: allowed, no patch.
    Disabled,
    /// Nothing in this request is pinned, and why (not a Pod, an excluded namespace, DELETE,
    /// a pod spec the validating webhook will deny...).
    NotApplicable(&'static str),
    /// Every site in scope was decided.
    Planned(Plan),
}

impl Outcome {
    /// The `pinning` audit annotation and the metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Disabled => "disabled",
            Outcome::NotApplicable(_) => "not-applicable",
            Outcome::Planned(plan) if !plan.pins.is_empty() => "patched",
            Outcome::Planned(_) => "unchanged",
        }
    }

    /// The sites pinned (none unless planned).
    pub fn pins(&self) -> &[Pin] {
        match self {
            Outcome::Planned(plan) => &plan.pins,
            _ => &[],
        }
    }

    /// The sites left as written (none unless planned).
    pub fn skips(&self) -> &[Skip] {
        match self {
            Outcome::Planned(plan) => &plan.skips,
            _ => &[],
        }
    }
}

/// Whether a site is worth asking the registry about: a valid reference without a digest, with
/// a written tag that is not `latest`. (Whether an image policy matches is the engine's part.)
pub fn wants_digest(image: &ImageRef) -> bool {
    image.digest().is_none() && image.tag_written() && image.tag() != Some("latest")
}

/// `written@digest`: the reference exactly as the user wrote it (registry, repository and tag
/// unchanged, so the Pod still says which version it runs) with the digest appended.
pub fn pinned_reference(written: &str, digest: &str) -> String {
    format!("{written}@{digest}")
}

/// The JSON Pointer of a site's image string under the pod spec at `spec_path` (dot-separated
/// keys, e.g. `spec`). Built from tokens, so `~` and `/` in keys are escaped as RFC 6901 says.
pub fn site_pointer(spec_path: &str, site: &ImageSite<'_>) -> String {
    let mut pointer = PointerBuf::from_tokens(spec_path.split('.').filter(|k| !k.is_empty()));
    let list = match site.kind {
        ContainerKind::Container => "containers",
        ContainerKind::InitContainer => "initContainers",
        ContainerKind::EphemeralContainer => "ephemeralContainers",
        ContainerKind::ImageVolume => "volumes",
    };
    pointer.push_back(list);
    pointer.push_back(site.index);
    pointer.push_back("image");
    if site.kind == ContainerKind::ImageVolume {
        pointer.push_back("reference");
    }
    pointer.to_string()
}

/// Decides every site of `pod` for which `in_scope` holds (on UPDATE only new or changed
/// sites: rewriting a running container's image would restart it), given what the evidence
/// layer said per reference (`resolve`).
pub fn plan(
    pod: &PodView,
    in_scope: impl Fn(ContainerKind, &str) -> bool,
    resolve: impl Fn(&ImageRef) -> Resolution,
) -> Plan {
    let mut plan = Plan::default();
    for site in pod.image_sites().filter(|s| in_scope(s.kind, s.name)) {
        let skip = |reason: &str, unresolved: bool| Skip {
            kind: site.kind.as_str(),
            container: site.name.to_owned(),
            image: site.image.to_owned(),
            reason: reason.to_owned(),
            unresolved,
        };
        let image = match ImageRef::parse(site.image) {
            Ok(image) => image,
            Err(_) => {
                plan.skips.push(skip(
                    "invalid reference (the validating webhook denies it)",
                    false,
                ));
                continue;
            }
        };
        if image.digest().is_some() {
            plan.skips.push(skip("already pinned to a digest", false));
            continue;
        }
        if !wants_digest(&image) {
            plan.skips.push(skip(
                "untagged or \"latest\": left for rule no-latest-tag to judge as written",
                false,
            ));
            continue;
        }
        match resolve(&image) {
            Resolution::NotMatched => plan.skips.push(skip(
                "no image policy matches it, so it was not resolved at the registry",
                false,
            )),
            Resolution::Unresolved(why) => plan.skips.push(skip(
                &format!("not resolved ({why}); the validating webhook decides"),
                true,
            )),
            Resolution::Resolved(digest) => plan.pins.push(Pin {
                kind: site.kind.as_str(),
                container: site.name.to_owned(),
                path: site_pointer(&pod.spec_path, &site),
                from: site.image.to_owned(),
                to: pinned_reference(site.image, &digest),
            }),
        }
    }
    plan
}

/// The JSON patch applying `pins`: per site a `test` that the image is still what was judged
/// (a patch applied to anything else fails instead of pinning the wrong container), then a
/// `replace`.
pub fn patch(pins: &[Pin]) -> Patch {
    let mut operations = Vec::with_capacity(pins.len() * 2);
    for pin in pins {
        // Pointers come from `site_pointer`, which only writes valid ones.
        let Ok(path) = PointerBuf::parse(pin.path.as_str()) else {
            continue;
        };
        operations.push(PatchOperation::Test(TestOperation {
            path: path.clone(),
            value: Value::String(pin.from.clone()),
        }));
        operations.push(PatchOperation::Replace(ReplaceOperation {
            path,
            value: Value::String(pin.to.clone()),
        }));
    }
    Patch(operations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::extract;
    use serde_json::json;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn pod(spec: Value) -> (Value, PodView) {
        let object =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec});
        let view = extract("", "Pod", &object)
            .ok()
            .flatten()
            .unwrap_or_default();
        (object, view)
    }

    fn resolve_team(image: &ImageRef) -> Resolution {
        if image.repository().starts_with("team/") {
            Resolution::Resolved(DIGEST.into())
        } else {
            Resolution::NotMatched
        }
    }

    #[test]
    fn every_site_is_pinned_at_its_own_index_and_the_patch_applies() {
        let (mut object, view) = pod(json!({
            "initContainers": [{"name": "init", "image": "r.example/team/init:1"}],
            "containers": [
                {"name": "other", "image": "docker.io/library/busybox:1.36"},
                {"name": "app", "image": "r.example/team/app:2"}
            ],
            "ephemeralContainers": [{"name": "debug", "image": "r.example/team/debug:3"}],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "data", "image": {"reference": "r.example/team/data:4"}}
            ]
        }));
        let plan = plan(&view, |_, _| true, resolve_team);
        let paths: Vec<&str> = plan.pins.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/spec/initContainers/0/image",
                "/spec/containers/1/image",
                "/spec/ephemeralContainers/0/image",
                "/spec/volumes/1/image/reference",
            ]
        );
        assert_eq!(plan.skips.len(), 1, "{plan:?}");
        assert_eq!(plan.skips[0].container, "other");
        let Ok(()) = json_patch::patch(&mut object, &patch(&plan.pins)) else {
            unreachable!("the patch must apply to the object it was planned on");
        };
        assert_eq!(
            object["spec"]["containers"][1]["image"],
            format!("r.example/team/app:2@{DIGEST}")
        );
        assert_eq!(
            object["spec"]["volumes"][1]["image"]["reference"],
            format!("r.example/team/data:4@{DIGEST}")
        );
        // Untouched: the unmatched container and the non-image volume.
        assert_eq!(
            object["spec"]["containers"][0]["image"],
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            object["spec"]["volumes"][0],
            json!({"name": "cfg", "configMap": {"name": "c"}})
        );
    }

    #[test]
    fn pinned_latest_untagged_and_invalid_images_are_left_alone() {
        let (_, view) = pod(json!({"containers": [
            {"name": "pinned", "image": format!("r.example/team/a:1@{DIGEST}")},
            {"name": "latest", "image": "r.example/team/a:latest"},
            {"name": "untagged", "image": "r.example/team/a"},
            {"name": "bad", "image": "UPPER/Case::x"}
        ]}));
        let plan = plan(&view, |_, _| true, resolve_team);
        assert!(plan.pins.is_empty(), "{plan:?}");
        assert_eq!(plan.skips.len(), 4);
        assert!(plan.skips.iter().all(|s| !s.unresolved));
    }

    #[test]
    fn an_unresolved_image_is_skipped_and_flagged() {
        let (_, view) =
            pod(json!({"containers": [{"name": "app", "image": "r.example/team/a:1"}]}));
        let plan = plan(
            &view,
            |_, _| true,
            |_| Resolution::Unresolved("connection refused".into()),
        );
        assert!(plan.pins.is_empty());
        assert!(plan.skips[0].unresolved);
        assert!(
            plan.skips[0].reason.contains("connection refused"),
            "{plan:?}"
        );
        assert!(patch(&plan.pins).0.is_empty());
    }

    #[test]
    fn out_of_scope_sites_are_not_considered() {
        let (_, view) = pod(json!({
            "containers": [{"name": "app", "image": "r.example/team/a:1"}],
            "ephemeralContainers": [{"name": "debug", "image": "r.example/team/d:1"}]
        }));
        let plan = plan(
            &view,
            |kind, _| kind == ContainerKind::EphemeralContainer,
            resolve_team,
        );
        assert_eq!(plan.pins.len(), 1);
        assert_eq!(plan.pins[0].path, "/spec/ephemeralContainers/0/image");
        assert!(plan.skips.is_empty());
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        let site = ImageSite {
            kind: ContainerKind::Container,
            name: "app",
            image: "a:1",
            index: 3,
        };
        assert_eq!(
            site_pointer("we~ird/key.spec", &site),
            "/we~0ird~1key/spec/containers/3/image"
        );
    }
}
