//! A STAND-IN for the one endpoint Debian's `docker-registry` (distribution 2.8) lacks: the
//! OCI 1.1 referrers API. An HTTP proxy on 127.0.0.1 in front of a real registry that forwards
//! every request unchanged, except that:
//!
//! - `PUT /v2/<name>/manifests/<ref>` whose body names a `subject` is recorded (after the
//!   registry stored it) as a descriptor of that subject — media type, digest, size,
//!   `artifactType` (the config's media type when absent, as the spec says) and annotations —
//!   and answered with `OCI-Subject`, so spec-following clients do not also write the tag;
//! - `GET /v2/<name>/referrers/<digest>[?artifactType=…]` is answered here: an OCI image index
//!   of the recorded descriptors, filtered (with `OCI-Filters-Applied: artifactType`) and cut
//!   into pages of a configurable size joined by `Link: <…>; rel="next"`.
//!
//! Everything else (manifests, blobs, tags, auth) is the real registry's answer. Requests are
//! counted per `METHOD path` so tests can assert round trips. Tests using it say so in their
//! name (`…_through_the_referrers_standin`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::registry::Registry;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What the stand-in answers on the referrers endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandinAnswer {
    /// The recorded referrers, filtered and paginated (the default).
    Recorded,
    /// This status, content type and body, whatever was recorded (hostile or broken registries).
    Raw {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// A listing that never ends: each page holds one made-up descriptor and a `Link` to the
    /// page after it.
    EndlessPages,
}

struct StandinState {
    upstream: String,
    own_host: String,
    http: reqwest::Client,
    page_size: Mutex<usize>,
    answer: Mutex<StandinAnswer>,
    /// The `Authorization` value the referrers endpoint insists on (a `Basic` challenge
    /// otherwise), if any.
    referrers_authorization: Mutex<Option<String>>,
    /// Token mode: (the `Basic` credential `/token` wants, the token it issues). Then `/v2/`
    /// and the referrers endpoint challenge with `Bearer realm="http://<stand-in>/token"`, as a
    /// registry behind a token server does.
    bearer: Mutex<Option<(String, String)>>,
    /// (repository, subject digest) → recorded descriptors, in push order.
    recorded: Mutex<HashMap<(String, String), Vec<Value>>>,
    /// `METHOD path` (no query) → requests seen.
    counts: Mutex<HashMap<String, usize>>,
    /// `path?query` of every referrers request, in order.
    referrers_queries: Mutex<Vec<String>>,
}

/// The proxy; stops serving when dropped.
pub struct ReferrersStandin {
    /// `127.0.0.1:<port>`: the host portcullis is pointed at (plain HTTP).
    pub host: String,
    state: Arc<StandinState>,
    server: tokio::task::JoinHandle<()>,
}

impl ReferrersStandin {
    /// Starts a stand-in in front of `registry` (plain HTTP or htpasswd mode; the proxy
    /// forwards `Authorization` as it comes), with pages of 100 descriptors.
    pub async fn start(registry: &Registry) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let state = Arc::new(StandinState {
            upstream: registry.host.clone(),
            own_host: host.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            page_size: Mutex::new(100),
            answer: Mutex::new(StandinAnswer::Recorded),
            referrers_authorization: Mutex::new(None),
            bearer: Mutex::new(None),
            recorded: Mutex::new(HashMap::new()),
            counts: Mutex::new(HashMap::new()),
            referrers_queries: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(any(handle))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            host,
            state,
            server,
        }
    }

    /// Descriptors per referrers page from now on (at least 1).
    pub fn set_page_size(&self, size: usize) {
        *self.state.page_size.lock().unwrap() = size.max(1);
    }

    /// What the referrers endpoint answers from now on.
    pub fn answer_referrers(&self, answer: StandinAnswer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// From now on the referrers endpoint wants HTTP basic auth with these credentials, and
    /// answers 401 with a `Basic` challenge without them (the rest of the registry is as the
    /// registry behind is).
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        *self.state.referrers_authorization.lock().unwrap() = Some(format!("Basic {token}"));
    }

