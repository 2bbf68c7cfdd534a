//! `portcullis verify IMAGE...` as users run it, against a real registry on 127.0.0.1: exit
//! codes, the table and the JSON shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::process::{Command, Output};

use serde_json::Value;

use portcullis_test_support::registry::{
    ImageSpec, IndependentKey, Layout, Mode, Registry, sign_image, write_file,
};

fn portcullis() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("PORTCULLIS_LOG");
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A registry with `team/app:v1` pushed, and a folder for keys and the configuration.
struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    digest: String,
}

impl Setup {
    fn new() -> Self {
        portcullis_test_support::install_crypto_provider();
        let registry = Registry::start(Mode::Plain);
        let mut layout = Layout::new();
        let digest = layout.single("v1", &ImageSpec::new("verify"));
        registry.push_layout(layout.path(), "v1", "team/app");
        Self {
            registry,
            dir: tempfile::tempdir().unwrap(),
            digest,
        }
    }

    fn image(&self) -> String {
        format!("{}/team/app:v1", self.registry.host)
    }

    fn key_file(&self, name: &str, key: &IndependentKey) -> String {
        write_file(self.dir.path(), name, &key.public_pem())
            .display()
            .to_string()
    }

    /// A configuration whose image policy `team` trusts the key file.
    fn config(&self, key_path: &str) -> String {
        let yaml = format!(
            "{}imagePolicies:\n  - name: team\n    images: [\"{}/**\"]\n    signatures:\n      keys:\n        - path: {key_path}\n",
            self.registry.registry_yaml(),
            self.registry.host
        );
        write_file(self.dir.path(), "config.yaml", &yaml)
            .display()
            .to_string()
    }

