//! AWS EC2: instances, images (by id, or the newest by name among known publishers), instance
//! types, availability zones, key pairs, volumes and snapshots, over the EC2 Query API
//! ([`api`]).
//!
//! Credentials are never in a step file: they come the way every AWS tool finds them
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE` with
//! `~/.aws/credentials` and `~/.aws/config`, `credential_process`, SSO, the instance's role), as do
//! the region (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's, or `[provider] region`) and the
//! endpoint (`AWS_ENDPOINT_URL_EC2`, `AWS_ENDPOINT_URL`).

pub mod api;
mod create;
mod driver;
pub mod images;
mod storage;
pub mod xml;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::driver::{ProviderError, Result};
pub use api::{Access, Client, Ec2Error};

/// The provider's name.
pub const PROVIDER: &str = "ec2";

/// Where the credentials come from, for messages.
pub const CREDENTIALS_FROM: &str = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
    AWS_SESSION_TOKEN), or AWS_PROFILE with ~/.aws/credentials and ~/.aws/config";

/// The instance type when the step file names none: the smallest general-purpose one that is
/// offered in every region.
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";

/// Where `allow_ssh_from = "here"` learns this machine's public address: AWS's own service.
pub const DEFAULT_CHECKIP_URL: &str = "https://checkip.amazonaws.com";

/// The security group `allow_ssh_from` makes (one per VPC), reused by every node that asks.
pub const SSH_GROUP: &str = "nodeup-ssh";

/// What names a key pair nodeup imported for a deployment (`nodeup-` and the key's digest): it
/// is removed once no instance uses it.
pub use crate::providers::kit::IMPORTED_KEY_PREFIX;

/// The tag that records the run that made an instance.
pub const RUN_TAG: &str = "nodeup:run";

/// The tag that records the image's login user.
pub const LOGIN_USER_TAG: &str = "nodeup:login-user";

/// `[provider]` settings (never credentials).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Settings {
    /// The region, over the environment's and the profile's.
    #[serde(default)]
    pub region: Option<String>,
    /// Accounts whose images a name is looked up among, before the well-known publishers
    /// (Debian, Canonical, Amazon) and your own (`self`).
    #[serde(default)]
    pub image_owners: Vec<String>,
    /// Where `allow_ssh_from = "here"` asks for this machine's public address.
    #[serde(default)]
    pub checkip_url: Option<String>,
}

/// `[node] options` of a create (`CreateNode::extra`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Options {
    /// The subnet to launch in (else the default VPC's subnet of the zone).
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// Security groups, by id.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// Opens SSH (port 22) to this address range, or to this machine's public address
    /// (`"here"`): a security group `nodeup-ssh` is made in the VPC (or reused), and removed with
    /// the last node in it. Off unless given.
    #[serde(default)]
    pub allow_ssh_from: Option<String>,
    /// User data (cloud-init), as text.
    #[serde(default)]
    pub user_data: Option<String>,
    /// An instance profile, by name or ARN.
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// The root volume's size in GiB (else the image's).
    #[serde(default)]
    pub root_volume_gb: Option<u64>,
    /// A spot instance (cheaper; AWS may take it back).
    #[serde(default)]
    pub spot: bool,
    /// More tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// An existing key pair, by name (Libcloud's `ex_keyname`), instead of importing the
    /// deployment's key.
    #[serde(default)]
    pub ssh_key_name: Option<String>,
    /// The account whose images the image name is looked up among.
    #[serde(default)]
    pub image_owner: Option<String>,
}

/// The EC2 driver: one region's API client.
#[derive(Debug)]
pub struct Ec2Driver {
    client: Client,
    settings: Ec2Settings,
    memo: Memo,
}

/// What a driver learns once and every create of a fleet reuses: the image a name means and the
/// key pairs known to be there. One create looks each up while the others wait for its answer,
/// so a fleet of ten makes one `DescribeImages` and one `ImportKeyPair`, not ten.
#[derive(Debug, Default)]
struct Memo {
    /// Images by the name (or id) asked for and the owner given.
    images: tokio::sync::Mutex<std::collections::HashMap<(String, Option<String>), xml::Image>>,
    /// Key pairs this driver found or imported.
    keys: tokio::sync::Mutex<std::collections::HashSet<String>>,
}

impl Ec2Driver {
    /// A driver with these settings; credentials, region and endpoint are found on first use.
    ///
    /// # Errors
    /// The HTTP client cannot be made.
    pub fn new(settings: Ec2Settings) -> Result<Self> {
        Ok(Ec2Driver {
            client: Client::new(settings.region.clone())?,
            settings,
            memo: Memo::default(),
        })
    }

    /// A driver with the credentials, region and endpoint given outright (a library caller's,
    /// as Libcloud's `EC2NodeDriver(key, secret, region=...)`).
    ///
    /// # Errors
    /// The HTTP client cannot be made, or the endpoint holds credentials.
    pub fn with_access(access: Access, settings: Ec2Settings) -> Result<Self> {
        Ok(Ec2Driver {
            client: Client::with_access(access)?,
            settings,
            memo: Memo::default(),
        })
    }

    /// The driver for a step file's `[provider]` table.
    ///
    /// # Errors
    /// An unknown key, or a credential in the step file.
    pub fn from_config(config: &BTreeMap<String, serde_json::Value>) -> Result<Self> {
        let settings: Ec2Settings = crate::providers::settings(
            PROVIDER,
            "[provider]",
            config,
            &format!("set {CREDENTIALS_FROM}"),
        )?;
        Self::new(settings)
    }

    /// The API client, to adjust (its retry policy, say).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The API client.
    pub fn client(&self) -> &Client {
        &self.client
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
