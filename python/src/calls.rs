//! The functions the package's Python side calls: a deployment, steps on machines that exist, a
//! provider's calls, a step file read. Input is checked before anything starts (`ValueError`
//! naming the field); the work then runs as a [`Task`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::{Deserialize, Serialize};

use nodeup::deploy::stepfile::{self, StepFile};
use nodeup::deploy::Step;
use nodeup::driver::{NodeDriver, ProviderError};
use nodeup::engine::fleet::{deploy_fleet, run_fleet, FleetHooks, FleetOptions};
use nodeup::engine::machines::{prepare, Machine};
use nodeup::engine::settings::{self, MachineGiven, Purpose};
use nodeup::engine::DeployOptions;
use nodeup::error_chain;
use nodeup::journal::{RunEnd, RunStart};
use nodeup::model::{CreateNode, NodeAuth};
use nodeup::providers;
use nodeup::roster::parse_host;

use crate::callbacks::{at_exit, Callable, Lines};
use crate::report::erased::Value;
use crate::report::{self, ErrorReport, Finished, HostReport};
use crate::spec::{self, SshSpec, StepSpec};
use crate::task::{Shared, Task};

/// The provider and the node to create.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestSpec {
    /// The provider's name (`local`, `ec2`, `ovh` ...).
    provider: Option<String>,
    /// The provider's own settings (a step file's `[provider]`).
    provider_settings: BTreeMap<String, serde_json::Value>,
    /// The node's name.
    name: Option<String>,
    /// The image, by id or name.
    image: Option<String>,
    /// The size, by id or name.
    size: Option<String>,
    /// The location, by id or name.
    location: Option<String>,
    /// The provider's node options (`[node] options`).
    options: BTreeMap<String, serde_json::Value>,
}

fn invalid(message: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(message.to_string())
}

fn read<T: for<'de> Deserialize<'de>>(value: &Bound<'_, PyAny>, what: &str) -> PyResult<T> {
    pythonize::depythonize(value).map_err(|e| invalid(format!("{what}: {e}")))
}

/// The steps given, or the step file's.
fn steps_of(given: &Bound<'_, PyAny>, file: Option<&StepFile>) -> PyResult<Step> {
    let steps = match file {
        Some(file) => file.steps.clone(),
        None => spec::steps(read::<Vec<StepSpec>>(given, "deploy")?).map_err(invalid)?,
    };
    steps.validate().map_err(invalid)?;
    Ok(steps)
}

fn load(path: Option<PathBuf>) -> PyResult<Option<StepFile>> {
    path.map(|p| stepfile::load(&p).map_err(invalid))
        .transpose()
}

/// The deployment's options: what the caller said over the step file over the defaults, as the
/// command line decides them.
fn options(
    ssh: &SshSpec,
    file: Option<&StepFile>,
    purpose: Purpose,
    shared: &Arc<Shared>,
    journal: Option<&str>,
) -> PyResult<DeployOptions> {
    let said = ssh.said().map_err(invalid)?;
    let mut options = settings::resolve(&said, file, purpose).map_err(invalid)?;
    ssh.apply(&mut options).map_err(invalid)?;
    options.cancel = shared.cancel.clone();
    options.journal = spec::journal(journal).map_err(invalid)?;
    Ok(options)
}

