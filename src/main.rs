//! The `nodeup` command: parse the arguments, set up logging, run, map the result to an exit code
//! (0 done, 1 a deployment or operation failed, 2 bad input or configuration).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    raise_open_files_limit();
    limit_malloc_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let args = cli::Cli::parse();
    let default = match args.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("NODEUP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal: a CI log or a file gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let outcome = cli::run(args).await;
    // What was printed did not all reach standard output (a full disk): that is a failure too,
    // said once, whatever else the command did.
    if let Some(e) = cli::output::stdout_failure() {
        eprintln!("error: writing to standard output: {e}");
        if outcome.is_ok() {
            return ExitCode::FAILURE;
        }
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// Raises the soft limit on open files to the hard limit: a fleet holds one socket per machine in
/// flight, and the usual soft limit (1024) is below `--parallel 1000` plus what else is open.
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// How many malloc arenas glibc may make. Its default (eight per core) lets a fleet's thousands of
/// short-lived connections, served by several threads, fragment memory that is never given back.
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`].
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets a tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}