    /// From now on `/v2/` and the referrers endpoint want a bearer token, which `GET /token`
    /// issues for these basic credentials (a token server's flow: challenge, token, retry).
    pub fn require_bearer_token(&self, user: &str, password: &str) {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let token = format!(
            "standin-token-{}",
            hex::encode(Sha256::digest(basic.as_bytes()))
        );
        *self.state.bearer.lock().unwrap() = Some((format!("Basic {basic}"), token.clone()));
        *self.state.referrers_authorization.lock().unwrap() = Some(format!("Bearer {token}"));
    }

    /// Requests seen for `METHOD path` (exact path, no query).
    pub fn requests(&self, method: &str, path: &str) -> usize {
        let key = format!("{method} {path}");
        self.state
            .counts
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// Every request seen, whatever its path.
    pub fn request_count(&self) -> usize {
        self.state.counts.lock().unwrap().values().sum()
    }

    /// `path?query` of every referrers request so far, in order.
    pub fn referrers_queries(&self) -> Vec<String> {
        self.state.referrers_queries.lock().unwrap().clone()
    }

    /// The descriptors recorded for `subject` in `repository`.
    pub fn recorded(&self, repository: &str, subject: &str) -> Vec<Value> {
        self.state
            .recorded
            .lock()
            .unwrap()
            .get(&(repository.to_owned(), subject.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// The `registries[]` entry portcullis needs to reach the registry through the stand-in.
    pub fn registry_yaml(&self) -> String {
        format!(
            "registries:\n  - host: \"{}\"\n    insecure: true\n",
            self.host
        )
    }
}

impl Drop for ReferrersStandin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(State(state): State<Arc<StandinState>>, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    *state
        .counts
        .lock()
        .unwrap()
        .entry(format!("{method} {path}"))
        .or_default() += 1;
    let bearer = state.bearer.lock().unwrap().clone();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some((basic, token)) = &bearer {
        let challenge = format!(
            "Bearer realm=\"http://{}/token\",service=\"referrers-standin\"",
            state.own_host
        );
        if path == "/token" {
            return if authorization.as_deref() == Some(basic.as_str()) {
                axum::Json(json!({"token": token, "access_token": token})).into_response()
            } else {
                (StatusCode::UNAUTHORIZED, "bad credentials").into_response()
            };
        }
        if method == "GET" && path == "/v2/" && authorization != Some(format!("Bearer {token}")) {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
                .into_response();
        }
    }
    if method == "GET"
        && let Some((repository, subject)) = referrers_path(&path)
    {
        let full = match &query {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        };
        state.referrers_queries.lock().unwrap().push(full);
        let wanted = state.referrers_authorization.lock().unwrap().clone();
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if let Some(wanted) = wanted
            && given != Some(wanted.as_str())
        {
            let challenge = if bearer.is_some() {
                format!(
                    "Bearer realm=\"http://{}/token\",service=\"referrers-standin\"",
                    state.own_host
                )
            } else {
                "Basic realm=\"referrers-standin\"".to_owned()
            };
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
                .into_response();
        }
        return referrers(&state, &path, &repository, &subject, query.as_deref());
    }
    forward(&state, request).await
}

/// `/v2/<name>/referrers/<digest>` → (name, digest).
fn referrers_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/v2/")?;
    let (repository, digest) = rest.rsplit_once("/referrers/")?;
    (!repository.is_empty() && !digest.is_empty() && !digest.contains('/'))
        .then(|| (repository.to_owned(), digest.to_owned()))
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url_pairs(query?)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn referrers(
    state: &StandinState,
    path: &str,
    repository: &str,
    subject: &str,
    query: Option<&str>,
) -> Response {
    let answer = state.answer.lock().unwrap().clone();
    let page: usize = query_param(query, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let index = |manifests: Vec<Value>| {
        json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}).to_string()
    };
    match answer {
        StandinAnswer::Raw {
            status,
            content_type,
            body,
        } => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", content_type)],
            body,
        )
            .into_response(),
        StandinAnswer::EndlessPages => {
            let descriptor = json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", hex::encode(Sha256::digest(page.to_string()))),
                "size": 100,
                "artifactType": "application/vnd.example.endless",
            });
            let next = format!("<{path}?page={}>; rel=\"next\"", page + 1);
            (
                StatusCode::OK,
                [("content-type", INDEX.to_owned()), ("link", next)],
                index(vec![descriptor]),
            )
                .into_response()
        }
        StandinAnswer::Recorded => {
            let artifact_type = query_param(query, "artifactType");
            let all = state
                .recorded
                .lock()
                .unwrap()
                .get(&(repository.to_owned(), subject.to_owned()))
                .cloned()
                .unwrap_or_default();
            let matching: Vec<Value> = all
                .into_iter()
                .filter(|d| {
                    artifact_type
                        .as_deref()
                        .is_none_or(|wanted| d["artifactType"] == wanted)
                })
                .collect();
            let size = *state.page_size.lock().unwrap();
            let start = (page * size).min(matching.len());
            let end = (start + size).min(matching.len());
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static(INDEX));
            if artifact_type.is_some() {
                headers.insert(
                    "oci-filters-applied",
                    HeaderValue::from_static("artifactType"),
                );
            }
            if end < matching.len() {
                let mut next = reqwest::Url::parse(&format!("http://x{path}")).unwrap();
                next.query_pairs_mut()
                    .append_pair("page", &(page + 1).to_string());
                if let Some(wanted) = &artifact_type {
                    next.query_pairs_mut().append_pair("artifactType", wanted);
                }
                let target = &next.as_str()["http://x".len()..];
                headers.insert(
                    "link",
                    HeaderValue::from_str(&format!("<{target}>; rel=\"next\"")).unwrap(),
                );
            }
            (
                StatusCode::OK,
                headers,
                index(matching[start..end].to_vec()),
            )
                .into_response()
        }
    }
}

