//! The HTTP side: the TLS webhook router (`POST /validate`, and `POST /mutate` for opt-in
//! digest pinning, behind the same guards), the plain-HTTP probe router
//! (`/healthz`, `/readyz`, `/metrics`, `/inventory`), body limits and the bound on buffered bodies, the API
//! server's `?timeout=` (which also bounds reading the body), hot reload of configuration and
//! certificates, and graceful drain. Connections themselves are in `connections`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use http_body_util::BodyExt;
use kube_core::DynamicObject;
use kube_core::admission::AdmissionRequest;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admission::{self, ErrorBody};
use crate::config::LoadedConfig;
use crate::engine::{Engine, EngineBuildError, EngineBuilder};
use crate::inventory::{Filter, Inventory};
use crate::metrics::Metrics;
use crate::tls::{self, TlsError};
use crate::watch::{FileChanges, WatchError};

/// The API server never waits longer than 30 s for a webhook.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// State shared by both routers.
#[derive(Debug)]
pub struct AppState {
    engine: ArcSwap<Engine>,
    pub metrics: Metrics,
    ready: AtomicBool,
    /// One permit per byte of request body held in memory (`limits.maxBufferedRequestBytes`,
    /// read at start-up).
    body_bytes: Arc<Semaphore>,
    body_bytes_bound: usize,
    /// What this replica has judged, per digest (`GET /inventory`).
    inventory: Arc<Inventory>,
    /// The name `/inventory` gives this replica (`POD_NAME`, else the host name).
    replica: String,
    /// What this replica's admissions resolved each pod site to (re-judging compares).
    admitted: crate::admitted::AdmittedDigests,
}

impl AppState {
    pub fn new(engine: Engine) -> Arc<Self> {
        let metrics = Metrics::new();
        metrics.set_config_identity(engine.identity());
        metrics.rego_policies.set(rego_policy_count(&engine));
        // Validation keeps the bound at most 1 GiB, far below Semaphore::MAX_PERMITS.
        let body_bytes_bound = usize::try_from(engine.config().limits.max_buffered_request_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Arc::new(Self {
            engine: ArcSwap::from_pointee(engine),
            metrics,
            ready: AtomicBool::new(false),
            body_bytes: Arc::new(Semaphore::new(body_bytes_bound)),
            body_bytes_bound,
            inventory: Arc::new(Inventory::default()),
            admitted: crate::admitted::AdmittedDigests::default(),
            replica: replica_name(),
        })
    }

    /// What this replica has judged, per digest.
    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    /// What this replica's admissions resolved each pod site to.
    pub fn admitted_digests(&self) -> &crate::admitted::AdmittedDigests {
        &self.admitted
    }

    /// Bytes of request bodies held now.
    pub fn buffered_body_bytes(&self) -> usize {
        self.body_bytes_bound
            .saturating_sub(self.body_bytes.available_permits())
    }

    /// The engine in force now.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Puts a new engine in force; reviews already running finish with the old one.
    pub fn replace_engine(&self, engine: Engine) {
        self.metrics.set_config_identity(engine.identity());
        self.metrics.rego_policies.set(rego_policy_count(&engine));
        self.engine.store(Arc::new(engine));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// `POD_NAME` (the chart sets it from the downward API), else the host name, else `unknown`.
fn replica_name() -> String {
    ["POD_NAME", "HOSTNAME"]
        .into_iter()
        .filter_map(|key| std::env::var(key).ok())
        .chain(
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|name| name.trim().to_owned()),
        )
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn rego_policy_count(engine: &Engine) -> i64 {
    engine.rego().map_or(0, |rego| {
        i64::try_from(rego.packages().iter().filter(|p| p.is_policy()).count()).unwrap_or(0)
    })
}

/// The TLS port's routes.
pub fn webhook_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .with_state(state)
}

/// The plain-HTTP probe port's routes.
pub fn probe_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/inventory", get(inventory))
        .with_state(state)
}

/// What `GET /inventory` answers.
#[derive(serde::Serialize)]
struct InventoryAnswer<'a> {
    replica: &'a str,
    /// Never complete: each replica holds only what it judged.
    complete: bool,
    note: &'static str,
    digests: Vec<crate::inventory::DigestRecord>,
}

