//! What the commands print: progress on stderr as it happens, script output line by line (prefixed
//! by the host when several run), and results as JSON on stdout.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use nodeup::deploy::StepResult;
use nodeup::engine::{error_chain, Event, Progress};
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

/// Prints progress lines on stderr, prefixed by `[host]` when several hosts run.
pub fn progress(prefix: Option<String>, started: Instant) -> Progress {
    let tag = prefix.map(|p| format!("[{p}] ")).unwrap_or_default();
    Arc::new(move |event: &Event| {
        let line = match event {
            Event::Creating(name) => format!("creating node {name}"),
            Event::Created(node) => format!("created node {} ({})", node.name, node.id),
            Event::Waiting => "waiting for the node to run".to_string(),
            Event::Running(node, addr) => {
                format!("node {} is running at {addr}; logging in", node.name)
            }
            Event::LoggedIn(user) => format!("logged in as {user}"),
            Event::Reconnecting(step) => {
                format!("connection lost during step {step}; logging in again to resume")
            }
            Event::Retrying(run) => {
                format!("a step failed; running the deployment again (run {run})")
            }
            Event::StepStarted { index, total, kind } => format!("step {index}/{total}: {kind}"),
            Event::StepFinished {
                index,
                total,
                kind,
                elapsed,
            } => format!(
                "step {index}/{total}: {kind} done in {:.1}s",
                elapsed.as_secs_f64()
            ),
        };
        eprintln!("{tag}{line} ({:.1}s)", started.elapsed().as_secs_f64());
    })
}

/// Streams script output to stderr line by line, each line prefixed (`[host] ` or `  | `).
pub fn script_output(prefix: Option<String>) -> OutputSink {
    let tag = prefix
        .map(|p| format!("[{p}] "))
        .unwrap_or_else(|| "  | ".to_string());
    let pending: Mutex<(Vec<u8>, Vec<u8>)> = Mutex::new((Vec::new(), Vec::new()));
    Arc::new(move |stream, data: &[u8]| {
        let mut buffers = pending.lock().unwrap_or_else(|e| e.into_inner());
        let buffer = match stream {
            Stream::Stdout => &mut buffers.0,
            Stream::Stderr => &mut buffers.1,
        };
        buffer.extend_from_slice(data);
        let mut err = std::io::stderr().lock();
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let _ = err.write_all(tag.as_bytes());
            let _ = err.write_all(&line);
        }
        // A long line without a newline yet is shown in pieces rather than held.
        if buffer.len() > 8192 {
            let _ = err.write_all(tag.as_bytes());
            let _ = err.write_all(buffer);
            let _ = err.write_all(b"\n");
            buffer.clear();
        }
    })
}

/// One step's result as JSON.
pub fn step_json(index: usize, step: &StepResult) -> Value {
    let (exit_status, signal) = match &step.status {
        Some(ExitStatus::Code(c)) => (json!(c), Value::Null),
        Some(ExitStatus::Signal { name, .. }) => (Value::Null, json!(name)),
        None => (Value::Null, Value::Null),
    };
    json!({
        "index": index,
        "kind": step.kind,
        "exit_status": exit_status,
        "signal": signal,
        "duration": step.duration.as_secs_f64(),
        "stdout": step.stdout.text(),
        "stderr": step.stderr.text(),
        "output_bytes_dropped": step.stdout.dropped() + step.stderr.dropped(),
        "note": step.note,
    })
}

/// The steps that ran, as JSON.
pub fn steps_json(steps: &[StepResult]) -> Vec<Value> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| step_json(i + 1, s))
        .collect()
}

/// The failing step of a deployment, as JSON: its number, kind, status and output.
pub fn failed_step_json(
    step: Option<(usize, &'static str)>,
    cause: &nodeup::engine::Cause,
) -> Value {
    let Some((index, kind)) = step else {
        return Value::Null;
    };
    let mut value = json!({ "index": index, "kind": kind, "error": error_chain(cause) });
    if let nodeup::engine::Cause::Step(e) = cause {
        if let Some((status, stdout, stderr)) = e.output() {
            value["exit_status"] = json!(status.and_then(|s| s.code()));
            value["stdout"] = json!(stdout.text());
            value["stderr"] = json!(stderr.text());
        }
    }
    value
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    // Serializing plain data cannot fail.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
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
