//! nodeup: create a node through a provider's API, wait until it runs and has an address, log in
//! over SSH, and run deployment steps on it.
//!
//! Crate map:
//! - [`model`]: nodes, node states, sizes, images, locations and the credentials `create_node` takes.
//! - [`driver`]: the `NodeDriver` trait, its `Features`, the error drivers share, the registry type.
//! - [`baremetal`]: reinstalling a dedicated server with your own image, as a capability
//!   (`BareMetal`) a provider implements; the engine drives it.
//! - [`providers`]: one module per provider (`local`: sandboxed sshd nodes on this machine;
//!   `ovh`: OVHcloud; `dummy`: in memory, for tests), and the registry of them by name.
//! - [`ssh`]: sessions to nodes on russh: host keys, auth, exec, sftp; errors with a retry class.
//! - [`deploy`]: deployment steps (ssh-key, file, script, several in order).
//! - [`engine`]: `deploy_node`, `wait_until_running`, `run_steps`: retries, resumption,
//!   cancellation.

pub mod baremetal;
pub mod deploy;
pub mod driver;
pub mod engine;
pub mod fleet;
pub mod http;
pub mod journal;
pub mod life;
pub mod model;
pub mod procfs;
pub mod providers;
pub mod ssh;

/// An error and its causes on one line, `: `-separated; a cause whose text the line holds already
/// (a wrapper that repeats its source) is not said twice.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// nodeup's own state directory: `$NODEUP_STATE_DIR`, else `$XDG_STATE_HOME/nodeup`, else
/// `~/.local/state/nodeup` (local nodes under `local/`, nodeup's known_hosts, reinstall keys).
pub fn state_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    match (
        std::env::var_os("NODEUP_STATE_DIR"),
        std::env::var_os("XDG_STATE_HOME"),
        std::env::var_os("HOME"),
    ) {
        (Some(dir), _, _) => PathBuf::from(dir),
        (None, Some(xdg), _) => PathBuf::from(xdg).join("nodeup"),
        (None, None, Some(home)) => PathBuf::from(home).join(".local/state/nodeup"),
        (None, None, None) => PathBuf::from("/var/lib/nodeup"),
    }
}

/// The README's Rust examples, compiled by `cargo test` so that the manual stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
