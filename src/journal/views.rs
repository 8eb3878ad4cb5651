//! Reading the journal back: runs, their nodes and step results, orphans; and recording what
//! cleanup did. The types here are what `nodeup journal --json` and `nodeup cleanup --json` print.

use std::collections::HashSet;

use serde::Serialize;

use super::store::{Param, Row};
use super::{now_ms, Journal, JournalError, Owner, RunState, StepStatus, DEFAULT_RUN_LIMIT};
use crate::driver::ProviderConfig;
use crate::life::Stage;

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
    pub state: RunState,
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
    pub status: StepStatus,
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
    pub state: Stage,
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

/// A run's columns, named as [`run_view`] reads them (`run_state`: nodes have a state too).
const RUN_COLUMNS: &str = "r.id AS run_id, r.command AS command, r.stepfile AS stepfile, \
     r.stepfile_hash AS stepfile_hash, r.host AS host, r.pid_space AS pid_space, r.pid AS pid, \
     r.pid_start AS pid_start, r.started AS started, r.heartbeat AS heartbeat, \
     r.finished AS finished, r.state AS run_state";
/// A node's columns, named as [`node_view`] reads them.
const NODE_COLUMNS: &str = "n.run_id AS node_run, n.seq AS seq, n.provider AS provider, \
     n.settings AS settings, n.location AS location, n.name AS name, \
     n.provider_id AS provider_id, n.addresses AS addresses, n.login_user AS login_user, \
     n.state AS node_state, n.step AS step, n.steps AS steps, n.error AS error, \
     n.created AS created";

/// A run row, and whether it still runs (state `running` and its owner alive).
///
/// # Errors
/// A stored state this nodeup does not know.
fn run_view(journal: &str, r: &Row) -> Result<(RunView, bool), JournalError> {
    let owner = Owner::of(r);
    let recorded = r.string("run_state");
    let recorded = RunState::parse(&recorded).ok_or_else(|| JournalError::UnknownState {
        journal: journal.into(),
        what: "run",
        id: r.string("run_id"),
        found: recorded,
    })?;
    let owner_alive = owner.is_alive(r.int("heartbeat").unwrap_or(0));
    let running = recorded == RunState::Running;
    let state = if running && !owner_alive {
        RunState::Crashed
    } else {
        recorded
    };
    let view = RunView {
        id: r.string("run_id"),
        command: r.string("command"),
        stepfile: r.text("stepfile"),
        stepfile_hash: r.text("stepfile_hash"),
        owner,
        owner_alive,
        started_ms: r.int("started").unwrap_or(0),
        finished_ms: r.int("finished"),
        state,
        nodes: 0,
        orphans: 0,
    };
    Ok((view, running && owner_alive))
}

/// A node row, an orphan when it has a provider, is not settled and its run is not live.
///
/// # Errors
/// A stored stage this nodeup does not know.
fn node_view(journal: &str, r: &Row, run_live: bool) -> Result<NodeView, JournalError> {
    let provider = r.text("provider");
    let state: Stage = r
        .string("node_state")
        .parse()
        .map_err(|e: crate::life::UnknownStage| JournalError::UnknownState {
            journal: journal.into(),
            what: "node",
            id: format!("{}#{}", r.string("node_run"), r.int("seq").unwrap_or(0)),
            found: e.0,
        })?;
    Ok(NodeView {
        run: r.string("node_run"),
        seq: r.int("seq").unwrap_or(0),
        orphan: provider.is_some() && !state.is_settled() && !run_live,
        provider,
        settings: r
            .text("settings")
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
        location: r.string("location"),
        name: r.string("name"),
        provider_id: r.text("provider_id"),
        addresses: r
            .string("addresses")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        login_user: r.text("login_user"),
        state,
        step: r.int("step"),
        steps: r.int("steps"),
        error: r.text("error"),
        created_ms: r.int("created").unwrap_or(0),
        results: Vec::new(),
    })
}

