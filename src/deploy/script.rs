//! The script step: upload a script (inline text or a local file) to a fresh private directory,
//! run it with quoted arguments and an environment, keep its output and exit status, remove it.

use std::path::PathBuf;
use std::time::Duration;

use super::{helper_failed, read_local, Context, Error, StepResult};
use crate::ssh::{quote, ExecOptions, ExitStatus, ShScript};

/// The largest exit status a process can have (a wait status keeps 8 bits).
const MAX_EXIT_STATUS: u32 = 255;

/// What the staging part of [`STAGE_AND_RUN`] prints once the script is in place.
const STAGED: &str = "nodeup-staged\n";

/// What stages a script from its standard input and runs it, in one command (one round trip):
/// `$1` a new private directory (0700, made here, so never one that was there before), `$2` the
/// script's path in it, `$3` its length in bytes (a script cut short by a lost connection never
/// runs), then the command that runs it. The command replaces the shell (`exec`), so that its exit
/// status or signal is the command's own, and runs with the session's umask. Its process group is
/// written to `$1/pgid`, for [`END_SCRIPT`] should the deployment be cancelled, and the script
/// starts only once it claims `$1/claimed` (made with `set -C`, that is `O_EXCL`: one of two
/// claims wins): a cancel that claims it first means the script never starts. The group and the
/// claim are shell builtins: they start no process of their own on the node.
const STAGE_AND_RUN: &str = r#"mask=$(umask)
umask 077
dir=$1
mkdir -m 0700 -- "$dir" || exit 1
fail() { rm -rf -- "$dir"; exit 1; }
trap fail HUP INT TERM PIPE
(set -C && cat >"$2") || fail
size=$(($(wc -c <"$2")))
if [ "$size" -ne "$3" ]; then echo "received $size of $3 bytes of the script" >&2; fail; fi
chmod 0700 -- "$2" || fail
read -r _ _ _ _ g _ 2>/dev/null </proc/$$/stat || g=$$
echo "$g" >"$dir/pgid" || fail
set -C
true >"$dir/claimed" || fail
set +C
umask "$mask"
trap - HUP INT TERM PIPE
printf 'nodeup-staged\n'
shift 3
exec "$@" </dev/null"#;

/// Ends a script that [`STAGE_AND_RUN`] started in `$1`, when the deployment is cancelled. A
/// staging still under way is stopped first: claiming `$1/claimed` before it does means the script
/// never starts (the staging removes its directory); while `$1` is not there yet, this waits up to
/// two seconds for it. A script that started gets TERM on its whole process group, then KILL two
/// seconds later if anything of it is left (sshd passes no signal to a root session, and closing
/// the channel does not end a command). `kill -s SIG -- -GROUP` is the one form that dash, bash and
/// busybox all read as a process group.
const END_SCRIPT: &str = r#"n=0
until [ -e "$1/claimed" ]; do
  if [ -d "$1" ] && (set -C && true >"$1/claimed") 2>/dev/null; then exit 0; fi
  [ "$n" -ge 20 ] && exit 0
  sleep 0.1; n=$((n + 1))
done
g=$(cat -- "$1/pgid" 2>/dev/null) || exit 0
kill -s TERM -- "-$g" 2>/dev/null || exit 0
n=0
while kill -s 0 -- "-$g" 2>/dev/null && [ "$n" -lt 20 ]; do sleep 0.1; n=$((n + 1)); done
kill -s KILL -- "-$g" 2>/dev/null
exit 0"#;

/// Where a script's text comes from.
#[derive(Debug, Clone)]
pub enum ScriptSource {
    /// The script itself. Without a `#!` line it runs under `/bin/sh`.
    Inline(String),
    /// A local file holding it.
    File(PathBuf),
}

/// Runs a script on the node.
///
/// The script is uploaded to a new 0700 directory with an unpredictable name under the login
/// user's home, run there with `args` (each quoted for the shell) and `env`, as root with `sudo`
/// when the login user is not root, within `timeout`, and removed afterwards unless `keep`.
/// An exit status not in `exit_codes` fails the step.
#[derive(Debug, Clone)]
pub struct ScriptStep {
    /// The script.
    pub source: ScriptSource,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables for it.
    pub env: Vec<(String, String)>,
    /// Run it as root (when the login user is not root).
    pub sudo: bool,
    /// End it after this long.
    pub timeout: Option<Duration>,
    /// The exit statuses that count as success.
    pub exit_codes: Vec<u32>,
    /// Leave the script on the node.
    pub keep: bool,
    /// The script's file name on the node (default `script`).
    pub name: Option<String>,
}

impl ScriptStep {
    /// A step running this text.
    pub fn inline(text: &str) -> Self {
        Self::with_source(ScriptSource::Inline(text.to_string()))
    }

