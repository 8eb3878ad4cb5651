//! `deploy_node`: create → wait until running → log in → run the steps, resuming after a lost
//! connection; on failure an error that carries the node; on cancellation the at-exit hook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connect::{error_chain, login, LoggedIn, LoginAttempt, LoginOptions};
use super::wait::{wait_until_running, Interface, WaitError, WaitOptions};
use crate::deploy::{self, Context, Step, StepResult};
use crate::driver::{Features, NodeDriver, ProviderError};
use crate::journal::{Journal, JournalError, NodeEntry, NodeIntent, NodeState, StepRecord};
use crate::model::{CreateNode, Node, NodeAuth};
use crate::ssh::config::ConfigError;
use crate::ssh::{
    self, Credentials, ErrorClass, HostKeyCheck, HostKeyPolicy, Jump, NewNode, OutputSink,
    Password, SshConfig,
};

/// Called with the driver and the node when a deployment is cancelled after the node exists;
/// answers whether the node is gone (the journal records it destroyed, else cancelled).
pub type AtExit = Arc<dyn Fn(Arc<dyn NodeDriver>, Node) -> BoxFuture<'static, bool> + Send + Sync>;

/// Destroys a node and forgets its host keys in `known_hosts`: its addresses will belong to other
/// machines, whose keys must not be refused as "changed".
pub async fn destroy_node(
    driver: &dyn NodeDriver,
    node: &Node,
    known_hosts: &std::path::Path,
) -> Result<(), ProviderError> {
    driver.destroy_node(node).await?;
    let check = HostKeyCheck {
        policy: HostKeyPolicy::AcceptNew,
        known_hosts: known_hosts.to_path_buf(),
        pinned: Vec::new(),
        new_node: None,
    };
    for ip in node.public_ips.iter().chain(&node.private_ips) {
        if let Err(e) = check.forget(&ip.to_string(), node.ssh_port()) {
            tracing::warn!(
                "forgetting the host key of {ip} in {}: {e}",
                known_hosts.display()
            );
        }
    }
    Ok(())
}

/// The at-exit hook that destroys the node (what the CLI uses), forgetting its host keys in
/// nodeup's own known_hosts.
pub fn destroy_at_exit() -> AtExit {
    Arc::new(|driver, node| {
        Box::pin(async move {
            match destroy_node(driver.as_ref(), &node, &default_known_hosts()).await {
                Ok(()) => {
                    tracing::warn!(node = %node.name, "deployment cancelled: node destroyed");
                    true
                }
                Err(e) => {
                    tracing::error!(node = %node.name, "deployment cancelled; destroying the node failed: {e}");
                    false
                }
            }
        })
    })
}

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

/// Receives progress events.
pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

/// Every parameter of Libcloud's `deploy_node`, under Rust names, and what nodeup adds.
#[derive(Clone)]
pub struct DeployOptions {
    /// The first username to log in as (Libcloud's `ssh_username`, default root).
    pub ssh_username: String,
    /// Usernames to try after it.
    pub alternate_usernames: Vec<String>,
    /// Also try the image's login user (`extra.login_user`) after those.
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
    /// Log in on IPv4 addresses only (Libcloud's `force_ipv4`).
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
    /// The OpenSSH client configuration that nodes nodeup creates are looked up in, by address
    /// ([`TargetSsh::configured`]); `None` reads none.
    pub ssh_config: Option<Arc<SshConfig>>,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            ssh_username: "root".into(),
            alternate_usernames: Vec::new(),
            try_image_user: true,
            port: None,
            ssh_timeout: Duration::from_secs(10),
            ssh_keys: Vec::new(),
            ssh_key_passphrase: None,
            password: None,
            default_credentials: true,
            temporary_key: true,
            authorize_key: true,
            auth: None,
            timeout: Duration::from_secs(300),
            max_tries: 3,
            retry_failed_steps: false,
            interface: Interface::Public,
            force_ipv4: false,
            poll_period: Duration::from_secs(2),
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
    fn emit(&self, event: Event) {
        if let Some(progress) = &self.progress {
            progress(&event);
        }
    }

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

/// A finished deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The node, as last listed.
    pub node: Node,
    /// The user it logged in as.
    pub user: String,
    /// Each step's result, in order.
    pub steps: Vec<StepResult>,
    /// How many times the connection was lost and resumed.
    pub reconnects: u32,
    /// The node's record in the journal (already finished as done).
    pub journal: Option<NodeEntry>,
}

