//! Typed configuration: the YAML file users write, its validation (every error names its key
//! path), the embedded default, and the identity hash that every decision carries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::reference::{GlobError, ImageGlobs};

/// The configuration `serve` and `check` use when no `--config` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("default-config.yaml");

/// Default maximum AdmissionReview body: the API server's own limit for objects is ~3 MiB,
/// but an UPDATE carries two copies of the object plus metadata.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 7 * 1024 * 1024;

/// Default bound on the bytes of request bodies held in memory at once, over every
/// connection: four bodies of the largest size, or thousands of ordinary (10–50 KiB) reviews.
pub const DEFAULT_MAX_BUFFERED_REQUEST_BYTES: u64 = 32 * 1024 * 1024;

/// The largest `limits.maxBufferedRequestBytes` (the byte semaphore counts in `u32`).
pub const MAX_BUFFERED_REQUEST_BYTES: u64 = 1024 * 1024 * 1024;

/// Errors found while reading or validating a configuration. Each names where it was found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: at `{key}`: {message}")]
    Syntax {
        origin: String,
        key: String,
        message: String,
    },
    #[error(
        "{origin}: the configuration is empty (nothing but whitespace or comments). An empty \
         file (or ConfigMap value) is refused because it would silently run without any image \
         policy or trusted registry. For the embedded default configuration, omit --config \
         (and PORTCULLIS_CONFIG); for the built-in default of every key, say so explicitly \
         with `{{}}` or write the keys you mean (e.g. `mode: enforce`)"
    )]
    Empty { origin: String },
    #[error("{origin}: {} problem(s):\n{}", .problems.len(), .problems.iter().map(|p| format!("  - `{}`: {}", p.key, p.message)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// One validation problem: the key path (`rules.containerPorts.allowed[1]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// How a finding is acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Report only: allowed, recorded in auditAnnotations and logs.
    Audit,
    /// Allowed with a warning shown to the client.
    Warn,
    /// Denied.
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Audit => "audit",
            Mode::Warn => "warn",
            Mode::Enforce => "enforce",
        }
    }
}

/// What happens when evidence cannot be gathered in time (registry down, deadline reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail closed (the default).
    #[default]
    Deny,
    /// Fail open, with a warning naming the error.
    Allow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_mode")]
    pub mode: Mode,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub exclude: Exclude,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub registries: Vec<RegistrySettings>,
    #[serde(default)]
    pub trusted_registries: Vec<String>,
    #[serde(default)]
    pub image_policies: Vec<ImagePolicy>,
    #[serde(default)]
    pub rules: Rules,
    #[serde(default)]
    pub policies: Policies,
    /// Where cached scan reports come from.
    #[serde(default)]
    pub scans: crate::scan::ScanSettings,
    /// Re-judge the pods that run, periodically (`serve` only; needs `list` on pods).
    #[serde(default)]
    pub rejudge: Option<RejudgeSettings>,
    /// Images to move away from, with a sunset date.
    #[serde(default)]
    pub deprecated_images: Vec<crate::policy::lifecycle::DeprecatedImage>,
    /// Time-bound waivers.
    #[serde(default)]
    pub exceptions: Vec<crate::exceptions::Exception>,
    /// How registry evidence is gathered and cached (platform, TTLs, limits, credentials).
    #[serde(default)]
    pub evidence: EvidenceSettings,
    /// Where the Sigstore public-good trusted root comes from (embedded unless TUF is on).
    #[serde(default)]
    pub sigstore: SigstoreSettings,
    /// Custom kinds with a pod template (Argo Rollouts, Knative, OpenKruise, ...).
    #[serde(default)]
    pub workloads: WorkloadSettings,
    /// Opt-in digest pinning of Pods by `POST /mutate` (off by default).
    #[serde(default)]
    pub pinning: PinningSettings,
}

/// `pinning`: whether `POST /mutate` rewrites a Pod's verified images to
/// `repo[:tag]@sha256:<digest>` (docs/configuration.md, "Digest pinning"). Off by default:
/// rewriting what users wrote is a choice the cluster's owners make, not a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinningSettings {
    /// Pin images of Pods sent to `/mutate`. Off: `/mutate` answers allowed with no patch.
    #[serde(default)]
    pub enabled: bool,
}

/// `sigstore`: the public-good trusted root that policies without `trustedRoot` use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigstoreSettings {
    /// Opt-in: refresh the root from a TUF repository (clusters with egress). Without it the
    /// root embedded at build time is used.
    #[serde(default)]
    pub tuf: Option<TufSettings>,
}

/// `sigstore.tuf`: the TUF repository the trusted root is refreshed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TufSettings {
    /// The repository (metadata at the root, targets under `targets/`).
    #[serde(default = "default_tuf_url")]
    pub url: String,
    /// The TUF `root.json` trust starts from. Optional for the public-good repository (its
    /// root ships inside portcullis); required for any other.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// A writable directory for verified TUF metadata, so a restart without egress still has
    /// the last verified root (offline, expiry still checked).
    pub cache_dir: PathBuf,
    /// How often the root is refreshed.
    #[serde(default = "default_tuf_refresh")]
    pub refresh_interval_seconds: u64,
}

/// Sigstore's public-good TUF repository.
pub const PUBLIC_GOOD_TUF_URL: &str = "https://tuf-repo-cdn.sigstore.dev";

fn default_tuf_url() -> String {
    PUBLIC_GOOD_TUF_URL.to_owned()
}

fn default_tuf_refresh() -> u64 {
    24 * 60 * 60
}

fn default_mode() -> Mode {
    Mode::Enforce
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exclude {
    /// Namespaces never evaluated (requests there are allowed untouched).
    #[serde(default)]
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Largest AdmissionReview body accepted; larger ones get HTTP 413.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: u64,
    /// Deadline used when the API server sends no `?timeout=` (it always does for v1).
    #[serde(default = "default_timeout_seconds")]
    pub default_timeout_seconds: u64,
    /// How long before the API server's deadline the answer must be on its way.
    #[serde(default = "default_timeout_margin_millis")]
    pub timeout_margin_millis: u64,
    /// Bytes of request bodies held in memory at once, over all connections (read at
    /// start-up). A body that would go over gets HTTP 503 at once instead of being buffered.
    #[serde(default = "default_max_buffered_request_bytes")]
    pub max_buffered_request_bytes: u64,
    /// A request's head (request line and headers) must arrive within this long of its first
    /// byte; a new connection's first head (and its TLS handshake) within this long of the
    /// connection being accepted. Slower clients are disconnected.
    #[serde(default = "default_header_read_timeout_millis")]
    pub header_read_timeout_millis: u64,
    /// A keep-alive connection with no request for this long is closed. Longer than the API
    /// server's own idle timeout (90 s), so that the client, not the server, closes first and
    /// no request is ever sent on a connection the server is closing.
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
    /// Open connections on the webhook port (read at start-up). At the limit, new connections
    /// wait in the listen backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Images (containers, init and ephemeral containers) in one object; an object with more
    /// is denied (rule `max-images`) before any registry is asked.
    #[serde(default = "default_max_images_per_object")]
    pub max_images_per_object: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: default_max_request_bytes(),
            default_timeout_seconds: default_timeout_seconds(),
            timeout_margin_millis: default_timeout_margin_millis(),
            max_buffered_request_bytes: default_max_buffered_request_bytes(),
            header_read_timeout_millis: default_header_read_timeout_millis(),
            idle_timeout_seconds: default_idle_timeout_seconds(),
            max_connections: default_max_connections(),
            max_images_per_object: default_max_images_per_object(),
        }
    }
}

