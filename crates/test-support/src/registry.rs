//! Real registries for the registry tests and benchmarks: Debian's `docker-registry`
//! (distribution 2.8) on 127.0.0.1 (plain HTTP, TLS with a generated CA, or htpasswd basic
//! auth), OCI image layouts built here and pushed with `skopeo copy`, and two Cosign signers:
//! the `sigstore` crate, and an independent one written from Cosign's signature spec with the
//! `p256` crate; plus a private Sigstore-style CA and log for keyless signatures.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::install_crypto_provider;
use crate::tls::TestCa;

/// How the registry is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Tls,
    Htpasswd { user: String, password: String },
}

/// A `docker-registry` process on 127.0.0.1, stopped when dropped.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub host: String,
    pub mode: Mode,
    /// PEM of the CA that signed the registry's certificate (TLS mode).
    pub ca_pem: Option<String>,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
}

/// A port nothing listens on right now (bound and released), on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Registry {
    pub fn start(mode: Mode) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut ca_pem = None;
        let mut extra = String::new();
        match &mode {
            Mode::Plain => {}
            Mode::Tls => {
                let ca = TestCa::new();
                let (cert, key, _) = ca.leaf();
                std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
                std::fs::write(dir.path().join("tls.key"), key).unwrap();
                // skopeo's --dest-cert-dir wants the CA as `ca.crt` in a folder.
                std::fs::create_dir_all(dir.path().join("certs")).unwrap();
                std::fs::write(dir.path().join("certs/ca.crt"), ca.pem()).unwrap();
                ca_pem = Some(ca.pem());
                extra.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    dir.path().join("tls.crt").display(),
                    dir.path().join("tls.key").display()
                ));
            }
            Mode::Htpasswd { user, password } => {
                let output = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd (apache2-utils) is installed by scripts/install-test-deps");
                assert!(output.status.success());
                std::fs::write(dir.path().join("htpasswd"), &output.stdout).unwrap();
            }
        }
        let auth = match &mode {
            Mode::Htpasswd { .. } => format!(
                "auth:\n  htpasswd:\n    realm: portcullis-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ),
            _ => String::new(),
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  \
                 filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{extra}{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let mut registry = Self {
            dir,
            host,
            mode,
            ca_pem,
            child: None,
            config,
            log,
        };
        registry.resume();
        registry
    }

    /// Starts (again) the registry process on the same port and storage.
    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("docker-registry is installed by scripts/install-test-deps");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(&self.host).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "registry on {} did not start: {}",
            self.host,
            self.log_text()
        );
    }

    /// Stops the process (storage is kept).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Access-log lines for `METHOD path` (exact path, e.g. `/v2/team/app/manifests/v1`).
    pub fn requests(&self, method: &str, path: &str) -> usize {
        let needle = format!("\"{method} {path} HTTP");
        self.log_text().matches(&needle).count()
    }

    /// Access-log lines of every request the registry served so far.
    pub fn request_count(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|line| line.contains(" HTTP/1.1\"") || line.contains(" HTTP/2.0\""))
            .count()
    }

    /// Every access-log line for manifests of `repository`.
    pub fn manifest_requests(&self, repository: &str) -> Vec<String> {
        let needle = format!("/v2/{repository}/manifests/");
        self.log_text()
            .lines()
            .filter(|line| line.contains(&needle) && line.contains(" HTTP/"))
            .map(str::to_owned)
            .collect()
    }

    /// oci-client settings to reach this registry.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig {
            protocol: if self.mode == Mode::Tls {
                ClientProtocol::Https
            } else {
                ClientProtocol::Http
            },
            ..ClientConfig::default()
        };
        if let Some(pem) = &self.ca_pem {
            config
                .extra_root_certificates
                .push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.as_bytes().to_vec(),
                });
        }
        config
    }

    pub fn auth(&self) -> RegistryAuth {
        match &self.mode {
            Mode::Htpasswd { user, password } => {
                RegistryAuth::Basic(user.clone(), password.clone())
            }
            _ => RegistryAuth::Anonymous,
        }
    }

    /// The `registries[]` entry portcullis needs for this registry (without credentials).
    pub fn registry_yaml(&self) -> String {
        match self.mode {
            Mode::Tls => {
                let ca = self.dir.path().join("certs/ca.crt");
                format!(
                    "registries:\n  - host: \"{}\"\n    caFile: {}\n",
                    self.host,
                    ca.display()
                )
            }
            _ => format!(
                "registries:\n  - host: \"{}\"\n    insecure: true\n",
                self.host
            ),
        }
    }

    /// Pushes an OCI layout's `tag` to `repository:tag` with skopeo, keeping digests.
    pub fn push_layout(&self, layout: &Path, tag: &str, repository: &str) {
        let mut command = Command::new("skopeo");
        command
            .arg("copy")
            .arg("--quiet")
            .arg("--preserve-digests")
            .arg("--all");
        match &self.mode {
            Mode::Tls => {
                command
                    .arg("--dest-cert-dir")
                    .arg(self.dir.path().join("certs"));
            }
            _ => {
                command.arg("--dest-tls-verify=false");
            }
        }
        if let Mode::Htpasswd { user, password } = &self.mode {
            command
                .arg("--dest-creds")
                .arg(format!("{user}:{password}"));
        }
        let output = command
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repository}:{tag}", self.host))
            .output()
            .expect("skopeo is installed by scripts/install-test-deps");
        assert!(
            output.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What goes into one test image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub marker: String,
    pub arch: String,
    pub user: String,
    pub ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub created: String,
    pub base_name: Option<String>,
    /// `org.opencontainers.image.base.digest`; a fixed placeholder when unset.
    pub base_digest: Option<String>,
}

