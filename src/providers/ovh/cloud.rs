//! The OVH Public Cloud driver: `/cloud/project/{project}/...` instances, flavors, images, regions,
//! SSH keys, volumes and volume snapshots.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::create::need;
use super::{segment, CallError, Client, Credentials, PROVIDER};
use crate::driver::{Features, NodeDriver, ProviderError, Result};
use crate::model::{
    CreateNode, CreateVolume, KeyPair, Node, NodeImage, NodeLocation, NodeSize, NodeState,
    StorageVolume, VolumeSnapshot,
};

/// An instance, as listed (ids) or in detail (objects).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Its id (`instanceId` in the outdated POST shape).
    #[serde(alias = "instanceId")]
    pub id: String,
    /// Its name as OVH shows it (names need not be unique).
    pub name: String,
    /// Its status (ACTIVE, BUILD ...).
    pub status: String,
    /// The region it lives in (`GRA11` ...), where OVH says.
    pub region: Option<String>,
    /// When it was created (OVH's ISO 8601 text, to the second).
    pub created: Option<String>,
    /// The flavor id (list shape).
    pub flavor_id: Option<String>,
    /// The image id (list shape).
    pub image_id: Option<String>,
    /// The SSH key id (list shape).
    pub ssh_key_id: Option<String>,
    /// Its addresses, public and private, as OVH lists them.
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
    /// The flavor (detail shape).
    pub flavor: Option<Flavor>,
    /// The image (detail shape).
    pub image: Option<Image>,
    /// The SSH key (detail shape).
    pub ssh_key: Option<SshKey>,
}

/// One address of an instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    /// The address.
    pub ip: String,
    /// `public` or `private`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// 4 or 6.
    pub version: Option<u8>,
    /// The OpenStack network the address is on, when private.
    pub network_id: Option<String>,
}

/// A flavor (size).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flavor {
    /// OVH's id for it (a UUID).
    pub id: String,
    /// Its name as OVH shows it (names need not be unique).
    pub name: String,
    /// The region it lives in (`GRA11` ...), where OVH says.
    pub region: Option<String>,
    /// Virtual CPUs.
    pub vcpus: Option<u32>,
    /// Memory, MB.
    pub ram: Option<u64>,
    /// Disk, GB.
    pub disk: Option<u64>,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// linux or windows.
    pub os_type: Option<String>,
    /// Inbound bandwidth, Mbit/s.
    pub inbound_bandwidth: Option<u64>,
}

/// An image.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// OVH's id for it (a UUID).
    pub id: String,
    /// Its name as OVH shows it (names need not be unique).
    pub name: String,
    /// The region it lives in (`GRA11` ...), where OVH says.
    pub region: Option<String>,
    /// public or private.
    pub visibility: Option<String>,
    /// OVH's status word for it, as OVH writes it.
    pub status: Option<String>,
    /// The login user (e.g. `debian`).
    pub user: Option<String>,
    /// The smallest disk it needs, GB.
    pub min_disk: Option<u64>,
    /// The least memory it needs, MB.
    pub min_ram: Option<u64>,
    /// linux or windows.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// An SSH key.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshKey {
    /// Its id (absent in the outdated POST /instance shape).
    #[serde(default)]
    pub id: String,
    /// Its name as OVH shows it (names need not be unique).
    pub name: String,
    /// The OpenSSH public key line, with OVH's comment.
    pub public_key: String,
    /// The regions it may be used in.
    pub regions: Option<Vec<String>>,
    /// The key's fingerprint, as OVH computes it.
    #[serde(rename = "fingerPrint")]
    pub fingerprint: Option<String>,
}

/// A volume.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// OVH's id for it (a UUID).
    pub id: String,
    /// Its name as OVH shows it (names need not be unique).
    pub name: Option<String>,
    /// The description it was given, if any.
    pub description: Option<String>,
    /// The region it lives in (`GRA11` ...), where OVH says.
    pub region: Option<String>,
    /// GB.
    pub size: u64,
    /// OVH's status word for it, as OVH writes it.
    pub status: String,
    /// classic or high-speed.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Instance ids.
    #[serde(default)]
    pub attached_to: Vec<String>,
    /// When created.
    #[serde(alias = "created")]
    pub creation_date: Option<String>,
}

