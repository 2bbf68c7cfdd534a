//! Leader election over a coordination.k8s.io/v1 Lease. No kube-apiserver can run here, so
//! each replica's kube client talks to kube's mock service (tower-test), answered by a small
//! in-memory Lease store that keeps the API server's rules the election relies on: GET answers
//! 404 with a `Status` when there is no Lease, POST of an existing name is 409 AlreadyExists,
//! and a PUT whose `metadata.resourceVersion` is not the stored one is 409 Conflict.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

use std::sync::{Arc, Mutex};

use kube::client::Body;
use portcullis::clock::Clock;
use portcullis::leader::LeaseLock;
use serde_json::Value;
use time::OffsetDateTime;

use portcullis_test_support::mock_apiserver::{
    self, json_body, json_response as response, status_response as status,
};

const NAMESPACE: &str = "portcullis";
const LEASE: &str = "portcullis-rejudge";
const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/portcullis/leases";

/// What the fake API server holds, shared by every replica's mock connection.
#[derive(Default)]
struct Store {
    lease: Option<Value>,
    resource_version: u64,
    writes: usize,
    /// Answer everything with 500 (an API server that is down or overloaded).
    failing: bool,
    /// After the next GET, another writer changes the Lease (a lost race).
    interfere_after_get: bool,
}

type Shared = Arc<Mutex<Store>>;

fn store_lease(store: &mut Store, mut lease: Value) -> Value {
    store.resource_version += 1;
    store.writes += 1;
    lease["apiVersion"] = "coordination.k8s.io/v1".into();
    lease["kind"] = "Lease".into();
    lease["metadata"]["resourceVersion"] = store.resource_version.to_string().into();
    lease["metadata"]["uid"] = "0b7e2a8e-5c1b-4a8e-9a57-3c1f0f0d7d11".into();
    store.lease = Some(lease.clone());
    lease
}

async fn answer(request: http::Request<Body>, shared: Shared) -> http::Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = json_body(request).await;
    let mut store = shared.lock().unwrap();
    if store.failing {
        return status(500, "InternalError", "etcdserver: request timed out");
    }
    let named = format!("{PATH}/{LEASE}");
    match (method.as_str(), path.as_str()) {
        ("GET", p) if p == named => {
            let Some(lease) = store.lease.clone() else {
                return status(
                    404,
                    "NotFound",
                    "leases.coordination.k8s.io \"portcullis-rejudge\" not found",
                );
            };
            if std::mem::take(&mut store.interfere_after_get) {
                let mut changed = lease.clone();
                changed["spec"]["holderIdentity"] = "replica-c".into();
                store_lease(&mut store, changed);
            }
            response(200, &lease)
        }
        ("POST", p) if p == PATH => {
            if store.lease.is_some() {
                return status(409, "AlreadyExists", "leases \"portcullis-rejudge\" exists");
            }
            response(201, &store_lease(&mut store, body))
        }
        ("PUT", p) if p == named => {
            let sent = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if sent != store.resource_version.to_string() {
                return status(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled on leases.coordination.k8s.io: the object \
                     has been modified; please apply your changes to the latest version",
                );
            }
            response(200, &store_lease(&mut store, body))
        }
        _ => status(405, "MethodNotAllowed", &format!("{method} {path}")),
    }
}

/// A clock the test moves by hand, shared by the replicas.
#[derive(Debug)]
struct HandClock(Mutex<OffsetDateTime>);

impl HandClock {
    fn advance(&self, seconds: i64) {
        *self.0.lock().unwrap() += time::Duration::seconds(seconds);
    }
}

impl Clock for HandClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

struct Cluster {
    store: Shared,
    clock: Arc<HandClock>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    fn new() -> Self {
        Self {
            store: Shared::default(),
            clock: Arc::new(HandClock(Mutex::new(
                portcullis::timeutil::parse_instant("2026-12-01T10:00:00Z").unwrap(),
            ))),
            servers: Vec::new(),
        }
    }

    /// A replica with its own client (its own mock connection) to the shared store.
    fn replica(&mut self, identity: &str) -> LeaseLock {
        let store = self.store.clone();
        let (client, server) =
            mock_apiserver::client(NAMESPACE, move |request| answer(request, store.clone()));
        self.servers.push(server);
        LeaseLock::new(client, NAMESPACE, LEASE, identity, self.clock.clone())
    }

    fn lease(&self) -> Value {
        self.store.lock().unwrap().lease.clone().unwrap()
    }

    fn writes(&self) -> usize {
        self.store.lock().unwrap().writes
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_another_takes_it_only_after_it_expires() {
    let mut cluster = Cluster::new();
    let a = cluster.replica("replica-a");
    let b = cluster.replica("replica-b");

    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "no Lease yet: a creates it"
    );
    let lease = cluster.lease();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 30);
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
    assert_eq!(lease["metadata"]["namespace"], NAMESPACE);

    // b follows while a's Lease is valid, and writes nothing.
    cluster.clock.advance(29);
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert_eq!(cluster.writes(), 1);