impl ImageSpec {
    pub fn new(marker: &str) -> Self {
        Self {
            marker: marker.to_owned(),
            arch: "amd64".into(),
            user: "1000".into(),
            ports: vec!["8080/tcp".into()],
            labels: BTreeMap::from([("team".to_owned(), "shop".to_owned())]),
            created: "2026-11-01T10:00:00Z".into(),
            base_name: Some("docker.io/library/alpine:3.20".into()),
            base_digest: None,
        }
    }
    pub fn arch(mut self, arch: &str) -> Self {
        self.arch = arch.into();
        self
    }
}

/// An OCI image layout on disk, built blob by blob.
pub struct Layout {
    pub dir: tempfile::TempDir,
    entries: Vec<Value>,
}

impl Default for Layout {
    fn default() -> Self {
        Self::new()
    }
}

/// A blob written to the layout: (digest, size).
type Blob = (String, usize);

impl Layout {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Self {
            dir,
            entries: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn blob(&self, bytes: &[u8]) -> Blob {
        let hex = sha256_hex(bytes);
        std::fs::write(self.dir.path().join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    }

    /// Writes one image (layer, config, manifest); returns the manifest's digest and size.
    fn image(&self, spec: &ImageSpec) -> Blob {
        let mut tar = tar::Builder::new(Vec::new());
        let content = format!("portcullis test image {}\n", spec.marker);
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "marker.txt", content.as_bytes())
            .unwrap();
        let layer = tar.into_inner().unwrap();
        let (layer_digest, layer_size) = self.blob(&layer);
        let ports: serde_json::Map<String, Value> =
            spec.ports.iter().map(|p| (p.clone(), json!({}))).collect();
        let config = json!({
            "created": spec.created,
            "architecture": spec.arch,
            "os": "linux",
            "config": {"User": spec.user, "ExposedPorts": ports, "Labels": spec.labels},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        });
        let (config_digest, config_size) = self.blob(&serde_json::to_vec(&config).unwrap());
        let mut annotations = serde_json::Map::new();
        annotations.insert(
            "org.opencontainers.image.created".into(),
            json!(spec.created),
        );
        if let Some(base) = &spec.base_name {
            annotations.insert("org.opencontainers.image.base.name".into(), json!(base));
            annotations.insert(
                "org.opencontainers.image.base.digest".into(),
                json!(
                    spec.base_digest
                        .clone()
                        .unwrap_or_else(|| format!("sha256:{}", "b".repeat(64)))
                ),
            );
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}],
            "annotations": annotations,
        });
        self.blob(&serde_json::to_vec(&manifest).unwrap())
    }

    fn tag(&mut self, tag: &str, media_type: &str, (digest, size): Blob) {
        self.entries.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        let index = json!({"schemaVersion": 2, "manifests": self.entries});
        std::fs::write(
            self.dir.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// Adds a single-platform image under `tag`; returns its digest.
    pub fn single(&mut self, tag: &str, spec: &ImageSpec) -> String {
        let manifest = self.image(spec);
        let digest = manifest.0.clone();
        self.tag(tag, "application/vnd.oci.image.manifest.v1+json", manifest);
        digest
    }

    /// Adds a multi-arch index under `tag`; returns (index digest, [(platform, child digest)]).
    pub fn multi(&mut self, tag: &str, specs: &[ImageSpec]) -> (String, Vec<(String, String)>) {
        let mut children = Vec::new();
        let mut manifests = Vec::new();
        for spec in specs {
            let (digest, size) = self.image(spec);
            manifests.push(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": size,
                "platform": {"os": "linux", "architecture": spec.arch},
            }));
            children.push((format!("linux/{}", spec.arch), digest));
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let blob = self.blob(&serde_json::to_vec(&index).unwrap());
        let digest = blob.0.clone();
        self.tag(tag, "application/vnd.oci.image.index.v1+json", blob);
        (digest, children)
    }
}

