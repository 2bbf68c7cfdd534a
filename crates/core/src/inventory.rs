//! The verified-image inventory: per image digest, what this process has seen of it — the
//! references it was written as, the workloads admitted or running with it, who signed it and
//! where the signature was found, its attestations, its last scan and its current verdict.
//! Pure bookkeeping fed from judged [`ReviewSubject`]s; serving it is the binary's.
//!
//! **Bound.** At most `max_digests` digests are kept ([`DEFAULT_MAX_DIGESTS`] by default); a
//! new digest beyond that evicts the one seen least recently. Every list inside a record is
//! bounded too ([`MAX_REFERENCES`], [`MAX_WORKLOADS`], [`MAX_SIGNERS`], [`MAX_ATTESTATIONS`],
//! [`MAX_FINDINGS`], finding text cut to [`MAX_FOUND_CHARS`]), so a record costs roughly
//! 1–2 KiB for a typical image (two references, a few workloads, one signer) and at most
//! about 20 KiB when every list is full: about 20 MiB typical, 200 MiB worst case at the
//! default bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::Mode;
use crate::decision::{Outcome, Verdict};
use crate::evidence::{Format, ImageEvidence, Place, SignatureEvidence};
use crate::policy::{ImageEntry, ScanState, Subject};
use crate::scan::ScanSummary;
use crate::subject::ReviewSubject;

/// Digests kept when the caller names no bound.
pub const DEFAULT_MAX_DIGESTS: usize = 10_000;
/// Distinct references kept per digest (the most recent ones).
pub const MAX_REFERENCES: usize = 16;
/// Workload labels listed per digest; observations of further workloads are only counted.
pub const MAX_WORKLOADS: usize = 64;
/// Distinct verified signatures (signer, place, format) kept per digest.
pub const MAX_SIGNERS: usize = 16;
/// Distinct verified attestations (predicate type, signer) kept per digest.
pub const MAX_ATTESTATIONS: usize = 16;
/// Findings kept of the current verdict, per digest.
pub const MAX_FINDINGS: usize = 16;
/// A finding's text is cut to this many characters (a denial can quote long lists).
pub const MAX_FOUND_CHARS: usize = 512;

/// One verified signature and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignerRecord {
    pub signer: String,
    pub place: Place,
    pub format: Format,
    /// The manifest or layer it came from.
    pub source: String,
}

/// One verified attestation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationRecord {
    pub predicate_type: String,
    pub signer: String,
}

/// A finding of the current verdict about this image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingRecord {
    pub rule: String,
    pub mode: Mode,
    pub found: String,
}

/// The latest decision that judged this digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerdictRecord {
    /// `allowed`, `denied`, `warned`, ... ([`Outcome::as_str`]).
    pub outcome: &'static str,
    /// The workload that decision was about.
    pub workload: String,
    /// The configuration identity that decided.
    pub identity: String,
    #[serde(with = "time::serde::rfc3339")]
    pub decided_at: OffsetDateTime,
    /// Findings about this image (pod-level findings are not the image's).
    pub findings: Vec<FindingRecord>,
}

/// Everything known about one digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestRecord {
    pub digest: String,
    /// References written for it, most recent last.
    pub references: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// `Kind namespace/name` of workloads admitted or running with it.
    pub workloads: BTreeSet<String>,
    /// Observations of workloads beyond [`MAX_WORKLOADS`] (one workload may count more than
    /// once: their names are not kept).
    pub other_workloads: u64,
    /// `verified`, `unverified` or `unavailable`, as last judged; absent when no image
    /// policy gathered evidence for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_state: Option<&'static str>,
    pub signers: BTreeSet<SignerRecord>,
    pub attestations: BTreeSet<AttestationRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanSummary>,
    pub verdict: VerdictRecord,
}

/// Which records a [`Inventory::query`] returns; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The current verdict's outcome.
    pub verdict: Option<Outcome>,
    /// A listed workload in this namespace.
    pub namespace: Option<String>,
    /// A substring of the digest or of a reference.
    pub image: Option<String>,
}

