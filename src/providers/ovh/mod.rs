//! OVHcloud: credentials read the way OVH's own clients read them, the signed API client, and the
//! Public Cloud driver (`cloud`).
//!
//! Credentials: `OVH_ENDPOINT`, `OVH_APPLICATION_KEY`, `OVH_APPLICATION_SECRET`, `OVH_CONSUMER_KEY`,
//! over `ovh.conf` files (`/etc/ovh.conf`, then `~/.ovh.conf`, then `./ovh.conf`, later ones winning;
//! `[default] endpoint=`, then a section per endpoint). The endpoint is a name (`ovh-eu` ...) or a
//! base URL (`https://eu.api.ovh.com/1.0`, or a fake's).

pub mod cloud;
mod create;
pub mod dedicated;
pub mod sign;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::driver::ProviderError;
use crate::http::{HttpClient, Request, Response};
use crate::providers::Refusal;

pub use cloud::OvhDriver;

/// The provider's name.
pub const PROVIDER: &str = "ovh";

/// The endpoints OVH's clients know by name.
pub const ENDPOINTS: [(&str, &str); 7] = [
    ("ovh-eu", "https://eu.api.ovh.com/1.0"),
    ("ovh-ca", "https://ca.api.ovh.com/1.0"),
    ("ovh-us", "https://api.us.ovhcloud.com/1.0"),
    ("kimsufi-eu", "https://eu.api.kimsufi.com/1.0"),
    ("kimsufi-ca", "https://ca.api.kimsufi.com/1.0"),
    ("soyoustart-eu", "https://eu.api.soyoustart.com/1.0"),
    ("soyoustart-ca", "https://ca.api.soyoustart.com/1.0"),
];

/// A secret string: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// OVH API credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// An endpoint name or a base URL.
    pub endpoint: String,
    /// The application key.
    pub application_key: String,
    /// The application secret.
    pub application_secret: Secret,
    /// The consumer key (absent only while asking for one).
    pub consumer_key: Option<Secret>,
}

impl Credentials {
    /// From the environment over `ovh.conf` files; what is missing is named with where to set it.
    pub fn from_env() -> Result<Self, ProviderError> {
        let mut endpoint = None;
        let mut values: BTreeMap<&str, String> = BTreeMap::new();
        let mut configs = Vec::new();
        for path in config_files() {
            if let Some(ini) = read_config(&path)? {
                configs.push(ini);
            }
        }
        for ini in &configs {
            if let Some(e) = ini.get_from(Some("default"), "endpoint") {
                endpoint = Some(e.to_string());
            }
        }
        if let Ok(e) = std::env::var("OVH_ENDPOINT") {
            endpoint = Some(e);
        }
        let endpoint = endpoint.unwrap_or_else(|| "ovh-eu".to_string());
        for ini in &configs {
            for key in ["application_key", "application_secret", "consumer_key"] {
                if let Some(v) = ini.get_from(Some(endpoint.as_str()), key) {
                    values.insert(key, v.to_string());
                }
            }
        }
        for (key, var) in [
            ("application_key", "OVH_APPLICATION_KEY"),
            ("application_secret", "OVH_APPLICATION_SECRET"),
            ("consumer_key", "OVH_CONSUMER_KEY"),
        ] {
            if let Ok(v) = std::env::var(var) {
                values.insert(key, v);
            }
        }
        let need = |key: &str, var: &str| {
            values.get(key).cloned().ok_or_else(|| {
                invalid(format!(
                    "no {key}: set {var}, or `{key}=` under [{endpoint}] in ovh.conf \
                     (./ovh.conf, ~/.ovh.conf or /etc/ovh.conf)"
                ))
            })
        };
        Ok(Credentials {
            application_key: need("application_key", "OVH_APPLICATION_KEY")?,
            application_secret: Secret(need("application_secret", "OVH_APPLICATION_SECRET")?),
            consumer_key: values.get("consumer_key").cloned().map(Secret),
            endpoint,
        })
    }

