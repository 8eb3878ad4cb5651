//! Creating a server: the image (by id, or the newest active one of a name), the flavor and the
//! networks by id or name, the deployment's key imported (or a named key pair), the metadata
//! that records the run, and `POST /servers` sent at most once in effect (a lost answer is
//! looked for by name and a per-create mark before anything is sent again). A floating IP, when
//! asked for, is allocated on the server's port; if that fails, the server is deleted, so that a
//! failed create leaves nothing behind.

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::api::Service;
use super::bodies;
use super::driver::{login_user, Image};
use super::{invalid, OpenStackDriver, OpenStackOptions};
use super::{FLOATING_IP_DESCRIPTION, IMPORTED_KEY_PREFIX, LOGIN_USER_KEY, PROVIDER, RUN_KEY};
use crate::driver::{NodeDriver, ProviderError, Result};
use crate::model::{CreateNode, Node, NodeAuth, NodeState};
use crate::providers::kit::create_at_most_once;
use crate::providers::kit::segment;
use crate::providers::lookup::{self, Candidate};

/// The metadata key holding a mark made for each create: what finds a server whose create
/// answer was lost, when no run names it.
pub const CREATE_MARK_KEY: &str = "nodeup:create";

/// How often the server's port is looked for, before a floating IP is put on it.
const PORT_POLL: Duration = Duration::from_millis(250);

/// How long a server may take to get a port on its network.
const PORT_WAIT: Duration = Duration::from_secs(120);

/// Nova's limit on a server's name.
const MAX_NAME: usize = 255;

/// What a name was found to mean (an image's id and login user, a flavor's or network's id).
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    id: String,
    login_user: Option<String>,
}

/// Everything `POST /servers` is sent with, decided before anything is made.
struct Plan {
    image: Resolved,
    flavor: String,
    networks: Vec<String>,
    floating_network: Option<String>,
    mark: String,
    options: OpenStackOptions,
}

/// A Neutron network.
#[derive(Debug, Clone, Deserialize)]
struct Network {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "router:external")]
    external: bool,
}

