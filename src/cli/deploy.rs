//! `nodeup deploy STEPFILE`: create a node and provision it; on failure destroy it (unless
//! --keep-on-failure) and say which; Ctrl+C or SIGTERM once cancels and cleans up, twice stops at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use tokio_util::sync::CancellationToken;

use nodeup::deploy::stepfile::{self, parse_positive_duration, StepFile};
use nodeup::engine::fleet::{deploy_fleet, Fate, FleetMember, FleetOptions, MemberResult};
use nodeup::engine::{self, destroy_at_exit, Cause, DeployOptions, Event};
use nodeup::fleet::Shard;
use nodeup::journal::{RunEnd, RunStart};
use nodeup::model::{CreateNode, Node};
use nodeup::providers;
use nodeup::ssh::{Hop, HostKeyPolicy, Password, SshConfig};

use super::fleet_view::{failure_lines, print_summary, FleetView, SummaryRow};
use super::output::{self, print_json, FailedStep, FleetReport, NodeReport, StepReport};
use super::Failure;

/// Login options shared by `deploy` and `run`; each overrides the step file's `[ssh]`.
#[derive(Debug, Args)]
pub struct SshArgs {
    /// The first username to log in as (default: the step file's, else root).
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
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Read this OpenSSH client config instead of ~/.ssh/config and /etc/ssh/ssh_config
    /// (`none`: read none).
    #[arg(long = "ssh-config", short = 'F', value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Reach the nodes through these jump hosts: [user@]host[:port], a comma-separated chain as
    /// `ssh -J` takes (repeatable: the chain goes on).
    #[arg(long = "jump", short = 'J', value_name = "HOPS")]
    pub jump: Vec<String>,
}

impl SshArgs {
    /// The OpenSSH client config: `--ssh-config`, else the user's and the system's.
    ///
    /// # Errors
    /// A file that cannot be read or used, named.
    pub fn ssh_config(&self) -> Result<SshConfig, Failure> {
        let config = match &self.ssh_config {
            Some(path) => SshConfig::load_file(path),
            None => SshConfig::load_default(),
        };
        config.map_err(|e| Failure::Usage(e.into()))
    }

    /// The jump hosts of `--jump`, else of the step file; empty for none.
    ///
    /// # Errors
    /// A hop that is not `[user@]host[:port]`.
    pub fn jump_hosts(&self, file: &StepFile) -> Result<Vec<Hop>, Failure> {
        if self.jump.is_empty() {
            return Ok(file.ssh.jump.clone());
        }
        let mut hops = Vec::new();
        for chain in &self.jump {
            hops.extend(
                Hop::parse_chain(chain).map_err(|e| Failure::Usage(anyhow!("--jump: {e}")))?,
            );
        }
        Ok(hops)
    }
}

/// `nodeup deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The step file.
    pub stepfile: PathBuf,
    /// The provider (default: the step file's, else local).
    #[arg(long)]
    pub provider: Option<String>,
    /// The node's name.
    #[arg(long)]
    pub name: Option<String>,
    /// The image id.
    #[arg(long)]
    pub image: Option<String>,
    /// The size id.
    #[arg(long)]
    pub size: Option<String>,
    /// The location id.
    #[arg(long)]
    pub location: Option<String>,
    /// Keep a node whose deployment fails (it is destroyed otherwise).
    #[arg(long)]
    pub keep_on_failure: bool,
    /// How many nodes to make (default: the step file's `count`, else 1); the name may hold
    /// {index} or {index:03}, else the nodes are NAME-1, NAME-2 ...
    #[arg(long, value_parser = positive)]
    pub count: Option<usize>,
    /// How many nodes are in flight at once (default: the provider's).
    #[arg(long, value_parser = positive)]
    pub parallel: Option<usize>,
    /// Once more than K nodes failed, start nothing new and cancel those in flight.
    #[arg(long, value_name = "K")]
    pub max_failures: Option<usize>,
    /// Any failure destroys the whole fleet.
    #[arg(long)]
    pub all_or_nothing: bool,
    /// Only the K-th of N parts of the fleet's nodes (K/N), for N nodeup processes in parallel.
    #[arg(long, value_name = "K/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// How many connections may be being set up (handshake, login) at once.
    #[arg(long, default_value_t = super::run::DEFAULT_MAX_STARTUPS, value_parser = positive)]
    pub max_startups: usize,
    /// Write each node's progress and script output to DIR/NAME.log.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Show script output live even with the fleet view.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// A count of 1 or more (`--parallel`, `--count` ...).