/// A volume snapshot.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// OVH's id for it (a UUID).
    pub id: String,
    /// The volume's id.
    pub volume_id: String,
    /// OVH's status word for it, as OVH writes it.
    pub status: String,
    /// The region it lives in (`GRA11` ...), where OVH says.
    pub region: Option<String>,
    /// Its name as OVH shows it (names need not be unique).
    pub name: Option<String>,
    /// The description it was given, if any.
    pub description: Option<String>,
    /// GB.
    pub size: u64,
    /// When taken.
    pub creation_date: Option<String>,
}

/// Maps an OVH instance status to a node state; strings nodeup does not know map to `Unknown`.
pub fn state_of(status: &str) -> NodeState {
    match status {
        "ACTIVE" => NodeState::Running,
        "BUILD" | "BUILDING" | "REBUILD" | "PASSWORD" | "RESUMING" | "UNSHELVING" | "RESIZE"
        | "RESIZED" | "VERIFY_RESIZE" | "REVERT_RESIZE" | "MIGRATING" | "SNAPSHOTTING"
        | "RESCUING" | "UNRESCUING" => NodeState::Pending,
        "REBOOT" | "HARD_REBOOT" => NodeState::Rebooting,
        "SHUTOFF" | "STOPPED" | "SUSPENDED" | "PAUSED" | "SHELVED" | "SHELVED_OFFLOADED"
        | "SHELVING" | "RESCUE" | "RESCUED" => NodeState::Stopped,
        "DELETED" | "DELETING" | "SOFT_DELETED" => NodeState::Terminated,
        "ERROR" => NodeState::Error,
        _ => NodeState::Unknown,
    }
}

/// `?region=R` for a location filter, or nothing.
fn region_query(location: Option<&str>) -> String {
    location
        .map(|l| format!("?region={}", segment(l)))
        .unwrap_or_default()
}

/// Splits addresses into public and private; unparsable ones are skipped.
pub fn addresses(ips: &[IpAddress]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let mut public = Vec::new();
    let mut private = Vec::new();
    for a in ips {
        let Ok(ip) = a.ip.parse::<IpAddr>() else {
            continue;
        };
        match a.kind.as_deref() {
            Some("private") => private.push(ip),
            _ => public.push(ip),
        }
    }
    (public, private)
}

/// The OVH subsidiary whose prices are shown unless `[provider] subsidiary` says otherwise.
const DEFAULT_SUBSIDIARY: &str = "FR";

/// The longest project id accepted (OVH's are 32 hex digits).
const PROJECT_ID_MAX: usize = 64;

/// The step file's `[provider]` table for OVH.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvhSettings {
    /// The Public Cloud project (else `OVH_CLOUD_PROJECT_SERVICE`).
    pub project: Option<String>,
    /// The OVH subsidiary whose prices sizes show (default `FR`).
    pub subsidiary: Option<String>,
}

/// OVH's node options (`[node] options`, or `CreateNode::extra`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvhOptions {
    /// Cloud-init user data, passed as `userData`.
    pub user_data: Option<String>,
    /// An SSH key already in the project, by id (`sshKeyId`), instead of the deploy key.
    pub ssh_key_id: Option<String>,
    /// An SSH key already in the project, by name (Libcloud's `ex_keyname`), instead of the
    /// deploy key.
    pub ssh_key_name: Option<String>,
    /// Monthly rather than hourly billing.
    pub monthly_billing: Option<bool>,
}

/// The Public Cloud driver of one project.
#[derive(Debug)]
pub struct OvhDriver {
    pub(super) client: Client,
    pub(super) project: String,
    /// The OVH subsidiary whose prices sizes show (`FR`, `GB`, `US` ...).
    subsidiary: String,
    /// Image id → login user, as learnt.
    image_users: Mutex<HashMap<String, Option<String>>>,
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(value: Value, what: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| ProviderError::Failed {
        provider: PROVIDER.into(),
        context: format!("{what}: unexpected answer"),
        source: Box::new(e),
    })
}

