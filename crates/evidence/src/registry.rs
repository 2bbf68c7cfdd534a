//! The registry client (oci-client over rustls): tag → digest resolution, manifests, image
//! configuration, multi-arch indexes, and the raw Cosign artefacts (`.sig` / `.att` tags and
//! OCI referrers) that `signature` verifies.
//!
//! Every request runs under the caller's deadline, behind a per-registry concurrency limit,
//! and is retried with exponential backoff only on transient failures (5xx, 429, connection
//! errors) and only while the deadline allows. Errors are classified so that "not found"
//! (an unsigned image) is never confused with "the registry failed" (the `onError` outcome).
//!
//! Referrers listings ([`RegistryClient::referrers_listing`]) are the one request issued here
//! rather than through oci-client, whose `pull_referrers` neither paginates nor shows the
//! response headers (`Link`, `OCI-Filters-Applied`). They use a reqwest client built with
//! the same TLS settings, and answer the registry's auth challenge: `Basic` with the call's
//! credential, `Bearer` with a token obtained through oci-client's own `auth`. Manifests, blobs
//! and tag resolutions for a registry whose `/v2/` never challenges go out the same way
//! ([`direct`]): oci-client would probe `/v2/` again before each of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reqwest13::Url;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::credentials::{Credential, CredentialError, DockerConfig};

mod direct;
use portcullis_core::config::{EvidenceSettings, RegistryCredentials, RegistrySettings};
use portcullis_core::evidence::ImageFacts;
use portcullis_core::reference::ImageRef;

/// Manifest media types portcullis accepts (OCI and Docker v2, single and multi-arch).
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Largest blob (config, signature layer, attestation envelope) read into memory.
const MAX_BLOB_BYTES: i64 = 8 * 1024 * 1024;

/// Media type of an OCI image index: what a referrers listing is.
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Most pages of one referrers listing followed through `Link: <…>; rel="next"`.
pub const MAX_REFERRER_PAGES: usize = 10;

/// Most descriptors one referrers listing keeps (counted before client-side filtering).
pub const MAX_REFERRERS: usize = 1000;

/// Largest referrers page (or referrers tag index) read into memory.
const MAX_REFERRERS_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Why a registry request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The manifest, tag or blob does not exist (404 / MANIFEST_UNKNOWN).
    #[error("not found: {what}")]
    NotFound { what: String },
    /// The registry refused the credentials (401/403).
    #[error("access denied: {what}")]
    Unauthorized { what: String },
    /// Unreachable, 5xx, 429, connection reset: worth a retry.
    #[error("unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The deadline passed before the registry answered.
    #[error("no answer before the deadline")]
    Timeout,
    /// The registry answered something that breaks the distribution spec.
    #[error("bad answer: {what}")]
    Protocol {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// Local configuration (CA file, password file) could not be used.
    #[error("configuration: {what}")]
    Config {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
}

/// The error a registry failure came from, kept as the `source()` of [`RegistryError`] (shared,
/// because failures are cached and cloned into every waiting review).
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

impl RegistryError {
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    pub fn unauthorized(what: impl Into<String>) -> Self {
        Self::Unauthorized { what: what.into() }
    }

    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause: None,
        }
    }

    pub fn protocol(what: impl Into<String>) -> Self {
        Self::Protocol {
            what: what.into(),
            cause: None,
        }
    }

    pub fn config(what: impl Into<String>) -> Self {
        Self::Config {
            what: what.into(),
            cause: None,
        }
    }

    /// The same failure with the error it came from kept as its source.
    pub fn caused_by(mut self, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        if let Self::Unavailable { cause, .. }
        | Self::Protocol { cause, .. }
        | Self::Config { cause, .. } = &mut self
        {
            *cause = Some(std::sync::Arc::new(error));
        }
        self
    }

    fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }

    fn from_oci(error: OciDistributionError) -> Self {
        match error {
            OciDistributionError::ImageManifestNotFoundError(what) => {
                RegistryError::not_found(what)
            }
            OciDistributionError::RegistryError { envelope, url } => {
                let not_found = envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                    )
                });
                let denied = envelope
                    .errors
                    .iter()
                    .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
                if not_found {
                    RegistryError::not_found(url)
                } else if denied {
                    RegistryError::unauthorized(url)
                } else {
                    RegistryError::protocol(format!("{url}: {envelope}"))
                }
            }
            OciDistributionError::ServerError { code, url, .. } => match code {
                404 => RegistryError::not_found(url),
                401 | 403 => RegistryError::unauthorized(url),
                429 | 500..=599 => RegistryError::unavailable(format!("HTTP {code} from {url}")),
                other => RegistryError::protocol(format!("HTTP {other} from {url}")),
            },
            OciDistributionError::UnauthorizedError { url } => RegistryError::unauthorized(url),
            OciDistributionError::AuthenticationFailure(reason) => {
                RegistryError::unauthorized(reason)
            }
            OciDistributionError::RequestError(err) => {
                // reqwest hides the cause in its source chain; keep it for the message.
                let mut text = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                RegistryError::unavailable(text).caused_by(err)
            }
            OciDistributionError::IoError(err) => {
                RegistryError::unavailable(err.to_string()).caused_by(err)
            }
            other => RegistryError::protocol(other.to_string()).caused_by(other),
        }
    }
}

