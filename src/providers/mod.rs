//! The providers nodeup drives, one folder or file each. Every one implements `NodeDriver` and is
//! registered by name in [`registry`], one line each. `lookup` and [`settings`] are what they
//! share: finding an image, size or location by id or name, and typed settings that refuse
//! unknown keys.

pub mod dummy;
pub mod local;
pub mod lookup;
pub mod nephoscale;
pub mod ovh;
pub mod slipstream;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;

use crate::driver::{NodeDriver, ProviderConfig, ProviderError, Registry};

/// The registry every command uses: the built-in providers, and whatever was registered since.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Registry::default();
        registry.register("dummy", |c| {
            Ok(Arc::new(dummy::DummyDriver::from_config(c)?))
        });
        registry.register("local", |c| {
            Ok(Arc::new(local::LocalDriver::from_config(c)?))
        });
        registry.register("ovh", |c| Ok(Arc::new(ovh::OvhDriver::from_config(c)?)));
        registry.register("nephoscale", |c| {
            Ok(Arc::new(nephoscale::NephoScaleDriver::from_config(c)?))
        });
        registry.register("slipstream", |c| {
            Ok(Arc::new(slipstream::SlipStreamDriver::from_config(c)?))
        });
        registry
    })
}

/// Registers a driver under a provider name (a third party's, say), replacing any of that name.
pub fn register(name: &str, factory: crate::driver::DriverFactory) {
    registry().register(name, factory);
}

/// The names of every registered provider, in order.
pub fn names() -> Vec<String> {
    registry().names()
}

/// Builds the driver registered under `name`, with no settings.
///
/// # Errors
/// An unknown provider, or a driver that cannot be built (credentials, state directory ...).
pub fn get_driver(name: &str) -> Result<Arc<dyn NodeDriver>, ProviderError> {
    registry().get(name, &ProviderConfig::new())
}

/// Builds the driver registered under `name` with the step file's `[provider]` settings.
///
/// # Errors
/// An unknown provider or setting, or a driver that cannot be built.
pub fn get_driver_with(
    name: &str,
    config: &ProviderConfig,
) -> Result<Arc<dyn NodeDriver>, ProviderError> {
    registry().get(name, config)
}

/// Keys that hold credentials: never accepted in a step file, whatever the provider.
const CREDENTIAL_WORDS: [&str; 6] = [
    "secret",
    "password",
    "consumer_key",
    "application_key",
    "token",
    "credential",
];

/// Reads a provider's typed settings from a step-file table (`[provider]` or `[node] options`),
/// named `table` in messages. An unknown key is an error that lists the valid ones (`known`); a
/// key that looks like a credential is an error that says where credentials go (`credentials_from`).
///
/// # Errors
/// `ProviderError::InvalidRequest` naming the key and the fix.
pub fn settings<T: DeserializeOwned>(
    provider: &str,
    table: &str,
    values: &BTreeMap<String, serde_json::Value>,
    known: &[&str],
    credentials_from: &str,
) -> Result<T, ProviderError> {
    let invalid = |message: String| ProviderError::InvalidRequest {
        provider: provider.into(),
        message,
    };
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
            message: format!("{context}: {error}"),
            check: credentials_from.into(),
        },
        Refusal::Missing => ProviderError::NotFound {
            provider: provider.into(),
            kind: "object",
            id: format!("{context} ({error})"),
        },
        Refusal::Other => ProviderError::Failed {
            provider: provider.into(),
            context,
            source: Box::new(error),
        },
    }
}

/// The HTTP client of a provider ([`crate::http::HttpClient::new`]), its failure a provider error.
///
/// # Errors
/// The client cannot be built (the `NODEUP_DEBUG` file cannot be opened).
pub fn http_client(provider: &str) -> Result<crate::http::HttpClient, ProviderError> {
    crate::http::HttpClient::new().map_err(|e| ProviderError::Failed {
        provider: provider.into(),
        context: "setting up HTTP".into(),
        source: Box::new(e),
    })
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
