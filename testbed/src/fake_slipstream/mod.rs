//! A faithful fake of SlipStream (v3), on 127.0.0.1, over its own state, as its own client
//! (`slipstream-api` 3.71, and the Libcloud driver over it) sees it.
//!
//! CIMI (`/api/...`, JSON: the cloud entry point, sessions, service offers, virtual machines,
//! searched by `PUT` with a form or `GET` with a query, `$filter` as CIMI writes it) is in
//! [`cimi`]; the rest of SlipStream's API is XML:
//! Logging in (`POST /api/session`, a user name and password or an API key and secret) sets the
//! session cookie, which expires (`session_ttl`); every other request needs it (401 without).
//! Runs (`POST /run`, form-encoded as SlipStream takes them) answer 201 with a `Location`; a
//! profile without an SSH key is a 409 with SlipStream's XML error unless the SSH check is
//! bypassed. A run moves Initializing → Provisioning → Executing → SendingReports → Ready (`step`
//! apart), each of its VMs a local node of the test bed (image `debian`) holding every key of the
//! user's profile, its address the `hostname` runtime parameter; a VM that cannot be made aborts
//! the run. The App Store's modules carry their versions (`module/apps/Debian/debian/1234`), and
//! the user's profile the credentials of the clouds it is configured for (`<cloud>.username`),
//! from which the client lists locations. DELETE cancels a run and destroys its VMs. Runs and modules are XML, runtime
//! parameters text/plain, sessions, clouds and VMs JSON (CIMI). Faults: slow answers and
//! per-route 500s, lost answers and held answers, each counted when it fires.

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
use nodeup::driver::NodeDriver;
use nodeup::model::{CreateNode, Node, NodeAuth};
use nodeup::providers::local::LocalDriver;
use quick_xml::escape::escape;
use serde_json::{json, Value};

pub use crate::fake_ovh::{Fault, FaultCounts, RouteFault};

mod cimi;

/// The session cookie's name.
const COOKIE: &str = "com.sixsq.slipstream.cookie";

/// The clouds (connectors) the fake offers.
pub const CLOUDS: [&str; 2] = ["exoscale-ch-gva", "ec2-eu-west"];

/// The App Store: (path, category, description, nodes of an application, version).
const MODULES: [AppModule; 2] = [
    (
        "apps/Debian/debian",
        "Image",
        "Debian, root logs in with the profile's keys",
        &[],
        1234,
    ),
    (
        "apps/WordPress/wordpress",
        "Deployment",
        "WordPress: a web node",
        &["web"],
        1871,
    ),
];

/// When the App Store's modules were made and last changed, as their documents say.
const MODULE_CREATED: &str = "2018-06-11 09:26:57.812 CEST";
const MODULE_MODIFIED: &str = "2019-02-18 15:02:11.302 CET";

/// How often, and how many times, a new VM is looked at until it booted.
const VM_BOOT_POLL: Duration = Duration::from_millis(20);
const VM_BOOT_POLLS: u32 = 500;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct SlipConfig {
    /// How long a session cookie lasts.
    pub session_ttl: Duration,
    /// How long a run stays in each state before the next.
    pub step: Duration,
    /// Every answer waits this long.
    pub slow: Duration,
    /// Faults on given routes, first match fires.
    pub routes: Vec<RouteFault>,
    /// The account's user name and password; made up at random when `None`.
    pub account: Option<(String, String)>,
    /// Ids (runs, sessions) and session cookies from a counter instead of at random, so that
    /// requests recorded against one fake name the same things in another (a replay).
    pub counted_ids: bool,
}

impl Default for SlipConfig {
    fn default() -> Self {
        SlipConfig {
            session_ttl: Duration::from_secs(3600),
            step: Duration::from_millis(150),
            slow: Duration::ZERO,
            routes: Vec::new(),
            account: None,
            counted_ids: false,
        }
    }
}

/// The fake's account.
#[derive(Debug, Clone)]
pub struct SlipAccount {
    /// The user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// An API key (`credential/<uuid>`).
    pub key: String,
    /// Its secret.
    pub secret: String,
}