/// A parsed manifest: an index (multi-arch) or a single image.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    Index {
        children: Vec<IndexChild>,
    },
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
    },
}

/// One entry of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexChild {
    pub digest: String,
    pub media_type: String,
    /// `os/arch[/variant]`, or `unknown` when the entry names no platform (attestation
    /// manifests that BuildKit adds, for example).
    pub platform: String,
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub artifact_type: Option<String>,
}

/// Where a referrers listing came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrersSource {
    /// The registry's referrers API (`GET /v2/<name>/referrers/<digest>`, OCI 1.1).
    Api,
    /// The referrers tag schema: an OCI index under the tag `sha256-<hex>`, written by
    /// clients for registries without the API (the API answered 404).
    TagSchema,
    /// Neither: the API answered 404 and the referrers tag does not exist.
    None,
}

impl std::fmt::Display for ReferrersSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReferrersSource::Api => "the OCI referrers API",
            ReferrersSource::TagSchema => "the OCI referrers tag",
            ReferrersSource::None => "no referrers listing",
        })
    }
}

/// The referrers of a digest, as [`RegistryClient::referrers_listing`] found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrers {
    /// Which place answered (the API, the tag schema, or neither).
    pub source: ReferrersSource,
    /// The referrers, in the registry's order; only those of the requested artifact type
    /// when one was asked for (filtered here too: registries may ignore the filter).
    pub descriptors: Vec<Descriptor>,
    /// The listing went on beyond [`MAX_REFERRER_PAGES`] pages or [`MAX_REFERRERS`]
    /// descriptors and was cut there: `descriptors` holds what came before the cut. A
    /// referrer found in it is real, but one missing from it may exist.
    pub truncated: bool,
}

impl Referrers {
    fn none() -> Self {
        Self {
            source: ReferrersSource::None,
            descriptors: Vec::new(),
            truncated: false,
        }
    }
}

/// A referrers page or referrers tag: an OCI image index (only the parts read here).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReferrersIndex {
    #[serde(default)]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

impl RawReferrersIndex {
    fn parse(bytes: &[u8], what: &str) -> Result<Self, RegistryError> {
        let index: Self = serde_json::from_slice(bytes)
            .map_err(|err| RegistryError::protocol(format!("{what} is not an OCI index: {err}")))?;
        match index.media_type.as_deref() {
            None | Some(OCI_INDEX_MEDIA_TYPE) => Ok(index),
            Some(other) => Err(RegistryError::protocol(format!(
                "{what} has media type {other}, not {OCI_INDEX_MEDIA_TYPE}"
            ))),
        }
    }
}

/// One answer of the referrers API.
struct ReferrersPage {
    manifests: Vec<Descriptor>,
    /// The `rel="next"` target of the `Link` header, resolved against the page's URL.
    next: Option<Url>,
    /// The registry said (`OCI-Filters-Applied`) that it applied the artifact type filter.
    filtered: bool,
}