fn default_max_request_bytes() -> u64 {
    DEFAULT_MAX_REQUEST_BYTES
}
fn default_timeout_seconds() -> u64 {
    10
}
fn default_timeout_margin_millis() -> u64 {
    500
}
fn default_max_buffered_request_bytes() -> u64 {
    DEFAULT_MAX_BUFFERED_REQUEST_BYTES
}
fn default_header_read_timeout_millis() -> u64 {
    10_000
}
fn default_idle_timeout_seconds() -> u64 {
    120
}
fn default_max_connections() -> u32 {
    1024
}
fn default_max_images_per_object() -> u32 {
    100
}

/// How to reach one registry (used by the registry evidence layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrySettings {
    pub host: String,
    /// Plain HTTP. Only for loopback development registries.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Credentials for this registry; they take precedence over pull secrets and the docker
    /// config file.
    #[serde(default)]
    pub credentials: Option<RegistryCredentials>,
}

/// Basic-auth credentials for one registry (the registry's bearer-token challenge, if any, is
/// answered with them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryCredentials {
    pub username: String,
    /// The password inline; prefer `passwordFile` (a mounted Secret).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `evidence`: how registry evidence is gathered and cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceSettings {
    /// The platform whose image (in a multi-arch index) facts are read from: `os/arch` or
    /// `os/arch/variant`.
    #[serde(default = "default_platform")]
    pub platform: String,
    /// How long a tag → digest resolution is reused.
    #[serde(default = "default_tag_ttl")]
    pub tag_ttl_seconds: u64,
    /// How long a resolution may be served after its TTL when the registry fails (0: never).
    #[serde(default = "default_max_staleness")]
    pub max_staleness_seconds: u64,
    /// How long a verification result (per digest and authorities) is kept. Digests are
    /// immutable, so this can be long.
    #[serde(default = "default_verified_ttl")]
    pub verified_ttl_seconds: u64,
    /// How long "no acceptable signature" is remembered for a digest. Short, because a
    /// pipeline pushes and then signs seconds later; positive verifications keep
    /// `verifiedTtlSeconds`.
    #[serde(default = "default_unverified_ttl")]
    pub unverified_ttl_seconds: u64,
    /// How long a registry failure is remembered (so a failing registry is not hammered).
    #[serde(default = "default_failure_ttl")]
    pub failure_ttl_seconds: u64,
    /// Concurrent requests to one registry, across all reviews.
    #[serde(default = "default_registry_concurrency")]
    pub max_concurrent_requests_per_registry: usize,
    /// Attempts per registry request on transient failures (5xx, connection errors), always
    /// within the review's deadline.
    #[serde(default = "default_attempts")]
    pub max_attempts: usize,
    /// A docker `config.json` whose `auths` are used for registries without `credentials`.
    #[serde(default)]
    pub docker_config_file: Option<PathBuf>,
    /// Read the pod's `imagePullSecrets` and its service account's pull secrets through the
    /// Kubernetes API (serve only; needs `get` on secrets and serviceaccounts).
    #[serde(default)]
    pub pull_secrets: bool,
    /// Entries kept per cache.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: u64,
}

impl Default for EvidenceSettings {
    fn default() -> Self {
        Self {
            platform: default_platform(),
            tag_ttl_seconds: default_tag_ttl(),
            max_staleness_seconds: default_max_staleness(),
            verified_ttl_seconds: default_verified_ttl(),
            unverified_ttl_seconds: default_unverified_ttl(),
            failure_ttl_seconds: default_failure_ttl(),
            max_concurrent_requests_per_registry: default_registry_concurrency(),
            max_attempts: default_attempts(),
            docker_config_file: None,
            pull_secrets: false,
            cache_capacity: default_cache_capacity(),
        }
    }
}

fn default_platform() -> String {
    "linux/amd64".into()
}
fn default_tag_ttl() -> u64 {
    60
}
fn default_max_staleness() -> u64 {
    300
}
fn default_verified_ttl() -> u64 {
    24 * 3600
}
fn default_unverified_ttl() -> u64 {
    10
}
fn default_failure_ttl() -> u64 {
    5
}
fn default_registry_concurrency() -> usize {
    16
}
fn default_attempts() -> usize {
    3
}
fn default_cache_capacity() -> u64 {
    10_000
}

/// A first-class image rule matched by image reference glob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagePolicy {
    pub name: String,
    pub images: Vec<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub signatures: Option<SignatureRequirement>,
    /// Vulnerability rules judged on cached scan reports.
    #[serde(default)]
    pub vulnerabilities: Option<crate::policy::vulnerability::VulnerabilityPolicy>,
    /// An image built longer ago than this is a finding (build time from verified SLSA
    /// provenance, else the image config's `created`).
    #[serde(default)]
    pub max_image_age: Option<crate::timeutil::HumanDuration>,
    /// Judge whether the base image the image declares has moved since the build.
    #[serde(default)]
    pub base_image_freshness: Option<BaseImageFreshness>,
}

/// `rejudge`: how often `serve` judges the running pods again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RejudgeSettings {
    /// At least one minute: each pass lists every pod of the cluster.
    pub interval: crate::timeutil::HumanDuration,
    /// Only the replica holding a Lease runs passes (default true). Off, every replica runs
    /// its own passes (a single replica, or a namespace where Leases may not be written).
    #[serde(default = "yes")]
    pub leader_election: bool,
    /// The Lease, in the namespace `serve` runs in (default `portcullis-rejudge`); give two
    /// installations in one namespace different names.
    #[serde(default = "default_lease_name")]
    pub lease_name: String,
    /// Write a `wgpolicyk8s.io/v1alpha2` PolicyReport per namespace after each pass (default
    /// false: needs the CRD and the chart's `rbac.policyReports`).
    #[serde(default)]
    pub policy_reports: bool,
}

/// RFC 1123 subdomain, what Kubernetes requires of most object names.
fn is_dns_subdomain(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
}

fn default_lease_name() -> String {
    "portcullis-rejudge".to_owned()
}

/// `imagePolicies[].baseImageFreshness`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseImageFreshness {
    /// Default `warn`: a moved base is a reason to rebuild soon, rarely to stop a rollout.
    #[serde(default = "warn_mode")]
    pub mode: Mode,
}

fn warn_mode() -> Mode {
    Mode::Warn
}