#[derive(Debug, Clone)]
struct Vm {
    node: String,
    index: u32,
    machine: Option<Node>,
    /// The service offer it was made with (the run form's `service-offer`).
    offer: Option<String>,
}

#[derive(Debug, Clone)]
struct Run {
    uuid: String,
    module: String,
    category: String,
    tags: String,
    cloud: String,
    started: Instant,
    start_text: String,
    provisioned: Option<Instant>,
    abort: Option<String>,
    ended: Option<&'static str>,
    vms: Vec<Vm>,
}

#[derive(Default)]
struct Data {
    sessions: BTreeMap<String, Instant>,
    /// The CIMI ids of the sessions made (`session/<uuid>`).
    session_ids: Vec<String>,
    /// What counted ids count from.
    counter: u64,
    profile_keys: Vec<String>,
    runs: Vec<Run>,
    fired: FaultCounts,
    creates: u32,
    logins: u32,
}

struct Fake {
    account: SlipAccount,
    config: Mutex<SlipConfig>,
    data: Mutex<Data>,
    driver: LocalDriver,
    base: Mutex<String>,
}

type Shared = Arc<Fake>;

/// A running fake SlipStream; dropping it stops the server.
pub struct FakeSlipStream {
    fake: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlipStream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fake {
    /// A new UUID, as SlipStream's ids are: at random, or from the counter ([`SlipConfig::counted_ids`]).
    fn uuid(&self) -> String {
        if lock(&self.config).counted_ids {
            let n = self.next_count();
            return format!("00000000-0000-4000-8000-{n:012x}");
        }
        format!(
            "{}-{}-{}-{}-{}",
            token(8),
            token(4),
            token(4),
            token(4),
            token(12)
        )
    }

    /// A new session cookie's value.
    fn cookie(&self) -> String {
        if lock(&self.config).counted_ids {
            return format!("token=counted-{}", self.next_count());
        }
        format!("token={}", token(40))
    }

    fn next_count(&self) -> u64 {
        let mut data = lock(&self.data);
        data.counter += 1;
        data.counter
    }
}

fn token(len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(rand::random::<u32>() % 16, 16).unwrap_or('0'))
        .collect()
}

impl FakeSlipStream {
    /// Starts the fake on `listen`; its VMs are nodes of `driver`.
    pub async fn start_on(
        listen: SocketAddr,
        driver: LocalDriver,
        config: SlipConfig,
    ) -> std::io::Result<FakeSlipStream> {
        let (username, password) = config
            .account
            .clone()
            .unwrap_or_else(|| (format!("user{}", &token(6)), token(16)));
        let account = SlipAccount {
            username,
            password,
            key: format!("credential/{}", token(32)),
            secret: token(32),
        };
        let fake = Arc::new(Fake {
            account,
            config: Mutex::new(config),
            data: Mutex::new(Data::default()),
            driver,
            base: Mutex::new(String::new()),
        });
        let app = Router::new().fallback(dispatch).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind(listen).await?;
        *lock(&fake.base) = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeSlipStream { fake, server })
    }

    /// Starts the fake on 127.0.0.1, a port the kernel picks.
    pub async fn start(driver: LocalDriver, config: SlipConfig) -> std::io::Result<Self> {
        Self::start_on(([127, 0, 0, 1], 0).into(), driver, config).await
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        lock(&self.fake.base)
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into())
    }

    /// The account.
    pub fn account(&self) -> &SlipAccount {
        &self.fake.account
    }

    /// The environment a client needs (user name and password).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SLIPSTREAM_ENDPOINT".into(), lock(&self.fake.base).clone()),
            (
                "SLIPSTREAM_USERNAME".into(),
                self.fake.account.username.clone(),
            ),
            (
                "SLIPSTREAM_PASSWORD".into(),
                self.fake.account.password.clone(),
            ),
        ]
    }

    /// Replaces the per-route faults.
    pub fn set_faults(&self, routes: Vec<RouteFault>) {
        lock(&self.fake.config).routes = routes;
    }

    /// Ends every session now (as their expiry would).
    pub fn expire_sessions(&self) {
        lock(&self.fake.data).sessions.clear();
    }

    /// How many faults fired, by kind.
    pub fn faults_fired(&self) -> FaultCounts {
        lock(&self.fake.data).fired
    }

    /// How many runs `POST /run` started.
    pub fn creates(&self) -> u32 {
        lock(&self.fake.data).creates
    }

    /// How many logins succeeded.
    pub fn logins(&self) -> u32 {
        lock(&self.fake.data).logins
    }

    /// The first tags of the runs not ended.
    pub fn active_runs(&self) -> Vec<String> {
        lock(&self.fake.data)
            .runs
            .iter()
            .filter(|r| r.ended.is_none())
            .map(|r| r.tags.split(',').next().unwrap_or("").to_string())
            .collect()
    }

    /// The SSH keys of the user's profile.
    pub fn profile_keys(&self) -> Vec<String> {
        lock(&self.fake.data).profile_keys.clone()
    }

    /// The local nodes behind a run's VMs, by the run's first tag.
    pub fn machines_of(&self, name: &str) -> Vec<Node> {
        lock(&self.fake.data)
            .runs
            .iter()
            .filter(|r| r.tags.split(',').next() == Some(name))
            .flat_map(|r| r.vms.iter().filter_map(|v| v.machine.clone()))
            .collect()
    }
}

