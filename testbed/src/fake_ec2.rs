//! `fake-ec2`: a front for moto's EC2 API that gives its instances machines. moto answers every
//! request (it was written by others from AWS's behaviour); this front passes each one through
//! unchanged and only: on `RunInstances`, makes a local node for each instance (a `cloud-debian`
//! node whose login user is the one the image's publisher uses, with the key pair's public key)
//! and reports that node's address as the instance's public address in every answer that shows
//! it; on `StopInstances`, `StartInstances`, `RebootInstances` and `TerminateInstances`, does the
//! same to the node. It also counts the calls by action, serves `/checkip` (this machine's
//! address as AWS's checkip service answers it), and injects faults per action: EC2's throttling
//! (`RequestLimitExceeded`, 503), 500s, and answers lost after moto acted.

// Handlers answer early with an error `Response`; it is large by nature.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use nodeup::driver::NodeDriver;
use nodeup::model::{CreateNode, Node, NodeAuth};
use nodeup::providers::local::LocalDriver;

pub use crate::fake_ovh::{Fault, FaultCounts, RouteFault};

/// The login users of the images of the publishers whose accounts the fixtures use, as those
/// publishers document them (Debian's cloud team, Canonical, Amazon).
const PUBLISHER_USERS: [(&str, &str); 3] = [
    ("136693071363", "admin"),
    ("099720109477", "ubuntu"),
    ("137112412989", "ec2-user"),
];

/// A machine of an instance.
#[derive(Debug, Clone)]
struct Machine {
    node: Node,
    /// The public address moto gave the instance, replaced by the node's in answers.
    moto_ip: Option<String>,
}

#[derive(Default)]
struct Data {
    /// Key pair name → its public key, as imported or made.
    keys: BTreeMap<String, String>,
    /// Instance id → its machine.
    machines: BTreeMap<String, Machine>,
    faults: Vec<RouteFault>,
    fired: FaultCounts,
    /// Calls by action.
    calls: BTreeMap<String, u32>,
}

struct Front {
    moto: String,
    local: LocalDriver,
    http: reqwest::Client,
    data: Mutex<Data>,
}

/// A running front.
pub struct FakeEc2 {
    addr: SocketAddr,
    front: Arc<Front>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEc2 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeEc2 {
    /// Starts a front on `listen` for the moto server at `moto` (its base URL), whose instances'
    /// machines are nodes of `local`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start_on(
        listen: SocketAddr,
        moto: &str,
        local: LocalDriver,
    ) -> std::io::Result<FakeEc2> {
        let front = Arc::new(Front {
            moto: moto.trim_end_matches('/').to_string(),
            local,
            http: reqwest::Client::new(),
            data: Mutex::default(),
        });
        let app = Router::new().fallback(handle).with_state(front.clone());
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeEc2 {
            addr,
            front,
            server,
        })
    }

    /// Starts a front on 127.0.0.1, a port the kernel picks.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start(moto: &str, local: LocalDriver) -> std::io::Result<FakeEc2> {
        Self::start_on(([127, 0, 0, 1], 0).into(), moto, local).await
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its `/checkip` URL (for `[provider] checkip_url`).
    pub fn checkip_url(&self) -> String {
        format!("{}/checkip", self.url())
    }

    /// The variables an AWS client needs to reach moto through this front.
    pub fn env(&self) -> Vec<(String, String)> {
        crate::moto::Moto::env_for(&self.url())
    }

    /// Replaces the faults (a [`RouteFault`]'s path is the action: `RunInstances` ...).
    pub fn set_faults(&self, faults: Vec<RouteFault>) {
        lock(&self.front.data).faults = faults;
    }

    /// How many faults fired, by kind.
    pub fn faults_fired(&self) -> FaultCounts {
        lock(&self.front.data).fired
    }

    /// How many calls each action got.
    pub fn calls(&self) -> BTreeMap<String, u32> {
        lock(&self.front.data).calls.clone()
    }

    /// The machines of the instances that exist, by instance id.
    pub fn machines(&self) -> BTreeMap<String, Node> {
        lock(&self.front.data)
            .machines
            .iter()
            .map(|(id, m)| (id.clone(), m.node.clone()))
            .collect()
    }
}

