//! NephoScale (`nephoscale`): cloud servers over NephoScale's REST API.
//!
//! Credentials: `NEPHOSCALE_USERNAME` and `NEPHOSCALE_PASSWORD`, sent as HTTP Basic auth on every
//! request; `NEPHOSCALE_ENDPOINT` replaces `https://api.nephoscale.com` (a fake's address, say).
//! Paths end with a slash, as the API requires; writes are form-encoded. Every answer is an
//! envelope (`success`, `response`, `message`, `data`), a success when `response` is 200, 201, 202
//! or 204.

mod driver;

use std::fmt;

use base64::Engine as _;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::driver::ProviderError;
use crate::http::{HttpClient, Request, Response};
use crate::providers::{http_client, Refusal};

pub use driver::{NephoScaleDriver, NephoScaleOptions};

/// The provider's name.
pub const PROVIDER: &str = "nephoscale";

/// The API's address unless `NEPHOSCALE_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://api.nephoscale.com";

/// Where the credentials come from, for the messages that ask to check them.
const CREDENTIALS_FROM: &str = "NEPHOSCALE_USERNAME and NEPHOSCALE_PASSWORD";

/// The `response` codes of a successful envelope.
const SUCCESS_CODES: [u16; 4] = [200, 201, 202, 204];

/// NephoScale credentials.
#[derive(Clone)]
pub struct Credentials {
    /// The API's base URL, without a trailing slash.
    pub endpoint: String,
    /// The account's user name.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl Credentials {
    /// From `NEPHOSCALE_USERNAME`, `NEPHOSCALE_PASSWORD` and `NEPHOSCALE_ENDPOINT`.
    ///
    /// # Errors
    /// A variable that is missing or cannot go in an HTTP header, named.
    pub fn from_env() -> Result<Self, ProviderError> {
        let need = |var: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    invalid(format!(
                        "set {var} (the API's credentials: {CREDENTIALS_FROM})"
                    ))
                })
        };
        let creds = Credentials {
            endpoint: crate::providers::kit::endpoint(
                PROVIDER,
                "NEPHOSCALE_ENDPOINT",
                &std::env::var("NEPHOSCALE_ENDPOINT")
                    .ok()
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
                CREDENTIALS_FROM,
            )?,
            username: need("NEPHOSCALE_USERNAME")?,
            password: need("NEPHOSCALE_PASSWORD")?,
        };
        if creds.username.contains(':') {
            return Err(invalid(
                "NEPHOSCALE_USERNAME holds a ':', which HTTP Basic auth cannot carry".into(),
            ));
        }
        for (var, value) in [
            ("NEPHOSCALE_USERNAME", &creds.username),
            ("NEPHOSCALE_PASSWORD", &creds.password),
        ] {
            if value.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "{var} holds a control character (a newline pasted with it?)"
                )));
            }
        }
        Ok(creds)
    }

    fn authorization(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

fn invalid(message: String) -> ProviderError {
    ProviderError::InvalidRequest {
        provider: PROVIDER.into(),
        message,
    }
}

/// NephoScale's envelope around every answer.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    response: u16,
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: Value,
}

/// An error NephoScale answered (HTTP status, and the envelope's `response` and `message`).
#[derive(Debug, thiserror::Error)]
#[error("NephoScale answered {status} (response {response}): {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The envelope's `response` code.
    pub response: u16,
    /// The envelope's `message`, or the body when there is no envelope.
    pub message: String,
}

impl crate::providers::kit::ApiAnswer for ApiError {
    const PROVIDER: &'static str = PROVIDER;
    const CREDENTIALS_FROM: &'static str = CREDENTIALS_FROM;

    fn status(&self) -> u16 {
        self.status
    }

    /// The HTTP status or the envelope's `response` says it.
    fn refusal(&self) -> Refusal {
        let said = |code: u16| self.status == code || self.response == code;
        if said(401) {
            Refusal::Credentials
        } else if said(404) {
            Refusal::Missing
        } else {
            Refusal::Other
        }
    }
}

