//! The review hot path against the cost of doing nothing, in one run over real TLS on loopback:
//! a `portcullis serve` child (this package's binary) in front of a real `docker-registry`
//! with Cosign-signed images and clean Trivy reports, loaded by wrk. It prints
//! (a) a warm 3-container signed and scanned Pod, (b) the same under three Gatekeeper-style
//! Rego policies, (c) an ignored kind padded to the same body size — throughput, p50/p99 and
//! the ratios a/c and b/c; p99 of (a) at half of its peak rate; (d) cold verification latency
//! and registry requests per image; (e) resident memory with N distinct cached digests; (f)
//! time from start to ready. Figures only: nothing here asserts a timing.
//!
//! `scripts/bench-hot-path` runs it (it installs wrk); settings by environment:
//! `HOT_PATH_DURATION` (wrk seconds per run, default 10), `HOT_PATH_CONNECTIONS` (16),
//! `HOT_PATH_DIGESTS` (distinct digests for (e), 10000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a benchmark that cannot set up should stop loudly

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_test_support::registry::{
    ImageSpec, IndependentKey, Layout, Mode, Registry, push_signature_layers,
    simple_signing_payload, write_file,
};
use portcullis_test_support::serve::{Serve, ServeChild};
use portcullis_test_support::tls;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const APPS: [&str; 3] = ["team/app-a", "team/app-b", "team/app-c"];
const MANY: &str = "team/many";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Three policies in the Gatekeeper library's style (Rego v0, `input.review.object`,
/// `input.parameters`, the `any`/`all` built-ins): allowed repositories, disallowed tags,
/// container memory limits.
const GATEKEEPER_POLICIES: [(&str, &str); 3] = [
    (
        "k8sallowedrepos.rego",
        r#"package k8sallowedrepos

violation[{"msg": msg}] {
  container := input_containers[_]
  satisfied := [good | repo = input.parameters.repos[_]; good = startswith(container.image, repo)]
  not any(satisfied)
  msg := sprintf("container <%v> has an invalid image repo <%v>, allowed repos are %v", [container.name, container.image, input.parameters.repos])
}

input_containers[c] { c := input.review.object.spec.containers[_] }
input_containers[c] { c := input.review.object.spec.initContainers[_] }
input_containers[c] { c := input.review.object.spec.ephemeralContainers[_] }
"#,
    ),
    (
        "k8sdisallowedtags.rego",
        r#"package k8sdisallowedtags

violation[{"msg": msg}] {
  container := input_containers[_]
  tags := [forbid | tag = input.parameters.tags[_]; forbid = endswith(container.image, concat(":", ["", tag]))]
  any(tags)
  msg := sprintf("container <%v> uses a disallowed tag <%v>; disallowed tags are %v", [container.name, container.image, input.parameters.tags])
}

violation[{"msg": msg}] {
  container := input_containers[_]
  tag := [contains(container.image, ":")]
  not all(tag)
  msg := sprintf("container <%v> didn't specify an image tag <%v>", [container.name, container.image])
}

input_containers[c] { c := input.review.object.spec.containers[_] }
input_containers[c] { c := input.review.object.spec.initContainers[_] }
input_containers[c] { c := input.review.object.spec.ephemeralContainers[_] }
"#,
    ),
    (
        "k8scontainerlimits.rego",
        r#"package k8scontainerlimits

missing(obj, field) = true { not obj[field] }
missing(obj, field) = true { obj[field] == "" }

violation[{"msg": msg}] {
  container := input.review.object.spec.containers[_]
  missing(container.resources.limits, "memory")
  msg := sprintf("container <%v> has no memory limit", [container.name])
}

violation[{"msg": msg}] {
  container := input.review.object.spec.containers[_]
  not container.resources
  msg := sprintf("container <%v> has no resource limits", [container.name])
}

violation[{"msg": msg}] {
  container := input.review.object.spec.containers[_]
  mem := container.resources.limits.memory
  not endswith(mem, "Mi")
  not endswith(mem, "Gi")
  msg := sprintf("container <%v> memory limit <%v> is not in Mi or Gi", [container.name, mem])
}
"#,
    ),
];

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image,
           "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                               "allowPrivilegeEscalation": false},
           "resources": {"limits": {"memory": "128Mi", "cpu": "250m"}}})
}

fn review(uid: &str, kind: &str, resource: &str, object: Value) -> Vec<u8> {
    let group = "";
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "name": object["metadata"]["name"].clone(),
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": object,
        }
    }))
    .unwrap()
}

