//! `nodeup deploy STEPFILE`: create a node and provision it; on failure destroy it (unless
//! --keep-on-failure) and say which; Ctrl+C or SIGTERM once cancels and cleans up, twice stops at once.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use clap::Args;

use nodeup::deploy::stepfile::{self, StepFile};
use nodeup::engine::fleet::{
    deploy_fleet, Counts, Fate, FleetMember, FleetOptions, MemberResult, Outcome,
};
use nodeup::engine::settings::Purpose;
use nodeup::engine::{self, destroy_at_exit, Cause, Event};
use nodeup::journal::{RunEnd, RunStart};
use nodeup::model::{CreateNode, Node};
use nodeup::providers;
use nodeup::roster::NameError;

use super::common::{cancel_on_signals, positive, Created, FleetArgs, SshArgs};

use super::fleet_view::{failure_lines, print_summary, FleetView, SummaryRow};
use super::output::{self, print_json, FailedStep, FleetReport, NodeReport, StepReport};
use super::Failure;

/// `nodeup deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The step file (TOML): the node, how to log in, the steps.
    pub stepfile: PathBuf,
    /// The provider (default: the step file's, else local).
    #[arg(long)]
    pub provider: Option<String>,
    /// The node's name (default: the step file's); `{index}` in it numbers a fleet.
    #[arg(long)]
    pub name: Option<String>,
    /// The image, by id or name (default: the step file's).
    #[arg(long)]
    pub image: Option<String>,
    /// The size, by id or name (default: the step file's).
    #[arg(long)]
    pub size: Option<String>,
    /// The location, by id or name (default: the step file's).
    #[arg(long)]
    pub location: Option<String>,
    /// Keep a node whose deployment fails (it is destroyed otherwise).
    #[arg(long)]
    pub keep_on_failure: bool,
    /// How many nodes to make (default: the step file's `count`, else 1); the name may hold
    /// {index} or {index:03}, else the nodes are NAME-1, NAME-2 ...
    #[arg(long, value_parser = positive)]
    pub count: Option<usize>,
    /// Once more than K nodes failed, start nothing new and cancel those in flight.
    #[arg(long, value_name = "K")]
    pub max_failures: Option<usize>,
    /// Any failure destroys the whole fleet.
    #[arg(long)]
    pub all_or_nothing: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub ssh: SshArgs,
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
    let mut options = args.ssh.options(Some(&file), Purpose::Deploy)?;
    options.at_exit = Some(destroy_at_exit());
    options.journal = journal.clone();
    options.startups = Some(args.fleet.startups());
    let names: Vec<String> = requests.iter().map(|r| r.name.clone()).collect();
    let view = FleetView::new(names, args.fleet.follow, args.fleet.log_dir.clone())
        .map_err(|e| Failure::Usage(e.into()))?;
    let record = created.clone();
    let hooks = view.hooks(Some(Arc::new(move |event: &Event| record.observe(event))));
    cancel_on_signals(options.cancel.clone(), created);
    let fleet = FleetOptions {
        parallel: args.fleet.parallel,
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
    // The error is said of where the name and count came from: the command line or the file.
    let mut names = nodeup::roster::node_names(&name, count).map_err(|e| {
        match (&e, args.name.is_some(), args.count.is_some()) {
            (NameError::TooMany(_), _, true) | (NameError::NoNodes, _, true) => {
                Failure::Usage(anyhow!("--count: {e}"))
            }
            (NameError::Unclosed(_) | NameError::Unknown { .. }, true, _) => {
                Failure::Usage(anyhow!("--name: {e}"))
            }
            _ => in_file(e.to_string()),
        }
    })?;
    if let Some(shard) = args.fleet.shard {
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
            run: None,
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
        if single && matches!(member.result, MemberResult::NotStarted) {
            eprintln!("not started: the deployment was cancelled first");
        }
        say(member, single);
        rows.push(summary_row(member));
        reports.push(node_report(member));
    }
    if !single {
        print_summary(&rows, "nodes");
    }
    if args.json {
        match reports.as_slice() {
            [one] => print_json(one),
            _ => print_json(&FleetReport::new(reports)),
        }
    }
    let counts = Counts::of(rows.iter().map(|r| r.outcome));
    let Some(failure) = counts.failure("nodes") else {
        return Ok(());
    };
    let nothing_created = members.iter().all(|m| matches!(m.fate, Fate::NotCreated));
    let error = match members.into_iter().next() {
        Some(FleetMember {
            result: MemberResult::Failed(error),
            ..
        }) if single => anyhow::Error::new(error),
        _ => anyhow!(failure),
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
        // The summary counts them (a stopped fleet of thousands would print thousands of lines).
        MemberResult::NotStarted => {}
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
            "node {} ({}) is left: {}; destroy it with `{destroy}`",
            node.name,
            node.id,
            engine::error_chain(why.as_ref())
        ),
        Fate::Stays | Fate::NotCreated => return None,
    })
}

/// One member as `--json` prints it.
fn node_report(member: &FleetMember) -> NodeReport {
    let mut report = NodeReport {
        name: Some(member.name.clone()),
        fate: Some(member.fate.clone()),
        duration: member.elapsed.as_secs_f64(),
        ..NodeReport::empty()
    };
    match &member.result {
        MemberResult::Deployed(done) => {
            report.ok = member.outcome() == Outcome::Ok;
            report.node = Some(output::shown(&done.node));
            report.user = Some(done.user.clone());
            report.reconnects = Some(done.reconnects);
            report.steps = StepReport::all(&done.steps);
        }
        MemberResult::Failed(error) => {
            report.node = error.node.as_ref().map(output::shown);
            report.node_kept = Some(matches!(member.fate, Fate::Kept));
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
        outcome: member.outcome(),
        fate: Some(member.fate.clone()),
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
        }
        MemberResult::Failed(error) => {
            row.address = error.node.as_ref().map(address).unwrap_or_default();
            if let Some((index, kind)) = error.step {
                row.failed_step = format!("{index} {kind}");
            }
            row.stderr_tail = match error.cause {
                Cause::Cancelled => Vec::new(),
                _ => failure_lines(&error.cause),
            };
        }
        MemberResult::NotStarted => {}
    }
    row
}
