//! One SSH session to a node: connect with a deadline, check the host key, authenticate with the
//! credentials in order, keep the connection alive. Every step of a node runs over one session.
//! Commands run on channels made ready ahead of need ([`super::ready`]), from the moment the login
//! succeeds, so that each costs one round trip.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

use super::auth::rsa_hash;
use super::jump::Tunnel;
use super::ready::{Plan, ReadyChannels};
use super::{Credentials, Error, HostKeyCheck, Jump};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The node's address and SSH port.
    pub addr: SocketAddr,
    /// The name the host key is recorded under (the address, unless given).
    pub host: Option<String>,
    /// The user to log in as.
    pub user: String,
    /// The deadline for the TCP connection and, again, for the SSH handshake and login.
    pub timeout: Duration,
    /// How often to send a keepalive when the connection is idle; three unanswered end it.
    pub keepalive: Duration,
    /// How the host key is checked.
    pub host_keys: HostKeyCheck,
    /// The commands to come over the session: no more channels than it has left are made ready
    /// ahead (each costs the server a session).
    pub plan: Plan,
    /// Jump hosts to reach the node through (`ssh -J`); shared by the clones of one [`Jump`].
    pub jump: Option<Jump>,
}

/// The deadline of one connection attempt (TCP, then again the SSH handshake and login) unless
/// told otherwise: OpenSSH's own `ConnectTimeout` is unset (the kernel's SYN retries, about two
/// minutes), which hides a node that silently drops packets; 10 s is Libcloud's `ssh_timeout` and
/// far more than a handshake takes on any real network.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may be idle before a keepalive is sent unless told otherwise; three
/// unanswered end it. 5 s is Packer's value: a node that reboots or drops off is noticed within
/// 15 s, while an idle NAT mapping (often 30 s or more) never expires under it.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(5);

/// The SSH port when nothing names one.
pub const SSH_PORT: u16 = 22;

impl ConnectOptions {
    /// Options with nodeup's defaults: [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_KEEPALIVE`].
    pub fn new(addr: SocketAddr, user: &str, host_keys: HostKeyCheck) -> Self {
        ConnectOptions {
            addr,
            host: None,
            user: user.to_string(),
            timeout: DEFAULT_CONNECT_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
            host_keys,
            plan: Plan::unknown(),
            jump: None,
        }
    }
}

/// russh's callbacks: the host key check, and the pre-authentication banner.
struct Client {
    host: String,
    port: u16,
    check: HostKeyCheck,
    /// Why the host key was refused, for the error the caller sees.
    refusal: Arc<Mutex<Option<Error>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone().into(),
        };
        match self.check.verify(&self.host, self.port, &key) {
            Ok(()) => Ok(true),
            Err(e) => {
                *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Ok(false)
            }
        }
    }

    async fn auth_banner(
        &mut self,
        banner: &str,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        tracing::debug!(host = %self.host, "banner: {}", banner.trim_end());
        Ok(())
    }
}

/// How long closing a session waits for the connection to end.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a channel the server refuses (it limits a connection's sessions) is asked for again,
/// while the sessions of earlier commands are freed; a loaded node can take a while.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The pause before asking again (the server frees a session once its command has ended).
const REOPEN_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

/// How often a send waiting for the server's window looks whether the connection ended.
const CLOSED_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// A logged-in SSH session to one node.
pub struct SshSession {
    handle: Arc<Handle<Client>>,
    addr: SocketAddr,
    user: String,
    sftp: OnceCell<russh_sftp::client::SftpSession>,
    /// Channels made ready for commands.
    ready: ReadyChannels<Client>,
    /// Through jump hosts: what keeps the way open while the session lives.
    _tunnel: Option<Tunnel>,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .finish()
    }
}

