//! Creating a Public Cloud instance, checked before anything is created and leaving nothing behind:
//! the region, flavor and image are found by id or name in the region (an unknown or ambiguous one
//! is an error listing the choices); an instance of the same name in that region is refused; the
//! deploy key is imported (or reused, also when another run imported it at the same moment) and
//! removed again if no instance came of it; a create whose answer was lost is looked up by name,
//! never sent twice blindly; and when two runs created the same name at once, the later instance
//! is deleted so that one name stays one instance.

use reqwest::Method;
use serde_json::{json, Value};

use super::cloud::{decode, state_of, Flavor, Image, Instance, OvhDriver, OvhOptions, SshKey};
use super::{segment, CallError, PROVIDER};
use crate::driver::{ProviderError, Result};
use crate::model::{CreateNode, Node, NodeAuth, NodeState};
use crate::providers::kit::create_at_most_once;
use crate::providers::lookup::{self, Candidate};

/// The name of the keys nodeup imports for deployments starts so (then the key's fingerprint):
/// what tells them from the keys users keep in the project.
const IMPORTED_KEY_PREFIX: &str = "nodeup-";

/// What a create was resolved to: ids OVH knows.
struct Plan {
    region: String,
    flavor_id: String,
    image_id: String,
}

/// The SSH key an instance gets, and whether this run imported it (and so removes it on failure).
struct DeployKey {
    id: String,
    imported: bool,
}

fn invalid(message: String) -> ProviderError {
    ProviderError::InvalidRequest {
        provider: PROVIDER.into(),
        message,
    }
}

pub(super) fn need<'a>(value: &'a Option<String>, what: &str, list: &str) -> Result<&'a str> {
    value.as_deref().ok_or_else(|| {
        invalid(format!(
            "give {what} (`nodeup {list} --provider ovh` lists them)"
        ))
    })
}

/// Whether an instance still counts as holding its name (one being deleted does not).
fn alive(instance: &Instance) -> bool {
    state_of(&instance.status) != NodeState::Terminated
}

impl OvhDriver {
    /// `create_node`: see the module's documentation.
    pub(super) async fn create_instance(&self, request: &CreateNode) -> Result<Node> {
        let options: OvhOptions = crate::providers::settings(
            PROVIDER,
            "[node] options",
            &request.extra,
            "they come from OVH_* variables or ovh.conf",
        )?;
        let plan = self.plan(request).await?;
        let before = self.refuse_taken_name(&request.name, &plan.region).await?;
        let key = match &request.auth {
            Some(NodeAuth::SshKey(public)) => Some(self.ensure_key(public, &plan.region).await?),
            Some(NodeAuth::Password(_)) => {
                return Err(invalid(
                    "OVH instances take an SSH key, not a password".into(),
                ))
            }
            None => None,
        };
        let mut body = json!({
            "name": request.name, "flavorId": plan.flavor_id, "region": plan.region,
            "imageId": plan.image_id,
        });
        if let Some(data) = &options.user_data {
            body["userData"] = json!(data);
        }
        if let Some(billing) = options.monthly_billing {
            body["monthlyBilling"] = json!(billing);
        }
        let named = match &options.ssh_key_name {
            Some(name) => Some(self.key_named(name, &plan.region).await?),
            None => None,
        };
        match (&key, options.ssh_key_id.as_ref().or(named.as_ref())) {
            (Some(k), _) => body["sshKeyId"] = json!(k.id),
            (None, Some(id)) => body["sshKeyId"] = json!(id),
            (None, None) => {}
        }
        let created = match self
            .post_instance(&request.name, &plan.region, &body, &before)
            .await
        {
            Ok(instance) => instance,
            Err(e) => {
                self.release_key(key.as_ref()).await;
                return Err(e);
            }
        };
        self.keep_if_first(created, key.as_ref()).await
    }