/// Cosign's simple-signing payload, byte for byte as cosign writes it.
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"{docker_reference}\"}},\"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
    )
    .into_bytes()
}

/// An ECDSA P-256 key used by the independent signer (p256 crate, not sigstore).
pub struct IndependentKey {
    key: p256::ecdsa::SigningKey,
}

impl IndependentKey {
    pub fn generate() -> Self {
        Self {
            key: p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng),
        }
    }

    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
    }

    /// ECDSA-P256-SHA256 over the exact bytes, ASN.1 DER, base64: what cosign puts in the
    /// `dev.cosignproject.cosign/signature` annotation.
    pub fn sign_base64(&self, bytes: &[u8]) -> String {
        let signature: p256::ecdsa::Signature = self.key.sign(bytes);
        BASE64.encode(signature.to_der().as_bytes())
    }

    /// Raw DER signature (for DSSE envelopes).
    pub fn sign_der(&self, bytes: &[u8]) -> Vec<u8> {
        let signature: p256::ecdsa::Signature = self.key.sign(bytes);
        signature.to_der().as_bytes().to_vec()
    }
}

/// Pushes a `.sig` manifest (Cosign's tag scheme) with the given (payload, base64 signature)
/// layers, replacing any previous one.
pub async fn push_signature_layers(
    registry: &Registry,
    repository: &str,
    digest: &str,
    layers: &[(Vec<u8>, String)],
) {
    let layers: Vec<ImageLayer> = layers
        .iter()
        .map(|(payload, signature)| {
            ImageLayer::new(
                payload.clone(),
                "application/vnd.dev.cosign.simplesigning.v1+json".into(),
                Some(BTreeMap::from([(
                    "dev.cosignproject.cosign/signature".to_owned(),
                    signature.clone(),
                )])),
            )
        })
        .collect();
    push_artifact(registry, repository, &cosign_tag(digest, "sig"), layers).await;
}

/// Cosign's tag for an artefact of `digest`: `sha256-<hex>.sig` or `.att` (written here from
/// Cosign's spec, not taken from the library under test).
fn cosign_tag(digest: &str, suffix: &str) -> String {
    format!("{}.{suffix}", digest.replace(':', "-"))
}

