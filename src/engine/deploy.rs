//! `deploy_node`: create → wait until running → log in → run the steps, resuming after a lost
//! connection; on failure an error that carries the node; on cancellation the at-exit hook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::connect::error_chain;
use super::errors::{Cause, DeploymentError};
use super::options::{default_known_hosts, AtExit, DeployOptions};
use super::recorder::Recorder;
use super::runner::run_steps;
use super::target::Target;
use super::wait::{wait_until_running, WaitError, WaitOptions};
use crate::deploy::{Step, StepResult};
use crate::driver::{Features, NodeDriver, ProviderError};
use crate::journal::{JournalError, NodeEntry, NodeIntent};
use crate::life::Stage;
use crate::model::{CreateNode, Node, NodeAuth};
use crate::ssh::{Credentials, HostKeyCheck, HostKeyPolicy, Password};

/// Destroys a node and forgets its host keys in `known_hosts`: its addresses will belong to other
/// machines, whose keys must not be refused as "changed".
pub async fn destroy_node(
    driver: &dyn NodeDriver,
    node: &Node,
    known_hosts: &std::path::Path,
) -> Result<(), ProviderError> {
    driver.destroy_node(node).await?;
    let check = HostKeyCheck {
        policy: HostKeyPolicy::AcceptNew,
        known_hosts: known_hosts.to_path_buf(),
        pinned: Vec::new(),
        new_node: None,
    };
    for ip in node.public_ips.iter().chain(&node.private_ips) {
        if let Err(e) = check.forget(&ip.to_string(), node.ssh_port()) {
            tracing::warn!(
                "forgetting the host key of {ip} in {}: {e}",
                known_hosts.display()
            );
        }
    }
    Ok(())
}

/// The at-exit hook that destroys the node (what the CLI uses), forgetting its host keys in
/// nodeup's own known_hosts.
pub fn destroy_at_exit() -> AtExit {
    Arc::new(|driver, node| {
        Box::pin(async move {
            match destroy_node(driver.as_ref(), &node, &default_known_hosts()).await {
                Ok(()) => {
                    tracing::warn!(node = %node.name, "deployment cancelled: node destroyed");
                    true
                }
                Err(e) => {
                    tracing::error!(node = %node.name, "deployment cancelled; destroying the node failed: {e}");
                    false
                }
            }
        })
    })
}

/// A finished deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The node, as last listed.
    pub node: Node,
    /// The user it logged in as.
    pub user: String,
    /// Each step's result, in order.
    pub steps: Vec<StepResult>,
    /// How many times the connection was lost and resumed.
    pub reconnects: u32,
    /// The node's record in the journal (already finished as done).
    pub journal: Option<NodeEntry>,
}

/// Calls the at-exit hook if dropped while armed (the deployment future was dropped).
struct ExitGuard {
    driver: Arc<dyn NodeDriver>,
    node: Node,
    hook: Option<AtExit>,
    recorder: Recorder,
}

/// Runs the at-exit hook, then records whether the node is gone.
async fn run_hook(hook: AtExit, driver: Arc<dyn NodeDriver>, node: Node, recorder: Recorder) {
    let gone = hook(driver, node).await;
    let stage = if gone {
        Stage::Destroyed
    } else {
        Stage::Cancelled
    };
    recorder.finish(stage).await;
}

impl ExitGuard {
    fn disarm(mut self) -> Node {
        self.hook = None;
        self.node.clone()
    }

    async fn fire(mut self) -> Node {
        match self.hook.take() {
            Some(hook) => {
                let (driver, node) = (self.driver.clone(), self.node.clone());
                run_hook(hook, driver, node, self.recorder.clone()).await;
            }
            None => self.recorder.finish(Stage::Cancelled).await,
        }
        self.node.clone()
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Some(hook) = self.hook.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let (driver, node) = (self.driver.clone(), self.node.clone());
                    runtime.spawn(run_hook(hook, driver, node, self.recorder.clone()));
                }
                Err(_) => tracing::error!(
                    node = %self.node.name,
                    "deployment dropped outside a runtime: the at-exit hook could not run"
                ),
            }
        }
    }
}

