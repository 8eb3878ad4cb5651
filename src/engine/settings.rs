//! Settings resolved once: what the command line (or a library caller), the step file and the
//! OpenSSH client config said, turned into what is decided, with OpenSSH's precedence: the command
//! line, then the step file, then the config, then nodeup's defaults (which depend on what the
//! machines are: [`Purpose`]).
//!
//! [`resolve`] decides the deployment's [`DeployOptions`]; [`for_machine`] decides, for a machine
//! that exists (`nodeup run`), its address, port, user, keys and SSH settings; [`for_created_node`]
//! decides, for a node nodeup created (or reinstalled) once its address is known, what the config
//! says of that address. `deploy`, `run`, `reinstall --then` and library callers all go through
//! here, so that a setting means the same wherever it is given.
//!
//! | setting | command line | step file | ssh_config | default |
//! |---|---|---|---|---|
//! | first user | `--ssh-user` (`user@` of a host) | `[ssh] username` | `User` (run) | root |
//! | port | `:port` of a host | `[ssh] port` | `Port` (run) | the node's, else 22 |
//! | keys | `--key` (a host's inventory key) | `[ssh] keys` | `IdentityFile` (run) | ~/.ssh defaults, agent |
//! | known_hosts | `--known-hosts` | `[ssh] known_hosts` | `UserKnownHostsFile` (run) | nodeup's (deploy), ~/.ssh/known_hosts (run) |
//! | host-key policy | `--host-key-policy` | `[ssh] host_key_policy` | `StrictHostKeyChecking` (run) | accept-new (deploy), strict (run) |
//! | jump hosts | `--jump` | `[ssh] jump` | `ProxyJump` | none |
//! | connect timeout | | `[ssh] timeout` | `ConnectTimeout` | [`DEFAULT_CONNECT_TIMEOUT`] |
//! | keepalive | | | `ServerAliveInterval` | [`DEFAULT_KEEPALIVE`] |
//! | whole wait | `--timeout` | `[node] timeout` | | [`DEFAULT_TIMEOUT`] ([`REINSTALL_TIMEOUT`]) |
//! | connections | `--max-tries` | `[ssh] max_tries` | | [`DEFAULT_MAX_TRIES`] |
//! | IPv4 only | `--force-ipv4 BOOL` | `[ssh] force_ipv4` | | true (Libcloud's) |
//! | re-run failed steps | `--retry-failed-steps` | `[ssh] retry_failed_steps` | | off |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::connect::LoginOptions;
use super::options::{DeployOptions, DEFAULT_MAX_TRIES, DEFAULT_TIMEOUT};
use super::target::{Target, TargetSsh};
use crate::deploy::stepfile::StepFile;
use crate::ssh::config::{ConfigError, HostConfig};
use crate::ssh::{Hop, HostKeyCheck, HostKeyPolicy, NewNode, Password, SshConfig};

pub use super::options::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE};