/// One request: counted, maybe faulted, passed to moto, its effects done on the machines.
async fn handle(
    State(front): State<Arc<Front>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::GET && uri.path() == "/checkip" {
        return "127.0.0.1\n".into_response();
    }
    let form = form_of(&uri, &body);
    let action = form.get("Action").cloned().unwrap_or_default();
    let fault = {
        let mut data = lock(&front.data);
        *data.calls.entry(action.clone()).or_default() += 1;
        take_fault(&mut data, &action)
    };
    if let Some(answer) = fault.and_then(refusal) {
        return answer;
    }
    if action == "ImportKeyPair" {
        remember_imported(&front, &form);
    }
    let (status, answer) = match forward(&front, &method, &uri, &headers, body).await {
        Ok(got) => got,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("moto: {e}")).into_response(),
    };
    let answer = if status.is_success() {
        effects(&front, &action, &form, &headers, answer).await
    } else {
        answer
    };
    let response = (status, [("content-type", "text/xml")], answer).into_response();
    crate::fake_ovh::deliver(fault, response).await
}

/// The request's parameters: its form body, else its query.
fn form_of(uri: &Uri, body: &[u8]) -> BTreeMap<String, String> {
    let text = if body.is_empty() {
        uri.query().unwrap_or("").as_bytes()
    } else {
        body
    };
    url::form_urlencoded::parse(text).into_owned().collect()
}

fn take_fault(data: &mut Data, action: &str) -> Option<Fault> {
    let route = data.faults.iter_mut().find(|f| f.matches("POST", action))?;
    route.times -= 1;
    let fault = route.fault;
    data.fired.count(fault);
    Some(fault)
}

/// EC2's answer for a fault that refuses the request before it is done.
fn refusal(fault: Fault) -> Option<Response> {
    let (status, code, message) = match fault {
        Fault::TooMany { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
        Fault::Error500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "An internal error has occurred",
        ),
        Fault::LoseAnswer | Fault::SlowAnswer { .. } => return None,
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>{:08x}-fake-ec2</RequestID>\
         </Response>",
        rand::random::<u32>()
    );
    Some((status, [("content-type", "text/xml")], body).into_response())
}

/// Passes the request to moto as it came.
async fn forward(
    front: &Front,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, String), reqwest::Error> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = front
        .http
        .request(method.clone(), format!("{}{path}", front.moto))
        .body(body);
    for (name, value) in headers {
        if !matches!(name.as_str(), "host" | "content-length") {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::OK);
    Ok((status, answer.text().await?))
}

/// Records the public key of an imported key pair.
fn remember_imported(front: &Front, form: &BTreeMap<String, String>) {
    let (Some(name), Some(material)) = (form.get("KeyName"), form.get("PublicKeyMaterial")) else {
        return;
    };
    if let Ok(key) = base64::engine::general_purpose::STANDARD.decode(material) {
        let key = String::from_utf8_lossy(&key).trim().to_string();
        lock(&front.data).keys.insert(name.clone(), key);
    }
}

/// What a successful action does beyond moto: machines made, acted on, addresses shown.
async fn effects(
    front: &Front,
    action: &str,
    form: &BTreeMap<String, String>,
    headers: &HeaderMap,
    answer: String,
) -> String {
    match action {
        "RunInstances" => launched(front, form, headers, &answer).await,
        "CreateKeyPair" => made_key(front, &answer),
        "TerminateInstances" | "StopInstances" | "StartInstances" | "RebootInstances" => {
            power(front, action, form).await
        }
        _ => {}
    }
    with_node_addresses(front, answer)
}

/// Every instance's public address (moto's) replaced by its machine's.
fn with_node_addresses(front: &Front, mut answer: String) -> String {
    for machine in lock(&front.data).machines.values() {
        let (Some(moto_ip), Some(ip)) = (&machine.moto_ip, machine.node.public_ips.first()) else {
            continue;
        };
        answer = answer.replace(&format!(">{moto_ip}<"), &format!(">{ip}<"));
    }
    answer
}

