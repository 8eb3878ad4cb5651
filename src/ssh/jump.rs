//! Jump hosts (`ssh -J a,b`): a node reached through a chain of bastions.
//!
//! Each hop is an SSH session of its own, with its own user, keys and host-key check (strict
//! against known_hosts unless the hop says accept-new: a hop is never trusted blindly); the next
//! hop, and at the end the node, is reached through a `direct-tcpip` channel of the hop before.
//! The chain is connected once and shared by every session through it (every node of a fleet):
//! each session is one more channel on the last hop's connection, up to [`TUNNELS_PER_CHAIN`] at
//! once. A chain whose connection died is connected again by the next session that needs it, so
//! a bastion lost mid-deployment is a lost connection like any other (the engine resumes).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use russh::client::Msg;
use russh::ChannelStream;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use super::session::SSH_PORT;
use super::{ConnectOptions, Credentials, Error, HostKeyCheck, HostKeyPolicy, SshSession};

/// How many sessions may go through one chain's connection at once; more wait for one to end.
/// sshd does not count forwarded channels against `MaxSessions`; this keeps one bastion
/// connection from carrying an unbounded fleet.
pub const TUNNELS_PER_CHAIN: usize = 64;

/// One jump host: `[user@]host[:port]`, and how to log in to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The user; the local user's name (`$USER`) when `None`, as OpenSSH does.
    pub user: Option<String>,
    /// The host name or address, as connected to and as recorded in known_hosts.
    pub host: String,
    /// The SSH port, when one was given (`host:22` included); else the config's `Port`, else 22
    /// ([`Hop::port`]).
    pub port: Option<u16>,
    /// Key files for this hop only (ssh_config's `IdentityFile` for it); the node's credentials
    /// when empty.
    pub identity_files: Vec<PathBuf>,
    /// The known_hosts file for this hop; the node's when `None`.
    pub known_hosts: Option<PathBuf>,
    /// Record an unknown key of this hop on first use (ssh_config's
    /// `StrictHostKeyChecking accept-new`); otherwise an unknown key is refused.
    pub accept_new: bool,
}

impl Hop {
    /// A hop at `host:port` as `user`, checked strictly against the node's known_hosts.
    pub fn new(user: Option<&str>, host: &str, port: u16) -> Self {
        Hop {
            user: user.map(str::to_string),
            host: host.to_string(),
            port: Some(port),
            identity_files: Vec::new(),
            known_hosts: None,
            accept_new: false,
        }
    }

    /// The port connected to: the one given, else 22.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(SSH_PORT)
    }

    /// The user logged in as.
    pub fn user(&self) -> String {
        self.user
            .clone()
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "root".into())
    }

    /// Parses a comma-separated chain, as `ssh -J` takes it: `admin@bastion,10.0.0.5:2222`.
    ///
    /// # Errors
    /// The first hop that is not `[user@]host[:port]`, and why.
    pub fn parse_chain(text: &str) -> Result<Vec<Hop>, String> {
        text.split(',').map(|h| h.trim().parse()).collect()
    }
}

impl FromStr for Hop {
    type Err = String;

    /// `[user@]host[:port]`, the host an address, a name, or an IPv6 address in brackets.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "jump host {text:?}: {why}; write it as [user@]host[:port], e.g. admin@bastion:22"
            )
        };
        let (user, rest) = match text.rsplit_once('@') {
            Some((user, rest)) if !user.is_empty() => (Some(user), rest),
            Some(_) => return Err(bad("the user before @ is empty")),
            None => (None, text),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(|| bad("no closing ]"))?;
            (host, after.strip_prefix(':'))
        } else if rest.matches(':').count() > 1 {
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("the host is empty or holds a space"));
        }
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
            ),
            None => None,
        };
        Ok(Hop {
            port,
            ..Hop::new(user, host, SSH_PORT)
        })
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}@{host}:{}", self.user(), self.port())
    }
}

