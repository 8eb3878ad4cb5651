//! SlipStream (`slipstream`): application deployment as runs of App Store modules (SixSq's
//! SlipStream v3, as its last release documented it).
//!
//! A session is a cookie (`com.sixsq.slipstream.cookie`), made by logging in with a user name and
//! password (`SLIPSTREAM_USERNAME`, `SLIPSTREAM_PASSWORD`) or an API key and secret
//! (`SLIPSTREAM_KEY` = `credential/<uuid>`, `SLIPSTREAM_SECRET`), or taken from a cookie file
//! (`SLIPSTREAM_COOKIE_FILE`, Netscape format as curl writes it; a session made by logging in is
//! written there, mode 0600, for the next command). `SLIPSTREAM_ENDPOINT` replaces
//! `https://nuv.la`. An expired session is made again once, when there are credentials to make it.

mod cimi;
mod driver;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::driver::ProviderError;
use crate::http::{HttpClient, Request, Response};
use crate::providers::{http_client, Refusal};

pub use driver::{RunState, SlipStreamDriver, SlipStreamOptions, VirtualMachine};

/// The provider's name.
pub const PROVIDER: &str = "slipstream";

/// The service's address unless `SLIPSTREAM_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://nuv.la";

/// The session cookie's name.
pub const COOKIE: &str = "com.sixsq.slipstream.cookie";

/// Where the credentials come from, for the messages that ask to check them.
const CREDENTIALS_FROM: &str = "SLIPSTREAM_USERNAME and SLIPSTREAM_PASSWORD, or SLIPSTREAM_KEY \
                                and SLIPSTREAM_SECRET, or SLIPSTREAM_COOKIE_FILE";

/// How to log in.
#[derive(Clone)]
pub enum Login {
    /// A user name and password (`session-template/internal`).
    Password {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
    /// An API key (`credential/<uuid>`) and its secret (`session-template/api-key`).
    ApiKey {
        /// The key.
        key: String,
        /// The secret.
        secret: String,
    },
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Login::Password { username, .. } => write!(f, "Password({username}, ***)"),
            Login::ApiKey { key, .. } => write!(f, "ApiKey({key}, ***)"),
        }
    }
}

/// SlipStream credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The service's base URL, without a trailing slash.
    pub endpoint: String,
    /// How to log in; `None` with a cookie file only.
    pub login: Option<Login>,
    /// A cookie file to take the session from, and to keep a new one in.
    pub cookie_file: Option<PathBuf>,
}

fn invalid(message: String) -> ProviderError {
    ProviderError::InvalidRequest {
        provider: PROVIDER.into(),
        message,
    }
}

impl Credentials {
    /// From the `SLIPSTREAM_*` variables.
    ///
    /// # Errors
    /// No way to log in, or half of a pair, named.
    pub fn from_env() -> Result<Self, ProviderError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let login = match (
            var("SLIPSTREAM_USERNAME"),
            var("SLIPSTREAM_PASSWORD"),
            var("SLIPSTREAM_KEY"),
            var("SLIPSTREAM_SECRET"),
        ) {
            (Some(username), Some(password), _, _) => Some(Login::Password { username, password }),
            (_, _, Some(key), Some(secret)) => {
                if !key.starts_with("credential/") {
                    return Err(invalid(format!(
                        "SLIPSTREAM_KEY {key:?} is not an API key id: it looks like credential/<uuid>"
                    )));
                }
                Some(Login::ApiKey { key, secret })
            }
            (Some(_), None, _, _) => {
                return Err(invalid(
                    "SLIPSTREAM_USERNAME is set without SLIPSTREAM_PASSWORD".into(),
                ))
            }
            (_, _, Some(_), None) => {
                return Err(invalid(
                    "SLIPSTREAM_KEY is set without SLIPSTREAM_SECRET".into(),
                ))
            }
            _ => None,
        };
        let cookie_file = var("SLIPSTREAM_COOKIE_FILE").map(PathBuf::from);
        if let Some(path) = &cookie_file {
            match crate::files::check_regular(path) {
                Err(e) if !e.is_not_found() => {
                    return Err(invalid(format!("SLIPSTREAM_COOKIE_FILE: {e}")))
                }
                _ => {}
            }
        }
        if login.is_none() && cookie_file.is_none() {
            return Err(invalid(format!("no way to log in: set {CREDENTIALS_FROM}")));
        }
        Ok(Credentials {
            endpoint: crate::providers::kit::endpoint(
                PROVIDER,
                "SLIPSTREAM_ENDPOINT",
                &var("SLIPSTREAM_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
                CREDENTIALS_FROM,
            )?,
            login,
            cookie_file,
        })
    }
}

