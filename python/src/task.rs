//! A deployment (or run, or provider call) under way on nodeup's runtime, as Python sees it: it can
//! be waited on with the GIL released, cancelled, and asked for its outcome; a Python callback
//! that raised is kept and cancels it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::report::Finished;

/// How many threads nodeup's runtime runs its work on: SSH sessions are I/O bound, so a few
/// threads carry thousands of them.
const RUNTIME_THREADS: usize = 2;

/// The one runtime every task of the process runs on (made on first use).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("nodeup")
            .enable_all()
            .build()
            .expect("nodeup cannot start its runtime")
    })
}

/// What a task shares with the work it runs.
pub struct Shared {
    outcome: Mutex<Option<Finished>>,
    finished: Condvar,
    on_done: Mutex<Vec<Py<PyAny>>>,
    /// Cancels the work: `Task.cancel()`, or a Python callback that raised.
    pub cancel: CancellationToken,
    callback_error: Mutex<Option<PyErr>>,
}

impl Shared {
    /// Keeps the first error a Python callback raised, and cancels the work: it cleans up as for
    /// any other failure.
    pub fn callback_failed(&self, error: PyErr) {
        let mut slot = lock(&self.callback_error);
        if slot.is_none() {
            *slot = Some(error);
        }
        drop(slot);
        self.cancel.cancel();
    }

    /// Whether a Python callback raised (then no more output is handed to Python).
    pub fn has_callback_error(&self) -> bool {
        lock(&self.callback_error).is_some()
    }

    fn finish(&self, outcome: Finished) {
        *lock(&self.outcome) = Some(outcome);
        self.finished.notify_all();
        let callbacks = std::mem::take(&mut *lock(&self.on_done));
        if callbacks.is_empty() {
            return;
        }
        Python::attach(|py| {
            for callback in callbacks {
                if let Err(e) = callback.call0(py) {
                    e.write_unraisable(py, None);
                }
            }
        });
    }

    fn is_done(&self) -> bool {
        lock(&self.outcome).is_some()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Work under way: `wait` (the GIL released), `cancel`, `done`, `result`, `add_done_callback`.
#[pyclass(module = "nodeup._nodeup", frozen)]
pub struct Task {
    shared: Arc<Shared>,
}

impl Task {
    /// A task's shared half, before its work starts (callbacks are made with it).
    pub fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            outcome: Mutex::new(None),
            finished: Condvar::new(),
            on_done: Mutex::new(Vec::new()),
            cancel: CancellationToken::new(),
            callback_error: Mutex::new(None),
        })
    }

    /// Starts `work` on the runtime.
    pub fn start(shared: Arc<Shared>, work: BoxFuture<'static, Finished>) -> Task {
        let done = shared.clone();
        runtime().spawn(async move {
            let outcome = work.await;
            done.finish(outcome);
        });
        Task { shared }
    }
}

#[pymethods]
impl Task {
    /// Waits until the work is done, at most `timeout` seconds (forever when `None`), with the
    /// GIL released; answers whether it is done.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let limit = timeout
            .map(Duration::try_from_secs_f64)
            .transpose()
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("timeout: {e}")))?;
        let shared = self.shared.clone();
        Ok(py.detach(move || {
            let guard = lock(&shared.outcome);
            match limit {
                None => shared
                    .finished
                    .wait_while(guard, |o| o.is_none())
                    .map(|g| g.is_some())
                    .unwrap_or(true),
                Some(limit) => shared
                    .finished
                    .wait_timeout_while(guard, limit, |o| o.is_none())
                    .map(|(g, _)| g.is_some())
                    .unwrap_or(true),
            }
        }))
    }

    /// Cancels the work: a deployment stops its step and cleans up (the at-exit function).
    fn cancel(&self) {
        self.shared.cancel.cancel();
    }

    /// Whether the work is done.
    fn done(&self) -> bool {
        self.shared.is_done()
    }

    /// Calls `callback()` (no arguments) once the work is done, from nodeup's thread; at once
    /// when it is done already.
    fn add_done_callback(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<()> {
        let mut waiting = lock(&self.shared.on_done);
        if !self.shared.is_done() {
            waiting.push(callback);
            return Ok(());
        }
        drop(waiting);
        callback.call0(py).map(drop)
    }

    /// The outcome: `(value, error, callback_error)`: what the work gave, or the error report, and
    /// the exception a Python callback raised, if one did.
    ///
    /// # Errors
    /// `RuntimeError` while the work is not done.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let outcome = lock(&self.shared.outcome);
        let Some(outcome) = outcome.as_ref() else {
            return Err(PyRuntimeError::new_err("the task is not done"));
        };
        let (value, error) = outcome.to_python(py)?;
        let raised = lock(&self.shared.callback_error)
            .as_ref()
            .map(|e| e.clone_ref(py).into_value(py).into_any());
        (value, error, raised)
            .into_pyobject(py)
            .map(Bound::into_any)
    }
}
