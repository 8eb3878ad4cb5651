//! `fake-ec2`: a front for moto's EC2 API that gives its instances machines. moto answers every
//! request (it was written by others from AWS's behaviour); this front passes each one through
//! unchanged and only: on `RunInstances`, makes a local node for each instance (a `cloud-debian`
//! node whose login user is the one the image's publisher uses, with the key pair's public key)
//! and reports that node's address as the instance's public address in every answer that shows
//! it; on `StopInstances`, `StartInstances`, `RebootInstances` and `TerminateInstances`, does the
//! same to the node. It also counts the calls by action, serves `/checkip` (this machine's
//! address as AWS's checkip service answers it), and injects faults per action: EC2's throttling
//! (`RequestLimitExceeded`, 503), 500s, and answers lost after moto acted.
//!
//! Two things moto does not do as EC2 does are done here, so that Libcloud's EC2 driver gets
//! EC2's answers: requests signed with Signature Version 2 ([`crate::sigv2`]) are checked and
//! passed on, and answers carry EC2's namespace (`.../doc/2016-11-15/`, with the slash moto
//! leaves out).

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

/// The XML namespace of moto's EC2 answers: botocore's model spells it without a trailing slash.
const MOTO_NAMESPACE: &str = "xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15\"";

/// The namespace EC2 answers in, with the slash: Libcloud's parser finds elements by it.
const EC2_NAMESPACE: &str = "xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"";

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
    /// Held for writing while moto launches and the launch's machines are matched to its
    /// instances, for reading by every other call: no answer shows an instance before its
    /// machine is known.
    gate: tokio::sync::RwLock<()>,
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
            gate: tokio::sync::RwLock::new(()),
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
    let call = Call::new(method, uri, headers, body);
    let form: BTreeMap<String, String> = call.params.iter().cloned().collect();
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
    let (status, answer) = if action == "RunInstances" {
        match launch(&front, &call, &form).await {
            Ok(got) => got,
            Err(e) => return (StatusCode::BAD_GATEWAY, format!("moto: {e}")).into_response(),
        }
    } else {
        let _reading = front.gate.read().await;
        let (status, answer) = match forward(&front, &call).await {
            Ok(got) => got,
            Err(e) => return (StatusCode::BAD_GATEWAY, format!("moto: {e}")).into_response(),
        };
        if status.is_success() {
            effects(&front, &action, &form, &answer).await;
        }
        (status, with_node_addresses(&front, answer))
    };
    let answer = answer.replacen(MOTO_NAMESPACE, EC2_NAMESPACE, 1);
    let response = (status, [("content-type", "text/xml")], answer).into_response();
    crate::fake_ovh::deliver(fault, response).await
}

/// `RunInstances`: the machines are made first (as many as `MaxCount`), then moto launches and
/// each instance gets one (behind the write gate); machines left over are destroyed.
async fn launch(
    front: &Front,
    call: &Call,
    form: &BTreeMap<String, String>,
) -> Result<(StatusCode, String), reqwest::Error> {
    let mut ready = machines_for(front, form).await;
    let got = {
        let _writing = front.gate.write().await;
        let got = forward(front, call).await;
        if let Ok((status, answer)) = &got {
            if status.is_success() {
                attach(front, &mut ready, answer);
            }
        }
        got
    };
    for node in ready {
        let _ = front.local.destroy_node(&node).await;
    }
    let (status, answer) = got?;
    Ok((status, with_node_addresses(front, answer)))
}

/// A request as it came, with its parameters (its form body, else its query) read once.
struct Call {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// The parameters in their order (a Version 2 signature covers them all).
    params: Vec<(String, String)>,
}

impl Call {
    fn new(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Call {
        let text = if body.is_empty() {
            uri.query().unwrap_or("").as_bytes()
        } else {
            &body
        };
        let params = url::form_urlencoded::parse(text).into_owned().collect();
        Call {
            method,
            uri,
            headers,
            body,
            params,
        }
    }
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
    let (status, body) = ec2_error(status.as_u16(), code, message);
    Some((status, [("content-type", "text/xml")], body).into_response())
}

/// Passes the request to moto as it came; one signed with Version 2 (see [`crate::sigv2`]) is
/// checked here and passed on signed with SigV4, the way moto's server routes to EC2.
async fn forward(front: &Front, call: &Call) -> Result<(StatusCode, String), reqwest::Error> {
    let request = if crate::sigv2::is_v2(&call.params) {
        match v2_request(front, call) {
            Ok(request) => request,
            Err((status, code, message)) => return Ok(ec2_error(status, code, &message)),
        }
    } else {
        let path = call.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = front
            .http
            .request(call.method.clone(), format!("{}{path}", front.moto))
            .body(call.body.clone());
        for (name, value) in &call.headers {
            if !matches!(name.as_str(), "host" | "content-length") {
                request = request.header(name, value);
            }
        }
        request
    };
    let answer = request.send().await?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::OK);
    Ok((status, answer.text().await?))
}

/// A Version 2 request, its signature checked, as the SigV4 request moto takes.
fn v2_request(
    front: &Front,
    call: &Call,
) -> Result<reqwest::RequestBuilder, crate::sigv2::Refusal> {
    let host = call
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let path = call.uri.path();
    let checked = crate::sigv2::check(call.method.as_str(), host, path, &call.params, |id| {
        (id == crate::moto::ACCESS_KEY_ID).then(|| crate::moto::SECRET_ACCESS_KEY.to_string())
    })?;
    let url = format!("{}/", front.moto);
    let (body, signed) = crate::sigv2::resign(&checked, &url, crate::moto::REGION)
        .map_err(|e| (500, "InternalError", e))?;
    let mut request = front.http.post(url).body(body);
    for (name, value) in signed {
        request = request.header(name, value);
    }
    Ok(request)
}

