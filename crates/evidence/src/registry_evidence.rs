//! The registry-backed `EvidenceSource`: resolves tags, reads image facts, verifies
//! signatures and attestations, and caches all of it so the warm path is a few hash lookups.
//!
//! Caches (moka, each bounded by `evidence.cacheCapacity`):
//! * tag → digest: fresh for `evidence.tagTtlSeconds`; when a refresh fails with a transient
//!   error, the last known digest is served for up to `evidence.maxStalenessSeconds` more
//!   (stale-while-revalidate), with a warning saying so;
//! * digest → facts and platform children: `evidence.verifiedTtlSeconds` (digests are
//!   immutable);
//! * (digest, authorities fingerprint) → verification: `evidence.verifiedTtlSeconds` when
//!   verified, `evidence.unverifiedTtlSeconds` (default 10 s) when not, so an image signed
//!   just after its first denial is admitted soon; a key rotation changes the fingerprint,
//!   so old results are never reused for new keys;
//! * digest → what the registry holds (signatures, attestations, referrers), read once and
//!   shared by every policy: `evidence.unverifiedTtlSeconds`;
//! * failures: `evidence.failureTtlSeconds`, so a failing registry is not hammered.
//!
//! Every cache fill is single-flight (moka's `try_get_with`): concurrent reviews of one image
//! share one registry round trip.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tokio::time::Instant;

use crate::credentials::{Credential, DockerConfig, PullSecretSource};
use crate::registry::{
    Call, Manifest, RegistryClient, RegistryError, child_for_platform, facts_of,
};
use crate::signature::{self, Authorities, SignatureError};
use crate::source::{EvidenceFuture, EvidenceSource, GatherContext};
use portcullis_core::config::{Config, EvidenceSettings, ImagePolicy};
use portcullis_core::evidence::{
    EvidenceError, ImageEvidence, ImageFacts, PolicyVerification, SignatureEvidence,
};
use portcullis_core::policy::lifecycle::BaseImageState;
use portcullis_core::reference::ImageRef;

/// How long compiled authorities (keys read from files) are reused before files are re-read.
const AUTHORITIES_TTL: Duration = Duration::from_secs(30);
/// How long a namespace's pull secrets are reused.
const PULL_SECRETS_TTL: Duration = Duration::from_secs(30);
/// Registry calls stop this long before the review's deadline, so that a slow registry is
/// reported by name rather than by the engine's generic deadline message.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// The registry requests of one gather: the review's deadline less the margin the answer
/// needs, with the gatherer's credential and priority.
fn registry_call(context: &GatherContext, credential: Credential) -> Call {
    Call {
        deadline: context
            .deadline
            .checked_sub(DEADLINE_MARGIN)
            .unwrap_or(context.deadline),
        credential,
        priority: context.priority,
    }
}

/// The registry source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryEvidenceError {
    #[error("registry configuration: {0}")]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// What is cached per digest: the manifest's shape and the platform image's facts.
#[derive(Debug, Clone)]
struct Details {
    children: std::collections::BTreeMap<String, String>,
    platform_digest: Option<String>,
    facts: Option<ImageFacts>,
    notes: Vec<String>,
}

#[derive(Debug, Clone)]
struct Resolution {
    digest: String,
    at: Instant,
}

/// Evidence from registries, cached and single-flighted.
pub struct RegistryEvidence {
    registry: Arc<RegistryClient>,
    pull_secrets: Option<Arc<dyn PullSecretSource>>,
    settings: EvidenceSettings,
    fresh_tags: Cache<String, String>,
    known_tags: Cache<String, Resolution>,
    details: Cache<String, Arc<Details>>,
    /// Positive verifications live `verifiedTtlSeconds`; "not signed" only
    /// `unverifiedTtlSeconds`, so a signature pushed after the first denial counts soon.
    verifications: Cache<String, Arc<PolicyVerification>>,
    /// What the registry holds per digest (all places), shared by every policy judging it;
    /// lives `unverifiedTtlSeconds`, since new signatures may arrive at any time.
    collected: Cache<String, Arc<signature::Collected>>,
    failures: Cache<String, RegistryError>,
    /// Keyed by (public-good root generation, policy fingerprint).
    authorities: Cache<(u64, Arc<str>), Arc<Authorities>>,
    secrets: Cache<String, Arc<Vec<DockerConfig>>>,
}

impl std::fmt::Debug for RegistryEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryEvidence")
            .field("registry", &self.registry)
            .field("pull_secrets", &self.pull_secrets.is_some())
            .finish_non_exhaustive()
    }
}

