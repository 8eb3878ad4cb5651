//! Running a command: stdout and stderr streamed apart as they arrive, kept as bytes with a bounded
//! tail, a wall-clock limit that ends the remote command, and the exit status or signal. The channel
//! is read until it closes, since the exit status can come before the last output.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use russh::{ChannelMsg, Sig};

use super::{quote, Error, SshSession};

/// How long after the time limit the local side gives up on a command the node did not end.
const BACKSTOP: Duration = Duration::from_secs(5);

/// Which output stream bytes came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives output as it arrives (the CLI prints it, prefixed by the host).
pub type OutputSink = Arc<dyn Fn(Stream, &[u8]) + Send + Sync>;

/// How a command runs.
#[derive(Clone)]
pub struct ExecOptions {
    /// End the command after this long.
    pub timeout: Option<Duration>,
    /// How many bytes of each stream to keep (the tail); the rest is counted.
    pub max_output: usize,
    /// Where output goes as it arrives.
    pub sink: Option<OutputSink>,
    /// Bytes to send on the command's standard input (then end of file).
    pub stdin: Option<Vec<u8>>,
    /// A line the command prints first on stdout once its own preparations succeeded (before it
    /// runs what the caller's output is about): taken out of stdout, and
    /// [`ExecOutput::preamble`] says whether it came.
    pub preamble: Option<&'static str>,
    /// Cancels the command: its channel is closed and [`Error::Cancelled`] returned at once (the
    /// caller ends what it started on the node, which sshd does not for root).
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            timeout: None,
            max_output: 64 * 1024,
            sink: None,
            stdin: None,
            preamble: None,
            cancel: None,
        }
    }
}

impl std::fmt::Debug for ExecOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecOptions")
            .field("timeout", &self.timeout)
            .field("max_output", &self.max_output)
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

/// A POSIX sh script that nodeup composed, with its arguments: run as `sh -c SCRIPT sh ARGS...`
/// (as root with `sudo -n` when `sudo`), or, on a channel made ready, by the shell waiting there
/// itself, which saves the node starting two shells for it. It must end by exiting or `exec`ing.
#[derive(Debug, Clone)]
pub struct ShScript<'a> {
    /// The script.
    pub text: &'a str,
    /// Its arguments (`$1`...), each quoted for the shell.
    pub args: Vec<String>,
    /// Run it as root, with `sudo -n`.
    pub sudo: bool,
    /// How errors name it (e.g. the command it runs in the end).
    pub name: String,
}

impl ShScript<'_> {
    /// The arguments, quoted, each after a space.
    fn quoted_args(&self) -> String {
        self.args.iter().map(|a| format!(" {}", quote(a))).collect()
    }

    /// As one command line for the login shell.
    pub fn command(&self) -> String {
        let sudo = if self.sudo { "sudo -n " } else { "" };
        format!("{sudo}sh -c {} sh{}", quote(self.text), self.quoted_args())
    }

    /// As text that a POSIX shell runs in place.
    fn in_place(&self) -> String {
        if self.sudo {
            format!("exec {}", self.command())
        } else {
            format!("set --{}\n{}", self.quoted_args(), self.text)
        }
    }
}

/// What to run: a command line for the login shell, or a script of nodeup's own.
enum Remote<'a> {
    Line(&'a str),
    Script(&'a ShScript<'a>),
}

/// The tail of one output stream, and how much there was in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    tail: Vec<u8>,
    total: u64,
    limit: usize,
}

impl Captured {
    fn new(limit: usize) -> Self {
        Captured {
            tail: Vec::new(),
            total: 0,
            limit,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        self.tail.extend_from_slice(data);
        // Trim in batches, so that appending stays linear.
        if self.tail.len() > self.limit.saturating_mul(2).max(4096) {
            let cut = self.tail.len() - self.limit;
            self.tail.drain(..cut);
        }
    }

    /// The kept bytes: the last `max_output` bytes of the stream, or all of it.
    pub fn bytes(&self) -> &[u8] {
        &self.tail[self.tail.len().saturating_sub(self.limit)..]
    }

    /// The kept bytes as text (invalid UTF-8 replaced, never dropped).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.bytes())
    }