/// Starts a deployment: the node created, waited for, logged in to, the steps run. A failed
/// deployment's node is destroyed unless `keep_on_failure`; a cancelled one's goes to the at-exit
/// function (nodeup's own destroys it).
///
/// # Errors
/// `ValueError` for input that is wrong, before anything is created.
#[pyfunction]
#[pyo3(signature = (request, steps, ssh, *, stepfile=None, keep_on_failure=false, on_output=None, at_exit_func=None, journal=None))]
#[allow(clippy::too_many_arguments)]
pub fn start_deploy(
    request: &Bound<'_, PyAny>,
    steps: &Bound<'_, PyAny>,
    ssh: &Bound<'_, PyAny>,
    stepfile: Option<PathBuf>,
    keep_on_failure: bool,
    on_output: Option<Py<PyAny>>,
    at_exit_func: Option<Py<PyAny>>,
    journal: Option<String>,
) -> PyResult<Task> {
    let file = load(stepfile)?;
    let request: RequestSpec = read(request, "node")?;
    let ssh: SshSpec = read(ssh, "ssh")?;
    let steps = steps_of(steps, file.as_ref())?;
    let shared = Task::shared();
    let mut options = options(
        &ssh,
        file.as_ref(),
        Purpose::Deploy,
        &shared,
        journal.as_deref(),
    )?;
    options.at_exit = Some(at_exit(at_exit_func.map(Arc::new), shared.clone()));
    let (provider, settings, create) = create_request(request, file.as_ref())?;
    let lines = on_output.map(|f| Lines::new(Arc::new(f), create.name.clone(), shared.clone()));
    options.output = lines.as_ref().map(Lines::sink);
    let fleet = FleetOptions {
        parallel: Some(1),
        keep_on_failure,
        ..Default::default()
    };
    let work = async move {
        let driver = match providers::get_driver_with(&provider, &settings) {
            Ok(driver) => driver,
            Err(e) => return Finished::Failed(Box::new(ErrorReport::provider(&e))),
        };
        let hooks = FleetHooks::default();
        let members = deploy_fleet(driver, vec![create], &steps, &options, &fleet, &hooks).await;
        if let Some(lines) = lines {
            lines.flush();
        }
        report::of_member(members.into_iter().next())
    };
    Ok(Task::start(shared, Box::pin(work)))
}

/// The provider, its settings and the create request: what was given over the step file's
/// `[node]` and `[provider]`.
fn create_request(
    request: RequestSpec,
    file: Option<&StepFile>,
) -> PyResult<(String, BTreeMap<String, serde_json::Value>, CreateNode)> {
    let node = file.map(|f| f.node.clone()).unwrap_or_default();
    let provider = request
        .provider
        .or(node.provider)
        .unwrap_or_else(|| "local".into());
    let mut settings = file.map(|f| f.provider.clone()).unwrap_or_default();
    settings.extend(request.provider_settings);
    let name = request.name.or(node.name).ok_or_else(|| {
        invalid("name: give the node's name (or `name` under [node] in the step file)")
    })?;
    let mut extra = node.options;
    extra.extend(request.options);
    let create = CreateNode {
        name,
        image: request.image.or(node.image),
        size: request.size.or(node.size),
        location: request.location.or(node.location),
        extra,
        ..Default::default()
    };
    Ok((provider, settings, create))
}

/// Starts the steps on machines that exist (`[user@]host[:port]` each), at most `parallel` at
/// once. `created` says that the caller just made them (a Libcloud driver's nodes): host keys are
/// then trusted on first use and recorded in nodeup's known_hosts, as for nodes nodeup creates;
/// otherwise they are checked against `~/.ssh/known_hosts`, as `nodeup run` does.
///
/// # Errors
/// `ValueError` for a host or an input that is wrong, before anything runs.
#[pyfunction]
#[pyo3(signature = (hosts, steps, ssh, *, stepfile=None, parallel=None, created=false, on_output=None, journal=None))]
#[allow(clippy::too_many_arguments)]
pub fn start_run(
    hosts: Vec<String>,
    steps: &Bound<'_, PyAny>,
    ssh: &Bound<'_, PyAny>,
    stepfile: Option<PathBuf>,
    parallel: Option<usize>,
    created: bool,
    on_output: Option<Py<PyAny>>,
    journal: Option<String>,
) -> PyResult<Task> {
    let file = load(stepfile)?;
    let ssh: SshSpec = read(ssh, "ssh")?;
    let steps = steps_of(steps, file.as_ref())?;
    let machines = machines(&hosts)?;
    let purpose = if created {
        Purpose::Deploy
    } else {
        Purpose::Run {
            provider_nodes: false,
        }
    };
    let shared = Task::shared();
    let options = options(&ssh, file.as_ref(), purpose, &shared, journal.as_deref())?;
    let on_output: Option<Callable> = on_output.map(Arc::new);
    let lines: Vec<Arc<Lines>> = match &on_output {
        Some(f) => hosts
            .iter()
            .map(|h| Lines::new(f.clone(), h.clone(), shared.clone()))
            .collect(),
        None => Vec::new(),
    };
    let start = match &file {
        Some(file) => RunStart::with_stepfile("run", &file.path),
        None => RunStart {
            command: "run".into(),
            ..Default::default()
        },
    };
    let work = run(machines, steps, options, parallel, created, lines, start);
    Ok(Task::start(shared, Box::pin(work)))
}

