//! The OpenStack API client: a Keystone v3 token (password or application credential), kept
//! while valid and renewed before it expires or when a service refuses it; the service catalog
//! (by region and interface); and JSON calls to Nova, Glance, Cinder and Neutron whose error
//! answers (`{"itemNotFound": {"message": ...}}`, `{"NeutronError": {...}}`, Keystone's
//! `{"error": ...}`) become errors that carry the service's message.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::config::Cloud;
use super::PROVIDER;
use crate::driver::{ProviderError, Result};
use crate::http::{HttpClient, Request, Response};
use crate::providers::kit::{ApiAnswer, Refusal};

/// A token is renewed when less than this much of its life is left (or a quarter of its whole
/// life, when that is shorter).
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The Nova microversion nodeup speaks: 2.2 is the first with key pair types (`"type": "ssh"`).
pub const COMPUTE_MICROVERSION: &str = "2.2";

/// The OpenStack services nodeup calls, by the catalog's service types (the first found wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Nova.
    Compute,
    /// Glance.
    Image,
    /// Neutron.
    Network,
    /// Cinder.
    Volume,
}

impl Service {
    /// The catalog types that name the service, the current one first.
    fn types(self) -> &'static [&'static str] {
        match self {
            Service::Compute => &["compute"],
            Service::Image => &["image"],
            Service::Network => &["network"],
            Service::Volume => &["block-storage", "volumev3", "volume"],
        }
    }

    /// The version path an endpoint without one gets (Glance and Neutron list theirs bare).
    fn version_suffix(self) -> Option<&'static str> {
        match self {
            Service::Image => Some("/v2"),
            Service::Network => Some("/v2.0"),
            Service::Compute | Service::Volume => None,
        }
    }

    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Service::Compute => "Nova (compute)",
            Service::Image => "Glance (image)",
            Service::Network => "Neutron (network)",
            Service::Volume => "Cinder (block-storage)",
        }
    }
}

/// An error answer of an OpenStack service.
#[derive(Debug, thiserror::Error)]
#[error("{}", error_text(.service, *.status, .kind, .message))]
pub struct OpenStackError {
    /// The service that answered.
    pub service: &'static str,
    /// The HTTP status (0: nothing was sent, the catalog has no such endpoint).
    pub status: u16,
    /// The error's kind as the service names it (`itemNotFound`, `forbidden`, Neutron's
    /// `FloatingIPNotFound` ...), when it does.
    pub kind: Option<String>,
    /// The service's message.
    pub message: String,
}

fn error_text(service: &str, status: u16, kind: &Option<String>, message: &str) -> String {
    if status == NOT_SENT {
        return message.to_string();
    }
    let kind = kind.as_ref().map(|k| format!(" ({k})")).unwrap_or_default();
    format!("{service} answered {status}{kind}: {message}")
}

/// The status of an error found before anything was sent (the catalog lacks the endpoint).
const NOT_SENT: u16 = 0;

impl ApiAnswer for OpenStackError {
    const PROVIDER: &'static str = PROVIDER;
    const CREDENTIALS_FROM: &'static str = super::CREDENTIALS_FROM;

    fn status(&self) -> u16 {
        self.status
    }

    fn refusal(&self) -> Refusal {
        match self.status {
            401 => Refusal::Credentials,
            404 => Refusal::Missing,
            _ => Refusal::Other,
        }
    }
}

/// Why an OpenStack call failed.
pub type CallError = crate::providers::kit::CallError<OpenStackError>;

/// Reads a service's error answer: the first object holding a `message` (Nova's and Cinder's
/// `{"kind": {...}}`, Neutron's `NeutronError`, Keystone's `error`), else the body's text.
fn error_of(service: &'static str, response: &Response) -> OpenStackError {
    let parsed: Option<Value> = serde_json::from_slice(&response.body).ok();
    let found = parsed.as_ref().and_then(|v| v.as_object()).and_then(|o| {
        o.iter().find_map(|(key, inner)| {
            let message = inner.get("message")?.as_str()?.to_string();
            let kind = inner
                .get("type")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| key.clone());
            Some((Some(kind), message))
        })
    });
    let (kind, message) = found.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&response.body);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        (None, text)
    });
    OpenStackError {
        service,
        status: response.status,
        kind,
        message,
    }
}