    // a stopped renewing: 30 s after its last renewal b takes over.
    cluster.clock.advance(1);
    assert!(b.try_acquire_or_renew().await.unwrap());
    let lease = cluster.lease();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    // a sees it lost.
    assert!(!a.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn renewing_moves_the_renew_time_and_keeps_others_out() {
    let mut cluster = Cluster::new();
    let a = cluster.replica("replica-a");
    let b = cluster.replica("replica-b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    let acquired = cluster.lease()["spec"]["acquireTime"].clone();

    cluster.clock.advance(20);
    assert!(a.try_acquire_or_renew().await.unwrap());
    let lease = cluster.lease();
    assert_eq!(
        lease["spec"]["acquireTime"], acquired,
        "a renewal keeps acquireTime"
    );
    assert_ne!(lease["spec"]["renewTime"], acquired);
    assert!(
        lease["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .starts_with("2026-12-01T10:00:20"),
        "{lease}"
    );

    // 40 s after the creation but 20 s after the renewal: still a's.
    cluster.clock.advance(20);
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert_eq!(cluster.lease()["spec"]["holderIdentity"], "replica-a");
}

#[tokio::test]
async fn a_write_that_loses_the_race_follows_instead_of_failing() {
    let mut cluster = Cluster::new();
    let a = cluster.replica("replica-a");
    let b = cluster.replica("replica-b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    cluster.clock.advance(60);

    // Between b's read and b's write another replica takes the Lease: the API server
    // refuses b's stale resourceVersion with 409, and b follows.
    cluster.store.lock().unwrap().interfere_after_get = true;
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert_eq!(cluster.lease()["spec"]["holderIdentity"], "replica-c");

    // Two replicas creating the Lease at once: AlreadyExists for the second is not an error.
    let mut fresh = Cluster::new();
    let c = fresh.replica("replica-c");
    let d = fresh.replica("replica-d");
    let (c_leads, d_leads) = tokio::join!(c.try_acquire_or_renew(), d.try_acquire_or_renew());
    let (c_leads, d_leads) = (c_leads.unwrap(), d_leads.unwrap());
    assert!(
        c_leads != d_leads,
        "exactly one leads: c {c_leads}, d {d_leads}"
    );
}

#[tokio::test]
async fn releasing_hands_the_lease_over_at_once() {
    let mut cluster = Cluster::new();
    let a = cluster.replica("replica-a");
    let b = cluster.replica("replica-b");
    assert!(a.try_acquire_or_renew().await.unwrap());
    // b cannot release what it does not hold.
    b.release().await.unwrap();
    assert_eq!(cluster.lease()["spec"]["holderIdentity"], "replica-a");

    a.release().await.unwrap();
    assert!(cluster.lease()["spec"].get("holderIdentity").is_none());
    // No waiting for the lease duration.
    assert!(b.try_acquire_or_renew().await.unwrap());
    assert_eq!(cluster.lease()["spec"]["holderIdentity"], "replica-b");
    assert_eq!(cluster.lease()["spec"]["leaseTransitions"], 1);
}

#[tokio::test]
async fn an_unreachable_api_server_is_an_error_that_names_the_lease() {
    let mut cluster = Cluster::new();
    let a = cluster.replica("replica-a");
    cluster.store.lock().unwrap().failing = true;
    let err = a.try_acquire_or_renew().await.unwrap_err().to_string();
    assert!(
        err.contains("Lease portcullis/portcullis-rejudge") && err.contains("timed out"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_elector_publishes_leadership_and_steps_down_when_renewals_fail() {
    use portcullis::leader::{LEASE_DURATION, RETRY_PERIOD, spawn};
    let mut cluster = Cluster::new();
    let a = Arc::new(cluster.replica("replica-a"));
    let wanted = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (leading, mut watch) = tokio::sync::watch::channel(false);
    let wanted_now = wanted.clone();
    let elector = spawn(
        a,
        leading,
        Box::new(move || wanted_now.load(std::sync::atomic::Ordering::SeqCst)),
    );
    watch.wait_for(|l| *l).await.unwrap();

    // The API server goes away: a keeps leading until its last renewal is a lease duration
    // old, then steps down.
    cluster.store.lock().unwrap().failing = true;
    let failed_at = tokio::time::Instant::now();
    watch.wait_for(|l| !*l).await.unwrap();
    let led_for = failed_at.elapsed();
    assert!(
        led_for + RETRY_PERIOD >= LEASE_DURATION && led_for <= LEASE_DURATION + RETRY_PERIOD,
        "stepped down after {led_for:?}"
    );

    // Back again: a leads again; when the configuration stops asking for leader election,
    // a releases the Lease.
    cluster.store.lock().unwrap().failing = false;
    watch.wait_for(|l| *l).await.unwrap();
    wanted.store(false, std::sync::atomic::Ordering::SeqCst);
    watch.wait_for(|l| !*l).await.unwrap();
    // The release is written right after the flag changes.
    let store = cluster.store.clone();
    portcullis_test_support::eventually("the Lease is released", || {
        let released = store.lock().unwrap().lease.as_ref().unwrap()["spec"]
            .get("holderIdentity")
            .is_none();
        async move { released }
    })
    .await;
    elector.abort();
}