impl RegistryEvidence {
    /// A source for a configuration. Key files, trust roots, CA files and credentials are read
    /// now, so a broken one is refused with the configuration.
    pub fn new(
        config: &Config,
        pull_secrets: Option<Arc<dyn PullSecretSource>>,
    ) -> Result<Self, RegistryEvidenceError> {
        for policy in &config.image_policies {
            Authorities::compile(policy)?;
        }
        let registry = Arc::new(RegistryClient::new(&config.registries, &config.evidence)?);
        Ok(Self::with_registry(
            registry,
            config.evidence.clone(),
            pull_secrets,
        ))
    }

    /// A source over an existing client (shared across configuration reloads).
    pub fn with_registry(
        registry: Arc<RegistryClient>,
        settings: EvidenceSettings,
        pull_secrets: Option<Arc<dyn PullSecretSource>>,
    ) -> Self {
        let capacity = settings.cache_capacity;
        // A cache entry lives at least a second: a zero TTL would make moka refuse the cache.
        let one_second = Duration::from_secs(1);
        let tag_ttl = settings.tag_ttl_seconds;
        let known_ttl = settings
            .tag_ttl_seconds
            .saturating_add(settings.max_staleness_seconds);
        let long = settings.verified_ttl_seconds.max(one_second);
        let failure_ttl = settings.failure_ttl_seconds.max(one_second);
        let unverified_ttl = settings.unverified_ttl_seconds.max(one_second);
        Self {
            registry,
            pull_secrets,
            fresh_tags: bounded(capacity, tag_ttl.max(Duration::from_millis(1))),
            known_tags: bounded(capacity, known_ttl.max(Duration::from_millis(1))),
            details: bounded(capacity, long),
            verifications: Cache::builder()
                .max_capacity(capacity)
                .expire_after(VerdictExpiry {
                    verified: long,
                    unverified: unverified_ttl,
                })
                .build(),
            collected: bounded(capacity, unverified_ttl),
            failures: bounded(capacity, failure_ttl),
            authorities: bounded(capacity, AUTHORITIES_TTL),
            secrets: bounded(capacity, PULL_SECRETS_TTL),
            settings,
        }
    }

    /// The registry client (for tag resolution elsewhere, e.g. base-image freshness).
    pub fn registry(&self) -> &Arc<RegistryClient> {
        &self.registry
    }

    fn error(image: &ImageRef, message: impl std::fmt::Display) -> EvidenceError {
        EvidenceError::new(image.written(), image.registry(), message.to_string())
    }

    /// A registry failure as the evidence error the engine decides on, keeping it as source.
    fn registry_error(image: &ImageRef, err: RegistryError) -> EvidenceError {
        Self::error(image, &err).caused_by(err)
    }

    /// The credential for this image's registry in this pod's context.
    async fn credential(
        &self,
        image: &ImageRef,
        context: &GatherContext,
    ) -> Result<Credential, EvidenceError> {
        let host = image.registry();
        if self.registry.has_explicit_credential(host) {
            return Ok(self
                .registry
                .configured_credential(host)
                .unwrap_or_default());
        }
        if let Some(source) = self
            .pull_secrets
            .as_ref()
            .filter(|_| !context.namespace.is_empty())
        {
            let key = format!(
                "{}\0{}\0{}",
                context.namespace,
                context.pull.service_account.as_deref().unwrap_or("default"),
                context.pull.image_pull_secrets.join(",")
            );
            let configs = self
                .secrets
                .try_get_with(key, async {
                    source
                        .docker_configs(&context.namespace, &context.pull)
                        .await
                        .map(Arc::new)
                })
                .await
                .map_err(|err| Self::error(image, format!("pull secrets: {err}")))?;
            if let Some(credential) = configs.iter().find_map(|c| c.for_registry(host)) {
                return Ok(credential.clone());
            }
        }
        Ok(self
            .registry
            .configured_credential(host)
            .unwrap_or_default())
    }

