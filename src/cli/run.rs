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

use nodeup::deploy::stepfile;
use nodeup::engine::fleet::{run_fleet, Counts, Outcome, RunMember, RunOutcome};
use nodeup::engine::settings::{self, KeyChoice, MachineGiven, Purpose};
use nodeup::engine::{preferred, DeployOptions, Target, TargetSsh};
use nodeup::journal::{RunEnd, RunStart};
use nodeup::providers;
use nodeup::roster::{parse_host, Inventory};
use nodeup::ssh::{load_certificate, Credentials};

use super::common::{cancel_on_signals, Created, FleetArgs, SshArgs};
use super::fleet_view::{failure_lines, print_summary, FleetView, SummaryRow};
use super::output::{print_json, FleetReport, NodeReport};
use super::Failure;

/// `nodeup run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The step file (TOML): how to log in, the steps (its `[node]` is not used).
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
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// A machine to run on, wherever it was named: how it is shown, what it says of itself, and what
/// its provider reports (more users to try, its host keys).
#[derive(Debug, Clone, Default)]
struct Machine {
    label: String,
    given: MachineGiven,
    more_users: Vec<String>,
    pinned: Vec<String>,
}

/// Runs `nodeup run`.
pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let file = stepfile::load(&args.stepfile).map_err(|e| Failure::Usage(e.into()))?;
    let mut machines = machines(&args).await?;
    if let Some(shard) = args.fleet.shard {
        machines = shard.pick(machines);
    }
    let purpose = Purpose::Run {
        provider_nodes: args.nodes.is_some(),
    };
    let mut options = args.ssh.options(Some(&file), purpose)?;
    options.startups = Some(args.fleet.startups());
    let prepared = prepare(machines, &options).await?;
    let journal = super::journal::begin_run(RunStart::with_stepfile("run", &args.stepfile)).await?;
    options.journal = journal.clone();
    cancel_on_signals(options.cancel.clone(), Created::default());

    let labels: Vec<String> = prepared.iter().map(|p| p.machine.label.clone()).collect();
    let view = FleetView::new(
        labels.clone(),
        args.fleet.follow,
        args.fleet.log_dir.clone(),
    )
    .map_err(|e| Failure::Usage(e.into()))?;
    let addresses: Vec<SocketAddr> = prepared.iter().map(|p| p.addr).collect();
    let mut rows: Vec<Option<SummaryRow>> = vec![None; prepared.len()];
    let mut reports: Vec<Option<NodeReport>> = vec![None; prepared.len()];
    let member_options = options.clone();
    let members = prepared.into_iter().map(|p| p.member(&member_options));
    let hooks = view.hooks(None);
    let json = args.json;
    run_fleet(
        members,
        &file.steps,
        &options,
        args.fleet.parallel,
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
    let counts = Counts::of(rows.iter().map(|r| r.outcome));
    if let Some(journal) = &journal {
        let end = match () {
            _ if counts.all_ok() => RunEnd::Done,
            _ if options.cancel.is_cancelled() => RunEnd::Cancelled,
            _ => RunEnd::Failed,
        };
        journal.finish_run(end).await;
    }
    match counts.failure("hosts") {
        Some(failure) => Err(Failure::Failed(anyhow!(failure))),
        None => Ok(()),
    }
}

/// The machines named by --host, --inventory (with --limit) and --nodes, in that order.
async fn machines(args: &RunArgs) -> Result<Vec<Machine>, Failure> {
    let mut machines = Vec::new();
    for text in &args.hosts {
        let spec = parse_host(text)
            .map_err(|e| Failure::Usage(anyhow::Error::new(e).context("--host")))?;
        machines.push(Machine {
            label: text.clone(),
            given: MachineGiven {
                host: spec.host,
                port: spec.port,
                user: spec.user,
                key_file: None,
            },
            ..Default::default()
        });
    }
    if let Some(path) = &args.inventory {
        let inventory = Inventory::load(path).map_err(|e| Failure::Usage(e.into()))?;
        let pattern = args.limit.as_deref().unwrap_or("all");
        let hosts = inventory.limit(pattern).map_err(|e| {
            Failure::Usage(anyhow::Error::new(e).context(path.display().to_string()))
        })?;
        machines.extend(hosts.into_iter().map(|h| Machine {
            label: h.name,
            given: MachineGiven {
                host: h.address,
                port: h.port,
                user: h.user,
                key_file: h.key_file,
            },
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
                given: MachineGiven {
                    host: address,
                    port: Some(n.ssh_port()),
                    ..Default::default()
                },
                more_users: n.login_user().map(str::to_string).into_iter().collect(),
                pinned: n.host_keys(),
            })
        })
        .collect())
}