/// Why a deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// Bad input; nothing was created.
    #[error("{0}")]
    Invalid(String),
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
    fn before_create(cause: Cause) -> Self {
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

impl TargetSsh {
    /// For a node nodeup created, at `address`: what [`DeployOptions::ssh_config`] says of that
    /// address: `ProxyJump` (unless the options give jump hosts), `ConnectTimeout` and
    /// `ServerAliveInterval`. The node's user, keys and known_hosts stay nodeup's: the node is new.
    ///
    /// # Errors
    /// What the configuration refuses for that address (a `ProxyCommand`).
    pub fn configured(options: &DeployOptions, address: &str) -> Result<Self, ConfigError> {
        let Some(config) = &options.ssh_config else {
            return Ok(TargetSsh::default());
        };
        let said = config.host(address)?;
        let jump = match (&options.jump, &said.proxy_jump) {
            (None, Some(hops)) => config.jump(hops)?,
            _ => None,
        };
        Ok(TargetSsh {
            jump,
            connect_timeout: said.connect_timeout,
            keepalive: said.server_alive_interval,
            ..TargetSsh::default()
        })
    }
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

/// What [`run_steps`] did.
#[derive(Debug, Clone)]
pub struct Run {
    /// The user it logged in as.
    pub user: String,
    /// Each step's result.
    pub steps: Vec<StepResult>,
    /// How many times the connection was lost and resumed.
    pub reconnects: u32,
}

/// How long a connection may be silent before a keepalive is sent.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// One run of steps on one target: the login, the connection, and what to do when it drops.
struct Runner<'a> {
    target: &'a Target,
    creds: &'a Credentials,
    options: &'a DeployOptions,
    login_options: LoginOptions,
    attempts: Vec<LoginAttempt>,
    leftovers: std::sync::Mutex<Vec<String>>,
}

impl<'a> Runner<'a> {
    fn new(target: &'a Target, creds: &'a Credentials, options: &'a DeployOptions) -> Self {
        Runner {
            target,
            creds,
            options,
            login_options: LoginOptions {
                users: target.users.clone(),
                attempt_timeout: target.ssh.connect_timeout.unwrap_or(options.ssh_timeout),
                keepalive: target.ssh.keepalive.unwrap_or(KEEPALIVE),
                host_keys: HostKeyCheck {
                    policy: target
                        .ssh
                        .host_key_policy
                        .unwrap_or(options.host_key_policy),
                    known_hosts: (target.ssh.known_hosts.as_ref())
                        .unwrap_or(&options.known_hosts)
                        .clone(),
                    pinned: target.pinned_host_keys.clone(),
                    new_node: target.created.then(NewNode::default),
                },
                host_name: None,
                startups: options.startups.clone(),
                planned_commands: None,
                jump: target.ssh.jump.clone().or(options.jump.clone()),
            },
            attempts: Vec::new(),
            leftovers: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Logs in, within a fresh time budget.
    async fn login(&mut self) -> Result<LoggedIn, ssh::Error> {
        let deadline = Instant::now() + self.options.timeout;
        let (addr, creds) = (self.target.addr, self.creds);
        login(
            addr,
            creds,
            &self.login_options,
            deadline,
            &mut self.attempts,
        )
        .await
    }

    fn context<'s>(&'s self, logged_in: &'s LoggedIn, sink: Option<OutputSink>) -> Context<'s> {
        Context {
            session: &logged_in.session,
            node: self.target.node.as_ref(),
            home: logged_in.home.clone(),
            is_root: logged_in.is_root,
            sink,
            leftovers: &self.leftovers,
        }
    }

    /// After a lost connection: logs in again as the user that worked, and removes what the
    /// interrupted step left (a half-written temporary file, a script's private directory).
    async fn resume(&mut self, user: String) -> Result<LoggedIn, ssh::Error> {
        self.login_options.users = vec![user];
        let logged_in = self.login().await?;
        if let Err(e) = deploy::remove_leftovers(&self.context(&logged_in, None)).await {
            tracing::warn!(
                "removing what the interrupted step left: {}",
                error_chain(&e)
            );
        }
        Ok(logged_in)
    }

    /// Runs step `number` of `total`: progress events, and its result in the journal.
    async fn step(
        &mut self,
        logged_in: &mut LoggedIn,
        step: &Step,
        (number, total): (usize, usize),
    ) -> Result<StepResult, deploy::Error> {
        let (options, kind) = (self.options, step.kind());
        options.emit(Event::StepStarted {
            index: number,
            total,
            kind,
        });
        if let Some(entry) = &self.target.journal {
            entry.step_started(number, total).await;
        }
        let started = Instant::now();
        let outcome = match step {
            Step::Reboot(reboot) => self.reboot(logged_in, reboot).await,
            step => {
                step.run(&self.context(logged_in, options.output.clone()))
                    .await
            }
        };
        record_step(self.target, (number, kind), started.elapsed(), &outcome).await;
        if let Ok(result) = &outcome {
            options.emit(Event::StepFinished {
                index: number,
                total,
                kind,
                elapsed: result.duration,
            });
        }
        outcome
    }

    /// Reboots the node (through its provider when the target has one, else with its own
    /// `reboot`), waits until it is back with a new boot, and logs in again in `logged_in`'s
    /// place.
    async fn reboot(
        &mut self,
        logged_in: &mut LoggedIn,
        step: &deploy::RebootStep,
    ) -> Result<StepResult, deploy::Error> {
        let started = Instant::now();
        let before = boot_id(&logged_in.session).await?;
        match (&self.target.driver, &self.target.node) {
            (Some(driver), Some(node)) => {
                driver
                    .reboot_node(node)
                    .await
                    .map_err(|e| reboot_failed(format!("the provider could not reboot it: {e}")))?;
            }
            _ => {
                let ctx = self.context(logged_in, None);
                ctx.helper(&reboot_command(ctx.sudo(true)), None).await?;
            }
        }
        let deadline = started + step.timeout();
        self.login_options.users = vec![logged_in.user.clone()];
        loop {
            let fresh = login(
                self.target.addr,
                self.creds,
                &self.login_options,
                deadline,
                &mut self.attempts,
            )
            .await
            .map_err(|e| {
                reboot_failed(format!(
                    "the node did not come back within {:?}: {}",
                    step.timeout(),
                    error_chain(&e)
                ))
            })?;
            if boot_id(&fresh.session).await? != before {
                let old = std::mem::replace(logged_in, fresh);
                old.session.close().await;
                return Ok(StepResult {
                    kind: "reboot",
                    duration: started.elapsed(),
                    note: format!(
                        "rebooted; back after {:.1}s",
                        started.elapsed().as_secs_f64()
                    ),
                    ..Default::default()
                });
            }
            // Still the old boot: the node is not down yet.
            fresh.session.close().await;
            if Instant::now() + REBOOT_POLL >= deadline {
                return Err(reboot_failed(format!(
                    "the node did not reboot within {:?}",
                    step.timeout()
                )));
            }
            tokio::time::sleep(REBOOT_POLL).await;
        }
    }

    fn fail(
        self,
        cause: Cause,
        step: Option<(usize, &'static str)>,
        done: Vec<StepResult>,
    ) -> RunFailure {
        RunFailure {
            step,
            cause,
            attempts: self.attempts,
            completed: done,
        }
    }
}

/// Logs in to `target` and runs `steps` over one connection; a lost connection is resumed, up to
/// `options.max_tries` connections in all, at the step that did not finish (finished steps never
/// run again). With `options.retry_failed_steps`, a failed step runs the whole list again.
pub async fn run_steps(
    target: &Target,
    steps: &Step,
    creds: &Credentials,
    options: &DeployOptions,
) -> Result<Run, RunFailure> {
    let mut runner = Runner::new(target, creds, options);
    let mut results: Vec<StepResult> = Vec::new();
    let flat = steps.flatten();
    runner.login_options.planned_commands = Step::commands(&flat);
    let mut logged_in = match runner.login().await {
        Ok(l) => l,
        Err(e) => return Err(runner.fail(Cause::Login(e), None, results)),
    };
    options.emit(Event::LoggedIn(logged_in.user.clone()));
    if let Some(entry) = &target.journal {
        entry.logged_in(&logged_in.user).await;
    }
    let (mut connections, mut runs, mut index) = (1, 1, 0);
    while index < flat.len() {
        let step = flat[index];
        let (number, kind) = (index + 1, step.kind());
        match runner
            .step(&mut logged_in, step, (number, flat.len()))
            .await
        {
            Ok(result) => {
                results.push(result);
                index += 1;
            }
            Err(e) if e.class() == ErrorClass::Reconnect && connections < options.max_tries => {
                tracing::warn!(
                    step = number,
                    "connection lost ({}); resuming",
                    error_chain(&e)
                );
                options.emit(Event::Reconnecting(number));
                connections += 1;
                // What the interrupted step left is removed first: one command more.
                runner.login_options.planned_commands =
                    Step::commands(&flat[index..]).map(|n| n + 1);
                logged_in = match runner.resume(logged_in.user.clone()).await {
                    Ok(l) => l,
                    Err(e) => {
                        return Err(runner.fail(Cause::Login(e), Some((number, kind)), results))
                    }
                };
            }
            Err(e) if options.retry_failed_steps && runs < options.max_tries => {
                runs += 1;
                tracing::warn!(
                    step = number,
                    "{}; running the deployment again",
                    error_chain(&e)
                );
                options.emit(Event::Retrying(runs));
                let ctx = runner.context(&logged_in, None);
                if let Err(e) = deploy::remove_leftovers(&ctx).await {
                    tracing::warn!("removing what the failed step left: {}", error_chain(&e));
                }
                results.clear();
                index = 0;
            }
            Err(e) => return Err(runner.fail(Cause::Step(e), Some((number, kind)), results)),
        }
    }
    let user = logged_in.user.clone();
    logged_in.session.close().await;
    Ok(Run {
        user,
        steps: results,
        reconnects: connections - 1,
    })
}

/// How long to wait before logging in again to a node that still runs its old boot.
const REBOOT_POLL: Duration = Duration::from_secs(1);

/// The node's boot id: another after a reboot.
async fn boot_id(session: &ssh::SshSession) -> Result<String, deploy::Error> {
    let out = session
        .exec(
            "cat /proc/sys/kernel/random/boot_id",
            &ssh::ExecOptions::default(),
        )
        .await?;
    let id = out.stdout.text().trim().to_string();
    if out.status != Some(ssh::ExitStatus::Code(0)) || id.is_empty() {
        return Err(reboot_failed(format!(
            "its boot id cannot be read ({}): {}",
            out.status.map(|s| s.to_string()).unwrap_or_default(),
            out.stderr.text().trim()
        )));
    }
    Ok(id)
}

/// The node's own reboot, started a second after the command returns (so that its answer gets
/// back before the connection goes down), as root.
fn reboot_command(sudo: &str) -> ssh::ShScript<'static> {
    ssh::ShScript {
        text: r#"nohup sh -c 'sleep 1; reboot || shutdown -r now' </dev/null >/dev/null 2>&1 &"#,
        args: Vec::new(),
        sudo: !sudo.is_empty(),
        name: "reboot".into(),
    }
}

fn reboot_failed(why: String) -> deploy::Error {
    deploy::Error::Custom {
        message: format!("reboot: {why}"),
        result: None,
    }
}

/// Records a step's result in the target's journal entry: status, exit status, duration, and the
/// note or (shortened) error; never the step's output.
async fn record_step(
    target: &Target,
    (index, kind): (usize, &str),
    duration: Duration,
    outcome: &Result<StepResult, deploy::Error>,
) {
    let Some(entry) = &target.journal else { return };
    let (ok, status, note) = match outcome {
        Ok(result) => (true, result.status.as_ref(), result.note.clone()),
        Err(e) => (false, e.output().and_then(|o| o.0), error_chain(e)),
    };
    let record = StepRecord {
        index,
        kind: kind.into(),
        ok,
        exit_status: status.and_then(|s| s.code()).map(i64::from),
        duration,
        note,
    };
    entry.step_finished(&record).await;
}

/// Calls the at-exit hook if dropped while armed (the deployment future was dropped).
struct ExitGuard {
    driver: Arc<dyn NodeDriver>,
    node: Node,
    hook: Option<AtExit>,
    journal: Option<NodeEntry>,
}

/// Runs the at-exit hook, then records in the journal whether the node is gone.
async fn run_hook(hook: AtExit, driver: Arc<dyn NodeDriver>, node: Node, entry: Option<NodeEntry>) {
    let gone = hook(driver, node).await;
    if let Some(entry) = entry {
        let state = if gone {
            NodeState::Destroyed
        } else {
            NodeState::Cancelled
        };
        entry.finish(state).await;
    }
}

impl ExitGuard {
    fn disarm(mut self) -> Node {
        self.hook = None;
        self.node.clone()
    }

    async fn fire(mut self) -> Node {
        match self.hook.take() {
            Some(hook) => {
                let entry = self.journal.clone();
                run_hook(hook, self.driver.clone(), self.node.clone(), entry).await;
            }
            None => {
                if let Some(entry) = &self.journal {
                    entry.finish(NodeState::Cancelled).await;
                }
            }
        }
        self.node.clone()
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Some(hook) = self.hook.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let entry = self.journal.clone();
                    runtime.spawn(run_hook(
                        hook,
                        self.driver.clone(),
                        self.node.clone(),
                        entry,
                    ));
                }
                Err(_) => tracing::error!(
                    node = %self.node.name,
                    "deployment dropped outside a runtime: the at-exit hook could not run"
                ),
            }
        }
    }
}

