//! The wait-cloud-init step: wait until cloud-init has finished configuring the node (packages,
//! users, mounts), so that later steps do not race it for apt's lock or a user it creates.

use std::time::Duration;

use super::{Context, Error, StepResult};
use crate::ssh::{ExecOptions, ExitStatus, ShScript};

/// How long the wait lasts unless the step says otherwise.
pub const DEFAULT_CLOUD_INIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What the step runs: `cloud-init status --wait` where cloud-init exists (its status line and
/// exit status passed on), a line saying there is nothing to wait for where it does not.
const WAIT: &str = r#"if ! command -v cloud-init >/dev/null 2>&1; then
  echo nodeup-no-cloud-init
  exit 0
fi
exec cloud-init status --wait"#;

/// What cloud-init's status says of a failed run.
const STATUS_ERROR: &str = "status: error";

/// cloud-init's exit status for a run that finished with recoverable errors (a deprecated key, a
/// module that warned): finished, so the step goes on, and says so.
const RECOVERABLE: u32 = 2;

/// Waits for cloud-init to finish; fails when it reports an error, with its output.
#[derive(Debug, Clone, Default)]
pub struct CloudInitStep {
    /// The longest wait ([`DEFAULT_CLOUD_INIT_TIMEOUT`] when `None`).
    pub timeout: Option<Duration>,
}

impl CloudInitStep {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err("the timeout must be longer than zero".into());
        }
        Ok(())
    }

    pub(super) async fn run(&self, ctx: &Context<'_>) -> Result<StepResult, Error> {
        let wait = ShScript {
            text: WAIT,
            args: Vec::new(),
            sudo: false,
            name: "cloud-init status --wait".into(),
        };
        let options = ExecOptions {
            timeout: Some(self.timeout.unwrap_or(DEFAULT_CLOUD_INIT_TIMEOUT)),
            sink: ctx.sink.clone(),
            ..Default::default()
        };
        let out = ctx.session.exec_script(&wait, &options).await?;
        let text = out.stdout.text().into_owned();
        let status = out.status.clone().unwrap_or(ExitStatus::Code(u32::MAX));
        let note = if text.contains("nodeup-no-cloud-init") {
            "no cloud-init on the node: nothing to wait for".to_string()
        } else if status == ExitStatus::Code(RECOVERABLE) {
            "cloud-init finished, with recoverable errors".to_string()
        } else {
            "cloud-init finished".to_string()
        };
        let result = StepResult {
            kind: "wait-cloud-init",
            status: Some(status.clone()),
            stdout: out.stdout,
            stderr: out.stderr,
            duration: Duration::ZERO,
            note,
        };
        let finished = matches!(status, ExitStatus::Code(0 | RECOVERABLE));
        if finished && !text.contains(STATUS_ERROR) {
            return Ok(result);
        }
        let said = text
            .lines()
            .chain(result.stderr.text().lines())
            .rfind(|l| !l.trim_matches('.').trim().is_empty())
            .unwrap_or("")
            .to_string();
        Err(Error::Custom {
            message: format!("cloud-init did not finish cleanly ({status}): {said}"),
            result: Some(Box::new(result)),
        })
    }
}