    /// The digest to judge: the written one, or the tag's (fresh, else stale within bounds).
    /// `Ok(None)` when the tag does not exist.
    async fn digest_of(
        &self,
        image: &ImageRef,
        call: &Call,
        notes: &mut Vec<String>,
    ) -> Result<Option<String>, EvidenceError> {
        if let Some(digest) = image.digest() {
            return Ok(Some(digest.to_owned()));
        }
        let key = format!(
            "{}:{}",
            image.repository_path(),
            image.tag().unwrap_or("latest")
        );
        if let Some(digest) = self.fresh_tags.get(&key).await {
            return Ok(Some(digest));
        }
        let resolved = match self.failures.get(&key).await {
            Some(err) => Err(err),
            None => self
                .fresh_tags
                .try_get_with(key.clone(), async {
                    self.registry.resolve_with(image, call).await
                })
                .await
                .map_err(|err| (*err).clone()),
        };
        match resolved {
            Ok(digest) => {
                self.known_tags
                    .insert(
                        key,
                        Resolution {
                            digest: digest.clone(),
                            at: Instant::now(),
                        },
                    )
                    .await;
                Ok(Some(digest))
            }
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(err) => {
                self.failures.insert(key.clone(), err.clone()).await;
                let transient = matches!(
                    err,
                    RegistryError::Unavailable { .. } | RegistryError::Timeout
                );
                match self.known_tags.get(&key).await {
                    Some(known) if transient => {
                        // Digest first: warnings are cut at 120 characters.
                        notes.push(format!(
                            "judged {} (tag {} resolved {}s ago; registry {} failed: {err})",
                            known.digest,
                            image.tag().unwrap_or("latest"),
                            known.at.elapsed().as_secs(),
                            image.registry(),
                        ));
                        Ok(Some(known.digest))
                    }
                    _ => Err(Self::registry_error(image, err)),
                }
            }
        }
    }

    async fn details(
        &self,
        image: &ImageRef,
        digest: &str,
        call: &Call,
    ) -> Result<Arc<Details>, RegistryError> {
        let key = format!("{}@{digest}", image.repository_path());
        if let Some(err) = self.failures.get(&key).await {
            return Err(err);
        }
        let result = self
            .details
            .try_get_with(key.clone(), async {
                self.fetch_details(image, digest, call).await.map(Arc::new)
            })
            .await
            .map_err(|err| (*err).clone());
        match result {
            Ok(details) => Ok(details),
            Err(err) => {
                if !matches!(err, RegistryError::NotFound { .. }) {
                    self.failures.insert(key, err.clone()).await;
                }
                Err(err)
            }
        }
    }

    async fn fetch_details(
        &self,
        image: &ImageRef,
        digest: &str,
        call: &Call,
    ) -> Result<Details, RegistryError> {
        let mut details = Details {
            children: std::collections::BTreeMap::new(),
            platform_digest: None,
            facts: None,
            notes: Vec::new(),
        };
        let manifest = self.registry.manifest(image, digest, call).await?;
        let (platform_digest, manifest) = match manifest {
            Manifest::Index { children } => {
                for child in &children {
                    details
                        .children
                        .entry(child.platform.clone())
                        .or_insert_with(|| child.digest.clone());
                }
                let Some(child) = child_for_platform(&children, &self.settings.platform) else {
                    details.notes.push(format!(
                        "{}: the index has no {} image; no image facts",
                        image.written(),
                        self.settings.platform
                    ));
                    return Ok(details);
                };
                let child_digest = child.digest.clone();
                let manifest = self.registry.manifest(image, &child_digest, call).await?;
                (child_digest, manifest)
            }
            image_manifest @ Manifest::Image { .. } => (digest.to_owned(), image_manifest),
        };
        details.platform_digest = Some(platform_digest);
        if let Manifest::Image {
            config,
            annotations,
            ..
        } = &manifest
        {
            let blob = self.registry.blob(image, config, call).await?;
            details.facts = Some(facts_of(&blob, annotations));
        }
        Ok(details)
    }

    async fn authorities_of(
        &self,
        policy: &ImagePolicy,
    ) -> Result<Option<Arc<Authorities>>, String> {
        if policy.signatures.is_none() {
            return Ok(None);
        }
        // The public-good root's generation too: a TUF refresh must not be served the
        // authorities compiled against the previous root.
        let key = (
            crate::signature::public_good_generation(),
            policy.fingerprint(),
        );
        self.authorities
            .try_get_with(key, async {
                Authorities::compile(policy)
                    .map_err(|err| err.to_string())?
                    .map(Arc::new)
                    .ok_or_else(|| "no signature requirement".to_owned())
            })
            .await
            .map(Some)
            .map_err(|err| (*err).clone())
    }