/// The credentials a deployment logs in with, checked before anything is created: the options'
/// keys, password or defaults, else a temporary key when the provider installs keys.
fn login_credentials(features: Features, options: &DeployOptions) -> Result<Credentials, Cause> {
    let mut creds = options.credentials().map_err(Cause::Credentials)?;
    if creds.is_empty() && features.ssh_key && options.temporary_key && options.auth.is_none() {
        let key =
            russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
                .map_err(|e| Cause::Invalid(format!("generating a temporary key: {e}")))?;
        tracing::info!("no key given: logging in with a temporary ed25519 key");
        creds
            .keys
            .push((PathBuf::from("(temporary key)"), Arc::new(key)));
    }
    if creds.is_empty() && !features.generates_password {
        return Err(Cause::Invalid(
            "no way to log in: give a private key file (--key), a password, or run an ssh-agent; \
             ~/.ssh has no default key"
                .into(),
        ));
    }
    Ok(creds)
}

/// What `create_node` is handed: the options' `auth`, else the public half of the first key
/// (when the provider installs keys and `authorize_key`), and only a kind the provider accepts.
/// One it cannot install is still used to log in (as Libcloud does): the node relies on what the
/// account or image has already.
fn create_auth(
    provider: &str,
    features: Features,
    creds: &Credentials,
    options: &DeployOptions,
) -> Option<NodeAuth> {
    let handed_key = match (&options.auth, creds.keys.first()) {
        (None, Some((_, key))) if options.authorize_key && features.ssh_key => {
            key.public_key().to_openssh().ok().map(NodeAuth::SshKey)
        }
        _ => None,
    };
    let auth = options.auth.clone().or(handed_key)?;
    let (accepted, what) = match &auth {
        NodeAuth::SshKey(_) => (features.ssh_key, "an SSH key"),
        NodeAuth::Password(_) => (features.password, "a password"),
    };
    if !accepted {
        tracing::warn!(
            "provider {provider} cannot install {what} when creating a node: logging in with what \
             the account or image already has"
        );
        return None;
    }
    Some(auth)
}

