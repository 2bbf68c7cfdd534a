//! The `portcullis` binary as users run it: exit codes of `review`, `check`, `config
//! validate` and `serve`, and what they print.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{self, data_path};
use serde_json::Value;

fn portcullis() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("PORTCULLIS_LOG");
    command
}

fn run(args: &[&str]) -> Output {
    portcullis().args(args).output().unwrap()
}

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = portcullis()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn data(name: &str) -> String {
    data_path(name).display().to_string()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn review_prints_the_answer_and_exits_0_whether_allowed_or_not() {
    for (fixture, allowed) in [
        ("deployment-compliant.json", true),
        ("deployment-nginx-untagged.json", false),
    ] {
        let output = run(&["review", &data(fixture)]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let review: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["allowed"], allowed);
    }
}

#[test]
fn review_reads_stdin_and_gives_the_same_answer_as_the_file() {
    let body = std::fs::read(data_path("cronjob-latest.json")).unwrap();
    let from_stdin = run_with_stdin(&["review", "-"], &body);
    let from_file = run(&["review", &data("cronjob-latest.json")]);
    assert_eq!(from_stdin.status.code(), Some(0));
    assert_eq!(stdout(&from_stdin), stdout(&from_file));
}

#[test]
fn review_exits_2_when_the_input_is_not_an_admission_review() {
    let output = run_with_stdin(&["review"], br#"{"apiVersion": "v1", "kind": "Pod"}"#);
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&output).is_empty());
    assert!(
        stderr(&output).contains("apiVersion must be"),
        "{}",
        stderr(&output)
    );
    let missing = run(&["review", "/nonexistent/review.json"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn check_exits_0_when_everything_is_admitted() {
    let output = run(&["check", &data("manifests/compliant.yaml")]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let table = stdout(&output);
    assert!(table.starts_with("OBJECT"), "{table}");
    assert!(table.contains("Deployment shop/web") && table.contains("admitted"));
    assert!(table.contains("ConfigMap shop/settings") && table.contains("skipped"));
}

#[test]
fn check_exits_1_when_something_is_denied_and_names_the_fix() {
    let output = run(&[
        "check",
        &data("manifests/compliant.yaml"),
        &data("manifests/list-with-latest.json"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let table = stdout(&output);
    let row = table
        .lines()
        .find(|line| line.starts_with("CronJob shop/nightly"))
        .unwrap_or_else(|| panic!("no CronJob row in\n{table}"));
    for part in [
        "nightly",
        "busybox:latest",
        "no-latest-tag",
        "denied",
        "pin a version",
    ] {
        assert!(row.contains(part), "{part} missing in {row}");
    }
}

#[test]
fn check_json_output_lists_every_object_and_finding() {
    let output = run(&[
        "check",
        "-o",
        "json",
        &data("manifests/list-with-latest.json"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["allowed"], true);
    assert_eq!(results[1]["object"], "CronJob shop/nightly");
    assert_eq!(results[1]["findings"][0]["rule"], "no-latest-tag");
}

#[test]
fn check_exits_2_on_unreadable_or_broken_input() {
    let missing = run(&["check", "/nonexistent.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    let broken = run_with_stdin(&["check", "-"], b"kind: [unclosed\n");
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        stderr(&broken).contains("document 1"),
        "{}",
        stderr(&broken)
    );
    let bad_config = run(&[
        "check",
        "--config",
        &data("manifests/compliant.yaml"),
        &data("manifests/compliant.yaml"),
    ]);
    assert_eq!(bad_config.status.code(), Some(2));
}

#[test]
fn config_validate_accepts_the_embedded_default_and_prints_its_identity() {
    let output = run(&["config", "validate"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("valid: embedded default"), "{text}");
    assert!(text.contains("identity: sha256:"), "{text}");
}

#[test]
fn config_validate_names_the_key_path_of_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("mode: sometimes\n", "mode"),
        (
            "rules:\n  noLatestTag: {enabled: true, colour: red}\n",
            "rules.noLatestTag",
        ),
        (
            "rules:\n  containerPorts:\n    enabled: true\n    allowed: [\"80\", \"9000-8000\"]\n",
            "rules.containerPorts.allowed[1]",
        ),
        (
            "trustedRegistries: [\"docker.io/[oops\"]\n",
            "trustedRegistries[0]",
        ),
        ("limits: {maxRequestBytes: 0}\n", "limits.maxRequestBytes"),
        ("surprise: true\n", "surprise"),
    ];
    for (yaml, key) in cases {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let output = run(&["config", "validate", &path.display().to_string()]);
        assert_eq!(output.status.code(), Some(2), "{yaml}");
        assert!(
            stderr(&output).contains(key),
            "{key} not named for {yaml:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn config_validate_warns_when_a_rego_policy_matches_a_kind_portcullis_never_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("labels.rego"),
        "package k8srequiredlabels\nviolation[msg] { false; msg := \"x\" }\n",
    )
    .unwrap();
    let path = dir.path().join("config.yaml");
    let config = format!(
        "workloads:\n  custom:\n    - {{group: argoproj.io, kind: Rollout, resource: rollouts, podSpecPath: spec.template.spec}}\n\
         policies:\n  rego:\n    paths: [{:?}]\n    policies:\n      - package: k8srequiredlabels\n        match:\n          kinds: [Deployment, Service, Rollout, Namespace]\n",
        dir.path().display().to_string()
    );
    std::fs::write(&path, config).unwrap();
    let output = run(&["config", "validate", &path.display().to_string()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(
        warnings[0].contains("policies.rego.policies[0].match.kinds[1]")
            && warnings[0].contains("\"Service\""),
        "{text}"
    );
    assert!(warnings[1].contains("\"Namespace\""), "{text}");
    // Pod-bearing kinds, built in or custom, draw no warning.
    assert!(
        !text.contains("\"Deployment\"") && !text.contains("\"Rollout\""),
        "{text}"
    );
}

#[test]
fn an_empty_configuration_is_refused_by_config_validate_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    for text in [
        "",
        "\n   \n",
        "# portcullis configuration\n# (to be written)\n",
    ] {
        std::fs::write(&path, text).unwrap();
        let validate = run(&["config", "validate", &path.display().to_string()]);
        let serve = common::serve().config(&path).run();
        for (command, code, message) in [
            ("config validate", validate.status.code(), stderr(&validate)),
            ("serve", serve.code, serve.stderr),
        ] {
            assert_eq!(code, Some(2), "{command} on {text:?}");
            assert!(message.contains("the configuration is empty"), "{message}");
            assert!(message.contains("omit --config"), "{message}");
        }
    }
    // Asking for the built-in defaults explicitly is fine.
    std::fs::write(&path, "{}\n").unwrap();
    let output = run(&["config", "validate", &path.display().to_string()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn serve_with_a_bad_configuration_exits_2_before_binding_any_port() {
    // Hold the port: if serve tried to bind first it would fail with a bind error (exit 1).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let exit = common::serve()
        .config_yaml("mode: sometimes\n")
        .listen(format!("127.0.0.1:{port}"))
        .probe_listen(format!("127.0.0.1:{port}"))
        .run();
    assert_eq!(exit.code, Some(2), "{}", exit.stderr);
    assert!(exit.stderr.contains("mode"));
}

#[test]
fn serve_runs_on_the_embedded_default_and_exits_0_on_sigterm() {
    let mut serve = common::serve()
        .args(["--shutdown-delay-seconds", "0"])
        .ready_timeout(Duration::from_secs(30))
        .spawn();
    for line in serve.stderr_lines() {
        let parsed = serde_json::from_str::<Value>(&line);
        assert!(parsed.is_ok(), "log line is not JSON ({parsed:?}): {line}");
    }
    let ca_out = serve.ca_path.clone().unwrap();
    assert!(ca_out.exists(), "the CA bundle was written");
    let mut stream = std::net::TcpStream::connect(serve.probe_addr).unwrap();
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // At once, on purpose: `serve` listens for SIGTERM before it reports ready, so even a
    // signal sent the moment /readyz answers drains and exits 0 (it once killed the process).
    serve.sigterm();
    let status = serve.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "{status}: {}",
        serve.stderr_lines().join("\n")
    );
}

#[test]
fn audit_judges_a_pod_dump_once_per_controller_and_exits_1_when_something_would_be_denied() {
    let output = run(&["audit", "--from-file", &data("cluster/pods.json")]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(
        table.contains("Pod shop/web-7d4b9c-x2k9p (2 pods of ReplicaSet shop/web-7d4b9c)"),
        "{table}"
    );
    assert!(!table.contains("web-7d4b9c-q8m2z"), "{table}");
    let legacy: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("Pod shop/legacy"))
        .collect();
    assert!(
        legacy.iter().any(|l| l.contains("no-latest-tag")),
        "{table}"
    );
    assert!(
        !table.contains("coredns"),
        "excluded namespace listed: {table}"
    );
    assert!(
        stderr(&output)
            .contains("audited 4 pod(s) as 3 object(s): 1 would be denied, 1 not judged"),
        "{}",
        stderr(&output)
    );

    let json = run(&[
        "audit",
        "-o",
        "json",
        "--from-file",
        &data("cluster/pods.json"),
    ]);
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    let allowed: Vec<bool> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["allowed"].as_bool().unwrap())
        .collect();
    assert_eq!(allowed, [true, false]);
    // No image policy resolves these tags, so no digest is known: the inventory is empty.
    assert_eq!(report["images"], serde_json::json!([]), "{report}");
    // Not a terminal: no progress bar, only the summary line.
    assert!(
        !stderr(&json).contains("objects judged"),
        "{}",
        stderr(&json)
    );
}

#[test]
fn audit_in_audit_mode_reports_but_exits_0_and_bad_dumps_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("audit.yaml");
    std::fs::write(
        &config,
        "mode: audit\ntrustedRegistries: [\"registry.k8s.io/**\", \"docker.io/library/**\"]\n",
    )
    .unwrap();
    let output = run(&[
        "audit",
        "--config",
        config.to_str().unwrap(),
        "--from-file",
        &data("cluster/pods.json"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("audit: "), "{}", stdout(&output));

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"items\": [").unwrap();
    let output = run(&["audit", "--from-file", broken.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("broken.json"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn config_validate_into_a_closed_pipe_fails_cleanly_without_a_panic() {
    // The read end is closed before the process has loaded its configuration, so its write
    // meets EPIPE (Rust ignores SIGPIPE): an error exit, never a panic.
    let mut child = portcullis()
        .args(["config", "validate"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
}

#[test]
fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    // stderr is a pipe here, as in a pod or under a log shipper.
    let output = portcullis()
        .env("PORTCULLIS_LOG", "debug")
        .args([
            "--log-format",
            "text",
            "review",
            &data("deployment-nginx-untagged.json"),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let logs = stderr(&output);
    assert!(logs.contains("decided"), "debug logs expected: {logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "an escape sequence in piped logs: {logs:?}"
    );
}

#[test]
fn a_deprecated_key_is_a_warning_from_config_validate_and_from_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "imagePolicies:\n  - name: team\n    images: [\"registry.example.com/**\"]\n    \
         vulnerabilities: {maxSeverity: HIGH, missingScan: warn}\n",
    )
    .unwrap();
    let config = path.display().to_string();
    let validate = run(&["config", "validate", &config]);
    assert_eq!(validate.status.code(), Some(0), "{}", stderr(&validate));
    let printed = stdout(&validate);
    assert!(
        printed.contains("warning: imagePolicies[0].vulnerabilities.maxSeverity is deprecated")
            && printed.contains("denyAtOrAbove: HIGH"),
        "{printed}"
    );
    // Every engine built from it says so on stderr (check, review, serve, reloads).
    let check = run(&[
        "check",
        "--config",
        &config,
        &data("manifests/compliant.yaml"),
    ]);
    let logged = stderr(&check);
    assert!(
        logged.contains("maxSeverity is deprecated") && logged.contains("denyAtOrAbove: HIGH"),
        "{logged}"
    );
}

#[test]
fn audit_lists_the_image_digests_it_judged() {
    let dir = tempfile::tempdir().unwrap();
    let digest = format!("sha256:{}", "a".repeat(64));
    let dump = dir.path().join("pods.json");
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "pinned", "namespace": "shop"},
         "spec": {"containers": [{"name": "app", "image": format!("registry.k8s.io/pause@{digest}")}]}}
    ]});
    std::fs::write(&dump, pod.to_string()).unwrap();

    let json = run(&["audit", "-o", "json", "--from-file", dump.to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["results"].as_array().unwrap().len(), 1, "{report}");
    let image = &report["images"][0];
    assert_eq!(image["digest"], digest.as_str(), "{report}");
    assert_eq!(image["workloads"][0], "Pod shop/pinned", "{report}");
    assert_eq!(
        image["verdict"]["outcome"], report["results"][0]["outcome"],
        "{report}"
    );

    let table = run(&["audit", "--from-file", dump.to_str().unwrap()]);
    let table = stdout(&table);
    assert!(table.contains("DIGEST"), "{table}");
    assert!(table.contains("sha256:aaaaaaaaaaaa "), "{table}");
    assert!(table.contains("Pod shop/pinned"), "{table}");
}
