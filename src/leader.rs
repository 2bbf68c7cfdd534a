//! Leader election over a `coordination.k8s.io/v1` Lease: of the webhook's replicas only the
//! holder runs background passes (re-judging), so the cluster is listed and its images
//! resolved once per interval, not once per replica. Admission needs no leader: every replica
//! answers reviews.
//!
//! The protocol is client-go's: the holder renews `spec.renewTime` every [`RETRY_PERIOD`]; a
//! candidate takes the Lease once `renewTime + leaseDurationSeconds` has passed. Every write is
//! a replace carrying the `resourceVersion` that was read, so of two candidates racing for an
//! expired Lease the API server lets exactly one win (the other gets 409 Conflict). There is no
//! fencing: for up to one lease duration two replicas may both believe they lead, which is
//! harmless here because a pass only reads the cluster and publishes metrics.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use time::OffsetDateTime;

use crate::clock::Clock;

/// How long a Lease stays valid after its last renewal (`leaseDurationSeconds`).
pub const LEASE_DURATION: Duration = Duration::from_secs(30);
/// How often the holder renews and candidates look again.
pub const RETRY_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot read Lease {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("cannot write Lease {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("the time {0} cannot be written as a Lease time")]
    Time(OffsetDateTime),
}

/// What a replica does next, given the Lease as read (pure: see [`next_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists yet: create it, held by us.
    Create,
    /// The Lease is free or expired: take it over.
    Take,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a valid Lease.
    Follow { holder: String },
}

/// Decides the next step from the Lease as read, our identity and the time now. A Lease
/// without a renewal time, holder or duration counts as expired.
pub fn next_step(lease: Option<&Lease>, identity: &str, now: OffsetDateTime) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    let Some(holder) = holder else {
        return Step::Take;
    };
    if holder == identity {
        return Step::Renew;
    }
    let renewed = spec
        .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
        .and_then(to_offset);
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .filter(|d| *d > 0);
    match (renewed, duration) {
        (Some(renewed), Some(seconds))
            if now < renewed + time::Duration::seconds(i64::from(seconds)) =>
        {
            Step::Follow {
                holder: holder.to_owned(),
            }
        }
        _ => Step::Take,
    }
}

fn to_offset(time: &MicroTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(time.0.as_nanosecond()).ok()
}

fn to_micro(time: OffsetDateTime) -> Result<MicroTime, LeaderError> {
    k8s_openapi::jiff::Timestamp::from_nanosecond(time.unix_timestamp_nanos())
        .map(MicroTime)
        .map_err(|_| LeaderError::Time(time))
}

/// One replica's handle on the Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl LeaseLock {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            clock,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Creates, takes over or renews the Lease as [`next_step`] says; true when we hold it
    /// afterwards. Losing a race (409 Conflict on a write) is not an error: we follow.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|source| self.read_error(source))?;
        let now = self.clock.now();
        let step = next_step(current.as_ref(), &self.identity, now);
        let written = match (&step, current) {
            (Step::Follow { .. }, _) => return Ok(false),
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.held_spec(None, now, now)?),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Step::Take | Step::Renew, None) => return Ok(false),
            (Step::Take, Some(mut lease)) => {
                let transitions = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0);
                lease.spec = Some(self.held_spec(Some(transitions + 1), now, now)?);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (Step::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(to_micro(now)?);
                spec.lease_duration_seconds = Some(lease_seconds());
                if spec.acquire_time.is_none() {
                    spec.acquire_time = Some(to_micro(now)?);
                }
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => {
                if step != Step::Renew {
                    tracing::info!(lease = %self.name, identity = %self.identity, "acquired the leader Lease");
                }
                Ok(true)
            }
            // Another replica wrote first (Conflict) or created it first (AlreadyExists).
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(self.write_error(source)),
        }
    }

    /// Gives the Lease up (on shutdown) so another replica takes over at its next try
    /// instead of after the lease duration. Does nothing when someone else holds it.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|source| self.read_error(source))?
        else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !ours {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(source) => Err(self.write_error(source)),
        }
    }

    fn held_spec(
        &self,
        transitions: Option<i32>,
        acquired: OffsetDateTime,
        renewed: OffsetDateTime,
    ) -> Result<LeaseSpec, LeaderError> {
        Ok(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(lease_seconds()),
            acquire_time: Some(to_micro(acquired)?),
            renew_time: Some(to_micro(renewed)?),
            lease_transitions: Some(transitions.unwrap_or(0)),
            ..LeaseSpec::default()
        })
    }

    fn read_error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Read {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    fn write_error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Write {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }
}

