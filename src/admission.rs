//! The AdmissionReview contract, owned in one place: decoding `admission.k8s.io/v1`
//! AdmissionReviews, and encoding verdicts as the AdmissionReview response that echoes the
//! request's uid, for the validating answer (`/validate`) and the mutating one (`/mutate`,
//! digest pinning). Shared by the HTTPS server and `portcullis review`.

use std::time::Duration;

use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::decision::Verdict;
use crate::engine::{Engine, Observed, operation_name};
use crate::inventory::Inventory;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview portcullis can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("the body is not a valid AdmissionReview: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("apiVersion must be {API_VERSION:?}, got {0:?}")]
    WrongApiVersion(String),
    #[error("kind must be {KIND:?}, got {0:?}")]
    WrongKind(String),
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    #[error("the AdmissionReview request has no uid")]
    MissingUid,
    /// Never expected: the answer itself could not be written (HTTP 500, not 400).
    #[error("cannot encode the answer: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot encode the patch: {0}")]
    Patch(#[source] kube_core::admission::SerializePatchError),
}

impl AdmissionError {
    /// A short machine-readable reason, for the JSON error body and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AdmissionError::Malformed(_) => "malformed",
            AdmissionError::WrongApiVersion(_) => "wrong-api-version",
            AdmissionError::WrongKind(_) => "wrong-kind",
            AdmissionError::MissingRequest => "missing-request",
            AdmissionError::MissingUid => "missing-uid",
            AdmissionError::Encode(_) | AdmissionError::Patch(_) => "encode",
        }
    }
}

/// The JSON body of an HTTP error answer (400, 408, 413, 503).
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: String,
    pub reason: &'static str,
}

/// Decodes and checks an AdmissionReview body.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, AdmissionError> {
    // A repeated key is read differently by different decoders (last wins here, Go merges
    // repeated objects), so what is judged might not be what is persisted. The API server
    // re-encodes what it decoded and never repeats a key: refuse instead of guessing.
    serde_json::from_slice::<NoRepeatedKeys>(body).map_err(AdmissionError::Malformed)?;
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(AdmissionError::Malformed)?;
    if review.types.api_version != API_VERSION {
        return Err(AdmissionError::WrongApiVersion(review.types.api_version));
    }
    if review.types.kind != KIND {
        return Err(AdmissionError::WrongKind(review.types.kind));
    }
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| AdmissionError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(AdmissionError::MissingUid);
    }
    Ok(request)
}

/// The AdmissionReview answering `request` with `verdict`.
pub fn respond(
    request: &AdmissionRequest<DynamicObject>,
    verdict: &Verdict,
) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::from(request);
    response.allowed = verdict.allowed;
    if let Some(code) = verdict.status_code {
        response.result.code = code;
        response.result.reason = "Forbidden".into();
    }
    if let Some(message) = &verdict.message {
        response.result.message = message.clone();
    }
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings.clone());
    }
    response.audit_annotations = verdict
        .audit_annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    response.into_review()
}

/// Decodes, judges and answers one AdmissionReview body. `timeout` is the API server's
/// `?timeout=`; the answer is produced before it.
pub async fn handle(
    engine: &Engine,
    body: &[u8],
    timeout: Option<Duration>,
) -> Result<(AdmissionReview<DynamicObject>, Verdict), AdmissionError> {
    handle_by(
        engine,
        body,
        Instant::now() + engine.budget(timeout),
        crate::evidence::Priority::Admission,
    )
    .await
}

/// As [`handle`], with the deadline and priority already fixed: the server starts the clock
/// when the request's headers arrive, so the time its body took is not given again.
pub async fn handle_by(
    engine: &Engine,
    body: &[u8],
    deadline: Instant,
    priority: crate::evidence::Priority,
) -> Result<(AdmissionReview<DynamicObject>, Verdict), AdmissionError> {
    let request = parse(body)?;
    Ok(judge(engine, &request, deadline, priority).await)
}

/// Judges one decoded request and answers it (logging the decision in a `review` span).
pub async fn judge(
    engine: &Engine,
    request: &AdmissionRequest<DynamicObject>,
    deadline: Instant,
    priority: crate::evidence::Priority,
) -> (AdmissionReview<DynamicObject>, Verdict) {
    let (review, observed) = judge_observed(engine, request, deadline, priority).await;
    (review, observed.verdict)
}