/// `GET /inventory?verdict=denied&namespace=team-a&image=nginx`: this replica's view of the
/// digests it judged. An unknown filter or value is a 400 with a JSON error.
async fn inventory(
    State(state): State<Arc<AppState>>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let bad_request = |error: String| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": error })),
        )
            .into_response()
    };
    // A query string that does not even decode is answered in JSON too, like a bad filter.
    let Query(query) = match query {
        Ok(query) => query,
        Err(err) => return bad_request(err.body_text()),
    };
    if !state.engine().config().inventory.enabled {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": "the inventory is off: set inventory.enabled: true in portcullis's configuration"
            })),
        )
            .into_response();
    }
    let filter = match Filter::from_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(filter) => filter,
        Err(err) => return bad_request(err.to_string()),
    };
    axum::Json(InventoryAnswer {
        replica: &state.replica,
        complete: false,
        note: "this replica's view: reviews it answered and, on the re-judging leader, every running digest",
        digests: state.inventory.query(&filter),
    })
    .into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response();
    }
    match state.engine().pending() {
        None => (StatusCode::OK, "ready").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state
        .metrics
        .buffered_request_bytes
        .set(i64::try_from(state.buffered_body_bytes()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

fn error_response(
    state: &AppState,
    status: StatusCode,
    reason: &'static str,
    error: String,
) -> Response {
    state.metrics.record_rejected(reason);
    tracing::warn!(status = status.as_u16(), reason, %error, "request rejected");
    (status, axum::Json(ErrorBody { error, reason })).into_response()
}

/// As [`error_response`], for answers given before the body was read to its end: the
/// connection cannot carry another request, so the client is told to close it.
fn closing_error_response(
    state: &AppState,
    status: StatusCode,
    reason: &'static str,
    error: String,
) -> Response {
    let mut response = error_response(state, status, reason, error);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the body ({0}) exceeds the {1}-byte limit (limits.maxRequestBytes)")]
    TooLarge(String, u64),
    #[error(
        "the server already holds {held} bytes of request bodies and this one would go over \
         the {bound}-byte bound (limits.maxBufferedRequestBytes); retry, or raise the bound"
    )]
    Overloaded { held: usize, bound: usize },
    #[error(
        "the body did not arrive within the request's deadline ({0:?}, from ?timeout= less \
         limits.timeoutMarginMillis)"
    )]
    Deadline(Duration),
    #[error("cannot read the body: {0}")]
    Read(#[source] axum::Error),
}

impl BodyError {
    fn answer(&self, state: &AppState) -> Response {
        let (status, reason) = match self {
            BodyError::TooLarge(..) => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
            BodyError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            BodyError::Deadline(_) => (StatusCode::REQUEST_TIMEOUT, "body-timeout"),
            BodyError::Read(_) => (StatusCode::BAD_REQUEST, "body-read"),
        };
        closing_error_response(state, status, reason, self.to_string())
    }
}

/// Reads a body of at most `limit` bytes before `deadline`, holding one permit of `state`'s
/// byte semaphore per byte: a declared length is reserved before anything is read, a
/// streamed body chunk by chunk. Over the bound it fails at once instead of waiting, so
/// stalled bodies can never hold more memory than the bound.
async fn read_body(
    state: &AppState,
    body: Body,
    limit: u64,
    declared: Option<u64>,
    deadline: tokio::time::Instant,
    budget: Duration,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), BodyError> {
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut reserved = 0usize;
    let reserve = |held: &mut Option<OwnedSemaphorePermit>, bytes: usize| {
        let overloaded = || BodyError::Overloaded {
            held: state.buffered_body_bytes(),
            bound: state.body_bytes_bound,
        };
        let permits = u32::try_from(bytes).map_err(|_| overloaded())?;
        let permit = state
            .body_bytes
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| overloaded())?;
        match held {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    };
    if let Some(length) = declared {
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        reserve(&mut held, length)?;
        reserved = length;
    }
    let read = async {
        let mut body = body;
        let mut collected = Vec::with_capacity(reserved);
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
                continue; // trailers carry nothing portcullis reads
            };
            let total = collected.len().saturating_add(data.len());
            if u64::try_from(total).unwrap_or(u64::MAX) > limit {
                return Err(BodyError::TooLarge("streamed".into(), limit));
            }
            if total > reserved {
                reserve(&mut held, total - reserved)?;
                reserved = total;
            }
            collected.extend_from_slice(&data);
        }
        Ok(Bytes::from(collected))
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(bytes)) => Ok((bytes, held)),
        Ok(Err(err)) => Err(err),
        Err(_elapsed) => Err(BodyError::Deadline(budget)),
    }
}

