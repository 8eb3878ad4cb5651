//! A faithful fake of the OVH API (Public Cloud), on 127.0.0.1, over its own state.
//!
//! It checks `X-Ovh-Application`, `X-Ovh-Consumer` and `X-Ovh-Signature` as OVH does (over the raw
//! URL and raw body received, the timestamp within a window of its own `/auth/time`, which runs
//! ahead of this machine's clock so that clients must use the server-time delta), answers with OVH's
//! error bodies and an `X-Ovh-QueryID`, and moves instances through BUILD → ACTIVE, their address
//! appearing later still. Each instance is a local node of the test bed (image `cloud-debian`: root
//! refused as on OVH's images, the image's user `debian` holding the instance's SSH key); DELETE
//! destroys it (the instance stays DELETING a while). Faults (`faults`): a share of 500 and 429
//! answers, slow answers, and per-route 500s, 429s with a Retry-After and answers lost after the
//! request was done; every fault that fires is counted.

// Handlers answer early with an error `Response`, as axum handlers do; it is large by nature.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nodeup::driver::NodeDriver;
use nodeup::model::{CreateNode, NodeAuth};
use nodeup::providers::local::LocalDriver;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

mod auth;
mod catalog;
mod cloud;
mod dedicated;
mod faults;
mod state;

use auth::*;
use cloud::*;
use dedicated::*;
use state::*;

pub use catalog::{flavor_id, image_id, TWIN_IMAGE};

pub use faults::{deliver, take, Fault, FaultCounts, OvhFaults, RouteFault};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct OvhConfig {
    /// How long an instance stays in BUILD.
    pub build_time: Duration,
    /// How long after ACTIVE its address appears.
    pub address_delay: Duration,
    /// How far the fake's clock runs ahead of this machine's (seconds).
    pub clock_offset: i64,
    /// Faults.
    pub faults: OvhFaults,
    /// How long a dedicated server's reinstall keeps it down, after the image checked out.
    pub install_time: Duration,
    /// How long a deleted instance stays listed as DELETING.
    pub delete_time: Duration,
    /// How long a new volume stays `creating`.
    pub volume_create_time: Duration,
}

impl Default for OvhConfig {
    fn default() -> Self {
        OvhConfig {
            build_time: Duration::from_millis(600),
            address_delay: Duration::from_millis(300),
            clock_offset: 3600,
            faults: OvhFaults::default(),
            install_time: Duration::from_millis(1500),
            delete_time: Duration::from_millis(500),
            volume_create_time: Duration::from_millis(300),
        }
    }
}

/// The fake's credentials and project.
#[derive(Debug, Clone)]
pub struct OvhAccount {
    /// The application key.
    pub application_key: String,
    /// The application secret.
    pub application_secret: String,
    /// The consumer key.
    pub consumer_key: String,
    /// The Public Cloud project.
    pub project: String,
}

#[derive(Default)]
struct Data {
    /// The faults that fired.
    fired: FaultCounts,
    /// When each `creating` volume becomes `available`.
    volume_ready: BTreeMap<String, Instant>,
    /// The bodies of `POST /auth/credential` requests, in order.
    credential_requests: Vec<Value>,
    instances: Vec<Instance>,
    keys: Vec<SshKey>,
    volumes: Vec<Volume>,
    snapshots: Vec<Snapshot>,
    images: Vec<Image>,
    requests: u64,
}

struct Fake {
    account: OvhAccount,
    config: Mutex<OvhConfig>,
    data: Mutex<Data>,
    rng: Mutex<rand::rngs::StdRng>,
    driver: LocalDriver,
    dedicated: Mutex<Vec<Dedicated>>,
}

type Shared = Arc<Fake>;

