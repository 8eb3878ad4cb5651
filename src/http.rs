//! The one HTTP client every provider uses: timeouts, retries with jittered backoff (429 always,
//! since it was not processed; 5xx and transport failures only for idempotent requests, so that a
//! create is never sent twice behind the caller's back), `Retry-After` honoured, and the debug
//! trace: with `NODEUP_DEBUG=FILE`, every request is appended to FILE as a runnable curl line and
//! every response after it, with every secret replaced by `***`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

/// One header of a request.
#[derive(Clone)]
pub struct Header {
    /// Its name, as sent.
    pub name: String,
    /// Its value, as sent (shown as `***` when `secret`).
    pub value: String,
    /// Shown as `***` in the trace and in errors.
    pub secret: bool,
}

/// A request, built afresh for each attempt (a signature may depend on the time).
#[derive(Clone)]
pub struct Request {
    /// GET, POST, PUT, DELETE.
    pub method: reqwest::Method,
    /// The full URL, exactly as sent.
    pub url: String,
    /// Its headers, in the order they are sent.
    pub headers: Vec<Header>,
    /// The exact body bytes, if any.
    pub body: Option<Vec<u8>>,
    /// Whether sending it twice does no harm (GET, DELETE, most PUTs): then 5xx answers and
    /// transport failures are retried too.
    pub idempotent: bool,
    /// Tells an answer that throttles the request (not acted on), beside 429: it is sent again
    /// whatever its idempotence, and every request of the client waits (EC2 answers its
    /// `RequestLimitExceeded` with a 503, say).
    pub throttled: Option<fn(&Response) -> bool>,
}

impl Request {
    /// A request without headers or body; idempotent unless it is a POST.
    pub fn new(method: reqwest::Method, url: String) -> Self {
        let idempotent = method != reqwest::Method::POST;
        Request {
            method,
            url,
            headers: Vec::new(),
            body: None,
            idempotent,
            throttled: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>, secret: bool) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: value.into(),
            secret,
        });
        self
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body, whole.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A request that got no answer.
#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: {}", transport_text(.maybe_processed, .source))]
pub struct TransportError {
    /// The HTTP method it was sent with.
    pub method: reqwest::Method,
    /// The URL it was sent to (as the trace shows it).
    pub url: String,
    /// Whether the request may have reached the server (so a POST may have taken effect).
    pub maybe_processed: bool,
    /// Why.
    #[source]
    pub source: reqwest::Error,
}

/// What a failed request means, in words, with the fix for an untrusted certificate.
fn transport_text(maybe_processed: &bool, source: &reqwest::Error) -> &'static str {
    if *maybe_processed {
        "no answer (the server may have acted on it)"
    } else if source.is_builder() {
        "the request could not be built (a header value with a newline or another character HTTP \
         does not allow?); it was not sent"
    } else if crate::error_chain(source).contains("certificate") {
        "could not connect: the server's certificate is not trusted (for a server behind a \
         certificate authority of your own, set SSL_CERT_FILE to that authority's PEM file)"
    } else {
        "could not connect"
    }
}

/// How hard to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all.
    pub max_tries: u32,
    /// The first pause.
    pub min_delay: Duration,
    /// The longest pause.
    pub max_delay: Duration,
    /// No retry starts after this long since the first attempt.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_tries: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            budget: Duration::from_secs(90),
        }
    }
}

/// The HTTP client: reqwest with rustls, the debug trace, and a hold shared by its clones.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    trace: Option<Arc<Mutex<File>>>,
    /// No request starts before this instant: set by a 429's `Retry-After`, shared by every clone
    /// of the client, so that a fleet slows down as a whole rather than one request at a time.
    hold: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// How hard to retry ([`RetryPolicy::default`] unless a driver adjusts it).
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("trace", &self.trace.is_some())
            .field("retry", &self.retry)
            .finish()
    }
}

