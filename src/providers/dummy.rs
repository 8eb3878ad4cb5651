//! The `dummy` provider: everything kept in memory, for library users' own tests. Nodes are
//! Running at once with an address in 127.0.0.0/8 (nothing listens there); key pairs, volumes,
//! snapshots and images round-trip. Each `DummyDriver` has its own state.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::driver::{Features, NodeDriver, ProviderError, Result};
use crate::model::{
    CreateNode, CreateVolume, KeyPair, Node, NodeAuth, NodeImage, NodeLocation, NodeSize,
    NodeState, StorageVolume, VolumeSnapshot,
};

const PROVIDER: &str = "dummy";

#[derive(Debug, Default)]
struct State {
    serial: u64,
    nodes: Vec<Node>,
    images: Vec<NodeImage>,
    keys: Vec<KeyPair>,
    volumes: Vec<StorageVolume>,
    snapshots: Vec<VolumeSnapshot>,
}

/// An in-memory provider.
#[derive(Debug, Default)]
pub struct DummyDriver {
    state: Mutex<State>,
}

/// The dummy provider's `[provider]` settings: none.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoSettings {}

impl DummyDriver {
    /// [`DummyDriver::new`], after checking that the `[provider]` table is empty.
    ///
    /// # Errors
    /// Any `[provider]` key.
    pub fn from_config(config: &crate::driver::ProviderConfig) -> crate::driver::Result<Self> {
        crate::providers::settings::<NoSettings>(
            "dummy",
            "[provider]",
            config,
            &[],
            "the dummy provider needs none",
        )?;
        Ok(Self::new())
    }

    /// An empty dummy provider with one image, `dummy-image`.
    pub fn new() -> Self {
        let driver = DummyDriver::default();
        driver.lock().images.push(NodeImage {
            id: "dummy-image".into(),
            name: "Dummy image".into(),
            extra: BTreeMap::new(),
        });
        driver
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a node's state (to test what callers do with, say, `Error`).
    pub fn set_state(&self, id: &str, state: NodeState) -> Result<()> {
        let mut s = self.lock();
        let node = s
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| not_found("node", id))?;
        node.state = state;
        Ok(())
    }
}

/// Removes the item whose key is `id`; `NotFound` when there is none.
fn remove<T>(
    items: &mut Vec<T>,
    key: impl Fn(&T) -> &str,
    kind: &'static str,
    id: &str,
) -> Result<()> {
    let before = items.len();
    items.retain(|item| key(item) != id);
    if items.len() == before {
        return Err(not_found(kind, id));
    }
    Ok(())
}

fn not_found(kind: &'static str, id: &str) -> ProviderError {
    ProviderError::NotFound {
        provider: PROVIDER.into(),
        kind,
        id: id.into(),
    }
}

impl State {
    fn next(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn node_mut(&mut self, id: &str) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| not_found("node", id))
    }

    fn volume_mut(&mut self, id: &str) -> Result<&mut StorageVolume> {
        self.volumes
            .iter_mut()
            .find(|v| v.id == id)
            .ok_or_else(|| not_found("volume", id))
    }
}

#[async_trait]
impl NodeDriver for DummyDriver {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn features(&self) -> Features {
        Features {
            ssh_key: true,
            password: true,
            generates_password: false,
        }
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        Ok(self.lock().nodes.clone())
    }