fn xml_error(status: StatusCode, detail: &str) -> Response {
    let body = format!(
        r#"<error code="{}" reason="{}" detail="{}"/>"#,
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        escape(detail)
    );
    (status, [("content-type", "application/xml")], body).into_response()
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"status": status.as_u16(), "message": message})),
    )
        .into_response()
}

fn xml_ok(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/xml")], body).into_response()
}

fn session_of(fake: &Fake, headers: &HeaderMap) -> bool {
    let cookies = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))
        .map(str::to_string)
        .collect::<Vec<_>>();
    let data = lock(&fake.data);
    cookies.iter().any(|c| {
        data.sessions
            .get(c)
            .is_some_and(|until| *until > Instant::now())
    })
}

/// Every request: slowness, faults, the session, then the route.
async fn dispatch(State(fake): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return xml_error(StatusCode::BAD_REQUEST, "request body too large");
    };
    let slow = lock(&fake.config).slow;
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let path = percent_encoding::percent_decode_str(parts.uri.path())
        .decode_utf8_lossy()
        .into_owned();
    let query = parts.uri.query().unwrap_or("").to_string();
    let fault = pick_fault(&fake, parts.method.as_str(), &path);
    if fault == Some(Fault::Error500) {
        return xml_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    }
    let answer = if parts.method == Method::POST && path == "/api/session" {
        login(&fake, &bytes)
    } else if path == "/api/cloud-entry-point" {
        // Readable by anyone, as CIMI's is.
        cimi::cloud_entry_point(&lock(&fake.base))
    } else if !session_of(&fake, &parts.headers) {
        if path.starts_with("/api/") {
            json_error(StatusCode::UNAUTHORIZED, "no valid session: log in")
        } else {
            xml_error(StatusCode::UNAUTHORIZED, "Authentication required")
        }
    } else {
        route(&fake, &parts.method, &path, &query, &parts.headers, &bytes).await
    };
    crate::fake_ovh::deliver(fault, answer).await
}

/// The fault that fires for this request, if any, counted.
fn pick_fault(fake: &Fake, method: &str, path: &str) -> Option<Fault> {
    let fault = crate::fake_ovh::take(&mut lock(&fake.config).routes, method, path)?;
    lock(&fake.data).fired.count(fault);
    Some(fault)
}

/// `POST /api/session`: a session template with a user name and password, or a key and secret.
fn login(fake: &Fake, body: &Bytes) -> Response {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let template = &value["sessionTemplate"];
    let a = &fake.account;
    let valid = match template["href"].as_str() {
        Some("session-template/internal") => {
            template["username"] == a.username.as_str()
                && template["password"] == a.password.as_str()
        }
        Some("session-template/api-key") => {
            template["key"] == a.key.as_str() && template["secret"] == a.secret.as_str()
        }
        _ => return json_error(StatusCode::BAD_REQUEST, "unknown session template"),
    };
    if !valid {
        return json_error(StatusCode::FORBIDDEN, "invalid credentials");
    }
    let ttl = lock(&fake.config).session_ttl;
    let cookie = fake.cookie();
    let id = format!("session/{}", fake.uuid());
    {
        let mut data = lock(&fake.data);
        data.sessions.insert(cookie.clone(), Instant::now() + ttl);
        data.session_ids.push(id.clone());
        data.logins += 1;
    }
    let expires = httpdate::fmt_http_date(SystemTime::now() + ttl);
    let set_cookie = format!("{COOKIE}={cookie}; Path=/; Expires={expires}; HttpOnly");
    (
        StatusCode::CREATED,
        [("set-cookie", set_cookie)],
        Json(json!({"status": 201, "message": format!("created {id}"), "resource-id": id})),
    )
        .into_response()
}