/// A filter value that names nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error(
        "unknown verdict {0:?}: expected allowed, audited, warned, denied, error-denied, error-allowed or skipped"
    )]
    UnknownVerdict(String),
    #[error("unknown filter {0:?}: expected verdict, namespace or image")]
    UnknownKey(String),
    #[error("filter {0:?} is empty")]
    Empty(&'static str),
}

const OUTCOMES: [Outcome; 7] = [
    Outcome::Allowed,
    Outcome::Audited,
    Outcome::Warned,
    Outcome::Denied,
    Outcome::ErrorDenied,
    Outcome::ErrorAllowed,
    Outcome::Skipped,
];

impl Filter {
    /// A filter from query pairs (`verdict=denied`, `namespace=team-a`, `image=nginx`).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, FilterError> {
        let mut filter = Filter::default();
        for (key, value) in pairs {
            match key {
                "verdict" => {
                    let outcome = OUTCOMES
                        .into_iter()
                        .find(|o| o.as_str() == value)
                        .ok_or_else(|| FilterError::UnknownVerdict(value.to_owned()))?;
                    filter.verdict = Some(outcome);
                }
                "namespace" if value.is_empty() => return Err(FilterError::Empty("namespace")),
                "namespace" => filter.namespace = Some(value.to_owned()),
                "image" if value.is_empty() => return Err(FilterError::Empty("image")),
                "image" => filter.image = Some(value.to_owned()),
                other => return Err(FilterError::UnknownKey(other.to_owned())),
            }
        }
        Ok(filter)
    }

    fn matches(&self, record: &Record) -> bool {
        let verdict = self.verdict.is_none_or(|outcome| record.outcome == outcome);
        let namespace = self.namespace.as_deref().is_none_or(|namespace| {
            record
                .public
                .workloads
                .iter()
                .any(|w| workload_namespace(w) == Some(namespace))
        });
        let image = self.image.as_deref().is_none_or(|needle| {
            record.public.digest.contains(needle)
                || record.public.references.iter().any(|r| r.contains(needle))
        });
        verdict && namespace && image
    }
}

/// The namespace of a `Kind namespace/name` label (`None` for a cluster-scoped `Kind name`).
fn workload_namespace(label: &str) -> Option<&str> {
    let (_, object) = label.split_once(' ')?;
    object.split_once('/').map(|(namespace, _)| namespace)
}

#[derive(Debug)]
struct Record {
    public: DigestRecord,
    outcome: Outcome,
    /// Position in [`State::by_recency`].
    tick: u64,
}

#[derive(Debug, Default)]
struct State {
    records: HashMap<String, Record>,
    /// Recency tick → digest; the first entry is the least recently seen.
    by_recency: BTreeMap<u64, String>,
    next_tick: u64,
}

/// The inventory of one process. Cheap to feed: [`Inventory::observe`] takes the lock once
/// per review, after preparing what it writes.
#[derive(Debug)]
pub struct Inventory {
    max_digests: usize,
    state: Mutex<State>,
}

impl Default for Inventory {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_DIGESTS)
    }
}

/// What one image site contributes, prepared outside the lock.
struct Sighting {
    digest: String,
    reference: String,
    signature_state: Option<&'static str>,
    signers: Vec<SignerRecord>,
    attestations: Vec<AttestationRecord>,
    scan: Option<ScanSummary>,
    findings: Vec<FindingRecord>,
}

impl Inventory {
    /// An inventory keeping at most `max_digests` digests (at least one).
    pub fn new(max_digests: usize) -> Self {
        Self {
            max_digests: max_digests.max(1),
            state: Mutex::new(State::default()),
        }
    }

    pub fn max_digests(&self) -> usize {
        self.max_digests
    }