impl SshSession {
    /// Connects (through the jump hosts when there are), checks the host key, and logs in with
    /// the first credential the node accepts.
    pub async fn connect(options: &ConnectOptions, creds: &Credentials) -> Result<Self, Error> {
        let addr = options.addr;
        if let Some(jump) = &options.jump {
            let (stream, tunnel) = jump.tunnel(addr, options, creds).await?;
            return Self::over(stream, options, creds, Some(tunnel)).await;
        }
        let stream = tcp_connect(addr, options.timeout).await?;
        Self::over(stream, options, creds, None).await
    }

    /// The SSH handshake, host key check and login over `stream` (a TCP connection, or a channel
    /// through a jump host: `tunnel`, kept while the session lives).
    pub(super) async fn over<S>(
        stream: S,
        options: &ConnectOptions,
        creds: &Credentials,
        tunnel: Option<Tunnel>,
    ) -> Result<Self, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let addr = options.addr;
        let config = Arc::new(client::Config {
            keepalive_interval: Some(options.keepalive),
            keepalive_max: 3,
            inactivity_timeout: None,
            ..Default::default()
        });
        let refusal = Arc::new(Mutex::new(None));
        let handler = Client {
            host: options
                .host
                .clone()
                .unwrap_or_else(|| addr.ip().to_string()),
            port: addr.port(),
            check: options.host_keys.clone(),
            refusal: refusal.clone(),
        };
        let login = async {
            let mut handle = client::connect_stream(config, stream, handler)
                .await
                .map_err(|source| {
                    let refused = refusal.lock().unwrap_or_else(|p| p.into_inner()).take();
                    refused.unwrap_or(Error::Handshake {
                        addr,
                        source: Box::new(source),
                    })
                })?;
            authenticate(&mut handle, addr, &options.user, creds).await?;
            Ok::<_, Error>(handle)
        };
        let handle = tokio::time::timeout(options.timeout, login)
            .await
            .map_err(|_| Error::Timeout {
                addr,
                what: "SSH handshake with",
                after: options.timeout,
            })??;
        tracing::debug!(%addr, user = %options.user, "logged in");
        let handle = Arc::new(handle);
        Ok(SshSession {
            ready: ReadyChannels::start(handle.clone(), options.plan.clone()),
            handle,
            addr,
            user: options.user.clone(),
            sftp: OnceCell::new(),
            _tunnel: tunnel,
        })
    }

    /// A `direct-tcpip` channel to `host:port` from the node (the node as a jump host).
    pub(super) async fn direct_tcpip(
        &self,
        host: &str,
        port: u16,
    ) -> Result<russh::Channel<client::Msg>, russh::Error> {
        self.handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
    }

    /// The address connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The user logged in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Sends `data` on `channel`, failing when the connection ends meanwhile (a send waiting for
    /// the server to open the channel's window is not woken by the connection's end).
    pub(super) async fn send(
        &self,
        channel: &russh::Channel<client::Msg>,
        data: &[u8],
        what: &str,
    ) -> Result<(), Error> {
        let gone = async {
            while !self.handle.is_closed() {
                tokio::time::sleep(CLOSED_POLL).await;
            }
        };
        // Written whole rather than through russh's `data` (which copies through an 8 KiB
        // buffer): packets then take all the server allows, up to its maximum packet size.
        let write = async {
            let mut writer = channel.make_writer();
            writer.write_all(data).await?;
            writer.flush().await
        };
        tokio::select! {
            sent = write => sent.map_err(|e| self.channel_error(what, russh::Error::IO(e))),
            () = gone => Err(Error::ConnectionLost {
                addr: self.addr,
                source: Box::new(russh::Error::Disconnect),
            }),
        }
    }

    /// Opens a session channel. A server that refuses it (sshd's `MaxSessions`: channels made
    /// ready, or the last command's channel not yet freed, hold its sessions) gets the channels
    /// made ready back, and is asked again a few times while sessions close.
    pub(super) async fn channel(&self) -> Result<russh::Channel<client::Msg>, Error> {
        let give_up = tokio::time::Instant::now() + REOPEN_WAIT;
        loop {
            let refused = match self.handle.channel_open_session().await {
                Ok(channel) => return Ok(channel),
                Err(e @ russh::Error::ChannelOpenFailure(_)) => e,
                Err(e) => return Err(self.channel_error("opening a session channel", e)),
            };
            if tokio::time::Instant::now() >= give_up {
                return Err(self.channel_error("opening a session channel", refused));
            }
            self.ready.give_back().await;
            tokio::time::sleep(REOPEN_PAUSE).await;
        }
    }

    /// A channel ready for `command`, and what to send on it before the command's input; `None`
    /// when none could be made ready (then open one and `exec` on it). `in_place`: the command is
    /// POSIX sh that the shell waiting on the channel runs itself.
    pub(super) async fn ready_channel(
        &self,
        command: &str,
        in_place: bool,
    ) -> Option<(russh::Channel<client::Msg>, Vec<u8>)> {
        self.ready.take(command, in_place).await
    }

    /// The SFTP session of this connection, opened on first use.
    pub(super) async fn sftp(&self) -> Result<&russh_sftp::client::SftpSession, Error> {
        self.sftp
            .get_or_try_init(|| async {
                let channel = self.channel().await?;
                channel
                    .request_subsystem(true, "sftp")
                    .await
                    .map_err(|source| self.channel_error("starting the sftp subsystem", source))?;
                russh_sftp::client::SftpSession::new(channel.into_stream())
                    .await
                    .map_err(|source| Error::Sftp {
                        what: "starting the session".into(),
                        addr: self.addr,
                        source: Box::new(source),
                    })
            })
            .await
    }

    /// A channel failure: a lost connection when the session is gone.
    pub(super) fn channel_error(&self, what: &str, source: russh::Error) -> Error {
        if self.handle.is_closed() {
            Error::ConnectionLost {
                addr: self.addr,
                source: Box::new(source),
            }
        } else {
            Error::Channel {
                what: what.to_string(),
                addr: self.addr,
                source: Box::new(source),
            }
        }
    }

    /// Says goodbye to the server, and waits (a little) until the connection is closed, so that a
    /// fleet bounded to N connections never has more than N open.
    pub async fn close(self) {
        let SshSession { handle, ready, .. } = self;
        ready.shut().await;
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        if let Ok(handle) = Arc::try_unwrap(handle) {
            let _ = tokio::time::timeout(CLOSE_WAIT, handle).await;
        }
    }
}

