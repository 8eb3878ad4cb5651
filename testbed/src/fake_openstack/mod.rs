//! A fake OpenStack cloud on 127.0.0.1, written from the OpenStack API reference: Keystone v3
//! (`/identity`: password and application-credential tokens that expire, the service catalog),
//! Nova (`/compute/v2.1`: servers, flavors, availability zones, key pairs, volume attachments,
//! microversions), Glance (`/image/v2`), Neutron (`/network/v2.0`: networks, ports, floating
//! IPs) and Cinder (`/volume/v3/{project}`: volumes and snapshots), laid out as devstack lays
//! them out, with each service's version documents, status codes and error bodies.
//!
//! Each server is a local node of the test bed: on the external network `Ext-Net` its address is
//! the node's; on the private network (`private_network`) it has a 10.0.0.x address only, and a
//! floating IP from `Ext-Net` is the node's address. Reboot, stop and start reach the node.
//! Faults: per-route 500s, 429s with `Retry-After`, lost and held answers; tokens that expire
//! mid-run (`token_lifetime`); builds that go to `ERROR` (`failing_builds`); a quota.

// Handlers answer early with an error `Response`; it is large by nature.
#![allow(clippy::result_large_err)]

mod cinder;
mod keystone;
mod nova;
mod services;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use nodeup::model::Node;
use nodeup::providers::local::LocalDriver;
use serde_json::{json, Value};

pub use crate::fake_ovh::{Fault, FaultCounts, RouteFault};

/// The external network's name, as OVH names its own.
pub const EXTERNAL_NETWORK: &str = "Ext-Net";

/// The private network's name, when there is one.
pub const PRIVATE_NETWORK: &str = "private";

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct OpenStackConfig {
    /// The region every endpoint of the catalog is in.
    pub region: String,
    /// How long a token lives.
    pub token_lifetime: Duration,
    /// How long a server stays in `BUILD` after its machine is up.
    pub build_time: Duration,
    /// A private network (with a router to `Ext-Net`) besides the external one: servers on it
    /// are reached through floating IPs only.
    pub private_network: bool,
    /// How many of the next builds go to `ERROR` ("No valid host was found").
    pub failing_builds: u32,
    /// The project's quota of servers.
    pub max_servers: Option<usize>,
    /// Faults on given routes (path patterns as [`RouteFault`] matches them), first match fires.
    pub routes: Vec<RouteFault>,
}

impl Default for OpenStackConfig {
    fn default() -> Self {
        OpenStackConfig {
            region: "RegionOne".into(),
            token_lifetime: Duration::from_secs(3600),
            build_time: Duration::from_millis(200),
            private_network: false,
            failing_builds: 0,
            max_servers: None,
            routes: Vec::new(),
        }
    }
}

/// The account: a user in the default domain, its project, and an application credential.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user's name.
    pub username: String,
    /// The user's id.
    pub user_id: String,
    /// The user's password.
    pub password: String,
    /// The project's name.
    pub project_name: String,
    /// The project's id.
    pub project_id: String,
    /// An application credential's id.
    pub app_credential_id: String,
    /// Its secret.
    pub app_credential_secret: String,
}

impl Account {
    fn random() -> Self {
        Account {
            username: format!("user-{}", &uuid()[..8]),
            user_id: hex_id(),
            password: hex_id(),
            project_name: format!("project-{}", &uuid()[..8]),
            project_id: hex_id(),
            app_credential_id: hex_id(),
            app_credential_secret: hex_id(),
        }
    }
}

