//! The provider-neutral objects every driver speaks in: nodes, their states, sizes, images,
//! locations, and the credentials handed to `create_node`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The state of a node, as every provider's own status values map onto it.
///
/// Serialized in lower case (`running`, `pending`, ...): scripts read these from `--json` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Up and reachable as far as the provider knows.
    Running,
    /// Being created or booting.
    Pending,
    /// Going through a reboot.
    Rebooting,
    /// Powered off; it can be started again.
    Stopped,
    /// Destroyed or being destroyed.
    Terminated,
    /// The provider reports a failure; `extra["error"]` says why when the provider does.
    Error,
    /// A status value nodeup does not know.
    Unknown,
}

impl NodeState {
    /// The lower-case name used in JSON and in progress output.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Running => "running",
            NodeState::Pending => "pending",
            NodeState::Rebooting => "rebooting",
            NodeState::Stopped => "stopped",
            NodeState::Terminated => "terminated",
            NodeState::Error => "error",
            NodeState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of a node's addresses to log in on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Interface {
    /// `public_ips`.
    #[default]
    Public,
    /// `private_ips`.
    Private,
}

/// A node (a server, a virtual machine, a local sandboxed node) as a provider reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The provider's id for the node.
    pub id: String,
    /// The node's name (its hostname where the provider sets one).
    pub name: String,
    /// Where the node is in its life.
    pub state: NodeState,
    /// Addresses reachable from outside the provider's network.
    pub public_ips: Vec<IpAddr>,
    /// Addresses on the provider's private network.
    pub private_ips: Vec<IpAddr>,
    /// The image id the node was created from, when known.
    pub image: Option<String>,
    /// The size id the node was created with, when known.
    pub size: Option<String>,
    /// The name of the provider (driver) that owns the node.
    pub provider: String,
    /// Provider-specific facts. Well-known keys, each with a typed accessor: `ssh_port` (when not
    /// 22), `login_user` (the image's default login user), `host_keys` (the node's SSH host public
    /// keys, when the provider knows them), `error` (why the node is in the error state),
    /// `password` (a login password the provider generated or was given), `status` (the
    /// provider's own status string), `location` (its region or datacenter).
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Node {
    /// The SSH port the node listens on: `extra.ssh_port`, or 22.
    pub fn ssh_port(&self) -> u16 {
        self.extra
            .get("ssh_port")
            .and_then(|v| v.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(22)
    }

    /// The image's default login user (`extra.login_user`), when the provider says.
    pub fn login_user(&self) -> Option<&str> {
        self.extra.get("login_user").and_then(|v| v.as_str())
    }

    /// The node's SSH host public keys, one OpenSSH line each (`extra.host_keys`), when the
    /// provider knows them: a login must be to one of these.
    pub fn host_keys(&self) -> Vec<String> {
        self.extra
            .get("host_keys")
            .and_then(|v| v.as_array())
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Why the node is in the error state (`extra.error`), when the provider says.
    pub fn error(&self) -> Option<&str> {
        self.extra.get("error").and_then(|v| v.as_str())
    }

    /// The login password the provider generated or set (`extra.password`), if any.
    pub fn password(&self) -> Option<&str> {
        self.extra.get("password").and_then(|v| v.as_str())
    }

    /// Sets the login password (`extra.password`): what `deploy_node` records for password auth.
    pub fn set_password(&mut self, password: &str) {
        self.extra.insert(
            "password".into(),
            serde_json::Value::String(password.into()),
        );
    }

    /// Where the node is (`extra.location`): a region, a datacenter, `local`.
    pub fn location(&self) -> Option<&str> {
        self.extra.get("location").and_then(|v| v.as_str())
    }

    /// The run that created it (`extra.run`), when the provider tags its nodes with it.
    pub fn run(&self) -> Option<&str> {
        self.extra.get("run").and_then(|v| v.as_str())
    }

    /// The provider's own status string (`extra.status`), when it reports one.
    pub fn status(&self) -> Option<&str> {
        self.extra.get("status").and_then(|v| v.as_str())
    }
}

/// A size (flavor, plan): how much machine a node gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSize {
    /// The provider's id for the size.
    pub id: String,
    /// A human-readable name.
    pub name: String,
    /// Memory in MiB.
    pub ram_mib: u64,
    /// Disk in GB, when the size has one.
    pub disk_gb: Option<u64>,
    /// Virtual CPUs, when known.
    pub vcpus: Option<u32>,
    /// Hourly price, when the provider publishes one.
    pub price: Option<f64>,
    /// Network bandwidth in Mbit/s, when the provider says.
    #[serde(default)]
    pub bandwidth_mbps: Option<u64>,
    /// Provider-specific facts.
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// An image a node can be created from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeImage {
    /// The provider's id for the image.
    pub id: String,
    /// A human-readable name.
    pub name: String,
    /// Provider-specific facts; `login_user` is the image's default login user when known.
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A location (region, datacenter) where nodes are created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeLocation {
    /// The provider's id for the location.
    pub id: String,
    /// A human-readable name.
    pub name: String,
    /// The country code, when known.
    pub country: Option<String>,
}

/// A credential handed to `create_node`, so that the new node lets its login user in.
#[derive(Clone, PartialEq, Eq)]
pub enum NodeAuth {
    /// An SSH public key in OpenSSH one-line format (`ssh-ed25519 AAAA... comment`).
    SshKey(String),
    /// A password for the login user.
    Password(String),
}

impl fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeAuth::SshKey(key) => f.debug_tuple("SshKey").field(key).finish(),
            NodeAuth::Password(_) => f.write_str("Password(***)"),
        }
    }
}