    /// Digests held now.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records every image site of a judged subject that has a digest (resolved by the
    /// evidence, or written in the reference), with `verdict` as its current verdict.
    /// `workload` labels the object (`Deployment team-a/web`), `identity` the configuration
    /// that decided.
    pub fn observe(
        &self,
        subject: &ReviewSubject,
        verdict: &Verdict,
        workload: &str,
        identity: &str,
        now: OffsetDateTime,
    ) {
        let sightings: Vec<Sighting> = subject
            .images
            .iter()
            .filter_map(|entry| sighting(entry, verdict))
            .collect();
        if sightings.is_empty() {
            return;
        }
        let mut state = self.lock();
        for seen in sightings {
            state.record(seen, verdict.outcome, workload, identity, now);
        }
        while state.records.len() > self.max_digests {
            state.evict_oldest();
        }
    }

    /// The records matching `filter`, most recently seen first.
    pub fn query(&self, filter: &Filter) -> Vec<DigestRecord> {
        let state = self.lock();
        state
            .by_recency
            .values()
            .rev()
            .filter_map(|digest| state.records.get(digest))
            .filter(|record| filter.matches(record))
            .map(|record| record.public.clone())
            .collect()
    }

    /// One digest's record.
    pub fn get(&self, digest: &str) -> Option<DigestRecord> {
        self.lock().records.get(digest).map(|r| r.public.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves at worst a half-updated record of
        // bookkeeping; serving it beats losing the inventory.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn record(
        &mut self,
        seen: Sighting,
        outcome: Outcome,
        workload: &str,
        identity: &str,
        now: OffsetDateTime,
    ) {
        let tick = self.next_tick;
        self.next_tick += 1;
        let verdict = VerdictRecord {
            outcome: outcome.as_str(),
            workload: workload.to_owned(),
            identity: identity.to_owned(),
            decided_at: now,
            findings: seen.findings,
        };
        let record = match self.records.get_mut(&seen.digest) {
            Some(record) => {
                self.by_recency.remove(&record.tick);
                record.public.verdict = verdict;
                record.public.last_seen = now;
                record
            }
            None => self
                .records
                .entry(seen.digest.clone())
                .or_insert_with(|| Record {
                    public: DigestRecord {
                        digest: seen.digest.clone(),
                        references: Vec::new(),
                        first_seen: now,
                        last_seen: now,
                        workloads: BTreeSet::new(),
                        other_workloads: 0,
                        signature_state: None,
                        signers: BTreeSet::new(),
                        attestations: BTreeSet::new(),
                        scan: None,
                        verdict,
                    },
                    outcome,
                    tick,
                }),
        };
        record.tick = tick;
        record.outcome = outcome;
        let public = &mut record.public;
        if let Some(position) = public.references.iter().position(|r| *r == seen.reference) {
            public.references.remove(position);
        } else if public.references.len() >= MAX_REFERENCES {
            public.references.remove(0);
        }
        public.references.push(seen.reference);
        if !public.workloads.contains(workload) {
            if public.workloads.len() < MAX_WORKLOADS {
                public.workloads.insert(workload.to_owned());
            } else {
                public.other_workloads = public.other_workloads.saturating_add(1);
            }
        }
        if seen.signature_state.is_some() {
            public.signature_state = seen.signature_state;
        }
        insert_bounded(&mut public.signers, seen.signers, MAX_SIGNERS);
        insert_bounded(
            &mut public.attestations,
            seen.attestations,
            MAX_ATTESTATIONS,
        );
        // A newer observation without a scan (no vulnerability policy matched this time)
        // does not forget the last one known.
        if let Some(scan) = seen.scan {
            let newer = public
                .scan
                .as_ref()
                .is_none_or(|old| old.scanned_at <= scan.scanned_at);
            if newer {
                public.scan = Some(scan);
            }
        }
        self.by_recency.insert(tick, seen.digest);
    }

    fn evict_oldest(&mut self) {
        if let Some((_, digest)) = self.by_recency.pop_first() {
            self.records.remove(&digest);
        }
    }
}

fn insert_bounded<T: Ord>(set: &mut BTreeSet<T>, items: Vec<T>, bound: usize) {
    for item in items {
        if set.len() >= bound {
            break;
        }
        set.insert(item);
    }
}

fn sighting(entry: &ImageEntry, verdict: &Verdict) -> Option<Sighting> {
    let evidence: Option<&ImageEvidence> = match &entry.evidence {
        Some(Ok(evidence)) => Some(evidence),
        _ => None,
    };
    let digest = evidence.and_then(|e| e.digest.clone()).or_else(|| {
        entry
            .reference
            .as_ref()
            .ok()
            .and_then(|r| r.digest().map(str::to_owned))
    })?;
    let reference = match &entry.reference {
        Ok(image) => image.written().to_owned(),
        Err(err) => err.written.clone(),
    };
    let scan = match &entry.scan {
        ScanState::Found(report) => Some(report.summary()),
        _ => evidence
            .and_then(ImageEvidence::attested_scan)
            .map(|r| r.summary()),
    };
    let findings = verdict
        .findings
        .iter()
        .filter(|finding| match &finding.subject {
            Subject::Container {
                container, image, ..
            } => *container == entry.container && *image == reference,
            Subject::Pod => false,
        })
        .take(MAX_FINDINGS)
        .map(|finding| FindingRecord {
            rule: finding.rule.clone(),
            mode: finding.mode,
            found: finding.found.chars().take(MAX_FOUND_CHARS).collect(),
        })
        .collect();
    Some(Sighting {
        digest,
        reference,
        signature_state: evidence.map(|e| signature_state(&e.signatures)),
        signers: evidence.map(signers).unwrap_or_default(),
        attestations: evidence.map(attestations).unwrap_or_default(),
        scan,
        findings,
    })
}

fn signature_state(signatures: &SignatureEvidence) -> &'static str {
    match signatures {
        SignatureEvidence::Verified { .. } => "verified",
        SignatureEvidence::Unverified { .. } => "unverified",
        SignatureEvidence::Unavailable { .. } => "unavailable",
    }
}

