//! Image references: parsing and normalising what a pod spec says (`nginx` is
//! `docker.io/library/nginx:latest`) with oci-spec's distribution parser, and image globs.

use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use oci_spec::distribution::Reference;

/// An image reference as written in a pod spec, parsed and normalised. Immutable and shared:
/// a clone is a reference count, so a parsed reference can be cached and handed to every
/// review that names the same image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef(std::sync::Arc<Parsed>);

#[derive(Debug, PartialEq, Eq, Hash)]
struct Parsed {
    written: String,
    parsed: Reference,
    tag_written: bool,
    /// What globs are matched against, computed once (see [`ImageRef::match_candidates`]).
    candidates: Vec<String>,
}

/// Why an image reference could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {written:?}: {reason}")]
pub struct ReferenceError {
    pub written: String,
    pub reason: String,
}

impl ImageRef {
    /// Parses and normalises a reference. Whitespace or an empty string is an error.
    pub fn parse(written: &str) -> Result<Self, ReferenceError> {
        let error = |reason: String| ReferenceError {
            written: written.to_owned(),
            reason,
        };
        if written.is_empty() {
            return Err(error("the image is empty".into()));
        }
        if written.len() > 4096 {
            return Err(error("longer than 4096 characters".into()));
        }
        let mut parsed = Reference::try_from(written).map_err(|err| error(err.to_string()))?;
        // Host names are case-insensitive (DNS; the kubelet pulls `GHCR.io/x` from ghcr.io), but
        // globs and trust are matched on the text: `REGISTRY.example.com/team/app` must not
        // escape a policy for `registry.example.com/team/**`. The host is normalised to lower
        // case; the written form is kept for messages.
        if parsed.registry().bytes().any(|b| b.is_ascii_uppercase()) {
            let whole = parsed.whole();
            let host = parsed.registry();
            let lowered = match whole.strip_prefix(host) {
                Some(rest) => format!("{}{rest}", host.to_ascii_lowercase()),
                None => return Err(error("the registry host cannot be normalised".into())),
            };
            parsed = Reference::try_from(lowered.as_str()).map_err(|err| error(err.to_string()))?;
        }
        // OCI's registered algorithms are lowercase hex; the parser also takes upper case,
        // which no registry or kubelet resolves (it would only reach `onError`).
        if let Some((algorithm, hex)) = parsed.digest().and_then(|d| d.split_once(':'))
            && matches!(algorithm, "sha256" | "sha512")
            && hex.bytes().any(|b| b.is_ascii_uppercase())
        {
            return Err(error(format!(
                "the {algorithm} digest must be lowercase hex"
            )));
        }
        // The parser lets an upper-case first path component through as a "domain" and then
        // decides it is a Docker Hub path (`useR/app` is `docker.io/useR/app`), which it would
        // itself refuse once normalised (found by fuzzing). Repositories are lower case.
        if parsed.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(error("the repository must be lower case".into()));
        }
        // Normalising adds up to `docker.io/library/` and `:latest`; the limit holds for the
        // normalised form too, or a reference would be accepted whose own normalised form is
        // refused (found by fuzzing: a 4092-character host name without a tag).
        if parsed.whole().len() > 4096 {
            return Err(error("longer than 4096 characters once normalised".into()));
        }
        // The parser fills in `latest` when neither tag nor digest is written; rules need to
        // know the difference ("untagged" vs "tagged latest").
        let name = written.split('@').next().unwrap_or(written);
        let last_segment = name.rsplit('/').next().unwrap_or(name);
        let tag_written = last_segment.contains(':');
        let candidates = match_candidates(&parsed);
        Ok(Self(std::sync::Arc::new(Parsed {
            written: written.to_owned(),
            parsed,
            tag_written,
            candidates,
        })))
    }

    /// Exactly what the pod spec said.
    pub fn written(&self) -> &str {
        &self.0.written
    }
    /// `docker.io`, `127.0.0.1:5000`, ...
    pub fn registry(&self) -> &str {
        self.0.parsed.registry()
    }
    /// `library/nginx`, `team/app`, ...
    pub fn repository(&self) -> &str {
        self.0.parsed.repository()
    }
    /// The tag: written, or `latest` when neither tag nor digest was written.
    pub fn tag(&self) -> Option<&str> {
        self.0.parsed.tag()
    }
    /// Whether the tag was written (false for `nginx` and for `nginx@sha256:...`).
    pub fn tag_written(&self) -> bool {
        self.0.tag_written
    }
    /// The digest, when written.
    pub fn digest(&self) -> Option<&str> {
        self.0.parsed.digest()
    }
    /// `registry/repository`, the name signatures are bound to.
    pub fn repository_path(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }
    /// The normalised whole reference: `registry/repository[:tag][@digest]`.
    pub fn normalized(&self) -> String {
        self.0.parsed.whole()
    }
    /// The strings globs are matched against, most specific first.
    fn match_candidates(&self) -> &[String] {
        &self.0.candidates
    }
}

