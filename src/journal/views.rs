//! Reading the journal back: runs, their nodes and step results, orphans; and recording what
//! cleanup did. The types here are what `nodeup journal --json` and `nodeup cleanup --json` print.

use std::collections::HashSet;

use serde::Serialize;

use super::store::{Param, Row};
use super::{now_ms, Journal, JournalError, NodeState, Owner, DEFAULT_RUN_LIMIT};
use crate::driver::ProviderConfig;

/// A run, as `nodeup journal` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// Its id.
    pub id: String,
    /// The command (`deploy`, `run`, `deploy_node`, ...).
    pub command: String,
    /// The step file, when there was one.
    pub stepfile: Option<String>,
    /// The step file's SHA-256.
    pub stepfile_hash: Option<String>,
    /// The process that owns it.
    pub owner: Owner,
    /// Whether that process still runs.
    pub owner_alive: bool,
    /// When it started (Unix ms).
    pub started_ms: i64,
    /// When it ended (Unix ms).
    pub finished_ms: Option<i64>,
    /// `running`, `done`, `failed`, `cancelled`, or `crashed` (its owner died while it ran).
    pub state: String,
    /// How many nodes or hosts it touched.
    pub nodes: usize,
    /// How many of them are orphans.
    pub orphans: usize,
}

/// One step's result, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    /// 1-based.
    pub index: i64,
    /// The step's kind.
    pub kind: String,
    /// `ok` or `failed`.
    pub status: String,
    /// For scripts: the exit status.
    pub exit_status: Option<i64>,
    /// How long it took, in seconds.
    pub duration_s: f64,
    /// Its note, or why it failed.
    pub note: Option<String>,
}

/// A node (or host) of a run, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// The run.
    pub run: String,
    /// Its number in the run.
    pub seq: i64,
    /// The provider; `None` for a host of `nodeup run`.
    pub provider: Option<String>,
    /// The provider's settings (never credentials).
    #[serde(skip)]
    pub settings: ProviderConfig,
    /// The location ("" for the provider's default).
    pub location: String,
    /// The node's name (or the host as given).
    pub name: String,
    /// The provider's id, once it answered.
    pub provider_id: Option<String>,
    /// Its addresses.
    pub addresses: Vec<String>,
    /// The user nodeup logged in as.
    pub login_user: Option<String>,
    /// Where it is in its life.
    pub state: NodeState,
    /// The step running (1-based), or the last one that ran.
    pub step: Option<i64>,
    /// How many steps there are.
    pub steps: Option<i64>,
    /// Why it failed, or what cleanup found.
    pub error: Option<String>,
    /// When it was recorded (Unix ms).
    pub created_ms: i64,
    /// Whether it is an orphan: its run's owner is gone and it was neither finished, kept nor
    /// destroyed.
    pub orphan: bool,
    /// Each step's result (in `nodeup journal RUN` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<StepView>,
}

/// One run with its nodes and their step results.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: RunView,
    /// Its nodes or hosts.
    #[serde(rename = "node_list")]
    pub node_list: Vec<NodeView>,
}

const RUN_COLUMNS: &str = "r.id, r.command, r.stepfile, r.stepfile_hash, r.host, r.pid_space, \
     r.pid, r.pid_start, r.started, r.heartbeat, r.finished, r.state";
const NODE_COLUMNS: &str = "n.run_id, n.seq, n.provider, n.settings, n.location, n.name, \
     n.provider_id, n.addresses, n.login_user, n.state, n.step, n.steps, n.error, n.created";
/// How many columns [`RUN_COLUMNS`] has (node columns follow them in joined rows).
const RUN_WIDTH: usize = 12;