fn machines(hosts: &[String]) -> PyResult<Vec<Machine>> {
    if hosts.is_empty() {
        return Err(invalid("hosts: give one host or more"));
    }
    hosts
        .iter()
        .map(|text| {
            let spec = parse_host(text).map_err(|e| invalid(format!("hosts: {e}")))?;
            Ok(Machine {
                label: text.clone(),
                given: MachineGiven {
                    host: spec.host,
                    port: spec.port,
                    user: spec.user,
                    key_file: None,
                },
                ..Default::default()
            })
        })
        .collect()
}

async fn run(
    machines: Vec<Machine>,
    steps: Step,
    mut options: DeployOptions,
    parallel: Option<usize>,
    created: bool,
    lines: Vec<Arc<Lines>>,
    start: RunStart,
) -> Finished {
    let labels: Vec<String> = machines.iter().map(|m| m.label.clone()).collect();
    let prepared = match prepare(machines, &options).await {
        Ok(prepared) => prepared,
        Err(e) => return Finished::Failed(Box::new(ErrorReport::invalid(error_chain(&e)))),
    };
    if let Some(journal) = options.journal.take() {
        match journal.begin_run(start).await {
            Ok(bound) => options.journal = Some(bound),
            Err(e) => return Finished::Failed(Box::new(ErrorReport::invalid(error_chain(&e)))),
        }
    }
    let mut hooks = FleetHooks::default();
    if !lines.is_empty() {
        let sinks = lines.clone();
        hooks.output = Some(Arc::new(move |i: usize| Some(sinks[i].sink())));
    }
    let mut reports: Vec<Option<HostReport>> = labels.iter().map(|_| None).collect();
    let members = prepared.into_iter().map(|p| p.member(&options, created));
    run_fleet(
        members,
        &steps,
        &options,
        parallel,
        &hooks,
        |i, outcome, _| {
            reports[i] = Some(HostReport::of(labels[i].clone(), outcome));
        },
    )
    .await;
    lines.iter().for_each(|l| l.flush());
    let reports: Vec<HostReport> = reports
        .into_iter()
        .zip(&labels)
        .map(|(r, label)| r.unwrap_or_else(|| HostReport::of(label.clone(), None)))
        .collect();
    if let Some(journal) = &options.journal {
        let end = match () {
            _ if reports.iter().all(|r| r.ok) => RunEnd::Done,
            _ if options.cancel.is_cancelled() => RunEnd::Cancelled,
            _ => RunEnd::Failed,
        };
        journal.finish_run(end).await;
    }
    Finished::Ran(reports)
}

/// Checks that the SSH options give a way to log in (key files that load, a password or an agent)
/// without starting anything: the Libcloud drop-in asks before its driver creates a node.
///
/// # Errors
/// `ValueError` saying what to give.
#[pyfunction]
pub fn check_ssh(ssh: &Bound<'_, PyAny>) -> PyResult<()> {
    let ssh: SshSpec = read(ssh, "ssh")?;
    let shared = Task::shared();
    let options = options(&ssh, None, Purpose::Deploy, &shared, Some("off"))?;
    let creds = options.credentials().map_err(invalid)?;
    if creds.is_empty() {
        return Err(invalid(
            "no way to log in: give ssh_key (a private key file), a password, or run an ssh-agent",
        ));
    }
    Ok(())
}

/// A call to a provider's API, by method name.
#[derive(Debug, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderCall {
    /// `list_nodes()`.
    ListNodes,
    /// `get_node(id)`.
    GetNode {
        /// The node's id.
        id: String,
    },
    /// `list_images(location)`.
    ListImages {
        /// Only those of this location.
        location: Option<String>,
    },
    /// `list_sizes(location)`.
    ListSizes {
        /// Only those of this location.
        location: Option<String>,
    },
    /// `list_locations()`.
    ListLocations,
    /// `create_node(...)`: the node as the provider answers at once (it may not run yet).
    CreateNode {
        /// The node's name.
        name: String,
        /// The image, by id or name.
        image: Option<String>,
        /// The size, by id or name.
        size: Option<String>,
        /// The location, by id or name.
        location: Option<String>,
        /// The provider's node options.
        #[serde(default)]
        options: BTreeMap<String, serde_json::Value>,
        /// A public key (one OpenSSH line) the node lets in.
        ssh_public_key: Option<String>,
        /// A password for the node's login user.
        password: Option<String>,
    },
    /// `destroy_node(id)`, with the host keys recorded for it forgotten.
    DestroyNode {
        /// The node's id.
        id: String,
    },
}

