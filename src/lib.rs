//! nodeup: create a node through a provider's API, wait until it runs and has an address, log in
//! over SSH, and run deployment steps on it.
//!
//! Crate map (dependencies point down the list's layers: `engine` over `deploy`, `ssh`,
//! `journal` and `providers`, all of them over `driver`, `model` and `http`):
//! - [`engine`]: `deploy_node` (create → wait until running → log in → steps), `run_steps`,
//!   `wait_until_running`, fleets, reinstall-then-provision, cleanup, and [`engine::settings`]
//!   (what the command line, the step file and ssh_config said, decided once).
//! - [`deploy`]: deployment steps (ssh-key, file, script, wait-cloud-init, reboot, your own, several
//!   in order) and step files (TOML → a validated plan).
//! - [`ssh`]: sessions to nodes on russh: host keys, auth, exec, uploads, sftp, jump hosts,
//!   ssh_config; errors with a retry class.
//! - [`journal`]: the durable record of runs and the nodes they create (SQLite, PostgreSQL).
//! - [`roster`]: which machines a fleet is made of: names from a template, inventories (a plain
//!   list, Ansible INI) and `--limit`, shards.
//! - [`life`]: a node's life in one vocabulary (the stages the journal, progress and summaries
//!   share).
//! - [`providers`]: one module per provider (`local`, `ovh`, `nephoscale`, `slipstream`, `dummy`),
//!   the registry of them by name, and their shared kit.
//! - [`baremetal`]: reinstalling a dedicated server with your own image, as a capability
//!   (`BareMetal`) a provider implements; the engine drives it.
//! - [`driver`]: the `NodeDriver` trait, its `Features`, the error drivers share, the registry type.
//! - [`model`]: nodes, node states, sizes, images, locations, volumes and the credentials
//!   `create_node` takes.
//! - [`http`]: the one HTTP client providers use: timeouts, retries, the redacted debug trace.
//! - [`files`]: reading the small files a user names, regular ones only and within a bound.
//! - [`procfs`]: what `/proc` says of processes (start times, liveness), for the journal's owners
//!   and local nodes.
//! - [`error_chain`] and [`state_dir`]: an error with its causes on one line; nodeup's state
//!   directory.

pub mod baremetal;
pub mod deploy;
pub mod driver;
pub mod engine;
pub mod files;
pub mod http;
pub mod journal;
pub mod life;
pub mod model;
pub mod procfs;
pub mod providers;
pub mod roster;
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
