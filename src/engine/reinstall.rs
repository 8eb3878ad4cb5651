//! Reinstalling a dedicated server with your own image, then provisioning it: check what OVH would
//! reject, start the reinstall (legacy `bringYourOwnImage` or current `reinstall`), follow it, map
//! OVH's error messages to fixes, wait for SSH, forget the server's old host key (the user asked for
//! this reinstall) and record the new one, log in as root with the config-drive key, run the steps.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{run_steps, DeployOptions, Run, RunFailure, Target};
use crate::baremetal::{
    validate_service_name, BareMetal, Byoi, InstallHandle, InstallProgress, Server,
};
use crate::deploy::{Step, StepResult};
use crate::driver::ProviderError;
use crate::ssh::{Credentials, HostKeyCheck, HostKeyPolicy};

/// What happens, for progress output.
#[derive(Debug, Clone)]
pub enum ReinstallEvent {
    /// A fresh key for root was made (and is kept) at this path.
    KeyMade {
        /// The private key's path.
        path: PathBuf,
    },
    /// The reinstall was accepted.
    Started {
        /// The server.
        server: Server,
    },
    /// OVH's status changed.
    Status {
        /// Its status.
        status: String,
        /// Its message or comment.
        message: String,
        /// Since the start.
        elapsed: Duration,
    },
    /// The image is installed; waiting for the server to boot and answer SSH.
    Installed {
        /// Since the start.
        elapsed: Duration,
    },
}

/// Receives reinstall progress events.
pub type ReinstallProgress = Arc<dyn Fn(&ReinstallEvent) + Send + Sync>;

/// How to reinstall.
#[derive(Clone)]
pub struct ReinstallOptions {
    /// The server's service name.
    pub service: String,
    /// The image and what the config drive sets.
    pub byoi: Byoi,
    /// Let the image URL name a private or loopback address (a vRack mirror, a test API); OVH
    /// itself downloads from the internet.
    pub allow_private_url: bool,
    /// How often to ask OVH how it goes.
    pub poll_period: Duration,
    /// Give up following the install after this long.
    pub install_timeout: Duration,
    /// The private key matching `byoi.ssh_key`, to log in afterwards (else the deploy options' keys).
    pub login_key: Option<PathBuf>,
    /// With no `byoi.ssh_key`: the directory ([`key_dir`]) where a fresh ed25519 key for root is
    /// made and kept, once the server is known to exist.
    pub key_dir: Option<PathBuf>,
    /// Steps to run once the server is back.
    pub then: Option<Step>,
    /// Login, host-key and output options for after the reinstall.
    pub deploy: DeployOptions,
    /// Receives progress events.
    pub events: Option<ReinstallProgress>,
}

/// A finished reinstall.
#[derive(Debug, Clone)]
pub struct ReinstallReport {
    /// The server.
    pub server: Server,
    /// The key nodeup made for root, when it made one.
    pub key: Option<PathBuf>,
    /// How long the install took.
    pub install_time: Duration,
    /// The user logged in as afterwards; `None` when nodeup did not log in (no config drive and
    /// no steps: nothing tells it how the image lets anyone in).
    pub user: Option<String>,
    /// The steps' results.
    pub steps: Vec<StepResult>,
}

/// Why a reinstall failed.
#[derive(Debug, thiserror::Error)]
pub enum ReinstallError {
    /// Bad arguments; no API call was made.
    #[error("{0}")]
    Invalid(String),
    /// An API call failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The provider reports that the install failed.
    #[error("the provider could not install the image: {message}; {fix}")]
    Failed {
        /// OVH's message.
        message: String,
        /// What to do about it.
        fix: &'static str,
    },
    /// The install went on longer than allowed.
    #[error("the install was still running after {0:?}; it goes on at the provider: follow it there (OVH: GET /dedicated/server/SERVICE/install/status, or the control panel)")]
    Timeout(Duration),
    /// Logging in or a step failed after the install.
    #[error("after the reinstall: {}", super::error_chain(&.0.cause))]
    After(Box<RunFailure>),
}

impl ReinstallError {
    /// Whether no API call was made.
    pub fn is_before_any_call(&self) -> bool {
        matches!(self, ReinstallError::Invalid(_))
    }
}

/// Makes a fresh ed25519 key for a reinstall in `dir` (created 0700): `id_ed25519` (0600) and
/// `id_ed25519.pub`. Returns the private key's path and the public key line.
pub fn generate_key(dir: &Path) -> std::io::Result<(PathBuf, String)> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let key = russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
        .map_err(std::io::Error::other)?;
    let private = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(std::io::Error::other)?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(std::io::Error::other)?;
    let path = dir.join("id_ed25519");
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(private.as_bytes())?;
    std::fs::write(
        path.with_extension("pub"),
        format!("{public} nodeup-reinstall\n"),
    )?;
    Ok((path, public))
}

