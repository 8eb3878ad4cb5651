//! Deployment steps: what runs on a node once nodeup is logged in.
//!
//! A [`Step`] is an SSH key to authorize, a file to upload, a script to run, or several steps in
//! order. Steps are checked ([`Step::validate`]) before any node is created; each step runs over the
//! node's one SSH session and gives a [`StepResult`].

mod cloud_init;
mod file;
mod reboot;
mod script;
mod ssh_key;
pub mod stepfile;

use std::time::Duration;

use std::sync::Mutex;

use serde::Serialize;

use crate::ssh::{self, Captured, ExitStatus, OutputSink, SshSession};

pub use cloud_init::{CloudInitStep, DEFAULT_CLOUD_INIT_TIMEOUT};
pub use file::FileStep;
pub use reboot::{RebootStep, DEFAULT_REBOOT_TIMEOUT, REBOOT_POLL};
pub use script::{ScriptSource, ScriptStep};
pub use ssh_key::SshKeyStep;

/// A deployment step of your own, for library users: it runs over the node's SSH session
/// (`ctx.session`: exec, upload, read files), sees the node when there is one (`ctx.node`), and
/// gives a [`StepResult`]. Put it in a deployment as `Step::Custom(Arc::new(MyStep))`, alone or
/// inside `Step::Multi`; it is validated before any node is created, like the built-in steps.
#[async_trait::async_trait]
pub trait CustomStep: Send + Sync + std::fmt::Debug {
    /// Its kind, as progress and results name it (e.g. `apt-install`).
    fn kind(&self) -> &'static str;

    /// Checks what can be checked before a node exists; the message says what to fix.
    ///
    /// # Errors
    /// What is wrong with the step.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Runs the step on the node.
    ///
    /// # Errors
    /// [`Error::Custom`] for a failure of its own; [`Error::Ssh`] (from `?` on session calls)
    /// when the connection fails, which the engine resumes like any other step's.
    async fn run(&self, ctx: &Context<'_>) -> Result<StepResult, Error>;
}

/// What a step may ask of the machine beyond its session: what a reboot needs. The engine gives
/// it ([`Context::machine`]); outside the engine there is none.
#[async_trait::async_trait]
pub trait Machine: Send + Sync {
    /// Asks the machine's provider to reboot it, when the deployment has one for it (`deploy`);
    /// `None` when it has not (`run`): the step reboots the machine from inside.
    async fn reboot_through_provider(&self) -> Option<Result<(), crate::driver::ProviderError>>;

    /// Logs in again, as the user logged in now, trying until `deadline`.
    ///
    /// # Errors
    /// No login worked by then.
    async fn log_in_again(&self, deadline: tokio::time::Instant) -> Result<SshSession, ssh::Error>;

    /// Makes `session` the one later steps run over (the step's own session is gone).
    fn adopt(&self, session: SshSession);

    /// Says on the progress line what the step waits for.
    fn waiting(&self, what: &str);
}

/// One deployment step.
#[derive(Debug, Clone)]
pub enum Step {
    /// Add a public key to the login user's authorized_keys.
    SshKey(SshKeyStep),
    /// Upload a local file.
    File(FileStep),
    /// Run a script.
    Script(ScriptStep),
    /// Wait until cloud-init has finished (`cloud-init status --wait`); fail if it failed.
    WaitCloudInit(CloudInitStep),
    /// Reboot the node, wait until it is back with a new boot, log in again.
    Reboot(RebootStep),
    /// A step of your own.
    Custom(std::sync::Arc<dyn CustomStep>),
    /// Several steps, in order.
    Multi(Vec<Step>),
}

impl Step {
    /// The step's kind as users write it: `ssh-key`, `file`, `script`, `wait-cloud-init`, `reboot`, `multi`.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::SshKey(_) => "ssh-key",
            Step::File(_) => "file",
            Step::Script(_) => "script",
            Step::WaitCloudInit(_) => "wait-cloud-init",
            Step::Reboot(_) => "reboot",
            Step::Custom(step) => step.kind(),
            Step::Multi(_) => "multi",
        }
    }

    /// The steps to run, in order, with `Multi` unfolded.
    pub fn flatten(&self) -> Vec<&Step> {
        match self {
            Step::Multi(steps) => steps.iter().flat_map(Step::flatten).collect(),
            step => vec![step],
        }
    }

    /// How many commands the steps send over SSH, when that is known (not for custom steps): the
    /// plan ([`ssh::Plan`]) that the sessions of a deployment make channels ready for.
    pub fn commands(steps: &[&Step]) -> Option<usize> {
        steps.iter().try_fold(0, |sum, step| {
            let n = match step {
                Step::SshKey(_) | Step::File(_) | Step::WaitCloudInit(_) => Some(1),
                // The boot id, the reboot, the boot id after it and the clean-up.
                Step::Reboot(_) => Some(4),
                Step::Script(s) => Some(if s.keep { 1 } else { 2 }),
                Step::Custom(_) => None,
                Step::Multi(inner) => Step::commands(&inner.iter().collect::<Vec<_>>()),
            };
            n.map(|n| sum + n)
        })
    }

    /// Checks what can be checked before a node exists: local files are readable, keys parse.
    /// Errors name the step (1-based, in flattened order).
    pub fn validate(&self) -> Result<(), Error> {
        for (i, step) in self.flatten().into_iter().enumerate() {
            let invalid = |message: String| Error::Invalid {
                step: i + 1,
                kind: step.kind(),
                message,
            };
            match step {
                Step::SshKey(s) => s.validate().map_err(invalid)?,
                Step::File(s) => s.validate().map_err(invalid)?,
                Step::Script(s) => s.validate().map_err(invalid)?,
                Step::WaitCloudInit(s) => s.validate().map_err(invalid)?,
                Step::Reboot(s) => s.validate().map_err(invalid)?,
                Step::Custom(s) => s.validate().map_err(invalid)?,
                Step::Multi(_) => {}
            }
        }
        Ok(())
    }

    /// Runs one step.
    pub async fn run(&self, ctx: &Context<'_>) -> Result<StepResult, Error> {
        let started = tokio::time::Instant::now();
        let mut result = match self {
            Step::SshKey(s) => s.run(ctx).await?,
            Step::File(s) => s.run(ctx).await?,
            Step::Script(s) => s.run(ctx).await?,
            Step::WaitCloudInit(s) => s.run(ctx).await?,
            Step::Reboot(s) => s.run(ctx).await?,
            Step::Custom(s) => s.run(ctx).await?,
            Step::Multi(steps) => {
                for step in steps {
                    Box::pin(step.run(ctx)).await?;
                }
                StepResult::default()
            }
        };
        result.kind = self.kind();
        result.duration = started.elapsed();
        Ok(result)
    }
}

