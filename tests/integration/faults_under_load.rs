//! Fault tolerance under load, against a real `portcullis serve` child over real TLS: the
//! registry (the real `docker-registry` on loopback, reached through a TCP relay in this test
//! that can black-hole or slow it) black-holed, stopped and slow while reviews flow — every
//! answer arrives before the API server's `?timeout=` with the configured `onError` outcome and
//! cached digests are decided as before; certificate files replaced and the configuration
//! broken during a load run without one failed request; hundreds of idle, slow-header and
//! slow-body connections held while normal reviews stay answered, with the child's RSS
//! (/proc) bounded. Counts are bounded; deadlines only bound waits. Figures are printed
//! (`--no-capture`) and recorded in docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{self, fixture_bytes};
use portcullis_test_support::eventually;
use portcullis_test_support::install_crypto_provider;
use portcullis_test_support::registry::{
    ImageSpec, IndependentKey, Layout, Mode, Registry, push_signature_layers,
    simple_signing_payload, write_file,
};
use portcullis_test_support::serve::ServeChild;
use portcullis_test_support::tls::{self, TestCa};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the relay in front of the registry does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Relay {
    Forward,
    /// Accepts and holds every connection, forwards nothing (new and pooled ones alike).
    BlackHole,
    /// Forwards every chunk only after this long.
    Slow(Duration),
}

