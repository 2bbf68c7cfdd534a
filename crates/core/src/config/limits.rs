//! `limits`: request sizes, deadlines and connection bounds of the webhook port, and their checks.

use serde::{Deserialize, Serialize};

use super::Problem;

/// Default maximum AdmissionReview body: the API server's own limit for objects is ~3 MiB,
/// but an UPDATE carries two copies of the object plus metadata.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 7 * 1024 * 1024;

/// Default bound on the bytes of request bodies held in memory at once, over every
/// connection: four bodies of the largest size, or thousands of ordinary (10–50 KiB) reviews.
pub const DEFAULT_MAX_BUFFERED_REQUEST_BYTES: u64 = 32 * 1024 * 1024;

/// The largest `limits.maxBufferedRequestBytes` (the byte semaphore counts in `u32`).
pub const MAX_BUFFERED_REQUEST_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Largest AdmissionReview body accepted; larger ones get HTTP 413.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: u64,
    /// Deadline used when the API server sends no `?timeout=` (it always does for v1).
    #[serde(
        default = "default_timeout_seconds",
        with = "crate::timeutil::whole_seconds"
    )]
    pub default_timeout_seconds: std::time::Duration,
    /// How long before the API server's deadline the answer must be on its way.
    #[serde(
        default = "default_timeout_margin_millis",
        with = "crate::timeutil::whole_millis"
    )]
    pub timeout_margin_millis: std::time::Duration,
    /// Bytes of request bodies held in memory at once, over all connections (read at
    /// start-up). A body that would go over gets HTTP 503 at once instead of being buffered.
    #[serde(default = "default_max_buffered_request_bytes")]
    pub max_buffered_request_bytes: u64,
    /// A request's head (request line and headers) must arrive within this long of its first
    /// byte; a new connection's first head (and its TLS handshake) within this long of the
    /// connection being accepted. Slower clients are disconnected.
    #[serde(
        default = "default_header_read_timeout_millis",
        with = "crate::timeutil::whole_millis"
    )]
    pub header_read_timeout_millis: std::time::Duration,
    /// A keep-alive connection with no request for this long is closed. Longer than the API
    /// server's own idle timeout (90 s), so that the client, not the server, closes first and
    /// no request is ever sent on a connection the server is closing.
    #[serde(
        default = "default_idle_timeout_seconds",
        with = "crate::timeutil::whole_seconds"
    )]
    pub idle_timeout_seconds: std::time::Duration,
    /// Open connections on the webhook port (read at start-up). At the limit, new connections
    /// wait in the listen backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Images (containers, init and ephemeral containers) in one object; an object with more
    /// is denied (rule `max-images`) before any registry is asked.
    #[serde(default = "default_max_images_per_object")]
    pub max_images_per_object: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: default_max_request_bytes(),
            default_timeout_seconds: default_timeout_seconds(),
            timeout_margin_millis: default_timeout_margin_millis(),
            max_buffered_request_bytes: default_max_buffered_request_bytes(),
            header_read_timeout_millis: default_header_read_timeout_millis(),
            idle_timeout_seconds: default_idle_timeout_seconds(),
            max_connections: default_max_connections(),
            max_images_per_object: default_max_images_per_object(),
        }
    }
}

fn default_max_request_bytes() -> u64 {
    DEFAULT_MAX_REQUEST_BYTES
}
fn default_timeout_seconds() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_timeout_margin_millis() -> std::time::Duration {
    std::time::Duration::from_millis(500)
}
fn default_max_buffered_request_bytes() -> u64 {
    DEFAULT_MAX_BUFFERED_REQUEST_BYTES
}
fn default_header_read_timeout_millis() -> std::time::Duration {
    std::time::Duration::from_millis(10_000)
}
fn default_idle_timeout_seconds() -> std::time::Duration {
    std::time::Duration::from_secs(120)
}
fn default_max_connections() -> u32 {
    1024
}
fn default_max_images_per_object() -> u32 {
    100
}

impl Limits {
    /// Checks of `limits`.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        if self.max_request_bytes < 1024 {
            problem(
                "limits.maxRequestBytes".into(),
                format!("{} is too small (minimum 1024)", self.max_request_bytes),
            );
        }
        let timeout_seconds = self.default_timeout_seconds.as_secs();
        if timeout_seconds == 0 || timeout_seconds > 30 {
            problem(
                "limits.defaultTimeoutSeconds".into(),
                "must be between 1 and 30 (the API server's webhook timeout range)".into(),
            );
        }
        if self.timeout_margin_millis >= self.default_timeout_seconds {
            problem(
                "limits.timeoutMarginMillis".into(),
                "must be shorter than limits.defaultTimeoutSeconds, or no review could finish"
                    .into(),
            );
        }
        if self.max_buffered_request_bytes < self.max_request_bytes
            || self.max_buffered_request_bytes > MAX_BUFFERED_REQUEST_BYTES
        {
            problem(
                "limits.maxBufferedRequestBytes".into(),
                format!(
                    "{} must be at least limits.maxRequestBytes ({}), or a body of the largest \
                     size could never be read, and at most {MAX_BUFFERED_REQUEST_BYTES}",
                    self.max_buffered_request_bytes, self.max_request_bytes
                ),
            );
        }
        let header_millis = self.header_read_timeout_millis.as_millis();
        if !(100..=60_000).contains(&header_millis) {
            problem(
                "limits.headerReadTimeoutMillis".into(),
                format!("{header_millis} must be between 100 and 60000"),
            );
        }
        let idle_seconds = self.idle_timeout_seconds.as_secs();
        if !(1..=3600).contains(&idle_seconds) {
            problem(
                "limits.idleTimeoutSeconds".into(),
                format!(
                    "{} must be between 1 and 3600 (above 90, the API server's own idle \
                     timeout, is best)",
                    idle_seconds
                ),
            );
        }
        if self.max_connections == 0 {
            problem("limits.maxConnections".into(), "must be at least 1".into());
        }
        if self.max_images_per_object == 0 {
            problem(
                "limits.maxImagesPerObject".into(),
                "must be at least 1".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::LoadedConfig;

    #[test]
    fn guard_limits_are_validated() {
        let yaml = "limits: {maxRequestBytes: 2048, maxBufferedRequestBytes: 1024, \
                    headerReadTimeoutMillis: 0, idleTimeoutSeconds: 0, maxConnections: 0, \
                    maxImagesPerObject: 0}\n";
        let text = LoadedConfig::from_yaml(yaml, "t")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for key in [
            "limits.maxBufferedRequestBytes",
            "limits.headerReadTimeoutMillis",
            "limits.idleTimeoutSeconds",
            "limits.maxConnections",
            "limits.maxImagesPerObject",
        ] {
            assert!(text.contains(key), "{key} missing: {text}");
        }
    }
}
