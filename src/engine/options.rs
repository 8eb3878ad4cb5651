//! The options of a deployment: every parameter of Libcloud's `deploy_node` under Rust names and
//! what nodeup adds, with the tuning defaults as documented constants; progress events.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::settings::ConfigLookup;
use super::wait::Interface;
use crate::driver::NodeDriver;
use crate::journal::Journal;
use crate::model::{Node, NodeAuth};
use crate::ssh::{self, Credentials, HostKeyPolicy, Jump, OutputSink, Password};

/// Called with the driver and the node when a deployment is cancelled after the node exists;
/// answers whether the node is gone (the journal records it destroyed, else cancelled).
pub type AtExit = Arc<dyn Fn(Arc<dyn NodeDriver>, Node) -> BoxFuture<'static, bool> + Send + Sync>;

/// What happens, for progress output.
#[derive(Debug, Clone)]
pub enum Event {
    /// The provider is asked to create the node of this name (`Created` follows when it answers).
    Creating(String),
    /// The node was created.
    Created(Node),
    /// Waiting for the node to run.
    Waiting,
    /// The node runs; logging in at this address.
    Running(Node, SocketAddr),
    /// Logging in keeps failing (the machine does not answer yet, or refuses): what it waits for.
    LoginWaiting(String),
    /// Logged in as this user.
    LoggedIn(String),
    /// The connection was lost; logging in again to resume at this step (1-based).
    Reconnecting(usize),
    /// A step failed; the deployment runs again from its first step (run number, 1-based).
    Retrying(u32),
    /// Step `index` (1-based) of `total`, of this kind, starts.
    StepStarted {
        /// 1-based.
        index: usize,
        /// How many steps.
        total: usize,
        /// The step's kind.
        kind: &'static str,
    },
    /// The step running waits for something, and says what (a reboot: the node to come back).
    StepWaiting(String),
    /// Step `index` of `total` finished after `elapsed`.
    StepFinished {
        /// 1-based.
        index: usize,
        /// How many steps.
        total: usize,
        /// The step's kind.
        kind: &'static str,
        /// How long it took.
        elapsed: Duration,
    },
}

impl Event {
    /// The stage of its life the event moves the node to.
    pub fn stage(&self) -> crate::life::Stage {
        use crate::life::Stage;
        match self {
            Event::Creating(_) => Stage::Creating,
            Event::Created(_) | Event::Waiting => Stage::Waiting,
            Event::Running(..) | Event::Reconnecting(_) | Event::LoginWaiting(_) => {
                Stage::LoggingIn
            }
            Event::LoggedIn(_)
            | Event::Retrying(_)
            | Event::StepStarted { .. }
            | Event::StepWaiting(_)
            | Event::StepFinished { .. } => Stage::Provisioning,
        }
    }
}

/// Receives progress events.
pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

/// Every parameter of Libcloud's `deploy_node`, under Rust names, and what nodeup adds.
#[derive(Clone)]
pub struct DeployOptions {
    /// The first username to log in as (Libcloud's `ssh_username`). `None`: the image's login
    /// user (`extra.login_user`, as `admin` on EC2's Debian) when the provider reports one and
    /// `try_image_user` is on, then root ([`DEFAULT_USER`]).
    pub ssh_username: Option<String>,
    /// Usernames to try after it.
    pub alternate_usernames: Vec<String>,
    /// Also try the image's login user (`extra.login_user`): first when no `ssh_username` is
    /// given, else after the alternates.
    pub try_image_user: bool,
    /// The SSH port; the node's own (`extra.ssh_port`, else 22) when `None`.
    pub port: Option<u16>,
    /// The deadline of each connection attempt.
    pub ssh_timeout: Duration,
    /// Private key files; the user's default keys and agent when empty and no password is given.
    pub ssh_keys: Vec<PathBuf>,
    /// The passphrase of encrypted key files.
    pub ssh_key_passphrase: Option<Password>,
    /// A password to log in with.
    pub password: Option<Password>,
    /// With no key file and no password: use the user's default keys (~/.ssh) and ssh-agent.
    pub default_credentials: bool,
    /// With no way to log in at all and a provider that installs SSH keys: generate a temporary
    /// ed25519 key for this node (kept in memory only) and log in with it.
    pub temporary_key: bool,
    /// With no `auth` and a provider that installs SSH keys: hand it the public half of the first
    /// key, so that the new node lets nodeup in.
    pub authorize_key: bool,
    /// A credential handed to `create_node` (when the provider accepts that kind).
    pub auth: Option<NodeAuth>,
    /// How long to wait for the node to run and accept a login.
    pub timeout: Duration,
    /// How many connections the steps may use in all (a lost connection is resumed on the next);
    /// with `retry_failed_steps`, also how many times the whole deployment may run.
    pub max_tries: u32,
    /// Run the whole deployment again, from its first step, when a step fails (Libcloud's
    /// `max_tries` behaviour), up to `max_tries` runs. Off by default: a failed script fails, and
    /// a lost connection resumes without re-running finished steps.
    pub retry_failed_steps: bool,
    /// Which addresses to log in on.
    pub interface: Interface,
    /// Log in on IPv4 addresses only (Libcloud's `force_ipv4`, on by default as there); a node
    /// with IPv6 addresses alone is then an error that says how to allow them.
    pub force_ipv4: bool,
    /// The longest pause between two polls of the provider.
    pub poll_period: Duration,
    /// Called when the deployment is cancelled after the node exists.
    pub at_exit: Option<AtExit>,
    /// What to do with a host key not seen before (accept-new suits nodes created here).
    pub host_key_policy: HostKeyPolicy,
    /// The known_hosts file.
    pub known_hosts: PathBuf,
    /// Cancels the deployment.
    pub cancel: CancellationToken,
    /// Receives script output as it arrives.
    pub output: Option<OutputSink>,
    /// Receives progress events.
    pub progress: Option<Progress>,
    /// Where the deployment is recorded before anything is created (default: the embedded
    /// SQLite journal in nodeup's state directory; `None` records nothing). A handle bound to a
    /// run ([`Journal::begin_run`]) records the node in that run; otherwise each deployment is a
    /// run of its own.
    pub journal: Option<Journal>,
    /// Shared by a fleet's logins: how many connections may be being set up at once (see
    /// [`LoginOptions::startups`]); `None` for no limit.
    pub startups: Option<Arc<tokio::sync::Semaphore>>,
    /// Jump hosts every node is reached through (`ssh -J`); the clones of these options share
    /// one connection to them ([`Jump`]). A target's own ([`TargetSsh::jump`]) wins.
    pub jump: Option<Jump>,
    /// The OpenSSH client configuration machines are looked up in, with what the command line
    /// and step file decided already ([`super::settings::resolve`] makes it); `None` reads none.
    pub ssh_config: Option<Arc<ConfigLookup>>,
}

