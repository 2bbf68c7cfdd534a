//! Prometheus metrics (prometheus-client): reviews by verdict, kind and operation, review
//! latency, in-flight reviews, rejected bodies, configuration and TLS reloads, and the identity
//! of the configuration in force.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub verdict: String,
    pub kind: String,
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceRuleLabels {
    pub namespace: String,
    pub rule: String,
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    pub identity: String,
}

type HistogramFamily = Family<VerdictLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~8 s: warm reviews take well under a millisecond, cold ones wait on registries.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 15,
    ))
}

/// All metrics of one process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reviews: Family<ReviewLabels, Counter>,
    pub review_seconds: HistogramFamily,
    pub in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub rejected_requests: Family<ReasonLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub tls_reloads: Family<ResultLabels, Counter>,
    pub config_identity: Family<IdentityLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub evidence_errors: Counter<u64, AtomicU64>,
    pub running_workloads: Family<OutcomeLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub running_findings: Family<RuleLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// The same findings by namespace too (bounded by namespaces × rules × modes).
    pub running_namespace_findings:
        Family<NamespaceRuleLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub rejudge_passes: Family<ResultLabels, Counter>,
    pub rego_policies: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub rejudge_leader: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub policy_report_writes: Family<ResultLabels, Counter>,
    /// Events recorded on workloads whose running verdict changed, by result.
    pub rejudge_events: Family<ResultLabels, Counter>,
    pub certificate_not_after: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub certificate_checks: Family<ResultLabels, Counter>,
    /// Open connections on the webhook port (bounded by `limits.maxConnections`).
    pub open_connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Connections closed by a guard, by reason (`handshake-timeout`, `header-timeout`,
    /// `idle-timeout`).
    pub closed_connections: Family<ReasonLabels, Counter>,
    /// Bytes of request bodies held now (bounded by `limits.maxBufferedRequestBytes`).
    pub buffered_request_bytes: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// `/mutate` answers by result (`patched`, `unchanged`, `disabled`, `not-applicable`).
    pub pinning_reviews: Family<ResultLabels, Counter>,
    /// Image sites rewritten to a digest by `/mutate`.
    pub pinned_images: Counter<u64, AtomicU64>,
    /// Image sites `/mutate` would have pinned but could not resolve (left as written).
    pub unpinned_images: Counter<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "reviews",
            "Admission reviews answered, by verdict, kind and operation",
            reviews.clone(),
        );
        let review_seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "review_duration_seconds",
            "Time to answer one admission review",
            review_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "reviews_in_flight",
            "Admission reviews being answered now",
            in_flight.clone(),
        );
        let rejected_requests = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests answered with an HTTP error (400, 408, 413, 503), by reason",
            rejected_requests.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result (applied, rejected, unchanged)",
            config_reloads.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Serving certificate reloads, by result (applied, rejected)",
            tls_reloads.clone(),
        );
        let config_identity = Family::default();
        registry.register(
            "config_identity",
            "Identity (content hash) of the configuration and Rego policies in force; value is always 1",
            config_identity.clone(),
        );
        let evidence_errors = Counter::default();
        registry.register(
            "evidence_errors",
            "Reviews whose evidence could not be gathered (onError applied)",
            evidence_errors.clone(),
        );
        let running_workloads = Family::default();
        registry.register(
            "running_workloads",
            "Running workloads (one per controller) by the outcome the last re-judging gave",
            running_workloads.clone(),
        );
        let running_findings = Family::default();
        registry.register(
            "running_findings",
            "Findings on running workloads at the last re-judging, by rule and mode",
            running_findings.clone(),
        );
        let running_namespace_findings = Family::default();
        registry.register(
            "running_namespace_findings",
            "Findings on running workloads at the last re-judging, by namespace, rule and mode",
            running_namespace_findings.clone(),
        );
        let rejudge_passes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "rejudge_passes",
            "Re-judging passes over the running pods, by result (ok, failed)",
            rejudge_passes.clone(),
        );
        let rego_policies = Gauge::default();
        registry.register(
            "rego_policies",
            "Rego policies (packages with violation, deny or warn rules) in force",
            rego_policies.clone(),
        );
        let rejudge_leader = Gauge::default();
        registry.register(
            "rejudge_leader",
            "1 when this replica runs the re-judging passes (holds the Lease, or leader election is off)",
            rejudge_leader.clone(),
        );
        let policy_report_writes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_report_writes",
            "PolicyReport writes after re-judging passes, by result (ok, failed)",
            policy_report_writes.clone(),
        );
        let rejudge_events = Family::<ResultLabels, Counter>::default();
        registry.register(
            "rejudge_events",
            "Events recorded on workloads whose running verdict changed, by result (created, \
             repeated, dropped over rejudge.eventsPerMinute, unjudged, failed)",
            rejudge_events.clone(),
        );
        let certificate_not_after = Gauge::default();
        registry.register(
            "certificate_not_after_seconds",
            "Expiry (Unix time) of the serving certificate in use",
            certificate_not_after.clone(),
        );
        let certificate_checks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_checks",
            "Checks of the self-managed certificate (--cert-secret), by result (fresh, rotated, lost-race, failed)",
            certificate_checks.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Open connections on the webhook port",
            open_connections.clone(),
        );
        let closed_connections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "guard_closed_connections",
            "Webhook connections closed by a guard (handshake, header or idle timeout), by reason",
            closed_connections.clone(),
        );
        let pinning_reviews = Family::<ResultLabels, Counter>::default();
        registry.register(
            "pinning_reviews",
            "Digest-pinning (/mutate) answers, by result (patched, unchanged, disabled, not-applicable)",
            pinning_reviews.clone(),
        );
        let pinned_images = Counter::default();
        registry.register(
            "pinned_images",
            "Image sites rewritten to repo[:tag]@digest by /mutate",
            pinned_images.clone(),
        );
        let unpinned_images = Counter::default();
        registry.register(
            "unpinned_images",
            "Image sites /mutate left as written because the registry did not resolve them",
            unpinned_images.clone(),
        );
        let buffered_request_bytes = Gauge::default();
        registry.register(
            "buffered_request_bytes",
            "Bytes of request bodies being read or judged now",
            buffered_request_bytes.clone(),
        );
        Self {
            registry,
            open_connections,
            closed_connections,
            buffered_request_bytes,
            pinning_reviews,
            pinned_images,
            unpinned_images,
            rejudge_leader,
            certificate_not_after,
            certificate_checks,
            policy_report_writes,
            rejudge_events,
            running_workloads,
            running_findings,
            running_namespace_findings,
            rejudge_passes,
            reviews,
            review_seconds,
            in_flight,
            rejected_requests,
            config_reloads,
            tls_reloads,
            config_identity,
            evidence_errors,
            rego_policies,
        }
    }

    /// Whether this replica runs re-judging passes; a replica that stops withdraws the
    /// running-workload figures of its last pass (the new leader publishes its own).
    pub fn set_rejudge_leader(&self, leading: bool) {
        let was = self.rejudge_leader.set(i64::from(leading));
        if was == 1 && !leading {
            self.running_workloads.clear();
            self.running_findings.clear();
            self.running_namespace_findings.clear();
        }
    }

    /// The running workloads' findings by (namespace, rule, mode); vanished ones are removed.
    pub fn record_running_by_namespace(
        &self,
        findings: &std::collections::HashMap<(String, String, &'static str), usize>,
    ) {
        self.running_namespace_findings.clear();
        for ((namespace, rule, mode), count) in findings {
            self.running_namespace_findings
                .get_or_create(&NamespaceRuleLabels {
                    namespace: namespace.clone(),
                    rule: rule.clone(),
                    mode: (*mode).to_owned(),
                })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    /// Publishes a re-judging pass; gauges of outcomes and rules that vanished are removed.
    /// `by_outcome`: workloads by outcome; `findings`: findings by (rule, mode).
    pub fn record_rejudge(
        &self,
        by_outcome: &std::collections::HashMap<&'static str, usize>,
        findings: &std::collections::HashMap<(String, &'static str), usize>,
    ) {
        self.record_running(by_outcome, findings);
        self.record_rejudge_pass();
    }

    /// One full re-judging pass finished.
    pub fn record_rejudge_pass(&self) {
        self.rejudge_passes
            .get_or_create(&ResultLabels {
                result: "ok".into(),
            })
            .inc();
    }

    /// An Event write's result (`Recorded::as_str()`, or `failed`).
    pub fn record_rejudge_event(&self, result: &str) {
        self.rejudge_events
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// The running workloads' current outcomes and findings (after a pass or a change).
    pub fn record_running(
        &self,
        by_outcome: &std::collections::HashMap<&'static str, usize>,
        findings: &std::collections::HashMap<(String, &'static str), usize>,
    ) {
        self.running_workloads.clear();
        for (outcome, count) in by_outcome {
            self.running_workloads
                .get_or_create(&OutcomeLabels {
                    outcome: (*outcome).to_owned(),
                })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        self.running_findings.clear();
        for ((rule, mode), count) in findings {
            self.running_findings
                .get_or_create(&RuleLabels {
                    rule: rule.clone(),
                    mode: (*mode).to_owned(),
                })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }

    /// A pass that could not list or judge the pods; the last results stay published.
    pub fn record_policy_report_write(&self, ok: bool) {
        self.policy_report_writes
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }

    pub fn record_certificate_check(&self, result: &str) {
        self.certificate_checks
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Publishes the expiry of the serving certificate (PEM) now in use.
    pub fn set_certificate_expiry(&self, cert_pem: Option<&[u8]>) {
        if let Some(not_after) = cert_pem.and_then(crate::tls::not_after) {
            self.certificate_not_after.set(not_after.unix_timestamp());
        }
    }

    pub fn record_rejudge_failure(&self) {
        self.rejudge_passes
            .get_or_create(&ResultLabels {
                result: "failed".into(),
            })
            .inc();
    }

    /// Records one answered review.
    pub fn record_review(&self, verdict: &str, kind: &str, operation: &str, seconds: f64) {
        self.reviews
            .get_or_create(&ReviewLabels {
                verdict: verdict.to_owned(),
                kind: kind.to_owned(),
                operation: operation.to_owned(),
            })
            .inc();
        self.review_seconds
            .get_or_create(&VerdictLabels {
                verdict: verdict.to_owned(),
            })
            .observe(seconds);
    }

    /// Records one `/mutate` answer.
    pub fn record_pinning(&self, outcome: &crate::pinning::Outcome) {
        self.pinning_reviews
            .get_or_create(&ResultLabels {
                result: outcome.as_str().to_owned(),
            })
            .inc();
        self.pinned_images
            .inc_by(u64::try_from(outcome.pins().len()).unwrap_or(u64::MAX));
        let unresolved = outcome.skips().iter().filter(|s| s.unresolved).count();
        self.unpinned_images
            .inc_by(u64::try_from(unresolved).unwrap_or(u64::MAX));
    }

    pub fn record_rejected(&self, reason: &str) {
        self.rejected_requests
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn record_closed_connection(&self, reason: &str) {
        self.closed_connections
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn record_config_reload(&self, result: &str) {
        self.config_reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn record_tls_reload(&self, result: &str) {
        self.tls_reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Publishes the identity of the configuration now in force (and only that one).
    pub fn set_config_identity(&self, identity: &str) {
        self.config_identity.clear();
        self.config_identity
            .get_or_create(&IdentityLabels {
                identity: identity.to_owned(),
            })
            .set(1);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
