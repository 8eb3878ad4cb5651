//! EC2's answer documents (API version 2016-11-15), as far as nodeup reads them. Every field is
//! optional: what EC2 leaves out reads as empty.

use serde::Deserialize;

/// A list as EC2 writes it: `<fooSet><item>...</item>...</fooSet>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
pub struct Items<T> {
    /// The entries.
    #[serde(rename = "item", default = "Vec::new")]
    pub item: Vec<T>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Items { item: Vec::new() }
    }
}

/// A tag.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Tag {
    /// Its key.
    #[serde(default)]
    pub key: String,
    /// Its value.
    #[serde(default)]
    pub value: String,
}

/// The value of tag `key`, if set.
pub fn tag<'a>(tags: &'a Items<Tag>, key: &str) -> Option<&'a str> {
    tags.item
        .iter()
        .find(|t| t.key == key)
        .map(|t| t.value.as_str())
}

/// An instance's state.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InstanceState {
    /// `pending`, `running`, `shutting-down`, `terminated`, `stopping`, `stopped`.
    #[serde(default)]
    pub name: String,
}

/// Where an instance is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Its availability zone.
    #[serde(default)]
    pub availability_zone: String,
}

/// Why an instance is in its state.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StateReason {
    /// EC2's code.
    #[serde(default)]
    pub code: String,
    /// EC2's message.
    #[serde(default)]
    pub message: String,
}

/// A security group an instance is in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRef {
    /// Its id.
    #[serde(default)]
    pub group_id: String,
    /// Its name.
    #[serde(default)]
    pub group_name: String,
}

/// An instance.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// `i-...`.
    #[serde(default)]
    pub instance_id: String,
    /// The AMI.
    #[serde(default)]
    pub image_id: String,
    /// Its state.
    #[serde(default)]
    pub instance_state: InstanceState,
    /// The instance type.
    #[serde(default)]
    pub instance_type: String,
    /// Where it is.
    #[serde(default)]
    pub placement: Placement,
    /// Its key pair's name.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Its private address.
    #[serde(default)]
    pub private_ip_address: Option<String>,
    /// Its public address.
    #[serde(default)]
    pub ip_address: Option<String>,
    /// Its public DNS name.
    #[serde(default)]
    pub dns_name: Option<String>,
    /// When it was launched.
    #[serde(default)]
    pub launch_time: Option<String>,
    /// The idempotency token of the request that made it.
    #[serde(default)]
    pub client_token: Option<String>,
    /// Why it is in its state.
    #[serde(default)]
    pub state_reason: Option<StateReason>,
    /// Its subnet.
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// Its VPC.
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// Its security groups.
    #[serde(default)]
    pub group_set: Items<GroupRef>,
    /// Its tags.
    #[serde(default)]
    pub tag_set: Items<Tag>,
}

/// A reservation: the instances one launch made.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The instances.
    #[serde(default)]
    pub instances_set: Items<Instance>,
}

/// `DescribeInstances`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeInstances {
    /// The reservations.
    #[serde(default)]
    pub reservation_set: Items<Reservation>,
    /// The next page's token.
    #[serde(default)]
    pub next_token: Option<String>,
}

/// `RunInstances`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInstances {
    /// The instances made.
    #[serde(default)]
    pub instances_set: Items<Instance>,
}

/// An AMI.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// `ami-...`.
    #[serde(default)]
    pub image_id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Who published it.
    #[serde(default)]
    pub image_owner_id: String,
    /// When it was made (ISO 8601: sorts as text).
    #[serde(default)]
    pub creation_date: Option<String>,
    /// `available` ...
    #[serde(default)]
    pub image_state: String,
    /// `x86_64`, `arm64`.
    #[serde(default)]
    pub architecture: String,
    /// What it is.
    #[serde(default)]
    pub description: Option<String>,
    /// `windows` for Windows.
    #[serde(default)]
    pub platform: Option<String>,
    /// The root device (for the root volume's size).
    #[serde(default)]
    pub root_device_name: Option<String>,
}

/// `DescribeImages`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeImages {
    /// The images.
    #[serde(default)]
    pub images_set: Items<Image>,
}

/// An instance type's vCPUs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VCpuInfo {
    /// How many.
    #[serde(default)]
    pub default_v_cpus: u32,
}