/// Creates a node, waits until it runs, logs in and runs `steps` on it.
///
/// Before anything is created: the steps are validated, key files loaded and passphrases checked,
/// and there must be a way to log in. After the node exists, a failure returns a
/// [`DeploymentError`] carrying it (the node is left for the caller to destroy or keep), and a
/// cancellation (`options.cancel`, or the future dropped) calls `options.at_exit`.
pub async fn deploy_node(
    driver: Arc<dyn NodeDriver>,
    request: &CreateNode,
    steps: &Step,
    options: &DeployOptions,
) -> Result<Deployment, DeploymentError> {
    steps
        .validate()
        .map_err(|e| DeploymentError::before_create(Cause::Invalid(e.to_string())))?;
    let features = driver.features();
    let creds = login_credentials(features, options).map_err(DeploymentError::before_create)?;
    let mut request = request.clone();
    request.auth = create_auth(driver.name(), features, &creds, options);
    if options.cancel.is_cancelled() {
        return Err(DeploymentError::before_create(Cause::Cancelled));
    }

    let entry = begin_entry(driver.as_ref(), &request, steps, options)
        .await
        .map_err(|e| DeploymentError::before_create(Cause::Journal(e)))?;
    options.emit(Event::Creating(request.name.clone()));
    let node = match driver.create_node(&request).await {
        Ok(node) => node,
        Err(e) => return Err(create_failed(e, entry).await),
    };
    tracing::info!(node = %node.name, id = %node.id, "node created");
    if let Some(entry) = &entry {
        entry.created(&node).await;
    }
    options.emit(Event::Created(node.clone()));
    let guard = ExitGuard {
        driver: driver.clone(),
        node: node.clone(),
        hook: options.at_exit.clone(),
        journal: entry.clone(),
    };
    let outcome = tokio::select! {
        biased;
        _ = options.cancel.cancelled() => None,
        result = provision(&driver, &node, steps, creds, options, entry.as_ref()) => Some(result),
    };
    match outcome {
        None => {
            let node = guard.fire().await;
            Err(DeploymentError {
                node: Some(node),
                step: None,
                cause: Cause::Cancelled,
                attempts: Vec::new(),
                completed: Vec::new(),
                journal: entry,
            })
        }
        Some(Ok(mut deployment)) => {
            guard.disarm();
            if let Some(entry) = &entry {
                entry.finish(NodeState::Done).await;
            }
            deployment.journal = entry;
            Ok(deployment)
        }
        Some(Err(mut error)) => {
            let node = guard.disarm();
            error.node.get_or_insert(node);
            if let Some(entry) = &entry {
                entry.failed(&error_chain(&error)).await;
            }
            error.journal = entry;
            Err(error)
        }
    }
}

