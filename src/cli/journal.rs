//! `nodeup journal [RUN]` and `nodeup cleanup`: what the journal recorded, and destroying the
//! orphans it knows (nodes whose run's owner is gone, neither finished, kept nor destroyed).

use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use serde::Serialize;

use nodeup::deploy::stepfile::parse_positive_duration;
use nodeup::engine::cleanup::{self, CleanupOptions, CleanupOutcome, CleanupResult};
use nodeup::engine::default_known_hosts;
use nodeup::journal::{
    show_time, Journal, JournalError, NodeView, RunDetail, RunStart, RunState, RunView,
};
use nodeup::providers;

use super::output::print_json;
use super::Failure;

/// `nodeup journal`.
#[derive(Debug, Args)]
pub struct JournalArgs {
    /// One run (its id, or enough of it): each node and each step's result.
    pub run: Option<String>,
    /// How many runs to list, newest first (1 or more).
    #[arg(long, default_value_t = nodeup::journal::DEFAULT_RUN_LIMIT,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub limit: i64,
    /// Print the result as JSON on stdout (the types the README documents).
    #[arg(long)]
    pub json: bool,
}

/// `nodeup cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Destroy the orphans (without it, say what would be destroyed).
    #[arg(long)]
    pub yes: bool,
    /// Only orphans recorded at least this long ago, e.g. 1h.
    #[arg(long, value_parser = parse_positive_duration, value_name = "AGE")]
    pub older_than: Option<Duration>,
    /// Only orphans of this provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Print the result as JSON on stdout (the types the README documents).
    #[arg(long)]
    pub json: bool,
}

impl From<JournalError> for Failure {
    fn from(e: JournalError) -> Self {
        match e {
            JournalError::Database { .. } | JournalError::LockContended { .. } => {
                Failure::Failed(e.into())
            }
            _ => Failure::Usage(e.into()),
        }
    }
}

/// The journal the user configured, opened now (so that a bad one is reported before anything
/// else happens); `None` when NODEUP_JOURNAL=off.
pub async fn open() -> Result<Option<Journal>, Failure> {
    let Some(journal) = Journal::from_env()? else {
        return Ok(None);
    };
    journal.check().await?;
    Ok(Some(journal))
}

/// Opens the journal and records the start of a run of this process in it.
pub async fn begin_run(start: RunStart) -> Result<Option<Journal>, Failure> {
    match open().await? {
        Some(journal) => Ok(Some(journal.begin_run(start).await?)),
        None => Ok(None),
    }
}

async fn required() -> Result<Journal, Failure> {
    open().await?.ok_or_else(|| {
        Failure::Usage(anyhow!(
            "the journal is turned off (NODEUP_JOURNAL=off): unset it to read the journal"
        ))
    })
}

/// Runs `nodeup journal`.
pub async fn list(args: JournalArgs) -> Result<(), Failure> {
    let journal = required().await?;
    match &args.run {
        Some(id) => {
            let detail = journal.run_detail(id).await?;
            if args.json {
                print_json(&detail);
            } else {
                print_detail(&detail);
            }
        }
        None => {
            let runs = journal.runs(Some(args.limit)).await?;
            if args.json {
                print_json(&runs);
            } else {
                print_runs(&runs, &journal);
            }
        }
    }
    Ok(())
}

fn owner_text(run: &RunView) -> String {
    let alive = if run.state == RunState::Crashed {
        ", gone"
    } else {
        ""
    };
    format!("{} pid {}{alive}", run.owner.host, run.owner.pid)
}

fn print_runs(runs: &[RunView], journal: &Journal) {
    if runs.is_empty() {
        crate::outln!("no runs in the journal {}", journal.describe());
        return;
    }
    crate::outln!(
        "{:<12}  {:<11}  {:<29}  {:<24}  {:<9}  {:>5}  {:>7}",
        "RUN",
        "COMMAND",
        "STARTED",
        "OWNER",
        "STATE",
        "NODES",
        "ORPHANS"
    );
    for run in runs {
        crate::outln!(
            "{:<12}  {:<11}  {:<29}  {:<24}  {:<9}  {:>5}  {:>7}",
            run.id,
            run.command,
            show_time(run.started_ms),
            owner_text(run),
            run.state,
            run.nodes,
            run.orphans
        );
    }
    let orphans: usize = runs.iter().map(|r| r.orphans).sum();
    if orphans > 0 {
        crate::outln!("{orphans} orphan(s): `nodeup cleanup` shows them, `nodeup cleanup --yes` destroys them");
    }
}

