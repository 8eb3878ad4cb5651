//! The `NodeDriver` of EC2: instances as nodes, the catalog (images, instance types, zones) and
//! key pairs. Creating a node is in `create.rs`, volumes, snapshots and images in `storage.rs`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::Value;

use super::api::Params;
use super::{images, invalid, not_found, xml, Ec2Driver, IMPORTED_KEY_PREFIX, LOGIN_USER_TAG};
use super::{PROVIDER, RUN_TAG};
use crate::driver::{Features, NodeDriver, ProviderConfig, ProviderError, Result};
use crate::model::{
    CreateNode, CreateVolume, KeyPair, Node, NodeImage, NodeLocation, NodeSize, NodeState,
    StorageVolume, VolumeSnapshot,
};

/// The states of instances that exist (not shutting down or terminated: those count as gone).
pub(super) const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// How many results one page of a list asks for.
const PAGE_SIZE: &str = "1000";

/// A node's state from EC2's.
fn state(name: &str) -> NodeState {
    match name {
        "pending" => NodeState::Pending,
        "running" => NodeState::Running,
        "stopping" | "stopped" => NodeState::Stopped,
        "shutting-down" | "terminated" => NodeState::Terminated,
        _ => NodeState::Unknown,
    }
}

/// An instance as a node: its `Name` tag as its name, its zone as its location, the run and
/// login user its tags record.
pub(super) fn to_node(i: &xml::Instance) -> Node {
    let ips = |a: &Option<String>| -> Vec<IpAddr> {
        a.as_deref()
            .and_then(|a| a.parse().ok())
            .into_iter()
            .collect()
    };
    let mut extra = BTreeMap::new();
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            extra.insert(key.to_string(), Value::from(v));
        }
    };
    put("status", Some(&i.instance_state.name));
    put("location", Some(&i.placement.availability_zone));
    put("key_name", i.key_name.as_deref());
    put("client_token", i.client_token.as_deref());
    put("launch_time", i.launch_time.as_deref());
    put("dns_name", i.dns_name.as_deref());
    put("subnet_id", i.subnet_id.as_deref());
    put("vpc_id", i.vpc_id.as_deref());
    put("run", xml::tag(&i.tag_set, RUN_TAG));
    put("login_user", xml::tag(&i.tag_set, LOGIN_USER_TAG));
    if let Some(reason) = i.state_reason.as_ref().filter(|r| !r.message.is_empty()) {
        put("state_reason", Some(&reason.message));
    }
    let groups: Vec<Value> = i
        .group_set
        .item
        .iter()
        .map(|g| Value::from(g.group_name.clone()))
        .collect();
    extra.insert("security_groups".into(), Value::from(groups));
    let tags: serde_json::Map<String, Value> = i
        .tag_set
        .item
        .iter()
        .map(|t| (t.key.clone(), Value::from(t.value.clone())))
        .collect();
    extra.insert("tags".into(), Value::Object(tags));
    Node {
        id: i.instance_id.clone(),
        name: xml::tag(&i.tag_set, "Name").unwrap_or("").to_string(),
        state: state(&i.instance_state.name),
        public_ips: ips(&i.ip_address),
        private_ips: ips(&i.private_ip_address),
        image: Some(i.image_id.clone()).filter(|s| !s.is_empty()),
        size: Some(i.instance_type.clone()).filter(|s| !s.is_empty()),
        provider: PROVIDER.into(),
        extra,
    }
}

/// An image as the catalog shows it, with its login user when known.
pub(super) fn to_image(i: &xml::Image) -> NodeImage {
    let mut extra = BTreeMap::new();
    extra.insert("owner".into(), Value::from(i.image_owner_id.clone()));
    extra.insert("architecture".into(), Value::from(i.architecture.clone()));
    if let Some(date) = &i.creation_date {
        extra.insert("creation_date".into(), Value::from(date.clone()));
    }
    if let Some(user) = images::login_user(i) {
        extra.insert("login_user".into(), Value::from(user));
    }
    NodeImage {
        id: i.image_id.clone(),
        name: i.name.clone(),
        extra,
    }
}

fn to_key_pair(k: xml::KeyPair) -> KeyPair {
    let mut extra = BTreeMap::new();
    if let Some(id) = k.key_pair_id {
        extra.insert("id".into(), Value::from(id));
    }
    KeyPair {
        name: k.key_name,
        public_key: k.public_key.unwrap_or_default().trim().to_string(),
        fingerprint: k.key_fingerprint,
        private_key: k.key_material,
        extra,
    }
}

