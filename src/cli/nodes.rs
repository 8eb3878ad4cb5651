//! `nodeup nodes ...`: create, list, reboot, stop, start and destroy nodes of any provider.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};

use nodeup::driver::NodeDriver;
use nodeup::engine::{wait_until_running, WaitOptions};
use nodeup::model::{CreateNode, Node, NodeAuth};
use nodeup::providers;

use super::output::{self, print_json};
use super::Failure;

/// `nodeup nodes` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Create a node and wait until it accepts SSH connections.
    Create(CreateArgs),
    /// List nodes.
    List(ListArgs),
    /// Destroy a node (by name or id).
    Destroy(NodeArgs),
    /// Reboot a node (by name or id).
    Reboot(NodeArgs),
    /// Power a node off (by name or id).
    Stop(NodeArgs),
    /// Power a stopped node on (by name or id).
    Start(NodeArgs),
}

/// Which provider to talk to.
#[derive(Debug, Args)]
pub struct ProviderArg {
    /// The provider (see `nodeup providers`).
    #[arg(long, default_value = "local", env = "NODEUP_PROVIDER")]
    pub provider: String,
}

/// `nodeup nodes create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    provider: ProviderArg,
    /// The node's name (its hostname).
    #[arg(long)]
    name: String,
    /// The image id (local: debian, cloud-debian).
    #[arg(long)]
    image: Option<String>,
    /// The size id.
    #[arg(long)]
    size: Option<String>,
    /// The location id.
    #[arg(long)]
    location: Option<String>,
    /// An SSH public key file to authorize for the image's login user.
    #[arg(long, value_name = "PUBKEY_FILE")]
    ssh_key: Option<PathBuf>,
    /// A provider-specific option, KEY=VALUE (repeatable), as in a step file's `[node] options`;
    /// VALUE is read as JSON when it parses (3000, true, {"a":"b"}), else as a string.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
    /// Return as soon as the provider accepted the request, without waiting for the node to run.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the node to run, e.g. 90s, 5m.
    #[arg(long, default_value = "5m", value_parser = nodeup::deploy::stepfile::parse_positive_duration)]
    wait_timeout: Duration,
    /// Print the node as JSON.
    #[arg(long)]
    json: bool,
}

/// `nodeup nodes list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    provider: ProviderArg,
    /// Print a JSON array of nodes.
    #[arg(long)]
    json: bool,
}

/// A command on one node.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    provider: ProviderArg,
    /// The node's name or id.
    node: String,
}

/// Runs a `nodeup nodes` subcommand.
pub async fn run(cmd: NodesCommand) -> Result<(), Failure> {
    match cmd {
        NodesCommand::Create(args) => create(args).await,
        NodesCommand::List(args) => {
            let driver = providers::get_driver(&args.provider.provider)?;
            let nodes = driver.list_nodes().await?;
            if args.json {
                print_json(&nodes.iter().map(output::shown).collect::<Vec<_>>());
            } else {
                print_table(&nodes);
            }
            Ok(())
        }
        NodesCommand::Destroy(args) => {
            let (driver, node) = resolve(&args).await?;
            nodeup::engine::destroy_node(
                driver.as_ref(),
                &node,
                &nodeup::engine::default_known_hosts(),
            )
            .await?;
            eprintln!("destroyed node {} ({})", node.name, node.id);
            Ok(())
        }
        NodesCommand::Reboot(args) => {
            let (driver, node) = resolve(&args).await?;
            driver.reboot_node(&node).await?;
            eprintln!("rebooting node {} ({})", node.name, node.id);
            Ok(())
        }
        NodesCommand::Stop(args) => {
            let (driver, node) = resolve(&args).await?;
            driver.stop_node(&node).await?;
            eprintln!("stopped node {} ({})", node.name, node.id);
            Ok(())
        }
        NodesCommand::Start(args) => {
            let (driver, node) = resolve(&args).await?;
            driver.start_node(&node).await?;
            eprintln!("starting node {} ({})", node.name, node.id);
            Ok(())
        }
    }
}

