//! `nodeup run STEPFILE`: the same steps on machines that exist, from `--host` flags, an inventory
//! (a plain list or Ansible's INI) or a provider's running nodes; at most `--parallel` at once,
//! with a bounded number of connections being set up, a live view on a terminal, and a summary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use nodeup::deploy::stepfile::{self, StepFile};
use nodeup::engine::fleet::{run_fleet, RunMember, RunOutcome, DEFAULT_PARALLEL};
use nodeup::engine::{default_known_hosts, preferred, DeployOptions, Target, TargetSsh};
use nodeup::fleet::{parse_host, Inventory, Shard};
use nodeup::journal::{RunEnd, RunStart};
use nodeup::providers;
use nodeup::ssh::{load_certificate, Credentials, HostConfig, HostKeyPolicy, SshConfig};

use super::deploy::{cancel_on_signals, options, positive, SshArgs};
use super::fleet_view::{failure_lines, print_summary, FleetView, SummaryRow};
use super::output::{print_json, FleetReport, NodeReport};
use super::Failure;

/// How many connections may be being set up at once unless told otherwise: sshd's default
/// `MaxStartups 10:30:100` starts dropping new connections beyond 10.
pub const DEFAULT_MAX_STARTUPS: usize = 10;

/// `nodeup run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The step file.
    pub stepfile: PathBuf,
    /// A machine: [user@]address[:port], IPv6 as [address]:port (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// An inventory: a plain list ([user@]host[:port] a line) or an Ansible INI inventory.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// With --inventory: only these groups, hosts or globs (web,db:!db3, as Ansible's --limit).
    #[arg(long, value_name = "PATTERN", requires = "inventory")]
    pub limit: Option<String>,
    /// A provider's running nodes, optionally those whose name matches a glob: local:web-*.
    #[arg(long, value_name = "PROVIDER[:GLOB]")]
    pub nodes: Option<String>,
    /// How many machines are worked on at once.
    #[arg(long, default_value_t = DEFAULT_PARALLEL, value_parser = positive)]
    pub parallel: usize,
    /// How many connections may be being set up (handshake, login) at once.
    #[arg(long, default_value_t = DEFAULT_MAX_STARTUPS, value_parser = positive)]
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
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// A machine to run on, wherever it was named.
#[derive(Debug, Clone, Default)]
struct Machine {
    label: String,
    host: String,
    port: Option<u16>,
    user: Option<String>,
    key_file: Option<PathBuf>,
    more_users: Vec<String>,
    pinned: Vec<String>,
}

/// Runs `nodeup run`.
pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let file = stepfile::load(&args.stepfile).map_err(|e| Failure::Usage(e.into()))?;
    let mut machines = machines(&args).await?;
    if let Some(shard) = args.shard {
        machines = shard.pick(machines);
    }
    let options = run_options(&file, &args)?;
    let prepared = prepare(machines, &file, &args, &options).await?;
    let journal = super::journal::begin_run(RunStart::with_stepfile("run", &args.stepfile)).await?;
    let mut options = options;
    options.journal = journal.clone();
    cancel_on_signals(options.cancel.clone(), super::deploy::Created::default());

    let labels: Vec<String> = prepared.iter().map(|p| p.machine.label.clone()).collect();
    let view = FleetView::new(labels.clone(), args.follow, args.log_dir.clone())
        .map_err(|e| Failure::Usage(e.into()))?;
    let addresses: Vec<SocketAddr> = prepared.iter().map(|p| p.addr).collect();
    let mut rows: Vec<Option<SummaryRow>> = vec![None; prepared.len()];
    let mut reports: Vec<Option<NodeReport>> = vec![None; prepared.len()];
    let member_options = options.clone();
    let members = prepared.into_iter().map(|p| p.member(&member_options));
    let hooks = view.hooks(None);
    let json = args.ssh.json;
    run_fleet(
        members,
        &file.steps,
        &options,
        args.parallel,
        &hooks,
        |i, outcome, elapsed| {
            rows[i] = Some(summary_row(&labels[i], &addresses[i], &outcome, elapsed));
            if json {
                reports[i] = Some(NodeReport::of_run(&labels[i], &outcome, elapsed));
            }
        },
    )
    .await;
    view.close();
    let rows: Vec<SummaryRow> = rows.into_iter().flatten().collect();
    print_summary(&rows, "hosts");
    let report = FleetReport::new(reports.into_iter().flatten().collect());
    if json {
        print_json(&report);
    }
    let failed = rows.iter().filter(|r| !r.result.starts_with("ok")).count();
    if let Some(journal) = &journal {
        let end = match failed {
            0 => RunEnd::Done,
            _ if options.cancel.is_cancelled() => RunEnd::Cancelled,
            _ => RunEnd::Failed,
        };
        journal.finish_run(end).await;
    }
    if failed > 0 {
        return Err(Failure::Failed(anyhow!(
            "{failed} of {} hosts failed",
            rows.len()
        )));
    }
    Ok(())
}