/// The variable naming a PEM file of certificate authorities to trust beside the system's and
/// the web's (a self-hosted endpoint behind an internal CA), as OpenSSL and Python read it.
pub const CA_FILE_VARIABLE: &str = "SSL_CERT_FILE";

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The certificate authorities of the PEM file at `path`, named `what` in errors.
///
/// # Errors
/// The file cannot be read, or holds no PEM certificate (`InvalidInput`, naming it).
fn authorities_in(what: &str, path: &Path) -> std::io::Result<Vec<reqwest::Certificate>> {
    let unusable = |why: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what}={}: {why}", path.display()),
        )
    };
    let pem = crate::files::read(path).map_err(|e| unusable(crate::error_chain(&e)))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| unusable(format!("not a PEM file of certificates ({e})")))?;
    if certificates.is_empty() {
        return Err(unusable(
            "holds no certificate (-----BEGIN CERTIFICATE----- ...)".into(),
        ));
    }
    Ok(certificates)
}

/// The certificate authorities of `$SSL_CERT_FILE`, when it is set.
///
/// # Errors
/// As [`authorities_in`].
fn extra_authorities() -> std::io::Result<Vec<reqwest::Certificate>> {
    match std::env::var_os(CA_FILE_VARIABLE).filter(|p| !p.is_empty()) {
        Some(path) => authorities_in(CA_FILE_VARIABLE, Path::new(&path)),
        None => Ok(Vec::new()),
    }
}

/// A PEM file of certificate authorities a provider's own configuration names (OpenStack's
/// `cacert` or `OS_CACERT`), and the setting that named it, for errors.
#[derive(Debug, Clone)]
pub struct CaFile {
    /// The setting that named it, e.g. `OS_CACERT`.
    pub named_by: String,
    /// The file.
    pub path: std::path::PathBuf,
}

impl HttpClient {
    /// A client with [`CONNECT_TIMEOUT`] to connect and [`REQUEST_TIMEOUT`] per request, that
    /// trusts the web's certificate authorities, the system's, and those of `$SSL_CERT_FILE`;
    /// tracing to `$NODEUP_DEBUG` if set.
    ///
    /// # Errors
    /// `$SSL_CERT_FILE` cannot be used (`InvalidInput`), or the trace file cannot be opened.
    pub fn new() -> std::io::Result<Self> {
        Self::trusting(None)
    }

