//! Creating an instance: the image by id or name (and its login user), the deployment's key
//! imported (or a named key pair), SSH opened to this machine when asked, the tags, and
//! `RunInstances` with an idempotency token made from the run and the name, sent at most once
//! in effect (a lost answer is looked for by that token before anything is sent again). What a
//! create made for an instance that did not come (an imported key, the SSH group) is removed.

use base64::Engine as _;
use sha2::Digest as _;

use super::api::Params;
use super::driver::{imported, to_node, LIVE_STATES};
use super::{invalid, xml, Ec2Driver, Ec2Options, DEFAULT_CHECKIP_URL, DEFAULT_INSTANCE_TYPE};
use super::{LOGIN_USER_TAG, PROVIDER, RUN_TAG, SSH_GROUP};
use crate::driver::{ProviderError, Result};
use crate::model::{CreateNode, Node, NodeAuth};
use crate::providers::kit::create_at_most_once;

/// How many hex digits of the run and name's digest make the idempotency token (EC2 takes up to
/// 64 characters).
const TOKEN_HEX: usize = 40;

/// What a create made on the way, to remove if no instance comes of it.
#[derive(Debug, Default)]
struct Made {
    /// A key pair imported for it.
    key: Option<String>,
    /// The `nodeup-ssh` group, when this create made it.
    group: Option<String>,
}

/// Everything `RunInstances` is sent with, decided before anything is made.
struct Launch {
    image: xml::Image,
    login_user: Option<&'static str>,
    token: String,
    options: Ec2Options,
}

impl Ec2Driver {
    /// Creates the instance `request` asks for; see the module's documentation.
    pub(super) async fn create_instance(&self, request: &CreateNode) -> Result<Node> {
        let options: Ec2Options = crate::providers::settings(
            PROVIDER,
            "[node] options",
            &request.extra,
            "credentials come from the AWS_* variables or ~/.aws",
        )?;
        let launch = self.plan(request, options).await?;
        let mut made = Made::default();
        let created = async {
            let key = self.key_for(request, &launch.options, &mut made).await?;
            let groups = self.groups_for(&launch.options, &mut made).await?;
            let params = self.run_params(request, &launch, key.as_deref(), &groups)?;
            self.run(request, &launch.token, params).await
        }
        .await;
        if created.is_err() {
            self.undo(made).await;
        }
        created
    }

    /// Checks the request and finds the image, before anything is made.
    async fn plan(&self, request: &CreateNode, options: Ec2Options) -> Result<Launch> {
        if request.name.is_empty() || request.name.len() > 255 {
            return Err(invalid(format!(
                "node name {:?}: a Name tag is 1 to 255 characters",
                request.name
            )));
        }
        let wanted = request.image.as_deref().ok_or_else(|| {
            invalid("give an image: an AMI id, or a name such as debian-12-amd64 (the newest release wins; `nodeup images --provider ec2` lists them)".into())
        })?;
        let image = self
            .image_for(wanted, options.image_owner.as_deref())
            .await?;
        let login_user = super::images::login_user(&image);
        Ok(Launch {
            token: token(request),
            image,
            login_user,
            options,
        })
    }

    /// The image `wanted` means, looked up once per driver (see [`super::Memo`]).
    async fn image_for(&self, wanted: &str, owner: Option<&str>) -> Result<xml::Image> {
        let mut images = self.memo.images.lock().await;
        let key = (wanted.to_string(), owner.map(str::to_string));
        if let Some(image) = images.get(&key) {
            return Ok(image.clone());
        }
        let image = self.resolve_image(wanted, owner).await?;
        images.insert(key, image.clone());
        Ok(image)
    }

