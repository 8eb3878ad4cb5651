//! What the commands print: progress on stderr as it happens, script output line by line (prefixed
//! by the host when several run), and results as JSON on stdout.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use std::time::Duration;

use serde::Serialize;

use nodeup::deploy::StepResult;
use nodeup::engine::fleet::{Fate, RunOutcome};
use nodeup::engine::{error_chain, Cause, Event, LoginAttempt, Progress};
use nodeup::model::Node;
use nodeup::ssh::{ExitStatus, OutputSink, Stream};

/// A node as the CLI prints it: a password in `extra` shows as `***` (stdout ends up in CI logs).
pub fn shown(node: &Node) -> Node {
    let mut node = node.clone();
    if node.password().is_some() {
        node.extra.insert("password".into(), "***".into());
    }
    node
}

/// An event as a progress line says it.
pub fn event_text(event: &Event) -> String {
    match event {
        Event::Creating(name) => format!("creating node {name}"),
        Event::Created(node) => format!("created node {} ({})", node.name, node.id),
        Event::Waiting => "waiting for the node to run".to_string(),
        Event::Running(node, addr) => {
            format!("node {} is running at {addr}; logging in", node.name)
        }
        Event::LoginWaiting(what) => what.clone(),
        Event::LoggedIn(user) => format!("logged in as {user}"),
        Event::Reconnecting(step) => {
            format!("connection lost during step {step}; logging in again to resume")
        }
        Event::Retrying(run) => {
            format!("a step failed; running the deployment again (run {run})")
        }
        Event::StepStarted { index, total, kind } => format!("step {index}/{total}: {kind}"),
        Event::StepWaiting(what) => format!("  {what}"),
        Event::StepFinished {
            index,
            total,
            kind,
            elapsed,
        } => format!(
            "step {index}/{total}: {kind} done in {:.1}s",
            elapsed.as_secs_f64()
        ),
    }
}

/// Prints progress lines on stderr, prefixed by `[host]` when several hosts run.
pub fn progress(prefix: Option<String>, started: Instant) -> Progress {
    let tag = prefix.map(|p| format!("[{p}] ")).unwrap_or_default();
    Arc::new(move |event: &Event| {
        eprintln!(
            "{tag}{} ({:.1}s)",
            event_text(event),
            started.elapsed().as_secs_f64()
        );
    })
}

/// Receives whole lines of script output (each with its newline).
pub type LineSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// An output sink that cuts script output into lines and hands each to `emit`, stdout and stderr
/// each buffered on its own; a long line without a newline yet is handed on in pieces.
pub fn line_sink(emit: LineSink) -> OutputSink {
    let pending: Mutex<(Vec<u8>, Vec<u8>)> = Mutex::new((Vec::new(), Vec::new()));
    Arc::new(move |stream, data: &[u8]| {
        let mut buffers = pending.lock().unwrap_or_else(|e| e.into_inner());
        let buffer = match stream {
            Stream::Stdout => &mut buffers.0,
            Stream::Stderr => &mut buffers.1,
        };
        buffer.extend_from_slice(data);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            emit(&line);
        }
        if buffer.len() > LONG_LINE {
            buffer.push(b'\n');
            emit(buffer);
            buffer.clear();
        }
    })
}

/// How much of a line without a newline is held before it is shown in pieces.
const LONG_LINE: usize = 8192;

/// Streams script output to stderr line by line, each line prefixed (`[host] ` or `  | `).
pub fn script_output(prefix: Option<String>) -> OutputSink {
    let tag = prefix
        .map(|p| format!("[{p}] "))
        .unwrap_or_else(|| "  | ".to_string());
    line_sink(Arc::new(move |line: &[u8]| {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(tag.as_bytes());
        let _ = err.write_all(line);
    }))
}

/// One step's result, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 1-based.
    pub index: usize,
    /// The step's kind.
    pub kind: &'static str,
    /// For scripts: the exit status.
    pub exit_status: Option<u32>,
    /// For scripts: the signal that ended it.
    pub signal: Option<String>,
    /// How long it took, in seconds.
    pub duration: f64,
    /// The kept tail of standard output.
    pub stdout: String,
    /// The kept tail of standard error.
    pub stderr: String,
    /// How many bytes of output were not kept.
    pub output_bytes_dropped: u64,
    /// A short note.
    pub note: String,
}

impl StepReport {
    /// Step `index` (1-based).
    pub fn new(index: usize, step: &StepResult) -> Self {
        let (exit_status, signal) = match &step.status {
            Some(ExitStatus::Code(c)) => (Some(*c), None),
            Some(ExitStatus::Signal { name, .. }) => (None, Some(name.clone())),
            None => (None, None),
        };
        StepReport {
            index,
            kind: step.kind,
            exit_status,
            signal,
            duration: step.duration.as_secs_f64(),
            stdout: step.stdout.text().into_owned(),
            stderr: step.stderr.text().into_owned(),
            output_bytes_dropped: step.stdout.dropped() + step.stderr.dropped(),
            note: step.note.clone(),
        }
    }

    /// Every step that ran.
    pub fn all(steps: &[StepResult]) -> Vec<StepReport> {
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| StepReport::new(i + 1, s))
            .collect()
    }
}

/// The step that failed, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct FailedStep {
    /// 1-based.
    pub index: usize,
    /// Its kind.
    pub kind: &'static str,
    /// Why it failed.
    pub error: String,
    /// For scripts: the exit status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<u32>,
    /// The kept tail of its standard output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// The kept tail of its standard error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