/// A run row, and whether it still runs (state `running` and its owner alive).
fn run_view(r: &Row) -> (RunView, bool) {
    let owner = Owner {
        host: r.string(4),
        pid_space: r.string(5),
        pid: r.int(6).unwrap_or(0),
        pid_start: r.int(7).unwrap_or(0),
    };
    let recorded = r.string(11);
    let owner_alive = owner.is_alive(r.int(9).unwrap_or(0));
    let live = recorded == "running" && owner_alive;
    let state = if recorded == "running" && !owner_alive {
        "crashed".to_string()
    } else {
        recorded
    };
    let view = RunView {
        id: r.string(0),
        command: r.string(1),
        stepfile: r.text(2),
        stepfile_hash: r.text(3),
        owner,
        owner_alive,
        started_ms: r.int(8).unwrap_or(0),
        finished_ms: r.int(10),
        state,
        nodes: 0,
        orphans: 0,
    };
    (view, live)
}

/// A node row starting at column `at`, an orphan when it has a provider, is not settled and its
/// run is not live.
fn node_view(r: &Row, at: usize, run_live: bool) -> NodeView {
    let provider = r.text(at + 2);
    let state = NodeState::parse(&r.string(at + 9));
    NodeView {
        run: r.string(at),
        seq: r.int(at + 1).unwrap_or(0),
        orphan: provider.is_some() && !state.is_settled() && !run_live,
        provider,
        settings: r
            .text(at + 3)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
        location: r.string(at + 4),
        name: r.string(at + 5),
        provider_id: r.text(at + 6),
        addresses: r
            .string(at + 7)
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        login_user: r.text(at + 8),
        state,
        step: r.int(at + 10),
        steps: r.int(at + 11),
        error: r.text(at + 12),
        created_ms: r.int(at + 13).unwrap_or(0),
        results: Vec::new(),
    }
}