    /// Finds the region, flavor and image by id or name (flavors and images in that region).
    async fn plan(&self, request: &CreateNode) -> Result<Plan> {
        let wanted_region = need(&request.location, "a location (region)", "locations")?;
        let wanted_flavor = need(&request.size, "a size (flavor id or name)", "sizes")?;
        let wanted_image = need(&request.image, "an image (id or name)", "images")?;
        let regions: Vec<String> =
            decode(self.call(Method::GET, "/region", None).await?, "regions")?;
        let regions: Vec<Candidate> = regions
            .into_iter()
            .map(|r| Candidate {
                id: r.clone(),
                name: r,
            })
            .collect();
        let region = lookup::find("location", wanted_region, " in this project", &regions)
            .map_err(|e| invalid(format!("{e} (`nodeup locations --provider ovh`)")))?
            .id
            .clone();
        let scope = format!(" in region {region}");
        let in_region = |r: &Option<String>| r.as_deref().is_none_or(|r| r == region);
        let query = format!("?region={}", segment(&region));
        let flavors: Vec<Flavor> = decode(
            self.call(Method::GET, &format!("/flavor{query}"), None)
                .await?,
            "flavors",
        )?;
        let flavors: Vec<Candidate> = flavors
            .into_iter()
            .filter(|f| in_region(&f.region))
            .map(|f| Candidate {
                id: f.id,
                name: f.name,
            })
            .collect();
        let flavor_id = lookup::find("size", wanted_flavor, &scope, &flavors)
            .map_err(|e| invalid(format!("{e} (`nodeup sizes --provider ovh`)")))?
            .id
            .clone();
        let images: Vec<Image> = decode(
            self.call(Method::GET, &format!("/image{query}"), None)
                .await?,
            "images",
        )?;
        let images: Vec<Candidate> = images
            .into_iter()
            .filter(|i| in_region(&i.region))
            .map(|i| Candidate {
                id: i.id,
                name: i.name,
            })
            .collect();
        let image_id = lookup::find("image", wanted_image, &scope, &images)
            .map_err(|e| invalid(format!("{e} (`nodeup images --provider ovh`)")))?
            .id
            .clone();
        Ok(Plan {
            region,
            flavor_id,
            image_id,
        })
    }

    /// Refuses a name that an instance in `region` holds already; returns the ids of the
    /// instances of that name there are (being deleted), which a create's lookup must not take
    /// for the one it made.
    async fn refuse_taken_name(&self, name: &str, region: &str) -> Result<Vec<String>> {
        let same: Vec<Instance> = self
            .instances()
            .await?
            .into_iter()
            .filter(|i| i.name == name)
            .collect();
        match same
            .iter()
            .find(|i| i.region.as_deref() == Some(region) && alive(i))
        {
            Some(other) => Err(invalid(format!(
                "an instance named {name:?} exists already in region {region} (id {}, {}): \
                 choose another name, or destroy it first",
                other.id, other.status
            ))),
            None => Ok(same.into_iter().map(|i| i.id).collect()),
        }
    }

    /// The SSH key with this public key in `region`: an existing one, else imported. A conflict on
    /// import (another run imported it meanwhile) means: look it up again and use it.
    async fn ensure_key(&self, public_key: &str, region: &str) -> Result<DeployKey> {
        if let Some(id) = self.find_key(public_key, region).await? {
            return Ok(DeployKey {
                id,
                imported: false,
            });
        }
        let parsed = russh::keys::PublicKey::from_openssh(public_key.trim())
            .map_err(|e| invalid(format!("the SSH public key does not parse: {e}")))?;
        let fingerprint = parsed.fingerprint(russh::keys::HashAlg::Sha256).to_string();
        let name = format!(
            "{IMPORTED_KEY_PREFIX}{}",
            fingerprint
                .trim_start_matches("SHA256:")
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(12)
                .collect::<String>()
        );
        let body = json!({"name": name, "publicKey": public_key.trim(), "region": region});
        let path = self.path("/sshkey");
        match self.client.call(Method::POST, &path, Some(&body)).await {
            Ok(value) => Ok(DeployKey {
                id: decode::<SshKey>(value, "ssh key")?.id,
                imported: true,
            }),
            Err(CallError::Api(e)) if e.status == 409 => {
                match self.find_key(public_key, region).await? {
                    Some(id) => Ok(DeployKey {
                        id,
                        imported: false,
                    }),
                    None => Err(CallError::Api(e).into_provider(format!("POST {path}"))),
                }
            }
            Err(e) => Err(e.into_provider(format!("POST {path}"))),
        }
    }

    /// The id of a key in `region` with this public key (whatever its comment).
    async fn find_key(&self, public_key: &str, region: &str) -> Result<Option<String>> {
        let blob = crate::providers::key_blob;
        let wanted = blob(public_key);
        let query = format!("/sshkey?region={}", segment(region));
        let keys: Vec<SshKey> = decode(self.call(Method::GET, &query, None).await?, "ssh keys")?;
        Ok(keys
            .into_iter()
            .find(|k| blob(&k.public_key) == wanted)
            .map(|k| k.id))
    }