/// Deploy options for machines that exist: checked strictly against the user's own known_hosts
/// (nodeup's, for a provider's nodes), with the startups bounded.
fn run_options(file: &StepFile, args: &RunArgs) -> Result<DeployOptions, Failure> {
    let mut options = options(file, &args.ssh, HostKeyPolicy::Strict)?;
    if args.ssh.known_hosts.is_none() && file.ssh.known_hosts.is_none() {
        options.known_hosts = match (&args.nodes, std::env::var_os("HOME")) {
            (Some(_), _) => default_known_hosts(),
            (None, Some(home)) => PathBuf::from(home).join(".ssh/known_hosts"),
            (None, None) => options.known_hosts,
        };
    }
    options.startups = Some(Arc::new(tokio::sync::Semaphore::new(args.max_startups)));
    Ok(options)
}

/// The machines named by --host, --inventory (with --limit) and --nodes, in that order.
async fn machines(args: &RunArgs) -> Result<Vec<Machine>, Failure> {
    let mut machines = Vec::new();
    for text in &args.hosts {
        let spec = parse_host(text).map_err(|e| Failure::Usage(anyhow!("--host {e}")))?;
        machines.push(Machine {
            label: text.clone(),
            host: spec.host,
            port: spec.port,
            user: spec.user,
            ..Default::default()
        });
    }
    if let Some(path) = &args.inventory {
        let inventory = Inventory::load(path).map_err(|e| Failure::Usage(e.into()))?;
        let pattern = args.limit.as_deref().unwrap_or("all");
        let hosts = inventory
            .limit(pattern)
            .map_err(|e| Failure::Usage(anyhow!("{}: {e}", path.display())))?;
        machines.extend(hosts.into_iter().map(|h| Machine {
            label: h.name,
            host: h.address,
            port: h.port,
            user: h.user,
            key_file: h.key_file,
            ..Default::default()
        }));
    }
    if let Some(spec) = &args.nodes {
        machines.extend(provider_nodes(spec).await?);
    }
    if machines.is_empty() {
        let what = if args.hosts.is_empty() && args.inventory.is_none() && args.nodes.is_none() {
            "no machines: give --host, --inventory or --nodes"
        } else {
            "no machines selected (check --limit or the --nodes glob)"
        };
        return Err(Failure::Usage(anyhow!(what)));
    }
    Ok(machines)
}

/// `--nodes PROVIDER[:GLOB]`: the provider's running nodes whose name matches, with the login user
/// and host keys the provider reports.
async fn provider_nodes(spec: &str) -> Result<Vec<Machine>, Failure> {
    let (provider, pattern) = spec.split_once(':').unwrap_or((spec, "*"));
    let glob = glob::Pattern::new(pattern)
        .map_err(|e| Failure::Usage(anyhow!("--nodes {spec}: {pattern:?} is not a glob ({e})")))?;
    let driver = providers::get_driver(provider)?;
    let nodes = driver.list_nodes().await?;
    Ok(nodes
        .into_iter()
        .filter(|n| n.state == nodeup::model::NodeState::Running && glob.matches(&n.name))
        .filter_map(|n| {
            let ips: Vec<_> = n.public_ips.iter().chain(&n.private_ips).copied().collect();
            let address = preferred(&ips).first()?.to_string();
            Some(Machine {
                label: n.name.clone(),
                host: address,
                port: Some(n.ssh_port()),
                more_users: n.login_user().map(str::to_string).into_iter().collect(),
                pinned: n.host_keys(),
                ..Default::default()
            })
        })
        .collect())
}

