//! Where an OpenStack cloud's address and credentials come from, read as OpenStack's own tools
//! (openstacksdk, the `openstack` CLI, Terraform, Ansible) read them: an entry of `clouds.yaml`
//! (named by `[provider] cloud` or `OS_CLOUD`) with `secure.yaml` merged over it, else the `OS_*`
//! variables.
//!
//! The files are looked for in `$OS_CLIENT_CONFIG_FILE` (`$OS_CLIENT_SECURE_FILE`), then the
//! current directory, `~/.config/openstack/` and `/etc/openstack/`; the first found is read.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{invalid, PROVIDER};
use crate::driver::Result;
use crate::http::CaFile;

/// The variable naming the cloud entry, as every OpenStack tool reads it.
pub const CLOUD_VARIABLE: &str = "OS_CLOUD";

/// Keystone's address for clouds whose entry names a vendor `profile` and no `auth_url`.
const VENDOR_AUTH_URLS: [(&str, &str); 1] = [("ovh", "https://auth.cloud.ovh.net/v3")];

/// The domain a user or project name is looked up in when none is given (Keystone's own default
/// domain, as openstacksdk assumes it).
const DEFAULT_DOMAIN_ID: &str = "default";

/// How Keystone is asked for a token.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// A user's password, scoped to a project.
    Password {
        /// The user, by id or by name in a domain.
        user: Named,
        /// The password.
        password: String,
        /// The project the token is for, by id or by name in a domain.
        project: Named,
    },
    /// An application credential (its project is its own).
    ApplicationCredential {
        /// Its id.
        id: String,
        /// Its secret.
        secret: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Password { user, project, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .field("password", &"***")
                .field("project", project)
                .finish(),
            Auth::ApplicationCredential { id, .. } => f
                .debug_struct("ApplicationCredential")
                .field("id", id)
                .field("secret", &"***")
                .finish(),
        }
    }
}

/// A user or project: by id, or by name within a domain (by id or name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// By id.
    Id(String),
    /// By name, in a domain.
    Name {
        /// Its name.
        name: String,
        /// The domain, by id or name.
        domain: Domain,
    },
}

/// A Keystone domain, by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// By id.
    Id(String),
    /// By name.
    Name(String),
}

/// One cloud: Keystone's address, how to authenticate, and which endpoints to use.
#[derive(Debug, Clone)]
pub struct Cloud {
    /// Where it was read from, for messages: `clouds.yaml entry "ovh" (/home/me/clouds.yaml)` or
    /// `the OS_* variables`.
    pub source: String,
    /// Keystone v3's address, ending in `/v3`.
    pub auth_url: String,
    /// The credentials.
    pub auth: Auth,
    /// The region whose endpoints are used (else the catalog's first).
    pub region: Option<String>,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Certificate authorities to trust for this cloud.
    pub cacert: Option<CaFile>,
}

/// A cloud's settings as the files and the variables give them (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    auth_type: Option<String>,
    #[serde(default)]
    region_name: Option<String>,
    #[serde(default)]
    regions: Vec<Value>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    cacert: Option<String>,
    #[serde(default)]
    profile: Option<String>,
}

/// The `auth` table of a cloud entry.
#[derive(Debug, Clone, Default, Deserialize)]
struct RawAuth {
    auth_url: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    project_name: Option<String>,
    project_id: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    domain_name: Option<String>,
    domain_id: Option<String>,
    application_credential_id: Option<String>,
    application_credential_secret: Option<String>,
}

/// The `OS_*` variables and the `auth` field each fills.
const AUTH_VARIABLES: [(&str, &str); 14] = [
    ("OS_AUTH_URL", "auth_url"),
    ("OS_USERNAME", "username"),
    ("OS_USER_ID", "user_id"),
    ("OS_PASSWORD", "password"),
    ("OS_PROJECT_NAME", "project_name"),
    ("OS_PROJECT_ID", "project_id"),
    ("OS_USER_DOMAIN_NAME", "user_domain_name"),
    ("OS_USER_DOMAIN_ID", "user_domain_id"),
    ("OS_PROJECT_DOMAIN_NAME", "project_domain_name"),
    ("OS_PROJECT_DOMAIN_ID", "project_domain_id"),
    ("OS_DOMAIN_NAME", "domain_name"),
    ("OS_DOMAIN_ID", "domain_id"),
    ("OS_APPLICATION_CREDENTIAL_ID", "application_credential_id"),
    (
        "OS_APPLICATION_CREDENTIAL_SECRET",
        "application_credential_secret",
    ),
];

/// The older names some `openrc` files still use, and the current name they stand for.
const LEGACY_VARIABLES: [(&str, &str); 2] = [
    ("OS_TENANT_NAME", "OS_PROJECT_NAME"),
    ("OS_TENANT_ID", "OS_PROJECT_ID"),
];