/// How a referrers request authenticates, once the registry has said how (its challenge).
#[derive(Clone)]
enum ReferrersAuth {
    Basic { username: String, password: String },
    Bearer(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    manifests: Option<Vec<RawIndexEntry>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIndexEntry {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Debug, Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Manifest {
    /// Parses manifest bytes (already digest-checked by the client).
    pub fn parse(bytes: &[u8]) -> Result<Self, RegistryError> {
        let raw: RawManifest = serde_json::from_slice(bytes)
            .map_err(|err| RegistryError::protocol(format!("manifest is not valid JSON: {err}")))?;
        if let Some(entries) = raw.manifests {
            let children = entries
                .into_iter()
                .map(|entry| IndexChild {
                    platform: entry.platform.map_or_else(
                        || "unknown".to_owned(),
                        |p| match p.variant.filter(|v| !v.is_empty()) {
                            Some(variant) => format!("{}/{}/{variant}", p.os, p.architecture),
                            None => format!("{}/{}", p.os, p.architecture),
                        },
                    ),
                    digest: entry.digest,
                    media_type: entry.media_type,
                })
                .collect();
            return Ok(Manifest::Index { children });
        }
        let config = raw.config.ok_or_else(|| {
            RegistryError::protocol("manifest has neither `manifests` nor `config`")
        })?;
        Ok(Manifest::Image {
            config,
            layers: raw.layers.unwrap_or_default(),
            annotations: raw.annotations.unwrap_or_default(),
        })
    }
}

/// The child of an index for `platform` (`os/arch` matches `os/arch/<any variant>` when no
/// exact entry exists, preferring `v8` for arm64 as container runtimes do).
pub fn child_for_platform<'a>(
    children: &'a [IndexChild],
    platform: &str,
) -> Option<&'a IndexChild> {
    children
        .iter()
        .find(|c| c.platform == platform)
        .or_else(|| {
            let prefix = format!("{platform}/");
            children.iter().find(|c| c.platform.starts_with(&prefix))
        })
}

/// Image facts from a config blob and the image manifest's annotations.
pub fn facts_of(config: &[u8], annotations: &BTreeMap<String, String>) -> ImageFacts {
    #[derive(Deserialize, Default)]
    struct ConfigBlob {
        #[serde(default)]
        created: Option<String>,
        #[serde(default)]
        config: Option<ContainerConfig>,
    }
    #[derive(Deserialize, Default)]
    struct ContainerConfig {
        #[serde(rename = "User", default)]
        user: Option<String>,
        #[serde(rename = "ExposedPorts", default)]
        exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
        #[serde(rename = "Labels", default)]
        labels: Option<BTreeMap<String, String>>,
    }
    // A config that does not parse yields no facts rather than an error: facts inform
    // policies, and a rule that needs one treats its absence as unknown.
    let blob: ConfigBlob = serde_json::from_slice(config).unwrap_or_default();
    let container = blob.config.unwrap_or_default();
    ImageFacts {
        created: blob.created,
        user: container.user,
        exposed_ports: container
            .exposed_ports
            .map(|ports| ports.into_keys().collect())
            .unwrap_or_default(),
        labels: container.labels.unwrap_or_default(),
        base_name: annotations
            .get("org.opencontainers.image.base.name")
            .cloned(),
        base_digest: annotations
            .get("org.opencontainers.image.base.digest")
            .cloned(),
        annotation_created: annotations.get("org.opencontainers.image.created").cloned(),
    }
}

/// Per-call context: the deadline and the credential to use.
#[derive(Debug, Clone)]
pub struct Call {
    pub deadline: Instant,
    pub credential: Credential,
    pub priority: crate::source::Priority,
}

/// One registry's concurrency limits.
#[derive(Debug, Clone)]
struct RegistryLimits {
    all: Arc<Semaphore>,
    background: Arc<Semaphore>,
}

/// One registry's connection settings.
#[derive(Debug, Clone)]
struct Endpoint {
    insecure: bool,
    ca_pem: Option<Vec<u8>>,
    credential: Option<Credential>,
}

/// Reaches registries. Cheap to share (`Arc`); holds one oci-client per registry and
/// credential (oci-client binds credentials per registry), and one limit per registry.
pub struct RegistryClient {
    endpoints: HashMap<String, Endpoint>,
    docker_config: DockerConfig,
    clients: Mutex<HashMap<(String, String), Client>>,
    /// Per registry: the plain HTTP client for referrers listings (same TLS settings).
    http_clients: Mutex<HashMap<String, reqwest13::Client>>,
    /// Per (registry, repository, credential label): how referrers requests authenticate,
    /// learnt from the first challenge (a stale token is replaced on the next 401).
    referrers_auth: Mutex<HashMap<(String, String, String), ReferrersAuth>>,
    /// Per registry: every request's slots, and the share background requests may hold.
    limits: Mutex<HashMap<String, RegistryLimits>>,
    /// Per registry: whether `GET /v2/` answers without a challenge (learnt once, one probe
    /// at a time per registry; see [`direct`]).
    open: moka::future::Cache<String, bool>,
    max_concurrent: usize,
    max_attempts: usize,
    requests: AtomicU64,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registries", &self.endpoints.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// Builds a client from the configuration (reads CA files, password files and the docker
    /// config file now, so a broken one is a configuration error, not a per-review failure).
    pub fn new(
        registries: &[RegistrySettings],
        settings: &EvidenceSettings,
    ) -> Result<Self, RegistryError> {
        let mut endpoints = HashMap::new();
        for registry in registries {
            let ca_pem = registry
                .ca_file
                .as_ref()
                .map(|path| {
                    std::fs::read(path).map_err(|err| {
                        RegistryError::config(format!("caFile {}: {err}", path.display()))
                            .caused_by(err)
                    })
                })
                .transpose()?;
            let credential = registry
                .credentials
                .as_ref()
                .map(read_credentials)
                .transpose()?;
            endpoints.insert(
                registry.host.clone(),
                Endpoint {
                    insecure: registry.insecure,
                    ca_pem,
                    credential,
                },
            );
        }
        let docker_config = match &settings.docker_config_file {
            Some(path) => DockerConfig::from_file(path).map_err(|err: CredentialError| {
                RegistryError::config(err.to_string()).caused_by(err)
            })?,
            None => DockerConfig::default(),
        };
        Ok(Self {
            endpoints,
            docker_config,
            clients: Mutex::new(HashMap::new()),
            http_clients: Mutex::new(HashMap::new()),
            referrers_auth: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            open: moka::future::Cache::new(1024),
            max_concurrent: settings.max_concurrent_requests_per_registry.max(1),
            max_attempts: settings.max_attempts.max(1),
            requests: AtomicU64::new(0),
        })
    }

    /// Registry requests started so far (for benchmarks and metrics).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The credential configured for a host (`registries[].credentials`, then the docker
    /// config file), if any. Pod pull secrets are chosen by the caller before this.
    pub fn configured_credential(&self, host: &str) -> Option<Credential> {
        self.endpoints
            .get(host)
            .and_then(|e| e.credential.clone())
            .or_else(|| self.docker_config.for_registry(host).cloned())
    }

    /// Whether `registries[].credentials` names a credential for the host (it then wins over
    /// pull secrets).
    pub fn has_explicit_credential(&self, host: &str) -> bool {
        self.endpoints
            .get(host)
            .is_some_and(|e| e.credential.is_some())
    }

    /// Resolves a reference to the digest it names now: the written digest as is, otherwise
    /// the tag through a HEAD on the manifest (a GET when the registry sends no
    /// `Docker-Content-Digest`). Uses the configured credentials and a 10 s deadline.
    pub async fn resolve(&self, image: &ImageRef) -> Result<String, RegistryError> {
        let call = Call {
            deadline: Instant::now() + Duration::from_secs(10),
            credential: self
                .configured_credential(image.registry())
                .unwrap_or_default(),
            priority: crate::source::Priority::Admission,
        };
        self.resolve_with(image, &call).await
    }

