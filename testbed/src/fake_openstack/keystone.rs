//! Keystone v3: the version documents, `POST /v3/auth/tokens` for a password (user by id or by
//! name in a domain, scoped to a project by id or by name in a domain) or an application
//! credential, and `GET /v3/auth/tokens` to validate one. A token is a random id returned in
//! `X-Subject-Token`; it expires after the configured lifetime.

use std::time::SystemTime;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{answer, hex_id, keystone_error, lock, Shared};

/// The domain every user and project of the fake is in.
const DOMAIN_ID: &str = "default";
const DOMAIN_NAME: &str = "Default";

/// The microversion-free API version Keystone reports.
const VERSION: &str = "v3.14";

pub(super) fn route(
    fake: &Shared,
    method: &Method,
    rest: &str,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Response {
    match (method.as_str(), rest) {
        ("GET", "") => answer(
            StatusCode::MULTIPLE_CHOICES,
            json!({"versions": {"values": [version(fake)]}}),
        ),
        ("GET", "/v3") => answer(StatusCode::OK, json!({ "version": version(fake) })),
        ("POST", "/v3/auth/tokens") => issue(fake, body.unwrap_or_default()),
        ("GET", "/v3/auth/tokens") => validate(fake, headers),
        _ => keystone_error(
            StatusCode::NOT_FOUND,
            "Not Found",
            "The resource could not be found.",
        ),
    }
}

fn version(fake: &Shared) -> Value {
    json!({
        "id": VERSION, "status": "stable", "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/identity/v3/", fake.base())}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

fn unauthorized() -> Response {
    keystone_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "The request you have made requires authentication.",
    )
}

/// Whether a domain reference (`{"id"}` or `{"name"}`) is the fake's domain.
fn our_domain(domain: &Value) -> bool {
    domain.get("id").and_then(Value::as_str) == Some(DOMAIN_ID)
        || domain.get("name").and_then(Value::as_str) == Some(DOMAIN_NAME)
}

/// Whether a user or project reference names `(id, name)`: by id, or by name in our domain.
fn names(reference: &Value, id: &str, name: &str) -> bool {
    match reference.get("id").and_then(Value::as_str) {
        Some(given) => given == id,
        None => {
            reference.get("name").and_then(Value::as_str) == Some(name)
                && reference.get("domain").is_some_and(our_domain)
        }
    }
}

/// Checks the request's identity; `Some(method)` when it is the account's.
fn identify(fake: &Shared, auth: &Value) -> Result<&'static str, Response> {
    let a = &fake.account;
    let identity = &auth["identity"];
    let methods: Vec<&str> = identity["methods"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match methods.as_slice() {
        ["password"] => {
            let user = &identity["password"]["user"];
            let ok = names(user, &a.user_id, &a.username)
                && user["password"].as_str() == Some(&a.password);
            ok.then_some("password").ok_or_else(unauthorized)
        }
        ["application_credential"] => {
            let credential = &identity["application_credential"];
            let ok = credential["id"].as_str() == Some(&a.app_credential_id)
                && credential["secret"].as_str() == Some(&a.app_credential_secret);
            ok.then_some("application_credential")
                .ok_or_else(unauthorized)
        }
        _ => Err(keystone_error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Invalid input for field 'identity': the methods must be password or \
             application_credential",
        )),
    }
}

fn issue(fake: &Shared, request: Value) -> Response {
    let auth = &request["auth"];
    let method = match identify(fake, auth) {
        Ok(method) => method,
        Err(refused) => return refused,
    };
    let a = &fake.account;
    let scoped = match auth.get("scope").and_then(|s| s.get("project")) {
        Some(project) => {
            if method == "application_credential" {
                return keystone_error(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "Application credentials cannot request a scope.",
                );
            }
            if !names(project, &a.project_id, &a.project_name) {
                return unauthorized();
            }
            true
        }
        // An application credential's token is for its own project.
        None => method == "application_credential",
    };
    let lifetime = lock(&fake.config).token_lifetime;
    let issued = SystemTime::now();
    let expires = issued + lifetime;
    let token = format!("gAAAAA{}", hex_id());
    {
        let mut data = lock(&fake.data);
        data.tokens.insert(token.clone(), expires);
        data.tokens_issued += 1;
    }
    let body = token_body(fake, method, scoped, issued, expires);
    let mut response = answer(StatusCode::CREATED, body);
    if let Ok(value) = token.parse() {
        response.headers_mut().insert("x-subject-token", value);
    }
    response
}

