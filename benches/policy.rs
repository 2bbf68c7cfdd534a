//! Cost of Rego policy evaluation per review: the shipped library against one Deployment,
//! through the whole engine (1 vs 10 policies, against the built-in rules alone), and one
//! policy evaluated on a clone of the prepared engine vs a freshly compiled engine.
#![allow(clippy::panic)] // reason: a benchmark that cannot set up should stop loudly

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::admission;
use portcullis::config::{LoadedConfig, RegoSyntax};
use portcullis::engine::Engine;
use portcullis::evidence::NoRegistry;
use portcullis::policy::rego::{RegoBundle, RegoSource};

const LIBRARY: [&str; 7] = [
    "no-root-user",
    "no-privileged",
    "allowed-registries",
    "no-latest-tag",
    "required-resource-limits",
    "image-age",
    "critical-vulnerabilities",
];

const GATEKEEPER_REQUIRED_LABELS: &str = r#"package k8srequiredlabels

get_message(parameters, _default) = msg {
  not parameters.message
  msg := _default
}

get_message(parameters, _default) = msg {
  msg := parameters.message
}

violation[{"msg": msg, "details": {"missing_labels": missing}}] {
  provided := {label | input.review.object.metadata.labels[label]}
  required := {label | label := input.parameters.labels[_].key}
  missing := required - provided
  count(missing) > 0
  def_msg := sprintf("you must provide labels: %v", [missing])
  msg := get_message(input.parameters, def_msg)
}
"#;

const GATEKEEPER_DISALLOWED_TAGS: &str = r#"package k8sdisallowedtags

violation[{"msg": msg}] {
    container := input_containers[_]
    tags := [forbid | tag = input.parameters.tags[_] ; forbid = endswith(container.image, concat(":", ["", tag]))]
    any(tags)
    not is_exempt(container)
    msg := sprintf("container <%v> uses a disallowed tag <%v>; disallowed tags are %v", [container.name, container.image, input.parameters.tags])
}

violation[{"msg": msg}] {
    container := input_containers[_]
    tag := [contains(container.image, ":")]
    not all(tag)
    not is_exempt(container)
    msg := sprintf("container <%v> didn't specify an image tag <%v>", [container.name, container.image])
}

is_exempt(container) {
    exempt_images := object.get(object.get(input, "parameters", {}), "exemptImages", [])
    img := container.image
    exemption := exempt_images[_]
    img == exemption
}

input_containers[c] {
    c := input.review.object.spec.template.spec.containers[_]
}
input_containers[c] {
    c := input.review.object.spec.template.spec.initContainers[_]
}
"#;

fn library() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// `count` policies in a fresh folder: the library's, then renamed copies of it.
fn policy_folder(count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    for i in 0..count {
        let name = LIBRARY[i % LIBRARY.len()];
        let mut text = read(&library().join(name).join("policy.rego"));
        if i >= LIBRARY.len() {
            let package = format!("portcullis.{}", name.replace('-', "_"));
            text = text.replace(&package, &format!("{package}_copy{i}"));
        }
        std::fs::write(dir.path().join(format!("{i:02}-{name}.rego")), text)
            .unwrap_or_else(|err| panic!("{err}"));
    }
    dir
}

fn engine(rego: Option<&Path>) -> Engine {
    let mut yaml = String::from("mode: enforce\n");
    if let Some(dir) = rego {
        yaml.push_str(&format!(
            "policies:\n  rego:\n    paths: [{:?}]\n",
            dir.display().to_string()
        ));
    }
    let loaded = LoadedConfig::from_yaml(&yaml, "bench").unwrap_or_else(|err| panic!("{err}"));
    Engine::new(loaded, Arc::new(NoRegistry)).unwrap_or_else(|err| panic!("{err}"))
}

fn per_review(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap_or_else(|err| panic!("runtime: {err}"));
    let body = fixture("deployment-compliant");
    let one = policy_folder(1);
    let ten = policy_folder(10);
    let engines = [
        ("builtin-only", engine(None)),
        ("rego-1-policy", engine(Some(one.path()))),
        ("rego-10-policies", engine(Some(ten.path()))),
    ];
    let mut group = c.benchmark_group("policy/review");
    group.throughput(Throughput::Elements(1));
    for (name, engine) in &engines {
        group.bench_function(*name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let answer = admission::handle(engine, black_box(&body), None).await;
                    let (review, _) = answer.unwrap_or_else(|err| panic!("{err}"));
                    black_box(review)
                })
            })
        });
    }
    group.finish();
}

