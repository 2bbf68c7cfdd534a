//! Rego policies through `regorus`: loading `.rego` files and folders (each file in Rego v1 or
//! v0, see [`RegoSyntax`]), compiling them once into a prepared engine that every evaluation
//! clones, and turning `violation`, `deny` and `warn` results into findings.
//!
//! Naming: a Rego policy is a package that declares at least one of `violation`, `deny` or
//! `warn`; its name (and the `rule` of its findings) is the package path without `data.`
//! (`k8sdisallowedtags`, `portcullis.no_latest_tag`). Packages that declare none of them are
//! libraries other packages import. Policies run in the order their packages first appear
//! (paths in configuration order, files of a folder in path order).
//!
//! Limits: every rule evaluation runs under regorus' execution timer
//! (`policies.rego.timeoutMillis`); a policy that runs longer, recurses, or fails at run time is
//! a [`PolicyError`], which the engine turns into the `onError` outcome.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use portcullis_core::config::{Config, Mode, PolicyMatch, RegoSettings, RegoSyntax};
use portcullis_core::workload::ContainerKind;

use portcullis_core::policy::input::InputDocument;
use portcullis_core::policy::{Finding, ImageEntry, Policy, PolicyError, PolicyInput, Subject};

use crate::value::ValueError;

/// The rules portcullis reads from every policy package.
pub const RESULT_RULES: [&str; 3] = ["violation", "deny", "warn"];

/// Rego policies could not be loaded. Messages carry `file:line` where regorus gives them.
#[derive(Debug, thiserror::Error)]
pub enum RegoError {
    #[error("cannot read Rego policy {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Rego syntax error: {0}")]
    Syntax(String),
    #[error("Rego policies do not compile: {0}")]
    Compile(String),
    #[error(
        "policies.rego.policies[{index}].package: no loaded Rego policy has package {package:?} (loaded: {loaded})"
    )]
    UnknownPackage {
        index: usize,
        package: String,
        loaded: String,
    },
    #[error("{path}: no .rego files found")]
    Empty { path: PathBuf },
}

/// The syntax a file was loaded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedSyntax {
    V1,
    V0,
}

impl LoadedSyntax {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadedSyntax::V1 => "v1",
            LoadedSyntax::V0 => "v0",
        }
    }
}

/// One loaded `.rego` file.
#[derive(Debug, Clone)]
pub struct RegoFile {
    pub path: String,
    pub syntax: LoadedSyntax,
    pub package: String,
    /// `sha256:<hex>` of the file's bytes.
    pub digest: String,
}

/// One package: a policy when it declares a result rule, else a library.
#[derive(Debug, Clone, Default)]
pub struct Package {
    /// Without `data.`.
    pub name: String,
    /// Which of [`RESULT_RULES`] it declares.
    pub rules: Vec<&'static str>,
    /// Declared `test_*` rules (for `policy test`).
    pub tests: Vec<String>,
}

impl Package {
    pub fn is_policy(&self) -> bool {
        !self.rules.is_empty()
    }
}

/// What one policy package returned for one input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegoOutcome {
    /// `violation` and `deny` entries: (message, details).
    pub violations: Vec<(String, Json)>,
    /// `warn` entries.
    pub warnings: Vec<(String, Json)>,
}

/// Compiled Rego modules, prepared once; evaluations clone the prepared engine.
#[derive(Debug, Clone)]
pub struct RegoBundle {
    prepared: regorus::Engine,
    files: Vec<RegoFile>,
    packages: Vec<Package>,
    identity: String,
}

/// A source file handed to [`RegoBundle::compile`].
#[derive(Debug, Clone)]
pub struct RegoSource {
    pub path: String,
    pub text: String,
    pub syntax: RegoSyntax,
}

impl RegoBundle {
    /// Reads every `.rego` file the settings name and compiles them.
    pub fn load(settings: &RegoSettings) -> Result<Self, RegoError> {
        let mut sources = Vec::new();
        for entry in &settings.paths {
            // `*_test.rego` files hold Rego unit tests: `policy test` runs them, serving
            // has no use for them.
            let files: Vec<PathBuf> = rego_files(entry.path())?
                .into_iter()
                .filter(|p| !p.to_string_lossy().ends_with("_test.rego"))
                .collect();
            if files.is_empty() {
                return Err(RegoError::Empty {
                    path: entry.path().to_owned(),
                });
            }
            for path in files {
                let text = std::fs::read_to_string(&path).map_err(|source| RegoError::Read {
                    path: path.clone(),
                    source,
                })?;
                sources.push(RegoSource {
                    path: path.display().to_string(),
                    text,
                    syntax: entry.syntax(),
                });
            }
        }
        Self::compile(sources, timeout_of(settings))
    }