/// A chain of jump hosts, connected on first use and shared by its clones: every session through
/// it is a channel on one connection to the last hop.
#[derive(Clone)]
pub struct Jump(Arc<Chain>);

struct Chain {
    hops: Vec<Hop>,
    link: Mutex<Option<Arc<Link>>>,
    tunnels: Arc<Semaphore>,
    connections: AtomicUsize,
}

/// A connected chain: one session per hop, each carried by the one before.
struct Link {
    sessions: Vec<SshSession>,
}

/// What keeps a session's way open: the chain's sessions, and its place among the tunnels.
pub(super) struct Tunnel {
    _link: Arc<Link>,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for Jump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0.hops).finish()
    }
}

impl Jump {
    /// A chain of `hops`, first to last.
    pub fn new(hops: Vec<Hop>) -> Self {
        Jump(Arc::new(Chain {
            hops,
            link: Mutex::new(None),
            tunnels: Arc::new(Semaphore::new(TUNNELS_PER_CHAIN)),
            connections: AtomicUsize::new(0),
        }))
    }

    /// The hops, first to last.
    pub fn hops(&self) -> &[Hop] {
        &self.0.hops
    }

    /// How many times the chain was connected (its first hop logged in to): once for a whole
    /// fleet, again only after a hop's connection was lost.
    pub fn connections(&self) -> usize {
        self.0.connections.load(Ordering::SeqCst)
    }

    /// A stream to `addr` through the chain (connected first when it is not), and what keeps it
    /// open. `node`: the node's connection options, whose credentials, known_hosts file,
    /// timeout and keepalive the hops use unless they have their own.
    ///
    /// # Errors
    /// [`Error::Jump`] naming the hop that failed, or [`Error::Tunnel`] when the last hop could
    /// not reach `addr`.
    pub(super) async fn tunnel(
        &self,
        addr: SocketAddr,
        node: &ConnectOptions,
        creds: &Credentials,
    ) -> Result<(ChannelStream<Msg>, Tunnel), Error> {
        let permit = self
            .0
            .tunnels
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let link = self.link(node, creds).await?;
        let last = link.sessions.last().expect("a chain has hops");
        let hop = self.0.hops.last().expect("a chain has hops");
        let stream = open(last, hop, &addr.ip().to_string(), addr.port()).await?;
        Ok((
            stream,
            Tunnel {
                _link: link,
                _permit: permit,
            },
        ))
    }

    /// The chain's connection: the one kept when it is still open, else a new one.
    async fn link(&self, node: &ConnectOptions, creds: &Credentials) -> Result<Arc<Link>, Error> {
        let mut kept = self.0.link.lock().await;
        if let Some(link) = kept.as_ref() {
            if !link.sessions.iter().any(SshSession::is_closed) {
                return Ok(link.clone());
            }
        }
        *kept = None;
        self.0.connections.fetch_add(1, Ordering::SeqCst);
        let mut sessions: Vec<SshSession> = Vec::with_capacity(self.0.hops.len());
        for hop in &self.0.hops {
            let session = login(hop, sessions.last(), node, creds)
                .await
                .map_err(|e| wrap(hop, e))?;
            sessions.push(session);
        }
        let link = Arc::new(Link { sessions });
        *kept = Some(link.clone());
        Ok(link)
    }
}

