//! nodeup's test bed: local sandboxed nodes (real OpenSSH sshd) with knobs, access to a node's files
//! and commands from outside, a fault-injecting TCP relay, and teardown that leaves nothing behind.
//!
//! A [`TestBed`] owns a state directory under [`TESTBED_ROOT`]; dropping it (a test ends or panics)
//! destroys every node in it. A run that crashed before that is swept by the next [`TestBed::new`]:
//! each state directory records the pid and start time of the process that owns it, and one whose
//! owner is gone is destroyed node by node and deleted. Nothing is ever found by process name.

pub mod fake_ec2;
pub mod fake_nephoscale;
pub mod fake_openstack;
pub mod fake_ovh;
pub mod fake_slipstream;
pub mod moto;
pub mod postgres;
pub mod python;
pub mod relay;
pub mod relayed;
pub mod replay;
pub mod sigv2;
pub mod tls;
pub mod usage;

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nodeup::driver::NodeDriver;
use nodeup::model::{CreateNode, Node, NodeAuth};
use nodeup::providers::local::{self, LocalDriver, LocalOptions};

pub use relay::{Faults, Gauge, Relay};
pub use relayed::RelayedDriver;

/// Where every test bed keeps its state directory.
pub const TESTBED_ROOT: &str = "/tmp/nodeup-testbed";

/// A set of local nodes for one test, destroyed when dropped.
pub struct TestBed {
    dir: PathBuf,
    driver: LocalDriver,
    client_key: PathBuf,
    client_public_key: String,
}

