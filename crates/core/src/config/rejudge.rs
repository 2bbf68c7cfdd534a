//! `rejudge`: how often `serve` judges the running pods again, under which Lease, and its
//! checks.

use serde::{Deserialize, Serialize};

use super::names::is_dns_subdomain;
use super::{Problem, yes};

/// `rejudge`: how `serve` judges the running pods again — on every change that can change the
/// answer (a new scan report, a reload, an exception's expiry, a pod started or replaced), and
/// as a safety pass every `interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RejudgeSettings {
    /// The periodic safety pass over every running digest (at least one minute); changes are
    /// judged as they happen, in between.
    pub interval: crate::timeutil::HumanDuration,
    /// Only the replica holding a Lease runs passes (default true). Off, every replica runs
    /// its own passes (a single replica, or a namespace where Leases may not be written).
    #[serde(default = "yes")]
    pub leader_election: bool,
    /// The Lease, in the namespace `serve` runs in (default `portcullis-rejudge`); give two
    /// installations in one namespace different names.
    #[serde(default = "default_lease_name")]
    pub lease_name: String,
    /// Write a `wgpolicyk8s.io/v1alpha2` PolicyReport per namespace after each pass (default
    /// false: needs the CRD and the chart's `rbac.policyReports`).
    #[serde(default)]
    pub policy_reports: bool,
    /// Also write `openreports.io/v1alpha1` Reports (the successor of wgpolicyk8s.io), one per
    /// namespace, where the cluster serves that API (default false: needs the CRD and the
    /// chart's `rbac.openReports`). A cluster that does not serve it is logged once, not retried
    /// on every change.
    #[serde(default)]
    pub open_reports: bool,
    /// Record a Kubernetes Event (`events.k8s.io/v1`) on a workload when its verdict changes
    /// (default true; the chart grants `events` create and patch in every namespace).
    #[serde(default = "yes")]
    pub events: bool,
    /// At most this many Events are written per minute; changes beyond it are counted in
    /// `portcullis_rejudge_events_total{result="dropped"}` and logged, never queued without
    /// bound (default 60).
    #[serde(default = "default_events_per_minute")]
    pub events_per_minute: u32,
    /// The mode of the `running-digest` finding: a container runs a digest other than what its
    /// tag resolves to now, or than what was admitted (default `warn`).
    #[serde(default = "default_moved_tag_mode")]
    pub moved_tag: super::Mode,
    /// How long to wait after a trigger (a new report, a reload, a pod change) before
    /// re-judging, so a burst of changes is judged once (default 2s).
    #[serde(default = "default_settle")]
    pub settle: crate::timeutil::HumanDuration,
    /// How often each base image a running image declares (and an image policy judges with
    /// `baseImageFreshness`) is looked at again: its units are re-judged, resolving the base
    /// tag anew, and outputs change only if the answer did (default 1h, at least 1m).
    #[serde(default = "default_recheck")]
    pub base_image_check: crate::timeutil::HumanDuration,
    /// How often the signatures and attestations of a running digest whose vulnerabilities
    /// are judged are read from the registry again, past the verification cache, so that a
    /// rescan attested after the image was admitted is judged (default 1h, at least 1m).
    #[serde(default = "default_recheck")]
    pub attestation_refresh: crate::timeutil::HumanDuration,
}

fn default_recheck() -> crate::timeutil::HumanDuration {
    crate::timeutil::HumanDuration(std::time::Duration::from_secs(3600))
}

fn default_events_per_minute() -> u32 {
    60
}

fn default_moved_tag_mode() -> super::Mode {
    super::Mode::Warn
}

fn default_settle() -> crate::timeutil::HumanDuration {
    crate::timeutil::HumanDuration(std::time::Duration::from_secs(2))
}

fn default_lease_name() -> String {
    "portcullis-rejudge".to_owned()
}

impl RejudgeSettings {
    /// Checks of `rejudge`.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        if self.interval.0 < std::time::Duration::from_secs(60) {
            problem(
                "rejudge.interval".into(),
                format!(
                    "{} is too often: each pass lists every pod; use at least 1m",
                    self.interval
                ),
            );
        }
        if self.events_per_minute == 0 && self.events {
            problem(
                "rejudge.eventsPerMinute".into(),
                "0 would drop every Event; set rejudge.events: false to write none".into(),
            );
        }
        if self.settle.0 > std::time::Duration::from_secs(60) {
            problem(
                "rejudge.settle".into(),
                format!(
                    "{} would delay every re-judgement past a minute; use at most 60s",
                    self.settle
                ),
            );
        }
        for (key, every) in [
            ("rejudge.baseImageCheck", self.base_image_check),
            ("rejudge.attestationRefresh", self.attestation_refresh),
        ] {
            if every.0 < std::time::Duration::from_secs(60) {
                problem(
                    key.into(),
                    format!(
                        "{every} is too often: each check asks the registry again for every \
                         running image it concerns; use at least 1m"
                    ),
                );
            }
        }
        if !is_dns_subdomain(&self.lease_name) {
            problem(
                "rejudge.leaseName".into(),
                format!(
                    "{:?} is not a Kubernetes object name (lowercase letters, digits, '-' and \
                     '.', at most 253 characters, starting and ending alphanumeric)",
                    self.lease_name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{LoadedConfig, problem_keys};

    #[test]
    fn rechecks_default_to_an_hour_and_more_often_than_a_minute_is_refused() {
        let loaded = LoadedConfig::from_yaml("rejudge: {interval: 10m}\n", "t").unwrap();
        let rejudge = loaded.config.rejudge.unwrap();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(
            (rejudge.base_image_check.0, rejudge.attestation_refresh.0),
            (hour, hour)
        );
        assert_eq!(
            problem_keys(
                "rejudge: {interval: 10m, baseImageCheck: 30s, attestationRefresh: 59s}\n"
            ),
            ["rejudge.baseImageCheck", "rejudge.attestationRefresh"]
        );
        assert!(
            LoadedConfig::from_yaml(
                "rejudge: {interval: 10m, baseImageCheck: 1m, attestationRefresh: 6h}\n",
                "t"
            )
            .is_ok()
        );
    }
}