    /// How many bytes the stream had in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many bytes were not kept.
    pub fn dropped(&self) -> u64 {
        self.total - self.bytes().len() as u64
    }
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this status.
    Code(u32),
    /// A signal ended it.
    Signal {
        /// The signal's name, e.g. `KILL`.
        name: String,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// The exit code, when it exited.
    pub fn code(&self) -> Option<u32> {
        match self {
            ExitStatus::Code(c) => Some(*c),
            ExitStatus::Signal { .. } => None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signal { name, .. } => write!(f, "killed by signal {name}"),
        }
    }
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output.
    pub stdout: Captured,
    /// Standard error.
    pub stderr: Captured,
    /// How it ended; `None` when it did not (timed out, channel closed without a status).
    pub status: Option<ExitStatus>,
    /// Whether the command printed [`ExecOptions::preamble`] first.
    pub preamble: bool,
}

/// Takes a preamble line out of the start of stdout: holds the first bytes until they match it
/// or not, then lets everything through.
struct Preamble {
    line: Option<&'static [u8]>,
    held: Vec<u8>,
    seen: bool,
}

impl Preamble {
    fn new(line: Option<&'static str>) -> Self {
        Preamble {
            line: line.map(str::as_bytes),
            held: Vec::new(),
            seen: false,
        }
    }

    /// The stdout bytes to pass on for `data`, the preamble taken out.
    fn filter<'a>(&mut self, data: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(line) = self.line else {
            return Cow::Borrowed(data);
        };
        self.held.extend_from_slice(data);
        let n = self.held.len().min(line.len());
        if self.held[..n] != line[..n] {
            // Not the preamble: what was held is output.
            self.line = None;
            return Cow::Owned(std::mem::take(&mut self.held));
        }
        if self.held.len() < line.len() {
            return Cow::Owned(Vec::new());
        }
        self.line = None;
        self.seen = true;
        let after = self.held.split_off(line.len());
        self.held.clear();
        Cow::Owned(after)
    }

    /// What is still held when the output ends (a partial preamble is output after all).
    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

impl SshSession {
    /// Runs `command` (a shell command line) and waits for it to end.
    ///
    /// A non-zero exit status is not an error here: the caller decides. Errors are a channel that
    /// closes without a status, the time limit, and a lost connection.
    pub async fn exec(&self, command: &str, options: &ExecOptions) -> Result<ExecOutput, Error> {
        self.run(Remote::Line(command), options, None, true).await
    }

    /// Runs a script of nodeup's own ([`ShScript`]), as [`SshSession::exec`] runs a command.
    ///
    /// # Errors
    /// As [`SshSession::exec`].
    pub async fn exec_script(
        &self,
        script: &ShScript<'_>,
        options: &ExecOptions,
    ) -> Result<ExecOutput, Error> {
        self.run(Remote::Script(script), options, None, true).await
    }

    /// Runs a probe: like [`SshSession::exec`], but when the first line of stdout does not start
    /// with `marker`, stops there (closing the channel) and returns what came, with no status.
    /// A cloud image's "Please login as ..." account prints its message and then sleeps: this
    /// tells it apart at once.
    pub async fn probe(
        &self,
        command: &str,
        marker: &str,
        options: &ExecOptions,
    ) -> Result<ExecOutput, Error> {
        let wrong = |stdout: &Captured| {
            let bytes = stdout.bytes();
            let first = bytes.split(|b| *b == b'\n').next().unwrap_or(bytes);
            let complete = bytes.contains(&b'\n') || first.len() >= marker.len();
            complete && !first.starts_with(marker.as_bytes())
        };
        // On a channel of its own: the probe is what shows that the account runs commands at all.
        self.run(Remote::Line(command), options, Some(&wrong), false)
            .await
    }

