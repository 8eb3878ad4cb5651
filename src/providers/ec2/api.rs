//! The EC2 Query API: form-encoded `Action`s over POST, signed with Signature Version 4 by
//! `aws-sigv4`, answered in XML. Credentials, the region and the endpoint are found the way every
//! AWS tool finds them (`aws-config`'s chain: the `AWS_*` variables, `AWS_PROFILE` with
//! `~/.aws/credentials` and `~/.aws/config`, `credential_process`, SSO, the instance's role).

use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use reqwest::Method;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use super::{CREDENTIALS_FROM, PROVIDER};
use crate::driver::ProviderError;
use crate::http::{HttpClient, Request, Response};
use crate::providers::kit::{ApiAnswer, CallError, Refusal};

/// The API version every request names.
const API_VERSION: &str = "2016-11-15";

/// The service name requests are signed for.
const SIGNING_NAME: &str = "ec2";

/// The variable that gives EC2 an endpoint of its own (before `AWS_ENDPOINT_URL`), as the AWS
/// SDKs and CLI read it.
const ENDPOINT_VARIABLE: &str = "AWS_ENDPOINT_URL_EC2";

/// The error codes that mean the credentials are refused (wrong, expired, or not allowed).
const CREDENTIAL_CODES: [&str; 7] = [
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "RequestExpired",
    "OptInRequired",
];

/// The error codes of a throttled request: it was not acted on, and is sent again after a pause
/// that holds every request of the client (a fleet slows down as a whole).
const THROTTLE_CODES: [&str; 3] = ["RequestLimitExceeded", "Throttling", "ThrottlingException"];

/// An error EC2 answered: its code, message and request id, with what to do for the codes users
/// meet most.
#[derive(Debug, thiserror::Error)]
#[error("EC2 answered {status} {code}: {message}{}{}", hint(code), request_id.as_deref().map(|r| format!(" (request {r})")).unwrap_or_default())]
pub struct Ec2Error {
    /// The HTTP status.
    pub status: u16,
    /// EC2's error code (`InvalidAMIID.NotFound` ...).
    pub code: String,
    /// EC2's message.
    pub message: String,
    /// The request id, for AWS support.
    pub request_id: Option<String>,
}

/// What to do about an error code, when there is something to say.
fn hint(code: &str) -> &'static str {
    match code {
        "InsufficientInstanceCapacity" => {
            "; AWS has no capacity for this instance type there now: try another availability \
             zone (`location`), another instance type (`size`), or later"
        }
        "VcpuLimitExceeded" | "InstanceLimitExceeded" => {
            "; the account's limit is reached: ask AWS for more (Service Quotas), destroy \
             instances, or choose a smaller instance type"
        }
        "Unsupported" => {
            "; the instance type is not offered in that availability zone: choose another zone \
             (`nodeup locations --provider ec2`) or instance type"
        }
        "InvalidAMIID.NotFound" | "InvalidAMIID.Malformed" => {
            "; images are per region: `nodeup images --provider ec2` lists this region's"
        }
        "InvalidKeyPair.NotFound" => "; `ssh_key_name` names a key pair of this region",
        "RequestLimitExceeded" => "; throttled by AWS, still after retrying",
        _ => "",
    }
}

impl ApiAnswer for Ec2Error {
    const PROVIDER: &'static str = PROVIDER;
    const CREDENTIALS_FROM: &'static str = CREDENTIALS_FROM;

    fn status(&self) -> u16 {
        self.status
    }

    fn refusal(&self) -> Refusal {
        if CREDENTIAL_CODES.contains(&self.code.as_str()) {
            Refusal::Credentials
        } else if self.code.ends_with(".NotFound") {
            Refusal::Missing
        } else {
            Refusal::Other
        }
    }
}

/// The error document: `<Response><Errors><Error><Code>...</Code><Message>...</Message></Error>
/// </Errors><RequestID>...</RequestID></Response>`.
#[derive(serde::Deserialize)]
struct ErrorDocument {
    #[serde(rename = "Errors")]
    errors: ErrorList,
    #[serde(rename = "RequestID", alias = "RequestId", default)]
    request_id: Option<String>,
}

