//! Built-in rules that need no registry: image reference validity, trusted registries, no
//! `latest`, required digests, pod security (close to the Kubernetes "restricted" profile),
//! host namespaces and ports, allowed container ports, and signature requirements of image
//! policies (judged on evidence the engine gathered beforehand).

use std::ops::RangeInclusive;

use crate::config::{Config, ImagePolicy, Mode, RuleSettings, parse_port_range};
use crate::evidence::SignatureEvidence;
use crate::reference::{GlobError, ImageGlobs, ImageRef};
use crate::workload::ContainerView;

use super::{Finding, Policy, PolicyError, PolicyInput, Subject};

/// Rule identifiers, as they appear in messages, annotations and metrics.
pub mod rule {
    pub const IMAGE_REFERENCE: &str = "image-reference";
    pub const TRUSTED_REGISTRY: &str = "trusted-registry";
    pub const NO_LATEST_TAG: &str = "no-latest-tag";
    pub const REQUIRE_DIGEST: &str = "require-digest";
    pub const RUN_AS_NON_ROOT: &str = "run-as-non-root";
    pub const PRIVILEGED: &str = "privileged";
    pub const PRIVILEGE_ESCALATION: &str = "privilege-escalation";
    pub const HOST_NAMESPACES: &str = "host-namespaces";
    pub const HOST_PORTS: &str = "host-ports";
    pub const CONTAINER_PORTS: &str = "container-ports";
    pub const SIGNATURE: &str = "signature";
}

/// Builds the enabled built-in rules, in their evaluation order, from a validated config.
pub fn from_config(config: &Config) -> Result<Vec<Box<dyn Policy>>, GlobError> {
    let default = config.mode;
    let rules = &config.rules;
    let mode_of = |settings: &RuleSettings| settings.mode.unwrap_or(default);
    let mut policies: Vec<Box<dyn Policy>> = vec![Box::new(ImageReferenceRule)];
    if rules.trusted_registry.enabled && !config.trusted_registries.is_empty() {
        policies.push(Box::new(TrustedRegistryRule {
            globs: ImageGlobs::new(config.trusted_registries.iter().map(String::as_str))?,
            mode: mode_of(&rules.trusted_registry),
        }));
    }
    let simple: [(&RuleSettings, SimpleRule); 6] = [
        (&rules.no_latest_tag, SimpleRule::NoLatestTag),
        (&rules.require_digest, SimpleRule::RequireDigest),
        (&rules.run_as_non_root, SimpleRule::RunAsNonRoot),
        (&rules.privileged, SimpleRule::Privileged),
        (&rules.privilege_escalation, SimpleRule::PrivilegeEscalation),
        (&rules.host_ports, SimpleRule::HostPorts),
    ];
    for (settings, kind) in simple {
        if settings.enabled {
            policies.push(Box::new(ContainerRule {
                kind,
                mode: mode_of(settings),
            }));
        }
    }
    if rules.host_namespaces.enabled {
        policies.push(Box::new(HostNamespacesRule {
            mode: mode_of(&rules.host_namespaces),
        }));
    }
    let ports = &rules.container_ports;
    if ports.enabled {
        policies.push(Box::new(ContainerPortsRule {
            // Validation already refused unparsable entries; skipping keeps this total.
            allowed: ports
                .allowed
                .iter()
                .filter_map(|p| parse_port_range(p).ok())
                .collect(),
            shown: ports.allowed.join(", "),
            mode: ports.mode.unwrap_or(default),
        }));
    }
    for policy in &config.image_policies {
        let globs = || ImageGlobs::new(policy.images.iter().map(String::as_str));
        if let Some(max_age) = policy.max_image_age {
            policies.push(Box::new(super::lifecycle::ImageAgeRule::new(
                &policy.name,
                globs()?,
                max_age,
                policy.mode.unwrap_or(default),
            )));
        }
        if let Some(freshness) = &policy.base_image_freshness {
            policies.push(Box::new(super::lifecycle::BaseImageRule::new(
                globs()?,
                freshness.mode,
            )));
        }
        if let Some(vulnerabilities) = &policy.vulnerabilities {
            policies.push(Box::new(super::vulnerability::VulnerabilityRule::new(
                policy,
                vulnerabilities.clone(),
                ImageGlobs::new(policy.images.iter().map(String::as_str))?,
                policy.mode.unwrap_or(default),
            )));
        }
    }
    if !config.deprecated_images.is_empty() {
        policies.push(Box::new(super::lifecycle::DeprecatedImagesRule::new(
            &config.deprecated_images,
            default,
        )?));
    }
    for policy in &config.image_policies {
        if policy.signatures.is_some() {
            policies.push(Box::new(SignatureRule {
                globs: ImageGlobs::new(policy.images.iter().map(String::as_str))?,
                mode: policy.mode.unwrap_or(default),
                policy: policy.clone(),
            }));
        }
    }
    Ok(policies)
}

fn finding(rule: &str, subject: Subject, mode: Mode, found: String, fix: String) -> Finding {
    Finding {
        rule: rule.to_owned(),
        subject,
        found,
        fix,
        mode,
    }
}

/// Invalid image references are always denied, whatever the modes say: no pod can run them
/// and no other rule can judge them.
#[derive(Debug)]
struct ImageReferenceRule;

impl Policy for ImageReferenceRule {
    fn name(&self) -> &str {
        rule::IMAGE_REFERENCE
    }
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError> {
        Ok(input
            .subject
            .images
            .iter()
            .filter_map(|entry| {
                let err = entry.reference.as_ref().err()?;
                Some(finding(
                    rule::IMAGE_REFERENCE,
                    entry.subject(),
                    Mode::Enforce,
                    err.reason.clone(),
                    "write the image as [registry[:port]/]repository[:tag][@sha256:<64 hex>], \
                     lowercase, without a scheme"
                        .into(),
                ))
            })
            .collect())
    }
}

/// Calls `judge` for every container whose reference parsed.
fn per_valid_image(
    input: &PolicyInput<'_>,
    mut judge: impl FnMut(&ImageRef) -> Option<(String, String)>,
    rule: &str,
    mode: Mode,
) -> Vec<Finding> {
    input
        .subject
        .images
        .iter()
        .filter_map(|entry| {
            let image = entry.reference.as_ref().ok()?;
            let (found, fix) = judge(image)?;
            Some(finding(rule, entry.subject(), mode, found, fix))
        })
        .collect()
}

