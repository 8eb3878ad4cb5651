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

/// The dummy provider's one location.
const LOCATION: &str = "1";

/// The dummy provider's `[provider]` settings: none.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoSettings {}

impl DummyDriver {
    /// Replaces a node's public addresses (to test waits and address choice).
    ///
    /// # Errors
    /// No such node.
    pub fn set_public_ips(&self, id: &str, ips: Vec<IpAddr>) -> Result<()> {
        self.lock().node_mut(id)?.public_ips = ips;
        Ok(())
    }

    /// The image, size and location ids a request names, by id or by name.
    async fn resolve(
        &self,
        request: &CreateNode,
    ) -> Result<(Option<String>, Option<String>, String)> {
        use crate::providers::lookup::{find, Candidate};
        let invalid = |e: crate::providers::lookup::LookupError| ProviderError::InvalidRequest {
            provider: PROVIDER.into(),
            message: e.to_string(),
        };
        let locations: Vec<Candidate> = self
            .list_locations()
            .await?
            .into_iter()
            .map(|l| Candidate {
                id: l.id,
                name: l.name,
            })
            .collect();
        let location = match &request.location {
            Some(l) => find("location", l, "", &locations)
                .map_err(invalid)?
                .id
                .clone(),
            None => LOCATION.to_string(),
        };
        let image = match &request.image {
            Some(wanted) => {
                let images: Vec<Candidate> = self
                    .list_images(Some(&location), None)
                    .await?
                    .into_iter()
                    .map(|i| Candidate {
                        id: i.id,
                        name: i.name,
                    })
                    .collect();
                Some(
                    find("image", wanted, "", &images)
                        .map_err(invalid)?
                        .id
                        .clone(),
                )
            }
            None => None,
        };
        let size = match &request.size {
            Some(wanted) => {
                let sizes: Vec<Candidate> = self
                    .list_sizes(Some(&location))
                    .await?
                    .into_iter()
                    .map(|z| Candidate {
                        id: z.id,
                        name: z.name,
                    })
                    .collect();
                Some(
                    find("size", wanted, "", &sizes)
                        .map_err(invalid)?
                        .id
                        .clone(),
                )
            }
            None => None,
        };
        Ok((image, size, location))
    }

    /// [`DummyDriver::new`], after checking that the `[provider]` table is empty.
    ///
    /// # Errors
    /// Any `[provider]` key.
    pub fn from_config(config: &crate::driver::ProviderConfig) -> crate::driver::Result<Self> {
        crate::providers::settings::<NoSettings>(
            "dummy",
            "[provider]",
            config,
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
        let (image, size, location) = self.resolve(request).await?;
        let mut s = self.lock();
        let n = s.next();
        let mut extra = BTreeMap::new();
        if let Some(NodeAuth::SshKey(key)) = &request.auth {
            extra.insert("ssh_key".to_string(), key.clone().into());
        }
        if let Some(NodeAuth::Password(pw)) = &request.auth {
            extra.insert("password".to_string(), pw.clone().into());
        }
        extra.insert("location".to_string(), location.into());
        let node = Node {
            id: n.to_string(),
            name: request.name.clone(),
            state: NodeState::Running,
            public_ips: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, (n % 250) as u8 + 2))],
            private_ips: vec![],
            image,
            size,
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

    async fn list_images(
        &self,
        location: Option<&str>,
        size: Option<&str>,
    ) -> Result<Vec<NodeImage>> {
        if let Some(size) = size {
            self.get_size(size).await?;
        }
        // Images are in the one location unless copied elsewhere.
        fn here(i: &NodeImage) -> &str {
            i.extra
                .get("location")
                .and_then(|l| l.as_str())
                .unwrap_or(LOCATION)
        }
        Ok(self
            .lock()
            .images
            .iter()
            .filter(|i| location.is_none_or(|l| here(i) == l))
            .cloned()
            .collect())
    }