async fn route(
    fake: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["api", "session", id]) => cimi::session(fake, id),
        ("DELETE", ["api", "session", id]) => cimi::logout(fake, id),
        // A search: CIMI's parameters as a query (GET) or as a form (PUT, as the client sends).
        ("GET", ["api", collection]) => cimi::search(fake, collection, &pairs(query.as_bytes())),
        ("PUT", ["api", collection]) => {
            let mut params = pairs(query.as_bytes());
            params.extend(pairs(body));
            cimi::search(fake, collection, &params)
        }
        ("GET", ["appstore"]) => appstore(),
        ("GET", ["module", rest @ ..]) => module(&rest.join("/")),
        ("GET", ["user", name]) => profile(fake, name),
        ("PUT", ["user", name]) => set_profile(fake, name, headers, body),
        ("GET", ["run"]) => list_runs(fake, query),
        ("POST", ["run"]) => create_run(fake, headers, body),
        ("GET", ["run", uuid]) => run_document(fake, uuid),
        ("GET", ["run", uuid, name]) => run_parameter(fake, uuid, name, query),
        ("DELETE", ["run", uuid]) => delete_run(fake, uuid).await,
        _ => xml_error(StatusCode::NOT_FOUND, &format!("{path} not found")),
    }
}

/// A form or a query's pairs, by name.
fn pairs(bytes: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

fn appstore() -> Response {
    let items: String = MODULES
        .iter()
        .map(|(path, category, description, _, version)| {
            format!(
                r#"<item resourceUri="module/{path}/{version}" name="{}" description="{}" category="{category}" version="{version}" logoLink="" published="true"/>"#,
                path.rsplit('/').next().unwrap_or(path),
                escape(*description)
            )
        })
        .collect();
    xml_ok(StatusCode::OK, format!("<list>{items}</list>"))
}

/// The module of a path (`apps/Debian/debian`), with or without its version; a version other
/// than the module's is not found.
fn find_module(path: &str) -> Option<&'static AppModule> {
    let path = path.trim_matches('/');
    let (base, version) = match path.rsplit_once('/') {
        Some((base, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            (base, v.parse::<u32>().ok())
        }
        _ => (path, None),
    };
    MODULES
        .iter()
        .find(|m| m.0 == base && version.is_none_or(|v| v == m.4))
}

fn module(path: &str) -> Response {
    let Some((path, category, description, nodes, version)) = find_module(path) else {
        return xml_error(StatusCode::NOT_FOUND, &format!("Module {path} not found"));
    };
    let (parent, short) = path.rsplit_once('/').unwrap_or(("", path));
    let attributes = format!(
        r#"name="{path}" shortName="{short}" parentUri="module/{parent}" resourceUri="module/{path}/{version}" description="{}" category="{category}" version="{version}" creation="{MODULE_CREATED}" lastModified="{MODULE_MODIFIED}" deleted="false" isLatestVersion="true" logoLink="" published="true""#,
        escape(*description)
    );
    if nodes.is_empty() {
        return xml_ok(
            StatusCode::OK,
            format!(
                r#"<imageModule {attributes} isBase="true"><authz owner="sixsq"/><parameters/><cloudImageIdentifiers/></imageModule>"#
            ),
        );
    }
    let entries: String = nodes
        .iter()
        .map(|n| format!(r#"<entry><string>{n}</string><node name="{n}" imageUri="module/apps/Debian/debian/1234" multiplicity="1" maxProvisioningFailures="0" network="Public" cloudService="default"/></entry>"#))
        .collect();
    xml_ok(
        StatusCode::OK,
        format!(
            r#"<deploymentModule {attributes}><authz owner="sixsq"/><nodes>{entries}</nodes></deploymentModule>"#
        ),
    )
}

fn profile_xml(fake: &Fake, keys: &[String]) -> String {
    let parameter = |name: &str, category: &str, kind: &str, value: &str| {
        format!(
            r#"<entry><string>{name}</string><parameter name="{name}" category="{category}" type="{kind}"><value>{}</value></parameter></entry>"#,
            escape(value)
        )
    };
    // The clouds the user is configured for: their credentials, as the profile holds them.
    let clouds: String = CLOUDS
        .iter()
        .map(|c| {
            parameter(
                &format!("{c}.username"),
                c,
                "String",
                &format!("{c}-account"),
            ) + &parameter(
                &format!("{c}.password"),
                c,
                "Password",
                "secret-of-the-cloud",
            )
        })
        .collect();
    format!(
        r#"<user name="{u}" email="{u}@example.org" state="ACTIVE" firstName="Replay" lastName="User" issuer="internal" issuper="false" roles=""><parameters>{}{}{}{clouds}</parameters></user>"#,
        parameter(
            "General.ssh.public.key",
            "General",
            "RestrictedText",
            &keys.join("\n")
        ),
        parameter("General.keep-running", "General", "Enum", "on-success"),
        parameter(
            "General.default.cloud.service",
            "General",
            "Enum",
            CLOUDS[0]
        ),
        u = fake.account.username,
    )
}

fn profile(fake: &Fake, name: &str) -> Response {
    if name != fake.account.username {
        return xml_error(StatusCode::FORBIDDEN, "Not allowed to read another user");
    }
    let keys = lock(&fake.data).profile_keys.clone();
    xml_ok(StatusCode::OK, profile_xml(fake, &keys))
}

fn set_profile(fake: &Fake, name: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    if name != fake.account.username {
        return xml_error(StatusCode::FORBIDDEN, "Not allowed to change another user");
    }
    let xml_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("xml"));
    let text = String::from_utf8_lossy(body);
    let Some(keys) = xml_body.then(|| profile_keys(&text)).flatten() else {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "The user document is not valid XML",
        );
    };
    for key in &keys {
        if russh::keys::PublicKey::from_openssh(key).is_err() {
            return xml_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid SSH public key: {key}"),
            );
        }
    }
    lock(&fake.data).profile_keys = keys;
    xml_ok(StatusCode::OK, text.into_owned())
}