    /// [`RegistryClient::resolve`] with an explicit deadline and credential.
    pub async fn resolve_with(
        &self,
        image: &ImageRef,
        call: &Call,
    ) -> Result<String, RegistryError> {
        if let Some(digest) = image.digest() {
            return Ok(digest.to_owned());
        }
        let tag = image.tag().unwrap_or("latest");
        let reference = Reference::with_tag(
            image.registry().to_owned(),
            image.repository().to_owned(),
            tag.to_owned(),
        );
        if let Some(direct) = self
            .try_direct(&reference, call, &direct::Fetch::Digest)
            .await
        {
            return direct.and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| RegistryError::protocol("digest"))
            });
        }
        let client = self.client_for(image.registry(), &call.credential)?;
        let auth = registry_auth(&call.credential);
        self.run(image.registry(), call, || async {
            client
                .fetch_manifest_digest(&reference, &auth)
                .await
                .map_err(RegistryError::from_oci)
        })
        .await
    }

    /// The manifest stored under `digest` (bytes checked against the digest).
    pub async fn manifest(
        &self,
        image: &ImageRef,
        digest: &str,
        call: &Call,
    ) -> Result<Manifest, RegistryError> {
        let reference = by_digest(image, digest);
        let bytes = self
            .manifest_raw(image.registry(), &reference, call)
            .await?;
        Manifest::parse(&bytes)
    }

    /// A manifest by tag (for `.sig` / `.att` tags); `Ok(None)` when the tag does not exist.
    pub async fn manifest_by_tag(
        &self,
        image: &ImageRef,
        tag: &str,
        call: &Call,
    ) -> Result<Option<Manifest>, RegistryError> {
        let reference = Reference::with_tag(
            image.registry().to_owned(),
            image.repository().to_owned(),
            tag.to_owned(),
        );
        match self.manifest_raw(image.registry(), &reference, call).await {
            Ok(bytes) => Manifest::parse(&bytes).map(Some),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn manifest_raw(
        &self,
        host: &str,
        reference: &Reference,
        call: &Call,
    ) -> Result<Vec<u8>, RegistryError> {
        if let Some(direct) = self
            .try_direct(reference, call, &direct::Fetch::Manifest)
            .await
        {
            return direct;
        }
        let client = self.client_for(host, &call.credential)?;
        let auth = registry_auth(&call.credential);
        self.run(host, call, || async {
            client
                .pull_manifest_raw(reference, &auth, MANIFEST_MEDIA_TYPES)
                .await
                .map(|(bytes, _digest)| bytes.to_vec())
                .map_err(RegistryError::from_oci)
        })
        .await
    }

    /// A blob, checked against its digest; refused above 8 MiB.
    pub async fn blob(
        &self,
        image: &ImageRef,
        descriptor: &Descriptor,
        call: &Call,
    ) -> Result<Vec<u8>, RegistryError> {
        if descriptor.size > MAX_BLOB_BYTES {
            return Err(RegistryError::protocol(format!(
                "blob {} is {} bytes, more than the {} portcullis reads",
                descriptor.digest, descriptor.size, MAX_BLOB_BYTES
            )));
        }
        let reference = by_digest(image, &descriptor.digest);
        if let Some(direct) = self
            .try_direct(
                &reference,
                call,
                &direct::Fetch::Blob {
                    digest: &descriptor.digest,
                },
            )
            .await
        {
            return direct;
        }
        let client = self.client_for(image.registry(), &call.credential)?;
        let auth = registry_auth(&call.credential);
        client.store_auth_if_needed(image.registry(), &auth).await;
        let digest = descriptor.digest.as_str();
        self.run(image.registry(), call, || async {
            let mut out: Vec<u8> = Vec::new();
            client
                .pull_blob(&reference, digest, &mut out)
                .await
                .map_err(RegistryError::from_oci)?;
            Ok(out)
        })
        .await
    }

    /// The OCI referrers of a digest (an empty list when the registry has neither the
    /// referrers API nor a referrers tag). A listing cut at the cap is a `Protocol` error
    /// here, since a caller of this form cannot tell "not listed" from "not there"; use
    /// [`RegistryClient::referrers_listing`] to see where the list came from and to get a
    /// truncated list.
    pub async fn referrers(
        &self,
        image: &ImageRef,
        digest: &str,
        call: &Call,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let listing = self.referrers_listing(image, digest, None, call).await?;
        if listing.truncated {
            return Err(RegistryError::protocol(format!(
                "the referrers of {}@{digest} go on beyond {MAX_REFERRER_PAGES} pages or \
                 {MAX_REFERRERS} descriptors",
                image.repository_path()
            )));
        }
        Ok(listing.descriptors)
    }

    /// The OCI referrers of `digest`, of `artifact_type` only when given, and where they
    /// were listed:
    ///
    /// - the referrers API, `GET /v2/<name>/referrers/<digest>?artifactType=…`, following
    ///   `Link: <…>; rel="next"` pages (same origin only) up to [`MAX_REFERRER_PAGES`] pages
    ///   and [`MAX_REFERRERS`] descriptors; beyond that the list is cut and `truncated` set;
    /// - when the API answers 404 on its first page (a registry without it, such as
    ///   distribution 2.8), the referrers tag schema: the OCI index under tag `sha256-<hex>`;
    /// - when that tag does not exist either, an empty list from [`ReferrersSource::None`].
    ///
    /// The artifact type filter is applied here as well, whatever the registry says in
    /// `OCI-Filters-Applied`. Each page is one request under [`Call`]'s deadline, behind the
    /// registry's concurrency limit, retried on transient failures; a failure is an error,
    /// never an empty list.
    pub async fn referrers_listing(
        &self,
        image: &ImageRef,
        digest: &str,
        artifact_type: Option<&str>,
        call: &Call,
    ) -> Result<Referrers, RegistryError> {
        let host = image.registry();
        let reference = by_digest(image, digest);
        let first = self.referrers_url(&reference, digest, artifact_type)?;
        let mut listing = Referrers {
            source: ReferrersSource::Api,
            descriptors: Vec::new(),
            truncated: false,
        };
        let mut visited = HashSet::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            if pages == MAX_REFERRER_PAGES {
                listing.truncated = true;
                break;
            }
            if !visited.insert(url.clone()) {
                return Err(RegistryError::protocol(format!(
                    "the referrers pages of {digest} loop: {url} comes again"
                )));
            }
            let page = self
                .run(host, call, || {
                    self.referrers_page(&reference, &url, artifact_type, &call.credential)
                })
                .await;
            let page = match page {
                Ok(page) => page,
                Err(RegistryError::NotFound { .. }) if pages == 0 => {
                    return self
                        .referrers_by_tag(image, digest, artifact_type, call)
                        .await;
                }
                Err(RegistryError::NotFound { what: url }) => {
                    return Err(RegistryError::protocol(format!(
                        "referrers page {} of {digest} does not exist: {url}",
                        pages + 1
                    )));
                }
                Err(err) => return Err(err),
            };
            pages += 1;
            tracing::debug!(
                %url,
                referrers = page.manifests.len(),
                filtered_by_registry = page.filtered,
                "referrers page"
            );
            let room = MAX_REFERRERS - listing.descriptors.len();
            if page.manifests.len() > room {
                listing
                    .descriptors
                    .extend(page.manifests.into_iter().take(room));
                listing.truncated = true;
                break;
            }
            listing.descriptors.extend(page.manifests);
            next = page.next;
        }
        keep_artifact_type(&mut listing.descriptors, artifact_type);
        Ok(listing)
    }

    /// The referrers tag schema: the index under `sha256-<hex>`, if that tag exists.
    async fn referrers_by_tag(
        &self,
        image: &ImageRef,
        digest: &str,
        artifact_type: Option<&str>,
        call: &Call,
    ) -> Result<Referrers, RegistryError> {
        let tag = referrers_tag(digest);
        let reference = Reference::with_tag(
            image.registry().to_owned(),
            image.repository().to_owned(),
            tag.clone(),
        );
        let bytes = match self.manifest_raw(image.registry(), &reference, call).await {
            Ok(bytes) => bytes,
            Err(RegistryError::NotFound { .. }) => return Ok(Referrers::none()),
            Err(err) => return Err(err),
        };
        let index = RawReferrersIndex::parse(&bytes, &format!("referrers tag {tag}"))?;
        let mut descriptors = index.manifests;
        let truncated = descriptors.len() > MAX_REFERRERS;
        descriptors.truncate(MAX_REFERRERS);
        keep_artifact_type(&mut descriptors, artifact_type);
        Ok(Referrers {
            source: ReferrersSource::TagSchema,
            descriptors,
            truncated,
        })
    }

    /// `<scheme>://<registry>/v2/<name>/referrers/<digest>[?artifactType=…]`.
    fn referrers_url(
        &self,
        reference: &Reference,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Url, RegistryError> {
        let mut url = self.v2_url(reference, &["referrers", digest])?;
        if let Some(artifact_type) = artifact_type {
            url.query_pairs_mut()
                .append_pair("artifactType", artifact_type);
        }
        Ok(url)
    }

    /// One referrers API request (one attempt of [`RegistryClient::run`]): anonymous or with
    /// the authentication learnt before, then once more answering a 401's challenge.
    async fn referrers_page(
        &self,
        reference: &Reference,
        url: &Url,
        artifact_type: Option<&str>,
        credential: &Credential,
    ) -> Result<ReferrersPage, RegistryError> {
        let http = self.http_client_for(reference.registry())?;
        let key = (
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            credential.label(),
        );
        let known = self
            .referrers_auth
            .lock()
            .map_err(|_| RegistryError::config("referrers auth lock poisoned"))?
            .get(&key)
            .cloned();
        let mut response = send_referrers_request(&http, url, known.as_ref()).await?;
        if response.status() == reqwest13::StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(reqwest13::header::WWW_AUTHENTICATE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let auth = self
                .answer_challenge(reference, url, &challenge, credential)
                .await?;
            self.referrers_auth
                .lock()
                .map_err(|_| RegistryError::config("referrers auth lock poisoned"))?
                .insert(key, auth.clone());
            response = send_referrers_request(&http, url, Some(&auth)).await?;
        }
        direct::check_status(response.status(), url)?;
        let next = response
            .headers()
            .get_all(reqwest13::header::LINK)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(next_link)
            .map(|target| same_origin_link(url, target))
            .transpose()?;
        let filtered = artifact_type.is_some()
            && response
                .headers()
                .get_all("oci-filters-applied")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .any(|filter| filter.trim() == "artifactType");
        let body = direct::read_limited(
            response,
            &format!("the referrers answer of {url}"),
            MAX_REFERRERS_PAGE_BYTES,
        )
        .await?;
        let index = RawReferrersIndex::parse(&body, &format!("the referrers answer of {url}"))?;
        Ok(ReferrersPage {
            manifests: index.manifests,
            next,
            filtered,
        })
    }

    /// How to authenticate after a 401 carrying `challenge` (`WWW-Authenticate`).
    async fn answer_challenge(
        &self,
        reference: &Reference,
        url: &Url,
        challenge: &str,
        credential: &Credential,
    ) -> Result<ReferrersAuth, RegistryError> {
        let scheme = challenge
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let basic = match credential {
            Credential::Basic { username, password } => Some(ReferrersAuth::Basic {
                username: username.clone(),
                password: password.clone(),
            }),
            Credential::Anonymous => None,
        };
        let refused = || RegistryError::unauthorized(url.to_string());
        match scheme.as_str() {
            "basic" => basic.ok_or_else(refused),
            "bearer" => {
                // oci-client follows the challenge of `/v2/` to the token realm (anonymously,
                // or trading the basic credential) for a pull token of this repository.
                let client = self.client_for(reference.registry(), credential)?;
                let token = client
                    .auth(
                        reference,
                        &registry_auth(credential),
                        RegistryOperation::Pull,
                    )
                    .await
                    .map_err(RegistryError::from_oci)?;
                match token {
                    Some(token) => Ok(ReferrersAuth::Bearer(token)),
                    None => basic.ok_or_else(refused),
                }
            }
            _ => Err(refused()),
        }
    }

    /// The reqwest client for referrers requests to `host`: oci-client's settings (timeouts,
    /// extra CA); plain HTTP for `insecure` hosts is chosen by the URL's scheme.
    fn http_client_for(&self, host: &str) -> Result<reqwest13::Client, RegistryError> {
        let mut clients = self
            .http_clients
            .lock()
            .map_err(|_| RegistryError::config("registry client lock poisoned"))?;
        if let Some(client) = clients.get(host) {
            return Ok(client.clone());
        }
        let mut builder = reqwest13::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .read_timeout(Duration::from_secs(10))
            .redirect(reqwest13::redirect::Policy::limited(3))
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = self.endpoints.get(host).and_then(|e| e.ca_pem.as_ref()) {
            let certificates = reqwest13::Certificate::from_pem_bundle(pem).map_err(|err| {
                RegistryError::config(format!("caFile of {host}: {err}")).caused_by(err)
            })?;
            builder = builder.tls_certs_merge(certificates);
        }
        let client = builder.build().map_err(|err| {
            RegistryError::config(format!("HTTP client for {host}: {err}")).caused_by(err)
        })?;
        clients.insert(host.to_owned(), client.clone());
        Ok(client)
    }

    /// Whether a host is reached over plain HTTP, and its extra CA (PEM), for sigstore's client.
    pub fn endpoint_tls(&self, host: &str) -> (bool, Option<Vec<u8>>) {
        self.endpoints
            .get(host)
            .map_or((false, None), |e| (e.insecure, e.ca_pem.clone()))
    }

    /// The oci-client configuration for a host (protocol and CA).
    pub fn client_config(&self, host: &str) -> ClientConfig {
        let endpoint = self.endpoints.get(host);
        let mut config = ClientConfig {
            protocol: if endpoint.is_some_and(|e| e.insecure) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(3)),
            read_timeout: Some(Duration::from_secs(10)),
            ..ClientConfig::default()
        };
        if let Some(pem) = endpoint.and_then(|e| e.ca_pem.clone()) {
            config.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem,
            });
        }
        config
    }

    fn client_for(&self, host: &str, credential: &Credential) -> Result<Client, RegistryError> {
        let key = (host.to_owned(), credential.label());
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| RegistryError::config("registry client lock poisoned"))?;
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = Client::new(self.client_config(host));
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn limit_for(&self, host: &str) -> Result<RegistryLimits, RegistryError> {
        let mut limits = self
            .limits
            .lock()
            .map_err(|_| RegistryError::config("registry limit lock poisoned"))?;
        Ok(limits
            .entry(host.to_owned())
            .or_insert_with(|| RegistryLimits {
                all: Arc::new(Semaphore::new(self.max_concurrent)),
                background: Arc::new(Semaphore::new((self.max_concurrent / 2).max(1))),
            })
            .clone())
    }

    /// The answer of a direct request when the registry is open; `None` when it is not (or
    /// answered 401, which forgets that it was): then oci-client's path is taken.
    async fn try_direct(
        &self,
        reference: &Reference,
        call: &Call,
        fetch: &direct::Fetch<'_>,
    ) -> Option<Result<Vec<u8>, RegistryError>> {
        if !self.is_open(reference, call).await {
            return None;
        }
        let host = reference.registry();
        match self
            .run(host, call, || self.fetch_direct(reference, fetch))
            .await
        {
            Err(RegistryError::Unauthorized { .. }) => {
                self.open.invalidate(host).await;
                None
            }
            answer => Some(answer),
        }
    }

    /// Runs one registry operation: waits for a slot under the registry's limit, retries
    /// transient failures with exponential backoff, and gives up at the deadline.
    async fn run<T, F, Fut>(
        &self,
        host: &str,
        call: &Call,
        operation: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let deadline = call.deadline;
        let limits = self.limit_for(host)?;
        let attempts = self.max_attempts;
        let closed = |_| RegistryError::config("registry limit closed");
        let work = async {
            // Background work takes a background slot first, so it never holds more than its
            // share of the registry's slots while admission waits.
            let _background = match call.priority {
                crate::source::Priority::Background => {
                    Some(limits.background.acquire_owned().await.map_err(closed)?)
                }
                crate::source::Priority::Admission => None,
            };
            let _permit = limits.all.acquire_owned().await.map_err(closed)?;
            let mut operation = operation;
            let counted = || {
                self.requests.fetch_add(1, Ordering::Relaxed);
                operation()
            };
            counted
                .retry(
                    ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(50))
                        .with_max_delay(Duration::from_secs(1))
                        .with_max_times(attempts.saturating_sub(1))
                        .with_jitter(),
                )
                .when(RegistryError::is_transient)
                .await
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result,
            Err(_elapsed) => Err(RegistryError::Timeout),
        }
    }
}

