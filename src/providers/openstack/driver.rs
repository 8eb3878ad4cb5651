//! The `NodeDriver` of OpenStack: Nova servers as nodes, flavors as sizes, availability zones as
//! locations, Glance images, Nova key pairs. Creating a server is in `create.rs`; volumes and
//! snapshots in `storage.rs`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::api::Service;
use super::bodies::Action;
use super::{not_found, OpenStackDriver, LOGIN_USER_KEY, PROVIDER, RUN_KEY};
use crate::driver::{Features, NodeDriver, ProviderConfig, ProviderError, Result};
use crate::model::{
    CreateNode, CreateVolume, KeyPair, Node, NodeImage, NodeLocation, NodeSize, NodeState,
    StorageVolume, VolumeSnapshot,
};
use crate::providers::kit::segment;

/// How many items one page of a list asks for.
pub(super) const PAGE_SIZE: usize = 500;

/// A Nova server, as `GET /servers/detail` lists it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Server {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub addresses: BTreeMap<String, Vec<Address>>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub flavor: Option<Value>,
    #[serde(default)]
    pub image: Option<Value>,
    #[serde(default)]
    pub fault: Option<Fault>,
    #[serde(default, rename = "OS-EXT-AZ:availability_zone")]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
}

/// One address of a server.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Address {
    pub addr: String,
    #[serde(default, rename = "OS-EXT-IPS:type")]
    pub kind: Option<String>,
}

/// Why a server is in `ERROR`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Fault {
    #[serde(default)]
    pub message: String,
}

/// A Nova flavor.
#[derive(Debug, Clone, Deserialize)]
struct Flavor {
    id: String,
    name: String,
    ram: u64,
    #[serde(default)]
    disk: u64,
    vcpus: u32,
}

/// A Glance image.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Image {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub min_disk: Option<u64>,
    #[serde(default)]
    pub os_admin_user: Option<String>,
    #[serde(default)]
    pub os_distro: Option<String>,
}

/// A Nova key pair.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Keypair {
    pub name: String,
    #[serde(default)]
    pub public_key: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub private_key: Option<String>,
}

/// A node's state from Nova's status.
fn state(status: &str) -> NodeState {
    match status {
        "ACTIVE" => NodeState::Running,
        "BUILD" | "REBUILD" | "RESIZE" | "VERIFY_RESIZE" | "MIGRATING" | "PASSWORD" => {
            NodeState::Pending
        }
        "REBOOT" | "HARD_REBOOT" => NodeState::Rebooting,
        "SHUTOFF" | "STOPPED" | "SUSPENDED" | "PAUSED" | "SHELVED" | "SHELVED_OFFLOADED" => {
            NodeState::Stopped
        }
        "ERROR" => NodeState::Error,
        "DELETED" | "SOFT_DELETED" => NodeState::Terminated,
        _ => NodeState::Unknown,
    }
}

/// The id of a server's flavor or image (`{"id": ...}`, or `""` for a server booted from a
/// volume).
fn id_of(value: &Option<Value>) -> Option<String> {
    value
        .as_ref()
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// A node from a Nova server: floating and public fixed addresses are public, the rest private.
pub(super) fn to_node(server: &Server, region: Option<&str>) -> Node {
    let mut public_ips = Vec::new();
    let mut private_ips = Vec::new();
    let mut floating = Vec::new();
    for address in server.addresses.values().flatten() {
        let Ok(ip) = address.addr.parse::<IpAddr>() else {
            continue;
        };
        if address.kind.as_deref() == Some("floating") {
            floating.push(ip);
        } else if crate::providers::kit::is_private_address(ip) {
            private_ips.push(ip);
        } else {
            public_ips.push(ip);
        }
    }
    floating.extend(public_ips);
    let mut extra = BTreeMap::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            extra.insert(key.to_string(), Value::from(value));
        }
    };
    put("status", Some(server.status.clone()));
    put("run", server.metadata.get(RUN_KEY).cloned());
    put("login_user", server.metadata.get(LOGIN_USER_KEY).cloned());
    put("error", server.fault.as_ref().map(|f| f.message.clone()));
    put(
        "location",
        server
            .availability_zone
            .clone()
            .or_else(|| region.map(String::from)),
    );
    put("region", region.map(String::from));
    put("key_name", server.key_name.clone());
    put("created", server.created.clone());
    Node {
        id: server.id.clone(),
        name: server.name.clone(),
        state: state(&server.status),
        public_ips: floating,
        private_ips,
        image: id_of(&server.image),
        size: id_of(&server.flavor),
        provider: PROVIDER.into(),
        extra,
    }
}

