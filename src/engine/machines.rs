//! Machines that exist, made ready for [`super::fleet::run_fleet`]: each one's settings decided
//! ([`settings::for_machine`]), its address resolved, its credentials loaded (each key file once),
//! and the member made with the users to try. `nodeup run` and the Python package's `run` share it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::fleet::RunMember;
use super::options::DeployOptions;
use super::settings::{self, KeyChoice, MachineGiven};
use super::target::{Target, TargetSsh};
use crate::ssh::config::ConfigError;
use crate::ssh::{self, load_certificate, Credentials};

/// A machine to run on, wherever it was named: how it is shown, what it says of itself, and what
/// its provider reports (more users to try, its host keys).
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// Its name in output and the journal (the host as given).
    pub label: String,
    /// What it says of itself: host, port, user, key file.
    pub given: MachineGiven,
    /// Users to try after the deployment's alternates (the image's login user).
    pub more_users: Vec<String>,
    /// Host keys its provider reported.
    pub pinned: Vec<String>,
}

/// Why machines cannot be made ready; nothing was run.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The OpenSSH client config refuses what it says of a machine.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key file or certificate cannot be used.
    #[error(transparent)]
    Keys(#[from] ssh::Error),
    /// No key, password or agent to log in with.
    #[error(
        "{0}: no way to log in: give a private key file (--key), NODEUP_SSH_PASSWORD, or run an \
         ssh-agent"
    )]
    NoLogin(String),
    /// The host name does not resolve.
    #[error("{label}: cannot resolve {host}")]
    Unresolved {
        /// The machine as given.
        label: String,
        /// The host name looked up.
        host: String,
    },
}

/// A machine ready to run on: resolved, with its credentials. Kept small: the fleet's member
/// (with its session options) is made from it only when a slot is free.
#[derive(Debug)]
pub struct Prepared {
    /// The machine as named.
    pub machine: Machine,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The first user to log in as.
    pub user: String,
    /// What to log in with.
    pub creds: Arc<Credentials>,
    /// What the OpenSSH client config says of the machine, where nothing else did.
    pub ssh: TargetSsh,
}

impl Prepared {
    /// The member: the machine's user first, then the alternates and the provider's login user.
    /// `created` says that this deployment made the machine (a host key recorded for its address
    /// before belongs to an older machine: [`Target::created`]).
    pub fn member(self, options: &DeployOptions, created: bool) -> RunMember {
        let machine = self.machine;
        let mut users = vec![self.user];
        for user in options
            .alternate_usernames
            .iter()
            .chain(&machine.more_users)
        {
            if !users.contains(user) {
                users.push(user.clone());
            }
        }
        RunMember {
            label: machine.label,
            target: Target {
                addr: self.addr,
                users,
                pinned_host_keys: machine.pinned,
                node: None,
                journal: None,
                created,
                driver: None,
                ssh: self.ssh,
            },
            creds: self.creds,
        }
    }
}

/// Each machine with what is decided for it ([`settings::for_machine`]), resolved, with its
/// credentials (key files loaded once each).
///
/// # Errors
/// A machine the config refuses, a key that cannot be used, no way to log in, a name that does
/// not resolve.
pub async fn prepare(
    machines: Vec<Machine>,
    options: &DeployOptions,
) -> Result<Vec<Prepared>, MachineError> {
    let mut keys = Keys::new(options)?;
    let mut said_ignored = std::collections::BTreeSet::new();
    let mut prepared = Vec::with_capacity(machines.len());
    for machine in machines {
        let decided = settings::for_machine(options, &machine.given)?;
        said_ignored.extend(decided.ignored.iter().cloned());
        let addr = resolve(&machine.label, &decided.host, decided.port).await?;
        let creds = keys.for_machine(&machine.label, &decided.keys)?;
        prepared.push(Prepared {
            machine,
            addr,
            user: decided.user,
            creds,
            ssh: decided.ssh,
        });
    }
    if !said_ignored.is_empty() {
        let list: Vec<String> = said_ignored.into_iter().collect();
        tracing::info!("ssh config: not applied by nodeup: {}", list.join(", "));
    }
    Ok(prepared)
}

/// Credentials by where they come from, each loaded once: the deployment's (command line, step
/// file, or the user's defaults), or key files (an inventory host's, the config's `IdentityFile`s).
struct Keys<'a> {
    options: &'a DeployOptions,
    default: Arc<Credentials>,
    loaded: HashMap<KeyChoice, Arc<Credentials>>,
}

impl<'a> Keys<'a> {
    fn new(options: &'a DeployOptions) -> Result<Self, MachineError> {
        let default = Arc::new(options.credentials()?);
        Ok(Keys {
            options,
            default,
            loaded: HashMap::new(),
        })
    }

    /// A machine's credentials, as `choice` says.
    fn for_machine(
        &mut self,
        label: &str,
        choice: &KeyChoice,
    ) -> Result<Arc<Credentials>, MachineError> {
        let KeyChoice::Files {
            files,
            certificate,
            agent,
        } = choice
        else {
            if self.default.is_empty() {
                return Err(MachineError::NoLogin(label.to_string()));
            }
            return Ok(self.default.clone());
        };
        if let Some(creds) = self.loaded.get(choice) {
            return Ok(creds.clone());
        }
        let passphrase = self
            .options
            .ssh_key_passphrase
            .as_ref()
            .map(|p| p.0.as_str());
        let mut creds = if files.is_empty() {
            (*self.default).clone()
        } else {
            Credentials::from_key_files(files, passphrase)?
        };
        if let Some(path) = certificate {
            creds.certificates.push(load_certificate(path)?);
        }
        if *agent {
            creds.agent = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
        }
        creds.password = self.options.password.clone();
        let creds = Arc::new(creds);
        self.loaded.insert(choice.clone(), creds.clone());
        Ok(creds)
    }
}

/// A machine's address: `host` as an IP, else as the system resolves it.
async fn resolve(label: &str, host: &str, port: u16) -> Result<SocketAddr, MachineError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| MachineError::Unresolved {
            label: label.to_string(),
            host: host.to_string(),
        })
}