/// What a step runs with: the session, and facts about the login user.
pub struct Context<'a> {
    /// The node's session.
    pub session: &'a SshSession,
    /// The node, when the steps run on one nodeup created or listed (not for `run` on hosts).
    pub node: Option<&'a crate::model::Node>,
    /// The login user's home directory on the node.
    pub home: String,
    /// Whether the login user is root (then `sudo` is not needed).
    pub is_root: bool,
    /// Where script output goes as it arrives.
    pub sink: Option<OutputSink>,
    /// Remote temporary paths a step has made and not yet removed. Should the connection be lost,
    /// whoever resumes removes them ([`remove_leftovers`]).
    pub leftovers: &'a Mutex<Vec<String>>,
    /// What the step may ask of the machine beyond its session (the engine's; `None` elsewhere).
    pub machine: Option<&'a dyn Machine>,
    /// Cancels the deployment: a step that runs long (a script) ends what it started on the node
    /// and returns [`ssh::Error::Cancelled`].
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

impl Context<'_> {
    /// `sudo -n` when a step asks for root and the login user is not root; nothing otherwise.
    pub fn sudo(&self, wanted: bool) -> &'static str {
        if wanted && !self.is_root {
            "sudo -n "
        } else {
            ""
        }
    }

    /// A fresh directory (0700, unpredictable name) under the login user's home, tracked as a
    /// leftover until [`Context::remove`] removes it.
    pub async fn private_dir(&self) -> Result<String, Error> {
        let dir = self.private_dir_name();
        self.check(
            &format!("mkdir -m 0700 -- {}", ssh::quote(&dir)),
            "creating a private directory",
        )
        .await?;
        Ok(dir)
    }

    /// The path of a private directory to make (an unpredictable name under the login user's
    /// home), tracked as a leftover from now on; the caller makes it (0700).
    pub fn private_dir_name(&self) -> String {
        let dir = format!(
            "{}/.nodeup-{:016x}",
            self.home.trim_end_matches('/'),
            rand::random::<u64>()
        );
        self.track(&dir);
        dir
    }

    /// Records a remote temporary path, to be removed should the step not finish.
    pub fn track(&self, path: &str) {
        self.leftovers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.to_string());
    }

    /// Forgets a temporary path that is gone (renamed into place, or removed).
    pub fn untrack(&self, path: &str) {
        self.leftovers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != path);
    }

    /// Removes a temporary path (as root when `sudo` says so) and forgets it.
    pub async fn remove(&self, path: &str, sudo: bool) -> Result<(), Error> {
        let remove = ssh::ShScript {
            text: r#"exec rm -rf -- "$1""#,
            args: vec![path.to_string()],
            sudo: !self.sudo(sudo).is_empty(),
            name: format!("removing {path}"),
        };
        self.helper(&remove, None).await?;
        self.untrack(path);
        Ok(())
    }

    /// Runs a helper command that must succeed; its stderr goes into the error.
    pub async fn check(&self, command: &str, what: &str) -> Result<(), Error> {
        let out = self
            .session
            .exec(command, &ssh::ExecOptions::default())
            .await?;
        if out.status == Some(ExitStatus::Code(0)) {
            return Ok(());
        }
        Err(helper_failed(what, &out))
    }

    /// Runs a helper script of nodeup's own that must succeed, with `stdin` as its input;
    /// returns what it printed. A status other than 0 is an [`Error::Helper`] holding its stderr,
    /// named by the script's `name`.
    pub async fn helper(
        &self,
        script: &ssh::ShScript<'_>,
        stdin: Option<Vec<u8>>,
    ) -> Result<ssh::ExecOutput, Error> {
        let options = ssh::ExecOptions {
            stdin,
            ..Default::default()
        };
        let out = self.session.exec_script(script, &options).await?;
        if out.status == Some(ExitStatus::Code(0)) {
            return Ok(out);
        }
        Err(helper_failed(&script.name, &out))
    }
}