    async fn create_node(&self, request: &CreateNode) -> Result<Node> {
        let mut s = self.lock();
        let n = s.next();
        let mut extra = BTreeMap::new();
        if let Some(NodeAuth::SshKey(key)) = &request.auth {
            extra.insert("ssh_key".to_string(), key.clone().into());
        }
        let node = Node {
            id: n.to_string(),
            name: request.name.clone(),
            state: NodeState::Running,
            public_ips: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, (n % 250) as u8 + 2))],
            private_ips: vec![],
            image: request.image.clone(),
            size: request.size.clone(),
            provider: PROVIDER.into(),
            extra,
        };
        s.nodes.push(node.clone());
        Ok(node)
    }

    async fn destroy_node(&self, node: &Node) -> Result<()> {
        remove(
            &mut self.lock().nodes,
            |n: &Node| n.id.as_str(),
            "node",
            &node.id,
        )
    }

    async fn reboot_node(&self, node: &Node) -> Result<()> {
        self.lock().node_mut(&node.id).map(|_| ())
    }

    async fn stop_node(&self, node: &Node) -> Result<()> {
        self.lock().node_mut(&node.id)?.state = NodeState::Stopped;
        Ok(())
    }

    async fn start_node(&self, node: &Node) -> Result<()> {
        self.lock().node_mut(&node.id)?.state = NodeState::Running;
        Ok(())
    }

    async fn list_images(&self) -> Result<Vec<NodeImage>> {
        Ok(self.lock().images.clone())
    }

    async fn create_image(&self, node: &Node, name: &str) -> Result<NodeImage> {
        let mut s = self.lock();
        s.node_mut(&node.id)?;
        let image = NodeImage {
            id: format!("image-{}", s.next()),
            name: name.into(),
            extra: [("node".to_string(), node.id.clone().into())].into(),
        };
        s.images.push(image.clone());
        Ok(image)
    }

    async fn copy_image(&self, image: &NodeImage, location: &str, name: &str) -> Result<NodeImage> {
        let mut s = self.lock();
        let copy = NodeImage {
            id: format!("image-{}", s.next()),
            name: name.into(),
            extra: [
                ("copied_from".to_string(), image.id.clone().into()),
                ("location".to_string(), location.into()),
            ]
            .into(),
        };
        s.images.push(copy.clone());
        Ok(copy)
    }

    async fn delete_image(&self, image: &NodeImage) -> Result<()> {
        remove(
            &mut self.lock().images,
            |i: &NodeImage| i.id.as_str(),
            "image",
            &image.id,
        )
    }

    async fn list_sizes(&self) -> Result<Vec<NodeSize>> {
        Ok(vec![NodeSize {
            id: "1".into(),
            name: "Dummy size".into(),
            ram_mib: 1024,
            disk_gb: Some(10),
            vcpus: Some(1),
            price: Some(0.0),
            extra: BTreeMap::new(),
        }])
    }

    async fn list_locations(&self) -> Result<Vec<NodeLocation>> {
        Ok(vec![NodeLocation {
            id: "1".into(),
            name: "Paul's Room".into(),
            country: Some("US".into()),
        }])
    }

    async fn list_key_pairs(&self) -> Result<Vec<KeyPair>> {
        Ok(self.lock().keys.clone())
    }

    async fn create_key_pair(&self, name: &str) -> Result<KeyPair> {
        use russh::keys::{Algorithm, PrivateKey};
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| {
            ProviderError::Failed {
                provider: PROVIDER.into(),
                context: "generating a key pair".into(),
                source: Box::new(e),
            }
        })?;
        let private = key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .map(|z| z.to_string())
            .ok();
        let public = key.public_key().to_openssh().unwrap_or_default();
        let mut pair = self.import_key_pair_from_string(name, &public).await?;
        pair.private_key = private;
        Ok(pair)
    }

    async fn import_key_pair_from_string(&self, name: &str, public_key: &str) -> Result<KeyPair> {
        let parsed = russh::keys::PublicKey::from_openssh(public_key.trim()).map_err(|e| {
            ProviderError::InvalidRequest {
                provider: PROVIDER.into(),
                message: format!("the public key does not parse: {e}"),
            }
        })?;
        let mut s = self.lock();
        if s.keys.iter().any(|k| k.name == name) {
            return Err(ProviderError::InvalidRequest {
                provider: PROVIDER.into(),
                message: format!("a key pair named {name:?} exists already"),
            });
        }
        let pair = KeyPair {
            name: name.into(),
            public_key: public_key.trim().into(),
            fingerprint: Some(parsed.fingerprint(russh::keys::HashAlg::Sha256).to_string()),
            private_key: None,
            extra: BTreeMap::new(),
        };
        s.keys.push(pair.clone());
        Ok(pair)
    }

    async fn delete_key_pair(&self, key_pair: &KeyPair) -> Result<()> {
        remove(
            &mut self.lock().keys,
            |k: &KeyPair| k.name.as_str(),
            "key pair",
            &key_pair.name,
        )
    }

    async fn create_volume(&self, request: &CreateVolume) -> Result<StorageVolume> {
        let mut s = self.lock();
        let mut extra = BTreeMap::new();
        if let Some(t) = &request.volume_type {
            extra.insert("type".to_string(), t.clone().into());
        }
        if let Some(d) = &request.description {
            extra.insert("description".to_string(), d.clone().into());
        }
        let volume = StorageVolume {
            id: format!("vol-{}", s.next()),
            name: request.name.clone(),
            size_gb: request.size_gb,
            state: "available".into(),
            attached_to: None,
            extra,
        };
        s.volumes.push(volume.clone());
        Ok(volume)
    }

    async fn list_volumes(&self) -> Result<Vec<StorageVolume>> {
        Ok(self.lock().volumes.clone())
    }

    async fn attach_volume(&self, node: &Node, volume: &StorageVolume) -> Result<()> {
        let mut s = self.lock();
        s.node_mut(&node.id)?;
        let v = s.volume_mut(&volume.id)?;
        v.attached_to = Some(node.id.clone());
        v.state = "in-use".into();
        Ok(())
    }

    async fn detach_volume(&self, volume: &StorageVolume) -> Result<()> {
        let mut s = self.lock();
        let v = s.volume_mut(&volume.id)?;
        v.attached_to = None;
        v.state = "available".into();
        Ok(())
    }

    async fn destroy_volume(&self, volume: &StorageVolume) -> Result<()> {
        let mut s = self.lock();
        s.volume_mut(&volume.id)?;
        s.volumes.retain(|v| v.id != volume.id);
        Ok(())
    }

    async fn create_volume_snapshot(
        &self,
        volume: &StorageVolume,
        name: Option<&str>,
    ) -> Result<VolumeSnapshot> {
        let mut s = self.lock();
        let size = s.volume_mut(&volume.id)?.size_gb;
        let snapshot = VolumeSnapshot {
            id: format!("snap-{}", s.next()),
            name: name.map(str::to_string),
            volume_id: volume.id.clone(),
            size_gb: size,
            state: "available".into(),
            created: None,
            extra: BTreeMap::new(),
        };
        s.snapshots.push(snapshot.clone());
        Ok(snapshot)
    }

    async fn list_snapshots(&self) -> Result<Vec<VolumeSnapshot>> {
        Ok(self.lock().snapshots.clone())
    }

    async fn destroy_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<()> {
        remove(
            &mut self.lock().snapshots,
            |x: &VolumeSnapshot| x.id.as_str(),
            "snapshot",
            &snapshot.id,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{get_driver, names as providers, register};
    use std::sync::Arc;

    #[tokio::test]
    async fn nodes_round_trip() {
        let d = DummyDriver::new();
        let node = d
            .create_node(&CreateNode {
                name: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(node.state, NodeState::Running);
        assert_eq!(d.get_node(&node.id).await.unwrap().name, "a");
        d.stop_node(&node).await.unwrap();
        assert_eq!(
            d.get_node(&node.id).await.unwrap().state,
            NodeState::Stopped
        );
        d.set_state(&node.id, NodeState::Error).unwrap();
        assert_eq!(d.list_nodes().await.unwrap()[0].state, NodeState::Error);
        d.destroy_node(&node).await.unwrap();
        assert!(matches!(
            d.get_node(&node.id).await,
            Err(ProviderError::NotFound { kind: "node", .. })
        ));
        assert!(d.destroy_node(&node).await.is_err());
    }

    #[tokio::test]
    async fn images_keys_volumes_and_snapshots_round_trip() {
        let d = DummyDriver::new();
        let node = d
            .create_node(&CreateNode {
                name: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let image = d.create_image(&node, "snap-of-a").await.unwrap();
        let copy = d.copy_image(&image, "elsewhere", "copy").await.unwrap();
        assert_eq!(d.get_image(&copy.id).await.unwrap().name, "copy");
        d.delete_image(&image).await.unwrap();
        assert_eq!(d.list_images().await.unwrap().len(), 2);

        let created = d.create_key_pair("gen").await.unwrap();
        assert!(created
            .private_key
            .as_deref()
            .unwrap()
            .contains("OPENSSH PRIVATE KEY"));
        assert!(!format!("{created:?}").contains("PRIVATE KEY"));
        let public = created.public_key.clone();
        let err = d
            .import_key_pair_from_string("gen", &public)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exists already"));
        let imported = d.import_key_pair_from_string("imp", &public).await.unwrap();
        assert_eq!(imported.fingerprint, created.fingerprint);
        assert!(d.get_key_pair("imp").await.unwrap().private_key.is_none());
        d.delete_key_pair(&imported).await.unwrap();
        assert_eq!(d.list_key_pairs().await.unwrap().len(), 1);

        let volume = d
            .create_volume(&CreateVolume {
                size_gb: 10,
                name: "data".into(),
                volume_type: Some("classic".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        d.attach_volume(&node, &volume).await.unwrap();
        let attached = d.get_volume(&volume.id).await.unwrap();
        assert_eq!(attached.attached_to.as_deref(), Some(node.id.as_str()));
        let snap = d.create_volume_snapshot(&volume, Some("s1")).await.unwrap();
        assert_eq!(
            d.list_volume_snapshots(&volume).await.unwrap(),
            vec![snap.clone()]
        );
        assert_eq!(d.get_snapshot(&snap.id).await.unwrap().size_gb, 10);
        d.destroy_volume_snapshot(&snap).await.unwrap();
        d.detach_volume(&volume).await.unwrap();
        d.destroy_volume(&volume).await.unwrap();
        assert!(d.list_volumes().await.unwrap().is_empty());
    }

    struct Custom;

    #[async_trait]
    impl NodeDriver for Custom {
        fn name(&self) -> &str {
            "custom"
        }
        fn features(&self) -> Features {
            Features::default()
        }
        async fn list_nodes(&self) -> Result<Vec<Node>> {
            Ok(vec![])
        }
        async fn create_node(&self, _: &CreateNode) -> Result<Node> {
            Err(self.not_supported("create_node"))
        }
        async fn destroy_node(&self, _: &Node) -> Result<()> {
            Err(self.not_supported("destroy_node"))
        }
    }

    #[tokio::test]
    async fn the_registry_finds_built_in_and_third_party_drivers() {
        assert_eq!(get_driver("dummy").unwrap().name(), "dummy");
        assert!(get_driver("custom").is_err());
        register("custom", |_| Ok(Arc::new(Custom)));
        assert!(providers().contains(&"custom".to_string()));
        let custom = get_driver("custom").unwrap();
        let err = custom.list_images().await.unwrap_err();
        assert_eq!(err.to_string(), "list_images is not supported by custom");
        let err = get_driver("nimbus").err().unwrap().to_string();
        assert!(
            err.contains("no such provider") && err.contains("dummy"),
            "{err}"
        );
    }
}
