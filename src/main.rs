//! The thin `portcullis` binary: parse arguments, install the one rustls crypto provider,
//! start tracing, and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use portcullis::cli::{self, Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One process-wide provider (aws-lc-rs) for every rustls user in the tree. Failing only
    // means one was installed already, which is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Held to the end of main: dropping it writes out the log lines still queued.
    let _log_writer = init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("portcullis: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            // The message and each cause it does not already contain: `{:#}` would print a
            // cause twice where a variant's message names its source.
            eprintln!("portcullis: {}", err.with_causes());
            ExitCode::from(err.exit_code())
        }
    }
}

/// Logs go to stderr (stdout carries command output). `PORTCULLIS_LOG` takes a tracing
/// filter (e.g. `debug`, `portcullis=debug`); the default is `info` for `serve`, `warn` else.
fn init_tracing(cli: &Cli) -> tracing_appender::non_blocking::WorkerGuard {
    // rustls warns once per handshake about clients sending an IP address as SNI (load
    // tools do); that is the client's bug and would flood the log, so only its errors show.
    let default = if matches!(cli.command, Command::Serve(_)) {
        "info,rustls=error"
    } else {
        "warn,rustls=error"
    };
    let filter =
        EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colour codes only for a person at a terminal: in a pod's log, a file or a pipe they are
    // noise that breaks grep and log shippers (`NO_COLOR` turns them off at a terminal too).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Lines are written by a thread of their own, so a review never waits on the pipe or the
    // terminal behind stderr (one "decided" line per review was about 5% of the warm path's
    // CPU, spent in write(2) and the stderr lock on the async workers). Not lossy: when the
    // queue is full, the caller waits for room rather than a decision being dropped from the
    // audit trail.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("portcullis-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(writer);
    match cli.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
