//! The SlipStream driver: a node is a run of an App Store module (`POST /run`); images are modules
//! addressed by path (`apps/WordPress/wordpress`); locations are the clouds (connectors); key
//! pairs are the SSH public keys of the user's profile, which SlipStream puts on every VM.
//!
//! A run has no address of its own: once it is `Ready`, a node reports the `hostname` runtime
//! parameter of its machine (`machine:hostname` for a component, `<node>.1:hostname` for an
//! application). A node's name is the run's first tag. A create imports the deploy key into the
//! profile first (unless it is there), refuses a name an active run carries, and, when the answer
//! was lost, looks for the run by its name before it asks again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::cimi::ServiceOffer;
use super::{Body, CallError, Client, Credentials, Login, PROVIDER};
use crate::driver::{Features, NodeDriver, ProviderError, Result};
use crate::model::{
    CreateNode, KeyPair, Node, NodeAuth, NodeImage, NodeLocation, NodeSize, NodeState,
};
use crate::providers::key_blob;
use crate::providers::kit::create_at_most_once;
use crate::providers::lookup::{self, Candidate};

/// The profile parameter that holds the user's SSH public keys, one a line.
const SSH_KEYS_PARAMETER: &str = "General.ssh.public.key";

/// The comment a deployment's key gets in the profile, before the run's name: what tells the
/// keys nodeup added (and removes with the run) from the user's own.
const RUN_KEY_MARK: &str = "nodeup-run:";

/// How many runs one list call asks for.
const LIST_LIMIT: u32 = 500;

/// The SlipStream driver: one API client, its session kept as a cookie.
#[derive(Debug)]
pub struct SlipStreamDriver {
    pub(super) client: Client,
    /// The collections the cloud entry point names, read once.
    pub(super) entry_point: tokio::sync::OnceCell<BTreeMap<String, String>>,
}

/// A create's options (`[node] options`, `CreateNode::extra`), as Libcloud's SlipStream driver
/// takes them (`ex_*`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlipStreamOptions {
    /// The cloud to run on (`parameter--cloudservice`); the create's location when not given.
    #[serde(default)]
    pub cloud: Option<String>,
    /// Parameters: `name` for a component, `node:name` for an application's node.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// How many VMs each node of an application gets.
    #[serde(default)]
    pub multiplicity: BTreeMap<String, u32>,
    /// How many failed VMs each node tolerates.
    #[serde(default)]
    pub tolerate_failures: BTreeMap<String, u32>,
    /// More tags (the node's name is the first).
    #[serde(default)]
    pub tags: Vec<String>,
    /// `always`, `never`, `on-success` or `on-error`.
    #[serde(default)]
    pub keep_running: Option<String>,
    /// Have SlipStream check that the profile holds an SSH key; off by default, as in
    /// Libcloud's driver (`ex_check_ssh_key=False`).
    #[serde(default)]
    pub check_ssh_key: bool,
    /// A run that can be scaled later (`mutable=on`).
    #[serde(default)]
    pub scalable: bool,
}

/// One VM of a run (`ex_list_virtual_machines`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VirtualMachine {
    /// `virtual-machine/<uuid>`.
    pub id: String,
    /// The cloud's id of the VM.
    #[serde(rename = "instanceID", default)]
    pub instance_id: String,
    /// `Running`, `Stopped` ...
    #[serde(default)]
    pub state: String,
    /// Its public address.
    #[serde(default)]
    pub ip: Option<String>,
    /// Its private address.
    #[serde(rename = "privateIp", default)]
    pub private_ip: Option<String>,
    /// The run it belongs to (`run/<uuid>`).
    #[serde(default)]
    pub deployment: Option<Href>,
    /// The cloud (`connector/<name>`).
    #[serde(default)]
    pub connector: Option<Href>,
    /// The service offer (size) it was made with.
    #[serde(rename = "serviceOffer", default)]
    pub service_offer: Option<Href>,
}

/// A CIMI reference.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Href {
    /// What it points at.
    pub href: String,
}

#[derive(Debug, Deserialize)]
struct RunList {
    #[serde(rename = "item", default)]
    items: Vec<RunItem>,
}

#[derive(Debug, Clone, Deserialize)]
struct RunItem {
    #[serde(rename = "@uuid")]
    uuid: String,
    #[serde(rename = "@status", default)]
    status: RunState,
    #[serde(rename = "@tags", default)]
    tags: String,
    #[serde(rename = "@moduleResourceUri", default)]
    module: String,
    #[serde(rename = "@cloudServiceNames", default)]
    clouds: String,
    #[serde(rename = "@serviceUrl", default)]
    service_url: String,
    #[serde(rename = "@abort", default)]
    abort: String,
}