/// An image's login user, from its properties.
pub(super) fn login_user(image: &Image) -> Option<String> {
    image.os_admin_user.clone()
}

fn to_image(image: &Image) -> NodeImage {
    let mut extra = BTreeMap::new();
    extra.insert("status".into(), Value::from(image.status.clone()));
    extra.insert("created_at".into(), Value::from(image.created_at.clone()));
    if let Some(v) = &image.visibility {
        extra.insert("visibility".into(), Value::from(v.clone()));
    }
    if let Some(user) = login_user(image) {
        extra.insert("login_user".into(), Value::from(user));
    }
    if let Some(distro) = &image.os_distro {
        extra.insert("os_distro".into(), Value::from(distro.clone()));
    }
    if let Some(disk) = image.min_disk {
        extra.insert("min_disk_gb".into(), Value::from(disk));
    }
    NodeImage {
        id: image.id.clone(),
        name: image.name.clone().unwrap_or_default(),
        extra,
    }
}

fn to_key_pair(keypair: Keypair) -> KeyPair {
    KeyPair {
        name: keypair.name,
        public_key: keypair.public_key,
        fingerprint: keypair.fingerprint,
        private_key: keypair.private_key,
        extra: BTreeMap::new(),
    }
}

/// The next page's address, from Nova's and Neutron's `*_links` (`rel: next`).
pub(super) fn next_link(page: &Value, key: &str) -> Option<String> {
    page.get(format!("{key}_links"))?
        .as_array()?
        .iter()
        .find(|l| l.get("rel").and_then(Value::as_str) == Some("next"))?
        .get("href")?
        .as_str()
        .map(String::from)
}

impl OpenStackDriver {
    /// A call's failure as a provider error, naming what was being done.
    pub(super) fn failed(&self, e: super::api::CallError, context: String) -> ProviderError {
        self.client.fail(e, context)
    }

