//! Where and how steps run on a node that exists: its address, users, host keys, and its own SSH
//! settings over the deployment's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::driver::NodeDriver;
use crate::journal::NodeEntry;
use crate::model::Node;
use crate::ssh::{HostKeyPolicy, Jump};

/// Where and how to run steps on a node that exists.
#[derive(Clone)]
pub struct Target {
    /// Its SSH address.
    pub addr: SocketAddr,
    /// The usernames to try, in order.
    pub users: Vec<String>,
    /// Host keys the provider reported for it.
    pub pinned_host_keys: Vec<String>,
    /// The node, when it is one a provider reported (custom steps see it).
    pub node: Option<Node>,
    /// Where its login user and step results are recorded.
    pub journal: Option<NodeEntry>,
    /// Whether this deployment created the node: a host key recorded for its address before
    /// nodeup first logged in to it belongs to an older machine and is replaced
    /// ([`HostKeyCheck::new_node`]). `false` for machines that were there before (`run`).
    pub created: bool,
    /// The node's provider, when steps may ask it to act on the node (a reboot step reboots
    /// through it; without it, with the node's own `reboot`).
    pub driver: Option<Arc<dyn NodeDriver>>,
    /// This machine's own SSH settings (from ssh_config), over the deployment's.
    pub ssh: TargetSsh,
}

/// SSH settings of one machine that replace the deployment's ([`DeployOptions`]) where given:
/// what `~/.ssh/config` says of it, where the command line and step file said nothing.
#[derive(Debug, Clone, Default)]
pub struct TargetSsh {
    /// Jump hosts to reach it through ([`DeployOptions::jump`]).
    pub jump: Option<Jump>,
    /// Its known_hosts file ([`DeployOptions::known_hosts`]).
    pub known_hosts: Option<PathBuf>,
    /// What to do with a host key not recorded yet ([`DeployOptions::host_key_policy`]).
    pub host_key_policy: Option<HostKeyPolicy>,
    /// The deadline of each connection attempt ([`DeployOptions::ssh_timeout`]).
    pub connect_timeout: Option<Duration>,
    /// How often an idle connection is kept alive (ssh_config's `ServerAliveInterval`).
    pub keepalive: Option<Duration>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("users", &self.users)
            .field("node", &self.node.as_ref().map(|n| &n.name))
            .field("created", &self.created)
            .field("driver", &self.driver.as_ref().map(|d| d.name()))
            .field("ssh", &self.ssh)
            .finish()
    }
}