/// The keys of a user document (the `General.ssh.public.key` parameter's value), one a line;
/// `None` when there is no such parameter. An empty value (`<value/>`, as a client that removed
/// the last key writes it) is no key: only the parameter's own element is read.
fn profile_keys(text: &str) -> Option<Vec<String>> {
    let start = text.find(r#"name="General.ssh.public.key""#)?;
    let rest = &text[start..];
    let element = match (rest.find("</parameter>"), rest.find("/>")) {
        (Some(end), _) => &rest[..end],
        (None, Some(end)) => &rest[..end],
        (None, None) => rest,
    };
    let value = match (element.find("<value>"), element.find("</value>")) {
        (Some(a), Some(b)) if a < b => &element[a + "<value>".len()..b],
        _ => "",
    };
    let value = quick_xml::escape::unescape(value).ok()?;
    Some(
        value
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// A run's state now, from its timeline.
fn state(run: &Run, step: Duration) -> &'static str {
    if let Some(ended) = run.ended {
        return ended;
    }
    if run.abort.is_some() {
        return "Aborted";
    }
    match run.provisioned {
        None if run.started.elapsed() < step => "Initializing",
        None => "Provisioning",
        Some(at) if at.elapsed() < step => "Executing",
        Some(at) if at.elapsed() < step * 2 => "SendingReports",
        Some(_) => "Ready",
    }
}

fn list_runs(fake: &Fake, query: &str) -> Response {
    let step = lock(&fake.config).step;
    let active_only = query.contains("activeOnly=true");
    let data = lock(&fake.data);
    let items: Vec<String> = data
        .runs
        .iter()
        .filter(|r| !active_only || r.ended.is_none())
        .map(|r| {
            format!(
                r#"<item resourceUri="run/{u}" uuid="{u}" moduleResourceUri="module/{m}/{v}" status="{s}" startTime="{t}" lastStateChangeTime="{t}" cloudServiceNames="{c}" tags="{tags}" username="{user}" type="Orchestration" serviceUrl="" abort="{a}" mutable="false"/>"#,
                u = r.uuid,
                m = r.module,
                v = version_of(&r.module),
                s = state(r, step),
                t = r.start_text,
                c = r.cloud,
                tags = escape(&r.tags),
                user = fake.account.username,
                a = escape(r.abort.clone().unwrap_or_default()),
            )
        })
        .collect();
    xml_ok(
        StatusCode::OK,
        format!(
            r#"<runs count="{n}" totalCount="{n}" offset="0" limit="500">{}</runs>"#,
            items.join(""),
            n = items.len()
        ),
    )
}

/// A run's runtime parameters, by key.
fn parameters(run: &Run, step: Duration) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    params.insert("ss:state".to_string(), state(run, step).to_string());
    params.insert(
        "ss:abort".to_string(),
        run.abort.clone().unwrap_or_default(),
    );
    params.insert("ss:url.service".to_string(), String::new());
    for vm in &run.vms {
        let prefix = if run.category == "Image" {
            "machine".to_string()
        } else {
            format!("{}.{}", vm.node, vm.index)
        };
        let ip = vm
            .machine
            .as_ref()
            .and_then(|m| m.public_ips.first())
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        params.insert(format!("{prefix}:hostname"), ip);
        let id = vm
            .machine
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        params.insert(format!("{prefix}:instanceid"), id);
    }
    params
}

/// The version of the App Store's module at `path`.
fn version_of(path: &str) -> u32 {
    find_module(path).map_or(1, |m| m.4)
}

fn find_run<'a>(data: &'a Data, uuid: &str) -> Option<&'a Run> {
    data.runs.iter().find(|r| r.uuid == uuid)
}