/// Starts a call to `provider`'s API; the answer is the provider's objects as dicts.
///
/// # Errors
/// `ValueError` for a call that is not one of them.
#[pyfunction]
#[pyo3(signature = (provider, call, settings=None))]
pub fn start_call(
    provider: String,
    call: &Bound<'_, PyAny>,
    settings: Option<&Bound<'_, PyAny>>,
) -> PyResult<Task> {
    let call: ProviderCall = read(call, "call")?;
    let settings: BTreeMap<String, serde_json::Value> = match settings {
        Some(s) => read(s, "provider_settings")?,
        None => BTreeMap::new(),
    };
    let shared = Task::shared();
    let cancel = shared.cancel.clone();
    let work = async move {
        let answer = async {
            let driver = providers::get_driver_with(&provider, &settings)?;
            answer(driver.as_ref(), call).await
        };
        tokio::select! {
            answer = answer => match answer {
                Ok(value) => Finished::Answer(value),
                Err(e) => Finished::Failed(Box::new(ErrorReport::provider(&e))),
            },
            () = cancel.cancelled() => Finished::Failed(Box::new(ErrorReport::cancelled())),
        }
    };
    Ok(Task::start(shared, Box::pin(work)))
}

fn json(value: impl Serialize + Send + 'static) -> Result<Box<dyn Value>, ProviderError> {
    Ok(Box::new(value))
}

async fn answer(
    driver: &dyn NodeDriver,
    call: ProviderCall,
) -> Result<Box<dyn Value>, ProviderError> {
    match call {
        ProviderCall::ListNodes => json(driver.list_nodes().await?),
        ProviderCall::GetNode { id } => json(driver.get_node(&id).await?),
        ProviderCall::ListImages { location } => {
            json(driver.list_images(location.as_deref(), None).await?)
        }
        ProviderCall::ListSizes { location } => json(driver.list_sizes(location.as_deref()).await?),
        ProviderCall::ListLocations => json(driver.list_locations().await?),
        ProviderCall::CreateNode {
            name,
            image,
            size,
            location,
            options,
            ssh_public_key,
            password,
        } => {
            let auth = match (ssh_public_key, password) {
                (Some(key), _) => Some(NodeAuth::SshKey(key)),
                (None, Some(password)) => Some(NodeAuth::Password(password)),
                (None, None) => None,
            };
            let request = CreateNode {
                name,
                image,
                size,
                location,
                auth,
                extra: options,
                run: None,
            };
            json(driver.create_node(&request).await?)
        }
        ProviderCall::DestroyNode { id } => {
            let node = driver.get_node(&id).await?;
            let known_hosts = nodeup::engine::default_known_hosts();
            nodeup::engine::destroy_node(driver, &node, &known_hosts).await?;
            json(true)
        }
    }
}

/// A step file, read and checked: its `[node]` and its steps as the deployment classes' dicts.
#[derive(Serialize)]
pub struct StepFileView {
    path: PathBuf,
    provider: Option<String>,
    name: Option<String>,
    image: Option<String>,
    size: Option<String>,
    location: Option<String>,
    count: Option<usize>,
    steps: Vec<StepSpec>,
}

/// Reads and checks a step file.
///
/// # Errors
/// `ValueError` naming the file, line and column of what is wrong.
#[pyfunction]
pub fn load_stepfile<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let file = stepfile::load(&path).map_err(invalid)?;
    let view = StepFileView {
        path: std::path::absolute(&path).unwrap_or(path),
        provider: file.node.provider,
        name: file.node.name,
        image: file.node.image,
        size: file.node.size,
        location: file.node.location,
        count: file.node.count,
        steps: file
            .steps
            .flatten()
            .into_iter()
            .filter_map(StepSpec::of)
            .collect(),
    };
    pythonize::pythonize(py, &view).map_err(PyErr::from)
}