    /// Checks that every value can go in an HTTP header (a key pasted with its newline cannot):
    /// bad input, said at once, rather than a request that is never sent and retried.
    pub fn validate(&self) -> Result<(), ProviderError> {
        let values = [
            (
                "application key",
                "OVH_APPLICATION_KEY",
                Some(&self.application_key),
            ),
            (
                "application secret",
                "OVH_APPLICATION_SECRET",
                Some(&self.application_secret.0),
            ),
            (
                "consumer key",
                "OVH_CONSUMER_KEY",
                self.consumer_key.as_ref().map(|c| &c.0),
            ),
        ];
        for (what, var, value) in values {
            let Some(value) = value else { continue };
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "the {what} ({var}, or ovh.conf) is empty or holds a space, newline or other \
                     character an HTTP header cannot carry: set it again without it"
                )));
            }
        }
        Ok(())
    }

    /// The base URL of the endpoint.
    pub fn base_url(&self) -> Result<String, ProviderError> {
        if self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://") {
            return crate::providers::kit::endpoint(
                PROVIDER,
                "OVH_ENDPOINT",
                &self.endpoint,
                "OVH_APPLICATION_KEY, OVH_APPLICATION_SECRET and OVH_CONSUMER_KEY (or ovh.conf)",
            );
        }
        ENDPOINTS
            .iter()
            .find(|(name, _)| *name == self.endpoint)
            .map(|(_, url)| url.to_string())
            .ok_or_else(|| {
                invalid(format!(
                    "unknown OVH endpoint {:?}: use one of {} or a base URL",
                    self.endpoint,
                    ENDPOINTS.map(|e| e.0).join(", ")
                ))
            })
    }
}

/// Reads one ovh.conf: `None` when there is none; an error naming the file when it is there but
/// cannot be used (a directory, unreadable, not text, not INI), never a silent skip.
fn read_config(path: &std::path::Path) -> Result<Option<ini::Ini>, ProviderError> {
    let unusable = |why: String| {
        invalid(format!(
            "{}: {why}; fix or remove it (OVH credentials are read from it)",
            path.display()
        ))
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unusable(format!("cannot read it ({e})"))),
        Ok(m) if !m.is_file() => return Err(unusable("is not a file".into())),
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| unusable(format!("cannot read it as text ({e})")))?;
    ini::Ini::load_from_str(&text)
        .map(Some)
        .map_err(|e| unusable(format!("does not parse as an ovh.conf ({e})")))
}

fn config_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/ovh.conf")];
    if let Some(home) = std::env::var_os("HOME") {
        files.push(PathBuf::from(home).join(".ovh.conf"));
    }
    files.push(PathBuf::from("ovh.conf"));
    files
}

pub use crate::providers::kit::segment;

/// Refuses a path with a `.` or `..` segment, written plainly or percent-encoded (URL parsing
/// resolves both, so the request would reach another resource than the one signed for).
fn refuse_dot_segments(path: &str) -> Result<(), CallError> {
    let path_only = path.split('?').next().unwrap_or_default();
    for piece in path_only.split('/').skip(1) {
        let decoded = piece.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(CallError::NoSuchObject(format!(
                "no object is named {piece:?} (in {path})"
            )));
        }
    }
    Ok(())
}

fn invalid(message: String) -> ProviderError {
    ProviderError::InvalidRequest {
        provider: PROVIDER.into(),
        message,
    }
}

/// An error the OVH API answered.
#[derive(Debug, thiserror::Error)]
#[error("OVH answered {status}{}: {message}{}", code.as_ref().map(|c| format!(" {c}")).unwrap_or_default(), query_id.as_ref().map(|q| format!(" (X-Ovh-QueryID: {q})")).unwrap_or_default())]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// `errorCode` (older bodies) or `class` (newer ones).
    pub code: Option<String>,
    /// `message`.
    pub message: String,
    /// `X-Ovh-QueryID`, for OVH support.
    pub query_id: Option<String>,
}

impl ApiError {
    fn from_response(response: &Response) -> Self {
        let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let code = body
            .get("errorCode")
            .or_else(|| body.get("class"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&response.body).trim().to_string());
        ApiError {
            status: response.status,
            code,
            message,
            query_id: response.header("x-ovh-queryid").map(str::to_string),
        }
    }

    /// Whether the credentials are at fault (a configuration error: nothing can work).
    pub fn is_credentials(&self) -> bool {
        self.status == 401
            || matches!(
                self.code.as_deref(),
                Some(
                    "INVALID_KEY"
                        | "INVALID_CREDENTIAL"
                        | "NOT_CREDENTIAL"
                        | "NOT_GRANTED_CALL"
                        | "INVALID_SIGNATURE"
                )
            )
    }
}

impl crate::providers::kit::ApiAnswer for ApiError {
    const PROVIDER: &'static str = PROVIDER;
    const CREDENTIALS_FROM: &'static str = "OVH_APPLICATION_KEY, OVH_APPLICATION_SECRET and \
         OVH_CONSUMER_KEY (or ovh.conf); `nodeup ovh consumer-key` asks for a new consumer key";

    fn status(&self) -> u16 {
        self.status
    }

    fn refusal(&self) -> Refusal {
        match self.status {
            _ if self.is_credentials() => Refusal::Credentials,
            404 => Refusal::Missing,
            _ => Refusal::Other,
        }
    }
}

/// Why an OVH call failed.
pub type CallError = crate::providers::kit::CallError<ApiError>;

/// The signed OVH API client.
#[derive(Debug)]
pub struct Client {
    http: HttpClient,
    base: String,
    creds: Credentials,
    delta: OnceCell<i64>,
}