/// A machine ready to run on: resolved, with its credentials. Kept small: the fleet's member
/// (with its session options) is made from it only when a slot is free.
struct Prepared {
    machine: Machine,
    addr: SocketAddr,
    /// The first user to log in as.
    user: String,
    creds: Arc<Credentials>,
    /// What the OpenSSH client config says of the machine, where nothing else did.
    ssh: TargetSsh,
}

impl Prepared {
    /// The member: the machine's user first, then the alternates and the provider's login user.
    fn member(self, options: &DeployOptions) -> RunMember {
        let machine = self.machine;
        let mut users = vec![self.user];
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

/// Each machine with what is decided for it ([`settings::for_machine`]), resolved, with its
/// credentials (key files loaded once each).
async fn prepare(
    machines: Vec<Machine>,
    options: &DeployOptions,
) -> Result<Vec<Prepared>, Failure> {
    let mut keys = Keys::new(options)?;
    let mut said_ignored = std::collections::BTreeSet::new();
    let mut prepared = Vec::with_capacity(machines.len());
    for machine in machines {
        let decided =
            settings::for_machine(options, &machine.given).map_err(|e| Failure::Usage(e.into()))?;
        said_ignored.extend(decided.ignored.iter().cloned());
        let addr = resolve(&machine.label, &decided.host, decided.port).await?;
        let creds = keys.for_machine(&machine.label, &decided.keys)?;
        prepared.push(Prepared {
            machine,
            addr,
            user: decided.user,
            creds,
            ssh: decided.ssh,
        });
    }
    if !said_ignored.is_empty() {
        let list: Vec<String> = said_ignored.into_iter().collect();
        tracing::info!("ssh config: not applied by nodeup: {}", list.join(", "));
    }
    Ok(prepared)
}

/// Credentials by where they come from, each loaded once: the deployment's (command line, step
/// file, or the user's defaults), or key files (an inventory host's, the config's `IdentityFile`s).
struct Keys<'a> {
    options: &'a DeployOptions,
    default: Arc<Credentials>,
    loaded: HashMap<KeyChoice, Arc<Credentials>>,
}

impl<'a> Keys<'a> {
    fn new(options: &'a DeployOptions) -> Result<Self, Failure> {
        let default = Arc::new(options.credentials().map_err(key_usage)?);
        Ok(Keys {
            options,
            default,
            loaded: HashMap::new(),
        })
    }

    /// A machine's credentials, as `choice` says.
    fn for_machine(
        &mut self,
        label: &str,
        choice: &KeyChoice,
    ) -> Result<Arc<Credentials>, Failure> {
        let KeyChoice::Files {
            files,
            certificate,
            agent,
        } = choice
        else {
            if self.default.is_empty() {
                return Err(Failure::Usage(anyhow!(
                    "{label}: no way to log in: give a private key file (--key), \
                     NODEUP_SSH_PASSWORD, or run an ssh-agent"
                )));
            }
            return Ok(self.default.clone());
        };
        if let Some(creds) = self.loaded.get(choice) {
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
            Credentials::from_key_files(files, passphrase).map_err(key_usage)?
        };
        if let Some(path) = certificate {
            creds
                .certificates
                .push(load_certificate(path).map_err(key_usage)?);
        }
        if *agent {
            creds.agent = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
        }
        creds.password = self.options.password.clone();
        let creds = Arc::new(creds);
        self.loaded.insert(choice.clone(), creds.clone());
        Ok(creds)
    }
}

fn key_usage(e: nodeup::ssh::Error) -> Failure {
    Failure::Usage(anyhow::Error::new(e))
}

/// A machine's address: `host` as an IP, else as the system resolves it.
async fn resolve(label: &str, host: &str, port: u16) -> Result<SocketAddr, Failure> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Failure::Usage(anyhow!("{label}: cannot resolve {host}")))
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
        outcome: Outcome::of_run(outcome),
        fate: None,
        time: elapsed,
        failed_step: String::new(),
        stderr_tail: Vec::new(),
    };
    match outcome {
        None => {}
        Some(Ok(run)) => row.user = run.user.clone(),
        Some(Err(failure)) => {
            if let Some((index, kind)) = failure.step {
                row.failed_step = format!("{index} {kind}");
            }
            row.stderr_tail = failure_lines(&failure.cause);
        }
    }
    row
}