pub use crate::ssh::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE};

/// How long a deployment waits for its node to run and accept a login unless told otherwise:
/// Libcloud's `deploy_node` timeout (its `wait_until_running` alone waits 600 s); cloud nodes
/// boot in one to three minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest pause between two polls of the provider while a deployment waits, unless told
/// otherwise: shorter than Libcloud's `wait_period` (5 s in `deploy_node`), since every second
/// between "running" and the first login is idle time users complain of; the first polls come
/// sooner still (100 ms, doubling).
pub const DEFAULT_POLL_PERIOD: Duration = Duration::from_secs(2);

/// How many connections the steps may use in all unless told otherwise (Libcloud's `max_tries`):
/// a connection lost twice is resumed twice, a third loss fails.
pub const DEFAULT_MAX_TRIES: u32 = 3;

/// The user tried when none is given, after the image's own login user (Libcloud's
/// `ssh_username` default).
pub const DEFAULT_USER: &str = "root";

impl DeployOptions {
    /// The user to log in as where no image says one: the one given, else root.
    pub fn first_user(&self) -> &str {
        self.ssh_username.as_deref().unwrap_or(DEFAULT_USER)
    }
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            ssh_username: None,
            alternate_usernames: Vec::new(),
            try_image_user: true,
            port: None,
            ssh_timeout: DEFAULT_CONNECT_TIMEOUT,
            ssh_keys: Vec::new(),
            ssh_key_passphrase: None,
            password: None,
            default_credentials: true,
            temporary_key: true,
            authorize_key: true,
            auth: None,
            timeout: DEFAULT_TIMEOUT,
            max_tries: DEFAULT_MAX_TRIES,
            retry_failed_steps: false,
            interface: Interface::Public,
            force_ipv4: true,
            poll_period: DEFAULT_POLL_PERIOD,
            at_exit: None,
            host_key_policy: HostKeyPolicy::AcceptNew,
            known_hosts: default_known_hosts(),
            cancel: CancellationToken::new(),
            output: None,
            progress: None,
            journal: Some(Journal::embedded()),
            startups: None,
            jump: None,
            ssh_config: None,
        }
    }
}

/// nodeup's own known_hosts file: `$NODEUP_STATE_DIR/known_hosts`, else under
/// `$XDG_STATE_HOME/nodeup` or `~/.local/state/nodeup`.
pub fn default_known_hosts() -> PathBuf {
    crate::state_dir().join("known_hosts")
}

impl DeployOptions {
    /// The credentials to log in with, loaded (and passphrases checked) now.
    pub fn credentials(&self) -> Result<Credentials, ssh::Error> {
        let mut creds = if !self.ssh_keys.is_empty() {
            Credentials::from_key_files(
                &self.ssh_keys,
                self.ssh_key_passphrase.as_ref().map(|p| p.0.as_str()),
            )?
        } else if self.password.is_some()
            || matches!(self.auth, Some(NodeAuth::Password(_)))
            || !self.default_credentials
        {
            Credentials::default()
        } else {
            Credentials::defaults()
        };
        creds.password = self.password.clone().or(match &self.auth {
            Some(NodeAuth::Password(p)) => Some(Password(p.clone())),
            _ => None,
        });
        Ok(creds)
    }
}