fn read_credentials(credentials: &RegistryCredentials) -> Result<Credential, RegistryError> {
    let password = match (&credentials.password, &credentials.password_file) {
        (Some(password), _) => password.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|err| {
                RegistryError::config(format!("passwordFile {}: {err}", path.display()))
                    .caused_by(err)
            })?,
        (None, None) => {
            return Err(RegistryError::config(
                "credentials need `password` or `passwordFile`",
            ));
        }
    };
    Ok(Credential::Basic {
        username: credentials.username.clone(),
        password,
    })
}

/// oci-client's form of a credential.
pub fn registry_auth(credential: &Credential) -> RegistryAuth {
    match credential {
        Credential::Anonymous => RegistryAuth::Anonymous,
        Credential::Basic { username, password } => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
    }
}

/// The reference to `digest` in the image's repository.
pub fn by_digest(image: &ImageRef, digest: &str) -> Reference {
    Reference::with_digest(
        image.registry().to_owned(),
        image.repository().to_owned(),
        digest.to_owned(),
    )
}

/// `sha256:abc` → `sha256-abc.sig` (Cosign's tag scheme; `.att` for attestations).
pub fn cosign_tag(digest: &str, suffix: &str) -> String {
    format!("{}.{suffix}", digest.replace(':', "-"))
}

