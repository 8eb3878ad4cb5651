//! Channels made ready ahead of need, so that a command costs one round trip.
//!
//! Over SSH, a command on a new channel waits twice: once for the server to confirm the channel,
//! and, when the command reads input, once more for the server to open the channel's window
//! (OpenSSH's sshd opens it only once the command has started). So the session keeps
//! [`READY_CHANNELS`] channels going ahead: each is opened, and a small POSIX shell loop is started
//! on it that reads one command from its input, up to a line holding the session's random
//! sentinel, then `exec`s the login shell on it, as sshd itself would have run it. Its input
//! after that line is the command's input. A command sent on such a channel, with its input,
//! costs one round trip; taking one starts the next, and that one's two round trips overlap the
//! commands that run meanwhile.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use russh::client::{Handle, Msg};
use russh::Channel;
use tokio::task::JoinHandle;

/// How many channels are kept going ahead: two, since making one ready takes two round trips
/// and a command takes one.
pub const READY_CHANNELS: usize = 2;

/// The loop started on a ready channel; `$1` is the sentinel. What it reads before the sentinel
/// line is the command, run as sshd runs a command: by the login shell, with `-c`. Before the
/// sentinel followed by ` sh`, it is a POSIX sh script nodeup composed ([`super::ShScript`]),
/// which this shell runs itself (no shell is started for it).
const WAIT_FOR_COMMAND: &str = r#"c=
while IFS= read -r l; do
  case $l in
  "$1") exec "${SHELL:-/bin/sh}" -c "$c" ;;
  "$1 sh") eval "$c"; exit ;;
  esac
  c="$c$l
"
done
exit 255"#;

/// The commands still to come over a deployment's sessions, as its steps plan them. A session
/// made with a plan makes no more channels ready than the plan has left (each costs the server a
/// session and a shell), and counts one down as each command takes a channel. Clones share the
/// count, so that a session made after a lost connection or a reboot goes on with the same plan.
#[derive(Debug, Clone, Default)]
pub struct Plan(Option<Arc<AtomicUsize>>);

impl Plan {
    /// No plan: as many channels as [`READY_CHANNELS`] are kept ready, whatever comes.
    pub fn unknown() -> Self {
        Plan(None)
    }

    /// A plan of `commands` commands, or no plan when that is not known.
    pub fn of(commands: Option<usize>) -> Self {
        Plan(commands.map(|n| Arc::new(AtomicUsize::new(n))))
    }

    /// How many commands are still to come, when known.
    pub fn remaining(&self) -> Option<usize> {
        self.0.as_ref().map(|n| n.load(Ordering::SeqCst))
    }

    /// From now on, `commands` are to come (what was planned is replaced: a step started again
    /// after a lost connection runs its commands again).
    pub fn reset(&self, commands: usize) {
        if let Some(n) = &self.0 {
            n.store(commands, Ordering::SeqCst);
        }
    }

    /// One command took a channel.
    fn count_down(&self) {
        if let Some(n) = &self.0 {
            let _ = n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1));
        }
    }
}

type Opening = JoinHandle<Result<Channel<Msg>, russh::Error>>;

/// The channels being made ready for one session.
pub(super) struct ReadyChannels<H: russh::client::Handler> {
    handle: Arc<Handle<H>>,
    sentinel: String,
    plan: Plan,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Opening>,
    /// The server refused a channel (it limits a connection's sessions): no more are made ahead.
    refused: bool,
}

impl<H: russh::client::Handler + 'static> ReadyChannels<H> {
    /// Starts making channels ready on `handle`, for the commands `plan` has to come.
    pub(super) fn start(handle: Arc<Handle<H>>, plan: Plan) -> Self {
        let ready = ReadyChannels {
            handle,
            sentinel: format!("nodeup-command-end-{:016x}", rand::random::<u64>()),
            plan,
            state: Mutex::new(State::default()),
        };
        ready.fill();
        ready
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts making channels ready until [`READY_CHANNELS`] are going (or as many as commands
    /// are still planned).
    fn fill(&self) {
        let mut state = self.lock();
        let wanted = READY_CHANNELS.min(self.plan.remaining().unwrap_or(READY_CHANNELS));
        while !state.refused && state.queue.len() < wanted {
            let handle = self.handle.clone();
            let command = format!(
                "sh -c {} sh {}",
                super::quote(WAIT_FOR_COMMAND),
                self.sentinel
            );
            state.queue.push_back(tokio::spawn(
                async move { open_ready(&handle, command).await },
            ));
        }
    }

    /// A ready channel, and the bytes to send first on it (the command and the sentinel); `None`
    /// when there is none (the server refused them, or the connection is gone). `in_place`: the
    /// command is POSIX sh for the waiting shell itself to run. A server that limits sessions may
    /// refuse the first channel asked for and accept a later one (they are opened concurrently):
    /// then the later one is taken.
    pub(super) async fn take(
        &self,
        command: &str,
        in_place: bool,
    ) -> Option<(Channel<Msg>, Vec<u8>)> {
        self.plan.count_down();
        loop {
            let opening = self.lock().queue.pop_front()?;
            match opening.await {
                Ok(Ok(channel)) => {
                    self.fill();
                    let mode = if in_place { " sh" } else { "" };
                    let preface = format!("{command}\n{}{mode}\n", self.sentinel).into_bytes();
                    return Some((channel, preface));
                }
                Ok(Err(e)) => {
                    tracing::debug!("a channel made ahead was refused: {e}");
                    self.lock().refused = true;
                }
                Err(_) => return None,
            }
        }
    }

    /// Stops making channels ready, and lets go of the session: the channels being made ready
    /// are dropped, and their tasks have ended when this returns.
    pub(super) async fn shut(self) {
        let going: Vec<Opening> = self.lock().queue.drain(..).collect();
        for opening in going {
            opening.abort();
            let _ = opening.await;
        }
    }

    /// Gives back the channels made ready to a server that refused another (it limits a
    /// connection's sessions): each is closed once its opening has ended (one dropped unclosed
    /// would hold a session on the server), and none is made ahead any more.
    pub(super) async fn give_back(&self) {
        let going: Vec<Opening> = {
            let mut state = self.lock();
            state.refused = true;
            state.queue.drain(..).collect()
        };
        for opening in going {
            if let Ok(Ok(channel)) = opening.await {
                close(channel).await;
            }
        }
    }
}

/// Opens a channel and starts `command` on it; a channel whose command the server refused is
/// closed, not dropped (which would leave it open on the server).
async fn open_ready<H: russh::client::Handler>(
    handle: &Handle<H>,
    command: String,
) -> Result<Channel<Msg>, russh::Error> {
    let channel = handle.channel_open_session().await?;
    match channel.exec(true, command).await {
        Ok(()) => Ok(channel),
        Err(e) => {
            close(channel).await;
            Err(e)
        }
    }
}

/// Ends a ready channel: the waiting shell reads the end of its input and exits, and the
/// server frees the session.
async fn close(channel: Channel<Msg>) {
    let _ = channel.eof().await;
    let _ = channel.close().await;
}