fn print_detail(detail: &RunDetail) {
    let run = &detail.run;
    crate::outln!("run {} ({}): {}", run.id, run.command, run.state);
    if let Some(stepfile) = &run.stepfile {
        let hash = run.stepfile_hash.as_deref().unwrap_or("unreadable");
        crate::outln!("  step file {stepfile} (sha256 {hash})");
    }
    crate::outln!("  owner {}", owner_text(run));
    crate::outln!("  started {}", show_time(run.started_ms));
    if let Some(finished) = run.finished_ms {
        crate::outln!("  finished {}", show_time(finished));
    }
    for node in &detail.node_list {
        print_node(node);
    }
}

fn print_node(node: &NodeView) {
    let mut what = node.name.clone();
    if let Some(provider) = &node.provider {
        let id = node.provider_id.as_deref().unwrap_or("no id yet");
        what.push_str(&format!(" ({provider} {id})"));
    }
    if !node.addresses.is_empty() {
        what.push_str(&format!(" at {}", node.addresses.join(" ")));
    }
    if let Some(user) = &node.login_user {
        what.push_str(&format!(" as {user}"));
    }
    let mut state = node.state.as_str().to_string();
    if let (Some(step), Some(steps)) = (node.step, node.steps) {
        state.push_str(&format!(", step {step} of {steps}"));
    }
    let orphan = if node.orphan { "  ORPHAN" } else { "" };
    crate::outln!("  node {what}: {state}{orphan}");
    if let Some(error) = &node.error {
        crate::outln!("    {error}");
    }
    for step in &node.results {
        let exit = step
            .exit_status
            .map(|c| format!(" exit {c}"))
            .unwrap_or_default();
        let note = step.note.as_deref().unwrap_or("");
        crate::outln!(
            "    step {} {}: {}{exit} in {:.2}s  {note}",
            step.index,
            step.kind,
            step.status,
            step.duration_s
        );
    }
}

/// What `nodeup cleanup --json` prints.
#[derive(Debug, Serialize)]
struct CleanupReport {
    /// Whether nothing was destroyed (no --yes).
    dry_run: bool,
    /// Each orphan and what was done.
    nodes: Vec<CleanupOutcome>,
    /// How many could not be removed.
    left: usize,
}

/// Runs `nodeup cleanup`.
pub async fn clean(args: CleanupArgs) -> Result<(), Failure> {
    let journal = required().await?;
    let options = CleanupOptions {
        destroy: args.yes,
        older_than: args.older_than,
        provider: args.provider.clone(),
        known_hosts: default_known_hosts(),
    };
    let outcomes = cleanup::cleanup(&journal, &options, &|name, settings| {
        providers::get_driver_with(name, settings)
    })
    .await?;
    let left = outcomes
        .iter()
        .filter(|o| o.result == CleanupResult::Left)
        .count();
    if args.json {
        print_json(&CleanupReport {
            dry_run: !args.yes,
            nodes: outcomes.clone(),
            left,
        });
    }
    for o in &outcomes {
        let id = o.provider_id.as_deref().unwrap_or("no id");
        eprintln!(
            "run {} node {} ({} {id}): {}",
            o.run, o.name, o.provider, o.message
        );
    }
    match (outcomes.is_empty(), left) {
        (true, _) => eprintln!("no orphans in the journal {}", journal.describe()),
        (false, 0) if args.yes => eprintln!("nothing is left"),
        (false, 0) => eprintln!("{} orphan(s): `nodeup cleanup --yes` destroys them", outcomes.len()),
        (false, n) => {
            return Err(Failure::Failed(anyhow!(
                "{n} orphan(s) could not be removed (see above); run `nodeup cleanup --yes` again once fixed"
            )))
        }
    }
    Ok(())
}
