//! What `deploy`, `run` and `reinstall` share: the login flags (turned into what the command line
//! said, for [`nodeup::engine::settings`]), the fleet flags, and signal handling.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use tokio_util::sync::CancellationToken;

use nodeup::deploy::stepfile::{parse_positive_duration, StepFile};
use nodeup::engine::settings::{self, ConfigSource, Purpose, Said};
use nodeup::engine::{DeployOptions, Event};
use nodeup::model::Node;
use nodeup::roster::Shard;
use nodeup::ssh::{Hop, HostKeyPolicy};

use super::Failure;

/// Login options shared by `deploy`, `run` and `reinstall`; each overrides the step file's `[ssh]`.
#[derive(Debug, Args)]
pub struct SshArgs {
    /// The first username to log in as (default: the step file's, else the image's login user
    /// when the provider reports one, then root).
    #[arg(long, value_name = "USER")]
    pub ssh_user: Option<String>,
    /// A username to try after it (repeatable).
    #[arg(long = "alt-user", value_name = "USER")]
    pub alt_users: Vec<String>,
    /// A private key file (repeatable). Its passphrase, if any, comes from NODEUP_KEY_PASSPHRASE.
    #[arg(long = "key", value_name = "PATH")]
    pub keys: Vec<PathBuf>,
    /// The known_hosts file to check host keys against.
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// strict, accept-new or off.
    #[arg(long, value_name = "POLICY")]
    pub host_key_policy: Option<HostKeyPolicy>,
    /// How long to wait for the node to run and accept a login, e.g. 5m.
    #[arg(long, value_parser = parse_positive_duration)]
    pub timeout: Option<Duration>,
    /// How many connections the steps may use in all (a lost one is resumed on the next); 1 or more.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tries: Option<u32>,
    /// Read this OpenSSH client config instead of ~/.ssh/config and /etc/ssh/ssh_config
    /// (`none`: read none).
    #[arg(long = "ssh-config", short = 'F', value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Reach the nodes through these jump hosts: [user@]host[:port], a comma-separated chain as
    /// `ssh -J` takes (repeatable: the chain goes on).
    #[arg(long = "jump", short = 'J', value_name = "HOPS")]
    pub jump: Vec<String>,
    /// Log in on IPv4 addresses only: true (the default, as Libcloud's) or false (IPv6 too).
    #[arg(long, value_name = "BOOL")]
    pub force_ipv4: Option<bool>,
    /// A failed step runs the whole list of steps again, up to --max-tries runs in all
    /// (Libcloud's max_tries); off by default: a failed step fails.
    #[arg(long)]
    pub retry_failed_steps: bool,
}

impl SshArgs {
    /// What these flags said.
    ///
    /// # Errors
    /// A `--jump` hop that is not `[user@]host[:port]`.
    pub fn said(&self) -> Result<Said, Failure> {
        let mut jump = Vec::new();
        for chain in &self.jump {
            jump.extend(
                Hop::parse_chain(chain).map_err(|e| Failure::Usage(anyhow!("--jump: {e}")))?,
            );
        }
        Ok(Said {
            ssh_user: self.ssh_user.clone(),
            alternate_usernames: self.alt_users.clone(),
            keys: self.keys.clone(),
            known_hosts: self.known_hosts.clone(),
            host_key_policy: self.host_key_policy,
            timeout: self.timeout,
            max_tries: self.max_tries,
            jump,
            ssh_config: ConfigSource::from_flag(self.ssh_config.clone()),
            force_ipv4: self.force_ipv4,
            retry_failed_steps: self.retry_failed_steps.then_some(true),
        })
    }

    /// The deployment's options: these flags over the step file over the OpenSSH client config,
    /// for machines of `purpose`.
    ///
    /// # Errors
    /// A bad `--jump`, or a config that cannot be read or used.
    pub fn options(
        &self,
        file: Option<&StepFile>,
        purpose: Purpose,
    ) -> Result<DeployOptions, Failure> {
        settings::resolve(&self.said()?, file, purpose).map_err(|e| Failure::Usage(e.into()))
    }
}

/// The flags of a command that works on many machines at once (`deploy`, `run`).
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// How many machines are worked on at once (default: see `engine::fleet::parallel`).
    #[arg(long, value_parser = positive)]
    pub parallel: Option<usize>,
    /// How many connections may be being set up (handshake, login) at once.
    #[arg(long, default_value_t = nodeup::engine::fleet::DEFAULT_MAX_STARTUPS, value_parser = positive)]
    pub max_startups: usize,
    /// Only the K-th of N parts of the machines (K/N), for N nodeup processes in parallel.
    #[arg(long, value_name = "K/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// Write each machine's progress and script output to DIR/NAME.log.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Show script output live even with the fleet view.
    #[arg(long)]
    pub follow: bool,
}

impl FleetArgs {
    /// A semaphore that bounds the connections being set up at once (`--max-startups`).
    pub fn startups(&self) -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(self.max_startups))
    }
}

/// A count of 1 or more (`--parallel`, `--count` ...).
pub fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?}: give a whole number, 1 or more")),
    }
}

/// What a second Ctrl+C must be able to name: the nodes created so far, and how many create
/// calls are in flight (a node the provider is making now exists once it answers).
#[derive(Clone)]
pub struct Created {
    nodes: Arc<Mutex<Vec<Node>>>,
    in_flight: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Default for Created {
    fn default() -> Self {
        Created {
            nodes: Arc::default(),
            in_flight: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl Created {
    /// Follows the deployment's events: counts create calls in flight, records created nodes.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::Creating(_) => self.in_flight.send_modify(|n| *n += 1),
            Event::Created(node) => {
                self.nodes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(node.clone());
                self.in_flight.send_modify(|n| *n = n.saturating_sub(1));
            }
            _ => {}
        }
    }

    /// Waits (at most `limit`) until no create call is in flight, then returns the nodes.
    async fn settled(&self, limit: Duration) -> Vec<Node> {
        let mut in_flight = self.in_flight.subscribe();
        if *in_flight.borrow() > 0 {
            eprintln!("waiting for the provider to answer the create call, to name the node");
            let _ = tokio::time::timeout(limit, in_flight.wait_for(|n| *n == 0)).await;
        }
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How long a second Ctrl+C waits for a create call in flight to answer, so that the node it
/// makes is named rather than left unknown (an OVH create answers within its request timeout).
const CREATE_ANSWER_WAIT: Duration = Duration::from_secs(90);

/// Cancels `token` on the first Ctrl+C or SIGTERM; on the second, says what is left and exits
/// (after any create call in flight has answered, so that its node is named too).
pub fn cancel_on_signals(token: CancellationToken, created: Created) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot watch SIGTERM: {e}");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                eprintln!("cancelling: cleaning up what was created (again to stop at once)");
                token.cancel();
            } else {
                for node in created.settled(CREATE_ANSWER_WAIT).await {
                    eprintln!(
                        "stopping now: node {} ({}) may be left; destroy it with `nodeup nodes destroy {} --provider {}`",
                        node.name, node.id, node.id, node.provider
                    );
                }
                std::process::exit(1);
            }
        }
    });
}
