//! How a deployment fails: the [`Cause`], and the errors that carry what was done
//! ([`DeploymentError`] with the node, [`RunFailure`] without).

use super::connect::{error_chain, LoginAttempt};
use super::wait::WaitError;
use crate::deploy::{self, StepResult};
use crate::driver::ProviderError;
use crate::journal::{JournalError, NodeEntry};
use crate::model::Node;
use crate::ssh;

/// Why a deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// Bad input or configuration (a step, the ssh_config, no way to log in); it says what to
    /// fix, and keeps the error underneath as its own.
    #[error(transparent)]
    Invalid(Box<dyn std::error::Error + Send + Sync>),
    /// A key file or passphrase cannot be used; nothing was created.
    #[error(transparent)]
    Credentials(ssh::Error),
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The node did not come up.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// No login worked. The message carries the whole cause (connection refused ...).
    #[error("could not log in: {}", error_chain(.0))]
    Login(ssh::Error),
    /// A step failed.
    #[error(transparent)]
    Step(deploy::Error),
    /// The deployment was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The journal cannot record the node, or another run holds its name; nothing was created.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A failed deployment: the node (so that the caller can destroy or keep it), the failing step,
/// what each username got, and the steps that finished.
#[derive(Debug)]
pub struct DeploymentError {
    /// The node, when it was created.
    pub node: Option<Node>,
    /// The failing step: 1-based index and kind.
    pub step: Option<(usize, &'static str)>,
    /// Why.
    pub cause: Cause,
    /// What each username got.
    pub attempts: Vec<LoginAttempt>,
    /// The steps that finished before the failure.
    pub completed: Vec<StepResult>,
    /// The node's record in the journal, in state `failed` (or `cancelled`/`destroyed` after a
    /// cancellation): record what becomes of the node with [`NodeEntry::finish`] (`Destroyed` or
    /// `Kept`); a node left `failed` is an orphan once this process ends, and `nodeup cleanup`
    /// destroys it.
    pub journal: Option<NodeEntry>,
}

impl std::fmt::Display for DeploymentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.node, self.step) {
            (Some(node), Some((index, kind))) => write!(
                f,
                "deployment of node {} ({}) failed at step {index} ({kind})",
                node.name, node.id
            ),
            (Some(node), None) => {
                write!(f, "deployment of node {} ({}) failed", node.name, node.id)
            }
            (None, _) => f.write_str("deployment failed before any node was created"),
        }?;
        if matches!(self.cause, Cause::Login(_)) && !self.attempts.is_empty() {
            let tried: Vec<String> = self
                .attempts
                .iter()
                .map(|a| format!("{} ({} tries): {}", a.user, a.tries, a.last_error))
                .collect();
            write!(f, "; logins tried: {}", tried.join("; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for DeploymentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

impl DeploymentError {
    pub(super) fn before_create(cause: Cause) -> Self {
        DeploymentError {
            node: None,
            step: None,
            cause,
            attempts: Vec::new(),
            completed: Vec::new(),
            journal: None,
        }
    }

    /// Whether nothing was created (bad input or configuration).
    pub fn is_before_create(&self) -> bool {
        self.node.is_none()
    }
}

/// A failure of [`run_steps`]: everything of a [`DeploymentError`] but the node.
#[derive(Debug)]
pub struct RunFailure {
    /// The failing step: 1-based index and kind.
    pub step: Option<(usize, &'static str)>,
    /// Why.
    pub cause: Cause,
    /// What each username got.
    pub attempts: Vec<LoginAttempt>,
    /// The steps that finished.
    pub completed: Vec<StepResult>,
}
