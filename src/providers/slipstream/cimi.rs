//! SlipStream's CIMI resources, read as its own client reads them: the cloud entry point names
//! each collection, and a search is a `PUT` of the collection with CIMI's parameters as a form
//! (`$filter=resource:type="VM"`). Service offers are the sizes; virtual machines are the VMs of
//! runs; the clouds a user can run on are those whose credentials the profile holds.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::driver::{Href, SlipStreamDriver};
use super::{Body, CallError};
use crate::driver::Result;
use crate::model::{NodeLocation, NodeSize};

/// A service offer (`service-offer/<uuid>`): a size of VM on one cloud.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ServiceOffer {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    connector: Option<Href>,
    #[serde(rename = "resource:vcpu", default)]
    vcpus: Option<u32>,
    #[serde(rename = "resource:ram", default)]
    ram_mib: Option<u64>,
    #[serde(rename = "resource:disk", default)]
    disk_gb: Option<u64>,
    #[serde(rename = "resource:instanceType", default)]
    instance_type: Option<String>,
    #[serde(rename = "resource:country", default)]
    country: Option<String>,
    #[serde(rename = "price:unitCost", default)]
    price: Option<f64>,
}

impl ServiceOffer {
    /// The cloud it is on.
    pub(super) fn cloud(&self) -> Option<&str> {
        self.connector
            .as_ref()
            .map(|c| c.href.trim_start_matches("connector/"))
    }

    /// The instance type (`small` ...), which names it within its cloud.
    pub(super) fn instance_type(&self) -> Option<&str> {
        self.instance_type.as_deref()
    }

    /// As a size.
    pub(super) fn size(&self) -> NodeSize {
        let mut extra = BTreeMap::new();
        for (key, value) in [
            ("cloud", self.cloud()),
            ("instance_type", self.instance_type.as_deref()),
            ("country", self.country.as_deref()),
            ("description", self.description.as_deref()),
        ] {
            if let Some(value) = value {
                extra.insert(key.to_string(), Value::from(value));
            }
        }
        NodeSize {
            id: self.id.clone(),
            name: self.name.clone(),
            ram_mib: self.ram_mib.unwrap_or(0),
            disk_gb: self.disk_gb,
            vcpus: self.vcpus,
            price: self.price,
            bandwidth_mbps: None,
            extra,
        }
    }
}

/// A CIMI `$filter` comparison: `attribute = "value"`.
fn equals(attribute: &str, value: &str) -> String {
    format!("{attribute}=\"{}\"", value.replace('"', ""))
}

