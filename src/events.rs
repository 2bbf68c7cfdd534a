//! Kubernetes Events (`events.k8s.io/v1`) recorded on a workload when re-judging changes its
//! verdict, so `kubectl describe deployment web` and `kubectl events` say that a running
//! workload would now be denied (or is allowed again) and why. Choosing the Event (type,
//! reason, note, name) and remembering repeats is pure; [`EventRecorder`] writes it under a
//! rate limit (`rejudge.eventsPerMinute`) and turns a repeat of the same change into a patch of
//! the Event's `series` instead of a new object.
//!
//! Reasons, by the workload's new outcome:
//!
//! | outcome | type | reason |
//! |---|---|---|
//! | denied by policy | `Warning` | `ImageDenied` |
//! | allowed with warnings | `Warning` | `ImageWarned` |
//! | allowed, audit-mode findings only | `Warning` | `ImageAudited` |
//! | evidence could not be gathered (either `onError`) | `Warning` | `EvidenceError` |
//! | allowed, no findings (back to allowed) | `Normal` | `ImageAllowed` |
//! | not judged (excluded namespace, ...) | no Event | — |

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::decision::Outcome;

/// `reportingController` of every Event portcullis writes.
pub const REPORTING_CONTROLLER: &str = "portcullis.io/rejudge";
/// `action` of every Event portcullis writes: what portcullis did to the workload.
pub const ACTION: &str = "Rejudged";
/// The API server refuses an Event whose `note` is longer than this many bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// ... and a `reportingInstance` longer than this.
const MAX_REPORTING_INSTANCE_BYTES: usize = 128;
/// Object names are DNS subdomains of at most this many characters.
const MAX_NAME_BYTES: usize = 253;
/// Hex digits of the hash in an Event's name: 64 bits keep distinct changes of one workload
/// apart while leaving room for the workload's own name.
const NAME_HASH_HEX: usize = 16;
/// A repeat of the same change within this long patches the existing Event's `series`; after
/// it, a new Event is created (the API server itself deletes Events after an hour by default).
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10 * 60);
/// At most this many recent Events are remembered for deduplication, so a cluster with many
/// workloads changing at once cannot grow the recorder without bound.
pub const MAX_REMEMBERED: usize = 4096;
/// Events of a workload without a namespace go where Kubernetes puts cluster-scoped objects'
/// Events.
const CLUSTER_SCOPED_NAMESPACE: &str = "default";

/// The Event reasons portcullis uses (see the module's table).
pub mod reason {
    pub const IMAGE_DENIED: &str = "ImageDenied";
    pub const IMAGE_WARNED: &str = "ImageWarned";
    pub const IMAGE_AUDITED: &str = "ImageAudited";
    pub const IMAGE_ALLOWED: &str = "ImageAllowed";
    pub const EVIDENCE_ERROR: &str = "EvidenceError";
}

/// Metadata annotations on each Event, for tools that want more than the note.
pub mod annotation {
    /// The outcome the Event reports (`denied`, `warned`, ...).
    pub const OUTCOME: &str = "portcullis.io/outcome";
    /// The outcome before the change; absent for a workload judged for the first time.
    pub const PREVIOUS_OUTCOME: &str = "portcullis.io/previous-outcome";
    /// The rules that found something, comma-separated.
    pub const RULES: &str = "portcullis.io/rules";
    /// The identity of the configuration and policies that made the verdict.
    pub const CONFIG_IDENTITY: &str = "portcullis.io/config-identity";
}

/// The workload an Event is about (its `regarding`): a Deployment, DaemonSet, bare Pod, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTarget {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl EventTarget {
    /// `Deployment shop/web`, as messages name it.
    fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    fn event_namespace(&self) -> &str {
        if self.namespace.is_empty() {
            CLUSTER_SCOPED_NAMESPACE
        } else {
            &self.namespace
        }
    }
}

/// A workload's verdict changed (or was first reached) during re-judging.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictChange {
    pub target: EventTarget,
    /// `None` when the workload had not been judged before.
    pub previous: Option<Outcome>,
    pub current: Outcome,
    /// The rules that found something.
    pub rules: Vec<String>,
    /// The verdict's message (becomes the note, cut to [`MAX_NOTE_BYTES`]).
    pub message: String,
    /// The configuration and policies' identity that made the verdict.
    pub identity: String,
}