/// An error SlipStream answered: its status and what its error document said.
#[derive(Debug, thiserror::Error)]
#[error("SlipStream answered {status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The error's detail (XML `<error detail>`, JSON `message`), or the body.
    pub message: String,
}

impl crate::providers::kit::ApiAnswer for ApiError {
    const PROVIDER: &'static str = PROVIDER;
    const CREDENTIALS_FROM: &'static str = CREDENTIALS_FROM;

    fn status(&self) -> u16 {
        self.status
    }

    fn refusal(&self) -> Refusal {
        match self.status {
            401 | 403 => Refusal::Credentials,
            404 => Refusal::Missing,
            _ => Refusal::Other,
        }
    }
}

/// Why a SlipStream call failed.
pub type CallError = crate::providers::kit::CallError<ApiError>;

/// `<error code reason detail/>`, SlipStream's XML error document.
#[derive(Debug, Deserialize)]
struct XmlError {
    #[serde(rename = "@detail", default)]
    detail: Option<String>,
    #[serde(rename = "$text", default)]
    text: Option<String>,
}

/// The error a failed answer carries.
fn api_error(response: &Response) -> ApiError {
    let body = String::from_utf8_lossy(&response.body).trim().to_string();
    let message = if body.starts_with('<') {
        quick_xml::de::from_str::<XmlError>(&body)
            .ok()
            .and_then(|e| e.detail.or(e.text))
            .unwrap_or(body)
    } else {
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(body)
    };
    ApiError {
        status: response.status,
        message,
    }
}

/// A body to send: form fields, JSON, or XML.
pub enum Body {
    /// Nothing.
    None,
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
    /// `application/json`.
    Json(Value),
    /// `application/xml`.
    Xml(String),
}

impl Body {
    fn encode(&self) -> Option<(&'static str, Vec<u8>)> {
        match self {
            Body::None => None,
            Body::Form(fields) => Some((
                "application/x-www-form-urlencoded",
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(fields.iter())
                    .finish()
                    .into_bytes(),
            )),
            Body::Json(value) => Some(("application/json", value.to_string().into_bytes())),
            Body::Xml(text) => Some(("application/xml", text.clone().into_bytes())),
        }
    }
}

/// The SlipStream client: the session cookie, made or taken, and made again once it expired.
#[derive(Debug)]
pub struct Client {
    creds: Credentials,
    http: HttpClient,
    session: Mutex<Option<String>>,
}

impl Client {
    /// A client for these credentials (no request is made yet).
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(creds: Credentials) -> Result<Self, ProviderError> {
        let http = http_client(PROVIDER)?;
        Ok(Client {
            creds,
            http,
            session: Mutex::new(None),
        })
    }

    /// The HTTP client, to adjust (its retry policy, say).
    pub fn http_mut(&mut self) -> &mut HttpClient {
        &mut self.http
    }