#[derive(serde::Deserialize)]
struct ErrorList {
    #[serde(rename = "Error", default)]
    error: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

impl Ec2Error {
    /// Reads an error answer (any body: one that is not EC2's error document keeps its text).
    fn of(response: &Response) -> Ec2Error {
        let text = String::from_utf8_lossy(&response.body);
        match quick_xml::de::from_str::<ErrorDocument>(&text) {
            Ok(doc) => {
                let first = doc.errors.error.into_iter().next();
                Ec2Error {
                    status: response.status,
                    code: first.as_ref().map(|e| e.code.clone()).unwrap_or_default(),
                    message: first.map(|e| e.message).unwrap_or_default(),
                    request_id: doc.request_id,
                }
            }
            Err(_) => Ec2Error {
                status: response.status,
                code: String::new(),
                message: text.chars().take(500).collect(),
                request_id: None,
            },
        }
    }
}

/// Whether an answer is EC2's throttling (not acted on: safe to send again).
fn throttled(response: &Response) -> bool {
    matches!(response.status, 400 | 429 | 503) && {
        let text = String::from_utf8_lossy(&response.body);
        THROTTLE_CODES
            .iter()
            .any(|c| text.contains(&format!("<Code>{c}</Code>")))
    }
}

/// What a form value keeps as it is: RFC 3986's unreserved characters.
const FORM_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn escape(text: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(text, FORM_ESCAPED)
}

/// A call's failure.
pub type CallFailure = CallError<Ec2Error>;

/// The parameters of one action, in the Query API's flattened form (`Filter.1.Name`,
/// `Filter.1.Value.1`, `InstanceId.1` ...).
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    filters: usize,
}

impl Params {
    /// No parameters.
    pub fn new() -> Params {
        Params::default()
    }

