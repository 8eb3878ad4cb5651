//! A node's life under nodeup, in one vocabulary: the stage the journal records, the progress
//! view counts and the summaries show ([`Stage`]). The engine's events say which stage they move a
//! node to; what finally became of a node is one of the settled stages.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Where a node (or, for `run`, a host) is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Not started yet: waiting for a slot of the fleet.
    Queued,
    /// `create_node` was called (or is about to be).
    Creating,
    /// Created; waiting until it runs and has an address.
    Waiting,
    /// Running; logging in.
    LoggingIn,
    /// Running its steps.
    Provisioning,
    /// Deployed: the node is meant to stay.
    Done,
    /// Its deployment failed; what happens to it is recorded next (destroyed or kept).
    Failed,
    /// Kept on purpose after a failure.
    Kept,
    /// Destroyed (or found never to have been made).
    Destroyed,
    /// Cancelled, and destroying it failed (or nothing was asked to).
    Cancelled,
}

/// Every stage, in the order of a life.
pub const STAGES: [Stage; 10] = [
    Stage::Queued,
    Stage::Creating,
    Stage::Waiting,
    Stage::LoggingIn,
    Stage::Provisioning,
    Stage::Done,
    Stage::Failed,
    Stage::Kept,
    Stage::Destroyed,
    Stage::Cancelled,
];

impl Stage {
    /// The word for it, as the journal stores it and `--json` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Queued => "queued",
            Stage::Creating => "creating",
            Stage::Waiting => "waiting",
            Stage::LoggingIn => "logging-in",
            Stage::Provisioning => "provisioning",
            Stage::Done => "done",
            Stage::Failed => "failed",
            Stage::Kept => "kept",
            Stage::Destroyed => "destroyed",
            Stage::Cancelled => "cancelled",
        }
    }

    /// Whether nothing more is to be done with a node in this stage (it is not an orphan): it is
    /// deployed, kept on purpose, or gone.
    pub fn is_settled(self) -> bool {
        matches!(self, Stage::Done | Stage::Kept | Stage::Destroyed)
    }

    /// Whether the node's work is over, one way or another (the settled stages, and a failure or
    /// cancellation whose node is left).
    pub fn is_over(self) -> bool {
        self.is_settled() || matches!(self, Stage::Failed | Stage::Cancelled)
    }
}

/// The settled stages as an SQL list (`'done', 'kept', 'destroyed'`), for the journal's queries.
pub fn settled_sql() -> String {
    STAGES
        .iter()
        .filter(|s| s.is_settled())
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage word that nodeup does not know (a journal written by another version, or edited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage {0:?} (known: {known})", known = STAGES.map(Stage::as_str).join(", "))]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(text: &str) -> Result<Self, UnknownStage> {
        STAGES
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownStage(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_reads_back_as_written_and_an_unknown_one_is_an_error() {
        for stage in STAGES {
            assert_eq!(stage.as_str().parse::<Stage>(), Ok(stage));
            assert_eq!(
                serde_json::to_value(stage).unwrap(),
                serde_json::Value::String(stage.to_string())
            );
        }
        let e = "exploded".parse::<Stage>().unwrap_err().to_string();
        assert!(e.contains("unknown stage \"exploded\""), "{e}");
    }
}