pub fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?}: give a whole number, 1 or more")),
    }
}

/// Deploy options from the step file's `[ssh]`, then the command line over it.
///
/// # Errors
/// An OpenSSH client config or a jump host that cannot be used.
pub fn options(
    file: &StepFile,
    ssh: &SshArgs,
    policy: HostKeyPolicy,
) -> Result<DeployOptions, Failure> {
    let mut options = DeployOptions {
        host_key_policy: policy,
        ..Default::default()
    };
    if let Some(user) = ssh.ssh_user.clone().or(file.ssh.username.clone()) {
        options.ssh_username = user;
    }
    options.alternate_usernames = file.ssh.alternate_usernames.clone();
    options
        .alternate_usernames
        .extend(ssh.alt_users.iter().cloned());
    options.ssh_keys = if ssh.keys.is_empty() {
        file.ssh.keys.clone()
    } else {
        ssh.keys.clone()
    };
    options.ssh_key_passphrase = std::env::var("NODEUP_KEY_PASSPHRASE").ok().map(Password);
    options.password = std::env::var("NODEUP_SSH_PASSWORD").ok().map(Password);
    options.port = file.ssh.port;
    if let Some(t) = file.ssh.timeout {
        options.ssh_timeout = t;
    }
    if let Some(t) = ssh.timeout.or(file.node.timeout) {
        options.timeout = t;
    }
    if let Some(n) = ssh.max_tries.or(file.ssh.max_tries) {
        options.max_tries = n;
    }
    if let Some(p) = ssh.host_key_policy.or(file.ssh.host_key_policy) {
        options.host_key_policy = p;
    }
    if let Some(k) = ssh.known_hosts.clone().or(file.ssh.known_hosts.clone()) {
        options.known_hosts = k;
    }
    if let Some(i) = file.ssh.interface {
        options.interface = i;
    }
    let config = Arc::new(ssh.ssh_config()?);
    options.jump = config
        .jump(&ssh.jump_hosts(file)?)
        .map_err(|e| Failure::Usage(e.into()))?;
    options.ssh_config = Some(config);
    Ok(options)
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

/// Runs `nodeup deploy`.
pub async fn run(args: DeployArgs) -> Result<(), Failure> {
    let file = stepfile::load(&args.stepfile).map_err(|e| Failure::Usage(e.into()))?;
    let provider = args
        .provider
        .clone()
        .or(file.node.provider.clone())
        .unwrap_or_else(|| "local".into());
    let driver = providers::get_driver_with(&provider, &file.provider)
        .map_err(|e| Failure::from(e).context(args.stepfile.display().to_string()))?;
    let requests = requests(&args, &file)?;
    let journal =
        super::journal::begin_run(RunStart::with_stepfile("deploy", &args.stepfile)).await?;
    let created = Created::default();
    let mut options = options(&file, &args.ssh, HostKeyPolicy::AcceptNew)?;
    options.at_exit = Some(destroy_at_exit());
    options.journal = journal.clone();
    options.startups = Some(Arc::new(tokio::sync::Semaphore::new(args.max_startups)));
    let names: Vec<String> = requests.iter().map(|r| r.name.clone()).collect();
    let view = FleetView::new(names, args.follow, args.log_dir.clone())
        .map_err(|e| Failure::Usage(e.into()))?;
    let record = created.clone();
    let hooks = view.hooks(Some(Arc::new(move |event: &Event| record.observe(event))));
    cancel_on_signals(options.cancel.clone(), created);
    let fleet = FleetOptions {
        parallel: args.parallel.unwrap_or_else(|| driver.default_parallel()),
        max_failures: args.max_failures,
        all_or_nothing: args.all_or_nothing,
        keep_on_failure: args.keep_on_failure,
    };
    tracing::info!("deploying {} node(s) on {provider}", requests.len());
    let members = deploy_fleet(driver, requests, &file.steps, &options, &fleet, &hooks).await;
    view.close();
    let end = match () {
        _ if options.cancel.is_cancelled() => RunEnd::Cancelled,
        _ if members
            .iter()
            .all(|m| matches!(m.result, MemberResult::Deployed(_))) =>
        {
            RunEnd::Done
        }
        _ => RunEnd::Failed,
    };
    let outcome = report(members, &args);
    if let Some(journal) = &journal {
        journal.finish_run(end).await;
    }
    outcome
}

/// The create requests of the fleet: `count` names from the name template, this shard's part.
fn requests(args: &DeployArgs, file: &StepFile) -> Result<Vec<CreateNode>, Failure> {
    let in_file =
        |message: String| Failure::Usage(anyhow!("{}: {message}", args.stepfile.display()));
    let name = args
        .name
        .clone()
        .or(file.node.name.clone())
        .ok_or_else(|| in_file("no node name: set `name` under [node] or pass --name".into()))?;
    let count = args.count.or(file.node.count).unwrap_or(1);
    let mut names = nodeup::fleet::node_names(&name, count).map_err(in_file)?;
    if let Some(shard) = args.shard {
        names = shard.pick(names);
    }
    Ok(names
        .into_iter()
        .map(|name| CreateNode {
            name,
            image: args.image.clone().or(file.node.image.clone()),
            size: args.size.clone().or(file.node.size.clone()),
            location: args.location.clone().or(file.node.location.clone()),
            auth: None,
            extra: file.node.options.clone(),
        })
        .collect())
}

/// Says what the fleet did: each failure and what became of its node, the summary table, the
/// JSON (one node's report, or the fleet's), and the exit code's failure.
fn report(members: Vec<FleetMember>, args: &DeployArgs) -> Result<(), Failure> {
    let single = members.len() == 1;
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    for member in &members {
        say(member, single);
        rows.push(summary_row(member));
        reports.push(node_report(member));
    }
    if !single {
        print_summary(&rows, "nodes");
    }
    if args.ssh.json {
        match reports.as_slice() {
            [one] => print_json(one),
            _ => print_json(&FleetReport::new(reports)),
        }
    }
    let failed = members
        .iter()
        .filter(|m| !matches!(m.result, MemberResult::Deployed(_)))
        .count();
    if failed == 0 {
        return Ok(());
    }
    let nothing_created =
        failed == members.len() && members.iter().all(|m| m.fate == Fate::NotCreated);
    let error = match members.into_iter().next() {
        Some(FleetMember {
            result: MemberResult::Failed(error),
            ..
        }) if single => anyhow::Error::new(error),
        _ => anyhow!("{failed} of {} nodes failed", rows.len()),
    };
    if nothing_created {
        Err(Failure::Usage(error))
    } else {
        Err(Failure::Failed(error))
    }
}

/// One member's outcome in words on stderr (a fleet's members are prefixed by their name).
fn say(member: &FleetMember, single: bool) {
    let tag = if single {
        String::new()
    } else {
        format!("[{}] ", member.name)
    };
    match &member.result {
        // A fleet's table says it.
        MemberResult::Deployed(_) if !single => {}
        MemberResult::Deployed(done) => eprintln!(
            "deployed node {} ({}) as {}: {} steps in {:.1}s",
            done.node.name,
            done.node.id,
            done.user,
            done.steps.len(),
            member.elapsed.as_secs_f64()
        ),
        MemberResult::Failed(error) => {
            if !single {
                eprintln!("{tag}{}", engine::error_chain(error));
            }
            if let Some(fate) = fate_text(member, error.node.as_ref()) {
                eprintln!("{tag}{fate}");
            }
        }
        MemberResult::NotStarted => eprintln!("{tag}not started: the fleet stopped first"),
    }
    if let (MemberResult::Deployed(done), Fate::Destroyed) = (&member.result, &member.fate) {
        eprintln!("{tag}node {} was destroyed with the fleet", done.node.name);
    }
}

/// What became of a failed member's node, in words.
fn fate_text(member: &FleetMember, node: Option<&Node>) -> Option<String> {
    let Some(node) = node else {
        return Some("nothing was created".into());
    };
    let destroy = format!(
        "nodeup nodes destroy {} --provider {}",
        node.id, node.provider
    );
    Some(match &member.fate {
        Fate::Kept => format!(
            "node {} ({}) was kept: log in to look, then `{destroy}`",
            node.name, node.id
        ),
        Fate::Destroyed => format!("node {} ({}) was destroyed", node.name, node.id),
        Fate::Left(why) => format!(
            "destroying node {} ({}) failed ({why}): destroy it with `{destroy}`",
            node.name, node.id
        ),
        Fate::Stays | Fate::NotCreated => return None,
    })
}

fn fate_word(fate: &Fate) -> &'static str {
    match fate {
        Fate::Stays => "stays",
        Fate::NotCreated => "not-created",
        Fate::Kept => "kept",
        Fate::Destroyed => "destroyed",
        Fate::Left(_) => "left",
    }
}