/// Everything `create_node` takes. Provider-specific options go in `extra`.
#[derive(Debug, Clone, Default)]
pub struct CreateNode {
    /// The node's name.
    pub name: String,
    /// The size id; the provider's default when `None`.
    pub size: Option<String>,
    /// The image id; the provider's default when `None`.
    pub image: Option<String>,
    /// The location id; the provider's default when `None`.
    pub location: Option<String>,
    /// The credential the node is created with.
    pub auth: Option<NodeAuth>,
    /// Provider-specific options, as a driver documents them.
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The run creating the node (the journal's run id), when there is one. Providers that tag
    /// their nodes record it (EC2's `nodeup:run` tag, reported as `extra.run`), so that `nodeup
    /// cleanup` tells a run's node apart from another's of the same name, and it makes the
    /// create request's idempotency token stable across retries.
    pub run: Option<String>,
}

/// An SSH key pair the provider keeps (to be installed on new nodes).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyPair {
    /// The provider's name (or id) for the key.
    pub name: String,
    /// The public key, one OpenSSH line.
    pub public_key: String,
    /// The key's fingerprint, as the provider reports it.
    pub fingerprint: Option<String>,
    /// The private key, only when the provider generated it (`create_key_pair`). Never printed by
    /// `Debug`.
    #[serde(skip_serializing)]
    pub private_key: Option<String>,
    /// Provider-specific facts (`id` where the provider has ids besides names).
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("name", &self.name)
            .field("public_key", &self.public_key)
            .field("fingerprint", &self.fingerprint)
            .field("private_key", &self.private_key.as_ref().map(|_| "***"))
            .field("extra", &self.extra)
            .finish()
    }
}

/// A block storage volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageVolume {
    /// The provider's id.
    pub id: String,
    /// The volume's name.
    pub name: String,
    /// Its size in GB.
    pub size_gb: u64,
    /// The provider's state for it (`available`, `in-use`, ...), lower case.
    pub state: String,
    /// The node it is attached to, if any.
    pub attached_to: Option<String>,
    /// Provider-specific facts (`type`, `description`, `region` ...).
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    /// The provider's id.
    pub id: String,
    /// The snapshot's name.
    pub name: Option<String>,
    /// The id of the volume it was taken from.
    pub volume_id: String,
    /// Its size in GB.
    pub size_gb: u64,
    /// The provider's state for it, lower case.
    pub state: String,
    /// When it was taken (RFC 3339), when known.
    pub created: Option<String>,
    /// Provider-specific facts.
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// What `create_volume` takes.
#[derive(Debug, Clone, Default)]
pub struct CreateVolume {
    /// Size in GB.
    pub size_gb: u64,
    /// The volume's name.
    pub name: String,
    /// The location (region) id.
    pub location: Option<String>,
    /// The volume type (provider-specific, e.g. `classic`, `high-speed`).
    pub volume_type: Option<String>,
    /// What the volume is for, if the provider keeps descriptions.
    pub description: Option<String>,
    /// A volume snapshot to make the volume from (its id).
    pub snapshot: Option<String>,
}