/// A new id as OpenStack makes them (a UUID 4).
pub(crate) fn uuid() -> String {
    let n: u128 = rand::random();
    let h = format!(
        "{:032x}",
        (n & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A new id as Keystone makes them (32 hex digits).
pub(crate) fn hex_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A time as the services write it (`2026-12-05T10:00:00Z`).
pub(crate) fn time_text(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A Neutron network.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub id: String,
    pub name: String,
    pub external: bool,
    pub subnet_id: String,
    pub cidr: String,
}

/// A Neutron port (one per server and network).
#[derive(Debug, Clone)]
pub(crate) struct Port {
    pub id: String,
    pub network_id: String,
    pub device_id: String,
    pub ip: String,
    pub mac: String,
}

/// A Neutron floating IP.
#[derive(Debug, Clone)]
pub(crate) struct FloatingIp {
    pub id: String,
    pub address: String,
    pub network_id: String,
    pub port_id: Option<String>,
    pub description: String,
    pub created: SystemTime,
}

/// A Cinder volume.
#[derive(Debug, Clone)]
pub(crate) struct Volume {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub status: String,
    pub server: Option<String>,
    pub description: Option<String>,
    pub created: SystemTime,
}

/// A Cinder snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub id: String,
    pub name: Option<String>,
    pub volume_id: String,
    pub size: u64,
    pub description: Option<String>,
    pub created: SystemTime,
}

/// Everything the cloud holds.
#[derive(Default)]
pub(crate) struct Data {
    pub tokens: BTreeMap<String, SystemTime>,
    pub tokens_issued: u32,
    pub servers: Vec<nova::Server>,
    pub keypairs: Vec<nova::Keypair>,
    pub networks: Vec<Network>,
    pub ports: Vec<Port>,
    pub floating_ips: Vec<FloatingIp>,
    pub volumes: Vec<Volume>,
    pub snapshots: Vec<Snapshot>,
    pub fired: FaultCounts,
    pub creates: u32,
    pub next_private: u32,
    /// Calls by `METHOD /service/path-pattern`, for the benchmarks.
    pub calls: BTreeMap<String, u32>,
}

pub(crate) struct Fake {
    pub account: Account,
    pub config: Mutex<OpenStackConfig>,
    pub data: Mutex<Data>,
    pub driver: LocalDriver,
    /// The address the catalog and links give (the fake's own, or a relay's in front of it).
    pub base_url: Mutex<String>,
}

impl Fake {
    /// The address clients are told to use.
    pub fn base(&self) -> String {
        lock(&self.base_url).clone()
    }
}

pub(crate) type Shared = Arc<Fake>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake cloud; dropping it stops the server (the test bed destroys the machines).
pub struct FakeOpenStack {
    addr: SocketAddr,
    fake: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOpenStack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeOpenStack {
    /// Starts the fake on `listen` (port 0: one the kernel picks); its servers are nodes of
    /// `driver`.
    pub async fn start_on(
        listen: SocketAddr,
        driver: LocalDriver,
        config: OpenStackConfig,
    ) -> std::io::Result<FakeOpenStack> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let mut data = Data::default();
        data.networks.push(Network {
            id: uuid(),
            name: EXTERNAL_NETWORK.into(),
            external: true,
            subnet_id: uuid(),
            cidr: "127.0.0.0/8".into(),
        });
        if config.private_network {
            data.networks.push(Network {
                id: uuid(),
                name: PRIVATE_NETWORK.into(),
                external: false,
                subnet_id: uuid(),
                cidr: "10.0.0.0/24".into(),
            });
        }
        let fake = Arc::new(Fake {
            account: Account::random(),
            config: Mutex::new(config),
            data: Mutex::new(data),
            driver,
            base_url: Mutex::new(format!("http://{addr}")),
        });
        let app = Router::new().fallback(dispatch).with_state(fake.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeOpenStack { addr, fake, server })
    }

    /// Starts the fake on 127.0.0.1, a port the kernel picks.
    pub async fn start(driver: LocalDriver, config: OpenStackConfig) -> std::io::Result<Self> {
        Self::start_on(([127, 0, 0, 1], 0).into(), driver, config).await
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Has the catalog, the links and [`FakeOpenStack::auth_url`] give `url` (a relay in front
    /// of the fake, say) instead of the fake's own address.
    pub fn advertise(&self, url: &str) {
        *lock(&self.fake.base_url) = url.trim_end_matches('/').to_string();
    }

    /// Keystone's address (the `auth_url`).
    pub fn auth_url(&self) -> String {
        format!("{}/identity/v3", self.fake.base())
    }

    /// The account.
    pub fn account(&self) -> &Account {
        &self.fake.account
    }

    /// The region.
    pub fn region(&self) -> String {
        lock(&self.fake.config).region.clone()
    }

    /// A `clouds.yaml` with an entry `name` for the user's password (`password_auth`) or the
    /// application credential.
    pub fn clouds_yaml(&self, name: &str, password_auth: bool) -> String {
        let a = &self.fake.account;
        let auth = if password_auth {
            format!(
                "      username: {}\n      password: {}\n      project_name: {}\n      \
                 user_domain_name: Default\n      project_domain_name: Default\n",
                a.username, a.password, a.project_name
            )
        } else {
            format!(
                "      application_credential_id: {}\n      application_credential_secret: {}\n",
                a.app_credential_id, a.app_credential_secret
            )
        };
        let auth_type = if password_auth {
            "password"
        } else {
            "v3applicationcredential"
        };
        format!(
            "clouds:\n  {name}:\n    auth_type: {auth_type}\n    auth:\n      auth_url: {}\n{auth}    \
             region_name: {}\n    interface: public\n    identity_api_version: 3\n",
            self.auth_url(),
            self.region()
        )
    }

    /// The `OS_*` variables an openrc file sets for the user's password.
    pub fn env(&self) -> Vec<(String, String)> {
        let a = &self.fake.account;
        [
            ("OS_AUTH_URL", self.auth_url()),
            ("OS_USERNAME", a.username.clone()),
            ("OS_PASSWORD", a.password.clone()),
            ("OS_PROJECT_NAME", a.project_name.clone()),
            ("OS_USER_DOMAIN_NAME", "Default".into()),
            ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
            ("OS_REGION_NAME", self.region()),
            ("OS_IDENTITY_API_VERSION", "3".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Changes the configuration (faults, the token's life, failing builds ...).
    pub fn configure(&self, change: impl FnOnce(&mut OpenStackConfig)) {
        change(&mut lock(&self.fake.config));
    }

    /// Replaces the per-route faults.
    pub fn set_faults(&self, routes: Vec<RouteFault>) {
        lock(&self.fake.config).routes = routes;
    }

    /// How many faults fired, by kind.
    pub fn faults_fired(&self) -> FaultCounts {
        lock(&self.fake.data).fired
    }

    /// How many tokens Keystone issued.
    pub fn tokens_issued(&self) -> u32 {
        lock(&self.fake.data).tokens_issued
    }

    /// Expires every token issued so far (as a token's end would, mid-run).
    pub fn expire_tokens(&self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for expiry in lock(&self.fake.data).tokens.values_mut() {
            *expiry = past;
        }
    }

    /// How many `POST /servers` were accepted.
    pub fn creates(&self) -> u32 {
        lock(&self.fake.data).creates
    }

    /// The names of the servers that exist.
    pub fn server_names(&self) -> Vec<String> {
        lock(&self.fake.data)
            .servers
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// The names of the key pairs.
    pub fn keypair_names(&self) -> Vec<String> {
        lock(&self.fake.data)
            .keypairs
            .iter()
            .map(|k| k.name.clone())
            .collect()
    }

    /// The addresses of the floating IPs allocated.
    pub fn floating_ips(&self) -> Vec<String> {
        lock(&self.fake.data)
            .floating_ips
            .iter()
            .map(|f| f.address.clone())
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

    /// The calls made, by `METHOD /service/path` with ids replaced by `*`.
    pub fn calls(&self) -> BTreeMap<String, u32> {
        lock(&self.fake.data).calls.clone()
    }

    /// Forgets the calls counted so far.
    pub fn reset_calls(&self) {
        lock(&self.fake.data).calls.clear();
    }
}

/// An error as Nova and Cinder write them: `{"kind": {"code": N, "message": ...}}`.
pub(crate) fn fault_body(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ kind: {"code": status.as_u16(), "message": message} })),
    )
        .into_response()
}

/// Keystone's (and keystonemiddleware's) error.
pub(crate) fn keystone_error(status: StatusCode, title: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "title": title, "message": message}})),
    )
        .into_response()
}

/// A JSON answer.
pub(crate) fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// What a request carries, for the services' handlers.
pub(crate) struct Call<'a> {
    pub method: &'a Method,
    /// The path below the service's version (`/servers/detail`).
    pub path: &'a str,
    pub query: BTreeMap<String, String>,
    pub headers: &'a HeaderMap,
    pub body: Option<Value>,
}