#[derive(Debug, Deserialize)]
struct Run {
    #[serde(rename = "@uuid")]
    uuid: String,
    #[serde(rename = "@state", default)]
    state: RunState,
    #[serde(rename = "@tags", default)]
    tags: String,
    #[serde(rename = "@moduleResourceUri", default)]
    module: String,
    #[serde(rename = "@cloudServiceNames", default)]
    clouds: String,
    #[serde(rename = "runtimeParameters", default)]
    parameters: Option<RuntimeParameters>,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeParameters {
    #[serde(rename = "entry", default)]
    entries: Vec<RuntimeEntry>,
}

#[derive(Debug, Deserialize)]
struct RuntimeEntry {
    #[serde(rename = "runtimeParameter")]
    parameter: RuntimeParameter,
}

#[derive(Debug, Deserialize)]
struct RuntimeParameter {
    #[serde(rename = "@key")]
    key: String,
    #[serde(rename = "$text", default)]
    value: String,
}

#[derive(Debug, Deserialize)]
struct ModuleList {
    #[serde(rename = "item", default)]
    items: Vec<ModuleItem>,
}

#[derive(Debug, Deserialize)]
struct ModuleItem {
    #[serde(rename = "@resourceUri")]
    uri: String,
    #[serde(rename = "@name", default)]
    name: String,
    #[serde(rename = "@description", default)]
    description: String,
    #[serde(rename = "@category", default)]
    category: String,
}

#[derive(Debug, Deserialize)]
struct Module {
    #[serde(rename = "@name", default)]
    name: String,
    #[serde(rename = "@shortName", default)]
    short_name: String,
    #[serde(rename = "@description", default)]
    description: String,
    #[serde(rename = "@category", default)]
    category: String,
    #[serde(default)]
    nodes: Option<ModuleNodes>,
}

#[derive(Debug, Default, Deserialize)]
struct ModuleNodes {
    #[serde(rename = "entry", default)]
    entries: Vec<ModuleNodeEntry>,
}

#[derive(Debug, Deserialize)]
struct ModuleNodeEntry {
    node: ModuleNode,
}

#[derive(Debug, Deserialize)]
struct ModuleNode {
    #[serde(rename = "@name")]
    name: String,
}

/// A SlipStream run's state (`ss:state`), in the order a run goes through them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum RunState {
    /// Being set up.
    Initializing,
    /// Its VMs are being made.
    Provisioning,
    /// Its deployment scripts run.
    Executing,
    /// Its VMs report back.
    SendingReports,
    /// Up: a component's `machine:hostname` is set.
    Ready,
    /// Being torn down.
    Finalizing,
    /// Ended (torn down).
    Done,
    /// Cancelled by its user.
    Cancelled,
    /// Failed: `ss:abort` says why.
    Aborted,
    /// A state this driver does not know, as SlipStream wrote it.
    Other(String),
}

/// The states a run does not leave.
const FINAL_RUN_STATES: [RunState; 3] = [RunState::Done, RunState::Cancelled, RunState::Aborted];

impl RunState {
    /// The word SlipStream uses.
    pub fn as_str(&self) -> &str {
        match self {
            RunState::Initializing => "Initializing",
            RunState::Provisioning => "Provisioning",
            RunState::Executing => "Executing",
            RunState::SendingReports => "SendingReports",
            RunState::Ready => "Ready",
            RunState::Finalizing => "Finalizing",
            RunState::Done => "Done",
            RunState::Cancelled => "Cancelled",
            RunState::Aborted => "Aborted",
            RunState::Other(word) => word,
        }
    }

    /// The node state a run in this state has (as Libcloud's driver maps them).
    pub fn node_state(&self) -> NodeState {
        match self {
            RunState::Initializing => NodeState::Pending,
            RunState::Provisioning => NodeState::Rebooting,
            RunState::Executing
            | RunState::SendingReports
            | RunState::Ready
            | RunState::Finalizing => NodeState::Running,
            RunState::Done | RunState::Cancelled => NodeState::Terminated,
            RunState::Aborted => NodeState::Error,
            RunState::Other(_) => NodeState::Unknown,
        }
    }

    /// Whether a run in this state has ended for good.
    pub fn is_final(&self) -> bool {
        FINAL_RUN_STATES.contains(self)
    }
}

impl From<String> for RunState {
    fn from(word: String) -> Self {
        match word.as_str() {
            "Initializing" => RunState::Initializing,
            "Provisioning" => RunState::Provisioning,
            "Executing" => RunState::Executing,
            "SendingReports" => RunState::SendingReports,
            "Ready" => RunState::Ready,
            "Finalizing" => RunState::Finalizing,
            "Done" => RunState::Done,
            "Cancelled" => RunState::Cancelled,
            "Aborted" => RunState::Aborted,
            _ => RunState::Other(word),
        }
    }
}