/// A machine ready to run on: resolved, with its credentials. Kept small: the fleet's member
/// (with its session options) is made from it only when a slot is free.
struct Prepared {
    machine: Machine,
    addr: SocketAddr,
    creds: Arc<Credentials>,
    /// What the OpenSSH client config says of the machine, where nothing else did.
    ssh: TargetSsh,
}

impl Prepared {
    /// The member: the machine's user first, then the alternates and the provider's login user.
    fn member(self, options: &DeployOptions) -> RunMember {
        let machine = self.machine;
        let mut users = vec![machine.user.unwrap_or(options.ssh_username.clone())];
        for user in options
            .alternate_usernames
            .iter()
            .chain(&machine.more_users)
        {
            if !users.contains(user) {
                users.push(user.clone());
            }
        }
        RunMember {
            label: machine.label,
            target: Target {
                addr: self.addr,
                users,
                pinned_host_keys: machine.pinned,
                node: None,
                journal: None,
                created: false,
                driver: None,
                ssh: self.ssh,
            },
            creds: self.creds,
        }
    }
}

/// Each machine resolved, with its credentials (key files loaded once each) and what the OpenSSH
/// client config says of it. Precedence as OpenSSH's: the machine's own `user@host:port` and the
/// command line, then the step file, then the config.
async fn prepare(
    machines: Vec<Machine>,
    file: &StepFile,
    args: &RunArgs,
    options: &DeployOptions,
) -> Result<Vec<Prepared>, Failure> {
    let config = options.ssh_config.clone().unwrap_or_default();
    let explicit_user = args.ssh.ssh_user.clone().or(file.ssh.username.clone());
    let mut keys = Keys::new(
        options,
        !args.ssh.keys.is_empty() || !file.ssh.keys.is_empty(),
    )?;
    let mut said_ignored = std::collections::BTreeSet::new();
    let mut prepared = Vec::with_capacity(machines.len());
    for mut machine in machines {
        let said = config
            .host(&machine.host)
            .map_err(|e| Failure::Usage(e.into()))?;
        said_ignored.extend(said.ignored.iter().cloned());
        if let Some(name) = &said.host_name {
            machine.host = name.clone();
        }
        machine.port = machine.port.or(file.ssh.port).or(said.port);
        machine.user = machine.user.or(explicit_user.clone()).or(said.user.clone());
        let addr = resolve(&machine, None).await?;
        let creds = keys.for_machine(&machine, &said)?;
        let ssh = target_ssh(&config, &said, file, args, options)?;
        prepared.push(Prepared {
            machine,
            addr,
            creds,
            ssh,
        });
    }
    if !said_ignored.is_empty() {
        let list: Vec<String> = said_ignored.into_iter().collect();
        tracing::info!("ssh config: not applied by nodeup: {}", list.join(", "));
    }
    Ok(prepared)
}

/// The SSH settings the config gives a machine where the command line and step file gave none.
fn target_ssh(
    config: &SshConfig,
    said: &HostConfig,
    file: &StepFile,
    args: &RunArgs,
    options: &DeployOptions,
) -> Result<TargetSsh, Failure> {
    let usage = |e: nodeup::ssh::config::ConfigError| Failure::Usage(e.into());
    let jump = match (&options.jump, &said.proxy_jump) {
        (None, Some(hops)) => config.jump(hops).map_err(usage)?,
        _ => None,
    };
    let known_hosts_given = args.ssh.known_hosts.is_some() || file.ssh.known_hosts.is_some();
    let policy_given = args.ssh.host_key_policy.is_some() || file.ssh.host_key_policy.is_some();
    Ok(TargetSsh {
        jump,
        known_hosts: said.known_hosts.clone().filter(|_| !known_hosts_given),
        host_key_policy: said.host_key_policy.filter(|_| !policy_given),
        connect_timeout: said.connect_timeout.filter(|_| file.ssh.timeout.is_none()),
        keepalive: said.server_alive_interval,
    })
}