    async fn verification(
        &self,
        image: &ImageRef,
        digest: &str,
        authorities: &Authorities,
        call: &Call,
    ) -> Result<Arc<PolicyVerification>, EvidenceError> {
        let key = format!(
            "{}@{digest}#{}#{}",
            image.repository_path(),
            authorities.policy,
            authorities.fingerprint()
        );
        if let Some(err) = self.failures.get(&key).await {
            return Err(Self::registry_error(image, err));
        }
        let result = self
            .verifications
            .try_get_with(key.clone(), async {
                let collected = self.collected(image, digest, authorities, call).await?;
                Ok::<_, RegistryError>(Arc::new(signature::judge(
                    authorities,
                    image,
                    digest,
                    &collected,
                )))
            })
            .await
            .map_err(|err| (*err).clone());
        match result {
            Ok(verification) => Ok(verification),
            Err(err) => {
                self.failures.insert(key, err.clone()).await;
                Err(Self::registry_error(image, err))
            }
        }
    }

    /// The signatures and attestations stored for a digest, read once per digest (and
    /// whether attestations are wanted) however many policies judge it.
    async fn collected(
        &self,
        image: &ImageRef,
        digest: &str,
        authorities: &Authorities,
        call: &Call,
    ) -> Result<Arc<signature::Collected>, RegistryError> {
        let wanted = authorities.wanted();
        // With attestations everything is read; without, which bundles are skipped depends
        // on the predicate types that count as signatures.
        let key = if wanted.attestations {
            format!("{}@{digest}#all", image.repository_path())
        } else {
            format!(
                "{}@{digest}#sig:{}",
                image.repository_path(),
                wanted.signature_predicates.join(",")
            )
        };
        self.collected
            .try_get_with(key, async {
                signature::discover::collect(&self.registry, image, digest, call, wanted)
                    .await
                    .map(Arc::new)
            })
            .await
            .map_err(|err| (*err).clone())
    }

    /// One verification per policy with a signature requirement, in policy order; the
    /// policies' lookups run at once (they share the per-digest caches, so one digest's
    /// signatures are still read once).
    async fn verifications(
        &self,
        image: &ImageRef,
        digest: &str,
        policies: &[&ImagePolicy],
        call: &Call,
    ) -> Result<Vec<PolicyVerification>, EvidenceError> {
        let each = policies.iter().map(|policy| async move {
            let authorities = match self.authorities_of(policy).await {
                Ok(Some(authorities)) => authorities,
                Ok(None) => return Ok(None),
                // A key that cannot be read now is unverifiable: fail closed.
                Err(reason) => {
                    return Ok(Some(PolicyVerification {
                        policy: policy.name.clone(),
                        signatures: SignatureEvidence::Unavailable { reason },
                        attestations: Vec::new(),
                        missing_attestations: Vec::new(),
                        found: Vec::new(),
                    }));
                }
            };
            let verification = self.verification(image, digest, &authorities, call).await?;
            Ok(Some((*verification).clone()))
        });
        let mut verifications = Vec::new();
        for result in futures_util::future::join_all(each).await {
            if let Some(verification) = result? {
                verifications.push(verification);
            }
        }
        Ok(verifications)
    }

    async fn gather_evidence(
        &self,
        image: &ImageRef,
        policies: &[&ImagePolicy],
        context: &GatherContext,
    ) -> Result<ImageEvidence, EvidenceError> {
        let credential = self.credential(image, context).await?;
        let call = registry_call(context, credential);
        let mut notes = Vec::new();
        let Some(digest) = self.digest_of(image, &call, &mut notes).await? else {
            let reason = format!(
                "{}:{} does not exist in registry {}",
                image.repository_path(),
                image.tag().unwrap_or("latest"),
                image.registry()
            );
            return Ok(ImageEvidence::signatures_only(
                None,
                SignatureEvidence::Unverified { reason },
            ));
        };
        // The manifest and config (details) and the signatures (verifications) of one digest
        // do not depend on each other: fetch them at once, then decide as if in sequence (a
        // missing or failing manifest wins over whatever the signature lookups found).
        let (details, verified) = futures_util::join!(
            self.details(image, &digest, &call),
            self.verifications(image, &digest, policies, &call)
        );
        let details = match details {
            Ok(details) => details,
            Err(RegistryError::NotFound { .. }) => {
                let reason = format!(
                    "{}@{digest} does not exist in registry {}",
                    image.repository_path(),
                    image.registry()
                );
                return Ok(ImageEvidence::signatures_only(
                    Some(digest),
                    SignatureEvidence::Unverified { reason },
                ));
            }
            Err(err) => return Err(Self::registry_error(image, err)),
        };
        let verifications = verified?;
        let signatures = overall(&verifications);
        let attestations = verifications
            .iter()
            .flat_map(|v| v.attestations.iter().cloned())
            .collect();
        notes.extend(details.notes.iter().cloned());
        let base_image = if policies.iter().any(|p| p.base_image_freshness.is_some()) {
            self.base_image_state(details.facts.as_ref(), context).await
        } else {
            BaseImageState::NotChecked
        };
        Ok(ImageEvidence {
            digest: Some(digest),
            signatures,
            facts: details.facts.clone(),
            children: details.children.clone(),
            platform_digest: details.platform_digest.clone(),
            verifications,
            attestations,
            notes,
            base_image,
        })
    }

