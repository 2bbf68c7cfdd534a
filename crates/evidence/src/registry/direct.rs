//! Requests to open registries without oci-client's per-request probe. oci-client 0.18
//! caches only tokens, so for a registry whose `GET /v2/` answers without a challenge (an
//! in-cluster mirror, `docker-registry` without auth) it probes `/v2/` again before every
//! manifest and blob request — five of a cold verification's eleven requests. Whether a
//! registry is open is learnt here once per registry; manifests, blobs and tag resolutions for
//! open registries then go out directly (anonymous, as oci-client sends them to a registry that
//! never challenges), with the same digest checks, size caps and error kinds. A 401 from a
//! registry learnt open forgets that, and the request goes through oci-client.

use sha2::Digest as _;

use super::{
    Call, MANIFEST_MEDIA_TYPES, MAX_BLOB_BYTES, RegistryClient, RegistryError, Url, request_failed,
};
use oci_client::Reference;

/// Largest manifest read (image manifests and indexes are a few KiB).
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// What to fetch directly.
pub(super) enum Fetch<'a> {
    /// A manifest by tag or digest (the digest, when the reference has one, is checked).
    Manifest,
    /// A blob; its bytes must hash to `digest`.
    Blob { digest: &'a str },
    /// The digest a tag names now: `HEAD`, then `GET` when the registry sends no
    /// `Docker-Content-Digest`.
    Digest,
}

impl RegistryClient {
    /// Whether `GET /v2/` of this registry answers 200 without a challenge, asked once per
    /// registry (concurrent first requests share one probe) and remembered. `false`
    /// (oci-client's path) when it challenges or cannot be asked now: a transport failure is
    /// not remembered, so the next request asks again.
    pub(super) async fn is_open(&self, reference: &Reference, call: &Call) -> bool {
        let host = reference.registry().to_owned();
        self.open
            .try_get_with(host.clone(), async {
                let url = self.v2_url(reference, &[])?;
                let http = self.http_client_for(&host)?;
                self.requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let response = tokio::time::timeout_at(call.deadline, http.get(url).send())
                    .await
                    .map_err(|_| RegistryError::Timeout)?
                    .map_err(|err| request_failed(&err))?;
                Ok::<_, RegistryError>(
                    response.status() == reqwest13::StatusCode::OK
                        && !response
                            .headers()
                            .contains_key(reqwest13::header::WWW_AUTHENTICATE),
                )
            })
            .await
            .unwrap_or(false)
    }

    /// `<scheme>://<registry>/v2/<repository>/<tail…>` (`/v2/` for an empty tail and
    /// repository-less probe).
    pub(super) fn v2_url(
        &self,
        reference: &Reference,
        tail: &[&str],
    ) -> Result<Url, RegistryError> {
        let registry = reference.resolve_registry();
        let scheme = if self
            .endpoints
            .get(reference.registry())
            .is_some_and(|e| e.insecure)
        {
            "http"
        } else {
            "https"
        };
        let mut url = Url::parse(&format!("{scheme}://{registry}/")).map_err(|err| {
            RegistryError::config(format!("registry {registry} makes no URL: {err}")).caused_by(err)
        })?;
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| RegistryError::config(format!("registry {registry} makes no URL")))?;
            segments.clear().push("v2");
            if tail.is_empty() {
                segments.push("");
            } else {
                segments.extend(reference.repository().split('/'));
                segments.extend(tail);
            }
        }
        Ok(url)
    }

    /// One direct request (one attempt of [`RegistryClient::run`]).
    pub(super) async fn fetch_direct(
        &self,
        reference: &Reference,
        fetch: &Fetch<'_>,
    ) -> Result<Vec<u8>, RegistryError> {
        let http = self.http_client_for(reference.registry())?;
        let name = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_owned();
        let url = match fetch {
            Fetch::Blob { digest } => self.v2_url(reference, &["blobs", digest])?,
            Fetch::Manifest | Fetch::Digest => self.v2_url(reference, &["manifests", &name])?,
        };
        let accept = MANIFEST_MEDIA_TYPES.join(", ");
        if let Fetch::Digest = fetch {
            let response = http
                .head(url.clone())
                .header(reqwest13::header::ACCEPT, &accept)
                .send()
                .await
                .map_err(|err| request_failed(&err))?;
            check_status(response.status(), &url)?;
            if let Some(digest) = content_digest(&response) {
                return Ok(digest.into_bytes());
            }
        }
        let request = match fetch {
            Fetch::Blob { .. } => http.get(url.clone()),
            Fetch::Manifest | Fetch::Digest => http
                .get(url.clone())
                .header(reqwest13::header::ACCEPT, &accept),
        };
        let response = request.send().await.map_err(|err| request_failed(&err))?;
        check_status(response.status(), &url)?;
        let header = content_digest(&response);
        let cap = match fetch {
            Fetch::Blob { .. } => usize::try_from(MAX_BLOB_BYTES).unwrap_or(usize::MAX),
            Fetch::Manifest | Fetch::Digest => MAX_MANIFEST_BYTES,
        };
        let body = read_limited(response, &format!("the answer of {url}"), cap).await?;
        match fetch {
            Fetch::Blob { digest } => {
                verify(&body, digest, &url)?;
                Ok(body)
            }
            Fetch::Manifest => {
                // As oci-client: the reference's digest, else the registry's header, must match.
                if let Some(expected) = reference.digest().map(str::to_owned).or(header) {
                    verify(&body, &expected, &url)?;
                }
                Ok(body)
            }
            Fetch::Digest => Ok(digest_of(&body).into_bytes()),
        }
    }
}

pub(super) fn check_status(status: reqwest13::StatusCode, url: &Url) -> Result<(), RegistryError> {
    match status.as_u16() {
        200 => Ok(()),
        404 => Err(RegistryError::not_found(url.to_string())),
        401 | 403 => Err(RegistryError::unauthorized(url.to_string())),
        429 | 500..=599 => Err(RegistryError::unavailable(format!(
            "HTTP {status} from {url}"
        ))),
        _ => Err(RegistryError::protocol(format!("HTTP {status} from {url}"))),
    }
}

fn content_digest(response: &reqwest13::Response) -> Option<String> {
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| value.starts_with("sha256:") || value.starts_with("sha512:"))
        .map(str::to_owned)
}

fn digest_of(body: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(body))
}

/// The body hashes to `expected` (`sha256:` or `sha512:`).
fn verify(body: &[u8], expected: &str, url: &Url) -> Result<(), RegistryError> {
    let actual = match expected.split_once(':') {
        Some(("sha256", _)) => digest_of(body),
        Some(("sha512", _)) => format!("sha512:{:x}", sha2::Sha512::digest(body)),
        _ => {
            return Err(RegistryError::protocol(format!(
                "{url}: unsupported digest {expected}"
            )));
        }
    };
    if actual == expected {
        Ok(())
    } else {
        Err(RegistryError::protocol(format!(
            "{url} answered content whose digest is {actual}, not {expected}"
        )))
    }
}

/// The body of a response, refused beyond `cap` bytes (`what` names it in the error).
pub(super) async fn read_limited(
    mut response: reqwest13::Response,
    what: &str,
    cap: usize,
) -> Result<Vec<u8>, RegistryError> {
    let too_big = || RegistryError::protocol(format!("{what} is larger than {cap} bytes"));
    if response
        .content_length()
        .is_some_and(|length| length > cap as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| request_failed(&err))? {
        if body.len() + chunk.len() > cap {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