    async fn run(
        &self,
        remote: Remote<'_>,
        options: &ExecOptions,
        stop: Option<&(dyn Fn(&Captured) -> bool + Sync)>,
        ready: bool,
    ) -> Result<ExecOutput, Error> {
        let forms = Forms::of(&remote, options.timeout);
        let started = tokio::time::Instant::now();
        let mut channel = self
            .start(&forms.command, forms.in_place.as_deref(), ready)
            .await?;
        if let Some(input) = &options.stdin {
            self.send(&channel, input, "sending standard input").await?;
        }
        // End of input, so that a command reading stdin does not wait forever.
        let _ = channel.eof().await;

        let mut reading = Reading::new(options);
        let read = async {
            while let Some(msg) = channel.wait().await {
                if reading.take(msg, options, stop) {
                    break;
                }
            }
        };
        let limited = async {
            match options.timeout {
                Some(limit) => tokio::time::timeout(limit + BACKSTOP, read).await.is_err(),
                None => {
                    read.await;
                    false
                }
            }
        };
        let cancel = options.cancel.clone().unwrap_or_default();
        let timed_out = tokio::select! {
            timed_out = limited => timed_out,
            _ = cancel.cancelled() => {
                let _ = channel.signal(Sig::TERM).await;
                let _ = channel.close().await;
                return Err(Error::Cancelled {
                    command: forms.name,
                    addr: self.addr(),
                    output: Box::new(reading.output()),
                });
            }
        };
        let output = reading.output();
        // `timeout` exits 124 when it ended the command, 137 when it had to kill it.
        let ended_remotely = options.timeout.is_some_and(|limit| {
            started.elapsed() >= limit && matches!(output.status, Some(ExitStatus::Code(124 | 137)))
        });
        if timed_out || ended_remotely {
            // End the remote command (sshd delivers the signal to it), then the channel.
            let _ = channel.signal(Sig::KILL).await;
            let _ = channel.close().await;
            return Err(Error::CommandTimeout {
                command: forms.name,
                addr: self.addr(),
                after: options.timeout.unwrap_or_default(),
                output: Box::new(output),
            });
        }
        if reading.stopped {
            let _ = channel.close().await;
            return Ok(output);
        }
        self.ended(output, &reading, forms.name)
    }

    /// How a command that ran to its end (no time limit, not stopped) ended: its output, or why
    /// there is no status.
    fn ended(
        &self,
        output: ExecOutput,
        reading: &Reading,
        name: String,
    ) -> Result<ExecOutput, Error> {
        if output.status.is_some() {
            return Ok(output);
        }
        if reading.refused {
            return Err(self.channel_error(
                "starting a command (refused by the server)",
                russh::Error::RequestDenied,
            ));
        }
        if !reading.closed || self.is_closed() {
            return Err(Error::ConnectionLost {
                addr: self.addr(),
                source: Box::new(russh::Error::Disconnect),
            });
        }
        Err(Error::NoExitStatus {
            command: name,
            addr: self.addr(),
            output: Box::new(output),
        })
    }
}

/// The forms of a command: as sent to the login shell, as run in place by a ready channel's
/// shell (nodeup's own scripts), and how errors name it. With a time limit, the command is
/// wrapped: the limit is enforced on the node by coreutils' `timeout` (which ends the command's
/// whole process group; sshd refuses SSH signal requests in root sessions), and locally too, a
/// little later, should the node lack `timeout` or not answer.
struct Forms {
    command: String,
    in_place: Option<String>,
    name: String,
}

impl Forms {
    fn of(remote: &Remote<'_>, timeout: Option<Duration>) -> Forms {
        let (line, name) = match remote {
            Remote::Line(line) => (line.to_string(), line.to_string()),
            Remote::Script(script) => (script.command(), script.name.clone()),
        };
        let (command, in_place) = match (timeout, remote) {
            // The wrapper is POSIX sh ending in `exec`: the waiting shell can run it itself.
            (Some(limit), _) => {
                let wrapped = with_time_limit(&line, limit);
                let in_place = matches!(remote, Remote::Script(_)).then(|| wrapped.clone());
                (wrapped, in_place)
            }
            (None, Remote::Script(script)) => (line, Some(script.in_place())),
            (None, Remote::Line(_)) => (line, None),
        };
        Forms {
            command,
            in_place,
            name,
        }
    }
}

/// What has come on a command's channel so far.
struct Reading {
    output: ExecOutput,
    preamble: Preamble,
    /// The channel closed.
    closed: bool,
    /// The server refused the command.
    refused: bool,
    /// The caller's `stop` said to stop reading.
    stopped: bool,
}

impl Reading {
    fn new(options: &ExecOptions) -> Self {
        Reading {
            output: ExecOutput {
                stdout: Captured::new(options.max_output),
                stderr: Captured::new(options.max_output),
                status: None,
                preamble: false,
            },
            preamble: Preamble::new(options.preamble),
            closed: false,
            refused: false,
            stopped: false,
        }
    }

