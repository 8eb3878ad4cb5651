//! A faithful fake of NephoScale's API, on 127.0.0.1, over its own state.
//!
//! It checks HTTP Basic auth on every request (401 with an envelope otherwise), requires the
//! trailing slash and form-encoded writes as NephoScale does, and answers in NephoScale's envelope:
//! the zones, images and sizes are Libcloud's recorded answers (`testbed/fixtures/nephoscale`)
//! verbatim. A create answers a job (202); its server is listed only once the job ran
//! (`job_delay`), its power `unknown` until it booted (`build_time`), then `on`. Each server is a
//! local node of the test bed (image `debian`: root logs in with the server key); restart, stop
//! and start act on it, DELETE destroys it. Faults: slow answers, and per-route 500s, lost
//! answers (after the request was done) and held answers; each one that fires is counted.

// Handlers answer early with an error `Response`; it is large by nature.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use nodeup::driver::NodeDriver;
use nodeup::model::{CreateNode, Node, NodeAuth};
use nodeup::providers::local::LocalDriver;
use serde_json::{json, Value};

pub use crate::fake_ovh::{Fault, FaultCounts, RouteFault};

const ZONES: &str = include_str!("../fixtures/nephoscale/list_locations.json");
const IMAGES: &str = include_str!("../fixtures/nephoscale/list_images.json");
const SIZES: &str = include_str!("../fixtures/nephoscale/list_sizes.json");

/// The message of every successful envelope.
const PROCESSED: &str = "Your request was processed successfully.";

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct NephoConfig {
    /// How long a create job takes before its server is listed.
    pub job_delay: Duration,
    /// How long after it is listed a server's power is `unknown` before `on`.
    pub build_time: Duration,
    /// Every answer waits this long.
    pub slow: Duration,
    /// Faults on given routes (path patterns as [`RouteFault`] matches them), first match fires.
    pub routes: Vec<RouteFault>,
    /// The account's user name and password; made up at random when `None`.
    pub account: Option<(String, String)>,
}