/// An instance type's memory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryInfo {
    /// MiB.
    #[serde(default)]
    pub size_in_mi_b: u64,
}

/// An instance type.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceType {
    /// `t3.micro` ...
    #[serde(default)]
    pub instance_type: String,
    /// Its vCPUs.
    #[serde(default)]
    pub v_cpu_info: VCpuInfo,
    /// Its memory.
    #[serde(default)]
    pub memory_info: MemoryInfo,
}

/// `DescribeInstanceTypes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeInstanceTypes {
    /// The types.
    #[serde(default)]
    pub instance_type_set: Items<InstanceType>,
    /// The next page's token.
    #[serde(default)]
    pub next_token: Option<String>,
}

/// An availability zone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Zone {
    /// `eu-west-1a` ...
    #[serde(default)]
    pub zone_name: String,
    /// Its region.
    #[serde(default)]
    pub region_name: String,
    /// `available` ...
    #[serde(default)]
    pub zone_state: String,
}

/// `DescribeAvailabilityZones`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeZones {
    /// The zones.
    #[serde(default)]
    pub availability_zone_info: Items<Zone>,
}

/// A region.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    /// `eu-west-1` ...
    #[serde(default)]
    pub region_name: String,
    /// Its endpoint's host.
    #[serde(default)]
    pub region_endpoint: String,
}

/// `DescribeRegions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeRegions {
    /// The regions.
    #[serde(default)]
    pub region_info: Items<Region>,
}

/// A key pair.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPair {
    /// Its name.
    #[serde(default)]
    pub key_name: String,
    /// `key-...`.
    #[serde(default)]
    pub key_pair_id: Option<String>,
    /// EC2's fingerprint.
    #[serde(default)]
    pub key_fingerprint: Option<String>,
    /// The public key, when asked for.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The private key (only `CreateKeyPair` answers it).
    #[serde(default)]
    pub key_material: Option<String>,
}

/// `DescribeKeyPairs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeKeyPairs {
    /// The key pairs.
    #[serde(default)]
    pub key_set: Items<KeyPair>,
}

/// A volume's attachment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The instance.
    #[serde(default)]
    pub instance_id: String,
    /// The device name.
    #[serde(default)]
    pub device: String,
    /// `attaching`, `attached` ...
    #[serde(default)]
    pub status: String,
}

/// A volume (`CreateVolume`'s answer is one too).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// `vol-...`.
    #[serde(default)]
    pub volume_id: String,
    /// GiB.
    #[serde(default)]
    pub size: u64,
    /// The snapshot it was made from.
    #[serde(default)]
    pub snapshot_id: Option<String>,
    /// Its zone.
    #[serde(default)]
    pub availability_zone: String,
    /// `creating`, `available`, `in-use` ...
    #[serde(default)]
    pub status: String,
    /// `gp3` ...
    #[serde(default)]
    pub volume_type: Option<String>,
    /// Where it is attached.
    #[serde(default)]
    pub attachment_set: Items<Attachment>,
    /// Its tags.
    #[serde(default)]
    pub tag_set: Items<Tag>,
}

/// `DescribeVolumes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeVolumes {
    /// The volumes.
    #[serde(default)]
    pub volume_set: Items<Volume>,
}

/// A snapshot (`CreateSnapshot`'s answer is one too).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// `snap-...`.
    #[serde(default)]
    pub snapshot_id: String,
    /// The volume.
    #[serde(default)]
    pub volume_id: String,
    /// `pending`, `completed` ...
    #[serde(default)]
    pub status: String,
    /// When it was started.
    #[serde(default)]
    pub start_time: Option<String>,
    /// GiB.
    #[serde(default)]
    pub volume_size: u64,
    /// What it is.
    #[serde(default)]
    pub description: Option<String>,
    /// Its tags.
    #[serde(default)]
    pub tag_set: Items<Tag>,
}

/// `DescribeSnapshots`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeSnapshots {
    /// The snapshots.
    #[serde(default)]
    pub snapshot_set: Items<Snapshot>,
}

/// An address range a rule lets in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    /// `203.0.113.5/32` ...
    #[serde(default)]
    pub cidr_ip: String,
}