/// An AdmissionReview read and decoded (once) under the server's guards, with the deadline
/// its answer is due by. Counted in `reviews_in_flight` until dropped.
struct ReadRequest {
    started: Instant,
    engine: Arc<Engine>,
    deadline: tokio::time::Instant,
    request: AdmissionRequest<DynamicObject>,
    /// Held until the answer is built: the decoded request takes about the body's memory.
    _held: Option<OwnedSemaphorePermit>,
    _in_flight: InFlight,
}

/// Counts one review in `reviews_in_flight` while it lives.
struct InFlight(Gauge<i64, AtomicI64>);

impl InFlight {
    fn start(gauge: &Gauge<i64, AtomicI64>) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The guards every webhook endpoint shares: `?timeout=` (the clock starts with the request's
/// head, so reading the body spends the same budget as answering it), the body-size limit and
/// the bound on buffered bodies. `Err` is the HTTP error answer to send.
async fn read_request(
    state: &AppState,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<ReadRequest, Response> {
    let started = Instant::now();
    let engine = state.engine();
    let limit = engine.config().limits.max_request_bytes;
    let timeout = query
        .get("timeout")
        .and_then(|t| match parse_go_duration(t) {
            Some(d) => Some(d.min(MAX_TIMEOUT)),
            None => {
                tracing::debug!(timeout = %t, "ignoring unparsable ?timeout=");
                None
            }
        });
    let budget = engine.budget(timeout);
    let deadline = tokio::time::Instant::now() + budget;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > limit) {
        return Err(BodyError::TooLarge(format!("{length} bytes"), limit).answer(state));
    }
    let (body, held) = read_body(state, body, limit, declared, deadline, budget)
        .await
        .map_err(|err| err.answer(state))?;
    let request = admission::parse(&body).map_err(|err| admission_error_response(state, &err))?;
    Ok(ReadRequest {
        started,
        engine,
        deadline,
        request,
        _held: held,
        _in_flight: InFlight::start(&state.metrics.in_flight),
    })
}

/// A body that is not an AdmissionReview: 400 (or 500 when portcullis could not write its
/// own answer).
fn admission_error_response(state: &AppState, err: &admission::AdmissionError) -> Response {
    let status = match err {
        admission::AdmissionError::Encode(_) | admission::AdmissionError::Patch(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    error_response(state, status, err.reason(), err.to_string())
}

async fn validate(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let read = match read_request(&state, &query, &headers, body).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let (review, observed) = admission::judge_observed(
        &read.engine,
        &read.request,
        read.deadline,
        crate::evidence::Priority::Admission,
    )
    .await;
    if read.engine.config().inventory.enabled {
        admission::observe(&state.inventory, &read.engine, &read.request, &observed);
    }
    if read.engine.config().rejudge.is_some() {
        admission::record_admitted(&state.admitted, &read.request, &observed);
    }
    let verdict = observed.verdict;
    let (kind, operation) = review_labels(&read.request);
    state.metrics.record_review(
        verdict.outcome.as_str(),
        kind,
        operation,
        read.started.elapsed().as_secs_f64(),
    );
    if matches!(
        verdict.outcome,
        crate::decision::Outcome::ErrorAllowed | crate::decision::Outcome::ErrorDenied
    ) {
        state.metrics.evidence_errors.inc();
    }
    axum::Json(review).into_response()
}

/// `POST /mutate`: opt-in digest pinning (`pinning.enabled`). Always `allowed: true` for an
/// AdmissionReview (the validating webhook decides); same guards as `/validate`.
async fn mutate(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let read = match read_request(&state, &query, &headers, body).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let result = admission::judge_mutation(
        &read.engine,
        &read.request,
        read.deadline,
        crate::evidence::Priority::Admission,
    )
    .await;
    match result {
        Ok((review, outcome)) => {
            state.metrics.record_pinning(&outcome);
            axum::Json(review).into_response()
        }
        Err(err) => admission_error_response(&state, &err),
    }
}

/// Kind and operation for metric labels, from the decoded request (only known, bounded values
/// are used, so labels cannot explode).
fn review_labels(request: &AdmissionRequest<DynamicObject>) -> (&str, &'static str) {
    let operation = crate::engine::operation_name(&request.operation);
    let kind = &request.kind;
    let kind = match crate::workload::pod_spec_path(&kind.group, &kind.kind) {
        Some(_) => kind.kind.as_str(),
        None => "other",
    };
    (kind, operation)
}

/// Parses a Go duration as the API server writes it in `?timeout=` (`10s`, `1m0s`, `500ms`),
/// with kube's parser of Go durations. A negative or unparsable value is `None` (the
/// configured default timeout applies).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    // kube's parser reads "" as zero; Go (and so the API server) never writes that.
    let text = Some(text.trim()).filter(|t| !t.is_empty())?;
    let parsed: kube_core::Duration = text.parse().ok()?;
    if parsed.is_negative() {
        return None;
    }
    Some(parsed.into())
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files, reloaded when they change (cert-manager rotation).
    Files { cert: PathBuf, key: PathBuf },
    /// Generated at start: a CA written to `ca_out` and a serving certificate for
    /// `localhost`, `127.0.0.1` and `dns_names`.
    Generated {
        dns_names: Vec<String>,
        ca_out: PathBuf,
    },
}

/// Everything `serve` needs besides its listeners.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config_path: Option<PathBuf>,
    pub tls: TlsSource,
    /// How long to keep answering, unready and with `Connection: close`, after SIGTERM
    /// before closing (lets endpoints controllers take the pod out of the Service first, and
    /// clients move their keep-alive connections to other replicas).
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish once closing.
    pub drain_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot write the CA bundle to {path}: {source}")]
    WriteCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A running server (both ports), for `serve` and for tests.
#[derive(Debug)]
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub probe_addr: SocketAddr,
    pub state: Arc<AppState>,
    stop_accepting: tokio::sync::watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<hyper_util::server::graceful::GracefulShutdown>,
    probe_stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    probe_server: tokio::task::JoinHandle<std::io::Result<()>>,
    options: ServeOptions,
}

/// Starts both servers on already-bound listeners (so callers and tests can use port 0).
pub async fn start(
    webhook: std::net::TcpListener,
    probe: std::net::TcpListener,
    engine: Engine,
    build: EngineBuilder,
    options: ServeOptions,
) -> Result<Running, ServeError> {
    let state = AppState::new(engine);
    let mut tasks = Vec::new();

    let rustls = match &options.tls {
        TlsSource::Files { cert, key } => {
            let config = RustlsConfig::from_config(tls::load(cert, key)?);
            state
                .metrics
                .set_certificate_expiry(std::fs::read(cert).ok().as_deref());
            tasks.push(tokio::spawn(reload_tls(
                FileChanges::watch([cert.as_path(), key.as_path()])?,
                config.clone(),
                cert.clone(),
                key.clone(),
                state.clone(),
            )));
            config
        }
        TlsSource::Generated { dns_names, ca_out } => {
            let generated = tls::generate(dns_names)?;
            std::fs::write(ca_out, &generated.ca_pem).map_err(|source| ServeError::WriteCa {
                path: ca_out.clone(),
                source,
            })?;
            tracing::info!(ca_bundle = %ca_out.display(), "generated a CA and serving certificate; trust the CA bundle to call the webhook");
            state
                .metrics
                .set_certificate_expiry(Some(generated.cert_pem.as_bytes()));
            RustlsConfig::from_config(tls::server_config(
                generated.cert_pem.as_bytes(),
                generated.key_pem.as_bytes(),
            )?)
        }
    };
    // The configuration file and every Rego path it names are watched; a change to any of
    // them rebuilds the engine (and is refused if the new set does not load).
    let watched = WatchedPaths::of(options.config_path.as_deref(), &state.engine());
    if !watched.is_empty() {
        tasks.push(tokio::spawn(reload_config(
            watched.watch()?,
            watched,
            options.config_path.clone(),
            build,
            state.clone(),
        )));
    }

    webhook.set_nonblocking(true)?;
    probe.set_nonblocking(true)?;
    let webhook_addr = webhook.local_addr()?;
    let probe_addr = probe.local_addr()?;
    let max_connections =
        usize::try_from(state.engine().config().limits.max_connections).unwrap_or(usize::MAX);
    let (stop_accepting, stop) = tokio::sync::watch::channel(false);
    let accepting = tokio::spawn(crate::connections::accept(
        tokio::net::TcpListener::from_std(webhook)?,
        rustls,
        webhook_router(state.clone()),
        state.clone(),
        Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
        stop,
    ));
    let (probe_stop, mut probe_stopped) = tokio::sync::watch::channel(false);
    let probe_listener = tokio::net::TcpListener::from_std(probe)?;
    let probe_server = axum::serve(probe_listener, probe_router(state.clone()))
        .with_graceful_shutdown(async move {
            let _ = probe_stopped.wait_for(|stop| *stop).await;
        });
    let probe_server = tokio::spawn(async move { probe_server.await });
    state.set_ready(true);
    tracing::info!(%webhook_addr, %probe_addr, config = state.engine().identity(), "portcullis is serving");
    Ok(Running {
        webhook_addr,
        probe_addr,
        state,
        stop_accepting,
        accepting,
        probe_stop,
        tasks,
        probe_server,
        options,
    })
}

impl Running {
    /// Graceful drain that loses no request: unready at once (probes answer 503 and every
    /// HTTP/1 answer says `Connection: close`, so clients move to other replicas as soon as
    /// their next request is answered) while requests keep being served for the shutdown
    /// delay; then the listener closes, idle connections are closed, and requests in flight
    /// finish (bounded by the drain timeout).
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.state.set_ready(false);
        tracing::info!(delay = ?self.options.shutdown_delay, "draining: marked unready");
        tokio::time::sleep(self.options.shutdown_delay).await;
        let _ = self.stop_accepting.send(true);
        let mut first_error = None;
        match self.accepting.await {
            Ok(connections) => {
                let open = connections.count();
                tracing::info!(open, timeout = ?self.options.drain_timeout, "stopped accepting; finishing requests in flight");
                if tokio::time::timeout(self.options.drain_timeout, connections.shutdown())
                    .await
                    .is_err()
                {
                    tracing::warn!(timeout = ?self.options.drain_timeout, "requests still in flight when the drain timeout ended");
                }
            }
            Err(join) => {
                first_error.get_or_insert(ServeError::Io(std::io::Error::other(join)));
            }
        }
        for task in &self.tasks {
            task.abort();
        }
        let _ = self.probe_stop.send(true);
        match self.probe_server.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                first_error.get_or_insert(ServeError::Io(err));
            }
            Err(join) => {
                first_error.get_or_insert(ServeError::Io(std::io::Error::other(join)));
            }
        }
        tracing::info!("portcullis stopped");
        first_error.map_or(Ok(()), Err)
    }
}

