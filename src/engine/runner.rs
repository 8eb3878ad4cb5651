//! The step runner: logs in to a target and runs the steps over one connection, resuming after a
//! lost connection at the step that did not finish, and recording each step in the journal.

use std::time::Duration;

use tokio::time::Instant;

use super::connect::{error_chain, login, LoggedIn, LoginAttempt, LoginOptions};
use super::errors::{Cause, RunFailure};
use super::options::{DeployOptions, Event};
use super::target::Target;
use crate::deploy::{self, Context, Step, StepResult};
use crate::journal::StepRecord;
use crate::ssh::{self, Credentials, ErrorClass, OutputSink};

/// What [`run_steps`] did.
#[derive(Debug, Clone)]
pub struct Run {
    /// The user it logged in as.
    pub user: String,
    /// Each step's result.
    pub steps: Vec<StepResult>,
    /// How many times the connection was lost and resumed.
    pub reconnects: u32,
}

/// One run of steps on one target: the login, the connection, and what to do when it drops.
struct Runner<'a> {
    target: &'a Target,
    creds: &'a Credentials,
    options: &'a DeployOptions,
    login_options: LoginOptions,
    attempts: Vec<LoginAttempt>,
    leftovers: std::sync::Mutex<Vec<String>>,
}

impl<'a> Runner<'a> {
    fn new(target: &'a Target, creds: &'a Credentials, options: &'a DeployOptions) -> Self {
        Runner {
            target,
            creds,
            options,
            login_options: super::settings::login_options(target, options),
            attempts: Vec::new(),
            leftovers: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Logs in, within a fresh time budget.
    async fn login(&mut self) -> Result<LoggedIn, ssh::Error> {
        let deadline = Instant::now() + self.options.timeout;
        let (addr, creds) = (self.target.addr, self.creds);
        login(
            addr,
            creds,
            &self.login_options,
            deadline,
            &mut self.attempts,
        )
        .await
    }

    fn context<'s>(&'s self, logged_in: &'s LoggedIn, sink: Option<OutputSink>) -> Context<'s> {
        Context {
            session: &logged_in.session,
            node: self.target.node.as_ref(),
            home: logged_in.home.clone(),
            is_root: logged_in.is_root,
            sink,
            leftovers: &self.leftovers,
        }
    }

    /// After a lost connection: logs in again as the user that worked, and removes what the
    /// interrupted step left (a half-written temporary file, a script's private directory).
    async fn resume(&mut self, user: String) -> Result<LoggedIn, ssh::Error> {
        self.login_options.users = vec![user];
        let logged_in = self.login().await?;
        if let Err(e) = deploy::remove_leftovers(&self.context(&logged_in, None)).await {
            tracing::warn!(
                "removing what the interrupted step left: {}",
                error_chain(&e)
            );
        }
        Ok(logged_in)
    }

    /// Runs step `number` of `total`: progress events, and its result in the journal.
    async fn step(
        &mut self,
        logged_in: &mut LoggedIn,
        step: &Step,
        (number, total): (usize, usize),
    ) -> Result<StepResult, deploy::Error> {
        let (options, kind) = (self.options, step.kind());
        options.emit(Event::StepStarted {
            index: number,
            total,
            kind,
        });
        if let Some(entry) = &self.target.journal {
            entry.step_started(number, total).await;
        }
        let started = Instant::now();
        let outcome = match step {
            Step::Reboot(reboot) => self.reboot(logged_in, reboot).await,
            step => {
                step.run(&self.context(logged_in, options.output.clone()))
                    .await
            }
        };
        record_step(self.target, (number, kind), started.elapsed(), &outcome).await;
        if let Ok(result) = &outcome {
            options.emit(Event::StepFinished {
                index: number,
                total,
                kind,
                elapsed: result.duration,
            });
        }
        outcome
    }

    /// Reboots the node (through its provider when the target has one, else with its own
    /// `reboot`), waits until it is back with a new boot, and logs in again in `logged_in`'s
    /// place.
    async fn reboot(
        &mut self,
        logged_in: &mut LoggedIn,
        step: &deploy::RebootStep,
    ) -> Result<StepResult, deploy::Error> {
        let started = Instant::now();
        let before = boot_id(&logged_in.session).await?;
        match (&self.target.driver, &self.target.node) {
            (Some(driver), Some(node)) => {
                driver
                    .reboot_node(node)
                    .await
                    .map_err(|e| reboot_failed(format!("the provider could not reboot it: {e}")))?;
            }
            _ => {
                let ctx = self.context(logged_in, None);
                ctx.helper(&reboot_command(ctx.sudo(true)), None).await?;
            }
        }
        let deadline = started + step.timeout();
        self.login_options.users = vec![logged_in.user.clone()];
        loop {
            let fresh = login(
                self.target.addr,
                self.creds,
                &self.login_options,
                deadline,
                &mut self.attempts,
            )
            .await
            .map_err(|e| {
                reboot_failed(format!(
                    "the node did not come back within {:?}: {}",
                    step.timeout(),
                    error_chain(&e)
                ))
            })?;
            if boot_id(&fresh.session).await? != before {
                let old = std::mem::replace(logged_in, fresh);
                old.session.close().await;
                return Ok(StepResult {
                    kind: "reboot",
                    duration: started.elapsed(),
                    note: format!(
                        "rebooted; back after {:.1}s",
                        started.elapsed().as_secs_f64()
                    ),
                    ..Default::default()
                });
            }
            // Still the old boot: the node is not down yet.
            fresh.session.close().await;
            if Instant::now() + REBOOT_POLL >= deadline {
                return Err(reboot_failed(format!(
                    "the node did not reboot within {:?}",
                    step.timeout()
                )));
            }
            tokio::time::sleep(REBOOT_POLL).await;
        }
    }

    fn fail(
        self,
        cause: Cause,
        step: Option<(usize, &'static str)>,
        done: Vec<StepResult>,
    ) -> RunFailure {
        RunFailure {
            step,
            cause,
            attempts: self.attempts,
            completed: done,
        }
    }
}

/// Logs in to `target` and runs `steps` over one connection; a lost connection is resumed, up to
/// `options.max_tries` connections in all, at the step that did not finish (finished steps never
/// run again). With `options.retry_failed_steps`, a failed step runs the whole list again.
pub async fn run_steps(
    target: &Target,
    steps: &Step,
    creds: &Credentials,
    options: &DeployOptions,
) -> Result<Run, RunFailure> {
    let mut runner = Runner::new(target, creds, options);
    let mut results: Vec<StepResult> = Vec::new();
    let flat = steps.flatten();
    runner.login_options.planned_commands = Step::commands(&flat);
    let mut logged_in = match runner.login().await {
        Ok(l) => l,
        Err(e) => return Err(runner.fail(Cause::Login(e), None, results)),
    };
    options.emit(Event::LoggedIn(logged_in.user.clone()));
    if let Some(entry) = &target.journal {
        entry.logged_in(&logged_in.user).await;
    }
    let (mut connections, mut runs, mut index) = (1, 1, 0);
    while index < flat.len() {
        let step = flat[index];
        let (number, kind) = (index + 1, step.kind());
        match runner
            .step(&mut logged_in, step, (number, flat.len()))
            .await
        {
            Ok(result) => {
                results.push(result);
                index += 1;
            }
            Err(e) if e.class() == ErrorClass::Reconnect && connections < options.max_tries => {
                tracing::warn!(
                    step = number,
                    "connection lost ({}); resuming",
                    error_chain(&e)
                );
                options.emit(Event::Reconnecting(number));
                connections += 1;
                // What the interrupted step left is removed first: one command more.
                runner.login_options.planned_commands =
                    Step::commands(&flat[index..]).map(|n| n + 1);
                logged_in = match runner.resume(logged_in.user.clone()).await {
                    Ok(l) => l,
                    Err(e) => {
                        return Err(runner.fail(Cause::Login(e), Some((number, kind)), results))
                    }
                };
            }
            Err(e) if options.retry_failed_steps && runs < options.max_tries => {
                runs += 1;
                tracing::warn!(
                    step = number,
                    "{}; running the deployment again",
                    error_chain(&e)
                );
                options.emit(Event::Retrying(runs));
                let ctx = runner.context(&logged_in, None);
                if let Err(e) = deploy::remove_leftovers(&ctx).await {
                    tracing::warn!("removing what the failed step left: {}", error_chain(&e));
                }
                results.clear();
                index = 0;
            }
            Err(e) => return Err(runner.fail(Cause::Step(e), Some((number, kind)), results)),
        }
    }
    let user = logged_in.user.clone();
    logged_in.session.close().await;
    Ok(Run {
        user,
        steps: results,
        reconnects: connections - 1,
    })
}

/// How long to wait before logging in again to a node that still runs its old boot.
const REBOOT_POLL: Duration = Duration::from_secs(1);

/// The node's boot id: another after a reboot.
async fn boot_id(session: &ssh::SshSession) -> Result<String, deploy::Error> {
    let out = session
        .exec(
            "cat /proc/sys/kernel/random/boot_id",
            &ssh::ExecOptions::default(),
        )
        .await?;
    let id = out.stdout.text().trim().to_string();
    if out.status != Some(ssh::ExitStatus::Code(0)) || id.is_empty() {
        return Err(reboot_failed(format!(
            "its boot id cannot be read ({}): {}",
            out.status.map(|s| s.to_string()).unwrap_or_default(),
            out.stderr.text().trim()
        )));
    }
    Ok(id)
}

/// The node's own reboot, started a second after the command returns (so that its answer gets
/// back before the connection goes down), as root.
fn reboot_command(sudo: &str) -> ssh::ShScript<'static> {
    ssh::ShScript {
        text: r#"nohup sh -c 'sleep 1; reboot || shutdown -r now' </dev/null >/dev/null 2>&1 &"#,
        args: Vec::new(),
        sudo: !sudo.is_empty(),
        name: "reboot".into(),
    }
}

fn reboot_failed(why: String) -> deploy::Error {
    deploy::Error::Custom {
        message: format!("reboot: {why}"),
        result: None,
    }
}

/// Records a step's result in the target's journal entry: status, exit status, duration, and the
/// note or (shortened) error; never the step's output.
async fn record_step(
    target: &Target,
    (index, kind): (usize, &str),
    duration: Duration,
    outcome: &Result<StepResult, deploy::Error>,
) {
    let Some(entry) = &target.journal else { return };
    let (ok, status, note) = match outcome {
        Ok(result) => (true, result.status.as_ref(), result.note.clone()),
        Err(e) => (false, e.output().and_then(|o| o.0), error_chain(e)),
    };
    let record = StepRecord {
        index,
        kind: kind.into(),
        ok,
        exit_status: status.and_then(|s| s.code()).map(i64::from),
        duration,
        note,
    };
    entry.step_finished(&record).await;
}
