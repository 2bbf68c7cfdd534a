//! `rejudge`: how often `serve` judges the running pods again, under which Lease, and its
//! checks.

use serde::{Deserialize, Serialize};

use super::names::is_dns_subdomain;
use super::{Problem, yes};

/// `rejudge`: how often `serve` judges the running pods again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RejudgeSettings {
    /// At least one minute: each pass lists every pod of the cluster.
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