/// The credentials a deployment logs in with, checked before anything is created: the options'
/// keys, password or defaults, else a temporary key when the provider installs keys.
fn login_credentials(features: Features, options: &DeployOptions) -> Result<Credentials, Cause> {
    let mut creds = options.credentials().map_err(Cause::Credentials)?;
    if creds.is_empty() && features.ssh_key && options.temporary_key && options.auth.is_none() {
        let key =
            russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
                .map_err(|e| Cause::Invalid(Box::new(TemporaryKeyFailed(e))))?;
        tracing::info!("no key given: logging in with a temporary ed25519 key");
        creds
            .keys
            .push((PathBuf::from("(temporary key)"), Arc::new(key)));
    }
    if creds.is_empty() && !features.generates_password {
        return Err(Cause::Invalid(
            "no way to log in: give a private key file (--key), a password, or run an ssh-agent; \
             ~/.ssh has no default key"
                .into(),
        ));
    }
    Ok(creds)
}

/// The temporary key could not be generated.
#[derive(Debug, thiserror::Error)]
#[error("generating a temporary key")]
struct TemporaryKeyFailed(#[source] russh::keys::ssh_key::Error);

/// What `create_node` is handed: the options' `auth`, else the public half of the first key
/// (when the provider installs keys and `authorize_key`), and only a kind the provider accepts.
/// One it cannot install is still used to log in (as Libcloud does): the node relies on what the
/// account or image has already.
fn create_auth(
    provider: &str,
    features: Features,
    creds: &Credentials,
    options: &DeployOptions,
) -> Option<NodeAuth> {
    let handed_key = match (&options.auth, creds.keys.first()) {
        (None, Some((_, key))) if options.authorize_key && features.ssh_key => {
            key.public_key().to_openssh().ok().map(NodeAuth::SshKey)
        }
        _ => None,
    };
    let auth = options.auth.clone().or(handed_key)?;
    let (accepted, what) = match &auth {
        NodeAuth::SshKey(_) => (features.ssh_key, "an SSH key"),
        NodeAuth::Password(_) => (features.password, "a password"),
    };
    if !accepted {
        tracing::warn!(
            "provider {provider} cannot install {what} when creating a node: logging in with what \
             the account or image already has"
        );
        return None;
    }
    Some(auth)
}

/// Creates a node, waits until it runs, logs in and runs `steps` on it.
///
/// Before anything is created: the steps are validated, key files loaded and passphrases checked,
/// and there must be a way to log in. After the node exists, a failure returns a
/// [`DeploymentError`] carrying it (the node is left for the caller to destroy or keep), and a
/// cancellation (`options.cancel`, or the future dropped) calls `options.at_exit`.
pub async fn deploy_node(
    driver: Arc<dyn NodeDriver>,
    request: &CreateNode,
    steps: &Step,
    options: &DeployOptions,
) -> Result<Deployment, DeploymentError> {
    steps
        .validate()
        .map_err(|e| DeploymentError::before_create(Cause::Invalid(Box::new(e))))?;
    let features = driver.features();
    let creds = login_credentials(features, options).map_err(DeploymentError::before_create)?;
    let mut request = request.clone();
    request.auth = create_auth(driver.name(), features, &creds, options);
    if options.cancel.is_cancelled() {
        return Err(DeploymentError::before_create(Cause::Cancelled));
    }

    let entry = begin_entry(driver.as_ref(), &request, steps, options)
        .await
        .map_err(|e| DeploymentError::before_create(Cause::Journal(e)))?;
    if request.run.is_none() {
        request.run = entry.as_ref().map(|e| e.run_id().to_string());
    }
    let recorder = Recorder::new(options.progress.clone(), entry);
    recorder.creating(&request.name);
    let node = match driver.create_node(&request).await {
        Ok(node) => node,
        Err(e) => return Err(create_failed(e, recorder).await),
    };
    tracing::info!(node = %node.name, id = %node.id, "node created");
    recorder.created(&node).await;
    let guard = ExitGuard {
        driver: driver.clone(),
        node: node.clone(),
        hook: options.at_exit.clone(),
        recorder: recorder.clone(),
    };
    let provisioning = Provisioning {
        driver: &driver,
        steps,
        options,
        recorder: &recorder,
    };
    let outcome = tokio::select! {
        biased;
        _ = options.cancel.cancelled() => None,
        result = provisioning.run(&node, creds) => Some(result),
    };
    match outcome {
        None => {
            let node = guard.fire().await;
            Err(provisioning.failed(&node, Cause::Cancelled))
        }
        Some(Ok(deployment)) => {
            guard.disarm();
            recorder.finish(Stage::Done).await;
            Ok(deployment)
        }
        Some(Err(error)) => {
            guard.disarm();
            recorder.failed(&error_chain(&error)).await;
            Err(error)
        }
    }
}

/// Records the node in the journal (and locks its name) before it is created.
async fn begin_entry(
    driver: &dyn NodeDriver,
    request: &CreateNode,
    steps: &Step,
    options: &DeployOptions,
) -> Result<Option<NodeEntry>, JournalError> {
    let Some(journal) = &options.journal else {
        return Ok(None);
    };
    let intent = NodeIntent {
        provider: Some(driver.name().to_string()),
        settings: driver.settings(),
        location: request.location.clone().unwrap_or_default(),
        name: request.name.clone(),
        address: None,
        steps: steps.flatten().len(),
    };
    journal.begin_node(&intent, "deploy_node").await.map(Some)
}

/// A failed create: a refusal (bad request, credentials, not found) created nothing and is
/// recorded so; any other failure may have made a node whose answer was lost, so the record stays
/// `failed` and `nodeup cleanup` looks the node up by name once this process is gone.
async fn create_failed(e: ProviderError, recorder: Recorder) -> DeploymentError {
    recorder
        .failed(&format!("create_node: {}", error_chain(&e)))
        .await;
    if !matches!(e, ProviderError::Failed { .. }) {
        recorder.finish(Stage::Destroyed).await;
    }
    DeploymentError {
        journal: recorder.entry(),
        ..DeploymentError::before_create(Cause::Provider(e))
    }
}

/// Waits until the node runs and has an address to log in on.
async fn wait_for(
    driver: &dyn NodeDriver,
    node: &Node,
    options: &DeployOptions,
) -> Result<super::wait::Ready, WaitError> {
    let wait = WaitOptions {
        timeout: options.timeout,
        poll_period: options.poll_period,
        interface: options.interface,
        force_ipv4: options.force_ipv4,
        location: node.location().map(str::to_string),
    };
    let ready = wait_until_running(driver, std::slice::from_ref(&node.id), &wait).await?;
    ready
        .into_iter()
        .next()
        .ok_or_else(|| WaitError::Gone(node.id.clone()))
}

/// The usernames to try, in order: the one given, the alternates, then the image's own login
/// user; with none given, the image's login user first, then root, then the alternates.
fn login_users(options: &DeployOptions, node: &Node) -> Vec<String> {
    let image_user = node
        .login_user()
        .filter(|_| options.try_image_user)
        .map(str::to_string);
    let (first, last) = match &options.ssh_username {
        Some(user) => (vec![user.clone()], image_user),
        None => (
            image_user
                .into_iter()
                .chain([super::options::DEFAULT_USER.to_string()])
                .collect(),
            None,
        ),
    };
    let mut users: Vec<String> = Vec::new();
    for user in first
        .into_iter()
        .chain(options.alternate_usernames.iter().cloned())
        .chain(last)
    {
        if !users.contains(&user) {
            users.push(user);
        }
    }
    users
}

/// What provisions a created node: the deployment's driver, steps and options, and its recorder.
struct Provisioning<'a> {
    driver: &'a Arc<dyn NodeDriver>,
    steps: &'a Step,
    options: &'a DeployOptions,
    recorder: &'a Recorder,
}