#[derive(Debug)]
struct TrustedRegistryRule {
    globs: ImageGlobs,
    mode: Mode,
}

impl Policy for TrustedRegistryRule {
    fn name(&self) -> &str {
        rule::TRUSTED_REGISTRY
    }
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError> {
        let trusted = shorten(self.globs.patterns(), 4);
        Ok(per_valid_image(
            input,
            |image| {
                (!self.globs.matches(image)).then(|| {
                    (
                        format!(
                            "{} is not from a trusted registry",
                            image.repository_path()
                        ),
                        format!("use an image from a trusted registry ({trusted}) or add it to trustedRegistries"),
                    )
                })
            },
            rule::TRUSTED_REGISTRY,
            self.mode,
        ))
    }
}

/// `a, b, c and 3 more`: keeps messages readable with long lists.
fn shorten(items: &[String], keep: usize) -> String {
    let mut text = items
        .iter()
        .take(keep)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > keep {
        text.push_str(&format!(" and {} more", items.len() - keep));
    }
    text
}

/// Rules judged per container from the image reference and the container's own fields.
#[derive(Debug, Clone, Copy)]
enum SimpleRule {
    NoLatestTag,
    RequireDigest,
    RunAsNonRoot,
    Privileged,
    PrivilegeEscalation,
    HostPorts,
}

impl SimpleRule {
    fn id(self) -> &'static str {
        match self {
            SimpleRule::NoLatestTag => rule::NO_LATEST_TAG,
            SimpleRule::RequireDigest => rule::REQUIRE_DIGEST,
            SimpleRule::RunAsNonRoot => rule::RUN_AS_NON_ROOT,
            SimpleRule::Privileged => rule::PRIVILEGED,
            SimpleRule::PrivilegeEscalation => rule::PRIVILEGE_ESCALATION,
            SimpleRule::HostPorts => rule::HOST_PORTS,
        }
    }
}

#[derive(Debug)]
struct ContainerRule {
    kind: SimpleRule,
    mode: Mode,
}

impl Policy for ContainerRule {
    fn name(&self) -> &str {
        self.kind.id()
    }
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError> {
        let mut findings = Vec::new();
        match self.kind {
            SimpleRule::NoLatestTag => findings.extend(per_valid_image(
                input,
                no_latest_tag,
                self.kind.id(),
                self.mode,
            )),
            SimpleRule::RequireDigest => findings.extend(per_valid_image(
                input,
                require_digest,
                self.kind.id(),
                self.mode,
            )),
            SimpleRule::RunAsNonRoot
            | SimpleRule::Privileged
            | SimpleRule::PrivilegeEscalation
            | SimpleRule::HostPorts => {
                for container in &input.subject.pod.containers {
                    for (found, fix) in self.judge_container(input, container) {
                        findings.push(finding(
                            self.kind.id(),
                            container_subject(container),
                            self.mode,
                            found,
                            fix,
                        ));
                    }
                }
            }
        }
        Ok(findings)
    }
}

fn container_subject(container: &ContainerView) -> Subject {
    Subject::Container {
        container: container.name.clone(),
        kind: container.kind,
        image: container.image.clone(),
    }
}

fn no_latest_tag(image: &ImageRef) -> Option<(String, String)> {
    // A digest pins the content whatever the tag says.
    if image.digest().is_some() {
        return None;
    }
    let found = if !image.tag_written() {
        "no tag, so the mutable \"latest\" is pulled".to_owned()
    } else if image.tag() == Some("latest") {
        "tag \"latest\" is mutable".to_owned()
    } else {
        return None;
    };
    Some((
        found,
        format!(
            "pin a version: {}:<version>, better {}:<version>@sha256:<digest>",
            image.repository_path(),
            image.repository_path()
        ),
    ))
}

fn require_digest(image: &ImageRef) -> Option<(String, String)> {
    image.digest().is_none().then(|| {
        (
            "not pinned to a digest".to_owned(),
            format!(
                "pin the digest: {}@sha256:<digest> (skopeo inspect or crane digest prints it)",
                image.normalized()
            ),
        )
    })
}

impl ContainerRule {
    fn judge_container(&self, input: &PolicyInput<'_>, c: &ContainerView) -> Vec<(String, String)> {
        match self.kind {
            SimpleRule::RunAsNonRoot => {
                let user = c.run_as_user.or(input.subject.pod.pod.run_as_user);
                let non_root = c.run_as_non_root.or(input.subject.pod.pod.run_as_non_root);
                let fix = "set securityContext.runAsNonRoot: true and runAsUser to a non-zero UID";
                match (user, non_root) {
                    (Some(0), _) => vec![("runAsUser is 0 (root)".into(), fix.into())],
                    (Some(_), _) | (None, Some(true)) => vec![],
                    (None, Some(false)) => vec![(
                        "runAsNonRoot is false and no runAsUser is set, so it may run as root"
                            .into(),
                        fix.into(),
                    )],
                    (None, None) => vec![(
                        "neither runAsNonRoot nor runAsUser is set, so it may run as root".into(),
                        fix.into(),
                    )],
                }
            }
            SimpleRule::Privileged => match c.privileged {
                Some(true) => vec![(
                    "securityContext.privileged is true".into(),
                    "remove privileged: true; add only the capabilities it needs".into(),
                )],
                _ => vec![],
            },
            SimpleRule::PrivilegeEscalation => {
                let found = match c.allow_privilege_escalation {
                    Some(false) => return vec![],
                    Some(true) => "allowPrivilegeEscalation is true",
                    None => "allowPrivilegeEscalation is not set (defaults to true)",
                };
                vec![(
                    found.into(),
                    "set securityContext.allowPrivilegeEscalation: false".into(),
                )]
            }
            SimpleRule::HostPorts => c
                .ports
                .iter()
                .filter_map(|p| {
                    let host = p.host_port.filter(|h| *h != 0)?;
                    Some((
                        format!(
                            "hostPort {host} is bound on the node (containerPort {})",
                            p.container_port
                        ),
                        "remove hostPort; expose the port through a Service".into(),
                    ))
                })
                .collect(),
            SimpleRule::NoLatestTag | SimpleRule::RequireDigest => vec![],
        }
    }
}