async fn push_artifact(registry: &Registry, repository: &str, tag: &str, layers: Vec<ImageLayer>) {
    install_crypto_provider();
    let client = Client::new(registry.client_config());
    let reference = Reference::with_tag(registry.host.clone(), repository.into(), tag.into());
    client
        .auth(
            &reference,
            &registry.auth(),
            oci_client::RegistryOperation::Push,
        )
        .await
        .unwrap();
    let config = Config::oci_v1(b"{}".to_vec(), None);
    client
        .push_blob(&reference, config.data.clone(), &config.sha256_digest())
        .await
        .unwrap();
    for layer in &layers {
        client
            .push_blob(&reference, layer.data.clone(), &layer.sha256_digest())
            .await
            .unwrap();
    }
    let mut manifest = OciImageManifest::build(&layers, &config, None);
    manifest.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
    // Plain serde_json, as cosign (Go) writes it: oci-client's canonical form leaves the
    // newlines of a PEM certificate unescaped, which distribution refuses.
    client
        .push_manifest_raw(
            &reference,
            serde_json::to_vec(&manifest).unwrap(),
            "application/vnd.oci.image.manifest.v1+json"
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
}

/// Signs Cosign simple-signing payloads (base64 signatures).
pub trait PayloadSigner {
    fn sign_payload(&self, payload: &[u8]) -> String;
}

impl PayloadSigner for IndependentKey {
    fn sign_payload(&self, payload: &[u8]) -> String {
        self.sign_base64(payload)
    }
}

/// Signs `digest` of `repository` (Cosign's `.sig` tag scheme, one layer whose payload names
/// `registry/repository`), replacing any previous signature.
pub async fn sign_image(
    registry: &Registry,
    repository: &str,
    digest: &str,
    key: &dyn PayloadSigner,
) {
    let payload = simple_signing_payload(&format!("{}/{repository}", registry.host), digest);
    let signature = key.sign_payload(&payload);
    push_signature_layers(registry, repository, digest, &[(payload, signature)]).await;
}

/// Signs DSSE pre-authentication encodings (ASN.1 DER ECDSA signatures).
pub trait EnvelopeSigner {
    fn sign_envelope(&self, pae: &[u8]) -> Vec<u8>;
}

impl EnvelopeSigner for IndependentKey {
    fn sign_envelope(&self, pae: &[u8]) -> Vec<u8> {
        self.sign_der(pae)
    }
}

/// A P-256 key of the sigstore crate (`SigningScheme::ECDSA_P256_SHA256_ASN1`), for
/// signatures and attestations made by the library that also verifies them.
pub struct SigstoreKey {
    signer: sigstore::crypto::SigStoreSigner,
    pub public_pem: String,
}

impl SigstoreKey {
    pub fn generate() -> Self {
        install_crypto_provider();
        let signer = sigstore::crypto::SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .unwrap();
        let public_pem = signer
            .to_sigstore_keypair()
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        Self { signer, public_pem }
    }

    pub fn sign_base64(&self, bytes: &[u8]) -> String {
        BASE64.encode(self.signer.sign(bytes).unwrap())
    }
}

impl PayloadSigner for SigstoreKey {
    fn sign_payload(&self, payload: &[u8]) -> String {
        self.sign_base64(payload)
    }
}

impl EnvelopeSigner for SigstoreKey {
    fn sign_envelope(&self, pae: &[u8]) -> Vec<u8> {
        self.signer.sign(pae).unwrap()
    }
}

const IN_TOTO: &str = "application/vnd.in-toto+json";

/// An in-toto statement of `predicate` about `subject_digest` in `repository`, and its DSSE
/// pre-authentication encoding (what the envelope's signature signs).
fn in_toto_statement(
    registry: &Registry,
    repository: &str,
    predicate_type: &str,
    predicate: &Value,
    subject_digest: &str,
) -> (Vec<u8>, Vec<u8>) {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": predicate_type,
        "subject": [{"name": format!("{}/{repository}", registry.host),
                     "digest": {"sha256": subject_digest.trim_start_matches("sha256:")}}],
        "predicate": predicate,
    });
    let payload = serde_json::to_vec(&statement).unwrap();
    let mut pae = format!("DSSEv1 {} {IN_TOTO} {} ", IN_TOTO.len(), payload.len()).into_bytes();
    pae.extend_from_slice(&payload);
    (payload, pae)
}