/// Logs in to `hop`: over TCP for the first, through the hop before (`via`) for the others.
async fn login(
    hop: &Hop,
    via: Option<&SshSession>,
    node: &ConnectOptions,
    creds: &Credentials,
) -> Result<SshSession, Error> {
    let own;
    let creds = if hop.identity_files.is_empty() {
        creds
    } else {
        own = Credentials::from_key_files(&hop.identity_files, None)?;
        &own
    };
    let addr = match via {
        None => resolve(hop, node).await?,
        // Resolved by the hop before, where the name means something; an address is kept for
        // messages.
        Some(_) => SocketAddr::new(
            hop.host
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            hop.port(),
        ),
    };
    let options = ConnectOptions {
        addr,
        host: Some(hop.host.clone()),
        user: hop.user(),
        timeout: node.timeout,
        keepalive: node.keepalive,
        host_keys: HostKeyCheck {
            policy: if hop.accept_new {
                HostKeyPolicy::AcceptNew
            } else {
                HostKeyPolicy::Strict
            },
            known_hosts: hop
                .known_hosts
                .clone()
                .unwrap_or_else(|| node.host_keys.known_hosts.clone()),
            pinned: Vec::new(),
            new_node: None,
        },
        plan: super::Plan::of(Some(0)),
        jump: None,
    };
    match via {
        None => {
            let stream = super::session::tcp_connect(addr, options.timeout).await?;
            SshSession::over(stream, &options, creds, None).await
        }
        Some(before) => {
            let stream = open(before, hop, &hop.host, hop.port()).await?;
            SshSession::over(stream, &options, creds, None).await
        }
    }
}

/// The first hop's address, resolved here.
async fn resolve(hop: &Hop, node: &ConnectOptions) -> Result<SocketAddr, Error> {
    let unresolved = |source| Error::Connect {
        addr: SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), hop.port()),
        source,
    };
    let lookup = tokio::time::timeout(
        node.timeout,
        tokio::net::lookup_host((hop.host.as_str(), hop.port())),
    )
    .await
    .map_err(|_| unresolved(std::io::ErrorKind::TimedOut.into()))?
    .map_err(unresolved)?;
    let mut addrs: Vec<SocketAddr> = lookup.collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| unresolved(std::io::ErrorKind::NotFound.into()))
}

/// A `direct-tcpip` channel from `session` (logged in to `hop`) to `host:port`, as a stream.
async fn open(
    session: &SshSession,
    hop: &Hop,
    host: &str,
    port: u16,
) -> Result<ChannelStream<Msg>, Error> {
    match session.direct_tcpip(host, port).await {
        Ok(channel) => Ok(channel.into_stream()),
        Err(russh::Error::ChannelOpenFailure(reason)) => Err(Error::Tunnel {
            via: hop.to_string(),
            to: format!("{host}:{port}"),
            reason: format!("{reason:?}"),
            retry: matches!(
                reason,
                russh::ChannelOpenFailure::ConnectFailed
                    | russh::ChannelOpenFailure::ResourceShortage
            ),
        }),
        Err(source) => Err(wrap(
            hop,
            Error::ConnectionLost {
                addr: session.addr(),
                source: Box::new(source),
            },
        )),
    }
}

/// An error of `hop`, named.
fn wrap(hop: &Hop, error: Error) -> Error {
    match error {
        e @ (Error::Jump { .. } | Error::Tunnel { .. }) => e,
        Error::HostKeyUnknown {
            host,
            presented,
            path,
        } => Error::Jump {
            hop: hop.to_string(),
            source: Box::new(Error::HopKeyUnknown {
                host,
                presented,
                path,
            }),
        },
        e => Error::Jump {
            hop: hop.to_string(),
            source: Box::new(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hops_as_ssh_dash_j() {
        let chain = Hop::parse_chain("admin@bastion,10.0.0.5:2222,ops@[fd00::1]:2200").unwrap();
        let no_port = Hop {
            port: None,
            ..Hop::new(Some("admin"), "bastion", 22)
        };
        assert_eq!(chain[0], no_port);
        assert_eq!(chain[0].port(), 22);
        assert_eq!(chain[1], Hop::new(None, "10.0.0.5", 2222));
        assert_eq!(chain[2], Hop::new(Some("ops"), "fd00::1", 2200));
        assert_eq!(chain[2].to_string(), "ops@[fd00::1]:2200");
        assert_eq!("fd00::2".parse::<Hop>().unwrap().host, "fd00::2");
        for bad in ["", "@host", "host:0", "host:ssh", "[fd00::1", "a b"] {
            let e = bad.parse::<Hop>().unwrap_err();
            assert!(e.contains("[user@]host[:port]"), "{bad}: {e}");
        }
    }
}