impl Ec2Driver {
    /// Every instance the filters select (live ones only), page by page.
    pub(super) async fn instances(&self, params: Params) -> Result<Vec<xml::Instance>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut page = params
                .clone()
                .filter("instance-state-name", &LIVE_STATES)
                .maybe("NextToken", token.take());
            // EC2 refuses a page size beside instance ids (their list is the page).
            if !params.has("InstanceId.1") {
                page = page.set("MaxResults", PAGE_SIZE);
            }
            let doc: xml::DescribeInstances = self
                .client
                .call("DescribeInstances", &page, || "listing instances".into())
                .await?;
            all.extend(
                doc.reservation_set
                    .item
                    .into_iter()
                    .flat_map(|r| r.instances_set.item),
            );
            match doc.next_token.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One instance by id, if it is live.
    async fn instance(&self, id: &str) -> Result<Option<xml::Instance>> {
        let found = self
            .instances(Params::new().list("InstanceId", &[id]))
            .await;
        match found {
            Ok(list) => Ok(list.into_iter().next()),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs an action on one instance (`RebootInstances` ...).
    async fn on_instance(&self, action: &str, node: &Node) -> Result<()> {
        let params = Params::new().list("InstanceId", &[&node.id]);
        let _: xml::Done = self
            .client
            .call(action, &params, || format!("{action} {}", node.id))
            .await?;
        Ok(())
    }

    /// The images of `owners` (all when empty) whose name matches `pattern` (any when `None`).
    pub(super) async fn images(
        &self,
        owners: &[String],
        pattern: Option<&str>,
    ) -> Result<Vec<xml::Image>> {
        let mut params = Params::new()
            .list("Owner", owners)
            .filter("state", &["available"]);
        if let Some(pattern) = pattern {
            params = params.filter("name", &[pattern]);
        }
        let doc: xml::DescribeImages = self
            .client
            .call("DescribeImages", &params, || "listing images".into())
            .await?;
        Ok(doc.images_set.item)
    }

    /// The owners whose images a name is looked up among: the given one, else the step file's,
    /// then the well-known publishers and your own.
    pub(super) fn owners(&self, given: Option<&str>) -> Vec<String> {
        if let Some(owner) = given {
            return vec![owner.to_string()];
        }
        let mut owners = self.settings.image_owners.clone();
        owners.extend(images::PUBLISHERS.iter().map(|p| p.owner.to_string()));
        owners.push("self".into());
        owners
    }

    /// The image an id or name means: by id, or the newest image of `owner` (else the known
    /// publishers') whose name matches.
    pub(super) async fn resolve_image(
        &self,
        image: &str,
        owner: Option<&str>,
    ) -> Result<xml::Image> {
        if images::is_id(image) {
            let params = Params::new().list("ImageId", &[image]);
            let doc: xml::DescribeImages = self
                .client
                .call("DescribeImages", &params, || {
                    format!("looking up image {image}")
                })
                .await?;
            return doc
                .images_set
                .item
                .into_iter()
                .next()
                .ok_or_else(|| not_found("image", image));
        }
        let owners = self.owners(owner);
        let found = self
            .images(&owners, Some(&images::name_pattern(image)))
            .await?;
        images::newest(found).ok_or_else(|| {
            invalid(format!(
                "no image named {image:?} (or a later release of it) among the images of {} in \
                 this region: `nodeup images --provider ec2` lists them; give an AMI id, or \
                 `image_owner` for another publisher",
                owners.join(", ")
            ))
        })
    }

    /// The key pairs, all or those named.
    pub(super) async fn key_pairs(&self, names: &[&str]) -> Result<Vec<xml::KeyPair>> {
        let params = Params::new()
            .list("KeyName", names)
            .set("IncludePublicKey", "true");
        let doc: xml::DescribeKeyPairs = self
            .client
            .call("DescribeKeyPairs", &params, || "listing key pairs".into())
            .await?;
        Ok(doc.key_set.item)
    }

    /// The regions of the account (`DescribeRegions`).
    ///
    /// # Errors
    /// The call failed.
    pub async fn ex_list_regions(&self) -> Result<Vec<NodeLocation>> {
        let doc: xml::DescribeRegions = self
            .client
            .call("DescribeRegions", &Params::new(), || {
                "listing regions".into()
            })
            .await?;
        Ok(doc
            .region_info
            .item
            .into_iter()
            .map(|r| NodeLocation {
                id: r.region_name.clone(),
                name: r.region_name,
                country: None,
            })
            .collect())
    }
}

#[async_trait]
impl NodeDriver for Ec2Driver {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn features(&self) -> Features {
        Features {
            ssh_key: true,
            password: false,
            generates_password: false,
        }
    }

    fn settings(&self) -> ProviderConfig {
        let mut settings = ProviderConfig::new();
        if let Some(region) = &self.settings.region {
            settings.insert("region".into(), Value::from(region.clone()));
        }
        if !self.settings.image_owners.is_empty() {
            settings.insert(
                "image_owners".into(),
                Value::from(self.settings.image_owners.clone()),
            );
        }
        if let Some(url) = &self.settings.checkip_url {
            settings.insert("checkip_url".into(), Value::from(url.clone()));
        }
        settings
    }

    /// Every live instance (shutting down and terminated ones are gone).
    async fn list_nodes(&self) -> Result<Vec<Node>> {
        Ok(self
            .instances(Params::new())
            .await?
            .iter()
            .map(to_node)
            .collect())
    }

    async fn list_nodes_in(&self, location: &str) -> Result<Vec<Node>> {
        let params = Params::new().filter("availability-zone", &[location]);
        Ok(self.instances(params).await?.iter().map(to_node).collect())
    }

    async fn get_node(&self, id: &str) -> Result<Node> {
        match self.instance(id).await? {
            Some(i) => Ok(to_node(&i)),
            None => Err(not_found("node", id)),
        }
    }

    async fn create_node(&self, request: &CreateNode) -> Result<Node> {
        self.create_instance(request).await
    }

    /// Terminates the instance (one already gone counts as destroyed), then removes what nodeup
    /// made for it and nothing else uses: its imported key pair, the `nodeup-ssh` group.
    async fn destroy_node(&self, node: &Node) -> Result<()> {
        match self.on_instance("TerminateInstances", node).await {
            Ok(()) | Err(ProviderError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.release_for(node).await;
        Ok(())
    }

    async fn reboot_node(&self, node: &Node) -> Result<()> {
        self.on_instance("RebootInstances", node).await
    }

    async fn stop_node(&self, node: &Node) -> Result<()> {
        self.on_instance("StopInstances", node).await
    }

    async fn start_node(&self, node: &Node) -> Result<()> {
        self.on_instance("StartInstances", node).await
    }

    /// The available images of the configured owners and the well-known publishers, newest
    /// first.
    async fn list_images(
        &self,
        _location: Option<&str>,
        _size: Option<&str>,
    ) -> Result<Vec<NodeImage>> {
        let mut found = self.images(&self.owners(None), None).await?;
        found.sort_by(|a, b| b.creation_date.cmp(&a.creation_date));
        Ok(found.iter().map(to_image).collect())
    }

    /// An image by id, or the newest one a name means.
    async fn get_image(&self, id: &str) -> Result<NodeImage> {
        Ok(to_image(&self.resolve_image(id, None).await?))
    }

    /// The instance types, with their vCPUs and memory.
    async fn list_sizes(&self, _location: Option<&str>) -> Result<Vec<NodeSize>> {
        let mut sizes = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let params = Params::new()
                .set("MaxResults", "100")
                .maybe("NextToken", token.take());
            let doc: xml::DescribeInstanceTypes = self
                .client
                .call("DescribeInstanceTypes", &params, || {
                    "listing instance types".into()
                })
                .await?;
            sizes.extend(doc.instance_type_set.item.into_iter().map(|t| NodeSize {
                id: t.instance_type.clone(),
                name: t.instance_type,
                ram_mib: t.memory_info.size_in_mi_b,
                disk_gb: None,
                vcpus: Some(t.v_cpu_info.default_v_cpus),
                price: None,
                bandwidth_mbps: None,
                extra: BTreeMap::new(),
            }));
            match doc.next_token.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        sizes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(sizes)
    }

    /// The availability zones of the region.
    async fn list_locations(&self) -> Result<Vec<NodeLocation>> {
        let doc: xml::DescribeZones = self
            .client
            .call("DescribeAvailabilityZones", &Params::new(), || {
                "listing availability zones".into()
            })
            .await?;
        Ok(doc
            .availability_zone_info
            .item
            .into_iter()
            .map(|z| NodeLocation {
                id: z.zone_name.clone(),
                name: z.zone_name,
                country: None,
            })
            .collect())
    }

    async fn create_image(
        &self,
        node: &Node,
        name: &str,
        description: Option<&str>,
    ) -> Result<NodeImage> {
        self.image_of(node, name, description).await
    }

    async fn delete_image(&self, image: &NodeImage) -> Result<()> {
        let params = Params::new().set("ImageId", image.id.clone());
        let _: xml::Done = self
            .client
            .call("DeregisterImage", &params, || {
                format!("deregistering {}", image.id)
            })
            .await?;
        Ok(())
    }

    async fn list_key_pairs(&self, _location: Option<&str>) -> Result<Vec<KeyPair>> {
        Ok(self
            .key_pairs(&[])
            .await?
            .into_iter()
            .map(to_key_pair)
            .collect())
    }

    async fn get_key_pair(&self, name: &str) -> Result<KeyPair> {
        match self.key_pairs(&[name]).await {
            Ok(mut keys) if !keys.is_empty() => Ok(to_key_pair(keys.remove(0))),
            Ok(_) | Err(ProviderError::NotFound { .. }) => Err(not_found("key pair", name)),
            Err(e) => Err(e),
        }
    }

    /// Makes an ed25519 key pair in EC2; its private half is returned, once.
    async fn create_key_pair(&self, name: &str, _location: Option<&str>) -> Result<KeyPair> {
        let params = Params::new().set("KeyName", name).set("KeyType", "ed25519");
        let made: xml::KeyPair = self
            .client
            .call("CreateKeyPair", &params, || {
                format!("creating key pair {name}")
            })
            .await?;
        let public = made
            .key_material
            .as_deref()
            .and_then(|pem| russh::keys::PrivateKey::from_openssh(pem).ok())
            .and_then(|k| k.public_key().to_openssh().ok());
        let mut pair = to_key_pair(made);
        pair.public_key = public.unwrap_or_default();
        Ok(pair)
    }

    async fn import_key_pair_from_string(
        &self,
        name: &str,
        key_material: &str,
        _location: Option<&str>,
    ) -> Result<KeyPair> {
        let material = base64::engine::general_purpose::STANDARD.encode(key_material.trim());
        let params = Params::new()
            .set("KeyName", name)
            .set("PublicKeyMaterial", material);
        let made: xml::KeyPair = self
            .client
            .call("ImportKeyPair", &params, || {
                format!("importing key pair {name}")
            })
            .await?;
        let mut pair = to_key_pair(made);
        pair.public_key = key_material.trim().to_string();
        Ok(pair)
    }

    async fn delete_key_pair(&self, key_pair: &KeyPair) -> Result<()> {
        let params = Params::new().set("KeyName", key_pair.name.clone());
        let _: xml::Done = self
            .client
            .call("DeleteKeyPair", &params, || {
                format!("deleting key pair {}", key_pair.name)
            })
            .await?;
        Ok(())
    }

    async fn create_volume(&self, request: &CreateVolume) -> Result<StorageVolume> {
        self.make_volume(request).await
    }

    async fn list_volumes(&self) -> Result<Vec<StorageVolume>> {
        self.volumes(Params::new()).await
    }

    async fn get_volume(&self, id: &str) -> Result<StorageVolume> {
        let found = self.volumes(Params::new().list("VolumeId", &[id])).await;
        match found {
            Ok(mut v) if !v.is_empty() => Ok(v.remove(0)),
            Ok(_) | Err(ProviderError::NotFound { .. }) => Err(not_found("volume", id)),
            Err(e) => Err(e),
        }
    }

    async fn attach_volume(&self, node: &Node, volume: &StorageVolume) -> Result<()> {
        self.attach(node, volume).await
    }

    async fn detach_volume(&self, volume: &StorageVolume, node: Option<&Node>) -> Result<()> {
        let params = Params::new()
            .set("VolumeId", volume.id.clone())
            .maybe("InstanceId", node.map(|n| n.id.clone()));
        let _: xml::Attachment = self
            .client
            .call("DetachVolume", &params, || {
                format!("detaching {}", volume.id)
            })
            .await?;
        Ok(())
    }

    async fn destroy_volume(&self, volume: &StorageVolume) -> Result<()> {
        let params = Params::new().set("VolumeId", volume.id.clone());
        let _: xml::Done = self
            .client
            .call("DeleteVolume", &params, || {
                format!("deleting {}", volume.id)
            })
            .await?;
        Ok(())
    }

    async fn create_volume_snapshot(
        &self,
        volume: &StorageVolume,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<VolumeSnapshot> {
        self.snapshot(volume, name, description).await
    }

    async fn list_snapshots(&self) -> Result<Vec<VolumeSnapshot>> {
        self.snapshots(Params::new()).await
    }

    async fn list_volume_snapshots(&self, volume: &StorageVolume) -> Result<Vec<VolumeSnapshot>> {
        self.snapshots(Params::new().filter("volume-id", &[&volume.id]))
            .await
    }

    async fn get_snapshot(&self, id: &str) -> Result<VolumeSnapshot> {
        let found = self
            .snapshots(Params::new().list("SnapshotId", &[id]))
            .await;
        match found {
            Ok(mut s) if !s.is_empty() => Ok(s.remove(0)),
            Ok(_) | Err(ProviderError::NotFound { .. }) => Err(not_found("snapshot", id)),
            Err(e) => Err(e),
        }
    }

    async fn destroy_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<()> {
        let params = Params::new().set("SnapshotId", snapshot.id.clone());
        let _: xml::Done = self
            .client
            .call("DeleteSnapshot", &params, || {
                format!("deleting {}", snapshot.id)
            })
            .await?;
        Ok(())
    }
}

/// Whether a key pair's name says nodeup imported it for a deployment.
pub(super) fn imported(name: &str) -> bool {
    name.starts_with(IMPORTED_KEY_PREFIX)
}