impl Call<'_> {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// A path's pattern for the call counts: segments that look like ids become `*`.
fn pattern(path: &str) -> String {
    path.split('/')
        .map(|s| {
            let id_like = s.len() >= 20 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            if id_like {
                "*"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The maximum size of a request body.
const MAX_BODY: usize = 1 << 20;

/// Every request: counted, faults, the JSON body, then the route.
async fn dispatch(State(fake): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return fault_body(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "Request body too large",
        );
    };
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    let fault = count_and_fault(&fake, &method, &path);
    if let Some(refused) = fault.and_then(refusal) {
        return refused;
    }
    let body = match json_body(&bytes) {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let query: BTreeMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let answer = route(&fake, &method, &path, query, &parts.headers, body).await;
    crate::fake_ovh::deliver(fault, answer).await
}

/// Counts the call, and picks the fault that fires for it (counted too), if any.
fn count_and_fault(fake: &Fake, method: &Method, path: &str) -> Option<Fault> {
    let mut data = lock(&fake.data);
    *data
        .calls
        .entry(format!("{method} {}", pattern(path)))
        .or_insert(0) += 1;
    let fault = crate::fake_ovh::take(&mut lock(&fake.config).routes, method.as_str(), path)?;
    data.fired.count(fault);
    Some(fault)
}

/// The answer a fault gives before anything is done (a 500, a 429), if it is one of those.
fn refusal(fault: Fault) -> Option<Response> {
    match fault {
        Fault::Error500 => Some(fault_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "computeFault",
            "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and \
             attach the Nova API log if possible.",
        )),
        Fault::TooMany { retry_after } => {
            let mut refused = fault_body(
                StatusCode::TOO_MANY_REQUESTS,
                "overLimit",
                "This request was rate-limited.",
            );
            if let Ok(v) = retry_after.to_string().parse() {
                refused.headers_mut().insert("retry-after", v);
            }
            Some(refused)
        }
        Fault::LoseAnswer | Fault::SlowAnswer { .. } => None,
    }
}

/// A request's JSON body (`None` when empty), or the refusal of one that is not JSON.
fn json_body(bytes: &[u8]) -> Result<Option<Value>, Response> {
    if bytes.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|e| {
        fault_body(
            StatusCode::BAD_REQUEST,
            "badRequest",
            &format!("Malformed request body: {e}"),
        )
    })
}

async fn route(
    fake: &Shared,
    method: &Method,
    path: &str,
    query: BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Response {
    let trimmed = path.trim_end_matches('/');
    let (service, rest) = match trimmed.trim_start_matches('/').split_once('/') {
        Some((service, rest)) => (service, format!("/{rest}")),
        None => (trimmed.trim_start_matches('/'), String::new()),
    };
    if service == "identity" {
        return keystone::route(fake, method, &rest, headers, body);
    }
    if let Some(versions) = services::versions(fake, service, &rest) {
        return versions;
    }
    if !keystone::authorized(fake, headers) {
        let mut refused = keystone_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "The request you have made requires authentication.",
        );
        if let Ok(v) = format!("Keystone uri=\"{}/identity\"", fake.base()).parse() {
            refused.headers_mut().insert("www-authenticate", v);
        }
        return refused;
    }
    let project = fake.account.project_id.clone();
    let prefix = match service {
        "compute" => "/v2.1".to_string(),
        "image" => "/v2".to_string(),
        "network" => "/v2.0".to_string(),
        "volume" => format!("/v3/{project}"),
        _ => return not_found(),
    };
    let Some(below) = rest.strip_prefix(&prefix) else {
        return not_found();
    };
    let call = Call {
        method,
        path: if below.is_empty() { "/" } else { below },
        query,
        headers,
        body,
    };
    match service {
        "compute" => nova::route(fake, &call).await,
        "image" => services::glance(fake, &call),
        "network" => services::neutron(fake, &call),
        _ => cinder::route(fake, &call),
    }
}

/// The plain 404 of a path no service has (webob's text, as the services answer it).
pub(crate) fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [("content-type", "text/plain; charset=UTF-8")],
        "404 Not Found\n\nThe resource could not be found.\n\n   ",
    )
        .into_response()
}