impl Default for RunState {
    fn default() -> Self {
        RunState::Other(String::new())
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn invalid(message: String) -> ProviderError {
    super::invalid(message)
}

fn xml<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, CallError> {
    quick_xml::de::from_str(text).map_err(|e| CallError::Decode(format!("{what}: {e}")))
}

fn first_tag(tags: &str) -> Option<&str> {
    tags.split(',').map(str::trim).find(|t| !t.is_empty())
}

/// A module path from what a user gives: `apps/X/y`, `module/apps/X/y`, with or without a version.
fn module_path(image: &str) -> String {
    image
        .trim_start_matches('/')
        .trim_start_matches("module/")
        .to_string()
}

/// What a path segment or query value keeps as it is: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

impl SlipStreamDriver {
    /// A driver for these credentials.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(creds: Credentials) -> Result<Self> {
        Ok(SlipStreamDriver {
            client: Client::new(creds)?,
            entry_point: tokio::sync::OnceCell::new(),
        })
    }

    /// From the environment; SlipStream takes no `[provider]` settings.
    ///
    /// # Errors
    /// A setting given, or no way to log in.
    pub fn from_config(config: &BTreeMap<String, Value>) -> Result<Self> {
        let _: BTreeMap<String, Value> = crate::providers::settings(
            PROVIDER,
            "[provider]",
            config,
            "set SLIPSTREAM_USERNAME and SLIPSTREAM_PASSWORD (or SLIPSTREAM_KEY and \
             SLIPSTREAM_SECRET, or SLIPSTREAM_COOKIE_FILE)",
        )?;
        Self::new(Credentials::from_env()?)
    }

    /// The API client, to adjust (its retry policy, say).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    pub(super) async fn text(&self, path: &str, accept: &str, what: &str) -> Result<String> {
        let response = self
            .client
            .call(Method::GET, path, accept, &Body::None)
            .await
            .map_err(|e| e.into_provider(what.into()))?;
        Ok(String::from_utf8_lossy(&response.body).into_owned())
    }

    /// The XML document at `path`, decoded; `what` names the call in errors.
    async fn document<T: serde::de::DeserializeOwned>(&self, path: &str, what: &str) -> Result<T> {
        let text = self.text(path, "application/xml", what).await?;
        xml(&text, what).map_err(|e| e.into_provider(what.into()))
    }

    async fn run(&self, uuid: &str) -> Result<Run> {
        let path = format!("/run/{}", encode_path(uuid));
        self.document(&path, &format!("reading run {uuid}")).await
    }

    async fn active_runs(&self) -> Result<Vec<RunItem>> {
        let path = format!("/run?activeOnly=true&offset=0&limit={LIST_LIMIT}");
        let list: RunList = self.document(&path, "listing runs").await?;
        Ok(list.items)
    }

    /// The run as a node: its address once it is `Ready`.
    async fn node_of(&self, item: &RunItem) -> Result<Node> {
        let address = if item.status == RunState::Ready {
            let run = self.run(&item.uuid).await?;
            hostname_of(&run)
        } else {
            None
        };
        Ok(to_node(item, address))
    }

    /// A run, as a node, by its uuid (`ex_get_node`).
    ///
    /// # Errors
    /// No such run, or the call failed.
    pub async fn ex_get_node(&self, uuid: &str) -> Result<Node> {
        let run = self.run(uuid).await?;
        let item = RunItem {
            uuid: run.uuid.clone(),
            status: run.state.clone(),
            tags: run.tags.clone(),
            module: run.module.clone(),
            clouds: run.clouds.clone(),
            service_url: parameter(&run, "ss:url.service").unwrap_or_default(),
            abort: parameter(&run, "ss:abort").unwrap_or_default(),
        };
        let address = (run.state == RunState::Ready)
            .then(|| hostname_of(&run))
            .flatten();
        Ok(to_node(&item, address))
    }

    /// A runtime parameter of the run (`ss:state`, `machine:hostname`, `web.1:hostname` ...), as
    /// text. With `ignore_abort` false, a run that aborted answers its abort instead.
    ///
    /// # Errors
    /// No such parameter, the run aborted, or the call failed.
    pub async fn ex_get_node_parameter(
        &self,
        node: &Node,
        name: &str,
        ignore_abort: bool,
    ) -> Result<String> {
        let path = format!(
            "/run/{}/{}?ignoreabort={ignore_abort}",
            encode_path(&node.id),
            encode_path(name)
        );
        let what = format!("reading parameter {name} of run {}", node.id);
        Ok(self
            .text(&path, "text/plain", &what)
            .await?
            .trim()
            .to_string())
    }

