//! The `NodeDriver` trait every provider implements, its `Features`, the error drivers share,
//! and the `Registry` type that finds a driver by provider name. Nothing here knows a provider.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::model::{
    CreateNode, CreateVolume, KeyPair, Node, NodeImage, NodeLocation, NodeSize, StorageVolume,
    VolumeSnapshot,
};

/// What goes wrong in a provider call. Shared by every driver.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider has no such operation.
    #[error("{operation} is not supported by {provider}")]
    NotSupported {
        /// The provider's name.
        provider: String,
        /// The operation asked for, e.g. `create_image`.
        operation: &'static str,
    },
    /// No node, image, size ... with that id or name.
    #[error("{provider}: no {kind} named or numbered {id:?}")]
    NotFound {
        /// The provider's name.
        provider: String,
        /// What was looked for: `node`, `image`, ...
        kind: &'static str,
        /// The id or name asked for.
        id: String,
    },
    /// The request is not valid for this provider; the message says what to change.
    #[error("{provider}: {message}")]
    InvalidRequest {
        /// The provider's name.
        provider: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The provider refused the credentials (its 401, or its equivalent): nothing can work until
    /// they are fixed. `check` names where they come from (the variables, the config file).
    #[error("{provider}: the credentials were refused ({message}); check {check}")]
    InvalidCredentials {
        /// The provider's name.
        provider: String,
        /// What the provider said.
        message: String,
        /// Where the credentials come from, to check.
        check: String,
    },
    /// This machine lacks something the provider needs; the message names it and how to get it.
    #[error("{provider}: {message}")]
    Requirement {
        /// The provider's name.
        provider: String,
        /// What is missing and how to install it.
        message: String,
    },
    /// A provider operation failed; `context` says which and on what.
    #[error("{provider}: {context}")]
    Failed {
        /// The provider's name.
        provider: String,
        /// What was being done, e.g. `starting node web-1`.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The result of a driver call.
pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// How many nodes a fleet has in flight at once when the provider says nothing.
pub const DEFAULT_PARALLEL_CREATES: usize = 10;

/// What a driver's `create_node` accepts, as Libcloud's `features["create_node"]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `create_node` installs an SSH public key given as `NodeAuth::SshKey`.
    pub ssh_key: bool,
    /// `create_node` sets a password given as `NodeAuth::Password`.
    pub password: bool,
    /// `create_node` generates a password and returns it as `extra["password"]`.
    pub generates_password: bool,
}

/// A compute provider: creates, lists and destroys nodes, and reports sizes, images and locations.
///
/// A provider implements what it has; every other method answers `ProviderError::NotSupported`.
#[async_trait]
pub trait NodeDriver: Send + Sync {
    /// The provider's name, as the registry and the command line know it (`local`, `ovh`, ...).
    fn name(&self) -> &str;

    /// What `create_node` accepts.
    fn features(&self) -> Features;

    /// How many nodes a fleet creates and provisions at once unless told otherwise: what the
    /// provider's API and rate limits bear.
    fn default_parallel(&self) -> usize {
        DEFAULT_PARALLEL_CREATES
    }

    /// The settings that reach this driver again through the registry (`[provider]` keys, never
    /// credentials): the journal records them so that cleanup can find a node later.
    fn settings(&self) -> ProviderConfig {
        ProviderConfig::new()
    }

    /// Every node of the account (or, for `local`, of the state directory).
    async fn list_nodes(&self) -> Result<Vec<Node>>;

    /// One node, by id.
    async fn get_node(&self, id: &str) -> Result<Node> {
        self.list_nodes()
            .await?
            .into_iter()
            .find(|n| n.id == id)
            .ok_or_else(|| ProviderError::NotFound {
                provider: self.name().to_string(),
                kind: "node",
                id: id.to_string(),
            })
    }

    /// Create a node. It is usually `Pending` when this returns.
    async fn create_node(&self, request: &CreateNode) -> Result<Node>;

    /// Destroy a node and everything the provider created for it.
    async fn destroy_node(&self, node: &Node) -> Result<()>;

    /// Reboot a node.
    async fn reboot_node(&self, node: &Node) -> Result<()> {
        let _ = node;
        Err(self.not_supported("reboot_node"))
    }

    /// Power a node off.
    async fn stop_node(&self, node: &Node) -> Result<()> {
        let _ = node;
        Err(self.not_supported("stop_node"))
    }

    /// Power a stopped node on.
    async fn start_node(&self, node: &Node) -> Result<()> {
        let _ = node;
        Err(self.not_supported("start_node"))
    }

    /// The images nodes can be created from; only those of `location`, and only those that
    /// `size` can boot, when given (as Libcloud's `list_images(location)`).
    async fn list_images(
        &self,
        location: Option<&str>,
        size: Option<&str>,
    ) -> Result<Vec<NodeImage>> {
        let _ = (location, size);
        Err(self.not_supported("list_images"))
    }

    /// The sizes nodes can be created with; only those of `location` when given.
    async fn list_sizes(&self, location: Option<&str>) -> Result<Vec<NodeSize>> {
        let _ = location;
        Err(self.not_supported("list_sizes"))
    }

    /// One size, by id.
    async fn get_size(&self, id: &str) -> Result<NodeSize> {
        self.list_sizes(None)
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| ProviderError::NotFound {
                provider: self.name().to_string(),
                kind: "size",
                id: id.to_string(),
            })
    }

    /// The nodes in one location ([`Node::location`]).
    async fn list_nodes_in(&self, location: &str) -> Result<Vec<Node>> {
        Ok(self
            .list_nodes()
            .await?
            .into_iter()
            .filter(|n| n.location() == Some(location))
            .collect())
    }

    /// The locations nodes can be created in.
    async fn list_locations(&self) -> Result<Vec<NodeLocation>> {
        Err(self.not_supported("list_locations"))
    }

    /// One image, by id.
    async fn get_image(&self, id: &str) -> Result<NodeImage> {
        self.list_images(None, None)
            .await?
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| ProviderError::NotFound {
                provider: self.name().to_string(),
                kind: "image",
                id: id.to_string(),
            })
    }

    /// Makes an image from a node, with an optional description.
    async fn create_image(
        &self,
        node: &Node,
        name: &str,
        description: Option<&str>,
    ) -> Result<NodeImage> {
        let _ = (node, name, description);
        Err(self.not_supported("create_image"))
    }

    /// Copies an image into another location.
    async fn copy_image(&self, image: &NodeImage, location: &str, name: &str) -> Result<NodeImage> {
        let _ = (image, location, name);
        Err(self.not_supported("copy_image"))
    }

    /// Deletes an image.
    async fn delete_image(&self, image: &NodeImage) -> Result<()> {
        let _ = image;
        Err(self.not_supported("delete_image"))
    }

    /// The key pairs the provider keeps; only those usable in `location` when given (where keys
    /// are per region).
    async fn list_key_pairs(&self, location: Option<&str>) -> Result<Vec<KeyPair>> {
        let _ = location;
        Err(self.not_supported("list_key_pairs"))
    }

    /// One key pair, by name.
    async fn get_key_pair(&self, name: &str) -> Result<KeyPair> {
        self.list_key_pairs(None)
            .await?
            .into_iter()
            .find(|k| k.name == name)
            .ok_or_else(|| ProviderError::NotFound {
                provider: self.name().to_string(),
                kind: "key pair",
                id: name.to_string(),
            })
    }

    /// Has the provider generate a key pair (for `location` only, when given); the private key
    /// is returned once.
    async fn create_key_pair(&self, name: &str, location: Option<&str>) -> Result<KeyPair> {
        let _ = (name, location);
        Err(self.not_supported("create_key_pair"))
    }

    /// Imports a public key (one OpenSSH line), for `location` only when given.
    async fn import_key_pair_from_string(
        &self,
        name: &str,
        public_key: &str,
        location: Option<&str>,
    ) -> Result<KeyPair> {
        let _ = (name, public_key, location);
        Err(self.not_supported("import_key_pair_from_string"))
    }

    /// Imports a public key from a file, for `location` only when given.
    async fn import_key_pair_from_file(
        &self,
        name: &str,
        path: &std::path::Path,
        location: Option<&str>,
    ) -> Result<KeyPair> {
        let key = std::fs::read_to_string(path).map_err(|e| ProviderError::InvalidRequest {
            provider: self.name().to_string(),
            message: format!("cannot read the public key file {}: {e}", path.display()),
        })?;
        self.import_key_pair_from_string(name, key.trim(), location)
            .await
    }

    /// Deletes a key pair.
    async fn delete_key_pair(&self, key_pair: &KeyPair) -> Result<()> {
        let _ = key_pair;
        Err(self.not_supported("delete_key_pair"))
    }

    /// Creates a volume.
    async fn create_volume(&self, request: &CreateVolume) -> Result<StorageVolume> {
        let _ = request;
        Err(self.not_supported("create_volume"))
    }

    /// The volumes.
    async fn list_volumes(&self) -> Result<Vec<StorageVolume>> {
        Err(self.not_supported("list_volumes"))
    }

    /// One volume, by id.
    async fn get_volume(&self, id: &str) -> Result<StorageVolume> {
        self.list_volumes()
            .await?
            .into_iter()
            .find(|v| v.id == id)
            .ok_or_else(|| ProviderError::NotFound {
                provider: self.name().to_string(),
                kind: "volume",
                id: id.to_string(),
            })
    }

    /// Attaches a volume to a node.
    async fn attach_volume(&self, node: &Node, volume: &StorageVolume) -> Result<()> {
        let _ = (node, volume);
        Err(self.not_supported("attach_volume"))
    }

    /// Detaches a volume from `node`, else from whichever node it is attached to.
    async fn detach_volume(&self, volume: &StorageVolume, node: Option<&Node>) -> Result<()> {
        let _ = (volume, node);
        Err(self.not_supported("detach_volume"))
    }

    /// Destroys a volume.
    async fn destroy_volume(&self, volume: &StorageVolume) -> Result<()> {
        let _ = volume;
        Err(self.not_supported("destroy_volume"))
    }

    /// Takes a snapshot of a volume, with an optional name and description.
    async fn create_volume_snapshot(
        &self,
        volume: &StorageVolume,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<VolumeSnapshot> {
        let _ = (volume, name, description);
        Err(self.not_supported("create_volume_snapshot"))
    }

    /// Every volume snapshot.
    async fn list_snapshots(&self) -> Result<Vec<VolumeSnapshot>> {
        Err(self.not_supported("list_snapshots"))
    }

    /// The snapshots of one volume.
    async fn list_volume_snapshots(&self, volume: &StorageVolume) -> Result<Vec<VolumeSnapshot>> {
        Ok(self
            .list_snapshots()
            .await?
            .into_iter()
            .filter(|s| s.volume_id == volume.id)
            .collect())
    }

    /// One snapshot, by id.
    async fn get_snapshot(&self, id: &str) -> Result<VolumeSnapshot> {
        self.list_snapshots()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| ProviderError::NotFound {
                provider: self.name().to_string(),
                kind: "snapshot",
                id: id.to_string(),
            })
    }

    /// Destroys a snapshot.
    async fn destroy_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<()> {
        let _ = snapshot;
        Err(self.not_supported("destroy_volume_snapshot"))
    }

    /// The error a provider answers for an operation it does not have.
    fn not_supported(&self, operation: &'static str) -> ProviderError {
        ProviderError::NotSupported {
            provider: self.name().to_string(),
            operation,
        }
    }
}