impl SlipStreamDriver {
    /// Where the cloud entry point puts a collection (`serviceOffers` → `service-offer`), asked
    /// once.
    async fn collection(&self, name: &str) -> Result<String> {
        let entry = self
            .entry_point
            .get_or_try_init(|| async {
                let text = self
                    .text(
                        "/api/cloud-entry-point",
                        "application/json",
                        "reading the cloud entry point",
                    )
                    .await?;
                let value: Value = serde_json::from_str(&text).map_err(|e| {
                    CallError::Decode(format!("cloud entry point: {e}"))
                        .into_provider("reading the cloud entry point".into())
                })?;
                let hrefs: BTreeMap<String, String> = value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.get("href")?.as_str()?.to_string())))
                    .collect();
                Ok::<_, crate::driver::ProviderError>(hrefs)
            })
            .await?;
        entry.get(name).cloned().ok_or_else(|| {
            super::invalid(format!(
                "the cloud entry point has no {name} collection: is this SlipStream v3?"
            ))
        })
    }

    /// The documents of collection `name` that pass `filter` (all when `None`).
    pub(super) async fn search<T: DeserializeOwned>(
        &self,
        name: &str,
        filter: Option<String>,
    ) -> Result<Vec<T>> {
        let href = self.collection(name).await?;
        let what = format!("searching {href}");
        let form = filter
            .map(|f| ("$filter".to_string(), f))
            .into_iter()
            .collect();
        let response = self
            .client
            .call(
                Method::PUT,
                &format!("/api/{href}"),
                "application/json",
                &Body::Form(form),
            )
            .await
            .map_err(|e| e.into_provider(what.clone()))?;
        let mut value: Value = serde_json::from_slice(&response.body)
            .map_err(|e| CallError::Decode(format!("{href}: {e}")).into_provider(what.clone()))?;
        match value[name].take() {
            Value::Null => Ok(Vec::new()),
            found => serde_json::from_value(found)
                .map_err(|e| CallError::Decode(format!("{href}: {e}")).into_provider(what)),
        }
    }

    /// The VM service offers, of one cloud when given.
    pub(super) async fn service_offers(&self, cloud: Option<&str>) -> Result<Vec<ServiceOffer>> {
        let mut filter = equals("resource:type", "VM");
        if let Some(cloud) = cloud {
            filter = format!("{filter} and {}", equals("connector/href", cloud));
        }
        self.search("serviceOffers", Some(filter)).await
    }

    /// The clouds the user can run on (those whose credentials the profile holds), each with the
    /// country its service offers give.
    pub(super) async fn locations(&self) -> Result<Vec<NodeLocation>> {
        let (_, profile, _) = self.profile().await?;
        let offers = self.service_offers(None).await?;
        Ok(configured_clouds(&profile)
            .into_iter()
            .map(|cloud| NodeLocation {
                country: offers
                    .iter()
                    .find(|o| o.cloud() == Some(cloud.as_str()))
                    .and_then(|o| o.country.clone()),
                id: cloud.clone(),
                name: cloud,
            })
            .collect())
    }
}

/// The clouds a profile document holds credentials for: a parameter category with both a user
/// (`<cloud>.username` or `.access.id`) and a secret (`.password` or `.secret.key`) set, as
/// SlipStream's own client finds them.
pub(super) fn configured_clouds(profile: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct User {
        #[serde(default)]
        parameters: Parameters,
    }
    #[derive(Default, Deserialize)]
    struct Parameters {
        #[serde(rename = "entry", default)]
        entries: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        parameter: Parameter,
    }
    #[derive(Deserialize)]
    struct Parameter {
        #[serde(rename = "@name", default)]
        name: String,
        #[serde(rename = "@category", default)]
        category: String,
        #[serde(default)]
        value: Option<String>,
    }
    let Ok(user) = quick_xml::de::from_str::<User>(profile) else {
        return Vec::new();
    };
    let set = |suffixes: [&str; 2]| -> std::collections::BTreeSet<String> {
        user.parameters
            .entries
            .iter()
            .map(|e| &e.parameter)
            .filter(|p| suffixes.iter().any(|s| p.name.ends_with(s)))
            .filter(|p| p.value.as_deref().is_some_and(|v| !v.trim().is_empty()))
            .map(|p| p.category.clone())
            .collect()
    };
    let users = set([".username", ".access.id"]);
    let secrets = set([".password", ".secret.key"]);
    users.intersection(&secrets).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clouds_are_those_with_a_user_and_a_secret() {
        let profile = r#"<user name="a"><parameters>
            <entry><string>exo.username</string><parameter name="exo.username" category="exo"><value>u</value></parameter></entry>
            <entry><string>exo.password</string><parameter name="exo.password" category="exo"><value>p</value></parameter></entry>
            <entry><string>aws.access.id</string><parameter name="aws.access.id" category="aws"><value>k</value></parameter></entry>
            <entry><string>aws.secret.key</string><parameter name="aws.secret.key" category="aws"><value/></parameter></entry>
            <entry><string>General.ssh.public.key</string><parameter name="General.ssh.public.key" category="General"><value>ssh-ed25519 A</value></parameter></entry>
            </parameters></user>"#;
        assert_eq!(configured_clouds(profile), ["exo"]);
        assert_eq!(equals("connector/href", "exo"), r#"connector/href="exo""#);
    }
}