/// `sha256:abc` → `sha256-abc`: the referrers tag schema's tag for a digest.
pub fn referrers_tag(digest: &str) -> String {
    digest.replace(':', "-")
}

/// Keeps the descriptors of `artifact_type` (all when `None`).
fn keep_artifact_type(descriptors: &mut Vec<Descriptor>, artifact_type: Option<&str>) {
    if let Some(wanted) = artifact_type {
        descriptors.retain(|d| d.artifact_type.as_deref() == Some(wanted));
    }
}

/// A GET for a referrers page, with the index media type as `Accept`.
async fn send_referrers_request(
    http: &reqwest13::Client,
    url: &Url,
    auth: Option<&ReferrersAuth>,
) -> Result<reqwest13::Response, RegistryError> {
    let mut request = http
        .get(url.clone())
        .header(reqwest13::header::ACCEPT, OCI_INDEX_MEDIA_TYPE);
    request = match auth {
        Some(ReferrersAuth::Basic { username, password }) => {
            request.basic_auth(username, Some(password))
        }
        Some(ReferrersAuth::Bearer(token)) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.map_err(|err| request_failed(&err))
}

/// A transport failure, with reqwest's cause chain kept for the message.
fn request_failed(err: &reqwest13::Error) -> RegistryError {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    RegistryError::unavailable(text)
}

/// The `rel="next"` target of one `Link` header value (RFC 8288), as written: one or more
/// `<target>; param=value; …` entries separated by commas; `rel` may be quoted and may list
/// several relation types.
pub fn next_link(value: &str) -> Option<&str> {
    let mut rest = value;
    loop {
        let open = rest.find('<')?;
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let target = &after[..close];
        let (params, remainder) = split_unquoted(&after[close + 1..], ',');
        let is_next = params
            .split(';')
            .filter_map(|param| param.split_once('='))
            .any(|(name, value)| {
                name.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|rel| rel.eq_ignore_ascii_case("next"))
            });
        if is_next {
            return Some(target.trim());
        }
        rest = remainder?;
    }
}