/// Pushes a `.att` manifest with DSSE envelopes (`cosign attest`'s classic format) carrying
/// in-toto statements about `digest`, each signed by `key`.
pub async fn push_attestations(
    registry: &Registry,
    repository: &str,
    digest: &str,
    key: &dyn EnvelopeSigner,
    predicates: &[(&str, Value, &str)],
) {
    let layers = predicates
        .iter()
        .map(|(predicate_type, predicate, subject_digest)| {
            let (payload, pae) = in_toto_statement(
                registry,
                repository,
                predicate_type,
                predicate,
                subject_digest,
            );
            let envelope = json!({
                "payloadType": IN_TOTO,
                "payload": BASE64.encode(&payload),
                "signatures": [{"keyid": "", "sig": BASE64.encode(key.sign_envelope(&pae))}],
            });
            ImageLayer::new(
                serde_json::to_vec(&envelope).unwrap(),
                "application/vnd.dsse.envelope.v1+json".into(),
                Some(BTreeMap::from([(
                    "predicateType".to_owned(),
                    (*predicate_type).to_owned(),
                )])),
            )
        })
        .collect();
    push_artifact(registry, repository, &cosign_tag(digest, "att"), layers).await;
}

/// Signs `digest` with the sigstore crate (a fresh key of `scheme`) and pushes the signature
/// with sigstore's own `push_signature`. Returns the public key PEM.
pub async fn sigstore_sign(
    registry: &Registry,
    repository: &str,
    digest: &str,
    scheme: sigstore::crypto::SigningScheme,
) -> String {
    use sigstore::cosign::{ClientBuilder, CosignCapabilities, SignatureLayer};
    use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};
    install_crypto_provider();
    let signer = scheme.create_signer().unwrap();
    let public_pem = signer
        .to_sigstore_keypair()
        .unwrap()
        .public_key_to_pem()
        .unwrap();
    let image = OciReference::with_tag(registry.host.clone(), repository.into(), "unused".into());
    let image: OciReference = format!("{}/{repository}", registry.host)
        .parse()
        .unwrap_or(image);
    let mut layer = SignatureLayer::new_unsigned(&image, digest).unwrap();
    layer.signature = Some(BASE64.encode(signer.sign(&layer.raw_data).unwrap()));
    let mut config = ClientConfig::default();
    match registry.mode {
        Mode::Tls => {
            config
                .extra_root_certificates
                .push(sigstore::registry::Certificate {
                    encoding: sigstore::registry::CertificateEncoding::Pem,
                    data: registry.ca_pem.clone().unwrap().into_bytes(),
                });
        }
        _ => config.protocol = ClientProtocol::Http,
    }
    let mut client = ClientBuilder::default()
        .with_oci_client_config(config)
        .build()
        .unwrap();
    let auth = match &registry.mode {
        Mode::Htpasswd { user, password } => Auth::Basic(user.clone(), password.clone()),
        _ => Auth::Anonymous,
    };
    let target = OciReference::with_tag(
        registry.host.clone(),
        repository.into(),
        cosign_tag(digest, "sig"),
    );
    client
        .push_signature(None, &auth, &target, vec![layer])
        .await
        .unwrap();
    public_pem
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    path
}

/// Pushes a `.sig` manifest whose layers carry any annotations (certificate, Rekor bundle).
pub async fn push_signature_layers_annotated(
    registry: &Registry,
    repository: &str,
    digest: &str,
    layers: Vec<(Vec<u8>, BTreeMap<String, String>)>,
) {
    let layers = layers
        .into_iter()
        .map(|(payload, annotations)| {
            ImageLayer::new(
                payload,
                "application/vnd.dev.cosign.simplesigning.v1+json".into(),
                Some(annotations),
            )
        })
        .collect();
    push_artifact(registry, repository, &cosign_tag(digest, "sig"), layers).await;
}