/// A token and the catalog that came with it.
#[derive(Clone)]
struct Token {
    value: String,
    /// When to get a new one.
    renew_at: Instant,
    catalog: Vec<CatalogEntry>,
    project_id: Option<String>,
}

/// One service of the catalog.
#[derive(Debug, Clone, Deserialize)]
struct CatalogEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    endpoints: Vec<Endpoint>,
}

/// One endpoint of a service.
#[derive(Debug, Clone, Deserialize)]
struct Endpoint {
    interface: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    url: String,
}

impl Endpoint {
    fn region(&self) -> Option<&str> {
        self.region_id.as_deref().or(self.region.as_deref())
    }
}

/// The part of Keystone's token answer nodeup reads.
#[derive(Debug, Deserialize)]
struct TokenAnswer {
    token: TokenBody,
}

#[derive(Debug, Deserialize)]
struct TokenBody {
    expires_at: String,
    #[serde(default)]
    issued_at: Option<String>,
    #[serde(default)]
    catalog: Vec<CatalogEntry>,
    #[serde(default)]
    project: Option<IdOnly>,
}

#[derive(Debug, Deserialize)]
struct IdOnly {
    id: String,
}

/// The OpenStack client of one cloud.
pub struct Client {
    cloud: Cloud,
    region: Option<String>,
    http: HttpClient,
    token: tokio::sync::Mutex<Option<Token>>,
    tokens_issued: AtomicU32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cloud", &self.cloud)
            .field("region", &self.region)
            .finish()
    }
}

/// How long a token lives, from its issue and expiry times (a day when they cannot be read).
fn lifetime(body: &TokenBody) -> Duration {
    let parse = |t: &str| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok();
    let expires = parse(&body.expires_at);
    let issued = body.issued_at.as_deref().and_then(parse);
    match (issued, expires) {
        (Some(issued), Some(expires)) => expires.duration_since(issued).unwrap_or_default(),
        (None, Some(expires)) => expires
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
        _ => Duration::from_secs(86_400),
    }
}

impl Client {
    /// A client of `cloud`, using the endpoints of `region` (over the cloud's own).
    ///
    /// # Errors
    /// The HTTP client cannot be made (the cloud's `cacert` cannot be used, say).
    pub fn new(cloud: Cloud, region: Option<String>) -> Result<Self> {
        let http = crate::providers::kit::http_client_trusting(PROVIDER, cloud.cacert.as_ref())?;
        let region = region.or_else(|| cloud.region.clone());
        Ok(Client {
            cloud,
            region,
            http,
            token: tokio::sync::Mutex::new(None),
            tokens_issued: AtomicU32::new(0),
        })
    }

    /// The cloud it talks to.
    pub fn cloud(&self) -> &Cloud {
        &self.cloud
    }

    /// The region whose endpoints it uses, when one is set.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// How many tokens Keystone issued to this client.
    pub fn tokens_issued(&self) -> u32 {
        self.tokens_issued.load(Ordering::Relaxed)
    }

    /// The HTTP client, to adjust (its retry policy, say).
    pub fn http_mut(&mut self) -> &mut HttpClient {
        &mut self.http
    }

    /// The error a refused authentication reads as: which cloud entry or variables to check.
    fn refused(&self, error: OpenStackError) -> ProviderError {
        ProviderError::InvalidCredentials {
            provider: PROVIDER.into(),
            message: format!("Keystone at {}: {}", self.cloud.auth_url, error.message),
            check: format!(
                "{} (username, password and project, or application_credential_id and \
                 application_credential_secret; OS_CLOUD picks the entry, OS_USERNAME, \
                 OS_PASSWORD, OS_PROJECT_NAME ... when there is none)",
                self.cloud.source
            ),
        }
    }