#[derive(Debug)]
struct HostNamespacesRule {
    mode: Mode,
}

impl Policy for HostNamespacesRule {
    fn name(&self) -> &str {
        rule::HOST_NAMESPACES
    }
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError> {
        let pod = &input.subject.pod.pod;
        Ok([
            (pod.host_network, "hostNetwork"),
            (pod.host_pid, "hostPID"),
            (pod.host_ipc, "hostIPC"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, field)| {
            finding(
                rule::HOST_NAMESPACES,
                Subject::Pod,
                self.mode,
                format!("{field} is true: the pod shares the node's namespace"),
                format!("remove {field} from the pod spec"),
            )
        })
        .collect())
    }
}

#[derive(Debug)]
struct ContainerPortsRule {
    allowed: Vec<RangeInclusive<u16>>,
    shown: String,
    mode: Mode,
}

impl Policy for ContainerPortsRule {
    fn name(&self) -> &str {
        rule::CONTAINER_PORTS
    }
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError> {
        let mut findings = Vec::new();
        for container in &input.subject.pod.containers {
            for port in &container.ports {
                let allowed = u16::try_from(port.container_port)
                    .is_ok_and(|p| self.allowed.iter().any(|range| range.contains(&p)));
                if !allowed {
                    findings.push(finding(
                        rule::CONTAINER_PORTS,
                        container_subject(container),
                        self.mode,
                        format!("containerPort {} is not allowed", port.container_port),
                        format!("listen on an allowed port ({})", self.shown),
                    ));
                }
            }
        }
        Ok(findings)
    }
}

/// An image policy's signature requirement, judged on gathered evidence.
#[derive(Debug)]
struct SignatureRule {
    globs: ImageGlobs,
    mode: Mode,
    policy: ImagePolicy,
}