/// Why a NephoScale call failed.
pub type CallError = crate::providers::kit::CallError<ApiError>;

/// The NephoScale API client: Basic auth, trailing slashes, form-encoded writes, envelopes.
#[derive(Debug, Clone)]
pub struct Client {
    creds: Credentials,
    http: HttpClient,
}

impl Client {
    /// A client for these credentials.
    ///
    /// # Errors
    /// The HTTP client cannot be built (the `NODEUP_DEBUG` file cannot be opened).
    pub fn new(creds: Credentials) -> Result<Self, ProviderError> {
        let http = http_client(PROVIDER)?;
        Ok(Client { creds, http })
    }

    /// The HTTP client, to adjust (its retry policy, say).
    pub fn http_mut(&mut self) -> &mut HttpClient {
        &mut self.http
    }

    /// Calls `METHOD path` (a trailing slash is added when missing) with `form` as the body of a
    /// write, and decodes the envelope's `data` as `T`.
    ///
    /// # Errors
    /// What NephoScale answered, a lost answer, or data that is not a `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        form: &[(&str, String)],
    ) -> Result<T, CallError> {
        let data = self.call_raw(method, path, form).await?;
        serde_json::from_value(data).map_err(|e| CallError::Decode(format!("{path}: {e}")))
    }

    /// [`Client::call`], the envelope's `data` as it came.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        form: &[(&str, String)],
    ) -> Result<Value, CallError> {
        let path = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        let url = format!("{}{path}", self.creds.endpoint);
        let body = (method != Method::GET && method != Method::DELETE).then(|| {
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
                .finish()
                .into_bytes()
        });
        let auth = self.creds.authorization();
        let response = self
            .http
            .send(|| {
                let mut request = Request::new(method.clone(), url.clone())
                    .header("Authorization", auth.clone(), true)
                    .header("Accept", "application/json", false);
                if let Some(body) = &body {
                    request =
                        request.header("Content-Type", "application/x-www-form-urlencoded", false);
                    request.body = Some(body.clone());
                }
                request
            })
            .await?;
        envelope(&response)
    }
}

/// The `data` of a successful envelope, or the error it says.
fn envelope(response: &Response) -> Result<Value, CallError> {
    let parsed: Option<Envelope> = serde_json::from_slice(&response.body).ok();
    match parsed {
        Some(e) if response.is_success() && e.success && SUCCESS_CODES.contains(&e.response) => {
            Ok(e.data)
        }
        Some(e) => Err(ApiError {
            status: response.status,
            response: e.response,
            message: e.message,
        }
        .into()),
        None if response.is_success() && response.body.is_empty() => Ok(Value::Null),
        None => Err(ApiError {
            status: response.status,
            response: response.status,
            message: String::from_utf8_lossy(&response.body).trim().to_string(),
        }
        .into()),
    }
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
    fn envelopes_say_success_by_their_response_code() {
        let ok = answer(
            200,
            r#"{"success":true,"response":202,"message":"ok","data":{"id":1}}"#,
        );
        assert_eq!(envelope(&ok).unwrap()["id"], 1);
        let refused = answer(
            200,
            r#"{"success":false,"response":409,"message":"name taken","data":{}}"#,
        );
        let e = envelope(&refused).unwrap_err().to_string();
        assert!(
            e.contains("response 409") && e.contains("name taken"),
            "{e}"
        );
        let unauthorized = answer(401, "Authorization Required");
        let e = envelope(&unauthorized)
            .unwrap_err()
            .into_provider("listing".into());
        assert!(matches!(e, ProviderError::InvalidCredentials { .. }), "{e}");
    }

    #[test]
    fn basic_auth_and_secrets() {
        let creds = Credentials {
            endpoint: DEFAULT_ENDPOINT.into(),
            username: "user".into(),
            password: "pass".into(),
        };
        assert_eq!(creds.authorization(), "Basic dXNlcjpwYXNz");
        assert!(!format!("{creds:?}").contains("pass\""));
    }
}
