//! SSH to nodes, on russh: one session per node for all its steps.
//!
//! - `session`: connect (with a deadline), check the host key, authenticate, keep alive;
//! - `config`: OpenSSH client configuration (`~/.ssh/config`), with `Include` and `Host` patterns;
//! - `jump`: jump hosts (`ssh -J`), each hop checked and logged in to, one connection shared;
//! - `known_hosts`: OpenSSH-format known_hosts and the policies strict / accept-new / off;
//! - `auth`: private key files (OpenSSH, PEM, PKCS#8; encrypted with a passphrase), the agent,
//!   a password, the user's default keys;
//! - `exec`: run a command, stream stdout and stderr apart, keep a bounded tail, end it at a deadline;
//! - `ready`: channels made ready ahead of need, so that a command and its input cost one round trip;
//! - `upload`: a file put in place by one command (mode, parents, temporary name then rename);
//! - `sftp`: append, read, delete, modes, directories.
//!
//! Errors carry a class ([`ErrorClass`]) so that callers retry by class, never by message text.

mod auth;
pub mod config;
mod exec;
mod jump;
mod known_hosts;
mod ready;
mod session;
mod sftp;
mod upload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use auth::{default_key_files, load_certificate, Credentials, Password};
pub use config::{HostConfig, SshConfig};
pub use exec::{Captured, ExecOptions, ExecOutput, ExitStatus, OutputSink, ShScript, Stream};
pub use jump::{Hop, Jump, TUNNELS_PER_CHAIN};
pub use known_hosts::{HostKeyCheck, HostKeyPolicy, NewNode};
pub use ready::Plan;
pub use session::{
    ConnectOptions, SshSession, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE, SSH_PORT,
};
pub use upload::{parent_of, temp_name, UploadOptions};

/// Quotes one word for a POSIX shell (single quotes), whatever it holds but NUL.
pub fn quote(word: &str) -> String {
    // A NUL cannot reach a shell through SSH anyway; drop it rather than fail.
    let word = word.replace('\0', "");
    shlex::try_quote(&word)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| format!("'{}'", word.replace('\'', r"'\''")))
}

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The node is not reachable yet (refused, unreachable, timed out, closed before the banner):
    /// try again shortly.
    Retry,
    /// This user cannot log in (yet): try the next username, and this one again later.
    NextUser,
    /// The connection was lost after login: connect again and carry on.
    Reconnect,
    /// Retrying cannot help: a changed host key, an unreadable key, a wrong passphrase, a command
    /// that failed or timed out.
    Fatal,
}

