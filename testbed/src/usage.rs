//! What a benchmark's client process used, as the kernel counts it: wall time, CPU time (user and
//! system) and peak memory, read with `wait4` when the process ends. With
//! `NODEUP_BENCH_TRACE` set, its memory and threads are printed every two seconds while it runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How often the trace prints.
const TRACE_EVERY: Duration = Duration::from_secs(2);

/// What a finished child used.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// From spawn to exit.
    pub wall: Duration,
    /// User and system CPU time of the process (its threads included).
    pub cpu: Duration,
    /// Peak resident memory, in MB.
    pub peak_rss_mb: f64,
    /// Whether it exited 0.
    pub ok: bool,
}

/// How many lines of a failed client's standard error are shown.
const FAILED_STDERR_LINES: usize = 20;

/// Runs `cmd` (its output discarded, its standard error kept in a temporary file and the end of
/// it printed if it fails) and reaps it with `wait4`, for its own peak RSS and CPU.
///
/// # Panics
/// The command cannot be spawned.
// The child is reaped by wait4, which std's `wait` cannot do with the rusage.
#[allow(clippy::zombie_processes)]
pub fn measure(mut cmd: Command) -> Usage {
    let mut stderr = tempfile::tempfile().expect("a temporary file for the client's stderr");
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(stderr.try_clone().expect("stderr file"))
        .spawn()
        .expect("spawn");
    if std::env::var_os("NODEUP_BENCH_TRACE").is_some() {
        trace(child.id(), started);
    }
    let mut status = 0;
    // SAFETY: wait4 on our own child, with structs we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let used = Usage {
        wall: started.elapsed(),
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    };
    if !used.ok {
        show_tail(&mut stderr, &cmd);
    }
    used
}

/// Prints the end of a failed client's standard error.
fn show_tail(stderr: &mut std::fs::File, cmd: &Command) {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let _ = stderr
        .rewind()
        .and_then(|()| stderr.read_to_string(&mut text));
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(FAILED_STDERR_LINES)..];
    eprintln!("{:?} failed; its stderr ends:", cmd.get_program());
    for line in tail {
        eprintln!("    {line}");
    }
}

/// Prints the process's memory and threads every [`TRACE_EVERY`] until it ends.
fn trace(pid: u32, started: Instant) {
    std::thread::spawn(move || {
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let line = |key: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(key))
                    .unwrap_or("")
                    .to_string()
            };
            eprintln!(
                "trace {:>6.1}s {} {}",
                started.elapsed().as_secs_f64(),
                line("VmRSS"),
                line("Threads")
            );
            std::thread::sleep(TRACE_EVERY);
        }
    });
}

/// One client's deployment of `nodes` machines through a provider's API, for the benchmarks that
/// count API calls: what it cost and the calls it made, by call.
#[derive(Debug, Clone)]
pub struct ApiRun {
    /// Who deployed (`nodeup`, `Libcloud 3.9 deploy_node`).
    pub client: &'static str,
    /// How many machines.
    pub nodes: usize,
    /// Its wall time, CPU and memory.
    pub usage: Usage,
    /// The API calls it made, by call.
    pub calls: std::collections::BTreeMap<String, u32>,
}

/// Prints `runs` as a Markdown table; `unit` names the machines (`nodes`, `servers`).
pub fn print_api_runs(runs: &[ApiRun], unit: &str) {
    println!(
        "| client | {unit} | wall (s) | client CPU (s) | API calls | per {} | calls by action | result |",
        unit.trim_end_matches('s')
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in runs {
        let total: u32 = r.calls.values().sum();
        let by_action: Vec<String> = r.calls.iter().map(|(a, n)| format!("{a} {n}")).collect();
        println!(
            "| {} | {} | {:.2} | {:.2} | {total} | {:.1} | {} | {} |",
            r.client,
            r.nodes,
            r.usage.wall.as_secs_f64(),
            r.usage.cpu.as_secs_f64(),
            f64::from(total) / r.nodes as f64,
            by_action.join(", "),
            if r.usage.ok { "ok" } else { "FAILED" }
        );
    }
}