    /// Asks Keystone for a new token.
    async fn authenticate(&self) -> Result<Token, CallError> {
        let url = format!("{}/auth/tokens", self.cloud.auth_url);
        let body = serde_json::to_vec(&super::bodies::TokenRequest::new(&self.cloud.auth))
            .unwrap_or_default();
        let response = self
            .http
            .send(|| {
                let mut r = Request::new(Method::POST, url.clone())
                    .header("Content-Type", "application/json", false)
                    .header("Accept", "application/json", false);
                r.body = Some(body.clone());
                // A token request makes nothing: sending it again does no harm.
                r.idempotent = true;
                r
            })
            .await?;
        if !response.is_success() {
            let mut error = error_of("Keystone", &response);
            // A project or user Keystone does not know is a refusal of the credentials too.
            if matches!(response.status, 403 | 404) {
                error.status = 401;
            }
            return Err(CallError::Api(error));
        }
        let value = response
            .header("x-subject-token")
            .map(String::from)
            .ok_or_else(|| CallError::Decode("Keystone's answer has no X-Subject-Token".into()))?;
        let answer: TokenAnswer = serde_json::from_slice(&response.body)
            .map_err(|e| CallError::Decode(format!("Keystone's token: {e}")))?;
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
        let life = lifetime(&answer.token);
        let margin = RENEW_BEFORE.min(life / 4);
        Ok(Token {
            value,
            renew_at: Instant::now() + life.saturating_sub(margin),
            catalog: answer.token.catalog,
            project_id: answer.token.project.map(|p| p.id),
        })
    }

    /// The current token, renewed first when it is near its end (or `stale`, refused once).
    async fn token(&self, stale: Option<&str>) -> Result<Token, CallError> {
        let mut held = self.token.lock().await;
        if let Some(token) = held.as_ref() {
            let refused = stale == Some(token.value.as_str());
            if !refused && Instant::now() < token.renew_at {
                return Ok(token.clone());
            }
        }
        let token = self.authenticate().await?;
        *held = Some(token.clone());
        Ok(token)
    }

    /// The project the token is scoped to.
    ///
    /// # Errors
    /// Authentication failed.
    pub async fn project_id(&self) -> Result<Option<String>> {
        let token = self.token(None).await;
        Ok(token
            .map_err(|e| self.fail(e, "asking Keystone for a token".into()))?
            .project_id)
    }

    /// The regions of the catalog's compute endpoints (for the client's interface), sorted.
    ///
    /// # Errors
    /// Authentication failed.
    pub async fn regions(&self) -> Result<Vec<String>> {
        let token = self
            .token(None)
            .await
            .map_err(|e| self.fail(e, "asking Keystone for a token".into()))?;
        let mut regions: Vec<String> = token
            .catalog
            .iter()
            .filter(|e| Service::Compute.types().contains(&e.kind.as_str()))
            .flat_map(|e| &e.endpoints)
            .filter(|e| e.interface == self.cloud.interface)
            .filter_map(|e| e.region().map(String::from))
            .collect();
        regions.sort();
        regions.dedup();
        Ok(regions)
    }

    /// The base URL of `service` in the catalog, for the client's region and interface.
    fn endpoint(&self, token: &Token, service: Service) -> Result<String, CallError> {
        let entry = service
            .types()
            .iter()
            .find_map(|t| token.catalog.iter().find(|e| e.kind == *t))
            .ok_or_else(|| {
                not_sent(format!(
                    "the service catalog of {} has no {} service",
                    self.cloud.source,
                    service.name()
                ))
            })?;
        let interface = &self.cloud.interface;
        let usable = |e: &&Endpoint| {
            e.interface == *interface
                && self.region.as_deref().is_none_or(|r| e.region() == Some(r))
        };
        let endpoint = entry.endpoints.iter().find(usable).ok_or_else(|| {
            let mut regions: Vec<&str> =
                entry.endpoints.iter().filter_map(|e| e.region()).collect();
            regions.sort_unstable();
            regions.dedup();
            not_sent(format!(
                "{} has no {interface} {} endpoint in region {}; its regions are {} (set \
                 region_name in the cloud entry, OS_REGION_NAME, or `region` in [provider])",
                self.cloud.source,
                service.name(),
                self.region.as_deref().unwrap_or("(any)"),
                regions.join(", ")
            ))
        })?;
        let url = endpoint.url.trim_end_matches('/').to_string();
        Ok(match service.version_suffix() {
            Some(suffix) if !url.ends_with(suffix) => format!("{url}{suffix}"),
            _ => url,
        })
    }