impl Default for NephoConfig {
    fn default() -> Self {
        NephoConfig {
            job_delay: Duration::from_millis(400),
            build_time: Duration::from_millis(300),
            slow: Duration::ZERO,
            routes: Vec::new(),
            account: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Server {
    id: u64,
    name: String,
    hostname: String,
    zone: Value,
    image: Value,
    size: Value,
    server_key: Option<u64>,
    console_key: Option<u64>,
    listed: Instant,
    created_at: String,
    stopped: bool,
    node: Option<Node>,
}

#[derive(Debug, Clone)]
struct Key {
    id: u64,
    name: String,
    group: u64,
    public_key: Option<String>,
    password: Option<String>,
    created_at: String,
}

#[derive(Default)]
struct Data {
    servers: Vec<Server>,
    keys: Vec<Key>,
    next_id: u64,
    fired: FaultCounts,
    creates: u32,
}

struct Fake {
    username: String,
    password: String,
    config: Mutex<NephoConfig>,
    data: Mutex<Data>,
    driver: LocalDriver,
}

type Shared = Arc<Fake>;

/// A running fake NephoScale API; dropping it stops the server.
pub struct FakeNephoScale {
    addr: SocketAddr,
    fake: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNephoScale {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeNephoScale {
    /// Starts the fake on `listen` (port 0: one the kernel picks); its servers are nodes of
    /// `driver`.
    pub async fn start_on(
        listen: SocketAddr,
        driver: LocalDriver,
        config: NephoConfig,
    ) -> std::io::Result<FakeNephoScale> {
        let (username, password) = config.account.clone().unwrap_or_else(|| {
            (
                format!("user{:06}", rand::random::<u32>() % 1_000_000),
                format!("{:016x}", rand::random::<u64>()),
            )
        });
        let fake = Arc::new(Fake {
            username,
            password,
            config: Mutex::new(config),
            data: Mutex::new(Data {
                next_id: 90_000,
                ..Data::default()
            }),
            driver,
        });
        let app = Router::new().fallback(dispatch).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeNephoScale { addr, fake, server })
    }

    /// Starts the fake on 127.0.0.1, a port the kernel picks.
    pub async fn start(driver: LocalDriver, config: NephoConfig) -> std::io::Result<Self> {
        Self::start_on(([127, 0, 0, 1], 0).into(), driver, config).await
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The environment a client needs.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "NEPHOSCALE_ENDPOINT".into(),
                format!("http://{}", self.addr),
            ),
            ("NEPHOSCALE_USERNAME".into(), self.fake.username.clone()),
            ("NEPHOSCALE_PASSWORD".into(), self.fake.password.clone()),
        ]
    }

    /// Replaces the per-route faults.
    pub fn set_faults(&self, routes: Vec<RouteFault>) {
        lock(&self.fake.config).routes = routes;
    }

    /// How many faults fired, by kind.
    pub fn faults_fired(&self) -> FaultCounts {
        lock(&self.fake.data).fired
    }

    /// The names of the servers listed (and of those whose job is still running).
    pub fn server_names(&self) -> Vec<String> {
        lock(&self.fake.data)
            .servers
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// How many `POST /server/cloud/` were accepted.
    pub fn creates(&self) -> u32 {
        lock(&self.fake.data).creates
    }

    /// The names of the keys (SSH and console) the account holds.
    pub fn key_names(&self) -> Vec<String> {
        lock(&self.fake.data)
            .keys
            .iter()
            .map(|k| k.name.clone())
            .collect()
    }

    /// The local node behind a server, by the server's name.
    pub fn node_of(&self, name: &str) -> Option<Node> {
        lock(&self.fake.data)
            .servers
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.node.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// An envelope: NephoScale's answer to everything.
fn envelope(status: StatusCode, data: Value, message: &str) -> Response {
    let success = status.is_success();
    let mut body = json!({
        "success": success,
        "subcode": 0,
        "message": message,
        "data": data,
        "response": status.as_u16(),
    });
    if let Some(list) = body["data"].as_array() {
        body["total_count"] = list.len().into();
    }
    (status, Json(body)).into_response()
}

fn ok(data: Value) -> Response {
    envelope(StatusCode::OK, data, PROCESSED)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    envelope(status, json!({}), message)
}

/// A fixture's envelope, exactly as recorded.
fn recorded(text: &'static str) -> Response {
    (StatusCode::OK, [("content-type", "application/json")], text).into_response()
}

fn fixture_data(text: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["data"].as_array().cloned())
        .unwrap_or_default()
}

fn authorized(fake: &Fake, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let expected = format!("{}:{}", fake.username, fake.password);
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .is_ok_and(|d| d == expected.as_bytes())
}

/// Every request: slowness, credentials, trailing slash, faults, then the route.
async fn dispatch(State(fake): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return refuse(StatusCode::BAD_REQUEST, "Request body too large");
    };
    let config = lock(&fake.config).clone();
    if !config.slow.is_zero() {
        tokio::time::sleep(config.slow).await;
    }
    if !authorized(&fake, &parts.headers) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Authentication failed: invalid username or password",
        );
    }
    let path = parts.uri.path().to_string();
    if !path.ends_with('/') {
        return refuse(
            StatusCode::NOT_FOUND,
            &format!("The URL {path} was not found (NephoScale's URLs end with a slash)"),
        );
    }
    let fault = pick_fault(&fake, parts.method.as_str(), &path);
    if fault == Some(Fault::Error500) {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    }
    let form = match form_of(&parts.method, &parts.headers, &bytes) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let answer = route(&fake, &parts.method, &path, &form).await;
    crate::fake_ovh::deliver(fault, answer).await
}

/// The fault that fires for this request, if any, counted.
fn pick_fault(fake: &Fake, method: &str, path: &str) -> Option<Fault> {
    let fault = crate::fake_ovh::take(&mut lock(&fake.config).routes, method, path)?;
    lock(&fake.data).fired.count(fault);
    Some(fault)
}

/// A write's form fields. The body is read as a form whether or not it says so: Libcloud's
/// driver never sent a `Content-Type` with its form bodies, and the API took them. A body that
/// says it is something else (JSON) is refused. Python's `None`, which Libcloud's driver wrote
/// for an argument not given (`zone=None`, `server_key=None`), counts as not given, as the API
/// took it.
fn form_of(
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<BTreeMap<String, String>, Response> {
    if *method != Method::POST && *method != Method::PUT {
        return Ok(BTreeMap::new());
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let form_like = content_type.is_empty()
        || content_type.starts_with("application/x-www-form-urlencoded")
        || content_type.starts_with("text/plain");
    if !body.is_empty() && !form_like {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "The request body must be form-encoded (application/x-www-form-urlencoded)",
        ));
    }
    Ok(url::form_urlencoded::parse(body)
        .into_owned()
        .filter(|(_, value)| value != "None" && !value.is_empty())
        .collect())
}

async fn route(
    fake: &Shared,
    method: &Method,
    path: &str,
    form: &BTreeMap<String, String>,
) -> Response {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["datacenter", "zone"]) => recorded(ZONES),
        ("GET", ["image", "server"]) => recorded(IMAGES),
        ("GET", ["server", "type", "cloud"]) => recorded(SIZES),
        ("GET", ["server", "cloud"]) => list_servers(fake),
        ("POST", ["server", "cloud"]) => create_server(fake, form),
        ("PUT", ["server", "cloud", id]) => rename_server(fake, id, form),
        ("DELETE", ["server", "cloud", id]) => delete_server(fake, id).await,
        ("POST", ["server", "cloud", id, "initiator", action]) => initiate(fake, id, action).await,
        ("GET", ["key"]) => list_keys(fake, None),
        ("GET", ["key", "sshrsa"]) => list_keys(fake, Some(1)),
        ("GET", ["key", "password"]) => list_keys(fake, Some(4)),
        ("POST", ["key", kind @ ("sshrsa" | "password")]) => create_key(fake, kind, form),
        ("DELETE", ["key", kind @ ("sshrsa" | "password"), id]) => delete_key(fake, kind, id),
        _ => refuse(
            StatusCode::NOT_FOUND,
            &format!("The URL {path} was not found"),
        ),
    }
}

