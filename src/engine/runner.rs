//! The step runner: logs in to a target and runs the steps over one connection, resuming after a
//! lost connection at the step that did not finish, and recording each step through the target's
//! [`Recorder`]. What a step needs of the machine beyond its session (a reboot) it asks of the
//! runner's [`Machine`].

use std::sync::Mutex;

use tokio::time::Instant;

use super::connect::{error_chain, login, LoggedIn, LoginAttempt, LoginOptions};
use super::errors::{Cause, RunFailure};
use super::options::DeployOptions;
use super::recorder::Recorder;
use super::target::Target;
use crate::deploy::{self, Context, Machine, Step, StepResult};
use crate::driver::ProviderError;
use crate::ssh::{self, Credentials, ErrorClass, OutputSink, Plan, SshSession};

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
    recorder: Recorder,
    login_options: Mutex<LoginOptions>,
    attempts: Mutex<Vec<LoginAttempt>>,
    leftovers: Mutex<Vec<String>>,
    /// A session a step made the one to go on with (after a reboot).
    adopted: Mutex<Option<SshSession>>,
}

impl<'a> Runner<'a> {
    fn new(target: &'a Target, creds: &'a Credentials, options: &'a DeployOptions) -> Self {
        let recorder = Recorder::new(options.progress.clone(), target.journal.clone());
        let mut login_options = super::settings::login_options(target, options);
        let said = recorder.clone();
        login_options.waiting = Some(std::sync::Arc::new(move |what: &str| {
            said.login_waiting(what)
        }));
        Runner {
            target,
            creds,
            options,
            recorder,
            login_options: Mutex::new(login_options),
            attempts: Mutex::default(),
            leftovers: Mutex::default(),
            adopted: Mutex::default(),
        }
    }

    /// Logs in (as `user` only, when given), within `deadline`; every attempt is recorded.
    async fn login_until(
        &self,
        user: Option<&str>,
        deadline: Instant,
    ) -> Result<LoggedIn, ssh::Error> {
        let mut options = lock(&self.login_options).clone();
        if let Some(user) = user {
            options.users = vec![user.to_string()];
        }
        let mut attempts = std::mem::take(&mut *lock(&self.attempts));
        let outcome = login(
            self.target.addr,
            self.creds,
            &options,
            deadline,
            &mut attempts,
        )
        .await;
        *lock(&self.attempts) = attempts;
        outcome
    }