/// A private Sigstore-style deployment made by the test: a Fulcio-like CA issuing short-lived
/// code-signing certificates with the OIDC issuer extension, and a Rekor-like log key that
/// signs bundle entries (the Signed Entry Timestamp). Its `trusted_root_json` names both.
pub struct PrivateSigstore {
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_der: Vec<u8>,
    rekor: p256::ecdsa::SigningKey,
}

impl Default for PrivateSigstore {
    fn default() -> Self {
        Self::new()
    }
}

/// A keyless signing identity: its certificate (PEM) and the key it certifies.
pub struct KeylessSigner {
    pub certificate_pem: String,
    key: IndependentKey,
}

impl PrivateSigstore {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test fulcio");
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ca = CertifiedIssuer::self_signed(params, key).unwrap();
        let ca_der = ca.der().to_vec();
        Self {
            ca,
            ca_der,
            rekor: p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng),
        }
    }

    fn rekor_der(&self) -> Vec<u8> {
        self.rekor
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    /// The Sigstore `TrustedRoot` document naming this CA and this log.
    pub fn trusted_root_json(&self) -> String {
        let rekor = self.rekor_der();
        json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.test.invalid",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": BASE64.encode(&rekor),
                              "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                              "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": BASE64.encode(Sha256::digest(&rekor))}
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "test", "commonName": "test fulcio"},
                "uri": "https://fulcio.test.invalid",
                "certChain": {"certificates": [{"rawBytes": BASE64.encode(&self.ca_der)}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            }],
            "ctlogs": [],
            "timestampAuthorities": []
        })
        .to_string()
    }

    /// A code-signing certificate for `subject` (an email) from OIDC `issuer`, valid from
    /// `not_before` for `minutes`.
    pub fn issue(
        &self,
        issuer: &str,
        subject: &str,
        not_before: time::OffsetDateTime,
        minutes: i64,
    ) -> KeylessSigner {
        let key = IndependentKey::generate();
        let pem = key
            .key
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string();
        let rcgen_key = KeyPair::from_pem(&pem).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(subject.try_into().unwrap())];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.not_before = not_before;
        params.not_after = not_before + time::Duration::minutes(minutes);
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
            issuer.as_bytes().to_vec(),
        )];
        let certificate = params.signed_by(&rcgen_key, &self.ca).unwrap();
        KeylessSigner {
            certificate_pem: certificate.pem(),
            key,
        }
    }

    /// Cosign's bundle annotation for a signature made at `integrated_time`: the Rekor
    /// entry and its Signed Entry Timestamp (the log key over the canonical JSON payload).
    pub fn bundle(
        &self,
        signature_b64: &str,
        certificate_pem: &str,
        payload: &[u8],
        integrated_time: i64,
    ) -> String {
        let body = json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {"data": {"hash": {"algorithm": "sha256", "value": sha256_hex(payload)}},
                     "signature": {"content": signature_b64,
                                   "publicKey": {"content": BASE64.encode(certificate_pem)}}}
        });
        self.logged(&body, integrated_time)
    }

    /// Cosign's bundle annotation for a keyless attestation: an `intoto` (0.0.2) Rekor entry
    /// naming `entry_payload`'s hash and the certificate, and its Signed Entry Timestamp.
    pub fn intoto_bundle(
        &self,
        signature_der: &[u8],
        certificate_pem: &str,
        entry_payload: &[u8],
        envelope: &[u8],
        integrated_time: i64,
    ) -> String {
        let body = json!({
            "apiVersion": "0.0.2", "kind": "intoto",
            "spec": {"content": {
                "envelope": {"payloadType": "application/vnd.in-toto+json",
                             "signatures": [{"publicKey": BASE64.encode(certificate_pem),
                                             "sig": BASE64.encode(BASE64.encode(signature_der))}]},
                "hash": {"algorithm": "sha256", "value": sha256_hex(envelope)},
                "payloadHash": {"algorithm": "sha256", "value": sha256_hex(entry_payload)}
            }}
        });
        self.logged(&body, integrated_time)
    }

    /// A Rekor bundle for `body` logged at `integrated_time`.
    fn logged(&self, body: &Value, integrated_time: i64) -> String {
        let body = BASE64.encode(body.to_string());
        let log_id = sha256_hex(&self.rekor_der());
        // RFC 8785 canonical form: keys sorted, no spaces.
        let canonical = format!(
            "{{\"body\":\"{body}\",\"integratedTime\":{integrated_time},\"logID\":\"{log_id}\",\"logIndex\":7}}"
        );
        let set: p256::ecdsa::Signature = self.rekor.sign(canonical.as_bytes());
        json!({
            "SignedEntryTimestamp": BASE64.encode(set.to_der().as_bytes()),
            "Payload": {"body": body, "integratedTime": integrated_time, "logIndex": 7, "logID": log_id}
        })
        .to_string()
    }
}

