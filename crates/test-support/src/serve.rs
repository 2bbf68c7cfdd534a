//! The one way tests start `portcullis serve` as a child process: [`Serve`], a builder over the
//! binary's path (tests pass `env!("CARGO_BIN_EXE_portcullis")`), the configuration, extra
//! arguments and environment. [`Serve::run`] runs the server to its exit (a refusal at
//! start-up); [`Serve::spawn`] starts it, waits until it announces its addresses and gives a
//! [`ServeChild`]: captured stderr (JSON log lines), signals, killed when dropped.
//!
//! Every child is hermetic: ephemeral ports on 127.0.0.1, its own temporary directory (the
//! configuration written from YAML, the generated CA's `ca.pem`, `HOME`), no cluster reachable
//! (`KUBECONFIG` names a missing file, `KUBERNETES_SERVICE_HOST` removed) and no
//! `PORTCULLIS_CONFIG` or `PORTCULLIS_LOG` from the caller's environment.

use std::ffi::OsString;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The log message with which `serve` announces `webhook_addr` and `probe_addr`.
pub const READY_MESSAGE: &str = "portcullis is serving";

#[derive(Debug, Clone)]
enum Config {
    /// No `--config`: the embedded default.
    Embedded,
    File(PathBuf),
    /// Written to `config.yaml` in the child's directory.
    Yaml(String),
}

#[derive(Debug, Clone)]
enum Tls {
    /// The server generates its CA and writes it to `ca.pem` in the child's directory.
    Generated,
    /// `--tls-cert` / `--tls-key` (watched and reloaded by the server), trusted through this
    /// CA.
    Files {
        cert: PathBuf,
        key: PathBuf,
        ca_pem: String,
    },
}

/// A `portcullis serve` command line being put together; see the module documentation for
/// what every child gets.
#[derive(Debug, Clone)]
#[must_use]
pub struct Serve {
    binary: PathBuf,
    config: Config,
    listen: String,
    probe_listen: String,
    tls: Tls,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    ready_timeout: Duration,
}

/// How a [`Serve::run`] ended.
#[derive(Debug, Clone)]
pub struct ServeExit {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stderr: String,
}

impl Serve {
    /// `binary serve` on the embedded default configuration with a generated certificate.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            config: Config::Embedded,
            listen: "127.0.0.1:0".into(),
            probe_listen: "127.0.0.1:0".into(),
            tls: Tls::Generated,
            args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// `--config path`.
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Config::File(path.into());
        self
    }

    /// `--config` of a file holding `yaml` (in the child's directory).
    pub fn config_yaml(mut self, yaml: impl Into<String>) -> Self {
        self.config = Config::Yaml(yaml.into());
        self
    }

    /// `--listen` (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// `--probe-listen` (default `127.0.0.1:0`).
    pub fn probe_listen(mut self, addr: impl Into<String>) -> Self {
        self.probe_listen = addr.into();
        self
    }

    /// Serves the certificate files `cert` and `key` (`--tls-cert`, `--tls-key`, watched and
    /// reloaded by the server) instead of a generated certificate; clients trust `ca_pem`.
    pub fn tls_files(mut self, cert: &Path, key: &Path, ca_pem: &str) -> Self {
        self.tls = Tls::Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca_pem: ca_pem.to_owned(),
        };
        self
    }

    /// One more `serve` argument (after the builder's own).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More `serve` arguments (after the builder's own).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets `key` in the child's environment (over the builder's own settings).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes `key` from the child's environment.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// How long [`spawn`](Self::spawn) waits for the ready line (default 60 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    fn command(&self, dir: &Path, json_logs: bool) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("serve");
        match &self.config {
            Config::Embedded => {}
            Config::File(path) => {
                command.arg("--config").arg(path);
            }
            Config::Yaml(yaml) => {
                let path = dir.join("config.yaml");
                std::fs::write(&path, yaml).unwrap();
                command.arg("--config").arg(path);
            }
        }
        command.args([
            "--listen",
            &self.listen,
            "--probe-listen",
            &self.probe_listen,
        ]);
        if json_logs {
            command.args(["--log-format", "json"]);
        }
        match &self.tls {
            Tls::Generated => {
                command.arg("--ca-out").arg(dir.join("ca.pem"));
            }
            Tls::Files { cert, key, .. } => {
                command
                    .arg("--tls-cert")
                    .arg(cert)
                    .arg("--tls-key")
                    .arg(key);
            }
        }
        command
            .args(&self.args)
            .env_remove("PORTCULLIS_CONFIG")
            .env_remove("PORTCULLIS_LOG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KUBECONFIG", dir.join("no-kubeconfig"))
            .env("HOME", dir);
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }

    /// Runs the server until it exits (for start-up refusals; a server that starts is never
    /// stopped). Logs are text, as a user sees them.
    pub fn run(self) -> ServeExit {
        let dir = tempfile::tempdir().unwrap();
        let output = self
            .command(dir.path(), false)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("run {}: {err}", self.binary.display()));
        ServeExit {
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts the server with JSON logs and waits until it logs [`READY_MESSAGE`] (at most the
    /// ready timeout); panics with what it logged if it exits or times out first.
    pub fn spawn(self) -> ServeChild {
        let dir = tempfile::tempdir().unwrap();
        let mut child = self
            .command(dir.path(), true)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", self.binary.display()));
        let stderr = Captured::start(child.stderr.take().unwrap());
        let deadline = Instant::now() + self.ready_timeout;
        let ready = stderr.wait_for(0, deadline, |event| event["message"] == READY_MESSAGE);
        let Some((index, event)) = ready else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "portcullis serve did not announce its addresses within {:?}:\n{}",
                self.ready_timeout,
                stderr.lines().join("\n")
            );
        };
        let addr = |key: &str| -> SocketAddr {
            event[key]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {event}"))
        };
        let (webhook_addr, probe_addr) = (addr("webhook_addr"), addr("probe_addr"));
        let (ca_path, ca_pem) = match &self.tls {
            Tls::Generated => {
                let path = dir.path().join("ca.pem");
                let pem = std::fs::read_to_string(&path)
                    .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                (Some(path), pem)
            }
            Tls::Files { ca_pem, .. } => (None, ca_pem.clone()),
        };
        ServeChild {
            child,
            webhook_addr,
            probe_addr,
            ca_pem,
            ca_path,
            stderr,
            cursor: Mutex::new(index + 1),
            _dir: dir,
        }
    }
}