impl OvhDriver {
    /// A driver for `project` with these credentials.
    ///
    /// # Errors
    /// A project id that is not one (OVH's are 32 hex digits; letters, digits, `-` and `_` are
    /// accepted), malformed credentials, an unknown endpoint.
    pub fn new(creds: Credentials, project: &str) -> Result<Self> {
        let valid = !project.is_empty()
            && project.len() <= PROJECT_ID_MAX
            && project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ProviderError::InvalidRequest {
                provider: PROVIDER.into(),
                message: format!(
                    "{project:?} is not a Public Cloud project id (32 hex digits): check \
                     OVH_CLOUD_PROJECT_SERVICE or [provider] project; `nodeup ovh projects` lists yours"
                ),
            });
        }
        Ok(OvhDriver {
            client: Client::new(creds)?,
            project: project.to_string(),
            subsidiary: DEFAULT_SUBSIDIARY.to_string(),
            image_users: Mutex::new(HashMap::new()),
        })
    }

    /// Credentials from the environment and ovh.conf; the project from the step file's
    /// `[provider] project`, else `OVH_CLOUD_PROJECT_SERVICE`.
    ///
    /// # Errors
    /// An unknown `[provider]` key, a credential in the step file, no project or a project id that
    /// is not one, missing or malformed credentials.
    pub fn from_config(config: &BTreeMap<String, Value>) -> Result<Self> {
        let settings: OvhSettings = crate::providers::settings(
            PROVIDER,
            "[provider]",
            config,
            "set OVH_APPLICATION_KEY, OVH_APPLICATION_SECRET and OVH_CONSUMER_KEY, or ovh.conf",
        )?;
        let project = settings
            .project
            .or_else(|| std::env::var("OVH_CLOUD_PROJECT_SERVICE").ok())
            .ok_or_else(|| ProviderError::InvalidRequest {
                provider: PROVIDER.into(),
                message: "no Public Cloud project: set OVH_CLOUD_PROJECT_SERVICE, or `project` \
                          under [provider] in the step file"
                    .into(),
            })?;
        let mut driver = Self::new(Credentials::from_env()?, &project)?;
        if let Some(subsidiary) = settings.subsidiary {
            driver.subsidiary = subsidiary;
        }
        Ok(driver)
    }

    /// The signed API client this driver calls through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The API client, to adjust (its retry policy, say).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    pub(super) fn path(&self, rest: &str) -> String {
        format!("/cloud/project/{}{rest}", segment(&self.project))
    }

    /// Calls `METHOD /cloud/project/{project}{rest}`. A 404 is checked against the project
    /// itself, so that an unknown project is named as such rather than as a missing object.
    pub(super) async fn call(
        &self,
        method: Method,
        rest: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let path = self.path(rest);
        match self.client.call(method.clone(), &path, body).await {
            Ok(value) => Ok(value),
            Err(e) => {
                let not_found = matches!(&e, CallError::Api(a) if a.status == 404);
                if not_found && !rest.is_empty() && !self.project_exists().await {
                    return Err(self.project_not_found());
                }
                Err(e.into_provider(format!("{method} {path}")))
            }
        }
    }

    /// Whether `GET /cloud/project/{project}` finds the project (true when that call fails
    /// otherwise: only a 404 says it is not there).
    async fn project_exists(&self) -> bool {
        !matches!(
            self.client.call(Method::GET, &self.path(""), None).await,
            Err(CallError::Api(a)) if a.status == 404
        )
    }

    fn project_not_found(&self) -> ProviderError {
        ProviderError::InvalidRequest {
            provider: PROVIDER.into(),
            message: format!(
                "the Public Cloud project {:?} was not found with these credentials: check \
                 OVH_CLOUD_PROJECT_SERVICE or [provider] project; `nodeup ovh projects` lists \
                 the projects they reach",
                self.project
            ),
        }
    }

    /// One flavor, by id.
    async fn flavor(&self, id: &str) -> Result<Flavor> {
        decode(
            self.call(Method::GET, &format!("/flavor/{}", segment(id)), None)
                .await?,
            "flavor",
        )
    }

    /// Hourly prices by flavor id (`GET /cloud/subsidiaryPrice`), for this driver's OVH
    /// subsidiary. Prices are a nicety: when OVH does not answer, sizes come without them.
    async fn prices(&self) -> HashMap<String, f64> {
        let path = format!(
            "/cloud/subsidiaryPrice?ovhSubsidiary={}",
            segment(&self.subsidiary)
        );
        let Ok(value) = self.client.call(Method::GET, &path, None).await else {
            return HashMap::new();
        };
        value["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["flavorId"].as_str()?.to_string(),
                    p["price"]["value"].as_f64()?,
                ))
            })
            .collect()
    }

    /// `GET /cloud/project`: the ids of the projects these credentials reach.
    ///
    /// # Errors
    /// The call failed.
    pub async fn list_projects(client: &Client) -> Result<Vec<String>> {
        let value = client
            .call(Method::GET, "/cloud/project", None)
            .await
            .map_err(|e| e.into_provider("GET /cloud/project".into()))?;
        decode(value, "projects")
    }

    async fn image_user(&self, image_id: &str) -> Option<String> {
        if let Some(known) = self
            .image_users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(image_id)
        {
            return known.clone();
        }
        let user = match self
            .call(Method::GET, &format!("/image/{}", segment(image_id)), None)
            .await
        {
            Ok(v) => decode::<Image>(v, "image").ok().and_then(|i| i.user),
            Err(_) => None,
        };
        self.image_users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(image_id.to_string(), user.clone());
        user
    }

    pub(super) async fn to_node(&self, instance: Instance) -> Node {
        let (public_ips, private_ips) = addresses(&instance.ip_addresses);
        let image_id = instance
            .image_id
            .clone()
            .or(instance.image.as_ref().map(|i| i.id.clone()));
        let login_user = match (&instance.image, &image_id) {
            (Some(Image { user: Some(u), .. }), _) => Some(u.clone()),
            (_, Some(id)) => self.image_user(id).await,
            _ => None,
        };
        let mut extra = BTreeMap::new();
        extra.insert("status".to_string(), json!(instance.status));
        for (key, value) in [
            ("region", &instance.region),
            ("location", &instance.region),
            ("created", &instance.created),
            ("login_user", &login_user),
            (
                "ssh_key_id",
                &instance
                    .ssh_key_id
                    .clone()
                    .or(instance.ssh_key.as_ref().map(|k| k.id.clone())),
            ),
        ] {
            if let Some(v) = value {
                extra.insert(key.to_string(), json!(v));
            }
        }
        Node {
            id: instance.id,
            name: instance.name,
            state: state_of(&instance.status),
            public_ips,
            private_ips,
            image: image_id,
            size: instance.flavor_id.or(instance.flavor.map(|f| f.id)),
            provider: PROVIDER.into(),
            extra,
        }
    }

    pub(super) async fn instances(&self) -> Result<Vec<Instance>> {
        decode(
            self.call(Method::GET, "/instance", None).await?,
            "instances",
        )
    }
}

