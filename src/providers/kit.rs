//! What the providers share: typed settings that refuse unknown keys (the valid ones derived from
//! the settings type itself), the error of a call to an HTTP API ([`CallError`], over each
//! provider's own error answer), creating at most once when an answer is lost
//! ([`create_at_most_once`]), the HTTP client, and telling public keys apart.

use std::collections::BTreeMap;
use std::future::Future;

use serde::de::{DeserializeOwned, Visitor};

use crate::driver::ProviderError;
use crate::http::TransportError;

/// Keys that hold credentials: never accepted in a step file, whatever the provider.
const CREDENTIAL_WORDS: [&str; 6] = [
    "secret",
    "password",
    "consumer_key",
    "application_key",
    "token",
    "credential",
];

/// The field names of a settings struct, as serde reads them (`[]` for a type that is not a
/// struct: a map takes any key, a unit struct none).
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    /// A deserializer that only records the fields a struct asks for, then stops.
    struct Fields(Option<&'static [&'static str]>);

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0.unwrap_or(&[])
}

/// Reads a provider's typed settings from a step-file table (`[provider]` or `[node] options`),
/// named `table` in messages. An unknown key is an error that lists the valid ones (the fields of
/// `T`); a key that looks like a credential is an error that says where credentials go
/// (`credentials_from`).
///
/// # Errors
/// `ProviderError::InvalidRequest` naming the key and the fix.
pub fn settings<T: DeserializeOwned>(
    provider: &str,
    table: &str,
    values: &BTreeMap<String, serde_json::Value>,
    credentials_from: &str,
) -> Result<T, ProviderError> {
    let invalid = |message: String| ProviderError::InvalidRequest {
        provider: provider.into(),
        message,
    };
    let known = field_names::<T>();
    for key in values.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let lower = key.to_ascii_lowercase();
        if CREDENTIAL_WORDS.iter().any(|w| lower.contains(w)) {
            return Err(invalid(format!(
                "{table} `{key}`: credentials never go in a step file; {credentials_from}"
            )));
        }
        let valid = if known.is_empty() {
            format!("{provider} takes no settings there")
        } else {
            format!("the valid ones are {}", known.join(", "))
        };
        return Err(invalid(format!("{table} `{key}` is unknown: {valid}")));
    }
    serde_json::from_value(serde_json::Value::Object(
        values.clone().into_iter().collect(),
    ))
    .map_err(|e| invalid(format!("{table}: {e}")))
}

/// How a provider's failed call reads to its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The credentials were refused: nothing works until they are fixed.
    Credentials,
    /// The object asked for does not exist.
    Missing,
    /// Anything else: the call failed.
    Other,
}

/// The provider error for a failed call of `context`: invalid credentials (to `check` where
/// `credentials_from` says), not found, or failed with `error` as its source.
pub fn call_failure<E: std::error::Error + Send + Sync + 'static>(
    provider: &str,
    credentials_from: &str,
    refusal: Refusal,
    context: String,
    error: E,
) -> ProviderError {
    match refusal {
        Refusal::Credentials => ProviderError::InvalidCredentials {
            provider: provider.into(),
            message: format!("{context}: {}", crate::error_chain(&error)),
            check: credentials_from.into(),
        },
        Refusal::Missing => ProviderError::NotFound {
            provider: provider.into(),
            kind: "object",
            id: format!("{context} ({})", crate::error_chain(&error)),
        },
        Refusal::Other => ProviderError::Failed {
            provider: provider.into(),
            context,
            source: Box::new(error),
        },
    }
}

/// An error answer of a provider's API, as its driver reads it.
pub trait ApiAnswer: std::error::Error + Send + Sync + 'static {
    /// The provider's name.
    const PROVIDER: &'static str;
    /// Where the provider's credentials come from, to check when they are refused.
    const CREDENTIALS_FROM: &'static str;

    /// The HTTP status.
    fn status(&self) -> u16;

    /// How it reads to the user: by default 401 refuses the credentials, 404 misses the object.
    fn refusal(&self) -> Refusal {
        match self.status() {
            401 => Refusal::Credentials,
            404 => Refusal::Missing,
            _ => Refusal::Other,
        }
    }
}