impl Client {
    /// A client for these credentials.
    pub fn new(creds: Credentials) -> Result<Self, ProviderError> {
        creds.validate()?;
        let base = creds.base_url()?;
        let http = crate::providers::http_client(PROVIDER)?;
        Ok(Client {
            http,
            base,
            creds,
            delta: OnceCell::new(),
        })
    }

    /// The HTTP client (to adjust its retry policy).
    pub fn http_mut(&mut self) -> &mut HttpClient {
        &mut self.http
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    /// `server time - local time`, asked once (`GET /auth/time`).
    async fn delta(&self) -> Result<i64, CallError> {
        self.delta
            .get_or_try_init(|| async {
                let url = format!("{}/auth/time", self.base);
                let app = self.creds.application_key.clone();
                let response = self
                    .http
                    .send(|| {
                        Request::new(Method::GET, url.clone()).header(
                            "X-Ovh-Application",
                            app.clone(),
                            false,
                        )
                    })
                    .await?;
                if !response.is_success() {
                    return Err(CallError::Api(ApiError::from_response(&response)));
                }
                let server: i64 = serde_json::from_slice(&response.body)
                    .map_err(|e| CallError::Decode(format!("GET /auth/time: {e}")))?;
                Ok(server - Self::now())
            })
            .await
            .copied()
    }

    /// Calls `METHOD path` (path under the base URL, e.g. `/cloud/project/x/instance`), signed,
    /// with a JSON body, and returns the JSON answer (`null` for an empty one).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let response = self.call_raw(method.clone(), path, body, true).await?;
        if !response.is_success() {
            return Err(CallError::Api(ApiError::from_response(&response)));
        }
        if response.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| CallError::Decode(format!("{method} {path}: {e}")))
    }

    /// Sends a request, signed when `signed`, and returns the answer whatever its status.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        signed: bool,
    ) -> Result<Response, CallError> {
        refuse_dot_segments(path)?;
        let delta = if signed { self.delta().await? } else { 0 };
        let url = format!("{}{}", self.base, path);
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let consumer = self.creds.consumer_key.clone();
        let build = || {
            let mut request = Request::new(method.clone(), url.clone()).header(
                "X-Ovh-Application",
                self.creds.application_key.clone(),
                false,
            );
            if body.is_some() {
                request = request.header("Content-Type", "application/json", false);
            }
            if let (true, Some(consumer)) = (signed, &consumer) {
                let timestamp = Self::now() + delta;
                let signature = sign::signature(
                    &self.creds.application_secret.0,
                    &consumer.0,
                    method.as_str(),
                    &url,
                    body.as_deref().unwrap_or_default(),
                    timestamp,
                );
                request = request
                    .header("X-Ovh-Consumer", consumer.0.clone(), true)
                    .header("X-Ovh-Timestamp", timestamp.to_string(), false)
                    .header("X-Ovh-Signature", signature, true);
            }
            request.body = body.clone();
            request
        };
        Ok(self.http.send(build).await?)
    }

    /// Asks for a consumer key with these access rules; returns `(consumer key, validation URL)`.
    pub async fn request_consumer_key(
        &self,
        rules: &[(&str, &str)],
    ) -> Result<(String, String), CallError> {
        let body = serde_json::json!({
            "accessRules": rules.iter().map(|(m, p)| serde_json::json!({"method": m, "path": p})).collect::<Vec<_>>(),
        });
        let response = self
            .call_raw(Method::POST, "/auth/credential", Some(&body), false)
            .await?;
        if !response.is_success() {
            return Err(CallError::Api(ApiError::from_response(&response)));
        }
        let value: Value = serde_json::from_slice(&response.body)
            .map_err(|e| CallError::Decode(format!("POST /auth/credential: {e}")))?;
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| CallError::Decode(format!("POST /auth/credential: no {name}")))
        };
        Ok((field("consumerKey")?, field("validationUrl")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_change_the_path() {
        assert_eq!(segment("abc-123_x.y~z"), "abc-123_x.y~z");
        assert_eq!(segment("../../me"), "..%2F..%2Fme");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("a?b#c d"), "a%3Fb%23c%20d");
    }

    #[test]
    fn credentials_that_cannot_be_headers_are_refused() {
        let creds = |consumer: &str| Credentials {
            endpoint: "ovh-eu".into(),
            application_key: "app".into(),
            application_secret: Secret("secret".into()),
            consumer_key: Some(Secret(consumer.into())),
        };
        assert!(creds("ck").validate().is_ok());
        let err = creds("CK7value\n").validate().unwrap_err().to_string();
        assert!(
            err.contains("OVH_CONSUMER_KEY") && err.contains("newline"),
            "{err}"
        );
        assert!(!err.contains("CK7value"), "the value is not shown: {err}");
    }
}