/// Reads the cloud to use: `cloud` (the step file's `[provider] cloud`), else `$OS_CLOUD`, from
/// `clouds.yaml`; else the `OS_*` variables.
///
/// # Errors
/// No cloud is configured, the entry is missing or incomplete, or a file cannot be read: each
/// names the file, entry or variable and the fix.
pub fn load(cloud: Option<&str>) -> Result<Cloud> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let wanted = cloud.map(str::to_string).or_else(|| env(CLOUD_VARIABLE));
    match wanted {
        Some(name) => from_files(&name),
        None if env("OS_AUTH_URL").is_some() => from_variables(&env),
        None => Err(invalid(nothing_configured())),
    }
}

/// The message when neither a cloud entry nor the variables are given.
fn nothing_configured() -> String {
    let entries = match find_file("OS_CLIENT_CONFIG_FILE", "clouds.yaml") {
        Some(path) => match read_yaml(&path).map(|doc| entry_names(&doc)) {
            Ok(names) if !names.is_empty() => format!(
                " ({} has {})",
                path.display(),
                names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        },
        None => String::new(),
    };
    format!(
        "no cloud is configured: set {CLOUD_VARIABLE} to an entry of clouds.yaml{entries}, or \
         `cloud = \"NAME\"` in the step file's [provider] table, or source your cloud's openrc \
         file for the OS_* variables (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME ...)"
    )
}

/// The places a file is looked for, in order: the variable's path, then `name` in the current
/// directory, `~/.config/openstack/` and `/etc/openstack/`.
fn candidates(variable: &str, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) {
        found.push(PathBuf::from(path));
    }
    found.push(PathBuf::from(name));
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(config) = config {
        found.push(config.join("openstack").join(name));
    }
    found.push(Path::new("/etc/openstack").join(name));
    found
}

fn find_file(variable: &str, name: &str) -> Option<PathBuf> {
    candidates(variable, name).into_iter().find(|p| p.is_file())
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    serde_yaml_ng::from_str(&text)
        .map_err(|e| invalid(format!("{}: not valid YAML: {e}", path.display())))
}