/// Verified signatures, from what each policy found.
fn signers(evidence: &ImageEvidence) -> Vec<SignerRecord> {
    evidence
        .verifications
        .iter()
        .flat_map(|v| &v.found)
        .filter(|found| found.verified && found.kind == "signature")
        .map(|found| SignerRecord {
            signer: found.signer.clone(),
            place: found.place,
            format: found.format,
            source: found.source.clone(),
        })
        .collect()
}

/// Verified attestations: those the evidence carries and those a policy found verified.
fn attestations(evidence: &ImageEvidence) -> Vec<AttestationRecord> {
    let carried = evidence.attestations.iter().map(|a| AttestationRecord {
        predicate_type: a.predicate_type.clone(),
        signer: a.signer.clone(),
    });
    let found = evidence
        .verifications
        .iter()
        .flat_map(|v| &v.found)
        .filter(|found| found.verified && found.kind != "signature")
        .map(|found| AttestationRecord {
            predicate_type: found.kind.clone(),
            signer: found.signer.clone(),
        });
    carried.chain(found).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use time::macros::datetime;

    use super::*;
    use crate::evidence::{FoundArtefact, PolicyVerification};
    use crate::policy::Finding;
    use crate::policy::lifecycle::LifecycleFacts;
    use crate::reference::ImageRef;
    use crate::scan::{ScanReport, Severity, Vulnerability};
    use crate::workload::ContainerKind;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn found(kind: &str, signer: &str, verified: bool) -> FoundArtefact {
        FoundArtefact {
            place: Place::ReferrersApi,
            format: Format::SigstoreBundle,
            kind: kind.to_owned(),
            signer: signer.to_owned(),
            verified,
            reason: if verified {
                String::new()
            } else {
                "untrusted key".to_owned()
            },
            source: "sha256:abcd".to_owned(),
        }
    }

    fn signed_evidence(digest: &str) -> ImageEvidence {
        let mut evidence = ImageEvidence::signatures_only(
            Some(digest.to_owned()),
            SignatureEvidence::Verified {
                signers: vec!["key release".to_owned()],
            },
        );
        evidence.verifications.push(PolicyVerification {
            policy: "signed".to_owned(),
            signatures: evidence.signatures.clone(),
            attestations: Vec::new(),
            missing_attestations: Vec::new(),
            found: vec![
                found("signature", "key release", true),
                found("signature", "an unknown key", false),
                found("https://slsa.dev/provenance/v1", "key release", true),
            ],
        });
        evidence
    }

    fn entry(reference: &str, evidence: Option<ImageEvidence>, scan: ScanState) -> ImageEntry {
        ImageEntry {
            container: "app".to_owned(),
            container_kind: ContainerKind::Container,
            reference: ImageRef::parse(reference),
            evidence: evidence.map(|e| Ok(std::sync::Arc::new(e))),
            scan,
            lifecycle: LifecycleFacts::default(),
        }
    }

    fn subject(images: Vec<ImageEntry>) -> ReviewSubject {
        let mut subject = ReviewSubject::new("CREATE", "Deployment", "team-a", "web");
        subject.images = images;
        subject
    }

    fn verdict(outcome: Outcome, findings: Vec<Finding>) -> Verdict {
        Verdict {
            allowed: !matches!(outcome, Outcome::Denied | Outcome::ErrorDenied),
            outcome,
            status_code: None,
            message: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
            findings,
        }
    }

    fn scan(digest: &str) -> ScanState {
        ScanState::Found(Arc::new(ScanReport {
            digest: digest.to_owned(),
            scanned_at: datetime!(2026-11-30 12:00 UTC),
            source: "trivy report /reports/app.json (image)".to_owned(),
            matched_tag: None,
            vulnerabilities: vec![Vulnerability {
                id: "CVE-2026-0001".to_owned(),
                package: "openssl".to_owned(),
                installed_version: "3.0.0".to_owned(),
                fixed_version: "3.0.1".to_owned(),
                severity: Severity::Critical,
                target: "alpine 3.19.1".to_owned(),
                title: "a flaw".to_owned(),
            }],
        }))
    }

    #[test]
    fn records_signers_attestations_scan_and_verdict_of_a_site() {
        let inventory = Inventory::default();
        let reference = format!("registry.example/app@{DIGEST}");
        let review = subject(vec![entry(
            &reference,
            Some(signed_evidence(DIGEST)),
            scan(DIGEST),
        )]);
        let finding = Finding {
            rule: "vulnerability".to_owned(),
            subject: review.images[0].subject(),
            found: "1 critical".to_owned(),
            fix: "rebuild".to_owned(),
            mode: Mode::Warn,
        };
        let pod_finding = Finding {
            subject: Subject::Pod,
            rule: "pod-rule".to_owned(),
            ..finding.clone()
        };
        let now = datetime!(2026-12-01 08:00 UTC);
        inventory.observe(
            &review,
            &verdict(Outcome::Warned, vec![finding, pod_finding]),
            "Deployment team-a/web",
            "config-1",
            now,
        );

        let record = inventory.get(DIGEST).expect("recorded");
        assert_eq!(record.references, vec![reference]);
        assert_eq!(record.first_seen, now);
        assert_eq!(
            record.workloads.iter().collect::<Vec<_>>(),
            ["Deployment team-a/web"]
        );
        assert_eq!(record.signature_state, Some("verified"));
        // Only the verified signature counts as a signer.
        assert_eq!(record.signers.len(), 1);
        let signer = record.signers.first().expect("one signer");
        assert_eq!(signer.signer, "key release");
        assert_eq!(signer.place, Place::ReferrersApi);
        assert_eq!(
            record.attestations.iter().collect::<Vec<_>>(),
            [&AttestationRecord {
                predicate_type: "https://slsa.dev/provenance/v1".to_owned(),
                signer: "key release".to_owned(),
            }]
        );
        let scan = record.scan.as_ref().expect("scan summary");
        assert_eq!(scan.critical, 1);
        assert_eq!(record.verdict.outcome, "warned");
        assert_eq!(record.verdict.identity, "config-1");
        assert_eq!(
            record.verdict.findings.len(),
            1,
            "the pod finding is not the image's"
        );
        assert_eq!(record.verdict.findings[0].rule, "vulnerability");

        let json = serde_json::to_value(&record).expect("serialises");
        assert_eq!(json["firstSeen"], "2026-12-01T08:00:00Z");
        assert_eq!(json["signers"][0]["place"], "referrersApi");
        assert_eq!(json["scan"]["critical"], 1);
    }

    #[test]
    fn sites_without_a_digest_are_not_recorded() {
        let inventory = Inventory::default();
        let review = subject(vec![entry(
            "registry.example/app:1.0",
            None,
            ScanState::NoDigest,
        )]);
        inventory.observe(
            &review,
            &verdict(Outcome::Allowed, Vec::new()),
            "Deployment team-a/web",
            "config-1",
            datetime!(2026-12-01 08:00 UTC),
        );
        assert!(inventory.is_empty());
    }

    #[test]
    fn the_least_recently_seen_digest_is_evicted_at_the_bound() {
        let inventory = Inventory::new(2);
        let third = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
        for (minute, digest) in [(0, DIGEST), (1, OTHER), (2, DIGEST), (3, third)] {
            let review = subject(vec![entry(
                &format!("registry.example/app@{digest}"),
                None,
                ScanState::NotRequested,
            )]);
            inventory.observe(
                &review,
                &verdict(Outcome::Allowed, Vec::new()),
                "Deployment team-a/web",
                "config-1",
                datetime!(2026-12-01 08:00 UTC) + time::Duration::minutes(minute),
            );
        }
        assert_eq!(inventory.len(), 2);
        assert!(inventory.get(OTHER).is_none(), "seen least recently");
        let digests: Vec<String> = inventory
            .query(&Filter::default())
            .into_iter()
            .map(|r| r.digest)
            .collect();
        assert_eq!(digests, [third, DIGEST], "most recently seen first");
    }

    #[test]
    fn workloads_beyond_the_bound_are_counted() {
        let inventory = Inventory::default();
        let review = subject(vec![entry(
            &format!("registry.example/app@{DIGEST}"),
            None,
            ScanState::NotRequested,
        )]);
        for n in 0..MAX_WORKLOADS + 3 {
            inventory.observe(
                &review,
                &verdict(Outcome::Allowed, Vec::new()),
                &format!("Pod team-a/web-{n}"),
                "config-1",
                datetime!(2026-12-01 08:00 UTC),
            );
        }
        let record = inventory.get(DIGEST).expect("recorded");
        assert_eq!(record.workloads.len(), MAX_WORKLOADS);
        assert_eq!(record.other_workloads, 3);
    }

    #[test]
    fn filters_by_verdict_namespace_and_image() {
        let inventory = Inventory::default();
        let now = datetime!(2026-12-01 08:00 UTC);
        let denied = subject(vec![entry(
            &format!("registry.example/bad@{DIGEST}"),
            Some(signed_evidence(DIGEST)),
            ScanState::NotRequested,
        )]);
        inventory.observe(
            &denied,
            &verdict(Outcome::Denied, Vec::new()),
            "Deployment team-a/bad",
            "c",
            now,
        );
        let allowed = subject(vec![entry(
            &format!("registry.example/good@{OTHER}"),
            None,
            ScanState::NotRequested,
        )]);
        inventory.observe(
            &allowed,
            &verdict(Outcome::Allowed, Vec::new()),
            "Pod team-b/good",
            "c",
            now,
        );

        let only = |pairs: &[(&str, &str)]| -> Vec<String> {
            let filter = Filter::from_pairs(pairs.iter().copied()).expect("valid filter");
            inventory
                .query(&filter)
                .into_iter()
                .map(|r| r.digest)
                .collect()
        };
        assert_eq!(only(&[("verdict", "denied")]), [DIGEST]);
        assert_eq!(only(&[("verdict", "allowed")]), [OTHER]);
        assert_eq!(only(&[("namespace", "team-b")]), [OTHER]);
        assert_eq!(only(&[("image", "bad")]), [DIGEST]);
        assert!(only(&[("image", "bad"), ("verdict", "allowed")]).is_empty());

        assert_eq!(
            Filter::from_pairs([("verdict", "nope")]),
            Err(FilterError::UnknownVerdict("nope".to_owned()))
        );
        assert_eq!(
            Filter::from_pairs([("colour", "red")]),
            Err(FilterError::UnknownKey("colour".to_owned()))
        );
    }
}