/// `text` up to the first `separator` outside double quotes, and what follows it.
fn split_unquoted(text: &str, separator: char) -> (&str, Option<&str>) {
    let mut quoted = false;
    for (at, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                return (&text[..at], Some(&text[at + c.len_utf8()..]));
            }
            _ => {}
        }
    }
    (text, None)
}

/// A `Link` target resolved against the page it came with; refused when it leaves the
/// registry (scheme, host or port), where the credential must not follow.
fn same_origin_link(page: &Url, target: &str) -> Result<Url, RegistryError> {
    let next = page.join(target).map_err(|err| {
        RegistryError::protocol(format!(
            "referrers Link target {target:?} is not a URL: {err}"
        ))
    })?;
    if next.origin() != page.origin() {
        return Err(RegistryError::protocol(format!(
            "referrers Link of {page} leads to another origin: {next}"
        )));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_lists_children_by_platform() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
          "manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,
             "platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,
             "platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:c","size":1}]}"#;
        let Ok(Manifest::Index { children }) = Manifest::parse(index) else {
            panic!("not an index")
        };
        let platforms: Vec<_> = children.iter().map(|c| c.platform.as_str()).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8", "unknown"]);
        assert_eq!(
            child_for_platform(&children, "linux/arm64").map(|c| c.digest.as_str()),
            Some("sha256:b")
        );
        assert_eq!(child_for_platform(&children, "windows/amd64"), None);
    }

    #[test]
    fn facts_come_from_config_and_annotations() {
        let config = br#"{"created":"2026-01-02T03:04:05Z","config":{"User":"1000",
            "ExposedPorts":{"8080/tcp":{}},"Labels":{"team":"a"}}}"#;
        let annotations = BTreeMap::from([
            (
                "org.opencontainers.image.base.name".to_owned(),
                "docker.io/library/alpine:3.20".to_owned(),
            ),
            (
                "org.opencontainers.image.created".to_owned(),
                "2026-01-02T00:00:00Z".to_owned(),
            ),
        ]);
        let facts = facts_of(config, &annotations);
        assert_eq!(facts.user.as_deref(), Some("1000"));
        assert_eq!(facts.exposed_ports, ["8080/tcp"]);
        assert_eq!(facts.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(
            facts.base_name.as_deref(),
            Some("docker.io/library/alpine:3.20")
        );
        assert_eq!(
            facts.annotation_created.as_deref(),
            Some("2026-01-02T00:00:00Z")
        );
        assert_eq!(
            facts_of(b"not json", &BTreeMap::new()),
            ImageFacts::default()
        );
    }

    #[test]
    fn a_manifest_without_config_or_children_is_a_protocol_error() {
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":2}"#),
            Err(RegistryError::Protocol { .. })
        ));
    }

    #[test]
    fn server_errors_are_transient_and_404_is_not_found() {
        let server = RegistryError::from_oci(OciDistributionError::ServerError {
            code: 503,
            url: "u".into(),
            message: String::new(),
        });
        assert!(server.is_transient());
        let missing = RegistryError::from_oci(OciDistributionError::ServerError {
            code: 404,
            url: "u".into(),
            message: String::new(),
        });
        assert!(matches!(missing, RegistryError::NotFound { .. }));
    }

    #[test]
    fn a_referrers_link_header_names_its_next_page() {
        assert_eq!(
            next_link(r#"</v2/team/app/referrers/sha256:a?n=2&last=b>; rel="next""#),
            Some("/v2/team/app/referrers/sha256:a?n=2&last=b")
        );
        assert_eq!(
            next_link("<https://r.example/v2/x?last=1>;rel=next"),
            Some("https://r.example/v2/x?last=1")
        );
    }

    #[test]
    fn a_referrers_link_header_without_a_next_relation_ends_the_listing() {
        assert_eq!(next_link(r#"</v2/x?last=a>; rel="prev""#), None);
        assert_eq!(next_link(""), None);
        assert_eq!(next_link("rel=\"next\""), None);
        assert_eq!(next_link("<unterminated; rel=\"next\""), None);
        assert_eq!(next_link(r#"</v2/x>; title="next""#), None);
    }

    #[test]
    fn the_next_referrers_page_is_found_among_several_links_and_relation_types() {
        assert_eq!(
            next_link(r#"</first>; rel="first", </p2>; title="a, b; rel=next"; rel="prev next""#),
            Some("/p2")
        );
        assert_eq!(next_link(r#"</one>; REL="Next""#), Some("/one"));
        assert_eq!(
            next_link(r#"</a>; rel="prev",</b>; rel="next""#),
            Some("/b")
        );
    }

    #[test]
    fn a_next_referrers_link_resolves_against_the_page_and_stays_on_its_origin() {
        let page = Url::parse("http://127.0.0.1:5000/v2/team/app/referrers/sha256:a").unwrap();
        assert_eq!(
            same_origin_link(&page, "/v2/team/app/referrers/sha256:a?last=x")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:5000/v2/team/app/referrers/sha256:a?last=x"
        );
        assert!(same_origin_link(&page, "http://127.0.0.1:5000/v2/next").is_ok());
        for elsewhere in [
            "http://127.0.0.1:5001/v2/next",
            "https://127.0.0.1:5000/v2/next",
            "http://evil.example/v2/next",
        ] {
            assert!(
                matches!(
                    same_origin_link(&page, elsewhere),
                    Err(RegistryError::Protocol { .. })
                ),
                "{elsewhere}"
            );
        }
    }

    #[test]
    fn a_referrers_answer_must_be_an_oci_index() {
        assert!(RawReferrersIndex::parse(br#"{"schemaVersion":2,"manifests":[]}"#, "x").is_ok());
        for bad in [
            &b"<html>"[..],
            br#"{"schemaVersion":2}"#,
            br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#,
            br#"{"manifests":[{"mediaType":"m"}]}"#,
        ] {
            assert!(matches!(
                RawReferrersIndex::parse(bad, "x"),
                Err(RegistryError::Protocol { .. })
            ));
        }
    }

    #[test]
    fn the_referrers_tag_of_a_digest_replaces_the_colon() {
        assert_eq!(referrers_tag("sha256:abc"), "sha256-abc");
    }
}