    /// Calls `METHOD path` (with a query, if any) with `accept` as the wanted type; a successful
    /// answer (2xx) whatever its body. A session refused (401) is made again once.
    ///
    /// # Errors
    /// What SlipStream answered, a lost answer, or no session to be had.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: &Body,
    ) -> Result<Response, CallError> {
        let mut fresh = false;
        loop {
            let cookie = match self.cookie().await? {
                Some(cookie) => cookie,
                None => {
                    fresh = true;
                    self.login().await?
                }
            };
            let response = self
                .send(method.clone(), path, accept, body, Some(&cookie))
                .await?;
            if response.status == 401 && !fresh && self.creds.login.is_some() {
                *self.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.forget_cookie_file();
                fresh = true;
                continue;
            }
            if response.is_success() {
                return Ok(response);
            }
            return Err(api_error(&response).into());
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: &Body,
        cookie: Option<&str>,
    ) -> Result<Response, CallError> {
        let url = format!("{}{path}", self.creds.endpoint);
        let encoded = body.encode();
        let response = self
            .http
            .send(|| {
                let mut request =
                    Request::new(method.clone(), url.clone()).header("Accept", accept, false);
                if let Some(cookie) = cookie {
                    request = request.header("Cookie", format!("{COOKIE}={cookie}"), true);
                }
                if let Some((kind, bytes)) = &encoded {
                    request = request.header("Content-Type", *kind, false);
                    request.body = Some(bytes.clone());
                }
                request
            })
            .await?;
        Ok(response)
    }

    /// The session cookie held, else the cookie file's.
    async fn cookie(&self) -> Result<Option<String>, CallError> {
        if let Some(cookie) = self
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(Some(cookie));
        }
        let Some(path) = &self.creds.cookie_file else {
            return Ok(None);
        };
        let from_file = read_cookie_file(path)?;
        if from_file.is_none() && self.creds.login.is_none() {
            return Err(ApiError {
                status: 401,
                message: format!(
                    "{} holds no unexpired {COOKIE} session; log in again",
                    path.display()
                ),
            }
            .into());
        }
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = from_file.clone();
        Ok(from_file)
    }

    /// Logs in (`POST /api/session`); the new session's cookie, kept and written to the cookie
    /// file when there is one.
    async fn login(&self) -> Result<String, CallError> {
        let Some(login) = &self.creds.login else {
            return Err(ApiError {
                status: 401,
                message: "the session expired, and there are no credentials to make another".into(),
            }
            .into());
        };
        let template = match login {
            Login::Password { username, password } => json!({
                "href": "session-template/internal", "username": username, "password": password,
            }),
            Login::ApiKey { key, secret } => json!({
                "href": "session-template/api-key", "key": key, "secret": secret,
            }),
        };
        let body = Body::Json(json!({ "sessionTemplate": template }));
        let response = self
            .send(
                Method::POST,
                "/api/session",
                "application/json",
                &body,
                None,
            )
            .await?;
        if !response.is_success() {
            return Err(api_error(&response).into());
        }
        let (cookie, expires) = session_cookie(&response)
            .ok_or_else(|| CallError::Decode(format!("the login set no {COOKIE} cookie")))?;
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(cookie.clone());
        if let Some(path) = &self.creds.cookie_file {
            write_cookie_file(path, &self.creds.endpoint, &cookie, expires)?;
        }
        Ok(cookie)
    }

    fn forget_cookie_file(&self) {
        if let Some(path) = &self.creds.cookie_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The session cookie a login set, and when it expires (seconds since the epoch; 0: unknown).
fn session_cookie(response: &Response) -> Option<(String, u64)> {
    response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| {
            let mut parts = v.split(';').map(str::trim);
            let value = parts
                .next()?
                .strip_prefix(&format!("{COOKIE}="))?
                .to_string();
            let expires = parts
                .find_map(|p| p.strip_prefix("Expires=").or(p.strip_prefix("expires=")))
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            Some((value, expires))
        })
}

/// The unexpired session cookie of a Netscape cookie file, if any.
fn read_cookie_file(path: &Path) -> Result<Option<String>, CallError> {
    let text = match crate::files::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => {
            return Err(CallError::Local {
                what: format!("cookie file {}", path.display()),
                source: std::io::Error::other(e),
            })
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(text.lines().find_map(|line| {
        let fields: Vec<&str> = line.trim_start_matches("#HttpOnly_").split('\t').collect();
        let [_, _, _, _, expires, name, value] = fields.as_slice() else {
            return None;
        };
        let expires: u64 = expires.parse().ok()?;
        (*name == COOKIE && (expires == 0 || expires > now)).then(|| value.to_string())
    }))
}

/// Writes the session to a Netscape cookie file, mode 0600, atomically.
fn write_cookie_file(
    path: &Path,
    endpoint: &str,
    cookie: &str,
    expires: u64,
) -> Result<(), CallError> {
    let fail = |source| CallError::Local {
        what: format!("cookie file {}", path.display()),
        source,
    };
    let host = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    let text = format!("# Netscape HTTP Cookie File\n#HttpOnly_{host}\tFALSE\t/\tFALSE\t{expires}\t{COOKIE}\t{cookie}\n");
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_files_round_trip_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookies.txt");
        let later = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        write_cookie_file(&path, "https://nuv.la", "token=abc", later).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read_cookie_file(&path).unwrap().as_deref(),
            Some("token=abc")
        );
        write_cookie_file(&path, "https://nuv.la", "token=old", 1).unwrap();
        assert_eq!(read_cookie_file(&path).unwrap(), None, "expired");
    }

    #[test]
    fn xml_and_json_errors_say_their_message() {
        let xml = Response {
            status: 409,
            headers: vec![],
            body: br#"<error code="409" reason="Conflict" detail="no SSH key in the profile"/>"#
                .to_vec(),
        };
        assert_eq!(api_error(&xml).message, "no SSH key in the profile");
        let json = Response {
            status: 403,
            headers: vec![],
            body: br#"{"status":403,"message":"invalid credentials"}"#.to_vec(),
        };
        assert_eq!(api_error(&json).message, "invalid credentials");
    }
}