impl Policy for SignatureRule {
    fn name(&self) -> &str {
        &self.policy.name
    }
    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError> {
        let name = &self.policy.name;
        Ok(input
            .subject
            .images
            .iter()
            .filter_map(|entry| {
                let image = entry.reference.as_ref().ok()?;
                if !self.globs.matches(image) {
                    return None;
                }
                let evidence = match entry.evidence.as_ref() {
                    // Gathering failed: the engine applies the configured onError outcome to
                    // the whole request, so this rule has nothing to judge.
                    Some(Err(_)) => return None,
                    Some(Ok(evidence)) => Some(evidence),
                    None => None,
                };
                let reason = match evidence.map(|e| e.signatures_for(name)) {
                    Some(SignatureEvidence::Verified { .. }) => {
                        // Signatures hold; required attestations may still be missing.
                        let missing = evidence
                            .and_then(|e| e.verification(name))
                            .map(|v| v.missing_attestations.clone())
                            .unwrap_or_default();
                        if missing.is_empty() {
                            return None;
                        }
                        let digest = evidence
                            .and_then(|e| e.digest.clone())
                            .unwrap_or_else(|| "<digest>".into());
                        return Some(finding(
                            rule::SIGNATURE,
                            entry.subject(),
                            self.mode,
                            format!(
                                "imagePolicy {name:?} requires attestations signed by its keys: \
                                 none verified of type {}",
                                missing.join(", ")
                            ),
                            format!(
                                "attest the digest: cosign attest --key <key> --type <type> \
                                 --predicate <file> {}@{digest}",
                                image.repository_path()
                            ),
                        ));
                    }
                    Some(
                        SignatureEvidence::Unverified { reason }
                        | SignatureEvidence::Unavailable { reason },
                    ) => reason.clone(),
                    None => "no signature evidence was gathered".into(),
                };
                let digest = evidence
                    .and_then(|e| e.digest.clone())
                    .unwrap_or_else(|| "<digest>".into());
                Some(finding(
                    rule::SIGNATURE,
                    entry.subject(),
                    self.mode,
                    format!("imagePolicy {name:?} requires a signature: {reason}"),
                    format!(
                        "sign the digest with a key imagePolicy {name:?} trusts: \
                         cosign sign --key <key> {}@{digest}",
                        image.repository_path()
                    ),
                ))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadedConfig;
    use crate::evidence::{EvidenceError, ImageEvidence, PolicyVerification};
    use crate::policy::{ImageEntry, ScanState};
    use crate::subject::ReviewSubject;
    use crate::workload::{ContainerKind, PodView};
    use serde_json::{Value, json};
    use time::OffsetDateTime;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// The built-in rules of a configuration written as YAML (parsed and validated).
    fn rules(yaml: &str) -> Vec<Box<dyn Policy>> {
        let loaded = LoadedConfig::from_yaml(yaml, "test").unwrap();
        from_config(&loaded.config).unwrap()
    }

    /// The one rule named `name` of a configuration.
    fn rule(yaml: &str, name: &str) -> Box<dyn Policy> {
        rules(yaml)
            .into_iter()
            .find(|p| p.name() == name)
            .unwrap_or_else(|| panic!("no rule {name} in {yaml}"))
    }

    /// The pod view of a Pod's `spec`.
    fn pod(spec: Value) -> PodView {
        crate::workload::extract("", "Pod", &json!({ "spec": spec }))
            .unwrap()
            .unwrap()
    }

    /// A CREATE subject with every image site of the pod, as the engine builds it.
    fn subject(pod: PodView) -> ReviewSubject {
        let images = pod
            .image_sites()
            .map(|site| ImageEntry {
                container: site.name.to_owned(),
                container_kind: site.kind,
                reference: ImageRef::parse(site.image),
                evidence: None,
                scan: ScanState::NotRequested,
                lifecycle: Default::default(),
            })
            .collect();
        ReviewSubject {
            pod,
            images,
            ..ReviewSubject::new("CREATE", "Pod", "team", "app")
        }
    }

    fn judge_subject(policy: &dyn Policy, subject: &ReviewSubject) -> Vec<Finding> {
        let input = PolicyInput {
            subject,
            now: OffsetDateTime::UNIX_EPOCH,
            document: None,
        };
        policy.evaluate(&input).unwrap()
    }

    fn judge(policy: &dyn Policy, spec: Value) -> Vec<Finding> {
        judge_subject(policy, &subject(pod(spec)))
    }

    /// A pod spec with one container `app` running `image`, otherwise compliant.
    fn one_container(image: &str) -> Value {
        json!({"containers": [{"name": "app", "image": image}]})
    }

    fn container(name: &str, kind: ContainerKind, image: &str) -> Subject {
        Subject::Container {
            container: name.into(),
            kind,
            image: image.into(),
        }
    }

    // --- image-reference ---

    #[test]
    fn an_invalid_image_reference_is_denied_even_in_audit_mode() {
        let policy = rule("mode: audit", rule::IMAGE_REFERENCE);
        let found = judge(&*policy, one_container("Not A Ref"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, rule::IMAGE_REFERENCE);
        assert_eq!(found[0].mode, Mode::Enforce);
        assert_eq!(
            found[0].subject,
            container("app", ContainerKind::Container, "Not A Ref")
        );
        assert!(!found[0].found.is_empty());
        assert!(
            found[0].fix.contains("[registry[:port]/]repository"),
            "{}",
            found[0].fix
        );
    }

    #[test]
    fn a_container_without_an_image_is_an_invalid_reference() {
        let policy = rule("{}", rule::IMAGE_REFERENCE);
        let found = judge(&*policy, json!({"containers": [{"name": "app"}]}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].found, "the image is empty");
        assert_eq!(
            found[0].subject,
            container("app", ContainerKind::Container, "")
        );
    }

    #[test]
    fn an_image_volume_without_a_reference_is_an_invalid_reference() {
        let policy = rule("{}", rule::IMAGE_REFERENCE);
        let spec = json!({"containers": [{"name": "app", "image": "nginx:1.27"}],
                          "volumes": [{"name": "data", "image": {}}]});
        let found = judge(&*policy, spec);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].subject,
            container("data", ContainerKind::ImageVolume, "")
        );
    }

    #[test]
    fn valid_references_are_no_image_reference_finding() {
        let policy = rule("{}", rule::IMAGE_REFERENCE);
        for image in [
            "nginx",
            "nginx:1.27",
            "127.0.0.1:5000/team/app:v1",
            &format!("ghcr.io/acme/app@{DIGEST}"),
        ] {
            assert_eq!(judge(&*policy, one_container(image)), [], "{image}");
        }
    }

    // --- trusted-registry ---

    const TRUSTED: &str = r#"trustedRegistries: ["docker.io/library/**", "ghcr.io/acme/*"]"#;

    #[test]
    fn an_image_from_an_untrusted_registry_is_denied_naming_the_trusted_globs() {
        let policy = rule(TRUSTED, rule::TRUSTED_REGISTRY);
        let found = judge(&*policy, one_container("quay.io/evil/app:1.0"));
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.rule, rule::TRUSTED_REGISTRY);
        assert_eq!(f.mode, Mode::Enforce);
        assert_eq!(
            f.subject,
            container("app", ContainerKind::Container, "quay.io/evil/app:1.0")
        );
        assert_eq!(f.found, "quay.io/evil/app is not from a trusted registry");
        assert!(
            f.fix
                .contains("(docker.io/library/**, ghcr.io/acme/*) or add it to trustedRegistries"),
            "{}",
            f.fix
        );
    }

    #[test]
    fn docker_hub_short_names_match_a_trusted_library_glob() {
        let policy = rule(TRUSTED, rule::TRUSTED_REGISTRY);
        for image in ["nginx", "nginx:1.27", &format!("nginx@{DIGEST}")] {
            assert_eq!(judge(&*policy, one_container(image)), [], "{image}");
        }
    }

    #[test]
    fn a_single_star_glob_does_not_trust_nested_repositories() {
        let policy = rule(TRUSTED, rule::TRUSTED_REGISTRY);
        assert_eq!(judge(&*policy, one_container("ghcr.io/acme/app:1")), []);
        let found = judge(&*policy, one_container("ghcr.io/acme/team/app:1"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].found,
            "ghcr.io/acme/team/app is not from a trusted registry"
        );
    }

    #[test]
    fn a_lookalike_registry_host_is_not_trusted() {
        let policy = rule(
            r#"trustedRegistries: ["ghcr.io/**"]"#,
            rule::TRUSTED_REGISTRY,
        );
        assert_eq!(judge(&*policy, one_container("ghcr.io/anyone/app:1")), []);
        for image in [
            "ghcr.io.evil.example/acme/app:1",
            "evil.example/ghcr.io/app:1",
        ] {
            assert_eq!(judge(&*policy, one_container(image)).len(), 1, "{image}");
        }
    }

    #[test]
    fn an_upper_case_registry_host_cannot_escape_the_trusted_globs() {
        let policy = rule(
            r#"trustedRegistries: ["ghcr.io/acme/**"]"#,
            rule::TRUSTED_REGISTRY,
        );
        assert_eq!(judge(&*policy, one_container("GHCR.io/acme/app:1")), []);
        let found = judge(&*policy, one_container("QUAY.io/acme/app:1"));
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].found,
            "quay.io/acme/app is not from a trusted registry"
        );
    }

    #[test]
    fn a_long_trusted_list_is_shortened_in_the_fix() {
        let policy = rule(
            r#"trustedRegistries: ["a.example/**", "b.example/**", "c.example/**", "d.example/**", "e.example/**", "f.example/**"]"#,
            rule::TRUSTED_REGISTRY,
        );
        let found = judge(&*policy, one_container("quay.io/x/app:1"));
        assert!(
            found[0]
                .fix
                .contains("(a.example/**, b.example/**, c.example/**, d.example/** and 2 more)"),
            "{}",
            found[0].fix
        );
    }

    #[test]
    fn the_trusted_registry_rule_is_off_without_trusted_registries_or_when_disabled() {
        let names = |yaml: &str| -> Vec<String> {
            rules(yaml).iter().map(|p| p.name().to_owned()).collect()
        };
        assert!(!names("{}").contains(&rule::TRUSTED_REGISTRY.to_owned()));
        assert!(
            !names(&format!(
                "{TRUSTED}\nrules: {{trustedRegistry: {{enabled: false}}}}"
            ))
            .contains(&rule::TRUSTED_REGISTRY.to_owned())
        );
        assert!(names(TRUSTED).contains(&rule::TRUSTED_REGISTRY.to_owned()));
    }