/// How long logging in after a reinstall may take unless told otherwise: the server boots the new
/// system first, which on bare metal (firmware, disks) takes minutes.
pub const REINSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Which OpenSSH client configuration to read (`--ssh-config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    /// `~/.ssh/config`, then `/etc/ssh/ssh_config`, as `ssh` reads them.
    #[default]
    Default,
    /// This file only (`ssh -F FILE`).
    File(PathBuf),
    /// None (`-F none`).
    None,
}

impl ConfigSource {
    /// `none` for none, else the file.
    pub fn from_flag(value: Option<PathBuf>) -> Self {
        match value {
            None => ConfigSource::Default,
            Some(path) if path.as_os_str() == "none" => ConfigSource::None,
            Some(path) => ConfigSource::File(path),
        }
    }

    /// Reads it.
    ///
    /// # Errors
    /// A file that cannot be read or used, named.
    pub fn load(&self) -> Result<SshConfig, ConfigError> {
        match self {
            ConfigSource::Default => SshConfig::load_default(),
            ConfigSource::File(path) => SshConfig::load_file(path),
            ConfigSource::None => Ok(SshConfig::default()),
        }
    }
}

/// What the command line (or a library caller) said: `None` and empty for "nothing said".
#[derive(Debug, Clone, Default)]
pub struct Said {
    /// `--ssh-user`.
    pub ssh_user: Option<String>,
    /// `--alt-user`s: tried after the step file's alternates.
    pub alternate_usernames: Vec<String>,
    /// `--key`s.
    pub keys: Vec<PathBuf>,
    /// `--known-hosts`.
    pub known_hosts: Option<PathBuf>,
    /// `--host-key-policy`.
    pub host_key_policy: Option<HostKeyPolicy>,
    /// `--timeout`: how long to wait for a node to run and accept a login.
    pub timeout: Option<Duration>,
    /// `--max-tries`.
    pub max_tries: Option<u32>,
    /// `--jump`, first hop first.
    pub jump: Vec<Hop>,
    /// `--ssh-config`.
    pub ssh_config: ConfigSource,
    /// `--force-ipv4 BOOL`.
    pub force_ipv4: Option<bool>,
    /// `--retry-failed-steps`.
    pub retry_failed_steps: Option<bool>,
}

/// What the machines are: it decides the defaults that differ between commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Nodes this deployment creates: a host key is trusted on first use and recorded in
    /// nodeup's own known_hosts; the config is looked up by the node's address for `ProxyJump`,
    /// `ConnectTimeout` and `ServerAliveInterval` only (the node's user and keys are nodeup's).
    Deploy,
    /// Machines that exist (`nodeup run`): host keys are checked strictly, against
    /// `~/.ssh/known_hosts`, or nodeup's own for a provider's nodes (`provider_nodes`).
    Run {
        /// The machines are a provider's nodes (`--nodes`), whose keys nodeup recorded.
        provider_nodes: bool,
    },
    /// A server reinstalled at the user's request: as [`Purpose::Deploy`], with a longer wait.
    Reinstall,
}

/// Which settings the command line or the step file gave: the config yields to them.
#[derive(Debug, Clone, Copy, Default)]
struct Given {
    user: bool,
    keys: bool,
    known_hosts: bool,
    policy: bool,
    connect_timeout: bool,
}

/// The OpenSSH client config as the deployment looks machines up in it, with what the command line
/// and step file decided already (which the config does not override). Held by
/// [`DeployOptions::ssh_config`].
#[derive(Debug, Default)]
pub struct ConfigLookup {
    config: SshConfig,
    given: Given,
}

impl ConfigLookup {
    /// The config, with nothing given that it must yield to: every directive nodeup applies is
    /// taken from it.
    pub fn new(config: SshConfig) -> Self {
        ConfigLookup {
            config,
            given: Given::default(),
        }
    }

    /// The config itself.
    pub fn config(&self) -> &SshConfig {
        &self.config
    }
}

/// The deployment's options from what the command line said, the step file (when there is one)
/// and the config `said.ssh_config` names, for machines of `purpose`.
///
/// # Errors
/// A config file that cannot be read or used, or a jump host the config refuses.
pub fn resolve(
    said: &Said,
    file: Option<&StepFile>,
    purpose: Purpose,
) -> Result<DeployOptions, ConfigError> {
    let ssh = file.map(|f| f.ssh.clone()).unwrap_or_default();
    let node_timeout = file.and_then(|f| f.node.timeout);
    let mut options = DeployOptions {
        host_key_policy: default_policy(purpose),
        known_hosts: default_known_hosts(purpose),
        timeout: match purpose {
            Purpose::Reinstall => REINSTALL_TIMEOUT,
            _ => DEFAULT_TIMEOUT,
        },
        ..DeployOptions::default()
    };
    if let Some(user) = said.ssh_user.clone().or(ssh.username.clone()) {
        options.ssh_username = Some(user);
    }
    options.alternate_usernames = ssh.alternate_usernames.clone();
    options
        .alternate_usernames
        .extend(said.alternate_usernames.iter().cloned());
    options.ssh_keys = first_nonempty(&said.keys, &ssh.keys);
    options.ssh_key_passphrase = std::env::var("NODEUP_KEY_PASSPHRASE").ok().map(Password);
    options.password = std::env::var("NODEUP_SSH_PASSWORD").ok().map(Password);
    options.port = ssh.port;
    options.ssh_timeout = ssh.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    options.timeout = said.timeout.or(node_timeout).unwrap_or(options.timeout);
    options.max_tries = said
        .max_tries
        .or(ssh.max_tries)
        .unwrap_or(DEFAULT_MAX_TRIES);
    if let Some(policy) = said.host_key_policy.or(ssh.host_key_policy) {
        options.host_key_policy = policy;
    }
    if let Some(file) = said.known_hosts.clone().or(ssh.known_hosts.clone()) {
        options.known_hosts = file;
    }
    if let Some(interface) = ssh.interface {
        options.interface = interface;
    }
    if let Some(force) = said.force_ipv4.or(ssh.force_ipv4) {
        options.force_ipv4 = force;
    }
    if let Some(retry) = said.retry_failed_steps.or(ssh.retry_failed_steps) {
        options.retry_failed_steps = retry;
    }
    let lookup = ConfigLookup {
        config: said.ssh_config.load()?,
        given: Given {
            user: said.ssh_user.is_some() || ssh.username.is_some(),
            keys: !options.ssh_keys.is_empty(),
            known_hosts: said.known_hosts.is_some() || ssh.known_hosts.is_some(),
            policy: said.host_key_policy.is_some() || ssh.host_key_policy.is_some(),
            connect_timeout: ssh.timeout.is_some(),
        },
    };
    let hops = first_nonempty(&said.jump, &ssh.jump);
    options.jump = lookup.config.jump(&hops)?;
    options.ssh_config = Some(Arc::new(lookup));
    Ok(options)
}

/// The policy for host keys not recorded yet when nothing says otherwise.
fn default_policy(purpose: Purpose) -> HostKeyPolicy {
    match purpose {
        Purpose::Deploy | Purpose::Reinstall => HostKeyPolicy::AcceptNew,
        Purpose::Run { .. } => HostKeyPolicy::Strict,
    }
}

/// The known_hosts file when nothing says otherwise: nodeup's own for nodes it made or whose keys
/// it recorded, else the user's.
fn default_known_hosts(purpose: Purpose) -> PathBuf {
    match (purpose, std::env::var_os("HOME")) {
        (
            Purpose::Run {
                provider_nodes: false,
            },
            Some(home),
        ) => PathBuf::from(home).join(".ssh/known_hosts"),
        _ => super::default_known_hosts(),
    }
}

/// `first` when it holds anything, else `second`.
fn first_nonempty<T: Clone>(first: &[T], second: &[T]) -> Vec<T> {
    if first.is_empty() { second } else { first }.to_vec()
}

/// For a node nodeup created (or reinstalled), at `address`: what the config says of that address
/// where the command line and step file said nothing: `ProxyJump`, `ConnectTimeout` and
/// `ServerAliveInterval`. The node's user, keys and known_hosts stay the deployment's.
///
/// # Errors
/// What the config refuses for that address (a `ProxyCommand`).
pub fn for_created_node(options: &DeployOptions, address: &str) -> Result<TargetSsh, ConfigError> {
    let Some(lookup) = &options.ssh_config else {
        return Ok(TargetSsh::default());
    };
    let said = lookup.config.host(address)?;
    Ok(TargetSsh {
        jump: config_jump(lookup, options, &said)?,
        connect_timeout: said
            .connect_timeout
            .filter(|_| !lookup.given.connect_timeout),
        keepalive: said.server_alive_interval,
        ..TargetSsh::default()
    })
}

/// The chain of the config's `ProxyJump`, unless jump hosts were given.
fn config_jump(
    lookup: &ConfigLookup,
    options: &DeployOptions,
    said: &HostConfig,
) -> Result<Option<crate::ssh::Jump>, ConfigError> {
    match (&options.jump, &said.proxy_jump) {
        (None, Some(hops)) => lookup.config.jump(hops),
        _ => Ok(None),
    }
}

/// A machine as it was named (`--host`, an inventory line, a provider's node): what it says of
/// itself wins over everything else.
#[derive(Debug, Clone, Default)]
pub struct MachineGiven {
    /// The host as given: an alias, a name or an address.
    pub host: String,
    /// Its `:port`.
    pub port: Option<u16>,
    /// Its `user@`.
    pub user: Option<String>,
    /// Its own key file (an inventory's `ansible_ssh_private_key_file`).
    pub key_file: Option<PathBuf>,
}

/// Which keys a machine is logged in to with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyChoice {
    /// The deployment's credentials ([`DeployOptions::credentials`]).
    Deployment,
    /// These key files (and certificate), and the agent when `agent`.
    Files {
        /// Private key files that exist.
        files: Vec<PathBuf>,
        /// ssh_config's `CertificateFile`.
        certificate: Option<PathBuf>,
        /// Also the agent's keys (not under `IdentitiesOnly`, nor for an inventory's own key).
        agent: bool,
    },
}

/// What is decided for a machine that exists.
#[derive(Debug, Clone)]
pub struct MachineSettings {
    /// Where to connect: the config's `HostName`, else the host as given.
    pub host: String,
    /// The port: its own, else the step file's, else the config's, else 22.
    pub port: u16,
    /// The first user to log in as: its own, else the command line's or step file's, else the
    /// config's, else the deployment's default.
    pub user: String,
    /// The keys to log in with.
    pub keys: KeyChoice,
    /// Its SSH settings over the deployment's.
    pub ssh: TargetSsh,
    /// Directives the config sets for it that nodeup does not apply.
    pub ignored: Vec<String>,
}

/// The settings of a machine that exists, from what it says of itself, the deployment's options
/// and the config.
///
/// # Errors
/// What the config refuses for it (a `ProxyCommand`, a `ProxyJump` that does not parse).
pub fn for_machine(
    options: &DeployOptions,
    machine: &MachineGiven,
) -> Result<MachineSettings, ConfigError> {
    let default_lookup = ConfigLookup::default();
    let lookup = options.ssh_config.as_deref().unwrap_or(&default_lookup);
    let said = lookup.config.host(&machine.host)?;
    let given = lookup.given;
    let user = match (&machine.user, given.user, &said.user) {
        (Some(user), _, _) => user.clone(),
        (None, false, Some(user)) => user.clone(),
        _ => options.first_user().to_string(),
    };
    let keys = match &machine.key_file {
        Some(path) => KeyChoice::Files {
            files: vec![path.clone()],
            certificate: said.certificate_file.clone(),
            agent: false,
        },
        None if !given.keys => {
            let files: Vec<PathBuf> = (said.identity_files.iter())
                .filter(|f| f.exists())
                .cloned()
                .collect();
            if files.is_empty() && said.certificate_file.is_none() {
                KeyChoice::Deployment
            } else {
                KeyChoice::Files {
                    files,
                    certificate: said.certificate_file.clone(),
                    agent: !said.identities_only,
                }
            }
        }
        None => KeyChoice::Deployment,
    };
    let ssh = TargetSsh {
        jump: config_jump(lookup, options, &said)?,
        known_hosts: said.known_hosts.clone().filter(|_| !given.known_hosts),
        host_key_policy: said.host_key_policy.filter(|_| !given.policy),
        connect_timeout: said.connect_timeout.filter(|_| !given.connect_timeout),
        keepalive: said.server_alive_interval,
    };
    Ok(MachineSettings {
        host: said.host_name.clone().unwrap_or(machine.host.clone()),
        port: machine
            .port
            .or(options.port)
            .or(said.port)
            .unwrap_or(crate::ssh::SSH_PORT),
        user,
        keys,
        ssh,
        ignored: said.ignored,
    })
}

/// How to log in to `target`: its own SSH settings ([`Target::ssh`], from the config) where it
/// has them, else the deployment's.
pub(crate) fn login_options(target: &Target, options: &DeployOptions) -> LoginOptions {
    let own = &target.ssh;
    LoginOptions {
        users: target.users.clone(),
        attempt_timeout: own.connect_timeout.unwrap_or(options.ssh_timeout),
        keepalive: own.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
        host_keys: HostKeyCheck {
            policy: own.host_key_policy.unwrap_or(options.host_key_policy),
            known_hosts: (own.known_hosts.as_ref())
                .unwrap_or(&options.known_hosts)
                .clone(),
            pinned: target.pinned_host_keys.clone(),
            new_node: target.created.then(NewNode::default),
        },
        host_name: None,
        startups: options.startups.clone(),
        plan: crate::ssh::Plan::unknown(),
        jump: own.jump.clone().or(options.jump.clone()),
        waiting: None,
    }
}

#[cfg(test)]
mod tests {
    //! One precedence table: each setting given at each source (and at every source below it),
    //! for `deploy`, `run` and `reinstall --then`; the highest source given must win, and the
    //! config only where it applies to the machines of that command.

    use std::net::{IpAddr, SocketAddr};
    use std::path::Path;

    use super::*;
    use crate::deploy::stepfile;

    /// Where a setting is given, highest first.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Source {
        Cli,
        File,
        Config,
        Default,
    }

    /// The sources, as a test sets them up.
    #[derive(Default)]
    struct Sources {
        said: Said,
        ssh: Vec<String>,
        node: Vec<String>,
        config: Vec<String>,
        machine: MachineGiven,
    }

    /// What a login is decided to be, as text.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Decided {
        user: String,
        port: u16,
        keys: String,
        known_hosts: String,
        policy: String,
        jump: String,
        connect_timeout: Duration,
        keepalive: Duration,
        timeout: Duration,
        max_tries: u32,
        force_ipv4: bool,
        retry_failed_steps: bool,
    }

    const ADDRESS: &str = "192.0.2.7";

    fn decide(dir: &Path, purpose: Purpose, sources: &Sources) -> Decided {
        let config = dir.join("ssh_config");
        std::fs::write(&config, format!("Host *\n{}\n", sources.config.join("\n"))).unwrap();
        let text = format!(
            "[node]\n{}\n[ssh]\n{}\n[[step]]\ninline = \"true\"\n",
            sources.node.join("\n"),
            sources.ssh.join("\n")
        );
        let file = stepfile::parse(&dir.join("steps.toml"), &text).unwrap();
        let said = Said {
            ssh_config: ConfigSource::File(config),
            ..sources.said.clone()
        };
        let options = resolve(&said, Some(&file), purpose).unwrap();
        let (target, keys) = match purpose {
            Purpose::Run { .. } => {
                let machine = MachineGiven {
                    host: ADDRESS.into(),
                    ..sources.machine.clone()
                };
                let decided = for_machine(&options, &machine).unwrap();
                let addr = SocketAddr::new(ADDRESS.parse().unwrap(), decided.port);
                (target(addr, vec![decided.user], decided.ssh), decided.keys)
            }
            _ => {
                let ip: IpAddr = ADDRESS.parse().unwrap();
                let port = options.port.unwrap_or(crate::ssh::SSH_PORT);
                let ssh = for_created_node(&options, &ip.to_string()).unwrap();
                let users = vec![options.first_user().to_string()];
                (
                    target(SocketAddr::new(ip, port), users, ssh),
                    KeyChoice::Deployment,
                )
            }
        };
        let login = login_options(&target, &options);
        let keys = match keys {
            KeyChoice::Deployment => names(&options.ssh_keys),
            KeyChoice::Files { files, .. } => names(&files),
        };
        Decided {
            user: login.users[0].clone(),
            port: target.addr.port(),
            keys,
            known_hosts: name(&login.host_keys.known_hosts),
            policy: format!("{:?}", login.host_keys.policy),
            jump: login
                .jump
                .map(|j| j.hops().iter().map(|h| h.to_string()).collect())
                .unwrap_or_default(),
            connect_timeout: login.attempt_timeout,
            keepalive: login.keepalive,
            timeout: options.timeout,
            max_tries: options.max_tries,
            force_ipv4: options.force_ipv4,
            retry_failed_steps: options.retry_failed_steps,
        }
    }

    fn target(addr: SocketAddr, users: Vec<String>, ssh: TargetSsh) -> Target {
        Target {
            addr,
            users,
            pinned_host_keys: Vec::new(),
            node: None,
            journal: None,
            created: false,
            driver: None,
            ssh,
        }
    }

    fn name(path: &Path) -> String {
        path.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn names(paths: &[PathBuf]) -> String {
        paths.iter().map(|p| name(p)).collect::<Vec<_>>().join(",")
    }

    /// Gives a setting at `source` (and every source below it, so that the one above must win).
    type Give = fn(&mut Sources, Source, &Path);

    /// One setting: how to give it, and what is decided when `source` is the highest given.
    struct Row {
        setting: &'static str,
        give: Give,
        expect: fn(&Decided, Purpose) -> String,
        want: fn(Source, Purpose) -> String,
    }

    fn applies_to_created(purpose: Purpose) -> bool {
        !matches!(purpose, Purpose::Run { .. })
    }

    /// Every setting of the precedence table.
    fn rows() -> Vec<Row> {
        [login_rows(), host_key_rows(), timing_rows(), retry_rows()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Who logs in, on which port, with which keys.
    fn login_rows() -> Vec<Row> {
        vec![
            Row {
                setting: "first user",
                give: |s, at, _| {
                    if at <= Source::Cli {
                        s.said.ssh_user = Some("cli-user".into());
                        s.machine.user = None;
                    }
                    if at <= Source::File {
                        s.ssh.push("username = \"file-user\"".into());
                    }
                    if at <= Source::Config {
                        s.config.push("User config-user".into());
                    }
                },
                expect: |d, _| d.user.clone(),
                want: |at, purpose| match at {
                    Source::Cli => "cli-user".into(),
                    Source::File => "file-user".into(),
                    Source::Config if !applies_to_created(purpose) => "config-user".into(),
                    _ => "root".into(),
                },
            },
            Row {
                setting: "port",
                give: |s, at, _| {
                    if at <= Source::Cli {
                        s.machine.port = Some(2201);
                    }
                    if at <= Source::File {
                        s.ssh.push("port = 2202".into());
                    }
                    if at <= Source::Config {
                        s.config.push("Port 2203".into());
                    }
                },
                expect: |d, _| d.port.to_string(),
                want: |at, purpose| {
                    match (at, applies_to_created(purpose)) {
                        (Source::Cli, false) => "2201",
                        (Source::Cli | Source::File, _) => "2202",
                        (Source::Config, false) => "2203",
                        _ => "22",
                    }
                    .into()
                },
            },
            Row {
                setting: "keys",
                give: |s, at, dir| {
                    for key in ["cli_key", "file_key", "config_key"] {
                        std::fs::write(dir.join(key), "not read here").unwrap();
                    }
                    if at <= Source::Cli {
                        s.said.keys = vec![dir.join("cli_key")];
                    }
                    if at <= Source::File {
                        s.ssh.push("keys = [\"file_key\"]".into());
                    }
                    if at <= Source::Config {
                        let path = dir.join("config_key");
                        s.config.push(format!("IdentityFile {}", path.display()));
                    }
                },
                expect: |d, _| d.keys.clone(),
                want: |at, purpose| match at {
                    Source::Cli => "cli_key".into(),
                    Source::File => "file_key".into(),
                    Source::Config if !applies_to_created(purpose) => "config_key".into(),
                    _ => String::new(),
                },
            },
        ]
    }

    /// Which hosts are trusted, and the jump hosts on the way.
    fn host_key_rows() -> Vec<Row> {
        vec![
            Row {
                setting: "known_hosts",
                give: |s, at, dir| {
                    if at <= Source::Cli {
                        s.said.known_hosts = Some(dir.join("cli_known_hosts"));
                    }
                    if at <= Source::File {
                        s.ssh.push("known_hosts = \"file_known_hosts\"".into());
                    }
                    if at <= Source::Config {
                        let path = dir.join("config_known_hosts");
                        s.config
                            .push(format!("UserKnownHostsFile {}", path.display()));
                    }
                },
                expect: |d, _| d.known_hosts.clone(),
                want: |at, purpose| match at {
                    Source::Cli => "cli_known_hosts".into(),
                    Source::File => "file_known_hosts".into(),
                    Source::Config if !applies_to_created(purpose) => "config_known_hosts".into(),
                    _ => name(&default_known_hosts(purpose)),
                },
            },
            Row {
                setting: "host-key policy",
                give: |s, at, _| {
                    if at <= Source::Cli {
                        s.said.host_key_policy = Some(HostKeyPolicy::Off);
                    }
                    if at <= Source::File {
                        s.ssh.push("host_key_policy = \"strict\"".into());
                    }
                    if at <= Source::Config {
                        s.config.push("StrictHostKeyChecking accept-new".into());
                    }
                },
                expect: |d, _| d.policy.clone(),
                want: |at, purpose| match at {
                    Source::Cli => "Off".into(),
                    Source::File => "Strict".into(),
                    Source::Config if !applies_to_created(purpose) => "AcceptNew".into(),
                    _ => format!("{:?}", default_policy(purpose)),
                },
            },
            Row {
                setting: "jump hosts",
                give: |s, at, _| {
                    if at <= Source::Cli {
                        s.said.jump = Hop::parse_chain("cli@hop1:2222").unwrap();
                    }
                    if at <= Source::File {
                        s.ssh.push("jump = [\"file@hop2:22\"]".into());
                    }
                    if at <= Source::Config {
                        s.config.push("ProxyJump config@hop3".into());
                    }
                },
                expect: |d, _| d.jump.clone(),
                want: |at, _| match at {
                    Source::Cli => "cli@hop1:2222".into(),
                    Source::File => "file@hop2:22".into(),
                    Source::Config => "config@hop3:22".into(),
                    Source::Default => String::new(),
                },
            },
        ]
    }

    /// How long each wait lasts.
    fn timing_rows() -> Vec<Row> {
        vec![
            Row {
                setting: "connect timeout",
                give: |s, at, _| {
                    if at <= Source::File {
                        s.ssh.push("timeout = \"21s\"".into());
                    }
                    if at <= Source::Config {
                        s.config.push("ConnectTimeout 31".into());
                    }
                },
                expect: |d, _| format!("{:?}", d.connect_timeout),
                want: |at, _| match at {
                    Source::Cli | Source::File => "21s".into(),
                    Source::Config => "31s".into(),
                    Source::Default => format!("{DEFAULT_CONNECT_TIMEOUT:?}"),
                },
            },
            Row {
                setting: "keepalive",
                give: |s, at, _| {
                    if at <= Source::Config {
                        s.config.push("ServerAliveInterval 17".into());
                    }
                },
                expect: |d, _| format!("{:?}", d.keepalive),
                want: |at, _| match at {
                    Source::Default => format!("{DEFAULT_KEEPALIVE:?}"),
                    _ => "17s".into(),
                },
            },
            Row {
                setting: "whole wait",
                give: |s, at, _| {
                    if at <= Source::Cli {
                        s.said.timeout = Some(Duration::from_secs(111));
                    }
                    if at <= Source::File {
                        s.node.push("timeout = \"222s\"".into());
                    }
                },
                expect: |d, _| format!("{:?}", d.timeout),
                want: |at, purpose| match (at, purpose) {
                    (Source::Cli, _) => "111s".into(),
                    (Source::File, _) => "222s".into(),
                    (_, Purpose::Reinstall) => format!("{REINSTALL_TIMEOUT:?}"),
                    _ => format!("{DEFAULT_TIMEOUT:?}"),
                },
            },
        ]
    }

    /// What is tried again, and over which addresses.
    fn retry_rows() -> Vec<Row> {
        vec![
            Row {
                setting: "max tries",
                give: |s, at, _| {
                    if at <= Source::Cli {
                        s.said.max_tries = Some(7);
                    }
                    if at <= Source::File {
                        s.ssh.push("max_tries = 5".into());
                    }
                },
                expect: |d, _| d.max_tries.to_string(),
                want: |at, _| match at {
                    Source::Cli => "7".into(),
                    Source::File => "5".into(),
                    _ => DEFAULT_MAX_TRIES.to_string(),
                },
            },
            Row {
                setting: "IPv4 only",
                give: |s, at, _| {
                    if at <= Source::Cli {
                        s.said.force_ipv4 = Some(true);
                    }
                    if at <= Source::File {
                        s.ssh.push("force_ipv4 = false".into());
                    }
                },
                expect: |d, _| d.force_ipv4.to_string(),
                want: |at, _| (at != Source::File).to_string(),
            },
            Row {
                setting: "re-run failed steps",
                give: |s, at, _| {
                    if at <= Source::Cli {
                        s.said.retry_failed_steps = Some(false);
                    }
                    if at <= Source::File {
                        s.ssh.push("retry_failed_steps = true".into());
                    }
                },
                expect: |d, _| d.retry_failed_steps.to_string(),
                want: |at, _| (at == Source::File).to_string(),
            },
        ]
    }

    #[test]
    fn each_setting_from_each_source_for_deploy_run_and_reinstall() {
        let purposes = [
            Purpose::Deploy,
            Purpose::Run {
                provider_nodes: false,
            },
            Purpose::Reinstall,
        ];
        let sources = [Source::Cli, Source::File, Source::Config, Source::Default];
        let mut checked = 0;
        for row in rows() {
            for purpose in purposes {
                for at in sources {
                    let dir = tempfile::tempdir().unwrap();
                    let mut given = Sources::default();
                    (row.give)(&mut given, at, dir.path());
                    let decided = decide(dir.path(), purpose, &given);
                    assert_eq!(
                        (row.expect)(&decided, purpose),
                        (row.want)(at, purpose),
                        "{} given from {at:?} down, for {purpose:?}",
                        row.setting
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 12 * 3 * 4);
    }

    #[test]
    fn a_machine_own_user_and_port_win_over_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut given = Sources::default();
        given.said.ssh_user = Some("cli-user".into());
        given.ssh.push("port = 2202".into());
        given.config.push("User config-user\nPort 2203".into());
        given.machine = MachineGiven {
            user: Some("own".into()),
            port: Some(2201),
            ..MachineGiven::default()
        };
        let run = Purpose::Run {
            provider_nodes: false,
        };
        let decided = decide(dir.path(), run, &given);
        assert_eq!((decided.user.as_str(), decided.port), ("own", 2201));
        let nodes = Purpose::Run {
            provider_nodes: true,
        };
        let decided = decide(dir.path(), nodes, &Sources::default());
        assert_eq!(
            decided.known_hosts,
            name(&super::super::default_known_hosts())
        );
    }
}