/// Whether `text` is a UUID (Glance's ids all are): only then is it looked up as an id.
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A regular expression matching exactly `name` (Nova's `name` filter is a regular expression).
fn exact(name: &str) -> String {
    let mut pattern = String::from("^");
    for c in name.chars() {
        if !c.is_alphanumeric() && c != ' ' && c != '_' && c != '-' {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('$');
    pattern
}

impl OpenStackDriver {
    /// Creates the server `request` asks for; see the module's documentation.
    pub(super) async fn create_server(&self, request: &CreateNode) -> Result<Node> {
        let options: OpenStackOptions = crate::providers::settings(
            PROVIDER,
            "[node] options",
            &request.extra,
            &format!("put them in {}", super::CREDENTIALS_FROM),
        )?;
        let plan = self.plan(request, options).await?;
        let key = self.key_for(request, &plan.options).await?;
        let body = self.body(request, &plan, key.as_deref());
        let node = match self.post_server(request, &plan.mark, &body).await {
            Ok(node) => node,
            Err(e) => {
                // A refused create leaves no key pair that no server uses.
                if plan.options.key_name.is_none() {
                    self.forget_key_of("", key).await;
                }
                return Err(e);
            }
        };
        if let Some(network) = &plan.floating_network {
            if let Err(e) = self.float(&node, network).await {
                let _ = self.destroy_node(&node).await;
                return Err(e);
            }
        }
        Ok(node)
    }

    /// Checks the request and finds the image, flavor and networks, before anything is made.
    async fn plan(&self, request: &CreateNode, options: OpenStackOptions) -> Result<Plan> {
        if request.name.is_empty() || request.name.len() > MAX_NAME {
            return Err(invalid(format!(
                "node name {:?}: a server's name is 1 to {MAX_NAME} characters",
                request.name
            )));
        }
        let wanted = request.image.as_deref().ok_or_else(|| {
            invalid("give an image: an id, or a name such as \"Debian 12\" (the newest active one of that name wins; `nodeup images --provider openstack` lists them)".into())
        })?;
        let flavor = request.size.as_deref().ok_or_else(|| {
            invalid("give a size: a flavor's name or id (`nodeup sizes --provider openstack` lists them)".into())
        })?;
        let mut image = self
            .remembered(&format!("image:{wanted}"), self.image_id(wanted))
            .await?;
        if let Some(user) = &options.login_user {
            image.login_user = Some(user.clone());
        }
        let flavor = self
            .remembered(&format!("flavor:{flavor}"), self.flavor_id(flavor))
            .await?
            .id;
        let mut networks = Vec::new();
        for wanted in &options.networks {
            let found = self.network_id(wanted, false);
            networks.push(
                self.remembered(&format!("network:{wanted}"), found)
                    .await?
                    .id,
            );
        }
        let floating_network = match &options.floating_ip_network {
            Some(wanted) => {
                let found = self.network_id(wanted, true);
                Some(
                    self.remembered(&format!("external:{wanted}"), found)
                        .await?
                        .id,
                )
            }
            None => None,
        };
        Ok(Plan {
            image,
            flavor,
            networks,
            floating_network,
            mark: format!("{:032x}", rand::random::<u128>()),
            options,
        })
    }

    /// What `lookup` finds for `key`, looked up once per driver (see [`super::Memo`]).
    async fn remembered(
        &self,
        key: &str,
        lookup: impl std::future::Future<Output = Result<Resolved>>,
    ) -> Result<Resolved> {
        let mut ids = self.memo.ids.lock().await;
        if let Some(found) = ids.get(key) {
            return Ok(found.clone());
        }
        let found = lookup.await?;
        ids.insert(key.to_string(), found.clone());
        Ok(found)
    }

    /// The image an id or name means: by id (it must be active), or the newest active image of
    /// that name.
    pub(super) async fn resolve_image(&self, wanted: &str) -> Result<Image> {
        let by_id = match is_uuid(wanted) {
            true => self.image(wanted).await?,
            false => None,
        };
        if let Some(image) = by_id {
            if image.status != "active" {
                return Err(invalid(format!(
                    "image {wanted} is {} (not active): wait until Glance has it active, or \
                     choose another",
                    image.status
                )));
            }
            return Ok(image);
        }
        let images = self.images().await?;
        // Newest first: the first of each name stands for that name.
        let mut newest: Vec<&Image> = Vec::new();
        for image in &images {
            if !newest.iter().any(|n| n.name == image.name) {
                newest.push(image);
            }
        }
        let candidates: Vec<Candidate> = newest
            .iter()
            .map(|i| Candidate {
                id: i.id.clone(),
                name: i.name.clone().unwrap_or_default(),
            })
            .collect();
        let found = match lookup::find("image", wanted, " among the active images", &candidates) {
            Ok(found) => found,
            Err(e) => {
                return Err(self.inactive_named(wanted).await?.unwrap_or_else(|| {
                    invalid(format!("{e} (`nodeup images --provider openstack`)"))
                }))
            }
        };
        Ok(newest
            .into_iter()
            .find(|i| i.id == found.id)
            .cloned()
            .expect("the candidate came from this list"))
    }

    /// The error for an image of this name that exists but is not active, if there is one.
    async fn inactive_named(&self, wanted: &str) -> Result<Option<ProviderError>> {
        #[derive(Deserialize)]
        struct Images {
            images: Vec<Image>,
        }
        let path = format!("/images?name={}", segment(wanted));
        let found: Images = self
            .call(Service::Image, Method::GET, &path, None, || {
                format!("looking up image {wanted}")
            })
            .await?;
        Ok(found.images.first().map(|image| {
            invalid(format!(
                "image {wanted:?} ({}) is {} (not active): wait until Glance has it active, or \
                 choose another (`nodeup images --provider openstack`)",
                image.id, image.status
            ))
        }))
    }

    async fn image_id(&self, wanted: &str) -> Result<Resolved> {
        let image = self.resolve_image(wanted).await?;
        Ok(Resolved {
            login_user: login_user(&image),
            id: image.id,
        })
    }

    async fn flavor_id(&self, wanted: &str) -> Result<Resolved> {
        let sizes = self.list_sizes(None).await?;
        let candidates: Vec<Candidate> = sizes
            .into_iter()
            .map(|s| Candidate {
                id: s.id,
                name: s.name,
            })
            .collect();
        let scope = match self.client.region() {
            Some(region) => format!(" in region {region}"),
            None => String::new(),
        };
        let found = lookup::find("size", wanted, &scope, &candidates).map_err(|e| {
            invalid(format!(
                "{e}: this flavor is not offered here (`nodeup sizes --provider openstack` lists \
                 those that are)"
            ))
        })?;
        Ok(Resolved {
            id: found.id.clone(),
            login_user: None,
        })
    }

    /// A network by id or name; only external ones (where floating IPs come from) when
    /// `external`.
    async fn network_id(&self, wanted: &str, external: bool) -> Result<Resolved> {
        let path = if external {
            "/networks?router:external=true"
        } else {
            "/networks"
        };
        let networks: Vec<Network> = self
            .list_all(Service::Network, path, "networks", "listing networks")
            .await?;
        let candidates: Vec<Candidate> = networks
            .iter()
            .filter(|n| n.external || !external)
            .map(|n| Candidate {
                id: n.id.clone(),
                name: n.name.clone(),
            })
            .collect();
        let kind = if external {
            "external network"
        } else {
            "network"
        };
        let found = lookup::find(kind, wanted, "", &candidates).map_err(|e| {
            invalid(format!(
                "{e} (`openstack network list{}` lists them)",
                if external { " --external" } else { "" }
            ))
        })?;
        Ok(Resolved {
            id: found.id.clone(),
            login_user: None,
        })
    }

    /// The key pair the server gets: the one named, or the deployment's key imported as
    /// `nodeup-DIGEST` (reused when it is there already).
    async fn key_for(
        &self,
        request: &CreateNode,
        options: &OpenStackOptions,
    ) -> Result<Option<String>> {
        if let Some(name) = &options.key_name {
            self.get_key_pair(name).await.map_err(|e| match e {
                ProviderError::NotFound { .. } => invalid(format!(
                    "key_name {name:?}: no key pair of that name (`openstack keypair list`)"
                )),
                e => e,
            })?;
            return Ok(Some(name.clone()));
        }
        let Some(NodeAuth::SshKey(public)) = &request.auth else {
            return Ok(None);
        };
        let name = crate::providers::kit::imported_key_name(public);
        let mut known = self.memo.keys.lock().await;
        if known.contains(&name) {
            return Ok(Some(name));
        }
        match self.keypair(&name, Some(public.trim())).await {
            Ok(_) => {}
            // Imported before (by an earlier deploy, or another at the same moment).
            Err(e) if crate::error_chain(&e).contains(" 409") => {}
            Err(e) => return Err(e),
        }
        known.insert(name.clone());
        Ok(Some(name))
    }

    /// Imports `public` as key pair `name`, or has Nova generate one when `None`.
    pub(super) async fn keypair(
        &self,
        name: &str,
        public: Option<&str>,
    ) -> Result<super::driver::Keypair> {
        #[derive(Deserialize)]
        struct One {
            keypair: super::driver::Keypair,
        }
        let body = bodies::json(&bodies::KeypairRequest {
            keypair: bodies::NewKeypair {
                name,
                kind: "ssh",
                public_key: public,
            },
        });
        let one: One = self
            .call(
                Service::Compute,
                Method::POST,
                "/os-keypairs",
                Some(&body),
                || format!("importing key pair {name}"),
            )
            .await?;
        let mut made = one.keypair;
        if let Some(public) = public {
            made.public_key = public.to_string();
        }
        Ok(made)
    }

    /// The body of `POST /servers`.
    fn body(&self, request: &CreateNode, plan: &Plan, key: Option<&str>) -> Value {
        let options = &plan.options;
        let mut metadata = options.metadata.clone();
        metadata.insert(CREATE_MARK_KEY.into(), plan.mark.clone());
        if let Some(run) = &request.run {
            metadata.insert(RUN_KEY.into(), run.clone());
        }
        if let Some(user) = &plan.image.login_user {
            metadata.insert(LOGIN_USER_KEY.into(), user.clone());
        }
        let server = bodies::NewServer {
            name: &request.name,
            image_ref: &plan.image.id,
            flavor_ref: &plan.flavor,
            metadata,
            networks: (plan.networks.iter())
                .map(|uuid| bodies::NetworkRef { uuid })
                .collect(),
            security_groups: (options.security_groups.iter())
                .map(|name| bodies::NameRef { name })
                .collect(),
            key_name: key,
            user_data: (options.user_data.as_ref())
                .map(|data| base64::engine::general_purpose::STANDARD.encode(data)),
            availability_zone: request.location.as_deref(),
            config_drive: options.config_drive,
        };
        bodies::json(&bodies::ServerRequest { server })
    }

    /// `POST /servers`, at most once in effect: a lost answer is looked for by name and mark.
    async fn post_server(&self, request: &CreateNode, mark: &str, body: &Value) -> Result<Node> {
        #[derive(Deserialize)]
        struct Created {
            server: CreatedServer,
        }
        #[derive(Deserialize)]
        struct CreatedServer {
            id: String,
        }
        let context = format!("creating server {}", request.name);
        create_at_most_once(
            &context,
            || {
                self.client
                    .call::<Created>(Service::Compute, Method::POST, "/servers", Some(body))
            },
            || self.find_created(&request.name, mark),
            |created| async move {
                let mut node = Node {
                    id: created.server.id,
                    name: request.name.clone(),
                    state: NodeState::Pending,
                    public_ips: Vec::new(),
                    private_ips: Vec::new(),
                    image: None,
                    size: None,
                    provider: PROVIDER.into(),
                    extra: Default::default(),
                };
                if let Some(run) = &request.run {
                    node.extra.insert("run".into(), run.clone().into());
                }
                Ok(node)
            },
        )
        .await
        .map_err(|e| self.explain_create(e))
    }

    /// The server named `name` that the create marked `mark` made, if any.
    async fn find_created(&self, name: &str, mark: &str) -> Result<Option<Node>> {
        let found = self
            .servers(&format!("&name={}", segment(&exact(name))))
            .await?;
        Ok(found
            .iter()
            .find(|s| s.metadata.get(CREATE_MARK_KEY).map(String::as_str) == Some(mark))
            .map(|s| super::driver::to_node(s, self.client.region())))
    }

    /// A refused create, with what to do about it.
    fn explain_create(&self, error: ProviderError) -> ProviderError {
        let chain = crate::error_chain(&error);
        let text = chain
            .strip_prefix(&format!("{PROVIDER}: "))
            .unwrap_or(&chain);
        let hint = if text.contains("Quota exceeded") || text.contains(" 413") {
            "the project's quota is used up: delete servers you no longer need (`nodeup nodes \
             list --provider openstack`) or ask the cloud for a larger quota"
        } else if text.contains("Multiple possible networks") {
            "the project has several networks: name the server's in [node] options, \
             networks = [\"NAME\"]"
        } else if text.contains("Invalid key_name") {
            "the key pair is gone: run the deployment again (it is imported anew)"
        } else {
            return error;
        };
        invalid(format!("{text}; {hint}"))
    }

    /// Allocates a floating IP from `network` on the server's port (once it has one).
    async fn float(&self, node: &Node, network: &str) -> Result<()> {
        let port = self.port_of(&node.id).await?;
        let body = bodies::json(&bodies::FloatingIpRequest {
            floatingip: bodies::NewFloatingIp {
                floating_network_id: network,
                port_id: &port,
                description: format!("{FLOATING_IP_DESCRIPTION}{}", node.id),
            },
        });
        let _: Value = self
            .call(
                Service::Network,
                Method::POST,
                "/floatingips",
                Some(&body),
                || format!("allocating a floating IP for server {}", node.name),
            )
            .await?;
        Ok(())
    }

    /// The server's first port, waiting for Nova to plug it.
    async fn port_of(&self, server: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Port {
            id: String,
        }
        let started = tokio::time::Instant::now();
        let path = format!("/ports?device_id={}", segment(server));
        loop {
            let ports: Vec<Port> = self
                .list_all(
                    Service::Network,
                    &path,
                    "ports",
                    "listing the server's ports",
                )
                .await?;
            if let Some(port) = ports.into_iter().next() {
                return Ok(port.id);
            }
            if let Some(node) = self.server(server).await? {
                if node.status == "ERROR" {
                    let why = node.fault.map(|f| f.message).unwrap_or_default();
                    return Err(invalid(format!(
                        "server {server} went to ERROR before it had a port: {why}"
                    )));
                }
            }
            if started.elapsed() > PORT_WAIT {
                return Err(invalid(format!(
                    "server {server} has no port on its network after {PORT_WAIT:?}: no \
                     floating IP can be put on it"
                )));
            }
            tokio::time::sleep(PORT_POLL).await;
        }
    }

    /// Releases the floating IPs nodeup allocated for `server`.
    pub(super) async fn release_floating_ips(&self, server: &str) -> Result<()> {
        #[derive(Deserialize)]
        struct FloatingIp {
            id: String,
        }
        let description = format!("{FLOATING_IP_DESCRIPTION}{server}");
        let path = format!("/floatingips?description={}", segment(&description));
        let ips: Vec<FloatingIp> = self
            .list_all(
                Service::Network,
                &path,
                "floatingips",
                "listing floating IPs",
            )
            .await?;
        for ip in ips {
            let path = format!("/floatingips/{}", segment(&ip.id));
            let released: Result<Value> = self
                .call(Service::Network, Method::DELETE, &path, None, || {
                    format!("releasing floating IP {} of server {server}", ip.id)
                })
                .await;
            match released {
                Ok(_) | Err(ProviderError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes `key`, a key pair nodeup imported, once no server but `except` uses it.
    pub(super) async fn forget_key_of(&self, except: &str, key: Option<String>) {
        let Some(key) = key.filter(|k| k.starts_with(IMPORTED_KEY_PREFIX)) else {
            return;
        };
        let Ok(servers) = self.servers("").await else {
            return;
        };
        let used = servers
            .iter()
            .any(|s| s.id != except && s.key_name.as_deref() == Some(&key));
        if !used {
            let path = format!("/os-keypairs/{}", segment(&key));
            let _: Result<Value> = self
                .call(Service::Compute, Method::DELETE, &path, None, || {
                    format!("deleting key pair {key}")
                })
                .await;
            self.memo.keys.lock().await.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuids_are_looked_up_as_image_ids() {
        assert!(is_uuid("6c4d2e3f-1b50-4c7d-9e8f-0a1b2c3d4e02"));
        assert!(!is_uuid("Debian 12"));
        assert!(!is_uuid("6c4d2e3f-1b50-4c7d-9e8f-0a1b2c3d4e0z"));
    }

    #[test]
    fn names_are_matched_exactly() {
        assert_eq!(exact("web-1"), "^web-1$");
        assert_eq!(exact("a.b(c)"), "^a\\.b\\(c\\)$");
    }
}
