//! Slow and hostile clients against the real server on 127.0.0.1 over real TLS (the generated
//! CA, trusted as the API server trusts `caBundle`): trickled headers, a slow body, stalled
//! bodies against the buffered-bytes bound, the connection limit, too many images, load
//! shedding, and SIGTERM to a real `portcullis serve` under keep-alive load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use portcullis::server::{self, Running, ServeOptions, TlsSource};
use portcullis_test_support::{eventually, install_crypto_provider, tls};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A server on `yaml` with a generated CA; the directory holds `ca.pem`.
async fn start(yaml: &str) -> (Running, tempfile::TempDir) {
    start_engine(engine(Some(yaml))).await
}

async fn start_engine(engine: portcullis::engine::Engine) -> (Running, tempfile::TempDir) {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let webhook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let evidence: Arc<dyn portcullis::evidence::EvidenceSource> =
        Arc::new(portcullis::evidence::NoRegistry);
    let build: portcullis::engine::EngineBuilder = Arc::new(move |loaded| {
        portcullis::engine::Engine::new(loaded, evidence.clone()).map_err(Into::into)
    });
    let running = server::start(
        webhook,
        probe,
        engine,
        build,
        ServeOptions {
            config_path: None,
            tls: TlsSource::Generated {
                dns_names: vec![],
                ca_out: dir.path().join("ca.pem"),
            },
            shutdown_delay: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    (running, dir)
}

fn ca_pem(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("ca.pem")).unwrap()
}

fn reqwest_client(ca_pems: &[&str]) -> reqwest::Client {
    tls::client_builder_trusting(ca_pems)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A raw TLS connection (HTTP/1.1 by ALPN) to the webhook port, for clients that misbehave.
async fn raw_tls(running: &Running, ca_pem: &str) -> TlsStream<TcpStream> {
    tls::connect(running.webhook_addr, ca_pem).await.unwrap()
}

/// Reads until the server closes the connection (or `bound` passes: then panics).
async fn read_until_closed(stream: &mut TlsStream<TcpStream>, bound: Duration) -> String {
    let mut text = Vec::new();
    let read = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server did not close the connection within {bound:?}"
    );
    String::from_utf8_lossy(&text).into_owned()
}

fn metric(running: &Running, line_prefix: &str) -> Option<String> {
    running
        .state
        .metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_headers_is_cut_off_but_idle_keep_alive_is_not() {
    let (running, dir) = start("mode: enforce\nlimits: {headerReadTimeoutMillis: 500}\n").await;
    let ca = ca_pem(&dir);
    let url = format!("https://127.0.0.1:{}/validate", running.webhook_addr.port());

    // A keep-alive connection left idle for longer than the header timeout stays open: the
    // header clock runs from a head's first byte, not while the connection waits.
    let client = reqwest_client(&[&ca]);
    for _ in 0..2 {
        let response = client
            .post(&url)
            .body(fixture_bytes("deployment-compliant"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(running.state.metrics.open_connections.get(), 1);
    }
    assert_eq!(
        metric(&running, "portcullis_guard_closed_connections_total"),
        None
    );

    // A client that completes TLS and trickles header lines is disconnected.
    let mut slow = raw_tls(&running, &ca).await;
    slow.write_all(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(slow);
    let trickle = tokio::spawn(async move {
        for i in 0..600 {
            if writer
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
                || writer.flush().await.is_err()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickling client must be cut off");
    trickle.abort();
    assert!(
        metric(
            &running,
            r#"portcullis_guard_closed_connections_total{reason="header-timeout"}"#
        )
        .is_some(),
        "{}",
        running.state.metrics.encode()
    );
    // A client that connects and never completes the handshake is cut off too.
    let mut silent = TcpStream::connect(running.webhook_addr).await.unwrap();
    let mut buf = [0u8; 16];
    let ended = tokio::time::timeout(Duration::from_secs(15), silent.read(&mut buf)).await;
    assert!(matches!(ended, Ok(Ok(0)) | Ok(Err(_))), "{ended:?}");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_answered_408_within_its_timeout_budget() {
    let (running, dir) = start("mode: enforce\n").await;
    let mut slow = raw_tls(&running, &ca_pem(&dir)).await;
    slow.write_all(
        b"POST /validate?timeout=2s HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"apiVersion\"",
    )
    .await
    .unwrap();
    let (mut reader, mut writer) = tokio::io::split(slow);
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if writer.write_all(b" ").await.is_err() || writer.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the slow body was still open after 15 s");
    // Bounded by the request's own budget (2 s less the 500 ms margin), far below 15 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(
        answer.contains("body-timeout") && answer.contains("1.5s"),
        "{answer}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_never_hold_more_than_the_buffered_bytes_bound() {
    const BOUND: usize = 1024 * 1024;
    const EACH: usize = 250_000;
    let (running, dir) = start(&format!(
        "mode: enforce\nlimits: {{maxRequestBytes: 262144, maxBufferedRequestBytes: {BOUND}}}\n"
    ))
    .await;
    let ca = ca_pem(&dir);
    let head = format!(
        "POST /validate?timeout=30s HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {EACH}\r\n\r\n{{\"apiVersion\""
    );
    // Four stalled bodies fit (1 000 000 bytes reserved of 1 048 576) and are held.
    let mut stalled = Vec::new();
    for i in 1..=4 {
        let mut stream = raw_tls(&running, &ca).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        stalled.push(stream);
        let state = running.state.clone();
        eventually("the body's bytes are reserved", || {
            let state = state.clone();
            async move { state.buffered_body_bytes() == i * EACH }
        })
        .await;
    }
    // More are answered at once with 503 instead of being buffered.
    for _ in 0..3 {
        let mut stream = raw_tls(&running, &ca).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(10))
            .await
            .to_lowercase();
        assert!(answer.starts_with("http/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
        assert!(
            answer.contains("overloaded") && answer.contains("limits.maxbufferedrequestbytes"),
            "{answer}"
        );
        assert!(running.state.buffered_body_bytes() <= BOUND);
    }
    // An ordinary review still fits in what is left, and is judged.
    let client = reqwest_client(&[&ca]);
    let response = client
        .post(format!(
            "https://127.0.0.1:{}/validate?timeout=10s",
            running.webhook_addr.port()
        ))
        .body(fixture_bytes("deployment-compliant"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let review: Value = response.json().await.unwrap();
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(running.state.buffered_body_bytes(), 4 * EACH);
    let metrics = running.state.metrics.encode();
    assert!(
        metrics.contains(r#"portcullis_rejected_requests_total{reason="overloaded"} 3"#),
        "{metrics}"
    );
    // Clients that go away give their bytes back.
    drop(stalled);
    let state = running.state.clone();
    eventually("the stalled bodies' bytes are released", || {
        let state = state.clone();
        async move { state.buffered_body_bytes() == 0 }
    })
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_and_a_waiting_connection_gets_in_when_one_closes() {
    let (running, dir) = start("mode: enforce\nlimits: {maxConnections: 2}\n").await;
    let ca = ca_pem(&dir);
    let first = raw_tls(&running, &ca).await;
    let _second = raw_tls(&running, &ca).await;
    assert_eq!(running.state.metrics.open_connections.get(), 2);
    // The third waits in the listen backlog: its TCP connect succeeds, its TLS handshake
    // does not complete while two connections are open.
    let tcp = TcpStream::connect(running.webhook_addr).await.unwrap();
    let third = tokio::spawn({
        let ca = ca.clone();
        async move { tls::handshake(tcp, &ca).await }
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served beyond the limit"
    );
    assert_eq!(running.state.metrics.open_connections.get(), 2);
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the waiting connection got in once one closed")
        .unwrap();
    let mut third = third.unwrap();
    third
        .write_all(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        .await
        .unwrap();
    let answer = read_until_closed(&mut third, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(running.state.metrics.open_connections.get() <= 2);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_object_with_too_many_images_is_denied_naming_the_limit() {
    let (webhook, _, _) = routers(engine(Some(
        "mode: audit\nlimits: {maxImagesPerObject: 2}\n",
    )));
    let containers: Vec<Value> = (0..3)
        .map(
            |i| serde_json::json!({"name": format!("c{i}"), "image": "registry.k8s.io/pause:3.10"}),
        )
        .collect();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {"containers": containers}
    });
    let (status, review) = post(
        &webhook,
        create_review("", "Pod", "pods", pod),
        "?timeout=10s",
    )
    .await;
    assert_eq!(status, 200);
    let (allowed, message) = verdict(&review);
    assert!(!allowed, "a guard denies even in audit mode: {message}");
    assert_eq!(denied_rules(&review), vec!["max-images"]);
    assert!(message.contains("3 images"), "{message}");
    assert!(message.contains("limits.maxImagesPerObject"), "{message}");
    assert!(message.contains("split the workload"), "{message}");
}

#[tokio::test]
async fn a_review_that_cannot_start_before_its_deadline_gets_the_on_error_outcome() {
    let body = fixture_bytes("deployment-compliant");
    for (yaml, allowed) in [("onError: deny\n", false), ("onError: allow\n", true)] {
        let engine = engine(Some(yaml));
        let (review, verdict) = portcullis::admission::handle_by(
            &engine,
            &body,
            tokio::time::Instant::now(),
            portcullis::evidence::Priority::Admission,
        )
        .await
        .unwrap();
        let review = serde_json::to_value(review).unwrap();
        assert_eq!(review["response"]["allowed"], allowed, "{yaml}");
        let text = format!("{:?} {:?}", verdict.message, verdict.warnings);
        assert!(text.contains("could not start before"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_keep_alive_load_loses_no_request() {
    let mut terminating = serve()
        .args([
            "--shutdown-delay-seconds",
            "2",
            "--drain-timeout-seconds",
            "10",
        ])
        .spawn();
    // The replica clients move to once told to close, as the API server reaches another
    // endpoint of the Service.
    let (other, other_dir) = start_engine(engine(None)).await;
    let cas = [terminating.ca_pem.clone(), ca_pem(&other_dir)];
    let urls = [
        format!(
            "https://127.0.0.1:{}/validate?timeout=10s",
            terminating.webhook_addr.port()
        ),
        format!(
            "https://127.0.0.1:{}/validate?timeout=10s",
            other.webhook_addr.port()
        ),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let sigterm_sent = Arc::new(AtomicBool::new(false));
    let answered_by_terminating = Arc::new(AtomicUsize::new(0));
    let closes_after_sigterm = Arc::new(AtomicUsize::new(0));
    let moved = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    const CLIENTS: usize = 4;
    let mut flows = Vec::new();
    for _ in 0..CLIENTS {
        let client = reqwest_client(&[&cas[0], &cas[1]]);
        let (urls, stop, sigterm_sent, answered, closes, moved, failures) = (
            urls.clone(),
            stop.clone(),
            sigterm_sent.clone(),
            answered_by_terminating.clone(),
            closes_after_sigterm.clone(),
            moved.clone(),
            failures.clone(),
        );
        flows.push(tokio::spawn(async move {
            let mut target = 0;
            while !stop.load(Ordering::SeqCst) {
                let result = client
                    .post(&urls[target])
                    .header("content-type", "application/json")
                    .body(fixture_bytes("deployment-compliant"))
                    .send()
                    .await;
                let response = match result {
                    Ok(response) => response,
                    Err(err) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("replica {target}: {err:?}"));
                        continue;
                    }
                };
                let close = response
                    .headers()
                    .get("connection")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                let status = response.status();
                let allowed = response
                    .json::<Value>()
                    .await
                    .map(|r| r["response"]["allowed"] == true);
                if status != 200 || !matches!(allowed, Ok(true)) {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("replica {target}: status {status}, {allowed:?}"));
                }
                if target == 0 {
                    answered.fetch_add(1, Ordering::SeqCst);
                    if close {
                        assert!(sigterm_sent.load(Ordering::SeqCst), "close before SIGTERM");
                        closes.fetch_add(1, Ordering::SeqCst);
                        moved.fetch_add(1, Ordering::SeqCst);
                        target = 1;
                    }
                }
            }
        }));
    }
    eventually("load on the terminating replica", || {
        let answered = answered_by_terminating.clone();
        async move { answered.load(Ordering::SeqCst) >= 40 }
    })
    .await;
    sigterm_sent.store(true, Ordering::SeqCst);
    terminating.sigterm();
    // Every client is told to close while the replica still answers (the shutdown delay).
    eventually("every client was answered with Connection: close", || {
        let moved = moved.clone();
        async move { moved.load(Ordering::SeqCst) == CLIENTS }
    })
    .await;
    let mut exit = None;
    eventually("the terminating replica exits", || {
        exit = terminating.try_wait();
        let done = exit.is_some();
        async move { done }
    })
    .await;
    assert_eq!(exit.and_then(|s| s.code()), Some(0));
    stop.store(true, Ordering::SeqCst);
    for flow in flows {
        flow.await.unwrap();
    }
    assert_eq!(*failures.lock().unwrap(), Vec::<String>::new());
    assert_eq!(closes_after_sigterm.load(Ordering::SeqCst), CLIENTS);
    other.shutdown().await.unwrap();
}
