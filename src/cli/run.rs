//! `nodeup run STEPFILE`: the same steps on machines that exist, from `--host` flags, an inventory
//! (a plain list or Ansible's INI) or a provider's running nodes; at most `--parallel` at once,
//! with a bounded number of connections being set up, a live view on a terminal, and a summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use nodeup::deploy::stepfile;
use nodeup::engine::fleet::{run_fleet, Counts, Outcome, RunOutcome};
use nodeup::engine::machines::{prepare, Machine};
use nodeup::engine::preferred;
use nodeup::engine::settings::{MachineGiven, Purpose};
use nodeup::journal::{RunEnd, RunStart};
use nodeup::providers;
use nodeup::roster::{parse_host, Inventory};

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
    let prepared = prepare(machines, &options)
        .await
        .map_err(|e| Failure::Usage(e.into()))?;
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
    let members = prepared
        .into_iter()
        .map(|p| p.member(&member_options, false));
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