fn pod_review(uid: &str, images: &[String]) -> Vec<u8> {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| container(&format!("c{i}"), image))
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": format!("pod-{uid}"), "namespace": "shop"},
                     "spec": {"containers": containers}});
    review(uid, "Pod", "pods", pod)
}

/// A ConfigMap (a kind without pods, never judged) padded to exactly `size` bytes.
fn ignored_review(size: usize) -> Vec<u8> {
    let object = |pad: usize| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "settings", "namespace": "shop"},
               "data": {"padding": "x".repeat(pad)}})
    };
    let bare = review("ignored", "ConfigMap", "configmaps", object(0)).len();
    let body = review(
        "ignored",
        "ConfigMap",
        "configmaps",
        object(size.saturating_sub(bare)),
    );
    assert_eq!(body.len(), size.max(bare));
    body
}

struct Registered {
    registry: Registry,
    key_path: PathBuf,
    trivy_dir: PathBuf,
    rego_dir: PathBuf,
    /// `host/team/app-x:v1` of the three signed and scanned images.
    apps: Vec<String>,
    /// `host/team/many@sha256:…`, each signed, each its own digest.
    many: Vec<String>,
    _dir: tempfile::TempDir,
}

async fn set_up(digests: usize) -> Registered {
    portcullis_test_support::install_crypto_provider();
    let registry = Registry::start(Mode::Plain);
    let host = registry.host.clone();
    let key = Arc::new(IndependentKey::generate());
    let dir = tempfile::tempdir().unwrap();
    let key_path = write_file(dir.path(), "team.pub", &key.public_pem());
    let trivy_dir = dir.path().join("trivy");
    let rego_dir = dir.path().join("rego");
    std::fs::create_dir_all(&trivy_dir).unwrap();
    std::fs::create_dir_all(&rego_dir).unwrap();
    for (name, text) in GATEKEEPER_POLICIES {
        write_file(&rego_dir, name, text);
    }
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap()
        .to_string();
    let mut apps = Vec::new();
    for repository in APPS {
        let mut layout = Layout::new();
        let digest = layout.single("v1", &ImageSpec::new(repository));
        registry.push_layout(layout.path(), "v1", repository);
        sign(&registry, &key, repository, &digest).await;
        let report = json!({
            "SchemaVersion": 2, "CreatedAt": now, "ArtifactName": format!("{host}/{repository}:v1"),
            "ArtifactType": "container_image",
            "Metadata": {"RepoDigests": [format!("{host}/{repository}@{digest}")]},
            "Results": [{"Target": "app (alpine 3.20.3)", "Class": "os-pkgs", "Type": "alpine"}]
        });
        write_file(
            &trivy_dir,
            &format!("{}.json", repository.replace('/', "-")),
            &report.to_string(),
        );
        apps.push(format!("{host}/{repository}:v1"));
    }
    let many = push_many(&registry, &key, digests).await;
    Registered {
        registry,
        key_path,
        trivy_dir,
        rego_dir,
        apps,
        many,
        _dir: dir,
    }
}

async fn sign(registry: &Registry, key: &IndependentKey, repository: &str, digest: &str) {
    let payload = simple_signing_payload(&format!("{}/{repository}", registry.host), digest);
    let signature = key.sign_base64(&payload);
    push_signature_layers(registry, repository, digest, &[(payload, signature)]).await;
}