/// A step row.
///
/// # Errors
/// A stored status this nodeup does not know.
fn step_view(journal: &str, r: &Row) -> Result<StepView, JournalError> {
    let status = r.string("status");
    Ok(StepView {
        index: r.int("idx").unwrap_or(0),
        kind: r.string("kind"),
        status: StepStatus::parse(&status).ok_or_else(|| JournalError::UnknownState {
            journal: journal.into(),
            what: "step",
            id: format!("{}#{}", r.string("run_id"), r.int("seq").unwrap_or(0)),
            found: status,
        })?,
        exit_status: r.int("exit_status"),
        duration_s: r.int("duration_ms").unwrap_or(0) as f64 / 1000.0,
        note: r.text("note"),
    })
}

/// The nodes of joined run and node rows, each an orphan as its run says.
fn joined_nodes(journal: &str, rows: &[Row]) -> Result<Vec<NodeView>, JournalError> {
    rows.iter()
        .map(|r| node_view(journal, r, run_view(journal, r)?.1))
        .collect()
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
        let journal = self.describe();
        let mut runs: Vec<RunView> = Vec::new();
        for row in &rows {
            let (view, live) = run_view(&journal, row)?;
            if runs.last().is_none_or(|last| last.id != view.id) {
                runs.push(view);
            }
            let Some(run) = runs.last_mut() else { continue };
            if row.int("seq").is_some() {
                run.nodes += 1;
                run.orphans += usize::from(node_view(&journal, row, live)?.orphan);
            }
        }
        Ok(runs)
    }

    /// One run (by its id or an unambiguous prefix of it), with each node and step result.
    ///
    /// # Errors
    /// No run or several runs match; the journal cannot be read.
    pub async fn run_detail(&self, id: &str) -> Result<RunDetail, JournalError> {
        // A run id is hex: anything else (`%` and `_` would be LIKE's wildcards) names no run.
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(self.no_such_run(format!(
                "no run {id:?}: a run id is hex digits (`nodeup journal` lists them)"
            )));
        }
        let store = self.store().await?;
        let pattern = format!("{}%", id.to_ascii_lowercase());
        let rows = store
            .query(
                &format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.id LIKE $1 LIMIT 2"),
                vec![pattern.into()],
            )
            .await?;
        let journal = self.describe();
        let (mut run, live) = match rows.as_slice() {
            [one] => run_view(&journal, one)?,
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
        let mut nodes = (node_rows.iter())
            .map(|r| node_view(&journal, r, live))
            .collect::<Result<Vec<_>, _>>()?;
        let step_rows = store
            .query(
                "SELECT run_id, seq, idx, kind, status, exit_status, duration_ms, note FROM steps
                 WHERE run_id = $1 ORDER BY seq, finished",
                params(),
            )
            .await?;
        for r in &step_rows {
            if let Some(node) = nodes.iter_mut().find(|n| Some(n.seq) == r.int("seq")) {
                node.results.push(step_view(&journal, r)?);
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
                     AND n.state NOT IN ({})
                     ORDER BY n.created",
                    crate::life::settled_sql()
                ),
                Vec::new(),
            )
            .await?;
        joined_nodes(&self.describe(), &rows)
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
        Ok(joined_nodes(&self.describe(), &rows)?
            .into_iter()
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

    /// Records what cleanup did with a node: its new state and a note. A node settled meanwhile
    /// (another cleanup destroyed it, its run finished it) keeps its record: an outcome never
    /// overwrites a settled one.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub async fn record_cleanup(
        &self,
        node: &NodeView,
        state: Stage,
        note: &str,
    ) -> Result<(), JournalError> {
        let store = self.store().await?;
        store
            .execute(
                &format!(
                    "UPDATE nodes SET state = $1, error = $2, updated = $3
                     WHERE run_id = $4 AND seq = $5 AND state NOT IN ({})",
                    crate::life::settled_sql()
                ),
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