impl Journal {
    /// The latest runs, newest first (at most `limit`, default [`DEFAULT_RUN_LIMIT`]).
    ///
    /// # Errors
    /// The journal cannot be read.
    pub async fn runs(&self, limit: Option<i64>) -> Result<Vec<RunView>, JournalError> {
        let store = self.store().await?;
        let limit = limit.unwrap_or(DEFAULT_RUN_LIMIT);
        let rows = store
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS}, {NODE_COLUMNS} FROM runs r
                     LEFT JOIN nodes n ON n.run_id = r.id
                     WHERE r.id IN (SELECT id FROM runs ORDER BY started DESC LIMIT $1)
                     ORDER BY r.started DESC, r.id, n.seq"
                ),
                vec![limit.into()],
            )
            .await?;
        let mut runs: Vec<RunView> = Vec::new();
        for row in &rows {
            let (view, live) = run_view(row);
            if runs.last().is_none_or(|last| last.id != view.id) {
                runs.push(view);
            }
            let run = runs.last_mut().expect("pushed");
            if row.int(RUN_WIDTH + 1).is_some() {
                run.nodes += 1;
                run.orphans += usize::from(node_view(row, RUN_WIDTH, live).orphan);
            }
        }
        Ok(runs)
    }

    /// One run (by its id or an unambiguous prefix of it), with each node and step result.
    ///
    /// # Errors
    /// No run or several runs match; the journal cannot be read.
    pub async fn run_detail(&self, id: &str) -> Result<RunDetail, JournalError> {
        let store = self.store().await?;
        let pattern = format!("{}%", id.replace(['%', '_'], ""));
        let rows = store
            .query(
                &format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.id LIKE $1 LIMIT 2"),
                vec![pattern.into()],
            )
            .await?;
        let (mut run, live) = match rows.as_slice() {
            [one] => run_view(one),
            [] => {
                return Err(self.no_such_run(format!("no run {id:?}: `nodeup journal` lists them")))
            }
            _ => {
                return Err(
                    self.no_such_run(format!("{id:?} names several runs: give more of the id"))
                )
            }
        };
        let params = || vec![Param::from(run.id.clone())];
        let node_rows = store
            .query(
                &format!("SELECT {NODE_COLUMNS} FROM nodes n WHERE n.run_id = $1 ORDER BY n.seq"),
                params(),
            )
            .await?;
        let mut nodes: Vec<NodeView> = node_rows.iter().map(|r| node_view(r, 0, live)).collect();
        let step_rows = store
            .query(
                "SELECT seq, idx, kind, status, exit_status, duration_ms, note FROM steps
                 WHERE run_id = $1 ORDER BY seq, finished",
                params(),
            )
            .await?;
        for r in &step_rows {
            if let Some(node) = nodes.iter_mut().find(|n| Some(n.seq) == r.int(0)) {
                node.results.push(StepView {
                    index: r.int(1).unwrap_or(0),
                    kind: r.string(2),
                    status: r.string(3),
                    exit_status: r.int(4),
                    duration_s: r.int(5).unwrap_or(0) as f64 / 1000.0,
                    note: r.text(6),
                });
            }
        }
        run.nodes = nodes.len();
        run.orphans = nodes.iter().filter(|n| n.orphan).count();
        Ok(RunDetail {
            run,
            node_list: nodes,
        })
    }

    fn no_such_run(&self, message: String) -> JournalError {
        JournalError::NoSuchRun {
            journal: self.describe(),
            message,
        }
    }

    /// Every orphan: a node with a provider whose run's owner is gone and that was neither
    /// finished, kept nor destroyed. Oldest first.
    ///
    /// # Errors
    /// The journal cannot be read.
    pub async fn orphans(&self) -> Result<Vec<NodeView>, JournalError> {
        Ok(self
            .unsettled()
            .await?
            .into_iter()
            .filter(|n| n.orphan)
            .collect())
    }

    async fn unsettled(&self) -> Result<Vec<NodeView>, JournalError> {
        let store = self.store().await?;
        let rows = store
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS}, {NODE_COLUMNS} FROM nodes n JOIN runs r ON r.id = n.run_id
                     WHERE n.provider IS NOT NULL
                     AND n.state NOT IN ('done', 'kept', 'destroyed')
                     ORDER BY n.created"
                ),
                Vec::new(),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| node_view(r, RUN_WIDTH, run_view(r).1))
            .collect())
    }

    /// The provider ids of `provider` that some record other than `except` stands for: nodes
    /// finished or kept, and nodes of live runs. Cleanup never destroys these by name.
    ///
    /// # Errors
    /// The journal cannot be read.
    pub async fn claimed_ids(
        &self,
        provider: &str,
        except: (&str, i64),
    ) -> Result<HashSet<String>, JournalError> {
        let store = self.store().await?;
        let rows = store
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS}, {NODE_COLUMNS} FROM nodes n JOIN runs r ON r.id = n.run_id
                     WHERE n.provider = $1 AND n.provider_id IS NOT NULL
                     AND n.state <> 'destroyed'"
                ),
                vec![provider.into()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| node_view(r, RUN_WIDTH, run_view(r).1))
            .filter(|n| (n.run.as_str(), n.seq) != except && !n.orphan)
            .filter_map(|n| n.provider_id)
            .collect())
    }

    /// Whether a live run other than `run` holds the name lock on (provider, location, name).
    ///
    /// # Errors
    /// The journal cannot be read.
    pub async fn name_held_elsewhere(
        &self,
        node: &NodeView,
    ) -> Result<Option<String>, JournalError> {
        let Some(provider) = &node.provider else {
            return Ok(None);
        };
        let store = self.store().await?;
        let key = super::LockKey {
            provider: provider.clone(),
            location: node.location.clone(),
            name: node.name.clone(),
        };
        Ok(super::holder(store.as_ref(), &key)
            .await?
            .filter(|h| h.run != node.run && h.is_alive())
            .map(|h| h.run))
    }

    /// Records what cleanup did with a node: its new state and a note.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub async fn record_cleanup(
        &self,
        node: &NodeView,
        state: NodeState,
        note: &str,
    ) -> Result<(), JournalError> {
        let store = self.store().await?;
        store
            .execute(
                "UPDATE nodes SET state = $1, error = $2, updated = $3
                 WHERE run_id = $4 AND seq = $5",
                vec![
                    state.as_str().into(),
                    super::shorten(note).into(),
                    now_ms().into(),
                    node.run.clone().into(),
                    node.seq.into(),
                ],
            )
            .await?;
        if state.is_settled() {
            store
                .execute(
                    "DELETE FROM locks WHERE run_id = $1 AND name = $2",
                    vec![node.run.clone().into(), node.name.clone().into()],
                )
                .await?;
        }
        Ok(())
    }
}