/// Records the node in the journal (and locks its name) before it is created.
async fn begin_entry(
    driver: &dyn NodeDriver,
    request: &CreateNode,
    steps: &Step,
    options: &DeployOptions,
) -> Result<Option<NodeEntry>, JournalError> {
    let Some(journal) = &options.journal else {
        return Ok(None);
    };
    let intent = NodeIntent {
        provider: Some(driver.name().to_string()),
        settings: driver.settings(),
        location: request.location.clone().unwrap_or_default(),
        name: request.name.clone(),
        address: None,
        steps: steps.flatten().len(),
    };
    journal.begin_node(&intent, "deploy_node").await.map(Some)
}

/// A failed create: a refusal (bad request, credentials, not found) created nothing and is
/// recorded so; any other failure may have made a node whose answer was lost, so the record stays
/// `failed` and `nodeup cleanup` looks the node up by name once this process is gone.
async fn create_failed(e: ProviderError, entry: Option<NodeEntry>) -> DeploymentError {
    if let Some(entry) = &entry {
        entry.failed(&format!("create_node: {e}")).await;
        if !matches!(e, ProviderError::Failed { .. }) {
            entry.finish(NodeState::Destroyed).await;
        }
    }
    let mut error = DeploymentError::before_create(Cause::Provider(e));
    error.journal = entry;
    error
}