fn run_document(fake: &Fake, uuid: &str) -> Response {
    let step = lock(&fake.config).step;
    let data = lock(&fake.data);
    let Some(run) = find_run(&data, uuid) else {
        return xml_error(StatusCode::NOT_FOUND, &format!("Run {uuid} not found"));
    };
    let entries: String = parameters(run, step)
        .iter()
        .map(|(k, v)| {
            let group = k.split(':').next().unwrap_or("");
            format!(
                r#"<entry><string>{k}</string><runtimeParameter group="{group}" key="{k}" isSet="{}">{}</runtimeParameter></entry>"#,
                !v.is_empty(),
                escape(v.as_str())
            )
        })
        .collect();
    xml_ok(
        StatusCode::OK,
        format!(
            r#"<run uuid="{u}" resourceUri="run/{u}" moduleResourceUri="module/{m}/{v}" category="{cat}" type="Orchestration" state="{s}" tags="{tags}" cloudServiceNames="{c}" user="{user}" startTime="{t}" lastStateChangeTime="{t}" mutable="false"><runtimeParameters>{entries}</runtimeParameters></run>"#,
            u = run.uuid,
            m = run.module,
            v = version_of(&run.module),
            cat = run.category,
            s = state(run, step),
            tags = escape(&run.tags),
            c = run.cloud,
            user = fake.account.username,
            t = run.start_text,
        ),
    )
}

fn run_parameter(fake: &Fake, uuid: &str, name: &str, query: &str) -> Response {
    let step = lock(&fake.config).step;
    let data = lock(&fake.data);
    let Some(run) = find_run(&data, uuid) else {
        return xml_error(StatusCode::NOT_FOUND, &format!("Run {uuid} not found"));
    };
    if let Some(abort) = &run.abort {
        if !query.contains("ignoreabort=true") {
            return xml_error(StatusCode::CONFLICT, &format!("Abort flag raised: {abort}"));
        }
    }
    match parameters(run, step).get(name) {
        Some(value) => (
            StatusCode::OK,
            [("content-type", "text/plain")],
            value.clone(),
        )
            .into_response(),
        None => xml_error(StatusCode::NOT_FOUND, &format!("Unknown key {name}")),
    }
}

