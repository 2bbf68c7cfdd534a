//! The review engine: one admission request in, one verdict out. It finds the images of the
//! object, gathers evidence for those an image policy asks about (bounded by the request's
//! deadline), runs every policy (built-in rules inline; Rego policies, which read the input
//! document, on the blocking pool under the same deadline) and hands the findings to the pure
//! decision core. Its identity covers the configuration and every loaded Rego file.
//!
//! What is judged:
//! * CREATE: every image site of the object (containers of every kind and image volumes).
//! * UPDATE: only what the update changes. A container that is new, or whose image, ports or
//!   security settings differ from `oldObject`, is judged in full, and so is an image volume
//!   that is new or whose reference or pull policy differ; unchanged sites are not judged again, so a label edit on a running pod never fails because a rule or the registry
//!   changed since it was admitted. When pod-level settings (host namespaces, pod security
//!   context) change, everything is judged. Without a usable `oldObject`, everything is judged.
//!   Re-judging what already runs is the audit loop's job, not admission's.
//! * DELETE and CONNECT: allowed. Kinds without pods: allowed (debug log). A custom kind named
//!   in `workloads.custom[]` is judged like a Deployment's template; whatever sits at its
//!   `podSpecPath` that is not a pod spec is denied, never skipped.
//!
//! `Engine::pin` serves `/mutate` (opt-in digest pinning): the same evidence gathering, then the
//! pure `pinning` planner instead of the policies; it never denies.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, Operation};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ImagePolicy, LoadedConfig, Mode};
use crate::decision::Verdict;
use crate::evidence::{EvidenceError, EvidenceSource, GatherContext, Priority};
use crate::exceptions::Exceptions;
use crate::pinning;
use crate::policy::input::InputDocument;
use crate::policy::lifecycle::{LifecycleFacts, build_time};
use crate::policy::rego::{RegoBundle, RegoError};
use crate::policy::{Finding, ImageEntry, Policy, PolicyInput, ScanState, Subject, builtin};
use crate::reference::{GlobError, ImageGlobs, ImageRef, ReferenceError};
use crate::running::{
    RULE_RUNNING_DIGEST, RunningDigests, admitted_digest_found, moved_tag_fix, moved_tag_found,
    pinned_digest_found,
};

/// Per image entry: the reference judged, and what its running digest is compared with.
type GatheredFor = (ImageRef, Vec<(Compared, ImageRef)>);

/// What re-judging compares a running digest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compared {
    /// The spec's tag, resolved now.
    TagNow,
    /// The digest the spec pins.
    SpecPin,
    /// The digest admission resolved the reference to.
    Admitted,
}
use crate::scan::{NoScans, ScanSource};
use crate::subject::ReviewSubject;
use crate::workload::{self, PodView};

/// Rule id for requests that cannot be judged at all (no object, malformed pod spec).
pub const RULE_ADMISSION_REQUEST: &str = "admission-request";

/// Rule id for objects with more images than `limits.maxImagesPerObject`.
pub const RULE_MAX_IMAGES: &str = "max-images";

/// The engine could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Glob(#[from] GlobError),
    #[error(transparent)]
    Rego(#[from] RegoError),
    #[error("workloads.custom[{index}].podSpecPath: {source}")]
    CustomWorkload {
        index: usize,
        #[source]
        source: workload::SpecPathError,
    },
}

/// Builds an engine for a (re)loaded configuration, wiring the evidence and scan sources
/// that configuration names. Used at start and on every hot reload.
pub type EngineBuilder =
    Arc<dyn Fn(LoadedConfig) -> Result<Engine, EngineBuildError> + Send + Sync>;

/// Why a (re)loaded configuration could not become an engine: the composition root's own
/// error, kept whole so its source chain still names the cause ([`describe_error`]).
pub type EngineBuildError = Box<dyn std::error::Error + Send + Sync>;

/// An error and each cause its message does not already contain, joined by `: ` (for logs
/// and stderr, where a chain printed naively repeats itself).
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(err) = cause {
        let more = err.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = err.source();
    }
    text
}

/// Document policy (Rego) evaluations running at once, process-wide: twice the cores, so the
/// CPU stays busy while a slow evaluation waits, and never hundreds of interpreters at once.
static POLICY_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    tokio::sync::Semaphore::new(cores * 2)
});

/// Where document policy (Rego) evaluations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegoRoute {
    /// Inline while recent evaluations cost less than [`INLINE_BELOW`] (the hand-off to the
    /// blocking pool, two thread wake-ups and a cross-core copy, costs more than a
    /// Gatekeeper-library policy's evaluation); on the blocking pool otherwise. The default.
    Adaptive,
    /// Always on Tokio's blocking pool.
    Pool,
    /// Always inline on the async worker (for benchmarks and tests).
    Inline,
}

/// Evaluations whose recent average cost is below this run inline. An inline evaluation is
/// still bounded by `policies.rego.timeoutMillis` (regorus's execution timer) and by
/// [`POLICY_SLOTS`]; one that runs long raises the average, and the next ones go to the pool.
pub const INLINE_BELOW: std::time::Duration = std::time::Duration::from_micros(250);

/// The recent cost of a configuration's document policy evaluations: an exponential moving
/// average (weight 1/8) in nanoseconds; starts above [`INLINE_BELOW`], so the first
/// evaluations of an unknown policy set run on the pool.
#[derive(Debug)]
struct EvaluationCost(std::sync::atomic::AtomicU64);

impl EvaluationCost {
    fn new() -> Self {
        Self(std::sync::atomic::AtomicU64::new(u64::MAX))
    }

    fn runs_inline(&self) -> bool {
        let nanos = self.0.load(std::sync::atomic::Ordering::Relaxed);
        u128::from(nanos) < INLINE_BELOW.as_nanos()
    }