    #[test]
    fn trusted_registry_judges_init_ephemeral_containers_and_image_volumes() {
        let policy = rule(TRUSTED, rule::TRUSTED_REGISTRY);
        let spec = json!({
            "initContainers": [{"name": "init", "image": "quay.io/x/init:1"}],
            "containers": [{"name": "app", "image": "nginx:1.27"}],
            "ephemeralContainers": [{"name": "debug", "image": "quay.io/x/debug:1"}],
            "volumes": [{"name": "data", "image": {"reference": "quay.io/x/data:1"}},
                        {"name": "scratch", "emptyDir": {}}],
        });
        let subjects: Vec<Subject> = judge(&*policy, spec)
            .into_iter()
            .map(|f| f.subject)
            .collect();
        assert_eq!(
            subjects,
            [
                container("init", ContainerKind::InitContainer, "quay.io/x/init:1"),
                container(
                    "debug",
                    ContainerKind::EphemeralContainer,
                    "quay.io/x/debug:1"
                ),
                container("data", ContainerKind::ImageVolume, "quay.io/x/data:1"),
            ]
        );
    }

    #[test]
    fn invalid_references_are_left_to_the_image_reference_rule() {
        let policy = rule(TRUSTED, rule::TRUSTED_REGISTRY);
        assert_eq!(judge(&*policy, one_container("Not A Ref")), []);
        let policy = rule("{}", rule::NO_LATEST_TAG);
        assert_eq!(judge(&*policy, one_container("Not A Ref")), []);
    }

    // --- no-latest-tag ---

