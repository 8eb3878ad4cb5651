//! OpenStack (`openstack`): any OpenStack cloud (OVH Public Cloud, Infomaniak, Cleura, City
//! Cloud, a company's own) over its own APIs: Keystone v3 for tokens and the catalog, Nova for
//! servers, flavors, availability zones and key pairs, Glance for images, Cinder for volumes and
//! snapshots, Neutron for networks and floating IPs ([`api`]).
//!
//! The cloud and its credentials are read as OpenStack's own tools read them ([`config`]): an
//! entry of `clouds.yaml` named by `[provider] cloud` or `OS_CLOUD`, with `secure.yaml`, else the
//! `OS_*` variables. A step file names an entry, never a secret.
//!
//! Every server nodeup makes carries its run in its metadata (`nodeup:run`), so that `nodeup
//! cleanup` finds it, and a create whose answer is lost is looked for by name and run before
//! anything is sent again.

pub mod api;
mod bodies;
pub mod config;
mod create;
mod driver;
mod storage;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::driver::{ProviderError, Result};
pub use api::{Client, OpenStackError, Service};
pub use config::Cloud;

/// The provider's name.
pub const PROVIDER: &str = "openstack";

/// Where the credentials come from, for messages.
pub const CREDENTIALS_FROM: &str = "the clouds.yaml entry OS_CLOUD names (with secure.yaml), or \
    the OS_* variables (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, \
    OS_USER_DOMAIN_NAME, or OS_APPLICATION_CREDENTIAL_ID and _SECRET)";

/// The server metadata key that records the run that made a server.
pub const RUN_KEY: &str = "nodeup:run";

/// The server metadata key that records the image's login user, when the image says it.
pub const LOGIN_USER_KEY: &str = "nodeup:login-user";

/// What names a key pair nodeup imported for a deployment (`nodeup-` and the key's digest).
pub use crate::providers::kit::IMPORTED_KEY_PREFIX;

/// The description of a floating IP nodeup allocated for a server (then the server's id): what
/// lets destroying the server release it, and only it.
pub const FLOATING_IP_DESCRIPTION: &str = "nodeup floating IP of server ";

/// `[provider]` settings (never credentials).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenStackSettings {
    /// The `clouds.yaml` entry to use, over `OS_CLOUD`.
    #[serde(default)]
    pub cloud: Option<String>,
    /// The region whose endpoints are used, over the entry's `region_name` and
    /// `OS_REGION_NAME`.
    #[serde(default)]
    pub region: Option<String>,
}

/// `[node] options` of a create (`CreateNode::extra`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenStackOptions {
    /// The networks the server is attached to, by name or id (else the project's only one, as
    /// Nova picks it).
    #[serde(default)]
    pub networks: Vec<String>,
    /// Security groups, by name.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Allocates a floating IP from this external network (name or id), associates it with
    /// the server, and releases it when the server is destroyed. Off unless given.
    #[serde(default)]
    pub floating_ip_network: Option<String>,
    /// An existing key pair, by name (Libcloud's `ex_keyname`), instead of importing the
    /// deployment's key.
    #[serde(default)]
    pub key_name: Option<String>,
    /// User data (cloud-init), as text.
    #[serde(default)]
    pub user_data: Option<String>,
    /// More metadata for the server.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// A config drive (for clouds without a metadata service).
    #[serde(default)]
    pub config_drive: bool,
    /// The image's login user, when the image's own properties do not say it (`os_admin_user`).
    #[serde(default)]
    pub login_user: Option<String>,
}

/// The OpenStack driver: one cloud's client, in one region.
#[derive(Debug)]
pub struct OpenStackDriver {
    client: Client,
    settings: OpenStackSettings,
    memo: Memo,
}

/// What a driver learns once and every create of a fleet reuses: the image, flavor and network
/// a name means, and the key pairs known to be there. One create looks each up while the others
/// wait for its answer, so a fleet of ten lists images once and imports its key once.
#[derive(Debug, Default)]
struct Memo {
    /// Image, flavor and network ids by what was asked for (`image:NAME`, `flavor:NAME` ...).
    ids: tokio::sync::Mutex<std::collections::HashMap<String, create::Resolved>>,
    /// Key pairs this driver found or imported.
    keys: tokio::sync::Mutex<std::collections::HashSet<String>>,
}

impl OpenStackDriver {
    /// A driver of `cloud`, with these settings.
    ///
    /// # Errors
    /// The HTTP client cannot be made (the cloud's `cacert` cannot be read, say).
    pub fn with_cloud(cloud: Cloud, settings: OpenStackSettings) -> Result<Self> {
        Ok(OpenStackDriver {
            client: Client::new(cloud, settings.region.clone())?,
            settings,
            memo: Memo::default(),
        })
    }

    /// The driver for a step file's `[provider]` table: the cloud it names (or `OS_CLOUD`'s, or
    /// the `OS_*` variables').
    ///
    /// # Errors
    /// An unknown key, a credential in the step file, or a cloud that is not configured.
    pub fn from_config(config: &BTreeMap<String, serde_json::Value>) -> Result<Self> {
        let settings: OpenStackSettings = crate::providers::settings(
            PROVIDER,
            "[provider]",
            config,
            &format!("put them in {CREDENTIALS_FROM}"),
        )?;
        let cloud = config::load(settings.cloud.as_deref())?;
        Self::with_cloud(cloud, settings)
    }

    /// The API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The API client, to adjust (its retry policy, say).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

fn invalid(message: String) -> ProviderError {
    ProviderError::InvalidRequest {
        provider: PROVIDER.into(),
        message,
    }
}

fn not_found(kind: &'static str, id: &str) -> ProviderError {
    ProviderError::NotFound {
        provider: PROVIDER.into(),
        kind,
        id: id.to_string(),
    }
}