    /// Calls `method path` on `service`, its failure described by `context`.
    pub(super) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&Value>,
        context: impl FnOnce() -> String,
    ) -> Result<T> {
        self.client
            .call(service, method, path, body)
            .await
            .map_err(|e| self.failed(e, context()))
    }

    /// Every item of a paged Nova or Neutron list: `path` (with its query), then each `next`
    /// link, the items under `key`.
    pub(super) async fn list_all<T: serde::de::DeserializeOwned>(
        &self,
        service: Service,
        path: &str,
        key: &str,
        context: &str,
    ) -> Result<Vec<T>> {
        let mut items = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(url) = next.take() {
            let page: Value = self
                .call(service, Method::GET, &url, None, || context.to_string())
                .await?;
            next = next_link(&page, key);
            let batch = page.get(key).cloned().unwrap_or(Value::Array(Vec::new()));
            let batch: Vec<T> = serde_json::from_value(batch).map_err(|e| {
                self.failed(super::api::CallError::Decode(e.to_string()), context.into())
            })?;
            if batch.is_empty() {
                break;
            }
            items.extend(batch);
        }
        Ok(items)
    }

    /// The servers, all or those a query selects (`name=...`).
    pub(super) async fn servers(&self, filter: &str) -> Result<Vec<Server>> {
        let path = format!("/servers/detail?limit={PAGE_SIZE}{filter}");
        self.list_all(Service::Compute, &path, "servers", "listing servers")
            .await
    }

    /// One server, `None` when Nova does not know it.
    pub(super) async fn server(&self, id: &str) -> Result<Option<Server>> {
        #[derive(Deserialize)]
        struct One {
            server: Server,
        }
        let path = format!("/servers/{}", segment(id));
        match self
            .call::<One>(Service::Compute, Method::GET, &path, None, || {
                format!("looking up server {id}")
            })
            .await
        {
            Ok(one) => Ok(Some(one.server)),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a server action (`{"reboot": ...}`, `{"os-stop": null}` ...).
    async fn action(&self, node: &Node, action: Action, what: &str) -> Result<()> {
        let path = format!("/servers/{}/action", segment(&node.id));
        let body = super::bodies::json(&action);
        let _: Value = self
            .call(Service::Compute, Method::POST, &path, Some(&body), || {
                format!("{what} server {} ({})", node.name, node.id)
            })
            .await?;
        Ok(())
    }

    /// The active images, newest first.
    pub(super) async fn images(&self) -> Result<Vec<Image>> {
        let mut images: Vec<Image> = Vec::new();
        let mut next = Some(format!("/images?limit={PAGE_SIZE}&status=active"));
        while let Some(path) = next.take() {
            let page: Value = self
                .call(Service::Image, Method::GET, &path, None, || {
                    "listing images".into()
                })
                .await?;
            // Glance's `next` is a path from its root (`/v2/images?marker=...`).
            next = page
                .get("next")
                .and_then(Value::as_str)
                .map(|n| n.strip_prefix("/v2").unwrap_or(n).to_string());
            let batch: Vec<Image> =
                serde_json::from_value(page.get("images").cloned().unwrap_or_default())
                    .unwrap_or_default();
            images.extend(batch);
        }
        images.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(images)
    }

    /// One image by id, `None` when Glance does not know it.
    pub(super) async fn image(&self, id: &str) -> Result<Option<Image>> {
        let path = format!("/images/{}", segment(id));
        match self
            .call::<Image>(Service::Image, Method::GET, &path, None, || {
                format!("looking up image {id}")
            })
            .await
        {
            Ok(image) => Ok(Some(image)),
            Err(ProviderError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The flavors, smallest first.
    async fn flavors(&self) -> Result<Vec<Flavor>> {
        let mut flavors: Vec<Flavor> = self
            .list_all(
                Service::Compute,
                "/flavors/detail",
                "flavors",
                "listing flavors",
            )
            .await?;
        flavors.sort_by(|a, b| (a.vcpus, a.ram, &a.name).cmp(&(b.vcpus, b.ram, &b.name)));
        Ok(flavors)
    }

    /// The key pairs of the user.
    pub(super) async fn keypairs(&self) -> Result<Vec<Keypair>> {
        #[derive(Deserialize)]
        struct Wrapped {
            keypair: Keypair,
        }
        #[derive(Deserialize)]
        struct Keypairs {
            keypairs: Vec<Wrapped>,
        }
        let list: Keypairs = self
            .call(Service::Compute, Method::GET, "/os-keypairs", None, || {
                "listing key pairs".into()
            })
            .await?;
        Ok(list.keypairs.into_iter().map(|k| k.keypair).collect())
    }

    fn region(&self) -> Option<&str> {
        self.client.region()
    }

    /// Reboots a server: a soft reboot (the guest's own, as `reboot_node`), or a hard one (its
    /// power cycled, which also works on a server that is stopped or hung).
    ///
    /// # Errors
    /// Nova refused (409 when the server's state does not allow it), or the call failed.
    pub async fn ex_reboot_node(&self, node: &Node, hard: bool) -> Result<()> {
        let kind = if hard { "HARD" } else { "SOFT" };
        self.action(node, Action::Reboot { kind }, "rebooting")
            .await
    }

    /// The cloud's regions (those of its compute endpoints); a driver uses one, named by
    /// `region` in `[provider]`, the entry's `region_name` or `OS_REGION_NAME`.
    ///
    /// # Errors
    /// Authentication failed.
    pub async fn ex_list_regions(&self) -> Result<Vec<NodeLocation>> {
        Ok(self
            .client
            .regions()
            .await?
            .into_iter()
            .map(|r| NodeLocation {
                id: r.clone(),
                name: r,
                country: None,
            })
            .collect())
    }
}

#[async_trait]
impl NodeDriver for OpenStackDriver {
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
        if let Some(cloud) = &self.settings.cloud {
            settings.insert("cloud".into(), Value::from(cloud.clone()));
        }
        if let Some(region) = &self.settings.region {
            settings.insert("region".into(), Value::from(region.clone()));
        }
        settings
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        let servers = self.servers("").await?;
        Ok(servers.iter().map(|s| to_node(s, self.region())).collect())
    }

    async fn get_node(&self, id: &str) -> Result<Node> {
        match self.server(id).await? {
            Some(server) if state(&server.status) != NodeState::Terminated => {
                Ok(to_node(&server, self.region()))
            }
            _ => Err(not_found("node", id)),
        }
    }

    async fn create_node(&self, request: &CreateNode) -> Result<Node> {
        self.create_server(request).await
    }

    /// Releases the floating IPs nodeup allocated for the server, deletes it (one already gone
    /// counts as destroyed), and deletes the key pair nodeup imported for it once no server
    /// uses it.
    async fn destroy_node(&self, node: &Node) -> Result<()> {
        let key = match node.extra.get("key_name").and_then(Value::as_str) {
            Some(key) => Some(key.to_string()),
            None => self.server(&node.id).await?.and_then(|s| s.key_name),
        };
        self.release_floating_ips(&node.id).await?;
        let path = format!("/servers/{}", segment(&node.id));
        let deleted: Result<Value> = self
            .call(Service::Compute, Method::DELETE, &path, None, || {
                format!("deleting server {} ({})", node.name, node.id)
            })
            .await;
        match deleted {
            Ok(_) | Err(ProviderError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.forget_key_of(&node.id, key).await;
        Ok(())
    }

    async fn reboot_node(&self, node: &Node) -> Result<()> {
        self.ex_reboot_node(node, false).await
    }

    async fn stop_node(&self, node: &Node) -> Result<()> {
        self.action(node, Action::Stop(()), "stopping").await
    }

    async fn start_node(&self, node: &Node) -> Result<()> {
        self.action(node, Action::Start(()), "starting").await
    }

    /// The active images, newest first.
    async fn list_images(
        &self,
        _location: Option<&str>,
        _size: Option<&str>,
    ) -> Result<Vec<NodeImage>> {
        Ok(self.images().await?.iter().map(to_image).collect())
    }

    /// An image by id, or the newest active one a name means.
    async fn get_image(&self, id: &str) -> Result<NodeImage> {
        Ok(to_image(&self.resolve_image(id).await?))
    }

    /// The flavors, with their vCPUs, memory and disk.
    async fn list_sizes(&self, _location: Option<&str>) -> Result<Vec<NodeSize>> {
        Ok(self
            .flavors()
            .await?
            .into_iter()
            .map(|f| NodeSize {
                id: f.id,
                name: f.name,
                ram_mib: f.ram,
                disk_gb: Some(f.disk),
                vcpus: Some(f.vcpus),
                price: None,
                bandwidth_mbps: None,
                extra: BTreeMap::new(),
            })
            .collect())
    }

    /// The availability zones that are up.
    async fn list_locations(&self) -> Result<Vec<NodeLocation>> {
        #[derive(Deserialize)]
        struct ZoneState {
            available: bool,
        }
        #[derive(Deserialize)]
        struct Zone {
            #[serde(rename = "zoneName")]
            name: String,
            #[serde(rename = "zoneState")]
            state: ZoneState,
        }
        #[derive(Deserialize)]
        struct Zones {
            #[serde(rename = "availabilityZoneInfo")]
            info: Vec<Zone>,
        }
        let zones: Zones = self
            .call(
                Service::Compute,
                Method::GET,
                "/os-availability-zone",
                None,
                || "listing availability zones".into(),
            )
            .await?;
        Ok(zones
            .info
            .into_iter()
            .filter(|z| z.state.available)
            .map(|z| NodeLocation {
                id: z.name.clone(),
                name: z.name,
                country: None,
            })
            .collect())
    }

    async fn list_key_pairs(&self, _location: Option<&str>) -> Result<Vec<KeyPair>> {
        Ok(self
            .keypairs()
            .await?
            .into_iter()
            .map(to_key_pair)
            .collect())
    }

    async fn get_key_pair(&self, name: &str) -> Result<KeyPair> {
        #[derive(Deserialize)]
        struct One {
            keypair: Keypair,
        }
        let path = format!("/os-keypairs/{}", segment(name));
        let one: One = self
            .call(Service::Compute, Method::GET, &path, None, || {
                format!("looking up key pair {name}")
            })
            .await
            .map_err(|e| match e {
                ProviderError::NotFound { .. } => not_found("key pair", name),
                e => e,
            })?;
        Ok(to_key_pair(one.keypair))
    }

    /// Has Nova generate a key pair; its private half is returned, once.
    async fn create_key_pair(&self, name: &str, _location: Option<&str>) -> Result<KeyPair> {
        self.keypair(name, None).await.map(to_key_pair)
    }

    async fn import_key_pair_from_string(
        &self,
        name: &str,
        public_key: &str,
        _location: Option<&str>,
    ) -> Result<KeyPair> {
        self.keypair(name, Some(public_key.trim()))
            .await
            .map(to_key_pair)
    }

    async fn delete_key_pair(&self, key_pair: &KeyPair) -> Result<()> {
        let path = format!("/os-keypairs/{}", segment(&key_pair.name));
        let _: Value = self
            .call(Service::Compute, Method::DELETE, &path, None, || {
                format!("deleting key pair {}", key_pair.name)
            })
            .await?;
        Ok(())
    }

    async fn create_volume(&self, request: &CreateVolume) -> Result<StorageVolume> {
        self.make_volume(request).await
    }

    async fn list_volumes(&self) -> Result<Vec<StorageVolume>> {
        self.volumes().await
    }

    async fn get_volume(&self, id: &str) -> Result<StorageVolume> {
        self.volume(id).await
    }

    async fn attach_volume(&self, node: &Node, volume: &StorageVolume) -> Result<()> {
        self.attach(node, volume).await
    }

    async fn detach_volume(&self, volume: &StorageVolume, node: Option<&Node>) -> Result<()> {
        self.detach(volume, node).await
    }

    async fn destroy_volume(&self, volume: &StorageVolume) -> Result<()> {
        self.delete_volume(volume).await
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
        self.snapshots().await
    }

    async fn destroy_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<()> {
        self.delete_snapshot(snapshot).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floating_and_public_fixed_addresses_are_public() {
        let server: Server = serde_json::from_value(json!({
            "id": "s1", "name": "web", "status": "ACTIVE",
            "addresses": {
                "private": [
                    {"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
                    {"addr": "203.0.113.9", "version": 4, "OS-EXT-IPS:type": "floating"}
                ],
                "Ext-Net": [{"addr": "198.51.100.7", "version": 4, "OS-EXT-IPS:type": "fixed"}]
            },
            "metadata": {"nodeup:run": "r1"},
            "flavor": {"id": "f1"}, "image": ""
        }))
        .unwrap();
        let node = to_node(&server, Some("GRA11"));
        assert_eq!(node.state, NodeState::Running);
        assert_eq!(
            node.public_ips,
            [
                "203.0.113.9".parse::<IpAddr>().unwrap(),
                "198.51.100.7".parse().unwrap()
            ]
        );
        assert_eq!(node.private_ips, ["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(node.run(), Some("r1"));
        assert_eq!(node.size.as_deref(), Some("f1"));
        assert_eq!(node.image, None);
    }

    #[test]
    fn nova_statuses() {
        assert_eq!(state("BUILD"), NodeState::Pending);
        assert_eq!(state("SHUTOFF"), NodeState::Stopped);
        assert_eq!(state("HARD_REBOOT"), NodeState::Rebooting);
        assert_eq!(state("ERROR"), NodeState::Error);
    }
}