fn prepared_vs_fresh(c: &mut Criterion) {
    let source = RegoSource {
        path: "no-root-user.rego".into(),
        text: read(&library().join("no-root-user/policy.rego")),
        syntax: RegoSyntax::Auto,
    };
    let input: serde_json::Value = {
        let review: serde_json::Value =
            serde_json::from_slice(&fixture("deployment-compliant")).unwrap_or_default();
        serde_json::json!({
            "review": review["request"],
            "parameters": {},
            "images": [{"container": {"name": "web", "kind": "container"}, "facts": {}}],
            "now": "2026-01-01T00:00:00Z",
        })
    };
    let timeout = Duration::from_millis(500);
    let prepared =
        RegoBundle::compile(vec![source.clone()], timeout).unwrap_or_else(|err| panic!("{err}"));
    let mut group = c.benchmark_group("policy/one-evaluation");
    // What every review with Rego policies pays before any policy runs: the AdmissionRequest
    // as JSON, the input document, and its conversion for regorus.
    let request = portcullis::admission::parse(&fixture("deployment-compliant"))
        .unwrap_or_else(|err| panic!("{err}"));
    let now = time::OffsetDateTime::UNIX_EPOCH;
    group.bench_function("input-document", |b| {
        b.iter(|| {
            let document = portcullis::policy::rego::input_document(&request, &[], now)
                .unwrap_or_else(|err| panic!("{err}"));
            black_box(document)
        })
    });
    // The route it replaced: the request as JSON, then converted for regorus.
    group.bench_function("input-document-through-json", |b| {
        b.iter(|| {
            let review = serde_json::to_value(&request).unwrap_or_default();
            let document = portcullis::policy::input::InputDocument::new(
                review,
                &[],
                time::OffsetDateTime::UNIX_EPOCH,
            );
            black_box(
                document
                    .engine_form(|base| {
                        regorus::Value::from(serde_json::Value::Object(base.clone()))
                    })
                    .cloned(),
            )
        })
    });
    let document = regorus::Value::from(input.clone());
    group.bench_function("prepared-and-cloned", |b| {
        b.iter(|| {
            let package = &prepared.packages()[0];
            black_box(prepared.evaluate(package, document.clone()))
        })
    });
    let mut session = prepared.session();
    group.bench_function("prepared-reused", |b| {
        b.iter(|| {
            let package = &prepared.packages()[0];
            black_box(session.evaluate(package, document.clone()))
        })
    });
    // Gatekeeper library policies as written (Rego v0): k8srequiredlabels, and
    // k8sdisallowedtags, whose `any(...)` is a call to a deprecated built-in.
    for (name, text, parameters) in [
        (
            "gatekeeper-required-labels",
            GATEKEEPER_REQUIRED_LABELS,
            serde_json::json!({"labels": [{"key": "owner"}, {"key": "team"}]}),
        ),
        (
            "gatekeeper-disallowed-tags",
            GATEKEEPER_DISALLOWED_TAGS,
            serde_json::json!({"tags": ["latest", "dev"], "exemptImages": []}),
        ),
    ] {
        let bundle = RegoBundle::compile(
            vec![RegoSource {
                path: format!("{name}.rego"),
                text: text.into(),
                syntax: RegoSyntax::Auto,
            }],
            timeout,
        )
        .unwrap_or_else(|err| panic!("{err}"));
        let mut with_parameters = input.clone();
        with_parameters["parameters"] = parameters;
        let document = regorus::Value::from(with_parameters);
        let package = &bundle.packages()[0];
        group.bench_function(name, |b| {
            b.iter(|| black_box(bundle.evaluate(package, document.clone())))
        });
    }
    group.bench_function("fresh-engine", |b| {
        b.iter(|| {
            let fresh = RegoBundle::compile(vec![source.clone()], timeout)
                .unwrap_or_else(|err| panic!("{err}"));
            let package = &fresh.packages()[0];
            black_box(fresh.evaluate(package, regorus::Value::from(input.clone())))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = per_review, prepared_vs_fresh
}
criterion_main!(benches);