/// The error of a helper command that failed.
fn helper_failed(what: &str, out: &ssh::ExecOutput) -> Error {
    Error::Helper {
        what: what.to_string(),
        status: out
            .status
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        stderr: out.stderr.text().trim().to_string(),
    }
}

/// Removes the temporary paths a step left when its connection was lost: as root when the login
/// user is not root (a root script may have written into them), else as the user.
pub async fn remove_leftovers(ctx: &Context<'_>) -> Result<(), Error> {
    let paths: Vec<String> = ctx
        .leftovers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for path in paths {
        if ctx.remove(&path, true).await.is_err() {
            ctx.remove(&path, false).await?;
        }
    }
    Ok(())
}

/// What one step did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepResult {
    /// The step's kind.
    pub kind: &'static str,
    /// For scripts: how the script ended.
    pub status: Option<ExitStatus>,
    /// For scripts: standard output (the kept tail).
    #[serde(serialize_with = "captured_text")]
    pub stdout: Captured,
    /// For scripts: standard error (the kept tail).
    #[serde(serialize_with = "captured_text")]
    pub stderr: Captured,
    /// How long the step took.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// A short note: `key already present`, `uploaded 1024 bytes to /etc/motd`, ...
    pub note: String,
}

fn captured_text<S: serde::Serializer>(c: &Captured, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&c.text())
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What goes wrong with a step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The step is not valid; nothing was run.
    #[error("step {step} ({kind}): {message}")]
    Invalid {
        /// 1-based, in flattened order.
        step: usize,
        /// The step's kind.
        kind: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The script ended with a status the step does not accept.
    #[error("the script ended with {status}{}", stderr_tail(.result))]
    ScriptFailed {
        /// How it ended.
        status: ExitStatus,
        /// Its output.
        result: Box<StepResult>,
    },
    /// A command nodeup runs for the step (mkdir, mv, sudo ...) failed.
    #[error("{what} failed ({status}): {stderr}")]
    Helper {
        /// What was being done.
        what: String,
        /// How the command ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// A local file the step names could not be read.
    #[error("{0}")]
    Local(String),
    /// A custom step failed; its message says why.
    #[error("{message}")]
    Custom {
        /// What went wrong.
        message: String,
        /// What the step had produced, if anything.
        result: Option<Box<StepResult>>,
    },
    /// SSH failed under the step.
    #[error(transparent)]
    Ssh(#[from] ssh::Error),
}

impl Error {
    /// Whether the step was cancelled (the deployment was).
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Ssh(ssh::Error::Cancelled { .. }))
    }

    /// What to do about it: a lost connection can be resumed; the rest is final.
    pub fn class(&self) -> ssh::ErrorClass {
        match self {
            Error::Ssh(e) => match e.class() {
                ssh::ErrorClass::Reconnect | ssh::ErrorClass::Retry => ssh::ErrorClass::Reconnect,
                _ => ssh::ErrorClass::Fatal,
            },
            _ => ssh::ErrorClass::Fatal,
        }
    }

    /// The output the step had produced, when it ran a command.
    pub fn output(&self) -> Option<(Option<&ExitStatus>, &Captured, &Captured)> {
        match self {
            Error::ScriptFailed { status, result } => {
                Some((Some(status), &result.stdout, &result.stderr))
            }
            Error::Custom {
                result: Some(result),
                ..
            } => Some((result.status.as_ref(), &result.stdout, &result.stderr)),
            Error::Ssh(ssh::Error::CommandTimeout { output, .. })
            | Error::Ssh(ssh::Error::Cancelled { output, .. })
            | Error::Ssh(ssh::Error::NoExitStatus { output, .. }) => {
                Some((output.status.as_ref(), &output.stdout, &output.stderr))
            }
            _ => None,
        }
    }
}

fn stderr_tail(result: &StepResult) -> String {
    let text = result.stderr.text();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; stderr: {text}")
    }
}

/// Reads a local file a step names, with an error that names it.
pub(crate) fn read_local(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