/// [`judge`], also returning the judged subject (its image sites with their evidence), for
/// the inventory.
pub async fn judge_observed(
    engine: &Engine,
    request: &AdmissionRequest<DynamicObject>,
    deadline: Instant,
    priority: crate::evidence::Priority,
) -> (AdmissionReview<DynamicObject>, Observed) {
    let started = Instant::now();
    let span = tracing::info_span!(
        "review",
        uid = %request.uid,
        kind = %request.kind.kind,
        namespace = request.namespace.as_deref().unwrap_or(""),
        name = %request.name,
        operation = operation_name(&request.operation),
        dry_run = request.dry_run,
        verdict = tracing::field::Empty,
    );
    let observed = engine
        .review_observed(request, deadline, priority, None)
        .instrument(span.clone())
        .await;
    let verdict = &observed.verdict;
    span.record("verdict", verdict.outcome.as_str());
    span.in_scope(|| {
        // Never log the object itself (Secrets pass through admission); rules and images only.
        let findings: Vec<String> = verdict
            .findings
            .iter()
            .map(crate::decision::describe)
            .collect();
        tracing::info!(
            allowed = verdict.allowed,
            findings = findings.len(),
            config = engine.identity(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "decided"
        );
        for finding in &findings {
            tracing::debug!(finding, "finding");
        }
    });
    (respond(request, verdict), observed)
}

/// Records a judged review in `inventory` under `Kind namespace/name`. Dry-run reviews are
/// recorded too: the inventory says what was judged, and a dry run was judged like any
/// other request.
pub fn observe(
    inventory: &Inventory,
    engine: &Engine,
    request: &AdmissionRequest<DynamicObject>,
    observed: &Observed,
) {
    let Some(subject) = &observed.subject else {
        return;
    };
    inventory.observe(
        subject,
        &observed.verdict,
        &workload_label(&subject.kind, &subject.namespace, &subject.name, request),
        engine.identity(),
        engine.clock().now(),
    );
}

/// Records in `admitted` the digest each image site of an admitted Pod CREATE resolved to,
/// under the pod's controlling owner (`ReplicaSet/web-5b7d`, a bare pod by `Pod/<name>`), so
/// re-judging can tell a node that runs something else. A dry run creates no pod and a denied
/// pod never runs: neither is recorded; nor is a bare pod without a name yet.
pub fn record_admitted(
    admitted: &crate::admitted::AdmittedDigests,
    request: &AdmissionRequest<DynamicObject>,
    observed: &Observed,
) {
    let Some(subject) = &observed.subject else {
        return;
    };
    if request.dry_run
        || !observed.verdict.allowed
        || subject.kind != "Pod"
        || subject.operation != "CREATE"
    {
        return;
    }
    let Some(object) = &request.object else {
        return;
    };
    let owner = object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{}/{}", o.kind, o.name))
        .or_else(|| (!subject.name.is_empty()).then(|| format!("Pod/{}", subject.name)));
    let Some(owner) = owner else {
        return;
    };
    for entry in &subject.images {
        let resolved = match &entry.evidence {
            Some(Ok(evidence)) => evidence.digest.clone(),
            _ => None,
        }
        .or_else(|| {
            entry
                .reference
                .as_ref()
                .ok()
                .and_then(|r| r.digest().map(str::to_owned))
        });
        if let Some(digest) = resolved {
            admitted.record(
                crate::admitted::AdmittedSite {
                    namespace: subject.namespace.clone(),
                    owner: owner.clone(),
                    kind: entry.container_kind,
                    container: entry.container.clone(),
                },
                &digest,
            );
        }
    }
}

/// `Kind namespace/name`, `Kind name` when cluster-scoped; an object the API server has not
/// named yet (`generateName`) is labelled by its generate name with a trailing `*`.
pub fn workload_label(
    kind: &str,
    namespace: &str,
    name: &str,
    request: &AdmissionRequest<DynamicObject>,
) -> String {
    let name = if name.is_empty() {
        let generated = request
            .object
            .as_ref()
            .and_then(|o| o.metadata.generate_name.as_deref())
            .unwrap_or("");
        format!("{generated}*")
    } else {
        name.to_owned()
    };
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

/// A JSON document in which no object repeats a key (checked while reading, nothing kept).
struct NoRepeatedKeys;

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for NoRepeatedKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoRepeatedKeysVisitor)
    }
}