    /// Parses (each file in its syntax), compiles and prepares `sources`. Pure apart from
    /// regorus' own work.
    pub fn compile(sources: Vec<RegoSource>, timeout: Duration) -> Result<Self, RegoError> {
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(timer(timeout));
        add_deprecated_builtins(&mut engine)?;
        let mut files = Vec::new();
        let mut packages: Vec<Package> = Vec::new();
        let mut hasher = Sha256::new();
        // Each file parsed on its own first (its syntax, package and syntax tree), so negated
        // calls can be given OPA's meaning before the real engine compiles them.
        let mut parsed = Vec::with_capacity(sources.len());
        for source in &sources {
            let mut scratch = regorus::Engine::new();
            let (package, syntax) = add_source(&mut scratch, source, &source.text, None)?;
            let ast = scratch
                .get_ast_as_json()
                .map_err(|err| RegoError::Compile(tidy(&err)))?;
            let ast: Json =
                serde_json::from_str(&ast).map_err(|err| RegoError::Compile(err.to_string()))?;
            let module = ast.get(0).cloned().unwrap_or(Json::Null);
            let package = package.strip_prefix("data.").unwrap_or(&package).to_owned();
            parsed.push((package, syntax, module));
        }
        let globals = crate::negation::global_names(
            &parsed
                .iter()
                .map(|(package, _, ast)| crate::negation::Parsed {
                    package: package.clone(),
                    ast,
                })
                .collect::<Vec<_>>(),
        );
        for (source, (package, syntax, module)) in sources.into_iter().zip(parsed) {
            let none = Default::default();
            let names = globals.get(&package).unwrap_or(&none);
            let text = crate::negation::rewrite(&source.text, &module, names);
            let rewritten = text.is_some();
            let text = text.as_deref().unwrap_or(&source.text);
            add_source(&mut engine, &source, text, Some(syntax)).map_err(|err| {
                if rewritten {
                    RegoError::Compile(format!(
                        "{}: cannot give negated calls OPA's meaning: {err}",
                        source.path
                    ))
                } else {
                    err
                }
            })?;
            let digest = portcullis_core::config::identity_of(source.text.as_bytes());
            hasher.update(source.path.as_bytes());
            hasher.update([0]);
            hasher.update(digest.as_bytes());
            hasher.update([0]);
            let index = match packages.iter().position(|p| p.name == package) {
                Some(index) => index,
                None => {
                    packages.push(Package {
                        name: package.clone(),
                        ..Package::default()
                    });
                    packages.len() - 1
                }
            };
            if let Some(entry) = packages.get_mut(index) {
                for rule in RESULT_RULES {
                    if engine
                        .has_declared_rule_rooted_at(&source.path, rule)
                        .unwrap_or(false)
                        && !entry.rules.contains(&rule)
                    {
                        entry.rules.push(rule);
                    }
                }
                for test in test_rule_names(&source.text) {
                    if !entry.tests.contains(&test)
                        && engine
                            .has_declared_rule_rooted_at(&source.path, &test)
                            .unwrap_or(false)
                    {
                        entry.tests.push(test);
                    }
                }
            }
            files.push(RegoFile {
                path: source.path,
                syntax,
                package,
                digest,
            });
        }
        if !files.is_empty() {
            let ast = engine
                .get_ast_as_json()
                .map_err(|err| RegoError::Compile(tidy(&err)))?;
            let ast: Json =
                serde_json::from_str(&ast).map_err(|err| RegoError::Compile(err.to_string()))?;
            crate::recursion::check(&ast).map_err(RegoError::Compile)?;
        }
        // Analyse and prepare once (undefined functions, unsafe variables, conflicting
        // rules surface here, at load time); every evaluation clones this prepared engine.
        if !files.is_empty() {
            engine
                .eval_query("true".into(), false)
                .map_err(|err| RegoError::Compile(tidy(&err)))?;
        }
        Ok(Self {
            prepared: engine,
            identity: format!("sha256:{}", hex::encode(hasher.finalize())),
            files,
            packages,
        })
    }