    #[test]
    fn latest_tag_is_denied_when_rule_enabled() {
        let policy = rule("{}", rule::NO_LATEST_TAG);
        let found = judge(&*policy, one_container("nginx:latest"));
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.rule, rule::NO_LATEST_TAG);
        assert_eq!(
            f.subject,
            container("app", ContainerKind::Container, "nginx:latest")
        );
        assert_eq!(f.found, "tag \"latest\" is mutable");
        assert_eq!(
            f.fix,
            "pin a version: docker.io/library/nginx:<version>, better \
             docker.io/library/nginx:<version>@sha256:<digest>"
        );
    }

    #[test]
    fn an_image_without_tag_or_digest_is_denied_as_pulling_latest() {
        let policy = rule("{}", rule::NO_LATEST_TAG);
        for image in ["nginx", "localhost:5000/app", "127.0.0.1:5000/team/app"] {
            let found = judge(&*policy, one_container(image));
            assert_eq!(found.len(), 1, "{image}: {found:?}");
            assert_eq!(
                found[0].found, "no tag, so the mutable \"latest\" is pulled",
                "{image}"
            );
        }
    }

    #[test]
    fn a_version_tag_is_not_a_latest_finding() {
        let policy = rule("{}", rule::NO_LATEST_TAG);
        for image in [
            "nginx:1.27",
            "localhost:5000/app:v1",
            "ghcr.io/acme/latest:1.0",
        ] {
            assert_eq!(judge(&*policy, one_container(image)), [], "{image}");
        }
    }

    #[test]
    fn a_digest_pins_the_image_whatever_its_tag_says() {
        let policy = rule("{}", rule::NO_LATEST_TAG);
        for image in [format!("nginx@{DIGEST}"), format!("nginx:latest@{DIGEST}")] {
            assert_eq!(judge(&*policy, one_container(&image)), [], "{image}");
        }
    }

    #[test]
    fn latest_is_judged_on_image_volumes_too() {
        let policy = rule("{}", rule::NO_LATEST_TAG);
        let spec = json!({"containers": [{"name": "app", "image": "nginx:1.27"}],
                          "volumes": [{"name": "data", "image": {"reference": "acme/data:latest"}}]});
        let found = judge(&*policy, spec);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].subject,
            container("data", ContainerKind::ImageVolume, "acme/data:latest")
        );
    }

    #[test]
    fn the_latest_rule_is_absent_when_disabled_and_takes_its_own_mode() {
        assert!(
            rules("rules: {noLatestTag: {enabled: false}}")
                .iter()
                .all(|p| p.name() != rule::NO_LATEST_TAG)
        );
        let policy = rule(
            "mode: enforce\nrules: {noLatestTag: {mode: warn}}",
            rule::NO_LATEST_TAG,
        );
        assert_eq!(judge(&*policy, one_container("nginx"))[0].mode, Mode::Warn);
        let policy = rule("mode: audit", rule::NO_LATEST_TAG);
        assert_eq!(judge(&*policy, one_container("nginx"))[0].mode, Mode::Audit);
    }

    // --- require-digest ---

    const DIGESTS: &str = "rules: {requireDigest: {enabled: true}}";

    #[test]
    fn require_digest_is_off_by_default() {
        assert!(rules("{}").iter().all(|p| p.name() != rule::REQUIRE_DIGEST));
    }

    #[test]
    fn a_tag_without_digest_is_denied_when_digests_are_required() {
        let policy = rule(DIGESTS, rule::REQUIRE_DIGEST);
        let found = judge(&*policy, one_container("nginx:1.27"));
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.rule, rule::REQUIRE_DIGEST);
        assert_eq!(
            f.subject,
            container("app", ContainerKind::Container, "nginx:1.27")
        );
        assert_eq!(f.found, "not pinned to a digest");
        assert!(
            f.fix
                .starts_with("pin the digest: docker.io/library/nginx:1.27@sha256:<digest>"),
            "{}",
            f.fix
        );
    }

    #[test]
    fn a_digest_pinned_image_satisfies_require_digest() {
        let policy = rule(DIGESTS, rule::REQUIRE_DIGEST);
        for image in [format!("nginx@{DIGEST}"), format!("nginx:1.27@{DIGEST}")] {
            assert_eq!(judge(&*policy, one_container(&image)), [], "{image}");
        }
        assert_eq!(judge(&*policy, one_container("nginx")).len(), 1);
    }

    // --- run-as-non-root ---

    fn with_security(container: Value, pod: Value) -> Value {
        let mut c = json!({"name": "app", "image": "nginx:1.27"});
        c["securityContext"] = container;
        json!({"containers": [c], "securityContext": pod})
    }

    #[test]
    fn a_container_without_run_as_settings_may_run_as_root() {
        let policy = rule("{}", rule::RUN_AS_NON_ROOT);
        let found = judge(&*policy, one_container("nginx:1.27"));
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.rule, rule::RUN_AS_NON_ROOT);
        assert_eq!(
            f.subject,
            container("app", ContainerKind::Container, "nginx:1.27")
        );
        assert_eq!(
            f.found,
            "neither runAsNonRoot nor runAsUser is set, so it may run as root"
        );
        assert!(f.fix.contains("runAsNonRoot: true"), "{}", f.fix);
    }

    #[test]
    fn run_as_user_zero_is_root_even_with_run_as_non_root() {
        let policy = rule("{}", rule::RUN_AS_NON_ROOT);
        let found = judge(
            &*policy,
            with_security(json!({"runAsUser": 0, "runAsNonRoot": true}), json!({})),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].found, "runAsUser is 0 (root)");
    }

    #[test]
    fn run_as_non_root_false_without_a_user_may_run_as_root() {
        let policy = rule("{}", rule::RUN_AS_NON_ROOT);
        let found = judge(
            &*policy,
            with_security(json!({"runAsNonRoot": false}), json!({})),
        );
        assert_eq!(
            found[0].found,
            "runAsNonRoot is false and no runAsUser is set, so it may run as root"
        );
    }

    #[test]
    fn a_non_zero_user_or_run_as_non_root_passes() {
        let policy = rule("{}", rule::RUN_AS_NON_ROOT);
        for (c, p) in [
            (json!({"runAsUser": 1000}), json!({})),
            (json!({"runAsNonRoot": true}), json!({})),
            (json!({}), json!({"runAsNonRoot": true})),
            (json!({}), json!({"runAsUser": 1000})),
        ] {
            assert_eq!(
                judge(&*policy, with_security(c.clone(), p.clone())),
                [],
                "{c} {p}"
            );
        }
    }

    #[test]
    fn container_run_as_settings_override_the_pods() {
        let policy = rule("{}", rule::RUN_AS_NON_ROOT);
        // The pod says root, the container a non-zero user: the container wins.
        assert_eq!(
            judge(
                &*policy,
                with_security(json!({"runAsUser": 1000}), json!({"runAsUser": 0}))
            ),
            []
        );
        // The pod says non-root, the container turns it off: the container wins.
        let found = judge(
            &*policy,
            with_security(
                json!({"runAsNonRoot": false}),
                json!({"runAsNonRoot": true}),
            ),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        // The pod's root user still applies when the container names no user.
        let found = judge(
            &*policy,
            with_security(json!({"runAsNonRoot": true}), json!({"runAsUser": 0})),
        );
        assert_eq!(found[0].found, "runAsUser is 0 (root)");
    }

    #[test]
    fn container_rules_judge_init_and_ephemeral_containers_but_not_image_volumes() {
        let policy = rule("{}", rule::RUN_AS_NON_ROOT);
        let spec = json!({
            "securityContext": {"runAsUser": 1000},
            "initContainers": [{"name": "init", "image": "busybox:1",
                                "securityContext": {"runAsUser": 0}}],
            "containers": [{"name": "app", "image": "nginx:1.27"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox:1",
                                     "securityContext": {"runAsUser": 0}}],
            "volumes": [{"name": "data", "image": {"reference": "acme/data:1"}}],
        });
        let subjects: Vec<Subject> = judge(&*policy, spec)
            .into_iter()
            .map(|f| f.subject)
            .collect();
        assert_eq!(
            subjects,
            [
                container("init", ContainerKind::InitContainer, "busybox:1"),
                container("debug", ContainerKind::EphemeralContainer, "busybox:1"),
            ]
        );
    }

    #[test]
    fn container_rules_judge_containers_whose_reference_is_invalid() {
        // Unlike the image rules, the security rules read the container, not the reference.
        let policy = rule("{}", rule::RUN_AS_NON_ROOT);
        let found = judge(&*policy, one_container("Not A Ref"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].subject,
            container("app", ContainerKind::Container, "Not A Ref")
        );
    }

    // --- privileged ---

    #[test]
    fn a_privileged_container_is_denied() {
        let policy = rule("{}", rule::PRIVILEGED);
        let found = judge(
            &*policy,
            with_security(json!({"privileged": true}), json!({})),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.rule, rule::PRIVILEGED);
        assert_eq!(
            f.subject,
            container("app", ContainerKind::Container, "nginx:1.27")
        );
        assert_eq!(f.found, "securityContext.privileged is true");
        assert!(f.fix.contains("remove privileged: true"), "{}", f.fix);
    }

    #[test]
    fn an_unprivileged_or_unset_container_is_not_a_privileged_finding() {
        let policy = rule("{}", rule::PRIVILEGED);
        assert_eq!(
            judge(
                &*policy,
                with_security(json!({"privileged": false}), json!({}))
            ),
            []
        );
        assert_eq!(judge(&*policy, one_container("nginx:1.27")), []);
    }

    // --- privilege-escalation ---

    #[test]
    fn privilege_escalation_must_be_explicitly_false() {
        let policy = rule("{}", rule::PRIVILEGE_ESCALATION);
        let unset = judge(&*policy, one_container("nginx:1.27"));
        assert_eq!(unset.len(), 1, "{unset:?}");
        assert_eq!(unset[0].rule, rule::PRIVILEGE_ESCALATION);
        assert_eq!(
            unset[0].found,
            "allowPrivilegeEscalation is not set (defaults to true)"
        );
        assert_eq!(
            unset[0].fix,
            "set securityContext.allowPrivilegeEscalation: false"
        );
        let on = judge(
            &*policy,
            with_security(json!({"allowPrivilegeEscalation": true}), json!({})),
        );
        assert_eq!(on[0].found, "allowPrivilegeEscalation is true");
        assert_eq!(
            judge(
                &*policy,
                with_security(json!({"allowPrivilegeEscalation": false}), json!({}))
            ),
            []
        );
    }

    // --- host-namespaces ---

    #[test]
    fn each_host_namespace_is_a_pod_level_finding() {
        let policy = rule("{}", rule::HOST_NAMESPACES);
        let spec = json!({"hostNetwork": true, "hostPID": true, "hostIPC": true,
                          "containers": [{"name": "app", "image": "nginx:1.27"}]});
        let found = judge(&*policy, spec);
        let texts: Vec<&str> = found.iter().map(|f| f.found.as_str()).collect();
        assert_eq!(
            texts,
            [
                "hostNetwork is true: the pod shares the node's namespace",
                "hostPID is true: the pod shares the node's namespace",
                "hostIPC is true: the pod shares the node's namespace",
            ]
        );
        assert!(found.iter().all(|f| f.subject == Subject::Pod));
        assert!(found.iter().all(|f| f.rule == rule::HOST_NAMESPACES));
        assert_eq!(found[1].fix, "remove hostPID from the pod spec");
    }

    #[test]
    fn host_namespaces_set_false_or_absent_are_no_finding() {
        let policy = rule("{}", rule::HOST_NAMESPACES);
        assert_eq!(judge(&*policy, one_container("nginx:1.27")), []);
        let spec = json!({"hostNetwork": false, "hostPID": false, "hostIPC": false,
                          "containers": [{"name": "app", "image": "nginx:1.27"}]});
        assert_eq!(judge(&*policy, spec), []);
    }

    // --- host-ports ---

    #[test]
    fn a_host_port_is_denied_per_port() {
        let policy = rule("{}", rule::HOST_PORTS);
        let spec = json!({"containers": [{"name": "app", "image": "nginx:1.27", "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 443},
            {"containerPort": 9090, "hostPort": 0},
            {"containerPort": 53, "hostPort": 53},
        ]}]});
        let found = judge(&*policy, spec);
        let texts: Vec<&str> = found.iter().map(|f| f.found.as_str()).collect();
        assert_eq!(
            texts,
            [
                "hostPort 8080 is bound on the node (containerPort 80)",
                "hostPort 53 is bound on the node (containerPort 53)",
            ]
        );
        assert_eq!(found[0].rule, rule::HOST_PORTS);
        assert_eq!(
            found[0].fix,
            "remove hostPort; expose the port through a Service"
        );
        assert_eq!(
            found[0].subject,
            container("app", ContainerKind::Container, "nginx:1.27")
        );
    }

    #[test]
    fn container_ports_without_host_ports_are_no_host_port_finding() {
        let policy = rule("{}", rule::HOST_PORTS);
        let spec = json!({"containers": [{"name": "app", "image": "nginx:1.27",
                                          "ports": [{"containerPort": 80}]}]});
        assert_eq!(judge(&*policy, spec), []);
    }

    // --- container-ports ---

    const PORTS: &str =
        r#"rules: {containerPorts: {enabled: true, mode: warn, allowed: ["8080", "9000-9100"]}}"#;

    #[test]
    fn container_ports_is_off_by_default() {
        assert!(
            rules("{}")
                .iter()
                .all(|p| p.name() != rule::CONTAINER_PORTS)
        );
    }

    #[test]
    fn a_port_outside_the_allowed_list_is_a_finding_in_the_rules_mode() {
        let policy = rule(PORTS, rule::CONTAINER_PORTS);
        let spec = json!({"containers": [{"name": "app", "image": "nginx:1.27", "ports": [
            {"containerPort": 8080}, {"containerPort": 9000}, {"containerPort": 9100},
            {"containerPort": 80}, {"containerPort": 9101},
        ]}]});
        let found = judge(&*policy, spec);
        let texts: Vec<&str> = found.iter().map(|f| f.found.as_str()).collect();
        assert_eq!(
            texts,
            [
                "containerPort 80 is not allowed",
                "containerPort 9101 is not allowed"
            ]
        );
        assert!(found.iter().all(|f| f.mode == Mode::Warn));
        assert_eq!(found[0].rule, rule::CONTAINER_PORTS);
        assert_eq!(found[0].fix, "listen on an allowed port (8080, 9000-9100)");
    }

    #[test]
    fn a_container_port_outside_the_u16_range_is_never_allowed() {
        let policy = rule(
            r#"rules: {containerPorts: {enabled: true, allowed: ["1-65535"]}}"#,
            rule::CONTAINER_PORTS,
        );
        let spec = json!({"containers": [{"name": "app", "image": "nginx:1.27", "ports": [
            {"containerPort": 65535}, {"containerPort": 70000}, {"containerPort": -1},
        ]}]});
        let texts: Vec<String> = judge(&*policy, spec).into_iter().map(|f| f.found).collect();
        assert_eq!(
            texts,
            [
                "containerPort 70000 is not allowed",
                "containerPort -1 is not allowed"
            ]
        );
    }

    // --- wiring ---

    #[test]
    fn rule_modes_override_the_default_mode() {
        let all = rules("mode: audit\nrules: {privileged: {mode: enforce}}");
        let privileged = all.iter().find(|p| p.name() == rule::PRIVILEGED).unwrap();
        let escalation = all
            .iter()
            .find(|p| p.name() == rule::PRIVILEGE_ESCALATION)
            .unwrap();
        let spec = with_security(json!({"privileged": true}), json!({}));
        assert_eq!(judge(&**privileged, spec.clone())[0].mode, Mode::Enforce);
        assert_eq!(judge(&**escalation, spec)[0].mode, Mode::Audit);
    }

    #[test]
    fn built_in_rules_are_built_in_the_code_order() {
        // The code order; docs/configuration.md's table lists host-namespaces before
        // host-ports (the order only decides the order of message lines).
        let all = r#"rules: {requireDigest: {enabled: true}, containerPorts: {enabled: true, allowed: ["80"]}}"#;
        let names: Vec<String> = rules(&format!("{TRUSTED}\n{all}"))
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                rule::IMAGE_REFERENCE,
                rule::TRUSTED_REGISTRY,
                rule::NO_LATEST_TAG,
                rule::REQUIRE_DIGEST,
                rule::RUN_AS_NON_ROOT,
                rule::PRIVILEGED,
                rule::PRIVILEGE_ESCALATION,
                rule::HOST_PORTS,
                rule::HOST_NAMESPACES,
                rule::CONTAINER_PORTS,
            ]
        );
    }

    // --- signature ---

    const SIGNED: &str = r#"