impl FailedStep {
    /// The failing step of a deployment or run, when a step failed.
    pub fn new(step: Option<(usize, &'static str)>, cause: &Cause) -> Option<FailedStep> {
        let (index, kind) = step?;
        let output = match cause {
            Cause::Step(e) => e.output(),
            _ => None,
        };
        Some(FailedStep {
            index,
            kind,
            error: error_chain(cause),
            exit_status: output.and_then(|(status, _, _)| status.and_then(|s| s.code())),
            stdout: output.map(|(_, out, _)| out.text().into_owned()),
            stderr: output.map(|(_, _, err)| err.text().into_owned()),
        })
    }
}

/// One node of `deploy`, or one host of `run`, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// Whether its steps all succeeded.
    pub ok: bool,
    /// `run`: the host as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `deploy`: the node's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `deploy`: the node, as last listed (a password shows as `***`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// `deploy`: what became of the node: `stays`, `kept`, `destroyed`, `not-created`, `left`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fate: Option<Fate>,
    /// `deploy`: whether a failed node was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_kept: Option<bool>,
    /// The user it logged in as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// How many times the connection was lost and resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnects: Option<u32>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The step that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<FailedStep>,
    /// What each username got, when logging in failed or took tries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<LoginAttempt>,
    /// The steps that finished.
    pub steps: Vec<StepReport>,
    /// How long it took, in seconds.
    pub duration: f64,
}

impl NodeReport {
    /// An empty report: not ok, nothing ran.
    pub fn empty() -> Self {
        NodeReport {
            ok: false,
            host: None,
            name: None,
            node: None,
            fate: None,
            node_kept: None,
            user: None,
            reconnects: None,
            error: None,
            failed_step: None,
            logins: Vec::new(),
            steps: Vec::new(),
            duration: 0.0,
        }
    }

    /// What `run_steps` did on a host (`None`: cancelled or not started).
    pub fn of_run(host: &str, outcome: &RunOutcome, elapsed: Duration) -> Self {
        let mut report = NodeReport {
            host: Some(host.to_string()),
            duration: elapsed.as_secs_f64(),
            ..NodeReport::empty()
        };
        match outcome {
            None => report.error = Some("cancelled".into()),
            Some(Ok(run)) => {
                report.ok = true;
                report.user = Some(run.user.clone());
                report.reconnects = Some(run.reconnects);
                report.steps = StepReport::all(&run.steps);
            }
            Some(Err(failure)) => {
                report.error = Some(error_chain(&failure.cause));
                report.failed_step = FailedStep::new(failure.step, &failure.cause);
                report.logins = failure.attempts.clone();
                report.steps = StepReport::all(&failure.completed);
            }
        }
        report
    }
}

/// A fleet (`deploy` of several nodes, `run` on hosts), as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// Whether every member succeeded.
    pub ok: bool,
    /// How many members.
    pub total: usize,
    /// How many succeeded.
    pub succeeded: usize,
    /// How many failed.
    pub failed: usize,
    /// How many were cancelled or not started.
    pub not_run: usize,
    /// Each member, in order.
    pub nodes: Vec<NodeReport>,
}

impl FleetReport {
    /// The report of these members.
    pub fn new(nodes: Vec<NodeReport>) -> Self {
        let succeeded = nodes.iter().filter(|n| n.ok).count();
        let not_run = nodes
            .iter()
            .filter(|n| !n.ok && n.error.as_deref() == Some("cancelled"))
            .count();
        FleetReport {
            ok: succeeded == nodes.len(),
            total: nodes.len(),
            succeeded,
            failed: nodes.len() - succeeded - not_run,
            not_run,
            nodes,
        }
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    // Serializing plain data cannot fail.
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    out(format_args!("{text}\n"));
}

/// Set once standard output is a closed pipe (`nodeup journal | head -1`): nothing more is
/// written to it, and the command ends as it would have.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The first failure to write standard output other than a closed pipe (a full disk): reported
/// when the command ends ([`stdout_failure`]).
static STDOUT_FAILED: std::sync::OnceLock<std::io::Error> = std::sync::OnceLock::new();

/// Writes to standard output what the command prints (its results, JSON). A closed pipe ends the
/// output quietly; another failure is kept for [`stdout_failure`], never a panic.
pub fn out(args: std::fmt::Arguments<'_>) {
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) || STDOUT_FAILED.get().is_some() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed)
        }
        Err(e) => {
            let _ = STDOUT_FAILED.set(e);
        }
    }
}

/// Writing standard output failed (other than a closed pipe): why.
pub fn stdout_failure() -> Option<&'static std::io::Error> {
    STDOUT_FAILED.get()
}

/// `println!` to standard output through [`out`]: never a panic.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_printed() {
        let mut node = Node {
            id: "1".into(),
            name: "n".into(),
            state: nodeup::model::NodeState::Running,
            public_ips: vec![],
            private_ips: vec![],
            image: None,
            size: None,
            provider: "dummy".into(),
            extra: Default::default(),
        };
        node.set_password("hunter2");
        let text = serde_json::to_string(&shown(&node)).unwrap();
        assert!(!text.contains("hunter2") && text.contains("***"), "{text}");
        assert_eq!(node.password(), Some("hunter2"), "the library keeps it");
    }
}
