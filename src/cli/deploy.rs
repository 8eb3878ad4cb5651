//! `nodeup deploy STEPFILE`: create a node and provision it; on failure destroy it (unless
//! --keep-on-failure) and say which; Ctrl+C or SIGTERM once cancels and cleans up, twice stops at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use nodeup::deploy::stepfile::{self, parse_positive_duration, StepFile};
use nodeup::driver::NodeDriver;
use nodeup::engine::{self, destroy_at_exit, Cause, DeployOptions, Event};
use nodeup::journal::{NodeEntry, NodeState, RunEnd, RunStart};
use nodeup::model::{CreateNode, Node};
use nodeup::providers;
use nodeup::ssh::{HostKeyPolicy, Password};

use super::output::{self, print_json};
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
    /// Keep the node when a step fails (it is destroyed otherwise).
    #[arg(long)]
    pub keep_on_failure: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// Deploy options from the step file's `[ssh]`, then the command line over it.
pub fn options(file: &StepFile, ssh: &SshArgs, policy: HostKeyPolicy) -> DeployOptions {
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
    options
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
    let name = args
        .name
        .clone()
        .or(file.node.name.clone())
        .ok_or_else(|| {
            Failure::Usage(anyhow!(
                "{}: no node name: set `name` under [node] or pass --name",
                args.stepfile.display()
            ))
        })?;
    let driver = providers::get_driver_with(&provider, &file.provider)
        .map_err(|e| Failure::from(e).context(args.stepfile.display().to_string()))?;
    let request = CreateNode {
        name: name.clone(),
        image: args.image.clone().or(file.node.image.clone()),
        size: args.size.clone().or(file.node.size.clone()),
        location: args.location.clone().or(file.node.location.clone()),
        auth: None,
        extra: file.node.options.clone(),
    };
    let journal =
        super::journal::begin_run(RunStart::with_stepfile("deploy", &args.stepfile)).await?;
    let started = Instant::now();
    let created = Created::default();
    let mut options = options(&file, &args.ssh, HostKeyPolicy::AcceptNew);
    options.journal = journal.clone();
    options.at_exit = Some(destroy_at_exit());
    options.output = Some(output::script_output(None));
    let print = output::progress(None, started);
    let record = created.clone();
    options.progress = Some(Arc::new(move |event: &Event| {
        record.observe(event);
        print(event);
    }));
    cancel_on_signals(options.cancel.clone(), created);
    tracing::info!("deploying node {name} on {provider}");
    let outcome = engine::deploy_node(driver.clone(), &request, &file.steps, &options).await;
    let end = match &outcome {
        Ok(_) => RunEnd::Done,
        Err(e) if matches!(e.cause, Cause::Cancelled) => RunEnd::Cancelled,
        Err(_) => RunEnd::Failed,
    };
    let result = report(
        outcome,
        &args,
        driver.as_ref(),
        &options.known_hosts,
        started,
    )
    .await;
    if let Some(journal) = &journal {
        journal.finish_run(end).await;
    }
    result
}

/// Says what a deployment did (stderr, and stdout with --json); destroys or keeps a node whose
/// deployment failed.
async fn report(
    outcome: Result<engine::Deployment, engine::DeploymentError>,
    args: &DeployArgs,
    driver: &dyn NodeDriver,
    known_hosts: &std::path::Path,
    started: Instant,
) -> Result<(), Failure> {
    match outcome {
        Ok(done) => {
            eprintln!(
                "deployed node {} ({}) as {}: {} steps in {:.1}s",
                done.node.name,
                done.node.id,
                done.user,
                done.steps.len(),
                started.elapsed().as_secs_f64()
            );
            if args.ssh.json {
                print_json(&json!({
                    "ok": true,
                    "node": output::shown(&done.node),
                    "user": done.user,
                    "reconnects": done.reconnects,
                    "steps": output::steps_json(&done.steps),
                }));
            }
            Ok(())
        }
        Err(error) => Err(failed(error, args, driver, known_hosts).await),
    }
}

/// A failed deployment: the node destroyed (or kept, or already destroyed by the cancel), what
/// happened said on stderr and, with --json, on stdout; the exit code's failure.
async fn failed(
    error: engine::DeploymentError,
    args: &DeployArgs,
    driver: &dyn NodeDriver,
    known_hosts: &std::path::Path,
) -> Failure {
    let cleanup = match (&error.node, &error.cause) {
        (None, _) => "nothing was created".to_string(),
        // The at-exit hook destroyed it already.
        (Some(node), Cause::Cancelled) => format!("node {} was destroyed", node.name),
        (Some(node), _) if args.keep_on_failure => {
            if let Some(entry) = &error.journal {
                entry.finish(NodeState::Kept).await;
            }
            format!(
                "node {} ({}) was kept: log in to look, then `nodeup nodes destroy {} --provider {}`",
                node.name, node.id, node.id, node.provider
            )
        }
        (Some(node), _) => destroy(driver, node, known_hosts, error.journal.as_ref()).await,
    };
    eprintln!("{cleanup}");
    if args.ssh.json {
        print_json(&json!({
            "ok": false,
            "error": engine::error_chain(&error),
            "node": error.node.as_ref().map(output::shown),
            "node_kept": error.node.is_some() && args.keep_on_failure && !matches!(error.cause, Cause::Cancelled),
            "failed_step": output::failed_step_json(error.step, &error.cause),
            "logins": error.attempts,
            "steps": output::steps_json(&error.completed),
        }));
    }
    let before_create = error.is_before_create();
    let error = anyhow::Error::new(error);
    if before_create {
        Failure::Usage(error)
    } else {
        Failure::Failed(error)
    }
}

async fn destroy(
    driver: &dyn NodeDriver,
    node: &Node,
    known_hosts: &std::path::Path,
    entry: Option<&NodeEntry>,
) -> String {
    match engine::destroy_node(driver, node, known_hosts).await {
        Ok(()) => {
            if let Some(entry) = entry {
                entry.finish(NodeState::Destroyed).await;
            }
            format!("node {} ({}) was destroyed", node.name, node.id)
        }
        Err(e) => format!(
            "destroying node {} ({}) failed ({e}): destroy it with `nodeup nodes destroy {} --provider {}`",
            node.name, node.id, node.id, node.provider
        ),
    }
}