    /// A step running the script in this local file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::with_source(ScriptSource::File(path.into()))
    }

    fn with_source(source: ScriptSource) -> Self {
        ScriptStep {
            source,
            args: Vec::new(),
            env: Vec::new(),
            sudo: false,
            timeout: None,
            exit_codes: vec![0],
            keep: false,
            name: None,
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        match &self.source {
            ScriptSource::File(path) => {
                read_local(path)?;
            }
            ScriptSource::Inline(text) if text.contains('\0') => {
                return Err(
                    "the inline script holds a NUL byte, which no shell runs: remove it (a \
                            binary program goes in a `script` file)"
                        .into(),
                )
            }
            ScriptSource::Inline(_) => {}
        }
        let nul = |s: &String| s.contains('\0');
        if self.args.iter().any(nul) || self.env.iter().any(|(k, v)| nul(k) || nul(v)) {
            return Err(
                "an argument or environment value holds a NUL byte, which cannot be passed \
                        to a program: remove it"
                    .into(),
            );
        }
        if let Some(code) = self.exit_codes.iter().find(|c| **c > MAX_EXIT_STATUS) {
            return Err(format!(
                "exit_codes: {code} is not an exit status; statuses are 0 to {MAX_EXIT_STATUS}"
            ));
        }
        for (name, _) in &self.env {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "environment variable name {name:?} is not valid: use letters, digits and _, not starting with a digit"
                ));
            }
        }
        if let Some(name) = &self.name {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(format!("script name {name:?} must be a plain file name"));
            }
        }
        if self.exit_codes.is_empty() {
            return Err(
                "exit_codes is empty: list the statuses that count as success, e.g. [0]".into(),
            );
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err("the timeout must be longer than zero".into());
        }
        Ok(())
    }

    /// The script of nodeup's own that stages and runs the script ([`STAGE_AND_RUN`]): its
    /// arguments, then the words of the command that runs the script.
    fn stage(&self, dir: &str, path: &str, len: usize, ctx: &Context<'_>) -> ShScript<'static> {
        let mut run = Vec::new();
        if !ctx.sudo(self.sudo).is_empty() {
            run.extend(["sudo".to_string(), "-n".to_string()]);
        }
        if !self.env.is_empty() {
            run.push("env".into());
            run.extend(
                self.env
                    .iter()
                    .map(|(name, value)| format!("{name}={value}")),
            );
        }
        run.push(path.to_string());
        run.extend(self.args.iter().cloned());
        let name = run.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
        let mut args = vec![dir.to_string(), path.to_string(), len.to_string()];
        args.extend(run);
        ShScript {
            text: STAGE_AND_RUN,
            args,
            sudo: false,
            name,
        }
    }

    /// Ends the script started in `dir` (cancelled), as the user it ran as; best effort.
    async fn end(&self, dir: &str, ctx: &Context<'_>) {
        let end = ShScript {
            text: END_SCRIPT,
            args: vec![dir.to_string()],
            sudo: !ctx.sudo(self.sudo).is_empty(),
            name: "ending the cancelled script".into(),
        };
        if let Err(e) = ctx.helper(&end, None).await {
            tracing::warn!("{}", crate::error_chain(&e));
        }
    }

    pub(super) async fn run(&self, ctx: &Context<'_>) -> Result<StepResult, Error> {
        let text = match &self.source {
            ScriptSource::Inline(text) => text.clone().into_bytes(),
            ScriptSource::File(path) => read_local(path).map_err(Error::Local)?,
        };
        let dir = ctx.private_dir_name();
        let path = format!("{dir}/{}", self.name.as_deref().unwrap_or("script"));
        let stage = self.stage(&dir, &path, text.len(), ctx);
        let options = ExecOptions {
            timeout: self.timeout,
            sink: ctx.sink.clone(),
            stdin: Some(text),
            preamble: Some(STAGED),
            cancel: ctx.cancel.clone(),
            ..Default::default()
        };
        let ran = ctx
            .session
            .exec_script(&stage, &options)
            .await
            .map_err(Error::from);
        if matches!(&ran, Err(e) if e.is_cancelled()) {
            self.end(&dir, ctx).await;
        }
        if self.keep {
            if ran.is_ok() {
                // Kept on purpose: not a leftover for a resumed run to remove.
                ctx.untrack(&dir);
            }
        } else {
            // Always, even when the script failed; files its root run left in there too.
            let removed = ctx.remove(&dir, self.sudo).await;
            if let (Ok(_), Err(e)) = (&ran, removed) {
                return Err(e);
            }
        }
        let output = ran?;
        if !output.preamble {
            return Err(helper_failed("putting the script on the node", &output));
        }
        let status = output.status.clone().unwrap_or(ExitStatus::Code(u32::MAX));
        let result = StepResult {
            kind: "script",
            status: Some(status.clone()),
            stdout: output.stdout,
            stderr: output.stderr,
            duration: Duration::ZERO,
            note: if self.keep {
                format!("kept at {path}")
            } else {
                String::new()
            },
        };
        match status {
            ExitStatus::Code(code) if self.exit_codes.contains(&code) => Ok(result),
            status => Err(Error::ScriptFailed {
                status,
                result: Box::new(result),
            }),
        }
    }
}
