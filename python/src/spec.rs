//! What Python hands over, as typed specs read with `pythonize`: the steps (flattened, one dict
//! each, made by the package's deployment classes), the SSH and wait options, the journal; and
//! the steps of a step file back as dicts.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use nodeup::deploy::{
    CloudInitStep, FileStep, RebootStep, ScriptSource, ScriptStep, SshKeyStep, Step,
};
use nodeup::engine::settings::{ConfigSource, Said};
use nodeup::engine::DeployOptions;
use nodeup::journal::{Journal, Location};
use nodeup::ssh::{Hop, Password};

/// One step, as the deployment classes describe it (`kind` names the class's step).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepSpec {
    /// `SSHKeyDeployment`.
    SshKey {
        /// The public key, one OpenSSH line.
        key: String,
    },
    /// `FileDeployment`.
    File {
        /// The local file.
        source: PathBuf,
        /// Where it goes on the node.
        target: String,
        /// Its mode there.
        mode: Option<u32>,
        /// Write it as root.
        #[serde(default)]
        sudo: bool,
    },
    /// `ScriptDeployment` (text) and `ScriptFileDeployment` (a local file).
    Script {
        /// The script's text.
        script: Option<String>,
        /// Or the local file holding it.
        script_file: Option<PathBuf>,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Its file name on the node.
        name: Option<String>,
        /// Remove it from the node afterwards.
        #[serde(default = "yes")]
        delete: bool,
        /// End it after this many seconds.
        timeout: Option<f64>,
        /// Run it as root.
        #[serde(default)]
        sudo: bool,
        /// Environment variables for it.
        #[serde(default)]
        env: Vec<(String, String)>,
        /// The exit statuses that count as success.
        #[serde(default = "zero")]
        exit_codes: Vec<u32>,
    },
    /// `WaitCloudInitDeployment`.
    WaitCloudInit {
        /// The longest wait, in seconds.
        timeout: Option<f64>,
    },
    /// `RebootDeployment`.
    Reboot {
        /// The longest wait for the node to come back, in seconds.
        timeout: Option<f64>,
    },
}

fn yes() -> bool {
    true
}

fn zero() -> Vec<u32> {
    vec![0]
}

/// Seconds from Python as a duration; the message names the field.
pub fn seconds(value: Option<f64>, field: &str) -> Result<Option<Duration>, String> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| format!("{field}: give a number of seconds of 0 or more, not {s}"))
        })
        .transpose()
}

impl StepSpec {
    /// The step it describes; the message names the field that is wrong.
    pub fn step(self) -> Result<Step, String> {
        Ok(match self {
            StepSpec::SshKey { key } => Step::SshKey(SshKeyStep::new(&key)),
            StepSpec::File {
                source,
                target,
                mode,
                sudo,
            } => Step::File(FileStep {
                mode,
                sudo,
                ..FileStep::new(source, &target)
            }),
            StepSpec::Script {
                script,
                script_file,
                args,
                name,
                delete,
                timeout,
                sudo,
                env,
                exit_codes,
            } => {
                let source = match (script, script_file) {
                    (Some(text), None) => ScriptSource::Inline(text),
                    (None, Some(path)) => ScriptSource::File(path),
                    _ => return Err("give a script or a script file, one of them".into()),
                };
                Step::Script(ScriptStep {
                    source,
                    args,
                    env,
                    sudo,
                    timeout: seconds(timeout, "timeout")?,
                    exit_codes,
                    keep: !delete,
                    name,
                })
            }
            StepSpec::WaitCloudInit { timeout } => Step::WaitCloudInit(CloudInitStep {
                timeout: seconds(timeout, "timeout")?,
            }),
            StepSpec::Reboot { timeout } => Step::Reboot(RebootStep {
                timeout: seconds(timeout, "timeout")?,
            }),
        })
    }

    /// The spec of a built-in step (a step file's); `None` for a step of one's own.
    pub fn of(step: &Step) -> Option<StepSpec> {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        Some(match step {
            Step::SshKey(s) => StepSpec::SshKey { key: s.key.clone() },
            Step::File(s) => StepSpec::File {
                source: s.source.clone(),
                target: s.target.clone(),
                mode: s.mode,
                sudo: s.sudo,
            },
            Step::Script(s) => {
                let (script, script_file) = match &s.source {
                    ScriptSource::Inline(text) => (Some(text.clone()), None),
                    ScriptSource::File(path) => (None, Some(path.clone())),
                };
                StepSpec::Script {
                    script,
                    script_file,
                    args: s.args.clone(),
                    name: s.name.clone(),
                    delete: !s.keep,
                    timeout: secs(s.timeout),
                    sudo: s.sudo,
                    env: s.env.clone(),
                    exit_codes: s.exit_codes.clone(),
                }
            }
            Step::WaitCloudInit(s) => StepSpec::WaitCloudInit {
                timeout: secs(s.timeout),
            },
            Step::Reboot(s) => StepSpec::Reboot {
                timeout: secs(s.timeout),
            },
            Step::Custom(_) | Step::Multi(_) => return None,
        })
    }
}