/// A list's page: up to `limit` items after the one with id `marker`, and the `next` link's
/// query (the same query, with the last item as the marker) when the page is full.
pub(crate) fn page<T: Clone>(
    items: &[T],
    id: impl Fn(&T) -> &str,
    call: &Call<'_>,
) -> Result<(Vec<T>, Option<String>), Response> {
    let start = match call.param("marker") {
        Some(marker) => match items.iter().position(|i| id(i) == marker) {
            Some(at) => at + 1,
            None => {
                return Err(fault_body(
                    StatusCode::BAD_REQUEST,
                    "badRequest",
                    &format!("marker [{marker}] not found"),
                ))
            }
        },
        None => 0,
    };
    let limit: usize = call
        .param("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let taken: Vec<T> = items.iter().skip(start).take(limit).cloned().collect();
    let next = (taken.len() == limit && start + limit < items.len()).then(|| {
        let mut query = call.query.clone();
        query.insert(
            "marker".into(),
            id(taken.last().expect("a full page")).to_string(),
        );
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query.iter())
            .finish()
    });
    Ok((taken, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid4s_and_paths_count_by_pattern() {
        let id = uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(
            pattern(&format!("/compute/v2.1/servers/{id}")),
            "/compute/v2.1/servers/*"
        );
    }
}