/// What goes wrong over SSH.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection failed.
    #[error("connecting to {addr}")]
    Connect {
        /// Where to.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connection or the SSH handshake took longer than allowed.
    #[error("{what} {addr} timed out after {after:?}")]
    Timeout {
        /// Where to.
        addr: SocketAddr,
        /// "connecting to" or "SSH handshake with".
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The SSH handshake failed.
    #[error("SSH handshake with {addr} failed")]
    Handshake {
        /// Where to.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Box<russh::Error>,
    },
    /// The host presented a key other than the one recorded for it.
    #[error(
        "the host key of {host} has changed: it presents {presented}, but {path}:{line} records \
         another key. If the node was re-created or reinstalled, remove the old key with \
         `ssh-keygen -R {host} -f {path}`; otherwise someone may be impersonating the node"
    )]
    HostKeyChanged {
        /// The host as recorded (`name` or `[name]:port`).
        host: String,
        /// The presented key's fingerprint.
        presented: String,
        /// The known_hosts file.
        path: PathBuf,
        /// The line that records the other key.
        line: usize,
    },
    /// Strict host-key checking and the host is not in known_hosts.
    #[error(
        "the host key of {host} ({presented}) is not in {path} and host-key checking is strict: \
         add the node's key to that file, or use the accept-new policy for nodes you just created"
    )]
    HostKeyUnknown {
        /// The host as recorded (`name` or `[name]:port`).
        host: String,
        /// The presented key's fingerprint.
        presented: String,
        /// The known_hosts file.
        path: PathBuf,
    },
    /// A jump host's key is not in its known_hosts file. A hop is always checked: the host-key
    /// policy is for the nodes (as with `ssh -J`), so the message says what does work for a hop.
    #[error(
        "the host key of jump host {host} ({presented}) is not in {path}, and a jump host's key \
         is always checked (--host-key-policy and [ssh] host_key_policy apply to the nodes only): \
         add it to that file (`ssh-keyscan -p PORT HOST >> {path}`, after checking its \
         fingerprint), or set `StrictHostKeyChecking accept-new` for that host in your ssh config"
    )]
    HopKeyUnknown {
        /// The hop as recorded (`name` or `[name]:port`).
        host: String,
        /// The presented key's fingerprint.
        presented: String,
        /// The known_hosts file it was checked against.
        path: PathBuf,
    },
    /// The host key is not among the keys the provider reported for the node.
    #[error(
        "the host key of {host} ({presented}) is none of the keys its provider reported: someone may \
         be impersonating the node"
    )]
    HostKeyNotPinned {
        /// The host.
        host: String,
        /// The presented key's fingerprint.
        presented: String,
    },
    /// known_hosts could not be read or written.
    #[error("known_hosts file {path}")]
    KnownHosts {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<russh::keys::Error>,
    },
    /// No credential was accepted for this user.
    #[error("{user}@{addr}: authentication rejected (tried {})", tried.join(", "))]
    AuthRejected {
        /// The user.
        user: String,
        /// Where.
        addr: SocketAddr,
        /// The methods tried, e.g. `publickey ed25519 SHA256:...`.
        tried: Vec<String>,
    },
    /// The login succeeded but the account does not work (a cloud image's "Please login as the user
    /// ..." forced command, a shell that exits at once).
    #[error("{user}@{addr}: login refused: {message}")]
    LoginRefused {
        /// The user.
        user: String,
        /// Where.
        addr: SocketAddr,
        /// What the node said.
        message: String,
    },
    /// A private key file cannot be used.
    #[error("private key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The connection was lost after login.
    #[error("connection to {addr} lost")]
    ConnectionLost {
        /// Where to.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Box<russh::Error>,
    },
    /// A channel request was refused or failed.
    #[error("{what} on {addr}")]
    Channel {
        /// What was asked for, e.g. `opening a session channel`.
        what: String,
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Box<russh::Error>,
    },
    /// The command's channel closed without an exit status or signal.
    #[error("`{command}` on {addr}: the channel closed without an exit status")]
    NoExitStatus {
        /// The command (as given, not as wrapped).
        command: String,
        /// Where.
        addr: SocketAddr,
        /// What it printed until then.
        output: Box<ExecOutput>,
    },
    /// The command ran out of time and was ended.
    #[error("`{command}` on {addr} was still running after {after:?} and was ended")]
    CommandTimeout {
        /// The command (as given).
        command: String,
        /// Where.
        addr: SocketAddr,
        /// The time limit.
        after: Duration,
        /// What it printed until then.
        output: Box<ExecOutput>,
    },
    /// The command was cancelled (the deployment was): its channel is closed; what it printed
    /// until then is kept.
    #[error("`{command}` on {addr} was cancelled")]
    Cancelled {
        /// The command (as given).
        command: String,
        /// Where.
        addr: SocketAddr,
        /// What it printed until then.
        output: Box<ExecOutput>,
    },
    /// The node could not put an uploaded file in place.
    #[error("uploading {path} to {addr} failed ({status}): {message}")]
    Upload {
        /// The target path.
        path: String,
        /// Where.
        addr: SocketAddr,
        /// How the command that puts it in place ended.
        status: String,
        /// What it said (e.g. `Permission denied`).
        message: String,
    },
    /// A jump host on the way to the node failed (could not be reached, refused the login, or
    /// presented a key not recorded for it).
    #[error("jump host {hop}")]
    Jump {
        /// The hop, as `user@host:port`.
        hop: String,
        /// What went wrong there.
        #[source]
        source: Box<Error>,
    },
    /// A jump host could not open a connection onwards (to the next hop or the node).
    #[error(
        "jump host {via} could not connect to {to} ({reason}){}",
        if *retry { "" } else { ": the jump host forbids forwarding (sshd's AllowTcpForwarding, PermitOpen)" }
    )]
    Tunnel {
        /// The hop asked, as `user@host:port`.
        via: String,
        /// Where to.
        to: String,
        /// The hop's reason code.
        reason: String,
        /// Whether asking again may help (the far end was not listening yet).
        retry: bool,
    },
    /// An SFTP operation failed.
    #[error("sftp: {what} on {addr}")]
    Sftp {
        /// What, on which path.
        what: String,
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Box<russh_sftp::client::error::Error>,
    },
}