/// Why a call to a provider's HTTP API failed; `E` is the provider's own error answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E: ApiAnswer> {
    /// The API answered with an error.
    #[error(transparent)]
    Api(E),
    /// No answer.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// An answer that is not what was expected: the call, and what was wrong.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The request was not sent: it cannot name what it asks for (an id of `..`, say).
    #[error("{0}")]
    NoSuchObject(String),
    /// The request was not sent: a local file it needs cannot be used.
    #[error("{what}")]
    Local {
        /// What was being done with which file.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl<E: ApiAnswer> From<E> for CallError<E> {
    fn from(answer: E) -> Self {
        CallError::Api(answer)
    }
}

impl<E: ApiAnswer> CallError<E> {
    /// The provider error for it, with the call named.
    pub fn into_provider(self, context: String) -> ProviderError {
        let refusal = match &self {
            CallError::Api(e) => e.refusal(),
            CallError::NoSuchObject(_) => Refusal::Missing,
            _ => Refusal::Other,
        };
        call_failure(E::PROVIDER, E::CREDENTIALS_FROM, refusal, context, self)
    }

    /// Whether the request may have been acted on although no success came back (a server
    /// error, a lost answer, an answer that made no sense).
    pub fn maybe_processed(&self) -> bool {
        match self {
            CallError::Transport(t) => t.maybe_processed,
            CallError::Api(e) => e.status() >= 500,
            CallError::Decode(_) => true,
            CallError::NoSuchObject(_) | CallError::Local { .. } => false,
        }
    }

    /// Whether the API answered with this status.
    pub fn is_status(&self, status: u16) -> bool {
        matches!(self, CallError::Api(e) if e.status() == status)
    }
}

/// How many times a create whose answer was lost, and whose object was not found, is sent.
pub const CREATE_ATTEMPTS: u32 = 3;

/// Creates something at most once. `send` sends the create, and `made` turns its answer into the
/// result. When the answer is lost (the create may have been acted on), `find` looks for what it
/// would have made (by name, by a client token...) and that is the result; only when nothing is
/// found is the create sent again, up to [`CREATE_ATTEMPTS`] times. `context` names the create in
/// errors.
///
/// # Errors
/// A refusal (the create was not acted on), a failed lookup, or the last lost answer.
pub async fn create_at_most_once<A, T, E, S, SF, F, FF, M, MF>(
    context: &str,
    send: S,
    find: F,
    made: M,
) -> Result<T, ProviderError>
where
    E: ApiAnswer,
    S: Fn() -> SF,
    SF: Future<Output = Result<A, CallError<E>>>,
    F: Fn() -> FF,
    FF: Future<Output = Result<Option<T>, ProviderError>>,
    M: FnOnce(A) -> MF,
    MF: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 1;
    loop {
        match send().await {
            Ok(answer) => return made(answer).await,
            Err(e) if e.maybe_processed() => {
                tracing::warn!(
                    attempt,
                    "{context}: {}; looking for what it made before asking again",
                    crate::error_chain(&e)
                );
                if let Some(found) = find().await? {
                    return Ok(found);
                }
                if attempt >= CREATE_ATTEMPTS {
                    return Err(e.into_provider(context.to_string()));
                }
                attempt += 1;
            }
            Err(e) => return Err(e.into_provider(context.to_string())),
        }
    }
}

/// The HTTP client of a provider ([`crate::http::HttpClient::new`]), its failure a provider error.
///
/// # Errors
/// The client cannot be built (the `NODEUP_DEBUG` file cannot be opened).
pub fn http_client(provider: &str) -> Result<crate::http::HttpClient, ProviderError> {
    http_client_trusting(provider, None)
}

/// [`http_client`], trusting the certificate authorities of `ca_file` as well.
///
/// # Errors
/// As [`http_client`], or `ca_file` cannot be used (naming the setting that gave it).
pub fn http_client_trusting(
    provider: &str,
    ca_file: Option<&crate::http::CaFile>,
) -> Result<crate::http::HttpClient, ProviderError> {
    crate::http::HttpClient::trusting(ca_file).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => ProviderError::InvalidRequest {
            provider: provider.into(),
            message: e.to_string(),
        },
        _ => ProviderError::Failed {
            provider: provider.into(),
            context: "setting up HTTP".into(),
            source: Box::new(e),
        },
    })
}