/// `imagePolicies[].signatures`: who must have signed the digest. Any one of the keys or
/// keyless identities counts as one signer; `threshold` says how many distinct signers are
/// needed (default 1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignatureRequirement {
    #[serde(default)]
    pub keys: Vec<KeySource>,
    /// Keyless (Fulcio certificate) identities.
    #[serde(default)]
    pub keyless: Vec<KeylessIdentity>,
    /// Sigstore `TrustedRoot` JSON (Fulcio CAs, Rekor logs, CT logs, timestamp authorities).
    /// Without it the Sigstore public-good root embedded in portcullis is used.
    #[serde(default)]
    pub trusted_root: Option<PathBuf>,
    /// Refuse signatures that are not logged in a transparency log the root trusts (keys
    /// and keyless). Off by default: key signatures made with `--tlog-upload=false` and
    /// keyless bundles timestamped by a TSA only (GitHub's private repositories) count.
    #[serde(default)]
    pub require_transparency_log: bool,
    /// Notary Project signatures: a trust store of X.509 roots and trusted identities. Counts
    /// as one authority toward `threshold`, beside keys and keyless identities.
    #[serde(default)]
    pub notation: Option<crate::notation_trust::NotationRequirement>,
    /// In-toto predicate types that make a DSSE bundle a *signature* of the image rather than
    /// an attestation (default: Cosign 3's `https://sigstore.dev/cosign/sign/v1`).
    #[serde(default)]
    pub signature_predicate_types: Vec<String>,
    /// Distinct authorities that must have signed (default 1).
    #[serde(default)]
    pub threshold: Option<usize>,
    /// Repository globs a signature's `docker-reference` may name besides the image's own
    /// repository: for images pulled through a mirror of the repository that was signed.
    #[serde(default)]
    pub mirror_of: Vec<String>,
    /// In-toto attestations that must exist, signed by the same authorities.
    #[serde(default)]
    pub attestations: Vec<AttestationRequirement>,
}

/// A keyless signer: the OIDC issuer and subject in its Fulcio certificate, each given exactly
/// or as a regular expression (anchored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeylessIdentity {
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default, rename = "issuerRegExp")]
    pub issuer_regexp: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default, rename = "subjectRegExp")]
    pub subject_regexp: Option<String>,
    // Fulcio certificate extensions a CI identity carries (GitHub Actions and others); each
    // given must match, exactly or as an anchored regular expression (OIDs
    // `1.3.6.1.4.1.57264.1.*`).
    /// `.1.12`, e.g. `https://github.com/org/repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repository_uri: Option<String>,
    #[serde(
        default,
        rename = "sourceRepositoryUriRegExp",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_repository_uri_regexp: Option<String>,
    /// `.1.14`, e.g. `refs/tags/v1.2.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repository_ref: Option<String>,
    #[serde(
        default,
        rename = "sourceRepositoryRefRegExp",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_repository_ref_regexp: Option<String>,
    /// `.1.9`, the workflow that signed, e.g.
    /// `https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_signer_uri: Option<String>,
    #[serde(
        default,
        rename = "buildSignerUriRegExp",
        skip_serializing_if = "Option::is_none"
    )]
    pub build_signer_uri_regexp: Option<String>,
    /// `.1.18`, the workflow that ran (differs from the signer for reusable workflows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_config_uri: Option<String>,
    #[serde(
        default,
        rename = "buildConfigUriRegExp",
        skip_serializing_if = "Option::is_none"
    )]
    pub build_config_uri_regexp: Option<String>,
    /// `.1.11`, `github-hosted` or `self-hosted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_environment: Option<String>,
    /// `.1.20`, e.g. `push`, `release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_trigger: Option<String>,
}

/// One CI claim of a keyless identity: its name, exact value and regular expression (for
/// claims that take one).
pub type ClaimSetting<'a> = (&'static str, &'a Option<String>, Option<&'a Option<String>>);

impl KeylessIdentity {
    /// `(claim name, exact, regexp)` for each claim, in a fixed order.
    pub fn claims(&self) -> [ClaimSetting<'_>; 6] {
        [
            (
                "sourceRepositoryUri",
                &self.source_repository_uri,
                Some(&self.source_repository_uri_regexp),
            ),
            (
                "sourceRepositoryRef",
                &self.source_repository_ref,
                Some(&self.source_repository_ref_regexp),
            ),
            (
                "buildSignerUri",
                &self.build_signer_uri,
                Some(&self.build_signer_uri_regexp),
            ),
            (
                "buildConfigUri",
                &self.build_config_uri,
                Some(&self.build_config_uri_regexp),
            ),
            ("runnerEnvironment", &self.runner_environment, None),
            ("buildTrigger", &self.build_trigger, None),
        ]
    }
}

/// An attestation that must exist: a predicate type (a short name or the full URI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestationRequirement {
    /// `slsaprovenance02`, `slsaprovenance1`, `vuln`, `cyclonedx`, `spdx`, `spdxjson`, or a URI.
    pub predicate_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySource {
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub pem: Option<String>,
}

/// Settings every built-in rule has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Overrides the top-level `mode` for this rule.
    #[serde(default)]
    pub mode: Option<Mode>,
}

fn yes() -> bool {
    true
}

impl RuleSettings {
    fn on() -> Self {
        Self {
            enabled: true,
            mode: None,
        }
    }
    fn off() -> Self {
        Self {
            enabled: false,
            mode: None,
        }
    }
}

/// `rules.containerPorts`: which container ports may be declared (off by default).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPortsRule {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Ports (`"8080"`) or inclusive ranges (`"8000-8999"`).
    #[serde(default)]
    pub allowed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rules {
    #[serde(default = "RuleSettings::on")]
    pub trusted_registry: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub no_latest_tag: RuleSettings,
    #[serde(default = "RuleSettings::off")]
    pub require_digest: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub run_as_non_root: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub privileged: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub privilege_escalation: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub host_namespaces: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub host_ports: RuleSettings,
    #[serde(default)]
    pub container_ports: ContainerPortsRule,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            trusted_registry: RuleSettings::on(),
            no_latest_tag: RuleSettings::on(),
            require_digest: RuleSettings::off(),
            run_as_non_root: RuleSettings::on(),
            privileged: RuleSettings::on(),
            privilege_escalation: RuleSettings::on(),
            host_namespaces: RuleSettings::on(),
            host_ports: RuleSettings::on(),
            container_ports: ContainerPortsRule::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policies {
    #[serde(default)]
    pub rego: RegoSettings,
}

/// `policies.rego`: Rego modules, how they are loaded, limited and configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegoSettings {
    /// `.rego` files or folders (searched recursively, files in name order). Each entry is a
    /// path, or `{path, syntax}` to force the Rego syntax of everything under it.
    #[serde(default)]
    pub paths: Vec<RegoPath>,
    /// Wall-clock limit for evaluating one policy on one review; a policy that runs longer
    /// is stopped and the review gets the `onError` outcome.
    #[serde(default = "default_rego_timeout_millis")]
    pub timeout_millis: u64,
    /// Settings per policy (package): parameters, mode, which requests it judges.
    #[serde(default)]
    pub policies: Vec<RegoPolicySettings>,
}

impl Default for RegoSettings {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            timeout_millis: default_rego_timeout_millis(),
            policies: Vec::new(),
        }
    }
}

fn default_rego_timeout_millis() -> u64 {
    500
}

/// One entry of `policies.rego.paths`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RegoPath {
    /// A file or folder; the syntax of each file is detected (`auto`).
    Plain(PathBuf),
    /// A file or folder with an explicit syntax.
    Detailed(RegoPathSettings),
}

impl RegoPath {
    pub fn path(&self) -> &Path {
        match self {
            RegoPath::Plain(path) => path,
            RegoPath::Detailed(settings) => &settings.path,
        }
    }

