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
                        let digest = evidence.and_then(|e| e.digest.clone()).unwrap_or_default();
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
