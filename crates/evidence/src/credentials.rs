//! Registry credentials: the docker `config.json` format (a file, or the content of a pod's
//! pull secret), and the `PullSecretSource` seam that reads a pod's `imagePullSecrets` and its
//! service account's pull secrets through the Kubernetes API.
//!
//! Precedence when reading a registry (see `docs/signatures.md`): `registries[].credentials`,
//! then the pod's pull secrets (in the order the pod and its service account list them), then
//! `evidence.dockerConfigFile`, then anonymous.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use serde::Deserialize;

use portcullis_core::workload::PullRefs;

/// How to authenticate to one registry.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub enum Credential {
    #[default]
    Anonymous,
    /// Username and password (also used to answer a bearer-token challenge).
    Basic { username: String, password: String },
}

impl fmt::Debug for Credential {
    // Never print a password, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

impl Credential {
    /// A short, non-secret label for logs and cache keys (`anonymous`, `basic:alice#1a2b3c4d`).
    /// The suffix is a hash of the password, so a rotated password gets a new client.
    pub fn label(&self) -> String {
        use sha2::{Digest, Sha256};
        match self {
            Credential::Anonymous => "anonymous".into(),
            Credential::Basic { username, password } => {
                let hash = Sha256::digest(password.as_bytes());
                format!("basic:{username}#{}", hex::encode(&hash[..4]))
            }
        }
    }
}

/// Credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin} is not a docker config.json: {source}")]
    DockerConfig {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{origin}: entry for {registry:?} has an `auth` that is not base64 user:password")]
    BadAuth { origin: String, registry: String },
    #[error("cannot read {what} from the Kubernetes API: {source}")]
    Kubernetes {
        what: String,
        #[source]
        source: kube::Error,
    },
}

#[derive(Debug, Deserialize, Default)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuthEntry>,
}

#[derive(Debug, Deserialize, Default)]
struct DockerAuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The `auths` of a docker `config.json`, by registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerConfig {
    auths: BTreeMap<String, Credential>,
}

impl DockerConfig {
    /// Parses `config.json` (or a `.dockerconfigjson` secret value). `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, CredentialError> {
        let file: DockerConfigFile =
            serde_json::from_slice(bytes).map_err(|source| CredentialError::DockerConfig {
                origin: origin.to_owned(),
                source,
            })?;
        Self::from_entries(file.auths, origin)
    }

    /// Parses the legacy `.dockercfg` format (the `auths` map without the wrapper).
    pub fn parse_legacy(bytes: &[u8], origin: &str) -> Result<Self, CredentialError> {
        let auths: BTreeMap<String, DockerAuthEntry> =
            serde_json::from_slice(bytes).map_err(|source| CredentialError::DockerConfig {
                origin: origin.to_owned(),
                source,
            })?;
        Self::from_entries(auths, origin)
    }

    /// Reads a `config.json` file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, CredentialError> {
        let bytes = std::fs::read(path).map_err(|source| CredentialError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&bytes, &path.display().to_string())
    }

    fn from_entries(
        entries: BTreeMap<String, DockerAuthEntry>,
        origin: &str,
    ) -> Result<Self, CredentialError> {
        let mut auths = BTreeMap::new();
        for (key, entry) in entries {
            let host = registry_host_of(&key);
            let credential = match (&entry.auth, &entry.username, &entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    decode_auth(auth).ok_or_else(|| CredentialError::BadAuth {
                        origin: origin.to_owned(),
                        registry: key.clone(),
                    })?
                }
                (_, Some(username), Some(password)) => Credential::Basic {
                    username: username.clone(),
                    password: password.clone(),
                },
                // Entries with only an identity token or a credential helper: not usable here.
                _ => continue,
            };
            auths.insert(host, credential);
        }
        Ok(Self { auths })
    }

    /// The credential for a registry host (`docker.io` also matches Docker Hub's legacy keys).
    pub fn for_registry(&self, host: &str) -> Option<&Credential> {
        self.auths.get(&registry_host_of(host))
    }

    pub fn is_empty(&self) -> bool {
        self.auths.is_empty()
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://ghcr.io` → `ghcr.io`; `host:5000/` →
/// `host:5000`. The key forms docker and kubectl write.
fn registry_host_of(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        other => other.to_ascii_lowercase(),
    }
}