    fn record(&self, took: std::time::Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Races between reviews lose an update at worst: this is a routing hint.
        let old = self.0.load(std::sync::atomic::Ordering::Relaxed);
        let new = if old == u64::MAX {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.0.store(new, std::sync::atomic::Ordering::Relaxed);
    }
}

/// When a review's answer is due, and who waits for it.
#[derive(Debug, Clone, Copy)]
struct Budget {
    deadline: Instant,
    priority: Priority,
}

/// A configuration turned into ready-to-run policies. Immutable: a reload builds a new one.
#[derive(Debug)]
pub struct Engine {
    loaded: LoadedConfig,
    /// Policies run inline on the async worker (built-in rules: microseconds each).
    policies: Vec<Box<dyn Policy>>,
    /// Policies that read the input document (Rego), run on the blocking pool.
    document_policies: Arc<Vec<Box<dyn Policy>>>,
    rego: Option<Arc<RegoBundle>>,
    /// The bundle identity: the configuration's, extended with the Rego files' contents.
    identity: String,
    image_policies: Vec<(ImagePolicy, ImageGlobs)>,
    /// The kinds whose pod specs are judged: built-in ones and `workloads.custom[]`.
    kinds: workload::WorkloadKinds,
    exceptions: Exceptions,
    evidence: Arc<dyn EvidenceSource>,
    scans: Arc<dyn ScanSource>,
    clock: Arc<dyn Clock>,
    /// Image references as written in pod specs, parsed: oci-spec's parser is a large regex
    /// and was 8% of the warm review's CPU. Parsing depends only on the text, and a
    /// parsed reference is shared by `Arc`; bounded by the bytes of the keys.
    references: moka::sync::Cache<String, Result<ImageRef, ReferenceError>>,
    /// Where Rego evaluations run, and what they cost lately.
    rego_route: RegoRoute,
    rego_cost: Arc<EvaluationCost>,
}

/// Bytes of image reference text the parse cache holds (a hostile pod can write up to 4096
/// bytes per image; the entries' own size is about twice their text).
const REFERENCE_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// A verdict with what it was decided on: the judged image sites with their evidence and
/// scans, `None` when the request was never judged that far (skipped, refused early, or
/// answered with `onError`).
#[derive(Debug)]
pub struct Observed {
    pub verdict: Verdict,
    pub subject: Option<Arc<ReviewSubject>>,
}

impl Engine {
    pub fn new(
        loaded: LoadedConfig,
        evidence: Arc<dyn EvidenceSource>,
    ) -> Result<Self, EngineError> {
        let mut policies = builtin::from_config(&loaded.config)?;
        let rego = if loaded.config.policies.rego.paths.is_empty() {
            None
        } else {
            Some(Arc::new(RegoBundle::load(&loaded.config.policies.rego)?))
        };
        let mut document_policies = match &rego {
            Some(bundle) => bundle.policies(&loaded.config)?,
            None => Vec::new(),
        };
        // Whatever their origin, document readers run on the blocking pool.
        let (readers, inline): (Vec<_>, Vec<_>) =
            policies.drain(..).partition(|p| p.reads_document());
        policies = inline;
        document_policies.splice(0..0, readers);
        let identity = bundle_identity(&loaded.identity, rego.as_deref());
        let image_policies = loaded
            .config
            .image_policies
            .iter()
            .map(|p| {
                Ok((
                    p.clone(),
                    ImageGlobs::new(p.images.iter().map(String::as_str))?,
                ))
            })
            .collect::<Result<Vec<_>, GlobError>>()?;
        let exceptions = Exceptions::new(&loaded.config.exceptions)?;
        let kinds = crate::config::custom_workload_kinds(&loaded.config.workloads)
            .map_err(|(index, source)| EngineError::CustomWorkload { index, source })?;
        Ok(Self {
            loaded,
            kinds,
            policies,
            document_policies: Arc::new(document_policies),
            rego,
            identity,
            image_policies,
            exceptions,
            evidence,
            scans: Arc::new(NoScans),
            clock: Arc::new(SystemClock),
            references: moka::sync::Cache::builder()
                .max_capacity(REFERENCE_CACHE_BYTES)
                .weigher(|written: &String, _| {
                    u32::try_from(written.len().saturating_mul(2)).unwrap_or(u32::MAX)
                })
                .build(),
            rego_route: RegoRoute::Adaptive,
            rego_cost: Arc::new(EvaluationCost::new()),
        })
    }

    /// `ImageRef::parse(written)`, from the cache when this text was parsed before.
    fn parse_reference(&self, written: &str) -> Result<ImageRef, ReferenceError> {
        if let Some(parsed) = self.references.get(written) {
            return parsed;
        }
        let parsed = ImageRef::parse(written);
        self.references.insert(written.to_owned(), parsed.clone());
        parsed
    }

    /// Folds the fingerprints of the signature trust in force (keys, identities, trust roots,
    /// one per image policy that requires signatures) into the decision identity, so a
    /// refreshed TUF root or a changed key file changes it as a changed configuration would.
    pub fn with_trust_material(mut self, fingerprints: &[String]) -> Self {
        if !fingerprints.is_empty() {
            self.identity = crate::config::identity_of(
                format!(
                    "portcullis-trust\0{}\0{}",
                    self.identity,
                    fingerprints.join("\0")
                )
                .as_bytes(),
            );
        }
        self
    }

    /// Where cached scan reports are looked up (none by default).
    pub fn with_scans(mut self, scans: Arc<dyn ScanSource>) -> Self {
        self.scans = scans;
        self
    }

    /// The cached scan report of `digest` from the scan sources (re-judging compares it with
    /// what it saw, to re-judge only the digests whose report changed).
    pub fn scan_lookup(&self, digest: &str) -> Option<Arc<crate::scan::ScanReport>> {
        self.scans.lookup(digest)
    }

    /// Drops the cached signatures and attestations of these digests, so their next judgement
    /// reads them from the registry again (re-judging's attestation refresh).
    pub async fn forget_signatures(&self, digests: &[String]) {
        self.evidence.forget_signatures(digests).await;
    }

    /// Why the engine cannot judge yet (a scan source's first listing is still running).
    pub fn pending(&self) -> Option<String> {
        self.scans.pending()
    }

    /// The clock rules (and reports' timestamps) use.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Where Rego evaluations run (adaptive by default; the others for benches and tests).
    pub fn with_rego_route(mut self, route: RegoRoute) -> Self {
        self.rego_route = route;
        self
    }

    /// Whether the next Rego evaluation runs inline (the adaptive route's current choice).
    pub fn rego_runs_inline(&self) -> bool {
        match self.rego_route {
            RegoRoute::Adaptive => self.rego_cost.runs_inline(),
            RegoRoute::Pool => false,
            RegoRoute::Inline => true,
        }
    }