/// `count` distinct signed digests in one repository: one image pushed with skopeo, then its
/// manifest re-put `count` times with a distinct annotation (same blobs, new digest), each
/// signed, 16 at a time.
async fn push_many(registry: &Registry, key: &Arc<IndependentKey>, count: usize) -> Vec<String> {
    let mut layout = Layout::new();
    layout.single("base", &ImageSpec::new("many"));
    registry.push_layout(layout.path(), "base", MANY);
    let http = reqwest::Client::new();
    let base_url = format!("http://{}/v2/{MANY}/manifests", registry.host);
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    let base: Value = http
        .get(format!("{base_url}/base"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for index in 0..count {
        let mut manifest = base.clone();
        manifest["annotations"] = json!({"bench.portcullis.dev/index": index.to_string()});
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let (http, url, key, semaphore) = (
            http.clone(),
            format!("{base_url}/{digest}"),
            key.clone(),
            semaphore.clone(),
        );
        let registry_host = registry.host.clone();
        tasks.push(async move {
            let _slot = semaphore.acquire().await.unwrap();
            let put = http
                .put(url)
                .header("Content-Type", OCI_MANIFEST)
                .body(bytes)
                .send()
                .await
                .unwrap();
            assert!(put.status().is_success(), "PUT manifest: {}", put.status());
            (digest, key, registry_host)
        });
    }
    let pushed = futures_util::future::join_all(tasks).await;
    // The first through the test-support signer (it also stores the signature manifests'
    // shared empty config blob), the rest by hand: two blob requests and one manifest each.
    let mut images = Vec::with_capacity(count);
    let mut signing = Vec::new();
    for (index, (digest, key, host)) in pushed.into_iter().enumerate() {
        images.push(format!("{host}/{MANY}@{digest}"));
        if index == 0 {
            sign(registry, &key, MANY, &digest).await;
            continue;
        }
        let (http, semaphore) = (http.clone(), semaphore.clone());
        signing.push(async move {
            let _slot = semaphore.acquire().await.unwrap();
            push_signature(&http, &host, &key, &digest).await;
        });
    }
    futures_util::future::join_all(signing).await;
    eprintln!(
        "pushed and signed {count} distinct digests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    images
}

/// A classic Cosign signature of `MANY@digest` (the `.sig` tag: one simple-signing layer
/// carrying its signature in an annotation, Cosign's layout), pushed with plain HTTP requests
/// so that thousands take seconds. The empty config blob must already be stored.
async fn push_signature(http: &reqwest::Client, host: &str, key: &IndependentKey, digest: &str) {
    let payload = simple_signing_payload(&format!("{host}/{MANY}"), digest);
    let signature = key.sign_base64(&payload);
    let layer_digest = format!("sha256:{}", hex::encode(Sha256::digest(&payload)));
    let started = http
        .post(format!("http://{host}/v2/{MANY}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202, "start a blob upload");
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{host}{location}")
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let uploaded = http
        .put(format!("{location}{separator}digest={layer_digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201, "finish the blob upload");
    let empty_config = format!("sha256:{}", hex::encode(Sha256::digest(b"{}")));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": empty_config, "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": layer_digest, "size": payload.len(),
                    "annotations": {"dev.cosignproject.cosign/signature": signature}}]
    });
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let put = http
        .put(format!("http://{host}/v2/{MANY}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        put.status().is_success(),
        "PUT signature manifest: {}",
        put.status()
    );
}

fn config_yaml(setup: &Registered, rego: bool) -> String {
    let host = &setup.registry.host;
    let mut yaml = format!(
        "mode: enforce\n\
         registries:\n  - {{host: \"{host}\", insecure: true}}\n\
         trustedRegistries: [\"{host}/**\"]\n\
         evidence: {{cacheCapacity: 12000}}\n\
         scans:\n  trivyReports: {{directory: \"{trivy}\"}}\n\
         imagePolicies:\n\
         \x20 - name: apps\n    images: [\"{host}/team/app-*\"]\n    signatures:\n      keys: [{{path: \"{key}\"}}]\n\
         \x20   vulnerabilities: {{maxSeverity: CRITICAL, maxScanAge: 7d, missingScan: deny}}\n\
         \x20 - name: many\n    images: [\"{host}/{MANY}\"]\n    signatures:\n      keys: [{{path: \"{key}\"}}]\n",
        trivy = setup.trivy_dir.display(),
        key = setup.key_path.display(),
    );
    if rego {
        yaml.push_str(&format!(
            "policies:\n  rego:\n    paths: [\"{rego}\"]\n    policies:\n\
             \x20     - {{package: k8sallowedrepos, parameters: {{repos: [\"{host}/\"]}}}}\n\
             \x20     - {{package: k8sdisallowedtags, parameters: {{tags: [latest]}}}}\n\
             \x20     - {{package: k8scontainerlimits}}\n",
            rego = setup.rego_dir.display()
        ));
    }
    yaml
}

fn start(yaml: &str) -> (ServeChild, Duration) {
    let started = Instant::now();
    let child = Serve::new(env!("CARGO_BIN_EXE_portcullis"))
        .config_yaml(yaml)
        .arg("--shutdown-delay-seconds")
        .arg("0")
        .spawn();
    (child, started.elapsed())
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Value {
    let response = client.post(url).body(body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn expect_allowed(answer: &Value, what: &str) {
    assert_eq!(
        answer["response"]["allowed"], true,
        "{what} must be admitted for the benchmark to mean anything: {answer}"
    );
}

/// What wrk measured.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    requests_per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn wrk(serve: &ServeChild, body: &[u8], seconds: u64, connections: u64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("body.json");
    std::fs::write(&body_path, body).unwrap();
    let script = write_file(
        dir.path(),
        "post.lua",
        &format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             local f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\n",
            body_path.display()
        ),
    );
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(serve.validate_url("10s"))
        .output()
        .expect("wrk (scripts/bench-hot-path installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw answers other than 200: {text}"
    );
    parse_wrk(&text)
}

fn parse_wrk(text: &str) -> Run {
    let mut run = Run::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => run.requests_per_second = value.parse().unwrap(),
            ["50%", value] => run.p50 = wrk_duration(value),
            ["99%", value] => run.p99 = wrk_duration(value),
            _ => {}
        }
    }
    assert!(run.requests_per_second > 0.0, "no figures in: {text}");
    run
}

fn wrk_duration(text: &str) -> Duration {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let value: f64 = number.parse().unwrap();
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        other => panic!("wrk unit {other}"),
    };
    Duration::from_secs_f64(seconds)
}

/// p50 and p99 when the reviews arrive at `rate` per second (spread over `connections`
/// keep-alive connections), latency counted from when each was due so a slow answer is not
/// hidden by the next one waiting (no coordinated omission).
async fn at_rate(
    serve: &ServeChild,
    body: &[u8],
    rate: f64,
    seconds: u64,
    connections: u64,
) -> Run {
    let url = serve.validate_url("10s");
    let per_connection = Duration::from_secs_f64(connections as f64 / rate);
    let total = (rate * seconds as f64) as usize / connections as usize;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = tls::client_builder_trusting(&[&serve.ca_pem])
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let (url, body) = (url.clone(), body.to_vec());
        tasks.push(tokio::spawn(async move {
            // Stagger the connections across one interval.
            let start =
                tokio::time::Instant::now() + per_connection.mul_f64(c as f64 / connections as f64);
            let mut latencies = Vec::with_capacity(total);
            for i in 0..total {
                let due = start + per_connection * i as u32;
                tokio::time::sleep_until(due).await;
                let response = client.post(&url).body(body.clone()).send().await.unwrap();
                assert_eq!(response.status(), 200);
                let _ = response.bytes().await.unwrap();
                latencies.push(due.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Run {
        requests_per_second: all.len() as f64 / seconds as f64,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

fn row(name: &str, run: &Run) {
    println!(
        "| {name} | {:.0} | {} | {} |",
        run.requests_per_second,
        ms(run.p50),
        ms(run.p99)
    );
}

/// A Go duration as the registry logs it (`1.5ms`, `820.3µs`, `2s`).
fn go_duration(text: &str) -> Option<Duration> {
    let text = text.trim_matches('"');
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ns" => value / 1e9,
        "µs" | "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let seconds = env_number("HOT_PATH_DURATION", 10);
    let connections = env_number("HOT_PATH_CONNECTIONS", 16);
    let digests = env_number("HOT_PATH_DIGESTS", 10_000) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(seconds, connections, digests));
}

async fn run(seconds: u64, connections: u64, digests: usize) {
    let cold_images = 20.min(digests);
    let setup = set_up(digests).await;
    let warm_pod = pod_review("warm", &setup.apps);
    let ignored = ignored_review(warm_pod.len());

    // (f) ready: three starts of the plain configuration, the median.
    let mut ready = Vec::new();
    for _ in 0..3 {
        let (child, took) = start(&config_yaml(&setup, false));
        drop(child);
        ready.push(took);
    }
    let ready = median(&mut ready);

    // (a), (c), p99 at half of peak, (d), (e) on one server without Rego.
    let (serve, _) = start(&config_yaml(&setup, false));
    let client = serve.client();
    let url = serve.validate_url("10s");
    expect_allowed(&post(&client, &url, warm_pod.clone()).await, "the warm Pod");
    expect_allowed(
        &post(&client, &url, ignored.clone()).await,
        "the ignored kind",
    );
    eprintln!("(c) ignored kind: wrk against pid {}", serve.pid());
    let ignored_run = wrk(&serve, &ignored, seconds, connections);
    eprintln!("(a) warm Pod: wrk against pid {}", serve.pid());
    let warm_run = wrk(&serve, &warm_pod, seconds, connections);
    let half = at_rate(
        &serve,
        &warm_pod,
        warm_run.requests_per_second / 2.0,
        seconds,
        connections,
    )
    .await;

    // (d) cold: images never seen, one at a time; registry requests from its access log.
    let mut cold = Vec::new();
    let mut cold_requests = Vec::new();
    let log_before = setup.registry.log_text().len();
    for (i, image) in setup.many[..cold_images].iter().enumerate() {
        let before = setup.registry.request_count();
        let started = Instant::now();
        let answer = post(
            &client,
            &url,
            pod_review(&format!("cold-{i}"), std::slice::from_ref(image)),
        )
        .await;
        cold.push(started.elapsed());
        expect_allowed(&answer, image);
        tokio::time::sleep(Duration::from_millis(200)).await; // the access log is written after the answer
        cold_requests.push(setup.registry.request_count() - before);
    }
    // What the registry itself spent on each of those requests (its log's
    // `http.response.duration`), to tell its cost from portcullis's.
    let mut served: Vec<Duration> = setup
        .registry
        .log_text()
        .get(log_before..)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|field| field.strip_prefix("http.response.duration="))
        .filter_map(go_duration)
        .collect();
    let served_total: Duration = served.iter().sum();
    let served_median = if served.is_empty() {
        Duration::ZERO
    } else {
        median(&mut served)
    };
    let first_cold_requests = cold_requests[0];
    cold_requests.sort_unstable();
    let cold_median = median(&mut cold);
    let cold_max = *cold.iter().max().unwrap();

    // (e) memory: every other digest reviewed once (8 at a time), then RSS.
    let rss_before = serve.rss_kb().unwrap_or_default();
    let filled = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for (i, image) in setup.many[cold_images..].iter().enumerate() {
        let (client, url, semaphore) = (client.clone(), url.clone(), semaphore.clone());
        let body = pod_review(&format!("fill-{i}"), std::slice::from_ref(image));
        tasks.push(tokio::spawn(async move {
            let _slot = semaphore.acquire().await.unwrap();
            let answer = post(&client, &url, body).await;
            answer["response"]["allowed"] == true
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap());
    }
    let filled = filled.elapsed();
    let rss_after = serve.rss_kb().unwrap_or_default();
    let peak = serve.peak_rss_kb().unwrap_or_default();
    drop(serve);

    // (b) the same warm Pod under three Gatekeeper-style Rego policies.
    let (rego_serve, _) = start(&config_yaml(&setup, true));
    let rego_client = rego_serve.client();
    let rego_url = rego_serve.validate_url("10s");
    expect_allowed(
        &post(&rego_client, &rego_url, warm_pod.clone()).await,
        "the warm Pod under Rego",
    );
    eprintln!(
        "(b) warm Pod under Rego: wrk against pid {}",
        rego_serve.pid()
    );
    let rego_run = wrk(&rego_serve, &warm_pod, seconds, connections);
    drop(rego_serve);

    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "\nhot path, commit {commit}, {} cores, wrk -t2 -c{connections} -d{seconds}s over TLS, body {} bytes\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        warm_pod.len()
    );
    println!("| run | reviews/s | p50 | p99 |\n|---|---|---|---|");
    row("(a) warm 3-container signed and scanned Pod", &warm_run);
    row("(b) (a) + 3 Gatekeeper-style Rego policies", &rego_run);
    row("(c) ignored kind, same body size", &ignored_run);
    row("(a) at half of its peak rate", &half);
    println!(
        "\nratio a/c {:.2} (goal ≥ 0.8), b/c {:.2} (goal ≥ 0.5); p99 at half of peak {} (goal ≤ 2 ms)",
        warm_run.requests_per_second / ignored_run.requests_per_second,
        rego_run.requests_per_second / ignored_run.requests_per_second,
        ms(half.p99)
    );
    println!(
        "(d) cold key-based verification, {cold_images} images one at a time: median {}, max {}; registry requests per image median {}, min {}, max {} (first image {first_cold_requests}) (goal ≤ 10 ms, ≤ 6 requests)",
        ms(cold_median),
        ms(cold_max),
        cold_requests[cold_requests.len() / 2],
        cold_requests[0],
        cold_requests[cold_requests.len() - 1],
    );
    println!(
        "    the registry's own time per request (its log): median {}, {} per image in all",
        ms(served_median),
        ms(served_total / u32::try_from(cold_images.max(1)).unwrap_or(1)),
    );
    let filled_count = setup.many.len() - cold_images;
    println!(
        "(e) RSS {} MiB before, {} MiB after {} distinct cached digests ({admitted} admitted, filled in {:.1} s): {:.2} KiB per digest; peak {} MiB (goal ≤ 64 MiB)",
        rss_before / 1024,
        rss_after / 1024,
        digests,
        filled.as_secs_f64(),
        (rss_after.saturating_sub(rss_before)) as f64 / filled_count.max(1) as f64,
        peak / 1024,
    );
    println!("(f) start to ready: median of 3 {} (goal ≤ 1 s)", ms(ready));
}