    /// [`HttpClient::new`], trusting the authorities of `ca_file` as well.
    ///
    /// # Errors
    /// As [`HttpClient::new`], or `ca_file` cannot be used (`InvalidInput`, naming its setting).
    pub fn trusting(ca_file: Option<&CaFile>) -> std::io::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("nodeup/", env!("CARGO_PKG_VERSION")));
        let own = match ca_file {
            Some(ca) => authorities_in(&ca.named_by, &ca.path)?,
            None => Vec::new(),
        };
        for authority in extra_authorities()?.into_iter().chain(own) {
            builder = builder.add_root_certificate(authority);
        }
        let client = builder.build().map_err(std::io::Error::other)?;
        let trace = match std::env::var_os("NODEUP_DEBUG") {
            Some(path) if !path.is_empty() => {
                Some(Arc::new(Mutex::new(open_trace(Path::new(&path))?)))
            }
            _ => None,
        };
        Ok(HttpClient {
            client,
            trace,
            hold: Arc::default(),
            retry: RetryPolicy::default(),
        })
    }

    fn trace(&self, text: &str) {
        if let Some(file) = &self.trace {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = file.write_all(text.as_bytes());
            let _ = file.flush();
        }
    }

    /// Sends the request `build` makes (once per attempt), retrying as the policy and the request's
    /// idempotence allow. Any answer that is not retried is returned, whatever its status.
    pub async fn send(&self, build: impl Fn() -> Request) -> Result<Response, TransportError> {
        let started = Instant::now();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.wait_for_hold().await;
            let request = build();
            self.trace(&curl_line(&request, attempt));
            let sent_at = Instant::now();
            let outcome = self.attempt(&request).await;
            let (retry_after, throttled) = match self.verdict(&request, &outcome, sent_at.elapsed())
            {
                Verdict::Done => return outcome,
                Verdict::Retry(after) => (after, false),
                Verdict::Throttled(after) => (after, true),
            };
            let pause = retry_after
                .unwrap_or_else(|| backoff.next().unwrap_or(self.retry.max_delay))
                .min(self.retry.max_delay.max(retry_after.unwrap_or_default()));
            if throttled {
                self.hold_for(pause);
            }
            if attempt >= self.retry.max_tries || started.elapsed() + pause > self.retry.budget {
                return outcome;
            }
            tracing::debug!(url = %request.url, attempt, ?pause, "retrying");
            tokio::time::sleep(pause).await;
        }
    }

    /// Holds every request of this client (and its clones) for `pause` from now.
    fn hold_for(&self, pause: Duration) {
        let until = tokio::time::Instant::now() + pause;
        let mut hold = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        if hold.is_none_or(|h| h < until) {
            *hold = Some(until);
        }
    }

    /// Waits until the hold a 429 put on this client is over.
    async fn wait_for_hold(&self) {
        let until = *self.hold.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Sends the request once and reads the whole answer.
    async fn attempt(&self, request: &Request) -> Result<Response, TransportError> {
        let failed = |maybe_processed, source| TransportError {
            method: request.method.clone(),
            url: request.url.clone(),
            maybe_processed,
            source,
        };
        let mut builder = self.client.request(request.method.clone(), &request.url);
        for h in &request.headers {
            builder = builder.header(&h.name, &h.value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let answer = match builder.send().await {
            Ok(answer) => answer,
            Err(source) => {
                let maybe = !source.is_connect() && !source.is_builder();
                return Err(failed(maybe, source));
            }
        };
        let status = answer.status().as_u16();
        let headers = answer
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        match answer.bytes().await {
            Ok(body) => Ok(Response {
                status,
                headers,
                body: body.to_vec(),
            }),
            Err(source) => Err(failed(true, source)),
        }
    }

    /// Traces the outcome and says whether to retry it (and after how long, if the server said).
    fn verdict(
        &self,
        request: &Request,
        outcome: &Result<Response, TransportError>,
        elapsed: Duration,
    ) -> Verdict {
        match outcome {
            Ok(response) => {
                self.trace(&format!(
                    "# -> {} in {} ms{}\n# {}\n",
                    response.status,
                    elapsed.as_millis(),
                    response
                        .header("x-ovh-queryid")
                        .map(|q| format!(" (X-Ovh-QueryID: {q})"))
                        .unwrap_or_default(),
                    redact_body(&response.body).replace('\n', "\n# ")
                ));
                let retry_after = response.header("retry-after").and_then(parse_retry_after);
                let throttled =
                    response.status == 429 || request.throttled.is_some_and(|t| t(response));
                if throttled {
                    Verdict::Throttled(retry_after)
                } else if request.idempotent && matches!(response.status, 500 | 502 | 503 | 504) {
                    Verdict::Retry(retry_after)
                } else {
                    Verdict::Done
                }
            }
            Err(e) => {
                self.trace(&format!(
                    "# -> no answer after {} ms: {e}\n",
                    elapsed.as_millis()
                ));
                // A request that cannot be built is bad input: sending it again cannot help.
                if e.source.is_builder() || (e.maybe_processed && !request.idempotent) {
                    Verdict::Done
                } else {
                    Verdict::Retry(None)
                }
            }
        }
    }
}

/// What to do with an attempt's outcome.
enum Verdict {
    /// Return it.
    Done,
    /// Try again, after the server's `Retry-After` when it gave one.
    Retry(Option<Duration>),
    /// Throttled: every request of the client waits (the server's `Retry-After`, else the
    /// backoff's pause), then this one is sent again.
    Throttled(Option<Duration>),
}

fn open_trace(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value.trim()).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The request as a curl command line, secrets as `***`, every argument single-quoted.
pub fn curl_line(request: &Request, attempt: u32) -> String {
    let mut line = format!(
        "# attempt {attempt}\ncurl -sS -X {} {}",
        request.method,
        crate::ssh::quote(&redact_url(&request.url))
    );
    for h in &request.headers {
        let value = if h.secret { "***" } else { h.value.as_str() };
        line.push_str(" -H ");
        line.push_str(&crate::ssh::quote(&format!("{}: {value}", h.name)));
    }
    if let Some(body) = &request.body {
        line.push_str(" --data-binary ");
        line.push_str(&crate::ssh::quote(&redact_body(body)));
    }
    line.push('\n');
    line
}

/// A URL with any user name and password in it replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("***");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// JSON keys whose values are secrets: any key containing one of these (lower-case) words.
const SECRET_KEYS: [&str; 5] = ["password", "secret", "consumerkey", "token", "privatekey"];

/// JSON keys holding HTTP headers for someone else's download (an image URL's `Authorization`):
/// every header value under them is a secret, the header names are not.
const HEADER_KEYS: [&str; 1] = ["httpheader"];

/// A body with the values of secret-looking JSON keys replaced by `***`, and the values of HTTP
/// headers given for a download (`httpHeaders: {"Authorization": ...}`, or the legacy
/// `httpHeader: [{"key": ..., "value": ...}]`).
pub fn redact_body(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            redact_value(&mut value);
            serde_json::to_string(&value).unwrap_or_default()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

fn redact_value(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let k = key.to_ascii_lowercase();
                if SECRET_KEYS.iter().any(|s| k.contains(s)) {
                    *v = serde_json::Value::String("***".into());
                } else if HEADER_KEYS.iter().any(|s| k.contains(s)) {
                    redact_header_values(v);
                } else {
                    redact_value(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

/// Replaces header values: each value of an object, or each item's `value` in a list of
/// `{"key", "value"}` objects.
fn redact_header_values(value: &mut serde_json::Value) {
    let hidden = || serde_json::Value::String("***".into());
    match value {
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| *v = hidden()),
        serde_json::Value::Array(items) => {
            for item in items {
                match item.get_mut("value") {
                    Some(v) => *v = hidden(),
                    None => *item = hidden(),
                }
            }
        }
        other => *other = hidden(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_header_values_are_hidden_in_both_shapes() {
        let current = redact_body(
            br#"{"customizations":{"httpHeaders":{"Authorization":"Bearer s3cret"},"imageURL":"https://x"}}"#,
        );
        assert!(!current.contains("s3cret"), "{current}");
        assert!(current.contains(r#""Authorization":"***""#), "{current}");
        assert!(current.contains("https://x"), "{current}");
        let legacy = redact_body(
            br#"{"httpHeader":[{"key":"Authorization","value":"Bearer s3cret"}],"URL":"https://x"}"#,
        );
        assert!(!legacy.contains("s3cret"), "{legacy}");
        assert!(legacy.contains(r#""key":"Authorization""#), "{legacy}");
    }

    #[test]
    fn curl_lines_hide_secrets() {
        let request = Request::new(
            reqwest::Method::POST,
            "https://api.example/1.0/x?a=b".into(),
        )
        .header("X-Ovh-Application", "app-key", false)
        .header("X-Ovh-Consumer", "consumer-secret", true);
        let mut request = request;
        request.body = Some(
            br#"{"name":"n","adminPassword":"hunter2","nested":{"consumerKey":"ck"}}"#.to_vec(),
        );
        let line = curl_line(&request, 1);
        assert!(
            line.contains("curl -sS -X POST 'https://api.example/1.0/x?a=b'"),
            "{line}"
        );
        assert!(line.contains("-H 'X-Ovh-Application: app-key'"), "{line}");
        assert!(line.contains("-H 'X-Ovh-Consumer: ***'"), "{line}");
        assert!(
            !line.contains("consumer-secret")
                && !line.contains("hunter2")
                && !line.contains("\"ck\""),
            "{line}"
        );
        assert!(line.contains(r#""name":"n""#), "{line}");
    }

    #[test]
    fn retry_after_in_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