    /// Resolves the base image's tag now (through the same tag cache as every image) and
    /// compares it with the digest the image says it was built on.
    async fn base_image_state(
        &self,
        facts: Option<&ImageFacts>,
        context: &GatherContext,
    ) -> BaseImageState {
        let Some((name, built_on)) =
            facts.and_then(|f| Some((f.base_name.clone()?, f.base_digest.clone()?)))
        else {
            return BaseImageState::NotAnnotated;
        };
        let unresolved = |message: String| BaseImageState::Unresolved {
            name: name.clone(),
            message,
        };
        let base = match ImageRef::parse(&name) {
            Ok(base) => base,
            Err(err) => return unresolved(format!("not an image reference: {}", err.reason)),
        };
        let credential = match self.credential(&base, context).await {
            Ok(credential) => credential,
            Err(err) => return unresolved(err.message),
        };
        let call = registry_call(context, credential);
        // A stale resolution note concerns the base, not the image: keep it in the message.
        let mut notes = Vec::new();
        match self.digest_of(&base, &call, &mut notes).await {
            Ok(Some(current)) if current == built_on => BaseImageState::Current {
                name,
                digest: current,
            },
            Ok(Some(current)) => BaseImageState::Moved {
                name,
                built_on,
                current,
            },
            Ok(None) => unresolved(format!("{} no longer exists", base.written())),
            Err(err) => unresolved(err.message),
        }
    }
}

/// Per-entry lifetime of a verification: long when verified, short otherwise.
struct VerdictExpiry {
    verified: Duration,
    unverified: Duration,
}

impl moka::Expiry<String, Arc<PolicyVerification>> for VerdictExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<PolicyVerification>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let verified = matches!(value.signatures, SignatureEvidence::Verified { .. })
            && value.missing_attestations.is_empty();
        Some(if verified {
            self.verified
        } else {
            self.unverified
        })
    }
}

fn bounded<K, V>(capacity: u64, ttl: Duration) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(capacity)
        .time_to_live(ttl)
        .build()
}

/// Verified only when every policy's requirement is verified; otherwise the first failure.
fn overall(verifications: &[PolicyVerification]) -> SignatureEvidence {
    if verifications.is_empty() {
        return SignatureEvidence::Unavailable {
            reason: "no image policy asks for signatures".into(),
        };
    }
    let mut signers = Vec::new();
    for verification in verifications {
        match &verification.signatures {
            SignatureEvidence::Verified { signers: found } => {
                for signer in found {
                    if !signers.contains(signer) {
                        signers.push(signer.clone());
                    }
                }
            }
            other => return other.clone(),
        }
    }
    SignatureEvidence::Verified { signers }
}

impl EvidenceSource for RegistryEvidence {
    fn gather<'a>(
        &'a self,
        image: &'a ImageRef,
        policies: &'a [&'a ImagePolicy],
        context: &'a GatherContext,
    ) -> EvidenceFuture<'a> {
        Box::pin(self.gather_evidence(image, policies, context))
    }

    fn forget_signatures<'a>(
        &'a self,
        digests: &'a [String],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let digests: std::collections::HashSet<&str> =
                digests.iter().map(String::as_str).collect();
            // Keys are `<repository>@<digest>#…` (see `verification` and `collected`).
            let about = |key: &str| {
                key.split_once('@')
                    .and_then(|(_, rest)| rest.split_once('#'))
                    .is_some_and(|(digest, _)| digests.contains(digest))
            };
            let verifications: Vec<Arc<String>> = self
                .verifications
                .iter()
                .filter(|(key, _)| about(key))
                .map(|(key, _)| key)
                .collect();
            for key in verifications {
                self.verifications.invalidate(key.as_str()).await;
                self.failures.invalidate(key.as_str()).await;
            }
            let collected: Vec<Arc<String>> = self
                .collected
                .iter()
                .filter(|(key, _)| about(key))
                .map(|(key, _)| key)
                .collect();
            for key in collected {
                self.collected.invalidate(key.as_str()).await;
            }
        })
    }
}