/// `type` of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The type and reason of the Event for a new outcome; `None` for a workload that was not
/// judged, which has nothing to report.
pub fn classify(outcome: Outcome) -> Option<(EventType, &'static str)> {
    match outcome {
        Outcome::Denied => Some((EventType::Warning, reason::IMAGE_DENIED)),
        Outcome::Warned => Some((EventType::Warning, reason::IMAGE_WARNED)),
        Outcome::Audited => Some((EventType::Warning, reason::IMAGE_AUDITED)),
        Outcome::ErrorDenied | Outcome::ErrorAllowed => {
            Some((EventType::Warning, reason::EVIDENCE_ERROR))
        }
        Outcome::Allowed => Some((EventType::Normal, reason::IMAGE_ALLOWED)),
        Outcome::Skipped => None,
    }
}

/// `message` as an Event note: at most [`MAX_NOTE_BYTES`] bytes, cut on a character boundary
/// and ending in "…" when it was longer.
pub fn cut_note(message: &str) -> String {
    if message.len() <= MAX_NOTE_BYTES {
        return message.to_owned();
    }
    let ellipsis = '…';
    let mut end = MAX_NOTE_BYTES - ellipsis.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut note = String::with_capacity(end + ellipsis.len_utf8());
    note.push_str(&message[..end]);
    note.push(ellipsis);
    note
}

/// The Event's name, `<workload name>.<hash>`: the same (uid, reason, note) always gives the
/// same name, so a repeat of a change (after a restart too) finds the Event it repeats, while
/// another change of the same workload gets an Event of its own.
pub fn event_name(target_name: &str, uid: &str, reason: &str, note: &str) -> String {
    let mut hashed = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    // NUL cannot occur in a uid or a reason, so the three fields cannot run into each other.
    for part in [uid, reason, note] {
        hashed.update(part.as_bytes());
        hashed.update(&[0]);
    }
    let digest = hashed.finish();
    let hash: String = digest
        .as_ref()
        .iter()
        .take(NAME_HASH_HEX / 2)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut end = target_name.len().min(MAX_NAME_BYTES - NAME_HASH_HEX - 1);
    while !target_name.is_char_boundary(end) {
        end -= 1;
    }
    // A DNS subdomain ends alphanumeric on each side of the dot.
    let prefix = target_name[..end].trim_end_matches(['.', '-']);
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}.{hash}")
    }
}

/// Which recent Events were written and how often: what makes a repeat a `series` patch.
/// Bounded by `capacity`; entries older than `window` are forgotten first, then the least
/// recently seen.
#[derive(Debug)]
pub struct RepeatWindow {
    window: Duration,
    capacity: usize,
    seen: HashMap<String, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    count: i32,
    last: Instant,
}