/// The directory under `state_dir` where the key for `service`'s reinstall is kept:
/// `state_dir/reinstall/SERVICE`, after checking that the service name is one (so that the path
/// cannot leave `state_dir/reinstall`).
///
/// # Errors
/// A service name that is not host-like.
pub fn key_dir(state_dir: &Path, service: &str) -> Result<PathBuf, ReinstallError> {
    validate_service_name(service).map_err(ReinstallError::Invalid)?;
    let base = state_dir.join("reinstall");
    let dir = base.join(service);
    let inside = dir.parent() == Some(base.as_path())
        && matches!(
            Path::new(service)
                .components()
                .collect::<Vec<_>>()
                .as_slice(),
            [std::path::Component::Normal(_)]
        );
    if !inside {
        return Err(ReinstallError::Invalid(format!(
            "{service:?} would name a directory outside {}",
            base.display()
        )));
    }
    Ok(dir)
}

/// A public key that parses, standing in for the key made later, so that everything else is
/// checked before any call.
const PLACEHOLDER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

/// Checks everything that needs no call: the service name, the image (and what this provider
/// refuses of it), the steps.
///
/// # Errors
/// [`ReinstallError::Invalid`], naming what to fix.
pub fn check_arguments(
    provider: &dyn BareMetal,
    options: &ReinstallOptions,
) -> Result<(), ReinstallError> {
    validate_service_name(&options.service).map_err(ReinstallError::Invalid)?;
    let mut byoi = options.byoi.clone();
    if byoi.ssh_key.is_empty() && byoi.config_drive {
        if options.key_dir.is_none() {
            return Err(ReinstallError::Invalid(
                "no SSH key for root: give one, or a directory to make one in".into(),
            ));
        }
        byoi.ssh_key = PLACEHOLDER_KEY.into();
    }
    byoi.validate(options.allow_private_url)
        .map_err(ReinstallError::Invalid)?;
    provider.check(&byoi).map_err(ReinstallError::Invalid)?;
    if let Some(steps) = &options.then {
        steps
            .validate()
            .map_err(|e| ReinstallError::Invalid(e.to_string()))?;
    }
    Ok(())
}

/// The credentials to log in with afterwards: the login key, else the deploy options'.
fn login_credentials(
    options: &ReinstallOptions,
    login_key: Option<&PathBuf>,
) -> Result<Credentials, ReinstallError> {
    let creds = match login_key {
        Some(path) => Credentials::from_key_files(
            std::slice::from_ref(path),
            options
                .deploy
                .ssh_key_passphrase
                .as_ref()
                .map(|p| p.0.as_str()),
        ),
        None => options.deploy.credentials(),
    }
    .map_err(|e| ReinstallError::Invalid(e.to_string()))?;
    if creds.is_empty() {
        return Err(ReinstallError::Invalid(
            "no private key to log in with after the reinstall: give the key whose public half \
             goes on the server"
                .into(),
        ));
    }
    Ok(creds)
}