impl Provisioning<'_> {
    /// The error of a deployment of `node` that failed before its steps ran, for `cause`.
    fn failed(&self, node: &Node, cause: Cause) -> DeploymentError {
        DeploymentError {
            node: Some(node.clone()),
            step: None,
            cause,
            attempts: Vec::new(),
            completed: Vec::new(),
            journal: self.recorder.entry(),
        }
    }

    /// Waits until `node` runs, logs in and runs the steps.
    async fn run(
        &self,
        node: &Node,
        mut creds: Credentials,
    ) -> Result<Deployment, DeploymentError> {
        let options = self.options;
        self.recorder.waiting();
        let ready = wait_for(self.driver.as_ref(), node, options)
            .await
            .map_err(|e| self.failed(node, Cause::Wait(e)))?;
        let mut node = ready.node;
        if self.driver.features().generates_password {
            if let Some(pw) = node.password() {
                creds.password.get_or_insert(Password(pw.to_string()));
            }
        }
        // A password this deployment logs in with is the node's password (as Libcloud records it).
        if let (Some(NodeAuth::Password(pw)), None) = (&options.auth, node.password()) {
            node.set_password(pw);
        }
        let addr = SocketAddr::new(
            ready.addresses[0],
            options.port.unwrap_or_else(|| node.ssh_port()),
        );
        self.recorder.running(&node, addr).await;
        let target = Target {
            addr,
            users: login_users(options, &node),
            pinned_host_keys: node.host_keys(),
            node: Some(node.clone()),
            journal: self.recorder.entry(),
            created: true,
            driver: Some(self.driver.clone()),
            ssh: super::settings::for_created_node(options, &addr.ip().to_string())
                .map_err(|e| self.failed(&node, Cause::Invalid(Box::new(e))))?,
        };
        match run_steps(&target, self.steps, &creds, options).await {
            Ok(run) => Ok(Deployment {
                node,
                user: run.user,
                steps: run.steps,
                reconnects: run.reconnects,
                journal: self.recorder.entry(),
            }),
            Err(f) => Err(DeploymentError {
                step: f.step,
                attempts: f.attempts,
                completed: f.completed,
                ..self.failed(&node, f.cause)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_with_user(user: Option<&str>) -> Node {
        let mut node = Node {
            id: "i-1".into(),
            name: "web".into(),
            state: crate::model::NodeState::Running,
            public_ips: Vec::new(),
            private_ips: Vec::new(),
            image: None,
            size: None,
            provider: "dummy".into(),
            extra: Default::default(),
        };
        if let Some(user) = user {
            node.extra.insert("login_user".into(), user.into());
        }
        node
    }

    #[test]
    fn the_image_s_user_comes_first_unless_a_user_is_given() {
        let mut options = DeployOptions {
            alternate_usernames: vec!["ops".into(), "root".into()],
            ..DeployOptions::default()
        };
        let admin = node_with_user(Some("admin"));
        assert_eq!(login_users(&options, &admin), ["admin", "root", "ops"]);
        assert_eq!(
            login_users(&options, &node_with_user(None)),
            ["root", "ops"]
        );
        options.ssh_username = Some("root".into());
        assert_eq!(login_users(&options, &admin), ["root", "ops", "admin"]);
        options.try_image_user = false;
        assert_eq!(login_users(&options, &admin), ["root", "ops"]);
        options.ssh_username = None;
        assert_eq!(login_users(&options, &admin), ["root", "ops"]);
    }
}
