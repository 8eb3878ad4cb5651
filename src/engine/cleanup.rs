//! Cleanup of orphans: the nodes a run created (or was creating) whose owner is gone and that
//! were neither finished, kept nor destroyed. Each is destroyed through its provider, reached
//! again with the settings the journal recorded; a node whose create answer never came is looked
//! up by name. What was done is recorded in the journal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::connect::error_chain;
use super::deploy::destroy_node;
use crate::driver::{NodeDriver, ProviderConfig, ProviderError};
use crate::journal::{now_ms, Journal, JournalError, NodeView};
use crate::life::Stage;
use crate::model::Node;

/// Builds a driver from a provider name and the settings the journal recorded (the registry's
/// `get_driver_with`, for the command line).
pub type DriverFor =
    dyn Fn(&str, &ProviderConfig) -> Result<Arc<dyn NodeDriver>, ProviderError> + Send + Sync;

/// What to clean up.
#[derive(Debug, Clone)]
pub struct CleanupOptions {
    /// Destroy (otherwise only say what would be destroyed).
    pub destroy: bool,
    /// Only orphans recorded at least this long ago.
    pub older_than: Option<Duration>,
    /// Only orphans of this provider.
    pub provider: Option<String>,
    /// The known_hosts file whose entries for destroyed nodes are forgotten.
    pub known_hosts: PathBuf,
}

/// What became of one orphan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CleanupResult {
    /// It would be destroyed (without `destroy`).
    WouldDestroy,
    /// It was destroyed.
    Destroyed,
    /// The provider has no such node: it was never made, or is gone already.
    Gone,
    /// It could not be removed; the message says why.
    Left,
}

/// One orphan and what cleanup did with it.
#[derive(Debug, Clone, Serialize)]
pub struct CleanupOutcome {
    /// The run that created it.
    pub run: String,
    /// The provider.
    pub provider: String,
    /// The location ("" for the provider's default).
    pub location: String,
    /// The node's name.
    pub name: String,
    /// The provider's id, when it was known or found.
    pub provider_id: Option<String>,
    /// What was done.
    pub result: CleanupResult,
    /// Details: what was found, or why it could not be removed.
    pub message: String,
}

/// Finds the orphans (filtered by `options`) and, with `options.destroy`, destroys each through its
/// provider, recording each outcome in the journal.
///
/// # Errors
/// The journal cannot be read or written. A node that cannot be destroyed is not an error: its
/// outcome is [`CleanupResult::Left`] with the reason.
pub async fn cleanup(
    journal: &Journal,
    options: &CleanupOptions,
    driver_for: &DriverFor,
) -> Result<Vec<CleanupOutcome>, JournalError> {
    let cutoff = options
        .older_than
        .map(|age| now_ms() - age.as_millis() as i64);
    let mut outcomes = Vec::new();
    for orphan in journal.orphans().await? {
        let provider = orphan.provider.clone().unwrap_or_default();
        if options.provider.as_ref().is_some_and(|p| *p != provider)
            || cutoff.is_some_and(|c| orphan.created_ms > c)
        {
            continue;
        }
        let (result, provider_id, message) = if options.destroy {
            clean(journal, &orphan, driver_for, options).await?
        } else {
            let what = "would destroy (run again with --yes)".to_string();
            (
                CleanupResult::WouldDestroy,
                orphan.provider_id.clone(),
                what,
            )
        };
        outcomes.push(CleanupOutcome {
            run: orphan.run.clone(),
            provider,
            location: orphan.location.clone(),
            name: orphan.name.clone(),
            provider_id,
            result,
            message,
        });
    }
    Ok(outcomes)
}

/// Destroys one orphan and records the outcome.
async fn clean(
    journal: &Journal,
    orphan: &NodeView,
    driver_for: &DriverFor,
    options: &CleanupOptions,
) -> Result<(CleanupResult, Option<String>, String), JournalError> {
    let provider = orphan.provider.clone().unwrap_or_default();
    let left = |message: String| (CleanupResult::Left, orphan.provider_id.clone(), message);
    let driver = match driver_for(&provider, &orphan.settings) {
        Ok(driver) => driver,
        Err(e) => return Ok(left(format!("cannot reach provider {provider}: {e}"))),
    };
    let found = match find(journal, orphan, driver.as_ref()).await? {
        Ok(found) => found,
        Err(message) => {
            journal
                .record_cleanup(orphan, orphan.state, &message)
                .await?;
            return Ok(left(message));
        }
    };
    let Some(node) = found else {
        let message = "the provider has no such node: it was never created, or is gone".to_string();
        journal
            .record_cleanup(orphan, Stage::Destroyed, &message)
            .await?;
        return Ok((CleanupResult::Gone, orphan.provider_id.clone(), message));
    };
    match destroy_node(driver.as_ref(), &node, &options.known_hosts).await {
        Ok(()) => {
            let message = format!("destroyed {} ({})", node.name, node.id);
            journal
                .record_cleanup(orphan, Stage::Destroyed, &message)
                .await?;
            Ok((CleanupResult::Destroyed, Some(node.id), message))
        }
        // Gone meanwhile (another cleanup destroyed it): what was wanted.
        Err(ProviderError::NotFound { .. }) => {
            let message = format!("{} ({}) was gone already", node.name, node.id);
            journal
                .record_cleanup(orphan, Stage::Destroyed, &message)
                .await?;
            Ok((CleanupResult::Gone, Some(node.id), message))
        }
        Err(e) => {
            let message = format!("destroying {} failed: {}", node.id, error_chain(&e));
            journal
                .record_cleanup(orphan, orphan.state, &message)
                .await?;
            Ok((CleanupResult::Left, Some(node.id), message))
        }
    }
}

/// The provider's node for an orphan: by its id when the provider answered the create, else by
/// name (a node no other record stands for, whose name no live run holds). `Ok(None)`: there is
/// none; `Err(message)`: it cannot be told.
async fn find(
    journal: &Journal,
    orphan: &NodeView,
    driver: &dyn NodeDriver,
) -> Result<Result<Option<Node>, String>, JournalError> {
    if let Some(id) = &orphan.provider_id {
        return Ok(match driver.get_node(id).await {
            Ok(node) => Ok(Some(node)),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(format!("looking up node {id}: {}", error_chain(&e))),
        });
    }
    if let Some(run) = journal.name_held_elsewhere(orphan).await? {
        return Ok(Err(format!(
            "run {run} deploys a node of this name now; its create answer never came, so the node \
             cannot be told apart: look with `nodeup nodes list --provider {}`",
            driver.name()
        )));
    }
    let claimed = journal
        .claimed_ids(driver.name(), (&orphan.run, orphan.seq))
        .await?;
    let listed = if orphan.location.is_empty() {
        driver.list_nodes().await
    } else {
        driver.list_nodes_in(&orphan.location).await
    };
    let nodes = match listed {
        Ok(nodes) => nodes,
        Err(e) => return Ok(Err(format!("listing nodes: {}", error_chain(&e)))),
    };
    let mut named: Vec<Node> = nodes
        .into_iter()
        // A node tagged with another run's id is that run's, whatever its name.
        .filter(|n| n.name == orphan.name && !claimed.contains(&n.id))
        .filter(|n| n.run().is_none_or(|run| run == orphan.run))
        .collect();
    Ok(match named.len() {
        0 | 1 => Ok(named.pop()),
        n => Err(format!(
            "{n} nodes are named {:?} and none is recorded: destroy the right one with \
             `nodeup nodes destroy ID --provider {}`",
            orphan.name,
            driver.name()
        )),
    })
}