    pub fn syntax(&self) -> RegoSyntax {
        match self {
            RegoPath::Plain(_) => RegoSyntax::Auto,
            RegoPath::Detailed(settings) => settings.syntax,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegoPathSettings {
    pub path: PathBuf,
    #[serde(default)]
    pub syntax: RegoSyntax,
}

/// Which Rego syntax a file is parsed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegoSyntax {
    /// Rego v1 (OPA 1.0: `if`, `contains`); when that fails, Rego v0.
    #[default]
    Auto,
    /// Rego v1 only.
    V1,
    /// Rego v0 only (Gatekeeper library style: `violation[{"msg": msg}] { ... }`).
    V0,
}

/// `policies.rego.policies[]`: settings of one Rego policy, named by its package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegoPolicySettings {
    /// The package, without `data.`: `k8sdisallowedtags`, `portcullis.no_latest_tag`.
    pub package: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Overrides the top-level `mode` for this policy.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `input.parameters` for this policy (Gatekeeper: the constraint's `spec.parameters`).
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
    /// Which requests the policy judges (default: every pod-bearing request).
    #[serde(default, rename = "match")]
    pub matches: PolicyMatch,
}

/// Which requests a policy judges. Empty lists match everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyMatch {
    /// Object kinds (`Pod`, `Deployment`, ...).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Namespaces: exact names, or a prefix ending in `*` (`team-*`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces never judged by this policy (same patterns).
    #[serde(default)]
    pub excluded_namespaces: Vec<String>,
}

impl PolicyMatch {
    /// Whether a request for `kind` in `namespace` is judged.
    pub fn matches(&self, kind: &str, namespace: &str) -> bool {
        let pattern = |p: &String| match p.strip_suffix('*') {
            Some(prefix) => namespace.starts_with(prefix),
            None => p == namespace,
        };
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(pattern))
            && !self.excluded_namespaces.iter().any(pattern)
    }
}

/// A parsed and validated configuration with the identity of the bytes it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// `sha256:<hex>` of the configuration bytes (policies join it when the policy engine
    /// loads them), so every decision names exactly what made it.
    pub identity: String,
    /// Where it came from: a path, or `embedded default`.
    pub origin: String,
}

impl LoadedConfig {
    /// The embedded default configuration.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::from_yaml(EMBEDDED_DEFAULT, "embedded default")
    }

    /// Reads and validates a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// The file when one is named, the embedded default otherwise.
    pub fn from_optional_file(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(path) => Self::from_file(path),
            None => Self::embedded(),
        }
    }

    /// Parses YAML (unknown keys rejected, errors carry the key path) and validates it.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config = parse_yaml(text, origin)?;
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            });
        }
        Ok(Self {
            config,
            identity: identity_of(text.as_bytes()),
            origin: origin.to_owned(),
        })
    }
}

fn parse_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
    // An empty file is far more often a mistake (an empty ConfigMap value, a failed template)
    // than a wish for defaults, and its defaults have no image policy: refuse it. Comments
    // and whitespace only, or a bare `null`, parse to a null document.
    if text.trim().is_empty()
        || matches!(
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text),
            Ok(serde_yaml_ng::Value::Null)
        )
    {
        return Err(ConfigError::Empty {
            origin: origin.to_owned(),
        });
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        ConfigError::Syntax {
            origin: origin.to_owned(),
            // serde_path_to_error writes `.` for the top level, but an empty string when the
            // document is only an anchor (`&e:`) or the key itself is empty (found by fuzzing):
            // either way the message must name a place.
            key: if key == "." || key.is_empty() {
                "(top level)".into()
            } else {
                key
            },
            message: err.into_inner().to_string(),
        }
    })
}