impl RepeatWindow {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            seen: HashMap::new(),
        }
    }

    /// How many times the Event `key` was written, if the last time is within the window.
    pub fn count_of(&mut self, key: &str, now: Instant) -> Option<i32> {
        match self.seen.get(key) {
            Some(seen) if now.saturating_duration_since(seen.last) < self.window => {
                Some(seen.count)
            }
            Some(_) => {
                self.seen.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers that the Event `key` has now been written `count` times.
    pub fn remember(&mut self, key: &str, count: i32, now: Instant) {
        if !self.seen.contains_key(key) && self.seen.len() >= self.capacity {
            let window = self.window;
            self.seen
                .retain(|_, seen| now.saturating_duration_since(seen.last) < window);
            if self.seen.len() >= self.capacity
                && let Some(oldest) = self
                    .seen
                    .iter()
                    .min_by_key(|(_, seen)| seen.last)
                    .map(|(key, _)| key.clone())
            {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(key.to_owned(), Seen { count, last: now });
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// What [`EventRecorder::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new Event was created.
    Created,
    /// The same change was recorded recently: its Event's `series` (count, lastObservedTime)
    /// was patched.
    Repeated,
    /// Over `rejudge.eventsPerMinute`: nothing was written.
    Dropped,
    /// The workload was not judged (`Outcome::Skipped`): there is nothing to report.
    Unjudged,
}

impl Recorded {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Recorded::Created => "created",
            Recorded::Repeated => "repeated",
            Recorded::Dropped => "dropped",
            Recorded::Unjudged => "unjudged",
        }
    }
}

/// Why an Event could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(
        "not allowed to {verb} the Event {namespace}/{name} on {workload}: {source} (grant \
         create and patch on events in events.k8s.io in every namespace; the chart does when \
         config.rejudge is set and rejudge.events is not false)"
    )]
    Forbidden {
        verb: &'static str,
        workload: String,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("cannot {verb} the Event {namespace}/{name} on {workload}: {source}")]
    Api {
        verb: &'static str,
        workload: String,
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

fn limiter_for(per_minute: u32) -> Option<DefaultDirectRateLimiter> {
    NonZeroU32::new(per_minute).map(|n| RateLimiter::direct(Quota::per_minute(n)))
}

/// Writes Events about verdict changes through the Kubernetes API, at most `per_minute` writes
/// a minute, a repeat of a recent change as a `series` patch.
pub struct EventRecorder {
    client: kube::Client,
    /// The rate in force and its limiter, `None` when the rate is 0: every Event is dropped
    /// (the configuration refuses that with events on, so this only guards against a caller
    /// that skipped the checks). Replaced when a reload changes `rejudge.eventsPerMinute`.
    limiter: Mutex<(u32, Option<DefaultDirectRateLimiter>)>,
    reporting_instance: String,
    repeats: Mutex<RepeatWindow>,
}

/// The Event one write is about, as errors name it.
struct EventWrite<'a> {
    workload: String,
    namespace: &'a str,
    name: &'a str,
}

impl EventWrite<'_> {
    fn error(&self, verb: &'static str, source: kube::Error) -> EventError {
        let (workload, namespace, name) = (
            self.workload.clone(),
            self.namespace.to_owned(),
            self.name.to_owned(),
        );
        match &source {
            kube::Error::Api(status) if status.code == 403 => EventError::Forbidden {
                verb,
                workload,
                namespace,
                name,
                source,
            },
            _ => EventError::Api {
                verb,
                workload,
                namespace,
                name,
                source,
            },
        }
    }
}

impl EventRecorder {
    /// `reporting_instance` names this replica (its pod name), cut to the API's 128 bytes.
    pub fn new(client: kube::Client, per_minute: u32, reporting_instance: String) -> Self {
        let limiter = Mutex::new((per_minute, limiter_for(per_minute)));
        let mut reporting_instance = reporting_instance;
        if reporting_instance.len() > MAX_REPORTING_INSTANCE_BYTES {
            let mut end = MAX_REPORTING_INSTANCE_BYTES;
            while !reporting_instance.is_char_boundary(end) {
                end -= 1;
            }
            reporting_instance.truncate(end);
        }
        Self {
            client,
            limiter,
            reporting_instance,
            repeats: Mutex::new(RepeatWindow::new(REPEAT_WINDOW, MAX_REMEMBERED)),
        }
    }

    /// Follows a reload: a new `rejudge.eventsPerMinute` starts a fresh limiter at that rate
    /// (the same rate keeps the budget already spent).
    pub fn set_per_minute(&self, per_minute: u32) {
        let mut limiter = self
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if limiter.0 != per_minute {
            *limiter = (per_minute, limiter_for(per_minute));
        }
    }

    /// Records `change` on its workload: a new Event, or a `series` patch when the same change
    /// was recorded within [`REPEAT_WINDOW`]. Over the rate limit nothing is sent.
    pub async fn record(&self, change: &VerdictChange) -> Result<Recorded, EventError> {
        let Some((event_type, reason)) = classify(change.current) else {
            return Ok(Recorded::Unjudged);
        };
        let allowed = self
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .as_ref()
            .is_some_and(|limiter| limiter.check().is_ok());
        if !allowed {
            return Ok(Recorded::Dropped);
        }
        let note = cut_note(&change.message);
        let target = &change.target;
        let name = event_name(&target.name, &target.uid, reason, &note);
        let namespace = target.event_namespace();
        let key = format!("{namespace}/{name}");
        let write = EventWrite {
            workload: target.describe(),
            namespace,
            name: &name,
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let now = Timestamp::now();
        let seen_before = self.repeats().count_of(&key, Instant::now());
        match seen_before {
            Some(count) => match patch_series(&api, &name, count + 1, now).await {
                Ok(()) => {
                    self.repeats().remember(&key, count + 1, Instant::now());
                    Ok(Recorded::Repeated)
                }
                // The API server has already deleted it (its Events live an hour by default).
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    let event = self.event(change, event_type, reason, note, &name, now);
                    self.create(&api, &event, &write, &key).await
                }
                Err(source) => Err(write.error("patch", source)),
            },
            None => {
                let event = self.event(change, event_type, reason, note, &name, now);
                self.create(&api, &event, &write, &key).await
            }
        }
    }