    async fn create_image(
        &self,
        node: &Node,
        name: &str,
        description: Option<&str>,
    ) -> Result<NodeImage> {
        let mut s = self.lock();
        s.node_mut(&node.id)?;
        let mut extra: BTreeMap<String, serde_json::Value> =
            [("node".to_string(), node.id.clone().into())].into();
        if let Some(d) = description {
            extra.insert("description".into(), d.into());
        }
        let image = NodeImage {
            id: format!("image-{}", s.next()),
            name: name.into(),
            extra,
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

    async fn list_sizes(&self, location: Option<&str>) -> Result<Vec<NodeSize>> {
        if location.is_some_and(|l| l != LOCATION) {
            return Ok(Vec::new());
        }
        Ok(vec![NodeSize {
            id: "1".into(),
            name: "Dummy size".into(),
            ram_mib: 1024,
            disk_gb: Some(10),
            vcpus: Some(1),
            price: Some(0.0),
            bandwidth_mbps: Some(100),
            extra: BTreeMap::new(),
        }])
    }

    async fn list_locations(&self) -> Result<Vec<NodeLocation>> {
        Ok(vec![NodeLocation {
            id: LOCATION.into(),
            name: "Paul's Room".into(),
            country: Some("US".into()),
        }])
    }

    async fn list_key_pairs(&self, location: Option<&str>) -> Result<Vec<KeyPair>> {
        let usable = |k: &KeyPair| {
            location.is_none_or(|l| {
                k.extra
                    .get("location")
                    .and_then(|v| v.as_str())
                    .is_none_or(|kl| kl == l)
            })
        };
        Ok(self
            .lock()
            .keys
            .iter()
            .filter(|k| usable(k))
            .cloned()
            .collect())
    }

    async fn create_key_pair(&self, name: &str, location: Option<&str>) -> Result<KeyPair> {
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
        let mut pair = self
            .import_key_pair_from_string(name, &public, location)
            .await?;
        pair.private_key = private;
        Ok(pair)
    }

    async fn import_key_pair_from_string(
        &self,
        name: &str,
        public_key: &str,
        location: Option<&str>,
    ) -> Result<KeyPair> {
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
            extra: location
                .map(|l| ("location".to_string(), serde_json::Value::from(l)))
                .into_iter()
                .collect(),
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
        let mut size_gb = request.size_gb;
        if let Some(id) = &request.snapshot {
            let snapshot = s.snapshots.iter().find(|x| &x.id == id).ok_or_else(|| {
                ProviderError::NotFound {
                    provider: PROVIDER.into(),
                    kind: "snapshot",
                    id: id.clone(),
                }
            })?;
            size_gb = size_gb.max(snapshot.size_gb);
            extra.insert("snapshot".to_string(), id.clone().into());
        }
        let volume = StorageVolume {
            id: format!("vol-{}", s.next()),
            name: request.name.clone(),
            size_gb,
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

    async fn detach_volume(&self, volume: &StorageVolume, node: Option<&Node>) -> Result<()> {
        let mut s = self.lock();
        let v = s.volume_mut(&volume.id)?;
        if let (Some(node), Some(attached)) = (node, &v.attached_to) {
            if *attached != node.id {
                return Err(ProviderError::InvalidRequest {
                    provider: PROVIDER.into(),
                    message: format!(
                        "volume {} is attached to {attached}, not to {}",
                        volume.id, node.id
                    ),
                });
            }
        }
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
        description: Option<&str>,
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
            extra: description
                .map(|d| ("description".to_string(), serde_json::Value::from(d)))
                .into_iter()
                .collect(),
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
    async fn images_sizes_and_keys_round_trip_with_their_filters() {
        let d = DummyDriver::new();
        let node = d
            .create_node(&CreateNode {
                name: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let image = d
            .create_image(&node, "snap-of-a", Some("before the upgrade"))
            .await
            .unwrap();
        assert_eq!(image.extra["description"], "before the upgrade");
        let copy = d.copy_image(&image, "elsewhere", "copy").await.unwrap();
        assert_eq!(d.get_image(&copy.id).await.unwrap().name, "copy");
        d.delete_image(&image).await.unwrap();
        assert_eq!(d.list_images(None, None).await.unwrap().len(), 2);
        // Filters: by location (the copy is elsewhere), by a size that must exist.
        assert_eq!(d.list_images(Some("1"), None).await.unwrap().len(), 1);
        assert_eq!(
            d.list_images(Some("elsewhere"), None).await.unwrap().len(),
            1
        );
        assert_eq!(d.list_images(None, Some("1")).await.unwrap().len(), 2);
        assert!(d.list_images(None, Some("huge")).await.is_err());
        assert_eq!(d.list_sizes(Some("1")).await.unwrap().len(), 1);
        assert!(d.list_sizes(Some("mars")).await.unwrap().is_empty());
        let size = d.get_size("1").await.unwrap();
        assert_eq!((size.bandwidth_mbps, size.price), (Some(100), Some(0.0)));
        assert_eq!(d.list_nodes_in("1").await.unwrap(), vec![node.clone()]);
        assert!(d.list_nodes_in("mars").await.unwrap().is_empty());

        let created = d.create_key_pair("gen", None).await.unwrap();
        assert!(created
            .private_key
            .as_deref()
            .unwrap()
            .contains("OPENSSH PRIVATE KEY"));
        assert!(!format!("{created:?}").contains("PRIVATE KEY"));
        let public = created.public_key.clone();
        let err = d
            .import_key_pair_from_string("gen", &public, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exists already"));
        let imported = d
            .import_key_pair_from_string("imp", &public, Some("elsewhere"))
            .await
            .unwrap();
        assert_eq!(imported.fingerprint, created.fingerprint);
        assert!(d.get_key_pair("imp").await.unwrap().private_key.is_none());
        assert_eq!(
            d.list_key_pairs(Some("1")).await.unwrap().len(),
            1,
            "gen only"
        );
        assert_eq!(d.list_key_pairs(Some("elsewhere")).await.unwrap().len(), 2);
        d.delete_key_pair(&imported).await.unwrap();
        assert_eq!(d.list_key_pairs(None).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn volumes_and_snapshots_round_trip() {
        let d = DummyDriver::new();
        let node = d
            .create_node(&CreateNode {
                name: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
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
        let snap = d
            .create_volume_snapshot(&volume, Some("s1"), Some("nightly"))
            .await
            .unwrap();
        assert_eq!(snap.extra["description"], "nightly");
        assert_eq!(
            d.list_volume_snapshots(&volume).await.unwrap(),
            vec![snap.clone()]
        );
        assert_eq!(d.get_snapshot(&snap.id).await.unwrap().size_gb, 10);
        // A volume made from the snapshot.
        let restored = d
            .create_volume(&CreateVolume {
                size_gb: 1,
                name: "restored".into(),
                snapshot: Some(snap.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(restored.size_gb, 10, "at least the snapshot's size");
        assert_eq!(restored.extra["snapshot"], snap.id.as_str());
        d.destroy_volume_snapshot(&snap).await.unwrap();
        // Detaching from another node than its own is refused; from its own node it works.
        let other = d
            .create_node(&CreateNode {
                name: "b".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(d.detach_volume(&volume, Some(&other)).await.is_err());
        d.detach_volume(&volume, Some(&node)).await.unwrap();
        d.destroy_volume(&volume).await.unwrap();
        d.destroy_volume(&restored).await.unwrap();
        assert!(d.list_volumes().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn images_sizes_and_locations_are_found_by_id_or_name() {
        let d = DummyDriver::new();
        let node = d
            .create_node(&CreateNode {
                name: "named".into(),
                image: Some("dummy IMAGE".into()),
                size: Some("Dummy size".into()),
                location: Some("paul's room".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(node.image.as_deref(), Some("dummy-image"));
        assert_eq!(node.size.as_deref(), Some("1"));
        assert_eq!(node.location(), Some("1"));
        let err = d
            .create_node(&CreateNode {
                name: "typo".into(),
                image: Some("Dumy image".into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("did you mean Dummy image (id dummy-image)"),
            "{err}"
        );
        assert_eq!(
            d.list_nodes().await.unwrap().len(),
            1,
            "nothing was created"
        );
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
        let err = custom.list_images(None, None).await.unwrap_err();
        assert_eq!(err.to_string(), "list_images is not supported by custom");
        let err = get_driver("nimbus").err().unwrap().to_string();
        assert!(
            err.contains("no such provider") && err.contains("dummy"),
            "{err}"
        );
    }
}