    /// The clock time-dependent rules judge against (the system clock by default).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Exceptions that no longer apply now (for `config validate`).
    pub fn expired_exceptions(&self) -> Vec<&crate::exceptions::Exception> {
        self.exceptions.expired(self.clock.now())
    }

    pub fn config(&self) -> &Config {
        &self.loaded.config
    }

    /// The configuration this engine was built from (a policy-only reload rebuilds from it).
    pub fn loaded(&self) -> &LoadedConfig {
        &self.loaded
    }

    /// The bundle identity: `sha256:<hex>` of the configuration, extended with the path and
    /// content of every Rego file when policies are loaded (see [`bundle_identity`]).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The loaded Rego policies, when `policies.rego.paths` names any.
    pub fn rego(&self) -> Option<&RegoBundle> {
        self.rego.as_deref()
    }

    /// Names of every policy in force, in evaluation order.
    pub fn policy_names(&self) -> Vec<&str> {
        self.policies
            .iter()
            .chain(self.document_policies.iter())
            .map(|p| p.name())
            .collect()
    }

    pub fn origin(&self) -> &str {
        &self.loaded.origin
    }

    /// The time the engine may spend on a request whose API-server timeout is `timeout`
    /// (or the configured default), keeping a margin to send the answer.
    pub fn budget(&self, timeout: Option<Duration>) -> Duration {
        let limits = &self.loaded.config.limits;
        let timeout = timeout.unwrap_or(limits.default_timeout_seconds);
        timeout.saturating_sub(limits.timeout_margin_millis)
    }

    /// Judges one admission request. Never fails: every problem becomes a verdict.
    pub async fn review(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        deadline: Instant,
        priority: Priority,
    ) -> Verdict {
        self.review_observed(request, deadline, priority, None)
            .await
            .verdict
    }

    /// [`Engine::review`], also returning the judged image sites with their evidence and
    /// scans (for the inventory), and judging each site listed in `running` by the digest
    /// its node runs rather than by what its reference resolves to now (re-judging).
    pub async fn review_observed(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        deadline: Instant,
        priority: Priority,
        running: Option<&RunningDigests>,
    ) -> Observed {
        let mut judged = None;
        let verdict = self
            .review_inner(request, deadline, priority, running, &mut judged)
            .await;
        Observed {
            verdict,
            subject: judged,
        }
    }

    async fn review_inner(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        deadline: Instant,
        priority: Priority,
        running: Option<&RunningDigests>,
        judged: &mut Option<Arc<ReviewSubject>>,
    ) -> Verdict {
        let namespace = request.namespace.as_deref().unwrap_or("");
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return Verdict::skipped(self.identity());
        }
        if self
            .loaded
            .config
            .exclude
            .namespaces
            .iter()
            .any(|n| n == namespace)
        {
            tracing::debug!(namespace, "namespace excluded from evaluation");
            return Verdict::skipped(self.identity());
        }
        let group = request.kind.group.as_str();
        let version = request.kind.version.as_str();
        let kind = request.kind.kind.as_str();
        if !self.kinds.judges(group, version, kind) {
            tracing::debug!(
                group,
                kind,
                "kind carries no pods: allowed without evaluation"
            );
            return Verdict::skipped(self.identity());
        }
        // Built once the request is known to be judged: skipped requests (the no-op path)
        // copy nothing.
        let mut subject = ReviewSubject::new(
            operation_name(&request.operation),
            kind,
            namespace,
            request.name.as_str(),
        );
        let identity = self.identity();
        let Some(object) = &request.object else {
            return Verdict::decide(
                &subject,
                identity,
                vec![request_finding(format!(
                    "the {:?} request carries no object to judge",
                    request.operation
                ))],
            );
        };
        // Load shedding: a review that could not even start before its deadline (the body
        // arrived late, or the workers were saturated) is answered at once with the onError
        // outcome; judging it now would only produce an answer nobody waits for.
        if Instant::now() >= deadline {
            return Verdict::on_error(
                &subject,
                identity,
                self.loaded.config.on_error,
                "the review could not start before the API server's deadline (portcullis is \
                 overloaded or the request arrived too slowly)",
            );
        }
        let pod = match self.kinds.extract(group, version, kind, &object.data) {
            Ok(Some(pod)) => pod,
            Ok(None) => return Verdict::skipped(self.identity()),
            Err(err) => {
                return Verdict::decide(&subject, identity, vec![request_finding(err.to_string())]);
            }
        };
        // Every image may cost registry requests: bound them before any is made. Like an
        // over-size body, this is a guard, so it denies in every mode.
        let max_images = self.loaded.config.limits.max_images_per_object;
        let images = pod.containers.len() + pod.image_volumes.len();
        if images > usize::try_from(max_images).unwrap_or(usize::MAX) {
            return Verdict::decide(
                &subject,
                identity,
                vec![Finding {
                    rule: RULE_MAX_IMAGES.into(),
                    subject: Subject::Pod,
                    found: format!(
                        "{images} images (containers, init and ephemeral containers, image \
                         volumes), more than the limit of {max_images} (limits.maxImagesPerObject)"
                    ),
                    fix: format!(
                        "split the workload into objects of at most {max_images} images, \
                         or raise limits.maxImagesPerObject in portcullis's configuration"
                    ),
                    mode: Mode::Enforce,
                }],
            );
        }
        let old_pod = match (&request.operation, &request.old_object) {
            (Operation::Update, Some(old)) => self
                .kinds
                .extract(group, version, kind, &old.data)
                .ok()
                .flatten(),
            _ => None,
        };
        let scope = JudgedScope::new(&pod, old_pod.as_ref());
        subject.pod = pod;
        self.judge(
            subject,
            request,
            &scope,
            Budget { deadline, priority },
            running,
            judged,
        )
        .await
    }

