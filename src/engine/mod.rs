//! The deployment engine: `deploy_node` (create → wait until running → log in → run the steps),
//! with retries by error class, resumption after a lost connection, cancellation and cleanup;
//! `wait_until_running` for several nodes; `run_steps` on nodes that already exist; `cleanup` of
//! the orphans the journal knows.

pub mod cleanup;
mod connect;
mod deploy;
pub mod fleet;
pub mod reinstall;
mod wait;

pub use connect::{error_chain, login, LoggedIn, LoginAttempt, LoginOptions};
pub use deploy::{
    default_known_hosts, deploy_node, destroy_at_exit, destroy_node, run_steps, AtExit, Cause,
    DeployOptions, Deployment, DeploymentError, Event, Progress, Run, RunFailure, Target,
    TargetSsh,
};
pub use wait::{preferred, wait_until_running, Interface, Ready, WaitError, WaitOptions};