#[async_trait]
impl NodeDriver for OvhDriver {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn settings(&self) -> crate::driver::ProviderConfig {
        let mut settings = crate::driver::ProviderConfig::new();
        settings.insert("project".into(), self.project.clone().into());
        settings.insert("subsidiary".into(), self.subsidiary.clone().into());
        settings
    }

    fn features(&self) -> Features {
        Features {
            ssh_key: true,
            password: false,
            generates_password: false,
        }
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        let mut nodes = Vec::new();
        for instance in self.instances().await? {
            nodes.push(self.to_node(instance).await);
        }
        Ok(nodes)
    }

    async fn get_node(&self, id: &str) -> Result<Node> {
        let instance: Instance = decode(
            self.call(Method::GET, &format!("/instance/{}", segment(id)), None)
                .await?,
            "instance",
        )?;
        Ok(self.to_node(instance).await)
    }

    async fn create_node(&self, request: &CreateNode) -> Result<Node> {
        self.create_instance(request).await
    }

    /// Deletes the instance. One that is already gone counts as destroyed: a DELETE whose answer
    /// was lost and that was sent again is answered 404, and what the caller wanted is done.
    async fn destroy_node(&self, node: &Node) -> Result<()> {
        let path = format!("/instance/{}", segment(&node.id));
        match self.call(Method::DELETE, &path, None).await {
            Ok(_) => {}
            Err(ProviderError::NotFound { .. }) => {
                tracing::debug!(id = %node.id, "instance already gone: destroyed");
            }
            Err(e) => return Err(e),
        }
        if let Some(key) = node.extra.get("ssh_key_id").and_then(|k| k.as_str()) {
            self.release_key_of(&node.id, key).await;
        }
        Ok(())
    }