    /// One parameter.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Params {
        self.pairs.push((name.to_string(), value.into()));
        self
    }

    /// Whether the parameter `name` is set.
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// One parameter, when there is a value.
    pub fn maybe(self, name: &str, value: Option<impl Into<String>>) -> Params {
        match value {
            Some(v) => self.set(name, v),
            None => self,
        }
    }

    /// A list: `name.1`, `name.2` ...
    pub fn list<S: AsRef<str>>(mut self, name: &str, values: &[S]) -> Params {
        for (i, v) in values.iter().enumerate() {
            self.pairs
                .push((format!("{name}.{}", i + 1), v.as_ref().to_string()));
        }
        self
    }

    /// A filter: `Filter.N.Name` and its `Filter.N.Value.M`.
    pub fn filter<S: AsRef<str>>(mut self, name: &str, values: &[S]) -> Params {
        self.filters += 1;
        let n = self.filters;
        self.pairs
            .push((format!("Filter.{n}.Name"), name.to_string()));
        self.list(&format!("Filter.{n}.Value"), values)
    }

    /// Tags on the resources `kind` a create makes: `TagSpecification.N.ResourceType` and its
    /// `Tag.M.Key`/`Tag.M.Value`.
    pub fn tags(mut self, spec: usize, kind: &str, tags: &[(String, String)]) -> Params {
        let prefix = format!("TagSpecification.{spec}");
        self.pairs
            .push((format!("{prefix}.ResourceType"), kind.to_string()));
        for (i, (key, value)) in tags.iter().enumerate() {
            let tag = format!("{prefix}.Tag.{}", i + 1);
            self.pairs.push((format!("{tag}.Key"), key.clone()));
            self.pairs.push((format!("{tag}.Value"), value.clone()));
        }
        self
    }

    /// The form body, every byte but RFC 3986's unreserved ones percent-encoded (as the AWS
    /// SDKs write it: a server that checks the signature on the parameters it re-encodes, as moto
    /// does, computes the same body).
    fn encode(&self, action: &str) -> String {
        let pairs = [("Action", action), ("Version", API_VERSION)]
            .into_iter()
            .chain(self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        pairs
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Credentials, a region and an endpoint given outright (as to Libcloud's
/// `EC2NodeDriver(key, secret, region=...)`), instead of found in the environment.
#[derive(Clone)]
pub struct Access {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token, with temporary credentials.
    pub session_token: Option<String>,
    /// The region.
    pub region: String,
    /// Another endpoint than the region's (`https://ec2.REGION.amazonaws.com`).
    pub endpoint: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// What every call needs, found once: the credentials' provider, the region and the endpoint.
#[derive(Debug)]
struct Resolved {
    credentials: aws_credential_types::provider::SharedCredentialsProvider,
    region: String,
    endpoint: String,
}

/// The EC2 client of one region.
#[derive(Debug)]
pub struct Client {
    http: HttpClient,
    /// The region the step file names (`[provider] region`), over the environment's.
    region: Option<String>,
    resolved: OnceCell<Resolved>,
}

impl Client {
    /// A client for `region` (else the region of the environment or profile).
    ///
    /// # Errors
    /// The HTTP client cannot be made (`SSL_CERT_FILE`, `NODEUP_DEBUG`).
    pub fn new(region: Option<String>) -> Result<Client, ProviderError> {
        Ok(Client {
            http: crate::providers::http_client(PROVIDER)?,
            region,
            resolved: OnceCell::new(),
        })
    }

    /// A client with the credentials, region and endpoint given, not looked for.
    ///
    /// # Errors
    /// The HTTP client cannot be made, or the endpoint holds credentials.
    pub fn with_access(access: Access) -> Result<Client, ProviderError> {
        let endpoint = match &access.endpoint {
            Some(url) => {
                crate::providers::kit::endpoint(PROVIDER, "the endpoint", url, CREDENTIALS_FROM)?
            }
            None => format!("https://ec2.{}.amazonaws.com", access.region),
        };
        let credentials = aws_credential_types::Credentials::new(
            access.access_key_id,
            access.secret_access_key,
            access.session_token,
            None,
            "nodeup",
        );
        let resolved = Resolved {
            credentials: aws_credential_types::provider::SharedCredentialsProvider::new(
                credentials,
            ),
            region: access.region.clone(),
            endpoint,
        };
        Ok(Client {
            http: crate::providers::http_client(PROVIDER)?,
            region: Some(access.region),
            resolved: OnceCell::new_with(Some(resolved)),
        })
    }

    /// The HTTP client, to adjust its retries (tests).
    pub fn http_mut(&mut self) -> &mut HttpClient {
        &mut self.http
    }

    /// The region calls go to.
    ///
    /// # Errors
    /// No region is set anywhere, or the credentials' configuration cannot be read.
    pub async fn region(&self) -> Result<&str, ProviderError> {
        Ok(&self.resolved().await?.region)
    }

    async fn resolved(&self) -> Result<&Resolved, ProviderError> {
        self.resolved.get_or_try_init(|| self.resolve()).await
    }

    async fn resolve(&self) -> Result<Resolved, ProviderError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let config = loader.load().await;
        let Some(region) = config.region().map(|r| r.to_string()) else {
            return Err(invalid(
                "no region: set AWS_REGION (or AWS_DEFAULT_REGION), `region` in ~/.aws/config \
                 for your profile, or `region` under [provider] in the step file"
                    .into(),
            ));
        };
        let credentials = config.credentials_provider().ok_or_else(|| {
            invalid(format!(
                "no way to find credentials: set {CREDENTIALS_FROM}"
            ))
        })?;
        let given = std::env::var(ENDPOINT_VARIABLE)
            .ok()
            .filter(|e| !e.is_empty())
            .map(|e| (ENDPOINT_VARIABLE, e))
            .or_else(|| {
                config
                    .endpoint_url()
                    .map(|e| ("AWS_ENDPOINT_URL", e.to_string()))
            });
        let endpoint = match given {
            Some((variable, url)) => {
                crate::providers::kit::endpoint(PROVIDER, variable, &url, CREDENTIALS_FROM)?
            }
            None => format!("https://ec2.{region}.amazonaws.com"),
        };
        Ok(Resolved {
            credentials,
            region,
            endpoint,
        })
    }

    /// Finds the region, the endpoint and the credentials, if not done yet.
    ///
    /// # Errors
    /// No region, an endpoint with credentials in it, or no credentials to be found
    /// (`InvalidCredentials`, naming where they come from).
    pub async fn ready(&self) -> Result<(), ProviderError> {
        self.resolved().await?;
        self.identity().await.map(|_| ())
    }

    /// The credentials to sign with now (refreshed by their provider when they expire).
    async fn identity(&self) -> Result<aws_credential_types::Credentials, ProviderError> {
        let resolved = self.resolved().await?;
        resolved
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| ProviderError::InvalidCredentials {
                provider: PROVIDER.into(),
                message: format!("no credentials: {}", crate::error_chain(&e)),
                check: CREDENTIALS_FROM.into(),
            })
    }

    /// Sends `action` once (as the HTTP client retries it: throttling always, server errors and
    /// lost answers only when `idempotent`), returning the answer's body.
    ///
    /// # Errors
    /// EC2's error answer, or no answer.
    pub async fn send(
        &self,
        action: &str,
        params: &Params,
        idempotent: bool,
    ) -> Result<Vec<u8>, CallFailure> {
        let (resolved, credentials) = match (self.resolved().await, self.identity().await) {
            (Ok(r), Ok(c)) => (r, c),
            (Err(e), _) | (_, Err(e)) => {
                return Err(CallError::Local {
                    what: e.to_string(),
                    source: std::io::Error::other(e),
                })
            }
        };
        let body = params.encode(action);
        let url = format!("{}/", resolved.endpoint.trim_end_matches('/'));
        let build = || {
            let mut request = Request::new(Method::POST, url.clone());
            request.idempotent = idempotent;
            request.throttled = Some(throttled);
            sign_request(request, &body, &credentials, &resolved.region)
        };
        let response = self.http.send(build).await.map_err(CallError::from)?;
        if response.is_success() {
            Ok(response.body)
        } else {
            Err(CallError::Api(Ec2Error::of(&response)))
        }
    }

    /// Sends `action` and reads its answer as `T`; `context` names the call in errors.
    ///
    /// # Errors
    /// The provider error for EC2's answer, no answer, or an answer that does not read as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        action: &str,
        params: &Params,
        context: impl Fn() -> String,
    ) -> Result<T, ProviderError> {
        self.ready().await?;
        let idempotent = is_read(action);
        let body = self
            .send(action, params, idempotent)
            .await
            .map_err(|e| e.into_provider(context()))?;
        decode(&body).map_err(|e| e.into_provider(context()))
    }
}

/// Whether an action only reads (so that sending it again is harmless).
fn is_read(action: &str) -> bool {
    action.starts_with("Describe") || action.starts_with("Get")
}

/// Reads an answer document.
///
/// # Errors
/// It does not read as `T`.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CallFailure> {
    quick_xml::de::from_str(&String::from_utf8_lossy(body))
        .map_err(|e| CallError::Decode(format!("{e}")))
}