async fn reload_tls(
    mut changes: FileChanges,
    config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    state: Arc<AppState>,
) {
    let mut current = (std::fs::read(&cert).ok(), std::fs::read(&key).ok());
    while changes.next().await.is_some() {
        let now = (std::fs::read(&cert).ok(), std::fs::read(&key).ok());
        if now == current {
            continue;
        }
        match tls::load(&cert, &key) {
            Ok(server_config) => {
                config.reload_from_config(server_config);
                state.metrics.set_certificate_expiry(now.0.as_deref());
                current = now;
                state.metrics.record_tls_reload("applied");
                tracing::info!(cert = %cert.display(), "serving certificate reloaded");
            }
            Err(err) => {
                // Often transient (the certificate was written, the key not yet): the next
                // change event retries. The previous certificate keeps serving meanwhile.
                state.metrics.record_tls_reload("rejected");
                tracing::warn!(error = %err, "new certificate not usable; still serving the previous one");
            }
        }
    }
}

/// What the reload task watches: the configuration file and the Rego paths it names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchedPaths {
    /// Watched through their directory (the configuration file, single `.rego` files).
    files: Vec<PathBuf>,
    /// Watched recursively (policy folders).
    trees: Vec<PathBuf>,
}

impl WatchedPaths {
    fn of(config_path: Option<&std::path::Path>, engine: &Engine) -> Self {
        let mut files: Vec<PathBuf> = config_path.map(|p| vec![p.to_owned()]).unwrap_or_default();
        let mut trees = Vec::new();
        for entry in &engine.config().policies.rego.paths {
            let path = entry.path().to_owned();
            if path.is_dir() {
                trees.push(path);
            } else {
                files.push(path);
            }
        }
        Self { files, trees }
    }

    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.trees.is_empty()
    }

    fn watch(&self) -> Result<FileChanges, WatchError> {
        FileChanges::watch_with_trees(
            self.files.iter().map(PathBuf::as_path),
            self.trees.iter().map(PathBuf::as_path),
        )
    }
}