    /// Digest pinning for `POST /mutate` (see `pinning`): resolves every image site of a Pod
    /// that an image policy matches through the same evidence source (and caches) the
    /// validating review uses, and decides which sites to rewrite. Never denies: an image that
    /// cannot be resolved is left as written for the validating webhook to judge.
    pub async fn pin(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        deadline: Instant,
        priority: Priority,
    ) -> pinning::Outcome {
        use pinning::{Outcome, Resolution};
        let config = &self.loaded.config;
        if !config.pinning.enabled {
            return Outcome::Disabled;
        }
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return Outcome::NotApplicable("only CREATE and UPDATE are pinned");
        }
        let namespace = request.namespace.as_deref().unwrap_or("");
        if config.exclude.namespaces.iter().any(|n| n == namespace) {
            return Outcome::NotApplicable("namespace excluded from evaluation");
        }
        // Pods only: a controller's template keeps its tags, so GitOps tools that compare it
        // with Git see no drift; the Pods it creates are pinned as they are admitted.
        if (request.kind.group.as_str(), request.kind.kind.as_str()) != ("", "Pod") {
            return Outcome::NotApplicable("not a Pod (controllers keep their tags)");
        }
        let Some(object) = &request.object else {
            return Outcome::NotApplicable("no object");
        };
        let Ok(Some(pod)) = workload::extract("", "Pod", &object.data) else {
            return Outcome::NotApplicable(
                "the pod spec cannot be read (the validating webhook denies it)",
            );
        };
        let images = pod.containers.len() + pod.image_volumes.len();
        if images > usize::try_from(config.limits.max_images_per_object).unwrap_or(usize::MAX) {
            return Outcome::NotApplicable(
                "more images than limits.maxImagesPerObject (the validating webhook denies it)",
            );
        }
        // On UPDATE only new or changed sites: rewriting the image of a running container
        // would restart it, and an ephemeral-container update may change nothing else.
        let old = match (&request.operation, &request.old_object) {
            (Operation::Update, Some(old)) => {
                workload::extract("", "Pod", &old.data).ok().flatten()
            }
            _ => None,
        };
        let in_scope = |kind: workload::ContainerKind, name: &str| {
            old.as_ref()
                .is_none_or(|old| pod.site_changed(old, kind, name))
        };
        let mut entries: Vec<ImageEntry> = pod
            .image_sites()
            .filter(|site| in_scope(site.kind, site.name))
            .filter_map(|site| {
                let reference = ImageRef::parse(site.image).ok()?;
                pinning::wants_digest(&reference).then(|| ImageEntry {
                    container: site.name.to_owned(),
                    container_kind: site.kind,
                    reference: Ok(reference),
                    evidence: None,
                    scan: ScanState::NotRequested,
                    lifecycle: Default::default(),
                })
            })
            .collect();
        let context = GatherContext {
            namespace: namespace.to_owned(),
            pull: pod.pull.clone(),
            deadline,
            priority,
        };
        // Past the deadline nothing is resolved, so nothing is pinned; the answer still goes
        // out in time, and the validating webhook applies its own deadline and onError.
        let late = Instant::now() >= deadline
            || tokio::time::timeout_at(deadline, self.gather(&mut entries, &context, None))
                .await
                .is_err();
        let plan = pinning::plan(&pod, in_scope, |image| {
            if !self
                .image_policies
                .iter()
                .any(|(_, globs)| globs.matches(image))
            {
                return Resolution::NotMatched;
            }
            let evidence = entries
                .iter()
                .find(|e| e.reference.as_ref().is_ok_and(|r| r == image))
                .and_then(|e| e.evidence.as_ref());
            match evidence {
                Some(Ok(evidence)) => match &evidence.digest {
                    Some(digest) => Resolution::Resolved(digest.clone()),
                    None => Resolution::Unresolved("the tag does not exist in the registry".into()),
                },
                Some(Err(err)) => Resolution::Unresolved(err.message.clone()),
                None if late => {
                    Resolution::Unresolved("not resolved before the API server's deadline".into())
                }
                None => Resolution::Unresolved("not resolved".into()),
            }
        });
        Outcome::Planned(plan)
    }

    /// Gathers evidence for the subject's judged image sites, runs every policy and decides.
    async fn judge(
        &self,
        mut subject: ReviewSubject,
        request: &AdmissionRequest<DynamicObject>,
        scope: &JudgedScope,
        budget: Budget,
        running: Option<&RunningDigests>,
        judged: &mut Option<Arc<ReviewSubject>>,
    ) -> Verdict {
        let Budget { deadline, priority } = budget;
        let identity = self.identity();
        let mut images: Vec<ImageEntry> = subject
            .pod
            .image_sites()
            .filter(|site| scope.judges(site.kind, site.name))
            .map(|site| ImageEntry {
                container: site.name.to_owned(),
                container_kind: site.kind,
                reference: self.parse_reference(site.image),
                evidence: None,
                scan: ScanState::NotRequested,
                lifecycle: Default::default(),
            })
            .collect();
        let gather_context = GatherContext {
            namespace: subject.namespace.clone(),
            pull: subject.pod.pull.clone(),
            deadline,
            priority,
        };
        let (errors, moved_tags) = match tokio::time::timeout_at(
            deadline,
            self.gather(&mut images, &gather_context, running),
        )
        .await
        {
            Ok(gathered) => gathered,
            Err(_elapsed) => {
                return Verdict::on_error(
                    &subject,
                    identity,
                    self.loaded.config.on_error,
                    "evidence was not gathered before the API server's deadline",
                );
            }
        };
        if !errors.is_empty() && self.loaded.config.on_error == crate::config::OnError::Deny {
            let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Verdict::on_error(
                &subject,
                identity,
                crate::config::OnError::Deny,
                &reasons.join("; "),
            );
        }
        Self::attach_lifecycle(&mut images);
        self.attach_scans(&mut images);
        // Notes from evidence (e.g. a stale tag resolution served while the registry fails).
        let mut notes: Vec<String> = Vec::new();
        for entry in &images {
            if let Some(Ok(evidence)) = &entry.evidence {
                for note in &evidence.notes {
                    if !notes.contains(note) {
                        notes.push(note.clone());
                    }
                }
            }
        }
        let now = self.clock.now();
        subject.images = images;
        // Shared, not copied, with the document-reading policies on the blocking pool.
        let subject = Arc::new(subject);
        *judged = Some(subject.clone());
        let input = PolicyInput {
            subject: &subject,
            now,
            document: None,
        };
        let mut findings = moved_tags;
        for policy in &self.policies {
            match policy.evaluate(&input) {
                Ok(found) => findings.extend(found),
                Err(err) => {
                    tracing::error!(policy = policy.name(), error = %err, "policy failed");
                    return Verdict::on_error(
                        &subject,
                        identity,
                        self.loaded.config.on_error,
                        &err.to_string(),
                    );
                }
            }
        }
        findings.retain(|f| scope.keeps(f));
        if !self.document_policies.is_empty() {
            // Never judge a policy on a missing review (it would find nothing): fail closed.
            // The request goes straight into Rego's own value type, with no JSON copy.
            let document = match crate::policy::rego::input_document(request, &subject.images, now)
            {
                Ok(document) => document,
                Err(err) => {
                    let reason = format!("cannot build the policy input: {err}");
                    return Verdict::on_error(
                        &subject,
                        identity,
                        self.loaded.config.on_error,
                        &reason,
                    );
                }
            };
            let owned = OwnedInput {
                document,
                subject: subject.clone(),
                now,
            };
            let policies = self.document_policies.clone();
            let inline = self.rego_runs_inline();
            let cost = self.rego_cost.clone();
            // Interpreters that cost more than the hand-off run on the blocking pool, never on
            // an async worker; each is bounded by its execution limit, the whole by the API
            // server's deadline. At most POLICY_SLOTS run at once (inline or not): a burst of
            // reviews queues for a slot (within the deadline) instead of starting hundreds of
            // threads that all miss it.
            let task = async move {
                let _slot = POLICY_SLOTS.acquire().await;
                let timed = move || {
                    let started = std::time::Instant::now();
                    let found = owned.evaluate(&policies);
                    cost.record(started.elapsed());
                    found
                };
                if inline {
                    Ok(timed())
                } else {
                    tokio::task::spawn_blocking(timed).await
                }
            };
            // An inline evaluation cannot be interrupted: one that ends past the deadline
            // fails as a late one on the pool would.
            let answer = tokio::time::timeout_at(deadline, task)
                .await
                .ok()
                .filter(|_| Instant::now() <= deadline);
            let failure = match answer.ok_or(()) {
                Ok(Ok(Ok(found))) => {
                    findings.extend(
                        found
                            .into_iter()
                            .filter(|f| f.subject == Subject::Pod || scope.keeps(f)),
                    );
                    None
                }
                Ok(Ok(Err(err))) => Some(err.to_string()),
                Ok(Err(join)) => Some(format!("policy evaluation aborted: {join}")),
                Err(()) => {
                    Some("policy evaluation did not finish before the API server's deadline".into())
                }
            };
            if let Some(reason) = failure {
                tracing::error!(error = %reason, "policy failed");
                return Verdict::on_error(&subject, identity, self.loaded.config.on_error, &reason);
            }
        }
        let (findings, waivers) = self.exceptions.apply(findings, &subject.namespace, now);
        // Short (image: error) so each warning stays within the API server's 120 characters.
        let reasons: Vec<String> = errors
            .iter()
            .map(|err| format!("{}: {}", err.image, err.message))
            .collect();
        Verdict::decide(&subject, identity, findings)
            .with_waivers(&waivers)
            .with_error_warnings(&reasons)
            .with_notes(&notes)
    }

    /// Build time and base image state from the gathered evidence, for the lifecycle rules.
    fn attach_lifecycle(images: &mut [ImageEntry]) {
        for entry in images.iter_mut() {
            let Some(Ok(evidence)) = &entry.evidence else {
                continue;
            };
            let created = evidence
                .facts
                .as_ref()
                .and_then(|facts| facts.created.as_deref())
                .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok());
            let provenance = evidence
                .attestations
                .iter()
                .map(|a| (a.predicate_type.as_str(), &a.predicate));
            entry.lifecycle = LifecycleFacts {
                built: build_time(provenance, created),
                base: evidence.base_image.clone(),
            };
        }
    }

    /// Looks up the cached scan of every image an image policy judges vulnerabilities for, by
    /// the digest the registry resolved, or the digest pinned in the reference.
    fn attach_scans(&self, images: &mut [ImageEntry]) {
        for entry in images.iter_mut() {
            let Ok(image) = &entry.reference else {
                continue;
            };
            // Document-reading policies see every image's scan (`input.images[].scan`).
            let wanted = !self.document_policies.is_empty()
                || self.image_policies.iter().any(|(policy, globs)| {
                    policy.vulnerabilities.is_some() && globs.matches(image)
                });
            if !wanted {
                continue;
            }
            let resolved = entry
                .evidence
                .as_ref()
                .and_then(|e| e.as_ref().ok())
                .and_then(|e| e.digest.clone());
            let digest = resolved.or_else(|| image.digest().map(str::to_owned));
            let attested = digest.as_ref().and_then(|_| match &entry.evidence {
                Some(Ok(evidence)) => evidence.attested_scan(),
                _ => None,
            });
            // When sources disagree for one digest, the newest report wins (docs/scans.md).
            let by_digest = digest
                .as_deref()
                .and_then(|d| self.scans.lookup(d))
                .into_iter()
                .chain(attested)
                .max_by_key(|report| report.scanned_at);
            // A report that names no digest is only a fallback (the tag may have moved).
            entry.scan = match (by_digest, digest) {
                (Some(report), _) => ScanState::Found(report),
                (None, digest) => match (self.scans.lookup_by_tag(image), digest) {
                    (Some(report), _) => ScanState::Found(report),
                    (None, Some(digest)) => ScanState::Missing { digest },
                    (None, None) => ScanState::NoDigest,
                },
            };
        }
    }

    /// Gathers evidence, concurrently and once per distinct image, for every image that an
    /// image policy matches. Returns the failures (each is also stored on its entries).
    ///
    /// With `running` (re-judging), a site whose node reported a digest is judged by that
    /// digest (`reference@digest`), and a tag-only site is also resolved now so that a tag
    /// that moved since the pull becomes a [`RULE_RUNNING_DIGEST`] finding (returned).
    async fn gather(
        &self,
        images: &mut [ImageEntry],
        context: &GatherContext,
        running: Option<&RunningDigests>,
    ) -> (Vec<EvidenceError>, Vec<Finding>) {
        // Borrowed from the configuration in force, never copied per review.
        let mut wanted: Vec<(ImageRef, Vec<&ImagePolicy>)> = Vec::new();
        // Per entry: the reference gathered for it, and what to compare what runs with (the
        // spec's tag resolved now, the digest the spec pins, the digest admission resolved).
        let mut gathered_for: Vec<Option<GatheredFor>> = Vec::new();
        for entry in images.iter() {
            let Ok(image) = &entry.reference else {
                gathered_for.push(None);
                continue;
            };
            let matching: Vec<&ImagePolicy> = self
                .image_policies
                .iter()
                .filter(|(_, globs)| globs.matches(image))
                .map(|(policy, _)| policy)
                .collect();
            if matching.is_empty() {
                gathered_for.push(None);
                continue;
            }
            let runs = running.and_then(|r| r.digest(entry.container_kind, &entry.container));
            let pinned = runs
                .filter(|digest| image.digest() != Some(*digest) || image.tag().is_some())
                .and_then(|digest| {
                    ImageRef::parse(&format!("{}@{digest}", image.repository_path())).ok()
                });
            let mut compare = Vec::new();
            if let Some(runs) = runs {
                match image.digest() {
                    // A tag-only site: also resolve the tag now, to compare with what runs.
                    None => compare.push((Compared::TagNow, image.clone())),
                    // A pinned site that runs another digest (not a platform child of it).
                    Some(spec) if spec != runs => compare.push((Compared::SpecPin, image.clone())),
                    Some(_) => {}
                }
                if let Some(admitted) = running
                    .and_then(|r| r.admitted(entry.container_kind, &entry.container))
                    .filter(|admitted| *admitted != runs && image.digest() != Some(*admitted))
                    && let Ok(reference) =
                        ImageRef::parse(&format!("{}@{admitted}", image.repository_path()))
                {
                    compare.push((Compared::Admitted, reference));
                }
            }
            let judged = pinned.unwrap_or_else(|| image.clone());
            for reference in std::iter::once(&judged).chain(compare.iter().map(|(_, r)| r)) {
                if !wanted.iter().any(|(seen, _)| seen == reference) {
                    wanted.push((reference.clone(), matching.clone()));
                }
            }
            gathered_for.push(Some((judged, compare)));
        }
        if wanted.is_empty() {
            return (Vec::new(), Vec::new());
        }
        // Each image's evidence is shared by every site that names it.
        let results: Vec<Result<Arc<crate::evidence::ImageEvidence>, EvidenceError>> = join_all(
            wanted
                .iter()
                .map(|(image, policies)| self.evidence.gather(image, policies, context)),
        )
        .await
        .into_iter()
        .map(|result| result.map(Arc::new))
        .collect();
        let position = |reference: &ImageRef| wanted.iter().position(|(seen, _)| seen == reference);
        let result_of = |reference: &ImageRef| position(reference).map(|index| &results[index]);
        // One error per distinct image gathered, as each is one registry failure.
        let errors: Vec<EvidenceError> = results
            .iter()
            .enumerate()
            .filter(|(index, _)| {
                gathered_for
                    .iter()
                    .flatten()
                    .any(|(judged, _)| position(judged) == Some(*index))
            })
            .filter_map(|(_, result)| result.as_ref().err().cloned())
            .collect();
        let mut moved = Vec::new();
        let mode = running.and_then(|r| r.moved_tag);
        for (entry, target) in images.iter_mut().zip(&gathered_for) {
            let Some((judged, compare)) = target else {
                continue;
            };
            let Some(result) = result_of(judged) else {
                continue;
            };
            entry.evidence = Some(result.clone());
            let Some(runs) = judged.digest() else {
                continue;
            };
            let written = entry
                .reference
                .as_ref()
                .map(|r| r.written().to_owned())
                .unwrap_or_default();
            // One finding per other digest: a tag admitted as X that names X now is one move.
            let mut reported: Vec<&str> = Vec::new();
            for (compared, reference) in compare {
                let Some(Ok(now)) = result_of(reference) else {
                    // Cannot resolve what to compare with: the judgement of what runs stands
                    // (the registry failure is judged on its own where it matters).
                    continue;
                };
                // A runtime may report the platform manifest it pulled from a multi-arch
                // index: when that is a child of what is compared with, nothing moved, and
                // the index (what signatures are made on) is what is judged.
                if now.children.values().any(|child| child == runs) {
                    if *compared != Compared::Admitted {
                        entry.evidence = Some(Ok(now.clone()));
                    }
                    continue;
                }
                let Some(other) = now
                    .digest
                    .as_deref()
                    .filter(|other| *other != runs && !reported.contains(other))
                else {
                    continue;
                };
                reported.push(other);
                let Some(mode) = mode else {
                    continue;
                };
                let found = match compared {
                    Compared::TagNow => moved_tag_found(&written, runs, other),
                    Compared::SpecPin => pinned_digest_found(&written, runs),
                    Compared::Admitted => admitted_digest_found(&written, runs, other),
                };
                moved.push(Finding {
                    rule: RULE_RUNNING_DIGEST.into(),
                    subject: Subject::Container {
                        container: entry.container.clone(),
                        kind: entry.container_kind,
                        image: written.clone(),
                    },
                    found,
                    fix: moved_tag_fix(&written),
                    mode,
                });
            }
        }
        (errors, moved)
    }
}

