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

type Opening = JoinHandle<Result<Channel<Msg>, russh::Error>>;

/// The channels being made ready for one session.
pub(super) struct ReadyChannels<H: russh::client::Handler> {
    handle: Arc<Handle<H>>,
    sentinel: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Opening>,
    /// The server refused a channel (it limits a connection's sessions): no more are made ahead.
    refused: bool,
    /// How many commands are still to come, when the caller knows: no more channels than that
    /// are made ready (each costs the server a session and a shell).
    planned: Option<usize>,
}

impl<H: russh::client::Handler + 'static> ReadyChannels<H> {
    /// Starts making channels ready on `handle`, for `planned` commands (unknown: `None`).
    pub(super) fn start(handle: Arc<Handle<H>>, planned: Option<usize>) -> Self {
        let ready = ReadyChannels {
            handle,
            sentinel: format!("nodeup-command-end-{:016x}", rand::random::<u64>()),
            state: Mutex::new(State {
                planned,
                ..State::default()
            }),
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
        let wanted = READY_CHANNELS.min(state.planned.unwrap_or(READY_CHANNELS));
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
        {
            let mut state = self.lock();
            state.planned = state.planned.map(|p| p.saturating_sub(1));
        }
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
