//! Logging in to a node that may still be booting: retries by error class, never by message text.
//!
//! Not reachable yet (refused, unreachable, timed out, closed before the banner): retry at a steady
//! pace, an attempt starting every [`UNREACHABLE_PACE`] (a little jittered), so that the first try
//! after sshd starts listening comes within that much (plus the network's round trip).
//! Authentication rejected, or a login the image refuses: try the next username at once, and come
//! back to all of them while the time lasts (images install keys late). Unreadable key, wrong
//! passphrase, changed host key: fail at once.

use std::net::SocketAddr;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;
use tokio::time::Instant;

use crate::ssh::{
    self, ConnectOptions, Credentials, ErrorClass, ExecOptions, ExitStatus, HostKeyCheck,
    SshSession,
};

/// How often an attempt starts while the node is not reachable yet.
pub const UNREACHABLE_PACE: Duration = Duration::from_millis(100);

/// The most an unreachable retry is delayed beyond the pace, at random, so that the attempts of
/// many nodes do not go out in step.
const UNREACHABLE_JITTER: Duration = Duration::from_millis(20);

/// How to log in.
#[derive(Clone)]
pub struct LoginOptions {
    /// The usernames to try, in order.
    pub users: Vec<String>,
    /// The deadline of each connection attempt (TCP, then handshake and login).
    pub attempt_timeout: Duration,
    /// Keepalive interval of the session.
    pub keepalive: Duration,
    /// How host keys are checked.
    pub host_keys: HostKeyCheck,
    /// The name the host key is recorded under (the address when `None`).
    pub host_name: Option<String>,
    /// Shared by the logins of a fleet: how many connections may be being set up (TCP, SSH
    /// handshake and authentication) at once, so that sshd's `MaxStartups` or a bastion is not
    /// overrun.
    pub startups: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// The commands to come once logged in ([`ConnectOptions::plan`]), shared by every login of
    /// one deployment.
    pub plan: ssh::Plan,
    /// Jump hosts to reach the node through ([`ConnectOptions::jump`]).
    pub jump: Option<ssh::Jump>,
    /// Told, now and then, what a login that keeps failing waits for (the node does not answer
    /// yet, or refuses the users), so that a long wait is never silent.
    pub waiting: Option<LoginWaiting>,
}

/// Told what a login that keeps failing waits for.
pub type LoginWaiting = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for LoginOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginOptions")
            .field("users", &self.users)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("keepalive", &self.keepalive)
            .field("host_keys", &self.host_keys)
            .field("jump", &self.jump)
            .finish()
    }
}

/// When a login that has not worked yet first says what it waits for.
pub const LOGIN_WAIT_FIRST_SAID: Duration = Duration::from_secs(2);

/// How often it says so again.
pub const LOGIN_WAIT_SAID_EVERY: Duration = Duration::from_secs(10);

/// What one username got, for the error a user reads.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LoginAttempt {
    /// The username.
    pub user: String,
    /// How many times it was tried.
    pub tries: u32,
    /// The last error it got: the last the node answered with, when it ever answered.
    pub last_error: String,
    /// Whether `last_error` is the node's answer (not a connection that did not get through).
    #[serde(skip)]
    pub answered: bool,
}

/// A logged-in session and what the probe learnt of the user.
#[derive(Debug)]
pub struct LoggedIn {
    /// The session.
    pub session: SshSession,
    /// The user that worked.
    pub user: String,
    /// Its home directory.
    pub home: String,
    /// Whether it is root.
    pub is_root: bool,
}

/// Records what `user` got. An attempt that only did not get through (refused, timed out: the
/// last one is often cut short by the deadline) does not hide what the node said earlier (a
/// rejected key, the image's "Please login as"), which is what the user needs to read.
fn record(attempts: &mut Vec<LoginAttempt>, user: &str, error: &ssh::Error) {
    let text = error_chain(error);
    let answered = error.class() != ErrorClass::Retry;
    match attempts.iter_mut().find(|a| a.user == user) {
        Some(a) => {
            a.tries += 1;
            if answered || !a.answered {
                a.last_error = text;
                a.answered = answered;
            }
        }
        None => attempts.push(LoginAttempt {
            user: user.to_string(),
            tries: 1,
            last_error: text,
            answered,
        }),
    }
}

pub use crate::error_chain;

/// The pause after a round in which every user was rejected starts here (jittered), for a node
/// that installs keys or users late ...
const REJECTED_FIRST_PAUSE: Duration = Duration::from_millis(500);

/// ... and doubles up to this.
const REJECTED_LONGEST_PAUSE: Duration = Duration::from_secs(3);

/// The least time an attempt is given, however near the deadline.
const SHORTEST_ATTEMPT: Duration = Duration::from_millis(100);

/// How a round of attempts (each user in turn) ended without a login.
struct NotIn {
    /// The last error.
    last: ssh::Error,
    /// Whether every user was rejected (the node answered), rather than the node unreachable.
    all_rejected: bool,
}

/// Logs in to `addr` as the first of `options.users` that works, until `deadline`.
/// Every attempt's outcome is recorded in `attempts`.
pub async fn login(
    addr: SocketAddr,
    creds: &Credentials,
    options: &LoginOptions,
    deadline: Instant,
    attempts: &mut Vec<LoginAttempt>,
) -> Result<LoggedIn, ssh::Error> {
    let mut rejected = ExponentialBuilder::default()
        .with_min_delay(REJECTED_FIRST_PAUSE)
        .with_max_delay(REJECTED_LONGEST_PAUSE)
        .with_jitter()
        .without_max_times()
        .build();
    let mut next_said = Instant::now() + LOGIN_WAIT_FIRST_SAID;
    loop {
        let round = Instant::now();
        let not_in = match each_user(addr, creds, options, deadline, attempts).await? {
            Ok(logged_in) => return Ok(logged_in),
            Err(not_in) => not_in,
        };
        let pause = if not_in.all_rejected {
            rejected.next().unwrap_or(UNREACHABLE_PACE)
        } else {
            unreachable_pause(round.elapsed())
        };
        if Instant::now() + pause >= deadline {
            return Err(not_in.last);
        }
        if Instant::now() >= next_said {
            say_waiting(options, addr, &not_in.last, deadline);
            next_said = Instant::now() + LOGIN_WAIT_SAID_EVERY;
        }
        tokio::time::sleep(pause).await;
    }
}

