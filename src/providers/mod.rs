//! The providers nodeup drives, one folder or file each. Every one implements `NodeDriver` and is
//! registered by name in `driver`. `lookup` and [`settings`] are what they share: finding an image,
//! size or location by id or name, and typed settings that refuse unknown keys.

pub mod dummy;
pub mod local;
pub mod lookup;
pub mod ovh;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::driver::ProviderError;

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
