//! nodeup: create a node through a provider's API, wait until it runs and has an address, log in
//! over SSH, and run deployment steps on it.
//!
//! Crate map:
//! - [`model`]: nodes, node states, sizes, images, locations and the credentials `create_node` takes.
//! - [`driver`]: the `NodeDriver` trait, its `Features`, the error drivers share, the registry.
//! - [`providers`]: one module per provider (`local`: sandboxed sshd nodes on this machine).

pub mod driver;
pub mod model;
pub mod providers;
pub mod ssh;

/// The README's Rust examples, compiled by `cargo test` so that the manual stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