/// What document-reading policies need, owned so it can move to the blocking pool.
struct OwnedInput {
    subject: Arc<ReviewSubject>,
    now: time::OffsetDateTime,
    document: InputDocument,
}

impl OwnedInput {
    /// Runs `policies` in order; the first failure fails the whole evaluation.
    fn evaluate(
        &self,
        policies: &[Box<dyn Policy>],
    ) -> Result<Vec<Finding>, crate::policy::PolicyError> {
        let input = PolicyInput {
            subject: &self.subject,
            now: self.now,
            document: Some(&self.document),
        };
        let mut findings = Vec::new();
        for policy in policies {
            findings.extend(policy.evaluate(&input)?);
        }
        Ok(findings)
    }
}

/// The identity every decision carries: the configuration's own `sha256:<hex>` when no Rego
/// policies are loaded; otherwise the sha256 of that and the Rego files' identity (their paths
/// and contents), so a changed policy file changes the identity as a changed key would.
pub fn bundle_identity(config: &str, rego: Option<&RegoBundle>) -> String {
    match rego {
        None => config.to_owned(),
        Some(bundle) => crate::config::identity_of(
            format!("portcullis-bundle\0{config}\0{}", bundle.identity()).as_bytes(),
        ),
    }
}

/// Which parts of a pod an UPDATE re-judges (see the module documentation).
#[derive(Debug)]
struct JudgedScope {
    /// `None`: everything. `Some`: only these containers, and no pod-level findings.
    changed: Option<Vec<(workload::ContainerKind, String)>>,
}

