//! Reinstalling a dedicated server with your own image, then provisioning it: check what OVH would
//! reject, start the reinstall (legacy `bringYourOwnImage` or current `reinstall`), follow it, map
//! OVH's error messages to fixes, wait for SSH, forget the server's old host key (the user asked for
//! this reinstall) and record the new one, log in as root with the config-drive key, run the steps.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::deploy::{run_steps, DeployOptions, RunFailure, Target};
use crate::deploy::{Step, StepResult};
use crate::driver::ProviderError;
use crate::providers::ovh::dedicated::{fix_for, Byoi, Server};
use crate::providers::ovh::{CallError, Client};
use crate::ssh::{Credentials, HostKeyCheck, HostKeyPolicy};

/// Which API generation reinstalls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generation {
    /// `POST /dedicated/server/{name}/bringYourOwnImage` (OVH's BYOI guide).
    Legacy,
    /// `POST /dedicated/server/{name}/reinstall` with this operating system (`byoi_64`,
    /// `byolinux_64`).
    Current(String),
}

/// What happens, for progress output.
#[derive(Debug, Clone)]
pub enum ReinstallEvent {
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
    /// The API generation.
    pub generation: Generation,
    /// How often to ask OVH how it goes.
    pub poll_period: Duration,
    /// Give up following the install after this long.
    pub install_timeout: Duration,
    /// The private key matching `byoi.ssh_key`, to log in afterwards (else the deploy options' keys).
    pub login_key: Option<PathBuf>,
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
    /// How long the install took.
    pub install_time: Duration,
    /// The user logged in as afterwards.
    pub user: String,
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
    /// OVH reports that the install failed.
    #[error("OVH could not install the image: {message}; {fix}")]
    Failed {
        /// OVH's message.
        message: String,
        /// What to do about it.
        fix: &'static str,
    },
    /// The install went on longer than allowed.
    #[error("the install was still running after {0:?}; it goes on at OVH: follow it with GET /dedicated/server/SERVICE/install/status or in the control panel")]
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

fn call(context: &str) -> impl FnOnce(CallError) -> ReinstallError + '_ {
    move |e| ReinstallError::Provider(e.into_provider(context.to_string()))
}

/// Reinstalls the server and provisions it.
pub async fn reinstall(
    client: &Client,
    options: &ReinstallOptions,
) -> Result<ReinstallReport, ReinstallError> {
    options.byoi.validate().map_err(ReinstallError::Invalid)?;
    if let Some(steps) = &options.then {
        steps
            .validate()
            .map_err(|e| ReinstallError::Invalid(e.to_string()))?;
    }
    let creds = match &options.login_key {
        Some(path) => Credentials::from_key_files(
            std::slice::from_ref(path),
            options
                .deploy
                .ssh_key_passphrase
                .as_ref()
                .map(|p| p.0.as_str()),
        )
        .map_err(|e| ReinstallError::Invalid(e.to_string()))?,
        None => options
            .deploy
            .credentials()
            .map_err(|e| ReinstallError::Invalid(e.to_string()))?,
    };
    if creds.is_empty() {
        return Err(ReinstallError::Invalid(
            "no private key to log in with after the reinstall: give the key whose public half \
             goes on the server"
                .into(),
        ));
    }
    let emit = |event: ReinstallEvent| {
        if let Some(events) = &options.events {
            events(&event);
        }
    };
    let service = options.service.as_str();
    let server = client
        .dedicated_server(service)
        .await
        .map_err(call("GET /dedicated/server"))?;
    let ip: std::net::IpAddr = server.ip.parse().map_err(|_| {
        ReinstallError::Invalid(format!(
            "OVH gives the server address {:?}, not an IP",
            server.ip
        ))
    })?;

    let started = Instant::now();
    let task = match &options.generation {
        Generation::Legacy => {
            client
                .byoi_start_legacy(service, &options.byoi)
                .await
                .map_err(call("POST bringYourOwnImage"))?;
            None
        }
        Generation::Current(os) => Some(
            client
                .byoi_start_current(service, os, &options.byoi)
                .await
                .map_err(call("POST reinstall"))?,
        ),
    };
    emit(ReinstallEvent::Started {
        server: server.clone(),
    });
    let mut last = (String::new(), String::new());
    loop {
        if started.elapsed() > options.install_timeout {
            return Err(ReinstallError::Timeout(options.install_timeout));
        }
        let (status, message, finished) = match &task {
            None => {
                let s = client
                    .byoi_status_legacy(service)
                    .await
                    .map_err(call("GET bringYourOwnImage"))?;
                match s.status.as_str() {
                    "done" => (s.status, s.message, true),
                    "error" => {
                        return Err(ReinstallError::Failed {
                            fix: fix_for(&s.message),
                            message: s.message,
                        })
                    }
                    _ => (s.status, s.message, false),
                }
            }
            Some(task) => {
                let t = client
                    .dedicated_task(service, task.task_id)
                    .await
                    .map_err(call("GET task"))?;
                let mut message = t.comment.clone().unwrap_or_default();
                if let Ok(Some(progress)) = client.install_status(service).await {
                    if let Some(step) = progress
                        .progress
                        .iter()
                        .find(|p| p.status == "doing" || p.error.is_some())
                    {
                        message = step.error.clone().unwrap_or(step.comment.clone());
                    }
                }
                match t.status.as_str() {
                    "done" => (t.status, message, true),
                    "customerError" | "ovhError" | "cancelled" => {
                        let message = t.comment.unwrap_or(message);
                        return Err(ReinstallError::Failed {
                            fix: fix_for(&message),
                            message,
                        });
                    }
                    _ => (t.status, message, false),
                }
            }
        };
        if (status.as_str(), message.as_str()) != (last.0.as_str(), last.1.as_str()) {
            emit(ReinstallEvent::Status {
                status: status.clone(),
                message: message.clone(),
                elapsed: started.elapsed(),
            });
            last = (status, message);
        }
        if finished {
            break;
        }
        tokio::time::sleep(options.poll_period).await;
    }
    let install_time = started.elapsed();
    emit(ReinstallEvent::Installed {
        elapsed: install_time,
    });

    // A new system has a new host key: forget the old one for this server only, and record the
    // one it presents now.
    let mut deploy = options.deploy.clone();
    if deploy.host_key_policy != HostKeyPolicy::Off {
        deploy.host_key_policy = HostKeyPolicy::AcceptNew;
        let check = HostKeyCheck {
            policy: HostKeyPolicy::AcceptNew,
            known_hosts: deploy.known_hosts.clone(),
            pinned: Vec::new(),
        };
        check.forget(&ip.to_string(), 22).map_err(|e| {
            ReinstallError::Invalid(format!(
                "cannot update {}: {e}",
                deploy.known_hosts.display()
            ))
        })?;
    }
    let target = Target {
        addr: SocketAddr::new(ip, 22),
        users: vec!["root".into()],
        pinned_host_keys: Vec::new(),
    };
    let steps = options.then.clone().unwrap_or(Step::Multi(Vec::new()));
    let run = run_steps(&target, &steps, &creds, &deploy)
        .await
        .map_err(|f| ReinstallError::After(Box::new(f)))?;
    Ok(ReinstallReport {
        server,
        install_time,
        user: run.user,
        steps: run.steps,
    })
}