fn entry_names(doc: &Value) -> Vec<String> {
    doc.get("clouds")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Merges `over` into `base`, tables key by key (as `secure.yaml` is laid over `clouds.yaml`).
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// The entry `name` of `clouds.yaml`, with `secure.yaml`'s entry of that name over it.
fn from_files(name: &str) -> Result<Cloud> {
    let path = find_file("OS_CLIENT_CONFIG_FILE", "clouds.yaml").ok_or_else(|| {
        let looked = candidates("OS_CLIENT_CONFIG_FILE", "clouds.yaml")
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        invalid(format!(
            "cloud {name:?} is asked for, but there is no clouds.yaml (looked in {looked}); \
             write one, or set OS_CLIENT_CONFIG_FILE to yours"
        ))
    })?;
    let doc = read_yaml(&path)?;
    let Some(mut entry) = doc.get("clouds").and_then(|c| c.get(name)).cloned() else {
        let names = entry_names(&doc);
        return Err(invalid(format!(
            "{} has no cloud {name:?} under `clouds:`; it has {}",
            path.display(),
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )));
    };
    if let Some(secure) = find_file("OS_CLIENT_SECURE_FILE", "secure.yaml") {
        if let Some(extra) = read_yaml(&secure)?
            .get("clouds")
            .and_then(|c| c.get(name))
            .cloned()
        {
            merge(&mut entry, extra);
        }
    }
    let raw: Raw = serde_yaml_ng::from_value(entry)
        .map_err(|e| invalid(format!("{}: cloud {name:?}: {e}", path.display())))?;
    let source = format!("clouds.yaml entry {name:?} ({})", path.display());
    resolve(raw, source, "the entry's auth table")
}

/// The cloud the `OS_*` variables describe.
fn from_variables(env: &dyn Fn(&str) -> Option<String>) -> Result<Cloud> {
    let mut auth = serde_json::Map::new();
    for (variable, field) in AUTH_VARIABLES {
        let legacy = LEGACY_VARIABLES
            .iter()
            .find(|(_, current)| *current == variable)
            .and_then(|(old, _)| env(old));
        if let Some(value) = env(variable).or(legacy) {
            auth.insert(field.into(), value.into());
        }
    }
    let raw = Raw {
        auth: serde_json::from_value(serde_json::Value::Object(auth))
            .map_err(|e| invalid(format!("the OS_* variables: {e}")))?,
        auth_type: env("OS_AUTH_TYPE"),
        region_name: env("OS_REGION_NAME"),
        interface: env("OS_INTERFACE"),
        cacert: env("OS_CACERT"),
        ..Raw::default()
    };
    resolve(raw, "the OS_* variables".into(), "the OS_* variables")
}

/// Checks a cloud's settings and makes them a [`Cloud`]; `source` and `fields` name where they
/// came from in errors.
fn resolve(raw: Raw, source: String, fields: &str) -> Result<Cloud> {
    let from_profile = raw.profile.as_deref().and_then(|p| {
        VENDOR_AUTH_URLS
            .iter()
            .find(|(vendor, _)| *vendor == p)
            .map(|(_, url)| url.to_string())
    });
    let auth_url = raw.auth.auth_url.clone().or(from_profile).ok_or_else(|| {
        invalid(format!(
            "{source}: no auth_url (Keystone's address, e.g. https://auth.example.com:5000/v3; \
             OS_AUTH_URL in an openrc file)"
        ))
    })?;
    let auth_url = keystone_v3(&auth_url, &source)?;
    let auth = credentials(&raw, &source, fields)?;
    let interface = interface(raw.interface.as_deref(), &source)?;
    let region = raw.region_name.clone().or_else(|| {
        raw.regions.first().and_then(|r| match r {
            Value::String(s) => Some(s.clone()),
            other => other.get("name").and_then(Value::as_str).map(String::from),
        })
    });
    let cacert = raw.cacert.as_ref().map(|path| CaFile {
        named_by: if source.starts_with("the OS_") {
            "OS_CACERT".into()
        } else {
            format!("{source}: cacert")
        },
        path: PathBuf::from(path),
    });
    Ok(Cloud {
        source,
        auth_url,
        auth,
        region,
        interface,
        cacert,
    })
}

/// Keystone v3's address from an `auth_url` with or without its version.
fn keystone_v3(auth_url: &str, source: &str) -> Result<String> {
    let trimmed = auth_url.trim().trim_end_matches('/');
    let url = crate::providers::kit::endpoint(PROVIDER, "auth_url", trimmed, source)?;
    if url.ends_with("/v2.0") {
        return Err(invalid(format!(
            "{source}: auth_url {auth_url} is Keystone v2.0, which OpenStack removed; use the \
             v3 address (the same one ending in /v3)"
        )));
    }
    Ok(if url.ends_with("/v3") {
        url
    } else {
        format!("{url}/v3")
    })
}

/// `public` (the default), `internal` or `admin`; the old `publicURL` forms are taken too.
fn interface(given: Option<&str>, source: &str) -> Result<String> {
    let given = given.unwrap_or("public");
    let plain = given.trim_end_matches("URL").to_ascii_lowercase();
    match plain.as_str() {
        "public" | "internal" | "admin" => Ok(plain),
        _ => Err(invalid(format!(
            "{source}: interface {given:?}: give public, internal or admin"
        ))),
    }
}

/// A domain by id, else by name, else `fallback`'s, else Keystone's default.
fn domain(id: &Option<String>, name: &Option<String>, fallback: &RawAuth) -> Domain {
    match (id, name, &fallback.domain_id, &fallback.domain_name) {
        (Some(id), _, _, _) | (None, None, Some(id), _) => Domain::Id(id.clone()),
        (None, Some(name), _, _) | (None, None, None, Some(name)) => Domain::Name(name.clone()),
        (None, None, None, None) => Domain::Id(DEFAULT_DOMAIN_ID.into()),
    }
}

/// The credentials of a cloud: an application credential when one is given (or `auth_type`
/// says so), else a password for a project.
fn credentials(raw: &Raw, source: &str, fields: &str) -> Result<Auth> {
    let a = &raw.auth;
    let wants_app = raw
        .auth_type
        .as_deref()
        .is_some_and(|t| t.contains("applicationcredential"));
    if wants_app || a.application_credential_id.is_some() {
        let (Some(id), Some(secret)) = (
            a.application_credential_id.clone(),
            a.application_credential_secret.clone(),
        ) else {
            return Err(invalid(format!(
                "{source}: an application credential needs both application_credential_id and \
                 application_credential_secret (OS_APPLICATION_CREDENTIAL_ID and _SECRET); only \
                 the id is looked up by nodeup, not the name"
            )));
        };
        return Ok(Auth::ApplicationCredential { id, secret });
    }
    if let Some(other) = raw
        .auth_type
        .as_deref()
        .filter(|t| !matches!(*t, "password" | "v3password"))
    {
        return Err(invalid(format!(
            "{source}: auth_type {other:?} is not one nodeup speaks: use password (v3password) \
             or v3applicationcredential"
        )));
    }
    let user = match (&a.user_id, &a.username) {
        (Some(id), _) => Named::Id(id.clone()),
        (None, Some(name)) => Named::Name {
            name: name.clone(),
            domain: domain(&a.user_domain_id, &a.user_domain_name, a),
        },
        (None, None) => {
            return Err(invalid(format!(
                "{source}: no username (or user_id) in {fields}, and no application credential"
            )))
        }
    };
    let password = a.password.clone().ok_or_else(|| {
        invalid(format!(
            "{source}: no password in {fields} (in a clouds.yaml, it may sit in secure.yaml \
             beside it; or OS_PASSWORD)"
        ))
    })?;
    let project = match (&a.project_id, &a.project_name) {
        (Some(id), _) => Named::Id(id.clone()),
        (None, Some(name)) => Named::Name {
            name: name.clone(),
            domain: domain(&a.project_domain_id, &a.project_domain_name, a),
        },
        (None, None) => {
            return Err(invalid(format!(
                "{source}: no project_name or project_id in {fields}: a token must be for a \
                 project to create servers"
            )))
        }
    };
    Ok(Auth::Password {
        user,
        password,
        project,
    })
}

/// Reads a cloud straight from YAML text (a library caller's own `clouds.yaml`, or a test's).
///
/// # Errors
/// As [`load`].
pub fn from_yaml(text: &str, name: &str) -> Result<Cloud> {
    let doc: Value =
        serde_yaml_ng::from_str(text).map_err(|e| invalid(format!("not valid YAML: {e}")))?;
    let entry = doc
        .get("clouds")
        .and_then(|c| c.get(name))
        .cloned()
        .ok_or_else(|| invalid(format!("no cloud {name:?} under `clouds:`")))?;
    let raw: Raw =
        serde_yaml_ng::from_value(entry).map_err(|e| invalid(format!("cloud {name:?}: {e}")))?;
    resolve(raw, format!("cloud {name:?}"), "the entry's auth table")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUDS: &str = r#"
clouds:
  ovh:
    profile: ovh
    auth:
      username: user-abc
      password: s3cret
      project_id: 0123456789abcdef
      user_domain_name: Default
    region_name: GRA11
  app:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example.com:5000
      application_credential_id: ac-1
      application_credential_secret: shh
    regions: [RegionOne, RegionTwo]
    interface: internalURL
"#;

    #[test]
    fn a_vendor_profile_gives_keystone_and_domains_default() {
        let cloud = from_yaml(CLOUDS, "ovh").unwrap();
        assert_eq!(cloud.auth_url, "https://auth.cloud.ovh.net/v3");
        assert_eq!(cloud.region.as_deref(), Some("GRA11"));
        assert_eq!(cloud.interface, "public");
        let Auth::Password { user, project, .. } = &cloud.auth else {
            panic!("{:?}", cloud.auth)
        };
        assert_eq!(
            *user,
            Named::Name {
                name: "user-abc".into(),
                domain: Domain::Name("Default".into())
            }
        );
        assert_eq!(*project, Named::Id("0123456789abcdef".into()));
        assert!(!format!("{cloud:?}").contains("s3cret"));
    }

    #[test]
    fn application_credentials_regions_and_interfaces() {
        let cloud = from_yaml(CLOUDS, "app").unwrap();
        assert_eq!(cloud.auth_url, "https://keystone.example.com:5000/v3");
        assert_eq!(cloud.region.as_deref(), Some("RegionOne"));
        assert_eq!(cloud.interface, "internal");
        assert!(matches!(cloud.auth, Auth::ApplicationCredential { ref id, .. } if id == "ac-1"));
    }

    #[test]
    fn incomplete_entries_say_what_is_missing() {
        let text = "clouds:\n  c:\n    auth:\n      auth_url: https://k/v3\n      username: u\n";
        let e = from_yaml(text, "c").unwrap_err().to_string();
        assert!(
            e.contains("no password") && e.contains("secure.yaml"),
            "{e}"
        );
        let text = "clouds:\n  c:\n    auth:\n      auth_url: https://k/v2.0\n";
        let e = from_yaml(text, "c").unwrap_err().to_string();
        assert!(e.contains("v2.0") && e.contains("/v3"), "{e}");
        let e = from_yaml(CLOUDS, "nope").unwrap_err().to_string();
        assert!(e.contains("\"nope\""), "{e}");
    }

    #[test]
    fn secure_yaml_is_laid_over_the_entry() {
        let mut base: Value =
            serde_yaml_ng::from_str("auth: {username: u, project_id: p}").unwrap();
        merge(
            &mut base,
            serde_yaml_ng::from_str("auth: {password: pw}").unwrap(),
        );
        assert_eq!(base["auth"]["username"].as_str(), Some("u"));
        assert_eq!(base["auth"]["password"].as_str(), Some("pw"));
    }
}