    fn verify(&self, config: &str, extra: &[&str]) -> Output {
        portcullis()
            .args(["verify", "--config", config])
            .args(extra)
            .arg(self.image())
            .output()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_image_exits_0_and_the_table_names_the_key_and_the_sig_tag() {
    let setup = Setup::new();
    let key = IndependentKey::generate();
    sign_image(&setup.registry, "team/app", &setup.digest, &key).await;
    let key_path = setup.key_file("team.pub", &key);
    let output = setup.verify(&setup.config(&key_path), &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(text.contains(&setup.digest), "{text}");
    assert!(text.contains(&format!("key {key_path}")), "{text}");
    assert!(text.contains(".sig tag"), "{text}");
    assert!(
        text.contains("policy team (mode enforce): satisfied"),
        "{text}"
    );
    assert!(text.contains("user         1000"), "{text}");
    assert!(text.contains("docker.io/library/alpine:3.20"), "{text}");
    assert!(text.contains("the Sigstore public-good root"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_image_exits_1_naming_the_expected_key_and_no_signature() {
    let setup = Setup::new();
    let key_path = setup.key_file("team.pub", &IndependentKey::generate());
    let output = setup.verify(&setup.config(&key_path), &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}{}", stderr(&output));
    assert!(
        text.contains(&format!("expected a signature by key {key_path}")),
        "{text}"
    );
    assert!(text.contains("no signature"), "{text}");
    assert!(text.contains("NOT satisfied"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_signed_by_another_key_exits_1_naming_the_unknown_key() {
    let setup = Setup::new();
    sign_image(
        &setup.registry,
        "team/app",
        &setup.digest,
        &IndependentKey::generate(),
    )
    .await;
    let key_path = setup.key_file("team.pub", &IndependentKey::generate());
    let output = setup.verify(&setup.config(&key_path), &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}{}", stderr(&output));
    assert!(
        text.contains("signed by an unknown key: not verified: not signed by key")
            && text.contains(&key_path),
        "{text}"
    );
    assert!(text.contains(".sig tag"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_parses_and_has_the_documented_fields() {
    let setup = Setup::new();
    let key = IndependentKey::generate();
    sign_image(&setup.registry, "team/app", &setup.digest, &key).await;
    let key_path = setup.key_file("team.pub", &key);
    let output = setup.verify(&setup.config(&key_path), &["-o", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let image = &report["images"][0];
    assert_eq!(image["image"], setup.image());
    assert_eq!(image["normalized"], setup.image());
    assert_eq!(image["digest"], setup.digest.as_str());
    assert_eq!(image["satisfied"], true);
    assert!(image["error"].is_null());
    assert!(image["children"].is_object());
    assert_eq!(image["facts"]["user"], "1000");
    assert_eq!(image["facts"]["baseName"], "docker.io/library/alpine:3.20");
    let policy = &image["policies"][0];
    assert_eq!(policy["name"], "team");
    assert_eq!(policy["mode"], "enforce");
    assert_eq!(policy["satisfied"], true);
    assert!(policy["reason"].is_null());
    assert!(policy["root"].as_str().unwrap().contains("public-good"));
    assert_eq!(policy["signers"][0], format!("key {key_path}"));
    assert!(policy["attestations"].as_array().unwrap().is_empty());
    assert!(policy["missingAttestations"].as_array().unwrap().is_empty());
    let found = &policy["found"][0];
    assert_eq!(found["place"], ".sig tag");
    assert_eq!(found["format"], "Cosign signature");
    assert_eq!(found["kind"], "signature");
    assert_eq!(found["signer"], format!("key {key_path}"));
    assert_eq!(found["verified"], true);
    assert!(found["reason"].is_null());
    assert!(found["source"].as_str().unwrap().starts_with("sha256:"));

    // Unsigned against the same policy: the reason is the denial's text.
    let other = setup.key_file("other.pub", &IndependentKey::generate());
    let output = setup.verify(&setup.config(&other), &["-o", "json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let policy = &report["images"][0]["policies"][0];
    assert_eq!(policy["satisfied"], false);
    assert!(
        policy["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("expected a signature by key {other}")),
        "{policy}"
    );
    assert_eq!(policy["found"][0]["verified"], false);
    assert_eq!(policy["found"][0]["signer"], "an unknown key");
}

#[test]
fn an_invalid_image_reference_exits_2_with_a_clear_message() {
    let output = portcullis()
        .args(["verify", "Not A Valid//Image"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("invalid image reference \"Not A Valid//Image\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_image_no_policy_matches_is_satisfied_with_the_default_configuration() {
    let output = portcullis()
        .args(["verify", "registry.example.com/team/app:v1"])
        .output()
        .unwrap();
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(text.contains("no image policy matches"), "{text}");
    assert!(text.contains("verdict      satisfied"), "{text}");
}

#[test]
fn an_unreachable_registry_exits_2_naming_the_registry() {
    // A port that was free a moment ago: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let key_path = write_file(
        dir.path(),
        "team.pub",
        &IndependentKey::generate().public_pem(),
    );
    let yaml = format!(
        "registries:\n  - host: \"{host}\"\n    insecure: true\nlimits:\n  defaultTimeoutSeconds: 3\nimagePolicies:\n  - name: team\n    images: [\"{host}/**\"]\n    signatures:\n      keys:\n        - path: {}\n",
        key_path.display()
    );
    let config = write_file(dir.path(), "config.yaml", &yaml);
    let output = portcullis()
        .args(["verify", "--config"])
        .arg(&config)
        .arg(format!("{host}/team/app:v1"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(
        stderr(&output).contains(&format!("from {host}")),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).contains("error"), "{}", stdout(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_image_without_the_scan_its_policy_requires_exits_1_with_the_admission_finding() {
    let setup = Setup::new();
    let key = IndependentKey::generate();
    sign_image(&setup.registry, "team/app", &setup.digest, &key).await;
    let key_path = setup.key_file("team.pub", &key);
    // The same policy, now also judging vulnerabilities: no report names the digest.
    let config = std::fs::read_to_string(setup.config(&key_path)).unwrap()
        + "    vulnerabilities:\n      maxSeverity: HIGH\n      missingScan: deny\n";
    let config = write_file(setup.dir.path(), "with-scans.yaml", &config)
        .display()
        .to_string();
    let output = setup.verify(&config, &["-o", "json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let image = &report["images"][0];
    assert_eq!(
        image["policies"][0]["satisfied"], true,
        "the signature is fine"
    );
    assert_eq!(image["satisfied"], false);
    let admission = &image["admission"];
    assert_eq!(admission["allowed"], false, "{admission}");
    let finding = admission["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "scan-missing")
        .unwrap_or_else(|| panic!("{admission}"));
    assert_eq!(finding["imagePolicy"], true);

    // The table says so too.
    let output = setup.verify(&config, &[]);
    let text = stdout(&output);
    assert!(text.contains("admission    denied"), "{text}");
    assert!(text.contains("scan-missing"), "{text}");
    assert!(text.contains("verdict      NOT satisfied"), "{text}");
}