    pub fn files(&self) -> &[RegoFile] {
        &self.files
    }

    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// `sha256:<hex>` over every file's path and content, in load order.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Evaluates one package's result rules on `input`, on a clone of the prepared engine.
    pub fn evaluate(
        &self,
        package: &Package,
        input: regorus::Value,
    ) -> Result<RegoOutcome, RegoEvalError> {
        self.session().evaluate(package, input)
    }

    /// A clone of the prepared engine for several evaluations in a row (the policies of one
    /// review): each evaluation sets its own input.
    pub fn session(&self) -> RegoSession {
        RegoSession {
            engine: self.prepared.clone(),
        }
    }
}

/// An evaluation that failed: regorus stopped (a runtime error, the execution limit), or a
/// result rule produced something that is not a set of violations.
#[derive(Debug, thiserror::Error)]
pub enum RegoEvalError {
    #[error("{message}")]
    Engine {
        /// regorus's message, reduced to `file:line:col: message`.
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{0}")]
    Result(String),
}

impl RegoEvalError {
    fn engine(error: anyhow::Error) -> Self {
        Self::Engine {
            message: tidy(&error),
            source: error.into(),
        }
    }
}

/// A clone of the prepared engine, owned by one evaluating thread.
#[derive(Debug, Clone)]
pub struct RegoSession {
    engine: regorus::Engine,
}

impl RegoSession {
    /// Evaluates one package's result rules on `input`.
    pub fn evaluate(
        &mut self,
        package: &Package,
        input: regorus::Value,
    ) -> Result<RegoOutcome, RegoEvalError> {
        let engine = &mut self.engine;
        engine.set_input(input);
        let mut outcome = RegoOutcome::default();
        for rule in &package.rules {
            let value = engine
                .eval_rule(format!("data.{}.{rule}", package.name))
                .map_err(RegoEvalError::engine)?;
            let entries = results(rule, &value).map_err(RegoEvalError::Result)?;
            if *rule == "warn" {
                outcome.warnings.extend(entries);
            } else {
                outcome.violations.extend(entries);
            }
        }
        Ok(outcome)
    }
}

impl RegoBundle {
    /// Evaluates one `test_` rule with no input: `Ok(true)` when it is true.
    pub fn run_test(&self, package: &Package, rule: &str) -> Result<bool, String> {
        let mut engine = self.prepared.clone();
        let value = engine
            .eval_rule(format!("data.{}.{rule}", package.name))
            .map_err(|err| tidy(&err))?;
        Ok(value == regorus::Value::Bool(true))
    }