    /// The key pair the instance gets: the one named, or the deployment's key imported as
    /// `nodeup-DIGEST` (reused when it is there already).
    async fn key_for(
        &self,
        request: &CreateNode,
        options: &Ec2Options,
        made: &mut Made,
    ) -> Result<Option<String>> {
        if let Some(name) = &options.ssh_key_name {
            self.key_pairs(&[name]).await.map_err(|e| match e {
                ProviderError::NotFound { .. } => invalid(format!(
                    "ssh_key_name {name:?}: no key pair of that name in this region"
                )),
                e => e,
            })?;
            return Ok(Some(name.clone()));
        }
        let Some(NodeAuth::SshKey(public)) = &request.auth else {
            return Ok(None);
        };
        let name = key_name(public);
        let mut known = self.memo.keys.lock().await;
        if known.contains(&name) {
            return Ok(Some(name));
        }
        match self.key_pairs(&[&name]).await {
            Ok(found) if !found.is_empty() => {
                known.insert(name.clone());
                return Ok(Some(name));
            }
            Ok(_) | Err(ProviderError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        use crate::driver::NodeDriver;
        match self.import_key_pair_from_string(&name, public, None).await {
            Ok(_) => made.key = Some(name.clone()),
            // Another deploy imported the same key a moment ago: it is the same key.
            Err(e) if crate::error_chain(&e).contains("InvalidKeyPair.Duplicate") => {}
            Err(e) => return Err(e),
        }
        known.insert(name.clone());
        Ok(Some(name))
    }

    /// The security groups: those given, and `nodeup-ssh` when SSH is to be opened.
    async fn groups_for(&self, options: &Ec2Options, made: &mut Made) -> Result<Vec<String>> {
        let mut groups = options.security_group_ids.clone();
        if let Some(from) = &options.allow_ssh_from {
            let cidr = self.cidr(from).await?;
            let vpc = self.vpc_of(options.subnet_id.as_deref()).await?;
            groups.push(self.ssh_group(&vpc, &cidr, made).await?);
        }
        Ok(groups)
    }

    /// The address range `allow_ssh_from` means: this machine's public address for `here`.
    async fn cidr(&self, from: &str) -> Result<String> {
        if from != "here" {
            let (address, bits) = from.split_once('/').unwrap_or((from, ""));
            let ip: std::net::IpAddr = address.parse().map_err(|_| {
                invalid(format!(
                    "allow_ssh_from {from:?}: give an address range (203.0.113.5/32) or \"here\""
                ))
            })?;
            let bits = if bits.is_empty() {
                if ip.is_ipv4() {
                    "32"
                } else {
                    "128"
                }
            } else {
                bits
            };
            return Ok(format!("{ip}/{bits}"));
        }
        let url = self
            .settings
            .checkip_url
            .clone()
            .unwrap_or_else(|| DEFAULT_CHECKIP_URL.into());
        let text = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| self.checkip_failed(&url, e.to_string()))?
            .text()
            .await
            .map_err(|e| self.checkip_failed(&url, e.to_string()))?;
        let ip: std::net::IpAddr = text
            .trim()
            .parse()
            .map_err(|_| self.checkip_failed(&url, format!("it answered {:?}", text.trim())))?;
        Ok(format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }))
    }

    fn checkip_failed(&self, url: &str, why: String) -> ProviderError {
        invalid(format!(
            "allow_ssh_from \"here\": asking {url} for this machine's address failed ({why}); \
             give the address range instead"
        ))
    }

    /// The VPC of `subnet`, else the region's default VPC.
    async fn vpc_of(&self, subnet: Option<&str>) -> Result<String> {
        if let Some(subnet) = subnet {
            #[derive(serde::Deserialize, Default)]
            #[serde(rename_all = "camelCase")]
            struct Subnet {
                #[serde(default)]
                vpc_id: String,
            }
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Subnets {
                #[serde(default)]
                subnet_set: xml::Items<Subnet>,
            }
            let doc: Subnets = self
                .client
                .call(
                    "DescribeSubnets",
                    &Params::new().list("SubnetId", &[subnet]),
                    || format!("looking up subnet {subnet}"),
                )
                .await?;
            return doc
                .subnet_set
                .item
                .into_iter()
                .next()
                .map(|s| s.vpc_id)
                .ok_or_else(|| invalid(format!("subnet_id {subnet:?}: no such subnet")));
        }
        let params = Params::new().filter("is-default", &["true"]);
        let doc: xml::DescribeVpcs = self
            .client
            .call("DescribeVpcs", &params, || {
                "looking up the default VPC".into()
            })
            .await?;
        doc.vpc_set
            .item
            .into_iter()
            .next()
            .map(|v| v.vpc_id)
            .ok_or_else(|| {
                invalid("allow_ssh_from: the region has no default VPC; give subnet_id".into())
            })
    }

    /// The `nodeup-ssh` group of `vpc`, if there is one.
    async fn find_ssh_group(&self, vpc: &str) -> Result<Option<xml::SecurityGroup>> {
        let params = Params::new()
            .filter("group-name", &[SSH_GROUP])
            .filter("vpc-id", &[vpc]);
        let doc: xml::DescribeSecurityGroups = self
            .client
            .call("DescribeSecurityGroups", &params, || {
                format!("looking up security group {SSH_GROUP}")
            })
            .await?;
        Ok(doc.security_group_info.item.into_iter().next())
    }

    /// Makes the `nodeup-ssh` group of `vpc`; when another create made it at the same moment,
    /// that one is found again.
    async fn make_ssh_group(&self, vpc: &str, made: &mut Made) -> Result<xml::SecurityGroup> {
        let params = Params::new()
            .set("GroupName", SSH_GROUP)
            .set(
                "GroupDescription",
                "SSH from where nodeup runs (made by nodeup)",
            )
            .set("VpcId", vpc);
        let created: Result<xml::CreatedGroup> = self
            .client
            .call("CreateSecurityGroup", &params, || {
                format!("creating security group {SSH_GROUP}")
            })
            .await;
        match created {
            Ok(created) => {
                made.group = Some(created.group_id.clone());
                Ok(xml::SecurityGroup {
                    group_id: created.group_id,
                    ..Default::default()
                })
            }
            Err(e) if crate::error_chain(&e).contains("InvalidGroup.Duplicate") => {
                self.find_ssh_group(vpc).await?.ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The `nodeup-ssh` group of `vpc`, made when missing, letting `cidr` in on port 22.
    async fn ssh_group(&self, vpc: &str, cidr: &str, made: &mut Made) -> Result<String> {
        let group = match self.find_ssh_group(vpc).await? {
            Some(group) => group,
            None => self.make_ssh_group(vpc, made).await?,
        };
        let open = group.ip_permissions.item.iter().any(|p| {
            p.ip_protocol == "tcp"
                && p.from_port == Some(22)
                && p.to_port == Some(22)
                && p.ip_ranges.item.iter().any(|r| r.cidr_ip == cidr)
        });
        if !open {
            let params = Params::new()
                .set("GroupId", group.group_id.clone())
                .set("IpPermissions.1.IpProtocol", "tcp")
                .set("IpPermissions.1.FromPort", "22")
                .set("IpPermissions.1.ToPort", "22")
                .set("IpPermissions.1.IpRanges.1.CidrIp", cidr);
            let opened: Result<xml::Done> = self
                .client
                .call("AuthorizeSecurityGroupIngress", &params, || {
                    format!("opening SSH to {cidr} in {SSH_GROUP}")
                })
                .await;
            match opened {
                // Another create opened it at the same moment.
                Err(e) if crate::error_chain(&e).contains("InvalidPermission.Duplicate") => {}
                other => {
                    other?;
                }
            }
        }
        Ok(group.group_id)
    }

    /// `RunInstances`'s parameters.
    fn run_params(
        &self,
        request: &CreateNode,
        launch: &Launch,
        key: Option<&str>,
        groups: &[String],
    ) -> Result<Params> {
        let o = &launch.options;
        let mut tags = vec![("Name".to_string(), request.name.clone())];
        if let Some(run) = &request.run {
            tags.push((RUN_TAG.into(), run.clone()));
        }
        if let Some(user) = launch.login_user {
            tags.push((LOGIN_USER_TAG.into(), user.into()));
        }
        tags.extend(o.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut params = Params::new()
            .set("ImageId", launch.image.image_id.clone())
            .set(
                "InstanceType",
                request.size.clone().unwrap_or(DEFAULT_INSTANCE_TYPE.into()),
            )
            .set("MinCount", "1")
            .set("MaxCount", "1")
            .set("ClientToken", launch.token.clone())
            .maybe("KeyName", key)
            .maybe("Placement.AvailabilityZone", request.location.clone())
            .maybe("SubnetId", o.subnet_id.clone())
            .list("SecurityGroupId", groups)
            .maybe(
                "UserData",
                o.user_data
                    .as_ref()
                    .map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
            )
            .tags(1, "instance", &tags);
        if let Some(profile) = &o.instance_profile {
            let field = if profile.starts_with("arn:") {
                "Arn"
            } else {
                "Name"
            };
            params = params.set(&format!("IamInstanceProfile.{field}"), profile.clone());
        }
        if let Some(size) = o.root_volume_gb {
            let device =
                launch.image.root_device_name.clone().ok_or_else(|| {
                    invalid("root_volume_gb: the image names no root device".into())
                })?;
            params = params
                .set("BlockDeviceMapping.1.DeviceName", device)
                .set("BlockDeviceMapping.1.Ebs.VolumeSize", size.to_string())
                .set("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true");
        }
        if o.spot {
            params = params.set("InstanceMarketOptions.MarketType", "spot");
        }
        Ok(params)
    }

    /// Sends `RunInstances` at most once in effect: a lost answer is looked for by the token
    /// (named `name`, with this token) before the request is sent again.
    async fn run(&self, request: &CreateNode, token: &str, params: Params) -> Result<Node> {
        let context = format!("creating instance {}", request.name);
        create_at_most_once(
            &context,
            || self.client.send("RunInstances", &params, false),
            || self.find_launched(&request.name, token),
            |body| async move {
                let doc: xml::RunInstances = super::api::decode(&body)
                    .map_err(|e| e.into_provider(format!("creating instance {}", request.name)))?;
                doc.instances_set
                    .item
                    .first()
                    .map(to_node)
                    .ok_or_else(|| invalid("RunInstances answered no instance".into()))
            },
        )
        .await
    }

    /// The instance named `name` that a request with `token` launched, if any.
    async fn find_launched(&self, name: &str, token: &str) -> Result<Option<Node>> {
        let found = self
            .instances(Params::new().filter("tag:Name", &[name]))
            .await?;
        Ok(found
            .iter()
            .find(|i| i.client_token.as_deref() == Some(token))
            .map(to_node))
    }

    /// Removes what a create made for an instance that did not come.
    async fn undo(&self, made: Made) {
        if let Some(key) = made.key {
            self.release_key(&key, None).await;
        }
        if let Some(group) = made.group {
            self.release_group(&group, None).await;
        }
    }

    /// After `node` is gone: its imported key pair and the `nodeup-ssh` group go too, unless
    /// another instance uses them. Best effort: what fails is logged.
    pub(super) async fn release_for(&self, node: &Node) {
        if let Some(key) = node.extra.get("key_name").and_then(|k| k.as_str()) {
            if imported(key) {
                self.release_key(key, Some(&node.id)).await;
            }
        }
        let in_ssh_group = node
            .extra
            .get("security_groups")
            .and_then(|g| g.as_array())
            .is_some_and(|g| g.iter().any(|n| n == SSH_GROUP));
        if in_ssh_group {
            let params = Params::new().filter("group-name", &[SSH_GROUP]);
            let groups: Result<xml::DescribeSecurityGroups> = self
                .client
                .call("DescribeSecurityGroups", &params, || {
                    "listing groups".into()
                })
                .await;
            for group in groups
                .map(|g| g.security_group_info.item)
                .unwrap_or_default()
            {
                self.release_group(&group.group_id, Some(&node.id)).await;
            }
        }
    }

    /// Deletes key pair `name` unless a live instance other than `except` uses it.
    async fn release_key(&self, name: &str, except: Option<&str>) {
        let mut known = self.memo.keys.lock().await;
        if self.in_use("key-name", name, except).await {
            return;
        }
        known.remove(name);
        let params = Params::new().set("KeyName", name);
        let deleted: Result<xml::Done> = self
            .client
            .call("DeleteKeyPair", &params, || {
                format!("deleting key pair {name}")
            })
            .await;
        if let Err(e) = deleted {
            tracing::warn!("removing the key pair {name} nodeup imported: {e}");
        }
    }

    /// Deletes security group `id` unless a live instance other than `except` is in it.
    async fn release_group(&self, id: &str, except: Option<&str>) {
        if self.in_use("instance.group-id", id, except).await {
            return;
        }
        let params = Params::new().set("GroupId", id);
        let deleted: Result<xml::Done> = self
            .client
            .call("DeleteSecurityGroup", &params, || format!("deleting {id}"))
            .await;
        if let Err(e) = deleted {
            // An instance still shutting down keeps it a while; the next destroy removes it.
            tracing::warn!("removing the security group {SSH_GROUP} ({id}): {e}");
        }
    }

    /// Whether a live instance other than `except` matches `filter = value` (when unsure: yes).
    async fn in_use(&self, filter: &str, value: &str, except: Option<&str>) -> bool {
        match self.instances(Params::new().filter(filter, &[value])).await {
            Ok(found) => found
                .iter()
                .filter(|i| LIVE_STATES.contains(&i.instance_state.name.as_str()))
                .any(|i| Some(i.instance_id.as_str()) != except),
            Err(_) => true,
        }
    }
}

pub(super) use crate::providers::kit::imported_key_name as key_name;

/// The idempotency token of a create: from the run and the name when there is a run (the same
/// create sent again is the same request), else unique.
fn token(request: &CreateNode) -> String {
    let seed = match &request.run {
        Some(run) => format!("{run}/{}", request.name),
        None => format!("{}/{}", request.name, rand::random::<u128>()),
    };
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("nodeup-{}", &hex[..TOKEN_HEX])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_for_a_run_and_keys_named_by_digest() {
        let mut request = CreateNode {
            name: "web-1".into(),
            run: Some("3fa2c1d4e5f6".into()),
            ..Default::default()
        };
        assert_eq!(token(&request), token(&request));
        assert!(token(&request).len() <= 64);
        let other = CreateNode {
            name: "web-2".into(),
            ..request.clone()
        };
        assert_ne!(token(&request), token(&other));
        request.run = None;
        assert_ne!(token(&request), token(&request), "unique without a run");
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1Pq5nfxo0Gf9Zl8Ck7wJk0Q0d3gq2Tq2xC8o5k0yXr";
        assert_eq!(key_name(key), key_name(&format!("{key} other-comment")));
        assert!(key_name(key).starts_with("nodeup-"));
    }
}