/// The steps, in order, as one deployment; the message names the step (1-based).
pub fn steps(specs: Vec<StepSpec>) -> Result<Step, String> {
    let steps = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| spec.step().map_err(|e| format!("step {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Step::Multi(steps))
}

/// How to log in and how long to wait: Libcloud's `deploy_node` keywords, and nodeup's own.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshSpec {
    /// The first user to try.
    pub ssh_username: Option<String>,
    /// Users to try after it.
    pub ssh_alternate_usernames: Vec<String>,
    /// The SSH port (the node's own when `None`).
    pub ssh_port: Option<u16>,
    /// The deadline of each connection attempt, in seconds.
    pub ssh_timeout: Option<f64>,
    /// Private key files.
    pub ssh_key: Vec<PathBuf>,
    /// The passphrase of encrypted key files.
    pub ssh_key_password: Option<String>,
    /// A password to log in with.
    pub ssh_password: Option<String>,
    /// How long to wait for the node to run and accept a login, in seconds.
    pub timeout: Option<f64>,
    /// How many connections the steps may use in all.
    pub max_tries: Option<u32>,
    /// The known_hosts file.
    pub known_hosts: Option<PathBuf>,
    /// `strict`, `accept-new` or `off`.
    pub host_key_policy: Option<String>,
    /// Jump hosts, `ssh -J` style.
    pub jump: Option<String>,
    /// The OpenSSH client config to read (`"none"` for none).
    pub ssh_config: Option<PathBuf>,
    /// Log in on IPv4 addresses only.
    pub force_ipv4: Option<bool>,
    /// Run the whole deployment again when a step fails (Libcloud's behaviour).
    pub retry_failed_steps: Option<bool>,
}

impl SshSpec {
    /// What the caller said, as the command line would say it.
    pub fn said(&self) -> Result<Said, String> {
        let host_key_policy = self
            .host_key_policy
            .as_deref()
            .map(|p| p.parse().map_err(|e| format!("host_key_policy: {e}")))
            .transpose()?;
        let jump = match &self.jump {
            Some(chain) => Hop::parse_chain(chain).map_err(|e| format!("jump: {e}"))?,
            None => Vec::new(),
        };
        Ok(Said {
            ssh_user: self.ssh_username.clone(),
            alternate_usernames: self.ssh_alternate_usernames.clone(),
            keys: self.ssh_key.clone(),
            known_hosts: self.known_hosts.clone(),
            host_key_policy,
            timeout: seconds(self.timeout, "timeout")?,
            max_tries: self.max_tries,
            jump,
            ssh_config: ConfigSource::from_flag(self.ssh_config.clone()),
            force_ipv4: self.force_ipv4,
            retry_failed_steps: self.retry_failed_steps,
        })
    }

    /// What the command line has no flag for, over the resolved options.
    pub fn apply(&self, options: &mut DeployOptions) -> Result<(), String> {
        if let Some(port) = self.ssh_port {
            options.port = Some(port);
        }
        if let Some(timeout) = seconds(self.ssh_timeout, "ssh_timeout")? {
            options.ssh_timeout = timeout;
        }
        if let Some(passphrase) = &self.ssh_key_password {
            options.ssh_key_passphrase = Some(Password(passphrase.clone()));
        }
        if let Some(password) = &self.ssh_password {
            options.password = Some(Password(password.clone()));
        }
        Ok(())
    }
}

/// Where the deployment is recorded: `None` the configured journal (`NODEUP_JOURNAL`, nodeup's
/// config, else the embedded SQLite one), `Some("off")` none, else a path or `postgres://` URL.
pub fn journal(given: Option<&str>) -> Result<Option<Journal>, String> {
    match given {
        None => Journal::from_env().map_err(|e| format!("journal: {e}")),
        Some("off") => Ok(None),
        Some(text) => Location::parse_given(text, "journal")
            .map(|l| Some(Journal::at(l)))
            .map_err(|e| format!("journal: {e}")),
    }
}