/// A module of the App Store: path, category, description, the nodes of an application, and its
/// version.
type AppModule = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    u32,
);

/// What SlipStream checks of a run form before it starts anything: form-encoded, a module that
/// exists, known clouds, and a key in the profile unless the check is bypassed. The module, the
/// cloud, and the profile's keys.
fn check_run_form(
    fake: &Fake,
    headers: &HeaderMap,
    form: &BTreeMap<String, String>,
) -> Result<(&'static AppModule, String, Vec<String>), Response> {
    let form_encoded = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form_encoded {
        return Err(xml_error(
            StatusCode::BAD_REQUEST,
            "The run form must be form-encoded",
        ));
    }
    let wanted = form
        .get("refqname")
        .map(|r| r.trim_start_matches("module/"))
        .unwrap_or("");
    let Some(module) = find_module(wanted) else {
        return Err(xml_error(
            StatusCode::NOT_FOUND,
            &format!("Module {wanted} not found"),
        ));
    };
    let offers = cimi::service_offers();
    if let Some((_, bad)) = form.iter().find(|(k, v)| {
        k.ends_with("service-offer") && !offers.iter().any(|o| o["id"] == v.as_str())
    }) {
        let message = format!("Unknown service offer {bad}");
        return Err(xml_error(StatusCode::BAD_REQUEST, &message));
    }
    let clouds: Vec<&String> = form
        .iter()
        .filter(|(k, _)| k.ends_with("cloudservice"))
        .map(|(_, v)| v)
        .collect();
    if let Some(bad) = clouds.iter().find(|c| !CLOUDS.contains(&c.as_str())) {
        let message = format!("Unknown cloud service {bad}");
        return Err(xml_error(StatusCode::BAD_REQUEST, &message));
    }
    let bypass = form.get("bypass-ssh-check").map(String::as_str) == Some("true");
    let keys = lock(&fake.data).profile_keys.clone();
    if keys.is_empty() && !bypass {
        return Err(xml_error(
            StatusCode::CONFLICT,
            "Missing SSH public key in the user profile: add one, or bypass the SSH check",
        ));
    }
    let cloud = clouds
        .first()
        .map_or(CLOUDS[0].to_string(), |c| c.to_string());
    Ok((module, cloud, keys))
}

/// A run's VMs: one `machine` for a component, `multiplicity` of each node for an application.
fn vms_for(nodes: &[&str], form: &BTreeMap<String, String>) -> Vec<Vm> {
    if nodes.is_empty() {
        return vec![Vm {
            node: "machine".into(),
            index: 1,
            machine: None,
            offer: form.get("parameter--service-offer").cloned(),
        }];
    }
    nodes
        .iter()
        .flat_map(|n| {
            let count: u32 = form
                .get(&format!("parameter--node--{n}--multiplicity"))
                .and_then(|m| m.parse().ok())
                .unwrap_or(1);
            let offer = form
                .get(&format!("parameter--node--{n}--service-offer"))
                .cloned();
            (1..=count).map(move |i| Vm {
                node: n.to_string(),
                index: i,
                machine: None,
                offer: offer.clone(),
            })
        })
        .collect()
}