    /// Calls `method path` on `service` (a path, or a whole URL a `next` link gave) with `body`
    /// as JSON, and decodes the answer as `T` (an empty answer reads as JSON `null`). A token a
    /// service refuses is renewed, and the call sent once more.
    ///
    /// # Errors
    /// What the service answered, a lost answer, or an answer that is not a `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, CallError> {
        let value = self.call_raw(service, method, path, body).await?;
        serde_json::from_value(value).map_err(|e| CallError::Decode(format!("{path}: {e}")))
    }

    /// [`Client::call`], the answer as JSON.
    pub async fn call_raw(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut stale: Option<String> = None;
        loop {
            let token = self.token(stale.as_deref()).await?;
            let url = if path.starts_with("http://") || path.starts_with("https://") {
                path.to_string()
            } else {
                format!("{}{path}", self.endpoint(&token, service)?)
            };
            let response = self
                .http
                .send(|| {
                    let mut r = Request::new(method.clone(), url.clone())
                        .header("X-Auth-Token", token.value.clone(), true)
                        .header("Accept", "application/json", false);
                    if service == Service::Compute {
                        let version = format!("compute {COMPUTE_MICROVERSION}");
                        r = r.header("OpenStack-API-Version", version, false);
                    }
                    if let Some(body) = &body {
                        r = r.header("Content-Type", "application/json", false);
                        r.body = Some(body.clone());
                    }
                    r
                })
                .await?;
            if response.status == 401 && stale.is_none() {
                stale = Some(token.value.clone());
                continue;
            }
            if !response.is_success() {
                return Err(CallError::Api(error_of(service.name(), &response)));
            }
            if response.body.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&response.body)
                .map_err(|e| CallError::Decode(format!("{url}: {e}")));
        }
    }

    /// The provider error of a failed call of `context`; a refused token names the cloud's
    /// credentials.
    pub fn fail(&self, error: CallError, context: String) -> ProviderError {
        match error {
            CallError::Api(e) if e.status == 401 => self.refused(e),
            CallError::Api(e) if e.status == NOT_SENT => super::invalid(e.message),
            e => e.into_provider(context),
        }
    }
}

/// An error found before a request was sent: the catalog lacks what it needs.
fn not_sent(message: String) -> CallError {
    CallError::Api(OpenStackError {
        service: "the service catalog",
        status: NOT_SENT,
        kind: None,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn each_service_s_error_body_is_read() {
        let nova = error_of(
            "Nova",
            &answer(
                403,
                r#"{"forbidden": {"code": 403, "message": "Quota exceeded for cores"}}"#,
            ),
        );
        assert_eq!(nova.kind.as_deref(), Some("forbidden"));
        assert_eq!(nova.message, "Quota exceeded for cores");
        let neutron = error_of(
            "Neutron",
            &answer(
                404,
                r#"{"NeutronError": {"type": "ExternalNetworkNotFound", "message": "no net", "detail": ""}}"#,
            ),
        );
        assert_eq!(neutron.kind.as_deref(), Some("ExternalNetworkNotFound"));
        let glance = error_of(
            "Glance",
            &answer(
                404,
                "404 Not Found\n\nThe resource could not be found.\n\n   ",
            ),
        );
        assert_eq!(
            glance.message,
            "404 Not Found The resource could not be found."
        );
    }

    #[test]
    fn a_token_s_life_is_read_from_its_times() {
        let body = TokenBody {
            expires_at: "2026-12-05T10:00:00.000000Z".into(),
            issued_at: Some("2026-12-05T09:00:00.000000Z".into()),
            catalog: vec![],
            project: None,
        };
        assert_eq!(lifetime(&body), Duration::from_secs(3600));
    }
}