/// Whether two image sites of one kind share a name (the API server's validation refuses
/// that, but admission must not rely on it).
fn has_repeated_site(pod: &PodView) -> bool {
    let mut seen = std::collections::HashSet::new();
    pod.image_sites()
        .any(|site| !seen.insert((site.kind, site.name)))
}

impl JudgedScope {
    fn new(new: &PodView, old: Option<&PodView>) -> Self {
        let Some(old) = old else {
            return Self { changed: None };
        };
        // Sites are matched by (kind, name); a repeated name in either object would let a
        // second site hide behind the first one's unchanged twin, so judge everything.
        if old.pod != new.pod || has_repeated_site(new) || has_repeated_site(old) {
            return Self { changed: None };
        }
        let changed = new
            .image_sites()
            .filter(|site| new.site_changed(old, site.kind, site.name))
            .map(|site| (site.kind, site.name.to_owned()))
            .collect();
        Self {
            changed: Some(changed),
        }
    }

    fn judges(&self, kind: workload::ContainerKind, name: &str) -> bool {
        self.changed
            .as_ref()
            .is_none_or(|changed| changed.iter().any(|(k, n)| *k == kind && n == name))
    }

    fn keeps(&self, finding: &Finding) -> bool {
        match (&self.changed, &finding.subject) {
            (None, _) => true,
            (Some(_), Subject::Pod) => false,
            (
                Some(_),
                Subject::Container {
                    container, kind, ..
                },
            ) => self.judges(*kind, container),
        }
    }
}