/// Pushes a `.att` manifest with one keyless DSSE attestation of `predicate` about `digest`:
/// signed by `signer`, with the certificate annotation and a Rekor bundle from `log` whose
/// entry records `entry_payload` (the real payload unless a test wants a mismatch).
#[allow(clippy::too_many_arguments)] // reason: each case varies a different one
pub async fn push_keyless_attestation(
    registry: &Registry,
    repository: &str,
    digest: &str,
    signer: &KeylessSigner,
    log: &PrivateSigstore,
    predicate: (&str, Value),
    entry_payload: Option<&[u8]>,
    integrated_time: i64,
) {
    let (predicate_type, predicate) = predicate;
    let (payload, pae) =
        in_toto_statement(registry, repository, predicate_type, &predicate, digest);
    let signature = signer.key.sign_der(&pae);
    let envelope = serde_json::to_vec(&json!({
        "payloadType": IN_TOTO,
        "payload": BASE64.encode(&payload),
        "signatures": [{"keyid": "", "sig": BASE64.encode(&signature)}],
    }))
    .unwrap();
    let bundle = log.intoto_bundle(
        &signature,
        &signer.certificate_pem,
        entry_payload.unwrap_or(&payload),
        &envelope,
        integrated_time,
    );
    let layer = ImageLayer::new(
        envelope,
        "application/vnd.dsse.envelope.v1+json".into(),
        Some(BTreeMap::from([
            ("predicateType".to_owned(), predicate_type.to_owned()),
            (
                "dev.sigstore.cosign/certificate".to_owned(),
                signer.certificate_pem.clone(),
            ),
            ("dev.sigstore.cosign/bundle".to_owned(), bundle),
        ])),
    );
    push_artifact(
        registry,
        repository,
        &cosign_tag(digest, "att"),
        vec![layer],
    )
    .await;
}

impl KeylessSigner {
    /// The `.sig` layer annotations for `payload`, with a bundle from `sigstore` made at
    /// `integrated_time` (`None`: no bundle).
    pub fn annotations(
        &self,
        sigstore: Option<(&PrivateSigstore, i64)>,
        payload: &[u8],
    ) -> BTreeMap<String, String> {
        let signature = self.key.sign_base64(payload);
        let mut annotations = BTreeMap::from([
            (
                "dev.cosignproject.cosign/signature".to_owned(),
                signature.clone(),
            ),
            (
                "dev.sigstore.cosign/certificate".to_owned(),
                self.certificate_pem.clone(),
            ),
        ]);
        if let Some((log, integrated_time)) = sigstore {
            annotations.insert(
                "dev.sigstore.cosign/bundle".to_owned(),
                log.bundle(&signature, &self.certificate_pem, payload, integrated_time),
            );
        }
        annotations
    }
}

