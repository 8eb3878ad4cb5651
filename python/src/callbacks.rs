//! Python callables the engine calls: script output, line by line (`on_output(node, stream,
//! line)`), and the at-exit function of a cancelled deployment. A callable that raises cancels
//! the task, which cleans up as for any other failure; the exception is raised to the caller.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use nodeup::driver::{NodeDriver, ProviderError};
use nodeup::engine::{destroy_at_exit, AtExit};
use nodeup::model::{Node, NodeState};
use nodeup::ssh::{OutputSink, Stream};

use crate::task::Shared;

/// A Python callable shared between threads (cloning a `Py` needs the GIL; an `Arc` does not).
pub type Callable = Arc<Py<PyAny>>;

/// One node's output, split into lines for `on_output(node, stream, line)`; a line is handed on
/// once its newline arrives, and what is left without one when the work ends by [`Lines::flush`].
pub struct Lines {
    callback: Callable,
    node: String,
    task: Arc<Shared>,
    /// What arrived after the last newline, per stream (stdout, stderr).
    partial: Mutex<[Vec<u8>; 2]>,
}

impl Lines {
    /// Lines of `node`'s output for `callback`.
    pub fn new(callback: Callable, node: String, task: Arc<Shared>) -> Arc<Lines> {
        Arc::new(Lines {
            callback,
            node,
            task,
            partial: Mutex::new([Vec::new(), Vec::new()]),
        })
    }

    /// The sink the engine writes the node's output to.
    pub fn sink(self: &Arc<Self>) -> OutputSink {
        let lines = self.clone();
        Arc::new(move |stream, bytes| lines.take(stream, bytes))
    }

    fn take(&self, stream: Stream, bytes: &[u8]) {
        let slot = index(stream);
        let mut whole = Vec::new();
        {
            let mut partial = self.partial.lock().unwrap_or_else(|p| p.into_inner());
            let buffer = &mut partial[slot];
            buffer.extend_from_slice(bytes);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                whole.push(line[..end].to_vec());
            }
        }
        self.emit(stream, whole);
    }

    /// Hands on what is left of each stream without a newline.
    pub fn flush(&self) {
        let rest = {
            let mut partial = self.partial.lock().unwrap_or_else(|p| p.into_inner());
            partial.each_mut().map(std::mem::take)
        };
        for (stream, line) in [Stream::Stdout, Stream::Stderr].into_iter().zip(rest) {
            if !line.is_empty() {
                self.emit(stream, vec![line]);
            }
        }
    }

    fn emit(&self, stream: Stream, lines: Vec<Vec<u8>>) {
        if lines.is_empty() || self.task.has_callback_error() {
            return;
        }
        let name = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        Python::attach(|py| {
            for line in lines {
                let text = String::from_utf8_lossy(&line);
                if let Err(e) = self.callback.call1(py, (&self.node, name, text.as_ref())) {
                    self.task.callback_failed(e);
                    return;
                }
            }
        });
    }
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// The at-exit hook of a cancelled deployment: the Python function when one is given (called
/// with the node as a dict; the node counts as gone when its provider no longer has it), else
/// nodeup's own, which destroys the node. A function that raises is reported, and nodeup's own
/// runs after it.
pub fn at_exit(callback: Option<Callable>, task: Arc<Shared>) -> AtExit {
    let Some(callback) = callback else {
        return destroy_at_exit();
    };
    let fallback = destroy_at_exit();
    Arc::new(move |driver: Arc<dyn NodeDriver>, node: Node| {
        let (callback, task, fallback) = (callback.clone(), task.clone(), fallback.clone());
        Box::pin(async move {
            let given = node.clone();
            let called = tokio::task::spawn_blocking(move || {
                Python::attach(|py| {
                    let node = pythonize::pythonize(py, &given)?;
                    callback.call1(py, (node,)).map(drop)
                })
            })
            .await;
            match called {
                Ok(Ok(())) => gone(driver.as_ref(), &node).await,
                Ok(Err(e)) => {
                    task.callback_failed(e);
                    fallback(driver, node).await
                }
                Err(_) => fallback(driver, node).await,
            }
        })
    })
}

/// Whether the node's provider no longer has it.
async fn gone(driver: &dyn NodeDriver, node: &Node) -> bool {
    match driver.get_node(&node.id).await {
        Err(ProviderError::NotFound { .. }) => true,
        Ok(found) => found.state == NodeState::Terminated,
        Err(_) => false,
    }
}