/// `sha256:<hex>` of some bytes.
pub fn identity_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Config {
    /// Semantic checks serde cannot do. Returns every problem, not just the first.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = validate_workloads(&self.workloads);
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });

        if self.limits.max_request_bytes < 1024 {
            problem(
                "limits.maxRequestBytes".into(),
                format!(
                    "{} is too small (minimum 1024)",
                    self.limits.max_request_bytes
                ),
            );
        }
        if self.limits.default_timeout_seconds == 0 || self.limits.default_timeout_seconds > 30 {
            problem(
                "limits.defaultTimeoutSeconds".into(),
                "must be between 1 and 30 (the API server's webhook timeout range)".into(),
            );
        }
        if self.limits.timeout_margin_millis >= self.limits.default_timeout_seconds * 1000 {
            problem(
                "limits.timeoutMarginMillis".into(),
                "must be shorter than limits.defaultTimeoutSeconds, or no review could finish"
                    .into(),
            );
        }
        let limits = &self.limits;
        if limits.max_buffered_request_bytes < limits.max_request_bytes
            || limits.max_buffered_request_bytes > MAX_BUFFERED_REQUEST_BYTES
        {
            problem(
                "limits.maxBufferedRequestBytes".into(),
                format!(
                    "{} must be at least limits.maxRequestBytes ({}), or a body of the largest \
                     size could never be read, and at most {MAX_BUFFERED_REQUEST_BYTES}",
                    limits.max_buffered_request_bytes, limits.max_request_bytes
                ),
            );
        }
        if !(100..=60_000).contains(&limits.header_read_timeout_millis) {
            problem(
                "limits.headerReadTimeoutMillis".into(),
                format!(
                    "{} must be between 100 and 60000",
                    limits.header_read_timeout_millis
                ),
            );
        }
        if !(1..=3600).contains(&limits.idle_timeout_seconds) {
            problem(
                "limits.idleTimeoutSeconds".into(),
                format!(
                    "{} must be between 1 and 3600 (above 90, the API server's own idle \
                     timeout, is best)",
                    limits.idle_timeout_seconds
                ),
            );
        }
        if limits.max_connections == 0 {
            problem("limits.maxConnections".into(), "must be at least 1".into());
        }
        // Only images an image policy matches are resolved at the registry, so pinning without
        // one would be switched on and silently do nothing.
        if self.pinning.enabled && self.image_policies.is_empty() {
            problem(
                "pinning.enabled".into(),
                "pinning rewrites only images an image policy matches (they are resolved at \
                 the registry), and imagePolicies is empty: add an image policy or turn \
                 pinning off"
                    .into(),
            );
        }
        if limits.max_images_per_object == 0 {
            problem(
                "limits.maxImagesPerObject".into(),
                "must be at least 1".into(),
            );
        }
        for (i, ns) in self.exclude.namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                problem(
                    format!("exclude.namespaces[{i}]"),
                    format!("{ns:?} is not a valid namespace name"),
                );
            }
        }
        for (i, pattern) in self.trusted_registries.iter().enumerate() {
            if let Err(GlobError { message, .. }) = ImageGlobs::new([pattern.as_str()]) {
                problem(format!("trustedRegistries[{i}]"), message);
            }
        }
        let mut hosts = BTreeSet::new();
        for (i, registry) in self.registries.iter().enumerate() {
            let key = format!("registries[{i}]");
            if registry.host.is_empty() || registry.host.contains('/') {
                problem(
                    format!("{key}.host"),
                    format!(
                        "{:?} must be a registry host with optional port, without scheme or path",
                        registry.host
                    ),
                );
            }
            if !hosts.insert(registry.host.as_str()) {
                problem(
                    format!("{key}.host"),
                    format!("{:?} is listed twice", registry.host),
                );
            }
            if let Some(credentials) = &registry.credentials {
                match (&credentials.password, &credentials.password_file) {
                    (Some(_), Some(_)) | (None, None) => problem(
                        format!("{key}.credentials"),
                        "give exactly one of `password` or `passwordFile`".into(),
                    ),
                    (None, Some(path)) if !path.is_file() => problem(
                        format!("{key}.credentials.passwordFile"),
                        format!("{} does not exist or is not a file", path.display()),
                    ),
                    _ => {}
                }
            }
            if let Some(ca) = &registry.ca_file {
                if registry.insecure {
                    problem(
                        format!("{key}.caFile"),
                        "caFile makes no sense with insecure: true (plain HTTP)".into(),
                    );
                }
                if !ca.is_file() {
                    problem(
                        format!("{key}.caFile"),
                        format!("{} does not exist or is not a file", ca.display()),
                    );
                }
            }
        }
        let mut names = BTreeSet::new();
        for (i, policy) in self.image_policies.iter().enumerate() {
            let key = format!("imagePolicies[{i}]");
            if policy.name.is_empty() {
                problem(format!("{key}.name"), "must not be empty".into());
            } else if !names.insert(policy.name.as_str()) {
                problem(
                    format!("{key}.name"),
                    format!("{:?} is used by another image policy", policy.name),
                );
            }
            if policy.images.is_empty() {
                problem(
                    format!("{key}.images"),
                    "must list at least one image glob".into(),
                );
            }
            for (j, pattern) in policy.images.iter().enumerate() {
                if let Err(GlobError { message, .. }) = ImageGlobs::new([pattern.as_str()]) {
                    problem(format!("{key}.images[{j}]"), message);
                }
            }
            if let Some(signatures) = &policy.signatures {
                if signatures.keys.is_empty()
                    && signatures.keyless.is_empty()
                    && signatures.notation.is_none()
                {
                    problem(
                        format!("{key}.signatures.keys"),
                        "must name at least one key, keyless identity or Notation trust store"
                            .into(),
                    );
                }
                if let Some(notation) = &signatures.notation
                    && let Err(err) = notation.compile()
                {
                    problem(format!("{key}.signatures.notation"), err.to_string());
                }
                for found in validate_signatures(&format!("{key}.signatures"), signatures) {
                    problem(found.key, found.message);
                }
                for (j, source) in signatures.keys.iter().enumerate() {
                    let key = format!("{key}.signatures.keys[{j}]");
                    match (&source.path, &source.pem) {
                        (Some(_), Some(_)) | (None, None) => {
                            problem(key, "give exactly one of `path` or `pem`".into())
                        }
                        (Some(path), None) if !path.is_file() => problem(
                            format!("{key}.path"),
                            format!("{} does not exist or is not a file", path.display()),
                        ),
                        (None, Some(pem)) if !pem.contains("-----BEGIN PUBLIC KEY-----") => {
                            problem(
                                format!("{key}.pem"),
                                "is not a PEM public key (-----BEGIN PUBLIC KEY-----)".into(),
                            )
                        }
                        _ => {}
                    }
                }
            }
        }
        let evidence = &self.evidence;
        let parts: Vec<&str> = evidence.platform.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            problem(
                "evidence.platform".into(),
                format!("{:?} is not os/arch or os/arch/variant", evidence.platform),
            );
        }
        if evidence.max_concurrent_requests_per_registry == 0 {
            problem(
                "evidence.maxConcurrentRequestsPerRegistry".into(),
                "must be at least 1".into(),
            );
        }
        if evidence.max_attempts == 0 {
            problem("evidence.maxAttempts".into(), "must be at least 1".into());
        }
        if evidence.cache_capacity == 0 {
            problem("evidence.cacheCapacity".into(), "must be at least 1".into());
        }
        if let Some(path) = evidence
            .docker_config_file
            .as_ref()
            .filter(|path| !path.is_file())
        {
            problem(
                "evidence.dockerConfigFile".into(),
                format!("{} does not exist or is not a file", path.display()),
            );
        }
        if let Some(tuf) = &self.sigstore.tuf {
            match url::Url::parse(&tuf.url) {
                Ok(url) if matches!(url.scheme(), "https" | "http") => {}
                Ok(url) => problem(
                    "sigstore.tuf.url".into(),
                    format!("{:?} is not an http(s) URL ({})", tuf.url, url.scheme()),
                ),
                Err(err) => problem(
                    "sigstore.tuf.url".into(),
                    format!("{:?} is not a URL: {err}", tuf.url),
                ),
            }
            match &tuf.root {
                Some(path) if !path.is_file() => problem(
                    "sigstore.tuf.root".into(),
                    format!("{} does not exist or is not a file", path.display()),
                ),
                None if tuf.url.trim_end_matches('/') != PUBLIC_GOOD_TUF_URL => problem(
                    "sigstore.tuf.root".into(),
                    "required for a repository other than Sigstore's public-good one (the TUF \
                     root.json trust starts from)"
                        .into(),
                ),
                _ => {}
            }
            if tuf.cache_dir.as_os_str().is_empty() {
                problem(
                    "sigstore.tuf.cacheDir".into(),
                    "must name a directory".into(),
                );
            }
            if tuf.refresh_interval_seconds == 0 {
                problem(
                    "sigstore.tuf.refreshIntervalSeconds".into(),
                    "must be at least 1".into(),
                );
            }
        }
        let ports = &self.rules.container_ports;
        if ports.enabled && ports.allowed.is_empty() {
            problem(
                "rules.containerPorts.allowed".into(),
                "must list ports when the rule is enabled (an empty list would deny every port)"
                    .into(),
            );
        }
        for (i, entry) in ports.allowed.iter().enumerate() {
            if let Err(message) = parse_port_range(entry) {
                problem(format!("rules.containerPorts.allowed[{i}]"), message);
            }
        }
        for (i, policy) in self.image_policies.iter().enumerate() {
            let Some(vulnerabilities) = &policy.vulnerabilities else {
                continue;
            };
            let key = format!("imagePolicies[{i}].vulnerabilities");
            if vulnerabilities.max_listed == 0 {
                problem(format!("{key}.maxListed"), "must be at least 1".into());
            }
            let mut ids = BTreeSet::new();
            for (j, ignored) in vulnerabilities.ignore.iter().enumerate() {
                if ignored.id.trim().is_empty() {
                    problem(format!("{key}.ignore[{j}].id"), "must not be empty".into());
                } else if !ids.insert(ignored.id.as_str()) {
                    problem(
                        format!("{key}.ignore[{j}].id"),
                        format!("{:?} is listed twice", ignored.id),
                    );
                }
                if ignored.reason.trim().is_empty() {
                    problem(
                        format!("{key}.ignore[{j}].reason"),
                        "must say why the vulnerability is accepted".into(),
                    );
                }
            }
        }
        if let Some(trivy) = self
            .scans
            .trivy_reports
            .as_ref()
            .filter(|trivy| !trivy.directory.is_dir())
        {
            problem(
                "scans.trivyReports.directory".into(),
                format!(
                    "{} does not exist or is not a directory",
                    trivy.directory.display()
                ),
            );
        }
        if let Some(rejudge) = &self.rejudge
            && rejudge.interval.0 < std::time::Duration::from_secs(60)
        {
            problem(
                "rejudge.interval".into(),
                format!(
                    "{} is too often: each pass lists every pod; use at least 1m",
                    rejudge.interval
                ),
            );
        }
        if let Some(rejudge) = &self.rejudge
            && !is_dns_subdomain(&rejudge.lease_name)
        {
            problem(
                "rejudge.leaseName".into(),
                format!(
                    "{:?} is not a Kubernetes object name (lowercase letters, digits, '-' and \
                     '.', at most 253 characters, starting and ending alphanumeric)",
                    rejudge.lease_name
                ),
            );
        }
        for (i, deprecated) in self.deprecated_images.iter().enumerate() {
            let key = format!("deprecatedImages[{i}]");
            if deprecated.images.is_empty() {
                problem(
                    format!("{key}.images"),
                    "must list at least one image glob".into(),
                );
            }
            for (j, pattern) in deprecated.images.iter().enumerate() {
                if let Err(GlobError { message, .. }) = ImageGlobs::new([pattern.as_str()]) {
                    problem(format!("{key}.images[{j}]"), message);
                }
            }
            if deprecated.replacement.trim().is_empty() {
                problem(
                    format!("{key}.replacement"),
                    "must name the image to use instead".into(),
                );
            }
            if deprecated.reason.trim().is_empty() {
                problem(
                    format!("{key}.reason"),
                    "must say why the image is deprecated".into(),
                );
            }
        }
        let mut exception_names = BTreeSet::new();
        for (i, exception) in self.exceptions.iter().enumerate() {
            let key = format!("exceptions[{i}]");
            let mut found = Vec::new();
            exception.validate(&key, &mut found);
            for p in found {
                problem(p.key, p.message);
            }
            if !exception.name.is_empty() && !exception_names.insert(exception.name.as_str()) {
                problem(
                    format!("{key}.name"),
                    format!("{:?} is used by another exception", exception.name),
                );
            }
        }
        let rego = &self.policies.rego;
        for (i, entry) in rego.paths.iter().enumerate() {
            if !entry.path().exists() {
                problem(
                    format!("policies.rego.paths[{i}]"),
                    format!("{} does not exist", entry.path().display()),
                );
            }
        }
        if rego.timeout_millis == 0 || rego.timeout_millis > 30_000 {
            problem(
                "policies.rego.timeoutMillis".into(),
                "must be between 1 and 30000 (the API server waits at most 30 s)".into(),
            );
        }
        let mut packages = BTreeSet::new();
        for (i, policy) in rego.policies.iter().enumerate() {
            let key = format!("policies.rego.policies[{i}]");
            let package = policy
                .package
                .strip_prefix("data.")
                .unwrap_or(&policy.package);
            if package.is_empty() {
                problem(format!("{key}.package"), "must not be empty".into());
            } else if !packages.insert(package) {
                problem(
                    format!("{key}.package"),
                    format!("{package:?} is configured twice"),
                );
            }
            if policy
                .parameters
                .as_ref()
                .is_some_and(|p| !p.is_object() && !p.is_null())
            {
                problem(
                    format!("{key}.parameters"),
                    "must be a mapping (it becomes input.parameters)".into(),
                );
            }
            let namespaces = policy
                .matches
                .namespaces
                .iter()
                .map(|n| ("namespaces", n))
                .chain(
                    policy
                        .matches
                        .excluded_namespaces
                        .iter()
                        .map(|n| ("excludedNamespaces", n)),
                );
            for (field, ns) in namespaces {
                let name = ns.strip_suffix('*').unwrap_or(ns);
                if name.contains('*') || (!name.is_empty() && !is_dns_label_prefix(name)) {
                    problem(
                        format!("{key}.match.{field}"),
                        format!("{ns:?} is not a namespace name or a prefix ending in *"),
                    );
                }
            }
        }
        problems
    }
}

