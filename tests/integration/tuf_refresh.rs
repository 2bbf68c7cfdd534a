//! `sigstore.tuf`: the public-good trusted root fetched from a TUF repository built by
//! python-tuf (`tests/tools/tuf/tuf_repo.py`, the TUF reference implementation) and served on
//! 127.0.0.1, judged with keyless bundles from sigstore-js in the real registry: through
//! `portcullis verify` (fresh, cached, tampered) and a real `portcullis serve` that picks up a
//! new root published while it runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use portcullis_test_support::serve::ServeChild;
use serde_json::Value;

use crate::common;
use crate::sigstore_bundles::{ISSUER, SAN, Setup};

fn tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/tuf/tuf_repo.py")
}

fn python(args: &[&str]) -> String {
    let output = Command::new("python3")
        .arg(tool())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tuf_repo.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A TUF repository publishing `target` as `trusted_root.json`, served until dropped.
struct TufRepository {
    dir: tempfile::TempDir,
    server: Option<Child>,
    url: String,
}

impl TufRepository {
    fn publish(target: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut repository = Self {
            dir,
            server: None,
            url: String::new(),
        };
        repository.update(target);
        repository.start();
        repository
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn update(&self, target: &Path) {
        python(&[
            "publish",
            "--dir",
            &self.path(),
            "--target",
            &target.display().to_string(),
        ]);
    }

    fn start(&mut self) {
        let mut child = Command::new("python3")
            .arg(tool())
            .args(["serve", "--dir", &self.path()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .expect("the server printed its port");
        self.url = format!("http://127.0.0.1:{port}");
        self.server = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn bootstrap_root(&self) -> String {
        self.dir.path().join("root.json").display().to_string()
    }

    fn settings(&self, cache: &Path, refresh_seconds: u64) -> String {
        format!(
            "sigstore:\n  tuf:\n    url: {}\n    root: {}\n    cacheDir: {}\n    refreshIntervalSeconds: {refresh_seconds}\n",
            self.url,
            self.bootstrap_root(),
            cache.display()
        )
    }
}

impl Drop for TufRepository {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A keyless policy with no `trustedRoot`: it verifies against the public-good root in use.
fn policy(setup: &Setup, tuf: &str) -> String {
    let host = &setup.registry.host;
    let signatures =
        format!("      keyless:\n        - issuer: {ISSUER}\n          subject: {SAN}\n");
    setup.config(&setup.registry.registry_yaml(), host, tuf, &signatures)
}

fn verify(config: &str, dir: &Path, image: &str) -> Output {
    let path = dir.join(format!("config-{}.yaml", rand_suffix()));
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "verify",
            "-o",
            "json",
            "--config",
            &path.display().to_string(),
            image,
        ])
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn verify_uses_the_root_from_tuf_then_its_verified_cache_and_refuses_a_tampered_target() {
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let digest = setup.push_image("team/app", "tuf");
    setup.sign(&digest, "team/app", Some(&host), &[]);
    let image = format!("{host}/team/app:v1");
    let work = setup.work.path();

    // Without TUF: the embedded public-good root knows no mock CA.
    let output = verify(&policy(&setup, ""), work, &image);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));

    // The mock Sigstore's root published through TUF.
    let mut repository = TufRepository::publish(Path::new(&setup.root()));
    let cache = work.join("tuf-cache");
    let config = policy(&setup, &repository.settings(&cache, 3600));
    let output = verify(&config, work, &image);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "the Sigstore trusted root from TUF at {}",
            repository.url
        )),
        "{text}"
    );

    // The repository goes away: the verified copy in the cache is used.
    repository.stop();
    let output = verify(&config, work, &image);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("using the last verified trusted root from the cache"),
        "{}",
        stderr(&output)
    );

    // A hostile mirror rewrites the target without the targets key: refused, and with an
    // empty cache there is nothing to fall back on: exit 2, never the embedded root.
    python(&["tamper", "--dir", &repository.path()]);
    repository.start();
    let config = policy(
        &setup,
        &repository.settings(&work.join("empty-cache"), 3600),
    );
    let output = verify(&config, work, &image);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot refresh the Sigstore trusted root from TUF")
            && stderr(&output).contains("holds no verified copy"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn config_validate_names_a_tuf_repository_without_a_bootstrap_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "sigstore:\n  tuf:\n    url: https://tuf.example.com\n    cacheDir: /tmp/x\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "validate", &path.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("sigstore.tuf.root")
            && stderr(&output).contains("required for a repository other than"),
        "{}",
        stderr(&output)
    );
}

/// A review of a Pod running `image` by the served webhook, as the API server sends it (to
/// `localhost`, trusting the generated CA): (allowed, message).
async fn review(served: &ServeChild, image: &str) -> (bool, String) {
    let ca = reqwest::Certificate::from_pem(served.ca_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": image}]}
    });
    let answer: Value = client
        .post(format!(
            "https://localhost:{}/validate?timeout=10s",
            served.webhook_addr.port()
        ))
        .header("content-type", "application/json")
        .body(common::create_review("", "Pod", "pods", pod))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    common::verdict(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_picks_up_a_root_published_while_it_runs_and_its_decision_identity_changes() {
    let setup = Setup::new();
    let host = setup.registry.host.clone();
    let digest = setup.push_image("team/app", "tuf-serve");
    setup.sign(&digest, "team/app", Some(&host), &[]);
    let image = format!("{host}/team/app:v1");
    let work = setup.work.path();

    // First the repository publishes another mock Sigstore's root (one that never issued
    // this image's certificate).
    let other = Setup::new();
    let other_digest = other.push_image("team/other", "other");
    other.sign(&other_digest, "team/other", None, &[]);
    let repository = TufRepository::publish(Path::new(&other.root()));
    let config = policy(&setup, &repository.settings(&work.join("serve-cache"), 1));

    let served = common::serve()
        .config_yaml(config)
        .args(["--shutdown-delay-seconds", "0"])
        .spawn();
    // The decision identity the server started with.
    let loaded = served
        .logged("configuration and policies loaded")
        .expect("the server logged its configuration identity");
    let started_with = loaded["config"].as_str().unwrap().to_owned();
    let (allowed, message) = review(&served, &image).await;
    assert!(!allowed, "{message}");
    assert!(
        message.contains("the Sigstore trusted root from TUF at"),
        "{message}"
    );

    // The right root is published as the next targets version: the refresher installs it
    // and rebuilds the engine.
    repository.update(Path::new(&setup.root()));
    let refreshed = served.wait_for_log(
        "Sigstore trusted root refreshed from TUF",
        Duration::from_secs(60),
    );
    let (allowed, message) = review(&served, &image).await;
    assert!(allowed, "{message}");
    let identity = refreshed["config"].as_str().unwrap();
    assert!(identity.starts_with("sha256:"), "{refreshed}");
    assert_ne!(
        identity, started_with,
        "the root is part of the decision identity"
    );
}