async fn create(args: CreateArgs) -> Result<(), Failure> {
    let auth = match &args.ssh_key {
        Some(path) => {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("reading the SSH public key {}", path.display()))
                .map_err(Failure::Usage)?;
            if key.contains("PRIVATE KEY") {
                return Err(Failure::Usage(anyhow!(
                    "{} is a private key: give the public one (usually the same path ending in .pub)",
                    path.display()
                )));
            }
            Some(NodeAuth::SshKey(key.trim().to_string()))
        }
        None => None,
    };
    let mut extra = std::collections::BTreeMap::new();
    for option in &args.options {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| Failure::Usage(anyhow!("--option {option:?}: write KEY=VALUE")))?;
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        extra.insert(key.to_string(), value);
    }
    let driver = providers::get_driver(&args.provider.provider)?;
    let request = CreateNode {
        name: args.name,
        size: args.size,
        image: args.image,
        location: args.location,
        auth,
        extra,
        run: None,
    };
    eprintln!("creating node {} on {}", request.name, driver.name());
    let mut node = driver.create_node(&request).await?;
    if !args.no_wait {
        node = match wait_running(driver.as_ref(), &node, args.wait_timeout).await {
            Ok(node) => node,
            Err(e) => {
                let cleanup = match driver.destroy_node(&node).await {
                    Ok(()) => format!("node {} was destroyed", node.id),
                    Err(d) => format!(
                        "destroying node {} failed too ({d}): destroy it with `nodeup nodes destroy {}`",
                        node.id, node.id
                    ),
                };
                return Err(Failure::Failed(e.context(cleanup)));
            }
        };
    }
    if args.json {
        print_json(&output::shown(&node));
    } else {
        print_table(std::slice::from_ref(&node));
    }
    Ok(())
}

/// Waits until the node runs and has an address; a node in the error state ends the wait at once.
async fn wait_running(
    driver: &dyn NodeDriver,
    node: &Node,
    timeout: Duration,
) -> anyhow::Result<Node> {
    let options = WaitOptions {
        timeout,
        poll_period: Duration::from_secs(1),
        ..Default::default()
    };
    let ready = wait_until_running(driver, std::slice::from_ref(&node.id), &options).await?;
    ready
        .into_iter()
        .next()
        .map(|r| r.node)
        .ok_or_else(|| anyhow!("node {} is not listed", node.name))
}

async fn resolve(args: &NodeArgs) -> Result<(Arc<dyn NodeDriver>, Node), Failure> {
    let driver = providers::get_driver(&args.provider.provider)?;
    let nodes = driver.list_nodes().await?;
    if let Some(node) = nodes.iter().find(|n| n.id == args.node) {
        return Ok((driver, node.clone()));
    }
    let named: Vec<&Node> = nodes.iter().filter(|n| n.name == args.node).collect();
    match named.as_slice() {
        [node] => Ok((driver.clone(), (*node).clone())),
        [] => Err(Failure::Usage(anyhow!(
            "no {} node named or numbered {:?}: `nodeup nodes list --provider {}` shows them",
            driver.name(),
            args.node,
            driver.name()
        ))),
        many => Err(Failure::Usage(anyhow!(
            "{} nodes are named {:?} ({}): give the id instead",
            many.len(),
            args.node,
            many.iter()
                .map(|n| n.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn print_table(nodes: &[Node]) {
    let rows: Vec<[String; 6]> = nodes
        .iter()
        .map(|n| {
            let address = n
                .public_ips
                .first()
                .or(n.private_ips.first())
                .map(|ip| match (n.ssh_port(), ip) {
                    (22, ip) => ip.to_string(),
                    (port, std::net::IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
                    (port, ip) => format!("{ip}:{port}"),
                })
                .unwrap_or_else(|| "-".into());
            [
                n.id.clone(),
                n.name.clone(),
                n.state.to_string(),
                address,
                n.image.clone().unwrap_or_else(|| "-".into()),
                n.login_user().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "STATE", "ADDRESS", "IMAGE", "LOGIN USER"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:w$}  "));
            }
        }
        crate::outln!("{out}");
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
}
