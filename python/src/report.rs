//! What a task hands back to Python: typed reports (serialized into Python dicts with
//! `pythonize`), which the package's Python side turns into `Node`, results and exceptions.

use pyo3::prelude::*;
use serde::Serialize;

use nodeup::deploy::{self, StepResult};
use nodeup::driver::ProviderError;
use nodeup::engine::fleet::{Fate, FleetMember, MemberResult, RunOutcome};
use nodeup::engine::{Cause, Deployment, DeploymentError, Run, RunFailure};
use nodeup::error_chain;
use nodeup::model::Node;
use nodeup::ssh::ExitStatus;

/// How a task ended.
pub enum Finished {
    /// A deployment that finished: its node and steps.
    Deployed(Box<Deployed>),
    /// Steps run on machines that exist: one report per host, in the order given.
    Ran(Vec<HostReport>),
    /// A provider call's answer.
    Answer(Box<dyn erased::Value>),
    /// The work failed.
    Failed(Box<ErrorReport>),
}

impl Finished {
    /// `(value, error)` as Python objects, one of them `None`.
    pub fn to_python<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let none = py.None().into_bound(py);
        let to = |value: &dyn erased::Value| value.to_python(py);
        Ok(match self {
            Finished::Deployed(done) => (to(done.as_ref())?, none),
            Finished::Ran(hosts) => (to(hosts)?, none),
            Finished::Answer(answer) => (answer.to_python(py)?, none),
            Finished::Failed(error) => (none, to(error.as_ref())?),
        })
    }
}

/// Serializing the reports without naming each type.
pub mod erased {
    use pyo3::prelude::*;

    /// A report or answer that becomes a Python object.
    pub trait Value: Send {
        /// The Python object.
        fn to_python<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>>;
    }

    impl<T: serde::Serialize + Send> Value for T {
        fn to_python<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            pythonize::pythonize(py, self).map_err(PyErr::from)
        }
    }
}

/// A finished deployment.
#[derive(Serialize)]
pub struct Deployed {
    /// The node, as last listed.
    pub node: Node,
    /// The user nodeup logged in as.
    pub user: String,
    /// Each step's result, in order (flattened).
    pub steps: Vec<StepResult>,
    /// How many times the connection was lost and resumed.
    pub reconnects: u32,
}

impl Deployed {
    fn of(done: Deployment) -> Deployed {
        Deployed {
            node: done.node,
            user: done.user,
            steps: done.steps,
            reconnects: done.reconnects,
        }
    }
}

/// What went wrong, with everything the Python exception carries.
#[derive(Serialize, Default)]
pub struct ErrorReport {
    /// Which exception: `invalid`, `invalid_credentials`, `provider`, `not_found`, `wait`,
    /// `login`, `step`, `cancelled`, `journal`.
    pub kind: &'static str,
    /// The whole message, causes included.
    pub message: String,
    /// The node, when one was created.
    pub node: Option<Node>,
    /// What became of it: `destroyed`, `kept`, `left` (`not-created` without one).
    pub fate: Option<String>,
    /// The failing step: 1-based index in flattened order.
    pub step: Option<usize>,
    /// The failing step's kind.
    pub step_kind: Option<&'static str>,
    /// The failing script's exit status, when it ended with one.
    pub exit_status: Option<u32>,
    /// How the failing command ended (a signal included).
    pub status: Option<ExitStatus>,
    /// The failing step's standard output (the kept tail).
    pub stdout: Option<String>,
    /// Its standard error.
    pub stderr: Option<String>,
    /// The steps that finished before the failure.
    pub completed: Vec<StepResult>,
}

impl ErrorReport {
    /// An error about the input, found before anything was created.
    pub fn invalid(message: impl Into<String>) -> ErrorReport {
        ErrorReport {
            kind: "invalid",
            message: message.into(),
            fate: Some(Fate::NotCreated.to_string()),
            ..Default::default()
        }
    }

    /// A provider's failure.
    pub fn provider(error: &ProviderError) -> ErrorReport {
        ErrorReport {
            kind: provider_kind(error),
            message: error_chain(error),
            ..Default::default()
        }
    }

    /// A cancelled task that never reached a node.
    pub fn cancelled() -> ErrorReport {
        ErrorReport {
            kind: "cancelled",
            message: "cancelled".into(),
            fate: Some(Fate::NotCreated.to_string()),
            ..Default::default()
        }
    }