fn create_run(fake: &Shared, headers: &HeaderMap, body: &Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let ((path, category, _, nodes, _), cloud, keys) = match check_run_form(fake, headers, &form) {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let uuid = fake.uuid();
    let run = Run {
        uuid: uuid.clone(),
        module: path.to_string(),
        category: category.to_string(),
        tags: form.get("tags").cloned().unwrap_or_default(),
        cloud,
        started: Instant::now(),
        start_text: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        provisioned: None,
        abort: None,
        ended: None,
        vms: vms_for(nodes, &form),
    };
    {
        let mut data = lock(&fake.data);
        data.creates += 1;
        data.runs.push(run);
    }
    tokio::spawn(provision(fake.clone(), uuid.clone(), keys));
    let location = format!("{}/run/{uuid}", lock(&fake.base));
    (StatusCode::CREATED, [("location", location)]).into_response()
}

/// Makes a run's VMs (after its Initializing step), each with every key of the profile.
async fn provision(fake: Shared, uuid: String, keys: Vec<String>) {
    let step = lock(&fake.config).step;
    tokio::time::sleep(step).await;
    let count = lock(&fake.data)
        .runs
        .iter()
        .find(|r| r.uuid == uuid)
        .map_or(0, |r| r.vms.len());
    for i in 0..count {
        let made = make_vm(&fake, &uuid, i, &keys).await;
        let mut data = lock(&fake.data);
        let Some(run) = data.runs.iter_mut().find(|r| r.uuid == uuid) else {
            return;
        };
        match made {
            Ok(machine) => run.vms[i].machine = Some(machine),
            Err(e) => {
                run.abort = Some(format!("provisioning VM {} failed: {e}", i + 1));
                return;
            }
        }
    }
    if let Some(run) = lock(&fake.data).runs.iter_mut().find(|r| r.uuid == uuid) {
        run.provisioned = Some(Instant::now());
    }
}

async fn make_vm(fake: &Fake, uuid: &str, i: usize, keys: &[String]) -> Result<Node, String> {
    let node = fake
        .driver
        .create_node(&CreateNode {
            name: format!("ss-{}-{}", uuid.rsplit('-').next().unwrap_or(uuid), i + 1),
            image: Some("debian".into()),
            auth: keys.last().cloned().map(NodeAuth::SshKey),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    // Every key of the profile goes onto the VM, as SlipStream does, once it booted.
    for _ in 0..VM_BOOT_POLLS {
        let booted = fake
            .driver
            .get_node(&node.id)
            .await
            .map_err(|e| e.to_string())?;
        if booted.state == nodeup::model::NodeState::Running {
            break;
        }
        tokio::time::sleep(VM_BOOT_POLL).await;
    }
    let pid = fake
        .driver
        .init_pid(&node.id)
        .map_err(|e| e.to_string())?
        .ok_or("the VM did not boot")?;
    let authorized = format!("/proc/{pid}/root/root/.ssh/authorized_keys");
    let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
    std::fs::write(&authorized, text).map_err(|e| format!("{authorized}: {e}"))?;
    Ok(node)
}

async fn delete_run(fake: &Fake, uuid: &str) -> Response {
    let machines = {
        let mut data = lock(&fake.data);
        let Some(run) = data.runs.iter_mut().find(|r| r.uuid == uuid) else {
            return xml_error(StatusCode::NOT_FOUND, &format!("Run {uuid} not found"));
        };
        if run.ended.is_none() {
            run.ended = Some("Cancelled");
        }
        run.vms
            .iter_mut()
            .filter_map(|v| v.machine.take())
            .collect::<Vec<_>>()
    };
    for machine in machines {
        if let Err(e) = fake.driver.destroy_node(&machine).await {
            eprintln!("fake-slipstream: destroying a VM of run {uuid}: {e}");
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The virtual machines of every run, as CIMI documents.
fn vm_documents(fake: &Fake) -> Vec<Value> {
    let data = lock(&fake.data);
    data.runs
        .iter()
        .flat_map(|r| {
            r.vms.iter().filter_map(move |v| {
                let machine = v.machine.as_ref()?;
                let mut doc = json!({
                    "id": format!("virtual-machine/{}", machine.id),
                    "resourceURI": "http://sixsq.com/slipstream/1/VirtualMachine",
                    "instanceID": machine.id,
                    "state": if r.ended.is_some() { "Terminated" } else { "Running" },
                    "ip": machine.public_ips.first().map(|ip| ip.to_string()),
                    "privateIp": format!("10.0.0.{}", v.index + 1),
                    "created": r.start_text,
                    "updated": r.start_text,
                    "deployment": {"href": format!("run/{}", r.uuid),
                                   "user": {"href": format!("user/{}", fake.account.username)}},
                    "connector": {"href": format!("connector/{}", r.cloud)},
                    "credentials": [{"href": format!("credential/{}-account", r.cloud)}],
                });
                if let Some(offer) = &v.offer {
                    doc["serviceOffer"] = json!({"href": offer});
                }
                Some(doc)
            })
        })
        .collect()
}