fn request_finding(found: String) -> Finding {
    Finding {
        rule: RULE_ADMISSION_REQUEST.into(),
        subject: Subject::Pod,
        found,
        fix: "send a complete object with a valid pod spec".into(),
        mode: Mode::Enforce,
    }
}

pub fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::ContainerKind;
    use serde_json::{Value, json};

    /// The pod view of a Pod's `spec`.
    fn pod(spec: Value) -> PodView {
        workload::extract("", "Pod", &json!({ "spec": spec }))
            .unwrap()
            .unwrap()
    }

    fn app(image: &str) -> Value {
        json!({"name": "app", "image": image})
    }

    fn sidecar(image: &str) -> Value {
        json!({"name": "sidecar", "image": image})
    }

    fn finding(subject: Subject) -> Finding {
        Finding {
            rule: "no-latest-tag".into(),
            subject,
            found: "found".into(),
            fix: "fix".into(),
            mode: Mode::Enforce,
        }
    }

    fn about(name: &str, kind: ContainerKind) -> Finding {
        finding(Subject::Container {
            container: name.into(),
            kind,
            image: "nginx:1.27".into(),
        })
    }

    /// The `(kind, name)` of every site of `new` the scope judges, in pod-spec order.
    fn judged(scope: &JudgedScope, new: &PodView) -> Vec<(ContainerKind, String)> {
        new.image_sites()
            .filter(|site| scope.judges(site.kind, site.name))
            .map(|site| (site.kind, site.name.to_owned()))
            .collect()
    }

    fn site(kind: ContainerKind, name: &str) -> (ContainerKind, String) {
        (kind, name.to_owned())
    }

    #[test]
    fn without_an_old_object_everything_is_judged_and_kept() {
        let new = pod(json!({"containers": [app("nginx:1.27"), sidecar("envoy:1")]}));
        let scope = JudgedScope::new(&new, None);
        assert!(scope.changed.is_none());
        assert_eq!(judged(&scope, &new).len(), 2);
        assert!(scope.keeps(&finding(Subject::Pod)));
        assert!(scope.keeps(&about("app", ContainerKind::Container)));
    }

    #[test]
    fn an_update_judges_only_new_or_changed_images() {
        let old = pod(json!({"containers": [app("nginx:1.26"), sidecar("envoy:1")]}));
        let new = pod(json!({"containers": [
            app("nginx:1.27"), sidecar("envoy:1"), {"name": "extra", "image": "redis:7"}]}));
        let scope = JudgedScope::new(&new, Some(&old));
        assert_eq!(
            judged(&scope, &new),
            [
                site(ContainerKind::Container, "app"),
                site(ContainerKind::Container, "extra"),
            ]
        );
        assert!(!scope.judges(ContainerKind::Container, "sidecar"));
    }

    #[test]
    fn an_unchanged_image_is_not_judged_again() {
        let spec = json!({"containers": [app("nginx:latest")],
                          "volumes": [{"name": "data", "image": {"reference": "acme/data:1"}}]});
        let (old, new) = (pod(spec.clone()), pod(spec));
        let scope = JudgedScope::new(&new, Some(&old));
        assert_eq!(judged(&scope, &new), []);
        assert!(!scope.keeps(&about("app", ContainerKind::Container)));
        assert!(!scope.keeps(&about("data", ContainerKind::ImageVolume)));
    }

    #[test]
    fn images_swapped_between_two_containers_are_both_judged() {
        let old = pod(json!({"containers": [app("nginx:1.27"), sidecar("evil/miner:1")]}));
        let new = pod(json!({"containers": [app("evil/miner:1"), sidecar("nginx:1.27")]}));
        let scope = JudgedScope::new(&new, Some(&old));
        assert_eq!(
            judged(&scope, &new),
            [
                site(ContainerKind::Container, "app"),
                site(ContainerKind::Container, "sidecar"),
            ]
        );
    }

    #[test]
    fn reordering_unchanged_containers_and_volumes_judges_nothing() {
        let old = pod(json!({
            "containers": [app("nginx:1.27"), sidecar("envoy:1")],
            "volumes": [{"name": "scratch", "emptyDir": {}},
                        {"name": "data", "image": {"reference": "acme/data:1"}}]}));
        let new = pod(json!({
            "containers": [sidecar("envoy:1"), app("nginx:1.27")],
            "volumes": [{"name": "data", "image": {"reference": "acme/data:1"}},
                        {"name": "scratch", "emptyDir": {}}]}));
        let scope = JudgedScope::new(&new, Some(&old));
        assert_eq!(judged(&scope, &new), []);
    }

    #[test]
    fn a_container_whose_security_settings_or_ports_change_is_judged_in_full() {
        let old = pod(json!({"containers": [app("nginx:1.27"), sidecar("envoy:1")]}));
        let mut privileged = app("nginx:1.27");
        privileged["securityContext"] = json!({"privileged": true});
        let mut ported = sidecar("envoy:1");
        ported["ports"] = json!([{"containerPort": 80, "hostPort": 80}]);
        let new = pod(json!({"containers": [privileged, ported]}));
        let scope = JudgedScope::new(&new, Some(&old));
        assert_eq!(judged(&scope, &new).len(), 2);
    }

    #[test]
    fn sites_are_matched_by_kind_and_name() {
        // An init container and a container may share a name; a change to one does not
        // re-judge the other.
        let old = pod(json!({"initContainers": [app("busybox:1")],
                             "containers": [app("nginx:1.27")]}));
        let new = pod(json!({"initContainers": [app("busybox:2")],
                             "containers": [app("nginx:1.27")]}));
        let scope = JudgedScope::new(&new, Some(&old));
        assert_eq!(
            judged(&scope, &new),
            [site(ContainerKind::InitContainer, "app")]
        );
        assert!(scope.keeps(&about("app", ContainerKind::InitContainer)));
        assert!(!scope.keeps(&about("app", ContainerKind::Container)));
    }

    #[test]
    fn an_added_ephemeral_container_is_the_only_site_judged() {
        let old = pod(json!({"containers": [app("nginx:latest")]}));
        let new = pod(json!({"containers": [app("nginx:latest")],
                             "ephemeralContainers": [{"name": "debug", "image": "busybox"}]}));
        let scope = JudgedScope::new(&new, Some(&old));
        assert_eq!(
            judged(&scope, &new),
            [site(ContainerKind::EphemeralContainer, "debug")]
        );
    }

    #[test]
    fn an_image_volume_with_a_new_reference_or_pull_policy_is_judged() {
        let volume = |reference: &str, policy: Option<&str>| {
            let mut image = json!({"reference": reference});
            if let Some(policy) = policy {
                image["pullPolicy"] = json!(policy);
            }
            json!({"containers": [app("nginx:1.27")],
                   "volumes": [{"name": "data", "image": image}]})
        };
        let old = pod(volume("acme/data:1", None));
        for new in [
            pod(volume("acme/data:2", None)),
            pod(volume("acme/data:1", Some("Always"))),
        ] {
            let scope = JudgedScope::new(&new, Some(&old));
            assert_eq!(
                judged(&scope, &new),
                [site(ContainerKind::ImageVolume, "data")]
            );
        }
    }

    #[test]
    fn a_removed_container_is_not_judged() {
        let old = pod(json!({"containers": [app("nginx:1.27"), sidecar("envoy:1")]}));
        let new = pod(json!({"containers": [app("nginx:1.27")]}));
        let scope = JudgedScope::new(&new, Some(&old));
        assert_eq!(scope.changed.as_deref(), Some(&[][..]));
        assert!(!scope.judges(ContainerKind::Container, "sidecar"));
    }

    #[test]
    fn a_pod_level_change_judges_everything_and_keeps_pod_findings() {
        let old = pod(json!({"containers": [app("nginx:1.27")]}));
        for changed in [
            json!({"hostNetwork": true}),
            json!({"hostPID": true}),
            json!({"securityContext": {"runAsUser": 0}}),
            json!({"securityContext": {"runAsNonRoot": false}}),
        ] {
            let mut spec = json!({"containers": [app("nginx:1.27")]});
            spec.as_object_mut()
                .unwrap()
                .extend(changed.as_object().unwrap().clone());
            let new = pod(spec);
            let scope = JudgedScope::new(&new, Some(&old));
            assert!(scope.changed.is_none(), "{changed}");
            assert_eq!(
                judged(&scope, &new),
                [site(ContainerKind::Container, "app")]
            );
            assert!(scope.keeps(&finding(Subject::Pod)), "{changed}");
        }
    }

    #[test]
    fn a_scoped_update_drops_pod_level_findings_of_the_builtin_rules() {
        let old = pod(json!({"hostNetwork": true, "containers": [app("nginx:1.26")]}));
        let new = pod(json!({"hostNetwork": true, "containers": [app("nginx:1.27")]}));
        let scope = JudgedScope::new(&new, Some(&old));
        assert!(!scope.keeps(&finding(Subject::Pod)));
        assert!(scope.keeps(&about("app", ContainerKind::Container)));
    }

    #[test]
    fn a_changed_pull_secret_alone_rejudges_no_image() {
        // Pull credentials are not pod-level settings the rules judge: scoping stays by site.
        let old = pod(json!({"containers": [app("nginx:1.27")]}));
        let new = pod(json!({"imagePullSecrets": [{"name": "regcred"}],
                             "containers": [app("nginx:1.27")]}));
        let scope = JudgedScope::new(&new, Some(&old));
        assert_eq!(judged(&scope, &new), []);
    }

    #[test]
    fn a_repeated_site_name_is_detected_per_kind() {
        assert!(has_repeated_site(&pod(json!({
            "containers": [app("nginx:1.27"), app("evil/miner:1")]}))));
        assert!(has_repeated_site(&pod(json!({
            "containers": [app("nginx:1.27")],
            "volumes": [{"name": "d", "image": {"reference": "a:1"}},
                        {"name": "d", "image": {"reference": "b:1"}}]}))));
        assert!(!has_repeated_site(&pod(json!({
            "initContainers": [app("busybox:1")],
            "containers": [app("nginx:1.27")],
            "ephemeralContainers": [app("busybox:1")],
            "volumes": [{"name": "app", "image": {"reference": "a:1"}}]}))));
    }

    #[test]
    fn a_repeated_site_in_either_object_judges_everything() {
        let single = pod(json!({"containers": [app("nginx:1.27")]}));
        // The second `app` would otherwise hide behind the first one's unchanged twin.
        let repeated = pod(json!({"containers": [app("nginx:1.27"), app("evil/miner:1")]}));
        let scope = JudgedScope::new(&repeated, Some(&single));
        assert!(scope.changed.is_none());
        assert_eq!(judged(&scope, &repeated).len(), 2);
        let scope = JudgedScope::new(&single, Some(&repeated));
        assert!(scope.changed.is_none());
        assert!(scope.keeps(&finding(Subject::Pod)));
    }
}