/// An error answer as EC2 words it.
fn ec2_error(status: u16, code: &str, message: &str) -> (StatusCode, String) {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>{:08x}-fake-ec2</RequestID>\
         </Response>",
        rand::random::<u32>()
    );
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body,
    )
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

/// What a successful action other than a launch does beyond moto: key pairs remembered,
/// machines acted on.
async fn effects(front: &Front, action: &str, form: &BTreeMap<String, String>, answer: &str) {
    match action {
        "CreateKeyPair" => made_key(front, answer),
        "TerminateInstances" | "StopInstances" | "StartInstances" | "RebootInstances" => {
            power(front, action, form).await
        }
        _ => {}
    }
}

/// The elements that show an instance's public address.
const ADDRESS_ELEMENTS: [&str; 2] = ["ipAddress", "publicIp"];

/// Every instance's public address (moto's) replaced by its machine's, and any other public
/// address moto made up left out: no client of the fake is ever sent to an address off this
/// machine.
fn with_node_addresses(front: &Front, mut answer: String) -> String {
    for machine in lock(&front.data).machines.values() {
        let (Some(moto_ip), Some(ip)) = (&machine.moto_ip, machine.node.public_ips.first()) else {
            continue;
        };
        answer = answer.replace(&format!(">{moto_ip}<"), &format!(">{ip}<"));
    }
    for name in ADDRESS_ELEMENTS {
        answer = without_outside(&answer, name);
    }
    answer
}

/// `answer` without its elements `name` whose address is not a loopback one.
fn without_outside(answer: &str, name: &str) -> String {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = String::with_capacity(answer.len());
    let mut rest = answer;
    while let Some(start) = rest.find(&open) {
        let Some(len) = rest[start..].find(&close) else {
            break;
        };
        let value = &rest[start + open.len()..start + len];
        let loopback = value
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
        out.push_str(&rest[..start]);
        if loopback {
            out.push_str(&rest[start..start + len + close.len()]);
        }
        rest = &rest[start + len + close.len()..];
    }
    out.push_str(rest);
    out
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

/// Every `<item>` of `instancesSet`, as (instance id, moto's public address).
fn launched_instances(answer: &str) -> Vec<(String, Option<String>)> {
    answer
        .split("<instanceId>")
        .skip(1)
        .filter_map(|rest| {
            let id = rest.split("</instanceId>").next()?.to_string();
            let after = &rest[id.len()..];
            let next = after.find("<instanceId>").unwrap_or(after.len());
            Some((id, element(&after[..next], "ipAddress")))
        })
        .collect()
}

/// The most instances a `RunInstances` may launch here.
const MAX_LAUNCH: usize = 20;

/// A machine for each instance a `RunInstances` may launch (`MaxCount`), with the image's
/// publisher's login user and the key pair's public key.
async fn machines_for(front: &Front, form: &BTreeMap<String, String>) -> Vec<Node> {
    let count = form
        .get("MaxCount")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_LAUNCH);
    let key = form
        .get("KeyName")
        .and_then(|name| lock(&front.data).keys.get(name).cloned());
    let user = match form.get("ImageId") {
        Some(image) => image_user(front, image).await,
        None => None,
    };
    let mut extra = BTreeMap::new();
    if let Some(user) = user {
        extra.insert("login_user".to_string(), serde_json::Value::from(user));
    }
    let image = if user.is_some() {
        "cloud-debian"
    } else {
        "debian"
    };
    let mut nodes = Vec::new();
    for _ in 0..count {
        let request = CreateNode {
            name: format!("ec2-{:08x}", rand::random::<u32>()),
            image: Some(image.into()),
            auth: key.clone().map(NodeAuth::SshKey),
            extra: extra.clone(),
            ..Default::default()
        };
        match front.local.create_node(&request).await {
            Ok(node) => nodes.push(node),
            Err(e) => eprintln!("fake-ec2: making an instance's machine: {e}"),
        }
    }
    nodes
}

/// Gives each instance moto launched one of the `ready` machines.
fn attach(front: &Front, ready: &mut Vec<Node>, answer: &str) {
    let mut data = lock(&front.data);
    for (id, moto_ip) in launched_instances(answer) {
        let Some(node) = ready.pop() else {
            eprintln!("fake-ec2: no machine for instance {id}");
            continue;
        };
        data.machines.insert(id, Machine { node, moto_ip });
    }
}

/// The login user of an image's publisher, asking moto who published it (with moto's test
/// credentials: the front serves moto while it checks none).
async fn image_user(front: &Front, image: &str) -> Option<&'static str> {
    let url = format!("{}/", front.moto);
    let params = [
        ("Action", "DescribeImages"),
        ("Version", "2016-11-15"),
        ("ImageId.1", image),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let key = (crate::moto::ACCESS_KEY_ID, crate::moto::SECRET_ACCESS_KEY);
    let (body, headers) =
        crate::sigv2::sign_v4_form(&url, crate::moto::REGION, key, &params).ok()?;
    let mut request = front.http.post(url).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
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
        assert_eq!(found[0].1.as_deref(), Some("54.1.2.3"));
        assert_eq!((found[1].0.as_str(), found[1].1.as_deref()), ("i-2", None));
    }

    #[test]
    fn addresses_off_this_machine_are_left_out() {
        let answer = "<item><ipAddress>54.1.2.3</ipAddress><x/><ipAddress>127.100.0.2</ipAddress>\
                      <association><publicIp>54.1.2.3</publicIp></association></item>";
        let kept = without_outside(&without_outside(answer, "ipAddress"), "publicIp");
        assert_eq!(
            kept,
            "<item><x/><ipAddress>127.100.0.2</ipAddress><association></association></item>"
        );
    }
}