fn micros(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

fn token_body(
    fake: &Shared,
    method: &str,
    scoped: bool,
    issued: SystemTime,
    expires: SystemTime,
) -> Value {
    let a = &fake.account;
    let domain = json!({"id": DOMAIN_ID, "name": DOMAIN_NAME});
    let mut token = json!({
        "methods": [method],
        "user": {"domain": domain, "id": a.user_id, "name": a.username,
                 "password_expires_at": null},
        "audit_ids": [format!("{:022x}", rand::random::<u128>() >> 40)],
        "expires_at": micros(expires),
        "issued_at": micros(issued),
    });
    if scoped {
        token["project"] = json!({"domain": domain, "id": a.project_id, "name": a.project_name});
        token["is_domain"] = false.into();
        token["roles"] = json!([{"id": hex_id(), "name": "member"},
                                {"id": hex_id(), "name": "reader"}]);
        token["catalog"] = catalog(fake);
    }
    if method == "application_credential" {
        token["application_credential"] =
            json!({"id": a.app_credential_id, "name": "nodeup", "restricted": true});
    }
    json!({ "token": token })
}

/// The service catalog: every service at the fake's address, in its one region, on all three
/// interfaces.
fn catalog(fake: &Shared) -> Value {
    let region = lock(&fake.config).region.clone();
    let base = &fake.base();
    let project = &fake.account.project_id;
    let services = [
        ("identity", "keystone", format!("{base}/identity")),
        ("compute", "nova", format!("{base}/compute/v2.1")),
        ("image", "glance", format!("{base}/image")),
        ("network", "neutron", format!("{base}/network")),
        (
            "block-storage",
            "cinder",
            format!("{base}/volume/v3/{project}"),
        ),
        (
            "volumev3",
            "cinderv3",
            format!("{base}/volume/v3/{project}"),
        ),
    ];
    services
        .iter()
        .map(|(kind, name, url)| {
            let endpoints: Vec<Value> = ["public", "internal", "admin"]
                .iter()
                .map(|interface| {
                    json!({"id": hex_id(), "interface": interface, "region": region,
                           "region_id": region, "url": url})
                })
                .collect();
            json!({"endpoints": endpoints, "id": hex_id(), "type": kind, "name": name})
        })
        .collect::<Vec<_>>()
        .into()
}

/// Whether the request's `X-Auth-Token` is a token that has not expired.
pub(super) fn authorized(fake: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    lock(&fake.data)
        .tokens
        .get(token)
        .is_some_and(|expires| *expires > SystemTime::now())
}

fn validate(fake: &Shared, headers: &HeaderMap) -> Response {
    if !authorized(fake, headers) {
        return unauthorized();
    }
    let Some(subject) = headers.get("x-subject-token").and_then(|v| v.to_str().ok()) else {
        return unauthorized();
    };
    let expires = lock(&fake.data).tokens.get(subject).copied();
    match expires {
        Some(expires) if expires > SystemTime::now() => {
            let body = token_body(fake, "password", true, SystemTime::now(), expires);
            let mut response = answer(StatusCode::OK, body);
            if let Ok(value) = subject.parse() {
                response.headers_mut().insert("x-subject-token", value);
            }
            response
        }
        _ => keystone_error(
            StatusCode::NOT_FOUND,
            "Not Found",
            &format!("Could not find token: {subject}."),
        )
        .into_response(),
    }
}
