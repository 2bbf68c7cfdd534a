//! Re-judging what runs (`serve` with `rejudge.interval`): every interval, the pods of the
//! cluster are judged again with the engine in force — so a new vulnerability report, an
//! expired exception or a deprecated image's sunset shows up for workloads admitted long ago.
//! Results go to metrics (`portcullis_running_workloads`, `portcullis_running_findings`) and
//! logs; nothing in the cluster is changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::decision::Outcome;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::object_review::{
    AuditError, RunningPods, group_by_controller, judge_objects, read_cluster,
};
use crate::policy_report::{PolicyReportWriter, WriteSummary, build_reports};

/// How often a disabled re-judging task looks again whether a reload enabled it.
const IDLE_CHECK: Duration = Duration::from_secs(60);

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassSummary {
    pub pods: usize,
    /// Objects judged: one per controller (replicas share a template) or bare pod.
    pub workloads: usize,
    /// Workloads by outcome (`allowed`, `denied`, `warned`, ...).
    pub by_outcome: HashMap<&'static str, usize>,
    /// Findings by (rule, mode).
    pub findings: HashMap<(String, &'static str), usize>,
    /// What writing PolicyReports did, when `rejudge.policyReports` is on.
    pub reports: Option<Result<WriteSummary, String>>,
}

/// What re-judging needs from the running server: the engine in force (it changes on reload)
/// and the metrics it publishes to. `server::AppState` is one; re-judging never names the
/// server, so the HTTP layer and the cluster work do not depend on each other.
pub trait RejudgeHost: Send + Sync {
    fn engine(&self) -> Arc<Engine>;
    fn metrics(&self) -> &Metrics;
}

impl<T: RejudgeHost + ?Sized> RejudgeHost for Arc<T> {
    fn engine(&self) -> Arc<Engine> {
        (**self).engine()
    }
    fn metrics(&self) -> &Metrics {
        (**self).metrics()
    }
}

/// Judges every running pod once with the engine in force, and publishes the result: metrics
/// and logs always, PolicyReports through `reports` when `rejudge.policyReports` is on. A
/// report that cannot be written is logged and counted; it does not fail the pass.
pub async fn pass(
    state: &(impl RejudgeHost + ?Sized),
    pods: &dyn RunningPods,
    reports: Option<&PolicyReportWriter>,
) -> Result<PassSummary, AuditError> {
    let engine = state.engine();
    let targets = group_by_controller(read_cluster(pods).await?);
    let objects: Vec<_> = targets.iter().map(|t| t.object.clone()).collect();
    let judged = judge_objects(&engine, &objects, "portcullis-rejudge").await?;
    let mut summary = PassSummary {
        pods: targets.iter().map(|t| t.count).sum(),
        workloads: targets.len(),
        ..PassSummary::default()
    };
    for (result, target) in judged.iter().zip(&targets) {
        *summary
            .by_outcome
            .entry(result.outcome.as_str())
            .or_default() += 1;
        for finding in &result.findings {
            *summary
                .findings
                .entry((finding.rule.clone(), finding.mode.as_str()))
                .or_default() += 1;
        }
        if matches!(result.outcome, Outcome::Denied | Outcome::ErrorDenied) {
            let rules: Vec<&str> = result.findings.iter().map(|f| f.rule.as_str()).collect();
            tracing::warn!(
                workload = %target.label,
                rules = %rules.join(","),
                message = result.message.as_deref().unwrap_or_default(),
                "a running workload would be denied now"
            );
        }
    }
    state
        .metrics()
        .record_rejudge(&summary.by_outcome, &summary.findings);
    let wanted = engine
        .config()
        .rejudge
        .as_ref()
        .is_some_and(|r| r.policy_reports);
    if wanted {
        summary.reports = Some(match reports {
            Some(writer) => {
                let built = build_reports(&targets, &judged, engine.clock().now());
                let written = writer.write(&built).await.map_err(|err| err.to_string());
                state.metrics().record_policy_report_write(written.is_ok());
                if let Err(err) = &written {
                    tracing::error!(error = %err, "cannot write PolicyReports");
                }
                written
            }
            None => Err("no cluster access to write PolicyReports".to_owned()),
        });
    }
    Ok(summary)
}

/// Runs [`pass`] every `rejudge.interval` of the configuration in force (re-read after each
/// pass, so a reload can enable, disable or retime it), until the task is aborted.
///
/// With `leading` (leader election on), passes run only while it says this replica holds the
/// Lease; a replica that becomes leader runs a pass at once. A replica that stops leading
/// withdraws its running-workload gauges, so only the leader's figures are exported.
pub fn spawn(
    state: Arc<dyn RejudgeHost>,
    pods: Arc<dyn RunningPods>,
    mut leading: Option<tokio::sync::watch::Receiver<bool>>,
    reports: Option<Arc<PolicyReportWriter>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Some(settings) = state.engine().config().rejudge.clone() else {
                tokio::time::sleep(IDLE_CHECK).await;
                continue;
            };
            let interval = settings.interval.0;
            if settings.leader_election
                && let Some(leading) = leading.as_mut()
                && !*leading.borrow_and_update()
            {
                state.metrics().set_rejudge_leader(false);
                // Wait to become leader, but look at the configuration again each interval.
                let waited = tokio::time::timeout(interval.min(IDLE_CHECK), leading.changed());
                if let Ok(Err(_elector_gone)) = waited.await {
                    // Never spin: without an elector this replica stays a follower.
                    tokio::time::sleep(IDLE_CHECK).await;
                }
                continue;
            }
            state.metrics().set_rejudge_leader(true);
            match pass(&state, pods.as_ref(), reports.as_deref()).await {
                Ok(summary) => tracing::info!(
                    pods = summary.pods,
                    workloads = summary.workloads,
                    denied = summary.by_outcome.get("denied").copied().unwrap_or(0),
                    "re-judged running workloads"
                ),
                Err(err) => {
                    state.metrics().record_rejudge_failure();
                    tracing::error!(error = %err, "cannot re-judge running workloads");
                }
            }
            match leading.as_mut().filter(|_| settings.leader_election) {
                // Until the next pass, unless leadership is lost first (then the loop
                // withdraws this replica's figures at once).
                Some(leading) => {
                    let lost = tokio::time::timeout(interval, leading.wait_for(|l| !*l));
                    // (The Ref a successful wait returns is not Send: keep only the outcome.)
                    let elector_gone = matches!(lost.await, Ok(Err(_)));
                    if elector_gone {
                        // Never spin: keep the interval when the elector is gone.
                        tokio::time::sleep(interval).await;
                    }
                }
                None => tokio::time::sleep(interval).await,
            }
        }
    })
}