/// A running fake OVH API. Dropping it stops the server (the instances' local nodes go with the
/// test bed that holds them).
pub struct FakeOvh {
    addr: SocketAddr,
    fake: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOvh {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_hex(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

fn random_token(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

impl FakeOvh {
    /// Starts the fake on 127.0.0.1 (a port the kernel picks); its instances are nodes of `driver`.
    pub async fn start(driver: LocalDriver, config: OvhConfig) -> std::io::Result<FakeOvh> {
        Self::start_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            driver,
            config,
        )
        .await
    }

    /// Starts the fake on `listen`.
    pub async fn start_on(
        listen: SocketAddr,
        driver: LocalDriver,
        config: OvhConfig,
    ) -> std::io::Result<FakeOvh> {
        let account = OvhAccount {
            application_key: random_token(16),
            application_secret: random_token(32),
            consumer_key: random_token(32),
            project: random_hex(32),
        };
        let images: Vec<Image> = catalog::images()
            .into_iter()
            .filter_map(|i| serde_json::from_value(i).ok())
            .collect();
        let fake = Arc::new(Fake {
            account,
            config: Mutex::new(config),
            data: Mutex::new(Data {
                images,
                ..Default::default()
            }),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(7)),
            driver,
            dedicated: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/1.0/auth/time", get(auth_time))
            .route("/1.0/auth/credential", post(auth_credential))
            .route("/1.0/cloud/project", get(list_projects))
            .route("/1.0/cloud/subsidiaryPrice", get(subsidiary_price))
            .route("/1.0/cloud/project/{project}", get(get_project))
            .nest("/1.0/cloud/project/{project}", project_routes(&fake))
            .nest("/1.0/dedicated/server/{name}", dedicated_routes())
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(fake.clone(), check))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeOvh { addr, fake, server })
    }

    /// The base URL clients use (`OVH_ENDPOINT`).
    pub fn base_url(&self) -> String {
        format!("http://{}/1.0", self.addr)
    }

    /// The account.
    pub fn account(&self) -> &OvhAccount {
        &self.fake.account
    }

    /// The environment a client needs: OVH_ENDPOINT, the three keys, OVH_CLOUD_PROJECT_SERVICE.
    pub fn env(&self) -> Vec<(String, String)> {
        let a = &self.fake.account;
        vec![
            ("OVH_ENDPOINT".into(), self.base_url()),
            ("OVH_APPLICATION_KEY".into(), a.application_key.clone()),
            (
                "OVH_APPLICATION_SECRET".into(),
                a.application_secret.clone(),
            ),
            ("OVH_CONSUMER_KEY".into(), a.consumer_key.clone()),
            ("OVH_CLOUD_PROJECT_SERVICE".into(), a.project.clone()),
        ]
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: OvhFaults) {
        self.fake
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .faults = faults;
    }

    /// The names of the instances the fake holds.
    pub fn instance_names(&self) -> Vec<String> {
        self.fake
            .data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .instances
            .iter()
            .filter(|i| i.deleted.is_none())
            .map(|i| i.name.clone())
            .collect()
    }

    /// The names of the instances listed as DELETING.
    pub fn deleting_names(&self) -> Vec<String> {
        let mut data = self.fake.data.lock().unwrap_or_else(|e| e.into_inner());
        settle_deleted(&self.fake, &mut data);
        data.instances
            .iter()
            .filter(|i| i.deleted.is_some())
            .map(|i| i.name.clone())
            .collect()
    }

    /// The bodies of the `POST /auth/credential` requests received, in order.
    pub fn credential_requests(&self) -> Vec<Value> {
        self.fake
            .data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .credential_requests
            .clone()
    }

    /// The snapshot a volume was made from, if any.
    pub fn volume_snapshot_of(&self, volume: &str) -> Option<String> {
        self.fake
            .data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .volumes
            .iter()
            .find(|v| v.id == volume)
            .and_then(|v| v.snapshot_id.clone())
    }

    /// The body of the last reinstall request for a dedicated server.
    pub fn last_reinstall_request(&self, server: &str) -> Option<Value> {
        with_server(&self.fake, server, |s| s.last_request.clone())
            .ok()
            .flatten()
    }

    /// Whether a reinstall of the server is under way (downloading, checking or installing).
    pub fn installing(&self, server: &str) -> bool {
        with_server(&self.fake, server, |s| {
            s.legacy.as_ref().is_some_and(|(st, _)| st == "doing")
        })
        .unwrap_or(false)
    }

    /// The names of the SSH keys the project holds.
    pub fn key_names(&self) -> Vec<String> {
        self.fake
            .data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .iter()
            .map(|k| k.name.clone())
            .collect()
    }

    /// How many faults fired so far, by kind.
    pub fn faults_fired(&self) -> FaultCounts {
        self.fake
            .data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fired
    }

    /// How many requests got past the authentication check.
    pub fn authenticated_requests(&self) -> u64 {
        self.fake
            .data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
    }
}

fn ovh_error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let body = match code {
        Some(code) => json!({
            "errorCode": code,
            "httpCode": format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")),
            "message": message,
        }),
        None => json!({"message": message}),
    };
    (status, Json(body)).into_response()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"class": "Client::BadRequest", "message": message})),
    )
        .into_response()
}

fn missing(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"class": "Client::NotFound", "message": format!("The requested object ({what}) does not exist")})),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ovh_error(
        StatusCode::NOT_FOUND,
        None,
        &format!("Got an invalid (or empty) URL: {}", uri.path()),
    )
}