fn server_json(server: &Server, build_time: Duration) -> Value {
    let ip = server
        .node
        .as_ref()
        .and_then(|n| n.public_ips.first())
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let private = format!("10.128.{}.{}", (server.id / 250) % 250, server.id % 250 + 2);
    let power = match (server.stopped, server.listed.elapsed() >= build_time) {
        (true, _) => "off",
        (false, true) => "on",
        (false, false) => "unknown",
    };
    let key = |id: u64, group: u64, kind: &str| {
        json!({"id": id, "key_group": group, "key_type": if group == 1 { 2 } else { 1 },
               "uri": format!("https://api.nephoscale.com/key/{kind}/{id}/")})
    };
    json!({
        "id": server.id,
        "name": server.name,
        "hostname": server.hostname,
        "uri": format!("https://api.nephoscale.com/server/cloud/{}/", server.id),
        "ipaddresses": format!("{ip}, {private}"),
        "power_status": power,
        "create_time": server.created_at,
        "postinit_state": 1,
        "podzone": "P1A2",
        "zone": server.zone,
        "image": server.image,
        "service_type": server.size,
        "server_keys": server.server_key.map(|k| vec![key(k, 1, "sshrsa")]).unwrap_or_default(),
        "console_keys": server.console_key.map(|k| vec![key(k, 4, "password")]).unwrap_or_default(),
        "is_console_enabled": true,
    })
}

fn list_servers(fake: &Fake) -> Response {
    let build_time = lock(&fake.config).build_time;
    let data = lock(&fake.data);
    let listed: Vec<Value> = data
        .servers
        .iter()
        .filter(|s| s.node.is_some())
        .map(|s| server_json(s, build_time))
        .collect();
    ok(listed.into())
}

/// Finds a catalog entry by the id a form field gives.
fn by_id(list: &[Value], field: Option<&String>) -> Option<Value> {
    let id: u64 = field?.parse().ok()?;
    list.iter().find(|v| v["id"] == id).cloned()
}

