//! A local node's own network: a network namespace whose one link (a veth pair) goes to this
//! machine, or to another local node only (a private node behind a bastion).
//!
//! Each such node gets a /30 of its own in 100.64.0.0/10 (the shared address space of RFC 6598),
//! numbered after its loopback claim: the node has `.2`, the far end of its link `.1`. This
//! machine holds an `unreachable` route for the /30 for the node's whole life (below the link's
//! own route when the link is to this machine), so that nothing meant for a node ever leaves the
//! machine, not even while the node reboots; for a node behind another that route is the only
//! one, and a direct connection fails at once.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Where `ip` (iproute2) is looked for.
pub const IP: &str = "/usr/sbin/ip";

/// Where `nsenter` (util-linux) is looked for.
pub const NSENTER: &str = "/usr/bin/nsenter";

/// The first address of the range the nodes' links are numbered in.
const LINK_RANGE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);

/// The metric of the `unreachable` route this machine holds for each node's /30: above the link's
/// own route (metric 0), which wins while the link is up.
const FALLBACK_METRIC: &str = "4000";

/// How long a fresh boot may take to have its namespace (its PID 1 started).
const NAMESPACE_WAIT: Duration = Duration::from_secs(10);

/// How often the boot is looked at meanwhile.
const NAMESPACE_POLL: Duration = Duration::from_millis(10);

/// Where a local node can be reached from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// This machine's own network, at a loopback address of the node's own (127.100.0.0/16).
    #[default]
    Loopback,
    /// A network of its own, linked to this machine: reachable from here, at 100.64.x.y.
    Linked,
    /// A network of its own whose one link goes to the local node with this id, which must have
    /// a network of its own: only that node reaches it (a private node behind a bastion).
    Behind(String),
}

/// A node's link, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The node whose namespace the far end is in; this machine when `None`.
    pub peer: Option<String>,
    /// The first address of the node's /30.
    pub subnet: Ipv4Addr,
}

impl Link {
    /// The link of the node whose loopback claim is `claim` (127.100.0.0/16), to `peer`.
    pub fn numbered(claim: Ipv4Addr, peer: Option<String>) -> Self {
        let n = u32::from(claim) - u32::from(Ipv4Addr::new(127, 100, 0, 0));
        Link {
            peer,
            subnet: Ipv4Addr::from(u32::from(LINK_RANGE) + n * 4),
        }
    }

    /// The node's own address on the link.
    pub fn address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 2)
    }

    /// The far end's address.
    fn far(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    fn prefix(&self) -> String {
        format!("{}/30", self.subnet)
    }

    /// Adds this machine's `unreachable` route for the node's /30 (one left by a crash is kept).
    pub fn hold_route(&self) -> io::Result<()> {
        let prefix = self.prefix();
        let args = [
            "route",
            "add",
            "unreachable",
            &prefix,
            "metric",
            FALLBACK_METRIC,
        ];
        match ip(None, &args) {
            Err(e) if e.to_string().contains("File exists") => Ok(()),
            other => other,
        }
    }

    /// Removes what the node holds on this machine once it is halted: the far end of a link to
    /// this machine (the kernel would remove it with the node's namespace, but later), and the
    /// route.
    pub fn release(&self, link_name: &str) {
        if self.peer.is_none() {
            // Gone already when the kernel was quicker.
            let _ = ip(None, &["link", "del", link_name]);
        }
        let prefix = self.prefix();
        let args = [
            "route",
            "del",
            "unreachable",
            &prefix,
            "metric",
            FALLBACK_METRIC,
        ];
        if let Err(e) = ip(None, &args) {
            tracing::warn!("removing the route for {prefix}: {e}");
        }
    }

    /// Connects a fresh boot of the node (its PID 1: `node_pid`) to the far end (`peer_pid`, this
    /// machine when `None`): the veth pair `link_name` there and `eth0` in the node, numbered and
    /// up (the node's own boot script brings its loopback up).
    pub fn connect(&self, link_name: &str, node_pid: i32, peer_pid: Option<i32>) -> io::Result<()> {
        let node = node_pid.to_string();
        // The far end of a node behind a rebooted one: its old half may not be gone yet.
        let _ = ip(Some(node_pid), &["link", "del", "eth0"]);
        // The node's own half from its previous boot, on the far side: the kernel removes it with
        // the old namespace, but not at once (a reboot under load met "File exists").
        let _ = ip(peer_pid, &["link", "del", link_name]);
        ip(
            peer_pid,
            &[
                "link", "add", link_name, "type", "veth", "peer", "name", "eth0", "netns", &node,
            ],
        )?;
        let far = format!("{}/30", self.far());
        ip(peer_pid, &["addr", "add", &far, "dev", link_name])?;
        ip(peer_pid, &["link", "set", link_name, "up"])?;
        let own = format!("{}/30", self.address());
        ip(Some(node_pid), &["addr", "add", &own, "dev", "eth0"])?;
        ip(Some(node_pid), &["link", "set", "eth0", "up"])
    }
}

/// Whether the tools a network of its own needs are here.
///
/// # Errors
/// Which is missing, and the package to install.
pub fn check_requirements() -> crate::driver::Result<()> {
    for (path, package) in [(IP, "iproute2"), (NSENTER, "util-linux")] {
        if !Path::new(path).exists() {
            return Err(crate::driver::ProviderError::Requirement {
                provider: super::PROVIDER.into(),
                message: format!(
                    "{path} is missing: a node with a network of its own needs it (apt-get \
                     install {package})"
                ),
            });
        }
    }
    Ok(())
}

/// The name of a node's link on the far end: `nu` and the 8 hex digits of its id (interface names
/// are at most 15 bytes).
pub fn link_name(id: &str) -> String {
    format!("nu{}", id.trim_start_matches("loc-"))
}

/// Runs `ip ARGS` in the network namespace of `pid` (this machine's when `None`).
fn ip(pid: Option<i32>, args: &[&str]) -> io::Result<()> {
    let mut command = match pid {
        Some(pid) => {
            let mut c = Command::new(NSENTER);
            c.args(["-t", &pid.to_string(), "-n", IP]);
            c
        }
        None => Command::new(IP),
    };
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Waits until `read` finds the PID 1 of a fresh boot (its network namespace exists from then on).
pub fn wait_for_init(read: impl Fn() -> Option<i32>, dir: &Path) -> io::Result<i32> {
    let started = Instant::now();
    loop {
        if let Some(pid) = read() {
            return Ok(pid);
        }
        if started.elapsed() > NAMESPACE_WAIT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the node in {} did not start its PID 1", dir.display()),
            ));
        }
        std::thread::sleep(NAMESPACE_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_claim_has_a_slash_30_of_its_own() {
        let first = Link::numbered(Ipv4Addr::new(127, 100, 0, 2), None);
        assert_eq!(first.subnet, Ipv4Addr::new(100, 64, 0, 8));
        assert_eq!(first.address(), Ipv4Addr::new(100, 64, 0, 10));
        assert_eq!(first.far(), Ipv4Addr::new(100, 64, 0, 9));
        let last = Link::numbered(Ipv4Addr::new(127, 100, 255, 254), None);
        assert_eq!(last.subnet, Ipv4Addr::new(100, 67, 255, 248));
        assert_eq!(link_name("loc-0a1b2c3d"), "nu0a1b2c3d");
    }
}