/// Credentials by where they come from, each loaded once: the deployment's (command line, step
/// file, or the user's defaults), an inventory host's key file, the config's `IdentityFile`s.
struct Keys<'a> {
    options: &'a DeployOptions,
    /// Keys were given on the command line or in the step file: the config's are not used.
    given: bool,
    default: Arc<Credentials>,
    loaded: HashMap<(Vec<PathBuf>, bool), Arc<Credentials>>,
}

impl<'a> Keys<'a> {
    fn new(options: &'a DeployOptions, given: bool) -> Result<Self, Failure> {
        let default = Arc::new(options.credentials().map_err(key_usage)?);
        Ok(Keys {
            options,
            given,
            default,
            loaded: HashMap::new(),
        })
    }

    /// A machine's credentials: its inventory key file, else the config's `IdentityFile`s (and
    /// `CertificateFile`; the agent too unless `IdentitiesOnly`) when no keys were given, else
    /// the deployment's.
    fn for_machine(
        &mut self,
        machine: &Machine,
        said: &HostConfig,
    ) -> Result<Arc<Credentials>, Failure> {
        let (files, agent) = match &machine.key_file {
            Some(path) => (vec![path.clone()], false),
            None if !self.given => {
                let files: Vec<PathBuf> = said
                    .identity_files
                    .iter()
                    .filter(|f| f.exists())
                    .cloned()
                    .collect();
                (files, !said.identities_only)
            }
            None => (Vec::new(), false),
        };
        if files.is_empty() && said.certificate_file.is_none() {
            if self.default.is_empty() {
                return Err(Failure::Usage(anyhow!(
                    "{}: no way to log in: give a private key file (--key), NODEUP_SSH_PASSWORD, \
                     or run an ssh-agent",
                    machine.label
                )));
            }
            return Ok(self.default.clone());
        }
        let key = (files.clone(), agent);
        if let Some(creds) = self.loaded.get(&key) {
            return Ok(creds.clone());
        }
        let passphrase = self
            .options
            .ssh_key_passphrase
            .as_ref()
            .map(|p| p.0.as_str());
        let mut creds = if files.is_empty() {
            (*self.default).clone()
        } else {
            Credentials::from_key_files(&files, passphrase).map_err(key_usage)?
        };
        if let Some(path) = &said.certificate_file {
            creds
                .certificates
                .push(load_certificate(path).map_err(key_usage)?);
        }
        if agent {
            creds.agent = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
        }
        creds.password = self.options.password.clone();
        let creds = Arc::new(creds);
        self.loaded.insert(key, creds.clone());
        Ok(creds)
    }
}

fn key_usage(e: nodeup::ssh::Error) -> Failure {
    Failure::Usage(anyhow::Error::new(e))
}

/// A machine's address (port: its own, else `default_port`, else 22).
async fn resolve(machine: &Machine, default_port: Option<u16>) -> Result<SocketAddr, Failure> {
    let port = machine.port.or(default_port).unwrap_or(22);
    if let Ok(ip) = machine.host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((machine.host.as_str(), port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            Failure::Usage(anyhow!(
                "{}: cannot resolve {}",
                machine.label,
                machine.host
            ))
        })
}

/// One host's line of the summary.
fn summary_row(
    label: &str,
    address: &SocketAddr,
    outcome: &RunOutcome,
    elapsed: Duration,
) -> SummaryRow {
    let mut row = SummaryRow {
        name: label.to_string(),
        address: address.to_string(),
        user: String::new(),
        result: "cancelled".into(),
        time: elapsed,
        failed_step: String::new(),
        stderr_tail: Vec::new(),
    };
    match outcome {
        None => {}
        Some(Ok(run)) => {
            row.user = run.user.clone();
            row.result = "ok".into();
        }
        Some(Err(failure)) => {
            row.result = "failed".into();
            if let Some((index, kind)) = failure.step {
                row.failed_step = format!("{index} {kind}");
            }
            row.stderr_tail = failure_lines(&failure.cause);
        }
    }
    row
}