fn create_server(fake: &Shared, form: &BTreeMap<String, String>) -> Response {
    // No zone: the account's first (NephoScale's default datacenter).
    let zones = fixture_data(ZONES);
    let zone = match form.get("zone") {
        Some(_) => by_id(&zones, form.get("zone")),
        None => zones.first().cloned(),
    };
    let image = by_id(&fixture_data(IMAGES), form.get("image"));
    let size = by_id(&fixture_data(SIZES), form.get("service_type"));
    let (Some(zone), Some(image), Some(size)) = (zone, image, size) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Invalid zone, image or service_type: give the id of one that exists",
        );
    };
    let name = form.get("name").cloned().unwrap_or_default();
    if name.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "name is required");
    }
    let mut data = lock(&fake.data);
    let key_of = |field: &str, group: u64| -> Result<Option<u64>, Response> {
        let Some(text) = form.get(field) else {
            return Ok(None);
        };
        let id: Option<u64> = text.parse().ok();
        match id.filter(|id| data.keys.iter().any(|k| k.id == *id && k.group == group)) {
            Some(id) => Ok(Some(id)),
            None => Err(refuse(
                StatusCode::BAD_REQUEST,
                &format!("Invalid {field}: no such key"),
            )),
        }
    };
    let server_key = match key_of("server_key", 1) {
        Ok(k) => k,
        Err(refused) => return refused,
    };
    // Without a console key the server has no console access (NephoScale made none).
    let console_key = match key_of("console_key", 4) {
        Ok(k) => k,
        Err(refused) => return refused,
    };
    let public_key = server_key.and_then(|id| {
        data.keys
            .iter()
            .find(|k| k.id == id)
            .and_then(|k| k.public_key.clone())
    });
    data.next_id += 1;
    let id = data.next_id;
    data.next_id += 1;
    let job = data.next_id;
    data.creates += 1;
    let server = Server {
        id,
        hostname: form.get("hostname").cloned().unwrap_or(name.clone()),
        name,
        zone,
        image,
        size,
        server_key,
        console_key,
        listed: Instant::now(),
        created_at: now_text(),
        stopped: false,
        node: None,
    };
    data.servers.push(server);
    drop(data);
    tokio::spawn(run_job(fake.clone(), id, public_key));
    envelope(
        StatusCode::ACCEPTED,
        json!({"id": job, "resource_type": "/job",
               "uri": format!("https://api.nephoscale.com/job/{job}/")}),
        PROCESSED,
    )
}

/// The create job: after the job's delay, the server's machine is made and it is listed.
async fn run_job(fake: Shared, id: u64, public_key: Option<String>) {
    let delay = lock(&fake.config).job_delay;
    tokio::time::sleep(delay).await;
    let node = fake
        .driver
        .create_node(&CreateNode {
            name: format!("nephoscale-{id}"),
            image: Some("debian".into()),
            auth: public_key.map(NodeAuth::SshKey),
            ..Default::default()
        })
        .await;
    let node = match node {
        Ok(node) => node,
        Err(e) => {
            eprintln!("fake-nephoscale: creating server {id}'s machine: {e}");
            lock(&fake.data).servers.retain(|s| s.id != id);
            return;
        }
    };
    let orphan = {
        let mut data = lock(&fake.data);
        match data.servers.iter_mut().find(|s| s.id == id) {
            Some(server) => {
                server.node = Some(node);
                server.listed = Instant::now();
                None
            }
            // Deleted while the job ran.
            None => Some(node),
        }
    };
    if let Some(node) = orphan {
        let _ = fake.driver.destroy_node(&node).await;
    }
}

fn find_listed<'a>(data: &'a mut Data, id: &str) -> Option<&'a mut Server> {
    let id: u64 = id.parse().ok()?;
    data.servers
        .iter_mut()
        .find(|s| s.id == id && s.node.is_some())
}

fn no_server(id: &str) -> Response {
    refuse(StatusCode::NOT_FOUND, &format!("Server {id} not found"))
}

fn rename_server(fake: &Fake, id: &str, form: &BTreeMap<String, String>) -> Response {
    let build_time = lock(&fake.config).build_time;
    let mut data = lock(&fake.data);
    let Some(server) = find_listed(&mut data, id) else {
        return no_server(id);
    };
    if let Some(name) = form.get("name").filter(|n| !n.is_empty()) {
        server.name = name.clone();
    }
    if let Some(hostname) = form.get("hostname").filter(|n| !n.is_empty()) {
        server.hostname = hostname.clone();
    }
    ok(server_json(server, build_time))
}

async fn delete_server(fake: &Fake, id: &str) -> Response {
    let node = {
        let mut data = lock(&fake.data);
        let Some(server) = find_listed(&mut data, id) else {
            return no_server(id);
        };
        let node = server.node.take();
        let sid = server.id;
        data.servers.retain(|s| s.id != sid);
        node
    };
    if let Some(node) = node {
        if let Err(e) = fake.driver.destroy_node(&node).await {
            eprintln!("fake-nephoscale: destroying server {id}'s machine: {e}");
        }
    }
    job_answer(fake)
}

