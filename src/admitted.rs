//! What admission resolved, per pod site: the digest each container's reference named when
//! its pod was admitted, so re-judging can tell a node that runs something else (the tag
//! moved between admission and pull, or a stale cached image). Bounded and per replica: the
//! replica that admitted a pod is the one that knows; `/mutate` pinning is the cluster-wide
//! way to make the admitted digest the one that runs.

use std::time::Duration;

use crate::workload::ContainerKind;

/// How many sites are remembered at most (each entry is a few hundred bytes).
pub const DEFAULT_CAPACITY: u64 = 100_000;
/// How long an admission is remembered: past a week, a pod has pulled long ago, and a
/// rollout has admitted its pods again.
pub const DEFAULT_TIME_TO_LIVE: Duration = Duration::from_secs(7 * 24 * 3600);

/// One pod site: namespace, the pod's controlling owner (`ReplicaSet/web-5b7d`, or `Pod/name`
/// for a bare pod), and the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdmittedSite {
    pub namespace: String,
    pub owner: String,
    pub kind: ContainerKind,
    pub container: String,
}

/// The digests admission resolved, by site; least recently used sites are evicted first.
#[derive(Clone)]
pub struct AdmittedDigests {
    sites: moka::sync::Cache<AdmittedSite, String>,
}

impl std::fmt::Debug for AdmittedDigests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmittedDigests")
            .field("sites", &self.sites.entry_count())
            .finish()
    }
}

impl Default for AdmittedDigests {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_TIME_TO_LIVE)
    }
}

impl AdmittedDigests {
    pub fn new(capacity: u64, time_to_live: Duration) -> Self {
        Self {
            sites: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(time_to_live)
                .build(),
        }
    }

    /// Records what admission resolved a site's reference to.
    pub fn record(&self, site: AdmittedSite, digest: &str) {
        self.sites.insert(site, digest.to_owned());
    }

    /// The digest admitted for a site, when this replica admitted it and still remembers.
    pub fn get(&self, site: &AdmittedSite) -> Option<String> {
        self.sites.get(site)
    }

    /// Sites remembered (approximate until moka's pending maintenance has run).
    pub fn len(&self) -> u64 {
        self.sites.run_pending_tasks();
        self.sites.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(owner: &str, container: &str) -> AdmittedSite {
        AdmittedSite {
            namespace: "shop".into(),
            owner: owner.into(),
            kind: ContainerKind::Container,
            container: container.into(),
        }
    }

    #[test]
    fn a_recorded_site_is_found_and_another_is_not() {
        let admitted = AdmittedDigests::default();
        admitted.record(site("ReplicaSet/web-1", "app"), "sha256:aa");
        assert_eq!(
            admitted.get(&site("ReplicaSet/web-1", "app")).as_deref(),
            Some("sha256:aa")
        );
        assert_eq!(admitted.get(&site("ReplicaSet/web-1", "sidecar")), None);
        assert_eq!(admitted.get(&site("ReplicaSet/web-2", "app")), None);
        // A newer admission of the same site replaces the older.
        admitted.record(site("ReplicaSet/web-1", "app"), "sha256:bb");
        assert_eq!(
            admitted.get(&site("ReplicaSet/web-1", "app")).as_deref(),
            Some("sha256:bb")
        );
    }

    #[test]
    fn the_store_stays_within_its_capacity() {
        let admitted = AdmittedDigests::new(100, DEFAULT_TIME_TO_LIVE);
        for n in 0..1_000 {
            admitted.record(site(&format!("Pod/p{n}"), "app"), "sha256:aa");
        }
        assert!(admitted.len() <= 100, "{} sites kept", admitted.len());
    }
}