/// `registry/repository[:tag][@digest]`, `registry/repository:tag`,
/// `registry/repository@digest` and `registry/repository`, most specific first.
fn match_candidates(parsed: &Reference) -> Vec<String> {
    let repository = format!("{}/{}", parsed.registry(), parsed.repository());
    let mut candidates = vec![parsed.whole()];
    if let Some(tag) = parsed.tag() {
        candidates.push(format!("{repository}:{tag}"));
    }
    if let Some(digest) = parsed.digest() {
        candidates.push(format!("{repository}@{digest}"));
    }
    candidates.push(repository);
    candidates
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.written)
    }
}

/// A set of image reference globs: `*` matches within one path segment, `**` across `/`.
///
/// A pattern matches an image when it matches the normalised reference, `repository:tag`,
/// `repository@digest` or the bare `registry/repository`; so `ghcr.io/org/app` matches every
/// tag of that repository and `ghcr.io/org/app:v1.*` only some tags.
#[derive(Debug, Clone)]
pub struct ImageGlobs {
    patterns: Vec<String>,
    set: GlobSet,
}

/// A glob that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GlobError {
    pub pattern: String,
    pub message: String,
}

impl ImageGlobs {
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, GlobError> {
        let mut builder = GlobSetBuilder::new();
        let mut kept = Vec::new();
        for pattern in patterns {
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|err| GlobError {
                    pattern: pattern.to_owned(),
                    message: format!("{pattern:?} is not a valid image glob: {}", err.kind()),
                })?;
            if pattern.is_empty() {
                return Err(GlobError {
                    pattern: String::new(),
                    message: "an empty image glob matches nothing".into(),
                });
            }
            builder.add(glob);
            kept.push(pattern.to_owned());
        }
        let set = builder.build().map_err(|err| GlobError {
            pattern: kept.join(", "),
            message: err.to_string(),
        })?;
        Ok(Self {
            patterns: kept,
            set,
        })
    }

    /// The first pattern (in configuration order) that matches the image.
    pub fn first_match(&self, image: &ImageRef) -> Option<&str> {
        image
            .match_candidates()
            .iter()
            .filter_map(|candidate| self.set.matches(candidate).into_iter().min())
            .min()
            .and_then(|index| self.patterns.get(index).map(String::as_str))
    }

    pub fn matches(&self, image: &ImageRef) -> bool {
        image
            .match_candidates()
            .iter()
            .any(|candidate| self.set.is_match(candidate))
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[rstest]
    #[case::docker_hub_short_name("nginx", "docker.io/library/nginx:latest", false)]
    #[case::docker_hub_user("user/app:1.0", "docker.io/user/app:1.0", true)]
    #[case::registry_with_port("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000/team/app:v1", true)]
    #[case::localhost_port("localhost:5000/app", "localhost:5000/app:latest", false)]
    #[case::explicit_latest("nginx:latest", "docker.io/library/nginx:latest", true)]
    fn references_are_normalised(
        #[case] written: &str,
        #[case] normalized: &str,
        #[case] tag_written: bool,
    ) {
        let image = ImageRef::parse(written).ok();
        assert_eq!(
            image.as_ref().map(ImageRef::normalized).as_deref(),
            Some(normalized)
        );
        assert_eq!(image.map(|i| i.tag_written()), Some(tag_written));
    }

    #[test]
    fn tag_and_digest_together_keep_both() {
        let image = ImageRef::parse(&format!("ghcr.io/org/app:1.2@{DIGEST}")).ok();
        assert_eq!(image.as_ref().and_then(|i| i.tag()), Some("1.2"));
        assert_eq!(image.as_ref().and_then(|i| i.digest()), Some(DIGEST));
        assert_eq!(
            image.map(|i| i.repository_path()).as_deref(),
            Some("ghcr.io/org/app")
        );
    }

    #[test]
    fn digest_only_has_no_written_tag() {
        let image = ImageRef::parse(&format!("ghcr.io/org/app@{DIGEST}")).ok();
        assert_eq!(image.as_ref().map(|i| i.tag_written()), Some(false));
        assert_eq!(image.and_then(|i| i.tag().map(str::to_owned)), None);
    }

    #[rstest]
    #[case::empty("")]
    #[case::uppercase("Nginx:1")]
    #[case::uppercase_first_component("useR/app:1.0")]
    #[case::space("nginx 1.0")]
    #[case::short_digest("nginx@sha256:abc")]
    #[case::unknown_digest_algorithm("nginx@md5:0123456789abcdef0123456789abcdef")]
    #[case::trailing_colon("nginx:")]
    #[case::scheme("https://ghcr.io/app:1")]
    #[case::upper_case_digest_hex(
        "nginx@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"
    )]
    fn invalid_references_are_errors_not_panics(#[case] written: &str) {
        let err = ImageRef::parse(written).err();
        assert!(err.is_some(), "{written:?} parsed");
        assert!(err.is_some_and(|e| e.to_string().contains("invalid image reference")));
    }

    #[test]
    fn fuzz_regression_normalised_form_within_the_length_limit() {
        // fuzz/regressions/image_reference/long-host-untagged: accepted at 4092 characters,
        // its normalised form (4099 with `:latest`) was refused.
        let written = format!("a.{}/x", "b".repeat(4088));
        assert!(ImageRef::parse(&written).is_err());
        let fits = format!("a.{}/x", "b".repeat(4085));
        let image = ImageRef::parse(&fits).ok();
        let normalized = image.as_ref().map(ImageRef::normalized);
        assert_eq!(normalized.as_ref().map(String::len), Some(4096));
        let again = normalized.and_then(|n| ImageRef::parse(&n).ok());
        assert_eq!(again.map(|i| i.normalized()), image.map(|i| i.normalized()));
    }

    #[rstest]
    #[case::double_star_crosses_segments("ghcr.io/**", "ghcr.io/org/team/app:1", true)]
    #[case::single_star_stays_in_segment("ghcr.io/*", "ghcr.io/org/team/app:1", false)]
    #[case::single_star_one_segment("ghcr.io/org/*", "ghcr.io/org/app:1", true)]
    #[case::bare_repository_any_tag("ghcr.io/org/app", "ghcr.io/org/app:9", true)]
    #[case::tag_glob("ghcr.io/org/app:v1.*", "ghcr.io/org/app:v1.4", true)]
    #[case::tag_glob_other_tag("ghcr.io/org/app:v1.*", "ghcr.io/org/app:v2.0", false)]
    #[case::normalised_before_matching("docker.io/library/**", "nginx:1.27", true)]
    #[case::port_in_host("127.0.0.1:5000/team/**", "127.0.0.1:5000/team/app:v1", true)]
    #[case::lookalike_host("ghcr.io/**", "ghcr.io.evil.example/app:1", false)]
    fn globs_match_as_documented(#[case] pattern: &str, #[case] image: &str, #[case] hit: bool) {
        let globs = ImageGlobs::new([pattern]).ok();
        let image = ImageRef::parse(image).ok();
        let matched = globs.zip(image).map(|(g, i)| g.matches(&i));
        assert_eq!(matched, Some(hit));
    }

    #[test]
    fn first_match_follows_configuration_order() {
        let globs = ImageGlobs::new(["ghcr.io/org/**", "ghcr.io/**"]).ok();
        let image = ImageRef::parse("ghcr.io/org/app:1").ok();
        let first = globs
            .as_ref()
            .zip(image.as_ref())
            .and_then(|(g, i)| g.first_match(i));
        assert_eq!(first, Some("ghcr.io/org/**"));
    }

    #[test]
    fn broken_globs_are_errors() {
        assert!(ImageGlobs::new(["ghcr.io/[abc"]).is_err());
        assert!(ImageGlobs::new([""]).is_err());
    }

    #[test]
    fn an_upper_case_registry_host_is_the_same_registry_and_matches_its_globs() {
        let image = ImageRef::parse("REGISTRY.Example.com:5000/team/app:v1").unwrap();
        assert_eq!(image.registry(), "registry.example.com:5000");
        assert_eq!(image.normalized(), "registry.example.com:5000/team/app:v1");
        assert_eq!(image.written(), "REGISTRY.Example.com:5000/team/app:v1");
        let globs = ImageGlobs::new(["registry.example.com:5000/team/**"]).unwrap();
        assert!(globs.matches(&image));
        let hub = ImageRef::parse("Docker.IO/library/nginx:1.27").unwrap();
        assert_eq!(hub.normalized(), "docker.io/library/nginx:1.27");
    }
}