fn job_answer(fake: &Fake) -> Response {
    let job = {
        let mut data = lock(&fake.data);
        data.next_id += 1;
        data.next_id
    };
    envelope(
        StatusCode::ACCEPTED,
        json!({"id": job, "resource_type": "/job",
               "uri": format!("https://api.nephoscale.com/job/{job}/")}),
        PROCESSED,
    )
}

async fn initiate(fake: &Fake, id: &str, action: &str) -> Response {
    let node = {
        let mut data = lock(&fake.data);
        let Some(server) = find_listed(&mut data, id) else {
            return no_server(id);
        };
        match action {
            "stop" => server.stopped = true,
            "start" | "restart" => server.stopped = false,
            _ => return refuse(StatusCode::NOT_FOUND, &format!("No initiator {action}")),
        }
        server.node.clone()
    };
    if let Some(node) = node {
        let done = match action {
            "stop" => fake.driver.stop_node(&node).await,
            "start" => fake.driver.start_node(&node).await,
            _ => fake.driver.reboot_node(&node).await,
        };
        if let Err(e) = done {
            eprintln!("fake-nephoscale: {action} server {id}: {e}");
        }
    }
    job_answer(fake)
}

fn key_json(key: &Key) -> Value {
    let kind = if key.group == 1 { "sshrsa" } else { "password" };
    let mut value = json!({
        "id": key.id,
        "name": key.name,
        "key_group": key.group,
        "key_type": if key.group == 1 { 2 } else { 1 },
        "create_time": key.created_at,
        "uri": format!("https://api.nephoscale.com/key/{kind}/{}/", key.id),
    });
    if let Some(public) = &key.public_key {
        value["public_key"] = public.clone().into();
    }
    if let Some(password) = &key.password {
        value["password"] = password.clone().into();
    }
    value
}

fn list_keys(fake: &Fake, group: Option<u64>) -> Response {
    let data = lock(&fake.data);
    let keys: Vec<Value> = data
        .keys
        .iter()
        .filter(|k| group.is_none_or(|g| g == k.group))
        .map(|k| {
            let mut v = key_json(k);
            // `/key/` lists every key without its secret or its public half.
            if group.is_none() {
                if let Some(o) = v.as_object_mut() {
                    o.remove("public_key");
                    o.remove("password");
                }
            }
            v
        })
        .collect();
    ok(keys.into())
}

fn create_key(fake: &Fake, kind: &str, form: &BTreeMap<String, String>) -> Response {
    let (group, field) = if kind == "sshrsa" {
        (1, "public_key")
    } else {
        (4, "password")
    };
    let name = form.get("name").cloned().unwrap_or_default();
    let secret = form.get(field).cloned().unwrap_or_default();
    if name.is_empty() || secret.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("name and {field} are required"),
        );
    }
    if form.get("key_group").map(String::as_str) != Some(&group.to_string()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("key_group must be {group} for {kind} keys"),
        );
    }
    if group == 1 && !secret.starts_with("ssh-") && !secret.starts_with("ecdsa-") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "public_key is not an SSH public key",
        );
    }
    let mut data = lock(&fake.data);
    if data.keys.iter().any(|k| k.name == name && k.group == group) {
        return refuse(
            StatusCode::CONFLICT,
            &format!("A key named {name} exists already"),
        );
    }
    data.next_id += 1;
    let id = data.next_id;
    data.keys.push(Key {
        id,
        name,
        group,
        public_key: (group == 1).then(|| secret.clone()),
        password: (group == 4).then_some(secret),
        created_at: now_text(),
    });
    envelope(
        StatusCode::CREATED,
        json!({"id": id, "resource_type": format!("/key/{kind}"),
               "uri": format!("https://api.nephoscale.com/key/{kind}/{id}/")}),
        PROCESSED,
    )
}

fn delete_key(fake: &Fake, kind: &str, id: &str) -> Response {
    let group = if kind == "sshrsa" { 1 } else { 4 };
    let mut data = lock(&fake.data);
    let before = data.keys.len();
    data.keys
        .retain(|k| !(k.id.to_string() == id && k.group == group));
    if data.keys.len() == before {
        return refuse(StatusCode::NOT_FOUND, &format!("Key {id} not found"));
    }
    drop(data);
    job_answer(fake)
}