    /// Creates `event`; when it exists already (written before a restart, or by another
    /// replica), reads its series and patches it instead.
    async fn create(
        &self,
        api: &Api<Event>,
        event: &Event,
        write: &EventWrite<'_>,
        key: &str,
    ) -> Result<Recorded, EventError> {
        match api.create(&PostParams::default(), event).await {
            Ok(_) => {
                self.repeats().remember(key, 1, Instant::now());
                Ok(Recorded::Created)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = api
                    .get(write.name)
                    .await
                    .map_err(|source| write.error("get", source))?;
                let count = existing.series.map_or(1, |series| series.count) + 1;
                patch_series(api, write.name, count, Timestamp::now())
                    .await
                    .map_err(|source| write.error("patch", source))?;
                self.repeats().remember(key, count, Instant::now());
                Ok(Recorded::Repeated)
            }
            Err(source) => Err(write.error("create", source)),
        }
    }

    fn event(
        &self,
        change: &VerdictChange,
        event_type: EventType,
        reason: &str,
        note: String,
        name: &str,
        now: Timestamp,
    ) -> Event {
        let target = &change.target;
        let mut annotations = std::collections::BTreeMap::from([
            (
                annotation::OUTCOME.to_owned(),
                change.current.as_str().to_owned(),
            ),
            (
                annotation::CONFIG_IDENTITY.to_owned(),
                change.identity.clone(),
            ),
        ]);
        if let Some(previous) = change.previous {
            annotations.insert(
                annotation::PREVIOUS_OUTCOME.to_owned(),
                previous.as_str().to_owned(),
            );
        }
        if !change.rules.is_empty() {
            annotations.insert(annotation::RULES.to_owned(), change.rules.join(","));
        }
        Event {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(target.event_namespace().to_owned()),
                labels: Some(std::collections::BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "portcullis".to_owned(),
                )])),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(ACTION.to_owned()),
            reason: Some(reason.to_owned()),
            type_: Some(event_type.as_str().to_owned()),
            note: Some(note),
            regarding: Some(ObjectReference {
                api_version: Some(target.api_version.clone()),
                kind: Some(target.kind.clone()),
                namespace: (!target.namespace.is_empty()).then(|| target.namespace.clone()),
                name: Some(target.name.clone()),
                uid: (!target.uid.is_empty()).then(|| target.uid.clone()),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
            reporting_instance: Some(self.reporting_instance.clone()),
            ..Event::default()
        }
    }

    /// The repeat memory; a panic elsewhere while it was held leaves it usable (it is only a
    /// cache: at worst a repeat becomes a new Event).
    fn repeats(&self) -> std::sync::MutexGuard<'_, RepeatWindow> {
        self.repeats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Sets the Event's `series` to `count` occurrences, the last one `now` (merge patch: the
