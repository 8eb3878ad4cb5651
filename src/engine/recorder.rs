//! What happens to one node (or host), said once: each change is an event for the caller's
//! progress callback and, when the node is journalled, a write to its journal entry. The entry is
//! handed to the recorder once, when the deployment begins, and the results carry it from there.

use std::net::SocketAddr;
use std::time::Duration;

use super::options::{Event, Progress};
use crate::deploy::{self, StepResult};
use crate::journal::{NodeEntry, StepRecord};
use crate::life::Stage;
use crate::model::Node;

/// The progress callback and the journal entry of one node.
#[derive(Clone, Default)]
pub struct Recorder {
    progress: Option<Progress>,
    entry: Option<NodeEntry>,
}

impl Recorder {
    /// Events go to `progress`, records to `entry`; either may be absent.
    pub fn new(progress: Option<Progress>, entry: Option<NodeEntry>) -> Self {
        Recorder { progress, entry }
    }

    /// The journal entry, for the results that hand it to the caller.
    pub fn entry(&self) -> Option<NodeEntry> {
        self.entry.clone()
    }

    fn emit(&self, event: Event) {
        if let Some(progress) = &self.progress {
            progress(&event);
        }
    }

    /// The provider is asked to create the node called `name`.
    pub fn creating(&self, name: &str) {
        self.emit(Event::Creating(name.to_string()));
    }

    /// The provider created `node`.
    pub async fn created(&self, node: &Node) {
        if let Some(entry) = &self.entry {
            entry.created(node).await;
        }
        self.emit(Event::Created(node.clone()));
    }

    /// Waiting until the node runs.
    pub fn waiting(&self) {
        self.emit(Event::Waiting);
    }

    /// The node runs; logging in at `addr`.
    pub async fn running(&self, node: &Node, addr: SocketAddr) {
        self.emit(Event::Running(node.clone(), addr));
        if let Some(entry) = &self.entry {
            entry.running(&addr.ip().to_string()).await;
        }
    }

    /// Logging in keeps failing: what it waits for.
    pub fn login_waiting(&self, what: &str) {
        self.emit(Event::LoginWaiting(what.to_string()));
    }

    /// Logged in as `user`.
    pub async fn logged_in(&self, user: &str) {
        self.emit(Event::LoggedIn(user.to_string()));
        if let Some(entry) = &self.entry {
            entry.logged_in(user).await;
        }
    }

    /// The connection was lost; logging in again to resume at step `number`.
    pub fn reconnecting(&self, number: usize) {
        self.emit(Event::Reconnecting(number));
    }

    /// A step failed; the deployment runs again from its first step (run `number`).
    pub fn retrying(&self, number: u32) {
        self.emit(Event::Retrying(number));
    }

    /// Step `number` of `total`, of `kind`, starts.
    pub async fn step_started(&self, (number, total): (usize, usize), kind: &'static str) {
        self.emit(Event::StepStarted {
            index: number,
            total,
            kind,
        });
        if let Some(entry) = &self.entry {
            entry.step_started(number, total).await;
        }
    }

    /// A step that runs long says what it waits for.
    pub fn step_waiting(&self, what: &str) {
        self.emit(Event::StepWaiting(what.to_string()));
    }

    /// Step `number` of `total` ended after `duration`: its result (never its output) goes to the
    /// journal, and a success to the progress callback.
    pub async fn step_finished(
        &self,
        (number, total): (usize, usize),
        kind: &'static str,
        duration: Duration,
        outcome: &Result<StepResult, deploy::Error>,
    ) {
        if let Some(entry) = &self.entry {
            let (ok, status, note) = match outcome {
                Ok(result) => (true, result.status.as_ref(), result.note.clone()),
                Err(e) => (false, e.output().and_then(|o| o.0), crate::error_chain(e)),
            };
            let record = StepRecord {
                index: number,
                kind: kind.into(),
                ok,
                exit_status: status.and_then(|s| s.code()).map(i64::from),
                duration,
                note,
            };
            entry.step_finished(&record).await;
        }
        if let Ok(result) = outcome {
            self.emit(Event::StepFinished {
                index: number,
                total,
                kind,
                elapsed: result.duration,
            });
        }
    }

    /// The deployment failed, for this reason (what becomes of the node is recorded next).
    pub async fn failed(&self, why: &str) {
        if let Some(entry) = &self.entry {
            entry.failed(why).await;
        }
    }

    /// What finally became of the node.
    pub async fn finish(&self, stage: Stage) {
        if let Some(entry) = &self.entry {
            entry.finish(stage).await;
        }
    }
}