    /// Takes one message in; whether reading is over.
    fn take(
        &mut self,
        msg: ChannelMsg,
        options: &ExecOptions,
        stop: Option<&(dyn Fn(&Captured) -> bool + Sync)>,
    ) -> bool {
        match msg {
            ChannelMsg::Data { data } => {
                let data = self.preamble.filter(&data);
                self.received(Stream::Stdout, &data, options, stop)
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                self.received(Stream::Stderr, &data, options, stop)
            }
            ChannelMsg::ExitStatus { exit_status } => {
                self.output.status = Some(ExitStatus::Code(exit_status));
                false
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                ..
            } => {
                self.output.status = Some(ExitStatus::Signal {
                    name: signal_name_of(&signal_name),
                    core_dumped,
                });
                false
            }
            ChannelMsg::Failure => {
                self.refused = true;
                false
            }
            ChannelMsg::Close => {
                self.closed = true;
                true
            }
            _ => false,
        }
    }

    /// Output bytes: to the sink, into the kept tail; whether the caller's `stop` says to stop.
    fn received(
        &mut self,
        stream: Stream,
        data: &[u8],
        options: &ExecOptions,
        stop: Option<&(dyn Fn(&Captured) -> bool + Sync)>,
    ) -> bool {
        if data.is_empty() {
            return false;
        }
        if let Some(sink) = &options.sink {
            sink(stream, data);
        }
        if stream == Stream::Stderr {
            self.output.stderr.push(data);
            return false;
        }
        self.output.stdout.push(data);
        self.stopped = stop.is_some_and(|stop| stop(&self.output.stdout));
        self.stopped
    }

    /// The output, with what the preamble filter still held.
    fn output(&mut self) -> ExecOutput {
        let mut output = std::mem::take(&mut self.output);
        output.preamble = self.preamble.seen;
        output.stdout.push(&self.preamble.rest());
        output
    }
}

impl SshSession {
    /// A channel running `command`: a ready one when `ready` and there is one (given the
    /// `in_place` form of the command when there is one), else a new one.
    async fn start(
        &self,
        command: &str,
        in_place: Option<&str>,
        ready: bool,
    ) -> Result<russh::Channel<russh::client::Msg>, Error> {
        if ready {
            let sent = in_place.unwrap_or(command);
            if let Some((channel, preface)) = self.ready_channel(sent, in_place.is_some()).await {
                self.send(&channel, &preface, "starting a command").await?;
                return Ok(channel);
            }
        }
        let channel = self.channel().await?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.channel_error("starting a command", e))?;
        Ok(channel)
    }
}

/// `command` ended after `limit` on the node by coreutils' `timeout` (which ends the command's
/// whole process group; sshd refuses SSH signal requests in root sessions), where it exists.
fn with_time_limit(command: &str, limit: Duration) -> String {
    let secs = format!("{:.3}", limit.as_secs_f64());
    let inner = quote(command);
    format!(
        "if command -v timeout >/dev/null 2>&1; then exec timeout -k 2 {secs} sh -c {inner}; \
         else exec sh -c {inner}; fi"
    )
}

fn signal_name_of(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_and_counts_the_rest() {
        let mut c = Captured::new(10);
        for _ in 0..1000 {
            c.push(b"0123456789abcdef");
        }
        c.push(b"THE-END");
        assert_eq!(c.total(), 16_007);
        assert_eq!(c.bytes(), b"defTHE-END");
        assert_eq!(c.dropped(), 16_007 - 10);
        assert!(c.tail.len() <= 4096 + 16);
    }

    #[test]
    fn a_preamble_is_taken_out_however_it_is_split() {
        let mut p = Preamble::new(Some("ready\n"));
        assert!(p.filter(b"rea").is_empty());
        assert_eq!(&*p.filter(b"dy\nhello"), b"hello");
        assert_eq!(
            &*p.filter(b"ready\n"),
            b"ready\n",
            "only the first is taken out"
        );
        assert!(p.seen);

        let mut p = Preamble::new(Some("ready\n"));
        assert!(p.filter(b"re").is_empty());
        assert_eq!(&*p.filter(b"set"), b"reset");
        assert!(!p.seen);

        let mut p = Preamble::new(Some("ready\n"));
        assert!(p.filter(b"read").is_empty());
        assert_eq!(p.rest(), b"read", "a partial preamble at the end is output");
        assert!(!p.seen);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        let mut c = Captured::new(100);
        c.push(b"ok \xff\xfe end");
        assert_eq!(c.text(), "ok \u{fffd}\u{fffd} end");
    }
}