fn lease_seconds() -> i32 {
    i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(i32::MAX)
}

/// Whether leader election is wanted now (read from the configuration in force).
pub type Wanted = Box<dyn Fn() -> bool + Send + Sync>;

/// Keeps trying to lead every [`RETRY_PERIOD`] while `wanted` says so, and publishes whether
/// this replica leads. When the API cannot be reached, a leader steps down once its last
/// successful renewal is a lease duration old — by then another replica may have taken over.
/// When `wanted` turns false, a held Lease is released.
pub fn spawn(
    lock: Arc<LeaseLock>,
    leading: tokio::sync::watch::Sender<bool>,
    wanted: Wanted,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            if !wanted() {
                if leading.send_if_modified(|l| std::mem::replace(l, false))
                    && let Err(err) = lock.release().await
                {
                    tracing::warn!(error = %err, "cannot release the leader Lease");
                }
                last_renewal = None;
                tokio::time::sleep(RETRY_PERIOD).await;
                continue;
            }
            let started = tokio::time::Instant::now();
            match lock.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renewal = Some(started);
                    leading.send_if_modified(|l| !std::mem::replace(l, true));
                }
                Ok(false) => {
                    last_renewal = None;
                    if leading.send_if_modified(|l| std::mem::replace(l, false)) {
                        tracing::warn!(identity = lock.identity(), "lost the leader Lease");
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "leader election: cannot reach the Lease");
                    let expired = last_renewal.is_none_or(|at| at.elapsed() >= LEASE_DURATION);
                    if expired && leading.send_if_modified(|l| std::mem::replace(l, false)) {
                        tracing::warn!("stepped down: the Lease could not be renewed in time");
                    }
                }
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(spec: serde_json::Value) -> Lease {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "portcullis-rejudge", "resourceVersion": "7"},
            "spec": spec
        }))
        .unwrap()
    }

    fn at(text: &str) -> OffsetDateTime {
        crate::timeutil::parse_instant(text).unwrap()
    }

    #[test]
    fn a_valid_lease_of_another_replica_is_followed_until_it_expires() {
        let held = lease(serde_json::json!({
            "holderIdentity": "b", "leaseDurationSeconds": 30,
            "renewTime": "2026-12-01T10:00:00.000000Z"
        }));
        assert_eq!(
            next_step(Some(&held), "a", at("2026-12-01T10:00:29Z")),
            Step::Follow { holder: "b".into() }
        );
        assert_eq!(
            next_step(Some(&held), "a", at("2026-12-01T10:00:30Z")),
            Step::Take
        );
        assert_eq!(
            next_step(Some(&held), "b", at("2026-12-01T10:00:29Z")),
            Step::Renew
        );
    }

    #[test]
    fn a_lease_without_holder_time_or_duration_is_free() {
        let now = at("2026-12-01T10:00:00Z");
        assert_eq!(next_step(None, "a", now), Step::Create);
        for spec in [
            serde_json::json!({"leaseDurationSeconds": 30, "renewTime": "2026-12-01T10:00:00.000000Z"}),
            serde_json::json!({"holderIdentity": "", "leaseDurationSeconds": 30}),
            serde_json::json!({"holderIdentity": "b", "leaseDurationSeconds": 30}),
            serde_json::json!({"holderIdentity": "b", "renewTime": "2026-12-01T10:00:00.000000Z"}),
            serde_json::json!({"holderIdentity": "b", "leaseDurationSeconds": 0, "renewTime": "2026-12-01T10:00:00.000000Z"}),
        ] {
            assert_eq!(
                next_step(Some(&lease(spec.clone())), "a", now),
                Step::Take,
                "{spec}"
            );
        }
        // An acquireTime stands in for a missing renewTime.
        let acquired = lease(serde_json::json!({
            "holderIdentity": "b", "leaseDurationSeconds": 30,
            "acquireTime": "2026-12-01T09:59:50.000000Z"
        }));
        assert_eq!(
            next_step(Some(&acquired), "a", now),
            Step::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn lease_times_round_trip_with_microseconds() {
        let now = at("2026-12-01T10:00:00.123456Z");
        let micro = to_micro(now).ok();
        assert_eq!(micro.as_ref().and_then(to_offset), Some(now));
    }
}