/// The server, with "no such server" said as such.
async fn find_server(provider: &dyn BareMetal, service: &str) -> Result<Server, ReinstallError> {
    match provider.server(service).await {
        Ok(server) => Ok(server),
        Err(ProviderError::NotFound { id, .. }) => Err(ReinstallError::Invalid(format!(
            "no dedicated server {service:?} with these credentials ({id}): \
             GET /dedicated/server lists yours"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Reinstalls the server and provisions it.
///
/// Nothing is written and no reinstall asked for before the arguments are checked and the server
/// is known to exist.
///
/// # Errors
/// [`ReinstallError::Invalid`] before any change (bad arguments, no such server), else what failed.
pub async fn reinstall(
    provider: &dyn BareMetal,
    options: &ReinstallOptions,
) -> Result<ReinstallReport, ReinstallError> {
    check_arguments(provider, options)?;
    let emit = |event: ReinstallEvent| {
        if let Some(events) = &options.events {
            events(&event);
        }
    };
    let generate = options.byoi.ssh_key.is_empty() && options.byoi.config_drive;
    // Without a config drive and with no steps, there is no login to make afterwards.
    let log_in = options.byoi.config_drive || options.then.is_some();
    let mut creds = None;
    if !generate && log_in {
        creds = Some(login_credentials(options, options.login_key.as_ref())?);
    }
    let server = find_server(provider, &options.service).await?;
    let ip: std::net::IpAddr = server.ip.parse().map_err(|_| {
        ReinstallError::Invalid(format!(
            "the provider gives the server address {:?}, not an IP",
            server.ip
        ))
    })?;
    let mut byoi = options.byoi.clone();
    let mut key = None;
    if let (true, Some(dir)) = (generate, &options.key_dir) {
        let (path, public) = generate_key(dir).map_err(|e| {
            ReinstallError::Invalid(format!("making a key in {}: {e}", dir.display()))
        })?;
        byoi.ssh_key = public;
        emit(ReinstallEvent::KeyMade { path: path.clone() });
        creds = Some(login_credentials(options, Some(&path))?);
        key = Some(path);
    }
    let started = Instant::now();
    let handle = provider.start(&options.service, &byoi).await?;
    emit(ReinstallEvent::Started {
        server: server.clone(),
    });
    follow(provider, options, &handle, started, &emit).await?;
    let install_time = started.elapsed();
    emit(ReinstallEvent::Installed {
        elapsed: install_time,
    });
    let (user, steps) = match creds {
        Some(creds) => {
            let run = provision(options, ip, &creds).await?;
            (Some(run.user), run.steps)
        }
        None => (None, Vec::new()),
    };
    Ok(ReinstallReport {
        server,
        key,
        install_time,
        user,
        steps,
    })
}

/// Cancels a reinstall of `service` that has not finished, where the provider can.
///
/// # Errors
/// A service name that is not one; what the provider answers.
pub async fn cancel(provider: &dyn BareMetal, service: &str) -> Result<(), ReinstallError> {
    validate_service_name(service).map_err(ReinstallError::Invalid)?;
    find_server(provider, service).await?;
    Ok(provider.cancel(service).await?)
}

/// Follows the install until it is done, emitting each change of status or message.
async fn follow(
    provider: &dyn BareMetal,
    options: &ReinstallOptions,
    handle: &InstallHandle,
    started: Instant,
    emit: &dyn Fn(ReinstallEvent),
) -> Result<(), ReinstallError> {
    let mut last = (String::new(), String::new());
    loop {
        if started.elapsed() > options.install_timeout {
            return Err(ReinstallError::Timeout(options.install_timeout));
        }
        let (status, message, finished) = match provider.progress(&options.service, handle).await? {
            InstallProgress::Running { status, message } => (status, message, false),
            InstallProgress::Done { status, message } => (status, message, true),
            InstallProgress::Failed { message, fix } => {
                return Err(ReinstallError::Failed { message, fix })
            }
        };
        if (&status, &message) != (&last.0, &last.1) {
            emit(ReinstallEvent::Status {
                status: status.clone(),
                message: message.clone(),
                elapsed: started.elapsed(),
            });
            last = (status, message);
        }
        if finished {
            return Ok(());
        }
        tokio::time::sleep(options.poll_period).await;
    }
}

/// After the install: forget the server's old host key (the user asked for this reinstall; only
/// this address), log in as root and run the steps.
async fn provision(
    options: &ReinstallOptions,
    ip: std::net::IpAddr,
    creds: &Credentials,
) -> Result<Run, ReinstallError> {
    let mut deploy = options.deploy.clone();
    if deploy.host_key_policy != HostKeyPolicy::Off {
        deploy.host_key_policy = HostKeyPolicy::AcceptNew;
        let check = HostKeyCheck {
            policy: HostKeyPolicy::AcceptNew,
            known_hosts: deploy.known_hosts.clone(),
            pinned: Vec::new(),
            new_node: None,
        };
        check
            .forget(&ip.to_string(), deploy.port.unwrap_or(crate::ssh::SSH_PORT))
            .map_err(|e| {
                ReinstallError::Invalid(format!(
                    "cannot update {}: {e}",
                    deploy.known_hosts.display()
                ))
            })?;
    }
    let mut users = vec![deploy.first_user().to_string()];
    users.extend(deploy.alternate_usernames.iter().cloned());
    users.dedup();
    let target = Target {
        addr: SocketAddr::new(ip, deploy.port.unwrap_or(crate::ssh::SSH_PORT)),
        users,
        pinned_host_keys: Vec::new(),
        node: None,
        journal: None,
        created: false,
        driver: None,
        ssh: super::settings::for_created_node(&deploy, &ip.to_string())
            .map_err(|e| ReinstallError::Invalid(e.to_string()))?,
    };
    let steps = options.then.clone().unwrap_or(Step::Multi(Vec::new()));
    run_steps(&target, &steps, creds, &deploy)
        .await
        .map_err(|f| ReinstallError::After(Box::new(f)))
}