/// One member as `--json` prints it.
fn node_report(member: &FleetMember) -> NodeReport {
    let mut report = NodeReport {
        name: Some(member.name.clone()),
        fate: Some(fate_word(&member.fate)),
        duration: member.elapsed.as_secs_f64(),
        ..NodeReport::empty()
    };
    match &member.result {
        MemberResult::Deployed(done) => {
            report.ok = member.fate == Fate::Stays;
            report.node = Some(output::shown(&done.node));
            report.user = Some(done.user.clone());
            report.reconnects = Some(done.reconnects);
            report.steps = StepReport::all(&done.steps);
        }
        MemberResult::Failed(error) => {
            report.node = error.node.as_ref().map(output::shown);
            report.node_kept = Some(member.fate == Fate::Kept);
            report.error = Some(engine::error_chain(error));
            report.failed_step = FailedStep::new(error.step, &error.cause);
            report.logins = error.attempts.clone();
            report.steps = StepReport::all(&error.completed);
        }
        MemberResult::NotStarted => report.error = Some("cancelled".into()),
    }
    report
}

/// One member's line of the summary table.
fn summary_row(member: &FleetMember) -> SummaryRow {
    let mut row = SummaryRow {
        name: member.name.clone(),
        address: String::new(),
        user: String::new(),
        result: String::new(),
        time: member.elapsed,
        failed_step: String::new(),
        stderr_tail: Vec::new(),
    };
    let address = |node: &Node| {
        node.public_ips
            .first()
            .map(|ip| ip.to_string())
            .unwrap_or_default()
    };
    match &member.result {
        MemberResult::Deployed(done) => {
            row.address = address(&done.node);
            row.user = done.user.clone();
            row.result = match member.fate {
                Fate::Stays => "ok".into(),
                _ => format!("undone ({})", fate_word(&member.fate)),
            };
        }
        MemberResult::Failed(error) => {
            row.address = error.node.as_ref().map(address).unwrap_or_default();
            row.result = match error.cause {
                Cause::Cancelled => format!("cancelled ({})", fate_word(&member.fate)),
                _ => format!("failed ({})", fate_word(&member.fate)),
            };
            if let Some((index, kind)) = error.step {
                row.failed_step = format!("{index} {kind}");
            }
            row.stderr_tail = match error.cause {
                Cause::Cancelled => Vec::new(),
                _ => failure_lines(&error.cause),
            };
        }
        MemberResult::NotStarted => row.result = "not started".into(),
    }
    row
}