/// An inbound rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// `tcp` ...
    #[serde(default)]
    pub ip_protocol: String,
    /// The first port.
    #[serde(default)]
    pub from_port: Option<i64>,
    /// The last port.
    #[serde(default)]
    pub to_port: Option<i64>,
    /// Who it lets in.
    #[serde(default)]
    pub ip_ranges: Items<IpRange>,
}

/// A security group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroup {
    /// `sg-...`.
    #[serde(default)]
    pub group_id: String,
    /// Its name.
    #[serde(default)]
    pub group_name: String,
    /// Its VPC.
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// Its inbound rules.
    #[serde(default)]
    pub ip_permissions: Items<Permission>,
}

/// `DescribeSecurityGroups`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeSecurityGroups {
    /// The groups.
    #[serde(default)]
    pub security_group_info: Items<SecurityGroup>,
}

/// `CreateSecurityGroup`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedGroup {
    /// `sg-...`.
    #[serde(default)]
    pub group_id: String,
}

/// A VPC.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vpc {
    /// `vpc-...`.
    #[serde(default)]
    pub vpc_id: String,
    /// Whether it is the region's default VPC.
    #[serde(default)]
    pub is_default: bool,
}

/// `DescribeVpcs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeVpcs {
    /// The VPCs.
    #[serde(default)]
    pub vpc_set: Items<Vpc>,
}

/// `CreateImage`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedImage {
    /// `ami-...`.
    #[serde(default)]
    pub image_id: String,
}

/// An answer nodeup only needs to have come (`DeleteKeyPair`, `TerminateInstances` ...).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Done {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_list_reads_as_ec2_writes_it() {
        let text = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>fdcdcab1-ae5c-489e-9c33-4637c5dda355</requestId>
  <reservationSet><item><reservationId>r-1</reservationId><ownerId>123456789012</ownerId>
    <groupSet/>
    <instancesSet><item>
      <instanceId>i-1234567890abcdef0</instanceId><imageId>ami-0abcdef1234567890</imageId>
      <instanceState><code>16</code><name>running</name></instanceState>
      <privateDnsName>ip-10-0-0-157.ec2.internal</privateDnsName>
      <dnsName>ec2-54-194-252-215.compute-1.amazonaws.com</dnsName>
      <keyName>my_keypair</keyName><instanceType>t2.micro</instanceType>
      <launchTime>2015-12-22T10:44:05.000Z</launchTime>
      <placement><availabilityZone>eu-west-1c</availabilityZone><tenancy>default</tenancy></placement>
      <privateIpAddress>10.0.0.157</privateIpAddress><ipAddress>54.194.252.215</ipAddress>
      <clientToken>nodeup-abc</clientToken>
      <tagSet><item><key>Name</key><value>web-1</value></item></tagSet>
    </item></instancesSet>
  </item></reservationSet>
</DescribeInstancesResponse>"#;
        let doc: DescribeInstances = quick_xml::de::from_str(text).unwrap();
        let instance = &doc.reservation_set.item[0].instances_set.item[0];
        assert_eq!(instance.instance_id, "i-1234567890abcdef0");
        assert_eq!(instance.instance_state.name, "running");
        assert_eq!(instance.placement.availability_zone, "eu-west-1c");
        assert_eq!(instance.ip_address.as_deref(), Some("54.194.252.215"));
        assert_eq!(tag(&instance.tag_set, "Name"), Some("web-1"));
        assert_eq!(doc.next_token, None);
        let types: DescribeInstanceTypes = quick_xml::de::from_str(
            "<DescribeInstanceTypesResponse><instanceTypeSet><item><instanceType>t3.micro</instanceType>\
             <vCpuInfo><defaultVCpus>2</defaultVCpus></vCpuInfo><memoryInfo><sizeInMiB>1024</sizeInMiB>\
             </memoryInfo></item></instanceTypeSet><nextToken>t2</nextToken></DescribeInstanceTypesResponse>",
        )
        .unwrap();
        let t = &types.instance_type_set.item[0];
        assert_eq!(
            (t.v_cpu_info.default_v_cpus, t.memory_info.size_in_mi_b),
            (2, 1024)
        );
        assert_eq!(types.next_token.as_deref(), Some("t2"));
    }
}