/// A running `portcullis serve` (see [`Serve::spawn`]), killed when dropped.
pub struct ServeChild {
    child: Child,
    pub webhook_addr: SocketAddr,
    pub probe_addr: SocketAddr,
    /// The CA that clients trust: the generated one, or the one given with the files.
    pub ca_pem: String,
    /// Where the generated CA was written (`--ca-out`); `None` with certificate files.
    pub ca_path: Option<PathBuf>,
    stderr: Captured,
    /// The first stderr line [`wait_for_log`](Self::wait_for_log) looks at next.
    cursor: Mutex<usize>,
    _dir: tempfile::TempDir,
}

impl ServeChild {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (how Kubernetes stops a pod) with `kill`.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {}: {status}", self.pid());
    }

    /// The exit status if the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the child to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lines()
    }

    /// The first JSON log event so far whose `message` is `message`.
    pub fn logged(&self, message: &str) -> Option<Value> {
        self.stderr
            .wait_for(0, Instant::now(), |event| event["message"] == message)
            .map(|(_, event)| event)
    }

    /// Waits at most `timeout` for a JSON log event whose `message` is `message`, logged after
    /// the ready line and after the event a previous call returned; panics when none comes.
    pub fn wait_for_log(&self, message: &str, timeout: Duration) -> Value {
        let mut cursor = self.cursor.lock().unwrap();
        let found = self
            .stderr
            .wait_for(*cursor, Instant::now() + timeout, |event| {
                event["message"] == message
            });
        let Some((index, event)) = found else {
            panic!("no log line {message:?} within {timeout:?}");
        };
        *cursor = index + 1;
        event
    }

    /// `https://127.0.0.1:<port>/validate?timeout=<timeout>`.
    pub fn validate_url(&self, timeout: &str) -> String {
        format!(
            "https://127.0.0.1:{}/validate?timeout={timeout}",
            self.webhook_addr.port()
        )
    }

    /// An HTTP/1.1 client trusting only this server's CA (as the API server trusts
    /// `caBundle`), with a 30 s timeout.
    pub fn client(&self) -> reqwest::Client {
        crate::tls::client_builder_trusting(&[&self.ca_pem])
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// The probe port's `/metrics` text (empty when it cannot be read).
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.probe_addr);
        match reqwest::get(url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Resident set size of the child in kB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kb(&self) -> Option<u64> {
        self.proc_status_kb("VmRSS:")
    }

    /// Peak resident set size of the child in kB (`VmHWM`).
    pub fn peak_rss_kb(&self) -> Option<u64> {
        self.proc_status_kb("VmHWM:")
    }

    fn proc_status_kb(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child's stderr, read to its end by a thread (so the child never blocks on logging) and
/// kept line by line.
#[derive(Clone)]
struct Captured {
    shared: Arc<(Mutex<Lines>, Condvar)>,
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

impl Captured {
    fn start(stderr: std::process::ChildStderr) -> Self {
        let captured = Self {
            shared: Arc::new((Mutex::new(Lines::default()), Condvar::new())),
        };
        let shared = captured.shared.clone();
        std::thread::spawn(move || {
            let (lines, changed) = &*shared;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().lines.push(line);
                changed.notify_all();
            }
            lines.lock().unwrap().closed = true;
            changed.notify_all();
        });
        captured
    }

    fn lines(&self) -> Vec<String> {
        self.shared.0.lock().unwrap().lines.clone()
    }

    /// The first line from index `from` on that is a JSON event matching `matches`, waiting
    /// until `deadline` or the end of the stream.
    fn wait_for(
        &self,
        from: usize,
        deadline: Instant,
        matches: impl Fn(&Value) -> bool,
    ) -> Option<(usize, Value)> {
        let (lines, changed) = &*self.shared;
        let mut guard = lines.lock().unwrap();
        let mut next = from;
        loop {
            while next < guard.lines.len() {
                let event: Value = serde_json::from_str(&guard.lines[next]).unwrap_or(Value::Null);
                if matches(&event) {
                    return Some((next, event));
                }
                next += 1;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if guard.closed || left.is_zero() {
                return None;
            }
            guard = changed.wait_timeout(guard, left).unwrap().0;
        }
    }
}