    async fn reboot_node(&self, node: &Node) -> Result<()> {
        let body = json!({"type": "soft"});
        self.call(
            Method::POST,
            &format!("/instance/{}/reboot", segment(&node.id)),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    async fn stop_node(&self, node: &Node) -> Result<()> {
        self.call(
            Method::POST,
            &format!("/instance/{}/stop", segment(&node.id)),
            None,
        )
        .await
        .map(|_| ())
    }

    async fn start_node(&self, node: &Node) -> Result<()> {
        self.call(
            Method::POST,
            &format!("/instance/{}/start", segment(&node.id)),
            None,
        )
        .await
        .map(|_| ())
    }

    async fn list_images(
        &self,
        location: Option<&str>,
        size: Option<&str>,
    ) -> Result<Vec<NodeImage>> {
        let images: Vec<Image> = decode(
            self.call(
                Method::GET,
                &format!("/image{}", region_query(location)),
                None,
            )
            .await?,
            "images",
        )?;
        let flavor = match size {
            Some(id) => Some(self.flavor(id).await?),
            None => None,
        };
        // Only what the size can boot: its disk and memory hold the image's minimums.
        let fits = |i: &Image| {
            flavor.as_ref().is_none_or(|f| {
                i.min_disk.unwrap_or(0) <= f.disk.unwrap_or(u64::MAX)
                    && i.min_ram.unwrap_or(0) <= f.ram.unwrap_or(u64::MAX)
            })
        };
        Ok(images
            .into_iter()
            .filter(|i| location.is_none_or(|l| i.region.as_deref() == Some(l)))
            .filter(fits)
            .map(to_image)
            .collect())
    }

    async fn list_nodes_in(&self, location: &str) -> Result<Vec<Node>> {
        let instances: Vec<Instance> = decode(
            self.call(
                Method::GET,
                &format!("/instance{}", region_query(Some(location))),
                None,
            )
            .await?,
            "instances",
        )?;
        let mut nodes = Vec::new();
        for instance in instances {
            nodes.push(self.to_node(instance).await);
        }
        Ok(nodes)
    }

    async fn get_image(&self, id: &str) -> Result<NodeImage> {
        let image: Image = decode(
            self.call(Method::GET, &format!("/image/{}", segment(id)), None)
                .await?,
            "image",
        )?;
        Ok(to_image(image))
    }

    /// OVH's instance snapshots have a name only: a description is not supported.
    async fn create_image(
        &self,
        node: &Node,
        name: &str,
        description: Option<&str>,
    ) -> Result<NodeImage> {
        if description.is_some() {
            return Err(self.not_supported("create_image with a description"));
        }
        let body = json!({"snapshotName": name});
        self.call(
            Method::POST,
            &format!("/instance/{}/snapshot", segment(&node.id)),
            Some(&body),
        )
        .await?;
        // The snapshot shows up among the images once OVH has taken it.
        let images = self.list_images(None, None).await?;
        Ok(images
            .into_iter()
            .find(|i| i.name == name)
            .unwrap_or(NodeImage {
                id: String::new(),
                name: name.into(),
                extra: [("status".to_string(), json!("pending"))].into(),
            }))
    }

    async fn delete_image(&self, image: &NodeImage) -> Result<()> {
        self.call(
            Method::DELETE,
            &format!("/snapshot/{}", segment(&image.id)),
            None,
        )
        .await
        .map(|_| ())
    }

    async fn list_sizes(&self, location: Option<&str>) -> Result<Vec<NodeSize>> {
        let flavors: Vec<Flavor> = decode(
            self.call(
                Method::GET,
                &format!("/flavor{}", region_query(location)),
                None,
            )
            .await?,
            "flavors",
        )?;
        let prices = self.prices().await;
        Ok(flavors
            .into_iter()
            .filter(|f| location.is_none_or(|l| f.region.as_deref() == Some(l)))
            .map(|f| {
                let mut extra = BTreeMap::new();
                for (k, v) in [
                    ("region", &f.region),
                    ("type", &f.kind),
                    ("os_type", &f.os_type),
                ] {
                    if let Some(v) = v {
                        extra.insert(k.to_string(), json!(v));
                    }
                }
                NodeSize {
                    price: prices.get(&f.id).copied(),
                    bandwidth_mbps: f.inbound_bandwidth,
                    id: f.id,
                    name: f.name,
                    ram_mib: f.ram.unwrap_or(0),
                    disk_gb: f.disk,
                    vcpus: f.vcpus,
                    extra,
                }
            })
            .collect())
    }

    async fn list_locations(&self) -> Result<Vec<NodeLocation>> {
        let regions: Vec<String> =
            decode(self.call(Method::GET, "/region", None).await?, "regions")?;
        Ok(regions
            .into_iter()
            .map(|r| NodeLocation {
                id: r.clone(),
                name: r,
                country: None,
            })
            .collect())
    }

    async fn list_key_pairs(&self, location: Option<&str>) -> Result<Vec<KeyPair>> {
        let keys: Vec<SshKey> = decode(
            self.call(
                Method::GET,
                &format!("/sshkey{}", region_query(location)),
                None,
            )
            .await?,
            "ssh keys",
        )?;
        Ok(keys.into_iter().map(to_key_pair).collect())
    }

    async fn create_key_pair(&self, name: &str, location: Option<&str>) -> Result<KeyPair> {
        // OVH keeps public keys only: the pair is made here, and its private half returned once.
        let key =
            russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
                .map_err(|e| ProviderError::Failed {
                    provider: PROVIDER.into(),
                    context: "generating a key pair".into(),
                    source: Box::new(e),
                })?;
        let public = key.public_key().to_openssh().unwrap_or_default();
        let mut pair = self
            .import_key_pair_from_string(name, &public, location)
            .await?;
        pair.private_key = key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .ok()
            .map(|z| z.to_string());
        Ok(pair)
    }

    async fn import_key_pair_from_string(
        &self,
        name: &str,
        public_key: &str,
        location: Option<&str>,
    ) -> Result<KeyPair> {
        russh::keys::PublicKey::from_openssh(public_key.trim()).map_err(|e| {
            ProviderError::InvalidRequest {
                provider: PROVIDER.into(),
                message: format!("the public key does not parse: {e}"),
            }
        })?;
        let key: SshKey = decode(
            self.call(
                Method::POST,
                "/sshkey",
                Some(&match location {
                    Some(region) => {
                        json!({"name": name, "publicKey": public_key.trim(), "region": region})
                    }
                    None => json!({"name": name, "publicKey": public_key.trim()}),
                }),
            )
            .await?,
            "ssh key",
        )?;
        Ok(to_key_pair(key))
    }

    async fn delete_key_pair(&self, key_pair: &KeyPair) -> Result<()> {
        let id = match key_pair.extra.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => self
                .get_key_pair(&key_pair.name)
                .await?
                .extra
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        self.call(Method::DELETE, &format!("/sshkey/{}", segment(&id)), None)
            .await
            .map(|_| ())
    }

    async fn create_volume(&self, request: &CreateVolume) -> Result<StorageVolume> {
        let region = need(&request.location, "a location (region)", "locations")?;
        let mut body = json!({"region": region, "size": request.size_gb, "name": request.name});
        body["type"] = json!(request.volume_type.as_deref().unwrap_or("classic"));
        if let Some(d) = &request.description {
            body["description"] = json!(d);
        }
        if let Some(snapshot) = &request.snapshot {
            body["snapshotId"] = json!(snapshot);
        }
        let volume: Volume = decode(
            self.call(Method::POST, "/volume", Some(&body)).await?,
            "volume",
        )?;
        Ok(to_volume(volume))
    }

    async fn list_volumes(&self) -> Result<Vec<StorageVolume>> {
        let volumes: Vec<Volume> =
            decode(self.call(Method::GET, "/volume", None).await?, "volumes")?;
        Ok(volumes.into_iter().map(to_volume).collect())
    }

    async fn get_volume(&self, id: &str) -> Result<StorageVolume> {
        let volume: Volume = decode(
            self.call(Method::GET, &format!("/volume/{}", segment(id)), None)
                .await?,
            "volume",
        )?;
        Ok(to_volume(volume))
    }

    async fn attach_volume(&self, node: &Node, volume: &StorageVolume) -> Result<()> {
        let body = json!({"instanceId": node.id});
        self.call(
            Method::POST,
            &format!("/volume/{}/attach", segment(&volume.id)),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    async fn detach_volume(&self, volume: &StorageVolume, node: Option<&Node>) -> Result<()> {
        let instance = match node {
            Some(node) => node.id.clone(),
            None => {
                let path = format!("/volume/{}", segment(&volume.id));
                let current: Volume = decode(self.call(Method::GET, &path, None).await?, "volume")?;
                match current.attached_to.as_slice() {
                    [] => return Ok(()),
                    [one] => one.clone(),
                    several => {
                        return Err(ProviderError::InvalidRequest {
                            provider: PROVIDER.into(),
                            message: format!(
                                "volume {} is attached to {} instances ({}): give the node to \
                                 detach it from",
                                volume.id,
                                several.len(),
                                several.join(", ")
                            ),
                        })
                    }
                }
            }
        };
        let body = json!({"instanceId": instance});
        self.call(
            Method::POST,
            &format!("/volume/{}/detach", segment(&volume.id)),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    async fn destroy_volume(&self, volume: &StorageVolume) -> Result<()> {
        self.call(
            Method::DELETE,
            &format!("/volume/{}", segment(&volume.id)),
            None,
        )
        .await
        .map(|_| ())
    }

    async fn create_volume_snapshot(
        &self,
        volume: &StorageVolume,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<VolumeSnapshot> {
        let mut body = json!({});
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        if let Some(d) = description {
            body["description"] = json!(d);
        }
        let snapshot: Snapshot = decode(
            self.call(
                Method::POST,
                &format!("/volume/{}/snapshot", segment(&volume.id)),
                Some(&body),
            )
            .await?,
            "snapshot",
        )?;
        Ok(to_snapshot(snapshot))
    }

    async fn list_snapshots(&self) -> Result<Vec<VolumeSnapshot>> {
        let snapshots: Vec<Snapshot> = decode(
            self.call(Method::GET, "/volume/snapshot", None).await?,
            "snapshots",
        )?;
        Ok(snapshots.into_iter().map(to_snapshot).collect())
    }

    async fn get_snapshot(&self, id: &str) -> Result<VolumeSnapshot> {
        let snapshot: Snapshot = decode(
            self.call(
                Method::GET,
                &format!("/volume/snapshot/{}", segment(id)),
                None,
            )
            .await?,
            "snapshot",
        )?;
        Ok(to_snapshot(snapshot))
    }

    async fn destroy_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<()> {
        self.call(
            Method::DELETE,
            &format!("/volume/snapshot/{}", segment(&snapshot.id)),
            None,
        )
        .await
        .map(|_| ())
    }
}

fn to_image(i: Image) -> NodeImage {
    let mut extra = BTreeMap::new();
    for (k, v) in [
        ("region", &i.region),
        ("visibility", &i.visibility),
        ("status", &i.status),
        ("login_user", &i.user),
        ("type", &i.kind),
    ] {
        if let Some(v) = v {
            extra.insert(k.to_string(), json!(v));
        }
    }
    NodeImage {
        id: i.id,
        name: i.name,
        extra,
    }
}

fn to_key_pair(k: SshKey) -> KeyPair {
    let fingerprint = k.fingerprint.clone().or_else(|| {
        russh::keys::PublicKey::from_openssh(k.public_key.trim())
            .ok()
            .map(|p| p.fingerprint(russh::keys::HashAlg::Sha256).to_string())
    });
    let mut extra = BTreeMap::from([("id".to_string(), json!(k.id))]);
    if let Some(regions) = k.regions {
        extra.insert("regions".into(), json!(regions));
    }
    KeyPair {
        name: k.name,
        public_key: k.public_key,
        fingerprint,
        private_key: None,
        extra,
    }
}

fn to_volume(v: Volume) -> StorageVolume {
    let mut extra = BTreeMap::new();
    for (k, val) in [
        ("region", &v.region),
        ("type", &v.kind),
        ("description", &v.description),
        ("created", &v.creation_date),
    ] {
        if let Some(val) = val {
            extra.insert(k.to_string(), json!(val));
        }
    }
    StorageVolume {
        id: v.id,
        name: v.name.unwrap_or_default(),
        size_gb: v.size,
        state: v.status.to_ascii_lowercase(),
        attached_to: v.attached_to.into_iter().next(),
        extra,
    }
}

fn to_snapshot(s: Snapshot) -> VolumeSnapshot {
    let mut extra = BTreeMap::new();
    for (k, v) in [("region", &s.region), ("description", &s.description)] {
        if let Some(v) = v {
            extra.insert(k.to_string(), json!(v));
        }
    }
    VolumeSnapshot {
        id: s.id,
        name: s.name.filter(|n| !n.is_empty()),
        volume_id: s.volume_id,
        size_gb: s.size,
        state: s.status.to_ascii_lowercase(),
        created: s.creation_date,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testbed/fixtures/ovh")
            .join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn every_fixture_parses() {
        let instances: Vec<Instance> =
            serde_json::from_value(fixture("instance_get.json")).unwrap();
        assert_eq!(instances.len(), 2);
        let (public, private) = addresses(&instances[0].ip_addresses);
        assert_eq!(public, vec!["92.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(private.is_empty());
        let detail: Instance = serde_json::from_value(fixture("instance_get_detail.json")).unwrap();
        assert_eq!(
            detail.image.as_ref().unwrap().user.as_deref(),
            Some("ubuntu")
        );
        assert_eq!(detail.flavor.as_ref().unwrap().ram, Some(2000));
        assert_eq!(detail.ssh_key.as_ref().unwrap().name, "testkey");
        let post: Instance = serde_json::from_value(fixture("instance_post.json")).unwrap();
        assert_eq!(post.id, "df4e55cb-90e6-4f20-a604-7084f311f498");
        assert_eq!(state_of(&post.status), NodeState::Pending);
        let flavors: Vec<Flavor> = serde_json::from_value(fixture("flavor_get.json")).unwrap();
        assert_eq!(flavors[0].vcpus, Some(2));
        let _: Flavor = serde_json::from_value(fixture("flavor_get_detail.json")).unwrap();
        let images: Vec<Image> = serde_json::from_value(fixture("image_get.json")).unwrap();
        assert_eq!(images[0].name, "Debian 8");
        let _: Image = serde_json::from_value(fixture("image_get_detail.json")).unwrap();
        let regions: Vec<String> = serde_json::from_value(fixture("region_get.json")).unwrap();
        assert_eq!(regions, ["SBG1", "BHS1", "GRA1"]);
        let keys: Vec<SshKey> = serde_json::from_value(fixture("ssh_get.json")).unwrap();
        assert_eq!(keys[0].id, "ham-id");
        let _: SshKey = serde_json::from_value(fixture("ssh_get_detail.json")).unwrap();
        let volumes: Vec<Volume> = serde_json::from_value(fixture("volume_get.json")).unwrap();
        assert_eq!(to_volume(volumes[0].clone()).state, "creating");
        let _: Volume = serde_json::from_value(fixture("volume_get_detail.json")).unwrap();
        let snaps: Vec<Snapshot> =
            serde_json::from_value(fixture("volume_snapshot_get.json")).unwrap();
        assert_eq!(snaps[1].volume_id, "bar");
        let _: Snapshot =
            serde_json::from_value(fixture("volume_snapshot_get_details.json")).unwrap();
        let time: i64 = serde_json::from_value(fixture("auth_time_get.json")).unwrap();
        assert_eq!(time, 1437075564);
        let pricing = fixture("pricing_get.json");
        assert_eq!(pricing["instances"][0]["flavorId"], "foo-id");
    }

    #[test]
    fn every_documented_status_maps_to_its_state() {
        use NodeState::*;
        // The whole list of statuses in OVH's API reference (Public Cloud instance status), each with the state a deploy must see:
        // only ACTIVE is Running (a node in RESCUE or still in BUILD is not ready for the steps).
        let table = [
            ("ACTIVE", Running),
            ("BUILD", Pending),
            ("BUILDING", Pending),
            ("DELETED", Terminated),
            ("DELETING", Terminated),
            ("ERROR", Error),
            ("HARD_REBOOT", Rebooting),
            ("MIGRATING", Pending),
            ("PASSWORD", Pending),
            ("PAUSED", Stopped),
            ("REBOOT", Rebooting),
            ("REBUILD", Pending),
            ("RESCUE", Stopped),
            ("RESCUED", Stopped),
            ("RESCUING", Pending),
            ("RESIZE", Pending),
            ("RESIZED", Pending),
            ("RESUMING", Pending),
            ("REVERT_RESIZE", Pending),
            ("SHELVED", Stopped),
            ("SHELVED_OFFLOADED", Stopped),
            ("SHELVING", Stopped),
            ("SHUTOFF", Stopped),
            ("SNAPSHOTTING", Pending),
            ("SOFT_DELETED", Terminated),
            ("STOPPED", Stopped),
            ("SUSPENDED", Stopped),
            ("UNKNOWN", Unknown),
            ("UNRESCUING", Pending),
            ("UNSHELVING", Pending),
            ("VERIFY_RESIZE", Pending),
        ];
        assert_eq!(table.len(), 31, "every status OVH documents");
        for (status, state) in table {
            assert_eq!(state_of(status), state, "{status}");
        }
        // Strings OVH may add later, or garbage, never crash.
        for other in ["SOMETHING_NEW", "", "active"] {
            assert_eq!(state_of(other), Unknown, "{other:?}");
        }
    }

    #[test]
    fn addresses_split_by_type_and_version() {
        let ips: Vec<IpAddress> = serde_json::from_value(json!([
            {"ip": "10.0.0.5", "type": "private", "version": 4},
            {"ip": "2001:db8::5", "type": "public", "version": 6},
            {"ip": "51.0.0.5", "type": "public", "version": 4},
            {"ip": "not an ip", "type": "public", "version": 4}
        ]))
        .unwrap();
        let (public, private) = addresses(&ips);
        assert_eq!(public.len(), 2);
        assert_eq!(private, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        // In OVH's order: the engine, not the driver, prefers IPv4 when it logs in.
        assert_eq!(public[0], "2001:db8::5".parse::<IpAddr>().unwrap());
        assert_eq!(public[1], "51.0.0.5".parse::<IpAddr>().unwrap());
    }
}