/// A TCP relay on 127.0.0.1 in front of the registry.
struct Proxy {
    addr: String,
    relay: Arc<Mutex<Relay>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let relay = Arc::new(Mutex::new(Relay::Forward));
        let shared = relay.clone();
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                if *shared.lock().unwrap() == Relay::BlackHole {
                    held.push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, shared.clone()));
                tokio::spawn(pump(server_read, client_write, shared.clone()));
            }
        });
        Self {
            addr,
            relay,
            accept,
        }
    }

    fn set(&self, relay: Relay) {
        *self.relay.lock().unwrap() = relay;
    }

    /// Closes the listening socket: new connections are refused.
    fn stop(&self) {
        self.accept.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    relay: Arc<Mutex<Relay>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = *relay.lock().unwrap();
        match now {
            Relay::Forward => {}
            Relay::BlackHole => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Relay::Slow(delay) => tokio::time::sleep(delay).await,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn hardened(image: &str) -> Value {
    json!({"name": "app", "image": image, "securityContext":
        {"runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false}})
}

fn pod_review(image: &str) -> Vec<u8> {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "app", "namespace": "shop"},
                     "spec": {"containers": [hardened(image)]}});
    crate::common::create_review("", "Pod", "pods", pod)
}

/// What one load run saw.
#[derive(Debug, Default)]
struct Figures {
    requests: usize,
    failures: Vec<String>,
    max_latency: Duration,
    rss_before_kb: u64,
    rss_after_kb: u64,
}

/// The answer expected for an image: (allowed, text in the message or warnings).
type Expected = (bool, &'static str);

/// `clients` concurrent clients send `each` reviews, cycling through `images`; every answer
/// must come within `deadline` (the `?timeout=` the reviews carry) and match.
async fn load(
    serve: &ServeChild,
    deadline_seconds: u64,
    clients: usize,
    each: usize,
    images: Vec<(String, Expected)>,
) -> Figures {
    let images = Arc::new(images);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let max = Arc::new(Mutex::new(Duration::ZERO));
    let url = serve.validate_url(&format!("{deadline_seconds}s"));
    let rss_before_kb = serve.rss_kb().unwrap_or_default();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = tls::client_builder_trusting(&[&serve.ca_pem])
            // The API server gives up at its deadline; so does this client.
            .timeout(Duration::from_secs(deadline_seconds))
            .build()
            .unwrap();
        let (images, failures, max, url) =
            (images.clone(), failures.clone(), max.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let (image, (allowed, text)) = &images[(c + i) % images.len()];
                let started = Instant::now();
                let result = client.post(&url).body(pod_review(image)).send().await;
                let outcome = match result {
                    Ok(response) if response.status() == 200 => {
                        response.json::<Value>().await.map_err(|e| e.to_string())
                    }
                    Ok(response) => Err(format!("HTTP {}", response.status())),
                    Err(err) => Err(format!("{err:?}")),
                };
                let elapsed = started.elapsed();
                {
                    let mut max = max.lock().unwrap();
                    *max = (*max).max(elapsed);
                }
                match outcome {
                    Ok(review) => {
                        let said = format!(
                            "{} {}",
                            review["response"]["status"]["message"], review["response"]["warnings"]
                        );
                        if review["response"]["allowed"] != *allowed || !said.contains(text) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{image}: expected {allowed}/{text}: {said}"));
                        }
                    }
                    Err(err) => failures.lock().unwrap().push(format!("{image}: {err}")),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    let max_latency = *max.lock().unwrap();
    Figures {
        requests: clients * each,
        failures,
        max_latency,
        rss_before_kb,
        rss_after_kb: serve.rss_kb().unwrap_or_default(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    BlackHole,
    Stopped,
    Slow,
}

/// Registry behind the relay with a signed `v1`, an unsigned `v2` (both reviewed once, so
/// cached) and a signed `v3` never seen before the fault; then `fault`, then load.
async fn registry_fault_under_load(fault: Fault, on_error: &str) {
    install_crypto_provider();
    let mut registry = Registry::start(Mode::Plain);
    let proxy = Proxy::start(registry.host.clone()).await;
    let key = IndependentKey::generate();
    let mut digests = Vec::new();
    for tag in ["v1", "v2", "v3"] {
        let mut layout = Layout::new();
        let digest = layout.single(tag, &ImageSpec::new(&format!("fault-{tag}")));
        registry.push_layout(layout.path(), tag, "team/app");
        digests.push(digest);
    }
    // Signatures name the repository as portcullis reaches it (through the relay).
    for digest in [&digests[0], &digests[2]] {
        let payload = simple_signing_payload(&format!("{}/team/app", proxy.addr), digest);
        let signature = key.sign_base64(&payload);
        push_signature_layers(&registry, "team/app", digest, &[(payload, signature)]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let key_path = write_file(dir.path(), "team.pub", &key.public_pem());
    let host = &proxy.addr;
    let config = write_file(
        dir.path(),
        "config.yaml",
        &format!(
            "mode: enforce\nonError: {on_error}\nregistries:\n  - {{host: \"{host}\", insecure: true}}\n\
             evidence: {{maxAttempts: 2}}\ntrustedRegistries: [\"{host}/**\"]\n\
             imagePolicies:\n  - name: signed\n    images: [\"{host}/**\"]\n    signatures:\n      \
             keys: [{{path: \"{}\"}}]\n",
            key_path.display()
        ),
    );
    let serve = common::serve().config(&config).spawn();
    let image = |tag: &str| format!("{host}/team/app:{tag}");
    let signed: Expected = (true, "");
    let unsigned: Expected = (false, "rule signature");
    let warm = load(
        &serve,
        10,
        1,
        2,
        vec![(image("v1"), signed), (image("v2"), unsigned)],
    )
    .await;
    assert_eq!(warm.failures, Vec::<String>::new(), "before the fault");

    match fault {
        Fault::BlackHole => proxy.set(Relay::BlackHole),
        Fault::Stopped => {
            proxy.stop();
            registry.stop();
        }
        // Slower than the whole deadline: nothing uncached can be gathered in time.
        Fault::Slow => proxy.set(Relay::Slow(Duration::from_secs(8))),
    }
    let on_error_outcome: Expected = if on_error == "deny" {
        (false, "could not verify it")
    } else {
        (true, "unverified, allowed by onError")
    };
    const DEADLINE: u64 = 4;
    let figures = load(
        &serve,
        DEADLINE,
        4,
        30,
        vec![
            (image("v1"), signed),
            (image("v2"), unsigned),
            (image("v3"), on_error_outcome),
        ],
    )
    .await;
    eprintln!(
        "registry {fault:?}, onError {on_error}: {} reviews (?timeout={DEADLINE}s), {} failed, \
         max latency {:?}, RSS {} kB -> {} kB",
        figures.requests,
        figures.failures.len(),
        figures.max_latency,
        figures.rss_before_kb,
        figures.rss_after_kb
    );
    assert_eq!(figures.failures, Vec::<String>::new(), "{fault:?}");
    assert!(figures.max_latency < Duration::from_secs(DEADLINE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_registry_under_load_gets_on_error_deny_in_time_and_cached_digests_as_before()
{
    registry_fault_under_load(Fault::BlackHole, "deny").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_registry_under_load_with_on_error_allow_admits_with_a_warning_in_time() {
    registry_fault_under_load(Fault::BlackHole, "allow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_registry_under_load_gets_on_error_in_time_and_cached_digests_as_before() {
    registry_fault_under_load(Fault::Stopped, "deny").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_slower_than_the_deadline_under_load_gets_on_error_in_time() {
    registry_fault_under_load(Fault::Slow, "deny").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_replaced_and_configuration_broken_during_load_fail_no_request() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key, first_der) = ca.leaf();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let config = write_file(dir.path(), "config.yaml", "mode: enforce\n");
    let serve = Arc::new(
        common::serve()
            .config(&config)
            .tls_files(&cert_path, &key_path, &ca.pem())
            .spawn(),
    );
    let rss_before = serve.rss_kb().unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(Mutex::new(Duration::ZERO));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut flows = Vec::new();
    // Two keep-alive flows and one that opens a new connection (new handshake) every time.
    for fresh in [false, false, true] {
        let (serve, stop, sent, max, failures) = (
            serve.clone(),
            stop.clone(),
            sent.clone(),
            max.clone(),
            failures.clone(),
        );
        flows.push(tokio::spawn(async move {
            let mut client = serve.client();
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                if fresh {
                    client = serve.client();
                }
                let (fixture, allowed) = if i.is_multiple_of(2) {
                    ("deployment-compliant", true)
                } else {
                    ("deployment-nginx-untagged", false)
                };
                i += 1;
                let started = Instant::now();
                let result = client
                    .post(serve.validate_url("10s"))
                    .body(fixture_bytes(fixture))
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::SeqCst);
                let outcome = match result {
                    Ok(response) if response.status() == 200 => response
                        .json::<Value>()
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| {
                            if r["response"]["allowed"] == allowed {
                                Ok(())
                            } else {
                                Err(format!("{fixture}: {r}"))
                            }
                        }),
                    Ok(response) => Err(format!("HTTP {}", response.status())),
                    Err(err) => Err(format!("{err:?}")),
                };
                let elapsed = started.elapsed();
                {
                    let mut max = max.lock().unwrap();
                    *max = (*max).max(elapsed);
                }
                if let Err(err) = outcome {
                    failures.lock().unwrap().push(err);
                }
            }
        }));
    }
    let at_least = |n: usize| {
        let sent = sent.clone();
        async move {
            let target = sent.load(Ordering::SeqCst) + n;
            eventually("requests flowing", || {
                let sent = sent.clone();
                async move { sent.load(Ordering::SeqCst) >= target }
            })
            .await;
        }
    };
    at_least(30).await;
    // Three rotations, each overwriting the certificate before the key (for a moment the pair
    // does not match, and the previous one must keep serving).
    let mut last_der = first_der.clone();
    for _ in 0..3 {
        let (cert, key, der) = ca.leaf();
        std::fs::write(&cert_path, cert).unwrap();
        at_least(5).await;
        std::fs::write(&key_path, key).unwrap();
        let serve2 = serve.clone();
        let want = der.clone();
        eventually("the new certificate is served", || {
            let (serve, want) = (serve2.clone(), want.clone());
            async move { served_certificate(&serve).await == Some(want) }
        })
        .await;
        last_der = der;
        at_least(20).await;
    }
    // A broken configuration is refused, then a good change is applied, all under load.
    std::fs::write(&config, "mode: sometimes\n").unwrap();
    let serve2 = serve.clone();
    eventually("the broken configuration is refused", || {
        let serve = serve2.clone();
        async move {
            serve
                .metrics()
                .await
                .contains(r#"portcullis_config_reloads_total{result="rejected"} 1"#)
        }
    })
    .await;
    at_least(20).await;
    std::fs::write(
        &config,
        "mode: enforce\nlimits: {defaultTimeoutSeconds: 9}\n",
    )
    .unwrap();
    let serve2 = serve.clone();
    eventually("the repaired configuration is applied", || {
        let serve = serve2.clone();
        async move {
            serve
                .metrics()
                .await
                .contains(r#"portcullis_config_reloads_total{result="applied"} 1"#)
        }
    })
    .await;
    at_least(30).await;
    stop.store(true, Ordering::SeqCst);
    for flow in flows {
        flow.await.unwrap();
    }
    let metrics = serve.metrics().await;
    let requests = sent.load(Ordering::SeqCst);
    let failures = failures.lock().unwrap().clone();
    eprintln!(
        "rotation x3 + broken and repaired configuration: {requests} reviews, {} failed, max \
         latency {:?}, RSS {} kB -> {} kB",
        failures.len(),
        *max.lock().unwrap(),
        rss_before,
        serve.rss_kb().unwrap_or_default()
    );
    assert_eq!(failures, Vec::<String>::new());
    assert_ne!(first_der, last_der);
    assert!(
        metrics.contains(r#"portcullis_tls_reloads_total{result="applied"}"#),
        "{metrics}"
    );
}

/// The certificate a new connection is served.
async fn served_certificate(serve: &ServeChild) -> Option<Vec<u8>> {
    let tls = raw_tls(serve).await.ok()?;
    let (_, connection) = tls.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
}

async fn raw_tls(
    serve: &ServeChild,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tls::connect(serve.webhook_addr, &serve.ca_pem).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_slow_header_and_slow_body_connections_keep_memory_bounded_and_reviews_answered()
 {
    const IDLE: usize = 300;
    const SLOW_HEADERS: usize = 100;
    const SLOW_BODIES: usize = 100;
    const BUFFERED: usize = 4 * 1024 * 1024;
    const BODY: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    // Header timeout long enough that the slow heads are still held while measured.
    let config = write_file(
        dir.path(),
        "config.yaml",
        &format!(
            "mode: enforce\nlimits: {{headerReadTimeoutMillis: 60000, maxRequestBytes: 1048576, maxBufferedRequestBytes: {BUFFERED}}}\n"
        ),
    );
    let serve = Arc::new(common::serve().config(&config).spawn());
    let warm = serve.client();
    for _ in 0..20 {
        let response = warm
            .post(serve.validate_url("10s"))
            .body(fixture_bytes("deployment-compliant"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let rss_before = serve.rss_kb().unwrap_or_default();
    let mut held = Vec::new();
    for _ in 0..IDLE {
        held.push(raw_tls(&serve).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tricklers = Vec::new();
    for i in 0..SLOW_HEADERS + SLOW_BODIES {
        let mut stream = raw_tls(&serve).await.unwrap();
        let slow_body = i >= SLOW_HEADERS;
        let head = if slow_body {
            format!(
                "POST /validate?timeout=30s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: \
                 application/json\r\nContent-Length: {BODY}\r\n\r\n{{\"apiVersion\""
            )
        } else {
            "POST /validate?timeout=30s HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_owned()
        };
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        let (stop, refused) = (stop.clone(), refused.clone());
        tricklers.push(tokio::spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(stream);
            let answered = tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let n = reader.read(&mut buf).await.unwrap_or(0);
                String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503")
            });
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let chunk = if slow_body {
                    " ".to_owned()
                } else {
                    format!("X-Slow-{n}: a\r\n")
                };
                n += 1;
                if writer.write_all(chunk.as_bytes()).await.is_err()
                    || writer.flush().await.is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            drop(writer);
            if tokio::time::timeout(Duration::from_secs(1), answered)
                .await
                .is_ok_and(|r| r.unwrap_or(false))
            {
                refused.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Normal reviews on a fresh keep-alive connection, and on new connections, all answered.
    let client = serve.client();
    let mut max = Duration::ZERO;
    const REVIEWS: usize = 100;
    for i in 0..REVIEWS {
        let client = if i.is_multiple_of(10) {
            serve.client()
        } else {
            client.clone()
        };
        let started = Instant::now();
        let response = client
            .post(serve.validate_url("10s"))
            .body(fixture_bytes("deployment-compliant"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let review: Value = response.json().await.unwrap();
        assert_eq!(review["response"]["allowed"], true);
        max = max.max(started.elapsed());
    }
    let rss_held = serve.rss_kb().unwrap_or_default();
    let metrics = serve.metrics().await;
    let open = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_open_connections "))
        .unwrap_or("?")
        .to_owned();
    stop.store(true, Ordering::SeqCst);
    drop(held);
    for trickler in tricklers {
        trickler.await.unwrap();
    }
    eprintln!(
        "{IDLE} idle + {SLOW_HEADERS} slow-header + {SLOW_BODIES} slow-body connections held \
         (open_connections {open}, {} slow bodies answered 503): {REVIEWS} reviews answered, max \
         latency {max:?}, RSS {rss_before} kB -> {rss_held} kB while held, peak {} kB",
        refused.load(Ordering::SeqCst),
        serve.peak_rss_kb().unwrap_or_default()
    );
    // Bounded: the buffered bodies by maxBufferedRequestBytes, each connection by its
    // buffers; far from what 500 unbounded connections could hold.
    assert!(
        rss_held < rss_before + 64 * 1024,
        "RSS grew from {rss_before} kB to {rss_held} kB"
    );
    assert!(
        metrics.contains("portcullis_buffered_request_bytes"),
        "{metrics}"
    );
}