struct NoRepeatedKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoRepeatedKeysVisitor {
    type Value = NoRepeatedKeys;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<NoRepeatedKeys, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoRepeatedKeys, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoRepeatedKeys, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoRepeatedKeys, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoRepeatedKeys, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_unit<E>(self) -> Result<NoRepeatedKeys, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<NoRepeatedKeys, A::Error> {
        while seq.next_element::<NoRepeatedKeys>()?.is_some() {}
        Ok(NoRepeatedKeys)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<NoRepeatedKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            map.next_value::<NoRepeatedKeys>()?;
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key `{key}` in one object (the API server never repeats a key; \
                     which value counts is ambiguous)"
                )));
            }
            seen.insert(key);
        }
        Ok(NoRepeatedKeys)
    }
}

/// The AdmissionReview answering a `/mutate` request: always `allowed: true` (admission
/// decisions belong to the validating webhook), with a base64 JSON patch (`patchType:
/// JSONPatch`) when images were pinned, and audit annotations saying what was pinned (`pinned`)
/// and what was left as written and why (`not-pinned`). Images that should have been pinned
/// but could not be resolved also become warnings, so `kubectl` users see them.
pub fn respond_mutation(
    request: &AdmissionRequest<DynamicObject>,
    outcome: &crate::pinning::Outcome,
) -> Result<serde_json::Value, AdmissionError> {
    use base64::Engine as _;
    let mut response = AdmissionResponse::from(request);
    response.allowed = true;
    let mut annotations = std::collections::HashMap::new();
    annotations.insert("pinning".to_owned(), outcome.as_str().to_owned());
    if let crate::pinning::Outcome::NotApplicable(why) = outcome {
        annotations.insert("pinning-reason".to_owned(), (*why).to_owned());
    }
    let pins = outcome.pins();
    if !pins.is_empty() {
        annotations.insert("pinned".to_owned(), json_list(pins));
    }
    let skips = outcome.skips();
    if !skips.is_empty() {
        annotations.insert("not-pinned".to_owned(), json_list(skips));
    }
    let warnings: Vec<String> = skips
        .iter()
        .filter(|s| s.unresolved)
        .map(|s| {
            crate::decision::truncate(
                &format!("portcullis: {} not pinned: {}", s.image, s.reason),
                crate::decision::MAX_WARNING_CHARS,
            )
        })
        .collect();
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response.audit_annotations = annotations;
    let patch = (!pins.is_empty()).then(|| crate::pinning::patch(pins));
    if let Some(patch) = patch {
        response = response.with_patch(patch).map_err(AdmissionError::Patch)?;
    }
    let mut review =
        serde_json::to_value(response.into_review()).map_err(AdmissionError::Encode)?;
    // kube-core keeps the patch as bytes, which serde writes as a list of numbers; the API
    // server reads `[]byte` as base64, the documented form, so write that.
    if let Some(slot) = review.pointer_mut("/response/patch") {
        let bytes: Vec<u8> = serde_json::from_value(slot.take()).map_err(AdmissionError::Encode)?;
        *slot = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    Ok(review)
}

fn json_list<T: Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// Plans digest pinning for one decoded request and answers it as the mutating webhook
/// (logging the plan in a `mutate` span).
pub async fn judge_mutation(
    engine: &Engine,
    request: &AdmissionRequest<DynamicObject>,
    deadline: Instant,
    priority: crate::evidence::Priority,
) -> Result<(serde_json::Value, crate::pinning::Outcome), AdmissionError> {
    let started = Instant::now();
    let span = tracing::info_span!(
        "mutate",
        uid = %request.uid,
        kind = %request.kind.kind,
        namespace = request.namespace.as_deref().unwrap_or(""),
        name = %request.name,
        operation = operation_name(&request.operation),
        dry_run = request.dry_run,
        pinning = tracing::field::Empty,
    );
    let outcome = engine
        .pin(request, deadline, priority)
        .instrument(span.clone())
        .await;
    span.record("pinning", outcome.as_str());
    span.in_scope(|| {
        let unresolved = outcome.skips().iter().filter(|s| s.unresolved).count();
        match &outcome {
            crate::pinning::Outcome::Disabled => {
                tracing::debug!("pinning is disabled (pinning.enabled: false): no patch");
            }
            crate::pinning::Outcome::NotApplicable(why) => tracing::debug!(why, "nothing to pin"),
            crate::pinning::Outcome::Planned(plan) => tracing::info!(
                pinned = plan.pins.len(),
                unresolved,
                config = engine.identity(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "pinned"
            ),
        }
        for pin in outcome.pins() {
            tracing::debug!(container = %pin.container, from = %pin.from, to = %pin.to, "pin");
        }
    });
    Ok((respond_mutation(request, &outcome)?, outcome))
}
