//! The reboot step: reboot the node (a new kernel, a changed boot setting), wait until it is back
//! with a new boot, log in again, go on. It asks the machine ([`super::Machine`], the engine's)
//! for what a session alone cannot do: the provider's reboot, a new login, and handing the new
//! session to the steps that follow.

use std::time::Duration;

use tokio::time::Instant;

use super::{Context, Error, StepResult};
use crate::ssh::{self, ExecOptions, ExitStatus, ShScript, SshSession};

/// How long a reboot may take unless the step says otherwise.
pub const DEFAULT_REBOOT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long to wait before logging in again to a node that still runs its old boot.
pub const REBOOT_POLL: Duration = Duration::from_secs(1);

/// Starts the node's own reboot a second after it returns (so that its answer gets back before the
/// connection goes down), trying `reboot`, `shutdown -r now` and `systemctl reboot` in turn; what
/// they say goes to `$1/log` and how the last one ended to `$1/status`, which a login to the old
/// boot reads ([`OWN_REBOOT_CHECK`]). `$1` is a fresh private directory.
const OWN_REBOOT: &str = r#"mkdir -m 0700 -- "$1" || exit
nohup sh -c '{ sleep 1; reboot || shutdown -r now || systemctl reboot; } >"$1/log" 2>&1
echo $? >"$1/status"' sh "$1" </dev/null >/dev/null 2>&1 &"#;

/// Says, on the old boot, whether the reboot commands failed: exit 3 with their status and
/// output when they did, 0 when they have not ended (or succeeded: the node goes down).
const OWN_REBOOT_CHECK: &str = r#"[ -f "$1/status" ] || exit 0
s=$(cat -- "$1/status")
[ "$s" = 0 ] && exit 0
echo "exit status $s"
cat -- "$1/log"
exit 3"#;

/// The exit status [`OWN_REBOOT_CHECK`] ends with when the reboot commands failed.
const REBOOT_COMMANDS_FAILED: u32 = 3;

/// Reboots the node: through its provider when the deployment has both (`deploy`), else with the
/// node's own `reboot` (as root); then waits until SSH answers with a new
/// `/proc/sys/kernel/random/boot_id`, and logs in again as the same user.
#[derive(Debug, Clone, Default)]
pub struct RebootStep {
    /// The longest wait for the node to come back ([`DEFAULT_REBOOT_TIMEOUT`] when `None`).
    pub timeout: Option<Duration>,
}

impl RebootStep {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err("the timeout must be longer than zero".into());
        }
        Ok(())
    }

    /// The longest wait for the node to come back.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_REBOOT_TIMEOUT)
    }

    /// Reboots, waits for the new boot, and hands its session to the machine. A reboot that
    /// cannot start (no `sudo` rights, the reboot commands failing) fails at once with what it
    /// said.
    pub(super) async fn run(&self, ctx: &Context<'_>) -> Result<StepResult, Error> {
        let machine = ctx.machine.ok_or_else(|| {
            failed("a reboot step runs only under the engine (engine::run_steps), which logs in again after it".into())
        })?;
        let started = Instant::now();
        let deadline = started + self.timeout();
        let before = boot_id(ctx.session).await?;
        let own = match machine.reboot_through_provider().await {
            Some(Ok(())) => None,
            Some(Err(e)) => {
                let why = crate::error_chain(&e);
                return Err(failed(format!("the provider could not reboot it: {why}")));
            }
            None => Some(start_own_reboot(ctx).await?),
        };
        loop {
            machine.waiting(&format!(
                "waiting for the node to go down and come back with a new boot ({:.0}s of {:?})",
                started.elapsed().as_secs_f64(),
                self.timeout()
            ));
            let session = machine.log_in_again(deadline).await.map_err(|e| {
                failed(format!(
                    "the node did not come back within {:?}: {}",
                    self.timeout(),
                    crate::error_chain(&e)
                ))
            })?;
            if boot_id(&session).await? != before {
                if let Some(dir) = &own {
                    clean_up(&session, dir, ctx).await;
                }
                machine.adopt(session);
                return Ok(StepResult {
                    note: format!(
                        "rebooted; back after {:.1}s",
                        started.elapsed().as_secs_f64()
                    ),
                    ..Default::default()
                });
            }
            // Still the old boot: the node is not down yet, or its reboot failed.
            let verdict = match &own {
                Some(dir) => own_reboot_failed(&session, dir, ctx).await,
                None => Ok(()),
            };
            session.close().await;
            verdict?;
            if Instant::now() + REBOOT_POLL >= deadline {
                return Err(failed(format!(
                    "the node did not reboot within {:?}",
                    self.timeout()
                )));
            }
            tokio::time::sleep(REBOOT_POLL).await;
        }
    }
}

/// Starts the node's own reboot in a private directory (returned); a `sudo` that needs a password
/// fails here, at once.
async fn start_own_reboot(ctx: &Context<'_>) -> Result<String, Error> {
    let dir = ctx.private_dir_name();
    let script = ShScript {
        text: OWN_REBOOT,
        args: vec![dir.clone()],
        sudo: !ctx.sudo(true).is_empty(),
        name: "starting the node's own reboot".into(),
    };
    ctx.helper(&script, None).await?;
    Ok(dir)
}

/// An error when the node's own reboot commands failed, with their status and output.
async fn own_reboot_failed(
    session: &SshSession,
    dir: &str,
    ctx: &Context<'_>,
) -> Result<(), Error> {
    let check = ShScript {
        text: OWN_REBOOT_CHECK,
        args: vec![dir.to_string()],
        sudo: !ctx.sudo(true).is_empty(),
        name: "reading how the reboot went".into(),
    };
    let out = session.exec_script(&check, &ExecOptions::default()).await?;
    if out.status == Some(ExitStatus::Code(REBOOT_COMMANDS_FAILED)) {
        return Err(failed(format!(
            "the node's own reboot failed (reboot, shutdown -r now and systemctl reboot were \
             tried): {}",
            out.stdout.text().trim()
        )));
    }
    Ok(())
}

/// Removes the reboot's private directory over the new session (best effort: it holds only the
/// reboot's output).
async fn clean_up(session: &SshSession, dir: &str, ctx: &Context<'_>) {
    let remove = ShScript {
        text: r#"exec rm -rf -- "$1""#,
        args: vec![dir.to_string()],
        sudo: !ctx.sudo(true).is_empty(),
        name: format!("removing {dir}"),
    };
    match session.exec_script(&remove, &ExecOptions::default()).await {
        Ok(out) if out.status == Some(ExitStatus::Code(0)) => ctx.untrack(dir),
        _ => tracing::warn!("could not remove {dir} after the reboot"),
    }
}

/// The node's boot id: another after a reboot.
async fn boot_id(session: &SshSession) -> Result<String, Error> {
    let out = session
        .exec(
            "cat /proc/sys/kernel/random/boot_id",
            &ssh::ExecOptions::default(),
        )
        .await?;
    let id = out.stdout.text().trim().to_string();
    if out.status != Some(ExitStatus::Code(0)) || id.is_empty() {
        return Err(failed(format!(
            "its boot id cannot be read ({}): {}",
            out.status.map(|s| s.to_string()).unwrap_or_default(),
            out.stderr.text().trim()
        )));
    }
    Ok(id)
}

fn failed(why: String) -> Error {
    Error::Custom {
        message: format!("reboot: {why}"),
        result: None,
    }
}