impl Error {
    /// What to do about this error.
    pub fn class(&self) -> ErrorClass {
        use std::io::ErrorKind::*;
        match self {
            Error::Connect { source, .. } => match source.kind() {
                ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut
                | HostUnreachable | NetworkUnreachable | NetworkDown | AddrNotAvailable
                | UnexpectedEof | BrokenPipe | Interrupted => ErrorClass::Retry,
                _ => ErrorClass::Fatal,
            },
            Error::Timeout { .. } => ErrorClass::Retry,
            Error::Handshake { source, .. } => match **source {
                russh::Error::Disconnect
                | russh::Error::HUP
                | russh::Error::IO(_)
                | russh::Error::ConnectionTimeout
                | russh::Error::SendError
                | russh::Error::RecvError => ErrorClass::Retry,
                _ => ErrorClass::Fatal,
            },
            Error::AuthRejected { .. } | Error::LoginRefused { .. } => ErrorClass::NextUser,
            Error::ConnectionLost { .. } => ErrorClass::Reconnect,
            Error::Channel { source, .. } => match **source {
                russh::Error::Disconnect
                | russh::Error::HUP
                | russh::Error::IO(_)
                | russh::Error::SendError
                | russh::Error::RecvError
                | russh::Error::KeepaliveTimeout
                | russh::Error::InactivityTimeout => ErrorClass::Reconnect,
                _ => ErrorClass::Fatal,
            },
            Error::HostKeyChanged { .. }
            | Error::HostKeyUnknown { .. }
            | Error::HopKeyUnknown { .. }
            | Error::HostKeyNotPinned { .. }
            | Error::KnownHosts { .. }
            | Error::Key { .. }
            | Error::NoExitStatus { .. }
            | Error::Upload { .. }
            | Error::CommandTimeout { .. }
            | Error::Cancelled { .. } => ErrorClass::Fatal,
            // Logging in to a bastion is not the node's boot: only reaching it is worth retrying.
            Error::Jump { source, .. } => match source.class() {
                ErrorClass::Retry | ErrorClass::Reconnect => ErrorClass::Retry,
                ErrorClass::NextUser | ErrorClass::Fatal => ErrorClass::Fatal,
            },
            Error::Tunnel { retry, .. } => {
                if *retry {
                    ErrorClass::Retry
                } else {
                    ErrorClass::Fatal
                }
            }
            // The SFTP channel itself broke (not a status the server answered): the connection.
            Error::Sftp { source, .. } => match **source {
                russh_sftp::client::error::Error::IO(_) => ErrorClass::Reconnect,
                _ => ErrorClass::Fatal,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("two words"), "'two words'");
        assert_eq!(quote("it's"), r#""it's""#);
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn classes() {
        let addr: SocketAddr = "127.0.0.1:22".parse().unwrap();
        let refused = Error::Connect {
            addr,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(refused.class(), ErrorClass::Retry);
        let denied = Error::Connect {
            addr,
            source: std::io::ErrorKind::PermissionDenied.into(),
        };
        assert_eq!(denied.class(), ErrorClass::Fatal);
        let closed = Error::Handshake {
            addr,
            source: Box::new(russh::Error::Disconnect),
        };
        assert_eq!(closed.class(), ErrorClass::Retry);
        let changed = Error::HostKeyChanged {
            host: "h".into(),
            presented: "k".into(),
            path: "/k".into(),
            line: 1,
        };
        assert_eq!(changed.class(), ErrorClass::Fatal);
        assert!(changed.to_string().contains("ssh-keygen -R h -f /k"));
    }
}