    /// Removes a key this run imported, unless an instance uses it (another run's, which reused
    /// it). Best effort: a failure is logged, with the key named.
    async fn release_key(&self, key: Option<&DeployKey>) {
        if let Some(key) = key.filter(|k| k.imported) {
            self.remove_key_unless_used(&key.id, None).await;
        }
    }

    /// Removes the key `id` unless an instance other than `except` (one being deleted) uses it.
    /// Best effort: a failure is logged, with the key named.
    pub(super) async fn remove_key_unless_used(&self, id: &str, except: Option<&str>) {
        let in_use = match self.instances().await {
            Ok(all) => all
                .iter()
                .any(|i| i.ssh_key_id.as_deref() == Some(id) && Some(i.id.as_str()) != except),
            Err(_) => true,
        };
        if in_use {
            return;
        }
        let path = format!("/sshkey/{}", segment(id));
        if let Err(e) = self.call(Method::DELETE, &path, None).await {
            tracing::warn!("removing the SSH key {id} nodeup imported: {e}");
        }
    }

    /// After `instance` is deleted: its key goes too when nodeup imported it for a deployment
    /// (named `nodeup-...`) and no other instance uses it, as on a failed create.
    pub(super) async fn release_key_of(&self, instance: &str, key_id: &str) {
        let path = format!("/sshkey/{}", segment(key_id));
        let Ok(value) = self.call(Method::GET, &path, None).await else {
            return;
        };
        let Ok(key) = decode::<SshKey>(value, "ssh key") else {
            return;
        };
        if key.name.starts_with(IMPORTED_KEY_PREFIX) {
            self.remove_key_unless_used(key_id, Some(instance)).await;
        }
    }

    /// The id of the key named `name` in `region` (Libcloud's `ex_keyname`).
    async fn key_named(&self, name: &str, region: &str) -> Result<String> {
        let query = format!("/sshkey?region={}", segment(region));
        let keys: Vec<SshKey> = decode(self.call(Method::GET, &query, None).await?, "ssh keys")?;
        let candidates: Vec<Candidate> = keys
            .into_iter()
            .map(|k| Candidate {
                id: k.id,
                name: k.name,
            })
            .collect();
        lookup::find(
            "SSH key",
            name,
            &format!(" in region {region}"),
            &candidates,
        )
        .map(|k| k.id.clone())
        .map_err(|e| invalid(format!("{e} (`ssh_key_name` names a key of the project)")))
    }

    /// `POST /instance`, at most once: an answer lost on the way is looked up by name (an
    /// instance of that name in the region that is not one of `before`).
    async fn post_instance(
        &self,
        name: &str,
        region: &str,
        body: &Value,
        before: &[String],
    ) -> Result<Instance> {
        let path = self.path("/instance");
        let find = || async {
            Ok(self.instances().await?.into_iter().find(|i| {
                i.name == name
                    && i.region.as_deref().is_none_or(|r| r == region)
                    && !before.contains(&i.id)
            }))
        };
        create_at_most_once(
            &format!("POST {path}"),
            || self.client.call(Method::POST, &path, Some(body)),
            find,
            |value| async move { decode(value, "instance") },
        )
        .await
    }

    /// Keeps `created` when it is the first instance of its name in its region; otherwise another
    /// run created the name at the same moment: this run's instance (and key) are removed again.
    async fn keep_if_first(&self, created: Instance, key: Option<&DeployKey>) -> Result<Node> {
        let same: Vec<Instance> = self
            .instances()
            .await?
            .into_iter()
            .filter(|i| i.name == created.name && i.region == created.region && alive(i))
            .collect();
        // The oldest wins; within one second (OVH's timestamps have no finer grain), the one
        // listed first (OVH lists in creation order). A run whose list did not show the other
        // instance yet is the older one by both rules, so every run reaches the same verdict.
        let first = same
            .iter()
            .enumerate()
            .min_by(|(i, a), (j, b)| (&a.created, i).cmp(&(&b.created, j)))
            .map(|(_, first)| first);
        match first {
            Some(first) if first.id != created.id => {
                let path = format!("/instance/{}", segment(&created.id));
                self.call(Method::DELETE, &path, None).await?;
                self.release_key(key).await;
                Err(invalid(format!(
                    "another run created an instance named {:?} at the same moment (id {}); this \
                     run's instance {} was deleted again: choose another name",
                    created.name, first.id, created.id
                )))
            }
            _ => Ok(self.to_node(created).await),
        }
    }
}