mode: warn
imagePolicies:
  - name: team
    images: ["ghcr.io/acme/**"]
    mode: enforce
    signatures:
      keyless: [{issuer: "https://issuer.example", subject: "ci@acme.example"}]
"#;

    fn signature_rule() -> Box<dyn Policy> {
        let policy = rule(SIGNED, "team");
        assert_eq!(
            policy.name(),
            "team",
            "the rule is named after its image policy"
        );
        policy
    }

    fn with_evidence(
        image: &str,
        evidence: Option<Result<ImageEvidence, EvidenceError>>,
    ) -> ReviewSubject {
        let mut subject = subject(pod(one_container(image)));
        subject.images[0].evidence = evidence.map(|e| e.map(std::sync::Arc::new));
        subject
    }

    fn evidence(digest: Option<&str>, signatures: SignatureEvidence) -> ImageEvidence {
        ImageEvidence::signatures_only(digest.map(str::to_owned), signatures)
    }

    #[test]
    fn an_unverified_image_is_denied_with_the_policy_and_its_reason() {
        let subject = with_evidence(
            "ghcr.io/acme/app:1.0",
            Some(Ok(evidence(
                Some(DIGEST),
                SignatureEvidence::Unverified {
                    reason: "no signature found".into(),
                },
            ))),
        );
        let found = judge_subject(&*signature_rule(), &subject);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.rule, rule::SIGNATURE);
        assert_eq!(f.mode, Mode::Enforce, "the image policy's mode wins");
        assert_eq!(
            f.subject,
            container("app", ContainerKind::Container, "ghcr.io/acme/app:1.0")
        );
        assert_eq!(
            f.found,
            "imagePolicy \"team\" requires a signature: no signature found"
        );
        assert_eq!(
            f.fix,
            format!(
                "sign the digest with a key imagePolicy \"team\" trusts: cosign sign --key <key> \
                 ghcr.io/acme/app@{DIGEST}"
            )
        );
    }

    #[test]
    fn unavailable_signature_checks_fail_closed() {
        let subject = with_evidence(
            "ghcr.io/acme/app:1.0",
            Some(Ok(evidence(
                Some(DIGEST),
                SignatureEvidence::Unavailable {
                    reason: "this build cannot verify".into(),
                },
            ))),
        );
        let found = judge_subject(&*signature_rule(), &subject);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].found.ends_with("this build cannot verify"),
            "{}",
            found[0].found
        );
    }

    #[test]
    fn a_matching_image_without_gathered_evidence_is_denied_with_a_digest_placeholder() {
        let subject = with_evidence("ghcr.io/acme/app:1.0", None);
        let found = judge_subject(&*signature_rule(), &subject);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].found,
            "imagePolicy \"team\" requires a signature: no signature evidence was gathered"
        );
        assert!(
            found[0].fix.ends_with("ghcr.io/acme/app@<digest>"),
            "{}",
            found[0].fix
        );
    }

    #[test]
    fn a_verified_image_is_no_signature_finding() {
        let subject = with_evidence(
            "ghcr.io/acme/app:1.0",
            Some(Ok(evidence(
                Some(DIGEST),
                SignatureEvidence::Verified {
                    signers: vec!["keyless ci@acme.example".into()],
                },
            ))),
        );
        assert_eq!(judge_subject(&*signature_rule(), &subject), []);
    }

    #[test]
    fn the_policys_own_verification_wins_over_the_overall_state() {
        let mut e = evidence(
            Some(DIGEST),
            SignatureEvidence::Verified {
                signers: vec!["other".into()],
            },
        );
        e.verifications.push(PolicyVerification {
            policy: "team".into(),
            signatures: SignatureEvidence::Unverified {
                reason: "signed by another identity".into(),
            },
            attestations: Vec::new(),
            missing_attestations: Vec::new(),
            found: Vec::new(),
        });
        let subject = with_evidence("ghcr.io/acme/app:1.0", Some(Ok(e)));
        let found = judge_subject(&*signature_rule(), &subject);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].found.ends_with("signed by another identity"));
    }

    #[test]
    fn verified_signatures_with_missing_attestations_are_denied_naming_the_types() {
        let mut e = evidence(
            Some(DIGEST),
            SignatureEvidence::Verified {
                signers: vec!["k".into()],
            },
        );
        e.verifications.push(PolicyVerification {
            policy: "team".into(),
            signatures: SignatureEvidence::Verified {
                signers: vec!["k".into()],
            },
            attestations: Vec::new(),
            missing_attestations: vec![
                "https://slsa.dev/provenance/v1".into(),
                "https://spdx.dev/Document".into(),
            ],
            found: Vec::new(),
        });
        let subject = with_evidence("ghcr.io/acme/app:1.0", Some(Ok(e)));
        let found = judge_subject(&*signature_rule(), &subject);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.rule, rule::SIGNATURE);
        assert_eq!(
            f.found,
            "imagePolicy \"team\" requires attestations signed by its keys: none verified of \
             type https://slsa.dev/provenance/v1, https://spdx.dev/Document"
        );
        assert!(
            f.fix.starts_with("attest the digest: cosign attest"),
            "{}",
            f.fix
        );
        assert!(
            f.fix.ends_with(&format!("ghcr.io/acme/app@{DIGEST}")),
            "{}",
            f.fix
        );
    }

    #[test]
    fn images_outside_the_policy_or_with_failed_gathering_are_not_judged_by_it() {
        let unsigned = || {
            Some(Ok(evidence(
                Some(DIGEST),
                SignatureEvidence::Unverified {
                    reason: "none".into(),
                },
            )))
        };
        let policy = signature_rule();
        assert_eq!(
            judge_subject(&*policy, &with_evidence("quay.io/acme/app:1.0", unsigned())),
            []
        );
        assert_eq!(
            judge_subject(
                &*policy,
                &with_evidence("ghcr.io/acme.evil/app:1.0", unsigned())
            ),
            []
        );
        let failed = Some(Err(EvidenceError::new(
            "ghcr.io/acme/app:1.0",
            "ghcr.io",
            "registry down",
        )));
        assert_eq!(
            judge_subject(&*policy, &with_evidence("ghcr.io/acme/app:1.0", failed)),
            [],
            "onError is the engine's, not the rule's"
        );
    }
}