/// The content type of an EC2 Query API request's form body.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// A header that signs a request.
#[derive(Debug, Clone)]
pub struct SigningHeader {
    /// Its name (`authorization`, `x-amz-date` ...).
    pub name: String,
    /// Its value.
    pub value: String,
    /// Whether it must not be logged.
    pub secret: bool,
}

/// The headers that sign, with SigV4 for EC2 in `region`, a POST to `url` of the form `body`
/// sent with [`FORM_CONTENT_TYPE`] (which the signature covers, with the host).
///
/// # Errors
/// The signing library refuses the URL or the parameters.
pub fn sigv4_headers(
    url: &str,
    body: &str,
    credentials: &aws_credential_types::Credentials,
    region: &str,
) -> Result<Vec<SigningHeader>, String> {
    let host = url::Url::parse(url)
        .map_err(|e| e.to_string())?
        .authority()
        .to_string();
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?;
    let headers = [("host", host.as_str()), ("content-type", FORM_CONTENT_TYPE)];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(signable, &params.into())
        .map_err(|e| e.to_string())?
        .into_parts();
    let (headers, _) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| SigningHeader {
            secret: h.sensitive() || h.name() == "authorization",
            name: h.name().to_string(),
            value: h.value().to_string(),
        })
        .collect())
}

/// Signs `request` (a POST of `body`) with SigV4 for EC2 in `region`.
fn sign_request(
    request: Request,
    body: &str,
    credentials: &aws_credential_types::Credentials,
    region: &str,
) -> Request {
    let mut request = request.header("Content-Type", FORM_CONTENT_TYPE, false);
    match sigv4_headers(&request.url, body, credentials, region) {
        Ok(headers) => {
            for h in headers {
                request = request.header(&h.name, &h.value, h.secret);
            }
        }
        Err(e) => tracing::warn!("signing the EC2 request failed: {e}"),
    }
    request.body = Some(body.as_bytes().to_vec());
    request
}

fn invalid(message: String) -> ProviderError {
    ProviderError::InvalidRequest {
        provider: PROVIDER.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_flatten_as_the_query_api_wants() {
        let form = Params::new()
            .set("ImageId", "ami-1")
            .list("InstanceId", &["i-1", "i-2"])
            .filter("tag:Name", &["web-1"])
            .filter("instance-state-name", &["pending", "running"])
            .tags(1, "instance", &[("Name".into(), "web 1".into())])
            .encode("DescribeInstances");
        assert_eq!(
            form,
            "Action=DescribeInstances&Version=2016-11-15&ImageId=ami-1&InstanceId.1=i-1&\
             InstanceId.2=i-2&Filter.1.Name=tag%3AName&Filter.1.Value.1=web-1&\
             Filter.2.Name=instance-state-name&Filter.2.Value.1=pending&Filter.2.Value.2=running&\
             TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=Name&\
             TagSpecification.1.Tag.1.Value=web%201"
        );
    }

    #[test]
    fn errors_read_as_ec2_writes_them() {
        let response = Response {
            status: 401,
            headers: Vec::new(),
            body: br#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>AuthFailure</Code><Message>AWS was not able to validate the provided access credentials</Message></Error></Errors><RequestID>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestID></Response>"#
                .to_vec(),
        };
        let e = Ec2Error::of(&response);
        assert_eq!(e.code, "AuthFailure");
        assert_eq!(e.refusal(), Refusal::Credentials);
        assert!(e.to_string().contains("request 7a62c49f"), "{e}");
        let throttle = Response {
            status: 503,
            headers: Vec::new(),
            body: b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>x</RequestID></Response>".to_vec(),
        };
        assert!(throttled(&throttle));
        let capacity = Ec2Error {
            status: 500,
            code: "InsufficientInstanceCapacity".into(),
            message: "none".into(),
            request_id: None,
        };
        assert!(capacity.to_string().contains("another availability zone"));
        let missing = Ec2Error {
            status: 400,
            code: "InvalidInstanceID.NotFound".into(),
            message: "gone".into(),
            request_id: None,
        };
        assert_eq!(missing.refusal(), Refusal::Missing);
    }
}