/// Hop-by-hop headers, and those the two HTTP stacks set themselves.
fn passes(name: &str) -> bool {
    !matches!(
        name,
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "te" | "trailer"
    )
}

async fn forward(state: &StandinState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.unwrap();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let mut upstream = state.http.request(
        method.clone(),
        format!("http://{}{path_and_query}", state.upstream),
    );
    for (name, value) in &parts.headers {
        if passes(name.as_str()) && name.as_str() != "content-length" {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = match upstream.body(body.to_vec()).send().await {
        Ok(answer) => answer,
        Err(err) => return (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    };
    let status = answer.status().as_u16();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !passes(name.as_str()) {
            continue;
        }
        // Upload locations name the registry; clients must come back through the proxy.
        let value = if name.as_str() == "location" {
            let text =
                String::from_utf8_lossy(value.as_bytes()).replace(&state.upstream, &state.own_host);
            HeaderValue::from_str(&text).unwrap()
        } else {
            HeaderValue::from_bytes(value.as_bytes()).unwrap()
        };
        headers.append(
            axum::http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(),
            value,
        );
    }
    let answer_body = answer.bytes().await.unwrap_or_default();
    if method == reqwest::Method::PUT
        && status == 201
        && parts.uri.path().contains("/manifests/")
        && let Some(subject) = record(state, parts.uri.path(), &parts.headers, &body)
    {
        headers.insert("oci-subject", HeaderValue::from_str(&subject).unwrap());
    }
    let mut response = Response::new(Body::from(answer_body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    *response.headers_mut() = headers;
    response
}

/// Records a stored manifest that names a subject; returns the subject's digest.
fn record(state: &StandinState, path: &str, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let repository = path
        .strip_prefix("/v2/")?
        .rsplit_once("/manifests/")?
        .0
        .to_owned();
    let manifest: Value = serde_json::from_slice(body).ok()?;
    let subject = manifest["subject"]["digest"].as_str()?.to_owned();
    let media_type = manifest["mediaType"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let artifact_type = manifest["artifactType"]
        .as_str()
        .or_else(|| manifest["config"]["mediaType"].as_str())
        .map(str::to_owned);
    let mut descriptor = json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", hex::encode(Sha256::digest(body))),
        "size": body.len(),
    });
    if let Some(artifact_type) = artifact_type {
        descriptor["artifactType"] = json!(artifact_type);
    }
    if let Some(annotations) = manifest.get("annotations").filter(|a| a.is_object()) {
        descriptor["annotations"] = annotations.clone();
    }
    let mut recorded = state.recorded.lock().unwrap();
    let list = recorded.entry((repository, subject.clone())).or_default();
    // Pushing the same manifest again replaces its entry rather than listing it twice.
    list.retain(|d| d["digest"] != descriptor["digest"]);
    list.push(descriptor);
    Some(subject)
}

/// Annotations as the stand-in records them (for comparing with what portcullis lists).
pub fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