    /// Logs in, within a fresh time budget.
    async fn login(&self, user: Option<&str>) -> Result<LoggedIn, ssh::Error> {
        self.login_until(user, Instant::now() + self.options.timeout)
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
            machine: Some(self),
            cancel: Some(self.options.cancel.clone()),
        }
    }

    /// After a lost connection: logs in again as the user that worked, and removes what the
    /// interrupted step left (a half-written temporary file, a script's private directory).
    async fn resume(&self, user: &str) -> Result<LoggedIn, ssh::Error> {
        let logged_in = self.login(Some(user)).await?;
        if let Err(e) = deploy::remove_leftovers(&self.context(&logged_in, None)).await {
            tracing::warn!(
                "removing what the interrupted step left: {}",
                error_chain(&e)
            );
        }
        Ok(logged_in)
    }

    /// Runs step `number` of `total`, recorded; a session the step handed over (a reboot's)
    /// takes the place of `logged_in`'s.
    async fn step(
        &self,
        logged_in: &mut LoggedIn,
        step: &Step,
        place: (usize, usize),
    ) -> Result<StepResult, deploy::Error> {
        let kind = step.kind();
        self.recorder.step_started(place, kind).await;
        let started = Instant::now();
        let outcome = step
            .run(&self.context(logged_in, self.options.output.clone()))
            .await;
        let adopted = lock(&self.adopted).take();
        if let Some(session) = adopted {
            let old = std::mem::replace(&mut logged_in.session, session);
            old.close().await;
        }
        (self.recorder)
            .step_finished(place, kind, started.elapsed(), &outcome)
            .await;
        outcome
    }

    /// The deployment was cancelled during step `step`: what the step left on the node is removed
    /// (a cancelled script was ended by the step itself), and the connection closed.
    async fn cancelled(
        &self,
        logged_in: LoggedIn,
        step: Option<(usize, &'static str)>,
        done: Vec<StepResult>,
    ) -> RunFailure {
        if let Err(e) = deploy::remove_leftovers(&self.context(&logged_in, None)).await {
            tracing::warn!("removing what the cancelled step left: {}", error_chain(&e));
        }
        logged_in.session.close().await;
        self.fail(Cause::Cancelled, step, done)
    }

    fn fail(
        &self,
        cause: Cause,
        step: Option<(usize, &'static str)>,
        done: Vec<StepResult>,
    ) -> RunFailure {
        RunFailure {
            step,
            cause,
            attempts: std::mem::take(&mut *lock(&self.attempts)),
            completed: done,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait::async_trait]
impl Machine for Runner<'_> {
    async fn reboot_through_provider(&self) -> Option<Result<(), ProviderError>> {
        let (driver, node) = (self.target.driver.as_ref()?, self.target.node.as_ref()?);
        Some(driver.reboot_node(node).await)
    }

    async fn log_in_again(&self, deadline: Instant) -> Result<SshSession, ssh::Error> {
        let user = lock(&self.login_options).users.first().cloned();
        Ok(self.login_until(user.as_deref(), deadline).await?.session)
    }

    fn adopt(&self, session: SshSession) {
        *lock(&self.adopted) = Some(session);
    }

    fn waiting(&self, what: &str) {
        self.recorder.step_waiting(what);
    }
}

/// Where a run of the steps stands: the next step, what finished, the connections used and the
/// runs of the whole list begun.
struct Progress {
    index: usize,
    results: Vec<StepResult>,
    connections: u32,
    runs: u32,
}

impl Runner<'_> {
    /// The first login, unless the deployment is cancelled first.
    async fn first_login(&self) -> Result<LoggedIn, RunFailure> {
        let login = tokio::select! {
            login = self.login(None) => login,
            _ = self.options.cancel.cancelled() => {
                return Err(self.fail(Cause::Cancelled, None, Vec::new()));
            }
        };
        let logged_in = login.map_err(|e| self.fail(Cause::Login(e), None, Vec::new()))?;
        // From now on, every login is as the user that worked.
        lock(&self.login_options).users = vec![logged_in.user.clone()];
        self.recorder.logged_in(&logged_in.user).await;
        Ok(logged_in)
    }

    /// The connection was lost during step `number`: logs in again; the step runs again, after
    /// one command that removes what it left (`rest`: the steps from it on).
    async fn reconnect(
        &self,
        lost: &deploy::Error,
        number: usize,
        user: &str,
        rest: &[&Step],
        plan: &Plan,
    ) -> Result<LoggedIn, ssh::Error> {
        tracing::warn!(
            step = number,
            "connection lost ({}); resuming",
            error_chain(lost)
        );
        self.recorder.reconnecting(number);
        if let Some(commands) = Step::commands(rest) {
            plan.reset(commands + 1);
        }
        self.resume(user).await
    }

    /// Step `number` failed and the whole list runs again (`retry_failed_steps`), as run `runs`:
    /// what the step left is removed first.
    async fn restart(
        &self,
        failed: &deploy::Error,
        (number, runs): (usize, u32),
        logged_in: &LoggedIn,
        all: &[&Step],
        plan: &Plan,
    ) {
        tracing::warn!(
            step = number,
            "{}; running the deployment again",
            error_chain(failed)
        );
        self.recorder.retrying(runs);
        if let Err(e) = deploy::remove_leftovers(&self.context(logged_in, None)).await {
            tracing::warn!("removing what the failed step left: {}", error_chain(&e));
        }
        if let Some(commands) = Step::commands(all) {
            plan.reset(commands);
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
    let runner = Runner::new(target, creds, options);
    let flat = steps.flatten();
    let plan = Plan::of(Step::commands(&flat));
    lock(&runner.login_options).plan = plan.clone();
    let mut logged_in = runner.first_login().await?;
    let mut at = Progress {
        index: 0,
        results: Vec::new(),
        connections: 1,
        runs: 1,
    };
    while at.index < flat.len() {
        let step = flat[at.index];
        let number = at.index + 1;
        let place = Some((number, step.kind()));
        if options.cancel.is_cancelled() {
            return Err(runner.cancelled(logged_in, place, at.results).await);
        }
        match runner
            .step(&mut logged_in, step, (number, flat.len()))
            .await
        {
            Err(e) if options.cancel.is_cancelled() || e.is_cancelled() => {
                return Err(runner.cancelled(logged_in, place, at.results).await);
            }
            Ok(result) => {
                at.results.push(result);
                at.index += 1;
            }
            Err(e) if e.class() == ErrorClass::Reconnect && at.connections < options.max_tries => {
                at.connections += 1;
                let rest = &flat[at.index..];
                logged_in = match runner
                    .reconnect(&e, number, &logged_in.user, rest, &plan)
                    .await
                {
                    Ok(l) => l,
                    Err(e) => return Err(runner.fail(Cause::Login(e), place, at.results)),
                };
            }
            Err(e) if options.retry_failed_steps && at.runs < options.max_tries => {
                at.runs += 1;
                runner
                    .restart(&e, (number, at.runs), &logged_in, &flat, &plan)
                    .await;
                at.results.clear();
                at.index = 0;
            }
            Err(e) => return Err(runner.fail(Cause::Step(e), place, at.results)),
        }
    }
    let user = logged_in.user.clone();
    logged_in.session.close().await;
    Ok(Run {
        user,
        steps: at.results,
        reconnects: at.connections - 1,
    })
}