/// The OCI empty descriptor's media type (`{}` as a blob), the config of artefacts.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// An artefact manifest to push as a referrer of a subject.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The manifest's `artifactType`; when `None`, the config's media type stands for it.
    pub artifact_type: Option<String>,
    pub config_media_type: String,
    pub annotations: BTreeMap<String, String>,
    /// The one layer's content (its media type is `artifact_type` or the config's).
    pub payload: Vec<u8>,
}

impl Artifact {
    pub fn of_type(artifact_type: &str, payload: &str) -> Self {
        Self {
            artifact_type: Some(artifact_type.to_owned()),
            config_media_type: OCI_EMPTY.to_owned(),
            annotations: BTreeMap::new(),
            payload: payload.as_bytes().to_vec(),
        }
    }
    pub fn annotated(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }
}

fn plain_client() -> Client {
    install_crypto_provider();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}

/// The descriptor (mediaType, digest, size) of the manifest `digest` in `repository` on
/// `host` (plain HTTP, anonymous).
pub async fn manifest_descriptor(host: &str, repository: &str, digest: &str) -> Value {
    let client = plain_client();
    let reference = Reference::with_digest(host.into(), repository.into(), digest.into());
    let (bytes, _) = client
        .pull_manifest_raw(
            &reference,
            &RegistryAuth::Anonymous,
            &[
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.index.v1+json",
            ],
        )
        .await
        .unwrap();
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    json!({"mediaType": manifest["mediaType"], "digest": digest, "size": bytes.len()})
}

/// Pushes `artifact` as a manifest whose `subject` is the manifest `subject` of `repository`,
/// to `host` over plain HTTP (the registry itself, or a referrers stand-in in front of it),
/// by digest. Returns its descriptor as a referrers index lists it.
pub async fn push_referrer(
    host: &str,
    repository: &str,
    subject: &str,
    artifact: &Artifact,
) -> Value {
    let client = plain_client();
    let subject = manifest_descriptor(host, repository, subject).await;
    let anchor = Reference::with_tag(host.into(), repository.into(), "unused".into());
    let layer_type = artifact
        .artifact_type
        .clone()
        .unwrap_or_else(|| artifact.config_media_type.clone());
    let config = b"{}".to_vec();
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    client
        .push_blob(&anchor, config.clone(), &config_digest)
        .await
        .unwrap();
    let layer_digest = format!("sha256:{}", sha256_hex(&artifact.payload));
    client
        .push_blob(&anchor, artifact.payload.clone(), &layer_digest)
        .await
        .unwrap();
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": artifact.config_media_type, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": artifact.payload.len()}],
        "subject": subject,
    });
    if let Some(artifact_type) = &artifact.artifact_type {
        manifest["artifactType"] = json!(artifact_type);
    }
    if !artifact.annotations.is_empty() {
        manifest["annotations"] = json!(artifact.annotations);
    }
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    let reference = Reference::with_digest(host.into(), repository.into(), digest.clone());
    client
        .push_manifest_raw(
            &reference,
            bytes.clone(),
            "application/vnd.oci.image.manifest.v1+json"
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    let mut descriptor = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest,
        "size": bytes.len(),
        "artifactType": artifact.artifact_type.clone().unwrap_or_else(|| artifact.config_media_type.clone()),
    });
    if !artifact.annotations.is_empty() {
        descriptor["annotations"] = json!(artifact.annotations);
    }
    descriptor
}

/// Writes the referrers tag schema by hand: an OCI index listing `descriptors` under the tag
/// `sha256-<hex>` of `subject` (what a client does for a registry without the referrers API).
pub async fn push_referrers_tag(
    host: &str,
    repository: &str,
    subject: &str,
    descriptors: &[Value],
) {
    let client = plain_client();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descriptors,
    });
    let reference = Reference::with_tag(host.into(), repository.into(), subject.replace(':', "-"));
    client
        .push_manifest_raw(
            &reference,
            serde_json::to_vec(&index).unwrap(),
            "application/vnd.oci.image.index.v1+json".parse().unwrap(),
        )
        .await
        .unwrap();
}