/// A TCP connection to `addr` within `timeout`, with Nagle off (SSH's small packets go at once).
pub(super) async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Error> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Timeout {
            addr,
            what: "connecting to",
            after: timeout,
        })?
        .map_err(|source| Error::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// How many rounds of questions keyboard-interactive authentication may ask before nodeup gives
/// up (a password prompt takes one; a server that keeps asking is not answered forever).
const KEYBOARD_ROUNDS: usize = 4;

/// Keyboard-interactive authentication (sshd's `KbdInteractiveAuthentication`, often PAM): each
/// prompt that hides its answer (a password prompt) is answered with the password, and one that
/// shows it with nothing. Whether it let the user in.
async fn keyboard_interactive(
    handle: &mut Handle<Client>,
    user: &str,
    password: &super::Password,
) -> Result<bool, russh::Error> {
    use russh::client::KeyboardInteractiveAuthResponse as Answer;
    let mut reply = handle
        .authenticate_keyboard_interactive_start(user, None)
        .await?;
    for _ in 0..KEYBOARD_ROUNDS {
        match reply {
            Answer::Success => return Ok(true),
            Answer::Failure { .. } => return Ok(false),
            Answer::InfoRequest { prompts, .. } => {
                let answers = prompts
                    .iter()
                    .map(|p| {
                        if p.echo {
                            String::new()
                        } else {
                            password.0.clone()
                        }
                    })
                    .collect();
                reply = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await?;
            }
        }
    }
    Ok(matches!(reply, Answer::Success))
}

/// Logs in as `user` with the credentials in order: each key (its certificates first), the
/// agent's keys, the password (then keyboard-interactive with it). Every method tried is named
/// in the error.
async fn authenticate(
    handle: &mut Handle<Client>,
    addr: SocketAddr,
    user: &str,
    creds: &Credentials,
) -> Result<(), Error> {
    let lost = |source| Error::Handshake {
        addr,
        source: Box::new(source),
    };
    let mut tried = Vec::new();
    let accepted = with_keys(handle, user, creds, &mut tried)
        .await
        .map_err(lost)?
        || with_agent(handle, user, creds, &mut tried).await
        || with_password(handle, user, creds, &mut tried)
            .await
            .map_err(lost)?;
    if accepted {
        return Ok(());
    }
    Err(Error::AuthRejected {
        user: user.to_string(),
        addr,
        tried,
    })
}

/// The key files, each one's certificates first; whether one was accepted.
async fn with_keys(
    handle: &mut Handle<Client>,
    user: &str,
    creds: &Credentials,
    tried: &mut Vec<String>,
) -> Result<bool, russh::Error> {
    let best_rsa = if creds.keys.iter().any(|(_, k)| k.algorithm().is_rsa()) {
        handle.best_supported_rsa_hash().await?
    } else {
        None
    };
    for (path, key) in &creds.keys {
        for (cert_path, cert) in creds.certificates_of(key) {
            tried.push(format!(
                "certificate {} ({})",
                cert.key_id(),
                cert_path.display()
            ));
            let result = handle
                .authenticate_openssh_cert(user, key.clone(), cert.clone())
                .await?;
            if matches!(result, AuthResult::Success) {
                return Ok(true);
            }
        }
        tried.push(format!(
            "publickey {} ({})",
            key.public_key().fingerprint(HashAlg::Sha256),
            path.display()
        ));
        let with_hash = PrivateKeyWithHashAlg::new(key.clone(), rsa_hash(key, best_rsa));
        if matches!(
            handle.authenticate_publickey(user, with_hash).await?,
            AuthResult::Success
        ) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The ssh-agent's keys; whether one was accepted. An agent that cannot be reached or cannot
/// sign is not an error: the next method is tried.
async fn with_agent(
    handle: &mut Handle<Client>,
    user: &str,
    creds: &Credentials,
    tried: &mut Vec<String>,
) -> bool {
    let Some(socket) = &creds.agent else {
        return false;
    };
    let mut agent = match AgentClient::connect_uds(socket).await {
        Ok(agent) => agent,
        Err(e) => {
            tracing::debug!("no ssh-agent at {}: {e}", socket.display());
            tried.push(format!("agent at {} (unreachable: {e})", socket.display()));
            return false;
        }
    };
    let identities = agent.request_identities().await.unwrap_or_default();
    for identity in identities {
        let AgentIdentity::PublicKey { key, comment } = identity else {
            continue;
        };
        tried.push(format!(
            "agent key {} {comment}",
            key.fingerprint(HashAlg::Sha256)
        ));
        let hash = key.algorithm().is_rsa().then_some(HashAlg::Sha256);
        match handle
            .authenticate_publickey_with(user, key, hash, &mut agent)
            .await
        {
            Ok(AuthResult::Success) => return true,
            Ok(_) => {}
            Err(e) => tracing::debug!("agent signing failed: {e}"),
        }
    }
    false
}

/// The password, then keyboard-interactive answered with it; whether it was accepted.
async fn with_password(
    handle: &mut Handle<Client>,
    user: &str,
    creds: &Credentials,
    tried: &mut Vec<String>,
) -> Result<bool, russh::Error> {
    let Some(password) = &creds.password else {
        return Ok(false);
    };
    tried.push("password".into());
    let result = handle
        .authenticate_password(user, password.0.clone())
        .await?;
    if matches!(result, AuthResult::Success) {
        return Ok(true);
    }
    tried.push("keyboard-interactive".into());
    keyboard_interactive(handle, user, password).await
}