/// Waits until the node runs and has an address to log in on.
async fn wait_for(
    driver: &dyn NodeDriver,
    node: &Node,
    options: &DeployOptions,
) -> Result<super::wait::Ready, WaitError> {
    let wait = WaitOptions {
        timeout: options.timeout,
        poll_period: options.poll_period,
        interface: options.interface,
        force_ipv4: options.force_ipv4,
        location: node.location().map(str::to_string),
    };
    let ready = wait_until_running(driver, std::slice::from_ref(&node.id), &wait).await?;
    ready
        .into_iter()
        .next()
        .ok_or_else(|| WaitError::Gone(node.id.clone()))
}

/// The usernames to try, in order: the first, the alternates, then the image's own login user.
fn login_users(options: &DeployOptions, node: &Node) -> Vec<String> {
    let mut users = vec![options.ssh_username.clone()];
    let image_user = node
        .login_user()
        .filter(|_| options.try_image_user)
        .map(str::to_string);
    for user in options
        .alternate_usernames
        .iter()
        .cloned()
        .chain(image_user)
    {
        if !users.contains(&user) {
            users.push(user);
        }
    }
    users
}

async fn provision(
    driver: &Arc<dyn NodeDriver>,
    node: &Node,
    steps: &Step,
    mut creds: Credentials,
    options: &DeployOptions,
    entry: Option<&NodeEntry>,
) -> Result<Deployment, DeploymentError> {
    let failed = |cause| DeploymentError {
        node: Some(node.clone()),
        step: None,
        cause,
        attempts: Vec::new(),
        completed: Vec::new(),
        journal: None,
    };
    options.emit(Event::Waiting);
    let ready = wait_for(driver.as_ref(), node, options)
        .await
        .map_err(|e| failed(Cause::Wait(e)))?;
    let mut node = ready.node;
    if driver.features().generates_password {
        if let Some(pw) = node.password() {
            creds.password.get_or_insert(Password(pw.to_string()));
        }
    }
    // A password this deployment logs in with is the node's password (as Libcloud records it).
    if let (Some(NodeAuth::Password(pw)), None) = (&options.auth, node.password()) {
        node.set_password(pw);
    }
    let users = login_users(options, &node);
    let pinned = node.host_keys();
    let addr = SocketAddr::new(
        ready.addresses[0],
        options.port.unwrap_or_else(|| node.ssh_port()),
    );
    options.emit(Event::Running(node.clone(), addr));
    if let Some(entry) = entry {
        entry.running(&addr.ip().to_string()).await;
    }
    let target = Target {
        addr,
        users,
        pinned_host_keys: pinned,
        node: Some(node.clone()),
        journal: entry.cloned(),
        created: true,
        driver: Some(driver.clone()),
        ssh: TargetSsh::configured(options, &addr.ip().to_string())
            .map_err(|e| failed(Cause::Invalid(e.to_string())))?,
    };
    match run_steps(&target, steps, &creds, options).await {
        Ok(run) => Ok(Deployment {
            node,
            user: run.user,
            steps: run.steps,
            reconnects: run.reconnects,
            journal: None,
        }),
        Err(f) => Err(DeploymentError {
            node: Some(node),
            step: f.step,
            cause: f.cause,
            attempts: f.attempts,
            completed: f.completed,
            journal: None,
        }),
    }
}