impl TestBed {
    /// A new test bed, after sweeping what crashed runs left.
    pub fn new() -> io::Result<TestBed> {
        sweep();
        fs::create_dir_all(TESTBED_ROOT)?;
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(TESTBED_ROOT)?
            .keep();
        let me = std::process::id() as i32;
        let start = local::start_time(me).ok_or_else(|| io::Error::other("no /proc/self/stat"))?;
        fs::write(dir.join("owner"), format!("{me} {start}\n"))?;
        let driver = LocalDriver::new(&dir.join(local::PROVIDER)).map_err(io::Error::other)?;
        let client_key = dir.join("id_ed25519");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "testbed", "-f"])
            .arg(&client_key)
            .stdin(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(io::Error::other("ssh-keygen failed"));
        }
        let client_public_key = fs::read_to_string(client_key.with_extension("pub"))?
            .trim()
            .to_string();
        Ok(TestBed {
            dir,
            driver,
            client_key,
            client_public_key,
        })
    }

    /// The test bed's own directory (the local provider's state directory is `local/` inside).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The local provider's driver over this test bed's state directory.
    pub fn driver(&self) -> &LocalDriver {
        &self.driver
    }

    /// The value of `NODEUP_STATE_DIR` that makes the `nodeup` binary use this test bed's nodes.
    pub fn nodeup_state_dir(&self) -> &Path {
        &self.dir
    }

    /// The private key file every node authorizes unless told otherwise.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The public half of `client_key`, one OpenSSH line.
    pub fn client_public_key(&self) -> &str {
        &self.client_public_key
    }

    /// A test node for a node of this test bed created some other way (by `deploy_node`, say).
    pub fn adopt(&self, node: Node) -> TestNode {
        TestNode {
            known_hosts: self.dir.join(format!("known_hosts-{}", node.name)),
            node,
            driver: self.driver.clone(),
            client_key: self.client_key.clone(),
        }
    }

    /// Creates a node and, unless the spec says not to, waits until sshd listens.
    pub async fn node(&self, spec: NodeSpec) -> io::Result<TestNode> {
        let request = CreateNode {
            name: spec.name.clone(),
            image: Some(spec.image.clone()),
            size: None,
            location: None,
            auth: spec
                .authorize_client_key
                .then(|| NodeAuth::SshKey(self.client_public_key.clone())),
            extra: Default::default(),
            run: None,
        };
        let node = self
            .driver
            .create_node_with(&request, &spec.options)
            .await
            .map_err(io::Error::other)?;
        let mut node = TestNode {
            node,
            driver: self.driver.clone(),
            client_key: self.client_key.clone(),
            known_hosts: self.dir.join(format!("known_hosts-{}", spec.name)),
        };
        node.write_known_hosts()?;
        if spec.wait {
            node.wait_running(Duration::from_secs(30)).await?;
        }
        Ok(node)
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        if let Err(e) = self.driver.destroy_all_blocking() {
            eprintln!("testbed: destroying nodes of {}: {e}", self.dir.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Removes what test beds of dead processes left under [`TESTBED_ROOT`]: their nodes (processes,
/// namespaces, address claims) and their directories.
pub fn sweep() {
    let Ok(entries) = fs::read_dir(TESTBED_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if owner_alive(&dir) {
            continue;
        }
        let state = dir.join(local::PROVIDER);
        if state.exists() {
            match LocalDriver::new(&state) {
                Ok(driver) => {
                    if let Err(e) = driver.destroy_all_blocking() {
                        eprintln!("testbed: sweeping {}: {e}", dir.display());
                        continue;
                    }
                }
                Err(e) => {
                    eprintln!("testbed: sweeping {}: {e}", dir.display());
                    continue;
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

fn owner_alive(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join("owner")) else {
        // Being set up right now by its owner, or written by nothing we know: leave it unless old.
        return fs::metadata(dir)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60))
            .unwrap_or(false);
    };
    let mut parts = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(start))) = (
        parts.next().map(str::parse::<i32>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    local::start_time(pid) == Some(start)
}

/// How to make a test node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    name: String,
    image: String,
    authorize_client_key: bool,
    wait: bool,
    options: LocalOptions,
}

impl NodeSpec {
    /// A `debian` node named `name`, authorizing the test bed's client key, waited for.
    pub fn new(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            image: "debian".into(),
            authorize_client_key: true,
            wait: true,
            options: LocalOptions::default(),
        }
    }

    /// The image (`debian` or `cloud-debian`).
    pub fn image(mut self, image: &str) -> Self {
        self.image = image.into();
        self
    }

    /// Do not authorize the test bed's client key.
    pub fn without_key(mut self) -> Self {
        self.authorize_client_key = false;
        self
    }

    /// Return as soon as the node is created, without waiting for sshd.
    pub fn no_wait(mut self) -> Self {
        self.wait = false;
        self
    }

    /// sshd starts listening only after this delay, at every boot.
    pub fn listen_delay(mut self, delay: Duration) -> Self {
        self.options.listen_delay = delay;
        self
    }

    /// An sshd_config setting (PermitRootLogin, PasswordAuthentication, MaxStartups, ...).
    pub fn sshd(mut self, key: &str, value: &str) -> Self {
        self.options.sshd_config.push((key.into(), value.into()));
        self
    }

    /// A pre-authentication banner.
    pub fn banner(mut self, text: &str) -> Self {
        self.options.banner = Some(text.into());
        self
    }

    /// sshd's port.
    pub fn port(mut self, port: u16) -> Self {
        self.options.port = Some(port);
        self
    }

    /// A password for the image's login user.
    pub fn password(mut self, password: &str) -> Self {
        self.options.password = Some(password.into());
        self
    }

    /// A network of its own, linked to this machine (a node others can sit behind).
    pub fn linked(mut self) -> Self {
        self.options.network = nodeup::providers::local::Network::Linked;
        self
    }

    /// A network of its own linked to `bastion` only: this machine cannot reach the node.
    pub fn behind(mut self, bastion: &TestNode) -> Self {
        self.options.network = nodeup::providers::local::Network::Behind(bastion.id().into());
        self
    }
}

/// A node of a test bed.
pub struct TestNode {
    /// The node as the driver last reported it.
    pub node: Node,
    driver: LocalDriver,
    client_key: PathBuf,
    known_hosts: PathBuf,
}

impl TestNode {
    /// The node's id.
    pub fn id(&self) -> &str {
        &self.node.id
    }

    /// The node's address (its private one, for a node behind another).
    pub fn ip(&self) -> IpAddr {
        self.node
            .public_ips
            .first()
            .or(self.node.private_ips.first())
            .copied()
            .expect("a local node has an address")
    }

    /// The node's SSH address and port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.node.ssh_port())
    }

    /// A known_hosts file that holds exactly this node's host keys.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    fn write_known_hosts(&self) -> io::Result<()> {
        let host = match self.node.ssh_port() {
            22 => self.ip().to_string(),
            port => format!("[{}]:{port}", self.ip()),
        };
        let keys = self
            .node
            .extra
            .get("host_keys")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let text: String = keys
            .iter()
            .filter_map(|k| k.as_str())
            .map(|k| format!("{host} {k}\n"))
            .collect();
        fs::write(&self.known_hosts, text)
    }

    /// Polls until the node is running (sshd listens).
    pub async fn wait_running(&mut self, timeout: Duration) -> io::Result<()> {
        let private = self.node.public_ips.is_empty();
        let options = nodeup::engine::WaitOptions {
            timeout,
            poll_period: Duration::from_millis(10),
            interface: if private {
                nodeup::engine::Interface::Private
            } else {
                nodeup::engine::Interface::Public
            },
            ..Default::default()
        };
        let ready = nodeup::engine::wait_until_running(
            &self.driver,
            std::slice::from_ref(&self.node.id),
            &options,
        )
        .await
        .map_err(io::Error::other)?;
        if let Some(ready) = ready.into_iter().next() {
            self.node = ready.node;
        }
        Ok(())
    }

    /// Reads the node's state again from the driver.
    pub async fn refresh(&mut self) -> io::Result<()> {
        self.node = self
            .driver
            .get_node(&self.node.id)
            .await
            .map_err(io::Error::other)?;
        Ok(())
    }

    /// The host pid of the node's PID 1 (its init, which runs sshd) while it is booted.
    pub fn init_pid(&self) -> io::Result<i32> {
        self.driver
            .init_pid(&self.node.id)
            .map_err(io::Error::other)?
            .ok_or_else(|| io::Error::other(format!("node {} is not booted", self.node.name)))
    }

    /// Where the node's root filesystem is seen from the host while it is booted.
    pub fn root(&self) -> io::Result<PathBuf> {
        Ok(PathBuf::from(format!("/proc/{}/root", self.init_pid()?)))
    }

    fn inside(&self, path: &str) -> io::Result<PathBuf> {
        Ok(self.root()?.join(path.trim_start_matches('/')))
    }

    /// A file's contents, as the node sees them.
    pub fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
        fs::read(self.inside(path)?)
    }

    /// A file's metadata (mode, owner), as the node sees it; links are not followed.
    pub fn metadata(&self, path: &str) -> io::Result<fs::Metadata> {
        fs::symlink_metadata(self.inside(path)?)
    }

    /// What the node holds on this machine, to check later that destroying it left nothing.
    pub fn footprint(&self) -> io::Result<Footprint> {
        let pid = self.init_pid()?;
        let ns = |kind: &str| fs::read_link(format!("/proc/{pid}/ns/{kind}"));
        Ok(Footprint {
            pid_ns: ns("pid")?,
            mnt_ns: ns("mnt")?,
            dir: self.driver.node_dir(&self.node.id),
            addr: self.addr(),
            taken: ticks_since_boot(),
        })
    }

    /// Runs `sh -c script` inside the node (its mounts, hostname, PID namespace and root), as root.
    pub fn exec(&self, script: &str) -> io::Result<Output> {
        let pid = self.init_pid()?.to_string();
        Command::new("nsenter")
            .args([
                "--target", &pid, "--mount", "--uts", "--pid", "--net", "--root", "--wd",
            ])
            .args(["--", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
    }

    /// An OpenSSH client command that logs in to the node as `user` with the test bed's key,
    /// checking the host key against the node's own (StrictHostKeyChecking=yes), touching nothing
    /// in ~/.ssh. Append the remote command and run it.
    pub fn ssh(&self, user: &str) -> Command {
        self.ssh_with(user, &[])
    }

    /// [`TestNode::ssh`] with OpenSSH options (`-o KEY=VALUE`) that take precedence over the
    /// defaults (OpenSSH keeps the first value it is given), e.g. `("BatchMode", "no")` or
    /// `("Port", relay port)` with `("Hostname", relay address)` to go through a relay.
    pub fn ssh_with(&self, user: &str, options: &[(&str, &str)]) -> Command {
        openssh(
            self.addr(),
            user,
            &self.client_key,
            &self.known_hosts,
            options,
        )
    }

    /// Runs `command` on the node over SSH as `user` (see [`TestNode::ssh`]).
    pub fn ssh_run(&self, user: &str, command: &str) -> io::Result<Output> {
        self.ssh(user).arg("--").arg(command).output()
    }
}

/// An OpenSSH client command to `user@addr` with one key (`IdentitiesOnly`), in batch mode,
/// checking host keys strictly against `known_hosts` and reading nothing of `~/.ssh`. `options`
/// (`-o KEY=VALUE`) come first and so win (OpenSSH keeps the first value it is given), e.g.
/// `("StrictHostKeyChecking", "accept-new")`. Append the remote command and run it.
pub fn openssh(
    addr: SocketAddr,
    user: &str,
    key: &Path,
    known_hosts: &Path,
    options: &[(&str, &str)],
) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(["-F", "/dev/null"]);
    for (k, v) in options {
        cmd.arg("-o").arg(format!("{k}={v}"));
    }
    cmd.args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-o")
        .arg(format!("Port={}", addr.port()))
        .arg("-i")
        .arg(key)
        .arg(format!("{user}@{}", addr.ip()))
        .stdin(Stdio::null());
    cmd
}

/// What one node holds on this machine: its namespaces, its directory, its address.
#[derive(Debug, Clone)]
pub struct Footprint {
    pid_ns: PathBuf,
    mnt_ns: PathBuf,
    dir: PathBuf,
    addr: SocketAddr,
    /// When it was taken, in clock ticks since boot: a process started later is not the node's,
    /// even in a namespace whose number the kernel gave again to another node's.
    taken: u64,
}

/// Now, in clock ticks since boot (the unit of a process's start time in /proc/PID/stat).
fn ticks_since_boot() -> u64 {
    let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
    let seconds: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (seconds * ticks).ceil() as u64
}

impl Footprint {
    /// What is left of the node, each thing named; empty when nothing is.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let dir = self.dir.to_string_lossy().into_owned();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let proc_dir = entry.path();
            let started_later = pid
                .parse()
                .ok()
                .and_then(local::start_time)
                .is_some_and(|start| start > self.taken);
            if started_later {
                continue;
            }
            for (kind, ns) in [("pid", &self.pid_ns), ("mnt", &self.mnt_ns)] {
                if fs::read_link(proc_dir.join("ns").join(kind)).ok().as_ref() == Some(ns) {
                    left.push(format!("process {pid} in the node's {kind} namespace"));
                }
            }
            if let Ok(mounts) = fs::read_to_string(proc_dir.join("mountinfo")) {
                if mounts.contains(&dir) {
                    left.push(format!("a mount of {dir} seen by process {pid}"));
                }
            }
        }
        if self.dir.exists() {
            left.push(format!("directory {dir}"));
        }
        let claim = Path::new(local::CLAIMS_DIR).join(self.addr.ip().to_string());
        if fs::read(&claim).is_ok_and(|owner| owner == dir.as_bytes()) {
            left.push(format!("address claim {}", claim.display()));
        }
        if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
            left.push(format!("a listener on {}", self.addr));
        }
        left
    }
}