    /// Polls the run's `ss:state` every `wait_period` until it is one of `states`; the state.
    ///
    /// # Errors
    /// The run aborted (with why, unless `ignore_abort`), ended in another final state, or
    /// `timeout` passed.
    pub async fn ex_wait_node_in_state(
        &self,
        node: &Node,
        states: &[RunState],
        wait_period: Duration,
        timeout: Duration,
        ignore_abort: bool,
    ) -> Result<RunState> {
        let started = tokio::time::Instant::now();
        let wanted = || {
            (states.iter())
                .map(RunState::as_str)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        loop {
            let state = RunState::from(
                self.ex_get_node_parameter(node, "ss:state", ignore_abort)
                    .await?,
            );
            if states.contains(&state) {
                return Ok(state);
            }
            if state.is_final() {
                return Err(invalid(format!(
                    "run {} ended {state} before reaching {}",
                    node.id,
                    wanted()
                )));
            }
            if started.elapsed() + wait_period > timeout {
                return Err(invalid(format!(
                    "run {} still {state} after {timeout:?} (waiting for {})",
                    node.id,
                    wanted()
                )));
            }
            tokio::time::sleep(wait_period).await;
        }
    }

    /// The VMs of every run, or of one, on one cloud or all.
    ///
    /// # Errors
    /// The call failed.
    pub async fn ex_list_virtual_machines(
        &self,
        location: Option<&str>,
        node: Option<&Node>,
    ) -> Result<Vec<VirtualMachine>> {
        // The filter as SlipStream's own Libcloud driver writes it.
        let mut filters = Vec::new();
        if let Some(cloud) = location {
            filters.push(format!("connector/href = \"connector/{cloud}\""));
        }
        if let Some(node) = node {
            filters.push(format!("deployment/href = \"run/{}\"", node.id));
        }
        let filter = (!filters.is_empty()).then(|| filters.join(" and "));
        self.search("virtualMachines", filter).await
    }

    /// The user whose profile holds the keys: the login's, else the session's.
    async fn username(&self) -> Result<String> {
        if let Some(Login::Password { username, .. }) = &self.client.creds.login {
            return Ok(username.clone());
        }
        let text = self
            .text("/api/session", "application/json", "reading the session")
            .await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        value["sessions"][0]["username"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| invalid("the session names no user".into()))
    }

    /// The profile (XML) and the SSH keys it holds.
    pub(super) async fn profile(&self) -> Result<(String, String, Vec<String>)> {
        let user = self.username().await?;
        let what = format!("reading the profile of {user}");
        let text = self
            .text(
                &format!("/user/{}", encode_path(&user)),
                "application/xml",
                &what,
            )
            .await?;
        let keys = profile_keys(&text).map_err(|e| e.into_provider(what))?;
        Ok((user, text, keys))
    }

    /// Writes the profile's SSH keys.
    async fn set_profile_keys(&self, user: &str, profile: &str, keys: &[String]) -> Result<()> {
        let what = format!("updating the SSH keys of {user}");
        let updated = with_profile_keys(profile, &keys.join("\n"))
            .map_err(|e| e.into_provider(what.clone()))?;
        self.client
            .call(
                Method::PUT,
                &format!("/user/{}", encode_path(user)),
                "application/xml",
                &Body::Xml(updated),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.into_provider(what))
    }

    /// The module at `path`: whether it is an application, and its nodes.
    async fn module(&self, path: &str) -> Result<Module> {
        let url = format!("/module/{}", encode_path(path));
        self.document(&url, &format!("reading module {path}")).await
    }
}

/// A runtime parameter of a run's document.
fn parameter(run: &Run, key: &str) -> Option<String> {
    run.parameters
        .as_ref()?
        .entries
        .iter()
        .find(|e| e.parameter.key == key)
        .map(|e| e.parameter.value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The address a run is logged in at: `machine:hostname`, else the first `<node>.<n>:hostname`.
fn hostname_of(run: &Run) -> Option<String> {
    parameter(run, "machine:hostname").or_else(|| {
        let mut keys: Vec<&RuntimeEntry> = run
            .parameters
            .as_ref()?
            .entries
            .iter()
            .filter(|e| {
                e.parameter.key.ends_with(":hostname") && !e.parameter.value.trim().is_empty()
            })
            .collect();
        keys.sort_by(|a, b| a.parameter.key.cmp(&b.parameter.key));
        keys.first().map(|e| e.parameter.value.trim().to_string())
    })
}

fn to_node(item: &RunItem, address: Option<String>) -> Node {
    let mut extra: BTreeMap<String, Value> = BTreeMap::new();
    extra.insert("status".into(), item.status.to_string().into());
    extra.insert("module".into(), item.module.clone().into());
    extra.insert("cloud".into(), item.clouds.clone().into());
    // The run's (first) cloud is its location, by the name `list_locations` gives it.
    if let Some(cloud) = item
        .clouds
        .split(',')
        .map(str::trim)
        .find(|c| !c.is_empty())
    {
        extra.insert("location".into(), cloud.into());
    }
    extra.insert("tags".into(), item.tags.clone().into());
    if !item.service_url.is_empty() {
        extra.insert("service_url".into(), item.service_url.clone().into());
    }
    if let Some(host) = &address {
        extra.insert("hostname".into(), host.clone().into());
    }
    if !item.abort.is_empty() {
        extra.insert("error".into(), item.abort.clone().into());
    }
    Node {
        id: item.uuid.clone(),
        name: first_tag(&item.tags).unwrap_or(&item.uuid).to_string(),
        state: item.status.node_state(),
        public_ips: address
            .and_then(|a| a.parse::<IpAddr>().ok())
            .into_iter()
            .collect(),
        private_ips: vec![],
        image: Some(module_path(&item.module)),
        size: None,
        provider: PROVIDER.into(),
        extra,
    }
}

/// The SSH public keys a profile document holds, one a line.
fn profile_keys(profile: &str) -> Result<Vec<String>, CallError> {
    #[derive(Deserialize)]
    struct User {
        #[serde(default)]
        parameters: Option<Parameters>,
    }
    #[derive(Deserialize)]
    struct Parameters {
        #[serde(rename = "entry", default)]
        entries: Vec<ParameterEntry>,
    }
    #[derive(Deserialize)]
    struct ParameterEntry {
        parameter: Parameter,
    }
    #[derive(Deserialize)]
    struct Parameter {
        #[serde(rename = "@name")]
        name: String,
        #[serde(default)]
        value: Option<String>,
    }
    let user: User = xml(profile, "the user's profile")?;
    Ok(user
        .parameters
        .map(|p| p.entries)
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.parameter.name == SSH_KEYS_PARAMETER)
        .and_then(|e| e.parameter.value)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The profile document with the SSH keys parameter's value replaced, everything else as it was.
fn with_profile_keys(profile: &str, keys: &str) -> Result<String, CallError> {
    use quick_xml::events::{BytesText, Event};
    let mut reader = quick_xml::Reader::from_str(profile);
    let mut writer = quick_xml::Writer::new(Vec::new());
    let (mut in_keys, mut in_value, mut found) = (false, false, false);
    let bad = |e: quick_xml::Error| CallError::Decode(format!("the user's profile: {e}"));
    loop {
        let event = reader.read_event().map_err(bad)?;
        match &event {
            Event::Start(e) if e.local_name().as_ref() == "parameter" => {
                in_keys = e
                    .attributes()
                    .flatten()
                    .any(|a| a.key.as_ref() == "name" && a.value.as_ref() == SSH_KEYS_PARAMETER);
            }
            Event::Start(e) if in_keys && e.local_name().as_ref() == "value" => {
                in_value = true;
                found = true;
                writer
                    .write_event(event.clone())
                    .map_err(|e| bad(e.into()))?;
                writer
                    .write_event(Event::Text(BytesText::new(keys)))
                    .map_err(|e| bad(e.into()))?;
                continue;
            }
            Event::End(e) if e.local_name().as_ref() == "value" => in_value = false,
            Event::End(e) if e.local_name().as_ref() == "parameter" => in_keys = false,
            Event::Text(_) | Event::CData(_) if in_value => continue,
            Event::Eof => break,
            _ => {}
        }
        writer.write_event(event).map_err(|e| bad(e.into()))?;
    }
    if !found {
        return Err(CallError::Decode(format!(
            "the user's profile has no {SSH_KEYS_PARAMETER} parameter with a value element"
        )));
    }
    String::from_utf8(writer.into_inner()).map_err(|e| CallError::Decode(e.to_string()))
}

/// A profile key as a key pair: named by its comment (else its type), the key itself.
fn key_pair(line: &str) -> KeyPair {
    let mut words = line.split_whitespace();
    let kind = words.next().unwrap_or("");
    let comment = words.nth(1).map(str::to_string);
    KeyPair {
        name: comment.unwrap_or_else(|| kind.to_string()),
        public_key: line.to_string(),
        fingerprint: None,
        private_key: None,
        extra: BTreeMap::new(),
    }
}

#[async_trait]
impl NodeDriver for SlipStreamDriver {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn features(&self) -> Features {
        Features {
            ssh_key: true,
            ..Features::default()
        }
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        let mut nodes = Vec::new();
        for item in self.active_runs().await? {
            nodes.push(self.node_of(&item).await?);
        }
        Ok(nodes)
    }

    async fn get_node(&self, id: &str) -> Result<Node> {
        self.ex_get_node(id).await
    }

    async fn create_node(&self, request: &CreateNode) -> Result<Node> {
        self.create_run(request).await
    }

    /// Terminates the run, and removes the key its deployment added to the profile.
    async fn destroy_node(&self, node: &Node) -> Result<()> {
        self.client
            .call(
                Method::DELETE,
                &format!("/run/{}", encode_path(&node.id)),
                "application/xml",
                &Body::None,
            )
            .await
            .map_err(|e| e.into_provider(format!("terminating run {}", node.id)))?;
        self.remove_run_key(&node.name).await;
        Ok(())
    }

    async fn list_images(
        &self,
        _location: Option<&str>,
        _size: Option<&str>,
    ) -> Result<Vec<NodeImage>> {
        let list: ModuleList = self.document("/appstore", "listing the App Store").await?;
        Ok(list
            .items
            .into_iter()
            .map(|m| {
                let mut extra = BTreeMap::new();
                extra.insert("description".into(), m.description.into());
                extra.insert("category".into(), m.category.into());
                NodeImage {
                    id: module_path(&m.uri),
                    name: m.name,
                    extra,
                }
            })
            .collect())
    }

    async fn get_image(&self, id: &str) -> Result<NodeImage> {
        let path = module_path(id);
        let module = self.module(&path).await?;
        let mut extra = BTreeMap::new();
        extra.insert("description".into(), module.description.into());
        extra.insert("category".into(), module.category.into());
        let nodes: Vec<String> = module
            .nodes
            .unwrap_or_default()
            .entries
            .into_iter()
            .map(|e| e.node.name)
            .collect();
        extra.insert("nodes".into(), nodes.into());
        Ok(NodeImage {
            id: path,
            name: if module.short_name.is_empty() {
                module.name
            } else {
                module.short_name
            },
            extra,
        })
    }

    /// The clouds the user's profile holds credentials for (as SlipStream's own client lists
    /// them), with their country.
    async fn list_locations(&self) -> Result<Vec<NodeLocation>> {
        self.locations().await
    }

    /// The VM service offers, of one cloud when given.
    async fn list_sizes(&self, location: Option<&str>) -> Result<Vec<NodeSize>> {
        Ok(self
            .service_offers(location)
            .await?
            .iter()
            .map(|o| o.size())
            .collect())
    }

    /// Makes an ed25519 key pair and adds its public half to the profile; the private half is
    /// returned, once.
    async fn create_key_pair(&self, name: &str, _location: Option<&str>) -> Result<KeyPair> {
        let key =
            russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
                .map_err(|e| invalid(format!("generating a key: {e}")))?;
        let mut public = key.public_key().clone();
        public.set_comment(name);
        let line = public
            .to_openssh()
            .map_err(|e| invalid(format!("writing the key: {e}")))?;
        let private = key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .map_err(|e| invalid(format!("writing the key: {e}")))?;
        let mut pair = self.import_key_pair_from_string(name, &line, None).await?;
        pair.private_key = Some(private.to_string());
        Ok(pair)
    }

    async fn list_key_pairs(&self, _location: Option<&str>) -> Result<Vec<KeyPair>> {
        let (_, _, keys) = self.profile().await?;
        Ok(keys.iter().map(|k| key_pair(k)).collect())
    }

    async fn import_key_pair_from_string(
        &self,
        _name: &str,
        key_material: &str,
        _location: Option<&str>,
    ) -> Result<KeyPair> {
        let line = key_material.trim().to_string();
        if line.contains('\n') || !line.contains(' ') {
            return Err(invalid(
                "give one OpenSSH public key line (type, key, comment)".into(),
            ));
        }
        let (user, profile, mut keys) = self.profile().await?;
        if !keys.iter().any(|k| key_blob(k) == key_blob(&line)) {
            keys.push(line.clone());
            self.set_profile_keys(&user, &profile, &keys).await?;
        }
        Ok(key_pair(&line))
    }

    async fn delete_key_pair(&self, key_pair: &KeyPair) -> Result<()> {
        let (user, profile, keys) = self.profile().await?;
        let blob = key_blob(&key_pair.public_key);
        let kept: Vec<String> = keys
            .iter()
            .filter(|k| key_blob(k) != blob)
            .cloned()
            .collect();
        if kept.len() == keys.len() {
            return Err(ProviderError::NotFound {
                provider: PROVIDER.into(),
                kind: "key pair",
                id: key_pair.name.clone(),
            });
        }
        self.set_profile_keys(&user, &profile, &kept).await
    }
}

impl SlipStreamDriver {
    /// `create_node`: see the module's documentation.
    async fn create_run(&self, request: &CreateNode) -> Result<Node> {
        let options: SlipStreamOptions = crate::providers::settings(
            PROVIDER,
            "[node] options",
            &request.extra,
            "they come from the SLIPSTREAM_* variables",
        )?;
        let name = request.name.as_str();
        if name.is_empty() || name.contains(',') {
            return Err(invalid(format!(
                "node name {name:?}: a run is named by its first tag, which cannot be empty or hold a comma"
            )));
        }
        let image = request.image.as_deref().ok_or_else(|| {
            invalid("give an image: an App Store module path such as apps/WordPress/wordpress, or its name (`nodeup images --provider slipstream` lists them)".into())
        })?;
        let path = self.resolve_image(image).await?;
        let module = self.module(&path).await?;
        let cloud = options.cloud.clone().or(request.location.clone());
        let offer = match &request.size {
            Some(size) => Some(self.resolve_size(size, cloud.as_deref()).await?),
            None => None,
        };
        if self
            .active_runs()
            .await?
            .iter()
            .any(|r| first_tag(&r.tags) == Some(name))
        {
            return Err(invalid(format!(
                "an active run is named {name:?} already; terminate it or choose another name"
            )));
        }
        let form = run_form(&path, &module, request, &options, offer.as_deref())?;
        let imported = match &request.auth {
            Some(NodeAuth::SshKey(public)) => self.import_for_run(name, public).await?,
            _ => false,
        };
        let created = self.post_run(name, form).await;
        if created.is_err() && imported {
            self.remove_run_key(name).await;
        }
        created
    }

    /// The module path an image names: a path (`apps/X/y`, with or without `module/` and a
    /// version) as it is, else the name of an App Store module (`debian`, as `nodeup images`
    /// lists it).
    async fn resolve_image(&self, image: &str) -> Result<String> {
        let path = module_path(image);
        if path.contains('/') {
            return Ok(path);
        }
        let images = self.list_images(None, None).await?;
        let candidates: Vec<Candidate> = images
            .into_iter()
            .map(|i| Candidate {
                id: i.id,
                name: i.name,
            })
            .collect();
        lookup::find("image", image, " in the App Store", &candidates)
            .map(|c| c.id.clone())
            .map_err(|e| invalid(format!("{e} (`nodeup images --provider slipstream`)")))
    }

    /// The service offer a size names: its id, its name, or its instance type (`small`) on the
    /// run's cloud.
    async fn resolve_size(&self, size: &str, cloud: Option<&str>) -> Result<String> {
        let offers = self.service_offers(cloud).await?;
        let by_type: Vec<&ServiceOffer> = offers
            .iter()
            .filter(|o| o.instance_type() == Some(size))
            .collect();
        if let [one] = by_type.as_slice() {
            return Ok(one.size().id);
        }
        let candidates: Vec<Candidate> = offers
            .iter()
            .map(|o| {
                let size = o.size();
                Candidate {
                    id: size.id,
                    name: size.name,
                }
            })
            .collect();
        let scope = cloud.map(|c| format!(" on {c}")).unwrap_or_default();
        lookup::find("size", size, &scope, &candidates)
            .map(|c| c.id.clone())
            .map_err(|e| invalid(format!("{e} (`nodeup sizes --provider slipstream`)")))
    }

    /// Adds the key a deployment logs in with to the profile, marked as the run's (its comment
    /// is `nodeup-run:NAME`), unless the profile has it already; whether it was added.
    async fn import_for_run(&self, name: &str, public: &str) -> Result<bool> {
        let (user, profile, mut keys) = self.profile().await?;
        if keys.iter().any(|k| key_blob(k) == key_blob(public)) {
            return Ok(false);
        }
        keys.push(format!("{} {RUN_KEY_MARK}{name}", key_blob(public)));
        self.set_profile_keys(&user, &profile, &keys).await?;
        Ok(true)
    }

    /// Removes from the profile the key a deployment of run `name` added (best effort: logged).
    async fn remove_run_key(&self, name: &str) {
        let mark = format!("{RUN_KEY_MARK}{name}");
        let removed = async {
            let (user, profile, keys) = self.profile().await?;
            let kept: Vec<String> = keys
                .iter()
                .filter(|k| k.split_whitespace().nth(2) != Some(mark.as_str()))
                .cloned()
                .collect();
            if kept.len() < keys.len() {
                self.set_profile_keys(&user, &profile, &kept).await?;
            }
            Ok::<_, ProviderError>(())
        };
        if let Err(e) = removed.await {
            tracing::warn!(
                "removing the key run {name} added to the profile: {}",
                crate::error_chain(&e)
            );
        }
    }

    /// Sends `POST /run` and reads the run it made; a lost answer is looked for by name first.
    async fn post_run(&self, name: &str, form: Vec<(String, String)>) -> Result<Node> {
        let context = format!("starting a run for {name}");
        let body = Body::Form(form);
        let find = || async {
            let runs = self.active_runs().await?;
            match runs.iter().find(|r| first_tag(&r.tags) == Some(name)) {
                Some(run) => Ok(Some(self.ex_get_node(&run.uuid).await?)),
                None => Ok(None),
            }
        };
        let context = context.as_str();
        let made = |response: crate::http::Response| async move {
            let uuid = response
                .header("location")
                .and_then(|l| l.rsplit('/').next())
                .map(str::to_string)
                .ok_or_else(|| {
                    CallError::Decode("201 without a Location".into())
                        .into_provider(context.to_string())
                })?;
            self.ex_get_node(&uuid).await
        };
        create_at_most_once(
            context,
            || {
                self.client
                    .call(Method::POST, "/run", "application/xml", &body)
            },
            find,
            made,
        )
        .await
    }
}

/// The form of `POST /run`, as the reference lists its fields.
fn run_form(
    path: &str,
    module: &Module,
    request: &CreateNode,
    options: &SlipStreamOptions,
    service_offer: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let mut form = RunForm::new(path, module);
    if let Some(cloud) = options.cloud.as_ref().or(request.location.as_ref()) {
        form.per_vm("cloudservice", cloud, &options.parameters);
    }
    // The size: every VM's service offer, unless a parameter says otherwise (as Libcloud's
    // driver does).
    if let Some(offer) = service_offer {
        form.per_vm("service-offer", offer, &options.parameters);
    }
    form.parameters(&options.parameters)?;
    form.node_counts(options)?;
    form.run_fields(request, options)?;
    Ok(form.fields)
}

/// The fields of `POST /run` for one module, as they are added.
struct RunForm<'a> {
    path: &'a str,
    /// The module's nodes: none for a component, one or more for an application.
    nodes: Vec<String>,
    fields: Vec<(String, String)>,
}

impl<'a> RunForm<'a> {
    fn new(path: &'a str, module: &Module) -> Self {
        let nodes = module
            .nodes
            .as_ref()
            .map(|n| n.entries.iter().map(|e| e.node.name.clone()).collect())
            .unwrap_or_default();
        RunForm {
            path,
            nodes,
            fields: vec![("refqname".to_string(), format!("module/{path}"))],
        }
    }

    fn push(&mut self, key: String, value: &str) {
        self.fields.push((key, value.to_string()));
    }

    /// Parameter `name` of every VM (each node's for an application, the component's), unless
    /// the user's `parameters` set it.
    fn per_vm(&mut self, name: &str, value: &str, parameters: &BTreeMap<String, String>) {
        if self.nodes.is_empty() {
            if !parameters.contains_key(name) {
                self.push(format!("parameter--{name}"), value);
            }
            return;
        }
        for node in self.nodes.clone() {
            if !parameters.contains_key(&format!("{node}:{name}")) {
                self.push(format!("parameter--node--{node}--{name}"), value);
            }
        }
    }

    /// The user's parameters: `name` for a component, `node:name` for one of an application's
    /// nodes (which must be one of its nodes).
    fn parameters(&mut self, parameters: &BTreeMap<String, String>) -> Result<()> {
        for (key, value) in parameters {
            match key.split_once(':') {
                Some((node, name)) if self.nodes.iter().any(|n| n == node) => {
                    self.push(format!("parameter--node--{node}--{name}"), value)
                }
                Some((node, _)) => {
                    return Err(invalid(format!(
                        "parameter {key:?}: module {} has no node {node:?} (its nodes: {})",
                        self.path,
                        self.nodes.join(", ")
                    )))
                }
                None => self.push(format!("parameter--{key}"), value),
            }
        }
        Ok(())
    }

    /// How many VMs each node gets, and how many may fail.
    fn node_counts(&mut self, options: &SlipStreamOptions) -> Result<()> {
        for (table, field) in [
            (&options.multiplicity, "multiplicity"),
            (&options.tolerate_failures, "max-provisioning-failures"),
        ] {
            for (node, n) in table {
                if !self.nodes.contains(node) {
                    return Err(invalid(format!(
                        "{field} for {node:?}: module {} has no such node",
                        self.path
                    )));
                }
                self.push(format!("parameter--node--{node}--{field}"), &n.to_string());
            }
        }
        Ok(())
    }

    /// The run's own fields: its tags (the node's name first), keep-running, mutable and the
    /// SSH-key check.
    fn run_fields(&mut self, request: &CreateNode, options: &SlipStreamOptions) -> Result<()> {
        let tags: Vec<&str> = std::iter::once(request.name.as_str())
            .chain(options.tags.iter().map(String::as_str))
            .collect();
        self.push("tags".into(), &tags.join(","));
        if let Some(keep) = &options.keep_running {
            if !["always", "never", "on-success", "on-error"].contains(&keep.as_str()) {
                return Err(invalid(format!(
                    "keep_running {keep:?}: one of always, never, on-success, on-error"
                )));
            }
            self.push("keep-running".into(), keep);
        }
        if options.scalable {
            self.push("mutable".into(), "on");
        }
        if !options.check_ssh_key {
            self.push("bypass-ssh-check".into(), "true");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"<user name="alice" email="a@example.org"><parameters><entry><string>General.ssh.public.key</string><parameter name="General.ssh.public.key" category="General" type="RestrictedText"><value>ssh-ed25519 AAAA1 alice@laptop</value></parameter></entry><entry><string>General.keep-running</string><parameter name="General.keep-running" category="General"><value>on-success</value></parameter></entry></parameters></user>"#;

    #[test]
    fn profile_keys_are_read_and_replaced_leaving_the_rest() {
        assert_eq!(
            profile_keys(PROFILE).unwrap(),
            ["ssh-ed25519 AAAA1 alice@laptop"]
        );
        let updated =
            with_profile_keys(PROFILE, "ssh-ed25519 AAAA1 alice@laptop\nssh-rsa BBBB ci").unwrap();
        assert_eq!(profile_keys(&updated).unwrap().len(), 2);
        assert!(updated.contains("<value>on-success</value>"), "{updated}");
        assert!(updated.contains(r#"email="a@example.org""#));
    }

    #[test]
    fn run_states_map_as_the_reference_says() {
        let state_of = |word: &str| RunState::from(word.to_string()).node_state();
        assert_eq!(state_of("Initializing"), NodeState::Pending);
        assert_eq!(state_of("Provisioning"), NodeState::Rebooting);
        assert_eq!(state_of("Ready"), NodeState::Running);
        assert_eq!(state_of("Cancelled"), NodeState::Terminated);
        assert_eq!(state_of("Aborted"), NodeState::Error);
        assert_eq!(state_of("Levitating"), NodeState::Unknown);
        assert_eq!(
            RunState::from("Levitating".to_string()).to_string(),
            "Levitating"
        );
    }

    #[test]
    fn an_application_gets_per_node_fields() {
        let module: Module = quick_xml::de::from_str(
            r#"<deploymentModule name="apps/WordPress/wordpress" category="Deployment"><nodes><entry><string>web</string><node name="web" multiplicity="1"/></entry></nodes></deploymentModule>"#,
        )
        .unwrap();
        let request = CreateNode {
            name: "blog".into(),
            location: Some("exoscale-ch-gva".into()),
            ..Default::default()
        };
        let options = SlipStreamOptions {
            parameters: [("web:instance.type".to_string(), "Small".to_string())].into(),
            multiplicity: [("web".to_string(), 2)].into(),
            keep_running: Some("on-success".into()),
            check_ssh_key: false,
            tags: vec!["prod".into()],
            ..Default::default()
        };
        let offer = Some("cimi/service-offer/1");
        let form = run_form(
            "apps/WordPress/wordpress",
            &module,
            &request,
            &options,
            offer,
        )
        .unwrap();
        let has = |k: &str, v: &str| form.iter().any(|(a, b)| a == k && b == v);
        assert!(has("refqname", "module/apps/WordPress/wordpress"));
        assert!(has("parameter--node--web--cloudservice", "exoscale-ch-gva"));
        assert!(has("parameter--node--web--instance.type", "Small"));
        assert!(has("parameter--node--web--multiplicity", "2"));
        assert!(has("tags", "blog,prod"));
        assert!(has("keep-running", "on-success"));
        assert!(has("bypass-ssh-check", "true"));
        assert!(has(
            "parameter--node--web--service-offer",
            "cimi/service-offer/1"
        ));
        let bad = SlipStreamOptions {
            multiplicity: [("db".to_string(), 1)].into(),
            ..Default::default()
        };
        assert!(run_form("apps/WordPress/wordpress", &module, &request, &bad, None).is_err());
    }
}