/// Records the public key of a key pair moto made.
fn made_key(front: &Front, answer: &str) {
    let (Some(name), Some(material)) = (element(answer, "keyName"), element(answer, "keyMaterial"))
    else {
        return;
    };
    let material = material.replace("&#10;", "\n");
    if let Ok(key) = russh::keys::decode_secret_key(&material, None) {
        if let Ok(public) = key.public_key().to_openssh() {
            lock(&front.data).keys.insert(name, public);
        }
    }
}

/// The text of the first element `name` of a document.
fn element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{name}>"))? + start;
    Some(text[start..end].to_string())
}

/// Every `<item>` of `instancesSet`, as (instance id, image id, key name, moto's address).
fn launched_instances(answer: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
    answer
        .split("<instanceId>")
        .skip(1)
        .filter_map(|rest| {
            let id = rest.split("</instanceId>").next()?.to_string();
            let after = &rest[id.len()..];
            let image = element(after, "imageId")?;
            Some((id, image, None, element(after, "ipAddress")))
        })
        .collect()
}

/// Makes a machine for each instance a `RunInstances` launched.
async fn launched(
    front: &Front,
    form: &BTreeMap<String, String>,
    headers: &HeaderMap,
    answer: &str,
) {
    let key = form
        .get("KeyName")
        .and_then(|name| lock(&front.data).keys.get(name).cloned());
    for (id, image, _, moto_ip) in launched_instances(answer) {
        let user = image_user(front, headers, &image).await;
        let mut extra = BTreeMap::new();
        if let Some(user) = user {
            extra.insert("login_user".to_string(), serde_json::Value::from(user));
        }
        let request = CreateNode {
            name: id.clone(),
            image: Some(
                if user.is_some() {
                    "cloud-debian"
                } else {
                    "debian"
                }
                .into(),
            ),
            auth: key.clone().map(NodeAuth::SshKey),
            extra,
            ..Default::default()
        };
        match front.local.create_node(&request).await {
            Ok(node) => {
                let machine = Machine { node, moto_ip };
                lock(&front.data).machines.insert(id, machine);
            }
            Err(e) => eprintln!("fake-ec2: making instance {id}'s machine: {e}"),
        }
    }
}

/// The login user of an image's publisher, asking moto who published it.
async fn image_user(front: &Front, headers: &HeaderMap, image: &str) -> Option<&'static str> {
    let mut request = front
        .http
        .post(format!("{}/", front.moto))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "Action=DescribeImages&Version=2016-11-15&ImageId.1={image}"
        ));
    if let Some(auth) = headers.get("authorization") {
        request = request.header("authorization", auth);
    }
    let text = request.send().await.ok()?.text().await.ok()?;
    let owner = element(&text, "imageOwnerId")?;
    PUBLISHER_USERS
        .iter()
        .find(|(o, _)| *o == owner)
        .map(|(_, user)| *user)
}

/// Does to the machines what the action did to the instances.
async fn power(front: &Front, action: &str, form: &BTreeMap<String, String>) {
    let ids: Vec<&String> = form
        .iter()
        .filter(|(k, _)| k.starts_with("InstanceId."))
        .map(|(_, v)| v)
        .collect();
    for id in ids {
        let machine = lock(&front.data).machines.get(id).cloned();
        let Some(machine) = machine else { continue };
        let done = match action {
            "TerminateInstances" => {
                lock(&front.data).machines.remove(id);
                front.local.destroy_node(&machine.node).await
            }
            "StopInstances" => front.local.stop_node(&machine.node).await,
            "StartInstances" => front.local.start_node(&machine.node).await,
            _ => front.local.reboot_node(&machine.node).await,
        };
        if let Err(e) = done {
            eprintln!("fake-ec2: {action} on {id}'s machine: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launched_instances_are_read_from_moto_s_answer() {
        let answer = "<instancesSet><item><instanceId>i-1</instanceId><imageId>ami-1</imageId>\
                      <ipAddress>54.1.2.3</ipAddress></item><item><instanceId>i-2</instanceId>\
                      <imageId>ami-2</imageId></item></instancesSet>";
        let found = launched_instances(answer);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, "i-1");
        assert_eq!(found[0].3.as_deref(), Some("54.1.2.3"));
        assert_eq!(found[1].1, "ami-2");
    }
}