/// Checks of `imagePolicies[].signatures` beyond keys.
fn validate_signatures(key: &str, signatures: &SignatureRequirement) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    let authorities = signatures.keys.len()
        + signatures.keyless.len()
        + usize::from(signatures.notation.is_some());
    match signatures.threshold {
        Some(0) => problem(format!("{key}.threshold"), "must be at least 1".into()),
        Some(n) if n > authorities => problem(
            format!("{key}.threshold"),
            format!("{n} is more than the {authorities} authorities listed"),
        ),
        _ => {}
    }
    if let Some(path) = &signatures.trusted_root
        && !path.is_file()
    {
        problem(
            format!("{key}.trustedRoot"),
            format!("{} does not exist or is not a file", path.display()),
        );
    }
    for (i, identity) in signatures.keyless.iter().enumerate() {
        let at = format!("{key}.keyless[{i}]");
        for (name, exact, pattern) in [
            ("issuer", &identity.issuer, &identity.issuer_regexp),
            ("subject", &identity.subject, &identity.subject_regexp),
        ] {
            match (exact, pattern) {
                (Some(_), Some(_)) | (None, None) => problem(
                    at.clone(),
                    format!("give exactly one of `{name}` or `{name}RegExp`"),
                ),
                (None, Some(pattern)) => {
                    if let Err(err) = regex::Regex::new(pattern) {
                        problem(format!("{at}.{name}RegExp"), err.to_string());
                    }
                }
                _ => {}
            }
        }
        for (name, exact, pattern) in identity.claims() {
            match (exact, pattern.and_then(Option::as_ref)) {
                (Some(_), Some(_)) => problem(
                    format!("{at}.{name}"),
                    format!("give one of `{name}` or `{name}RegExp`, not both"),
                ),
                (None, Some(pattern)) => {
                    if let Err(err) = regex::Regex::new(pattern) {
                        problem(format!("{at}.{name}RegExp"), err.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    for (i, predicate) in signatures.signature_predicate_types.iter().enumerate() {
        if predicate.trim().is_empty() {
            problem(
                format!("{key}.signaturePredicateTypes[{i}]"),
                "must not be empty".into(),
            );
        }
    }
    for (i, pattern) in signatures.mirror_of.iter().enumerate() {
        if let Err(GlobError { message, .. }) = ImageGlobs::new([pattern.as_str()]) {
            problem(format!("{key}.mirrorOf[{i}]"), message);
        }
    }
    for (i, attestation) in signatures.attestations.iter().enumerate() {
        if attestation.predicate_type.trim().is_empty() {
            problem(
                format!("{key}.attestations[{i}].predicateType"),
                "must not be empty".into(),
            );
        }
    }
    problems
}

/// `"8080"` or `"8000-8999"` (inclusive) into a range of ports.
pub fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let port = |s: &str| -> Result<u16, String> {
        match s.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{text:?} is not a port (1-65535) or range (a-b)")),
            Ok(p) => Ok(p),
        }
    };
    match text.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (port(low)?, port(high)?);
            if low > high {
                return Err(format!("{text:?}: range start is above its end"));
            }
            Ok(low..=high)
        }
        None => port(text).map(|p| p..=p),
    }
}

/// The start of an RFC 1123 label (a namespace prefix).
fn is_dns_label_prefix(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// RFC 1123 label, which is what namespace names are.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

// --- workloads: custom kinds with a pod template ----------------------------------------------
// Kept in one block (types, validation, conversion) so it merges cleanly with other changes.

/// `workloads`: kinds beyond the built-in ones whose pod template portcullis judges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSettings {
    #[serde(default)]
    pub custom: Vec<CustomWorkload>,
}

/// `workloads.custom[]`: one custom kind and where its pod spec lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomWorkload {
    /// The API group, e.g. `argoproj.io` (never the core group: its kinds are built in).
    pub group: String,
    /// One version (`v1alpha1`); absent: every version of the kind.
    #[serde(default)]
    pub version: Option<String>,
    /// The kind, e.g. `Rollout`.
    pub kind: String,
    /// The plural resource, e.g. `rollouts` (the chart's webhook rules name it).
    pub resource: String,
    /// Dot-separated object keys to the PodSpec, e.g. `spec.template.spec`.
    pub pod_spec_path: String,
}