    fn of_cause(
        cause: &Cause,
        step: Option<(usize, &'static str)>,
        completed: Vec<StepResult>,
    ) -> ErrorReport {
        let mut report = ErrorReport {
            kind: cause_kind(cause),
            step: step.map(|(index, _)| index),
            step_kind: step.map(|(_, kind)| kind),
            completed,
            ..Default::default()
        };
        if let Cause::Step(failed) = cause {
            report.output(failed);
        }
        report
    }

    fn output(&mut self, failed: &deploy::Error) {
        if let Some((status, stdout, stderr)) = failed.output() {
            self.status = status.cloned();
            self.exit_status = match status {
                Some(ExitStatus::Code(code)) => Some(*code),
                _ => None,
            };
            self.stdout = Some(stdout.text().into_owned());
            self.stderr = Some(stderr.text().into_owned());
        }
    }

    /// A failed deployment, with what became of its node.
    fn of_deployment(error: DeploymentError, fate: &Fate) -> ErrorReport {
        let mut report = ErrorReport::of_cause(&error.cause, error.step, error.completed.clone());
        report.message = match fate {
            Fate::Left(why) => format!(
                "{}; the node is left: {}",
                error_chain(&error),
                error_chain(why.as_ref())
            ),
            _ => error_chain(&error),
        };
        report.node = error.node;
        report.fate = Some(fate.to_string());
        report
    }

    /// A failed run of steps on a machine that exists.
    fn of_run(failure: RunFailure) -> ErrorReport {
        let mut report = ErrorReport::of_cause(&failure.cause, failure.step, failure.completed);
        report.message = match failure.step {
            Some((index, kind)) => format!(
                "step {index} ({kind}) failed: {}",
                error_chain(&failure.cause)
            ),
            None => error_chain(&failure.cause),
        };
        report
    }
}

/// The exception a provider's error becomes.
fn provider_kind(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::InvalidCredentials { .. } => "invalid_credentials",
        ProviderError::NotFound { .. } => "not_found",
        _ => "provider",
    }
}

fn cause_kind(cause: &Cause) -> &'static str {
    match cause {
        Cause::Invalid(_) | Cause::Credentials(_) => "invalid",
        Cause::Provider(e) => provider_kind(e),
        Cause::Wait(_) => "wait",
        Cause::Login(_) => "login",
        Cause::Step(_) => "step",
        Cause::Cancelled => "cancelled",
        Cause::Journal(_) => "journal",
    }
}

/// The one member of a single deployment.
pub fn of_member(member: Option<FleetMember>) -> Finished {
    let Some(member) = member else {
        return Finished::Failed(Box::new(ErrorReport::cancelled()));
    };
    match member.result {
        MemberResult::Deployed(done) => Finished::Deployed(Box::new(Deployed::of(done))),
        MemberResult::Failed(error) => {
            Finished::Failed(Box::new(ErrorReport::of_deployment(error, &member.fate)))
        }
        MemberResult::NotStarted => Finished::Failed(Box::new(ErrorReport::cancelled())),
    }
}

/// One host of a run.
#[derive(Serialize)]
pub struct HostReport {
    /// The host as given.
    pub host: String,
    /// Whether every step succeeded.
    pub ok: bool,
    /// The user nodeup logged in as (empty when no login worked).
    pub user: String,
    /// Each finished step's result, in order.
    pub steps: Vec<StepResult>,
    /// Why it failed.
    pub error: Option<ErrorReport>,
}

impl HostReport {
    /// The report of one host's outcome.
    pub fn of(host: String, outcome: RunOutcome) -> HostReport {
        match outcome {
            Some(Ok(run)) => HostReport::ran(host, run),
            Some(Err(failure)) => HostReport {
                host,
                ok: false,
                user: String::new(),
                steps: failure.completed.clone(),
                error: Some(ErrorReport::of_run(failure)),
            },
            None => HostReport {
                host,
                ok: false,
                user: String::new(),
                steps: Vec::new(),
                error: Some(ErrorReport::cancelled()),
            },
        }
    }

    fn ran(host: String, run: Run) -> HostReport {
        HostReport {
            host,
            ok: true,
            user: run.user,
            steps: run.steps,
            error: None,
        }
    }
}
