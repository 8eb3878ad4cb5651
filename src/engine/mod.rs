//! The deployment engine: `deploy_node` (create → wait until running → log in → run the steps),
//! with retries by error class, resumption after a lost connection, cancellation and cleanup;
//! `wait_until_running` for several nodes; `run_steps` on nodes that already exist; `cleanup` of
//! the orphans the journal knows.

pub mod cleanup;
mod connect;
mod deploy;
mod errors;
pub mod fleet;
pub mod machines;
mod options;
mod recorder;
pub mod reinstall;
mod runner;
pub mod settings;
mod target;
mod wait;

pub use connect::{error_chain, login, LoggedIn, LoginAttempt, LoginOptions};
pub use deploy::{deploy_node, destroy_at_exit, destroy_node, Deployment};
pub use errors::{Cause, DeploymentError, RunFailure};
pub use options::{default_known_hosts, AtExit, DeployOptions, Event, Progress};
pub use runner::{run_steps, Run};
pub use target::{Target, TargetSsh};
pub use wait::{preferred, wait_until_running, Interface, Ready, WaitError, WaitOptions};