fn decode_auth(auth: &str) -> Option<Credential> {
    let decoded = BASE64.decode(auth.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credential::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// A boxed future for the object-safe trait below.
pub type PullSecretFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<DockerConfig>, CredentialError>> + Send + 'a>>;

/// Reads the docker configs of a pod's pull secrets: first the pod's own `imagePullSecrets`,
/// then those of its service account (`default` when it names none), in that order.
pub trait PullSecretSource: Send + Sync + fmt::Debug {
    fn docker_configs<'a>(&'a self, namespace: &'a str, pull: &'a PullRefs)
    -> PullSecretFuture<'a>;
}

/// Pull secrets through the Kubernetes API (`get` on secrets and serviceaccounts).
#[derive(Clone)]
pub struct KubePullSecrets {
    client: kube::Client,
}

impl fmt::Debug for KubePullSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KubePullSecrets")
    }
}

impl KubePullSecrets {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    async fn collect(
        &self,
        namespace: &str,
        pull: &PullRefs,
    ) -> Result<Vec<DockerConfig>, CredentialError> {
        let mut names: Vec<String> = pull.image_pull_secrets.clone();
        let account_name = pull.service_account.as_deref().unwrap_or("default");
        let accounts: kube::Api<ServiceAccount> =
            kube::Api::namespaced(self.client.clone(), namespace);
        // A missing service account is not an error here: the API server would refuse such a
        // pod anyway, and its own pull secrets still count.
        let account =
            accounts
                .get_opt(account_name)
                .await
                .map_err(|source| CredentialError::Kubernetes {
                    what: format!("serviceaccount {namespace}/{account_name}"),
                    source,
                })?;
        for reference in account
            .and_then(|a| a.image_pull_secrets)
            .into_iter()
            .flatten()
        {
            if !reference.name.is_empty() && !names.contains(&reference.name) {
                names.push(reference.name);
            }
        }
        let secrets: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), namespace);
        let mut configs = Vec::new();
        for name in names {
            // Like the kubelet, a missing pull secret is skipped, not fatal.
            let Some(secret) =
                secrets
                    .get_opt(&name)
                    .await
                    .map_err(|source| CredentialError::Kubernetes {
                        what: format!("secret {namespace}/{name}"),
                        source,
                    })?
            else {
                tracing::debug!(namespace, secret = %name, "pull secret not found; skipped");
                continue;
            };
            if let Some(config) = docker_config_of_secret(&secret, &format!("{namespace}/{name}"))?
            {
                configs.push(config);
            }
        }
        Ok(configs)
    }
}

/// The docker config a pull secret carries (`kubernetes.io/dockerconfigjson` or the legacy
/// `kubernetes.io/dockercfg`); `None` for other secret types.
pub fn docker_config_of_secret(
    secret: &Secret,
    origin: &str,
) -> Result<Option<DockerConfig>, CredentialError> {
    let data = secret.data.as_ref();
    match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => data
            .and_then(|d| d.get(".dockerconfigjson"))
            .map(|bytes| DockerConfig::parse(&bytes.0, &format!("secret {origin}")))
            .transpose(),
        Some("kubernetes.io/dockercfg") => data
            .and_then(|d| d.get(".dockercfg"))
            .map(|bytes| DockerConfig::parse_legacy(&bytes.0, &format!("secret {origin}")))
            .transpose(),
        _ => Ok(None),
    }
}

impl PullSecretSource for KubePullSecrets {
    fn docker_configs<'a>(
        &'a self,
        namespace: &'a str,
        pull: &'a PullRefs,
    ) -> PullSecretFuture<'a> {
        Box::pin(self.collect(namespace, pull))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_entries_decode_and_keys_normalise() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "YWxpY2U6czNjcmV0"},
            "127.0.0.1:5000": {"username": "bob", "password": "pw"},
            "ghcr.io": {"identitytoken": "x"}
        }}"#;
        let config = DockerConfig::parse(json, "test").unwrap();
        assert_eq!(
            config.for_registry("docker.io"),
            Some(&Credential::Basic {
                username: "alice".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            config.for_registry("127.0.0.1:5000"),
            Some(&Credential::Basic {
                username: "bob".into(),
                password: "pw".into()
            })
        );
        assert_eq!(config.for_registry("ghcr.io"), None);
    }

    #[test]
    fn a_broken_auth_is_an_error_naming_the_registry() {
        let err = DockerConfig::parse(br#"{"auths": {"r.io": {"auth": "!!!"}}}"#, "f")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("r.io"), "{err}");
    }

    #[test]
    fn debug_never_prints_the_password() {
        let credential = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{credential:?}").contains("hunter2"));
        assert!(!credential.label().contains("hunter2"));
    }
}