fn validate_workloads(workloads: &WorkloadSettings) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    for (i, custom) in workloads.custom.iter().enumerate() {
        let key = format!("workloads.custom[{i}]");
        if custom.group.is_empty() {
            problem(
                format!("{key}.group"),
                "must not be empty: the core group's pod-bearing kinds are built in".into(),
            );
        } else if !is_dns_subdomain(&custom.group) {
            problem(
                format!("{key}.group"),
                format!(
                    "{:?} is not an API group (a DNS subdomain, e.g. argoproj.io)",
                    custom.group
                ),
            );
        }
        if let Some(version) = &custom.version
            && !is_dns_label(version)
        {
            problem(
                format!("{key}.version"),
                format!(
                    "{version:?} is not an API version (e.g. v1alpha1); omit it for every version"
                ),
            );
        }
        let kind_ok = custom.kind.starts_with(|c: char| c.is_ascii_uppercase())
            && custom.kind.chars().all(|c| c.is_ascii_alphanumeric());
        if !kind_ok {
            problem(
                format!("{key}.kind"),
                format!(
                    "{:?} is not a kind (CamelCase letters and digits, e.g. Rollout)",
                    custom.kind
                ),
            );
        }
        if !is_dns_label(&custom.resource) {
            problem(
                format!("{key}.resource"),
                format!(
                    "{:?} is not a resource name (the lowercase plural, e.g. rollouts)",
                    custom.resource
                ),
            );
        }
        if let Err(err) = crate::workload::SpecPath::parse(&custom.pod_spec_path) {
            problem(format!("{key}.podSpecPath"), err.to_string());
        }
        if crate::workload::pod_spec_path(&custom.group, &custom.kind).is_some() {
            problem(
                format!("{key}.kind"),
                format!(
                    "{}/{} is a built-in kind, already judged; remove this entry",
                    custom.group, custom.kind
                ),
            );
        }
        // Two entries for one kind whose versions overlap: which path applies is ambiguous.
        let clash = workloads.custom[..i].iter().position(|earlier| {
            earlier.group == custom.group
                && earlier.kind == custom.kind
                && (earlier.version.is_none()
                    || custom.version.is_none()
                    || earlier.version == custom.version)
        });
        if let Some(earlier) = clash {
            problem(
                format!("{key}.kind"),
                format!(
                    "{}/{} is already configured at workloads.custom[{earlier}] for an \
                     overlapping version; configure each kind and version once",
                    custom.group, custom.kind
                ),
            );
        }
    }
    problems
}