/// A provider's own settings (the step file's `[provider]` table: a project id, an endpoint ...;
/// never credentials, which come from the environment or the provider's own config files).
pub type ProviderConfig = BTreeMap<String, serde_json::Value>;

/// Builds a driver from its settings and the environment.
pub type DriverFactory = fn(&ProviderConfig) -> Result<Arc<dyn NodeDriver>>;

/// Drivers by provider name. It knows no provider: the built-in ones are registered by
/// `providers` (see `nodeup::providers::registry`), third parties register theirs the same way.
#[derive(Default)]
pub struct Registry {
    factories: Mutex<BTreeMap<String, DriverFactory>>,
}

impl Registry {
    /// Registers a driver under a provider name, replacing any driver of that name.
    pub fn register(&self, name: &str, factory: DriverFactory) {
        self.factories
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), factory);
    }

    /// The names of every registered provider, in order.
    pub fn names(&self) -> Vec<String> {
        self.factories
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Builds the driver registered under `name` with its settings.
    ///
    /// # Errors
    /// An unknown provider (the message lists the known ones), or what the factory refuses.
    pub fn get(&self, name: &str, config: &ProviderConfig) -> Result<Arc<dyn NodeDriver>> {
        let factory = self
            .factories
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied();
        match factory {
            Some(factory) => factory(config),
            None => Err(ProviderError::InvalidRequest {
                provider: name.to_string(),
                message: format!(
                    "no such provider; known providers: {}",
                    self.names().join(", ")
                ),
            }),
        }
    }
}