async fn reload_config(
    mut changes: FileChanges,
    mut watched: WatchedPaths,
    config_path: Option<PathBuf>,
    build: EngineBuilder,
    state: Arc<AppState>,
) {
    while changes.next().await.is_some() {
        // Without a configuration file (embedded default or a test engine), a policy change
        // rebuilds from the configuration in force.
        let loaded = match &config_path {
            Some(path) => LoadedConfig::from_file(path).map_err(EngineBuildError::from),
            None => Ok(state.engine().loaded().clone()),
        };
        // Reading and compiling policies is blocking work: keep it off the async workers.
        let outcome = match loaded {
            Ok(loaded) => {
                let build = build.clone();
                tokio::task::spawn_blocking(move || build(loaded))
                    .await
                    .unwrap_or_else(
                        |join| Err(format!("building the engine failed: {join}").into()),
                    )
            }
            Err(err) => Err(err),
        };
        match outcome {
            Ok(engine) if engine.identity() == state.engine().identity() => {
                state.metrics.record_config_reload("unchanged");
            }
            Ok(engine) => {
                tracing::info!(
                    config = engine.identity(),
                    rego_files = engine.rego().map_or(0, |r| r.files().len()),
                    "configuration and policies reloaded"
                );
                state.replace_engine(engine);
                state.metrics.record_config_reload("applied");
            }
            Err(error) => {
                state.metrics.record_config_reload("rejected");
                let error = crate::engine::describe_error(&*error);
                tracing::error!(%error, config = state.engine().identity(), "new configuration or policies refused; the last good ones stay in force");
            }
        }
        // The configuration may now name other policy paths: watch those instead.
        let now = WatchedPaths::of(config_path.as_deref(), &state.engine());
        if now != watched {
            match now.watch() {
                Ok(new_changes) => {
                    changes = new_changes;
                    watched = now;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot watch the new policy paths; still watching the previous ones");
                }
            }
        }
    }
}

impl crate::rejudge::RejudgeHost for AppState {
    fn engine(&self) -> Arc<Engine> {
        AppState::engine(self)
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn inventory(&self) -> Option<&crate::inventory::Inventory> {
        AppState::engine(self)
            .config()
            .inventory
            .enabled
            .then(|| AppState::inventory(self).as_ref())
    }
    fn admitted(&self) -> Option<&crate::admitted::AdmittedDigests> {
        Some(&self.admitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_as_the_api_server_writes_them() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("ten seconds"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration("-5s"), None);
    }
}