/// One round: each user in turn until one logs in (`Ok(Ok)`), the node is unreachable (the
/// same for every user) or every user was rejected (`Ok(Err)`); a fatal error is `Err`.
async fn each_user(
    addr: SocketAddr,
    creds: &Credentials,
    options: &LoginOptions,
    deadline: Instant,
    attempts: &mut Vec<LoginAttempt>,
) -> Result<Result<LoggedIn, NotIn>, ssh::Error> {
    let mut last = None;
    for user in &options.users {
        let left = deadline.saturating_duration_since(Instant::now());
        let connect = ConnectOptions {
            addr,
            host: options.host_name.clone(),
            user: user.clone(),
            timeout: options.attempt_timeout.min(left.max(SHORTEST_ATTEMPT)),
            keepalive: options.keepalive,
            host_keys: options.host_keys.clone(),
            plan: options.plan.clone(),
            jump: options.jump.clone(),
        };
        let e = match try_user(&connect, creds, options.startups.as_deref()).await {
            Ok(logged_in) => {
                tracing::info!(%addr, user, "logged in");
                return Ok(Ok(logged_in));
            }
            Err(e) => e,
        };
        tracing::debug!(%addr, user, "login attempt failed: {}", error_chain(&e));
        record(attempts, user, &e);
        match e.class() {
            ErrorClass::NextUser => last = Some(e),
            // Not reachable: the same for every user; wait a little and retry.
            ErrorClass::Retry | ErrorClass::Reconnect => {
                return Ok(Err(NotIn {
                    last: e,
                    all_rejected: false,
                }))
            }
            ErrorClass::Fatal => return Err(e),
        }
    }
    match last {
        Some(last) => Ok(Err(NotIn {
            last,
            all_rejected: true,
        })),
        None => Err(ssh::Error::AuthRejected {
            user: String::new(),
            addr,
            tried: vec!["nothing: no usernames were given".into()],
        }),
    }
}

/// Says on the progress line what the login waits for, and how much longer it will try.
fn say_waiting(options: &LoginOptions, addr: SocketAddr, error: &ssh::Error, deadline: Instant) {
    if let Some(waiting) = &options.waiting {
        let left = deadline.saturating_duration_since(Instant::now());
        waiting(&format!(
            "logging in to {addr}: {}; trying again for {}s more",
            error_chain(error),
            left.as_secs()
        ));
    }
}

/// The pause after an unreachable attempt that took `took`: the rest of the pace, and a jitter.
fn unreachable_pause(took: Duration) -> Duration {
    let jitter = UNREACHABLE_JITTER.mul_f64(rand::random::<f64>());
    UNREACHABLE_PACE.saturating_sub(took) + jitter
}

/// One attempt as one user: connect, then a probe that proves the account works and tells its
/// home and uid (a cloud image's "Please login as ..." forced command fails it).
async fn try_user(
    options: &ConnectOptions,
    creds: &Credentials,
    startups: Option<&tokio::sync::Semaphore>,
) -> Result<LoggedIn, ssh::Error> {
    let permit = match startups {
        Some(gate) => gate.acquire().await.ok(),
        None => None,
    };
    let session = SshSession::connect(options, creds).await;
    drop(permit);
    let session = session?;
    let probe = ExecOptions {
        timeout: Some(options.timeout),
        max_output: 4096,
        ..Default::default()
    };
    let out = session
        .probe(
            r#"printf 'nodeup-ok %s\n%s\n' "$(id -u)" "$HOME""#,
            "nodeup-ok ",
            &probe,
        )
        .await?;
    let text = out.stdout.text();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    match (first.strip_prefix("nodeup-ok "), &out.status) {
        (Some(uid), Some(ExitStatus::Code(0))) => {
            let home = lines
                .next()
                .filter(|h| h.starts_with('/'))
                .map(str::to_string)
                .unwrap_or_else(|| format!("/home/{}", options.user));
            Ok(LoggedIn {
                session,
                user: options.user.clone(),
                home,
                is_root: uid.trim() == "0",
            })
        }
        _ => {
            let said = format!("{} {}", text.trim(), out.stderr.text().trim());
            let status = out
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no status".into());
            session.close().await;
            Err(ssh::Error::LoginRefused {
                user: options.user.clone(),
                addr: options.addr,
                message: format!(
                    "the account does not run commands ({status}): {}",
                    said.trim()
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_near_the_deadline_does_not_hide_what_the_node_said() {
        let addr: SocketAddr = "127.0.0.1:22".parse().unwrap();
        let said = ssh::Error::LoginRefused {
            user: "root".into(),
            addr,
            message: "Please login as the user \"debian\"".into(),
        };
        let cut_short = ssh::Error::Timeout {
            addr,
            what: "SSH handshake with",
            after: Duration::from_millis(100),
        };
        let mut attempts = Vec::new();
        record(&mut attempts, "root", &cut_short);
        assert!(attempts[0].last_error.contains("timed out"));
        record(&mut attempts, "root", &said);
        record(&mut attempts, "root", &cut_short);
        assert_eq!(attempts[0].tries, 3);
        assert!(attempts[0].last_error.contains("Please login as"));
    }
}