/// The engine's view of `workloads.custom`: every entry with its parsed path. Errs (with the
/// entry's index) only on a configuration that skipped validation.
pub fn custom_workload_kinds(
    workloads: &WorkloadSettings,
) -> Result<crate::workload::WorkloadKinds, (usize, crate::workload::SpecPathError)> {
    let custom = workloads
        .custom
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(crate::workload::CustomKind {
                group: c.group.clone(),
                version: c.version.clone(),
                kind: c.kind.clone(),
                path: crate::workload::SpecPath::parse(&c.pod_spec_path).map_err(|e| (i, e))?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::workload::WorkloadKinds::new(custom))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let loaded = LoadedConfig::embedded();
        assert!(loaded.is_ok(), "{loaded:?}");
    }

    #[test]
    fn an_explicit_empty_mapping_takes_every_default() {
        let loaded = LoadedConfig::from_yaml("{}\n", "defaults").ok();
        let config = loaded.map(|l| l.config);
        assert_eq!(config.as_ref().map(|c| c.mode), Some(Mode::Enforce));
        assert_eq!(config.as_ref().map(|c| c.on_error), Some(OnError::Deny));
        let limits = config.map(|c| c.limits).unwrap_or_default();
        assert_eq!(limits.max_buffered_request_bytes, 32 * 1024 * 1024);
        assert_eq!(limits.header_read_timeout_millis, 10_000);
        assert_eq!(limits.idle_timeout_seconds, 120);
        assert_eq!(limits.max_connections, 1024);
        assert_eq!(limits.max_images_per_object, 100);
    }

    #[test]
    fn an_empty_file_is_refused_and_says_how_to_get_defaults() {
        for text in [
            "",
            "  \n\t\n",
            "# nothing yet\n  # still nothing\n",
            "---\n",
            "null\n",
        ] {
            let err = LoadedConfig::from_yaml(text, "cm.yaml").err();
            assert!(
                matches!(&err, Some(ConfigError::Empty { origin }) if origin == "cm.yaml"),
                "{text:?}: {err:?}"
            );
            let message = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("omit --config"), "{message}");
            assert!(message.contains("`{}`"), "{message}");
        }
    }

    #[test]
    fn fuzz_regression_a_syntax_error_always_names_a_place() {
        // fuzz/regressions/config/anchor-only: the error's key was an empty string.
        let err = LoadedConfig::from_yaml("&e:", "cm.yaml").err();
        assert!(err.is_some());
        if let Some(ConfigError::Syntax { key, .. }) = &err {
            assert_eq!(key, "(top level)", "{err:?}");
        }
    }

    #[test]
    fn guard_limits_are_validated() {
        let yaml = "limits: {maxRequestBytes: 2048, maxBufferedRequestBytes: 1024, \
                    headerReadTimeoutMillis: 0, idleTimeoutSeconds: 0, maxConnections: 0, \
                    maxImagesPerObject: 0}\n";
        let text = LoadedConfig::from_yaml(yaml, "t")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for key in [
            "limits.maxBufferedRequestBytes",
            "limits.headerReadTimeoutMillis",
            "limits.idleTimeoutSeconds",
            "limits.maxConnections",
            "limits.maxImagesPerObject",
        ] {
            assert!(text.contains(key), "{key} missing: {text}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let err = LoadedConfig::from_yaml("rules:\n  noLatestTag:\n    enabeld: true\n", "t");
        let text = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("rules.noLatestTag"), "{text}");
        assert!(text.contains("enabeld"), "{text}");
    }

    #[test]
    fn wrong_types_name_the_key_path() {
        let err = LoadedConfig::from_yaml("registries:\n  - host: a\n    insecure: maybe\n", "t");
        let text = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("registries[0].insecure"), "{text}");
    }

    #[test]
    fn semantic_problems_are_all_reported_with_paths() {
        let yaml = "trustedRegistries: ['a/[']\nrules:\n  containerPorts:\n    enabled: true\n    allowed: ['80', '9-1', 'x']\nexclude:\n  namespaces: [Bad_NS]\n";
        let err = LoadedConfig::from_yaml(yaml, "t").err();
        let Some(ConfigError::Invalid { problems, .. }) = err else {
            unreachable!("expected validation problems, got {err:?}")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "exclude.namespaces[0]",
                "trustedRegistries[0]",
                "rules.containerPorts.allowed[1]",
                "rules.containerPorts.allowed[2]"
            ]
        );
    }

    #[test]
    fn identity_changes_with_content() {
        let a = LoadedConfig::from_yaml("mode: warn\n", "a")
            .map(|l| l.identity)
            .ok();
        let b = LoadedConfig::from_yaml("mode: audit\n", "b")
            .map(|l| l.identity)
            .ok();
        assert_ne!(a, b);
        assert!(a.is_some_and(|a| a.starts_with("sha256:") && a.len() == 71));
    }

    #[test]
    fn rego_paths_take_a_plain_path_or_a_forced_syntax() {
        let yaml = "policies:\n  rego:\n    paths: [/, {path: /, syntax: v0}]\n";
        let config = LoadedConfig::from_yaml(yaml, "t").map(|l| l.config).ok();
        let paths = config.map(|c| c.policies.rego.paths).unwrap_or_default();
        let syntaxes: Vec<_> = paths.iter().map(RegoPath::syntax).collect();
        assert_eq!(syntaxes, [RegoSyntax::Auto, RegoSyntax::V0]);
        let typo = LoadedConfig::from_yaml(
            "policies:\n  rego:\n    paths: [{path: /, sintax: v0}]\n",
            "t",
        );
        assert!(typo.is_err(), "an unknown key in a path entry is refused");
    }

    #[test]
    fn rego_policy_settings_are_validated_with_their_paths() {
        let yaml = "policies:\n  rego:\n    timeoutMillis: 0\n    policies:\n      - package: a\n        parameters: [1]\n      - package: data.a\n        match: {namespaces: [Bad, 'team-*'], excludedNamespaces: ['a*b']}\n";
        let err = LoadedConfig::from_yaml(yaml, "t").err();
        let Some(ConfigError::Invalid { problems, .. }) = err else {
            unreachable!("expected validation problems, got {err:?}")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "policies.rego.timeoutMillis",
                "policies.rego.policies[0].parameters",
                "policies.rego.policies[1].package",
                "policies.rego.policies[1].match.namespaces",
                "policies.rego.policies[1].match.excludedNamespaces",
            ]
        );
    }

    #[test]
    fn signature_and_evidence_keys_are_validated_with_their_paths() {
        let yaml = "evidence:\n  platform: linux\n  maxAttempts: 0\nregistries:\n  - host: r.io\n    credentials: {username: u}\nimagePolicies:\n  - name: p\n    images: [\"r.io/**\"]\n    signatures:\n      trustedRoot: /nonexistent/root.json\n      keyless:\n        - {issuer: \"https://i\", subjectRegExp: \"(\"}\n        - {issuer: \"https://i\"}\n      threshold: 3\n      mirrorOf: [\"a/[\"]\n";
        let err = LoadedConfig::from_yaml(yaml, "t").err();
        let Some(ConfigError::Invalid { problems, .. }) = err else {
            unreachable!("expected validation problems, got {err:?}")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "registries[0].credentials",
                "imagePolicies[0].signatures.threshold",
                "imagePolicies[0].signatures.trustedRoot",
                "imagePolicies[0].signatures.keyless[0].subjectRegExp",
                "imagePolicies[0].signatures.keyless[1]",
                "imagePolicies[0].signatures.mirrorOf[0]",
                "evidence.platform",
                "evidence.maxAttempts",
            ]
        );
    }

    #[test]
    fn a_policy_match_checks_kind_and_namespace_patterns() {
        let matches = PolicyMatch {
            kinds: vec!["Pod".into()],
            namespaces: vec!["team-*".into(), "shop".into()],
            excluded_namespaces: vec!["team-test".into()],
        };
        assert!(matches.matches("Pod", "team-a"));
        assert!(matches.matches("Pod", "shop"));
        assert!(!matches.matches("Pod", "team-test"));
        assert!(!matches.matches("Pod", "shopping"));
        assert!(!matches.matches("Deployment", "shop"));
        assert!(PolicyMatch::default().matches("Deployment", "anything"));
    }

    #[test]
    fn evidence_defaults_are_documented_values() {
        let config = LoadedConfig::from_yaml("{}", "t").map(|l| l.config).ok();
        let evidence = config.map(|c| c.evidence).unwrap_or_default();
        assert_eq!(evidence.platform, "linux/amd64");
        assert_eq!(evidence.tag_ttl_seconds, 60);
        assert_eq!(evidence.max_staleness_seconds, 300);
        assert!(!evidence.pull_secrets);
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("80"), Ok(80..=80));
        assert_eq!(parse_port_range("8000-8999"), Ok(8000..=8999));
        assert!(parse_port_range("0").is_err());
        assert!(parse_port_range("70000").is_err());
    }

    #[test]
    fn custom_workloads_load_with_an_optional_version() {
        let yaml = "workloads:\n  custom:\n    - {group: argoproj.io, version: v1alpha1, kind: Rollout, resource: rollouts, podSpecPath: spec.template.spec}\n    - {group: apps.kruise.io, kind: CloneSet, resource: clonesets, podSpecPath: spec.template.spec}\n";
        let loaded = LoadedConfig::from_yaml(yaml, "t");
        let custom = loaded
            .map(|l| l.config.workloads.custom)
            .unwrap_or_default();
        assert_eq!(custom.len(), 2);
        assert_eq!(custom[0].version.as_deref(), Some("v1alpha1"));
        assert_eq!(custom[1].version, None);
    }

    #[test]
    fn bad_custom_workloads_are_refused_with_their_paths() {
        let yaml = "workloads:\n  custom:\n    - {group: argoproj.io, kind: Rollout, resource: rollouts, podSpecPath: ''}\n    - {group: argoproj.io, version: v1alpha1, kind: Rollout, resource: rollouts, podSpecPath: spec.template.spec}\n    - {group: apps, kind: Deployment, resource: deployments, podSpecPath: spec.template.spec}\n    - {group: '', kind: rollout, resource: Rollouts, podSpecPath: 'spec.templates[0].spec'}\n";
        let err = LoadedConfig::from_yaml(yaml, "t").err();
        let Some(ConfigError::Invalid { problems, .. }) = err else {
            unreachable!("expected validation problems, got {err:?}")
        };
        let found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.key.as_str(), p.message.as_str()))
            .collect();
        let keys: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "workloads.custom[0].podSpecPath",
                "workloads.custom[1].kind",
                "workloads.custom[2].kind",
                "workloads.custom[3].group",
                "workloads.custom[3].kind",
                "workloads.custom[3].resource",
                "workloads.custom[3].podSpecPath",
            ],
            "{found:?}"
        );
        assert!(found[0].1.contains("empty"), "{found:?}");
        assert!(
            found[1]
                .1
                .contains("already configured at workloads.custom[0]"),
            "{found:?}"
        );
        assert!(found[2].1.contains("built-in kind"), "{found:?}");
        assert!(found[6].1.contains("not supported"), "{found:?}");
        let missing = LoadedConfig::from_yaml(
            "workloads:\n  custom:\n    - {group: argoproj.io, kind: Rollout, resource: rollouts}\n",
            "t",
        );
        let text = missing.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("workloads.custom[0]") && text.contains("podSpecPath"),
            "{text}"
        );
    }
}