    /// One [`Policy`] per policy package, with its configured parameters, mode and match.
    pub fn policies(self: &Arc<Self>, config: &Config) -> Result<Vec<Box<dyn Policy>>, RegoError> {
        let configured = &config.policies.rego.policies;
        for (index, settings) in configured.iter().enumerate() {
            let wanted = settings
                .package
                .strip_prefix("data.")
                .unwrap_or(&settings.package);
            if !self
                .packages
                .iter()
                .any(|p| p.is_policy() && p.name == wanted)
            {
                return Err(RegoError::UnknownPackage {
                    index,
                    package: wanted.to_owned(),
                    loaded: self
                        .packages
                        .iter()
                        .filter(|p| p.is_policy())
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        let mut policies: Vec<Box<dyn Policy>> = Vec::new();
        for package in self.packages.iter().filter(|p| p.is_policy()) {
            let settings = configured
                .iter()
                .find(|s| s.package.strip_prefix("data.").unwrap_or(&s.package) == package.name);
            if settings.is_some_and(|s| !s.enabled) {
                continue;
            }
            let parameters = settings.and_then(|s| s.parameters.clone());
            policies.push(Box::new(RegoPolicy {
                bundle: self.clone(),
                package: package.clone(),
                mode: settings.and_then(|s| s.mode).unwrap_or(config.mode),
                matches: settings.map(|s| s.matches.clone()).unwrap_or_default(),
                parameters: regorus::Value::from(
                    parameters.unwrap_or_else(|| Json::Object(Default::default())),
                ),
            }));
        }
        Ok(policies)
    }
}

/// regorus' multi-line diagnostics (`--> file:line:col`, the source line, `error: ...`) as one
/// line, `file:line:col: message`, for logs, messages and audit annotations.
pub fn tidy(err: &impl std::fmt::Display) -> String {
    let text = format!("{err:#}");
    let place = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .map(str::trim);
    let message = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("error: "))
        .map(str::trim);
    match (place, message) {
        (Some(place), Some(message)) => format!("{place}: {message}"),
        (None, Some(message)) => message.to_owned(),
        _ => text.trim().replace('\n', " "),
    }
}

/// The execution limit of every rule evaluation.
fn timer(limit: Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit,
        // Work units between clock reads: cheap enough, and fine-grained for loops.
        check_interval: NonZeroU32::MIN.saturating_add(15),
    }
}

fn timeout_of(settings: &RegoSettings) -> Duration {
    settings.timeout_millis
}

/// `any` and `all`: OPA built-ins deprecated since v0.x that Gatekeeper library policies
/// still call (`any(tags)` in `k8sdisallowedtags`); regorus does not provide them. `any` is
/// true when some element is `true`, `all` when every element is (so `all([])` is true).
fn add_deprecated_builtins(engine: &mut regorus::Engine) -> Result<(), RegoError> {
    fn elements(value: &regorus::Value) -> Option<Vec<regorus::Value>> {
        match value {
            regorus::Value::Array(items) => Some(items.iter().cloned().collect()),
            regorus::Value::Set(items) => Some(items.iter().cloned().collect()),
            _ => None,
        }
    }
    let truth = regorus::Value::Bool(true);
    for (name, every) in [("any", false), ("all", true)] {
        let truth = truth.clone();
        // regorus' extension signature fixes the anyhow result type.
        let function = move |args: Vec<regorus::Value>| -> anyhow::Result<regorus::Value> {
            let items = args
                .first()
                .and_then(elements)
                .ok_or_else(|| anyhow::anyhow!("expects an array or a set"))?;
            let answer = if every {
                items.iter().all(|v| *v == truth)
            } else {
                items.contains(&truth)
            };
            Ok(regorus::Value::Bool(answer))
        };
        engine
            .add_extension(name.into(), 1, Box::new(function))
            .map_err(|err| RegoError::Compile(tidy(&err)))?;
    }
    Ok(())
}

/// Adds one file (`text`: its contents, possibly rewritten) in the syntax it asks for (auto:
/// v1, else v0), or in `known` when the syntax was found before. Returns its package.
fn add_source(
    engine: &mut regorus::Engine,
    source: &RegoSource,
    text: &str,
    known: Option<LoadedSyntax>,
) -> Result<(String, LoadedSyntax), RegoError> {
    let mut attempt = |syntax: LoadedSyntax| {
        engine.set_rego_v0(syntax == LoadedSyntax::V0);
        engine
            .add_policy(source.path.clone(), text.to_owned())
            .map(|package| (package, syntax))
            .map_err(|err| tidy(&err))
    };
    let result = match (known, source.syntax) {
        (Some(syntax), _) => attempt(syntax),
        (None, RegoSyntax::V1) => attempt(LoadedSyntax::V1),
        (None, RegoSyntax::V0) => attempt(LoadedSyntax::V0),
        (None, RegoSyntax::Auto) => match attempt(LoadedSyntax::V1) {
            Ok(loaded) => Ok(loaded),
            Err(v1) => attempt(LoadedSyntax::V0).map_err(|v0| {
                // Both failed: the file is broken in either syntax. Say both, v1 first.
                if v0 == v1 {
                    v1
                } else {
                    format!("{v1}\n(also tried as Rego v0: {v0})")
                }
            }),
        },
    };
    // Later files start from the default again.
    engine.set_rego_v0(false);
    result.map_err(RegoError::Syntax)
}

/// `.rego` files under `path` (the file itself, or a folder searched recursively), in path
/// order. Hidden entries (Kubernetes' `..data` ConfigMap machinery) are skipped.
pub fn rego_files(path: &Path) -> Result<Vec<PathBuf>, RegoError> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut found = Vec::new();
    let mut pending = vec![path.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| RegoError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| RegoError::Read {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rego") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Names that look like `test_` rule heads (checked against the parsed module afterwards).
fn test_rule_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The entries of a `violation`, `deny` or `warn` set: each a message and details.
fn results(rule: &str, value: &regorus::Value) -> Result<Vec<(String, Json)>, String> {
    let json = match value {
        regorus::Value::Undefined => return Ok(Vec::new()),
        other => serde_json::to_value(other).map_err(|err| err.to_string())?,
    };
    let items = match json {
        Json::Array(items) => items,
        Json::Null => Vec::new(),
        other => {
            return Err(format!(
                "`{rule}` must be a set of messages or objects with \"msg\", got {other}"
            ));
        }
    };
    Ok(items
        .into_iter()
        .map(|item| match item {
            Json::String(msg) => (msg, Json::Null),
            Json::Object(mut object) => {
                let details = object.remove("details").unwrap_or(Json::Null);
                let msg = match object.remove("msg") {
                    Some(Json::String(msg)) => msg,
                    Some(other) => other.to_string(),
                    None => Json::Object(object).to_string(),
                };
                (msg, details)
            }
            other => (other.to_string(), Json::Null),
        })
        .collect())
}

/// The input document of one review for Rego policies, built once: `review` (the
/// AdmissionRequest, serialized straight into a regorus value, no JSON in between), `images` and
/// `now`; each policy then only adds its `parameters`. Exactly the document
/// `InputDocument::new(serde_json::to_value(review)?, images, now)` gives (tests compare both).
pub fn input_document<T: serde::Serialize + ?Sized>(
    review: &T,
    images: &[ImageEntry],
    now: time::OffsetDateTime,
) -> Result<InputDocument, ValueError> {
    // Stored as a result, the type a JSON document converts into lazily (see `evaluate`).
    InputDocument::in_engine_form(images, now, |base| {
        shared_parts(base, Some(crate::value::to_value(review)?)).map(Ok::<_, ValueError>)
    })
}

/// The shared parts of the document as one regorus object (plus `review` when given).
fn shared_parts(
    base: &serde_json::Map<String, Json>,
    review: Option<regorus::Value>,
) -> Result<regorus::Value, ValueError> {
    let mut parts = BTreeMap::new();
    for (key, value) in base {
        parts.insert(
            regorus::Value::from(key.as_str()),
            crate::value::to_value(value)?,
        );
    }
    if let Some(review) = review {
        parts.insert(regorus::Value::from("review"), review);
    }
    Ok(regorus::Value::from(parts))
}

/// One Rego package as a [`Policy`].
#[derive(Debug)]
pub struct RegoPolicy {
    bundle: Arc<RegoBundle>,
    package: Package,
    mode: Mode,
    matches: PolicyMatch,
    parameters: regorus::Value,
}

impl Policy for RegoPolicy {
    fn name(&self) -> &str {
        &self.package.name
    }

    fn reads_document(&self) -> bool {
        true
    }

    fn evaluate(&self, input: &PolicyInput<'_>) -> Result<Vec<Finding>, PolicyError> {
        if !self
            .matches
            .matches(&input.subject.kind, &input.subject.namespace)
        {
            return Ok(Vec::new());
        }
        let Some(document) = input.document else {
            return Err(PolicyError::new(
                &self.package.name,
                "the input document was not built",
            ));
        };
        // Built by `input_document`, or converted here once per review from a JSON document.
        let form = document.engine_form(|base| shared_parts(base, None));
        let mut value = match form {
            Some(Ok(value)) => value.clone(),
            Some(Err(err)) => {
                return Err(PolicyError::new(&self.package.name, err.to_string()));
            }
            // Another engine's form was stored first: convert here, from the JSON parts.
            None if document.has_review() => shared_parts(document.base(), None)
                .map_err(|err| PolicyError::new(&self.package.name, err.to_string()))?,
            None => {
                return Err(PolicyError::new(
                    &self.package.name,
                    "the input document was built for another policy engine",
                ));
            }
        };
        if let Ok(object) = value.as_object_mut() {
            object.insert(regorus::Value::from("parameters"), self.parameters.clone());
        }
        let outcome = self
            .bundle
            .evaluate(&self.package, value)
            .map_err(|err| PolicyError::new(&self.package.name, err.to_string()).caused_by(err))?;
        Ok(findings(
            &self.package.name,
            self.mode,
            &outcome,
            &input.subject.images,
        ))
    }
}

/// Turns a policy's results into findings: `violation`/`deny` at the policy's mode, `warn` at
/// most `warn`. `details.container` names the container, `details.volume` the image volume (so
/// UPDATE scoping and messages treat it like a built-in finding), `details.fix` says how to
/// fix it.
pub fn findings(
    policy: &str,
    mode: Mode,
    outcome: &RegoOutcome,
    images: &[ImageEntry],
) -> Vec<Finding> {
    let warn_mode = mode.min(Mode::Warn);
    outcome
        .violations
        .iter()
        .map(|v| (v, mode))
        .chain(outcome.warnings.iter().map(|w| (w, warn_mode)))
        .map(|((msg, details), mode)| Finding {
            rule: policy.to_owned(),
            subject: subject(details, images),
            found: msg.clone(),
            fix: details
                .get("fix")
                .and_then(Json::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("change the object so that policy {policy} passes")),
            mode,
        })
        .collect()
}

fn subject(details: &Json, images: &[ImageEntry]) -> Subject {
    let name_of = |value: &Json| match value {
        Json::String(name) => Some(name.clone()),
        Json::Object(object) => object.get("name").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    };
    // `details.volume` names an image volume; `details.container` a container, or any site
    // when it is an `input.images[].container` object carrying its `kind`.
    let (name, kind) = if let Some(volume) = details.get("volume").and_then(name_of) {
        (volume, Some(ContainerKind::ImageVolume))
    } else if let Some(container) = details.get("container").and_then(name_of) {
        let kind = details
            .get("container")
            .and_then(|c| c.get("kind"))
            .and_then(Json::as_str)
            .and_then(ContainerKind::from_name);
        (container, kind)
    } else {
        return Subject::Pod;
    };
    let found = images
        .iter()
        .find(|e| e.container == name && kind.is_none_or(|kind| e.container_kind == kind));
    if let Some(entry) = found {
        return entry.subject();
    }
    Subject::Container {
        container: name,
        kind: kind.unwrap_or(ContainerKind::Container),
        image: details
            .get("image")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

/// How many files loaded in each syntax, for `config validate`.
pub fn describe(bundle: &RegoBundle) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for file in bundle.files() {
        *counts.entry(file.syntax.as_str()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(files: &[(&str, &str)]) -> Result<RegoBundle, RegoError> {
        RegoBundle::compile(
            files
                .iter()
                .map(|(path, text)| RegoSource {
                    path: (*path).into(),
                    text: (*text).into(),
                    syntax: RegoSyntax::Auto,
                })
                .collect(),
            Duration::from_millis(500),
        )
    }

    fn input(json: Json) -> regorus::Value {
        regorus::Value::from(json)
    }

    const V0: &str = r#"package k8sdisallowedtags
violation[{"msg": msg}] {
    container := input.review.object.spec.containers[_]
    endswith(container.image, ":latest")
    msg := sprintf("container <%v> uses a disallowed tag", [container.name])
}
"#;

    const V1: &str = r#"package portcullis.demo
deny contains msg if {
    input.parameters.forbidden == input.review.object.metadata.name
    msg := "forbidden name"
}
warn contains "always" if true
"#;

    #[test]
    fn v0_and_v1_files_load_side_by_side_and_are_told_apart() {
        let bundle = compile(&[("a.rego", V0), ("b.rego", V1)]).unwrap();
        let syntaxes: Vec<_> = bundle.files().iter().map(|f| f.syntax).collect();
        assert_eq!(syntaxes, [LoadedSyntax::V0, LoadedSyntax::V1]);
        let names: Vec<_> = bundle.packages().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["k8sdisallowedtags", "portcullis.demo"]);
        assert_eq!(bundle.packages()[1].rules, ["deny", "warn"]);
    }

    #[test]
    fn violations_deny_and_warn_are_read() {
        let bundle = compile(&[("a.rego", V0), ("b.rego", V1)]).unwrap();
        let doc = serde_json::json!({
            "review": {"object": {"metadata": {"name": "x"}, "spec": {"containers": [
                {"name": "app", "image": "nginx:latest"}]}}},
            "parameters": {"forbidden": "x"},
        });
        let tags = bundle
            .evaluate(&bundle.packages()[0], input(doc.clone()))
            .unwrap();
        assert_eq!(
            tags.violations,
            [("container <app> uses a disallowed tag".into(), Json::Null)]
        );
        let demo = bundle.evaluate(&bundle.packages()[1], input(doc)).unwrap();
        assert_eq!(demo.violations, [("forbidden name".into(), Json::Null)]);
        assert_eq!(demo.warnings, [("always".into(), Json::Null)]);
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let err = compile(&[(
            "broken.rego",
            "package x\n\ndeny contains msg if {\n  msg := \n}\n",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("broken.rego:"), "{err}");
        assert!(err.contains("Rego syntax error"), "{err}");
    }

    #[test]
    fn the_identity_covers_file_contents() {
        let a = compile(&[("a.rego", V1)]).unwrap();
        let b = compile(&[("a.rego", &V1.replace("always", "often"))]).unwrap();
        assert_ne!(a.identity(), b.identity());
        assert_eq!(a.identity(), compile(&[("a.rego", V1)]).unwrap().identity());
    }

    #[test]
    fn details_container_and_fix_shape_the_finding() {
        let outcome = RegoOutcome {
            violations: vec![(
                "bad".into(),
                serde_json::json!({"container": "app", "fix": "do x"}),
            )],
            warnings: vec![("meh".into(), Json::Null)],
        };
        let found = findings("p", Mode::Audit, &outcome, &[]);
        assert_eq!(found[0].fix, "do x");
        assert!(
            matches!(&found[0].subject, Subject::Container { container, .. } if container == "app")
        );
        assert_eq!(found[1].subject, Subject::Pod);
        assert_eq!(found[1].mode, Mode::Audit);
        let enforced = findings("p", Mode::Enforce, &outcome, &[]);
        assert_eq!(enforced[1].mode, Mode::Warn);
    }

    #[test]
    fn details_volume_or_a_container_object_with_its_kind_pick_an_image_volume() {
        let entry = |name: &str, kind: ContainerKind, image: &str| ImageEntry {
            container: name.into(),
            container_kind: kind,
            reference: portcullis_core::reference::ImageRef::parse(image),
            evidence: None,
            scan: portcullis_core::policy::ScanState::NotRequested,
            lifecycle: Default::default(),
        };
        // A container and an image volume may share a name.
        let images = [
            entry("data", ContainerKind::Container, "ghcr.io/acme/app:1"),
            entry(
                "data",
                ContainerKind::ImageVolume,
                "docker.io/evil/payload:1",
            ),
        ];
        let kind_of = |details: Json| match subject(&details, &images) {
            Subject::Container { kind, image, .. } => Some((kind, image)),
            Subject::Pod => None,
        };
        let volume = Some((
            ContainerKind::ImageVolume,
            "docker.io/evil/payload:1".into(),
        ));
        let container = Some((ContainerKind::Container, "ghcr.io/acme/app:1".into()));
        assert_eq!(kind_of(serde_json::json!({"volume": "data"})), volume);
        assert_eq!(
            kind_of(serde_json::json!({"volume": {"name": "data"}})),
            volume
        );
        assert_eq!(
            kind_of(serde_json::json!({"container": {"name": "data", "kind": "imageVolume"}})),
            volume
        );
        assert_eq!(kind_of(serde_json::json!({"container": "data"})), container);
        // A volume the review does not carry is still named as a volume.
        assert_eq!(
            kind_of(serde_json::json!({"volume": "other", "image": "x:1"})),
            Some((ContainerKind::ImageVolume, "x:1".into()))
        );
    }

    #[test]
    fn folders_are_searched_recursively_in_path_order_skipping_hidden_entries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/deeper")).unwrap();
        std::fs::create_dir_all(root.join("..data")).unwrap();
        for file in [
            "z.rego",
            "a.rego",
            "b/deeper/c.rego",
            "..data/hidden.rego",
            "notes.md",
        ] {
            std::fs::write(root.join(file), "package x\n").unwrap();
        }
        let found: Vec<_> = rego_files(root)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(found, ["a.rego", "b/deeper/c.rego", "z.rego"]);
        let settings = RegoSettings {
            paths: vec![portcullis_core::config::RegoPath::Plain(
                root.join("b/deeper/none"),
            )],
            ..RegoSettings::default()
        };
        std::fs::create_dir_all(root.join("b/deeper/none")).unwrap();
        let err = RegoBundle::load(&settings).unwrap_err().to_string();
        assert!(err.contains("no .rego files found"), "{err}");
    }

    #[test]
    fn the_input_document_is_the_one_built_through_json() {
        #[derive(serde::Serialize)]
        struct Review {
            uid: String,
            operation: String,
            #[serde(rename = "dryRun")]
            dry_run: Option<bool>,
            object: Json,
        }
        let review = Review {
            uid: "u".into(),
            operation: "CREATE".into(),
            dry_run: None,
            object: serde_json::json!({"kind": "Pod", "spec": {"containers": [
                {"name": "app", "image": "nginx", "ports": [{"containerPort": 80}]}]}}),
        };
        let images = [ImageEntry {
            container: "app".into(),
            container_kind: ContainerKind::Container,
            reference: portcullis_core::reference::ImageRef::parse("nginx"),
            evidence: None,
            scan: portcullis_core::policy::ScanState::NotRequested,
            lifecycle: Default::default(),
        }];
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let direct = input_document(&review, &images, now).unwrap();
        let direct = direct
            .engine_form(|base| shared_parts(base, None))
            .unwrap()
            .clone()
            .unwrap();
        let json = InputDocument::new(serde_json::to_value(&review).unwrap(), &images, now);
        let through_json = regorus::Value::from(Json::Object(json.base().clone()));
        assert_eq!(direct, through_json);
        assert_eq!(direct.to_string(), through_json.to_string());
    }

    /// The Gatekeeper-style example of docs/writing-policies.md ("OPA compatibility").
    const OWNER: &str = r#"package t
violation[msg] { not startswith(input.review.object.metadata.labels.owner, "team-"); msg := "x" }
"#;

    fn labels(bundle: &RegoBundle, labels: Json) -> usize {
        let doc = serde_json::json!({"review": {"object": {"metadata": {"labels": labels}}}});
        bundle
            .evaluate(&bundle.packages()[0], input(doc))
            .unwrap()
            .violations
            .len()
    }

    #[test]
    fn a_negated_call_on_an_undefined_reference_fails_the_body_as_in_opa() {
        let bundle = compile(&[("owner.rego", OWNER)]).unwrap();
        // No `owner` label: OPA evaluates `input...owner` before the negation, so no violation.
        assert_eq!(labels(&bundle, serde_json::json!({})), 0);
        assert_eq!(labels(&bundle, serde_json::json!({"owner": "team-a"})), 0);
        assert_eq!(labels(&bundle, serde_json::json!({"owner": "someone"})), 1);
    }

    #[test]
    fn comparisons_nested_calls_membership_and_computed_indices_are_moved_out_too() {
        let policy = r#"package portcullis.negations
import rego.v1

obj := {"a": true}
rule_value := input.value

deny contains "eq" if not input.x == "a"
deny contains "nested" if {
    not count(input.list) > 1
}
deny contains "in" if { not "a" in input.list }
deny contains "index" if { not obj[input.key] }
deny contains "rule" if { not startswith(rule_value, "v") }
deny contains "local" if {
    some y in ["z"]
    not startswith(y, "a")
}
deny contains "with" if {
    not startswith(input.missing, "a") with input.other as 1
}
"#;
        let bundle = compile(&[("n.rego", policy)]).unwrap();
        let deny = |doc: Json| -> Vec<String> {
            let mut found: Vec<String> = bundle
                .evaluate(&bundle.packages()[0], input(doc))
                .unwrap()
                .violations
                .into_iter()
                .map(|(m, _)| m)
                .collect();
            found.sort();
            found
        };
        // Everything undefined: only the literals without an undefined operand fire, and the
        // one with `with` keeps regorus' meaning.
        assert_eq!(deny(serde_json::json!({})), ["local", "with"]);
        // Everything defined: each negation is judged on its value.
        assert_eq!(
            deny(serde_json::json!({"x": "b", "list": ["b"], "key": "b", "value": "w"})),
            ["eq", "in", "index", "local", "nested", "rule", "with"]
        );
        assert_eq!(
            deny(serde_json::json!({"x": "a", "list": ["a", "b"], "key": "a", "value": "v"})),
            ["local", "with"]
        );
    }

    #[test]
    fn the_rewrite_keeps_lines_so_errors_point_at_the_written_line() {
        let policy = r#"package t
violation[msg] {
  not startswith(input.a, "x")
  msg := 1 / 0
}
"#;
        let bundle = compile(&[("lines.rego", policy)]).unwrap();
        let doc = serde_json::json!({"a": "y"});
        let err = bundle
            .evaluate(&bundle.packages()[0], input(doc))
            .map(|o| format!("{o:?}"))
            .unwrap_or_else(|e| e.to_string());
        assert!(err.contains("lines.rego:4"), "{err}");
    }

    #[test]
    fn test_rules_are_found() {
        let bundle = compile(&[(
            "t.rego",
            "package t\ntest_one if true\ntest_two if false\nnot_a_test if true\n",
        )])
        .unwrap();
        let package = &bundle.packages()[0];
        assert_eq!(package.tests, ["test_one", "test_two"]);
        assert_eq!(bundle.run_test(package, "test_one"), Ok(true));
        assert_eq!(bundle.run_test(package, "test_two"), Ok(false));
        assert!(!package.is_policy());
    }
}