/// rest of the Event, `eventTime` included, is immutable and left alone).
async fn patch_series(
    api: &Api<Event>,
    name: &str,
    count: i32,
    now: Timestamp,
) -> Result<(), kube::Error> {
    #[derive(Debug, serde::Serialize)]
    struct SeriesPatch {
        series: EventSeries,
    }
    let patch = SeriesPatch {
        series: EventSeries {
            count,
            last_observed_time: MicroTime(now),
        },
    };
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: a failed test should panic

    use std::sync::{Arc, Mutex};

    use kube::client::Body;
    use portcullis_test_support::mock_apiserver::{
        self, json_body, json_response, status_response,
    };
    use rstest::rstest;
    use serde_json::{Value, json};

    use super::*;

    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

    fn web() -> EventTarget {
        EventTarget {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            uid: "uid-web".into(),
        }
    }

    fn denied(message: &str) -> VerdictChange {
        VerdictChange {
            target: web(),
            previous: Some(Outcome::Allowed),
            current: Outcome::Denied,
            rules: vec!["vulnerability".into(), "latest-tag".into()],
            message: message.into(),
            identity: "sha256:0123456789abcdef".into(),
        }
    }

    #[rstest]
    #[case::denied(Outcome::Denied, Some((EventType::Warning, "ImageDenied")))]
    #[case::warned(Outcome::Warned, Some((EventType::Warning, "ImageWarned")))]
    #[case::audited(Outcome::Audited, Some((EventType::Warning, "ImageAudited")))]
    #[case::error_denied(Outcome::ErrorDenied, Some((EventType::Warning, "EvidenceError")))]
    #[case::error_allowed(Outcome::ErrorAllowed, Some((EventType::Warning, "EvidenceError")))]
    #[case::back_to_allowed(Outcome::Allowed, Some((EventType::Normal, "ImageAllowed")))]
    #[case::not_judged(Outcome::Skipped, None)]
    fn each_outcome_has_its_type_and_reason(
        #[case] outcome: Outcome,
        #[case] expected: Option<(EventType, &str)>,
    ) {
        assert_eq!(classify(outcome), expected);
    }

    #[test]
    fn a_short_message_is_the_note_unchanged() {
        assert_eq!(
            cut_note("denied: image is unsigned"),
            "denied: image is unsigned"
        );
        let exactly = "a".repeat(MAX_NOTE_BYTES);
        assert_eq!(cut_note(&exactly), exactly);
    }

    #[test]
    fn a_long_message_is_cut_to_the_api_limit_with_an_ellipsis() {
        let note = cut_note(&"a".repeat(5000));
        assert_eq!(note.len(), MAX_NOTE_BYTES);
        assert!(note.ends_with('…'));
        assert!(note.starts_with("aaaa"));
    }

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary() {
        // Two-byte characters after one ASCII byte: the limit falls inside a character.
        let message = format!("x{}", "é".repeat(1000));
        let note = cut_note(&message);
        assert!(note.len() <= MAX_NOTE_BYTES, "{}", note.len());
        assert!(note.len() >= MAX_NOTE_BYTES - 4, "{}", note.len());
        assert!(note.ends_with("é…"), "{note}");
    }

    #[test]
    fn an_event_name_is_the_workload_and_a_hash_of_uid_reason_and_note() {
        let name = event_name("web", "uid-web", "ImageDenied", "unsigned");
        assert_eq!(
            name,
            event_name("web", "uid-web", "ImageDenied", "unsigned")
        );
        let (prefix, hash) = name.split_once('.').unwrap();
        assert_eq!(prefix, "web");
        assert_eq!(hash.len(), NAME_HASH_HEX);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
        for other in [
            event_name("web", "uid-other", "ImageDenied", "unsigned"),
            event_name("web", "uid-web", "ImageWarned", "unsigned"),
            event_name("web", "uid-web", "ImageDenied", "vulnerable"),
        ] {
            assert_ne!(other, name);
        }
    }

    #[test]
    fn an_event_name_of_a_long_workload_name_stays_a_valid_object_name() {
        let long = format!("{}-{}", "a".repeat(235), "b".repeat(30));
        let name = event_name(&long, "uid", "ImageDenied", "note");
        assert!(name.len() <= MAX_NAME_BYTES, "{}", name.len());
        let (prefix, _) = name.rsplit_once('.').unwrap();
        assert!(!prefix.ends_with('-'), "{prefix}");
        assert!(long.starts_with(prefix));
    }

    #[test]
    fn a_repeat_within_the_window_is_counted_and_one_after_it_is_new() {
        let start = Instant::now();
        let mut window = RepeatWindow::new(Duration::from_secs(600), 8);
        assert_eq!(window.count_of("shop/web.1", start), None);
        window.remember("shop/web.1", 1, start);
        let later = start + Duration::from_secs(599);
        assert_eq!(window.count_of("shop/web.1", later), Some(1));
        window.remember("shop/web.1", 2, later);
        // The window runs from the last time it was seen.
        assert_eq!(
            window.count_of("shop/web.1", later + Duration::from_secs(599)),
            Some(2)
        );
        assert_eq!(
            window.count_of("shop/web.1", later + Duration::from_secs(600)),
            None
        );
        assert!(window.is_empty());
    }

    #[test]
    fn the_repeat_window_forgets_the_least_recently_seen_when_full() {
        let start = Instant::now();
        let mut window = RepeatWindow::new(Duration::from_secs(600), 2);
        window.remember("a", 1, start);
        window.remember("b", 1, start + Duration::from_secs(1));
        window.remember("c", 1, start + Duration::from_secs(2));
        assert_eq!(window.len(), 2);
        let now = start + Duration::from_secs(3);
        assert_eq!(window.count_of("a", now), None);
        assert_eq!(window.count_of("b", now), Some(1));
        assert_eq!(window.count_of("c", now), Some(1));
    }

    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        uri: String,
        content_type: String,
        body: Value,
    }

    /// Plays the API server: every request is recorded and answered by `answer` (method, path,
    /// body).
    fn api_server(
        answer: fn(&str, &str, &Value) -> http::Response<Body>,
    ) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let (client, _server) = mock_apiserver::client("default", move |request| {
            let record = record.clone();
            async move {
                let method = request.method().to_string();
                let uri = request.uri().to_string();
                let content_type = request
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let body = json_body(request).await;
                let path = uri.split('?').next().unwrap_or_default().to_owned();
                let response = answer(&method, &path, &body);
                record.lock().unwrap().push(Seen {
                    method,
                    uri,
                    content_type,
                    body,
                });
                response
            }
        });
        (client, seen)
    }

    /// Creates echo the Event back; patches answer with the patch applied to nothing (enough
    /// for the client, which only checks it is JSON).
    fn accepts(method: &str, _path: &str, body: &Value) -> http::Response<Body> {
        match method {
            "POST" => json_response(201, body),
            "PATCH" => json_response(
                200,
                &json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "web.x", "namespace": "shop"}, "eventTime": "2026-11-25T08:00:00.000000Z"}),
            ),
            _ => status_response(404, "NotFound", "not found"),
        }
    }

    fn seen(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
        seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_verdict_change_creates_a_warning_event_against_a_mocked_api_server() {
        let (client, requests) = api_server(accepts);
        let recorder = EventRecorder::new(client, 60, "portcullis-7d4b9c-x2x".into());
        let change = denied("Deployment shop/web is denied: ghcr.io/acme/web:1.0 is unsigned");
        assert_eq!(recorder.record(&change).await.unwrap(), Recorded::Created);

        let requests = seen(&requests);
        assert_eq!(requests.len(), 1, "{requests:?}");
        let create = &requests[0];
        assert_eq!(create.method, "POST");
        assert!(
            create.uri.starts_with(&format!("{EVENTS}?")) || create.uri == EVENTS,
            "{}",
            create.uri
        );
        assert_eq!(create.content_type, "application/json");
        let event = &create.body;
        assert_eq!(event["apiVersion"], "events.k8s.io/v1");
        assert_eq!(event["kind"], "Event");
        let name = event_name("web", "uid-web", "ImageDenied", &change.message);
        assert_eq!(event["metadata"]["name"], name.as_str());
        assert!(name.starts_with("web."), "{name}");
        assert_eq!(event["metadata"]["namespace"], "shop");
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "ImageDenied");
        assert_eq!(event["action"], "Rejudged");
        assert_eq!(event["note"], change.message.as_str());
        assert_eq!(event["reportingController"], "portcullis.io/rejudge");
        assert_eq!(event["reportingInstance"], "portcullis-7d4b9c-x2x");
        assert_eq!(
            event["regarding"],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop",
                   "name": "web", "uid": "uid-web"})
        );
        // MicroTime: RFC 3339 with microseconds.
        let event_time = event["eventTime"].as_str().unwrap();
        assert!(
            event_time.ends_with('Z') && event_time.contains('.'),
            "{event_time}"
        );
        assert!(event.get("series").is_none(), "{event:#}");
        let annotations = &event["metadata"]["annotations"];
        assert_eq!(annotations["portcullis.io/outcome"], "denied");
        assert_eq!(annotations["portcullis.io/previous-outcome"], "allowed");
        assert_eq!(
            annotations["portcullis.io/rules"],
            "vulnerability,latest-tag"
        );
        assert_eq!(
            annotations["portcullis.io/config-identity"],
            "sha256:0123456789abcdef"
        );
    }

    #[tokio::test]
    async fn back_to_allowed_is_a_normal_event_against_a_mocked_api_server() {
        let (client, requests) = api_server(accepts);
        let recorder = EventRecorder::new(client, 60, "portcullis-0".into());
        let change = VerdictChange {
            previous: Some(Outcome::Denied),
            current: Outcome::Allowed,
            rules: Vec::new(),
            message: "Deployment shop/web is allowed".into(),
            ..denied("")
        };
        assert_eq!(recorder.record(&change).await.unwrap(), Recorded::Created);
        let event = &seen(&requests)[0].body;
        assert_eq!(event["type"], "Normal");
        assert_eq!(event["reason"], "ImageAllowed");
        assert_eq!(
            event["metadata"]["annotations"]["portcullis.io/previous-outcome"],
            "denied"
        );
        assert!(
            event["metadata"]["annotations"]
                .get("portcullis.io/rules")
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_same_change_again_patches_the_series_against_a_mocked_api_server() {
        let (client, requests) = api_server(accepts);
        let recorder = EventRecorder::new(client, 60, "portcullis-0".into());
        let change = denied("ghcr.io/acme/web:1.0 is unsigned");
        assert_eq!(recorder.record(&change).await.unwrap(), Recorded::Created);
        assert_eq!(recorder.record(&change).await.unwrap(), Recorded::Repeated);
        assert_eq!(recorder.record(&change).await.unwrap(), Recorded::Repeated);

        let requests = seen(&requests);
        assert_eq!(requests.len(), 3, "{requests:?}");
        let name = requests[0].body["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        for (patch, count) in requests[1..].iter().zip([2, 3]) {
            assert_eq!(patch.method, "PATCH");
            assert_eq!(
                patch.uri.split('?').next().unwrap(),
                format!("{EVENTS}/{name}")
            );
            assert_eq!(patch.content_type, "application/merge-patch+json");
            assert_eq!(patch.body["series"]["count"], count, "{:#}", patch.body);
            assert!(
                patch.body["series"]["lastObservedTime"].is_string(),
                "{:#}",
                patch.body
            );
            // Only the series changes: eventTime, note and the rest are immutable.
            assert_eq!(patch.body.as_object().unwrap().len(), 1, "{:#}", patch.body);
        }

        // Another change of the same workload is an Event of its own.
        let other = denied("ghcr.io/acme/web:1.0 has CVE-2026-0001");
        assert_eq!(recorder.record(&other).await.unwrap(), Recorded::Created);
    }

    #[tokio::test]
    async fn an_event_left_from_before_a_restart_gets_its_series_patched_against_a_mocked_api_server()
     {
        fn exists(method: &str, path: &str, body: &Value) -> http::Response<Body> {
            match method {
                "POST" => status_response(409, "AlreadyExists", "events \"web.x\" already exists"),
                "GET" => json_response(
                    200,
                    &json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                    "metadata": {"name": path.rsplit('/').next().unwrap(), "namespace": "shop"},
                    "eventTime": "2026-11-25T08:00:00.000000Z",
                    "series": {"count": 3, "lastObservedTime": "2026-11-25T08:05:00.000000Z"}}),
                ),
                _ => accepts(method, path, body),
            }
        }
        let (client, requests) = api_server(exists);
        let recorder = EventRecorder::new(client, 60, "portcullis-0".into());
        let change = denied("ghcr.io/acme/web:1.0 is unsigned");
        assert_eq!(recorder.record(&change).await.unwrap(), Recorded::Repeated);
        let requests = seen(&requests);
        let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods, ["POST", "GET", "PATCH"]);
        assert_eq!(requests[2].body["series"]["count"], 4);
    }

    #[tokio::test]
    async fn the_rate_limit_drops_the_excess_without_requests_against_a_mocked_api_server() {
        let (client, requests) = api_server(accepts);
        let recorder = EventRecorder::new(client, 2, "portcullis-0".into());
        let results = [
            recorder.record(&denied("first")).await.unwrap(),
            recorder.record(&denied("second")).await.unwrap(),
            recorder.record(&denied("third")).await.unwrap(),
            // A repeat is a write too.
            recorder.record(&denied("first")).await.unwrap(),
        ];
        assert_eq!(
            results,
            [
                Recorded::Created,
                Recorded::Created,
                Recorded::Dropped,
                Recorded::Dropped
            ]
        );
        assert_eq!(seen(&requests).len(), 2);
    }

    #[tokio::test]
    async fn a_reloaded_event_rate_applies_at_once_against_a_mocked_api_server() {
        let (client, requests) = api_server(accepts);
        let recorder = EventRecorder::new(client, 1, "portcullis-0".into());
        assert_eq!(
            recorder.record(&denied("first")).await.unwrap(),
            Recorded::Created
        );
        assert_eq!(
            recorder.record(&denied("second")).await.unwrap(),
            Recorded::Dropped
        );
        // The same rate again keeps the spent budget; a higher one admits the next Event.
        recorder.set_per_minute(1);
        assert_eq!(
            recorder.record(&denied("second")).await.unwrap(),
            Recorded::Dropped
        );
        recorder.set_per_minute(10);
        assert_eq!(
            recorder.record(&denied("second")).await.unwrap(),
            Recorded::Created
        );
        recorder.set_per_minute(0);
        assert_eq!(
            recorder.record(&denied("third")).await.unwrap(),
            Recorded::Dropped
        );
        assert_eq!(seen(&requests).len(), 2);
    }

    #[tokio::test]
    async fn no_event_rate_drops_every_event_against_a_mocked_api_server() {
        let (client, requests) = api_server(accepts);
        let recorder = EventRecorder::new(client, 0, "portcullis-0".into());
        assert_eq!(
            recorder.record(&denied("first")).await.unwrap(),
            Recorded::Dropped
        );
        assert!(seen(&requests).is_empty());
    }

    #[tokio::test]
    async fn an_unjudged_workload_records_nothing_against_a_mocked_api_server() {
        let (client, requests) = api_server(accepts);
        let recorder = EventRecorder::new(client, 60, "portcullis-0".into());
        let change = VerdictChange {
            current: Outcome::Skipped,
            ..denied("")
        };
        assert_eq!(recorder.record(&change).await.unwrap(), Recorded::Unjudged);
        assert!(seen(&requests).is_empty());
    }

    #[tokio::test]
    async fn a_forbidden_create_is_an_rbac_error_naming_the_workload_against_a_mocked_api_server() {
        fn forbidden(_: &str, _: &str, _: &Value) -> http::Response<Body> {
            status_response(
                403,
                "Forbidden",
                "events.events.k8s.io is forbidden: User \"system:serviceaccount:portcullis:portcullis\" \
                 cannot create resource \"events\" in API group \"events.k8s.io\" in the namespace \"shop\"",
            )
        }
        let (client, _requests) = api_server(forbidden);
        let recorder = EventRecorder::new(client, 60, "portcullis-0".into());
        let err = recorder.record(&denied("unsigned")).await.unwrap_err();
        assert!(
            matches!(err, EventError::Forbidden { verb: "create", .. }),
            "{err:?}"
        );
        let message = err.to_string();
        for expected in [
            "Deployment shop/web",
            "create and patch on events in events.k8s.io",
            "rejudge.events",
        ] {
            assert!(message.contains(expected), "{message}");
        }
        // The API server's answer is kept as the source.
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("forbidden"), "{source}");
    }

    #[tokio::test]
    async fn an_event_the_api_server_deleted_is_created_again_against_a_mocked_api_server() {
        fn gone(method: &str, path: &str, body: &Value) -> http::Response<Body> {
            match method {
                "PATCH" => status_response(404, "NotFound", "events \"web.x\" not found"),
                _ => accepts(method, path, body),
            }
        }
        let (client, requests) = api_server(gone);
        let recorder = EventRecorder::new(client, 60, "portcullis-0".into());
        let change = denied("unsigned");
        assert_eq!(recorder.record(&change).await.unwrap(), Recorded::Created);
        assert_eq!(recorder.record(&change).await.unwrap(), Recorded::Created);
        let methods: Vec<String> = seen(&requests).into_iter().map(|r| r.method).collect();
        assert_eq!(methods, ["POST", "PATCH", "POST"]);
    }

    #[test]
    fn the_reporting_instance_is_cut_to_the_api_limit() {
        let (client, _requests) = {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _guard = rt.enter();
            api_server(accepts)
        };
        let recorder = EventRecorder::new(client, 60, "é".repeat(100));
        assert!(recorder.reporting_instance.len() <= MAX_REPORTING_INSTANCE_BYTES);
        assert!(recorder.reporting_instance.chars().all(|c| c == 'é'));
    }
}