/// An API endpoint read from `variable` (`value`), checked before any request: an http or https
/// URL with a host and no user name or password in it (credentials in a URL would reach the
/// debug trace and logs, and are not what the provider reads them from: `credentials_from`
/// says where they go). Returned without a trailing slash.
///
/// # Errors
/// `ProviderError::InvalidRequest` naming the variable (never the password) and the fix.
pub fn endpoint(
    provider: &str,
    variable: &str,
    value: &str,
    credentials_from: &str,
) -> Result<String, ProviderError> {
    let invalid = |message: String| ProviderError::InvalidRequest {
        provider: provider.into(),
        message,
    };
    let url = url::Url::parse(value).map_err(|e| {
        invalid(format!(
            "{variable} is not a URL ({e}): write e.g. https://api.example.com"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!(
            "{variable} must be an http or https URL with a host, e.g. https://api.example.com"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        return Err(invalid(format!(
            "{variable} holds a user name or password ({}): credentials never go in an \
             endpoint; set {credentials_from}",
            shown.as_str().trim_end_matches('/')
        )));
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// What names a key pair nodeup imported for a deployment (then the key's digest).
pub const IMPORTED_KEY_PREFIX: &str = "nodeup-";

/// How many hex digits of the key's digest name an imported key pair.
const KEY_DIGEST_HEX: usize = 16;

/// The name of the key pair a public key is imported as: [`IMPORTED_KEY_PREFIX`] and the digest
/// of its type and blob, so that the same key is found again, whoever imported it.
pub fn imported_key_name(public: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key_blob(public).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{IMPORTED_KEY_PREFIX}{}", &hex[..KEY_DIGEST_HEX])
}

/// Whether an address is one only its own network reaches: RFC 1918, shared address space
/// (100.64.0.0/10), link-local, unique local IPv6. Providers that list addresses without saying
/// which are public sort them by it.
pub fn is_private_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// What [`segment`] leaves as it is: RFC 3986's unreserved characters.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A value made safe to put in a URL path or query as one segment: percent-encoded, so that an id
/// or a name from the user or the API (`../../x`, `a?b`) can never change which resource is meant.
pub fn segment(value: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(value, PATH_SEGMENT).to_string();
    // `.` and `..` stay dot segments even when nothing else is encoded.
    match encoded.as_str() {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => encoded,
    }
}

/// An OpenSSH public key's type and blob, without its comment: what tells one key from another
/// when providers store it with other comments.
pub fn key_blob(public_key: &str) -> String {
    public_key
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Options {
        user_data: Option<String>,
        #[serde(rename = "ssh_key_id")]
        key: Option<String>,
    }

    #[test]
    fn endpoints_with_credentials_are_refused_without_showing_them() {
        let ok = endpoint("p", "P_ENDPOINT", "http://127.0.0.1:8080/", "P_USER").unwrap();
        assert_eq!(ok, "http://127.0.0.1:8080");
        let e = endpoint("p", "P_ENDPOINT", "http://user:s3cret@127.0.0.1/", "P_USER")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("P_ENDPOINT holds a user name or password"),
            "{e}"
        );
        assert!(!e.contains("s3cret") && !e.contains("user:"), "{e}");
        assert!(endpoint("p", "P_ENDPOINT", "ftp://x", "P_USER").is_err());
    }

    #[test]
    fn the_valid_keys_come_from_the_type() {
        assert_eq!(field_names::<Options>(), ["user_data", "ssh_key_id"]);
        assert!(field_names::<BTreeMap<String, serde_json::Value>>().is_empty());
        let values = BTreeMap::from([("sshkeyid".to_string(), serde_json::json!("x"))]);
        let e = settings::<Options>("p", "[node] options", &values, "env")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the valid ones are user_data, ssh_key_id"),
            "{e}"
        );
        let values = BTreeMap::from([("api_token".to_string(), serde_json::json!("x"))]);
        let e = settings::<Options>("p", "[provider]", &values, "use P_TOKEN")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("credentials never go in a step file; use P_TOKEN"),
            "{e}"
        );
    }

    #[test]
    fn imported_keys_are_named_by_their_digest_whatever_the_comment() {
        let a = imported_key_name("ssh-ed25519 AAAAC3Nza... me@here");
        assert!(a.starts_with(IMPORTED_KEY_PREFIX) && a.len() == 7 + KEY_DIGEST_HEX);
        assert_eq!(
            a,
            imported_key_name("ssh-ed25519 AAAAC3Nza... other comment")
        );
        assert_ne!(a, imported_key_name("ssh-ed25519 AAAAC3Nzb..."));
    }

    #[test]
    fn private_addresses() {
        for private in [
            "10.0.0.5",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private_address(private.parse().unwrap()), "{private}");
        }
        for public in ["203.0.113.9", "127.100.0.2", "100.128.0.1", "2001:db8::1"] {
            assert!(!is_private_address(public.parse().unwrap()), "{public}");
        }
    }
}
